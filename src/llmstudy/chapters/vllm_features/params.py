"""The parameters of the vllm_features chapter, declared once.

The notebook's parameters cell is written from :data:`PARAMS` (``write_notebook_cell``), its first code cell validates
with it, ``llmstudy features`` builds its flags from it (``add_arguments``) and :func:`~.plan.run` takes its
defaults from it.
"""

from __future__ import annotations

from llmstudy.core import records as R
from llmstudy.core.params import Param, known_model, positive_ints


def _arms_ok(v) -> str | None:
    from llmstudy.chapters.vllm_features.plan import resolve

    try:
        resolve(v)
    except ValueError as e:
        return str(e)
    return None


def _run_id_ok(v) -> str | None:
    return None if v == "" or R.RUN_ID_RE.match(v) else "letters, digits, '.', '_', '-'"


def _run_ids_ok(v) -> str | None:
    bad = [x for x in v if not isinstance(x, str) or not R.RUN_ID_RE.match(x)]
    return f"not run ids: {bad}" if bad else None


def _budget_ok(v) -> str | None:
    return None if v is None or v > 0 else "must be > 0 seconds or None"




PARAMS: dict[str, Param] = {
    "mode": Param(str, "analyze", "analyze: render the run records (CPU); run: measure on this machine's vLLM and write a record", choices=("analyze", "run")),
    "run_ids": Param(list, [], "analyze mode: records to show (empty = every record of the experiment)", check=_run_ids_ok, item=str),
    "arms": Param(str, "core", "groups (core, quant, kernels, spec, extra) and/or arm names, comma-separated", check=_arms_ok),
    "run_id": Param(str, "", "run mode: the new record's id (empty = timestamp); reuse it to resume", check=_run_id_ok),
    "budget_s": Param((float, int, type(None)), None, "run mode: start nothing that would end after this many seconds (resume with the same run_id)", check=_budget_ok),
    "model": Param(str, "llama-2-7b", "the 7B arms' model config: run mode measures it, analyze mode shows its records (the spec arms serve gemma-3-270m's checkpoint, named as such)", check=known_model),
    "repeats": Param(int, 2, "run mode: repeats of every workload on every server", check=lambda v: None if v >= 2 else "must be >= 2 (the run-to-run spread needs two)"),
    "concurrency": Param(list, [1, 16, 64], "run mode: client concurrencies of the standard workload", check=positive_ints),
}


def notebook_params() -> dict[str, Param]:
    """Parameters of notebooks/vllm_features.ipynb (:data:`PARAMS`)."""
    return PARAMS
