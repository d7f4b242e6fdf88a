"""Check that vLLM 0.8.3 can profile a multimodal Llama 4 folder written by ``prepare_model_dir`` (no hub, no GPU).

vLLM 0.8.3's V1 ``gpu_model_runner.profile_run`` builds dummy images and runs transformers' ``Llama4Processor``
through vLLM's ``Mllama4MultiModalProcessor`` before serving; this script makes the same calls on CPU:
``MULTIMODAL_REGISTRY.get_max_tokens_per_item_by_nonzero_modality``, ``get_mm_limits_per_prompt``, the encoder
budget (``compute_encoder_budget``), ``get_decoder_dummy_data`` (as profile_run) and
``vllm.inputs.INPUT_REGISTRY.dummy_data_for_profiling``, then checks pixel_values (17, 3, 336, 336) per image and
(16 + 1) * (144 + 1) + 2 = 2467 tokens per image, and tokenizes a chat prompt holding ``<|image|>``.

It runs in a separate Python 3.11 venv holding vLLM 0.8.3 and its transformers (the repo's venv has transformers 5):

    /usr/bin/python3.11 -m venv /tmp/v083cpu
    /tmp/v083cpu/bin/pip install vllm==0.8.3 torch==2.6.0 torchvision==0.21.0 transformers==4.51.3 \\
        tokenizers==0.21.1 huggingface-hub==0.30.2
    /tmp/v083cpu/bin/python scripts/check_llama4_mm_dir.py data/models/llama-4-scout-17b-16e-instruct --layers 48 4

A model argument that is not already a prepared folder (one with preprocessor_config.json) is prepared first with the
repo's own venv (``.venv/bin/python``, ``llmstudy.serving.model_dir.prepare_model_dir``) under ``--work``; ``--layers``
writes one folder per text_config.num_hidden_layers. No GPU is needed: vLLM picks its "unspecified" platform and
the processor path loads none of its CUDA kernels. Exit status 0 when every check passes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SEQ_LEN = 8192


def prepare(model: str, layers: int | None, work: Path) -> Path:
    """A prepared folder for ``model`` (a config.json or its folder), written by the repo's venv."""
    if (Path(model) / "preprocessor_config.json").exists():
        return Path(model)
    src = Path(model) / "config.json" if Path(model).is_dir() else Path(model)
    cfg = json.loads(src.read_text())
    tag = f"L{layers}" if layers else "asis"
    if layers:
        cfg["text_config"]["num_hidden_layers"] = layers
    cfg_dir = work / f"config-{tag}"
    cfg_dir.mkdir(parents=True, exist_ok=True)
    (cfg_dir / "config.json").write_text(json.dumps(cfg, indent=1))
    dest = work / f"folder-{tag}"
    code = ("import sys; from pathlib import Path; from llmstudy.serving.model_dir import prepare_model_dir; "
            "prepare_model_dir(sys.argv[1], Path(sys.argv[2]), text_only=False)")
    subprocess.run([str(REPO / ".venv/bin/python"), "-c", code, str(cfg_dir), str(dest)], check=True, cwd=REPO)
    return dest


