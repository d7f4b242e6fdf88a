"""The plans and the runs of the engine comparison: the parts, their server settings and one schedule for every
engine, the resumable run, and the SGLang decision (which release pins the image's torch)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

from llmstudy.chapters.engine_comparison.params import GPTOSS_MODEL, MODEL_7B, PARAMS, PARTS, SECOND_ENGINES
from llmstudy.serving import loadgen
from llmstudy.serving import sweep as SB
from llmstudy.serving.loadgen import Workload

EXPERIMENT = "engine_comparison"
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


def plan(part: str = PARAMS["part"].default, second: str = PARAMS["second_engine"].default, moe_backend: str | None = None, model: str | None = None) -> tuple[str, list[SB.Point]]:
    """(model, points) of a part. With ``second='transformers'`` the 7B case is served in bf16 by both engines
    (transformers serve has no GPTQ kernel), so that both serve one model. ``model`` (a name under data/models or a
    config path) replaces the part's model: the same schedule and settings, served for that model."""
    if part not in PARTS:
        raise ValueError(f"unknown part {part!r}; known: {PARTS}")
    if second not in SECOND_ENGINES:
        raise ValueError(f"second engine must be one of {SECOND_ENGINES}, got {second!r}")
    if model is not None:
        from llmstudy.core import models as M

        M.config_path(model)  # an unknown model is refused here, named, before any server starts
    if part == "gptoss-vllm":
        return model or GPTOSS_MODEL, plan_gptoss(moe_backend=moe_backend)
    if part == "second-engine":
        if second == "transformers":
            return model or "llama-2-7b", plan_engines(second, dtype="bfloat16")
        return model or MODEL_7B, plan_engines(second)
    return model or "tiny-llama-serve", plan_cpu_smoke()


def run_part(part: str = PARAMS["part"].default, run_id: str = PARAMS["run_id"].default, second: str = PARAMS["second_engine"].default, budget_s: float | None = PARAMS["budget_s"].default,
             max_servers: int | None = None, root=None, python: str | None = None, server_env: dict | None = None, start_timeout_s: float = 900, point_timeout_s: float = 600,
             moe_backend: str | None = None, model: str | None = None) -> Path:
    """Run a part as a resumable sweep of ``model`` (default: the part's) and write its record (``SweepIncomplete``
    when the budget ends first)."""
    model, points = plan(part, second, moe_backend, model)
    env = dict(server_env or {})
    if part == "cpu-smoke":
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    params = {"part": part, "second_engine": second if part == "second-engine" else None, "fairness_rules": RULES}
    return SB.run_sweep(EXPERIMENT, model, points, run_id=run_id, root=root, python=python, server_env=env, budget_s=budget_s, max_servers=max_servers, start_timeout_s=start_timeout_s, point_timeout_s=point_timeout_s, parameters=params)


def part_model(p: dict) -> str | None:
    """The model a part is run for, from the chapter's parameters: ``model_7b`` for second-engine, ``gptoss_model``
    for gptoss-vllm (None: the part's own, e.g. the unquantized 7B when the second engine is transformers)."""
    if p["part"] == "gptoss-vllm":
        return p["gptoss_model"]
    if p["part"] == "second-engine" and (p["model_7b"] != MODEL_7B or p["second_engine"] != "transformers"):
        return p["model_7b"]
    return None


def measure_command(part: str, model: str) -> str:
    """The exact command that measures ``part`` for ``model`` on a GPU runner."""
    return f"llmstudy engines run {part} --model {model} --run-id RUN_ID"


def run_mode(p: dict) -> list[str]:
    """The notebook's run mode: run ``p['part']`` for its model with the validated parameters ``p``; the record ids
    to show (the new one; the given ``run_ids`` when the budget ended first, the finished points being kept)."""
    try:
        path = run_part(p["part"], run_id=p["run_id"], second=p["second_engine"], budget_s=p["budget_s"], model=part_model(p))
    except SB.SweepIncomplete as e:
        print(f"sweep incomplete (finished points are kept): {e}")
        return list(p["run_ids"])
    print(f"new run record: {path}")
    return [path.name]


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


