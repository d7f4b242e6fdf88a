"""Both workflows' parameters, declared once as dataclasses (type, default, help, choices): the notebooks' parameters
cells, the validation and the CLI's ``--set`` keys are derived from them."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path

from llmstudy.core import models as M

from .architecture import config_dict, experts, model_problem
from .config import HF_TO_TRTLLM_LORA, SERVE_IMAGE, TRITON_IMAGE, TRITON_TYPES


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
    max_num_tokens: int = _p(0, "tokens one scheduler iteration may batch (0 = max_batch_size x max_seq_len)")
    enable_chunked_prefill: bool = _p(False, "split long prompts into chunks (LLM API enable_chunked_prefill; TensorRT-LLM's default is off)")
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
        return experts(self.config)[0] > 0

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
    }
    def fraction(v):
        return None if 0 < v <= 1 else "must be in (0, 1]"

    def gpu_ids(v):
        return None if v and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in v) else "must be a non-empty list of GPU indices"

    types = {"str": str, "int": int, "float": (int, float), "bool": bool, "list": list}
    def model_ok(v):
        return known_model(v) or model_problem(v)

    named = {"model": model_ok, "concurrencies": positive_ints, "gpu_ids": gpu_ids}
    for f in fields(cls):
        default = f.default_factory() if callable(f.default_factory) else f.default
        t = types[str(f.type)]
        check = named.get(f.name) or (fraction if f.name.endswith("fraction") else None)
        if check is None and t is int:  # a 0 default means "derive it"; other counts and lengths must be positive
            check = non_negative if default == 0 or f.name == "prompt_overhead" else positive
        spec[f.name] = Param(t, default, f.metadata["help"], choices=f.metadata["choices"], check=check)
    spec["run_id"] = Param(str, "", "run record name ('' = timestamp)")
    return spec


def from_params(cls: type, values: dict):
    """A workflow object from validated parameters (``mode`` and ``run_id`` dropped)."""
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in names})



HEADERS = {  # the first line of each notebook's parameters cell
    "TritonDeploy": f'# Parameters (papermill). mode="run" executes the plan inside {TRITON_IMAGE}.',
    "ServeDeploy": f'# Parameters (papermill). mode="run" executes the plan inside {SERVE_IMAGE}.',
}
NOTEBOOKS = {"TritonDeploy": "trtllm_triton_deploy", "ServeDeploy": "trtllm_serve"}  # workflow class -> chapter
