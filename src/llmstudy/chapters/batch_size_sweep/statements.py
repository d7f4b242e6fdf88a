"""The chapter's records and every number its page glues: :func:`load` reads the records once, :func:`statements`
turns them into the page's sentences (unit-tested without papermill)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from llmstudy.chapters import serve_sweeps as SP
from llmstudy.chapters.batch_size_sweep.params import CLI_KIND, EXPERIMENT, PARAMS
from llmstudy.core import models as M
from llmstudy.core.params import validate

STUDY_GPU = "NVIDIA H100 80GB HBM3"  # the GPU the recorded sweeps ran on: the fork's predictions are for it
CAPS = (4, 16, 64, 256)  # the max_num_seqs values the page's sentences name


@dataclass
class Records:
    """The records the page shows, with the tables derived from them (empty frames when there are none)."""

    P: dict
    run_ids: list[str]
    res: pd.DataFrame
    ok: pd.DataFrame
    info: pd.DataFrame = field(default_factory=pd.DataFrame)
    logs: pd.DataFrame = field(default_factory=pd.DataFrame)
    sat: pd.DataFrame = field(default_factory=pd.DataFrame)
    roof: pd.DataFrame = field(default_factory=pd.DataFrame)
    quant: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def have(self) -> bool:
        return len(self.ok) > 0

    @property
    def shown(self) -> list[str]:
        return sorted(self.res.run_id.unique()) if len(self.res) else []

    @property
    def runs(self) -> str:
        return ", ".join(self.shown) if self.shown else "none"

    def table(self, name: str) -> pd.DataFrame:
        return SP.load(EXPERIMENT, self.shown, table=name)


def load(P: dict | None = None, run_ids=()) -> Records:
    """The records of ``P["model"]`` that ran this sweep's plan (or ``run_ids``, or ``P["run_ids"]``)."""
    P = validate(PARAMS, P or {})
    ids = list(run_ids) or list(P["run_ids"]) or SP.sweep_runs(EXPERIMENT, P["model"], P["max_num_seqs"])  # comparison records stay out
    res = SP.select(SP.load(EXPERIMENT, ids, model=P["model"]), max_num_seqs=P["max_num_seqs"], concurrency=P["concurrency"],
                    input_len=P["input_len"], output_len=P["output_len"], max_model_len=P["max_model_len"])
    ok = res[res.outcome == "ok"] if len(res) else res
    r = Records(P, ids, res, ok)
    if len(res):
        r.info, r.logs = SP.runs_info(EXPERIMENT, r.shown), SP.server_logs(EXPERIMENT, r.shown)
    if r.have:
        r.sat = SP.saturation(ok)
        try:
            r.roof = SP.roofline(ok, P["model"])
        except SP.RooflineUnsupported:
            r.roof = pd.DataFrame()
    q = SP.fixed_batch_table(EXPERIMENT, [P["model"], f"{P['model']}-gptq", f"{P['model']}-awq"], max_num_seqs=16, concurrency=(1, 16))
    # the engine comparison's vLLM server served the GPTQ layout on the same workload: its row belongs here too
    qe = SP.fixed_batch_table("engine_comparison", [f"{P['model']}-gptq"], max_num_seqs=16, concurrency=(1, 16))
    r.quant = pd.concat([q, qe], ignore_index=True) if len(qe) else q
    return r


def quant_rows(q: pd.DataFrame, model: str) -> dict:
    """The AWQ record, the bf16 record without prefix caching, with it, the GPTQ records (unquantized, quantized)."""
    pick = (lambda mask: q[mask].iloc[0] if mask.any() else None) if len(q) else (lambda mask: None)
    if not len(q):
        return {"awq": None, "bf16": None, "prefix": None, "gptq": q.reindex(columns=["run_id", "weights GiB"]), "gptq2": None}
    return {
        "bf16": pick((q.model == model) & (q["prefix caching"] == "False")),
        "prefix": pick((q.model == model) & (q["prefix caching"] == "True")),
        "awq": pick(q.model.str.endswith("-awq") & (q["GEMM kernel"] != "unquantized")),
        "gptq": q[q.model.str.endswith("-gptq") & (q["GEMM kernel"] == "unquantized")],
        "gptq2": pick(q.model.str.endswith("-gptq") & (q["GEMM kernel"] != "unquantized")),
    }


