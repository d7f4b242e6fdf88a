"""The chapter's figures (matplotlib/seaborn); each returns the axes it drew on."""

from __future__ import annotations

import pandas as pd

from llmstudy.training import memory as mm


def rules_bars(bd: pd.DataFrame):
    """Stacked bars of the rules' configurations (:func:`analysis.rules_breakdown`), GB."""
    return mm.stacked_bars(bd, "config", "Predicted memory for the rules' configurations (seq 100, batch 1)", unit="GB")


def measured_vs_predicted(ok: pd.DataFrame):
    """Scatter of measured allocator peaks against the model's predictions, with ±10% guides; None without rows."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    if not len(ok):
        return None
    okp = ok.copy()
    okp["label"] = okp["setup"] + " · " + okp["gpu"].str.replace("NVIDIA ", "")
    fig, ax = plt.subplots(figsize=(7, 5))
    sns.scatterplot(data=okp, x="predicted_peak_GiB", y="peak_allocated_GiB", hue="method", style="gpu", s=90, ax=ax)
    lim = max(okp.predicted_peak_GiB.max(), okp.peak_allocated_GiB.max()) * 1.1
    ax.plot([0, lim], [0, lim], color="grey", lw=1, ls="--")
    ax.plot([0, lim], [0, lim * 1.1], color="grey", lw=0.5, ls=":")
    ax.plot([0, lim], [0, lim / 1.1], color="grey", lw=0.5, ls=":")
    ax.set(xlim=(0, lim), ylim=(0, lim), xlabel="predicted peak (GiB)", ylabel="measured peak, torch allocator (GiB)",
           title="Memory model vs measurement (dotted: ±10%)\nruns: " + ", ".join(sorted(okp.run_id.unique())))
    return ax
