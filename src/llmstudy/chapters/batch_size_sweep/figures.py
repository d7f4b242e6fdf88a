"""Every figure and table of the chapter, each shown with its provenance line (call from the notebook)."""

from __future__ import annotations

import pandas as pd

from llmstudy.chapters import serve_sweeps as SP
from llmstudy.chapters.batch_size_sweep.params import EXPERIMENT
from llmstudy.chapters.batch_size_sweep.statements import Records, quant_rows  # noqa: F401
from llmstudy.core import models as M
from llmstudy.core.book import provenance

NO_RECORD = "No run record yet."


def _show(obj) -> None:
    from IPython.display import display

    display(obj)


def summary(r: Records) -> str:
    """One line: which records the page shows, or how to make one."""
    if len(r.res):
        return f"records: {r.runs}; {len(r.res)} points, {len(r.ok)} ok"
    return (f"No run record of {M.title(r.P['model'])} yet in data/runs/{EXPERIMENT} for these parameters: run this notebook with "
            f"mode='run' on a machine with vLLM (a GPU for real numbers), or `{SP.sweep_command('batch-size', r.P['model'])}`, to make one.")


def runs_table(r: Records) -> None:
    if not len(r.info):
        print(NO_RECORD)
        return
    _show(r.info.drop(columns=["notes", "VLLM_ALLOW_LONG_MAX_MODEL_LEN"]).style.hide(axis="index")
          .format({"sweep_wall_s": "{:,.0f}"}).set_caption(f"Run records (runs: {r.runs}). sweep_wall_s sums the active time of all calls."))
    provenance(EXPERIMENT, r.res.run_id.unique())
    for _, x in r.info.iterrows():
        print(f"{x.run_id}: {x.notes}")


def _by_cap(r: Records) -> pd.DataFrame:
    d = r.ok.copy()
    d["max_num_seqs "] = d.max_num_seqs.astype(int).astype(str)
    return d


def latency_throughput(r: Records) -> None:
    import matplotlib.pyplot as plt

    if not r.have:
        print("No run record yet: nothing to plot.")
        return
    fig = SP.panels(_by_cap(r), "concurrency", {"request_latency_avg": "request latency, avg (ms)", "output_token_throughput": "output token throughput (tokens/s)",
                                               "time_to_first_token_avg": "TTFT, avg (ms)", "inter_token_latency_avg": "ITL, avg (ms)"},
                    hue="max_num_seqs ", log2x=True, xlabel="concurrency",
                    title=f"vLLM, {M.title(r.P['model'])} {r.P['dtype']}, {r.P['input_len']} in / {r.P['output_len']} out, per max_num_seqs (runs: {r.runs})")
    for ax in (fig.axes[0], fig.axes[2]):
        ax.set_yscale("log")
    plt.show()
    provenance(EXPERIMENT, r.res.run_id.unique())


def saturation_table(r: Records) -> None:
    if not r.have:
        print(NO_RECORD)
        return
    _show(r.sat.style.hide(axis="index").format({"plateau_tok_s": "{:,.0f}", "plateau_itl_ms": "{:.2f}", "kv_batch_limit": "{:.1f}", "batch": "{:.1f}",
                                                "batch_over_itl_tok_s": "{:,.0f}", "plateau_vs_batch_over_itl": "{:.2f}", "peak_tok_s": "{:,.0f}", "last_tok_s": "{:,.0f}"})
          .set_caption(f"Throughput plateau per max_num_seqs against batch / ITL (runs: {r.runs})"))
    provenance(EXPERIMENT, r.res.run_id.unique())


def roofline_table(r: Records) -> None:
    if not (r.have and len(r.roof)):
        print(NO_RECORD)
        return
    roof = r.roof
    pick = roof[(roof.concurrency == 1) | (roof.concurrency == roof.max_num_seqs) | (roof.concurrency == roof.concurrency.max())]
    _show(pick.style.hide(axis="index").format({"batch": "{:.1f}", "itl_floor_ms": "{:.2f}", "itl_ms": "{:.2f}", "floor_over_itl": "{:.2f}",
                                               "decode_tok_s_bound": "{:,.0f}", "decode_tok_s": "{:,.0f}"})
          .set_caption(f"Decode ITL against the HBM roofline (datasheet bandwidth), at c=1, c=max_num_seqs and the largest c (runs: {r.runs})"))
    provenance(EXPERIMENT, r.res.run_id.unique(), computed="the decode roofline of the model config at the datasheet bandwidth")


def genai_perf_table(r: Records) -> None:
    if not r.have:
        print(NO_RECORD)
        return
    met = r.table("metrics")
    top = max(r.P["max_num_seqs"])
    ids = [SP.val(r.ok, "point_id", max_num_seqs=s, concurrency=c) for s, c in ((top, 1), (16, 16), (top, max(r.P["concurrency"])))]
    table = SP.metric_table(met, [i for i in ids if i])
    _show(table.style.hide(axis="index").format({s: "{:,.2f}" for s in ("avg", "p50", "p90", "p99")})
          .set_caption(f"genai-perf metrics (avg, p50, p90, p99 over requests) for three points (runs: {r.runs})"))
    provenance(EXPERIMENT, r.res.run_id.unique())


