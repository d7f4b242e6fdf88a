"""Every parameter tensor of a model, from its ``config.json`` alone: names, sizes, and how LoRA / bitsandbytes /
vLLM see each one. Standard library only (it runs in the reader's browser through Pyodide).

For each supported family the module lists the tensors transformers creates, in the order ``named_parameters``
yields them (tied output heads omitted, as transformers does), with the same names. ``tests/calc/test_tensors.py``
proves the table equal, row for row, to the one read from the real transformers model built on the meta device,
for every config the repository ships.

A row is a dict with the keys of :func:`llmstudy.core.models.parameter_table`: ``name``, ``numel``, ``component``,
``linear`` (an ``nn.Linear`` weight other than the output head), ``in_features``, ``out_features``, ``experts`` (a
fused 3-D expert tensor), ``num_experts``, ``leaf`` (short module / parameter name) and ``vision``.

A family this module does not list raises :class:`NotModelledFamily`; the Python library then falls back to the
meta-device model (transformers installed), the browser shows the message.
"""

from __future__ import annotations

from llmstudy.core import arch as A

# Order matters: the first matching rule names the component.
COMPONENT_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
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
VISION_NEEDLES = ("vision", "multi_modal_projector")
# Language-model families (text model_type) and multimodal wrappers (top-level model_type) listed here.
TEXT_FAMILIES = ("llama", "mistral", "mixtral", "qwen3", "qwen3_moe", "gemma2", "gemma3_text", "gpt_oss", "deepseek_v2",
                 "llama4_text")
MULTIMODAL_FAMILIES = {"gemma3": "gemma3_text", "llama4": "llama4_text"}

# Vision-tower defaults of the transformers config classes (SiglipVisionConfig, Llama4VisionConfig), used where a
# config leaves a field out; tests compare them with the classes.
SIGLIP_DEFAULTS = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_channels": 3,
                   "image_size": 224, "patch_size": 16, "vision_use_head": True}
LLAMA4_VISION_DEFAULTS = {"hidden_size": 768, "intermediate_size": 5632, "num_hidden_layers": 34, "num_channels": 3,
                          "image_size": 448, "patch_size": 14, "vision_output_dim": 7680, "projector_input_dim": 4096,
                          "projector_output_dim": 4096}


class NotModelledFamily(A.ConfigError):
    """The config's family is not one whose tensors this module lists."""


def component_of(name: str) -> str:
    """Which component a parameter belongs to, from its qualified name."""
    for component, needles in COMPONENT_RULES:
        if any(n in name for n in needles):
            return component
    return "other"


class _Table:
    def __init__(self):
        self.rows: list[dict] = []

    def _add(self, name, numel, linear=False, in_f=0, out_f=0, experts=False, n_exp=0, leaf=None):
        module, _, pname = name.rpartition(".")
        if leaf is None:
            leaf = module.rsplit(".", 1)[-1] if pname in ("weight", "bias") else pname
        self.rows.append({"name": name, "numel": int(numel), "component": component_of(name), "linear": linear,
                          "in_features": in_f, "out_features": out_f, "experts": experts, "num_experts": n_exp,
                          "leaf": leaf, "vision": any(n in name for n in VISION_NEEDLES)})

    def param(self, name: str, numel: int):
        """A parameter that is not an ``nn.Linear`` weight (embedding, norm, bias, conv, sinks...)."""
        self._add(name, numel)

    def linear(self, module: str, in_f: int, out_f: int, bias: bool = False):
        self._add(f"{module}.weight", in_f * out_f, True, in_f, out_f)
        if bias:
            self._add(f"{module}.bias", out_f)

    def experts(self, name: str, n: int, a: int, b: int):
        """A fused 3-D expert tensor of shape (n, a, b) (peft reads it as n experts of a -> b)."""
        self._add(name, n * a * b, experts=True, in_f=a, out_f=b, n_exp=n, leaf=name.rsplit(".", 1)[-1])


def _flag(t: dict, name: str, default: bool = False) -> bool:
    v = t.get(name)
    return default if v is None else bool(v)


