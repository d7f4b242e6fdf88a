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


def _lora_vs_qlora(args) -> int:
    from . import lora_vs_qlora as L

    if args.action == "dataset":
        out = L.concat_parts(args.parts or None, args.out)
        rows = L.load_rows(out)
        print(f"{out}: {len(rows)} rows")
    elif args.action == "fetch-tokenizer":
        print(L.llama2_tokenizer_dir())
    elif args.action == "prepare-model":
        print(L.prepare_model(args.model))
    elif args.action == "check":
        rows = L.load_rows(args.dataset or L.dataset_path())
        io = L.model_io(args.model)
        tok = L.tokenizer_for(args.model)
        lengths = L.token_lengths(rows, io["style"], tok)
        print(pd.Series(L.dataset_stats(rows)).to_string())
        print(pd.Series(L.check_lengths(lengths, args.max_length)).to_string())
        overlap = L.heldout_overlap(rows)
        print(f"evaluation prompts found in the dataset: {overlap or 'none'}")
    elif args.action == "run":
        path = L.run_experiment(model=args.model, variants=args.variants, parallel=args.parallel, steps=args.steps, epochs=args.epochs, eval_steps=args.eval_steps, max_length=args.max_length, optimizer=args.optimizer, dataset=args.dataset, run_id=args.run_id, deadline_s=args.deadline_s)
        print(f"run record: {path}")
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

    lq = sub.add_parser("lora-vs-qlora", help="the LoRA-vs-QLoRA chapter: dataset, tokenizer, small model, runs")
    lq.add_argument("action", choices=("dataset", "fetch-tokenizer", "prepare-model", "check", "run"), help="dataset: concatenate the part files into persona_ja.json; fetch-tokenizer: rebuild the Llama-2 tokenizer; prepare-model: fetch and convert a pretrained model; check: validate the dataset and its token lengths; run: train variants and write a run record")
    lq.add_argument("model", nargs="?", default="gemma-3-270m")
    lq.add_argument("--parts", nargs="*", help="part files to concatenate (default data/lora_vs_qlora/parts/part-a.json part-b.json)")
    lq.add_argument("--out", default=None)
    lq.add_argument("--dataset", default=None)
    lq.add_argument("--variants", nargs="+", default=["base", "lora", "qlora", "lora-fast", "qlora-fast"])
    lq.add_argument("--parallel", nargs="*", default=[], help="variants run side by side at the end")
    lq.add_argument("--steps", type=int, default=0, help="optimizer steps (0: full epochs with evaluation and answers)")
    lq.add_argument("--epochs", type=int, default=3)
    lq.add_argument("--eval-steps", type=int, default=4)
    lq.add_argument("--max-length", type=int, default=1024)
    lq.add_argument("--optimizer", default="paged_adamw_8bit")
    lq.add_argument("--run-id", default="")
    lq.add_argument("--deadline-s", type=float, default=None)
    lq.set_defaults(fn=_lora_vs_qlora)

    args = p.parse_args(argv)
    try:
        return args.fn(args)
    except ValueError as e:  # bad input: one clear line, no traceback
        print(f"llmstudy: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
