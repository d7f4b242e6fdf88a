"""Fork the study for a new model: add its config as ``data/models/<name>/`` and render the book for it as HTML.

``llmstudy fork CONFIG --name NAME``:

1. validates the config (``llmstudy.core.models.load_config``: required fields, consistent heads, positive sizes)
   and builds it on the meta device, before anything is written; then writes ``data/models/<name>/``;
2. executes every TOC chapter with papermill (analyze mode), setting every parameter whose default names a
   shipped model (``model``, ``speed_model``; a list of model names such as ``compare_models`` becomes ``[name]``),
   with ``$LLMSTUDY_FORK_MODEL`` set so the claims name the models they rest on;
3. puts the executed notebooks, each with a note at the top naming the model the page is for, into a book folder
   (``_build/forks/<name>/book``: an index page that is the summary, the chapters in the TOC's order, the run-records
   appendix) and builds it with jupyter-book, execution off (the notebooks are already executed), into
   ``_build/forks/<name>/html``;
4. checks every page (:func:`check_page`): no unresolved glue, the model named, and no number of another model
   unnamed (:func:`leaks`); ``SUMMARY.md`` lists each chapter's status and the problems found.

Failures are results: a chapter whose execution fails, or that has no model parameter, is listed in the summary
with the reason and left out of the book; the other chapters still render.
"""

from __future__ import annotations

import ast
import datetime as dt
import hashlib
import json
import os
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from llmstudy.core import models as M
from llmstudy.core.paths import models_dir, repo_root, runs_dir
from llmstudy.publishing import site as publish

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
FORK_ENV = "LLMSTUDY_FORK_MODEL"  # the same variable as llmstudy.publishing.claims.FORK_ENV
BANNER_TAG = "llmstudy-fork-banner"


class ForkError(ValueError):
    """The config or the name cannot become a model of the study (said before anything is written)."""


def validate_config(config: Path) -> dict:
    """The config as a dict, after the study's validation and a build of its architecture on the meta device."""
    config = Path(config)
    if config.is_dir():
        config = config / "config.json"
    if not config.is_file():
        raise ForkError(f"{config}: no such config file")
    try:
        raw = json.loads(config.read_text())
    except json.JSONDecodeError as e:
        raise ForkError(f"{config}: not valid JSON ({e})") from e
    if not isinstance(raw, dict) or "model_type" not in raw:
        raise ForkError(f"{config}: a Hugging Face config.json needs a model_type")
    try:
        M.load_config(config)  # the study's validation (llmstudy.core.models): required fields, heads, positive sizes
        total = int(M.component_counts(config)["total"])
    except Exception as e:  # the validation's (or transformers') own message says what is wrong with the config
        if isinstance(e, ValueError) and type(e).__module__.startswith("llmstudy."):
            raise ForkError(str(e)) from e  # the study's own one-line error, naming the field
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
    from llmstudy.core.records import load_runs, run_models

    try:
        return sum(1 for r in load_runs(experiment, strict=False) if name in run_models(r))
    except OSError:
        return 0


# --- the page note, the fork's book --------------------------------------------------------------------------------
def banner(name: str) -> str:
    """The note at the top of every forked page: which model the page is for, and how other numbers are shown."""
    title = M.title(name)
    shown = f"**{title}** (`{name}`)" if title != name else f"**`{name}`**"
    return (":::{important}\n"
            f"This page is the study rendered for {shown}, from `data/models/{name}/config.json`. Its predictions are "
            f"computed from that config; its measurements are run records of `{name}` where they exist. A number from "
            f"another model's records or from a publication names that model or source; where `{name}` has no record, "
            "the page says it is not measured yet and gives the command that measures it.\n:::")


