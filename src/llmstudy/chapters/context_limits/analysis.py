"""Analysis of the context_limits records: planner vs vLLM's logged numbers, published cells vs runs, findings."""

from __future__ import annotations

import math

import pandas as pd

from llmstudy.chapters.context_limits.published import (
    ARTICLE_TABLE,
    BLOG_TABLE,
    DECOMPOSITION,
    PRECISION_LABEL,
    SCOUT,
    hardware_label,
)
from llmstudy.chapters.context_limits.run import GPU_CONFIGS
from llmstudy.serving.kv_planner import GPUS, VERSIONS, Deployment, GiB, MiB, is_h100_emulation, plan, tokens_for_available

# --- Analysis of the records ----------------------------------------------------------------------------------------

def measured_inputs(row) -> dict:
    """The running-system inputs a record measured (bytes), for a plan that uses them instead of the estimates."""
    def b(key):
        v = row.get(key)
        return int(round(float(v) * GiB)) if v is not None and pd.notna(v) else None

    return {"weights_bytes": b("profile_weights_gib") or b("weights_gib"), "activation_peak_bytes": b("torch_peak_increase_gib"),
            "non_torch_bytes": b("non_torch_increase_gib"), "cudagraph_bytes": b("cudagraph_estimate_gib")}


def exact_available(row) -> int | None:
    """Available KV bytes from the exact ``--kv-cache-memory=`` figure (eager runs: + 150 MiB redundancy buffer)."""
    v = row.get("kv_memory_to_requested_bytes")
    if v is None or pd.isna(v) or not bool(row.get("enforce_eager")):
        return None
    return int(v) + 150 * MiB


def row_deployment(row: dict) -> Deployment | None:
    """The planner's deployment for a recorded row: its configuration's (``run.GPU_CONFIGS``), else rebuilt from the
    row's own columns (a record whose configuration is no longer defined). None when the row names no model."""
    cfg = GPU_CONFIGS.get(row.get("config"))
    if cfg is not None:
        return cfg.deployment(int(row["num_gpus"]))
    if not isinstance(row.get("model"), str):
        return None

    def given(key):
        v = row.get(key)
        return None if v is None or (isinstance(v, float) and math.isnan(v)) else v

    version = str(given("vllm_version") or "0.25.0")
    hybrid = given("hybrid_kv")
    return Deployment(model=row["model"], gpu="h200", num_gpus=int(row["num_gpus"]), weights=str(given("weights") or "bf16"),
                      kv_dtype=str(given("kv_dtype") or "auto"), gpu_memory_utilization=float(row["gpu_memory_utilization"]),
                      max_model_len=int(row["max_model_len"]), vllm_version=version if version in VERSIONS else "0.25.0",
                      hybrid_kv=None if hybrid is None else bool(hybrid), enforce_eager=bool(given("enforce_eager")), text_only=True)


def compare_runs(results: pd.DataFrame) -> pd.DataFrame:
    """Each recorded configuration: logged figures, the planner's prediction (estimates), and the token formula alone.

    A row the planner refuses (an architecture it does not model) keeps its logged figures, ``pred_outcome`` "not
    modelled" and the planner's message in ``pred_message``; it has no prediction and no error.
    """
    out = []
    for _, r in results.iterrows():
        row = r.to_dict()
        try:
            dep = row_deployment(row)
            if dep is None:
                continue
            p = plan(dep)
        except ValueError as e:
            row.update(pred_outcome="not modelled", pred_message=str(e), pred_kv_cache_tokens=None, pred_available_kv_gib=None,
                       pred_weights_gib=None, error_pct=None, measured_inputs_kv_cache_tokens=None, measured_inputs_error_pct=None,
                       formula_kv_cache_tokens=None, weights_error_pct=None, outcome_agrees=None)
            out.append(row)
            continue
        row["pred_message"] = p.message
        row["pred_outcome"], row["pred_kv_cache_tokens"] = p.outcome, p.kv_cache_tokens
        row["pred_available_kv_gib"], row["pred_weights_gib"] = p.available_kv_bytes / GiB, p.weights_bytes / GiB
        ok = row["outcome"] == "ok" and pd.notna(row.get("kv_cache_tokens")) and row["kv_cache_tokens"] > 0
        row["error_pct"] = 100 * (p.kv_cache_tokens - row["kv_cache_tokens"]) / row["kv_cache_tokens"] if ok else None
        meas = measured_inputs(row)
        pm = plan(dep.replace(**{k: v for k, v in meas.items() if v is not None}))
        row["measured_inputs_kv_cache_tokens"] = pm.kv_cache_tokens
        row["measured_inputs_error_pct"] = 100 * (pm.kv_cache_tokens - row["kv_cache_tokens"]) / row["kv_cache_tokens"] if ok else None
        avail = exact_available(row)
        row["formula_kv_cache_tokens"] = tokens_for_available(dep, avail) if ok and avail else None
        row["weights_error_pct"] = 100 * (p.weights_bytes / GiB - row["weights_gib"]) / row["weights_gib"] if pd.notna(row.get("weights_gib")) else None
        row["outcome_agrees"] = (row["outcome"] == "ok") == (p.outcome == "ok") if row["outcome"] in ("ok", "oom", "refused") else None
        out.append(row)
    return pd.DataFrame(out)


