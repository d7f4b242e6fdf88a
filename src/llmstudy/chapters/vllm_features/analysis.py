"""The analysis of the vllm_features records: points, deltas against the baseline, noise, KV capacity, servers."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd

from llmstudy.chapters.vllm_features.plan import ARMS, BASELINE, EXPERIMENT, GROUPS, workload_label  # noqa: F401
from llmstudy.core import records as R

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
        df.insert(2, "record_models", ", ".join(R.run_models(rec)))
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




CHUNKED_ARMS = ("no-chunked-prefill", "mnbt-512")


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

