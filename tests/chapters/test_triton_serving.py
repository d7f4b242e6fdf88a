"""The Triton chapter: its parameters, its run mode's refusals, and its numbers against the H200 records."""

from __future__ import annotations

import subprocess
import sys

import pytest

import llmstudy.chapters.triton_serving as ch
from llmstudy.chapters.triton_serving import analysis as A
from llmstudy.chapters.triton_serving import run as R
from llmstudy.chapters.triton_serving import statements as S
from llmstudy.core import params as P
from tests.conftest import ROOT, execute_chapter, thin_code

NB = ROOT / "notebooks" / "triton_serving.ipynb"


def test_notebook_parameters_are_the_spec():
    assert P.notebook_mismatches(NB, ch.PARAMS) == []


def test_vllm_lora_rank_is_rounded_to_a_value_vllm_accepts():
    assert [R.vllm_max_lora_rank(r) for r in (1, 4, 8, 9, 64)] == [1, 8, 8, 16, 64]
    with pytest.raises(ValueError, match="exceeds"):
        R.vllm_max_lora_rank(1024)


@pytest.mark.parametrize("args, message", [
    (["--concurrency", "1", "128"], "below the largest concurrency 128"),
    (["--input-len", "4000", "--output-len", "256"], "exceeds max_model_len=4096"),
    (["--model", "no-such-model"], "unknown model 'no-such-model'"),
    (["--part", "lora"], "part=lora needs lora_weights"),
    (["--adapters", "-1"], "adapters must be integers >= 0"),
])
def test_bad_input_is_refused_before_any_gpu_work(args, message):
    p = subprocess.run([sys.executable, "-m", "llmstudy.chapters.triton_serving.run", "--run-id", "x", *args],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert p.returncode == 2 and message in p.stderr, p.stderr[-2000:]


def test_lora_enabled_is_recovered_for_records_without_the_key():
    pts = A.bench_points(latest=False)
    pts = pts[pts.run_id == "h200-bench-vllm"]  # written before the lora_enabled key
    v16 = pts[(pts.server == "vllm") & (pts.tool == "vllm-bench") & (pts.concurrency == 16)].sort_values(["lora_enabled", "adapters"])
    assert list(zip(v16.lora_enabled, v16.adapters)) == [(False, 0), (True, 0), (True, 1), (True, 8)]
    assert round(v16.output_token_throughput.iloc[0], 1) == 2376.7  # plain server
    assert round(v16.output_token_throughput.iloc[1], 1) == 2305.8  # --enable-lora, no adapter in the batch


def test_a_later_record_supersedes_a_point_and_the_repeat_is_kept():
    pts = A.bench_points(model="llama-2-7b")
    assert set(pts.run_id) == {"h200-bench-triton-2", "h200-bench-vllm-2"}
    assert not pts.duplicated(A.POINT).any()
    rep = A.repeats(model="llama-2-7b")
    base = rep[rep.adapters == 0]
    assert len(base) == 18 and round((base.tput_ratio - 1).abs().max() * 100, 1) == 1.7
    one = rep[(rep.server == "vllm") & (rep.adapters == 1)].iloc[0]
    assert (round(one.tput_first), round(one.tput_last)) == (1121, 1884)  # without, then with the adapter warm-up


def test_h200_statements_are_the_records_numbers():
    s = S.statements(model="llama-2-7b")
    assert s["gpu"] == "NVIDIA H200" and s["bench_runs"] == "h200-bench-triton-2, h200-bench-vllm-2"
    assert (s["triton_tput_cmax"], s["vllm_tput_cmax"], s["ratio_cmax"]) == ("5,842", "5,063", "1.15")
    assert (s["triton_tput_c1"], s["vllm_tput_c1"], s["ratio_c1"]) == ("214", "213", "1.00")
    assert (s["ad_vllm_itl_base"], s["ad_vllm_itl_1"], s["ad_vllm_itl_n"], s["ad_vllm_n"]) == ("6.13", "7.74", "10.45", "8")
    assert (s["ad_triton_tput_1"], s["ad_triton_tput_n"], s["ad_triton_base_tput"]) == ("1,752", "1,360", "2,308")
    assert (s["first_wave_old"], s["first_wave_new"], s["warmup_a1_s"]) == ("2,586", "113", "16.1")
    assert (s["nvml_power_lo"], s["nvml_power_hi"], s["nvml_max_triton"], s["nvml_max_vllm"]) == ("415", "628", "705", "700")
    assert s["lora_run"] == "h200-lora-bf16-margins"
    assert (s["adapter_equal"], s["adapter_total"], s["base_equal"], s["base_total"], s["as_base"]) == ("22", "32", "10", "16", "3")
    assert (s["stream_equal"], s["stream_n"], s["tv_equal"], s["tv_n"]) == ("24", "24", "21", "24")
    assert (s["peft_fp32_equal"], s["peft_fp32_n"], s["self_flip"], s["self_n"]) == ("17", "24", "5", "24")
    assert (s["div_n"], s["div_ties"], s["div_tie_max"], s["div_fp32_max"]) == ("9", "8", "0.31", "0.19")
    assert s["fp32_refusal"] == "assert inputs.dtype in [torch.float16, torch.bfloat16] (vllm/lora/ops/triton_ops/lora_shrink_op.py:177)"


def test_lora_reference_is_deterministic_and_streaming_changes_nothing():
    ans = A.lora_answers()
    dtype = {r.run_id: A._dtype(r) for r in A.records(part="lora")}
    peft = {r: g.set_index(["adapter", "prompt_id"]).text for r, g in ans[ans.source == "peft"].groupby("run_id")}
    bf16 = [t for r, t in peft.items() if dtype[r] == "bfloat16"]
    assert len(bf16) == 3 and all((t == bf16[0]).all() for t in bf16)  # three calls on two machines: the same answers
    fp32 = peft["h200-lora-fp32"]
    assert (fp32 == bf16[0]).sum() == 17  # float32 changes 7 of 24 greedy answers
    sc = A.served_consistency(A.lora_record().table("answers"))
    assert sc["triton_stream_equal"] == sc["triton_n"] == 24


def test_divergences_are_at_peft_near_ties_but_one():
    dv = A.divergences()
    assert len(dv) == 9 and dv.near_tie.sum() == 8
    assert (dv[dv.near_tie].margin_at <= 0.3125).all()
    other = dv[~dv.near_tie].iloc[0]
    assert (other.adapter, int(other.prompt_id), int(other.diverge_at)) == ("qlora", 6, 6)
    fp32 = A.refusals()
    assert list(fp32[fp32.dtype == "float32"].source) == ["vllm-openai", "triton"]


def test_gpu_table_keeps_nvml_rows_of_the_new_records_only():
    gw = A.gpu_while_serving(A.bench_points(model="llama-2-7b"))
    cl = gw[(gw.tool == "llmstudy-client") & ~gw.lora_enabled.astype(bool)]
    assert list(cl.concurrency) == [1, 4, 16, 64]
    assert [round(x) for x in cl.gpu_power_w_mean] == [415, 379, 467, 628]
    assert set(gw.run_id) == {"h200-bench-triton-2", "h200-bench-vllm-2"}


def test_a_fork_gets_no_other_models_numbers():
    s = S.statements(model="mistral-7b-v0.3")
    assert "ratio_cmax" not in s and "itl_n" not in s
    text = S.sentences(s, "Mistral-7B-v0.3", "CMD")["answer"]
    assert "not measured for Mistral-7B-v0.3" in text and "CMD" in text and "5,841" not in text


@pytest.mark.slow
def test_notebook_executes_and_glues_the_records_numbers(tmp_path):
    text, glue, nb = execute_chapter("triton_serving", tmp_path)
    assert "5,842 vs 5,063 tokens/s at 64 (1.15×)" in glue["answer"]
    assert "22 of 32 adapter answers" in glue["lora_answer"] and "8 of the 9 distinct divergences" in glue["lora_why"]
    assert "lora_shrink_op.py:177" in glue["lora_why"] and "628 W at 64" in glue["gpu_answer"]
    assert "within 1.7 %" in glue["repeat_answer"]
    assert "Traceback" not in text
    assert thin_code(nb, 90)


def test_gpu_monitor_samples_nothing_without_nvml_and_never_fails(monkeypatch):
    import builtins

    from llmstudy.serving.gpumon import GpuMonitor

    real = builtins.__import__

    def no_nvml(name, *a, **k):
        if name in ("pynvml", "vllm.third_party"):
            raise ImportError(f"no {name} here")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_nvml)
    with GpuMonitor(interval_s=0.01) as mon:
        pass
    assert mon.samples == [] and mon.summary() == {"nvml_error": "NVML unavailable: ImportError: no vllm.third_party here"}


