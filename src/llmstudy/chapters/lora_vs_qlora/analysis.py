"""What the chapter shows: the records' tables, speed and MFU, memory against the model, the fast recipe, answers."""

from __future__ import annotations

import pandas as pd

from llmstudy.training import memory as mm

from .config import ARTICLE, EVAL_PROMPTS, EXPERIMENT, VARIANTS, GiB
from .data import style_metrics
from .plan import peak_flops, train_flops, variant_setup

ARTICLE_STEPS = 111  # the article's chat code loads "checkpoint-111": its final step after 3 epochs (37 per epoch)


def load_tables(root=None) -> dict[str, pd.DataFrame]:
    """Every record's tables (results, history, evals, answers, lengths) concatenated, with run_id and gpu columns."""
    from llmstudy.core.records import results as R

    t = {n: R(EXPERIMENT, n, root) for n in ("results", "history", "evals", "answers", "lengths")}
    t["results"] = current_prediction(t["results"])
    return t


def current_prediction(results: pd.DataFrame) -> pd.DataFrame:
    """The memory model's peak for each measured variant as the model stands now (``predicted_peak_GiB``); the value
    a record stored when it ran stays as ``predicted_at_run_GiB``. A prediction is code, not a measurement: a record
    made before the model learned trl's fused loss head is predicted with the model of today."""
    if results.empty or "predicted_peak_GiB" not in results:
        return results
    df = results.copy()
    df["predicted_at_run_GiB"] = df["predicted_peak_GiB"]
    pred = []
    for _, r in df.iterrows():
        ok = pd.notna(r.get("max_micro_batch_tokens")) and r.get("method") in ("lora", "qlora")
        kbit, lora_r = r.get("kbit_prep"), r.get("lora_r")
        s = variant_setup(r["model"], r["variant"], r["optimizer"], int(r["max_micro_batch_tokens"]), int(lora_r) if pd.notna(lora_r) else 4, True, bool(kbit) if pd.notna(kbit) else True) if ok else None
        pred.append(mm.summarize(s)["peak_bytes"] / GiB if s is not None else None)
    df["predicted_peak_GiB"] = pred
    return df


def add_speed(results: pd.DataFrame) -> pd.DataFrame:
    """Per variant: FLOPs per step, model FLOPs utilisation and projected run times (ours and the article's run)."""
    df = results.copy()
    if df.empty:
        return df
    # both recipes train the same LoRA adapters: a run cut before it reported its count takes its sibling's
    df["trainable_params"] = df.groupby(["model", "method"]).trainable_params.transform(lambda x: x.fillna(x.max()))
    flops, mfu, peaks = [], [], []
    for _, r in df.iterrows():
        pk = peak_flops(str(r.get("gpu", "")))
        timed = r["outcome"] in ("ok", "timeout")  # a run stopped by its deadline still measured its steps
        ok = timed and pd.notna(r.get("tokens_per_step")) and pd.notna(r.get("median_step_s")) and pd.notna(r.get("trainable_params")) and r["method"] != "base"
        f = train_flops(r["model"], r["tokens_per_step"], int(r["trainable_params"]), True) if ok else None
        flops.append(f)
        mfu.append(f / r["median_step_s"] / pk[1] if f and pk else None)
        peaks.append(pk[0] if pk else None)
    df["flops_per_step"] = flops
    df["mfu"] = mfu
    df["peak_name"] = peaks
    df["epoch_s"] = df["epoch_s_measured"].fillna(df["epoch_s_projected"])
    df["our_run_min"] = df["epoch_s"] * 3 / 60
    df["article_run_min_projected"] = df["median_step_s"] * ARTICLE_STEPS / 60
    return df


def memory_vs_prediction(results: pd.DataFrame) -> pd.DataFrame:
    """Measured allocator peak next to the memory model's prediction (error %), and the nvidia-smi view in GB."""
    df = results[results.outcome == "ok"].copy() if len(results) else pd.DataFrame(columns=list(results.columns))
    df["error_pct"] = 100 * (df["predicted_peak_GiB"] - df["peak_allocated_GiB"]) / df["peak_allocated_GiB"]
    df["nvml_process_GB"] = df["nvml_peak_process_GiB"] * GiB / 1e9
    art = {m: ARTICLE[m]["nvidia_smi_MB"] for m in ("lora", "qlora")}
    df["article_nvidia_smi_GB"] = [f"{art[m][0] / 1000:.1f}" + (f"–{art[m][1] / 1000:.1f}" if art[m][1] != art[m][0] else "") if r == "article" and m in art else None for m, r in zip(df.method, df.recipe)] if len(df) else []
    return df


