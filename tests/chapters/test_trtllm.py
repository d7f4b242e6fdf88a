"""TensorRT-LLM chapters: generated plans against reviewed files, every preflight check, run mode, CLI, notebooks.

TensorRT-LLM and Triton cannot run here. What can is tested for real: the generated commands byte for byte, each
preflight check on a crafted bad input and on a good one, the refusal of run mode, the step executor with stand-in
tools (a real HTTP server and a script writing a genai-perf export), the notebooks under papermill, the CI workflow.
"""

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import ROOT

from llmstudy.chapters import trtllm as T
from llmstudy.core import models as M
from llmstudy.core import records as R
from llmstudy.core.params import ParameterError, validate

GOOD_TRITON = T.TritonDeploy()
GOOD_SERVE = T.ServeDeploy()


def errors(findings, check=None):
    return [f for f in findings if f.status in ("error", "warning") and (check is None or f.check == check)]


# --- Generated commands and configs against the reviewed expected files ------------------------------------------

@pytest.mark.parametrize("cfg", [T.TritonDeploy(model="llama-2-7b"), T.ServeDeploy(model="llama-2-7b"), T.ServeDeploy(model="gpt-oss-20b")], ids=["triton-llama-2-7b", "serve-llama-2-7b", "serve-gpt-oss-20b"])
def test_generation_reproduces_the_reviewed_expected_files(cfg):
    files = T.expected_files(cfg)
    for name, text in files.items():
        assert (T.expected_dir(cfg.model) / name).read_text() == text, f"{cfg.model}/{name} changed: review it (data/trtllm/REVIEW.md) and regenerate"


def test_no_stale_expected_files():
    made = {f"{c.model}/{n}" for c in (T.TritonDeploy(model="llama-2-7b"), T.ServeDeploy(model="llama-2-7b"), T.ServeDeploy(model="gpt-oss-20b")) for n in T.expected_files(c)}
    on_disk = {str(p.relative_to(ROOT / "data/trtllm/expected")) for p in (ROOT / "data/trtllm/expected").rglob("*") if p.is_file()}
    assert on_disk == made


def test_old_workflow_plan_carries_the_article_commands():
    s = T.script(GOOD_TRITON)
    # convert_checkpoint.py: the article's flags and values, dtype from config.json (float16)
    assert "convert_checkpoint.py \\\n    --model_dir /models/llama-2-7b" in s
    for flag in ("--dtype float16", "--use_weight_only", "--weight_only_precision int4_awq", "--per_group", "--int8_kv_cache", "--calib_size 256"):
        assert f"    {flag}" in s
    # trtllm-build: the article's LoRA module set, in training order, and the logits type of the Triton configs
    assert "--lora_target_modules attn_q attn_k attn_v attn_dense mlp_h_to_4h mlp_gate mlp_4h_to_h" in s
    assert "--max_lora_rank 8" in s and "--lora_plugin auto" in s and "--logits_dtype float16" in s and "--kv_cache_type paged" in s
    # a fresh skeleton before the five fill_template calls, in the article's order
    order = [s.index(x) for x in ("rm -rf /workspace/trtllm/model_repo", "model_repo/ensemble/config.pbtxt", "model_repo/preprocessing/config.pbtxt",
                                  "model_repo/tensorrt_llm/config.pbtxt", "model_repo/postprocessing/config.pbtxt", "model_repo/tensorrt_llm_bls/config.pbtxt",
                                  "hf_lora_convert.py", "launch_triton_server.py", "v2/health/ready", "genai-perf profile")]
    assert order == sorted(order)
    assert "-o /workspace/trtllm/lora/0 \\\n    --storage-type float16" in s
    assert "--backend-config=tensorrtllm,default-max-batch-size=16" in s and "--tritonserver=/workspace/trtllm/tritonserver.sh" in s
    assert s.count("genai-perf profile") == 6 and "--extra-inputs lora_task_id:0" in s and "--endpoint-type kserve" in s


def test_new_workflow_reproduces_the_article_settings_from_the_workload():
    y = T.serve_yaml(GOOD_SERVE)
    assert y == {"enable_attention_dp": False, "cuda_graph_config": {"max_batch_size": 256, "enable_padding": True},
                 "kv_cache_config": {"free_gpu_memory_fraction": 0.9}, "moe_config": {"backend": "TRITON"}}
    s = T.script(GOOD_SERVE)
    assert "--max_batch_size 256" in s and "--max_num_tokens 262144" in s and "--max_seq_len 1024" in s  # 262,144 is the article's value
    assert GOOD_SERVE.num_tokens >= GOOD_SERVE.batch * (GOOD_SERVE.input_len + GOOD_SERVE.prompt_overhead)  # a full wave of prompts in one iteration
    assert "enable_chunked_prefill" not in T.serve_yaml(GOOD_SERVE) and T.serve_yaml(replace(GOOD_SERVE, enable_chunked_prefill=True))["enable_chunked_prefill"] is True
    assert "moe_config" not in T.serve_yaml(T.ServeDeploy(model="llama-2-7b"))  # dense model: no MoE backend
    small = T.ServeDeploy(concurrencies=[1, 8], input_len=1000, output_len=100)
    assert (small.batch, small.seq_len, small.num_tokens) == (8, 1280, 10240)


