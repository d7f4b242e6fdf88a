"""Every figure and table of the chapter, each shown with its provenance line (call from the notebook).

Figures use :mod:`llmstudy.publishing.figstyle` (the notebook calls ``setup()``), tables
:func:`llmstudy.publishing.tables.table` (at most eight columns, units in the headers, "—" for a missing value)."""

from __future__ import annotations

import pandas as pd
from matplotlib.ticker import FuncFormatter

from llmstudy.chapters import serve_sweeps as SP
from llmstudy.chapters.length_sweep.params import EXPERIMENT
from llmstudy.chapters.length_sweep.statements import Records, c16_against_c1, ids  # noqa: F401
from llmstudy.core import models as M
from llmstudy.core.book import provenance
from llmstudy.publishing.tables import Col, table

ARTICLE_C1 = SP.ARTICLE["triton_c1"]  # the article's Triton + TensorRT-LLM point at concurrency 1, 512 in (published)


def _show(obj) -> None:
    from IPython.display import display

    display(obj)


def summary(r: Records) -> str:
    """Empty when the page has records (their ids are under every figure); otherwise how to make one."""
    if len(r.res):
        return ""
    return (f"No run record of {M.title(r.P['model'])} yet in data/runs/{EXPERIMENT}: run this notebook with mode='run' on a machine with vLLM "
            f"(a GPU for real numbers), or `{SP.sweep_command('length', r.P['model'])}`, to make one.")


# --- the key figure ------------------------------------------------------------------------------------------------
def key_figure(r: Records) -> None:
    """Left: output throughput against max_model_len (one labelled line per concurrency; the settings past the
    model's positions shaded). Right: concurrency-1 request latency against the output length, one line per input
    length, with the article's published Triton point (512 in / 256 out)."""
    import matplotlib.pyplot as plt

    if not (r.have_mml or r.have_io):
        print(f"No run record of {M.title(r.P['model'])} yet: nothing to plot.")
        return
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.4))
    if r.have_mml:
        okm = r.ok_mml()
        levels = SP.hue_levels(okm, "concurrency")
        ends = {}
        for lv, (colour, marker) in SP.level_styles(levels).items():
            g = okm[okm.concurrency == lv].groupby("max_model_len", as_index=False).output_token_throughput.mean()
            left.plot(g.max_model_len, g.output_token_throughput, marker=marker, color=colour, lw=1.8)
            ends[f"c={lv}"] = (list(g.max_model_len), list(g.output_token_throughput), colour)
        SP.label_line_ends(left, ends)
        positions = getattr(M.text_config(M.load_config(r.P["model"])), "max_position_embeddings", None)
        if positions and okm.max_model_len.max() > positions:
            left.axvspan(positions * 1.25, okm.max_model_len.max() * 1.6, color="#999999", alpha=0.15, lw=0)
            left.annotate(f"past the model's {positions:,}\npositions: starts only\nwith the override", xy=(positions * 1.35, 0.45),
                          xycoords=("data", "axes fraction"), va="center", fontsize=8.5, color="#444444")
        SP.log2_axis(left, okm.max_model_len)
        left.set_yscale("log")
        left.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
        left.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if str(round(v))[0] in "25" else ""))
        left.set_xlim(right=okm.max_model_len.max() * 2.5)
        left.set(xlabel="max_model_len (tokens)", ylabel="output tokens/s (all requests)", title=f"max_model_len: {r.P['input_len']} in / {r.P['output_len']} out")
    else:
        left.set_visible(False)
    if r.have_io:
        okio = r.ok_io(1)
        levels = SP.hue_levels(okio, "input_len")
        for lv, (colour, marker) in SP.level_styles(levels).items():  # the lines nearly coincide: a legend, in the empty corner
            g = okio[okio.input_len == lv].sort_values("output_len")
            right.plot(g.output_len, g.request_latency_avg / 1e3, marker=marker, color=colour, lw=1.8, label=f"{lv:,}")
        right.scatter([ARTICLE_C1["osl"]], [ARTICLE_C1["latency_ms"] / 1e3], marker="D", s=60, facecolors="none", edgecolors="#555555", lw=1.5, zorder=5,
                      label="article: Triton + TRT-LLM int4, 512 in,\nH100 PCIe (published)")
        right.legend(title="input tokens", loc="upper left", fontsize=8.5)
        ticks = sorted(set(okio.output_len))
        right.set_xticks(ticks, [f"{t:,}" for t in ticks])
        right.set_xlim(0, None)
        right.set_ylim(0, None)
        right.set(xlabel="output tokens", ylabel="request latency (s)", title="concurrency 1: latency by request length")
    else:
        right.set_visible(False)
    plt.show()
    shown = sorted(set(ids(r.mml[r.mml.outcome == "ok"]) if r.have_mml else []) | set(ids(r.ok_io(1))))
    provenance(EXPERIMENT, shown, published="Fixstars 2026, §6 (data/trtllm/published.csv): Triton + TensorRT-LLM, ELYZA-Llama-2-7B int4 AWQ, c=1, 512 in")


