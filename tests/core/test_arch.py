"""Config validation and the per-layer architecture description (llmstudy.core.arch: standard library only)."""

import json
import subprocess
import sys

import pytest
from conftest import ROOT

from llmstudy.core import arch as A
from llmstudy.core import models as M

FIX = ROOT / "tests/fixtures/configs"


def raw(name):
    return json.loads((FIX / name).read_text())


# --- one fixture per defect: the one-line error names the field ------------------------------------------------

@pytest.mark.parametrize(
    "fixture,message",
    [
        ("no-model-type.json", "field 'model_type' is missing"),
        ("missing-kv-heads.json", "field 'num_key_value_heads' is missing: qwen3 configs must state it"),
        ("missing-layers.json", "field 'num_hidden_layers' is missing"),
        ("kv-heads-not-dividing.json", "field 'num_key_value_heads' = 3 does not divide num_attention_heads = 8"),
        ("negative-hidden.json", "field 'hidden_size' must be a positive integer, got -256"),
        ("float-heads.json", "field 'num_attention_heads' must be a positive integer, got 8.5"),
        ("missing-head-dim.json", "field 'head_dim' is missing: qwen3 configs must state it"),
        ("hidden-not-divisible.json", "hidden_size = 256 is not divisible by num_attention_heads = 6"),
        ("moe-missing-expert-count.json", "field 'num_experts' is missing: qwen3_moe is a mixture-of-experts family"),
        ("moe-topk-too-large.json", "field 'num_experts_per_tok' = 9 exceeds the 8 experts (num_experts)"),
        ("moe-missing-topk.json", "field 'num_experts_per_tok' is missing"),
        ("moe-counts-disagree.json", "expert counts disagree: num_local_experts=16, num_experts=8"),
        ("moe-bad-dense-layer.json", "field 'mlp_only_layers' must be a list of layer indices in [0, 4), got [7]"),
        ("mla-missing-rope-dim.json", "field 'qk_rope_head_dim' is missing"),
        ("mla-missing-q-lora-rank.json", "field 'q_lora_rank' is missing: MLA configs must state it"),
        ("mla-zero-kv-lora-rank.json", "field 'kv_lora_rank' must be a positive integer, got 0"),
        ("layer-types-wrong-length.json", "field 'layer_types' must list 4 layers (num_hidden_layers), got 3"),
        ("layer-types-unknown-kind.json", "layer kinds that are not modelled: ['linear_attention']"),
        ("sliding-without-pattern.json", "which layers of a phi3 model slide is not modelled"),
        ("multimodal-text-missing-layers.json", "field 'text_config.num_hidden_layers' is missing"),
    ],
)
def test_each_defect_is_refused_in_one_line_naming_the_field(fixture, message):
    with pytest.raises(A.ConfigError) as e:
        A.validate(raw(fixture))
    assert message in str(e.value) and "\n" not in str(e.value)
    # through the models module (what every chapter and CLI command calls first): the path, then the same line
    with pytest.raises(M.ModelConfigError, match=str(FIX / fixture).replace(".", r"\.")) as e2:
        M.config_path(FIX / fixture)
    assert message in str(e2.value)
    assert isinstance(e2.value, M.UnknownModelError) and isinstance(e2.value, A.ConfigError)


