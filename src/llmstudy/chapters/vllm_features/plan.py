"""The plan and the run of the vLLM feature ablations: arms, groups, workloads, time estimate, the resumable run."""

from __future__ import annotations

import json
import math
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from llmstudy.chapters.vllm_features.params import PARAMS
from llmstudy.core.paths import data_dir
from llmstudy.serving import sweep as SB
from llmstudy.serving.loadgen import Workload

EXPERIMENT = "vllm_features"
DATA = "data/vllm_features"  # the real-text prompt files (relative to the repository root: they travel with it)
TEXT_FILES = {"grounded": f"{DATA}/prompts-grounded.jsonl", "open": f"{DATA}/prompts-open.jsonl"}
NGRAM = {"method": "ngram", "num_speculative_tokens": 5, "prompt_lookup_max": 4, "prompt_lookup_min": 2}
NGRAM_GPU = {**NGRAM, "method": "ngram_gpu"}


@dataclass(frozen=True)
class Arm:
    """One ablation arm: what it changes (ServerSettings fields) and which workloads show it."""

    name: str
    group: str
    feature: str  # the article's feature, in words
    change: str  # what this arm does against the baseline
    server: dict = field(default_factory=dict, hash=False)
    workloads: tuple[str, ...] = ("std",)  # std | std-batched | std-top | batched-min | prefix | long | text
    needs: tuple[str, ...] = ()  # Python modules the serving machine must import (checked before any start)


ARMS: dict[str, Arm] = {a.name: a for a in (
    # core: scheduling and execution
    Arm("eager", "core", "CUDA graphs + torch.compile", "--enforce-eager (no graphs, no compile)", {"enforce_eager": True}),
    Arm("no-chunked-prefill", "core", "chunked prefill", "--no-enable-chunked-prefill", {"extra": ("--no-enable-chunked-prefill",)}, ("std-top", "long")),
    Arm("mnbt-512", "core", "chunked prefill", "--max-num-batched-tokens 512 (small chunks)", {"extra": ("--max-num-batched-tokens", "512")}, ("std-top", "long")),
    Arm("mnbt-2048", "extra", "chunked prefill", "--max-num-batched-tokens 2048", {"extra": ("--max-num-batched-tokens", "2048")}, ("std-top", "long")),
    Arm("prefix-caching", "core", "PagedAttention block sharing (prefix caching)", "--enable-prefix-caching", {"prefix_caching": True}, ("batched-min", "prefix")),
    Arm("one-at-a-time", "core", "continuous batching", "--max-num-seqs 1 (no batching)", {"max_num_seqs": 1}, ("batched-min",)),
    # quant: memory formats
    Arm("kv-fp8", "quant", "quantization: FP8 KV cache", "--kv-cache-dtype fp8", {"extra": ("--kv-cache-dtype", "fp8")}),
    Arm("fp8-weights", "quant", "quantization: FP8 weights", "--quantization fp8 (online, per-tensor)", {"quantization": "fp8"}),
    Arm("gptq", "quant", "quantization: GPTQ 4-bit", "llama-2-7b-gptq layout, kernel chosen by vLLM", {"model": "llama-2-7b-gptq"}),
    Arm("awq", "quant", "quantization: AWQ 4-bit", "llama-2-7b-awq layout, kernel chosen by vLLM", {"model": "llama-2-7b-awq"}),
    Arm("gptq-exllama", "extra", "quantization: GPTQ 4-bit", "--quantization gptq --dtype float16 (the article's forced kernel)", {"model": "llama-2-7b-gptq", "quantization": "gptq", "dtype": "float16"}),
    # kernels: paging and attention implementations
    Arm("block-64", "kernels", "PagedAttention block size", "--block-size 64", {"extra": ("--block-size", "64")}),
    Arm("attn-triton", "kernels", "attention kernels", "--attention-backend TRITON_ATTN", {"extra": ("--attention-backend", "TRITON_ATTN")}),
    Arm("attn-flex", "kernels", "attention kernels", "--attention-backend FLEX_ATTENTION", {"extra": ("--attention-backend", "FLEX_ATTENTION")}),
    Arm("attn-flashinfer", "kernels", "attention kernels", "--attention-backend FLASHINFER", {"extra": ("--attention-backend", "FLASHINFER")}, needs=("flashinfer",)),
    # spec: a real small model, real text
    Arm("ngram", "spec", "speculative decoding", "--speculative-config " + json.dumps(NGRAM) + " (lookup on the CPU; vLLM then turns async scheduling off)",
        {"extra": ("--speculative-config", json.dumps(NGRAM, separators=(",", ":")))}, ("text",), needs=("numba",)),
    Arm("ngram-gpu", "spec", "speculative decoding", "the same with method ngram_gpu (lookup on the GPU; async scheduling stays on)",
        {"extra": ("--speculative-config", json.dumps(NGRAM_GPU, separators=(",", ":")))}, ("text",)),
)}
GROUPS = {g: tuple(a.name for a in ARMS.values() if a.group == g) for g in ("core", "quant", "kernels", "spec", "extra")}
BASELINE = "baseline"


