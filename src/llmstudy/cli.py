"""``llmstudy`` command line: model configs, parameter counts, the memory model, run records."""

from __future__ import annotations

import argparse
import sys

import pandas as pd


def _memory(args) -> int:
    from . import memory as mm

    setups = [mm.parse_method(m, args.model, args.seq_len, args.micro_batch, not args.no_grad_ckpt, args.optimizer, args.lora_r) for m in args.method]
    if args.run:
        path = mm.run_experiment(model=args.model, methods=args.method, optimizer=args.optimizer, seq_len=args.seq_len, micro_batch=args.micro_batch, grad_accum=args.grad_accum, grad_ckpt=not args.no_grad_ckpt, steps=args.steps, lora_r=args.lora_r, run_id=args.run_id)
        print(f"run record: {path}")
        return 0
    df = mm.breakdown(setups)
    table = df.pivot_table(index="component", columns="setup", values="GiB", sort=False)
    table.loc["peak (allocator)"] = [mm.summarize(s)["peak_bytes"] / mm.GiB for s in setups]
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.float_format", "{:.2f}".format):
        print(f"predicted GPU memory, GiB ({args.model})")
        print(table.to_string())
    return 0


def _params(args) -> int:
    from . import models as M

    counts = M.component_counts(args.model)
    print(counts.map("{:,}".format).to_string())
    if args.lora_r:
        c = M.lora_count(args.model, args.lora_r)
        print(f"LoRA r={args.lora_r}: trainable params: {c.trainable:,} || all params: {c.total:,} || trainable%: {c.percent:.4f}")
    return 0


def _models(args) -> int:
    from . import models as M

    rows = [M.summary(m) for m in M.available_models()]
    print(pd.DataFrame(rows).to_string(index=False))
    return 0


def _runs(args) -> int:
    from .records import load_runs

    for r in load_runs(args.experiment):
        m = r.manifest
        print(f"{r.run_id:40s} {m['outcome']:8s} {r.gpu_name():28s} {m['started_utc']}  git {str(m['git'].get('sha'))[:10]}")
    return 0


def _trtllm(args) -> int:
    from dataclasses import fields

    import yaml

    from . import trtllm as T
    from .params import validate

    cls = T.TritonDeploy if args.workflow == "triton" else T.ServeDeploy
    values = {"model": args.model} if args.model else {}
    for item in args.set or []:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        values[key] = yaml.safe_load(raw)
    unknown = sorted(set(values) - {f.name for f in fields(cls)})
    if unknown:
        raise ValueError(f"unknown {args.workflow} parameter(s) {unknown}; known: {sorted(f.name for f in fields(cls))}")
    cfg = T.from_params(cls, validate(T.notebook_params(cls), values))
    if args.action == "plan":
        print(T.expected_files(cfg)["extra-llm-api-config.yml"] if args.yaml and cls is T.ServeDeploy else T.script(cfg), end="")
        return 0
    if args.action == "preflight":
        found = T.preflight(cfg, paths=args.paths)
        with pd.option_context("display.width", 250, "display.max_colwidth", 200):
            print(T.findings_table(found).to_string(index=False))
        return 1 if any(f.status == "error" for f in found) else 0
    try:
        print(f"run record: {T.run(cfg, run_id=args.run_id)}")
    except RuntimeError as e:  # the tools are missing: refused before any work
        print(f"llmstudy: error: {e}", file=sys.stderr)
        return 2
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="llmstudy", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)

    m = sub.add_parser("memory", help="predicted fine-tuning memory by component (or --run to measure)")
    m.add_argument("--model", default="llama-2-7b", help="a name under data/models or a path to a config.json")
    m.add_argument("--method", nargs="+", default=["lora", "qlora", "full"], help="METHOD[:OPTIMIZER[:DTYPE]], e.g. full:adamw_torch:fp32")
    m.add_argument("--optimizer", default="paged_adamw_8bit")
    m.add_argument("--seq-len", type=int, default=100)
    m.add_argument("--micro-batch", type=int, default=1)
    m.add_argument("--grad-accum", type=int, default=32)
    m.add_argument("--no-grad-ckpt", action="store_true")
    m.add_argument("--lora-r", type=int, default=4)
    m.add_argument("--steps", type=int, default=3)
    m.add_argument("--run", action="store_true", help="measure on this machine and write a run record")
    m.add_argument("--run-id", default="")
    m.set_defaults(fn=_memory)

    c = sub.add_parser("params", help="exact parameter counts per component (meta device)")
    c.add_argument("model")
    c.add_argument("--lora-r", type=int, default=0)
    c.set_defaults(fn=_params)

    sub.add_parser("models", help="the model configs under data/models").set_defaults(fn=_models)

    r = sub.add_parser("runs", help="list the run records of an experiment")
    r.add_argument("experiment")
    r.set_defaults(fn=_runs)

    t = sub.add_parser("trtllm", help="TensorRT-LLM workflows: print the plan, run the preflight, or run inside the container")
    t.add_argument("action", choices=("plan", "preflight", "run"))
    t.add_argument("workflow", choices=("triton", "serve"), help="triton: engine + Triton (old); serve: trtllm-serve (new)")
    t.add_argument("--model", default=None, help="a name under data/models or a path to a config.json")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="a notebook parameter, value in YAML (e.g. --set 'concurrencies=[1,8]')")
    t.add_argument("--yaml", action="store_true", help="plan serve: print only the extra LLM-API YAML")
    t.add_argument("--paths", action="store_true", help="preflight: also require the container's files (run mode does)")
    t.add_argument("--run-id", default="")
    t.set_defaults(fn=_trtllm)

    args = p.parse_args(argv)
    try:
        return args.fn(args)
    except ValueError as e:  # bad input: one clear line, no traceback
        print(f"llmstudy: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