def fast_vs_article(results: pd.DataFrame, history: pd.DataFrame | None = None) -> pd.DataFrame:
    """The fast recipe against the article's, per model and method: speedup per epoch, MFU, peak memory, eval loss.

    With the step history, also the largest relative difference of the training loss over the steps both ran:
    the same 32 samples per step give the same loss up to dropout and rounding (the check that holds for random
    weights, where an eval loss means nothing).
    """
    df = add_speed(results)
    rows = []
    if df.empty:
        return pd.DataFrame()
    # an article-recipe run cut by the call's deadline still measured its step time (it needs >= 3 steps: the first
    # one, with its one-off setup, is not in the median); the fast recipe must have finished
    partial = (df.outcome == "timeout") & (df.recipe == "article") & (df.steps_run >= 3) & df.median_step_s.notna()
    ok = df[(df.outcome == "ok") | partial]
    for (model, method), g in ok.groupby(["model", "method"]):
        a, f = g[g.recipe == "article"], g[(g.recipe == "fast") & (g.outcome == "ok")]
        if a.empty or f.empty:
            continue
        # time from a run that had the GPU alone where one exists (a run sharing it with a partner is slower);
        # quality from a run that finished all its steps
        alone, done = a[a.concurrent_with.isna()], a[(a.outcome == "ok") & a.eval_loss.notna()]
        t = alone.iloc[-1] if len(alone) else a.iloc[-1]
        q = done.iloc[-1] if len(done) else t
        a, f = t, f.iloc[-1]
        loss_diff = 100 * (f.eval_loss - q.eval_loss) / q.eval_loss if pd.notna(q.eval_loss) and pd.notna(f.eval_loss) else None
        step_diff = None
        if history is not None and len(history):
            ha = history[(history.run_id == a.run_id) & (history.variant == a.variant)].set_index("step").loss
            hf = history[(history.run_id == f.run_id) & (history.variant == f.variant)].set_index("step").loss
            both = ha.index.intersection(hf.index)
            step_diff = float((100 * (hf[both] - ha[both]).abs() / ha[both]).max()) if len(both) else None
        runs = dict.fromkeys([a.run_id, q.run_id, f.run_id])  # in order, each once
        rows.append({
            "model": model, "method": method, "runs": " / ".join(runs), "article timing run": a.run_id, "article quality run": q.run_id if pd.notna(q.eval_loss) else None,
            "article outcome": "ok" if a.outcome == "ok" else f"{a.outcome} after {int(a.steps_run)} of {int(a.steps_per_epoch * 3) if pd.notna(a.get('steps_per_epoch')) else '?'} steps",
            # steady state for both: median s/step x steps per epoch (a measured epoch carries the first step's one-off
            # setup, which a complete 3-epoch run spreads over three epochs and a run cut after one epoch does not)
            "article s/epoch": a.epoch_s_projected, "fast s/epoch": f.epoch_s_projected, "speedup per epoch": a.epoch_s_projected / f.epoch_s_projected,
            "article MFU %": 100 * a.mfu if pd.notna(a.mfu) else None, "fast MFU %": 100 * f.mfu if pd.notna(f.mfu) else None,
            "article peak GiB": a.peak_allocated_GiB, "fast peak GiB": f.peak_allocated_GiB,
            "article eval loss": q.eval_loss, "fast eval loss": f.eval_loss, "eval loss diff %": loss_diff, "max train loss diff % (same steps)": step_diff,
            "article timing shared the GPU": pd.notna(a.concurrent_with),
        })
    return pd.DataFrame(rows)


def concurrency_effect(results: pd.DataFrame, history: pd.DataFrame) -> pd.DataFrame:
    """For variants that shared the GPU: median step time while the partner ran, and after it had finished."""
    out = []
    if results.empty or history.empty or "concurrent_with" not in results:
        return pd.DataFrame()
    for _, r in results[results.concurrent_with.notna()].iterrows():
        partners = results[(results.run_id == r.run_id) & results.variant.isin(str(r.concurrent_with).split(","))]
        end = partners.train_ended.max()
        h = history[(history.run_id == r.run_id) & (history.variant == r.variant)]
        both, alone = h[h.wall_end <= end], h[h.wall_start > end]
        out.append({"run_id": r.run_id, "variant": r.variant, "shared with": r.concurrent_with, "steps shared": len(both), "median s/step shared": both.step_seconds.median() if len(both) else None, "steps alone": len(alone), "median s/step alone": alone.step_seconds.median() if len(alone) else None})
    df = pd.DataFrame(out)
    if len(df):
        df["slowdown"] = df["median s/step shared"] / df["median s/step alone"]
    return df


