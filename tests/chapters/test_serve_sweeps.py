"""What the two serving chapters share (llmstudy.chapters.serve_sweeps), against the committed H100 records.

Each chapter's own spec, statements and notebook are tested in test_batch_size_sweep.py and test_length_sweep.py."""

import pandas as pd
import pytest
from conftest import ROOT

from llmstudy.chapters import serve_sweeps as SP
from llmstudy.core import records as R
from llmstudy.serving import sweep as SB

BATCH = ROOT / "data/runs/batch_size_sweep/h100-b"
LENGTH = ROOT / "data/runs/length_sweep"
KV_TOKENS = 121_424  # "GPU KV cache size" in every first server start of these records


# --- the records themselves ---------------------------------------------------------------------------------------

def test_every_batch_point_is_ok_with_exact_output_lengths():
    pts = pd.read_csv(BATCH / "points.csv")
    assert len(pts) == 36 and set(pts.max_num_seqs) == {4, 16, 64, 256} and set(pts.concurrency) == set(SB.CONCURRENCY)
    assert (pts.outcome == "ok").all() and pts.exact_output_lengths.all()
    req = pd.read_csv(BATCH / "requests.csv")
    assert req.ok.all() and (req.output_sequence_length == 256).all() and (req.input_sequence_length == 512).all()
    assert req.groupby("point_id").size().to_dict() == pts.set_index("point_id").num_prompts.to_dict()


def test_failed_length_points_are_in_the_records_not_dropped():
    res = SP.load("length_sweep")
    b = SP.select(res, run_id="h100-b")
    refused = b[b.outcome == "refused"]
    assert set(refused[refused.sweep == "max_model_len"].max_model_len) == {8192, 32768}
    assert (b[b.sweep == "io"].outcome == "refused").sum() == 24  # the 16,384 server refused: all of the grid
    assert (SP.select(res, run_id="h100-c").outcome == "ok").sum() == 6
    d = SP.select(res, run_id="h100-d")
    assert len(d) == 12 and set(d.concurrency) == {1}  # the concurrency-16 half is not in the record
    bad = d[d.outcome != "ok"]
    assert sorted(bad.input_len) == [8192] * 3 and (bad.outcome == "error").all()
    assert bad.error.str.startswith("all 4 requests failed").all() and bad.output_token_throughput.isna().all()
    assert d[d.outcome == "ok"].exact_output_lengths.all()


# --- derived tables, recomputed by hand ---------------------------------------------------------------------------

def test_saturation_table_is_the_plateau_recomputed_from_results_csv():
    raw = pd.read_csv(BATCH / "results.csv")
    sat = SP.saturation(SP.load("batch_size_sweep", ["h100-b"])).set_index("max_num_seqs")
    assert list(sat.index) == [4, 16, 64, 256]
    limit = KV_TOKENS / (512 + 256 / 2)
    assert limit == 189.725
    for s in (4, 16, 64, 256):
        on = raw[(raw.max_num_seqs == s) & (raw.concurrency >= s)]
        row = sat.loc[s]
        assert row.plateau_points == len(on)
        assert row.plateau_tok_s == pytest.approx(on.output_token_throughput.mean(), rel=1e-12)
        assert row.plateau_itl_ms == pytest.approx(on.inter_token_latency_avg.mean(), rel=1e-12)
        assert row.batch == min(s, limit)
        assert row.batch_over_itl_tok_s == pytest.approx(min(s, limit) * 1000 / on.inter_token_latency_avg.mean(), rel=1e-12)
        one = raw[raw.max_num_seqs == s]
        assert row.peak_tok_s == one.output_token_throughput.max() and row.last_concurrency == 256
    # the cap of 256 is bounded by the KV cache: its one plateau point is c=256
    assert sat.loc[256, "plateau_tok_s"] == raw[(raw.max_num_seqs == 256) & (raw.concurrency == 256)].output_token_throughput.iloc[0]
    assert 0.9 < sat.plateau_vs_batch_over_itl.min() and sat.plateau_vs_batch_over_itl.max() < 1.0


