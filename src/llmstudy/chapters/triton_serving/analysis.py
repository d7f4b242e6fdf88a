"""Analysis of the Triton chapter's run records (experiment ``triton_serving``): tables and numbers the page shows.

A record is either a ``bench`` run (``results.csv`` in :mod:`llmstudy.serving.loadgen`'s tidy schema with the keys
server, tool, streaming, concurrency, adapters) or a ``lora`` run (``answers.csv``: every answer of peft, vLLM's
OpenAI server and the Triton ensemble, and whether it equals peft's).
"""

from __future__ import annotations

import pandas as pd

from llmstudy.chapters.triton_serving.params import EXPERIMENT
from llmstudy.core.records import RecordError, load_runs
from llmstudy.serving import loadgen

KEYS = ["run_id", "gpu", "server", "lora_enabled", "tool", "streaming", "concurrency", "adapters"]
SERVER_LABEL = {"vllm": "vLLM OpenAI server", "triton": "Triton ensemble (vLLM engine)"}
TOOL_LABEL = {"vllm-bench": "vllm bench serve", "genai-perf": "genai-perf", "llmstudy-client": "llmstudy client (HTTP SSE)"}


def records(root=None, part: str | None = None) -> list:
    """The chapter's records (optionally of one part), oldest first."""
    try:
        recs = load_runs(EXPERIMENT, root=root)
    except (RecordError, FileNotFoundError):
        return []
    return [r for r in recs if part is None or r.manifest.get("part", r.manifest.get("parameters", {}).get("part")) == part]


POINT = ["server", "lora_enabled", "tool", "streaming", "concurrency", "adapters"]  # a point, whichever record measured it


def bench_points(root=None, model: str | None = None, latest: bool = True) -> pd.DataFrame:
    """One row per measured point (wide: ``time_to_first_token_avg``, ``output_token_throughput``, ...), of the
    records that served ``model`` (all records when None). With ``latest`` a point measured again by a later record
    is that record's (the earlier measurement stays in its record and in :func:`repeats`)."""
    frames = []
    order = {}
    for r in records(root, "bench"):
        if model is not None and r.manifest.get("parameters", {}).get("model") != model:
            continue
        try:
            df = r.table("results")
        except RecordError:
            continue
        if df.empty or "metric" not in df:
            continue
        df = with_lora_enabled(df.assign(gpu=r.gpu_name()))
        frames.append(df[df.get("outcome", "ok") == "ok"] if "outcome" in df else df)
        order[r.run_id] = len(order)
    if not frames:
        return pd.DataFrame(columns=KEYS)
    w = loadgen.wide(pd.concat(frames, ignore_index=True), KEYS)
    if latest:
        w = w.assign(_o=w.run_id.map(order)).sort_values("_o").drop_duplicates(POINT, keep="last").drop(columns="_o")
    return w.sort_values(["server", "tool", "adapters", "streaming", "concurrency"]).reset_index(drop=True)


def repeats(root=None, model: str | None = None) -> pd.DataFrame:
    """Points measured by more than one record: the first and the last measurement's throughput and mean TTFT, and
    the last relative to the first (the run-to-run spread of one server on the same kind of GPU)."""
    allp = bench_points(root, model, latest=False)
    order = [r.run_id for r in records(root, "bench")]  # oldest first, read once
    rows = []
    for key, g in allp.groupby(POINT):
        if g.run_id.nunique() < 2:
            continue
        g = g.assign(_o=g.run_id.map(order.index)).sort_values("_o")
        a, b = g.iloc[0], g.iloc[-1]
        rows.append({**dict(zip(POINT, key)), "first_run": a.run_id, "last_run": b.run_id,
                     "tput_first": a.output_token_throughput, "tput_last": b.output_token_throughput,
                     "tput_ratio": b.output_token_throughput / a.output_token_throughput,
                     "ttft_first": a.time_to_first_token_avg, "ttft_last": b.time_to_first_token_avg})
    return pd.DataFrame(rows)


GPU_COLUMNS = ["gpu_util_pct_mean", "gpu_power_w_mean", "gpu_power_w_max", "gpu_mem_used_gib_max"]


