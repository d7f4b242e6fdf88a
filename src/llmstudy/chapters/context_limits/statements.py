"""Everything the context_limits page prints, computed once: :class:`Chapter` (tables) and :func:`statements` (text).

The page is about Llama 4 (the article and the blog measured Scout and Maverick) and about one model of its own
(``model``, Llama 4 Scout by default; a fork sets it). The Llama 4 sections keep Llama 4's numbers and say so on a
page for another model; the model's own section has the planner's predictions for that model, its own run records
where they exist, and otherwise the sentence and the command that measure it (``llmstudy.core.book.not_measured``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import pandas as pd

from llmstudy.chapters.context_limits.analysis import (
    FINDINGS,
    compare_runs,
    family_comparison,
    is_llama4,
    llama4_rows,
    measure_command,
    measured_findings,
    model_context_table,
    model_name,
    model_plan,
    published_vs_measured,
    v083_table,
    weight_formats,
    without_superseded_skips,
)
from llmstudy.chapters.context_limits.params import DEFAULTS
from llmstudy.chapters.context_limits.published import (
    SCOUT,
    article_comparison,
    blog_comparison,
    context_vs_gpus,
    hardware_label,
    version_effect,
)
from llmstudy.serving.kv_planner import BLOCK_SIZE, PRECISION_LABEL, Deployment, GiB, Plan, plan


def fmt(v) -> str:
    """A token count as the page prints it: ``1,234,567``, or ``n/a``."""
    return f"{int(v):,}" if v is not None and pd.notna(v) else "n/a"


def version_effect_deployments() -> list[Deployment]:
    """The Llama 4 deployments of the 'what today's vLLM changes' comparison."""
    from llmstudy.chapters.context_limits.published import MAVERICK_FP8

    return [Deployment(model=SCOUT, gpu="h100-80gb", num_gpus=8, max_model_len=1_000_000),
            Deployment(model=SCOUT, gpu="h100-80gb", num_gpus=4, weights="fp8-online", max_model_len=500_000),
            Deployment(model=MAVERICK_FP8, gpu="h100-80gb", num_gpus=8, weights="fp8-checkpoint", max_model_len=430_000),
            Deployment(model=SCOUT, gpu="h200", num_gpus=8, max_model_len=3_600_000)]


