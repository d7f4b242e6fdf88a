"""The chapter's parameters, declared once: the notebook's parameters cell, its validation and the
``llmstudy sweep batch-size`` flags are all derived from :data:`PARAMS`."""

from __future__ import annotations

from llmstudy.chapters.serve_sweeps import common_params
from llmstudy.core.params import Param, positive, positive_ints
from llmstudy.serving.sweep import CONCURRENCY

EXPERIMENT = "batch_size_sweep"
CLI_KIND = "batch-size"

PARAMS: dict[str, Param] = {
    **common_params(),
    "max_num_seqs": Param(list, [4, 16, 64, 256], "vLLM --max-num-seqs values (the article's max_batch_size)", check=positive_ints, item=int),
    "concurrency": Param(list, list(CONCURRENCY), "client concurrencies per server", check=positive_ints, item=int),
    "max_model_len": Param(int, 4096, "vLLM --max-model-len of every server", check=positive),
}
