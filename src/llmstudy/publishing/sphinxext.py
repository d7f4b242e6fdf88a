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

import base64
import html
import json
import re
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
    (static / "llmstudy.css").write_text(css())
    from llmstudy.calc import bundle  # the calculators' code and measured cases, fresh on every build

    bundle.write(static / "calc" / "gen")
    config.html_static_path = [*config.html_static_path, str(static)]
    _theme_options(config, s["version"], root)


def css() -> str:
    """The book's stylesheet: ``book/_static/llmstudy.css`` (tables, collapsed details, the findings box, the stamp)."""
    path = repo_root() / "book" / "_static" / "llmstudy.css"
    return path.read_text() if path.is_file() else CSS


def repository_url(root: Path | None = None) -> str:
    """Where the code lives: ``$LLMSTUDY_REPOSITORY_URL``, else ``[project.urls] Repository`` in pyproject.toml, else ""."""
    import os

    env = os.environ.get("LLMSTUDY_REPOSITORY_URL", "")
    if env:
        return env
    text = ((root or repo_root()) / "pyproject.toml").read_text()
    m = re.search(r"^\[project\.urls\][^\[]*?^(?:Repository|Source|Homepage)\s*=\s*\"([^\"]+)\"", text, re.M | re.S)
    return m.group(1) if m else ""


def _theme_options(config, version: str, root: Path) -> None:
    """A visible version menu and a repository link on every page, in the single-version ``make book`` as in the site.

    sphinx-book-theme does not render pydata's navbar, so the version switcher goes into the article header (next to
    the download and full-screen buttons). Without a site (``make book``) the menu reads ``switcher.json`` written
    next to the pages (one entry, this version); ``llmstudy site build`` points it at the site's ``../switcher.json``.
    """
    opts = config.html_theme_options = dict(config.html_theme_options or {})
    if "switcher" not in opts:
        opts["switcher"] = {"json_url": "switcher.json", "version_match": version}
        config.llmstudy_single_switcher = True
    opts["check_switcher"] = False
    end = list(opts.get("article_header_end") or ["article-header-buttons.html"])
    if isinstance(opts.get("article_header_end"), str):
        end = [e.strip() for e in opts["article_header_end"].split(",") if e.strip()]
    if "version-switcher" not in end and "version-switcher.html" not in end:
        opts["article_header_end"] = ["version-switcher", *end]
    url = repository_url(root)
    links = [x for x in opts.get("icon_links") or [] if x.get("name") != "Repository"]
    links.append({"name": "Repository", "url": url or "reproduce.html#get-the-code", "icon": "fa-brands fa-git-alt", "type": "fontawesome"})
    opts["icon_links"] = links
    opts["use_repository_button"] = bool(url) or bool(opts.get("use_repository_button"))
    if url:
        opts["repository_url"] = url


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
    links = context.get("theme_icon_links")
    if links and not repository_url() and "pathto" in context:  # no public URL configured: the page that says how to get the code
        if "reproduce" in app.env.all_docs:
            base = context["pathto"]("reproduce")
            here = ("" if base.startswith("#") else base) + "#get-the-code"  # pathto gives "#" on the page itself
            context["theme_icon_links"] = [{**x, "url": here} if x.get("name") == "Repository" else x for x in links]
        else:  # a book without that page (a fork): no link rather than a broken one
            context["theme_icon_links"] = [x for x in links if x.get("name") != "Repository"]


