"""Run mode: start vLLM servers for each configuration, read their memory log lines, write a run record."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from llmstudy.chapters.context_limits.published import MAVERICK, MAVERICK_FP8, SCOUT
from llmstudy.serving import vllm_probe
from llmstudy.serving.budget import Budget
from llmstudy.serving.kv_planner import (
    EXPERIMENT,
    VERSIONS,
    Deployment,
    GiB,
    NotModelledError,
    emulated_utilization,
    model_facts,
    plan,
)
from llmstudy.serving.logs import MEM_PATTERNS as _MEM_PATTERNS  # noqa: F401 - the one log module
from llmstudy.serving.logs import classify_failure as _classify_failure
from llmstudy.serving.logs import memory_lines, parse_memory_log  # noqa: F401
from llmstudy.serving.model_dir import prepare_model_dir as _prepare_model_dir
from llmstudy.serving.model_dir import server_config as _server_config

SCOUT_12L, SCOUT_24L, MAVERICK_FP8_6L = f"{SCOUT}-12l", f"{SCOUT}-24l", f"{MAVERICK_FP8}-6l"  # fewer layers, same shapes (vLLM 0.8.3 terms, one GPU)

# --- Run mode: measure on a 4-GPU machine -------------------------------------------------------------------------

SERVER_ENV = {  # never NVLink multicast on the shared host; FlashInfer is not staged; debug level for the memory lines
    "NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1",
    "VLLM_USE_FLASHINFER_SAMPLER": "0", "VLLM_LOGGING_LEVEL": "DEBUG", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
}


@dataclass(frozen=True)
class GpuConfig:
    """One server start of the device experiment: a model, a weight format and an H200 or emulated-H100 budget."""

    name: str
    model: str
    weights: str
    # "h200": gpu_memory_utilization 0.9; "h100": 0.9 x H100 total / H200 total; "default": no flag, the version's default
    budget: str = "h200"
    max_model_len: int = 200_000
    enforce_eager: bool = True
    hybrid_kv: bool | None = None
    kv_dtype: str = "auto"
    long_requests: tuple[int, ...] = ()
    est_start_s: int = 150  # skip the configuration if less time than this is left
    gpus: int | None = None  # the number of GPUs (= TP) the configuration is meant for; None: any

    vllm_version: str = "0.25.0"
    # False: the full multimodal model (Llama 4: Llama4ForConditionalGeneration with its vision tower), as the article
    # served it; True: its language model alone (text_config as ...ForCausalLM)
    text_only: bool = True
    max_num_seqs: int | None = None  # None: the version's default (1024 on an H100/H200 API server)

    @property
    def utilization(self) -> float:
        if self.budget == "default":
            return VERSIONS[self.vllm_version].default_utilization
        return 0.9 if self.budget == "h200" else emulated_utilization("h100-80gb", "h200", 0.9)

    @property
    def default_gpus(self) -> int:
        return self.gpus or 4

    def deployment(self, num_gpus: int | None = None, **measured) -> Deployment:
        """The planner's deployment for this configuration on ``num_gpus`` GPUs (default: the count it is meant for, else 4)."""
        return Deployment(model=self.model, gpu="h200", num_gpus=num_gpus or self.default_gpus, weights=self.weights, kv_dtype=self.kv_dtype,
                          gpu_memory_utilization=self.utilization, max_model_len=self.max_model_len, vllm_version=self.vllm_version,
                          hybrid_kv=self.hybrid_kv, enforce_eager=self.enforce_eager, text_only=self.text_only,
                          max_num_seqs=self.max_num_seqs, **measured)

    def server_args(self, num_gpus: int | None = None) -> list[str]:
        num_gpus = num_gpus or self.default_gpus
        args = ["--tensor-parallel-size", str(num_gpus), "--load-format", "dummy", "--max-model-len", str(self.max_model_len)]
        if self.budget != "default":  # "default": the server is started as a user would, without the flag
            args += ["--gpu-memory-utilization", repr(self.utilization)]
        args += ["--disable-custom-all-reduce", "--kv-cache-dtype", self.kv_dtype]
        if self.enforce_eager:
            args.append("--enforce-eager")
        if self.max_num_seqs:
            args += ["--max-num-seqs", str(self.max_num_seqs)]
        if self.weights == "fp8-online":
            args += ["--quantization", "fp8"]
        return args

    @property
    def probed(self) -> bool:
        """vLLM 0.8.3 logs too few memory terms: its servers run with the in-process probe (llmstudy.serving.vllm_probe)."""
        return self.vllm_version == "0.8.3"

    def server_env(self) -> dict:
        env = dict(SERVER_ENV)
        if self.hybrid_kv is False:
            env["VLLM_ALLOW_CHUNKED_LOCAL_ATTN_WITH_HYBRID_KV_CACHE"] = "0"
        return env


