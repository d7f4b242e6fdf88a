"""What the two serving chapters share (``batch_size_sweep``: max_num_seqs; ``length_sweep``: max_model_len and
input/output lengths): their common parameters, loading and selecting records, server-log tables, derived tables
(saturation, the decode roofline against measured ITL), formatting, the fork's "not measured" sentences and the
panel figure. Each chapter's own spec, plan, statements and figures are in its package.

Everything here reads run records written by :func:`llmstudy.serving.sweep.run_sweep`; nothing is measured.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pandas as pd

from llmstudy.core import models as M
from llmstudy.core import records as R
from llmstudy.core.book import not_measured
from llmstudy.core.params import Param, known_model, positive
from llmstudy.serving import roofline as RF
from llmstudy.serving.logs import engine_stats, failure_reason, parse_startup_log  # noqa: F401 - re-exported
from llmstudy.serving.roofline import RooflineUnsupported, decode_floor, known_bandwidth  # noqa: F401 - re-exported

# --- reference numbers that are NOT run records (shown labelled, never mixed into the measured tables) ---------
# Probes on the lent H100 80GB HBM3 (2026-11-21): a device-to-device copy (bytes/s), and vLLM 0.25.0 with its
# defaults, the same Llama-2-7B architecture with random weights, `vllm bench serve` random 512 in / 256 out,
# --ignore-eos, max-model-len 4096.
PROBE_H100 = {"copy_bandwidth": 3.0e12, "kv_cache_tokens": 121_424, "available_kv_gib": 59.3, "weights_gib": 12.55, "c1_itl_ms": 6.11, "c1_tok_s": 162.0, "c16_itl_ms": 8.16, "c16_tok_s": 1_875.0, "c16_ttft_ms": 100.0}
# Published in the article (Fixstars 2026, ch. 6; 4x H100 80GB PCIe): Triton + TensorRT-LLM serving ELYZA-7B with
# int4 AWQ weights and int8 KV cache, streaming, 512 tokens in; and vLLM 0.11.0 with a GPTQ 4-bit model, c=16.
ARTICLE = {
    "triton_c1": {"ttft_ms": 14.00, "ttst_ms": 6.09, "itl_ms": 5.83, "per_user_tok_s": 173.18, "tok_s": 171.29, "latency_ms": 1_398.62, "osl": 240},
    "triton_c2": {"ttft_ms": 1_364.90, "itl_ms": 5.81, "tok_s": 172.09},
    "c16": {"vllm_gptq_tok_s": 813.81, "triton_tok_s": 1_156.97},
}
GENAI_PERF_METRICS = ("time_to_first_token", "time_to_second_token", "inter_token_latency", "output_token_throughput_per_user", "request_latency", "output_sequence_length", "input_sequence_length")


# --- parameters both chapters share (each chapter's spec: batch_size_sweep.params, length_sweep.params) -----------


def _budget_ok(v) -> str | None:
    return None if v is None or v > 0 else "must be > 0 seconds or None"


def _run_ids_ok(v) -> str | None:
    bad = [x for x in v if not isinstance(x, str) or not R.RUN_ID_RE.match(x)]
    return f"not run ids: {bad}" if bad else None


def _utilization_ok(v) -> str | None:
    return None if v is None or 0 < v <= 1 else "must be in (0, 1] or None"


STUDY_MODEL = "llama-2-7b"  # the model the recorded sweeps measured


def _model_ok(v) -> str | None:
    """A known model whose config describes an architecture exactly (a missing field is named, never filled in)."""
    from llmstudy.core import arch as A

    msg = known_model(v)
    if msg:
        return msg
    try:
        A.validate(M.raw_config(v))
    except A.ConfigError as e:
        return str(e)
    return None


def common_params() -> dict[str, Param]:
    """The parameters of both serving chapters (mode, model, records, workload, server dtype and flags)."""
    return {
        "mode": Param(str, "analyze", "analyze: render the run records (CPU); run: sweep on this machine's vLLM and write a record", choices=("analyze", "run")),
        "model": Param(str, STUDY_MODEL, "model config (name under data/models or a path to a config.json)", check=_model_ok),
        "run_id": Param(str, "", "run mode: the new record's id (empty = timestamp); reuse it to resume an interrupted sweep", check=lambda v: None if v == "" or R.RUN_ID_RE.match(v) else "letters, digits, '.', '_', '-'"),
        "run_ids": Param(list, [], "analyze mode: records to show (empty = every record of the experiment)", check=_run_ids_ok, item=str),
        "budget_s": Param((float, int, type(None)), None, "run mode: stop starting new work after this many seconds (resume with the same run_id)", check=_budget_ok),
        "input_len": Param(int, 512, "prompt tokens per request", check=positive),
        "output_len": Param(int, 256, "generated tokens per request (ignore_eos: exact)", check=positive),
        "dtype": Param(str, "bfloat16", "run mode: vLLM --dtype (the CPU build wants bfloat16 or float32)", choices=("bfloat16", "float16", "float32", "auto")),
        "enforce_eager": Param(bool, False, "run mode: vLLM --enforce-eager (no CUDA graphs / compile; faster start on CPU)"),
        "gpu_memory_utilization": Param((float, type(None)), None, "run mode: vLLM --gpu-memory-utilization (None: vLLM's default)", check=_utilization_ok),
        "quantization": Param((str, type(None)), None, "run mode: vLLM --quantization (None: what the config says)"),
    }


def server_settings(P: dict) -> dict:
    """The server settings every point of a chapter's sweep shares, from its validated parameters."""
    return {k: P[k] for k in ("dtype", "enforce_eager", "gpu_memory_utilization", "quantization")}


