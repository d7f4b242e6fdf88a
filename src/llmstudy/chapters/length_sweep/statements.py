"""The chapter's records and every number its page glues: :func:`load` reads the records once, :func:`statements`
turns them into the page's sentences (unit-tested without papermill)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from llmstudy.chapters import serve_sweeps as SP
from llmstudy.chapters.length_sweep.params import CLI_KIND, EXPERIMENT, PARAMS
from llmstudy.core import models as M
from llmstudy.core.params import validate
from llmstudy.serving import roofline as RF


def ids(df: pd.DataFrame) -> list[str]:
    return sorted(df.run_id.unique()) if len(df) else []


@dataclass
class Records:
    """The records the page shows: the max_model_len points (``mml``), the input/output grid (``io``), their logs."""

    P: dict
    res: pd.DataFrame
    mml: pd.DataFrame
    io: pd.DataFrame
    info: pd.DataFrame = field(default_factory=pd.DataFrame)
    logs: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def have_mml(self) -> bool:
        return bool(len(self.mml) and (self.mml.outcome == "ok").any())

    @property
    def have_io(self) -> bool:
        return bool(len(self.io) and (self.io.outcome == "ok").any())

    @property
    def runs_mml(self) -> str:
        return ", ".join(ids(self.mml)) or "none"

    @property
    def runs_io(self) -> str:
        return ", ".join(ids(self.io)) or "none"

    def ok_mml(self) -> pd.DataFrame:
        okm = self.mml[self.mml.outcome == "ok"].copy()
        okm["concurrency "] = okm.concurrency.astype(str)
        return okm

    def ok_io(self, concurrency: int = 1) -> pd.DataFrame:
        """The grid's ok points at one concurrency, with ``in + out`` and label columns."""
        if not self.have_io:
            return self.io.iloc[0:0]
        d = self.io[(self.io.outcome == "ok") & (self.io.concurrency == concurrency)].copy()
        d["in + out"] = d.input_len + d.output_len
        d["input_len "] = d.input_len.astype(str)
        d["output_len "] = d.output_len.astype(str)
        return d

    def mml_servers(self) -> pd.DataFrame:
        """One row per max_model_len server start from the logs, with its outcome and the logged capacity ratio."""
        logs, mml = self.logs, self.mml
        srv = logs[logs.server.isin(mml.server.unique())] if len(logs) and len(mml) else pd.DataFrame()
        if len(srv):
            srv = srv.reindex(columns=list(dict.fromkeys([*srv.columns, "kv_cache_tokens", "available_kv_gib", "max_concurrency"])))
            srv["outcome"] = srv.failure.map(lambda f: "refused" if f else "ok")
            srv["tokens / max_model_len"] = srv.kv_cache_tokens / srv.max_model_len
            srv["reason"] = srv.failure.str.slice(0, 130)
        return srv


def load(P: dict | None = None, run_ids=()) -> Records:
    """The records of ``P["model"]`` (or ``run_ids``, or ``P["run_ids"]``) split into the two sweeps."""
    P = validate(PARAMS, P or {})
    res = SP.load(EXPERIMENT, list(run_ids) or list(P["run_ids"]), model=P["model"])
    mml = SP.select(res, sweep="max_model_len", max_model_len=P["max_model_lens"], concurrency=P["concurrency"], input_len=P["input_len"], output_len=P["output_len"])
    io = SP.select(res, sweep="io", input_len=P["io_input_lens"], output_len=P["io_output_lens"], concurrency=P["io_concurrency"])
    r = Records(P, res, mml, io)
    if len(res):
        r.info, r.logs = SP.runs_info(EXPERIMENT, ids(res)), SP.server_logs(EXPERIMENT, ids(res))
    return r


