"""Every glued value of the memory-accounting chapter, as text (the claims are glued by ``claims.glue_claims``).

Predictions are computed for the chapter's model; measured numbers come only from that model's own run records.
A model without records gets :func:`llmstudy.core.book.not_measured` with the exact command that measures it.
"""

from __future__ import annotations

import pandas as pd

from llmstudy.core import models as M
from llmstudy.core.book import not_measured
from llmstudy.training import memory as mm

from .analysis import ARTICLE_LORA_PRINTOUT, measured, per_param, pick, rules_table
from .params import PARAMS

_WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight", 9: "nine", 10: "ten"}


def measure_command(model: str) -> str:
    """The command that measures this chapter's setups for ``model`` on a GPU runner."""
    return f"llmstudy memory --run --model {model} --method lora qlora full"


def lora_on(targets: M.LoraTargets, r: int) -> str:
    """'rank 4 on its seven linear projections' (and its fused expert tensors, named, when it has them)."""
    n = len(targets.modules)
    text = f"rank {r} on its {_WORDS.get(n, str(n))} linear projections"
    if targets.parameters:
        text += " and its fused expert tensors (" + ", ".join(targets.parameters) + ")"
    return text


def parameter_statements(model: str, lora_r: int = PARAMS["lora_r"].default, lora_targets=None) -> dict[str, str]:
    """Exact counts of the chapter's model (meta device) and its LoRA counts (peft's own), against the article's."""
    targets = M.lora_targets(model, lora_targets or None)
    lora = M.lora_count(model, lora_r, lora_targets or None)
    art = ARTICLE_LORA_PRINTOUT
    same = (lora.trainable, lora.total) == (art["trainable"], art["total"])
    return {
        "model_title": M.title(model),
        "params_7b": f"{int(M.component_counts(model)['total']):,}",
        "lora_on": lora_on(targets, lora_r),
        "lora_trainable": f"{lora.trainable:,}",
        "lora_total": f"{lora.total:,}",
        "lora_pct": f"{lora.percent:.4f}",
        "lora_article": "— the figure the article printed" if same
        else f"(the article printed {art['trainable']:,} of {art['total']:,} for its Llama-2-7B)",
        "lora_not_adapted": ("Not adapted: " + "; ".join(targets.not_adapted) + ".") if targets.not_adapted
        else "peft can adapt every linear projection of this architecture.",
    }


def rule_statements(totals: dict | None = None) -> dict[str, str]:
    """LLaMA-65B under the article's 12-bytes rule, component by component (GB)."""
    totals = totals if totals is not None else rules_table()[1]
    s65 = totals[("llama-65b", "full fp16 + Adam (article)")]
    return {
        "rule65_weights": f"{s65['weights_bytes'] / 1e9:,.0f}",
        "rule65_grads": f"{s65['gradients_bytes'] / 1e9:,.0f}",
        "rule65_opt": f"{s65['optimizer_bytes'] / 1e9:,.0f}",
    }


def short_name(model: str) -> str:
    """The model's folder name (or a config file's stem): what the tables call it."""
    path = M.config_path(model)
    return path.parent.name if path.name == "config.json" else path.stem


def qlora_statement(model: str) -> str:
    """Which weights a QLoRA load keeps in bf16 (bitsandbytes quantizes nn.Linear only) and how many are NF4."""
    table = M.parameters(model)
    kept = M.qlora_bf16_weights(model)
    parts = ", ".join(f"{k} {int(v):,}" for k, v in kept.items())
    return (f"Under QLoRA, bitsandbytes stores the {int(table[table.linear].numel.sum()):,} weights of {short_name(model)}'s "
            f"nn.Linear layers in NF4 and keeps {int(kept.sum()):,} in bf16: {parts}.")


def activation_statement(models) -> str:
    """Which compared models' activation memory (and so peak) the model leaves blank, and why."""
    by_term: dict[str, list[str]] = {}
    for m in dict.fromkeys(models):
        for term in mm.not_modelled_terms(m):
            by_term.setdefault(term, []).append(short_name(m))
    if not by_term:
        return "Every term is modelled for these architectures."
    return "Blank cells are not modelled: the activation memory of " + "; of ".join(
        f"{term} for {', '.join(names)}" for term, names in by_term.items()) + "."


