"""Fine-tuning memory accounting: a component model of GPU memory for full fine-tuning, LoRA and QLoRA.

The model follows what the software actually allocates (transformers + peft + trl + bitsandbytes, as pinned in
``envs/gpu-finetune.txt``), not a rule of thumb:

* **weights** - every parameter in the load dtype; QLoRA stores ``nn.Linear`` weights as NF4 (4 bits) plus the
  quantization constants (one fp32 absmax per 64 weights, or with double quantization one byte per 64 weights and
  one fp32 per 256 blocks) and keeps embeddings, norms and the output head in bf16. LoRA adapters are extra
  weights: fp32 under LoRA (peft up-casts adapters), bf16 under QLoRA (trl casts them, following the paper).
* **gradients** - one per trainable parameter, in that parameter's dtype.
* **optimizer** - torch AdamW keeps two moments in the parameter's dtype; bitsandbytes 8-bit AdamW keeps two uint8
  moments plus one fp32 absmax per 256 values for tensors of at least 4096 values, two fp32 moments below that;
  the *paged* variant allocates the moments of tensors of at least 1e5 values in CUDA managed memory, outside the
  PyTorch allocator (reported separately: ``optimizer (paged)``).
* **activations** - per token per layer in the compute dtype; with gradient checkpointing only each layer's input
  is kept, plus one layer's activations while it is recomputed.
* **temporary** - the loss head, the largest dequantized weight under QLoRA, and the cuBLAS workspace. The loss
  head is trl's fused one by default (``loss_head="fused"``: trl >= 1.x SFTTrainer, which this study trains with,
  scores tokens through one bf16 logits tile of at most 4,096 tokens x 32,768 vocabulary entries); ``"full"`` is a
  model's own loss (bf16 logits, an fp32 copy and its gradient for every token), as the article's older trl did.

The article's rules are special cases: 12 bytes/param (fp16 weights + fp16 grads + two fp32 moments), ZeRO's 16
(mixed precision with an fp32 master copy), LoRA's "2x + extras" and QLoRA's "0.7x + extras".
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

import pandas as pd

from llmstudy.core import models as M

GiB = 2**30
GB = 10**9

METHODS = ("full", "lora", "qlora")
DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
# Optimizers the memory model knows. ``runnable`` ones are HF Trainer ``optim`` names the run mode executes;
# the others are the published rules, kept to reproduce them.
OPTIMIZERS = {
    "adamw_torch": "torch AdamW: two moments in the parameter's dtype",
    "adamw_8bit": "bitsandbytes 8-bit AdamW: two uint8 moments + fp32 absmax per 256 values",
    "paged_adamw_8bit": "as adamw_8bit, moments of tensors >= 1e5 values in CUDA managed (paged) memory",
    "sgd": "plain SGD without momentum: no state",
    "adamw_fp32_states": "rule: two fp32 moments per parameter (the article's 8 bytes/param)",
    "adamw_mixed": "rule: fp32 master weights + two fp32 moments (ZeRO's K = 12 bytes/param)",
}
RUNNABLE_OPTIMIZERS = ("adamw_torch", "adamw_8bit", "paged_adamw_8bit", "sgd")
BNB_8BIT_OPTIMIZERS = ("adamw_8bit", "paged_adamw_8bit")
BNB_8BIT_MIN_SIZE = 4096  # bitsandbytes Optimizer8bit min_8bit_size
BNB_PAGED_MIN_SIZE = 100_000  # bitsandbytes get_state_buffer: paged only for tensors with numel >= 1e5
BNB_BLOCK = 256  # 8-bit optimizer absmax block
NF4_BLOCK = 64  # 4-bit quantization block
DQ_BLOCK = 256  # double-quantization block
# trl >= 1.x SFTTrainer patches the model with a fused LM head (trl/trainer/utils.py `add_fused_lm_head`): per-token
# log-probabilities from [4,096-token x 32,768-entry] bf16 logits tiles (trl/kernels/chunked_logprob.py
# TOKEN_CHUNK_SIZE, trl/trainer/utils.py _CHUNKED_LOGPROB_CHUNK_SIZE; trl 1.16.0), never the full logits.
LOSS_HEADS = ("full", "fused")
FUSED_TOKEN_TILE, FUSED_VOCAB_TILE = 4096, 32768
CUBLAS_WORKSPACE = 32 * 2**20  # torch's default cuBLAS workspace on Hopper (":4096:8" = 8 x 4 MiB)
MEMORY_COMPONENTS = ("weights", "gradients", "optimizer", "activations", "temporary")


@dataclass(frozen=True)
class Setup:
    """One fine-tuning configuration whose memory we predict (and, in run mode, measure)."""

    model: str = "llama-2-7b"
    method: str = "lora"
    optimizer: str = "paged_adamw_8bit"
    weight_dtype: str = "bf16"
    seq_len: int = 100
    micro_batch: int = 1
    grad_ckpt: bool = True
    lora_r: int = 4
    lora_targets: tuple[str, ...] = M.LLAMA_LORA_TARGETS
    double_quant: bool = True
    fp32_upcast: bool = False  # QLoRA after peft's prepare_model_for_kbit_training: non-4-bit params in fp32
    loss_head: str = "fused"  # "fused": trl's chunked LM head (SFTTrainer, measured here); "full": the model's own loss

    def __post_init__(self):
        errors = []
        if self.method not in METHODS:
            errors.append(f"method must be one of {METHODS}, got {self.method!r}")
        if self.optimizer not in OPTIMIZERS:
            errors.append(f"optimizer must be one of {tuple(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.weight_dtype not in DTYPE_BYTES:
            errors.append(f"weight_dtype must be one of {tuple(DTYPE_BYTES)}, got {self.weight_dtype!r}")
        for name in ("seq_len", "micro_batch"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                errors.append(f"{name} must be a positive integer, got {v!r}")
        if self.method != "full" and (not isinstance(self.lora_r, int) or self.lora_r <= 0):
            errors.append(f"lora_r must be a positive integer, got {self.lora_r!r}")
        if self.method == "qlora" and self.weight_dtype == "fp32":
            errors.append("qlora keeps non-quantized weights in bf16/fp16; weight_dtype fp32 is not a QLoRA setup")
        if self.fp32_upcast and self.method != "qlora":
            errors.append("fp32_upcast (prepare_model_for_kbit_training) applies to qlora only")
        if self.loss_head not in LOSS_HEADS:
            errors.append(f"loss_head must be one of {LOSS_HEADS}, got {self.loss_head!r}")
        if errors:
            raise ValueError("; ".join(errors))

    def label(self) -> str:
        ck = "ckpt" if self.grad_ckpt else "no-ckpt"
        up = "/fp32-upcast" if self.fp32_upcast else ""
        head = "/fused-head" if self.loss_head == "fused" else ""
        return f"{self.method}/{self.optimizer}/{self.weight_dtype}/s{self.seq_len}xb{self.micro_batch}/{ck}{up}{head}"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["lora_targets"] = list(self.lora_targets)
        return d


def _lora_tensors(table: pd.DataFrame, r: int, targets) -> list[int]:
    """numel of each LoRA A and B tensor peft creates for the target linear layers."""
    out = []
    lin = table[table["linear"]]
    for _, row in lin.iterrows():
        module = row["name"].rsplit(".", 1)[0]
        if module.rsplit(".", 1)[-1] in targets:
            out += [r * int(row["in_features"]), int(row["out_features"]) * r]
    return out


def _optimizer_bytes(numels: list[int], optimizer: str, param_bytes: int) -> tuple[float, float]:
    """(device bytes, paged bytes) of optimizer state for trainable tensors of the given sizes."""
    device = paged = 0.0
    for n in numels:
        if optimizer == "adamw_torch":
            device += 2 * param_bytes * n
        elif optimizer == "adamw_fp32_states":
            device += 8 * n
        elif optimizer == "adamw_mixed":
            device += 12 * n
        elif optimizer == "sgd":
            pass
        elif optimizer in BNB_8BIT_OPTIMIZERS:
            if n < BNB_8BIT_MIN_SIZE:
                state = 8.0 * n
                absmax = 0.0
            else:
                state = 2.0 * n
                absmax = 2 * 4.0 * -(-n // BNB_BLOCK)
            if optimizer == "paged_adamw_8bit" and n >= BNB_PAGED_MIN_SIZE:
                paged += state
                device += absmax
            else:
                device += state + absmax
        else:  # pragma: no cover - Setup validates
            raise ValueError(optimizer)
    return device, paged


def _nf4_bytes(numel: int, double_quant: bool) -> float:
    blocks = -(-numel // NF4_BLOCK)
    if double_quant:
        consts = blocks * 1 + 4 * -(-blocks // DQ_BLOCK) + 4 * 256 + 4  # uint8 absmax, fp32 absmax2, code, offset
    else:
        consts = blocks * 4
    return numel / 2 + consts


def activation_bytes_per_token_layer(cfg, setup: Setup) -> float:
    """Bytes autograd keeps per token per decoder layer without checkpointing (bf16 compute).

    Counted from what each op saves for backward in transformers' Llama block:
    * each RMSNorm keeps an fp32 copy of its input (4h), and with a trainable weight also its bf16 output (2h);
    * SDPA/flash attention keeps q, k, v and its output (no seq x seq matrix);
    * SwiGLU keeps the gate output (SiLU input) and both factors of the product (3 x 2i);
    * a trainable linear layer keeps its input (q/k/v share one, gate/up share one, down keeps the product);
    * a frozen linear layer keeps nothing, but each LoRA adapter on it keeps its dropout output (bf16) and the
      dropout mask (1 byte) of the layer's input width.
    Checked against H100 runs without checkpointing (Llama-2-7B, 1024 tokens): 238,336 B predicted per token per
    layer for LoRA, 7.55 GiB measured for 32 layers (7.27 GiB predicted + logits).
    """
    t = M.text_config(cfg)
    h = t.hidden_size
    heads = t.num_attention_heads
    d = getattr(t, "head_dim", None) or h // heads
    kv = (getattr(t, "num_key_value_heads", None) or heads) * d
    q = heads * d
    inter = getattr(t, "intermediate_size_mlp", None) or t.intermediate_size
    total = 2 * 4 * h  # two norms, fp32 input copies
    total += 2 * (q + 2 * kv) + 2 * q  # attention inputs and output
    total += 3 * 2 * inter  # SwiGLU
    if setup.method == "full":
        total += 2 * 2 * h  # norm outputs for the weight gradient
        total += 2 * h + 2 * h + 2 * inter  # q/k/v input, gate/up input, down input
    else:
        width = {"q_proj": h, "k_proj": h, "v_proj": h, "o_proj": q, "gate_proj": h, "up_proj": h, "down_proj": inter}
        total += sum(3 * width.get(name, h) for name in setup.lora_targets)
    return float(total)


def predict(setup: Setup) -> pd.DataFrame:
    """Predicted memory by component for one setup (bytes).

    ``location`` says where it lives (``device``: the PyTorch allocator; ``paged``: CUDA managed memory) and
    ``phase`` when it is alive: ``always``, ``backward`` (forward/backward of a micro-batch) or ``step`` (the
    optimizer update). The allocator's peak is the larger of always+backward and always+step.
    """
    cfg = M.load_config(setup.model)
    t = M.text_config(cfg)
    table = M.parameters(setup.model)
    wb = DTYPE_BYTES[setup.weight_dtype]
    rows: list[dict] = []

    def add(component, nbytes, detail, location="device", phase="always"):
        rows.append({"component": component, "bytes": float(nbytes), "location": location, "phase": phase, "detail": detail})

    # Weights
    if setup.method == "qlora":
        lin = table[table["linear"]]
        rest = table[~table["linear"]]
        q_bytes = sum(_nf4_bytes(int(n), setup.double_quant) for n in lin["numel"])
        add("weights", q_bytes, f"{int(lin.numel.sum()):,} linear weights in NF4 + quantization constants")
        rb, rdt = (4, "fp32 (prepare_model_for_kbit_training)") if setup.fp32_upcast else (2, "bf16")
        add("weights", rb * rest.numel.sum(), f"{int(rest.numel.sum()):,} embedding/norm/head params in {rdt}")
    else:
        add("weights", wb * table.numel.sum(), f"{int(table.numel.sum()):,} params in {setup.weight_dtype}")

    # Trainable parameters, gradients, optimizer
    emb = int(table[table.component == "embeddings"].numel.sum())
    if setup.method == "full":
        trainable = [int(n) for n in table["numel"]]
        pb = wb
    else:
        trainable = _lora_tensors(table, setup.lora_r, setup.lora_targets)
        pb = 4 if setup.method == "lora" else 2
        add("weights", pb * sum(trainable), f"{sum(trainable):,} LoRA params (r={setup.lora_r}) in {'fp32' if pb == 4 else 'bf16'}")
    n_train = sum(trainable)
    add("gradients", pb * n_train, f"{n_train:,} trainable params x {pb} B")
    if setup.method == "full" and setup.optimizer in BNB_8BIT_OPTIMIZERS:
        # HF Trainer registers nn.Embedding weights for 32-bit states under bitsandbytes optimizers.
        non_emb = [int(n) for n in table[table.component != "embeddings"].numel]
        dev, paged = _optimizer_bytes(non_emb, setup.optimizer, pb)
        emb_state = 8.0 * emb
        if setup.optimizer == "paged_adamw_8bit":
            paged += emb_state
        else:
            dev += emb_state
        detail = OPTIMIZERS[setup.optimizer] + "; embeddings keep 32-bit states (HF Trainer override)"
    else:
        dev, paged = _optimizer_bytes(trainable, setup.optimizer, pb)
        detail = OPTIMIZERS[setup.optimizer]
    add("optimizer", dev, detail)
    if paged:
        add("optimizer", paged, "paged moments (CUDA managed memory, outside the torch allocator)", "paged")
    if setup.optimizer == "adamw_torch":
        add("temporary", pb * n_train, "foreach AdamW: one parameter-sized intermediate during the update", phase="step")

    # Activations (backward phase)
    tokens = setup.seq_len * setup.micro_batch
    per_tl = activation_bytes_per_token_layer(cfg, setup)
    layers = t.num_hidden_layers
    if setup.grad_ckpt:
        # after prepare_model_for_kbit_training the embeddings are fp32, so the residual stream (and every checkpointed
        # layer input) stays fp32: a bf16 attention/MLP output added to an fp32 residual is fp32
        ib = 4 if setup.fp32_upcast else 2
        add("activations", layers * tokens * t.hidden_size * ib, f"checkpointed layer inputs ({'fp32 residual stream' if ib == 4 else 'bf16'})", phase="backward")
        add("activations", tokens * per_tl, f"one layer recomputed during backward ({per_tl / 1024:.0f} KiB/token)", phase="backward")
    else:
        add("activations", layers * tokens * per_tl, f"{layers} layers x {per_tl / 1024:.0f} KiB per token", phase="backward")

    # Temporary buffers (backward phase)
    if setup.loss_head == "fused":
        tile = min(tokens, FUSED_TOKEN_TILE) * min(t.vocab_size, FUSED_VOCAB_TILE) * 2
        add("temporary", tile + tokens * t.hidden_size * 4, f"fused LM head: one bf16 logits tile ({FUSED_TOKEN_TILE} tokens x {FUSED_VOCAB_TILE} vocabulary entries at most) + fp32 hidden-state grad", phase="backward")
    else:
        add("temporary", tokens * t.vocab_size * (2 + 4 + 4), "logits bf16 + fp32 copy + fp32 grad", phase="backward")
    if setup.method == "full" and emb:
        add("temporary", emb * (4 + 2), "embedding backward: fp32 accumulation + new bf16 grad", phase="backward")
    if setup.method == "qlora":
        add("temporary", 2 * int(table[table["linear"]].numel.max()), "largest dequantized weight (bf16)", phase="backward")
    add("temporary", CUBLAS_WORKSPACE, "cuBLAS workspace")
    return pd.DataFrame(rows)


def summarize(setup: Setup) -> dict:
    """Totals of :func:`predict` at the peak phase: per component (device), paged, and the allocator peak."""
    df = predict(setup)
    devdf = df[df.location == "device"]
    always = devdf[devdf.phase == "always"]["bytes"].sum()
    backward = always + devdf[devdf.phase == "backward"]["bytes"].sum()
    step = always + devdf[devdf.phase == "step"]["bytes"].sum()
    peak_phase = "backward" if backward >= step else "step"
    at_peak = devdf[devdf.phase.isin(["always", peak_phase])]
    dev = at_peak.groupby("component")["bytes"].sum().reindex(MEMORY_COMPONENTS, fill_value=0.0)
    out = {f"{c}_bytes": float(dev[c]) for c in MEMORY_COMPONENTS}
    out["paged_bytes"] = float(df[df.location == "paged"]["bytes"].sum())
    out["peak_bytes"] = float(max(backward, step))
    out["peak_phase"] = peak_phase
    out["params"] = int(M.parameters(setup.model).numel.sum())
    return out


def breakdown(setups) -> pd.DataFrame:
    """Tidy table: one row per (setup, component) with bytes, GiB and bytes per parameter."""
    rows = []
    for s in setups:
        sm = summarize(s)
        for c in MEMORY_COMPONENTS + ("paged",):
            b = sm[f"{c}_bytes"]
            rows.append(
                {
                    "model": s.model,
                    "method": s.method,
                    "optimizer": s.optimizer,
                    "weight_dtype": s.weight_dtype,
                    "seq_len": s.seq_len,
                    "micro_batch": s.micro_batch,
                    "grad_ckpt": s.grad_ckpt,
                    "setup": s.label(),
                    "component": c,
                    "bytes": b,
                    "GiB": b / GiB,
                    "bytes_per_param": b / sm["params"],
                    "params": sm["params"],
                }
            )
    return pd.DataFrame(rows)


# --- The article's rules ------------------------------------------------------------------------------------

RULES = {
    # name: (bytes/param, what it assumes, source)
    "full fp16 + Adam (article)": (12.0, "fp16 weights 2 + fp16 grads 2 + two fp32 moments 8", "article §1.2"),
    "full mixed precision (ZeRO)": (16.0, "fp16 weights 2 + grads 2 + fp32 master 4 + moments 8", "ZeRO §3.1"),
    "LoRA (article)": (2.0, "frozen fp16/bf16 weights; adapters, grads and states neglected", "article §2.2"),
    "QLoRA (article)": (0.7, "read off the QLoRA paper's figure", "article §3.2"),
}


def rule_of_thumb_table(models=("llama-2-7b", "llama-13b", "llama-33b", "llama-65b")) -> pd.DataFrame:
    """The rules applied to each model's exact parameter count (GB = 1e9 bytes, the article's unit)."""
    rows = []
    for m in models:
        n = int(M.parameters(m).numel.sum())
        for rule, (bpp, assumes, src) in RULES.items():
            rows.append({"model": m, "params": n, "rule": rule, "bytes_per_param": bpp, "GB": bpp * n / GB, "assumes": assumes, "source": src})
    return pd.DataFrame(rows)


def rule_setups(model: str, seq_len: int = 100, micro_batch: int = 1) -> dict[str, Setup]:
    """The memory model's configuration that each rule describes, for side-by-side comparison."""
    base = dict(model=model, seq_len=seq_len, micro_batch=micro_batch, grad_ckpt=True)
    return {
        "full fp16 + Adam (article)": Setup(method="full", optimizer="adamw_fp32_states", weight_dtype="fp16", **base),
        "full mixed precision (ZeRO)": Setup(method="full", optimizer="adamw_mixed", weight_dtype="fp16", **base),
        "LoRA (article)": Setup(method="lora", optimizer="paged_adamw_8bit", **base),
        "QLoRA (article)": Setup(method="qlora", optimizer="paged_adamw_8bit", **base),
    }




