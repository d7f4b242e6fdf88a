"""Sphinx extension of the book (listed in ``_config.yml``): page stamps, a data-keyed execution cache, two appendices.

* Every page's footer carries the stamp of :func:`llmstudy.publishing.site.stamp` (version, commit, data hash, build time),
  and ``version``/``release`` are the package version.
* Notebook outputs are cached by jupyter-cache, which keys on the notebook alone; a new run record or a library
  change would then leave a stale page. The cache folder is therefore keyed by :func:`llmstudy.publishing.site.inputs_hash`
  (``data/`` + ``src/llmstudy``), and the same hash is an env-level config value so Sphinx re-reads every page
  when it changes. An unchanged rebuild executes nothing.
* ``{run-records}`` renders every manifest under ``data/runs`` (GPU, driver, versions, parameters, dates) with
  links to its logs; ``{claims-table}`` renders the claims registry checked against the data.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from docutils import nodes
from docutils.parsers.rst import directives
from sphinx import addnodes
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

from llmstudy.core.book import run_anchor
from llmstudy.core.paths import repo_root, runs_dir
from llmstudy.publishing import site as publish

STAMP_CLASS = "llmstudy-stamp"


def stamp_html(s: dict) -> str:
    sha = (s["git_sha"] or "unknown")[:10] + (" (uncommitted changes)" if s["git_dirty"] else "")
    attrs = " ".join(f'data-{k.replace("_", "-")}="{html.escape(str(v))}"' for k, v in s.items())
    return (f'<div class="{STAMP_CLASS}" {attrs}>llmstudy <strong>{html.escape(s["version"])}</strong> · commit '
            f'<code>{html.escape(sha)}</code> · data snapshot <code>{s["data_hash"][:12]}</code> · built '
            f'{html.escape(s["built_utc"])}</div>')


def _config_inited(app: Sphinx, config) -> None:
    root = repo_root()
    s = publish.stamp(root)
    # What identifies the book (a change rewrites every page); the build time is added per written page, so an
    # unchanged rebuild writes nothing and a page's stamp says when that page was built.
    config.llmstudy_stamp = {k: s[k] for k in ("version", "git_sha", "git_dirty", "data_hash")}
    app._llmstudy_built_utc = s["built_utc"]
    config.version = config.release = s["version"]
    inputs = publish.inputs_hash(root)
    config.llmstudy_inputs = inputs
    if not config.nb_execution_cache_path:
        config.nb_execution_cache_path = str(publish.execution_cache(Path(app.outdir).parent.parent, root))
    static = Path(app.outdir).parent / "llmstudy-static"
    static.mkdir(parents=True, exist_ok=True)
    (static / "llmstudy.css").write_text(CSS)
    config.html_static_path = [*config.html_static_path, str(static)]


def _page_context(app: Sphinx, pagename, templatename, context, doctree) -> None:
    """The stamp in the footer; repeated inline scripts dropped (sphinx-thebe 0.3 adds its config twice under JB1,
    a JavaScript error on every page). Runs first: a later handler may end the event (``emit_firstresult``)."""
    stamp = {**app.config.llmstudy_stamp, "built_utc": app._llmstudy_built_utc}
    context["theme_extra_footer"] = stamp_html(stamp) + str(context.get("theme_extra_footer") or "")
    seen, out = set(), []
    for js in context.get("script_files", []):
        key = (getattr(js, "filename", str(js)) or "", repr(sorted((getattr(js, "attributes", None) or {}).items())))  # None and "" alike
        if key not in seen:
            seen.add(key)
            out.append(js)
    context["script_files"][:] = out  # in place: it is the builder's list, which later handlers (MathJax) append to


def _build_finished(app: Sphinx, exc) -> None:
    if exc is None and app.builder.format == "html":
        stamp = {**app.config.llmstudy_stamp, "built_utc": app._llmstudy_built_utc}
        (Path(app.outdir) / publish.STAMP_FILE).write_text(json.dumps(stamp, indent=1) + "\n")


# --- {run-records} ------------------------------------------------------------------------------------------------
def _gpu_line(m: dict) -> str:
    g = m.get("gpu") or {}
    devs = g.get("devices") or []
    if not devs:
        return "none (CPU)"
    d = devs[0]
    mem = d.get("nvml_total_bytes") or d.get("torch_total_bytes")
    name = d.get("nvml_name") or d.get("name")
    return f"{len(devs)} × {name}" + (f" ({mem / 2**30:.1f} GiB)" if mem else "")


def _table(rows: list[tuple[str, nodes.Node | str]], widths=(22, 78)) -> nodes.table:
    table = nodes.table(classes=["llmstudy-manifest", "colwidths-given"])
    group = nodes.tgroup(cols=2)
    table += group
    for w in widths:
        group += nodes.colspec(colwidth=w)
    body = nodes.tbody()
    group += body
    for key, value in rows:
        row = nodes.row()
        row += nodes.entry("", nodes.paragraph(text=key))
        cell = nodes.entry()
        cell += value if isinstance(value, nodes.Node) else nodes.paragraph(text=value)
        row += cell
        body += row
    return table


class RunRecords(SphinxDirective):
    """Every run record under data/runs, one section per experiment and one table per record (manifest + logs)."""

    has_content = False
    option_spec = {"experiment": directives.unchanged}

    def run(self) -> list[nodes.Node]:
        from llmstudy.core.records import RecordError, load_record

        base = runs_dir()
        doc_dir = Path(self.env.doc2path(self.env.docname)).parent
        out: list[nodes.Node] = []
        experiments = sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")) if base.is_dir() else []
        if self.options.get("experiment"):
            experiments = [p for p in experiments if p.name == self.options["experiment"]]
        if not experiments:
            return [nodes.paragraph(text=f"No run records under {base}.")]
        for exp in experiments:
            sec = nodes.section(ids=[f"runs-{nodes.make_id(exp.name)}"])
            sec += nodes.title(text=exp.name)
            for d in sorted(p for p in exp.iterdir() if p.is_dir() and not p.name.startswith(".")):
                try:
                    rec = load_record(d)
                except RecordError as e:
                    sec += nodes.paragraph(text=f"{d.name}: not a valid record ({e})")
                    continue
                sec += self._record(rec, exp.name, d, doc_dir)
            out.append(sec)
        return out

    def _record(self, rec, experiment: str, d: Path, doc_dir: Path) -> nodes.section:
        import os

        from llmstudy.core.records import run_models

        m = rec.manifest
        sub = nodes.section(ids=[run_anchor(experiment, rec.run_id)])
        sub += nodes.title(text=f"{experiment} / {rec.run_id}")
        g = m.get("gpu") or {}
        pk = {k: v for k, v in (m.get("packages") or {}).items() if v}
        git = m.get("git") or {}
        p = m.get("parameters")
        text = "\n".join(f"{k}: {json.dumps(v, default=str)}" for k, v in p.items()) if isinstance(p, dict) else json.dumps(p, default=str)
        params = nodes.literal_block(text=text[:6000])
        links = nodes.paragraph()
        logs = [f for f in m.get("files", []) if f.startswith("logs/")] + ["manifest.json"]
        for i, f in enumerate(logs):
            rel = os.path.relpath(d / f, doc_dir)
            ref = addnodes.download_reference("", "", refdoc=self.env.docname, reftarget=rel, refexplicit=True, refdomain="", reftype="download")
            ref += nodes.literal(text=f)
            links += [nodes.Text(", ") if i else nodes.Text(""), ref]
        others = [f for f in m.get("files", []) if not f.startswith("logs/")]
        rows = [
            ("outcome", str(m.get("outcome"))),
            ("model", ", ".join(run_models(rec)) or "—"),
            ("GPU", _gpu_line(m)),
            ("driver / CUDA", f"{g.get('driver') or '—'} / {g.get('cuda_runtime') or '—'}"),
            ("host", f"{(m.get('host') or {}).get('platform', '—')}, {(m.get('host') or {}).get('cpu_count', '—')} CPUs"),
            ("versions", ", ".join(f"{k} {v}" for k, v in pk.items()) or "—"),
            ("date (UTC)", f"{m.get('started_utc')} → {m.get('ended_utc')}"),
            ("commit", f"{(git.get('sha') or 'unknown')}{' (dirty)' if git.get('dirty') else ''}"),
            ("command", " ".join(map(str, m.get("command") or [])) or "—"),
            ("parameters", params),
            ("raw logs", links),
            ("other files", f"{len(others)} files in data/runs/{experiment}/{rec.run_id}/: " + ", ".join(others[:8]) + (" …" if len(others) > 8 else "")),
        ]
        sub += _table(rows)
        return sub


# --- {claims-table} -----------------------------------------------------------------------------------------------
class ClaimsTable(SphinxDirective):
    """The claims registry: each headline claim, its chapter, and its verdict against the data right now."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        from llmstudy.publishing import claims as C

        table = nodes.table(classes=["llmstudy-claims", "colwidths-given"])
        group = nodes.tgroup(cols=4)
        table += group
        for w in (30, 14, 12, 44):
            group += nodes.colspec(colwidth=w)
        head = nodes.thead()
        group += head
        hrow = nodes.row()
        for h in ("claim", "chapter", "status", "evidence"):
            hrow += nodes.entry("", nodes.paragraph(text=h))
        head += hrow
        body = nodes.tbody()
        group += body
        for c in C.CLAIMS:
            v = c.evaluate()
            row = nodes.row(ids=[f"claim-{nodes.make_id(c.id)}"])
            row += nodes.entry("", nodes.paragraph(text=c.statement))
            para = nodes.paragraph()
            ref = addnodes.pending_xref("", refdomain="std", reftype="doc", reftarget=f"/notebooks/{c.chapter}", refexplicit=False, refwarn=True)
            ref += nodes.inline(text=c.chapter)
            para += ref
            row += nodes.entry("", para)
            row += nodes.entry("", nodes.paragraph(text=v.status))
            row += nodes.entry("", nodes.paragraph(text=v.evidence))
            body += row
        return [table]