def check(folder: Path) -> dict:
    import torch
    import vllm
    from transformers import AutoTokenizer
    from vllm.config import ModelConfig, SchedulerConfig
    from vllm.inputs import INPUT_REGISTRY
    from vllm.multimodal import MULTIMODAL_REGISTRY
    from vllm.v1.core.encoder_cache_manager import compute_encoder_budget

    mc = ModelConfig(model=str(folder), task="generate", tokenizer=str(folder), tokenizer_mode="auto",
                     trust_remote_code=False, dtype="bfloat16", seed=0, max_model_len=SEQ_LEN)
    out = {"vllm": vllm.__version__, "folder": str(folder), "architectures": mc.architectures,
           "is_multimodal_model": mc.is_multimodal_model,
           "num_hidden_layers": mc.hf_config.text_config.num_hidden_layers}
    max_tokens = MULTIMODAL_REGISTRY.get_max_tokens_per_item_by_nonzero_modality(mc)
    limits = MULTIMODAL_REGISTRY.get_mm_limits_per_prompt(mc)
    sc = SchedulerConfig(max_num_batched_tokens=SEQ_LEN, max_num_seqs=256, max_model_len=SEQ_LEN)
    out.update(max_tokens_per_item=dict(max_tokens), mm_limits_per_prompt=dict(limits),
               encoder_budget=compute_encoder_budget(mc, sc, MULTIMODAL_REGISTRY))

    # profile_run: one item of the modality with the most tokens, decoder dummy data of max_num_tokens
    modality = max(max_tokens.items(), key=lambda kv: kv[1])[0]
    dec = MULTIMODAL_REGISTRY.get_decoder_dummy_data(model_config=mc, seq_len=SEQ_LEN, mm_counts={modality: 1})
    pv = dec.multi_modal_data["pixel_values"]
    out["profile_run"] = {"prompt_tokens": len(dec.prompt_token_ids), "pixel_values": tuple(pv.shape),
                          "patches_per_image": dec.multi_modal_data["patches_per_image"].tolist(),
                          "aspect_ratios": [list(map(int, a)) for a in dec.multi_modal_data["aspect_ratios"]]}

    dummy = INPUT_REGISTRY.dummy_data_for_profiling(mc, seq_len=SEQ_LEN, mm_registry=MULTIMODAL_REGISTRY,
                                                    is_encoder_data=False)
    mm = dummy.multi_modal_data
    ids = list(dummy.seq_data.prompt_token_ids)
    tok = AutoTokenizer.from_pretrained(str(folder))
    vocab = tok.get_vocab()
    image_ids = [vocab[t] for t in ("<|image_start|>", "<|image_end|>", "<|image|>", "<|patch|>",
                                    "<|tile_x_separator|>", "<|tile_y_separator|>")]
    n_images = limits["image"]
    out["dummy_data_for_profiling"] = {
        "prompt_tokens": len(ids), "pixel_values": tuple(mm["pixel_values"].shape),
        "images": n_images, "image_tokens_in_prompt": sum(i in image_ids for i in ids),
        "embed_is_patch_true_per_image": [int(torch.as_tensor(e).sum()) for e in mm["embed_is_patch"]],
        "mm_placeholders": {k: [(p["offset"], p["length"]) for p in v] for k, v in dummy.multi_modal_placeholders.items()},
    }

    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "t5 t6 t7"}]}]
    prompt = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    out["chat_prompt"] = prompt
    out["chat_prompt_ids"] = tok(prompt, add_special_tokens=False)["input_ids"]
    out["len_tokenizer"] = len(tok)
    out["special_ids"] = {t: vocab[t] for t in ("<|begin_of_text|>", "<|eot|>", "<|finetune_right_pad|>",
                                                 "<|image_start|>", "<|image_end|>", "<|image|>", "<|patch|>")}

    per_image = (16 + 1) * (144 + 1) + 2
    ok = {"max tokens per image 2467": max_tokens.get("image") == per_image,
          "profile_run pixel_values (17, 3, 336, 336)": out["profile_run"]["pixel_values"] == (17, 3, 336, 336),
          "profiling pixel_values 17 per image": out["dummy_data_for_profiling"]["pixel_values"]
          == (17 * n_images, 3, 336, 336),
          "2467 image tokens per image in the prompt": out["dummy_data_for_profiling"]["image_tokens_in_prompt"]
          == per_image * n_images,
          "<|image|> one token": tok.encode("<|image|>", add_special_tokens=False) == [vocab["<|image|>"]],
          "vocabulary 202048": len(tok) == mc.hf_config.text_config.vocab_size == 202048,
          "patch id = image_token_index": vocab["<|patch|>"] == mc.hf_config.image_token_index,
          "image_start/end = boi/eoi": (vocab["<|image_start|>"], vocab["<|image_end|>"])
          == (mc.hf_config.boi_token_index, mc.hf_config.eoi_token_index)}
    out["checks"] = ok
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", help="prepared folders, or model configs (folder or config.json) to prepare")
    ap.add_argument("--layers", nargs="*", type=int, default=[0],
                    help="text_config.num_hidden_layers for the folders prepared (0: as the config has it)")
    ap.add_argument("--work", type=Path, default=None, help="where prepared folders go (default: a temporary folder)")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="llama4-mm-"))
    failed = False
    for model in args.models:
        for layers in args.layers if not (Path(model) / "preprocessor_config.json").exists() else [0]:
            res = check(prepare(model, layers or None, work))
            prompt_ids = res.pop("chat_prompt_ids")
            print(json.dumps(res, indent=1, default=str))
            print("chat prompt ids:", prompt_ids)
            failed |= not all(res["checks"].values())
    print("FAILED" if failed else "ALL CHECKS PASSED")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