# --- Run mode: measure the setups on this machine -------------------------------------------------------------

EXPERIMENT = "memory_accounting"


def parse_method(spec: str, model: str, seq_len: int, micro_batch: int, grad_ckpt: bool, optimizer: str, lora_r: int = 4) -> Setup:
    """``"lora"``, ``"full:adamw_torch"`` or ``"full:adamw_torch:fp32"`` -> a :class:`Setup`."""
    parts = str(spec).split(":")
    if not 1 <= len(parts) <= 3 or not parts[0]:
        raise ValueError(f"method spec {spec!r} must be METHOD[:OPTIMIZER[:DTYPE]]")
    method = parts[0]
    opt = parts[1] if len(parts) > 1 and parts[1] else optimizer
    dtype = parts[2] if len(parts) > 2 else "bf16"
    return Setup(model=model, method=method, optimizer=opt, weight_dtype=dtype, seq_len=seq_len, micro_batch=micro_batch, grad_ckpt=grad_ckpt, lora_r=lora_r)


def refusal(setup: Setup, cuda: bool) -> str | None:
    """Why this machine cannot run a setup, or None."""
    if setup.optimizer not in RUNNABLE_OPTIMIZERS:
        return f"optimizer {setup.optimizer} is a published rule, not an optimizer the run mode executes"
    if not cuda and setup.method == "qlora":
        return "QLoRA needs a CUDA GPU (bitsandbytes 4-bit kernels)"
    if not cuda and setup.optimizer in BNB_8BIT_OPTIMIZERS:
        return f"{setup.optimizer} needs a CUDA GPU (bitsandbytes)"
    if setup.weight_dtype == "fp16":
        return "fp16 weights are not run (the recipe trains in bf16)"
    return None


