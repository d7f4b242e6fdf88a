"""The chapter's parameters, declared once: the notebook's parameters cell, the CLI flags and the run's defaults."""

from __future__ import annotations

from llmstudy.core.params import Param, known_model, non_negative, positive
from llmstudy.training import memory as mm

from .config import VARIANTS


def _variants_ok(v) -> str | None:
    bad = [x for x in v if x not in VARIANTS]
    return f"unknown variant(s) {bad}; known: {list(VARIANTS)}" if bad else (None if v else "needs at least one variant")


PARAMS: dict[str, Param] = {
    "mode": Param(str, "analyze", "analyze: render recorded runs (CPU); run: train and write a run record", choices=("analyze", "run")),
    "model": Param(str, "gemma-3-270m", "model for run mode: a pretrained model with weights.json, or a random-weight architecture", check=known_model),
    "speed_model": Param(str, "llama-2-7b", "the random-weight architecture of the memory/speed runs", check=known_model),
    "variants": Param(list, ["base", "lora", "qlora", "lora-fast", "qlora-fast"], "variants to run", check=_variants_ok),
    "parallel": Param(list, [], "variants run side by side at the end of run mode", check=lambda v: _variants_ok(v) if v else None, item=str),
    "steps": Param(int, 0, "optimizer steps per variant (0: full epochs, evaluation, answers)", check=non_negative),
    "epochs": Param(int, 3, "epochs when steps is 0", check=positive),
    "eval_steps": Param(int, 4, "evaluate every N optimizer steps", check=positive),
    "max_length": Param(int, 1024, "trl max_length; longer prompts are an error", check=positive),
    "lora_targets": Param(list, [], "LoRA targets ([] = every linear projection of the language model, fused experts included)", item=str),
    "optimizer": Param(str, "paged_adamw_8bit", "optimizer (adamw_torch on a CPU)", choices=tuple(mm.RUNNABLE_OPTIMIZERS)),
    "dataset": Param(str, "", "dataset JSON (default data/lora_vs_qlora/persona_ja.json)"),
    "run_id": Param(str, "", "run id for run mode"),
}
HEADER = '# Parameters (papermill). mode="run" trains the variants on this machine and writes a new run record.'
# what the CLI's `lora-vs-qlora run` / `check` take from the spec (mode and speed_model belong to the notebook)
CLI_NAMES = ("model", "variants", "parallel", "steps", "epochs", "eval_steps", "max_length", "lora_targets", "optimizer", "dataset", "run_id")


def notebook_params() -> dict[str, Param]:
    """The spec (kept as a function for the callers that ask for it)."""
    return PARAMS



def run_arguments(values: dict) -> dict:
    """``run_experiment``'s keyword arguments from validated parameters ('' dataset = the shipped one)."""
    out = {k: values[k] for k in CLI_NAMES if k in values}
    out["dataset"] = out.get("dataset") or None
    return out
