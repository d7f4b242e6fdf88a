"""Memory accounting: how much GPU memory fine-tuning needs (the article's chapters 1-3), predicted and measured.

The memory MODEL lives in :mod:`llmstudy.training.memory` (other chapters use it too); this package is the chapter:
``params`` (the parameter spec: notebook cell, ``llmstudy memory`` flags, run defaults), ``run`` (run mode: measure
the setups on this machine, write a record), ``analysis`` (the article's rules, the tables), ``statements`` (every
glued sentence, fork-aware), ``figures``.
"""

from .analysis import (  # noqa: F401
    ARTICLE_LORA_PRINTOUT,
    MEASURED_COLUMNS,
    RULES,
    configs_table,
    counts_table,
    measured,
    pick,
    rule_of_thumb_table,
    rule_setups,
    rules_breakdown,
    rules_table,
)
from .figures import measured_vs_predicted, rules_bars  # noqa: F401
from .params import CLI_NAMES, CONFIG_MODELS, HEADER, PARAMS, RULE_MODELS, RUN_NAMES, notebook_params, run_arguments, setups  # noqa: F401
from .run import EXPERIMENT, run_experiment  # noqa: F401
from .statements import (  # noqa: F401
    activation_statement,
    lora_on,
    measure_command,
    measured_statements,
    parameter_statements,
    qlora_statement,
    rule_statements,
    statements,
)
