"""Every sentence and number the chapter glues into its text, computed from the records (no notebook, no papermill).

:func:`statements` returns ``{glue key: text}``; the notebook glues them in one loop. A model without a run record
of its own gets :func:`llmstudy.core.book.not_measured` with the command that measures it, never another model's
numbers: every measured sentence names the model and the run it came from.
"""

from __future__ import annotations

import pandas as pd

from llmstudy.core import models as M
from llmstudy.core.book import not_measured
from llmstudy.training import memory as mm

from .analysis import ARTICLE_STEPS, loop_table, memory_vs_prediction, micro_batch_times, views
from .config import ARTICLE, ARTICLE_SETUP, HBM_TBPS, PEAK_BF16_FLOPS, VARIANTS
from .data import dataset_stats, heldout_overlap, split_rows

DATASET_KEYS = ("ds_rows", "ds_train", "ds_eval", "ds_commas", "ds_chars", "ds_overlap")
TOKEN_KEYS = ("tok_mean", "tok_max", "tok_step")
SAMPLES_PER_STEP = 32  # both recipes: 32 samples per optimizer step


def speed_command(model: str) -> str:
    """The command that measures memory and speed of ``model`` (the recorded 7B runs: 6 optimizer steps)."""
    return f"llmstudy lora-vs-qlora run {model} --steps 6 --variants lora qlora lora-fast qlora-fast"


def quality_command(model: str) -> str:
    """The command that trains every variant of ``model`` for all epochs, with evaluation and answers."""
    return f"llmstudy lora-vs-qlora run {model}"


def _title(model: str) -> str:
    try:
        return M.title(model)
    except M.UnknownModelError:
        return str(model)


def run_problem(model: str) -> str | None:
    """Why run mode cannot train ``model`` (None when it can): a random-weight architecture is fed the Llama-2
    tokenizer, so its vocabulary must be Llama-2's 32,000 tokens; a pretrained one needs its ``weights.json``."""
    from .weights import weights_info

    try:
        if weights_info(model) is None:
            vocab = M.text_config(M.load_config(model)).vocab_size
            if vocab != 32000:
                return (f"run mode trains an architecture without weights.json with random weights through the Llama-2 tokenizer "
                        f"(32,000 tokens), and {model} has {vocab:,}: add data/models/{model}/weights.json (pretrained weights and their tokenizer)")
    except (M.UnknownModelError, OSError, ValueError) as e:
        return str(e)
    return None


def missing_sentence(model: str, command: str) -> str:
    """The sentence in place of a measurement of ``model``: the command that measures it, or why none can yet."""
    why = run_problem(model)
    return not_measured(_title(model), command) if why is None else f"not measured for {_title(model)} yet, and this chapter cannot measure it as it stands: {why}"


def dataset_statements(rows: list[dict] | None) -> dict[str, str]:
    """Size and voice of the dataset (``n/a`` each when it could not be read)."""
    if not rows:
        return dict.fromkeys(DATASET_KEYS, "n/a")
    train, held = split_rows(rows)
    st = dataset_stats(rows)
    return {
        "ds_rows": f"{st['rows']:,}", "ds_train": f"{len(train):,}", "ds_eval": f"{len(held):,}",
        "ds_commas": f"{st['commas_per_sentence']:.1f}", "ds_chars": f"{st['output_chars_mean']:.0f}",
        "ds_overlap": str(len(heldout_overlap(rows))),
    }


def token_statements(checked: dict | None) -> dict[str, str]:
    """Tokens per row (:func:`check_lengths`' counts) and per optimizer step of the article's recipe."""
    if not checked:
        return dict.fromkeys(TOKEN_KEYS, "n/a")
    return {"tok_mean": f"{checked['mean_total_tokens']:.0f}", "tok_max": f"{checked['max_total_tokens']}",
            "tok_step": f"{SAMPLES_PER_STEP * checked['mean_total_tokens']:,.0f}"}


def mask_statement(mask: pd.DataFrame | None) -> dict[str, str]:
    """How many tokens of the example row the loss sees (:func:`label_mask_example`)."""
    return {"mask_n": f"{int(mask.in_loss.sum())} of {len(mask)}" if mask is not None and len(mask) else "n/a"}


