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


# --- The key figure's data: GB per billion parameters, predicted by component, measured where a record exists ---------

# The article's rules as GB per billion parameters (= bytes per parameter), drawn as reference lines.
RULE_MARKS = {"full": (12.0, "article: 12x"), "lora": (2.0, "article: 2x + extras"), "qlora": (0.7, "article: 0.7x + extras")}
# (label, method, optimizer, weight dtype): the configurations of the key figure, at the article's 100 tokens, batch 1
PER_PARAM_SETUPS = (
    ("fp16 + fp32 Adam (the rule's setup)", "full", "adamw_fp32_states", "fp16"),
    ("bf16 + AdamW (torch)", "full", "adamw_torch", "bf16"),
    ("bf16 + paged 8-bit AdamW", "full", "paged_adamw_8bit", "bf16"),
    ("LoRA r=4, bf16 weights", "lora", "paged_adamw_8bit", "bf16"),
    ("QLoRA r=4, NF4 weights", "qlora", "paged_adamw_8bit", "bf16"),
)


def per_param(model: str, ok: pd.DataFrame | None = None, seq_len: int = 100, lora_r: int = 4, lora_targets=None) -> pd.DataFrame:
    """One row per :data:`PER_PARAM_SETUPS` configuration of ``model``: the memory model's components in GB per
    billion parameters (bytes / parameter; ``paged`` is the paged optimizer's managed memory, outside the allocator)
    and, from ``ok`` (the model's own measured rows, :func:`measured`), the measured allocator peak on the same scale,
    the run it comes from, and the measured peak in GiB."""
    rows = []
    n = int(M.component_counts(model)["total"])
    for label, method, opt, dtype in PER_PARAM_SETUPS:
        s = Setup(model=model, method=method, optimizer=opt, weight_dtype=dtype, seq_len=seq_len, micro_batch=1, grad_ckpt=True,
                  lora_r=lora_r, lora_targets=tuple(lora_targets) if lora_targets else None)
        sm = mm.summarize(s)
        row = {"config": label, "method": method, "optimizer": opt, "weight_dtype": dtype, "params": n,
               **{c: sm[f"{c}_bytes"] / n if sm[f"{c}_bytes"] is not None else float("nan") for c in (*mm.MEMORY_COMPONENTS, "paged")},
               "predicted_GB_per_B": sm["peak_bytes"] / n if sm["peak_bytes"] is not None else float("nan"),
               "measured_GB_per_B": float("nan"), "measured_GiB": float("nan"), "run_id": None}
        if ok is not None and len(ok):
            m = ok[(ok.method == method) & (ok.optimizer == opt) & (ok.weight_dtype == dtype) & (ok.seq_len == seq_len)
                   & (ok.micro_batch == 1) & ok.grad_ckpt.astype(bool)]
            m = pd.concat([m[m.gpu.str.contains("H100")], m[~m.gpu.str.contains("H100")]])  # the article's GPU first
            if len(m):
                r = m.iloc[0]
                row.update(measured_GB_per_B=r.peak_allocated_GiB * GiB / n, measured_GiB=r.peak_allocated_GiB, run_id=r.run_id)
        rows.append(row)
    return pd.DataFrame(rows)


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


# --- The page's tables, formatted (llmstudy.publishing.tables) -------------------------------------------------------


def counts_report(models):
    """Parameters per component (millions): components as rows, one column per model (at most seven models)."""
    from llmstudy.publishing.tables import Col, table

    from .statements import short_name

    counts = counts_table(list(models)).T
    counts.columns = [short_name(m) for m in counts.columns]
    df = counts.rename_axis("component").reset_index()
    return table(df, [Col("component", "Component", kind="text")] + [Col(c, c, kind="float", decimals=1) for c in counts.columns],
                 caption="Parameters per component (millions), counted on the meta device", collapsed=False)


