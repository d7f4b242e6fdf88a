"""The article's fine-tuning recipe (trl SFTTrainer + peft), instrumented to measure memory and time.

Used by the memory-accounting chapter (random weights, synthetic data) and the LoRA-vs-QLoRA chapter (a real
dataset, real or random weights, evaluation, generation, padding-free batches). Models are built from a
``config.json`` with random weights, saved once as a local checkpoint, and loaded back with ``from_pretrained``
exactly as the article loads ELYZA (bf16, ``device_map``, optional ``BitsAndBytesConfig``), so the measured path is
the article's path minus the download. A pretrained checkpoint folder is loaded the same way.
"""

from __future__ import annotations

import json
import os
import statistics
import threading
import time
import traceback
from pathlib import Path

from llmstudy.core import models as M
from llmstudy.core.records import write_json_atomic

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


UNK_TOKEN = "<unk:synthetic-word-level>"  # longer than any word + its separator: see synthetic_tokenizer


def synthetic_tokenizer(vocab_size: int):
    """A word-level tokenizer with exactly ``vocab_size`` ids: UNK_TOKEN=0, <s>=1, </s>=2, then "t3".."t{V-1}".

    Token counts are exact (one word = one id), which is all memory and speed measurements need. Never use it for
    quality: the text means nothing.

    The unknown token's string is long on purpose. vLLM (0.25 and later) rejects a text prompt with more than
    max_input_tokens x (longest token string in the vocabulary) characters before tokenizing it. Real vocabularies
    hold their word separators inside tokens ("▁word"); this one splits on spaces the vocabulary does not hold, so
    with "<unk>" the bound was one character short per token ("t31999 " is 7 characters, the longest token 6) and
    vLLM answered 400 Bad Request to long prompts that fit the context.
    """
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=synthetic_word_level(vocab_size), bos_token="<s>", eos_token="</s>", unk_token=UNK_TOKEN, pad_token="</s>"
    )


def synthetic_word_level(vocab_size: int, specials: dict[str, int] | None = None):
    """The ``tokenizers.Tokenizer`` behind :func:`synthetic_tokenizer`: UNK_TOKEN=0, <s>=1, </s>=2 and "t<id>" for every
    other id, split on whitespace; ``specials`` (token -> id) take their ids instead of the "t<id>" words."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    taken = set((specials or {}).values())
    vocab = {UNK_TOKEN: 0, "<s>": 1, "</s>": 2}
    vocab.update({f"t{i}": i for i in range(3, vocab_size) if i not in taken})
    vocab.update(specials or {})
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK_TOKEN))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return tok


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
        kwargs["quantization_config"] = quantization_config(double_quant)
    return AutoModelForCausalLM.from_pretrained(str(checkpoint), **kwargs)


def quantization_config(double_quant: bool = True):
    """The article's QLoRA quantization (§3.3): NF4 weights, double quantization, bf16 compute."""
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16, bnb_4bit_use_double_quant=double_quant)


def prepare_kbit(model, grad_ckpt: bool):
    """The article's QLoRA step (§3.3): peft's ``prepare_model_for_kbit_training``.

    It freezes the base model, casts every parameter that is not 4-bit (embeddings, norms, output head) to fp32 and
    enables gradient checkpointing on the model. The memory model counts the fp32 copies (``Setup.fp32_upcast``).
    """
    from peft import prepare_model_for_kbit_training

    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=grad_ckpt)


