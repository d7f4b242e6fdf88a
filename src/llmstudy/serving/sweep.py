"""Serving sweeps (vLLM, and SGLang / HF transformers for the engine comparison): server settings x workloads,
resumable, every point a recorded outcome.

A sweep is a list of points (server settings + workload). Points that share server settings run against one
server; the server restarts only when a setting changes. Each finished point is saved atomically in the sweep's
work folder, so an interrupted sweep resumes where it stopped; a server that cannot start (OOM, a refused
setting, a timeout) and a point that times out are recorded as that point's outcome and the sweep goes on.

Time budgets and resuming use :mod:`llmstudy.serving.budget`; model folders :mod:`llmstudy.serving.model_dir`; the
decode roofline lives in :mod:`llmstudy.serving.roofline` (its names are re-exported here for older callers).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shutil
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from llmstudy.core import models as M
from llmstudy.core.params import Param, positive
from llmstudy.core.records import RunWriter, new_run_id, runs_dir, utcnow, write_json_atomic
from llmstudy.serving import loadgen
from llmstudy.serving.budget import Budget, Progress
from llmstudy.serving.loadgen import Workload
from llmstudy.serving.logs import classify_failure
from llmstudy.serving.model_dir import has_weights, prepare_model_dir  # noqa: F401 - re-exported (the one model-folder builder)
from llmstudy.serving.roofline import HBM_BANDWIDTH, hbm_bandwidth, kv_bytes_per_token  # noqa: F401 - re-exported
from llmstudy.serving.servers import ENGINES, ManagedServer, ServerStartError, server_class

EXPERIMENTS = ("batch_size_sweep", "length_sweep", "vllm_features", "engine_comparison")
CONCURRENCY = (1, 2, 4, 8, 16, 32, 64, 128, 256)
SWEEP_ENGINES = ("vllm", "sglang", "transformers")  # engines ServerSettings has flags for


def _positive_or_none(v) -> str | None:
    return None if v is None or v > 0 else "must be > 0 or None"


# How a sweep runs on this machine (not what it measures): the CLI's flags and run_sweep's defaults come from here.
RUN_OPTIONS: dict[str, Param] = {
    "port": Param((int, type(None)), None, "the servers' port (None: a free one)", check=_positive_or_none),
    "start_timeout_s": Param((float, int), 900, "seconds a server may take to become healthy", check=positive),
    "point_timeout_s": Param((float, int), 600, "seconds one point's load may take", check=positive),
    "max_servers": Param((int, type(None)), None, "serve at most this many server settings in this call (resume with the same run id)", check=_positive_or_none),
}


@dataclass(frozen=True)
class ServerSettings:
    """The server settings a sweep varies; equal settings share one server. ``engine`` picks the server (vLLM by
    default); each engine gets its own flags for the same setting (:meth:`args`), and a setting an engine has no
    flag for is refused when the settings are made, before any server starts."""

    max_num_seqs: int | None = None
    max_model_len: int | None = None
    dtype: str = "bfloat16"
    load_format: str = "dummy"
    gpu_memory_utilization: float | None = None
    quantization: str | None = None
    enforce_eager: bool = False
    prefix_caching: bool = False  # off: repeated prompts (warm-ups, equal seeds) would make TTFT a cache hit
    extra: tuple[str, ...] = ()
    name: str = ""  # when set, the server's label; equal flags under two names are two servers (a restart)
    model: str = ""  # a model for this server alone (a name under data/models, or a folder with real weights)
    engine: str = "vllm"

    def __post_init__(self):
        if self.name and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", self.name):
            raise ValueError(f"server name must be letters, digits, '.', '_' or '-', got {self.name!r}")
        for k in ("max_num_seqs", "max_model_len"):
            v = getattr(self, k)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v <= 0):
                raise ValueError(f"{k} must be a positive integer, got {v!r}")
        if self.gpu_memory_utilization is not None and not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}")
        if self.engine in ENGINES and self.engine not in SWEEP_ENGINES:
            raise ValueError(f"engine {self.engine!r} has a managed server but no sweep settings yet; sweeps run on {sorted(SWEEP_ENGINES)}")
        if self.engine not in SWEEP_ENGINES:
            raise ValueError(f"unknown engine {self.engine!r}; known: {sorted(SWEEP_ENGINES)}")
        self.args()  # a setting the engine cannot express fails here

    def args(self) -> list[str]:
        """The engine's command-line flags for these settings."""
        if self.engine == "sglang":
            return self._sglang_args()
        if self.engine == "transformers":
            return self._transformers_args()
        a = ["--dtype", self.dtype, "--load-format", self.load_format]
        for flag, v in (("--max-num-seqs", self.max_num_seqs), ("--max-model-len", self.max_model_len), ("--gpu-memory-utilization", self.gpu_memory_utilization), ("--quantization", self.quantization)):
            if v is not None:
                a += [flag, str(v)]
        if self.enforce_eager:
            a.append("--enforce-eager")
        a.append("--enable-prefix-caching" if self.prefix_caching else "--no-enable-prefix-caching")
        return a + list(self.extra)

    def _sglang_args(self) -> list[str]:
        """SGLang's names: max_num_seqs = --max-running-requests, max_model_len = --context-length,
        gpu_memory_utilization = --mem-fraction-static (weights + KV pool), enforce_eager = --disable-cuda-graph,
        no prefix caching = --disable-radix-cache."""
        a = ["--dtype", self.dtype, "--load-format", self.load_format]
        for flag, v in (("--max-running-requests", self.max_num_seqs), ("--context-length", self.max_model_len), ("--mem-fraction-static", self.gpu_memory_utilization), ("--quantization", self.quantization)):
            if v is not None:
                a += [flag, str(v)]
        if self.enforce_eager:
            a.append("--disable-cuda-graph")
        if not self.prefix_caching:
            a.append("--disable-radix-cache")
        return a + list(self.extra)

    def _transformers_args(self) -> list[str]:
        """``transformers serve`` with continuous batching: random weights for the dummy load format, the dtype, the
        KV-cache memory share, CUDA graphs off when eager; it has no batch cap, length cap, GPTQ or prefix cache."""
        unsupported = {"max_num_seqs": self.max_num_seqs, "max_model_len": self.max_model_len, "quantization": self.quantization, "prefix_caching": self.prefix_caching or None}
        bad = sorted(k for k, v in unsupported.items() if v is not None)
        if bad:
            raise ValueError(f"transformers serve has no setting for {bad}; leave them unset for engine 'transformers'")
        if self.load_format not in ("dummy", "auto"):
            raise ValueError(f"engine 'transformers' loads 'auto' (the checkpoint) or 'dummy' (random weights), not {self.load_format!r}")
        a = ["--continuous-batching", "--dtype", self.dtype] + (["--random-weights", "0"] if self.load_format == "dummy" else [])
        if self.gpu_memory_utilization is not None:
            a += ["--cb-max-memory-percent", str(self.gpu_memory_utilization)]
        if self.enforce_eager:
            a.append("--no-cb-use-cuda-graph")
        return a + list(self.extra)

    def label(self) -> str:
        if self.name:
            return self.name
        if self.engine == "transformers":
            parts = ["transformers", self.dtype]
            if self.gpu_memory_utilization is not None:
                parts.append(f"mem{round(100 * self.gpu_memory_utilization)}")  # no dot: log names are label.N.log
            if self.enforce_eager:
                parts.append("eager")
            if self.extra:
                parts.append("x" + _digest(self.extra))
            return "-".join(parts)
        parts = ([] if self.engine == "vllm" else [self.engine]) + [f"seqs{self.max_num_seqs or 'default'}", f"len{self.max_model_len or 'default'}"]
        if self.quantization:
            parts.append(self.quantization)
        if self.enforce_eager:
            parts.append("eager")
        if self.prefix_caching:
            parts.append("prefix")
        if self.extra:  # a stable digest: point ids must be equal in the call that resumes a sweep
            parts.append("x" + _digest(self.extra))
        return "-".join(parts)


