"""Memory probe for vLLM's KV-cache sizing: every term of the startup arithmetic, as the engine process saw it.

vLLM 0.8.3's V1 worker logs only two of the numbers its KV-cache size comes from ("Model loading took X GiB" and the
KV tokens). Its arithmetic (``vllm/v1/worker/gpu_worker.py: Worker.determine_available_memory``, lines 139-186 of the
0.8.3 wheel) is

    available = total x gpu_memory_utilization - (allocated peak of the profile run + non-torch memory)
    non-torch = (total - free) - torch allocated, measured after ``empty_cache()``

so the terms must be read inside the engine process. :func:`install` (run from a ``sitecustomize`` that
:func:`write_sitecustomize` puts first on the server's ``PYTHONPATH``) wraps the worker's and model runner's methods
when ``vllm.v1.worker.gpu_worker`` is imported, and appends one JSON line per event to the file named by
``LLMSTUDY_VLLM_PROBE``: CUDA free/total, torch allocated, reserved and allocated-peak before and after model loading,
the profile run and its stages (the multimodal encoder pass, the dummy forward, the dummy sampler run), the KV-cache
allocation and the warm-up / CUDA-graph capture, plus the value the method returned. Nothing is changed: every wrapper
only reads ``torch.cuda`` statistics (it never resets the peak or empties the cache), so vLLM's own numbers are the
ones it would have computed without the probe. :func:`terms` turns the lines into the study's memory terms.

Standard library and torch only: it runs inside the server's own interpreter (vLLM 0.8.3 with torch 2.6).
"""

from __future__ import annotations

import functools
import importlib.abc
import json
import os
import sys
import time
from pathlib import Path

ENV = "LLMSTUDY_VLLM_PROBE"
TARGET = "vllm.v1.worker.gpu_worker"  # V1 worker; its module also imports GPUModelRunner
WORKER_METHODS = ("init_device", "load_model", "determine_available_memory", "initialize_from_config", "compile_or_warm_up_model")
RUNNER_METHODS = ("profile_run", "_dummy_run", "_dummy_sampler_run", "capture_model")
# the keys :func:`terms` returns (bytes unless named otherwise), in the order a record's columns show them
TERMS = ("total", "context_before_load", "weights_allocated", "load_peak_rise", "torch_at_profile", "encoder_peak", "encoder_held",
         "forward_peak", "sampler_peak", "activation_peak", "profile_peak", "non_torch", "allocator_cached", "outside_torch",
         "available", "kv_allocated", "graphs_used", "warmup_used", "free_after_warmup", "torch_version", "cuda_version")


def _snap() -> dict:
    import torch

    if not torch.cuda.is_initialized():
        return {}
    free, total = torch.cuda.mem_get_info()
    st = torch.cuda.memory_stats()
    return {"free": free, "total": total, "allocated": st.get("allocated_bytes.all.current", 0),
            "peak": st.get("allocated_bytes.all.peak", 0), "reserved": st.get("reserved_bytes.all.current", 0),
            "inactive_split": st.get("inactive_split_bytes.all.current", 0), "alloc_retries": st.get("num_alloc_retries", 0)}