def _tidy_row(setup: Setup, res: dict, grad_accum: int, steps: int) -> dict:
    g = 2**30
    stages = res.get("stages", {})
    m = res.get("measured", {})

    def stage(name, key):
        v = stages.get(name, {}).get(key)
        return v / g if v is not None else None

    def gib(v):
        return v / g if isinstance(v, (int, float)) and res.get("cuda") else None

    return {
        "model": setup.model,
        "method": setup.method,
        "optimizer": setup.optimizer,
        "weight_dtype": setup.weight_dtype,
        "seq_len": setup.seq_len,
        "micro_batch": setup.micro_batch,
        "grad_accum": grad_accum,
        "steps": steps,
        "grad_ckpt": setup.grad_ckpt,
        "lora_r": setup.lora_r if setup.method != "full" else None,
        "setup": setup.label(),
        "outcome": res.get("outcome"),
        "error": res.get("error"),
        "trainable_params": res.get("trainable_params"),
        "total_params": res.get("total_params"),
        "gradient_checkpointing_active": res.get("gradient_checkpointing"),
        "tokens_per_sample": res.get("tokens_per_sample"),
        "peak_allocated_GiB": gib(res.get("max_allocated_bytes")),
        "peak_reserved_GiB": gib(res.get("max_reserved_bytes")),
        "load_peak_allocated_GiB": stage("loaded", "max_allocated_bytes"),
        "loaded_allocated_GiB": stage("loaded", "allocated_bytes"),
        "after_step_allocated_GiB": stage("after_first_step", "allocated_bytes"),
        "weights_GiB": gib(res.get("param_bytes", {}).get("cuda")) if res.get("param_bytes") else None,
        "gradients_GiB": gib(m.get("gradients", {}).get("cuda")) if m.get("gradients") else None,
        "optimizer_GiB": gib(m.get("optimizer", {}).get("cuda")) if m.get("optimizer") else None,
        "optimizer_paged_GiB": gib(m.get("optimizer", {}).get("paged")) if m.get("optimizer") else None,
        "nvml_peak_process_GiB": gib(res.get("nvml_peak_process_bytes")),
        "nvml_peak_device_delta_GiB": gib(res.get("nvml_peak_device_delta_bytes")),
        "median_step_s": res.get("median_step_seconds"),
        "train_seconds": res.get("train_seconds"),
        "first_loss": (res.get("losses") or [None])[0],
        "last_loss": (res.get("losses") or [None])[-1],
    }


