"""Every pattern read from a server log, and the one failure classifier.

* vLLM's startup facts (:func:`parse_startup_log`: KV-cache capacity, memory split, compile and graph times,
  kernels), its memory-profiling lines (:func:`parse_memory_log`) and periodic statistics (:func:`engine_stats`);
* SGLang's startup facts (:func:`parse_sglang_log`) and ``transformers serve``'s (:func:`parse_hfserve_log`);
* why a server failed: :func:`classify_failure` (oom / refused / timeout / unknown) and :func:`failure_reason`
  (the line that says why).

One module for every chapter that reads a log (serving sweeps, context limits, feature ablations, engine
comparison). Patterns are lenient across versions (0.8.3 logs the KV size and concurrency on two lines, 0.21+ on
one; the CPU build says "CPU KV cache size"); every matched line is also kept verbatim so a record shows what the
number was read from.
"""

from __future__ import annotations

import re

NUM = r"([0-9][0-9,]*(?:\.[0-9]+)?)"  # a logged number (thousands commas allowed): the group every pattern reads
_SNUM = r"(-?[0-9][0-9,]*(?:\.[0-9]+)?)"  # signed: a server that runs out of memory logs a negative KV budget

# key -> (regex, converter); the first match in the log wins, except for keys in _LAST (a restart logs them again).
PATTERNS: dict[str, tuple[re.Pattern, type]] = {
    "kv_cache_tokens": (re.compile(rf"(?:GPU|CPU) KV cache size: {NUM} tokens"), int),
    "max_concurrency_len": (re.compile(rf"Maximum concurrency for {NUM} tokens per request"), int),
    "max_concurrency": (re.compile(rf"Maximum concurrency for {NUM} tokens per request: {NUM}x"), float),
    "available_kv_gib": (re.compile(rf"Available KV cache memory: {_SNUM} GiB"), float),
    "weights_gib": (re.compile(rf"Model loading took {NUM} ?GiB"), float),
    "weights_load_s": (re.compile(rf"Model loading took {NUM} ?GiB (?:memory )?and {NUM} ?s"), float),
    "torch_compile_s": (re.compile(rf"torch\.compile (?:takes|took) {NUM} ?s in total"), float),  # 0.25 says "took"
    "graph_capture_s": (re.compile(rf"Graph capturing finished in {NUM} secs?"), float),
    "graph_capture_gib": (re.compile(rf"Graph capturing finished in {NUM} secs?, took {NUM} GiB"), float),
    "cudagraph_estimate_gib": (re.compile(rf"[Ee]stimated CUDA graph memory:? {NUM} GiB"), float),
    # 0.25 logs "Using FLASH_ATTN attention backend out of ..." when it picks, "Using AttentionBackendEnum.X backend." when told
    "attention_backend": (re.compile(r"Using (?:AttentionBackendEnum\.)?(\w+) (?:attention )?backend"), str),
    "flash_attn_version": (re.compile(r"Using FlashAttention version (\d+)"), int),
    "async_scheduling": (re.compile(r"Asynchronous scheduling is (enabled|disabled)"), str),  # the engine's (last) word
    "engine_init_s": (re.compile(rf"init engine \(profile, create kv cache, warmup model\) took {NUM} ?s"), float),
    "vllm_version": (re.compile(r"vLLM API server version ([0-9][^\s]*)"), str),
    "quantization": (re.compile(r"quantization=(\w+), quantization_config"), str),  # the engine's resolved method
    # quantized GEMM kernel (none: unquantized); 0.25 says "Using X for AutoGPTQLinearMethod" / "Selected X for Fp8...Method"
    "linear_kernel": (re.compile(r"(?:Using|Selected) (\w+LinearKernel) for \w+"), str),
    "prefix_caching": (re.compile(r"enable_prefix_caching=(True|False)"), str),
}
_GROUP = {"max_concurrency": 2, "weights_load_s": 2, "graph_capture_gib": 2}
_LAST = {"kv_cache_tokens", "max_concurrency", "max_concurrency_len", "available_kv_gib", "async_scheduling"}


