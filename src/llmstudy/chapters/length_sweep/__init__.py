"""Chapter ``length_sweep``: vLLM's max_model_len, and input x output lengths.

``params`` (the one spec), ``run`` (plan and run mode), ``statements`` (records -> every glued value),
``figures`` (every figure and table); shared serving-chapter helpers are in :mod:`llmstudy.chapters.serve_sweeps`.
"""

from llmstudy.chapters.length_sweep.params import CLI_KIND, EXPERIMENT, PARAMS  # noqa: F401
from llmstudy.chapters.length_sweep.run import plan, run, run_mode  # noqa: F401
from llmstudy.chapters.length_sweep.statements import Records, load, statements  # noqa: F401
