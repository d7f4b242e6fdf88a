"""The context-limits chapter: the KV-capacity planner against hand-computed cases, probe figures, bad input, run mode
(with a stand-in server on CPU), the recorded GPU runs, the CLI, the parameters, the page's statements for Llama 4
and for another model (forks), and the notebook."""

import argparse
import http.server
import json
import re
import subprocess
import sys
import threading
import types

import pandas as pd
import pytest
from conftest import ROOT

from llmstudy.chapters import context_limits as C
from llmstudy.core import records as R
from llmstudy.core.params import ParameterError, add_arguments, from_args, notebook_mismatches, validate

GiB = 2**30
SCOUT, MAVERICK, MAVERICK_FP8 = C.SCOUT, C.MAVERICK, C.MAVERICK_FP8


def scout4(**kw):
    base = dict(model=SCOUT, gpu="h200", num_gpus=4, text_only=True, max_model_len=200_000, enforce_eager=True)
    return C.Deployment(**{**base, **kw})


# --- Hand-computed cases -----------------------------------------------------------------------------------------
# The planner's own tests live in tests/serving/test_kv_planner.py. The cases below stay here while that file's copies
# of them assert less (0.8.3's concurrency, the hybrid-off token figure, the H100-budget and fp8 probes, Maverick's bf16
# attention, the OOM message, two bad inputs) or are not there (pipeline parallelism).

def test_maverick_fp8_checkpoint_keeps_everything_but_routed_experts_in_bf16():
    t = C.weight_table(C.Deployment(model=MAVERICK_FP8, gpu="h200", num_gpus=4, weights="fp8-checkpoint"))
    fp8 = t[t.precision == "fp8"]
    assert set(fp8.component) == {"experts"} and len(fp8) == 2 * 24  # gate_up and down of the 24 MoE layers
    assert set(t[t.component == "attention"].precision) == {"bf16"}
    # per-channel fp32 scales: gate_up keeps 128 x 2 x 8192/4 rows, down keeps 128 x 5120 rows, per layer
    gate_up = fp8[fp8.name.str.endswith("gate_up_proj")].iloc[0]
    assert gate_up.rank_bytes == 128 * 5120 * 2 * 8192 // 4 + 4 * 128 * (2 * 8192 // 4)


