"""The chapter's figures (matplotlib, styled by :mod:`llmstudy.publishing.figstyle`); each returns what it drew on."""

from __future__ import annotations

import pandas as pd

from llmstudy.publishing import figstyle
from llmstudy.training import memory as mm

from .analysis import RULE_MARKS

COMPONENT_LABELS = {"weights": "weights", "gradients": "gradients", "optimizer": "optimizer state", "activations": "activations",
                    "temporary": "temporary buffers", "paged": "paged optimizer (managed memory)"}


def per_param_bars(pp: pd.DataFrame, model: str):
    """The key figure: GB per billion parameters of each configuration of :func:`analysis.per_param`, split into a
    full-fine-tuning panel and a LoRA/QLoRA panel (each on its own scale, so QLoRA's 0.6 is as visible as full's 12),
    predicted components stacked, the measured allocator peak as a black diamond, the article's 12x/2x/0.7x rules
    as reference lines. Returns the figure."""
    import matplotlib.pyplot as plt

    comps = [c for c in (*mm.MEMORY_COMPONENTS, "paged") if c in pp and (pp[c].fillna(0) > 0).any()]
    panels = [("Full fine-tuning", pp[pp.method == "full"], ("full",)), ("LoRA and QLoRA", pp[pp.method != "full"], ("lora", "qlora"))]
    fig, axes = plt.subplots(1, 2, figsize=(figstyle.WIDTH_IN, 3.6), gridspec_kw={"width_ratios": [1.3, 1]})
    colors = {c: figstyle.color(i) for i, c in enumerate(comps)}
    for ax, (title, df, marks) in zip(axes, panels):
        y = list(range(len(df)))
        left = pd.Series(0.0, index=df.index)
        for c in comps:
            vals = df[c].fillna(0)
            ax.barh(y, vals, left=left, color=colors[c], label=COMPONENT_LABELS[c], height=0.62,
                    hatch="//" if c == "paged" else None, edgecolor="white" if c == "paged" else None, linewidth=0)
            left = left + vals
        meas = df.measured_GB_per_B
        if meas.notna().any():
            ax.scatter(meas, y, marker="D", s=46, color="black", zorder=5, label="measured allocator peak")
        for m in marks:  # the rule's line, labelled above the panel (a label along the line would cross the bars)
            val, label = RULE_MARKS[m]
            figstyle.ref_line(ax, x=val)
            ax.annotate(label.replace(" + extras", "+"), xy=(val, 1.0), xycoords=("data", "axes fraction"), xytext=(0, 3), textcoords="offset points",
                        ha="center", va="bottom", fontsize=9, color="#555555")
        ax.set_yticks(y, list(df.config))
        ax.invert_yaxis()
        ax.set_title(title, loc="left", pad=16)
        ax.set_xlabel("GB per billion parameters")
        ax.set_xlim(0, max(left.max(), meas.max() if meas.notna().any() else 0, max(RULE_MARKS[m][0] for m in marks)) * 1.18)
        ax.grid(axis="y", visible=False)
    handles, labels = axes[0].get_legend_handles_labels()
    h2, l2 = axes[1].get_legend_handles_labels()
    for h, lab in zip(h2, l2):
        if lab not in labels:
            handles.append(h)
            labels.append(lab)
    fig.legend(handles, labels, loc="outside lower center", ncol=4, fontsize=9)
    fig.suptitle(f"{model}: predicted by component (bars), measured (diamonds); 100 tokens × batch 1", fontsize=10.5, x=0.01, ha="left",
                 fontweight="normal")
    return fig


def rules_bars(bd: pd.DataFrame):
    """Stacked bars of the rules' configurations (:func:`analysis.rules_breakdown`), GB."""
    return mm.stacked_bars(bd, "config", "Predicted memory for the rules' configurations (seq 100, batch 1)", unit="GB")


def measured_vs_predicted(ok: pd.DataFrame):
    """Measured allocator peaks against the model's predictions on log-log axes, with ±10% guides; None without rows."""
    import matplotlib.pyplot as plt
    import numpy as np

    if not len(ok):
        return None
    fig, ax = plt.subplots(figsize=(figstyle.WIDTH_IN, 5.2))
    gpus = sorted(ok.gpu.unique())
    markers = ("o", "s", "^", "v")
    for i, method in enumerate(("full", "lora", "qlora")):
        for j, gpu in enumerate(gpus):
            d = ok[(ok.method == method) & (ok.gpu == gpu)]
            if len(d):
                ax.scatter(d.predicted_peak_GiB, d.peak_allocated_GiB, s=70, color=figstyle.color(i), marker=markers[j % len(markers)],
                           edgecolor="black", linewidth=0.5, label=f"{method} · {gpu.replace('NVIDIA ', '')}", zorder=3)
    lo = min(ok.predicted_peak_GiB.min(), ok.peak_allocated_GiB.min()) / 1.3
    hi = max(ok.predicted_peak_GiB.max(), ok.peak_allocated_GiB.max()) * 1.3
    xs = np.geomspace(lo, hi, 50)
    ax.plot(xs, xs, color="#555555", lw=1, ls="--", label="prediction = measurement")
    ax.fill_between(xs, xs / 1.1, xs * 1.1, color="#999999", alpha=0.15, lw=0, label="±10%")
    ax.set(xscale="log", yscale="log", xlim=(lo, hi), ylim=(lo, hi), xlabel="predicted peak, memory model (GiB)",
           ylabel="measured peak, torch allocator (GiB)")
    from matplotlib.ticker import FuncFormatter

    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_title("Every recorded peak against its prediction", loc="left")
    figstyle.legend_outside(ax)
    return ax
