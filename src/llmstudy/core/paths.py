"""Where the repository's data lives. Overridable with LLMSTUDY_ROOT for tests and forks."""

from __future__ import annotations

import os
from pathlib import Path


def repo_root() -> Path:
    """The study's root folder: $LLMSTUDY_ROOT, else the checkout this package sits in, else the cwd."""
    env = os.environ.get("LLMSTUDY_ROOT")
    if env:
        return Path(env).resolve()
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "_config.yml").exists() and (parent / "data").is_dir():
            return parent
    return Path.cwd()


def data_dir() -> Path:
    return repo_root() / "data"


def runs_dir() -> Path:
    """Where run records live: $LLMSTUDY_RUNS (tests, scratch reruns) or ``data/runs``."""
    env = os.environ.get("LLMSTUDY_RUNS")
    return Path(env).resolve() if env else data_dir() / "runs"


def models_dir() -> Path:
    return data_dir() / "models"
