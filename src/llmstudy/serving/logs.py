"""Facts a vLLM server prints while it starts: KV-cache capacity, memory split, compile and graph times.

One parser for every chapter that reads a vLLM log (serving sweeps, context limits, feature ablations). Patterns are
lenient across versions (0.8.3 logs the KV size and concurrency on two lines, 0.21+ on one; the CPU build says
"CPU KV cache size"); every matched line is also kept verbatim so a record shows what the number was read from.
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
