"""The book's headline claims, written once: each is evaluated against the run records, rendered in its chapter from
that evaluation (:func:`glue_claims`), listed on the claims page, and checked by ``tests/publishing/test_claims.py``.

A verdict is *holds*, *contradicted* or *not yet measured* (no record holds the data the claim needs). Nothing
here is a number typed by hand: thresholds are part of the claim's wording, values come from ``data/runs``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

HOLDS, CONTRADICTED, NOT_MEASURED = "holds", "contradicted", "not yet measured"


@dataclass(frozen=True)
class Verdict:
    status: str
    evidence: str
    runs: tuple[str, ...] = ()  # "experiment/run_id" of every record the verdict used

    @property
    def holds(self) -> bool:
        return self.status == HOLDS


@dataclass(frozen=True)
class Claim:
    id: str
    chapter: str  # the notebook (notebooks/<chapter>.ipynb) that states it
    statement: str
    experiment: str | None  # the records it is checked against; None: checked against published/computed data
    check: Callable[[Path | None], Verdict] = field(repr=False)

    def evaluate(self, root: Path | None = None) -> Verdict:
        """The verdict against the records under ``root`` (default ``data/runs``)."""
        return self.check(root)

    def sentence(self, root: Path | None = None, model: str | None = None, verdict: Verdict | None = None) -> str:
        """The claim as the book prints it: statement, verdict, evidence.

        With ``model`` (a fork's model), a claim that rests on other models' records, or on no record of ``model``,
        first says whose claim it is, so a forked page never shows the study's numbers as the new model's.
        """
        v = verdict or self.evaluate(root)
        if v.status == HOLDS:
            text = f"{self.statement}: {v.evidence}."
        elif v.status == NOT_MEASURED:
            text = f"{self.statement} — not yet measured ({v.evidence})."
        else:
            text = f"{self.statement} — CONTRADICTED by the records: {v.evidence}."
        if not model:
            return text
        from llmstudy.core.book import record_models

        models = sorted({m for r in v.runs for m in record_models(r.split("/", 1)[0], [r.split("/", 1)[-1]])})
        if model in models and len(models) == 1:
            return text
        whose = f"the study's records of {', '.join(models)}" if models else "the models the study measured"
        return f"The study's claim, about {whose} (not measured for {model}): {text}"


def _verdict(ok: bool, evidence: str, runs) -> Verdict:
    return Verdict(HOLDS if ok else CONTRADICTED, evidence, tuple(sorted(set(runs))))


def _missing(experiment: str, what: str) -> Verdict:
    return Verdict(NOT_MEASURED, f"no run record in data/runs/{experiment}/ has {what}")


def _ids(experiment: str, df: pd.DataFrame) -> list[str]:
    return [f"{experiment}/{r}" for r in sorted(df.run_id.unique())]


# --- memory accounting --------------------------------------------------------------------------------------------
def _memory(root):
    from llmstudy.core.records import results
    from llmstudy.training import memory as mm

    runs = results("memory_accounting", root=root)
    return mm.compare(runs) if len(runs) else pd.DataFrame()


def qlora_under_half_of_lora(root=None) -> Verdict:
    """Every measured LoRA/QLoRA pair with gradient checkpointing (same record, sequence length, batch)."""
    c = _memory(root)
    ok = c[(c.outcome == "ok") & c.peak_allocated_GiB.notna() & c.grad_ckpt.astype(bool)] if len(c) else c
    pairs = []
    for (run, seq, mb), g in ok.groupby(["run_id", "seq_len", "micro_batch"]) if len(ok) else []:
        lo, q = g[g.method == "lora"], g[g.method == "qlora"]
        if len(lo) and len(q):
            pairs.append((run, seq, mb, float(q.peak_allocated_GiB.iloc[0]), float(lo.peak_allocated_GiB.iloc[0])))
    if not pairs:
        return _missing("memory_accounting", "a LoRA and a QLoRA run with gradient checkpointing")
    worst = max(pairs, key=lambda p: p[3] / p[4])
    text = (f"QLoRA/LoRA peak allocated memory is {min(p[3] / p[4] for p in pairs):.2f}–{worst[3] / worst[4]:.2f} over "
            f"{len(pairs)} pairs (largest: {worst[3]:.2f} GiB against {worst[4]:.2f} GiB, {worst[0]}, {worst[1]} tokens × {worst[2]})")
    return _verdict(all(q < 0.5 * lo for *_, q, lo in pairs), text, [f"memory_accounting/{p[0]}" for p in pairs])


def memory_model_within_10pct(root=None) -> Verdict:
    c = _memory(root)
    ok = c[(c.outcome == "ok") & c.error_pct.notna()] if len(c) else c
    if not len(ok):
        return _missing("memory_accounting", "a measured peak")
    worst = ok.loc[ok.error_pct.abs().idxmax()]
    text = (f"the largest error over {len(ok)} measured configurations is {worst.error_pct:+.1f}% "
            f"({worst.setup}, {worst.run_id})")
    return _verdict(bool((ok.error_pct.abs() <= 10).all()), text, _ids("memory_accounting", ok))


def fp32_master_weights_oom_h100_fit_h200(root=None) -> Verdict:
    c = _memory(root)
    rows = c[(c.method == "full") & (c.optimizer == "adamw_torch") & (c.weight_dtype == "fp32")] if len(c) else c
    h100 = rows[rows.gpu.str.contains("H100")] if len(rows) else rows
    h200 = rows[rows.gpu.str.contains("H200")] if len(rows) else rows
    if not len(h100) or not len(h200):
        return _missing("memory_accounting", "fp32-master full fine-tuning on both an H100 and an H200")
    a, b = h100.iloc[0], h200.iloc[0]
    text = (f"on the H100 ({a.run_id}) the outcome is {a.outcome} at a predicted {a.predicted_peak_GiB:.1f} GiB; on the "
            f"H200 ({b.run_id}) it is {b.outcome}, {b.peak_allocated_GiB:.1f} GiB measured ({b.error_pct:+.2f}% from the prediction)")
    ok = (h100.outcome == "oom").all() and (h200.outcome == "ok").all() and bool((h200.error_pct.abs() <= 1).all())
    return _verdict(ok, text, _ids("memory_accounting", rows))


# --- serving: max_num_seqs ----------------------------------------------------------------------------------------
BATCH_WORKLOAD = {"model": "llama-2-7b", "input_len": 512, "output_len": 256}


def _batch(root):
    from llmstudy.chapters.serve_sweeps import sweep_runs
    from llmstudy.core.records import results

    res = results("batch_size_sweep", root=root)
    if not len(res):
        return res
    # the records that ran the chapter's full plan; single-setting comparisons (4-bit weights, prefix caching off,
    # another model) are not points of the max_num_seqs sweep
    res = res[res.run_id.isin(sweep_runs("batch_size_sweep", BATCH_WORKLOAD["model"], [4, 16, 64, 256], root=root))]
    res = res[(res.input_len == BATCH_WORKLOAD["input_len"]) & (res.output_len == BATCH_WORKLOAD["output_len"])]
    return res[res.outcome == "ok"]


def throughput_stops_growing_past_max_num_seqs(root=None) -> Verdict:
    """For each cap with points beyond it: no point with concurrency > max_num_seqs beats concurrency = max_num_seqs by > 5%."""
    ok = _batch(root)
    rows, used = [], []
    for (run, s), g in ok.groupby(["run_id", "max_num_seqs"]) if len(ok) else []:
        at, past = g[g.concurrency == s], g[g.concurrency > s]
        if len(at) and len(past):
            rows.append((int(s), float(past.output_token_throughput.max() / at.output_token_throughput.iloc[0])))
            used.append(f"batch_size_sweep/{run}")
    if not rows:
        return _missing("batch_size_sweep", "points at and beyond a max_num_seqs")
    text = "the best throughput past the cap relative to the throughput at concurrency = max_num_seqs: " + ", ".join(
        f"{r:.3f} (max_num_seqs {s})" for s, r in sorted(rows))
    return _verdict(all(r <= 1.05 for _, r in rows), text, used)


def plateau_is_batch_over_itl(root=None) -> Verdict:
    from llmstudy.chapters import serve_sweeps as SP

    ok = _batch(root)
    if not len(ok):
        return _missing("batch_size_sweep", "saturated points")
    sat = SP.saturation(ok)
    err = (1 - sat.plateau_vs_batch_over_itl).abs()
    text = "plateau / (batch ÷ ITL) = " + ", ".join(f"{r.plateau_vs_batch_over_itl:.2f} (max_num_seqs {int(r.max_num_seqs)})" for r in sat.itertuples())
    return _verdict(bool((err <= 0.10).all()), text, _ids("batch_size_sweep", ok))


def cap_16_beats_cap_4(root=None) -> Verdict:
    ok = _batch(root)
    if not len(ok):
        return _missing("batch_size_sweep", "max_num_seqs 4 and 16 at concurrency 16")
    pts = ok[ok.concurrency == 16]
    a, b = pts[pts.max_num_seqs == 16], pts[pts.max_num_seqs == 4]
    if not len(a) or not len(b):
        return _missing("batch_size_sweep", "max_num_seqs 4 and 16 at concurrency 16")
    ta, tb = float(a.output_token_throughput.iloc[0]), float(b.output_token_throughput.iloc[0])
    return _verdict(ta > tb, f"{ta:,.0f} against {tb:,.0f} output tokens/s ({ta / tb:.1f}×)", _ids("batch_size_sweep", pd.concat([a, b])))


# --- serving: lengths ---------------------------------------------------------------------------------------------
def max_model_len_does_not_change_speed(root=None) -> Verdict:
    from llmstudy.core.records import results

    res = results("length_sweep", root=root)
    if len(res):
        res = res[(res.sweep == "max_model_len") & (res.outcome == "ok") & (res.input_len == 512) & (res.output_len == 256)]
    if not len(res) or res.max_model_len.nunique() < 2:
        return _missing("length_sweep", "two or more max_model_len settings that served")
    top = res[res.concurrency == res.concurrency.max()]
    spread = top.output_token_throughput.max() / top.output_token_throughput.min() - 1
    text = (f"at concurrency {int(top.concurrency.iloc[0])} the output throughput varies by {100 * spread:.1f}% across max_model_len "
            + ", ".join(f"{int(v):,}" for v in sorted(top.max_model_len.unique())))
    return _verdict(spread <= 0.05, text, _ids("length_sweep", top))


# --- context limits -----------------------------------------------------------------------------------------------
def planner_within_1pct_of_vllm(root=None) -> Verdict:
    from llmstudy.chapters import context_limits as cap
    from llmstudy.chapters.context_limits.analysis import is_v083
    from llmstudy.core.records import results

    runs = results("context_limits", root=root)
    runs = runs[~is_v083(runs)] if len(runs) else runs  # vLLM 0.8.3 has its own claim (planner_083_within_half_pct)
    c = cap.compare_runs(runs) if len(runs) else pd.DataFrame()
    ok = c[(c.outcome == "ok") & c.kv_cache_tokens.notna() & c.error_pct.notna()] if len(c) else c
    if not len(ok):
        return _missing("context_limits", "a server that logged its KV cache size")
    worst = ok.loc[ok.error_pct.abs().idxmax()]
    text = f"the largest error over {len(ok)} configurations is {worst.error_pct:+.2f}% ({worst.config}, {worst.run_id})"
    return _verdict(bool((ok.error_pct.abs() <= 1).all()), text, _ids("context_limits", ok))


def planner_083_within_half_pct(root=None) -> Verdict:
    """vLLM 0.8.3's one-GPU servers: the planner's 0.8.3 rules within 0.5 % wherever the sampler decides the profile
    peak (max_num_seqs >= 256); servers where the forward pass decides are named in the text, not hidden."""
    from llmstudy.chapters.context_limits.analysis import v083_table
    from llmstudy.core.records import results

    runs = results("context_limits", root=root)
    t = v083_table(runs) if len(runs) else pd.DataFrame()
    ok = t[t["logged KV tokens"].notna()] if len(t) else t
    if not len(ok):
        return _missing("context_limits", "a vLLM 0.8.3 server")
    samp, fwd = ok[ok.max_num_seqs >= 256], ok[ok.max_num_seqs < 256]
    worst = samp.loc[samp["error %"].abs().idxmax()]
    text = (f"the largest error over {len(samp)} sampler-bound vLLM 0.8.3 servers is {worst['error %']:+.2f}% ({worst.config}, "
            f"{worst.run_id})" + "".join(f"; forward-bound (max_num_seqs {int(r.max_num_seqs)}): {r['error %']:+.2f}% ({r.config}), "
                                        "the forward estimate being an upper bound" for _, r in fwd.iterrows()))
    return _verdict(bool((samp["error %"].abs() <= 0.5).all()), text, tuple(sorted({f"context_limits/{r}" for r in ok.run_id})))


def published_8gpu_cells_reproduce(root=None) -> Verdict:
    from llmstudy.chapters import context_limits as cap
    from llmstudy.core.records import results

    runs = results("context_limits", root=root)
    cmp_ = cap.compare_runs(runs) if len(runs) else pd.DataFrame()
    cells = cap.published_vs_measured(cmp_) if len(cmp_) else pd.DataFrame()
    eight = cells[cells.hardware.str.startswith("8×")] if len(cells) else cells
    tested = eight[eight.verdict != "not measured"] if len(eight) else eight
    if not len(tested):
        return _missing("context_limits", "an 8-GPU configuration")
    name = lambda r: f"{r.source} {r.model} {r.precision} {r.hardware} ({r['published max_model_len']}: {r.verdict})"  # noqa: E731
    bad = [name(r) for _, r in eight.iterrows() if r.verdict != "reproduced"]
    used = [f"context_limits/{rec.split('/')[0]}" for rec in tested.record]
    if any(eight.verdict == "not measured"):
        return Verdict(NOT_MEASURED, "no record for " + "; ".join(bad), tuple(sorted(set(used))))
    text = f"{int((eight.verdict == 'reproduced').sum())} of {len(eight)} 8-GPU cells reproduce on vLLM 0.25.0" + (f"; not: {'; '.join(bad)}" if bad else "")
    return _verdict(not bad, text, used)


def planner_agrees_with_article_table(root=None) -> Verdict:
    """Checked against the article's published table (a computation, no run record)."""
    from llmstudy.chapters import context_limits as cap

    art = cap.article_comparison("0.8.3", "h100-80gb")
    bad = art[~art.agrees]
    cells = ", ".join(f"{r.model} {r.GPUs}×{r.precision}" for r in bad.itertuples()) or "none"
    text = f"{int(art.agrees.sum())} of {len(art)} cells agree; the disagreement: {cells}"
    only = list(zip(bad.model, bad.GPUs, bad.precision)) == [("Scout", 4, "BF16")]
    return _verdict(only, text, [])


# --- LoRA vs QLoRA ------------------------------------------------------------------------------------------------
def fast_recipe_is_faster(root=None) -> Verdict:
    from llmstudy.chapters import lora_vs_qlora as L

    t = L.load_tables(root)
    fast = L.fast_vs_article(t["results"], t["history"]) if len(t["results"]) else pd.DataFrame()
    if not len(fast):
        return _missing("lora_vs_qlora", "both recipes")
    diff = fast["eval loss diff %"].fillna(fast["max train loss diff % (same steps)"])
    text = "; ".join(
        f"{m} {k}: {s:.1f}× per epoch, loss within {d:.2f}%" for m, k, s, d in zip(fast.model, fast.method, fast["speedup per epoch"], diff))
    runs = [f"lora_vs_qlora/{r}" for s in fast.runs for r in s.split(" / ")]
    return _verdict(bool((fast["speedup per epoch"] > 1).all() and (diff.abs() <= 1).all()), text, runs)


CLAIMS: tuple[Claim, ...] = (
    Claim("qlora_under_half_of_lora", "memory_accounting",
          "With gradient checkpointing, QLoRA's peak memory is under half of LoRA's", "memory_accounting", qlora_under_half_of_lora),
    Claim("memory_model_within_10pct", "memory_accounting",
          "The memory model predicts every measured peak to within 10%", "memory_accounting", memory_model_within_10pct),
    Claim("fp32_master_weights_oom_h100_fit_h200", "memory_accounting",
          "Full fine-tuning with fp32 master weights runs out of memory on the 80 GB H100 and fits the H200 within 1% of the predicted peak",
          "memory_accounting", fp32_master_weights_oom_h100_fit_h200),
    Claim("throughput_stops_growing_past_max_num_seqs", "batch_size_sweep",
          "Throughput stops growing once concurrency exceeds max_num_seqs (no point beyond the cap is more than 5% above the point at it)",
          "batch_size_sweep", throughput_stops_growing_past_max_num_seqs),
    Claim("plateau_is_batch_over_itl", "batch_size_sweep",
          "The saturated throughput is batch ÷ ITL to within 10%", "batch_size_sweep", plateau_is_batch_over_itl),
    Claim("cap_16_beats_cap_4", "batch_size_sweep",
          "At 16 concurrent requests max_num_seqs 16 gives more throughput than 4 (the article's finding)", "batch_size_sweep", cap_16_beats_cap_4),
    Claim("max_model_len_does_not_change_speed", "length_sweep",
          "max_model_len does not change the speed of requests that fit (throughput within 5%)", "length_sweep", max_model_len_does_not_change_speed),
    Claim("planner_within_1pct_of_vllm", "context_limits",
          "The KV-capacity planner is within 1% of the GPU KV cache size vLLM 0.25.0 logs", "context_limits", planner_within_1pct_of_vllm),
    Claim("planner_083_within_half_pct", "context_limits",
          "The planner's vLLM 0.8.3 rules are within 0.5% of the KV cache size vLLM 0.8.3 logs on one H200 where the sampler "
          "decides the profile peak", "context_limits", planner_083_within_half_pct),
    Claim("published_8gpu_cells_reproduce", "context_limits",
          "Every 8-GPU length the article and the vLLM blog published starts on vLLM 0.25.0 (H100 cells on the emulated H100 "
          "budget), and the article's 8-GPU OOM stays OOM", "context_limits", published_8gpu_cells_reproduce),
    Claim("planner_agrees_with_article_table", "context_limits",
          "The planner agrees with every cell of the article's table except Scout 4×BF16", None, planner_agrees_with_article_table),
    Claim("fast_recipe_is_faster", "lora_vs_qlora",
          "The padding-free recipe trains an epoch faster than the article's recipe with the loss within 1%", "lora_vs_qlora", fast_recipe_is_faster),
)


def get(claim_id: str) -> Claim:
    for c in CLAIMS:
        if c.id == claim_id:
            return c
    raise KeyError(f"unknown claim {claim_id!r}; known: {[c.id for c in CLAIMS]}")


def table(root: Path | None = None) -> pd.DataFrame:
    """Every claim with its verdict against the records."""
    rows = []
    for c in CLAIMS:
        v = c.evaluate(root)
        rows.append({"claim": c.id, "chapter": c.chapter, "status": v.status, "statement": c.statement, "evidence": v.evidence, "runs": ", ".join(v.runs)})
    return pd.DataFrame(rows)


FORK_ENV = "LLMSTUDY_FORK_MODEL"  # set by `llmstudy fork` for the chapters it executes


def statements(chapter: str, model: str | None = None, root: Path | None = None) -> dict[str, str]:
    """``{"claim_<id>": sentence}`` for every claim of ``chapter``, for a chapter's ``statements`` to glue with its
    other values; ``model`` as in :func:`glue_claims` (default ``$LLMSTUDY_FORK_MODEL``)."""
    model = model or os.environ.get(FORK_ENV) or None
    return {f"claim_{c.id}": c.sentence(root, model=model) for c in CLAIMS if c.chapter == chapter}


def glue_claims(chapter: str, root: Path | None = None, model: str | None = None) -> dict[str, Verdict]:
    """Glue ``claim_<id>`` (the printed sentence) for every claim of ``chapter``; returns the verdicts.

    ``model``: the model the page is rendered for when it is not the study's own (default ``$LLMSTUDY_FORK_MODEL``,
    which ``llmstudy fork`` sets); each sentence then names the models whose records it rests on.
    """
    from llmstudy.core.book import glue_text

    model = model or os.environ.get(FORK_ENV) or None
    out = {}
    for c in CLAIMS:
        if c.chapter == chapter:
            out[c.id] = v = c.evaluate(root)
            glue_text(f"claim_{c.id}", c.sentence(root, model=model, verdict=v))
    return out
