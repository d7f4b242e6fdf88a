"""The published book: version, stamps, switcher, redirect, changelog, run-records appendix, provenance, GPU workflow."""

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import papermill as pm
import pytest
import yaml
from bs4 import BeautifulSoup
from conftest import ROOT

import llmstudy
from llmstudy.core import book
from llmstudy.core import records as R
from llmstudy.publishing import site as publish


def _git(cwd, *args):
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


# --- version ------------------------------------------------------------------------------------------------------
def test_one_version_in_pyproject_the_package_and_the_changelog():
    v = publish.package_version(ROOT)
    assert v == llmstudy.__version__ == publish.version(ROOT)
    assert re.search(rf"^## {re.escape(v)}$", (ROOT / "CHANGELOG.md").read_text(), re.M), "CHANGELOG.md needs a section for the version"


def test_a_tag_that_disagrees_with_pyproject_is_refused(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\nversion = "0.2.0"\n')
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "-c", "user.email=a@b", "-c", "user.name=a", "commit", "-q", "--allow-empty", "-m", "x")
    assert publish.version(tmp_path) == "0.2.0"  # no tag: the package version
    _git(tmp_path, "tag", "v0.1.0")
    with pytest.raises(publish.PublishError, match="tagged v0.1.0 but pyproject.toml says version 0.2.0"):
        publish.version(tmp_path)
    _git(tmp_path, "tag", "v0.2.0")
    assert publish.version(tmp_path) == "0.2.0"


def test_the_data_hash_changes_with_any_file_under_data(tmp_path):
    (tmp_path / "data" / "runs" / "x" / "r1").mkdir(parents=True)
    f = tmp_path / "data" / "runs" / "x" / "r1" / "results.csv"
    f.write_text("a\n1\n")
    h1 = publish.data_hash(tmp_path)
    (tmp_path / "data" / "runs" / "x" / ".tmp-r2-1").mkdir()
    (tmp_path / "data" / "runs" / "x" / ".tmp-r2-1" / "partial.csv").write_text("junk")
    assert publish.data_hash(tmp_path) == h1  # an unfinished record's temp folder is not data
    f.write_text("a\n2\n")
    assert publish.data_hash(tmp_path) != h1


def test_the_toc_gives_every_chapter_whoever_added_it(tmp_path):
    nb = ROOT / "notebooks" / "memory_accounting.ipynb"
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "book").mkdir()
    (tmp_path / "book" / "intro.md").write_text("# x\n")
    (tmp_path / "notebooks" / "new_chapter.ipynb").write_text(nb.read_text())
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: intro\nparts:\n  - caption: A\n    chapters:\n      - file: notebooks/new_chapter\n")
    assert [p.name for p in publish.chapters(tmp_path)] == ["new_chapter.ipynb"]
    assert publish.page_paths(tmp_path) == ["intro.html", "notebooks/new_chapter.html"]
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: intro\nchapters:\n  - file: notebooks/missing\n")
    with pytest.raises(publish.PublishError, match="missing"):
        publish.chapters(tmp_path)


def test_the_chapters_come_first_and_every_chapter_is_listed():
    toc = publish.toc_files(ROOT)
    assert toc[0] == "intro" and toc[1] != "reproduce", toc[:3]
    assert toc.index("reproduce") > max(i for i, f in enumerate(toc) if f.startswith("notebooks/"))
    assert {f"notebooks/{nb.stem}" for nb in (ROOT / "notebooks").glob("*.ipynb")} <= set(toc)


def test_every_page_gets_a_version_menu_and_a_repository_link(monkeypatch):
    from types import SimpleNamespace

    from llmstudy.publishing import sphinxext as X

    monkeypatch.delenv("LLMSTUDY_REPOSITORY_URL", raising=False)
    single = SimpleNamespace(html_theme_options={})
    X._theme_options(single, "9.9", ROOT)
    opts = single.html_theme_options
    assert opts["switcher"] == {"json_url": "switcher.json", "version_match": "9.9"} and single.llmstudy_single_switcher
    assert opts["article_header_end"][0] == "version-switcher" and opts["check_switcher"] is False
    assert [x["name"] for x in opts["icon_links"]] == ["Repository"]
    site = SimpleNamespace(html_theme_options=publish.site_config(ROOT, "9.9")["sphinx"]["config"]["html_theme_options"])
    X._theme_options(site, "9.9", ROOT)
    assert site.html_theme_options["switcher"]["json_url"] == "../switcher.json" and not hasattr(site, "llmstudy_single_switcher")
    monkeypatch.setenv("LLMSTUDY_REPOSITORY_URL", "https://example.org/llmstudy")
    X._theme_options(single, "9.9", ROOT)
    assert single.html_theme_options["icon_links"] == [{"name": "Repository", "url": "https://example.org/llmstudy", "icon": "fa-brands fa-git-alt", "type": "fontawesome"}]


