"""The context_limits page's figures and tables, from a :class:`~.statements.Chapter`.

Each function returns ``(figure or styled table, source)``; ``source`` is the keyword arguments of
:func:`llmstudy.core.book.provenance` for it, so a notebook cell is ``x, src = F.thing(ch); display(x); provenance(**src)``.
"""

from __future__ import annotations

import pandas as pd

from llmstudy.chapters.context_limits.analysis import record_decomposition
from llmstudy.chapters.context_limits.published import (
    ARTICLE_TABLE,
    DECOMPOSITION,
    decomposition,
)
from llmstudy.chapters.context_limits.run import GPU_CONFIGS
from llmstudy.chapters.context_limits.statements import Chapter, fmt
from llmstudy.serving.kv_planner import GPUS, PRECISION_LABEL, VERSIONS, Deployment, plan, plans

EXPERIMENT = "context_limits"
ARTICLE_SOURCE = "the article's recommendation table (Fixstars 2025-04)"


def _llama4_configs():
    """The device configurations of the article's models (other families have their own section)."""
    return [c for c in GPU_CONFIGS.values() if c.model in {m for _, m, *_ in ARTICLE_TABLE}]


def _runs(df: pd.DataFrame) -> list:
    return list(df.run_id) if len(df) and "run_id" in df else []


# --- tables --------------------------------------------------------------------------------------------------------

def rules_table():
    rules = pd.DataFrame([{
        "vLLM": v.version,
        "Llama 4 local layers in the KV cache": "full length (all 48 layers)" if v.hybrid_kv_default is None else "hybrid: chunk + batch only (36 of 48 layers)",
        "'GPU KV cache size' logged as": "num_blocks × 16" if not v.tokens_from_concurrency else "int(max_concurrency × max_model_len)",
        "CUDA-graph memory subtracted": "yes (estimate)" if v.subtracts_cudagraphs else "no (captured afterwards)",
        "non-torch memory counted": "whole device (CUDA context included)" if v.counts_cuda_context else "growth since init snapshot",
        "sampler bytes / logit (profiling)": v.sampler_bytes_per_logit,
    } for v in VERSIONS.values()]).set_index("vLLM")
    return rules, {"computed": "the planner's per-version rules (llmstudy.chapters.context_limits.VERSIONS, read from vLLM 0.8.3 and 0.25.0 sources)"}


def article_table(ch: Chapter):
    show = ch.art[["model", "GPUs", "precision", "article: recommended max_model_len", "planner: outcome", "planner: weights/GPU GiB",
                   "planner: KV GiB/GPU", "at max_model_len", "planner: logged KV tokens", "planner: largest max_model_len", "agrees"]]
    styled = show.style.format({"at max_model_len": fmt, "planner: logged KV tokens": fmt, "planner: largest max_model_len": fmt,
                                "planner: weights/GPU GiB": "{:.1f}", "planner: KV GiB/GPU": "{:.1f}"}).set_caption(
        "Llama 4: article (Fixstars 2025-04, published) vs planner (PREDICTION, vLLM 0.8.3 rules, default estimates, multimodal checkpoints)")
    return styled, {"computed": "the planner (vLLM 0.8.3 rules, model configs in data/models/)", "published": ARTICLE_SOURCE}


def blog_table(ch: Chapter):
    blog = ch.blog
    styled = blog.drop(columns=["config"]).style.format(
        {c: fmt for c in blog.columns if "max_model_len" in c or "tokens" in c or c == "model maximum"} | {"fp8 KV gain": "{:.2f}"}).set_caption(
        "Llama 4: vLLM blog (2025-04-05, published) vs planner (PREDICTION, 0.8.3 rules unless named)")
    return styled, {"computed": "the planner (vLLM 0.8.3 and 0.25.0 rules)", "published": "vLLM blog \"Llama 4 in vLLM\" (2025-04-05)"}


MEASURED_COLUMNS = ["record", "config", "tp", "outcome", "gpu_memory_utilization", "max_model_len", "weights_gib", "pred_weights_gib",
                    "available_kv_gib", "pred_available_kv_gib", "kv_cache_tokens", "pred_kv_cache_tokens", "error_pct",
                    "measured_inputs_error_pct", "formula_kv_cache_tokens", "outcome_agrees"]


def measured_table(ch: Chapter):
    """Llama 4's measured configurations against the planner; before any record, the planner's view of them."""
    cmp_ = ch.cmp
    if not len(cmp_):
        pred = plans([c.deployment() for c in _llama4_configs()])[["label", "outcome", "weights_GiB", "activation_peak_GiB", "non_torch_GiB",
                                                                      "cudagraph_GiB", "available_kv_GiB", "kv_cache_tokens", "max_model_len_that_starts"]]
        return (pred.style.set_caption("PREDICTIONS for the Llama 4 device configurations (no measurement yet)"),
                {"experiment": EXPERIMENT, "run_ids": [], "computed": "the planner's predictions for the device configurations"})
    show = cmp_.assign(record=cmp_["run_id"] + " (" + cmp_["gpu"] + ")")[MEASURED_COLUMNS]
    ints = {c: fmt for c in ("max_model_len", "kv_cache_tokens", "pred_kv_cache_tokens", "formula_kv_cache_tokens")}
    styled = show.style.format(ints | {"gpu_memory_utilization": "{:.4f}"}, na_rep="").format(
        "{:.2f}", subset=[c for c in MEASURED_COLUMNS if c.endswith(("_gib", "_pct"))], na_rep="").set_caption(
        "Llama 4 measured (vLLM 0.25.0, 4× and 8×H200, dummy weights) vs planner: predicted with estimates, with measured inputs, and the formula alone")
    return styled, {"experiment": EXPERIMENT, "run_ids": _runs(cmp_), "computed": "the planner's predictions"}


