"""Models as configs: load a HF ``config.json``, build the real architecture on the meta device, count parameters.

A model in this study is a folder ``data/models/<name>/`` holding a ``config.json`` (and a ``SOURCE.md`` that cites
where its values come from), or any folder holding a ``config.json`` or a config file of any name passed by a user
who forks the study. Every config is validated by :mod:`llmstudy.core.arch` before any work (a missing field that
transformers would silently fill in, a non-positive dimension, heads not divisible by KV heads... is refused with one
line naming the field). No weights are ever needed here: the transformers model is instantiated on the ``meta``
device, so a 400B-parameter config costs a few hundred milliseconds and no memory.

LoRA targets come from the architecture (:func:`lora_targets`): by default every linear projection of the language
model (not the output head, not the MoE routers) and every fused 3-D expert parameter (transformers 5 stores
experts as ``experts.gate_up_proj`` / ``experts.down_proj`` tensors that are not ``nn.Linear``; peft adapts them
through ``target_parameters``).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from llmstudy.core import arch as A
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


class ModelConfigError(UnknownModelError, A.ConfigError):
    """A config file was found but cannot be modelled exactly (caught as either parent class)."""


def available_models(root: Path | None = None) -> list[str]:
    """Names of the model configs shipped under ``data/models``."""
    base = root or models_dir()
    return sorted(p.parent.name for p in base.glob("*/config.json"))


def _find_config(model: str | Path) -> Path:
    p = Path(model)
    candidates = [p] if p.is_file() else []
    candidates += [p / "config.json", models_dir() / str(model) / "config.json"]
    for c in candidates:
        if c.is_file():
            return c.resolve()
    known = ", ".join(available_models()) or "(none)"
    raise UnknownModelError(
        f"unknown model {str(model)!r}: no config.json at {candidates[-1]} or {candidates[0]}; known models: {known}"
    )


@functools.lru_cache(maxsize=64)
def _checked(path: str, mtime_ns: int) -> dict:
    try:
        raw = json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise ModelConfigError(f"{path}: not valid JSON ({e})") from None
    try:
        A.validate(raw)
    except A.ConfigError as e:
        raise ModelConfigError(f"{path}: {e}") from None
    return raw


def config_path(model: str | Path) -> Path:
    """Resolve a model name (``data/models/<name>``), a folder, or a config file of any name, and validate it.

    Raises :class:`UnknownModelError` when nothing is found and :class:`ModelConfigError` (one line naming the
    field) when the config cannot be modelled exactly; both before any work.
    """
    path = _find_config(model)
    _checked(str(path), path.stat().st_mtime_ns)
    return path


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


def raw_config(model: str | Path) -> dict:
    """The validated config file as a dict."""
    path = config_path(model)
    return json.loads(path.read_text())


def describe(model: str | Path) -> A.Arch:
    """The architecture of a model name or path, layer by layer (:func:`llmstudy.core.arch.describe`)."""
    return A.describe(raw_config(model))


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


VISION_NEEDLES = ("vision", "multi_modal_projector")


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
class LoraTargets:
    """What LoRA adapts: ``nn.Linear`` modules by short name (peft ``target_modules``) and fused expert parameters
    (peft ``target_parameters``, e.g. ``experts.gate_up_proj``), in the language model only.

    ``ranks`` holds rank multipliers peft applies: naming both halves of a fused tensor the v4 way (``gate_proj`` +
    ``up_proj``, Mixtral's ``w1`` + ``w3``) gives ``experts.gate_up_proj`` rank 2r. ``not_adapted`` says, in words,
    which projections these targets cannot reach and why.
    """

    modules: tuple[str, ...]
    parameters: tuple[str, ...] = ()
    multimodal: bool = False  # restrict target_modules to the language model (a vision tower shares names)
    ranks: tuple[tuple[str, int], ...] = ()  # (parameter leaf, rank multiplier) for fused v4 names
    converted: tuple[str, ...] = ()  # v4 names given as target_modules that peft turns into expert parameters
    not_adapted: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return self.modules + self.parameters

    def rank_of(self, leaf: str, r: int) -> int:
        return r * dict(self.ranks).get(leaf, 1)

    def peft_kwargs(self) -> dict:
        """``target_modules`` / ``target_parameters`` for ``peft.LoraConfig`` selecting exactly these tensors."""
        import re

        names = list(self.modules) + list(self.converted)
        mods: list[str] | str = names
        if self.multimodal and names:
            alt = "|".join(re.escape(m) for m in names)
            mods = rf"^(?!.*(?:{'|'.join(VISION_NEEDLES)})).*\.(?:{alt})$"
        out: dict = {"target_modules": mods}
        if self.parameters:
            out["target_parameters"] = [p for p in self.parameters if p.rsplit(".", 1)[-1] not in dict(self.ranks)]
        return out


def _peft_conversion(model_type: str) -> tuple[dict[str, str], dict[str, list[str]]]:
    """peft's transformers-v4 -> v5 renaming for MoE families: {v4 name: fused parameter}, {fused: [v4 halves]}.

    Under transformers 5, peft (>= 0.18) rewrites ``target_modules`` entries with these names into expert
    ``target_parameters`` for the families transformers converts (Mixtral, Qwen3-MoE, DeepSeek-V2/V3), so an
    ``nn.Linear`` of the same name elsewhere (a dense first layer, a shared expert) cannot be targeted by name.
    """
    try:
        from peft.utils import transformers_weight_conversion as T
    except Exception:  # pragma: no cover - older peft: no conversion
        return {}, {}
    base = T._MODEL_TO_CONVERSION_PATTERN.get(model_type)
    mapping = {k: v for k, v in T._MOE_TARGET_MODULE_MAPPING.get(base, {}).items() if "." not in v}
    return mapping, dict(T._MOE_FUSED_TARGETS.get(base, {}))


def lora_targets(model: str | Path, targets=None) -> LoraTargets:
    """Resolve LoRA targets for a model from its architecture.

    ``targets`` None (or ``"all-linear"``): every linear projection of the language model except the output head
    and the MoE routers, plus every fused expert parameter (rank r). Otherwise short names, each matching
    ``nn.Linear`` modules and/or fused expert parameters of that name. For the MoE families peft converts from
    transformers-4 names (Mixtral's ``w1``/``w2``/``w3``; ``gate_proj``/``up_proj``/``down_proj`` for Qwen3-MoE and
    DeepSeek), those names mean the experts, as peft applies them: both halves of ``gate_up_proj`` or neither, at rank
    2r. An unknown name is an error listing the names the model has.
    """
    table = parameters(model)
    lm = table[~table.vision]
    lin = lm[lm.linear & (lm.component != "router")]
    exp = lm[lm.experts]
    multimodal = bool(table.vision.any())
    lin_names = list(dict.fromkeys(lin.leaf))
    exp_names = list(dict.fromkeys(exp.leaf))
    mapping, fused = _peft_conversion(describe(model).model_type) if exp_names else ({}, {})
    shadow = [n for n in lin_names if n in mapping]
    note = ()
    if shadow:
        where = sorted({lin[lin.leaf == n].name.iloc[0].rsplit(".", 1)[0] for n in shadow})
        note = (f"nn.Linear {', '.join(shadow)} (e.g. {where[0]}): peft maps these names to the fused experts for "
                "this family under transformers 5, so they cannot be LoRA targets",)
    if targets is None or targets == "all-linear" or list(targets) == ["all-linear"]:
        mods = tuple(n for n in lin_names if n not in mapping)
        return LoraTargets(mods, tuple(f"experts.{n}" for n in exp_names), multimodal, not_adapted=note)
    names = [targets] if isinstance(targets, str) else list(targets)
    if not names:
        raise ValueError("lora targets: empty list (give module names, or none for every linear projection)")
    modules, params, unknown, converted, ranks = [], [], [], [], {}
    for n in dict.fromkeys(names):
        if n in mapping:
            converted.append(n)
            params.append(f"experts.{mapping[n]}")
            continue
        hit = False
        if n in lin_names:
            modules.append(n)
            hit = True
        if n in exp_names:
            params.append(f"experts.{n}")
            hit = True
        if not hit:
            unknown.append(n)
    if unknown:
        raise ValueError(f"lora targets {unknown} are not projections of {model}: linear modules {lin_names}"
                         + (f", fused expert parameters {exp_names}" + (f" (or their transformers-4 names {sorted(mapping)})" if mapping else "") if exp_names else ""))
    for fused_name, halves in fused.items():
        present = [h for h in halves if h in converted]
        if 0 < len(present) < len(halves):
            raise ValueError(f"lora targets: {', '.join(present)} without {', '.join(h for h in halves if h not in present)}: "
                             f"they are one fused experts.{fused_name} tensor in transformers 5; target all or none")
        if len(present) == len(halves) > 1:
            ranks[fused_name] = len(halves)
    return LoraTargets(tuple(modules), tuple(dict.fromkeys(params)), multimodal, tuple(ranks.items()), tuple(converted),
                       note if converted else ())


def lora_tensors(model: str | Path, r: int, targets=None) -> pd.DataFrame:
    """One row per LoRA A/B matrix peft creates: tensor, numel (computed from the shapes, not by peft).

    ``nn.Linear`` (in -> out): A is r x in, B is out x r. A fused expert tensor of E experts: A is in x (r * E),
    B is (r * E) x out (peft's ``ParamWrapper``), with r doubled where peft fuses two transformers-4 names.
    """
    if not isinstance(r, int) or isinstance(r, bool) or r <= 0:
        raise ValueError(f"lora_r must be a positive integer, got {r!r}")
    t = targets if isinstance(targets, LoraTargets) else lora_targets(model, targets)
    table = parameters(model)
    lm = table[~table.vision]
    rows = []
    for _, row in lm[lm.linear & lm.leaf.isin(t.modules) & (lm.component != "router")].iterrows():
        module = row["name"].rsplit(".", 1)[0]
        rows += [{"tensor": f"{module}.lora_A", "numel": r * int(row.in_features), "base": row["name"]},
                 {"tensor": f"{module}.lora_B", "numel": int(row.out_features) * r, "base": row["name"]}]
    wanted = {p.rsplit(".", 1)[-1] for p in t.parameters}
    for _, row in lm[lm.experts & lm.leaf.isin(wanted)].iterrows():
        e, rk = int(row.num_experts), t.rank_of(row.leaf, r)
        rows += [{"tensor": f"{row['name']}.lora_A", "numel": int(row.in_features) * rk * e, "base": row["name"]},
                 {"tensor": f"{row['name']}.lora_B", "numel": rk * e * int(row.out_features), "base": row["name"]}]
    return pd.DataFrame(rows, columns=["tensor", "numel", "base"])


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
    table = parameters(model)
    keep = table[~table.linear]
    kind = keep.component.where(~keep.experts, "fused experts (not nn.Linear)")
    kind = kind.where(~keep.name.str.endswith(".bias") | keep.experts, "biases")
    return keep.groupby(kind)["numel"].sum().astype("int64").sort_values(ascending=False)


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


def title(model: str | Path) -> str:
    """The model's name as its SOURCE.md heading gives it (else the folder's name, or a config file's stem)."""
    path = config_path(model)
    if path.name != "config.json":
        return path.stem
    src = path.parent / "SOURCE.md"
    if src.is_file():
        for line in src.read_text().splitlines():
            if line.startswith("# "):
                return line[2:].strip()
    return path.parent.name