def _digest(extra: tuple[str, ...]) -> str:
    """A short stable digest of extra flags (Python's hash() of strings changes between processes, so a label built
    from it would not match when a sweep resumes in a new process)."""
    return hashlib.sha256("\0".join(extra).encode()).hexdigest()[:6]


@dataclass(frozen=True)
class Point:
    sweep: str
    server: ServerSettings
    workload: Workload
    repeat: int = 0  # the same workload again on the same server (run-to-run spread)

    @property
    def point_id(self) -> str:
        return f"{self.sweep}-{self.server.label()}-{self.workload.tag}" + (f"-r{self.repeat}" if self.repeat else "")

    def refusal(self) -> str | None:
        """A point vLLM would reject outright: a request longer than the server's max_model_len."""
        w, L = self.workload, self.server.max_model_len
        if L is not None and w.input_len + w.output_len > L:
            return f"input {w.input_len} + output {w.output_len} tokens exceed max_model_len {L}"
        return None


def warmups_for(concurrency: int, max_num_seqs: int | None) -> int:
    """Warm-up requests before measuring: enough to exercise the batch sizes the point will run (max 32)."""
    return max(2, min(concurrency, max_num_seqs or concurrency, 32))


def plan_batch_size(max_num_seqs=(4, 16, 64, 256), concurrency=CONCURRENCY, input_len=512, output_len=256, max_model_len=4096, **server) -> list[Point]:
    """Sweep 1 (the article's max_batch_size): vLLM ``--max-num-seqs`` x concurrency at fixed lengths."""
    pts = []
    for s in max_num_seqs:
        srv = ServerSettings(max_num_seqs=s, max_model_len=max_model_len, **server)
        for c in concurrency:
            pts.append(Point("max_num_seqs", srv, Workload(input_len, output_len, c, loadgen.prompts_for(c, s), warmups_for(c, s), seed=len(pts))))
    return pts


