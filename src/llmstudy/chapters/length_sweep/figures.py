"""Every figure and table of the chapter, each shown with its provenance line (call from the notebook)."""

from __future__ import annotations

import pandas as pd

from llmstudy.chapters import serve_sweeps as SP
from llmstudy.chapters.length_sweep.params import EXPERIMENT
from llmstudy.chapters.length_sweep.statements import Records, c16_against_c1, ids  # noqa: F401
from llmstudy.core import models as M
from llmstudy.core.book import provenance


def _show(obj) -> None:
    from IPython.display import display

    display(obj)


def summary(r: Records) -> str:
    if not len(r.res):
        return (f"No run record of {M.title(r.P['model'])} yet in data/runs/{EXPERIMENT}: run this notebook with mode='run' on a machine with vLLM "
                f"(a GPU for real numbers), or `{SP.sweep_command('length', r.P['model'])}`, to make one.")
    mml, io = r.mml, r.io
    return (f"records: {', '.join(ids(r.res))}; max_model_len sweep {len(mml)} points ({(mml.outcome == 'ok').sum() if len(mml) else 0} ok), "
            f"input/output sweep {len(io)} points ({(io.outcome == 'ok').sum() if len(io) else 0} ok)")


def runs_table(r: Records) -> None:
    if not len(r.info):
        print("No run record yet.")
        return
    _show(r.info.drop(columns=["notes"]).style.hide(axis="index").format({"sweep_wall_s": "{:,.0f}"})
          .set_caption(f"Run records of the length sweeps (runs: {', '.join(ids(r.res))}); 'not recorded': the record predates the field"))
    out = r.res.groupby(["run_id", "sweep", "outcome"]).size().unstack(fill_value=0)
    _show(out.style.set_caption(f"Points per outcome (runs: {', '.join(ids(r.res))})"))
    provenance(EXPERIMENT, ids(r.res))


def max_model_len_panels(r: Records) -> None:
    import matplotlib.pyplot as plt

    if not r.have_mml:
        print("No max_model_len points in the records.")
        return
    bad = r.mml[r.mml.outcome != "ok"].drop_duplicates(["run_id", "max_model_len"])
    SP.panels(r.ok_mml(), "max_model_len", {"output_token_throughput": "output token throughput (tokens/s)", "inter_token_latency_avg": "ITL, avg (ms)",
                                            "time_to_first_token_avg": "TTFT, avg (ms)", "request_latency_avg": "request latency, avg (ms)"},
              hue="concurrency ", log2x=True, failed=bad, xlabel="max_model_len (tokens)",
              title=f"{M.title(r.P['model'])}: speed against max_model_len, {r.P['input_len']} in / {r.P['output_len']} out (runs: {r.runs_mml})")
    plt.show()
    provenance(EXPERIMENT, ids(r.mml))


def kv_per_server(r: Records) -> None:
    srv = r.mml_servers()
    if not len(srv):
        print("No server logs for the max_model_len sweep.")
        return
    cols = ["run_id", "max_model_len", "outcome", "available_kv_gib", "kv_cache_tokens", "max_concurrency", "tokens / max_model_len", "reason"]
    _show(srv.sort_values(["max_model_len", "run_id"]).reindex(columns=cols).style.hide(axis="index")
          .format({"kv_cache_tokens": "{:,.0f}", "available_kv_gib": "{:.2f}", "max_concurrency": "{:.2f}", "tokens / max_model_len": "{:.2f}"}, na_rep="—")
          .set_caption(f"KV cache per max_model_len server, from the vLLM logs (runs: {r.runs_mml})"))
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
                    hue="input_len ", log2x=True, failed=bad, xlabel="input + output tokens",
                    title=f"Concurrency 1: TPS and latency against input + output\nlines join the output lengths 128, 256, 1024 of one input length (runs: {', '.join(ids(okio))})")
    for ax in fig.axes[:3]:
        ax.set_ylim(0, None)
    plt.show()
    SP.panels(okio, "input_len", {"time_to_first_token_avg": "TTFT, avg (ms)", "time_to_first_token_p99": "TTFT, p99 (ms)"}, hue="output_len ",
              log2x=True, failed=bad.drop_duplicates("input_len"), xlabel="input tokens", title=f"Concurrency 1: TTFT against the prompt length (runs: {', '.join(ids(okio))})")
    plt.show()
    provenance(EXPERIMENT, ids(okio))


