"""The analysis of the engine_comparison records: points, what each server logged, the fairness rules, who wins
where, and the published numbers beside them (always labelled)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from llmstudy.chapters.engine_comparison.plan import EXPERIMENT, MODEL_7B, RULES, WIN_METRICS, FairnessError  # noqa: F401
from llmstudy.core import records as R
from llmstudy.core.paths import data_dir
from llmstudy.serving import loadgen
from llmstudy.serving import logs as VL
from llmstudy.serving import sweep as SB


# --- loading ---------------------------------------------------------------------------------------------------
def _exactness(req: pd.DataFrame, pts: pd.DataFrame) -> pd.DataFrame:
    """Per point: requests recorded, and whether every ok request had exactly the planned prompt/output tokens."""
    if not len(req):
        return pd.DataFrame(columns=["point_id", "requests", "prompts_exact", "outputs_exact"])
    r = req.merge(pts[["point_id", "input_len", "output_len"]], on="point_id")
    ok = r[r["ok"].astype(bool)]
    g = r.groupby("point_id").size().rename("requests").to_frame()
    g["prompts_exact"] = (ok["input_sequence_length"] == ok["input_len"]).groupby(ok["point_id"]).all()
    g["outputs_exact"] = (ok["output_sequence_length"] == ok["output_len"]).groupby(ok["point_id"]).all()
    return g.reset_index()


def _model_name(rec: R.Record) -> str:
    """The record's model as a name: its ``model`` parameter may be a path to a config or a checkpoint folder."""
    return Path(str(R.run_model(rec) or "")).name


def load_points(run_ids=(), root=None, experiment: str = EXPERIMENT, model: str | None = None, part: str | None = None) -> pd.DataFrame:
    """One row per point of the ``engine_comparison`` records (all, or ``run_ids``): the plan, the outcome, the
    metrics (wide), the exactness of its requests, its server's flags, versions and kernels, and the record's GPU,
    model and load tool. ``experiment``/``model``/``part`` read the same sweep made with another chapter's driver
    (e.g. the gpt-oss concurrency sweep recorded by ``llmstudy sweep batch-size``), labelled as that part."""
    frames = []
    for rec in R.load_runs(experiment, root):
        if run_ids and rec.run_id not in run_ids:
            continue
        if model and _model_name(rec) != model:
            continue
        res = rec.table("results")
        try:
            req = rec.table("requests")
        except (R.RecordError, pd.errors.EmptyDataError):  # no point succeeded: no request rows
            req = pd.DataFrame()
        srv = rec.table("servers")
        res = res.merge(_exactness(req, res), on="point_id", how="left")
        keep = [c for c in ("server", "args", "versions", "started_utc", "start_s") if c in srv and (c == "server" or c not in res)]
        res = res.merge(srv[keep], on="server", how="left")
        kern = server_kernels(rec.path)
        if len(kern):
            res = res.merge(kern, on="server", how="left")
        params = rec.manifest["parameters"]
        res.insert(1, "gpu", rec.gpu_name())
        name = _model_name(rec)
        if "model" in res:  # newer records name each point's model (a server may serve its own)
            res["model"] = res["model"].fillna(name)
        else:
            res.insert(2, "model", name)
        res["load_tool"] = params.get("load_tool")
        res["part"] = part or params.get("part")
        if "engine" not in res:  # the serving chapters' records predate the engine column: they are all vLLM
            res["engine"] = "vllm"
        if experiment != EXPERIMENT:
            res["experiment"] = experiment
        frames.append(res)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


_KERNEL_RES = VL.KERNEL_PATTERNS  # the one log module's patterns
kernel_facts = VL.kernel_facts


def server_kernels(record_path: Path) -> pd.DataFrame:
    """:func:`kernel_facts` of every server log in a record, one row per server (its first start)."""
    rows = []
    for f in sorted((Path(record_path) / "logs").glob("server-*.1.log")):
        rows.append({"server": f.name[len("server-"):-len(".1.log")], **kernel_facts(f.read_text(errors="replace"))})
    return pd.DataFrame(rows)


