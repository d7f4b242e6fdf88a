"""Forking the study for a new model: ``llmstudy fork`` renders an HTML book whose pages show only the forked
model's numbers, or numbers that name the model they belong to.

The forks run in an overlay of the repository (every top-level entry linked, ``data/models`` a real folder of
links), so the new model folders never land in the checkout. End to end with two configs of different families:
a dense GQA Mistral and a mixture-of-experts Mixtral, both small enough for the CPU.
"""

import json
import os
import re
import subprocess
import sys

import pytest
from conftest import ROOT

from llmstudy.core import models as M
from llmstudy.publishing import claims as C
from llmstudy.publishing import fork as F
from llmstudy.publishing import site as publish

FIXTURES = ROOT / "tests" / "fixtures"
FIXTURE = FIXTURES / "mini-mistral" / "config.json"
CONFIGS = {"mini-mistral": FIXTURE, "mini-mixtral": FIXTURES / "mini-mixtral" / "config.json"}


def _overlay(tmp_path):
    root = tmp_path / "repo"
    root.mkdir()
    for p in ROOT.iterdir():
        if p.name not in ("data", "_build", "site"):
            (root / p.name).symlink_to(p)
    (root / "data").mkdir()
    for p in (ROOT / "data").iterdir():
        if p.name != "models":
            (root / "data" / p.name).symlink_to(p)
    (root / "data" / "models").mkdir()
    for p in (ROOT / "data" / "models").iterdir():
        (root / "data" / "models" / p.name).symlink_to(p)
    return root


def _cli(root, *args, timeout=1500):
    env = dict(os.environ, LLMSTUDY_ROOT=str(root))
    return subprocess.run([sys.executable, "-m", "llmstudy.cli", *args], capture_output=True, text=True, env=env, cwd=root, timeout=timeout)


def test_bad_configs_and_names_are_refused_before_anything_is_written(tmp_path, monkeypatch):
    root = _overlay(tmp_path)
    monkeypatch.setenv("LLMSTUDY_ROOT", str(root))
    (tmp_path / "bad.json").write_text('{"hidden_size": 8}')
    with pytest.raises(F.ForkError, match="needs a model_type"):
        F.add_model(tmp_path / "bad.json", "bad")
    (tmp_path / "odd.json").write_text('{"model_type": "no-such-architecture"}')
    with pytest.raises(F.ForkError, match=r"odd\.json: .*(no-such-architecture|hidden_size)"):
        F.add_model(tmp_path / "odd.json", "odd")
    (tmp_path / "negative.json").write_text(FIXTURE.read_text().replace('"hidden_size": 128', '"hidden_size": -128'))
    with pytest.raises(F.ForkError, match="hidden_size"):
        F.add_model(tmp_path / "negative.json", "negative")
    with pytest.raises(F.ForkError, match="lower-case"):
        F.add_model(FIXTURE, "Bad Name")
    with pytest.raises(F.ForkError, match="exists already"):
        F.add_model(FIXTURE, "llama-2-7b")
    assert not any((root / "data" / "models" / n).exists() for n in ("bad", "odd", "negative"))
    proc = _cli(root, "fork", str(tmp_path / "bad.json"), "--name", "bad")
    assert proc.returncode == 2 and "llmstudy: error:" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_parameters_that_name_a_model_point_at_the_new_one():
    nbs = {nb.stem: nb for nb in publish.chapters(ROOT)}
    assert F.chapter_parameters(nbs["memory_accounting"], "x") == {"model": "x", "compare_models": ["x"], "mode": "analyze"}
    assert F.chapter_parameters(nbs["lora_vs_qlora"], "x") == {"model": "x", "speed_model": "x", "mode": "analyze"}
    for stem, nb in nbs.items():  # every chapter has a model parameter: the fork renders each one for the new model
        params = F.chapter_parameters(nb, "x")
        assert params is not None and params.get("mode", "analyze") == "analyze", stem


