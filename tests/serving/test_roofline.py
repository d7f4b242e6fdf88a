"""The decode roofline per architecture family: exact bytes from the config, or a refusal naming what is not modelled."""

import pytest

from llmstudy.serving import roofline as RF


def test_dense_llama2_by_hand():
    assert RF.kv_bytes_per_token("llama-2-7b") == 2 * 32 * 32 * 128 * 2 == 524_288
    assert RF.decode_weight_params("llama-2-7b") == 6_738_415_616 - 32_000 * 4096  # untied: the input embedding is a lookup
    f = RF.decode_floor("llama-2-7b", "NVIDIA H100 80GB HBM3", batch=2, context=640)
    assert f["step_bytes"] == (6_738_415_616 - 131_072_000) * 2 + 2 * 640 * 524_288
    assert f["itl_floor_ms"] == pytest.approx(f["step_bytes"] / 3.35e12 * 1e3, rel=1e-12)
    assert RF.kv_slope_bytes("llama-2-7b", 100_000) == 524_288


def test_gqa_mistral():
    assert RF.kv_bytes_per_token("mistral-7b-v0.3") == 2 * 32 * 8 * 128 * 2 == 131_072
    assert RF.decode_weight_params("mistral-7b-v0.3") == 7_248_023_552 - 32_768 * 4096


def test_sliding_layers_read_at_most_their_window():
    # Gemma-2-9B: 42 layers alternating sliding (4,096) and full, 8 KV heads of 256 dims
    per = 2 * 8 * 256 * 2
    assert RF.kv_bytes_per_token("gemma-2-9b") == 42 * per == 344_064
    assert RF.kv_bytes_read("gemma-2-9b", 10_000) == 21 * per * 10_000 + 21 * per * 4096
    assert RF.kv_bytes_read("gemma-2-9b", 1000) == 42 * per * 1000
    assert RF.kv_slope_bytes("gemma-2-9b", 10_000) == 21 * per
    # tied embeddings: the one matrix is read as the output head
    assert RF.decode_weight_params("gemma-2-9b") == 9_241_705_984


def test_multimodal_reads_the_text_config_and_leaves_the_vision_tower_out():
    # Gemma-3-12B: 48 layers, 8 KV heads of 256; five sliding (1,024) layers to one full
    per = 2 * 8 * 256 * 2
    assert RF.kv_bytes_per_token("gemma-3-12b-it") == 48 * per == 393_216
    assert RF.kv_bytes_read("gemma-3-12b-it", 4096) == 40 * per * 1024 + 8 * per * 4096
    assert "vision" not in RF.kv_formula("gemma-3-12b-it")


def test_mla_stores_one_latent_per_layer():
    # DeepSeek-V2-Lite: kv_lora_rank 512 + qk_rope_head_dim 64, 27 layers, bf16 (vLLM's MLA cache), not 16 KV heads
    assert RF.kv_bytes_per_token("deepseek-v2-lite") == 27 * (512 + 64) * 2 == 31_104


def test_moe_floor_reads_the_routed_experts_it_must():
    # Mixtral-8x7B: 2 of 8 experts per token; Qwen3-30B-A3B: 8 of 128; DeepSeek-V2-Lite: 6 of 64 routed (+2 shared, always read)
    for model, n, k in (("mixtral-8x7b", 8, 2), ("qwen3-30b-a3b", 128, 8), ("deepseek-v2-lite", 64, 6)):
        from llmstudy.core import models as M

        c = M.component_counts(model)
        dense = int(c["total"]) - int(c["embeddings"]) - int(c["experts"])
        assert RF.decode_weight_params(model) == dense + int(c["experts"]) * k // n, model
    assert RF.decode_weight_params("mixtral-8x7b") == 12_748_853_248


@pytest.mark.parametrize("model, what", [
    ("llama-4-scout-17b-16e-instruct", "chunked_attention"),
    ("llama-2-7b-gptq", "quantized weights (gptq)"),
    ("gpt-oss-20b", "quantized weights (mxfp4)"),
])
def test_what_is_not_modelled_is_refused_by_name(model, what):
    with pytest.raises(RF.RooflineUnsupported, match=r".*" + what.replace("(", r"\(").replace(")", r"\)")):
        RF.decode_floor(model, "NVIDIA H200", 1, 1000)


def test_quantized_checkpoints_still_have_their_kv_bytes():
    assert RF.kv_bytes_per_token("llama-2-7b-gptq") == 524_288  # the cache is bf16 whatever the weights


def test_unknown_gpu_is_a_clear_error():
    with pytest.raises(KeyError, match="no HBM bandwidth known for GPU 'NVIDIA A100'"):
        RF.hbm_bandwidth("NVIDIA A100")
    assert RF.hbm_bandwidth("NVIDIA H200") == 4.8e12 and RF.known_bandwidth("cpu") != RF.known_bandwidth("cpu")  # NaN


def test_a_config_with_a_missing_field_is_refused_before_any_number(tmp_path):
    import json

    from llmstudy.core import arch as A
    from llmstudy.core import models as M

    cfg = M.raw_config("qwen3-8b")
    del cfg["num_key_value_heads"]
    path = tmp_path / "my-qwen.json"
    path.write_text(json.dumps(cfg))
    with pytest.raises(A.ConfigError, match="num_key_value_heads"):
        RF.kv_bytes_per_token(str(path))
