"""KV-cache capacity planner: what vLLM logs as "GPU KV cache size", and the longest context that starts.

The planner repeats vLLM's own startup arithmetic for one deployment (model config, GPU, parallelism, weight and
KV precision, scheduler limits). The rules are written per vLLM version. Code references are in
``../shared/notes/vllm-kv-cache.md`` (beside the checkout) and in the comments below.

1. **Budget.** ``gpu_memory_utilization x total``, the version's default when not given (0.8.3: 0.9; 0.25.0: 0.92).
   vLLM 0.25 rounds it up with ``math.ceil`` (``vllm/v1/worker/utils.py: request_memory``).
2. **Non-KV memory.** weights + activation peak of the profiling run + non-torch memory, and in 0.21 and later the
   CUDA-graph estimate. vLLM 0.8.3 measures non-torch memory on the whole device, so the CUDA context counts.
   vLLM 0.25 counts only what grew after its init snapshot (``gpu_worker.py: determine_available_memory``).
3. **Blocks.** Available memory // (page size x layers in the largest KV group), then the minimum over ranks.
   A page is ``block x`` :func:`kv_bytes_per_token_layer`: K and V of the rank's KV heads, or for MLA
   (DeepSeek-V2/V3) one latent of ``kv_lora_rank + qk_rope_head_dim`` that every rank holds whole.
4. **Logged tokens.** 0.8.3: ``num_blocks x block_size``. 0.21 and later:
   ``int(num_blocks / blocks_per_request x max_model_len)`` (``kv_cache_utils.py: get_kv_cache_capacity``).
   With the hybrid KV manager, chunked-local and sliding-window layers need fewer blocks per request.
5. **Startup check.** One request of ``max_model_len`` must fit. The largest length that passes is found by the
   same binary search vLLM uses to suggest a length (``estimate_max_model_len``).

The architecture comes from the validated config, layer by layer (:func:`llmstudy.core.models.describe`): dense
MHA/GQA, MoE under any expert naming, sliding-window and chunked hybrids, multimodal ``text_config``, MLA. A model the
planner cannot be exact for (an architecture outside :data:`ARCHITECTURES`, one missing from the version's model
registry, a checkpoint format it does not model) raises :class:`NotModelledError` naming what is not modelled.

Weights per GPU are computed from the architecture: every tensor of the config as transformers names it
(:mod:`llmstudy.calc.tensors`, proven equal to the meta-device model for every shipped config). For each tensor the planner knows whether vLLM shards it across tensor-parallel
ranks, replicates it, or pads it, and which precision it is stored in. Three inputs are properties of a running
system: the activation peak, the non-torch memory and the CUDA-graph estimate. Each has a named default estimate
(``estimate_*``; the activation peak follows the version's model runner, :func:`model_runner`), and a measured value
overrides it. Every plan reports which of its inputs were measured. On the seven one-GPU H200 records of models it
was not fitted on (``data/runs/context_limits/h200x1-g``, ``-g2``) the estimates land within 0.6% of vLLM's tokens.
The vLLM 0.8.3 rules follow the terms its engine measured on one H200 (``h200x1-v083-a`` .. ``-e``, read by
:mod:`llmstudy.serving.vllm_probe`): within 0.4% on the 11 servers whose profile peak is the sampler's; beyond one GPU
they are extrapolated (:func:`non_torch_083`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

from llmstudy.calc import models as M

GiB = 2**30
MiB = 2**20
BLOCK_SIZE = 16  # vLLM's CUDA default (vllm==0.8.3 platforms/cuda.py; vllm==0.33 config/cache.py DEFAULT_BLOCK_SIZE)
VOCAB_PADDING = 64  # VocabParallelEmbedding pads the vocabulary to a multiple of 64 (DEFAULT_VOCAB_PADDING_SIZE)
EXPERIMENT = "context_limits"
PRECISION_LABEL = {"bf16": "BF16", "fp8-online": "FP8", "fp8-checkpoint": "FP8", "mxfp4-checkpoint": "MXFP4"}


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
    default_utilization: float = 0.9  # gpu_memory_utilization when the server is started without the flag
    model_runner_v2: bool = False  # the V2 GPU model runner serves dense models (and a few MoE ones) by default


VERSIONS: dict[str, VersionRules] = {
    # 0.8.3: FullAttentionSpec for every layer (llama4.py builds Attention(per_layer_sliding_window=None)),
    # tokens = num_blocks * block_size (kv_cache_utils.py:545-596), CUDA graphs captured after the KV cache.
    # Sampler: PyTorch top-k/top-p sorts the vocabulary when FlashInfer is absent (pip install vllm does not
    # bring it). Measured (data/runs/context_limits/h200x1-v083-a, -d; 1024 and 256 rows of a 202,048 vocabulary):
    # 38 live bytes per (row, vocab) element at the dummy sampler's peak, the bf16 logits included.
    "0.8.3": VersionRules("0.8.3", None, False, False, False, True, 38, 0.9),  # engine/arg_utils.py: 0.90
    # 0.25.0: hybrid manager on for chunked-local attention (envs.py VLLM_ALLOW_CHUNKED_LOCAL_ATTN_WITH_HYBRID_KV_CACHE
    # default "1"), tokens from concurrency, CUDA-graph estimate subtracted (gpu_worker.py:519-523), ceil budget.
    # Sampler: Triton top-k/top-p for >= 8 rows (no sort): bf16 logits 2 + fp32 4 + probs 4 + exponential noise 4.
    # Model runner V2 (v1/worker/gpu/model_runner.py) for every non-MoE model and the MoE ones in
    # DEFAULT_V2_MODEL_RUNNER_ARCHITECTURES (config/vllm.py: use_v2_model_runner); its profiling run skips attention and
    # its sampler skips top-k/top-p. Default gpu_memory_utilization 0.92 (config/cache.py: Field(default=0.92)).
    "0.25.0": VersionRules("0.25.0", True, True, True, True, False, 14, 0.92, True),
}
# The architectures the planner models, and the first vLLM release whose model registry lists each, read from the
# released wheels' vllm/model_executor/models/registry.py (0.8.3, 0.8.4 and 0.25.0): "0.8.3" means "already in 0.8.3",
# the oldest version with rules here. Qwen3 and Qwen3-MoE are absent from 0.8.3 and present in 0.8.4; gpt-oss is
# absent from 0.8.4 and present in 0.25.0 (its first release, 0.10.1, from the gpt-oss launch notes).
ARCHITECTURES = {
    **dict.fromkeys(("LlamaForCausalLM", "MistralForCausalLM", "MixtralForCausalLM", "Qwen2ForCausalLM", "Qwen2MoeForCausalLM",
                     "GemmaForCausalLM", "Gemma2ForCausalLM", "Gemma3ForCausalLM", "Gemma3ForConditionalGeneration",
                     "Llama4ForCausalLM", "Llama4ForConditionalGeneration", "DeepseekV2ForCausalLM", "DeepseekV3ForCausalLM"), "0.8.3"),
    "Qwen3ForCausalLM": "0.8.4", "Qwen3MoeForCausalLM": "0.8.4", "GptOssForCausalLM": "0.10.1",
}
MIN_VERSION = ARCHITECTURES  # the former name
# vLLM 0.25 config/vllm.py DEFAULT_V2_MODEL_RUNNER_ARCHITECTURES: MoE models that still get the V2 runner
V2_RUNNER_MOE_ARCHITECTURES = frozenset({"DeepseekV2ForCausalLM", "Qwen2MoeForCausalLM", "GraniteMoeForCausalLM"})
QUANT_METHODS = {"compressed-tensors": "fp8-checkpoint", "mxfp4": "mxfp4-checkpoint"}

WEIGHT_FORMATS = {
    "bf16": "every tensor in bf16 (the checkpoint's dtype)",
    "fp8-online": "--quantization fp8: linear layers and fused experts quantized to FP8 at load (per-tensor scales)",
    "fp8-checkpoint": "the config's compressed-tensors FP8 quantization_config (targets minus ignore, per-channel scales)",
    "mxfp4-checkpoint": "the config's MXFP4 quantization_config (experts: 4-bit values + one e8m0 scale per 32)",
}
KV_DTYPES = {"auto": 2, "fp8": 1}

# Default estimates for the inputs that only a running system knows (bytes). Measured values replace them.
# cuBLAS/cuBLASLt workspaces and allocator slack: vLLM 0.25.0 logged "non-torch forward increase memory: 0.22GiB" for
# each of the seven one-GPU records (data/runs/context_limits/h200x1-g, -g2)
DEFAULT_NON_TORCH_TP1 = round(0.22 * GiB)
DEFAULT_NON_TORCH_TP = 768 * MiB  # plus NCCL communicator buffers, allocated at the first collective
DEFAULT_CUDA_CONTEXT = 512 * MiB  # CUDA context + NCCL init, counted only where the whole device is measured (0.8.3)
DEFAULT_CUDAGRAPH = 1 * GiB  # placeholder for vLLM's CUDA-graph estimate (0.21+, graphs on): measure it

# vLLM 0.8.3 (V1 engine), each term read inside the engine by llmstudy.serving.vllm_probe on one H200
# (data/runs/context_limits/h200x1-v083-a .. -e: Llama 4 shapes with 12 or 24 layers, text and multimodal, bf16, online
# FP8 and the FP8 checkpoint, eager and graphs, max_num_seqs 1024/256/64).
CUBLAS_WORKSPACE = 32 * MiB  # torch 2.6's cuBLAS workspace on Hopper (4096 KiB x 8), allocated by the first GEMM of the profile
V083_OUTSIDE_TORCH = 720_175_104  # device memory torch did not allocate after the profile run: CUDA context + libraries (all 11 runs)
# memory the caching allocator holds but could not release (reserved - allocated after empty_cache), which 0.8.3 counts as
# non-torch: a few tens of MB after a bf16 or FP8-checkpoint load; after online FP8 (--quantization fp8 on bf16 weights)
# the freed bf16 originals leave 1,536,658,944 B at 12 layers and 1,787,901,440 B at 24 (a fixed part + one per layer)
V083_ALLOCATOR_CACHED = {"text": 26_753_024, "multimodal": 50_718_208}
V083_FP8_ONLINE_CACHED = (1_285_416_448, 20_936_875)  # (fixed, per decoder layer) at TP=1
# the model runner's buffers alive before the profile run (gpu_model_runner.py __init__): inputs_embeds (hidden x
# max_num_batched_tokens, bf16), input ids + positions (4 + 8 bytes per token) and per request the block table
# (4 bytes x ceil(max_model_len / 16)) plus ~28 bytes of sampling state
V083_BUFFER_BYTES_PER_TOKEN, V083_BUFFER_BYTES_PER_REQUEST = 12, 28
# Llama 4's vision tower in the profile run (4 dummy images of 17 tiles at max_num_batched_tokens 8192): the encoder
# outputs and pixel values kept while the decoder runs, and the encoder pass's own peak, per image (TP=1)
LLAMA4_ENCODER_HELD_PER_IMAGE = 31_746_816
LLAMA4_ENCODER_PEAK_PER_IMAGE = 454_151_936
# vLLM 0.8.3's Llama 4 vision tower allocates this much more than the checkpoint's vision and projector tensors (the
# multimodal minus the text-only load, less the planner's tensors: 56,692,224 B for Scout, 57,050,624 B for Maverick; not
# attributed to a tensor yet). Taken as replicated on every rank.
LLAMA4_VISION_EXTRA_083 = 56_692_224
LLAMA4_IMAGE_TOKENS = 2467  # (max_patches 16 + 1) x (144 + 1) + 2 (mllama4.py get_mm_max_tokens_per_item)


class NotModelledError(ValueError):
    """The planner cannot be exact for this model or deployment (the message names what is not modelled)."""


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
    gpu_memory_utilization: float | None = None  # None: the version's default (0.8.3: 0.9; 0.25.0: 0.92)
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
    # True when gpu_memory_utilization was left to the version's default (replace() then re-resolves it)
    utilization_is_default: bool = dataclasses.field(default=False, init=False, repr=False, compare=False)

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
        if u is not None and (not isinstance(u, (int, float)) or isinstance(u, bool) or not 0 < u <= 1):
            errors.append(f"gpu_memory_utilization must be in (0, 1], got {u!r}")
        if errors:
            raise ValueError("; ".join(errors))
        if u is None:
            object.__setattr__(self, "gpu_memory_utilization", VERSIONS[self.vllm_version].default_utilization)
            object.__setattr__(self, "utilization_is_default", True)
        if self.tp is None:
            if self.num_gpus % self.pp:
                raise ValueError(f"num_gpus ({self.num_gpus}) is not a multiple of pp ({self.pp})")
            object.__setattr__(self, "tp", self.num_gpus // self.pp)
        if self.tp * self.pp != self.num_gpus:
            raise ValueError(f"tp x pp = {self.tp} x {self.pp} = {self.tp * self.pp} does not use num_gpus = {self.num_gpus}")
        f = model_facts(self.model, self.text_only)
        need = ARCHITECTURES.get(f["architecture"])
        if need is None:
            raise NotModelledError(f"{f['architecture']} ({self.model}) is not modelled by the KV planner; modelled architectures: "
                                   f"{', '.join(sorted(ARCHITECTURES))}")
        if _vkey(self.vllm_version) < _vkey(need):
            raise NotModelledError(f"{f['architecture']} needs vLLM >= {need} (it is not in vLLM {self.vllm_version}'s model "
                                   f"registry); rules for {self.vllm_version} do not apply")
        if f["mla"] and self.kv_dtype != "auto":
            raise NotModelledError(f"an fp8 KV cache for MLA attention ({self.model}) is not modelled (the MLA backends' fp8 "
                                   "cache layouts differ); use kv_dtype='auto'")
        if f["heads"] % self.tp:
            raise ValueError(f"tensor parallel size {self.tp} does not divide the {f['heads']} attention heads of {self.model} "
                             f"(vLLM: 'Total number of attention heads ({f['heads']}) must be divisible by tensor parallel size ({self.tp})')")
        kv = f["kv_heads"]
        if not f["mla"] and ((kv >= self.tp and kv % self.tp) or (kv < self.tp and self.tp % kv)):
            raise ValueError(f"tensor parallel size {self.tp} neither divides nor is a multiple of the {kv} KV heads of {self.model}")
        if self.pp > f["layers"]:
            raise ValueError(f"pp ({self.pp}) exceeds the {f['layers']} layers of {self.model}")
        rules = VERSIONS[self.vllm_version]
        if self.hybrid_kv and rules.hybrid_kv_default is None:
            raise ValueError(f"vLLM {self.vllm_version} has no hybrid KV cache manager (hybrid_kv=True is impossible)")
        q = f["quantization"]
        if q and q.get("quant_method") not in QUANT_METHODS:
            raise NotModelledError(f"{self.model} is a {q.get('quant_method')!r} checkpoint: how vLLM stores those weights is not "
                                   f"modelled (modelled checkpoints: {', '.join(QUANT_METHODS)})")
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
        """A copy with ``kw`` changed; a defaulted gpu_memory_utilization stays the (new) version's default."""
        if self.utilization_is_default:
            kw.setdefault("gpu_memory_utilization", None)
        return dataclasses.replace(self, **kw)


