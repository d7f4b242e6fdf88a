"""The Triton model repository generator: ensemble(preprocessing -> engine -> postprocessing), as TensorRT-LLM's
``inflight_batcher_llm`` repository lays it out, with a Python-backend engine step (``hf``: transformers on CPU;
``vllm``: vLLM's AsyncLLM on the GPU).

``write_repository(dest, model_dir, tokenizer_dir, engine="hf", adapters={name: path}, ...)`` writes
``dest/{ensemble,preprocessing,engine,postprocessing}/config.pbtxt`` and ``<model>/1/model.py`` (copies of
``llmstudy/serving/triton/models/*.py``) with ``llmstudy_paths.json`` beside each model.py: the folders its Python
needs on ``sys.path`` (numpy 1 first for pre/postprocessing, then this package's source and the site-packages).

The ensemble's interface mirrors TensorRT-LLM's, so genai-perf's ``--endpoint-type kserve --backend tensorrtllm``
drives it: inputs text_input BYTES, max_tokens INT32, optional stream BOOL, lora_name BYTES, ignore_eos BOOL,
exclude_input_in_output BOOL, min_length INT32, bad_words / stop_words BYTES; output text_output BYTES.
"""

from __future__ import annotations

import json
import shutil
import sysconfig
from pathlib import Path

from llmstudy.serving.triton.params import ENGINES, TritonParams

MODELS_DIR = Path(__file__).resolve().parent / "models"
SRC_DIR = Path(__file__).resolve().parents[3]  # the folder holding the llmstudy package

VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # vllm.config.lora.MaxLoRARanks (0.11 through 0.32)


def vllm_max_lora_rank(r: int) -> int:
    """The smallest ``--max-lora-rank`` vLLM accepts that holds rank ``r`` (it takes only these values: 4 is refused)."""
    for v in VLLM_LORA_RANKS:
        if v >= r:
            return v
    raise ValueError(f"LoRA rank {r} exceeds vLLM's largest max_lora_rank {VLLM_LORA_RANKS[-1]}")

# ensemble inputs: (name, Triton type, optional); all dims [-1] per batch item
ENSEMBLE_INPUTS = [
    ("text_input", "TYPE_STRING", False),
    ("max_tokens", "TYPE_INT32", False),
    ("stream", "TYPE_BOOL", True),
    ("lora_name", "TYPE_STRING", True),
    ("ignore_eos", "TYPE_BOOL", True),
    ("exclude_input_in_output", "TYPE_BOOL", True),  # genai-perf's tensorrtllm payload sends [true]
    ("min_length", "TYPE_INT32", True),  # genai-perf with --output-tokens-mean-deterministic
    ("bad_words", "TYPE_STRING", True),
    ("stop_words", "TYPE_STRING", True),
]
# preprocessing -> engine tensors (all INT32): name, dims, optional at the engine
ENGINE_INPUTS = [("input_ids", "-1", False), ("input_length", "1", False), ("max_tokens", "1", False),
                 ("lora_id", "1", True), ("ignore_eos", "1", True), ("stream", "1", True)]


def _tensor(name: str, dtype: str, dims: str, optional: bool = False) -> str:
    opt = "\n    optional: true" if optional else ""
    return f"  {{\n    name: \"{name}\"\n    data_type: {dtype}\n    dims: [ {dims} ]{opt}\n  }}"


def _io(kind: str, tensors: list[str]) -> str:
    return f"{kind} [\n" + ",\n".join(tensors) + "\n]\n"


def _params(d: dict) -> str:
    out = ""
    for k, v in d.items():
        out += f"parameters {{\n  key: \"{k}\"\n  value: {{ string_value: {json.dumps(v)} }}\n}}\n"
    return out


def _instances(count: int, kind: str) -> str:
    return f"instance_group [\n  {{\n    count: {count}\n    kind: {kind}\n  }}\n]\n"


def _map(kind: str, pairs: list[tuple[str, str]]) -> str:
    return "".join(f"      {kind} {{\n        key: \"{k}\"\n        value: \"{v}\"\n      }}\n" for k, v in pairs)