def _build_finished(app: Sphinx, exc) -> None:
    if exc is None and app.builder.format == "html":
        stamp = {**app.config.llmstudy_stamp, "built_utc": app._llmstudy_built_utc}
        (Path(app.outdir) / publish.STAMP_FILE).write_text(json.dumps(stamp, indent=1) + "\n")
        if getattr(app.config, "llmstudy_single_switcher", False):  # make book: a menu of one version, this one
            v = stamp["version"]
            (Path(app.outdir) / "switcher.json").write_text(json.dumps([{"version": v, "name": f"{v} (this build)", "url": "/", "preferred": True}], indent=1) + "\n")


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
        params = nodes.literal_block(text=tidy_paths(text[:6000]))
        links = nodes.paragraph()
        logs = [f for f in m.get("files", []) if f.startswith("logs/")] + ["manifest.json"]
        for i, f in enumerate(logs):
            rel = os.path.relpath(d / f, doc_dir)
            ref = addnodes.download_reference("", "", refdoc=self.env.docname, reftarget=rel, refexplicit=True, refdomain="", reftype="download")
            ref += nodes.literal(text=f)
            links += [nodes.Text(", ") if i else nodes.Text(""), ref]
        others = [f for f in m.get("files", []) if not f.startswith("logs/")]
        models = ", ".join(run_models(rec)) or "—"
        start = str(m.get("started_utc") or "")[:10] or "—"
        sub += nodes.paragraph(text=f"{m.get('outcome') or '—'} · model {models} · {_gpu_line(m)} · {start}", classes=["llmstudy-record-line"])
        rows = [
            ("outcome", str(m.get("outcome"))),
            ("model", ", ".join(run_models(rec)) or "—"),
            ("GPU", _gpu_line(m)),
            ("driver / CUDA", f"{g.get('driver') or '—'} / {g.get('cuda_runtime') or '—'}"),
            ("host", f"{(m.get('host') or {}).get('platform', '—')}, {(m.get('host') or {}).get('cpu_count', '—')} CPUs"),
            ("versions", ", ".join(f"{k} {v}" for k, v in pk.items()) or "—"),
            ("date (UTC)", f"{m.get('started_utc')} → {m.get('ended_utc')}"),
            ("commit", f"{(git.get('sha') or 'unknown')}{' (dirty)' if git.get('dirty') else ''}"),
            ("command", nodes.paragraph("", "", nodes.literal(text=tidy_paths(" ".join(map(str, m.get("command") or []))))) if m.get("command") else "—"),
            ("parameters", params),
            ("raw logs", links),
            ("other files", (", ".join(others[:8]) + (f" and {len(others) - 8} more" if len(others) > 8 else "")) or "—"),
        ]
        sub += nodes.raw("", '<details class="llmstudy-details"><summary>Manifest, parameters and raw logs</summary>', format="html")
        sub += _table(rows)
        sub += nodes.raw("", "</details>", format="html")
        return sub


OUTSIDE = re.compile(r"(?<![\w.])/(?:root|tmp|home/[^/\s]+|work/[^/\s]+|Users/[^/\s]+)(?=/)")


def tidy_paths(text: str) -> str:
    """A recorded command or parameter as a reader should see it: the repository's CLI as ``llmstudy``, folders of
    the machine that made the record (``/root/…``, ``/tmp/…``) as ``…`` (the record keeps the full path)."""
    text = re.sub(r"(?:\S*python[\d.]*\s+)?\S*/src/llmstudy/cli\.py\b", "llmstudy", text)
    return OUTSIDE.sub("…", text)


# --- {claims-table} -----------------------------------------------------------------------------------------------
class ClaimsTable(SphinxDirective):
    """The claims registry: each headline claim, its chapter, and its verdict against the data right now."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        from llmstudy.publishing import claims as C

        table = nodes.table(classes=["llmstudy-claims", "colwidths-given"])
        group = nodes.tgroup(cols=4)
        table += group
        for w in (32, 14, 10, 44):
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
            ref = addnodes.pending_xref("", refdomain="std", reftype="doc", reftarget=f"/notebooks/{c.chapter}", refexplicit=True, refwarn=True)
            ref += nodes.inline(text=c.chapter.replace("_", " "))  # the chapter's short name: its full title is a sentence
            para += ref
            row += nodes.entry("", para)
            row += nodes.entry("", nodes.paragraph(text=v.status, classes=[f"llmstudy-status-{v.status.replace(' ', '-')}"]))
            row += nodes.entry("", nodes.paragraph(text=v.evidence))
            body += row
        return [table]


# --- {findings} and {summary-figure}: the landing page ----------------------------------------------------------
def _rel(docname: str) -> str:
    """The prefix from page ``docname`` to the site's root (``""`` for ``intro``, ``"../"`` for ``notebooks/x``)."""
    return "../" * docname.count("/")


def _run_links(runs, up: str) -> str:
    """``experiment/run`` ids as links to the appendix, grouped: ``memory_accounting/`` once, then its run ids."""
    groups: dict[str, list[str]] = {}
    for r in runs:
        exp, _, rid = r.partition("/")
        groups.setdefault(exp, []).append(rid)
    return "; ".join(f"<code>{html.escape(exp)}/</code> " + ", ".join(
        f'<a href="{up}runs.html#{run_anchor(exp, rid)}"><code>{html.escape(rid)}</code></a>' for rid in ids) for exp, ids in groups.items())


FINDINGS_CLASS = "llmstudy-findings"
VALUE_CLASS = "llmstudy-value"


