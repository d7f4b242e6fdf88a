"""Engine comparison (the article's ch. 6.6 and 8): vLLM against a second engine measured by us, and against
TensorRT-LLM from run records or the article's published numbers.

Two comparisons, each a sweep written by :func:`llmstudy.serving.sweep.run_sweep` (experiment ``engine_comparison``):

* ``second-engine``: the article's 4-bit Llama-2-7B case (GPTQ layout, random weights, 512 in / 256 out,
  max batch 16, concurrency 1..64) on SGLang and on vLLM, one record, back-to-back calls of one GPU session.
* ``gptoss-vllm``: gpt-oss-20b (MXFP4) on vLLM, the article's ch. 8 sweep (512 / 256, concurrency 1..256).

Fairness is enforced, not assumed: :func:`require_fair` refuses to compare records that break a rule of
:data:`RULES` (identical prompt token ids, exact lengths, one schedule, warm-up excluded, settings recorded, one
setup). :func:`win_table` then says which engine wins each metric at each concurrency, and by how much.
TensorRT-LLM cannot run here: its side is a ``trtllm_serve`` run record when a GPU runner made one, else the
article's numbers, always labelled as published.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from llmstudy.serving import loadgen
from llmstudy.serving import logs as VL
from llmstudy.core import records as R
from llmstudy.serving import sweep as SB
from llmstudy.serving.loadgen import Workload
from llmstudy.core.params import Param, known_model
from llmstudy.core.paths import data_dir

EXPERIMENT = "engine_comparison"
PARTS = ("gptoss-vllm", "second-engine", "cpu-smoke")
SECOND_ENGINES = ("sglang", "transformers")
GPTOSS_MODEL = "gpt-oss-20b"
MODEL_7B = "llama-2-7b-gptq"
ENGINES_CONCURRENCY = (1, 2, 4, 8, 16, 32, 64)
ARTICLE_PROMPTS = {16: 400}  # the article's vLLM run: --num-prompts 400 at --max-concurrency 16
# SGLang's flags for the kernels vLLM uses here: FlashAttention-3 on Hopper, and sampling without FlashInfer (not
# staged for either engine; vLLM runs with VLLM_USE_FLASHINFER_SAMPLER=0). Prefill CUDA graphs off: SGLang 0.5.17
# captures "breakable" prefill graphs for 50+ token counts by default, which took 409 s on an H100 (the failed
# attempt kept in the record's logs), longer than a lent call allows; decode keeps its full CUDA graphs, as vLLM's does.
SGLANG_EXTRA = ("--attention-backend", "fa3", "--sampling-backend", "pytorch", "--cuda-graph-backend-prefill", "disabled")

RULES = {
    "same_prompts": "identical prompts: at each concurrency every engine was sent the same prompt token ids (SHA-256 of the ids the load tool sent)",
    "exact_lengths": "ignore_eos: every request's prompt and output had exactly the requested token counts, as the server counted them",
    "same_schedule": "same concurrency schedule: the same concurrencies, request counts, warm-up counts and seeds for every engine",
    "warmup_excluded": "warm-up excluded: every point sent warm-up requests first, and only the measured requests are in the record",
    "settings_recorded": "server settings in the record: each engine's command-line flags and package versions",
    "same_setup": "one GPU, one model, one load tool, one input/output length",
}
# metric column -> (label, which way is better)
WIN_METRICS = {
    "output_token_throughput_per_user_avg": ("per-user output throughput, avg (tokens/s)", "higher"),
    "output_token_throughput": ("total output throughput (tokens/s)", "higher"),
    "time_to_first_token_avg": ("TTFT, avg (ms)", "lower"),
    "request_latency_avg": ("request latency, avg (ms)", "lower"),
}


class FairnessError(ValueError):
    """Records that break a fairness rule; the message names every broken rule and where."""


# --- plans -----------------------------------------------------------------------------------------------------
def schedule(concurrency, input_len: int, output_len: int, max_num_seqs: int, num_prompts: dict | None = None) -> list[Workload]:
    """One workload per concurrency, the same for every engine: seed = the concurrency's position (identical
    prompts across engines, distinct across points), warm-ups = one full batch (min(c, max_num_seqs)), requests =
    ``loadgen.prompts_for`` unless ``num_prompts`` names a count for that concurrency."""
    if not concurrency or len(set(concurrency)) != len(concurrency):
        raise ValueError(f"concurrency must be distinct values, got {list(concurrency)}")
    fixed = num_prompts or {}
    return [Workload(input_len, output_len, c, fixed.get(c) or loadgen.prompts_for(c, max_num_seqs), max(1, min(c, max_num_seqs)), seed=i) for i, c in enumerate(concurrency)]


def plan_compare(sweep: str, servers: dict[str, SB.ServerSettings], workloads: list[Workload]) -> list[SB.Point]:
    """Every workload on every engine's server, engine by engine (one server start each)."""
    wrong = {e: s.engine for e, s in servers.items() if s.engine != e}
    if wrong:
        raise ValueError(f"server settings under the wrong engine name: {wrong}")
    return [SB.Point(sweep, s, w) for s in servers.values() for w in workloads]


