"""Run mode: train the variants, each in its own subprocess, and publish one run record (resumable)."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import time
from pathlib import Path

import pandas as pd

from llmstudy.core import models as M
from llmstudy.core.paths import repo_root
from llmstudy.training import memory as mm

from .config import (
    EVAL_PROMPTS,
    EXPERIMENT,
    RECIPES,
    RESUME_MARGIN_S,
    RESUME_MIN_START_S,
    VARIANTS,
    DatasetError,
    GiB,
    ResumeNeeded,
    dataset_path,
)
from .data import check_lengths, format_rows, load_rows, render_prompt, split_rows, token_lengths
from .params import PARAMS
from .plan import variant_setup
from .weights import _sha256, model_io


def _refusal(model: str, variant: str, optimizer: str, cuda: bool) -> str | None:
    s = variant_setup(model, variant, optimizer)
    return None if s is None else mm.refusal(s, cuda)


def _generation_prompts(instructions: list[str], style: str, tok) -> dict:
    texts, adds = zip(*(render_prompt(i, style, tok) for i in instructions))
    return {"texts": list(texts), "add_special_tokens": adds[0]}


_D = {k: p.default for k, p in PARAMS.items()}  # the run's defaults are the chapter's parameters


def run_experiment(
    model: str = _D["model"],
    variants=tuple(_D["variants"]),
    parallel=tuple(_D["parallel"]),
    steps: int = _D["steps"],
    epochs: int = _D["epochs"],
    eval_steps: int = _D["eval_steps"],
    max_length: int = _D["max_length"],
    optimizer: str = _D["optimizer"],
    lora_r: int = 4,
    lora_targets=tuple(_D["lora_targets"]),
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

    from llmstudy.core.records import RunWriter, new_run_id, runs_dir, write_json_atomic
    from llmstudy.training import finetune

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
    targets = M.lora_targets(model, list(lora_targets) or None)  # from the architecture; an unknown name is an error
    peft_targets = targets.peft_kwargs()
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
    params = dict(model=str(model), variants=list(variants), parallel=list(parallel), steps=steps, epochs=epochs, eval_steps=eval_steps, max_length=max_length, optimizer=optimizer, lora_r=lora_r, lora_targets=list(targets.names), kbit_prep=kbit_prep, heldout_prompts=heldout_prompts, max_new_tokens=max_new_tokens, weights=ckpt, tokenizer=io["tokenizer"], prompt_style=io["style"], dataset=str(dataset or dataset_path().relative_to(repo_root())), dataset_sha256=_sha256(Path(dataset or dataset_path())), train_rows=len(train_rows), eval_rows=len(eval_rows), lengths=checked, recipes=RECIPES, recipe=finetune.RECIPE)
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
                    lora_targets=peft_targets["target_modules"], lora_target_parameters=peft_targets.get("target_parameters"), double_quant=True, kbit_prep=kbit_prep, seed=42,
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