def without_superseded_skips(cmp: pd.DataFrame) -> pd.DataFrame:
    """Drop ``skipped`` rows (a call ran out of time before starting that server) whose configuration another record
    measured; a configuration that was only ever skipped stays, as the gap it is."""
    if not len(cmp):
        return cmp
    tried = set(cmp.loc[cmp.outcome != "skipped", "config"])
    return cmp[~((cmp.outcome == "skipped") & cmp.config.isin(tried))].reset_index(drop=True)


FINDINGS = ("scout_bf16_h100", "maverick_fp8_h100", "hybrid", "kv_fp8", "graphs", "tp8_h100", "tp8_h200", "tp_scaling")


def published_vs_measured(cmp: pd.DataFrame) -> pd.DataFrame:
    """The article's and the blog's cells next to the measured configuration that tests each (``compare_runs`` rows).

    A cell is tested by a record of the same model, weight format, number of GPUs and memory budget (H100 cells: the
    emulated H100 budget) with the default KV dtype. Verdict: *reproduced* (a published length starts at that length or
    longer; a published OOM runs out of memory), *differs* (a published OOM starts; a published length fails to start
    at or below it), *shorter length tested*, or *not measured*.
    """
    cells = [("article", label, model, weights, "h100-80gb", n, rec) for label, model, weights, n, rec, _ in ARTICLE_TABLE]
    cells += [("blog", label, model, weights, gpu, n, pub) for label, model, weights, gpu, n, pub in BLOG_TABLE]
    tried = cmp[cmp.outcome.isin(["ok", "oom", "refused"]) & (cmp.kv_dtype == "auto")] if len(cmp) else cmp
    rows = []
    for source, label, model, weights, gpu, n, published in cells:
        budget = "h100" if gpu == "h100-80gb" else "h200"
        m = tried[(tried.model == model) & (tried.weights == weights) & (tried.num_gpus == n) & (tried.budget == budget)] if len(tried) else tried
        row = {"source": source, "model": label, "precision": PRECISION_LABEL[weights], "hardware": hardware_label(n, gpu),
               "published max_model_len": "OOM" if published is None else f"{published:,}", "record": None, "measured": None,
               "tested max_model_len": None, "logged KV tokens": None, "planner (0.25.0) tokens": None, "verdict": "not measured"}
        if len(m):
            started = m[(m.outcome == "ok") & (m.max_model_len >= (published or 0))]
            r = (started if len(started) else m).sort_values("max_model_len").iloc[-1]
            ok = r.outcome == "ok"
            if published is None:
                verdict = "differs" if ok else "reproduced"
            elif ok:
                verdict = "reproduced" if r.max_model_len >= published else "shorter length tested"
            else:
                verdict = "differs" if r.max_model_len <= published else "shorter length tested"
            row.update({"record": f"{r.run_id}/{r.config}", "measured": "starts" if ok else r.outcome.upper(), "tested max_model_len": int(r.max_model_len),
                        "logged KV tokens": int(r.kv_cache_tokens) if ok else None,
                        "planner (0.25.0) tokens": int(r.pred_kv_cache_tokens) if ok else None, "verdict": verdict})
        rows.append(row)
    return pd.DataFrame(rows)


