"""``llmstudy`` command line: model configs, parameter counts, the memory model, the KV capacity planner, run records."""

from __future__ import annotations

import argparse
import json
import sys

import pandas as pd


def _lora_lines(model: str, r: int, targets) -> list[str]:
    """The LoRA count (peft's own, as print_trainable_parameters shows it) and the modules it adapts."""
    from llmstudy.core import models as M

    c = M.lora_count(model, r, targets or None)
    t = M.lora_targets(model, targets or None)
    fused = [p + (f" (rank {t.rank_of(p.rsplit('.', 1)[-1], r)})" if dict(t.ranks).get(p.rsplit(".", 1)[-1]) else "") for p in t.parameters]
    lines = [f"LoRA r={r}: trainable params: {c.trainable:,} || all params: {c.total:,} || trainable%: {c.percent:.4f}",
             f"  adapted: {', '.join(t.modules) or '(no nn.Linear)'}" + (f"; fused experts: {', '.join(fused)}" if fused else "")]
    lines += [f"  not adapted: {n}" for n in t.not_adapted]
    return lines


def _qlora_line(model: str) -> str:
    from llmstudy.core import models as M

    table = M.parameters(model)
    kept = M.qlora_bf16_weights(model)
    return (f"QLoRA: {int(table[table.linear].numel.sum()):,} nn.Linear weights in NF4; kept in bf16 (bitsandbytes does not quantize them): "
            + ", ".join(f"{k} {int(v):,}" for k, v in kept.items()))


def _memory(args) -> int:
    from llmstudy.chapters import memory_accounting as ch
    from llmstudy.core.params import from_args
    from llmstudy.training import memory as mm

    values = from_args(ch.PARAMS, args, names=ch.CLI_NAMES)
    if args.run:
        print(f"run record: {ch.run_experiment(**ch.run_arguments(values))}")
        return 0
    setups = ch.setups(values)
    df = mm.breakdown(setups)
    table = df.pivot_table(index="component", columns="setup", values="GiB", sort=False, dropna=False)
    table.loc["peak (allocator)"] = [mm.summarize(s)["peak_bytes"] / mm.GiB for s in setups]
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.float_format", "{:.2f}".format):
        print(f"predicted GPU memory, GiB ({values['model']})")
        print(table.to_string())
    reason = mm.not_modelled(setups[0])
    if reason:
        print(f"NaN = not modelled: {reason}")
    for note in mm.approximations(values["model"]):
        print(f"approximate: {note} (Llama-block count, checked on Llama-2-7B)")
    if any(s.method != "full" for s in setups):
        print("\n".join(_lora_lines(values["model"], values["lora_r"], values["lora_targets"])))
    if any(s.method == "qlora" for s in setups):
        print(_qlora_line(values["model"]))
    return 0


def _params(args) -> int:
    from llmstudy.core import models as M

    a = M.describe(args.model)
    counts = M.component_counts(args.model)
    print(f"{M.title(args.model)}: {a.architecture}, {'/'.join(a.families)}, {a.num_layers} layers")
    print(counts.map("{:,}".format).to_string())
    if args.lora_r:
        print("\n".join(_lora_lines(args.model, args.lora_r, args.lora_targets)))
        print(_qlora_line(args.model))
    return 0


def _models(args) -> int:
    from llmstudy.core import models as M

    rows = [M.summary(m) for m in M.available_models()]
    print(pd.DataFrame(rows).to_string(index=False))
    return 0


