"""The chapter's figures: each function draws one from the records' tables and returns the figure."""

from __future__ import annotations

import pandas as pd

from .analysis import ARTICLE_STEPS, fast_runs, memory_vs_prediction
from .config import ARTICLE


def _plt():
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid")
    return plt, sns


def token_histogram(lengths: pd.DataFrame):
    """Llama-2 tokens per row, prompt and completion."""
    plt, sns = _plt()
    fig, ax = plt.subplots(figsize=(7, 3))
    sns.histplot(lengths.melt(value_vars=["prompt_tokens", "completion_tokens"], var_name="part", value_name="tokens"), x="tokens", hue="part", bins=40, ax=ax)
    ax.set_title("Llama-2 tokens per row (prompt in the [INST] template; completion with </s>)")
    fig.tight_layout()
    return fig


def _legend_outside(ax) -> None:
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small")


def memory_bars(speed: pd.DataFrame, speed_model: str):
    """Measured peak, predicted peak and NVML's process memory per variant, next to the article's nvidia-smi figures."""
    plt, sns = _plt()
    m = memory_vs_prediction(speed)
    long = m.melt(id_vars=["variant"], value_vars=["peak_allocated_GiB", "predicted_peak_GiB", "nvml_process_GB"], var_name="measure", value_name="GiB or GB")
    art = pd.DataFrame([{"variant": f"article {k}", "measure": "article nvidia-smi (GB)", "GiB or GB": v["nvidia_smi_MB"][1] / 1000} for k, v in ARTICLE.items() if isinstance(v, dict)])
    fig, ax = plt.subplots(figsize=(8, 4))
    sns.barplot(data=pd.concat([long, art], ignore_index=True), y="variant", x="GiB or GB", hue="measure", ax=ax)
    ax.set_title(f"{speed_model}: GPU memory in training — runs: {', '.join(sorted(m.run_id.unique()))}")
    _legend_outside(ax)
    fig.tight_layout()
    return fig


def run_time_bars(speed: pd.DataFrame, speed_model: str):
    """Our step time projected to the article's 111 steps, next to the article's measured ``time``."""
    plt, sns = _plt()
    art = pd.DataFrame([{"variant": f"article {k} (time, real)", "minutes": v["real_s"] / 60} for k, v in ARTICLE.items() if isinstance(v, dict)])
    ours = speed[speed.outcome == "ok"].assign(minutes=lambda d: d.article_run_min_projected)[["variant", "minutes"]]
    fig, ax = plt.subplots(figsize=(8, 3.5))
    sns.barplot(data=pd.concat([ours.assign(source=f"ours, projected to {ARTICLE_STEPS} steps"), art.assign(source="article, measured")], ignore_index=True),
                y="variant", x="minutes", hue="source", ax=ax)
    ax.set_title(f"{speed_model}: the article's 3-epoch run — runs: {', '.join(sorted(speed.run_id.unique()))}")
    _legend_outside(ax)
    fig.tight_layout()
    return fig


def loss_curves(qual: pd.DataFrame, history: pd.DataFrame, evals: pd.DataFrame, model: str):
    """Training loss per step and held-out loss of the runs that trained all their steps (a cut run would draw a
    second, shorter line)."""
    plt, sns = _plt()
    full = qual[qual.outcome == "ok"][["run_id", "variant"]]
    runs = sorted(full.run_id.unique())
    h = history.merge(full, on=["run_id", "variant"])
    e = evals.merge(full, on=["run_id", "variant"]) if len(evals) and "variant" in evals else evals[evals.run_id.isin(runs)]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    sns.lineplot(data=h, x="step", y="loss", hue="variant", ax=axes[0])
    axes[0].set_title("training loss per optimizer step")
    if len(e):
        sns.lineplot(data=e, x="step", y="eval_loss", hue="variant", marker="o", ax=axes[1])
    axes[1].set_title("held-out loss (Trainer, every 4 steps)")
    fig.suptitle(f"{model}: runs {', '.join(runs)}")
    fig.tight_layout()
    return fig


def commas_bars(style: pd.DataFrame, answers: pd.DataFrame):
    """「、」 per sentence: the dataset's outputs and each variant's answers."""
    plt, sns = _plt()
    fig, ax = plt.subplots(figsize=(7, 0.6 + 0.4 * len(style)))
    sns.barplot(data=style, y="source", x="commas_per_sentence", ax=ax)
    ax.set_title("ideographic commas (U+3001) per sentence — runs: " + ", ".join(sorted(answers.run_id.unique())))
    fig.tight_layout()
    return fig


def epoch_time_bars(fast: pd.DataFrame):
    """Seconds per epoch of both recipes, per model and method (log scale)."""
    plt, sns = _plt()
    long = fast.melt(id_vars=["model", "method"], value_vars=["article s/epoch", "fast s/epoch"], var_name="recipe", value_name="seconds per epoch")
    long["config"] = long.model + " · " + long.method
    fig, ax = plt.subplots(figsize=(8, 3.5))
    sns.barplot(data=long, y="config", x="seconds per epoch", hue="recipe", ax=ax)
    ax.set_xscale("log")
    ax.set_title("time per epoch (log scale) — runs: " + ", ".join(sorted(set(fast_runs(fast)))))
    _legend_outside(ax)
    fig.tight_layout()
    return fig
