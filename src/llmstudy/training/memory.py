"""Fine-tuning memory accounting: a component model of GPU memory for full fine-tuning, LoRA and QLoRA.

The model (what each component counts and why, and the article's rules as its special cases) lives in
:mod:`llmstudy.calc.memory`, standard library only, so the same code runs in the book's browser calculator; read its
docstring. This module re-exports it and adds the pandas tables, the comparison with measured runs and the figure.
"""

from __future__ import annotations

import pandas as pd

from llmstudy.calc import memory as _core
from llmstudy.calc.memory import (  # noqa: F401 - re-exported: the stdlib core is the memory model
    BNB_8BIT_MIN_SIZE,
    BNB_8BIT_OPTIMIZERS,
    BNB_BLOCK,
    BNB_PAGED_MIN_SIZE,
    CUBLAS_WORKSPACE,
    DQ_BLOCK,
    DTYPE_BYTES,
    FUSED_TOKEN_TILE,
    FUSED_VOCAB_TILE,
    GB,
    LOSS_HEADS,
    MEMORY_COMPONENTS,
    METHODS,
    NF4_BLOCK,
    NOT_MODELLED_MLA,
    NOT_MODELLED_MOE,
    OPTIMIZERS,
    RUNNABLE_OPTIMIZERS,
    GiB,
    NotModelled,
    Setup,
    _lora_tensors,
    _nf4_bytes,
    _optimizer_bytes,
    activation_bytes_per_token_layer,
    approximations,
    not_modelled,
    not_modelled_terms,
    parse_method,
    summarize,
)
from llmstudy.core import models as M  # noqa: F401 - the models layer the chapters reach through this module


def predict(setup: Setup) -> pd.DataFrame:
    """Predicted memory by component for one setup (bytes): :func:`llmstudy.calc.memory.predict_rows` as a table.

    ``location`` says where it lives (``device``: the PyTorch allocator; ``paged``: CUDA managed memory) and
    ``phase`` when it is alive: ``always``, ``backward`` (forward/backward of a micro-batch) or ``step`` (the
    optimizer update). The allocator's peak is the larger of always+backward and always+step.
    """
    return pd.DataFrame(_core.predict_rows(setup), columns=["component", "bytes", "location", "phase", "detail"])


def breakdown(setups) -> pd.DataFrame:
    """Tidy table: one row per (setup, component) with bytes, GiB and bytes per parameter."""
    rows = []
    for s in setups:
        sm = summarize(s)
        for c in MEMORY_COMPONENTS + ("paged",):
            b = sm[f"{c}_bytes"]
            rows.append(
                {
                    "model": s.model,
                    "method": s.method,
                    "optimizer": s.optimizer,
                    "weight_dtype": s.weight_dtype,
                    "seq_len": s.seq_len,
                    "micro_batch": s.micro_batch,
                    "grad_ckpt": s.grad_ckpt,
                    "setup": s.label(),
                    "component": c,
                    "bytes": b,
                    "GiB": b / GiB,
                    "bytes_per_param": b / sm["params"],
                    "params": sm["params"],
                }
            )
    return pd.DataFrame(rows)


# --- Setups from method specs, and what the training worker can run ------------------------------------------

def refusal(setup: Setup, cuda: bool) -> str | None:
    """Why this machine cannot run a setup, or None."""
    if setup.method != "full" and setup.targets().parameters:
        return ("LoRA on fused expert parameters (peft target_parameters) is not wired into the training worker; "
                "give lora targets without experts")
    if setup.optimizer not in RUNNABLE_OPTIMIZERS:
        return f"optimizer {setup.optimizer} is a published rule, not an optimizer the run mode executes"
    if not cuda and setup.method == "qlora":
        return "QLoRA needs a CUDA GPU (bitsandbytes 4-bit kernels)"
    if not cuda and setup.optimizer in BNB_8BIT_OPTIMIZERS:
        return f"{setup.optimizer} needs a CUDA GPU (bitsandbytes)"
    if setup.weight_dtype == "fp16":
        return "fp16 weights are not run (the recipe trains in bf16)"
    return None


def compare(results: pd.DataFrame, loss_head: str = "fused") -> pd.DataFrame:
    """Measured peak (torch allocator) next to the model's prediction for each measured row, with error %."""
    out = []
    for _, r in results.iterrows():
        s = Setup(model=r["model"], method=r["method"], optimizer=r["optimizer"], weight_dtype=r["weight_dtype"], seq_len=int(r["seq_len"]), micro_batch=int(r["micro_batch"]), grad_ckpt=bool(r["grad_ckpt"]), lora_r=int(r["lora_r"]) if pd.notna(r.get("lora_r")) else 4, loss_head=loss_head)
        try:
            sm = summarize(s)
        except Exception:  # a model config no longer present: keep the row, no prediction
            sm = None
        row = r.to_dict()
        row["predicted_peak_GiB"] = sm["peak_bytes"] / GiB if sm else None
        row["predicted_paged_GiB"] = sm["paged_bytes"] / GiB if sm else None
        meas = r.get("peak_allocated_GiB")
        row["error_pct"] = 100 * (row["predicted_peak_GiB"] - meas) / meas if sm and pd.notna(meas) and r["outcome"] == "ok" else None
        out.append(row)
    return pd.DataFrame(out)


def loss_head_errors(results: pd.DataFrame) -> pd.DataFrame:
    """The largest |error| % over the measured rows, per loss head: which head the recorded runs actually had."""
    ok = results[(results.outcome == "ok") & results.peak_allocated_GiB.notna()] if len(results) else results
    rows = []
    for head in LOSS_HEADS:
        c = compare(ok, head) if len(ok) else pd.DataFrame(columns=["error_pct", "run_id", "setup"])
        worst = c.loc[c.error_pct.abs().idxmax()] if len(c) else None
        rows.append({"loss_head": head, "rows": len(c), "max_abs_error_pct": abs(worst.error_pct) if worst is not None else None,
                     "worst": f"{worst.run_id} {worst.setup}" if worst is not None else None})
    return pd.DataFrame(rows).set_index("loss_head")


def stacked_bars(df: pd.DataFrame, x: str, title: str, hue_order=MEMORY_COMPONENTS + ("paged",), ax=None, unit: str = "GiB"):
    """Stacked bars of a tidy breakdown (columns ``x``, ``component``, ``unit``) with seaborn's palette."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    wide = df.pivot_table(index=x, columns="component", values=unit, aggfunc="sum", sort=False).reindex(columns=[c for c in hue_order if c in set(df.component)]).fillna(0)
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 0.5 + 0.45 * len(wide)))
    left = None
    colors = dict(zip(hue_order, sns.color_palette("deep", len(hue_order))))
    for comp in wide.columns:
        ax.barh(wide.index, wide[comp], left=left, label=comp, color=colors[comp])
        left = wide[comp] if left is None else left + wide[comp]
    ax.set_xlabel(unit)
    ax.set_title(title)
    ax.invert_yaxis()
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small")
    return ax