def _measured(r: Records) -> dict[str, str]:
    fmt, out = SP.fmt, {}
    if r.have_mml:
        okm = r.ok_mml()
        c64 = okm[okm.concurrency == okm.concurrency.max()].output_token_throughput
        t64 = okm[okm.concurrency == okm.concurrency.max()].time_to_first_token_avg
        out.update(ls_tput_spread=f"{100 * (c64.max() / c64.min() - 1):.1f}%", ls_lens=", ".join(f"{v:,}" for v in sorted(okm.max_model_len.unique())),
                   ls_cmax=str(okm.concurrency.max()), ls_ttft_lo=f"{t64.min():.0f}", ls_ttft_hi=f"{t64.max():.0f}")
    else:
        out.update(dict.fromkeys(("ls_tput_spread", "ls_lens", "ls_cmax", "ls_ttft_lo", "ls_ttft_hi"), SP.NA))
    srv = r.mml_servers()
    if len(srv):
        kv = srv.kv_cache_tokens.dropna()
        out["ls_kv_tokens"] = SP.NA if kv.empty else f"{kv.iloc[0]:,.0f}" if kv.nunique() == 1 else f"{kv.min():,.0f}–{kv.max():,.0f}"
        out["ls_kv_gib"] = fmt(SP.first(srv, "available_kv_gib"), "{:.1f}")
        refusal = srv.failure[srv.failure != ""]
        out["ls_refusal"] = refusal.iloc[0].split(". To allow")[0] if len(refusal) else SP.NA
    else:
        out.update(dict.fromkeys(("ls_kv_tokens", "ls_kv_gib", "ls_refusal"), SP.NA))
    okio = r.ok_io(1)
    if r.have_io:
        one = okio[okio.concurrency == 1]
        keys = ["slope_us_per_token", "roofline_slope_us_per_token", "intercept_ms", "points"]
        try:
            fit = SP.itl_context_fit(okio, r.P["model"]) if (one.input_len + one.output_len / 2).nunique() > 1 else dict.fromkeys(keys)
        except SP.RooflineUnsupported:
            fit = dict.fromkeys(keys)
        out.update(ls_itl_range=f"{okio.inter_token_latency_avg.min():.2f}–{okio.inter_token_latency_avg.max():.2f}", ls_slope=fmt(fit["slope_us_per_token"], "{:.2f}"),
                   ls_roof_slope=fmt(fit["roofline_slope_us_per_token"], "{:.2f}"), ls_bw_tbs=fmt(SP.known_bandwidth(okio.gpu.iloc[0]) / 1e12, "{:.2f}"),
                   ls_intercept=fmt(fit["intercept_ms"], "{:.2f}"), ls_fit_points=fmt(fit["points"], "{}"),
                   ls_ttft_128=fmt(okio[okio.input_len == okio.input_len.min()].time_to_first_token_avg.mean(), "{:.0f}"),
                   ls_ttft_max_in=fmt(okio.input_len.max(), "{:,}"),
                   ls_ttft_p99_max=fmt(okio[okio.input_len == okio.input_len.max()].time_to_first_token_p99.max(), "{:.0f}"))
    else:
        out.update(dict.fromkeys(("ls_bw_tbs", "ls_itl_range", "ls_slope", "ls_roof_slope", "ls_intercept", "ls_fit_points", "ls_ttft_128", "ls_ttft_max_in", "ls_ttft_p99_max"), SP.NA))
    out.update(_c16(r))
    return out


def c16_against_c1(r: Records) -> pd.DataFrame:
    """The concurrency-16 grid points next to the concurrency-1 point of the same lengths: throughput gain, ITL ratio."""
    io16 = r.ok_io(16)
    one = r.io[(r.io.outcome == "ok") & (r.io.concurrency == 1)][["input_len", "output_len", "output_token_throughput", "inter_token_latency_avg"]]
    both = io16.merge(one, on=["input_len", "output_len"], suffixes=("", "_c1"))
    both["gain"] = both.output_token_throughput / both.output_token_throughput_c1
    both["itl_ratio"] = both.inter_token_latency_avg / both.inter_token_latency_avg_c1
    return both


def _c16(r: Records) -> dict[str, str]:
    io16, fmt = r.ok_io(16), SP.fmt
    if not len(io16):
        return {f"ls16_{k}": SP.NA for k in ("tput_lo", "tput_hi", "gain_lo", "gain_hi", "itl_lo", "itl_hi", "itl_hi_at", "ttft_max", "ttft_max_in", "runs")}
    both = c16_against_c1(r)
    at = both.loc[both.itl_ratio.idxmax()] if len(both) else None
    return {
        "ls16_tput_lo": fmt(io16.output_token_throughput.min()), "ls16_tput_hi": fmt(io16.output_token_throughput.max()),
        "ls16_gain_lo": fmt(both.gain.min() if len(both) else None, "{:.1f}"), "ls16_gain_hi": fmt(both.gain.max() if len(both) else None, "{:.1f}"),
        "ls16_itl_lo": fmt(both.itl_ratio.min() if len(both) else None, "{:.2f}"), "ls16_itl_hi": fmt(both.itl_ratio.max() if len(both) else None, "{:.2f}"),
        "ls16_itl_hi_at": fmt(None if at is None else at["input_len"], "{:,}") + " input and " + fmt(None if at is None else at["output_len"], "{:,}") + " output tokens",
        "ls16_ttft_max": fmt(io16.time_to_first_token_avg.max()), "ls16_ttft_max_in": fmt(io16.loc[io16.time_to_first_token_avg.idxmax(), "input_len"], "{:,}"),
        "ls16_runs": ", ".join(ids(io16)),
    }


def kv_bytes(model: str) -> tuple[str, str]:
    """KV bytes per token of the model's cache and how they are made up (a prediction from the config), or why it is
    not modelled."""
    try:
        return f"{RF.kv_bytes_per_token(model):,}", RF.kv_formula(model)
    except RF.RooflineUnsupported as e:
        return f"not modelled ({e})", "not modelled"


def statements(records: Records, model: str | None = None) -> dict[str, str]:
    """Every value the page glues (key -> text). Measured values come from ``model``'s records only; a model without
    any record gets, for each of them, the "not measured" sentence with the command that measures it. The KV bytes
    per token are a prediction from the config, the same with or without records."""
    model = model or records.P["model"]
    out = _measured(records)
    if not len(records.res):
        out = SP.unmeasured(out, set(out), model, CLI_KIND)
    kv, formula = kv_bytes(model)
    out.update({"ls_model": M.title(model), "ls_kv_bytes": kv, "ls_kv_formula": formula})
    out.update(SP.claim_statements(EXPERIMENT, model))
    return out
