"""The engine_comparison chapter as a page: the records it shows for its models, the opening answer, and the tables
and figures each notebook cell displays. The notebook only calls these; every glued number comes from
:mod:`.statements`.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field

import pandas as pd

from llmstudy.chapters.engine_comparison import analysis as A
from llmstudy.chapters.engine_comparison import figures as FIG
from llmstudy.chapters.engine_comparison.params import GPTOSS_MODEL, MODEL_7B, PARAMS
from llmstudy.chapters.engine_comparison.plan import EXPERIMENT, RULES, measure_command, newest_with_torch
from llmstudy.chapters.engine_comparison.statements import NA, _title, fmt, gpu_sets, published_numbers, statements
from llmstudy.publishing.tables import Col, table


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


def _engines(ok: pd.DataFrame) -> str:
    return " vs ".join(sorted({A.engine_label(r) for _, r in ok.drop_duplicates("engine").iterrows()}))


def _where(wins: pd.DataFrame, metrics=("total", "TTFT")) -> str:
    """Who wins each of ``metrics`` where (ties named too), from a win table: "total output: sglang at c = 1, 2; tie at c = 16"."""
    parts = []
    for m, h in A.win_summary(wins).groupby("metric", sort=False):
        if m.startswith(metrics):
            name = m.split(" (")[0].split(",")[0]
            parts.append(f"{name}: " + ", ".join(f"{r.winner} at c = {r['at concurrency']}" for _, r in h.iterrows()))
    return "; ".join(parts)


def answer(page: Page) -> str:
    """The chapter's answer as Markdown bullets, computed from the records (published numbers named as the article's);
    every verdict comes from :func:`~.analysis.verdict` (a lead of at most 2 % is a tie)."""
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
        what = "4-bit Llama-2-7B" if key[1] == MODEL_7B else key[1]
        head = f"* **{what}, {_engines(ok)}** (run {key[0]}, one {ok.gpu.iloc[0]})"
        if len(at16):
            r = at16.iloc[0]
            vals = " and ".join(f"{e} {fmt(r[e])}" for e in sorted(ok.engine.unique()))
            head += f": at the article's point (c=16) {A.verdict_phrase(r.winner, r.margin)}, {vals} total output tokens/s"
        lines.append(head + f". Across the sweep: {_where(w)}.")
        va = A.versus_article(g)
        ours = va[va.source.str.startswith("measured") & va.engine.str.startswith("vllm")] if len(va) else va
        if len(ours):
            ratio = ours["x article's vLLM"].iloc[0]
            lines.append(f"* **TensorRT-LLM was not run here.** The article's Triton + TensorRT-LLM led its vLLM 0.11.0 by {pub['ratio']:.2f}× "
                         f"(published, {A.ARTICLE_GPU}); our vLLM {ours.engine.iloc[0].split(' ', 1)[-1]} alone delivers "
                         f"{ratio:.2f}× that vLLM 0.11.0 figure on this GPU, so the article's 1.42× cannot be carried over to today's vLLM.")
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
        lines.append(f"* **TensorRT-LLM was not run here.** The article's Triton + TensorRT-LLM led its vLLM 0.11.0 by {pub['ratio']:.2f}× (published, {A.ARTICLE_GPU}).")
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


def show_answer(page: Page) -> None:
    """The answer (bullets) and the key figure: the 4-bit 7B comparison with the article's §6.6 points."""
    import matplotlib.pyplot as plt

    _md(answer(page))
    for key, g in page.s7.items():
        ok = g[g.outcome == "ok"]
        if ok.engine.nunique() < 2:
            continue
        FIG.key_figure(ok, f"{key[1]}, {key[2]} in / {key[3]} out, one {ok.gpu.iloc[0]}", FIG.refs_7b())
        plt.show()
        prov(g, published="the article's §6.6 numbers (Triton + TensorRT-LLM, vLLM 0.11.0 on an H100 PCIe), open diamonds")


