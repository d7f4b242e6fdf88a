"""Engine comparison (the article's ch. 6.6 and 8): vLLM against a second engine measured by us, and against
TensorRT-LLM from run records or the article's published numbers.

Two comparisons, each a sweep written by :func:`llmstudy.serving.sweep.run_sweep` (experiment ``engine_comparison``):
``second-engine`` (the article's 4-bit Llama-2-7B case on SGLang and on vLLM, one record) and ``gptoss-vllm``
(gpt-oss-20b on vLLM, the article's ch. 8 sweep). Fairness is enforced, not assumed: :func:`require_fair` refuses
records that break a rule of :data:`RULES`; :func:`win_table` then says which engine wins where, and by how much.

The package: ``params`` (the chapter's parameters, once), ``plan`` (parts, schedules, the run, the SGLang decision),
``analysis`` (points, server logs, fairness, wins, published numbers), ``statements`` (every glued number),
``figures`` and ``page`` (what the notebook's cells show).
"""

from llmstudy.chapters.engine_comparison.analysis import (  # noqa: F401
    _EVIDENCE_RE,
    _JIT_RE,
    _KERNEL_RES,
    _TS_RE,
    ARTICLE_GPU,
    TIE_MARGIN,
    _exactness,
    _int,
    _model_name,
    _order,
    _sched,
    _true,
    article_claims,
    comparison_sets,
    engine_label,
    failed_attempts,
    fairness,
    jit_warnings,
    kernel_facts,
    load_points,
    other_vllm_7b,
    published,
    published_7b_wins,
    require_fair,
    server_facts,
    server_kernels,
    stalled_points,
    trtllm_points,
    verdict,
    verdict_phrase,
    versus_article,
    where_each_wins,
    win_summary,
    win_table,
)
from llmstudy.chapters.engine_comparison.figures import (  # noqa: F401
    key_figure,
    refs_7b,
    refs_gptoss,
    throughput_figure,
    ttft_figure,
)
from llmstudy.chapters.engine_comparison.page import (  # noqa: F401
    Page,
    answer,
    load_page,
    prov,
    records_line,
    show_answer,
    show_article_verdicts,
    show_comparison,
    show_failed_attempts,
    show_fairness,
    show_gptoss,
    show_log_lines,
    show_other,
    show_other_vllm,
    show_published,
    show_rules,
    show_second_engine,
    show_server_facts,
    show_sglang_pins,
    show_versus_article,
    show_where_each_wins,
)
from llmstudy.chapters.engine_comparison.params import (  # noqa: F401
    GPTOSS_MODEL,
    MODEL_7B,
    PARAMS,
    PARTS,
    SECOND_ENGINES,
)
from llmstudy.chapters.engine_comparison.plan import (  # noqa: F401
    ARTICLE_PROMPTS,
    ENGINES_CONCURRENCY,
    EXPERIMENT,
    RULES,
    SGLANG_EXTRA,
    WIN_METRICS,
    FairnessError,
    measure_command,
    newest_with_torch,
    part_model,
    pins_row,
    plan,
    plan_compare,
    plan_cpu_smoke,
    plan_engines,
    plan_gptoss,
    run_mode,
    run_part,
    schedule,
    sglang_pins,
)
from llmstudy.chapters.engine_comparison.statements import (  # noqa: F401
    KEYS_7B,
    NA,
    fmt,
    gpu_sets,
    pick,
    published_numbers,
    statements,
)