def _capacity(args) -> int:
    from llmstudy.chapters import context_limits as cap
    from llmstudy.serving import kv_planner as KP

    if args.run:
        path = cap.run_experiment(configs=args.run, run_id=args.run_id, root=args.root or None, deadline_s=args.deadline_s)
        print(f"run record: {path}")
        return 0
    if args.table:
        fn = {"article": cap.article_comparison, "blog": cap.blog_comparison}[args.table]
        df = fn(args.version or ("0.8.3" if args.table in ("article", "blog") else "0.25.0"))
        with pd.option_context("display.width", 250, "display.max_columns", 30, "display.float_format", "{:,.2f}".format):
            print(df.drop(columns=[c for c in ("message", "config") if c in df]).to_string(index=False))
        return 0
    gib = lambda v: None if v is None else int(v * cap.GiB)  # noqa: E731
    hybrid = {"on": True, "off": False, None: None}[args.hybrid]
    dep = cap.Deployment(model=args.model, gpu=args.gpu, num_gpus=args.num_gpus, tp=args.tp, pp=args.pp, weights=args.weights,
                         kv_dtype=args.kv_dtype, gpu_memory_utilization=args.gpu_memory_utilization, max_num_batched_tokens=args.max_num_batched_tokens,
                         max_num_seqs=args.max_num_seqs, max_model_len=args.max_model_len,
                         vllm_version=args.version or KP.DEPLOYMENT_DEFAULTS["vllm_version"],
                         hybrid_kv=hybrid, enforce_eager=args.enforce_eager, text_only=args.text_only,
                         weights_bytes=gib(args.weights_gib), activation_peak_bytes=gib(args.activation_gib),
                         non_torch_bytes=gib(args.non_torch_gib), cudagraph_bytes=gib(args.cudagraph_gib))
    p = cap.plan(dep)
    print("\n".join(KP.plan_lines(p)))  # the browser calculator shows the same lines (llmstudy.calc.kv)
    return 0 if p.outcome == "ok" else 3


def _runs(args) -> int:
    from llmstudy.core.records import load_runs, run_models

    for r in load_runs(args.experiment):
        m = r.manifest
        models = ",".join(run_models(r)) or "-"
        if args.model and args.model not in run_models(r):
            continue
        print(f"{r.run_id:40s} {m['outcome']:8s} {r.gpu_name():28s} {m['started_utc']}  git {str(m['git'].get('sha'))[:10]}  {models}")
    return 0


SWEEP_KINDS = {  # kind -> (chapter package, sweeps it runs (None: the chapter's parameter), help)
    "batch-size": ("batch_size_sweep", None, "max_num_seqs x concurrency (chapter batch_size_sweep)"),
    "length": ("length_sweep", None, "max_model_len sweep and the input x output grid (chapter length_sweep)"),
    "max-model-len": ("length_sweep", ["max_model_len"], "only the max_model_len sweep of chapter length_sweep"),
    "io": ("length_sweep", ["io"], "only the input x output grid of chapter length_sweep"),
}
SWEEP_NOT_CLI = ("mode", "run_ids")  # analyze-mode parameters of the notebooks


def _sweep_chapter(kind: str):
    import importlib

    return importlib.import_module(f"llmstudy.chapters.{SWEEP_KINDS[kind][0]}")


def _sweep(args) -> int:
    from llmstudy.core.params import from_args, validate
    from llmstudy.serving import sweep as SB

    ch = _sweep_chapter(args.kind)
    P = validate(ch.PARAMS, from_args(ch.PARAMS, args))  # the chapter's spec: the same checks as the notebook's
    if SWEEP_KINDS[args.kind][1]:
        P["sweeps"] = SWEEP_KINDS[args.kind][1]
    if args.plan:
        for p in ch.plan(P):
            print(p.point_id, p.workload.num_prompts, "prompts", p.refusal() or "")
        return 0
    try:
        path = ch.run(P, **from_args(SB.RUN_OPTIONS, args))
    except SB.SweepIncomplete as e:
        print(f"llmstudy: incomplete: {e}", file=sys.stderr)
        return 3
    print(f"run record: {path}")
    return 0