class Probe:
    """Appends events to one JSON-lines file (one ``open``/``write`` per line, so processes can share it)."""

    def __init__(self, path: str):
        self.path = path

    def emit(self, event: str, **fields) -> None:
        line = {"t": time.time(), "pid": os.getpid(), "event": event, **_snap(), **fields}
        with open(self.path, "a") as f:
            f.write(json.dumps(line, default=str) + "\n")

    def wrap(self, cls, name: str, prefix: str) -> None:
        orig = getattr(cls, name, None)
        if orig is None or getattr(orig, "_llmstudy_probe", False):
            return

        @functools.wraps(orig)
        def wrapper(*args, **kwargs):
            extra = {k: v for k, v in kwargs.items() if isinstance(v, (int, float, str, bool))}
            if len(args) > 1 and isinstance(args[1], (int, float)):
                extra["arg"] = args[1]
            self.emit(f"{prefix}.{name}.before", **extra)
            out = orig(*args, **kwargs)
            self.emit(f"{prefix}.{name}.after", returned=out if isinstance(out, (int, float)) else None, **extra)
            return out

        wrapper._llmstudy_probe = True
        setattr(cls, name, wrapper)

    def patch(self, module) -> None:
        import torch

        worker = getattr(module, "Worker", None)
        runner = getattr(module, "GPUModelRunner", None)
        for n in WORKER_METHODS:
            if worker is not None:
                self.wrap(worker, n, "worker")
        for n in RUNNER_METHODS:
            if runner is not None:
                self.wrap(runner, n, "runner")
        libs = sorted({p.split()[-1] for p in Path("/proc/self/maps").read_text().splitlines()
                       if any(s in p for s in ("libcudnn.so", "libnccl.so", "libcublas.so", "libcudart.so"))})
        self.emit("probe.installed", module=module.__name__, torch=torch.__version__, cuda=torch.version.cuda, libs=libs,
                  env={k: v for k, v in os.environ.items() if k.startswith(("VLLM_", "CUDA_", "NCCL_", "PYTORCH_"))})


class _Finder(importlib.abc.MetaPathFinder):
    """Finds ``TARGET`` through the rest of ``sys.meta_path`` and patches it right after it is executed."""

    def __init__(self, probe: Probe):
        self.probe = probe

    def find_spec(self, name, path, target=None):
        if name != TARGET:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        loader, probe = spec.loader, self.probe
        orig = loader.exec_module

        def exec_module(module):
            orig(module)
            try:
                probe.patch(module)
            except Exception as e:  # the probe must never stop a server: say so in its file instead
                probe.emit("probe.error", error=f"{type(e).__name__}: {e}")

        loader.exec_module = exec_module
        return spec


def install() -> bool:
    """Register the import hook when ``LLMSTUDY_VLLM_PROBE`` names a file; a no-op otherwise (cheap for every process)."""
    path = os.environ.get(ENV)
    if not path or any(isinstance(f, _Finder) for f in sys.meta_path):
        return False
    sys.meta_path.insert(0, _Finder(Probe(path)))
    return True


SITECUSTOMIZE = '''# written by llmstudy.serving.vllm_probe.write_sitecustomize: install the memory probe in every vLLM process
try:
    import llmstudy.serving.vllm_probe as _probe
    _probe.install()
except Exception as _e:  # never stop the interpreter
    import sys
    print(f"llmstudy probe not installed: {_e}", file=sys.stderr)
'''


def write_sitecustomize(folder: Path) -> Path:
    """A folder holding only ``sitecustomize.py`` that installs the probe; put it first on the server's PYTHONPATH
    (with ``llmstudy`` importable after it) and set ``LLMSTUDY_VLLM_PROBE`` to the JSON-lines file."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return folder


def server_env(probe_file: Path, folder: Path, pythonpath: str | None = None) -> dict:
    """Environment entries that turn the probe on for one server (the folder comes first on PYTHONPATH)."""
    src = str(Path(__file__).resolve().parents[2])  # the folder holding the llmstudy package
    rest = pythonpath if pythonpath is not None else os.environ.get("PYTHONPATH", "")
    parts = [str(write_sitecustomize(folder)), *[p for p in rest.split(os.pathsep) if p], src]
    return {ENV: str(probe_file), "PYTHONPATH": os.pathsep.join(dict.fromkeys(parts))}


# --- Reading a probe file ---------------------------------------------------------------------------------------

def read_events(path: Path) -> list[dict]:
    """The probe's events in order (a torn last line, from a killed server, is skipped)."""
    out = []
    p = Path(path)
    if not p.exists():
        return out
    for line in p.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def _first(events, name):
    return next((e for e in events if e.get("event") == name), None)


def _last(events, name):
    return next((e for e in reversed(events) if e.get("event") == name), None)