def gpu_while_serving(points: pd.DataFrame) -> pd.DataFrame:
    """Streaming points with NVML samples (utilisation and power over the point, rows ``gpu_*``): per server, tool,
    adapters and concurrency. A point's window includes its tool's own start-up (genai-perf and ``vllm bench serve``
    load a tokenizer and build prompts first; the study's client gets its prompts before the window), so only the
    client's means are the load alone; the maxima are comparable across tools."""
    if points.empty or "gpu_power_w_max" not in points:
        return pd.DataFrame()
    g = points[points.gpu_power_w_max.notna() & points.streaming.astype(bool)]
    cols = ["run_id", "server", "tool", "lora_enabled", "adapters", "concurrency", *GPU_COLUMNS, "output_token_throughput"]
    return g[cols].sort_values(["server", "tool", "lora_enabled", "adapters", "concurrency"]).reset_index(drop=True)


def with_lora_enabled(tidy: pd.DataFrame) -> pd.DataFrame:
    """Records written before the ``lora_enabled`` key: the run measured the server without LoRA first, then the
    server with ``--enable-lora``, appending each point's metric rows as one block. A block is on the LoRA server when
    it has adapters in flight or repeats the keys of an earlier block (the LoRA server's base-model point)."""
    if "lora_enabled" in tidy:
        return tidy
    keys = ["server", "tool", "streaming", "concurrency", "adapters"]
    block = (tidy[keys].ne(tidy[keys].shift()).any(axis=1)).cumsum()
    seen, flags = set(), {}
    for b, g in tidy.groupby(block, sort=True):
        k = tuple(g.iloc[0][keys])
        flags[b] = bool(g.iloc[0]["adapters"] > 0 or k in seen)
        seen.add(k)
    return tidy.assign(lora_enabled=block.map(flags))


def outcomes(root=None) -> pd.DataFrame:
    """Points and servers that did not produce metrics (failed, skipped, start_failed), with the reason."""
    frames = []
    for r in records(root):
        try:
            df = r.table("outcomes")
        except RecordError:
            continue
        if len(df):
            frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["run_id", "outcome", "error"])


def server_comparison(points: pd.DataFrame) -> pd.DataFrame:
    """Streaming, base model: each server measured by its own client (vllm bench serve; the llmstudy client for
    Triton), side by side per concurrency, and Triton's throughput relative to vLLM's."""
    own = points[(points.adapters == 0) & points.streaming.astype(bool) & ~points.lora_enabled.astype(bool)
                 & (((points.server == "vllm") & (points.tool == "vllm-bench")) | ((points.server == "triton") & (points.tool == "llmstudy-client")))]
    if own.empty:
        return pd.DataFrame()
    cols = ["output_token_throughput", "time_to_first_token_avg", "inter_token_latency_avg"]
    w = own.pivot_table(index="concurrency", columns="server", values=cols, aggfunc="first")
    w.columns = [f"{m}_{s}" for m, s in w.columns]
    w = w.reset_index()
    if {"output_token_throughput_triton", "output_token_throughput_vllm"} <= set(w.columns):
        w["triton_vs_vllm"] = w.output_token_throughput_triton / w.output_token_throughput_vllm
    return w


def tool_comparison(points: pd.DataFrame) -> pd.DataFrame:
    """The same server and point measured by two tools: genai-perf against the server's own client. Ratios > 1 mean
    genai-perf reports more."""
    base = points[(points.adapters == 0) & points.streaming.astype(bool) & ~points.lora_enabled.astype(bool)]
    out = []
    for (server, c), g in base.groupby(["server", "concurrency"]):
        gp = g[g.tool == "genai-perf"]
        ref = g[g.tool != "genai-perf"]
        if gp.empty or ref.empty:
            continue
        gp, ref = gp.iloc[0], ref.iloc[0]
        out.append({"server": server, "concurrency": c, "reference_tool": ref.tool,
                    "ttft_ratio": gp.time_to_first_token_avg / ref.time_to_first_token_avg,
                    "itl_ratio": gp.inter_token_latency_avg / ref.inter_token_latency_avg,
                    "throughput_ratio": gp.output_token_throughput / ref.output_token_throughput,
                    "ttft_genai_perf": gp.time_to_first_token_avg, "ttft_reference": ref.time_to_first_token_avg})
    return pd.DataFrame(out)