def measured_statements(records: pd.DataFrame, model: str) -> dict[str, str]:
    """Predicted against measured, from ``model``'s own records only (``records``: its rows of the experiment)."""
    title = M.title(model)
    _, ok = measured(records)
    if not len(ok):
        missing = not_measured(title, measure_command(model))
        return {k: missing for k in ("max_abs_err", "err_2048", "lora_peak", "qlora_peak", "lora_nvml_gb", "qlora_nvml_gb", "lora_step", "qlora_step")} | {
            "n_measured": "0", "err_2048_text": f"Sequences of 2048 × 2 without checkpointing: {missing}."}
    lora_row, qlora_row = pick(ok, "lora"), pick(ok, "qlora")
    na = f"no H100 record at 100 tokens for {title}"

    def fmt(row, col, f="{:.2f}", scale=1.0):
        return f.format(row[col] * scale) if row is not None else na

    long2048 = ok[ok.seq_len == 2048]
    err_2048 = f"{long2048.error_pct.abs().max():.1f}" if len(long2048) else f"no 2048-token record for {title}"
    return {
        "n_measured": str(len(ok)),
        "max_abs_err": f"{ok.error_pct.abs().max():.1f}",
        "err_2048": err_2048,
        "err_2048_text": (f"Sequences of 2048 × 2 without checkpointing land within {err_2048}%." if len(long2048)
                          else f"Sequences of 2048 × 2 without checkpointing: {err_2048} ({not_measured(title, measure_command(model) + ' --seq-len 2048 --micro-batch 2 --no-grad-ckpt')})."),
        "lora_peak": fmt(lora_row, "peak_allocated_GiB"),
        "qlora_peak": fmt(qlora_row, "peak_allocated_GiB"),
        "lora_nvml_gb": fmt(lora_row, "nvml_peak_process_GiB", "{:.1f}", 2**30 / 1e9),
        "qlora_nvml_gb": fmt(qlora_row, "nvml_peak_process_GiB", "{:.1f}", 2**30 / 1e9),
        "lora_step": fmt(lora_row, "median_step_s", "{:.1f}"),
        "qlora_step": fmt(qlora_row, "median_step_s", "{:.1f}"),
    }


def _gbpb(v: float) -> str:
    return "not modelled" if pd.isna(v) else f"{v:.2f}"


def answer_statement(records: pd.DataFrame, model: str, lora_r: int = PARAMS["lora_r"].default, lora_targets=None) -> str:
    """The page's answer in two sentences: measured GB per billion parameters of LoRA and QLoRA (the chapter model's
    own records only), the memory model's largest error, and what the 12x rule assumes; predictions only, named as
    such, for a model without records."""
    title = M.title(model)
    _, ok = measured(records)
    pp = per_param(model, ok, lora_r=lora_r, lora_targets=lora_targets).set_index("method", append=True)
    by = {m: pp.xs(m, level="method") for m in ("full", "lora", "qlora")}
    lora, qlora = by["lora"].iloc[0], by["qlora"].iloc[0]
    full_rule, full_torch, full_paged = (by["full"].iloc[i] for i in range(3))
    if pd.isna(lora.predicted_GB_per_B) or pd.isna(qlora.predicted_GB_per_B):
        why = "; ".join(mm.not_modelled_terms(model)) or "a term it does not model"
        return (f"Predicted only, and only in part: for {title} the memory model leaves out {why}, so it gives no total. The weights "
                f"alone take {lora.weights:.2f} GB per billion parameters under LoRA and {qlora.weights:.2f} under QLoRA (the article's rules: 2 and 0.7 "
                f"plus extras). The measurement: {not_measured(title, measure_command(model))}.")
    if pd.isna(lora.measured_GB_per_B) or pd.isna(qlora.measured_GB_per_B):
        return (f"Predicted for {title} by the memory model (not measured): LoRA {lora.predicted_GB_per_B:.2f} and QLoRA "
                f"{qlora.predicted_GB_per_B:.2f} GB per billion parameters, against the article's 2 and 0.7 plus extras; full fine-tuning "
                f"{_gbpb(full_torch.predicted_GB_per_B)} with bf16 AdamW and {_gbpb(full_rule.predicted_GB_per_B)} in the 12x rule's own setup. "
                f"The measurement: {not_measured(title, measure_command(model))}.")

    def versus(v: float, rule: float) -> str:
        return "just above" if rule <= v <= 1.1 * rule else "below" if v < rule else "above"

    return (f"With the article's recipe (100-token samples, batch 1) {title} measured {lora.measured_GB_per_B:.2f} GB per billion parameters "
            f"with LoRA ({lora.measured_GiB:.2f} GiB, run {lora.run_id}), {versus(lora.measured_GB_per_B, 2.0)} the article's 2x rule, and "
            f"{qlora.measured_GB_per_B:.2f} with QLoRA ({qlora.measured_GiB:.2f} GiB, run {qlora.run_id}), {versus(qlora.measured_GB_per_B, 0.7)} its 0.7x rule. "
            f"A component model built from config.json predicts every one of the {len(ok)} measured peaks within {ok.error_pct.abs().max():.1f}%. "
            f"The 12x rule describes fp16 weights with fp32 Adam moments; full fine-tuning with bf16 AdamW needs "
            f"{_gbpb(full_torch.predicted_GB_per_B)}, with paged 8-bit AdamW {_gbpb(full_paged.predicted_GB_per_B)} plus its paged state.")


def statements(records: pd.DataFrame, model: str, lora_r: int = PARAMS["lora_r"].default, lora_targets=None,
               compare_models=None, rule_totals: dict | None = None) -> dict[str, str]:
    """Every glued value of the chapter (except the claims).

    ``records``: the experiment's results for ``model`` (``records.results("memory_accounting", model=model)``);
    ``compare_models``: the models of the configuration table (default: the spec's); ``rule_totals``: the second
    value of :func:`rules_table` when the caller already has it.
    """
    models = list(dict.fromkeys([model, *(compare_models if compare_models is not None else PARAMS["compare_models"].default)]))
    return {**parameter_statements(model, lora_r, lora_targets), **rule_statements(rule_totals), **measured_statements(records, model),
            "qlora_bf16": qlora_statement(model), "activation_note": activation_statement(models),
            "answer": answer_statement(records, model, lora_r, lora_targets)}