def test_switcher_and_redirect_list_every_version_newest_first(tmp_path):
    for v in ("0.9.0", "0.10.0", "0.2.1"):
        (tmp_path / v).mkdir()
        (tmp_path / v / publish.STAMP_FILE).write_text(json.dumps({"version": v}))
    (tmp_path / "not-a-version").mkdir()  # no stamp: not listed
    entries = publish.write_switcher(tmp_path, "https://example.org/book")
    assert [e["version"] for e in entries] == ["0.10.0", "0.9.0", "0.2.1"]
    assert entries[0] == {"version": "0.10.0", "url": "https://example.org/book/0.10.0/", "name": "0.10.0 (latest)", "preferred": True}
    assert json.loads((tmp_path / "switcher.json").read_text()) == entries
    publish.write_redirect(tmp_path, "0.10.0")
    assert 'url=0.10.0/index.html' in (tmp_path / "index.html").read_text()


# --- the built site -----------------------------------------------------------------------------------------------
def _soup(path: Path) -> BeautifulSoup:
    return BeautifulSoup(path.read_text(), "html.parser")


@pytest.mark.slow
def test_the_site_has_the_version_an_earlier_one_the_switcher_and_the_redirect(built_site):
    site, _, v, cold_s = built_site
    print(f"cold site build: {cold_s:.1f} s")
    assert (site / v / "intro.html").is_file() and (site / "0.0.1" / "index.html").is_file()  # the earlier version is kept
    entries = json.loads((site / "switcher.json").read_text())
    assert [e["version"] for e in entries] == [v, "0.0.1"] and entries[0]["preferred"] is True and entries[0]["url"] == f"/{v}/"
    assert f"url={v}/index.html" in (site / "index.html").read_text()
    intro = (site / v / "intro.html").read_text()
    assert '"json_url": "../switcher.json"' in intro.replace("'", '"') or "theme_switcher_json_url = '../switcher.json'" in intro
    assert f"theme_switcher_version_match = '{v}'" in intro and "version-switcher__button" in intro


@pytest.mark.slow
def test_every_page_is_stamped_with_version_commit_data_hash_and_date(built_site):
    site, _, v, _ = built_site
    sha = publish.git_state(ROOT)["sha"]
    data = publish.data_hash(ROOT)
    for page in publish.page_paths(ROOT):
        stamp = _soup(site / v / page).select_one(".llmstudy-stamp")
        assert stamp is not None, page
        assert stamp["data-version"] == v and stamp["data-git-sha"] == sha and stamp["data-data-hash"] == data, page
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", stamp["data-built-utc"]), page
        assert f"llmstudy {v}" in stamp.get_text() and data[:12] in stamp.get_text()


@pytest.mark.slow
def test_the_changelog_is_a_page(built_site):
    site, _, v, _ = built_site
    text = _soup(site / v / "changelog.html").get_text()
    assert "Changelog" in text and v in text


@pytest.mark.slow
def test_the_appendix_lists_every_record_with_its_manifest_and_raw_logs(built_site):
    site, _, v, _ = built_site
    page = _soup(site / v / "runs.html")
    n = 0
    for exp in sorted(p for p in (ROOT / "data" / "runs").iterdir() if p.is_dir()):
        for rec in R.load_runs(exp.name):
            n += 1
            sec = page.find(id=book.run_anchor(exp.name, rec.run_id))
            assert sec is not None, f"{exp.name}/{rec.run_id} missing from the appendix"
            text = sec.get_text(" ")
            m = rec.manifest
            assert rec.gpu_name() in text and str(m["gpu"]["driver"]) in text and m["started_utc"] in text
            assert f"torch {m['packages']['torch']}" in text
            links = [a["href"] for a in sec.select("a.download, a[href*='_downloads']")]
            logs = [f for f in m["files"] if f.startswith("logs/")]
            assert len(links) == len(logs) + 1, (exp.name, rec.run_id)  # every log, and the manifest
            for href in links:
                assert (site / v / href).is_file(), href
    assert n == len(list((ROOT / "data" / "runs").glob("*/*/manifest.json"))) > 0


