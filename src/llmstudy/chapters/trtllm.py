"""TensorRT-LLM deployment as the article did it: the old workflow (checkpoint → engine → Triton) and the new one
(``trtllm-serve``), generated from parameters and a model's config.json, checked by a preflight, run in a container.

Neither TensorRT-LLM nor Triton installs here (PyPI has only a stub; Triton ships as NGC containers), so everything
that does not need them is plain Python that runs on a CPU: each workflow is a :class:`Step` list rendered as a bash
script, and :func:`preflight` checks the parameters (and whatever files exist) for each pitfall the article hit,
naming the fix. Run mode executes the same steps inside the container and writes a run record; where the tools are
missing it refuses before doing anything.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import shutil
import signal
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable

import pandas as pd

from llmstudy.core import models as M
from llmstudy.core.paths import data_dir

TRITON_EXPERIMENT = "trtllm_triton_deploy"
SERVE_EXPERIMENT = "trtllm_serve"
TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:25.09-trtllm-python-py3"  # the article's old-workflow container
SERVE_IMAGE = "nvcr.io/nvidia/tensorrt-llm/release:gpt-oss-dev"  # the article's new-workflow container
TRITON_TOOLS = ("trtllm-build", "tritonserver", "genai-perf")
SERVE_TOOLS = ("trtllm-serve", "genai-perf")

# HF module names -> TensorRT-LLM LoRA module names for Llama (TensorRT-LLM examples/hf_lora_convert.py; note that
# gate_proj is mlp_h_to_4h and up_proj is mlp_gate).
HF_TO_TRTLLM_LORA = {
    "q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_dense",
    "gate_proj": "mlp_h_to_4h", "up_proj": "mlp_gate", "down_proj": "mlp_4h_to_h",
}
CONVERTERS = {"llama": "llama", "mistral": "llama"}  # HF model_type -> examples/models/core/<dir>/convert_checkpoint.py
TRITON_TYPES = {"float16": "TYPE_FP16", "float32": "TYPE_FP32", "bfloat16": "TYPE_BF16"}
TRITON_DEFAULT_MAX_BATCH = 4  # tritonserver's default-max-batch-size backend setting
SKELETON = ("ensemble", "preprocessing", "tensorrt_llm", "postprocessing", "tensorrt_llm_bls")


def config_dict(model: str) -> dict:
    """The language model's raw config.json values (``text_config`` of multimodal configs), via llmstudy.core.models."""
    raw = M.raw_config(model)
    return {**raw, **raw["text_config"]} if isinstance(raw.get("text_config"), dict) else raw


def _p(default, help: str, choices: tuple | None = None):
    """A parameter: a dataclass field that also carries the notebook's help text and choices."""
    meta = {"help": help, "choices": choices}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


class _Deploy:
    """What both workflows read from their parameters: the config, the weights folder, work paths."""

    model: str
    model_dir: str
    work_dir: str

    @property
    def config(self) -> dict:
        return config_dict(self.model)

    @property
    def weights(self) -> str:
        return self.model_dir or f"/models/{Path(str(self.model)).name}"

    def path(self, name: str) -> str:
        return f"{self.work_dir}/{name}"


@dataclass
class TritonDeploy(_Deploy):
    """Old workflow: convert_checkpoint.py → trtllm-build → inflight_batcher_llm skeleton → Triton → genai-perf."""

    model: str = _p("llama-2-7b", "model config: a name under data/models or a path to a config.json")
    model_dir: str = _p("", "HF checkpoint folder inside the container ('' = /models/<model>)")
    tokenizer_dir: str = _p("", "tokenizer folder ('' = model_dir)")
    dtype: str = _p("auto", "checkpoint dtype ('auto' = config.json torch_dtype, float32 becomes float16)", ("auto", "float16", "bfloat16"))
    weight_only_precision: str = _p("int4_awq", "weight-only quantization at conversion", ("none", "int8", "int4", "int4_gptq", "int4_awq"))
    int8_kv_cache: bool = _p(True, "int8 KV cache (needs calibration, like int4_awq)")
    calib_size: int = _p(256, "calibration samples for AWQ / int8 KV cache")
    tp_size: int = _p(1, "tensor parallel size (= Triton world size)")
    max_batch_size: int = _p(16, "engine: requests scheduled together")
    max_input_len: int = _p(2048, "engine: longest prompt")
    max_seq_len: int = _p(4096, "engine: longest prompt + output")
    max_beam_width: int = _p(1, "engine: beams")
    plugin_dtype: str = _p("auto", "gemm / attention / LoRA plugin dtype ('auto' = checkpoint dtype)", ("auto", "float16", "bfloat16", "float32"))
    logits_datatype: str = _p("TYPE_FP16", "logits type in the Triton configs; the build gets the same --logits_dtype", tuple(TRITON_TYPES.values()))
    lora_dirs: list = _p(["/adapters/lora-0"], "PEFT adapter folders; adapter i is served as lora_task_id i ([] = no LoRA)")
    lora_target_modules: list = _p(list(M.LLAMA_LORA_TARGETS), "HF modules the adapters were trained on (peft target_modules)")
    build_lora_modules: list = _p([], "trtllm-build --lora_target_modules ([] = mapped from lora_target_modules)")
    lora_rank: int = _p(4, "adapter rank r (adapter_config.json wins where it exists)")
    max_lora_rank: int = _p(8, "engine: largest LoRA rank it accepts")
    lora_storage_type: str = _p("auto", "hf_lora_convert.py --storage-type ('auto' = checkpoint dtype)", ("auto", "float16", "bfloat16", "float32"))
    triton_max_batch_size: int = _p(16, "Triton models' max_batch_size")
    backend_default_max_batch_size: int = _p(0, "tritonserver --backend-config default-max-batch-size (0 = max_batch_size; Triton's own default is 4)")
    instance_count: int = _p(1, "pre/postprocessing and BLS instances")
    max_queue_delay_us: int = _p(0, "Triton dynamic batching: longest wait for a fuller batch (µs)")
    max_queue_size: int = _p(0, "Triton queue limit (0 = unlimited)")
    decoupled: bool = _p(False, "decoupled mode (needed for streaming)")
    streaming: bool = _p(False, "benchmark with streaming responses")
    kv_cache_free_gpu_mem_fraction: float = _p(0.9, "share of free GPU memory for the KV cache after loading")
    gpu_ids: list = _p([0], "GPUs of the tensorrt_llm model (one per TP rank)")
    triton_model: str = _p("ensemble", "Triton model the benchmark calls", ("ensemble", "tensorrt_llm_bls"))
    backend_root: str = _p("/app", "tensorrtllm_backend files inside the container (examples, tools, all_models, scripts)")
    work_dir: str = _p("/workspace/trtllm", "where the checkpoint, engine, model repository, LoRA weights and benchmark go")
    build_engine: bool = _p(True, "convert and build; False reuses the engine already in <work_dir>/engine")
    fresh_copy: bool = _p(True, "delete and re-copy the skeleton before filling (fill_template.py never overwrites)")
    concurrencies: list = _p([1, 4, 8, 16, 32, 64], "benchmark concurrencies (the article's sweep)")
    input_len: int = _p(512, "benchmark prompt tokens")
    output_len: int = _p(256, "benchmark output tokens")
    requests_per_concurrency: int = _p(10, "requests per point = max(min_requests, this x concurrency)")
    min_requests: int = _p(50, "fewest requests per point")

    @property
    def ckpt_dtype(self) -> str:
        if self.dtype != "auto":
            return self.dtype
        d = str(self.config.get("torch_dtype") or self.config.get("dtype") or "float16")
        return "float16" if d == "float32" else d

    @property
    def tokenizer(self) -> str:
        return self.tokenizer_dir or self.weights

    @property
    def storage_type(self) -> str:
        return self.ckpt_dtype if self.lora_storage_type == "auto" else self.lora_storage_type

    @property
    def trtllm_lora_modules(self) -> list[str]:
        return list(self.build_lora_modules) or [HF_TO_TRTLLM_LORA.get(m, m) for m in self.lora_target_modules]

    @property
    def default_max_batch(self) -> int:
        return self.backend_default_max_batch_size or self.max_batch_size