def _trtllm(args) -> int:
    from dataclasses import fields

    import yaml

    from llmstudy.chapters import trtllm as T
    from llmstudy.core.params import validate

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
def _lora_vs_qlora(args) -> int:
    from llmstudy.chapters import lora_vs_qlora as L
    from llmstudy.core.params import from_args

    if args.action == "dataset":
        out = L.concat_parts(args.parts or None, args.out)
        rows = L.load_rows(out)
        print(f"{out}: {len(rows)} rows")
    elif args.action == "fetch-tokenizer":
        print(L.llama2_tokenizer_dir())
    elif args.action == "prepare-model":
        print(L.prepare_model(args.model))
    elif args.action == "check":
        p = from_args(L.PARAMS, args, names=L.CLI_NAMES)  # bad values: one line naming them, before any work
        rows = L.load_rows(p["dataset"] or L.dataset_path())
        io = L.model_io(p["model"])
        tok = L.tokenizer_for(p["model"])
        lengths = L.token_lengths(rows, io["style"], tok)
        print(pd.Series(L.dataset_stats(rows)).to_string())
        print(pd.Series(L.check_lengths(lengths, p["max_length"])).to_string())
        overlap = L.heldout_overlap(rows)
        print(f"evaluation prompts found in the dataset: {overlap or 'none'}")
    elif args.action == "run":
        path = L.run_experiment(**L.run_arguments(from_args(L.PARAMS, args, names=L.CLI_NAMES)), deadline_s=args.deadline_s)
        print(f"run record: {path}")
    return 0


def _features(args) -> int:
    from llmstudy.chapters import vllm_features as F
    from llmstudy.core.params import from_args
    from llmstudy.serving import sweep as SB

    if args.action == "prompts":
        for kind, path in F.build_prompts().items():
            print(f"{kind}: {path}")
        return 0
    P = from_args(F.PARAMS, args)  # the chapter's spec: the same checks as the notebook's
    kw = {"repeats": P["repeats"], "concurrency": tuple(P["concurrency"])}
    if args.action == "plan":
        pts = F.plan(P["arms"], **kw)
        for p in pts:
            print(f"{p.point_id:70s} {p.workload.num_prompts:4d} prompts {p.workload.warmups:2d} warm-ups  {' '.join(p.server.args())}")
        est = F.estimate(pts)
        print(est.to_string(index=False, float_format="{:,.0f}".format))
        print(f"estimated total: {est.total_s.sum() / 60:.1f} min for {len(est)} server starts and {len(pts)} points (rough: H100 probes, 7B)")
        return 0
    try:
        path = F.run(P["arms"], model=P["model"], run_id=P["run_id"], budget_s=P["budget_s"], port=args.port or None, start_timeout_s=args.start_timeout_s, **kw)
    except SB.SweepIncomplete as e:
        print(f"llmstudy: incomplete: {e}", file=sys.stderr)
        return 3
    print(f"run record: {path}")
    return 0


