"""The Triton deployment's parameters in one place (the chapter's ``params`` will build on these defaults).

Mirrors the TensorRT-LLM ensemble's knobs that exist without TensorRT-LLM: Triton's max_batch_size (the article's 16,
as in ``llmstudy.chapters.trtllm.params``), instance counts of the three steps, the dynamic-batching queue delay of
pre/postprocessing. The engine step is always decoupled (streaming).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

ENGINES = ("hf", "vllm")


@dataclass(frozen=True)
class TritonParams:
    max_batch_size: int = 16  # every model of the ensemble (Triton requires the composing models to allow it)
    preprocessing_instances: int = 1
    postprocessing_instances: int = 1
    engine_instances: int = 1  # "hf": one request at a time per instance; "vllm": one AsyncLLM (keep 1)
    max_queue_delay_us: int = 0  # pre/postprocessing dynamic batching
    engine_args: dict = field(default_factory=dict)  # the engine's own arguments (vLLM engine args; hf: dtype, num_threads)

    def __post_init__(self):
        for k in ("max_batch_size", "preprocessing_instances", "postprocessing_instances", "engine_instances"):
            v = getattr(self, k)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{k} must be a positive integer, got {v!r}")
        if not isinstance(self.max_queue_delay_us, int) or self.max_queue_delay_us < 0:
            raise ValueError(f"max_queue_delay_us must be an integer >= 0, got {self.max_queue_delay_us!r}")

    def with_(self, **kw) -> TritonParams:
        return replace(self, **{k: v for k, v in kw.items() if v is not None})

    def to_dict(self) -> dict:
        return asdict(self)
