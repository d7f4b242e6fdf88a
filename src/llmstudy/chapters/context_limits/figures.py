"""The context_limits page's figures and tables, from a :class:`~.statements.Chapter`.

Each function returns ``(figure or styled table, source)``; ``source`` is the keyword arguments of
:func:`llmstudy.core.book.provenance` for it, so a notebook cell is ``x, src = F.thing(ch); display(x); provenance(**src)``.
"""

from __future__ import annotations

import warnings

import pandas as pd

from llmstudy.chapters.context_limits.analysis import record_decomposition
from llmstudy.chapters.context_limits.published import (
    ARTICLE_TABLE,
    DECOMPOSITION,
    decomposition,
)
from llmstudy.chapters.context_limits.run import GPU_CONFIGS
from llmstudy.chapters.context_limits.statements import Chapter
from llmstudy.publishing import figstyle
from llmstudy.publishing.tables import Col, table
from llmstudy.serving.kv_planner import GPUS, PRECISION_LABEL, VERSIONS, Deployment, plan, plans

EXPERIMENT = "context_limits"
ARTICLE_SOURCE = "the article's recommendation table (Fixstars 2025-04)"


def _llama4_configs():
    """The device configurations of the article's models (other families have their own section)."""
    return [c for c in GPU_CONFIGS.values() if c.model in {m for _, m, *_ in ARTICLE_TABLE}]


def _runs(df: pd.DataFrame) -> list:
    return list(df.run_id) if len(df) and "run_id" in df else []


# --- tables (llmstudy.publishing.tables: at most 8 columns, units, "—"/"OOM") ----------------------------------------

def _tokens(v):
    """A token count or max_model_len for a table cell: an int, or None (shown as the column's missing text)."""
    return None if v is None or pd.isna(v) else int(v)


def rules_table():
    rules = pd.DataFrame([{
        "vLLM": v.version,
        "local": "full length (all 48 layers)" if v.hybrid_kv_default is None else "hybrid: chunk + batch only (36 of 48 layers)",
        "logged": "num_blocks × 16" if not v.tokens_from_concurrency else "int(max_concurrency × max_model_len)",
        "graphs": "yes (estimate)" if v.subtracts_cudagraphs else "no (captured afterwards)",
        "non_torch": "whole device (CUDA context included)" if v.counts_cuda_context else "growth since init snapshot",
        "sampler": v.sampler_bytes_per_logit,
    } for v in VERSIONS.values()])
    t = table(rules, [Col("vLLM", "vLLM", kind="code"), Col("local", "Llama 4 local layers in the KV cache", kind="text"),
                      Col("logged", "'GPU KV cache size' logged as", kind="code"), Col("graphs", "CUDA-graph memory subtracted", kind="text"),
                      Col("non_torch", "Non-torch memory counted", kind="text"), Col("sampler", "Sampler bytes per logit (profiling)", decimals=0)],
              collapsed=False)
    return t, {"computed": "the planner's per-version rules (llmstudy.serving.kv_planner.VERSIONS, read from vLLM 0.8.3 and 0.25.0 sources)"}


def article_table(ch: Chapter):
    a = ch.art.copy()
    a["cell"] = a.model + " " + a.GPUs.astype(str) + "×" + a.precision
    a["largest"] = [_tokens(v) for v in a["planner: largest max_model_len"]]
    t = table(a, [Col("cell", "Configuration (H100 80GB)", kind="text"), Col("article: recommended max_model_len", "Article: recommended max_model_len", kind="text", align="right"),
                  Col("planner: outcome", "Planner", kind="text"), Col("planner: weights/GPU GiB", "Weights / GPU (GiB)", kind="float", decimals=1),
                  Col("planner: KV GiB/GPU", "KV cache / GPU (GiB)", kind="float", decimals=1),
                  Col("largest", "Planner: longest max_model_len that starts", kind="int", missing="OOM"), Col("agrees", "Agrees", kind="bool")],
              caption="Llama 4: the article (Fixstars 2025-04, published) against the planner (PREDICTION, vLLM 0.8.3 rules, default estimates, "
                      "multimodal checkpoints)", collapsed=False)
    return t, {"computed": "the planner (vLLM 0.8.3 rules, model configs in data/models/)", "published": ARTICLE_SOURCE}