@dataclass
class ServeDeploy(_Deploy):
    """New workflow: trtllm-serve with an extra LLM-API YAML sized from the intended workload, then genai-perf."""

    model: str = _p("gpt-oss-20b", "model config: a name under data/models or a path to a config.json")
    model_dir: str = _p("", "HF checkpoint folder inside the container ('' = /models/<model>); also the served model name")
    concurrencies: list = _p([1, 2, 4, 8, 16, 32, 64, 128, 256], "benchmark concurrencies (the article's sweep)")
    input_len: int = _p(512, "benchmark prompt tokens")
    output_len: int = _p(256, "benchmark output tokens")
    prompt_overhead: int = _p(128, "tokens the chat template adds to each prompt (head room in max_seq_len)")
    max_batch_size: int = _p(0, "0 = the largest concurrency")
    max_seq_len: int = _p(0, "0 = input + output + overhead, rounded up to a multiple of 256")
    max_num_tokens: int = _p(0, "0 = max_batch_size x max_seq_len")
    cuda_graph_max_batch_size: int = _p(0, "largest batch with a CUDA graph (0 = max_batch_size)")
    kv_cache_free_gpu_memory_fraction: float = _p(0.9, "share of free GPU memory for the KV cache")
    tp_size: int = _p(1, "tensor parallel size")
    ep_size: int = _p(0, "expert parallel size for MoE models (0 = not set)")
    moe_backend: str = _p("TRITON", "moe_config.backend for MoE models ('' = TensorRT-LLM's default)")
    attention_dp: bool = _p(False, "enable_attention_dp")
    trust_remote_code: bool = _p(True, "--trust_remote_code (the article's command)")
    port: int = _p(8000, "server port")
    work_dir: str = _p("/workspace/trtllm-serve", "where the YAML and the benchmark artifacts go")
    streaming: bool = _p(True, "benchmark with streaming responses")
    requests_per_concurrency: int = _p(10, "requests per point = max(min_requests, this x concurrency)")
    min_requests: int = _p(50, "fewest requests per point")

    @property
    def is_moe(self) -> bool:
        return bool(self.config.get("num_local_experts") or self.config.get("num_experts"))

    @property
    def batch(self) -> int:
        return self.max_batch_size or max(self.concurrencies)

    @property
    def seq_len(self) -> int:
        return self.max_seq_len or 256 * math.ceil((self.input_len + self.output_len + self.prompt_overhead) / 256)

    @property
    def num_tokens(self) -> int:
        return self.max_num_tokens or self.batch * self.seq_len

    @property
    def graph_batch(self) -> int:
        return self.cuda_graph_max_batch_size or self.batch


# --- Parameters ------------------------------------------------------------------------------------------------

def notebook_params(cls: type) -> dict:
    """The notebook parameter spec of a workflow class (plus ``mode`` and ``run_id``), for ``params.validate``."""
    from llmstudy.core.params import Param, known_model, non_negative, positive

    def positive_ints(v):
        return None if v and all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in v) else "must be a non-empty list of positive integers"

    spec = {
        "mode": Param(str, "analyze", "analyze: render the plan, preflight and records (CPU); run: execute in the container", choices=("analyze", "run")),
        "run_id": Param(str, "", "run record name ('' = timestamp)"),
    }
    def fraction(v):
        return None if 0 < v <= 1 else "must be in (0, 1]"

    def gpu_ids(v):
        return None if v and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in v) else "must be a non-empty list of GPU indices"

    types = {"str": str, "int": int, "float": (int, float), "bool": bool, "list": list}
    named = {"model": known_model, "concurrencies": positive_ints, "gpu_ids": gpu_ids}
    for f in fields(cls):
        default = f.default_factory() if callable(f.default_factory) else f.default
        t = types[str(f.type)]
        check = named.get(f.name) or (fraction if f.name.endswith("fraction") else None)
        if check is None and t is int:  # a 0 default means "derive it"; other counts and lengths must be positive
            check = non_negative if default == 0 or f.name == "prompt_overhead" else positive
        spec[f.name] = Param(t, default, f.metadata["help"], choices=f.metadata["choices"], check=check)
    return spec


def from_params(cls: type, values: dict):
    """A workflow object from validated parameters (``mode`` and ``run_id`` dropped)."""
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in names})


# --- Plans: steps rendered as a script, executed in run mode ----------------------------------------------------

@dataclass(frozen=True)
class Step:
    """One step of a workflow. ``kind``: run (argv), shell (text), write (text to path), serve (argv, background),
    wait (HTTP url in path), check (a preflight check between steps), bench (genai-perf, artifacts under path)."""

    name: str
    kind: str
    argv: tuple = ()
    text: str = ""
    path: str = ""
    concurrency: int = 0
    note: str = ""


def _q(x) -> str:
    return shlex.quote(str(x))


def _cmd(argv) -> str:
    """A command over several lines: each option with its values on its own line."""
    lines: list[list[str]] = [[]]
    for a in map(str, argv):
        if a.startswith("-") and lines[-1]:
            lines.append([])
        lines[-1].append(_q(a))
    return " \\\n    ".join(" ".join(line) for line in lines)


