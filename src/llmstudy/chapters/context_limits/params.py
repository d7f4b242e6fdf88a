"""The context_limits chapter's parameters (one home: notebook cell, CLI and validation derive from it)."""

from __future__ import annotations

from llmstudy.chapters.context_limits.run import resolve_configs

# --- The chapter's parameters -------------------------------------------------------------------------------------

def notebook_params():
    from llmstudy.core.params import Param

    def configs_ok(v):
        try:
            resolve_configs(v)
        except ValueError as e:
            return str(e)
        return None

    return {
        "mode": Param(str, "analyze", "analyze: render recorded runs (CPU); run: start vLLM servers and write a run record", choices=("analyze", "run")),
        "configs": Param(list, ["a"], "run mode: configuration names or device calls a-c (4 GPUs), d-e (8 GPUs) (see capacity.CALLS)", check=configs_ok),
        "run_id": Param(str, "", "run id for run mode (default: timestamp-Ngpu)"),
        "deadline_s": Param((int, float), 570, "run mode: stop starting servers after this many seconds", check=lambda v: None if v > 0 else "must be > 0"),
    }
