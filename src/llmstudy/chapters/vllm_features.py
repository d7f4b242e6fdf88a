"""What each vLLM feature is worth: one server setting per arm, the same workloads, measured deltas and their noise.

An *arm* is a named server setting (``servebench.ServerSettings``) that changes one thing against the group's
*baseline* (vLLM's defaults on the Llama-2-7B architecture, prefix caching off); a *group* is the arms that make
one run record, always bracketed by two starts of the baseline (first and last) so that the record measures its
own restart-to-restart spread. Every workload runs at least twice on each server (run-to-run spread). The runs
are ordinary resumable serving sweeps (``servebench.run_sweep``), so a group can span several time-limited GPU
calls. The analysis here turns a record into deltas against the baseline and says which are larger than the noise.
"""

from __future__ import annotations

import gzip
import json
import math
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from llmstudy.core import records as R
from llmstudy.serving import sweep as SB
from llmstudy.serving.loadgen import Workload
from llmstudy.core.paths import data_dir

EXPERIMENT = "vllm_features"
DATA = "data/vllm_features"  # the real-text prompt files (relative to the repository root: they travel with it)
TEXT_FILES = {"grounded": f"{DATA}/prompts-grounded.jsonl", "open": f"{DATA}/prompts-open.jsonl"}
NGRAM = {"method": "ngram", "num_speculative_tokens": 5, "prompt_lookup_max": 4, "prompt_lookup_min": 2}
NGRAM_GPU = {**NGRAM, "method": "ngram_gpu"}


@dataclass(frozen=True)
class Arm:
    """One ablation arm: what it changes (ServerSettings fields) and which workloads show it."""

    name: str
    group: str
    feature: str  # the article's feature, in words
    change: str  # what this arm does against the baseline
    server: dict = field(default_factory=dict, hash=False)
    workloads: tuple[str, ...] = ("std",)  # std | std-batched | std-top | batched-min | prefix | long | text
    needs: tuple[str, ...] = ()  # Python modules the serving machine must import (checked before any start)


ARMS: dict[str, Arm] = {a.name: a for a in (
    # core: scheduling and execution
    Arm("eager", "core", "CUDA graphs + torch.compile", "--enforce-eager (no graphs, no compile)", {"enforce_eager": True}),
    Arm("no-chunked-prefill", "core", "chunked prefill", "--no-enable-chunked-prefill", {"extra": ("--no-enable-chunked-prefill",)}, ("std-top", "long")),
    Arm("mnbt-512", "core", "chunked prefill", "--max-num-batched-tokens 512 (small chunks)", {"extra": ("--max-num-batched-tokens", "512")}, ("std-top", "long")),
    Arm("mnbt-2048", "extra", "chunked prefill", "--max-num-batched-tokens 2048", {"extra": ("--max-num-batched-tokens", "2048")}, ("std-top", "long")),
    Arm("prefix-caching", "core", "PagedAttention block sharing (prefix caching)", "--enable-prefix-caching", {"prefix_caching": True}, ("batched-min", "prefix")),
    Arm("one-at-a-time", "core", "continuous batching", "--max-num-seqs 1 (no batching)", {"max_num_seqs": 1}, ("batched-min",)),
    # quant: memory formats
    Arm("kv-fp8", "quant", "quantization: FP8 KV cache", "--kv-cache-dtype fp8", {"extra": ("--kv-cache-dtype", "fp8")}),
    Arm("fp8-weights", "quant", "quantization: FP8 weights", "--quantization fp8 (online, per-tensor)", {"quantization": "fp8"}),
    Arm("gptq", "quant", "quantization: GPTQ 4-bit", "llama-2-7b-gptq layout, kernel chosen by vLLM", {"model": "llama-2-7b-gptq"}),
    Arm("awq", "quant", "quantization: AWQ 4-bit", "llama-2-7b-awq layout, kernel chosen by vLLM", {"model": "llama-2-7b-awq"}),
    Arm("gptq-exllama", "extra", "quantization: GPTQ 4-bit", "--quantization gptq --dtype float16 (the article's forced kernel)", {"model": "llama-2-7b-gptq", "quantization": "gptq", "dtype": "float16"}),
    # kernels: paging and attention implementations
    Arm("block-64", "kernels", "PagedAttention block size", "--block-size 64", {"extra": ("--block-size", "64")}),
    Arm("attn-triton", "kernels", "attention kernels", "--attention-backend TRITON_ATTN", {"extra": ("--attention-backend", "TRITON_ATTN")}),
    Arm("attn-flex", "kernels", "attention kernels", "--attention-backend FLEX_ATTENTION", {"extra": ("--attention-backend", "FLEX_ATTENTION")}),
    Arm("attn-flashinfer", "kernels", "attention kernels", "--attention-backend FLASHINFER", {"extra": ("--attention-backend", "FLASHINFER")}, needs=("flashinfer",)),
    # spec: a real small model, real text
    Arm("ngram", "spec", "speculative decoding", "--speculative-config " + json.dumps(NGRAM) + " (lookup on the CPU; vLLM then turns async scheduling off)",
        {"extra": ("--speculative-config", json.dumps(NGRAM, separators=(",", ":")))}, ("text",), needs=("numba",)),
    Arm("ngram-gpu", "spec", "speculative decoding", "the same with method ngram_gpu (lookup on the GPU; async scheduling stays on)",
        {"extra": ("--speculative-config", json.dumps(NGRAM_GPU, separators=(",", ":")))}, ("text",)),
)}
GROUPS = {g: tuple(a.name for a in ARMS.values() if a.group == g) for g in ("core", "quant", "kernels", "spec", "extra")}
BASELINE = "baseline"


def resolve(selection: str | list[str] | tuple[str, ...]) -> list[str]:
    """Arm names from group names and/or arm names (``"core"``, ``"kv-fp8,block-64"``), in order, no duplicates."""
    items = [s.strip() for x in ([selection] if isinstance(selection, str) else selection) for s in str(x).split(",") if s.strip()]
    if not items:
        raise ValueError(f"no arms selected; groups: {sorted(GROUPS)}, arms: {sorted(ARMS)}")
    out: list[str] = []
    for s in items:
        if s == BASELINE:
            continue  # always there
        names = GROUPS.get(s) or ((s,) if s in ARMS else None)
        if names is None:
            raise ValueError(f"unknown arm or group {s!r}; groups: {sorted(GROUPS)}, arms: {sorted(ARMS)}")
        out += [n for n in names if n not in out]
    spec = {ARMS[n].group == "spec" for n in out}
    if len(spec) > 1:
        raise ValueError("speculative-decoding arms run on the small real model: select them apart from the 7B arms (one record each)")
    return out


