"""TensorRT-LLM deployment as the article did it: the old workflow (checkpoint → engine → Triton, the chapter
``trtllm_triton_deploy``) and the new one (``trtllm-serve``, the chapter ``trtllm_serve``), generated from parameters
and a model's config.json, checked by a preflight, run in a container.

Neither TensorRT-LLM nor Triton installs here (PyPI has only a stub; Triton ships as NGC containers), so everything
that does not need them is plain Python that runs on a CPU: each workflow is a :class:`Step` list rendered as a bash
script, and :func:`preflight` checks the parameters (and whatever files exist) for each pitfall the article hit,
naming the fix. Run mode executes the same steps inside the container and writes a run record; where the tools are
missing it refuses before doing anything.

Modules: ``config`` (experiments, containers, TensorRT-LLM names), ``architecture`` (what the plans read from
config.json, checked; what they do not model), ``params`` (both workflows' parameters, once), ``plan`` (steps, scripts,
derived settings), ``preflight``, ``run`` (run mode), ``published`` (the article's numbers, skeleton, pitfalls,
expected files), ``page`` (what the two notebooks show: tables, figures, glued statements).
"""

from . import page  # noqa: F401  (the pages' tables, figures and glued statements)
from .architecture import (  # noqa: F401
    EXPERT_FIELDS,
    ConfigError,
    NotModelled,
    config_dict,
    config_problem,
    experts,
    kv_bytes_per_token,
    kv_cache_rows,
    model_problem,
    not_modelled,
)
from .config import (  # noqa: F401
    CONVERTERS,
    HF_TO_TRTLLM_LORA,
    SERVE_EXPERIMENT,
    SERVE_IMAGE,
    SERVE_TOOLS,
    SKELETON,
    TRITON_DEFAULT_MAX_BATCH,
    TRITON_EXPERIMENT,
    TRITON_IMAGE,
    TRITON_MOE_MODEL_TYPES,
    TRITON_TOOLS,
    TRITON_TYPES,
)
from .params import HEADERS, ServeDeploy, TritonDeploy, from_params, notebook_params  # noqa: F401
from .plan import (  # noqa: F401
    Step,
    bench_points,
    derived,
    fill_values,
    genai_perf_argv,
    page_script,
    plan,
    render,
    script,
    serve_plan,
    serve_yaml,
    triton_plan,
)
from .preflight import (  # noqa: F401
    MAX_NUM_TOKENS_DOC,
    SERVE_CHECKS,
    TRITON_CHECKS,
    Finding,
    PreflightError,
    check_batch_sizes,
    check_dtypes,
    check_engine,
    check_lora_modules,
    check_lora_rank,
    check_model,
    check_paths,
    check_streaming,
    check_template,
    check_workload,
    findings_table,
    preflight,
    raise_on_errors,
    what_if,
)
from .published import (  # noqa: F401
    PITFALLS,
    expected_dir,
    expected_files,
    expected_status,
    no_record_note,
    pitfalls,
    published,
    run_command,
    skeleton_keys,
    write_skeleton,
)
from .run import StepError, execute, require_tools, run  # noqa: F401
