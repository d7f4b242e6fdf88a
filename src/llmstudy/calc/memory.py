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

from dataclasses import asdict, dataclass

from llmstudy.calc import models as M

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
    lora_targets: tuple[str, ...] | None = None  # None: every linear projection + fused experts (models.lora_targets)
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
        if self.lora_targets is not None and (isinstance(self.lora_targets, str) or not all(isinstance(x, str) for x in self.lora_targets)):
            errors.append(f"lora_targets must be a tuple of module names or None, got {self.lora_targets!r}")
        if errors:
            raise ValueError("; ".join(errors))
        if self.lora_targets is not None:
            object.__setattr__(self, "lora_targets", tuple(self.lora_targets))

    def label(self) -> str:
        ck = "ckpt" if self.grad_ckpt else "no-ckpt"
        up = "/fp32-upcast" if self.fp32_upcast else ""
        head = "/fused-head" if self.loss_head == "fused" else ""
        return f"{self.method}/{self.optimizer}/{self.weight_dtype}/s{self.seq_len}xb{self.micro_batch}/{ck}{up}{head}"

    def targets(self) -> M.LoraTargets:
        """The LoRA targets resolved against the model's architecture (:func:`llmstudy.core.models.lora_targets`)."""
        return M.lora_targets(self.model, self.lora_targets)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["lora_targets"] = list(self.targets().modules) if self.method != "full" else list(self.lora_targets or ())
        return d


class NotModelled(ValueError):
    """A term of the memory model that is not exact for this architecture; the message names what is missing."""


NOT_MODELLED_MOE = "mixture-of-experts layers (routing-dependent expert activations, router logits and permutation buffers)"
NOT_MODELLED_MLA = "MLA attention (latent and decoupled-RoPE activations)"


def not_modelled_terms(model: str) -> list[str]:
    """The architecture features whose activation memory the model does not count (empty: every term is modelled)."""
    a = M.describe(model)
    return ([NOT_MODELLED_MOE] if a.moe_layers else []) + ([NOT_MODELLED_MLA] if a.mla else [])


def approximations(model: str) -> list[str]:
    """Where the activation term of a modelled (dense) architecture departs from its block, in words.

    The count follows Llama's block, checked on Llama-2-7B. Gemma 2/3 put a norm after attention and after the MLP
    as well, and Qwen3 / Gemma 3 normalise queries and keys; those norms' saved inputs are not counted.
    """
    a = M.describe(model)
    notes = []
    if a.model_type in ("gemma2", "gemma3_text"):
        notes.append("the post-attention and post-MLP norms' saved inputs are not in the activation count")
    if a.model_type in ("qwen3", "qwen3_moe", "gemma3_text"):
        notes.append("the query/key norms' saved inputs are not in the activation count")
    return notes


def not_modelled(setup: Setup) -> str | None:
    """Why the activation term is not exact for this setup's architecture, or None.

    The per-layer activation count follows a dense decoder block (attention with q/k/v/o projections, a gated MLP);
    it was checked on Llama-2-7B. Mixture-of-experts layers (routing-dependent expert inputs, router logits, token
    permutation buffers) and MLA attention (latent projections, decoupled RoPE keys) keep other tensors.
    """
    terms = not_modelled_terms(setup.model)
    if not terms:
        return None
    return "activation memory is not modelled for " + " and ".join(terms) + f" ({M.title(setup.model)})"