def test_genai_perf_command_is_accepted_by_genai_perf_0_0_16_flag_names():
    argv = T.genai_perf_argv("m", "localhost:8000", "chat", "/tok", 4, 512, 256, 50, "/a", True, ("ignore_eos:true",), True)
    assert argv[:2] == ["genai-perf", "profile"] and "--endpoint-type" in argv and argv[argv.index("--concurrency") + 1] == "4"
    assert argv[argv.index("--extra-inputs") + 1] == "ignore_eos:true" and argv[-2:] == ["--artifact-dir", "/a"]


def test_every_filled_key_is_a_placeholder_of_the_pinned_skeleton():
    keys = T.skeleton_keys()
    assert set(keys) == set(T.SKELETON)
    for model, values in T.fill_values(GOOD_TRITON).items():
        assert set(values) <= set(keys[model]), model


def test_filling_the_skeleton_like_fill_template_consumes_every_key(tmp_path):
    root = T.write_skeleton(tmp_path / "repo", filled=GOOD_TRITON)
    llm = (root / "tensorrt_llm" / "config.pbtxt").read_text()
    assert "${engine_dir}" not in llm and '"/workspace/trtllm/engine"' in llm and '"/workspace/trtllm/lora"' in llm
    assert "${max_tokens_in_paged_kv_cache}" in llm  # keys we do not fill stay placeholders (the backend treats them as unset)
    multi = T.fill_values(replace(GOOD_TRITON, tp_size=2, gpu_ids=[0, 1]))["tensorrt_llm"]["gpu_device_ids"]
    assert multi == "0\\,1"  # fill_template.py splits on unescaped commas


# --- The preflight: each check fires on a crafted bad input and stays silent on a good one --------------------

def test_good_defaults_pass_every_check_silently():
    assert errors(T.preflight(GOOD_TRITON)) == []
    assert errors(T.preflight(GOOD_SERVE)) == []
    assert {f.check for f in T.preflight(GOOD_TRITON)} == set(T.TRITON_CHECKS)
    assert {f.check for f in T.preflight(GOOD_SERVE)} == set(T.SERVE_CHECKS)


@pytest.mark.parametrize("change,needle", [
    ({"lora_storage_type": "bfloat16"}, "std::bad_cast"),
    ({"plugin_dtype": "bfloat16"}, "plugins built as bfloat16"),
    ({"logits_datatype": "TYPE_BF16"}, "float16 or float32 only"),
    ({"dtype": "bfloat16", "lora_storage_type": "float16"}, "checkpoint dtype is bfloat16 but LoRA weights converted as float16"),
])
def test_dtype_check(change, needle):
    found = errors(T.check_dtypes(replace(GOOD_TRITON, **change)), "dtypes")
    assert found and needle in found[0].message and found[0].fix
    assert errors(T.check_dtypes(replace(GOOD_TRITON, dtype="bfloat16", logits_datatype="TYPE_FP32"))) == []  # bf16 all the way is fine


def _adapter(tmp_path, **cfg):
    d = tmp_path / "adapter"
    d.mkdir(exist_ok=True)
    (d / "adapter_config.json").write_text(json.dumps({"r": 4, "lora_alpha": 8, "target_modules": list(GOOD_TRITON.lora_target_modules), **cfg}))
    return str(d)


def test_lora_module_check(tmp_path):
    article_mistake = replace(GOOD_TRITON, build_lora_modules=["attn_qkv", "attn_dense", "mlp_h_to_4h", "mlp_4h_to_h", "mlp_gate"])
    f = errors(T.check_lora_modules(article_mistake))
    assert "map::at" in f[0].message and "missing ['attn_k', 'attn_q', 'attn_v']" in f[0].message and "not trained ['attn_qkv']" in f[0].message
    assert f[0].fix.startswith("build with --lora_target_modules attn_q attn_k attn_v attn_dense mlp_h_to_4h mlp_gate mlp_4h_to_h")
    assert "no TensorRT-LLM LoRA module" in errors(T.check_lora_modules(replace(GOOD_TRITON, lora_target_modules=["qkv_proj"])))[0].message
    assert "a pattern" in errors(T.check_lora_modules(replace(GOOD_TRITON, lora_dirs=[_adapter(tmp_path, target_modules="all-linear")])))[0].message
    assert "was trained on" in errors(T.check_lora_modules(replace(GOOD_TRITON, lora_dirs=[_adapter(tmp_path, target_modules=["q_proj", "v_proj"])])))[0].message
    assert errors(T.check_lora_modules(replace(GOOD_TRITON, lora_dirs=[_adapter(tmp_path)]))) == []
    assert errors(T.check_lora_modules(replace(GOOD_TRITON, build_lora_modules=list(reversed(GOOD_TRITON.trtllm_lora_modules))))) == []  # order is free


def test_lora_rank_check(tmp_path):
    assert "exceeds max_lora_rank 2" in errors(T.check_lora_rank(replace(GOOD_TRITON, max_lora_rank=2)))[0].message
    f = errors(T.check_lora_rank(replace(GOOD_TRITON, lora_dirs=[_adapter(tmp_path, r=16)])))  # adapter_config.json wins over lora_rank=4
    assert "adapter rank 16" in f[0].message and f[0].fix == "build with --max_lora_rank 16 or more"
    assert errors(T.check_lora_rank(replace(GOOD_TRITON, lora_dirs=[_adapter(tmp_path, r=8)]))) == []