def show_where_each_wins(page: Page) -> None:
    """Where each engine wins: each fair comparison of our records (measured), then the article's verdicts
    (published), in separate tables: never judged against each other."""
    from llmstudy.core.book import provenance

    p7 = pd.concat(list(page.s7.values()), ignore_index=True) if page.s7 else pd.DataFrame()
    where = A.where_each_wins(p7)
    mine = where[where.source.str.startswith("measured")]
    for (src, comp), g in mine.groupby(["source", "comparison"], sort=False):
        _show(table(g, [Col("metric", "Metric"), Col("winner", "Winner"), Col("at concurrency", "At concurrency"), Col("points won", "Points"),
                        Col("margin, median", "Margin, median (×)", decimals=2)],
                    caption=f"Where each engine wins, {src.replace('measured: ', 'measured in ')}: {comp}; a lead of "
                            f"{100 * (A.TIE_MARGIN - 1):.0f} % or less is a tie"))
        provenance(EXPERIMENT, p7["run_id"])
    pub = where[where.source.str.startswith("published")]
    pub = pub.assign(source=pub.source.str.extract(r"(Fixstars 2026 §[\d.]+)", expand=False).fillna(pub.source))
    _show(table(pub, [Col("source", "Source"), Col("comparison", "Comparison"), Col("metric", "Metric"), Col("winner", "Winner"),
                      Col("at concurrency", "At concurrency"), Col("margin, median", "Margin (×)", decimals=2, missing="")],
                caption=f"Where each engine wins, published: the article's verdicts ({A.ARTICLE_GPU}, other tools; not judged against our records)"))
    provenance(published="Fixstars 2026, §6.6 and §8.2 (data/engine_comparison/article_claims.csv, data/trtllm/published.csv)")


def show_sglang_pins() -> None:
    from llmstudy.core.book import provenance
    from llmstudy.core.paths import data_dir

    pins = pd.read_csv(data_dir() / "engine_comparison" / "sglang_pins.csv")
    newest = newest_with_torch(pins, "2.11.0")
    _show(table(pins.assign(fits=pins.torch.astype(str) == "2.11.0"),
                [Col("sglang", "SGLang", kind="code"), Col("torch", "torch", kind="code"), Col("fits", "Pins torch 2.11.0", kind="bool"),
                 Col("transformers", "transformers", kind="code"), Col("sglang-kernel", "sglang-kernel", kind="code"), Col("flashinfer-python", "flashinfer-python", kind="code")],
                caption="Exact pins in each SGLang release's wheel (cp312, manylinux)"))
    provenance(computed="the SGLang wheels' metadata read with pip (data/engine_comparison/sglang_pins.csv)")
    _md(f"Releases **{', '.join(pins[pins.torch == '2.11.0'].sglang)}** pin torch 2.11.0; the newest, **SGLang {newest}**, is the "
        "second engine, with its pinned `sglang-kernel` (built for CUDA 13.0 and torch 2.11, like the image).")


def show_rules() -> None:
    from llmstudy.core.book import provenance

    _show(table([{"rule": k, "what": v} for k, v in RULES.items()], [Col("rule", "Rule", kind="code"), Col("what", "What must hold")],
                caption="The fairness rules (llmstudy.chapters.engine_comparison.require_fair)"))
    provenance(computed="the fairness rules enforced by llmstudy.chapters.engine_comparison")


def show_published() -> None:
    from llmstudy.core.book import provenance

    pub = A.published()
    pub = pub.assign(section="§" + pub.section.astype(str), metric=pub.metric.replace({"output_token_throughput": "total output"}),
                     value_unit=[f"{v:,.2f} {u}" for v, u in zip(pub.value, pub.unit)])
    _show(table(pub, [Col("section", "Section"), Col("server", "Server"), Col("model", "Model"), Col("setting", "Setting"),
                      Col("concurrency", "Concurrency", kind="int"), Col("metric", "Metric"), Col("value_unit", "Value", kind="text", align="right")],
                caption="The article's engine numbers (published, not run records)"))
    provenance(published="Fixstars 2026, §6.6 and §8 (data/trtllm/published.csv)")