def findings_html(found, up: str = "") -> str:
    """The findings box: each finding's question (a link to its chapter), its answer with every computed value marked,
    and the records (or the publication) it rests on."""
    cards = []
    for f in found:
        answer = "".join(f'<span class="{VALUE_CLASS}">{html.escape(t)}</span>' if v else html.escape(t) for t, v in f.parts())
        src = []
        if f.runs:
            src.append(("run records " if len(f.runs) > 1 else "run record ") + _run_links(f.runs, up))
        if f.published:
            src.append("published: " + html.escape(f.published))
        if f.status:
            src.append(f'claim <a href="{up}claims.html#claim-{html.escape(nodes.make_id(f.claim))}">{html.escape(f.status)}</a>')
        cards.append(
            f'<div class="llmstudy-finding" id="finding-{html.escape(f.id)}" data-chapter="{html.escape(f.chapter)}" '
            f'data-runs="{html.escape(" ".join(f.runs))}" data-published="{html.escape(f.published)}">'
            f'<p class="llmstudy-finding-q"><a href="{up}notebooks/{html.escape(f.chapter)}.html">{html.escape(f.heading)}</a></p>'
            f'<p class="llmstudy-finding-a">{answer}</p>'
            f'<p class="llmstudy-finding-src">{"; ".join(src)}</p></div>')
    return f'<div class="{FINDINGS_CLASS}" data-count="{len(found)}">{"".join(cards)}</div>'


class Findings(SphinxDirective):
    """The landing page's headline findings (:mod:`llmstudy.publishing.findings`), computed at build time."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        from llmstudy.publishing import findings as F

        return [nodes.raw("", findings_html(F.findings(), _rel(self.env.docname)), format="html")]


def summary_figure_html(s, up: str = "") -> str:
    from llmstudy.publishing import findings as F

    svg = F.summary_svg(s)
    data = base64.b64encode(svg.encode()).decode()
    runs = sorted({*s.memory_runs, *s.serving_runs})
    alt = ("Left: peak GPU memory of fine-tuning llama-2-7b per method, measured. Right: output tokens per second at 16 "
           "concurrent requests, measured with SGLang and vLLM against the article's published Triton and vLLM numbers.")
    return (f'<figure class="llmstudy-summary"><img src="data:image/svg+xml;base64,{data}" alt="{html.escape(alt)}">'
            '<figcaption>What fits and what serves: peak memory of each way to fine-tune llama-2-7b (left; the dashed line '
            'is one 80 GB H100), and the 7B model served at 16 concurrent requests today against the article\'s published '
            'numbers (right; grey bars are published, measured on an H100 PCIe).</figcaption>'
            f'<p class="llmstudy-provenance" data-runs="{html.escape(" ".join(runs))}">Source: run records {_run_links(runs, up)}; '
            'published: the article (Fixstars 2026, §6.6).</p></figure>')


class SummaryFigure(SphinxDirective):
    """The landing page's one figure (memory per fine-tuning method; serving throughput against the article)."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        from llmstudy.publishing import findings as F

        return [nodes.raw("", summary_figure_html(F.summary(), _rel(self.env.docname)), format="html")]


def setup(app: Sphinx) -> dict:
    app.add_config_value("llmstudy_stamp", {}, "html")
    app.add_config_value("llmstudy_inputs", "", "env")
    app.add_config_value("llmstudy_single_switcher", False, "html")
    app.connect("config-inited", _config_inited, priority=900)
    app.connect("build-finished", _build_finished)
    app.connect("html-page-context", _page_context, priority=100)  # before any handler that ends the event
    app.add_directive("run-records", RunRecords)
    app.add_directive("claims-table", ClaimsTable)
    app.add_directive("findings", Findings)
    app.add_directive("summary-figure", SummaryFigure)
    app.add_css_file("llmstudy.css")
    return {"version": publish.package_version(repo_root()), "parallel_read_safe": True, "parallel_write_safe": True}


CSS = """.llmstudy-stamp { font-size: 0.8em; color: var(--pst-color-text-muted); margin-top: 0.5em; }
.llmstudy-provenance { font-size: 0.85em; color: var(--pst-color-text-muted); margin: 0.2em 0 1em 0; }
table.llmstudy-manifest td p, table.llmstudy-claims td p { margin: 0; }
table.llmstudy-manifest, table.llmstudy-claims { width: 100%; table-layout: fixed; }
table.llmstudy-manifest td, table.llmstudy-claims td { white-space: normal; overflow-wrap: anywhere; }
table.llmstudy-manifest pre { white-space: pre-wrap; max-height: 20em; }
"""

