"""The figures of the engine_comparison chapter: throughput and TTFT against concurrency, one colour and marker
per engine (Okabe–Ito), published points as labelled open markers never joined to measured lines, and stalled
points (:func:`~.analysis.stalled_points`) circled and named."""

from __future__ import annotations

import pandas as pd

from llmstudy.chapters.engine_comparison.analysis import published, stalled_points

MARKERS = ("o", "s", "^", "D", "v")
REF_COLOUR = "#555555"
STALL_COLOUR = "#D55E00"  # Okabe–Ito vermillion


def engine_styles(engines) -> dict:
    """One (colour, marker) per engine, in a fixed order (so an engine keeps its colour across figures)."""
    from llmstudy.publishing import figstyle as FS

    return {e: (FS.color(i), MARKERS[i % len(MARKERS)]) for i, e in enumerate(sorted(engines))}


def _log2_axis(ax, values) -> None:
    ax.set_xscale("log", base=2)
    ticks = sorted({int(v) for v in values})
    ax.set_xticks(ticks, [f"{t:,}" for t in ticks])
    ax.minorticks_off()


def _lines(ax, d: pd.DataFrame, x: str, y: str, styles: dict, label_ends: bool = False) -> None:
    for e, g in d.groupby("engine", sort=True):
        g = g.sort_values(x)
        colour, marker = styles[e]
        ax.plot(g[x], g[y], marker=marker, ms=5, lw=1.8, color=colour, label=e)
        if label_ends and len(g):
            ax.annotate(e, (g[x].iloc[-1], g[y].iloc[-1]), xytext=(6, 0), textcoords="offset points", va="center", fontsize=9, color=colour, fontweight="bold")


def _references(ax, references: pd.DataFrame | None, col: str) -> list:
    refs = references[references["column"] == col] if references is not None and len(references) else pd.DataFrame(columns=["concurrency", "value", "label"])
    for r in refs.itertuples():
        ax.scatter([r.concurrency], [r.value], marker="D", facecolors="none", edgecolors=REF_COLOUR, lw=1.5, s=60, zorder=5)
        ax.annotate(r.label, (r.concurrency, r.value), textcoords="offset points", xytext=(8, 0), ha="left", va="center", fontsize=8, color="#333333")
    return list(refs["concurrency"])


def _mark_stalls(ax, d: pd.DataFrame, y: str, stalls: pd.DataFrame) -> None:
    """Circle the stalled points on ``ax`` and name them (TTFT stalls, not steady state)."""
    for s in stalls.itertuples():
        row = d[(d["engine"] == s.engine) & (d["concurrency"] == s.concurrency)]
        if not len(row) or y not in row or pd.isna(row[y].iloc[0]):
            continue
        v = row[y].iloc[0]
        ax.scatter([s.concurrency], [v], s=260, facecolors="none", edgecolors=STALL_COLOUR, lw=1.8, zorder=6)
        ax.annotate("first-batch stall\n(see text)", (s.concurrency, v), xytext=(10, 12), textcoords="offset points", fontsize=8, color=STALL_COLOUR)


def key_figure(df: pd.DataFrame, title: str, references: pd.DataFrame | None = None):
    """The chapter's answer in one figure: total and per-user output throughput against concurrency, one labelled line
    per engine, the article's published points as open diamonds."""
    import matplotlib.pyplot as plt

    styles = engine_styles(df["engine"].unique())
    d = df.sort_values(["engine", "concurrency"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.7))
    for ax, col, label in ((axes[0], "output_token_throughput", "total output (tokens/s)"), (axes[1], "output_token_throughput_per_user_avg", "per-user output (tokens/s)")):
        _lines(ax, d, "concurrency", col, styles)
        extra = _references(ax, references, col)
        _log2_axis(ax, list(d["concurrency"]) + extra)
        ax.set_xlim(right=d["concurrency"].max() * 2.5)
        ax.set_ylim(0, None)
        ax.set(xlabel="concurrency", ylabel=label)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=len(labels))
    fig.suptitle(title)
    return fig


def throughput_figure(df: pd.DataFrame, title: str, references: pd.DataFrame | None = None):
    """Per-user and total output throughput against concurrency, one line per engine. ``references``: labelled
    published points (engine, concurrency, metric column, value) drawn as open markers, never joined to measured
    lines. Stalled points (:func:`~.analysis.stalled_points`) are circled on the total."""
    import matplotlib.pyplot as plt

    styles = engine_styles(df["engine"].unique())
    d = df.sort_values(["engine", "concurrency"])
    stalls = stalled_points(d) if "time_to_first_token_avg" in d else pd.DataFrame()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.9))
    for ax, col, label in ((axes[0], "output_token_throughput_per_user_avg", "per-user output (tokens/s)"), (axes[1], "output_token_throughput", "total output (tokens/s)")):
        _lines(ax, d, "concurrency", col, styles)
        extra = _references(ax, references, col)
        _log2_axis(ax, list(d["concurrency"]) + extra)
        if col == "output_token_throughput" and len(stalls):
            _mark_stalls(ax, d, col, stalls)
        ax.set_ylim(0, None)
        ax.set(xlabel="concurrency", ylabel=label)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=len(labels))
    fig.suptitle(title)
    return fig


def ttft_figure(df: pd.DataFrame, title: str):
    """TTFT (avg and p99) against concurrency, one line per engine; stalled points circled."""
    import matplotlib.pyplot as plt

    styles = engine_styles(df["engine"].unique())
    d = df.sort_values(["engine", "concurrency"])
    stalls = stalled_points(d) if "time_to_first_token_avg" in d else pd.DataFrame()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, col, label in ((axes[0], "time_to_first_token_avg", "TTFT, avg (ms)"), (axes[1], "time_to_first_token_p99", "TTFT, p99 (ms)")):
        if col in d:
            _lines(ax, d, "concurrency", col, styles)
            if len(stalls):
                _mark_stalls(ax, d, col, stalls)
        _log2_axis(ax, d["concurrency"])
        ax.set_yscale("log")
        ax.set(xlabel="concurrency", ylabel=label)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=len(labels))
    fig.suptitle(title)
    return fig


def refs_7b() -> pd.DataFrame:
    """The article's §6.6 pair as reference points for :func:`throughput_figure` (total output throughput at c=16)."""
    p = published()
    p = p[p["section"].astype(str) == "6.6"]
    return pd.DataFrame({"column": "output_token_throughput", "concurrency": p["concurrency"].astype(int), "value": p["value"].astype(float),
                         "label": [("Triton + TRT-LLM" if "Triton" in s else s) + ", published" for s in p["server"]]})


def refs_gptoss() -> pd.DataFrame:
    """The article's §8.1 trtllm-serve number at c=1 as a reference point (per-user output throughput)."""
    p = published()
    p = p[(p["section"].astype(str) == "8.1") & p["metric"].str.contains("TTFT excluded")]
    return pd.DataFrame({"column": "output_token_throughput_per_user_avg", "concurrency": p["concurrency"].astype(int), "value": p["value"].astype(float),
                         "label": ["trtllm-serve, published" for _ in range(len(p))]})