# --- the leak check: it must fail on a page that shows another model's numbers unnamed ------------------------------
MARKERS = {"memory_accounting/h100-a": {"llama-2-7b"}, "h100-a": {"llama-2-7b"}, "6,738,415,616": {"llama-2-7b"},
           "20,914,757,184": {"gpt-oss-20b"}}


def _page(body: str) -> str:
    return f"<html><body><nav>memory_accounting/h100-a</nav><main><section><h1>A chapter</h1>{body}</section></main><footer>h100-a</footer></body></html>"


def test_the_leak_check_flags_another_models_numbers_shown_unnamed():
    table_cell = ('<div class="cell"><div class="cell_input"><pre>model = "llama-2-7b"</pre></div><div class="cell_output">'
                  '<table><tr><td>6,738,415,616</td></tr></table></div><p class="llmstudy-provenance">Source: run record '
                  '<code>memory_accounting/h100-a</code>.</p></div>')
    leaky = _page(table_cell + "<p>The model has 20,914,757,184 parameters (h100-a).</p>")
    found = F.leaks(leaky, MARKERS, "mini-mistral")
    assert len(found) == 4, found  # the table's count, its source line, the sentence's count and run id; not nav/footer/code
    assert any("6,738,415,616 (llama-2-7b)" in f for f in found) and any("20,914,757,184 (gpt-oss-20b)" in f for f in found)
    assert any(f.startswith("memory_accounting/h100-a (llama-2-7b)") for f in found) and any(f.startswith("h100-a (llama-2-7b)") for f in found)

    named = _page(table_cell.replace("</code>.", "</code> (model <code>llama-2-7b</code>).")
                  + "<p>gpt-oss-20b has 20,914,757,184 parameters; Llama 2 7B was measured in h100-a.</p>")
    assert F.leaks(named, MARKERS, "mini-mistral") == []
    # a family name counts as naming the model, unless it also names the forked one
    assert F.leaks(_page("<p>Llama-2 has 6,738,415,616 parameters.</p>"), MARKERS, "mini-mistral") == []
    assert len(F.leaks(_page("<p>Llama-2 has 6,738,415,616 parameters.</p>"), MARKERS, "llama-2-13b")) == 1
    assert F.leaks(_page("<p>16,738,415,6160 and 6,738,415,616.5 are other numbers.</p>"), MARKERS, "x") == []
    assert len(F.leaks(_page("<p>See data/runs/memory_accounting/h100-a/logs.</p>"), MARKERS, "x")) == 1
    assert F.leaks(_page("<p>See data/runs/other/h100-a/logs.</p>"), MARKERS, "x") == []  # another experiment's h100-a


def test_markers_are_other_models_run_ids_and_exact_counts():
    markers = F.foreign_markers("mini-mistral", "memory_accounting")
    assert markers["memory_accounting/h100-a"] == {"llama-2-7b"} and markers["h100-a"] == {"llama-2-7b"}
    assert markers[f"{int(M.component_counts('llama-2-7b')['total']):,}"] >= {"llama-2-7b"}
    assert markers["context_limits/h200x4-a"] == {"llama-4-scout-17b-16e-instruct"} and "h200x4-a" not in markers
    same = F.foreign_markers("llama-2-7b-awq", "memory_accounting")  # the same architecture as llama-2-7b
    assert f"{int(M.component_counts('llama-2-7b')['total']):,}" not in same and same["memory_accounting/h100-a"] == {"llama-2-7b"}
    own = F.foreign_markers("llama-2-7b", "lora_vs_qlora", counts=False)
    assert "memory_accounting/h100-a" not in own and "h100-7b" not in own and own["h100-small-a"] == {"gemma-3-270m"}


