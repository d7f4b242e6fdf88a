"""The sentences the Triton chapter glues into its text, computed from the run records (never typed)."""

from __future__ import annotations

import gzip
import json

import pandas as pd

from llmstudy.chapters.triton_serving import analysis as A
from llmstudy.core.paths import runs_dir


def _f(x, d=0) -> str:
    return f"{x:,.{d}f}"


def same_tool(points: pd.DataFrame, tool: str = "genai-perf") -> pd.DataFrame:
    """Both servers measured by one tool (genai-perf: perf_analyzer over gRPC for Triton, HTTP for vLLM), per
    concurrency: throughput, mean TTFT and ITL, and Triton's throughput relative to vLLM's."""
    if points.empty:
        return pd.DataFrame()
    p = points[(points.tool == tool) & (points.adapters == 0) & points.streaming.astype(bool) & ~points.lora_enabled.astype(bool)]
    w = p.pivot_table(index="concurrency", columns="server", values=["output_token_throughput", "time_to_first_token_avg", "inter_token_latency_avg"], aggfunc="first")
    if w.empty or "triton" not in w.columns.get_level_values(1) or "vllm" not in w.columns.get_level_values(1):
        return pd.DataFrame()
    w.columns = [f"{m}_{s}" for m, s in w.columns]
    w = w.reset_index()
    w["ratio"] = w.output_token_throughput_triton / w.output_token_throughput_vllm
    return w


def first_wave(run_id: str, tag: str, concurrency: int) -> tuple[float, float] | None:
    """Mean TTFT (ms) of the first ``concurrency`` requests and of the rest, from a ``vllm bench serve`` detailed
    result in the record's raw folder (``raw/<server>/<tag>.json[.gz]``)."""
    base = runs_dir() / "triton_serving" / run_id / "raw"
    for f in list(base.glob(f"*/{tag}.json.gz")) + list(base.glob(f"*/{tag}.json")):
        opener = gzip.open if f.suffix == ".gz" else open
        with opener(f, "rt") as fh:
            d = json.load(fh)
        t = [x * 1e3 for x in d["ttfts"]]
        if len(t) <= concurrency:
            return None
        return sum(t[:concurrency]) / concurrency, sum(t[concurrency:]) / (len(t) - concurrency)
    return None


