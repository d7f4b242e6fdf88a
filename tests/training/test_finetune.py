"""The fine-tune worker's LoRA configuration (the worker itself runs in the lora_vs_qlora chapter's tests)."""

from llmstudy.core import models as M
from llmstudy.training import finetune as F


def test_lora_config_takes_module_names_a_pattern_and_fused_expert_parameters():
    plain = F.lora_config(4, 8, 0.1)
    assert sorted(plain.target_modules) == sorted(M.LLAMA_LORA_TARGETS) and not plain.target_parameters
    assert (plain.r, plain.lora_alpha, plain.lora_dropout, plain.bias) == (4, 8, 0.1, "none")
    pattern = r"^(?!.*(?:vision)).*\.(?:q_proj|v_proj)$"
    assert F.lora_config(4, 8, 0.1, pattern).target_modules == pattern
    moe = F.lora_config(4, 8, 0.1, ["q_proj"], ["experts.gate_up_proj", "experts.down_proj"])
    assert moe.target_parameters == ["experts.gate_up_proj", "experts.down_proj"]