def style_table(answers: pd.DataFrame, rows: list[dict]) -> pd.DataFrame:
    """Answer length and 「、」 per sentence: the dataset's outputs against each variant's greedy answers."""
    parts = [style_metrics(r["output"] for r in rows).assign(source="dataset (all outputs)")]
    if len(answers):
        for (run_id, v), g in answers.groupby(["run_id", "variant"], sort=False):
            parts.append(style_metrics(g.answer).assign(source=f"{v} ({run_id})"))
    df = pd.concat(parts)
    agg = df.groupby("source", sort=False).agg(answers=("chars", "size"), chars_mean=("chars", "mean"), sentences=("sentences", "sum"), commas=("commas", "sum"))
    agg["commas_per_sentence"] = agg["commas"] / agg["sentences"].clip(lower=1)
    return agg.drop(columns=["sentences", "commas"]).reset_index()


def answer_table(answers: pd.DataFrame) -> pd.DataFrame:
    """The article's eight prompts (rows) by variant (columns), greedy answers of the latest record."""
    if answers.empty:
        return pd.DataFrame()
    a = answers[answers.set == "article"]
    latest = a.groupby("variant").run_id.max()
    a = a[[latest[v] == r for v, r in zip(a.variant, a.run_id)]]
    t = a.pivot_table(index="prompt", columns="variant", values="answer", aggfunc="first", sort=False)
    order = [v for v in VARIANTS if v in t.columns]
    return t.reindex(index=[p for p in EVAL_PROMPTS if p in t.index], columns=order)



# --- The chapter's tables -------------------------------------------------------------------------------------------

MEMORY_COLUMNS = ["run_id", "gpu", "variant", "outcome", "steps_run", "max_micro_batch_tokens", "peak_allocated_GiB", "predicted_peak_GiB", "error_pct",
                  "peak_reserved_GiB", "nvml_process_GB", "article_nvidia_smi_GB"]
SPEED_COLUMNS = ["run_id", "gpu", "variant", "steps_run", "median_step_s", "samples_per_s", "tokens_per_s", "epoch_s", "our_run_min", "article_run_min_projected", "mfu"]
QUALITY_COLUMNS = ["run_id", "variant", "outcome", "steps_run", "median_step_s", "first_loss", "last_loss", "eval_loss", "eval_perplexity", "eval_tokens",
                   "peak_allocated_GiB", "predicted_peak_GiB"]


def predictions(model: str, max_tokens: int, mean_tokens: float) -> pd.DataFrame:
    """The memory model for each trained variant: the article's recipe at the longest row, the fast one at 32 mean rows."""
    rows = []
    for v in ("lora", "qlora", "lora-fast", "qlora-fast"):
        tokens = max_tokens if VARIANTS[v][1] == "article" else 32 * mean_tokens
        sm = mm.summarize(variant_setup(model, v, tokens=int(tokens)))
        rows.append({"variant": v, "tokens in the largest micro-batch": int(tokens), **{f"{c} GiB": sm[f"{c}_bytes"] / mm.GiB for c in mm.MEMORY_COMPONENTS},
                     "predicted peak GiB": sm["peak_bytes"] / mm.GiB, "paged GiB": sm["paged_bytes"] / mm.GiB, "not modelled": sm.get("not_modelled") or ""})
    df = pd.DataFrame(rows).set_index("variant")
    return df if df["not modelled"].astype(bool).any() else df.drop(columns="not modelled")  # a blank stays a number, never silently


def speed_table(speed: pd.DataFrame) -> pd.DataFrame:
    """Step time, throughput, projected runs and MFU of the finished runs (MFU in %)."""
    t = speed[speed.outcome == "ok"][SPEED_COLUMNS].copy()
    t["mfu"] = 100 * t["mfu"]
    return t.rename(columns={"mfu": "MFU %", "our_run_min": "3 epochs, our data (min)", "article_run_min_projected": f"{ARTICLE_STEPS} steps, the article's run (min)"})