def v083_table(ch: Chapter):
    """vLLM 0.8.3's one-GPU servers: logged KV tokens against the planner's 0.8.3 rules, and the memory terms the engine
    measured (probe) beside the planner's."""
    t = ch.v083.copy()
    if not len(t):
        return None, {"experiment": "context_limits", "computed": "no vLLM 0.8.3 record yet (llmstudy capacity --run v1 v2 v3 v4, vLLM 0.8.3 staged)"}
    t["what"] = [
        f"{'Scout' if 'scout' in m else 'Maverick'} {m.split('-')[-1]} {'multimodal' if mm else 'text'}, "
        f"{PRECISION_LABEL[w]}{' (online)' if w == 'fp8-online' else ''}, {'eager' if eager else 'graphs'}"
        f"{'' if seqs == 1024 else f', max_num_seqs {seqs}'}"
        for m, mm, w, eager, seqs in zip(t.model, t.multimodal, t.weights_format, t.enforce_eager, t.max_num_seqs)]
    cols = [Col("what", "Server (one H200, H100 80GB budget)", kind="text"), Col("logged KV tokens", "vLLM logged (tokens)", kind="int"),
            Col("planned KV tokens", "Planner (tokens)", kind="int"), Col("error %", "Error %", kind="float", decimals=2, signed=True),
            Col("buffers + activation peak: measured GiB", "Buffers + profile peak (GiB)", kind="float", decimals=2),
            Col("buffers + activation peak: planner GiB", "… planner", kind="float", decimals=2),
            Col("non-torch: measured GiB", "Non-torch (GiB)", kind="float", decimals=2), Col("non-torch: planner GiB", "… planner", kind="float", decimals=2)]
    tab = table(t, cols, caption="vLLM 0.8.3 measured (MEASURED, dummy weights, Llama 4 shapes with fewer layers) against the "
                "planner's 0.8.3 rules (PREDICTION)", collapsed=False)
    return tab, {"experiment": "context_limits", "run_ids": sorted(set(t.run_id)), "computed": "the planner (vLLM 0.8.3 rules)"}


def blog_table(ch: Chapter):
    b = ch.blog.copy()
    b["cell"] = b.model + ", " + b.hardware
    t = table(b, [Col("cell", "Configuration", kind="text"), Col("blog: max_model_len", "Blog: max_model_len", kind="int"),
                  Col("planner: starts at blog length", "Starts (0.8.3)", kind="bool"), Col("planner: largest max_model_len", "Longest that starts (0.8.3)", kind="int"),
                  Col("planner: largest, fp8 KV", "… with an fp8 KV cache", kind="int"), Col("fp8 KV gain", "fp8 gain (×)", kind="float"),
                  Col("planner (0.25.0): largest max_model_len", "Longest that starts (0.25.0)", kind="int"), Col("model maximum", "Model maximum", kind="int")],
              caption="Llama 4: the vLLM blog (2025-04-05, published) against the planner (PREDICTION)", collapsed=False)
    return t, {"computed": "the planner (vLLM 0.8.3 and 0.25.0 rules)", "published": "vLLM blog \"Llama 4 in vLLM\" (2025-04-05)"}


MEASURED_COLUMNS = ["record", "config", "tp", "outcome", "gpu_memory_utilization", "max_model_len", "weights_gib", "pred_weights_gib",
                    "available_kv_gib", "pred_available_kv_gib", "kv_cache_tokens", "pred_kv_cache_tokens", "error_pct",
                    "measured_inputs_error_pct", "formula_kv_cache_tokens", "outcome_agrees"]


def measured_table(ch: Chapter):
    """Llama 4's measured configurations against the planner; before any record, the planner's view of them."""
    cmp_ = ch.cmp
    if not len(cmp_):
        pred = plans([c.deployment() for c in _llama4_configs()])
        t = table(pred, [Col("label", "Configuration", kind="text"), Col("outcome", "Outcome", kind="text"), Col("weights_GiB", "Weights (GiB)", kind="float"),
                         Col("activation_peak_GiB", "Activation peak (GiB)", kind="float"), Col("non_torch_GiB", "Non-torch (GiB)", kind="float"),
                         Col("available_kv_GiB", "KV cache (GiB)", kind="float"), Col("kv_cache_tokens", "KV tokens", kind="int"),
                         Col("max_model_len_that_starts", "Longest that starts", kind="int", missing="OOM")],
                  caption="PREDICTIONS for the Llama 4 device configurations (no measurement yet)", collapsed=False)
        return t, {"experiment": EXPERIMENT, "run_ids": [], "computed": "the planner's predictions for the device configurations"}
    show = cmp_.assign(record=cmp_["run_id"] + " / " + cmp_["config"], outcome=cmp_["outcome"].replace({"oom": "OOM"}))
    t = table(show, [Col("record", "Run / configuration", kind="text"), Col("tp", "TP", kind="int"), Col("gpu_memory_utilization", "GPU memory utilization", decimals=4),
                     Col("max_model_len", "max_model_len", kind="int"), Col("outcome", "Outcome", kind="text"),
                     Col("kv_cache_tokens", "Logged KV tokens", kind="int", missing="OOM"), Col("pred_kv_cache_tokens", "Planner", kind="int"),
                     Col("error_pct", "Error (%)", kind="float", signed=True)],
              caption="Llama 4 measured (vLLM 0.25.0, 4× and 8×H200, dummy weights) against the planner's prediction with its default estimates",
              collapsed=True, summary=f"Every measured Llama 4 configuration ({len(show)} rows)")
    return t, {"experiment": EXPERIMENT, "run_ids": _runs(cmp_), "computed": "the planner's predictions"}