def test_decode_floor_hand_computed_for_llama2_7b_on_h100():
    f = SP.decode_floor("llama-2-7b", "NVIDIA H100 80GB HBM3", batch=1, context=640)
    # all parameters but the 32,000 x 4,096 input embedding, bf16; K and V: 2 x 32 layers x 4,096 x 2 bytes per token
    assert f["weight_bytes"] == (6_738_415_616 - 131_072_000) * 2 == 13_214_687_232
    assert f["step_bytes"] == 13_214_687_232 + 640 * 524_288
    assert f["itl_floor_ms"] == pytest.approx(13_550_231_552 / 3.35e12 * 1e3, rel=1e-12)
    assert SP.decode_floor("llama-2-7b", "NVIDIA H100 80GB HBM3", 1, 640, bandwidth=3.0e12)["itl_floor_ms"] == pytest.approx(13_550_231_552 / 3.0e12 * 1e3)


def test_roofline_rows_use_the_kv_limited_batch():
    rf = SP.roofline(SP.load("batch_size_sweep", ["h100-b"]), "llama-2-7b")
    assert len(rf) == 36
    row = SP.select(rf, max_num_seqs=256, concurrency=256).iloc[0]
    assert row.batch == 189.725
    assert row.itl_floor_ms == pytest.approx((13_214_687_232 + 189.725 * 640 * 524_288) / 3.35e12 * 1e3)
    c1 = SP.select(rf, concurrency=1)
    assert c1.floor_over_itl.between(0.6, 0.75).all()  # measured ITL 6.02-6.06 ms against a 4.04 ms floor


