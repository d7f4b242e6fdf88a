"""The chapter's parameters, declared once: the notebook's parameters cell, its validation and the
``llmstudy triton`` flags are all derived from :data:`PARAMS`. The Triton deployment's own knobs (max batch size,
instance counts) default to :class:`llmstudy.serving.triton.params.TritonParams`."""

from __future__ import annotations

from llmstudy.core.params import Param, known_model, positive, positive_ints
from llmstudy.serving.triton.params import TritonParams

EXPERIMENT = "triton_serving"
_T = TritonParams()

PARAMS: dict[str, Param] = {
    "mode": Param(str, "analyze", "analyze: render the records; run: serve and measure (a GPU, vLLM and the Triton wheel)", choices=("analyze", "run")),
    "part": Param(str, "bench", "what run mode measures: bench (throughput/latency, random weights) or lora (served adapters vs peft, real weights)", choices=("bench", "lora")),
    "model": Param(str, "llama-2-7b", "the bench model: a model name or a config.json path (served with random weights)", check=known_model),
    "input_len": Param(int, 512, "prompt tokens per request (the article: 512)", check=positive),
    "output_len": Param(int, 256, "output tokens per request, ignore_eos (the article: 256)", check=positive),
    "concurrency": Param(list, [1, 4, 16, 64], "client concurrencies per server", check=positive_ints, item=int),
    "max_num_seqs": Param(int, 64, "vLLM max_num_seqs of both servers (at least the largest concurrency)", check=positive),
    "max_model_len": Param(int, 4096, "vLLM max_model_len of both servers", check=positive),
    "dtype": Param(str, "bfloat16", "dtype of both servers and, in the lora part, of peft's reference (float32 on a CPU without bf16, or for a LoRA check free of bf16 near-ties)", choices=("bfloat16", "float16", "float32")),
    "enforce_eager": Param(bool, False, "vLLM --enforce-eager on both servers (no CUDA graphs / compile; CPU rehearsals)"),
    "max_batch_size": Param(int, _T.max_batch_size, "Triton max_batch_size of the ensemble's models (the article's value)", check=positive),
    "adapters": Param(list, [0, 1, 8], "distinct LoRA adapters in flight for the adapter sweep (0 = base model)", item=int),
    "lora_r": Param(int, 4, "rank of the synthetic adapters of the adapter sweep (the article's r)", check=positive),
    "lora_max_tokens": Param(int, 32, "greedy tokens per answer in the LoRA check", check=positive),
    "lora_weights": Param(str, "", "lora part: the real checkpoint folder the adapters were trained on (Gemma-3-270m)"),
    "lora_adapters": Param(list, [], "lora part: NAME=PATH of each peft adapter", item=str),
    "run_id": Param(str, "", "run id of a new record (run mode; default: a timestamp)"),
}


def check(p: dict) -> dict:
    """Cross-parameter checks, before any GPU work."""
    if p["max_num_seqs"] < max(p["concurrency"]):
        raise ValueError(f"max_num_seqs={p['max_num_seqs']} is below the largest concurrency {max(p['concurrency'])}: requests would queue in vLLM, not in the client")
    if p["input_len"] + p["output_len"] > p["max_model_len"]:
        raise ValueError(f"input_len + output_len = {p['input_len'] + p['output_len']} exceeds max_model_len={p['max_model_len']}")
    bad = [a for a in p["adapters"] if isinstance(a, bool) or not isinstance(a, int) or a < 0]
    if bad:
        raise ValueError(f"adapters must be integers >= 0, got {bad}")
    if p["mode"] == "run" and p["part"] == "lora":
        if not p["lora_weights"] or not p["lora_adapters"]:
            raise ValueError("part=lora needs lora_weights (a checkpoint folder) and lora_adapters (NAME=PATH ...)")
        bad = [a for a in p["lora_adapters"] if "=" not in a]
        if bad:
            raise ValueError(f"lora_adapters must be NAME=PATH, got {bad}")
    return p


def run(p: dict) -> str:
    """Run mode from validated parameters (the notebook's and the CLI's one entry): the new record's path."""
    from llmstudy.chapters.triton_serving import run as R
    from llmstudy.core.records import new_run_id

    p = check(p)
    rid = p["run_id"] or new_run_id(p["part"])
    if p["part"] == "lora":
        return str(R.lora_check(p, rid, p["lora_weights"], dict(a.split("=", 1) for a in p["lora_adapters"])))
    return str(R.bench(p, rid))