def test_gpu_monitor_falls_back_to_the_nvml_bindings_vllm_ships(monkeypatch):
    """The lent GPU's image has no nvidia-ml-py; vLLM's own copy of the bindings is used instead."""
    import builtins
    import sys
    import types

    from llmstudy.serving.gpumon import GpuMonitor

    real = builtins.__import__

    def no_pynvml(name, *a, **k):
        if name == "pynvml":
            raise ImportError("no pynvml here")
        return real(name, *a, **k)

    fake = types.SimpleNamespace(
        nvmlInit=lambda: None, nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetUtilizationRates=lambda h: types.SimpleNamespace(gpu=80, memory=30),
        nvmlDeviceGetPowerUsage=lambda h: 412_500, nvmlDeviceGetMemoryInfo=lambda h: types.SimpleNamespace(used=3 * 2**30))
    vllm = types.ModuleType("vllm")
    third = types.ModuleType("vllm.third_party")
    third.pynvml = fake
    vllm.third_party = third
    monkeypatch.setitem(sys.modules, "vllm", vllm)
    monkeypatch.setitem(sys.modules, "vllm.third_party", third)
    monkeypatch.setattr(builtins, "__import__", no_pynvml)
    with GpuMonitor(interval_s=0.01) as mon:
        while not mon.samples:
            pass
    s = mon.summary()
    assert s["gpu_util_pct_mean"] == 80.0 and s["gpu_power_w_max"] == 412.5 and s["gpu_mem_used_gib_max"] == 3.0


