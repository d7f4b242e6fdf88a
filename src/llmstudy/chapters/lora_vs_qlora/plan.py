"""Variants through the memory model, and the FLOPs of a LoRA step (what can be predicted without a GPU)."""

from __future__ import annotations

from llmstudy.core import models as M
from llmstudy.training import memory as mm

from .config import PEAK_BF16_FLOPS, VARIANTS


def variant_setup(model: str, variant: str, optimizer: str = "paged_adamw_8bit", tokens: int = 100, lora_r: int = 4, grad_ckpt: bool = True, kbit_prep: bool = True) -> mm.Setup | None:
    """The memory model's setup for a variant whose largest micro-batch holds ``tokens`` tokens (None for base)."""
    method, recipe = VARIANTS[variant]
    if recipe is None:
        return None
    return mm.Setup(model=model, method=method, optimizer=optimizer, seq_len=int(tokens), micro_batch=1, grad_ckpt=grad_ckpt, lora_r=lora_r, fp32_upcast=method == "qlora" and kbit_prep)


def matmul_params(model: str) -> int:
    """Weights that multiply activations: every ``nn.Linear`` plus the output head (tied or not); not embeddings."""
    t = M.parameters(model)
    lin = int(t[t["linear"]].numel.sum())
    head = int(t[t.component == "lm_head"].numel.sum())
    if head == 0:  # tied output head: it reuses the embedding matrix
        head = int(t[t.component == "embeddings"].numel.max())
    return lin + head


def train_flops(model: str, tokens: float, lora_params: int, grad_ckpt: bool) -> float:
    """FLOPs of one LoRA/QLoRA training pass over ``tokens`` tokens (attention scores excluded).

    N = frozen matmul weights (:func:`matmul_params`), L = LoRA weights. Forward 2(N+L)T; backward 2(N+L)T for the
    activation gradients through every layer, plus 2LT for the LoRA weight gradients (frozen weights get none, so
    the usual 6NT over-counts); recompute of the forward 2(N+L)T under gradient checkpointing. The QK^T and AV
    products add 4·layers·s·d per token, under 1% at these ~150-token samples, and dequantization is not a FLOP.
    """
    n = matmul_params(model)
    per_token = 2 * (n + lora_params) * (3 if grad_ckpt else 2) + 2 * lora_params
    return float(per_token * tokens)


def peak_flops(gpu_name: str) -> tuple[str, float] | None:
    """Dense BF16 peak of a GPU by its reported name (H100 SXM / PCIe, H200), or None if unknown."""
    n = gpu_name.upper()
    if "H200" in n:
        return "H200", PEAK_BF16_FLOPS["H200"]
    if "H100" in n and "PCIE" in n:
        return "H100 PCIe", PEAK_BF16_FLOPS["H100 PCIe"]
    if "H100" in n:
        return "H100 SXM", PEAK_BF16_FLOPS["H100 SXM"]
    return None

