"""The one model-folder builder and the one time-budget / resume scheme."""

import json
import time

import pytest

from llmstudy.serving import model_dir as MD
from llmstudy.serving.budget import Budget, Progress


def test_a_model_folder_has_the_config_and_a_tokenizer_of_its_exact_vocabulary(tmp_path):
    from transformers import AutoTokenizer

    d = MD.prepare_model_dir("tiny-llama-serve", tmp_path / "m")
    cfg = json.loads((d / "config.json").read_text())
    assert cfg == MD.server_config("tiny-llama-serve")
    assert len(AutoTokenizer.from_pretrained(str(d))) == cfg["vocab_size"]
    stamp = (d / "tokenizer.json").stat().st_mtime_ns
    assert MD.prepare_model_dir("tiny-llama-serve", d) == d and (d / "tokenizer.json").stat().st_mtime_ns == stamp  # reused as it is


def test_text_only_folder_of_a_multimodal_config():
    cfg = MD.server_config("gemma-3-12b-it", text_only=True)
    assert cfg["architectures"] == ["Gemma3ForCausalLM"] and "vision_config" not in cfg and cfg["num_hidden_layers"] == 48
    assert MD.vocab_size(MD.server_config("gemma-3-12b-it")) == MD.vocab_size(cfg) == 262_208
    assert "text_config" in MD.server_config("gemma-3-12b-it")  # served whole unless asked


def test_a_config_without_a_vocabulary_is_refused(tmp_path):
    with pytest.raises(ValueError, match="no positive integer vocab_size"):
        MD.vocab_size({"hidden_size": 8})


def test_budget_and_progress(tmp_path):
    b = Budget(None)
    assert not b.limited and b.fits(1e9)
    b = Budget(0.2)
    assert b.limited and b.fits(0.05) and not b.fits(10)
    time.sleep(0.25)
    assert not b.fits() and b.left() < 0
    assert not Budget(-1).fits()  # a spent budget starts nothing
    p = Progress(tmp_path)
    p.save(b)
    again = Progress(tmp_path)
    assert again.before == pytest.approx(b.elapsed(), abs=0.05) and again.first_started_utc == p.first_started_utc
