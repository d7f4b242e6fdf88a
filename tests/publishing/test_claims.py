"""The book's headline claims, checked against data/runs: a rerun that contradicts one fails here.

Each measured claim is also evaluated on a mutated copy of its records (a number moved across the claim's
threshold) and must then read "contradicted": the check is real, not a sentence that always passes. A claim whose
records do not exist yet is skipped with that reason, never passed.
"""

import json
import re
import shutil

import pandas as pd
import pytest
from conftest import ROOT

from llmstudy.chapters import context_limits as cap
from llmstudy.core import records as R
from llmstudy.publishing import claims as C
from llmstudy.publishing import site as P

RUNS = ROOT / "data" / "runs"


@pytest.mark.parametrize("claim", C.CLAIMS, ids=lambda c: c.id)
def test_claim_against_the_records(claim):
    v = claim.evaluate()
    if v.status == C.NOT_MEASURED:
        pytest.skip(f"not yet measured: {v.evidence}")
    assert v.status == C.HOLDS, f"{claim.statement}: {v.evidence}"
    if claim.experiment:
        assert v.runs, "a measured claim names the records it rests on"
        for r in v.runs:
            assert R.load_record(RUNS / r).run_id == r.split("/")[1]


def test_without_records_every_run_claim_reads_not_yet_measured(tmp_path):
    for c in C.CLAIMS:
        v = c.evaluate(tmp_path)
        assert v.status == (C.NOT_MEASURED if c.experiment else C.HOLDS), (c.id, v)
        if c.experiment:
            assert c.sentence(tmp_path) == f"{c.statement} — not yet measured ({v.evidence})."


def test_not_yet_measured_means_the_records_are_absent():
    """'not yet measured' is said only of experiments with no run record at all (a bug cannot hide a claim)."""
    for c in C.CLAIMS:
        if c.evaluate().status == C.NOT_MEASURED:
            assert c.experiment and not R.load_runs(c.experiment), f"{c.id}: records exist in data/runs/{c.experiment} but the claim says not measured"


def test_every_claim_is_rendered_in_its_chapter_from_the_data():
    chapters = {nb.stem: nb for nb in P.chapters()}
    for c in C.CLAIMS:
        assert c.chapter in chapters, f"{c.id}: chapter {c.chapter} is not in _toc.yml"
        nb = json.loads(chapters[c.chapter].read_text())
        md = "\n".join("".join(x["source"]) for x in nb["cells"] if x["cell_type"] == "markdown")
        code = "\n".join("".join(x["source"]) for x in nb["cells"] if x["cell_type"] == "code")
        assert f"{{glue:}}`claim_{c.id}`" in md, f"{c.id}: the chapter's text does not render the claim"
        # glued by the library: the notebook calls glue_claims, or the chapter's statements include the claims
        package = ROOT / "src" / "llmstudy" / "chapters" / c.chapter
        lib = "\n".join(p.read_text() for p in package.glob("*.py")) if package.is_dir() else ""
        assert f'glue_claims("{c.chapter}")' in code or re.search(r"\b(claim_statements|claims\.statements|C\.statements)\(", lib), c.id
    assert len({c.id for c in C.CLAIMS}) == len(C.CLAIMS)


def test_a_sentence_says_what_the_verdict_is(tmp_path):
    c = C.get("qlora_under_half_of_lora")
    assert c.sentence().startswith(c.statement + ": QLoRA/LoRA peak allocated memory is 0.30")
    assert c.sentence(tmp_path).endswith("— not yet measured (no run record in data/runs/memory_accounting/ has a LoRA and a QLoRA run with gradient checkpointing).")
    with pytest.raises(KeyError, match="unknown claim"):
        C.get("nope")


# --- mutated copies of the records must contradict each measured claim ---------------------------------------------
def _copy(tmp_path, experiment):
    shutil.copytree(RUNS / experiment, tmp_path / experiment)
    return tmp_path


def _edit(root, experiment, run_id, fn, table="results"):
    f = root / experiment / run_id / f"{table}.csv"
    df = pd.read_csv(f)
    fn(df)
    df.to_csv(f, index=False)


def _memory_qlora_heavier(root):
    def f(df):
        lora = df.loc[df.method == "lora", "peak_allocated_GiB"].iloc[0]
        df.loc[df.method == "qlora", "peak_allocated_GiB"] = 0.6 * lora
    _edit(root, "memory_accounting", "h100-a", f)


def _memory_off_by_20pct(root):
    def f(df):
        df.loc[df.method == "full", "peak_allocated_GiB"] *= 1.2
    _edit(root, "memory_accounting", "h100-a", f)


def _fp32_off_by_5pct(root):
    def f(df):
        df.loc[(df.method == "full") & (df.weight_dtype == "fp32"), "peak_allocated_GiB"] *= 1.05
    _edit(root, "memory_accounting", "h200-a", f)


def _throughput_grows_past_cap(root):
    def f(df):
        df.loc[(df.max_num_seqs == 16) & (df.concurrency == 64), "output_token_throughput"] *= 1.2
    _edit(root, "batch_size_sweep", "h100-b", f)


def _itl_inflated(root):
    def f(df):
        df.loc[df.max_num_seqs == 4, "inter_token_latency_avg"] *= 1.3
    _edit(root, "batch_size_sweep", "h100-b", f)


