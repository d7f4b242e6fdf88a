"""Clients of the Triton ensemble: a small HTTP client (``/generate``, ``/generate_stream``) and genai-perf.

(a) :func:`generate` sends one request and times it; :func:`run_load` keeps ``concurrency`` requests in flight (a
closed loop, as genai-perf's concurrency mode) and returns per-request rows and the tidy metric table of
:mod:`llmstudy.serving.loadgen` (genai-perf's definitions: TTFT = first response - request start; request latency =
last response - start; ITL = (latency - TTFT) / (output tokens - 1)). Output tokens are counted as genai-perf
counts them, by tokenizing the returned text with the model's tokenizer (``tokenizer`` argument); without one, the
number of non-empty responses is used (one per decoding step for both engines of this package).

(b) :func:`genai_perf_command` / :func:`run_genai_perf`: genai-perf 0.0.16 with perf_analyzer (``tritonclient``
2.50.0's binary, ``.venv-triton/tools``) over gRPC (``--endpoint-type kserve --backend tensorrtllm``, the
TensorRT-LLM ensemble's payload: text_input, max_tokens, exclude_input_in_output, stream, extra inputs);
``--warmup-request-count`` is never passed (that perf_analyzer build fails with it). The export
``profile_export_genai_perf.json`` is read with :func:`llmstudy.serving.loadgen.normalize_genai_perf`.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

GENERATE = "/v2/models/{model}/generate"
GENERATE_STREAM = "/v2/models/{model}/generate_stream"


@dataclass
class Timed:
    """One request: the text of every response with its arrival time (s after the request was sent)."""

    chunks: list[str] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    error: str = ""
    start: float = 0.0  # time.perf_counter() at send

    @property
    def text(self) -> str:
        return "".join(self.chunks)

    @property
    def ok(self) -> bool:
        return not self.error and bool(self.chunks)


def request_body(prompt: str, max_tokens: int, stream: bool = False, lora_name: str | None = None, ignore_eos: bool = False, **extra) -> dict:
    body = {"text_input": prompt, "max_tokens": int(max_tokens), "stream": bool(stream), "ignore_eos": bool(ignore_eos)}
    if lora_name:
        body["lora_name"] = lora_name
    return {**body, **extra}


def generate(base_url: str, prompt: str, max_tokens: int, stream: bool = False, lora_name: str | None = None,
             ignore_eos: bool = False, model: str = "ensemble", timeout_s: float = 300, **extra) -> Timed:
    """One request to ``/generate`` (one response) or ``/generate_stream`` (server-sent events, one per engine
    response). An error answer is returned in ``Timed.error``, never raised."""
    path = (GENERATE_STREAM if stream else GENERATE).format(model=model)
    body = json.dumps(request_body(prompt, max_tokens, stream, lora_name, ignore_eos, **extra)).encode()
    req = urllib.request.Request(base_url + path, data=body, headers={"Content-Type": "application/json"})
    out = Timed(start=time.perf_counter())
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as r:
            if not stream:
                data = json.loads(r.read())
                out.times.append(time.perf_counter() - out.start)
                out.chunks.append(data.get("text_output", ""))
                return out
            for raw in r:
                line = raw.decode("utf-8").strip()
                if not line.startswith("data:"):
                    continue
                t = time.perf_counter() - out.start
                event = json.loads(line[5:])
                if "error" in event:
                    out.error = str(event["error"])
                    break
                text = event.get("text_output", "")
                if text:  # empty first/last events carry no token (genai-perf drops them too)
                    out.chunks.append(text)
                    out.times.append(t)
    except urllib.error.HTTPError as e:
        out.error = _http_error(e)
    except (urllib.error.URLError, OSError, ValueError) as e:
        out.error = f"{type(e).__name__}: {e}"
    return out


def _http_error(e: urllib.error.HTTPError) -> str:
    """Triton's error text from a refused request: a JSON body (``/generate``) or an SSE event (``/generate_stream``)."""
    try:
        body = e.read().decode("utf-8", "replace").strip()
    except OSError:
        body = ""
    for text in [body] + [line[5:] for line in body.splitlines() if line.startswith("data:")]:
        try:
            err = json.loads(text).get("error")
        except (ValueError, AttributeError):
            continue
        if err:
            return str(err)
    return f"{e}: {body}" if body else str(e)