def max_model_len_panels(r: Records) -> None:
    import matplotlib.pyplot as plt

    if not r.have_mml:
        print("No max_model_len points in the records.")
        return
    bad = r.mml[r.mml.outcome != "ok"].drop_duplicates(["run_id", "max_model_len"])
    SP.panels(r.ok_mml(), "max_model_len", {"output_token_throughput": "output tokens/s", "inter_token_latency_avg": "ITL, avg (ms)",
                                            "time_to_first_token_avg": "TTFT, avg (ms)", "request_latency_avg": "request latency, avg (ms)"},
              hue="concurrency ", log2x=True, failed=bad, xlabel="max_model_len (tokens)", hue_label="concurrency",
              title=f"{r.P['model']}: speed against max_model_len, {r.P['input_len']} in / {r.P['output_len']} out")
    plt.show()
    provenance(EXPERIMENT, ids(r.mml))


def kv_per_server(r: Records) -> None:
    srv = r.mml_servers()
    if not len(srv):
        print("No server logs for the max_model_len sweep.")
        return
    _show(table(srv.sort_values(["max_model_len", "run_id"]),
                [Col("run_id", "Run", kind="code"), Col("max_model_len", "max_model_len", kind="int"), Col("outcome", "Server"),
                 Col("available_kv_gib", "KV cache (GiB)", decimals=2), Col("kv_cache_tokens", "KV cache (tokens)", kind="int"),
                 Col("max_concurrency", "Logged max concurrency", decimals=2), Col("tokens / max_model_len", "Tokens ÷ max_model_len", decimals=2)],
                caption="KV cache per max_model_len server, from the vLLM logs (a refused server logged no cache)"))
    provenance(EXPERIMENT, ids(r.mml))


def io_panels(r: Records) -> None:
    import matplotlib.pyplot as plt

    if not r.have_io:
        print("No input/output points in the records.")
        return
    okio, io = r.ok_io(1), r.io
    served = io[io.run_id.isin(okio.run_id.unique()) & (io.concurrency == 1)]  # records whose server served: their failures are measured outcomes
    bad = served[served.outcome != "ok"].assign(**{"in + out": lambda d: d.input_len + d.output_len})
    fig = SP.panels(okio, "in + out", {"tps_non_streaming_avg": "TPS non-streaming (tokens/s)", "tps_streaming_avg": "TPS streaming (tokens/s)",
                                       "request_latency_avg": "request latency, avg (ms)", "inter_token_latency_avg": "ITL, avg (ms)"},
                    hue="input_len ", log2x=True, failed=bad, xlabel="input + output tokens", hue_label="input tokens",
                    title="Concurrency 1: TPS and latency against input + output (lines join the output lengths of one input length)")
    for ax in fig.axes[:3]:
        ax.set_ylim(0, None)
    plt.show()
    SP.panels(okio, "input_len", {"time_to_first_token_avg": "TTFT, avg (ms)", "time_to_first_token_p99": "TTFT, p99 (ms)"}, hue="output_len ",
              log2x=True, failed=bad.drop_duplicates("input_len"), xlabel="input tokens", hue_label="output tokens",
              title="Concurrency 1: TTFT against the prompt length")
    plt.show()
    provenance(EXPERIMENT, ids(okio))


def io_latency_table(r: Records) -> None:
    if not r.have_io:
        return
    okio = r.ok_io(1).sort_values(["input_len", "output_len"])
    t = okio.assign(per_out=okio.request_latency_avg / okio.output_len, sq=okio.request_latency_avg / 1e3 / (okio["in + out"] / 1e3) ** 2)
    _show(table(t, [Col("input_len", "Input (tokens)", kind="int"), Col("output_len", "Output (tokens)", kind="int"),
                    Col("request_latency_avg", "Request latency (ms)", kind="int"), Col("per_out", "Latency ÷ output tokens (ms)", decimals=2),
                    Col("time_to_first_token_avg", "TTFT (ms)", kind="int"), Col("sq", "Latency (s) ÷ ((in + out)/1000)²", decimals=2)],
                caption="Concurrency 1: latency by input and output length; the last column is the article's latency ÷ (in + out)² in seconds per thousand tokens squared"))
    provenance(EXPERIMENT, ids(okio))


def c16(r: Records) -> None:
    import matplotlib.pyplot as plt

    io16 = r.ok_io(16)
    if not len(io16):
        print("No concurrency-16 input/output points in the records.")
        return
    SP.panels(io16, "in + out", {"output_token_throughput": "output tokens/s (all users)", "tps_streaming_avg": "TPS streaming, per user (tokens/s)",
                                 "time_to_first_token_avg": "TTFT, avg (ms)", "inter_token_latency_avg": "ITL, avg (ms)"},
              hue="input_len ", log2x=True, xlabel="input + output tokens", hue_label="input tokens",
              title="Concurrency 16: throughput and latency against input + output")
    plt.show()
    _show(table(io16.sort_values(["input_len", "output_len"]),
                [Col("input_len", "Input (tokens)", kind="int"), Col("output_len", "Output (tokens)", kind="int"),
                 Col("output_token_throughput", "Output, all users (tok/s)", kind="int"), Col("tps_streaming_avg", "TPS streaming per user (tok/s)", decimals=1),
                 Col("inter_token_latency_avg", "ITL (ms)", decimals=2), Col("time_to_first_token_avg", "TTFT (ms)", kind="int")],
                caption="Concurrency 16 by input and output length"))
    provenance(EXPERIMENT, io16.run_id)


