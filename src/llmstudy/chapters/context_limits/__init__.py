"""The context-limits chapter: how long a context Llama 4 (or any config) gets from vLLM, planned and measured.

The planner itself is :mod:`llmstudy.serving.kv_planner` (re-exported here for the chapter's notebook and tests);
this package holds the chapter's published tables (``published``), its GPU run (``run``), the analysis of its records
(``analysis``), its parameters (``params``: one spec for the notebook, the CLI and the defaults), the page's glued
text (``statements``: a :class:`Chapter` of tables and ``statements(records, model)``) and its figures and tables
(``figures``).
"""

import warnings

# tqdm.auto (imported by transformers) warns "IProgress not found" in a kernel without ipywidgets, naming the file
# that raised it; the page shows no progress bars.
warnings.filterwarnings("ignore", message="IProgress not found")

from llmstudy.serving.kv_planner import (  # noqa: E402, F401
    _LAYER_RE,
    BLOCK_SIZE,
    DEFAULT_CUDA_CONTEXT,
    DEFAULT_CUDAGRAPH,
    DEFAULT_NON_TORCH_TP,
    DEFAULT_NON_TORCH_TP1,
    EXPERIMENT,
    GPUS,
    KV_DTYPES,
    MIN_VERSION,
    PRECISION_LABEL,
    VERSIONS,
    VOCAB_PADDING,
    WEIGHT_FORMATS,
    Deployment,
    GiB,
    GpuKind,
    MiB,
    Plan,
    VersionRules,
    _blocks_needed,
    _blocks_per_request,
    _fits,
    _forward_bytes_per_token,
    _ignored,
    _module_name,
    _positive_int,
    _pp_layers,
    _precision,
    _rank_numel,
    _scale_bytes,
    _stage_groups,
    _vkey,
    emulated_utilization,
    estimate_activation_peak,
    estimate_cudagraph,
    estimate_non_torch,
    is_h100_emulation,
    kv_groups,
    largest_model_len,
    layer_kinds,
    model_facts,
    page_bytes,
    plan,
    plans,
    tokens_for_available,
    weight_table,
    weights_per_gpu,
)

from . import figures  # noqa: E402, F401
from .analysis import (  # noqa: E402, F401
    FINDINGS,
    compare_runs,
    exact_available,
    family_comparison,
    is_llama4,
    llama4_rows,
    measure_command,
    measured_findings,
    measured_inputs,
    model_context_table,
    model_name,
    model_plan,
    published_vs_measured,
    record_decomposition,
    row_deployment,
    weight_formats,
    without_superseded_skips,
)
from .params import (  # noqa: E402, F401
    DEFAULTS,
    PARAMS,
    PLAN_PARAMS,
    notebook_params,
)
from .published import (  # noqa: E402, F401
    ARTICLE,
    ARTICLE_TABLE,
    BLOG,
    BLOG_TABLE,
    DECOMPOSITION,
    MAVERICK,
    MAVERICK_FP8,
    SCOUT,
    article_comparison,
    blog_comparison,
    context_vs_gpus,
    decomposition,
    hardware_label,
    version_effect,
)
from .run import (  # noqa: E402, F401
    _MEM_PATTERNS,
    CALLS,
    GPU_CONFIGS,
    SERVER_ENV,
    GpuConfig,
    _facts,
    _row,
    classify_failure,
    measure_ttft,
    memory_lines,
    parse_memory_log,
    prepare_model_dir,
    resolve_configs,
    run_experiment,
    server_config,
)
from .statements import (  # noqa: E402, F401
    Chapter,
    chapter,
    fmt,
    statements,
)
