"""Models as configs, standard library only: find and validate a ``config.json``, list its tensors, resolve LoRA targets.

:mod:`llmstudy.core.models` re-exports everything here and adds what needs transformers, torch, peft or pandas (the
meta-device model, peft's own trainable count, DataFrames). In the browser the same functions read the configs
that the page writes into Pyodide's file system under ``$LLMSTUDY_ROOT/data/models``.
"""

from __future__ import annotations

import copy
import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path

from llmstudy.calc import tensors as T
from llmstudy.core import arch as A
from llmstudy.core.paths import models_dir

LLAMA_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
COMPONENTS = T.COMPONENTS
VISION_NEEDLES = T.VISION_NEEDLES
component_of = T.component_of

# peft's transformers-4 -> 5 renaming of MoE expert names (peft.utils.transformers_weight_conversion, peft 0.21):
# {v4 name: fused parameter}, {fused parameter: [its v4 halves]}, per model_type. tests/calc compares it with peft.
_W_NAMES = ({"w1": "gate_up_proj", "w3": "gate_up_proj", "w2": "down_proj"}, {"gate_up_proj": ["w1", "w3"]})
_PROJ_NAMES = ({"gate_proj": "gate_up_proj", "up_proj": "gate_up_proj", "down_proj": "down_proj"},
               {"gate_up_proj": ["gate_proj", "up_proj"]})
PEFT_MOE_CONVERSION = {
    **dict.fromkeys(("mixtral", "minimax", "minimax_m2"), _W_NAMES),
    **dict.fromkeys(("afmoe", "deepseek_v2", "deepseek_v3", "deepseek_v32", "dots1", "ernie4_5_moe", "glm4_moe",
                     "glm4_moe_lite", "glm_moe_dsa", "glm4v_moe", "longcat_flash", "solar_open", "mellum", "qwen3_moe",
                     "qwen3_omni_moe", "qwen3_omni_moe_thinker", "qwen3_next", "hunyuan_v1_moe", "flex_olmo", "olmoe",
                     "exaone_moe", "cohere2_moe"), _PROJ_NAMES),
}


class UnknownModelError(ValueError):
    """Raised when a model name or path does not resolve to a config.json."""


class ModelConfigError(UnknownModelError, A.ConfigError):
    """A config file was found but cannot be modelled exactly (caught as either parent class)."""


def available_models(root: Path | None = None) -> list[str]:
    """Names of the model configs shipped under ``data/models``."""
    base = root or models_dir()
    return sorted(p.parent.name for p in base.glob("*/config.json"))


_FOUND: dict[tuple, Path] = {}


def _find_config(model: str | Path) -> Path:
    key = (str(model), os.environ.get("LLMSTUDY_ROOT"), os.getcwd())
    hit = _FOUND.get(key)
    if hit is not None and hit.is_file():  # resolving a name walks the folders: remembered while the file is there
        return hit
    p = Path(model)
    candidates = [p] if p.is_file() else []
    candidates += [p / "config.json", models_dir() / str(model) / "config.json"]
    for c in candidates:
        if c.is_file():
            _FOUND[key] = c.resolve()
            return _FOUND[key]
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
        _described(path, mtime_ns, raw)
    except A.ConfigError as e:
        raise ModelConfigError(f"{path}: {e}") from None
    return raw


_ARCH: dict[tuple, A.Arch] = {}


def _described(path: str, mtime_ns: int, raw: dict) -> A.Arch:
    key = (path, mtime_ns)
    if key not in _ARCH:
        _ARCH[key] = A.describe(raw)  # validates (ConfigError naming the field) and describes
    return _ARCH[key]


def config_path(model: str | Path) -> Path:
    """Resolve a model name (``data/models/<name>``), a folder, or a config file of any name, and validate it.

    Raises :class:`UnknownModelError` when nothing is found and :class:`ModelConfigError` (one line naming the
    field) when the config cannot be modelled exactly; both before any work.
    """
    path = _find_config(model)
    _checked(str(path), path.stat().st_mtime_ns)
    return path


def raw_config(model: str | Path) -> dict:
    """The validated config file as a dict (a copy: the caller may change it)."""
    path = config_path(model)
    return copy.deepcopy(_checked(str(path), path.stat().st_mtime_ns))


def describe(model: str | Path) -> A.Arch:
    """The architecture of a model name or path, layer by layer (:func:`llmstudy.core.arch.describe`; immutable, cached
    per file version)."""
    path = config_path(model)
    mtime = path.stat().st_mtime_ns
    return _described(str(path), mtime, _checked(str(path), mtime))


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


# --- Tensors --------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=64)
def _table(path: str, mtime_ns: int) -> tuple[dict, ...]:
    return tuple(T.tensor_table(json.loads(Path(path).read_text())))


def tensors(model: str | Path) -> tuple[dict, ...]:
    """The parameter table of :mod:`llmstudy.calc.tensors` for a model name or path (cached; do not mutate the rows).

    Raises :class:`llmstudy.calc.tensors.NotModelledFamily` for a family the stdlib table does not list.
    """
    path = config_path(model)
    return _table(str(path), path.stat().st_mtime_ns)


def supported(model: str | Path) -> bool:
    """Whether :func:`tensors` lists this model's family (else the library builds the meta-device model)."""
    return T.supported(raw_config(model))


def component_counts(model: str | Path) -> dict[str, int]:
    """Parameter count per component (all components listed, zeros included), plus ``total``."""
    return T.component_counts(list(tensors(model)))