def _convert(text: str, kind: type):
    if kind is str:
        return text
    return kind(float(text.replace(",", ""))) if kind is int else kind(text.replace(",", ""))


def scan_log(text: str, patterns: dict[str, tuple[re.Pattern, type]], group: dict | None = None, last=(), width: int | None = None) -> dict:
    """The facts ``patterns`` (key -> (regex, type)) find in a server log, one line at a time: the first match wins,
    except for keys in ``last`` (the last one wins); ``group`` names the regex group of a key when it is not the first.
    Missing keys are absent, never guessed; ``lines`` holds the matching log lines in order (cut to ``width``)."""
    out: dict = {}
    lines: list[str] = []
    for line in text.splitlines():
        hit = False
        for key, (rx, kind) in patterns.items():
            m = rx.search(line)
            if not m:
                continue
            if key in out and key not in last:
                continue
            out[key] = _convert(m.group((group or {}).get(key, 1)), kind)
            hit = True
        if hit:
            lines.append(line.strip()[:width])
    out["lines"] = lines
    return out


def parse_startup_log(text: str) -> dict:
    """Pull the KV-cache and memory facts out of a vLLM server log.

    Returns a dict with the keys of ``PATTERNS`` that were found (missing ones are absent, never guessed) and
    ``lines``: the verbatim log lines they came from, in log order.
    """
    return scan_log(text, PATTERNS, _GROUP, _LAST)


# --- SGLang and `transformers serve` (through llmstudy.serving.hfserve) ---------------------------------------------
SGLANG_PATTERNS: dict[str, tuple[re.Pattern, type]] = {  # SGLang 0.5.x startup lines (scheduler, model runner, memory pool)
    "kv_cache_tokens": (re.compile(rf"max_total_num_tokens={NUM}"), int),
    "max_running_requests": (re.compile(rf"max_running_requests={NUM}"), int),
    "context_len": (re.compile(rf"context_len={NUM}"), int),
    "available_gpu_mem_gib": (re.compile(rf"available_gpu_mem={NUM} GB"), float),
    "weights_gib": (re.compile(rf"Load weight end\..*?mem usage={NUM} GB"), float),
    "weights_load_s": (re.compile(rf"Load weight end\. elapsed={NUM} s"), float),
    "kv_pool_tokens": (re.compile(rf"Cache is allocated\. dtype: \S+, #tokens: {NUM}"), int),
    "weights_quant": (re.compile(r"Load weight end\..*?quant=(\w+)"), str),  # 0.5.17 logs the checkpoint's method, e.g. gptq
    "weights_bits": (re.compile(r"Load weight end\..*?bits=(\d+)"), int),
    "kv_k_gib": (re.compile(rf"Cache is allocated\..*?K size: {NUM} GB"), float),  # SGLang's "GB" are 2**30 bytes
    "kv_v_gib": (re.compile(rf"Cache is allocated\..*?V size: {NUM} GB"), float),
    # decode graphs ("Capture cuda graph end", 0.5.17: "Capture target decode CUDA graph end"); prefill graphs apart
    "graph_capture_s": (re.compile(rf"Capture (?:target )?(?:decode )?(?:cuda|CUDA) graph end\. (?:Time elapsed|elapsed)[=:] ?{NUM} ?s"), float),
    "prefill_graph_capture_s": (re.compile(rf"Capture (?:target )?prefill (?:cuda|CUDA) graph end\. elapsed={NUM} ?s"), float),
    "attention_backend": (re.compile(r"attention_backend='(\w+)'"), str),
    "sampling_backend": (re.compile(r"sampling_backend='(\w+)'"), str),
    "quantization_kernel": (re.compile(r"(?:Using|using) (\w*marlin\w*) kernel"), str),
}


def parse_sglang_log(text: str) -> dict:
    """SGLang's startup facts, named like vLLM's where they mean the same (``kv_cache_tokens``: the token pool),
    with the verbatim lines in ``lines``; the first match wins."""
    return scan_log(text, SGLANG_PATTERNS, width=500)


