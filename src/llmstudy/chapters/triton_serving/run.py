"""Run mode of the Triton chapter (a GPU, vLLM, and Triton from the nvidia-pytriton wheel).

Two parts, each one run record of experiment ``triton_serving``:

* ``lora``: the LoRA-vs-QLoRA chapter's trained adapters (real Gemma-3-270m weights) answer the chapter's eight
  evaluation prompts greedily three ways: peft on this GPU (the reference), vLLM's OpenAI server (multi-LoRA), and the
  Triton ensemble whose engine step is vLLM's async engine. ``answers.csv`` holds every answer and whether it equals
  peft's.
* ``bench``: the article's workload (512 in / 256 out, ignore_eos) on the 7B architecture with random weights, one
  vLLM OpenAI server and one Triton ensemble (same vLLM engine arguments), each at every concurrency, measured by
  ``vllm bench serve`` / this study's Triton client and by genai-perf where its tools are installed; then the adapter
  sweep: 0, 1 and N distinct synthetic adapters (the article's rank and targets) in flight on both servers.

Every point's failure is recorded as that point's outcome; the record keeps the servers' logs and the tools' raw
outputs. Results: ``results.csv`` in :mod:`llmstudy.serving.loadgen`'s tidy schema plus the point's keys.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import sysconfig
import time
import traceback
from pathlib import Path

import pandas as pd

from llmstudy.chapters.triton_serving.params import EXPERIMENT, PARAMS, check
from llmstudy.core import params as P
from llmstudy.core.records import RunWriter
from llmstudy.serving import loadgen
from llmstudy.serving.servers import VLLMServer
from llmstudy.serving.triton import client as TC
from llmstudy.serving.triton.repository import vllm_max_lora_rank, write_repository
from llmstudy.serving.triton.server import WheelTritonServer

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def site_packages() -> list[str]:
    """Where the engine step imports vLLM from: ``$LLMSTUDY_ENGINE_SITE`` (os.pathsep-separated) where set, else this
    process's PYTHONPATH (a staged site first), then its site-packages."""
    if os.environ.get("LLMSTUDY_ENGINE_SITE"):
        return [p for p in os.environ["LLMSTUDY_ENGINE_SITE"].split(os.pathsep) if p]
    env = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return list(dict.fromkeys(env + [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]))


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --- prompts -------------------------------------------------------------------------------------------------------
def random_prompts(tokenizer_dir: str, n: int, input_len: int, seed: int = 0) -> list[str]:
    """``n`` prompts of random vocabulary tokens that the tokenizer encodes to exactly ``input_len`` ids (special
    tokens included, as the ensemble's preprocessing encodes them)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    special = set(tok.all_special_ids)
    extra = len(tok("x")["input_ids"]) - len(tok("x", add_special_tokens=False)["input_ids"])
    rng = random.Random(seed)
    pool = [i for i in range(min(len(tok), 32000)) if i not in special and i > 10]
    out = []
    for _ in range(n):
        ids = [rng.choice(pool) for _ in range(input_len - extra)]
        text = tok.decode(ids)
        got = len(tok(text)["input_ids"])
        if got != input_len:
            raise ValueError(f"random prompt does not round-trip: {got} tokens instead of {input_len}")
        out.append(text)
    return out


# --- synthetic adapters ----------------------------------------------------------------------------------------------
def synthetic_adapters(model_dir: str, dest: Path, n: int, r: int, targets=LORA_TARGETS, seed: int = 0) -> dict[str, str]:
    """``n`` peft LoRA adapters of rank ``r`` on ``targets`` for the config in ``model_dir``, random A and B (B != 0,
    so every adapter changes the output), bf16 safetensors. Their values do not matter for speed; their shapes do."""
    import torch
    from safetensors.torch import save_file

    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    h, inter, L = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    hd = cfg.get("head_dim") or h // cfg["num_attention_heads"]
    q, kv = cfg["num_attention_heads"] * hd, cfg.get("num_key_value_heads", cfg["num_attention_heads"]) * hd
    shapes = {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h), "gate_proj": (h, inter), "up_proj": (h, inter), "down_proj": (inter, h)}
    part = {"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn", "o_proj": "self_attn", "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp"}
    g = torch.Generator().manual_seed(seed)
    out = {}
    for a in range(n):
        d = Path(dest) / f"adapter{a}"
        d.mkdir(parents=True, exist_ok=True)
        tensors = {}
        for layer in range(L):
            for t in targets:
                fin, fout = shapes[t]
                pre = f"base_model.model.model.layers.{layer}.{part[t]}.{t}"
                tensors[f"{pre}.lora_A.weight"] = (torch.randn(r, fin, generator=g) / fin**0.5).to(torch.bfloat16)
                tensors[f"{pre}.lora_B.weight"] = (torch.randn(fout, r, generator=g) * 0.01).to(torch.bfloat16)
        save_file(tensors, str(d / "adapter_model.safetensors"))
        (d / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": r, "lora_alpha": 2 * r,
                                                           "lora_dropout": 0.0, "target_modules": list(targets), "bias": "none",
                                                           "base_model_name_or_path": str(model_dir), "fan_in_fan_out": False,
                                                           "inference_mode": True}, indent=1))
        out[f"adapter{a}"] = str(d)
    return out


# --- clients ---------------------------------------------------------------------------------------------------------
def triton_load(base_url: str, prompts: list[str], max_tokens: int, concurrency: int, stream: bool, lora_names: list[str] | None = None):
    """:func:`llmstudy.serving.triton.client.run_load` with request ``i`` on adapter ``lora_names[i % n]`` (several
    adapters in one batch); output lengths are exact (ignore_eos), so they are not re-tokenised."""
    req, metrics = TC.run_load(base_url, prompts, max_tokens, concurrency, stream, lora_names or None, True, output_len=max_tokens)
    return req.drop(columns=["text"]), metrics


def vllm_bench(base_url: str, model_dir: str, w: loadgen.Workload, out_dir: Path, tag: str, lora_modules: list[str] | None = None, timeout_s: float = 400):
    """``vllm bench serve`` (the study's command) plus ``--lora-modules`` (each request picks one at random)."""
    cmd = loadgen.bench_command(base_url, model_dir, model_dir, w, out_dir, f"{tag}.json")
    if lora_modules:
        cmd += ["--lora-modules", *lora_modules]
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / f"{tag}.console.txt", "w") as f:
        p = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, timeout=timeout_s, check=False)
    if p.returncode != 0 or not (out_dir / f"{tag}.json").exists():
        raise RuntimeError(f"vllm bench serve failed (exit {p.returncode}): " + (out_dir / f"{tag}.console.txt").read_text(errors="replace")[-2000:])
    req, metrics = loadgen.normalize_vllm_bench(json.loads((out_dir / f"{tag}.json").read_text()))
    return req, metrics