DEPLOYMENT_DEFAULTS = {f.name: f.default for f in dataclasses.fields(Deployment) if f.init}


def _vkey(v: str) -> tuple:
    return tuple(int(x) for x in re.findall(r"\d+", v)[:3])


# --- Model facts -------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=32)
def model_facts(model: str, text_only: bool = False) -> dict:
    """Architecture facts the planner needs, from the validated config's layer-by-layer description
    (:func:`llmstudy.core.models.describe`; the language model's ``text_config`` for multimodal configs)."""
    a = M.describe(model)
    raw = M.raw_config(model)
    t = raw.get("text_config") or raw
    arch = (raw.get("architectures") or ["?"])[0]
    multimodal = a.multimodal and not text_only
    if text_only and arch.endswith("ForConditionalGeneration"):
        arch = arch.replace("ForConditionalGeneration", "ForCausalLM")
    max_pos = t.get("max_position_embeddings")
    if not isinstance(max_pos, int) or isinstance(max_pos, bool) or max_pos <= 0:
        raise NotModelledError(f"{model}: field 'max_position_embeddings' is missing or not a positive integer: vLLM derives "
                               "the longest context from it")
    q = raw.get("quantization_config") or t.get("quantization_config")
    kinds = tuple(layer.attention for layer in a.layers)
    window = next((layer.window for layer in a.layers if layer.window), None)
    moe = a.moe
    return {
        "architecture": arch,
        "model_type": a.model_type,
        "multimodal": multimodal,
        "layers": a.num_layers,
        "hidden": a.hidden_size,
        "heads": a.num_heads,
        "kv_heads": a.num_kv_heads,
        "head_dim": a.head_dim,
        "vocab": a.vocab_size,
        "max_position_embeddings": max_pos,
        "attention": kinds,  # full / sliding / chunked / mla per layer
        "layer_types": tuple({"sliding": "sliding_attention", "chunked": "chunked_attention"}.get(k, "full_attention") for k in kinds),
        "attention_chunk_size": window if "chunked" in kinds else None,
        "sliding_window": window if "sliding" in kinds else None,
        "mla": a.mla.latent if a.mla else None,  # elements cached per token and layer (kv_lora_rank + qk_rope_head_dim)
        "mla_rope_dim": a.mla.qk_rope_head_dim if a.mla else None,
        "intermediate": moe.expert_intermediate_size if moe else a.intermediate_size,
        "intermediate_mlp": t.get("intermediate_size_mlp") or a.intermediate_size,
        "experts": moe.num_experts if moe else 0,
        "top_k": moe.top_k if moe else 0,
        "moe_layers": a.moe_layers,
        # always-active expert width: Llama 4's one shared expert of the routed width, DeepSeek's n_shared_experts, Qwen2-MoE's
        "shared_intermediate": (moe.expert_intermediate_size if a.model_type == "llama4_text" else moe.shared_intermediate_size) if moe else 0,
        "rope_caches": _rope_caches(t, a, max_pos),
        "quantization": q or None,
    }