def plan_engines(second: str = "sglang", concurrency=ENGINES_CONCURRENCY, input_len: int = 512, output_len: int = 256, max_num_seqs: int = 16, max_model_len: int = 4096, dtype: str = "float16") -> list[SB.Point]:
    """The article's ch. 6.6 workload on ``second`` then vLLM: max batch 16 (SGLang --max-running-requests, vLLM
    --max-num-seqs), the article's 400 requests at c=16. The quantization is the model's (GPTQ in
    ``llama-2-7b-gptq``'s config.json), detected by each engine: neither gets --quantization gptq, which in SGLang
    forces the slow non-Marlin kernel. transformers serve has no batch cap: it runs unbounded, and the record says so."""
    if second not in SECOND_ENGINES:
        raise ValueError(f"second engine must be one of {SECOND_ENGINES}, got {second!r}")
    common = {"max_model_len": max_model_len, "dtype": dtype}
    servers = {
        "sglang": SB.ServerSettings(engine="sglang", max_num_seqs=max_num_seqs, extra=SGLANG_EXTRA, **common),
        "transformers": SB.ServerSettings(engine="transformers", dtype=dtype),
        "vllm": SB.ServerSettings(engine="vllm", max_num_seqs=max_num_seqs, **common),
    }
    return plan_compare("engines", {second: servers[second], "vllm": servers["vllm"]}, schedule(concurrency, input_len, output_len, max_num_seqs, ARTICLE_PROMPTS))


def plan_gptoss(concurrency=SB.CONCURRENCY, input_len: int = 512, output_len: int = 256, max_num_seqs: int = 256, max_model_len: int = 8192, moe_backend: str | None = None) -> list[SB.Point]:
    """The article's ch. 8 sweep on vLLM: gpt-oss-20b with its MXFP4 experts (from config.json), bf16 elsewhere.
    ``moe_backend`` (vLLM ``--moe-backend``, e.g. ``marlin``) overrides vLLM's choice (TRITON on Hopper)."""
    extra = ("--moe-backend", moe_backend) if moe_backend else ()
    srv = SB.ServerSettings(engine="vllm", max_num_seqs=max_num_seqs, max_model_len=max_model_len, dtype="bfloat16", extra=extra)
    return plan_compare("gptoss", {"vllm": srv}, schedule(concurrency, input_len, output_len, max_num_seqs))


def plan_cpu_smoke(concurrency=(1, 2, 4), input_len: int = 32, output_len: int = 16, num_prompts: int = 8) -> list[SB.Point]:
    """The pipeline on this CPU: a tiny random Llama on HF transformers (continuous batching) and on the CPU vLLM.
    CPU numbers test the code; they are never reported as results."""
    servers = {
        "transformers": SB.ServerSettings(engine="transformers", dtype="float32", enforce_eager=True, extra=("--device", "cpu", "--cb-num-blocks", "64", "--cb-max-batch-tokens", "256")),
        "vllm": SB.ServerSettings(engine="vllm", max_num_seqs=4, max_model_len=512, dtype="float32", enforce_eager=True),
    }
    return plan_compare("cpu", servers, schedule(concurrency, input_len, output_len, 4, {c: num_prompts for c in concurrency}))


def plan(part: str, second: str = "sglang", moe_backend: str | None = None) -> tuple[str, list[SB.Point]]:
    """(model, points) of a part. With ``second='transformers'`` the 7B case is served in bf16 by both engines
    (transformers serve has no GPTQ kernel), so that both serve one model."""
    if part == "gptoss-vllm":
        return GPTOSS_MODEL, plan_gptoss(moe_backend=moe_backend)
    if part == "second-engine":
        if second == "transformers":
            return "llama-2-7b", plan_engines(second, dtype="bfloat16")
        return MODEL_7B, plan_engines(second)
    if part == "cpu-smoke":
        return "tiny-llama-serve", plan_cpu_smoke()
    raise ValueError(f"unknown part {part!r}; known: {PARTS}")


def run_part(part: str, run_id: str = "", second: str = "sglang", budget_s: float | None = None, max_servers: int | None = None, root=None, python: str | None = None, server_env: dict | None = None, start_timeout_s: float = 900, point_timeout_s: float = 600, moe_backend: str | None = None) -> Path:
    """Run a part as a resumable sweep and write its record (``SweepIncomplete`` when the budget ends first)."""
    model, points = plan(part, second, moe_backend)
    env = dict(server_env or {})
    if part == "cpu-smoke":
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    params = {"part": part, "second_engine": second if part == "second-engine" else None, "fairness_rules": RULES}
    return SB.run_sweep(EXPERIMENT, model, points, run_id=run_id, root=root, python=python, server_env=env, budget_s=budget_s, max_servers=max_servers, start_timeout_s=start_timeout_s, point_timeout_s=point_timeout_s, parameters=params)