def _engine(tmp_path, tp=1, **build):
    eng = tmp_path / "work" / "engine"
    eng.mkdir(parents=True)
    for i in range(tp):
        (eng / f"rank{i}.engine").write_bytes(b"\0")
    cfg = {"pretrained_config": {"dtype": "float16", "logits_dtype": "float16", "mapping": {"tp_size": tp}},
           "build_config": {"max_batch_size": 16, "lora_config": {"max_lora_rank": 8, "lora_target_modules": GOOD_TRITON.trtllm_lora_modules}, **build}}
    (eng / "config.json").write_text(json.dumps(cfg))
    return replace(GOOD_TRITON, build_engine=False, work_dir=str(tmp_path / "work"))


def test_engine_check(tmp_path):
    assert T.check_engine(GOOD_TRITON)[0].status == "skipped"  # built by the plan: checked after trtllm-build
    missing = errors(T.check_engine(replace(GOOD_TRITON, build_engine=False, work_dir=str(tmp_path / "nowhere"))))
    assert "does not exist" in missing[0].message
    cfg = _engine(tmp_path)
    assert errors(T.check_engine(cfg)) == []
    (tmp_path / "work/engine/rank0.engine").unlink()
    assert "lacks ['rank0.engine']" in errors(T.check_engine(cfg))[0].message
    other = _engine(tmp_path / "b", max_batch_size=4)
    assert "max_batch_size 4 (planned 16)" in errors(T.check_engine(other))[0].message
    assert "lacks ['rank1.engine']" in errors(T.check_engine(replace(other, tp_size=2, gpu_ids=[0, 1])))[0].message  # a TP=1 engine for TP=2


def test_template_check(tmp_path):
    pristine = T.write_skeleton(tmp_path / "a" / "all_models" / "inflight_batcher_llm")
    assert T.check_template(replace(GOOD_TRITON, backend_root=str(tmp_path / "a")))[0].status == "ok"
    T.write_skeleton(tmp_path / "b" / "all_models" / "inflight_batcher_llm", filled=GOOD_TRITON)
    f = errors(T.check_template(replace(GOOD_TRITON, backend_root=str(tmp_path / "b"))))
    assert "already filled" in f[0].message and "fresh copy" in f[0].fix and "${triton_max_batch_size" in f[0].message
    # reusing a filled repository instead of a fresh copy
    shutil.copytree(tmp_path / "b" / "all_models" / "inflight_batcher_llm", tmp_path / "w" / "model_repo")
    reuse = replace(GOOD_TRITON, backend_root=str(tmp_path / "a"), fresh_copy=False, work_dir=str(tmp_path / "w"))
    assert "already filled" in errors(T.check_template(reuse))[0].message
    assert T.check_template(GOOD_TRITON)[0].status == "skipped"  # the skeleton lives in the container
    assert "does not exist" in errors(T.check_template(GOOD_TRITON, paths=True))[0].message  # run mode requires it
    assert pristine.exists()


def test_batch_size_check():
    f = errors(T.check_batch_sizes(replace(GOOD_TRITON, backend_default_max_batch_size=4)))
    assert f[0].status == "error" and "default-max-batch-size 4" in f[0].message and "default-max-batch-size=16" in f[0].fix
    assert errors(T.check_batch_sizes(replace(GOOD_TRITON, triton_max_batch_size=8)))[0].status == "warning"
    assert errors(T.check_batch_sizes(replace(GOOD_TRITON, backend_default_max_batch_size=32))) == []


def test_streaming_check():
    assert "decoupled" in errors(T.check_streaming(replace(GOOD_TRITON, streaming=True)))[0].fix
    assert errors(T.check_streaming(replace(GOOD_TRITON, streaming=True, decoupled=True))) == []
    assert "--streaming" in T.script(replace(GOOD_TRITON, streaming=True, decoupled=True)) and "decoupled_mode:true" in T.script(replace(GOOD_TRITON, decoupled=True))


@pytest.mark.parametrize("cfg,needle", [
    (T.TritonDeploy(model="gpt-oss-20b"), "no checkpoint converter known for model_type 'gpt_oss'"),
    (replace(GOOD_TRITON, tp_size=3, gpu_ids=[0, 1, 2]), "does not divide 32 attention"),
    (replace(GOOD_TRITON, gpu_ids=[0, 1]), "2 gpu_ids for tp_size 1"),
    (replace(GOOD_TRITON, input_len=3000), "exceeds max_input_len"),
    (replace(GOOD_TRITON, max_seq_len=8192), "exceeds the model's max_position_embeddings 4096"),
    (replace(GOOD_SERVE, ep_size=3), "ep_size 3 needs a MoE model whose expert count it divides"),
    (replace(GOOD_SERVE, model="llama-2-7b", ep_size=2), "needs a MoE model"),
])
def test_model_check(cfg, needle):
    assert needle in " ".join(f.message for f in errors(T.check_model(cfg)))


