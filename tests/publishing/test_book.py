"""The whole book builds with warnings as errors, executing every notebook."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT


@pytest.mark.slow
def test_the_book_builds_with_warnings_as_errors(tmp_path):
    jb = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(jb) if jb.exists() else shutil.which("jupyter-book"), "build", "book", "-W", "-n", "--keep-going", "--path-output", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    html = tmp_path / "_build" / "html"
    page = (html / "notebooks" / "memory_accounting.html").read_text()
    assert (html / "intro.html").exists() and (html / "reproduce.html").exists()
    assert "9,994,240" in page and "6,738,415,616" in page  # glued numbers appear
    assert not re.search(r"‘[0-9.,]+’", page)  # glued text renders without quotes
    assert page.count("<img") >= 2  # seaborn figures
    assert "Traceback" not in page
    # the frame: the landing page's findings and figure, a version menu and a repository link on every page
    from bs4 import BeautifulSoup

    intro = BeautifulSoup((html / "intro.html").read_text(), "html.parser")
    cards = intro.select(".llmstudy-findings .llmstudy-finding")
    assert 6 <= len(cards) <= 10 and all(c.select(".llmstudy-value") for c in cards)
    assert intro.select_one("figure.llmstudy-summary img")["src"].startswith("data:image/svg+xml;base64,")
    assert intro.select_one(".version-switcher__button") is not None and intro.select_one('a[aria-label="Repository"], a[title="Repository"]') is not None
    assert '"version": "' in (html / "switcher.json").read_text()
    toc = [a["href"] for a in intro.select("nav.bd-links a.reference.internal")]
    assert toc[0] != "reproduce.html" and toc.index("reproduce.html") > toc.index("notebooks/engine_comparison.html")
    assert "notebooks/trtllm_serve.html" in toc
    runs = BeautifulSoup((html / "runs.html").read_text(), "html.parser")
    assert runs.select("details.llmstudy-details table.llmstudy-manifest")
    assert not re.search(r"(?<![\w.])/(root|tmp)/", runs.get_text())