def memory_statements(speed: pd.DataFrame, speed_model: str) -> dict[str, str]:
    """The memory model against the measured peaks of the memory/speed architecture."""
    if not len(speed):
        missing = missing_sentence(speed_model, speed_command(speed_model))
        return {"max_err_7b": f"n/a ({missing})", "mem_verdict": f"No run record of {speed_model} yet: the predictions above are untested here; {missing}."}
    mem = memory_vs_prediction(speed)
    measured = mem[mem.error_pct.notna()]
    if not len(measured):
        return {"max_err_7b": "n/a (no GPU record yet)",
                "mem_verdict": f"No GPU run record of {speed_model} yet: the predictions above are untested here."}
    ctx = (measured.nvml_peak_process_GiB - measured.peak_reserved_GiB).median()
    worst = measured.error_pct.abs().max()
    return {"max_err_7b": f"{worst:.1f}",
            "mem_verdict": f"The {len(measured)} measured peaks land within {worst:.1f}% of the memory model "
                           f"(runs {', '.join(sorted(measured.run_id.unique()))}); NVML's view of the process is {ctx:.2f} GiB above the allocator's reserve (median)."}


def quality_statements(qual: pd.DataFrame, history: pd.DataFrame, model: str, memory_records: pd.DataFrame | None = None) -> dict[str, str]:
    """Held-out loss per variant, how the article-recipe runs went, and the memory model on the small model."""
    if not (len(qual) and qual.eval_loss.notna().any()):
        return {"quality_verdict": f"No full-epoch run record of {model} yet: {missing_sentence(model, quality_command(model))}.",
                "small_article_note": "", "small_mem_note": "no measured peak", "small_mem_at_run": "none recorded", "small_mem_open": "", "memory_chapter_heads": ""}
    out = {}
    last = qual[qual.eval_loss.notna()].groupby("variant").last()
    parts = [f"{v} {last.loc[v, 'eval_loss']:.3f} (perplexity {last.loc[v, 'eval_perplexity']:.1f})" for v in VARIANTS if v in last.index]
    out["quality_verdict"] = "Held-out loss per answer token: " + "; ".join(parts) + "."
    art = qual[qual.recipe == "article"]
    done, cut = art[art.outcome == "ok"], art[art.outcome != "ok"]
    notes = []
    for run_id, g in done.groupby("run_id"):
        hs = history[(history.run_id == run_id) & history.variant.isin(g.variant)]
        n_calls = int(hs.call.max()) if "call" in hs and hs.call.notna().any() else 1
        shared = g.concurrent_with.notna().any() if "concurrent_with" in g else False
        notes.append(f"The article-recipe runs ({', '.join(g.variant)}) trained all {int(g.steps_run.max())} steps in {run_id}"
                     + (", side by side on one GPU" if shared else "")
                     + (f", in {n_calls} parts, each resumed from the Trainer checkpoint (adapter, optimizer, scheduler and RNG state)" if n_calls > 1 else "")
                     + ": final eval loss " + ", ".join(f"{r.variant} {r.eval_loss:.3f}" for r in g.itertuples()) + ".")
    for r in cut.itertuples():
        notes.append(f"An earlier article-recipe {r.variant} run ({r.run_id}), which had the GPU alone, stopped at its time limit ({r.outcome}) after "
                     f"{int(r.steps_run)} of {int(3 * r.steps_per_epoch)} steps at {r.median_step_s:.1f} s per step"
                     + ("; the comparison of speed below takes its step time from it." if r.variant in set(done.variant) else
                        ": LoRA is compared with QLoRA on quality through the fast-recipe runs, which finish all three epochs on the same batches."))
    out["small_article_note"] = " ".join(notes)
    mp = qual[qual.predicted_peak_GiB.notna() & qual.peak_allocated_GiB.notna()]
    out["small_mem_note"] = "; ".join(f"{r.variant} ({r.run_id}): {r.peak_allocated_GiB:.2f} GiB measured against {r.predicted_peak_GiB:.2f} GiB predicted "
                                      f"({100 * (r.predicted_peak_GiB - r.peak_allocated_GiB) / r.peak_allocated_GiB:+.1f}%)" for r in mp.itertuples()) or "no measured peak"
    old = mp[mp.predicted_at_run_GiB.notna()] if "predicted_at_run_GiB" in mp else mp.iloc[0:0]
    out["small_mem_at_run"] = "; ".join(f"{r.variant} {r.predicted_at_run_GiB:.2f} GiB" for r in old.itertuples()) or "none recorded"
    if memory_records is None:
        from llmstudy.core.records import results

        memory_records = results("memory_accounting")
    heads = mm.loss_head_errors(memory_records)
    out["memory_chapter_heads"] = (f"its largest error over {int(heads.loc['fused', 'rows'])} recorded peaks is {heads.loc['fused', 'max_abs_error_pct']:.1f}% with the fused head, "
                                   f"{heads.loc['full', 'max_abs_error_pct']:.1f}% with full logits ({heads.loc['full', 'worst']})") if heads.loc["fused", "rows"] else "it has no recorded peak"
    err = 100 * (mp.predicted_peak_GiB - mp.peak_allocated_GiB) / mp.peak_allocated_GiB
    bad = mp[err.abs() > 10]
    out["small_mem_open"] = ("Still outside 10%: " + "; ".join(f"{r.variant} ({r.run_id}), {r.peak_allocated_GiB - r.predicted_peak_GiB:+.2f} GiB more than predicted" for r in bad.itertuples())
                             + ". We have not found the term it misses.") if len(bad) else "Every measured peak of this model is now within 10%."
    return out


