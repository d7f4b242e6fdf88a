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
        msg.insert(0, f"**Measured on a GPU** (runs: {runs(gpu)}; models: {names}): {S['vf_measured']}. **Skipped:** {S['vf_skipped']}. **Not measured yet:** {S['vf_pending']} "
                   "(`scripts/device_vllm_features.sh` runs a group per record). The deltas larger than the noise, per arm:\n\n"
                   + "\n".join(f"* {line}" for line in A.findings(A.compare(gpu))))
    return "\n\n".join(msg)


# --- the tables and figures, one function per notebook cell ----------------------------------------------------------
def _show(obj) -> None:
    from IPython.display import display

    display(obj)


def _md(text: str) -> None:
    from IPython.display import Markdown

    _show(Markdown(text))


def show_arms() -> None:
    from llmstudy.core.book import provenance

    arm_table = pd.DataFrame([{"group": a.group, "arm": a.name, "feature": a.feature, "change against the baseline": a.change,
                               "workloads": ", ".join(a.workloads)} for a in ARMS.values()])
    _show(arm_table.style.hide(axis="index").set_caption("Arms (groups core, quant, kernels, spec; 'extra' arms run only when named)"))
    provenance(computed="the arms defined in llmstudy.chapters.vllm_features (the plan, not a measurement)")


def show_records(page: Page) -> None:
    from llmstudy.chapters import serve_sweeps as SP
    from llmstudy.core.book import provenance

    for label, d in page.views:
        runs = sorted(d.run_id.unique())
        info = SP.runs_info(EXPERIMENT, runs)
        extra = pd.DataFrame([{"run_id": r.run_id, "arms": ", ".join(r.manifest["parameters"].get("arms", [])),
                               "skipped": "; ".join(f"{k}: {v}" for k, v in r.manifest["parameters"].get("skipped_arms", {}).items()) or "none"}
                              for r in R.load_runs(EXPERIMENT) if r.run_id in runs])
        _show(info.merge(extra, on="run_id")[["run_id", "gpu", "git", "vllm", "sweep_wall_s", "calls", "points", "arms", "skipped"]]
              .style.hide(axis="index").format({"sweep_wall_s": "{:,.0f}"}).set_caption(f"Records ({label})"))
        nz = A.noise(d)
        if len(nz):
            _show(nz.style.hide(axis="index").format({"mean": "{:,.2f}", "repeat_spread_pct": "{:.1f}", "restart_pct": "{:+.1f}"})
                  .set_caption(f"Baseline noise per workload and metric, % ({label})"))
        provenance(EXPERIMENT, runs)
    if not page.views:
        print("No run record yet.")


def show_headline(page: Page) -> None:
    from llmstudy.core.book import provenance

    for label, d in page.views:
        head = A.headline(d, skipped_=page.skipped[page.skipped.run_id.isin(d.run_id)])
        _show(head.style.hide(axis="index").set_caption(f"Feature → Δ throughput / Δ TTFT / Δ ITL / KV capacity vs baseline ({label})"))
        _md("**Larger than the noise** (" + label + "):\n\n" + "\n".join(f"* {line}" for line in A.findings(A.compare(d))))
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
        v = v[["run_id", "arm", "workload", "metric", "baseline_1", "baseline_2", "value", "delta_pct", "noise_pct", "larger_than_noise"]]
        _show(v.rename(columns={"baseline_1": "baseline.1", "baseline_2": "baseline.2", "value": "arm mean", "delta_pct": "Δ %", "noise_pct": "noise ±%", "larger_than_noise": "> noise"})
              .style.hide(axis="index").format({"baseline.1": "{:,.2f}", "baseline.2": "{:,.2f}", "arm mean": "{:,.2f}", "Δ %": "{:+.1f}", "noise ±%": "{:.1f}"})
              .set_caption(f"Means per server (two repeats each) behind every delta ({label})"))
        provenance(EXPERIMENT, d.run_id)
    if not page.views:
        print("No run record yet.")