def ensemble_config(p: TritonParams) -> str:
    ins = [_tensor(n, t, "-1", o) for n, t, o in ENSEMBLE_INPUTS]
    pre_in = [(n, n) for n, _, _ in ENSEMBLE_INPUTS]
    pre_out = [(n, f"_{n}") for n, _, _ in ENGINE_INPUTS]
    steps = [
        ("preprocessing", pre_in, pre_out),
        ("engine", [(n, f"_{n}") for n, _, _ in ENGINE_INPUTS], [("output_ids", "_output_ids")]),
        ("postprocessing", [("output_ids", "_output_ids")], [("text_output", "text_output")]),
    ]
    body = ""
    for name, imap, omap in steps:
        body += f"    {{\n      model_name: \"{name}\"\n      model_version: -1\n{_map('input_map', imap)}{_map('output_map', omap)}    }}"
        body += ",\n" if name != "postprocessing" else "\n"
    return (f"name: \"ensemble\"\nplatform: \"ensemble\"\nmax_batch_size: {p.max_batch_size}\n"
            + _io("input", ins) + _io("output", [_tensor("text_output", "TYPE_STRING", "-1")])
            + "ensemble_scheduling {\n  step [\n" + body + "  ]\n}\n")


def preprocessing_config(p: TritonParams, tokenizer_dir: str, adapters: list) -> str:
    ins = [_tensor(n, t, "-1", o) for n, t, o in ENSEMBLE_INPUTS]
    outs = [_tensor(n, "TYPE_INT32", d) for n, d, _ in ENGINE_INPUTS]
    return (f"name: \"preprocessing\"\nbackend: \"python\"\nmax_batch_size: {p.max_batch_size}\n"
            + f"dynamic_batching {{\n  max_queue_delay_microseconds: {p.max_queue_delay_us}\n}}\n"
            + _io("input", ins) + _io("output", outs)
            + _params({"tokenizer_dir": str(tokenizer_dir), "adapters": json.dumps(adapters)})
            + _instances(p.preprocessing_instances, "KIND_CPU"))


def engine_config(p: TritonParams, engine: str, engine_args: dict, adapters: list) -> str:
    ins = [_tensor(n, "TYPE_INT32", d, o) for n, d, o in ENGINE_INPUTS]
    kind = "KIND_CPU" if engine == "hf" else "KIND_MODEL"  # vLLM places itself on the GPU
    return (f"name: \"engine\"\nbackend: \"python\"\nmax_batch_size: {p.max_batch_size}\n"
            + "model_transaction_policy {\n  decoupled: true\n}\n"
            + _io("input", ins) + _io("output", [_tensor("output_ids", "TYPE_INT32", "-1")])
            + _params({"engine": engine, "engine_args": json.dumps(engine_args), "adapters": json.dumps(adapters)})
            + _instances(p.engine_instances, kind))


def postprocessing_config(p: TritonParams, tokenizer_dir: str) -> str:
    return (f"name: \"postprocessing\"\nbackend: \"python\"\nmax_batch_size: {p.max_batch_size}\n"
            + f"dynamic_batching {{\n  max_queue_delay_microseconds: {p.max_queue_delay_us}\n}}\n"
            + _io("input", [_tensor("output_ids", "TYPE_INT32", "-1")]) + _io("output", [_tensor("text_output", "TYPE_STRING", "-1")])
            + _params({"tokenizer_dir": str(tokenizer_dir)})
            + _instances(p.postprocessing_instances, "KIND_CPU"))


def _lora_rank(path: str) -> int | None:
    f = Path(path) / "adapter_config.json"
    return int(json.loads(f.read_text())["r"]) if f.is_file() else None