def published_cells_table(ch: Chapter):
    pvm = ch.pvm
    styled = pvm.fillna({"record": "—", "measured": "—"}).style.format(
        {c: fmt for c in ("tested max_model_len", "logged KV tokens", "planner (0.25.0) tokens")}, na_rep="").set_caption(
        "Llama 4's published cells (article: vLLM 0.8.3 on H100; blog: v0.8.3+) and the vLLM 0.25.0 run that tests each (H100 cells: emulated budget on H200)")
    return styled, {"experiment": EXPERIMENT, "run_ids": [r.split("/")[0] for r in pvm.record.dropna()],
                    "published": "the article's recommendation table (Fixstars 2025-04) and the vLLM blog (2025-04-05)"}


def context_vs_gpus_table(ch: Chapter):
    styled = ch.cvg_wide.style.format(lambda v: "OOM" if v == 0 else fmt(v)).set_caption(
        "Llama 4: largest max_model_len that starts (PREDICTION; OOM = weights do not fit)")
    return styled, {"computed": "the planner over 1–8 GPUs (predictions)"}


def version_effect_table(ch: Chapter):
    styled = ch.ve.style.format({"logged_KV_tokens": fmt, "largest_max_model_len": fmt, "max_concurrency": "{:.2f}", "available_KV_GiB": "{:.1f}",
                                 "cudagraph_GiB": "{:.1f}", "activation_GiB": "{:.1f}"}).set_caption("Llama 4: version effect (PREDICTION, default estimates)")
    return styled, {"computed": "the planner under vLLM 0.8.3 and 0.25.0 rules (predictions)"}


REQUEST_COLUMNS = ("run_id", "config", "prompt_tokens_sent", "prompt_tokens_reported", "output_tokens", "ttft_s", "total_s", "outcome", "error")


def requests_table(ch: Chapter):
    """Llama 4 Scout's long requests (a one-line table saying so while no record has one)."""
    reqs = ch.long_requests
    if not len(reqs):
        return (pd.DataFrame({"long requests": ["no record yet (configuration scout-fp8-h100-long)"]}).style.hide(axis="index"),
                {"experiment": EXPERIMENT, "run_ids": []})
    styled = reqs[[c for c in REQUEST_COLUMNS if c in reqs]].style.format(
        {"prompt_tokens_sent": fmt, "prompt_tokens_reported": fmt, "output_tokens": fmt, "ttft_s": "{:.2f}", "total_s": "{:.2f}"}, na_rep="")
    return styled, {"experiment": EXPERIMENT, "run_ids": _runs(reqs)}


def model_table(ch: Chapter):
    """The page's model: longest context that starts per weight format and number of GPUs (predictions)."""
    t = ch.model_table
    styled = t.style.format({"largest_max_model_len": lambda v: "" if v is None or pd.isna(v) else ("OOM" if v == 0 else fmt(v)),
                             "weights_GiB": "{:.2f}", "kv_GiB": "{:.2f}"}, na_rep="").hide(axis="index").set_caption(
        f"{ch.title}: largest max_model_len that starts on {GPUS[ch.gpu].name.replace('NVIDIA ', '')}, vLLM {ch.vllm_version} rules, "
        f"{ch.kv_dtype} KV cache (PREDICTION)")
    return styled, {"computed": f"the planner for {ch.name} (config in data/models/ or the given path; predictions)"}


def family_table(ch: Chapter):
    fam = ch.family
    if not len(fam):
        return (pd.DataFrame({"other model families": ["no run record yet (the section above says how to make one)"]}).style.hide(axis="index"),
                {"experiment": EXPERIMENT, "run_ids": []})
    # what every row shares (TP, max_model_len) goes into the caption; the config name repeats the model's
    shown = fam.drop(columns=["config", "tp", "max_model_len"]).rename(columns={"run_id": "run", "error %": "error"})
    tp, lens = sorted(set(fam["tp"].dropna().astype(int))), sorted(set(fam["max_model_len"].dropna().astype(int)))
    styled = shown.style.format({"logged KV tokens": fmt, "planned KV tokens": fmt, "error": "{:+.2f}%"}, na_rep="—").hide(axis="index").set_caption(
        f"Planner vs vLLM on model families other than Llama 4: TP={', '.join(map(str, tp))}, max_model_len "
        f"{', '.join(f'{v:,}' for v in lens)}; logged = vLLM's 'GPU KV cache size', planned = the planner with its default estimates")
    return styled, {"experiment": EXPERIMENT, "run_ids": _runs(fam), "computed": "the planner's predictions"}