def test_a_point_gets_gpu_rows_when_sampled_and_keeps_failures(monkeypatch):
    import pandas as pd

    from llmstudy.serving import gpumon, loadgen

    class Fake(gpumon.GpuMonitor):
        def __enter__(self):
            self.samples = [{"t_s": 0.0, "util_pct": 50.0, "mem_util_pct": 10.0, "power_w": 300.0, "mem_used_gib": 10.0},
                            {"t_s": 0.25, "util_pct": 100.0, "mem_util_pct": 20.0, "power_w": 500.0, "mem_used_gib": 12.0}]
            return self

    monkeypatch.setattr(gpumon, "GpuMonitor", Fake)
    rows, errors = [], []
    metrics = pd.DataFrame([("output_token_throughput", "value", 100.0, "tokens/s")], columns=loadgen.METRIC_COLUMNS)
    R._point(rows, errors, {"server": "x"}, None, lambda: (None, metrics))
    got = rows[0].set_index("metric").value
    assert got["gpu_util_pct_mean"] == 75.0 and got["gpu_power_w_max"] == 500.0 and got["output_token_throughput"] == 100.0
    R._point(rows, errors, {"server": "y"}, None, lambda: 1 / 0)
    assert errors == [{"server": "y", "outcome": "failed", "error": "ZeroDivisionError: division by zero"}]