def _language_model(tb: _Table, raw: dict, a: A.Arch, t: dict, base: str, head: str | None):
    """The decoder: embeddings, layers, final norm and (untied) output head under ``base``."""
    mt = a.model_type
    h, heads, kvh, d, vocab = a.hidden_size, a.num_heads, a.num_kv_heads, a.head_dim, a.vocab_size
    attn_bias = _flag(t, "attention_bias", mt == "gpt_oss") and mt not in ("mistral", "mixtral")
    mlp_bias = _flag(t, "mlp_bias") and mt == "llama"
    tb.param(f"{base}.embed_tokens.weight", vocab * h)
    for spec in a.layers:
        p = f"{base}.layers.{spec.index}"
        at = f"{p}.self_attn"
        if mt == "gpt_oss":
            tb.param(f"{at}.sinks", heads)
        if a.mla:
            m = a.mla
            if m.q_lora_rank is None:
                tb.linear(f"{at}.q_proj", h, heads * d)
            else:
                tb.linear(f"{at}.q_a_proj", h, m.q_lora_rank, attn_bias)
                tb.param(f"{at}.q_a_layernorm.weight", m.q_lora_rank)
                tb.linear(f"{at}.q_b_proj", m.q_lora_rank, heads * d)
            tb.linear(f"{at}.kv_a_proj_with_mqa", h, m.kv_lora_rank + m.qk_rope_head_dim, attn_bias)
            tb.param(f"{at}.kv_a_layernorm.weight", m.kv_lora_rank)
            tb.linear(f"{at}.kv_b_proj", m.kv_lora_rank, heads * (m.qk_nope_head_dim + m.v_head_dim))
            tb.linear(f"{at}.o_proj", heads * m.v_head_dim, h, attn_bias)
        else:
            tb.linear(f"{at}.q_proj", h, heads * d, attn_bias)
            tb.linear(f"{at}.k_proj", h, kvh * d, attn_bias)
            tb.linear(f"{at}.v_proj", h, kvh * d, attn_bias)
            tb.linear(f"{at}.o_proj", heads * d, h, attn_bias)
            if mt in ("qwen3", "qwen3_moe", "gemma3_text"):
                tb.param(f"{at}.q_norm.weight", d)
                tb.param(f"{at}.k_norm.weight", d)
        ff = f"{p}.feed_forward" if mt == "llama4_text" else f"{p}.mlp"
        if spec.mlp == "moe":
            moe = a.moe
            e, i = moe.num_experts, moe.expert_intermediate_size
            if mt == "mixtral":
                tb.param(f"{ff}.gate.weight", e * h)
                tb.experts(f"{ff}.experts.gate_up_proj", e, 2 * i, h)
                tb.experts(f"{ff}.experts.down_proj", e, h, i)
            elif mt in ("qwen3_moe", "deepseek_v2"):
                tb.experts(f"{ff}.experts.gate_up_proj", e, 2 * i, h)
                tb.experts(f"{ff}.experts.down_proj", e, h, i)
                tb.param(f"{ff}.gate.weight", e * h)
                if mt == "deepseek_v2":
                    s = moe.shared_intermediate_size
                    tb.linear(f"{ff}.shared_experts.gate_proj", h, s, mlp_bias)
                    tb.linear(f"{ff}.shared_experts.up_proj", h, s, mlp_bias)
                    tb.linear(f"{ff}.shared_experts.down_proj", s, h, mlp_bias)
            elif mt == "gpt_oss":
                tb.param(f"{ff}.router.weight", e * h)
                tb.param(f"{ff}.router.bias", e)
                tb.experts(f"{ff}.experts.gate_up_proj", e, h, 2 * i)
                tb.param(f"{ff}.experts.gate_up_proj_bias", e * 2 * i)
                tb.experts(f"{ff}.experts.down_proj", e, i, h)
                tb.param(f"{ff}.experts.down_proj_bias", e * h)
            elif mt == "llama4_text":
                tb.experts(f"{ff}.experts.gate_up_proj", e, h, 2 * i)
                tb.experts(f"{ff}.experts.down_proj", e, i, h)
                tb.linear(f"{ff}.router", h, e)
                tb.linear(f"{ff}.shared_expert.gate_proj", h, i)
                tb.linear(f"{ff}.shared_expert.up_proj", h, i)
                tb.linear(f"{ff}.shared_expert.down_proj", i, h)
            else:  # pragma: no cover - TEXT_FAMILIES guards
                raise NotModelledFamily(f"the mixture-of-experts tensors of {mt} are not listed")
        else:
            inter = (t.get("intermediate_size_mlp") or a.intermediate_size) if mt == "llama4_text" else a.intermediate_size
            tb.linear(f"{ff}.gate_proj", h, inter, mlp_bias)
            tb.linear(f"{ff}.up_proj", h, inter, mlp_bias)
            tb.linear(f"{ff}.down_proj", inter, h, mlp_bias)
        tb.param(f"{p}.input_layernorm.weight", h)
        tb.param(f"{p}.post_attention_layernorm.weight", h)
        if mt in ("gemma2", "gemma3_text"):
            tb.param(f"{p}.pre_feedforward_layernorm.weight", h)
            tb.param(f"{p}.post_feedforward_layernorm.weight", h)
    tb.param(f"{base}.norm.weight", h)
    if head and not a.tie_word_embeddings:
        tb.param(head, vocab * h)


