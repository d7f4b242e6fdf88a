"""Fork the study for a new model: add its config as ``data/models/<name>/`` and render every chapter for it.

The chapters come from ``_toc.yml`` (whoever added them); a chapter is rendered for the new model by setting, with
papermill, every parameter whose default names a shipped model (``model``, ``speed_model``; a list of model names
such as ``compare_models`` becomes ``[name]``). A chapter without such a parameter is listed and left out. Chapters
run in analyze mode: what needs only the config is computed for the new model, and a chapter with no run record of
it says so. Failures are results: a chapter that fails is reported in the summary, the others still render.
"""

from __future__ import annotations

import ast
import datetime as dt
import hashlib
import json
import re
from pathlib import Path

import pandas as pd

from llmstudy.core import models as M
from llmstudy.publishing import site as publish
from llmstudy.core.paths import models_dir, repo_root

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


class ForkError(ValueError):
    """The config or the name cannot become a model of the study (said before anything is written)."""


def validate_config(config: Path) -> dict:
    """The config as a dict, after building its architecture on the meta device (a clear error otherwise)."""
    config = Path(config)
    if config.is_dir():
        config = config / "config.json"
    if not config.is_file():
        raise ForkError(f"{config}: no such config.json")
    try:
        raw = json.loads(config.read_text())
    except json.JSONDecodeError as e:
        raise ForkError(f"{config}: not valid JSON ({e})") from e
    if not isinstance(raw, dict) or "model_type" not in raw:
        raise ForkError(f"{config}: a Hugging Face config.json needs a model_type")
    try:
        total = int(M.component_counts(config)["total"])
    except Exception as e:  # transformers' own message says what is wrong with the config
        raise ForkError(f"{config}: transformers cannot build this architecture: {type(e).__name__}: {e}") from e
    if total <= 0:
        raise ForkError(f"{config}: the architecture has no parameters")
    return raw


def add_model(config: Path, name: str, force: bool = False) -> Path:
    """Write ``data/models/<name>/config.json`` and a SOURCE.md stub saying where the config came from."""
    if not NAME_RE.match(name):
        raise ForkError(f"model name {name!r}: use lower-case letters, digits, '.', '_' or '-' (max 64)")
    raw = validate_config(config)
    dest = models_dir() / name
    if (dest / "config.json").exists() and not force:
        raise ForkError(f"{dest} exists already; pick another --name or pass --force")
    src = Path(config) / "config.json" if Path(config).is_dir() else Path(config)
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "config.json").write_text(json.dumps(raw, indent=2) + "\n")
    counts = M.component_counts(dest / "config.json")
    (dest / "SOURCE.md").write_text(
        f"# {name}\n\n"
        f"Added by `llmstudy fork` on {dt.date.today().isoformat()} from `{src.resolve()}` (sha256 `{digest}`).\n"
        f"Architecture: `{raw.get('model_type')}` ({', '.join(raw.get('architectures') or []) or 'no architectures field'}), "
        f"{int(counts['total']):,} parameters as built by transformers on the meta device.\n\n"
        "TODO: say where these values come from (the model card or repository, its revision and licence), as the other\n"
        "`data/models/*/SOURCE.md` do. No weights are needed for the memory and speed chapters.\n")
    return dest


def _literal(default: str):
    try:
        return ast.literal_eval(default)
    except (ValueError, SyntaxError):
        return None


def chapter_parameters(notebook: Path, name: str, known: list[str] | None = None) -> dict | None:
    """The papermill parameters that point ``notebook`` at model ``name``; None if no parameter names a model."""
    import papermill as pm

    known = set(known if known is not None else M.available_models())
    known.discard(name)
    declared = pm.inspect_notebook(str(notebook))
    out = {}
    for key, p in declared.items():
        value = _literal(p["default"])
        if isinstance(value, str) and value in known:
            out[key] = name
        elif isinstance(value, list) and value and all(isinstance(v, str) and v in known for v in value):
            out[key] = [name]
    if not out:
        return None
    if "mode" in declared:
        out["mode"] = "analyze"
    return out


def _records_of(experiment: str, name: str) -> int:
    from llmstudy.core.records import load_runs, run_model

    try:
        return sum(1 for r in load_runs(experiment, strict=False) if run_model(r) == name)
    except OSError:
        return 0


def render(name: str, out: Path | None = None, chapters: list[Path] | None = None, timeout_s: int = 900) -> pd.DataFrame:
    """Execute every TOC chapter for model ``name`` (analyze mode) into ``out``; a row per chapter with its status."""
    import papermill as pm
    from tqdm.auto import tqdm

    root = repo_root()
    out = Path(out or root / "_build" / "forks" / name)
    out.mkdir(parents=True, exist_ok=True)
    known = M.available_models()
    rows = []
    for nb in tqdm(chapters if chapters is not None else publish.chapters(root), desc=f"chapters for {name}", unit="chapter"):
        params = chapter_parameters(nb, name, known)
        row = {"chapter": nb.stem, "parameters": json.dumps(params) if params else "", "output": "", "status": "", "records": _records_of(nb.stem, name)}
        if params is None:
            row["status"] = "not rendered: the chapter has no model parameter"
            rows.append(row)
            continue
        target = out / nb.name
        try:
            pm.execute_notebook(str(nb), str(target), parameters=params, cwd=str(nb.parent),
                                progress_bar=False, execution_timeout=timeout_s)
            row["status"] = "rendered"
        except Exception as e:  # a failed chapter is a result; its output notebook shows the error cell
            row["status"] = f"failed: {type(e).__name__}: {str(e).strip().splitlines()[-1][:200] if str(e).strip() else ''}"
        row["output"] = str(target)
        rows.append(row)
    df = pd.DataFrame(rows)
    lines = [f"# The study forked for `{name}`", "",
             f"Rendered by `llmstudy fork` on {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC}, analyze mode. A chapter "
             "with no run record of the model shows only what the config alone determines.", "",
             "| chapter | status | run records of the model | parameters |", "|---|---|---|---|"]
    lines += [f"| {r.chapter} | {r.status} | {r.records} | `{r.parameters}` |" for r in df.itertuples()]
    (out / "SUMMARY.md").write_text("\n".join(lines) + "\n")
    return df


def fork(config: Path, name: str, out: Path | None = None, force: bool = False) -> tuple[Path, pd.DataFrame]:
    """Add the model, then render every chapter for it. Returns the model folder and the per-chapter summary."""
    dest = add_model(config, name, force=force)
    return dest, render(name, out)
