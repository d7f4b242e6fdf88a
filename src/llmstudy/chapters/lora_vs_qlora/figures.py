"""The chapter's figures: each function draws one from the records' tables and returns the figure."""

from __future__ import annotations

import pandas as pd

from llmstudy.publishing import figstyle

from .analysis import ARTICLE_STEPS, memory_vs_prediction
from .config import ARTICLE


def _plt():
    import matplotlib.pyplot as plt
    import seaborn as sns

    return plt, sns  # the look is figstyle.setup()'s, called once by the notebook


def token_histogram(lengths: pd.DataFrame):
    """Llama-2 tokens per row, prompt and completion."""
    plt, sns = _plt()
    fig, ax = plt.subplots(figsize=(figstyle.WIDTH_IN, 3))
    sns.histplot(lengths.melt(value_vars=["prompt_tokens", "completion_tokens"], var_name="part", value_name="tokens"), x="tokens", hue="part", bins=40, ax=ax)
    ax.set_title("Llama-2 tokens per row (prompt in the [INST] template; completion with </s>)")
    return fig


def _legend_outside(ax) -> None:
    figstyle.legend_outside(ax)


def memory_bars(speed: pd.DataFrame, speed_model: str):
    """Measured peak, predicted peak and NVML's process memory per variant, next to the article's nvidia-smi figures."""
    plt, sns = _plt()
    m = memory_vs_prediction(speed)
    long = m.melt(id_vars=["variant"], value_vars=["peak_allocated_GiB", "predicted_peak_GiB", "nvml_process_GB"], var_name="measure", value_name="GiB or GB")
    art = pd.DataFrame([{"variant": f"article {k}", "measure": "article nvidia-smi (GB)", "GiB or GB": v["nvidia_smi_MB"][1] / 1000} for k, v in ARTICLE.items() if isinstance(v, dict)])
    fig, ax = plt.subplots(figsize=(figstyle.WIDTH_IN, 4))
    sns.barplot(data=pd.concat([long, art], ignore_index=True), y="variant", x="GiB or GB", hue="measure", ax=ax)
    ax.set_title(f"{speed_model}: GPU memory in training", loc="left")
    _legend_outside(ax)
    return fig


def run_time_bars(speed: pd.DataFrame, speed_model: str):
    """Our step time projected to the article's 111 steps, next to the article's measured ``time``."""
    plt, sns = _plt()
    art = pd.DataFrame([{"variant": f"article {k} (time, real)", "minutes": v["real_s"] / 60} for k, v in ARTICLE.items() if isinstance(v, dict)])
    ours = speed[speed.outcome == "ok"].assign(minutes=lambda d: d.article_run_min_projected)[["variant", "minutes"]]
    fig, ax = plt.subplots(figsize=(figstyle.WIDTH_IN, 3.5))
    sns.barplot(data=pd.concat([ours.assign(source=f"ours, projected to {ARTICLE_STEPS} steps"), art.assign(source="article, measured")], ignore_index=True),
                y="variant", x="minutes", hue="source", ax=ax)
    ax.set_title(f"{speed_model}: the article's 3-epoch run", loc="left")
    _legend_outside(ax)
    return fig


def loss_curves(qual: pd.DataFrame, history: pd.DataFrame, evals: pd.DataFrame, model: str):
    """Training loss per step and held-out loss of the runs that trained all their steps (a cut run would draw a
    second, shorter line)."""
    plt, sns = _plt()
    full = qual[qual.outcome == "ok"][["run_id", "variant"]]
    runs = sorted(full.run_id.unique())
    h = history.merge(full, on=["run_id", "variant"])
    e = evals.merge(full, on=["run_id", "variant"]) if len(evals) and "variant" in evals else evals[evals.run_id.isin(runs)]
    fig, axes = plt.subplots(1, 2, figsize=(figstyle.WIDTH_IN, 4), sharey=True)
    sns.lineplot(data=h, x="step", y="loss", hue="variant", ax=axes[0])
    axes[0].set_title("training loss per optimizer step")
    if len(e):
        sns.lineplot(data=e, x="step", y="eval_loss", hue="variant", marker="o", ax=axes[1])
    axes[1].set_title("held-out loss (Trainer, every 4 steps)")
    if axes[0].get_legend() is not None:
        axes[0].get_legend().remove()
    if len(e):
        figstyle.legend_outside(axes[1], title="variant")
    fig.suptitle(f"{model}: runs that trained all their steps", x=0.01, ha="left", fontsize=11)
    return fig


def commas_bars(style: pd.DataFrame, answers: pd.DataFrame):
    """「、」 per sentence: the dataset's outputs and each variant's answers."""
    plt, sns = _plt()
    fig, ax = plt.subplots(figsize=(figstyle.WIDTH_IN, 0.6 + 0.4 * len(style)))
    sns.barplot(data=style, y="source", x="commas_per_sentence", ax=ax)
    ax.set_title("「、」 per sentence: the dataset's outputs and each variant's answers", loc="left")
    ax.set_ylabel("")
    return fig


