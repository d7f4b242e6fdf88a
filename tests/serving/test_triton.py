"""Triton from the PyTriton wheel: the repository generator, the text codec, the install steps, the clients.

Fast tests only (no tritonserver, no genai-perf): what is written, parsed and computed. The real server on CPU is
tests/serving/test_triton_cpu.py (slow).
"""

import json
import math
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from llmstudy.serving.triton import client as C
from llmstudy.serving.triton import install as I
from llmstudy.serving.triton import repository as R
from llmstudy.serving.triton import textcodec as T
from llmstudy.serving.triton.params import TritonParams
from llmstudy.training.finetune import synthetic_tokenizer

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("m")
    (d / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "vocab_size": 64}))
    synthetic_tokenizer(64).save_pretrained(str(d))
    return d


def _adapter(path: Path, r: int) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "adapter_config.json").write_text(json.dumps({"r": r, "peft_type": "LORA"}))
    return path


# --- the repository generator -----------------------------------------------------------------------------------


def test_repository_has_the_ensemble_layout_and_the_contract(model_dir, tmp_path):
    a, b = _adapter(tmp_path / "a", 4), _adapter(tmp_path / "b", 8)
    repo = R.write_repository(tmp_path / "repo", model_dir, engine="hf", adapters={"persona": a, "other": b},
                              max_batch_size=8, engine_instances=2, engine_args={"num_threads": 1}, numpy1_dir="/np1", site_packages=["/site"])
    assert sorted(p.name for p in repo.iterdir()) == ["engine", "ensemble", "postprocessing", "preprocessing"]
    ens = (repo / "ensemble" / "config.pbtxt").read_text()
    assert 'platform: "ensemble"' in ens and "max_batch_size: 8" in ens
    for name, dtype, optional in R.ENSEMBLE_INPUTS:  # every input genai-perf's tensorrtllm payload may send
        block = ens.split(f'name: "{name}"')[1].split("}")[0]
        assert f"data_type: {dtype}" in block and "dims: [ -1 ]" in block and (("optional: true" in block) == optional)
    assert {"text_input", "max_tokens", "exclude_input_in_output", "stream", "ignore_eos", "lora_name", "min_length"} <= {n for n, _, _ in R.ENSEMBLE_INPUTS}
    assert ens.index('model_name: "preprocessing"') < ens.index('model_name: "engine"') < ens.index('model_name: "postprocessing"')
    eng = (repo / "engine" / "config.pbtxt").read_text()
    assert "decoupled: true" in eng and "count: 2" in eng and "KIND_CPU" in eng and "max_batch_size: 8" in eng
    for n in ("input_ids", "input_length", "max_tokens", "lora_id", "ignore_eos", "stream"):
        assert f'name: "{n}"\n    data_type: TYPE_INT32' in eng  # only DLPack-safe types reach the engine
    params = {k: json.loads(v) for k, v in _parameters(eng).items() if k != "engine"}
    assert params["adapters"] == [["persona", str(a.resolve())], ["other", str(b.resolve())]]  # lora_id 0, 1
    assert params["engine_args"] == {"model": str(model_dir.resolve()), "num_threads": 1}
    pre = _parameters((repo / "preprocessing" / "config.pbtxt").read_text())
    assert json.loads(pre["adapters"]) == params["adapters"] and pre["tokenizer_dir"] == str(model_dir.resolve())
    assert "dynamic_batching" in (repo / "postprocessing" / "config.pbtxt").read_text()
    # numpy 1 first for the numpy-bound steps only; the engine keeps the Python's own numpy
    paths = {m: json.loads((repo / m / "1" / "llmstudy_paths.json").read_text()) for m in ("preprocessing", "postprocessing", "engine")}
    assert paths["preprocessing"]["first"] == paths["postprocessing"]["first"] == ["/np1"] and paths["engine"]["first"] == []
    assert paths["engine"]["then"] == [str(R.SRC_DIR), "/site"]
    assert (repo / "engine" / "1" / "model.py").read_text() == (R.MODELS_DIR / "engine_hf.py").read_text()
    assert not (repo / "ensemble" / "1" / "model.py").exists()


def _parameters(pbtxt: str) -> dict:
    out = {}
    for block in pbtxt.split("parameters {")[1:]:
        key = block.split('key: "')[1].split('"')[0]
        out[key] = json.loads(block.split("string_value: ")[1].split(" }")[0])
    return out