# --- loading ---------------------------------------------------------------------------------------------------
def _exactness(req: pd.DataFrame, pts: pd.DataFrame) -> pd.DataFrame:
    """Per point: requests recorded, and whether every ok request had exactly the planned prompt/output tokens."""
    if not len(req):
        return pd.DataFrame(columns=["point_id", "requests", "prompts_exact", "outputs_exact"])
    r = req.merge(pts[["point_id", "input_len", "output_len"]], on="point_id")
    ok = r[r["ok"].astype(bool)]
    g = r.groupby("point_id").size().rename("requests").to_frame()
    g["prompts_exact"] = (ok["input_sequence_length"] == ok["input_len"]).groupby(ok["point_id"]).all()
    g["outputs_exact"] = (ok["output_sequence_length"] == ok["output_len"]).groupby(ok["point_id"]).all()
    return g.reset_index()


def _model_name(rec: R.Record) -> str:
    """The record's model as a name: its ``model`` parameter may be a path to a config or a checkpoint folder."""
    return Path(str(R.run_model(rec) or "")).name


def load_points(run_ids=(), root=None, experiment: str = EXPERIMENT, model: str | None = None, part: str | None = None) -> pd.DataFrame:
    """One row per point of the ``engine_comparison`` records (all, or ``run_ids``): the plan, the outcome, the
    metrics (wide), the exactness of its requests, its server's flags, versions and kernels, and the record's GPU,
    model and load tool. ``experiment``/``model``/``part`` read the same sweep made with another chapter's driver
    (e.g. the gpt-oss concurrency sweep recorded by ``llmstudy sweep batch-size``), labelled as that part."""
    frames = []
    for rec in R.load_runs(experiment, root):
        if run_ids and rec.run_id not in run_ids:
            continue
        if model and _model_name(rec) != model:
            continue
        res = rec.table("results")
        try:
            req = rec.table("requests")
        except (R.RecordError, pd.errors.EmptyDataError):  # no point succeeded: no request rows
            req = pd.DataFrame()
        srv = rec.table("servers")
        res = res.merge(_exactness(req, res), on="point_id", how="left")
        keep = [c for c in ("server", "args", "versions", "started_utc", "start_s") if c in srv and (c == "server" or c not in res)]
        res = res.merge(srv[keep], on="server", how="left")
        kern = server_kernels(rec.path)
        if len(kern):
            res = res.merge(kern, on="server", how="left")
        params = rec.manifest["parameters"]
        res.insert(1, "gpu", rec.gpu_name())
        name = _model_name(rec)
        if "model" in res:  # newer records name each point's model (a server may serve its own)
            res["model"] = res["model"].fillna(name)
        else:
            res.insert(2, "model", name)
        res["load_tool"] = params.get("load_tool")
        res["part"] = part or params.get("part")
        if "engine" not in res:  # the serving chapters' records predate the engine column: they are all vLLM
            res["engine"] = "vllm"
        if experiment != EXPERIMENT:
            res["experiment"] = experiment
        frames.append(res)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


_KERNEL_RES = {
    "moe_backend": re.compile(r"Using '?(\w+)'? \w+ MoE backend"),
    "linear_kernel": VL.PATTERNS["linear_kernel"][0],  # the same pattern the serving chapters read
    "attention_backend": re.compile(r"Using (\w+) attention backend|attention_backend='(\w+)'"),
    "sampling_backend": re.compile(r"sampling_backend='(\w+)'"),
    "quant_kernel": re.compile(r"Using (\w+) kernel\."),
}


def kernel_facts(text: str) -> dict:
    """Which kernels a server said it picked (MoE backend, linear kernel, attention, sampling) from its log, and
    why it failed if it did (``failure``: the first validation error, device assert or OOM line)."""
    from llmstudy.chapters.serve_sweeps import failure_reason

    out = {"failure": failure_reason(text)}
    for k, rx in _KERNEL_RES.items():
        m = rx.search(text)
        if m:
            out[k] = next(g for g in m.groups() if g)
    return out


def server_kernels(record_path: Path) -> pd.DataFrame:
    """:func:`kernel_facts` of every server log in a record, one row per server (its first start)."""
    rows = []
    for f in sorted((Path(record_path) / "logs").glob("server-*.1.log")):
        rows.append({"server": f.name[len("server-"):-len(".1.log")], **kernel_facts(f.read_text(errors="replace"))})
    return pd.DataFrame(rows)


_JIT_RE = re.compile(r"(\d\d-\d\d \d\d:\d\d:\d\d) \[jit_monitor.py:\d+\] Triton kernel JIT compilation during inference: ([\w.<>]+?)\. This causes")