def _engines(args) -> int:
    from llmstudy.chapters import engine_comparison as EC
    from llmstudy.core.params import from_args, known_model
    from llmstudy.serving import sweep as SB

    P = from_args(EC.PARAMS, args)  # the chapter's spec: the same checks as the notebook's
    if args.model is not None and known_model(args.model):
        raise ValueError(f"--model {args.model!r}: {known_model(args.model)}")
    if args.action == "plan":
        model, pts = EC.plan(P["part"], P["second_engine"], args.moe_backend, args.model)
        print(f"model {model}: {len(pts)} points")
        for p in pts:
            print(p.point_id, p.workload.num_prompts, "prompts", p.workload.warmups, "warm-ups", " ".join(p.server.args()))
        return 0
    if args.action == "run":
        try:
            path = EC.run_part(P["part"], run_id=P["run_id"], second=P["second_engine"], budget_s=P["budget_s"], max_servers=args.max_servers, start_timeout_s=args.start_timeout_s,
                               point_timeout_s=args.point_timeout_s, moe_backend=args.moe_backend, model=args.model)
        except SB.SweepIncomplete as e:
            print(f"llmstudy: incomplete: {e}", file=sys.stderr)
            return 3
        print(f"run record: {path}")
        return 0
    if args.action == "sglang-pins":
        pins = EC.sglang_pins(args.versions or None)
        print(pins.to_string(index=False))
        print(f"newest SGLang pinning torch 2.11.0: {EC.newest_with_torch(pins)}")
        return 0
    pts = EC.load_points(P["run_ids"])
    if not len(pts):
        print("no engine_comparison records" + (f" among {P['run_ids']}" if P["run_ids"] else ""))
        return 1
    status = 0
    with pd.option_context("display.width", 250, "display.max_colwidth", 120):
        for key, g in EC.comparison_sets(pts).items():
            print(f"== {' / '.join(map(str, key))}: engines {sorted(g.engine.unique())}")
            rep = EC.fairness(g)
            print(rep.to_string(index=False))
            if args.action == "wins":
                if not rep["ok"].all():
                    print("not compared: a fairness rule is broken")
                    status = 4
                    continue
                print(EC.win_table(g[g.outcome == "ok"]).to_string(index=False))
    return status


def _site(args) -> int:
    from pathlib import Path

    from llmstudy.publishing import site as P

    if args.action == "build":
        out = P.build_site(site=Path(args.site) if args.site else None, base_url=args.base_url,
                           path_output=Path(args.path_output) if args.path_output else None, jobs=args.jobs)
        print(f"site: {out} (switcher: {out.parent / 'switcher.json'})")
        return 0
    if args.action == "bench":
        res = P.benchmark(Path(args.path_output) if args.path_output else None, jobs=args.jobs)
        print(json.dumps(res, indent=1))
        return 0
    from llmstudy.publishing import readercheck as RC

    site = Path(args.site or P.repo_root() / P.SITE_DIR)
    v = args.version or P.version()
    rep = RC.check(site, P.page_paths(), prefix=f"{v}/", notebooks=P.notebook_pages())
    print(f"{rep.pages} pages, {rep.images} figures, {rep.glued} glued values, {rep.math} math elements, "
          f"{rep.provenance} figure/table cells with provenance, {rep.links} internal links")
    for p in rep.problems:
        print(f"  problem: {p}")
    return 0 if rep.ok() else 1


def _fork(args) -> int:
    from pathlib import Path

    from llmstudy.publishing import fork as F

    dest, summary = F.fork(args.config, args.name, out=args.out or None, force=args.force, jobs=args.jobs)
    out = Path(args.out or F.repo_root() / "_build" / "forks" / args.name).resolve()
    print(f"model: {dest}")
    with pd.option_context("display.width", 200, "display.max_colwidth", 90):
        print(summary[["chapter", "status", "records", "problems"]].to_string(index=False))
    print(f"book: {out / 'html' / 'index.html'}  summary: {out / 'SUMMARY.md'}")
    return 1 if summary.status.str.startswith("failed").any() or (summary.problems != "").any() else 0


def _claims(args) -> int:
    from llmstudy.publishing import claims as C

    t = C.table()
    with pd.option_context("display.width", 250, "display.max_colwidth", 120):
        print(t[["claim", "chapter", "status", "evidence"]].to_string(index=False))
    return 1 if (t.status == C.CONTRADICTED).any() else 0