def _rope_caches(t: dict, a, max_pos: int) -> tuple[tuple[int, int], ...]:
    """(elements, bytes per element) of each distinct cos/sin cache vLLM registers with the weights.

    vLLM builds one rotary embedding per distinct setting (``get_rope`` caches them): ``max_len x rotary_dim``
    elements in the model dtype (``RotaryEmbedding``), where a ``linear`` rope scaling multiplies the length by its
    factor (``LinearScalingRotaryEmbedding``). DeepSeek's YaRN cache is float32 over ``original x factor`` positions
    of the RoPE part alone (``DeepseekScalingRotaryEmbedding``). Gemma 3's sliding layers use a second, unscaled rope.
    """
    scaling = t.get("rope_scaling") or {}
    if not isinstance(scaling, dict):
        scaling = {}
    kind = scaling.get("rope_type") or scaling.get("type")
    factor = scaling.get("factor") or 1
    rot = int(a.head_dim * (t.get("partial_rotary_factor") or 1))
    if a.mla:
        length = int((scaling.get("original_max_position_embeddings") or max_pos) * factor) if kind in ("yarn", "deepseek_yarn") else max_pos
        return ((length * a.mla.qk_rope_head_dim, 4),)
    length = int(max_pos * factor) if kind == "linear" else max_pos
    caches = [(length * rot, 2)]
    if a.model_type == "gemma3_text" and "sliding" in {layer.attention for layer in a.layers} and t.get("rope_local_base_freq"):
        caches.append((max_pos * rot, 2))
    return tuple(caches)


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
        if re.search(r"\.(q_a_proj|kv_a_proj_with_mqa|[qk]v?_a_layernorm)\.(weight|bias)$", name):
            return numel  # MLA's down-projections and their norms: ReplicatedLinear on every rank
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


