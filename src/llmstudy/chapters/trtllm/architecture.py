"""What the TensorRT-LLM plans read from a model's config.json, checked before any work, and what they do not model.

Both workflows read the language model's config (``text_config`` of a multimodal config). The plan's only memory
arithmetic, the old workflow's KV cache per token (2 x layers x KV heads x head size x bytes), holds for standard
attention in every layer (dense or MoE, MHA or GQA); for MLA (DeepSeek-V2/V3: one latent of ``kv_lora_rank`` +
``qk_rope_head_dim`` per layer) and for sliding-window or hybrid layers (Gemma-2/3, gpt-oss, Mistral-7B-v0.1, linear
attention) the value is refused with what is not modelled, never given as a number.
"""

from __future__ import annotations

from llmstudy.core import models as M

REQUIRED = ("num_hidden_layers", "hidden_size", "num_attention_heads", "num_key_value_heads", "vocab_size")
EXPERT_FIELDS = ("num_local_experts", "num_experts", "n_routed_experts")  # Mixtral/gpt-oss, Qwen-MoE, DeepSeek


class ConfigError(ValueError):
    """A config.json field the plan needs is missing or impossible; the message names it."""


class NotModelled(ValueError):
    """The plan cannot compute this exactly for the architecture; the message says what is not modelled."""


def config_problem(c: dict) -> str | None:
    """The first problem of a config the plans would trip over (a missing or non-positive field, KV heads that do not
    divide the heads), or None. No default fills a gap: a missing field is named."""
    for f in REQUIRED:
        if c.get(f) is None:
            return f"config.json has no {f!r} (the plan does not guess it)"
    for f in REQUIRED + ("head_dim", "max_position_embeddings"):
        v = c.get(f)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v <= 0):
            return f"config.json {f}={v!r}: must be a positive integer"
    heads, kv = c["num_attention_heads"], c["num_key_value_heads"]
    if heads % kv:
        return f"config.json num_attention_heads={heads} is not a multiple of num_key_value_heads={kv}"
    return None


def config_dict(model: str) -> dict:
    """The language model's raw config.json values (``text_config`` of multimodal configs), checked (:class:`ConfigError`)."""
    raw = M.raw_config(model)
    c = {**raw, **raw["text_config"]} if isinstance(raw.get("text_config"), dict) else raw
    problem = config_problem(c)
    if problem:
        raise ConfigError(f"{model}: {problem}")
    return c


def model_problem(model: str) -> str | None:
    """For parameter validation: why ``model`` cannot be planned (unknown name or a bad config), or None."""
    try:
        config_dict(model)
    except (M.UnknownModelError, ConfigError) as e:
        return str(e)
    return None


def experts(c: dict) -> tuple[int, str]:
    """Routed experts per MoE layer and the field that says so (0, '' for a dense model), under every naming."""
    for f in EXPERT_FIELDS:
        if c.get(f):
            return int(c[f]), f
    return 0, ""


def not_modelled(c: dict) -> str | None:
    """Why standard-attention KV arithmetic does not hold for this config (None when it does)."""
    if c.get("kv_lora_rank"):
        return (f"MLA attention (kv_lora_rank {c['kv_lora_rank']}): the KV cache holds one compressed latent per layer, not "
                f"{c.get('num_key_value_heads') or c['num_attention_heads']} KV heads; TensorRT-LLM's MLA cache is not modelled here")
    for f in ("layers_block_type", "hybrid_override_pattern", "attn_layer_period"):
        if c.get(f):
            return f"hybrid layers ({f} {c[f]!r}: state-space or other non-attention layers): their state is not modelled here"
    if c.get("attention_chunk_size"):
        return f"chunked local attention (attention_chunk_size {c['attention_chunk_size']}): the chunk-bounded cache of those layers is not modelled here"
    kinds = sorted({str(t) for t in c.get("layer_types") or []} - {"full_attention"})
    if kinds:
        return f"layer types {kinds} (sliding-window, chunked or linear-attention layers): their per-layer cache limits are not modelled here"
    if c.get("sliding_window") and c.get("use_sliding_window", True) is not False:
        return f"sliding-window attention (sliding_window {c['sliding_window']}): the window-bounded cache is not modelled here"
    return None


def kv_bytes_per_token(c: dict, element_bytes: int) -> int:
    """KV cache bytes per token over all layers (standard attention only; :class:`NotModelled` otherwise)."""
    why = not_modelled(c)
    if why:
        raise NotModelled(f"KV cache per token: {why}")
    kv = c.get("num_key_value_heads") or c["num_attention_heads"]
    head_dim = c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"]
    return 2 * c["num_hidden_layers"] * kv * head_dim * element_bytes


def kv_cache_rows(c: dict, element_bytes: int, batch: int, seq_len: int) -> list[tuple]:
    """The derived-settings rows of the KV cache: exact numbers, or 'not modelled: …' in their place."""
    rule = f"2 x layers x kv_heads x head_dim x {element_bytes} B"
    try:
        per = kv_bytes_per_token(c, element_bytes)
    except NotModelled as e:
        text = f"not modelled: {str(e).removeprefix('KV cache per token: ')}"
        return [("KV cache per token", text, rule), ("KV cache, max_batch_size x max_seq_len", text, "upper bound")]
    return [("KV cache per token", f"{per / 1024:,.0f} KiB", rule),
            ("KV cache, max_batch_size x max_seq_len", f"{per * batch * seq_len / 2**30:,.1f} GiB", "upper bound")]
