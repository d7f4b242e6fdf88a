"""Run mode: measure each setup in a fresh subprocess on this machine and write a run record."""

from __future__ import annotations

import json
import os

import pandas as pd

from llmstudy.core import models as M
from llmstudy.training import memory as mm
from llmstudy.training.memory import Setup

from .params import PARAMS

EXPERIMENT = "memory_accounting"
_D = {k: p.default for k, p in PARAMS.items()}

def _tidy_row(setup: Setup, res: dict, grad_accum: int, steps: int) -> dict:
    g = 2**30
    stages = res.get("stages", {})
    m = res.get("measured", {})

    def stage(name, key):
        v = stages.get(name, {}).get(key)
        return v / g if v is not None else None

    def gib(v):
        return v / g if isinstance(v, (int, float)) and res.get("cuda") else None

    return {
        "model": setup.model,
        "method": setup.method,
        "optimizer": setup.optimizer,
        "weight_dtype": setup.weight_dtype,
        "seq_len": setup.seq_len,
        "micro_batch": setup.micro_batch,
        "grad_accum": grad_accum,
        "steps": steps,
        "grad_ckpt": setup.grad_ckpt,
        "lora_r": setup.lora_r if setup.method != "full" else None,
        "setup": setup.label(),
        "outcome": res.get("outcome"),
        "error": res.get("error"),
        "trainable_params": res.get("trainable_params"),
        "total_params": res.get("total_params"),
        "gradient_checkpointing_active": res.get("gradient_checkpointing"),
        "tokens_per_sample": res.get("tokens_per_sample"),
        "peak_allocated_GiB": gib(res.get("max_allocated_bytes")),
        "peak_reserved_GiB": gib(res.get("max_reserved_bytes")),
        "load_peak_allocated_GiB": stage("loaded", "max_allocated_bytes"),
        "loaded_allocated_GiB": stage("loaded", "allocated_bytes"),
        "after_step_allocated_GiB": stage("after_first_step", "allocated_bytes"),
        "weights_GiB": gib(res.get("param_bytes", {}).get("cuda")) if res.get("param_bytes") else None,
        "gradients_GiB": gib(m.get("gradients", {}).get("cuda")) if m.get("gradients") else None,
        "optimizer_GiB": gib(m.get("optimizer", {}).get("cuda")) if m.get("optimizer") else None,
        "optimizer_paged_GiB": gib(m.get("optimizer", {}).get("paged")) if m.get("optimizer") else None,
        "nvml_peak_process_GiB": gib(res.get("nvml_peak_process_bytes")),
        "nvml_peak_device_delta_GiB": gib(res.get("nvml_peak_device_delta_bytes")),
        "median_step_s": res.get("median_step_seconds"),
        "train_seconds": res.get("train_seconds"),
        "first_loss": (res.get("losses") or [None])[0],
        "last_loss": (res.get("losses") or [None])[-1],
    }


def run_experiment(
    model: str = _D["model"],
    methods=tuple(_D["methods"]),
    optimizer: str = _D["optimizer"],
    seq_len: int = _D["seq_len"],
    micro_batch: int = _D["micro_batch"],
    grad_accum: int = _D["grad_accum"],
    grad_ckpt: bool = _D["grad_ckpt"],
    steps: int = _D["steps"],
    lora_r: int = _D["lora_r"],
    lora_targets=tuple(_D["lora_targets"]),
    run_id: str = _D["run_id"],
    timeout_s: int = 900,
    workdir: str | None = None,
    root=None,
):
    """Measure each setup in a fresh subprocess; record OOM, refusal, timeout or error as that point's outcome.

    Points already measured under the same ``run_id`` (in its work folder) are reused, so an interrupted sweep
    resumes. The run record is published atomically at the end. Returns the record's path.
    """
    import shutil
    import tempfile
    from pathlib import Path

    import torch
    from tqdm.auto import tqdm

    from llmstudy.core.records import RunWriter, new_run_id, runs_dir, write_json_atomic
    from llmstudy.training import finetune

    for name, v in (("grad_accum", grad_accum), ("steps", steps)):
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    M.config_path(model)  # unknown model -> clear error before any work
    setups = [mm.parse_method(s, model, seq_len, micro_batch, grad_ckpt, optimizer, lora_r, tuple(lora_targets) or None) for s in methods]
    cuda = torch.cuda.is_available()
    reasons = {s.label(): mm.refusal(s, cuda) for s in setups}
    if all(reasons.values()):
        raise ValueError("nothing runnable on this machine: " + "; ".join(f"{k}: {v}" for k, v in reasons.items()))

    run_id = run_id or new_run_id(f"{Path(str(model)).name}-{'gpu' if cuda else 'cpu'}")
    base = Path(root) if root else runs_dir()
    work = base / EXPERIMENT / f".work-{run_id}"
    work.mkdir(parents=True, exist_ok=True)
    ckpt_root = Path(workdir or os.environ.get("LLMSTUDY_CACHE", tempfile.gettempdir())) / "llmstudy-ckpt"
    params = dict(model=str(model), methods=list(methods), optimizer=optimizer, seq_len=seq_len, micro_batch=micro_batch, grad_accum=grad_accum, grad_ckpt=grad_ckpt, steps=steps, lora_r=lora_r, lora_targets=list(lora_targets), weights="random (config only)", data="synthetic prompt/completion, synthetic word-level tokenizer")
    rows = []
    with RunWriter(EXPERIMENT, params, run_id=run_id, root=base) as rec:
        checkpoint = None  # one bf16 checkpoint of random weights; fp32 setups up-cast it on load
        bar = tqdm(setups, desc="memory_accounting", unit="setup")
        for i, s in enumerate(bar):
            bar.set_postfix_str(s.label())
            res_file = work / f"point{i:02d}.json"
            if res_file.exists():  # resume
                res = json.loads(res_file.read_text())
            elif reasons[s.label()]:
                res = {"outcome": "refused", "error": reasons[s.label()]}
                write_json_atomic(res_file, res)
            else:
                if checkpoint is None:
                    checkpoint = finetune.save_random_checkpoint(model, ckpt_root / f"{Path(str(model)).name}-bf16", "bf16", "cuda" if cuda else "cpu")
                spec = dict(s.to_dict(), label=s.label(), checkpoint=str(checkpoint), grad_accum=grad_accum, steps=steps, output_dir=str(work / f"trainer{i:02d}"), seed=42)
                spec_file = work / f"point{i:02d}.spec.json"
                spec_file.write_text(json.dumps(spec))
                log_file = work / f"point{i:02d}.log"
                res = finetune.run_workers([{"spec_file": spec_file, "result_file": res_file, "log_file": log_file}], timeout_s)[0]
                write_json_atomic(res_file, res)  # a resumed sweep never reads a half-written point
                rec.write_text(log_file.read_text(), f"logs/point{i:02d}-{s.method}-{s.optimizer}-{s.weight_dtype}.log")
            rec.write_json(res, f"raw/point{i:02d}.json")
            rows.append(_tidy_row(s, res, grad_accum, steps))
            tqdm.write(f"{s.label()}: {rows[-1]['outcome']}" + (f", peak {rows[-1]['peak_allocated_GiB']:.2f} GiB" if rows[-1]["peak_allocated_GiB"] else ""))
        rec.write_table(pd.DataFrame(rows))
    shutil.rmtree(work, ignore_errors=True)
    return rec.final


