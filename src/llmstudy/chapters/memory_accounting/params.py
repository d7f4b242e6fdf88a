"""The chapter's parameters, declared once: the notebook's parameters cell, the ``llmstudy memory`` flags, the run's
defaults and their validation all come from :data:`PARAMS`."""

from __future__ import annotations

from llmstudy.core import models as M
from llmstudy.core.params import Param, known_model, positive
from llmstudy.training import memory as mm

RULE_MODELS = ("llama-2-7b", "llama-13b", "llama-33b", "llama-65b")
CONFIG_MODELS = ("llama-2-7b", "llama-4-scout-17b-16e-instruct", "llama-4-maverick-17b-128e-instruct", "gpt-oss-20b")


def _methods_ok(v) -> str | None:
    try:
        for m in v:
            mm.parse_method(m, "llama-2-7b", 1, 1, True, "adamw_torch")
    except ValueError as e:
        return str(e)
    return None if v else "needs at least one method"


def _models_ok(v) -> str | None:
    bad = [m for m in v if known_model(m)]
    return f"unknown model(s) {bad}; known: {M.available_models()}" if bad else None


PARAMS: dict[str, Param] = {
    "mode": Param(str, "analyze", "analyze: render recorded runs (CPU); run: measure and write a run record", choices=("analyze", "run")),
    "model": Param(str, "llama-2-7b", "model config (name under data/models or path) for run mode and the focus tables", check=known_model),
    "compare_models": Param(list, list(CONFIG_MODELS), "model configs compared in the breakdown", check=_models_ok),
    "methods": Param(list, ["lora", "qlora", "full"], "METHOD[:OPTIMIZER[:DTYPE]] entries", check=_methods_ok),
    "optimizer": Param(str, "paged_adamw_8bit", "default optimizer", choices=tuple(mm.OPTIMIZERS)),
    "seq_len": Param(int, 100, "tokens per sample", check=positive),
    "micro_batch": Param(int, 1, "samples per micro-batch", check=positive),
    "grad_accum": Param(int, 32, "micro-batches per optimizer step (run mode)", check=positive),
    "grad_ckpt": Param(bool, True, "gradient checkpointing"),
    "steps": Param(int, 3, "optimizer steps to measure (run mode)", check=positive),
    "lora_r": Param(int, 4, "LoRA rank", check=positive),
    "lora_targets": Param(list, [], "LoRA target module names ([] = every linear projection and fused expert tensor of the architecture)", item=str),
    "run_id": Param(str, "", "run id for run mode (default: timestamp-model-device)"),
}
HEADER = '# Parameters (papermill). mode="run" measures on this machine and writes a new run record.'
# what `llmstudy memory` takes from the spec (mode is its --run flag; compare_models belongs to the page)
CLI_NAMES = ("model", "methods", "optimizer", "seq_len", "micro_batch", "grad_accum", "grad_ckpt", "steps", "lora_r", "lora_targets", "run_id")
RUN_NAMES = CLI_NAMES


def notebook_params() -> dict[str, Param]:
    """The spec (kept as a function for the callers that ask for it)."""
    return PARAMS


def setups(values: dict, model: str | None = None) -> list[mm.Setup]:
    """The memory-model setups the validated parameters describe (one per method spec)."""
    return [mm.parse_method(m, model or values["model"], values["seq_len"], values["micro_batch"], values["grad_ckpt"], values["optimizer"],
                            values["lora_r"], values["lora_targets"] or None) for m in values["methods"]]


def run_arguments(values: dict) -> dict:
    """``run_experiment``'s keyword arguments from validated parameters."""
    return {k: values[k] for k in RUN_NAMES if k in values}