def render(steps: list[Step], title: str) -> str:
    """The steps as a bash script a person can read, review and run by hand in the container."""
    out = ["#!/usr/bin/env bash", f"# {title}", "# Generated by llmstudy.chapters.trtllm from the parameters shown in the book; do not edit by hand.", "set -euo pipefail", ""]
    for i, s in enumerate(steps, 1):
        out.append(f"# [{i}/{len(steps)}] {s.name}" + (f": {s.note}" if s.note else ""))
        if s.kind in ("run", "bench"):
            out.append(_cmd(s.argv))
        elif s.kind == "shell":
            out.append(s.text)
        elif s.kind == "write":
            out += [f"mkdir -p {_q(str(Path(s.path).parent))}", f"cat > {_q(s.path)} << 'EOF'", s.text.rstrip("\n"), "EOF"]
            if s.text.startswith("#!"):
                out.append(f"chmod +x {_q(s.path)}")
        elif s.kind == "serve":
            out += [f"setsid {_cmd(s.argv)} > {_q(s.path)} 2>&1 &", "SERVER_PGID=$!"]
        elif s.kind == "wait":
            out.append(f"timeout 1800 bash -c 'until curl -sf {s.path} > /dev/null; do sleep 5; done'")
        elif s.kind == "check":
            out.append(f"# (run mode checks {s.path} here and stops with the fix if it fails)")
        out.append("")
    out += ["# stop the server (its whole process group)", 'kill -TERM -- -"$SERVER_PGID"', ""]
    return "\n".join(out)


def _requests(cfg, c: int) -> int:
    return max(cfg.min_requests, cfg.requests_per_concurrency * c)


def genai_perf_argv(model: str, url: str, endpoint: str, tokenizer: str, concurrency: int, input_len: int, output_len: int, requests: int, artifact_dir: str, streaming: bool, extra: tuple = (), trust_remote_code: bool = False) -> list[str]:
    """genai-perf 0.0.16 ``profile`` for one concurrency: synthetic prompts of fixed length, fixed requested output."""
    argv = ["genai-perf", "profile", "-m", model, "--endpoint-type", endpoint]
    if endpoint == "kserve":
        argv += ["--backend", "tensorrtllm"]
    argv += ["-u", url, "--tokenizer", tokenizer]
    if trust_remote_code:
        argv += ["--tokenizer-trust-remote-code"]
    if streaming:
        argv += ["--streaming"]
    argv += ["--concurrency", concurrency, "--synthetic-input-tokens-mean", input_len, "--synthetic-input-tokens-stddev", 0,
             "--output-tokens-mean", output_len, "--output-tokens-stddev", 0, "--random-seed", 42, "--request-count", requests]
    for e in extra:
        argv += ["--extra-inputs", e]
    return [str(a) for a in argv + ["--artifact-dir", artifact_dir]]


def fill_values(cfg: TritonDeploy) -> dict[str, dict[str, str]]:
    """What fill_template.py writes into each skeleton model's config.pbtxt (the article's keys, plus KV fraction and GPUs)."""
    b, n, dec = str(cfg.triton_max_batch_size), str(cfg.instance_count), str(cfg.decoupled).lower()
    llm = {"triton_backend": "tensorrtllm", "triton_max_batch_size": b, "decoupled_mode": dec, "engine_dir": cfg.path("engine"),
           "max_queue_delay_microseconds": str(cfg.max_queue_delay_us), "batching_strategy": "inflight_fused_batching",
           "max_queue_size": str(cfg.max_queue_size), "encoder_input_features_data_type": TRITON_TYPES[cfg.ckpt_dtype],
           "logits_datatype": cfg.logits_datatype, "max_beam_width": str(cfg.max_beam_width),
           "kv_cache_free_gpu_mem_fraction": str(cfg.kv_cache_free_gpu_mem_fraction), "gpu_device_ids": "\\,".join(map(str, cfg.gpu_ids))}
    if cfg.lora_dirs:
        llm["lora_prefetch_dir"] = cfg.path("lora")
    return {
        "ensemble": {"triton_max_batch_size": b, "logits_datatype": cfg.logits_datatype},
        "preprocessing": {"tokenizer_dir": cfg.tokenizer, "triton_max_batch_size": b, "preprocessing_instance_count": n},
        "tensorrt_llm": llm,
        "postprocessing": {"tokenizer_dir": cfg.tokenizer, "triton_max_batch_size": b, "postprocessing_instance_count": n},
        "tensorrt_llm_bls": {"triton_max_batch_size": b, "decoupled_mode": dec, "bls_instance_count": n, "logits_datatype": cfg.logits_datatype},
    }


