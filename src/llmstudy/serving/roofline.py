"""The decode roofline: the bytes one decode step must read from HBM, and the datasheet bandwidth that bounds it.

A decode step reads every weight it uses once and the K and V (or MLA's latent) of every running sequence's context.
Exact per architecture family, or a :class:`RooflineUnsupported` error naming what is not modelled:

* dense MHA/GQA: K and V of every layer (``2 x kv_heads x head_dim`` per token and layer);
* sliding-window and hybrid layers (Gemma-2/3, gpt-oss): a sliding layer reads at most ``sliding_window`` tokens;
* MLA (DeepSeek-V2/V3): one latent of ``kv_lora_rank + qk_rope_head_dim`` per token and layer, as vLLM stores it;
* MoE: the floor reads ``num_experts_per_tok`` of the routed experts per MoE layer (a batch's tokens may all pick the
  same experts, so more is not guaranteed); shared experts, attention and the router always;
* multimodal configs: the language model (``text_config``); the vision tower is not read while decoding;
* the input embedding is not read (a row lookup per sequence) unless it is tied to the output head.

Refused: chunked attention (Llama 4: the floor would need the position within the chunk), quantized checkpoints
(bytes per weight depend on the method's packing and scales), and whatever :func:`llmstudy.core.arch.describe` refuses
(state-space or unknown layer kinds, missing fields: its one-line ``ConfigError`` names them).
"""

from __future__ import annotations

import functools

from llmstudy.core import models as M

# Peak HBM bandwidth (bytes/s) from NVIDIA's datasheets: H100 SXM5 80GB 3.35 TB/s, H100 PCIe 80GB 2.0 TB/s,
# H100 NVL 94GB 3.9 TB/s, H200 141GB 4.8 TB/s.
HBM_BANDWIDTH = {"H100 80GB HBM3": 3.35e12, "H100 PCIe": 2.0e12, "H100 NVL": 3.9e12, "H200": 4.8e12}


class RooflineUnsupported(ValueError):
    """The decode roofline cannot be exact for this architecture; the message names what is not modelled."""


def hbm_bandwidth(gpu_name: str) -> float:
    for k, v in sorted(HBM_BANDWIDTH.items(), key=lambda kv: -len(kv[0])):
        if k in gpu_name:
            return v
    raise KeyError(f"no HBM bandwidth known for GPU {gpu_name!r}; add it to HBM_BANDWIDTH with its datasheet")


def known_bandwidth(gpu_name: str) -> float:
    """The datasheet HBM bandwidth of a GPU, or NaN (a CPU run, an unlisted GPU): no roofline is drawn for it."""
    try:
        return hbm_bandwidth(gpu_name)
    except KeyError:
        return float("nan")


@functools.lru_cache(maxsize=64)
def kv_layers(model: str, dtype_bytes: int = 2) -> tuple[tuple[int, int | None], ...]:
    """(bytes per token, window or None) of every decoder layer's KV cache, for the language model of ``model``, from
    the architecture description every model computation shares (:func:`llmstudy.core.arch.describe`)."""
    arch = _arch(model)
    chunked = sorted({layer.index for layer in arch.layers if layer.attention == "chunked"})
    if chunked:
        raise RooflineUnsupported(f"{M.title(model)}: layer types ['chunked_attention'] are not modelled by the decode roofline (only full and sliding attention, and MLA)")
    return tuple((layer.kv_per_token * dtype_bytes, layer.window if layer.attention == "sliding" else None) for layer in arch.layers)


def _arch(model: str):
    from llmstudy.core import arch as A

    return A.describe(M.raw_config(model))


def kv_bytes_per_token(model: str, dtype_bytes: int = 2) -> int:
    """KV-cache bytes of one token over every layer (K and V, or MLA's latent), as the cache stores it."""
    return sum(b for b, _ in kv_layers(model, dtype_bytes))


def kv_bytes_read(model: str, context: float, dtype_bytes: int = 2) -> float:
    """KV bytes one sequence's decode step reads at ``context`` tokens: sliding layers read at most their window."""
    return sum(b * (context if w is None else min(context, w)) for b, w in kv_layers(model, dtype_bytes))


def kv_slope_bytes(model: str, context: float, dtype_bytes: int = 2) -> int:
    """What one more token of context adds to a decode step's KV reads at ``context`` (layers still within their window)."""
    return sum(b for b, w in kv_layers(model, dtype_bytes) if w is None or context < w)


@functools.lru_cache(maxsize=64)
def decode_weight_params(model: str) -> int:
    """Parameters one decode step reads at least once (see the module docstring for what counts)."""
    raw = M.raw_config(model)
    name = M.title(model)
    q = raw.get("quantization_config") or raw.get("text_config", {}).get("quantization_config")
    if q:
        raise RooflineUnsupported(f"{name}: quantized weights ({q.get('quant_method', '?')}) are not modelled by the decode roofline (bytes per weight depend on the packing)")
    arch = _arch(model)
    counts = M.component_counts(model)
    params = int(counts["total"]) - int(counts["vision"]) - (0 if arch.tie_word_embeddings else int(counts["embeddings"]))
    experts = int(counts["experts"])
    if experts:
        if arch.moe is None:
            raise RooflineUnsupported(f"{name}: expert weights but no expert count / num_experts_per_tok in the config")
        params -= experts - experts * arch.moe.top_k // arch.moe.num_experts
    return params


def decode_floor(model: str, gpu_name: str, batch: float, context: float, dtype_bytes: int = 2, bandwidth: float | None = None) -> dict:
    """Lower bound on one decode step: the weights it reads once plus ``batch`` sequences' KV at ``context`` tokens,
    at the GPU's datasheet HBM bandwidth (or ``bandwidth``, bytes/s)."""
    weight_bytes = decode_weight_params(model) * dtype_bytes
    step_bytes = weight_bytes + batch * kv_bytes_read(model, context, dtype_bytes)
    bw = bandwidth if bandwidth is not None else hbm_bandwidth(gpu_name)
    return {"weight_bytes": weight_bytes, "step_bytes": step_bytes, "bandwidth": bw, "itl_floor_ms": step_bytes / bw * 1e3, "tokens_per_s_bound": batch * bw / step_bytes}


def kv_formula(model: str, dtype_bytes: int = 2) -> str:
    """How :func:`kv_bytes_per_token` is made up, in words (e.g. ``2 × 32 layers × 32 heads × 128 dims × 2 bytes``)."""
    layers = kv_layers(model, dtype_bytes)
    arch = _arch(model)
    n = len(layers)
    if arch.mla:
        return f"{n} layers × ({arch.mla.kv_lora_rank} latent + {arch.mla.qk_rope_head_dim} rope dims) × {dtype_bytes} bytes, MLA's compressed cache"
    out = f"2 × {n} layers × {arch.num_kv_heads} heads × {arch.head_dim} dims × {dtype_bytes} bytes"
    windows = sorted({w for _, w in layers if w is not None})
    sliding = sum(1 for _, w in layers if w is not None)
    return out + (f"; {sliding} of the layers keep only a {', '.join(f'{w:,}' for w in windows)}-token window" if sliding else "")
