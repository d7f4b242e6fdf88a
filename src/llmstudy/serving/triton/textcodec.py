"""Text <-> token ids for the Triton ensemble, shared by the preprocessing and postprocessing models and the tests.

Imported inside the Python backend stub (with numpy 1 first on ``sys.path``), so it imports nothing heavy at module
level: no pandas, no torch.

* :func:`encode`: the prompt's ids as the model's tokenizer gives them (special tokens such as BOS included, no chat
  template: the text is the prompt, as vLLM's ``/v1/completions`` and TensorRT-LLM's preprocessing treat it).
* :func:`decode_piece`: the text a run of generated ids adds *in the middle of a sequence*. A stateless
  postprocessing step decodes every streamed chunk on its own; decoding a chunk alone would drop the space that
  SentencePiece and word-level tokenizers put between tokens (``"t5" + "t9"`` instead of ``" t5 t9"``). Decoding
  ``[anchor] + ids`` and removing the anchor's own text keeps it, so the streamed chunks concatenate to exactly the
  non-streamed text, which is :func:`completion_text` (what vLLM's completions endpoint returns: the text the
  generated ids add after the prompt). A multi-byte character split across two chunks is the exception (each chunk
  then ends or starts with U+FFFD), as in TensorRT-LLM's own postprocessing.
"""

from __future__ import annotations


class RawTokenizer:
    """The model's ``tokenizer.json`` through the ``tokenizers`` library alone (no transformers, no numpy): what the
    stub uses where transformers cannot be imported beside numpy 1 (seen on the GPU image: transformers 5.17's
    ``AutoTokenizer`` failed to import with numpy 1.26 first on ``sys.path``). Same ids and text as the fast
    tokenizer built from the same file: the file's post-processor adds the special tokens in both."""

    def __init__(self, path: str):
        import json
        import os

        from tokenizers import Tokenizer

        f = os.path.join(path, "tokenizer.json")
        self.tok = Tokenizer.from_file(f)
        with open(f, encoding="utf-8") as fh:
            added = json.load(fh).get("added_tokens", [])
        self.all_special_ids = [a["id"] for a in added if a.get("special")]

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict:
        return {"input_ids": self.tok.encode(text, add_special_tokens=add_special_tokens).ids}

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        return self.tok.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def convert_ids_to_tokens(self, i: int):
        return self.tok.id_to_token(int(i))

    def __len__(self) -> int:
        return self.tok.get_vocab_size(with_added_tokens=True)


def load_tokenizer(path: str):
    """transformers' tokenizer for ``path``; where transformers cannot be imported (see :class:`RawTokenizer`), the
    same ``tokenizer.json`` through ``tokenizers``. ``load_tokenizer.fallback_reason`` says which and why."""
    try:
        from transformers import AutoTokenizer

        load_tokenizer.fallback_reason = ""
        return AutoTokenizer.from_pretrained(path)
    except Exception as e:  # noqa: BLE001 - any import/load failure falls back to the raw file
        import os

        if not os.path.exists(os.path.join(path, "tokenizer.json")):
            raise
        import traceback

        load_tokenizer.fallback_reason = f"{type(e).__name__}: {e}; cause: {traceback.format_exc()[-1200:]}"
        return RawTokenizer(path)


load_tokenizer.fallback_reason = ""


def encode(tokenizer, text: str) -> list[int]:
    """The prompt's token ids (the tokenizer's special tokens added, no chat template)."""
    return list(tokenizer(text)["input_ids"])


def anchor_id(tokenizer) -> int:
    """A plain token to decode chunks after: not special, decodes to visible ASCII, not a byte-fallback piece."""
    special = set(tokenizer.all_special_ids)
    candidates = []
    for word in ("a", "the", "0"):
        ids = tokenizer(word, add_special_tokens=False)["input_ids"]
        candidates += ids[-1:]
    candidates += range(min(len(tokenizer), 4096))
    for i in candidates:
        if i in special:
            continue
        tok = tokenizer.convert_ids_to_tokens(int(i))
        text = tokenizer.decode([int(i)], skip_special_tokens=True)
        if text.strip() and text.isascii() and text.strip().isprintable() and not (tok or "").startswith("<0x"):
            return int(i)
    raise ValueError("the tokenizer has no plain ASCII token to anchor chunk decoding")


def decode_piece(tokenizer, ids, anchor: int) -> str:
    """The text ``ids`` add after earlier tokens (special tokens skipped); see the module docstring."""
    ids = [int(i) for i in ids]
    if not ids:
        return ""
    base = tokenizer.decode([anchor], skip_special_tokens=True)
    full = tokenizer.decode([anchor, *ids], skip_special_tokens=True)
    if not full.startswith(base):  # a tokenizer whose decoding is not left-stable: decode the chunk alone
        return tokenizer.decode(ids, skip_special_tokens=True)
    return full[len(base):]


def completion_text(tokenizer, prompt_ids, new_ids) -> str:
    """The text ``new_ids`` add after the prompt (special tokens skipped): the reference a served answer must equal."""
    prompt = tokenizer.decode(list(prompt_ids), skip_special_tokens=True)
    full = tokenizer.decode([*prompt_ids, *new_ids], skip_special_tokens=True)
    if not full.startswith(prompt):
        raise ValueError("decoding is not left-stable for this prompt; compare token ids instead")
    return full[len(prompt):]
