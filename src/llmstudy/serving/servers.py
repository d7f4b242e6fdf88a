"""A managed inference server (vLLM, SGLang, HF transformers): start it, wait until healthy, read its startup facts,
always stop it. The one server lifecycle of the study: every chapter that starts a server goes through it.

:class:`ManagedServer` does the process work for every engine; an engine subclass only says how its command line
is built, which environment it needs and which facts its log holds (:data:`ENGINES` maps a name to the class; a
new engine such as ``trtllm-serve`` or Triton is one more subclass). Log patterns and the failure classifier live in
:mod:`llmstudy.serving.logs`.
The server runs under a small supervisor (``python -m llmstudy.serving.servers supervise``) that leads its own process
group. Stopping sends SIGTERM to the whole group, waits, then SIGKILLs it; the supervisor also kills the group
when the client that started it disappears (even after ``kill -9``), so a sweep never leaves an orphan server
holding a GPU.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Self

from llmstudy.serving.logs import SGLANG_PATTERNS, classify_failure, parse_hfserve_log, parse_sglang_log, parse_startup_log  # noqa: F401 - re-exported

TAG_ENV = "LLMSTUDY_SERVER_TAG"  # every process of a managed server carries this in its environment


class ServerStartError(RuntimeError):
    """The server exited or did not become healthy; ``outcome`` is oom / refused / start_timeout / start_failed."""

    def __init__(self, message: str, log_tail: str = "", outcome: str = "start_failed"):
        super().__init__(message)
        self.log_tail = log_tail
        self.outcome = outcome


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on ``port`` now.

    SO_REUSEADDR as uvicorn and SGLang set it: a port whose last server just stopped keeps TIME_WAIT connections for a
    minute, which do not stop a new server from listening, so they must not make the port look taken.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def vllm_command(model: str, args: list[str], port: int, host: str = "127.0.0.1", python: str | None = None) -> list[str]:
    """The ``vllm serve`` command line (run as a module, which works where the ``vllm`` script is not on PATH)."""
    py = python or os.environ.get("LLMSTUDY_VLLM_PYTHON") or sys.executable
    return [py, "-m", "vllm.entrypoints.cli.main", "serve", str(model), "--host", host, "--port", str(port), *map(str, args)]


class ManagedServer(ABC):
    """Context manager around one OpenAI-compatible server process, whatever the engine.

    Subclasses set ``engine`` and ``python_env`` (the variable naming the engine's Python) and implement
    :meth:`build_command`; they may add environment (:meth:`engine_env`) and log facts (:meth:`parse_facts`).
    ``served_name`` is the model name clients must send (``--served-model-name`` where the engine has it).
    """

    engine = "server"
    python_env = "LLMSTUDY_SERVER_PYTHON"
    health_path = "/health"
    model_file: str | None = "config.json"  # what the model folder must hold (None: any folder, e.g. a Triton model repository)

    def __init__(self, model: str, args: list[str] | tuple = (), port: int | None = None, env: dict | None = None, log_path: Path | None = None, start_timeout_s: float = 900, host: str = "127.0.0.1", python: str | None = None, stop_grace_s: float = 30, served_name: str | None = None):
        if not Path(model).is_dir():
            raise FileNotFoundError(f"model directory {model} does not exist (a model is a folder with {self.model_file or 'the engine model repository'})")
        if self.model_file and not (Path(model) / self.model_file).is_file():
            raise FileNotFoundError(f"{model} has no {self.model_file}")
        if start_timeout_s <= 0:
            raise ValueError(f"start_timeout_s must be > 0, got {start_timeout_s}")
        self.model, self.args, self.host = str(model), [str(a) for a in args], host
        self.served_name = served_name
        self.port = port or free_port(host)
        if not port_free(self.port, host):
            raise ServerStartError(f"port {self.port} on {host} is already in use; stop what holds it or pass another port", outcome="refused")
        self.python = python or os.environ.get(self.python_env) or sys.executable
        base = {**os.environ, **(env or {})}
        self.env = {**base, **self.engine_env(base), TAG_ENV: uuid.uuid4().hex, "PYTHONUNBUFFERED": "1"}
        self.log_path = Path(log_path) if log_path else Path(os.environ.get("TMPDIR", "/tmp")) / f"{self.engine}-{self.port}-{os.getpid()}.log"
        self.start_timeout_s, self.stop_grace_s = start_timeout_s, stop_grace_s
        self.command = self.build_command()
        self.proc: subprocess.Popen | None = None
        self.facts: dict = {}
        self.start_s: float | None = None

    @abstractmethod
    def build_command(self) -> list[str]:
        """The engine's server command line (argv)."""

    def engine_env(self, env: dict) -> dict:
        """Variables the engine's process needs on top of ``env`` (the caller's environment)."""
        return {}

    def parse_facts(self, text: str) -> dict:
        """Startup facts from the server log (capacity, memory, kernels); missing ones are absent, never guessed."""
        return {}

    def versions(self, packages: tuple[str, ...] = ()) -> dict:
        """Package versions as the server's own Python and environment see them (a server may run from another
        site folder than the client), without starting it."""
        names = list(packages or ENGINE_PACKAGES.get(self.engine, ()))
        code = "import importlib.metadata as m, json, sys\nout = {}\nfor n in sys.argv[1:]:\n    try: out[n] = m.version(n)\n    except m.PackageNotFoundError: out[n] = None\nprint(json.dumps(out))"
        try:
            p = subprocess.run([self.python, "-c", code, *names], check=False, capture_output=True, text=True, env=self.env, timeout=120)
            return json.loads(p.stdout.strip().splitlines()[-1])
        except (OSError, subprocess.TimeoutExpired, ValueError, IndexError):
            return {n: None for n in names}

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def tag(self) -> str:
        return self.env[TAG_ENV]

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, n: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-n:])

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.base_url + self.health_path, timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def start(self) -> Self:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        sup = [sys.executable, "-m", "llmstudy.serving.servers", "supervise", str(os.getpid()), str(self.stop_grace_s), "--", *self.command]
        t0 = time.monotonic()
        with open(self.log_path, "w") as log:
            log.write("$ " + " ".join(self.command) + "\n")
            log.flush()
            self.proc = subprocess.Popen(sup, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env, start_new_session=True)
        what = f"{self.engine} server"
        try:
            while True:
                if self.proc.poll() is not None:
                    tail = self.log_tail()
                    raise ServerStartError(f"{what} exited with code {self.proc.returncode} before it was healthy", tail, classify_failure(self.log_text()))
                if self.healthy():
                    break
                if time.monotonic() - t0 > self.start_timeout_s:
                    raise ServerStartError(f"{what} was not healthy within {self.start_timeout_s:.0f} s", self.log_tail(), "start_timeout")
                time.sleep(1)
        except BaseException:
            self.stop()
            raise
        self.start_s = round(time.monotonic() - t0, 1)
        self.facts = self.parse_facts(self.log_text())
        return self

    def stop(self) -> int | None:
        """SIGTERM the server's process group, wait ``stop_grace_s``, then SIGKILL what is left. Idempotent."""
        if self.proc is None:
            return None
        pgid = self.proc.pid
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(self.stop_grace_s + 5)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(pgid, signal.SIGKILL)  # anything the supervisor did not reap
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        return self.proc.returncode

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> bool:
        self.stop()
        return False


