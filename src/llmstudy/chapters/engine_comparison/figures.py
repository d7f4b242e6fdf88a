"""The figures of the engine_comparison chapter: throughput and TTFT against concurrency, published points as
labelled open markers."""

from __future__ import annotations

import pandas as pd

from llmstudy.chapters.engine_comparison.analysis import ARTICLE_GPU, published


def _log2_axis(ax, values) -> None:
    ax.set_xscale("log", base=2)
    ticks = sorted({int(v) for v in values})
    ax.set_xticks(ticks, [f"{t:,}" for t in ticks])
    ax.minorticks_off()


def throughput_figure(df: pd.DataFrame, title: str, references: pd.DataFrame | None = None):
    """The article's throughput plot: per-user and total output throughput against concurrency, and per-user
    against total (each point one concurrency). ``references``: labelled published points (engine, concurrency,
    metric column, value) drawn as open markers, never joined to measured lines."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.4))
    d = df.sort_values(["engine", "concurrency"])
    for ax, col, label in ((axes[0], "output_token_throughput_per_user_avg", "per-user output throughput (tokens/s)"), (axes[1], "output_token_throughput", "total output throughput (tokens/s)")):
        sns.lineplot(data=d, x="concurrency", y=col, hue="engine", marker="o", ax=ax, legend=ax is axes[0])
        refs = references[references["column"] == col] if references is not None and len(references) else pd.DataFrame(columns=["concurrency"])
        for r in refs.itertuples():
            ax.scatter([r.concurrency], [r.value], marker="D", facecolors="none", edgecolors="crimson", s=70, zorder=5)
            ax.annotate(r.label, (r.concurrency, r.value), textcoords="offset points", xytext=(-6, 6), ha="right", fontsize=7, color="crimson")
        _log2_axis(ax, list(d["concurrency"]) + list(refs["concurrency"]))
        ax.set(xlabel="concurrency", ylabel=label)
    for e, g in d.groupby("engine"):
        axes[2].plot(g["output_token_throughput"], g["output_token_throughput_per_user_avg"], marker="o", label=e)
        for r in g.itertuples():
            axes[2].annotate(str(int(r.concurrency)), (r.output_token_throughput, r.output_token_throughput_per_user_avg), textcoords="offset points", xytext=(3, 3), fontsize=7)
    axes[2].set(xlabel="total output throughput (tokens/s)", ylabel="per-user output throughput (tokens/s)", title="each point: one concurrency")
    axes[2].legend(fontsize="small")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def ttft_figure(df: pd.DataFrame, title: str):
    """TTFT (avg and p99) against concurrency, one line per engine."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    d = df.sort_values(["engine", "concurrency"])
    for ax, col, label in ((axes[0], "time_to_first_token_avg", "TTFT, avg (ms)"), (axes[1], "time_to_first_token_p99", "TTFT, p99 (ms)")):
        if col in d:
            sns.lineplot(data=d, x="concurrency", y=col, hue="engine", marker="o", ax=ax, legend=ax is axes[0])
        _log2_axis(ax, d["concurrency"])
        ax.set_yscale("log")
        ax.set(xlabel="concurrency", ylabel=label)
    fig.suptitle(title)
    fig.tight_layout()
    return fig




def refs_7b() -> pd.DataFrame:
    """The article's §6.6 pair as reference points for :func:`throughput_figure` (total output throughput at c=16)."""
    p = published()
    p = p[p["section"].astype(str) == "6.6"]
    return pd.DataFrame({"column": "output_token_throughput", "concurrency": p["concurrency"].astype(int), "value": p["value"].astype(float),
                         "label": [f"{s}, published ({ARTICLE_GPU})" for s in p["server"]]})


def refs_gptoss() -> pd.DataFrame:
    """The article's §8.1 trtllm-serve number at c=1 as a reference point (per-user output throughput)."""
    p = published()
    p = p[(p["section"].astype(str) == "8.1") & p["metric"].str.contains("TTFT excluded")]
    return pd.DataFrame({"column": "output_token_throughput_per_user_avg", "concurrency": p["concurrency"].astype(int), "value": p["value"].astype(float),
                         "label": ["trtllm-serve c=1, published §8.1" for _ in range(len(p))]})
