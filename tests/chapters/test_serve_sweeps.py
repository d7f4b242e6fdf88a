"""The serving chapters: analysis helpers against the committed H100 records, and both notebooks under papermill."""

import json
import sys

import pandas as pd
import papermill as pm
import pytest

from llmstudy.core import params as PR
from llmstudy.core import records as R
from llmstudy.serving import sweep as SB
from llmstudy.chapters import serve_sweeps as SP

from conftest import ROOT

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

def test_engine_stats_and_failure_reason_parse_vllm_lines():
    line = "(APIServer pid=1) INFO 11-22 00:01:02 [loggers.py:273] Engine 000: Avg prompt throughput: 1.6 tokens/s, Avg generation throughput: 154.4 tokens/s, Running: 201 reqs, Waiting: 55 reqs, GPU KV cache usage: 87.1%, Prefix cache hit rate: 81.7%"
    st = SP.engine_stats(line + "\nnoise\n" + line.replace("201", "7"))
    assert st.values.tolist() == [[201, 55, 87.1, 81.7], [7, 55, 87.1, 81.7]]
    assert SP.failure_reason("x\n  Value error, User-specified max_model_len (8192) is too big. [type=value_error, input=...]") == "User-specified max_model_len (8192) is too big."
    assert SP.failure_reason("k.py:37: unknown: block: [1,0,0] Assertion `index out of bounds: 0 <= i < 4096` failed.") == "index out of bounds: 0 <= i < 4096"
    assert SP.failure_reason("all fine") == ""


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


# --- parameters -----------------------------------------------------------------------------------------------------

def test_bad_parameters_are_named():
    spec, lspec = SP.batch_params(), SP.length_params()
    with pytest.raises(PR.ParameterError, match=r"max_num_seqs=\[4, 0\]: every value must be a positive integer"):
        PR.validate(spec, {"max_num_seqs": [4, 0]})
    with pytest.raises(PR.ParameterError, match=r"mode='train': must be one of"):
        PR.validate(spec, {"mode": "train"})
    with pytest.raises(PR.ParameterError, match=r"unknown parameter\(s\) \['max_batch_size'\]"):
        PR.validate(spec, {"max_batch_size": [4]}, strict=True)
    with pytest.raises(PR.ParameterError, match="budget_s=-5: must be > 0"):
        PR.validate(spec, {"budget_s": -5})
    with pytest.raises(PR.ParameterError, match="unknown model 'llama-3'"):
        PR.validate(lspec, {"model": "llama-3"})
    with pytest.raises(PR.ParameterError, match=r"sweeps=\['context'\]"):
        PR.validate(lspec, {"sweeps": ["context"]})
    assert PR.validate(spec, {"budget_s": 400})["budget_s"] == 400 and PR.validate(lspec, {})["io_max_model_len"] == 16384


def test_run_mode_needs_vllm_and_says_so():
    try:
        import vllm  # noqa: F401
        pytest.skip("vLLM is importable here")
    except ImportError:
        pass
    with pytest.raises(RuntimeError, match="run mode needs vLLM"):
        SP.require_vllm(sys.executable)


# --- the notebooks under papermill ----------------------------------------------------------------------------------

def _run(tmp_path, name, **params):
    out = tmp_path / f"{name}.out.ipynb"
    pm.execute_notebook(str(ROOT / "notebooks" / f"{name}.ipynb"), str(out), parameters=params, cwd=str(ROOT / "notebooks"), progress_bar=False, kernel_name="python3")
    nb = json.loads(out.read_text())
    glue = {o["metadata"]["scrapbook"]["name"]: o["data"]["application/papermill.record/text/plain"]
            for c in nb["cells"] for o in c.get("outputs", []) if o.get("metadata", {}).get("scrapbook")}
    return out.read_text(), glue


def test_batch_notebook_renders_the_records(tmp_path):
    text, glue = _run(tmp_path, "batch_size_sweep")
    assert '"ename"' not in text and text.count("image/png") >= 2
    assert glue["bs_plateau_256"] == "4,786" and glue["bs_kv_tokens"] == "121,424" and glue["bs_max_running"] == "214"
    assert glue["bs_calls"] == "3" and glue["bs_wall_min"] == "20" and glue["bs_c1_itl"] == "6.02–6.06"
    assert "runs: h100-b" in text and "probe (H100, vLLM 0.25 defaults)" in text and "1,157" in text
    assert glue["bs_q_awq_w"] == "3.74" and glue["bs_q_gptq_w"] == "12.55, 12.55" and glue["bs_q_base_run"] == "h100-bf16-seqs16"


def test_length_notebook_renders_refusals_and_failures(tmp_path):
    text, glue = _run(tmp_path, "length_sweep")
    assert '"ename"' not in text and text.count("image/png") >= 3
    assert glue["ls_kv_tokens"] == "121,424" and glue["ls_lens"] == "2,048, 4,096, 8,192, 32,768"
    assert glue["ls_refusal"].startswith("User-specified max_model_len") and glue["ls_fit_points"] == "9"
    assert "index out of bounds" in text and "runs: h100-b, h100-c" in text and "runs: h100-d" in text
    assert glue["ls16_runs"] == "h100-e" and "runs: h100-e" in text  # the concurrency-16 half, kept apart from concurrency 1


@pytest.mark.parametrize("name", ["batch_size_sweep", "length_sweep"])
def test_notebooks_render_without_any_record(tmp_path, runs_root, name):
    text, glue = _run(tmp_path, name)
    assert '"ename"' not in text and "No run record yet" in text
    # ls_kv_bytes comes from the model config and bs_art_gptq is the article's published number: neither is a record
    assert glue and all(v == "n/a" for k, v in glue.items() if k not in ("ls_kv_bytes", "bs_art_gptq") and not k.startswith("claim_"))
    claims = {k: v for k, v in glue.items() if k.startswith("claim_")}
    assert claims and all("— not yet measured (no run record in data/runs/" in v for v in claims.values())  # the claims registry's wording


def test_notebook_stops_on_a_bad_parameter_before_any_work(tmp_path):
    with pytest.raises(pm.PapermillExecutionError) as e:
        _run(tmp_path, "batch_size_sweep", max_num_seqs=[4, -16])
    assert e.value.ename == "ParameterError" and "max_num_seqs=[4, -16]" in e.value.evalue


def test_notebook_run_mode_without_vllm_fails_before_any_server(tmp_path, runs_root, monkeypatch):
    monkeypatch.setenv("LLMSTUDY_VLLM_PYTHON", sys.executable)
    try:
        import vllm  # noqa: F401
        pytest.skip("vLLM is importable here")
    except ImportError:
        pass
    with pytest.raises(pm.PapermillExecutionError, match="run mode needs vLLM"):
        _run(tmp_path, "length_sweep", mode="run", run_id="nb-cpu")
    assert not list(runs_root.rglob("*"))  # nothing started, nothing written


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