def triton_plan(cfg: TritonDeploy) -> list[Step]:
    """Every step of the old workflow, in the article's order."""
    conf, app, d = cfg.config, cfg.backend_root, cfg.ckpt_dtype
    steps = []
    if cfg.build_engine:
        conv = ["python3", f"{app}/examples/models/core/{CONVERTERS.get(conf.get('model_type'), conf.get('model_type'))}/convert_checkpoint.py",
                "--model_dir", cfg.weights, "--output_dir", cfg.path("ckpt"), "--dtype", d, "--tp_size", cfg.tp_size]
        if cfg.weight_only_precision != "none":
            conv += ["--use_weight_only", "--weight_only_precision", cfg.weight_only_precision]
            conv += ["--per_group"] if cfg.weight_only_precision in ("int4_awq", "int4_gptq") else []
        conv += ["--int8_kv_cache"] if cfg.int8_kv_cache else []
        conv += ["--calib_size", cfg.calib_size] if cfg.int8_kv_cache or cfg.weight_only_precision == "int4_awq" else []
        steps.append(Step("convert", "run", tuple(map(str, conv)), note=f"HF checkpoint -> TensorRT-LLM checkpoint ({d}, weights {cfg.weight_only_precision}{', int8 KV cache' if cfg.int8_kv_cache else ''})"))
        build = ["trtllm-build", "--checkpoint_dir", cfg.path("ckpt"), "--output_dir", cfg.path("engine"),
                 "--gpt_attention_plugin", cfg.plugin_dtype, "--gemm_plugin", cfg.plugin_dtype,
                 "--max_batch_size", cfg.max_batch_size, "--max_input_len", cfg.max_input_len, "--max_seq_len", cfg.max_seq_len,
                 "--max_beam_width", cfg.max_beam_width, "--kv_cache_type", "paged", "--logits_dtype", _logits_dtype(cfg.logits_datatype)]
        if cfg.lora_dirs:
            build += ["--lora_plugin", cfg.plugin_dtype, "--max_lora_rank", cfg.max_lora_rank, "--lora_target_modules", *cfg.trtllm_lora_modules]
        steps.append(Step("build", "run", tuple(map(str, build)), note="TensorRT-LLM checkpoint -> engine"))
    steps.append(Step("engine check", "check", path="engine", note="engine folder has config.json and one rank<i>.engine per GPU, built as planned"))
    repo, skel = cfg.path("model_repo"), f"{app}/all_models/inflight_batcher_llm"
    if cfg.fresh_copy:
        steps.append(Step("fresh skeleton", "shell", text=f"rm -rf {_q(repo)} && mkdir -p {_q(repo)} && cp -r {_q(skel)}/* {_q(repo)}/",
                          note="fill_template.py never overwrites a filled value, so always start from a pristine copy"))
    for model, values in fill_values(cfg).items():
        steps.append(Step(f"fill {model}", "run", ("python3", f"{app}/tools/fill_template.py", "-i", f"{repo}/{model}/config.pbtxt",
                                                   ",".join(f"{k}:{v}" for k, v in values.items()))))
    for i, adapter in enumerate(cfg.lora_dirs):
        steps.append(Step(f"lora {i}", "run", ("python3", f"{app}/examples/hf_lora_convert.py", "-i", adapter, "-o", f"{cfg.path('lora')}/{i}",
                                               "--storage-type", cfg.storage_type), note=f"adapter -> numbered prefetch folder (lora_task_id {i})"))
    wrapper = cfg.path("tritonserver.sh")
    steps.append(Step("tritonserver wrapper", "write", path=wrapper, note=f"raise the backend default max batch size (Triton's is {TRITON_DEFAULT_MAX_BATCH})",
                      text=f"#!/usr/bin/env bash\nexec /opt/tritonserver/bin/tritonserver \"$@\" --backend-config=tensorrtllm,default-max-batch-size={cfg.default_max_batch}\n"))
    steps.append(Step("launch", "serve", ("python3", f"{app}/scripts/launch_triton_server.py", f"--world_size={cfg.tp_size}",
                                          f"--model_repo={repo}", f"--tritonserver={wrapper}"), path=cfg.path("triton.log")))
    steps.append(Step("health", "wait", path="http://localhost:8000/v2/health/ready"))
    extra = ("lora_task_id:0",) if cfg.lora_dirs else ()
    for c in cfg.concurrencies:
        steps.append(Step(f"benchmark c={c}", "bench", tuple(genai_perf_argv(cfg.triton_model, "localhost:8001", "kserve", cfg.tokenizer, c, cfg.input_len, cfg.output_len,
                                                                          _requests(cfg, c), f"{cfg.path('bench')}/c{c}", cfg.streaming, extra)),
                          path=f"{cfg.path('bench')}/c{c}", concurrency=c))
    return steps


def serve_yaml(cfg: ServeDeploy) -> dict:
    """The extra LLM-API options, sized from the workload (MoE backend only for MoE configs)."""
    y = {"enable_attention_dp": cfg.attention_dp, "cuda_graph_config": {"max_batch_size": cfg.graph_batch, "enable_padding": True},
         "kv_cache_config": {"free_gpu_memory_fraction": cfg.kv_cache_free_gpu_memory_fraction}}
    if cfg.is_moe and cfg.moe_backend:
        y["moe_config"] = {"backend": cfg.moe_backend}
    return y


def serve_plan(cfg: ServeDeploy) -> list[Step]:
    """Every step of the new workflow: YAML, server, health, one genai-perf run per concurrency."""
    import yaml

    extra = cfg.path("extra-llm-api-config.yml")
    argv = ["trtllm-serve", "serve", cfg.weights, "--host", "localhost", "--port", cfg.port, "--backend", "pytorch",
            "--max_batch_size", cfg.batch, "--max_seq_len", cfg.seq_len, "--max_num_tokens", cfg.num_tokens, "--tp_size", cfg.tp_size]
    argv += ["--ep_size", cfg.ep_size] if cfg.ep_size else []
    argv += ["--trust_remote_code"] if cfg.trust_remote_code else []
    argv += ["--extra_llm_api_options", extra]
    steps = [Step("extra LLM-API options", "write", path=extra, text=yaml.safe_dump(serve_yaml(cfg), sort_keys=False)),
             Step("serve", "serve", tuple(map(str, argv)), path=cfg.path("trtllm-serve.log"),
                  note=f"max_batch_size {cfg.batch} = largest concurrency, max_num_tokens {cfg.num_tokens:,} = batch x max_seq_len"),
             Step("health", "wait", path=f"http://localhost:{cfg.port}/health")]
    for c in cfg.concurrencies:
        steps.append(Step(f"benchmark c={c}", "bench", tuple(genai_perf_argv(cfg.weights, f"localhost:{cfg.port}", "chat", cfg.weights, c, cfg.input_len, cfg.output_len,
                                                                          _requests(cfg, c), f"{cfg.path('bench')}/c{c}", cfg.streaming, ("ignore_eos:true",), cfg.trust_remote_code)),
                          path=f"{cfg.path('bench')}/c{c}", concurrency=c))
    return steps


def plan(cfg) -> list[Step]:
    return triton_plan(cfg) if isinstance(cfg, TritonDeploy) else serve_plan(cfg)


def script(cfg) -> str:
    """The rendered plan of either workflow."""
    if isinstance(cfg, TritonDeploy):
        return render(triton_plan(cfg), f"Old workflow (TensorRT-LLM engine + Triton) for {cfg.model}; container {TRITON_IMAGE}")
    return render(serve_plan(cfg), f"New workflow (trtllm-serve) for {cfg.model}; container {SERVE_IMAGE}")


def _logits_dtype(triton_type: str) -> str:
    return {v: k for k, v in TRITON_TYPES.items()}[triton_type]