_JIT_RE = VL.JIT_RE


def jit_warnings(record_path: Path) -> pd.DataFrame:
    """vLLM's own warnings that a Triton kernel was compiled while requests were being served (a latency spike that
    the warm-up did not cover), from every server log of a record: time and kernel."""
    rows = [{"time": m.group(1), "kernel": m.group(2), "log": f.name}
            for f in sorted((Path(record_path) / "logs").glob("server-*.log")) for m in _JIT_RE.finditer(f.read_text(errors="replace"))]
    return pd.DataFrame(rows, columns=["time", "kernel", "log"])


def stalled_points(ok: pd.DataFrame, factor: float = 3.0) -> pd.DataFrame:
    """Points whose mean TTFT is over ``factor`` times the lowest mean TTFT at any higher concurrency (of the same
    engine): more concurrency means more prefill to do, so a TTFT that falls as load rises is a one-time stall (a
    kernel compiled on first use, say), not queueing. One row per stalled point: engine, concurrency, its TTFT and
    the lowest TTFT above it."""
    rows = []
    for e, g in ok.groupby("engine", sort=True):
        t = g.sort_values("concurrency").set_index("concurrency")["time_to_first_token_avg"].dropna()
        later_min = t[::-1].cummin()[::-1].shift(-1)  # the lowest TTFT at any higher concurrency
        for c in t.index[t > factor * later_min]:
            rows.append({"engine": e, "concurrency": c, "ttft_ms": float(t[c]), "lowest_higher_ttft_ms": float(later_min[c])})
    return pd.DataFrame(rows, columns=["engine", "concurrency", "ttft_ms", "lowest_higher_ttft_ms"])


_EVIDENCE_RE = VL.EVIDENCE_RE


def server_facts(record_path: Path) -> pd.DataFrame:
    """What each server of a record says it loaded, read from its log with its engine's parser (SGLang's or vLLM's):
    weight memory, quantization, GEMM kernel, KV-cache tokens and memory, and the log lines they came from."""
    from llmstudy.serving.logs import parse_startup_log
    from llmstudy.serving.servers import parse_sglang_log

    path = Path(record_path)
    engines = pd.read_csv(path / "servers.csv").set_index("server")["engine"].to_dict() if (path / "servers.csv").exists() else {}
    rows = []
    for f in sorted((path / "logs").glob("server-*.1.log")):
        server, text = f.name[len("server-"):-len(".1.log")], f.read_text(errors="replace")
        engine = engines.get(server, "vllm")
        if engine == "sglang":
            x = parse_sglang_log(text)
            quant, kernel, kv_gib = f"{x.get('weights_quant')}, {x.get('weights_bits')} bits", x.get("quantization_kernel"), x.get("kv_k_gib", np.nan) + x.get("kv_v_gib", np.nan)
        else:
            x = parse_startup_log(text)
            quant, kernel, kv_gib = x.get("quantization"), x.get("linear_kernel"), x.get("available_kv_gib")
        rows.append({"engine": engine, "server": server, "weights_gib": x.get("weights_gib"), "quantization": quant, "gemm_kernel": kernel, "kv_cache_tokens": x.get("kv_cache_tokens"),
                     "kv_cache_gib": kv_gib, "log": f"logs/{f.name}", "lines": [ln for ln in x["lines"] if _EVIDENCE_RE.search(ln)]})
    return pd.DataFrame(rows)


_TS_RE = VL.SGLANG_TS_RE


