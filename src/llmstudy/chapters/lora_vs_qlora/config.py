"""The chapter's constants: the experiment, the article's prompts and figures, the variants and recipes; where things are."""

from __future__ import annotations

import os
from pathlib import Path

from llmstudy.core.paths import data_dir, repo_root

EXPERIMENT = "lora_vs_qlora"
# Resumable runs: stop training this long before the call's deadline (checkpoint save, exact evaluation and the
# greedy answers took ~25 s for Gemma-3-270m on the H100), and start a variant only with this much time left.
RESUME_MARGIN_S = 60.0
RESUME_MIN_START_S = 60.0
GiB = 2**30

# The article's eight chat prompts (§2.3.1, §2.4, §3.4); held out of the dataset.
EVAL_PROMPTS = (
    "あなたは誰ですか?",
    "名前を教えてもらえますか?",
    "暇つぶしの方法を教えて",
    "今日の運勢を占って。",
    "何か、長いお話をしてください。",
    "あなたの故郷について聞かせてください。",
    "新しいパソコンを買おうと思っています。どのような構成がおすすめですか?",
    "エッセイを書いて",
)
SYSTEM_PROMPT = ""  # the article's DEFAULT_SYSTEM_PROMPT
PROMPT_STYLES = ("llama2-inst", "chat-template")

# Published figures (the article, §2.4, §3.4, §3.5; H100 80GB PCIe; nvidia-smi "Processes" column; `time` real).
ARTICLE = {
    "gpu": "NVIDIA H100 80GB PCIe",
    "rows": 1400,  # "約 1400 件"
    "epochs": 3,
    "lora": {"nvidia_smi_MB": (15100, 17000), "real_s": 19 * 60 + 52.129, "user_s": 23 * 60 + 43.559},
    "qlora": {"nvidia_smi_MB": (7577, 7577), "real_s": 26 * 60 + 51.628, "user_s": 28 * 60 + 40.509},
}
# The article's machine and fine-tuning software (its environment section; published-numbers.md §3.6).
ARTICLE_SETUP = {"cpu": "AMD EPYC 7742", "software": "transformers 4.57.1, trl 0.25.0, peft 0.17.1, bitsandbytes 0.48.2"}

# Dense BF16 tensor-core peaks (NVIDIA datasheets list 1,979 TFLOPS for H100 SXM / H200 and 1,513 for H100 PCIe
# "with sparsity"; dense is half).
PEAK_BF16_FLOPS = {"H100 SXM": 989.4e12, "H200": 989.4e12, "H100 PCIe": 756.5e12}
# Memory bandwidth, TB/s (NVIDIA datasheets).
HBM_TBPS = {"H100 SXM": 3.35, "H200": 4.8, "H100 PCIe": 2.0}

VARIANTS = {
    # name: (method, recipe)
    "base": ("base", None),
    "lora": ("lora", "article"),
    "qlora": ("qlora", "article"),
    "lora-fast": ("lora", "fast"),
    "qlora-fast": ("qlora", "fast"),
}
RECIPES = {
    # the article: one sample per micro-batch, 32 micro-batches per optimizer step
    "article": {"micro_batch": 1, "grad_accum": 32, "padding_free": False},
    # the same 32 samples per optimizer step in one padding-free micro-batch (trl ``padding_free``)
    "fast": {"micro_batch": 32, "grad_accum": 1, "padding_free": True},
}

LLAMA2_TOKENIZER_JS = {"npm": "llama-tokenizer-js", "version": "1.2.2", "sha256": "ee83014ac8b379b16cf8d81e99ffcdb23dfade8c0d2e751bd06e7dc0b8476e72"}


class DatasetError(ValueError):
    """The persona dataset is missing or malformed; the message names the rows."""


class ResumeNeeded(RuntimeError):
    """A resumable run stopped at its deadline with checkpoints saved: call again with the same run id.

    ``pending`` maps each unfinished variant to ``(steps done, steps in all)``.
    """

    def __init__(self, run_id: str, pending: dict[str, tuple[int, int | None]], work: Path):
        self.run_id, self.pending, self.work = run_id, pending, work
        done = ", ".join(f"{v} {k}/{n if n else '?'} steps" for v, (k, n) in pending.items())
        super().__init__(f"run {run_id} is incomplete ({done}; checkpoints in {work}): call again with the same run id to resume")


# --- Where things are ---------------------------------------------------------------------------------------------


def cache_dir() -> Path:
    """Fetched and converted artefacts (tokenizers, the small model): $LLMSTUDY_MODEL_CACHE or ``.cache/``."""
    env = os.environ.get("LLMSTUDY_MODEL_CACHE")
    return Path(env).resolve() if env else repo_root() / ".cache"


def dataset_dir() -> Path:
    return data_dir() / EXPERIMENT


def dataset_path() -> Path:
    return dataset_dir() / "persona_ja.json"