HFSERVE_TAG = "[llmstudy hfserve]"  # the launcher's own lines (llmstudy.serving.hfserve.TAG)
_HF_WEIGHTS = re.compile(r"random weights: ([0-9,]+) parameters, dtype (\S+), device (\S+?),")


def parse_hfserve_log(text: str) -> dict:
    """``transformers serve`` facts from the launcher's tagged lines: parameter count, dtype and device of the random
    weights; ``lines`` holds every tagged line."""
    lines = [ln.strip() for ln in text.splitlines() if HFSERVE_TAG in ln]
    out: dict = {"lines": lines}
    for ln in lines:
        m = _HF_WEIGHTS.search(ln)
        if m:
            out.update(parameters=int(m.group(1).replace(",", "")), dtype=m.group(2).rstrip(","), device=m.group(3))
    return out


# --- vLLM's memory-profiling lines (debug level; the context-limits experiment) --------------------------------------
MEM_PATTERNS = {
    "profile_non_kv_gib": r"Total non KV cache memory: ([0-9.]+) ?GiB",
    "torch_peak_increase_gib": r"torch peak memory increase: ([0-9.]+) ?GiB",
    "non_torch_increase_gib": r"non-torch forward increase memory: ([0-9.]+) ?GiB",
    "profile_weights_gib": r"weights memory: ([0-9.]+) ?GiB",
    "kv_memory_to_requested_bytes": r"--kv-cache-memory=(-?\d+)` \([-0-9.]+ GiB\) to fit into requested memory",
    "actual_cudagraph_gib": r"GiB for non-torch memory, and ([0-9.]+) GiB for CUDAGraph memory",
    "init_free_gib": r"worker init memory snapshot: .*?free_memory=([0-9.]+) ?GiB",
    "init_total_gib": r"worker init memory snapshot: .*?total_memory=([0-9.]+) ?GiB",
    "requested_gib": r"worker requested memory: ([0-9.]+) ?GiB",
    "cudagraph_pool_actual_gib": r"CUDA graph pool memory: ([0-9.]+) GiB \(actual\)",
    "estimated_max_model_len": r"the estimated maximum model length is (\d+)",
}
_MEMORY_LINE_KEYS = ("Memory profiling takes", "Actual usage is", "worker init memory snapshot", "worker requested memory",
                     "CUDA graph", "Available KV cache memory", "GPU KV cache size", "Maximum concurrency", "Model loading took")


def parse_memory_log(text: str) -> dict:
    """vLLM 0.25's memory-profiling lines (debug level): the split of non-KV memory, per worker, first worker first.

    Returns the first value of each key and ``<key>_all`` with every worker's value (strings in the log are
    rounded to 0.01 GiB, except ``--kv-cache-memory=`` which is exact bytes).
    """
    out: dict = {}
    for key, rx in MEM_PATTERNS.items():
        vals = [float(m) for m in re.findall(rx, text)]
        if vals:
            conv = int if key.endswith("_bytes") or key == "estimated_max_model_len" else float
            out[key] = conv(vals[0])
            out[f"{key}_all"] = [conv(v) for v in vals]
    return out


def memory_lines(text: str) -> list[str]:
    """The verbatim log lines the memory split is read from (kept in the run record next to the parsed values)."""
    return [ln.strip() for ln in (text or "").splitlines() if any(k in ln for k in _MEMORY_LINE_KEYS)]


# --- the engine's periodic statistics -------------------------------------------------------------------------------
STATS_RE = re.compile(r"Running: (\d+) reqs, Waiting: (\d+) reqs, GPU KV cache usage: ([\d.]+)%(?:, Prefix cache hit rate: ([\d.]+)%)?")


def engine_stats(text: str):
    """vLLM's periodic stats lines (every ~10 s) as a DataFrame: running and waiting requests, KV-cache usage, prefix hit rate."""
    import numpy as np
    import pandas as pd

    rows = [(int(a), int(b), float(c), float(d) if d else np.nan) for a, b, c, d in STATS_RE.findall(text)]
    return pd.DataFrame(rows, columns=["running", "waiting", "kv_usage_pct", "prefix_hit_pct"])


