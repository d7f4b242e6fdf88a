"""Run mode: the max_model_len sweep and the input x output grid from the parameters, one resumable record."""

from __future__ import annotations

from pathlib import Path

from llmstudy.chapters.length_sweep.params import EXPERIMENT
from llmstudy.chapters.serve_sweeps import server_settings
from llmstudy.serving import sweep as SB


def plan(P: dict) -> list[SB.Point]:
    """Sweep 2 (max_model_len at a fixed workload) and/or sweep 3 (input x output lengths on one server)."""
    server = server_settings(P)
    points = []
    if "max_model_len" in P["sweeps"]:
        points += SB.plan_max_model_len(P["max_model_lens"], P["concurrency"], P["input_len"], P["output_len"], P["max_num_seqs"], **server)
    if "io" in P["sweeps"]:
        points += SB.plan_io_grid(P["io_input_lens"], P["io_output_lens"], P["io_concurrency"], P["io_max_model_len"], P["max_num_seqs"], **server)
    return points


def server_env(P: dict) -> dict | None:
    return {"VLLM_ALLOW_LONG_MAX_MODEL_LEN": "1"} if P["allow_long_max_model_len"] else None


def run(P: dict, **options) -> Path:
    """Run the plan (``options``: :data:`llmstudy.serving.sweep.RUN_OPTIONS`); returns the record's path.
    Raises :class:`llmstudy.serving.sweep.SweepIncomplete` when the time budget is spent (rerun to resume)."""
    return SB.run_sweep(EXPERIMENT, P["model"], plan(P), run_id=P["run_id"], budget_s=P["budget_s"], server_env=server_env(P), parameters=P, **options)


def run_mode(P: dict) -> list[str]:
    """The notebook's run mode (:func:`llmstudy.chapters.serve_sweeps.run_mode`): the new record's id, or []."""
    from llmstudy.chapters.serve_sweeps import run_mode as _run_mode

    return _run_mode(run, P)
