"""The engine_comparison chapter as a page: the records it shows for its models, the opening answer, and the tables
and figures each notebook cell displays. The notebook only calls these; every glued number comes from
:mod:`.statements`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from llmstudy.chapters.engine_comparison import analysis as A
from llmstudy.chapters.engine_comparison import figures as FIG
from llmstudy.chapters.engine_comparison.params import GPTOSS_MODEL, MODEL_7B, PARAMS
from llmstudy.chapters.engine_comparison.plan import EXPERIMENT, RULES, measure_command, newest_with_torch
from llmstudy.chapters.engine_comparison.statements import _title, fmt, gpu_sets, published_numbers, statements


@dataclass
class Page:
    model_7b: str
    gptoss_model: str
    points: pd.DataFrame
    trt: pd.DataFrame
    s7: dict  # the second-engine comparison sets of model_7b on a GPU
    soss: dict  # the gptoss-vllm sets of gptoss_model on a GPU
    other: dict  # every other set shown (CPU rehearsals; for a forked model only its own)
    paths: dict  # run_id -> record folder (engine_comparison records)
    statements: dict = field(default_factory=dict)

    @property
    def forked(self) -> bool:
        return self.model_7b != MODEL_7B or self.gptoss_model != GPTOSS_MODEL


def load_page(run_ids=(), model_7b: str = PARAMS["model_7b"].default, gptoss_model: str = PARAMS["gptoss_model"].default, root=None) -> Page:
    """The records the chapter shows: the engine_comparison records (all, or ``run_ids``) and, without ``run_ids``, the
    gpt-oss concurrency sweep made with the serving chapter's driver (the same part, labelled as such)."""
    from llmstudy.core import records as R

    pts = A.load_points(run_ids, root)
    if not run_ids:
        more = A.load_points(experiment="batch_size_sweep", model=gptoss_model, part="gptoss-vllm", root=root)
        pts = pd.concat([pts, more], ignore_index=True) if len(more) else pts
    s7 = gpu_sets(pts, "second-engine", model_7b) if len(pts) else {}
    soss = gpu_sets(pts, "gptoss-vllm", gptoss_model) if len(pts) else {}
    other = {k: g for k, g in (A.comparison_sets(pts).items() if len(pts) else ()) if k not in s7 and k not in soss}
    page = Page(model_7b, gptoss_model, pts, A.trtllm_points(root=root), s7, soss, other, {r.run_id: r.path for r in R.load_runs(EXPERIMENT, root)})
    if page.forked:  # a forked page shows no other model's record beyond CPU rehearsals (which are never results)
        page.other = {k: g for k, g in other.items() if k[1] in (model_7b, gptoss_model) or (g["gpu"] == "CPU").all()}
    page.statements = statements(pts, model_7b, gptoss_model, page.paths)
    return page


def records_line(page: Page) -> str:
    """The records the page shows (a forked page: only its models' and CPU rehearsals)."""
    named = lambda ids: ", ".join(sorted(set(ids))) or "none"  # noqa: E731
    shown = [k[0] for sets in (page.s7, page.soss, page.other) for k in sets]
    return (f"engine_comparison records: {named(shown)}; "
            f"trtllm_serve records: {named(page.trt.run_id) if len(page.trt) else 'none'}")


