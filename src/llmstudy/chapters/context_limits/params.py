"""The context_limits chapter's parameters, declared once.

The notebook's parameters cell is written from :data:`PARAMS` (``write_notebook_cell``), its first code cell validates
with it, and the chapter's functions take their defaults from it (``DEFAULTS``). ``tests`` prove the notebook agrees.
"""

from __future__ import annotations

from llmstudy.chapters.context_limits.published import SCOUT
from llmstudy.chapters.context_limits.run import resolve_configs
from llmstudy.core.params import Param, known_model, positive
from llmstudy.serving.kv_planner import DEPLOYMENT_DEFAULTS as PLANNER
from llmstudy.serving.kv_planner import GPUS, KV_DTYPES, VERSIONS, WEIGHT_FORMATS


def _configs_ok(v) -> str | None:
    try:
        resolve_configs(v)
    except ValueError as e:
        return str(e)
    return None


def _max_model_len_ok(v) -> str | None:
    return None if v is None or v > 0 else "must be a positive number of tokens (or None: the model's maximum)"


PARAMS: dict[str, Param] = {
    "mode": Param(str, "analyze", "analyze: render the predictions and the run records (CPU); run: start vLLM servers and write a "
                  "run record", choices=("analyze", "run")),
    "model": Param(str, SCOUT, "the model of the page: a name under data/models or a path to a config.json (forks set it)",
                   check=known_model),
    # the plan's settings default to the planner's (``Deployment``, as ``llmstudy capacity``), except the number of GPUs
    # (the chapter's 4xH200 servers) and the weights (the checkpoint's own format)
    "gpu": Param(str, PLANNER["gpu"], "GPU kind of the model's plan", choices=tuple(GPUS)),
    "num_gpus": Param(int, 4, "number of GPUs (tensor parallel) of the model's plan", check=positive),
    "weights": Param(str, "auto", "weight format of the model's plan (auto: the checkpoint's, bf16 for an unquantized one)",
                     choices=("auto", *WEIGHT_FORMATS)),
    "kv_dtype": Param(str, PLANNER["kv_dtype"], "KV-cache dtype of the model's plan", choices=tuple(KV_DTYPES)),
    "vllm_version": Param(str, PLANNER["vllm_version"], "vLLM rules of the model's plan", choices=tuple(VERSIONS)),
    "max_model_len": Param((int, type(None)), PLANNER["max_model_len"], "max_model_len of the model's plan (None: the model's maximum)",
                           check=_max_model_len_ok),
    "configs": Param(list, ["a"], "run mode: configuration names or device calls a-c (4 GPUs), d-e (8 GPUs) (see run.CALLS)",
                     check=_configs_ok, item=str),
    "run_id": Param(str, "", "run id for run mode (default: timestamp-Ngpu)"),
    "deadline_s": Param((int, float), 570, "run mode: stop starting servers after this many seconds", check=positive),
}
DEFAULTS = {k: p.default for k, p in PARAMS.items()}
# the parameters of the model's own plan (the rest select the mode and the run)
PLAN_PARAMS = ("gpu", "num_gpus", "weights", "kv_dtype", "vllm_version", "max_model_len")
NOTEBOOK_HEADER = "# Parameters (papermill), written from llmstudy.chapters.context_limits.params.PARAMS. mode=\"run\" starts vLLM servers."


def notebook_params() -> dict[str, Param]:
    """The spec (kept for callers of the old name)."""
    return PARAMS