def jit_warnings(record_path: Path) -> pd.DataFrame:
    """vLLM's own warnings that a Triton kernel was compiled while requests were being served (a latency spike that
    the warm-up did not cover), from every server log of a record: time and kernel."""
    rows = [{"time": m.group(1), "kernel": m.group(2), "log": f.name}
            for f in sorted((Path(record_path) / "logs").glob("server-*.log")) for m in _JIT_RE.finditer(f.read_text(errors="replace"))]
    return pd.DataFrame(rows, columns=["time", "kernel", "log"])


_EVIDENCE_RE = re.compile(r"Load weight end|Cache is allocated|Model loading took|KV cache size|Available KV cache memory|LinearKernel for|kernel\.$")


def server_facts(record_path: Path) -> pd.DataFrame:
    """What each server of a record says it loaded, read from its log with its engine's parser (SGLang's or vLLM's):
    weight memory, quantization, GEMM kernel, KV-cache tokens and memory, and the log lines they came from."""
    from llmstudy.serving.servers import parse_sglang_log
    from llmstudy.serving.logs import parse_startup_log

    path = Path(record_path)
    engines = pd.read_csv(path / "servers.csv").set_index("server")["engine"].to_dict() if (path / "servers.csv").exists() else {}
    rows = []
    for f in sorted((path / "logs").glob("server-*.1.log")):
        server, text = f.name[len("server-"):-len(".1.log")], f.read_text(errors="replace")
        engine = engines.get(server, "vllm")
        if engine == "sglang":
            x = parse_sglang_log(text)
            quant, kernel, kv_gib = f"{x.get('weights_quant')}, {x.get('weights_bits')} bits", x.get("quantization_kernel"), x.get("kv_k_gib", np.nan) + x.get("kv_v_gib", np.nan)
        else:
            x = parse_startup_log(text)
            quant, kernel, kv_gib = x.get("quantization"), x.get("linear_kernel"), x.get("available_kv_gib")
        rows.append({"engine": engine, "server": server, "weights_gib": x.get("weights_gib"), "quantization": quant, "gemm_kernel": kernel, "kv_cache_tokens": x.get("kv_cache_tokens"),
                     "kv_cache_gib": kv_gib, "log": f"logs/{f.name}", "lines": [ln for ln in x["lines"] if _EVIDENCE_RE.search(ln)]})
    return pd.DataFrame(rows)


_TS_RE = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\]", re.MULTILINE)


def failed_attempts(record_path: Path) -> pd.DataFrame:
    """The SGLang server logs a record keeps of attempts that measured nothing (``logs/failed-attempts/*.log``): the
    line it died on, its prefill and decode CUDA-graph capture times, and how long after its first line it was ready."""
    from llmstudy.chapters.serve_sweeps import failure_reason
    from llmstudy.serving.servers import parse_sglang_log

    rows = []
    for f in sorted((Path(record_path) / "logs" / "failed-attempts").glob("*.log")):
        text = f.read_text(errors="replace")
        x, ts = parse_sglang_log(text), _TS_RE.findall(text)
        ready = re.search(r"^\[([^\]]+)\] The server is fired up and ready to roll", text, re.MULTILINE)
        ready_s = (pd.Timestamp(ready.group(1)) - pd.Timestamp(ts[0])).total_seconds() if ready and ts else np.nan
        rows.append({"log": f"logs/failed-attempts/{f.name}", "failure": failure_reason(text), "prefill_graph_capture_s": x.get("prefill_graph_capture_s", np.nan),
                     "decode_graph_capture_s": x.get("graph_capture_s", np.nan), "ready_after_s": ready_s})
    return pd.DataFrame(rows, columns=["log", "failure", "prefill_graph_capture_s", "decode_graph_capture_s", "ready_after_s"])


def comparison_sets(points: pd.DataFrame) -> dict[tuple, pd.DataFrame]:
    """The points grouped by what makes a like-for-like comparison: (run_id, model, input_len, output_len)."""
    if not len(points):
        return {}
    return {k: g.reset_index(drop=True) for k, g in points.groupby(["run_id", "model", "input_len", "output_len"], sort=True)}


# --- fairness --------------------------------------------------------------------------------------------------
def _true(v) -> bool:
    """A boolean cell as a CSV round trip leaves it (True, 1, 'True'); missing is not true."""
    return v is True or (isinstance(v, (int, float, np.bool_)) and not pd.isna(v) and bool(v)) or str(v) == "True"


def _int(v):
    return None if v is None or pd.isna(v) else int(v)


def _order(t: tuple) -> tuple:
    return tuple(-1 if v is None else v for v in t)


def _sched(g: pd.DataFrame) -> list[tuple]:
    return sorted(((_int(r.concurrency), _int(r.num_prompts), _int(r.warmups), _int(r.seed)) for r in g.itertuples()), key=_order)


