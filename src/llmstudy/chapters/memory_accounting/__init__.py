"""Memory accounting: how much GPU memory fine-tuning needs (the article's chapters 1-3), predicted and measured.

The memory MODEL lives in :mod:`llmstudy.training.memory` (other chapters use it too); this package is the chapter:
``params`` (the parameter spec: notebook cell, ``llmstudy memory`` flags, run defaults), ``run`` (run mode: measure
the setups on this machine, write a record), ``analysis`` (the article's rules, the tables), ``statements`` (every
glued sentence, fork-aware), ``figures``.
"""

import warnings

# tqdm.auto (imported by transformers) warns "IProgress not found" in a kernel without ipywidgets, naming the
# file that raised it; the page shows no progress bars, so the warning is silenced here, where the chapter starts.
warnings.filterwarnings("ignore", message="IProgress not found")

from .analysis import (  # noqa: E402, F401
    ARTICLE_LORA_PRINTOUT,
    MEASURED_COLUMNS,
    PER_PARAM_SETUPS,
    RULE_MARKS,
    RULES,
    configs_report,
    configs_table,
    counts_report,
    counts_table,
    measured,
    measured_report,
    per_param,
    pick,
    rule_of_thumb_table,
    rule_setups,
    rules_breakdown,
    rules_report,
    rules_table,
)
from .figures import measured_vs_predicted, per_param_bars, rules_bars  # noqa: E402, F401
from .params import CLI_NAMES, CONFIG_MODELS, HEADER, PARAMS, RULE_MODELS, RUN_NAMES, notebook_params, run_arguments, setups  # noqa: E402, F401
from .run import EXPERIMENT, run_experiment  # noqa: E402, F401
from .statements import (  # noqa: E402, F401
    activation_statement,
    answer_statement,
    lora_on,
    measure_command,
    measured_statements,
    parameter_statements,
    qlora_statement,
    rule_statements,
    statements,
)
