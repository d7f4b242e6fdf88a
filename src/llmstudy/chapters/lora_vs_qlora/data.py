"""The persona dataset: validation, the article's split, prompt formats, token lengths and the style metric."""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

import pandas as pd

from .config import EVAL_PROMPTS, PROMPT_STYLES, SYSTEM_PROMPT, DatasetError, dataset_dir, dataset_path


def load_rows(path: str | Path) -> list[dict]:
    """Read an ``[{"instruction", "output"}, ...]`` JSON file; raise :class:`DatasetError` naming every bad row."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"dataset file not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from e
    if not isinstance(data, list):
        raise DatasetError(f"{path}: expected a JSON list of rows, got {type(data).__name__}")
    errors = []
    for i, row in enumerate(data, start=1):
        if not isinstance(row, dict):
            errors.append(f"row {i}: expected an object, got {type(row).__name__}")
            continue
        missing = [k for k in ("instruction", "output") if k not in row]
        extra = sorted(set(row) - {"instruction", "output"})
        if missing:
            errors.append(f"row {i}: missing {', '.join(repr(k) for k in missing)}")
        if extra:
            errors.append(f"row {i}: unexpected key(s) {extra}")
        for k in ("instruction", "output"):
            if k in row and not isinstance(row[k], str):
                errors.append(f"row {i}: {k!r} must be a string, got {type(row[k]).__name__}")
            elif k in row and not row[k].strip():
                errors.append(f"row {i}: empty {k}")
    if errors:
        more = f" (and {len(errors) - 10} more)" if len(errors) > 10 else ""
        raise DatasetError(f"{path}: {len(errors)} problem(s): " + "; ".join(errors[:10]) + more)
    if not data:
        raise DatasetError(f"{path}: no rows")
    return data


def concat_parts(parts=None, out: str | Path | None = None) -> Path:
    """Build the shipped dataset: the part files, validated, concatenated in order, written as indented UTF-8 JSON."""
    parts = [Path(p) for p in (parts or [dataset_dir() / "parts" / n for n in ("part-a.json", "part-b.json")])]
    rows = []
    for p in parts:
        rows += load_rows(p)
    out = Path(out) if out else dataset_path()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return out


def heldout_overlap(rows: list[dict]) -> list[int]:
    """Row numbers whose instruction is one of the eight evaluation prompts (ignoring punctuation and spaces)."""

    def norm(s):
        return re.sub(r"[\s?？!！。、,.]", "", s)

    held = {norm(p) for p in EVAL_PROMPTS}
    return [i for i, r in enumerate(rows, start=1) if norm(r["instruction"]) in held]


def split_rows(rows: list[dict], test_size: float = 0.2, seed: int = 42) -> tuple[list[dict], list[dict]]:
    """The article's split: ``datasets`` ``train_test_split(test_size=0.2, seed=42)``; rows keep their 1-based ``row``."""
    from datasets import Dataset

    ds = Dataset.from_list([{"row": i, **r} for i, r in enumerate(rows, start=1)])
    sp = ds.train_test_split(test_size=test_size, seed=seed)
    return sp["train"].to_list(), sp["test"].to_list()


def llama2_prompt(instruction: str, system: str = SYSTEM_PROMPT) -> str:
    """The article's hand-built Llama-2 prompt, without its literal ``<s>`` (the tokenizer adds BOS)."""
    return f"[INST] <<SYS>> {system} <</SYS>> {instruction} [/INST]"


def format_rows(rows: list[dict], style: str, system: str = SYSTEM_PROMPT) -> list[dict]:
    """Prompt/completion rows for trl: Llama-2 ``[INST]`` strings, or chat messages for the model's template."""
    if style not in PROMPT_STYLES:
        raise ValueError(f"prompt style must be one of {PROMPT_STYLES}, got {style!r}")
    out = []
    for r in rows:
        if style == "llama2-inst":
            out.append({"prompt": llama2_prompt(r["instruction"], system), "completion": " " + r["output"]})
        else:
            sys_msg = [{"role": "system", "content": system}] if system else []
            out.append({"prompt": sys_msg + [{"role": "user", "content": r["instruction"]}], "completion": [{"role": "assistant", "content": r["output"]}]})
    return out


