"""The article's published numbers, the pinned skeleton's placeholders, the pitfalls table and the reviewed expected files."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from llmstudy.core.paths import data_dir

from .params import TritonDeploy
from .plan import fill_values, script, serve_yaml
from .preflight import check_model, preflight


def published(workflow: str | None = None) -> pd.DataFrame:
    """The article's numbers (labelled with section and setting), never mixed with measurements."""
    df = pd.read_csv(data_dir() / "trtllm" / "published.csv")
    return df[df.workflow == workflow].reset_index(drop=True) if workflow else df


def skeleton_keys() -> dict[str, list[str]]:
    """The ${placeholders} of each inflight_batcher_llm config.pbtxt in the pinned release (reviewed data)."""
    return json.loads((data_dir() / "trtllm" / "skeleton_keys.json").read_text())["keys"]


def write_skeleton(root: Path, filled: TritonDeploy | None = None) -> Path:
    """A stand-in for ``all_models/inflight_batcher_llm``: one config.pbtxt per model holding its placeholders, filled
    the way fill_template.py fills them (``string.Template.safe_substitute``) when ``filled`` is given."""
    from string import Template

    values = fill_values(filled) if filled else {}
    for model, keys in skeleton_keys().items():
        text = "\n".join(f'parameters: {{ key: "{k}" value: {{ string_value: "${{{k}}}" }} }}' for k in keys) + "\n"
        (root / model).mkdir(parents=True, exist_ok=True)
        (root / model / "config.pbtxt").write_text(Template(text).safe_substitute(values.get(model, {})))
    return root


PITFALLS = (  # (pitfall, what the article saw, the bad setting)
    ("dtype mismatch", "std::bad_cast at server start", {"lora_storage_type": "bfloat16"}),
    ("LoRA modules not one to one", "map::at at server start", {"build_lora_modules": ["attn_qkv", "attn_dense", "mlp_h_to_4h", "mlp_4h_to_h", "mlp_gate"]}),
    ("engine folder missing", "a start-up log that does not name the folder", {"build_engine": False, "work_dir": "/nonexistent"}),
    ("template already filled", "edits to the parameters have no effect", "filled"),
    ("Triton default max batch size", "default-max-batch-size 4 in the log, unsteady benchmarks", {"backend_default_max_batch_size": 4}),
    ("max_lora_rank below the adapter's rank", "the adapter cannot be loaded", {"max_lora_rank": 2}),
    ("streaming without decoupled mode", "no streamed responses", {"streaming": True}),
)


def pitfalls(cfg: TritonDeploy, scratch: Path | None = None) -> pd.DataFrame:
    """Each pitfall of the article applied to ``cfg`` and what the preflight says about it (CPU only); the filled
    skeleton of one pitfall is written under ``scratch`` (a new temporary folder by default), and the table names it
    by the folder it stands for, ``cfg.backend_root``, never by the scratch path."""
    import tempfile
    from dataclasses import replace

    scratch = Path(scratch) if scratch is not None else Path(tempfile.mkdtemp(prefix="llmstudy-pitfalls-"))

    rows = []
    for name, symptom, change in PITFALLS:
        if change == "filled":
            bad = replace(cfg, backend_root=str(scratch), fresh_copy=True)
            write_skeleton(scratch / "all_models" / "inflight_batcher_llm", filled=cfg)
            change = {"skeleton": "filled once already"}
        else:
            bad = replace(cfg, **change)
        errors = [f for f in preflight(bad) if f.status == "error"]
        # the stand-in skeleton lives in a scratch folder; the table names the folder it stands for (backend_root)
        msg = errors[0].message.replace(str(scratch), cfg.backend_root) if errors else "(not caught)"
        rows.append({"pitfall": name, "article saw": symptom, "bad setting": ", ".join(f"{k}={v}" for k, v in change.items()),
                     "preflight": msg, "fix": errors[0].fix if errors else ""})
    return pd.DataFrame(rows)


def expected_dir(model: str) -> Path:
    return data_dir() / "trtllm" / "expected" / Path(str(model)).name


def expected_files(cfg) -> dict[str, str]:
    """Golden file name -> generated text: the plan script (and, for trtllm-serve, the YAML on its own)."""
    if isinstance(cfg, TritonDeploy):
        return {"triton_plan.sh": script(cfg)}
    import yaml

    return {"serve_plan.sh": script(cfg), "extra-llm-api-config.yml": yaml.safe_dump(serve_yaml(cfg), sort_keys=False)}


def expected_status(cfg) -> str:
    """Whether the generated plan (and YAML) is the reviewed expected file of its model, as a sentence."""
    from llmstudy.core.paths import repo_root

    golden = expected_dir(cfg.model)
    if all((golden / name).is_file() and (golden / name).read_text() == text for name, text in expected_files(cfg).items()):
        if isinstance(cfg, TritonDeploy):
            return f"This plan is identical to the reviewed expected file {(golden / 'triton_plan.sh').relative_to(repo_root())}."
        return f"This plan and YAML are identical to the reviewed expected files in {golden.relative_to(repo_root())}/."
    return "These parameters differ from the reviewed defaults: the plan above has not been reviewed by hand."


def run_command(cfg) -> str:
    """The command that runs this chapter for ``cfg.model`` on a GPU runner (inside the workflow's container)."""
    chapter = "trtllm_triton_deploy" if isinstance(cfg, TritonDeploy) else "trtllm_serve"
    return f"papermill notebooks/{chapter}.ipynb {chapter}-run.ipynb -p mode run -p model {cfg.model}"


def no_record_note(cfg) -> str:
    """What the run-records section says when this model has none."""
    from llmstudy.core import models as M
    from llmstudy.core.book import not_measured

    from .config import SERVE_EXPERIMENT, SERVE_IMAGE, TRITON_EXPERIMENT, TRITON_IMAGE

    experiment, image = (TRITON_EXPERIMENT, TRITON_IMAGE) if isinstance(cfg, TritonDeploy) else (SERVE_EXPERIMENT, SERVE_IMAGE)
    blocked = [f.message for f in check_model(cfg) if f.status == "error"]
    if blocked:  # a command that would stop at its preflight is no way to measure it
        return (f"No run record of {cfg.model} in data/runs/{experiment}: not measured for {M.title(cfg.model)}, and this workflow cannot run it "
                f"as planned: {'; '.join(blocked)}.")
    return (f"No run record of {cfg.model} in data/runs/{experiment}: this project did not execute TensorRT-LLM for it; "
            f"{not_measured(M.title(cfg.model), run_command(cfg))}, inside {image} (.github/workflows/gpu-trtllm.yml).")