GPU_CONFIGS: dict[str, GpuConfig] = {c.name: c for c in (
    GpuConfig("scout-bf16-h200", SCOUT, "bf16", "h200"),
    GpuConfig("scout-bf16-h100", SCOUT, "bf16", "h100"),
    GpuConfig("scout-fp8-h200", SCOUT, "fp8-online", "h200"),
    GpuConfig("scout-fp8-h100-hybrid-off", SCOUT, "fp8-online", "h100", hybrid_kv=False),
    # the article's check: Scout 4xFP8, max_model_len 500,000, a 490,000-token prompt (here on an H100 budget)
    GpuConfig("scout-fp8-h100-long", SCOUT, "fp8-online", "h100", max_model_len=500_000, long_requests=(100_000, 490_000), est_start_s=240),
    GpuConfig("maverick-fp8-h200", MAVERICK_FP8, "fp8-checkpoint", "h200", est_start_s=200),
    GpuConfig("maverick-fp8-h100", MAVERICK_FP8, "fp8-checkpoint", "h100", est_start_s=200),
    GpuConfig("scout-fp8-h200-graphs", SCOUT, "fp8-online", "h200", enforce_eager=False, est_start_s=330),
    GpuConfig("scout-bf16-h200-kvfp8", SCOUT, "bf16", "h200", kv_dtype="fp8"),
    # TP=8 (issue 9): the article's recommended lengths on the H100 budget, the vLLM blog's 8xH200 lengths on the H200
    # budget; Maverick BF16 is the article's "8xBF16 (OOM)" cell and its H200 counterpart.
    GpuConfig("tp8-scout-bf16-h100-1200k", SCOUT, "bf16", "h100", max_model_len=1_200_000, gpus=8),
    GpuConfig("tp8-scout-fp8-h100-1500k", SCOUT, "fp8-online", "h100", max_model_len=1_500_000, gpus=8),
    GpuConfig("tp8-maverick-fp8-h100-430k", MAVERICK_FP8, "fp8-checkpoint", "h100", max_model_len=430_000, est_start_s=180, gpus=8),
    GpuConfig("tp8-maverick-bf16-h100", MAVERICK, "bf16", "h100", max_model_len=300_000, est_start_s=150, gpus=8),
    GpuConfig("tp8-scout-bf16-h200-3600k", SCOUT, "bf16", "h200", max_model_len=3_600_000, gpus=8),
    GpuConfig("tp8-scout-fp8-h200-3600k", SCOUT, "fp8-online", "h200", max_model_len=3_600_000, gpus=8),
    GpuConfig("tp8-maverick-fp8-h200-1000k", MAVERICK_FP8, "fp8-checkpoint", "h200", max_model_len=1_000_000, est_start_s=180, gpus=8),
    GpuConfig("tp8-maverick-bf16-h200-1000k", MAVERICK, "bf16", "h200", max_model_len=1_000_000, est_start_s=200, gpus=8),
    # One H200, vLLM's default gpu_memory_utilization, max_model_len 4,096, eager (issue 19): one model of each family the
    # planner was not fitted on: dense GQA (Qwen3, Mistral), sliding-window hybrids (Gemma-2, Gemma-3 text), MoE under
    # two expert namings (Qwen3-MoE num_experts, Mixtral num_local_experts) and MLA + MoE (DeepSeek-V2-Lite).
    *(GpuConfig(f"tp1-{m}", m, "bf16", "default", max_model_len=4096, est_start_s=est, gpus=1) for m, est in (
        ("qwen3-8b", 75), ("mistral-7b-v0.3", 75), ("gemma-2-9b", 80), ("gemma-3-12b-it", 80), ("qwen3-30b-a3b", 100),
        ("deepseek-v2-lite", 90), ("mixtral-8x7b", 130))),
    # vLLM 0.8.3 (issue 23) on one H200 with the emulated H100 80GB budget: Llama 4's per-layer shapes, vocabulary and
    # vision tower with fewer layers (data/models/*-12l, *-6l), so one GPU holds about what one GPU of the article's
    # deployments held. Text model and full multimodal model, bf16 and online FP8, eager and the defaults (graphs).
    *(GpuConfig(f"v083-{name}{'-eager' if eager else ''}", model, weights, "h100", max_model_len=16_384, enforce_eager=eager,
                est_start_s=est + (0 if eager else 90), gpus=1, vllm_version="0.8.3", text_only=text)
      for eager in (True, False)
      for name, model, weights, text, est in (
          ("scout12-text-bf16", SCOUT_12L, "bf16", True, 90), ("scout12-mm-bf16", SCOUT_12L, "bf16", False, 100),
          ("scout12-mm-fp8", SCOUT_12L, "fp8-online", False, 110), ("maverick6-mm-fp8", MAVERICK_FP8_6L, "fp8-checkpoint", False, 110))),
    # the sampler's rows: max_num_seqs 256 and 64 instead of 1024 (the profiling sampler runs one row per request)
    *(GpuConfig(f"v083-scout12-text-bf16-eager-seqs{n}", SCOUT_12L, "bf16", "h100", max_model_len=16_384, est_start_s=70, gpus=1,
                vllm_version="0.8.3", max_num_seqs=n) for n in (256, 64)),
    # online FP8 with 12 and 24 layers: does the allocator's unreleased memory grow with the layers quantized at load?
    *(GpuConfig(f"v083-scout{n}-text-fp8-eager", model, "fp8-online", "h100", max_model_len=16_384, est_start_s=70, gpus=1,
                vllm_version="0.8.3") for n, model in ((12, SCOUT_12L), (24, SCOUT_24L))),
)}
# Device calls of <= 10 minutes each (server starts take 70-120 s in eager mode on 4xH200): a-c on 4 GPUs, d-e on 8.
CALLS = {
    "a": ("scout-bf16-h200", "scout-bf16-h100", "scout-fp8-h200", "scout-fp8-h100-hybrid-off"),
    "b": ("scout-fp8-h100-long", "maverick-fp8-h200", "maverick-fp8-h100"),
    "c": ("scout-fp8-h200-graphs", "scout-bf16-h200-kvfp8"),
    # 8 GPUs (nvidia-h200-x8)
    "d": ("tp8-scout-bf16-h100-1200k", "tp8-scout-fp8-h100-1500k", "tp8-maverick-fp8-h100-430k", "tp8-maverick-bf16-h100"),
    "e": ("tp8-scout-bf16-h200-3600k", "tp8-scout-fp8-h200-3600k", "tp8-maverick-fp8-h200-1000k", "tp8-maverick-bf16-h200-1000k"),
    # 1 GPU (nvidia-h200): seven families at vLLM's default utilization, Mixtral (93 GiB of weights) last
    # 1 GPU, vLLM 0.8.3 (issue 23): eager first (the memory terms without compile or graphs), then vLLM's defaults
    "v1": ("v083-scout12-text-bf16-eager", "v083-scout12-mm-bf16-eager", "v083-scout12-mm-fp8-eager", "v083-maverick6-mm-fp8-eager"),
    "v2": ("v083-scout12-mm-fp8", "v083-scout12-mm-bf16", "v083-maverick6-mm-fp8", "v083-scout12-text-bf16"),
    # the sampler's rows (max_num_seqs 256, 64) and online FP8 at 12 and 24 layers
    "v3": ("v083-scout12-text-bf16-eager-seqs256", "v083-scout12-text-bf16-eager-seqs64"),
    "v4": ("v083-scout12-text-fp8-eager", "v083-scout24-text-fp8-eager"),
    "g": ("tp1-qwen3-8b", "tp1-mistral-7b-v0.3", "tp1-gemma-2-9b", "tp1-gemma-3-12b-it", "tp1-qwen3-30b-a3b", "tp1-deepseek-v2-lite",
          "tp1-mixtral-8x7b"),
}