def add_banner(notebook: Path, name: str) -> None:
    """Put :func:`banner` right under the notebook's title (its first ``# `` heading, whose cell is split there; at
    the top if it has none)."""
    import nbformat

    nb = nbformat.read(str(notebook), as_version=4)
    nb.cells = [c for c in nb.cells if BANNER_TAG not in c.get("metadata", {}).get("tags", [])]

    def md(source: str, tags=()):
        cell = nbformat.v4.new_markdown_cell(source, metadata={"tags": list(tags)} if tags else {})
        if nb.nbformat_minor < 5:
            cell.pop("id", None)
        return cell

    note = md(banner(name), [BANNER_TAG])
    for i, c in enumerate(nb.cells):
        lines = c.source.split("\n") if c.cell_type == "markdown" else []
        head = next((j for j, line in enumerate(lines) if re.match(r"# \S", line)), None)
        if head is None:
            continue
        rest = "\n".join(lines[head + 1:]).strip("\n")
        c.source = "\n".join(lines[:head + 1])
        nb.cells[i + 1:i + 1] = [note, *([md(rest)] if rest else [])]
        break
    else:
        nb.cells.insert(0, note)
    nbformat.write(nb, str(notebook))


def fork_toc(keep: set[str], root: Path | None = None) -> dict:
    """The fork's ``_toc.yml``: the index (summary), the main TOC's chapters that rendered (in order, a section
    promoted where its chapter did not render), and the run-records appendix."""
    toc = yaml.safe_load(((root or repo_root()) / "_toc.yml").read_text())

    def keep_only(entries) -> list[dict]:
        out = []
        for e in entries or []:
            f = re.sub(r"\.(md|ipynb)$", "", str(e.get("file", "")))
            subs = keep_only(e.get("sections"))
            if f in keep:
                out.append({"file": f, **({"sections": subs} if subs else {})})
            else:
                out += subs
        return out

    chapters = keep_only(toc.get("chapters")) + [s for p in toc.get("parts") or [] for s in keep_only(p.get("chapters"))]

    def placed(entries) -> set[str]:
        return {e["file"] for e in entries} | {f for e in entries for f in placed(e.get("sections", []))}

    chapters += [{"file": f} for f in sorted(keep - placed(chapters))]  # chapters rendered from outside the TOC, last
    return {"format": "jb-book", "root": "index", "chapters": [*chapters, {"file": "runs"}]}


def fork_config(name: str, root: Path | None = None) -> dict:
    """The fork's ``_config.yml``: the book's, titled for the model, with execution off (chapters come executed)."""
    cfg = yaml.safe_load(((root or repo_root()) / "_config.yml").read_text()) or {}
    cfg["title"] = f"{cfg.get('title', 'llmstudy')} — forked for {name}"
    cfg["only_build_toc_files"] = True
    cfg["execute"] = {"execute_notebooks": "off"}
    sphinx = cfg.setdefault("sphinx", {}).setdefault("config", {})
    sphinx["nb_output_stderr"] = "remove"  # a kernel's stderr (library warnings naming this machine's paths)
    sphinx["smartquotes"] = False  # the glued "measure it with `llmstudy … --model NAME`" commands stay exact ("--", quotes)
    return cfg


# --- checking a forked page ----------------------------------------------------------------------------------------
def _norm(text: str) -> str:
    return re.sub(r"[\s_]+", "-", text.lower())


def aliases(model: str, forked: str) -> set[str]:
    """How a page may name ``model``: its name, its title, or a shorter family name made of its name's first tokens
    (``llama-4`` for ``llama-4-scout-17b-16e-instruct``, ``gpt-oss`` for ``gpt-oss-20b``), never one that also names
    the forked model."""
    names = {_norm(model)}
    try:
        names.add(_norm(M.title(model)))
    except Exception:  # a record's model that is not under data/models has no title: its name names it
        pass
    tokens = _norm(model).split("-")
    names |= {"-".join(tokens[:k]) for k in range(2, len(tokens))}
    return {a for a in names if a and a not in _norm(forked)}