def genai_perf_openai(base_url: str, model_dir: str, served: str, c: int, n: int, input_len: int, output_len: int, out_dir: Path,
                      prompts: list[str], streaming: bool = True):
    """genai-perf against vLLM's OpenAI completions endpoint (the same tool as against Triton), sending ``prompts``
    (genai-perf's own synthetic text is built from an English corpus, which the synthetic tokenizer of a
    random-weights model cannot encode: its prompts come out empty)."""
    from llmstudy.serving.triton.install import TritonInstall

    exe = str(TritonInstall.default().tools_bin / "genai-perf")
    cmd = [exe, "profile", "-m", served, "--endpoint-type", "completions", "-u", base_url, "--concurrency", str(c),
           "--request-count", str(n), "--input-file", str(TC.write_prompt_file(Path(out_dir) / "prompts.jsonl", prompts)),
           "--output-tokens-mean", str(output_len), "--output-tokens-stddev", "0", "--extra-inputs", "ignore_eos:true",
           "--tokenizer", model_dir, "--artifact-dir", str(out_dir), "--random-seed", "0"] + (["--streaming"] if streaming else [])
    return None, loadgen.normalize_genai_perf(TC.run_genai_perf(cmd, out_dir))


def genai_perf_triton(grpc_port: int, model_dir: str, out_dir: Path, c: int, n: int, input_len: int, output_len: int, prompts: list[str]):
    """genai-perf against the ensemble over gRPC streaming (the article's way of measuring Triton)."""
    cmd = TC.genai_perf_command(f"127.0.0.1:{grpc_port}", model_dir, out_dir, c, n, input_len, output_len,
                                input_file=TC.write_prompt_file(Path(out_dir) / "prompts.jsonl", prompts))
    return None, loadgen.normalize_genai_perf(TC.run_genai_perf(cmd, out_dir))


