"""The one time-budget and resume scheme for work that spans several time-limited GPU calls.

A :class:`Budget` says how long this call may still start new work (``None``: no limit); :class:`Progress` keeps,
in a work folder, the active seconds of every earlier call and when the first one started, so a resumed run's record
reports its whole active time. Finished units of work are saved by the caller (one file each); a rerun with the
same run id skips them.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from llmstudy.core.records import utcnow, write_json_atomic


class Budget:
    """Seconds left for this call; ``fits(need_s)`` says whether a unit of work estimated at ``need_s`` may start."""

    def __init__(self, seconds: float | None = None):
        self.seconds = seconds  # a budget of 0 or less is spent before it starts
        self.t0 = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def left(self) -> float:
        return math.inf if self.seconds is None else self.seconds - self.elapsed()

    def fits(self, need_s: float = 0.0) -> bool:
        return self.left() >= need_s

    @property
    def limited(self) -> bool:
        return self.seconds is not None


class Progress:
    """``progress.json`` in a work folder: active seconds of the calls so far and the first call's start (UTC)."""

    def __init__(self, work: Path):
        self.path = Path(work) / "progress.json"
        prog = json.loads(self.path.read_text()) if self.path.exists() else {}
        self.before = float(prog.get("active_s", 0.0))
        self.first_started_utc = prog.get("first_started_utc") or utcnow()

    def active_s(self, budget: Budget) -> float:
        """The whole active time: earlier calls plus this one so far."""
        return self.before + budget.elapsed()

    def save(self, budget: Budget) -> None:
        write_json_atomic(self.path, {"active_s": self.active_s(budget), "first_started_utc": self.first_started_utc})