def run_experiment(
    model: str = "llama-2-7b",
    methods=("lora", "qlora", "full"),
    optimizer: str = "paged_adamw_8bit",
    seq_len: int = 100,
    micro_batch: int = 1,
    grad_accum: int = 32,
    grad_ckpt: bool = True,
    steps: int = 3,
    lora_r: int = 4,
    run_id: str = "",
    timeout_s: int = 900,
    workdir: str | None = None,
    root=None,
):
    """Measure each setup in a fresh subprocess; record OOM, refusal, timeout or error as that point's outcome.

    Points already measured under the same ``run_id`` (in its work folder) are reused, so an interrupted sweep
    resumes. The run record is published atomically at the end. Returns the record's path.
    """
    import shutil
    import tempfile
    from pathlib import Path

    import torch
    from tqdm.auto import tqdm

    from llmstudy.training import finetune
    from llmstudy.core.records import RunWriter, new_run_id, runs_dir, write_json_atomic

    for name, v in (("grad_accum", grad_accum), ("steps", steps)):
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    M.config_path(model)  # unknown model -> clear error before any work
    setups = [parse_method(s, model, seq_len, micro_batch, grad_ckpt, optimizer, lora_r) for s in methods]
    cuda = torch.cuda.is_available()
    reasons = {s.label(): refusal(s, cuda) for s in setups}
    if all(reasons.values()):
        raise ValueError("nothing runnable on this machine: " + "; ".join(f"{k}: {v}" for k, v in reasons.items()))

    run_id = run_id or new_run_id(f"{Path(str(model)).name}-{'gpu' if cuda else 'cpu'}")
    base = Path(root) if root else runs_dir()
    work = base / EXPERIMENT / f".work-{run_id}"
    work.mkdir(parents=True, exist_ok=True)
    ckpt_root = Path(workdir or os.environ.get("LLMSTUDY_CACHE", tempfile.gettempdir())) / "llmstudy-ckpt"
    params = dict(model=str(model), methods=list(methods), optimizer=optimizer, seq_len=seq_len, micro_batch=micro_batch, grad_accum=grad_accum, grad_ckpt=grad_ckpt, steps=steps, lora_r=lora_r, weights="random (config only)", data="synthetic prompt/completion, synthetic word-level tokenizer")
    rows = []
    with RunWriter(EXPERIMENT, params, run_id=run_id, root=base) as rec:
        checkpoint = None  # one bf16 checkpoint of random weights; fp32 setups up-cast it on load
        bar = tqdm(setups, desc="memory_accounting", unit="setup")
        for i, s in enumerate(bar):
            bar.set_postfix_str(s.label())
            res_file = work / f"point{i:02d}.json"
            if res_file.exists():  # resume
                res = json.loads(res_file.read_text())
            elif reasons[s.label()]:
                res = {"outcome": "refused", "error": reasons[s.label()]}
                write_json_atomic(res_file, res)
            else:
                if checkpoint is None:
                    checkpoint = finetune.save_random_checkpoint(model, ckpt_root / f"{Path(str(model)).name}-bf16", "bf16", "cuda" if cuda else "cpu")
                spec = dict(s.to_dict(), label=s.label(), checkpoint=str(checkpoint), grad_accum=grad_accum, steps=steps, output_dir=str(work / f"trainer{i:02d}"), seed=42)
                spec_file = work / f"point{i:02d}.spec.json"
                spec_file.write_text(json.dumps(spec))
                log_file = work / f"point{i:02d}.log"
                res = finetune.run_workers([{"spec_file": spec_file, "result_file": res_file, "log_file": log_file}], timeout_s)[0]
                write_json_atomic(res_file, res)  # a resumed sweep never reads a half-written point
                rec.write_text(log_file.read_text(), f"logs/point{i:02d}-{s.method}-{s.optimizer}-{s.weight_dtype}.log")
            rec.write_json(res, f"raw/point{i:02d}.json")
            rows.append(_tidy_row(s, res, grad_accum, steps))
            tqdm.write(f"{s.label()}: {rows[-1]['outcome']}" + (f", peak {rows[-1]['peak_allocated_GiB']:.2f} GiB" if rows[-1]["peak_allocated_GiB"] else ""))
        rec.write_table(pd.DataFrame(rows))
    shutil.rmtree(work, ignore_errors=True)
    return rec.final


