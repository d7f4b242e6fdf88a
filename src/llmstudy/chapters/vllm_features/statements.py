"""Every number the vllm_features chapter's text quotes, as text: ``statements(points, ...) -> dict[str, str]``."""

from __future__ import annotations

import pandas as pd

from llmstudy.chapters.vllm_features.analysis import (  # noqa: F401
    CHUNKED_ARMS,
    MAIN_GROUPS,
    METRICS,
    NOT_MEASURED,
    SERVER_FACTS,
    SKIPPED_COLUMNS,
    by_repeat,
    compare,
    kv_capacity,
    noise,
    spec_transfer,
    speculation,
)
from llmstudy.chapters.vllm_features.plan import ARMS, BASELINE, GROUPS

# --- the chapter's glued statements -----------------------------------------------------------------------------------
FMT = {"output_token_throughput": "{:,.0f}", "time_to_first_token_avg": "{:,.0f}", "inter_token_latency_avg": "{:.2f}", "chunk_gap_p99_ms": "{:,.0f}"}
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
    models = points.groupby("run_id")["record_models"].first() if len(points) and "record_models" in points else {}
    by_model: dict[str, list[str]] = {}
    for r in runs:  # every record id next to the model it measured
        by_model.setdefault(models.get(r, "") if len(models) else "", []).append(r)
    out["vf_runs"] = "; ".join(", ".join(ids) + (f" ({m})" if m else "") for m, ids in by_model.items()) or na
    out["vf_gpu"] = ", ".join(dict.fromkeys(points["gpu"])) if len(points) else na
    measured = [a for a in ARMS if len(cmp) and a in set(cmp["arm"])]
    sk = skipped_[~skipped_["arm"].isin(measured)] if skipped_ is not None and len(skipped_) else pd.DataFrame(columns=SKIPPED_COLUMNS)
    done = set(measured) | set(sk["arm"])
    out["vf_measured"] = ", ".join(measured) or "none"
    out["vf_skipped"] = "; ".join(f"{r.arm} ({r.reason}; {r.run_id})" for r in sk.drop_duplicates("arm", keep="last").itertuples()) or "none"
    out["vf_pending"] = "; ".join(f"{', '.join(n for n in GROUPS[g] if n not in done)} ({g})" for g in MAIN_GROUPS if any(n not in done for n in GROUPS[g])) or "none"
    return out

