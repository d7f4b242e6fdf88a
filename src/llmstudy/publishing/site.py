"""Publishing the book: its version, the stamp on every page, the chapters of the TOC, and the versioned site.

``llmstudy site build`` builds the book for the current version into ``site/<version>/``, keeps the versions already
there, and writes ``site/switcher.json`` (pydata-sphinx-theme's version switcher) and a root ``index.html`` that
redirects to the newest version. The version is the package's (``pyproject.toml`` = ``llmstudy.__version__``); a
git tag ``v<version>`` on the commit must agree with it. Every page carries a stamp: version, git commit, a hash of
the data snapshot (``data/``) and the build time (see :mod:`llmstudy.publishing.sphinxext`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from llmstudy.core.paths import repo_root

SITE_DIR = "site"
STAMP_FILE = "_llmstudy_stamp.json"  # written into each version's folder: what the switcher lists
HASH_SKIP = re.compile(r"(^|/)(\.tmp-|\.work-|__pycache__|\.ipynb_checkpoints)")


class PublishError(ValueError):
    """The site cannot be built as asked (version mismatch, missing TOC file, bad site folder)."""


def _git(root: Path, *args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def package_version(root: Path | None = None) -> str:
    """The version in ``pyproject.toml`` (the one source of the version; ``llmstudy.__version__`` must match it)."""
    text = ((root or repo_root()) / "pyproject.toml").read_text()
    m = re.search(r'^version\s*=\s*"([^"]+)"', text, re.M)
    if not m:
        raise PublishError("pyproject.toml has no version")
    return m.group(1)


def version(root: Path | None = None) -> str:
    """The book's version: the package version, checked against a ``v<version>`` tag on HEAD if there is one."""
    root = root or repo_root()
    v = package_version(root)
    tags = [t for t in _git(root, "tag", "--points-at", "HEAD").split() if re.fullmatch(r"v?\d+(\.\d+)*\S*", t)]
    if tags and v not in {t.lstrip("v") for t in tags}:
        raise PublishError(f"HEAD is tagged {', '.join(tags)} but pyproject.toml says version {v}: make them agree")
    return v


def git_state(root: Path | None = None) -> dict:
    """The commit the book is built from (``LLMSTUDY_GIT_SHA`` wins, as in run records) and whether the tree is dirty."""
    root = root or repo_root()
    env = os.environ.get("LLMSTUDY_GIT_SHA", "")
    if re.fullmatch(r"[0-9a-f]{40}", env):
        return {"sha": env, "dirty": os.environ.get("LLMSTUDY_GIT_DIRTY") == "1"}
    sha = _git(root, "rev-parse", "HEAD")
    if not re.fullmatch(r"[0-9a-f]{40}", sha):
        return {"sha": None, "dirty": None}
    return {"sha": sha, "dirty": bool(_git(root, "status", "--porcelain", "--untracked-files=no"))}


