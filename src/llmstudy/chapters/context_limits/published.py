"""Published context-length tables (the Llama 4 article, the vLLM blog) and the planner's view of them."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from llmstudy.serving.kv_planner import GPUS, PRECISION_LABEL, Deployment, GiB, Plan, is_h100_emulation, model_facts, plan

# --- Published numbers (labelled sources) ---------------------------------------------------------------------

SCOUT, MAVERICK, MAVERICK_FP8 = "llama-4-scout-17b-16e-instruct", "llama-4-maverick-17b-128e-instruct", "llama-4-maverick-17b-128e-instruct-fp8"
ARTICLE = "Fixstars, Llama 4 context-length article (2025-04, vLLM 0.8.3, H100 80GB), recommendation table"
BLOG = "vLLM blog 'Llama 4 in vLLM' (2025-04-05, v0.8.3+), usage guide"

# (model, weights, GPUs, recommended max_model_len or None for "(OOM)", max_model_len of the article's log line)
ARTICLE_TABLE = (
    ("Scout", SCOUT, "bf16", 4, None, None),
    ("Scout", SCOUT, "fp8-online", 4, 500_000, 200_000),
    ("Scout", SCOUT, "bf16", 8, 1_200_000, 800_000),
    ("Scout", SCOUT, "fp8-online", 8, 1_500_000, 500_000),
    ("Maverick", MAVERICK, "bf16", 4, None, None),
    ("Maverick", MAVERICK_FP8, "fp8-checkpoint", 4, None, None),
    ("Maverick", MAVERICK, "bf16", 8, None, None),
    ("Maverick", MAVERICK_FP8, "fp8-checkpoint", 8, 300_000, 300_000),
)
# (model label, config, weights, gpu, GPUs, published max_model_len)
BLOG_TABLE = (
    ("Scout", SCOUT, "bf16", "h100-80gb", 8, 1_000_000),
    ("Maverick-FP8", MAVERICK_FP8, "fp8-checkpoint", "h100-80gb", 8, 430_000),
    ("Scout", SCOUT, "bf16", "h200", 8, 3_600_000),
    ("Maverick-FP8", MAVERICK_FP8, "fp8-checkpoint", "h200", 8, 1_000_000),
)


def hardware_label(num_gpus: int, gpu: str) -> str:
    """``8×H100 80GB``, ``8×H200``: how the published tables name a machine."""
    return f"{num_gpus}×{GPUS[gpu].name.replace('NVIDIA ', '').replace(' HBM3', '')}"


def article_comparison(version: str = "0.8.3", gpu: str = "h100-80gb", **overrides) -> pd.DataFrame:
    """The article's recommendation table next to the planner (predictions, labelled), one row per cell."""
    rows = []
    for label, model, weights, n, recommended, logged_at in ARTICLE_TABLE:
        dep = Deployment(model=model, gpu=gpu, num_gpus=n, weights=weights, vllm_version=version,
                         max_model_len=logged_at or recommended, **overrides)
        p = plan(dep)
        agrees = p.outcome == "oom" if recommended is None else (p.outcome != "oom" and p.max_model_len_that_starts >= recommended)
        rows.append({
            "model": label, "GPUs": n, "precision": PRECISION_LABEL[weights], "config": model, "weights": weights,
            "article: recommended max_model_len": "OOM" if recommended is None else f"{recommended:,}",
            "planner: outcome": "OOM" if p.outcome == "oom" else "starts",
            "planner: weights/GPU GiB": p.weights_bytes / GiB,
            "planner: KV GiB/GPU": max(p.available_kv_bytes, 0) / GiB,
            "planner: logged KV tokens": p.kv_cache_tokens if p.outcome != "oom" else None,
            "at max_model_len": logged_at,
            "planner: largest max_model_len": p.max_model_len_that_starts if p.outcome != "oom" else None,
            "agrees": agrees,
            "message": p.message,
        })
    return pd.DataFrame(rows)