# --- why a server failed: the one classifier, and the line that says why ---------------------------------------------
OUTCOMES = ("oom", "refused", "timeout")
_OOM = re.compile(r"out of memory|OutOfMemoryError|No available memory for the cache blocks", re.IGNORECASE)
_REFUSED = ("ValueError", "ValidationError", "error: argument", "error: unrecognized arguments")
_TIMEOUT = re.compile(r"[Tt]imed? ?out|timeout")
_FAILURE_RES = (
    re.compile(r"Value error, (.*?)(?: \[type=|$)"),
    re.compile(r"Assertion `(.*?)` failed"),
    # a Python assert in the engine: its statement and where it is (the traceback's last frame), before AssertionError
    re.compile(r'File "[^"]*?((?:vllm|sglang|transformers|torch)/[^"]+)", line (\d+), in \w+\n[^\n]*?(assert [^\n]+?)\s*\n(?:[^\n]*\^+\s*\n)?[^\n]*AssertionError'),
    re.compile(r"(CUDA out of memory.*|torch\.OutOfMemoryError.*)"),
    re.compile(r"(CUDA error: .*)"),
    re.compile(r"((?:ValueError|RuntimeError|ModuleNotFoundError|ImportError): .*)"),
)


def classify_failure(log_text: str, unknown: str = "start_failed") -> str:
    """What a failed server's log says, from its last 20,000 characters: ``oom`` (out of memory, or no memory at all
    for KV-cache blocks), ``refused`` (a setting the engine rejects: a ValueError, a validation or argument error;
    this includes a KV cache too small for one max_model_len request, which the KV planner also calls ``refused``),
    ``timeout`` (the log speaks of a time-out), else ``unknown`` (``start_failed`` by default)."""
    t = (log_text or "")[-20000:]
    if _OOM.search(t):
        return "oom"
    if any(s in t for s in _REFUSED):
        return "refused"
    if _TIMEOUT.search(t):
        return "timeout"
    return unknown


def failure_reason(text: str) -> str:
    """The first log line that says why the engine refused or died (validation error, device assert, OOM), else ''."""
    for rx in _FAILURE_RES:
        m = rx.search(text)
        if m and m.lastindex == 3:  # a Python assert: "assert ... (file:line)"
            return f"{m.group(3).strip()} ({m.group(1)}:{m.group(2)})"
        if m:
            return m.group(1).strip()
    return ""


# --- kernels, JIT warnings and evidence lines (the engine comparison reads them from vLLM's and SGLang's logs) --------
KERNEL_PATTERNS: dict[str, re.Pattern] = {
    "moe_backend": re.compile(r"Using '?(\w+)'? \w+ MoE backend"),
    "linear_kernel": PATTERNS["linear_kernel"][0],  # the same pattern the serving chapters read
    "attention_backend": re.compile(r"Using (\w+) attention backend|attention_backend='(\w+)'"),
    "sampling_backend": re.compile(r"sampling_backend='(\w+)'"),
    "quant_kernel": re.compile(r"Using (\w+) kernel\."),
}
JIT_RE = re.compile(r"(\d\d-\d\d \d\d:\d\d:\d\d) \[jit_monitor.py:\d+\] Triton kernel JIT compilation during inference: ([\w.<>]+?)\. This causes")
EVIDENCE_RE = re.compile(r"Load weight end|Cache is allocated|Model loading took|KV cache size|Available KV cache memory|LinearKernel for|kernel\.$")
SGLANG_TS_RE = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\]", re.MULTILINE)  # SGLang's line timestamps
SGLANG_READY_RE = re.compile(r"^\[([^\]]+)\] The server is fired up and ready to roll", re.MULTILINE)


def kernel_facts(text: str) -> dict:
    """Which kernels a server said it picked (MoE backend, linear kernel, attention, sampling) from its log, and
    why it failed if it did (``failure``: the first validation error, device assert or OOM line)."""
    out = {"failure": failure_reason(text)}
    for k, rx in KERNEL_PATTERNS.items():
        m = rx.search(text)
        if m:
            out[k] = next(g for g in m.groups() if g)
    return out