def test_itl_context_fit_matches_a_closed_form_least_squares():
    d = SP.select(SP.load("length_sweep", ["h100-d"]), outcome="ok")
    fit = SP.itl_context_fit(d, "llama-2-7b")
    x = (d.input_len + d.output_len / 2).to_numpy(float)
    y = d.inter_token_latency_avg.to_numpy(float)
    slope = ((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum()
    assert fit["points"] == 9
    assert fit["slope_us_per_token"] == pytest.approx(slope * 1e3, rel=1e-9)
    assert fit["intercept_ms"] == pytest.approx(y.mean() - slope * x.mean(), rel=1e-9)
    assert fit["roofline_slope_us_per_token"] == pytest.approx(524_288 / 3.35e12 * 1e6, rel=1e-12)


def test_metric_table_reads_the_tidy_metrics():
    met = SP.load("batch_size_sweep", ["h100-b"], table="metrics")
    pid = "max_num_seqs-seqs16-len4096-in512-out256-c16"
    t = SP.metric_table(met, [pid])
    assert list(t.metric) == list(SP.GENAI_PERF_METRICS)
    raw = pd.read_csv(BATCH / "metrics.csv")
    want = raw[(raw.point_id == pid) & (raw.metric == "inter_token_latency") & (raw.stat == "p90")].value.iloc[0]
    assert t.set_index("metric").loc["inter_token_latency", "p90"] == want
    assert t.set_index("metric").loc["output_sequence_length", "p99"] == 256


def test_runs_info_reports_the_resumed_sweep():
    info = SP.runs_info("batch_size_sweep").set_index("run_id")
    assert info.loc["h100-b", "sweep_wall_s"] == 1202.8 and info.loc["h100-b", "calls"] == 3
    assert info.loc["h100-b", "sweep_started_utc"] == "2026-11-21T23:48:45+00:00"
    ls = SP.runs_info("length_sweep").set_index("run_id")
    assert ls.loc["h100-c", "VLLM_ALLOW_LONG_MAX_MODEL_LEN"] == "1" and ls.loc["h100-b", "VLLM_ALLOW_LONG_MAX_MODEL_LEN"] == "not recorded"


# --- server logs --------------------------------------------------------------------------------------------------

def test_server_logs_show_the_kv_cache_and_the_busiest_moment():
    logs = SP.server_logs("batch_size_sweep", ["h100-b"]).set_index("max_num_seqs")
    assert (logs.kv_cache_tokens == KV_TOKENS).all() and (logs.max_concurrency == 29.64).all()
    assert logs.max_running.to_dict() == {4: 4, 16: 16, 64: 64, 256: 214}  # 256 is held back by the KV cache
    assert logs.loc[256, "max_waiting"] == 55 and logs.loc[256, "max_kv_usage_pct"] == 98.9
    assert (logs.failure == "").all()


def test_length_logs_show_refusals_override_and_the_engine_death():
    logs = SP.server_logs("length_sweep")
    refused = SP.select(logs, run_id="h100-b", max_model_len=[8192, 16384, 32768])
    assert len(refused) == 3 and refused.failure.str.contains("max_position_embeddings=4096").all() and refused.kv_cache_tokens.isna().all()
    served = SP.select(logs, max_model_len=[2048, 4096, 8192, 32768])
    served = served[served.failure == ""]
    assert sorted(served.max_model_len) == [2048, 4096, 8192, 32768] and (served.kv_cache_tokens == KV_TOKENS).all()
    assert (served.max_concurrency == (KV_TOKENS / served.max_model_len).round(2)).all()  # 59.29, 29.64, 14.82, 3.71
    d = SP.select(logs, run_id="h100-d").set_index("start")
    assert d.loc[1, "kv_cache_tokens"] == KV_TOKENS and d.loc[2, "kv_cache_tokens"] == 121_536
    assert d.loc[1, "failure"].endswith("< 4096") and d.loc[2, "failure"] == ""


def test_four_bit_records_say_what_the_engine_did_with_the_weights():
    """The H100 records at max_num_seqs 16 (2026-11-22): AWQ loaded as 4-bit; GPTQ with dummy weights did not."""
    if not (ROOT / "data/runs/batch_size_sweep/h100-awq").exists():
        pytest.skip("no 4-bit records")
    q = SP.fixed_batch_table("batch_size_sweep", ["llama-2-7b", "llama-2-7b-gptq", "llama-2-7b-awq"]).set_index("run_id")
    assert set(q.index) == {"h100-b", "h100-bf16-seqs16", "h100-gptq", "h100-gptq-kernel", "h100-awq"}
    assert q.loc["h100-awq", "engine quantization"] == "auto_awq" and q.loc["h100-awq", "GEMM kernel"] == "MacheteLinearKernel"
    assert q.loc["h100-awq", "weights GiB"] == 3.74 and q.loc["h100-awq", "KV tokens"] == 139_632
    for r in ("h100-gptq", "h100-gptq-kernel"):  # auto_gptq resolved, but no layer quantized: bf16-sized weights
        assert q.loc[r, "engine quantization"] == "auto_gptq" and q.loc[r, "GEMM kernel"] == "unquantized" and q.loc[r, "weights GiB"] == 12.55
    assert q.loc["h100-b", "prefix caching"] == "True" and q.loc["h100-bf16-seqs16", "prefix caching"] == "False"
    # 4-bit weights: a quarter of the bytes per decode step, so a faster step at c=1
    assert q.loc["h100-awq", "c1 ITL ms"] < 0.75 * q.loc["h100-bf16-seqs16", "c1 ITL ms"]
    # the main sweep's figures never mix in the single-setting comparison records
    assert SP.sweep_runs("batch_size_sweep", "llama-2-7b", [4, 16, 64, 256]) == ["h100-b"]


def test_gptq_quantizes_once_the_config_names_its_layers():
    """engine_comparison/h100-engines3 (2026-11-22): the GPTQ config with modules_in_block_to_quantize served by vLLM
    0.25.0 with dummy weights loads 4-bit weights and runs Machete; the table reads only the vLLM server of that
    two-engine record (the SGLang server's log and points are not vLLM's)."""
    if not (ROOT / "data/runs/engine_comparison/h100-engines3").exists():
        pytest.skip("no h100-engines3 record")
    q = SP.fixed_batch_table("engine_comparison", ["llama-2-7b-gptq"])
    assert len(q) == 1 and q.loc[0, "run_id"] == "h100-engines3" and q.loc[0, "experiment"] == "engine_comparison"
    r = q.iloc[0]
    assert (r["engine quantization"], r["GEMM kernel"], r["weights GiB"], r["KV tokens"], r["prefix caching"]) == ("auto_gptq", "MacheteLinearKernel", 3.68, 139_664, "False")
    res = R.load_record(ROOT / "data/runs/engine_comparison/h100-engines3").table("results")
    v = res[(res.engine == "vllm")].set_index("concurrency")
    assert r["c1 ITL ms"] == v.loc[1, "inter_token_latency_avg"] and r["c16 output tok/s"] == v.loc[16, "output_token_throughput"]
    assert r["c16 output tok/s"] == pytest.approx(2390.2375, abs=1e-3)