def test_a_claim_on_a_forked_page_names_the_models_it_rests_on(monkeypatch):
    claim = C.get("qlora_under_half_of_lora")
    plain = claim.sentence()
    assert not plain.startswith("The study's claim")
    forked = claim.sentence(model="mini-mistral")
    assert forked == f"The study's claim, about the study's records of llama-2-7b (not measured for mini-mistral): {plain}"
    assert claim.sentence(model="llama-2-7b") == plain  # the claim's own model: unchanged
    glued = {}
    monkeypatch.setattr("llmstudy.core.book.glue_text", lambda k, v: glued.__setitem__(k, v))
    monkeypatch.setenv(C.FORK_ENV, "mini-mistral")
    C.glue_claims("memory_accounting")
    assert glued["claim_qlora_under_half_of_lora"] == forked
    assert all(v.startswith("The study's claim, about ") for v in glued.values())


def test_the_fork_toc_keeps_the_books_order_and_promotes_orphan_sections():
    toc = F.fork_toc({"notebooks/memory_accounting", "notebooks/trtllm_serve", "notebooks/engine_comparison", "notebooks/extra"}, ROOT)
    assert toc == {"format": "jb-book", "root": "index", "chapters": [
        {"file": "notebooks/memory_accounting"}, {"file": "notebooks/trtllm_serve"}, {"file": "notebooks/engine_comparison"},
        {"file": "notebooks/extra"}, {"file": "runs"}]}
    both = F.fork_toc({"notebooks/trtllm_triton_deploy", "notebooks/trtllm_serve"}, ROOT)["chapters"]
    assert both == [{"file": "notebooks/trtllm_triton_deploy", "sections": [{"file": "notebooks/trtllm_serve"}]}, {"file": "runs"}]
    cfg = F.fork_config("x", ROOT)
    assert cfg["execute"] == {"execute_notebooks": "off"} and cfg["title"].endswith("forked for x")
    assert "llmstudy.publishing.sphinxext" in cfg["sphinx"]["extra_extensions"]  # stamped like the main book


def test_the_banner_goes_under_the_title_and_names_the_model(tmp_path):
    import nbformat

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_markdown_cell("(label)=\n# Title\n\ntext {glue:}`k`"),
                                         nbformat.v4.new_markdown_cell("more")])
    path = tmp_path / "a.ipynb"
    nbformat.write(nb, str(path))
    F.add_banner(path, "llama-2-7b")
    cells = nbformat.read(str(path), as_version=4).cells
    assert [c.source for c in cells[:2]] == ["x = 1", "(label)=\n# Title"]
    assert "rendered for **" in cells[2].source and "`llama-2-7b`" in cells[2].source
    assert [c.source for c in cells[3:]] == ["text {glue:}`k`", "more"]
    F.add_banner(path, "llama-2-7b")  # a second time: still one note
    assert sum(F.BANNER_TAG in c.metadata.get("tags", []) for c in nbformat.read(str(path), as_version=4).cells) == 1
    untitled = tmp_path / "b.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("## no title")]), str(untitled))
    F.add_banner(untitled, "llama-2-7b")
    assert F.BANNER_TAG in nbformat.read(str(untitled), as_version=4).cells[0].metadata["tags"]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_fork_builds_an_html_book_that_shows_only_the_models_numbers(tmp_path, name):
    root = _overlay(tmp_path)
    out = tmp_path / "out"
    proc = _cli(root, "fork", str(CONFIGS[name]), "--name", name, "--out", str(out))
    model = root / "data" / "models" / name
    assert json.loads((model / "config.json").read_text()) == json.loads(CONFIGS[name].read_text())
    src = (model / "SOURCE.md").read_text()
    assert str(CONFIGS[name]) in src and "sha256" in src and "TODO" in src
    assert not (ROOT / "data" / "models" / name).exists()

    summary = (out / "SUMMARY.md").read_text()
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:] + summary
    html = out / "html"
    assert (html / "index.html").is_file() and (html / "runs.html").is_file()
    os.environ["LLMSTUDY_ROOT"] = str(root)  # the markers read the overlay's records and models (restored below)
    try:
        markers = {nb.stem: F.foreign_markers(name, nb.stem) for nb in publish.chapters(ROOT)}
    finally:
        os.environ["LLMSTUDY_ROOT"] = str(ROOT)
    for nb in publish.chapters(ROOT):
        assert re.search(rf"^\| {nb.stem} \| rendered \| \d+ \| `.*` \| none \|$", summary, re.M), summary
        page = html / "notebooks" / f"{nb.stem}.html"
        executed = out / "book" / "notebooks" / nb.name
        assert page.is_file() and executed.is_file()
        injected = json.loads(executed.read_text())["metadata"]["papermill"]["parameters"]
        assert all(v in (name, [name]) for k, v in injected.items() if k != "mode")
        text = page.read_text()
        assert "This page is the study rendered for" in text and f"<code class=\"docutils literal notranslate\"><span class=\"pre\">{name}</span></code>" in text
        assert F.check_page(page, name, markers[nb.stem], executed) == []  # glue resolved, model named, no other model's number unnamed
        assert '"ename"' not in executed.read_text()  # no cell failed

    memory = (html / "notebooks" / "memory_accounting.html").read_text()
    assert f"{int(M.component_counts(CONFIGS[name])['total']):,}" in memory  # computed for the new model
    assert "not measured for" in memory or f"No run record of {name}" in memory
    sweep = (html / "notebooks" / "batch_size_sweep.html").read_text()
    assert f"llmstudy sweep batch-size --model {name}" in sweep  # the command that measures it, exactly (no smart dashes)
    index = (html / "index.html").read_text()
    assert f"The study forked for {name}" in index and "memory_accounting" in index