def blog_comparison(version: str = "0.8.3", **overrides) -> pd.DataFrame:
    """The vLLM blog's context lengths next to the planner's largest max_model_len (bf16 and fp8 KV cache)."""
    rows = []
    for label, model, weights, gpu, n, published in BLOG_TABLE:
        base = Deployment(model=model, gpu=gpu, num_gpus=n, weights=weights, vllm_version=version, max_model_len=published, **overrides)
        p, p8 = plan(base), plan(base.replace(kv_dtype="fp8"))
        rows.append({
            "model": label, "hardware": hardware_label(n, gpu), "config": model,
            "blog: max_model_len": published, "planner: starts at blog length": p.outcome == "ok",
            "planner: largest max_model_len": p.max_model_len_that_starts,
            "planner: largest, fp8 KV": p8.max_model_len_that_starts,
            "fp8 KV gain": p8.max_model_len_that_starts / p.max_model_len_that_starts if p.max_model_len_that_starts else None,
            "model maximum": model_facts(model)["max_position_embeddings"],
            "planner: logged KV tokens at blog length": p.kv_cache_tokens,
        })
    return pd.DataFrame(rows)


def context_vs_gpus(models=((SCOUT, "bf16"), (SCOUT, "fp8-online"), (MAVERICK_FP8, "fp8-checkpoint")), gpus=("h100-80gb", "h200"),
                    counts=(1, 2, 4, 8), versions=("0.8.3", "0.25.0"), kv_dtypes=("auto",)) -> pd.DataFrame:
    """Largest max_model_len that starts, per model x GPU kind x number of GPUs (TP) x version (predictions)."""
    rows = []
    for model, weights in models:
        for gpu in gpus:
            for n in counts:
                for v in versions:
                    for kv in kv_dtypes:
                        dep = Deployment(model=model, gpu=gpu, num_gpus=n, weights=weights, vllm_version=v, kv_dtype=kv)
                        p = plan(dep)
                        rows.append({"model": Path(model).name, "weights": weights, "gpu": gpu, "GPUs": n, "vllm": v, "kv_dtype": kv,
                                     "outcome": "OOM" if p.outcome == "oom" else "starts", "largest_max_model_len": p.max_model_len_that_starts,
                                     "model_maximum": model_facts(model)["max_position_embeddings"], "kv_GiB": max(p.available_kv_bytes, 0) / GiB})
    return pd.DataFrame(rows)


def version_effect(deps) -> pd.DataFrame:
    """The same deployments under 0.8.3 rules, 0.25.0 with the hybrid manager off, and 0.25.0 defaults."""
    rows = []
    for dep in deps:
        for name, kw in (("0.8.3", dict(vllm_version="0.8.3", hybrid_kv=None)),
                         ("0.25.0, hybrid off", dict(vllm_version="0.25.0", hybrid_kv=False)),
                         ("0.25.0 (default)", dict(vllm_version="0.25.0", hybrid_kv=None))):
            p = plan(dep.replace(**kw))
            rows.append({"deployment": dep.short_label(), "rules": name,
                         "outcome": p.outcome, "available_KV_GiB": p.available_kv_bytes / GiB, "cudagraph_GiB": p.cudagraph_bytes / GiB,
                         "activation_GiB": p.activation_peak_bytes / GiB, "logged_KV_tokens": p.kv_cache_tokens,
                         "max_concurrency": p.max_concurrency, "largest_max_model_len": p.max_model_len_that_starts})
    return pd.DataFrame(rows)


DECOMPOSITION = ("weights", "activation peak", "non-torch", "CUDA graphs", "KV cache", "outside the budget")


def decomposition(plans_: list[Plan], labels=None) -> pd.DataFrame:
    """Tidy per-GPU memory split of plans (GiB): the stacked-bar data of the chapter."""
    rows = []
    for i, p in enumerate(plans_):
        label = (labels[i] if labels else p.deployment.label()) + (" - OOM" if p.outcome == "oom" else "")
        frame = GPUS["h100-80gb"].total_bytes if is_h100_emulation(p.deployment.gpu_memory_utilization) else p.total_bytes
        parts = dict(zip(DECOMPOSITION, (p.weights_bytes, p.activation_peak_bytes, p.non_torch_bytes, p.cudagraph_bytes,
                                          max(p.available_kv_bytes, 0), 0 if p.outcome == "oom" else max(0, frame - p.budget_bytes))))
        for comp, b in parts.items():
            rows.append({"config": label, "component": comp, "GiB": b / GiB})
    return pd.DataFrame(rows)
