"""Run records: ``data/runs/<experiment>/<run_id>/`` = manifest.json + tidy results + raw logs, written atomically.

A record is assembled in a hidden sibling folder and renamed into place only after its manifest is written, so a
killed run leaves either a complete record or nothing (a stale ``.tmp-*`` folder is ignored by the loader and
swept by the next writer). The loader refuses a folder without a valid manifest.
"""

from __future__ import annotations

import datetime as dt
import getpass
import importlib.metadata as md
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from llmstudy.core.paths import repo_root, runs_dir

MANIFEST = "manifest.json"
REQUIRED_KEYS = ("schema", "experiment", "run_id", "parameters", "git", "started_utc", "ended_utc", "host", "gpu", "packages", "command", "outcome", "files")
SCHEMA = 1
PACKAGES = ("llmstudy", "torch", "transformers", "peft", "trl", "accelerate", "datasets", "bitsandbytes", "vllm", "tensorrt_llm", "genai-perf", "aiperf", "pandas", "numpy", "papermill")
RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class RecordError(ValueError):
    """A run record is missing, incomplete or malformed."""


def write_json_atomic(path: Path, obj) -> None:
    """Write JSON to ``path`` through a temp file and a rename: readers see the old file or the new one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str))
    os.replace(tmp, path)


def utcnow() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def new_run_id(tag: str = "") -> str:
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{tag}" if tag else stamp


def git_info(root: Path | None = None) -> dict:
    root = root or repo_root()

    def run(*args):
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()
        except Exception:
            return ""

    if re.fullmatch(r"[0-9a-f]{40}", os.environ.get("LLMSTUDY_GIT_SHA", "")):
        # a copy of the tree on a GPU runner: the launcher knows the commit (a copied .git may be stale)
        return {"sha": os.environ["LLMSTUDY_GIT_SHA"], "dirty": {"1": True, "0": False}.get(os.environ.get("LLMSTUDY_GIT_DIRTY", ""))}
    sha = run("rev-parse", "HEAD")
    if not re.fullmatch(r"[0-9a-f]{40}", sha or ""):
        return {"sha": None, "dirty": None}
    dirty = bool(run("status", "--porcelain", "--untracked-files=no"))
    return {"sha": sha or None, "dirty": dirty}


def package_versions(names=PACKAGES) -> dict:
    out = {}
    for n in names:
        try:
            out[n] = md.version(n)
        except md.PackageNotFoundError:
            out[n] = None
    if out.get("llmstudy") is None:  # run from a source tree (PYTHONPATH=src)
        from llmstudy import __version__

        out["llmstudy"] = __version__
    out["python"] = platform.python_version()
    return out


def gpu_info() -> dict:
    """GPU name/count/memory/driver/CUDA from NVML, falling back to torch; ``count: 0`` on a CPU machine."""
    info: dict = {"count": 0, "devices": [], "driver": None, "cuda_runtime": None}
    try:
        import torch

        info["cuda_runtime"] = torch.version.cuda
        if torch.cuda.is_available():
            for i in range(torch.cuda.device_count()):
                p = torch.cuda.get_device_properties(i)
                info["devices"].append({"index": i, "name": p.name, "torch_total_bytes": p.total_memory, "sm_count": p.multi_processor_count, "capability": f"{p.major}.{p.minor}"})
            info["count"] = len(info["devices"])
    except Exception:
        pass
    try:
        import pynvml

        pynvml.nvmlInit()
        info["driver"] = pynvml.nvmlSystemGetDriverVersion()
        info["nvml_cuda_driver_version"] = pynvml.nvmlSystemGetCudaDriverVersion()
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(h)
            mem = pynvml.nvmlDeviceGetMemoryInfo(h)
            if i < len(info["devices"]):
                info["devices"][i].update({"nvml_name": name, "nvml_total_bytes": mem.total})
            else:
                info["devices"].append({"index": i, "nvml_name": name, "nvml_total_bytes": mem.total})
        info["count"] = max(info["count"], pynvml.nvmlDeviceGetCount())
    except Exception:
        pass
    return info


def host_info() -> dict:
    return {"hostname": socket.gethostname(), "platform": platform.platform(), "cpu_count": os.cpu_count(), "user": getpass.getuser()}


@dataclass
class Record:
    path: Path
    manifest: dict

    @property
    def run_id(self) -> str:
        return self.manifest["run_id"]

    @property
    def experiment(self) -> str:
        return self.manifest["experiment"]

    def table(self, name: str = "results") -> pd.DataFrame:
        for ext, reader in ((".csv", pd.read_csv), (".parquet", pd.read_parquet)):
            f = self.path / f"{name}{ext}"
            if f.exists():
                try:
                    df = reader(f)
                except pd.errors.EmptyDataError:  # an empty table is written as a bare newline
                    df = pd.DataFrame()
                df.insert(0, "run_id", self.run_id)
                return df
        raise RecordError(f"{self.path}: no table {name!r}")

    def gpu_name(self) -> str:
        devs = self.manifest.get("gpu", {}).get("devices") or []
        return devs[0].get("nvml_name") or devs[0].get("name") if devs else "CPU"


class RunWriter:
    """Context manager that assembles a record in a temp folder and publishes it atomically on success.

    On an exception inside the block the temp folder is removed and nothing is published; pass
    ``keep_failed=True`` to publish it anyway with ``outcome: failed`` (a failed run is a result too).
    """

    def __init__(self, experiment: str, parameters: dict, run_id: str | None = None, root: Path | None = None, command: list[str] | None = None, keep_failed: bool = False):
        if not re.match(r"^[a-z0-9_]+$", experiment):
            raise RecordError(f"experiment name must be lower_snake_case, got {experiment!r}")
        self.run_id = run_id or new_run_id()
        if not RUN_ID_RE.match(self.run_id):
            raise RecordError(f"run_id {self.run_id!r} must be letters, digits, '.', '_' or '-' (max 128)")
        self.experiment = experiment
        self.parameters = parameters
        self.base = Path(root or runs_dir()) / experiment
        self.final = self.base / self.run_id
        self.command = command or sys.argv
        self.keep_failed = keep_failed
        self.extra: dict = {}
        self.outcome = "ok"

    def __enter__(self) -> RunWriter:
        if self.final.exists():
            raise RecordError(f"run record {self.final} already exists; choose another run_id")
        self.base.mkdir(parents=True, exist_ok=True)
        for stale in self.base.glob(f".tmp-{self.run_id}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        self.tmp = self.base / f".tmp-{self.run_id}-{os.getpid()}"
        self.tmp.mkdir()
        self.started = utcnow()
        return self

    @property
    def dir(self) -> Path:
        return self.tmp

    def write_table(self, df: pd.DataFrame, name: str = "results") -> Path:
        f = self.tmp / f"{name}.csv"
        df.to_csv(f, index=False)
        return f

    def write_json(self, obj, name: str) -> Path:
        f = self.tmp / name
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(json.dumps(obj, indent=1, default=str))
        return f

    def write_text(self, text: str, name: str) -> Path:
        f = self.tmp / name
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
        return f

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None and not self.keep_failed:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return False
        if exc_type is not None:
            self.outcome = "failed"
            self.extra["error"] = f"{exc_type.__name__}: {exc}"
        manifest = {
            "schema": SCHEMA,
            "experiment": self.experiment,
            "run_id": self.run_id,
            "outcome": self.outcome,
            "parameters": self.parameters,
            "git": git_info(),
            "started_utc": self.started,
            "ended_utc": utcnow(),
            "host": host_info(),
            "gpu": gpu_info(),
            "packages": package_versions(),
            "command": list(self.command),
            "files": sorted(str(p.relative_to(self.tmp)) for p in self.tmp.rglob("*") if p.is_file()),
            **self.extra,
        }
        (self.tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, default=str))
        os.replace(self.tmp, self.final)  # atomic on one filesystem
        return False


def validate_manifest(manifest: dict, where: str = "") -> dict:
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    if missing:
        raise RecordError(f"{where}: manifest lacks {', '.join(missing)}")
    if manifest["schema"] != SCHEMA:
        raise RecordError(f"{where}: manifest schema {manifest['schema']} is not {SCHEMA}")
    for f in manifest["files"]:
        if where and not (Path(where) / f).exists():
            raise RecordError(f"{where}: manifest lists {f}, which is missing")
    return manifest


def load_record(path: Path) -> Record:
    path = Path(path)
    mf = path / MANIFEST
    if not mf.is_file():
        raise RecordError(f"{path}: not a run record (no {MANIFEST})")
    try:
        manifest = json.loads(mf.read_text())
    except json.JSONDecodeError as e:
        raise RecordError(f"{path}: {MANIFEST} is not valid JSON ({e})") from e
    return Record(path, validate_manifest(manifest, str(path)))


def load_runs(experiment: str, root: Path | None = None, strict: bool = True) -> list[Record]:
    """All published records of an experiment, oldest first. Hidden temp folders are skipped.

    With ``strict`` a folder that is not a valid record raises :class:`RecordError`; otherwise it is skipped.
    """
    base = Path(root or runs_dir()) / experiment
    out = []
    if not base.is_dir():
        return out
    for d in sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            out.append(load_record(d))
        except RecordError:
            if strict:
                raise
    return sorted(out, key=lambda r: (r.manifest["started_utc"], r.run_id))


def run_model(rec: Record) -> str | None:
    """The model a record measured: its ``served_model`` (a record whose ``model`` parameter is not what it served,
    e.g. the Triton chapter's LoRA part), else its ``model`` parameter; None when the experiment has no model."""
    if isinstance(rec.manifest.get("served_model"), str):
        return rec.manifest["served_model"]
    params = rec.manifest.get("parameters") or {}
    return params.get("model") if isinstance(params, dict) else None


def run_models(rec: Record) -> list[str]:
    """Every model a record measured, by name: its ``model`` parameter (a model folder's path becomes the folder's
    name) and the ``model`` of each of its ``gpu_configs`` (the context-limits records); sorted, without repeats."""
    params = rec.manifest.get("parameters") or {}
    if isinstance(rec.manifest.get("served_model"), str):
        return [Path(rec.manifest["served_model"]).name]
    if not isinstance(params, dict):
        return []
    found = [params.get("model")]
    configs = params.get("gpu_configs")
    if isinstance(configs, dict):
        found += [c.get("model") for c in configs.values() if isinstance(c, dict)]
    return sorted({Path(str(m)).name for m in found if isinstance(m, str) and m.strip()})


def results(experiment: str, name: str = "results", root: Path | None = None, model: str | None = None) -> pd.DataFrame:
    """The named table of every record of an experiment, concatenated, with ``run_id`` and ``gpu`` columns.

    With ``model``, only the records whose ``model`` parameter names it (a fork for a new model sees none of the
    study's records until it makes its own).
    """
    frames = []
    for rec in load_runs(experiment, root):
        if model is not None and run_model(rec) != model:
            continue
        try:
            df = rec.table(name)
        except RecordError:
            continue
        df.insert(1, "gpu", rec.gpu_name())
        frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