def lora_config(r: int = 4, alpha: int = 8, dropout: float = 0.1, targets=M.LLAMA_LORA_TARGETS, target_parameters=None):
    """peft's LoRA config: ``targets`` are module names (or one pattern, as ``models.lora_targets`` gives for a
    multimodal config); ``target_parameters`` fused expert tensors (transformers 5 MoE), when there are any."""
    from peft import LoraConfig

    extra = {"target_parameters": list(target_parameters)} if target_parameters else {}
    return LoraConfig(
        task_type="CAUSAL_LM",
        inference_mode=False,
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=targets if isinstance(targets, str) else list(targets),
        bias="none",
        **extra,
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


def _load_data(spec: dict, vocab_size: int):
    """(tokenizer, train dataset, eval dataset or None): a real prompt/completion set, or synthetic rows."""
    if spec.get("data"):
        from datasets import Dataset
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(spec["tokenizer"])
        data = json.loads(Path(spec["data"]).read_text())
        train = Dataset.from_list(data["train"])
        evals = Dataset.from_list(data["eval"]) if data.get("eval") else None
        return tok, train, evals
    tok = synthetic_tokenizer(vocab_size)
    n_rows = spec["steps"] * spec["grad_accum"] * spec["micro_batch"]
    return tok, synthetic_prompt_completion(n_rows, spec["seq_len"], vocab_size, seed=spec.get("seed", 42)), None


def sft_config(spec: dict, cuda: bool, has_eval: bool):
    """The article's ``SFTConfig`` for a spec: ``steps`` optimizer steps, or ``epochs`` full epochs when steps is 0."""
    from trl import SFTConfig

    padding_free = bool(spec.get("padding_free", False))
    eval_steps = spec.get("eval_steps") or 0
    max_length = spec.get("max_length") or spec.get("seq_len", 0) + 8
    return SFTConfig(
        output_dir=spec.get("output_dir", "/tmp/llmstudy-sft"),
        max_steps=spec.get("steps") or -1,
        num_train_epochs=spec.get("epochs", 1),
        per_device_train_batch_size=spec["micro_batch"],
        gradient_accumulation_steps=spec["grad_accum"],
        per_device_eval_batch_size=spec.get("eval_batch_size", 8),
        learning_rate=spec.get("learning_rate", RECIPE["learning_rate"]),
        lr_scheduler_type=RECIPE["lr_scheduler_type"],
        warmup_steps=RECIPE["warmup_steps"],
        bf16=cuda and spec.get("weight_dtype", "bf16") != "fp16",
        gradient_checkpointing=spec["grad_ckpt"],
        optim=spec["optimizer"],
        completion_only_loss=True,
        # trl refuses max_length with padding-free batches without packing: the caller checks lengths instead
        max_length=None if padding_free else max_length,
        padding_free=padding_free,
        logging_steps=1,
        save_strategy="no",  # a resumable run saves through ``StopAt`` only: at its stop time and at the end
        save_total_limit=1 if spec.get("resumable") else None,
        eval_strategy="steps" if has_eval and eval_steps else "no",
        eval_steps=eval_steps or None,
        report_to="none",
        seed=spec.get("seed", 42),
        dataloader_num_workers=0,
        disable_tqdm=True,
    )


def train_and_measure(spec: dict, progress=None, after_train=None) -> dict:
    """Run the article's recipe for ``spec`` and measure memory and time; ``after_train(trainer, result)`` follows.

    ``spec`` keys: checkpoint, model, method (``lora``, ``qlora``, ``full`` or ``base`` = no training), optimizer,
    weight_dtype, micro_batch, grad_accum, steps (0: run ``epochs``), grad_ckpt, lora_r, lora_alpha, lora_dropout,
    lora_targets, double_quant, kbit_prep, seed, output_dir; synthetic data: seq_len; a real dataset: data (JSON with
    ``train``/``eval`` prompt-completion rows), tokenizer (a folder), max_length, padding_free, eval_steps; across
    time-limited calls: resumable (resume from the latest checkpoint in output_dir), stop_at (a ``time.time()`` by
    which training must stop, checkpointed, with ``stopped`` set in the result).
    Returns stage memories, the measured decomposition, step times (and their wall-clock spans, over all calls), the
    trainer's log history, the shape of every micro-batch and the ``calls`` that trained it. Raises on failure.
    """
    import torch
    from transformers import TrainerCallback
    from trl import SFTTrainer

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
    if spec["method"] == "qlora" and spec.get("kbit_prep"):
        model = prepare_kbit(model, spec["grad_ckpt"])
    mark("loaded")
    result["load_param_bytes"] = tensor_bytes(model.parameters())
    result["load_buffer_bytes"] = tensor_bytes(model.buffers())

    tok, ds, eval_ds = _load_data(spec, model.config.get_text_config().vocab_size)
    args = sft_config(spec, cuda, eval_ds is not None)
    peft_cfg = None
    if spec["method"] in ("lora", "qlora"):
        peft_cfg = lora_config(spec.get("lora_r", 4), spec.get("lora_alpha", 8), spec.get("lora_dropout", 0.1), spec.get("lora_targets", M.LLAMA_LORA_TARGETS),
                               spec.get("lora_target_parameters"))

    resume = last_checkpoint(spec.get("output_dir")) if spec.get("resumable") else None
    prior = _read_progress(resume) if resume else {}
    step_times: list[float] = list(prior.get("step_seconds", []))
    step_walls: list[list[float]] = list(prior.get("step_walls", []))
    micro_batches: list[list] = list(prior.get("micro_batches", []))  # [rows, tokens (incl. padding), label tokens] of every training micro-batch
    measured: dict = dict(prior.get("measured", {}))
    calls: list[dict] = list(prior.get("calls", []))
    call = {"call": len(calls) + 1, "resumed_from_step": _ckpt_step(resume) if resume else 0, "first_step_index": len(step_times), "steps": 0, "started": time.time()}
    calls.append(call)
    trained = [len(micro_batches)]  # micro-batches trained on; the dataloader collates one ahead of training

    def progress_record(state) -> dict:
        return {"step_seconds": step_times, "step_walls": step_walls, "log_history": state.log_history, "micro_batches": micro_batches[: trained[0]], "measured": measured, "calls": calls}

    class Probe(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            if cuda:
                torch.cuda.synchronize()
            self.t0 = time.perf_counter()
            self.w0 = time.time()

        def on_pre_optimizer_step(self, args, state, control, model=None, **kw):
            if "gradients" not in measured and model is not None:
                measured["gradients"] = tensor_bytes(p.grad for p in model.parameters())
                measured["allocated_before_first_optimizer_step"] = _mem(torch).get("allocated_bytes")

        def on_step_end(self, args, state, control, model=None, optimizer=None, **kw):
            if cuda:
                torch.cuda.synchronize()
            step_times.append(time.perf_counter() - self.t0)
            step_walls.append([self.w0, time.time()])
            call["steps"] += 1
            if spec.get("progress_file"):  # what survives a kill at a deadline
                write_json_atomic(Path(spec["progress_file"]), progress_record(state))
            if state.global_step == 1:
                if optimizer is not None:
                    measured["optimizer"] = tensor_bytes(_optimizer_tensors(optimizer))
                mark("after_first_step")
            if progress:
                progress(f"step {state.global_step}/{state.max_steps}", {"seconds": step_times[-1]})

    class StopAt(TrainerCallback):
        """Checkpoint and stop when the next step would end after ``stop_at``; checkpoint the last step too."""

        def on_train_begin(self, args, state, control, **kw):
            self.last, self.gaps = time.time(), []

        def on_step_end(self, args, state, control, **kw):
            now = time.time()
            self.gaps.append(now - self.last)  # step + the evaluation and logging after the previous one
            self.last = now
            longest = max(self.gaps[1:] or self.gaps)  # the first gap of a call holds its one-off setup
            if state.global_step >= state.max_steps:
                control.should_save = True  # a kill during evaluation/generation then resumes with no step to redo
            elif spec.get("stop_at") and now + longest > spec["stop_at"]:
                control.should_save = control.should_training_stop = True

        def on_save(self, args, state, control, **kw):  # the Trainer has written checkpoint-<step>; our records join it
            call["train_ended"] = time.time()
            call["train_seconds"] = call["train_ended"] - call["train_started"]  # as of this checkpoint
            write_json_atomic(Path(args.output_dir) / f"checkpoint-{state.global_step}" / PROGRESS, progress_record(state))

    callbacks = [Probe()] + ([StopAt()] if spec.get("resumable") else [])
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, eval_dataset=eval_ds, processing_class=tok, peft_config=peft_cfg, callbacks=callbacks)
    collate = trainer.data_collator

    def recording_collator(features):
        batch = collate(features)
        micro_batches.append([int(batch["input_ids"].shape[0]), int(batch["input_ids"].numel()), int((batch["labels"] != -100).sum())])
        return batch

    make_eval_loader = trainer.get_eval_dataloader

    def eval_loader(*a, **kw):  # evaluation batches keep the plain collator: only training micro-batches are recorded
        trainer.data_collator = collate
        try:
            return make_eval_loader(*a, **kw)
        finally:
            trainer.data_collator = recording_collator

    train_step = trainer.training_step

    def counting_step(*a, **kw):
        trained[0] += 1
        return train_step(*a, **kw)

    trainer.data_collator = recording_collator
    trainer.get_eval_dataloader = eval_loader
    trainer.training_step = counting_step
    mark("trainer_ready")
    tm = trainer.model
    result["trainable_params"] = int(sum(p.numel() for p in tm.parameters() if p.requires_grad))
    result["total_params"] = int(sum(p.numel() for p in tm.parameters()))
    result["trainable_dtypes"] = sorted({str(p.dtype) for p in tm.parameters() if p.requires_grad})
    first = trainer.train_dataset[0]
    result["tokens_per_sample"] = len(first["input_ids"])
    result["completion_tokens_per_sample"] = int(sum(x != -100 for x in first["labels"])) if "labels" in first else int(sum(first.get("completion_mask", [])))
    result["train_rows"] = len(trainer.train_dataset)
    result["eval_rows"] = len(trainer.eval_dataset) if trainer.eval_dataset is not None else 0
    if spec["method"] != "base":
        if resume:  # trl counts the tokens it trained on itself, outside the Trainer's state: carry the count over
            logged = [h["num_tokens"] for h in json.loads((Path(resume) / "trainer_state.json").read_text())["log_history"] if "num_tokens" in h]
            if logged and hasattr(trainer, "_total_train_tokens"):
                trainer._total_train_tokens = logged[-1]
        t_train = time.perf_counter()
        call["train_started"] = time.time()
        out = trainer.train(resume_from_checkpoint=resume)
        call["train_seconds"] = time.perf_counter() - t_train
        call["train_ended"] = time.time()
        result["train_started"] = calls[0].get("train_started")
        result["train_seconds"] = sum(c.get("train_seconds", 0.0) for c in calls)
        result["train_ended"] = call["train_ended"]
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        # the Trainer's training_loss divides this call's loss sum by all steps: over several calls take the mean of
        # the per-step losses (logging_steps=1), which is what it equals in one call
        result["train_loss"] = float(out.training_loss) if len(calls) == 1 else statistics.fmean(losses)
        if len(calls) > 1 and "train_loss" in trainer.state.log_history[-1]:
            trainer.state.log_history[-1]["train_loss"] = result["train_loss"]
        if trainer.state.global_step < trainer.state.max_steps:
            result["stopped"] = True
            result["checkpoint"] = last_checkpoint(args.output_dir)
        result["global_step"], result["max_steps"] = trainer.state.global_step, trainer.state.max_steps
    mark("end")
    base = tm.get_base_model() if hasattr(tm, "get_base_model") else tm
    result["gradient_checkpointing"] = bool(getattr(base, "is_gradient_checkpointing", False))
    result["param_bytes"] = tensor_bytes(tm.parameters())
    result["measured"] = measured
    result["step_seconds"] = step_times
    result["step_walls"] = step_walls
    result["micro_batches"] = micro_batches[: trained[0]]
    result["log_history"] = trainer.state.log_history
    result["losses"] = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    result["calls"] = calls
    result["median_step_seconds"] = steady_median(step_times, calls)
    if result.get("stopped"):
        return result
    if after_train:
        trainer.data_collator = collate
        after_train(trainer, result)
    return result


PROGRESS = "llmstudy_progress.json"  # our per-step records up to a checkpoint, kept inside it


def last_checkpoint(output_dir) -> str | None:
    """The Trainer checkpoint with the most steps in ``output_dir`` (``checkpoint-<step>``), or None."""
    d = Path(output_dir) if output_dir else None
    found = [p for p in d.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()] if d and d.is_dir() else []
    return str(max(found, key=_ckpt_step)) if found else None


def _ckpt_step(path) -> int:
    return int(Path(path).name.split("-")[-1])


def _read_progress(ckpt: str) -> dict:
    f = Path(ckpt) / PROGRESS
    if not f.is_file():
        raise RuntimeError(f"{ckpt} has no {PROGRESS} (interrupted while saving?): delete the checkpoint to resume from an earlier one, or start a new run id")
    return json.loads(f.read_text())


def steady_median(step_seconds: list[float], calls: list[dict] | None = None) -> float | None:
    """Median step time without the first step of each call (its one-off setup: compilation, allocation, resume)."""
    firsts = {c.get("first_step_index", 0) for c in calls or [{}] if c.get("steps", 1)}
    steady = [s for i, s in enumerate(step_seconds) if i not in firsts] or step_seconds
    return statistics.median(steady) if steady else None


# --- After training: exact evaluation, greedy answers, adapters ---------------------------------------------------


def _autocast(device):
    """bf16 autocast on a GPU, as in training (QLoRA keeps fp32 embeddings and head next to bf16 adapters)."""
    import contextlib

    import torch

    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()


def exact_eval(model, dataset, pad_token_id: int, batch_size: int = 8) -> dict:
    """Mean negative log-likelihood per label token over a tokenized dataset (trl's ``labels``), and its perplexity.

    Unlike the Trainer's ``eval_loss`` (a mean of per-batch means), every label token weighs the same, so variants
    that batch differently are compared on the same number.
    """
    import math

    import torch
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    collate = DataCollatorForLanguageModeling(pad_token_id=pad_token_id)
    device = next(p for p in model.parameters()).device
    was_training = model.training
    model.eval()
    nll, count = 0.0, 0
    with torch.no_grad(), _autocast(device):
        for i in range(0, len(dataset), batch_size):
            rows = [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in dataset.select(range(i, min(i + batch_size, len(dataset))))]
            batch = {k: v.to(device) for k, v in collate(rows).items()}
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
            labels = batch["labels"][:, 1:]
            nll += float(torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=-100, reduction="sum"))
            count += int((labels != -100).sum())
    model.train(was_training)
    loss = nll / max(count, 1)
    return {"loss": loss, "tokens": count, "perplexity": math.exp(loss)}