def test_token_formula_0_8_3_is_blocks_times_block_size():
    dep = C.Deployment(model=SCOUT, gpu="h100-80gb", num_gpus=8, vllm_version="0.8.3", max_model_len=1_000_000)
    p = C.plan(dep)
    # all 48 layers full length, page 8,192 B at TP=8 -> 393,216 B per block across layers
    assert p.bytes_per_block == 48 * 8_192
    assert p.num_blocks == p.available_kv_bytes // 393_216
    assert p.kv_cache_tokens == p.num_blocks * 16
    assert p.max_concurrency == p.kv_cache_tokens / 1_000_000
    # startup check: 48 x cdiv(L, 16) x 8192 <= avail(L), where a shorter max_model_len also shrinks the block table
    # 0.8.3 allocates before profiling (4 bytes x 1024 requests per block): n blocks fit while
    # 393,216 n <= avail + 4,096 (62,500 - n)  ->  largest L = 16 x floor((avail + 4,096 x 62,500) / 397,312)
    assert p.max_model_len_that_starts == 16 * ((p.available_kv_bytes + 4_096 * 62_500) // 397_312)
    assert p.max_model_len_that_starts < p.num_blocks * 16  # longer than 1,000,000: a bigger block table


def test_hybrid_off_in_0_25_is_one_group_of_48_layers():
    p = C.plan(scout4(hybrid_kv=False))
    assert p.groups == 1 and p.bytes_per_block == 48 * 16_384 and p.blocks_per_request == 12_500
    assert p.kv_cache_tokens == int(p.num_blocks / 12_500 * 200_000)


def _bracket(dep, avail_gib, logged):
    """The formula's tokens at the logged GiB +- half a unit of its last digit bracket the logged token figure."""
    lo = C.tokens_for_available(dep, int((avail_gib - 0.005) * GiB))
    hi = C.tokens_for_available(dep, int((avail_gib + 0.005) * GiB))
    return lo <= logged <= hi


def test_token_formula_reproduces_the_device_probes_in_the_notes():
    # ../shared/notes/device.md, Llama-4-Scout TP=4 on 4xH200, vLLM 0.25.0 (reference probes, not run records)
    assert _bracket(scout4(), 69.48, 4_873_516)  # bf16, H200 budget, hybrid on
    assert _bracket(scout4(), 15.34, 1_075_635)  # bf16, H100 budget
    assert _bracket(scout4(weights="fp8-online"), 39.94, 2_801_245)  # fp8 online, H100 budget
    assert _bracket(scout4(weights="fp8-online", hybrid_kv=False), 39.94, 872_416)  # hybrid manager off
    # gpt-oss-20b on an H100: 12 sliding + 12 full layers, 2 groups, sliding window 128
    gpt = C.Deployment(model="gpt-oss-20b", gpu="h100-80gb", weights="mxfp4-checkpoint", max_model_len=8192)
    assert C.plan(gpt).blocks_per_request == 512 + (-(-min(127 + 8192, 8192) // 16) + 1) == 1_025
    assert _bracket(gpt, 56.15, 1_225_347)
    # vllm-kv-cache.md: Llama-2-7B architecture, H200, 115.06 GiB -> 235,632 tokens (57.53x at 4,096)
    assert _bracket(C.Deployment(model="llama-2-7b", gpu="h200", max_model_len=4096), 115.06, 235_632)


def test_pipeline_parallel_projects_the_groups_onto_each_stage():
    dep = C.Deployment(model=SCOUT, gpu="h200", num_gpus=4, pp=2, text_only=True, max_model_len=200_000)
    p = C.plan(dep)
    # stage 0 owns layers 0-23: 6 of each group's 12 layers; TP=2 -> 4 KV heads -> page 32,768 B
    assert p.page_bytes == 2 * 16 * 4 * 128 * 2 and p.bytes_per_block == 6 * 32_768
    stages = C.weight_table(dep).groupby("stage").rank_bytes.sum()
    assert len(stages) == 2 and stages.max() < C.weights_per_gpu(C.Deployment(model=SCOUT, gpu="h200", num_gpus=2, text_only=True))


# --- Outcomes and bad input ----------------------------------------------------------------------------------------

def test_weights_over_the_budget_are_an_oom_outcome_not_a_crash():
    p = C.plan(C.Deployment(model=MAVERICK_FP8, gpu="h100-80gb", num_gpus=4, weights="fp8-checkpoint", vllm_version="0.8.3"))
    assert p.outcome == "oom" and p.message.startswith("OOM: weights ") and "> budget 71.26 GiB" in p.message
    assert p.kv_cache_tokens == 0 and p.max_model_len_that_starts == 0


# Bad deployments are refused with a clear message: tests/serving/test_kv_planner.py::test_bad_input_is_a_clear_error.


# --- The published tables --------------------------------------------------------------------------------------

def test_article_table_all_but_scout_4x_bf16_agree():
    art = C.article_comparison("0.8.3", "h100-80gb")
    assert len(art) == 8
    disagree = art[~art.agrees]
    assert disagree[["model", "GPUs", "precision"]].values.tolist() == [["Scout", 4, "BF16"]]
    oom = art[art["planner: outcome"] == "OOM"]
    assert oom[["model", "GPUs", "precision"]].values.tolist() == [["Maverick", 4, "BF16"], ["Maverick", 4, "FP8"], ["Maverick", 8, "BF16"]]
    reco = art[art["article: recommended max_model_len"] != "OOM"]
    assert (reco["planner: largest max_model_len"] >= reco["article: recommended max_model_len"].str.replace(",", "").astype(int)).all()


def test_blog_lengths_start_and_fp8_kv_doubles_scout_on_h100():
    blog = C.blog_comparison("0.8.3")
    assert blog["planner: starts at blog length"].all()
    assert (blog["planner: largest max_model_len"] >= blog["blog: max_model_len"]).all()
    mav_h200 = blog[(blog.model == "Maverick-FP8") & blog.hardware.str.contains("H200")].iloc[0]
    assert mav_h200["planner: largest max_model_len"] == 1_048_576  # the model's own maximum, not memory
    # one byte per element halves the page; the per-request block table 0.8.3 allocates before profiling (4 bytes per
    # block of max_model_len) grows with the longer length, so the gain stays just under 2
    assert 1.95 < blog.iloc[0]["fp8 KV gain"] < 2.0


def test_hybrid_manager_grows_the_longest_context_on_the_same_hardware():
    ve = C.version_effect([C.Deployment(model=SCOUT, gpu="h100-80gb", num_gpus=8, max_model_len=1_000_000)])
    by = ve.set_index("rules").largest_max_model_len
    assert by["0.25.0 (default)"] > 3 * by["0.8.3"]
    assert by["0.25.0, hybrid off"] < 1.2 * by["0.8.3"]


# --- Run mode with a stand-in server (CPU) ------------------------------------------------------------------------

VLLM_LOG = """\
(Worker_TP0 pid=1) DEBUG 11-22 01:00:00 [gpu_worker.py:372] worker init memory snapshot: torch_peak=0.0GiB, free_memory=139.3GiB, total_memory=139.8GiB, cuda_memory=0.5GiB, torch_memory=0.0GiB, non_torch_memory=0.5GiB, timestamp=1.0, auto_measure=True
(Worker_TP0 pid=1) DEBUG 11-22 01:00:00 [gpu_worker.py:374] worker requested memory: 125.82GiB
(Worker_TP0 pid=1) INFO 11-22 01:00:30 [gpu_model_runner.py:5307] Model loading took 52.72 GiB memory and 30.000000 seconds
(Worker_TP0 pid=1) DEBUG 11-22 01:00:40 [gpu_worker.py:537] Memory profiling takes 5.10 seconds. Total non KV cache memory: 56.34GiB; torch peak memory increase: 2.88GiB; non-torch forward increase memory: 0.74GiB; weights memory: 52.72GiB.
(Worker_TP0 pid=1) INFO 11-22 01:00:40 [gpu_worker.py:538] Available KV cache memory: 69.48 GiB
(EngineCore pid=2) INFO 11-22 01:00:41 [kv_cache_utils.py:2146] GPU KV cache size: 4,873,516 tokens
(EngineCore pid=2) INFO 11-22 01:00:41 [kv_cache_utils.py:2147] Maximum concurrency for 200,000 tokens per request: 24.37x
(Worker_TP0 pid=1) DEBUG 11-22 01:00:50 [gpu_worker.py:831] Free memory on device (139.3/139.8 GiB) on startup. Desired GPU memory utilization is (0.9, 125.82 GiB). Actual usage is 52.72 GiB for weight, 2.88 GiB for peak activation, 0.74 GiB for non-torch memory, and 0.0 GiB for CUDAGraph memory. Replace gpu_memory_utilization config with `--kv-cache-memory=74446176716` (69.33 GiB) to fit into requested memory, or `--kv-cache-memory=80000000000` (74.51 GiB) to fully utilize gpu memory. Current kv cache memory in use is 69.48 GiB.
(APIServer pid=3) INFO 11-22 01:00:55 [api_server.py:1] vLLM API server version 0.25.0
"""


def test_parse_memory_log_reads_vllm_0_25_debug_lines():
    m = C.parse_memory_log(VLLM_LOG)
    assert m["torch_peak_increase_gib"] == 2.88 and m["non_torch_increase_gib"] == 0.74 and m["profile_weights_gib"] == 52.72
    assert m["kv_memory_to_requested_bytes"] == 74_446_176_716 and m["init_total_gib"] == 139.8 and m["requested_gib"] == 125.82


def test_failures_are_classified_from_the_log_tail():
    assert C.classify_failure("ValueError: No available memory for the cache blocks. Try increasing") == "oom"
    assert C.classify_failure("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.50 GiB") == "oom"
    assert C.classify_failure("ValueError: To serve at least one request with the model's max seq len (9000000)") == "refused"
    assert C.classify_failure("RuntimeError: Engine core initialization failed") == "error"


class _SSE(http.server.BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 - http.server API
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for i in range(body["max_tokens"]):
            self.wfile.write(f'data: {json.dumps({"choices": [{"text": f"t{i}"}]})}\n\n'.encode())
        usage = {"prompt_tokens": len(body["prompt"]), "completion_tokens": body["max_tokens"]}
        self.wfile.write(f'data: {json.dumps({"choices": [], "usage": usage})}\n\ndata: [DONE]\n\n'.encode())

    def log_message(self, *a):
        pass


@pytest.fixture
def fake_serving(monkeypatch):
    """``llmstudy.serving.servers`` stand-in: starts nothing on a GPU; writes a vLLM-format log; serves SSE completions."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SSE)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    mod = types.ModuleType("llmstudy.serving.servers")
    started = []

    class ServerStartError(RuntimeError):
        def __init__(self, msg, log_tail="", outcome="start_failed"):
            super().__init__(msg)
            self.log_tail, self.outcome = log_tail, outcome

    class VLLMServer:
        def __init__(self, model, args, port, env, log_path, start_timeout_s):
            if "refuse" in str(log_path):  # refused before any process starts, as the real class does for a taken port
                raise ServerStartError("port 8000 on 127.0.0.1 is already in use", outcome="refused")
            self.model, self.args, self.env, self.log_path, self.port = model, args, env, log_path, port
            self.base_url = f"http://127.0.0.1:{httpd.server_address[1]}"

        def __enter__(self):
            started.append(self)
            if "0.5097315645744698" in self.args and "fp8" not in self.args:  # the stand-in OOMs on H100-budget bf16
                self.log_path.write_text("ValueError: No available memory for the cache blocks.\n")
                raise ServerStartError("engine died", log_tail="ValueError: No available memory for the cache blocks.")
            self.log_path.write_text(VLLM_LOG)
            from llmstudy.serving.logs import parse_startup_log
            self.facts = parse_startup_log(VLLM_LOG)
            return self

        def __exit__(self, *exc):
            return False

        def log_text(self):
            return self.log_path.read_text()

    mod.VLLMServer, mod.ServerStartError = VLLMServer, ServerStartError
    monkeypatch.setitem(sys.modules, "llmstudy.serving.servers", mod)
    yield started
    httpd.shutdown()


def test_run_mode_records_outcomes_memory_lines_and_long_requests(runs_root, fake_serving, tmp_path):
    path = C.run_experiment(["scout-bf16-h200", "scout-bf16-h100", "scout-fp8-h100-long"], run_id="cpu-standin", num_gpus=4,
                            workdir=str(tmp_path), deadline_s=3600)
    rec = R.load_record(path)
    df = rec.table().set_index("config")
    assert df.loc["scout-bf16-h200", "outcome"] == "ok" and df.loc["scout-bf16-h200", "kv_cache_tokens"] == 4_873_516
    assert df.loc["scout-bf16-h200", "torch_peak_increase_gib"] == 2.88
    assert df.loc["scout-bf16-h100", "outcome"] == "oom" and "No available memory" in df.loc["scout-bf16-h100", "error"]
    reqs = rec.table("requests")
    long_ = reqs[reqs.prompt_tokens_sent == 490_000].iloc[0]
    assert long_.outcome == "ok" and long_.prompt_tokens_reported == 490_000 and long_.ttft_s > 0
    assert reqs.prompt_tokens_sent.tolist() == [64, 100_000, 490_000]
    # every server got the multicast-off environment and the TP size
    for srv in fake_serving:
        assert srv.env["NCCL_NVLS_ENABLE"] == "0" and srv.env["TORCH_SYMM_MEM_DISABLE_MULTICAST"] == "1" and srv.env["NVSHMEM_DISABLE_NVLS"] == "1"
        assert srv.args[:2] == ["--tensor-parallel-size", "4"] and "--load-format" in srv.args
        assert srv.port is None  # each server picks a free port: the previous one's port may still be closing
    cfg = json.loads((tmp_path / "llmstudy-context-limits" / "llama-4-scout-17b-16e-instruct-text" / "config.json").read_text())
    assert cfg["architectures"] == ["Llama4ForCausalLM"] and cfg["vocab_size"] == 202_048
    assert any(f.startswith("logs/") for f in rec.manifest["files"])
    raw = json.loads((path / "raw" / "scout-bf16-h200.json").read_text())
    assert any("Memory profiling takes 5.10 seconds" in ln for ln in raw["memory_lines"])
    assert "GPU KV cache size: 4,873,516 tokens" in " ".join(raw["facts"]["lines"])
    # the comparison reads the stand-in's lines: exact available bytes feed the token formula
    cmp_ = C.compare_runs(R.results("context_limits")).set_index("config")
    row = cmp_.loc["scout-bf16-h200"]
    assert row.formula_kv_cache_tokens == C.tokens_for_available(scout4(), 74_446_176_716 + 150 * 2**20)
    assert abs(row.error_pct) < 1


def test_run_mode_refuses_unknown_configs_and_cpu_only_machines(runs_root):
    with pytest.raises(ValueError, match="unknown configuration 'scout-int4'"):
        C.run_experiment(["scout-int4"], num_gpus=4)
    with pytest.raises(ValueError, match="needs CUDA GPUs"):
        C.run_experiment(["a"], num_gpus=0)
    with pytest.raises(ValueError, match="tensor parallel size 3 does not divide"):
        C.run_experiment(["a"], num_gpus=3)
    assert not list(runs_root.rglob("manifest.json"))


def test_run_mode_skips_what_the_deadline_cannot_fit(runs_root, fake_serving, tmp_path):
    path = C.run_experiment(["scout-bf16-h200"], run_id="late", num_gpus=4, workdir=str(tmp_path), deadline_s=10)
    assert R.load_record(path).table().outcome.tolist() == ["skipped"]
    assert not fake_serving


def test_eight_gpu_configurations_refuse_other_gpu_counts(runs_root, fake_serving, tmp_path):
    with pytest.raises(ValueError, match="meant for 8 GPUs"):
        C.run_experiment(["d"], num_gpus=4, workdir=str(tmp_path))
    assert not fake_serving and not list(runs_root.rglob("manifest.json"))
    # the planner's view of the 8-GPU calls: every cell starts except the article's Maverick 8xBF16 on the H100 budget
    outcomes = {n: C.plan(C.GPU_CONFIGS[n].deployment()).outcome for n in C.CALLS["d"] + C.CALLS["e"]}  # meant for 8: TP=8
    assert C.GPU_CONFIGS["tp8-scout-bf16-h200-3600k"].server_args()[:2] == ["--tensor-parallel-size", "8"]
    assert C.GPU_CONFIGS["scout-bf16-h200"].deployment().tp == 4
    assert [n for n, o in outcomes.items() if o != "ok"] == ["tp8-maverick-bf16-h100"]


def test_device_calls_cover_every_configuration_once():
    named = [n for call in C.CALLS.values() for n in call]
    assert sorted(named) == sorted(C.GPU_CONFIGS) and len(named) == len(set(named))
    long_ = C.GPU_CONFIGS["scout-fp8-h100-long"]
    assert C.plan(long_.deployment()).outcome == "ok" and max(long_.long_requests) >= 100_000  # the planner says it fits


# --- The recorded GPU runs ----------------------------------------------------------------------------------------

def _recorded():
    runs = C.llama4_rows(R.results("context_limits"))  # the article's models; other families have their own test
    assert {"h200x4-a", "h200x4-b", "h200x4-c", "h200x4-c2"} <= set(runs.run_id)  # the committed 4xH200 records
    assert {"h200x8-d", "h200x8-e", "h200x8-f"} <= set(runs.run_id)  # and the 8xH200 ones (TP=8)
    cmp_ = C.compare_runs(runs)
    return cmp_, cmp_[(cmp_.outcome == "ok") & cmp_.kv_cache_tokens.notna()]


def test_recorded_configurations_and_their_logged_figures():
    cmp_, ok = _recorded()
    logged = dict(zip(ok.config, ok.kv_cache_tokens.astype(int)))
    assert logged == {"scout-bf16-h200": 4_873_516, "scout-bf16-h100": 1_046_532, "scout-fp8-h200": 6_599_126,
                      "scout-fp8-h100-hybrid-off": 863_344, "scout-fp8-h100-long": 3_144_324, "maverick-fp8-h200": 1_764_860,
                      "scout-bf16-h200-kvfp8": 9_741_561, "scout-fp8-h200-graphs": 6_498_767,
                      "tp8-scout-bf16-h100-1200k": 6_721_026, "tp8-scout-fp8-h100-1500k": 8_843_852,
                      "tp8-maverick-fp8-h100-430k": 2_974_060, "tp8-scout-bf16-h200-3600k": 16_308_328,
                      "tp8-scout-fp8-h200-3600k": 18_416_884, "tp8-maverick-fp8-h200-1000k": 12_246_965,
                      "tp8-maverick-bf16-h200-1000k": 4_765_646}
    assert set(ok.loc[ok.config.str.startswith("tp8-"), "tp"]) == {8} and set(ok.loc[~ok.config.str.startswith("tp8-"), "tp"]) == {4}
    table = C.without_superseded_skips(cmp_)
    # skipped for lack of time, measured by a later call: h200x4-c's graphs run (in -c2), h200x8-d/e's Maverick BF16 (in -f)
    assert "skipped" not in set(table.outcome) and len(table) == len(cmp_) - 3
    only_skipped = pd.DataFrame({"config": ["x"], "outcome": ["skipped"]})
    assert len(C.without_superseded_skips(only_skipped)) == 1  # a gap that was never measured stays visible


def test_the_chapter_findings_read_the_records():
    cmp_, _ = _recorded()
    f = C.measured_findings(C.without_superseded_skips(cmp_))
    assert set(f) == set(C.FINDINGS)
    assert "starts Scout BF16 at TP=4" in f["scout_bf16_h100"] and "14.92 GiB" in f["scout_bf16_h100"] and "1,046,532 tokens" in f["scout_bf16_h100"]
    assert "runs out of memory" in f["maverick_fp8_h100"] and "97.03 GiB" in f["maverick_fp8_h100"] and "71.26 GiB budget" in f["maverick_fp8_h100"]
    assert "9,741,561 tokens against 4,873,516: 2.00×" in f["kv_fp8"]
    assert "cost 1.43 GiB" in f["graphs"] and "estimate of 1.38 GiB" in f["graphs"] and "(-1.5%)" in f["graphs"] and "34 s" in f["graphs"]
    assert "4.32 requests of 200,000" in f["hybrid"] and "6.29 requests of 500,000" in f["hybrid"] and "3.6× the tokens" in f["hybrid"]
    # one side missing: no sentence that compares it
    assert "kv_fp8" not in C.measured_findings(cmp_[cmp_.config != "scout-bf16-h200-kvfp8"])
    oom = cmp_.copy()
    oom.loc[oom.config == "scout-bf16-h100", "outcome"] = "oom"
    assert "does not start" in C.measured_findings(oom)["scout_bf16_h100"]


def test_the_tp8_findings_and_the_published_cells():
    cmp_, _ = _recorded()
    table = C.without_superseded_skips(cmp_)
    f = C.measured_findings(table)
    assert "Scout BF16 at max_model_len 1,200,000 (the article's recommendation; 6,721,026 tokens logged" in f["tp8_h100"]
    assert "Maverick BF16 runs out of memory, as the article found: its weights take 93.59 GiB per GPU of a 71.26 GiB budget" in f["tp8_h100"]
    assert "Scout BF16 at max_model_len 3,600,000" in f["tp8_h200"] and "28.61 GiB of KV memory per GPU after 93.59 GiB" in f["tp8_h200"]
    assert "Scout BF16 52.72 → 27.60 GiB (×0.52)" in f["tp_scaling"] and "14.92 GiB of KV memory per GPU at TP=4 and 40.03 GiB at TP=8" in f["tp_scaling"]
    cells = C.published_vs_measured(table)
    assert len(cells) == len(C.ARTICLE_TABLE) + len(C.BLOG_TABLE)
    verdicts = dict(zip(cells.source + " " + cells.model + " " + cells.precision + " " + cells.hardware, cells.verdict))
    assert verdicts.pop("article Scout BF16 4×H100 80GB") == "differs"  # OOM under 0.8.3 on a real H100; starts under 0.25.0
    assert verdicts.pop("article Maverick BF16 4×H100 80GB") == "not measured"
    assert set(verdicts.values()) == {"reproduced"}, verdicts
    blog_h200 = cells[(cells.source == "blog") & (cells.hardware == "8×H200")]
    assert blog_h200["logged KV tokens"].astype(int).tolist() == [16_308_328, 12_246_965]
    # a published length tested only below it is not called reproduced; a failure at or below it differs
    short = table.copy()
    short.loc[short.config == "tp8-scout-bf16-h200-3600k", "max_model_len"] = 2_000_000
    assert C.published_vs_measured(short).verdict.iloc[10] == "shorter length tested"
    short.loc[short.config == "tp8-scout-bf16-h200-3600k", "outcome"] = "oom"
    assert C.published_vs_measured(short).verdict.iloc[10] == "differs"
    # without records every cell is "not measured" (the chapter before any device run)
    assert set(C.published_vs_measured(table.iloc[0:0]).verdict) == {"not measured"}


def test_recorded_gpu_runs_are_predicted_within_1_percent():
    """The chapter's target: the planner with its default estimates within 1 % of every logged token figure."""
    _, ok = _recorded()
    assert len(ok) >= 3
    assert ok.error_pct.abs().max() <= 1.0, ok[["run_id", "config", "error_pct"]]


def test_recorded_gpu_runs_match_the_rules_given_the_measured_inputs():
    cmp_, ok = _recorded()
    # with the logged weights/activation/non-torch/graph figures (0.01 GiB resolution) the plan lands within 0.25 %
    assert ok.measured_inputs_error_pct.abs().max() <= 0.25, ok[["run_id", "config", "measured_inputs_error_pct"]]
    exact = ok[ok.formula_kv_cache_tokens.notna()]
    assert (exact.formula_kv_cache_tokens == exact.kv_cache_tokens).all(), exact[["config", "formula_kv_cache_tokens", "kv_cache_tokens"]]
    decided = cmp_[cmp_.outcome_agrees.notna()]
    assert decided.outcome_agrees.astype(bool).all(), decided[["config", "outcome", "pred_outcome"]]


# --- CLI, parameters, notebook -------------------------------------------------------------------------------------

def test_cli_prints_the_plan_and_rejects_bad_input():
    ok = subprocess.run([sys.executable, "-m", "llmstudy.cli", "capacity", "--gpu", "h100-80gb", "--num-gpus", "8", "--version", "0.8.3",
                         "--max-model-len", "1000000"], capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    tokens = C.plan(C.Deployment(model=SCOUT, gpu="h100-80gb", num_gpus=8, vllm_version="0.8.3", max_model_len=1_000_000)).kv_cache_tokens
    assert f"GPU KV cache size: {tokens:,} tokens" in ok.stdout and "(architecture)" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "llmstudy.cli", "capacity", "--num-gpus", "3"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "does not divide the 40 attention heads" in bad.stderr
    oom = subprocess.run([sys.executable, "-m", "llmstudy.cli", "capacity", "--model", MAVERICK, "--gpu", "h100-80gb", "--num-gpus", "8"],
                         capture_output=True, text=True, timeout=300)
    assert oom.returncode == 3 and "OOM: weights" in oom.stdout


def test_bad_notebook_parameters_are_named():
    spec = C.notebook_params()
    with pytest.raises(ParameterError, match="unknown configuration 'x'"):
        validate(spec, {"configs": ["x"]})
    with pytest.raises(ParameterError, match=r"mode='measure': must be one of"):
        validate(spec, {"mode": "measure"})
    assert validate(spec, {})["configs"] == ["a"]


def _papermill(tmp_path, *params):
    out = tmp_path / "out.ipynb"
    cmd = [sys.executable, "-m", "papermill", str(ROOT / "notebooks/context_limits.ipynb"), str(out), "--cwd", str(ROOT / "notebooks"), *params]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900), out


@pytest.mark.slow
def test_notebook_analyze_mode_renders_predictions_and_records(tmp_path, runs_root, fake_serving):
    C.run_experiment(["scout-bf16-h200", "scout-fp8-h100-long"], run_id="nb-standin", num_gpus=4, workdir=str(tmp_path), deadline_s=3600)
    proc, out = _papermill(tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    assert '"ename"' not in text
    assert "PREDICTION" in text and "1,200,000" in text and "3600000" in text.replace(",", "")
    assert "nb-standin" in text and "490,000 tokens:" in text  # records are rendered: comparison and TTFT


@pytest.mark.slow
def test_notebook_fails_early_naming_a_bad_parameter(tmp_path):
    proc, _ = _papermill(tmp_path, "-p", "mode", "measure")
    assert proc.returncode != 0 and "mode='measure'" in proc.stderr + proc.stdout


def test_a_server_refused_before_it_starts_is_recorded_with_the_reason(runs_root, fake_serving, tmp_path, monkeypatch):
    monkeypatch.setattr(C, "prepare_model_dir", lambda model, dest: tmp_path / "refuse")
    path = C.run_experiment(["scout-bf16-h200"], run_id="refused", num_gpus=4, workdir=str(tmp_path), deadline_s=3600)
    row = R.load_record(path).table().iloc[0]
    assert row.outcome == "refused" and "already in use" in row.error


# --- The page: parameters, statements, figures (no papermill) ------------------------------------------------------

# The glued values of the Llama 4 page (committed Llama 4 records, default parameters). The chapter's move to
# statements(records, model) changed none of them; the planner's use of vLLM 0.25's default gpu_memory_utilization
# (0.92, not 0.9) moved the four 0.25.0-default predictions blog_s_h100_25, cvg_s8h100_25, ve_s8_25 and ve_s8_tok25.
PAGE = {
    'art_agree': '7 of 8',
    'art_m8fp8_len': '585,408',
    'art_s4bf16_kv': '6.8',
    'art_s4bf16_len': '202,144',
    'art_s4fp8_len': '725,376',
    'blog_fp8_gain': '1.98',
    'blog_m_h100': '585,408',
    'blog_m_h100_25': '1,048,576',
    'blog_m_h200': '1,048,576',
    'blog_m_h200_25': '1,048,576',
    'blog_s_h100': '1,495,920',
    'blog_s_h100_25': '7,021,040',
    'blog_s_h200': '3,855,104',
    'blog_s_h200_25': '10,485,760',
    'blog_s_h200_frac': '93',
    'cvg_measured': (
        '14 of 14 measured starts lie at or below the 0.25.0 prediction for their configuration: each is a length that '
        'started, not the longest one.'
    ),
    'cvg_s8h100_25': '7,021,040',
    'cvg_s8h100_83': '1,495,920',
    'meas_formula_exact': '14 of 14',
    'meas_graphs': (
        "CUDA graphs (vLLM's default; the other runs are eager) cost 1.43 GiB of KV memory per GPU: 0.25.0 subtracts "
        'its estimate of 1.38 GiB before sizing the cache, and the logged figure drops from 6,599,126 to 6,498,767 '
        'tokens (-1.5%). The capture took 34 s.'
    ),
    'meas_hybrid': (
        'Measured on the same hardware (Scout FP8, H100 budget, 39.52 and 39.52 GiB of KV memory per GPU): with the '
        'hybrid manager off, 4.32 requests of 200,000 tokens fit (863,344 logged); with it on, 6.29 requests of 500,000 '
        'tokens (3,144,324 logged), 3.6× the tokens in the same memory.'
    ),
    'meas_kv_fp8': (
        'An fp8 KV cache on the same budget (69.44 against 69.48 GiB) logs 9,741,561 tokens against 4,873,516: 2.00×, '
        'the blog\'s "potentially doubles".'
    ),
    'meas_maverick_fp8_h100': (
        'Maverick FP8 on the H100 budget runs out of memory, as the article and the planner say: its weights take 97.03 '
        'GiB per GPU (planner 96.97) of a 71.26 GiB budget.'
    ),
    'meas_max_err': '0.72',
    'meas_max_err_measured': '0.02',
    'meas_n': '15',
    'meas_scout_bf16_h100': (
        'On the H100 budget (71.26 GiB per GPU) vLLM 0.25.0 starts Scout BF16 at TP=4, the configuration the article '
        'reported as OOM under 0.8.3: 14.92 GiB per GPU are left for the KV cache and the server logs 1,046,532 tokens '
        'at max_model_len 200,000 (planner: 1,053,300). That run is eager; with CUDA graphs 0.25.0 also subtracts its '
        'graph estimate.'
    ),
    'meas_sentence': (
        'Over 15 measured configurations the predicted token figure is within 0.72 % of the logged one, and within 0.02 '
        '% with the measured inputs. The formula alone matches 14 of 14 eager runs exactly.'
    ),
    'meas_tp8_h100': (
        "On the H100 budget at TP=8, vLLM 0.25.0 starts Scout BF16 at max_model_len 1,200,000 (the article's "
        'recommendation; 6,721,026 tokens logged, planner 6,741,607); Scout FP8 at max_model_len 1,500,000 (the '
        "article's recommendation; 8,843,852 tokens logged, planner 8,877,254); Maverick FP8 at max_model_len 430,000 "
        "(the blog's length, above the article's 300,000; 2,974,060 tokens logged, planner 2,995,354). Maverick BF16 "
        'runs out of memory, as the article found: its weights take 93.59 GiB per GPU of a 71.26 GiB budget.'
    ),
    'meas_tp8_h200': (
        "On the H200 budget at TP=8 it starts Scout BF16 at max_model_len 3,600,000 (the blog's length; 16,308,328 "
        "tokens logged, planner 16,329,811); Scout FP8 at max_model_len 3,600,000 (the blog's Scout length; 18,416,884 "
        "tokens logged, planner 18,451,246); Maverick FP8 at max_model_len 1,000,000 (the blog's length, about the "
        "model's maximum; 12,246,965 tokens logged, planner 12,269,688); Maverick BF16, which neither source lists on "
        'H200, at max_model_len 1,000,000 with 28.61 GiB of KV memory per GPU after 93.59 GiB of weights.'
    ),
    'meas_tp_scaling': (
        'From TP=4 to TP=8 the weights per GPU nearly halve: Scout BF16 52.72 → 27.60 GiB (×0.52), Scout FP8 28.11 → '
        '15.37 GiB (×0.55), Maverick FP8 97.03 → 48.67 GiB (×0.50). Replicated tensors (norms, routers, the rotary '
        'cache) keep the ratio above one half. Each GPU also holds one KV head of the eight instead of two, so a token '
        'costs half the KV bytes per GPU. On the H100 budget, Scout BF16 has 14.92 GiB of KV memory per GPU at TP=4 and '
        '40.03 GiB at TP=8.'
    ),
    'pvm_reproduced': '10 of 11',
    'ttft_long': '100,000 tokens: 2.5 s, 490,000 tokens: 22.1 s',
    've_s8_25': '7,021,040',
    've_s8_83': '1,495,920',
    've_s8_tok25': '6,738,958',
    've_s8_tok83': '1,501,088',
}


NB = ROOT / "notebooks/context_limits.ipynb"
MINI = str(ROOT / "tests/fixtures/mini-mistral/config.json")
NUMBER = re.compile(r"(?<![\w.])\d[\d,]*(?:\.\d+)?(?![\w.])")  # 1,046,532 or 14.92; not a version such as 0.25.0


def _numbers(text: str) -> set[str]:
    return {n for n in NUMBER.findall(text) if len(n.replace(",", "").replace(".", "")) >= 4 or "." in n}


def _llama4_records():
    return C.llama4_rows(R.results("context_limits")), R.results("context_limits", "requests")


@pytest.fixture(scope="module")
def llama_page():
    """The default page's statements (Llama 4 Scout, committed Llama 4 records), computed once for the tests below."""
    runs, reqs = _llama4_records()
    return C.statements(runs, SCOUT, reqs)


def test_notebook_parameters_cell_is_written_from_the_spec():
    assert notebook_mismatches(NB, C.PARAMS) == []
    assert C.notebook_params() is C.PARAMS and C.DEFAULTS["model"] == SCOUT  # the default page is the Llama 4 page
    ch = C.chapter(pd.DataFrame(), pd.DataFrame())
    assert {k: getattr(ch, k) for k in C.PLAN_PARAMS} == {k: C.DEFAULTS[k] for k in C.PLAN_PARAMS}  # defaults from the spec
    # flags derived from the same spec give the same defaults
    parser = argparse.ArgumentParser()
    add_arguments(parser, C.PARAMS)
    assert from_args(C.PARAMS, parser.parse_args([])) == C.DEFAULTS
    got = from_args(C.PARAMS, parser.parse_args(["--model", "tiny-llama", "--num-gpus", "2", "--max-model-len", "2048"]))
    assert (got["model"], got["num_gpus"], got["max_model_len"]) == ("tiny-llama", 2, 2048)


def test_the_capacity_command_takes_the_chapters_defaults(monkeypatch):
    """``llmstudy capacity`` plans one deployment and runs the chapter's experiment: where its flags and the chapter's
    parameters name the same setting, they have one default."""
    from llmstudy import cli

    seen = {}
    monkeypatch.setattr(cli, "_capacity", lambda args: seen.update(vars(args)) or 0)
    assert cli.main(["capacity"]) == 0
    shared = ("model", "gpu", "kv_dtype", "max_model_len", "run_id", "deadline_s")
    assert {k: seen[k] for k in shared} == {k: C.DEFAULTS[k] for k in shared}


@pytest.mark.parametrize("values,match", [
    ({"model": "llama-5"}, r"model='llama-5': unknown model 'llama-5'"),
    ({"gpu": "a100"}, r"gpu='a100': must be one of \['h100-80gb', 'h200'\]"),
    ({"num_gpus": 0}, r"num_gpus=0: must be > 0"),
    ({"max_model_len": -1}, r"max_model_len=-1: must be a positive number of tokens"),
    ({"weights": "int4"}, r"weights='int4': must be one of \['auto', 'bf16', 'fp8-online'"),
    ({"vllm_version": "0.9.9"}, r"vllm_version='0.9.9': must be one of"),
    ({"deadline_s": 0}, r"deadline_s=0: must be > 0"),
])
def test_bad_page_parameters_are_named(values, match):
    with pytest.raises(ParameterError, match=match):
        validate(C.PARAMS, values)


def test_statements_reproduce_the_llama4_page_without_papermill(llama_page):
    runs, reqs = _llama4_records()
    got = llama_page
    assert {k: got[k] for k in PAGE} == PAGE
    assert got["model_title"] == SCOUT and "a Llama 4 model" in got["model_banner"]
    assert got["model_plan"] == (
        "Planned for llama-4-scout-17b-16e-instruct on 4×H200, BF16 weights, auto KV cache, vLLM 0.25.0 rules, max_model_len "
        "10,485,760 (the model's maximum): the weights take 53.10 GiB per GPU of a 128.62 GiB budget, 70.89 GiB are left for "
        "the KV cache, and vLLM refuses that length. The longest max_model_len that starts is 6,144,976.")
    assert got["model_measured"] == (
        "llama-4-scout-17b-16e-instruct has 11 measured configurations (run records h200x4-a, h200x4-b, h200x4-c, h200x4-c2, "
        "h200x8-d, h200x8-e; vLLM 0.25.0 on H200): 11 started, and the planner's token figure is within 0.65 % of vLLM's logged "
        "one (largest error scout-bf16-h100: 1,053,300 planned, 1,046,532 logged).")
    assert got["family_summary"].startswith("No run record of a model family other than Llama 4 exists yet")
    # the page's plan follows its parameters: TP=8 with the same weights starts the model's maximum
    eight = C.statements(C.Chapter(runs, reqs, num_gpus=8, max_model_len=1_000_000))
    p8 = C.plan(C.Deployment(model=SCOUT, gpu="h200", num_gpus=8, max_model_len=1_000_000))
    assert p8.outcome == "ok" and f"“GPU KV cache size: {p8.kv_cache_tokens:,} tokens”" in eight["model_plan"]
    assert eight["model_plan"].startswith("Planned for llama-4-scout-17b-16e-instruct on 8×H200") and "(the model's maximum)" not in eight["model_plan"]


def test_statements_without_records_say_so():
    got = C.statements(pd.DataFrame(), SCOUT, pd.DataFrame())
    assert got["meas_sentence"].startswith("No configuration has been measured yet.")
    assert got["meas_graphs"] == "(not measured yet: graphs)" and got["pvm_reproduced"] == "0 of 0"
    assert got["ttft_long"] == "n/a (no record yet)" and got["cvg_measured"] == "No start has been measured yet."
    assert got["model_measured"] == (
        "Logged KV tokens: not measured for llama-4-scout-17b-16e-instruct yet (measure it on a GPU runner: "
        f"`llmstudy capacity --run {' '.join(c.name for c in C.GPU_CONFIGS.values() if c.model == SCOUT)}`).")


def test_a_fork_shows_its_model_and_names_every_llama4_number(llama_page):
    runs, reqs = R.results("context_limits"), R.results("context_limits", "requests")
    fork, llama = C.statements(runs, MINI, reqs), llama_page
    assert set(fork) == set(llama)
    # the Llama 4 sections keep Llama 4's values; those whose words do not name Llama 4 say whose they are
    for k in PAGE:
        named = k in ("meas_sentence", "cvg_measured", "ttft_long", "meas_n", "meas_max_err", "meas_max_err_measured",
                      "meas_formula_exact", "pvm_reproduced", "art_agree")
        assert fork[k] == (f"(Llama 4, not mini-mistral) {llama[k]}" if named else llama[k]), k
    assert "Llama 4's, not mini-mistral's" in fork["model_banner"] and fork["model_banner"].startswith("This page is rendered for mini-mistral. ")
    # the model's own section: its plan, and no Llama 4 number
    p = C.plan(C.Deployment(model=MINI, gpu="h200", num_gpus=4))
    assert p.outcome == "ok" and p.max_model_len == 4096 == p.max_model_len_that_starts  # the config's maximum starts
    assert fork["model_plan"].startswith("Planned for mini-mistral on 4×H200, BF16 weights, auto KV cache, vLLM 0.25.0 rules, "
                                         "max_model_len 4,096 (the model's maximum): the weights take ")
    assert f"{p.weights_bytes / 2**20:.2f} MiB per GPU" in fork["model_plan"]  # a 2-layer model: MiB, not "0.00 GiB"
    assert f"“GPU KV cache size: {p.kv_cache_tokens:,} tokens”" in fork["model_plan"]
    llama_numbers = set().union(*(_numbers(v) for k, v in llama.items() if k in PAGE))
    for k in ("model_banner", "model_plan", "model_measured"):
        assert "mini-mistral" in fork[k] and not _numbers(fork[k]) & llama_numbers, (k, _numbers(fork[k]) & llama_numbers)
        assert "Scout" not in fork[k].replace("Llama 4 Scout and Maverick", "")
    assert fork["model_measured"] == (
        "Logged KV tokens: not measured for mini-mistral yet (measure it on a GPU runner: `llmstudy capacity --run tp1-mini-mistral`).")
    table = C.model_context_table(MINI, "h200", "auto", "0.25.0")
    assert table.weights.tolist() == ["bf16"] * 4 + ["fp8-online"] * 4 and table.GPUs.tolist() == [1, 2, 4, 8] * 2
    eight = table[table.GPUs == 8]
    assert set(eight.outcome) == {"not planned"} and eight.message.str.contains("does not divide the 4 attention heads").all()
    assert (table[table.GPUs < 8].largest_max_model_len == 4096).all()


def test_a_model_the_planner_refuses_is_one_line_and_the_page_still_renders(monkeypatch):
    got = C.statements(pd.DataFrame(), MINI, pd.DataFrame(), num_gpus=8)
    assert got["model_plan"].startswith("The planner does not plan mini-mistral on 8×H200, BF16 weights, auto KV cache, vLLM 0.25.0 "
                                        "rules: tensor parallel size 8 does not divide the 4 attention heads")
    assert "\n" not in got["model_plan"]
    import llmstudy.chapters.context_limits.analysis as A

    def refuse(dep):
        raise ValueError("MLA attention (kv_lora_rank) is not modelled for vLLM 0.8.3")

    monkeypatch.setattr(A, "plan", refuse)
    ch = C.chapter(pd.DataFrame(), pd.DataFrame(), model=MINI)
    assert C.statements(ch)["model_plan"].endswith(": MLA attention (kv_lora_rank) is not modelled for vLLM 0.8.3")
    assert set(ch.model_table.outcome) == {"not planned"}
    fig, source = C.figures.model_memory_figure(ch)
    assert fig is None and "MLA attention (kv_lora_rank) is not modelled" in source["computed"]


def _family_rows(tokens: int) -> pd.DataFrame:
    base = {"gpu": "NVIDIA H200", "weights": "bf16", "budget": "default", "num_gpus": 1, "tp": 1, "gpu_memory_utilization": 0.92,
            "max_model_len": 512, "kv_dtype": "auto", "enforce_eager": True, "hybrid_kv": None, "vllm_version": "0.25.0"}
    return pd.DataFrame([
        base | {"run_id": "fam-a", "config": "tp1-tiny-llama-x", "model": "tiny-llama", "outcome": "ok", "kv_cache_tokens": tokens},
        base | {"run_id": "fam-a", "config": "tp1-gone", "model": "no-such-model", "outcome": "ok", "kv_cache_tokens": 1000},
    ])


def test_other_families_are_compared_from_their_rows():
    p = C.plan(C.Deployment(model="tiny-llama", gpu="h200", num_gpus=1, gpu_memory_utilization=0.92, max_model_len=512,
                            enforce_eager=True, text_only=True))
    assert p.outcome == "ok" and p.kv_cache_tokens > 0
    logged = p.kv_cache_tokens * 200 // 201  # the planner 0.5 % above the logged figure
    runs = pd.concat([C.llama4_rows(R.results("context_limits")), _family_rows(logged)], ignore_index=True)
    ch = C.chapter(runs, pd.DataFrame(), model="tiny-llama")
    fam = ch.family
    assert fam.config.tolist() == ["tp1-tiny-llama-x", "tp1-gone"]
    row = fam.iloc[0]
    assert row["logged KV tokens"] == logged and row["planned KV tokens"] == p.kv_cache_tokens and row.planner == "ok"
    assert row["error %"] == pytest.approx(100 * (p.kv_cache_tokens - logged) / logged)
    gone = fam.iloc[1]
    assert gone.planner.startswith("not modelled: unknown model 'no-such-model'") and pd.isna(gone["error %"])
    got = C.statements(ch)
    assert got["family_summary"].startswith(
        f"2 configurations of 2 other models (no-such-model, tiny-llama) measured: on the 1 that started and that the planner models, "
        f"its token figure is within {abs(row['error %']):.2f} % of vLLM's logged one (1 of 1 within 1 %; largest error: "
        f"tp1-tiny-llama-x, {row['error %']:+.2f} %).")
    assert "The planner refuses no-such-model: not modelled: unknown model" in got["family_summary"]
    # the page's model has a record of its own: the page says so instead of "not measured"
    assert got["model_measured"] == (
        f"tiny-llama (test fixture) has 1 measured configuration (run records fam-a; vLLM 0.25.0 on H200): 1 started, and the planner's token "
        f"figure is within {abs(row['error %']):.2f} % of vLLM's logged one (largest error tp1-tiny-llama-x: {p.kv_cache_tokens:,} "
        f"planned, {logged:,} logged).")
    # the Llama 4 sections are untouched by the other families' rows
    llama4 = {k: got[k].removeprefix("(Llama 4, not tiny-llama) ") for k in PAGE if k.startswith(("meas_", "pvm_", "cvg_"))}
    assert llama4 == {k: v for k, v in PAGE.items() if k.startswith(("meas_", "pvm_", "cvg_"))}


def test_every_figure_and_table_renders_with_its_source(monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from llmstudy.core.book import provenance_html

    runs, reqs = _llama4_records()
    for ch in (C.chapter(runs, reqs), C.chapter(runs, reqs, model=MINI, num_gpus=1)):
        F = C.figures
        outputs = [F.rules_table()] + [f(ch) for f in (F.model_table, F.article_table, F.blog_table, F.measured_table, F.published_cells_table,
                                                       F.context_vs_gpus_table, F.version_effect_table, F.requests_table, F.family_table)]
        for obj, source in outputs:
            assert obj._repr_html_() and provenance_html(**source)
            assert len(obj.headers) <= 8 and "nan" not in obj._repr_html_().lower().replace("nanmean", "")  # a page table: <= 8 columns, no NaN
        llama4_figures = (F.memory_figure, F.context_vs_gpus_figure, F.version_effect_figure) if ch.llama4_page else ()  # the same on a fork
        for f in (F.model_memory_figure, *llama4_figures):
            fig, source = f(ch)
            assert fig is not None and provenance_html(**source)
            plt.close("all")
    fig, source = F.model_memory_figure(C.chapter(runs, reqs, model=MINI))
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == [f"mini-mistral {n}×h200 BF16 (predicted)" for n in (1, 2, 4)]
    plt.close("all")
    empty = C.chapter(pd.DataFrame(), pd.DataFrame())
    assert "no record yet" in F.requests_table(empty)[0]._repr_html_() and "PREDICTIONS" in F.measured_table(empty)[0].caption


@pytest.mark.slow
def test_notebook_renders_for_another_model(tmp_path):
    proc, out = _papermill(tmp_path, "-p", "model", MINI, "-p", "num_gpus", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    assert '"ename"' not in text and "Planned for mini-mistral on 1×H200" in text
    assert "not measured for mini-mistral yet" in text and "(Llama 4, not mini-mistral)" in text


def test_tp1_of_any_model_is_a_configuration_and_a_bad_model_is_refused_before_any_gpu_work():
    from llmstudy.chapters.context_limits import run as RUN

    (cfg,) = RUN.resolve_configs(["tp1-mistral-7b-v0.3"])  # shipped, and one of call g's
    assert (cfg.model, cfg.weights, cfg.budget, cfg.max_model_len, cfg.gpus) == ("mistral-7b-v0.3", "bf16", "default", 4096, 1)
    (cfg,) = RUN.resolve_configs(["tp1-gpt-oss-20b"])  # a model with no entry in GPU_CONFIGS
    assert (cfg.name, cfg.weights, cfg.gpus) == ("tp1-gpt-oss-20b", "mxfp4-checkpoint", 1)  # the checkpoint's format
    with pytest.raises(ValueError, match=r"unknown model 'no-such-model'"):
        RUN.resolve_configs(["tp1-no-such-model"])
    with pytest.raises(ValueError, match=r"or tp1-<model> for any model config"):
        RUN.resolve_configs(["nonsense"])


# --- The page's first screen: the answer and the key figure (issue 20) -------------------------------------------------

def test_the_answer_and_the_key_figure_carry_the_committed_records_numbers():
    ch = C.chapter(**{k: v.default for k, v in C.PARAMS.items()})
    d = C.figures.published_cells(ch)
    assert len(d) == 12 and d.label.iloc[0] == "article: Scout 4×H100 BF16" and d.label.iloc[-1] == "blog: Maverick-FP8 8×H200"
    # the article's OOM cell: no published length, the planner's 0.8.3 longest start, and the 0.25.0 run that started it
    assert pd.isna(d.published.iloc[0]) and d.planner_083.iloc[0] == 202_144 and (d.measured.iloc[0], d.tested.iloc[0]) == ("starts", 200_000)
    assert d.loc[10, ["published", "planner_083", "tested"]].tolist() == [3_600_000, 3_855_104, 3_600_000]
    assert d.measured.tolist().count("OOM") == 2 and pd.isna(d.planner_083.iloc[4])
    st = C.statements(ch)
    assert st["answer"].startswith("On vLLM 0.25.0 with dummy weights on 4× and 8×H200, the planner's KV-cache token figure is within 0.72% of the "
                                   "one vLLM logs over 15 Llama 4 configurations (within 0.02% once it is fed the memory the server measured).")
    assert "agrees with 7 of 8 cells of the article's H100 table; the exception, Scout 4×BF16," in st["answer"]
    assert "(run h200x4-a)" in st["answer"] and "(longest 3,855,104) and do under 0.25.0 (10,485,760)" in st["answer"]


def test_a_forked_page_answers_for_its_own_model_first():
    st = C.statements(C.chapter(model=MINI, num_gpus=1))
    assert st["answer"].startswith("For mini-mistral, predicted: Planned for mini-mistral on 1×H200, BF16 weights")
    assert "For Llama 4, which the article and the blog are about: On vLLM 0.25.0" in st["answer"] and "(Llama 4, not" not in st["answer"]


def test_the_page_has_no_raw_tex_escapes_and_no_repeated_disagreement():
    nb = json.loads((ROOT / "notebooks/context_limits.ipynb").read_text())
    text = "".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    assert "\\_" not in text  # kv\_heads rendered raw
    assert text.count("Scout 4×BF16") <= 1


# --- vLLM 0.8.3, measured on one H200 (issue 23) ---------------------------------------------------------------------

def test_v083_servers_and_the_planners_083_rules():
    """The committed 0.8.3 records: every server started, the logged KV tokens are these, and the planner's 0.8.3 rules
    (sampler, runner buffers, encoder, non-torch, all from the probe's terms) land within 0.4 % of each, except where
    the profile's forward pass outweighs the sampler (max_num_seqs 64): there the forward estimate is an upper bound."""
    t = C.chapter().v083
    logged = dict(zip(t.config, t["logged KV tokens"]))
    assert logged == {
        "v083-scout12-text-bf16-eager": 164_736, "v083-scout12-mm-bf16-eager": 125_040, "v083-scout12-mm-fp8-eager": 631_904,
        "v083-maverick6-mm-fp8-eager": 408_032, "v083-scout12-mm-fp8": 631_856, "v083-scout12-mm-bf16": 125_040,
        "v083-maverick6-mm-fp8": 408_032, "v083-scout12-text-bf16": 164_736, "v083-scout12-text-bf16-eager-seqs256": 285_312,
        "v083-scout12-text-bf16-eager-seqs64": 310_352, "v083-scout12-text-fp8-eager": 671_616, "v083-scout24-text-fp8-eager": 64_432}
    assert set(t.run_id) == {f"h200x1-v083-{x}" for x in "abcde"} and set(t.outcome) == {"ok"}
    sampler_bound = t[t.max_num_seqs >= 256]
    assert sampler_bound["error %"].abs().max() <= 0.4, sampler_bound[["config", "error %"]]
    forward_bound = t[t.max_num_seqs < 256].iloc[0]
    assert forward_bound["error %"] < -5 and forward_bound["buffers + activation peak: planner GiB"] > forward_bound["buffers + activation peak: measured GiB"]
    # term by term, where the sampler decides the peak: the activation within 3 MiB, the non-torch memory within 30 MiB
    d = sampler_bound
    assert ((d["buffers + activation peak: planner GiB"] - d["buffers + activation peak: measured GiB"]).abs() < 3 / 1024).all()
    assert ((d["non-torch: planner GiB"] - d["non-torch: measured GiB"]).abs() < 30 / 1024).all()
    # the sampler's measured peak: 1024 rows of a 202,048 vocabulary take 7,908,003,840 bytes above the profile's start
    assert round(t.loc[t.config == "v083-scout12-text-bf16-eager", "sampler_peak GiB"].iloc[0] * C.GiB) == 7_908_003_840


def test_v083_rows_stay_out_of_the_025_comparison():
    ch = C.chapter()
    assert len(ch.runs) and not ch.runs.config.str.startswith("v083-").any()
    assert len(ch.family) and not ch.family.config.str.startswith("v083-").any()  # nor into "other model families"