def foreign_markers(name: str, chapter: str | None = None, counts: bool = True) -> dict[str, set[str]]:
    """Text that only another model's numbers carry, mapped to the models it belongs to: the run ids of records
    that did not measure ``name`` (``experiment/run_id`` on any page; the bare id on ``chapter``'s own page, where
    it cannot mean a record of another experiment) and, with ``counts``, the exact parameter counts
    (``6,738,415,616``) of the models those records measured."""
    from llmstudy.core.records import RecordError, load_record, run_models

    out: dict[str, set[str]] = {}
    measured: set[str] = set()
    for mf in sorted(runs_dir().glob("*/*/manifest.json")):
        try:
            rec = load_record(mf.parent)
        except RecordError:
            continue
        models = set(run_models(rec))
        if not models or name in models:
            continue
        measured |= models
        experiment = mf.parent.parent.name
        for marker in (f"{experiment}/{rec.run_id}", *([rec.run_id] if experiment == chapter else [])):
            out.setdefault(marker, set()).update(models)
    if counts:
        try:
            own = f"{int(M.component_counts(name)['total']):,}"
        except Exception:  # the forked name is not a model folder (a test's page): every count is another's
            own = None
        for m in sorted(measured & set(M.available_models()) - {name}):
            try:
                count = f"{int(M.component_counts(m)['total']):,}"
            except Exception:  # a config the meta device cannot build has no count to leak
                continue
            if count != own:  # the same architecture under another name: the number is the forked model's too
                out.setdefault(count, set()).add(m)
    return out


BLOCKS = {"p", "li", "td", "th", "tr", "table", "figure", "caption", "blockquote", "dd", "dt", "pre", "h1", "h2", "h3",
          "h4", "h5", "h6"}
BLOCK_CLASSES = {"cell", "cell_output", "admonition", "output"}