def _lora_tensors(setup: Setup) -> list[int]:
    """numel of each LoRA A and B tensor peft creates for the setup's targets (linear layers and fused experts)."""
    return [int(r["numel"]) for r in M.lora_tensor_rows(M.table_rows(setup.model), setup.lora_r, setup.targets())]


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

    The dimensions come from ``setup.model``'s validated config (``cfg``, a transformers config of the same model in
    the former signature, is not read).

    Counted from what each op saves for backward in transformers' Llama block:
    * each RMSNorm keeps an fp32 copy of its input (4h), and with a trainable weight also its bf16 output (2h);
    * SDPA/flash attention keeps q, k, v and its output (no seq x seq matrix);
    * SwiGLU keeps the gate output (SiLU input) and both factors of the product (3 x 2i);
    * a trainable linear layer keeps its input (q/k/v share one, gate/up share one, down keeps the product);
    * a frozen linear layer keeps nothing, but each LoRA adapter on it keeps its dropout output (bf16) and the
      dropout mask (1 byte) of the layer's input width.
    Checked against H100 runs without checkpointing (Llama-2-7B, 1024 tokens): 238,336 B predicted per token per
    layer for LoRA, 7.55 GiB measured for 32 layers (7.27 GiB predicted + logits).
    Raises :class:`NotModelled` for architectures whose layers keep other tensors (:func:`not_modelled`).
    """
    reason = not_modelled(setup)
    if reason:
        raise NotModelled(reason)
    a = M.describe(setup.model)
    t, _, _ = M.A.text_part(M.raw_config(setup.model))
    h = a.hidden_size
    d = a.head_dim
    kv = a.num_kv_heads * d
    q = a.num_heads * d
    inter = t.get("intermediate_size_mlp") or a.intermediate_size
    total = 2 * 4 * h  # two norms, fp32 input copies
    total += 2 * (q + 2 * kv) + 2 * q  # attention inputs and output
    total += 3 * 2 * inter  # SwiGLU
    if setup.method == "full":
        total += 2 * 2 * h  # norm outputs for the weight gradient
        total += 2 * h + 2 * h + 2 * inter  # q/k/v input, gate/up input, down input
    else:
        # each adapted linear layer of one decoder layer keeps its dropout output (bf16) and mask (1 byte) of its input
        modules = set(setup.targets().modules)
        total += sum(3 * r["in_features"] for r in M.table_rows(setup.model)
                     if not r["vision"] and r["linear"] and ".layers.0." in r["name"] and r["leaf"] in modules)
    return float(total)


def parse_method(spec: str, model: str, seq_len: int, micro_batch: int, grad_ckpt: bool, optimizer: str, lora_r: int = 4,
                 lora_targets: tuple[str, ...] | None = None) -> Setup:
    """``"lora"``, ``"full:adamw_torch"`` or ``"full:adamw_torch:fp32"`` -> a :class:`Setup`."""
    parts = str(spec).split(":")
    if not 1 <= len(parts) <= 3 or not parts[0]:
        raise ValueError(f"method spec {spec!r} must be METHOD[:OPTIMIZER[:DTYPE]]")
    method = parts[0]
    opt = parts[1] if len(parts) > 1 and parts[1] else optimizer
    dtype = parts[2] if len(parts) > 2 else "bf16"
    return Setup(model=model, method=method, optimizer=opt, weight_dtype=dtype, seq_len=seq_len, micro_batch=micro_batch, grad_ckpt=grad_ckpt,
                 lora_r=lora_r, lora_targets=tuple(lora_targets) if lora_targets else None)


def predict_rows(setup: Setup) -> list[dict]:
    """Predicted memory by component for one setup (bytes), one dict per term.

    ``location`` says where it lives (``device``: the PyTorch allocator; ``paged``: CUDA managed memory) and
    ``phase`` when it is alive: ``always``, ``backward`` (forward/backward of a micro-batch) or ``step`` (the
    optimizer update). The allocator's peak is the larger of always+backward and always+step.
    """
    a = M.describe(setup.model)
    table = M.table_rows(setup.model)
    wb = DTYPE_BYTES[setup.weight_dtype]
    rows: list[dict] = []
    n_all = sum(int(r["numel"]) for r in table)

    def add(component, nbytes, detail, location="device", phase="always"):
        rows.append({"component": component, "bytes": float(nbytes), "location": location, "phase": phase, "detail": detail})

    # Weights
    if setup.method == "qlora":
        lin = [int(r["numel"]) for r in table if r["linear"]]
        rest = n_all - sum(lin)
        q_bytes = sum(_nf4_bytes(n, setup.double_quant) for n in lin)
        add("weights", q_bytes, f"{sum(lin):,} linear weights in NF4 + quantization constants")
        rb, rdt = (4, "fp32 (prepare_model_for_kbit_training)") if setup.fp32_upcast else (2, "bf16")
        what = ", ".join(f"{k} {int(v):,}" for k, v in M.qlora_bf16_rows(table))
        add("weights", rb * rest, f"{rest:,} params bitsandbytes does not quantize, in {rdt}: {what}")
    else:
        add("weights", wb * n_all, f"{n_all:,} params in {setup.weight_dtype}")

    # Trainable parameters, gradients, optimizer
    emb = sum(int(r["numel"]) for r in table if r["component"] == "embeddings")
    if setup.method == "full":
        trainable = [int(r["numel"]) for r in table]
        pb = wb
    else:
        trainable = _lora_tensors(setup)
        pb = 4 if setup.method == "lora" else 2
        on = ", ".join(setup.targets().names)
        add("weights", pb * sum(trainable), f"{sum(trainable):,} LoRA params (r={setup.lora_r}, on {on}) in {'fp32' if pb == 4 else 'bf16'}")
    n_train = sum(trainable)
    add("gradients", pb * n_train, f"{n_train:,} trainable params x {pb} B")
    if setup.method == "full" and setup.optimizer in BNB_8BIT_OPTIMIZERS:
        # HF Trainer registers nn.Embedding weights for 32-bit states under bitsandbytes optimizers.
        non_emb = [int(r["numel"]) for r in table if r["component"] != "embeddings"]
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
    reason = not_modelled(setup)
    per_tl = float("nan") if reason else activation_bytes_per_token_layer(None, setup)
    layers = a.num_layers
    if reason:
        if setup.grad_ckpt:
            ib = 4 if setup.fp32_upcast else 2
            add("activations", layers * tokens * a.hidden_size * ib, "checkpointed layer inputs", phase="backward")
        add("activations", per_tl, "not modelled: " + reason, phase="backward")
    elif setup.grad_ckpt:
        # after prepare_model_for_kbit_training the embeddings are fp32, so the residual stream (and every checkpointed
        # layer input) stays fp32: a bf16 attention/MLP output added to an fp32 residual is fp32
        ib = 4 if setup.fp32_upcast else 2
        add("activations", layers * tokens * a.hidden_size * ib, f"checkpointed layer inputs ({'fp32 residual stream' if ib == 4 else 'bf16'})", phase="backward")
        add("activations", tokens * per_tl, f"one layer recomputed during backward ({per_tl / 1024:.0f} KiB/token)", phase="backward")
    else:
        add("activations", layers * tokens * per_tl, f"{layers} layers x {per_tl / 1024:.0f} KiB per token", phase="backward")

    # Temporary buffers (backward phase)
    if setup.loss_head == "fused":
        tile = min(tokens, FUSED_TOKEN_TILE) * min(a.vocab_size, FUSED_VOCAB_TILE) * 2
        add("temporary", tile + tokens * a.hidden_size * 4, f"fused LM head: one bf16 logits tile ({FUSED_TOKEN_TILE} tokens x {FUSED_VOCAB_TILE} vocabulary entries at most) + fp32 hidden-state grad", phase="backward")
    else:
        add("temporary", tokens * a.vocab_size * (2 + 4 + 4), "logits bf16 + fp32 copy + fp32 grad", phase="backward")
    if setup.method == "full" and emb:
        add("temporary", emb * (4 + 2), "embedding backward: fp32 accumulation + new bf16 grad", phase="backward")
    if setup.method == "qlora":
        add("temporary", 2 * max(int(r["numel"]) for r in table if r["linear"]), "largest dequantized weight (bf16)", phase="backward")
    add("temporary", CUBLAS_WORKSPACE, "cuBLAS workspace")
    return rows


def _sum(values) -> float:
    """A sum that is NaN when any term is (a term that is not modelled)."""
    total = 0.0
    for v in values:
        total += v
    return total


def summarize(setup: Setup) -> dict:
    """Totals of :func:`predict_rows` at the peak phase: per component (device), paged, and the allocator peak."""
    rows = predict_rows(setup)
    dev = [r for r in rows if r["location"] == "device"]
    always = _sum(r["bytes"] for r in dev if r["phase"] == "always")
    backward = always + _sum(r["bytes"] for r in dev if r["phase"] == "backward")
    step = always + _sum(r["bytes"] for r in dev if r["phase"] == "step")
    peak_phase = "step" if step > backward else "backward"  # a NaN (not modelled) backward stays the peak phase
    at_peak = [r for r in dev if r["phase"] in ("always", peak_phase)]
    out = {f"{c}_bytes": _sum(r["bytes"] for r in at_peak if r["component"] == c) for c in MEMORY_COMPONENTS}
    out["paged_bytes"] = _sum(r["bytes"] for r in rows if r["location"] == "paged")
    out["peak_bytes"] = float("nan") if backward != backward or step != step else float(max(backward, step))
    out["peak_phase"] = peak_phase
    out["not_modelled"] = not_modelled(setup)
    out["approximations"] = approximations(setup.model)
    out["params"] = sum(int(r["numel"]) for r in M.table_rows(setup.model))
    return out


def phase_peaks(setup: Setup) -> tuple[float, float]:
    """(always + backward, always + step): the allocator's bytes at the two candidate peaks of one setup."""
    dev = [r for r in predict_rows(setup) if r["location"] == "device"]
    always = _sum(r["bytes"] for r in dev if r["phase"] == "always")
    return (always + _sum(r["bytes"] for r in dev if r["phase"] == "backward"),
            always + _sum(r["bytes"] for r in dev if r["phase"] == "step"))