def fairness(points: pd.DataFrame) -> pd.DataFrame:
    """Check every rule of :data:`RULES` on the points of one comparison (two or more engines).

    Returns one row per rule: ``rule``, ``ok``, ``detail`` (what broke it, or what was checked).
    """
    if not len(points):
        raise ValueError("no points to check")
    need = ("prompt_token_ids_sha256", "prompts_exact", "outputs_exact", "num_prompts", "warmups", "seed", "requests", "gpu", "model", "load_tool", "args", "versions", "input_len", "output_len")
    points = points.assign(**{c: None for c in need if c not in points})  # a record without a column fails its rule
    engines = sorted(points["engine"].unique())
    ok = points[points["outcome"] == "ok"]
    out = []

    bad = []
    for c, g in ok.groupby("concurrency"):
        digests = {e: (h if isinstance(h, str) and h else None) for e, h in zip(g["engine"], g["prompt_token_ids_sha256"])}
        if len(set(digests.values())) > 1 or None in digests.values():
            bad.append(f"c={_int(c)}: " + ", ".join(f"{e} {(h or 'none')[:12]}" for e, h in sorted(digests.items())))
    out.append(("same_prompts", not bad, "; ".join(bad) or f"{ok['concurrency'].nunique()} concurrencies, one digest each"))

    bad = []
    for r in ok.itertuples():
        if not _true(r.prompts_exact):
            bad.append(f"{r.engine} c={_int(r.concurrency)}: prompts not {_int(r.input_len)} tokens")
        if not _true(r.outputs_exact):
            bad.append(f"{r.engine} c={_int(r.concurrency)}: outputs not {_int(r.output_len)} tokens")
    out.append(("exact_lengths", not bad, "; ".join(bad) or f"{len(ok)} ok points exact"))

    ref = engines[0]
    ref_sched = _sched(points[points["engine"] == ref])
    bad = [f"{e}: {_sched(points[points['engine'] == e])} != {ref}: {ref_sched}" for e in engines[1:] if _sched(points[points["engine"] == e]) != ref_sched]
    out.append(("same_schedule", not bad, "; ".join(bad) or f"{len(ref_sched)} points per engine"))

    bad = [f"{r.engine} c={_int(r.concurrency)}: no warm-up" for r in points.itertuples() if not (_int(r.warmups) or 0) > 0]
    bad += [f"{r.engine} c={_int(r.concurrency)}: {_int(r.requests)} requests recorded for {_int(r.num_prompts)} sent" for r in ok.itertuples() if _int(r.requests) != _int(r.num_prompts) or _int(r.requests) is None]
    out.append(("warmup_excluded", not bad, "; ".join(bad) or "warm-ups sent, measured requests only"))

    bad = []
    for e in engines:
        g = points[points["engine"] == e]
        if not g["args"].fillna("").astype(str).str.strip().astype(bool).all():
            bad.append(f"{e}: no server flags")
        if g["versions"].isna().any():
            bad.append(f"{e}: no package versions")
    out.append(("settings_recorded", not bad, "; ".join(bad) or "flags and versions of " + ", ".join(engines)))

    bad = []
    for col, what in (("gpu", "GPUs"), ("model", "models"), ("load_tool", "load tools")):
        vals = sorted(map(str, points[col].unique()))
        if len(vals) != 1:
            bad.append(f"{what} {vals}")
    lengths = sorted({(_int(a), _int(b)) for a, b in zip(points["input_len"], points["output_len"])}, key=_order)
    if len(lengths) != 1:
        bad.append(f"input/output lengths {lengths}")
    out.append(("same_setup", not bad, "; ".join(bad) or f"{points['gpu'].iloc[0]}, {points['model'].iloc[0]}, {lengths[0][0]} in / {lengths[0][1]} out"))

    if len(engines) < 2:
        out.append(("engines", False, f"one engine only ({engines[0]}): nothing to compare"))
    return pd.DataFrame(out, columns=["rule", "ok", "detail"])


def require_fair(points: pd.DataFrame) -> pd.DataFrame:
    """:func:`fairness`, raising :class:`FairnessError` that names every broken rule; returns the report."""
    rep = fairness(points)
    broken = rep[~rep["ok"]]
    if len(broken):
        raise FairnessError("refusing to compare these records: " + " | ".join(f"{r.rule}: {r.detail}" for r in broken.itertuples()))
    return rep


# --- who wins --------------------------------------------------------------------------------------------------
def win_table(df: pd.DataFrame, metrics: dict = WIN_METRICS, by: str = "concurrency", engine: str = "engine") -> pd.DataFrame:
    """For each value of ``by`` and each metric: every engine's value, the winner and its margin (best / runner-up
    for higher-is-better, runner-up / best for lower-is-better; >= 1). Equal values are a ``tie`` (margin 1).
    Only rows where every engine has a value are judged."""
    engines = sorted(df[engine].unique())
    rows = []
    for x, g in df.groupby(by, sort=True):
        vals = g.set_index(engine)
        for col, (label, better) in metrics.items():
            if col not in vals or any(e not in vals.index or pd.isna(vals.at[e, col]) for e in engines):
                continue
            v = {e: float(vals.at[e, col]) for e in engines}
            order = sorted(engines, key=lambda e: -v[e] if better == "higher" else v[e])
            best, second = order[0], order[1] if len(order) > 1 else order[0]
            tie = v[best] == v[second] and len(order) > 1
            margin = 1.0 if tie else (v[best] / v[second] if better == "higher" else v[second] / v[best])
            rows.append({by: x, "metric": label, "better": better, **{e: v[e] for e in engines}, "winner": "tie" if tie else best, "margin": margin})
    return pd.DataFrame(rows)


def win_summary(wins: pd.DataFrame, by: str = "concurrency") -> pd.DataFrame:
    """Per metric and winner: how many of the judged points it won, and where."""
    rows = []
    for m, g in wins.groupby("metric", sort=False):
        for w, h in g.groupby("winner", sort=True):
            rows.append({"metric": m, "winner": w, "points won": len(h), "of": len(g), f"at {by}": ", ".join(str(int(x)) if float(x).is_integer() else str(x) for x in h[by]),
                         "margin, median": float(h["margin"].median())})
    return pd.DataFrame(rows)


# --- published numbers and TensorRT-LLM records ------------------------------------------------------------------
def published() -> pd.DataFrame:
    """The article's engine numbers (data/trtllm/published.csv, with section), labelled ``source = published``."""
    df = pd.read_csv(data_dir() / "trtllm" / "published.csv")
    df = df[df["section"].astype(str).isin(["6.6", "8.1"]) & df["concurrency"].notna()].copy()
    df["source"] = "published (Fixstars 2026, §" + df["section"].astype(str) + ")"
    return df.reset_index(drop=True)


def published_7b_wins() -> pd.DataFrame:
    """The article's ch. 6.6 result as a win table: total output throughput at c=16, Triton vs vLLM 0.11 (GPTQ)."""
    p = published()
    p = p[p["section"].astype(str) == "6.6"]
    df = pd.DataFrame({"engine": p["server"].values, "concurrency": p["concurrency"].astype(int).values, "output_token_throughput": p["value"].astype(float).values})
    return win_table(df, {"output_token_throughput": WIN_METRICS["output_token_throughput"]})


def article_claims() -> pd.DataFrame:
    """The article's ch. 8.2 verdicts (qualitative: its figure's numbers are not in the text), with the source line."""
    return pd.read_csv(data_dir() / "engine_comparison" / "article_claims.csv")


ARTICLE_GPU = "NVIDIA H100 PCIe"  # the article's §12 setup: 4x "NVIDIA H100 80GB PCIe", one per server


def engine_label(row) -> str:
    """``engine version`` from a point's recorded package versions (e.g. ``sglang 0.5.17``)."""
    v = json.loads(row["versions"]) if isinstance(row.get("versions"), str) else {}
    return f"{row['engine']} {v.get(row['engine'], '')}".strip()


def versus_article(points: pd.DataFrame, concurrency: int = 16) -> pd.DataFrame:
    """Total output throughput at ``concurrency``: each engine measured in ``points``, then the article's §6.6 pair
    (labelled published), with each GPU's datasheet HBM bandwidth and the ratio to the article's vLLM."""
    ok = points[(points["outcome"] == "ok") & (points["concurrency"] == concurrency)]
    rows = [{"engine": engine_label(r), "source": f"measured, run {r['run_id']}", "gpu": r["gpu"], "load tool": r["load_tool"], "output tokens/s": r["output_token_throughput"]} for _, r in ok.iterrows()]
    pub = published()
    for _, r in pub[(pub["section"].astype(str) == "6.6") & (pub["concurrency"] == concurrency)].iterrows():
        rows.append({"engine": r["server"], "source": r["source"], "gpu": ARTICLE_GPU, "load tool": r["note"].split(";")[0], "output tokens/s": float(r["value"])})
    df = pd.DataFrame(rows)
    if not len(df):
        return df
    df["HBM TB/s"] = [SB.hbm_bandwidth(g) / 1e12 for g in df["gpu"]]
    base = df.loc[df["engine"].str.startswith("vLLM 0.11") & df["source"].str.startswith("published"), "output tokens/s"]
    df["x article's vLLM"] = df["output tokens/s"] / base.iloc[0] if len(base) else np.nan
    return df