@dataclass
class Chapter:
    """The page's tables for a set of records and the page's parameters (each computed once, on first use)."""

    records: pd.DataFrame  # R.results("context_limits"): every record's results table
    requests: pd.DataFrame = field(default_factory=pd.DataFrame)  # R.results("context_limits", "requests")
    model: str = DEFAULTS["model"]
    gpu: str = DEFAULTS["gpu"]
    num_gpus: int = DEFAULTS["num_gpus"]
    weights: str = DEFAULTS["weights"]
    kv_dtype: str = DEFAULTS["kv_dtype"]
    vllm_version: str = DEFAULTS["vllm_version"]
    max_model_len: int | None = DEFAULTS["max_model_len"]

    # --- the page's model ------------------------------------------------------------------------------------
    @cached_property
    def name(self) -> str:
        return model_name(self.model)

    @cached_property
    def title(self) -> str:
        from llmstudy.core import models as M

        return M.title(self.model)

    @cached_property
    def llama4_page(self) -> bool:
        return is_llama4(self.model)

    @cached_property
    def plan_weights(self) -> str:
        """The weight format of the page's plan (``auto``: the checkpoint's own)."""
        return weight_formats(self.model)[0] if self.weights == "auto" else self.weights

    @cached_property
    def plan(self) -> Plan | str:
        return model_plan(self.model, self.gpu, self.num_gpus, self.weights, self.kv_dtype, self.vllm_version, self.max_model_len)

    @cached_property
    def model_table(self) -> pd.DataFrame:
        return model_context_table(self.model, self.gpu, self.kv_dtype, self.vllm_version)

    @cached_property
    def all_cmp(self) -> pd.DataFrame:
        """Every recorded configuration against the planner (skips measured later left out)."""
        return without_superseded_skips(compare_runs(self.records)) if len(self.records) else pd.DataFrame()

    @cached_property
    def model_cmp(self) -> pd.DataFrame:
        """The page's model's own recorded configurations."""
        return self.all_cmp[self.all_cmp.model == self.name].reset_index(drop=True) if len(self.all_cmp) else self.all_cmp

    @cached_property
    def family(self) -> pd.DataFrame:
        return family_comparison(self.all_cmp)

    # --- Llama 4 (the article's models) --------------------------------------------------------------------------
    @cached_property
    def art(self) -> pd.DataFrame:
        return article_comparison("0.8.3", "h100-80gb")

    @cached_property
    def blog(self) -> pd.DataFrame:
        blog = blog_comparison("0.8.3")
        blog["planner (0.25.0): largest max_model_len"] = self.blog25["planner: largest max_model_len"].values
        return blog

    @cached_property
    def blog25(self) -> pd.DataFrame:
        return blog_comparison("0.25.0")

    @cached_property
    def runs(self) -> pd.DataFrame:
        """The Llama 4 records' rows."""
        return llama4_rows(self.records)

    @cached_property
    def v083(self) -> pd.DataFrame:
        """vLLM 0.8.3's one-GPU term measurements against the planner's 0.8.3 rules."""
        return v083_table(self.records)

    @cached_property
    def cmp(self) -> pd.DataFrame:
        """The Llama 4 configurations measured, against the planner (skips measured later left out)."""
        return without_superseded_skips(compare_runs(self.runs)) if len(self.runs) else pd.DataFrame()

    @cached_property
    def ok(self) -> pd.DataFrame:
        return self.cmp[(self.cmp.outcome == "ok") & self.cmp.kv_cache_tokens.notna()] if len(self.cmp) else self.cmp

    @cached_property
    def pvm(self) -> pd.DataFrame:
        return published_vs_measured(self.cmp)

    @cached_property
    def cvg(self) -> pd.DataFrame:
        cvg = context_vs_gpus()
        cvg["series"] = cvg["model"].map(lambda m: "Scout" if "scout" in m else "Maverick") + " " + cvg["weights"]
        return cvg

    @cached_property
    def cvg_wide(self) -> pd.DataFrame:
        return self.cvg.pivot_table(index=["series", "gpu", "vllm"], columns="GPUs", values="largest_max_model_len", aggfunc="first")

    @cached_property
    def started(self) -> pd.DataFrame:
        """Measured Llama 4 starts with the default KV dtype (the crosses of the context-vs-GPUs figure)."""
        return self.cmp[(self.cmp.outcome == "ok") & (self.cmp.kv_dtype == "auto")] if len(self.cmp) else self.cmp

    @cached_property
    def ve(self) -> pd.DataFrame:
        return version_effect(version_effect_deployments())

    @cached_property
    def long_requests(self) -> pd.DataFrame:
        """Llama 4's long requests (warm-up requests left out)."""
        reqs = self.requests
        if not len(reqs):
            return reqs
        return reqs[reqs.get("warmup", False) != True] if "warmup" in reqs else reqs  # noqa: E712 - NaN for non-warm-ups


def chapter(records: pd.DataFrame | None = None, requests: pd.DataFrame | None = None, **params) -> Chapter:
    """The chapter for the committed records (``data/runs/context_limits``) unless given, and the page's parameters
    (the names of :data:`params.PLAN_PARAMS` and ``model``; other notebook parameters are ignored)."""
    from llmstudy.core import records as R

    records = R.results("context_limits") if records is None else records
    requests = R.results("context_limits", "requests") if requests is None else requests
    keep = {k: v for k, v in params.items() if k in Chapter.__dataclass_fields__ and k not in ("records", "requests")}
    return Chapter(records, requests, **keep)


# --- The glued text ------------------------------------------------------------------------------------------------

