"""The LoRA-vs-QLoRA chapter: the dataset and its validation, the real Llama-2 tokenizer, the label mask, the FLOPs
arithmetic, run mode on a CPU (LoRA and the fast recipe on a tiny model), QLoRA's configuration, and the notebook."""

import json
import math
import statistics
import subprocess
import sys

import pandas as pd
import pytest
import torch
from conftest import ROOT

from llmstudy.chapters import lora_vs_qlora as L
from llmstudy.core import models as M
from llmstudy.core import records as R
from llmstudy.core.params import ParameterError, validate
from llmstudy.training import finetune as F
from llmstudy.training import memory as mm

FIXTURE = ROOT / "tests/fixtures/persona_mini.json"


@pytest.fixture(scope="module")
def tok():
    return L.llama2_tokenizer()


# --- Dataset validation ---------------------------------------------------------------------------------------------

def test_a_missing_dataset_file_is_named(tmp_path):
    with pytest.raises(L.DatasetError, match="dataset file not found: .*nope.json"):
        L.load_rows(tmp_path / "nope.json")


def test_malformed_json_says_where(tmp_path):
    f = tmp_path / "bad.json"
    f.write_text('[{"instruction": "a", "output": "b"},\n {"instruction": "c" "output": "d"}]', encoding="utf-8")
    with pytest.raises(L.DatasetError, match=r"not valid JSON \(Expecting ',' delimiter at line 2, column 22\)"):
        L.load_rows(f)


def test_every_bad_row_is_named_with_its_number(tmp_path):
    rows = [
        {"instruction": "ok", "output": "fine"},
        {"instruction": "no output"},
        {"instruction": "empty", "output": "   "},
        {"instruction": 5, "output": "x"},
        {"instruction": "extra", "output": "x", "note": "?"},
        "not an object",
    ]
    f = tmp_path / "rows.json"
    f.write_text(json.dumps(rows), encoding="utf-8")
    with pytest.raises(L.DatasetError) as e:
        L.load_rows(f)
    msg = str(e.value)
    assert "5 problem(s)" in msg
    for part in ("row 2: missing 'output'", "row 3: empty output", "row 4: 'instruction' must be a string, got int", "row 5: unexpected key(s) ['note']", "row 6: expected an object, got str"):
        assert part in msg
    assert "row 1" not in msg


def test_prompts_longer_than_max_length_are_counted_and_named_not_dropped(tok):
    rows = L.load_rows(FIXTURE) + [{"instruction": "長い質問です。" * 40, "output": "はい。"}]
    lengths = L.token_lengths([{"row": i, **r} for i, r in enumerate(rows, 1)], "llama2-inst", tok)
    assert len(lengths) == 13
    with pytest.raises(L.DatasetError, match=r"1 of 13 prompts are at least max_length=64 tokens long \(rows 13\)"):
        L.check_lengths(lengths, 64)
    ok = L.check_lengths(lengths, 1024)
    assert ok["rows"] == 13 and ok["prompt_too_long"] == 0 and ok["truncated"] == 0
    # a budget between the longest fixture prompt and the long one: completions cut short are counted
    short = lengths.iloc[:12]
    cut = int(short.prompt_tokens.max()) + 5
    assert L.check_lengths(short, cut)["truncated"] == int((short.total_tokens > cut).sum()) == 12


def test_token_lengths_are_the_ones_trl_trains_on(tok):
    rows = [{"row": i, **r} for i, r in enumerate(L.load_rows(FIXTURE)[:3], 1)]
    mine = L.token_lengths(rows, "llama2-inst", tok)
    for r, (_, m) in zip(rows, mine.iterrows()):
        mask = L.label_mask_example(tok, r)
        assert len(mask) == m.total_tokens and int(mask.in_loss.sum()) == m.completion_tokens


def test_concatenation_is_reproducible(tmp_path):
    rows = L.load_rows(FIXTURE)
    a, b = tmp_path / "part-a.json", tmp_path / "part-b.json"
    a.write_text(json.dumps(rows[:5], ensure_ascii=False), encoding="utf-8")
    b.write_text(json.dumps(rows[5:], ensure_ascii=False), encoding="utf-8")
    out1 = L.concat_parts([a, b], tmp_path / "one.json")
    out2 = L.concat_parts([a, b], tmp_path / "two.json")
    assert out1.read_bytes() == out2.read_bytes()
    assert L.load_rows(out1) == rows


def test_the_shipped_dataset_is_the_two_parts_and_holds_out_the_eight_prompts(tmp_path):
    parts = [L.dataset_dir() / "parts" / n for n in ("part-a.json", "part-b.json")]
    rebuilt = L.concat_parts(parts, tmp_path / "persona_ja.json")
    assert rebuilt.read_bytes() == L.dataset_path().read_bytes(), "persona_ja.json is stale: run `llmstudy lora-vs-qlora dataset`"
    rows = L.load_rows(L.dataset_path())
    st = L.dataset_stats(rows)
    assert st["rows"] >= 600 and st["unique_instructions"] == st["rows"]
    assert L.heldout_overlap(rows) == []
    assert st["commas_per_sentence"] > 1.5  # the halting voice, not plain assistant prose
    train, ev = L.split_rows(rows)
    assert (len(train), len(ev)) == (512, 128) and not {r["row"] for r in train} & {r["row"] for r in ev}


