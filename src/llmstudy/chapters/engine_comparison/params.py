"""The parameters of the engine_comparison chapter, declared once.

The notebook's parameters cell is written from :data:`PARAMS` (``write_notebook_cell``), its first code cell validates
with it, ``llmstudy engines`` builds its flags from it (``add_arguments``) and :func:`~.plan.run_part` takes its
defaults from it.
"""

from __future__ import annotations

from llmstudy.core import records as R
from llmstudy.core.params import Param, known_model

PARTS = ("gptoss-vllm", "second-engine", "cpu-smoke")
SECOND_ENGINES = ("sglang", "transformers")
GPTOSS_MODEL = "gpt-oss-20b"
MODEL_7B = "llama-2-7b-gptq"


def _run_ids_ok(v) -> str | None:
    bad = [x for x in v if not isinstance(x, str) or not R.RUN_ID_RE.match(x)]
    return f"not run ids: {bad}" if bad else None


def _run_id_ok(v) -> str | None:
    return None if v == "" or R.RUN_ID_RE.match(v) else "letters, digits, '.', '_', '-'"


PARAMS: dict[str, Param] = {
    "mode": Param(str, "analyze", "analyze: render the run records (CPU); run: run `part` on this machine and write a record", choices=("analyze", "run")),
    "part": Param(str, "second-engine", "gptoss-vllm | second-engine | cpu-smoke", choices=PARTS),
    "second_engine": Param(str, "sglang", "the engine measured against vLLM", choices=SECOND_ENGINES),
    "run_id": Param(str, "", "run mode: the record's id (reuse it to resume)", check=_run_id_ok),
    "run_ids": Param(list, [], "analyze mode: engine_comparison records to show (empty = all)", check=_run_ids_ok, item=str),
    "budget_s": Param((float, int, type(None)), None, "run mode: start no new server or point after this many seconds", check=lambda v: None if v is None or v > 0 else "must be > 0 or None"),
    "model_7b": Param(str, MODEL_7B, "the model of the second-engine part (the article's 4-bit 7B case, ch. 6.6)", check=known_model),
    "gptoss_model": Param(str, GPTOSS_MODEL, "the model of the gptoss-vllm part (the article's ch. 8 model)", check=known_model),
}