def _measured(r: Records) -> dict[str, str]:
    P, sat, ok, roof, fmt, val = r.P, r.sat, r.ok, r.roof, SP.fmt, SP.val
    out: dict[str, str] = {}
    for s in CAPS:
        out[f"bs_plateau_{s}"] = fmt(val(sat, "plateau_tok_s", max_num_seqs=s))
    out["bs_plateau_err"] = f"{100 * (1 - sat.plateau_vs_batch_over_itl.min()):.0f}%" if r.have else SP.NA
    p64, p256 = val(sat, "plateau_tok_s", max_num_seqs=64), val(sat, "plateau_tok_s", max_num_seqs=256)
    out["bs_gain_64_256"] = fmt(None if p64 is None or p256 is None else 100 * (p256 / p64 - 1), "{:.0f}%")
    for s in CAPS:
        g = SP.select(sat, max_num_seqs=s) if r.have else sat
        out[f"bs_drop_{s}"] = fmt(100 * (1 - g.last_tok_s.iloc[0] / g.peak_tok_s.iloc[0]) if len(g) else None, "{:.0f}%")
    c1 = ok[ok.concurrency == 1] if r.have else ok
    out["bs_c1_itl"] = f"{c1.inter_token_latency_avg.min():.2f}–{c1.inter_token_latency_avg.max():.2f}" if len(c1) else SP.NA
    top = max(P["max_num_seqs"])
    c1_roof = val(roof, "floor_over_itl", concurrency=1, max_num_seqs=top) if len(roof) else None
    out["bs_roof_c1_pct"] = fmt(None if c1_roof is None else 100 * c1_roof, "{:.0f}%")
    out["bs_roof_c1_floor"] = fmt(val(roof, "itl_floor_ms", concurrency=1, max_num_seqs=top) if len(roof) else None, "{:.2f}")
    # how the runs were made
    info = r.info
    if len(info):
        srv = r.table("servers")
        out.update(bs_wall_min=f"{info.sweep_wall_s.sum() / 60:.0f}", bs_servers=str(len(srv)), bs_start_s=f"{srv.start_s.mean():.0f}")
    else:
        out.update(dict.fromkeys(("bs_wall_min", "bs_servers", "bs_start_s"), SP.NA))
    # latency and throughput against concurrency
    for c in (4, 8, 256):
        out[f"bs_lat_4_{c}"] = fmt(val(ok, "request_latency_avg", max_num_seqs=4, concurrency=c))
    out["bs_ttft_4_4"] = fmt(val(ok, "time_to_first_token_avg", max_num_seqs=4, concurrency=4))
    out["bs_ttft_4_8"] = fmt(val(ok, "time_to_first_token_avg", max_num_seqs=4, concurrency=8))
    out["bs_tput_16_16"] = fmt(val(ok, "output_token_throughput", max_num_seqs=16, concurrency=16))
    out["bs_tput_4_16"] = fmt(val(ok, "output_token_throughput", max_num_seqs=4, concurrency=16))
    out["bs_itl_256_256"] = fmt(val(ok, "inter_token_latency_avg", max_num_seqs=256, concurrency=256), "{:.1f}")
    out["bs_itl_256_128"] = fmt(val(ok, "inter_token_latency_avg", max_num_seqs=256, concurrency=128), "{:.1f}")
    out["bs_tput_256_128"] = fmt(val(ok, "output_token_throughput", max_num_seqs=256, concurrency=128))
    out["bs_tput_256_256"] = fmt(val(ok, "output_token_throughput", max_num_seqs=256, concurrency=256))
    # the plateau
    kv = SP.first(ok, "kv_cache_tokens") if r.have else None
    out["bs_kv_tokens"] = fmt(kv)
    out["bs_kv_batch"] = fmt(None if kv is None else SP.kv_batch_limit(kv, P["input_len"], P["output_len"]))
    busiest = r.logs.sort_values("max_running").iloc[-1] if len(r.logs) else None
    out["bs_max_running"] = fmt(None if busiest is None else busiest.max_running)
    out["bs_max_waiting"] = fmt(None if busiest is None else busiest.max_waiting)
    out["bs_max_kv"] = fmt(None if busiest is None else busiest.max_kv_usage_pct, "{:.1f}%")
    out["bs_busiest"] = SP.NA if busiest is None else str(busiest.max_num_seqs)
    # the roofline
    if r.have and len(roof):
        bw = SP.PROBE_H100["copy_bandwidth"]
        roof_copy = SP.roofline(ok[ok.concurrency == 1], P["model"], bandwidth=bw)
        out.update(bs_copy_tbs=f"{bw / 1e12:.1f}", bs_roof_c1_copy_pct=f"{100 * roof_copy.floor_over_itl.mean():.0f}%",
                   bs_roof_min=f"{roof.floor_over_itl.min():.2f}", bs_roof_max=f"{roof.floor_over_itl.max():.2f}")
    else:
        out.update(dict.fromkeys(("bs_copy_tbs", "bs_roof_c1_copy_pct", "bs_roof_min", "bs_roof_max"), SP.NA))
    out["bs_tps_s_4_256"] = fmt(val(ok, "tps_streaming_avg", max_num_seqs=4, concurrency=256))
    out["bs_tps_ns_4_256"] = fmt(val(ok, "tps_non_streaming_avg", max_num_seqs=4, concurrency=256))
    out.update(_quant(r))
    return out