def test_the_split_is_the_articles_train_test_split_with_seed_42():
    from datasets import Dataset

    rows = L.load_rows(FIXTURE)
    train, ev = L.split_rows(rows)
    ref = Dataset.from_list(rows).train_test_split(test_size=0.2, seed=42)
    assert [r["instruction"] for r in ev] == ref["test"]["instruction"] and len(train) == 9


def test_heldout_overlap_ignores_punctuation():
    assert L.heldout_overlap([{"instruction": "エッセイを書いて!", "output": "x"}, {"instruction": "別の質問", "output": "y"}]) == [1]


# --- The real Llama-2 tokenizer -------------------------------------------------------------------------------------

def test_llama2_tokenizer_matches_the_npm_packages_own_encoder(tok):
    rows = L.load_rows(FIXTURE)
    texts = ["Hello world", " leading space", *(L.llama2_prompt(r["instruction"]) + " " + r["output"] for r in rows), "改行\n二行目 😀"]
    assert L.js_reference_ids(texts) == [tok(t).input_ids for t in texts]
    assert tok("Hello world").input_ids == [1, 15043, 3186] and len(tok) == 32000


# --- The label mask on a real tokenization ----------------------------------------------------------------------------

def test_loss_falls_only_on_completion_tokens_and_eos(tok):
    row = L.load_rows(FIXTURE)[0]
    mask = L.label_mask_example(tok, row)
    prompt_ids = tok(L.llama2_prompt(row["instruction"])).input_ids
    full_ids = tok(L.llama2_prompt(row["instruction"]) + " " + row["output"] + "</s>").input_ids
    assert mask.token_id.tolist() == full_ids
    assert mask.in_loss.tolist() == [False] * len(prompt_ids) + [True] * (len(full_ids) - len(prompt_ids))
    learned = mask[mask.in_loss]
    assert learned.token_id.iloc[-1] == tok.eos_token_id == 2
    assert tok.decode(learned.token_id.tolist()) == row["output"] + "</s>"
    assert mask.token_id.tolist().count(1) == 1  # one BOS: the article's literal "<s>" would make two


def test_padding_free_batches_mask_the_same_tokens(tok):
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    rows = L.load_rows(FIXTURE)[:3]
    singles = [L.label_mask_example(tok, r) for r in rows]
    feats = [{"input_ids": m.token_id.tolist(), "labels": [t if k else -100 for t, k in zip(m.token_id, m.in_loss)]} for m in singles]
    flat = DataCollatorForLanguageModeling(pad_token_id=2, padding_free=True)(feats)
    assert flat["input_ids"].shape == (1, sum(len(m) for m in singles))
    assert flat["labels"][0].tolist() == sum((f["labels"] for f in feats), [])
    assert (flat["position_ids"][0] == 0).sum() == 3  # three rows, restarting positions


# --- FLOPs, peaks and the memory model ------------------------------------------------------------------------------

def test_matmul_weights_exclude_embeddings_and_count_a_tied_head_once():
    assert L.matmul_params("llama-2-7b") == 6_738_415_616 - 131_072_000 - (32 * 2 + 1) * 4096  # minus input embeddings, norms
    assert L.matmul_params("gemma-3-270m") == 100_270_080 + 167_772_160  # linear layers + the tied 262,144 x 640 head


def test_lora_training_flops_hand_computed():
    # tiny-llama-32k: 2 layers x (4 x 64x64 + 3 x 64x176) + head 32000x64 = 2,148,352; LoRA r=4: 9,856
    n, lora = 2 * (4 * 64 * 64 + 3 * 64 * 176) + 32000 * 64, 9856
    assert L.matmul_params("tiny-llama-32k") == n == 2_148_352
    assert L.train_flops("tiny-llama-32k", 100, lora, grad_ckpt=True) == 100 * (6 * (n + lora) + 2 * lora)
    assert L.train_flops("tiny-llama-32k", 100, lora, grad_ckpt=False) == 100 * (4 * (n + lora) + 2 * lora)


def test_dense_bf16_peaks_by_gpu_name():
    assert L.peak_flops("NVIDIA H100 80GB HBM3") == ("H100 SXM", 989.4e12)
    assert L.peak_flops("NVIDIA H200") == ("H200", 989.4e12)
    assert L.peak_flops("NVIDIA H100 PCIe") == ("H100 PCIe", 756.5e12)
    assert L.peak_flops("NVIDIA A100-SXM4-80GB") is None


def test_kbit_preparation_adds_two_bytes_per_non_quantized_parameter():
    plain = mm.summarize(mm.Setup(method="qlora"))
    prep = mm.summarize(mm.Setup(method="qlora", fp32_upcast=True))
    assert prep["weights_bytes"] - plain["weights_bytes"] == 2 * (2 * 131_072_000 + 65 * 4096)
    with pytest.raises(ValueError, match="fp32_upcast .* applies to qlora only"):
        mm.Setup(method="lora", fp32_upcast=True)
    assert L.variant_setup("llama-2-7b", "qlora").fp32_upcast and not L.variant_setup("llama-2-7b", "lora").fp32_upcast


# --- QLoRA: configuration always, training only with CUDA -----------------------------------------------------------