def test_vllm_engine_gets_lora_settings_that_fit_the_adapters(model_dir, tmp_path):
    a, b = _adapter(tmp_path / "a", 4), _adapter(tmp_path / "b", 12)
    repo = R.write_repository(tmp_path / "repo", model_dir, engine="vllm", adapters={"a": a, "b": b}, engine_args={"max_num_seqs": 16}, numpy1_dir="/np1")
    ea = json.loads(_parameters((repo / "engine" / "config.pbtxt").read_text())["engine_args"])
    assert ea == {"model": str(model_dir.resolve()), "max_num_seqs": 16, "tokenizer": str(model_dir.resolve()), "enable_lora": True, "max_loras": 2, "max_lora_rank": 16}  # 12 -> vLLM's next allowed rank
    assert "KIND_MODEL" in (repo / "engine" / "config.pbtxt").read_text()
    assert (repo / "engine" / "1" / "model.py").read_text() == (R.MODELS_DIR / "engine_vllm.py").read_text()
    # an explicit engine argument wins over what the adapters suggest
    repo = R.write_repository(tmp_path / "repo", model_dir, engine="vllm", adapters={"a": a}, engine_args={"max_lora_rank": 64}, numpy1_dir="/np1")
    assert json.loads(_parameters((repo / "engine" / "config.pbtxt").read_text())["engine_args"])["max_lora_rank"] == 64


def test_repository_refuses_what_it_cannot_serve(model_dir, tmp_path):
    with pytest.raises(ValueError, match="engine must be one of"):
        R.write_repository(tmp_path / "r", model_dir, engine="trtllm")
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        R.write_repository(tmp_path / "r", model_dir, adapters={"x": tmp_path}, numpy1_dir="/np1")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        R.write_repository(tmp_path / "r", tmp_path, numpy1_dir="/np1")
    with pytest.raises(FileNotFoundError, match="no tokenizer"):
        R.write_repository(tmp_path / "r", model_dir, tokenizer_dir=tmp_path, numpy1_dir="/np1")
    with pytest.raises(ValueError, match="max_batch_size must be a positive integer"):
        R.write_repository(tmp_path / "r", model_dir, max_batch_size=0, numpy1_dir="/np1")
    assert not (tmp_path / "r").exists()


def test_params_defaults_are_the_articles_and_validated():
    p = TritonParams()
    assert p.max_batch_size == 16  # the article's Triton max_batch_size (llmstudy.chapters.trtllm.params)
    assert p.with_(max_batch_size=4, engine_instances=None).max_batch_size == 4 and p.with_(engine_instances=None).engine_instances == 1
    with pytest.raises(ValueError, match="max_queue_delay_us"):
        TritonParams(max_queue_delay_us=-1)


# --- text: streamed chunks concatenate to the answer ---------------------------------------------------------------


def test_chunks_decode_to_the_completion_text_with_a_word_level_tokenizer():
    tok = synthetic_tokenizer(64)
    a = T.anchor_id(tok)
    assert a == 3 and tok.decode([a]) == "t3"  # UNK is special: the first plain token
    prompt = T.encode(tok, "t5 t9 t60")
    assert prompt == [5, 9, 60]
    new = [7, 8, 2, 11]  # EOS in the middle (ignore_eos) is skipped in the text, as vLLM skips it
    streamed = "".join(T.decode_piece(tok, [i], a) for i in new)
    assert streamed == T.decode_piece(tok, new, a) == T.completion_text(tok, prompt, new) == " t7 t8 t11"
    assert tok.decode([7]) + tok.decode([8]) == "t7t8"  # what decoding each chunk alone would give
    assert T.decode_piece(tok, [], a) == ""


def test_chunks_decode_to_the_completion_text_with_sentencepiece():
    from llmstudy.chapters import lora_vs_qlora as L

    tok = L.llama2_tokenizer()
    a = T.anchor_id(tok)
    assert tok.convert_ids_to_tokens(a) == "▁a"
    prompt = T.encode(tok, "Tell me a story.")
    assert prompt[0] == tok.bos_token_id  # the tokenizer's BOS is added, no chat template
    new = tok("Once upon a time, there was a (small) cat named Tom!", add_special_tokens=False)["input_ids"]
    streamed = "".join(T.decode_piece(tok, [i], a) for i in new)
    assert streamed == T.completion_text(tok, prompt, new) == " Once upon a time, there was a (small) cat named Tom!"


# --- install: the wheel unpacked with its executable bits, the stub for this Python -------------------------------