def where_each_wins(points: pd.DataFrame) -> pd.DataFrame:
    """Who wins what, measured and published in one table but never judged against each other: the win summary of
    every fair multi-engine comparison set in ``points`` (source: measured), then the article's §6.6 and §8.2
    verdicts (source: published)."""
    rows = []
    for (run, model, i, o), g in comparison_sets(points).items() if len(points) else ():
        ok = g[g["outcome"] == "ok"]
        if ok["engine"].nunique() < 2 or not fairness(g)["ok"].all():
            continue
        names = " vs ".join(sorted({engine_label(r) for _, r in ok.drop_duplicates("engine").iterrows()}))
        for _, r in win_summary(win_table(ok)).iterrows():
            rows.append({"source": f"measured: run {run}, {ok['gpu'].iloc[0]}", "comparison": f"{names} ({model}, {i} in / {o} out)", "metric": r["metric"], "winner": r["winner"],
                         "at concurrency": r["at concurrency"], "points won": f"{r['points won']} of {r['of']}", "margin, median": r["margin, median"]})
    margin = published_7b_wins()["margin"].iloc[0]
    for _, r in article_claims().sort_values("section").iterrows():
        at = re.search(r"c=([\d.]+)", r["comparison"])
        rows.append({"source": f"published: Fixstars 2026 §{r['section']}, {ARTICLE_GPU}", "comparison": r["comparison"], "metric": r["metric"], "winner": r["article_winner"],
                     "at concurrency": at.group(1).replace("..", " to ") if at else "", "points won": "", "margin, median": margin if str(r["section"]) == "6.6" else np.nan})
    return pd.DataFrame(rows)


def trtllm_points(run_ids=(), root=None) -> pd.DataFrame:
    """TensorRT-LLM (trtllm-serve) run records, if a GPU runner made any, in the same wide schema (one row per
    concurrency); empty when there are none."""
    rows = []
    for rec in R.load_runs("trtllm_serve", root):
        if run_ids and rec.run_id not in run_ids:
            continue
        try:
            t = rec.table("results")
        except R.RecordError:
            continue
        if not len(t) or "metric" not in t or "concurrency" not in t:
            continue
        w = loadgen.wide(t, ["run_id", "concurrency"])
        w.insert(1, "gpu", rec.gpu_name())
        for col in ("input_len", "output_len", "outcome"):
            if col in t:
                w[col] = t.groupby("concurrency")[col].first().reindex(w["concurrency"]).values
        w["model"] = _model_name(rec)
        w["engine"] = "trtllm-serve"
        w["experiment"] = "trtllm_serve"
        rows.append(w)
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()


def other_vllm_7b(model: str = MODEL_7B) -> pd.DataFrame:
    """Points of the serving chapters' records (batch_size_sweep, length_sweep) on ``model``: vLLM runs of the same
    4-bit case made in other sessions, shown beside the comparison but never judged against it."""
    frames = []
    for exp in ("batch_size_sweep", "length_sweep"):
        for rec in R.load_runs(exp):
            if _model_name(rec) != model:
                continue
            t = rec.table("results")
            t.insert(1, "gpu", rec.gpu_name())
            t["experiment"] = exp
            frames.append(t)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


# --- figures ---------------------------------------------------------------------------------------------------
def _log2_axis(ax, values) -> None:
    ax.set_xscale("log", base=2)
    ticks = sorted({int(v) for v in values})
    ax.set_xticks(ticks, [f"{t:,}" for t in ticks])
    ax.minorticks_off()


def throughput_figure(df: pd.DataFrame, title: str, references: pd.DataFrame | None = None):
    """The article's throughput plot: per-user and total output throughput against concurrency, and per-user
    against total (each point one concurrency). ``references``: labelled published points (engine, concurrency,
    metric column, value) drawn as open markers, never joined to measured lines."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.4))
    d = df.sort_values(["engine", "concurrency"])
    for ax, col, label in ((axes[0], "output_token_throughput_per_user_avg", "per-user output throughput (tokens/s)"), (axes[1], "output_token_throughput", "total output throughput (tokens/s)")):
        sns.lineplot(data=d, x="concurrency", y=col, hue="engine", marker="o", ax=ax, legend=ax is axes[0])
        refs = references[references["column"] == col] if references is not None and len(references) else pd.DataFrame(columns=["concurrency"])
        for r in refs.itertuples():
            ax.scatter([r.concurrency], [r.value], marker="D", facecolors="none", edgecolors="crimson", s=70, zorder=5)
            ax.annotate(r.label, (r.concurrency, r.value), textcoords="offset points", xytext=(-6, 6), ha="right", fontsize=7, color="crimson")
        _log2_axis(ax, list(d["concurrency"]) + list(refs["concurrency"]))
        ax.set(xlabel="concurrency", ylabel=label)
    for e, g in d.groupby("engine"):
        axes[2].plot(g["output_token_throughput"], g["output_token_throughput_per_user_avg"], marker="o", label=e)
        for r in g.itertuples():
            axes[2].annotate(str(int(r.concurrency)), (r.output_token_throughput, r.output_token_throughput_per_user_avg), textcoords="offset points", xytext=(3, 3), fontsize=7)
    axes[2].set(xlabel="total output throughput (tokens/s)", ylabel="per-user output throughput (tokens/s)", title="each point: one concurrency")
    axes[2].legend(fontsize="small")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def ttft_figure(df: pd.DataFrame, title: str):
    """TTFT (avg and p99) against concurrency, one line per engine."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    d = df.sort_values(["engine", "concurrency"])
    for ax, col, label in ((axes[0], "time_to_first_token_avg", "TTFT, avg (ms)"), (axes[1], "time_to_first_token_p99", "TTFT, p99 (ms)")):
        if col in d:
            sns.lineplot(data=d, x="concurrency", y=col, hue="engine", marker="o", ax=ax, legend=ax is axes[0])
        _log2_axis(ax, d["concurrency"])
        ax.set_yscale("log")
        ax.set(xlabel="concurrency", ylabel=label)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


