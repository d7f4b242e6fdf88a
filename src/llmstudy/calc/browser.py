"""The browser calculators' entry point: JSON in, JSON out, over the same functions the CLI calls.

The "plan your run" page loads Pyodide, unpacks ``llmstudy-calc.zip`` (this package, :mod:`llmstudy.core.arch`,
:mod:`llmstudy.core.paths` and the shipped model configs, built by :mod:`llmstudy.calc.bundle`) and calls
:func:`init`, then :func:`memory` or :func:`capacity` with the form's values as a JSON string. Each returns a JSON
string: the numbers, or ``{"error": "llmstudy: error: ..."}``, the line the CLI prints for the same input.
A pasted or uploaded config is written by :func:`add_config` into the virtual file system and used by its path,
exactly as ``llmstudy memory --model path/to/config.json`` would.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from pathlib import Path

from llmstudy.calc import kv as K
from llmstudy.calc import memory as MM
from llmstudy.calc import models as M
from llmstudy.calc import tensors as T

GiB = 2**30
_MEASURED: dict = {"memory": [], "capacity": []}


def _error(e: Exception) -> str:
    return json.dumps({"error": f"llmstudy: error: {e}"})


def _finite(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def init(root: str, measured_json: str = "") -> str:
    """Point the library at ``root`` (holding ``data/models``), load the measured cases; return the choices."""
    os.environ["LLMSTUDY_ROOT"] = root
    global _MEASURED
    if measured_json:
        _MEASURED = json.loads(measured_json)
    models = []
    for name in M.available_models():
        try:
            a = M.describe(name)
            ok = T.supported(M.raw_config(name))
            models.append({"name": name, "title": M.title(name), "families": "/".join(a.families), "listed": ok})
        except Exception as e:  # a shipped config the page cannot use: say why in the list
            models.append({"name": name, "title": name, "families": "", "listed": False, "error": str(e)})
    return json.dumps({
        "models": models,
        "methods": list(MM.METHODS), "optimizers": MM.OPTIMIZERS, "dtypes": list(MM.DTYPE_BYTES),
        "gpus": {k: {"name": g.name, "total_bytes": g.total_bytes} for k, g in K.GPUS.items()},
        "versions": {v: {"default_utilization": r.default_utilization} for v, r in K.VERSIONS.items()},
        "weights": K.WEIGHT_FORMATS, "kv_dtypes": list(K.KV_DTYPES), "deployment_defaults": {
            k: v for k, v in K.DEPLOYMENT_DEFAULTS.items() if isinstance(v, (int, float, str, bool, type(None)))},
        "measured": {k: len(v) for k, v in _MEASURED.items()},
    })


def add_config(text: str, filename: str = "config.json") -> str:
    """Write a pasted or uploaded config where the library reads it; return ``{"model": path}`` or the CLI's error.

    The folder is named by the content's hash, so an edited config is a new model (the library caches by path).
    """
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    name = Path(filename or "config.json").name or "config.json"
    folder = Path(os.environ.get("LLMSTUDY_ROOT", "/calc")) / "upload" / digest
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    try:
        M.config_path(str(path))
        M.tensors(str(path))
    except (ValueError, T.NotModelledFamily) as e:
        return json.dumps({"model": str(path), "error": f"llmstudy: error: {e}"})
    return json.dumps({"model": str(path), "title": M.title(str(path)), "families": "/".join(M.describe(str(path)).families)})


# --- memory ---------------------------------------------------------------------------------------------------

def _memory_measured(setup: MM.Setup, peak_gib: float | None) -> list[dict]:
    """The run records of this exact setup (model, method, optimizer, dtype, tokens, checkpointing, rank; the default
    LoRA targets, which every record used), with the error of the prediction as ``training.memory.compare`` computes it."""
    if setup.lora_targets is not None:
        return []
    out = []
    for m in _MEASURED.get("memory", []):
        same = all(m[k] == getattr(setup, k) for k in ("model", "method", "optimizer", "weight_dtype", "seq_len", "micro_batch",
                                                          "grad_ckpt"))
        if same and (setup.method == "full" or m["lora_r"] == setup.lora_r):
            meas = m["peak_allocated_GiB"]
            err = 100 * (peak_gib - meas) / meas if peak_gib is not None and meas and m["outcome"] == "ok" else None
            out.append({**m, "predicted_peak_GiB": peak_gib, "error_pct": err})
    return out


def memory(params: str) -> str:
    """The memory model for one setup: ``{"model", "method", "optimizer", "weight_dtype", "seq_len", "micro_batch",
    "grad_ckpt", "lora_r", "lora_targets"}`` (``method`` may be a spec such as ``full:adamw_torch``)."""
    try:
        p = json.loads(params)
        targets = [t for t in (p.get("lora_targets") or []) if t]
        spec = str(p.get("method", "lora"))
        if p.get("weight_dtype") and spec.count(":") < 2:
            spec = f"{spec.split(':')[0]}:{spec.split(':')[1] if ':' in spec else ''}:{p['weight_dtype']}"
        s = MM.parse_method(spec, p["model"], p["seq_len"], p["micro_batch"], bool(p.get("grad_ckpt", True)),
                            p.get("optimizer", "paged_adamw_8bit"), p.get("lora_r", 4), tuple(targets) or None)
        rows = MM.predict_rows(s)
        sm = MM.summarize(s)
        t = s.targets() if s.method != "full" else None
    except (ValueError, KeyError, TypeError, T.NotModelledFamily) as e:
        return _error(e)
    peak = sm["peak_bytes"]
    peak_gib = None if peak != peak else peak / GiB
    lora = None
    if t is not None:
        n = sum(r["numel"] for r in M.lora_tensor_rows(M.table_rows(s.model), s.lora_r, t))
        lora = {"trainable": n, "total": sm["params"] + n, "modules": list(t.modules), "parameters": list(t.parameters),
                "not_adapted": list(t.not_adapted)}
    longest = MM.longest_seq_lens(s, [g.total_bytes for g in K.GPUS.values()])
    cap = MM.seq_len_cap(s)
    gpus = {k: {"name": g.name, "total_bytes": g.total_bytes, "fits": None if peak != peak else peak <= g.total_bytes,
                "longest_seq_len": n, "capped": n == cap} for (k, g), n in zip(K.GPUS.items(), longest)}
    return json.dumps({
        "label": s.label(), "model": s.model, "title": M.title(s.model),
        "components": {c: _finite(sm[f"{c}_bytes"]) for c in MM.MEMORY_COMPONENTS},
        "paged_bytes": sm["paged_bytes"], "peak_bytes": _finite(peak), "peak_phase": sm["peak_phase"],
        "not_modelled": sm["not_modelled"], "approximations": sm["approximations"], "params": sm["params"],
        "rows": [{**r, "bytes": _finite(r["bytes"])} for r in rows], "lora": lora, "gpus": gpus,
        "measured": _memory_measured(s, peak_gib),
    })


# --- capacity -------------------------------------------------------------------------------------------------

DEPLOYMENT_KEYS = ("model", "gpu", "num_gpus", "tp", "pp", "weights", "kv_dtype", "gpu_memory_utilization",
                   "max_num_batched_tokens", "max_num_seqs", "max_model_len", "vllm_version", "hybrid_kv", "enforce_eager",
                   "text_only")


def deployment_key(dep: K.Deployment) -> dict:
    """The settings that identify a deployment (the measured cases are matched on these)."""
    d = {f.name: getattr(dep, f.name) for f in dataclasses.fields(dep) if f.init}
    d["max_model_len"] = dep.model_len
    d["max_num_batched_tokens"] = dep.batched_tokens
    d["max_num_seqs"] = dep.num_seqs
    d["hybrid_kv"] = dep.hybrid
    return d


def _capacity_measured(dep: K.Deployment, p: K.Plan) -> list[dict]:
    key = deployment_key(dep)
    out = []
    for m in _MEASURED.get("capacity", []):
        if m["key"] == key:
            meas = m.get("kv_cache_tokens")
            err = 100 * (p.kv_cache_tokens - meas) / meas if m["outcome"] == "ok" and meas else None
            out.append({**{k: v for k, v in m.items() if k != "key"}, "predicted_kv_cache_tokens": p.kv_cache_tokens,
                        "error_pct": err})
    return out


def capacity(params: str) -> str:
    """The KV planner for one deployment (the :class:`llmstudy.calc.kv.Deployment` fields the form sets)."""
    try:
        p = json.loads(params)
        kw = {k: p[k] for k in DEPLOYMENT_KEYS if k in p and p[k] not in (None, "")}
        dep = K.Deployment(**kw)
        plan = K.plan(dep)
    except (ValueError, KeyError, TypeError, T.NotModelledFamily) as e:
        return _error(e)
    r = plan.row()
    return json.dumps({
        "label": dep.label(), "outcome": plan.outcome, "message": plan.message, "lines": K.plan_lines(plan),
        "total_bytes": plan.total_bytes, "budget_bytes": plan.budget_bytes, "weights_bytes": plan.weights_bytes,
        "activation_peak_bytes": plan.activation_peak_bytes, "non_torch_bytes": plan.non_torch_bytes,
        "cudagraph_bytes": plan.cudagraph_bytes, "available_kv_bytes": plan.available_kv_bytes,
        "kv_cache_tokens": plan.kv_cache_tokens, "max_concurrency": plan.max_concurrency, "max_model_len": plan.max_model_len,
        "max_model_len_that_starts": plan.max_model_len_that_starts, "num_blocks": plan.num_blocks,
        "kv_bytes_per_token_layer": K.kv_bytes_per_token_layer(dep), "kv_layout": K.kv_layout(dep),
        "model_runner": K.model_runner(dep), "sources": plan.sources, "notes": list(plan.notes),
        "gpu_memory_utilization": dep.gpu_memory_utilization, "tp": dep.tp, "row_label": r["label"],
        "measured": _capacity_measured(dep, plan),
    })


def measured_cases() -> str:
    """The measured cases the page can load into the forms (one line each)."""
    return json.dumps(_MEASURED)