def request_row(i: int, t: Timed, input_len: int, output_len: int) -> dict:
    """genai-perf's per-request metrics (ms, tokens/s) of one timed request; failed requests keep NaN metrics."""
    nan = float("nan")
    ok = t.ok and output_len > 0
    ttft = t.times[0] * 1e3 if ok else nan
    lat = t.times[-1] * 1e3 if ok else nan
    itl = (lat - ttft) / (output_len - 1) if ok and output_len > 1 else nan
    return {
        "request": i, "ok": ok, "error": t.error, "input_sequence_length": input_len, "output_sequence_length": output_len,
        "chunks": len(t.chunks), "time_to_first_token": ttft,
        "time_to_second_token": (t.times[1] - t.times[0]) * 1e3 if ok and len(t.times) > 1 else nan,
        "request_latency": lat, "inter_token_latency": itl,
        "output_token_throughput_per_user": 1e3 / itl if ok and itl == itl and itl > 0 else nan,
        "tps_streaming": output_len / ((lat - ttft) / 1e3) if ok and lat > ttft else nan,
        "tps_non_streaming": output_len / (lat / 1e3) if ok and lat > 0 else nan,
        "text": t.text,
    }


def run_load(base_url: str, prompts: list[str], max_tokens: int, concurrency: int, stream: bool = True,
             lora_name: str | list[str] | None = None, ignore_eos: bool = True, tokenizer=None, model: str = "ensemble",
             timeout_s: float = 300, output_len: int | None = None):
    """Send every prompt with ``concurrency`` in flight; returns (per-request rows, tidy metrics) in
    :mod:`llmstudy.serving.loadgen`'s schema (benchmark duration = last response - first request).

    ``lora_name``: one adapter for every request, or a list: request ``i`` uses ``lora_name[i % len]`` (several
    adapters in one batch). Output tokens per request: ``output_len`` where the length is known exactly (ignore_eos),
    else the text re-tokenised with ``tokenizer``, else the number of streamed chunks."""
    import pandas as pd

    from llmstudy.serving import loadgen

    if concurrency < 1 or not prompts:
        raise ValueError("concurrency must be >= 1 and prompts non-empty")
    results: list[Timed | None] = [None] * len(prompts)
    nxt = {"i": 0}
    lock = threading.Lock()

    def worker():
        while True:
            with lock:
                i = nxt["i"]
                nxt["i"] += 1
            if i >= len(prompts):
                return
            name = lora_name[i % len(lora_name)] if isinstance(lora_name, list) else lora_name
            results[i] = generate(base_url, prompts[i], max_tokens, stream, name, ignore_eos, model, timeout_s)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(min(concurrency, len(prompts)))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    rows = []
    for i, (p, t) in enumerate(zip(prompts, results, strict=True)):
        if output_len is not None:
            n_in, n_out = (len(tokenizer(p)["input_ids"]) if tokenizer is not None else float("nan")), (output_len if t.ok else 0)
        elif tokenizer is not None:
            n_in, n_out = len(tokenizer(p)["input_ids"]), len(tokenizer(t.text, add_special_tokens=False)["input_ids"]) if t.ok else 0
        else:
            n_in, n_out = float("nan"), len(t.chunks)
        rows.append(request_row(i, t, n_in, n_out))
    req = pd.DataFrame(rows)
    starts = [t.start for t in results]
    ends = [t.start + t.times[-1] for t in results if t.ok]
    duration = (max(ends) - min(starts)) if ends else float("nan")
    return req, loadgen.metrics_from_requests(req, duration)


# --- genai-perf ---------------------------------------------------------------------------------------------------


def tools_env(tools_bin: Path | str | None = None) -> dict:
    """PATH with the tools venv's bin (genai-perf, perf_analyzer) first and LD_LIBRARY_PATH with its CUDA runtime."""
    from llmstudy.serving.triton.install import TritonInstall

    bin_dir = Path(tools_bin) if tools_bin else TritonInstall.default().tools_bin
    cudart = sorted((bin_dir.parent / "lib").glob("python3*/site-packages/nvidia/cuda_runtime/lib"))
    ld = [str(p) for p in cudart] + [os.environ.get("LD_LIBRARY_PATH", "")]
    return {**os.environ, "PATH": os.pathsep.join([str(bin_dir), os.environ.get("PATH", "")]),
            "LD_LIBRARY_PATH": os.pathsep.join(p for p in ld if p), "HF_HUB_OFFLINE": "1"}


