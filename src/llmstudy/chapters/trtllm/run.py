"""Run mode: the plan's steps inside the container, servers always stopped, one run record."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path

import pandas as pd

from .config import SERVE_EXPERIMENT, SERVE_IMAGE, SERVE_TOOLS, TRITON_EXPERIMENT, TRITON_IMAGE, TRITON_TOOLS
from .params import TritonDeploy
from .plan import Step, plan, script
from .preflight import Finding, check_engine, findings_table, preflight, raise_on_errors


class StepError(RuntimeError):
    """A step failed; the message names it and ends with its log."""


def require_tools(tools: tuple[str, ...], image: str) -> None:
    """Refuse before any work when the container's tools are not on PATH."""
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        raise RuntimeError(f"run mode needs {', '.join(missing)} on PATH: run it inside {image} (see envs/ and .github/workflows/gpu-trtllm.yml); nothing was started")


def _wait_http(url: str, timeout_s: float, servers: list) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if any(p.poll() is not None and p.returncode != 0 for p in servers):
            raise StepError(f"the server exited before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(2)
    raise StepError(f"{url} did not answer within {timeout_s:.0f} s")


def _stop(p: subprocess.Popen) -> None:
    """Stop a server's whole process group (the Triton launcher exits at once and leaves tritonserver in it)."""
    for sig, grace in ((signal.SIGTERM, 60), (signal.SIGKILL, 10)):
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            return
        end = time.monotonic() + grace
        while time.monotonic() < end:
            p.poll()  # reap the group leader, or the group never empties
            try:
                os.killpg(p.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.5)


def execute(steps: list[Step], logs: Path, check: Callable[[str], list[Finding]] | None = None, normalize: Callable | None = None, wait_s: float = 1800) -> pd.DataFrame:
    """Run the steps in order, logging each; return the benchmark table (one normalised genai-perf export per point).

    Servers start in their own process group and are always stopped, also when a step fails.
    """
    from tqdm.auto import tqdm

    if normalize is None:
        from llmstudy.serving.loadgen import normalize_genai_perf as normalize  # the serving chapter's load code
    logs.mkdir(parents=True, exist_ok=True)
    servers, frames = [], []
    try:
        for i, s in enumerate(tqdm(steps, desc="steps", unit="step")):
            log = logs / f"{i:02d}-{s.name.replace(' ', '_').replace('=', '')}.log"
            if s.kind == "write":
                Path(s.path).parent.mkdir(parents=True, exist_ok=True)
                Path(s.path).write_text(s.text)
                if s.text.startswith("#!"):
                    os.chmod(s.path, 0o755)
                log.write_text(s.text)
            elif s.kind in ("run", "shell", "bench"):
                with open(log, "w") as fh:
                    rc = subprocess.run(list(s.argv) if s.kind != "shell" else ["bash", "-c", s.text], stdout=fh, stderr=subprocess.STDOUT).returncode
                if rc:
                    raise StepError(f"step '{s.name}' exited {rc}; log {log.name}:\n{log.read_text()[-3000:]}")
                if s.kind == "bench":
                    exports = sorted(Path(s.path).rglob("*_genai_perf.json"))
                    if not exports:
                        raise StepError(f"step '{s.name}': no *_genai_perf.json under {s.path}")
                    shutil.copy(exports[-1], logs / f"{i:02d}-c{s.concurrency}-genai_perf.json")
                    frames.append(normalize(exports[-1]).assign(concurrency=s.concurrency))
            elif s.kind == "serve":
                with open(log, "w") as fh:  # the child keeps its own copy of the descriptor
                    servers.append(subprocess.Popen(list(s.argv), stdout=fh, stderr=subprocess.STDOUT, start_new_session=True))
            elif s.kind == "wait":
                _wait_http(s.path, wait_s, servers)
            elif s.kind == "check" and check is not None:
                found = check(s.path)
                log.write_text(findings_table(found).to_string())
                raise_on_errors(found)
    finally:
        for p in servers:
            _stop(p)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def run(cfg, run_id: str = "", root=None, normalize: Callable | None = None, tools: tuple[str, ...] | None = None) -> Path:
    """Preflight, then every step inside the container; write a run record (a failed step is recorded as such)."""
    from llmstudy.core.records import RunWriter, new_run_id

    triton = isinstance(cfg, TritonDeploy)
    require_tools(tools or (TRITON_TOOLS if triton else SERVE_TOOLS), TRITON_IMAGE if triton else SERVE_IMAGE)
    if normalize is None:  # the serving chapter's load code turns each genai-perf export into a tidy table
        from llmstudy.serving.loadgen import normalize_genai_perf as normalize
    found = preflight(cfg, paths=True)
    raise_on_errors(found)
    steps = plan(cfg)
    params = {f.name: getattr(cfg, f.name) for f in fields(cfg)}
    experiment = TRITON_EXPERIMENT if triton else SERVE_EXPERIMENT
    with RunWriter(experiment, params, run_id=run_id or new_run_id(Path(str(cfg.model)).name), root=root, keep_failed=True) as rec:
        rec.write_text(script(cfg), "plan.sh")
        rec.write_table(findings_table(found), "preflight")
        check = (lambda _: check_engine(cfg, built=True)) if triton else None
        try:
            table = execute(steps, rec.dir / "logs", check, normalize)
        except Exception:
            rec.write_table(pd.DataFrame([{"outcome": "failed"}]), "results")
            raise
        rec.write_table(table.assign(model=str(cfg.model), input_len=cfg.input_len, output_len=cfg.output_len, outcome="ok"), "results")
    return rec.final
