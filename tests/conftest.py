import os
import re
import subprocess
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


def execute_chapter(name: str, tmp_path, **params):
    """Run notebooks/<name>.ipynb under papermill with ``params``; returns (output text, glued values, notebook)."""
    import json

    import papermill as pm

    out = tmp_path / f"{name}.out.ipynb"
    pm.execute_notebook(str(ROOT / "notebooks" / f"{name}.ipynb"), str(out), parameters=params, cwd=str(ROOT / "notebooks"),
                        progress_bar=False, kernel_name="python3")
    nb = json.loads(out.read_text())
    glue = {o["metadata"]["scrapbook"]["name"]: o["data"]["application/papermill.record/text/plain"]
            for c in nb["cells"] for o in c.get("outputs", []) if o.get("metadata", {}).get("scrapbook")}
    return out.read_text(), glue, nb


def thin_code(nb: dict, max_lines: int) -> bool:
    """A thin notebook: no function defined in it, fewer than ``max_lines`` lines of code in all."""
    code = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    return not any("def " in s for s in code) and sum(len(s.splitlines()) for s in code) < max_lines


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


# --- the fast loop stays fast: slow work needs @pytest.mark.slow ---------------------------------------------------
# `pytest -m "not slow"` is the fast loop (README). A test that executes a notebook (papermill, nbclient), builds the
# book (jupyter-book) or starts a real server (vLLM, SGLang, `transformers serve`, trtllm-serve, Triton) without the
# slow mark fails here, naming what it started. A stand-in server (a `#!` script such as tests/fixtures/fake_vllm.py's
# wrapper) is fast and allowed.
SLOW_PROGRAMS = {"jupyter-book", "papermill", "vllm", "trtllm-serve", "tritonserver", "sglang", "genai-perf", "perf_analyzer"}
SLOW_CODE = re.compile(r"\b(execute_notebook|run_sweep|run_part|VLLMServer|SGLangServer|TransformersServer|WheelTritonServer|run_genai_perf|build_book|build_site)\b")
SLOW_MODULES = re.compile(r"^(vllm\.|sglang\.launch_server|llmstudy\.serving\.hfserve|papermill|jupyter_book)")


def _is_script(program: str) -> bool:
    """A ``#!`` script (a stand-in), not a compiled interpreter or engine."""
    try:
        with open(program, "rb") as f:
            return f.read(2) == b"#!"
    except OSError:
        return False


def slow_reason(argv) -> str:
    """Why starting ``argv`` is slow work ("" if it is not): a notebook run, a book build or a real server."""
    if isinstance(argv, (str, bytes, os.PathLike)):
        argv = str(argv if not isinstance(argv, bytes) else argv.decode()).split()
    argv = [str(a) for a in argv]
    if "supervise" in argv and "--" in argv:  # llmstudy.serving.servers' supervisor: judge the server it starts
        argv = argv[argv.index("--") + 1:]
    if not argv:
        return ""
    if Path(argv[0]).name in SLOW_PROGRAMS:  # entry points (#! scripts) of the slow tools included
        return f"runs {Path(argv[0]).name}"
    if _is_script(argv[0]):  # a stand-in interpreter (tests/serving's fake vLLM)
        return ""
    for i, a in enumerate(argv[:-1]):
        if a == "-m" and SLOW_MODULES.match(argv[i + 1]):
            return f"runs python -m {argv[i + 1]}"
        if a == "-c" and SLOW_CODE.search(argv[i + 1]):  # a child Python that will start the slow work itself
            return f"runs python -c code calling {SLOW_CODE.search(argv[i + 1]).group(0)}"
    return ""


SLOW_FIXTURES = {"built_site"}  # fixtures that build the book


def pytest_runtest_setup(item):
    """Before any fixture: a fast test may not ask for a fixture that builds the book."""
    used = SLOW_FIXTURES & set(getattr(item, "fixturenames", ()))
    if used and not item.get_closest_marker("slow"):
        pytest.fail(f"{item.nodeid} uses {', '.join(sorted(used))} (a book build) but is not marked @pytest.mark.slow", pytrace=False)


@pytest.fixture(autouse=True)
def _slow_work_needs_the_slow_mark(request, monkeypatch):
    if request.node.get_closest_marker("slow"):
        yield
        return

    def refuse(what: str):
        pytest.fail(f"{request.node.nodeid} {what} but is not marked @pytest.mark.slow (the fast loop must stay fast)", pytrace=False)

    popen_init = subprocess.Popen.__init__

    def checked_init(self, args, *a, **k):
        reason = slow_reason(args)
        if reason:
            refuse(reason)
        popen_init(self, args, *a, **k)

    monkeypatch.setattr(subprocess.Popen, "__init__", checked_init)
    import nbclient
    import papermill
    import papermill.clientwrap
    import papermill.execute

    def no_notebook(*a, **k):
        refuse("executes a notebook")

    for owner, name in ((papermill, "execute_notebook"), (papermill.execute, "execute_notebook"),
                        (papermill.clientwrap.PapermillNotebookClient, "execute"),
                        (nbclient.NotebookClient, "execute"), (nbclient.NotebookClient, "async_execute")):
        monkeypatch.setattr(owner, name, no_notebook)
    yield