def failed_attempts(record_path: Path) -> pd.DataFrame:
    """The SGLang server logs a record keeps of attempts that measured nothing (``logs/failed-attempts/*.log``): the
    line it died on, its prefill and decode CUDA-graph capture times, and how long after its first line it was ready."""
    from llmstudy.serving.logs import failure_reason
    from llmstudy.serving.servers import parse_sglang_log

    rows = []
    for f in sorted((Path(record_path) / "logs" / "failed-attempts").glob("*.log")):
        text = f.read_text(errors="replace")
        x, ts = parse_sglang_log(text), _TS_RE.findall(text)
        ready = VL.SGLANG_READY_RE.search(text)
        ready_s = (pd.Timestamp(ready.group(1)) - pd.Timestamp(ts[0])).total_seconds() if ready and ts else np.nan
        rows.append({"log": f"logs/failed-attempts/{f.name}", "failure": failure_reason(text), "prefill_graph_capture_s": x.get("prefill_graph_capture_s", np.nan),
                     "decode_graph_capture_s": x.get("graph_capture_s", np.nan), "ready_after_s": ready_s})
    return pd.DataFrame(rows, columns=["log", "failure", "prefill_graph_capture_s", "decode_graph_capture_s", "ready_after_s"])


def comparison_sets(points: pd.DataFrame) -> dict[tuple, pd.DataFrame]:
    """The points grouped by what makes a like-for-like comparison: (run_id, model, input_len, output_len)."""
    if not len(points):
        return {}
    return {k: g.reset_index(drop=True) for k, g in points.groupby(["run_id", "model", "input_len", "output_len"], sort=True)}


# --- fairness --------------------------------------------------------------------------------------------------
def _true(v) -> bool:
    """A boolean cell as a CSV round trip leaves it (True, 1, 'True'); missing is not true."""
    return v is True or (isinstance(v, (int, float, np.bool_)) and not pd.isna(v) and bool(v)) or str(v) == "True"


def _int(v):
    return None if v is None or pd.isna(v) else int(v)


def _order(t: tuple) -> tuple:
    return tuple(-1 if v is None else v for v in t)


def _sched(g: pd.DataFrame) -> list[tuple]:
    return sorted(((_int(r.concurrency), _int(r.num_prompts), _int(r.warmups), _int(r.seed)) for r in g.itertuples()), key=_order)