def _llama4_statements(ch: Chapter) -> dict[str, str]:
    out: dict[str, str] = {}
    art = ch.art
    out["art_agree"] = f"{int(art.agrees.sum())} of {len(art)}"
    s4 = art[(art.model == "Scout") & (art.GPUs == 4) & (art.precision == "BF16")].iloc[0]
    out["art_s4bf16_len"] = fmt(s4["planner: largest max_model_len"])
    out["art_s4bf16_kv"] = f"{s4['planner: KV GiB/GPU']:.1f}"
    s4f = art[(art.model == "Scout") & (art.GPUs == 4) & (art.precision == "FP8")].iloc[0]
    out["art_s4fp8_len"] = fmt(s4f["planner: largest max_model_len"])
    m8 = art[(art.model == "Maverick") & (art.GPUs == 8) & (art.precision == "FP8")].iloc[0]
    out["art_m8fp8_len"] = fmt(m8["planner: largest max_model_len"])

    blog, blog25 = ch.blog, ch.blog25
    for i, key in enumerate(["blog_s_h100", "blog_m_h100", "blog_s_h200", "blog_m_h200"]):
        out[key] = fmt(blog["planner: largest max_model_len"].iloc[i])
        out[key + "_25"] = fmt(blog25["planner: largest max_model_len"].iloc[i])
    out["blog_fp8_gain"] = f"{blog['fp8 KV gain'].iloc[0]:.2f}"
    out["blog_s_h200_frac"] = f"{100 * blog['blog: max_model_len'].iloc[2] / blog['planner: largest max_model_len'].iloc[2]:.0f}"

    findings = measured_findings(ch.cmp)
    for k in FINDINGS:
        out[f"meas_{k}"] = findings.get(k, f"(not measured yet: {k})")
    ok = ch.ok
    exact = ok[ok.formula_kv_cache_tokens.notna()] if len(ok) else ok
    out["meas_n"] = str(len(ok))
    out["meas_max_err"] = f"{ok.error_pct.abs().max():.2f}" if len(ok) else "n/a"
    out["meas_max_err_measured"] = f"{ok.measured_inputs_error_pct.abs().max():.2f}" if len(ok) else "n/a"
    n_exact = int((exact.formula_kv_cache_tokens == exact.kv_cache_tokens).sum()) if len(exact) else 0
    out["meas_formula_exact"] = f"{n_exact} of {len(exact)}" if len(exact) else "n/a"
    if len(ok):
        out["meas_sentence"] = (f"Over {len(ok)} measured configurations the predicted token figure is within {ok.error_pct.abs().max():.2f} % "
                                f"of the logged one, and within {ok.measured_inputs_error_pct.abs().max():.2f} % with the measured inputs. "
                                f"The formula alone matches {n_exact} of {len(exact)} eager runs exactly.")
    else:
        out["meas_sentence"] = ("No configuration has been measured yet. The table above lists the planner's predictions for the "
                                "device configurations, which the device runs will check.")

    pvm = ch.pvm
    out["pvm_reproduced"] = f"{int((pvm.verdict == 'reproduced').sum())} of {int((pvm.verdict != 'not measured').sum())}"

    started = ch.started
    below = int((started.max_model_len <= started.pred_largest_max_model_len).sum()) if len(started) else 0
    out["cvg_measured"] = (f"{below} of {len(started)} measured starts lie at or below the 0.25.0 prediction for their configuration: "
                           "each is a length that started, not the longest one." if len(started) else "No start has been measured yet.")
    wide = ch.cvg_wide
    out["cvg_s8h100_25"] = fmt(wide.loc[("Scout bf16", "h100-80gb", "0.25.0"), 8])
    out["cvg_s8h100_83"] = fmt(wide.loc[("Scout bf16", "h100-80gb", "0.8.3"), 8])

    ve = ch.ve
    out["ve_s8_83"] = fmt(ve.iloc[0]["largest_max_model_len"])
    out["ve_s8_25"] = fmt(ve.iloc[2]["largest_max_model_len"])
    out["ve_s8_tok83"] = fmt(ve.iloc[0]["logged_KV_tokens"])
    out["ve_s8_tok25"] = fmt(ve.iloc[2]["logged_KV_tokens"])

    reqs = ch.long_requests
    if len(reqs):
        long_ = reqs[(reqs.outcome == "ok") & (reqs.prompt_tokens_sent >= 100_000)] if "outcome" in reqs else reqs.iloc[0:0]
        out["ttft_long"] = ", ".join(f"{int(r.prompt_tokens_sent):,} tokens: {r.ttft_s:.1f} s" for r in long_.itertuples()) or "n/a"
    else:
        out["ttft_long"] = "n/a (no record yet)"
    return out


# Llama 4 statements that do not name the model in their own words: on a page for another model they say whose they are
_UNNAMED = ("meas_sentence", "cvg_measured", "ttft_long", "meas_n", "meas_max_err", "meas_max_err_measured", "meas_formula_exact",
            "pvm_reproduced", "art_agree")