def test_the_cli_turns_a_bad_config_into_one_error_line():
    proc = subprocess.run([sys.executable, "-m", "llmstudy.cli", "params", str(FIX / "missing-kv-heads.json")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"llmstudy: error: {FIX / 'missing-kv-heads.json'}: field 'num_key_value_heads' is missing: qwen3 configs must "
        "state it (transformers would fill in its own default)"]


def test_qwen3_8b_without_kv_heads_or_layers_is_refused_not_filled_with_defaults(tmp_path):
    cfg = json.loads((ROOT / "data/models/qwen3-8b/config.json").read_text())
    for field in ("num_key_value_heads", "num_hidden_layers"):
        bad = {k: v for k, v in cfg.items() if k != field}
        (tmp_path / f"no-{field}.json").write_text(json.dumps(bad))
        with pytest.raises(M.ModelConfigError, match=f"field '{field}' is missing"):
            M.component_counts(tmp_path / f"no-{field}.json")


def test_the_module_needs_only_the_standard_library():
    code = "import sys, llmstudy.core.arch; print(sorted(m for m in ('torch', 'transformers', 'pandas', 'numpy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr


# --- the description, per family ---------------------------------------------------------------------------------

def test_dense_gqa_qwen3_8b():
    a = M.describe("qwen3-8b")
    assert a.families == ("gqa", "dense")
    assert (a.num_layers, a.num_heads, a.num_kv_heads, a.head_dim) == (36, 32, 8, 128)
    assert {layer.attention for layer in a.layers} == {"full"} and a.moe is None and a.mla is None
    assert a.kv_per_token() == 36 * 8 * (128 + 128)


def test_llama1_without_kv_heads_is_multi_head_and_says_so():
    cfg = json.loads((ROOT / "data/models/llama-13b/config.json").read_text())
    cfg.pop("num_key_value_heads", None)
    a = A.describe(cfg)
    assert a.num_kv_heads == a.num_heads == 40 and a.families[0] == "mha"
    assert a.notes == ("num_key_value_heads absent: multi-head attention (LLaMA-1 convention)",)


def test_mla_caches_one_latent_per_layer():
    a = M.describe("deepseek-v2-lite")
    assert a.families == ("mla", "moe")
    assert a.mla.latent == 512 + 64 and a.head_dim == 128 + 64
    assert all(layer.attention == "mla" and layer.kv_heads == 1 and layer.kv_per_token == 576 for layer in a.layers)
    assert a.kv_per_token() == 27 * 576
    assert a.moe.num_experts == 64 and a.moe.top_k == 6 and a.moe.count_field == "n_routed_experts"
    assert a.moe.shared_experts == 2 and a.moe.shared_intermediate_size == 2 * 1408
    assert a.moe_layers == tuple(range(1, 27))  # first_k_dense_replace = 1


@pytest.mark.parametrize(
    "model,field,experts,top_k,moe_layers",
    [
        ("mixtral-8x7b", "num_local_experts", 8, 2, 32),
        ("qwen3-30b-a3b", "num_experts", 128, 8, 48),
        ("gpt-oss-20b", "num_local_experts", 32, 4, 24),
        ("llama-4-scout-17b-16e-instruct", "num_local_experts", 16, 1, 48),
        ("llama-4-maverick-17b-128e-instruct", "num_local_experts", 128, 1, 24),
    ],
)
def test_expert_count_under_every_naming(model, field, experts, top_k, moe_layers):
    a = M.describe(model)
    assert (a.moe.count_field, a.moe.num_experts, a.moe.top_k, len(a.moe_layers)) == (field, experts, top_k, moe_layers)


def test_sliding_and_chunked_layers():
    g2 = M.describe("gemma-2-9b")
    assert [layer.attention for layer in g2.layers[:4]] == ["sliding", "full", "sliding", "full"] and g2.layers[0].window == 4096
    g3 = M.describe("gemma-3-12b-it")
    assert g3.multimodal and g3.families == ("gqa", "dense", "hybrid", "multimodal")
    assert [layer.attention for layer in g3.layers[:6]] == ["sliding"] * 5 + ["full"] and g3.layers[0].window == 1024
    assert (g3.hidden_size, g3.num_layers, g3.vocab_size) == (3840, 48, 262208)
    scout = M.describe("llama-4-scout-17b-16e-instruct")
    assert [(layer.attention, layer.rope) for layer in scout.layers[:4]] == [("chunked", True)] * 3 + [("full", False)]
    assert scout.layers[0].window == 8192
    assert M.describe("mistral-7b-v0.3").families == ("gqa", "dense")  # sliding_window null in v0.3


@pytest.mark.parametrize("model", M.available_models())
def test_every_shipped_config_agrees_with_transformers(model):
    """Layer kinds equal transformers' own ``layer_types``; MoE layers are the layers with expert tensors."""
    a = M.describe(model)
    cfg = M.text_config(M.load_config(model))
    kinds = {"full": "full_attention", "sliding": "sliding_attention", "chunked": "chunked_attention", "mla": "full_attention"}
    lt = getattr(cfg, "layer_types", None)
    if lt is not None:
        assert list(lt) == [kinds[layer.attention] for layer in a.layers]
    table = M.parameters(model)
    with_experts = sorted({int(n.split(".layers.")[1].split(".")[0]) for n in table[table.experts | (table.component == "experts")].name
                           if ".layers." in n and "vision" not in n})
    assert list(a.moe_layers) == with_experts
    assert (a.num_layers, a.hidden_size) == (cfg.num_hidden_layers, cfg.hidden_size)