def plan_max_model_len(max_model_lens=(2048, 4096, 8192, 32768), concurrency=(1, 16, 64), input_len=512, output_len=256, max_num_seqs=256, **server) -> list[Point]:
    """Sweep 2 (the article's max_input_len / max_seq_len): ``--max-model-len`` at a fixed workload."""
    pts = []
    for L in max_model_lens:
        srv = ServerSettings(max_num_seqs=max_num_seqs, max_model_len=L, **server)
        pts += [Point("max_model_len", srv, Workload(input_len, output_len, c, loadgen.prompts_for(c, max_num_seqs), warmups_for(c, max_num_seqs), seed=len(pts) + i)) for i, c in enumerate(concurrency)]
    return pts


def plan_io_grid(input_lens=(128, 512, 2048, 8192), output_lens=(128, 256, 1024), concurrency=(1, 16), max_model_len=16384, max_num_seqs=256, **server) -> list[Point]:
    """Sweep 3: input length x output length at a few concurrencies, one server."""
    srv = ServerSettings(max_num_seqs=max_num_seqs, max_model_len=max_model_len, **server)
    grid = [(c, i, o) for c in concurrency for i in input_lens for o in output_lens]
    return [Point("io", srv, Workload(i, o, c, loadgen.prompts_for(c, max_num_seqs, min_prompts=4 if c == 1 else 8), warmups_for(c, max_num_seqs), seed=k)) for k, (c, i, o) in enumerate(grid)]


class SweepIncomplete(RuntimeError):
    """The sweep stopped at its time budget; finished points are kept, rerun with the same run_id to resume."""