# --- LoRA -------------------------------------------------------------------------------------------------------

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


def peft_conversion(model_type: str) -> tuple[dict[str, str], dict[str, list[str]]]:
    """peft's transformers-v4 -> v5 renaming for MoE families: {v4 name: fused parameter}, {fused: [v4 halves]}.

    Under transformers 5, peft (>= 0.18) rewrites ``target_modules`` entries with these names into expert
    ``target_parameters`` for the families transformers converts (Mixtral, Qwen3-MoE, DeepSeek-V2/V3), so an
    ``nn.Linear`` of the same name elsewhere (a dense first layer, a shared expert) cannot be targeted by name.
    """
    mapping, fused = PEFT_MOE_CONVERSION.get(model_type, ({}, {}))
    return dict(mapping), {k: list(v) for k, v in fused.items()}


def _lm_rows(table) -> list[dict]:
    return [r for r in table if not r["vision"]]


def lora_targets_from(table, model_type: str, model: str, targets=None) -> LoraTargets:
    """:func:`lora_targets` for a parameter table given as rows (dicts with the keys of :mod:`.tensors`)."""
    lm = _lm_rows(table)
    lin = [r for r in lm if r["linear"] and r["component"] != "router"]
    exp = [r for r in lm if r["experts"]]
    multimodal = any(r["vision"] for r in table)
    lin_names = list(dict.fromkeys(r["leaf"] for r in lin))
    exp_names = list(dict.fromkeys(r["leaf"] for r in exp))
    mapping, fused = peft_conversion(model_type) if exp_names else ({}, {})
    shadow = [n for n in lin_names if n in mapping]
    note = ()
    if shadow:
        where = sorted({next(r["name"] for r in lin if r["leaf"] == n).rsplit(".", 1)[0] for n in shadow})
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


def lora_targets(model: str | Path, targets=None) -> LoraTargets:
    """Resolve LoRA targets for a model from its architecture.

    ``targets`` None (or ``"all-linear"``): every linear projection of the language model except the output head
    and the MoE routers, plus every fused expert parameter (rank r). Otherwise short names, each matching
    ``nn.Linear`` modules and/or fused expert parameters of that name. For the MoE families peft converts from
    transformers-4 names (Mixtral's ``w1``/``w2``/``w3``; ``gate_proj``/``up_proj``/``down_proj`` for Qwen3-MoE and
    DeepSeek), those names mean the experts, as peft applies them: both halves of ``gate_up_proj`` or neither, at rank
    2r. An unknown name is an error listing the names the model has.
    """
    return lora_targets_from(table_rows(model), describe(model).model_type, model, targets)


def lora_tensor_rows(table, r: int, t: LoraTargets) -> list[dict]:
    """One row per LoRA A/B matrix peft creates: tensor, numel (computed from the shapes, not by peft), base.

    ``nn.Linear`` (in -> out): A is r x in, B is out x r. A fused expert tensor of E experts: A is in x (r * E),
    B is (r * E) x out (peft's ``ParamWrapper``), with r doubled where peft fuses two transformers-4 names.
    """
    if not isinstance(r, int) or isinstance(r, bool) or r <= 0:
        raise ValueError(f"lora_r must be a positive integer, got {r!r}")
    lm = _lm_rows(table)
    rows = []
    for row in lm:
        if row["linear"] and row["leaf"] in t.modules and row["component"] != "router":
            module = row["name"].rsplit(".", 1)[0]
            rows += [{"tensor": f"{module}.lora_A", "numel": r * row["in_features"], "base": row["name"]},
                     {"tensor": f"{module}.lora_B", "numel": row["out_features"] * r, "base": row["name"]}]
    wanted = {p.rsplit(".", 1)[-1] for p in t.parameters}
    for row in lm:
        if row["experts"] and row["leaf"] in wanted:
            e, rk = row["num_experts"], t.rank_of(row["leaf"], r)
            rows += [{"tensor": f"{row['name']}.lora_A", "numel": row["in_features"] * rk * e, "base": row["name"]},
                     {"tensor": f"{row['name']}.lora_B", "numel": rk * e * row["out_features"], "base": row["name"]}]
    return rows


def qlora_bf16_rows(table) -> list[tuple[str, int]]:
    """(what, count) of the parameters a QLoRA (bitsandbytes 4-bit) load leaves in bf16, largest first.

    bitsandbytes replaces ``nn.Linear`` modules only: embeddings, norms, the output head, fused 3-D expert tensors
    (not ``nn.Linear``) and biases stay in the compute dtype.
    """
    sums: dict[str, int] = {}
    for row in table:
        if row["linear"]:
            continue
        if row["experts"]:
            kind = "fused experts (not nn.Linear)"
        elif row["name"].endswith(".bias"):
            kind = "biases"
        else:
            kind = row["component"]
        sums[kind] = sums.get(kind, 0) + row["numel"]
    return sorted(sorted(sums.items()), key=lambda kv: -kv[1])


# The parameter table the calculators use: the stdlib one; a hook lets the Python library supply the meta-device
# table for the families :mod:`.tensors` does not list (set by llmstudy.core.models).
_fallback_table = None


def table_rows(model: str | Path):
    """The parameter table of a model as rows: :func:`tensors`, or for a family it does not list, the library's
    meta-device table (where transformers is installed; otherwise the :class:`NotModelledFamily` error)."""
    try:
        return tensors(model)
    except T.NotModelledFamily:
        if _fallback_table is None:
            raise
        return _fallback_table(model)
