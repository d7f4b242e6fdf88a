"""Every figure and table of the chapter, each shown with its provenance line (call from the notebook).

Figures use :mod:`llmstudy.publishing.figstyle` (the notebook calls ``setup()``), tables
:func:`llmstudy.publishing.tables.table` (at most eight columns, units in the headers, "—" for a missing value)."""

from __future__ import annotations

import pandas as pd

from llmstudy.chapters import serve_sweeps as SP
from llmstudy.chapters.batch_size_sweep.params import EXPERIMENT
from llmstudy.chapters.batch_size_sweep.statements import Records, quant_rows  # noqa: F401
from llmstudy.core import models as M
from llmstudy.core.book import provenance
from llmstudy.publishing.tables import Col, table

NO_RECORD = "No run record yet."
ARTICLE = "Fixstars 2026, §6 (data/trtllm/published.csv)"


def _show(obj) -> None:
    from IPython.display import display

    display(obj)


def summary(r: Records) -> str:
    """Empty when the page has records (their ids are under every figure); otherwise how to make one."""
    if len(r.res):
        return ""
    return (f"No run record of {M.title(r.P['model'])} yet in data/runs/{EXPERIMENT} for these parameters: run this notebook with "
            f"mode='run' on a machine with vLLM (a GPU for real numbers), or `{SP.sweep_command('batch-size', r.P['model'])}`, to make one.")


def _by_cap(r: Records) -> pd.DataFrame:
    d = r.ok.copy()
    d["max_num_seqs "] = d.max_num_seqs.astype(int).astype(str)
    return d


def _batch(d: pd.DataFrame) -> pd.DataFrame:
    """``batch`` as text: whole sequences as integers, a KV-cache-bound batch with one decimal (189.7)."""
    return d.assign(batch=[f"{b:,.0f}" if float(b).is_integer() else f"{b:,.1f}" for b in d["batch"]])


def _runs(r: Records):
    return r.res.run_id.unique() if len(r.res) else []


# --- the key figure ------------------------------------------------------------------------------------------------
def key_figure(r: Records) -> None:
    """Output throughput against concurrency, one labelled line per max_num_seqs, the KV-cache limit on the batch and
    the article's two published numbers at concurrency 16 (open markers)."""
    import matplotlib.pyplot as plt

    if not r.have:
        print(f"No run record of {M.title(r.P['model'])} yet: nothing to plot.")
        return
    d = _by_cap(r)
    levels = SP.hue_levels(d, "max_num_seqs ")
    styles = SP.level_styles(levels)
    fig, ax = plt.subplots(figsize=(10, 4.8))
    ends = {}
    for lv in levels:
        g = d[d["max_num_seqs "] == lv].sort_values("concurrency")
        colour, marker = styles[lv]
        ax.plot(g.concurrency, g.output_token_throughput, marker=marker, ms=5, lw=1.8, color=colour)
        ends[f"max_num_seqs {lv}"] = (list(g.concurrency), list(g.output_token_throughput), colour)
    SP.label_line_ends(ax, ends)
    A = SP.ARTICLE["c16"]
    for value, label in ((A["triton_tok_s"], "article: Triton + TensorRT-LLM, int4, max_batch_size 16"),
                         (A["vllm_gptq_tok_s"], "article: vLLM 0.11, GPTQ 4-bit, max_num_seqs 16")):
        ax.scatter([16], [value], marker="D", s=60, facecolors="none", edgecolors="#555555", lw=1.5, zorder=5)
        ax.annotate(label, (16, value), xytext=(8, 0), textcoords="offset points", ha="left", va="center", fontsize=8.5, color="#333333")
    SP.log2_axis(ax, d.concurrency)
    ax.set_xlim(right=d.concurrency.max() * 3.2)  # room for the line labels
    ax.set_ylim(0, None)
    ax.set(xlabel="concurrent requests (client)", ylabel="output tokens/s (all requests)",
           title=f"vLLM, {r.P['model']} {r.P['dtype']}, {r.P['input_len']} in / {r.P['output_len']} out: throughput per batch cap")
    plt.show()
    provenance(EXPERIMENT, _runs(r), published=f"{ARTICLE}; the article's points are ELYZA-Llama-2-7B in 4 bits on an H100 PCIe")


