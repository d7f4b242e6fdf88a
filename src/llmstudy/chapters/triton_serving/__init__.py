"""Chapter: Triton Inference Server for real — the article's ensemble with vLLM's async engine as the engine step,
served LoRA adapters checked against peft, and genai-perf beside ``vllm bench serve``."""