def rules_report(totals: dict | None = None):
    """The article's rules next to the memory model, for the smallest and the largest LLaMA (GB = 1e9 bytes)."""
    from llmstudy.publishing.tables import Col, table

    totals = totals if totals is not None else rules_table()[1]
    rules = rule_of_thumb_table()
    small, big = RULE_MODELS[0], RULE_MODELS[-1]
    rows = []
    for rule, (bpp, assumes, src) in RULES.items():
        r = {"rule": rule, "bpp": bpp, "assumes": assumes, "source": src}
        for key, m in (("small", small), ("big", big)):
            r[f"{key}_rule"] = float(rules[(rules.model == m) & (rules.rule == rule)].GB.iloc[0])
            sm = totals[(m, rule)]
            r[f"{key}_model"] = (sm["peak_bytes"] + sm["paged_bytes"]) / 1e9
        rows.append(r)
    return table(rows, [Col("rule", "Rule", kind="text"), Col("bpp", "Bytes / param", decimals=1), Col("assumes", "What it counts", kind="text"), Col("source", "Source", kind="text"),
                        Col("small_rule", f"{small}: rule (GB)", kind="float", decimals=1), Col("small_model", f"{small}: model (GB)", kind="float", decimals=1),
                        Col("big_rule", f"{big}: rule (GB)", kind="int"), Col("big_model", f"{big}: model (GB)", kind="int")],
                 caption="The rules of thumb against the memory model for the configuration each rule describes (sequences of 100 tokens, batch 1)",
                 collapsed=False)


def configs_report(models, values: dict):
    """:func:`configs_table` formatted: GiB per component, "not modelled" where a term is not modelled."""
    from llmstudy.publishing.tables import Col, table

    from .statements import short_name

    t = configs_table(models, values)
    df = t.reset_index()
    df["config"] = [f"{short_name(c.split(' · ')[0])} · {c.split(' · ')[1]}" for c in df.config]
    cols = [Col("config", "Model · method", kind="text")]
    cols += [Col(c, f"{c} (GiB)", kind="float", decimals=2, missing="not modelled") for c in (*mm.MEMORY_COMPONENTS, "paged") if c in df]
    cols.append(Col("bytes/param (allocator)", "Bytes / param", kind="float", decimals=2, missing="—"))
    if len(cols) > 8:  # paged is the one optional column: it goes into the caption
        cols = [c for c in cols if c.key != "paged"]
    return table(df, cols, caption=f"Predicted GiB per component at {values['seq_len']} tokens × batch {values['micro_batch']}, "
                                   f"{values['optimizer']}, gradient checkpointing {'on' if values['grad_ckpt'] else 'off'}; "
                                   "paged = the paged optimizer's managed memory, outside the allocator",
                 collapsed=False)


def measured_report(cmp_: pd.DataFrame):
    """Every recorded configuration: measured and predicted allocator peaks, error, nvidia-smi, step time ("OOM" kept)."""
    from llmstudy.publishing.tables import Col, table

    df = cmp_.copy()
    df["outcome"] = df["outcome"].replace({"oom": "OOM"})
    df["setup"] = df["setup"].str.replace("/fused-head", "", regex=False)
    return table(df, [Col("record", "Record (GPU)", kind="text"), Col("setup", "Setup", kind="code"), Col("outcome", "Outcome", kind="text"),
                      Col("peak_allocated_GiB", "Measured peak (GiB)", kind="float", missing="OOM"),
                      Col("predicted_peak_GiB", "Predicted (GiB)", kind="float"), Col("error_pct", "Error (%)", kind="float", decimals=1, signed=True),
                      Col("nvml_peak_process_GiB", "nvidia-smi (GiB)", kind="float"), Col("median_step_s", "Step (s)", kind="float", decimals=1)],
                 caption="Setup: method/optimizer/weights/tokens × batch/checkpointing. Measured = torch max_memory_allocated; "
                         "nvidia-smi = the process as NVML reports it", collapsed=True,
                 summary=f"All {len(df)} recorded configurations, measured against predicted")


__all__ = ["ARTICLE_LORA_PRINTOUT", "GB", "GiB", "MEASURED_COLUMNS", "PER_PARAM_SETUPS", "RULES", "RULE_MARKS", "configs_report", "configs_table",
           "counts_report", "counts_table", "measured", "measured_report", "per_param", "pick", "rule_of_thumb_table", "rule_setups",
           "rules_breakdown", "rules_report", "rules_table"]