def fairness(points: pd.DataFrame) -> pd.DataFrame:
    """Check every rule of :data:`RULES` on the points of one comparison (two or more engines).

    Returns one row per rule: ``rule``, ``ok``, ``detail`` (what broke it, or what was checked).
    """
    if not len(points):
        raise ValueError("no points to check")
    need = ("prompt_token_ids_sha256", "prompts_exact", "outputs_exact", "num_prompts", "warmups", "seed", "requests", "gpu", "model", "load_tool", "args", "versions", "input_len", "output_len")
    points = points.assign(**{c: None for c in need if c not in points})  # a record without a column fails its rule
    engines = sorted(points["engine"].unique())
    ok = points[points["outcome"] == "ok"]
    out = []

    bad = []
    for c, g in ok.groupby("concurrency"):
        digests = {e: (h if isinstance(h, str) and h else None) for e, h in zip(g["engine"], g["prompt_token_ids_sha256"])}
        if len(set(digests.values())) > 1 or None in digests.values():
            bad.append(f"c={_int(c)}: " + ", ".join(f"{e} {(h or 'none')[:12]}" for e, h in sorted(digests.items())))
    out.append(("same_prompts", not bad, "; ".join(bad) or f"{ok['concurrency'].nunique()} concurrencies, one digest each"))

    bad = []
    for r in ok.itertuples():
        if not _true(r.prompts_exact):
            bad.append(f"{r.engine} c={_int(r.concurrency)}: prompts not {_int(r.input_len)} tokens")
        if not _true(r.outputs_exact):
            bad.append(f"{r.engine} c={_int(r.concurrency)}: outputs not {_int(r.output_len)} tokens")
    out.append(("exact_lengths", not bad, "; ".join(bad) or f"{len(ok)} ok points exact"))

    ref = engines[0]
    ref_sched = _sched(points[points["engine"] == ref])
    bad = [f"{e}: {_sched(points[points['engine'] == e])} != {ref}: {ref_sched}" for e in engines[1:] if _sched(points[points["engine"] == e]) != ref_sched]
    out.append(("same_schedule", not bad, "; ".join(bad) or f"{len(ref_sched)} points per engine"))

    bad = [f"{r.engine} c={_int(r.concurrency)}: no warm-up" for r in points.itertuples() if not (_int(r.warmups) or 0) > 0]
    bad += [f"{r.engine} c={_int(r.concurrency)}: {_int(r.requests)} requests recorded for {_int(r.num_prompts)} sent" for r in ok.itertuples() if _int(r.requests) != _int(r.num_prompts) or _int(r.requests) is None]
    out.append(("warmup_excluded", not bad, "; ".join(bad) or "warm-ups sent, measured requests only"))

    bad = []
    for e in engines:
        g = points[points["engine"] == e]
        if not g["args"].fillna("").astype(str).str.strip().astype(bool).all():
            bad.append(f"{e}: no server flags")
        if g["versions"].isna().any():
            bad.append(f"{e}: no package versions")
    out.append(("settings_recorded", not bad, "; ".join(bad) or "flags and versions of " + ", ".join(engines)))

    bad = []
    for col, what in (("gpu", "GPUs"), ("model", "models"), ("load_tool", "load tools")):
        vals = sorted(map(str, points[col].unique()))
        if len(vals) != 1:
            bad.append(f"{what} {vals}")
    lengths = sorted({(_int(a), _int(b)) for a, b in zip(points["input_len"], points["output_len"])}, key=_order)
    if len(lengths) != 1:
        bad.append(f"input/output lengths {lengths}")
    out.append(("same_setup", not bad, "; ".join(bad) or f"{points['gpu'].iloc[0]}, {points['model'].iloc[0]}, {lengths[0][0]} in / {lengths[0][1]} out"))

    if len(engines) < 2:
        out.append(("engines", False, f"one engine only ({engines[0]}): nothing to compare"))
    return pd.DataFrame(out, columns=["rule", "ok", "detail"])


def require_fair(points: pd.DataFrame) -> pd.DataFrame:
    """:func:`fairness`, raising :class:`FairnessError` that names every broken rule; returns the report."""
    rep = fairness(points)
    broken = rep[~rep["ok"]]
    if len(broken):
        raise FairnessError("refusing to compare these records: " + " | ".join(f"{r.rule}: {r.detail}" for r in broken.itertuples()))
    return rep


# --- who wins --------------------------------------------------------------------------------------------------
TIE_MARGIN = 1.02  # one measurement per point: a lead of 2 % or less is a tie, in the tables and in the text alike


def verdict(values: dict, better: str, tie_margin: float = TIE_MARGIN) -> tuple[str, float]:
    """The one rule that names a winner (every table and sentence of the chapter uses it): the best value's engine,
    unless its margin over the runner-up (best / runner-up when higher is better, runner-up / best when lower is;
    always >= 1) is at most ``tie_margin``, which is a ``tie``. Returns (winner or "tie", margin)."""
    order = sorted(values, key=lambda e: -values[e] if better == "higher" else values[e])
    if len(order) < 2:
        return order[0], 1.0
    best, second = values[order[0]], values[order[1]]
    if best == second:
        return "tie", 1.0
    margin = best / second if better == "higher" else second / best
    return ("tie" if margin <= tie_margin else order[0]), margin


def verdict_phrase(winner: str, margin: float, tie_margin: float = TIE_MARGIN) -> str:
    """The verdict as words, for the chapter's sentences: "sglang ahead by 1.18×" or "a tie (1.01×, within 2 %)"."""
    if winner == "tie":
        return f"a tie ({margin:.2f}×, within {100 * (tie_margin - 1):.0f} %)"
    return f"{winner} ahead by {margin:.2f}×"