def setup(app: Sphinx) -> dict:
    app.add_config_value("llmstudy_stamp", {}, "html")
    app.add_config_value("llmstudy_inputs", "", "env")
    app.connect("config-inited", _config_inited, priority=900)
    app.connect("build-finished", _build_finished)
    app.connect("html-page-context", _page_context, priority=100)  # before any handler that ends the event
    app.add_directive("run-records", RunRecords)
    app.add_directive("claims-table", ClaimsTable)
    app.add_css_file("llmstudy.css")
    return {"version": publish.package_version(repo_root()), "parallel_read_safe": True, "parallel_write_safe": True}


CSS = """.llmstudy-stamp { font-size: 0.8em; color: var(--pst-color-text-muted); margin-top: 0.5em; }
.llmstudy-provenance { font-size: 0.85em; color: var(--pst-color-text-muted); margin: 0.2em 0 1em 0; }
table.llmstudy-manifest td p, table.llmstudy-claims td p { margin: 0; }
table.llmstudy-manifest, table.llmstudy-claims { width: 100%; table-layout: fixed; }
table.llmstudy-manifest td, table.llmstudy-claims td { white-space: normal; overflow-wrap: anywhere; }
table.llmstudy-manifest pre { white-space: pre-wrap; max-height: 20em; }
"""

