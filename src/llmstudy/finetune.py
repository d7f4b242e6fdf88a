"""The article's fine-tuning recipe (trl SFTTrainer + peft), instrumented to measure memory and time.

Used by the memory-accounting chapter (random weights, synthetic data) and the LoRA-vs-QLoRA chapter. Models are
built from a ``config.json`` with random weights, saved once as a local checkpoint, and loaded back with
``from_pretrained`` exactly as the article loads ELYZA (bf16, ``device_map``, optional ``BitsAndBytesConfig``), so
the measured path is the article's path minus the download.
"""

from __future__ import annotations

import json
import os
import statistics
import threading
import time
import traceback
from pathlib import Path

from . import models as M
from .records import write_json_atomic

# The article's recipe (qlora-trtllm-triton-article, §2.3.2 and §3.3).
RECIPE = {
    "lora_r": 4,
    "lora_alpha": 8,
    "lora_dropout": 0.1,
    "lora_targets": list(M.LLAMA_LORA_TARGETS),
    "micro_batch": 1,
    "grad_accum": 32,
    "learning_rate": 5e-5,
    "lr_scheduler_type": "cosine",
    "warmup_steps": 5,
    "bf16": True,
    "grad_ckpt": True,
    "optimizer": "paged_adamw_8bit",
    "completion_only_loss": True,
}


# --- Synthetic tokenizer and data --------------------------------------------------------------------------------


def synthetic_tokenizer(vocab_size: int):
    """A word-level tokenizer with exactly ``vocab_size`` ids: <unk>=0, <s>=1, </s>=2, then "t3".."t{V-1}".

    Token counts are exact (one word = one id), which is all memory and speed measurements need. Never use it for
    quality: the text means nothing.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    vocab.update({f"t{i}": i for i in range(3, vocab_size)})
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="</s>"
    )


def synthetic_prompt_completion(n: int, seq_len: int, vocab_size: int, prompt_fraction: float = 0.4, seed: int = 42):
    """``n`` prompt/completion rows whose tokenization is exactly ``seq_len`` ids including <s> and </s>.

    The prompt starts with <s> (as the article's hand-built Llama-2 template does); trl appends </s> to the
    completion, so the completion text holds ``seq_len - prompt_len - 1`` words.
    """
    import random

    from datasets import Dataset

    if seq_len < 3:
        raise ValueError(f"seq_len must be at least 3 (<s>, one prompt and one completion token), got {seq_len}")
    rng = random.Random(seed)
    p_len = max(2, round(seq_len * prompt_fraction))
    c_len = seq_len - p_len - 1
    if c_len < 1:
        raise ValueError(f"seq_len {seq_len} leaves no completion tokens at prompt_fraction {prompt_fraction}")

    def words(k):
        return " ".join(f"t{rng.randrange(3, vocab_size)}" for _ in range(k))

    rows = {"prompt": [], "completion": []}
    for _ in range(n):
        rows["prompt"].append("<s> " + words(p_len - 1))
        rows["completion"].append(" " + words(c_len))
    return Dataset.from_dict(rows)


# --- Model --------------------------------------------------------------------------------------------------------


def save_random_checkpoint(model: str, out_dir: str | Path, dtype: str = "bf16", device: str = "cpu", seed: int = 0) -> Path:
    """Instantiate the config's architecture with random weights and save it as a local HF checkpoint."""
    import torch
    from transformers import AutoModelForCausalLM

    out = Path(out_dir)
    if (out / "config.json").exists() and any(out.glob("*.safetensors")):
        return out
    torch.manual_seed(seed)
    cfg = M.load_config(model)
    torch_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]
    with torch.device(device):
        net = AutoModelForCausalLM.from_config(cfg, dtype=torch_dtype)
    out.mkdir(parents=True, exist_ok=True)
    net.save_pretrained(out, max_shard_size="5GB")
    del net
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return out


def load_for_training(checkpoint: str | Path, method: str, weight_dtype: str = "bf16", double_quant: bool = True):
    """Load the checkpoint as the article does: bf16 (or fp32 for mixed precision), NF4 for QLoRA."""
    import torch
    from transformers import AutoModelForCausalLM

    torch_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[weight_dtype]
    kwargs = {"dtype": torch_dtype}
    if torch.cuda.is_available():
        kwargs["device_map"] = "auto"
    if method == "qlora":
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=torch.bfloat16,
            bnb_4bit_use_double_quant=double_quant,
        )
    return AutoModelForCausalLM.from_pretrained(str(checkpoint), **kwargs)


def lora_config(r: int = 4, alpha: int = 8, dropout: float = 0.1, targets=M.LLAMA_LORA_TARGETS):
    from peft import LoraConfig

    return LoraConfig(
        task_type="CAUSAL_LM",
        inference_mode=False,
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=list(targets),
        bias="none",
    )