def engine_arguments(engine: str, model_dir: str, tokenizer_dir: str, adapters: list, engine_args: dict) -> dict:
    """The engine's arguments: ``engine_args`` plus what the repository fixes (the model folder; for vLLM the
    tokenizer and, with adapters, LoRA enabled with a rank that fits them)."""
    ea = {"model": str(model_dir), **engine_args}
    if engine == "vllm":
        ea.setdefault("tokenizer", str(tokenizer_dir))
        if adapters:
            ea.setdefault("enable_lora", True)
            ea.setdefault("max_loras", len(adapters))
            ranks = [r for r in (_lora_rank(a[1]) for a in adapters) if r]
            if ranks:  # vLLM accepts only these values (its MaxLoRARanks): the smallest that holds every adapter
                ea.setdefault("max_lora_rank", vllm_max_lora_rank(max(ranks)))
    return ea


def write_repository(dest: Path | str, model_dir: Path | str, tokenizer_dir: Path | str | None = None, engine: str = "hf",
                     adapters: dict[str, str] | None = None, max_batch_size: int | None = None,
                     preprocessing_instances: int | None = None, postprocessing_instances: int | None = None,
                     engine_instances: int | None = None, engine_args: dict | None = None,
                     params: TritonParams | None = None, numpy1_dir: Path | str | None = None,
                     site_packages: list[str] | None = None) -> Path:
    """Write the model repository into ``dest`` (replacing what is there) and return ``dest``.

    ``adapters``: {name: peft adapter folder}; their order is the lora_id order (lora_name "" = base model).
    ``numpy1_dir``: numpy 1 for the stub (default: ``TritonInstall.default().numpy1``).
    ``site_packages``: where the models import transformers/torch (default: this Python's site-packages).
    Arguments left None take ``params`` (default :class:`TritonParams`).
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    p = (params or TritonParams()).with_(max_batch_size=max_batch_size, preprocessing_instances=preprocessing_instances,
                                         postprocessing_instances=postprocessing_instances, engine_instances=engine_instances,
                                         engine_args=engine_args)
    model_dir = Path(model_dir).resolve()
    tokenizer_dir = Path(tokenizer_dir).resolve() if tokenizer_dir else model_dir
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"{model_dir} has no config.json (the engine loads the model from it)")
    if not any((tokenizer_dir / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
        raise FileNotFoundError(f"{tokenizer_dir} holds no tokenizer (tokenizer.json / tokenizer_config.json)")
    ad = [[str(n), str(Path(a).resolve())] for n, a in (adapters or {}).items()]
    for name, path in ad:
        if not name or not (Path(path) / "adapter_config.json").is_file():
            raise FileNotFoundError(f"adapter {name!r}: {path} has no adapter_config.json (a peft adapter folder)")
    src = MODELS_DIR / f"engine_{engine}.py"
    if not src.is_file():
        raise FileNotFoundError(f"no engine model {src}")
    if numpy1_dir is None:
        from llmstudy.serving.triton.install import TritonInstall

        numpy1_dir = TritonInstall.default().numpy1
    site = list(site_packages) if site_packages is not None else list(dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]))
    then = [str(SRC_DIR), *site]
    dest = Path(dest)
    if dest.exists():
        shutil.rmtree(dest)
    ea = engine_arguments(engine, str(model_dir), str(tokenizer_dir), ad, p.engine_args)
    layout = {
        "ensemble": (ensemble_config(p), None, None),
        "preprocessing": (preprocessing_config(p, str(tokenizer_dir), ad), MODELS_DIR / "preprocessing.py", [str(numpy1_dir)]),
        "engine": (engine_config(p, engine, ea, ad), src, []),
        "postprocessing": (postprocessing_config(p, str(tokenizer_dir)), MODELS_DIR / "postprocessing.py", [str(numpy1_dir)]),
    }
    for name, (config, model_py, first) in layout.items():
        (dest / name / "1").mkdir(parents=True)
        (dest / name / "config.pbtxt").write_text(config)
        if model_py is not None:
            shutil.copy2(model_py, dest / name / "1" / "model.py")
            (dest / name / "1" / "llmstudy_paths.json").write_text(json.dumps({"first": first, "then": then}, indent=1))
    return dest