def statements(root=None, model: str | None = None) -> dict[str, str]:
    """Every glued value of the page; a missing record leaves its keys out (the page then says what is missing).
    ``model``: only the bench records that served it (a fork's page)."""
    pts = A.bench_points(root, model)
    out: dict[str, str] = {}
    if len(pts):
        out["gpu"] = str(pts.gpu.iloc[0])
        out["bench_runs"] = ", ".join(sorted(pts.run_id.unique()))
    st = same_tool(pts)
    if len(st):
        hi, lo = st.iloc[-1], st.iloc[0]
        out["cmax"] = _f(hi.concurrency)
        out["triton_tput_cmax"] = _f(hi.output_token_throughput_triton)
        out["vllm_tput_cmax"] = _f(hi.output_token_throughput_vllm)
        out["ratio_cmax"] = f"{hi.ratio:.2f}"
        out["itl_triton_cmax"] = f"{hi.inter_token_latency_avg_triton:.2f}"
        out["itl_vllm_cmax"] = f"{hi.inter_token_latency_avg_vllm:.2f}"
        out["ratio_c1"] = f"{lo.ratio:.2f}"
        out["triton_tput_c1"] = _f(lo.output_token_throughput_triton)
        out["vllm_tput_c1"] = _f(lo.output_token_throughput_vllm)
        c16 = st[st.concurrency == 16]
        if len(c16):
            out["triton_tput_c16"] = _f(c16.iloc[0].output_token_throughput_triton)
            out["ratio_c16"] = f"{c16.iloc[0].ratio:.2f}"
    tc = A.tool_comparison(pts)
    if len(tc):
        v, t = tc[tc.server == "vllm"], tc[tc.server == "triton"]
        if len(v):
            out["vllm_tools_tput"] = f"{(v.throughput_ratio - 1).abs().max() * 100:.1f}"
            out["vllm_tools_ttft_lo"], out["vllm_tools_ttft_hi"] = f"{v.ttft_ratio.min():.2f}", f"{v.ttft_ratio.max():.2f}"
        if len(t):
            worst = t.loc[t.ttft_ratio.idxmin()]
            out["triton_client_ttft_x"] = f"{1 / worst.ttft_ratio:.1f}"
            out["triton_client_ttft_c"] = _f(worst.concurrency)
            out["triton_client_tput_gap"] = f"{(1 - 1 / t.throughput_ratio.max()) * 100:.0f}"
    sw = A.adapter_sweep(pts)
    if len(sw):
        b = sw[sw.adapters == 0].iloc[0]
        out["lora_server_base_tput"] = _f(b.output_token_throughput)
        out["plain_server_tput"] = _f(b.throughput_without_lora)
        out["lora_enable_cost"] = f"{(1 - b.output_token_throughput / b.throughput_without_lora) * 100:.0f}"
        one, many = sw[sw.adapters == 1], sw[sw.adapters == sw.adapters.max()]
        if len(one) and len(many):
            out["itl_base"] = f"{b.itl_avg:.2f}"
            out["itl_1"], out["itl_n"] = f"{one.iloc[0].itl_avg:.2f}", f"{many.iloc[0].itl_avg:.2f}"
            out["itl_1_pct"] = f"{(one.iloc[0].itl_relative_to_base - 1) * 100:.0f}"
            out["itl_n_pct"] = f"{(many.iloc[0].itl_relative_to_base - 1) * 100:.0f}"
            out["n_adapters"] = str(int(many.iloc[0].adapters))
            out["tput_1"], out["tput_n"] = _f(one.iloc[0].output_token_throughput), _f(many.iloc[0].output_token_throughput)
            rid = pts[pts.adapters > 0].run_id.iloc[0]
            out["c_adapters"] = str(int(b.concurrency))
            fw = first_wave(rid, f"c{int(b.concurrency)}-a1", int(b.concurrency))
            if fw:
                out["first_wave_ttft"], out["later_ttft"] = _f(fw[0]), _f(fw[1])
    ans = A.lora_answers(root)
    ag = A.lora_agreement(ans)
    if len(ag):
        served = ag[ag.source.isin(["vllm-openai", "triton"])]
        out["lora_runs"] = ", ".join(sorted(ag.run_id.unique()))
        out["lora_equal"] = str(int(served.equal.sum()))
        out["lora_total"] = str(int(served.prompts.sum()))
        base = served[served.adapter == "base"]
        out["base_equal"], out["base_total"] = str(int(base.equal.sum())), str(int(base.prompts.sum()))
        ad = served[served.adapter != "base"]
        out["adapter_equal"], out["adapter_total"] = str(int(ad.equal.sum())), str(int(ad.prompts.sum()))
        out["as_base"] = str(int(ad.equal_to_base_answer.sum()))
        sc = A.served_consistency(ans)
        out["stream_equal"], out["stream_n"] = str(sc["triton_stream_equal"]), str(sc["triton_n"])
        out["tv_equal"], out["tv_n"] = str(sc["triton_vs_openai_equal"]), str(sc["triton_vs_openai_n"])
    return out


