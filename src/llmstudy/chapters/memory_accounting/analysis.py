"""The chapter's tables: the article's rules, the memory model on real configs, and predicted against measured."""

from __future__ import annotations

import pandas as pd

from llmstudy.core import models as M
from llmstudy.training import memory as mm
from llmstudy.training.memory import GB, GiB, Setup

from .params import RULE_MODELS

# Published (labelled): the article's print_trainable_parameters() for ELYZA-japanese-Llama-2-7b, LoRA r=4 on the seven
# projections (Fixstars 2026, §2). The chapter says whether the chapter's model reproduces it.
ARTICLE_LORA_PRINTOUT = {"trainable": 9_994_240, "total": 6_748_409_856, "model": "Llama-2-7B (ELYZA-japanese-Llama-2-7b)"}

RULES = {
    # name: (bytes/param, what it assumes, source)
    "full fp16 + Adam (article)": (12.0, "fp16 weights 2 + fp16 grads 2 + two fp32 moments 8", "article §1.2"),
    "full mixed precision (ZeRO)": (16.0, "fp16 weights 2 + grads 2 + fp32 master 4 + moments 8", "ZeRO §3.1"),
    "LoRA (article)": (2.0, "frozen fp16/bf16 weights; adapters, grads and states neglected", "article §2.2"),
    "QLoRA (article)": (0.7, "read off the QLoRA paper's figure", "article §3.2"),
}


def rule_of_thumb_table(models=RULE_MODELS) -> pd.DataFrame:
    """The rules applied to each model's exact parameter count (GB = 1e9 bytes, the article's unit)."""
    rows = []
    for m in models:
        n = int(M.parameters(m).numel.sum())
        for rule, (bpp, assumes, src) in RULES.items():
            rows.append({"model": m, "params": n, "rule": rule, "bytes_per_param": bpp, "GB": bpp * n / GB, "assumes": assumes, "source": src})
    return pd.DataFrame(rows)


def rule_setups(model: str, seq_len: int = 100, micro_batch: int = 1) -> dict[str, Setup]:
    """The memory model's configuration that each rule describes, for side-by-side comparison."""
    base = dict(model=model, seq_len=seq_len, micro_batch=micro_batch, grad_ckpt=True)
    return {
        "full fp16 + Adam (article)": Setup(method="full", optimizer="adamw_fp32_states", weight_dtype="fp16", **base),
        "full mixed precision (ZeRO)": Setup(method="full", optimizer="adamw_mixed", weight_dtype="fp16", **base),
        "LoRA (article)": Setup(method="lora", optimizer="paged_adamw_8bit", **base),
        "QLoRA (article)": Setup(method="qlora", optimizer="paged_adamw_8bit", **base),
    }





def counts_table(models) -> pd.DataFrame:
    """Parameters per component (millions), one row per model, components that are zero everywhere dropped."""
    counts = pd.DataFrame({m: M.component_counts(m) for m in models}).T
    return counts.loc[:, (counts != 0).any()] / 1e6


def rules_table() -> tuple[pd.DataFrame, dict]:
    """The rules' GB next to the memory model's for the configuration each rule describes; and the per-setup totals."""
    rules = rule_of_thumb_table()
    rule_wide = rules.pivot(index="model", columns="rule", values="GB").reindex(list(RULE_MODELS))
    totals = {(m, rule): mm.summarize(s) for m in RULE_MODELS for rule, s in rule_setups(m).items()}
    ours = pd.Series({k: (v["peak_bytes"] + v["paged_bytes"]) / 1e9 for k, v in totals.items()}).unstack()[list(RULES)].reindex(list(RULE_MODELS))
    return pd.concat({"rule (GB)": rule_wide, "memory model (GB)": ours}, axis=1), totals


def rules_breakdown() -> pd.DataFrame:
    """Tidy component breakdown (GB) of every rule's configuration on the LLaMA-1 sizes."""
    bd = mm.breakdown([s for m in RULE_MODELS for s in rule_setups(m).values()])
    bd["config"] = bd["model"] + " · " + bd["method"] + " · " + bd["optimizer"]
    bd["GB"] = bd["bytes"] / 1e9
    return bd


def configs_table(models, values: dict) -> pd.DataFrame:
    """GiB per component for full / LoRA / QLoRA on each model (NaN where a term is not modelled for the architecture)."""
    setups = [Setup(model=m, method=meth, optimizer=values["optimizer"], seq_len=values["seq_len"], micro_batch=values["micro_batch"],
                    grad_ckpt=values["grad_ckpt"], lora_r=values["lora_r"], lora_targets=tuple(values["lora_targets"]) or None)
              for m in models for meth in ("full", "lora", "qlora")]
    bd = mm.breakdown(setups)
    bd["config"] = bd["model"] + " · " + bd["method"]
    table = bd.pivot_table(index="config", columns="component", values="GiB", sort=False, dropna=False)
    table["bytes/param (allocator)"] = bd[bd.component != "paged"].groupby("config", sort=False)["bytes_per_param"].sum(min_count=1)
    table.loc[table.isna().any(axis=1), "bytes/param (allocator)"] = float("nan")
    return table


def measured(records: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(every record row with its prediction and error %, the rows measured ok with a peak)."""
    cmp_ = mm.compare(records) if len(records) else pd.DataFrame()
    ok = cmp_[(cmp_.outcome == "ok") & cmp_.peak_allocated_GiB.notna()] if len(cmp_) else cmp_
    if len(cmp_):
        cmp_ = cmp_.assign(record=cmp_["run_id"] + " (" + cmp_["gpu"] + ")")
    return cmp_, ok


MEASURED_COLUMNS = ["record", "setup", "outcome", "peak_allocated_GiB", "predicted_peak_GiB", "error_pct", "nvml_peak_process_GiB",
                    "optimizer_paged_GiB", "median_step_s"]


def pick(ok: pd.DataFrame, method: str, seq_len: int = 100, gpu: str = "H100"):
    """The first ok row of a method at the article's 100 tokens on an H100 (the article's GPU), or None."""
    rows = ok[(ok.method == method) & (ok.seq_len == seq_len) & ok.gpu.str.contains(gpu)] if len(ok) else ok
    return rows.iloc[0] if len(rows) else None


__all__ = ["ARTICLE_LORA_PRINTOUT", "GB", "GiB", "MEASURED_COLUMNS", "RULES", "configs_table", "counts_table", "measured", "pick",
           "rule_of_thumb_table", "rule_setups", "rules_breakdown", "rules_table"]