def has_genai_perf() -> bool:
    from llmstudy.serving.triton.install import TritonInstall

    b = TritonInstall.default().tools_bin
    return (b / "genai-perf").exists() and (b / "perf_analyzer").exists()


# --- parts -----------------------------------------------------------------------------------------------------------
def _point(rows: list, errors: list, keys: dict, raw_dir: Path | None, fn, *args):
    """Run one measurement ``fn(*args)`` -> (per-request rows or None, tidy metrics); its metrics get ``keys`` and the
    GPU's utilisation and power sampled by NVML meanwhile (rows ``gpu_*``, stat "value"); a failure is recorded as the
    point's outcome, never raised."""
    from llmstudy.serving.gpumon import GpuMonitor

    t0 = time.monotonic()
    try:
        with GpuMonitor() as mon:
            req, metrics = fn(*args)
        gpu = [(k, "value", float(v), "") for k, v in mon.summary().items() if k.startswith("gpu_")]
        if gpu:
            metrics = pd.concat([metrics, pd.DataFrame(gpu, columns=loadgen.METRIC_COLUMNS)], ignore_index=True)
        rows.append(metrics.assign(**keys, outcome="ok"))
        if raw_dir is not None and req is not None and len(req):
            raw_dir.mkdir(parents=True, exist_ok=True)
            req.to_csv(raw_dir / ("-".join(f"{k}{v}" for k, v in keys.items()) + ".requests.csv.gz"), index=False)
        log(f"  {keys}: ok in {time.monotonic() - t0:.0f} s")
    except Exception as e:  # noqa: BLE001 - a point's failure is its result
        errors.append({**keys, "outcome": "failed", "error": f"{type(e).__name__}: {str(e)[-1500:]}"})
        log(f"  {keys}: FAILED {type(e).__name__}: {str(e)[-300:]}")