WEIGHT_COLUMNS = ("name", "component", "layer", "stage", "precision", "rank_numel", "rank_bytes")


def weight_rows(dep: Deployment) -> list[tuple]:
    """One row per tensor: (name, component, layer, PP stage, precision, rank_numel, rank_bytes), the bytes held by
    the busiest TP rank (:data:`WEIGHT_COLUMNS`)."""
    f = model_facts(dep.model, dep.text_only)
    table = [r for r in M.table_rows(dep.model) if f["multimodal"] or r["component"] != "vision"]
    stages = _pp_layers(f["layers"], dep.pp)
    nbytes = {"bf16": 2.0, "fp8": 1.0, "mxfp4": 0.5 + 1 / 32}
    per_channel = dep.weights == "fp8-checkpoint"
    rows = []
    for name, comp, numel, lin in ((r["name"], r["component"], r["numel"], r["linear"]) for r in table):
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
    for s in range(dep.pp):  # cos/sin caches (see _rope_caches), one set per stage
        for n, b in f["rope_caches"]:
            rows.append(("rotary_emb.cos_sin_cache", "rope cache", -1, s, "bf16" if b == 2 else "fp32", n, float(b * n)))
    if _llama4_multimodal_083(dep, f):
        rows.append(("vision_model (vLLM 0.8.3, beyond the checkpoint's tensors)", "vision", -1, 0, "bf16", 0,
                     float(LLAMA4_VISION_EXTRA_083)))
    return rows