def show_figure(page: Page) -> None:
    import matplotlib.pyplot as plt

    from llmstudy.core.book import provenance

    for label, d in page.views:
        cmp = A.compare(d)
        if len(cmp):
            figures.figure(cmp, f"Arm / baseline per arm and workload; grey: noise band; blue: larger than the noise ({label})")
            plt.show()
            provenance(EXPERIMENT, d.run_id)
    if not page.views:
        print("No run record yet: no figure.")


def show_kv(page: Page) -> None:
    from llmstudy.core.book import provenance

    for label, d in page.views:
        kv = A.kv_capacity(d)
        if len(kv):
            _show(kv.style.hide(axis="index").format({"kv_cache_tokens": "{:,.0f}", "kv_change_pct": "{:+.1f}"})
                  .set_caption(f"GPU KV cache size per arm, from the server logs ({label})"))
        _show(A.outcomes(d).style.hide(axis="index").set_caption(f"Servers: points run and ok, first failure ({label})"))
        sv = page.servers[page.servers.run_id.isin(d.run_id)]
        if len(sv):
            _show(sv.style.hide(axis="index").format({"weights_gib": "{:.2f}", "available_kv_gib": "{:.2f}", "kv_cache_tokens": "{:,.0f}", "start_s": "{:.0f}"}, na_rep="")
                  .set_caption(f"What each server loaded and chose, from its log: quantization, GEMM kernel, attention backend (FlashAttention version), async scheduling, weights and KV memory in GiB ({label})"))
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
            _show(t.style.hide(axis="index").format("{:+.1f}", subset=[c for c in t.columns if c in A.METRICS])
                  .set_caption(f"Chunked prefill and token budget, Δ% vs baseline on long prompts ({label})"))
            provenance(EXPERIMENT, ch.run_id)
            shown = True
    gaps = A.chunked_prefill_gaps(page.gpu)
    if gaps:
        _md("**No long-prompt delta for:**\n\n" + "\n".join(f"* {g}" for g in gaps))
    elif not shown:
        print("No chunked-prefill arm in the records shown.")


def show_speculation(page: Page) -> list:
    """The speculation tables per view; returns the (label, table) pairs shown, for :func:`show_transfer`."""
    from llmstudy.core.book import provenance

    spec_rows = []
    for label, d in page.views:
        sp = A.speculation(d)
        if len(sp):
            spec_rows.append((label, sp))
            _show(sp.style.hide(axis="index").format({"acceptance_rate_pct": "{:.1f}", "acceptance_length": "{:.2f}", "baseline_tok_s": "{:,.0f}", "spec_tok_s": "{:,.0f}",
                                                      "speedup": "{:.2f}", "baseline_itl_ms": "{:.2f}", "spec_itl_ms": "{:.2f}", "noise_pct": "{:.1f}", "mean_output_len": "{:.0f}"})
                  .set_caption(f"n-gram speculation against the same model without it ({label})"))
            rep = A.by_repeat(d[d.sweep == "text"])
            _show(rep.drop(columns=["run_id"]).style.hide(axis="index").format("{:,.0f}", subset=[c for c in rep.columns if c.endswith(("_r0", "_r1"))])
                  .set_caption(f"Every repeat of the spec group, in run order (r0 follows the warm-up): throughput tokens/s, mean TTFT ms ({label})"))
            provenance(EXPERIMENT, d.run_id)
    if not spec_rows:
        print("No speculative-decoding record yet: no acceptance rate or speedup to report.")
    return spec_rows


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
        lines.append(f"* {r.workload}: acceptance {r.acceptance_rate_pct:.0f}% of drafted tokens, {r.acceptance_length:.2f} tokens per step "
                     f"(the ceiling); measured speedup {r.speedup:.2f}× ({'larger than' if r.larger_than_noise else 'within'} the noise, ±{r.noise_pct:.0f}%), "
                     f"{100 * t['efficiency']:.0f}% of the ceiling")
    _md(f"Measured ({label}):\n\n" + "\n".join(lines))