@pytest.mark.parametrize("change,status,needle", [
    # max_num_tokens is a per-iteration budget (TensorRT-LLM docs): an error only where one prompt cannot be scheduled
    ({"max_num_tokens": 639}, "error", "max_num_tokens 639 < the longest prompt, input + chat template = 640, with chunked prefill off"),
    ({"max_num_tokens": 639, "enable_chunked_prefill": True}, "note", "prefilled over at least 257 iterations"),
    ({"max_num_tokens": 640}, "note", "256 prompts of 640 tokens arriving together (163,840 tokens) are prefilled over at least 256 iterations"),
    ({"max_num_tokens": 8192}, "note", "prefilled over at least 20 iterations instead of one"),
    ({"max_num_tokens": 163839}, "note", "at least 2 iterations"),
    ({"max_num_tokens": 200, "enable_chunked_prefill": True}, "warning", "max_num_tokens 200 < max_batch_size 256"),
    ({"max_batch_size": 64}, "error", "< largest concurrency 256"),
    ({"max_seq_len": 700, "max_num_tokens": 262144}, "error", "< input + output 768"),
    ({"max_seq_len": 800}, "warning", "chat template"),
    ({"moe_backend": ""}, "warning", "about half the tokens/s"),
    ({"cuda_graph_max_batch_size": 128}, "warning", "CUDA graphs cover batches up to 128"),
])
def test_workload_check(change, status, needle):
    f = [x for x in T.check_workload(replace(GOOD_SERVE, **change)) if x.status != "ok"]
    assert [x.status for x in f] == [status] and needle in f[0].message


def test_max_num_tokens_rule_cites_the_tensorrt_llm_docs_and_a_full_wave_is_ok():
    assert T.MAX_NUM_TOKENS_DOC == "https://nvidia.github.io/TensorRT-LLM/features/paged-attention-ifb-scheduler.html"
    for k in (639, 8192):
        assert T.MAX_NUM_TOKENS_DOC in T.check_workload(replace(GOOD_SERVE, max_num_tokens=k))[0].message
    ok = T.check_workload(replace(GOOD_SERVE, max_num_tokens=163840))
    assert [f.status for f in ok] == ["ok"] and "prefills 256 prompts of 640 tokens in one iteration" in ok[0].message
    assert "fix" not in T.check_workload(GOOD_SERVE)[0].message and T.check_workload(GOOD_SERVE)[0].status == "ok"


def test_paths_check(tmp_path):
    assert "missing" in errors(T.check_paths(GOOD_SERVE))[0].message
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    assert errors(T.check_paths(replace(GOOD_SERVE, model_dir=str(tmp_path / "m")))) == []
    app = tmp_path / "app"
    for f in ("tools/fill_template.py", "scripts/launch_triton_server.py", "examples/hf_lora_convert.py"):
        (app / f).parent.mkdir(parents=True, exist_ok=True)
        (app / f).write_text("")
    ok = replace(GOOD_TRITON, model_dir=str(tmp_path / "m"), backend_root=str(app), lora_dirs=[_adapter(tmp_path)])
    assert errors(T.check_paths(ok)) == []
    assert "adapter_config.json" in errors(T.check_paths(replace(ok, lora_dirs=[str(tmp_path / "none")])))[0].message


def test_every_article_pitfall_is_caught(tmp_path):
    table = T.pitfalls(GOOD_TRITON, tmp_path)
    assert len(table) == 7 and "(not caught)" not in table.preflight.tolist()
    assert table.fix.str.len().min() > 10
    assert "std::bad_cast" in table.preflight[0] and "map::at" in table.preflight[1]
    # the stand-in skeleton's scratch folder never reaches the page: the row names the folder it stands for
    assert not table.apply(lambda col: col.astype(str).str.contains(str(tmp_path), regex=False)).any().any()
    assert table.preflight[3].startswith("/app/all_models/inflight_batcher_llm: ensemble/config.pbtxt has no ${triton_max_batch_size")
    default = T.pitfalls(GOOD_TRITON)  # a fresh temporary folder: still not shown
    assert "/tmp" not in " ".join(default.astype(str).values.ravel())


@pytest.mark.parametrize("cfg", [GOOD_TRITON, GOOD_SERVE], ids=["triton", "serve"])
def test_the_page_script_shows_the_benchmark_once_and_each_run_is_that_template(cfg):
    page, full = T.page_script(cfg), T.script(cfg)
    assert page.count("genai-perf profile") == 1 and full.count("genai-perf profile") == len(cfg.concurrencies)
    assert page.split("benchmark")[0].rsplit("# [", 1)[0] == full.split("benchmark")[0].rsplit("# [", 1)[0]  # every step before the benchmarks as generated
    loop = page[page.index("for C in "):page.index("done\n")]
    body = loop.split("\n", 2)[2].replace("\n        ", "\n    ").strip()
    points = T.bench_points(cfg)
    assert points.concurrency.tolist() == cfg.concurrencies and loop.startswith(f"for C in {' '.join(map(str, cfg.concurrencies))}; do")
    blocks = [b.split("\n", 1)[1].split("\n\n")[0].strip() for b in full.split("# [")[1:] if "] benchmark c=" in b.split("\n", 1)[0]]
    assert len(blocks) == len(points) == len(cfg.concurrencies)
    for r, block in zip(points.itertuples(), blocks):  # the template with C and N filled in is the reviewed block, byte for byte
        assert body.replace("$C", str(r.concurrency)).replace("$N", str(r.requests)) == block
        assert r.artifacts.endswith(f"/bench/c{r.concurrency}") and r.requests == max(cfg.min_requests, cfg.requests_per_concurrency * r.concurrency)
    assert (points.requests.tolist()[:4], points.requests.iloc[-1]) == (([50, 50, 50, 80], 2560) if cfg is GOOD_SERVE else ([50, 50, 80, 160], 640))
    assert not any(ch in page for ch in "\u2013\u2014\u2212")  # ASCII dashes only in code