def model_card(model: str, info: dict | None) -> pd.Series | None:
    """Where a pretrained model's weights come from (``weights.json``), or None for a random-weight architecture."""
    if not info:
        return None
    from llmstudy.core import models as M

    return pd.Series({"model": model, "provenance": info["provenance"], "weights as shipped": info["dequantized_from"], "licence": info["licence"],
                      "packages": ", ".join(info["packages"]), "GGUF sha256": info["sha256"], "tokenizer": f"npm {info['tokenizer']['npm']}@{info['tokenizer']['version']}",
                      "chat format": "Gemma 3 chat template (<start_of_turn>user … <end_of_turn>)", "parameters": f"{int(M.component_counts(model)['total']):,}"}, name="")


def fast_runs(fast: pd.DataFrame) -> list[str]:
    """Every run id the fast-recipe comparison rests on."""
    return [r for s in fast.runs for r in s.split(" / ")]


def views(tables: dict[str, pd.DataFrame], model: str, speed_model: str) -> dict[str, pd.DataFrame]:
    """What the page shows of the records: all results with speed (``res``), the memory/speed model's (``speed``),
    the quality model's (``qual``), the fast-recipe comparison (``fast``) and the quality model's answers."""
    res = add_speed(tables["results"]) if len(tables["results"]) else pd.DataFrame()
    speed = res[res.model == speed_model] if len(res) else res
    qual = res[res.model == model] if len(res) else res
    fast = fast_vs_article(res, tables["history"]) if len(res) else pd.DataFrame()
    ans = tables["answers"]
    ans = ans[ans.run_id.isin(qual.run_id.unique())] if len(ans) and len(qual) else pd.DataFrame()
    return {"res": res, "speed": speed, "qual": qual, "fast": fast, "answers": ans}


def memory_chapter_runs(memory_records: pd.DataFrame) -> list[str]:
    """The memory chapter's records the loss-head comparison rests on (none when it has no measured peak)."""
    heads = mm.loss_head_errors(memory_records)
    return list(memory_records.run_id.unique()) if heads.loc["fused", "rows"] else []


def styled_answers(answers: pd.DataFrame):
    """The answer table, wrapped and captioned with its runs."""
    return (answer_table(answers).style.set_properties(**{"white-space": "pre-wrap", "text-align": "left", "vertical-align": "top"})
            .set_caption("runs: " + ", ".join(sorted(answers.run_id.unique()))))


def qlora_bf16_table(model: str) -> pd.DataFrame:
    """What a QLoRA load leaves in bf16 (bitsandbytes quantizes ``nn.Linear`` only), by kind, with its size."""
    from llmstudy.core import models as M

    s = M.qlora_bf16_weights(model)
    return pd.DataFrame({"parameters kept in bf16": s, "GiB": s * 2 / GiB}).rename_axis(f"{model}: not quantized under QLoRA")


# --- What the small model's answers can show ------------------------------------------------------------------------

LOOP_MIN_REPEATS = 5  # a stretch of 1-40 characters repeated at least this many times in a row is a loop


def loop_of(answer: str) -> tuple[str, int] | None:
    """The longest back-to-back repetition in ``answer`` as (unit, times), or None when nothing repeats
    :data:`LOOP_MIN_REPEATS` times in a row (the small model's degenerate output, such as 「この、」 eighty times)."""
    import re

    best = None
    for m in re.finditer(r"(.{1,40}?)\1{" + str(LOOP_MIN_REPEATS - 1) + ",}", str(answer), flags=re.S):
        unit = m.group(1)
        times = len(m.group(0)) // len(unit)
        if best is None or len(m.group(0)) > len(best[0]) * best[1]:
            best = (unit, times)
    return best


def loop_table(answers: pd.DataFrame) -> pd.DataFrame:
    """Per variant (latest record): how many of the article's eight answers fall into a loop, and the longest loop."""
    t = answer_table(answers)
    rows = []
    for v in t.columns:
        loops = [loop_of(a) for a in t[v].dropna()]
        found = [x for x in loops if x]
        longest = max(found, key=lambda x: len(x[0]) * x[1]) if found else None
        rows.append({"variant": v, "answers": len(loops), "looping": len(found),
                     "longest loop": f"「{longest[0].strip()}」 × {longest[1]}" if longest else None})
    return pd.DataFrame(rows)