def latency_throughput(r: Records) -> None:
    import matplotlib.pyplot as plt

    if not r.have:
        print("No run record yet: nothing to plot.")
        return
    fig = SP.panels(_by_cap(r), "concurrency", {"request_latency_avg": "request latency, avg (ms)", "output_token_throughput": "output tokens/s",
                                               "time_to_first_token_avg": "TTFT, avg (ms)", "inter_token_latency_avg": "ITL, avg (ms)"},
                    hue="max_num_seqs ", log2x=True, xlabel="concurrency", hue_label="max_num_seqs",
                    title=f"vLLM, {r.P['model']} {r.P['dtype']}, {r.P['input_len']} in / {r.P['output_len']} out")
    for ax in (fig.axes[0], fig.axes[2]):
        ax.set_yscale("log")
    plt.show()
    provenance(EXPERIMENT, _runs(r))


def saturation_table(r: Records) -> None:
    if not r.have:
        print(NO_RECORD)
        return
    _show(table(_batch(r.sat), [Col("max_num_seqs", "max_num_seqs", kind="int"), Col("plateau_tok_s", "Plateau (tok/s)", kind="int"),
                        Col("plateau_itl_ms", "ITL on the plateau (ms)", decimals=2), Col("batch", "Batch (sequences)", kind="text", align="right"),
                        Col("batch_over_itl_tok_s", "Batch ÷ ITL (tok/s)", kind="int"), Col("plateau_vs_batch_over_itl", "Plateau ÷ (batch ÷ ITL)", decimals=2),
                        Col("peak_tok_s", "Peak (tok/s)", kind="int"), Col("peak_concurrency", "Peak at concurrency", kind="int")],
                caption="Throughput plateau per max_num_seqs against batch ÷ ITL; batch = min(max_num_seqs, the sequences the KV cache holds)"))
    provenance(EXPERIMENT, _runs(r))


def roofline_table(r: Records) -> None:
    if not (r.have and len(r.roof)):
        print(NO_RECORD)
        return
    roof = r.roof
    pick = roof[(roof.concurrency == 1) | (roof.concurrency == roof.max_num_seqs) | (roof.concurrency == roof.concurrency.max())]
    _show(table(_batch(pick), [Col("max_num_seqs", "max_num_seqs", kind="int"), Col("concurrency", "Concurrency", kind="int"), Col("batch", "Batch (sequences)", kind="text", align="right"),
                       Col("itl_floor_ms", "ITL floor (ms)", decimals=2), Col("itl_ms", "ITL measured (ms)", decimals=2), Col("floor_over_itl", "Floor ÷ ITL", decimals=2),
                       Col("decode_tok_s_bound", "Roofline bound (tok/s)", kind="int"), Col("decode_tok_s", "Batch ÷ ITL (tok/s)", kind="int")],
                caption="Decode ITL against the HBM roofline at the datasheet bandwidth: concurrency 1, concurrency = max_num_seqs and the largest concurrency"))
    provenance(EXPERIMENT, _runs(r), computed="the decode roofline of the model config at the datasheet bandwidth")


def genai_perf_table(r: Records) -> None:
    if not r.have:
        print(NO_RECORD)
        return
    met = r.table("metrics")
    top = max(r.P["max_num_seqs"])
    picks = [(top, 1), (16, 16), (top, max(r.P["concurrency"]))]
    ids = {SP.val(r.ok, "point_id", max_num_seqs=s, concurrency=c): f"max_num_seqs {s}, c={c}" for s, c in picks}
    t = SP.metric_table(met, [i for i in ids if i])
    t["point"] = t.point_id.map(ids)
    t["metric (unit)"] = t.metric.str.replace("_", " ") + " (" + t.unit + ")"
    _show(table(t, [Col("point", "Point"), Col("metric (unit)", "Metric (unit)")] + [Col(s, s, decimals=2) for s in ("avg", "p50", "p90", "p99")],
                caption="genai-perf's per-request metrics, avg and percentiles over the requests of three points", collapsed=True,
                summary=f"genai-perf metrics of three points ({len(t)} rows)"))
    provenance(EXPERIMENT, _runs(r))