def _size(nbytes: int) -> str:
    """GiB with two decimals; MiB below 0.01 GiB (a tiny test model's weights are not '0.00 GiB')."""
    return f"{nbytes / GiB:.2f} GiB" if abs(nbytes) >= GiB / 100 else f"{nbytes / 2**20:.2f} MiB"


def _plan_sentence(ch: Chapter) -> str:
    p = ch.plan
    where = f"{hardware_label(ch.num_gpus, ch.gpu)}, {PRECISION_LABEL[ch.plan_weights]} weights, {ch.kv_dtype} KV cache, vLLM {ch.vllm_version} rules"
    if isinstance(p, str):
        return f"The planner does not plan {ch.title} on {where}: {p}"
    head = f"Planned for {ch.title} on {where}, max_model_len {p.max_model_len:,}"
    head += " (the model's maximum)" if ch.max_model_len is None else ""
    if p.outcome == "oom":
        return f"{head}: it does not start. {p.message}."
    split = (f"the weights take {_size(p.weights_bytes)} per GPU of a {_size(p.budget_bytes)} budget, "
             f"{_size(p.available_kv_bytes)} are left for the KV cache")
    if p.outcome == "refused":
        return f"{head}: {split}, and vLLM refuses that length. The longest max_model_len that starts is {p.max_model_len_that_starts:,}."
    return (f"{head}: {split}, and vLLM would log “GPU KV cache size: {p.kv_cache_tokens:,} tokens” "
            f"({p.max_concurrency:,.2f} requests of {p.max_model_len:,} tokens). The longest max_model_len that starts is "
            f"{p.max_model_len_that_starts:,}.")


def _spread(errs: pd.Series) -> str:
    """How far planned token figures are from the logged ones: 'within 0.65 % of' or 'off by up to 71.99 % from'."""
    worst = errs.abs().max()
    return f"within {worst:.2f} % of" if worst <= 1 else f"off by up to {worst:.2f} % from"


def _measured_sentence(ch: Chapter) -> str:
    from llmstudy.core.book import not_measured

    rows = ch.model_cmp
    if not len(rows):
        command, first = measure_command(ch.model)
        return f"Logged KV tokens: {not_measured(ch.title, command)}." + (f" {first}." if first else "")
    ok = rows[(rows.outcome == "ok") & rows.kv_cache_tokens.notna()]
    runs = ", ".join(sorted(set(rows.run_id)))
    text = f"{ch.title} has {len(rows)} measured configuration{'s' if len(rows) > 1 else ''} (run records {runs}; vLLM 0.25.0 on H200)"
    if not len(ok):
        return text + f"; none started ({', '.join(sorted(set(rows.outcome)))})."
    errs = ok.error_pct.dropna()
    if not len(errs):
        return text + f": {len(ok)} started, and the planner does not model them ({ok.pred_message.iloc[0]})."
    worst = ok.loc[errs.abs().idxmax()]
    return (text + f": {len(ok)} started, and the planner's token figure is {_spread(errs)} vLLM's logged one "
            f"(largest error {worst.config}: {int(worst.pred_kv_cache_tokens):,} planned, {int(worst.kv_cache_tokens):,} logged).")


def _family_sentence(ch: Chapter) -> str:
    fam = ch.family
    if not len(fam):
        return ("No run record of a model family other than Llama 4 exists yet in data/runs/context_limits/, so the planner's "
                "estimates are checked on Llama 4 alone.")
    errs = fam["error %"].dropna()
    models = sorted(set(fam.model))
    text = f"{len(fam)} configuration{'s' if len(fam) > 1 else ''} of {len(models)} other model{'s' if len(models) > 1 else ''} ({', '.join(models)}) measured"
    if not len(errs):
        return text + "; none has a logged token figure the planner predicts."
    worst = fam.loc[errs.abs().idxmax()]
    text += (f": on the {len(errs)} that started and that the planner models, its token figure is {_spread(errs)} vLLM's logged one "
             f"({int((errs.abs() <= 1).sum())} of {len(errs)} within 1 %; largest error: {worst.config}, {worst['error %']:+.2f} %).")
    refused = fam[fam.planner.str.startswith("not modelled")]
    if len(refused):
        text += f" The planner refuses {', '.join(sorted(set(refused.model)))}: {refused.planner.iloc[0]}."
    return text


