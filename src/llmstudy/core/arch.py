"""What a Hugging Face ``config.json`` says about a model's architecture: validation and a per-layer description.

Pure Python, standard library only (so it can run in a browser through Pyodide); no transformers, no torch.

API (stable; the KV planner, the memory model and the TensorRT-LLM plan read it):

* :func:`validate(raw)` raises :class:`ConfigError` (a ``ValueError``) with a one-line message naming the field
  when a raw config dict cannot be modelled exactly: a required field missing (transformers would silently fill in
  its own default), a dimension that is not a positive integer, heads not divisible by KV heads, an expert count
  or top-k out of range, an MLA field missing, a layer pattern of the wrong length or of an unknown kind.
* :func:`describe(raw)` validates and returns an :class:`Arch`: the language model's dimensions (``text_config``
  for multimodal configs), its families, the MoE and MLA settings, and ``layers``: one :class:`LayerSpec` per
  decoder layer saying how that layer attends (``full`` / ``sliding`` / ``chunked`` / ``mla``), over which window,
  with how many KV heads of which dimensions, and whether its MLP is dense or mixture-of-experts.

KV cache per token and layer, in elements (multiply by the cache dtype's bytes):

* ``full`` / ``sliding`` / ``chunked``: ``kv_heads * (head_dim + v_head_dim)`` (K and V), sharded over tensor
  parallel ranks by KV head. A sliding or chunked layer never holds more than ``window`` tokens.
* ``mla``: one latent of ``kv_lora_rank + qk_rope_head_dim`` per token (vLLM's MLA backends store it once, not as
  K and V, and every tensor-parallel rank holds the whole latent): :attr:`LayerSpec.kv_per_token`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ATTENTION_KINDS = ("full", "sliding", "chunked", "mla")
EXPERT_COUNT_FIELDS = ("num_local_experts", "num_experts", "n_routed_experts")

# model_type -> the field transformers reads for the routed-expert count (a MoE family must state it: the
# config classes default to 8, 60, 64 or 128 experts when the field is missing).
MOE_FAMILIES = {
    "mixtral": "num_local_experts",
    "gpt_oss": "num_local_experts",
    "llama4_text": "num_local_experts",
    "qwen2_moe": "num_experts",
    "qwen3_moe": "num_experts",
    "deepseek_v2": "n_routed_experts",
    "deepseek_v3": "n_routed_experts",
}
MLA_FAMILIES = ("deepseek_v2", "deepseek_v3")
# Families whose config class treats a missing ``num_key_value_heads`` as multi-head attention: the LLaMA-1
# conversions (llama-7b/13b/33b/65b) were published without the field. Every other family must state it.
KV_HEADS_OPTIONAL = ("llama",)
# Families whose ``head_dim`` is not hidden_size / num_attention_heads by default (transformers fills in its own
# constant when the field is missing, e.g. Qwen3's 128 or Gemma's 256): the config must state it.
HEAD_DIM_REQUIRED = ("qwen3", "qwen3_moe", "gemma", "gemma2", "gemma3_text", "gpt_oss", "llama4_text")
# Families with a sliding-window pattern of their own when ``layer_types`` is absent.
SLIDING_FAMILIES = ("gemma2", "gemma3_text", "gpt_oss", "mistral", "qwen2", "qwen3", "qwen2_moe", "qwen3_moe", "llama4_text")
# The text model's type when a multimodal ``text_config`` does not state it.
TEXT_MODEL_TYPES = {"gemma3": "gemma3_text", "llama4": "llama4_text", "mistral3": "mistral", "qwen2_5_vl": "qwen2"}
LAYER_TYPE_KINDS = {"full_attention": "full", "sliding_attention": "sliding", "chunked_attention": "chunked"}


class ConfigError(ValueError):
    """A model config cannot be modelled exactly; the one-line message names the field."""


@dataclass(frozen=True)
class MLA:
    """Multi-head latent attention (DeepSeek-V2/V3)."""

    q_lora_rank: int | None  # None: queries through a plain q_proj
    kv_lora_rank: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int

    @property
    def latent(self) -> int:
        """Elements cached per token and layer: the compressed KV latent plus the decoupled RoPE key."""
        return self.kv_lora_rank + self.qk_rope_head_dim


@dataclass(frozen=True)
class MoE:
    num_experts: int  # routed experts per MoE layer
    top_k: int  # experts each token is routed to
    expert_intermediate_size: int  # width of one routed expert's MLP
    count_field: str  # which config field gave num_experts (num_local_experts / num_experts / n_routed_experts)
    shared_experts: int = 0  # always-active experts (DeepSeek n_shared_experts; Qwen2-MoE's one shared expert)
    shared_intermediate_size: int = 0  # total width of the shared expert MLP(s)


@dataclass(frozen=True)
class LayerSpec:
    index: int
    attention: str  # one of ATTENTION_KINDS
    window: int | None  # tokens a sliding / chunked layer attends to (None: full context)
    kv_heads: int  # KV heads (MLA: 1, the latent)
    head_dim: int  # key head dimension (MLA: kv_lora_rank + qk_rope_head_dim)
    v_head_dim: int  # value head dimension (MLA: 0, the latent holds both)
    mlp: str  # "dense" or "moe"
    rope: bool = True  # False for Llama 4's NoPE layers

    @property
    def kv_per_token(self) -> int:
        """KV-cache elements per token for this layer (all ranks together for standard attention)."""
        return self.kv_heads * (self.head_dim + self.v_head_dim)


@dataclass(frozen=True)
class Arch:
    model_type: str  # of the language model (text_config's for multimodal configs)
    architecture: str  # architectures[0] of the top-level config
    multimodal: bool  # the language model is a config's text_config
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int  # as the config states it (MLA layers cache one latent instead: see LayerSpec)
    head_dim: int  # query/key head dimension (MLA: qk_nope_head_dim + qk_rope_head_dim)
    vocab_size: int
    intermediate_size: int
    tie_word_embeddings: bool
    layers: tuple[LayerSpec, ...]
    moe: MoE | None = None
    mla: MLA | None = None
    notes: tuple[str, ...] = field(default=())  # assumptions the description made, in words

    @property
    def families(self) -> tuple[str, ...]:
        """Architecture families, e.g. ("gqa", "moe", "hybrid", "multimodal")."""
        out = []
        if self.mla:
            out.append("mla")
        elif self.num_kv_heads == self.num_heads:
            out.append("mha")
        elif self.num_kv_heads == 1:
            out.append("mqa")
        else:
            out.append("gqa")
        out.append("moe" if self.moe else "dense")
        kinds = {layer.attention for layer in self.layers}
        if kinds & {"sliding", "chunked"}:
            out.append("hybrid" if "full" in kinds else "sliding")
        if self.multimodal:
            out.append("multimodal")
        return tuple(out)

    @property
    def moe_layers(self) -> tuple[int, ...]:
        return tuple(layer.index for layer in self.layers if layer.mlp == "moe")

    def kv_per_token(self) -> int:
        """KV-cache elements per token over all layers, ignoring windows (a sliding layer's cap is ``window``)."""
        return sum(layer.kv_per_token for layer in self.layers)


# --- validation ---------------------------------------------------------------------------------------------


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def text_part(raw: dict) -> tuple[dict, str, bool]:
    """(the language model's config dict, its model_type, whether it is a multimodal config's text_config)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"a config must be a JSON object, got {type(raw).__name__}")
    top_type = raw.get("model_type")
    if not isinstance(top_type, str) or not top_type:
        raise ConfigError("field 'model_type' is missing: transformers cannot tell which architecture this is")
    text = raw.get("text_config")
    if text is None:
        return raw, top_type, False
    if not isinstance(text, dict):
        raise ConfigError(f"field 'text_config' must be an object, got {type(text).__name__}")
    mt = text.get("model_type") or TEXT_MODEL_TYPES.get(top_type)
    if not mt:
        raise ConfigError(f"field 'text_config.model_type' is missing and {top_type!r} has no known text model type")
    return text, mt, True


def validate(raw: dict) -> None:
    """Raise :class:`ConfigError` naming the first field that stops an exact description; None when fine."""
    describe(raw)


def _need_int(t: dict, name: str, prefix: str, why: str = "", minimum: int = 1) -> int:
    if name not in t or t[name] is None:
        raise ConfigError(f"field '{prefix}{name}' is missing{': ' + why if why else ''}")
    v = t[name]
    if not _is_int(v) or v < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ConfigError(f"field '{prefix}{name}' must be {kind}, got {v!r}")
    return v


def _opt_int(t: dict, name: str, prefix: str, minimum: int = 1) -> int | None:
    if t.get(name) is None:
        return None
    return _need_int(t, name, prefix, minimum=minimum)


def describe(raw: dict) -> Arch:
    """Validate a raw config dict and describe its language model layer by layer (see the module docstring)."""
    t, mt, multimodal = text_part(raw)
    p = "text_config." if multimodal else ""
    arch_name = (raw.get("architectures") or ["?"])[0]
    notes: list[str] = []

    hidden = _need_int(t, "hidden_size", p)
    layers_n = _need_int(t, "num_hidden_layers", p)
    heads = _need_int(t, "num_attention_heads", p)
    vocab = _need_int(t, "vocab_size", p)
    inter = _need_int(t, "intermediate_size", p)

    # attention heads and dimensions
    is_mla = mt in MLA_FAMILIES or t.get("kv_lora_rank") is not None
    mla = None
    if is_mla:
        if "q_lora_rank" not in t:
            raise ConfigError(f"field '{p}q_lora_rank' is missing: MLA configs must state it (null for a plain q_proj); "
                              "transformers would fill in 1536")
        mla = MLA(
            q_lora_rank=_opt_int(t, "q_lora_rank", p),
            kv_lora_rank=_need_int(t, "kv_lora_rank", p, "MLA caches one latent of kv_lora_rank + qk_rope_head_dim"),
            qk_nope_head_dim=_need_int(t, "qk_nope_head_dim", p, "MLA query/key head dimension without RoPE"),
            qk_rope_head_dim=_need_int(t, "qk_rope_head_dim", p, "MLA decoupled RoPE key dimension"),
            v_head_dim=_need_int(t, "v_head_dim", p, "MLA value head dimension"),
        )
    kv = _opt_int(t, "num_key_value_heads", p)
    if kv is None:
        if mt in KV_HEADS_OPTIONAL or is_mla:
            kv = heads
            if not is_mla:
                notes.append("num_key_value_heads absent: multi-head attention (LLaMA-1 convention)")
        else:
            raise ConfigError(f"field '{p}num_key_value_heads' is missing: {mt} configs must state it "
                              "(transformers would fill in its own default)")
    if heads % kv:
        raise ConfigError(f"field '{p}num_key_value_heads' = {kv} does not divide num_attention_heads = {heads}")
    head_dim = _opt_int(t, "head_dim", p)
    if mla is not None:  # the query/key head: no-RoPE part + decoupled RoPE part (a config's own head_dim is unused)
        head_dim = mla.qk_nope_head_dim + mla.qk_rope_head_dim
    if head_dim is None:
        if mt in HEAD_DIM_REQUIRED:
            raise ConfigError(f"field '{p}head_dim' is missing: {mt} configs must state it "
                              "(transformers would fill in its own constant, not hidden_size / num_attention_heads)")
        if hidden % heads:
            raise ConfigError(f"field '{p}head_dim' is missing and hidden_size = {hidden} is not divisible by "
                              f"num_attention_heads = {heads}")
        head_dim = hidden // heads

    # mixture of experts
    counts = {f: t[f] for f in EXPERT_COUNT_FIELDS if t.get(f) is not None}
    for f, v in counts.items():
        if not _is_int(v) or v < 0:
            raise ConfigError(f"field '{p}{f}' must be a non-negative integer, got {v!r}")
    if mt in MOE_FAMILIES and MOE_FAMILIES[mt] not in counts:
        raise ConfigError(f"field '{p}{MOE_FAMILIES[mt]}' is missing: {mt} is a mixture-of-experts family "
                          "(transformers would fill in its own expert count)")
    if len(set(counts.values())) > 1:
        raise ConfigError(f"expert counts disagree: {', '.join(f'{p}{k}={v}' for k, v in counts.items())}")
    moe = None
    n_exp = next(iter(counts.values()), 0)
    if n_exp:
        count_field = MOE_FAMILIES.get(mt) if MOE_FAMILIES.get(mt) in counts else next(iter(counts))
        top_k = _need_int(t, "num_experts_per_tok", p, "a mixture-of-experts config must state its top-k")
        if top_k > n_exp:
            raise ConfigError(f"field '{p}num_experts_per_tok' = {top_k} exceeds the {n_exp} experts ({p}{count_field})")
        if mt in ("qwen2_moe", "qwen3_moe", "deepseek_v2", "deepseek_v3"):
            width = _need_int(t, "moe_intermediate_size", p, "the routed experts' MLP width")
        else:
            width = _opt_int(t, "moe_intermediate_size", p) or inter
        shared = _opt_int(t, "n_shared_experts", p, minimum=0) or 0
        shared_width = shared * width
        if mt == "qwen2_moe":
            shared_width = _need_int(t, "shared_expert_intermediate_size", p, "Qwen2-MoE's shared expert width")
            shared = 1
        moe = MoE(num_experts=n_exp, top_k=top_k, expert_intermediate_size=width, count_field=count_field,
                  shared_experts=shared, shared_intermediate_size=shared_width)
    moe_flags = _moe_layers(t, mt, p, layers_n, moe is not None)

    # attention kind per layer
    kinds, window = _attention_kinds(t, mt, p, layers_n, is_mla)
    rope = _rope_layers(t, mt, p, layers_n)

    specs = []
    for i in range(layers_n):
        if is_mla:
            spec = LayerSpec(i, "mla", None, 1, mla.latent, 0, "moe" if moe_flags[i] else "dense", rope[i])
        else:
            w = window if kinds[i] != "full" else None
            spec = LayerSpec(i, kinds[i], w, kv, head_dim, head_dim, "moe" if moe_flags[i] else "dense", rope[i])
        specs.append(spec)
    tie = raw.get("tie_word_embeddings", t.get("tie_word_embeddings"))
    return Arch(model_type=mt, architecture=arch_name, multimodal=multimodal, hidden_size=hidden, num_layers=layers_n,
                num_heads=heads, num_kv_heads=kv, head_dim=head_dim, vocab_size=vocab, intermediate_size=inter,
                tie_word_embeddings=bool(tie) if tie is not None else mt.startswith("gemma"), layers=tuple(specs),
                moe=moe, mla=mla, notes=tuple(notes))


def _int_list(t: dict, name: str, p: str, layers_n: int) -> list[int]:
    v = t.get(name)
    if not isinstance(v, list) or not all(_is_int(x) and 0 <= x < layers_n for x in v):
        raise ConfigError(f"field '{p}{name}' must be a list of layer indices in [0, {layers_n}), got {v!r}")
    return v


def _moe_layers(t: dict, mt: str, p: str, layers_n: int, moe: bool) -> list[bool]:
    """Which layers have a mixture-of-experts MLP, as each family's transformers code decides."""
    if not moe:
        return [False] * layers_n
    if mt in ("qwen2_moe", "qwen3_moe"):
        step = _opt_int(t, "decoder_sparse_step", p) or 1
        dense = set(_int_list(t, "mlp_only_layers", p, layers_n)) if t.get("mlp_only_layers") else set()
        return [i not in dense and (i + 1) % step == 0 for i in range(layers_n)]
    if mt in MLA_FAMILIES or "first_k_dense_replace" in t or "moe_layer_freq" in t:
        first = _opt_int(t, "first_k_dense_replace", p, minimum=0) or 0
        if first > layers_n:
            raise ConfigError(f"field '{p}first_k_dense_replace' = {first} exceeds num_hidden_layers = {layers_n}")
        freq = _opt_int(t, "moe_layer_freq", p) or 1
        return [i >= first and i % freq == 0 for i in range(layers_n)]
    if t.get("moe_layers") is not None:
        chosen = set(_int_list(t, "moe_layers", p, layers_n))
        return [i in chosen for i in range(layers_n)]
    if mt == "llama4_text":
        step = _opt_int(t, "interleave_moe_layer_step", p) or 1
        return [(i + 1) % step == 0 for i in range(layers_n)]
    for name in ("decoder_sparse_step", "mlp_only_layers", "interleave_moe_layer_step"):
        if t.get(name) not in (None, 1, []):
            raise ConfigError(f"field '{p}{name}' is set but {mt} is not a family whose MoE layer pattern is modelled")
    return [True] * layers_n


def _attention_kinds(t: dict, mt: str, p: str, layers_n: int, is_mla: bool) -> tuple[list[str], int | None]:
    """Per-layer attention kind and the window of the windowed layers, as each family's transformers code decides."""
    sw = t.get("sliding_window")
    if sw is not None and (not _is_int(sw) or sw <= 0):
        raise ConfigError(f"field '{p}sliding_window' must be a positive integer or null, got {sw!r}")
    lt = t.get("layer_types")
    if lt is not None:
        if not isinstance(lt, list) or len(lt) != layers_n:
            got = len(lt) if isinstance(lt, list) else type(lt).__name__
            raise ConfigError(f"field '{p}layer_types' must list {layers_n} layers (num_hidden_layers), got {got}")
        bad = sorted({x for x in lt if x not in LAYER_TYPE_KINDS})
        if bad:
            raise ConfigError(f"field '{p}layer_types' has layer kinds that are not modelled: {bad} "
                              f"(modelled: {sorted(LAYER_TYPE_KINDS)})")
        kinds = [LAYER_TYPE_KINDS[x] for x in lt]
    elif is_mla:
        return ["mla"] * layers_n, None
    elif mt == "gemma2":
        kinds = ["sliding" if (i + 1) % 2 else "full" for i in range(layers_n)]
    elif mt == "gemma3_text":
        pattern = _opt_int(t, "sliding_window_pattern", p) or _opt_int(t, "_sliding_window_pattern", p) or 6
        kinds = ["sliding" if (i + 1) % pattern else "full" for i in range(layers_n)]
    elif mt == "gpt_oss":
        kinds = ["sliding" if (i + 1) % 2 else "full" for i in range(layers_n)]
    elif mt == "llama4_text":
        kinds = ["chunked" if r else "full" for r in _rope_layers(t, mt, p, layers_n)]
    elif mt in ("qwen2", "qwen3", "qwen2_moe", "qwen3_moe"):
        if t.get("use_sliding_window") and sw is not None:
            first = _opt_int(t, "max_window_layers", p, minimum=0)
            if first is None:
                raise ConfigError(f"field '{p}max_window_layers' is missing: use_sliding_window is true")
            kinds = ["sliding" if i >= first else "full" for i in range(layers_n)]
        else:
            kinds = ["full"] * layers_n
    elif mt in ("mistral", "mixtral"):
        kinds = ["sliding" if sw is not None else "full"] * layers_n
    elif sw is not None:
        raise ConfigError(f"field '{p}sliding_window' = {sw} is set but which layers of a {mt} model slide is not "
                          "modelled: add 'layer_types' to the config")
    else:
        kinds = ["full"] * layers_n
    window = None
    if "chunked" in kinds:
        window = _need_int(t, "attention_chunk_size", p, "chunked attention layers need their chunk size")
    if "sliding" in kinds:
        if sw is None:
            raise ConfigError(f"field '{p}sliding_window' is missing: the config has sliding-window layers")
        window = sw
    if "sliding" in kinds and "chunked" in kinds:
        raise ConfigError(f"field '{p}layer_types' mixes sliding and chunked layers, which is not modelled")
    return kinds, window


def _rope_layers(t: dict, mt: str, p: str, layers_n: int) -> list[bool]:
    """Whether each layer applies RoPE (Llama 4's ``no_rope_layers``: 1 = RoPE, 0 = NoPE)."""
    if mt != "llama4_text":
        return [True] * layers_n
    flags = t.get("no_rope_layers")
    if flags:
        if not isinstance(flags, list) or len(flags) != layers_n or any(x not in (0, 1) for x in flags):
            raise ConfigError(f"field '{p}no_rope_layers' must list {layers_n} flags of 0/1")
        return [bool(x) for x in flags]
    interval = _opt_int(t, "no_rope_layer_interval", p) or 4
    return [(i + 1) % interval != 0 for i in range(layers_n)]