def answer(page: Page) -> str:
    """The chapter's answer as Markdown bullets, computed from the records (published numbers named as the article's)."""
    from llmstudy.core.book import not_measured

    pub = published_numbers()
    lines = []
    for key, g in page.s7.items():
        ok = g[g.outcome == "ok"]
        rep = A.fairness(g)
        if not rep["ok"].all() or ok.engine.nunique() < 2:
            lines.append(f"* **4-bit 7B** (run {key[0]}): not compared — " + ("; ".join(rep[~rep.ok].detail) or "one engine has no successful point"))
            continue
        w = A.win_table(ok)
        at16 = w[(w.concurrency == 16) & w.metric.str.startswith("total")]
        head = f"* **4-bit 7B, {' vs '.join(sorted(ok.engine.unique()))}** (run {key[0]}, {ok.gpu.iloc[0]})" if key[1] == MODEL_7B else \
            f"* **{key[1]}, {' vs '.join(sorted(ok.engine.unique()))}** (run {key[0]}, {ok.gpu.iloc[0]})"
        if len(at16):
            r = at16.iloc[0]
            vals = ", ".join(f"{e} {fmt(r[e])}" for e in sorted(ok.engine.unique()))
            head += (f": at c=16 total output {vals} tokens/s, {r.winner} ahead by {r.margin:.2f}× (published, on an {A.ARTICLE_GPU}: "
                     f"Triton {pub['triton']:,.2f} vs vLLM 0.11 {pub['vllm']:,.2f}, {pub['ratio']:.2f}×)")
        lines.append(head + ". Where each wins:")
        for m, h in A.win_summary(w).groupby("metric", sort=False):
            lines.append(f"  * {m}: " + "; ".join(f"{r.winner} at c = {r['at concurrency']}" for _, r in h.iterrows()))
    for key, g in page.soss.items():
        ok = g[g.outcome == "ok"]
        if not len(ok):
            lines.append(f"* **{key[1]} on vLLM** (run {key[0]}): no point succeeded — see the failure below.")
            continue
        c1, top = ok[ok.concurrency == ok.concurrency.min()].iloc[0], ok.loc[ok.output_token_throughput.idxmax()]
        lines.append(f"* **{key[1]} on vLLM** (run {key[0]}, {ok.gpu.iloc[0]}): at c={int(c1.concurrency)} {fmt(c1.tps_streaming_avg)} tokens/s per user (TTFT excluded; "
                     f"trtllm-serve published {pub['trtllm_c1']:,.0f} for gpt-oss-20b on an H100 PCIe), TTFT {fmt(c1.time_to_first_token_avg, '{:,.1f}')} ms; total output peaks at "
                     f"{fmt(top.output_token_throughput)} tokens/s at c={int(top.concurrency)}.")
    if not page.s7:
        lines.append("* **4-bit 7B, SGLang against vLLM**: no GPU record yet." if page.model_7b == MODEL_7B else
                     f"* **{page.model_7b}, SGLang against vLLM**: " + not_measured(_title(page.model_7b), measure_command("second-engine", page.model_7b)) + ".")
    if not page.soss:
        lines.append("* **gpt-oss-20b on vLLM**: no GPU record yet." if page.gptoss_model == GPTOSS_MODEL else
                     f"* **{page.gptoss_model} on vLLM**: " + not_measured(_title(page.gptoss_model), measure_command("gptoss-vllm", page.gptoss_model)) + ".")
    return "\n".join(lines)


# --- the tables and figures, one function per notebook cell ----------------------------------------------------------
def _show(obj) -> None:
    from IPython.display import display

    display(obj)


def _md(text: str) -> None:
    from IPython.display import Markdown

    _show(Markdown(text))


def _named(ids) -> str:
    return ", ".join(sorted(set(ids))) or "none"


def prov(g: pd.DataFrame, **kw) -> None:
    """The provenance line for the points ``g`` (engine_comparison records, or the serving chapter's for gpt-oss)."""
    from llmstudy.core.book import provenance

    for exp, h in g.groupby(g["experiment"].fillna(EXPERIMENT) if "experiment" in g else pd.Series(EXPERIMENT, index=g.index)):
        provenance(exp, h["run_id"], **kw)


def show_where_each_wins(page: Page) -> None:
    """Where each engine wins: our fair comparisons (measured) and the article's verdicts (published), one table, never mixed."""
    from llmstudy.core.book import provenance

    p7 = pd.concat(list(page.s7.values()), ignore_index=True) if page.s7 else pd.DataFrame()
    where = A.where_each_wins(p7)
    _show(where.style.hide(axis="index").format({"margin, median": lambda v: "" if pd.isna(v) else f"{v:.2f}"})
          .set_caption("Where each engine wins: measured (our records, fairness-checked) and published (the article's verdicts; other GPU, not judged against ours)"))
    provenance(EXPERIMENT if len(p7) else None, p7["run_id"] if len(p7) else (), published="Fixstars 2026, §6.6 and §8.2 (data/engine_comparison/article_claims.csv, data/trtllm/published.csv)")


def show_sglang_pins() -> None:
    from llmstudy.core.book import provenance
    from llmstudy.core.paths import data_dir

    pins = pd.read_csv(data_dir() / "engine_comparison" / "sglang_pins.csv")
    newest = newest_with_torch(pins, "2.11.0")
    _show(pins.drop(columns=["wheel"]).style.hide(axis="index").apply(lambda r: ["font-weight: bold" if r["torch"] == "2.11.0" else ""] * len(r), axis=1)
          .set_caption("Exact pins in each SGLang release's wheel (cp312, manylinux); bold: releases pinning torch 2.11.0"))
    provenance(computed="the SGLang wheels' metadata read with pip (data/engine_comparison/sglang_pins.csv)")
    _md(f"Releases **{', '.join(pins[pins.torch == '2.11.0'].sglang)}** pin torch 2.11.0; the newest, **SGLang {newest}**, is the "
        "second engine, with its pinned `sglang-kernel` (built for CUDA 13.0 and torch 2.11, like the image).")