def tps(r: Records) -> None:
    import matplotlib.pyplot as plt

    if not r.have:
        return
    fig = SP.panels(_by_cap(r), "concurrency", {"tps_streaming_avg": "TPS streaming, avg (tokens/s)", "tps_non_streaming_avg": "TPS non-streaming, avg (tokens/s)"},
                    hue="max_num_seqs ", log2x=True, xlabel="concurrency", hue_label="max_num_seqs", title="Per-request TPS, the article's two definitions")
    for ax in fig.axes:
        ax.set_ylim(0, None)
    plt.show()
    _show(table(r.ok[r.ok.max_num_seqs == 16], [Col("concurrency", "Concurrency", kind="int"), Col("tps_streaming_avg", "TPS streaming (tok/s)", decimals=1),
                                                Col("tps_non_streaming_avg", "TPS non-streaming (tok/s)", decimals=1),
                                                Col("output_token_throughput_per_user_avg", "1 ÷ ITL per user (tok/s)", decimals=1),
                                                Col("output_token_throughput", "Output, all requests (tok/s)", kind="int")],
                caption="max_num_seqs 16: per-request TPS (avg over requests) and the aggregate output throughput"))
    provenance(EXPERIMENT, _runs(r))


def server_facts(r: Records) -> None:
    if not len(r.logs):
        print(NO_RECORD)
        return
    srv = r.table("servers")[["run_id", "server", "start_s"]]
    facts = r.logs.merge(srv, on=["run_id", "server"], how="left").sort_values(["run_id", "max_num_seqs"])
    for col in ("weights_gib", "available_kv_gib"):  # a CPU server logs no weights/KV memory: shown as "—"
        if col not in facts:
            facts[col] = float("nan")
    _show(table(facts, [Col("max_num_seqs", "max_num_seqs", kind="int"), Col("start_s", "Start to healthy (s)", kind="int"),
                        Col("weights_gib", "Weights (GiB)", decimals=2), Col("available_kv_gib", "KV cache (GiB)", decimals=2),
                        Col("kv_cache_tokens", "KV cache (tokens)", kind="int"), Col("max_running", "Most running", kind="int"),
                        Col("max_waiting", "Most waiting", kind="int"), Col("max_kv_usage_pct", "Most KV cache used (%)", decimals=1)],
                caption="What each vLLM server logged: start-up facts and the busiest moment of its periodic statistics (sampled every 10 s)"))
    provenance(EXPERIMENT, _runs(r))


def runs_table(r: Records) -> None:
    if not len(r.info):
        print(NO_RECORD)
        return
    info = r.info.assign(minutes=r.info.sweep_wall_s / 60, started=pd.to_datetime(r.info.sweep_started_utc, utc=True).dt.strftime("%Y-%m-%d %H:%M"))
    _show(table(info, [Col("run_id", "Run", kind="code"), Col("gpu", "GPU"), Col("vllm", "vLLM"), Col("points", "Points", kind="int"),
                       Col("minutes", "GPU time (min)", kind="int"), Col("started", "Started (UTC)")],
                caption="The run records this page shows"))
    provenance(EXPERIMENT, _runs(r))


