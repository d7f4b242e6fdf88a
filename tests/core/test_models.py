"""Model configs: exact parameter counts, configs of any name, LoRA targets from the architecture (formula == peft)."""

import json
import shutil

import pytest
from conftest import ROOT

from llmstudy.core import models as M
from llmstudy.core.params import known_model

FIX = ROOT / "tests/fixtures/configs"

# Exact counts of the transformers 5 architecture built on the meta device (the method every chapter uses).
SHIPPED_TOTALS = {
    "deepseek-v2-lite": 15_706_484_224,
    "gemma-2-9b": 9_241_705_984,
    "gemma-3-12b-it": 12_187_325_040,
    "gemma-3-270m": 268_098_176,
    "gpt-oss-20b": 20_914_757_184,
    "llama-13b": 13_015_864_320,
    "llama-2-7b": 6_738_415_616,
    "llama-2-7b-awq": 6_738_415_616,
    "llama-2-7b-gptq": 6_738_415_616,
    "llama-33b": 32_528_943_616,
    "llama-4-maverick-17b-128e-instruct": 401_583_781_376,
    "llama-4-maverick-17b-128e-instruct-fp8": 401_583_781_376,
    "llama-4-scout-17b-16e-instruct": 108_641_793_536,
    "llama-65b": 65_285_660_672,
    "mistral-7b-v0.3": 7_248_023_552,
    "mixtral-8x7b": 46_702_792_704,
    "qwen3-30b-a3b": 30_532_122_624,
    "qwen3-8b": 8_190_735_360,
}


def test_every_shipped_config_is_counted():
    assert set(SHIPPED_TOTALS) <= set(M.available_models())


@pytest.mark.parametrize("model,total", sorted(SHIPPED_TOTALS.items()))
def test_exact_parameter_count_and_components_add_up(model, total):
    counts = M.component_counts(model)
    assert counts["total"] == total
    assert counts.drop("total").sum() == total


@pytest.mark.parametrize(
    "model,published",
    [
        ("deepseek-v2-lite", 15_706_484_224),  # the checkpoint's tensors, summed (SOURCE.md)
        ("mixtral-8x7b", 46.7e9),  # Mistral: "46.7B total parameters"
        ("qwen3-8b", 8.2e9),  # model card: "Number of Parameters: 8.2B"
        ("qwen3-30b-a3b", 30.5e9),  # model card: "30.5B in total"
    ],
)
def test_new_configs_match_their_published_totals(model, published):
    total = int(M.component_counts(model)["total"])
    assert total == published if isinstance(published, int) else round(total / 1e9, 1) == published / 1e9


def test_a_config_file_of_any_name_is_a_model(tmp_path):
    path = tmp_path / "my-qwen.json"
    shutil.copy(ROOT / "data/models/qwen3-8b/config.json", path)
    assert M.config_path(path) == path.resolve()
    assert M.component_counts(path)["total"] == SHIPPED_TOTALS["qwen3-8b"]
    assert M.describe(FIX / "tiny-qwen3.json").families == ("gqa", "dense")
    assert known_model(str(path)) is None


def test_known_model_reports_a_bad_config_as_a_parameter_error_message():
    msg = known_model(str(FIX / "kv-heads-not-dividing.json"))
    assert msg.endswith("field 'num_key_value_heads' = 3 does not divide num_attention_heads = 8")


def test_summary_names_the_family():
    s = M.summary("deepseek-v2-lite")
    assert (s["families"], s["experts"], s["kv_heads"], s["params"]) == ("mla/moe", "64 (top-6)", 16, 15_706_484_224)


# --- LoRA targets from the architecture: an independent formula, and peft's own count ----------------------------------

def linear_lora(r, shapes):
    """r x in + out x r per adapted nn.Linear (in, out)."""
    return sum(r * i + o * r for i, o in shapes)


def test_llama2_7b_default_targets_are_the_articles_seven_and_its_count():
    t = M.lora_targets("llama-2-7b")
    assert t.modules == M.LLAMA_LORA_TARGETS and t.parameters == ()
    h, inter = 4096, 11008
    per_layer = linear_lora(4, [(h, h)] * 4 + [(h, inter)] * 2 + [(inter, h)])
    assert 32 * per_layer == 9_994_240
    c = M.lora_count("llama-2-7b", 4)
    assert (c.trainable, c.total) == (9_994_240, 6_748_409_856)


def test_dense_gqa_qwen3_8b_formula_equals_peft():
    h, q, kv, inter = 4096, 32 * 128, 8 * 128, 12288
    expected = 36 * linear_lora(4, [(h, q), (h, kv), (h, kv), (q, h), (h, inter), (h, inter), (inter, h)])
    assert expected == 10_911_744
    assert M.lora_count("qwen3-8b", 4, peft=False).trainable == expected
    assert M.lora_count("qwen3-8b", 4).trainable == expected


