"""Load from a real load generator, normalised into one tidy schema with genai-perf's metric definitions.

We drive ``vllm bench serve`` (it ships with vLLM, runs on the GPU image and on the CPU build, and with
``--save-detailed`` keeps every request's TTFT and chunk gaps) and recompute genai-perf's metrics from those
per-request timings, so every engine and every tool lands in the same table. Output token counts come from the
server (``usage.completion_tokens``), never from re-tokenising text; lengths are exact (``ignore_eos``).
genai-perf's and aiperf's own exports are normalised into the same schema (Triton/TRT-LLM runs use genai-perf).

Definitions (genai-perf ``llm_profile_data_parser``; see the book's metric page):

* TTFT = first token time - request start; TTST = second response - first response;
* request latency = last response - request start;
* ITL = (request latency - TTFT) / (output tokens - 1), per request; output token throughput per user = 1 / ITL;
* output token throughput = all output tokens / benchmark duration; request throughput = requests / duration;
* the article's TPS: non-streaming = output tokens / latency; streaming = output tokens / (latency - TTFT).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

# metric -> unit; per-request metrics get avg/min/max/std/p50/p90/p99, aggregates one ``value``
PER_REQUEST = {
    "time_to_first_token": "ms",
    "time_to_second_token": "ms",
    "inter_token_latency": "ms",
    "output_token_throughput_per_user": "tokens/s",
    "request_latency": "ms",
    "input_sequence_length": "tokens",
    "output_sequence_length": "tokens",
    "tps_streaming": "tokens/s",
    "tps_non_streaming": "tokens/s",
}
AGGREGATE = {"output_token_throughput": "tokens/s", "request_throughput": "requests/s", "benchmark_duration": "s", "completed_requests": "requests", "failed_requests": "requests"}
STATS = ("avg", "min", "max", "std", "p50", "p90", "p99")
METRIC_COLUMNS = ["metric", "stat", "value", "unit"]


@dataclass(frozen=True)
class Workload:
    """One load point: fixed input/output lengths (random tokens, ``ignore_eos``) at a fixed concurrency.

    ``prefix_len``: the first that many of the ``input_len`` tokens are one random prefix shared by every prompt
    (``--random-prefix-len``; what prefix caching can reuse). ``dataset``: a JSONL file of real text prompts
    (``{"prompt": ...}``, vllm bench's ``custom`` dataset; a path relative to the repository root) sent as they
    are, decoded greedily and ended by the model's EOS or ``output_len`` (a cap); ``input_len`` is then nominal.
    """

    input_len: int
    output_len: int
    concurrency: int
    num_prompts: int
    warmups: int = 2
    seed: int = 0
    prefix_len: int = 0
    dataset: str = ""

    def __post_init__(self):
        for k in ("input_len", "output_len", "concurrency", "num_prompts"):
            v = getattr(self, k)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"{k} must be a positive integer, got {v!r}")
        if self.warmups < 0:
            raise ValueError(f"warmups must be >= 0, got {self.warmups}")
        if not isinstance(self.prefix_len, int) or not 0 <= self.prefix_len < self.input_len:
            raise ValueError(f"prefix_len must be an integer in [0, input_len), got {self.prefix_len!r}")
        if self.dataset and self.prefix_len:
            raise ValueError("a shared prefix applies to random-token prompts, not to a prompt file")

    @property
    def tag(self) -> str:
        """What distinguishes this workload in a point id: lengths, concurrency, shared prefix, prompt file."""
        t = f"in{self.input_len}-out{self.output_len}-c{self.concurrency}"
        if self.prefix_len:
            t += f"-p{self.prefix_len}"
        if self.dataset:
            t += "-" + Path(self.dataset).stem
        return t

    def to_dict(self) -> dict:
        return asdict(self)


def prompts_for(concurrency: int, max_num_seqs: int, min_prompts: int = 8, max_waves: int = 32) -> int:
    """How many requests a point sends: at least ``concurrency`` (so that concurrency is reached) and twice it,
    but no more than ``max_waves`` full batches of the server (``max_num_seqs``) so a queue-bound point stays short."""
    if concurrency <= 0 or max_num_seqs <= 0:
        raise ValueError("concurrency and max_num_seqs must be > 0")
    return max(min_prompts, min(2 * concurrency, max(concurrency, max_waves * min(concurrency, max_num_seqs))))


def bench_command(base_url: str, model: str, tokenizer: str, w: Workload, result_dir: Path, result_file: str, python: str | None = None, served_model_name: str | None = None) -> list[str]:
    """``vllm bench serve`` against an OpenAI-compatible completions endpoint (no chat template: exact lengths)."""
    py = python or os.environ.get("LLMSTUDY_VLLM_PYTHON") or sys.executable
    if w.dataset:  # real text: greedy, ends at EOS or the cap; no chat template (the completions endpoint)
        from llmstudy.core.paths import repo_root

        path = Path(w.dataset) if Path(w.dataset).is_absolute() else repo_root() / w.dataset
        data = ["--dataset-name", "custom", "--dataset-path", str(path), "--custom-output-len", str(w.output_len), "--skip-chat-template", "--temperature", "0"]
    else:
        data = ["--dataset-name", "random", "--random-input-len", str(w.input_len - w.prefix_len), "--random-output-len", str(w.output_len), "--random-range-ratio", "0", "--ignore-eos"]
        data += ["--random-prefix-len", str(w.prefix_len)] if w.prefix_len else []
    return [
        py, "-m", "vllm.entrypoints.cli.main", "bench", "serve",
        "--backend", "openai", "--endpoint", "/v1/completions", "--base-url", base_url,
        "--model", served_model_name or model, "--tokenizer", tokenizer,
        *data, "--max-concurrency", str(w.concurrency),
        "--num-prompts", str(w.num_prompts), "--num-warmups", str(w.warmups), "--seed", str(w.seed),
        "--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "50,90,99",
        "--save-result", "--save-detailed", "--result-dir", str(result_dir), "--result-filename", result_file,
        "--disable-tqdm",
    ]


def bench_args(command: list[str]) -> list[str]:
    """The ``vllm bench serve`` arguments of a :func:`bench_command` (everything after ``bench serve``)."""
    return command[command.index("serve") + 1 :]


class BenchWorker:
    """One long-lived ``vllm bench serve`` process (see ``llmstudy.serving.benchworker``) for many points.

    ``run`` returns (the tool's JSON result plus ``llmstudy_prompts``, the digest of the prompt token ids it sent;
    its console output) and raises ``TimeoutError`` on a timeout (the worker
    is then killed and the next call starts a fresh one) or ``RuntimeError`` when the benchmark fails.
    """

    def __init__(self, python: str | None = None, start_timeout_s: float = 300):
        self.python = python or os.environ.get("LLMSTUDY_VLLM_PYTHON") or sys.executable
        self.start_timeout_s = start_timeout_s
        self.proc: subprocess.Popen | None = None

    def _start(self) -> None:
        src = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH", "")) if p)}
        self.proc = subprocess.Popen([self.python, "-m", "llmstudy.serving.benchworker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        import queue
        import threading

        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump, args=(self.proc.stdout, self.lines), daemon=True).start()
        line = self._readline(self.start_timeout_s)
        if line != "READY":
            self.close()
            raise RuntimeError(f"the vllm bench worker did not start (got {line!r})")

    MARK = "@@llmstudy-bench@@ "

    @classmethod
    def _pump(cls, stream, q) -> None:
        for line in stream:  # only the worker's answers; vLLM's own log lines on the same pipe are dropped
            if line.startswith(cls.MARK):
                q.put(line[len(cls.MARK) :].strip())
        q.put("EOF")

    def _readline(self, timeout_s: float) -> str | None:
        import queue

        try:
            return self.lines.get(timeout=timeout_s)
        except queue.Empty:
            return None

    def run(self, base_url: str, model: str, tokenizer: str, w: Workload, result_dir: Path, tag: str, timeout_s: float = 600, served_model_name: str | None = None) -> tuple[dict, str]:
        result_dir = Path(result_dir)
        result_dir.mkdir(parents=True, exist_ok=True)
        out_file, console, prompts = result_dir / f"{tag}.json", result_dir / f"{tag}.console.txt", result_dir / f"{tag}.prompts.json"
        out_file.unlink(missing_ok=True)
        prompts.unlink(missing_ok=True)
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        args = bench_args(bench_command(base_url, model, tokenizer, w, result_dir, out_file.name, self.python, served_model_name))
        self.proc.stdin.write(json.dumps({"args": args, "console": str(console), "prompts": str(prompts)}) + "\n")
        self.proc.stdin.flush()
        status = self._readline(timeout_s)
        text = console.read_text(errors="replace") if console.exists() else ""
        if status is None:
            self.close()
            raise TimeoutError(f"vllm bench serve did not finish within {timeout_s:.0f} s\n{text[-3000:]}")
        if status != "OK" or not out_file.exists():
            raise RuntimeError(f"vllm bench serve failed ({status})\n{text[-4000:]}")
        result = json.loads(out_file.read_text())
        if prompts.exists():  # what was sent, as token ids (see llmstudy.serving.benchworker.prompt_digest)
            result["llmstudy_prompts"] = json.loads(prompts.read_text())
            prompts.unlink()
        return result, text

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def __enter__(self) -> BenchWorker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _stats(x) -> dict:
    a = np.asarray([v for v in x if v is not None and np.isfinite(v)], dtype=float)
    if a.size == 0:
        return {s: np.nan for s in STATS}
    return {"avg": a.mean(), "min": a.min(), "max": a.max(), "std": a.std(), "p50": np.percentile(a, 50), "p90": np.percentile(a, 90), "p99": np.percentile(a, 99)}


def requests_from_vllm_bench(result: dict) -> pd.DataFrame:
    """One row per request from a ``--save-detailed`` result, with genai-perf's per-request definitions."""
    n = len(result.get("output_lens") or [])
    if n == 0 or "ttfts" not in result or "itls" not in result:
        raise ValueError("not a detailed vllm bench result (run with --save-detailed): no per-request ttfts/itls/output_lens")
    errors = result.get("errors") or [""] * n
    rows = []
    for i in range(n):
        out, ttft, itls = result["output_lens"][i], result["ttfts"][i], result["itls"][i] or []
        ok = not errors[i] and out > 0 and ttft is not None and ttft > 0
        latency = (ttft + sum(itls)) if ok else np.nan  # last chunk time - start, as the tool measured it
        ttft_ms, lat_ms = ttft * 1e3 if ok else np.nan, latency * 1e3 if ok else np.nan
        itl_ms = (lat_ms - ttft_ms) / (out - 1) if ok and out > 1 else np.nan
        rows.append({
            "request": i, "ok": ok, "error": errors[i] or "",
            "input_sequence_length": result["input_lens"][i], "output_sequence_length": out, "chunks": len(itls) + (1 if ok else 0),
            "time_to_first_token": ttft_ms, "time_to_second_token": itls[0] * 1e3 if ok and itls else np.nan,
            "request_latency": lat_ms, "inter_token_latency": itl_ms,
            "output_token_throughput_per_user": 1e3 / itl_ms if itl_ms and itl_ms > 0 else np.nan,
            "tps_streaming": out / ((lat_ms - ttft_ms) / 1e3) if ok and lat_ms > ttft_ms else np.nan,
            "tps_non_streaming": out / (lat_ms / 1e3) if ok else np.nan,
        })
    return pd.DataFrame(rows)


def metrics_from_requests(req: pd.DataFrame, duration_s: float) -> pd.DataFrame:
    """The tidy metric table (metric, stat, value, unit) of one point from its per-request rows."""
    ok = req[req["ok"]]
    rows = [(m, s, v, unit) for m, unit in PER_REQUEST.items() for s, v in _stats(ok[m]).items()]
    agg = {
        "output_token_throughput": ok["output_sequence_length"].sum() / duration_s,
        "request_throughput": len(ok) / duration_s,
        "benchmark_duration": duration_s,
        "completed_requests": len(ok),
        "failed_requests": int((~req["ok"]).sum()),
    }
    rows += [(m, "value", float(v), AGGREGATE[m]) for m, v in agg.items()]
    return pd.DataFrame(rows, columns=METRIC_COLUMNS)


def normalize_vllm_bench(result: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-request rows, tidy metrics) from a detailed ``vllm bench serve`` result."""
    req = requests_from_vllm_bench(result)
    return req, metrics_from_requests(req, float(result["duration"]))


_GENAI_PERF_NAMES = {  # genai-perf / aiperf export key -> our metric
    "time_to_first_token": "time_to_first_token",
    "time_to_second_token": "time_to_second_token",
    "inter_token_latency": "inter_token_latency",
    "output_token_throughput_per_user": "output_token_throughput_per_user",
    "output_token_throughput_per_request": "output_token_throughput_per_user",
    "request_latency": "request_latency",
    "input_sequence_length": "input_sequence_length",
    "output_sequence_length": "output_sequence_length",
    "output_token_throughput": "output_token_throughput",
    "request_throughput": "request_throughput",
    "benchmark_duration": "benchmark_duration",
    "request_count": "completed_requests",
    "error_request_count": "failed_requests",
}
_SECONDS = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0, "sec": 1.0}


def normalize_genai_perf(path: Path | str) -> pd.DataFrame:
    """The tidy metric table from genai-perf's ``profile_export_genai_perf.json`` (or aiperf's
    ``profile_export_aiperf.json``): same names, times in ms, aggregates as ``value``."""
    data = json.loads(Path(path).read_text())
    if isinstance(data.get("records"), dict):  # aiperf nests metrics under "records"
        data = data["records"]
    rows = []
    for key, ours in _GENAI_PERF_NAMES.items():
        d = data.get(key)
        if not isinstance(d, dict):
            continue
        unit = d.get("unit", "")
        target_unit = PER_REQUEST.get(ours) or AGGREGATE.get(ours)
        # times convert to our unit (ms per request, s for the duration); counts and rates pass through
        scale = _SECONDS[unit] / _SECONDS[target_unit] if unit in _SECONDS and target_unit in _SECONDS else 1.0
        if ours in AGGREGATE:
            v = d.get("avg", d.get("value"))
            if v is not None:
                rows.append((ours, "value", float(v) * scale, target_unit))
            continue
        for s in STATS:
            if s in d and d[s] is not None:
                rows.append((ours, s, float(d[s]) * scale, target_unit))
    if not rows:
        raise ValueError(f"{path}: no genai-perf/aiperf metrics found")
    return pd.DataFrame(rows, columns=METRIC_COLUMNS)


def wide(metrics: pd.DataFrame, keys: list[str], stats=("avg", "p50", "p90", "p99", "value")) -> pd.DataFrame:
    """Pivot tidy metrics to one row per point, columns like ``time_to_first_token_avg``."""
    m = metrics[metrics["stat"].isin(stats)].copy()
    m["col"] = m["metric"] + "_" + m["stat"]
    m.loc[m["stat"] == "value", "col"] = m["metric"]
    return m.pivot_table(index=keys, columns="col", values="value", aggfunc="first").reset_index().rename_axis(None, axis=1)