def truncated_answers(answers: pd.DataFrame, chars: int = 120) -> pd.DataFrame:
    """:func:`answer_table` with every answer cut to its first ``chars`` characters (line breaks shown as " ⏎ ")."""
    t = answer_table(answers)

    def cut(a):
        if not isinstance(a, str):
            return a
        a = a.replace("\n", " ⏎ ")
        return a if len(a) <= chars else a[:chars] + "…"

    return t.apply(lambda col: col.map(cut)).reset_index()


# --- Why the article's recipe takes as long as it does: the time of one micro-batch ------------------------------------


def micro_batch_times(speed: pd.DataFrame, memory_records: pd.DataFrame) -> pd.DataFrame:
    """Seconds per micro-batch (one sample at micro-batch 1) of LoRA with gradient checkpointing: this chapter's 7B
    run, the memory chapter's records at 100 and 1,024 tokens, and the article's upper bound (its ``time`` over 111
    steps of 32 micro-batches). The memory chapter's rows show that the time does not grow with the tokens."""
    rows = []
    ok = speed[(speed.outcome == "ok") & (speed.recipe == "article")] if len(speed) else speed
    for r in ok.itertuples():
        rows.append({"source": f"{r.run_id} ({r.variant}, this chapter's data)", "gpu": r.gpu, "method": r.method, "tokens": r.tokens_per_step / 32,
                     "s_per_step": r.median_step_s, "micro_batches": 32, "s_per_micro_batch": r.median_step_s / 32, "run_id": r.run_id})
    if memory_records is not None and len(memory_records):
        m = memory_records[(memory_records.outcome == "ok") & memory_records.method.isin(["lora", "qlora"]) & (memory_records.micro_batch == 1)
                           & memory_records.grad_ckpt.astype(bool) & memory_records.median_step_s.notna() & (memory_records.model == "llama-2-7b")]
        for r in m.itertuples():
            rows.append({"source": f"{r.run_id} ({r.method}, synthetic {int(r.seq_len)}-token samples)", "gpu": r.gpu, "method": r.method,
                         "tokens": float(r.seq_len), "s_per_step": r.median_step_s, "micro_batches": int(r.grad_accum),
                         "s_per_micro_batch": r.median_step_s / r.grad_accum, "run_id": r.run_id})
    for method in ("lora", "qlora"):
        real = ARTICLE[method]["real_s"]
        rows.append({"source": f"the article ({method}, `time` of the whole run)", "gpu": ARTICLE["gpu"], "method": method, "tokens": float("nan"),
                     "s_per_step": real / ARTICLE_STEPS, "micro_batches": 32, "s_per_micro_batch": real / (ARTICLE_STEPS * 32), "run_id": None})
    return pd.DataFrame(rows)


# --- The page's tables, formatted (llmstudy.publishing.tables) -------------------------------------------------------


def _t():
    from llmstudy.publishing.tables import Col, table

    return Col, table


def _runs(df: pd.DataFrame) -> str:
    return ", ".join(sorted({str(r) for r in df.run_id.dropna().unique()})) if len(df) and "run_id" in df else "none"


def dataset_report(rows: list[dict], lengths: pd.DataFrame | None):
    """The dataset in one table: its size and voice, and Llama-2 tokens per row (mean, median, max)."""
    from .data import dataset_summary

    Col, table = _t()
    s = dataset_summary(rows)["value"]
    out = [{"what": str(k).replace("_mean", " (mean)").replace("_max", " (max)").replace("_", " "),
            "value": int(v) if isinstance(v, float) and v.is_integer() else v} for k, v in s.items()]
    if lengths is not None and len(lengths):
        for c, name in (("prompt_tokens", "prompt"), ("completion_tokens", "completion"), ("total_tokens", "row")):
            out.append({"what": f"Llama-2 tokens per {name}: mean / median / max",
                        "value": f"{lengths[c].mean():.0f} / {lengths[c].median():.0f} / {lengths[c].max():,.0f}"})
    return table(out, [Col("what", "Dataset", kind="text"), Col("value", "Value", decimals=1, align="right")], caption="", collapsed=False)