def test_moe_fused_experts_qwen3_30b_a3b_formula_equals_peft():
    """Attention projections + the fused 3-D expert tensors: A is in x (r*E), B is (r*E) x out (peft ParamWrapper)."""
    h, q, kv, E, w, r = 2048, 32 * 128, 4 * 128, 128, 768, 4
    attn = linear_lora(r, [(h, q), (h, kv), (h, kv), (q, h)])
    experts = E * r * (h + 2 * w) + E * r * (w + h)  # gate_up_proj (h -> 2w), down_proj (w -> h)
    expected = 48 * (attn + experts)
    t = M.lora_targets("qwen3-30b-a3b")
    assert t.modules == ("q_proj", "k_proj", "v_proj", "o_proj") and t.parameters == ("experts.gate_up_proj", "experts.down_proj")
    assert M.lora_count("qwen3-30b-a3b", r, peft=False).trainable == expected == 160_628_736
    assert M.lora_count("qwen3-30b-a3b", r).trainable == expected


def test_mla_deepseek_v2_lite_formula_equals_peft_and_names_what_cannot_be_adapted():
    h, heads, r = 2048, 16, 4
    q_out = heads * (128 + 64)
    attn = linear_lora(r, [(h, q_out), (h, 512 + 64), (512, heads * (128 + 128)), (heads * 128, h)])
    experts = 64 * r * (h + 2 * 1408) + 64 * r * (1408 + h)
    expected = 27 * attn + 26 * experts  # layer 0 is dense: its MLP (and the shared experts) are not adapted, see below
    t = M.lora_targets("deepseek-v2-lite")
    assert t.modules == ("q_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj")
    assert "peft maps these names to the fused experts" in t.not_adapted[0]
    assert M.lora_count("deepseek-v2-lite", r, peft=False).trainable == expected == 57_154_304
    assert M.lora_count("deepseek-v2-lite", r).trainable == expected


def test_mixtral_w1_w2_w3_target_the_fused_experts_at_peft_s_ranks():
    """Mixtral's transformers-4 names: w1 + w3 are one fused gate_up_proj (rank 2r in peft's conversion), w2 is down_proj."""
    h, q, E, w, r = 4096, 4096, 8, 14336, 4
    expected = 32 * (linear_lora(r, [(h, q)]) + E * 2 * r * (h + 2 * w) + E * r * (w + h))
    assert M.lora_count("mixtral-8x7b", r, ["q_proj", "w1", "w2", "w3"], peft=False).trainable == expected == 87_031_808
    with pytest.raises(ValueError, match="w1 without w3: they are one fused experts.gate_up_proj tensor"):
        M.lora_targets("mixtral-8x7b", ["w1"])


def test_unknown_targets_list_what_the_model_has():
    with pytest.raises(ValueError, match=r"lora targets \['wq'\] are not projections of llama-2-7b: linear modules \['q_proj'"):
        M.lora_targets("llama-2-7b", ["wq"])
    with pytest.raises(ValueError, match="lora_r must be a positive integer"):
        M.lora_count("llama-2-7b", 0)


def test_qlora_keeps_fused_experts_and_the_head_in_bf16():
    kept = M.qlora_bf16_weights("qwen3-30b-a3b")
    assert kept["fused experts (not nn.Linear)"] == 48 * 128 * (2048 * 1536 + 768 * 2048)
    assert kept["lm_head"] == kept["embeddings"] == 151936 * 2048
    assert set(M.qlora_bf16_weights("llama-2-7b").index) == {"embeddings", "lm_head", "norms"}


def test_the_shipped_configs_are_the_sourced_files():
    for name in ("qwen3-8b", "mistral-7b-v0.3", "gemma-2-9b", "gemma-3-12b-it", "qwen3-30b-a3b", "mixtral-8x7b", "deepseek-v2-lite"):
        src = (ROOT / f"data/models/{name}/SOURCE.md").read_text()
        assert src.startswith(f"# {name} (") and "Built on the meta device" in src
        json.loads((ROOT / f"data/models/{name}/config.json").read_text())


def test_titles_come_from_source_md_or_the_file_name(tmp_path):
    assert M.title("qwen3-8b") == "qwen3-8b (Qwen/Qwen3-8B, dense GQA)"
    path = tmp_path / "my-qwen.json"
    shutil.copy(ROOT / "data/models/qwen3-8b/config.json", path)
    assert M.title(path) == "my-qwen"