def tps(r: Records) -> None:
    import matplotlib.pyplot as plt

    if not r.have:
        return
    fig = SP.panels(_by_cap(r), "concurrency", {"tps_streaming_avg": "TPS streaming, avg (tokens/s)", "tps_non_streaming_avg": "TPS non-streaming, avg (tokens/s)"},
                    hue="max_num_seqs ", log2x=True, xlabel="concurrency", title=f"Per-request TPS, the article's two definitions (runs: {r.runs})")
    for ax in fig.axes:
        ax.set_ylim(0, None)
    plt.show()
    cols = ["max_num_seqs", "concurrency", "tps_streaming_avg", "tps_non_streaming_avg", "output_token_throughput_per_user_avg", "output_token_throughput"]
    _show(r.ok[r.ok.max_num_seqs == 16][cols].style.hide(axis="index").format("{:,.1f}", subset=cols[2:])
          .set_caption(f"max_num_seqs 16: per-request TPS (avg) and the aggregate output throughput (runs: {r.runs})"))
    provenance(EXPERIMENT, r.res.run_id.unique())


def server_facts(r: Records) -> None:
    if not len(r.logs):
        print(NO_RECORD)
        return
    srv = r.table("servers")[["run_id", "server", "start_s"]]
    facts = r.logs.merge(srv, on=["run_id", "server"], how="left")
    cols = ["run_id", "max_num_seqs", "start_s", "weights_gib", "available_kv_gib", "kv_cache_tokens", "max_concurrency", "graph_capture_s", "engine_init_s",
            "max_running", "max_waiting", "max_kv_usage_pct", "max_prefix_hit_pct"]
    _show(facts.sort_values(["run_id", "max_num_seqs"]).reindex(columns=cols).style.hide(axis="index")
          .format({"start_s": "{:.0f}", "kv_cache_tokens": "{:,.0f}", "max_kv_usage_pct": "{:.1f}", "max_prefix_hit_pct": "{:.1f}", "weights_gib": "{:.2f}",
                   "available_kv_gib": "{:.2f}", "max_concurrency": "{:.2f}", "graph_capture_s": "{:.0f}", "engine_init_s": "{:.1f}"})
          .set_caption(f"Server facts from the vLLM logs; start_s = launch to /health (runs: {r.runs})"))
    provenance(EXPERIMENT, r.res.run_id.unique())


def against_references(r: Records) -> None:
    """This study's records against the hand probes and the article: both references are Llama-2-7B (ELYZA's
    fine-tune in the article), named as such whatever model the page is rendered for."""
    top = max(r.P["max_num_seqs"])

    def ours(col, s, c):
        return SP.val(r.ok, col, max_num_seqs=s, concurrency=c)

    P, A = SP.PROBE_H100, SP.ARTICLE
    rows = [  # (quantity, this study, probe, published Triton, published vLLM); counts and tokens/s print without decimals
        ("ITL at c=1 (ms)", ours("inter_token_latency_avg", top, 1), P["c1_itl_ms"], A["triton_c1"]["itl_ms"], None),
        ("output tokens/s at c=1", ours("output_token_throughput", top, 1), P["c1_tok_s"], A["triton_c1"]["tok_s"], None),
        ("TTFT at c=1 (ms)", ours("time_to_first_token_avg", top, 1), None, A["triton_c1"]["ttft_ms"], None),
        ("ITL at c=16 (ms)", ours("inter_token_latency_avg", top, 16), P["c16_itl_ms"], None, None),
        ("TTFT at c=16 (ms)", ours("time_to_first_token_avg", top, 16), P["c16_ttft_ms"], None, None),
        (f"output tokens/s at c=16 (ours: max_num_seqs {top})", ours("output_token_throughput", top, 16), P["c16_tok_s"], None, None),
        ("output tokens/s at c=16, max_num_seqs 16", ours("output_token_throughput", 16, 16), None, A["c16"]["triton_tok_s"], A["c16"]["vllm_gptq_tok_s"]),
        ("GPU KV cache size (tokens)", SP.first(r.ok, "kv_cache_tokens"), P["kv_cache_tokens"], None, None),
        ("available KV cache memory (GiB)", SP.first(r.ok, "available_kv_gib"), P["available_kv_gib"], None, None),
    ]
    cmp_ = pd.DataFrame(rows, columns=["quantity", f"this study: {M.title(r.P['model'])} (record, max_num_seqs {top} unless named)", "probe: Llama-2-7B (H100, vLLM 0.25 defaults)",
                                       "published: article, ELYZA-Llama-2-7B, Triton+TRT-LLM int4", "published: article, ELYZA-Llama-2-7B, vLLM 0.11 GPTQ"])
    for col in cmp_.columns[1:]:
        cmp_[col] = [SP.fmt(v, "{:,.2f}" if "(ms)" in q or "GiB" in q else "{:,.0f}").replace(SP.NA, "—") for q, v in zip(cmp_.quantity, cmp_[col])]
    _show(cmp_.style.hide(axis="index")
          .set_caption(f"This study (runs: {r.runs}) against the probes (not records) and the article's published numbers (Fixstars 2026, §6)"))
    provenance(EXPERIMENT, r.res.run_id.unique() if len(r.res) else [], computed="probes measured by hand on the lent H100 (llmstudy.chapters.serve_sweeps.PROBE_H100, not records)", published="Fixstars 2026, §6")


def quantization_table(r: Records) -> None:
    q = r.quant
    if not len(q):
        print(f"No max_num_seqs-16 comparison records for {M.title(r.P['model'])} yet.")
        return
    _show(q.style.hide(axis="index").format(precision=2, thousands=",").set_caption(f"max_num_seqs 16, 512 in / 256 out (runs: {', '.join(q.run_id)})"))
    for x, g in q.groupby("experiment"):
        provenance(x, g.run_id, computed="each record's server log (method, kernel, weights, KV, prefix caching)")
