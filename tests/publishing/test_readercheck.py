"""The reader's check: headless Chromium opens the index and every chapter of the built site.

The check itself is tested first on a small site with one defect of each kind, so that a clean report on the book
means the defects are absent, not that the check is blind.
"""

import re
import shutil

import pytest
from conftest import ROOT

from llmstudy.publishing import readercheck as RC
from llmstudy.publishing import site as publish

pytestmark = pytest.mark.skipif(RC.chromium_path() is None, reason="no Chromium (Debian's chromium package; make test installs it where apt-get works)")

PNG = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")


def _page(body: str) -> str:
    return f'<!DOCTYPE html><html><head><meta charset="utf-8"></head><body><main>{body}' \
           '<div class="llmstudy-stamp" data-version="9" data-git-sha="x" data-data-hash="y" data-built-utc="z"></div></main></body></html>'


def test_the_check_sees_each_kind_of_defect(tmp_path):
    import base64

    (tmp_path / "ok.png").write_bytes(base64.b64decode(PNG))
    (tmp_path / "index.html").write_text(_page('<a href="good.html">good</a>'))
    (tmp_path / "good.html").write_text(_page(
        '<div class="cell"><div class="cell_output"><img src="ok.png"></div><p class="llmstudy-provenance">Source</p></div>'
        '<p>A value <span class="output text_plain">42</span>, code <code>$HOME and $PATH</code>, <a href="#here">here</a></p><p id="here"></p>'))
    (tmp_path / "bad.html").write_text(_page(
        '<div class="cell"><div class="cell_output"><img src="missing.png"></div></div>'
        '<p>raw $x^2$ and \\frac{a}{b} and {glue:}`k`</p><span class="output text_plain"> </span>'
        '<a href="nowhere.html">x</a> <a href="good.html#absent">y</a><script>undefined_function()</script>'))
    good = RC.check(tmp_path, ["good.html"])
    assert good.ok(), good.problems
    assert (good.pages, good.images, good.glued) == (2, 1, 1) and good.links >= 2
    nb = tmp_path / "bad.ipynb"
    nb.write_text('{"cells": [{"cell_type": "markdown", "source": ["{glue:}`a` and {glue:}`b`"]}]}')
    bad = RC.check(tmp_path, ["bad.html"], notebooks={"bad.html": nb}).problems
    text = "\n".join(bad)
    for expected in ("figure did not load: missing.png", "404", "JavaScript error", "raw math source visible", "\\frac",
                     "unrendered glue role", "glued values are empty", "1 glued values on the page, the notebook uses 2", "without a provenance line",
                     "broken link", "missing anchor"):
        assert expected in text, (expected, bad)


FIXTURES = ROOT / "tests" / "fixtures" / "readercheck"
# each self-test page holds one defect of one kind; the check must report it, and only it
DEFECTS = {
    "warning.html": "a warning is shown",
    "stderr.html": "stderr output is shown",
    "traceback.html": "a traceback is shown",
    "tmp-path.html": "a temp or home path is shown: '/tmp/tmpab12cd/server.log'",
    "home-path.html": "a temp or home path is shown: '/root/.cache/huggingface/hub'",
    "tex-escape.html": "a raw TeX escape is shown",
    "dash-in-code.html": "a typographic dash inside code: '–dtype bfloat16'",
    "dash-in-flag.html": "a command-line flag with a typographic dash",
    "placeholder-cell.html": "a placeholder in a table cell: 'nan'",
    "placeholder-none.html": "a placeholder in the text",
    "placeholder-text.html": "a placeholder in the text",
    "placeholder-na.html": "a placeholder in the text",
    "wide-table.html": "a table wider than the text column: Nineteen columns",
    "narrow-figure.html": "a figure narrower than the text column: a figure shrunk to a third of the column",
}


def _by_page(problems):
    out = {}
    for p in problems:
        out.setdefault(p.split(":", 1)[0], []).append(p)
    return out


def test_each_report_rule_fires_on_its_self_test_page_and_only_there():
    rep = RC.check(FIXTURES, ["clean.html", *DEFECTS], landing=None, fonts=["Noto Sans CJK JP"])
    found = _by_page(rep.problems)
    assert "clean.html" not in found and "index.html" not in found, found  # Japanese, an en dash in prose, "None of", "—" in code
    for page, expected in DEFECTS.items():
        assert found.get(page), f"{page}: the rule did not fire"
        assert all(expected in p for p in found[page]), (page, found[page])
    assert set(found) == set(DEFECTS)


def test_japanese_needs_a_cjk_font_and_the_landing_page_needs_computed_findings():
    rep = RC.check(FIXTURES, ["cjk.html", "landing-clean.html"], landing=None, fonts=[])
    found = _by_page(rep.problems)
    assert [p.split(": ", 1)[1] for p in found["cjk.html"]] == ["the page shows Japanese but no CJK font is installed (Debian: fonts-noto-cjk)"]
    assert "clean.html" not in found  # index.html is the clean page, which holds Japanese too
    for landing, expected in (("landing-clean.html", None), ("landing-typed.html", "finding finding-6 has numbers that were typed, not computed: ['3.87']"),
                              ("landing-none.html", "the landing page has no findings box")):
        rep = RC.check(FIXTURES, [landing], landing=landing, fonts=["Noto Sans CJK JP"])
        mine = _by_page(rep.problems).get(landing, [])
        assert (mine == []) if expected is None else (mine == [f"{landing}: {expected}"]), mine


def test_the_book_installs_a_cjk_font_like_chromium():
    make = (ROOT / "Makefile").read_text()
    assert "fonts-noto-cjk" in make and re.search(r"^test: \$\(FONTS_OK\)$", make, re.M) and re.search(r"^book: \$\(FONTS_OK\)$", make, re.M)
    if RC.cjk_fonts() == [] and shutil.which("fc-list"):
        pytest.skip("no CJK font here yet: make test installs fonts-noto-cjk")
    assert any("CJK" in f or "Noto" in f for f in RC.cjk_fonts()), RC.cjk_fonts()


@pytest.mark.slow
def test_a_reader_sees_the_book(built_site):
    site, _, v, _ = built_site
    pages = publish.page_paths(ROOT)
    notebooks = publish.notebook_pages(ROOT)
    rep = RC.check(site, pages, prefix=f"{v}/", notebooks=notebooks)
    assert rep.ok(), "\n".join(rep.problems)
    assert rep.pages == len(pages) + 1
    html_imgs = sum((site / v / p).read_text().count("<img") for p in notebooks)
    assert rep.images >= html_imgs >= 10  # every figure of every chapter was looked at
    assert rep.glued >= sum(RC.expected_glue(nb) for nb in notebooks.values()) > 50
    assert rep.math > 5 and rep.provenance >= 30 and rep.links > 100