@pytest.mark.slow
def test_every_figure_and_table_of_every_chapter_names_its_source(built_site):
    site, _, v, _ = built_site
    anchors = {t["id"] for t in _soup(site / v / "runs.html").select("[id]")}
    checked = 0
    for page in publish.notebook_pages(ROOT):
        soup = _soup(site / v / page)
        for cell in soup.select("div.cell"):
            if cell.select(".cell_output img, .cell_output table"):
                checked += 1
                prov = cell.select_one(".llmstudy-provenance")
                assert prov is not None, f"{page}: a figure/table without its source: {str(cell)[:300]}"
                for a in prov.select("a"):
                    assert a["href"].startswith("../runs.html#") and a["href"].split("#")[1] in anchors, a["href"]
        # the chapters' figures that rest on records name them
    ma = _soup(site / v / "notebooks" / "memory_accounting.html")
    assert "memory_accounting/h200-a" in ma.select_one("[data-runs*='h200-a']")["data-runs"]
    assert checked >= 30


@pytest.mark.slow
def test_an_unchanged_rebuild_executes_nothing_and_is_fast(built_site):
    from jupyter_cache import get_cache

    site, out, v, cold_s = built_site
    cache = get_cache(str(publish.execution_cache(out, ROOT)))
    before = sorted((r.pk, r.created) for r in cache.list_cache_records())
    t0 = time.perf_counter()
    publish.build_site(ROOT, site=site, path_output=out, quiet=True)
    took = time.perf_counter() - t0
    print(f"cold {cold_s:.1f} s, unchanged rebuild {took:.1f} s")
    assert sorted((r.pk, r.created) for r in cache.list_cache_records()) == before
    assert len(before) == len(publish.chapters(ROOT))
    assert took < 60  # measured 3–4 s on the 2-core machine (README); the margin is for a loaded CI machine


# --- the GPU-runner workflow --------------------------------------------------------------------------------------
def test_gpu_rerun_workflow_runs_the_recipes_with_papermill_and_proposes_the_records():
    path = ROOT / ".github/workflows/gpu-rerun.yml"
    wf = yaml.safe_load(path.read_text())
    jobs = wf["jobs"]
    assert "llmstudy chapters --run-matrix" in jobs["plan"]["steps"][-1]["run"]
    run = jobs["run"]
    assert run["runs-on"] == "${{ matrix.runs_on }}" and "fromJSON(needs.plan.outputs.matrix)" in run["strategy"]["matrix"]
    text = "\n".join(s.get("run", "") for s in run["steps"])
    assert 'papermill "$NOTEBOOK"' in text and "-p mode run" in text and "-f params.json" in text
    upload = next(s for s in run["steps"] if s.get("uses", "").startswith("actions/upload-artifact"))
    assert "data/runs/*/${{ env.RUN_ID }}/" in upload["with"]["path"] and upload["if"] == "always()"
    propose = jobs["propose"]
    pr = next(s for s in propose["steps"] if s.get("uses", "").startswith("peter-evans/create-pull-request"))
    assert pr["with"]["add-paths"] == "data/runs"
    assert "tests/publishing/test_claims.py" in "\n".join(s.get("run", "") for s in propose["steps"])
    lint = subprocess.run([str(Path(sys.executable).with_name("actionlint")), "-config-file", str(ROOT / ".github/actionlint.yaml"), str(path)],
                          capture_output=True, text=True, timeout=120)
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_the_run_matrix_comes_from_the_toc_and_each_recipe_is_valid():
    include, skipped = publish.run_recipes(ROOT)
    labels = set(yaml.safe_load((ROOT / ".github/actionlint.yaml").read_text())["self-hosted-runner"]["labels"])
    assert {i["chapter"] for i in include} | {s["chapter"] for s in skipped} == {nb.stem for nb in publish.chapters(ROOT)}
    assert {i["chapter"] for i in include} >= {"memory_accounting", "batch_size_sweep", "length_sweep", "context_limits", "lora_vs_qlora"}
    for i in include:
        declared = pm.inspect_notebook(str(ROOT / i["notebook"]))
        assert (ROOT / i["env"]).is_file(), i
        assert {"mode", "run_id"} <= set(declared) and set(json.loads(i["parameters"])) <= set(declared), i
        assert "self-hosted" in i["runs_on"] and set(i["runs_on"]) & labels, i
    out = subprocess.run([sys.executable, "-m", "llmstudy.cli", "chapters", "--run-matrix", "--only", "batch_size_sweep"],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0 and [i["chapter"] for i in json.loads(out.stdout)["include"]] == ["batch_size_sweep"]