def resolve(selection: str | list[str] | tuple[str, ...]) -> list[str]:
    """Arm names from group names and/or arm names (``"core"``, ``"kv-fp8,block-64"``), in order, no duplicates."""
    items = [s.strip() for x in ([selection] if isinstance(selection, str) else selection) for s in str(x).split(",") if s.strip()]
    if not items:
        raise ValueError(f"no arms selected; groups: {sorted(GROUPS)}, arms: {sorted(ARMS)}")
    out: list[str] = []
    for s in items:
        if s == BASELINE:
            continue  # always there
        names = GROUPS.get(s) or ((s,) if s in ARMS else None)
        if names is None:
            raise ValueError(f"unknown arm or group {s!r}; groups: {sorted(GROUPS)}, arms: {sorted(ARMS)}")
        out += [n for n in names if n not in out]
    spec = {ARMS[n].group == "spec" for n in out}
    if len(spec) > 1:
        raise ValueError("speculative-decoding arms run on the small real model: select them apart from the 7B arms (one record each)")
    return out


def _positive(name: str, values) -> tuple[int, ...]:
    vals = tuple(values) if isinstance(values, (list, tuple)) else (values,)
    bad = [v for v in vals if isinstance(v, bool) or not isinstance(v, int) or v <= 0]
    if not vals or bad:
        raise ValueError(f"{name} must be positive integers, got {list(vals)}")
    return vals