def examples_report(rows: list[dict], n: int = 3, chars: int = 120):
    """The first ``n`` rows, each field cut to ``chars`` characters, collapsed."""
    Col, table = _t()
    cut = [{k: (v if len(v) <= chars else v[:chars] + "…") for k, v in r.items()} for r in rows[:n]]
    return table(cut, [Col("instruction", "Instruction", kind="text"), Col("output", "Output", kind="text")], collapsed=True,
                 summary=f"The first {n} rows of the dataset")


def predictions_report(pred: pd.DataFrame):
    """:func:`predictions` formatted (GiB); a term the memory model does not cover reads "not modelled"."""
    Col, table = _t()
    df = pred.reset_index()
    cols = [Col("variant", "Variant", kind="text"), Col("tokens in the largest micro-batch", "Tokens in the largest micro-batch", kind="int")]
    cols += [Col(f"{c} GiB", f"{c} (GiB)", kind="float", missing="not modelled") for c in mm.MEMORY_COMPONENTS]
    cols.append(Col("predicted peak GiB", "Predicted peak (GiB)", kind="float", missing="not modelled"))
    paged = df["paged GiB"].max()
    return table(df, cols, caption="The memory model's prediction per variant, allocator memory"
                 + (f" (the paged optimizer's managed memory, at most {paged:.2f} GiB, is outside it)" if paged >= 0.005 else ""), collapsed=False)


def qlora_bf16_report(model: str):
    """:func:`qlora_bf16_table` formatted."""
    Col, table = _t()
    df = qlora_bf16_table(model).reset_index()
    df.columns = ["kind", "params", "GiB"]
    return table(df, [Col("kind", "Kept in bf16 under QLoRA", kind="text"), Col("params", "Parameters", kind="int"), Col("GiB", "GiB", kind="float")],
                 caption=f"{model}: what bitsandbytes does not quantize (it replaces nn.Linear modules only)", collapsed=False)


def memory_report(speed: pd.DataFrame):
    """Measured against predicted memory per variant of the 7B architecture, with the article's nvidia-smi figure."""
    Col, table = _t()
    m = memory_vs_prediction(speed)
    return table(m, [Col("variant", "Variant", kind="text"), Col("max_micro_batch_tokens", "Tokens in the largest micro-batch", kind="int"),
                     Col("peak_allocated_GiB", "Peak allocated (GiB)", kind="float"), Col("predicted_peak_GiB", "Predicted (GiB)", kind="float"),
                     Col("error_pct", "Error (%)", kind="float", decimals=1, signed=True), Col("peak_reserved_GiB", "Reserved (GiB)", kind="float"),
                     Col("nvml_process_GB", "nvidia-smi (GB)", kind="float", decimals=1), Col("article_nvidia_smi_GB", "Article nvidia-smi (GB)", kind="text")],
                 caption=f"Runs {_runs(m)} ({', '.join(sorted(m.gpu.unique())) if len(m) else ''}); predicted = the memory model", collapsed=False)


def speed_report(speed: pd.DataFrame):
    """Step time, throughput, projected runs and MFU per variant of the 7B architecture."""
    Col, table = _t()
    t = speed_table(speed).rename(columns={f"{ARTICLE_STEPS} steps, the article's run (min)": "article_steps_min", "3 epochs, our data (min)": "ours_min"})
    t["article_min"] = [ARTICLE[v]["real_s"] / 60 if v in ("lora", "qlora") else None for v in t.variant]
    return table(t, [Col("variant", "Variant", kind="text"), Col("median_step_s", "Step (s, median)", kind="float"),
                     Col("tokens_per_s", "Tokens / s", kind="int"), Col("ours_min", "3 epochs of our data (min)", kind="float", decimals=1),
                     Col("article_steps_min", f"{ARTICLE_STEPS} steps (min)", kind="float", decimals=1),
                     Col("article_min", "Article, measured (min)", kind="float", decimals=1), Col("MFU %", "MFU (%)", kind="float", decimals=1)],
                 caption=f"Runs {_runs(t)} ({', '.join(sorted(t.gpu.unique())) if len(t) else ''})", collapsed=False)


def micro_batch_report(mb: pd.DataFrame):
    """:func:`micro_batch_times` formatted: the evidence for the step time."""
    Col, table = _t()
    df = mb.assign(gpu=mb.gpu.str.replace("NVIDIA ", "", regex=False))
    return table(df, [Col("source", "Source", kind="text"), Col("gpu", "GPU", kind="text"), Col("tokens", "Tokens / sample", kind="int"),
                      Col("s_per_step", "Step (s)", kind="float"), Col("micro_batches", "Micro-batches / step", kind="int"),
                      Col("s_per_micro_batch", "Per micro-batch (s)", kind="float", decimals=3)],
                 caption="LoRA and QLoRA at one sample per micro-batch with gradient checkpointing; the article's rows are its whole run "
                         "(loading, evaluation and checkpoints included) over 111 steps, an upper bound", collapsed=False)