def seq_len_cap(setup: Setup) -> int:
    """The longest seq_len :func:`longest_seq_len` considers: the config's max_position_embeddings, else 2**31 tokens."""
    t, _, _ = M.A.text_part(M.raw_config(setup.model))
    mp = t.get("max_position_embeddings")
    return mp if isinstance(mp, int) and not isinstance(mp, bool) and mp > 0 else 2**31 // setup.micro_batch


def longest_seq_len(setup: Setup, limit_bytes: float) -> int | None:
    """The longest ``seq_len`` (at the setup's micro-batch) whose allocator peak is at most ``limit_bytes``.

    0 when even one token does not fit, None when the activations are not modelled (MoE, MLA). Capped at
    :func:`seq_len_cap`. The backward-phase peak is linear in the tokens on either side of the fused LM head's
    4,096-token tile, so the answer is solved on those lines, then checked exactly with :func:`phase_peaks`.
    """
    return longest_seq_lens(setup, [limit_bytes])[0]


def longest_seq_lens(setup: Setup, limits) -> list[int | None]:
    """:func:`longest_seq_len` for several memory limits (e.g. one per GPU kind), sharing the evaluations."""
    import dataclasses

    if not_modelled(setup):
        return [None for _ in limits]
    memo: dict[int, tuple[float, float]] = {}

    def at(s):
        if s not in memo:
            memo[s] = phase_peaks(dataclasses.replace(setup, seq_len=s))
        return memo[s]

    cap = seq_len_cap(setup)
    knee = max(2, -(-FUSED_TOKEN_TILE // setup.micro_batch))
    return [_longest(at, limit, cap, knee) for limit in limits]


def _longest(at, limit: float, cap: int, knee: int) -> int:
    def fits(s):
        return max(at(s)) <= limit

    if not fits(1):
        return 0
    if fits(cap):
        return cap

    def line(a, b):  # where the backward peak meets the limit on the line through a and b
        fa, fb = at(a)[0], at(b)[0]
        return cap if fb <= fa else a + int((limit - fa) * (b - a) // (fb - fa))

    s = line(1, knee)
    if s >= knee:
        s = line(knee, 2 * knee)
    s = max(1, min(s, cap - 1))
    lo, hi = (s, None) if fits(s) else (None, s)  # fits(lo), not fits(hi)
    for _ in range(8):  # the line is exact up to rounding: a step or two settles it
        if lo is not None and not fits(lo + 1):
            return lo
        if hi is not None and fits(hi - 1):
            return hi - 1
        lo, hi = (lo + 1, None) if lo is not None else (None, hi - 1)
    lo, hi = 1, cap  # fallback: bisection between a size that fits and one that does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo
