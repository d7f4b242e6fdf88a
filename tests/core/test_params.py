"""The parameter home (llmstudy.core.params): cells written from a spec, CLI flags from the same spec."""

import argparse
import json

import papermill as pm
import pytest
from conftest import ROOT

from llmstudy.core import params as P

SPEC = {
    "mode": P.Param(str, "analyze", "mode", choices=("analyze", "run")),
    "seq_len": P.Param(int, 100, "tokens", check=P.positive),
    "budget_s": P.Param((float, int, type(None)), None, "seconds"),
    "lens": P.Param(list, [1, 16], "concurrencies"),
    "eager": P.Param(bool, False, "eager"),
}


def test_a_cell_written_from_a_spec_is_read_back_by_papermill_with_every_name(tmp_path):
    nb = {"cells": [{"cell_type": "code", "metadata": {"tags": ["parameters"]}, "source": "x = 1", "outputs": [], "execution_count": None, "id": "p"}],
          "metadata": {"kernelspec": {"name": "python3", "language": "python", "display_name": "Python 3"}, "language_info": {"name": "python"}},
          "nbformat": 4, "nbformat_minor": 5}
    path = tmp_path / "n.ipynb"
    path.write_text(json.dumps(nb))
    assert P.write_notebook_cell(path, SPEC, "# header")
    assert P.notebook_mismatches(path, SPEC) == []
    assert list(pm.inspect_notebook(str(path))) == list(SPEC)  # a union annotation would hide budget_s from papermill
    assert "budget_s = None  # float | int | None" in P.parameters_cell(path)[1]
    assert not P.write_notebook_cell(path, SPEC, "# header")  # unchanged the second time


def test_cli_flags_carry_the_specs_defaults_and_checks():
    ap = argparse.ArgumentParser()
    P.add_arguments(ap, SPEC)
    args = ap.parse_args([])
    assert {k: getattr(args, k) for k in SPEC} == {k: p.default for k, p in SPEC.items()}
    args = ap.parse_args(["--seq-len", "7", "--lens", "2", "4", "--eager", "--budget-s", "30"])
    assert P.from_args(SPEC, args) == {"mode": "analyze", "seq_len": 7, "budget_s": 30.0, "lens": [2, 4], "eager": True}
    with pytest.raises(P.ParameterError, match=r"seq_len=-1: must be > 0"):
        P.from_args(SPEC, ap.parse_args(["--seq-len", "-1"]))


@pytest.mark.parametrize("nb", sorted((ROOT / "notebooks").glob("*.ipynb")), ids=lambda p: p.stem)
def test_papermill_sees_every_parameter_the_cell_assigns(nb):
    assert list(pm.inspect_notebook(str(nb))) == list(P.notebook_defaults(nb))