def model_card_report(card: pd.Series):
    Col, table = _t()
    short = {"provenance": "source", "weights as shipped": "shipped as", "GGUF sha256": "sha256", "chat format": "chat", "parameters": "params"}
    return table([{"k": short.get(k, k), "v": v} for k, v in card.items()], [Col("k", "Quality model", kind="text"), Col("v", "", kind="text")],
                 collapsed=False)


def quality_report(qual: pd.DataFrame):
    """Losses of every quality run of the small model."""
    Col, table = _t()
    return table(qual, [Col("run_id", "Run", kind="text"), Col("variant", "Variant", kind="text"), Col("outcome", "Outcome", kind="text"),
                        Col("steps_run", "Steps", kind="int"), Col("first_loss", "First loss", kind="float", decimals=3),
                        Col("last_loss", "Last loss", kind="float", decimals=3), Col("eval_loss", "Held-out loss", kind="float", decimals=3),
                        Col("eval_perplexity", "Perplexity", kind="float", decimals=1)],
                 caption="Held-out loss: mean negative log-likelihood per answer token over the whole held-out split", collapsed=True,
                 summary=f"Every quality run ({len(qual)} rows)")


def loop_report(answers: pd.DataFrame):
    Col, table = _t()
    return table(loop_table(answers), [Col("variant", "Variant", kind="text"), Col("answers", "Answers", kind="int"),
                                       Col("looping", "Fall into a loop", kind="int"), Col("longest loop", "Longest loop", kind="text")],
                 caption="A loop: a stretch of 1–40 characters repeated at least five times in a row", collapsed=False)


def answers_report(answers: pd.DataFrame, chars: int = 120):
    Col, table = _t()
    t = truncated_answers(answers, chars)
    cols = [Col("prompt", "Prompt", kind="text")] + [Col(v, v, kind="text") for v in t.columns if v != "prompt"]
    return table(t, cols, caption=f"Greedy answers, first {chars} characters (⏎: line break); runs {_runs(answers)}", collapsed=True,
                 summary=f"The eight answers of each variant (first {chars} characters)")


def style_report(style: pd.DataFrame):
    Col, table = _t()
    return table(style, [Col("source", "Source", kind="text"), Col("answers", "Answers", kind="int"), Col("chars_mean", "Characters (mean)", kind="float", decimals=0),
                         Col("commas_per_sentence", "「、」 per sentence", kind="float")], collapsed=False)


def fast_report(fast: pd.DataFrame):
    """The fast recipe against the article's, per model and method."""
    Col, table = _t()
    return table(fast, [Col("model", "Model", kind="text"), Col("method", "Method", kind="text"), Col("article s/epoch", "Article recipe (s / epoch)", kind="float", decimals=1),
                        Col("fast s/epoch", "Fast recipe (s / epoch)", kind="float", decimals=1), Col("speedup per epoch", "Speed-up (×)", kind="float", decimals=1),
                        Col("article MFU %", "MFU article (%)", kind="float"), Col("fast MFU %", "MFU fast (%)", kind="float"),
                        Col("eval loss diff %", "Held-out loss, fast vs article (%)", kind="float", signed=True)],
                 caption="Runs: " + "; ".join(f"{r.model} {r.method}: {r.runs}" for r in fast.itertuples()) if len(fast) else "", collapsed=False)


def concurrency_report(conc: pd.DataFrame):
    Col, table = _t()
    return table(conc, [Col("run_id", "Run", kind="text"), Col("variant", "Variant", kind="text"), Col("shared with", "Shared the GPU with", kind="text"),
                        Col("steps shared", "Steps shared", kind="int"), Col("median s/step shared", "Step, shared (s)", kind="float"),
                        Col("steps alone", "Steps alone", kind="int"), Col("median s/step alone", "Step, alone (s)", kind="float"),
                        Col("slowdown", "Slow-down (×)", kind="float")], collapsed=True,
                 summary="Variants that shared the GPU with another training process")