def require_vllm(python: str | None = None) -> str:
    """The Python that runs vLLM (``$LLMSTUDY_VLLM_PYTHON`` or this one); a clear error before any work if it lacks vLLM."""
    py = python or os.environ.get("LLMSTUDY_VLLM_PYTHON") or sys.executable
    p = subprocess.run([py, "-c", "import vllm"], capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        raise RuntimeError(f"run mode needs vLLM, and {py} cannot import it. On a GPU: pip install -r envs/vllm-serving.txt; on a CPU: bash scripts/setup_vllm_cpu.sh and set LLMSTUDY_VLLM_PYTHON=.venv-vllm/bin/python.\n{p.stderr[-500:]}")
    return py


def run_mode(run, P: dict) -> list[str]:
    """A chapter's run mode from its notebook: a clear error without vLLM, then ``run(P)``; returns the new record's
    id ([] when the time budget stopped it: finished points are kept, rerun with the same run_id to resume)."""
    from llmstudy.serving.sweep import SweepIncomplete

    require_vllm()  # a clear error before any server starts
    try:
        path = run(P)
    except SweepIncomplete as e:
        print(f"sweep incomplete (finished points are kept): {e}")
        return []
    print(f"new run record: {path}")
    return [path.name]


# --- loading ---------------------------------------------------------------------------------------------------
def load(experiment: str, run_ids=(), table: str = "results", model: str | None = None) -> pd.DataFrame:
    """A table of every record of ``experiment`` (or only ``run_ids``; only ``model``'s), with ``run_id`` and ``gpu`` columns."""
    df = R.results(experiment, table, model=model)
    if len(df) and run_ids:
        df = df[df["run_id"].isin(list(run_ids))].reset_index(drop=True)
    return df


def select(df: pd.DataFrame, **values) -> pd.DataFrame:
    """Rows whose column ``k`` equals ``v`` (or is in ``v`` when a list/tuple is given), for every keyword."""
    if not len(df):
        return df
    keep = pd.Series(True, index=df.index)
    for k, v in values.items():
        keep &= df[k].isin(list(v)) if isinstance(v, (list, tuple, set)) else df[k] == v
    return df[keep].reset_index(drop=True)


def runs_info(experiment: str, run_ids=()) -> pd.DataFrame:
    """One row per record: GPU, commit, the sweep's wall time and start, how many device calls it took, its VLLM_* env."""
    rows = []
    for rec in R.load_runs(experiment):
        if run_ids and rec.run_id not in run_ids:
            continue
        m = rec.manifest
        env = m["parameters"].get("vllm_env")
        rows.append({
            "run_id": rec.run_id, "gpu": rec.gpu_name(), "git": (m["git"].get("sha") or "")[:10],
            "sweep_started_utc": m.get("sweep_started_utc", m["started_utc"]), "ended_utc": m["ended_utc"],
            "sweep_wall_s": m.get("sweep_wall_s"), "calls": len(list((rec.path / "logs").glob("console-*.txt"))) or 1,
            "points": m["parameters"].get("points"), "vllm": m["packages"].get("vllm"),
            "VLLM_ALLOW_LONG_MAX_MODEL_LEN": "not recorded" if env is None else env.get("VLLM_ALLOW_LONG_MAX_MODEL_LEN", "unset"),
            "notes": m.get("notes", ""),
        })
    return pd.DataFrame(rows)


def sweep_runs(experiment: str, model: str, max_num_seqs=None, root=None) -> list[str]:
    """Run ids of ``model``'s records that ran this sweep's plan: the same max_num_seqs list (``None`` in a record means
    the CLI default, the full plan). Single-setting comparison records (e.g. 4-bit weights at max_num_seqs 16) are
    left out, so they never mix into the main sweep's figures."""
    out = []
    for rec in R.load_runs(experiment, root):
        got = rec.manifest["parameters"].get("max_num_seqs")
        if R.run_model(rec) == model and (max_num_seqs is None or got is None or sorted(got) == sorted(max_num_seqs)):
            out.append(rec.run_id)
    return out


def fixed_batch_table(experiment: str, models, max_num_seqs: int = 16, concurrency=(1, 16)) -> pd.DataFrame:
    """One row per record of ``models`` that served max_num_seqs with every listed concurrency: what the engine made of
    the weights (resolved quantization method, GEMM kernel, weight GiB, KV tokens, prefix caching, all read from the
    server log) and the speed at each concurrency (ITL, TTFT, output tok/s). Compares weight formats like for like.
    Only vLLM's points and server logs count (an engine-comparison record also holds another engine's)."""
    rows = []
    for rec in R.load_runs(experiment):
        if R.run_model(rec) not in list(models):
            continue
        p = rec.manifest["parameters"]
        res = rec.table("results")
        res = res[(res.max_num_seqs == max_num_seqs) & (res.outcome == "ok")]
        if "engine" in res:
            res = res[res.engine.fillna("vllm") == "vllm"]
        if not set(concurrency) <= set(res.concurrency):
            continue
        logs = sorted((rec.path / "logs").glob(f"server-seqs{max_num_seqs}-*.log"))
        facts = parse_startup_log("\n".join(f.read_text(errors="replace") for f in logs))
        row = {"run_id": rec.run_id, "experiment": experiment, "gpu": rec.gpu_name(), "model": R.run_model(rec), "--quantization": p.get("quantization") or "",
               "dtype": p.get("dtype"), "engine quantization": facts.get("quantization"), "GEMM kernel": facts.get("linear_kernel", "unquantized"),
               "weights GiB": facts.get("weights_gib"), "KV tokens": facts.get("kv_cache_tokens"), "prefix caching": facts.get("prefix_caching")}
        for c in concurrency:
            r = res[res.concurrency == c].iloc[0]
            row.update({f"c{c} ITL ms": r.inter_token_latency_avg, f"c{c} TTFT ms": r.time_to_first_token_avg, f"c{c} output tok/s": r.output_token_throughput})
        rows.append(row)
    return pd.DataFrame(rows)


# --- server logs -------------------------------------------------------------------------------------------------
def server_logs(experiment: str, run_ids=()) -> pd.DataFrame:
    """One row per server start found in the records' ``logs/server-*.log``: startup facts, load seen, failure."""
    rows = []
    for rec in R.load_runs(experiment):
        if run_ids and rec.run_id not in run_ids:
            continue
        for f in sorted((rec.path / "logs").glob("server-*.log")):
            text = f.read_text(errors="replace")
            m = re.match(r"server-(.+)\.(\d+)\.log$", f.name)
            facts = {k: v for k, v in parse_startup_log(text).items() if k != "lines"}
            st = engine_stats(text)
            rows.append({
                "run_id": rec.run_id, "server": m.group(1) if m else f.stem, "start": int(m.group(2)) if m else 1, **facts,
                "max_running": st["running"].max() if len(st) else np.nan, "max_waiting": st["waiting"].max() if len(st) else np.nan,
                "max_kv_usage_pct": st["kv_usage_pct"].max() if len(st) else np.nan, "max_prefix_hit_pct": st["prefix_hit_pct"].max() if len(st) else np.nan,
                "failure": failure_reason(text),
            })
    df = pd.DataFrame(rows)
    if len(df):
        parsed = df["server"].str.extract(r"seqs(\d+)-len(\d+)").astype(float)
        df.insert(2, "max_num_seqs", parsed[0].astype("Int64"))
        df.insert(3, "max_model_len", parsed[1].astype("Int64"))
    return df


# --- derived tables -----------------------------------------------------------------------------------------------
def kv_batch_limit(kv_cache_tokens: float, input_len: float, output_len: float) -> float:
    """Sequences the KV cache holds at the decode's mean context (input + output/2): the batch cap beyond max_num_seqs."""
    return kv_cache_tokens / (input_len + output_len / 2)


def saturation(results: pd.DataFrame) -> pd.DataFrame:
    """Per record and max_num_seqs: the throughput plateau (mean over concurrency >= max_num_seqs) against
    batch / ITL (batch = min(max_num_seqs, KV-cache limit), ITL = mean on the plateau), the peak, and the last point."""
    ok = results[results["outcome"] == "ok"]
    rows = []
    for (run, s), g in ok.groupby(["run_id", "max_num_seqs"], sort=True):
        sat = g[g["concurrency"] >= s]
        peak = g.loc[g["output_token_throughput"].idxmax()]
        last = g.loc[g["concurrency"].idxmax()]
        kv = g["kv_cache_tokens"].iloc[0] if "kv_cache_tokens" in g else np.nan
        limit = kv_batch_limit(kv, g["input_len"].iloc[0], g["output_len"].iloc[0]) if pd.notna(kv) else np.inf
        batch = min(float(s), limit)
        itl = sat["inter_token_latency_avg"].mean() if len(sat) else np.nan
        plateau = sat["output_token_throughput"].mean() if len(sat) else np.nan
        rows.append({
            "run_id": run, "max_num_seqs": int(s), "plateau_points": len(sat), "plateau_tok_s": plateau, "plateau_itl_ms": itl,
            "kv_batch_limit": limit, "batch": batch, "batch_over_itl_tok_s": batch * 1e3 / itl, "plateau_vs_batch_over_itl": plateau / (batch * 1e3 / itl),
            "peak_tok_s": peak["output_token_throughput"], "peak_concurrency": int(peak["concurrency"]),
            "last_tok_s": last["output_token_throughput"], "last_concurrency": int(last["concurrency"]),
        })
    return pd.DataFrame(rows)


def roofline(results: pd.DataFrame, model: str, bandwidth: float | None = None) -> pd.DataFrame:
    """Measured ITL against the decode floor per ok point; batch = min(concurrency, max_num_seqs, KV-cache limit),
    context = input + output/2. ``floor_over_itl`` = 1.0 would be decoding at the memory-bandwidth roof."""
    out = []
    for _, r in results[results["outcome"] == "ok"].iterrows():
        limit = kv_batch_limit(r["kv_cache_tokens"], r["input_len"], r["output_len"]) if pd.notna(r.get("kv_cache_tokens")) else np.inf
        b = min(float(r["concurrency"]), float(r["max_num_seqs"]) if pd.notna(r["max_num_seqs"]) else np.inf, limit)
        rf = decode_floor(model, r["gpu"], b, r["input_len"] + r["output_len"] / 2, bandwidth=bandwidth or known_bandwidth(r["gpu"]))
        itl = r["inter_token_latency_avg"]
        out.append({"run_id": r["run_id"], "max_num_seqs": r["max_num_seqs"], "concurrency": r["concurrency"], "input_len": r["input_len"], "output_len": r["output_len"], "batch": b,
                    "itl_floor_ms": rf["itl_floor_ms"], "itl_ms": itl, "floor_over_itl": rf["itl_floor_ms"] / itl,
                    "decode_tok_s_bound": rf["tokens_per_s_bound"], "decode_tok_s": b * 1e3 / itl})
    return pd.DataFrame(out)


def metric_table(metrics: pd.DataFrame, point_ids, names=GENAI_PERF_METRICS, stats=("avg", "p50", "p90", "p99")) -> pd.DataFrame:
    """genai-perf's per-request metrics (avg and percentiles) for some points, one row per point and metric."""
    m = metrics[metrics["point_id"].isin(list(point_ids)) & metrics["metric"].isin(list(names)) & metrics["stat"].isin(list(stats))]
    t = m.pivot_table(index=["run_id", "point_id", "metric", "unit"], columns="stat", values="value", aggfunc="first")[list(stats)]
    order = {n: i for i, n in enumerate(names)}
    return t.reset_index().sort_values(["run_id", "point_id", "metric"], key=lambda s: s.map(order) if s.name == "metric" else s).reset_index(drop=True)


def itl_context_fit(results: pd.DataFrame, model: str, bandwidth: float | None = None) -> dict:
    """Least-squares ITL = a + b x mean context over single-sequence points, and the roofline's slope
    (KV bytes per token / bandwidth) for comparison: what one more token of context costs per decode step."""
    ok = results[(results["outcome"] == "ok") & (results["concurrency"] == 1)]
    ctx = ok["input_len"] + ok["output_len"] / 2
    if ctx.nunique() < 2:
        raise ValueError("itl_context_fit needs concurrency-1 points at two or more context lengths")
    b, a = np.polyfit(ctx.astype(float), ok["inter_token_latency_avg"].astype(float), 1)
    bw = bandwidth or known_bandwidth(ok["gpu"].iloc[0])
    return {"points": len(ok), "intercept_ms": a, "slope_us_per_token": b * 1e3, "roofline_slope_us_per_token": RF.kv_slope_bytes(model, float(ctx.mean())) / bw * 1e6}


# --- statements: formatting, claims and the fork's "not measured" -------------------------------------------------
NA = "—"  # a missing value on the page (the tables' placeholder too)


def val(df: pd.DataFrame, col: str, **where):
    """The single value of ``col`` in the rows matching ``where`` (None when absent)."""
    rows = select(df, **where) if len(df) else df
    return rows[col].iloc[0] if len(rows) else None


def fmt(v, spec: str = "{:,.0f}") -> str:
    """``v`` formatted, or n/a when it is missing."""
    return NA if v is None or pd.isna(v) else spec.format(v)


def first(df: pd.DataFrame, col: str):
    """The first non-missing value of ``col`` (None when the column is absent or empty: e.g. a CPU server's log)."""
    return df[col].dropna().iloc[0] if col in df and df[col].notna().any() else None


def is_study_model(model: str) -> bool:
    return str(model) == STUDY_MODEL


def claim_statements(chapter: str, model: str) -> dict[str, str]:
    """``claim_<id>``: the sentence of every headline claim of ``chapter`` (llmstudy.publishing.claims), naming the
    models its records come from when the page is rendered for another model."""
    import os

    from llmstudy.publishing import claims as C

    other = None if is_study_model(model) else str(model)
    other = other or os.environ.get(C.FORK_ENV) or None
    out = {}
    for c in C.CLAIMS:
        if c.chapter == chapter:
            out[f"claim_{c.id}"] = c.sentence(None, model=other, verdict=c.evaluate(None))
    return out


def sweep_command(kind: str, model: str) -> str:
    """The command that measures this chapter for ``model`` on a GPU runner (vLLM installed)."""
    return f"llmstudy sweep {kind} --model {model}"


def unmeasured(values: dict[str, str], keys, model: str, kind: str) -> dict[str, str]:
    """For a model without a record of its own: every measured key (``keys``) says so, with the command that measures
    it; predictions (other keys) stay."""
    sentence = not_measured(M.title(model), sweep_command(kind, model))
    return {k: (sentence if k in keys else v) for k, v in values.items()}


def roofline_prediction(model: str, gpu: str, batch: float, context: float) -> str:
    """The decode floor of ``model`` on ``gpu`` as a sentence, or the reason it is not modelled."""
    try:
        f = decode_floor(model, gpu, batch, context)
    except RooflineUnsupported as e:
        return f"no decode roofline: {e}"
    return (f"{f['itl_floor_ms']:.2f} ms per decode step at batch {batch:g} and {context:,.0f} tokens of context "
            f"({f['weight_bytes'] / 1e9:.2f} GB of weights + {batch * RF.kv_bytes_read(model, context) / 1e9:.3f} GB of KV at {f['bandwidth'] / 1e12:.2f} TB/s)")


# --- figures -------------------------------------------------------------------------------------------------------
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
FAILED_COLOR = "#D55E00"  # Okabe–Ito vermillion: failed / refused points


def _level_key(v):
    try:
        return (0, float(v))
    except (TypeError, ValueError):
        return (1, str(v))


def hue_levels(df: pd.DataFrame, hue: str) -> list:
    """The values of ``hue`` in numeric order (a hue column may hold numbers as strings: "4" < "16" < "256")."""
    return sorted(df[hue].dropna().unique(), key=_level_key)


def level_styles(levels) -> dict:
    """One (colour, marker) per level: the Okabe–Ito palette (every pair distinguishable, colour-blind safe) and a
    marker each, so that neighbouring levels (16 and 64) never look alike, in print or in greyscale."""
    from llmstudy.publishing import figstyle as FS

    return {lv: (FS.color(i), MARKERS[i % len(MARKERS)]) for i, lv in enumerate(levels)}


def log2_axis(ax, values) -> None:
    """A base-2 log x axis with the values as plain tick labels (powers of two only when crowded or uneven)."""
    ticks = sorted({float(t) for t in values})
    ax.set_xscale("log", base=2)
    if len(ticks) > 10 or any(int(t) & (int(t) - 1) for t in ticks):
        lo, hi = int(np.floor(np.log2(min(ticks)))), int(np.ceil(np.log2(max(ticks))))
        ticks = [2**k for k in range(lo, hi + 1)]
    ax.set_xticks(ticks, [f"{int(t):,}" for t in ticks])
    ax.minorticks_off()


def label_line_ends(ax, lines: dict, fmt_label=str) -> None:
    """Write each line's label at its right end (in the line's colour), so the figure needs no legend."""
    for label, (xs, ys, colour) in lines.items():
        if len(xs):
            ax.annotate(fmt_label(label), (xs[-1], ys[-1]), xytext=(5, 0), textcoords="offset points", va="center", ha="left",
                        fontsize=9, color=colour, fontweight="bold")


def panels(df: pd.DataFrame, x: str, ys: dict[str, str], hue: str, title: str, log2x: bool = False, failed: pd.DataFrame | None = None,
           xlabel: str | None = None, ncols: int = 2, hue_label: str | None = None, height: float = 3.2):
    """A grid of line plots of several metrics against ``x``, one line per ``hue`` value (numeric order, one
    colour and marker each, one legend outside the panels); ``failed`` points are drawn as crosses on each panel's
    x axis (a failure is a result, not a missing point)."""
    import matplotlib.pyplot as plt

    from llmstudy.publishing import figstyle as FS

    levels = hue_levels(df, hue)
    styles = level_styles(levels)
    nrows = -(-len(ys) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(FS.WIDTH_IN, height * nrows + 0.7), squeeze=False)
    for ax, (col, label) in zip(axes.flat, ys.items()):
        for lv in levels:
            g = df[df[hue] == lv].groupby(x, as_index=False)[col].mean().sort_values(x)
            colour, marker = styles[lv]
            ax.plot(g[x], g[col], marker=marker, ms=5, lw=1.6, color=colour, label=str(lv).strip())
        if failed is not None and len(failed):
            ax.scatter(failed[x], np.full(len(failed), 0.03), transform=ax.get_xaxis_transform(), marker="x", color=FAILED_COLOR, s=60, zorder=5,
                       label="failed / refused", clip_on=False)
        if log2x:
            log2_axis(ax, set(df[x]) | (set(failed[x]) if failed is not None and len(failed) else set()))
        ax.set(xlabel=xlabel or x, ylabel=label)
    for ax in axes.flat[len(ys):]:
        ax.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, title=hue_label or hue.strip(), loc="outside right center")
    fig.suptitle(title)
    return fig
