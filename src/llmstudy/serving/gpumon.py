"""GPU utilisation and power sampled from NVML while a load point runs (Triton's own DCGM metrics read 0 on the lent
machines). Where NVML is missing (a CPU machine) the monitor records nothing and says so; it never fails a point."""

from __future__ import annotations

import threading
import time


def _nvml():
    """The NVML bindings: ``pynvml`` (nvidia-ml-py) where installed, else the copy vLLM ships
    (``vllm.third_party.pynvml``), which a serving machine has even when nvidia-ml-py is not installed."""
    try:
        import pynvml
    except ImportError:
        from vllm.third_party import pynvml
    return pynvml


class GpuMonitor:
    """``with GpuMonitor(interval_s=0.25) as mon: ...`` then ``mon.summary()`` (means and maxima over the samples) and
    ``mon.samples`` (t_s, util_pct, mem_util_pct, power_w, mem_used_gib)."""

    def __init__(self, index: int = 0, interval_s: float = 0.25):
        self.index, self.interval_s = index, interval_s
        self.samples: list[dict] = []
        self.error = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> GpuMonitor:
        try:
            pynvml = _nvml()
            pynvml.nvmlInit()
            self._nv, self._h = pynvml, pynvml.nvmlDeviceGetHandleByIndex(self.index)
        except Exception as e:  # noqa: BLE001 - no NVML: nothing sampled, the reason kept
            self.error = f"NVML unavailable: {type(e).__name__}: {e}"
            return self
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        nv, h = self._nv, self._h
        while not self._stop.is_set():
            try:
                u = nv.nvmlDeviceGetUtilizationRates(h)
                self.samples.append({"t_s": time.monotonic() - self._t0, "util_pct": float(u.gpu), "mem_util_pct": float(u.memory),
                                     "power_w": nv.nvmlDeviceGetPowerUsage(h) / 1000.0,
                                     "mem_used_gib": nv.nvmlDeviceGetMemoryInfo(h).used / 2**30})
            except Exception as e:  # noqa: BLE001
                self.error = f"NVML sample failed: {type(e).__name__}: {e}"
                return
            self._stop.wait(self.interval_s)

    def __exit__(self, *exc) -> bool:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        return False

    def summary(self) -> dict:
        """Mean and max of each sampled quantity (empty, with ``nvml_error``, where nothing was sampled)."""
        if not self.samples:
            return {"nvml_error": self.error or "no samples"}
        out = {"nvml_samples": len(self.samples)}
        for k in ("util_pct", "mem_util_pct", "power_w", "mem_used_gib"):
            v = [s[k] for s in self.samples]
            out[f"gpu_{k}_mean"], out[f"gpu_{k}_max"] = sum(v) / len(v), max(v)
        return out