def derived(cfg) -> pd.DataFrame:
    """What the plan takes from config.json and the workload, with the rule that gives each value."""
    c = cfg.config
    layers, kv_heads = c["num_hidden_layers"], c.get("num_key_value_heads") or c["num_attention_heads"]
    head_dim = c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"]
    rows = [("model_type", c.get("model_type"), "config.json"), ("layers x hidden", f"{layers} x {c['hidden_size']}", "config.json"),
            ("mixture of experts", bool(c.get("num_local_experts")), "config.json num_local_experts")]
    if isinstance(cfg, TritonDeploy):
        kv_bytes = 1 if cfg.int8_kv_cache else 2
        rows += [("checkpoint dtype", cfg.ckpt_dtype, f"dtype={cfg.dtype!r}, config.json torch_dtype"),
                 ("--lora_target_modules", " ".join(cfg.trtllm_lora_modules) if cfg.lora_dirs else "(no LoRA)", "training targets mapped one to one"),
                 ("KV cache per token", f"{2 * layers * kv_heads * head_dim * kv_bytes / 1024:,.0f} KiB", f"2 x layers x kv_heads x head_dim x {kv_bytes} B"),
                 ("KV cache, max_batch_size x max_seq_len", f"{2 * layers * kv_heads * head_dim * kv_bytes * cfg.max_batch_size * cfg.max_seq_len / 2**30:,.1f} GiB", "upper bound")]
    else:
        rows += [("max_batch_size", cfg.batch, "largest concurrency" if not cfg.max_batch_size else "set"),
                 ("max_seq_len", cfg.seq_len, f"input {cfg.input_len} + output {cfg.output_len} + template {cfg.prompt_overhead}, rounded up to 256" if not cfg.max_seq_len else "set"),
                 ("max_num_tokens", cfg.num_tokens, "max_batch_size x max_seq_len" if not cfg.max_num_tokens else "set"),
                 ("moe_config.backend", serve_yaml(cfg).get("moe_config", {}).get("backend", "(not emitted)"), "MoE configs only")]
    return pd.DataFrame(rows, columns=["setting", "value", "from"]).set_index("setting")


# --- Preflight ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Finding:
    check: str
    status: str  # ok | error | warning | skipped
    message: str
    fix: str = ""


class PreflightError(ValueError):
    """The preflight found errors; the message lists each with its fix."""


def _adapters(cfg: TritonDeploy) -> list[tuple[str, dict | None]]:
    """(dir, adapter_config.json or None) for each LoRA adapter."""
    out = []
    for d in cfg.lora_dirs:
        f = Path(d) / "adapter_config.json"
        out.append((d, json.loads(f.read_text()) if f.is_file() else None))
    return out


def check_dtypes(cfg: TritonDeploy) -> list[Finding]:
    d, bad = cfg.ckpt_dtype, []
    if cfg.plugin_dtype not in ("auto", d):
        bad.append(f"plugins built as {cfg.plugin_dtype}")
    if cfg.lora_dirs and cfg.storage_type != d:
        bad.append(f"LoRA weights converted as {cfg.storage_type} (--storage-type)")
    if cfg.logits_datatype == "TYPE_BF16":
        bad.append("logits TYPE_BF16 (trtllm-build --logits_dtype accepts float16 or float32 only)")
    if bad:
        return [Finding("dtypes", "error", f"checkpoint dtype is {d} but " + "; ".join(bad) + " — mismatched dtypes stop the server at start with std::bad_cast",
                        f"use {d} everywhere: --dtype {d}, plugins auto, --storage-type {d}, logits TYPE_FP16 or TYPE_FP32 with the same --logits_dtype")]
    return [Finding("dtypes", "ok", f"checkpoint, plugins and LoRA weights are {d}; logits {cfg.logits_datatype} = --logits_dtype {_logits_dtype(cfg.logits_datatype)}")]


def check_lora_modules(cfg: TritonDeploy) -> list[Finding]:
    if not cfg.lora_dirs:
        return [Finding("lora_modules", "ok", "no LoRA adapters")]
    trained = set(cfg.lora_target_modules)
    for name, adapter in _adapters(cfg):
        if adapter is not None:
            t = adapter.get("target_modules")
            if not isinstance(t, list):
                return [Finding("lora_modules", "error", f"{name}: target_modules is {t!r}, a pattern, not a list of modules", "retrain (or edit adapter_config.json) with an explicit list such as q_proj, k_proj, ...")]
            if set(t) != trained:
                return [Finding("lora_modules", "error", f"{name} was trained on {sorted(t)} but lora_target_modules says {sorted(trained)}", "set lora_target_modules to the adapter's target_modules")]
    unknown = sorted(trained - set(HF_TO_TRTLLM_LORA))
    if unknown:
        return [Finding("lora_modules", "error", f"training targets {unknown} have no TensorRT-LLM LoRA module", f"train on modules from {list(HF_TO_TRTLLM_LORA)}")]
    want, have = [HF_TO_TRTLLM_LORA[m] for m in cfg.lora_target_modules], list(cfg.trtllm_lora_modules)
    if sorted(want) != sorted(have):
        miss, extra = sorted(set(want) - set(have)), sorted(set(have) - set(want))
        return [Finding("lora_modules", "error", f"training targets map to {sorted(want)}, --lora_target_modules is {have}" + (f"; missing {miss}" if miss else "") + (f"; not trained {extra}" if extra else "")
                        + " — the server fails at start with map::at", "build with --lora_target_modules " + " ".join(want) + " (leave build_lora_modules empty to map automatically)")]
    return [Finding("lora_modules", "ok", "training targets map one to one: " + ", ".join(f"{m}→{HF_TO_TRTLLM_LORA[m]}" for m in cfg.lora_target_modules))]


def check_lora_rank(cfg: TritonDeploy) -> list[Finding]:
    if not cfg.lora_dirs:
        return [Finding("lora_rank", "ok", "no LoRA adapters")]
    ranks = {name: (a or {}).get("r", cfg.lora_rank) for name, a in _adapters(cfg)}
    top = max(ranks.values())
    if top > cfg.max_lora_rank:
        return [Finding("lora_rank", "error", f"adapter rank {top} ({', '.join(f'{k}: r={v}' for k, v in ranks.items())}) exceeds max_lora_rank {cfg.max_lora_rank}", f"build with --max_lora_rank {top} or more")]
    return [Finding("lora_rank", "ok", f"adapter rank {top} <= max_lora_rank {cfg.max_lora_rank}")]


