"""The Triton chapter's tables, each with the run records it rests on: the notebook shows one with ``show(...)``.

Every builder takes the chapter's points (:func:`analysis.bench_points`) where it needs them and returns
``(table, run_ids)``, or None when no record has what the table shows (the page then shows nothing for it)."""

from __future__ import annotations

from llmstudy.chapters.triton_serving import analysis as A
from llmstudy.chapters.triton_serving import statements as S
from llmstudy.publishing.tables import Col, table


def show(built) -> None:
    """Display a built table and, under it, its provenance line."""
    from IPython.display import display

    from llmstudy.core.book import provenance

    if built is not None:
        display(built[0])
        provenance(A.EXPERIMENT, built[1])


def same_tool(points):
    st = S.same_tool(points)
    if st.empty:
        return None
    return table(st, [Col("concurrency", "Requests in flight", kind="int"),
                      Col("output_token_throughput_triton", "Triton (tokens/s)", kind="int"),
                      Col("output_token_throughput_vllm", "vLLM server (tokens/s)", kind="int"),
                      Col("ratio", "Triton / vLLM", decimals=2),
                      Col("time_to_first_token_avg_triton", "Triton TTFT (ms)", decimals=1),
                      Col("time_to_first_token_avg_vllm", "vLLM TTFT (ms)", decimals=1),
                      Col("inter_token_latency_avg_triton", "Triton ITL (ms)", decimals=2),
                      Col("inter_token_latency_avg_vllm", "vLLM ITL (ms)", decimals=2)],
                 caption="Both servers measured by genai-perf, streaming, 512 in / 256 out, ignore_eos, base model"), points.run_id.unique()


def lora_agreement(root=None):
    r = A.lora_record(root)
    if r is None:
        return None
    ag = A.lora_agreement(r.table("answers").assign(run_id=r.run_id))
    w = ag.pivot_table(index="adapter", columns="source", values="equal", aggfunc="first").reset_index()
    w["prompts"] = ag.groupby("adapter").prompts.first().values
    cols = [Col("adapter", "Adapter"), Col("prompts", "Prompts", kind="int")]
    cols += [Col(s, f"{A.SOURCE_LABEL[s]}: equal to peft", kind="int") for s in A.SERVED if s in w]
    return table(w, cols, caption="Greedy answers in bf16 (32 tokens), exact string equality with peft's in bf16"), [r.run_id]


def divergences(root=None):
    dv = A.divergences(root)
    if dv.empty:
        return None
    return table(dv, [Col("adapter", "Adapter"), Col("prompt_id", "Prompt", kind="int"), Col("source", "Served by"),
                      Col("diverge_at", "Leaves peft at token", kind="int"), Col("margin_at", "peft's margin there (bf16)", decimals=3),
                      Col("margin_fp32_at", "Same, float32", decimals=3), Col("median_margin", "Answer's median margin", decimals=2),
                      Col("near_tie", "Near-tie")],
                 caption="Where each served answer leaves peft's, and how close peft's two best tokens were there (logits)"), dv.run_id.unique()


def adapter_sweep(points):
    sw = A.adapter_sweep(points)
    if sw.empty:
        return None
    return table(sw.assign(server=sw.server.map(A.SERVER_LABEL)),
                 [Col("server", "Server"), Col("adapters", "Distinct adapters", kind="int"), Col("output_token_throughput", "Output (tokens/s)", kind="int"),
                  Col("relative_to_base", "vs no adapter", decimals=2), Col("ttft_p50", "TTFT p50 (ms)", kind="int"),
                  Col("itl_avg", "ITL mean (ms)", decimals=2), Col("itl_relative_to_base", "ITL vs no adapter", decimals=2)],
                 caption="LoRA-enabled servers, 16 requests in flight, 512 in / 256 out, streaming"), points[points.adapters > 0].run_id.unique()


def gpu_while_serving(points):
    gw = A.gpu_while_serving(points)
    # each server under its own client (genai-perf's windows include its start-up, see the text)
    gw = gw[~gw.lora_enabled.astype(bool) & gw.tool.isin(["llmstudy-client", "vllm-bench"])] if len(gw) else gw
    if gw.empty:
        return None
    return table(gw.assign(server=gw.server.map(A.SERVER_LABEL), tool=gw.tool.map(A.TOOL_LABEL)),
                 [Col("server", "Server"), Col("tool", "Measured by"), Col("concurrency", "In flight", kind="int"),
                  Col("gpu_util_pct_mean", "GPU busy, mean (%)", kind="int"), Col("gpu_power_w_mean", "Power, mean (W)", kind="int"),
                  Col("gpu_power_w_max", "Power, max (W)", kind="int"), Col("output_token_throughput", "Output (tokens/s)", kind="int")],
                 caption="NVML every 0.25 s over each streaming point, base model, each server driven by its own client"), gw.run_id.unique()


def tool_comparison(points):
    tc = A.tool_comparison(points)
    if tc.empty:
        return None
    return table(tc, [Col("server", "Server"), Col("concurrency", "In flight", kind="int"), Col("reference_tool", "Compared with"),
                      Col("ttft_genai_perf", "genai-perf TTFT (ms)", decimals=1), Col("ttft_reference", "Other tool TTFT (ms)", decimals=1),
                      Col("itl_ratio", "ITL ratio", decimals=2), Col("throughput_ratio", "Throughput ratio", decimals=3)],
                 caption="Ratios are genai-perf / the other tool, same server and point"), points.run_id.unique()


def outcomes(root=None):
    out = A.outcomes(root)
    if out.empty:
        return None
    return table(out.assign(error=out.error.astype(str).str.slice(0, 160)), [Col("run_id", "Record", kind="code"), Col("outcome", "Outcome"), Col("error", "Why")],
                 caption="Points and servers without metrics", collapsed=True), out.run_id.unique()


def triton_own_metrics(model=None):
    tm = A.triton_own_metrics(model=model)
    if tm.empty:
        return None
    order = {"ensemble": 0, "preprocessing": 1, "engine": 2, "postprocessing": 3}
    tm = tm.sort_values("model", key=lambda s: s.map(order).fillna(9))
    return table(tm, [Col("model", "Triton model"), Col("requests", "Requests", kind="int"),
                      Col("request_ms", "Per request (ms)", decimals=2), Col("queue_ms", "Queued (ms)", decimals=2),
                      Col("compute_infer_ms", "Computing (ms)", decimals=2)],
                 caption="Triton's own counters over the base-model server's whole run (all points, warm-ups included); "
                         "postprocessing runs once per streamed response; the engine step only schedules (its tokens leave later)"), tm.run_id.unique()
