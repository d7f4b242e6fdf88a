"""The habits of the repository: ruff passes, the fast loop refuses slow work, no absolute paths outside the checkout."""

import re
import subprocess
import sys

import pytest
from conftest import ROOT, slow_reason


def test_slow_work_is_recognised_and_stand_ins_are_not(tmp_path):
    py = sys.executable
    assert slow_reason(["jupyter-book", "build", "book"]) == "runs jupyter-book"
    assert slow_reason([str(ROOT / ".venv" / "bin" / "jupyter-book"), "build"]) == "runs jupyter-book"  # a #! entry point
    assert slow_reason("/x/.venv/bin/papermill a.ipynb b.ipynb") == "runs papermill"
    assert slow_reason([py, "-m", "vllm.entrypoints.cli.main", "serve", "m"]) == "runs python -m vllm.entrypoints.cli.main"
    assert slow_reason([py, "-m", "sglang.launch_server", "--model-path", "m"]) == "runs python -m sglang.launch_server"
    assert slow_reason([py, "-m", "llmstudy.serving.hfserve", "m"]) == "runs python -m llmstudy.serving.hfserve"
    sup = [py, "-m", "llmstudy.serving.servers", "supervise", "1", "30", "--"]
    assert slow_reason([*sup, py, "-m", "vllm.entrypoints.cli.main", "serve", "m"]).endswith("vllm.entrypoints.cli.main")
    fake = tmp_path / "fake-python"
    fake.write_text("#!/bin/sh\nexec python3 fake.py\n")
    assert slow_reason([*sup, str(fake), "-m", "vllm.entrypoints.cli.main", "serve", "m"]) == ""  # a stand-in
    assert slow_reason([py, "-m", "llmstudy.serving.benchworker"]) == ""  # a load-generation client
    assert slow_reason(["git", "status"]) == ""
    code = "from llmstudy.serving import sweep as SB\nSB.run_sweep('batch_size_sweep', 'm', [])"
    assert slow_reason([py, "-c", code]) == "runs python -c code calling run_sweep"
    assert slow_reason([py, "-c", "import json; print(1)"]) == ""


def test_a_fast_test_that_runs_a_notebook_or_a_server_fails():
    import papermill

    with pytest.raises(pytest.fail.Exception, match="executes a notebook but is not marked"):
        papermill.execute_notebook("a.ipynb", "b.ipynb")
    with pytest.raises(pytest.fail.Exception, match="runs jupyter-book but is not marked"):
        subprocess.run(["jupyter-book", "build", "book"])


@pytest.mark.slow
def test_the_slow_mark_lifts_the_guard():
    assert subprocess.run([sys.executable, "-m", "papermill", "--version"], capture_output=True).returncode == 0


def test_ruff_passes_on_the_tree():
    ruff = ROOT / ".venv" / "bin" / "ruff"
    proc = subprocess.run([str(ruff) if ruff.exists() else "ruff", "check", "--output-format", "concise", str(ROOT)], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-1000:]


def test_make_test_runs_ruff_then_the_suite_and_ci_runs_make_test():
    make = (ROOT / "Makefile").read_text()
    assert re.search(r"^test: lint ", make, re.M) and re.search(r"^lint: .*\n\t\$\(VENV\)/bin/ruff check \.$", make, re.M)
    assert re.search(r"^ruff==\d", (ROOT / "envs" / "cpu.txt").read_text(), re.M)
    assert "make test" in (ROOT / ".ci" / "run").read_text() and "make test" in (ROOT / "README.md").read_text()


# Paths of a developer's machine (the device scripts' /root/… paths are on the GPU machine they run on).
ABSOLUTE = re.compile(r"(?<![\w.])/(work|home|Users)/[\w.+-]+")


def test_no_absolute_paths_outside_the_repository_in_code_or_docs():
    tracked = subprocess.run(["git", "ls-files", "src", "scripts", "book", "README.md", "CHANGELOG.md", "Makefile", "envs", ".github"],
                             cwd=ROOT, capture_output=True, text=True).stdout.split()
    found = []
    for rel in tracked:
        p = ROOT / rel
        if p.is_file() and p.suffix not in (".png", ".csv", ".json", ".gz"):
            for i, line in enumerate(p.read_text(errors="replace").splitlines(), 1):
                if ABSOLUTE.search(line):
                    found.append(f"{rel}:{i}: {line.strip()[:120]}")
    assert not found, "\n".join(found)