def io_latency_table(r: Records) -> None:
    if not r.have_io:
        return
    okio = r.ok_io(1)
    lat = okio.pivot_table(index="input_len", columns="output_len", values="request_latency_avg")
    per_tok = okio.assign(ms_per_out=okio.request_latency_avg / okio.output_len).pivot_table(index="input_len", columns="output_len", values="ms_per_out")
    sq = okio.assign(r=okio.request_latency_avg / 1e3 / (okio["in + out"] / 1e3) ** 2).pivot_table(index="input_len", columns="output_len", values="r")
    table = pd.concat({"request latency (ms)": lat, "latency / output tokens (ms)": per_tok, "latency (s) / ((in+out)/1000)² ": sq}, axis=1)
    _show(table.style.format("{:,.2f}").set_caption(f"Concurrency 1: latency by input (rows) and output (columns) length (runs: {', '.join(ids(okio))})"))
    provenance(EXPERIMENT, ids(okio))


def c16(r: Records) -> None:
    import matplotlib.pyplot as plt

    io16 = r.ok_io(16)
    if not len(io16):
        print("No concurrency-16 input/output points in the records.")
        return
    SP.panels(io16, "in + out", {"output_token_throughput": "output tokens/s (all users)", "tps_streaming_avg": "TPS streaming, per user (tokens/s)",
                                       "time_to_first_token_avg": "TTFT, avg (ms)", "inter_token_latency_avg": "ITL, avg (ms)"},
                    hue="input_len ", log2x=True, xlabel="input + output tokens",
                    title=f"Concurrency 16: throughput and latency against input + output (runs: {', '.join(ids(io16))})")
    plt.show()
    t16 = pd.concat({"output tok/s (all users)": io16.pivot_table(index="input_len", columns="output_len", values="output_token_throughput"),
                     "ITL (ms)": io16.pivot_table(index="input_len", columns="output_len", values="inter_token_latency_avg"),
                     "TTFT (ms)": io16.pivot_table(index="input_len", columns="output_len", values="time_to_first_token_avg")}, axis=1)
    _show(t16.style.format("{:,.1f}").set_caption(f"Concurrency 16 by input (rows) and output (columns) length (runs: {', '.join(ids(io16))})"))
    provenance(EXPERIMENT, io16.run_id)


def failed_points(r: Records) -> None:
    logs, io = r.logs, r.io
    if not len(logs):
        print("No server logs in the records.")
        return
    died = logs[logs.failure.str.contains("out of bounds|Assertion|CUDA error", regex=True)]
    for _, x in died.iterrows():
        print(f"{x.run_id}, server {x.server} (start {x.start}): Assertion `{x.failure}` failed  ->  CUDA error: device-side assert triggered; EngineCore encountered a fatal error")
    fails = io[(io.outcome != "ok") & io.run_id.isin(died.run_id.unique())] if len(died) and len(io) else pd.DataFrame()
    if len(fails):
        f = fails[["run_id", "input_len", "output_len", "concurrency", "outcome"]].copy()
        f["what the client saw"] = fails.error.str.extract(r"(all \d+ requests failed)", expand=False).fillna(fails.error.str.slice(0, 60)) + ": connection refused (engine dead)"
        _show(f.style.hide(axis="index").set_caption(f"Failed input/output points (runs: {', '.join(ids(fails))})"))
        provenance(EXPERIMENT, ids(fails))
    starts = logs[logs.server.isin(io.server.unique())] if len(io) else logs.iloc[0:0]
    if len(starts):
        _show(starts.reindex(columns=["run_id", "server", "start", "kv_cache_tokens", "max_concurrency", "max_running", "max_prefix_hit_pct", "failure"])
              .assign(failure=lambda d: d.failure.str.slice(0, 90)).style.hide(axis="index").format({"kv_cache_tokens": "{:,.0f}", "max_concurrency": "{:.2f}", "max_running": "{:.0f}", "max_prefix_hit_pct": "{:.1f}"}, na_rep="—")
              .set_caption(f"Server starts of the input/output sweep, from the logs (runs: {r.runs_io})"))
        provenance(EXPERIMENT, ids(io))


def longest_prompt_ttfts(r: Records) -> None:
    if not r.have_io:
        return
    okio = r.ok_io(1)
    req = SP.load(EXPERIMENT, ids(okio), table="requests")
    longest = okio[okio.input_len == okio.input_len.max()]
    t = req[req.point_id.isin(longest.point_id)].merge(longest[["point_id", "output_len"]], on="point_id")
    t = t.pivot_table(index="output_len", columns="request", values="time_to_first_token")
    t.columns = [f"request {c}" for c in t.columns]
    _show(t.style.format("{:.1f}").set_caption(f"TTFT (ms) of each request in send order, {okio.input_len.max():,} input tokens, points in the order they ran (runs: {', '.join(ids(okio))})"))
    provenance(EXPERIMENT, ids(okio))