def show_rules() -> None:
    from llmstudy.core.book import provenance

    _show(pd.DataFrame({"rule": list(RULES), "what must hold": list(RULES.values())}).style.hide(axis="index"))
    provenance(computed="the fairness rules enforced by llmstudy.chapters.engine_comparison")


def show_published() -> None:
    from llmstudy.core.book import provenance

    pub = A.published()
    _show(pub[["source", "server", "model", "setting", "concurrency", "metric", "value", "unit"]].style.hide(axis="index")
          .format({"value": "{:,.2f}", "concurrency": "{:.0f}"}).set_caption("The article's engine numbers (published, not run records)"))
    pw = A.published_7b_wins()
    _show(pw.style.hide(axis="index").format({"margin": "{:.3f}", "concurrency": "{:.0f}"})
          .format("{:,.2f}", subset=[c for c in pw.columns if c not in ("concurrency", "metric", "better", "winner", "margin")])
          .set_caption("Published (Fixstars 2026, §6.6): who wins at c=16. Different quantizations (AWQ + int8 KV vs GPTQ) and tools (genai-perf vs vllm bench serve)"))
    provenance(published="Fixstars 2026, §6.6 and §8 (data/engine_comparison/article_claims.csv)")


def show_server_facts(page: Page) -> None:
    from llmstudy.core.book import provenance

    for key in page.s7:
        facts = A.server_facts(page.paths[key[0]])
        _show(facts.drop(columns=["lines"]).style.hide(axis="index").format({"weights_gib": "{:.2f}", "kv_cache_tokens": "{:,.0f}", "kv_cache_gib": "{:.1f}"}, na_rep="n/a")
              .set_caption(f"What each server loaded, read from its log (run {key[0]}): weights (GiB), quantization, GEMM kernel, KV cache"))
        provenance(EXPERIMENT, [key[0]], computed="the server logs in the record (llmstudy.serving.servers.parse_sglang_log, llmstudy.serving.logs.parse_startup_log)")
        _md("The log lines these come from:\n\n```text\n" + "\n".join(ln for ls in facts["lines"] for ln in ls) + "\n```")
        fails = A.failed_attempts(page.paths[key[0]])
        if len(fails):
            _show(fails.style.hide(axis="index").format({c: "{:,.2f}" for c in fails.columns if c.endswith("_s")}, na_rep="—")
                  .set_caption(f"Attempts before run {key[0]} that measured nothing: their SGLang server logs, kept in the record"))
            provenance(EXPERIMENT, [key[0]], computed="logs/failed-attempts/ in the record (its README.md tells each attempt)")


def show_fairness(g: pd.DataFrame, key: tuple) -> bool:
    rep = A.fairness(g)
    _show(rep.style.hide(axis="index").set_caption(f"Fairness rules on run {key[0]} ({key[1]}, {key[2]} in / {key[3]} out)"))
    prov(g)
    return bool(rep["ok"].all())


def show_comparison(g: pd.DataFrame, key: tuple, references=None, what: str = "", cite: str = ""):
    """The figures and tables of one comparison set, then the records they came from (and ``cite``, the published
    source of ``references``)."""
    out = _show_comparison(g, key, references, what)
    prov(g, published=cite if references is not None and len(references) else "")
    return out


def _show_comparison(g, key, references=None, what=""):
    import matplotlib.pyplot as plt

    ok = g[g["outcome"] == "ok"]
    runs = _named(g["run_id"])
    fails = g[g["outcome"] != "ok"]
    if len(fails):
        _show(fails[["engine", "concurrency", "outcome", "error"]].style.hide(axis="index").set_caption(f"Points that did not succeed (run {runs}): results too"))
    if not len(ok):
        _md(f"Run {runs}: no successful point to plot.")
        return None
    FIG.throughput_figure(ok, f"{what}output throughput per user and in total (run {runs})", references)
    plt.show()
    FIG.ttft_figure(ok, f"{what}time to first token (run {runs})")
    plt.show()
    cols = [c for c in ("engine", "server", "started_utc", "start_s", "args", "versions", "attention_backend", "linear_kernel", "quant_kernel", "moe_backend", "sampling_backend") if c in g]
    _show(g.drop_duplicates("server")[cols].style.hide(axis="index").format(precision=1, na_rep="—").set_caption(f"The servers: flags, package versions and the kernels they logged (run {runs})"))
    if g["engine"].nunique() < 2:
        return None
    try:
        A.require_fair(g)
    except A.FairnessError as e:
        _md(f"**Not compared** (run {runs}): {e}")
        return None
    wins = A.win_table(ok)
    _show(wins.style.hide(axis="index").format({"margin": "{:.2f}"}).format("{:,.1f}", subset=sorted(ok.engine.unique()))
          .set_caption(f"Where each engine wins, per concurrency (run {runs}); margin = winner / runner-up (>= 1)"))
    _show(A.win_summary(wins).style.hide(axis="index").format({"margin, median": "{:.2f}"}).set_caption(f"Where each engine wins, summed up (run {runs})"))
    return wins