def _notebook(path, *cells):
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell('model = "llama-2-7b"\nmode = "analyze"', metadata={"tags": ["parameters"]}), *cells]
    nbformat.write(nb, str(path))
    return path


@pytest.mark.slow
def test_a_failing_chapter_is_a_result_and_a_leaking_page_is_reported(tmp_path):
    import nbformat

    (tmp_path / "nbs").mkdir()
    md, code = nbformat.v4.new_markdown_cell, nbformat.v4.new_code_cell
    leaky = _notebook(tmp_path / "nbs" / "leaky.ipynb", md("# Leaky\n\nWe measured {glue:}`n` and {glue:}`missing`."),
                      code('from llmstudy.core.book import glue_text\nglue_text("n", "6,738,415,616 parameters (memory_accounting/h100-a)")'))
    broken = _notebook(tmp_path / "nbs" / "broken.ipynb", md("# Broken"), code('raise RuntimeError("boom")'))
    df = F.render("tiny-llama", tmp_path / "out", chapters=[leaky, broken], jobs=1)
    rows = df.set_index("chapter")
    assert rows.loc["broken", "status"].startswith("failed (failed/broken.ipynb): PapermillExecutionError") and "boom" in rows.loc["broken", "status"]
    assert rows.loc["leaky", "status"] == "rendered"
    problems = rows.loc["leaky", "problems"]
    assert "memory_accounting/h100-a (llama-2-7b) shown without naming it" in problems and "6,738,415,616 (llama-2-7b" in problems
    assert "No key 'missing' found in glue data" in problems and "1 glued values on the page, the notebook's text uses 2" in problems
    html = tmp_path / "out" / "html"
    assert (html / "notebooks" / "leaky.html").is_file() and not (html / "notebooks" / "broken.html").exists()
    summary = (tmp_path / "out" / "SUMMARY.md").read_text()
    assert "| broken | failed (failed/broken.ipynb): PapermillExecutionError" in summary and "| leaky | rendered |" in summary
    assert (tmp_path / "out" / "failed" / "broken.ipynb").is_file()
    index = (html / "index.html").read_text()  # the book's first page carries the checks' results too
    assert "shown without naming it" in index and "boom" in index and not (tmp_path / "out" / ".jb").exists()