def _chapters(args) -> int:
    from llmstudy.publishing import site as P

    if args.run_matrix:
        only = [c.strip() for c in (args.only or "").split(",") if c.strip()]
        unknown = sorted(set(only) - {nb.stem for nb in P.chapters()})
        if unknown:
            raise ValueError(f"unknown chapter(s) {unknown}; the TOC has {[nb.stem for nb in P.chapters()]}")
        include, skipped = P.run_recipes(only=only or None)
        for s in skipped:
            print(f"{s['chapter']}: {s['reason']}", file=sys.stderr)
        print(json.dumps({"include": include}))
        return 0
    for nb in P.chapters():
        print(nb.relative_to(P.repo_root()))
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="llmstudy", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)

    from llmstudy.chapters.memory_accounting.params import CLI_NAMES as MEMORY_FLAGS
    from llmstudy.chapters.memory_accounting.params import PARAMS as MEMORY_PARAMS
    from llmstudy.core.params import add_arguments

    m = sub.add_parser("memory", help="predicted fine-tuning memory by component (or --run to measure)")
    add_arguments(m, MEMORY_PARAMS, names=MEMORY_FLAGS)
    methods = next(a for a in m._actions if a.dest == "methods")  # --method, as the README and the book write it
    methods.option_strings.append("--method")
    m._option_string_actions["--method"] = methods
    m.add_argument("--run", action="store_true", help="measure on this machine and write a run record (the chapter's run mode)")
    m.set_defaults(fn=_memory)

    c = sub.add_parser("params", help="exact parameter counts per component (every tensor of the config, as transformers builds it), architecture, LoRA and QLoRA")
    c.add_argument("model", help="a name under data/models, a folder, or a config file of any name")
    c.add_argument("--lora-r", type=int, default=0, help="also count LoRA of this rank (peft) and name the adapted modules")
    c.add_argument("--lora-targets", nargs="*", default=[], help="LoRA target module names (default: every linear projection and fused expert tensor)")
    c.set_defaults(fn=_params)

    sub.add_parser("models", help="the model configs under data/models").set_defaults(fn=_models)

    # defaults: the planner's Deployment (one home for a deployment's defaults), the chapter's PARAMS for the run
    from llmstudy.chapters.context_limits.params import PARAMS as CL
    from llmstudy.serving import kv_planner as KP

    D = KP.DEPLOYMENT_DEFAULTS
    k = sub.add_parser("capacity", help="KV-cache capacity planner: logged 'GPU KV cache size', memory split, longest context (vLLM rules)")
    k.add_argument("--model", default=D["model"], help="a name under data/models or a path to a config.json")
    k.add_argument("--gpu", default=D["gpu"], choices=tuple(KP.GPUS), help="GPU kind (or --gpu-memory-bytes)")
    k.add_argument("--num-gpus", type=int, default=D["num_gpus"])
    k.add_argument("--tp", type=int, default=D["tp"], help="tensor parallel size (default: num_gpus / pp)")
    k.add_argument("--pp", type=int, default=D["pp"])
    k.add_argument("--weights", default=D["weights"], choices=tuple(KP.WEIGHT_FORMATS))
    k.add_argument("--kv-dtype", default=D["kv_dtype"], choices=tuple(KP.KV_DTYPES))
    k.add_argument("--gpu-memory-utilization", type=float, default=D["gpu_memory_utilization"],
                   help="default: the version's (" + ", ".join(f"{v}: {r.default_utilization}" for v, r in KP.VERSIONS.items()) + ")")
    k.add_argument("--max-num-batched-tokens", type=int, default=D["max_num_batched_tokens"])
    k.add_argument("--max-num-seqs", type=int, default=D["max_num_seqs"])
    k.add_argument("--max-model-len", type=int, default=D["max_model_len"])
    k.add_argument("--version", default=None, choices=tuple(KP.VERSIONS), help=f"vLLM rules (default {D['vllm_version']}; tables: 0.8.3)")
    k.add_argument("--hybrid", choices=("on", "off"), default=None, help="hybrid KV cache manager (default: the version's)")
    k.add_argument("--enforce-eager", action="store_true")
    k.add_argument("--text-only", action="store_true", help="serve the language model alone (Llama4ForCausalLM)")
    k.add_argument("--weights-gib", type=float, default=None, help="measured weights per GPU (replaces the architecture's)")
    k.add_argument("--activation-gib", type=float, default=None, help="measured activation peak (replaces the estimate)")
    k.add_argument("--non-torch-gib", type=float, default=None, help="measured non-torch memory (replaces the estimate)")
    k.add_argument("--cudagraph-gib", type=float, default=None, help="measured CUDA-graph estimate (replaces the estimate)")
    k.add_argument("--table", choices=("article", "blog"), default=None, help="print a reproduced published table instead")
    k.add_argument("--run", nargs="+", default=None, help="measure: configuration names or device calls a-c (4 GPUs), d-e (8 GPUs), "
                   "g (1 GPU: seven model families) (needs GPUs)")
    k.add_argument("--run-id", default=CL["run_id"].default)
    k.add_argument("--root", default="", help="runs root for --run (default data/runs)")
    k.add_argument("--deadline-s", type=float, default=CL["deadline_s"].default)
    k.set_defaults(fn=_capacity)

    r = sub.add_parser("runs", help="list the run records of an experiment (and the models they measured)")
    r.add_argument("experiment")
    r.add_argument("--model", default="", help="only the records that measured this model")
    r.set_defaults(fn=_runs)

    s = sub.add_parser("sweep", help="serving sweeps on vLLM (batch-size | length | max-model-len | io); flags from each chapter's parameters")
    from llmstudy.core.params import add_arguments as _sw_add
    from llmstudy.serving.sweep import RUN_OPTIONS as _sw_options

    sk = s.add_subparsers(dest="kind", required=True)
    for kind, (_chapter, sweeps, help_) in SWEEP_KINDS.items():
        k = sk.add_parser(kind, help=help_)
        _sw_add(k, _sweep_chapter(kind).PARAMS, exclude=SWEEP_NOT_CLI + (("sweeps",) if sweeps else ()))
        _sw_add(k, _sw_options)
        k.add_argument("--plan", action="store_true", help="print the points and exit")
        k.set_defaults(fn=_sweep)
    t = sub.add_parser("trtllm", help="TensorRT-LLM workflows: print the plan, run the preflight, or run inside the container")
    t.add_argument("action", choices=("plan", "preflight", "run"))
    t.add_argument("workflow", choices=("triton", "serve"), help="triton: engine + Triton (old); serve: trtllm-serve (new)")
    t.add_argument("--model", default=None, help="a name under data/models or a path to a config.json")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="a notebook parameter, value in YAML (e.g. --set 'concurrencies=[1,8]')")
    t.add_argument("--yaml", action="store_true", help="plan serve: print only the extra LLM-API YAML")
    t.add_argument("--paths", action="store_true", help="preflight: also require the container's files (run mode does)")
    t.add_argument("--run-id", default="")
    t.set_defaults(fn=_trtllm)
    lq = sub.add_parser("lora-vs-qlora", help="the LoRA-vs-QLoRA chapter: dataset, tokenizer, small model, runs")
    lq.add_argument("action", choices=("dataset", "fetch-tokenizer", "prepare-model", "check", "run"), help="dataset: concatenate the part files into persona_ja.json; fetch-tokenizer: rebuild the Llama-2 tokenizer; prepare-model: fetch and convert a pretrained model; check: validate the dataset and its token lengths; run: train variants and write a run record")
    from llmstudy.chapters.lora_vs_qlora.params import CLI_NAMES as _lq_names
    from llmstudy.chapters.lora_vs_qlora.params import PARAMS as _lq_params
    from llmstudy.core.params import add_arguments as _lq_add

    _lq_add(lq, _lq_params, names=_lq_names, positional=("model",))  # the chapter's parameters: one home
    lq.add_argument("--parts", nargs="*", help="part files to concatenate (default data/lora_vs_qlora/parts/part-a.json part-b.json)")
    lq.add_argument("--out", default=None)
    lq.add_argument("--deadline-s", type=float, default=None)
    lq.set_defaults(fn=_lora_vs_qlora)

    f = sub.add_parser("features", help="vLLM feature ablations: plan (points, time estimate), run (one record per selection), prompts (rebuild the text prompts)")
    f.add_argument("action", choices=("plan", "run", "prompts"))
    from llmstudy.chapters.vllm_features.params import PARAMS as _features_params
    from llmstudy.core.params import add_arguments

    add_arguments(f, _features_params, names=("arms", "model", "repeats", "concurrency", "run_id", "budget_s"), positional=("arms",))
    f.add_argument("--port", type=int, default=0)
    f.add_argument("--start-timeout-s", type=float, default=420)
    f.set_defaults(fn=_features)


    en = sub.add_parser("engines", help="engine comparison: vLLM vs SGLang (or transformers) and gpt-oss on vLLM; fairness-checked win tables")
    en.add_argument("action", choices=("plan", "run", "check", "wins", "sglang-pins"), help="plan/run a part; check: the fairness rules on the records; wins: who wins where (fair records only); sglang-pins: which SGLang releases pin which torch (asks the package index)")
    from llmstudy.chapters.engine_comparison.params import PARAMS as _engines_params
    from llmstudy.core.params import add_arguments

    add_arguments(en, _engines_params, names=("part", "second_engine", "run_id", "run_ids", "budget_s"), positional=("part",))
    en.add_argument("--model", default=None, help="plan/run: the model to serve (default: the part's, the chapter's model_7b or gptoss_model)")
    en.add_argument("--max-servers", type=int, default=None, help="serve at most this many server settings in this call")
    en.add_argument("--start-timeout-s", type=float, default=900)
    en.add_argument("--point-timeout-s", type=float, default=600)
    en.add_argument("--versions", nargs="*", default=[], help="sglang-pins: the releases to read")
    en.add_argument("--moe-backend", default=None, help="gptoss-vllm: vLLM --moe-backend (e.g. marlin) instead of vLLM's own choice")
    en.set_defaults(fn=_engines)
    st = sub.add_parser("site", help="the versioned site: build site/<version>/, benchmark the build, or run the reader's check")
    st.add_argument("action", choices=("build", "bench", "check"))
    st.add_argument("--site", default="", help="the site folder (default site/)")
    st.add_argument("--base-url", default="/", help="where the site folder is served (the switcher's links)")
    st.add_argument("--path-output", default="", help="build folder (default: the checkout's _build; bench: a fresh temp folder)")
    st.add_argument("--jobs", type=int, default=2, help="notebooks executed at a time")
    st.add_argument("--version", default="", help="check: the version folder to check (default: the current version)")
    st.set_defaults(fn=_site)
    fk = sub.add_parser("fork", help="add a model config and render the whole book for it as HTML (_build/forks/<name>/html)")
    fk.add_argument("config", help="a Hugging Face config file (any name) or a folder holding config.json")
    fk.add_argument("--name", required=True, help="the new model's name: data/models/<name>/")
    fk.add_argument("--out", default="", help="where the fork goes: html/, book/, SUMMARY.md (default _build/forks/<name>)")
    fk.add_argument("--force", action="store_true", help="replace an existing data/models/<name>/")
    fk.add_argument("--jobs", type=int, default=2, help="chapters executed at a time")
    fk.set_defaults(fn=_fork)
    cl = sub.add_parser("claims", help="the book's headline claims and their verdicts against data/runs")
    cl.set_defaults(fn=_claims)
    ch = sub.add_parser("chapters", help="the chapters of _toc.yml; --run-matrix: the GPU workflow's matrix")
    ch.add_argument("--run-matrix", action="store_true")
    ch.add_argument("--only", default="", help="--run-matrix: comma-separated chapter names (default: all with a recipe)")
    ch.set_defaults(fn=_chapters)

    args = p.parse_args(argv)
    try:
        return args.fn(args)
    except ValueError as e:  # bad input: one clear line, no traceback
        print(f"llmstudy: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