def check_engine(cfg: TritonDeploy, built: bool = False) -> list[Finding]:
    """The engine folder exists, holds config.json and rank<i>.engine for each GPU, and was built as planned."""
    if cfg.build_engine and not built:
        return [Finding("engine", "skipped", f"{cfg.path('engine')} is built by trtllm-build; run mode checks it right after the build")]
    eng = Path(cfg.path("engine"))
    missing = [f for f in ["config.json"] + [f"rank{i}.engine" for i in range(cfg.tp_size)] if not (eng / f).is_file()]
    if missing:
        return [Finding("engine", "error", f"engine folder {eng} " + ("does not exist" if not eng.is_dir() else f"lacks {missing}") + " — Triton then fails to start with a log that does not name the folder",
                        "build the engine into <work_dir>/engine (build_engine=True) or point work_dir at the folder that holds it")]
    c = json.loads((eng / "config.json").read_text())
    pre, bld = c.get("pretrained_config", {}), c.get("build_config", {})
    lora = bld.get("lora_config") or {}
    got = {"dtype": pre.get("dtype"), "logits_dtype": pre.get("logits_dtype"), "tp_size": (pre.get("mapping") or {}).get("tp_size"), "max_batch_size": bld.get("max_batch_size"),
           "max_lora_rank": lora.get("max_lora_rank") if cfg.lora_dirs else None, "lora_target_modules": sorted(lora.get("lora_target_modules") or []) if cfg.lora_dirs else None}
    want = {"dtype": cfg.ckpt_dtype, "logits_dtype": _logits_dtype(cfg.logits_datatype), "tp_size": cfg.tp_size, "max_batch_size": cfg.max_batch_size,
            "max_lora_rank": cfg.max_lora_rank if cfg.lora_dirs else None, "lora_target_modules": sorted(cfg.trtllm_lora_modules) if cfg.lora_dirs else None}
    diff = [f"{k} {got[k]!r} (planned {want[k]!r})" for k in want if got[k] != want[k]]
    if diff:
        return [Finding("engine", "error", f"engine in {eng} was built differently: " + ", ".join(diff), "rebuild the engine with this plan's parameters (build_engine=True)")]
    return [Finding("engine", "ok", f"{eng}: config.json and {cfg.tp_size} rank engine(s), built as planned")]


def check_template(cfg: TritonDeploy, paths: bool = False) -> list[Finding]:
    """Every key we fill is still a ${placeholder} in the skeleton (and in the repository when it is reused)."""
    dirs = [Path(cfg.backend_root) / "all_models" / "inflight_batcher_llm"] + ([] if cfg.fresh_copy else [Path(cfg.path("model_repo"))])
    out = []
    for d in dirs:
        if not d.is_dir():
            if paths or not cfg.fresh_copy:
                out.append(Finding("template", "error", f"{d} does not exist", "run inside the Triton TensorRT-LLM container, or set backend_root / work_dir"))
            continue
        filled = {m: [k for k in keys if f"${{{k}}}" not in (d / m / "config.pbtxt").read_text()] for m, keys in fill_values(cfg).items() if (d / m / "config.pbtxt").is_file()}
        absent = [m for m in SKELETON if not (d / m / "config.pbtxt").is_file()]
        bad = {m: ks for m, ks in filled.items() if ks}
        if bad or absent:
            out.append(Finding("template", "error", f"{d}: " + "; ".join(f"{m}/config.pbtxt has no ${{{', '.join(ks)}}}" for m, ks in bad.items()) + (f"; missing {absent}" if absent else "")
                               + " — already filled: fill_template.py does not overwrite, so the old values would stay",
                               "start from a fresh copy of all_models/inflight_batcher_llm (fresh_copy=True); if the skeleton itself was filled in place, restore it from the container image"))
    if out:
        return out
    if not any(d.is_dir() for d in dirs):
        return [Finding("template", "skipped", f"{dirs[0]} is inside the container; the plan copies it fresh before filling")]
    return [Finding("template", "ok", "every key to fill is still a placeholder" + ("; the plan copies the skeleton fresh" if cfg.fresh_copy else ""))]


def check_batch_sizes(cfg: TritonDeploy) -> list[Finding]:
    out = []
    if cfg.default_max_batch < cfg.max_batch_size:
        out.append(Finding("batch_sizes", "error", f"tritonserver's default-max-batch-size {cfg.default_max_batch} is below the engine's max_batch_size {cfg.max_batch_size} (the article's log showed the default 4; benchmarks were steadier once it was raised)",
                           f"leave backend_default_max_batch_size=0: the plan then starts tritonserver with --backend-config=tensorrtllm,default-max-batch-size={cfg.max_batch_size}"))
    if cfg.triton_max_batch_size != cfg.max_batch_size:
        out.append(Finding("batch_sizes", "warning", f"Triton max_batch_size {cfg.triton_max_batch_size} differs from the engine's {cfg.max_batch_size}", "use the same value in both"))
    queue = f"; concurrency above {cfg.max_batch_size} queues (the article: latency grows linearly past it)" if max(cfg.concurrencies) > cfg.max_batch_size else ""
    return out or [Finding("batch_sizes", "ok", f"engine, Triton and backend default batch sizes are {cfg.max_batch_size}{queue}")]


def check_streaming(cfg: TritonDeploy) -> list[Finding]:
    if cfg.streaming and not cfg.decoupled:
        return [Finding("streaming", "error", "streaming responses need decoupled mode, which is off", "set decoupled=True (decoupled_mode:true in tensorrt_llm and tensorrt_llm_bls)")]
    return [Finding("streaming", "ok", f"streaming {cfg.streaming}, decoupled {cfg.decoupled}")]


def check_model(cfg) -> list[Finding]:
    """Converter (old workflow), tensor parallelism and lengths against the config and the workload."""
    c, out = cfg.config, []
    if isinstance(cfg, TritonDeploy) and c.get("model_type") not in CONVERTERS:
        out.append(Finding("model", "error", f"no checkpoint converter known for model_type {c.get('model_type')!r} (this plan knows {sorted(CONVERTERS)})", "serve this model with the new workflow (notebooks/trtllm_serve.ipynb)"))
    heads, kv = c["num_attention_heads"], c.get("num_key_value_heads") or c["num_attention_heads"]
    if heads % cfg.tp_size or kv % cfg.tp_size:
        out.append(Finding("model", "error", f"tp_size {cfg.tp_size} does not divide {heads} attention / {kv} KV heads", "choose a tp_size that divides both"))
    if isinstance(cfg, TritonDeploy):
        if len(cfg.gpu_ids) != cfg.tp_size:
            out.append(Finding("model", "error", f"{len(cfg.gpu_ids)} gpu_ids for tp_size {cfg.tp_size}", "give one GPU id per TP rank"))
        lens = [(cfg.max_input_len < cfg.max_seq_len, f"max_input_len {cfg.max_input_len} must be below max_seq_len {cfg.max_seq_len}"),
                (cfg.input_len <= cfg.max_input_len, f"benchmark input {cfg.input_len} exceeds max_input_len {cfg.max_input_len}"),
                (cfg.input_len + cfg.output_len <= cfg.max_seq_len, f"benchmark input + output {cfg.input_len + cfg.output_len} exceeds max_seq_len {cfg.max_seq_len}")]
        seq = cfg.max_seq_len
    else:
        if cfg.ep_size and (not cfg.is_moe or c.get("num_local_experts", 0) % cfg.ep_size):
            out.append(Finding("model", "error", f"ep_size {cfg.ep_size} needs a MoE model whose expert count it divides", "drop ep_size for dense models"))
        lens, seq = [], cfg.seq_len
    if seq > c.get("max_position_embeddings", seq):
        lens.append((False, f"max_seq_len {seq} exceeds the model's max_position_embeddings {c['max_position_embeddings']}"))
    out += [Finding("model", "error", msg, "fix the lengths") for ok, msg in lens if not ok]
    return out or [Finding("model", "ok", f"{c.get('model_type')}: tp {cfg.tp_size}, lengths fit")]