def _pct(x: float) -> str:
    return f"{x:.1f}%" if x >= 1 else f"{x:.2f}%"


def fast_line(r) -> str:
    """One model and method of the fast-recipe comparison, as a clause."""
    extra = []
    if pd.notna(r["article MFU %"]) and pd.notna(r["fast MFU %"]):
        extra.append(f"MFU {_pct(r['article MFU %'])} -> {_pct(r['fast MFU %'])}")
    if pd.notna(r["eval loss diff %"]):
        extra.append(f"final eval loss {r['eval loss diff %']:+.2f}%")
    elif pd.notna(r["max train loss diff % (same steps)"]):
        extra.append(f"training loss per step within {r['max train loss diff % (same steps)']:.2f}%")
    return f"{r['speedup per epoch']:.1f}x faster for {r.model} {r.method}" + (f" ({', '.join(extra)})" if extra else "")


def fast_statements(fast: pd.DataFrame, speed_model: str) -> dict[str, str]:
    """The fast recipe against the article's: every model with both recipes, each named."""
    if not len(fast):
        return {"fast_verdict": "No run record with both recipes yet.", "fast_goal": "",
                "speedup_7b_lora": f"n/a ({missing_sentence(speed_model, speed_command(speed_model))})"}
    q = fast[fast["eval loss diff %"].notna()]
    met = (q["speedup per epoch"] >= 10) & (q["eval loss diff %"].abs() <= 2)
    goal = ("The goal of at least 10x per epoch at the same final eval loss (within 2%), checkable only with real weights: "
            + "; ".join(f"{r.model} {r.method} {'met' if ok else 'not met'} ({r['speedup per epoch']:.1f}x, {r['eval loss diff %']:+.2f}%)"
                        for ok, (_, r) in zip(met, q.iterrows())) + ".") if len(q) else "No model has a final eval loss for both recipes yet."
    key = fast[(fast.model == speed_model) & (fast.method == "lora")]
    return {"fast_verdict": "Per epoch the fast recipe is " + "; ".join(fast_line(r) for _, r in fast.iterrows()) + ".", "fast_goal": goal,
            "speedup_7b_lora": f"{key['speedup per epoch'].iloc[0]:.0f}x" if len(key) else f"n/a ({missing_sentence(speed_model, speed_command(speed_model))})"}


