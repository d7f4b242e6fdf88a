"""The memory calculator's longest sequence: exact (fits, one more token does not) on dense setups, none for MoE."""

import dataclasses

import pytest

from llmstudy.calc import kv as K
from llmstudy.calc import memory as MM

H100 = K.GPUS["h100-80gb"].total_bytes
CASES = [("qwen3-8b", "lora", False, 1), ("qwen3-8b", "lora", False, 7), ("gemma-2-9b", "qlora", False, 2),
         ("mistral-7b-v0.3", "qlora", True, 16), ("gemma-3-12b-it", "qlora", False, 1), ("llama-2-7b", "full", True, 1),
         ("llama-65b", "full", True, 1)]


def _fits(setup, seq):
    return max(MM.phase_peaks(dataclasses.replace(setup, seq_len=seq))) <= H100


@pytest.mark.parametrize("model, method, ckpt, mb", CASES)
def test_the_longest_sequence_is_exact(model, method, ckpt, mb):
    s = MM.Setup(model=model, method=method, optimizer="adamw_torch" if method == "full" else "paged_adamw_8bit",
                 seq_len=100, micro_batch=mb, grad_ckpt=ckpt)
    n = MM.longest_seq_len(s, H100)
    cap = MM.seq_len_cap(s)
    if n == 0:
        assert not _fits(s, 1)
    else:
        assert _fits(s, n) and (n == cap or not _fits(s, n + 1))
    assert max(MM.phase_peaks(s)) == MM.summarize(s)["peak_bytes"]


def test_known_answers():
    s = MM.Setup(model="qwen3-8b", method="lora", seq_len=100, micro_batch=1, grad_ckpt=False)
    assert MM.longest_seq_len(s, H100) == 7961
    assert MM.longest_seq_len(dataclasses.replace(s, grad_ckpt=True), H100) == MM.seq_len_cap(s) == 40960
    full65 = MM.Setup(model="llama-65b", method="full", optimizer="adamw_torch")
    assert MM.longest_seq_len(full65, H100) == 0  # 65B parameters in bf16 alone exceed an H100


def test_no_answer_where_activations_are_not_modelled():
    assert MM.longest_seq_len(MM.Setup(model="mixtral-8x7b", method="qlora"), H100) is None
