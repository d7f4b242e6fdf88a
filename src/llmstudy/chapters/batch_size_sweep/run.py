"""Run mode: the sweep's points from the parameters, run on this machine's vLLM into one resumable record."""

from __future__ import annotations

from pathlib import Path

from llmstudy.chapters.batch_size_sweep.params import EXPERIMENT
from llmstudy.chapters.serve_sweeps import server_settings
from llmstudy.serving import sweep as SB


def plan(P: dict) -> list[SB.Point]:
    """max_num_seqs x concurrency at fixed lengths (the article's max_batch_size sweep)."""
    return SB.plan_batch_size(P["max_num_seqs"], P["concurrency"], P["input_len"], P["output_len"], P["max_model_len"], **server_settings(P))


def run(P: dict, **options) -> Path:
    """Run the plan (``options``: :data:`llmstudy.serving.sweep.RUN_OPTIONS`); returns the record's path.
    Raises :class:`llmstudy.serving.sweep.SweepIncomplete` when the time budget is spent (rerun to resume)."""
    return SB.run_sweep(EXPERIMENT, P["model"], plan(P), run_id=P["run_id"], budget_s=P["budget_s"], parameters=P, **options)


def run_mode(P: dict) -> list[str]:
    """The notebook's run mode (:func:`llmstudy.chapters.serve_sweeps.run_mode`): the new record's id, or []."""
    from llmstudy.chapters.serve_sweeps import run_mode as _run_mode

    return _run_mode(run, P)