def compare(results: pd.DataFrame, loss_head: str = "fused") -> pd.DataFrame:
    """Measured peak (torch allocator) next to the model's prediction for each measured row, with error %."""
    out = []
    for _, r in results.iterrows():
        s = Setup(model=r["model"], method=r["method"], optimizer=r["optimizer"], weight_dtype=r["weight_dtype"], seq_len=int(r["seq_len"]), micro_batch=int(r["micro_batch"]), grad_ckpt=bool(r["grad_ckpt"]), lora_r=int(r["lora_r"]) if pd.notna(r.get("lora_r")) else 4, loss_head=loss_head)
        try:
            sm = summarize(s)
        except Exception:  # a model config no longer present: keep the row, no prediction
            sm = None
        row = r.to_dict()
        row["predicted_peak_GiB"] = sm["peak_bytes"] / GiB if sm else None
        row["predicted_paged_GiB"] = sm["paged_bytes"] / GiB if sm else None
        meas = r.get("peak_allocated_GiB")
        row["error_pct"] = 100 * (row["predicted_peak_GiB"] - meas) / meas if sm and pd.notna(meas) and r["outcome"] == "ok" else None
        out.append(row)
    return pd.DataFrame(out)


def loss_head_errors(results: pd.DataFrame) -> pd.DataFrame:
    """The largest |error| % over the measured rows, per loss head: which head the recorded runs actually had."""
    ok = results[(results.outcome == "ok") & results.peak_allocated_GiB.notna()] if len(results) else results
    rows = []
    for head in LOSS_HEADS:
        c = compare(ok, head) if len(ok) else pd.DataFrame(columns=["error_pct", "run_id", "setup"])
        worst = c.loc[c.error_pct.abs().idxmax()] if len(c) else None
        rows.append({"loss_head": head, "rows": len(c), "max_abs_error_pct": abs(worst.error_pct) if worst is not None else None,
                     "worst": f"{worst.run_id} {worst.setup}" if worst is not None else None})
    return pd.DataFrame(rows).set_index("loss_head")