def epoch_time_bars(fast: pd.DataFrame):
    """Seconds per epoch of both recipes, per model and method (log scale)."""
    plt, sns = _plt()
    long = fast.melt(id_vars=["model", "method"], value_vars=["article s/epoch", "fast s/epoch"], var_name="recipe", value_name="seconds per epoch")
    long["config"] = long.model + " · " + long.method
    fig, ax = plt.subplots(figsize=(figstyle.WIDTH_IN, 3.5))
    sns.barplot(data=long, y="config", x="seconds per epoch", hue="recipe", ax=ax)
    ax.set_xscale("log")
    from matplotlib.ticker import FuncFormatter

    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_title("Time per epoch, article recipe against the fast one (log scale)", loc="left")
    ax.set_ylabel("")
    _legend_outside(ax)
    return fig


def key_figure(qual: pd.DataFrame, speed: pd.DataFrame, model: str, speed_model: str):
    """The page's answer in three panels: held-out loss per variant on the real small model; allocator and nvidia-smi
    memory of the 7B architecture with the article's nvidia-smi readings as reference lines; the 3-epoch time
    projected to the article's 111 steps with the article's measured times as reference lines. Returns the figure."""
    import matplotlib.pyplot as plt

    from llmstudy.publishing import figstyle

    fig, axes = plt.subplots(1, 3, figsize=(figstyle.WIDTH_IN, 3.9))
    ax = axes[0]
    q = qual[qual.eval_loss.notna() & (qual.outcome == "ok")] if len(qual) else qual
    if len(q):
        last = q.groupby("variant", sort=False).last()
        order = [v for v in ("base", "lora", "qlora", "lora-fast", "qlora-fast") if v in last.index]
        vals = last.loc[order, "eval_loss"]
        bars = ax.bar(order, vals, color=[figstyle.color(7 if v == "base" else 0 if v.startswith("lora") else 1) for v in order])
        ax.bar_label(bars, fmt="%.3f", fontsize=8.5, padding=2)
        ax.set_ylim(0, vals.max() * 1.15)
        ax.tick_params(axis="x", rotation=30)
    else:
        ax.text(0.5, 0.5, "no quality record", ha="center", transform=ax.transAxes)
    ax.set_title(f"Held-out loss, {model}", loc="left", fontsize=10.5)
    ax.set_ylabel("loss per answer token (lower is better)")

    ok = speed[(speed.outcome == "ok") & (speed.recipe == "article")] if len(speed) else speed
    ax = axes[1]
    if len(ok):
        v = list(ok.variant)
        x = range(len(v))
        b1 = ax.bar([i - 0.2 for i in x], ok.peak_allocated_GiB * 2**30 / 1e9, width=0.4, color=figstyle.color(2), label="allocator peak")
        b2 = ax.bar([i + 0.2 for i in x], ok.nvml_peak_process_GiB * 2**30 / 1e9, width=0.4, color=figstyle.color(4), label="nvidia-smi process")
        for b in (b1, b2):
            ax.bar_label(b, fmt="%.1f", fontsize=8.5, padding=2)
        ax.set_xticks(list(x), v)
        ax.axhspan(ARTICLE["lora"]["nvidia_smi_MB"][0] / 1000, ARTICLE["lora"]["nvidia_smi_MB"][1] / 1000, color="#555555", alpha=0.12, lw=0)
        figstyle.ref_line(ax, y=ARTICLE["lora"]["nvidia_smi_MB"][1] / 1000, label="article LoRA 15.1–17.0")
        figstyle.ref_line(ax, y=ARTICLE["qlora"]["nvidia_smi_MB"][0] / 1000, label="article QLoRA 7.6")
        ax.set_ylim(0, ARTICLE["lora"]["nvidia_smi_MB"][1] / 1000 * 1.25)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2, fontsize=8.5)
    ax.set_title(f"GPU memory, {speed_model}", loc="left", fontsize=10.5)
    ax.set_ylabel("GB")

    ax = axes[2]
    if len(ok):
        mins = ok.median_step_s * ARTICLE_STEPS / 60
        b = ax.bar(list(ok.variant), mins, color=[figstyle.color(0), figstyle.color(1)][: len(ok)])
        ax.bar_label(b, fmt="%.1f", fontsize=8.5, padding=2)
        figstyle.ref_line(ax, y=ARTICLE["lora"]["real_s"] / 60, label="article LoRA 19m52s")
        figstyle.ref_line(ax, y=ARTICLE["qlora"]["real_s"] / 60, label="article QLoRA 26m51s")
        ax.set_ylim(0, max(mins.max(), ARTICLE["qlora"]["real_s"] / 60) * 1.2)
    ax.set_title(f"{ARTICLE_STEPS} steps, {speed_model}", loc="left", fontsize=10.5)
    ax.set_ylabel("minutes (ours: median step × 111)")
    for a in axes:
        a.grid(axis="x", visible=False)
    return fig