def leaks(page_html: str, markers: dict[str, set[str]], forked: str) -> list[str]:
    """Every place where a page shows another model's marker (:func:`foreign_markers`) without naming that model in
    the same paragraph, list item, table, figure or notebook cell (code inputs, navigation and footer ignored)."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(page_html, "html.parser")
    body = soup.select_one("main, article, div.bd-article") or soup
    for junk in body.select("div.cell_input, nav, footer, .llmstudy-stamp, script, style"):
        junk.decompose()
    found = []
    # a bare run id is not matched inside a longer path ("x/h100-a"); "experiment/run_id" is, even under data/runs/
    patterns = {m: re.compile(rf"(?<![\w{'' if '/' in m else '/'}.-]){re.escape(m)}(?![\w-]|\.\d)") for m in markers}
    alias_cache: dict[str, set[str]] = {}
    for text in body.find_all(string=True):
        for marker, models in markers.items():
            if not patterns[marker].search(text):
                continue
            names = set().union(*(alias_cache.setdefault(m, aliases(m, forked)) for m in models))
            named = False
            for anc in text.parents:
                if anc is body or anc.name in ("section", "main", "article", "body", "html"):
                    break
                if anc.name in BLOCKS or BLOCK_CLASSES & set(anc.get("class") or []):
                    if any(a in _norm(anc.get_text(" ")) for a in names):
                        named = True
                        break
            if not named:
                block = next((a for a in text.parents if a.name in BLOCKS or BLOCK_CLASSES & set(a.get("class") or [])), text.parent)
                context = " ".join(block.get_text(" ").split())[:160]
                found.append(f"{marker} ({', '.join(sorted(models))}) shown without naming it: “{context}”")
    return found


GLUE_MISSING = re.compile(r"\{glue(?::[a-z]*)?\}`[^`]+`|\{glue(?::[a-z]*)?\}")


def check_page(page: Path, name: str, markers: dict[str, set[str]], notebook: Path | None = None) -> list[str]:
    """The problems of one forked HTML page: raw glue roles, fewer glued values than the notebook's markdown uses
    (a key the chapter did not glue renders as nothing), the forked model not named, other models' numbers unnamed
    (:func:`leaks`)."""
    from bs4 import BeautifulSoup

    from llmstudy.publishing.readercheck import expected_glue

    text = page.read_text(errors="replace")
    main = BeautifulSoup(text, "html.parser").select_one("main, article") or BeautifulSoup(text, "html.parser")
    plain = main.get_text(" ")
    problems = []
    if GLUE_MISSING.search(plain):
        problems.append(f"unresolved glue: {GLUE_MISSING.search(plain).group(0)}")
    if notebook is not None:
        want, shown = expected_glue(notebook), len(main.select("span.output, span.pasted-text, span.pasted-inline"))
        if shown < want:
            problems.append(f"{shown} glued values on the page, the notebook's text uses {want}")
    if name not in plain:
        problems.append(f"the page does not name {name}")
    problems += leaks(text, markers, name)
    return problems


# --- rendering -----------------------------------------------------------------------------------------------------
@dataclass
class Chapter:
    chapter: str
    notebook: Path
    parameters: dict | None
    records: int
    status: str = ""
    output: str = ""
    problems: list[str] = field(default_factory=list)


def _execute(ch: Chapter, target: Path, timeout_s: int) -> None:
    import papermill as pm

    try:
        pm.execute_notebook(str(ch.notebook), str(target), parameters=ch.parameters, cwd=str(ch.notebook.parent),
                            progress_bar=False, execution_timeout=timeout_s, kernel_name="python3")
        ch.status = "rendered"
    except Exception as e:  # a failed chapter is a result; its output notebook shows the failing cell
        last = str(e).strip().splitlines()[-1][:300] if str(e).strip() else ""
        ch.status = f"failed ({target.parent.name}/{target.name}): {type(e).__name__}: {last}"
    ch.output = str(target)


def _summary_lines(name: str, chapters: list[Chapter], links: bool, checked: bool = True) -> list[str]:
    counts = M.component_counts(name)
    raw = M.raw_config(name)
    lines = [f"# The study forked for {name}", "",
             f"Rendered by `llmstudy fork` on {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC}, analyze mode, from "
             f"`data/models/{name}/config.json` (`{raw.get('model_type')}`, {', '.join(raw.get('architectures') or []) or 'no architectures field'}; "
             f"{int(counts['total']):,} parameters). Each chapter shows what {name}'s config determines, {name}'s own run "
             "records where they exist, and otherwise says it is not measured yet, with the command that measures it.", "",
             "| chapter | status | run records of the model | parameters set | page problems |", "|---|---|---|---|---|"]
    for c in chapters:
        label = f"[{c.chapter}](notebooks/{c.chapter}.ipynb)" if links and c.status == "rendered" else c.chapter
        params = f"`{json.dumps(c.parameters)}`" if c.parameters else ""
        probs = "; ".join(c.problems).replace("|", "\\|") if c.problems else ("none" if c.status == "rendered" and checked else "")
        lines.append(f"| {label} | {c.status.replace('|', '/')} | {c.records} | {params} | {probs} |")
    return lines


def _warnings_by_chapter(log: str, stems: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in re.sub(r"\x1b\[[0-9;]*m", "", log).splitlines():
        m = re.search(r"notebooks/([\w.-]+)\.ipynb[^ ]*: (WARNING|ERROR): (.*)", line)
        if m and m.group(1) in stems:
            out.setdefault(m.group(1), []).append(f"build {m.group(2).lower()}: {m.group(3)[:200]}")
    return out


def build_html(book: Path, out: Path) -> tuple[Path, str]:
    """``jupyter-book build`` of the fork's book folder (execution off) into ``out/html``; returns it and the log."""
    work = out / ".jb"  # kept: a second build (the summary page with the checks' results) re-reads only that page
    root = repo_root()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(root / "src"), os.environ.get("PYTHONPATH", "")) if p))
    env.setdefault("LLMSTUDY_ROOT", str(root))
    proc = subprocess.run([publish.jupyter_book(), "build", str(book), "--path-output", str(work), "--keep-going"],
                          cwd=root, env=env, capture_output=True, text=True)
    log = (proc.stdout or "") + (proc.stderr or "")
    (out / "build.log").write_text(log)
    built = work / "_build" / "html"
    if proc.returncode != 0 or not (built / "index.html").is_file():
        raise ForkError(f"jupyter-book could not build the fork's book (exit {proc.returncode}): {log[-3000:]}")
    html = out / "html"
    shutil.rmtree(html, ignore_errors=True)
    shutil.copytree(built, html)
    return html, log


