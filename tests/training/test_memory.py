"""The fine-tuning memory model: hand-computed terms, LoRA counts shared with `params`, and refusals where not exact."""

import dataclasses
import math

import pytest

from llmstudy import cli
from llmstudy.core import models as M
from llmstudy.training import memory as mm


def test_lora_8bit_optimizer_state_hand_computed():
    # per layer: q,k,v,o: A and B of 16,384; gate/up: A 16,384 + B 44,032; down: A 44,032 + B 16,384.
    # all >= 4096 values -> 2 bytes each + two fp32 absmax per 256 values; none >= 1e5 -> nothing paged.
    blocks_per_layer = 8 * 64 + 2 * (64 + 172) + (172 + 64)
    expected = 2 * 9_994_240 + 32 * blocks_per_layer * 8
    df = mm.predict(mm.Setup(method="lora", optimizer="paged_adamw_8bit"))
    assert df[df.component == "optimizer"].bytes.sum() == expected == 20_300_800
    assert (df.location == "paged").sum() == 0


def test_nf4_double_quant_bytes_for_one_4096_square_weight():
    n = 4096 * 4096
    blocks = n // 64
    assert mm._nf4_bytes(n, True) == n / 2 + blocks + 4 * (blocks // 256) + 4 * 256 + 4
    assert mm._nf4_bytes(n, False) == n / 2 + 4 * blocks


def test_activation_bytes_per_token_per_layer_for_llama2_7b_lora():
    cfg = M.load_config("llama-2-7b")
    assert mm.activation_bytes_per_token_layer(cfg, mm.Setup(method="lora")) == 238_336
    # the same targets named explicitly give the same count
    named = mm.Setup(method="lora", lora_targets=M.LLAMA_LORA_TARGETS)
    assert mm.activation_bytes_per_token_layer(cfg, named) == 238_336
    # LoRA on q_proj alone: 3 bytes (bf16 dropout output + mask) of the 4,096-wide input less than before for the others
    only_q = mm.Setup(method="lora", lora_targets=("q_proj",))
    assert mm.activation_bytes_per_token_layer(cfg, only_q) == 238_336 - 3 * (5 * 4096 + 11008)


def test_full_finetune_with_bnb_keeps_32bit_states_for_embeddings():
    df = mm.predict(mm.Setup(method="full", optimizer="paged_adamw_8bit"))
    paged = df[df.location == "paged"].bytes.sum()
    big = M.parameters("llama-2-7b")
    big = big[(big.numel >= 100_000) & (big.component != "embeddings")].numel.sum()
    assert paged == 8 * 131_072_000 + 2 * big


def test_bad_setup_values_are_named():
    with pytest.raises(ValueError, match="seq_len must be a positive integer, got -5"):
        mm.Setup(seq_len=-5)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        mm.Setup(optimizer="adam9000")
    with pytest.raises(ValueError, match="METHOD"):
        mm.parse_method("lora:adamw_torch:bf16:extra", "llama-2-7b", 100, 1, True, "adamw_torch")
    with pytest.raises(ValueError, match="lora_targets must be a tuple of module names"):
        mm.Setup(lora_targets="q_proj")


def test_fused_loss_head_bytes():
    s = mm.Setup(model="llama-2-7b", method="lora", seq_len=6244)
    assert s.loss_head == "fused" and s.label().endswith("/fused-head")

    def head(st):
        return int(mm.predict(st).query("detail.str.contains('logits')", engine="python").bytes.sum())

    assert head(s) == 4096 * 32000 * 2 + 6244 * 4096 * 4 == 364_445_696
    assert head(dataclasses.replace(s, loss_head="full")) == 6244 * 32000 * 10 == 1_998_080_000
    with pytest.raises(ValueError, match="loss_head must be one of"):
        mm.Setup(loss_head="chunked")


# --- one LoRA count for `params` and `memory`, experts included ---------------------------------------------------------

def test_memory_trains_exactly_the_parameters_params_counts_for_moe_and_mla():
    for model, trainable in (("qwen3-30b-a3b", 160_628_736), ("deepseek-v2-lite", 57_154_304)):
        sm = mm.summarize(mm.Setup(model=model, method="lora", optimizer="adamw_torch"))
        assert sm["gradients_bytes"] == 4 * trainable  # fp32 adapters, one fp32 gradient each
        assert M.lora_count(model, 4, peft=False).trainable == trainable


def test_the_two_cli_commands_print_the_same_lora_line(capsys):
    cli.main(["params", "qwen3-30b-a3b", "--lora-r", "4"])
    params_out = capsys.readouterr().out
    cli.main(["memory", "--model", "qwen3-30b-a3b", "--method", "lora", "qlora"])
    memory_out = capsys.readouterr().out
    line = "LoRA r=4: trainable params: 160,628,736 || all params: 30,692,751,360 || trainable%: 0.5233"
    adapted = "  adapted: q_proj, k_proj, v_proj, o_proj; fused experts: experts.gate_up_proj, experts.down_proj"
    for out in (params_out, memory_out):
        assert line in out and adapted in out
        assert "kept in bf16 (bitsandbytes does not quantize them): fused experts (not nn.Linear) 28,991,029,248" in out


# --- QLoRA: what stays bf16 -----------------------------------------------------------------------------------------------

def test_qlora_weights_are_nf4_linear_plus_bf16_everything_else_named():
    s = mm.Setup(model="qwen3-30b-a3b", method="qlora")
    df = mm.predict(s)
    table = M.parameters("qwen3-30b-a3b")
    lin, rest = table[table.linear], table[~table.linear]
    w = df[df.component == "weights"]
    assert w.bytes.iloc[0] == sum(mm._nf4_bytes(int(n), True) for n in lin.numel)
    assert w.bytes.iloc[1] == 2 * rest.numel.sum()
    assert "fused experts (not nn.Linear) 28,991,029,248" in w.detail.iloc[1]


# --- refusals: what the model does not count is said, never guessed -------------------------------------------------------

@pytest.mark.parametrize("model,term", [("qwen3-30b-a3b", mm.NOT_MODELLED_MOE), ("deepseek-v2-lite", mm.NOT_MODELLED_MLA),
                                        ("mixtral-8x7b", mm.NOT_MODELLED_MOE)])
def test_activation_memory_is_refused_for_moe_and_mla(model, term):
    s = mm.Setup(model=model, method="lora")
    with pytest.raises(mm.NotModelled, match="activation memory is not modelled for"):
        mm.activation_bytes_per_token_layer(M.load_config(model), s)
    sm = mm.summarize(s)
    assert math.isnan(sm["peak_bytes"]) and math.isnan(sm["activations_bytes"])
    assert term in sm["not_modelled"]
    assert sm["weights_bytes"] > 0 and not math.isnan(sm["gradients_bytes"])


def test_dense_families_are_modelled():
    for model in ("qwen3-8b", "mistral-7b-v0.3", "gemma-2-9b", "gemma-3-12b-it"):
        assert mm.not_modelled(mm.Setup(model=model)) is None
        assert mm.summarize(mm.Setup(model=model, method="lora"))["peak_bytes"] > 0


def test_run_mode_refuses_lora_on_fused_experts_it_cannot_train():
    reason = mm.refusal(mm.Setup(model="qwen3-30b-a3b", method="lora", optimizer="adamw_torch"), cuda=True)
    assert reason.startswith("LoRA on fused expert parameters (peft target_parameters) is not wired into the training worker")
    assert mm.refusal(mm.Setup(model="qwen3-30b-a3b", method="lora", optimizer="adamw_torch", lora_targets=("q_proj", "v_proj")), cuda=True) is None


def test_the_dense_families_beyond_llama_say_what_the_activation_count_leaves_out():
    assert mm.approximations("llama-2-7b") == [] and mm.approximations("mistral-7b-v0.3") == []
    assert mm.approximations("qwen3-8b") == ["the query/key norms' saved inputs are not in the activation count"]
    assert mm.summarize(mm.Setup(model="gemma-3-12b-it"))["approximations"] == [
        "the post-attention and post-MLP norms' saved inputs are not in the activation count",
        "the query/key norms' saved inputs are not in the activation count"]
