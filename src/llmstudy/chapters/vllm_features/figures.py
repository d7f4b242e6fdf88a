"""The figures of the vllm_features chapter: the forest plot of every arm against its baseline."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from llmstudy.chapters.vllm_features.analysis import METRICS
from llmstudy.chapters.vllm_features.plan import ARMS

GROUP_TITLES = {  # the forest plot's sections, in this order; arms of other groups come last under their group's name
    "core": "Execution and scheduling",
    "quant": "Memory formats",
    "kernels": "Paging and attention kernels",
    "spec": "Speculative decoding (gemma-3-270m)",
    "extra": "Extra arms",
}
ROW_IN = 0.3  # inches per row: ~40 labels stay readable at the text column's width
HEADER_IN = 0.34


def workload_order(workload: str) -> tuple:
    """Standard workloads by concurrency first, then the special ones (shared prefix, long prompts, real text)."""
    kinds = ("", "shared prefix", "long prompts", "grounded", "open")
    m = re.match(r"^(.*?)\s*c(\d+)$", workload)
    kind, c = (m.group(1), int(m.group(2))) if m else (workload, 0)
    return (kinds.index(kind) if kind in kinds else len(kinds), kind, c)


def forest_rows(cmp: pd.DataFrame, metrics=("output_token_throughput", "time_to_first_token_avg", "inter_token_latency_avg")) -> pd.DataFrame:
    """The rows of the forest plot, in plot order: one per arm and workload (where several records measured the same
    arm and workload, the latest record, as the chapter's text quotes it), grouped by the arm's group, arms sorted by
    their largest throughput change (largest first), workloads in :func:`workload_order`. Columns: ``group``, ``arm``,
    ``workload``, ``run_id``, ``row`` (the label) and per metric ``ratio_<m>``, ``noise_<m>``, ``beyond_<m>``."""
    d = cmp[cmp["metric"].isin(metrics)].sort_values("run_id", kind="stable")
    d = d.drop_duplicates(["arm", "workload", "metric"], keep="last")
    if not len(d):
        return pd.DataFrame(columns=["group", "arm", "workload", "run_id", "row"])
    wide = d.pivot_table(index=["arm", "workload"], columns="metric", values=["delta_pct", "noise_pct", "larger_than_noise"], aggfunc="first")
    runs = d.groupby(["arm", "workload"])["run_id"].last()
    rows = []
    for (arm, wl), r in wide.iterrows():
        row = {"group": ARMS[arm].group if arm in ARMS else "extra", "arm": arm, "workload": wl, "run_id": runs[(arm, wl)], "row": f"{arm} · {wl}"}
        for m in metrics:
            delta = r.get(("delta_pct", m), np.nan)
            row[f"ratio_{m}"] = 1 + delta / 100 if pd.notna(delta) else np.nan
            row[f"noise_{m}"] = r.get(("noise_pct", m), np.nan)
            beyond = r.get(("larger_than_noise", m), False)
            row[f"beyond_{m}"] = bool(beyond) if pd.notna(beyond) else False
        rows.append(row)
    out = pd.DataFrame(rows)
    groups = list(GROUP_TITLES)
    t = f"ratio_{metrics[0]}"
    effect = out.groupby("arm")[t].agg(lambda r: np.nanmax(np.abs(np.log(r.astype(float)))) if r.notna().any() else 0.0)
    out["_g"] = out["group"].map(lambda g: groups.index(g) if g in groups else len(groups))
    out["_a"] = -out["arm"].map(effect)
    out["_w"] = out["workload"].map(workload_order)
    return out.sort_values(["_g", "_a", "arm", "_w"], kind="stable").drop(columns=["_g", "_a", "_w"]).reset_index(drop=True)


def figure(cmp: pd.DataFrame, title: str, metrics=("output_token_throughput", "time_to_first_token_avg", "inter_token_latency_avg")):
    """The forest plot: arm / baseline per arm and workload on a log axis (ratios from 0.1× to 10× share one panel),
    one panel per metric, rows grouped by the arm's group and sorted by effect (:func:`forest_rows`). The grey bar is
    the noise band (1 ± noise); a filled dot is a change beyond it, blue where it is better for the metric and
    vermillion where it is worse; a hollow grey dot is within the noise."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    from llmstudy.publishing import figstyle

    rows = forest_rows(cmp, metrics)
    y, labels, headers, pos = [], [], [], 0.0
    for g, part in rows.groupby("group", sort=False):
        headers.append((pos, GROUP_TITLES.get(g, g)))
        pos += HEADER_IN / ROW_IN
        for label in part["row"]:
            y.append(pos)
            labels.append(label)
            pos += 1
        pos += 0.3
    height = ROW_IN * pos + 1.6
    fig, axes = plt.subplots(1, len(metrics), figsize=(figstyle.WIDTH_IN, height), sharey=True, squeeze=False, layout="constrained")
    better, worse, within = figstyle.color(0), figstyle.color(5), "#8a8a8a"
    y = np.array(y)
    for ax, m in zip(axes.flat, metrics):
        ratio = rows[f"ratio_{m}"].astype(float).to_numpy()
        noise = rows[f"noise_{m}"].astype(float).fillna(0).to_numpy() / 100
        beyond = rows[f"beyond_{m}"].to_numpy(dtype=bool)
        has = ~np.isnan(ratio)
        ax.barh(y[has], 2 * noise[has], left=1 - noise[has], height=0.7, color="#dddddd", zorder=1)
        higher_is_better = METRICS[m][2] == "higher"
        good = (ratio > 1) == higher_is_better
        for mask, face, edge in ((has & beyond & good, better, better), (has & beyond & ~good, worse, worse), (has & ~beyond, "white", within)):
            ax.scatter(ratio[mask], y[mask], s=26, facecolor=face, edgecolor=edge, linewidth=1.2, zorder=3)
        ax.axvline(1, color="#333333", lw=0.8, zorder=2)
        ax.set_xscale("log")
        r = ratio[has]
        lo, hi = (min(r.min(), 0.9), max(r.max(), 1.1)) if r.size else (0.5, 2)
        ax.set_xlim(lo / 1.25, hi * 1.25)
        span = np.log10(hi / lo)  # decades shown: fewer tick labels the wider the panel's range, so none overlap
        cands = (0.01, 0.1, 1, 10, 100) + ((0.5, 2) if span < 2.2 else ()) + ((0.2, 5) if span < 1.2 else ())
        ticks = sorted(t for t in cands if lo / 1.25 <= t <= hi * 1.25)
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}×"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.grid(axis="y", visible=False)
        label, _, direction = METRICS[m]
        ax.set_title(f"{label[0].upper() + label[1:]}\n({direction} is better)", fontsize=12)
        ax.tick_params(axis="x", labelsize=10.5)
        ax.set_xlabel("arm / baseline (log)")
        for hy, _ in headers:
            ax.axhline(hy + HEADER_IN / ROW_IN / 2 - 0.15, color="#bbbbbb", lw=0.6, zorder=0)
    ax0 = axes.flat[0]
    ax0.set_yticks(y, labels, fontsize=11)
    for hy, text in headers:
        ax0.annotate(text, xy=(0, hy + 0.35), xycoords=("axes fraction", "data"), xytext=(-4, 0), textcoords="offset points",
                     ha="right", va="center", fontsize=11.5, fontweight="bold", annotation_clip=False)
    ax0.set_ylim(pos, -0.3)
    handles = [Line2D([], [], marker="o", ls="", color=better, label="better, beyond the noise"),
               Line2D([], [], marker="o", ls="", color=worse, label="worse, beyond the noise"),
               Line2D([], [], marker="o", ls="", markerfacecolor="white", markeredgecolor=within, label="within the noise"),
               Patch(color="#dddddd", label="noise band (± the larger spread of either side)")]
    fig.legend(handles=handles, loc="outside lower center", ncol=2, frameon=False, fontsize=10.5)
    fig.suptitle(title, fontsize=13, fontweight="bold")
    return fig
