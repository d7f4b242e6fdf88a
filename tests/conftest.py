import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
# Subprocesses (papermill kernels, workers, the CLI) import this checkout's llmstudy, not another editable install.
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH", "")) if p)
os.environ.setdefault("LLMSTUDY_ROOT", str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture
def runs_root(tmp_path, monkeypatch):
    """A scratch data/runs: nothing a test writes lands in the repository's records."""
    d = tmp_path / "runs"
    d.mkdir()
    monkeypatch.setenv("LLMSTUDY_RUNS", str(d))
    return d