def render(name: str, out: Path | None = None, chapters: list[Path] | None = None, timeout_s: int = 900, jobs: int = 2,
           html: bool = True) -> pd.DataFrame:
    """Execute every TOC chapter for model ``name`` and build the fork's HTML book in ``out`` (default
    ``_build/forks/<name>``); a row per chapter: status, records of the model, parameters, page problems."""
    root = repo_root()
    out = Path(out or root / "_build" / "forks" / name).resolve()
    book = out / "book"
    for stale in (book, out / "failed"):
        shutil.rmtree(stale, ignore_errors=True)
    (book / "notebooks").mkdir(parents=True)
    (out / "failed").mkdir(parents=True)
    known = M.available_models()
    todo = []
    rows: list[Chapter] = []
    for nb in chapters if chapters is not None else publish.chapters(root):
        ch = Chapter(nb.stem, nb, chapter_parameters(nb, name, known), _records_of(nb.stem, name))
        rows.append(ch)
        if ch.parameters is None:
            ch.status = "not rendered: the chapter has no model parameter"
        else:
            todo.append(ch)

    env_before = dict(os.environ)
    os.environ[FORK_ENV] = name
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(root / "src"), os.environ.get("PYTHONPATH", "")) if p)
    os.environ.setdefault("LLMSTUDY_ROOT", str(root))
    try:
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            list(pool.map(lambda ch: _execute(ch, out / "failed" / ch.notebook.name, timeout_s), todo))
    finally:
        os.environ.clear()
        os.environ.update(env_before)
    for ch in todo:
        if ch.status == "rendered":
            target = book / "notebooks" / ch.notebook.name
            shutil.move(ch.output, target)
            ch.output = str(target)
            add_banner(target, name)
    if not any((out / "failed").iterdir()):
        (out / "failed").rmdir()

    shutil.rmtree(out / ".jb", ignore_errors=True)
    rendered = [c for c in rows if c.status == "rendered"]
    (book / "_toc.yml").write_text(yaml.safe_dump(fork_toc({f"notebooks/{c.chapter}" for c in rendered}, root), sort_keys=False))
    (book / "_config.yml").write_text(yaml.safe_dump(fork_config(name, root), sort_keys=False, allow_unicode=True))
    runs = (root / "book" / "runs.md").read_text()
    (book / "runs.md").write_text(runs.replace("\n\n", f"\n\nThis appendix lists the records of every model the study measured, not only `{name}`'s: "
                                               "each record's *model* row names the model it measured.\n\n", 1))
    (book / "index.md").write_text("\n".join(_summary_lines(name, rows, links=True, checked=False)) + "\n")
    if html:
        site, log = build_html(book, out)
        warned = _warnings_by_chapter(log, [c.chapter for c in rendered])
        for c in rendered:
            page = site / "notebooks" / f"{c.chapter}.html"
            markers = foreign_markers(name, c.chapter)
            c.problems = warned.get(c.chapter, []) + (check_page(page, name, markers, Path(c.output)) if page.is_file() else [f"no page {page}"])
            c.output = str(page)
        (book / "index.md").write_text("\n".join(_summary_lines(name, rows, links=True)) + "\n")
        build_html(book, out)  # the summary page again, with the checks' results (only that page is re-read)
        shutil.rmtree(out / ".jb", ignore_errors=True)
    (out / "SUMMARY.md").write_text("\n".join(_summary_lines(name, rows, links=False)) + "\n")
    return pd.DataFrame([{"chapter": c.chapter, "status": c.status, "records": c.records,
                          "parameters": json.dumps(c.parameters) if c.parameters else "", "output": c.output,
                          "problems": "; ".join(c.problems)} for c in rows])


def fork(config: Path, name: str, out: Path | None = None, force: bool = False, jobs: int = 2) -> tuple[Path, pd.DataFrame]:
    """Add the model, then render the book for it. Returns the model folder and the per-chapter summary."""
    dest = add_model(config, name, force=force)
    return dest, render(name, out, jobs=jobs)