def weights_per_gpu(dep: Deployment) -> int:
    """Bytes of weights on the busiest GPU (the PP stage with the most)."""
    per_stage: dict[int, float] = {}
    for row in weight_rows(dep):
        per_stage[row[3]] = per_stage.get(row[3], 0.0) + row[6]
    return int(max(per_stage.values()))


# --- KV cache specs ------------------------------------------------------------------------------------------------

def layer_kinds(dep: Deployment) -> list[tuple[str, int | None]]:
    """(kind, window) per decoder layer as the version's KV manager sees it: full, chunked(chunk) or sliding(window)."""
    f = model_facts(dep.model, dep.text_only)
    out = []
    for kind in f["attention"]:
        if not dep.hybrid:
            out.append(("full", None))  # 0.8.3, or the hybrid manager off: every layer gets full-length KV
        elif kind == "chunked" and f["attention_chunk_size"]:
            out.append(("chunked", f["attention_chunk_size"]))
        elif kind == "sliding" and f["sliding_window"]:
            out.append(("sliding", f["sliding_window"]))
        else:
            out.append(("full", None))  # full attention and MLA
    return out


def kv_bytes_per_token_layer(dep: Deployment) -> int:
    """KV-cache bytes one token takes in one layer on one rank.

    Standard attention: K and V, ``2 x kv_heads_per_rank x head_dim x dtype`` (KV heads are split over TP ranks,
    replicated when there are fewer heads than ranks). MLA (DeepSeek-V2/V3): one latent of
    ``kv_lora_rank + qk_rope_head_dim`` elements (factor 1, not 2), whole on every rank (vLLM's ``MLAAttentionSpec``).
    """
    return _kv_layer_bytes(model_facts(dep.model, dep.text_only), dep.tp, dep.kv_dtype)