def answer_statement(qual: pd.DataFrame, speed: pd.DataFrame, model: str, speed_model: str) -> str:
    """The page's answer: the held-out loss of LoRA against QLoRA with the article's recipe on the real model first,
    then memory and step time of the 7B architecture against the article's figures. Each number names its model;
    a model without records gets the sentence that says so."""
    parts = []
    art_q = qual[(qual.recipe == "article") & (qual.outcome == "ok") & qual.eval_loss.notna()] if len(qual) else qual
    base = qual[(qual.variant == "base") & qual.eval_loss.notna()] if len(qual) else qual
    if len(art_q) and {"lora", "qlora"} <= set(art_q.variant):
        lo, ql = (art_q[art_q.variant == v].iloc[-1] for v in ("lora", "qlora"))
        parts.append(f"Quality, on a real pretrained model, {_title(model)}: after three epochs of the article's recipe QLoRA's held-out loss per "
                     f"answer token is {ql.eval_loss:.3f} against LoRA's {lo.eval_loss:.3f} ({100 * (ql.eval_loss / lo.eval_loss - 1):+.1f}%, run {lo.run_id}"
                     + (f"; the untrained model {base.eval_loss.iloc[-1]:.3f}, run {base.run_id.iloc[-1]}" if len(base) else "") + "): a small, measurable cost "
                     "of 4-bit weights that the article's eight sampled answers could not show.")
    else:
        parts.append(f"Quality: {missing_sentence(model, quality_command(model))}.")
    ok = speed[(speed.outcome == "ok") & (speed.recipe == "article")] if len(speed) else speed
    if len(ok) and {"lora", "qlora"} <= set(ok.variant):
        lo, ql = (ok[ok.variant == v].iloc[-1] for v in ("lora", "qlora"))
        parts.append(f"Memory, on the {speed_model} architecture ({lo.gpu.replace('NVIDIA ', '')}, run {lo.run_id}): QLoRA peaks at "
                     f"{ql.peak_allocated_GiB:.2f} GiB of allocator memory against LoRA's {lo.peak_allocated_GiB:.2f} GiB "
                     f"({ql.nvml_peak_process_GiB * 2**30 / 1e9:.1f} against {lo.nvml_peak_process_GiB * 2**30 / 1e9:.1f} GB in nvidia-smi; the article read "
                     f"{ARTICLE['qlora']['nvidia_smi_MB'][0] / 1000:.1f} against {ARTICLE['lora']['nvidia_smi_MB'][0] / 1000:.1f}–"
                     f"{ARTICLE['lora']['nvidia_smi_MB'][1] / 1000:.1f} GB), and its optimizer step takes {ql.median_step_s / lo.median_step_s:.2f}× "
                     f"as long (the article: {ARTICLE['qlora']['real_s'] / ARTICLE['lora']['real_s']:.2f}×).")
    else:
        parts.append(f"Memory and speed: {missing_sentence(speed_model, speed_command(speed_model))}.")
    return " ".join(parts)


def loop_statement(answers: pd.DataFrame, model: str) -> str:
    """How many of the eight answers per variant fall into a loop, and the longest loops."""
    if not len(answers):
        return f"No answers of {_title(model)} are recorded."
    lt = loop_table(answers)
    counts = "; ".join(f"{r.variant} {r.looping} of {r.answers}" for r in lt.itertuples())
    examples = [f"{v} {loop}" for v, loop in zip(lt.variant, lt["longest loop"]) if isinstance(loop, str)][:2]
    return (f"{_title(model)} is too small for these prompts: greedy decoding falls into a loop (a stretch of text repeated five times or "
            f"more in a row) in {counts} answers" + (", for example " + " and ".join(examples) if examples else "") + ".")