# --- the SGLang decision -------------------------------------------------------------------------------------------
def sglang_pins(versions=None, python: str = "python3") -> pd.DataFrame:
    """Which SGLang releases pin which torch (and transformers, sglang-kernel, flashinfer): read from each release's
    wheel metadata with ``pip install --dry-run --no-deps --report`` for CPython 3.12 on manylinux x86_64 (the GPU
    image's platform). Needs the package index; the chapter shows the table saved in
    ``data/engine_comparison/sglang_pins.csv``."""
    import subprocess
    import tempfile

    plats = ("manylinux_2_34_x86_64", "manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
    rows = []
    for v in versions or ("0.5.10.post1", "0.5.11", "0.5.14", "0.5.17", "0.5.18", "0.5.23"):
        with tempfile.TemporaryDirectory() as d:
            cmd = [python, "-m", "pip", "install", "-q", "--dry-run", "--no-deps", "--ignore-installed", "--report", f"{d}/r.json", "--python-version", "3.12",
                   "--implementation", "cp", "--only-binary=:all:", "--target", f"{d}/t", *[a for p in plats for a in ("--platform", p)], f"sglang=={v}"]
            p = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=600)
            if p.returncode:
                rows.append({"sglang": v, "error": p.stderr.strip().splitlines()[-1][:200] if p.stderr.strip() else f"pip exited {p.returncode}"})
                continue
            meta = json.loads(Path(f"{d}/r.json").read_text())["install"][0]["metadata"]
        rows.append(pins_row(meta))
    return pd.DataFrame(rows)


def pins_row(meta: dict) -> dict:
    """The exact pins (==) of one SGLang wheel's metadata (a pip report's ``metadata``): its runtime requirements,
    or those of its ``srt`` extra in releases that keep the runtime there."""
    pins = {}
    for req in meta.get("requires_dist") or []:
        m = re.match(r"^\s*([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?\s*==\s*([^;,\s]+)\s*(;.*)?$", req)
        if m and (not m.group(3) or "extra" not in m.group(3) or '"srt"' in m.group(3)):
            pins[m.group(1).lower().replace("_", "-")] = m.group(2)
    return {"sglang": meta["version"], "torch": pins.get("torch"), "transformers": pins.get("transformers"), "sglang-kernel": pins.get("sglang-kernel", pins.get("sgl-kernel")),
            "flashinfer-python": pins.get("flashinfer-python")}


def newest_with_torch(pins: pd.DataFrame, torch: str = "2.11.0") -> str | None:
    """The newest SGLang release in ``pins`` whose wheel pins exactly ``torch`` (None if none does)."""
    from packaging.version import Version

    hit = pins[pins["torch"] == torch]
    return str(max(hit["sglang"], key=Version)) if len(hit) else None


# --- notebook parameters -------------------------------------------------------------------------------------------
def params() -> dict[str, Param]:
    """Parameters of notebooks/engine_comparison.ipynb."""

    def run_ids_ok(v):
        bad = [x for x in v if not isinstance(x, str) or not R.RUN_ID_RE.match(x)]
        return f"not run ids: {bad}" if bad else None

    return {
        "mode": Param(str, "analyze", "analyze: render the run records (CPU); run: run `part` on this machine and write a record", choices=("analyze", "run")),
        "part": Param(str, "second-engine", "run mode: gptoss-vllm | second-engine | cpu-smoke", choices=PARTS),
        "second_engine": Param(str, "sglang", "run mode: the engine measured against vLLM", choices=SECOND_ENGINES),
        "run_id": Param(str, "", "run mode: the record's id (reuse it to resume)", check=lambda v: None if v == "" or R.RUN_ID_RE.match(v) else "letters, digits, '.', '_', '-'"),
        "run_ids": Param(list, [], "analyze mode: engine_comparison records to show (empty = all)", check=run_ids_ok),
        "budget_s": Param((float, int, type(None)), None, "run mode: start no new server or point after this many seconds", check=lambda v: None if v is None or v > 0 else "must be > 0 or None"),
        "model_7b": Param(str, MODEL_7B, "the article's 4-bit 7B case (ch. 6.6)", check=known_model),
        "gptoss_model": Param(str, GPTOSS_MODEL, "the article's ch. 8 model", check=known_model),
    }
