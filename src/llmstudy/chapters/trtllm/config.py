"""The two workflows' experiments, containers and tools, and TensorRT-LLM's names for things."""

from __future__ import annotations

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
TRITON_MOE_MODEL_TYPES = ("gpt_oss",)  # moe_config.backend TRITON: documented for gpt-oss (examples/models/core/gpt_oss/README.md)