def test_qlora_configuration_is_the_articles():
    q = F.quantization_config()
    assert q.load_in_4bit and q.bnb_4bit_quant_type == "nf4" and q.bnb_4bit_use_double_quant and q.bnb_4bit_compute_dtype == torch.bfloat16
    assert (F.RECIPE["lora_r"], F.RECIPE["lora_alpha"], F.RECIPE["lora_dropout"], F.RECIPE["optimizer"]) == (4, 8, 0.1, "paged_adamw_8bit")
    assert L.RECIPES["article"] == {"micro_batch": 1, "grad_accum": 32, "padding_free": False}
    assert L.RECIPES["fast"]["micro_batch"] * L.RECIPES["fast"]["grad_accum"] == 32
    reason = mm.refusal(L.variant_setup("tiny-llama-32k", "qlora"), cuda=False)
    assert "CUDA" in reason


@pytest.mark.skipif(not torch.cuda.is_available(), reason="QLoRA needs a CUDA GPU (bitsandbytes 4-bit kernels); the GPU runs are scripts/device_lora_vs_qlora.sh")
def test_qlora_trains_on_a_gpu(runs_root):
    path = L.run_experiment(model="tiny-llama-32k", variants=["qlora", "qlora-fast"], steps=2, dataset=str(FIXTURE), run_id="gpu-qlora")
    df = R.load_record(path).table()
    assert df.outcome.tolist() == ["ok", "ok"] and df.peak_allocated_GiB.notna().all()


# --- Run mode on a CPU ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cpu_record(tmp_path_factory):
    import os

    root = tmp_path_factory.mktemp("runs")
    old = os.environ.get("LLMSTUDY_RUNS")
    os.environ["LLMSTUDY_RUNS"] = str(root)
    try:
        path = L.run_experiment(model="tiny-llama-32k", variants=["base", "lora", "qlora", "lora-fast"], epochs=1, eval_steps=1, optimizer="adamw_torch", dataset=str(FIXTURE), heldout_prompts=2, max_new_tokens=4, run_id="cpu-test")
    finally:
        if old is None:
            os.environ.pop("LLMSTUDY_RUNS")
        else:
            os.environ["LLMSTUDY_RUNS"] = old
    return root, R.load_record(path)


@pytest.mark.slow  # trains the variants in worker processes on the CPU: about a minute or more
def test_run_mode_on_cpu_trains_lora_and_the_fast_recipe_on_the_same_batches(cpu_record):
    _, rec = cpu_record
    assert rec.manifest["gpu"]["count"] == 0 and rec.manifest["parameters"]["train_rows"] == 9
    df = rec.table().set_index("variant")
    assert df.loc[["base", "lora", "lora-fast"], "outcome"].tolist() == ["ok"] * 3
    assert df.loc["qlora", "outcome"] == "refused" and "CUDA" in df.loc["qlora", "error"]
    assert df.loc["lora", "trainable_params"] == df.loc["lora-fast", "trainable_params"] == 9856
    # the same 9 rows and tokens in the one optimizer step, so the same loss before any update
    assert df.loc["lora", "tokens_per_step"] == df.loc["lora-fast", "tokens_per_step"]
    assert math.isclose(df.loc["lora", "first_loss"], df.loc["lora-fast", "first_loss"], rel_tol=1e-5)
    assert df.loc["lora", "max_micro_batch_tokens"] < df.loc["lora-fast", "max_micro_batch_tokens"] == df.loc["lora", "tokens_per_step"]
    assert math.isfinite(df.loc["lora", "eval_loss"]) and df.loc["lora", "eval_tokens"] > 0
    assert math.isclose(df.loc["lora", "eval_perplexity"], math.exp(df.loc["lora", "eval_loss"]), rel_tol=1e-9)
    assert pd.isna(df.loc["lora", "peak_allocated_GiB"])  # no GPU: memory is not measured, not invented
    ans = rec.table("answers")
    assert ans.groupby("variant").size().to_dict() == {"base": 10, "lora": 10, "lora-fast": 10}
    assert ans[ans.set == "article"].prompt.unique().tolist() == list(L.EVAL_PROMPTS)
    assert len(rec.table("history")) == 2 and len(rec.table("evals")) == 2 and len(rec.table("lengths")) == 12
    assert "adapters/lora/adapter_model.safetensors" in rec.manifest["files"]


def test_run_mode_refuses_bad_input_before_any_work(runs_root, tmp_path):
    with pytest.raises(ValueError, match=r"unknown variant\(s\) \['dora'\]"):
        L.run_experiment(model="tiny-llama-32k", variants=["dora"])
    with pytest.raises(ValueError, match="tiny-llama.*vocab_size is 512"):
        L.run_experiment(model="tiny-llama", variants=["lora"], dataset=str(FIXTURE))
    with pytest.raises(L.DatasetError, match="prompts are at least max_length=16"):
        L.run_experiment(model="tiny-llama-32k", variants=["lora"], max_length=16, optimizer="adamw_torch", dataset=str(FIXTURE))
    with pytest.raises(ValueError, match="nothing runnable"):
        L.run_experiment(model="tiny-llama-32k", variants=["qlora"], dataset=str(FIXTURE))
    assert not list(runs_root.rglob("manifest.json"))


# --- The notebook and the command line ----------------------------------------------------------------------------------

