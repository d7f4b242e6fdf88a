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

KEYS = ["run_id", "gpu", "server", "tool", "streaming", "concurrency", "adapters"]
SERVER_LABEL = {"vllm": "vLLM OpenAI server", "triton": "Triton ensemble (vLLM engine)"}
TOOL_LABEL = {"vllm-bench": "vllm bench serve", "genai-perf": "genai-perf", "llmstudy-client": "llmstudy client (HTTP SSE)"}


def records(root=None, part: str | None = None) -> list:
    """The chapter's records (optionally of one part), oldest first."""
    try:
        recs = load_runs(EXPERIMENT, root=root)
    except (RecordError, FileNotFoundError):
        return []
    return [r for r in recs if part is None or r.manifest.get("part", r.manifest.get("parameters", {}).get("part")) == part]


def bench_points(root=None) -> pd.DataFrame:
    """One row per measured point (wide: ``time_to_first_token_avg``, ``output_token_throughput``, ...)."""
    frames = []
    for r in records(root, "bench"):
        try:
            df = r.table("results")
        except RecordError:
            continue
        if df.empty or "metric" not in df:
            continue
        df = df.assign(gpu=r.gpu_name())
        frames.append(df[df.get("outcome", "ok") == "ok"] if "outcome" in df else df)
    if not frames:
        return pd.DataFrame(columns=KEYS)
    tidy = pd.concat(frames, ignore_index=True)
    return loadgen.wide(tidy, KEYS).sort_values(["server", "tool", "adapters", "streaming", "concurrency"]).reset_index(drop=True)


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
    own = points[(points.adapters == 0) & points.streaming.astype(bool)
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
    base = points[(points.adapters == 0) & points.streaming.astype(bool)]
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
    lora = a[a.run_id.isin(a[a.adapters > 0].run_id)]
    if lora.empty:
        return pd.DataFrame()
    rows = []
    for (server, c), g in lora.groupby(["server", "concurrency"]):
        if g.adapters.nunique() < 2:
            continue
        base = g[g.adapters == 0].output_token_throughput
        b = float(base.iloc[0]) if len(base) else float("nan")
        for _, r in g.sort_values("adapters").iterrows():
            rows.append({"server": server, "concurrency": c, "adapters": int(r.adapters), "output_token_throughput": r.output_token_throughput,
                         "relative_to_base": r.output_token_throughput / b, "ttft_avg": r.time_to_first_token_avg, "itl_avg": r.inter_token_latency_avg})
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
    """Per served path and adapter: how many of the prompts' greedy answers equal peft's, exactly."""
    served = answers[answers.source != "peft"]
    if served.empty:
        return pd.DataFrame()
    g = served.groupby(["source", "adapter"]).equal_to_peft.agg(["sum", "count"]).reset_index()
    return g.rename(columns={"sum": "equal", "count": "prompts"})