def check_workload(cfg: ServeDeploy) -> list[Finding]:
    """The server's limits hold the workload: the article measured about half the throughput when they did not."""
    need, out = cfg.batch * (cfg.input_len + cfg.output_len), []
    if cfg.batch < max(cfg.concurrencies):
        out.append(Finding("workload", "error", f"max_batch_size {cfg.batch} < largest concurrency {max(cfg.concurrencies)}", "leave max_batch_size=0 (= largest concurrency)"))
    if cfg.seq_len < cfg.input_len + cfg.output_len:
        out.append(Finding("workload", "error", f"max_seq_len {cfg.seq_len} < input + output {cfg.input_len + cfg.output_len}", "leave max_seq_len=0"))
    elif cfg.seq_len < cfg.input_len + cfg.output_len + cfg.prompt_overhead:
        out.append(Finding("workload", "warning", f"max_seq_len {cfg.seq_len} leaves less than {cfg.prompt_overhead} tokens for the chat template", "leave max_seq_len=0"))
    if cfg.num_tokens < need:
        out.append(Finding("workload", "error", f"max_num_tokens {cfg.num_tokens:,} < max_batch_size x (input + output) = {need:,}: the article measured about half the throughput with limits below its workload", "leave max_num_tokens=0 (= max_batch_size x max_seq_len)"))
    if cfg.graph_batch < cfg.batch:
        out.append(Finding("workload", "warning", f"CUDA graphs cover batches up to {cfg.graph_batch} of {cfg.batch}", "leave cuda_graph_max_batch_size=0"))
    if cfg.is_moe and not cfg.moe_backend:
        out.append(Finding("workload", "warning", "MoE model without moe_config.backend: the article measured about half the tokens/s without backend TRITON", "set moe_backend='TRITON'"))
    return out or [Finding("workload", "ok", f"batch {cfg.batch}, max_seq_len {cfg.seq_len}, max_num_tokens {cfg.num_tokens:,} hold {max(cfg.concurrencies)} x ({cfg.input_len} + {cfg.output_len})")]


def check_paths(cfg) -> list[Finding]:
    """Run mode only: the files the plan reads exist inside the container."""
    need = [Path(cfg.weights) / "config.json"]
    if isinstance(cfg, TritonDeploy):
        app = Path(cfg.backend_root)
        need += [Path(cfg.tokenizer), app / "tools/fill_template.py", app / "scripts/launch_triton_server.py"] + [Path(d) / "adapter_config.json" for d in cfg.lora_dirs]
        need += [app / "examples/hf_lora_convert.py"] if cfg.lora_dirs else []
    missing = [str(p) for p in need if not p.exists()]
    if missing:
        return [Finding("paths", "error", f"missing: {missing}", "mount the model / adapters at these paths, or set model_dir, lora_dirs, backend_root")]
    return [Finding("paths", "ok", "model, tokenizer, adapters and backend scripts found")]


TRITON_CHECKS = ("model", "dtypes", "lora_modules", "lora_rank", "engine", "template", "batch_sizes", "streaming")
SERVE_CHECKS = ("model", "workload")


def preflight(cfg, paths: bool = False) -> list[Finding]:
    """All checks of a workflow; ``paths`` (run mode) also requires the container's files to exist."""
    if isinstance(cfg, TritonDeploy):
        out = check_model(cfg) + check_dtypes(cfg) + check_lora_modules(cfg) + check_lora_rank(cfg) + check_engine(cfg) + check_template(cfg, paths) + check_batch_sizes(cfg) + check_streaming(cfg)
    else:
        out = check_model(cfg) + check_workload(cfg)
    return out + (check_paths(cfg) if paths else [])


def findings_table(findings: list[Finding]) -> pd.DataFrame:
    return pd.DataFrame([f.__dict__ for f in findings])


def raise_on_errors(findings: list[Finding]) -> None:
    errors = [f for f in findings if f.status == "error"]
    if errors:
        raise PreflightError("preflight failed:\n" + "\n".join(f"- [{f.check}] {f.message}\n  fix: {f.fix}" for f in errors))


# --- Run mode ---------------------------------------------------------------------------------------------------

class StepError(RuntimeError):
    """A step failed; the message names it and ends with its log."""


def require_tools(tools: tuple[str, ...], image: str) -> None:
    """Refuse before any work when the container's tools are not on PATH."""
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        raise RuntimeError(f"run mode needs {', '.join(missing)} on PATH: run it inside {image} (see envs/ and .github/workflows/gpu-trtllm.yml); nothing was started")