def test_bad_notebook_parameters_are_named():
    spec = L.notebook_params()
    with pytest.raises(ParameterError, match=r"unknown variant\(s\) \['dora'\]"):
        validate(spec, {"variants": ["dora"]})
    with pytest.raises(ParameterError, match=r"steps=-1: must be >= 0"):
        validate(spec, {"steps": -1})
    with pytest.raises(ParameterError, match="unknown model 'llama-9'"):
        validate(spec, {"model": "llama-9"})
    assert validate(spec, {})["epochs"] == 3


def _papermill(tmp_path, runs, *params):
    import os

    out = tmp_path / "out.ipynb"
    cmd = [sys.executable, "-m", "papermill", str(ROOT / "notebooks/lora_vs_qlora.ipynb"), str(out), "--cwd", str(ROOT / "notebooks"), *params]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env={**os.environ, "LLMSTUDY_RUNS": str(runs)})
    return proc, out.read_text() if out.exists() else ""


@pytest.mark.slow
def test_notebook_analyze_mode_without_records_says_so(tmp_path):
    empty = tmp_path / "runs"
    empty.mkdir()
    proc, text = _papermill(tmp_path, empty)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "llama-2-7b: no run record yet" in text and "gemma-3-270m: no run record yet" in text
    assert "loss is on" in text and "Predicted peak (GiB)" in text and "Characters (mean)" in text
    assert '"ename"' not in text


@pytest.mark.slow
def test_notebook_analyze_mode_renders_a_record(tmp_path, cpu_record):
    root, _ = cpu_record
    proc, text = _papermill(tmp_path, root, "-p", "model", "tiny-llama-32k")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "cpu-test" in text and "tiny-llama-32k: no run record yet" not in text
    assert "Speed-up (×)" in text and "lora-fast (cpu-test)" in text
    assert '"ename"' not in text