def _cap16_slow(root):
    def f(df):
        slow = df.loc[(df.max_num_seqs == 4) & (df.concurrency == 16), "output_token_throughput"].iloc[0]
        df.loc[(df.max_num_seqs == 16) & (df.concurrency == 16), "output_token_throughput"] = 0.5 * slow
    _edit(root, "batch_size_sweep", "h100-b", f)


def _long_len_slower(root):
    def f(df):
        df.loc[(df.sweep == "max_model_len") & (df.max_model_len == 32768) & (df.concurrency == 64), "output_token_throughput"] *= 0.9
    _edit(root, "length_sweep", "h100-c", f)


def _fast_recipe_slow(root):
    def f(df):
        fast = df.recipe == "fast"
        for col in ("median_step_s", "epoch_s_measured", "epoch_s_projected"):
            df.loc[fast, col] = df.loc[fast, col] * 100
    _edit(root, "lora_vs_qlora", "h100-7b", f)


def _kv_tokens_off_by_2pct(root):
    def f(df):
        df.loc[df.config == "scout-bf16-h200", "kv_cache_tokens"] = (df.loc[df.config == "scout-bf16-h200", "kv_cache_tokens"] * 1.02).round()
    _edit(root, "context_limits", "h200x4-a", f)


def _v083_kv_tokens_off_by_1pct(root):
    def f(df):
        sel = df.config == "v083-scout12-mm-fp8-eager"
        df.loc[sel, "kv_cache_tokens"] = (df.loc[sel, "kv_cache_tokens"] * 1.01).round()
    _edit(root, "context_limits", "h200x1-v083-a", f)


def _maverick_bf16_8x_starts(root):
    def f(df):
        df.loc[df.config == "tp8-maverick-bf16-h100", ["outcome", "kv_cache_tokens"]] = ["ok", 1_000_000]
    _edit(root, "context_limits", "h200x8-f", f)


MUTATIONS = {
    "qlora_under_half_of_lora": ("memory_accounting", _memory_qlora_heavier),
    "memory_model_within_10pct": ("memory_accounting", _memory_off_by_20pct),
    "fp32_master_weights_oom_h100_fit_h200": ("memory_accounting", _fp32_off_by_5pct),
    "throughput_stops_growing_past_max_num_seqs": ("batch_size_sweep", _throughput_grows_past_cap),
    "plateau_is_batch_over_itl": ("batch_size_sweep", _itl_inflated),
    "cap_16_beats_cap_4": ("batch_size_sweep", _cap16_slow),
    "fast_recipe_is_faster": ("lora_vs_qlora", _fast_recipe_slow),
    "max_model_len_does_not_change_speed": ("length_sweep", _long_len_slower),
    "planner_within_1pct_of_vllm": ("context_limits", _kv_tokens_off_by_2pct),
    "planner_083_within_half_pct": ("context_limits", _v083_kv_tokens_off_by_1pct),
    "published_8gpu_cells_reproduce": ("context_limits", _maverick_bf16_8x_starts),
}


def test_every_measured_run_claim_has_a_contradicting_mutation():
    measured = {c.id for c in C.CLAIMS if c.experiment and c.evaluate().status != C.NOT_MEASURED}
    assert measured <= set(MUTATIONS), f"add a mutation for {sorted(measured - set(MUTATIONS))}"


@pytest.mark.parametrize("claim_id", sorted(MUTATIONS))
def test_a_contradicting_rerun_fails_the_claim(tmp_path, claim_id):
    experiment, mutate = MUTATIONS[claim_id]
    root = _copy(tmp_path, experiment)
    c = C.get(claim_id)
    assert c.evaluate(root).status == C.HOLDS  # the copy alone changes nothing
    mutate(root)
    v = c.evaluate(root)
    assert v.status == C.CONTRADICTED, v.evidence
    assert "CONTRADICTED by the records" in c.sentence(root)


def test_the_planner_claim_is_checked_on_a_record(tmp_path):
    """On a record written by RunWriter the check reads the logged figure for real, close and far from the plan."""
    cfg = cap.GPU_CONFIGS["scout-fp8-h200"]
    predicted = cap.plan(cfg.deployment(4)).kv_cache_tokens
    c = C.get("planner_within_1pct_of_vllm")
    for run_id, logged, status in (("close", predicted * 1.004, C.HOLDS), ("far", predicted * 1.03, C.CONTRADICTED)):
        root = tmp_path / run_id
        with R.RunWriter("context_limits", {"configs": ["a"]}, run_id=run_id, root=root) as w:
            w.write_table(pd.DataFrame([{"config": cfg.name, "num_gpus": 4, "outcome": "ok", "kv_cache_tokens": logged}]))
        v = c.evaluate(root)
        assert v.status == status and v.runs == (f"context_limits/{run_id}",), v.evidence
        assert re.search(r"-0\.40%|-2\.9\d%", v.evidence)


def test_the_claims_command_lists_every_claim(capsys):
    from llmstudy.cli import main

    assert main(["claims"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    for c in C.CLAIMS:
        line = next(ln for ln in lines if f" {c.id} " in f" {ln} ")
        assert c.evaluate().status in line, line