def _positive(name: str, values) -> tuple[int, ...]:
    vals = tuple(values) if isinstance(values, (list, tuple)) else (values,)
    bad = [v for v in vals if isinstance(v, bool) or not isinstance(v, int) or v <= 0]
    if not vals or bad:
        raise ValueError(f"{name} must be positive integers, got {list(vals)}")
    return vals


def plan(
    arms: str | list[str] = "core",
    repeats: int = 2,
    concurrency=(1, 16, 64),
    input_len: int = 512,
    output_len: int = 256,
    max_model_len: int = 4096,
    waves: int = 2,
    c1_prompts: int = 4,
    prefix=(2048, 1792, 64, 16),
    long=(3584, 128, 16),
    long_waves: int = 3,
    text_concurrency=(1, 16),
    text_output_len: int = 256,
    text_prompts: int = 16,
    spec_model: str = "",
    **server,
) -> list[SB.Point]:
    """The points of a selection: baseline, each arm, baseline again; every workload ``repeats`` times per server.

    Workloads: ``std`` = ``input_len`` in / ``output_len`` out at each concurrency (``c1_prompts`` requests at c=1,
    ``waves`` x c above); ``prefix`` = (input, shared prefix, output, c); ``long`` = (input, output, c) long prompts
    arriving while others decode; ``text`` = the real prompt files at ``text_concurrency`` (spec arms; half the
    prompts at c=1). An arm runs the workloads it names; the baseline runs all that its arms name, on the same
    prompts: seeds depend on the workload and the repeat only (random prompts differ between repeats, so that a
    prefix cache cannot serve a repeat; the text prompts are the same in every repeat). Warm-ups precede the
    first repeat only (the later ones find the server warm).
    """
    names = resolve(arms)
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 2:
        raise ValueError(f"repeats must be an integer >= 2 (the run-to-run spread needs two), got {repeats!r}")
    conc = sorted(set(_positive("concurrency", concurrency)))
    _positive("lengths", (input_len, output_len, max_model_len, waves, c1_prompts, long_waves, text_output_len, text_prompts))
    p_in, p_shared, p_out, p_c = _positive("prefix", prefix)
    l_in, l_out, l_c = _positive("long", long)
    t_conc = sorted(set(_positive("text_concurrency", text_concurrency)))
    spec = ARMS[names[0]].group == "spec"
    if spec:
        from llmstudy.chapters.lora_vs_qlora import find_checkpoint

        server = {"load_format": "auto", "model": str(find_checkpoint(spec_model or "gemma-3-270m")), **server}

    def std(c: int, seed: int, r: int) -> Workload:
        return Workload(input_len, output_len, c, c1_prompts if c == 1 else waves * c, (1 if c == 1 else min(c, 4)) if r == 0 else 0, seed)

    batched = [c for c in conc if c > 1]
    kinds: dict[str, list] = {  # workload key -> [(sweep, make(seed, repeat))]
        "std": [("std", lambda s, r, c=c: std(c, s, r)) for c in conc],
        "std-batched": [("std", lambda s, r, c=c: std(c, s, r)) for c in batched],
        "std-top": [("std", lambda s, r: std(conc[-1], s, r))],
        "batched-min": [("std", lambda s, r: std(batched[0] if batched else conc[0], s, r))],
        "prefix": [("prefix", lambda s, r: Workload(p_in, p_out, p_c, waves * p_c, min(p_c, 4) if r == 0 else 0, s, prefix_len=p_shared))],
        "long": [("long", lambda s, r: Workload(l_in, l_out, l_c, long_waves * l_c, min(l_c, 4) if r == 0 else 0, s))],
        # real text: the same prompts in every repeat (seed without the repeat), fewer of them at c=1
        "text": [("text", lambda s, r, c=c, f=f: Workload(input_len, text_output_len, c, text_prompts if c > 1 else max(1, text_prompts // 2), 1 if r == 0 else 0, s - s % 1000, dataset=f))
                 for f in TEXT_FILES.values() for c in t_conc],
    }
    # one entry per distinct workload, in a fixed order; its index fixes the prompts' seed on every server
    catalogue: dict[tuple[str, str], tuple[str, object]] = {}
    for entries in kinds.values():
        for sweep, make in entries:
            catalogue.setdefault((sweep, make(0, 0).tag), (sweep, make))
    index = {t: i for i, t in enumerate(catalogue)}

    def workloads_of(keys) -> list[tuple[int, str, object]]:
        tags = {(s, m(0, 0).tag) for k in keys for s, m in kinds[k]}
        return [(index[t], *catalogue[t]) for t in catalogue if t in tags]

    base = {"max_model_len": max_model_len, **server}
    union = [k for n in names for k in ARMS[n].workloads]
    servers = [(f"{BASELINE}.1", {}, union)] + [(n, ARMS[n].server, ARMS[n].workloads) for n in names] + [(f"{BASELINE}.2", {}, union)]
    pts = []
    for name, change, keys in servers:
        kw = {**base, **change}
        kw["extra"] = tuple(base.get("extra", ())) + tuple(change.get("extra", ()))
        settings = SB.ServerSettings(name=name, **kw)
        for i, sweep, make in workloads_of(keys):
            for r in range(repeats):
                pts.append(SB.Point(sweep, settings, make(1000 * i + r, r), r))
    return pts


def workload_label(sweep: str, w: Workload | pd.Series) -> str:
    """How a workload is named in the tables: ``c16``, ``shared prefix c16``, ``long prompts c16``, ``grounded c1``."""
    g = w.get if isinstance(w, pd.Series) else lambda k: getattr(w, k)
    c = int(g("concurrency"))
    if sweep == "text":
        return f"{Path(str(g('dataset'))).stem.removeprefix('prompts-')} c{c}"
    return {"prefix": "shared prefix", "long": "long prompts"}.get(sweep, "") + (" " if sweep in ("prefix", "long") else "") + f"c{c}"


# --- time estimate (planning only: from the H100 probes and the serving records' server starts) ------------------
START_S = {"graphs": 100.0, "eager": 60.0}  # 7B start to /health: 90-116 s with compile + graphs (batch_size_sweep h100-b)
DECODE_MS = (6.1, 0.137)  # ITL ~ a + b x batch (probes: 6.11 ms at c=1, 8.16 ms at c=16)
PREFILL_TOK_S = 20_000.0
POINT_OVERHEAD_S = 2.0


def point_estimate_s(w: Workload, max_num_seqs: int | None = None) -> float:
    """Rough seconds for one point: waves of (prefill of the wave + decode of output_len tokens), warm-ups included."""
    b = min(w.concurrency, max_num_seqs or w.concurrency)
    wave = w.input_len * b / PREFILL_TOK_S + w.output_len * (DECODE_MS[0] + DECODE_MS[1] * b) / 1e3
    waves = math.ceil(w.num_prompts / b) + (math.ceil(w.warmups / b) if w.warmups else 0)
    return POINT_OVERHEAD_S + waves * wave


def server_estimate_s(settings: SB.ServerSettings, points: list[SB.Point]) -> float:
    """Rough seconds for a server's start and its points (a start is not begun when this would pass the budget)."""
    return START_S["eager" if settings.enforce_eager else "graphs"] + sum(point_estimate_s(p.workload, settings.max_num_seqs) for p in points)


def estimate(points: list[SB.Point]) -> pd.DataFrame:
    """Per server: points and estimated seconds (start + load), in run order."""
    rows: dict[str, dict] = {}
    for p in points:
        r = rows.setdefault(p.server.label(), {"server": p.server.label(), "points": 0, "start_s": START_S["eager" if p.server.enforce_eager else "graphs"], "load_s": 0.0})
        r["points"] += 1
        r["load_s"] += point_estimate_s(p.workload, p.server.max_num_seqs)
    df = pd.DataFrame(rows.values())
    df["total_s"] = df["start_s"] + df["load_s"]
    return df


# --- running -------------------------------------------------------------------------------------------------------
def missing_modules(modules, python: str | None = None) -> list[str]:
    """Which of ``modules`` the vLLM Python cannot import (an arm that needs one is recorded as skipped, not started)."""
    import os
    import sys

    py = python or os.environ.get("LLMSTUDY_VLLM_PYTHON") or sys.executable
    out = []
    for m in modules:
        if subprocess.run([py, "-c", f"import {m}"], capture_output=True, timeout=300, check=False).returncode != 0:
            out.append(m)
    return out


def run(arms: str | list[str] = "core", model: str = "llama-2-7b", run_id: str = "", budget_s: float | None = None, python: str | None = None,
        server_env: dict | None = None, root=None, port: int | None = None, start_timeout_s: float = 420, point_timeout_s: float = 420, **plan_kw) -> Path:
    """Run a selection of arms as one resumable sweep of ``model`` (the spec arms: their checkpoint) and publish its
    record; raises ``SweepIncomplete`` at the budget (rerun with the same ``run_id`` to resume)."""
    names = resolve(arms)
    skipped = {}
    for n in names:
        miss = missing_modules(ARMS[n].needs, python) if ARMS[n].needs else []
        if miss:
            skipped[n] = f"not started: the serving Python cannot import {', '.join(miss)}"
    keep = [n for n in names if n not in skipped]
    if not keep:
        raise ValueError(f"no arm can run here: {skipped}")
    pts = plan(keep, **plan_kw)
    spec = ARMS[keep[0]].group == "spec"
    model = pts[0].server.model if spec else model
    params = {"arms": keep, "selection": arms if isinstance(arms, str) else ",".join(arms), "skipped_arms": skipped,
              "plan": {k: (list(v) if isinstance(v, tuple) else v) for k, v in plan_kw.items()},
              "arm_changes": {n: ARMS[n].change for n in keep}}
    if spec:
        params |= {"weights": f"real ({Path(model).name} checkpoint)", "tokenizer": "the model's own", "prompts": TEXT_FILES}
    return SB.run_sweep(EXPERIMENT, model, pts, run_id=run_id, budget_s=budget_s, python=python, server_env=server_env, root=root, port=port,
                        start_timeout_s=start_timeout_s, point_timeout_s=point_timeout_s, parameters=params, server_estimate_s=server_estimate_s)


# --- the real-text prompts of the speculative-decoding arms -------------------------------------------------------
def build_prompts(dest: Path | None = None, n: int = 16) -> dict[str, Path]:
    """Write the two prompt files: ``grounded`` (rewrite a Python function from this repository: the answer repeats
    much of the prompt, where n-gram lookup can hit) and ``open`` (questions of the LoRA chapter's dataset: nothing
    to copy). Deterministic; the committed files are its output at the commit that made them."""
    import ast

    dest = Path(dest) if dest else data_dir() / "vllm_features"
    dest.mkdir(parents=True, exist_ok=True)
    src = Path(__file__).resolve().parents[1]
    funcs = []
    for f in ("serving/loadgen.py", "serving/sweep.py", "chapters/serve_sweeps.py", "core/records.py", "core/models.py", "serving/logs.py"):
        text = (src / f).read_text()
        for node in ast.parse(text).body:
            if isinstance(node, ast.FunctionDef) and not node.name.startswith("_") and 8 <= node.end_lineno - node.lineno + 1 <= 30:
                funcs.append(ast.get_source_segment(text, node))
    grounded = [
        "Below is a Python function, then the same function rewritten with clearer variable names and a comment above "
        f"every statement. The behaviour is unchanged.\n\n```python\n{code}\n```\n\nRewritten:\n\n```python\n" for code in funcs[:n]
    ]
    rows = json.loads((data_dir() / "lora_vs_qlora" / "persona_ja.json").read_text())
    open_ = [f"次の質問に、丁寧に答えてください。\n\n質問: {r['instruction']}\n回答:" for r in rows[:n]]
    out = {}
    for kind, prompts in (("grounded", grounded), ("open", open_)):
        if len(prompts) < n:
            raise ValueError(f"only {len(prompts)} {kind} prompts found, need {n}")
        p = dest / f"prompts-{kind}.jsonl"
        p.write_text("".join(json.dumps({"prompt": t}, ensure_ascii=False) + "\n" for t in prompts))
        out[kind] = p
    return out


# --- analysis ------------------------------------------------------------------------------------------------------
METRICS = {  # column -> (label, unit, better)
    "output_token_throughput": ("throughput", "tokens/s", "higher"),
    "time_to_first_token_avg": ("TTFT", "ms", "lower"),
    "inter_token_latency_avg": ("ITL", "ms", "lower"),
    "chunk_gap_p99_ms": ("p99 chunk gap", "ms", "lower"),
}


def arm_of(server: str) -> str:
    """``baseline.2`` -> ``baseline``; other servers are their arm."""
    return server.rsplit(".", 1)[0] if server.startswith(BASELINE + ".") else server


def raw_facts(path: Path, point_id: str) -> dict:
    """From a point's raw ``vllm bench serve`` result: the pooled per-chunk gaps (p99, max) and the speculative
    decoding counters the tool read from the server's /metrics (absent without speculation)."""
    f = Path(path) / "raw" / f"{point_id}.json.gz"
    if not f.exists():
        return {}
    with gzip.open(f, "rt") as fh:
        raw = json.load(fh)
    gaps = np.array([g for itl in raw.get("itls") or [] for g in (itl or [])], dtype=float) * 1e3
    out = {"chunk_gap_p99_ms": float(np.percentile(gaps, 99)) if gaps.size else np.nan, "chunk_gap_max_ms": float(gaps.max()) if gaps.size else np.nan}
    for k in ("acceptance_rate", "acceptance_length", "num_drafts", "draft_tokens", "accepted_tokens"):
        if f"spec_decode_{k}" in raw:
            out[k] = raw[f"spec_decode_{k}"]
    return out


def load(run_ids=(), root=None) -> pd.DataFrame:
    """Every point of the selected records (all if none named): results + arm, instance, workload label, raw facts."""
    frames = []
    for rec in R.load_runs(EXPERIMENT, root):
        if run_ids and rec.run_id not in run_ids:
            continue
        df = rec.table("results")
        df.insert(1, "gpu", rec.gpu_name())
        df["arm"] = df["server"].map(arm_of)
        df["instance"] = df["server"].map(lambda s: int(s.rsplit(".", 1)[1]) if s.startswith(BASELINE + ".") else 1)
        df["workload"] = [workload_label(s, r) for s, (_, r) in zip(df["sweep"], df.iterrows())]
        df["error"] = df["error"].astype(object)
        partial = (df["outcome"] == "partial") & df["error"].fillna("").eq("")
        if partial.any():  # records made before points said why: the failed requests are in the record
            req = rec.table("requests")
            bad = req[~req["ok"].astype(bool)]
            why = {pid: f"{len(g)} of {int((req['point_id'] == pid).sum())} requests failed: {g['error'].value_counts().head(3).to_dict()}"
                   for pid, g in bad.groupby("point_id")}
            df.loc[partial, "error"] = df.loc[partial, "point_id"].map(why)
        facts = pd.DataFrame([raw_facts(rec.path, p) for p in df["point_id"]], index=df.index)
        frames.append(pd.concat([df, facts], axis=1))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def spread_pct(values) -> float:
    """Run-to-run spread of repeated measurements: (max - min) / mean, in percent (NaN for fewer than two)."""
    v = np.asarray([x for x in values if pd.notna(x)], dtype=float)
    return float(100 * (v.max() - v.min()) / v.mean()) if v.size >= 2 and v.mean() != 0 else float("nan")


def compare(points: pd.DataFrame, metrics=tuple(METRICS)) -> pd.DataFrame:
    """Each arm against its record's baseline, per workload and metric.

    delta_pct = 100 (arm mean / baseline mean - 1), the baseline mean pooling both starts (``baseline_1``,
    ``baseline_2``: each start's mean). The noise is the largest spread either side showed:
    noise_pct = max(spread of all baseline values - both starts, every repeat -, spread of the arm's repeats).
    ``larger_than_noise``: |delta_pct| > noise_pct. Only ok points count; an arm with no ok point has no delta.
    """
    ok = points[points["outcome"] == "ok"]
    rows = []
    for (run, wl), g in ok.groupby(["run_id", "workload"], sort=False):
        base = g[g["arm"] == BASELINE]
        for arm, a in g[g["arm"] != BASELINE].groupby("arm", sort=False):
            for m in metrics:
                if m not in g or base[m].isna().all() or a[m].isna().all():
                    continue
                bm, am = base[m].mean(), a[m].mean()
                bs, as_ = spread_pct(base[m]), spread_pct(a[m])
                noise = np.nanmax([bs, as_]) if not (np.isnan(bs) and np.isnan(as_)) else np.nan
                d = 100 * (am / bm - 1)
                b12 = {i: base.loc[base["instance"] == i, m].mean() for i in (1, 2)}
                rows.append({"run_id": run, "arm": arm, "workload": wl, "metric": m, "baseline": bm, "baseline_1": b12[1], "baseline_2": b12[2], "value": am, "delta_pct": d,
                             "baseline_spread_pct": bs, "arm_spread_pct": as_, "noise_pct": noise,
                             "larger_than_noise": bool(abs(d) > noise) if pd.notna(noise) else False, "n_baseline": int(base[m].notna().sum()), "n_arm": int(a[m].notna().sum())})
    return pd.DataFrame(rows)


def noise(points: pd.DataFrame, metrics=tuple(METRICS)) -> pd.DataFrame:
    """The baseline's own spread per record, workload and metric: between repeats on one server (the larger of the
    two starts) and between the two starts (difference of their means, in percent of the first)."""
    ok = points[(points["outcome"] == "ok") & (points["arm"] == BASELINE)]
    rows = []
    for (run, wl), g in ok.groupby(["run_id", "workload"], sort=False):
        for m in metrics:
            if m not in g or g[m].isna().all():
                continue
            by = {i: x[m].dropna() for i, x in g.groupby("instance")}
            rep = np.nanmax([spread_pct(v) for v in by.values()]) if any(len(v) >= 2 for v in by.values()) else np.nan
            restart = 100 * (by[2].mean() / by[1].mean() - 1) if 1 in by and 2 in by and len(by[1]) and len(by[2]) else np.nan
            rows.append({"run_id": run, "workload": wl, "metric": m, "mean": g[m].mean(), "repeat_spread_pct": rep, "restart_pct": restart, "n": int(g[m].notna().sum())})
    return pd.DataFrame(rows)


def kv_capacity(points: pd.DataFrame) -> pd.DataFrame:
    """KV cache size (tokens, from each server's log) per arm, its change against the baseline's (mean of its starts)
    and whether that change is larger than the baseline's own start-to-start spread."""
    cols = ["run_id", "arm", "kv_cache_tokens", "kv_change_pct", "kv_noise_pct", "larger_than_noise"]
    if "kv_cache_tokens" not in points:
        return pd.DataFrame(columns=cols)
    srv = points.dropna(subset=["kv_cache_tokens"]).drop_duplicates(["run_id", "server"])
    rows = []
    for run, g in srv.groupby("run_id", sort=False):
        b = g.loc[g["arm"] == BASELINE, "kv_cache_tokens"]
        base, noise = b.mean(), spread_pct(b)
        for arm, a in g.groupby("arm", sort=False):
            kv = a["kv_cache_tokens"].mean()
            change = 0.0 if arm == BASELINE else (100 * (kv / base - 1) if pd.notna(base) else np.nan)
            rows.append({"run_id": run, "arm": arm, "kv_cache_tokens": kv, "kv_change_pct": change, "kv_noise_pct": noise,
                         "larger_than_noise": bool(arm != BASELINE and pd.notna(change) and pd.notna(noise) and abs(change) > noise)})
    return pd.DataFrame(rows, columns=cols)


SERVER_FACTS = ("quantization", "linear_kernel", "attention_backend", "flash_attn_version", "async_scheduling", "weights_gib", "available_kv_gib", "kv_cache_tokens", "start_s")
_TEXT_FACTS = ("quantization", "linear_kernel", "attention_backend", "async_scheduling")


def servers(run_ids=(), root=None) -> pd.DataFrame:
    """One row per server of the selected records: what it loaded and what it got (the facts its log gave). Facts a
    record's ``servers.csv`` lacks are read again from the server log the record keeps, with today's patterns."""
    from llmstudy.serving.logs import parse_startup_log

    frames = []
    for rec in R.load_runs(EXPERIMENT, root):
        if run_ids and rec.run_id not in run_ids:
            continue
        srv = rec.table("servers")
        for col in SERVER_FACTS:
            if col not in srv:
                srv[col] = np.nan
        srv = srv.astype({c: object for c in _TEXT_FACTS})
        for i, r in srv.iterrows():
            logs = sorted((rec.path / "logs").glob(f"server-{r['server']}.*log"))
            facts = parse_startup_log(logs[-1].read_text(errors="replace")) if logs else {}
            for col in SERVER_FACTS:
                if pd.isna(srv.at[i, col]) and col in facts:
                    srv.at[i, col] = facts[col]
        srv["run_id"] = rec.run_id
        srv["arm"] = srv["server"].map(arm_of)
        frames.append(srv[["run_id", "server", "arm", *SERVER_FACTS]])
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["run_id", "server", "arm", *SERVER_FACTS])


SKIPPED_COLUMNS = ["run_id", "arm", "reason"]


def skipped(run_ids=(), root=None) -> pd.DataFrame:
    """The arms a record planned but never started (a module the serving Python lacked), with the reason its manifest
    gives: a skipped arm is a result of that record, not an arm still to measure."""
    rows = [{"run_id": rec.run_id, "arm": arm, "reason": why}
            for rec in R.load_runs(EXPERIMENT, root) if not run_ids or rec.run_id in run_ids
            for arm, why in rec.manifest.get("parameters", {}).get("skipped_arms", {}).items()]
    return pd.DataFrame(rows, columns=SKIPPED_COLUMNS)


def outcomes(points: pd.DataFrame) -> pd.DataFrame:
    """One row per server: its arm, start seconds, how many points ended ok, and the first error (a failed start is a result)."""
    rows = []
    for (run, server), g in points.groupby(["run_id", "server"], sort=False):
        bad = g[g["outcome"] != "ok"]
        rows.append({"run_id": run, "server": server, "arm": g["arm"].iloc[0], "start_s": g["start_s"].iloc[0] if "start_s" in g else np.nan, "points": len(g), "ok": int((g["outcome"] == "ok").sum()),
                     "outcome": "ok" if bad.empty else bad["outcome"].iloc[0], "error": "" if bad.empty else str(bad["error"].iloc[0])[:300]})
    return pd.DataFrame(rows)


MAIN_GROUPS = ("core", "quant", "kernels", "spec")
NOT_MEASURED = "not measured yet"


def headline(points: pd.DataFrame, metrics=("output_token_throughput", "time_to_first_token_avg", "inter_token_latency_avg"),
             skipped_: pd.DataFrame | None = None) -> pd.DataFrame:
    """The chapter's table: one row per arm and workload; per metric 'Δ% (noise ±%)' and whether it beats the noise,
    plus the KV-capacity change. Arms of the main groups without a point say "not measured yet", or "skipped: <why>"
    where a record of ``skipped_`` (:func:`skipped`) planned and skipped them; arms whose servers produced no ok point
    say how they failed. Rows follow ``ARMS``' order."""
    cmp, kv = compare(points), kv_capacity(points)
    sk = skipped_ if skipped_ is not None else pd.DataFrame(columns=SKIPPED_COLUMNS)
    present = [a for a in dict.fromkeys(points["arm"]) if a != BASELINE] if len(points) else []
    arms = [a for a in ARMS if a in present or ARMS[a].group in MAIN_GROUPS] + [a for a in present if a not in ARMS]
    rows = []
    for arm in arms:
        base = {"feature": ARMS[arm].feature if arm in ARMS else arm, "arm": arm}
        a = cmp[cmp["arm"] == arm] if len(cmp) else cmp
        if not len(a):
            bad = points.loc[points["arm"] == arm, "outcome"] if arm in present else pd.Series(dtype=str)
            s = sk[sk["arm"] == arm]
            why = f"no ok point ({bad.iloc[0]})" if not bad.empty else (f"skipped ({s['reason'].iloc[-1]})" if len(s) else NOT_MEASURED)
            rows.append({"run_id": s["run_id"].iloc[-1] if bad.empty and len(s) else "—", **base, "workload": "—", **{f"Δ {METRICS[m][0]}": why for m in metrics}, **{f"{METRICS[m][0]} > noise": "—" for m in metrics}, "KV capacity": "—"})
            continue
        for (run, wl), g in a.groupby(["run_id", "workload"], sort=False):
            r = {"run_id": run, **base, "workload": wl}
            for m in metrics:
                x = g[g["metric"] == m]
                label = METRICS[m][0]
                r[f"Δ {label}"] = f"{x['delta_pct'].iloc[0]:+.1f}% (±{x['noise_pct'].iloc[0]:.1f}%)" if len(x) else "—"
                r[f"{label} > noise"] = ("yes" if x["larger_than_noise"].iloc[0] else "no") if len(x) else "—"
            k = kv[(kv["run_id"] == run) & (kv["arm"] == arm)]
            r["KV capacity"] = f"{k['kv_change_pct'].iloc[0]:+.2f}% (±{k['kv_noise_pct'].iloc[0]:.2f}%)" if len(k) and pd.notna(k["kv_change_pct"].iloc[0]) else "—"
            rows.append(r)
    return pd.DataFrame(rows)


def speculation(points: pd.DataFrame) -> pd.DataFrame:
    """Speculative arms against the baseline per workload: acceptance (rate, tokens per step), throughput, ITL, speedup."""
    ok = points[points["outcome"] == "ok"]
    rows = []
    for (run, wl), g in ok.groupby(["run_id", "workload"], sort=False):
        base = g[g["arm"] == BASELINE]
        for arm, a in g[(g["arm"] != BASELINE) & g.get("acceptance_rate", pd.Series(np.nan, index=g.index)).notna()].groupby("arm", sort=False):
            bt, at = base["output_token_throughput"].mean(), a["output_token_throughput"].mean()
            rows.append({"run_id": run, "arm": arm, "workload": wl, "acceptance_rate_pct": a["acceptance_rate"].mean(), "acceptance_length": a["acceptance_length"].mean(),
                         "baseline_tok_s": bt, "spec_tok_s": at, "speedup": at / bt, "baseline_itl_ms": base["inter_token_latency_avg"].mean(), "spec_itl_ms": a["inter_token_latency_avg"].mean(),
                         "noise_pct": np.nanmax([spread_pct(base["output_token_throughput"]), spread_pct(a["output_token_throughput"])]),
                         "mean_output_len": a["output_sequence_length_avg"].mean() if "output_sequence_length_avg" in a else np.nan})
    df = pd.DataFrame(rows)
    if len(df):
        df["larger_than_noise"] = (100 * (df["speedup"] - 1)).abs() > df["noise_pct"]
    return df


def by_repeat(points: pd.DataFrame, metrics=("output_token_throughput", "time_to_first_token_avg")) -> pd.DataFrame:
    """Each server's repeats side by side, per workload: ``<metric>_r0``, ``<metric>_r1``, ... in run order (the first
    repeat follows the warm-ups; a one-time cost they did not cover shows as a first repeat off its second)."""
    ok = points[points["outcome"] == "ok"]
    if not len(ok):
        return pd.DataFrame(columns=["run_id", "server", "arm", "workload"])
    t = ok.pivot_table(index=["run_id", "server", "arm", "workload"], columns="repeat", values=list(metrics), sort=False)
    t.columns = [f"{m}_r{int(r)}" for m, r in t.columns]
    return t.reset_index()


def spec_transfer(acceptance_length: float, speedup: float) -> dict:
    """What a measured n-gram result implies for a memory-bound 7B at concurrency 1, stated as bounds.

    ``acceptance_length`` (tokens emitted per verification step) is the ceiling: it is the speedup if a step that
    checks k+1 tokens cost what a one-token step costs, which a 7B decode step at c=1 nearly does (it reads all
    weights once either way). ``efficiency`` = measured speedup / ceiling is how much of it the small model realised
    (its steps are short, so fixed per-step costs of drafting and verification weigh more).
    """
    if not acceptance_length or acceptance_length < 1 or speedup <= 0:
        raise ValueError(f"acceptance_length must be >= 1 and speedup > 0, got {acceptance_length}, {speedup}")
    return {"ceiling": acceptance_length, "measured": speedup, "efficiency": speedup / acceptance_length}


def figure(cmp: pd.DataFrame, title: str, metrics=("output_token_throughput", "time_to_first_token_avg", "inter_token_latency_avg")):
    """Arm / baseline per arm and workload on a log axis (ratios from 0.1x to 100x share one panel), one panel per
    metric; the grey bar is the noise band (1 ± noise)."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    d = cmp[cmp["metric"].isin(metrics)].copy()
    d["order"] = d["arm"].map({a: i for i, a in enumerate(ARMS)}).fillna(len(ARMS))
    d = d.sort_values("order", kind="stable")
    d["row"] = d["arm"] + " · " + d["workload"] + (" · " + d["run_id"] if d["run_id"].nunique() > 1 else "")
    order = list(dict.fromkeys(d["row"]))
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.6 * len(metrics), 0.42 * len(order) + 1.8), sharey=True, squeeze=False)
    for ax, m in zip(axes.flat, metrics):
        x = d[d["metric"] == m].set_index("row").reindex(order)
        y = np.arange(len(order))
        n = x["noise_pct"].fillna(0) / 100
        ax.barh(y, 2 * n, left=1 - n, color="0.85", label="noise band")
        colors = ["tab:blue" if b else "0.55" for b in x["larger_than_noise"].fillna(False)]
        ax.scatter(1 + x["delta_pct"] / 100, y, c=colors, zorder=3)
        ax.axvline(1, color="0.3", lw=0.8)
        ax.set_xscale("log")
        r = (1 + x["delta_pct"] / 100).dropna()
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1, 2, 5) if len(r) and max(r.max(), 1) / min(r.min(), 1) < 30 else (1,)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}×"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        label, _, better = METRICS[m]
        ax.set(title=f"{label} ({better} is better)", xlabel="arm / baseline (log scale)")
        ax.set_yticks(y, order)
        ax.invert_yaxis()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def findings(cmp: pd.DataFrame, metrics=("output_token_throughput", "time_to_first_token_avg", "inter_token_latency_avg", "chunk_gap_p99_ms")) -> list[str]:
    """One line per arm: the deltas larger than the noise (workload, Δ%, noise), or that none was."""
    out = []
    for (run, arm), g in cmp[cmp["metric"].isin(metrics)].groupby(["run_id", "arm"], sort=False):
        big = g[g["larger_than_noise"]]
        if big.empty:
            out.append(f"{arm}: within the noise on all {len(g)} workload × metric pairs ({run})")
        else:
            out.append(f"{arm}: " + "; ".join(f"{METRICS[r.metric][0]} {r.delta_pct:+.1f}% at {r.workload} (noise ±{r.noise_pct:.1f}%)" for r in big.itertuples()) + f" ({run})")
    return out


# --- the chapter's glued statements -----------------------------------------------------------------------------------
FMT = {"output_token_throughput": "{:,.0f}", "time_to_first_token_avg": "{:,.0f}", "inter_token_latency_avg": "{:.2f}", "chunk_gap_p99_ms": "{:,.0f}"}
CHUNKED_ARMS = ("no-chunked-prefill", "mnbt-512")
GLUED = (  # (arm, workload, metric) the chapter's text quotes
    *[("eager", w, m) for w in ("c1", "c16", "c64") for m in ("output_token_throughput", "inter_token_latency_avg", "time_to_first_token_avg")],
    *[("one-at-a-time", "c16", m) for m in ("output_token_throughput", "time_to_first_token_avg", "inter_token_latency_avg")],
    *[("prefix-caching", "shared prefix c16", m) for m in METRICS], ("prefix-caching", "c16", "output_token_throughput"),
    *[("no-chunked-prefill", "c64", m) for m in ("output_token_throughput", "time_to_first_token_avg", "inter_token_latency_avg")],
    *[("mnbt-512", "c64", m) for m in ("output_token_throughput", "time_to_first_token_avg", "inter_token_latency_avg")],
    *[(a, "long prompts c16", m) for a in CHUNKED_ARMS for m in METRICS],
    *[(a, w, m) for a in GROUPS["quant"] for w in ("c1", "c16", "c64") for m in ("output_token_throughput", "inter_token_latency_avg")],
    *[(a, w, m) for a in GROUPS["kernels"] for w in ("c1", "c16", "c64") for m in ("output_token_throughput", "inter_token_latency_avg", "time_to_first_token_avg")],
)


def chunked_prefill_gaps(points: pd.DataFrame) -> list[str]:
    """Why the long-prompt comparison lacks an arm: not measured, or its long-prompt points (or its baseline's) did
    not end ok, with the reason the record gives."""
    out = []
    for arm in CHUNKED_ARMS:
        a = points[points["arm"] == arm] if len(points) else points
        if not len(a):
            out.append(f"{arm}: {NOT_MEASURED}")
            continue
        for run in dict.fromkeys(a["run_id"]):
            long_ = points[(points["run_id"] == run) & points["arm"].isin([arm, BASELINE]) & (points["sweep"] == "long")]
            bad = long_[long_["outcome"] != "ok"]
            if len(bad):
                out.append(f"{arm} ({run}): {len(bad)} of {len(long_)} long-prompt points of the arm and its baseline ended "
                           f"{'/'.join(dict.fromkeys(bad['outcome']))} ({bad['error'].iloc[0]}), so this record gives no long-prompt delta")
    return out


def glue_key(*parts: str) -> str:
    """``("prefix-caching", "shared prefix c16", "p99 chunk gap")`` -> ``vf_prefix_caching_shared_prefix_c16_p99_chunk_gap``."""
    return "vf_" + "_".join("".join(ch if ch.isalnum() else "_" for ch in p.lower()) for p in parts)


SPEC_WORKLOADS = ("grounded c1", "grounded c16", "open c1", "open c16")


def spec_statements(points: pd.DataFrame) -> dict[str, str]:
    """The speculative-decoding numbers the chapter quotes, per arm and workload (the latest record wins), under
    ``vf_spec_<arm>_<workload>``: ``_speedup`` (×), ``_verdict`` against ``_noise``, ``_tok_s`` (baseline → arm),
    ``_itl`` (ms, baseline → arm), ``_accept`` (% of drafted tokens), ``_len`` (tokens per step, the ceiling) and
    ``_share`` (the measured speedup as a share of that ceiling), ``_repeats_tput`` / ``_repeats_ttft`` (each repeat
    in run order); "n/a" for the arms and ``SPEC_WORKLOADS`` no record measured."""
    sp = speculation(points) if len(points) else pd.DataFrame()
    out = {f"{glue_key('spec', a, w)}_{x}": "n/a" for a in GROUPS["spec"] for w in SPEC_WORKLOADS
           for x in ("speedup", "verdict", "noise", "tok_s", "itl", "accept", "len", "share", "repeats_tput", "repeats_ttft")}
    for (arm, wl), g in (sp.sort_values("run_id").groupby(["arm", "workload"], sort=False) if len(sp) else ()):
        r, k = g.iloc[-1], glue_key("spec", arm, wl)
        t = spec_transfer(r["acceptance_length"], r["speedup"])
        out |= {f"{k}_speedup": f"{r['speedup']:.2f}×", f"{k}_verdict": "larger than" if r["larger_than_noise"] else "within",
                f"{k}_noise": f"±{r['noise_pct']:.0f}%", f"{k}_tok_s": f"{r['baseline_tok_s']:,.0f} → {r['spec_tok_s']:,.0f}",
                f"{k}_itl": f"{r['baseline_itl_ms']:.2f} → {r['spec_itl_ms']:.2f}", f"{k}_accept": f"{r['acceptance_rate_pct']:.0f}%",
                f"{k}_len": f"{r['acceptance_length']:.2f}", f"{k}_share": f"{100 * t['efficiency']:.0f}%"}
    rep = by_repeat(points[points["sweep"] == "text"]) if len(points) else pd.DataFrame()
    for r in (rep.sort_values("run_id").drop_duplicates(["arm", "workload"], keep="last").itertuples() if len(rep) else ()):
        if r.arm == BASELINE or not hasattr(r, "output_token_throughput_r1"):
            continue
        k = glue_key("spec", r.arm, r.workload)
        out[f"{k}_repeats_tput"] = f"{r.output_token_throughput_r0:,.0f} and {r.output_token_throughput_r1:,.0f}"
        out[f"{k}_repeats_ttft"] = f"{r.time_to_first_token_avg_r0:,.0f} and {r.time_to_first_token_avg_r1:,.0f}"
    return out


def statements(points: pd.DataFrame, picks=GLUED, servers_: pd.DataFrame | None = None, skipped_: pd.DataFrame | None = None) -> dict[str, str]:
    """Every number the chapter's text quotes, as text ("n/a" where the records lack it; the latest record wins where
    several measured an arm): per pick ``baseline → arm`` (key), the delta with its noise (``_delta``) and the
    verdict (``_verdict``: "larger than" / "within"); the baseline's drift between its starts (``vf_drift_*``: the 7B
    records; ``vf_spec_drift_*``: the spec group's small model) and its throughput per concurrency; KV sizes, weights and server start seconds; the quantized GEMM kernel, attention backend and async
    scheduling each arm's server chose (from ``servers_``, :func:`servers` of the same records); the speculative
    numbers (:func:`spec_statements`); which arms have been measured, which were skipped (``skipped_``,
    :func:`skipped`) and which not yet."""
    na = "n/a"
    cmp = compare(points) if len(points) else pd.DataFrame(columns=["arm", "workload", "metric", "run_id"])
    out: dict[str, str] = {}
    for arm, wl, m in picks:
        k = glue_key(arm, wl, METRICS[m][0])
        r = cmp[(cmp["arm"] == arm) & (cmp["workload"] == wl) & (cmp["metric"] == m)].sort_values("run_id")
        r = r.iloc[-1] if len(r) else None
        f = FMT[m]
        out[k] = na if r is None else f"{f.format(r['baseline'])} → {f.format(r['value'])}"
        out[k + "_delta"] = na if r is None else f"{r['delta_pct']:+.1f}% (noise ±{r['noise_pct']:.1f}%)"
        out[k + "_verdict"] = na if r is None else ("larger than" if r["larger_than_noise"] else "within")
    text = points["sweep"] == "text" if len(points) else pd.Series(dtype=bool)  # the spec group's small model has its own noise
    noises = {}
    for prefix, frame in (("vf", points[~text] if len(points) else points), ("vf_spec", points[text] if len(points) else points)):
        nz = noises[prefix] = noise(frame) if len(frame) else pd.DataFrame()
        for m, name in (("output_token_throughput", "tput"), ("inter_token_latency_avg", "itl"), ("time_to_first_token_avg", "ttft")):
            x = nz[nz["metric"] == m].dropna(subset=["restart_pct"]) if len(nz) else nz
            w = x.loc[x["restart_pct"].abs().idxmax()] if len(x) else None
            out[f"{prefix}_drift_{name}"] = na if w is None else f"{w['restart_pct']:+.1f}% ({w['workload']})"
            out[f"{prefix}_repeat_{name}"] = na if w is None else f"{x['repeat_spread_pct'].max():.1f}%"
    nz = noises["vf"]  # the 7B baselines' throughput per concurrency
    for wl in ("c1", "c16", "c64"):
        x = nz[(nz["metric"] == "output_token_throughput") & (nz["workload"] == wl)].sort_values("run_id") if len(nz) else nz
        out[glue_key("base", wl, "throughput")] = na if not len(x) else f"{x['mean'].iloc[-1]:,.0f}"
    srv = points.dropna(subset=["kv_cache_tokens"]).drop_duplicates(["run_id", "server"]).sort_values("run_id") if "kv_cache_tokens" in points else pd.DataFrame()
    b = srv[(srv["arm"] == BASELINE) & (srv["sweep"] != "text")] if len(srv) else srv  # the 7B baseline (the spec group serves another model)
    out["vf_kv_baseline"] = " and ".join(f"{v:,.0f}" for v in b[b["run_id"] == b["run_id"].iloc[-1]]["kv_cache_tokens"]) if len(b) else na
    kv = kv_capacity(points) if len(srv) else pd.DataFrame(columns=["arm", "run_id"])
    k7 = kv[kv["run_id"].isin(b["run_id"])] if len(b) else kv.iloc[0:0]
    out["vf_kv_noise"] = f"{k7['kv_noise_pct'].iloc[-1]:.2f}%" if len(k7) else na
    for arm in dict.fromkeys([*(a for a, _, _ in picks), *GROUPS["spec"]]):
        x = kv[kv["arm"] == arm]
        out[glue_key(arm, "kv")] = na if not len(x) else f"{x['kv_cache_tokens'].iloc[-1]:,.0f} ({x['kv_change_pct'].iloc[-1]:+.2f}%)"
        out[glue_key(arm, "kv", "verdict")] = na if not len(x) else ("larger than" if x["larger_than_noise"].iloc[-1] else "within")
    for arm in (BASELINE, *dict.fromkeys(a for a, _, _ in picks)):
        x = srv[srv["arm"] == arm] if len(srv) and "weights_gib" in srv else pd.DataFrame()
        x = x[x["run_id"] == x["run_id"].iloc[-1]].dropna(subset=["weights_gib"]) if len(x) else x
        out[glue_key(arm, "weights")] = na if not len(x) else f"{x['weights_gib'].mean():.2f}"
    sv = servers_ if servers_ is not None and len(servers_) else pd.DataFrame(columns=["run_id", "arm", *SERVER_FACTS])
    for arm in dict.fromkeys(a for a, _, _ in picks):
        x = sv[sv["arm"] == arm].sort_values("run_id").dropna(subset=["linear_kernel"])
        out[glue_key(arm, "kernel")] = x["linear_kernel"].iloc[-1] if len(x) else na
    for arm in (BASELINE, *GROUPS["kernels"], *GROUPS["spec"]):
        x = sv[sv["arm"] == arm].sort_values("run_id")
        a = x.dropna(subset=["attention_backend"])
        fa = a.dropna(subset=["flash_attn_version"])
        out[glue_key(arm, "attention")] = na if not len(a) else a["attention_backend"].iloc[-1] + (f" (FlashAttention {int(fa['flash_attn_version'].iloc[-1])})" if len(fa) else "")
        y = x.dropna(subset=["async_scheduling"])
        out[glue_key(arm, "async")] = y["async_scheduling"].iloc[-1] if len(y) else na
    out |= spec_statements(points)
    for server in (f"{BASELINE}.1", f"{BASELINE}.2", *dict.fromkeys(a for a, _, _ in picks)):
        x = srv[srv["server"] == server] if len(srv) and "start_s" in srv else pd.DataFrame()
        out[glue_key("start", server)] = na if not len(x) else f"{x['start_s'].iloc[-1]:.0f}"
    runs = sorted(points["run_id"].unique()) if len(points) else []
    out["vf_runs"] = ", ".join(runs) or na
    out["vf_gpu"] = ", ".join(dict.fromkeys(points["gpu"])) if len(points) else na
    measured = [a for a in ARMS if len(cmp) and a in set(cmp["arm"])]
    sk = skipped_[~skipped_["arm"].isin(measured)] if skipped_ is not None and len(skipped_) else pd.DataFrame(columns=SKIPPED_COLUMNS)
    done = set(measured) | set(sk["arm"])
    out["vf_measured"] = ", ".join(measured) or "none"
    out["vf_skipped"] = "; ".join(f"{r.arm} ({r.reason}; {r.run_id})" for r in sk.drop_duplicates("arm", keep="last").itertuples()) or "none"
    out["vf_pending"] = "; ".join(f"{', '.join(n for n in GROUPS[g] if n not in done)} ({g})" for g in MAIN_GROUPS if any(n not in done for n in GROUPS[g])) or "none"
    return out


def notebook_params() -> dict:
    """Parameters of notebooks/vllm_features.ipynb."""
    from llmstudy.core.params import Param, known_model
    from llmstudy.chapters.serve_sweeps import _budget_ok, _positive_ints, _run_ids_ok

    def arms_ok(v):
        try:
            resolve(v)
        except ValueError as e:
            return str(e)
        return None

    return {
        "mode": Param(str, "analyze", "analyze: render the run records (CPU); run: measure on this machine's vLLM and write a record", choices=("analyze", "run")),
        "run_ids": Param(list, [], "analyze mode: records to show (empty = every record of the experiment)", check=_run_ids_ok),
        "arms": Param(str, "core", "run mode: groups (core, quant, kernels, spec, extra) and/or arm names, comma-separated", check=arms_ok),
        "run_id": Param(str, "", "run mode: the new record's id (empty = timestamp); reuse it to resume", check=lambda v: None if v == "" or R.RUN_ID_RE.match(v) else "letters, digits, '.', '_', '-'"),
        "budget_s": Param((float, int, type(None)), None, "run mode: start nothing that would end after this many seconds (resume with the same run_id)", check=_budget_ok),
        "model": Param(str, "llama-2-7b", "run mode: the 7B arms' model config", check=known_model),
        "repeats": Param(int, 2, "run mode: repeats of every workload on every server", check=lambda v: None if v >= 2 else "must be >= 2 (the run-to-run spread needs two)"),
        "concurrency": Param(list, [1, 16, 64], "run mode: client concurrencies of the standard workload", check=_positive_ints),
    }
