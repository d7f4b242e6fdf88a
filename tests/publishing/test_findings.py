"""The landing page's findings: every number computed from the records (no digit typed in a template), each finding
linked to its chapter and to the records it rests on, and the numbers equal to what the chapters glue."""

import re

import pytest
from bs4 import BeautifulSoup
from conftest import ROOT

from llmstudy.core import book
from llmstudy.core import records as R
from llmstudy.publishing import claims as C
from llmstudy.publishing import findings as F
from llmstudy.publishing import site as publish
from llmstudy.publishing import sphinxext as X


@pytest.fixture(scope="module")
def summary():
    return F.summary()


def test_six_to_ten_findings_each_with_its_chapter_and_its_sources(summary):
    found = summary.findings
    assert 6 <= len(found) <= 10 and len({f.id for f in found}) == len(found)
    chapters = {nb.stem for nb in publish.chapters(ROOT)}
    assert {f.chapter for f in found} <= chapters and "trtllm_serve" in {f.chapter for f in found}
    for f in found:
        assert not re.search(r"\d", F.SLOT.sub("", f.template)), f"{f.id}: a number typed in the template"
        assert F.SLOT.findall(f.template) and set(F.SLOT.findall(f.template)) == set(f.values), f.id
        assert all(v.strip() and v not in ("n/a", "nan", "None") for v in f.values.values()), (f.id, f.values)
        assert f.runs or f.published, f"{f.id}: names no record and no publication"
        for r in f.runs:
            exp, run_id = r.split("/")
            assert R.load_record(ROOT / "data" / "runs" / exp / run_id).run_id == run_id
        if f.claim:
            assert f.status == C.get(f.claim).evaluate().status == C.HOLDS, f.id


def test_the_numbers_are_the_chapters_own(summary):
    by = {f.id: f for f in summary.findings}
    from llmstudy.chapters import memory_accounting as ch

    runs = R.results(ch.EXPERIMENT, model="llama-2-7b")
    _, ok = ch.measured(runs)
    h100 = ok[ok.gpu.str.contains("H100") & (ok.seq_len == 100)]
    lora, qlora = (h100[h100.method == m].peak_allocated_GiB.iloc[0] for m in ("lora", "qlora"))
    mem = by["memory"].values
    assert (mem["lora_peak"], mem["qlora_peak"], mem["ratio"]) == (f"{lora:.2f}", f"{qlora:.2f}", f"{qlora / lora:.2f}×")
    assert mem["max_err"] == f"{ok.error_pct.abs().max():.1f}" and mem["n"] == str(len(ok))
    batch = C.get("cap_16_beats_cap_4").evaluate().evidence  # "1,869 against 607 output tokens/s (3.1×)"
    assert batch.startswith(f"{by['batch_size'].values['t16']} against {by['batch_size'].values['t4']} ")
    spread = C.get("max_model_len_does_not_change_speed").evaluate().evidence
    assert f"varies by {by['lengths'].values['spread']} across" in spread
    err = C.get("planner_within_1pct_of_vllm").evaluate().evidence
    assert f"{float(by['context'].values['err']):+.2f}%" in err
    eng = by["engines"].values
    tie = float(eng["sgl"].replace(",", "")) / float(eng["vllm"].replace(",", ""))
    assert ("tie" in eng["verdict"]) == (max(tie, 1 / tie) <= 1 + F.TIE_PCT / 100)
    assert by["lengths"].values["spread"].endswith("%") and by["features"].values["pc_shared"].startswith("+")
    from llmstudy.chapters.triton_serving import statements as TS

    ts, tri = TS.statements(model="llama-2-7b"), by["triton"]
    assert {k: tri.values[k] for k in ("tt", "vt", "r", "ae", "at", "dt", "dn")} == {
        "tt": ts["triton_tput_cmax"], "vt": ts["vllm_tput_cmax"], "r": ts["ratio_cmax"], "ae": ts["adapter_equal"],
        "at": ts["adapter_total"], "dt": ts["div_ties"], "dn": ts["div_n"]}
    assert f"triton_serving/{ts['lora_run']}" in tri.runs


def test_the_findings_box_marks_every_value_and_links_chapters_and_records(summary):
    soup = BeautifulSoup(X.findings_html(summary.findings), "html.parser")
    cards = soup.select(".llmstudy-finding")
    assert len(cards) == len(summary.findings)
    for card, f in zip(cards, summary.findings):
        assert card.select_one(".llmstudy-finding-q a")["href"] == f"notebooks/{f.chapter}.html"
        answer = card.select_one(".llmstudy-finding-a")
        assert [v.get_text() for v in answer.select(".llmstudy-value")] == [f.values[k] for k in F.SLOT.findall(f.template)]
        for v in answer.select(".llmstudy-value"):
            v.decompose()
        assert not re.search(r"\d", answer.get_text()), f.id
        hrefs = [a["href"] for a in card.select(".llmstudy-finding-src a[href^='runs.html']")]
        assert hrefs == [f"runs.html#{book.run_anchor(*r.split('/'))}" for r in f.runs]


def test_the_summary_figure_is_drawn_from_the_records(summary):
    assert [m["label"] for m in summary.memory][:2] == ["QLoRA", "LoRA"]
    assert summary.memory == sorted(summary.memory, key=lambda m: m["value"])
    assert {m["run"] for m in summary.memory} <= {f"memory_accounting/{r}" for r in summary.memory_runs} | set(summary.memory_runs)
    assert [s["published"] for s in summary.serving] == [False, False, True, True]
    html = X.summary_figure_html(summary)
    assert html.count("<img") == 1 and "data:image/svg+xml;base64," in html and 'class="llmstudy-provenance"' in html
    svg = F.summary_svg(summary)
    for label in ("QLoRA", "one H100: 80 GB", "(published)"):
        assert label in svg


def test_run_record_paths_are_tidied_for_the_reader():
    assert X.tidy_paths("/work/x/src/llmstudy/cli.py capacity --root /root/runs") == "llmstudy capacity --root …/runs"
    assert X.tidy_paths("model /tmp/llmstudy-model-cache/models/g") == "model …/llmstudy-model-cache/models/g"
    assert X.tidy_paths("data/runs/x/manifest.json and ./rel/tmp/a") == "data/runs/x/manifest.json and ./rel/tmp/a"