def show_server_facts(page: Page) -> None:
    """What each server loaded, read from its log (the table), and the log lines it was read from (collapsed)."""
    from llmstudy.core.book import provenance

    for key in page.s7:
        facts = A.server_facts(page.paths[key[0]])
        _show(table(facts, [Col("engine", "Engine"), Col("weights_gib", "Weights (GiB)", decimals=2), Col("quantization", "Quantization"),
                            Col("gemm_kernel", "GEMM kernel", kind="code"), Col("kv_cache_tokens", "KV cache (tokens)", kind="int"),
                            Col("kv_cache_gib", "KV cache (GiB)", decimals=1)],
                    caption=f"What each server loaded, read from its log (run {key[0]})"))
        provenance(EXPERIMENT, [key[0]], computed="the server logs in the record (llmstudy.serving.servers.parse_sglang_log, llmstudy.serving.logs.parse_startup_log)")


def show_log_lines(page: Page) -> None:
    """The server-log lines behind the loaded-weights table, collapsed (evidence, not reading matter)."""
    import html

    from IPython.display import HTML

    for key in page.s7:
        facts = A.server_facts(page.paths[key[0]])
        lines = "\n".join(ln for ls in facts["lines"] for ln in ls)
        _show(HTML(f'<details class="llmstudy-details"><summary>The server-log lines these numbers come from (run {html.escape(key[0])})</summary>'
                   f"<pre>{html.escape(lines)}</pre></details>"))


def show_failed_attempts(page: Page) -> None:
    from llmstudy.core.book import provenance

    for key in page.s7:
        fails = A.failed_attempts(page.paths[key[0]])
        if len(fails):
            _show(table(fails.assign(failure=fails.failure.replace("", None)),
                        [Col("log", "Log", kind="code"), Col("failure", "Died on", missing="did not die"), Col("prefill_graph_capture_s", "Prefill graphs (s)", decimals=0),
                         Col("decode_graph_capture_s", "Decode graphs (s)", decimals=1), Col("ready_after_s", "Ready after (s)", kind="int", missing="never")],
                        caption=f"Attempts before run {key[0]} that measured nothing: their SGLang server logs, kept in the record"))
            provenance(EXPERIMENT, [key[0]], computed="logs/failed-attempts/ in the record (its README.md tells each attempt)")


def show_fairness(g: pd.DataFrame, key: tuple) -> bool:
    rep = A.fairness(g)
    _show(table(rep, [Col("rule", "Rule", kind="code"), Col("ok", "Holds", kind="bool"), Col("detail", "What was checked")],
                caption=f"Fairness rules on run {key[0]} ({key[1]}, {key[2]} in / {key[3]} out)"))
    prov(g)
    return bool(rep["ok"].all())


def show_comparison(g: pd.DataFrame, key: tuple, references=None, what: str = "", cite: str = "", throughput: bool = True):
    """The figures and tables of one comparison set, then the records they came from (and ``cite``, the published
    source of ``references``). ``throughput=False``: the throughput figure is the page's key figure, shown above."""
    out = _show_comparison(g, key, references, what, throughput)
    prov(g, published=cite if throughput and references is not None and len(references) else "")
    return out


def _servers(g: pd.DataFrame) -> pd.DataFrame:
    s = g.drop_duplicates("server").copy()
    s["label"] = [A.engine_label(r) for _, r in s.iterrows()]
    s["gemm"] = s.get("linear_kernel", pd.Series(index=s.index, dtype=object)).fillna(s.get("quant_kernel", pd.Series(index=s.index, dtype=object)))
    return s.reindex(columns=[*s.columns, *[c for c in ("start_s", "attention_backend", "moe_backend", "sampling_backend") if c not in s]])


