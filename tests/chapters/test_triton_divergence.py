"""The Triton chapter's divergence analysis on a tiny random Llama (CPU): where a served answer leaves peft's greedy
answer, and peft's teacher-forced margins there."""

from __future__ import annotations

import pandas as pd
import pytest

from llmstudy.chapters.triton_serving import divergence as D
from llmstudy.serving.triton.textcodec import completion_text

PROMPTS = ["t5 t9 t100 t7", "t42 t43"]
N = 8


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny random Llama with the synthetic word-level tokenizer, a random LoRA adapter (B not zero), and greedy
    references (adapter, prompt_id) -> new ids, generated as peft_answers generates them (float32, no EOS stop)."""
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, LlamaConfig

    from llmstudy.training.finetune import synthetic_tokenizer

    d = tmp_path_factory.mktemp("divergence")
    cfg = LlamaConfig(vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, initializer_range=0.2, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(d / "model")
    tok = synthetic_tokenizer(256)
    tok.save_pretrained(d / "model")
    torch.manual_seed(1)
    lora = get_peft_model(AutoModelForCausalLM.from_pretrained(d / "model"),
                          LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    lora.save_pretrained(d / "persona")
    refs = {}
    for name, path in [("base", None), ("persona", d / "persona")]:
        model = AutoModelForCausalLM.from_pretrained(d / "model", dtype=torch.float32)
        model = (PeftModel.from_pretrained(model, path) if path else model).eval()
        for i, p in enumerate(PROMPTS):
            ids = tok(p, return_tensors="pt")
            with torch.no_grad():
                gen = model.generate(**ids, do_sample=False, max_new_tokens=N, min_new_tokens=N, pad_token_id=2)
            refs[(name, i)] = gen[0, ids["input_ids"].shape[1]:].tolist()
    return str(d / "model"), {"persona": str(d / "persona")}, tok, refs


def _other(tok, ref_id):
    """A word the vocabulary holds that is neither ref_id's word nor starts or ends one with it."""
    w = tok.decode([ref_id])
    return next(x for x in (tok.decode([j]) for j in range(3, 256)) if not (x.startswith(w) or w.startswith(x)))


def test_first_divergence(tiny):
    _, _, tok, refs = tiny
    ref = refs[("base", 0)]
    assert len(ref) == N
    assert D.first_divergence(tok, ref, tok.decode(ref, skip_special_tokens=True)) is None
    assert D.first_divergence(tok, ref, tok.decode(ref) + " t17") is None  # served longer: no divergence within ref
    assert D.first_divergence(tok, ref, tok.decode(ref[:3]) + " " + _other(tok, ref[3])) == 3
    assert D.first_divergence(tok, ref, tok.decode(ref[:3])) == 3  # served stops early
    assert D.first_divergence(tok, ref, "") == 0
    p_ids = tok(PROMPTS[0])["input_ids"]  # in context, as peft's and the server's text: " t.. t.."
    assert D.first_divergence(tok, ref, completion_text(tok, p_ids, ref), p_ids) is None
    assert D.first_divergence(tok, ref, completion_text(tok, p_ids, ref[:5]) + " " + _other(tok, ref[5]), p_ids) == 5


def test_margins_reproduce_greedy(tiny):
    import torch
    from transformers import AutoModelForCausalLM

    model_dir, _, tok, refs = tiny
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    for i, p in enumerate(PROMPTS):
        m = D.margins(model, tok, p, refs[("base", i)], "cpu")
        assert [x["position"] for x in m] == list(range(N))
        assert all(x["ref_is_top1"] for x in m) and all(x["margin"] >= 0 for x in m)
        assert all(x["top1"] != x["top2"] for x in m)


def _answers(tok, refs, name):
    p_ids = tok(PROMPTS[0])["input_ids"]
    ref = refs[(name, 0)]
    same = completion_text(tok, p_ids, ref)
    altered = completion_text(tok, p_ids, ref[:3]) + " " + _other(tok, ref[3]) + " t50"
    return pd.DataFrame([
        {"adapter": name, "prompt_id": 0, "source": "peft", "text": same, "equal_to_peft": True},
        {"adapter": name, "prompt_id": 0, "source": "vllm-openai", "text": same, "equal_to_peft": True},
        {"adapter": name, "prompt_id": 0, "source": "triton", "text": altered, "equal_to_peft": False},
    ])


@pytest.mark.parametrize("name", ["base", "persona"])
def test_divergence_table(tiny, name):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model_dir, adapters, tok, refs = tiny
    t = D.divergence_table(model_dir, adapters, PROMPTS, _answers(tok, refs, name), refs, dtype="float32")
    assert list(t["source"]) == ["vllm-openai", "triton"]
    eq, alt = t.iloc[0], t.iloc[1]
    assert pd.isna(eq["diverge_at"]) and pd.isna(eq["margin_at"]) and pd.isna(eq["rank_at"])
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model = (PeftModel.from_pretrained(model, adapters[name]) if name != "base" else model).eval()
    m = [x["margin"] for x in D.margins(model, tok, PROMPTS[0], refs[(name, 0)], "cpu")]
    assert alt["diverge_at"] == 3 and alt["margin_at"] == m[3] and alt["margin_fp32_at"] == m[3]
    assert alt["rank_at"] == sorted(m).index(m[3]) + 1 and alt["median_margin"] == pytest.approx(pd.Series(m).median())
    assert alt["ref_token"] == tok.decode([refs[(name, 0)][3]]) and bool(alt["ref_top1_ok"]) and bool(eq["ref_top1_ok"])
    s = D.summary(t)
    assert s["n_served"] == 2 and s["n_diverged"] == 1 and s["max_margin_at"] == m[3]
    assert s["share_smallest"] == float(alt["rank_at"] <= 3)


def test_divergence_table_bf16_reports_the_float32_margin_of_the_same_checkpoint(tiny):
    import torch
    from transformers import AutoModelForCausalLM

    model_dir, adapters, tok, refs = tiny
    t = D.divergence_table(model_dir, adapters, PROMPTS, _answers(tok, refs, "base"), refs, dtype="bfloat16")
    alt = t.iloc[1]
    bf = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16).eval()
    fp = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    assert alt["margin_at"] == D.margins(bf, tok, PROMPTS[0], refs[("base", 0)], "cpu")[3]["margin"]
    assert alt["margin_fp32_at"] == D.margins(fp, tok, PROMPTS[0], refs[("base", 0)], "cpu")[3]["margin"]


def test_summary_without_divergences_is_nan():
    t = pd.DataFrame({"diverge_at": pd.array([None], dtype="Int64"), "margin_at": [float("nan")], "median_margin": [1.0],
                      "rank_at": pd.array([None], dtype="Int64")})
    s = D.summary(t)
    assert s["n_served"] == 1 and s["n_diverged"] == 0 and pd.isna(s["max_margin_at"]) and pd.isna(s["share_smallest"])
