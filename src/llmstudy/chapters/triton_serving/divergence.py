"""Where a served greedy answer leaves peft's, and how close peft's own logits were to a tie there.

Greedy decoding picks the largest logit. In bf16, a served engine (vLLM's fused kernels, batching, another summation
order) computes logits that differ from peft's by a few bf16 ulps; where peft's two best tokens are nearly tied, that
is enough to flip the choice, and every token after it follows the other branch. If the served answers only differ
for this reason, the margin ``logit[top1] - logit[top2]`` of peft's model at the first diverging token is small: one
of the smallest along that answer, and far below the answer's median margin. A large margin there would point to a
real difference (another adapter, another prompt, a bug). The margin is also computed with the same checkpoint in
float32, which shows whether the near-tie is the model's own or an artefact of bf16.
"""

from __future__ import annotations

import pandas as pd


def first_divergence(tok, ref_ids: list[int], served_text: str, prompt_ids: list[int] | None = None) -> int | None:
    """The index of the first reference token the served text does not contain: the smallest ``k`` for which the
    decoded ``ref_ids[:k+1]`` is not a prefix of ``served_text`` (a served text that stops early diverges at its
    first missing token); None when the whole reference is a prefix of it.

    Decoding is compared, not token ids, since a served answer is text. With ``prompt_ids`` the reference is decoded
    after the prompt, as :func:`~llmstudy.serving.triton.textcodec.completion_text` gives peft's and the server's
    text (a tokenizer that puts the space between words on decoding adds one before the answer's first word). Where
    the served token starts with the same characters as the reference's (" the" against " there"), the string test
    places the divergence one token late: it cannot tell token boundaries the served text does not carry.
    """
    from llmstudy.serving.triton.textcodec import completion_text

    for k in range(len(ref_ids)):
        part = ref_ids[: k + 1]
        text = completion_text(tok, prompt_ids, part) if prompt_ids is not None else tok.decode(part, skip_special_tokens=True)
        if not served_text.startswith(text):
            return k
    return None


def margins(model, tok, prompt: str, ref_ids: list[int], device) -> list[dict]:
    """Teacher-force ``prompt`` + ``ref_ids`` in one forward pass; for each reference token ``i``, the logits that
    predicted it: their two best ids and the margin between them (float32 arithmetic on the model's logits), and
    whether the best is the reference token (greedy decoding chose it, so it should be; a near-tie can still flip
    between generate's cached steps and this single pass)."""
    import torch

    prompt_ids = tok(prompt, return_tensors="pt")["input_ids"].to(device)
    ids = torch.cat([prompt_ids, torch.tensor([ref_ids], dtype=prompt_ids.dtype, device=device)], dim=1)
    p = prompt_ids.shape[1]
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0, p - 1 : p + len(ref_ids) - 1].float()
    top = logits.topk(2, dim=-1)
    out = []
    for i, (v, t) in enumerate(zip(top.values.tolist(), top.indices.tolist())):
        out.append({"position": i, "top1": t[0], "top2": t[1], "margin": float(v[0] - v[1]), "ref_is_top1": t[0] == ref_ids[i]})
    return out


def _load(model_dir: str, adapter: str | None, dtype: str, dev: str):
    """The model as :func:`~llmstudy.chapters.triton_serving.run.peft_answers` loads it."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype)).to(dev).eval()
    return PeftModel.from_pretrained(base, adapter).eval() if adapter else base


def divergence_table(model_dir: str, adapters: dict[str, str], prompts: list[str], answers: pd.DataFrame,
                     ref_ids: dict[tuple[str, int], list[int]], dtype: str = "bfloat16") -> pd.DataFrame:
    """One row per served answer (``answers.source != "peft"``): where it leaves peft's answer ``ref_ids[(adapter,
    prompt_id)]`` (``diverge_at``, the reference token ``ref_token`` there), peft's margin at that token in ``dtype``
    (``margin_at``) and with the same checkpoint loaded in float32 (``margin_fp32_at``), the answer's median margin,
    the margin's rank among the answer's positions (``rank_at``, 1 = smallest) and ``ref_top1_ok`` (teacher forcing
    picks peft's token at every position). Each adapter's model is loaded once per dtype, as peft_answers loads it.
    """
    import numpy as np
    import torch
    from transformers import AutoTokenizer

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    tok = AutoTokenizer.from_pretrained(model_dir)
    served = answers[answers["source"] != "peft"]
    keys = sorted({(a, int(i)) for a, i in zip(served["adapter"], served["prompt_id"])})
    m: dict[tuple[str, int], list[dict]] = {}
    m32: dict[tuple[str, int], list[dict]] = {}
    for name in dict.fromkeys(a for a, _ in keys):
        for dt, into in [(dtype, m)] + ([("float32", m32)] if dtype != "float32" else []):
            model = _load(model_dir, None if name == "base" else adapters[name], dt, dev)
            for key in (k for k in keys if k[0] == name):
                into[key] = margins(model, tok, prompts[key[1]], ref_ids[key], dev)
            del model
            torch.cuda.empty_cache() if dev == "cuda" else None
    if dtype == "float32":
        m32 = m
    rows = []
    for r in served.itertuples(index=False):
        key = (r.adapter, int(r.prompt_id))
        ref, mk = ref_ids[key], m[key]
        prompt_ids = tok(prompts[key[1]])["input_ids"]
        k = first_divergence(tok, ref, r.text, prompt_ids)
        mar = np.array([x["margin"] for x in mk])
        rows.append({"adapter": r.adapter, "prompt_id": key[1], "source": r.source, "equal_to_peft": r.equal_to_peft,
                     "diverge_at": k, "margin_at": float(mar[k]) if k is not None else np.nan,
                     "margin_fp32_at": m32[key][k]["margin"] if k is not None else np.nan,
                     "median_margin": float(np.median(mar)) if len(mar) else np.nan,
                     "rank_at": int((mar < mar[k]).sum()) + 1 if k is not None else None,
                     "ref_token": tok.decode([ref[k]]) if k is not None else None,
                     "ref_top1_ok": all(x["ref_is_top1"] for x in mk)})
    out = pd.DataFrame(rows)
    return out.astype({"diverge_at": "Int64", "rank_at": "Int64"}) if len(out) else out


def summary(table: pd.DataFrame) -> dict:
    """How many served answers diverge, the largest margin at a divergence, the median (over diverged answers) of
    their answer's median margin, and the share of divergences at one of the answer's three smallest margins."""
    d = table[table["diverge_at"].notna()]
    nan = float("nan")
    return {"n_served": len(table), "n_diverged": len(d),
            "max_margin_at": float(d["margin_at"].max()) if len(d) else nan,
            "median_of_median_margin": float(d["median_margin"].median()) if len(d) else nan,
            "share_smallest": float((d["rank_at"] <= 3).mean()) if len(d) else nan}