def _fake_wheel(path: Path, versions=("3.11", "3.12")) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, mode in [("pytriton/tritonserver/bin/tritonserver", 0o755), ("nvidia_pytriton.libs/libx.so", 0o644),
                           ("pytriton/tritonserver/backends/python/libtriton_python.so", 0o644), ("pytriton/__init__.py", 0o644)]:
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o100000 | mode) << 16
            z.writestr(info, "x")
        for v in versions:
            info = zipfile.ZipInfo(f"pytriton/tritonserver/python_backend_stubs/{v}/triton_python_backend_stub")
            info.external_attr = (0o100000 | 0o755) << 16
            z.writestr(info, f"stub {v}")
    return path


def test_unpack_keeps_the_server_and_installs_the_stub_for_this_python(tmp_path):
    import sys

    dest = I.unpack_wheel(_fake_wheel(tmp_path / "w.whl"), tmp_path / "server")
    inst = I.TritonInstall(tmp_path)
    assert inst.tritonserver.stat().st_mode & 0o111 and not (dest / "pytriton" / "__init__.py").exists()
    assert (inst.libs / "libx.so").is_file()
    missing = inst.missing()
    assert len(missing) == 2 and "install_stub" in missing[0] and "numpy1" in missing[1]
    stub = I.install_stub(dest)
    assert stub.read_text() == f"stub {sys.version_info.major}.{sys.version_info.minor}" and stub.stat().st_mode & 0o100
    env = inst.server_env()
    assert env["LD_LIBRARY_PATH"].split(":")[:2] == [str(inst.libs), I.python_libdir()]
    dest2 = I.unpack_wheel(_fake_wheel(tmp_path / "w2.whl", versions=("3.8",)), tmp_path / "s2")
    with pytest.raises(FileNotFoundError, match=r"no Python backend stub for Python 3\.\d+ .*\['3\.8'\]"):
        I.install_stub(dest2)
    bad = tmp_path / "bad.whl"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("pytriton/__init__.py", "")
    with pytest.raises(ValueError, match="not an nvidia-pytriton wheel"):
        I.unpack_wheel(bad, tmp_path / "s3")
    assert not (tmp_path / "s3").exists() and not (tmp_path / "s3.partial").exists()


def test_pins_come_from_envs_triton_txt():
    text = (ROOT / "envs" / "triton.txt").read_text()
    assert I.PYTRITON_PIN == "nvidia-pytriton==0.7.0" and I.PYTRITON_PIN in text
    assert I.NUMPY1_PIN == "numpy==1.26.4" and "genai-perf==0.0.16" in text and "tritonclient[all]==2.50.0" in text


def test_server_command_uses_the_wheel_and_refuses_a_missing_install(tmp_path):
    from llmstudy.serving.triton.server import WheelTritonServer

    with pytest.raises(FileNotFoundError, match="Triton is not installed"):
        WheelTritonServer(tmp_path, install=I.TritonInstall(tmp_path / "none"))
    I.install_stub(I.unpack_wheel(_fake_wheel(tmp_path / "w.whl"), tmp_path / "t" / "server"))
    (tmp_path / "t" / "numpy1" / "numpy").mkdir(parents=True)
    (tmp_path / "t" / "numpy1" / "numpy" / "__init__.py").write_text("")
    inst = I.TritonInstall(tmp_path / "t")
    srv = WheelTritonServer(tmp_path, ["--log-verbose=1"], install=inst, gpu_metrics=False)
    cmd = srv.command
    assert cmd[0] == str(inst.tritonserver) and f"--model-repository={tmp_path}" in cmd and f"--backend-directory={inst.backends}" in cmd
    assert f"--http-port={srv.port}" in cmd and f"--grpc-port={srv.grpc_port}" in cmd and f"--metrics-port={srv.metrics_port}" in cmd
    assert len({srv.port, srv.grpc_port, srv.metrics_port}) == 3 and cmd[-2:] == ["--allow-gpu-metrics=false", "--log-verbose=1"]
    assert srv.env["LD_LIBRARY_PATH"].startswith(str(inst.libs)) and srv.health_path == "/v2/health/ready"
    assert srv.parse_facts("I1203 model_lifecycle.cc:839] \"successfully loaded 'engine' version 1\"") == {"models_loaded": ["engine"]}


# --- the clients --------------------------------------------------------------------------------------------------