def one_gpu_config(model: str) -> GpuConfig:
    """``tp1-<model>``: one vLLM server of any model config on one GPU with vLLM's defaults, as the other families were
    measured (bf16, random weights, max_model_len 4,096). The config is validated here, before any GPU work."""
    from llmstudy.chapters.context_limits.analysis import weight_formats  # (analysis imports this module)
    from llmstudy.core import models as M

    M.config_path(model)  # an unknown model or an invalid config: one clear line
    weights = weight_formats(model)[0]  # the checkpoint's own format (FP8, MXFP4), else bf16
    return GpuConfig(f"tp1-{model}", model, weights, "default", max_model_len=4096, est_start_s=150, gpus=1)


def resolve_configs(names) -> list[GpuConfig]:
    """Configuration names (or call letters a/b/c) to configurations; unknown names are a clear error."""
    out = []
    for n in names:
        for m in CALLS.get(n, (n,)):
            if m not in GPU_CONFIGS and m.startswith("tp1-"):
                out.append(one_gpu_config(m.removeprefix("tp1-")))
                continue
            if m not in GPU_CONFIGS:
                raise ValueError(f"unknown configuration {m!r}; known: {sorted(GPU_CONFIGS)}, calls {sorted(CALLS)}, "
                                 "or tp1-<model> for any model config")
            out.append(GPU_CONFIGS[m])
    if not out:
        raise ValueError("no configuration given")
    return out