def win_table(df: pd.DataFrame, metrics: dict = WIN_METRICS, by: str = "concurrency", engine: str = "engine") -> pd.DataFrame:
    """For each value of ``by`` and each metric: every engine's value, the winner and its margin (best / runner-up
    for higher-is-better, runner-up / best for lower-is-better; >= 1), by :func:`verdict`: a margin of at most
    :data:`TIE_MARGIN` is a ``tie``. Only rows where every engine has a value are judged."""
    engines = sorted(df[engine].unique())
    rows = []
    for x, g in df.groupby(by, sort=True):
        vals = g.set_index(engine)
        for col, (label, better) in metrics.items():
            if col not in vals or any(e not in vals.index or pd.isna(vals.at[e, col]) for e in engines):
                continue
            v = {e: float(vals.at[e, col]) for e in engines}
            winner, margin = verdict(v, better)
            rows.append({by: x, "metric": label, "better": better, **v, "winner": winner, "margin": margin})
    return pd.DataFrame(rows)


def win_summary(wins: pd.DataFrame, by: str = "concurrency") -> pd.DataFrame:
    """Per metric and winner: how many of the judged points it won, and where."""
    rows = []
    for m, g in wins.groupby("metric", sort=False):
        for w, h in g.groupby("winner", sort=True):
            rows.append({"metric": m, "winner": w, "points won": len(h), "of": len(g), f"at {by}": ", ".join(str(int(x)) if float(x).is_integer() else str(x) for x in h[by]),
                         "margin, median": float(h["margin"].median())})
    return pd.DataFrame(rows)


# --- published numbers and TensorRT-LLM records ------------------------------------------------------------------
def published() -> pd.DataFrame:
    """The article's engine numbers (data/trtllm/published.csv, with section), labelled ``source = published``."""
    df = pd.read_csv(data_dir() / "trtllm" / "published.csv")
    df = df[df["section"].astype(str).isin(["6.6", "8.1"]) & df["concurrency"].notna()].copy()
    df["source"] = "published (Fixstars 2026, §" + df["section"].astype(str) + ")"
    return df.reset_index(drop=True)


def published_7b_wins() -> pd.DataFrame:
    """The article's ch. 6.6 result as a win table: total output throughput at c=16, Triton vs vLLM 0.11 (GPTQ)."""
    p = published()
    p = p[p["section"].astype(str) == "6.6"]
    df = pd.DataFrame({"engine": p["server"].values, "concurrency": p["concurrency"].astype(int).values, "output_token_throughput": p["value"].astype(float).values})
    return win_table(df, {"output_token_throughput": WIN_METRICS["output_token_throughput"]})


def article_claims() -> pd.DataFrame:
    """The article's ch. 8.2 verdicts (qualitative: its figure's numbers are not in the text), with the source line."""
    return pd.read_csv(data_dir() / "engine_comparison" / "article_claims.csv")


ARTICLE_GPU = "NVIDIA H100 PCIe"  # the article's §12 setup: 4x "NVIDIA H100 80GB PCIe", one per server


def engine_label(row) -> str:
    """``engine version`` from a point's recorded package versions (e.g. ``sglang 0.5.17``)."""
    v = json.loads(row["versions"]) if isinstance(row.get("versions"), str) else {}
    return f"{row['engine']} {v.get(row['engine'], '')}".strip()


