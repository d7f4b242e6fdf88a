"""Figures of the Triton chapter (figstyle look: SVG, full width, Okabe–Ito colours, labelled reference lines)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from llmstudy.chapters.triton_serving.analysis import SERVER_LABEL, TOOL_LABEL
from llmstudy.publishing import figstyle


def throughput_and_ttft(points: pd.DataFrame, published: pd.DataFrame | None = None):
    """Output tokens/s and mean TTFT against concurrency: each server by each tool (streaming, base model), with the
    article's published Triton/TensorRT-LLM and vLLM 0.11 points (H100 PCIe, 4-bit weights) as labelled markers."""
    base = points[(points.adapters == 0) & points.streaming.astype(bool) & ~points.lora_enabled.astype(bool)]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(figstyle.WIDTH_IN, 4.4))
    styles = {"vllm-bench": "-", "llmstudy-client": "-", "genai-perf": "--"}
    for (server, tool), g in base.groupby(["server", "tool"], sort=True):
        g = g.sort_values("concurrency")
        col = figstyle.color(0 if server == "vllm" else 1)
        label = f"{SERVER_LABEL.get(server, server)} — {TOOL_LABEL.get(tool, tool)}"
        ax1.plot(g.concurrency, g.output_token_throughput, styles.get(tool, "-"), marker="o", color=col, label=label)
        ax2.plot(g.concurrency, g.time_to_first_token_avg, styles.get(tool, "-"), marker="o", color=col, label=label)
    if published is not None and len(published):
        pub = published[published.metric == "output_token_throughput"]
        pub = pub[pd.to_numeric(pub.concurrency, errors="coerce").notna()]
        for _, r in pub.iterrows():
            ax1.scatter([float(r.concurrency)], [float(r.value)], marker="*", s=140, color="#555555", zorder=5)
        for _, r in pub.sort_values("concurrency").groupby("server").tail(1).iterrows():  # one label per published series
            ax1.annotate(f"article: {r.server.split(' (')[0]}, {float(r.value):,.0f}", (float(r.concurrency), float(r.value)),
                         textcoords="offset points", xytext=(6, -4), fontsize=8.5, color="#555555")
    for ax, title, unit in ((ax1, "Output throughput", "tokens/s"), (ax2, "Mean time to first token", "ms")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrency (requests in flight)")
        ax.set_ylabel(unit)
        ax.set_title(title)
    ax2.set_yscale("log")
    from matplotlib.ticker import FuncFormatter

    fmt = FuncFormatter(lambda v, _: f"{v:,.0f}")
    for ax in (ax1, ax2):
        ax.xaxis.set_major_formatter(fmt)
    ax2.yaxis.set_major_formatter(fmt)
    ax2.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if str(int(v))[0] in "25" else ""))
    handles, labels = ax1.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", bbox_to_anchor=(0.5, -0.12), ncol=2, frameon=False)
    return fig


def adapters_bar(sweep: pd.DataFrame):
    """Throughput relative to the base model with 0, 1 and N distinct adapters in flight, per server."""
    fig, ax = plt.subplots(figsize=(figstyle.WIDTH_IN, 3.6))
    servers = list(dict.fromkeys(sweep.server))
    levels = sorted(sweep.adapters.unique())
    width = 0.8 / max(1, len(servers))
    for j, s in enumerate(servers):
        g = sweep[sweep.server == s].set_index("adapters").reindex(levels)
        xs = [i + (j - (len(servers) - 1) / 2) * width for i in range(len(levels))]
        bars = ax.bar(xs, g.output_token_throughput, width=width * 0.95, color=figstyle.color(j), label=SERVER_LABEL.get(s, s))
        for b, v in zip(bars, g.relative_to_base):
            if pd.notna(v):
                ax.annotate(f"{v:.2f}×", (b.get_x() + b.get_width() / 2, b.get_height()), ha="center", va="bottom", fontsize=9)
    ax.set_xticks(range(len(levels)), [("base model" if a == 0 else f"{a} adapter" + ("s" if a > 1 else "")) for a in levels])
    ax.set_ylabel("output tokens/s")
    ax.set_title("LoRA adapters in flight (synthetic adapters of the article's rank and targets)")
    figstyle.legend_outside(ax)
    return fig
