"""The vLLM KV-capacity planner (llmstudy.serving.kv_planner): exact per-layer KV arithmetic for every architecture
family against hand computation, the per-version registry and defaults, refusals of what is not modelled, and the
planner against the one-GPU H200 records of seven model families it was not fitted on (h200x1-g, h200x1-g2)."""

import json
import subprocess
import sys

import pandas as pd
import pytest

from llmstudy.chapters.context_limits import run as RUN
from llmstudy.core import records as R
from llmstudy.serving import kv_planner as K

GiB, MiB = 2**30, 2**20
SCOUT, MAVERICK, MAVERICK_FP8 = "llama-4-scout-17b-16e-instruct", "llama-4-maverick-17b-128e-instruct", "llama-4-maverick-17b-128e-instruct-fp8"


def scout4(**kw):
    base = dict(model=SCOUT, gpu="h200", num_gpus=4, text_only=True, max_model_len=200_000, enforce_eager=True)
    return K.Deployment(**{**base, **kw})


def dep(model, tp=1, **kw):
    return K.Deployment(**{"model": model, "gpu": "h200", "num_gpus": tp, "text_only": True, "max_model_len": 4096,
                           "enforce_eager": True, **kw})


# --- KV bytes per token and layer, per family (hand arithmetic) ---------------------------------------------------

@pytest.mark.parametrize("model,tp,per_layer,layers", [
    ("llama-2-7b", 1, 2 * 32 * 128 * 2, 32),  # MHA: K and V, 32 heads x 128, bf16
    ("llama-2-7b", 4, 2 * 8 * 128 * 2, 32),  # TP=4: 8 heads per rank
    ("mistral-7b-v0.3", 1, 2 * 8 * 128 * 2, 32),  # GQA: 8 KV heads
    ("mistral-7b-v0.3", 8, 2 * 1 * 128 * 2, 32),  # TP=8: one KV head per rank
    ("qwen3-8b", 1, 2 * 8 * 128 * 2, 36),
    ("gemma-2-9b", 1, 2 * 8 * 256 * 2, 42),  # head_dim 256, half the layers sliding (window 4096)
    ("gemma-3-12b-it", 1, 2 * 8 * 256 * 2, 48),  # multimodal config: the text_config's numbers
    ("qwen3-30b-a3b", 1, 2 * 4 * 128 * 2, 48),  # MoE (num_experts): attention is plain GQA
    ("mixtral-8x7b", 1, 2 * 8 * 128 * 2, 32),  # MoE (num_local_experts)
    ("deepseek-v2-lite", 1, 2 * (512 + 64), 27),  # MLA: one latent of kv_lora_rank + qk_rope_head_dim, factor 1
    ("deepseek-v2-lite", 8, 2 * (512 + 64), 27),  # ... the same on every rank at TP=8 (not divided)
    ("gpt-oss-20b", 1, 2 * 8 * 64 * 2, 24),
    (SCOUT, 4, 2 * 2 * 128 * 2, 48),
])
def test_kv_bytes_per_token_per_family(model, tp, per_layer, layers):
    d = dep(model, tp, weights="mxfp4-checkpoint" if model == "gpt-oss-20b" else "bf16")
    assert K.kv_bytes_per_token_layer(d) == per_layer
    assert K.page_bytes(d) == 16 * per_layer
    assert K.kv_bytes_per_token(model, tp) == layers * per_layer


def test_kv_bytes_do_not_depend_on_the_weights_format():
    assert K.kv_bytes_per_token("llama-2-7b-gptq") == K.kv_bytes_per_token("llama-2-7b-awq") == 2 * 32 * 128 * 2 * 32 == 524_288
    assert K.kv_bytes_per_token("llama-2-7b", kv_dtype="fp8") == 2 * 32 * 128 * 1 * 32
    with pytest.raises(ValueError, match="kv_dtype must be one of"):
        K.kv_bytes_per_token("llama-2-7b", kv_dtype="fp4")


def test_mla_is_one_latent_replicated_not_sixteen_kv_heads():
    assert K.kv_bytes_per_token("deepseek-v2-lite") == 2 * (512 + 64) * 27 == 31_104
    assert K.kv_bytes_per_token("deepseek-v2-lite", tp=8) == 31_104
    # what the planner did before: 16 ordinary KV heads of 64 (transformers' head_dim), K and V -> 3.6x too few tokens
    assert 2 * 16 * 64 * 2 * 27 / 31_104 == pytest.approx(3.56, abs=0.01)
    assert "MLA latent 512+64" in K.kv_layout(dep("deepseek-v2-lite", 8))
    with pytest.raises(K.NotModelledError, match="an fp8 KV cache for MLA attention"):
        dep("deepseek-v2-lite", kv_dtype="fp8")


