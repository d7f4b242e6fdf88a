"""The figures of the vllm_features chapter."""

from __future__ import annotations

import numpy as np
import pandas as pd  # noqa: F401

from llmstudy.chapters.vllm_features.analysis import METRICS
from llmstudy.chapters.vllm_features.plan import ARMS


def figure(cmp: pd.DataFrame, title: str, metrics=("output_token_throughput", "time_to_first_token_avg", "inter_token_latency_avg")):
    """Arm / baseline per arm and workload on a log axis (ratios from 0.1x to 100x share one panel), one panel per
    metric; the grey bar is the noise band (1 ± noise)."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    d = cmp[cmp["metric"].isin(metrics)].copy()
    d["order"] = d["arm"].map({a: i for i, a in enumerate(ARMS)}).fillna(len(ARMS))
    d = d.sort_values("order", kind="stable")
    d["row"] = d["arm"] + " · " + d["workload"] + (" · " + d["run_id"] if d["run_id"].nunique() > 1 else "")
    order = list(dict.fromkeys(d["row"]))
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.6 * len(metrics), 0.42 * len(order) + 1.8), sharey=True, squeeze=False)
    for ax, m in zip(axes.flat, metrics):
        x = d[d["metric"] == m].set_index("row").reindex(order)
        y = np.arange(len(order))
        n = x["noise_pct"].fillna(0) / 100
        ax.barh(y, 2 * n, left=1 - n, color="0.85", label="noise band")
        colors = ["tab:blue" if b else "0.55" for b in x["larger_than_noise"].fillna(False)]
        ax.scatter(1 + x["delta_pct"] / 100, y, c=colors, zorder=3)
        ax.axvline(1, color="0.3", lw=0.8)
        ax.set_xscale("log")
        r = (1 + x["delta_pct"] / 100).dropna()
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1, 2, 5) if len(r) and max(r.max(), 1) / min(r.min(), 1) < 30 else (1,)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}×"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        label, _, better = METRICS[m]
        ax.set(title=f"{label} ({better} is better)", xlabel="arm / baseline (log scale)")
        ax.set_yticks(y, order)
        ax.invert_yaxis()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


