"""The vLLM memory probe: installed through sitecustomize in a fresh interpreter, it wraps the worker's methods without
changing what they return, and its events turn into vLLM 0.8.3's KV-budget terms exactly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from llmstudy.serving import vllm_probe as P

GiB = 2**30
FAKE_WORKER = '''
class GPUModelRunner:
    def profile_run(self):
        self._dummy_run(8192)
        self._dummy_sampler_run(None)
    def _dummy_run(self, num_tokens):
        return num_tokens
    def _dummy_sampler_run(self, hidden_states):
        return None
    def capture_model(self):
        pass

class Worker:
    def __init__(self):
        self.model_runner = GPUModelRunner()
    def init_device(self):
        pass
    def load_model(self):
        pass
    def determine_available_memory(self):
        self.model_runner.profile_run()
        return 12345
    def initialize_from_config(self, cfg):
        pass
    def compile_or_warm_up_model(self):
        pass
'''


def _fake_vllm(root: Path) -> Path:
    pkg = root / "vllm" / "v1" / "worker"
    pkg.mkdir(parents=True)
    for d in (root / "vllm", root / "vllm" / "v1", pkg):
        (d / "__init__.py").write_text("")
    (pkg / "gpu_worker.py").write_text(FAKE_WORKER)
    return root


def test_probe_wraps_the_worker_in_a_fresh_interpreter(tmp_path):
    fake = _fake_vllm(tmp_path / "fake")
    out = tmp_path / "probe.jsonl"
    env = {**os.environ, **P.server_env(out, tmp_path / "site", pythonpath=str(fake))}
    code = textwrap.dedent("""
        from vllm.v1.worker.gpu_worker import Worker
        w = Worker(); w.init_device(); w.load_model()
        print(w.determine_available_memory()); w.initialize_from_config({}); w.compile_or_warm_up_model()
    """)
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "12345"  # the wrapped method still returns what vLLM's returns
    events = [e["event"] for e in P.read_events(out)]
    assert events[0] == "probe.installed"
    assert events[1:] == [
        "worker.init_device.before", "worker.init_device.after", "worker.load_model.before", "worker.load_model.after",
        "worker.determine_available_memory.before", "runner.profile_run.before", "runner._dummy_run.before",
        "runner._dummy_run.after", "runner._dummy_sampler_run.before", "runner._dummy_sampler_run.after",
        "runner.profile_run.after", "worker.determine_available_memory.after", "worker.initialize_from_config.before",
        "worker.initialize_from_config.after", "worker.compile_or_warm_up_model.before", "worker.compile_or_warm_up_model.after"]
    ev = P.read_events(out)
    assert next(e for e in ev if e["event"] == "runner._dummy_run.before")["arg"] == 8192
    assert next(e for e in ev if e["event"] == "worker.determine_available_memory.after")["returned"] == 12345


def test_probe_is_off_without_its_variable(tmp_path):
    fake = _fake_vllm(tmp_path / "fake")
    env = {**os.environ, **P.server_env(tmp_path / "p.jsonl", tmp_path / "site", pythonpath=str(fake))}
    env.pop(P.ENV)
    code = "import vllm.v1.worker.gpu_worker as g; print(hasattr(g.Worker.load_model, '_llmstudy_probe'))"
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "False"
    assert not (tmp_path / "p.jsonl").exists()


def _ev(event, free, allocated, peak, reserved, total=80 * GiB, **kw):
    return {"event": event, "free": free, "total": total, "allocated": allocated, "peak": peak, "reserved": reserved, **kw}


def test_terms_follow_vllm_083_arithmetic(tmp_path):
    """A hand-made engine: 0.5 GiB context, 50 GiB weights, encoder 1 GiB peak (0.1 GiB kept), forward to 2 GiB,
    sampler to 5 GiB, 0.25 GiB the allocator could not release; vLLM's non-torch = used - allocated."""
    ev = [
        _ev("worker.load_model.before", 79.5 * GiB, 0, 0, 0),
        _ev("worker.load_model.after", 29 * GiB, 50 * GiB, 50.5 * GiB, 50.5 * GiB),
        _ev("runner.profile_run.before", 29.5 * GiB, 50 * GiB, 50 * GiB, 50 * GiB),
        _ev("runner._dummy_run.before", 28 * GiB, 50.1 * GiB, 51 * GiB, 51.5 * GiB),
        _ev("runner._dummy_run.after", 27 * GiB, 50.1 * GiB, 52 * GiB, 52.5 * GiB),
        _ev("runner._dummy_sampler_run.after", 24 * GiB, 50.1 * GiB, 55 * GiB, 55.5 * GiB),
        _ev("runner.profile_run.after", 24 * GiB, 50 * GiB, 55 * GiB, 55.5 * GiB),
        _ev("worker.determine_available_memory.after", 29.25 * GiB, 50 * GiB, 55 * GiB, 50.25 * GiB, returned=int(8 * GiB)),
        _ev("worker.initialize_from_config.before", 29.25 * GiB, 50 * GiB, 55 * GiB, 50.25 * GiB),
        _ev("worker.initialize_from_config.after", 21.25 * GiB, 58 * GiB, 58 * GiB, 58.25 * GiB),
        _ev("worker.compile_or_warm_up_model.before", 21.25 * GiB, 58 * GiB, 58 * GiB, 58.25 * GiB),
        _ev("worker.compile_or_warm_up_model.after", 20 * GiB, 58 * GiB, 59 * GiB, 59.5 * GiB),
    ]
    f = tmp_path / "p.jsonl"
    f.write_text("\n".join(json.dumps(e) for e in ev) + "\n{\"torn")  # a killed server leaves a torn last line
    t = P.terms(P.read_events(f))
    assert t["context_before_load"] == 0.5 * GiB
    assert t["weights_allocated"] == 50 * GiB and t["torch_at_profile"] == 50 * GiB
    assert t["encoder_peak"] == 1 * GiB and abs(t["encoder_held"] - 0.1 * GiB) < 1
    assert t["forward_peak"] == 2 * GiB and t["sampler_peak"] == 5 * GiB and t["activation_peak"] == 5 * GiB
    assert t["profile_peak"] == 55 * GiB
    assert t["non_torch"] == 0.75 * GiB and t["allocator_cached"] == 0.25 * GiB and t["outside_torch"] == 0.5 * GiB
    # vLLM: available = total x util - (peak + non-torch); with util 0.8: 64 - 55.75 = 8.25 GiB (returned is what vLLM said)
    assert t["available"] == int(8 * GiB)
    assert t["kv_allocated"] == 8 * GiB and t["warmup_used"] == 1.25 * GiB
    assert set(t) <= set(P.TERMS)
    assert P.terms([]) == {}
