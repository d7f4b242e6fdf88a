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


def bench_points(root=None, model: str | None = None) -> pd.DataFrame:
    """One row per measured point (wide: ``time_to_first_token_avg``, ``output_token_throughput``, ...), of the
    records that served ``model`` (all records when None)."""
    frames = []
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
    if not frames:
        return pd.DataFrame(columns=KEYS)
    tidy = pd.concat(frames, ignore_index=True)
    return loadgen.wide(tidy, KEYS).sort_values(["server", "tool", "adapters", "streaming", "concurrency"]).reset_index(drop=True)


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
