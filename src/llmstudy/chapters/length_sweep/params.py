"""The chapter's parameters, declared once: the notebook's parameters cell, its validation and the
``llmstudy sweep length`` flags are all derived from :data:`PARAMS`."""

from __future__ import annotations

from llmstudy.chapters.serve_sweeps import common_params
from llmstudy.core.params import Param, positive, positive_ints

EXPERIMENT = "length_sweep"
CLI_KIND = "length"
SWEEPS = ("max_model_len", "io")

PARAMS: dict[str, Param] = {
    **common_params(),
    "sweeps": Param(list, list(SWEEPS), "run mode: which sweeps to run", check=lambda v: None if v and set(v) <= set(SWEEPS) else f"a non-empty subset of {list(SWEEPS)}", item=str),
    "max_model_lens": Param(list, [2048, 4096, 8192, 32768], "sweep 2: vLLM --max-model-len values", check=positive_ints, item=int),
    "concurrency": Param(list, [1, 16, 64], "sweep 2: client concurrencies", check=positive_ints, item=int),
    "max_num_seqs": Param(int, 256, "vLLM --max-num-seqs of every server", check=positive),
    "io_input_lens": Param(list, [128, 512, 2048, 8192], "sweep 3: prompt lengths", check=positive_ints, item=int),
    "io_output_lens": Param(list, [128, 256, 1024], "sweep 3: output lengths", check=positive_ints, item=int),
    "io_concurrency": Param(list, [1, 16], "sweep 3: client concurrencies", check=positive_ints, item=int),
    "io_max_model_len": Param(int, 16384, "sweep 3: the one server's --max-model-len", check=positive),
    "allow_long_max_model_len": Param(bool, True, "run mode: set VLLM_ALLOW_LONG_MAX_MODEL_LEN=1 (lets max_model_len exceed the model's max_position_embeddings)"),
}