def bench(p: dict, run_id: str, root: Path | None = None, deadline_s: float = 560, servers=("vllm", "triton"), adapters_only: bool = False) -> Path:
    from llmstudy.serving.model_dir import prepare_model_dir

    t_start = time.monotonic()
    work = Path(os.environ.get("LLMSTUDY_WORK", "/tmp/llmstudy-triton"))
    model_dir = str(prepare_model_dir(p["model"], work / "model"))
    engine = {"dtype": p["dtype"], "load_format": "dummy", "max_model_len": p["max_model_len"], "max_num_seqs": p["max_num_seqs"], "enforce_eager": p["enforce_eager"]}
    n_ad = max(p["adapters"]) if p["adapters"] else 0
    with RunWriter(EXPERIMENT, {**p, "part": "bench", "engine_args": engine}, run_id=run_id, root=root, keep_failed=True) as rec:
        rows, errors, facts = [], [], []
        raw = rec.dir / "raw"
        adapters = synthetic_adapters(model_dir, work / "adapters", n_ad, p["lora_r"]) if n_ad else {}
        prompts_cache: dict = {}

        def prompts(n, seed=0):
            if (n, seed) not in prompts_cache:
                prompts_cache[(n, seed)] = random_prompts(model_dir, n, p["input_len"], seed)
            return prompts_cache[(n, seed)]

        def left():
            return deadline_s - (time.monotonic() - t_start)

        for server in servers:
            for lora in ((False, True) if n_ad and not adapters_only else (True,) if adapters_only else (False,)):
                if left() < 120:
                    errors.append({"server": server, "lora_enabled": lora, "outcome": "skipped", "error": f"{left():.0f} s left of the call's deadline"})
                    continue
                tag = f"{server}{'-lora' if lora else ''}"
                log(f"server {tag}")
                args = ["--dtype", p["dtype"], "--load-format", "dummy", "--max-model-len", p["max_model_len"], "--max-num-seqs", p["max_num_seqs"]]
                args += ["--enforce-eager"] if p["enforce_eager"] else []
                ad = adapters if lora else {}
                try:
                    if server == "vllm":
                        if lora:
                            args += ["--enable-lora", "--max-loras", len(ad), "--max-lora-rank", vllm_max_lora_rank(p["lora_r"]), "--lora-modules", *[f"{k}={v}" for k, v in ad.items()]]
                        srv = VLLMServer(model_dir, args, log_path=rec.dir / "logs" / f"{tag}.log", start_timeout_s=min(600, left() - 30))
                    else:
                        repo = write_repository(work / f"repo-{tag}", model_dir, engine="vllm", adapters=ad, max_batch_size=p["max_batch_size"],
                                                engine_args=engine, site_packages=site_packages())
                        srv = WheelTritonServer(repo, log_path=rec.dir / "logs" / f"{tag}.log", start_timeout_s=min(600, left() - 30))
                    with srv:
                        facts.append({"server": tag, "start_s": srv.start_s, **{k: v for k, v in srv.facts.items() if isinstance(v, (int, float, str))}})
                        log(f"  up in {srv.start_s:.0f} s")
                        for c in p["concurrency"]:
                            n = loadgen.prompts_for(c, p["max_num_seqs"])
                            w = loadgen.Workload(p["input_len"], p["output_len"], c, n, warmups=min(c, 4))
                            if lora:
                                if c != 16 and len(p["concurrency"]) > 1:
                                    continue
                                for k in sorted({k for k in p["adapters"] if k}):  # untimed: one full wave per adapter count
                                    t0 = time.monotonic()
                                    try:
                                        if server == "vllm":
                                            vllm_bench(srv.base_url, model_dir, loadgen.Workload(p["input_len"], 8, c, c, warmups=0), raw / tag / "warmup", f"c{c}-a{k}", list(ad)[:k])
                                        else:
                                            triton_load(srv.base_url, prompts(c, 7), 8, c, True, list(ad)[:k])
                                        log(f"  warm-up, {c} requests on {k} adapter(s): {time.monotonic() - t0:.1f} s")
                                    except Exception as e:  # noqa: BLE001 - the points below then say what failed
                                        log(f"  warm-up with {k} adapter(s) failed: {e}")
                                for k in p["adapters"]:
                                    keys = dict(server=server, lora_enabled=lora, tool="vllm-bench" if server == "vllm" else "llmstudy-client", streaming=True, concurrency=c, adapters=k)
                                    names = list(ad)[:k]
                                    if server == "vllm":
                                        _point(rows, errors, keys, raw / tag, vllm_bench, srv.base_url, model_dir, w, raw / tag, f"c{c}-a{k}", names)
                                    else:
                                        _point(rows, errors, keys, raw / tag, triton_load, srv.base_url, prompts(n), p["output_len"], c, True, names)
                                continue
                            if left() < 40:
                                errors.append({"server": server, "concurrency": c, "outcome": "skipped", "error": "call deadline"})
                                continue
                            if server == "vllm":
                                keys = dict(server=server, lora_enabled=lora, tool="vllm-bench", streaming=True, concurrency=c, adapters=0)
                                _point(rows, errors, keys, raw / tag, vllm_bench, srv.base_url, model_dir, w, raw / tag, f"c{c}")
                                if has_genai_perf():
                                    keys = dict(server=server, lora_enabled=lora, tool="genai-perf", streaming=True, concurrency=c, adapters=0)
                                    _point(rows, errors, keys, None, genai_perf_openai, srv.base_url, model_dir, model_dir, c, n, p["input_len"], p["output_len"], raw / tag / f"gp-c{c}", prompts(n))
                            else:
                                TC.generate(srv.base_url, prompts(1, 99)[0], 8, True, None, True)  # warm-up
                                keys = dict(server=server, lora_enabled=lora, tool="llmstudy-client", streaming=True, concurrency=c, adapters=0)
                                _point(rows, errors, keys, raw / tag, triton_load, srv.base_url, prompts(n), p["output_len"], c, True)
                                if c == 16:
                                    keys = dict(server=server, lora_enabled=lora, tool="llmstudy-client", streaming=False, concurrency=c, adapters=0)
                                    _point(rows, errors, keys, raw / tag, triton_load, srv.base_url, prompts(n), p["output_len"], c, False)
                                if has_genai_perf():
                                    keys = dict(server=server, lora_enabled=lora, tool="genai-perf", streaming=True, concurrency=c, adapters=0)
                                    _point(rows, errors, keys, None, genai_perf_triton, srv.grpc_port, model_dir, raw / tag / f"gp-c{c}", c, n, p["input_len"], p["output_len"], prompts(n))
                        if server == "triton":
                            try:
                                rec.write_text(srv.metrics_text(), f"logs/{tag}-metrics.txt")
                            except Exception as e:  # noqa: BLE001
                                rec.write_text(f"metrics unavailable: {e}", f"logs/{tag}-metrics.txt")
                except Exception as e:  # noqa: BLE001 - a server that does not start is that server's outcome
                    errors.append({"server": server, "lora_enabled": lora, "outcome": "start_failed", "error": f"{type(e).__name__}: {str(e)[-1500:]}"})
                    log(f"  {tag} FAILED: {e}\n{traceback.format_exc()[-1500:]}")
        rec.write_table(pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=loadgen.METRIC_COLUMNS), "results")
        rec.write_table(pd.DataFrame(errors), "outcomes")
        rec.write_table(pd.DataFrame(facts), "servers")
        rec.extra["part"] = "bench"
    return rec.final