def timing_statements(speed: pd.DataFrame, memory_records: pd.DataFrame | None, speed_model: str) -> dict[str, str]:
    """Why the 7B LoRA run projects longer on an H100 SXM than the article's run took on a slower H100 PCIe: the
    arithmetic, from the records (``speed``: the 7B architecture's results; ``memory_records``: the memory chapter's)."""
    ok = speed[(speed.outcome == "ok") & (speed.variant == "lora")] if len(speed) else speed
    if not len(ok):
        return {"timing_why": f"The projection needs a record: {missing_sentence(speed_model, speed_command(speed_model))}."}
    mb = micro_batch_times(speed, memory_records)
    lo = ok.iloc[-1]
    ours_mb = lo.median_step_s / 32
    art_real = ARTICLE["lora"]["real_s"]
    art_mb = art_real / (ARTICLE_STEPS * 32)
    text = (f"Our {speed_model} LoRA step takes {lo.median_step_s:.2f} s (run {lo.run_id}, {lo.gpu.replace('NVIDIA ', '')}), so the article's "
            f"{ARTICLE_STEPS} steps project to {lo.median_step_s:.2f} × {ARTICLE_STEPS} = {lo.median_step_s * ARTICLE_STEPS / 60:.1f} min, while the "
            f"article's whole run, on an H100 PCIe with "
            f"{100 * (1 - PEAK_BF16_FLOPS['H100 PCIe'] / PEAK_BF16_FLOPS['H100 SXM']):.0f}% less compute and "
            f"{100 * (1 - HBM_TBPS['H100 PCIe'] / HBM_TBPS['H100 SXM']):.0f}% less memory bandwidth than the H100 SXM, took {art_real / 60:.1f} min. Per micro-batch (one "
            f"sample) that is {ours_mb:.3f} s against at most {art_real:,.0f} s / ({ARTICLE_STEPS} × 32) = {art_mb:.3f} s.")
    mem = mb[mb.source.str.contains("synthetic") & (mb.method == "lora")]
    h100 = mem[mem.gpu.str.contains("H100")].sort_values("tokens")
    if len(h100) >= 2 and h100.tokens.iloc[-1] > h100.tokens.iloc[0]:
        a, b = h100.iloc[0], h100.iloc[-1]
        text += (f" The data do not explain it: our rows average {lo.tokens_per_step / 32:.0f} tokens, but the memory chapter's H100 records take "
                 f"{a.s_per_micro_batch:.3f} s per micro-batch at {a.tokens:.0f} tokens ({a.run_id}) and {b.s_per_micro_batch:.3f} s at "
                 f"{b.tokens:,.0f} tokens ({b.run_id}): {b.tokens / a.tokens:.1f}× the tokens, {b.s_per_micro_batch / a.s_per_micro_batch:.2f}× the time.")
    h200 = mem[mem.gpu.str.contains("H200") & (mem.tokens == 100)]
    h100_100 = h100[h100.tokens == 100]
    if len(h200) and len(h100_100):
        text += (f" Nor does the GPU's arithmetic: the same 100-token step on the lent H200, whose dense BF16 peak equals the H100 SXM's, takes "
                 f"{h200.s_per_micro_batch.iloc[0]:.3f} s per micro-batch ({h200.run_id.iloc[0]}) against {h100_100.s_per_micro_batch.iloc[0]:.3f} s.")
    qo = speed[(speed.outcome == "ok") & (speed.variant == "qlora")]
    ratio = f"; QLoRA over LoRA is {qo.median_step_s.iloc[-1] / lo.median_step_s:.2f}× here and {ARTICLE['qlora']['real_s'] / art_real:.2f}× in the article" if len(qo) else ""
    text += (f" At one sample per micro-batch the step is bound by the host, which launches thousands of small kernels from Python: "
             f"the article's `time` shows {ARTICLE['lora']['user_s'] / 60:.1f} min of CPU time in {art_real / 60:.1f} min of wall time for LoRA, "
             f"on an {ARTICLE_SETUP['cpu']} with {ARTICLE_SETUP['software']}; ours ran on virtual machines with 16 vCPUs and newer releases"
             f"{ratio}. The same work, a host about {ours_mb / art_mb:.2f}× slower per micro-batch: the projection is a measured number, "
             "not adjusted, and the fast recipe below removes most of this overhead.")
    return {"timing_why": text}


def statements(records: dict[str, pd.DataFrame], model: str, speed_model: str, rows: list[dict] | None = None, checked: dict | None = None,
               mask: pd.DataFrame | None = None, memory_records: pd.DataFrame | None = None) -> dict[str, str]:
    """Every glued value of the chapter (except the claims, which ``claims.glue_claims`` glues).

    ``records``: :func:`load_tables` (results, history, ...); ``model``: the quality model; ``speed_model``: the
    memory/speed architecture; ``rows``: the dataset; ``checked``: :func:`check_lengths` of its Llama-2 token
    lengths; ``mask``: :func:`label_mask_example`; ``memory_records``: the memory chapter's results.
    """
    v = views(records, model, speed_model)
    if memory_records is None:
        from llmstudy.core.records import results

        memory_records = results("memory_accounting")
    return {"answer": answer_statement(v["qual"], v["speed"], model, speed_model), "loops": loop_statement(v["answers"], model),
            **timing_statements(v["speed"], memory_records, speed_model), **dataset_statements(rows), **token_statements(checked), **mask_statement(mask), **memory_statements(v["speed"], speed_model),
            **quality_statements(v["qual"], records["history"], model, memory_records), **fast_statements(v["fast"], speed_model)}


NO_RECORD = "no run record yet"


def no_record_line(model: str, what: str) -> str:
    """What a table's place says when ``model`` has no record of that kind: the command that measures it."""
    cmd = quality_command(model) if what != "speed" else speed_command(model)
    suffix = {"speed": "", "quality": " with full-epoch training", "answers": " with answers"}[what]
    return f"{model}: {NO_RECORD}{suffix} in data/runs/lora_vs_qlora; {missing_sentence(model, cmd)}."