def render_prompt(instruction: str, style: str, tok, system: str = SYSTEM_PROMPT) -> tuple[str, bool]:
    """The text a model sees at inference for one instruction, and whether the tokenizer must add BOS itself."""
    if style == "llama2-inst":
        return llama2_prompt(instruction, system), True
    msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": instruction}]
    return tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False), False


def token_lengths(rows: list[dict], style: str, tok, system: str = SYSTEM_PROMPT) -> pd.DataFrame:
    """Per row: prompt, completion (with EOS / end of turn) and total tokens, tokenized the way trl 1.16 does."""
    out = []
    for r, pc in zip(rows, format_rows(rows, style, system)):
        if style == "llama2-inst":
            p = tok(pc["prompt"]).input_ids
            full = tok(pc["prompt"] + pc["completion"] + tok.eos_token).input_ids
        else:
            p = tok.apply_chat_template(pc["prompt"], add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
            full = tok.apply_chat_template(pc["prompt"] + pc["completion"], tokenize=True, return_dict=True)["input_ids"]
        n = 0
        while n < min(len(p), len(full)) and p[n] == full[n]:
            n += 1
        out.append({"row": r.get("row"), "prompt_tokens": n, "completion_tokens": len(full) - n, "total_tokens": len(full)})
    return pd.DataFrame(out)


def check_lengths(lengths: pd.DataFrame, max_length: int) -> dict:
    """Refuse prompts that leave no completion token within ``max_length`` (trl would drop them silently).

    Returns counts for the record: rows, prompts too long (0 here), rows whose completion trl truncates.
    """
    long = lengths[lengths.prompt_tokens >= max_length]
    if len(long):
        rows = ", ".join(str(r) for r in long.row.head(20))
        raise DatasetError(
            f"{len(long)} of {len(lengths)} prompts are at least max_length={max_length} tokens long (rows {rows}): "
            "no completion token would remain, and trl would drop these rows without a word. "
            "Raise max_length or shorten the instructions."
        )
    return {
        "rows": int(len(lengths)),
        "prompt_too_long": 0,
        "truncated": int((lengths.total_tokens > max_length).sum()),
        "max_total_tokens": int(lengths.total_tokens.max()),
        "mean_total_tokens": float(lengths.total_tokens.mean()),
    }


SENTENCE_END = re.compile(r"[。！？!?\n]+")


def style_metrics(texts) -> pd.DataFrame:
    """Per text: characters, sentences, 「、」 count and 「、」 per sentence (the persona's halting cadence)."""
    rows = []
    for t in texts:
        t = t.strip() if isinstance(t, str) else ""  # an empty answer reads back from CSV as NaN
        sentences = [s for s in SENTENCE_END.split(t) if s.strip()]
        n_s = max(len(sentences), 1) if t else 0
        commas = t.count("、")
        rows.append({"chars": len(t), "sentences": n_s, "commas": commas, "commas_per_sentence": commas / n_s if n_s else 0.0})
    return pd.DataFrame(rows)


def dataset_stats(rows: list[dict]) -> dict:
    """Size and voice of a dataset: rows, unique instructions, mean lengths, 「、」 per sentence of the outputs."""
    out = style_metrics(r["output"] for r in rows)
    return {
        "rows": len(rows),
        "unique_instructions": len({r["instruction"] for r in rows}),
        "instruction_chars_mean": statistics.fmean(len(r["instruction"]) for r in rows),
        "output_chars_mean": float(out.chars.mean()),
        "output_chars_max": int(out.chars.max()),
        "commas_per_sentence": float(out.commas.sum() / max(out.sentences.sum(), 1)),
    }



def dataset_or_error(dataset: str = "") -> tuple[Path, list[dict], str]:
    """The dataset file (the shipped one when ``dataset`` is empty), its rows, and why there are none ('' if read)."""
    path = Path(dataset) if dataset else dataset_path()
    try:
        return path, load_rows(path), ""
    except DatasetError as e:
        return path, [], str(e)


def dataset_summary(rows: list[dict]) -> pd.DataFrame:
    """The dataset's size and voice, its split, and how many evaluation prompts it holds (one column, ``value``)."""
    train, held = split_rows(rows)
    return pd.Series({**dataset_stats(rows), "train rows": len(train), "eval rows": len(held), "evaluation prompts in the data": len(heldout_overlap(rows))},
                     name="value").to_frame()