def published_cells_table(ch: Chapter):
    pvm = ch.pvm.copy()
    pvm["cell"] = pvm.source + ": " + pvm.model + " " + pvm.precision + ", " + pvm.hardware
    pvm["measured"] = pvm["measured"].replace({"oom": "OOM"})
    t = table(pvm, [Col("cell", "Published cell", kind="text"), Col("published max_model_len", "Published", kind="text", align="right"),
                    Col("record", "Run / configuration (0.25.0)", kind="text"), Col("measured", "Measured", kind="text"),
                    Col("tested max_model_len", "Tested max_model_len", kind="int"), Col("verdict", "Verdict", kind="text")],
              caption="Llama 4's published cells (article: vLLM 0.8.3 on H100; blog: v0.8.3+) and the vLLM 0.25.0 run that tests each "
                      "(H100 cells: an emulated budget on H200)", collapsed=False)
    return t, {"experiment": EXPERIMENT, "run_ids": [r.split("/")[0] for r in ch.pvm.record.dropna()],
               "published": "the article's recommendation table (Fixstars 2025-04) and the vLLM blog (2025-04-05)"}


def context_vs_gpus_table(ch: Chapter):
    w = ch.cvg_wide.reset_index()
    for n in (1, 2, 4, 8):
        w[n] = [None if v == 0 else int(v) for v in w[n]]
    w["gpu"] = w["gpu"].map(lambda g: GPUS[g].name.replace("NVIDIA ", "") if g in GPUS else g)
    t = table(w, [Col("series", "Llama 4 weights", kind="text"), Col("gpu", "GPU", kind="text"), Col("vllm", "vLLM rules", kind="code")]
              + [Col(n, f"{n} GPU{'s' if n > 1 else ''}", kind="int", missing="OOM") for n in (1, 2, 4, 8)],
              caption="Llama 4: longest max_model_len that starts (PREDICTION; OOM: the weights do not fit)", collapsed=True,
              summary="The figure's numbers: longest context per number of GPUs")
    return t, {"computed": "the planner over 1–8 GPUs (predictions)"}


def version_effect_table(ch: Chapter):
    t = table(ch.ve, [Col("deployment", "Deployment", kind="text"), Col("rules", "vLLM rules", kind="text"), Col("available_KV_GiB", "KV cache (GiB)", decimals=1),
                      Col("activation_GiB", "Activation peak (GiB)", decimals=1), Col("cudagraph_GiB", "CUDA graphs (GiB)", decimals=1),
                      Col("logged_KV_tokens", "Logged KV tokens", kind="int"), Col("max_concurrency", "Max concurrency (×)", decimals=2),
                      Col("largest_max_model_len", "Longest that starts", kind="int")],
              caption="Llama 4: the version effect (PREDICTION, default estimates)", collapsed=True, summary="The figure's numbers: each version's plan")
    return t, {"computed": "the planner under vLLM 0.8.3 and 0.25.0 rules (predictions)"}


REQUEST_COLUMNS = ("run_id", "config", "prompt_tokens_sent", "prompt_tokens_reported", "output_tokens", "ttft_s", "total_s", "outcome", "error")