def plan(
    arms: str | list[str] = PARAMS["arms"].default,
    repeats: int = PARAMS["repeats"].default,
    concurrency=tuple(PARAMS["concurrency"].default),
    input_len: int = 512,
    output_len: int = 256,
    max_model_len: int = 4096,
    waves: int = 2,
    c1_prompts: int = 4,
    prefix=(2048, 1792, 64, 16),
    long=(3584, 128, 16),
    long_waves: int = 3,
    text_concurrency=(1, 16),
    text_output_len: int = 256,
    text_prompts: int = 16,
    spec_model: str = "",
    **server,
) -> list[SB.Point]:
    """The points of a selection: baseline, each arm, baseline again; every workload ``repeats`` times per server.

    Workloads: ``std`` = ``input_len`` in / ``output_len`` out at each concurrency (``c1_prompts`` requests at c=1,
    ``waves`` x c above); ``prefix`` = (input, shared prefix, output, c); ``long`` = (input, output, c) long prompts
    arriving while others decode; ``text`` = the real prompt files at ``text_concurrency`` (spec arms; half the
    prompts at c=1). An arm runs the workloads it names; the baseline runs all that its arms name, on the same
    prompts: seeds depend on the workload and the repeat only (random prompts differ between repeats, so that a
    prefix cache cannot serve a repeat; the text prompts are the same in every repeat). Warm-ups precede the
    first repeat only (the later ones find the server warm).
    """
    names = resolve(arms)
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 2:
        raise ValueError(f"repeats must be an integer >= 2 (the run-to-run spread needs two), got {repeats!r}")
    conc = sorted(set(_positive("concurrency", concurrency)))
    _positive("lengths", (input_len, output_len, max_model_len, waves, c1_prompts, long_waves, text_output_len, text_prompts))
    p_in, p_shared, p_out, p_c = _positive("prefix", prefix)
    l_in, l_out, l_c = _positive("long", long)
    t_conc = sorted(set(_positive("text_concurrency", text_concurrency)))
    spec = ARMS[names[0]].group == "spec"
    if spec:
        from llmstudy.chapters.lora_vs_qlora import find_checkpoint

        server = {"load_format": "auto", "model": str(find_checkpoint(spec_model or "gemma-3-270m")), **server}

    def std(c: int, seed: int, r: int) -> Workload:
        return Workload(input_len, output_len, c, c1_prompts if c == 1 else waves * c, (1 if c == 1 else min(c, 4)) if r == 0 else 0, seed)

    batched = [c for c in conc if c > 1]
    kinds: dict[str, list] = {  # workload key -> [(sweep, make(seed, repeat))]
        "std": [("std", lambda s, r, c=c: std(c, s, r)) for c in conc],
        "std-batched": [("std", lambda s, r, c=c: std(c, s, r)) for c in batched],
        "std-top": [("std", lambda s, r: std(conc[-1], s, r))],
        "batched-min": [("std", lambda s, r: std(batched[0] if batched else conc[0], s, r))],
        "prefix": [("prefix", lambda s, r: Workload(p_in, p_out, p_c, waves * p_c, min(p_c, 4) if r == 0 else 0, s, prefix_len=p_shared))],
        "long": [("long", lambda s, r: Workload(l_in, l_out, l_c, long_waves * l_c, min(l_c, 4) if r == 0 else 0, s))],
        # real text: the same prompts in every repeat (seed without the repeat), fewer of them at c=1
        "text": [("text", lambda s, r, c=c, f=f: Workload(input_len, text_output_len, c, text_prompts if c > 1 else max(1, text_prompts // 2), 1 if r == 0 else 0, s - s % 1000, dataset=f))
                 for f in TEXT_FILES.values() for c in t_conc],
    }
    # one entry per distinct workload, in a fixed order; its index fixes the prompts' seed on every server
    catalogue: dict[tuple[str, str], tuple[str, object]] = {}
    for entries in kinds.values():
        for sweep, make in entries:
            catalogue.setdefault((sweep, make(0, 0).tag), (sweep, make))
    index = {t: i for i, t in enumerate(catalogue)}

    def workloads_of(keys) -> list[tuple[int, str, object]]:
        tags = {(s, m(0, 0).tag) for k in keys for s, m in kinds[k]}
        return [(index[t], *catalogue[t]) for t in catalogue if t in tags]

    base = {"max_model_len": max_model_len, **server}
    union = [k for n in names for k in ARMS[n].workloads]
    servers = [(f"{BASELINE}.1", {}, union)] + [(n, ARMS[n].server, ARMS[n].workloads) for n in names] + [(f"{BASELINE}.2", {}, union)]
    pts = []
    for name, change, keys in servers:
        kw = {**base, **change}
        kw["extra"] = tuple(base.get("extra", ())) + tuple(change.get("extra", ()))
        settings = SB.ServerSettings(name=name, **kw)
        for i, sweep, make in workloads_of(keys):
            for r in range(repeats):
                pts.append(SB.Point(sweep, settings, make(1000 * i + r, r), r))
    return pts


def workload_label(sweep: str, w: Workload | pd.Series) -> str:
    """How a workload is named in the tables: ``c16``, ``shared prefix c16``, ``long prompts c16``, ``grounded c1``."""
    g = w.get if isinstance(w, pd.Series) else lambda k: getattr(w, k)
    c = int(g("concurrency"))
    if sweep == "text":
        return f"{Path(str(g('dataset'))).stem.removeprefix('prompts-')} c{c}"
    return {"prefix": "shared prefix", "long": "long prompts"}.get(sweep, "") + (" " if sweep in ("prefix", "long") else "") + f"c{c}"


# --- time estimate (planning only: from the H100 probes and the serving records' server starts) ------------------
START_S = {"graphs": 100.0, "eager": 60.0}  # 7B start to /health: 90-116 s with compile + graphs (batch_size_sweep h100-b)
DECODE_MS = (6.1, 0.137)  # ITL ~ a + b x batch (probes: 6.11 ms at c=1, 8.16 ms at c=16)
PREFILL_TOK_S = 20_000.0
POINT_OVERHEAD_S = 2.0


def point_estimate_s(w: Workload, max_num_seqs: int | None = None) -> float:
    """Rough seconds for one point: waves of (prefill of the wave + decode of output_len tokens), warm-ups included."""
    b = min(w.concurrency, max_num_seqs or w.concurrency)
    wave = w.input_len * b / PREFILL_TOK_S + w.output_len * (DECODE_MS[0] + DECODE_MS[1] * b) / 1e3
    waves = math.ceil(w.num_prompts / b) + (math.ceil(w.warmups / b) if w.warmups else 0)
    return POINT_OVERHEAD_S + waves * wave


def server_estimate_s(settings: SB.ServerSettings, points: list[SB.Point]) -> float:
    """Rough seconds for a server's start and its points (a start is not begun when this would pass the budget)."""
    return START_S["eager" if settings.enforce_eager else "graphs"] + sum(point_estimate_s(p.workload, settings.max_num_seqs) for p in points)


def estimate(points: list[SB.Point]) -> pd.DataFrame:
    """Per server: points and estimated seconds (start + load), in run order."""
    rows: dict[str, dict] = {}
    for p in points:
        r = rows.setdefault(p.server.label(), {"server": p.server.label(), "points": 0, "start_s": START_S["eager" if p.server.enforce_eager else "graphs"], "load_s": 0.0})
        r["points"] += 1
        r["load_s"] += point_estimate_s(p.workload, p.server.max_num_seqs)
    df = pd.DataFrame(rows.values())
    df["total_s"] = df["start_s"] + df["load_s"]
    return df


# --- running -------------------------------------------------------------------------------------------------------
def missing_modules(modules, python: str | None = None) -> list[str]:
    """Which of ``modules`` the vLLM Python cannot import (an arm that needs one is recorded as skipped, not started)."""
    import os
    import sys

    py = python or os.environ.get("LLMSTUDY_VLLM_PYTHON") or sys.executable
    out = []
    for m in modules:
        if subprocess.run([py, "-c", f"import {m}"], capture_output=True, timeout=300, check=False).returncode != 0:
            out.append(m)
    return out


def run(arms: str | list[str] = PARAMS["arms"].default, model: str = PARAMS["model"].default, run_id: str = PARAMS["run_id"].default, budget_s: float | None = PARAMS["budget_s"].default, python: str | None = None,
        server_env: dict | None = None, root=None, port: int | None = None, start_timeout_s: float = 420, point_timeout_s: float = 420, **plan_kw) -> Path:
    """Run a selection of arms as one resumable sweep of ``model`` (the spec arms: their checkpoint) and publish its
    record; raises ``SweepIncomplete`` at the budget (rerun with the same ``run_id`` to resume)."""
    names = resolve(arms)
    fixed = [n for n in names if ARMS[n].group != "spec" and "model" in ARMS[n].server]
    if fixed and Path(str(model)).name != PARAMS["model"].default:
        raise ValueError(f"arm(s) {fixed} serve {sorted({ARMS[n].server['model'] for n in fixed})}, layouts of {PARAMS['model'].default}, not of {model}: "
                         "select the other arms for this model")
    skipped = {}
    for n in names:
        miss = missing_modules(ARMS[n].needs, python) if ARMS[n].needs else []
        if miss:
            skipped[n] = f"not started: the serving Python cannot import {', '.join(miss)}"
    keep = [n for n in names if n not in skipped]
    if not keep:
        raise ValueError(f"no arm can run here: {skipped}")
    pts = plan(keep, **plan_kw)
    spec = ARMS[keep[0]].group == "spec"
    model = pts[0].server.model if spec else model
    params = {"arms": keep, "selection": arms if isinstance(arms, str) else ",".join(arms), "skipped_arms": skipped,
              "plan": {k: (list(v) if isinstance(v, tuple) else v) for k, v in plan_kw.items()},
              "arm_changes": {n: ARMS[n].change for n in keep}}
    if spec:
        params |= {"weights": f"real ({Path(model).name} checkpoint)", "tokenizer": "the model's own", "prompts": TEXT_FILES}
    return SB.run_sweep(EXPERIMENT, model, pts, run_id=run_id, budget_s=budget_s, python=python, server_env=server_env, root=root, port=port,
                        start_timeout_s=start_timeout_s, point_timeout_s=point_timeout_s, parameters=params, server_estimate_s=server_estimate_s)


# --- the real-text prompts of the speculative-decoding arms -------------------------------------------------------
def build_prompts(dest: Path | None = None, n: int = 16) -> dict[str, Path]:
    """Write the two prompt files: ``grounded`` (rewrite a Python function from this repository: the answer repeats
    much of the prompt, where n-gram lookup can hit) and ``open`` (questions of the LoRA chapter's dataset: nothing
    to copy). Deterministic; the committed files are its output at the commit that made them."""
    import ast

    dest = Path(dest) if dest else data_dir() / "vllm_features"
    dest.mkdir(parents=True, exist_ok=True)
    src = Path(__file__).resolve().parents[2]  # src/llmstudy
    funcs = []
    for f in ("serving/loadgen.py", "serving/sweep.py", "chapters/serve_sweeps.py", "core/records.py", "core/models.py", "serving/logs.py"):
        text = (src / f).read_text()
        for node in ast.parse(text).body:
            if isinstance(node, ast.FunctionDef) and not node.name.startswith("_") and 8 <= node.end_lineno - node.lineno + 1 <= 30:
                funcs.append(ast.get_source_segment(text, node))
    grounded = [
        "Below is a Python function, then the same function rewritten with clearer variable names and a comment above "
        f"every statement. The behaviour is unchanged.\n\n```python\n{code}\n```\n\nRewritten:\n\n```python\n" for code in funcs[:n]
    ]
    rows = json.loads((data_dir() / "lora_vs_qlora" / "persona_ja.json").read_text())
    open_ = [f"次の質問に、丁寧に答えてください。\n\n質問: {r['instruction']}\n回答:" for r in rows[:n]]
    out = {}
    for kind, prompts in (("grounded", grounded), ("open", open_)):
        if len(prompts) < n:
            raise ValueError(f"only {len(prompts)} {kind} prompts found, need {n}")
        p = dest / f"prompts-{kind}.jsonl"
        p.write_text("".join(json.dumps({"prompt": t}, ensure_ascii=False) + "\n" for t in prompts))
        out[kind] = p
    return out



def run_mode(p: dict) -> list[str]:
    """The notebook's run mode: check that vLLM is importable (a clear error before any server starts), run the
    selected arms with the validated parameters ``p`` and return the record ids to show (the new one; the given
    ``run_ids`` when the budget ended first, the finished points being kept)."""
    from llmstudy.chapters import serve_sweeps as SP

    SP.require_vllm()
    try:
        path = run(p["arms"], run_id=p["run_id"], budget_s=p["budget_s"], model=p["model"], repeats=p["repeats"], concurrency=tuple(p["concurrency"]))
    except SB.SweepIncomplete as e:
        print(f"incomplete (finished points are kept): {e}")
        return list(p["run_ids"])
    print(f"new run record: {path}")
    return [path.name]