def test_the_pages_statements_and_tables():
    st = T.page.statements(GOOD_TRITON)
    assert (st["tr_pub_triton_c16"], st["tr_pub_vllm_c16"], st["tr_pub_ratio_c16"], st["tr_pitfalls_caught"], st["tr_steps"], st["tr_preflight"]) == (
        "1,157", "814", "1.42×", "7 of 7", "19", "passes")
    st = T.page.statements(GOOD_SERVE)
    assert (st["tr_batch"], st["tr_seq_len"], st["tr_num_tokens"], st["tr_longest"], st["tr_wave"], st["tr_wave_iters_8192"], st["tr_pub_c1_user"]) == (
        "256", "1,024", "262,144", "640", "163,840", "20", "231")
    assert T.page.statements(replace(GOOD_SERVE, max_num_tokens=100))["tr_preflight"] == "stops with 1 error"
    for wf in ("old", "new"):
        t = T.page.published_view(wf)
        assert len(t.headers) <= 8 and t.headers[:2] == ["Metric", "Value"]
        text = " ".join(c for r in t.rows for c in r)
        assert "nan" not in text.lower() and "None" not in text
    old = T.page.published_view("old").rows
    assert ["output_token_throughput", "1,156.97 tokens/s", "16"] == old[10][:3] and old[0][1] == "14.00 ms" and old[5][1] == "1,398.62 ms"
    assert [r[2] for r in T.page.published_view("new").rows] == ["1", "1", "—", "—"]
    d = T.page.derived_table(GOOD_SERVE).rows
    assert ["max_num_tokens", "262,144", "max_batch_size x max_seq_len"] in d and ["mixture of experts", "yes", "config.json num_local_experts = 32"] in d


def test_bad_notebook_parameters_are_named():
    spec = T.notebook_params(T.TritonDeploy)
    with pytest.raises(ParameterError, match=r"concurrencies=\[0\]: must be a non-empty list of positive integers"):
        validate(spec, {"concurrencies": [0]})
    with pytest.raises(ParameterError, match=r"kv_cache_free_gpu_mem_fraction=1.5: must be in \(0, 1\]"):
        validate(spec, {"kv_cache_free_gpu_mem_fraction": 1.5})
    with pytest.raises(ParameterError, match="weight_only_precision='int3'"):
        validate(spec, {"weight_only_precision": "int3"})
    with pytest.raises(ParameterError, match=r"max_batch_size=-1: must be > 0"):
        validate(spec, {"max_batch_size": -1})
    with pytest.raises(ParameterError, match="unknown model 'llama-3'"):
        validate(spec, {"model": "llama-3"})
    assert validate(T.notebook_params(T.ServeDeploy), {"max_num_tokens": 0})["max_num_tokens"] == 0  # 0 = derive


# --- Run mode: refusal here, and the executor with stand-in tools ------------------------------------------------