class _Skipped(Exception):
    pass


def peft_answers(model_dir: str, adapters: dict[str, str], prompts: list[str], max_tokens: int,
                 dtype: str = "bfloat16") -> tuple[list[dict], dict[tuple[str, int], list[int]]]:
    """Greedy answers from transformers + peft on this GPU in ``dtype`` (float32 matmuls without TF32, torch's
    default and vLLM's): the reference the served answers must equal. Returns the answer rows and peft's generated
    token ids per ``(adapter or "base", prompt index)``."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmstudy.serving.triton.textcodec import completion_text

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    tok = AutoTokenizer.from_pretrained(model_dir)
    out, ref_ids = [], {}
    for name in ["", *adapters]:
        base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype)).to(dev).eval()
        model = PeftModel.from_pretrained(base, adapters[name]).eval() if name else base
        for i, text in enumerate(prompts):
            ids = tok(text, return_tensors="pt").to(dev)
            with torch.no_grad():
                gen = model.generate(**ids, do_sample=False, max_new_tokens=max_tokens, pad_token_id=tok.pad_token_id or tok.eos_token_id)
            new = gen[0, ids["input_ids"].shape[1]:].tolist()
            ref_ids[(name or "base", i)] = new
            out.append({"adapter": name or "base", "prompt_id": i, "source": "peft", "text": completion_text(tok, ids["input_ids"][0].tolist(), new), "tokens": len(new)})
        del model, base
        torch.cuda.empty_cache() if dev == "cuda" else None
    return out, ref_ids


def lora_check(p: dict, run_id: str, model_dir: str, adapters: dict[str, str], root: Path | None = None,
               sources=("vllm-openai", "triton")) -> Path:
    """Served adapters vs peft (see the module docstring)."""
    from transformers import AutoTokenizer

    from llmstudy.chapters.lora_vs_qlora.config import EVAL_PROMPTS
    from llmstudy.chapters.lora_vs_qlora.data import render_prompt

    work = Path(os.environ.get("LLMSTUDY_WORK", "/tmp/llmstudy-triton"))
    tok = AutoTokenizer.from_pretrained(model_dir)
    bos = tok.bos_token or ""
    prompts = []
    for q in EVAL_PROMPTS:  # the chat-rendered prompt without its literal BOS: every path's tokenizer adds it once
        text, _ = render_prompt(q, "chat-template", tok)
        prompts.append(text[len(bos):] if bos and text.startswith(bos) else text)
    n = p["lora_max_tokens"]
    with RunWriter(EXPERIMENT, {**p, "part": "lora", "weights": Path(model_dir).name, "adapters": {k: Path(v).name for k, v in adapters.items()}},
                   run_id=run_id, root=root, keep_failed=True) as rec:
        rows, errors = [], []
        log("peft answers")
        peft_rows, ref_ids = peft_answers(model_dir, adapters, prompts, n, p["dtype"])
        rows += peft_rows
        r = max(int(json.loads((Path(a) / "adapter_config.json").read_text())["r"]) for a in adapters.values())
        log("vLLM OpenAI server")
        try:
            if "vllm-openai" not in sources:
                raise _Skipped("not asked for in this call (--lora-sources)")
            args = ["--dtype", p["dtype"], "--max-model-len", 2048, "--enable-lora", "--max-loras", len(adapters), "--max-lora-rank", vllm_max_lora_rank(r),
                    "--lora-modules", *[f"{k}={v}" for k, v in adapters.items()], "--gpu-memory-utilization", 0.5]
            args += ["--enforce-eager"] if p["enforce_eager"] else []
            with VLLMServer(model_dir, args, log_path=rec.dir / "logs" / "vllm-openai.log", served_name="base") as srv:
                import urllib.request

                for name in ["", *adapters]:
                    for i, text in enumerate(prompts):
                        body = json.dumps({"model": name or "base", "prompt": text, "max_tokens": n, "temperature": 0}).encode()
                        req = urllib.request.Request(srv.base_url + "/v1/completions", data=body, headers={"Content-Type": "application/json"})
                        with urllib.request.urlopen(req, timeout=120) as resp:
                            d = json.loads(resp.read())
                        rows.append({"adapter": name or "base", "prompt_id": i, "source": "vllm-openai", "text": d["choices"][0]["text"], "tokens": d["usage"]["completion_tokens"]})
        except _Skipped as e:
            errors.append({"source": "vllm-openai", "outcome": "skipped", "error": str(e)})
        except Exception as e:  # noqa: BLE001
            errors.append({"source": "vllm-openai", "outcome": "failed", "error": f"{type(e).__name__}: {str(e)[-1500:]}"})
            log(f"  vLLM FAILED {e}")
        log("Triton ensemble (vLLM engine)")
        try:
            if "triton" not in sources:
                raise _Skipped("not asked for in this call (--lora-sources)")
            repo = write_repository(work / "repo-lora", model_dir, engine="vllm", adapters=adapters, max_batch_size=p["max_batch_size"],
                                    engine_args={"dtype": p["dtype"], "max_model_len": 2048, "gpu_memory_utilization": 0.5, "enforce_eager": p["enforce_eager"]},
                                    site_packages=site_packages())
            with WheelTritonServer(repo, log_path=rec.dir / "logs" / "triton.log", start_timeout_s=600) as srv:
                for name in ["", *adapters]:
                    for stream in (False, True):
                        for i, text in enumerate(prompts):
                            t = TC.generate(srv.base_url, text, n, stream, name or None, False)
                            if t.error:
                                raise RuntimeError(t.error)
                            rows.append({"adapter": name or "base", "prompt_id": i, "source": "triton" + ("-stream" if stream else ""), "text": t.text, "tokens": None})
        except _Skipped as e:
            errors.append({"source": "triton", "outcome": "skipped", "error": str(e)})
        except Exception as e:  # noqa: BLE001
            errors.append({"source": "triton", "outcome": "failed", "error": f"{type(e).__name__}: {str(e)[-1500:]}"})
            log(f"  Triton FAILED {e}")
        df = pd.DataFrame(rows)
        ref = df[df.source == "peft"].set_index(["adapter", "prompt_id"]).text
        df["equal_to_peft"] = [t == ref.get((a, i)) for a, i, t in zip(df.adapter, df.prompt_id, df.text)]
        try:  # where each served answer left peft's: peft's own top-2 margin there (a near-tie flips bf16 greedy decoding)
            from llmstudy.chapters.triton_serving.divergence import divergence_table
            log("divergence margins")
            rec.write_table(divergence_table(model_dir, adapters, prompts, df, ref_ids, p["dtype"]), "divergence")
        except Exception as e:  # noqa: BLE001 - the answers stay recorded; the margins' failure is an outcome
            errors.append({"source": "divergence", "outcome": "failed", "error": f"{type(e).__name__}: {str(e)[-1500:]}"})
            log(f"  divergence FAILED {e}")
        rec.write_table(df, "answers")
        rec.write_table(pd.DataFrame(errors), "outcomes")
        rec.write_json(prompts, "prompts.json")
        rec.write_json({f"{a}/{i}": ids for (a, i), ids in ref_ids.items()}, "peft_ids.json")
        rec.extra["part"] = "lora"
        rec.extra["served_model"] = Path(model_dir).name  # what this part served (parameters.model is the bench part's)
        log(df.groupby(["source", "adapter"]).equal_to_peft.mean().to_string())
    return rec.final


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m llmstudy.chapters.triton_serving.run", description="Triton chapter, run mode (GPU)")
    P.add_arguments(ap, PARAMS, exclude=("mode",))
    ap.add_argument("--root", default=None)
    ap.add_argument("--deadline-s", type=float, default=560)
    ap.add_argument("--servers", nargs="+", default=["vllm", "triton"])
    ap.add_argument("--adapters-only", action="store_true")
    ap.add_argument("--weights", default="", help="lora part: the real checkpoint folder (same as --lora-weights)")
    ap.add_argument("--adapter", action="append", default=[], help="lora part: NAME=PATH of a peft adapter (repeat; adds to --lora-adapters)")
    ap.add_argument("--lora-sources", nargs="+", default=["vllm-openai", "triton"], choices=["vllm-openai", "triton"],
                    help="lora part: the served paths compared with peft in this call")
    a = ap.parse_args(argv)
    try:  # bad input stops here, named, before any GPU work
        v = P.from_args(PARAMS, a)
        v["lora_weights"] = a.weights or v["lora_weights"]
        v["lora_adapters"] = list(v["lora_adapters"]) + a.adapter
        p = check(P.validate(PARAMS, {**v, "mode": "run"}))
    except ValueError as e:
        ap.error(str(e))
    if not p["run_id"]:
        ap.error("--run-id is required in run mode")
    root = Path(a.root) if a.root else None
    if p["part"] == "lora":
        ad = dict(x.split("=", 1) for x in p["lora_adapters"])
        path = lora_check(p, p["run_id"], p["lora_weights"], ad, root, tuple(a.lora_sources))
    else:
        path = bench(p, p["run_id"], root, a.deadline_s, tuple(a.servers), a.adapters_only)
    print(f"record: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