def requests_table(ch: Chapter):
    """Llama 4 Scout's long requests (a one-line table saying so while no record has one)."""
    reqs = ch.long_requests
    if not len(reqs):
        return (table([{"x": "no record yet (configuration scout-fp8-h100-long)"}], [Col("x", "Long requests", kind="text")], collapsed=False),
                {"experiment": EXPERIMENT, "run_ids": []})
    t = table(reqs, [Col("run_id", "Run", kind="text"), Col("config", "Configuration", kind="code"), Col("prompt_tokens_sent", "Prompt tokens sent", kind="int"),
                     Col("prompt_tokens_reported", "… reported by the server", kind="int"), Col("output_tokens", "Output tokens", kind="int"),
                     Col("ttft_s", "Time to first token (s)", kind="float"), Col("total_s", "Total (s)", kind="float"), Col("outcome", "Outcome", kind="text")],
              collapsed=False)
    return t, {"experiment": EXPERIMENT, "run_ids": _runs(reqs)}


def model_table(ch: Chapter):
    """The page's model: longest context that starts per weight format and number of GPUs (predictions)."""
    m = ch.model_table.copy()
    m["largest"] = [None if v is None or pd.isna(v) or v == 0 else int(v) for v in m["largest_max_model_len"]]
    m["outcome"] = m["outcome"].replace({"oom": "OOM"})
    t = table(m, [Col("weights", "Weights", kind="text"), Col("GPUs", "GPUs", kind="int"), Col("outcome", "Outcome", kind="text"),
                  Col("largest", "Longest max_model_len that starts", kind="int", missing="—"), Col("weights_GiB", "Weights / GPU (GiB)", kind="float"),
                  Col("kv_GiB", "KV cache / GPU (GiB)", kind="float"), Col("message", "Why not", kind="text")],
              caption=f"{ch.title}: longest max_model_len that starts on {GPUS[ch.gpu].name.replace('NVIDIA ', '')}, vLLM {ch.vllm_version} rules, "
                      f"{ch.kv_dtype} KV cache (PREDICTION)", collapsed=False)
    return t, {"computed": f"the planner for {ch.name} (config in data/models/ or the given path; predictions)"}


def family_table(ch: Chapter):
    fam = ch.family
    if not len(fam):
        return (table([{"x": "no run record yet (the section above says how to make one)"}], [Col("x", "Other model families", kind="text")], collapsed=False),
                {"experiment": EXPERIMENT, "run_ids": []})
    # what every row shares (TP, max_model_len) goes into the caption; the config name repeats the model's
    tp, lens = sorted(set(fam["tp"].dropna().astype(int))), sorted(set(fam["max_model_len"].dropna().astype(int)))
    t = table(fam, [Col("model", "Model", kind="text"), Col("run_id", "Run", kind="text"), Col("outcome", "Outcome", kind="text"),
                    Col("logged KV tokens", "Logged KV tokens", kind="int"), Col("planned KV tokens", "Planned KV tokens", kind="int"),
                    Col("error %", "Error (%)", kind="float", signed=True), Col("planner", "Planner", kind="text")],
              caption=f"Planner vs vLLM on model families other than Llama 4: TP={', '.join(map(str, tp))}, max_model_len "
                      f"{', '.join(f'{v:,}' for v in lens)}; logged = vLLM's 'GPU KV cache size', planned = the planner with its default estimates",
              collapsed=False)
    return t, {"experiment": EXPERIMENT, "run_ids": _runs(fam), "computed": "the planner's predictions"}


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
    fig, ax = plt.subplots(figsize=(figstyle.WIDTH_IN, 0.6 + 0.42 * dec.config.nunique()))
    mm.stacked_bars(dec, "config", "Llama 4 memory per GPU (GiB): what vLLM subtracts before the KV cache (predicted unless 'measured')",
                    hue_order=DECOMPOSITION, ax=ax)
    return fig, {"experiment": EXPERIMENT, "run_ids": _runs(ch.runs), "computed": "the planner (bars marked predicted)",
                 "published": "the article's configurations"}


def context_vs_gpus_figure(ch: Chapter):
    import seaborn as sns

    cvg = ch.cvg
    with warnings.catch_warnings():  # seaborn's FacetGrid lays itself out with tight_layout, over figstyle's constrained layout
        warnings.filterwarnings("ignore", message="The figure layout has changed to tight")
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

    fig, ax = plt.subplots(figsize=(figstyle.WIDTH_IN, 3.4))
    sns.barplot(data=ch.ve, y="deployment", x="largest_max_model_len", hue="rules", ax=ax)
    ax.set(xscale="log", xlabel="largest max_model_len that starts (PREDICTION, capped at the model maximum)", ylabel="")
    ax.set_title("Llama 4 under vLLM 0.8.3 and 0.25.0 rules", loc="left")
    figstyle.legend_outside(ax, title="rules")
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
    fig, ax = plt.subplots(figsize=(figstyle.WIDTH_IN, 0.8 + 0.42 * dec.config.nunique()))
    mm.stacked_bars(dec, "config", f"{ch.title}: memory per GPU (GiB) by number of GPUs (PREDICTION)", hue_order=DECOMPOSITION, ax=ax)
    return fig, {"computed": f"the planner for {ch.name} (predictions)"}


