"""The one model-folder builder: a folder an engine can serve with random (dummy) weights.

A model of this study is a ``config.json``; serving it with ``--load-format dummy`` needs a folder holding that config
and a tokenizer whose vocabulary is exactly the model's (random-token prompts then round-trip exactly; the weights
are random, so is the text). A folder with a real checkpoint (``*.safetensors``) is served as it is.
"""

from __future__ import annotations

import json
from pathlib import Path

from llmstudy.core import models as M


def has_weights(model: str) -> bool:
    """A folder with a real checkpoint (``*.safetensors``): served as it is, with its own tokenizer."""
    return Path(str(model)).is_dir() and any(Path(str(model)).glob("*.safetensors"))


def server_config(model: str, text_only: bool = False) -> dict:
    """The config.json an engine loads for ``model``. With ``text_only`` a multimodal config becomes its language
    model alone (Llama 4, Gemma 3: ``text_config`` as ``...ForCausalLM``, keeping the dtype and quantization)."""
    raw = M.raw_config(model)
    if not text_only or "text_config" not in raw:
        return raw
    cfg = dict(raw["text_config"])
    cfg["architectures"] = [raw["architectures"][0].replace("ForConditionalGeneration", "ForCausalLM")]
    cfg.setdefault("torch_dtype", raw.get("torch_dtype", "bfloat16"))
    if "quantization_config" in raw:
        cfg["quantization_config"] = raw["quantization_config"]
    return cfg


def vocab_size(cfg: dict) -> int:
    """The vocabulary of a config dict (its ``text_config``'s for a multimodal one); a clear error when absent."""
    v = cfg.get("vocab_size") or cfg.get("text_config", {}).get("vocab_size")
    if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
        raise ValueError(f"config has no positive integer vocab_size (got {v!r}); a served model needs one for its tokenizer")
    return v


def prepare_model_dir(model: str, dest: Path, text_only: bool = False) -> Path:
    """Write ``dest/config.json`` (:func:`server_config`) and a synthetic tokenizer of exactly its vocabulary.

    A folder that already holds the same config and a tokenizer is reused as it is (nothing is rewritten).
    """
    from llmstudy.training.finetune import synthetic_tokenizer

    cfg = server_config(model, text_only)
    dest = Path(dest)
    if (dest / "config.json").exists() and (dest / "tokenizer.json").exists() and json.loads((dest / "config.json").read_text()) == cfg:
        return dest
    vocab = vocab_size(cfg)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "config.json").write_text(json.dumps(cfg, indent=1))
    synthetic_tokenizer(vocab).save_pretrained(str(dest))
    return dest