# --- The chapter's parameters and figures ---------------------------------------------------------------------

RULE_MODELS = ("llama-2-7b", "llama-13b", "llama-33b", "llama-65b")
CONFIG_MODELS = ("llama-2-7b", "llama-4-scout-17b-16e-instruct", "llama-4-maverick-17b-128e-instruct", "gpt-oss-20b")


def notebook_params():
    from llmstudy.core.params import Param, known_model, positive

    def methods_ok(v):
        try:
            for m in v:
                parse_method(m, "llama-2-7b", 1, 1, True, "adamw_torch")
        except ValueError as e:
            return str(e)
        return None if v else "needs at least one method"

    def models_ok(v):
        bad = [m for m in v if known_model(m)]
        return f"unknown model(s) {bad}; known: {M.available_models()}" if bad else None

    return {
        "mode": Param(str, "analyze", "analyze: render recorded runs (CPU); run: measure and write a run record", choices=("analyze", "run")),
        "model": Param(str, "llama-2-7b", "model config (name under data/models or path) for run mode and the focus tables", check=known_model),
        "compare_models": Param(list, list(CONFIG_MODELS), "model configs compared in the breakdown", check=models_ok),
        "methods": Param(list, ["lora", "qlora", "full"], "METHOD[:OPTIMIZER[:DTYPE]] entries", check=methods_ok),
        "optimizer": Param(str, "paged_adamw_8bit", "default optimizer", choices=tuple(OPTIMIZERS)),
        "seq_len": Param(int, 100, "tokens per sample", check=positive),
        "micro_batch": Param(int, 1, "samples per micro-batch", check=positive),
        "grad_accum": Param(int, 32, "micro-batches per optimizer step (run mode)", check=positive),
        "grad_ckpt": Param(bool, True, "gradient checkpointing"),
        "steps": Param(int, 3, "optimizer steps to measure (run mode)", check=positive),
        "run_id": Param(str, "", "run id for run mode (default: timestamp-model-device)"),
    }


def stacked_bars(df: pd.DataFrame, x: str, title: str, hue_order=MEMORY_COMPONENTS + ("paged",), ax=None, unit: str = "GiB"):
    """Stacked bars of a tidy breakdown (columns ``x``, ``component``, ``unit``) with seaborn's palette."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    wide = df.pivot_table(index=x, columns="component", values=unit, aggfunc="sum", sort=False).reindex(columns=[c for c in hue_order if c in set(df.component)]).fillna(0)
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 0.5 + 0.45 * len(wide)))
    left = None
    colors = dict(zip(hue_order, sns.color_palette("deep", len(hue_order))))
    for comp in wide.columns:
        ax.barh(wide.index, wide[comp], left=left, label=comp, color=colors[comp])
        left = wide[comp] if left is None else left + wide[comp]
    ax.set_xlabel(unit)
    ax.set_title(title)
    ax.invert_yaxis()
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small")
    return ax

# Published (labelled): the article's print_trainable_parameters() for ELYZA-japanese-Llama-2-7b, LoRA r=4 on the seven
# projections (Fixstars 2026, §2). The chapter says whether the forked/default model reproduces it.
ARTICLE_LORA_PRINTOUT = {"trainable": 9_994_240, "total": 6_748_409_856}