def published_cells(ch: Chapter) -> pd.DataFrame:
    """Every published Llama 4 cell (the article's eight, the blog's four) with the planner's longest max_model_len
    under vLLM 0.8.3 rules and the vLLM 0.25.0 run that tests it (:attr:`Chapter.pvm`, in the same order)."""
    rows = []
    art, blog, pvm = ch.art, ch.blog, ch.pvm
    srcs = [("article", r, f"{r.model} {r.GPUs}×H100 {r.precision}", r["article: recommended max_model_len"]) for _, r in art.iterrows()]
    srcs += [("blog", r, f"{r.model} {r.hardware.replace(' 80GB', '')}", r["blog: max_model_len"]) for _, r in blog.iterrows()]
    tested = pvm.reset_index(drop=True)
    for i, (source, r, label, published) in enumerate(srcs):
        t = tested.iloc[i] if i < len(tested) else None
        if t is not None and (t.source != source or t.model != r.model):
            raise ValueError(f"published cell {i}: {source} {r.model} against the tested cell {t.source} {t.model}")
        pub = None if isinstance(published, str) and published.strip().upper() == "OOM" else int(str(published).replace(",", ""))
        rows.append({"label": f"{source}: {label}", "published": pub, "planner_083": _tokens(r["planner: largest max_model_len"]),
                     "measured": t.measured if t is not None else None,
                     "tested": _tokens(t["tested max_model_len"]) if t is not None else None, "record": t.record if t is not None else None})
    return pd.DataFrame(rows)


def key_figure(ch: Chapter):
    """The page's answer for Llama 4: each published length (black diamond; "OOM" written where the source says so)
    against the planner's longest max_model_len under vLLM 0.8.3 rules (bar) and the length vLLM 0.25.0 started in
    our run (green cross; a red "OOM" where it ran out of memory). Log scale; the models' maxima as reference lines."""
    import matplotlib.pyplot as plt

    d = published_cells(ch)
    fig, ax = plt.subplots(figsize=(figstyle.WIDTH_IN, 0.9 + 0.36 * len(d)))
    y = list(range(len(d)))
    lo = 5e4
    ax.barh(y, [v if v else 0 for v in d.planner_083], left=0, color=figstyle.color(4), height=0.6,
            label="planner (0.8.3 rules): longest that starts")
    for i, r in d.iterrows():
        if pd.isna(r.planner_083):
            ax.text(lo * 1.15, i, "planner: OOM", va="center", fontsize=8.5, color=figstyle.color(4))
        if pd.isna(r.published):
            ax.text(lo * 1.15 if pd.notna(r.planner_083) else lo * 6, i, "published: OOM", va="center", fontsize=8.5, fontweight="bold")
        if r.measured == "OOM":
            ax.text(2.5e6, i, "vLLM 0.25.0: OOM", va="center", ha="left", fontsize=8.5, color=figstyle.color(5))
    pub = d[d.published.notna()]
    ax.scatter(pub.published, pub.index, marker="D", s=42, color="black", zorder=5, label="published length")
    st = d[(d.measured == "starts") & d.tested.notna()]
    ax.scatter(st.tested, st.index, marker="X", s=70, color=figstyle.color(2), edgecolor="white", linewidth=0.6, zorder=6,
               label="vLLM 0.25.0 started (measured)")
    figstyle.ref_line(ax, x=1_048_576, label="Maverick max 1 M")
    figstyle.ref_line(ax, x=10_485_760, label="Scout max 10.5 M")
    ax.set_xscale("log")
    ax.set_xlim(lo, 1.7e7)
    ax.set_yticks(y, list(d.label))
    ax.invert_yaxis()
    ax.grid(axis="y", visible=False)
    ax.set_xlabel("max_model_len (tokens, log scale)")
    ax.set_title("Llama 4: published lengths, the planner, and vLLM 0.25.0", loc="left")
    figstyle.legend_outside(ax, loc="below")
    return fig, {"experiment": EXPERIMENT, "run_ids": [r.split("/")[0] for r in d.record.dropna()],
                 "computed": "the planner (vLLM 0.8.3 rules, predictions)",
                 "published": "the article's recommendation table (Fixstars 2025-04) and the vLLM blog (2025-04-05)"}