def measured_findings(cmp: pd.DataFrame) -> dict[str, str]:
    """Sentences for the chapter from the measured configurations (``compare_runs`` rows); a key is absent while the
    configurations it compares are not both recorded."""
    got = {r.config: r for r in cmp.itertuples() if r.outcome in ("ok", "oom", "refused")} if len(cmp) else {}
    out: dict[str, str] = {}

    def both_ok(a: str, b: str):
        x, y = got.get(a), got.get(b)
        return (x, y) if x is not None and y is not None and x.outcome == y.outcome == "ok" else None

    h100_budget_gib = 0.9 * GPUS["h100-80gb"].total_bytes / GiB  # what the emulated-H100 utilization requests
    s = got.get("scout-bf16-h100")
    if s is not None:
        if s.outcome == "ok":
            out["scout_bf16_h100"] = (
                f"On the H100 budget ({h100_budget_gib:.2f} GiB per GPU) vLLM 0.25.0 starts Scout BF16 at TP=4, the configuration the "
                f"article reported as OOM under 0.8.3: {s.available_kv_gib:.2f} GiB per GPU are left for the KV cache and the "
                f"server logs {int(s.kv_cache_tokens):,} tokens at max_model_len {int(s.max_model_len):,} (planner: "
                f"{int(s.pred_kv_cache_tokens):,}). That run is eager; with CUDA graphs 0.25.0 also subtracts its graph estimate.")
        else:
            out["scout_bf16_h100"] = f"On the H100 budget Scout BF16 at TP=4 does not start under vLLM 0.25.0 either ({s.outcome})."
    m = got.get("maverick-fp8-h100")
    if m is not None:
        verdict = "runs out of memory, as the article and the planner say" if m.outcome == "oom" else f"ends {m.outcome}"
        out["maverick_fp8_h100"] = (
            f"Maverick FP8 on the H100 budget {verdict}: its weights take {m.weights_gib:.2f} GiB per GPU (planner "
            f"{m.pred_weights_gib:.2f}) of a {h100_budget_gib:.2f} GiB budget.")
    if pair := both_ok("scout-fp8-h100-hybrid-off", "scout-fp8-h100-long"):
        off, on = pair
        out["hybrid"] = (
            f"Measured on the same hardware (Scout FP8, H100 budget, {off.available_kv_gib:.2f} and {on.available_kv_gib:.2f} GiB "
            f"of KV memory per GPU): with the hybrid manager off, {off.max_concurrency:.2f} requests of {int(off.max_concurrency_len):,} "
            f"tokens fit ({int(off.kv_cache_tokens):,} logged); with it on, {on.max_concurrency:.2f} requests of "
            f"{int(on.max_concurrency_len):,} tokens ({int(on.kv_cache_tokens):,} logged), {on.kv_cache_tokens / off.kv_cache_tokens:.1f}× the "
            f"tokens in the same memory.")
    if pair := both_ok("scout-bf16-h200", "scout-bf16-h200-kvfp8"):
        b, f8 = pair
        out["kv_fp8"] = (
            f"An fp8 KV cache on the same budget ({f8.available_kv_gib:.2f} against {b.available_kv_gib:.2f} GiB) logs "
            f"{int(f8.kv_cache_tokens):,} tokens against {int(b.kv_cache_tokens):,}: {f8.kv_cache_tokens / b.kv_cache_tokens:.2f}×, "
            f"the blog's \"potentially doubles\".")
    if pair := both_ok("scout-fp8-h200", "scout-fp8-h200-graphs"):
        e, g = pair
        out["graphs"] = (
            f"CUDA graphs (vLLM's default; the other runs are eager) cost {e.available_kv_gib - g.available_kv_gib:.2f} GiB of KV "
            f"memory per GPU: 0.25.0 subtracts its estimate of {g.cudagraph_estimate_gib:.2f} GiB before sizing the cache, and the "
            f"logged figure drops from {int(e.kv_cache_tokens):,} to {int(g.kv_cache_tokens):,} tokens "
            f"({100 * (g.kv_cache_tokens / e.kv_cache_tokens - 1):+.1f}%). The capture took {g.graph_capture_s:.0f} s.")

    def label(r) -> str:
        return f"{'Scout' if r.model == SCOUT else 'Maverick'} {PRECISION_LABEL[r.weights]}"

    def started(name: str, why: str) -> str | None:
        r = got.get(name)
        if r is None or r.outcome != "ok":
            return None
        return f"{label(r)} at max_model_len {int(r.max_model_len):,} ({why}; {int(r.kv_cache_tokens):,} tokens logged, planner {int(r.pred_kv_cache_tokens):,})"

    def oom(name: str, budget_gib: float, why: str) -> str | None:
        r = got.get(name)
        if r is None:
            return None
        if r.outcome != "oom":
            return f"{label(r)} ends {r.outcome}, where {why} reported OOM"
        return f"{label(r)} runs out of memory, as {why} found: its weights take {r.weights_gib:.2f} GiB per GPU of a {budget_gib:.2f} GiB budget"

    h200_budget_gib = 0.9 * GPUS["h200"].total_bytes / GiB
    parts = [x for x in (started("tp8-scout-bf16-h100-1200k", "the article's recommendation"),
                         started("tp8-scout-fp8-h100-1500k", "the article's recommendation"),
                         started("tp8-maverick-fp8-h100-430k", "the blog's length, above the article's 300,000")) if x]
    no = oom("tp8-maverick-bf16-h100", h100_budget_gib, "the article")
    if parts or no:
        out["tp8_h100"] = (f"On the H100 budget at TP=8, vLLM 0.25.0 starts {'; '.join(parts)}." if parts else "") + (f" {no}." if no else "")
    parts = [x for x in (started("tp8-scout-bf16-h200-3600k", "the blog's length"), started("tp8-scout-fp8-h200-3600k", "the blog's Scout length"),
                         started("tp8-maverick-fp8-h200-1000k", "the blog's length, about the model's maximum")) if x]
    mb = got.get("tp8-maverick-bf16-h200-1000k")
    if mb is not None:
        parts.append(f"Maverick BF16, which neither source lists on H200, at max_model_len {int(mb.max_model_len):,} with "
                     f"{mb.available_kv_gib:.2f} GiB of KV memory per GPU after {mb.weights_gib:.2f} GiB of weights"
                     if mb.outcome == "ok" else f"not Maverick BF16 ({mb.outcome}; its weights take {mb.weights_gib:.2f} GiB of a {h200_budget_gib:.2f} GiB budget)")
    if parts:
        out["tp8_h200"] = f"On the H200 budget at TP=8 it starts {'; '.join(parts)}."
    scout_h100 = both_ok("scout-bf16-h100", "tp8-scout-bf16-h100-1200k")
    pairs = [p for p in (scout_h100, both_ok("scout-fp8-h200", "tp8-scout-fp8-h200-3600k"), both_ok("maverick-fp8-h200", "tp8-maverick-fp8-h200-1000k")) if p]
    if pairs:
        w = ", ".join(f"{label(a)} {a.weights_gib:.2f} → {b.weights_gib:.2f} GiB (×{b.weights_gib / a.weights_gib:.2f})" for a, b in pairs)
        out["tp_scaling"] = (f"From TP=4 to TP=8 the weights per GPU nearly halve: {w}. Replicated tensors (norms, routers, the "
                             f"rotary cache) keep the ratio above one half. Each GPU also holds one KV head of the eight instead of two, "
                             f"so a token costs half the KV bytes per GPU.")
        if scout_h100:
            s4, s8 = scout_h100
            out["tp_scaling"] += (f" On the H100 budget, Scout BF16 has {s4.available_kv_gib:.2f} GiB of KV memory per GPU at TP=4 and "
                                  f"{s8.available_kv_gib:.2f} GiB at TP=8.")
    return out



