"""The one log module: every recorded server log still parses to the facts its record holds, the one failure
classifier gives each caller's outcomes, and the SGLang / transformers / memory parsers read their lines."""

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from llmstudy.core import records as R
from llmstudy.serving import logs as L

ROOT = Path(__file__).resolve().parents[2]
RUNS = ROOT / "data" / "runs"
SWEEP_FACTS = ("kv_cache_tokens", "max_concurrency", "max_concurrency_len", "available_kv_gib", "weights_gib", "graph_capture_s", "attention_backend")


def _same(a, b) -> bool:
    if isinstance(b, float) and math.isnan(b):
        return a is None
    return a == b or (isinstance(a, (int, float)) and isinstance(b, (int, float)) and float(a) == float(b))


@pytest.mark.parametrize("experiment", ["batch_size_sweep", "length_sweep", "vllm_features", "engine_comparison"])
def test_every_recorded_sweep_server_log_parses_to_its_recorded_facts(experiment):
    """``servers.csv`` holds the facts read from each server's last start when the record was made: today's parser
    must find every one of them, unchanged."""
    checked = 0
    for rec in R.load_runs(experiment):
        if not (rec.path / "servers.csv").exists():
            continue
        for _, s in pd.read_csv(rec.path / "servers.csv").iterrows():
            logs = sorted((rec.path / "logs").glob(f"server-{s.server}.*.log"), key=lambda f: int(f.name.rsplit(".", 2)[-2]))
            if s.outcome != "ok" or not logs:
                continue
            text = logs[-1].read_text(errors="replace")
            facts = L.parse_sglang_log(text) if s.get("engine", "vllm") == "sglang" else L.parse_hfserve_log(text) if s.get("engine") == "transformers" else L.parse_startup_log(text)
            for k in SWEEP_FACTS:
                if k in s.index and pd.notna(s[k]):  # a fact the record holds (older records lack later patterns' facts)
                    assert _same(facts.get(k), s[k]), (rec.run_id, s.server, k, facts.get(k), s[k])
                    checked += 1
    assert checked > 0


def test_every_recorded_context_limits_log_parses_to_its_recorded_memory_split():
    checked = 0
    for rec in R.load_runs("context_limits"):
        for _, row in rec.table("results").iterrows():
            log = rec.path / "logs" / f"{row.config}.log"
            if not log.exists():
                continue
            text = log.read_text(errors="replace")
            mem, facts = L.parse_memory_log(text), L.parse_startup_log(text)
            for k in L.MEM_PATTERNS:
                assert _same(mem.get(k), row[k]), (rec.run_id, row.config, k)
                checked += 1
            if row.outcome == "ok":
                assert _same(facts.get("kv_cache_tokens"), row.kv_cache_tokens)
    assert checked > 0


def test_recorded_failures_keep_their_outcome():
    """Every failed server start in the records classifies as the record says (the length sweep's refusals, the
    context-limits OOMs)."""
    for f in sorted(RUNS.glob("*/*/servers.json")):
        for s in json.loads(f.read_text()):
            if s.get("outcome") in ("oom", "refused"):
                log = sorted((f.parent / "logs").glob(f"server-{s['server']}.*.log"))[-1]
                assert L.classify_failure(log.read_text(errors="replace")) == s["outcome"], (f, s["server"])
    for name, config in (("h200x4-b", "maverick-fp8-h100"), ("h200x8-f", "tp8-maverick-bf16-h100")):
        text = (RUNS / "context_limits" / name / "logs" / f"{config}.log").read_text(errors="replace")
        assert L.classify_failure(text, unknown="error") == "oom"


def test_one_classifier_for_every_caller():
    assert L.classify_failure("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate") == "oom"
    assert L.classify_failure("ValueError: No available memory for the cache blocks. Try increasing") == "oom"
    # one max_model_len request does not fit the KV cache: a refused setting, as the KV planner says (kv_planner.plan)
    assert L.classify_failure("ValueError: To serve at least one request with the models's max seq len (32768), (16.0 GiB KV cache is needed, which is larger than the available KV cache") == "refused"
    assert L.classify_failure("ValueError: To serve at least one request with the model's max seq len (9000000)") == "refused"
    assert L.classify_failure("pydantic ValidationError: 1 validation error for ModelConfig") == "refused"
    assert L.classify_failure("vllm serve: error: unrecognized arguments: --bogus") == "refused"
    assert L.classify_failure("RuntimeError: NCCL watchdog: operation timed out") == "timeout"
    assert L.classify_failure("Segmentation fault") == "start_failed"
    assert L.classify_failure("RuntimeError: Engine core initialization failed", unknown="error") == "error"
    assert L.classify_failure("") == "start_failed"