def show_second_engine(page: Page) -> None:
    from llmstudy.core.book import not_measured

    if page.s7:
        for key, g in page.s7.items():
            show_fairness(g, key)
            what = "Llama-2-7B 4-bit: " if key[1] == MODEL_7B else f"{key[1]}: "
            show_comparison(g, key, FIG.refs_7b(), what, "the article's §6.6 numbers (Triton + TensorRT-LLM, vLLM 0.11.0), open markers")
    elif page.model_7b == MODEL_7B:
        _md("**No GPU record of this comparison exists yet.** The plan is ready (`scripts/device_engine_comparison.sh RUN_ID second-engine`, "
            "two device calls); until it has run, this section shows the published numbers only.")
    else:
        _md(f"**{_title(page.model_7b)}: SGLang against vLLM is " + not_measured(_title(page.model_7b), measure_command("second-engine", page.model_7b))
            + ".** This section shows the article's published numbers only, which are for its ELYZA-Llama-2-7B in 4 bits, not for this model.")


def show_versus_article(page: Page) -> None:
    from llmstudy.core.book import provenance

    for key, g in page.s7.items():
        va = A.versus_article(g)
        _show(va.style.hide(axis="index").format({"output tokens/s": "{:,.2f}", "HBM TB/s": "{:.2f}", "x article's vLLM": "{:.2f}"})
              .set_caption(f"Concurrency 16, total output throughput: run {key[0]} beside the article's §6.6 (published: other GPU, checkpoint, quantization and tool)"))
        provenance(EXPERIMENT, [key[0]], published="Fixstars 2026, §6.6 (data/trtllm/published.csv); HBM bandwidth from NVIDIA's datasheets (llmstudy.serving.sweep.HBM_BANDWIDTH)")


def show_other_vllm(page: Page) -> None:
    from llmstudy.core.book import provenance

    other = A.other_vllm_7b(page.model_7b)
    if not len(other):
        _md(f"No serving-chapter record of vLLM on `{page.model_7b}` exists yet.")
        return
    c16 = other[(other.concurrency == 16) & (other.outcome == "ok")]
    cols = [c for c in ("run_id", "experiment", "gpu", "server", "quantization", "weights_gib", "output_token_throughput", "time_to_first_token_avg") if c in c16]
    _show(c16[cols].style.hide(axis="index").format({"weights_gib": "{:.2f}", "output_token_throughput": "{:,.1f}", "time_to_first_token_avg": "{:,.1f}"}, na_rep="—")
          .set_caption(f"vLLM on {page.model_7b} at c=16 from the serving chapters' records (other sessions, not judged against SGLang; runs: {', '.join(sorted(c16.run_id.unique()))})"))
    for exp, h in c16.groupby("experiment"):
        provenance(exp, h.run_id)
    here = page.statements.get("ec_vllm_weights", "n/a")
    if "weights_gib" in c16 and here != "n/a" and c16.weights_gib.min() > 2 * float(here):
        _md(f"Those servers logged {c16.weights_gib.min():,.2f} GiB of weights against {here} GiB in run {page.statements['ec_run']}: vLLM served that layout "
            f"unquantized (16-bit, random weights), reading {c16.weights_gib.min() / float(here):.1f}× the weight bytes per decode step. They are not the 4-bit case "
            "and say nothing about the engines compared here.")


def show_article_verdicts() -> None:
    from llmstudy.core.book import provenance

    claims = A.article_claims()
    _show(claims[claims.section.astype(str) == "8.2"][["metric", "article_winner", "what_the_article_says", "caveat", "article_line"]].style.hide(axis="index")
          .set_caption("The article's verdicts (published, §8.2; line numbers in the article's text)"))
    provenance(published="Fixstars 2026, §8.2 (data/engine_comparison/article_claims.csv)")