def record_decomposition(results: pd.DataFrame) -> pd.DataFrame:
    """Measured per-GPU memory split of recorded configurations (GiB, from vLLM's own log lines)."""
    rows = []
    for _, r in results.iterrows():
        if r.get("outcome") != "ok" or pd.isna(r.get("available_kv_gib")):
            continue
        total = r.get("init_total_gib") if pd.notna(r.get("init_total_gib")) else GPUS["h200"].total_bytes / GiB
        if is_h100_emulation(float(r["gpu_memory_utilization"])):
            total = GPUS["h100-80gb"].total_bytes / GiB  # the emulated GPU's frame
        budget = math.ceil(GPUS["h200"].total_bytes * float(r["gpu_memory_utilization"])) / GiB
        weights = r.get("profile_weights_gib") if pd.notna(r.get("profile_weights_gib")) else r.get("weights_gib")
        graphs = 0.0 if bool(r.get("enforce_eager")) or pd.isna(r.get("cudagraph_estimate_gib")) else float(r["cudagraph_estimate_gib"])
        parts = (weights, r.get("torch_peak_increase_gib"), r.get("non_torch_increase_gib"), graphs, r["available_kv_gib"], total - budget)
        for comp, v in zip(DECOMPOSITION, parts):
            rows.append({"config": f"{r['config']} (measured, {r['run_id']})", "component": comp, "GiB": float(v) if pd.notna(v) else 0.0})
    return pd.DataFrame(rows)


# --- Any model: the page's model, its records, and the other families -----------------------------------------------

def model_name(model: str) -> str:
    """The name a record's ``model`` column uses for a model: the folder of its config (``data/models/<name>``)."""
    from llmstudy.core import models as M

    return M.config_path(model).parent.name