def tree_hash(*folders: Path, suffixes: tuple[str, ...] = ()) -> str:
    """sha256 over the relative paths and contents of every file under ``folders`` (temp folders skipped)."""
    h = hashlib.sha256()
    for folder in folders:
        folder = Path(folder)
        if not folder.exists():
            continue
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        for p in files:
            rel = p.relative_to(folder.parent).as_posix()
            if HASH_SKIP.search(rel) or (suffixes and p.suffix not in suffixes):
                continue
            h.update(rel.encode() + b"\0" + hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def data_hash(root: Path | None = None) -> str:
    """The data snapshot's hash: every file under ``data/`` (run records, model configs, datasets)."""
    return tree_hash((root or repo_root()) / "data")


def inputs_hash(root: Path | None = None) -> str:
    """What a chapter's output depends on besides its notebook: ``data/`` and the library's code."""
    root = root or repo_root()
    return tree_hash(root / "data", root / "src" / "llmstudy", suffixes=())


def stamp(root: Path | None = None, built: dt.datetime | None = None) -> dict:
    """The stamp printed on every page: version, commit, data snapshot hash, build time (UTC)."""
    root = root or repo_root()
    g = git_state(root)
    built = built or dt.datetime.now(dt.timezone.utc)
    return {"version": version(root), "git_sha": g["sha"], "git_dirty": g["dirty"], "data_hash": data_hash(root),
            "built_utc": built.strftime("%Y-%m-%d %H:%M UTC")}


def toc_files(root: Path | None = None) -> list[str]:
    """Every page of ``_toc.yml`` in reading order (root first), as written there (no suffix)."""
    root = root or repo_root()
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    out: list[str] = []

    def walk(node) -> None:
        if isinstance(node, dict):
            for key in ("root", "file"):
                if isinstance(node.get(key), str):
                    out.append(re.sub(r"\.(md|ipynb)$", "", node[key]))
            for v in node.values():
                if isinstance(v, (list, dict)):
                    walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(toc)
    return out


def chapters(root: Path | None = None) -> list[Path]:
    """The notebooks listed in ``_toc.yml``, in reading order: every chapter, whoever added it."""
    root = root or repo_root()
    out = []
    for f in toc_files(root):
        nb = root / f"{f}.ipynb"
        if nb.is_file():
            out.append(nb)
        elif not (root / "book" / f"{f}.md").is_file() and not (root / "book" / f"{f}.ipynb").is_file():
            raise PublishError(f"_toc.yml lists {f!r}, which is neither notebooks/… nor book/….md")
    return out


def page_paths(root: Path | None = None) -> list[str]:
    """The HTML path of every TOC page relative to the site's version folder (``intro.html``, ``notebooks/x.html``)."""
    return [f"{f}.html" for f in toc_files(root)]


def notebook_pages(root: Path | None = None) -> dict[str, Path]:
    """``{"notebooks/x.html": notebook}`` for every TOC chapter (what the reader's check compares the glue against)."""
    root = root or repo_root()
    return {f"{f}.html": root / f"{f}.ipynb" for f in toc_files(root) if (root / f"{f}.ipynb").is_file()}


def run_recipes(root: Path | None = None, only: list[str] | None = None) -> tuple[list[dict], list[dict]]:
    """The GPU workflow's matrix: TOC chapters whose notebook metadata has ``llmstudy.run`` (env, runner labels,
    papermill parameters). Chapters without one, or run by another workflow, come back in the second list."""
    root = root or repo_root()
    include, skipped = [], []
    for nb in chapters(root):
        if only and nb.stem not in only:
            continue
        meta = (json.loads(nb.read_text()).get("metadata") or {}).get("llmstudy", {}).get("run")
        if not meta:
            skipped.append({"chapter": nb.stem, "reason": "no llmstudy.run recipe in the notebook metadata"})
        elif meta.get("workflow"):
            skipped.append({"chapter": nb.stem, "reason": f"run by {meta['workflow']}"})
        else:
            include.append({"chapter": nb.stem, "notebook": nb.relative_to(root).as_posix(), "env": meta["env"],
                            "runs_on": meta.get("runs_on", ["self-hosted", "linux", "x64", "gpu"]),
                            "timeout_minutes": int(meta.get("timeout_minutes", 180)),
                            "setup": meta.get("setup", ""), "parameters": json.dumps(meta.get("parameters", {}))})
    return include, skipped


# --- the versioned site -------------------------------------------------------------------------------------------
def version_key(v: str):
    from packaging.version import InvalidVersion, Version

    try:
        return (1, Version(v))
    except InvalidVersion:
        return (0, v)


def site_versions(site: Path) -> list[dict]:
    """The versions built into ``site`` (folders holding a stamp), newest first."""
    found = []
    for d in Path(site).iterdir() if Path(site).is_dir() else []:
        f = d / STAMP_FILE
        if d.is_dir() and f.is_file():
            found.append(json.loads(f.read_text()))
    return sorted(found, key=lambda s: version_key(s["version"]), reverse=True)


def write_switcher(site: Path, base_url: str = "/") -> list[dict]:
    """``site/switcher.json`` in pydata-sphinx-theme's format; the newest version is ``preferred``."""
    base = base_url if base_url.endswith("/") else base_url + "/"
    entries = []
    for i, s in enumerate(site_versions(site)):
        e = {"version": s["version"], "url": f"{base}{s['version']}/", "name": f"{s['version']} (latest)" if i == 0 else s["version"]}
        if i == 0:
            e["preferred"] = True
        entries.append(e)
    (Path(site) / "switcher.json").write_text(json.dumps(entries, indent=1) + "\n")
    return entries


def write_redirect(site: Path, target_version: str) -> Path:
    """``site/index.html``: send a reader at the root to the newest version."""
    url = f"{target_version}/index.html"
    html = (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>Redirecting to {target_version}</title>\n'
            f'<meta http-equiv="refresh" content="0; url={url}">\n<link rel="canonical" href="{url}">\n'
            f'<script>location.replace("{url}" + location.hash)</script></head>\n'
            f'<body><p>The newest version of the book is <a href="{url}">{target_version}</a>.</p></body></html>\n')
    out = Path(site) / "index.html"
    out.write_text(html)
    return out


def site_config(root: Path, v: str, base_config: Path | None = None) -> dict:
    """``_config.yml`` plus the version switcher for ``v`` (JB1 has no CLI override: the build gets this file)."""
    cfg = yaml.safe_load(Path(base_config or root / "_config.yml").read_text()) or {}
    sphinx = cfg.setdefault("sphinx", {})
    sphinx["recursive_update"] = True  # merge these theme options into JB1's instead of replacing them
    opts = sphinx.setdefault("config", {}).setdefault("html_theme_options", {})
    opts["switcher"] = {"json_url": "../switcher.json", "version_match": v}
    opts["check_switcher"] = False  # the JSON is written next to the version folders, not in the sources
    opts["show_version_warning_banner"] = True
    opts["navbar_end"] = ["version-switcher", "theme-switcher"]
    return cfg


def execution_cache(path_output: Path, root: Path | None = None) -> Path:
    """jupyter-cache's folder for this build: keyed by :func:`inputs_hash`, so new records or code re-execute."""
    return Path(path_output) / "_build" / ".jupyter_cache" / inputs_hash(root)[:16]


def prime_cache(root: Path, path_output: Path, jobs: int = 2) -> dict[str, str]:
    """Execute the TOC's notebooks that the cache lacks, ``jobs`` at a time, into the cache the build will read.

    myst-nb executes one notebook after the other; kernels spend much of their time starting and importing, so two
    at a time nearly halve a cold build on two cores. A notebook that fails here is left out of the cache: the
    build then executes it itself and reports the error as usual. Returns ``{notebook: "cached"|"executed"|"failed"}``.
    """
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import nbformat
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn
    from jupyter_cache.executors.utils import single_nb_execution

    cache_dir = execution_cache(path_output, root)
    cache = get_cache(str(cache_dir))
    lock = threading.Lock()
    todo, status = [], {}
    for f in toc_files(root):
        path = root / "book" / f"{f}.ipynb"
        if not path.is_file():
            continue
        nb = nbformat.read(str(path), as_version=4)
        try:
            cache.match_cache_notebook(nb)
            status[f] = "cached"
        except KeyError:
            todo.append((f, path, nb))

    def run(item) -> None:
        f, path, nb = item
        res = single_nb_execution(nb, cwd=str(path.parent), allow_errors=False, timeout=900, meta_override=True)
        with lock:
            if res.err is None:
                cache.cache_notebook_bundle(CacheBundleIn(nb, str(path), data={"execution_seconds": res.time}), check_validity=False, overwrite=True)
            status[f] = "executed" if res.err is None else "failed"

    env_before = dict(os.environ)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(root / "src"), os.environ.get("PYTHONPATH", "")) if p)
    os.environ.setdefault("LLMSTUDY_ROOT", str(root))
    try:
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            list(pool.map(run, todo))
    finally:
        os.environ.clear()
        os.environ.update(env_before)
    return status