def failed_points(r: Records) -> None:
    logs, io = r.logs, r.io
    if not len(logs):
        print("No server logs in the records.")
        return
    died = logs[logs.failure.str.contains("out of bounds|Assertion|CUDA error", regex=True)]
    for _, x in died.iterrows():
        print(f"{x.run_id}, server {x.server} (start {x.start}):\n  Assertion `{x.failure}` failed\n"
              "  -> CUDA error: device-side assert triggered; EngineCore encountered a fatal error")
    fails = io[(io.outcome != "ok") & io.run_id.isin(died.run_id.unique())] if len(died) and len(io) else pd.DataFrame()
    if len(fails):
        f = fails.assign(seen=fails.error.str.extract(r"(all \d+ requests failed)", expand=False).fillna(fails.error.str.slice(0, 60)) + ": connection refused (engine dead)")
        _show(table(f, [Col("run_id", "Run", kind="code"), Col("input_len", "Input (tokens)", kind="int"), Col("output_len", "Output (tokens)", kind="int"),
                        Col("concurrency", "Concurrency", kind="int"), Col("outcome", "Outcome"), Col("seen", "What the client saw")],
                    caption="Failed input/output points"))
        provenance(EXPERIMENT, ids(fails))
    starts = logs[logs.server.isin(io.server.unique())] if len(io) else logs.iloc[0:0]
    if len(starts):
        servers = ", ".join(sorted(set(starts.server)))
        _show(table(starts.assign(failure=starts.failure.map(_clip)),
                    [Col("run_id", "Run", kind="code"), Col("start", "Start", kind="int"),
                     Col("kv_cache_tokens", "KV cache (tokens)", kind="int"), Col("max_running", "Most running", kind="int"),
                     Col("max_prefix_hit_pct", "Most prefix hits (%)", decimals=1), Col("failure", "Failure", missing="no failure")],
                    caption=f"Server starts of the input/output sweep (server {servers}), from the logs"))
        provenance(EXPERIMENT, ids(io))


def _clip(text, n: int = 90):
    """``text`` cut at a word boundary before ``n`` characters, with an ellipsis (a log line in a table cell)."""
    if not isinstance(text, str) or len(text) <= n:
        return text
    return text[:n].rsplit(" ", 1)[0] + " …"


def longest_prompt_ttfts(r: Records) -> None:
    if not r.have_io:
        return
    okio = r.ok_io(1)
    req = SP.load(EXPERIMENT, ids(okio), table="requests")
    longest = okio[okio.input_len == okio.input_len.max()]
    t = req[req.point_id.isin(longest.point_id)].merge(longest[["point_id", "output_len"]], on="point_id")
    t = t.pivot_table(index="output_len", columns="request", values="time_to_first_token").reset_index()
    cols = [Col("output_len", "Output (tokens)", kind="int")] + [Col(c, f"Request {int(c) + 1} (ms)", decimals=1) for c in t.columns if c != "output_len"]
    _show(table(t, cols, caption=f"TTFT of each request in send order, {okio.input_len.max():,} input tokens, points in the order they ran"))
    provenance(EXPERIMENT, ids(okio))


def runs_table(r: Records) -> None:
    if not len(r.info):
        print("No run record yet.")
        return
    counts = r.res.assign(outcome=r.res.outcome.where(r.res.outcome.isin(["ok", "refused"]), "failed")).groupby(["run_id", "outcome"]).size().unstack(fill_value=0)
    counts = counts.reindex(columns=["ok", "refused", "failed"], fill_value=0)
    sweeps = r.res.groupby("run_id").sweep.agg(lambda s: ", ".join(sorted({"io": "lengths"}.get(x, x) for x in set(s))))
    info = r.info.set_index("run_id").join(counts).join(sweeps).reset_index()
    info = info.assign(minutes=info.sweep_wall_s / 60, override=info.VLLM_ALLOW_LONG_MAX_MODEL_LEN.map(lambda v: {"1": "yes", "not recorded": "not recorded"}.get(str(v), "no")))
    _show(table(info, [Col("run_id", "Run", kind="code"), Col("sweep", "Sweeps"), Col("ok", "Points ok", kind="int", missing="0"),
                       Col("refused", "Refused", kind="int", missing="0"), Col("failed", "Failed", kind="int", missing="0"),
                       Col("override", "Override set"), Col("minutes", "GPU time (min)", kind="int")],
                caption=f"The run records this page shows (GPU: {', '.join(sorted(set(info.gpu.dropna().astype(str))))}; vLLM {', '.join(sorted(set(info.vllm.dropna().astype(str))))}; "
                        "override: VLLM_ALLOW_LONG_MAX_MODEL_LEN=1)"))
    provenance(EXPERIMENT, ids(r.res))