def is_llama4(model: str) -> bool:
    """Whether a config is a Llama 4 model (the article's and the blog's tables are about Llama 4 alone)."""
    from llmstudy.core import models as M

    raw = M.raw_config(model)
    return raw.get("model_type") == "llama4" or any(a.startswith("Llama4") for a in raw.get("architectures") or ())


def is_v083(results: pd.DataFrame) -> pd.Series:
    """Rows measured with vLLM 0.8.3 (the article's version; issue 23's one-GPU term measurements)."""
    logged = results["vllm_version"].astype(str).eq("0.8.3") if "vllm_version" in results else pd.Series(False, index=results.index)
    # a configuration that never started logged no version: its definition says which vLLM it was for
    planned = results["config"].map(lambda c: getattr(GPU_CONFIGS.get(c), "vllm_version", None) == "0.8.3") if "config" in results else False
    return logged | planned


def llama4_rows(results: pd.DataFrame) -> pd.DataFrame:
    """The rows of the study's Llama 4 configurations (the article's models) served by vLLM 0.25; other families and
    the vLLM 0.8.3 term measurements (:func:`v083_table`) are compared apart."""
    if not len(results):
        return results
    llama = {m for m in results.model.dropna().unique() if _known_llama4(m)}
    return results[results.model.isin(llama) & ~is_v083(results)].reset_index(drop=True)


V083_TERMS = (  # (column of the table, the probe's term, a probe term subtracted from it or None, the planner's Plan attribute)
    ("weights", "weights_allocated", None, "weights_bytes"),
    ("buffers + activation peak", "profile_peak", "weights_allocated", "activation_peak_bytes"),  # the torch peak above the weights
    ("non-torch", "non_torch", None, "non_torch_bytes"),
    ("KV cache", "available", None, "available_kv_bytes"),
)


def _probe_gib(row: dict, key: str | None) -> float | None:
    """A record row's probe term in GiB (``probe_<key>``); None when not measured, 0 for no key."""
    x = row.get(f"probe_{key}") if key else 0
    return x / GiB if x is not None and pd.notna(x) else None


def v083_table(results: pd.DataFrame) -> pd.DataFrame:
    """vLLM 0.8.3's measured servers against the planner's 0.8.3 rules: logged KV tokens, and each memory term as the
    engine measured it (``probe_*`` columns, :mod:`llmstudy.serving.vllm_probe`) beside the planner's (GiB per GPU)."""
    rows = []
    v = without_superseded_skips(results[is_v083(results)]) if len(results) else results
    for _, r in v.iterrows():
        row = r.to_dict()
        dep = row_deployment(row)
        p = plan(dep) if dep is not None else None
        ok = row.get("outcome") == "ok" and pd.notna(row.get("kv_cache_tokens"))
        out = {"run_id": row.get("run_id"), "config": row["config"], "model": row["model"], "weights_format": row["weights"],
               "multimodal": not bool(row.get("text_only", True)), "enforce_eager": bool(row.get("enforce_eager")),
               "max_num_seqs": dep.num_seqs if dep else None, "outcome": row.get("outcome"),
               "logged KV tokens": int(row["kv_cache_tokens"]) if ok else None,
               "planned KV tokens": p.kv_cache_tokens if p else None}
        out["error %"] = 100 * (out["planned KV tokens"] - out["logged KV tokens"]) / out["logged KV tokens"] if ok and p else None
        for name, key, minus, attr in V083_TERMS:
            meas, sub = _probe_gib(row, key), _probe_gib(row, minus)
            out[f"{name}: measured GiB"] = meas - sub if meas is not None and sub is not None else None
            out[f"{name}: planner GiB"] = getattr(p, attr) / GiB if p else None
        for k in ("sampler_peak", "encoder_peak", "encoder_held", "forward_peak", "allocator_cached", "outside_torch", "graphs_used",
                  "warmup_used"):
            out[f"{k} GiB"] = _probe_gib(row, k)
        rows.append(out)
    return pd.DataFrame(rows)


def _known_llama4(model: str) -> bool:
    try:
        return is_llama4(model)
    except Exception:  # a record's model without a config here: not one of the article's models
        return False