def _quant(r: Records) -> dict[str, str]:
    q = quant_rows(r.quant, r.P["model"])
    a, b, pr, g2, gptq = q["awq"], q["bf16"], q["prefix"], q["gptq2"], q["gptq"]

    def at(row, col, spec="{:,.0f}"):
        return SP.fmt(row[col] if row is not None else None, spec)

    both = a is not None and b is not None
    return {
        "bs_q_awq_run": at(a, "run_id", "{}"), "bs_q_awq_kernel": at(a, "GEMM kernel", "{}"), "bs_q_awq_w": at(a, "weights GiB", "{:.2f}"),
        "bs_q_bf16_w": at(b, "weights GiB", "{:.2f}"), "bs_q_awq_kv": at(a, "KV tokens"), "bs_q_bf16_kv": at(b, "KV tokens"),
        "bs_q_awq_itl": at(a, "c1 ITL ms", "{:.2f}"), "bs_q_bf16_itl": at(b, "c1 ITL ms", "{:.2f}"),
        "bs_q_itl_gain": SP.fmt(100 * (1 - a["c1 ITL ms"] / b["c1 ITL ms"]) if both else None, "{:.0f}%"),
        "bs_q_tput_gain": SP.fmt(100 * (a["c16 output tok/s"] / b["c16 output tok/s"] - 1) if both else None, "{:.0f}%"),
        "bs_q_awq_c16": at(a, "c16 output tok/s"), "bs_q_bf16_c16": at(b, "c16 output tok/s"),
        "bs_q_gptq_runs": ", ".join(gptq.run_id) or ("none" if len(r.quant) else SP.NA),
        "bs_q_gptq_w": ", ".join(f"{w:.2f}" for w in gptq["weights GiB"]) or SP.NA,
        "bs_q_gptq2_run": at(g2, "run_id", "{}") + (f" ({g2['experiment']})" if g2 is not None else ""),
        "bs_q_gptq2_kernel": at(g2, "GEMM kernel", "{}"), "bs_q_gptq2_w": at(g2, "weights GiB", "{:.2f}"), "bs_q_gptq2_kv": at(g2, "KV tokens"),
        "bs_q_gptq2_itl": at(g2, "c1 ITL ms", "{:.2f}"), "bs_q_gptq2_c16": at(g2, "c16 output tok/s"),
        "bs_q_pref_run": at(pr, "run_id", "{}"), "bs_q_pref_c16": at(pr, "c16 output tok/s"), "bs_q_pref_ttft": at(pr, "c16 TTFT ms"),
        "bs_q_nopref_ttft": at(b, "c16 TTFT ms"),
        "bs_q_pref_gain": SP.fmt(100 * (pr["c16 output tok/s"] / b["c16 output tok/s"] - 1) if pr is not None and b is not None else None, "{:.1f}%"),
        "bs_q_base_run": at(b, "run_id", "{}"),
    }


def statements(records: Records, model: str | None = None) -> dict[str, str]:
    """Every value the page glues (key -> text). Measured values come from ``model``'s records only; a model without
    any record gets, for each of them, the "not measured" sentence with the command that measures it. Predictions
    (the decode roofline) and published numbers are the same with or without records."""
    model = model or records.P["model"]
    P = records.P
    out = _measured(records)
    if not len(records.res):
        out = SP.unmeasured(out, set(out), model, CLI_KIND)
    ctx = P["input_len"] + P["output_len"] / 2
    out.update({
        "bs_model": M.title(model),
        "bs_mean_ctx": f"{ctx:,.0f}",
        "bs_roof_pred": SP.roofline_prediction(model, STUDY_GPU, 1, ctx),
        "bs_art_gptq": f"{SP.ARTICLE['c16']['vllm_gptq_tok_s']:,.2f}",
    })
    out.update(SP.claim_statements(EXPERIMENT, model))
    return out