# --- figures -------------------------------------------------------------------------------------------------------

def memory_figure(ch: Chapter):
    """Per-GPU memory split: the article's configurations (0.8.3), the device configurations (predicted), the records."""
    import matplotlib.pyplot as plt

    from llmstudy.training import memory as mm

    cfgs = [c for c in _llama4_configs() if c.kv_dtype == "auto"]
    pred = [plan(c.deployment()) for c in cfgs]
    labels = [f"{c.name} (predicted{', H100 budget' if c.budget == 'h100' else ''})" for c in cfgs]
    art_plans = [plan(Deployment(model=m, gpu="h100-80gb", num_gpus=n, weights=w, vllm_version="0.8.3", max_model_len=L))
                 for _, m, w, n, _, L in ARTICLE_TABLE if L]
    art_labels = [f"article: {p.deployment.short_label()} (0.8.3)" for p in art_plans]
    dec = pd.concat([decomposition(art_plans, art_labels), decomposition(pred, labels),
                     record_decomposition(ch.runs) if len(ch.runs) else pd.DataFrame()], ignore_index=True)
    fig, ax = plt.subplots(figsize=(11, 0.6 + 0.42 * dec.config.nunique()))
    mm.stacked_bars(dec, "config", "Llama 4 memory per GPU (GiB): what vLLM subtracts before the KV cache (predicted unless 'measured')",
                    hue_order=DECOMPOSITION, ax=ax)
    return fig, {"experiment": EXPERIMENT, "run_ids": _runs(ch.runs), "computed": "the planner (bars marked predicted)",
                 "published": "the article's configurations"}


def context_vs_gpus_figure(ch: Chapter):
    import seaborn as sns

    cvg = ch.cvg
    g = sns.relplot(data=cvg[cvg.outcome == "starts"], x="GPUs", y="largest_max_model_len", hue="series", style="vllm", col="gpu",
                    kind="line", markers=True, height=3.6, aspect=1.15, facet_kws={"sharey": True})
    for ax in g.axes.flat:
        ax.set_yscale("log")
        ax.set_xticks([1, 2, 4, 8])
        ax.axhline(10_485_760, color="grey", lw=0.8, ls=":")
        ax.axhline(1_048_576, color="grey", lw=0.8, ls="--")
    started = ch.started
    for budget, facet in (("h100", "h100-80gb"), ("h200", "h200")):
        pts = started[started.budget == budget] if len(started) else started
        if facet in g.axes_dict and len(pts):
            g.axes_dict[facet].scatter(pts.num_gpus, pts.max_model_len, marker="X", s=60, color="black", zorder=5)
    g.set_axis_labels("GPUs (tensor parallel)", "largest max_model_len that starts")
    g.figure.suptitle("Llama 4, PREDICTION: longest context that starts (lines); black X: a measured start, a lower bound\n"
                      "(dotted: Scout's 10.5 M maximum, dashed: Maverick's 1 M)", y=1.08)
    return g.figure, {"experiment": EXPERIMENT, "run_ids": _runs(started), "computed": "the planner over 1–8 GPUs (predictions, lines)"}


def version_effect_figure(ch: Chapter):
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(8, 3.2))
    sns.barplot(data=ch.ve, y="deployment", x="largest_max_model_len", hue="rules", ax=ax)
    ax.set(xscale="log", xlabel="largest max_model_len that starts (PREDICTION, capped at the model maximum)", ylabel="")
    ax.set_title("Llama 4 under vLLM 0.8.3 and 0.25.0 rules", fontsize="medium")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small")
    return fig, {"computed": "the planner under vLLM 0.8.3 and 0.25.0 rules (predictions)"}


def model_memory_figure(ch: Chapter):
    """The page's model: per-GPU memory split of its plan per number of GPUs (the weight format of the page).
    None (and the reason as the source's ``computed``) when the planner plans none of them."""
    import matplotlib.pyplot as plt

    from llmstudy.chapters.context_limits.analysis import model_plan
    from llmstudy.training import memory as mm

    got = [model_plan(ch.model, ch.gpu, n, ch.weights, ch.kv_dtype, ch.vllm_version, ch.max_model_len) for n in (1, 2, 4, 8)]
    ps = [p for p in got if not isinstance(p, str)]
    if not ps:
        return None, {"computed": f"nothing: the planner plans no deployment of {ch.name} ({got[0]})"}
    labels = [f"{ch.name} {p.deployment.num_gpus}×{p.deployment.gpu} {PRECISION_LABEL[ch.plan_weights]} (predicted)" for p in ps]
    dec = decomposition(ps, labels)
    fig, ax = plt.subplots(figsize=(11, 0.8 + 0.42 * dec.config.nunique()))
    mm.stacked_bars(dec, "config", f"{ch.title}: memory per GPU (GiB) by number of GPUs (PREDICTION)", hue_order=DECOMPOSITION, ax=ax)
    return fig, {"computed": f"the planner for {ch.name} (predictions)"}