def _show_comparison(g, key, references=None, what="", throughput=True):
    import matplotlib.pyplot as plt

    ok = g[g["outcome"] == "ok"]
    runs = _named(g["run_id"])
    fails = g[g["outcome"] != "ok"]
    if len(fails):
        _show(table(fails, [Col("engine", "Engine"), Col("concurrency", "Concurrency", kind="int"), Col("outcome", "Outcome"), Col("error", "Error")],
                    caption=f"Points that did not succeed (run {runs}): results too"))
    if not len(ok):
        _md(f"Run {runs}: no successful point to plot.")
        return None
    if throughput:
        FIG.throughput_figure(ok, f"{what}output throughput per user and in total (run {runs})", references)
        plt.show()
    FIG.ttft_figure(ok, f"{what}time to first token (run {runs})")
    plt.show()
    srv = _servers(g)
    _show(table(srv, [Col("label", "Engine"), Col("start_s", "Start to healthy (s)", kind="int"), Col("attention_backend", "Attention"),
                      Col("gemm", "GEMM kernel", kind="code"), Col("moe_backend", "MoE backend"), Col("sampling_backend", "Sampling", missing="default")],
                caption=f"The servers: flags, package versions and the kernels they logged (run {runs})"))
    lines = [f"{r.label}:\n" + textwrap.fill(r.args, 96, initial_indent="  ", subsequent_indent="  ", break_on_hyphens=False, break_long_words=False)
             for r in srv.itertuples() if isinstance(r.args, str)]
    _md("The servers' command lines, as recorded:\n\n```text\n" + "\n".join(lines) + "\n```")
    if g["engine"].nunique() < 2:
        return None
    try:
        A.require_fair(g)
    except A.FairnessError as e:
        _md(f"**Not compared** (run {runs}): {e}")
        return None
    wins = A.win_table(ok)
    engines = sorted(ok.engine.unique())
    _show(table(wins, [Col("concurrency", "Concurrency", kind="int"), Col("metric", "Metric")] + [Col(e, e, decimals=1) for e in engines]
                + [Col("winner", "Winner"), Col("margin", "Margin (×)", decimals=2)],
                caption=f"Where each engine wins, per concurrency (run {runs}); margin = winner ÷ runner-up; {100 * (A.TIE_MARGIN - 1):.0f} % or less is a tie",
                collapsed=True, summary=f"Where each engine wins, per concurrency (run {runs}): {len(wins)} rows"))
    return wins


def show_second_engine(page: Page) -> None:
    from llmstudy.core.book import not_measured

    if page.s7:
        for key, g in page.s7.items():
            show_fairness(g, key)
            what = "Llama-2-7B 4-bit: " if key[1] == MODEL_7B else f"{key[1]}: "
            ok = g[g.outcome == "ok"]
            show_comparison(g, key, FIG.refs_7b(), what, "the article's §6.6 numbers (Triton + TensorRT-LLM, vLLM 0.11.0), open markers",
                            throughput=ok.engine.nunique() < 2)  # two engines: the key figure above is this comparison's throughput
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
        va = va.assign(**{"load tool": va["load tool"].astype(str).str.split(" (", regex=False).str[0]})
        _show(table(va, [Col("engine", "Engine"), Col("source", "Source"), Col("gpu", "GPU"), Col("load tool", "Load tool"),
                         Col("output tokens/s", "Output (tok/s)", decimals=2), Col("HBM TB/s", "HBM (TB/s)", decimals=2), Col("x article's vLLM", "× article's vLLM", decimals=2)],
                    caption=f"Concurrency 16, total output throughput: run {key[0]} beside the article's §6.6 (published: other GPU, checkpoint, quantization and tool)"))
        provenance(EXPERIMENT, [key[0]], published="Fixstars 2026, §6.6 (data/trtllm/published.csv); HBM bandwidth from NVIDIA's datasheets (llmstudy.serving.sweep.HBM_BANDWIDTH)")


def show_other_vllm(page: Page) -> None:
    from llmstudy.core.book import provenance

    other = A.other_vllm_7b(page.model_7b)
    if not len(other):
        _md(f"No serving-chapter record of vLLM on `{page.model_7b}` exists yet.")
        return
    c16 = other[(other.concurrency == 16) & (other.outcome == "ok")]
    _show(table(c16, [Col("run_id", "Run", kind="code"), Col("experiment", "Chapter", kind="code"), Col("gpu", "GPU"), Col("quantization", "Quantization flag", missing="not set"),
                      Col("weights_gib", "Weights (GiB)", decimals=2), Col("output_token_throughput", "Output (tok/s)", decimals=1),
                      Col("time_to_first_token_avg", "TTFT (ms)", decimals=1)],
                caption=f"vLLM on {page.model_7b} at c=16 from the serving chapters' records (other sessions, not judged against SGLang)"))
    for exp, h in c16.groupby("experiment"):
        provenance(exp, h.run_id)
    here = page.statements.get("ec_vllm_weights", NA)
    if "weights_gib" in c16 and here != NA and c16.weights_gib.min() > 2 * float(here):
        _md(f"Those servers logged {c16.weights_gib.min():,.2f} GiB of weights against {here} GiB in run {page.statements['ec_run']}: vLLM served that layout "
            f"unquantized (16-bit, random weights), reading {c16.weights_gib.min() / float(here):.1f}× the weight bytes per decode step. They are not the 4-bit case "
            "and say nothing about the engines compared here.")