def generate_greedy(model, tok, texts: list[str], add_special_tokens: bool, eos: list[str], max_new_tokens: int, batch_size: int = 48) -> list[str]:
    """Greedy answers (no sampling) to already-formatted prompts, left-padded in batches; the new text only."""
    import torch

    device = next(p for p in model.parameters()).device
    eos_ids = [i for i in tok.convert_tokens_to_ids(list(eos)) if i is not None and i != tok.unk_token_id]
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos_ids[0]
    old_side = tok.padding_side
    tok.padding_side = "left"
    was_training = model.training
    model.eval()
    out: list[str] = []
    try:
        for i in range(0, len(texts), batch_size):
            enc = tok(texts[i : i + batch_size], return_tensors="pt", padding=True, add_special_tokens=add_special_tokens).to(device)
            torch.manual_seed(0)
            with torch.no_grad(), _autocast(device):
                gen = model.generate(**enc, do_sample=False, max_new_tokens=max_new_tokens, eos_token_id=eos_ids, pad_token_id=pad, use_cache=True)
            out += [t.strip() for t in tok.batch_decode(gen[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)]
    finally:
        tok.padding_side = old_side
        model.train(was_training)
    return out


def post_train(trainer, spec: dict, result: dict) -> None:
    """What a spec asks for after training: exact eval loss, greedy answers, the saved adapter."""
    tok = trainer.processing_class
    if spec.get("eval_exact") and trainer.eval_dataset is not None:
        result["eval_exact"] = exact_eval(trainer.model, trainer.eval_dataset, tok.pad_token_id)
    gen = spec.get("generate")
    if gen:
        t0 = time.perf_counter()
        result["answers"] = generate_greedy(trainer.model, tok, gen["prompts"], gen["add_special_tokens"], gen["eos"], gen["max_new_tokens"])
        result["generate_seconds"] = time.perf_counter() - t0
    if spec.get("save_adapter") and spec["method"] in ("lora", "qlora"):
        trainer.model.save_pretrained(spec["save_adapter"])
        result["adapter_files"] = sorted(p.name for p in Path(spec["save_adapter"]).iterdir())


# --- Worker processes -------------------------------------------------------------------------------------------


def run_workers(jobs: list[dict], timeout_s: float) -> list[dict]:
    """Run worker subprocesses side by side (one per job: ``spec_file``, ``result_file``, ``log_file``) and wait.

    Each job's result is its worker's JSON, or an ``error``/``timeout`` outcome; an error whose log shows a CUDA
    out-of-memory is an ``oom``. Jobs run concurrently only when passed together.
    """
    import subprocess
    import sys

    procs = []
    for job in jobs:
        new = Path(str(job["result_file"]) + ".new")
        new.unlink(missing_ok=True)
        log = open(job["log_file"], "w")
        cmd = [sys.executable, "-m", "llmstudy.training.finetune", str(job["spec_file"]), str(new)]
        procs.append((job, new, log, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})))
    deadline = time.monotonic() + timeout_s
    results = []
    for job, new, log, proc in procs:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            res = json.loads(new.read_text()) if new.exists() else {"outcome": "error", "error": f"worker exited {proc.returncode} without a result"}
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            res = {"outcome": "timeout", "error": f"no result within {timeout_s:.0f} s"}
        log.close()
        tail = Path(job["log_file"]).read_text(errors="replace")[-4000:]
        if res.get("outcome") == "error" and "OutOfMemory" in (res.get("error") or "") + tail:
            res["outcome"] = "oom"
        new.unlink(missing_ok=True)
        results.append(res)
    return results


def worker_main(spec_path: str, out_path: str) -> int:
    """Subprocess entry: run one spec, always write a JSON result (outcome ok | incomplete | oom | error)."""
    import torch

    spec = json.loads(Path(spec_path).read_text())
    out = Path(out_path)
    res: dict = {"spec": spec, "outcome": "error", "pid": os.getpid()}

    def progress(name, info):
        print(f"[{spec.get('label', spec['method'])}] {name}: " + ", ".join(f"{k}={v / 2**30:.2f}GiB" if k.endswith("bytes") else f"{k}={v:.2f}" for k, v in info.items() if k != "t"), flush=True)

    with NvmlSampler() as nv:

        def after_train(trainer, result):
            nv.sample()  # the training peak, before evaluation and generation allocate anything
            result["nvml_train"] = nv.result()
            if torch.cuda.is_available():
                result["train_max_allocated_bytes"] = torch.cuda.max_memory_allocated()
                result["train_max_reserved_bytes"] = torch.cuda.max_memory_reserved()
            post_train(trainer, spec, result)

        try:
            res.update(train_and_measure(spec, progress=progress, after_train=after_train))
            res["outcome"] = "incomplete" if res.get("stopped") else "ok"
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