def test_request_row_follows_genai_perf_definitions():
    t = C.Timed(chunks=[" t1", " t2", " t3", " t4"], times=[0.100, 0.110, 0.130, 0.160])
    r = C.request_row(0, t, 10, 4)
    assert r["ok"] and r["time_to_first_token"] == pytest.approx(100.0) and r["time_to_second_token"] == pytest.approx(10.0)
    assert r["request_latency"] == pytest.approx(160.0) and r["inter_token_latency"] == pytest.approx(20.0)
    assert r["output_token_throughput_per_user"] == pytest.approx(50.0) and r["tps_streaming"] == pytest.approx(4 / 0.060)
    one = C.request_row(1, C.Timed(chunks=[" t1 t2"], times=[0.05]), 10, 2)  # non-streaming: one response
    assert one["time_to_first_token"] == one["request_latency"] == pytest.approx(50.0) and math.isnan(one["time_to_second_token"])
    bad = C.request_row(2, C.Timed(error="in ensemble 'ensemble', preprocessing: unknown lora_name"), 10, 0)
    assert not bad["ok"] and math.isnan(bad["time_to_first_token"]) and "lora_name" in bad["error"]


class _StandIn(BaseHTTPRequestHandler):
    """A stand-in for Triton's generate endpoints: 3 SSE events 20 ms apart, or one JSON answer, or an error."""

    def log_message(self, *a):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if body.get("lora_name") == "nope":
            self.send_response(400)
            self.end_headers()
            err = json.dumps({"error": "unknown lora_name 'nope'"})
            self.wfile.write((f"data: {err}\n\n" if self.path.endswith("/generate_stream") else err).encode())
            return
        if self.path.endswith("/generate_stream"):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            for i in range(body["max_tokens"]):
                time.sleep(0.02)
                self.wfile.write(f"data: {json.dumps({'text_output': f' t{i + 5}'})}\n\n".encode())
                self.wfile.flush()
            self.wfile.write(b'data: {"model_name":"ensemble"}\n\n')  # the final flag's empty event
            return
        self.send_response(200)
        self.end_headers()
        self.wfile.write(json.dumps({"text_output": " ".join(f"t{i + 5}" for i in range(body["max_tokens"]))}).encode())


@pytest.fixture(scope="module")
def stand_in():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _StandIn)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def test_client_reads_sse_and_errors_and_the_load_lands_in_loadgens_schema(stand_in):
    s = C.generate(stand_in, "t3 t4", 3, stream=True)
    assert s.chunks == [" t5", " t6", " t7"] and s.text == " t5 t6 t7" and s.ok
    assert s.times[0] >= 0.02 and s.times[2] - s.times[0] >= 0.035  # arrival times, not one read at the end
    assert C.generate(stand_in, "t3", 2).chunks == ["t5 t6"]
    assert C.generate(stand_in, "t3", 2, lora_name="nope").error == "unknown lora_name 'nope'"  # a JSON body
    assert C.generate(stand_in, "t3", 2, stream=True, lora_name="nope").error == "unknown lora_name 'nope'"  # an SSE body
    assert "URLError" in C.generate("http://127.0.0.1:9", "t3", 2).error
    req, met = C.run_load(stand_in, ["t3 t4", "t5"] * 3, 4, concurrency=2, stream=True, tokenizer=synthetic_tokenizer(64))
    assert list(req["output_sequence_length"]) == [4] * 6 and list(req["input_sequence_length"]) == [2, 1] * 3
    m = met.set_index(["metric", "stat"])["value"]
    assert m["completed_requests", "value"] == 6 and m["failed_requests", "value"] == 0
    assert m["output_token_throughput", "value"] == pytest.approx(24 / m["benchmark_duration", "value"])
    assert 0.06 <= m["benchmark_duration", "value"] / 3 < 1.0  # three waves of two requests of ~80 ms
    assert m["inter_token_latency", "avg"] == pytest.approx(20, abs=15)


def test_load_with_several_adapters_and_exact_output_lengths(stand_in):
    """A list of adapter names is cycled over the requests (one unknown name fails exactly its requests); with
    ``output_len`` the output length is the known one, not the number of chunks."""
    req, met = C.run_load(stand_in, ["t3"] * 6, 4, concurrency=3, stream=False, lora_name=["a", "nope", "b"], output_len=4)
    assert list(req["ok"]) == [True, False, True] * 2
    assert list(req["output_sequence_length"]) == [4, 0, 4] * 2  # one chunk each (not streamed), four tokens
    m = met.set_index(["metric", "stat"])["value"]
    assert m["completed_requests", "value"] == 4 and m["failed_requests", "value"] == 2