def test_mla_weights_per_rank_replicate_the_down_projection():
    t = K.weight_table(dep("deepseek-v2-lite", 8)).set_index("name").rank_numel
    a = "model.layers.1.self_attn."
    assert t[a + "kv_a_proj_with_mqa.weight"] == 2048 * (512 + 64)  # ReplicatedLinear: whole on every rank
    assert t[a + "kv_a_layernorm.weight"] == 512
    assert t[a + "kv_b_proj.weight"] == 16 * (128 + 128) * 512 // 8  # column parallel over the 16 heads
    assert t[a + "q_proj.weight"] == 16 * (128 + 64) * 2048 // 8 and t[a + "o_proj.weight"] == 2048 * 16 * 128 // 8
    assert t["model.layers.1.mlp.experts.gate_up_proj"] == 64 * 2 * 1408 * 2048 // 8  # fused experts, split over ranks


def test_layer_kinds_of_the_hybrid_families():
    g2 = K.layer_kinds(dep("gemma-2-9b"))
    assert g2[:2] == [("sliding", 4096), ("full", None)] and g2.count(("sliding", 4096)) == 21
    g3 = K.layer_kinds(dep("gemma-3-12b-it"))
    assert g3.count(("sliding", 1024)) == 40 and g3.count(("full", None)) == 8 and g3[5] == ("full", None)
    # groups of equal size (8): 1 full + 5 sliding
    assert [g["kind"] for g in K.kv_groups(dep("gemma-3-12b-it"))].count("sliding") == 5
    assert K.plan(dep("gemma-3-12b-it")).groups == 6
    # a sliding layer needs cdiv(min(window - 1 + batched, L), 16) + 1 blocks, a full one cdiv(L, 16)
    assert K.plan(dep("gemma-2-9b")).blocks_per_request == 256 + (-(-min(4095 + 8192, 4096) // 16) + 1) == 513
    assert K.layer_kinds(dep("deepseek-v2-lite")) == [("full", None)] * 27


def test_moe_expert_namings_are_all_read():
    f = K.model_facts("qwen3-30b-a3b", True)
    assert (f["experts"], f["top_k"], f["intermediate"], len(f["moe_layers"])) == (128, 8, 768, 48)
    f = K.model_facts("mixtral-8x7b", True)
    assert (f["experts"], f["top_k"], f["intermediate"]) == (8, 2, 14336)
    f = K.model_facts("deepseek-v2-lite", True)
    assert (f["experts"], f["top_k"], f["intermediate"], f["shared_intermediate"]) == (64, 6, 1408, 2 * 1408)
    assert f["moe_layers"] == tuple(range(1, 27))  # first_k_dense_replace = 1


# --- Versions: registry, defaults, model runner -------------------------------------------------------------------

def test_default_gpu_memory_utilization_is_the_versions():
    assert K.Deployment(model="qwen3-8b").gpu_memory_utilization == 0.92  # vllm 0.25.0 config/cache.py
    assert K.Deployment(model="llama-2-7b", vllm_version="0.8.3").gpu_memory_utilization == 0.9  # 0.8.3 arg_utils.py
    d = K.Deployment(model="llama-2-7b")
    assert K.plan(d).budget_bytes == -(-150_109_880_320 * 92 // 100)
    assert d.replace(vllm_version="0.8.3").gpu_memory_utilization == 0.9  # a defaulted value follows the version
    assert K.Deployment(model="llama-2-7b", gpu_memory_utilization=0.5).replace(vllm_version="0.8.3").gpu_memory_utilization == 0.5


@pytest.mark.parametrize("model,version,match", [
    ("qwen3-8b", "0.8.3", r"Qwen3ForCausalLM needs vLLM >= 0.8.4 \(it is not in vLLM 0.8.3's model registry\)"),
    ("qwen3-30b-a3b", "0.8.3", r"Qwen3MoeForCausalLM needs vLLM >= 0.8.4"),
])
def test_architectures_not_in_a_versions_registry_are_refused(model, version, match):
    with pytest.raises(K.NotModelledError, match=match):
        K.Deployment(model=model, vllm_version=version)
    K.Deployment(model=model, vllm_version="0.25.0")  # and fine where the registry has them


def test_model_runner_per_version_and_architecture():
    assert [K.model_runner(dep(m)) for m in ("qwen3-8b", "gemma-3-12b-it", "deepseek-v2-lite", "qwen3-30b-a3b", "mixtral-8x7b")] == \
        ["v2", "v2", "v2", "v1", "v1"]
    assert K.model_runner(scout4()) == "v1" and K.model_runner(dep("qwen3-8b").replace(vllm_version="0.8.3", model="llama-2-7b")) == "v1"


def _cfg(tmp_path, model, **changes):
    raw = json.loads((K.M.config_path(model)).read_text())
    for k, v in changes.items():
        if v is None:
            raw.pop(k, None)
        else:
            raw[k] = v
    p = tmp_path / f"{model}-changed.json"
    p.write_text(json.dumps(raw))
    return str(p)


def test_multimodal_plans_include_the_vision_tower_and_say_what_is_estimated():
    mm, text = K.plan(dep("gemma-3-12b-it", text_only=False)), K.plan(dep("gemma-3-12b-it"))
    vision = K.M.parameters("gemma-3-12b-it").query("component == 'vision'").numel.sum()
    assert vision > 0 and mm.weights_bytes > text.weights_bytes + 2 * vision * 0.99
    assert text.notes == () and "vision encoder" in mm.notes[0]


def test_unmodelled_architectures_and_checkpoints_are_refused(tmp_path):
    with pytest.raises(K.NotModelledError, match=r"FooForCausalLM .* is not modelled by the KV planner; modelled architectures: "):
        K.Deployment(model=_cfg(tmp_path, "llama-2-7b", architectures=["FooForCausalLM"]))
    with pytest.raises(K.NotModelledError, match=r"is a 'fp8' checkpoint: how vLLM stores those weights is not modelled"):
        K.Deployment(model=_cfg(tmp_path, "deepseek-v2-lite", quantization_config={"quant_method": "fp8", "weight_block_size": [128, 128]}))


def test_bad_configs_are_refused_naming_the_field(tmp_path):
    with pytest.raises(ValueError, match=r"field 'num_key_value_heads' is missing"):
        K.Deployment(model=_cfg(tmp_path, "qwen3-8b", num_key_value_heads=None))
    with pytest.raises(ValueError, match=r"field 'num_key_value_heads' = 7 does not divide num_attention_heads = 32"):
        K.Deployment(model=_cfg(tmp_path, "qwen3-8b", num_key_value_heads=7))
    with pytest.raises(ValueError, match=r"field 'hidden_size' must be a positive integer, got -4096"):
        K.Deployment(model=_cfg(tmp_path, "qwen3-8b", hidden_size=-4096))
    with pytest.raises(K.NotModelledError, match=r"field 'max_position_embeddings' is missing"):
        K.Deployment(model=_cfg(tmp_path, "qwen3-8b", max_position_embeddings=None))


# --- The one-GPU records: seven families on vLLM 0.25.0, default utilization -------------------------------------

NEW = {"tp1-qwen3-8b": 816_640, "tp1-mistral-7b-v0.3": 933_952, "tp1-gemma-2-9b": 341_405, "tp1-gemma-3-12b-it": 283_535,
       "tp1-qwen3-30b-a3b": 751_856, "tp1-deepseek-v2-lite": 3_380_144, "tp1-mixtral-8x7b": 323_792}
TOLERANCE_PCT = 0.6  # the largest error reached: Qwen3-30B-A3B +0.52% (V1 sampler of a 151,936 vocabulary)


def _new_records() -> pd.DataFrame:
    runs = R.results("context_limits")
    ok = runs[runs.run_id.isin(["h200x1-g", "h200x1-g2"]) & (runs.outcome == "ok")]
    assert dict(zip(ok.config, ok.kv_cache_tokens.astype(int))) == NEW
    return ok


def test_new_records_were_started_with_vllms_default_utilization():
    ok = _new_records()
    assert set(ok.requested_gib) == {128.62} and set(ok.init_total_gib) == {139.8}  # 0.92 x 139.8 GiB
    assert set(ok.gpu_memory_utilization) == {0.92} and set(ok.tp) == {1}


def test_token_formula_is_exact_given_vllms_available_memory():
    for _, r in _new_records().iterrows():
        d = RUN.GPU_CONFIGS[r.config].deployment(1)
        avail = int(r.kv_memory_to_requested_bytes) + 150 * MiB  # eager: + the 150 MiB redundancy buffer
        assert K.tokens_for_available(d, avail) == int(r.kv_cache_tokens), r.config


def test_planner_predicts_every_new_record_within_tolerance():
    errors = {}
    for _, r in _new_records().iterrows():
        p = K.plan(RUN.GPU_CONFIGS[r.config].deployment(1))
        assert p.outcome == "ok" and p.sources["activation_peak"] == "estimated"
        errors[r.config] = 100 * (p.kv_cache_tokens - r.kv_cache_tokens) / r.kv_cache_tokens
    assert max(abs(e) for e in errors.values()) <= TOLERANCE_PCT, errors
    assert abs(errors["tp1-deepseek-v2-lite"]) < 0.5  # was -72% with 16 ordinary KV heads


def test_weights_per_gpu_against_the_logged_figures():
    for _, r in _new_records().iterrows():
        w = K.plan(RUN.GPU_CONFIGS[r.config].deployment(1)).weights_bytes / GiB
        # Gemma 3: its two rope caches (linear x8: 1,048,576 x 256, and the local one) are modelled; 0.14 GiB remain unexplained
        tol = 0.15 if r.config == "tp1-gemma-3-12b-it" else 0.07 if r.config == "tp1-deepseek-v2-lite" else 0.006
        assert abs(w - r.weights_gib) <= tol, (r.config, w, r.weights_gib)


def test_non_torch_default_is_what_every_one_gpu_record_logged():
    assert set(_new_records().non_torch_increase_gib) == {0.22}
    assert K.DEFAULT_NON_TORCH_TP1 == round(0.22 * GiB)


# --- Hand-computed cases (copied from tests/chapters/test_context_limits.py) ---------------------------------------

def test_page_size_is_two_x_block_x_kv_heads_per_rank_x_head_dim_x_dtype():
    assert K.page_bytes(scout4()) == 2 * 16 * (8 // 4) * 128 * 2 == 16_384
    assert K.page_bytes(scout4(num_gpus=8)) == 2 * 16 * 1 * 128 * 2 == 8_192
    assert K.page_bytes(scout4(kv_dtype="fp8")) == 8_192


def test_scout_bf16_tp4_weights_per_gpu_from_the_architecture():
    sharded = 107_769_861_120 - 3_932_160 - 496_640
    rope = 10_485_760 * 128 * 2
    expected = sharded // 4 * 2 + (3_932_160 + 496_640) * 2 + rope
    assert expected == 56_575_928_320
    assert K.weights_per_gpu(scout4()) == expected


def test_scout_fp8_online_tp4_weights_per_gpu_from_the_architecture():
    fp8 = 3_019_898_880 + 6_039_797_760 + 96_636_764_160
    bf16 = 2 * 1_034_485_760
    scales = 48 * 4 * (4 + 3 + 16 * 2 + 16)
    expected = fp8 // 4 + bf16 // 4 * 2 + (3_932_160 + 496_640) * 2 + 10_485_760 * 128 * 2 + scales
    assert K.weights_per_gpu(scout4(weights="fp8-online")) == expected == 30_151_823_680


def test_maverick_fp8_checkpoint_keeps_everything_but_routed_experts_in_bf16():
    t = K.weight_table(K.Deployment(model=MAVERICK_FP8, gpu="h200", num_gpus=4, weights="fp8-checkpoint"))
    fp8 = t[t.precision == "fp8"]
    assert set(fp8.component) == {"experts"} and len(fp8) == 2 * 24
    gate_up = fp8[fp8.name.str.endswith("gate_up_proj")].iloc[0]
    assert gate_up.rank_bytes == 128 * 5120 * 2 * 8192 // 4 + 4 * 128 * (2 * 8192 // 4)


def test_token_formula_0_8_3_is_blocks_times_block_size():
    p = K.plan(K.Deployment(model=SCOUT, gpu="h100-80gb", num_gpus=8, vllm_version="0.8.3", max_model_len=1_000_000))
    assert p.bytes_per_block == 48 * 8_192 and p.num_blocks == p.available_kv_bytes // 393_216
    assert p.kv_cache_tokens == p.num_blocks * 16  # the startup check's longest length: tests/chapters/test_context_limits.py


def test_token_formula_0_25_hybrid_uses_four_groups_and_concurrency():
    p = K.plan(scout4())
    assert p.groups == 4 and p.bytes_per_block == 12 * 16_384
    assert p.blocks_per_request == 200_000 // 16 + 3 * (8_192 + 8_192) // 16 == 15_572
    assert p.kv_cache_tokens == int(p.num_blocks / 15_572 * 200_000)
    assert p.max_model_len_that_starts == (p.available_kv_bytes // (12 * 16_384) - 3 * 1_024) * 16
    off = K.plan(scout4(hybrid_kv=False))
    assert off.groups == 1 and off.bytes_per_block == 48 * 16_384 and off.blocks_per_request == 12_500


def _bracket(d, avail_gib, logged):
    return K.tokens_for_available(d, int((avail_gib - 0.005) * GiB)) <= logged <= K.tokens_for_available(d, int((avail_gib + 0.005) * GiB))


def test_token_formula_reproduces_the_device_probes_in_the_notes():
    assert _bracket(scout4(), 69.48, 4_873_516)
    assert _bracket(scout4(weights="fp8-online", hybrid_kv=False), 39.94, 872_416)
    gpt = K.Deployment(model="gpt-oss-20b", gpu="h100-80gb", weights="mxfp4-checkpoint", max_model_len=8192)
    assert K.plan(gpt).blocks_per_request == 1_025 and _bracket(gpt, 56.15, 1_225_347)
    assert _bracket(K.Deployment(model="llama-2-7b", gpu="h200", max_model_len=4096), 115.06, 235_632)


def test_pipeline_parallel_projects_the_groups_onto_each_stage():
    d = K.Deployment(model=SCOUT, gpu="h200", num_gpus=4, pp=2, text_only=True, max_model_len=200_000)
    p = K.plan(d)
    assert p.page_bytes == 2 * 16 * 4 * 128 * 2 and p.bytes_per_block == 6 * 32_768
    stages = K.weight_table(d).groupby("stage").rank_bytes.sum()
    assert len(stages) == 2 and stages.max() < K.weights_per_gpu(K.Deployment(model=SCOUT, gpu="h200", num_gpus=2, text_only=True))


def test_measured_inputs_replace_the_estimates_and_are_reported():
    p = K.plan(scout4(activation_peak_bytes=3 * GiB, non_torch_bytes=GiB // 2))
    assert p.sources == {"weights": "architecture", "activation_peak": "measured", "non_torch": "measured", "cudagraph": "not subtracted"}
    assert p.available_kv_bytes == p.budget_bytes - p.weights_bytes - 3 * GiB - GiB // 2
    assert p.budget_bytes == -(-150_109_880_320 * 92 // 100)  # 0.25: ceil(util x total), util = the default 0.92


def test_h100_emulation_requests_exactly_0_9_of_an_h100():
    assert K.plan(scout4(gpu_memory_utilization=K.emulated_utilization())).budget_bytes == -(-85_017_493_504 * 9 // 10) == 76_515_744_154


def test_weights_over_the_budget_are_an_oom_outcome_not_a_crash():
    p = K.plan(K.Deployment(model=MAVERICK_FP8, gpu="h100-80gb", num_gpus=4, weights="fp8-checkpoint", vllm_version="0.8.3"))
    assert p.outcome == "oom" and "> budget 71.26 GiB" in p.message and p.kv_cache_tokens == 0


def test_too_long_max_model_len_is_a_refusal_naming_the_largest_that_starts():
    p = K.plan(scout4(max_model_len=9_000_000, gpu_memory_utilization=K.emulated_utilization()))
    assert p.outcome == "refused" and f"{p.max_model_len_that_starts:,}" in p.message
    assert "derived maximum 10,485,760" in K.plan(scout4(max_model_len=20_000_000)).message


@pytest.mark.parametrize("kw,match", [
    (dict(num_gpus=3), r"tensor parallel size 3 does not divide the 40 attention heads"),
    (dict(num_gpus=16), r"tensor parallel size 16 does not divide the 40"),
    (dict(num_gpus=4, tp=2), r"tp x pp = 2 x 1 = 2 does not use num_gpus = 4"),
    (dict(max_model_len=-5), r"max_model_len must be a positive integer, got -5"),
    (dict(max_num_batched_tokens=0), r"max_num_batched_tokens must be a positive integer"),
    (dict(gpu_memory_utilization=1.5), r"gpu_memory_utilization must be in \(0, 1\]"),
    (dict(gpu="a100"), r"unknown GPU 'a100'"),
    (dict(model="llama-5"), r"unknown model 'llama-5'"),
    (dict(vllm_version="0.9.9"), r"unknown vLLM version"),
    (dict(weights="int4"), r"weights must be one of"),
    (dict(kv_dtype="fp4"), r"kv_dtype must be one of"),
    (dict(vllm_version="0.8.3", hybrid_kv=True), r"0.8.3 has no hybrid KV cache manager"),
    (dict(weights="fp8-checkpoint"), r"needs a config with a compressed-tensors quantization_config"),
    (dict(model="gpt-oss-20b", weights="mxfp4-checkpoint", vllm_version="0.8.3"), r"GptOssForCausalLM needs vLLM >= 0.10.1"),
    (dict(model="gpt-oss-20b"), r"is a mxfp4 checkpoint; use weights='mxfp4-checkpoint'"),
    (dict(activation_peak_bytes=-1), r"activation_peak_bytes must be a non-negative"),
])
def test_bad_input_is_a_clear_error(kw, match):
    with pytest.raises(ValueError, match=match):
        K.Deployment(**{"model": SCOUT, **kw})


# --- The run machinery and the CLI --------------------------------------------------------------------------------

def test_call_g_starts_servers_with_the_versions_defaults():
    cfgs = RUN.resolve_configs(["g"])
    assert [c.model for c in cfgs] == ["qwen3-8b", "mistral-7b-v0.3", "gemma-2-9b", "gemma-3-12b-it", "qwen3-30b-a3b",
                                       "deepseek-v2-lite", "mixtral-8x7b"]
    args = cfgs[0].server_args(1)
    assert "--gpu-memory-utilization" not in args and args[args.index("--max-model-len") + 1] == "4096" and "--enforce-eager" in args
    assert cfgs[0].utilization == 0.92 and cfgs[0].deployment(1).gpu_memory_utilization == 0.92


def test_a_model_the_planner_refuses_is_still_a_measured_row(tmp_path):
    cfg = RUN.GpuConfig("x", _cfg(tmp_path, "llama-2-7b", architectures=["FooForCausalLM"]), "bf16", "default", max_model_len=4096, gpus=1)
    row = RUN._row(cfg, 1, "ok", None, {"kv_cache_tokens": 1}, {}, 1.0)
    assert row["pred_outcome"] == "not modelled" and "FooForCausalLM" in row["pred_error"] and row["kv_cache_tokens"] == 1


def test_cli_defaults_come_from_the_deployment_and_the_chapter(monkeypatch):
    from llmstudy import cli
    from llmstudy.chapters.context_limits.params import PARAMS

    seen = []
    monkeypatch.setattr(cli, "_capacity", lambda a: seen.append(a) or 0)
    assert cli.main(["capacity"]) == 0
    args = seen[0]
    for flag in ("model", "gpu", "num_gpus", "tp", "pp", "weights", "kv_dtype", "gpu_memory_utilization", "max_model_len"):
        assert getattr(args, flag) == K.DEPLOYMENT_DEFAULTS[flag], flag
    assert args.deadline_s == PARAMS["deadline_s"].default and args.run_id == PARAMS["run_id"].default


def test_cli_plans_mla_and_refuses_qwen3_on_0_8_3():
    ok = subprocess.run([sys.executable, "-m", "llmstudy.cli", "capacity", "--model", "deepseek-v2-lite", "--max-model-len", "4096",
                         "--enforce-eager"], capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    tokens = K.plan(K.Deployment(model="deepseek-v2-lite", max_model_len=4096, enforce_eager=True)).kv_cache_tokens
    assert f"GPU KV cache size: {tokens:,} tokens" in ok.stdout and "1,152 B per token and layer" in ok.stdout and "(0.92" not in ok.stdout
    assert "budget                128.62 GiB" in ok.stdout  # 0.92 x 139.80 GiB
    bad = subprocess.run([sys.executable, "-m", "llmstudy.cli", "capacity", "--model", "qwen3-8b", "--version", "0.8.3"],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "Qwen3ForCausalLM needs vLLM >= 0.8.4" in bad.stderr