def test_cli_checks_the_dataset_and_rejects_bad_input():
    ok = subprocess.run([sys.executable, "-m", "llmstudy.cli", "lora-vs-qlora", "check", "tiny-llama-32k", "--dataset", str(FIXTURE)], capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0 and "commas_per_sentence" in ok.stdout and "evaluation prompts found in the dataset: none" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "llmstudy.cli", "lora-vs-qlora", "check", "tiny-llama-32k", "--dataset", "/nonexistent.json"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "dataset file not found" in bad.stderr


def test_recorded_h100_runs_back_the_chapter():
    """The committed H100 records (2026-11-22): what the chapter states must hold in the data it renders."""
    T = L.load_tables()
    res = L.add_speed(T["results"])
    b7 = res[(res.run_id == "h100-7b")].set_index("variant")
    if b7.empty:
        pytest.skip("no h100-7b record in data/runs/lora_vs_qlora")
    assert set(b7.index) == {"lora", "qlora", "lora-fast", "qlora-fast"} and (b7.outcome == "ok").all()
    assert (b7.steps_run == 6).all()
    # QLoRA's allocator peak is under half of LoRA's, in both recipes
    assert b7.loc["qlora", "peak_allocated_GiB"] < 0.5 * b7.loc["lora", "peak_allocated_GiB"]
    assert b7.loc["qlora-fast", "peak_allocated_GiB"] < b7.loc["lora-fast", "peak_allocated_GiB"]
    # the memory model of the foundation chapter within 10% for every 7B variant
    mem = L.memory_vs_prediction(res[res.run_id == "h100-7b"])
    assert mem.error_pct.abs().max() < 10
    fast = L.fast_vs_article(T["results"], T["history"]).set_index(["model", "method"])
    for method in ("lora", "qlora"):
        r = fast.loc[("llama-2-7b", method)]
        assert r["speedup per epoch"] > 10 and r["max train loss diff % (same steps)"] < 0.1
        g = fast.loc[("gemma-3-270m", method)]
        assert g["article outcome"].startswith("timeout after") and g["max train loss diff % (same steps)"] < 0.1
    q = res[(res.model == "gemma-3-270m") & res.eval_loss.notna() & (res.recipe != "article")].set_index("variant")
    # fine-tuning lowers the held-out loss of the real model, LoRA more than QLoRA on the same batches
    assert q.loc["lora-fast", "eval_loss"] < q.loc["qlora-fast", "eval_loss"] < q.loc["base", "eval_loss"]


def test_recorded_gemma_article_recipe_meets_the_fast_recipe_goal():
    """h100-small-article (2026-11-22): the article's recipe on Gemma-3-270m, LoRA and QLoRA side by side, resumed
    across two calls, trained all 48 steps; the fast recipe's eval loss is within 2% and it is >= 10x faster per epoch,
    timed against the article-recipe runs that had the GPU alone (h100-small-a / -b, cut by their deadline)."""
    T = L.load_tables()
    res = T["results"]
    art = res[res.run_id == "h100-small-article"].set_index("variant")
    if art.empty:
        pytest.skip("no h100-small-article record in data/runs/lora_vs_qlora")
    assert (art.outcome == "ok").all() and (art.steps_run == 48).all() and set(art.concurrent_with) == {"lora", "qlora"}
    assert art.loc["lora", "eval_loss"] == pytest.approx(3.576628, abs=1e-6) and art.loc["qlora", "eval_loss"] == pytest.approx(3.803849, abs=1e-6)
    hist = T["history"][T["history"].run_id == "h100-small-article"]
    assert sorted(hist.call.unique()) == [1, 2] and hist.groupby("variant").step.max().to_dict() == {"lora": 48, "qlora": 48}
    fast = L.fast_vs_article(res, T["history"]).set_index(["model", "method"])
    lo, ql = fast.loc[("gemma-3-270m", "lora")], fast.loc[("gemma-3-270m", "qlora")]
    assert (lo["article timing run"], lo["article quality run"]) == ("h100-small-a", "h100-small-article")
    assert (ql["article timing run"], ql["article quality run"]) == ("h100-small-b", "h100-small-article")
    assert not lo["article timing shared the GPU"] and not ql["article timing shared the GPU"]
    # steady state: 11.002 s x 16 steps against 0.5262 s x 16; 13.492 s against 0.6334 s
    assert lo["speedup per epoch"] == pytest.approx(20.907, abs=1e-3) and ql["speedup per epoch"] == pytest.approx(21.301, abs=1e-3)
    assert lo["eval loss diff %"] == pytest.approx(0.00703, abs=1e-4) and ql["eval loss diff %"] == pytest.approx(0.5966, abs=1e-3)
    # sharing the GPU did not slow QLoRA's article recipe down: its steps after LoRA had finished took as long
    conc = L.concurrency_effect(res, T["history"]).set_index("variant")
    assert conc.loc["qlora", "steps alone"] == 8 and abs(conc.loc["qlora", "slowdown"] - 1) < 0.02


@pytest.mark.slow
def test_chapter_states_what_the_committed_records_hold(tmp_path):
    """The executed chapter on the committed records: its glued sentences carry the records' numbers."""
    if not (ROOT / "data/runs/lora_vs_qlora/h100-small-article").is_dir():
        pytest.skip("no h100-small-article record")
    proc, text = _papermill(tmp_path, ROOT / "data/runs")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "gemma-3-270m lora met (20.9x, +0.01%); gemma-3-270m qlora met (21.3x, +0.60%)" in text
    assert "trained all 48 steps in h100-small-article, side by side on one GPU, in 2 parts" in text
    assert "QLoRA&#x27;s held-out loss per answer token is 3.804 against LoRA&#x27;s 3.577" in text or "QLoRA's held-out loss per answer token is 3.804 against LoRA's 3.577" in text
    assert "final eval loss lora 3.577, qlora 3.804" in text
    assert '"ename"' not in text


# --- Resuming across time-limited calls ---------------------------------------------------------------------------------

@pytest.mark.slow  # trains the variants in worker processes on the CPU: about a minute or more
def test_a_resumable_run_stopped_mid_epoch_resumes_to_the_same_losses_as_one_uninterrupted_run(tmp_path, monkeypatch):
    """The article's recipe (1 x 32) on 40 training rows: 2 optimizer steps per epoch (32 + 8 micro-batches), 2 epochs.
    One run goes straight through; the other stops after its first step (its stop time has passed), leaving a Trainer
    checkpoint, and a second call resumes it mid-epoch (skipping the 32 seen micro-batches) across the epoch boundary
    to the end. One CPU thread per worker: the same arithmetic in both runs, and no thread contention on a busy box."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    base_rows = L.load_rows(FIXTURE)
    rows = [{"instruction": f"{r['instruction']} ({i})", "output": r["output"]} for i, r in enumerate(base_rows[i % len(base_rows)] for i in range(50))]
    data = tmp_path / "persona50.json"
    data.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    root = tmp_path / "runs"
    kw = dict(model="tiny-llama-32k", variants=["lora"], epochs=2, eval_steps=1, optimizer="adamw_torch", dataset=str(data), heldout_prompts=2, max_new_tokens=4, root=root, deadline_s=600)
    straight = R.load_record(L.run_experiment(run_id="straight", **kw))

    work = root / L.EXPERIMENT / ".work-resumed"
    with pytest.raises(L.ResumeNeeded, match=r"run resumed is incomplete \(lora 1/4 steps") as e:
        L.run_experiment(run_id="resumed", resumable=True, stop_s=0, **kw)
    assert e.value.pending == {"lora": (1, 4)}
    assert not (root / L.EXPERIMENT / "resumed").exists()  # nothing published before every variant has finished
    ck = work / "trainer-lora" / "checkpoint-1"
    for f in ("adapter_model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json", "llmstudy_progress.json"):
        assert (ck / f).is_file(), f
    with pytest.raises(ValueError, match="run resumed was started with other parameters"):
        L.run_experiment(run_id="resumed", resumable=True, **{**kw, "eval_steps": 2})

    resumed = R.load_record(L.run_experiment(run_id="resumed", resumable=True, **kw))
    assert not work.exists()
    assert [c["variants"]["lora"]["outcome"] for c in resumed.manifest["calls"]] == ["incomplete", "ok"]
    assert resumed.manifest["started_utc"] == resumed.manifest["calls"][0]["started_utc"]
    a, b = straight.table().iloc[0], resumed.table().iloc[0]
    assert list(straight.table().columns) == list(resumed.table().columns)
    assert (a.outcome, b.outcome, a.steps_run, b.steps_run, a.calls, b.calls) == ("ok", "ok", 4, 4, 1, 2)
    ha, hb = straight.table("history"), resumed.table("history")
    assert list(ha.columns) == list(hb.columns) and hb.call.tolist() == [1, 2, 2, 2] and ha.call.tolist() == [1] * 4
    # the real proof: the same batches in the same order, the same dropout masks, the same optimizer and schedule
    assert hb.loss.tolist() == pytest.approx(ha.loss.tolist(), rel=1e-5)
    assert hb.grad_norm.tolist() == pytest.approx(ha.grad_norm.tolist(), rel=1e-4)
    assert hb.learning_rate.tolist() == pytest.approx(ha.learning_rate.tolist(), rel=1e-9)
    assert hb.tokens.tolist() == ha.tokens.tolist() and hb.epoch.tolist() == ha.epoch.tolist() == [0.8, 1.0, 1.8, 2.0]
    assert resumed.table("evals").eval_loss.tolist() == pytest.approx(straight.table("evals").eval_loss.tolist(), rel=1e-5)
    for col in ("eval_loss", "eval_perplexity", "train_loss", "first_loss", "last_loss"):
        assert b[col] == pytest.approx(a[col], rel=1e-5), col
    assert (b.eval_tokens, b.tokens_per_step, b.max_micro_batch_tokens) == (a.eval_tokens, a.tokens_per_step, a.max_micro_batch_tokens)
    raw_a, raw_b = (json.loads((r.path / "raw/lora.json").read_text()) for r in (straight, resumed))
    assert raw_b["micro_batches"] == raw_a["micro_batches"] and len(raw_b["micro_batches"]) == 2 * (32 + 8)
    assert [c["resumed_from_step"] for c in raw_b["calls"]] == [0, 1] and [c["steps"] for c in raw_b["calls"]] == [1, 3]
    # step statistics leave out the first step of every call (its one-off setup)
    assert b.median_step_s == pytest.approx(statistics.median(hb.step_seconds.tolist()[2:]))
    assert resumed.table("answers").answer.tolist() == straight.table("answers").answer.tolist()
    assert "=== call 1 ===" in (resumed.path / "logs/lora.log").read_text()


def test_steady_median_leaves_out_each_calls_first_step():
    assert F.steady_median([9.0, 1.0, 2.0, 8.0, 3.0], [{"first_step_index": 0, "steps": 3}, {"first_step_index": 3, "steps": 2}]) == 2.0
    assert F.steady_median([9.0, 1.0, 2.0]) == 1.5 and F.steady_median([4.0]) == 4.0 and F.steady_median([]) is None


# --- Statements without papermill: the glued values of the committed records, exactly ---------------------------------

BEFORE = {  # the chapter's glued values on the committed records, as the page showed them before the restructuring
    "ds_rows": "640", "ds_train": "512", "ds_eval": "128", "ds_commas": "3.8", "ds_chars": "124", "ds_overlap": "0",
    "tok_mean": "183", "tok_max": "496", "tok_step": "5,864", "mask_n": "74 of 101", "max_err_7b": "8.6", "speedup_7b_lora": "13x",
    "mem_verdict": "The 4 measured peaks land within 8.6% of the memory model (runs h100-7b); NVML's view of the process is 0.76 GiB above the allocator's reserve (median).",
    "memory_chapter_heads": "its largest error over 14 recorded peaks is 1.2% with the fused head, 5.3% with full logits (h100-c qlora/paged_adamw_8bit/bf16/s1024xb1/ckpt)",
    "quality_verdict": "Held-out loss per answer token: base 4.053 (perplexity 57.6); lora 3.577 (perplexity 35.8); qlora 3.804 (perplexity 44.9); "
                       "lora-fast 3.577 (perplexity 35.8); qlora-fast 3.827 (perplexity 45.9).",
    "small_article_note": "The article-recipe runs (lora, qlora) trained all 48 steps in h100-small-article, side by side on one GPU, in 2 parts, each resumed "
                          "from the Trainer checkpoint (adapter, optimizer, scheduler and RNG state): final eval loss lora 3.577, qlora 3.804. An earlier article-recipe "
                          "lora run (h100-small-a), which had the GPU alone, stopped at its time limit (timeout) after 18 of 48 steps at 11.0 s per step; "
                          "the comparison of speed below takes its step time from it. An earlier article-recipe qlora run (h100-small-b), which had the GPU "
                          "alone, stopped at its time limit (timeout) after 31 of 48 steps at 13.5 s per step; the comparison of speed below takes its "
                          "step time from it.",
    "small_mem_at_run": "lora-fast 9.67 GiB; qlora-fast 9.84 GiB; lora 1.20 GiB; qlora 1.38 GiB",
    "small_mem_note": "lora-fast (h100-small-a): 0.97 GiB measured against 0.99 GiB predicted (+2.2%); qlora-fast (h100-small-a): 1.26 GiB measured against "
                      "1.24 GiB predicted (-1.1%); lora (h100-small-article): 0.63 GiB measured against 0.57 GiB predicted (-9.3%); qlora (h100-small-article): "
                      "0.99 GiB measured against 0.75 GiB predicted (-23.6%)",
    "small_mem_open": "Still outside 10%: qlora (h100-small-article), +0.23 GiB more than predicted. We have not found the term it misses.",
    "fast_verdict": "Per epoch the fast recipe is 20.9x faster for gemma-3-270m lora (MFU 0.05% -> 0.97%, final eval loss +0.01%); 21.3x faster for "
                    "gemma-3-270m qlora (MFU 0.04% -> 0.80%, final eval loss +0.60%); 13.3x faster for llama-2-7b lora (MFU 1.3% -> 17.1%, training loss "
                    "per step within 0.01%); 15.0x faster for llama-2-7b qlora (MFU 0.96% -> 14.5%, training loss per step within 0.01%).",
    "fast_goal": "The goal of at least 10x per epoch at the same final eval loss (within 2%), checkable only with real weights: gemma-3-270m lora met "
                 "(20.9x, +0.01%); gemma-3-270m qlora met (21.3x, +0.60%).",
}


@pytest.fixture(scope="module")
def committed():
    if not (ROOT / "data/runs/lora_vs_qlora/h100-small-article").is_dir():
        pytest.skip("no h100-small-article record")
    return L.load_tables(ROOT / "data/runs"), R.results("memory_accounting", root=ROOT / "data/runs")


ISSUE20 = {  # the first screen (issue 20): the answer, what the small model's answers show, why 33 min against 20
    "answer": "Quality, on a real pretrained model, gemma-3-270m (Google's Gemma 3, 270M, base model): after three epochs of the article's recipe QLoRA's "
              "held-out loss per answer token is 3.804 against LoRA's 3.577 (+6.4%, run h100-small-article; the untrained model 4.053, run h100-small-a): "
              "a small, measurable cost of 4-bit weights that the article's eight sampled answers could not show. Memory, on the llama-2-7b architecture "
              "(H100 80GB HBM3, run h100-7b): QLoRA peaks at 4.71 GiB of allocator memory against LoRA's 12.98 GiB (6.3 against 14.9 GB in nvidia-smi; "
              "the article read 7.6 against 15.1–17.0 GB), and its optimizer step takes 1.33× as long (the article: 1.35×).",
    "loops": "gemma-3-270m (Google's Gemma 3, 270M, base model) is too small for these prompts: greedy decoding falls into a loop (a stretch of text "
             "repeated five times or more in a row) in base 7 of 8; lora 8 of 8; qlora 8 of 8; lora-fast 8 of 8; qlora-fast 8 of 8 answers, for example "
             "base 「あなたは誰ですか? mendatanguser」 × 22 and lora 「あなたは、誰ですか? mendatanguser」 × 19.",
}
TIMING = ("Our llama-2-7b LoRA step takes 17.70 s (run h100-7b, H100 80GB HBM3), so the article's 111 steps project to 17.70 × 111 = 32.8 min, while the "
          "article's whole run, on an H100 PCIe with 24% less compute and 40% less memory bandwidth than the H100 SXM, took 19.9 min. Per micro-batch (one "
          "sample) that is 0.553 s against at most 1,192 s / (111 × 32) = 0.336 s.",
          "the memory chapter's H100 records take 0.515 s per micro-batch at 100 tokens (h100-a) and 0.518 s at 1,024 tokens (h100-c): 10.2× the tokens, "
          "1.01× the time.",
          "takes 0.367 s per micro-batch (h200-a) against 0.515 s.",
          "the article's `time` shows 23.7 min of CPU time in 19.9 min of wall time for LoRA",
          "QLoRA over LoRA is 1.33× here and 1.35× in the article. The same work, a host about 1.65× slower per micro-batch")


def test_statements_of_the_committed_records_are_the_pages_values(committed, tok):
    tables, memory = committed
    rows = L.load_rows(L.dataset_path())
    checked = L.check_lengths(L.token_lengths(rows, "llama2-inst", tok), 1024)
    mask = L.label_mask_example(tok, L.split_rows(rows)[0][0])
    got = L.statements(tables, "gemma-3-270m", "llama-2-7b", rows=rows, checked=checked, mask=mask, memory_records=memory)
    timing = got.pop("timing_why")
    assert got == BEFORE | ISSUE20
    for part in TIMING:
        assert part in timing, part


def test_the_step_time_evidence_is_the_records_own():
    """The 33-min projection against the article's 20 min: per micro-batch times straight from the records."""
    T = L.load_tables()
    mb = L.micro_batch_times(L.views(T, "gemma-3-270m", "llama-2-7b")["speed"], R.results("memory_accounting")).set_index("source")
    assert mb.loc["h100-7b (lora, this chapter's data)", "s_per_micro_batch"] == pytest.approx(17.704320 / 32, rel=1e-6)
    assert mb.loc["h100-a (lora, synthetic 100-token samples)", "s_per_micro_batch"] == pytest.approx(16.474178 / 32, rel=1e-6)
    assert mb.loc["h100-c (lora, synthetic 1024-token samples)", "s_per_micro_batch"] == pytest.approx(2.071730 / 4, rel=1e-6)
    assert mb.loc["the article (lora, `time` of the whole run)", "s_per_micro_batch"] == pytest.approx((19 * 60 + 52.129) / (111 * 32))
    assert len(L.micro_batch_report(mb.reset_index()).headers) <= 8


def test_loops_are_found_and_answers_are_cut():
    assert L.loop_of("名前を教えて" + "この、" * 80) == ("この、", 80)
    assert L.loop_of("豆腐です。白くて、柔らかくて、何も、主張しない。") is None
    T = L.load_tables()
    ans = L.views(T, "gemma-3-270m", "llama-2-7b")["answers"]
    cut = L.truncated_answers(ans, 120)
    assert cut.drop(columns="prompt").map(len).max().max() <= 121 and len(cut) == 8
    rep = L.answers_report(ans)
    assert rep.collapsed and len(rep.headers) == 6


def test_statements_without_inputs_say_n_a_not_a_number(committed):
    tables, memory = committed
    got = L.statements(tables, "gemma-3-270m", "llama-2-7b", memory_records=memory)
    assert {k: got[k] for k in ("ds_rows", "ds_overlap", "tok_mean", "tok_step", "mask_n")} == dict.fromkeys(("ds_rows", "ds_overlap", "tok_mean", "tok_step", "mask_n"), "n/a")
    assert got["quality_verdict"] == BEFORE["quality_verdict"]


def test_a_forked_model_gets_the_command_that_measures_it_never_the_shipped_models_numbers(committed):
    """mixtral-8x7b has no record here: every measured statement about it says so and gives the command."""
    tables, memory = committed
    got = L.statements(tables, "mixtral-8x7b", "mixtral-8x7b", memory_records=memory)
    title = M.title("mixtral-8x7b")
    speed_cmd = "llmstudy lora-vs-qlora run mixtral-8x7b --steps 6 --variants lora qlora lora-fast qlora-fast"
    assert got["max_err_7b"] == f"n/a (not measured for {title} yet (measure it on a GPU runner: `{speed_cmd}`))"
    assert got["speedup_7b_lora"] == got["max_err_7b"]
    assert got["mem_verdict"].startswith("No run record of mixtral-8x7b yet") and speed_cmd in got["mem_verdict"]
    assert got["quality_verdict"] == f"No full-epoch run record of mixtral-8x7b yet: not measured for {title} yet (measure it on a GPU runner: `llmstudy lora-vs-qlora run mixtral-8x7b`)."
    assert got["small_mem_note"] == "no measured peak" and got["small_article_note"] == "" and got["memory_chapter_heads"] == ""
    # the fast-recipe sentence lists the shipped models' records, each by name, and nothing under the forked model's name
    assert "gemma-3-270m lora" in got["fast_verdict"] and "llama-2-7b lora" in got["fast_verdict"] and "mixtral" not in got["fast_verdict"]
    assert L.no_record_line("mixtral-8x7b", "quality").startswith("mixtral-8x7b: no run record yet with full-epoch training in data/runs/lora_vs_qlora; not measured for")


def test_a_model_this_chapter_cannot_train_gets_the_reason_not_a_command_that_would_fail(committed):
    tables, memory = committed
    got = L.statements(tables, "mistral-7b-v0.3", "mistral-7b-v0.3", memory_records=memory)
    why = ("and this chapter cannot measure it as it stands: run mode trains an architecture without weights.json with random weights through "
           "the Llama-2 tokenizer (32,000 tokens), and mistral-7b-v0.3 has 32,768: add data/models/mistral-7b-v0.3/weights.json")
    assert why in got["quality_verdict"] and why in got["max_err_7b"] and "llmstudy lora-vs-qlora run" not in got["quality_verdict"]


def test_the_notebook_and_the_cli_take_their_parameters_from_the_spec(monkeypatch):
    from llmstudy import cli
    from llmstudy.core.params import notebook_mismatches

    assert notebook_mismatches(ROOT / "notebooks/lora_vs_qlora.ipynb", L.PARAMS) == []
    seen = {}
    monkeypatch.setattr(cli, "_lora_vs_qlora", lambda args: seen.update(vars(args)) or 0)
    assert cli.main(["lora-vs-qlora", "run"]) == 0
    assert {k: seen[k] for k in L.CLI_NAMES} == {k: L.PARAMS[k].default for k in L.CLI_NAMES}
    import inspect

    sig = inspect.signature(L.run_experiment).parameters
    assert {k: sig[k].default for k in L.CLI_NAMES if k != "dataset"} == {k: (tuple(v) if isinstance(v, list) else v) for k, v in
                                                                        ((k, L.PARAMS[k].default) for k in L.CLI_NAMES if k != "dataset")}
    bad = subprocess.run([sys.executable, "-m", "llmstudy.cli", "lora-vs-qlora", "run", "--steps", "-1"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "steps=-1: must be >= 0" in bad.stderr and bad.stderr.count("\n") == 1


def test_lora_targets_come_from_the_architecture_and_a_wrong_name_is_refused_before_any_work(runs_root):
    with pytest.raises(ValueError, match=r"lora targets \['w9'\] are not projections of tiny-llama-32k"):
        L.run_experiment(model="tiny-llama-32k", variants=["lora"], lora_targets=["w9"], optimizer="adamw_torch", dataset=str(FIXTURE))
    assert not list(runs_root.rglob("manifest.json"))
    # the default ([]) is every linear projection: for the shipped models, the article's seven
    assert M.lora_targets("llama-2-7b", L.PARAMS["lora_targets"].default or None).names == M.LLAMA_LORA_TARGETS
    assert M.lora_targets("gemma-3-270m", None).names == M.LLAMA_LORA_TARGETS


def test_predictions_for_an_architecture_the_memory_model_does_not_cover_say_so_instead_of_a_number():
    moe = L.predictions("qwen3-30b-a3b", 496, 183.25)
    assert moe["predicted peak GiB"].isna().all()
    assert moe["not modelled"].str.startswith("activation memory is not modelled for mixture-of-experts layers").all()
    dense = L.predictions("llama-2-7b", 496, 183.25)
    assert "not modelled" not in dense and dense["predicted peak GiB"].notna().all()
