"""The reader's check: open the built book in headless Chromium, page by page, and look at it as a reader would.

For the index and every page of the TOC it requires: the page loads without a JavaScript error or a missing file;
every figure has loaded (``naturalWidth > 0``); every glued value of the chapter's notebook is on the page and not
empty; no raw math source (``$…$``, ``\\frac``) is visible after MathJax ran, and every math element was typeset;
every cell that outputs a figure or a table carries a provenance line; every page carries the stamp; every internal
link (page, download, anchor) resolves. The site is served from 127.0.0.1 (the version switcher's JSON needs HTTP).

It also reads each page as a report (:func:`page_problems`, at 1400 px wide, collapsed sections opened): no warning,
stderr output or traceback; no temp or home path; no raw TeX escape; no typographic dash inside code; no
None/nan/n/a placeholder in a table or the text; no table wider than the text column and no figure narrower than it;
Japanese only with a CJK font installed; and on the landing page six to ten findings, each linking to its chapter,
naming its records or publication, with every number marked as computed (``span.llmstudy-value``).

Chromium is Debian's ``chromium`` package (``make test`` installs it; ``$LLMSTUDY_CHROMIUM`` overrides), driven by
Playwright (PyPI) through ``executable_path``: no browser download.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import os
import re
import shutil
import threading
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

GLUE_ROLE = re.compile(r"\{glue(?::[a-z]*)?\}`[^`]+`")
MATH_LEFTOVERS = re.compile(r"\\(frac|text|times|cdot|mathrm|sum|sqrt|left|right)\b|\\\(|\\\[|\$\$|(?<![\w$])\$(?!\{)[^$\s][^$\n]{0,80}\$(?!\w)")
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run"]


class ReaderCheckError(RuntimeError):
    """The browser cannot be started (not installed, or it does not run here)."""


def chromium_path() -> str | None:
    """Debian's Chromium binary (the real one, not the wrapper script), or ``$LLMSTUDY_CHROMIUM``."""
    env = os.environ.get("LLMSTUDY_CHROMIUM")
    if env:
        return env if Path(env).exists() else None
    for p in ("/usr/lib/chromium/chromium",):
        if Path(p).exists():
            return p
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def serve(directory: Path):
    """Serve ``directory`` on 127.0.0.1 (a free port) for the duration of the block; yields the base URL."""
    handler = functools.partial(_Quiet, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Report:
    pages: int = 0
    images: int = 0
    glued: int = 0
    math: int = 0
    provenance: int = 0
    links: int = 0
    problems: list[str] = field(default_factory=list)

    def ok(self) -> bool:
        return not self.problems


def expected_glue(notebook: Path) -> int:
    """How many glue roles the notebook's markdown uses (each must show as a value on the page)."""
    nb = json.loads(Path(notebook).read_text())
    text = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    return len(GLUE_ROLE.findall(text))


PAGE_JS = r"""
async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) { await MathJax.startup.promise; }
  const main = document.querySelector('main') || document.body;
  document.querySelectorAll('details').forEach(d => { d.open = true; });  // collapsed tables and figures are measured too
  await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
  const article = document.querySelector('article.bd-article') || main;
  const cs = getComputedStyle(article);
  const column = article.clientWidth - parseFloat(cs.paddingLeft || 0) - parseFloat(cs.paddingRight || 0);
  const label = e => ((e.querySelector && e.querySelector('caption')) ? e.querySelector('caption').innerText : (e.getAttribute('alt') || e.getAttribute('src') || e.outerHTML)).slice(0, 80);
  const wideTables = [...article.querySelectorAll('table')].filter(t => t.offsetWidth > column + 2)
      .map(t => `${label(t)} (${t.offsetWidth} px in a ${Math.round(column)} px column)`);
  const figs = [...article.querySelectorAll('.cell_output img, figure img')].filter(i => i.naturalWidth > 1);
  const narrowFigs = figs.filter(i => i.getBoundingClientRect().width < 0.95 * column)
      .map(i => `${label(i)} (${Math.round(i.getBoundingClientRect().width)} px in a ${Math.round(column)} px column)`);
  const codeDashes = [...main.querySelectorAll('code, pre')].map(c => c.innerText.trim())
      .filter(t => /[\u2013\u2014]/.test(t) && !/^[\u2013\u2014]$/.test(t)).map(t => t.slice(0, 80));
  const cellPlaceholders = [...main.querySelectorAll('td, th')].map(c => c.innerText.trim())
      .filter(t => /^(None|none|nan|NaN|n\/a|N\/A|<NA>|NaT)$/.test(t));
  const stderr = [...main.querySelectorAll('.cell_output .output.stderr, .cell_output .stderr')].map(e => e.innerText.slice(0, 120));
  const full = main.innerText;
  const fb = document.querySelector('.llmstudy-findings');
  const findings = fb ? [...fb.querySelectorAll('.llmstudy-finding')].map(f => {
    const a = f.querySelector('.llmstudy-finding-a');
    const c = a ? a.cloneNode(true) : null;
    if (c) c.querySelectorAll('.llmstudy-value, code').forEach(v => v.remove());
    return {id: f.id, typed: c ? (c.innerText.match(/\d[\d.,]*/g) || []) : [], values: a ? a.querySelectorAll('.llmstudy-value').length : 0,
            chapter: !!f.querySelector('a[href*="notebooks/"]'), source: !!(f.dataset.runs || f.dataset.published)};
  }) : null;
  const imgs = [...main.querySelectorAll('img')];
  const badImgs = imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute('src'));
  const glue = [...main.querySelectorAll('span.output, span.pasted-text, span.pasted-inline')];
  const emptyGlue = glue.filter(g => !g.innerText.trim()).length;
  const mathEls = [...main.querySelectorAll('.math')];
  const untypeset = mathEls.filter(m => !m.querySelector('mjx-container') && m.tagName !== 'MJX-CONTAINER').length;
  const clone = main.cloneNode(true);
  clone.querySelectorAll('pre, code, mjx-container, .highlight, script, style, mjx-assistive-mml').forEach(e => e.remove());
  const cells = [...main.querySelectorAll('div.cell')];
  const needSource = cells.filter(c => c.querySelector('.cell_output img, .cell_output table'));
  const noSource = needSource.filter(c => !c.querySelector('.llmstudy-provenance')).map(c => (c.querySelector('.cell_output table caption, .cell_output img') || {}).outerHTML || '').map(s => s.slice(0, 120));
  const stamp = document.querySelector('.llmstudy-stamp');
  const links = [...document.querySelectorAll('a[href]')].map(a => a.href);
  return {images: imgs.length, badImgs, glue: glue.length, emptyGlue, math: mathEls.length, untypeset,
          text: clone.innerText, cellsWithOutput: needSource.length, noSource,
          stamp: stamp ? {...stamp.dataset} : null, links,
          column, wideTables, narrowFigs, codeDashes, cellPlaceholders, stderr, full, findings,
          cjk: /[\u3040-\u30ff\u4e00-\u9fff]/.test(full)};
}
"""


# --- what a reader must never see (each rule has a self-test page in tests/fixtures/readercheck/) --------------------
WARNING = re.compile(r"\b[A-Z]\w*Warning\b|\bfindfont: |^WARNING[: ]", re.M)
TRACEBACK = re.compile(r"Traceback \(most recent call last\)|^\w*Error: .*\n?.*^\s*File \"", re.M)
LOCAL_PATH = re.compile(r"(?<![\w.~-])/(?:tmp|root|home/[\w.-]+)/[\w.~-](?:[\w.~/-]*[\w~/])?")
TEX_ESCAPE = re.compile(r"\\[_%&#]")
FLAG_DASH = re.compile(r"(?<!\S)[\u2013\u2014][a-z][\w-]*")  # "–dtype": a flag whose "--" was typeset as a dash
PLACEHOLDER = re.compile(r"(?<![\w./-])(?:NaN|nan|n/a|N/A|<NA>)(?![\w/])|:\s*[Nn]one(?=[ \t]*(?:[.,;)]|$))|\bNone(?=[.,;)\]])", re.M)
QUOTED = re.compile(r"“[^”\n]*”")  # a quotation (a log line, a warning's wording) is the source's words, not a placeholder
FINDINGS_RANGE = (6, 10)


def cjk_fonts() -> list[str]:
    """The installed fonts that cover Japanese (fontconfig), e.g. Debian's ``fonts-noto-cjk``."""
    import subprocess

    try:
        out = subprocess.run(["fc-list", ":lang=ja", "family"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return sorted({f.strip() for line in out.splitlines() for f in line.split(",")[:1] if f.strip()})


def page_problems(where: str, info: dict, landing: bool = False, fonts: list[str] | None = None) -> list[str]:
    """The report-quality rules on one page's facts (``PAGE_JS``'s result): leaks, placeholders, widths, findings."""
    out = []
    full = info.get("full", "")
    for m in WARNING.finditer(full):
        out.append(f"{where}: a warning is shown: …{full[max(0, m.start() - 40):m.end() + 60]!r}…")
    out += [f"{where}: stderr output is shown: {t!r}" for t in info.get("stderr", [])]
    if TRACEBACK.search(full):
        out.append(f"{where}: a traceback is shown")
    for m in LOCAL_PATH.finditer(full):
        out.append(f"{where}: a temp or home path is shown: {m.group(0)!r}")
    text = info.get("text", "")
    for m in TEX_ESCAPE.finditer(text):
        out.append(f"{where}: a raw TeX escape is shown: …{text[max(0, m.start() - 30):m.end() + 30]!r}…")
    out += [f"{where}: a typographic dash inside code: {t!r}" for t in info.get("codeDashes", [])]
    for m in FLAG_DASH.finditer(text):
        out.append(f"{where}: a command-line flag with a typographic dash: …{text[max(0, m.start() - 30):m.end() + 20]!r}…")
    out += [f"{where}: a placeholder in a table cell: {t!r}" for t in info.get("cellPlaceholders", [])]
    prose = QUOTED.sub(lambda q: " " * len(q.group(0)), text)
    for m in PLACEHOLDER.finditer(prose):
        out.append(f"{where}: a placeholder in the text: …{text[max(0, m.start() - 40):m.end() + 20]!r}…")
    out += [f"{where}: a table wider than the text column: {t}" for t in info.get("wideTables", [])]
    out += [f"{where}: a figure narrower than the text column: {t}" for t in info.get("narrowFigs", [])]
    if info.get("cjk") and not (fonts if fonts is not None else cjk_fonts()):
        out.append(f"{where}: the page shows Japanese but no CJK font is installed (Debian: fonts-noto-cjk)")
    if landing:
        f = info.get("findings")
        lo, hi = FINDINGS_RANGE
        if f is None:
            out.append(f"{where}: the landing page has no findings box")
        else:
            if not lo <= len(f) <= hi:
                out.append(f"{where}: the findings box holds {len(f)} findings (want {lo}–{hi})")
            for x in f:
                if x["typed"]:
                    out.append(f"{where}: finding {x['id']} has numbers that were typed, not computed: {x['typed']}")
                if not x["values"]:
                    out.append(f"{where}: finding {x['id']} has no computed value")
                if not x["chapter"]:
                    out.append(f"{where}: finding {x['id']} does not link to its chapter")
                if not x["source"]:
                    out.append(f"{where}: finding {x['id']} names no run record and no publication")
    return out


def _fetch(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            body = r.read()
            return r.status, body.decode("utf-8", "replace") if url.split("#")[0].endswith((".html", "/")) else ""
    except urllib.error.HTTPError as e:
        return e.code, ""


def check(directory: Path, pages: list[str], prefix: str = "", notebooks: dict[str, Path] | None = None,
          stamp_keys=("version", "git-sha", "data-hash", "built-utc"), landing: str | None = "intro.html",
          fonts: list[str] | None = None, report_rules: bool = True) -> Report:
    """Run the reader's check on ``directory`` served over HTTP; ``pages`` are paths under ``prefix`` (e.g. ``0.1.0/``).

    ``landing``: the page that must hold the findings box; ``fonts``: the CJK fonts to assume (default: fontconfig's);
    ``report_rules=False`` leaves out the report-quality rules of :func:`page_problems`.
    """
    from playwright.sync_api import sync_playwright

    exe = chromium_path()
    if not exe:
        raise ReaderCheckError("no Chromium found: install Debian's chromium (apt-get install chromium) or set LLMSTUDY_CHROMIUM")
    notebooks = notebooks or {}
    rep = Report()
    links: dict[str, str] = {}
    fonts = cjk_fonts() if fonts is None else fonts
    with serve(directory) as base, sync_playwright() as pw:
        try:
            browser = pw.chromium.launch(executable_path=exe, args=BROWSER_ARGS)
        except Exception as e:
            raise ReaderCheckError(f"{exe} does not start under Playwright: {e}") from e
        try:
            for page_path in ["index.html", *pages]:
                url = urllib.parse.urljoin(base, prefix + page_path)
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                errors: list[str] = []
                page.on("pageerror", lambda e, errors=errors: errors.append(f"JavaScript error: {e}"))
                page.on("response", lambda r, errors=errors: errors.append(f"{r.status} {r.url}") if r.status >= 400 and r.url.startswith(base) else None)
                resp = page.goto(url, wait_until="networkidle")
                if resp is None or resp.status != 200:
                    rep.problems.append(f"{page_path}: HTTP {resp.status if resp else 'no response'}")
                    page.close()
                    continue
                info = page.evaluate(PAGE_JS)
                page.close()
                rep.pages += 1
                rep.images += info["images"]
                rep.glued += info["glue"]
                rep.math += info["math"]
                rep.provenance += info["cellsWithOutput"]
                where = page_path
                rep.problems += [f"{where}: {e}" for e in errors]
                rep.problems += [f"{where}: figure did not load: {s}" for s in info["badImgs"]]
                if info["emptyGlue"]:
                    rep.problems.append(f"{where}: {info['emptyGlue']} glued values are empty")
                want = expected_glue(notebooks[page_path]) if page_path in notebooks else 0
                if info["glue"] < want:
                    rep.problems.append(f"{where}: {info['glue']} glued values on the page, the notebook uses {want}")
                if info["untypeset"]:
                    rep.problems.append(f"{where}: {info['untypeset']} of {info['math']} math elements were not typeset by MathJax")
                for m in MATH_LEFTOVERS.finditer(info["text"]):
                    rep.problems.append(f"{where}: raw math source visible: …{info['text'][max(0, m.start() - 30):m.end() + 30]!r}…")
                if "{glue" in info["text"]:
                    rep.problems.append(f"{where}: an unrendered glue role is visible")
                rep.problems += [f"{where}: a figure/table cell without a provenance line: {s}" for s in info["noSource"]]
                if report_rules:
                    rep.problems += page_problems(where, info, landing=page_path == landing, fonts=fonts)
                if page_path != "index.html":
                    st = info["stamp"] or {}
                    missing = [k for k in stamp_keys if not st.get(k.replace("-", "_")) and not st.get(_camel(k))]
                    if missing:
                        rep.problems.append(f"{where}: page stamp lacks {missing}")
                for href in info["links"]:
                    # this version's pages and files; other versions (the switcher's menu) are checked with their own build
                    if href.startswith(base + prefix):
                        links.setdefault(href, where)
        finally:
            browser.close()
        rep.problems += _check_links(links, base)
        rep.links = len(links)
    return rep


def _camel(k: str) -> str:
    head, *rest = k.split("-")
    return head + "".join(r.capitalize() for r in rest)


def _check_links(links: dict[str, str], base: str) -> list[str]:
    problems, pages = [], {}
    for href, where in sorted(links.items()):
        url, _, frag = href.partition("#")
        if url not in pages:
            pages[url] = _fetch(url)
        status, body = pages[url]
        if status != 200:
            problems.append(f"{where}: broken link {href} (HTTP {status})")
        elif frag and body and not re.search(rf'id="{re.escape(urllib.parse.unquote(frag))}"', body):
            problems.append(f"{where}: link {href} points to a missing anchor")
    return problems