def _on_sigterm(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def run_sweep(
    experiment: str,
    model: str,
    points: list[Point],
    run_id: str = "",
    port: int | None = RUN_OPTIONS["port"].default,
    start_timeout_s: float = RUN_OPTIONS["start_timeout_s"].default,
    point_timeout_s: float = RUN_OPTIONS["point_timeout_s"].default,
    python: str | None = None,
    server_env: dict | None = None,
    parameters: dict | None = None,
    root=None,
    workdir: Path | None = None,
    budget_s: float | None = None,
    max_servers: int | None = RUN_OPTIONS["max_servers"].default,
    server_estimate_s=None,
) -> Path:
    """Run every point (resuming a sweep with the same ``run_id``) and publish one run record; returns its path.

    With ``budget_s`` no new server or point starts after that many seconds: :class:`SweepIncomplete` is raised
    and a later call with the same ``run_id`` resumes (how a sweep spans several time-limited GPU calls). The
    record's ``sweep_wall_s`` is the sum of the active time over all calls. ``max_servers`` likewise stops after
    that many server settings have been served in this call. ``server_estimate_s(settings, points)`` (seconds a
    server's start and points should take) keeps a server from starting when its work would not fit the budget.
    A server whose settings name their own ``model`` serves that model (a folder with weights is served as it is).
    """
    from tqdm.auto import tqdm

    if experiment not in EXPERIMENTS:
        raise ValueError(f"experiment must be one of {EXPERIMENTS}, got {experiment!r}")
    if not points:
        raise ValueError("no points to run")
    ids = [p.point_id for p in points]
    if len(set(ids)) != len(ids):
        raise ValueError("duplicate points in the sweep")
    from llmstudy.core import arch as A

    for m in {model, *(p.server.model for p in points if p.server.model)}:
        A.validate(M.raw_config(m))  # unknown model or a config that cannot be described exactly -> clear error before anything starts
    run_id = run_id or new_run_id(f"{Path(str(model)).name}")
    base = Path(root) if root else runs_dir()
    work = base / experiment / f".work-{run_id}"
    (work / "points").mkdir(parents=True, exist_ok=True)
    model_dirs: dict[str, Path] = {}

    def model_dir_for(m: str) -> Path:
        if m not in model_dirs:
            sub = "model" if m == model else f"model-{Path(str(m)).name}"
            model_dirs[m] = Path(str(m)) if has_weights(m) else prepare_model_dir(m, Path(workdir or work) / sub)
        return model_dirs[m]

    params = {"weights": "random (--load-format dummy)", "tokenizer": "synthetic word-level, exact vocabulary", "load_tool": "vllm bench serve (--save-detailed), genai-perf definitions",
              **(parameters or {}), "model": str(model), "points": len(points), "vllm_env": {k: v for k, v in {**os.environ, **(server_env or {})}.items() if k.startswith("VLLM_")}}
    old = signal.signal(signal.SIGTERM, _on_sigterm) if _main_thread() else None
    budget = Budget(budget_s or None)
    progress = Progress(work)
    try:
        with RunWriter(experiment, params, run_id=run_id, root=base, command=["llmstudy.serving.sweep.run_sweep", experiment, str(model)]) as rec:
            groups: dict[ServerSettings, list[Point]] = {}
            for p in points:
                groups.setdefault(p.server, []).append(p)
            bar = tqdm(total=len(points), desc=experiment, unit="point")
            servers, served_here = [], 0
            for settings, pts in groups.items():
                todo = [p for p in pts if not (work / "points" / f"{p.point_id}.json").exists()]
                bar.update(len(pts) - len(todo))
                srv_file = work / f"server-{settings.label()}.json"
                if not todo:
                    servers.append(json.loads(srv_file.read_text()) if srv_file.exists() else {"server": settings.label()})
                    continue
                need = server_estimate_s(settings, todo) if server_estimate_s and budget.limited else 0.0
                if not budget.fits(need) or (max_servers is not None and served_here >= max_servers):
                    raise SweepIncomplete(f"this call's budget is spent; rerun with run_id={run_id!r} to resume")
                served_here += 1
                m = settings.model or model
                servers.append(_serve_points(settings, todo, model_dir_for(m), Path(str(m)).name, work, srv_file, port, start_timeout_s, point_timeout_s, python, server_env, bar, budget))
            bar.close()
            rec.extra["sweep_wall_s"] = round(progress.active_s(budget), 1)
            rec.extra["sweep_started_utc"] = progress.first_started_utc
            _write_record(rec, points, servers, work, model)
    finally:
        if old is not None:
            signal.signal(signal.SIGTERM, old)
        if work.exists():
            progress.save(budget)
    shutil.rmtree(work, ignore_errors=True)
    return base / experiment / run_id


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _save_point(work: Path, p: Point, res: dict) -> None:
    write_json_atomic(work / "points" / f"{p.point_id}.json", res)


def _serve_points(settings, todo, model_dir, served, work, srv_file, port, start_timeout_s, point_timeout_s, python, server_env, bar, budget: Budget | None = None) -> dict:
    log_path = work / "logs" / f"server-{settings.label()}.log"
    info = {"server": settings.label(), "engine": settings.engine, "settings": asdict(settings), "args": settings.args(), "starts": 0}
    remaining = list(todo)
    cls = server_class(settings.engine)
    srv_python = python if settings.engine == "vllm" else None  # ``python`` is vLLM's (it also runs the load tool)
    while remaining:
        for p in [p for p in remaining if p.refusal()]:
            _save_point(work, p, {"outcome": "refused", "error": p.refusal()})
            remaining.remove(p)
            bar.update(1)
        if not remaining:
            break
        info["starts"] += 1
        srv = cls(str(model_dir), settings.args(), port=port, env=server_env, log_path=log_path.with_suffix(f".{info['starts']}.log"), start_timeout_s=start_timeout_s, python=srv_python, served_name=served)
        info["tag"], info["started_utc"] = srv.tag, utcnow()
        if "versions" not in info:
            info["versions"] = srv.versions()
        write_json_atomic(srv_file, info)
        try:
            srv.start()
        except ServerStartError as e:
            info.update(outcome=e.outcome, error=str(e), log_tail=e.log_tail)
            write_json_atomic(srv_file, info)
            for p in remaining:
                _save_point(work, p, {"outcome": e.outcome, "error": f"server did not start: {e}", "log_tail": e.log_tail})
                bar.update(1)
            return info
        worker = loadgen.BenchWorker(python)
        try:
            info.update(outcome="ok", start_s=srv.start_s, facts=srv.facts, command=srv.command)
            write_json_atomic(srv_file, info)
            while remaining:
                p = remaining[0]
                if budget is not None and not budget.fits():
                    raise SweepIncomplete("time budget spent; rerun with the same run_id to resume")
                res = _run_point(srv, worker, p, model_dir, srv.served_name, work, point_timeout_s)
                _save_point(work, p, res)
                remaining.pop(0)
                bar.update(1)
                bar.set_postfix_str(f"{p.point_id}: {res['outcome']}")
                if srv.proc.poll() is not None:  # the server died under this point: restart for the rest
                    info.setdefault("deaths", []).append({"after": p.point_id, "outcome": classify_failure(srv.log_text())})
                    break
        finally:
            worker.close()
            srv.stop()
    return info


def _run_point(srv: ManagedServer, worker: loadgen.BenchWorker, p: Point, model_dir, served, work, timeout_s) -> dict:
    t0 = time.monotonic()
    raw_dir = work / "raw"
    try:
        result, _ = worker.run(srv.base_url, str(model_dir), str(model_dir), p.workload, raw_dir, p.point_id, timeout_s, served_model_name=served)
    except TimeoutError as e:
        return {"outcome": "timeout", "error": str(e)[:2000], "wall_s": round(time.monotonic() - t0, 1)}
    except RuntimeError as e:
        died = srv.proc.poll() is not None
        return {"outcome": classify_failure(srv.log_text()) if died else "error", "error": str(e)[-3000:], "server_alive": not died, "wall_s": round(time.monotonic() - t0, 1)}
    req, met = loadgen.normalize_vllm_bench(result)
    prompts = result.get("llmstudy_prompts") or {}
    (raw_dir / f"{p.point_id}.json").unlink(missing_ok=True)
    result.pop("generated_texts", None)
    with gzip.open(raw_dir / f"{p.point_id}.json.gz", "wt") as f:
        json.dump(result, f)
    bad = int((~req["ok"]).sum())
    if bad == len(req):
        died = srv.proc.poll() is not None
        errs = sorted(set(req["error"]))[:3]
        return {"outcome": classify_failure(srv.log_text()) if died else "error", "error": f"all {bad} requests failed: {errs}", "server_alive": not died, "wall_s": round(time.monotonic() - t0, 1)}
    exact = bool((req.loc[req["ok"], "output_sequence_length"] == p.workload.output_len).all())
    error = None if bad == 0 else f"{bad} of {len(req)} requests failed: {req.loc[~req['ok'], 'error'].value_counts().head(3).to_dict()}"
    return {"outcome": "ok" if bad == 0 else "partial", "error": error, "wall_s": round(time.monotonic() - t0, 1), "failed_requests": bad, "exact_output_lengths": exact, "prompt_token_ids_sha256": prompts.get("prompt_token_ids_sha256"), "requests": req.to_dict(orient="list"), "metrics": met.to_dict(orient="list")}


def _write_record(rec: RunWriter, points: list[Point], servers: list[dict], work: Path, model: str = "") -> None:
    rows, metrics, requests = [], [], []
    for p in points:
        res = json.loads((work / "points" / f"{p.point_id}.json").read_text())
        s = p.server
        rows.append({"point_id": p.point_id, "sweep": p.sweep, "engine": s.engine, "server": s.label(), "model": Path(str(s.model or model)).name, "max_num_seqs": s.max_num_seqs, "max_model_len": s.max_model_len, "quantization": s.quantization, **p.workload.to_dict(), "repeat": p.repeat, "outcome": res["outcome"], "error": (res.get("error") or "")[:500], "wall_s": res.get("wall_s"), "exact_output_lengths": res.get("exact_output_lengths"), "prompt_token_ids_sha256": res.get("prompt_token_ids_sha256")})
        if "metrics" in res:
            m = pd.DataFrame(res["metrics"])
            m.insert(0, "point_id", p.point_id)
            metrics.append(m)
            r = pd.DataFrame(res["requests"])
            r.insert(0, "point_id", p.point_id)
            requests.append(r)
    pts = pd.DataFrame(rows)
    srv = pd.DataFrame([{"server": i["server"], "engine": i.get("engine", "vllm"), "started_utc": i.get("started_utc"), "outcome": i.get("outcome"), "start_s": i.get("start_s"), "starts": i.get("starts"), **{k: v for k, v in (i.get("facts") or {}).items() if k != "lines"}, "args": " ".join(i.get("args", [])), "versions": json.dumps(i.get("versions")) if i.get("versions") else None, "error": (i.get("error") or "")[:500]} for i in servers])
    met = pd.concat(metrics, ignore_index=True) if metrics else pd.DataFrame(columns=["point_id", *loadgen.METRIC_COLUMNS])
    rec.write_table(pts, "points")
    rec.write_table(srv, "servers")
    rec.write_table(met, "metrics")
    rec.write_table(pd.concat(requests, ignore_index=True) if requests else pd.DataFrame(), "requests")
    w = loadgen.wide(met, ["point_id"]) if len(met) else pd.DataFrame({"point_id": []})
    res = pts.merge(w, on="point_id", how="left").merge(srv[[c for c in srv.columns if c in ("server", "kv_cache_tokens", "max_concurrency", "available_kv_gib", "weights_gib", "start_s")]], on="server", how="left")
    rec.write_table(res, "results")
    rec.write_json(servers, "servers.json")
    if (work / "model" / "config.json").exists():  # the config vLLM served: model configs may change later
        rec.write_text((work / "model" / "config.json").read_text(), "model-config.json")
    for f in sorted((work / "logs").glob("*.log")) if (work / "logs").exists() else []:
        rec.write_text(f.read_text(errors="replace"), f"logs/{f.name}")
    raw = work / "raw"
    if raw.exists():
        for f in sorted(raw.iterdir()):
            dst = rec.dir / "raw" / f.name
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, dst)
