"""KV-cache capacity planner: what vLLM logs as "GPU KV cache size", and the longest context that starts.

The planner repeats vLLM's own startup arithmetic for one deployment (model config, GPU, parallelism, weight and
KV precision, scheduler limits). The rules are written per vLLM version. Code references are in
``../shared/notes/vllm-kv-cache.md`` (beside the checkout) and in the comments below.

1. **Budget.** ``gpu_memory_utilization x total``, the version's default when not given (0.8.3: 0.9; 0.25.0: 0.92).
   vLLM 0.25 rounds it up with ``math.ceil`` (``vllm/v1/worker/utils.py: request_memory``).
2. **Non-KV memory.** weights + activation peak of the profiling run + non-torch memory, and in 0.21 and later the
   CUDA-graph estimate. vLLM 0.8.3 measures non-torch memory on the whole device, so the CUDA context counts.
   vLLM 0.25 counts only what grew after its init snapshot (``gpu_worker.py: determine_available_memory``).
3. **Blocks.** Available memory // (page size x layers in the largest KV group), then the minimum over ranks.
   A page is ``block x`` :func:`kv_bytes_per_token_layer`: K and V of the rank's KV heads, or for MLA
   (DeepSeek-V2/V3) one latent of ``kv_lora_rank + qk_rope_head_dim`` that every rank holds whole.
4. **Logged tokens.** 0.8.3: ``num_blocks x block_size``. 0.21 and later:
   ``int(num_blocks / blocks_per_request x max_model_len)`` (``kv_cache_utils.py: get_kv_cache_capacity``).
   With the hybrid KV manager, chunked-local and sliding-window layers need fewer blocks per request.
5. **Startup check.** One request of ``max_model_len`` must fit. The largest length that passes is found by the
   same binary search vLLM uses to suggest a length (``estimate_max_model_len``).

The architecture comes from the validated config, layer by layer (:func:`llmstudy.core.models.describe`): dense
MHA/GQA, MoE under any expert naming, sliding-window and chunked hybrids, multimodal ``text_config``, MLA. A model the
planner cannot be exact for (an architecture outside :data:`ARCHITECTURES`, one missing from the version's model
registry, a checkpoint format it does not model) raises :class:`NotModelledError` naming what is not modelled.

Weights per GPU are computed from the architecture: every tensor of the config as transformers names it
(:mod:`llmstudy.calc.tensors`, proven equal to the meta-device model for every shipped config). For each tensor the planner knows whether vLLM shards it across tensor-parallel
ranks, replicates it, or pads it, and which precision it is stored in. Three inputs are properties of a running
system: the activation peak, the non-torch memory and the CUDA-graph estimate. Each has a named default estimate
(``estimate_*``; the activation peak follows the version's model runner, :func:`model_runner`), and a measured value
overrides it. Every plan reports which of its inputs were measured. On the seven one-GPU H200 records of models it
was not fitted on (``data/runs/context_limits/h200x1-g``, ``-g2``) the estimates land within 0.6% of vLLM's tokens.

The planner itself lives in :mod:`llmstudy.calc.kv` (standard library only: the same code runs in the book's browser
calculator); this module re-exports it and adds the pandas tables.
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