def _vision_cfg(raw: dict, defaults: dict) -> dict:
    v = raw.get("vision_config") or {}
    if not isinstance(v, dict):
        raise A.ConfigError(f"field 'vision_config' must be an object, got {type(v).__name__}")
    out = {}
    for k, default in defaults.items():
        val = v.get(k, default)
        if val is None:
            val = default
        if k != "vision_use_head" and (not isinstance(val, int) or isinstance(val, bool) or val <= 0):
            raise A.ConfigError(f"field 'vision_config.{k}' must be a positive integer, got {val!r}")
        out[k] = val
    return out


def _siglip(tb: _Table, raw: dict, text_hidden: int):
    v = _vision_cfg(raw, SIGLIP_DEFAULTS)
    h, i, c, p = v["hidden_size"], v["intermediate_size"], v["num_channels"], v["patch_size"]
    vt = "model.vision_tower"
    tb.param(f"{vt}.embeddings.patch_embedding.weight", h * c * p * p)
    tb.param(f"{vt}.embeddings.patch_embedding.bias", h)
    tb.param(f"{vt}.embeddings.position_embedding.weight", (v["image_size"] // p) ** 2 * h)
    for n in range(v["num_hidden_layers"]):
        ly = f"{vt}.encoder.layers.{n}"
        tb.param(f"{ly}.layer_norm1.weight", h)
        tb.param(f"{ly}.layer_norm1.bias", h)
        for proj in ("k_proj", "v_proj", "q_proj", "out_proj"):
            tb.linear(f"{ly}.self_attn.{proj}", h, h, True)
        tb.param(f"{ly}.layer_norm2.weight", h)
        tb.param(f"{ly}.layer_norm2.bias", h)
        tb.linear(f"{ly}.mlp.fc1", h, i, True)
        tb.linear(f"{ly}.mlp.fc2", i, h, True)
    tb.param(f"{vt}.post_layernorm.weight", h)
    tb.param(f"{vt}.post_layernorm.bias", h)
    if v["vision_use_head"]:
        tb.param(f"{vt}.head.probe", h)
        tb.param(f"{vt}.head.attention.in_proj_weight", 3 * h * h)
        tb.param(f"{vt}.head.attention.in_proj_bias", 3 * h)
        tb.linear(f"{vt}.head.attention.out_proj", h, h, True)
        tb.param(f"{vt}.head.layernorm.weight", h)
        tb.param(f"{vt}.head.layernorm.bias", h)
        tb.linear(f"{vt}.head.mlp.fc1", h, i, True)
        tb.linear(f"{vt}.head.mlp.fc2", i, h, True)
    tb.param("model.multi_modal_projector.mm_input_projection_weight", h * text_hidden)
    tb.param("model.multi_modal_projector.mm_soft_emb_norm.weight", h)


def _llama4_vision(tb: _Table, raw: dict, text_hidden: int):
    v = _vision_cfg(raw, LLAMA4_VISION_DEFAULTS)
    h, i, c, p = v["hidden_size"], v["intermediate_size"], v["num_channels"], v["patch_size"]
    vm = "vision_model"
    tb.param(f"{vm}.class_embedding", h)
    tb.param(f"{vm}.positional_embedding_vlm", ((v["image_size"] // p) ** 2 + 1) * h)
    tb.linear(f"{vm}.patch_embedding.linear", c * p * p, h)
    for norm in ("layernorm_pre", "layernorm_post"):
        tb.param(f"{vm}.{norm}.weight", h)
        tb.param(f"{vm}.{norm}.bias", h)
    for n in range(v["num_hidden_layers"]):
        ly = f"{vm}.model.layers.{n}"
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            tb.linear(f"{ly}.self_attn.{proj}", h, h, True)
        tb.linear(f"{ly}.mlp.fc1", h, i, True)
        tb.linear(f"{ly}.mlp.fc2", i, h, True)
        for norm in ("input_layernorm", "post_attention_layernorm"):
            tb.param(f"{ly}.{norm}.weight", h)
            tb.param(f"{ly}.{norm}.bias", h)
    tb.linear(f"{vm}.vision_adapter.mlp.fc1", i, v["projector_input_dim"])
    tb.linear(f"{vm}.vision_adapter.mlp.fc2", v["projector_output_dim"], v["projector_output_dim"])
    tb.linear("multi_modal_projector.linear_1", v["vision_output_dim"], text_hidden)


def supported(raw: dict) -> bool:
    """Whether :func:`tensor_table` lists this config's tensors (the config itself must also be valid)."""
    try:
        _family(raw)
    except A.ConfigError:
        return False
    return True


def _family(raw: dict) -> tuple[str, str | None]:
    t, mt, multimodal = A.text_part(raw)
    top = raw.get("model_type")
    if multimodal:
        if MULTIMODAL_FAMILIES.get(top) != mt:
            raise NotModelledFamily(f"the tensors of a {top!r} model with a {mt!r} language model are not listed by the "
                                    f"browser calculator (listed: {', '.join(sorted(MULTIMODAL_FAMILIES))} multimodal, "
                                    f"{', '.join(TEXT_FAMILIES)} text)")
        return mt, top
    if mt not in TEXT_FAMILIES:
        raise NotModelledFamily(f"the tensors of a {mt!r} model are not listed by the browser calculator (listed "
                                f"families: {', '.join(TEXT_FAMILIES)}; multimodal: {', '.join(sorted(MULTIMODAL_FAMILIES))})")
    return mt, None


def tensor_table(raw: dict) -> list[dict]:
    """One row per parameter tensor of a raw config dict, as transformers' ``named_parameters`` lists them.

    Raises :class:`llmstudy.core.arch.ConfigError` for an invalid config (the one-line message naming the field) and
    :class:`NotModelledFamily` for a family not listed here.
    """
    a = A.describe(raw)
    mt, top = _family(raw)
    t, _, _ = A.text_part(raw)
    tb = _Table()
    if top == "gemma3":
        _siglip(tb, raw, a.hidden_size)
        _language_model(tb, raw, a, t, "model.language_model", "lm_head.weight")
    elif top == "llama4":
        _llama4_vision(tb, raw, a.hidden_size)
        _language_model(tb, raw, a, t, "language_model.model", "language_model.lm_head.weight")
    else:
        _language_model(tb, raw, a, t, "model", "lm_head.weight")
    return tb.rows


def total(rows: list[dict]) -> int:
    return sum(r["numel"] for r in rows)


def component_counts(rows: list[dict]) -> dict[str, int]:
    """Parameter count per component (all components listed, zeros included), plus ``total``."""
    out = dict.fromkeys(COMPONENTS, 0)
    for r in rows:
        out[r["component"]] += r["numel"]
    out["total"] = total(rows)
    return out