def test_run_refuses_before_any_work_without_the_container_tools(runs_root, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(RuntimeError, match=r"run mode needs trtllm-build, tritonserver, genai-perf on PATH: run it inside nvcr.io/nvidia/tritonserver:25.09"):
        T.run(GOOD_TRITON)
    with pytest.raises(RuntimeError, match="trtllm-serve, genai-perf.*tensorrt-llm/release:gpt-oss-dev"):
        T.run(GOOD_SERVE)
    assert not list(runs_root.rglob("*"))


FAKE_SERVE = textwrap.dedent("""\
    #!{py}
    # stand-in for trtllm-serve: answers /health on --port (nothing else)
    import http.server, sys
    port = int(sys.argv[sys.argv.index("--port") + 1])
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/health" else 404); self.end_headers()
        def log_message(self, *a): pass
    http.server.HTTPServer(("localhost", port), H).serve_forever()
""")
FAKE_GENAI_PERF = textwrap.dedent("""\
    #!{py}
    # stand-in for genai-perf: writes an export where genai-perf 0.0.16 would
    import json, pathlib, sys
    a = sys.argv
    c = int(a[a.index("--concurrency") + 1])
    d = pathlib.Path(a[a.index("--artifact-dir") + 1]) / f"model-openai-chat-concurrency{{c}}"
    d.mkdir(parents=True)
    (d / "profile_export_genai_perf.json").write_text(json.dumps({{"output_token_throughput": {{"avg": 100.0 * c}}}}))
""")


def _normalize(path):
    return pd.DataFrame([{"metric": "output_token_throughput", "stat": "avg", "value": json.loads(Path(path).read_text())["output_token_throughput"]["avg"]}])


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # conftest judges the stand-in by its bare name `trtllm-serve` (found on PATH, not opened), as a real server
def test_run_mode_end_to_end_with_stand_in_tools(tmp_path, runs_root, monkeypatch):
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    for name, text in (("trtllm-serve", FAKE_SERVE), ("genai-perf", FAKE_GENAI_PERF)):
        (bin_ / name).write_text(text.format(py=sys.executable))
        (bin_ / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_}{os.pathsep}{os.environ['PATH']}")
    model = tmp_path / "gpt-oss-20b"
    model.mkdir()
    shutil.copy(ROOT / "data/models/gpt-oss-20b/config.json", model / "config.json")
    cfg = replace(GOOD_SERVE, model_dir=str(model), work_dir=str(tmp_path / "work"), concurrencies=[1, 4], port=_free_port())
    path = T.run(cfg, run_id="stand-in", normalize=_normalize)
    rec = R.load_record(path)
    assert rec.manifest["outcome"] == "ok" and rec.manifest["parameters"]["concurrencies"] == [1, 4]
    res = rec.table()
    assert res.concurrency.tolist() == [1, 4] and res.value.tolist() == [100.0, 400.0] and set(res.outcome) == {"ok"}
    assert (path / "plan.sh").read_text() == T.script(cfg)
    assert {"logs/00-extra_LLM-API_options.log", "logs/04-c4-genai_perf.json", "preflight.csv"} <= set(rec.manifest["files"])
    assert yaml.safe_load((tmp_path / "work/extra-llm-api-config.yml").read_text())["moe_config"] == {"backend": "TRITON"}
    with pytest.raises(OSError):  # the server was stopped with its process group
        import urllib.request

        urllib.request.urlopen(f"http://localhost:{cfg.port}/health", timeout=2)


def test_a_failing_step_is_recorded_and_the_server_stopped(tmp_path):
    port = _free_port()
    steps = [T.Step("serve", "serve", (sys.executable, "-m", "http.server", str(port), "--bind", "localhost")),
             T.Step("health", "wait", path=f"http://localhost:{port}/"),
             T.Step("broken", "run", (sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"))]
    with pytest.raises(T.StepError, match=r"step 'broken' exited 3; log 02-broken.log:\nboom"):
        T.execute(steps, tmp_path / "logs", normalize=_normalize)
    with pytest.raises(OSError):
        import urllib.request

        urllib.request.urlopen(f"http://localhost:{port}/", timeout=2)


def test_engine_check_between_steps_stops_the_run(tmp_path):
    steps = [T.Step("engine check", "check", path="engine"), T.Step("never", "run", (sys.executable, "-c", "open('ran', 'w')"))]
    with pytest.raises(T.PreflightError, match=r"\[engine\] engine folder .* does not exist"):
        T.execute(steps, tmp_path / "logs", check=lambda _: T.check_engine(replace(GOOD_TRITON, work_dir=str(tmp_path)), built=True), normalize=_normalize)
    assert not (Path.cwd() / "ran").exists()


# --- CLI, environments, the CI workflow, the notebooks ------------------------------------------------------------

def _cli(*args):
    return subprocess.run([sys.executable, "-m", "llmstudy.cli", "trtllm", *args], capture_output=True, text=True, timeout=120)


def test_cli_plan_preflight_and_refusal():
    assert _cli("plan", "triton").stdout == (ROOT / "data/trtllm/expected/llama-2-7b/triton_plan.sh").read_text()
    assert _cli("plan", "serve", "--yaml").stdout == (ROOT / "data/trtllm/expected/gpt-oss-20b/extra-llm-api-config.yml").read_text()
    bad = _cli("preflight", "serve", "--set", "max_num_tokens=512")
    assert bad.returncode == 1 and "max_num_tokens 512 < the longest prompt" in bad.stdout
    note = _cli("preflight", "serve", "--set", "max_num_tokens=8192")
    assert note.returncode == 0 and "per-iteration budget" in note.stdout
    assert _cli("preflight", "triton", "--set", "concurrencies=[1, 8]").returncode == 0
    assert "unknown triton parameter(s) ['bogus']" in _cli("plan", "triton", "--set", "bogus=1").stderr
    refused = subprocess.run([sys.executable, "-m", "llmstudy.cli", "trtllm", "run", "triton"], capture_output=True, text=True, timeout=120, env={**os.environ, "PATH": "/nonexistent"})
    assert refused.returncode == 2 and "run mode needs trtllm-build" in refused.stderr


def _image(env_file):
    return next(line.split(":", 1)[1].strip() for line in (ROOT / "envs" / env_file).read_text().splitlines() if line.startswith("# image:"))


def test_envs_pin_the_article_containers_and_packages():
    assert _image("trtllm-triton.txt") == T.TRITON_IMAGE == "nvcr.io/nvidia/tritonserver:25.09-trtllm-python-py3"
    assert _image("trtllm-serve.txt") == T.SERVE_IMAGE == "nvcr.io/nvidia/tensorrt-llm/release:gpt-oss-dev"
    triton = (ROOT / "envs/trtllm-triton.txt").read_text().splitlines()
    assert "genai-perf==0.0.16" in triton and "tritonclient==2.62.0" in triton
    assert "genai-perf==0.0.16" in (ROOT / "envs/trtllm-serve.txt").read_text().splitlines()


def test_gpu_workflow_runs_both_notebooks_in_the_pinned_containers_and_uploads_records():
    path = ROOT / ".github/workflows/gpu-trtllm.yml"
    wf = yaml.safe_load(path.read_text())
    jobs = wf["jobs"]
    for job, image, nb, exp, env in (("triton", T.TRITON_IMAGE, "trtllm_triton_deploy", T.TRITON_EXPERIMENT, "trtllm-triton.txt"),
                                     ("serve", T.SERVE_IMAGE, "trtllm_serve", T.SERVE_EXPERIMENT, "trtllm-serve.txt")):
        j = jobs[job]
        assert "self-hosted" in j["runs-on"] and j["container"]["image"] == image and "--gpus all" in j["container"]["options"]
        runs = "\n".join(s.get("run", "") for s in j["steps"])
        assert f"pip install -r envs/{env}" in runs and f"papermill notebooks/{nb}.ipynb" in runs and "-p mode run" in runs
        upload = next(s for s in j["steps"] if s.get("uses", "").startswith("actions/upload-artifact"))
        assert f"data/runs/{exp}/" in upload["with"]["path"] and upload["if"] == "always()"
    lint = subprocess.run([str(Path(sys.executable).with_name("actionlint")), "-config-file", str(ROOT / ".github/actionlint.yaml"), str(path)], capture_output=True, text=True, timeout=120)
    assert lint.returncode == 0, lint.stdout + lint.stderr


def _papermill(tmp_path, name, *params):
    out = tmp_path / f"{name}.ipynb"
    cmd = [sys.executable, "-m", "papermill", str(ROOT / f"notebooks/{name}.ipynb"), str(out), "--cwd", str(ROOT / "notebooks"), *params]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600), out


@pytest.mark.slow
def test_notebooks_execute_in_analyze_mode(tmp_path):
    proc, out = _papermill(tmp_path, "trtllm_triton_deploy")
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    assert "No run record of llama-2-7b in data/runs/trtllm_triton_deploy: this project did not execute TensorRT-LLM for it" in text
    assert "identical to the reviewed expected file" in text
    outputs = json.dumps([c.get("outputs", []) for c in json.loads(text)["cells"]])
    assert "std::bad_cast" in outputs and "map::at" in outputs and "1,156.97 tokens/s" in outputs and "/tmp/" not in outputs  # no scratch path on the page
    proc, out = _papermill(tmp_path, "trtllm_serve", "-p", "model", "llama-2-7b")
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    assert "262144" in text and "moe_config" not in text.split("extra LLM-API options")[-1].split("trtllm-serve serve")[0]
    assert "No run record of llama-2-7b in data/runs/trtllm_serve: this project did not execute TensorRT-LLM for it" in text
    # a fork for an MLA + MoE model: the KV arithmetic is refused by name, the old workflow says why it cannot run
    proc, out = _papermill(tmp_path, "trtllm_triton_deploy", "-p", "model", "deepseek-v2-lite")
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    assert "not modelled: MLA attention (kv_lora_rank 512)" in text and "this workflow cannot run it as planned" in text
    assert "KiB" not in text.split("KV cache per token")[1][:200]


@pytest.mark.slow
def test_notebook_run_mode_refuses_here_and_bad_parameters_stop_it(tmp_path, runs_root):
    proc, _ = _papermill(tmp_path, "trtllm_serve", "-p", "mode", "run")
    assert proc.returncode != 0 and "run mode needs trtllm-serve" in proc.stdout + proc.stderr
    proc, _ = _papermill(tmp_path, "trtllm_triton_deploy", "-p", "max_lora_rank", "0")
    assert proc.returncode != 0 and "max_lora_rank=0" in proc.stdout + proc.stderr
    assert not list(runs_root.rglob("manifest.json"))


# --- Any model: exact for standard attention, a named refusal otherwise ------------------------------------------------

@pytest.mark.parametrize("model,bytes_per_token", [
    ("llama-2-7b", 2 * 32 * 32 * 128 * 2),       # dense MHA
    ("mistral-7b-v0.3", 2 * 32 * 8 * 128 * 2),   # dense GQA
    ("qwen3-8b", 2 * 36 * 8 * 128 * 2),          # head_dim from the config; sliding_window off (use_sliding_window false)
    ("mixtral-8x7b", 2 * 32 * 8 * 128 * 2),      # MoE, num_local_experts
    ("qwen3-30b-a3b", 2 * 48 * 4 * 128 * 2),     # MoE, num_experts
])
def test_kv_cache_per_token_is_exact_for_standard_attention(model, bytes_per_token):
    assert T.kv_bytes_per_token(T.config_dict(model), 2) == bytes_per_token


@pytest.mark.parametrize("model,needle", [
    ("deepseek-v2-lite", r"MLA attention \(kv_lora_rank 512\)"),
    ("gemma-2-9b", r"sliding-window attention \(sliding_window 4096\)"),
    ("gemma-3-12b-it", r"sliding-window attention \(sliding_window 1024\)"),  # a multimodal config: text_config is read
    ("gpt-oss-20b", r"layer types \['sliding_attention'\]"),
    ("llama-4-scout-17b-16e-instruct", r"chunked local attention \(attention_chunk_size 8192\)"),
])
def test_kv_cache_is_refused_where_it_is_not_modelled(model, needle):
    with pytest.raises(T.NotModelled, match=needle):
        T.kv_bytes_per_token(T.config_dict(model), 1)
    shown = T.derived(T.TritonDeploy(model=model))
    for row in ("KV cache per token", "KV cache, max_batch_size x max_seq_len"):
        assert shown.loc[row, "value"].startswith("not modelled: ")


def test_experts_under_every_naming():
    assert [T.experts(T.config_dict(m)) for m in ("mixtral-8x7b", "qwen3-30b-a3b", "deepseek-v2-lite", "llama-2-7b")] == [
        (8, "num_local_experts"), (128, "num_experts"), (64, "n_routed_experts"), (0, "")]
    ds = T.ServeDeploy(model="deepseek-v2-lite")
    assert ds.is_moe and T.derived(ds).loc["mixture of experts", "from"] == "config.json n_routed_experts = 64"
    assert "ep_size 3 needs a MoE model whose expert count it divides (n_routed_experts 64)" in " ".join(f.message for f in errors(T.check_model(replace(ds, ep_size=3))))
    assert errors(T.check_model(replace(ds, ep_size=8))) == []


def test_the_triton_moe_backend_is_flagged_outside_gpt_oss():
    qwen = T.ServeDeploy(model="qwen3-30b-a3b")
    assert T.serve_yaml(qwen)["moe_config"] == {"backend": "TRITON"}
    warned = [f.message for f in errors(T.check_workload(qwen))]
    assert len(warned) == 1 and "TRITON is documented for gpt-oss only" in warned[0] and "'qwen3_moe'" in warned[0]
    assert errors(T.check_workload(GOOD_SERVE)) == [] and errors(T.check_workload(replace(qwen, moe_backend=""))) != []


def test_the_old_workflow_names_the_missing_converter():
    for model, mt in (("deepseek-v2-lite", "deepseek_v2"), ("gemma-3-12b-it", "gemma3_text"), ("qwen3-8b", "qwen3")):
        assert f"no checkpoint converter known for model_type '{mt}'" in errors(T.check_model(T.TritonDeploy(model=model)), "model")[0].message


@pytest.mark.parametrize("change,needles", [  # the models module's config check answers first where it has one
    ({"num_key_value_heads": None}, ["config.json has no 'num_key_value_heads' (the plan does not guess it)"]),
    ({"num_hidden_layers": None}, ["'num_hidden_layers'", "missing"]),
    ({"num_key_value_heads": 7}, ["'num_key_value_heads' = 7 does not divide num_attention_heads = 32"]),
    ({"hidden_size": -4096}, ["'hidden_size' must be a positive integer, got -4096"]),
])
def test_a_bad_config_is_refused_with_its_field_before_any_work(tmp_path, change, needles):
    cfg = json.loads((ROOT / "data/models/llama-2-7b/config.json").read_text())
    for k, v in change.items():
        cfg.pop(k) if v is None else cfg.__setitem__(k, v)
    path = tmp_path / "my-config.json"  # a config file of any name
    path.write_text(json.dumps(cfg))
    for cls in (T.TritonDeploy, T.ServeDeploy):
        with pytest.raises(ParameterError) as e:
            validate(T.notebook_params(cls), {"model": str(path)})
        assert all(n in str(e.value) for n in needles), str(e.value)
    out = _cli("plan", "serve", "--model", str(path))
    assert out.returncode == 2 and all(n in out.stderr for n in needles) and out.stderr.count("\n") == 1


def test_the_notebooks_parameters_cells_are_written_from_the_workflow_dataclasses():
    from llmstudy.core.params import notebook_mismatches

    for cls, stem in ((T.TritonDeploy, "trtllm_triton_deploy"), (T.ServeDeploy, "trtllm_serve")):
        assert notebook_mismatches(ROOT / f"notebooks/{stem}.ipynb", T.notebook_params(cls)) == []
        assert list(T.notebook_params(cls))[1:-1] == [f.name for f in dataclasses.fields(cls)]


def test_a_model_without_records_gets_the_command_that_measures_it():
    note = T.no_record_note(T.ServeDeploy(model="qwen3-30b-a3b"))
    assert note.startswith("No run record of qwen3-30b-a3b in data/runs/trtllm_serve: this project did not execute TensorRT-LLM for it; not measured for ")
    assert "`papermill notebooks/trtllm_serve.ipynb trtllm_serve-run.ipynb -p mode run -p model qwen3-30b-a3b`" in note and T.SERVE_IMAGE in note
    assert T.expected_status(T.ServeDeploy(model="qwen3-30b-a3b")).startswith("These parameters differ from the reviewed defaults")
    assert T.expected_status(GOOD_SERVE) == "This plan and YAML are identical to the reviewed expected files in data/trtllm/expected/gpt-oss-20b/."
    assert T.expected_status(GOOD_TRITON) == "This plan is identical to the reviewed expected file data/trtllm/expected/llama-2-7b/triton_plan.sh."


def test_a_model_the_old_workflow_cannot_convert_gets_the_reason_not_a_command():
    note = T.no_record_note(T.TritonDeploy(model="deepseek-v2-lite"))
    assert note == (f"No run record of deepseek-v2-lite in data/runs/trtllm_triton_deploy: not measured for {M.title('deepseek-v2-lite')}, and this "
                    "workflow cannot run it as planned: no checkpoint converter known for model_type 'deepseek_v2' (this plan knows ['llama', 'mistral']).")