def genai_perf_command(grpc_url: str, tokenizer_dir: str, artifact_dir: Path | str, concurrency: int, request_count: int,
                       input_len: int, output_len: int, streaming: bool = True, lora_name: str | None = None,
                       ignore_eos: bool = True, model: str = "ensemble", tools_bin: Path | str | None = None,
                       seed: int = 0, input_file: Path | str | None = None) -> list[str]:
    """``genai-perf profile`` against the ensemble over gRPC (TensorRT-LLM payload), fixed output length.

    Prompts: genai-perf's synthetic ones of ``input_len`` tokens (made with ``tokenizer_dir``), or ``input_file``
    (JSONL of ``{"text": ...}``, :func:`write_prompt_file`; needed where the tokenizer cannot make synthetic text,
    such as the synthetic word-level tokenizer of the tiny CI model, whose corpus words are all unknown)."""
    from llmstudy.serving.triton.install import TritonInstall

    exe = str(Path(tools_bin or TritonInstall.default().tools_bin) / "genai-perf")
    prompts = (["--input-file", str(input_file)] if input_file else
               ["--synthetic-input-tokens-mean", str(input_len), "--synthetic-input-tokens-stddev", "0"])
    cmd = [exe, "profile", "-m", model, "--endpoint-type", "kserve", "--backend", "tensorrtllm", "-u", grpc_url,
           "--concurrency", str(concurrency), "--request-count", str(request_count), *prompts,
           "--output-tokens-mean", str(output_len), "--output-tokens-stddev", "0",
           "--tokenizer", str(tokenizer_dir), "--artifact-dir", str(artifact_dir), "--random-seed", str(seed)]
    sent = ["exclude_input_in_output"]  # genai-perf's tensorrtllm payload always carries it
    if streaming:
        cmd.append("--streaming")
        sent.append("stream")
    if ignore_eos:
        cmd += ["--extra-inputs", "ignore_eos:true"]
        sent.append("ignore_eos")
    if lora_name:
        cmd += ["--extra-inputs", f"lora_name:{lora_name}"]
        sent.append("lora_name")
    # the ensemble declares these [-1] (as text_input and max_tokens, which genai-perf shapes itself): perf_analyzer
    # needs every variable-sized input it sends shaped, so the rest go through to it after "--"
    return cmd + ["--", *[a for n in sent for a in ("--shape", f"{n}:1")]]


def word_prompts(n: int, input_len: int, vocab_size: int, seed: int = 0) -> list[str]:
    """``n`` prompts of random words ``t3 .. t{vocab_size-1}``: exactly ``input_len`` tokens each through the synthetic
    word-level tokenizer of a random-weight model folder (``llmstudy.serving.model_dir``; it adds no BOS)."""
    import random

    if n < 1 or input_len < 1 or vocab_size < 4:
        raise ValueError("n and input_len must be >= 1 and vocab_size >= 4")
    rng = random.Random(seed)
    return [" ".join(f"t{rng.randrange(3, vocab_size)}" for _ in range(input_len)) for _ in range(n)]


def write_prompt_file(path: Path | str, prompts: list[str]) -> Path:
    """genai-perf's ``--input-file`` format: one ``{"text": prompt}`` per line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"text": p}) + "\n" for p in prompts))
    return path


def run_genai_perf(cmd: list[str], artifact_dir: Path | str, timeout_s: float = 600, tools_bin: Path | str | None = None) -> Path:
    """Run a :func:`genai_perf_command`; returns its ``profile_export_genai_perf.json`` (console in
    ``artifact_dir/genai-perf.console.txt``). A failure raises with the console's tail."""
    artifact_dir = Path(artifact_dir)
    artifact_dir.mkdir(parents=True, exist_ok=True)
    console = artifact_dir / "genai-perf.console.txt"
    with open(console, "w") as f:
        p = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=tools_env(tools_bin), cwd=artifact_dir, timeout=timeout_s, check=False)
    found = sorted(artifact_dir.rglob("profile_export_genai_perf.json"))
    if p.returncode != 0 or not found:
        raise RuntimeError(f"genai-perf failed (exit {p.returncode})\n" + console.read_text(errors="replace")[-4000:])
    return found[-1]
