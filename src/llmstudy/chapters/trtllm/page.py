"""The two TensorRT-LLM chapters as pages: the glued sentences of their opening answer, their key figures and the
tables each notebook cell shows (through :func:`llmstudy.publishing.tables.table`). Nothing here runs TensorRT-LLM:
the numbers are the article's published ones (labelled) or computed from the plan and the preflight.
"""

from __future__ import annotations

import math

import pandas as pd

from llmstudy.core.paths import data_dir
from llmstudy.publishing.tables import Col, table

from .params import ServeDeploy, TritonDeploy
from .plan import bench_points, derived, plan
from .preflight import preflight
from .published import pitfalls

ARTICLE = "Fixstars (2026-02-18), “QLoRAによるLLM省メモリFine-tuningと高速デプロイ” (QLoRA memory-saving fine-tuning and fast deployment: TensorRT-LLM, Triton, H100)"


def _published_raw(workflow: str) -> pd.DataFrame:
    """data/trtllm/published.csv as written (values keep the article's decimals)."""
    df = pd.read_csv(data_dir() / "trtllm" / "published.csv", dtype=str, keep_default_na=False)
    return df[df.workflow == workflow].reset_index(drop=True)


def _pub(workflow: str, section: str, metric: str, concurrency: str = "") -> float:
    df = _published_raw(workflow)
    row = df[(df.section == section) & (df.metric == metric) & (df.concurrency.str.replace(".0", "", regex=False) == concurrency)]
    if len(row) != 1:
        raise KeyError(f"published.csv: {len(row)} rows for {workflow} §{section} {metric!r} c={concurrency!r}")
    return float(row.value.iloc[0])


def statements(cfg) -> dict[str, str]:
    """Every number the chapter's opening quotes, as text: the article's published figures (``tr_pub_*``) and what
    the plan derives for ``cfg`` (``tr_*``)."""
    out: dict[str, str] = {}
    if isinstance(cfg, TritonDeploy):
        df = _published_raw("old")
        t, v = (df[(df.section == "6.6") & df.server.str.startswith(name)] for name in ("Triton", "vLLM"))
        trt, vllm = float(t.value.iloc[0]), float(v.value.iloc[0])
        out |= {"tr_pub_triton_c16": f"{trt:,.0f}", "tr_pub_vllm_c16": f"{vllm:,.0f}", "tr_pub_ratio_c16": f"{trt / vllm:.2f}×",
                "tr_pub_vllm_version": v.server.iloc[0], "tr_pub_c1_ttft": f"{_pub('old', '5.4', 'time_to_first_token (avg)', '1'):.0f}",
                "tr_pub_c1_itl": f"{_pub('old', '5.4', 'inter_token_latency (avg)', '1'):.2f}"}
        table_ = pitfalls(cfg)
        caught = int((table_["preflight"] != "(not caught)").sum())
        out |= {"tr_pitfalls_caught": f"{caught} of {len(table_)}", "tr_steps": str(len(plan(cfg)))}
    else:
        out |= {"tr_pub_c1_user": f"{_pub('new', '8.1', 'output tokens/s per user (TTFT excluded)', '1'):,.0f}",
                "tr_pub_c1_user_ttft": f"{_pub('new', '8.1', 'output tokens/s per user (TTFT included)', '1'):,.0f}",
                "tr_batch": f"{cfg.batch:,}", "tr_seq_len": f"{cfg.seq_len:,}", "tr_num_tokens": f"{cfg.num_tokens:,}",
                "tr_longest": f"{cfg.input_len + cfg.prompt_overhead:,}", "tr_max_conc": f"{max(cfg.concurrencies):,}",
                "tr_wave": f"{cfg.batch * (cfg.input_len + cfg.prompt_overhead):,}", "tr_wave_iters_8192": f"{math.ceil(cfg.batch * (cfg.input_len + cfg.prompt_overhead) / 8192):,}"}
    errors = [f for f in preflight(cfg) if f.status == "error"]
    out["tr_preflight"] = "passes" if not errors else f"stops with {len(errors)} error{'s' if len(errors) > 1 else ''}"
    return out


# --- tables ------------------------------------------------------------------------------------------------------------
def derived_table(cfg):
    d = derived(cfg).reset_index()
    d["value"] = [("yes" if v else "no") if isinstance(v, bool) else (f"{v:,}" if isinstance(v, int) else str(v)) for v in d["value"]]
    return table(d, [Col("setting", "Setting", kind="code"), Col("value", "Value", kind="text", align="right"), Col("from", "Derived from", kind="text")],
                 caption="What the plan takes from config.json and the workload", collapsed=False)


def findings_view(findings, caption: str):
    df = pd.DataFrame([f.__dict__ for f in findings]) if findings else pd.DataFrame(columns=["check", "status", "message", "fix"])
    return table(df, [Col("check", "Check", kind="code"), Col("status", "Status", kind="text"), Col("message", "What the preflight says", kind="text"),
                      Col("fix", "Fix", kind="text")], caption=caption, collapsed=False)


def _short(message: str, limit: int = 240) -> str:
    """A long preflight message for a table cell: its head, and the consequence after " — " (the CLI prints it whole)."""
    if len(message) <= limit:
        return message
    head, sep, tail = message.partition(" — ")
    return head[: limit - len(tail) - 5].rsplit(" ", 1)[0] + " …" + (f" — {tail}" if sep else "")