def adapter_sweep(points: pd.DataFrame) -> pd.DataFrame:
    """Throughput with 0, 1 and N distinct adapters in flight, per server, relative to the base model."""
    a = points[points.tool.isin(["vllm-bench", "llmstudy-client"]) & points.streaming.astype(bool)]
    lora = a[a.lora_enabled.astype(bool)]
    if lora.empty:
        return pd.DataFrame()
    rows = []
    for (server, c), g in lora.groupby(["server", "concurrency"]):
        if g.adapters.nunique() < 2:
            continue
        base = g[g.adapters == 0]
        b = float(base.output_token_throughput.iloc[0]) if len(base) else float("nan")
        bi = float(base.inter_token_latency_avg.iloc[0]) if len(base) else float("nan")
        plain = a[(a.server == server) & (a.concurrency == c) & (a.adapters == 0) & ~a.lora_enabled.astype(bool)]
        for _, r in g.sort_values("adapters").iterrows():
            rows.append({"server": server, "concurrency": c, "adapters": int(r.adapters), "output_token_throughput": r.output_token_throughput,
                         "relative_to_base": r.output_token_throughput / b, "ttft_avg": r.time_to_first_token_avg, "ttft_p50": r.time_to_first_token_p50,
                         "itl_avg": r.inter_token_latency_avg, "itl_relative_to_base": r.inter_token_latency_avg / bi,
                         "throughput_without_lora": float(plain.output_token_throughput.iloc[0]) if len(plain) else float("nan")})
    return pd.DataFrame(rows)


def lora_answers(root=None) -> pd.DataFrame:
    frames = []
    for r in records(root, "lora"):
        try:
            frames.append(r.table("answers"))
        except RecordError:
            continue
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["run_id", "adapter", "prompt_id", "source", "text", "equal_to_peft"])


def lora_agreement(answers: pd.DataFrame) -> pd.DataFrame:
    """Per served path and adapter (each record against its own peft answers): how many greedy answers equal peft's
    exactly; how many equal peft's answer of the *base* model instead (an adapter that was not applied would make
    that count high); and the mean common prefix (characters) where they differ."""
    import os

    rows = []
    for run_id, a in answers.groupby("run_id"):
        ref = a[a.source == "peft"].set_index(["adapter", "prompt_id"]).text
        for (src, ad), g in a[a.source != "peft"].groupby(["source", "adapter"]):
            eq = [t == ref.get((ad, i)) for i, t in zip(g.prompt_id, g.text)]
            as_base = [ad != "base" and t == ref.get(("base", i)) for i, t in zip(g.prompt_id, g.text)]
            pre = [len(os.path.commonprefix([str(ref.get((ad, i))), str(t)])) for i, t, e in zip(g.prompt_id, g.text, eq) if not e]
            rows.append({"run_id": run_id, "source": src, "adapter": ad, "equal": int(sum(eq)), "prompts": len(g),
                         "equal_to_base_answer": int(sum(as_base)), "mean_common_prefix_when_different": sum(pre) / len(pre) if pre else float("nan")})
    return pd.DataFrame(rows)


def served_consistency(answers: pd.DataFrame) -> dict:
    """Served paths against each other (no peft): Triton streamed vs not, Triton vs vLLM's OpenAI server."""
    def idx(src):
        s = answers[answers.source == src]
        return s.set_index(["adapter", "prompt_id"]).text

    tr, ts, vo = idx("triton"), idx("triton-stream"), idx("vllm-openai")
    common = tr.index.intersection(vo.index)
    return {"triton_stream_equal": int((tr == ts.reindex(tr.index)).sum()), "triton_n": len(tr),
            "triton_vs_openai_equal": int((tr[common] == vo[common]).sum()), "triton_vs_openai_n": len(common)}


# --- the LoRA check across records: which record answers, peft in float32, the engine's refusal, the divergences --------
SERVED = ("vllm-openai", "triton", "triton-stream")
SOURCE_LABEL = {"peft": "peft", "vllm-openai": "vLLM server", "triton": "Triton", "triton-stream": "Triton, streamed"}


def _dtype(r) -> str:
    return r.manifest.get("parameters", {}).get("dtype", "bfloat16")


def lora_record(root=None, dtype: str = "bfloat16"):
    """The newest ``lora`` record in ``dtype`` whose answers include every served path (None when there is none)."""
    best = None
    for r in records(root, "lora"):
        try:
            a = r.table("answers")
        except RecordError:
            continue
        if _dtype(r) == dtype and set(SERVED) <= set(a.source):
            best = r
    return best