def server_config(model: str, text_only: bool = True) -> dict:
    """The config.json a vLLM server loads for a model (text-only: Llama 4's text_config as Llama4ForCausalLM)."""
    return _server_config(model, text_only=text_only)


def prepare_model_dir(model: str, dest: Path, text_only: bool = True) -> Path:
    """A folder vLLM can serve with --load-format dummy: config.json + a synthetic tokenizer of the exact vocabulary
    (and, for the full multimodal model, the processor files its profiling run needs)."""
    return _prepare_model_dir(model, dest, text_only=text_only)


def classify_failure(log_tail: str) -> str:
    """oom / refused / timeout / error from the end of a failed server's log (the one classifier, "error" when unknown)."""
    return _classify_failure(log_tail, unknown="error")


def measure_ttft(base_url: str, n_tokens: int, vocab: int, max_tokens: int = 16, seed: int = 0, timeout_s: float = 600) -> dict:
    """Stream one completion whose prompt is exactly ``n_tokens`` random token ids; time to the first token."""
    import json
    import random
    import time
    import urllib.request

    rng = random.Random(seed)
    ids = [rng.randrange(3, vocab) for _ in range(n_tokens)]  # ids 0-2 are the synthetic tokenizer's specials
    body = json.dumps({"prompt": ids, "max_tokens": max_tokens, "temperature": 0.0, "ignore_eos": True, "stream": True,
                       "stream_options": {"include_usage": True}}).encode()
    req = urllib.request.Request(f"{base_url}/v1/completions", data=body, headers={"Content-Type": "application/json"})
    t0 = time.perf_counter()
    ttft, usage, chunks = None, {}, 0
    with urllib.request.urlopen(req, timeout=timeout_s) as resp:
        for raw in resp:
            line = raw.decode().strip()
            if not line.startswith("data:") or line == "data: [DONE]":
                continue
            ev = json.loads(line[5:])
            if ev.get("choices"):
                chunks += 1
                if ttft is None:
                    ttft = time.perf_counter() - t0
            if ev.get("usage"):
                usage = ev["usage"]
    total = time.perf_counter() - t0
    return {"prompt_tokens_sent": n_tokens, "prompt_tokens_reported": usage.get("prompt_tokens"),
            "output_tokens": usage.get("completion_tokens"), "ttft_s": ttft, "total_s": total, "chunks": chunks}


