"""KV-cache capacity planner: what vLLM logs as "GPU KV cache size", and the longest context that starts.

The planner repeats vLLM's own startup arithmetic for one deployment (model config, GPU, parallelism, weight and
KV precision, scheduler limits). The rules are written per vLLM version. Code references are in
``/work/shared/notes/vllm-kv-cache.md`` and in the comments below.

1. **Budget.** ``gpu_memory_utilization x total``. vLLM 0.25 rounds it up with ``math.ceil``
   (``vllm/v1/worker/utils.py: request_memory``).
2. **Non-KV memory.** weights + activation peak of the profiling run + non-torch memory, and in 0.21 and later the
   CUDA-graph estimate. vLLM 0.8.3 measures non-torch memory on the whole device, so the CUDA context counts.
   vLLM 0.25 counts only what grew after its init snapshot (``gpu_worker.py: determine_available_memory``).
3. **Blocks.** Available memory // (page size x layers in the largest KV group), then the minimum over ranks.
4. **Logged tokens.** 0.8.3: ``num_blocks x block_size``. 0.21 and later:
   ``int(num_blocks / blocks_per_request x max_model_len)`` (``kv_cache_utils.py: get_kv_cache_capacity``).
   With the hybrid KV manager, chunked-local and sliding-window layers need fewer blocks per request.
5. **Startup check.** One request of ``max_model_len`` must fit. The largest length that passes is found by the
   same binary search vLLM uses to suggest a length (``estimate_max_model_len``).

Weights per GPU are computed from the architecture: the transformers model of the config is built on the meta
device (:mod:`llmstudy.core.models`). For each tensor the planner knows whether vLLM shards it across tensor-parallel
ranks, replicates it, or pads it, and which precision it is stored in. Three inputs are properties of a running
system: the activation peak, the non-torch memory and the CUDA-graph estimate. Each has a named default estimate
(``estimate_*``), and a measured value overrides it. Every plan reports which of its inputs were measured.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

import pandas as pd

from llmstudy.core import models as M

GiB = 2**30
MiB = 2**20
BLOCK_SIZE = 16  # vLLM's CUDA default (vllm==0.8.3 platforms/cuda.py; vllm==0.33 config/cache.py DEFAULT_BLOCK_SIZE)
VOCAB_PADDING = 64  # VocabParallelEmbedding pads the vocabulary to a multiple of 64 (DEFAULT_VOCAB_PADDING_SIZE)
EXPERIMENT = "context_limits"


# --- Hardware ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class GpuKind:
    name: str
    total_bytes: int  # what torch.cuda.mem_get_info() reports as total (vLLM's "total_memory")
    source: str


GPUS: dict[str, GpuKind] = {
    "h100-80gb": GpuKind("NVIDIA H100 80GB HBM3", 85_017_493_504, "torch total on the lent H100 (run record data/runs/memory_accounting/h100-a)"),
    "h200": GpuKind("NVIDIA H200", 150_109_880_320, "torch total on the lent H200 (run record data/runs/memory_accounting/h200-a)"),
}


def emulated_utilization(target: str = "h100-80gb", host: str = "h200", util: float = 0.9) -> float:
    """gpu_memory_utilization on ``host`` that requests the same bytes as ``util`` on ``target``."""
    return util * GPUS[target].total_bytes / GPUS[host].total_bytes


def is_h100_emulation(util: float) -> bool:
    """Whether a utilization on an H200 is the 0.9-of-an-H100 emulation used by the device runs."""
    return abs(float(util) - emulated_utilization()) < 1e-9


# --- Version rules -----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class VersionRules:
    version: str
    hybrid_kv_default: bool | None  # None: no hybrid KV manager (every attention layer gets full-length KV)
    tokens_from_concurrency: bool  # logged tokens = int(max_concurrency x max_model_len) (0.21+)
    subtracts_cudagraphs: bool  # VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS=1 by default (0.21+)
    ceil_budget: bool  # requested_memory = ceil(util x total)
    counts_cuda_context: bool  # non-torch memory measured on the whole device, CUDA context and NCCL included
    sampler_bytes_per_logit: int  # live bytes per (request, vocab) element at the profiling sampler run's peak


VERSIONS: dict[str, VersionRules] = {
    # 0.8.3: FullAttentionSpec for every layer (llama4.py builds Attention(per_layer_sliding_window=None)),
    # tokens = num_blocks * block_size (kv_cache_utils.py:545-596), CUDA graphs captured after the KV cache.
    # Sampler: PyTorch top-k/top-p sorts the vocabulary when FlashInfer is absent (pip install vllm does not
    # bring it): bf16 logits 2 + fp32 logits 4 + sorted values 4 + int64 indices 8 + probs 4 + scatter out 4 + mask 1.
    "0.8.3": VersionRules("0.8.3", None, False, False, False, True, 27),
    # 0.25.0: hybrid manager on for chunked-local attention (envs.py VLLM_ALLOW_CHUNKED_LOCAL_ATTN_WITH_HYBRID_KV_CACHE
    # default "1"), tokens from concurrency, CUDA-graph estimate subtracted (gpu_worker.py:519-523), ceil budget.
    # Sampler: Triton top-k/top-p for >= 8 rows (no sort): bf16 logits 2 + fp32 4 + probs 4 + exponential noise 4.
    "0.25.0": VersionRules("0.25.0", True, True, True, True, False, 14),
}
MIN_VERSION = {"GptOssForCausalLM": "0.10.1", "Llama4ForConditionalGeneration": "0.8.3", "Llama4ForCausalLM": "0.8.3"}

WEIGHT_FORMATS = {
    "bf16": "every tensor in bf16 (the checkpoint's dtype)",
    "fp8-online": "--quantization fp8: linear layers and fused experts quantized to FP8 at load (per-tensor scales)",
    "fp8-checkpoint": "the config's compressed-tensors FP8 quantization_config (targets minus ignore, per-channel scales)",
    "mxfp4-checkpoint": "the config's MXFP4 quantization_config (experts: 4-bit values + one e8m0 scale per 32)",
}
KV_DTYPES = {"auto": 2, "fp8": 1}

# Default estimates for the inputs that only a running system knows (bytes). Measured values replace them.
DEFAULT_NON_TORCH_TP1 = 256 * MiB  # cuBLAS/cuBLASLt workspaces and allocator slack
DEFAULT_NON_TORCH_TP = 768 * MiB  # plus NCCL communicator buffers, allocated at the first collective
DEFAULT_CUDA_CONTEXT = 512 * MiB  # CUDA context + NCCL init, counted only where the whole device is measured (0.8.3)
DEFAULT_CUDAGRAPH = 1 * GiB  # placeholder for vLLM's CUDA-graph estimate (0.21+, graphs on): measure it


# --- The deployment ----------------------------------------------------------------------------------------------

def _positive_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


@dataclass(frozen=True)
class Deployment:
    """One vLLM deployment whose KV capacity we plan. Bad input raises ``ValueError`` naming every problem."""

    model: str = "llama-4-scout-17b-16e-instruct"
    gpu: str = "h200"
    num_gpus: int = 1
    tp: int | None = None  # default: num_gpus // pp
    pp: int = 1
    weights: str = "bf16"
    kv_dtype: str = "auto"
    gpu_memory_utilization: float = 0.9
    max_num_batched_tokens: int | None = None  # None: the version's default for this GPU (API server)
    max_num_seqs: int | None = None
    max_model_len: int | None = None  # None: the model's derived maximum (max_position_embeddings)
    vllm_version: str = "0.25.0"
    hybrid_kv: bool | None = None  # None: the version's default
    enforce_eager: bool = False
    text_only: bool = False  # serve the language model alone (Llama4ForCausalLM), as the device runs do
    gpu_memory_bytes: int | None = None  # a GPU not in GPUS: its torch total
    # Properties of a running system (bytes); None = the default estimate.
    weights_bytes: int | None = None
    activation_peak_bytes: int | None = None
    non_torch_bytes: int | None = None
    cudagraph_bytes: int | None = None

    def __post_init__(self):
        errors = []
        try:
            M.config_path(self.model)
        except M.UnknownModelError as e:
            raise ValueError(str(e)) from None
        if self.gpu_memory_bytes is None and self.gpu not in GPUS:
            errors.append(f"unknown GPU {self.gpu!r}; known: {sorted(GPUS)} (or pass gpu_memory_bytes)")
        if self.gpu_memory_bytes is not None and not _positive_int(self.gpu_memory_bytes):
            errors.append(f"gpu_memory_bytes must be a positive integer, got {self.gpu_memory_bytes!r}")
        if self.vllm_version not in VERSIONS:
            errors.append(f"unknown vLLM version {self.vllm_version!r}; rules exist for {sorted(VERSIONS)}")
        if self.weights not in WEIGHT_FORMATS:
            errors.append(f"weights must be one of {sorted(WEIGHT_FORMATS)}, got {self.weights!r}")
        if self.kv_dtype not in KV_DTYPES:
            errors.append(f"kv_dtype must be one of {sorted(KV_DTYPES)}, got {self.kv_dtype!r}")
        for name in ("num_gpus", "pp"):
            if not _positive_int(getattr(self, name)):
                errors.append(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        for name in ("tp", "max_num_batched_tokens", "max_num_seqs", "max_model_len"):
            v = getattr(self, name)
            if v is not None and not _positive_int(v):
                errors.append(f"{name} must be a positive integer, got {v!r}")
        for name in ("weights_bytes", "activation_peak_bytes", "non_torch_bytes", "cudagraph_bytes"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0):
                errors.append(f"{name} must be a non-negative number of bytes, got {v!r}")
        u = self.gpu_memory_utilization
        if not isinstance(u, (int, float)) or isinstance(u, bool) or not 0 < u <= 1:
            errors.append(f"gpu_memory_utilization must be in (0, 1], got {u!r}")
        if errors:
            raise ValueError("; ".join(errors))
        if self.tp is None:
            if self.num_gpus % self.pp:
                raise ValueError(f"num_gpus ({self.num_gpus}) is not a multiple of pp ({self.pp})")
            object.__setattr__(self, "tp", self.num_gpus // self.pp)
        if self.tp * self.pp != self.num_gpus:
            raise ValueError(f"tp x pp = {self.tp} x {self.pp} = {self.tp * self.pp} does not use num_gpus = {self.num_gpus}")
        f = model_facts(self.model, self.text_only)
        if f["heads"] % self.tp:
            raise ValueError(f"tensor parallel size {self.tp} does not divide the {f['heads']} attention heads of {self.model} "
                             f"(vLLM: 'Total number of attention heads ({f['heads']}) must be divisible by tensor parallel size ({self.tp})')")
        kv = f["kv_heads"]
        if (kv >= self.tp and kv % self.tp) or (kv < self.tp and self.tp % kv):
            raise ValueError(f"tensor parallel size {self.tp} neither divides nor is a multiple of the {kv} KV heads of {self.model}")
        if self.pp > f["layers"]:
            raise ValueError(f"pp ({self.pp}) exceeds the {f['layers']} layers of {self.model}")
        need = MIN_VERSION.get(f["architecture"])
        if need and _vkey(self.vllm_version) < _vkey(need):
            raise ValueError(f"{f['architecture']} needs vLLM >= {need}; rules for {self.vllm_version} do not apply")
        rules = VERSIONS[self.vllm_version]
        if self.hybrid_kv and rules.hybrid_kv_default is None:
            raise ValueError(f"vLLM {self.vllm_version} has no hybrid KV cache manager (hybrid_kv=True is impossible)")
        q = f["quantization"]
        if self.weights in ("fp8-checkpoint", "mxfp4-checkpoint"):
            want = "compressed-tensors" if self.weights == "fp8-checkpoint" else "mxfp4"
            if not q or q.get("quant_method") != want:
                raise ValueError(f"weights={self.weights!r} needs a config with a {want} quantization_config; {self.model} has "
                                 f"{q.get('quant_method') if q else 'none'}")
        elif q:
            raise ValueError(f"{self.model} is a {q.get('quant_method')} checkpoint; use weights="
                             f"'{'mxfp4-checkpoint' if q.get('quant_method') == 'mxfp4' else 'fp8-checkpoint'}'")

    # Resolved settings -----------------------------------------------------------------------------------------
    @property
    def rules(self) -> VersionRules:
        return VERSIONS[self.vllm_version]

    @property
    def total_bytes(self) -> int:
        return int(self.gpu_memory_bytes or GPUS[self.gpu].total_bytes)

    @property
    def batched_tokens(self) -> int:
        # 0.8.3: "h100"/"h200" in the device name -> 8192 for the API server; 0.25: >= 70 GiB and not A100 -> 8192.
        return self.max_num_batched_tokens or (8192 if self.total_bytes >= 70 * GiB else 2048)

    @property
    def num_seqs(self) -> int:
        # 0.8.3: 1024 everywhere; 0.25: 1024 on >= 70 GiB GPUs, else 256 (engine/arg_utils.py get_batch_defaults)
        if self.max_num_seqs:
            return self.max_num_seqs
        return 1024 if self.vllm_version == "0.8.3" or self.total_bytes >= 70 * GiB else 256

    @property
    def model_len(self) -> int:
        return self.max_model_len or model_facts(self.model, self.text_only)["max_position_embeddings"]

    @property
    def hybrid(self) -> bool:
        if self.rules.hybrid_kv_default is None:
            return False
        return self.rules.hybrid_kv_default if self.hybrid_kv is None else bool(self.hybrid_kv)

    def label(self) -> str:
        emu = ""
        if self.gpu_memory_bytes is None and self.gpu == "h200" and abs(self.gpu_memory_utilization - emulated_utilization()) < 1e-9:
            emu = " (H100 budget)"
        return (f"{Path(self.model).name} {self.num_gpus}x{self.gpu}{emu} tp{self.tp}pp{self.pp} {self.weights} kv:{self.kv_dtype} "
                f"L={self.model_len:,} v{self.vllm_version}{' hybrid' if self.hybrid else ''}")

    def short_label(self) -> str:
        name = Path(self.model).name
        name = "Scout" if "scout" in name else "Maverick" if "maverick" in name else name
        gpu = {"h100-80gb": "H100", "h200": "H200"}.get(self.gpu, self.gpu) if self.gpu_memory_bytes is None else "GPU"
        kv = " fp8-KV" if self.kv_dtype == "fp8" else ""
        return f"{name} {self.num_gpus}x{gpu} {PRECISION_LABEL[self.weights]}{kv} L={self.model_len:,}"

    def replace(self, **kw) -> Deployment:
        return dataclasses.replace(self, **kw)


def _vkey(v: str) -> tuple:
    return tuple(int(x) for x in re.findall(r"\d+", v)[:3])


# --- Model facts -------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=32)
def model_facts(model: str, text_only: bool = False) -> dict:
    """Architecture facts the planner needs, read from the config (text config for multimodal models)."""
    full = M.load_config(model)
    t = M.text_config(full)
    heads = t.num_attention_heads
    head_dim = getattr(t, "head_dim", None) or t.hidden_size // heads
    layer_types = list(getattr(t, "layer_types", None) or ["full_attention"] * t.num_hidden_layers)
    arch = (getattr(full, "architectures", None) or ["?"])[0]
    multimodal = getattr(full, "vision_config", None) is not None and not text_only
    if text_only and arch.endswith("ForConditionalGeneration"):
        arch = arch.replace("ForConditionalGeneration", "ForCausalLM")
    q = getattr(full, "quantization_config", None)
    if q is not None and not isinstance(q, dict):
        q = q.to_dict()
    return {
        "architecture": arch,
        "multimodal": multimodal,
        "layers": t.num_hidden_layers,
        "hidden": t.hidden_size,
        "heads": heads,
        "kv_heads": getattr(t, "num_key_value_heads", None) or heads,
        "head_dim": head_dim,
        "vocab": t.vocab_size,
        "max_position_embeddings": t.max_position_embeddings,
        "layer_types": tuple(layer_types),
        "attention_chunk_size": getattr(t, "attention_chunk_size", None),
        "sliding_window": getattr(t, "sliding_window", None),
        "intermediate": t.intermediate_size,
        "intermediate_mlp": getattr(t, "intermediate_size_mlp", None) or t.intermediate_size,
        "experts": getattr(t, "num_local_experts", 0) or 0,
        "top_k": getattr(t, "num_experts_per_tok", 0) or 0,
        "moe_layers": tuple(getattr(t, "moe_layers", None) or (range(t.num_hidden_layers) if getattr(t, "num_local_experts", 0) else ())),
        "shared_expert": "llama4" in getattr(t, "model_type", ""),
        "rope": bool(getattr(t, "rope_parameters", None) or getattr(t, "rope_theta", None)),
        "quantization": q or None,
    }


# --- Weights per GPU ----------------------------------------------------------------------------------------------

_LAYER_RE = re.compile(r"(?:^|\.)layers\.(\d+)\.")


def _pp_layers(num_layers: int, pp: int) -> list[range]:
    """vLLM's get_pp_indices: even split, the remainder goes to the stages before the last one."""
    parts = [num_layers // pp] * pp
    for i in range(2, num_layers % pp + 2):
        parts[-i] += 1
    out, start = [], 0
    for p in parts:
        out.append(range(start, start + p))
        start += p
    return out


def _rank_numel(name: str, comp: str, numel: int, linear: bool, f: dict, tp: int) -> int:
    """Elements of one tensor held by the busiest tensor-parallel rank."""
    if comp in ("embeddings", "lm_head"):
        padded = -(-f["vocab"] // VOCAB_PADDING) * VOCAB_PADDING
        return -(-padded // tp) * (numel // f["vocab"])
    if comp in ("norms", "router"):
        return numel
    if comp == "attention":
        if re.search(r"\.[kv]_proj\.(weight|bias)$", name):
            kv = f["kv_heads"]
            return numel * max(1, kv // tp) // kv
        if name.endswith("o_proj.bias"):
            return numel
        return -(-numel // tp)
    if comp == "experts":
        return numel if name.endswith("down_proj_bias") else -(-numel // tp)
    if comp == "mlp":
        return -(-numel // tp)
    if comp == "vision":
        return -(-numel // tp) if linear else numel
    return numel


def _module_name(name: str) -> str:
    """The checkpoint's module name for a parameter (fused expert tensors stand for their per-expert Linear modules)."""
    if name.endswith("experts.gate_up_proj"):
        return name[: -len("gate_up_proj")] + "0.gate_proj"
    if name.endswith("experts.down_proj"):
        return name[: -len("down_proj")] + "0.down_proj"
    return name.rsplit(".", 1)[0]


def _ignored(module: str, ignore) -> bool:
    for pat in ignore or ():
        if pat.startswith("re:"):  # compressed-tensors / vLLM: re.match on the module name
            if re.match(pat[3:], module):
                return True
        elif "*" in pat:
            if fnmatch(module, pat) or fnmatch(module, pat + ".*"):
                return True
        elif module == pat or module.startswith(pat + "."):
            return True
    return False


def _precision(dep: Deployment, name: str, comp: str, linear: bool, f: dict) -> str:
    """How vLLM stores one tensor: bf16, fp8 or mxfp4."""
    is_weight = name.endswith(".weight") or (comp == "experts" and name.endswith("_proj"))
    if dep.weights == "bf16" or not is_weight:
        return "bf16"
    if dep.weights == "fp8-online":
        # Fp8Config quantizes LinearBase and FusedMoE layers built with the quant config; the router
        # (ReplicatedLinear(quant_config=None)), the vision tower (quant_config=None), embeddings and lm_head are not.
        return "fp8" if comp == "experts" or (comp in ("attention", "mlp") and linear) else "bf16"
    q = f["quantization"]
    if dep.weights == "fp8-checkpoint":
        targets = {t for g in q.get("config_groups", {}).values() for t in g.get("targets", [])}
        if "Linear" not in targets or not (linear or comp == "experts") or comp in ("lm_head", "embeddings"):
            return "bf16"
        return "bf16" if _ignored(_module_name(name), q.get("ignore")) else "fp8"
    # mxfp4 checkpoint (gpt-oss): the fused experts are MXFP4, modules_to_not_convert stay bf16
    if comp != "experts" or _ignored(_module_name(name), q.get("modules_to_not_convert")):
        return "bf16"
    return "mxfp4"


def _scale_bytes(name: str, comp: str, prec: str, numel_rank: int, f: dict, per_channel: bool) -> float:
    """Bytes of the fp32 scales vLLM keeps next to an FP8 tensor: one per tensor (online) or one per output channel.

    Output channels on a rank: column-parallel tensors (q/k/v, gate/up) keep ``numel / hidden`` rows; row-parallel
    ones (o_proj, down_proj) keep ``hidden`` rows, per expert for fused experts.
    """
    if prec != "fp8":
        return 0.0
    experts = f["experts"] if comp == "experts" else 1
    if not per_channel:
        return 4.0 * experts * (2 if name.endswith("gate_up_proj") else 1)
    row_parallel = bool(re.search(r"(o_proj|down_proj)(\.weight)?$", name))
    rows = f["hidden"] * experts if row_parallel else numel_rank // f["hidden"]
    return 4.0 * rows


def weight_table(dep: Deployment) -> pd.DataFrame:
    """One row per tensor: component, layer, PP stage, precision, and bytes held by the busiest TP rank."""
    f = model_facts(dep.model, dep.text_only)
    table = M.parameters(dep.model)
    if not f["multimodal"]:
        table = table[table.component != "vision"]
    stages = _pp_layers(f["layers"], dep.pp)
    nbytes = {"bf16": 2.0, "fp8": 1.0, "mxfp4": 0.5 + 1 / 32}
    per_channel = dep.weights == "fp8-checkpoint"
    rows = []
    for name, comp, numel, lin in zip(table.name, table.component, table.numel, table.linear):
        m = _LAYER_RE.search(name)
        layer = int(m.group(1)) if m and comp != "vision" else -1
        if layer >= 0:
            stage = next(i for i, r in enumerate(stages) if layer in r)
        elif comp in ("lm_head",) or name.endswith("model.norm.weight"):
            stage = dep.pp - 1
        else:
            stage = 0
        n = _rank_numel(name, comp, int(numel), bool(lin), f, dep.tp)
        prec = _precision(dep, name, comp, bool(lin), f)
        b = n * nbytes[prec] + _scale_bytes(name, comp, prec, n, f, per_channel)
        rows.append((name, comp, layer, stage, prec, n, b))
    if f["rope"]:  # cos/sin cache: max_position_embeddings x rotary_dim in the model dtype, one per stage
        for s in range(dep.pp):
            n = f["max_position_embeddings"] * f["head_dim"]
            rows.append(("rotary_emb.cos_sin_cache", "rope cache", -1, s, "bf16", n, 2.0 * n))
    return pd.DataFrame(rows, columns=["name", "component", "layer", "stage", "precision", "rank_numel", "rank_bytes"])


def weights_per_gpu(dep: Deployment) -> int:
    """Bytes of weights on the busiest GPU (the PP stage with the most)."""
    return int(weight_table(dep).groupby("stage").rank_bytes.sum().max())


# --- KV cache specs ------------------------------------------------------------------------------------------------

def layer_kinds(dep: Deployment) -> list[tuple[str, int | None]]:
    """(kind, window) per decoder layer as the version's KV manager sees it: full, chunked(chunk) or sliding(window)."""
    f = model_facts(dep.model, dep.text_only)
    out = []
    for lt in f["layer_types"]:
        if not dep.hybrid:
            out.append(("full", None))  # 0.8.3, or the hybrid manager off: every layer gets full-length KV
        elif lt == "chunked_attention" and f["attention_chunk_size"]:
            out.append(("chunked", f["attention_chunk_size"]))
        elif lt == "sliding_attention" and f["sliding_window"]:
            out.append(("sliding", f["sliding_window"]))
        else:
            out.append(("full", None))
    return out


def page_bytes(dep: Deployment) -> int:
    """Bytes of one KV block of one layer on one rank: 2 x block x kv_heads_per_rank x head_dim x dtype."""
    f = model_facts(dep.model, dep.text_only)
    kv_rank = max(1, f["kv_heads"] // dep.tp)
    return 2 * BLOCK_SIZE * kv_rank * f["head_dim"] * KV_DTYPES[dep.kv_dtype]


def _blocks_per_request(kind: str, window: int | None, model_len: int, batched: int) -> int:
    """Blocks one request of ``model_len`` tokens holds in a layer of this kind (0.25 kv_cache_interface.py)."""
    if kind == "chunked":
        return -(-min(window + batched, model_len) // BLOCK_SIZE)
    if kind == "sliding":
        return -(-min(window - 1 + batched, model_len) // BLOCK_SIZE) + 1
    return -(-model_len // BLOCK_SIZE)


def kv_groups(dep: Deployment) -> list[dict]:
    """vLLM's KV cache groups: layers bucketed by kind, split into groups of equal size (0.25 kv_cache_utils.py)."""
    kinds = layer_kinds(dep)
    by_kind: dict[tuple, list[int]] = {}
    for i, k in enumerate(kinds):
        by_kind.setdefault(k, []).append(i)
    sizes = [len(v) for v in by_kind.values()]
    group_size = min(sizes)
    if max(sizes) < group_size * 1.5:
        group_size = max(sizes)
    groups = []
    for (kind, window), layers in by_kind.items():
        n = -(-len(layers) // group_size)
        for i in range(n):
            groups.append({"kind": kind, "window": window, "layers": layers[i::n]})
    return groups


# --- Default estimates of the running system's memory -------------------------------------------------------------

def _forward_bytes_per_token(f: dict, tp: int) -> int:
    """bf16 activation bytes per token alive at once in one decoder layer during the profiling forward."""
    h, d = f["hidden"], f["head_dim"]
    q = f["heads"] * d // tp
    kv = max(1, f["kv_heads"] // tp) * d
    attn = q + 2 * kv + q  # qkv output + attention output
    dense = 3 * (f["intermediate_mlp"] // tp)  # gate_up output + activation
    moe = 0
    if f["experts"]:
        n = f["intermediate"] // tp
        moe = f["top_k"] * (3 * n + h) + 2 * f["experts"]  # fused_moe caches + fp32 router logits (as bf16 units)
        if f["shared_expert"]:
            moe += 3 * n
    return 2 * (6 * h + attn + max(dense if len(f["moe_layers"]) < f["layers"] else 0, moe))


def estimate_activation_peak(dep: Deployment) -> int:
    """Default estimate of the profiling run's torch peak above the weights.

    The profiling run is a forward pass over ``max_num_batched_tokens`` tokens, then the sampler over one row per
    request (``min(max_num_seqs, max_num_batched_tokens)`` rows of the full vocabulary). At these vocabularies the
    sampler dominates, and its bytes per element depend on the top-k/top-p implementation of the version.
    """
    f = model_facts(dep.model, dep.text_only)
    b = dep.batched_tokens
    rows = min(dep.num_seqs, b)
    vocab = -(-f["vocab"] // VOCAB_PADDING) * VOCAB_PADDING
    forward = b * _forward_bytes_per_token(f, dep.tp)
    sampler = rows * f["vocab"] * dep.rules.sampler_bytes_per_logit + rows * (vocab // dep.tp) * 2 + rows * f["hidden"] * 2
    encoder_cache = b * f["hidden"] * 2 if f["multimodal"] else 0
    return int(max(forward, sampler) + encoder_cache)


def estimate_non_torch(dep: Deployment) -> int:
    """Default estimate of memory outside the torch allocator that vLLM subtracts."""
    base = DEFAULT_NON_TORCH_TP if dep.tp * dep.pp > 1 else DEFAULT_NON_TORCH_TP1
    return base + (DEFAULT_CUDA_CONTEXT if dep.rules.counts_cuda_context else 0)


def estimate_cudagraph(dep: Deployment) -> int:
    """Default CUDA-graph estimate subtracted by 0.21+ (0 in eager mode or where the version does not subtract it)."""
    if dep.enforce_eager or not dep.rules.subtracts_cudagraphs:
        return 0
    return DEFAULT_CUDAGRAPH


# --- The plan ------------------------------------------------------------------------------------------------------

@dataclass
class Plan:
    """What vLLM would do at startup for one deployment: memory split, KV blocks, logged tokens, outcome."""

    deployment: Deployment
    outcome: str  # ok | oom | refused
    message: str
    total_bytes: int
    budget_bytes: int
    weights_bytes: int
    activation_peak_bytes: int
    non_torch_bytes: int
    cudagraph_bytes: int
    available_kv_bytes: int
    page_bytes: int
    bytes_per_block: int
    num_blocks: int
    blocks_per_request: int
    kv_cache_tokens: int  # the "GPU KV cache size" figure as this version logs it
    max_concurrency: float
    max_model_len: int
    max_model_len_that_starts: int
    groups: int
    sources: dict

    def row(self) -> dict:
        d = self.deployment
        out = {
            "label": d.label(), "model": d.model, "gpu": d.gpu, "num_gpus": d.num_gpus, "tp": d.tp, "pp": d.pp,
            "weights": d.weights, "kv_dtype": d.kv_dtype, "gpu_memory_utilization": d.gpu_memory_utilization,
            "vllm_version": d.vllm_version, "hybrid_kv": d.hybrid, "enforce_eager": d.enforce_eager, "text_only": d.text_only,
            "max_num_batched_tokens": d.batched_tokens, "max_num_seqs": d.num_seqs,
        }
        for k, v in dataclasses.asdict(self).items():
            if k not in ("deployment", "sources"):
                out[k] = v
        for k in ("total", "budget", "weights", "activation_peak", "non_torch", "cudagraph", "available_kv"):
            out[f"{k}_GiB"] = out[f"{k}_bytes"] / GiB
        out["measured_inputs"] = ",".join(k for k, v in self.sources.items() if v == "measured") or "none"
        return out


def _stage_groups(dep: Deployment) -> list[list[dict]]:
    """KV groups projected onto each PP stage (layers of the group that the stage owns)."""
    f = model_facts(dep.model, dep.text_only)
    stages = _pp_layers(f["layers"], dep.pp)
    groups = kv_groups(dep)
    return [[dict(g, layers=[i for i in g["layers"] if i in r]) for g in groups] for r in stages]


def _blocks_needed(groups: list[dict], model_len: int, batched: int) -> int:
    return sum(_blocks_per_request(g["kind"], g["window"], model_len, batched) for g in groups)


def _fits(dep: Deployment, avail: int, model_len: int) -> bool:
    """vLLM's startup check for one request of ``model_len`` tokens, on every stage."""
    page = page_bytes(dep)
    for groups in _stage_groups(dep):
        if dep.rules.hybrid_kv_default is None:  # 0.8.3: sum over layers of cdiv(L, block) * page
            need = sum(len(g["layers"]) for g in groups) * -(-model_len // BLOCK_SIZE) * page
        else:  # 0.25: group_size * page * sum over groups of blocks per request
            need = max(len(g["layers"]) for g in groups) * page * _blocks_needed(groups, model_len, dep.batched_tokens)
        if need > avail:
            return False
    return True


def largest_model_len(dep: Deployment, avail: int) -> int:
    """The largest max_model_len that passes the startup check (vLLM's binary search, capped by the model's maximum)."""
    hi = model_facts(dep.model, dep.text_only)["max_position_embeddings"]
    if avail <= 0 or not _fits(dep, avail, 1):
        return 0
    lo, best = 1, 1
    while lo <= hi:
        mid = (lo + hi) // 2
        if _fits(dep, avail, mid):
            best, lo = mid, mid + 1
        else:
            hi = mid - 1
    return best


def plan(dep: Deployment) -> Plan:
    """Apply the version's startup rules to one deployment. Impossible settings come back as outcomes, not errors."""
    rules = dep.rules
    f = model_facts(dep.model, dep.text_only)
    total = dep.total_bytes
    budget = math.ceil(total * dep.gpu_memory_utilization) if rules.ceil_budget else int(total * dep.gpu_memory_utilization)
    sources = {}

    def pick(name, measured, estimate):
        sources[name] = "measured" if measured is not None else "estimated"
        return int(measured) if measured is not None else int(estimate())

    weights = pick("weights", dep.weights_bytes, lambda: weights_per_gpu(dep))
    if dep.weights_bytes is None:
        sources["weights"] = "architecture"
    act = pick("activation_peak", dep.activation_peak_bytes, lambda: estimate_activation_peak(dep))
    nontorch = pick("non_torch", dep.non_torch_bytes, lambda: estimate_non_torch(dep))
    graphs = pick("cudagraph", dep.cudagraph_bytes, lambda: estimate_cudagraph(dep))
    if dep.enforce_eager or not rules.subtracts_cudagraphs:
        graphs, sources["cudagraph"] = 0, "not subtracted"
    avail = budget - weights - act - nontorch - graphs
    page = page_bytes(dep)
    stage_groups = _stage_groups(dep)
    model_len = dep.model_len
    base = dict(deployment=dep, total_bytes=total, budget_bytes=budget, weights_bytes=weights, activation_peak_bytes=act,
                non_torch_bytes=nontorch, cudagraph_bytes=graphs, available_kv_bytes=avail, page_bytes=page,
                max_model_len=model_len, groups=len(stage_groups[0]), sources=sources)
    empty = dict(bytes_per_block=0, num_blocks=0, blocks_per_request=0, kv_cache_tokens=0, max_concurrency=0.0, max_model_len_that_starts=0)
    if model_len > f["max_position_embeddings"]:
        return Plan(outcome="refused", message=f"max_model_len {model_len:,} exceeds the model's derived maximum "
                    f"{f['max_position_embeddings']:,} (vLLM refuses unless VLLM_ALLOW_LONG_MAX_MODEL_LEN=1)", **base, **empty)
    if weights > budget:
        beyond = f" (and > the GPU's {total / GiB:.2f} GiB)" if weights > total else ""
        return Plan(outcome="oom", message=f"OOM: weights {weights / GiB:.2f} GiB > budget {budget / GiB:.2f} GiB{beyond}", **base, **empty)
    if avail <= 0:
        return Plan(outcome="oom", message=f"OOM: no memory for the KV cache (weights {weights / GiB:.2f} + activation "
                    f"{act / GiB:.2f} + non-torch {nontorch / GiB:.2f} + CUDA graphs {graphs / GiB:.2f} GiB > budget "
                    f"{budget / GiB:.2f} GiB)", **base, **empty)
    # blocks per stage, then the minimum over ranks
    if rules.hybrid_kv_default is None:
        per_block = [sum(len(g["layers"]) for g in gs) * page for gs in stage_groups]
    else:
        per_block = [max(len(g["layers"]) for g in gs) * page for gs in stage_groups]
    num_blocks = min(avail // b for b in per_block)
    bytes_per_block = per_block[[avail // b for b in per_block].index(num_blocks)]
    if rules.hybrid_kv_default is None:
        per_req = -(-model_len // BLOCK_SIZE)
        tokens = num_blocks * BLOCK_SIZE
        conc = tokens / model_len
    else:
        per_req = _blocks_needed(stage_groups[0], model_len, dep.batched_tokens)
        conc = num_blocks / per_req
        tokens = int(conc * model_len) if rules.tokens_from_concurrency else num_blocks // len(stage_groups[0]) * BLOCK_SIZE
    largest = largest_model_len(dep, avail)
    out = Plan(outcome="ok", message="", bytes_per_block=bytes_per_block, num_blocks=int(num_blocks), blocks_per_request=per_req,
               kv_cache_tokens=int(tokens), max_concurrency=conc, max_model_len_that_starts=largest, **base)
    if not _fits(dep, avail, model_len):
        out.outcome = "refused"
        out.message = (f"To serve at least one request with max_model_len {model_len:,} more KV memory is needed than the "
                       f"{avail / GiB:.2f} GiB available; the largest max_model_len that starts is {largest:,}")
    return out


def plans(deps) -> pd.DataFrame:
    """Tidy table of plans (one row per deployment)."""
    return pd.DataFrame([plan(d).row() for d in deps])


def tokens_for_available(dep: Deployment, available_bytes: int) -> int:
    """The logged "GPU KV cache size" for a given available KV memory (the token formula alone)."""
    return plan(dep.replace(weights_bytes=0, activation_peak_bytes=0, non_torch_bytes=0, cudagraph_bytes=0,
                            gpu_memory_bytes=int(available_bytes), gpu_memory_utilization=1.0,
                            max_num_batched_tokens=dep.batched_tokens, max_num_seqs=dep.num_seqs)).kv_cache_tokens


# --- Published numbers (labelled sources) ---------------------------------------------------------------------

SCOUT, MAVERICK, MAVERICK_FP8 = "llama-4-scout-17b-16e-instruct", "llama-4-maverick-17b-128e-instruct", "llama-4-maverick-17b-128e-instruct-fp8"
ARTICLE = "Fixstars, Llama 4 context-length article (2025-04, vLLM 0.8.3, H100 80GB), recommendation table"
BLOG = "vLLM blog 'Llama 4 in vLLM' (2025-04-05, v0.8.3+), usage guide"

# (model, weights, GPUs, recommended max_model_len or None for "(OOM)", max_model_len of the article's log line)
ARTICLE_TABLE = (
    ("Scout", SCOUT, "bf16", 4, None, None),
    ("Scout", SCOUT, "fp8-online", 4, 500_000, 200_000),
    ("Scout", SCOUT, "bf16", 8, 1_200_000, 800_000),
    ("Scout", SCOUT, "fp8-online", 8, 1_500_000, 500_000),
    ("Maverick", MAVERICK, "bf16", 4, None, None),
    ("Maverick", MAVERICK_FP8, "fp8-checkpoint", 4, None, None),
    ("Maverick", MAVERICK, "bf16", 8, None, None),
    ("Maverick", MAVERICK_FP8, "fp8-checkpoint", 8, 300_000, 300_000),
)
# (model label, config, weights, gpu, GPUs, published max_model_len)
BLOG_TABLE = (
    ("Scout", SCOUT, "bf16", "h100-80gb", 8, 1_000_000),
    ("Maverick-FP8", MAVERICK_FP8, "fp8-checkpoint", "h100-80gb", 8, 430_000),
    ("Scout", SCOUT, "bf16", "h200", 8, 3_600_000),
    ("Maverick-FP8", MAVERICK_FP8, "fp8-checkpoint", "h200", 8, 1_000_000),
)
PRECISION_LABEL = {"bf16": "BF16", "fp8-online": "FP8", "fp8-checkpoint": "FP8", "mxfp4-checkpoint": "MXFP4"}


def hardware_label(num_gpus: int, gpu: str) -> str:
    """``8×H100 80GB``, ``8×H200``: how the published tables name a machine."""
    return f"{num_gpus}×{GPUS[gpu].name.replace('NVIDIA ', '').replace(' HBM3', '')}"


def article_comparison(version: str = "0.8.3", gpu: str = "h100-80gb", **overrides) -> pd.DataFrame:
    """The article's recommendation table next to the planner (predictions, labelled), one row per cell."""
    rows = []
    for label, model, weights, n, recommended, logged_at in ARTICLE_TABLE:
        dep = Deployment(model=model, gpu=gpu, num_gpus=n, weights=weights, vllm_version=version,
                         max_model_len=logged_at or recommended, **overrides)
        p = plan(dep)
        agrees = p.outcome == "oom" if recommended is None else (p.outcome != "oom" and p.max_model_len_that_starts >= recommended)
        rows.append({
            "model": label, "GPUs": n, "precision": PRECISION_LABEL[weights], "config": model, "weights": weights,
            "article: recommended max_model_len": "OOM" if recommended is None else f"{recommended:,}",
            "planner: outcome": "OOM" if p.outcome == "oom" else "starts",
            "planner: weights/GPU GiB": p.weights_bytes / GiB,
            "planner: KV GiB/GPU": max(p.available_kv_bytes, 0) / GiB,
            "planner: logged KV tokens": p.kv_cache_tokens if p.outcome != "oom" else None,
            "at max_model_len": logged_at,
            "planner: largest max_model_len": p.max_model_len_that_starts if p.outcome != "oom" else None,
            "agrees": agrees,
            "message": p.message,
        })
    return pd.DataFrame(rows)


def blog_comparison(version: str = "0.8.3", **overrides) -> pd.DataFrame:
    """The vLLM blog's context lengths next to the planner's largest max_model_len (bf16 and fp8 KV cache)."""
    rows = []
    for label, model, weights, gpu, n, published in BLOG_TABLE:
        base = Deployment(model=model, gpu=gpu, num_gpus=n, weights=weights, vllm_version=version, max_model_len=published, **overrides)
        p, p8 = plan(base), plan(base.replace(kv_dtype="fp8"))
        rows.append({
            "model": label, "hardware": hardware_label(n, gpu), "config": model,
            "blog: max_model_len": published, "planner: starts at blog length": p.outcome == "ok",
            "planner: largest max_model_len": p.max_model_len_that_starts,
            "planner: largest, fp8 KV": p8.max_model_len_that_starts,
            "fp8 KV gain": p8.max_model_len_that_starts / p.max_model_len_that_starts if p.max_model_len_that_starts else None,
            "model maximum": model_facts(model)["max_position_embeddings"],
            "planner: logged KV tokens at blog length": p.kv_cache_tokens,
        })
    return pd.DataFrame(rows)


def context_vs_gpus(models=((SCOUT, "bf16"), (SCOUT, "fp8-online"), (MAVERICK_FP8, "fp8-checkpoint")), gpus=("h100-80gb", "h200"),
                    counts=(1, 2, 4, 8), versions=("0.8.3", "0.25.0"), kv_dtypes=("auto",)) -> pd.DataFrame:
    """Largest max_model_len that starts, per model x GPU kind x number of GPUs (TP) x version (predictions)."""
    rows = []
    for model, weights in models:
        for gpu in gpus:
            for n in counts:
                for v in versions:
                    for kv in kv_dtypes:
                        dep = Deployment(model=model, gpu=gpu, num_gpus=n, weights=weights, vllm_version=v, kv_dtype=kv)
                        p = plan(dep)
                        rows.append({"model": Path(model).name, "weights": weights, "gpu": gpu, "GPUs": n, "vllm": v, "kv_dtype": kv,
                                     "outcome": "OOM" if p.outcome == "oom" else "starts", "largest_max_model_len": p.max_model_len_that_starts,
                                     "model_maximum": model_facts(model)["max_position_embeddings"], "kv_GiB": max(p.available_kv_bytes, 0) / GiB})
    return pd.DataFrame(rows)


def version_effect(deps) -> pd.DataFrame:
    """The same deployments under 0.8.3 rules, 0.25.0 with the hybrid manager off, and 0.25.0 defaults."""
    rows = []
    for dep in deps:
        for name, kw in (("0.8.3", dict(vllm_version="0.8.3", hybrid_kv=None)),
                         ("0.25.0, hybrid off", dict(vllm_version="0.25.0", hybrid_kv=False)),
                         ("0.25.0 (default)", dict(vllm_version="0.25.0", hybrid_kv=None))):
            p = plan(dep.replace(**kw))
            rows.append({"deployment": dep.short_label(), "rules": name,
                         "outcome": p.outcome, "available_KV_GiB": p.available_kv_bytes / GiB, "cudagraph_GiB": p.cudagraph_bytes / GiB,
                         "activation_GiB": p.activation_peak_bytes / GiB, "logged_KV_tokens": p.kv_cache_tokens,
                         "max_concurrency": p.max_concurrency, "largest_max_model_len": p.max_model_len_that_starts})
    return pd.DataFrame(rows)


DECOMPOSITION = ("weights", "activation peak", "non-torch", "CUDA graphs", "KV cache", "outside the budget")


def decomposition(plans_: list[Plan], labels=None) -> pd.DataFrame:
    """Tidy per-GPU memory split of plans (GiB): the stacked-bar data of the chapter."""
    rows = []
    for i, p in enumerate(plans_):
        label = (labels[i] if labels else p.deployment.label()) + (" - OOM" if p.outcome == "oom" else "")
        frame = GPUS["h100-80gb"].total_bytes if is_h100_emulation(p.deployment.gpu_memory_utilization) else p.total_bytes
        parts = dict(zip(DECOMPOSITION, (p.weights_bytes, p.activation_peak_bytes, p.non_torch_bytes, p.cudagraph_bytes,
                                          max(p.available_kv_bytes, 0), 0 if p.outcome == "oom" else max(0, frame - p.budget_bytes))))
        for comp, b in parts.items():
            rows.append({"config": label, "component": comp, "GiB": b / GiB})
    return pd.DataFrame(rows)


# --- Run mode: measure on a 4-GPU machine -------------------------------------------------------------------------

SERVER_ENV = {  # never NVLink multicast on the shared host; FlashInfer is not staged; debug level for the memory lines
    "NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1",
    "VLLM_USE_FLASHINFER_SAMPLER": "0", "VLLM_LOGGING_LEVEL": "DEBUG", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
}


@dataclass(frozen=True)
class GpuConfig:
    """One server start of the device experiment: a model, a weight format and an H200 or emulated-H100 budget."""

    name: str
    model: str
    weights: str
    budget: str = "h200"  # "h200": gpu_memory_utilization 0.9; "h100": 0.9 x H100 total / H200 total
    max_model_len: int = 200_000
    enforce_eager: bool = True
    hybrid_kv: bool | None = None
    kv_dtype: str = "auto"
    long_requests: tuple[int, ...] = ()
    est_start_s: int = 150  # skip the configuration if less time than this is left
    gpus: int | None = None  # the number of GPUs (= TP) the configuration is meant for; None: any

    @property
    def utilization(self) -> float:
        return 0.9 if self.budget == "h200" else emulated_utilization("h100-80gb", "h200", 0.9)

    @property
    def default_gpus(self) -> int:
        return self.gpus or 4

    def deployment(self, num_gpus: int | None = None, **measured) -> Deployment:
        """The planner's deployment for this configuration on ``num_gpus`` GPUs (default: the count it is meant for, else 4)."""
        return Deployment(model=self.model, gpu="h200", num_gpus=num_gpus or self.default_gpus, weights=self.weights, kv_dtype=self.kv_dtype,
                          gpu_memory_utilization=self.utilization, max_model_len=self.max_model_len, vllm_version="0.25.0",
                          hybrid_kv=self.hybrid_kv, enforce_eager=self.enforce_eager, text_only=True, **measured)

    def server_args(self, num_gpus: int | None = None) -> list[str]:
        num_gpus = num_gpus or self.default_gpus
        args = ["--tensor-parallel-size", str(num_gpus), "--load-format", "dummy", "--max-model-len", str(self.max_model_len),
                "--gpu-memory-utilization", repr(self.utilization), "--disable-custom-all-reduce", "--kv-cache-dtype", self.kv_dtype]
        if self.enforce_eager:
            args.append("--enforce-eager")
        if self.weights == "fp8-online":
            args += ["--quantization", "fp8"]
        return args

    def server_env(self) -> dict:
        env = dict(SERVER_ENV)
        if self.hybrid_kv is False:
            env["VLLM_ALLOW_CHUNKED_LOCAL_ATTN_WITH_HYBRID_KV_CACHE"] = "0"
        return env


GPU_CONFIGS: dict[str, GpuConfig] = {c.name: c for c in (
    GpuConfig("scout-bf16-h200", SCOUT, "bf16", "h200"),
    GpuConfig("scout-bf16-h100", SCOUT, "bf16", "h100"),
    GpuConfig("scout-fp8-h200", SCOUT, "fp8-online", "h200"),
    GpuConfig("scout-fp8-h100-hybrid-off", SCOUT, "fp8-online", "h100", hybrid_kv=False),
    # the article's check: Scout 4xFP8, max_model_len 500,000, a 490,000-token prompt (here on an H100 budget)
    GpuConfig("scout-fp8-h100-long", SCOUT, "fp8-online", "h100", max_model_len=500_000, long_requests=(100_000, 490_000), est_start_s=240),
    GpuConfig("maverick-fp8-h200", MAVERICK_FP8, "fp8-checkpoint", "h200", est_start_s=200),
    GpuConfig("maverick-fp8-h100", MAVERICK_FP8, "fp8-checkpoint", "h100", est_start_s=200),
    GpuConfig("scout-fp8-h200-graphs", SCOUT, "fp8-online", "h200", enforce_eager=False, est_start_s=330),
    GpuConfig("scout-bf16-h200-kvfp8", SCOUT, "bf16", "h200", kv_dtype="fp8"),
    # TP=8 (issue 9): the article's recommended lengths on the H100 budget, the vLLM blog's 8xH200 lengths on the H200
    # budget; Maverick BF16 is the article's "8xBF16 (OOM)" cell and its H200 counterpart.
    GpuConfig("tp8-scout-bf16-h100-1200k", SCOUT, "bf16", "h100", max_model_len=1_200_000, gpus=8),
    GpuConfig("tp8-scout-fp8-h100-1500k", SCOUT, "fp8-online", "h100", max_model_len=1_500_000, gpus=8),
    GpuConfig("tp8-maverick-fp8-h100-430k", MAVERICK_FP8, "fp8-checkpoint", "h100", max_model_len=430_000, est_start_s=180, gpus=8),
    GpuConfig("tp8-maverick-bf16-h100", MAVERICK, "bf16", "h100", max_model_len=300_000, est_start_s=150, gpus=8),
    GpuConfig("tp8-scout-bf16-h200-3600k", SCOUT, "bf16", "h200", max_model_len=3_600_000, gpus=8),
    GpuConfig("tp8-scout-fp8-h200-3600k", SCOUT, "fp8-online", "h200", max_model_len=3_600_000, gpus=8),
    GpuConfig("tp8-maverick-fp8-h200-1000k", MAVERICK_FP8, "fp8-checkpoint", "h200", max_model_len=1_000_000, est_start_s=180, gpus=8),
    GpuConfig("tp8-maverick-bf16-h200-1000k", MAVERICK, "bf16", "h200", max_model_len=1_000_000, est_start_s=200, gpus=8),
)}
# Device calls of <= 10 minutes each (server starts take 70-120 s in eager mode on 4xH200): a-c on 4 GPUs, d-e on 8.
CALLS = {
    "a": ("scout-bf16-h200", "scout-bf16-h100", "scout-fp8-h200", "scout-fp8-h100-hybrid-off"),
    "b": ("scout-fp8-h100-long", "maverick-fp8-h200", "maverick-fp8-h100"),
    "c": ("scout-fp8-h200-graphs", "scout-bf16-h200-kvfp8"),
    # 8 GPUs (nvidia-h200-x8)
    "d": ("tp8-scout-bf16-h100-1200k", "tp8-scout-fp8-h100-1500k", "tp8-maverick-fp8-h100-430k", "tp8-maverick-bf16-h100"),
    "e": ("tp8-scout-bf16-h200-3600k", "tp8-scout-fp8-h200-3600k", "tp8-maverick-fp8-h200-1000k", "tp8-maverick-bf16-h200-1000k"),
}


def resolve_configs(names) -> list[GpuConfig]:
    """Configuration names (or call letters a/b/c) to configurations; unknown names are a clear error."""
    out = []
    for n in names:
        for m in CALLS.get(n, (n,)):
            if m not in GPU_CONFIGS:
                raise ValueError(f"unknown configuration {m!r}; known: {sorted(GPU_CONFIGS)} or calls {sorted(CALLS)}")
            out.append(GPU_CONFIGS[m])
    if not out:
        raise ValueError("no configuration given")
    return out


def server_config(model: str) -> dict:
    """The text-only config.json a vLLM server loads for a model (Llama 4: its text_config as Llama4ForCausalLM)."""
    raw = M.raw_config(model)
    if "text_config" not in raw:
        return raw
    cfg = dict(raw["text_config"])
    cfg["architectures"] = [raw["architectures"][0].replace("ForConditionalGeneration", "ForCausalLM")]
    cfg.setdefault("torch_dtype", raw.get("torch_dtype", "bfloat16"))
    if "quantization_config" in raw:
        cfg["quantization_config"] = raw["quantization_config"]
    return cfg


def prepare_model_dir(model: str, dest: Path) -> Path:
    """A folder vLLM can serve with --load-format dummy: config.json + a synthetic tokenizer of the exact vocabulary."""
    import json

    from llmstudy.training.finetune import synthetic_tokenizer

    dest = Path(dest)
    cfg = server_config(model)
    if (dest / "config.json").exists() and json.loads((dest / "config.json").read_text()) == cfg and (dest / "tokenizer.json").exists():
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "config.json").write_text(json.dumps(cfg, indent=1))
    synthetic_tokenizer(cfg["vocab_size"]).save_pretrained(str(dest))
    return dest


_MEM_PATTERNS = {
    "profile_non_kv_gib": r"Total non KV cache memory: ([0-9.]+) ?GiB",
    "torch_peak_increase_gib": r"torch peak memory increase: ([0-9.]+) ?GiB",
    "non_torch_increase_gib": r"non-torch forward increase memory: ([0-9.]+) ?GiB",
    "profile_weights_gib": r"weights memory: ([0-9.]+) ?GiB",
    "kv_memory_to_requested_bytes": r"--kv-cache-memory=(-?\d+)` \([-0-9.]+ GiB\) to fit into requested memory",
    "actual_cudagraph_gib": r"GiB for non-torch memory, and ([0-9.]+) GiB for CUDAGraph memory",
    "init_free_gib": r"worker init memory snapshot: .*?free_memory=([0-9.]+) ?GiB",
    "init_total_gib": r"worker init memory snapshot: .*?total_memory=([0-9.]+) ?GiB",
    "requested_gib": r"worker requested memory: ([0-9.]+) ?GiB",
    "cudagraph_pool_actual_gib": r"CUDA graph pool memory: ([0-9.]+) GiB \(actual\)",
    "estimated_max_model_len": r"the estimated maximum model length is (\d+)",
}


def parse_memory_log(text: str) -> dict:
    """vLLM 0.25's memory-profiling lines (debug level): the split of non-KV memory, per worker, first worker first.

    Returns the first value of each key and ``<key>_all`` with every worker's value (strings in the log are
    rounded to 0.01 GiB, except ``--kv-cache-memory=`` which is exact bytes).
    """
    out: dict = {}
    for key, rx in _MEM_PATTERNS.items():
        vals = [float(m) for m in re.findall(rx, text)]
        if vals:
            conv = int if key.endswith("_bytes") or key == "estimated_max_model_len" else float
            out[key] = conv(vals[0])
            out[f"{key}_all"] = [conv(v) for v in vals]
    return out


def memory_lines(text: str) -> list[str]:
    """The verbatim log lines the memory split is read from (kept in the run record next to the parsed values)."""
    keys = ("Memory profiling takes", "Actual usage is", "worker init memory snapshot", "worker requested memory",
            "CUDA graph", "Available KV cache memory", "GPU KV cache size", "Maximum concurrency", "Model loading took")
    return [ln.strip() for ln in (text or "").splitlines() if any(k in ln for k in keys)]


def classify_failure(log_tail: str) -> str:
    """oom / refused / timeout / error from the end of a failed server's log."""
    t = log_tail or ""
    if re.search(r"No available memory for the cache blocks|CUDA out of memory|OutOfMemoryError|out of memory", t):
        return "oom"
    if re.search(r"To serve at least one request|max_model_len|gpu_memory_utilization", t) and "ValueError" in t:
        return "refused"
    if re.search(r"[Tt]imed? ?out|timeout", t):
        return "timeout"
    return "error"


def measure_ttft(base_url: str, n_tokens: int, vocab: int, max_tokens: int = 16, seed: int = 0, timeout_s: float = 600) -> dict:
    """Stream one completion whose prompt is exactly ``n_tokens`` random token ids; time to the first token."""
    import json
    import random
    import time
    import urllib.request

    rng = random.Random(seed)
    ids = [rng.randrange(3, vocab) for _ in range(n_tokens)]  # ids 0-2 are the synthetic tokenizer's specials
    body = json.dumps({"prompt": ids, "max_tokens": max_tokens, "temperature": 0.0, "ignore_eos": True, "stream": True,
                       "stream_options": {"include_usage": True}}).encode()
    req = urllib.request.Request(f"{base_url}/v1/completions", data=body, headers={"Content-Type": "application/json"})
    t0 = time.perf_counter()
    ttft, usage, chunks = None, {}, 0
    with urllib.request.urlopen(req, timeout=timeout_s) as resp:
        for raw in resp:
            line = raw.decode().strip()
            if not line.startswith("data:") or line == "data: [DONE]":
                continue
            ev = json.loads(line[5:])
            if ev.get("choices"):
                chunks += 1
                if ttft is None:
                    ttft = time.perf_counter() - t0
            if ev.get("usage"):
                usage = ev["usage"]
    total = time.perf_counter() - t0
    return {"prompt_tokens_sent": n_tokens, "prompt_tokens_reported": usage.get("prompt_tokens"),
            "output_tokens": usage.get("completion_tokens"), "ttft_s": ttft, "total_s": total, "chunks": chunks}


def _row(cfg: GpuConfig, num_gpus: int, outcome: str, error: str | None, facts: dict, mem: dict, start_s: float | None) -> dict:
    dep = cfg.deployment(num_gpus)
    p = plan(dep)
    row = {"config": cfg.name, "model": cfg.model, "weights": cfg.weights, "budget": cfg.budget, "num_gpus": num_gpus,
           "tp": dep.tp, "gpu_memory_utilization": cfg.utilization, "max_model_len": cfg.max_model_len, "kv_dtype": cfg.kv_dtype,
           "enforce_eager": cfg.enforce_eager, "hybrid_kv": dep.hybrid, "outcome": outcome, "error": error, "start_s": start_s}
    for k in ("kv_cache_tokens", "max_concurrency", "max_concurrency_len", "available_kv_gib", "weights_gib", "cudagraph_estimate_gib",
              "graph_capture_s", "attention_backend", "vllm_version"):
        row[k] = facts.get(k)
    for k in _MEM_PATTERNS:
        row[k] = mem.get(k)
    row.update({"pred_outcome": p.outcome, "pred_kv_cache_tokens": p.kv_cache_tokens, "pred_available_kv_gib": p.available_kv_bytes / GiB,
                "pred_weights_gib": p.weights_bytes / GiB, "pred_activation_gib": p.activation_peak_bytes / GiB,
                "pred_non_torch_gib": p.non_torch_bytes / GiB, "pred_largest_max_model_len": p.max_model_len_that_starts})
    return row


def run_experiment(configs=("a",), run_id: str = "", root=None, num_gpus: int | None = None, deadline_s: float = 570,
                   workdir: str | None = None, port: int | None = None) -> Path:
    """Start one vLLM server per configuration, record its KV-cache and memory lines, serve the long requests.

    A start failure (OOM, refusal, timeout) is that configuration's outcome. Configurations that no longer fit in
    ``deadline_s`` are recorded as ``skipped``. Writes ``data/runs/context_limits/<run_id>/`` (or under ``root``).
    """
    import os
    import tempfile
    import time

    from tqdm.auto import tqdm

    from llmstudy.core.records import RunWriter, new_run_id

    cfgs = resolve_configs(configs)
    t_start = time.monotonic()
    try:
        import torch

        gpus = torch.cuda.device_count()
    except Exception:  # pragma: no cover - torch is always installed here
        gpus = 0
    num_gpus = num_gpus or gpus
    if not num_gpus:
        raise ValueError("run mode needs CUDA GPUs (none visible); the chapter's analyze mode runs on CPU")
    for c in cfgs:
        if c.gpus is not None and c.gpus != num_gpus:
            raise ValueError(f"configuration {c.name!r} is meant for {c.gpus} GPUs (TP={c.gpus}); {num_gpus} are visible")
        c.deployment(num_gpus)  # impossible settings stop here, before any server starts
    from llmstudy.serving.servers import ServerStartError, VLLMServer

    run_id = run_id or new_run_id(f"{num_gpus}gpu")
    work = Path(workdir or os.environ.get("LLMSTUDY_CACHE", tempfile.gettempdir())) / "llmstudy-context-limits"
    params = {"configs": [c.name for c in cfgs], "num_gpus": num_gpus, "deadline_s": deadline_s, "server_env": SERVER_ENV,
              "weights": "dummy (--load-format dummy)", "tokenizer": "synthetic word-level, exact vocabulary size",
              "gpu_configs": {c.name: dataclasses.asdict(c) | {"utilization": c.utilization, "args": c.server_args(num_gpus)} for c in cfgs}}
    rows, req_rows = [], []
    with RunWriter(EXPERIMENT, params, run_id=run_id, root=root) as rec:
        for cfg in tqdm(cfgs, desc="context_limits", unit="server"):
            left = deadline_s - (time.monotonic() - t_start)
            if left < cfg.est_start_s:
                rows.append(_row(cfg, num_gpus, "skipped", f"{left:.0f} s left < {cfg.est_start_s} s estimated start", {}, {}, None))
                continue
            model_dir = prepare_model_dir(cfg.model, work / f"{Path(cfg.model).name}-text")
            log_path = rec.dir / "logs" / f"{cfg.name}.log"
            log_path.parent.mkdir(parents=True, exist_ok=True)
            t0 = time.monotonic()
            try:
                with VLLMServer(model=str(model_dir), args=cfg.server_args(num_gpus), port=port, env=cfg.server_env(),
                                log_path=log_path, start_timeout_s=max(60, int(left - 20))) as srv:
                    start_s = time.monotonic() - t0
                    vocab = model_facts(cfg.model, True)["vocab"]
                    for i, n in enumerate(((64,) if cfg.long_requests else ()) + cfg.long_requests):
                        remaining = deadline_s - (time.monotonic() - t_start)
                        if remaining < 60:
                            req_rows.append({"config": cfg.name, "prompt_tokens_sent": n, "outcome": "skipped", "error": f"{remaining:.0f} s left"})
                            continue
                        try:
                            r = measure_ttft(srv.base_url, n, vocab, seed=i, timeout_s=remaining - 20)
                            r.update(config=cfg.name, outcome="ok", error=None, warmup=n == 64)
                        except Exception as e:  # a failed request is a result
                            r = {"config": cfg.name, "prompt_tokens_sent": n, "outcome": "error", "error": f"{type(e).__name__}: {e}"}
                        req_rows.append(r)
                        tqdm.write(f"{cfg.name}: {n:,}-token prompt -> {r.get('outcome')} ttft={r.get('ttft_s')}")
                    text = srv.log_text()
                    facts = dict(srv.facts)
                    facts.update({k: v for k, v in _facts(text).items() if k not in facts})
                    rows.append(_row(cfg, num_gpus, "ok", None, facts, parse_memory_log(text), start_s))
                    rec.write_json({"facts": facts, "memory": parse_memory_log(text), "memory_lines": memory_lines(text)}, f"raw/{cfg.name}.json")
            except ServerStartError as e:
                tail = getattr(e, "log_tail", "") or ""
                text = log_path.read_text(errors="replace") if log_path.exists() else tail
                outcome = classify_failure(text[-20000:] or tail) if (text or tail) else (getattr(e, "outcome", None) or "error")
                rows.append(_row(cfg, num_gpus, outcome, f"{e}\n{tail}".strip()[-2000:],
                                 _facts(text), parse_memory_log(text), None))
            tqdm.write(f"{cfg.name}: {rows[-1]['outcome']}, logged {rows[-1]['kv_cache_tokens']} tokens (planner {rows[-1]['pred_kv_cache_tokens']:,})")
        rec.write_table(pd.DataFrame(rows))
        rec.write_table(pd.DataFrame(req_rows), "requests")
    return rec.final


def _facts(text: str) -> dict:
    from llmstudy.serving.logs import parse_startup_log

    return parse_startup_log(text or "")


# --- Analysis of the records ----------------------------------------------------------------------------------------

def measured_inputs(row) -> dict:
    """The running-system inputs a record measured (bytes), for a plan that uses them instead of the estimates."""
    def b(key):
        v = row.get(key)
        return int(round(float(v) * GiB)) if v is not None and pd.notna(v) else None

    return {"weights_bytes": b("profile_weights_gib") or b("weights_gib"), "activation_peak_bytes": b("torch_peak_increase_gib"),
            "non_torch_bytes": b("non_torch_increase_gib"), "cudagraph_bytes": b("cudagraph_estimate_gib")}


def exact_available(row) -> int | None:
    """Available KV bytes from the exact ``--kv-cache-memory=`` figure (eager runs: + 150 MiB redundancy buffer)."""
    v = row.get("kv_memory_to_requested_bytes")
    if v is None or pd.isna(v) or not bool(row.get("enforce_eager")):
        return None
    return int(v) + 150 * MiB


def compare_runs(results: pd.DataFrame) -> pd.DataFrame:
    """Each recorded configuration: logged figures, the planner's prediction (estimates), and the token formula alone."""
    out = []
    for _, r in results.iterrows():
        row = r.to_dict()
        cfg = GPU_CONFIGS.get(row["config"])
        if cfg is None:
            continue
        dep = cfg.deployment(int(row["num_gpus"]))
        p = plan(dep)
        row["pred_outcome"], row["pred_kv_cache_tokens"] = p.outcome, p.kv_cache_tokens
        row["pred_available_kv_gib"], row["pred_weights_gib"] = p.available_kv_bytes / GiB, p.weights_bytes / GiB
        ok = row["outcome"] == "ok" and pd.notna(row.get("kv_cache_tokens"))
        row["error_pct"] = 100 * (p.kv_cache_tokens - row["kv_cache_tokens"]) / row["kv_cache_tokens"] if ok else None
        meas = measured_inputs(row)
        pm = plan(dep.replace(**{k: v for k, v in meas.items() if v is not None}))
        row["measured_inputs_kv_cache_tokens"] = pm.kv_cache_tokens
        row["measured_inputs_error_pct"] = 100 * (pm.kv_cache_tokens - row["kv_cache_tokens"]) / row["kv_cache_tokens"] if ok else None
        avail = exact_available(row)
        row["formula_kv_cache_tokens"] = tokens_for_available(dep, avail) if ok and avail else None
        row["weights_error_pct"] = 100 * (p.weights_bytes / GiB - row["weights_gib"]) / row["weights_gib"] if pd.notna(row.get("weights_gib")) else None
        row["outcome_agrees"] = (row["outcome"] == "ok") == (p.outcome == "ok") if row["outcome"] in ("ok", "oom", "refused") else None
        out.append(row)
    return pd.DataFrame(out)


def without_superseded_skips(cmp: pd.DataFrame) -> pd.DataFrame:
    """Drop ``skipped`` rows (a call ran out of time before starting that server) whose configuration another record
    measured; a configuration that was only ever skipped stays, as the gap it is."""
    if not len(cmp):
        return cmp
    tried = set(cmp.loc[cmp.outcome != "skipped", "config"])
    return cmp[~((cmp.outcome == "skipped") & cmp.config.isin(tried))].reset_index(drop=True)


FINDINGS = ("scout_bf16_h100", "maverick_fp8_h100", "hybrid", "kv_fp8", "graphs", "tp8_h100", "tp8_h200", "tp_scaling")


def published_vs_measured(cmp: pd.DataFrame) -> pd.DataFrame:
    """The article's and the blog's cells next to the measured configuration that tests each (``compare_runs`` rows).

    A cell is tested by a record of the same model, weight format, number of GPUs and memory budget (H100 cells: the
    emulated H100 budget) with the default KV dtype. Verdict: *reproduced* (a published length starts at that length or
    longer; a published OOM runs out of memory), *differs* (a published OOM starts; a published length fails to start
    at or below it), *shorter length tested*, or *not measured*.
    """
    cells = [("article", label, model, weights, "h100-80gb", n, rec) for label, model, weights, n, rec, _ in ARTICLE_TABLE]
    cells += [("blog", label, model, weights, gpu, n, pub) for label, model, weights, gpu, n, pub in BLOG_TABLE]
    tried = cmp[cmp.outcome.isin(["ok", "oom", "refused"]) & (cmp.kv_dtype == "auto")] if len(cmp) else cmp
    rows = []
    for source, label, model, weights, gpu, n, published in cells:
        budget = "h100" if gpu == "h100-80gb" else "h200"
        m = tried[(tried.model == model) & (tried.weights == weights) & (tried.num_gpus == n) & (tried.budget == budget)] if len(tried) else tried
        row = {"source": source, "model": label, "precision": PRECISION_LABEL[weights], "hardware": hardware_label(n, gpu),
               "published max_model_len": "OOM" if published is None else f"{published:,}", "record": None, "measured": None,
               "tested max_model_len": None, "logged KV tokens": None, "planner (0.25.0) tokens": None, "verdict": "not measured"}
        if len(m):
            started = m[(m.outcome == "ok") & (m.max_model_len >= (published or 0))]
            r = (started if len(started) else m).sort_values("max_model_len").iloc[-1]
            ok = r.outcome == "ok"
            if published is None:
                verdict = "differs" if ok else "reproduced"
            elif ok:
                verdict = "reproduced" if r.max_model_len >= published else "shorter length tested"
            else:
                verdict = "differs" if r.max_model_len <= published else "shorter length tested"
            row.update({"record": f"{r.run_id}/{r.config}", "measured": "starts" if ok else r.outcome.upper(), "tested max_model_len": int(r.max_model_len),
                        "logged KV tokens": int(r.kv_cache_tokens) if ok else None,
                        "planner (0.25.0) tokens": int(r.pred_kv_cache_tokens) if ok else None, "verdict": verdict})
        rows.append(row)
    return pd.DataFrame(rows)


def measured_findings(cmp: pd.DataFrame) -> dict[str, str]:
    """Sentences for the chapter from the measured configurations (``compare_runs`` rows); a key is absent while the
    configurations it compares are not both recorded."""
    got = {r.config: r for r in cmp.itertuples() if r.outcome in ("ok", "oom", "refused")} if len(cmp) else {}
    out: dict[str, str] = {}

    def both_ok(a: str, b: str):
        x, y = got.get(a), got.get(b)
        return (x, y) if x is not None and y is not None and x.outcome == y.outcome == "ok" else None

    h100_budget_gib = 0.9 * GPUS["h100-80gb"].total_bytes / GiB  # what the emulated-H100 utilization requests
    s = got.get("scout-bf16-h100")
    if s is not None:
        if s.outcome == "ok":
            out["scout_bf16_h100"] = (
                f"On the H100 budget ({h100_budget_gib:.2f} GiB per GPU) vLLM 0.25.0 starts Scout BF16 at TP=4, the configuration the "
                f"article reported as OOM under 0.8.3: {s.available_kv_gib:.2f} GiB per GPU are left for the KV cache and the "
                f"server logs {int(s.kv_cache_tokens):,} tokens at max_model_len {int(s.max_model_len):,} (planner: "
                f"{int(s.pred_kv_cache_tokens):,}). That run is eager; with CUDA graphs 0.25.0 also subtracts its graph estimate.")
        else:
            out["scout_bf16_h100"] = f"On the H100 budget Scout BF16 at TP=4 does not start under vLLM 0.25.0 either ({s.outcome})."
    m = got.get("maverick-fp8-h100")
    if m is not None:
        verdict = "runs out of memory, as the article and the planner say" if m.outcome == "oom" else f"ends {m.outcome}"
        out["maverick_fp8_h100"] = (
            f"Maverick FP8 on the H100 budget {verdict}: its weights take {m.weights_gib:.2f} GiB per GPU (planner "
            f"{m.pred_weights_gib:.2f}) of a {h100_budget_gib:.2f} GiB budget.")
    if pair := both_ok("scout-fp8-h100-hybrid-off", "scout-fp8-h100-long"):
        off, on = pair
        out["hybrid"] = (
            f"Measured on the same hardware (Scout FP8, H100 budget, {off.available_kv_gib:.2f} and {on.available_kv_gib:.2f} GiB "
            f"of KV memory per GPU): with the hybrid manager off, {off.max_concurrency:.2f} requests of {int(off.max_concurrency_len):,} "
            f"tokens fit ({int(off.kv_cache_tokens):,} logged); with it on, {on.max_concurrency:.2f} requests of "
            f"{int(on.max_concurrency_len):,} tokens ({int(on.kv_cache_tokens):,} logged), {on.kv_cache_tokens / off.kv_cache_tokens:.1f}× the "
            f"tokens in the same memory.")
    if pair := both_ok("scout-bf16-h200", "scout-bf16-h200-kvfp8"):
        b, f8 = pair
        out["kv_fp8"] = (
            f"An fp8 KV cache on the same budget ({f8.available_kv_gib:.2f} against {b.available_kv_gib:.2f} GiB) logs "
            f"{int(f8.kv_cache_tokens):,} tokens against {int(b.kv_cache_tokens):,}: {f8.kv_cache_tokens / b.kv_cache_tokens:.2f}×, "
            f"the blog's \"potentially doubles\".")
    if pair := both_ok("scout-fp8-h200", "scout-fp8-h200-graphs"):
        e, g = pair
        out["graphs"] = (
            f"CUDA graphs (vLLM's default; the other runs are eager) cost {e.available_kv_gib - g.available_kv_gib:.2f} GiB of KV "
            f"memory per GPU: 0.25.0 subtracts its estimate of {g.cudagraph_estimate_gib:.2f} GiB before sizing the cache, and the "
            f"logged figure drops from {int(e.kv_cache_tokens):,} to {int(g.kv_cache_tokens):,} tokens "
            f"({100 * (g.kv_cache_tokens / e.kv_cache_tokens - 1):+.1f}%). The capture took {g.graph_capture_s:.0f} s.")

    def label(r) -> str:
        return f"{'Scout' if r.model == SCOUT else 'Maverick'} {PRECISION_LABEL[r.weights]}"

    def started(name: str, why: str) -> str | None:
        r = got.get(name)
        if r is None or r.outcome != "ok":
            return None
        return f"{label(r)} at max_model_len {int(r.max_model_len):,} ({why}; {int(r.kv_cache_tokens):,} tokens logged, planner {int(r.pred_kv_cache_tokens):,})"

    def oom(name: str, budget_gib: float, why: str) -> str | None:
        r = got.get(name)
        if r is None:
            return None
        if r.outcome != "oom":
            return f"{label(r)} ends {r.outcome}, where {why} reported OOM"
        return f"{label(r)} runs out of memory, as {why} found: its weights take {r.weights_gib:.2f} GiB per GPU of a {budget_gib:.2f} GiB budget"

    h200_budget_gib = 0.9 * GPUS["h200"].total_bytes / GiB
    parts = [x for x in (started("tp8-scout-bf16-h100-1200k", "the article's recommendation"),
                         started("tp8-scout-fp8-h100-1500k", "the article's recommendation"),
                         started("tp8-maverick-fp8-h100-430k", "the blog's length, above the article's 300,000")) if x]
    no = oom("tp8-maverick-bf16-h100", h100_budget_gib, "the article")
    if parts or no:
        out["tp8_h100"] = (f"On the H100 budget at TP=8, vLLM 0.25.0 starts {'; '.join(parts)}." if parts else "") + (f" {no}." if no else "")
    parts = [x for x in (started("tp8-scout-bf16-h200-3600k", "the blog's length"), started("tp8-scout-fp8-h200-3600k", "the blog's Scout length"),
                         started("tp8-maverick-fp8-h200-1000k", "the blog's length, about the model's maximum")) if x]
    mb = got.get("tp8-maverick-bf16-h200-1000k")
    if mb is not None:
        parts.append(f"Maverick BF16, which neither source lists on H200, at max_model_len {int(mb.max_model_len):,} with "
                     f"{mb.available_kv_gib:.2f} GiB of KV memory per GPU after {mb.weights_gib:.2f} GiB of weights"
                     if mb.outcome == "ok" else f"not Maverick BF16 ({mb.outcome}; its weights take {mb.weights_gib:.2f} GiB of a {h200_budget_gib:.2f} GiB budget)")
    if parts:
        out["tp8_h200"] = f"On the H200 budget at TP=8 it starts {'; '.join(parts)}."
    scout_h100 = both_ok("scout-bf16-h100", "tp8-scout-bf16-h100-1200k")
    pairs = [p for p in (scout_h100, both_ok("scout-fp8-h200", "tp8-scout-fp8-h200-3600k"), both_ok("maverick-fp8-h200", "tp8-maverick-fp8-h200-1000k")) if p]
    if pairs:
        w = ", ".join(f"{label(a)} {a.weights_gib:.2f} → {b.weights_gib:.2f} GiB (×{b.weights_gib / a.weights_gib:.2f})" for a, b in pairs)
        out["tp_scaling"] = (f"From TP=4 to TP=8 the weights per GPU nearly halve: {w}. Replicated tensors (norms, routers, the "
                             f"rotary cache) keep the ratio above one half. Each GPU also holds one KV head of the eight instead of two, "
                             f"so a token costs half the KV bytes per GPU.")
        if scout_h100:
            s4, s8 = scout_h100
            out["tp_scaling"] += (f" On the H100 budget, Scout BF16 has {s4.available_kv_gib:.2f} GiB of KV memory per GPU at TP=4 and "
                                  f"{s8.available_kv_gib:.2f} GiB at TP=8.")
    return out


# --- The chapter's parameters -------------------------------------------------------------------------------------

def notebook_params():
    from llmstudy.core.params import Param

    def configs_ok(v):
        try:
            resolve_configs(v)
        except ValueError as e:
            return str(e)
        return None

    return {
        "mode": Param(str, "analyze", "analyze: render recorded runs (CPU); run: start vLLM servers and write a run record", choices=("analyze", "run")),
        "configs": Param(list, ["a"], "run mode: configuration names or device calls a-c (4 GPUs), d-e (8 GPUs) (see capacity.CALLS)", check=configs_ok),
        "run_id": Param(str, "", "run id for run mode (default: timestamp-Ngpu)"),
        "deadline_s": Param((int, float), 570, "run mode: stop starting servers after this many seconds", check=lambda v: None if v > 0 else "must be > 0"),
    }


def record_decomposition(results: pd.DataFrame) -> pd.DataFrame:
    """Measured per-GPU memory split of recorded configurations (GiB, from vLLM's own log lines)."""
    rows = []
    for _, r in results.iterrows():
        if r.get("outcome") != "ok" or pd.isna(r.get("available_kv_gib")):
            continue
        total = r.get("init_total_gib") if pd.notna(r.get("init_total_gib")) else GPUS["h200"].total_bytes / GiB
        if is_h100_emulation(float(r["gpu_memory_utilization"])):
            total = GPUS["h100-80gb"].total_bytes / GiB  # the emulated GPU's frame
        budget = math.ceil(GPUS["h200"].total_bytes * float(r["gpu_memory_utilization"])) / GiB
        weights = r.get("profile_weights_gib") if pd.notna(r.get("profile_weights_gib")) else r.get("weights_gib")
        graphs = 0.0 if bool(r.get("enforce_eager")) or pd.isna(r.get("cudagraph_estimate_gib")) else float(r["cudagraph_estimate_gib"])
        parts = (weights, r.get("torch_peak_increase_gib"), r.get("non_torch_increase_gib"), graphs, r["available_kv_gib"], total - budget)
        for comp, v in zip(DECOMPOSITION, parts):
            rows.append({"config": f"{r['config']} (measured, {r['run_id']})", "component": comp, "GiB": float(v) if pd.notna(v) else 0.0})
    return pd.DataFrame(rows)
