"""Models as configs: load a HF ``config.json``, build the real architecture on the meta device, count parameters.

A model in this study is a folder ``data/models/<name>/`` holding a ``config.json`` (and a ``SOURCE.md`` that cites
where its values come from), or any folder holding a ``config.json`` or a config file of any name passed by a user
who forks the study. Every config is validated by :mod:`llmstudy.core.arch` before any work (a missing field that
transformers would silently fill in, a non-positive dimension, heads not divisible by KV heads... is refused with one
line naming the field). No weights are ever needed here. The parameter table (:func:`parameters`) comes from
:mod:`llmstudy.calc.tensors`, standard library only, for the families it lists (every shipped config; tests prove it
equal to the meta-device model tensor by tensor); for any other family the transformers model is instantiated on the
``meta`` device (:func:`parameter_table`), so a 400B-parameter config costs a few hundred milliseconds and no memory.
The standard-library part of this module lives in :mod:`llmstudy.calc.models` and is re-exported here.

LoRA targets come from the architecture (:func:`lora_targets`): by default every linear projection of the language
model (not the output head, not the MoE routers) and every fused 3-D expert parameter (transformers 5 stores
experts as ``experts.gate_up_proj`` / ``experts.down_proj`` tensors that are not ``nn.Linear``; peft adapts them
through ``target_parameters``).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from llmstudy.calc import models as C
from llmstudy.calc.models import (  # noqa: F401 - the stdlib core, re-exported: one implementation for CLI, chapters and browser
    COMPONENTS,
    LLAMA_LORA_TARGETS,
    VISION_NEEDLES,
    LoraTargets,
    ModelConfigError,
    UnknownModelError,
    _checked,
    _find_config,
    available_models,
    component_of,
    config_path,
    describe,
    raw_config,
    title,
)
from llmstudy.calc.tensors import COMPONENT_RULES as _COMPONENT_RULES  # noqa: F401
from llmstudy.core import arch as A  # noqa: F401


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
        return AutoConfig.from_pretrained(path if path.name != "config.json" else path.parent)


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


def parameter_table(model_or_config) -> pd.DataFrame:
    """One row per parameter tensor: name, numel, component, and how LoRA / bitsandbytes see it.

    ``linear`` marks weights of ``nn.Linear`` modules (what bitsandbytes' 4-bit loader replaces), excluding the
    output head, which transformers keeps in the compute dtype. ``experts`` marks fused 3-D expert tensors
    (``num_experts`` x ``in_features`` x ``out_features`` in peft's reading; bitsandbytes leaves them in bf16).
    ``leaf`` is the module's (or, for experts, the parameter's) short name; ``vision`` marks the vision tower and
    projector of a multimodal model.
    """
    import torch

    model = model_or_config if isinstance(model_or_config, torch.nn.Module) else build_meta_model(model_or_config)
    linear_shapes = {
        f"{mod_name}.weight": (mod.in_features, mod.out_features)
        for mod_name, mod in model.named_modules()
        if isinstance(mod, torch.nn.Linear) and not mod_name.endswith("lm_head")
    }
    rows = []
    for name, p in model.named_parameters():
        module, _, pname = name.rpartition(".")
        experts = p.ndim == 3 and module.rsplit(".", 1)[-1] == "experts"
        if name in linear_shapes:
            in_f, out_f, n_exp, leaf = *linear_shapes[name], 0, module.rsplit(".", 1)[-1]
        elif experts:
            n_exp, in_f, out_f = (int(x) for x in p.shape)
            leaf = pname
        else:
            in_f = out_f = n_exp = 0
            leaf = module.rsplit(".", 1)[-1] if pname in ("weight", "bias") else pname
        rows.append(
            {
                "name": name,
                "numel": p.numel(),
                "component": component_of(name),
                "linear": name in linear_shapes,
                "in_features": in_f,
                "out_features": out_f,
                "experts": experts,
                "num_experts": n_exp,
                "leaf": leaf,
                "vision": any(n in name for n in VISION_NEEDLES),
            }
        )
    return pd.DataFrame(rows)


@functools.lru_cache(maxsize=16)
def _cached_table(path: str) -> pd.DataFrame:
    return parameter_table(load_config(path))


def _meta_rows(model) -> list[dict]:
    return _cached_table(str(config_path(model))).to_dict("records")


C._fallback_table = _meta_rows  # families the stdlib table does not list: the meta-device model


def parameters(model: str | Path) -> pd.DataFrame:
    """The parameter table of a model (:func:`parameter_table`'s columns), from :mod:`llmstudy.calc.tensors` (standard
    library, proven equal to the meta-device model for every shipped config) or, for a family it does not list, from
    the meta-device model itself."""
    try:
        rows = C.tensors(model)
    except C.T.NotModelledFamily:
        return _cached_table(str(config_path(model))).copy()
    return pd.DataFrame(list(rows))


def component_counts(model: str | Path) -> pd.Series:
    """Parameter count per component (all components listed, zeros included), plus ``total``."""
    table = parameters(model)
    counts = table.groupby("component")["numel"].sum().reindex(COMPONENTS, fill_value=0).astype("int64")
    counts["total"] = int(table["numel"].sum())
    return counts


def _peft_conversion(model_type: str) -> tuple[dict[str, str], dict[str, list[str]]]:
    """peft's transformers-v4 -> v5 renaming for MoE families (:func:`llmstudy.calc.models.peft_conversion`)."""
    return C.peft_conversion(model_type)


def lora_targets(model: str | Path, targets=None) -> LoraTargets:
    """Resolve LoRA targets for a model from its architecture (:func:`llmstudy.calc.models.lora_targets`)."""
    return C.lora_targets_from(C.table_rows(model), describe(model).model_type, model, targets)


def lora_tensors(model: str | Path, r: int, targets=None) -> pd.DataFrame:
    """One row per LoRA A/B matrix peft creates: tensor, numel (computed from the shapes, not by peft).

    ``nn.Linear`` (in -> out): A is r x in, B is out x r. A fused expert tensor of E experts: A is in x (r * E),
    B is (r * E) x out (peft's ``ParamWrapper``), with r doubled where peft fuses two transformers-4 names.
    """
    if not isinstance(r, int) or isinstance(r, bool) or r <= 0:
        raise ValueError(f"lora_r must be a positive integer, got {r!r}")
    t = targets if isinstance(targets, LoraTargets) else lora_targets(model, targets)
    return pd.DataFrame(C.lora_tensor_rows(C.table_rows(model), r, t), columns=["tensor", "numel", "base"])


@dataclass(frozen=True)
class LoraCount:
    trainable: int
    total: int
    targets: tuple[str, ...] = ()

    @property
    def percent(self) -> float:
        return 100.0 * self.trainable / self.total


def lora_count(model: str | Path, r: int, target_modules=None, alpha: int | None = None, peft: bool = True) -> LoraCount:
    """Trainable/total parameters with LoRA of rank ``r`` on ``target_modules`` (None: :func:`lora_targets`'s default).

    With ``peft`` (the default) the count is peft's own, after wrapping the meta model (the same numbers
    ``print_trainable_parameters`` shows); without, it is :func:`lora_tensors` summed over the exact parameter
    table (no peft import). Tests prove the two agree.
    """
    if not isinstance(r, int) or isinstance(r, bool) or r <= 0:
        raise ValueError(f"lora_r must be a positive integer, got {r!r}")
    t = lora_targets(model, target_modules)
    if not peft:
        base = int(parameters(model).numel.sum())
        n = int(lora_tensors(model, r, t).numel.sum())
        return LoraCount(n, base + n, t.names)
    from peft import LoraConfig, get_peft_model

    meta = build_meta_model(load_config(model))
    lcfg = LoraConfig(r=r, lora_alpha=alpha or 2 * r, task_type="CAUSAL_LM", bias="none", **t.peft_kwargs())
    with _quiet_transformers(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peft_model = get_peft_model(meta, lcfg)
    trainable, total = peft_model.get_nb_trainable_parameters()
    return LoraCount(int(trainable), int(total), t.names)


def qlora_bf16_weights(model: str | Path) -> pd.Series:
    """Parameters a QLoRA (bitsandbytes 4-bit) load leaves in bf16, by what they are; the rest is NF4.

    bitsandbytes replaces ``nn.Linear`` modules only: embeddings, norms, the output head, fused 3-D expert tensors
    (not ``nn.Linear``) and biases stay in the compute dtype.
    """
    rows = C.qlora_bf16_rows(C.table_rows(model))
    out = pd.Series(dict(rows), dtype="int64", name="numel")
    out.index.name = "component"
    return out


def summary(model: str | Path) -> dict:
    """A few architecture facts used across chapters (from the validated config, :func:`describe`)."""
    a = describe(model)
    return {
        "model": str(model),
        "architecture": a.architecture,
        "families": "/".join(a.families),
        "layers": a.num_layers,
        "hidden": a.hidden_size,
        "heads": a.num_heads,
        "kv_heads": a.num_kv_heads,
        "head_dim": a.head_dim,
        "experts": f"{a.moe.num_experts} (top-{a.moe.top_k})" if a.moe else "",
        "vocab": a.vocab_size,
        "params": int(component_counts(model)["total"]),
    }
