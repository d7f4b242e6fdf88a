"""The preflight: each pitfall of the article recognised before anything runs, with its fix."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .architecture import experts
from .config import CONVERTERS, HF_TO_TRTLLM_LORA, SKELETON, TRITON_MOE_MODEL_TYPES
from .params import ServeDeploy, TritonDeploy
from .plan import _logits_dtype, fill_values


@dataclass(frozen=True)
class Finding:
    check: str
    status: str  # ok | error | warning | note (informational) | skipped
    message: str
    fix: str = ""


class PreflightError(ValueError):
    """The preflight found errors; the message lists each with its fix."""


def _adapters(cfg: TritonDeploy) -> list[tuple[str, dict | None]]:
    """(dir, adapter_config.json or None) for each LoRA adapter."""
    out = []
    for d in cfg.lora_dirs:
        f = Path(d) / "adapter_config.json"
        out.append((d, json.loads(f.read_text()) if f.is_file() else None))
    return out


def check_dtypes(cfg: TritonDeploy) -> list[Finding]:
    d, bad = cfg.ckpt_dtype, []
    if cfg.plugin_dtype not in ("auto", d):
        bad.append(f"plugins built as {cfg.plugin_dtype}")
    if cfg.lora_dirs and cfg.storage_type != d:
        bad.append(f"LoRA weights converted as {cfg.storage_type} (--storage-type)")
    if cfg.logits_datatype == "TYPE_BF16":
        bad.append("logits TYPE_BF16 (trtllm-build --logits_dtype accepts float16 or float32 only)")
    if bad:
        return [Finding("dtypes", "error", f"checkpoint dtype is {d} but " + "; ".join(bad) + " — mismatched dtypes stop the server at start with std::bad_cast",
                        f"use {d} everywhere: --dtype {d}, plugins auto, --storage-type {d}, logits TYPE_FP16 or TYPE_FP32 with the same --logits_dtype")]
    return [Finding("dtypes", "ok", f"checkpoint, plugins and LoRA weights are {d}; logits {cfg.logits_datatype} = --logits_dtype {_logits_dtype(cfg.logits_datatype)}")]


def check_lora_modules(cfg: TritonDeploy) -> list[Finding]:
    if not cfg.lora_dirs:
        return [Finding("lora_modules", "ok", "no LoRA adapters")]
    trained = set(cfg.lora_target_modules)
    for name, adapter in _adapters(cfg):
        if adapter is not None:
            t = adapter.get("target_modules")
            if not isinstance(t, list):
                return [Finding("lora_modules", "error", f"{name}: target_modules is {t!r}, a pattern, not a list of modules", "retrain (or edit adapter_config.json) with an explicit list such as q_proj, k_proj, ...")]
            if set(t) != trained:
                return [Finding("lora_modules", "error", f"{name} was trained on {sorted(t)} but lora_target_modules says {sorted(trained)}", "set lora_target_modules to the adapter's target_modules")]
    unknown = sorted(trained - set(HF_TO_TRTLLM_LORA))
    if unknown:
        return [Finding("lora_modules", "error", f"training targets {unknown} have no TensorRT-LLM LoRA module", f"train on modules from {list(HF_TO_TRTLLM_LORA)}")]
    want, have = [HF_TO_TRTLLM_LORA[m] for m in cfg.lora_target_modules], list(cfg.trtllm_lora_modules)
    if sorted(want) != sorted(have):
        miss, extra = sorted(set(want) - set(have)), sorted(set(have) - set(want))
        return [Finding("lora_modules", "error", f"training targets map to {sorted(want)}, --lora_target_modules is {have}" + (f"; missing {miss}" if miss else "") + (f"; not trained {extra}" if extra else "")
                        + " — the server fails at start with map::at", "build with --lora_target_modules " + " ".join(want) + " (leave build_lora_modules empty to map automatically)")]
    return [Finding("lora_modules", "ok", "training targets map one to one: " + ", ".join(f"{m}→{HF_TO_TRTLLM_LORA[m]}" for m in cfg.lora_target_modules))]


def check_lora_rank(cfg: TritonDeploy) -> list[Finding]:
    if not cfg.lora_dirs:
        return [Finding("lora_rank", "ok", "no LoRA adapters")]
    ranks = {name: (a or {}).get("r", cfg.lora_rank) for name, a in _adapters(cfg)}
    top = max(ranks.values())
    if top > cfg.max_lora_rank:
        return [Finding("lora_rank", "error", f"adapter rank {top} ({', '.join(f'{k}: r={v}' for k, v in ranks.items())}) exceeds max_lora_rank {cfg.max_lora_rank}", f"build with --max_lora_rank {top} or more")]
    return [Finding("lora_rank", "ok", f"adapter rank {top} <= max_lora_rank {cfg.max_lora_rank}")]


def check_engine(cfg: TritonDeploy, built: bool = False) -> list[Finding]:
    """The engine folder exists, holds config.json and rank<i>.engine for each GPU, and was built as planned."""
    if cfg.build_engine and not built:
        return [Finding("engine", "skipped", f"{cfg.path('engine')} is built by trtllm-build; run mode checks it right after the build")]
    eng = Path(cfg.path("engine"))
    missing = [f for f in ["config.json"] + [f"rank{i}.engine" for i in range(cfg.tp_size)] if not (eng / f).is_file()]
    if missing:
        return [Finding("engine", "error", f"engine folder {eng} " + ("does not exist" if not eng.is_dir() else f"lacks {missing}") + " — Triton then fails to start with a log that does not name the folder",
                        "build the engine into <work_dir>/engine (build_engine=True) or point work_dir at the folder that holds it")]
    c = json.loads((eng / "config.json").read_text())
    pre, bld = c.get("pretrained_config", {}), c.get("build_config", {})
    lora = bld.get("lora_config") or {}
    got = {"dtype": pre.get("dtype"), "logits_dtype": pre.get("logits_dtype"), "tp_size": (pre.get("mapping") or {}).get("tp_size"), "max_batch_size": bld.get("max_batch_size"),
           "max_lora_rank": lora.get("max_lora_rank") if cfg.lora_dirs else None, "lora_target_modules": sorted(lora.get("lora_target_modules") or []) if cfg.lora_dirs else None}
    want = {"dtype": cfg.ckpt_dtype, "logits_dtype": _logits_dtype(cfg.logits_datatype), "tp_size": cfg.tp_size, "max_batch_size": cfg.max_batch_size,
            "max_lora_rank": cfg.max_lora_rank if cfg.lora_dirs else None, "lora_target_modules": sorted(cfg.trtllm_lora_modules) if cfg.lora_dirs else None}
    diff = [f"{k} {got[k]!r} (planned {want[k]!r})" for k in want if got[k] != want[k]]
    if diff:
        return [Finding("engine", "error", f"engine in {eng} was built differently: " + ", ".join(diff), "rebuild the engine with this plan's parameters (build_engine=True)")]
    return [Finding("engine", "ok", f"{eng}: config.json and {cfg.tp_size} rank engine(s), built as planned")]


def check_template(cfg: TritonDeploy, paths: bool = False) -> list[Finding]:
    """Every key we fill is still a ${placeholder} in the skeleton (and in the repository when it is reused)."""
    dirs = [Path(cfg.backend_root) / "all_models" / "inflight_batcher_llm"] + ([] if cfg.fresh_copy else [Path(cfg.path("model_repo"))])
    out = []
    for d in dirs:
        if not d.is_dir():
            if paths or not cfg.fresh_copy:
                out.append(Finding("template", "error", f"{d} does not exist", "run inside the Triton TensorRT-LLM container, or set backend_root / work_dir"))
            continue
        filled = {m: [k for k in keys if f"${{{k}}}" not in (d / m / "config.pbtxt").read_text()] for m, keys in fill_values(cfg).items() if (d / m / "config.pbtxt").is_file()}
        absent = [m for m in SKELETON if not (d / m / "config.pbtxt").is_file()]
        bad = {m: ks for m, ks in filled.items() if ks}
        if bad or absent:
            out.append(Finding("template", "error", f"{d}: " + "; ".join(f"{m}/config.pbtxt has no ${{{', '.join(ks)}}}" for m, ks in bad.items()) + (f"; missing {absent}" if absent else "")
                               + " — already filled: fill_template.py does not overwrite, so the old values would stay",
                               "start from a fresh copy of all_models/inflight_batcher_llm (fresh_copy=True); if the skeleton itself was filled in place, restore it from the container image"))
    if out:
        return out
    if not any(d.is_dir() for d in dirs):
        return [Finding("template", "skipped", f"{dirs[0]} is inside the container; the plan copies it fresh before filling")]
    return [Finding("template", "ok", "every key to fill is still a placeholder" + ("; the plan copies the skeleton fresh" if cfg.fresh_copy else ""))]


def check_batch_sizes(cfg: TritonDeploy) -> list[Finding]:
    out = []
    if cfg.default_max_batch < cfg.max_batch_size:
        out.append(Finding("batch_sizes", "error", f"tritonserver's default-max-batch-size {cfg.default_max_batch} is below the engine's max_batch_size {cfg.max_batch_size} (the article's log showed the default 4; benchmarks were steadier once it was raised)",
                           f"leave backend_default_max_batch_size=0: the plan then starts tritonserver with --backend-config=tensorrtllm,default-max-batch-size={cfg.max_batch_size}"))
    if cfg.triton_max_batch_size != cfg.max_batch_size:
        out.append(Finding("batch_sizes", "warning", f"Triton max_batch_size {cfg.triton_max_batch_size} differs from the engine's {cfg.max_batch_size}", "use the same value in both"))
    queue = f"; concurrency above {cfg.max_batch_size} queues (the article: latency grows linearly past it)" if max(cfg.concurrencies) > cfg.max_batch_size else ""
    return out or [Finding("batch_sizes", "ok", f"engine, Triton and backend default batch sizes are {cfg.max_batch_size}{queue}")]


def check_streaming(cfg: TritonDeploy) -> list[Finding]:
    if cfg.streaming and not cfg.decoupled:
        return [Finding("streaming", "error", "streaming responses need decoupled mode, which is off", "set decoupled=True (decoupled_mode:true in tensorrt_llm and tensorrt_llm_bls)")]
    return [Finding("streaming", "ok", f"streaming {cfg.streaming}, decoupled {cfg.decoupled}")]


def check_model(cfg) -> list[Finding]:
    """Converter (old workflow), tensor parallelism and lengths against the config and the workload."""
    c, out = cfg.config, []
    if isinstance(cfg, TritonDeploy) and c.get("model_type") not in CONVERTERS:
        out.append(Finding("model", "error", f"no checkpoint converter known for model_type {c.get('model_type')!r} (this plan knows {sorted(CONVERTERS)})", "serve this model with the new workflow (notebooks/trtllm_serve.ipynb)"))
    heads, kv = c["num_attention_heads"], c.get("num_key_value_heads") or c["num_attention_heads"]
    if heads % cfg.tp_size or kv % cfg.tp_size:
        out.append(Finding("model", "error", f"tp_size {cfg.tp_size} does not divide {heads} attention / {kv} KV heads", "choose a tp_size that divides both"))
    if isinstance(cfg, TritonDeploy):
        if len(cfg.gpu_ids) != cfg.tp_size:
            out.append(Finding("model", "error", f"{len(cfg.gpu_ids)} gpu_ids for tp_size {cfg.tp_size}", "give one GPU id per TP rank"))
        lens = [(cfg.max_input_len < cfg.max_seq_len, f"max_input_len {cfg.max_input_len} must be below max_seq_len {cfg.max_seq_len}"),
                (cfg.input_len <= cfg.max_input_len, f"benchmark input {cfg.input_len} exceeds max_input_len {cfg.max_input_len}"),
                (cfg.input_len + cfg.output_len <= cfg.max_seq_len, f"benchmark input + output {cfg.input_len + cfg.output_len} exceeds max_seq_len {cfg.max_seq_len}")]
        seq = cfg.max_seq_len
    else:
        n_experts, field = experts(c)
        if cfg.ep_size and (not n_experts or n_experts % cfg.ep_size):
            out.append(Finding("model", "error", f"ep_size {cfg.ep_size} needs a MoE model whose expert count it divides" + (f" ({field} {n_experts})" if n_experts else ""),
                               "drop ep_size for dense models"))
        lens, seq = [], cfg.seq_len
    if seq > c.get("max_position_embeddings", seq):
        lens.append((False, f"max_seq_len {seq} exceeds the model's max_position_embeddings {c['max_position_embeddings']}"))
    out += [Finding("model", "error", msg, "fix the lengths") for ok, msg in lens if not ok]
    return out or [Finding("model", "ok", f"{c.get('model_type')}: tp {cfg.tp_size}, lengths fit")]


# TensorRT-LLM's documentation of max_num_tokens and chunked context ("Paged Attention, IFB, and Request Scheduling"):
# max_num_tokens caps the batched input tokens of one scheduler iteration (a request in its generation phase adds one
# token, a request in its context phase its prompt, or one chunk of it with chunked context); without chunked context
# it must be at least the longest prompt to be served, with it that constraint goes. The LLM API's
# enable_chunked_prefill defaults to False (tensorrt_llm/llmapi/llm_args.py).
MAX_NUM_TOKENS_DOC = "https://nvidia.github.io/TensorRT-LLM/features/paged-attention-ifb-scheduler.html"


def check_workload(cfg: ServeDeploy) -> list[Finding]:
    """The server's limits against the workload. ``max_num_tokens`` is a per-iteration token budget of the scheduler
    (:data:`MAX_NUM_TOKENS_DOC`): an error only where one request's prompt cannot be scheduled at all (chunked prefill
    off and the budget below the longest prompt), a note where a full wave of prompts is spread over several
    iterations, a warning where a full batch's decode tokens do not fit in one."""
    longest, out = cfg.input_len + cfg.prompt_overhead, []
    if cfg.batch < max(cfg.concurrencies):
        out.append(Finding("workload", "error", f"max_batch_size {cfg.batch} < largest concurrency {max(cfg.concurrencies)}", "leave max_batch_size=0 (= largest concurrency)"))
    if cfg.seq_len < cfg.input_len + cfg.output_len:
        out.append(Finding("workload", "error", f"max_seq_len {cfg.seq_len} < input + output {cfg.input_len + cfg.output_len}", "leave max_seq_len=0"))
    elif cfg.seq_len < cfg.input_len + cfg.output_len + cfg.prompt_overhead:
        out.append(Finding("workload", "warning", f"max_seq_len {cfg.seq_len} leaves less than {cfg.prompt_overhead} tokens for the chat template", "leave max_seq_len=0"))
    if cfg.num_tokens < longest and not cfg.enable_chunked_prefill:
        out.append(Finding("workload", "error", f"max_num_tokens {cfg.num_tokens:,} < the longest prompt, input + chat template = {longest:,}, with chunked prefill off: "
                           f"the scheduler can never fit that prompt's context phase into one iteration ({MAX_NUM_TOKENS_DOC})",
                           f"raise max_num_tokens to {longest:,} or more (0 = max_batch_size x max_seq_len), or set enable_chunked_prefill=True"))
    elif cfg.num_tokens < cfg.batch:
        out.append(Finding("workload", "warning", f"max_num_tokens {cfg.num_tokens:,} < max_batch_size {cfg.batch}: a full batch's decode steps (one token per request) "
                           f"do not fit into one iteration ({MAX_NUM_TOKENS_DOC})", f"raise max_num_tokens to {cfg.batch} or more"))
    elif cfg.num_tokens < cfg.batch * longest:
        waves = -(-cfg.batch * longest // cfg.num_tokens)
        out.append(Finding("workload", "note", f"max_num_tokens {cfg.num_tokens:,} is a per-iteration budget: {cfg.batch} prompts of {longest:,} tokens arriving together "
                           f"({cfg.batch * longest:,} tokens) are prefilled over at least {waves} iterations instead of one, so the later ones wait longer for their "
                           f"first token. Not an error ({MAX_NUM_TOKENS_DOC}); the article measured about half the throughput with limits not sized for its "
                           "workload (§7.2) without saying which limit mattered", "none needed; to prefill a full wave at once, leave max_num_tokens=0 (= max_batch_size x max_seq_len)"))
    if cfg.graph_batch < cfg.batch:
        out.append(Finding("workload", "warning", f"CUDA graphs cover batches up to {cfg.graph_batch} of {cfg.batch}", "leave cuda_graph_max_batch_size=0"))
    if cfg.is_moe and not cfg.moe_backend:
        out.append(Finding("workload", "warning", "MoE model without moe_config.backend: the article measured about half the tokens/s without backend TRITON", "set moe_backend='TRITON'"))
    if cfg.is_moe and cfg.moe_backend.upper() == "TRITON" and cfg.config.get("model_type") not in TRITON_MOE_MODEL_TYPES:
        out.append(Finding("workload", "warning", f"moe_config.backend TRITON is documented for gpt-oss only (TensorRT-LLM examples/models/core/gpt_oss/README.md: Hopper, mxfp4 experts); "
                           f"this plan has not checked it for model_type {cfg.config.get('model_type')!r}", "set moe_backend='' (TensorRT-LLM's default) or 'CUTLASS'"))
    return out or [Finding("workload", "ok", f"max_batch_size {cfg.batch} holds concurrency {max(cfg.concurrencies)}; max_seq_len {cfg.seq_len:,} holds input + output + "
                           f"template {cfg.input_len + cfg.output_len + cfg.prompt_overhead:,}; max_num_tokens {cfg.num_tokens:,} prefills {cfg.batch} prompts of "
                           f"{cfg.input_len + cfg.prompt_overhead:,} tokens in one iteration")]


def check_paths(cfg) -> list[Finding]:
    """Run mode only: the files the plan reads exist inside the container."""
    need = [Path(cfg.weights) / "config.json"]
    if isinstance(cfg, TritonDeploy):
        app = Path(cfg.backend_root)
        need += [Path(cfg.tokenizer), app / "tools/fill_template.py", app / "scripts/launch_triton_server.py"] + [Path(d) / "adapter_config.json" for d in cfg.lora_dirs]
        need += [app / "examples/hf_lora_convert.py"] if cfg.lora_dirs else []
    missing = [str(p) for p in need if not p.exists()]
    if missing:
        return [Finding("paths", "error", f"missing: {missing}", "mount the model / adapters at these paths, or set model_dir, lora_dirs, backend_root")]
    return [Finding("paths", "ok", "model, tokenizer, adapters and backend scripts found")]


TRITON_CHECKS = ("model", "dtypes", "lora_modules", "lora_rank", "engine", "template", "batch_sizes", "streaming")
SERVE_CHECKS = ("model", "workload")


def preflight(cfg, paths: bool = False) -> list[Finding]:
    """All checks of a workflow; ``paths`` (run mode) also requires the container's files to exist."""
    if isinstance(cfg, TritonDeploy):
        out = check_model(cfg) + check_dtypes(cfg) + check_lora_modules(cfg) + check_lora_rank(cfg) + check_engine(cfg) + check_template(cfg, paths) + check_batch_sizes(cfg) + check_streaming(cfg)
    else:
        out = check_model(cfg) + check_workload(cfg)
    return out + (check_paths(cfg) if paths else [])


def findings_table(findings: list[Finding]) -> pd.DataFrame:
    return pd.DataFrame([f.__dict__ for f in findings])


def raise_on_errors(findings: list[Finding]) -> None:
    errors = [f for f in findings if f.status == "error"]
    if errors:
        raise PreflightError("preflight failed:\n" + "\n".join(f"- [{f.check}] {f.message}\n  fix: {f.fix}" for f in errors))


def what_if(cfg, **change) -> pd.DataFrame:
    """The preflight's errors and warnings for ``cfg`` with some parameters changed (e.g. limits below the workload)."""
    from dataclasses import replace

    return findings_table([f for f in preflight(replace(cfg, **change)) if f.status != "ok"])