# --- Measurement --------------------------------------------------------------------------------------------------


class NvmlSampler:
    """Samples this process's GPU memory as NVML (nvidia-smi) reports it, in a background thread."""

    def __init__(self, interval: float = 0.1):
        self.interval = interval
        self.peak_process = 0
        self.peak_device_used = 0
        self.baseline_device_used = 0
        self.ok = False
        self._stop = threading.Event()
        self._thread = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nv = pynvml
            self._h = pynvml.nvmlDeviceGetHandleByIndex(int(os.environ.get("LLMSTUDY_GPU_INDEX", "0")))
            self.baseline_device_used = pynvml.nvmlDeviceGetMemoryInfo(self._h).used
            self.ok = True
        except Exception:
            self._nv = None

    def _process_bytes(self) -> int:
        pid = os.getpid()
        try:
            for p in self._nv.nvmlDeviceGetComputeRunningProcesses(self._h):
                if p.pid == pid and p.usedGpuMemory is not None:
                    return int(p.usedGpuMemory)
        except Exception:
            pass
        return 0

    def sample(self):
        if not self.ok:
            return
        self.peak_process = max(self.peak_process, self._process_bytes())
        self.peak_device_used = max(self.peak_device_used, self._nv.nvmlDeviceGetMemoryInfo(self._h).used)

    def _run(self):
        while not self._stop.is_set():
            self.sample()
            time.sleep(self.interval)

    def __enter__(self):
        if self.ok:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=2)
        self.sample()

    def result(self) -> dict:
        return {
            "nvml_peak_process_bytes": self.peak_process or None,
            "nvml_peak_device_used_bytes": self.peak_device_used or None,
            "nvml_baseline_device_used_bytes": self.baseline_device_used if self.ok else None,
            "nvml_peak_device_delta_bytes": (self.peak_device_used - self.baseline_device_used) if self.ok else None,
        }


def tensor_bytes(tensors) -> dict:
    """Bytes of tensors split by where they live: CUDA allocator, paged (CUDA managed) or CPU."""
    out = {"cuda": 0, "paged": 0, "cpu": 0}
    for t in tensors:
        if t is None:
            continue
        n = t.numel() * t.element_size()
        if getattr(t, "is_paged", False):
            out["paged"] += n
        elif t.is_cuda:
            out["cuda"] += n
        else:
            out["cpu"] += n
    return out


def _optimizer_tensors(optimizer):
    import torch

    inner = getattr(optimizer, "optimizer", optimizer)
    seen = set()
    for state in inner.state.values():
        for v in state.values():
            if isinstance(v, torch.Tensor) and id(v) not in seen and v.numel() > 1:
                seen.add(id(v))
                yield v


def _mem(torch) -> dict:
    if not torch.cuda.is_available():
        return {}
    return {
        "allocated_bytes": torch.cuda.memory_allocated(),
        "reserved_bytes": torch.cuda.memory_reserved(),
        "max_allocated_bytes": torch.cuda.max_memory_allocated(),
        "max_reserved_bytes": torch.cuda.max_memory_reserved(),
    }


