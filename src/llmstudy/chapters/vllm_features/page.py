"""The vllm_features chapter as a page: which records it shows (for which model), its opening summary and the tables
each notebook cell displays. The notebook only calls these; every glued number comes from :mod:`.statements`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from llmstudy.chapters.vllm_features import analysis as A
from llmstudy.chapters.vllm_features import figures
from llmstudy.chapters.vllm_features.params import PARAMS
from llmstudy.chapters.vllm_features.plan import ARMS, EXPERIMENT
from llmstudy.chapters.vllm_features.statements import statements
from llmstudy.core import records as R
from llmstudy.publishing.tables import Col, table

MEASURE_COMMAND = "llmstudy features run {group} --model {model} --run-id RUN_ID"


def record_models(root=None) -> dict[str, str]:
    """run_id -> the model a vllm_features record served, as a name (the spec group's checkpoint folder's name)."""
    return {rec.run_id: Path(str(R.run_model(rec) or "")).name for rec in R.load_runs(EXPERIMENT, root)}


@dataclass
class Page:
    model: str
    points: pd.DataFrame
    gpu: pd.DataFrame
    cpu: pd.DataFrame
    servers: pd.DataFrame | None
    skipped: pd.DataFrame
    statements: dict[str, str]
    views: list = field(default_factory=list)  # (label, points) per kind of record: GPU results, CPU pipeline checks
    models: dict = field(default_factory=dict)  # run_id -> model


def load_page(run_ids=(), model: str = PARAMS["model"].default, root=None) -> Page:
    """The records the chapter shows for ``model``: those of its 7B arms that served ``model`` and the spec group's
    (which always serves gemma-3-270m's checkpoint and is labelled with it); ``run_ids``: exactly these records."""
    models = record_models(root)
    if run_ids:  # records named explicitly are shown whatever they served (each view names its models)
        keep = [r for r in models if r in run_ids]
    else:
        keep = [r for r, m in models.items() if m == Path(model).name or _is_spec_record(r, root)]
    points = A.load(keep, root) if keep else pd.DataFrame()
    gpu = points[points.gpu != "CPU"] if len(points) else points
    cpu = points[points.gpu == "CPU"] if len(points) else points
    servers = A.servers(sorted(points.run_id.unique()), root) if len(points) else None
    skipped = A.skipped(sorted(points.run_id.unique()) if len(points) else ["—"], root)
    st = statements(gpu, servers_=servers[servers.run_id.isin(gpu.run_id)] if len(gpu) else None, skipped_=skipped[skipped.run_id.isin(gpu.run_id)] if len(gpu) else None)
    views = []
    for label, d in (("runs", gpu), ("CPU pipeline check, not a result — runs", cpu)):
        if len(d):
            runs = sorted(d.run_id.unique())
            names = ", ".join(dict.fromkeys(models.get(r, "?") for r in runs))
            views.append((f"{label}: {', '.join(runs)}; models: {names}", d))
    return Page(model, points, gpu, cpu, servers, skipped, st, views, models)


def _is_spec_record(run_id: str, root=None) -> bool:
    for rec in R.load_runs(EXPERIMENT, root):
        if rec.run_id == run_id:
            arms = rec.manifest.get("parameters", {}).get("arms", [])
            return bool(arms) and all(ARMS[a].group == "spec" for a in arms if a in ARMS)
    return False


def summary(page: Page) -> str:
    """The page's opening note (Markdown): what was measured for this model, what was skipped, what is pending and the
    command that measures it; CPU records called what they are."""
    from llmstudy.core import models as M
    from llmstudy.core.book import not_measured

    gpu, cpu = page.gpu, page.cpu
    runs = lambda d: ", ".join(sorted(d.run_id.unique())) if len(d) else ""  # noqa: E731
    msg = []
    own = gpu[gpu["sweep"] != "text"] if len(gpu) else gpu
    if not len(own):
        if page.model != PARAMS["model"].default:
            title = M.title(page.model)
            msg.append(f"**{title}:** the arms of the core group are " + not_measured(title, MEASURE_COMMAND.format(group="core", model=page.model))
                       + f"; the kernels group and the arms kv-fp8 and fp8-weights likewise (`{MEASURE_COMMAND.format(group='kernels', model=page.model)}`, "
                       f"`{MEASURE_COMMAND.format(group='kv-fp8,fp8-weights', model=page.model)}`). The 4-bit arms (gptq, awq) serve Llama-2-7B's layouts and are "
                       "not run for another model. The speculative-decoding group serves gemma-3-270m whatever the model: its records, where shown, are gemma-3-270m's.")
        else:
            msg.append("**No GPU record yet.** No arm of this chapter has been measured on a GPU so far, so this page reports "
                       "no gain or loss of any feature: the tables below are empty or show only a CPU pipeline check. "
                       "`scripts/device_vllm_features.sh` makes the records (one per group of arms).")
    if len(cpu):
        msg.append(f"**CPU pipeline check** ({runs(cpu)}): records made on a CPU with the CPU build of vLLM (the test suite's "
                   "tiny random model, or the small real model on two cores) to prove that the driver, the record and this "
                   "page work end to end. Their numbers are never results: CPU timings say nothing about a GPU.")
    if len(gpu):
        S = page.statements
        names = ", ".join(dict.fromkeys(page.models.get(r, "?") for r in sorted(gpu.run_id.unique())))
        skipped = f" **Skipped before any start:** {S['vf_skipped']}." if S["vf_skipped"] != "none" else ""
        pending = (f" **Not measured yet:** {S['vf_pending']} (`{MEASURE_COMMAND.format(group='GROUP', model=page.model)}` measures a group as one record)."
                   if S["vf_pending"] != "none" else " Every arm of the four groups has been measured or skipped.")
        msg.insert(0, f"**Measured on a GPU** (runs: {runs(gpu)}; models: {names}): {S['vf_measured']}.{skipped}{pending}")
    return "\n\n".join(msg)


# --- the tables and figures, one function per notebook cell ----------------------------------------------------------
def _show(obj) -> None:
    from IPython.display import display

    display(obj)


def _md(text: str) -> None:
    from IPython.display import Markdown

    _show(Markdown(text))


def _tag(label: str) -> str:
    """What a table caption adds for a view: nothing for the GPU records (the source line names them), a warning for
    CPU pipeline checks."""
    return " (CPU pipeline check, not a result)" if label.startswith("CPU") else ""


def _delta(delta, noise, beyond) -> str:
    """A delta for a table cell: '-61.1% (±0.8%)', prefixed with '≈ ' where it is within the noise."""
    if pd.isna(delta):
        return "—"
    text = f"{delta:+.1f}% (±{noise:.1f}%)" if pd.notna(noise) else f"{delta:+.1f}%"
    return text if beyond else "≈ " + text


def show_arms() -> None:
    from llmstudy.core.book import provenance

    order = ("core", "quant", "kernels", "spec", "extra")
    arms = sorted(ARMS.values(), key=lambda a: order.index(a.group) if a.group in order else len(order))
    arm_table = pd.DataFrame([{"arm": a.name, "feature": a.feature, "change": a.change} for a in arms])
    _show(table(arm_table, [Col("arm", "Arm", kind="code"), Col("feature", "Feature"), Col("change", "Change against the baseline", kind="text")],
                caption="The arms, group by group: core, quant, kernels, spec, then the extra arms (run only when named)", collapsed=False))
    provenance(computed="the arms defined in llmstudy.chapters.vllm_features (the plan, not a measurement)")


def show_records(page: Page) -> None:
    from llmstudy.chapters import serve_sweeps as SP
    from llmstudy.core.book import provenance

    for label, d in page.views:
        runs = sorted(d.run_id.unique())
        info = SP.runs_info(EXPERIMENT, runs)
        extra = pd.DataFrame([{"run_id": r.run_id, "arms": ", ".join(r.manifest["parameters"].get("arms", [])),
                               "skipped": "; ".join(f"{k}: {v}" for k, v in r.manifest["parameters"].get("skipped_arms", {}).items()) or "—"}
                              for r in R.load_runs(EXPERIMENT) if r.run_id in runs])
        info = info.merge(extra, on="run_id")
        gpus, vllms = ([str(x) for x in dict.fromkeys(info[c]) if pd.notna(x) and str(x)] for c in ("gpu", "vllm"))
        on = "; ".join(filter(None, (", ".join(gpus), "vLLM " + ", ".join(vllms) if vllms else "")))
        _show(table(info, [Col("run_id", "Record", kind="code"), Col("sweep_wall_s", "Wall time (s)", kind="int"), Col("points", "Points", kind="int"),
                           Col("arms", "Arms"), Col("skipped", "Skipped before any start")],
                    caption=f"Records{_tag(label)}" + (f": {on}" if on else ""), collapsed=False))
        nz = A.noise(d)
        if len(nz):
            nz = nz.assign(metric=[f"{A.METRICS[m][0]} ({A.METRICS[m][1]})" for m in nz.metric])
            _show(table(nz, [Col("run_id", "Record", kind="code"), Col("workload", "Workload"), Col("metric", "Metric"), Col("mean", "Mean", kind="float"),
                             Col("repeat_spread_pct", "Repeat spread (%)", decimals=1), Col("restart_pct", "Restart drift (%)", decimals=1, signed=True),
                             Col("n", "Values", kind="int")],
                        caption=f"Baseline noise per workload and metric{_tag(label)}", summary=f"The baseline's own noise, per record, workload and metric ({len(nz)} rows)"))
        provenance(EXPERIMENT, runs)
    if not page.views:
        print("No run record yet.")


def headline_view(d: pd.DataFrame, skipped_: pd.DataFrame, label: str = ""):
    """The headline table for a page: one row per arm and workload, each delta in % with its noise band ('≈' = within
    it), the KV-capacity change; arms not measured say so once. An arm and workload measured in two records names
    its record."""
    head = A.headline(d, skipped_=skipped_)
    twice = head[head.workload != "—"].groupby(["arm", "workload"])["run_id"].transform("nunique") > 1
    twice = twice.reindex(head.index, fill_value=False)

    def pct(text: str, beyond: str) -> str:  # "+67.2% (±30.5%)" -> "+67.2 (±30.5)", "≈ " within the noise
        if beyond not in ("yes", "no"):
            return text
        return ("" if beyond == "yes" else "≈ ") + text.replace("%", "")

    rows = []
    for r, t in zip(head.to_dict("records"), twice):
        out = {"arm": r["arm"] + (f" ({r['run_id']})" if t else ""), "workload": r["workload"]}
        for m in ("throughput", "TTFT", "ITL"):
            out[m] = pct(r[f"Δ {m}"], r[f"{m} > noise"])
        kv = r["KV capacity"]
        out["kv"] = kv.split(" (")[0].replace("%", "") if kv != "—" else "—"
        if r["workload"] == "—":  # not measured, skipped or failed: the reason once
            out["TTFT"] = out["ITL"] = "—"
        rows.append(out)
    return table(pd.DataFrame(rows), [Col("arm", "Arm", kind="code"), Col("workload", "Workload"), Col("throughput", "Δ throughput, % (noise)"),
                                      Col("TTFT", "Δ TTFT, % (noise)"), Col("ITL", "Δ ITL, % (noise)"), Col("kv", "Δ KV cache, %")],
                 caption="Feature → Δ throughput / TTFT / ITL / KV capacity against the baseline, in %, noise band in brackets; ≈: within the noise" + _tag(label),
                 summary=f"Every arm and workload: the deltas and their noise ({len(rows)} rows)")


def show_headline(page: Page) -> None:
    from llmstudy.core.book import provenance

    for label, d in page.views:
        _show(headline_view(d, page.skipped[page.skipped.run_id.isin(d.run_id)], label))
        provenance(EXPERIMENT, d.run_id)
    if not page.views:
        print("No run record yet: no deltas.")


def show_means(page: Page) -> None:
    from llmstudy.core.book import provenance

    for label, d in page.views:
        cmp = A.compare(d)
        if not len(cmp):
            print(f"No arm with ok points to compare ({label}).")
            continue
        v = cmp[cmp.metric.isin(["output_token_throughput", "time_to_first_token_avg", "inter_token_latency_avg", "chunk_gap_p99_ms"])].copy()
        v["metric"] = [f"{A.METRICS[m][0]} ({A.METRICS[m][1]})" for m in v.metric]
        twice = v.groupby(["arm", "workload", "metric"])["run_id"].transform("nunique") > 1
        v["arm_label"] = [f"{a} ({r})" if t else a for a, r, t in zip(v.arm, v.run_id, twice)]
        v["starts"] = [f"{a:,.2f} / {b:,.2f}" for a, b in zip(v.baseline_1, v.baseline_2)]
        v["delta"] = [_delta(x, n, b) for x, n, b in zip(v.delta_pct, v.noise_pct, v.larger_than_noise)]
        _show(table(v, [Col("arm_label", "Arm", kind="code"), Col("workload", "Workload"), Col("metric", "Metric"),
                        Col("starts", "Baseline, start 1 / 2", kind="text", align="right"), Col("value", "Arm mean", kind="float"),
                        Col("delta", "Δ (noise)", kind="text", align="right")],
                    caption=f"The means behind every delta: both baseline starts and the arm, two repeats each{_tag(label)}; ≈: within the noise",
                    summary=f"The means behind every delta ({len(v)} rows)", collapsed=True))
        provenance(EXPERIMENT, d.run_id)
    if not page.views:
        print("No run record yet.")


FIGURE_TITLE = "Each vLLM setting against its own baseline: arm / baseline, per workload"


def show_figure(page: Page, gpu_only: bool = False) -> None:
    """The forest plot per view (``gpu_only``: the GPU records' view only, the chapter's key figure)."""
    import matplotlib.pyplot as plt

    from llmstudy.core.book import provenance

    shown = False
    for label, d in page.views:
        if gpu_only and d is not page.gpu:
            continue
        cmp = A.compare(d)
        if len(cmp):
            figures.figure(cmp, FIGURE_TITLE if d is page.gpu else f"{FIGURE_TITLE} ({label})")
            plt.show()
            rows = figures.forest_rows(cmp)
            provenance(EXPERIMENT, rows.run_id)
            shown = True
    if not shown:
        print("No run record yet: no figure." if not page.views else "No GPU record with an arm to compare yet: no figure.")


def server_tables(page: Page, d: pd.DataFrame) -> list:
    """One collapsed table per record of ``d``: what each server loaded and chose, from its log."""
    out = []
    sv = page.servers[page.servers.run_id.isin(d.run_id)] if page.servers is not None else pd.DataFrame()
    for run, g in (sv.groupby("run_id", sort=False) if len(sv) else ()):
        g = g.copy()
        g["attention"] = [a if pd.isna(v) or pd.isna(a) else f"{a} (FA{int(v)})" for a, v in zip(g.attention_backend, g.flash_attn_version)]
        out.append(table(g, [Col("server", "Server", kind="code"), Col("quantization", "Quantization", kind="code"), Col("linear_kernel", "GEMM kernel", kind="code"),
                             Col("attention", "Attention backend"), Col("async_scheduling", "Async scheduling"), Col("weights_gib", "Weights (GiB)", kind="float"),
                             Col("kv_cache_tokens", "KV cache (tokens)", kind="int"), Col("start_s", "Start (s)", kind="int")],
                         caption=f"What each server of {run} loaded and chose, from its log (FA3: FlashAttention 3; —: none logged, e.g. no quantization)", collapsed=True,
                         summary=f"Servers of {run}: quantization, kernels, memory, start time ({len(g)} servers)"))
    return out


def show_kv(page: Page) -> None:
    from llmstudy.core.book import provenance

    for label, d in page.views:
        kv = A.kv_capacity(d)
        if len(kv):
            _show(table(kv, [Col("run_id", "Record", kind="code"), Col("arm", "Arm", kind="code"), Col("kv_cache_tokens", "KV cache (tokens)", kind="int"),
                             Col("kv_change_pct", "Change (%)", decimals=2, signed=True), Col("kv_noise_pct", "Baseline spread (%)", decimals=2),
                             Col("larger_than_noise", "Beyond the spread", kind="bool")],
                        caption=f"GPU KV cache size per arm, from the server logs{_tag(label)}", collapsed=True,
                        summary=f"KV cache size per arm and record ({len(kv)} rows)"))
        out = A.outcomes(d)
        out["error"] = out["error"].where(out["error"] != "", None)
        _show(table(out, [Col("run_id", "Record", kind="code"), Col("server", "Server", kind="code"), Col("start_s", "Start (s)", kind="int"),
                          Col("points", "Points", kind="int"), Col("ok", "Ok", kind="int"), Col("outcome", "Outcome"), Col("error", "First error")],
                    caption=f"Servers: points run and ok, the first failure{_tag(label)}", collapsed=True,
                    summary=f"Every server's outcome ({len(out)} servers)"))
        for t in server_tables(page, d):
            _show(t)
        provenance(EXPERIMENT, d.run_id)
    if not page.views:
        print("No run record yet.")


def show_chunked(page: Page) -> None:
    from llmstudy.core.book import provenance

    shown = False
    for label, d in page.views:
        cmp = A.compare(d)
        ch = cmp[cmp.workload.str.startswith("long") & cmp.arm.isin(["no-chunked-prefill", "mnbt-512", "mnbt-2048"])] if len(cmp) else cmp
        if len(ch):
            t = ch.pivot_table(index=["run_id", "arm", "workload"], columns="metric", values="delta_pct", sort=False).reset_index()
            cols = [Col("arm", "Arm", kind="code")] + [Col(m, f"Δ {A.METRICS[m][0]} (%)", decimals=1, signed=True) for m in A.METRICS if m in t.columns]
            cols += [Col("run_id", "Record", kind="code")]
            _show(table(t, cols, caption=f"Chunked prefill and token budget on the {' / '.join(dict.fromkeys(t.workload))} workload: change against the baseline{_tag(label)}",
                        collapsed=False))
            provenance(EXPERIMENT, ch.run_id)
            shown = True
    gaps = A.chunked_prefill_gaps(page.gpu)
    if gaps:
        _md("**No long-prompt delta for:**\n\n" + "\n".join(f"* {g}" for g in gaps))
    elif not shown:
        print("No chunked-prefill arm in the records shown.")


def show_speculation(page: Page) -> None:
    """The speculation tables per view: acceptance, throughput, speedup and its share of the ceiling
    (:func:`llmstudy.chapters.vllm_features.analysis.spec_transfer`), then every repeat (collapsed)."""
    from llmstudy.core.book import provenance

    spec_rows = []
    for label, d in page.views:
        sp = A.speculation(d)
        if len(sp):
            spec_rows.append((label, sp))
            sp = sp.assign(speedup_text=[("" if b else "≈ ") + f"{x:.2f}× (±{n:.0f}%)" for x, b, n in zip(sp.speedup, sp.larger_than_noise, sp.noise_pct)],
                           tok_s=[f"{b:,.0f} → {a:,.0f}" for b, a in zip(sp.baseline_tok_s, sp.spec_tok_s)],
                           share=[100 * A.spec_transfer(L, x)["efficiency"] for L, x in zip(sp.acceptance_length, sp.speedup)])
            _show(table(sp, [Col("arm", "Arm", kind="code"), Col("workload", "Workload"), Col("acceptance_rate_pct", "Accepted (%)", decimals=0),
                             Col("acceptance_length", "Tokens per step (ceiling)", decimals=2), Col("tok_s", "Tokens/s, without → with", kind="text", align="right"),
                             Col("speedup_text", "Speedup (noise)", kind="text", align="right"), Col("share", "Share of the ceiling (%)", decimals=0)],
                        caption=f"n-gram speculation against the same model without it; ≈: within the noise{_tag(label)}", collapsed=False))
            rep = A.by_repeat(d[d.sweep == "text"])
            cols = [Col("server", "Server", kind="code"), Col("workload", "Workload")]
            cols += [Col(c, f"{'Throughput (tokens/s)' if c.startswith('output') else 'Mean TTFT (ms)'}, repeat {int(c[-1]) + 1}", kind="int")
                     for c in rep.columns if c.endswith(("_r0", "_r1"))]
            _show(table(rep, cols, caption=f"Every repeat of the spec group in run order; repeat 1 follows the warm-up{_tag(label)}", collapsed=True,
                        summary=f"Every repeat of the spec group ({len(rep)} rows)"))
            provenance(EXPERIMENT, d.run_id)
    if not spec_rows:
        print("No speculative-decoding record yet: no acceptance rate or speedup to report.")


def show_transfer(page: Page) -> None:
    spec_rows = [(label, A.speculation(d)) for label, d in page.views]
    spec_rows = [(label, sp) for label, sp in spec_rows if len(sp)]
    if not spec_rows:
        print("No speculative-decoding record yet: the bounds above have no numbers to apply to.")
        return
    label, sp = spec_rows[0]
    lines = []
    for r in sp.itertuples():
        t = A.spec_transfer(r.acceptance_length, r.speedup)
        lines.append(f"* {r.arm}, {r.workload}: acceptance {r.acceptance_rate_pct:.0f}% of drafted tokens, {r.acceptance_length:.2f} tokens per step "
                     f"(the ceiling); measured speedup {r.speedup:.2f}× ({'larger than' if r.larger_than_noise else 'within'} the noise, ±{r.noise_pct:.0f}%), "
                     f"{100 * t['efficiency']:.0f}% of the ceiling")
    _md(f"Measured ({label}):\n\n" + "\n".join(lines))