def test_failure_reason_and_engine_stats_read_vllm_lines():
    line = "(APIServer pid=1) INFO 11-22 00:01:02 [loggers.py:273] Engine 000: Avg prompt throughput: 1.6 tokens/s, Avg generation throughput: 154.4 tokens/s, Running: 201 reqs, Waiting: 55 reqs, GPU KV cache usage: 87.1%, Prefix cache hit rate: 81.7%"
    st = L.engine_stats(line + "\nnoise\n" + line.replace("201", "7"))
    assert st.values.tolist() == [[201, 55, 87.1, 81.7], [7, 55, 87.1, 81.7]]
    assert L.failure_reason("x\n  Value error, User-specified max_model_len (8192) is too big. [type=value_error, input=...]") == "User-specified max_model_len (8192) is too big."
    assert L.failure_reason("k.py:37: unknown: block: [1,0,0] Assertion `index out of bounds: 0 <= i < 4096` failed.") == "index out of bounds: 0 <= i < 4096"
    assert L.failure_reason("all fine") == ""


def test_hfserve_and_memory_lines():
    f = L.parse_hfserve_log("noise\n[llmstudy hfserve] random weights: 6,738,415,616 parameters, dtype torch.bfloat16, device cuda, seed 0\n")
    assert (f["parameters"], f["dtype"], f["device"], len(f["lines"])) == (6_738_415_616, "torch.bfloat16", "cuda", 1)
    text = "DEBUG worker requested memory: 126.43 GiB\nDEBUG worker requested memory: 126.44 GiB\nINFO Model loading took 12.55 GiB and 2.3 s\n"
    m = L.parse_memory_log(text)
    assert m["requested_gib"] == 126.43 and m["requested_gib_all"] == [126.43, 126.44]
    assert L.memory_lines(text) == text.strip().splitlines()


def test_old_homes_still_answer():
    """Chapters written before the move import these names from their old modules: the same objects."""
    from llmstudy.chapters import serve_sweeps as SP
    from llmstudy.serving import servers as S

    assert S.classify_failure is L.classify_failure and S.parse_sglang_log is L.parse_sglang_log
    assert SP.failure_reason is L.failure_reason and SP.engine_stats is L.engine_stats


def test_kernel_facts_and_the_engine_comparisons_patterns():
    log = "\n".join([
        "INFO [cuda.py:477] Using FLASH_ATTN attention backend out of potential backends: ['FLASH_ATTN', 'TRITON_ATTN'].",
        "INFO [mxfp4.py:514] Using 'TRITON' Mxfp4 MoE backend.",
        "INFO [auto_gptq.py:357] Using MarlinLinearKernel for AutoGPTQLinearMethod",
    ])
    assert L.kernel_facts(log) == {"failure": "", "moe_backend": "TRITON", "linear_kernel": "MarlinLinearKernel", "attention_backend": "FLASH_ATTN"}
    assert L.kernel_facts("RuntimeError: No MXFP4 MoE backend supports the deployment configuration.")["failure"] == "RuntimeError: No MXFP4 MoE backend supports the deployment configuration."
    jit = "(EngineCore pid=9) WARNING 11-22 01:02:03 [jit_monitor.py:88] Triton kernel JIT compilation during inference: _fwd_kernel. This causes a latency spike"
    assert L.JIT_RE.search(jit).groups() == ("11-22 01:02:03", "_fwd_kernel")
    sgl = "[2026-11-22 01:02:03] Load weight end.\n[2026-11-22 01:02:33] The server is fired up and ready to roll!"
    assert L.SGLANG_TS_RE.findall(sgl) == ["2026-11-22 01:02:03", "2026-11-22 01:02:33"] and L.SGLANG_READY_RE.search(sgl).group(1) == "2026-11-22 01:02:33"


def test_the_hfserve_tag_is_the_launchers():
    from llmstudy.serving import hfserve

    assert L.HFSERVE_TAG == hfserve.TAG  # hfserve runs under the engine's Python and imports nothing from llmstudy


def test_failure_reason_names_a_python_assert_and_where_it_is():
    from llmstudy.serving.logs import failure_reason

    log = """(EngineCore pid=1) ERROR 12-03 18:44:52 [core.py:1231]   File "/tmp/site/vllm/lora/ops/triton_ops/lora_shrink_op.py", line 177, in _lora_shrink
(EngineCore pid=1) ERROR 12-03 18:44:52 [core.py:1231]     assert inputs.dtype in [torch.float16, torch.bfloat16]
(EngineCore pid=1) ERROR 12-03 18:44:52 [core.py:1231]            ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
(EngineCore pid=1) ERROR 12-03 18:44:52 [core.py:1231] AssertionError
(APIServer pid=2) RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {}
"""
    assert failure_reason(log) == "assert inputs.dtype in [torch.float16, torch.bfloat16] (vllm/lora/ops/triton_ops/lora_shrink_op.py:177)"
    assert failure_reason(log.replace("    assert", "    x = 1 #")).startswith("RuntimeError: Engine core initialization failed")