class VLLMServer(ManagedServer):
    """``vllm serve``.

    >>> with VLLMServer("data/models/x", ["--max-num-seqs", "16"], port=8000, log_path=Path("server.log")) as srv:
    ...     srv.base_url, srv.facts["kv_cache_tokens"]
    """

    engine = "vllm"
    python_env = "LLMSTUDY_VLLM_PYTHON"

    def build_command(self) -> list[str]:
        extra = ["--served-model-name", self.served_name] if self.served_name else []
        return vllm_command(self.model, self.args + extra, self.port, self.host, self.python)

    def parse_facts(self, text: str) -> dict:
        return parse_startup_log(text)


class SGLangServer(ManagedServer):
    """``python -m sglang.launch_server``. ``$LLMSTUDY_SGLANG_SITE`` (a folder of SGLang's own pinned packages)
    is put first on the server's PYTHONPATH only, so SGLang's pins never leak into vLLM's environment."""

    engine = "sglang"
    python_env = "LLMSTUDY_SGLANG_PYTHON"

    def build_command(self) -> list[str]:
        extra = ["--served-model-name", self.served_name] if self.served_name else []
        return [self.python, "-m", "sglang.launch_server", "--model-path", self.model, "--host", self.host, "--port", str(self.port), *self.args, *extra]

    def engine_env(self, env: dict) -> dict:
        site = env.get("LLMSTUDY_SGLANG_SITE")
        if not site:
            return {}
        return {"PYTHONPATH": os.pathsep.join(p for p in (site, env.get("PYTHONPATH", "")) if p)}

    def parse_facts(self, text: str) -> dict:
        return parse_sglang_log(text)


class TransformersServer(ManagedServer):
    """``transformers serve`` (continuous batching) through ``llmstudy.serving.hfserve``, which adds what a benchmark needs
    and the CLI lacks: random weights built from the config, and ``ignore_eos`` on ``/v1/completions``. The server
    is pinned to the model folder, so clients send the folder as the model name."""

    engine = "transformers"
    python_env = "LLMSTUDY_HF_PYTHON"

    def __init__(self, model: str, *a, served_name: str | None = None, **kw):
        super().__init__(model, *a, served_name=str(model), **kw)

    def build_command(self) -> list[str]:
        return [self.python, "-m", "llmstudy.serving.hfserve", self.model, "--host", self.host, "--port", str(self.port), *self.args]

    def engine_env(self, env: dict) -> dict:
        src = str(Path(__file__).resolve().parents[2])  # the launcher lives in this package
        return {"PYTHONPATH": os.pathsep.join(p for p in (src, env.get("PYTHONPATH", "")) if p)}

    def parse_facts(self, text: str) -> dict:
        return parse_hfserve_log(text)


