"""Forking the study for a new model: ``llmstudy fork`` end to end with a second model (a small Mistral config).

The fork runs in an overlay of the repository (every top-level entry linked, ``data/models`` a real folder of
links), so the new model folder never lands in the checkout.
"""

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT

from llmstudy.publishing import fork as F
from llmstudy.core import models as M
from llmstudy.publishing import site as publish

FIXTURE = ROOT / "tests" / "fixtures" / "mini-mistral" / "config.json"


def _overlay(tmp_path):
    root = tmp_path / "repo"
    root.mkdir()
    for p in ROOT.iterdir():
        if p.name not in ("data", "_build", "site"):
            (root / p.name).symlink_to(p)
    (root / "data").mkdir()
    for p in (ROOT / "data").iterdir():
        if p.name != "models":
            (root / "data" / p.name).symlink_to(p)
    (root / "data" / "models").mkdir()
    for p in (ROOT / "data" / "models").iterdir():
        (root / "data" / "models" / p.name).symlink_to(p)
    return root


def _cli(root, *args, timeout=1500):
    env = dict(os.environ, LLMSTUDY_ROOT=str(root))
    return subprocess.run([sys.executable, "-m", "llmstudy.cli", *args], capture_output=True, text=True, env=env, cwd=root, timeout=timeout)


def test_bad_configs_and_names_are_refused_before_anything_is_written(tmp_path, monkeypatch):
    root = _overlay(tmp_path)
    monkeypatch.setenv("LLMSTUDY_ROOT", str(root))
    (tmp_path / "bad.json").write_text('{"hidden_size": 8}')
    with pytest.raises(F.ForkError, match="needs a model_type"):
        F.add_model(tmp_path / "bad.json", "bad")
    (tmp_path / "odd.json").write_text('{"model_type": "no-such-architecture"}')
    with pytest.raises(F.ForkError, match="transformers cannot build"):
        F.add_model(tmp_path / "odd.json", "odd")
    with pytest.raises(F.ForkError, match="lower-case"):
        F.add_model(FIXTURE, "Bad Name")
    with pytest.raises(F.ForkError, match="exists already"):
        F.add_model(FIXTURE, "llama-2-7b")
    assert not (root / "data" / "models" / "bad").exists() and not (root / "data" / "models" / "odd").exists()
    proc = _cli(root, "fork", str(tmp_path / "bad.json"), "--name", "bad")
    assert proc.returncode == 2 and "llmstudy: error:" in proc.stderr and "Traceback" not in proc.stderr


def test_parameters_that_name_a_model_point_at_the_new_one():
    nbs = {nb.stem: nb for nb in publish.chapters(ROOT)}
    assert F.chapter_parameters(nbs["memory_accounting"], "x") == {"model": "x", "compare_models": ["x"], "mode": "analyze"}
    assert F.chapter_parameters(nbs["lora_vs_qlora"], "x") == {"model": "x", "speed_model": "x", "mode": "analyze"}
    assert F.chapter_parameters(nbs["context_limits"], "x") is None  # no model parameter


@pytest.mark.slow
def test_fork_adds_the_model_and_renders_every_chapter_for_it(tmp_path):
    root = _overlay(tmp_path)
    out = tmp_path / "out"
    proc = _cli(root, "fork", str(FIXTURE), "--name", "mini-mistral", "--out", str(out))
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    model = root / "data" / "models" / "mini-mistral"
    assert json.loads((model / "config.json").read_text()) == json.loads(FIXTURE.read_text())
    src = (model / "SOURCE.md").read_text()
    assert str(FIXTURE) in src and "sha256" in src and "TODO" in src
    assert not (ROOT / "data" / "models" / "mini-mistral").exists()

    summary = (out / "SUMMARY.md").read_text()
    chapters = publish.chapters(ROOT)
    for nb in chapters:
        assert f"| {nb.stem} |" in summary
        params = F.chapter_parameters(nb, "mini-mistral")
        if params is None:
            assert f"| {nb.stem} | not rendered: the chapter has no model parameter" in summary
            continue
        assert f"| {nb.stem} | rendered |" in summary
        text = (out / nb.name).read_text()
        injected = json.loads(text)["metadata"]["papermill"]["parameters"]
        assert all(v == "mini-mistral" or v == ["mini-mistral"] for k, v in injected.items() if k != "mode")
        assert '"ename"' not in text  # no cell failed

    total = f"{int(M.component_counts(FIXTURE)['total']):,}"
    lora = M.lora_count(FIXTURE, 4)
    memory = (out / "memory_accounting.ipynb").read_text()
    assert total in memory and f"{lora.trainable:,}" in memory  # computed for the new model
    assert "No run record of mini-mistral in data/runs/memory_accounting" in memory
    assert "h100-a (NVIDIA" not in memory  # the study's Llama-2 records are not shown as the new model's
    for serving in ("batch_size_sweep", "length_sweep"):
        assert f"No run record of mini-mistral yet in data/runs/{serving}" in (out / f"{serving}.ipynb").read_text()
    assert "model_type" in (out / "trtllm_serve.ipynb").read_text() and "mistral" in (out / "trtllm_serve.ipynb").read_text()
