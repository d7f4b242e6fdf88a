"""Models as configs: load a HF ``config.json``, build the real architecture on the meta device, count parameters.

A model in this study is a folder ``data/models/<name>/`` holding a ``config.json`` (and a ``SOURCE.md`` that cites
where its values come from), or any folder/path to a ``config.json`` passed by a user who forks the study. No
weights are ever needed here: the transformers model is instantiated on the ``meta`` device, so a 400B-parameter
config costs a few hundred milliseconds and no memory.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from llmstudy.core.paths import models_dir

LLAMA_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

# Order matters: the first matching rule names the component.
_COMPONENT_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("vision", ("vision_model", "multi_modal_projector", "vision_tower")),
    ("embeddings", ("embed_tokens", "wte", "word_embeddings")),
    ("lm_head", ("lm_head",)),
    ("norms", ("norm", "ln_")),
    ("router", (".router.", ".gate.weight")),
    ("experts", (".experts.",)),
    ("attention", ("self_attn", ".attn.", "attention")),
    ("mlp", (".mlp.", "feed_forward")),
)
COMPONENTS = ("embeddings", "attention", "mlp", "experts", "router", "norms", "lm_head", "vision", "other")


class UnknownModelError(ValueError):
    """Raised when a model name or path does not resolve to a config.json."""


def available_models(root: Path | None = None) -> list[str]:
    """Names of the model configs shipped under ``data/models``."""
    base = root or models_dir()
    return sorted(p.parent.name for p in base.glob("*/config.json"))


def config_path(model: str | Path) -> Path:
    """Resolve a model name (``data/models/<name>``), a folder, or a ``config.json`` path to the config file."""
    candidates = []
    p = Path(model)
    candidates += [p if p.name == "config.json" else p / "config.json"]
    candidates.append(models_dir() / str(model) / "config.json")
    for c in candidates:
        if c.is_file():
            return c.resolve()
    known = ", ".join(available_models()) or "(none)"
    raise UnknownModelError(
        f"unknown model {str(model)!r}: no config.json at {candidates[-1]} or {candidates[0]}; known models: {known}"
    )


@contextlib.contextmanager
def _quiet_transformers():
    """Silence transformers' config-validation chatter (e.g. llama3 rope bands) while we only count parameters."""
    logger = logging.getLogger("transformers")
    old = logger.level
    logger.setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as hf_logging

        old_hf = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
    except Exception:  # pragma: no cover - transformers always has it
        old_hf = None
    try:
        yield
    finally:
        logger.setLevel(old)
        if old_hf is not None:
            hf_logging.set_verbosity(old_hf)


def load_config(model: str | Path):
    """The transformers ``PretrainedConfig`` for a model name or path."""
    from transformers import AutoConfig

    path = config_path(model)
    with _quiet_transformers():
        return AutoConfig.from_pretrained(path.parent)


def raw_config(model: str | Path) -> dict:
    return json.loads(config_path(model).read_text())


def text_config(config):
    """The language model's config (``text_config`` for multimodal configs)."""
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def build_meta_model(config, dtype=None):
    """Instantiate the config's own architecture on the meta device: real module tree, no storage."""
    import torch
    import transformers

    arch = (getattr(config, "architectures", None) or [None])[0]
    cls = getattr(transformers, arch, None) if arch else None
    with _quiet_transformers(), torch.device("meta"):
        if cls is not None:
            return cls._from_config(config, dtype=dtype) if dtype else cls._from_config(config)
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_config(config, dtype=dtype) if dtype else AutoModelForCausalLM.from_config(config)


def component_of(name: str) -> str:
    """Which component a parameter belongs to, from its qualified name."""
    for component, needles in _COMPONENT_RULES:
        if any(n in name for n in needles):
            return component
    return "other"


def parameter_table(model_or_config) -> pd.DataFrame:
    """One row per parameter tensor: name, numel, component, and whether bitsandbytes would quantize it.

    ``linear`` marks weights of ``nn.Linear`` modules (what bitsandbytes' 4-bit loader replaces), excluding the
    output head, which transformers keeps in the compute dtype.
    """
    import torch

    model = model_or_config if isinstance(model_or_config, torch.nn.Module) else build_meta_model(model_or_config)
    linear_shapes = {
        f"{mod_name}.weight": (mod.in_features, mod.out_features)
        for mod_name, mod in model.named_modules()
        if isinstance(mod, torch.nn.Linear) and not mod_name.endswith("lm_head")
    }
    rows = [
        {
            "name": name,
            "numel": p.numel(),
            "component": component_of(name),
            "linear": name in linear_shapes,
            "in_features": linear_shapes.get(name, (0, 0))[0],
            "out_features": linear_shapes.get(name, (0, 0))[1],
        }
        for name, p in model.named_parameters()
    ]
    return pd.DataFrame(rows)


@functools.lru_cache(maxsize=16)
def _cached_table(path: str) -> pd.DataFrame:
    return parameter_table(load_config(path))


def parameters(model: str | Path) -> pd.DataFrame:
    """Cached :func:`parameter_table` for a model name or path."""
    return _cached_table(str(config_path(model))).copy()


def component_counts(model: str | Path) -> pd.Series:
    """Parameter count per component (all components listed, zeros included), plus ``total``."""
    table = parameters(model)
    counts = table.groupby("component")["numel"].sum().reindex(COMPONENTS, fill_value=0).astype("int64")
    counts["total"] = int(table["numel"].sum())
    return counts


@dataclass(frozen=True)
class LoraCount:
    trainable: int
    total: int

    @property
    def percent(self) -> float:
        return 100.0 * self.trainable / self.total


def lora_count(model: str | Path, r: int, target_modules=LLAMA_LORA_TARGETS, alpha: int | None = None) -> LoraCount:
    """Trainable/total parameters after peft wraps the meta model with LoRA of rank ``r`` (peft's own counting)."""
    if r <= 0:
        raise ValueError(f"lora_r must be a positive integer, got {r}")
    from peft import LoraConfig, get_peft_model

    meta = build_meta_model(load_config(model))
    lcfg = LoraConfig(
        r=r, lora_alpha=alpha or 2 * r, target_modules=list(target_modules), task_type="CAUSAL_LM", bias="none"
    )
    with _quiet_transformers():
        peft_model = get_peft_model(meta, lcfg)
    trainable, total = peft_model.get_nb_trainable_parameters()
    return LoraCount(int(trainable), int(total))


def summary(model: str | Path) -> dict:
    """A few architecture facts used across chapters."""
    full = load_config(model)
    cfg = text_config(full)
    n_heads = cfg.num_attention_heads
    return {
        "model": str(model),
        "architecture": (getattr(full, "architectures", None) or ["?"])[0],
        "layers": cfg.num_hidden_layers,
        "hidden": cfg.hidden_size,
        "heads": n_heads,
        "kv_heads": getattr(cfg, "num_key_value_heads", n_heads) or n_heads,
        "head_dim": getattr(cfg, "head_dim", None) or cfg.hidden_size // n_heads,
        "vocab": cfg.vocab_size,
        "params": int(component_counts(model)["total"]),
    }


def title(model: str | Path) -> str:
    """The model's name as its SOURCE.md heading gives it (the folder name when there is none)."""
    src = config_path(model).parent / "SOURCE.md"
    if src.is_file():
        for line in src.read_text().splitlines():
            if line.startswith("# "):
                return line[2:].strip()
    return config_path(model).parent.name
