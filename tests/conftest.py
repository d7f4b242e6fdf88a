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


@pytest.fixture(scope="session")
def built_site(tmp_path_factory):
    """The versioned site built once for the session by ``llmstudy.publishing.site.build_site`` (an earlier version kept).

    Returns (site folder, build folder, version, cold build seconds).
    """
    import json
    import time

    from llmstudy.publishing import site as publish

    base = tmp_path_factory.mktemp("site")
    site, out = base / "site", base / "build"
    old = site / "0.0.1"
    old.mkdir(parents=True)
    (old / "index.html").write_text("<p>an earlier version</p>")
    (old / publish.STAMP_FILE).write_text(json.dumps({"version": "0.0.1", "git_sha": None, "git_dirty": None, "data_hash": "", "built_utc": ""}))
    t0 = time.perf_counter()
    publish.build_site(ROOT, site=site, path_output=out, quiet=True)
    return site, out, publish.version(ROOT), time.perf_counter() - t0