def _row(cfg: GpuConfig, num_gpus: int, outcome: str, error: str | None, facts: dict, mem: dict, start_s: float | None,
         probe_file: Path | None = None) -> dict:
    try:
        dep = cfg.deployment(num_gpus)
        p = plan(dep)
    except Exception as e:  # the planner refuses (or fails on) this model: the measurement is still a result
        dep, p, not_modelled = None, None, f"{type(e).__name__}: {e}"
    row = {"config": cfg.name, "model": cfg.model, "weights": cfg.weights, "budget": cfg.budget, "num_gpus": num_gpus,
           "tp": dep.tp if dep else num_gpus, "gpu_memory_utilization": cfg.utilization, "max_model_len": cfg.max_model_len,
           "kv_dtype": cfg.kv_dtype, "enforce_eager": cfg.enforce_eager, "hybrid_kv": dep.hybrid if dep else None,
           "outcome": outcome, "error": error, "start_s": start_s}
    for k in ("kv_cache_tokens", "max_concurrency", "max_concurrency_len", "available_kv_gib", "weights_gib", "cudagraph_estimate_gib",
              "graph_capture_s", "attention_backend", "vllm_version"):
        row[k] = facts.get(k)
    for k in _MEM_PATTERNS:
        row[k] = mem.get(k)
    if cfg.probed:  # vLLM 0.8.3's terms as its engine process saw them (bytes); absent events leave the columns empty
        row["text_only"] = cfg.text_only
        measured = vllm_probe.terms(vllm_probe.read_events(probe_file)) if probe_file else {}
        for k in vllm_probe.TERMS:
            row[f"probe_{k}"] = measured.get(k)
    if p is None:
        row.update({"pred_outcome": "not modelled" if not_modelled.startswith("NotModelledError") else "planner error",
                    "pred_error": not_modelled})
        return row
    row.update({"pred_outcome": p.outcome, "pred_kv_cache_tokens": p.kv_cache_tokens, "pred_available_kv_gib": p.available_kv_bytes / GiB,
                "pred_weights_gib": p.weights_bytes / GiB, "pred_activation_gib": p.activation_peak_bytes / GiB,
                "pred_non_torch_gib": p.non_torch_bytes / GiB, "pred_largest_max_model_len": p.max_model_len_that_starts})
    return row


