"""What each vLLM feature is worth: one server setting per arm, the same workloads, measured deltas and their noise.

An *arm* is a named server setting (``ServerSettings``) that changes one thing against the group's *baseline* (vLLM's
defaults on the Llama-2-7B architecture, prefix caching off); a *group* is the arms that make one run record, always
bracketed by two starts of the baseline. The package: ``params`` (the chapter's parameters, once), ``plan`` (arms,
workloads, time estimate, the resumable run, the prompt files), ``analysis`` (deltas, noise, KV capacity, servers),
``statements`` (every glued number), ``figures`` and ``page`` (what the notebook's cells show).
"""

from llmstudy.chapters.vllm_features.analysis import (  # noqa: F401
    _TEXT_FACTS,
    CHUNKED_ARMS,
    MAIN_GROUPS,
    METRICS,
    NOT_MEASURED,
    SERVER_FACTS,
    SKIPPED_COLUMNS,
    arm_of,
    by_repeat,
    chunked_prefill_gaps,
    compare,
    findings,
    headline,
    kv_capacity,
    load,
    noise,
    outcomes,
    raw_facts,
    servers,
    skipped,
    spec_transfer,
    speculation,
    spread_pct,
)
from llmstudy.chapters.vllm_features.figures import (  # noqa: F401
    figure,
    forest_rows,
)
from llmstudy.chapters.vllm_features.page import (  # noqa: F401
    FIGURE_TITLE,
    MEASURE_COMMAND,
    Page,
    headline_view,
    load_page,
    record_models,
    server_tables,
    show_arms,
    show_chunked,
    show_figure,
    show_headline,
    show_kv,
    show_means,
    show_records,
    show_speculation,
    show_transfer,
    summary,
)
from llmstudy.chapters.vllm_features.params import (  # noqa: F401
    PARAMS,
    notebook_params,
)
from llmstudy.chapters.vllm_features.plan import (  # noqa: F401
    ARMS,
    BASELINE,
    DATA,
    DECODE_MS,
    EXPERIMENT,
    GROUPS,
    NGRAM,
    NGRAM_GPU,
    POINT_OVERHEAD_S,
    PREFILL_TOK_S,
    START_S,
    TEXT_FILES,
    Arm,
    _positive,
    build_prompts,
    estimate,
    missing_modules,
    plan,
    point_estimate_s,
    resolve,
    run,
    run_mode,
    server_estimate_s,
    workload_label,
)
from llmstudy.chapters.vllm_features.statements import (  # noqa: F401
    FMT,
    GLUED,
    SPEC_WORKLOADS,
    glue_key,
    spec_statements,
    statements,
)
