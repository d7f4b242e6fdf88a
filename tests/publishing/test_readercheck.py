"""The reader's check: headless Chromium opens the index and every chapter of the built site.

The check itself is tested first on a small site with one defect of each kind, so that a clean report on the book
means the defects are absent, not that the check is blind.
"""

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