def jupyter_book() -> str:
    jb = Path(sys.executable).with_name("jupyter-book")
    return str(jb) if jb.exists() else (shutil.which("jupyter-book") or "jupyter-book")


def build_book(root: Path, path_output: Path, config: Path | None = None, strict: bool = True, quiet: bool = False, jobs: int = 2) -> float:
    """Run ``jupyter-book build book`` (warnings as errors), notebooks executed ``jobs`` at a time; return the wall time (s)."""
    t0 = time.perf_counter()
    if jobs > 1:
        prime_cache(root, path_output, jobs)
    cmd = [jupyter_book(), "build", str(root / "book"), "--path-output", str(path_output)]
    if strict:
        cmd += ["-W", "-n", "--keep-going"]
    if config:
        cmd += ["--config", str(config)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(root / "src"), os.environ.get("PYTHONPATH", "")) if p))
    env.setdefault("LLMSTUDY_ROOT", str(root))
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=quiet, text=True)
    took = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = ((proc.stdout or "") + (proc.stderr or ""))[-4000:] if quiet else ""
        raise PublishError(f"jupyter-book build failed (exit {proc.returncode}) {tail}")
    return took


def build_site(root: Path | None = None, site: Path | None = None, base_url: str = "/", path_output: Path | None = None,
               quiet: bool = False, jobs: int = 2) -> Path:
    """Build the book into ``site/<version>/``, keep the other versions, write ``switcher.json`` and the redirect."""
    root = (root or repo_root()).resolve()
    site = Path(site or root / SITE_DIR).resolve()
    v = version(root)
    if not re.fullmatch(r"[0-9A-Za-z][0-9A-Za-z.+_-]*", v):
        raise PublishError(f"version {v!r} cannot name a folder")
    path_output = Path(path_output or root).resolve()
    cfg_dir = path_output / "_build" / "site-config"
    cfg_dir.mkdir(parents=True, exist_ok=True)
    cfg_file = cfg_dir / "_config.yml"
    cfg_file.write_text(yaml.safe_dump(site_config(root, v), sort_keys=False, allow_unicode=True))
    build_book(root, path_output, config=cfg_file, quiet=quiet, jobs=jobs)
    html = path_output / "_build" / "html"
    out = site / v
    tmp = site / f".{v}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(html, tmp, ignore=shutil.ignore_patterns(".buildinfo", ".doctrees"))
    built = json.loads((html / STAMP_FILE).read_text())
    (tmp / STAMP_FILE).write_text(json.dumps(built, indent=1) + "\n")
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    (site / ".nojekyll").touch()
    entries = write_switcher(site, base_url)
    write_redirect(site, entries[0]["version"])
    return out


def benchmark(path_output: Path | None = None, root: Path | None = None, jobs: int = 2) -> dict:
    """Time a cold build (empty build folder) and an unchanged rebuild of the book, as ``make book`` does them."""
    import tempfile

    root = (root or repo_root()).resolve()
    with contextlib.ExitStack() as stack:
        out = Path(path_output) if path_output else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="llmstudy-bench-")))
        shutil.rmtree(out / "_build", ignore_errors=True)
        cold = build_book(root, out, quiet=True, jobs=jobs)
        warm = build_book(root, out, quiet=True, jobs=jobs)
    return {"cold_s": round(cold, 1), "unchanged_rebuild_s": round(warm, 1), "jobs": jobs, "cpus": os.cpu_count(),
            "chapters": len(chapters(root)), "version": version(root), "measured_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