def train_and_measure(spec: dict, progress=None) -> dict:
    """Run ``spec['steps']`` optimizer steps of the article's recipe and measure memory and time.

    ``spec`` keys: checkpoint, model, method, optimizer, weight_dtype, seq_len, micro_batch, grad_accum, steps,
    grad_ckpt, lora_r, lora_alpha, lora_dropout, lora_targets, double_quant, seed, output_dir. Returns a dict of
    stage memories, the measured decomposition, step times and losses. Raises on failure (the caller records it).
    """
    import torch
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    cuda = torch.cuda.is_available()
    torch.manual_seed(spec.get("seed", 42))
    result: dict = {"stages": {}, "cuda": cuda}
    stage = result["stages"]

    def mark(name):
        if cuda:
            torch.cuda.synchronize()
        stage[name] = {"t": time.time(), **_mem(torch)}
        if progress:
            progress(name, stage[name])

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    mark("start")
    model = load_for_training(spec["checkpoint"], spec["method"], spec.get("weight_dtype", "bf16"), spec.get("double_quant", True))
    mark("loaded")
    result["load_param_bytes"] = tensor_bytes(model.parameters())
    result["load_buffer_bytes"] = tensor_bytes(model.buffers())

    cfg = model.config
    tok = synthetic_tokenizer(cfg.vocab_size)
    n_rows = spec["steps"] * spec["grad_accum"] * spec["micro_batch"]
    ds = synthetic_prompt_completion(n_rows, spec["seq_len"], cfg.vocab_size, seed=spec.get("seed", 42))

    args = SFTConfig(
        output_dir=spec.get("output_dir", "/tmp/llmstudy-sft"),
        max_steps=spec["steps"],
        per_device_train_batch_size=spec["micro_batch"],
        gradient_accumulation_steps=spec["grad_accum"],
        learning_rate=spec.get("learning_rate", RECIPE["learning_rate"]),
        lr_scheduler_type=RECIPE["lr_scheduler_type"],
        warmup_steps=RECIPE["warmup_steps"],
        bf16=cuda and spec.get("weight_dtype", "bf16") != "fp16",
        gradient_checkpointing=spec["grad_ckpt"],
        optim=spec["optimizer"],
        completion_only_loss=True,
        max_length=spec["seq_len"] + 8,
        logging_steps=1,
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        seed=spec.get("seed", 42),
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    peft_cfg = None
    if spec["method"] in ("lora", "qlora"):
        peft_cfg = lora_config(spec.get("lora_r", 4), spec.get("lora_alpha", 8), spec.get("lora_dropout", 0.1), spec.get("lora_targets", M.LLAMA_LORA_TARGETS))

    step_times: list[float] = []
    measured: dict = {}

    class Probe(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            if cuda:
                torch.cuda.synchronize()
            self.t0 = time.perf_counter()

        def on_pre_optimizer_step(self, args, state, control, model=None, **kw):
            if "gradients" not in measured and model is not None:
                measured["gradients"] = tensor_bytes(p.grad for p in model.parameters())
                measured["allocated_before_first_optimizer_step"] = _mem(torch).get("allocated_bytes")

        def on_step_end(self, args, state, control, model=None, optimizer=None, **kw):
            if cuda:
                torch.cuda.synchronize()
            step_times.append(time.perf_counter() - self.t0)
            if state.global_step == 1:
                if optimizer is not None:
                    measured["optimizer"] = tensor_bytes(_optimizer_tensors(optimizer))
                mark("after_first_step")
            if progress:
                progress(f"step {state.global_step}/{args.max_steps}", {"seconds": step_times[-1]})

    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok, peft_config=peft_cfg, callbacks=[Probe()])
    mark("trainer_ready")
    tm = trainer.model
    result["trainable_params"] = int(sum(p.numel() for p in tm.parameters() if p.requires_grad))
    result["total_params"] = int(sum(p.numel() for p in tm.parameters()))
    result["trainable_dtypes"] = sorted({str(p.dtype) for p in tm.parameters() if p.requires_grad})
    first = trainer.train_dataset[0]
    result["tokens_per_sample"] = len(first["input_ids"])
    result["completion_tokens_per_sample"] = int(sum(first.get("completion_mask", [])))
    t_train = time.perf_counter()
    out = trainer.train()
    result["train_seconds"] = time.perf_counter() - t_train
    mark("end")
    base = tm.get_base_model() if hasattr(tm, "get_base_model") else tm
    result["gradient_checkpointing"] = bool(getattr(base, "is_gradient_checkpointing", False))
    result["param_bytes"] = tensor_bytes(tm.parameters())
    result["measured"] = measured
    result["step_seconds"] = step_times
    result["losses"] = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    result["train_loss"] = float(out.training_loss)
    steady = step_times[1:] or step_times
    result["median_step_seconds"] = statistics.median(steady) if steady else None
    return result


def worker_main(spec_path: str, out_path: str) -> int:
    """Subprocess entry: run one spec, always write a JSON result (outcome ok | oom | error)."""
    import torch

    spec = json.loads(Path(spec_path).read_text())
    out = Path(out_path)
    res: dict = {"spec": spec, "outcome": "error", "pid": os.getpid()}

    def progress(name, info):
        print(f"[{spec.get('label', spec['method'])}] {name}: " + ", ".join(f"{k}={v / 2**30:.2f}GiB" if k.endswith("bytes") else f"{k}={v:.2f}" for k, v in info.items() if k != "t"), flush=True)

    with NvmlSampler() as nv:
        try:
            res.update(train_and_measure(spec, progress=progress))
            res["outcome"] = "ok"
        except torch.OutOfMemoryError as e:
            res["outcome"] = "oom"
            res["error"] = str(e).splitlines()[0][:500]
        except Exception as e:  # a failure is a result: keep the traceback
            res["outcome"] = "error"
            res["error"] = f"{type(e).__name__}: {e}"[:2000]
            res["traceback"] = traceback.format_exc()[-6000:]
        finally:
            if torch.cuda.is_available():
                res["max_allocated_bytes"] = torch.cuda.max_memory_allocated()
                res["max_reserved_bytes"] = torch.cuda.max_memory_reserved()
    res.update(nv.result())
    write_json_atomic(out, res)
    print(f"[{spec.get('label', spec['method'])}] outcome={res['outcome']}", flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover - exercised through subprocesses
    import sys

    sys.exit(worker_main(sys.argv[1], sys.argv[2]))