def pitfalls_view(cfg):
    df = pitfalls(cfg)
    df["says"] = [f"{_short(m)}. Fix: {f}." if f else m for m, f in zip(df["preflight"], df["fix"])]
    return table(df, [Col("pitfall", "Pitfall"), Col("article saw", "What the article saw"), Col("bad setting", "Setting applied", kind="text"),
                      Col("says", "What the preflight says, and the fix")],
                 caption="The article's mistakes, each applied to the plan of this page and checked on a CPU", collapsed=False)


def bench_view(cfg):
    return table(bench_points(cfg), [Col("concurrency", "Concurrency C", kind="int"), Col("requests", "Requests N", kind="int"),
                                     Col("artifacts", "genai-perf artifacts", kind="code")],
                 caption="The benchmark loop's runs: what varies between them", collapsed=False)


def published_view(workflow: str):
    """The article's numbers for one workflow: value and unit first, the model per server in the caption."""
    df = _published_raw(workflow).copy()
    df["value_unit"] = [f"{float(v):,.{len(v.partition('.')[2])}f} {u}" for v, u in zip(df["value"], df["unit"])]  # the article's decimals
    df["concurrency"] = [int(float(c)) if c else None for c in df["concurrency"]]
    df["section"] = "§" + df["section"]
    models = "; ".join(f"{s}: {m}" for s, m in dict(zip(df.server, df.model)).items())
    cols = [Col("metric", "Metric"), Col("value_unit", "Value", kind="text", align="right"), Col("concurrency", "Concurrency", kind="int"),
            Col("server", "Server"), Col("setting", "Setting"), Col("note", "Note"), Col("section", "Section")]
    if df.server.nunique() == 1:  # one server: named in the caption with its model
        cols = [c for c in cols if c.key != "server"]
    return table(df, cols, caption=f"Published by the article, not measured here (one H100 80GB PCIe, genai-perf 0.0.16). Models: {models}", collapsed=False)


# --- figures -----------------------------------------------------------------------------------------------------------
def budget_figure(cfg: ServeDeploy):
    """Iterations the scheduler needs to prefill a full wave of prompts (all ``batch`` arriving at once) against
    ``max_num_tokens``: the preflight's rule drawn, with TensorRT-LLM's default, the plan's value and the error zone
    (a budget below one prompt with chunked prefill off)."""
    import matplotlib.pyplot as plt
    import numpy as np

    from llmstudy.publishing import figstyle

    longest = cfg.input_len + cfg.prompt_overhead
    wave = cfg.batch * longest
    x = np.unique(np.round(np.logspace(np.log10(longest / 4), np.log10(max(cfg.num_tokens, wave) * 2), 400)).astype(int))
    y = np.ceil(wave / x)
    fig, ax = plt.subplots(figsize=(figstyle.WIDTH_IN, 4.8))
    ok = x >= longest
    ax.plot(x[ok], y[ok], color=figstyle.color(0), lw=2, label="chunked prefill off or on")
    ax.plot(x[~ok], y[~ok], color=figstyle.color(0), lw=2, ls=":", label="chunked prefill on only")
    ax.axvspan(x.min(), longest, color=figstyle.color(5), alpha=0.12, lw=0)
    ax.annotate(f"shaded: an error without chunked prefill\n(budget < one prompt of {longest:,} tokens)", xy=(longest, 0.04), xycoords=("data", "axes fraction"),
                xytext=(6, 0), textcoords="offset points", ha="left", va="bottom", fontsize=9.5, color=figstyle.color(5))
    figstyle.ref_line(ax, x=8192, label="TensorRT-LLM default 8,192", color="#555555")
    figstyle.ref_line(ax, x=cfg.num_tokens, label=f"this plan {cfg.num_tokens:,}", color=figstyle.color(2))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set(xlabel="max_num_tokens (tokens per scheduler iteration, log scale)", ylabel="iterations to prefill the wave (log scale)",
           title=f"{cfg.batch} prompts of {longest:,} tokens arriving at once: prefill iterations by token budget")
    ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:,.0f}"))
    figstyle.legend_outside(ax, loc="below")
    return fig


def published_figure():
    """The article's one head-to-head number for the old workflow (§6.6): output tokens/s at concurrency 16."""
    import matplotlib.pyplot as plt

    from llmstudy.publishing import figstyle

    df = _published_raw("old")
    d = df[df.section == "6.6"]
    def short(model: str) -> str:  # "ELYZA-japanese-Llama-2-7B-fast-instruct-GPTQ (4-bit)" -> "ELYZA 7B fast, GPTQ 4-bit"
        return "ELYZA 7B" + (" fast" if "fast" in model else "") + (", GPTQ" if "GPTQ" in model else "") + (" 4-bit" if "4-bit" in model else "")

    labels = [f"{s.replace(' (TensorRT-LLM engine)', ' + TensorRT-LLM')}\n({short(m)})" for s, m in zip(d.server, d.model)]
    vals = d.value.astype(float).tolist()
    fig, ax = plt.subplots(figsize=(figstyle.WIDTH_IN, 2.6))
    bars = ax.barh(labels, vals, color=[figstyle.color(0), figstyle.color(1)])
    for b, v in zip(bars, vals):
        ax.annotate(f"{v:,.0f} tokens/s", xy=(v, b.get_y() + b.get_height() / 2), xytext=(4, 0), textcoords="offset points", va="center", fontsize=10)
    ax.invert_yaxis()
    ax.set_xlim(0, max(vals) * 1.25)
    ax.grid(axis="y", visible=False)
    ax.set(xlabel="output tokens/s, 16 concurrent requests of 512 in / 256 out (published, not measured here)",
           title="The article's comparison on one H100 PCIe (§6.6)")
    return fig