def _kv_layer_bytes(f: dict, tp: int, kv_dtype: str) -> int:
    if f["mla"]:
        return f["mla"] * KV_DTYPES[kv_dtype]
    return 2 * max(1, f["kv_heads"] // tp) * f["head_dim"] * KV_DTYPES[kv_dtype]


def kv_layout(dep: Deployment) -> str:
    """How one token's KV is stored per layer and rank, in words (e.g. ``K+V 2 x 8 heads x 128``, ``MLA latent 512+64``)."""
    f = model_facts(dep.model, dep.text_only)
    if f["mla"]:
        return f"MLA latent {f['mla'] - f['mla_rope_dim']}+{f['mla_rope_dim']}, whole on every rank"
    kv_rank = max(1, f["kv_heads"] // dep.tp)
    return f"K+V 2 x {kv_rank} of {f['kv_heads']} KV heads x {f['head_dim']}"


def kv_bytes_per_token(model: str, tp: int = 1, kv_dtype: str = "auto") -> int:
    """KV-cache bytes of one token over every layer on one rank, with every layer holding it (no window).

    The one KV arithmetic of the repository for "bytes per token" (any family: GQA, sliding/hybrid, MLA, multimodal
    ``text_config``); a sliding or chunked layer holds at most its window of tokens (:func:`layer_kinds`).
    """
    if kv_dtype not in KV_DTYPES:
        raise ValueError(f"kv_dtype must be one of {sorted(KV_DTYPES)}, got {kv_dtype!r}")
    if not _positive_int(tp):
        raise ValueError(f"tp must be a positive integer, got {tp!r}")
    f = model_facts(model, True)  # the weights' format does not change the cache: quantized checkpoints are fine here
    return f["layers"] * _kv_layer_bytes(f, tp, kv_dtype)


def page_bytes(dep: Deployment) -> int:
    """Bytes of one KV block of one layer on one rank: block x :func:`kv_bytes_per_token_layer`
    (standard attention: 2 x block x kv_heads_per_rank x head_dim x dtype; MLA: block x latent x dtype)."""
    return BLOCK_SIZE * kv_bytes_per_token_layer(dep)


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

def _forward_bytes_per_token(f: dict, tp: int, attention: bool = True) -> int:
    """bf16 activation bytes per token alive at once in one decoder layer during the profiling forward.

    ``attention=False``: the V2 model runner profiles with ``skip_attn=True``, so no attention activations.
    """
    h, d = f["hidden"], f["head_dim"]
    q = f["heads"] * d // tp
    kv = max(1, f["kv_heads"] // tp) * d
    attn = q + 2 * kv + q if attention else 0  # qkv output + attention output
    dense = 3 * (f["intermediate_mlp"] // tp)  # gate_up output + activation
    moe = 0
    if f["experts"]:
        n = f["intermediate"] // tp
        moe = f["top_k"] * (3 * n + h) + 2 * f["experts"]  # fused_moe caches + fp32 router logits (as bf16 units)
        moe += 3 * (f["shared_intermediate"] // tp)
    return 2 * (6 * h + attn + max(dense if len(f["moe_layers"]) < f["layers"] else 0, moe))


def model_runner(dep: Deployment) -> str:
    """Which vLLM GPU model runner profiles this deployment: "v2" (0.25: every non-MoE model and the MoE architectures in
    DEFAULT_V2_MODEL_RUNNER_ARCHITECTURES) or "v1"."""
    f = model_facts(dep.model, dep.text_only)
    if dep.rules.model_runner_v2 and (not f["experts"] or f["architecture"] in V2_RUNNER_MOE_ARCHITECTURES):
        return "v2"
    return "v1"


def estimate_activation_peak(dep: Deployment) -> int:
    """Default estimate of the profiling run's torch peak above the weights.

    The profiling run (``profile_run``) is a forward pass over ``max_num_batched_tokens`` tokens split into
    ``min(max_num_seqs, max_num_batched_tokens)`` requests, then the sampler over one row per request of the full
    vocabulary. Which part peaks, and the sampler's bytes per logit, depend on the runner:

    * V1 (``gpu_model_runner.py``; 0.8.3, and MoE models in 0.25): the sampler runs top-k/top-p, twice in 0.25
      (``_dummy_sampler_run``); its live bytes per logit are the version's ``sampler_bytes_per_logit``.
    * V2 (``v1/worker/gpu/model_runner.py``; dense models in 0.25): the forward skips attention and the sampler skips
      top-k/top-p: the bf16 logits and their fp32 copy (6 bytes per logit), while the forward's hidden states
      (``max_num_batched_tokens`` rows) and the sampled rows stay alive.
    """
    f = model_facts(dep.model, dep.text_only)
    b = dep.batched_tokens
    rows = min(dep.num_seqs, b)
    vocab = -(-f["vocab"] // VOCAB_PADDING) * VOCAB_PADDING
    encoder_cache = b * f["hidden"] * 2 if f["multimodal"] else 0
    if model_runner(dep) == "v2":
        forward = b * _forward_bytes_per_token(f, dep.tp, attention=False)
        sampler = rows * (vocab // dep.tp) * 2 + rows * f["vocab"] * 4 + (b + rows) * f["hidden"] * 2
        return int(max(forward, sampler) + encoder_cache)
    forward = b * _forward_bytes_per_token(f, dep.tp)
    if dep.vllm_version == "0.8.3":
        return _activation_peak_083(dep, f, forward)
    sampler = rows * f["vocab"] * dep.rules.sampler_bytes_per_logit + rows * (vocab // dep.tp) * 2 + rows * f["hidden"] * 2
    return int(max(forward, sampler) + encoder_cache)


def _llama4_multimodal_083(dep: Deployment, f: dict) -> bool:
    """Whether the measured vLLM 0.8.3 Llama 4 vision-tower terms apply (the full multimodal model under 0.8.3 rules)."""
    return dep.vllm_version == "0.8.3" and f["multimodal"] and f["architecture"] == "Llama4ForConditionalGeneration"


def runner_buffers_083(dep: Deployment, model_len: int | None = None) -> int:
    """vLLM 0.8.3's persistent model-runner buffers, allocated before the profile run (bytes per GPU), for the
    deployment's max_model_len or the one given (the block table grows with it)."""
    f = model_facts(dep.model, dep.text_only)
    b, rows = dep.batched_tokens, dep.num_seqs
    blocks = -(-(model_len or dep.model_len) // BLOCK_SIZE)
    return b * (2 * f["hidden"] + V083_BUFFER_BYTES_PER_TOKEN) + rows * (4 * blocks + V083_BUFFER_BYTES_PER_REQUEST)


def _activation_peak_083(dep: Deployment, f: dict, forward: int) -> int:
    """0.8.3's allocated peak above the weights: the runner's buffers, then the largest of the profile's stages, which
    run in order and keep the multimodal encoder's outputs alive (``gpu_model_runner.py: profile_run``, lines 1506-1581).
    The sampler's rows see the whole vocabulary on every tensor-parallel rank (the logits are all-gathered)."""
    rows = min(dep.num_seqs, dep.batched_tokens)
    sampler = rows * (f["vocab"] * dep.rules.sampler_bytes_per_logit + 2 * f["hidden"]) + CUBLAS_WORKSPACE
    held = encoder = 0
    if f["multimodal"]:
        if _llama4_multimodal_083(dep, f):
            images = min(-(-max(dep.batched_tokens, LLAMA4_IMAGE_TOKENS) // LLAMA4_IMAGE_TOKENS), dep.num_seqs)
            held = images * LLAMA4_ENCODER_HELD_PER_IMAGE
            encoder = images * LLAMA4_ENCODER_PEAK_PER_IMAGE // dep.tp + CUBLAS_WORKSPACE
        else:  # not measured: the encoder cache of one batch of embeddings
            held = dep.batched_tokens * f["hidden"] * 2
    return int(runner_buffers_083(dep) + max(forward + held, encoder, sampler + held))


def estimate_non_torch(dep: Deployment) -> int:
    """Default estimate of memory outside the torch allocator that vLLM subtracts."""
    if dep.vllm_version == "0.8.3":
        return non_torch_083(dep)
    base = DEFAULT_NON_TORCH_TP if dep.tp * dep.pp > 1 else DEFAULT_NON_TORCH_TP1
    return base + (DEFAULT_CUDA_CONTEXT if dep.rules.counts_cuda_context else 0)


def non_torch_083(dep: Deployment) -> int:
    """What vLLM 0.8.3 counts as non-torch memory on one GPU: everything on the device that torch has not allocated.

    Measured at TP=1 (:data:`V083_OUTSIDE_TORCH`, :data:`V083_ALLOCATOR_CACHED`, :data:`V083_FP8_ONLINE_CACHED`).
    Extrapolated beyond one GPU, not measured: NCCL's communicator memory at TP/PP > 1 is the growth vLLM 0.25 measured
    on 4 and 8 H200s with NVLink SHARP off (``DEFAULT_NON_TORCH_TP - DEFAULT_NON_TORCH_TP1``), and the allocator's
    unreleased memory after online FP8 is taken to shrink with the shards (/ TP).
    """
    f = model_facts(dep.model, dep.text_only)
    out = V083_OUTSIDE_TORCH + V083_ALLOCATOR_CACHED["multimodal" if f["multimodal"] else "text"]
    if dep.weights == "fp8-online":
        fixed, per_layer = V083_FP8_ONLINE_CACHED
        out += (fixed + per_layer * f["layers"] // dep.pp) // dep.tp
    if dep.tp * dep.pp > 1:
        out += DEFAULT_NON_TORCH_TP - DEFAULT_NON_TORCH_TP1
    return int(out)


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
    notes: tuple = ()  # what the plan estimates without a measurement of its own kind, in words

    def row(self) -> dict:
        d = self.deployment
        out = {
            "label": d.label(), "model": d.model, "gpu": d.gpu, "num_gpus": d.num_gpus, "tp": d.tp, "pp": d.pp,
            "weights": d.weights, "kv_dtype": d.kv_dtype, "gpu_memory_utilization": d.gpu_memory_utilization,
            "vllm_version": d.vllm_version, "hybrid_kv": d.hybrid, "enforce_eager": d.enforce_eager, "text_only": d.text_only,
            "max_num_batched_tokens": d.batched_tokens, "max_num_seqs": d.num_seqs,
        }
        for k, v in dataclasses.asdict(self).items():
            if k not in ("deployment", "sources", "notes"):
                out[k] = v
        for k in ("total", "budget", "weights", "activation_peak", "non_torch", "cudagraph", "available_kv"):
            out[f"{k}_GiB"] = out[f"{k}_bytes"] / GiB
        out["measured_inputs"] = ",".join(k for k, v in self.sources.items() if v == "measured") or "none"
        return out


def plan_notes(dep: Deployment) -> tuple[str, ...]:
    """What a plan for this deployment estimates beyond what the records validated."""
    f = model_facts(dep.model, dep.text_only)
    out = []
    if f["multimodal"] and dep.activation_peak_bytes is None and not _llama4_multimodal_083(dep, f):
        out.append("the vision encoder's share of the profiling run (dummy images, encoder cache) is a rough estimate, not "
                   "measured on any record: plan the language model alone (text_only) for the validated estimates")
    if dep.vllm_version == "0.8.3" and dep.tp * dep.pp > 1 and dep.non_torch_bytes is None:
        out.append("vLLM 0.8.3 beyond one GPU is extrapolated: NCCL's memory at TP/PP > 1 is taken from vLLM 0.25.0's 4- and "
                   "8-GPU runs with NVLink SHARP off; NCCL's NVLink SHARP buffers (its default on H100/H200 SXM with more than "
                   "two GPUs) are not modelled and would lower the KV cache further")
    return tuple(out)


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
    # 0.8.3 allocates each request's block table before profiling (runner_buffers_083): a shorter max_model_len
    # leaves that much more for the KV cache (when the activation peak is the planner's own estimate)
    at_len = runner_buffers_083(dep) if dep.vllm_version == "0.8.3" and dep.activation_peak_bytes is None else None

    def avail_at(n: int) -> int:
        return avail if at_len is None else avail + at_len - runner_buffers_083(dep, n)

    if avail_at(1) <= 0 or not _fits(dep, avail_at(1), 1):
        return 0
    lo, best = 1, 1
    while lo <= hi:
        mid = (lo + hi) // 2
        if _fits(dep, avail_at(mid), mid):
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
                max_model_len=model_len, groups=len(stage_groups[0]), sources=sources, notes=plan_notes(dep))
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


def tokens_for_available(dep: Deployment, available_bytes: int) -> int:
    """The logged "GPU KV cache size" for a given available KV memory (the token formula alone)."""
    return plan(dep.replace(weights_bytes=0, activation_peak_bytes=0, non_torch_bytes=0, cudagraph_bytes=0,
                            gpu_memory_bytes=int(available_bytes), gpu_memory_utilization=1.0,
                            max_num_batched_tokens=dep.batched_tokens, max_num_seqs=dep.num_seqs)).kv_cache_tokens


def plan_lines(p: Plan) -> list[str]:
    """The plan as ``llmstudy capacity`` prints it (the CLI and the browser calculator print these lines)."""
    dep = p.deployment
    r = p.row()
    lines = [dep.label()]
    for k in ("weights", "activation_peak", "non_torch", "cudagraph"):
        lines.append(f"  {k.replace('_', ' '):18s} {r[k + '_GiB']:9.2f} GiB  ({p.sources[k]})")
    lines.append(f"  {'budget':18s} {r['budget_GiB']:9.2f} GiB  (gpu_memory_utilization x {r['total_GiB']:.2f} GiB)")
    lines.append(f"  {'available KV':18s} {r['available_kv_GiB']:9.2f} GiB")
    lines.append(f"  KV cache {kv_bytes_per_token_layer(dep):,} B per token and layer per GPU ({kv_layout(dep)}); profiled by the "
                 f"{model_runner(dep).upper()} model runner")
    lines.append(f"  KV blocks {p.num_blocks:,} ({p.bytes_per_block:,} B each, {p.groups} group(s)); {p.blocks_per_request:,} blocks per request")
    lines.append(f"  GPU KV cache size: {p.kv_cache_tokens:,} tokens")
    lines.append(f"  Maximum concurrency for {p.max_model_len:,} tokens per request: {p.max_concurrency:.2f}x")
    lines.append(f"  largest max_model_len that starts: {p.max_model_len_that_starts:,}")
    lines.append(f"  outcome: {p.outcome}{': ' + p.message if p.message else ''}")
    lines += [f"  note: {note}" for note in p.notes]
    return lines
