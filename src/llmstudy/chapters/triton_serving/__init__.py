"""Chapter: Triton Inference Server for real — the article's ensemble with vLLM's async engine as the engine step,
served LoRA adapters checked against peft, and genai-perf beside ``vllm bench serve``.

``params`` (one home of the parameters), ``run`` (run mode, GPU), ``analysis`` (records -> tables), ``statements``
(glued sentences), ``figures``.
"""

from llmstudy.chapters.triton_serving.params import EXPERIMENT, PARAMS, check

__all__ = ["EXPERIMENT", "PARAMS", "check"]