def peft_precision(root=None) -> dict:
    """peft's own greedy answers in bf16 (the newest complete bf16 record) against peft's in float32 (the newest
    float32 record): how many of the same prompts give the same answer, and each served path's count against the
    float32 answers. Empty when either record is missing."""
    b = lora_record(root)
    f = [r for r in records(root, "lora") if _dtype(r) == "float32"]
    if b is None or not f:
        return {}
    fa = f[-1].table("answers")
    ref = fa[fa.source == "peft"].set_index(["adapter", "prompt_id"]).text
    ba = b.table("answers")
    out = {"fp32_run": f[-1].run_id, "bf16_run": b.run_id}
    for src in ("peft", *SERVED):
        s = ba[ba.source == src].set_index(["adapter", "prompt_id"]).text
        common = s.index.intersection(ref.index)
        out[src] = (int((s[common] == ref[common]).sum()), len(common))
    return out


def refusals(root=None) -> pd.DataFrame:
    """Served paths that failed in a ``lora`` record, with the record's dtype and the line of the server's log that
    says why (:func:`llmstudy.serving.logs.failure_reason`)."""
    from llmstudy.serving.logs import failure_reason

    log_of = {"vllm-openai": "vllm-openai.log", "triton": "triton.log"}
    rows = []
    for r in records(root, "lora"):
        try:
            o = r.table("outcomes")
        except RecordError:
            continue
        for x in o[o.get("outcome", pd.Series(dtype=str)) == "failed"].itertuples(index=False) if len(o) else []:
            f = r.path / "logs" / log_of.get(x.source, "")
            why = failure_reason(f.read_text(errors="replace")) if f.is_file() else ""
            rows.append({"run_id": r.run_id, "dtype": _dtype(r), "source": x.source, "reason": why or str(x.error)})
    return pd.DataFrame(rows, columns=["run_id", "dtype", "source", "reason"])


NEAR_TIE = 4  # a divergence is at a near-tie when peft's margin there is below a quarter of the answer's median margin


def divergences(root=None) -> pd.DataFrame:
    """Each distinct divergence of the newest complete bf16 ``lora`` record (``divergence.csv``), the served paths
    that share it joined: where the answer leaves peft's, peft's margin there (bf16 and float32), the answer's median
    margin, and ``near_tie`` (margin below 1/:data:`NEAR_TIE` of that median)."""
    r = lora_record(root)
    if r is None:
        return pd.DataFrame()
    try:
        d = r.table("divergence")
    except RecordError:
        return pd.DataFrame()
    d = d[d.diverge_at.notna()]
    if d.empty:
        return d
    keys = ["adapter", "prompt_id", "diverge_at", "ref_token", "margin_at", "margin_fp32_at", "median_margin", "rank_at"]
    def paths(s):
        return "every path" if set(s) >= set(SERVED) else ", ".join(SOURCE_LABEL.get(x, x) for x in sorted(s))

    g = d.groupby(keys, dropna=False).source.agg(paths).reset_index()
    g["near_tie"] = g.margin_at < g.median_margin / NEAR_TIE
    g["run_id"] = r.run_id
    return g.sort_values(["adapter", "prompt_id"]).reset_index(drop=True)


def self_consistency(root=None) -> tuple[int, int] | None:
    """(answers whose peft teacher-forced pass picks another token than peft's own generate somewhere, answers): peft
    against itself, in one forward pass instead of token by token with a KV cache."""
    r = lora_record(root)
    if r is None:
        return None
    try:
        d = r.table("divergence")
    except RecordError:
        return None
    u = d.drop_duplicates(["adapter", "prompt_id"])
    return int((~u.ref_top1_ok.astype(bool)).sum()), len(u)


def triton_own_metrics(root=None, model: str | None = None) -> pd.DataFrame:
    """Triton's own per-model counters over the whole life of the newest bench record's Triton server without LoRA
    (``logs/triton-metrics.txt``, read when the server stopped): requests and the mean request, queue and compute time
    per request (:func:`llmstudy.serving.triton.server.metrics_per_request` from zero)."""
    from llmstudy.serving.triton.server import metrics_per_request, parse_metrics

    rows = []
    for r in records(root, "bench"):
        f = r.path / "logs" / "triton-metrics.txt"
        if (model is None or r.manifest.get("parameters", {}).get("model") == model) and f.is_file():
            rows = [metrics_per_request({}, parse_metrics(f.read_text())).assign(run_id=r.run_id)]
    return rows[0] if rows else pd.DataFrame()