def _answer(ch: Chapter, out: dict[str, str]) -> str:
    """The page's answer in three sentences: the planner against vLLM's logged figure, the article's table, and what
    today's vLLM changes for Scout's 10 M tokens; on a page for another model, its own plan first."""
    art = ch.art
    bad = art[~art.agrees.astype(bool)]
    ok = ch.ok
    parts = []
    if len(ok):
        parts.append(f"On vLLM 0.25.0 with dummy weights on 4× and 8×H200, the planner's KV-cache token figure is within {out['meas_max_err']}% of "
                     f"the one vLLM logs over {out['meas_n']} Llama 4 configurations (within {out['meas_max_err_measured']}% once it is fed the "
                     "memory the server measured).")
    else:
        parts.append("No Llama 4 configuration has been measured yet: every planner figure on this page is a prediction.")
    dis = ", ".join(f"{r.model} {r.GPUs}×{r.precision}" for r in bad.itertuples())
    pvm = ch.pvm
    started = pvm[(pvm.source == "article") & (pvm.verdict == "differs") & (pvm.measured == "starts")] if len(bad) and len(pvm) else pvm.iloc[0:0]
    parts.append(f"Under vLLM 0.8.3's rules it agrees with {out['art_agree']} cells of the article's H100 table"
                 + (f"; the exception, {dis}, which the article found out of memory, leaves {out['art_s4bf16_kv']} GiB per GPU for the KV cache "
                    f"in the planner ({out['art_s4bf16_len']} tokens)" if len(bad) else "")
                 + (f", and vLLM 0.25.0 starts it on an emulated H100 budget (run {started.record.iloc[0].split('/')[0]})" if len(started) else "") + ".")
    parts.append(f"Scout's advertised 10.5 M tokens do not fit on 8×H200 under 0.8.3 (longest {out['blog_s_h200']}) and do under 0.25.0 "
                 f"({out['blog_s_h200_25']}), because its hybrid KV manager keeps only chunk + batch tokens for 36 of the 48 layers "
                 "(predictions; the measured 8×H200 server started at the blog's 3.6 M).")
    return " ".join(parts)


def _named(ch: Chapter) -> str:
    return ch.title + ("" if ch.name in ch.title else f" ({ch.name})")  # glued as plain text: no markdown