def test_genai_perf_command_shapes_every_variable_input_it_sends(tmp_path):
    cmd = C.genai_perf_command("127.0.0.1:8001", "/tok", tmp_path, 4, 40, 512, 256, streaming=True, lora_name="persona", tools_bin="/tools/bin")
    assert cmd[:3] == ["/tools/bin/genai-perf", "profile", "-m"] and cmd[3] == "ensemble"
    flags = " ".join(cmd)
    assert "--endpoint-type kserve --backend tensorrtllm -u 127.0.0.1:8001" in flags and "--streaming" in cmd
    assert "--synthetic-input-tokens-mean 512" in flags and "--output-tokens-mean 256 --output-tokens-stddev 0" in flags
    assert "--extra-inputs ignore_eos:true" in flags and "--extra-inputs lora_name:persona" in flags
    assert "--warmup-request-count" not in cmd  # tritonclient 2.50.0's perf_analyzer fails with it
    passed = cmd[cmd.index("--") + 1:]
    assert passed == ["--shape", "exclude_input_in_output:1", "--shape", "stream:1", "--shape", "ignore_eos:1", "--shape", "lora_name:1"]
    f = C.write_prompt_file(tmp_path / "p.jsonl", ["t5 t6", "t7"])
    plain = C.genai_perf_command("h:1", "/tok", tmp_path, 1, 2, 2, 8, streaming=False, ignore_eos=False, input_file=f, tools_bin="/b")
    assert "--streaming" not in plain and f"--input-file {f}" in " ".join(plain) and "--synthetic-input-tokens-mean" not in plain
    assert plain[plain.index("--") + 1:] == ["--shape", "exclude_input_in_output:1"]
    assert [json.loads(line) for line in f.read_text().splitlines()] == [{"text": "t5 t6"}, {"text": "t7"}]


def test_word_prompts_have_exact_lengths_through_the_synthetic_tokenizer():
    tok = synthetic_tokenizer(1024)
    ps = C.word_prompts(5, 512, 1024, seed=3)
    assert [len(T.encode(tok, p)) for p in ps] == [512] * 5 and len(set(ps)) == 5
    assert tok.unk_token_id not in {i for p in ps for i in T.encode(tok, p)} and ps == C.word_prompts(5, 512, 1024, seed=3)


METRICS = """# HELP nv_inference_request_success Number of successful inference requests, all batch sizes
nv_inference_request_success{model="ensemble",version="1"} 2
nv_inference_request_success{model="engine",version="1"} 2
nv_inference_request_failure{model="engine",reason="REJECTED",version="1"} 0
nv_inference_request_failure{model="engine",reason="BACKEND",version="1"} 1
nv_inference_exec_count{model="engine",version="1"} 2
nv_inference_count{model="engine",version="1"} 2
nv_inference_request_duration_us{model="engine",version="1"} 52903
nv_inference_queue_duration_us{model="engine",version="1"} 5567
nv_inference_compute_infer_duration_us{model="engine",version="1"} 47240
nv_inference_pending_request_count{model="engine",version="1"} 0
nv_cpu_utilization 0.5
"""


def test_triton_metrics_become_per_request_queue_and_compute_times():
    from llmstudy.serving.triton.server import metrics_per_request, parse_metrics

    after = parse_metrics(METRICS)
    assert after[("nv_inference_request_failure", "engine")] == 1  # reasons summed
    assert ("nv_inference_pending_request_count", "engine") not in after  # a gauge, not a counter
    before = {("nv_inference_request_success", "engine"): 1, ("nv_inference_queue_duration_us", "engine"): 567,
              ("nv_inference_compute_infer_duration_us", "engine"): 7240}
    t = metrics_per_request(before, after).set_index("model")
    assert t.loc["engine", "requests"] == 1 and t.loc["engine", "failures"] == 1
    assert t.loc["engine", "queue_ms"] == pytest.approx(5.0) and t.loc["engine", "compute_infer_ms"] == pytest.approx(40.0)
    assert t.loc["engine", "request_ms"] == pytest.approx(52.903) and t.loc["engine", "compute_output_ms"] == 0
    assert t.loc["ensemble", "requests"] == 2 and t.loc["ensemble", "queue_ms"] == 0  # no counter: nothing queued