def against_references(r: Records) -> None:
    """This study's records against the hand probes and the article: both references are Llama-2-7B (ELYZA's
    fine-tune in the article), named as such whatever model the page is rendered for."""
    top = max(r.P["max_num_seqs"])

    def ours(col, s, c):
        return SP.val(r.ok, col, max_num_seqs=s, concurrency=c)

    P, A = SP.PROBE_H100, SP.ARTICLE
    rows = [  # (quantity, this study, probe, published Triton, published vLLM, decimals)
        ("ITL at c=1 (ms)", ours("inter_token_latency_avg", top, 1), P["c1_itl_ms"], A["triton_c1"]["itl_ms"], None, 2),
        ("Output at c=1 (tok/s)", ours("output_token_throughput", top, 1), P["c1_tok_s"], A["triton_c1"]["tok_s"], None, 0),
        ("TTFT at c=1 (ms)", ours("time_to_first_token_avg", top, 1), None, A["triton_c1"]["ttft_ms"], None, 2),
        ("ITL at c=16 (ms)", ours("inter_token_latency_avg", top, 16), P["c16_itl_ms"], None, None, 2),
        ("TTFT at c=16 (ms)", ours("time_to_first_token_avg", top, 16), P["c16_ttft_ms"], None, None, 2),
        (f"Output at c=16 (tok/s), max_num_seqs {top}", ours("output_token_throughput", top, 16), P["c16_tok_s"], None, None, 0),
        ("Output at c=16 (tok/s), max_num_seqs 16", ours("output_token_throughput", 16, 16), None, A["c16"]["triton_tok_s"], A["c16"]["vllm_gptq_tok_s"], 0),
        ("GPU KV cache (tokens)", SP.first(r.ok, "kv_cache_tokens"), P["kv_cache_tokens"], None, None, 0),
        ("KV cache memory (GiB)", SP.first(r.ok, "available_kv_gib"), P["available_kv_gib"], None, None, 2),
    ]
    text = [{"quantity": q, **{k: SP.fmt(v, f"{{:,.{d}f}}") for k, v in zip(("ours", "probe", "triton", "vllm"), vals)}} for q, *vals, d in rows]
    _show(table(text, [Col("quantity", "Quantity"), Col("ours", f"This study: {r.P['model']}", kind="text", align="right"),
                       Col("probe", "Probe: Llama-2-7B, H100 (vLLM 0.25 defaults)", kind="text", align="right"),
                       Col("triton", "Article: Triton + TRT-LLM int4", kind="text", align="right"),
                       Col("vllm", "Article: vLLM 0.11 GPTQ", kind="text", align="right")],
                caption=f"This study (max_num_seqs {top} unless named) against the probes (not records) and the article's published numbers "
                        "(ELYZA-Llama-2-7B, H100 PCIe)"))
    provenance(EXPERIMENT, _runs(r), computed="probes measured by hand on the lent H100 (llmstudy.chapters.serve_sweeps.PROBE_H100, not records)", published="Fixstars 2026, §6")


def quantization_table(r: Records) -> None:
    q = r.quant
    if not len(q):
        print(f"No max_num_seqs-16 comparison records for {M.title(r.P['model'])} yet.")
        return
    base = r.P["model"]
    q = q.assign(layout=[(m[len(base) + 1:].upper() + " 4-bit" if m.startswith(base + "-") else "bf16") + (", prefix caching" if str(p) == "True" else "")
                         for m, p in zip(q.model, q["prefix caching"])])
    _show(table(q, [Col("run_id", "Run", kind="code"), Col("layout", "Weights in the config"), Col("GEMM kernel", "GEMM kernel"),
                    Col("weights GiB", "Weights (GiB)", decimals=2), Col("KV tokens", "KV cache (tokens)", kind="int"),
                    Col("c1 ITL ms", "ITL at c=1 (ms)", decimals=2), Col("c16 output tok/s", "Output at c=16 (tok/s)", kind="int")],
                caption=f"max_num_seqs 16, 512 in / 256 out, one server per record ({base} and its -gptq / -awq configs; prefix caching off unless named); "
                        "kernel, weights, KV cache and prefix caching read from its log"))
    for x, g in q.groupby("experiment"):
        provenance(x, g.run_id, computed="each record's server log (method, kernel, weights, KV, prefix caching)")