def measure_command(model: str) -> tuple[str, str]:
    """The command that measures ``model`` on a GPU runner, and what must come first ("" if nothing).

    The command starts the experiment's configurations that serve the model (``llmstudy capacity --run``). A model
    without one needs a one-GPU configuration in ``run.GPU_CONFIGS`` first, like the other families' ``tp1-<name>``.
    """
    name = model_name(model)
    names = [c.name for c in GPU_CONFIGS.values() if c.model == name]
    if names:
        return f"llmstudy capacity --run {' '.join(names)}", ""
    return f"llmstudy capacity --run tp1-{name}", ""  # run.one_gpu_config: any model on one GPU


def weight_formats(model: str) -> tuple[str, ...]:
    """The weight formats the planner can load a config in: its checkpoint's (compressed-tensors FP8, MXFP4), else bf16
    and online FP8. Another checkpoint format (AWQ, GPTQ, ...) gives bf16, which the planner refuses naming the format."""
    from llmstudy.core import models as M

    raw = M.raw_config(model)
    q = raw.get("quantization_config") or (raw.get("text_config") or {}).get("quantization_config")
    if q:
        return {"compressed-tensors": ("fp8-checkpoint",), "mxfp4": ("mxfp4-checkpoint",)}.get(q.get("quant_method"), ("bf16",))
    return ("bf16", "fp8-online")


def model_plan(model: str, gpu: str, num_gpus: int, weights: str, kv_dtype: str, vllm_version: str, max_model_len: int | None):
    """The planner's plan for the page's model, or the planner's one-line refusal (a string). ``weights="auto"``: the
    checkpoint's own format (:func:`weight_formats`' first)."""
    weights = weight_formats(model)[0] if weights == "auto" else weights
    try:
        return plan(Deployment(model=model, gpu=gpu, num_gpus=num_gpus, weights=weights, kv_dtype=kv_dtype,
                               vllm_version=vllm_version, max_model_len=max_model_len))
    except ValueError as e:
        return str(e)


def model_context_table(model: str, gpu: str, kv_dtype: str, vllm_version: str, counts=(1, 2, 4, 8)) -> pd.DataFrame:
    """Longest max_model_len that starts for the model, per weight format x number of GPUs (PREDICTIONS).

    A cell the planner cannot plan (TP that does not divide the heads, an architecture it does not model) carries the
    planner's message instead of a number.
    """
    rows = []
    for weights in weight_formats(model):
        for n in counts:
            p = model_plan(model, gpu, n, weights, kv_dtype, vllm_version, None)
            row = {"weights": weights, "GPUs": n}
            if isinstance(p, str):
                row.update({"outcome": "not planned", "largest_max_model_len": None, "weights_GiB": None, "kv_GiB": None, "message": p})
            else:
                row.update({"outcome": "OOM" if p.outcome == "oom" else "starts", "largest_max_model_len": p.max_model_len_that_starts,
                            "weights_GiB": p.weights_bytes / GiB, "kv_GiB": max(p.available_kv_bytes, 0) / GiB,
                            "message": p.message if p.outcome == "oom" else ""})
            rows.append(row)
    return pd.DataFrame(rows)


FAMILY_COLUMNS = ("config", "model", "run_id", "tp", "max_model_len", "outcome", "logged KV tokens", "planned KV tokens", "error %", "planner")


def family_comparison(cmp: pd.DataFrame) -> pd.DataFrame:
    """Planner vs vLLM on model families other than Llama 4 (``compare_runs`` rows): logged and planned tokens."""
    if not len(cmp):
        return pd.DataFrame(columns=FAMILY_COLUMNS)
    llama = {m for m in cmp.model.dropna().unique() if _known_llama4(m)}
    other = cmp[~cmp.model.isin(llama) & ~is_v083(cmp)]  # vLLM 0.8.3's Llama 4 servers have a section of their own
    rows = []
    for r in other.itertuples():
        ok = r.outcome == "ok" and pd.notna(r.kv_cache_tokens)
        planned = getattr(r, "pred_kv_cache_tokens", None)
        modelled = r.pred_outcome != "not modelled"
        rows.append({"config": r.config, "model": r.model, "run_id": r.run_id, "tp": int(r.tp) if pd.notna(r.tp) else None,
                     "max_model_len": int(r.max_model_len), "outcome": r.outcome,
                     "logged KV tokens": int(r.kv_cache_tokens) if ok else None,
                     "planned KV tokens": int(planned) if modelled and pd.notna(planned) else None,
                     "error %": float(r.error_pct) if ok and modelled and pd.notna(r.error_pct) else None,
                     "planner": r.pred_outcome if modelled else f"not modelled: {r.pred_message}"})
    return pd.DataFrame(rows, columns=FAMILY_COLUMNS)