class TrtllmServer(ManagedServer):
    """``trtllm-serve serve MODEL`` (TensorRT-LLM's OpenAI-compatible server, in the NGC TensorRT-LLM container).
    ``$LLMSTUDY_TRTLLM_SERVE`` names the launcher when it is not ``trtllm-serve`` on PATH. No log facts are parsed yet:
    its startup lines have not been recorded by this study, and a fact is never guessed."""

    engine = "trtllm"
    python_env = "LLMSTUDY_TRTLLM_PYTHON"

    def build_command(self) -> list[str]:
        exe = self.env.get("LLMSTUDY_TRTLLM_SERVE") or "trtllm-serve"
        return [exe, "serve", self.model, "--host", self.host, "--port", str(self.port), *self.args]


class TritonServer(ManagedServer):
    """``tritonserver --model-repository=MODEL`` (one process; Triton's multi-GPU launcher script exits at once and
    would look like a dead server to the supervisor). ``model`` is a model repository; healthy = ``/v2/health/ready``.
    ``$LLMSTUDY_TRITONSERVER`` names the binary when it is not ``tritonserver`` on PATH."""

    engine = "triton"
    python_env = "LLMSTUDY_TRITON_PYTHON"
    health_path = "/v2/health/ready"
    model_file = None

    def build_command(self) -> list[str]:
        exe = self.env.get("LLMSTUDY_TRITONSERVER") or "tritonserver"
        return [exe, f"--model-repository={self.model}", f"--http-address={self.host}", f"--http-port={self.port}", *self.args]


ENGINES: dict[str, type[ManagedServer]] = {"vllm": VLLMServer, "sglang": SGLangServer, "transformers": TransformersServer, "trtllm": TrtllmServer, "triton": TritonServer}
ENGINE_PACKAGES = {
    "vllm": ("vllm", "torch", "transformers", "tokenizers"),
    "sglang": ("sglang", "sglang-kernel", "torch", "transformers", "tokenizers", "flashinfer-python"),
    "transformers": ("transformers", "torch", "tokenizers", "fastapi", "uvicorn"),
    "trtllm": ("tensorrt_llm", "torch", "transformers"),
    "triton": ("tritonclient",),
}


def server_class(engine: str) -> type[ManagedServer]:
    """The managed-server class of an engine name; a clear error for an unknown one."""
    try:
        return ENGINES[engine]
    except KeyError:
        raise ValueError(f"unknown engine {engine!r}; known: {sorted(ENGINES)}") from None


def tagged_pids(tag: str) -> list[int]:
    """PIDs of live processes whose environment carries ``LLMSTUDY_SERVER_TAG=tag`` (to prove nothing is left)."""
    needle = f"{TAG_ENV}={tag}".encode()
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            if needle in (d / "environ").read_bytes().split(b"\0"):
                stat = (d / "stat").read_text()
                if stat.rsplit(")", 1)[1].split()[0] != "Z":  # a zombie holds nothing
                    out.append(int(d.name))
        except OSError:
            continue
    return out


def _supervise(parent: int, grace: float, cmd: list[str]) -> int:
    """Run ``cmd`` in this process group; stop the group when asked (SIGTERM/SIGINT) or when ``parent`` is gone."""
    child = subprocess.Popen(cmd)
    stopping = {"at": None}

    def on_signal(signum, frame):
        if stopping["at"] is None:
            stopping["at"] = time.monotonic()
            try:
                child.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while True:
        try:
            child.wait(timeout=0.5)
            break
        except subprocess.TimeoutExpired:
            pass
        if stopping["at"] is None and os.getppid() != parent:  # the client died without stopping us
            print(f"[llmstudy supervisor] client {parent} is gone; stopping the server", flush=True)
            on_signal(signal.SIGTERM, None)
        if stopping["at"] is not None and time.monotonic() - stopping["at"] > grace:
            print(f"[llmstudy supervisor] server did not stop within {grace:.0f} s; SIGKILL", flush=True)
            break
    # take the rest of the group with us (vLLM's engine-core and worker processes)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        os.killpg(os.getpgid(0), signal.SIGTERM)
        time.sleep(min(grace, 5) if child.poll() is None else 0.5)
        for p in _group_members():
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
    except ProcessLookupError:
        pass
    return child.poll() if child.poll() is not None else -9


def _group_members() -> list[int]:
    me, pg = os.getpid(), os.getpgid(0)
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != me:
            try:
                if os.getpgid(int(d.name)) == pg:
                    out.append(int(d.name))
            except OSError:
                pass
    return out


if __name__ == "__main__":
    if len(sys.argv) > 4 and sys.argv[1] == "supervise" and sys.argv[4] == "--":
        sys.exit(_supervise(int(sys.argv[2]), float(sys.argv[3]), sys.argv[5:]))
    sys.exit("usage: python -m llmstudy.serving.servers supervise PARENT_PID GRACE_S -- COMMAND...")