def _wait_http(url: str, timeout_s: float, servers: list) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if any(p.poll() is not None and p.returncode != 0 for p in servers):
            raise StepError(f"the server exited before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(2)
    raise StepError(f"{url} did not answer within {timeout_s:.0f} s")


def _stop(p: subprocess.Popen) -> None:
    """Stop a server's whole process group (the Triton launcher exits at once and leaves tritonserver in it)."""
    for sig, grace in ((signal.SIGTERM, 60), (signal.SIGKILL, 10)):
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            return
        end = time.monotonic() + grace
        while time.monotonic() < end:
            p.poll()  # reap the group leader, or the group never empties
            try:
                os.killpg(p.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.5)


def execute(steps: list[Step], logs: Path, check: Callable[[str], list[Finding]] | None = None, normalize: Callable | None = None, wait_s: float = 1800) -> pd.DataFrame:
    """Run the steps in order, logging each; return the benchmark table (one normalised genai-perf export per point).

    Servers start in their own process group and are always stopped, also when a step fails.
    """
    from tqdm.auto import tqdm

    if normalize is None:
        from llmstudy.serving.loadgen import normalize_genai_perf as normalize  # the serving chapter's load code
    logs.mkdir(parents=True, exist_ok=True)
    servers, frames = [], []
    try:
        for i, s in enumerate(tqdm(steps, desc="steps", unit="step")):
            log = logs / f"{i:02d}-{s.name.replace(' ', '_').replace('=', '')}.log"
            if s.kind == "write":
                Path(s.path).parent.mkdir(parents=True, exist_ok=True)
                Path(s.path).write_text(s.text)
                if s.text.startswith("#!"):
                    os.chmod(s.path, 0o755)
                log.write_text(s.text)
            elif s.kind in ("run", "shell", "bench"):
                with open(log, "w") as fh:
                    rc = subprocess.run(list(s.argv) if s.kind != "shell" else ["bash", "-c", s.text], stdout=fh, stderr=subprocess.STDOUT).returncode
                if rc:
                    raise StepError(f"step '{s.name}' exited {rc}; log {log.name}:\n{log.read_text()[-3000:]}")
                if s.kind == "bench":
                    exports = sorted(Path(s.path).rglob("*_genai_perf.json"))
                    if not exports:
                        raise StepError(f"step '{s.name}': no *_genai_perf.json under {s.path}")
                    shutil.copy(exports[-1], logs / f"{i:02d}-c{s.concurrency}-genai_perf.json")
                    frames.append(normalize(exports[-1]).assign(concurrency=s.concurrency))
            elif s.kind == "serve":
                with open(log, "w") as fh:  # the child keeps its own copy of the descriptor
                    servers.append(subprocess.Popen(list(s.argv), stdout=fh, stderr=subprocess.STDOUT, start_new_session=True))
            elif s.kind == "wait":
                _wait_http(s.path, wait_s, servers)
            elif s.kind == "check" and check is not None:
                found = check(s.path)
                log.write_text(findings_table(found).to_string())
                raise_on_errors(found)
    finally:
        for p in servers:
            _stop(p)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def run(cfg, run_id: str = "", root=None, normalize: Callable | None = None, tools: tuple[str, ...] | None = None) -> Path:
    """Preflight, then every step inside the container; write a run record (a failed step is recorded as such)."""
    from llmstudy.core.records import RunWriter, new_run_id

    triton = isinstance(cfg, TritonDeploy)
    require_tools(tools or (TRITON_TOOLS if triton else SERVE_TOOLS), TRITON_IMAGE if triton else SERVE_IMAGE)
    if normalize is None:  # the serving chapter's load code turns each genai-perf export into a tidy table
        from llmstudy.serving.loadgen import normalize_genai_perf as normalize
    found = preflight(cfg, paths=True)
    raise_on_errors(found)
    steps = plan(cfg)
    params = {f.name: getattr(cfg, f.name) for f in fields(cfg)}
    experiment = TRITON_EXPERIMENT if triton else SERVE_EXPERIMENT
    with RunWriter(experiment, params, run_id=run_id or new_run_id(Path(str(cfg.model)).name), root=root, keep_failed=True) as rec:
        rec.write_text(script(cfg), "plan.sh")
        rec.write_table(findings_table(found), "preflight")
        check = (lambda _: check_engine(cfg, built=True)) if triton else None
        try:
            table = execute(steps, rec.dir / "logs", check, normalize)
        except Exception:
            rec.write_table(pd.DataFrame([{"outcome": "failed"}]), "results")
            raise
        rec.write_table(table.assign(model=str(cfg.model), input_len=cfg.input_len, output_len=cfg.output_len, outcome="ok"), "results")
    return rec.final


# --- The article's published numbers and the golden files -------------------------------------------------------

def published(workflow: str | None = None) -> pd.DataFrame:
    """The article's numbers (labelled with section and setting), never mixed with measurements."""
    df = pd.read_csv(data_dir() / "trtllm" / "published.csv")
    return df[df.workflow == workflow].reset_index(drop=True) if workflow else df


def skeleton_keys() -> dict[str, list[str]]:
    """The ${placeholders} of each inflight_batcher_llm config.pbtxt in the pinned release (reviewed data)."""
    return json.loads((data_dir() / "trtllm" / "skeleton_keys.json").read_text())["keys"]


def write_skeleton(root: Path, filled: TritonDeploy | None = None) -> Path:
    """A stand-in for ``all_models/inflight_batcher_llm``: one config.pbtxt per model holding its placeholders, filled
    the way fill_template.py fills them (``string.Template.safe_substitute``) when ``filled`` is given."""
    from string import Template

    values = fill_values(filled) if filled else {}
    for model, keys in skeleton_keys().items():
        text = "\n".join(f'parameters: {{ key: "{k}" value: {{ string_value: "${{{k}}}" }} }}' for k in keys) + "\n"
        (root / model).mkdir(parents=True, exist_ok=True)
        (root / model / "config.pbtxt").write_text(Template(text).safe_substitute(values.get(model, {})))
    return root


PITFALLS = (  # (pitfall, what the article saw, the bad setting)
    ("dtype mismatch", "std::bad_cast at server start", {"lora_storage_type": "bfloat16"}),
    ("LoRA modules not one to one", "map::at at server start", {"build_lora_modules": ["attn_qkv", "attn_dense", "mlp_h_to_4h", "mlp_4h_to_h", "mlp_gate"]}),
    ("engine folder missing", "a start-up log that does not name the folder", {"build_engine": False, "work_dir": "/nonexistent"}),
    ("template already filled", "edits to the parameters have no effect", "filled"),
    ("Triton default max batch size", "default-max-batch-size 4 in the log, unsteady benchmarks", {"backend_default_max_batch_size": 4}),
    ("max_lora_rank below the adapter's rank", "the adapter cannot be loaded", {"max_lora_rank": 2}),
    ("streaming without decoupled mode", "no streamed responses", {"streaming": True}),
)


def pitfalls(cfg: TritonDeploy, scratch: Path) -> pd.DataFrame:
    """Each pitfall of the article applied to ``cfg`` and what the preflight says about it (CPU only)."""
    from dataclasses import replace

    rows = []
    for name, symptom, change in PITFALLS:
        if change == "filled":
            bad = replace(cfg, backend_root=str(scratch), fresh_copy=True)
            write_skeleton(scratch / "all_models" / "inflight_batcher_llm", filled=cfg)
            change = {"skeleton": "filled once already"}
        else:
            bad = replace(cfg, **change)
        errors = [f for f in preflight(bad) if f.status == "error"]
        rows.append({"pitfall": name, "article saw": symptom, "bad setting": ", ".join(f"{k}={v}" for k, v in change.items()),
                     "preflight": errors[0].message if errors else "(not caught)", "fix": errors[0].fix if errors else ""})
    return pd.DataFrame(rows)


def expected_dir(model: str) -> Path:
    return data_dir() / "trtllm" / "expected" / Path(str(model)).name


def expected_files(cfg) -> dict[str, str]:
    """Golden file name -> generated text: the plan script (and, for trtllm-serve, the YAML on its own)."""
    if isinstance(cfg, TritonDeploy):
        return {"triton_plan.sh": script(cfg)}
    import yaml

    return {"serve_plan.sh": script(cfg), "extra-llm-api-config.yml": yaml.safe_dump(serve_yaml(cfg), sort_keys=False)}
