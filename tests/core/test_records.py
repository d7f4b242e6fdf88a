"""Run records: manifests, atomic publication, and a loader that refuses incomplete records."""

import json
import subprocess
import sys

import pandas as pd
import pytest
from conftest import ROOT

from llmstudy.core import records as R


def test_a_record_has_a_complete_manifest(runs_root):
    with R.RunWriter("unit_test", {"x": 1}, run_id="r1") as w:
        w.write_table(pd.DataFrame({"a": [1, 2]}))
        w.write_text("log line\n", "logs/raw.log")
    rec = R.load_record(runs_root / "unit_test" / "r1")
    m = rec.manifest
    for key in R.REQUIRED_KEYS:
        assert key in m
    assert m["parameters"] == {"x": 1} and m["outcome"] == "ok"
    assert len(m["git"]["sha"]) == 40
    assert m["packages"]["pandas"] == pd.__version__
    assert sorted(m["files"]) == ["logs/raw.log", "results.csv"]
    assert rec.table().a.tolist() == [1, 2]


def test_an_exception_publishes_nothing(runs_root):
    with pytest.raises(RuntimeError):
        with R.RunWriter("unit_test", {}, run_id="r2") as w:
            w.write_table(pd.DataFrame({"a": [1]}))
            raise RuntimeError("boom")
    assert not (runs_root / "unit_test" / "r2").exists()
    assert not list((runs_root / "unit_test").iterdir())


def test_a_killed_writer_leaves_no_record_and_the_next_writer_cleans_up(runs_root):
    code = (
        "import os, pandas as pd; from llmstudy.core import records as R\n"
        "w = R.RunWriter('unit_test', {}, run_id='r3').__enter__()\n"
        "w.write_table(pd.DataFrame({'a': range(1000)}))\n"
        "os._exit(9)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], env={**__import__("os").environ, "PYTHONPATH": str(ROOT / "src")}, timeout=120)
    assert proc.returncode == 9
    base = runs_root / "unit_test"
    assert [p.name.startswith(".tmp-r3-") for p in base.iterdir()] == [True]
    assert R.load_runs("unit_test") == []  # the half-written folder is invisible
    with R.RunWriter("unit_test", {}, run_id="r3") as w:
        w.write_table(pd.DataFrame({"a": [1]}))
    assert [p.name for p in base.iterdir()] == ["r3"]


def test_the_loader_refuses_a_folder_without_a_valid_manifest(runs_root):
    bad = runs_root / "unit_test" / "no-manifest"
    bad.mkdir(parents=True)
    (bad / "results.csv").write_text("a\n1\n")
    with pytest.raises(R.RecordError, match="no manifest.json"):
        R.load_runs("unit_test")
    assert R.load_runs("unit_test", strict=False) == []
    (bad / "manifest.json").write_text(json.dumps({"schema": 1, "experiment": "unit_test"}))
    with pytest.raises(R.RecordError, match="manifest lacks run_id"):
        R.load_record(bad)


def test_an_existing_record_is_never_overwritten(runs_root):
    with R.RunWriter("unit_test", {}, run_id="r4") as w:
        w.write_table(pd.DataFrame({"a": [1]}))
    with pytest.raises(R.RecordError, match="already exists"):
        with R.RunWriter("unit_test", {}, run_id="r4"):
            pass
    with pytest.raises(R.RecordError, match="run_id"):
        R.RunWriter("unit_test", {}, run_id="../escape")


def test_an_empty_table_reads_as_no_rows_beside_full_ones(runs_root):
    # a variant list without answers writes answers.csv as a bare newline; the experiment's table must still load
    with R.RunWriter("unit_test", {}, run_id="e1") as w:
        w.write_table(pd.DataFrame(), "answers")
    with R.RunWriter("unit_test", {}, run_id="e2") as w:
        w.write_table(pd.DataFrame({"q": ["a", "b"]}), "answers")
    assert (runs_root / "unit_test" / "e1" / "answers.csv").read_text().strip() == ""
    t = R.results("unit_test", "answers")
    assert t.q.tolist() == ["a", "b"] and set(t.run_id) == {"e2"}


def test_the_models_a_record_measured_are_named_by_their_folder():
    def load(exp, run):
        return R.load_record(ROOT / "data" / "runs" / exp / run)

    assert R.run_models(load("memory_accounting", "h100-a")) == ["llama-2-7b"]
    assert R.run_models(load("vllm_features", "h100-spec-a")) == ["gemma-3-270m"]  # a model folder's path
    assert R.run_model(load("vllm_features", "h100-spec-a")).endswith("/gemma-3-270m")
    assert R.run_models(load("context_limits", "h200x8-d")) == sorted({c["model"] for c in load("context_limits", "h200x8-d").manifest["parameters"]["gpu_configs"].values()})
    assert R.run_models(load("context_limits", "h200x4-a")) == ["llama-4-scout-17b-16e-instruct"]


def test_a_source_line_names_the_models_of_its_records():
    from llmstudy.core.book import provenance_html, record_models

    assert record_models("memory_accounting", ["h100-a", "h200-a", "no-such-run"]) == ["llama-2-7b"]
    line = provenance_html("lora_vs_qlora", ["h100-7b", "h100-small-a"])
    assert "(models <code>gemma-3-270m</code>, <code>llama-2-7b</code>)" in line
    assert "(model" not in provenance_html(computed="the config")