def show_gptoss(page: Page) -> None:
    from llmstudy.core.book import not_measured
    from llmstudy.core.paths import data_dir

    trt = page.trt
    if not page.soss:
        if page.gptoss_model == GPTOSS_MODEL:
            _md("**No GPU record of the gpt-oss-20b sweep exists yet.** The plan is ready (`scripts/device_engine_comparison.sh RUN_ID gptoss-vllm`, "
                "one device call of about 7 minutes); until it has run, this section shows the published numbers only.")
        else:
            _md(f"**{_title(page.gptoss_model)} on vLLM is " + not_measured(_title(page.gptoss_model), measure_command("gptoss-vllm", page.gptoss_model))
                + ".** This section shows the article's published numbers only, which are for gpt-oss-20b, not for this model.")
        return
    pub = published_numbers()
    for key, g in page.soss.items():
        both = pd.concat([g, trt[trt.model == key[1]]], ignore_index=True) if len(trt) else g
        show_comparison(both.assign(outcome=both["outcome"].fillna("ok")), key, FIG.refs_gptoss(), f"{key[1]}: ", "the article's trtllm-serve figures (§8.1)")
        ok = g[g.outcome == "ok"]
        c1 = ok[ok.concurrency == 1]
        if len(c1):
            ours = f"vLLM, record {key[0]} ({ok.gpu.iloc[0]})"
            theirs = "trtllm-serve, published (H100 PCIe)" if key[1] == GPTOSS_MODEL else "trtllm-serve, published for gpt-oss-20b (H100 PCIe)"
            rows = [("streaming TPS = tokens / (latency − TTFT), c=1", c1.tps_streaming_avg.iloc[0], pub["trtllm_c1"]),
                    ("non-streaming TPS = tokens / latency, c=1", c1.tps_non_streaming_avg.iloc[0], pub["trtllm_c1_incl"])]
            _show(pd.DataFrame(rows, columns=["quantity", ours, theirs]).style.hide(axis="index")
                  .format("{:,.0f}", subset=pd.IndexSlice[:, [ours, theirs]])
                  .set_caption("Concurrency 1: our vLLM record against the article's trtllm-serve (published; other GPU variant and tool)"))
            prov(ok, published="the article's trtllm-serve figures (§8.1)")
        # TTFT that does not fall with more parallel prefill is a stall, not a queue: say where, and what the log says
        t = ok.sort_values("concurrency").set_index("concurrency")["time_to_first_token_avg"]
        later_min = t[::-1].cummin()[::-1].shift(-1)  # the lowest TTFT at any higher concurrency
        stall = t[t > 3 * later_min]
        if len(stall):
            exp = ok["experiment"].iloc[0] if "experiment" in ok and ok["experiment"].notna().any() else EXPERIMENT
            jit = A.jit_warnings(data_dir() / "runs" / exp / key[0])
            _md(f"**Stalled points (run {key[0]}).** At c={', '.join(str(int(x)) for x in stall.index)} the mean TTFT "
                f"({', '.join(f'{v:,.0f}' for v in stall)} ms) is over three times the lowest TTFT at any higher concurrency "
                f"({', '.join(f'{v:,.0f}' for v in later_min[stall.index])} ms), although a higher concurrency has more prefill to do. "
                f"Queueing cannot explain that; a one-time cost that the warm-up did not cover would, and the server log shows such costs "
                f"during the sweep: {len(jit)} mid-run Triton JIT compilation(s) ({'; '.join(f'{r.time} {r.kernel}' for r in jit.itertuples()) or 'none'}). The stalled TTFTs are "
                "kept as measured, but they are not steady-state numbers. A rerun whose warm-up covers every prefill batch shape would give those.")
        bad = g[g.outcome != "ok"]
        if len(bad):
            reason = "; ".join(sorted(set(bad.get("failure", pd.Series(dtype=str)).dropna()) - {""}))
            _md(f"**{len(bad)} point(s) failed** (run {key[0]}): {reason or 'see the server log in the record'}.")
    if not len(trt):
        _md("No TensorRT-LLM (`trtllm_serve`) run record exists: the TensorRT-LLM side of this comparison is the article's published numbers only.")


def show_other(page: Page) -> None:
    if not page.other:
        _md("None.")
        return
    for key, g in page.other.items():
        if g["engine"].nunique() > 1:
            show_fairness(g, key)
        show_comparison(g, key, None, f"{key[1]} on {g.gpu.iloc[0]}: ")
