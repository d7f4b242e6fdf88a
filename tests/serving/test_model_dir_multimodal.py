"""The multimodal Llama 4 model folder: processor files and Llama 4's special tokens at their real ids.

What vLLM 0.8.3 (transformers 4.51.3) does with the folder is checked by scripts/check_llama4_mm_dir.py in its own
venv; here only what the repo's venv can check: the files, the token ids, the exact vocabulary, the refusals.
"""

import json

import pytest

from llmstudy.core import models as M
from llmstudy.serving import model_dir as MD

SCOUT = "data/models/llama-4-scout-17b-16e-instruct"


@pytest.fixture(scope="module")
def scout_dir(tmp_path_factory):
    """A Llama 4 Scout config with 4 text layers (any Llama4ForConditionalGeneration config works), prepared."""
    cfg = M.raw_config(SCOUT)
    cfg["text_config"]["num_hidden_layers"] = 4
    src = tmp_path_factory.mktemp("cfg")
    (src / "config.json").write_text(json.dumps(cfg))
    return MD.prepare_model_dir(str(src), tmp_path_factory.mktemp("mm") / "m"), cfg


def test_the_folder_holds_the_processor_files_of_transformers_4_51_3(scout_dir):
    d, cfg = scout_dir
    assert json.loads((d / "config.json").read_text()) == cfg  # the whole model, vision tower included
    pre = json.loads((d / "preprocessor_config.json").read_text())
    assert pre["image_processor_type"] == "Llama4ImageProcessorFast" and pre["max_patches"] == 16
    assert pre["size"] == {"height": 336, "width": 336} and pre["resize_to_max_canvas"] is False
    assert pre["image_mean"] == pre["image_std"] == [0.5, 0.5, 0.5] and pre["rescale_factor"] == 1 / 255
    proc = json.loads((d / "processor_config.json").read_text())
    assert proc == {"fake_image_token": "<|image|>", "image_token": "<|image|>", "patch_size": 14,
                    "processor_class": "Llama4Processor"}
    tok_cfg = json.loads((d / "tokenizer_config.json").read_text())
    assert tok_cfg["tokenizer_class"] == "PreTrainedTokenizerFast"  # a class transformers 4.51.3 has
    assert (tok_cfg["bos_token"], tok_cfg["eos_token"], tok_cfg["pad_token"]) == ("<|begin_of_text|>", "<|eot|>",
                                                                                   "<|finetune_right_pad|>")
    assert "<|image|>" in tok_cfg["chat_template"]  # instruct: eos ids hold <|eot|>
    assert json.loads((d / "chat_template.json").read_text())["chat_template"] == tok_cfg["chat_template"]


def test_special_tokens_sit_at_their_real_ids_in_a_vocabulary_of_exactly_vocab_size(scout_dir):
    from tokenizers import Tokenizer

    d, cfg = scout_dir
    tok = Tokenizer.from_file(str(d / "tokenizer.json"))
    assert tok.get_vocab_size(with_added_tokens=True) == cfg["text_config"]["vocab_size"] == 202_048
    assert max(tok.get_vocab().values()) == 202_047
    ids = {t: tok.token_to_id(t) for t in MD.LLAMA4_SPECIAL_TOKENS}
    assert ids == MD.llama4_token_ids() and len(ids) == 1134 and max(ids.values()) == 201_133
    # the ids the config and the conversion script's comments name
    assert ids["<|begin_of_text|>"] == cfg["text_config"]["bos_token_id"] == 200_000
    assert [ids[t] for t in ("<|end_of_text|>", "<|eom|>", "<|eot|>")] == cfg["text_config"]["eos_token_id"]
    assert ids["<|finetune_right_pad|>"] == cfg["text_config"]["pad_token_id"] == 200_018
    assert ids["<|header_start|>"] == 200_005 and ids["<|text_post_train_reserved_special_token_68|>"] == 200_079
    assert (ids["<|image_start|>"], ids["<|image_end|>"]) == (cfg["boi_token_index"], cfg["eoi_token_index"])
    assert ids["<|patch|>"] == cfg["image_token_index"] == 200_092  # the image features replace the patch tokens
    assert ids["<|image|>"] == 200_090 and (ids["<|tile_x_separator|>"], ids["<|tile_y_separator|>"]) == (200_084, 200_085)
    # each special token is one id wherever it stands; words stay synthetic; bos is prepended as the real one does
    text = "<|image_start|><|patch|><|patch|><|tile_x_separator|><|image|>t5 t6<|image_end|>"
    assert tok.encode(text, add_special_tokens=False).ids == [200_080, 200_092, 200_092, 200_084, 200_090, 5, 6, 200_081]
    assert tok.encode("<|image|>").ids == [200_000, 200_090]


def test_the_tokenizer_loads_with_the_repo_transformers(scout_dir):
    from transformers import AutoTokenizer

    d, cfg = scout_dir
    tok = AutoTokenizer.from_pretrained(str(d))
    assert len(tok) == 202_048 and tok.encode("<|image|>", add_special_tokens=False) == [200_090]
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (200_000, 200_008, 200_018)
    prompt = tok.apply_chat_template([{"role": "user", "content": "t5"}], tokenize=False, add_generation_prompt=True)
    assert prompt == "<|begin_of_text|><|header_start|>user<|header_end|>\n\nt5<|eot|><|header_start|>assistant<|header_end|>\n\n"


def test_a_prepared_folder_is_reused_and_text_only_is_unchanged(scout_dir, tmp_path):
    d, _ = scout_dir
    stamp = (d / "tokenizer.json").stat().st_mtime_ns
    assert MD.prepare_model_dir(str(d), d) == d and (d / "tokenizer.json").stat().st_mtime_ns == stamp
    t = MD.prepare_model_dir(SCOUT, tmp_path / "text", text_only=True)
    assert json.loads((t / "config.json").read_text())["architectures"] == ["Llama4ForCausalLM"]
    assert not (t / "preprocessor_config.json").exists()


def test_other_multimodal_architectures_are_refused_unless_text_only(tmp_path):
    with pytest.raises(ValueError, match="Gemma3ForConditionalGeneration"):
        MD.prepare_model_dir("gemma-3-12b-it", tmp_path / "g")
    assert not (tmp_path / "g").exists()
    cfg = json.loads((MD.prepare_model_dir("gemma-3-12b-it", tmp_path / "gt", text_only=True) / "config.json").read_text())
    assert cfg["architectures"] == ["Gemma3ForCausalLM"]
