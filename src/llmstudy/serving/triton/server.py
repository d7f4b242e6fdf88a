"""tritonserver from the unpacked PyTriton wheel, under the study's one managed-server lifecycle.

:class:`WheelTritonServer` is :class:`llmstudy.serving.servers.TritonServer` (supervisor process group, health wait on
``/v2/health/ready``, SIGTERM then SIGKILL of the whole group on stop, stop when the client dies, log captured) with
the wheel's binary, its backends folder, ``LD_LIBRARY_PATH`` (the wheel's libraries and the Python's ``libpython``)
and three ports (HTTP, gRPC, metrics) on 127.0.0.1 by default. The Python backend's stub processes are children of
tritonserver in the same process group and carry the same tag, so stopping takes them too.

>>> with WheelTritonServer(repo, log_path=Path("triton.log")) as srv:
...     srv.base_url, srv.grpc_url, srv.metrics_url
"""

from __future__ import annotations

import json
import urllib.request

from llmstudy.serving.servers import ServerStartError, TritonServer, free_port, port_free
from llmstudy.serving.triton.install import TritonInstall


class WheelTritonServer(TritonServer):
    """``tritonserver`` 2.51.0 from ``.venv-triton/server`` (see :mod:`llmstudy.serving.triton.install`).

    ``repository``: a model repository (:func:`llmstudy.serving.triton.repository.write_repository`).
    ``python``: the interpreter whose stub and ``libpython`` the Python backend uses (default: this one).
    ``gpu_metrics``: False passes ``--allow-gpu-metrics=false`` (no DCGM warnings on a machine without a GPU).
    """

    engine = "triton"

    def __init__(self, repository, args=(), install: TritonInstall | None = None, grpc_port: int | None = None,
                 metrics_port: int | None = None, gpu_metrics: bool = True, exit_timeout_s: int = 10, **kw):
        self.install = install or TritonInstall.default()
        missing = self.install.missing()
        if missing:
            raise FileNotFoundError("Triton is not installed: " + "; ".join(missing))
        host = kw.get("host", "127.0.0.1")
        self.grpc_port = grpc_port or free_port(host)
        self.metrics_port = metrics_port or free_port(host)
        for what, port in (("gRPC", self.grpc_port), ("metrics", self.metrics_port)):
            if not port_free(port, host):
                raise ServerStartError(f"{what} port {port} on {host} is already in use", outcome="refused")
        self.gpu_metrics, self.exit_timeout_s = gpu_metrics, exit_timeout_s
        kw.setdefault("start_timeout_s", 300)
        super().__init__(str(repository), list(args), **kw)

    def engine_env(self, env: dict) -> dict:
        return self.install.server_env(self.python)

    def build_command(self) -> list[str]:
        cmd = [str(self.install.tritonserver), f"--model-repository={self.model}",
               f"--backend-directory={self.install.backends}",
               f"--http-address={self.host}", f"--http-port={self.port}",
               f"--grpc-address={self.host}", f"--grpc-port={self.grpc_port}",
               f"--metrics-address={self.host}", f"--metrics-port={self.metrics_port}",
               f"--exit-timeout-secs={self.exit_timeout_s}"]
        if not self.gpu_metrics:
            cmd.append("--allow-gpu-metrics=false")
        return cmd + self.args

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    def server_metadata(self) -> dict:
        """``/v2``: name, version (2.51.0 for this wheel), extensions."""
        with urllib.request.urlopen(self.base_url + "/v2", timeout=5) as r:
            return json.loads(r.read())

    def metrics_text(self) -> str:
        """Triton's Prometheus metrics (queue and compute times per model, request counts)."""
        with urllib.request.urlopen(self.metrics_url, timeout=5) as r:
            return r.read().decode()

    def parse_facts(self, text: str) -> dict:
        """Model load lines from the log (``successfully loaded 'engine' version 1``); nothing guessed."""
        import re

        loaded = re.findall(r"successfully loaded '([^']+)'", text)
        return {"models_loaded": sorted(set(loaded))} if loaded else {}


# --- Triton's own metrics: queue and compute time per model ---------------------------------------------------------

_COUNTERS = {  # Prometheus counter -> column of metrics_per_request (cumulative µs counters become ms per request)
    "nv_inference_request_success": "requests",
    "nv_inference_request_failure": "failures",
    "nv_inference_exec_count": "executions",
    "nv_inference_count": "inferences",
    "nv_inference_request_duration_us": "request_ms",
    "nv_inference_queue_duration_us": "queue_ms",
    "nv_inference_compute_input_duration_us": "compute_input_ms",
    "nv_inference_compute_infer_duration_us": "compute_infer_ms",
    "nv_inference_compute_output_duration_us": "compute_output_ms",
}


def parse_metrics(text: str) -> dict[tuple[str, str], float]:
    """{(counter, model): value} of Triton's per-model inference counters (failure reasons summed)."""
    import re

    out: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        m = re.match(r'^(nv_inference_\w+)\{([^}]*)\}\s+(\S+)$', line)
        if not m or m.group(1) not in _COUNTERS:
            continue
        model = re.search(r'model="([^"]*)"', m.group(2))
        if model:
            key = (m.group(1), model.group(1))
            out[key] = out.get(key, 0.0) + float(m.group(3))
    return out


def metrics_per_request(before: dict, after: dict):
    """Per model, between two :func:`parse_metrics` snapshots: requests, failures, executions, inferences, and the
    mean request / queue / compute times per successful request (ms). For a decoupled model whose ``execute`` only
    schedules work (the vLLM engine), compute_infer is the scheduling time, not the generation: its responses leave
    after ``execute`` returns."""
    import pandas as pd

    models = sorted({m for _, m in after})
    rows = []
    for model in models:
        d = {col: after.get((c, model), 0.0) - before.get((c, model), 0.0) for c, col in _COUNTERS.items()}
        n = d["requests"]
        row = {"model": model, **{k: int(d[k]) for k in ("requests", "failures", "executions", "inferences")}}
        for k in ("request_ms", "queue_ms", "compute_input_ms", "compute_infer_ms", "compute_output_ms"):
            row[k] = d[k] / 1e3 / n if n else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)