def terms(events: list[dict]) -> dict:
    """vLLM 0.8.3 V1's KV-budget terms from one engine's events (bytes), each from the statistic vLLM itself reads.

    * ``torch_at_profile``: torch-allocated bytes when the profile run starts (weights + persistent buffers);
    * ``encoder_peak`` / ``encoder_held``: the multimodal encoder pass's allocated peak above that, and its outputs
      kept in the encoder cache while the decoder dummy run executes (0 for a text model);
    * ``forward_peak`` / ``sampler_peak``: the allocated peak reached by the end of the dummy forward and of the dummy
      sampler run, above ``torch_at_profile`` (the peak is monotonic: each stage can only raise it);
    * ``profile_peak``: vLLM's ``allocated_bytes.all.peak`` (weights included);
    * ``non_torch``: ``(total - free) - allocated`` after the profile run (vLLM's own formula), split into
      ``allocator_cached`` (torch reserved - allocated: segments ``empty_cache`` could not release) and
      ``outside_torch`` (device used - torch reserved: CUDA context, library workspaces, other processes);
    * ``available``: what ``determine_available_memory`` returned; ``budget`` = total x utilization is derived by the
      caller; ``kv_allocated``: the growth of torch-allocated memory while the KV cache was created;
    * ``warmup_used``: the drop in free memory across compile/warm-up and CUDA-graph capture (outside the budget).
    Missing events give missing keys, never guesses.
    """
    out: dict = {}
    e_load_b, e_load_a = _first(events, "worker.load_model.before"), _first(events, "worker.load_model.after")
    if e_load_b and e_load_a:
        out["load_peak_rise"] = e_load_a["peak"] - e_load_b["allocated"]
        out["weights_allocated"] = e_load_a["allocated"] - e_load_b["allocated"]
        out["context_before_load"] = (e_load_b["total"] - e_load_b["free"]) - e_load_b["reserved"]
    pr_b = _first(events, "runner.profile_run.before")
    dr_b = _first(events, "runner._dummy_run.before")
    dr_a = _first(events, "runner._dummy_run.after")
    ds_a = _first(events, "runner._dummy_sampler_run.after")
    pr_a = _first(events, "runner.profile_run.after")
    dam = _first(events, "worker.determine_available_memory.after")
    if pr_b:
        base = pr_b["allocated"]
        out["torch_at_profile"] = base
        out["total"] = pr_b["total"]
        if dr_b:
            out["encoder_peak"] = dr_b["peak"] - base
            out["encoder_held"] = dr_b["allocated"] - base
        if dr_a:
            out["forward_peak"] = dr_a["peak"] - base
        if ds_a:
            out["sampler_peak"] = ds_a["peak"] - base
        if pr_a:
            out["profile_peak"] = pr_a["peak"]
            out["activation_peak"] = pr_a["peak"] - base
    if dam:
        used = dam["total"] - dam["free"]
        out["non_torch"] = used - dam["allocated"]
        out["allocator_cached"] = dam["reserved"] - dam["allocated"]
        out["outside_torch"] = used - dam["reserved"]
        out["available"] = dam.get("returned")
    kv_b, kv_a = _first(events, "worker.initialize_from_config.before"), _first(events, "worker.initialize_from_config.after")
    if kv_b and kv_a:
        out["kv_allocated"] = kv_a["allocated"] - kv_b["allocated"]
    w_b, w_a = _first(events, "worker.compile_or_warm_up_model.before"), _last(events, "worker.compile_or_warm_up_model.after")
    if w_b and w_a:
        out["warmup_used"] = w_b["free"] - w_a["free"]
        out["free_after_warmup"] = w_a["free"]
    cg_b, cg_a = _first(events, "runner.capture_model.before"), _first(events, "runner.capture_model.after")
    if cg_b and cg_a:
        out["graphs_used"] = cg_b["free"] - cg_a["free"]
    inst = _first(events, "probe.installed")
    if inst:
        out["torch_version"], out["cuda_version"] = inst.get("torch"), inst.get("cuda")
    return out