def show_article_verdicts() -> None:
    from llmstudy.core.book import provenance

    claims = A.article_claims()
    _show(table(claims[claims.section.astype(str) == "8.2"], [Col("metric", "Metric"), Col("article_winner", "Article's winner"),
                                                             Col("what_the_article_says", "What the article says"), Col("caveat", "Caveat"),
                                                             Col("article_line", "Line", kind="text", align="right")],
                caption="The article's verdicts (published, §8.2; line numbers in the article's text)"))
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
        # TTFT that does not fall with more parallel prefill is a stall, not a queue: say where, and what the log says
        stall = A.stalled_points(ok)
        if len(stall):
            exp = ok["experiment"].iloc[0] if "experiment" in ok and ok["experiment"].notna().any() else EXPERIMENT
            jit = A.jit_warnings(data_dir() / "runs" / exp / key[0])
            _md(f"**Stalled points (run {key[0]}).** At c={', '.join(str(int(x)) for x in stall.concurrency)} the mean TTFT "
                f"({', '.join(f'{v:,.0f}' for v in stall.ttft_ms)} ms) is over three times the lowest TTFT at any higher concurrency "
                f"({', '.join(f'{v:,.0f}' for v in stall.lowest_higher_ttft_ms)} ms), although a higher concurrency has more prefill to do "
                "(circled in the figures above). Queueing cannot explain that; a one-time cost that the warm-up did not cover would, and the server log "
                f"shows such costs during the sweep: {len(jit)} mid-run Triton JIT compilation(s) ({'; '.join(f'{r.time} {r.kernel}' for r in jit.itertuples()) or 'none'}). "
                "The stalled TTFTs, and the lower total output at the same points, are kept as measured, but they are not steady-state numbers. "
                "A rerun whose warm-up covers every prefill batch shape would give those.")
        c1 = ok[ok.concurrency == 1]
        if len(c1):
            ours = f"vLLM, record {key[0]} ({ok.gpu.iloc[0]})"
            theirs = "trtllm-serve, published (H100 PCIe)" if key[1] == GPTOSS_MODEL else "trtllm-serve, published for gpt-oss-20b (H100 PCIe)"
            rows = [{"quantity": "streaming TPS = tokens ÷ (latency − TTFT), c=1", "ours": c1.tps_streaming_avg.iloc[0], "theirs": pub["trtllm_c1"]},
                    {"quantity": "non-streaming TPS = tokens ÷ latency, c=1", "ours": c1.tps_non_streaming_avg.iloc[0], "theirs": pub["trtllm_c1_incl"]}]
            _show(table(rows, [Col("quantity", "Quantity"), Col("ours", f"{ours} (tok/s)", kind="int"), Col("theirs", f"{theirs} (tok/s)", kind="int")],
                        caption="Concurrency 1: our vLLM record against the article's trtllm-serve (published; other GPU variant and tool)"))
            prov(ok, published="the article's trtllm-serve figures (§8.1)")
        bad = g[g.outcome != "ok"]
        if len(bad):
            reason = "; ".join(sorted(set(bad.get("failure", pd.Series(dtype=str)).dropna()) - {""}))
            _md(f"**{len(bad)} point(s) failed** (run {key[0]}): {reason or 'see the server log in the record'}.")
    if not len(trt):
        _md("No TensorRT-LLM (`trtllm_serve`) run record exists: the TensorRT-LLM side of this comparison is the article's published numbers only.")


def show_other(page: Page) -> None:
    if not page.other:
        _md("No other engine_comparison record exists; a CPU rehearsal of the pipeline (part `cpu-smoke`) would be listed here, "
            "as a test of the code and never as a result.")
        return
    for key, g in page.other.items():
        if g["engine"].nunique() > 1:
            show_fairness(g, key)
        show_comparison(g, key, None, f"{key[1]} on {g.gpu.iloc[0]}: ")
