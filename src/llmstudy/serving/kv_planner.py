"""KV-cache capacity planner: what vLLM logs as "GPU KV cache size", and the longest context that starts.

The planner itself (its rules per vLLM version, sources and defaults) lives in :mod:`llmstudy.calc.kv`, standard
library only, so the same code runs in the book's browser calculator; read its docstring. This module re-exports it
and adds the pandas tables.
"""

from __future__ import annotations

import pandas as pd

from llmstudy.calc.kv import (  # noqa: F401 - re-exported: the stdlib core is the planner
    _LAYER_RE,
    ARCHITECTURES,
    BLOCK_SIZE,
    DEFAULT_CUDA_CONTEXT,
    DEFAULT_CUDAGRAPH,
    DEFAULT_NON_TORCH_TP,
    DEFAULT_NON_TORCH_TP1,
    DEPLOYMENT_DEFAULTS,
    EXPERIMENT,
    GPUS,
    KV_DTYPES,
    MIN_VERSION,
    PRECISION_LABEL,
    QUANT_METHODS,
    V2_RUNNER_MOE_ARCHITECTURES,
    VERSIONS,
    VOCAB_PADDING,
    WEIGHT_COLUMNS,
    WEIGHT_FORMATS,
    Deployment,
    GiB,
    GpuKind,
    MiB,
    NotModelledError,
    Plan,
    VersionRules,
    _blocks_needed,
    _blocks_per_request,
    _fits,
    _forward_bytes_per_token,
    _ignored,
    _kv_layer_bytes,
    _module_name,
    _positive_int,
    _pp_layers,
    _precision,
    _rank_numel,
    _rope_caches,
    _scale_bytes,
    _stage_groups,
    _vkey,
    emulated_utilization,
    estimate_activation_peak,
    estimate_cudagraph,
    estimate_non_torch,
    is_h100_emulation,
    kv_bytes_per_token,
    kv_bytes_per_token_layer,
    kv_groups,
    kv_layout,
    largest_model_len,
    layer_kinds,
    model_facts,
    model_runner,
    page_bytes,
    plan,
    plan_lines,
    plan_notes,
    tokens_for_available,
    weight_rows,
    weights_per_gpu,
)
from llmstudy.core import models as M  # noqa: F401 - the models layer the chapters reach through this module


def weight_table(dep: Deployment) -> pd.DataFrame:
    """One row per tensor: component, layer, PP stage, precision, and bytes held by the busiest TP rank."""
    return pd.DataFrame(weight_rows(dep), columns=list(WEIGHT_COLUMNS))


def plans(deps) -> pd.DataFrame:
    """Tidy table of plans (one row per deployment)."""
    return pd.DataFrame([plan(d).row() for d in deps])