def run_experiment(configs=("a",), run_id: str = "", root=None, num_gpus: int | None = None, deadline_s: float = 570,
                   workdir: str | None = None, port: int | None = None) -> Path:
    """Start one vLLM server per configuration, record its KV-cache and memory lines, serve the long requests.

    A start failure (OOM, refusal, timeout) is that configuration's outcome. Configurations that no longer fit in
    ``deadline_s`` are recorded as ``skipped``. Writes ``data/runs/context_limits/<run_id>/`` (or under ``root``).
    """
    import os
    import tempfile
    import time

    from tqdm.auto import tqdm

    from llmstudy.core.records import RunWriter, new_run_id

    cfgs = resolve_configs(configs)
    budget = Budget(deadline_s)  # the one time-budget scheme (llmstudy.serving.budget)
    try:
        import torch

        gpus = torch.cuda.device_count()
    except Exception:  # pragma: no cover - torch is always installed here
        gpus = 0
    num_gpus = num_gpus or gpus
    if not num_gpus:
        raise ValueError("run mode needs CUDA GPUs (none visible); the chapter's analyze mode runs on CPU")
    for c in cfgs:
        if c.gpus is not None and c.gpus != num_gpus:
            raise ValueError(f"configuration {c.name!r} is meant for {c.gpus} GPUs (TP={c.gpus}); {num_gpus} are visible")
        try:
            c.deployment(num_gpus)  # impossible settings stop here, before any server starts
        except NotModelledError:
            pass  # what the planner does not model is measured all the same (its row says "not modelled")
    from llmstudy.serving.servers import ServerStartError, VLLMServer

    run_id = run_id or new_run_id(f"{num_gpus}gpu")
    work = Path(workdir or os.environ.get("LLMSTUDY_CACHE", tempfile.gettempdir())) / "llmstudy-context-limits"
    params = {"configs": [c.name for c in cfgs], "num_gpus": num_gpus, "deadline_s": deadline_s, "server_env": SERVER_ENV,
              "weights": "dummy (--load-format dummy)", "tokenizer": "synthetic word-level, exact vocabulary size",
              "gpu_configs": {c.name: dataclasses.asdict(c) | {"utilization": c.utilization, "args": c.server_args(num_gpus)} for c in cfgs}}
    rows, req_rows = [], []
    with RunWriter(EXPERIMENT, params, run_id=run_id, root=root) as rec:
        for cfg in tqdm(cfgs, desc="context_limits", unit="server"):
            left = budget.left()
            if left < cfg.est_start_s:
                rows.append(_row(cfg, num_gpus, "skipped", f"{left:.0f} s left < {cfg.est_start_s} s estimated start", {}, {}, None))
                continue
            model_dir = prepare_model_dir(cfg.model, work / f"{Path(cfg.model).name}-{'text' if cfg.text_only else 'mm'}", cfg.text_only)
            log_path = rec.dir / "logs" / f"{cfg.name}.log"
            log_path.parent.mkdir(parents=True, exist_ok=True)
            env = cfg.server_env()
            probe_file = rec.dir / "raw" / f"{cfg.name}.probe.jsonl"
            if cfg.probed:
                probe_file.parent.mkdir(parents=True, exist_ok=True)
                env.update(vllm_probe.server_env(probe_file, work / "probe-site"))
            t0 = time.monotonic()
            try:
                with VLLMServer(model=str(model_dir), args=cfg.server_args(num_gpus), port=port, env=env,
                                log_path=log_path, start_timeout_s=max(60, int(left - 20))) as srv:
                    start_s = time.monotonic() - t0
                    vocab = model_facts(cfg.model, True)["vocab"]
                    for i, n in enumerate(((64,) if cfg.long_requests else ()) + cfg.long_requests):
                        remaining = budget.left()
                        if remaining < 60:
                            req_rows.append({"config": cfg.name, "prompt_tokens_sent": n, "outcome": "skipped", "error": f"{remaining:.0f} s left"})
                            continue
                        try:
                            r = measure_ttft(srv.base_url, n, vocab, seed=i, timeout_s=remaining - 20)
                            r.update(config=cfg.name, outcome="ok", error=None, warmup=n == 64)
                        except Exception as e:  # a failed request is a result
                            r = {"config": cfg.name, "prompt_tokens_sent": n, "outcome": "error", "error": f"{type(e).__name__}: {e}"}
                        req_rows.append(r)
                        tqdm.write(f"{cfg.name}: {n:,}-token prompt -> {r.get('outcome')} ttft={r.get('ttft_s')}")
                    text = srv.log_text()
                    facts = dict(srv.facts)
                    facts.update({k: v for k, v in _facts(text).items() if k not in facts})
                    rows.append(_row(cfg, num_gpus, "ok", None, facts, parse_memory_log(text), start_s, probe_file))
                    rec.write_json({"facts": facts, "memory": parse_memory_log(text), "memory_lines": memory_lines(text)}, f"raw/{cfg.name}.json")
            except ServerStartError as e:
                tail = getattr(e, "log_tail", "") or ""
                text = log_path.read_text(errors="replace") if log_path.exists() else tail
                outcome = classify_failure(text[-20000:] or tail) if (text or tail) else (getattr(e, "outcome", None) or "error")
                rows.append(_row(cfg, num_gpus, outcome, f"{e}\n{tail}".strip()[-2000:],
                                 _facts(text), parse_memory_log(text), None, probe_file))
            tqdm.write(f"{cfg.name}: {rows[-1]['outcome']}, logged {rows[-1]['kv_cache_tokens']} tokens (planner {rows[-1].get('pred_kv_cache_tokens') or rows[-1]['pred_outcome']})")
        rec.write_table(pd.DataFrame(rows))
        rec.write_table(pd.DataFrame(req_rows), "requests")
    return rec.final


def _facts(text: str) -> dict:
    from llmstudy.serving.logs import parse_startup_log

    return parse_startup_log(text or "")
