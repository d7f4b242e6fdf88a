"""The memory model and the KV planner give the same outputs from the standard-library tensor table as from the
transformers meta-device model, on a grid of setups and deployments; the CLI prints the stdlib core's numbers."""

import itertools
import math

import pytest

from llmstudy import cli
from llmstudy.calc import kv as K
from llmstudy.calc import memory as MM
from llmstudy.calc import models as C
from llmstudy.core import models as M
from llmstudy.serving import kv_planner
from llmstudy.training import memory as mm

MEMORY_MODELS = ("llama-2-7b", "mistral-7b-v0.3", "qwen3-8b", "gemma-2-9b", "gemma-3-12b-it", "mixtral-8x7b", "qwen3-30b-a3b",
                 "deepseek-v2-lite", "gpt-oss-20b", "llama-4-scout-17b-16e-instruct")
MEMORY_GRID = [dict(model=m, method=meth, optimizer=opt, seq_len=seq, grad_ckpt=ck, lora_r=16)
               for m, (meth, opt), (seq, ck) in itertools.product(
                   MEMORY_MODELS, (("lora", "paged_adamw_8bit"), ("qlora", "paged_adamw_8bit"), ("full", "adamw_torch")),
                   ((512, True), (4096, False)))]
CAPACITY_GRID = [dict(model=m, gpu=g, num_gpus=n, vllm_version=v, kv_dtype=kvd, weights=w)
                 for (m, w), g, n, v, kvd in itertools.product(
                     (("llama-2-7b", "bf16"), ("qwen3-8b", "bf16"), ("gemma-3-12b-it", "bf16"), ("mixtral-8x7b", "fp8-online"),
                      ("gpt-oss-20b", "mxfp4-checkpoint"), ("llama-4-scout-17b-16e-instruct", "bf16"),
                      ("llama-4-maverick-17b-128e-instruct-fp8", "fp8-checkpoint")),
                     ("h100-80gb", "h200"), (1, 8), ("0.8.3", "0.25.0"), ("auto", "fp8"))]


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def _meta_tables(monkeypatch):
    """Make the calculators read the meta-device model's table (transformers) instead of the stdlib one."""
    cache = {}

    def meta(model):
        key = str(model)
        if key not in cache:
            cache[key] = tuple(M.parameter_table(M.load_config(model)).to_dict("records"))
        return cache[key]

    monkeypatch.setattr(C, "tensors", meta)


def _memory_outputs(case):
    s = MM.Setup(**case)
    return MM.summarize(s), MM.predict_rows(s)


def _capacity_outputs(case):
    try:
        return K.plan(K.Deployment(**case)).row()
    except ValueError as e:
        return str(e)


def test_the_grids_are_large_enough():
    assert len(MEMORY_GRID) >= 50 and len(CAPACITY_GRID) >= 50


@pytest.mark.slow  # ~15 s: 60 setups, twice
def test_memory_outputs_equal_from_both_tables(monkeypatch):
    plain = [_memory_outputs(case) for case in MEMORY_GRID]
    _meta_tables(monkeypatch)
    meta = [_memory_outputs(case) for case in MEMORY_GRID]
    for case, (sa, ra), (sb, rb) in zip(MEMORY_GRID, plain, meta):
        assert set(sa) == set(sb)
        assert all(_same(sa[k], sb[k]) for k in sa), case
        assert len(ra) == len(rb) and all(all(_same(x[k], y[k]) for k in x) for x, y in zip(ra, rb)), case
    assert sum(not math.isnan(s["peak_bytes"]) for s, _ in plain) >= 20  # the dense models have a peak


def test_capacity_outputs_equal_from_both_tables(monkeypatch):
    plain = [_capacity_outputs(case) for case in CAPACITY_GRID]
    _meta_tables(monkeypatch)
    meta = [_capacity_outputs(case) for case in CAPACITY_GRID]
    for case, a, b in zip(CAPACITY_GRID, plain, meta):
        if isinstance(a, str):
            assert a == b, case
            continue
        assert set(a) == set(b) and all(_same(a[k], b[k]) for k in a), case
    assert sum(isinstance(a, dict) and a["outcome"] == "ok" for a in plain) >= 25


def test_the_library_modules_are_the_stdlib_core():
    assert mm.summarize is MM.summarize and mm.Setup is MM.Setup and mm.parse_method is MM.parse_method
    assert kv_planner.plan is K.plan and kv_planner.Deployment is K.Deployment and kv_planner.plan_lines is K.plan_lines
    assert M.lora_targets("mixtral-8x7b", ["w1", "w3"]) == C.lora_targets("mixtral-8x7b", ["w1", "w3"])


def test_the_cli_prints_the_cores_plan(capsys):
    dep = K.Deployment(model="llama-4-scout-17b-16e-instruct", gpu="h200", num_gpus=8, kv_dtype="fp8", vllm_version="0.25.0")
    rc = cli.main(["capacity", "--model", "llama-4-scout-17b-16e-instruct", "--gpu", "h200", "--num-gpus", "8", "--kv-dtype", "fp8",
                   "--version", "0.25.0"])
    assert rc == 0
    assert capsys.readouterr().out.splitlines() == K.plan_lines(K.plan(dep))