def _v083_statements(ch: Chapter) -> dict[str, str]:
    """The vLLM 0.8.3 section: what its servers logged on one H200, the terms behind it, and the article's cells."""
    t = ch.v083
    out: dict[str, str] = {}
    if not len(t) or t["logged KV tokens"].isna().all():
        none = "No vLLM 0.8.3 server has been measured yet: the 0.8.3 numbers on this page are predictions."
        return {**{k: none for k in ("v083_summary", "v083_terms", "v083_oom", "v083_cells")}, "v083_err": "n/a", "v083_n": "0"}
    ok = t[t["logged KV tokens"].notna()]
    samp = ok[ok.max_num_seqs >= 256]
    runs = ", ".join(sorted(set(ok.run_id)))
    out["v083_err"], out["v083_n"] = f"{samp['error %'].abs().max():.2f}", str(len(samp))
    out["v083_summary"] = (
        f"All {len(ok)} vLLM 0.8.3 servers started (run records {runs}).")
    one = ok[(ok.max_num_seqs == 1024)]
    text = one[~one.multimodal & (one.weights_format == "bf16")].iloc[0]
    mm = one[one.multimodal & (one.weights_format == "bf16")].iloc[0]
    fp8 = one[~one.multimodal & (one.weights_format == "fp8-online")].sort_values("weights: measured GiB")
    s256 = ok[ok.max_num_seqs == 256]
    out["v083_terms"] = (
        f"The profile's peak is the dummy sampler: {text['sampler_peak GiB']:.2f} GiB above the weights and buffers for 1,024 requests "
        f"over Llama 4's 202,048-entry vocabulary"
        + (f" and {s256['sampler_peak GiB'].iloc[0]:.2f} GiB for 256" if len(s256) else "")
        + f", 38 bytes per (request, vocabulary entry), where the old rule assumed 27. The vision tower's pass peaks lower "
        f"({mm['encoder_peak GiB']:.2f} GiB), but its outputs ({mm['encoder_held GiB']:.2f} GiB) stay alive through the sampler. "
        f"Everything torch did not allocate counts as non-torch memory in 0.8.3: {text['outside_torch GiB']:.2f} GiB of CUDA "
        f"context and libraries on every server, and, after online FP8 quantization, the bf16 originals the allocator "
        f"could not hand back: {fp8['allocator_cached GiB'].iloc[0]:.2f} GiB with 12 layers and "
        f"{fp8['allocator_cached GiB'].iloc[-1]:.2f} GiB with 24. CUDA graphs (about {one['graphs_used GiB'].max():.2f} GiB) "
        f"and the sampler's warm-up come after the KV cache, outside the budget.")
    art = ch.art
    dep = Deployment(model=SCOUT, gpu="h100-80gb", num_gpus=4, weights="bf16", vllm_version="0.8.3", max_model_len=200_000)
    p = plan(dep)
    kv_tok = p.kv_cache_tokens if p.outcome != "oom" else 0
    margin = kv_tok - 200_000
    verdict = ("A start at the 200,000 the article used for its other 4-GPU Scout command is refused: vLLM 0.8.3 stops when "
               "one max_model_len request does not fit the KV cache." if margin < 0 else
               f"200,000 tokens, the length the article used for its other 4-GPU Scout command, fit by only {margin:,} tokens "
               f"({margin * p.bytes_per_block / BLOCK_SIZE / GiB:.2f} GiB). Any per-GPU memory that four GPUs add and one GPU cannot "
               f"show tips it into a refusal: NCCL's NVLink SHARP buffers, on by default on H100 SXM with more than two GPUs "
               f"and switched off on our machines, are one such term (not measured here).")
    out["v083_oom"] = (
        f"Scout 4×BF16 on H100 80GB at max_model_len 200,000 (the article's OOM cell), with these rules: weights "
        f"{p.weights_bytes / GiB:.1f} GiB, runner buffers and profile peak {p.activation_peak_bytes / GiB:.1f} GiB, non-torch "
        f"{p.non_torch_bytes / GiB:.1f} GiB (NCCL at TP=4 extrapolated) leave {max(p.available_kv_bytes, 0) / GiB:.1f} GiB of "
        f"the {p.budget_bytes / GiB:.1f} GiB budget for the KV cache, {kv_tok:,} tokens. {verdict}")
    cells = art[art["at max_model_len"].notna()]
    out["v083_cells"] = "; ".join(
        f"{m} {g}×{pr} at {int(at):,}: {fmt(tok)} tokens" for m, g, pr, at, tok in
        zip(cells.model, cells.GPUs, cells.precision, cells["at max_model_len"], cells["planner: logged KV tokens"]))
    return out


def statements(records, model: str = SCOUT, requests: pd.DataFrame | None = None, **params) -> dict[str, str]:
    """Every glued value of the page (key -> text), from the records and the page's model and plan parameters.

    ``records`` is the experiment's results table, or a :class:`Chapter` already built (then the other arguments are
    ignored). The claims (``claim_*``) are glued by :func:`llmstudy.publishing.claims.glue_claims`.
    """
    ch = records if isinstance(records, Chapter) else chapter(records, requests, model=model, **params)
    out = _llama4_statements(ch)
    out.update(_v083_statements(ch))
    llama4_answer = _answer(ch, out)  # before the Llama 4 values are marked as such for another model's page
    if not ch.llama4_page:
        for k in _UNNAMED:
            out[k] = f"(Llama 4, not {ch.name}) {out[k]}"
        banner = (f"This page is rendered for {_named(ch)}. The sections headed “Llama 4” reproduce the article "
                  f"and the vLLM blog on Llama 4 Scout and Maverick: their numbers are Llama 4's, not {ch.name}'s. The section "
                  f"“The model of this page” has the planner's predictions for {ch.name} and its own measurements.")
    else:
        banner = f"This page is rendered for {_named(ch)}, a Llama 4 model: the article's and the blog's tables apply to it."
    out["model_banner"] = banner
    out["model_title"] = ch.title
    out["model_plan"] = _plan_sentence(ch)
    out["model_measured"] = _measured_sentence(ch)
    out["family_summary"] = _family_sentence(ch)
    out["answer"] = llama4_answer if ch.llama4_page else (f"For {_named(ch)}, predicted: {out['model_plan']} {out['model_measured']} "
                                                          f"For Llama 4, which the article and the blog are about: {llama4_answer}")
    return out