def versus_article(points: pd.DataFrame, concurrency: int = 16) -> pd.DataFrame:
    """Total output throughput at ``concurrency``: each engine measured in ``points``, then the article's §6.6 pair
    (labelled published), with each GPU's datasheet HBM bandwidth and the ratio to the article's vLLM."""
    ok = points[(points["outcome"] == "ok") & (points["concurrency"] == concurrency)]
    rows = [{"engine": engine_label(r), "source": f"measured, run {r['run_id']}", "gpu": r["gpu"], "load tool": r["load_tool"], "output tokens/s": r["output_token_throughput"]} for _, r in ok.iterrows()]
    pub = published()
    for _, r in pub[(pub["section"].astype(str) == "6.6") & (pub["concurrency"] == concurrency)].iterrows():
        rows.append({"engine": r["server"], "source": r["source"], "gpu": ARTICLE_GPU, "load tool": r["note"].split(";")[0], "output tokens/s": float(r["value"])})
    df = pd.DataFrame(rows)
    if not len(df):
        return df
    df["HBM TB/s"] = [SB.hbm_bandwidth(g) / 1e12 for g in df["gpu"]]
    base = df.loc[df["engine"].str.startswith("vLLM 0.11") & df["source"].str.startswith("published"), "output tokens/s"]
    df["x article's vLLM"] = df["output tokens/s"] / base.iloc[0] if len(base) else np.nan
    return df


def where_each_wins(points: pd.DataFrame) -> pd.DataFrame:
    """Who wins what, measured and published in one table but never judged against each other: the win summary of
    every fair multi-engine comparison set in ``points`` (source: measured), then the article's §6.6 and §8.2
    verdicts (source: published)."""
    rows = []
    for (run, model, i, o), g in comparison_sets(points).items() if len(points) else ():
        ok = g[g["outcome"] == "ok"]
        if ok["engine"].nunique() < 2 or not fairness(g)["ok"].all():
            continue
        names = " vs ".join(sorted({engine_label(r) for _, r in ok.drop_duplicates("engine").iterrows()}))
        for _, r in win_summary(win_table(ok)).iterrows():
            rows.append({"source": f"measured: run {run}, {ok['gpu'].iloc[0]}", "comparison": f"{names} ({model}, {i} in / {o} out)", "metric": r["metric"], "winner": r["winner"],
                         "at concurrency": r["at concurrency"], "points won": f"{r['points won']} of {r['of']}", "margin, median": r["margin, median"]})
    margin = published_7b_wins()["margin"].iloc[0]
    for _, r in article_claims().sort_values("section").iterrows():
        at = re.search(r"c=([\d.]+)", r["comparison"])
        rows.append({"source": f"published: Fixstars 2026 §{r['section']}, {ARTICLE_GPU}", "comparison": r["comparison"], "metric": r["metric"], "winner": r["article_winner"],
                     "at concurrency": at.group(1).replace("..", " to ") if at else "", "points won": "", "margin, median": margin if str(r["section"]) == "6.6" else np.nan})
    return pd.DataFrame(rows)


def trtllm_points(run_ids=(), root=None) -> pd.DataFrame:
    """TensorRT-LLM (trtllm-serve) run records, if a GPU runner made any, in the same wide schema (one row per
    concurrency); empty when there are none."""
    rows = []
    for rec in R.load_runs("trtllm_serve", root):
        if run_ids and rec.run_id not in run_ids:
            continue
        try:
            t = rec.table("results")
        except R.RecordError:
            continue
        if not len(t) or "metric" not in t or "concurrency" not in t:
            continue
        w = loadgen.wide(t, ["run_id", "concurrency"])
        w.insert(1, "gpu", rec.gpu_name())
        for col in ("input_len", "output_len", "outcome"):
            if col in t:
                w[col] = t.groupby("concurrency")[col].first().reindex(w["concurrency"]).values
        w["model"] = _model_name(rec)
        w["engine"] = "trtllm-serve"
        w["experiment"] = "trtllm_serve"
        rows.append(w)
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()


def other_vllm_7b(model: str = MODEL_7B) -> pd.DataFrame:
    """Points of the serving chapters' records (batch_size_sweep, length_sweep) on ``model``: vLLM runs of the same
    4-bit case made in other sessions, shown beside the comparison but never judged against it."""
    frames = []
    for exp in ("batch_size_sweep", "length_sweep"):
        for rec in R.load_runs(exp):
            if _model_name(rec) != model:
                continue
            t = rec.table("results")
            t.insert(1, "gpu", rec.gpu_name())
            t["experiment"] = exp
            frames.append(t)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


