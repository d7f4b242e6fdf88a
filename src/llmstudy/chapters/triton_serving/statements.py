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


def warmup_seconds(run_id: str) -> dict[int, float]:
    """The untimed warm-up waves a bench record's console log reports: {adapters: seconds}."""
    import re

    out = {}
    for f in sorted((runs_dir() / "triton_serving" / run_id / "logs").glob("console-*.txt")):
        for k, sec in re.findall(r"warm-up, \d+ requests on (\d+) adapter\(s\): ([\d.]+) s", f.read_text(errors="replace")):
            out[int(k)] = float(sec)
    return out


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
    for server, g in sw.groupby("server") if len(sw) else []:
        b = g[g.adapters == 0]
        one, many = g[g.adapters == 1], g[g.adapters == g.adapters.max()]
        if b.empty or one.empty or many.iloc[0].adapters < 2:
            continue
        b, one, many = b.iloc[0], one.iloc[0], many.iloc[0]
        k = f"ad_{server}_"
        out[k + "c"], out[k + "n"] = _f(b.concurrency), str(int(many.adapters))
        out[k + "base_tput"], out[k + "plain_tput"] = _f(b.output_token_throughput), _f(b.throughput_without_lora)
        out[k + "enable_cost"] = f"{(1 - b.output_token_throughput / b.throughput_without_lora) * 100:.0f}"
        out[k + "tput_1"], out[k + "tput_n"] = _f(one.output_token_throughput), _f(many.output_token_throughput)
        out[k + "itl_base"], out[k + "itl_1"], out[k + "itl_n"] = f"{b.itl_avg:.2f}", f"{one.itl_avg:.2f}", f"{many.itl_avg:.2f}"
        out[k + "itl_1_pct"] = f"{(one.itl_relative_to_base - 1) * 100:.0f}"
        out[k + "itl_n_pct"] = f"{(many.itl_relative_to_base - 1) * 100:.0f}"
        out[k + "tput_1_pct"] = f"{(1 - one.relative_to_base) * 100:.0f}"
        out[k + "tput_n_pct"] = f"{(1 - many.relative_to_base) * 100:.0f}"
    rep = A.repeats(root, model)
    if len(rep):
        base = rep[rep.adapters == 0]
        out["repeat_n"] = str(len(base))
        out["repeat_max_pct"] = f"{(base.tput_ratio - 1).abs().max() * 100:.1f}"
        out["repeat_runs"] = ", ".join(sorted(set(rep.first_run) | set(rep.last_run)))
        one = rep[(rep.server == "vllm") & (rep.adapters == 1)]
        if len(one):
            o = one.iloc[0]
            out["repeat_a1_first"], out["repeat_a1_last"] = _f(o.tput_first), _f(o.tput_last)
            fw_old = first_wave(o.first_run, f"c{int(o.concurrency)}-a1", int(o.concurrency))
            fw_new = first_wave(o.last_run, f"c{int(o.concurrency)}-a1", int(o.concurrency))
            if fw_old and fw_new:
                out["first_wave_old"], out["first_wave_new"] = _f(fw_old[0]), _f(fw_new[0])
            wu = warmup_seconds(o.last_run)
            if wu:
                out["warmup_a1_s"] = f"{wu[1]:.1f}"
    gw = A.gpu_while_serving(pts)
    cl = gw[(gw.tool == "llmstudy-client") & ~gw.lora_enabled.astype(bool) & (gw.adapters == 0)] if len(gw) else gw
    if len(cl) >= 2:
        lo, hi = cl.iloc[0], cl.iloc[-1]
        out["nvml_util_lo"], out["nvml_util_hi"] = f"{cl.gpu_util_pct_mean.min():.0f}", f"{cl.gpu_util_pct_mean.max():.0f}"
        out["nvml_power_c_lo"], out["nvml_power_lo"] = _f(lo.concurrency), _f(lo.gpu_power_w_mean)
        out["nvml_power_c_hi"], out["nvml_power_hi"] = _f(hi.concurrency), _f(hi.gpu_power_w_mean)
        top = gw[gw.concurrency == hi.concurrency].groupby("server").gpu_power_w_max.max()
        if {"triton", "vllm"} <= set(top.index):
            out["nvml_max_triton"], out["nvml_max_vllm"] = _f(top["triton"]), _f(top["vllm"])
    tm = A.triton_own_metrics(root, model)
    if len(tm) and {"preprocessing", "postprocessing"} <= set(tm.model):
        pre, post = tm.set_index("model").loc["preprocessing"], tm.set_index("model").loc["postprocessing"]
        out["tm_pre_ms"], out["tm_pre_queue_ms"] = f"{pre.request_ms:.1f}", f"{pre.queue_ms:.1f}"
        out["tm_post_n"], out["tm_post_ms"] = _f(post.requests), f"{post.request_ms:.2f}"
        from llmstudy.serving.triton.params import TritonParams

        out["tm_pre_instances"] = str(TritonParams().preprocessing_instances)  # what bench() generated the repository with
    lr = A.lora_record(root)
    if lr is not None:
        ag = A.lora_agreement(lr.table("answers").assign(run_id=lr.run_id))
        served = ag[ag.source.isin(["vllm-openai", "triton"])]
        out["lora_run"] = lr.run_id
        out["lora_equal"], out["lora_total"] = str(int(served.equal.sum())), str(int(served.prompts.sum()))
        base = served[served.adapter == "base"]
        out["base_equal"], out["base_total"] = str(int(base.equal.sum())), str(int(base.prompts.sum()))
        ad = served[served.adapter != "base"]
        out["adapter_equal"], out["adapter_total"] = str(int(ad.equal.sum())), str(int(ad.prompts.sum()))
        out["as_base"] = str(int(ad.equal_to_base_answer.sum()))
        sc = A.served_consistency(lr.table("answers"))
        out["stream_equal"], out["stream_n"] = str(sc["triton_stream_equal"]), str(sc["triton_n"])
        out["tv_equal"], out["tv_n"] = str(sc["triton_vs_openai_equal"]), str(sc["triton_vs_openai_n"])
        pp = A.peft_precision(root)
        if pp:
            out["fp32_run"] = pp["fp32_run"]
            out["peft_fp32_equal"], out["peft_fp32_n"] = map(str, pp["peft"])
            out["openai_fp32_equal"] = str(pp["vllm-openai"][0])
            out["triton_fp32_equal"] = str(pp["triton"][0])
        rf = A.refusals(root)
        rf = rf[rf.dtype == "float32"]
        if len(rf):
            out["fp32_refusal"] = rf.reason.iloc[-1]
            out["fp32_refused_paths"] = str(rf.source.nunique())
        dv = A.divergences(root)
        if len(dv):
            ties = dv[dv.near_tie]
            out["div_n"], out["div_ties"] = str(len(dv)), str(len(ties))
            out["div_tie_max"] = f"{ties.margin_at.max():.2f}" if len(ties) else ""
            out["div_median_lo"], out["div_median_hi"] = f"{ties.median_margin.min():.1f}", f"{ties.median_margin.max():.1f}"
            out["div_fp32_max"] = f"{ties.margin_fp32_at.max():.2f}" if len(ties) else ""
            other = dv[~dv.near_tie]
            out["div_others"] = "; ".join(f"{r.adapter} prompt {int(r.prompt_id)} (margin {r.margin_at:.2f} at token {int(r.diverge_at)}, "
                                          f"answer median {r.median_margin:.2f})" for r in other.itertuples())
        sf = A.self_consistency(root)
        if sf:
            out["self_flip"], out["self_n"] = map(str, sf)
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
        text = (
            f"The adapters trained in the LoRA-vs-QLoRA chapter, served per request in bf16, are applied (only {s['as_base']} of "
            f"{s['adapter_total']} served adapter answers equal the base model's answer) and give greedy answers equal to peft's "
            f"(bf16, same GPU) for {s['adapter_equal']} of {s['adapter_total']} adapter answers, vLLM's OpenAI server and Triton "
            f"together; the base model without an adapter agrees about as often, {s['base_equal']} of {s['base_total']}, so the "
            f"differences are the engines' bf16 arithmetic, not the adapters.")
        out["lora_answer"], text = text, ""
        if "div_n" in s:
            text += (
                f" Where they part, peft itself was at a near-tie: {s['div_ties']} of the {s['div_n']} distinct divergences fall "
                f"where peft's two best tokens are at most {s['div_tie_max']} logits apart (a quarter or less of the answer's "
                f"median margin, {s['div_median_lo']}–{s['div_median_hi']}), and at most {s['div_fp32_max']} apart with the "
                f"same weights in float32.")
            if s.get("div_others"):
                text += (f" Not at a near-tie by this measure: {s['div_others']}. Comparing text can place a divergence one "
                         f"token late, where a served token begins with the characters of peft's, and a margin there is then "
                         f"no evidence either way.")
        if "self_flip" in s:
            text += (f" peft disagrees with itself as readily: re-scoring its own answer in one forward pass picks another "
                     f"token somewhere in {s['self_flip']} of {s['self_n']} answers.")
        if "peft_fp32_equal" in s:
            text += (f" And peft in float32 gives the same answer as peft in bf16 for only {s['peft_fp32_equal']} of "
                     f"{s['peft_fp32_n']} prompts.")
        if "fp32_refusal" in s:
            text += (f" An exact check in float32 cannot be made on the GPU with vLLM 0.25.0: with float32 and LoRA both "
                     f"served paths stop at start-up, and the engine's log names the check that stops them: "
                     f"{s['fp32_refusal'].replace(' (', ', at ').rstrip(')')}.")
        out["lora_answer"] += (f" Triton's streamed and whole answers are identical ({s['stream_equal']} of {s['stream_n']}), and "
                               f"Triton equals vLLM's OpenAI server for {s['tv_equal']} of {s['tv_n']}.")
        out["lora_why"] = text.strip()
    else:
        out["lora_answer"] = "Served adapters against peft: not measured yet (`bash scripts/device_triton_serving.sh lora RUN_ID`)."
        out["lora_why"] = ""
    if "ad_triton_itl_n_pct" in s or "ad_vllm_itl_n_pct" in s:
        parts = []
        for srv, name in (("triton", "Triton"), ("vllm", "vLLM's OpenAI server")):
            k = f"ad_{srv}_"
            if k + "itl_n_pct" in s:
                parts.append(f"{name}: {s[k + 'tput_1']} tokens/s with one adapter (−{s[k + 'tput_1_pct']} %) and {s[k + 'tput_n']} "
                             f"with {s[k + 'n']} (−{s[k + 'tput_n_pct']} %), against {s[k + 'base_tput']} without an adapter; mean "
                             f"inter-token latency {s[k + 'itl_base']} → {s[k + 'itl_1']} → {s[k + 'itl_n']} ms")
        k = "ad_vllm_" if "ad_vllm_c" in s else "ad_triton_"
        text = (f"With adapters in the batch every decoding step is slower, through Triton and vLLM's server alike, at "
                f"{s[k + 'c']} requests in flight. " + "; ".join(parts) + ". Enabling LoRA alone costs base-model "
                f"requests about {s[k + 'enable_cost']} % ({s[k + 'base_tput']} vs {s[k + 'plain_tput']} tokens/s).")
        if "first_wave_old" in s:
            text += (f" An untimed wave of requests on the adapters precedes the points ({s.get('warmup_a1_s', '?')} s for the first "
                     f"one on vLLM): without it, an earlier record's first wave waited {s['first_wave_old']} ms for its first "
                     f"token instead of {s['first_wave_new']} ms and its point read {s['repeat_a1_first']} instead of "
                     f"{s['repeat_a1_last']} tokens/s with one adapter.")
        out["adapters_answer"] = text
    else:
        out["adapters_answer"] = "Adapters in flight: not measured yet."
    if "nvml_power_hi" in s:
        out["gpu_answer"] = (
            f"NVML, sampled every 0.25 s during each point (Triton's own GPU metrics read 0 on this machine): while the "
            f"study's client drives Triton, the GPU is busy {s['nvml_util_lo']}–{s['nvml_util_hi']} % of the time at every "
            f"concurrency (NVML's utilisation counts time with any kernel running, not how full the GPU is), and the power "
            f"says how full: {s['nvml_power_lo']} W on average at {s['nvml_power_c_lo']} request in flight, "
            f"{s['nvml_power_hi']} W at {s['nvml_power_c_hi']}, peaking at {s['nvml_max_triton']} W (Triton) and "
            f"{s['nvml_max_vllm']} W (vLLM's server); NVIDIA specifies up to 700 W for the H200 SXM.")
    else:
        out["gpu_answer"] = "GPU utilisation and power while serving: not measured yet."
    if "tm_pre_ms" in s:
        out["triton_own"] = (
            f"Triton's own counters show where its front end spends time: tokenizing a prompt in the preprocessing "
            f"step took {s['tm_pre_ms']} ms per request, {s['tm_pre_queue_ms']} ms of it waiting in that step's queue "
            f"({s['tm_pre_instances']} instance, the article's INSTANCE_COUNT), and postprocessing ran {s['tm_post_n']} times, once per "
            f"streamed response, at {s['tm_post_ms']} ms each.")
    else:
        out["triton_own"] = ""
    if "repeat_max_pct" in s:
        out["repeat_answer"] = (
            f"Each server was measured twice, on two lent machines in two sessions ({s['repeat_runs']}): the {s['repeat_n']} "
            f"base-model points repeat within {s['repeat_max_pct']} % in throughput; the page shows the later records.")
    else:
        out["repeat_answer"] = ""
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