def sentences(s: dict[str, str], model_title: str, command: str) -> dict[str, str]:
    """The page's glued paragraphs from :func:`statements`' values; where a record is missing, the sentence says what
    was not measured and the command that measures it (a fork's page never shows another model's numbers)."""
    from llmstudy.core.book import not_measured

    out = {}
    if "ratio_cmax" in s:
        out["answer"] = (
            f"On one {s['gpu']}, the article's Triton deployment with vLLM's async engine as the engine step serves "
            f"{model_title} (random weights, bf16, 512 tokens in / 256 out) as fast as vLLM's own OpenAI server at low "
            f"concurrency ({s['triton_tput_c1']} vs {s['vllm_tput_c1']} tokens/s at 1 request in flight) and faster at high "
            f"concurrency: {s['triton_tput_cmax']} vs {s['vllm_tput_cmax']} tokens/s at {s['cmax']} ({s['ratio_cmax']}×), both "
            f"measured by genai-perf. The engine and its arguments are the same; what differs is the front end: Triton's "
            f"C++ server with tokenization in separate Python-backend processes, against vLLM's Python API server "
            f"(mean inter-token latency at {s['cmax']} in flight: {s['itl_triton_cmax']} vs {s['itl_vllm_cmax']} ms).")
    else:
        out["answer"] = "Triton with a vLLM engine: " + not_measured(model_title, command)
    if "lora_equal" in s:
        out["lora_answer"] = (
            f"The adapters trained in the LoRA-vs-QLoRA chapter, served per request, gave greedy answers equal to peft's for "
            f"{s['adapter_equal']} of {s['adapter_total']} adapter answers (vLLM's OpenAI server and Triton together), and "
            f"the base model without any adapter for {s['base_equal']} of {s['base_total']}: the served engine and peft "
            f"part ways at near-ties of a bf16 model as often without an adapter as with one. The adapters are applied: "
            f"only {s['as_base']} of the {s['adapter_total']} served adapter answers equal the base model's answer. Triton's "
            f"streamed and whole answers are identical ({s['stream_equal']} of {s['stream_n']}), and Triton equals vLLM's "
            f"OpenAI server for {s['tv_equal']} of {s['tv_n']}.")
    else:
        out["lora_answer"] = "Served adapters against peft: not measured yet (`bash scripts/device_triton_serving.sh lora RUN_ID`)."
    if "itl_n_pct" in s:
        first = (f" The first wave of {s['c_adapters']} requests on one adapter waited {s['first_wave_ttft']} ms for its first token "
                 f"(later requests {s['later_ttft']} ms): a one-time cost of the first full batch with an adapter (most "
                 f"likely kernel preparation for the new shape; the few warm-up requests did not reach it), so the whole-point throughput ({s['tput_1']} tokens/s with one "
                 f"adapter, {s['tput_n']} with {s['n_adapters']}) understates the steady state.") if "first_wave_ttft" in s else ""
        out["adapters_answer"] = (
            f"Enabling LoRA costs base-model requests about {s['lora_enable_cost']} % ({s['lora_server_base_tput']} vs "
            f"{s['plain_server_tput']} tokens/s at {s['c_adapters']} in flight). With adapters in the batch, each decoding step is slower: "
            f"mean inter-token latency {s['itl_base']} ms without an adapter, {s['itl_1']} ms with one adapter "
            f"(+{s['itl_1_pct']} %) and {s['itl_n']} ms with {s['n_adapters']} distinct adapters (+{s['itl_n_pct']} %), at {s['c_adapters']} in flight." + first)
    else:
        out["adapters_answer"] = "Adapters in flight: not measured yet."
    if "vllm_tools_tput" in s:
        out["tools_answer"] = (
            f"Against vLLM's server, genai-perf and vllm bench serve agree on throughput within {s['vllm_tools_tput']} % "
            f"and on mean TTFT within a factor {s['vllm_tools_ttft_lo']}–{s['vllm_tools_ttft_hi']}. Against Triton, this "
            f"study's Python HTTP client reads a mean TTFT {s['triton_client_ttft_x']}× genai-perf's at "
            f"{s['triton_client_ttft_c']} in flight and up to {s['triton_client_tput_gap']} % less throughput: the two agree "
            f"at 4 in flight and part from 16 on, which points at the client (one Python thread per request parsing "
            f"server-sent events) rather than the server. So the page compares the servers with one tool, genai-perf.")
    else:
        out["tools_answer"] = "Tool comparison: not measured yet."
    return out
