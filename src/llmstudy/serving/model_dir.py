"""The one model-folder builder: a folder an engine can serve with random (dummy) weights.

A model of this study is a ``config.json``; serving it with ``--load-format dummy`` needs a folder holding that config
and a tokenizer whose vocabulary is exactly the model's (random-token prompts then round-trip exactly; the weights
are random, so is the text). A folder with a real checkpoint (``*.safetensors``) is served as it is.
"""

from __future__ import annotations

import json
from pathlib import Path

from llmstudy.core import models as M


def has_weights(model: str) -> bool:
    """A folder with a real checkpoint (``*.safetensors``): served as it is, with its own tokenizer."""
    return Path(str(model)).is_dir() and any(Path(str(model)).glob("*.safetensors"))


def server_config(model: str, text_only: bool = False) -> dict:
    """The config.json an engine loads for ``model``. With ``text_only`` a multimodal config becomes its language
    model alone (Llama 4, Gemma 3: ``text_config`` as ``...ForCausalLM``, keeping the dtype and quantization)."""
    raw = M.raw_config(model)
    if not text_only or "text_config" not in raw:
        return raw
    cfg = dict(raw["text_config"])
    cfg["architectures"] = [raw["architectures"][0].replace("ForConditionalGeneration", "ForCausalLM")]
    cfg.setdefault("torch_dtype", raw.get("torch_dtype", "bfloat16"))
    if "quantization_config" in raw:
        cfg["quantization_config"] = raw["quantization_config"]
    return cfg


def vocab_size(cfg: dict) -> int:
    """The vocabulary of a config dict (its ``text_config``'s for a multimodal one); a clear error when absent."""
    v = cfg.get("vocab_size") or cfg.get("text_config", {}).get("vocab_size")
    if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
        raise ValueError(f"config has no positive integer vocab_size (got {v!r}); a served model needs one for its tokenizer")
    return v


def prepare_model_dir(model: str, dest: Path, text_only: bool = False) -> Path:
    """Write ``dest/config.json`` (:func:`server_config`) and a synthetic tokenizer of exactly its vocabulary.

    A multimodal Llama 4 (``Llama4ForConditionalGeneration`` with its vision tower, ``text_only`` False) also gets the
    processor files vLLM's multimodal profiling loads, and a tokenizer holding Llama 4's special tokens at their real
    ids (:func:`write_llama4_processor_files`). Another multimodal architecture (a ``vision_config``) is refused
    unless ``text_only``: no processor is written for it.

    A folder that already holds the same config and a tokenizer is reused as it is (nothing is rewritten).
    """
    from llmstudy.training.finetune import synthetic_tokenizer

    cfg = server_config(model, text_only)
    multimodal = not text_only and "vision_config" in cfg
    arch = (cfg.get("architectures") or ["?"])[0]
    if multimodal and arch not in _MM_PROCESSOR_WRITERS:
        raise ValueError(f"prepare_model_dir cannot write an image processor for the multimodal architecture {arch} "
                         f"(only {', '.join(sorted(_MM_PROCESSOR_WRITERS))}); serve its language model alone with text_only=True")
    dest = Path(dest)
    needed = ["config.json", "tokenizer.json"] + (list(LLAMA4_PROCESSOR_FILES) if multimodal else [])
    if all((dest / f).exists() for f in needed) and json.loads((dest / "config.json").read_text()) == cfg:
        return dest
    vocab = vocab_size(cfg)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "config.json").write_text(json.dumps(cfg, indent=1))
    if multimodal:
        _MM_PROCESSOR_WRITERS[arch](cfg, dest)
    else:
        synthetic_tokenizer(vocab).save_pretrained(str(dest))
        # transformers 5 saves its own class name ("TokenizersBackend"), which transformers 4.x (vLLM 0.8.3's) cannot
        # load; "PreTrainedTokenizerFast" loads in both (5 keeps it as an alias)
        tc = dest / "tokenizer_config.json"
        tok_cfg = json.loads(tc.read_text())
        tok_cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
        tc.write_text(json.dumps(tok_cfg, indent=1))
    return dest


# ---------------------------------------------------------------------------------------------------------------------
# Llama 4 multimodal: every Llama-4-specific constant, as transformers 4.51.3 (the version vLLM 0.8.3 runs) has it.
#   - image processor: transformers/models/llama4/image_processing_llama4_fast.py (Llama4ImageProcessorFast's class
#     defaults), written as 4.51.3's ``Llama4ImageProcessorFast().save_pretrained`` writes preprocessor_config.json;
#   - processor: transformers/models/llama4/processing_llama4.py (Llama4Processor's defaults, as its save_pretrained
#     writes processor_config.json, and its module-level ``chat_template``);
#   - special tokens, their order and ids (from 200000), bos/eos/pad: transformers/models/llama4/
#     convert_llama4_weights_to_hf.py (BASIC_SPECIAL_TOKENS + LLAMA4_TEXT_POST_TRAIN_SPECIAL_TOKENS +
#     LLAMA4_VISION_SPECIAL_TOKENS, write_tokenizer, write_model). That script is not shipped in the 4.51.3 wheel or
#     sdist; it is in the transformers repository (which writes the processor and tokenizer of the Hub repos with it).
# ---------------------------------------------------------------------------------------------------------------------
LLAMA4_PREPROCESSOR_CONFIG = {
    "crop_size": None, "data_format": "channels_first", "default_to_square": True, "device": None, "do_center_crop": None,
    "do_convert_rgb": True, "do_normalize": True, "do_rescale": True, "do_resize": True, "image_mean": [0.5, 0.5, 0.5],
    "image_processor_type": "Llama4ImageProcessorFast", "image_std": [0.5, 0.5, 0.5], "input_data_format": None,
    "max_patches": 16, "processor_class": "Llama4Processor", "resample": 2, "rescale_factor": 1 / 255,
    "resize_to_max_canvas": False, "return_tensors": None, "size": {"height": 336, "width": 336},
}
LLAMA4_PROCESSOR_CONFIG = {"fake_image_token": "<|image|>", "image_token": "<|image|>", "patch_size": 14,
                           "processor_class": "Llama4Processor"}
LLAMA4_SPECIAL_TOKENS_START = 200000  # the first special token's id (<|begin_of_text|>); the tiktoken ranks are below


def _reserved(name: str, count: int, start: int) -> list[str]:
    return [f"<|{name}_reserved_special_token_{i}|>" for i in range(start, start + count)]


LLAMA4_SPECIAL_TOKENS = (
    ["<|begin_of_text|>", "<|end_of_text|>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>"]  # 200000-200004
    + ["<|header_start|>", "<|header_end|>", "<|eom|>", "<|eot|>", "<|step|>"]  # 200005-200079
    + _reserved("text_post_train", 6, 0) + ["<|python_start|>", "<|python_end|>", "<|finetune_right_pad|>"]
    + _reserved("text_post_train", 61, 8)
    + ["<|image_start|>", "<|image_end|>"] + _reserved("vision", 2, 0)  # 200080-201133
    + ["<|tile_x_separator|>", "<|tile_y_separator|>"] + _reserved("vision", 4, 2)
    + ["<|image|>"] + _reserved("vision", 1, 6) + ["<|patch|>"] + _reserved("vision", 1041, 7)
)
LLAMA4_BOS, LLAMA4_EOS_BASE, LLAMA4_EOS_INSTRUCT = "<|begin_of_text|>", "<|end_of_text|>", "<|eot|>"
# The conversion script names the pad "<|finetune_right_pad_id|>", a string its token list does not hold (so the Hub
# tokenizer appends it at 201134); the configs' pad_token_id 200018 is "<|finetune_right_pad|>", which is used here.
LLAMA4_PAD = "<|finetune_right_pad|>"
LLAMA4_CHAT_TEMPLATE = '{{- bos_token }}\n{%- if custom_tools is defined %}\n    {%- set tools = custom_tools %}\n{%- endif %}\n{%- if not tools_in_user_message is defined %}\n    {%- set tools_in_user_message = true %}\n{%- endif %}\n{%- if not date_string is defined %}\n    {%- if strftime_now is defined %}\n        {%- set date_string = strftime_now("%d %b %Y") %}\n    {%- else %}\n        {%- set date_string = "26 Jul 2024" %}\n    {%- endif %}\n{%- endif %}\n{%- if not tools is defined %}\n    {%- set tools = none %}\n{%- endif %}\n\n{#- This block extracts the system message, so we can slot it into the right place. #}\n{%- if messages[0][\'role\'] == \'system\' %}    \n    {%- if messages[0][\'content\'] is string %}\n        {%- set system_message = messages[0][\'content\']|trim %}\n    {%- else %}\n        {#- FIXME: The processor requires an array, always. #}\n        {%- set system_message = messages[0][\'content\'][0][\'text\']|trim %}\n    {%- endif %}\n    {%- set messages = messages[1:] %}\n    {%- set user_supplied_system_message = true %}\n{%- else %}\n    {%- set system_message = "" %}\n    {%- set user_supplied_system_message = false %}\n{%- endif %}\n\n{#- System message if the user supplied one #}\n{%- if user_supplied_system_message %}\n    {{- "<|header_start|>system<|header_end|>\n\n" }}\n    {%- if tools is not none %}\n        {{- "Environment: ipython\n" }}\n    {%- endif %}\n    {%- if tools is not none and not tools_in_user_message %}\n        {{- "You have access to the following functions. To call a function, please respond with JSON for a function call." }}\n        {{- \'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.\' }}\n        {{- "Do not use variables.\n\n" }}\n        {%- for t in tools %}\n            {{- t | tojson(indent=4) }}\n            {{- "\n\n" }}\n        {%- endfor %}\n    {%- endif %}\n    {{- system_message }}\n    {{- "<|eot|>" }}\n{%- endif %}\n\n{#- Custom tools are passed in a user message with some extra guidance #}\n{%- if tools_in_user_message and not tools is none %}\n    {#- Extract the first user message so we can plug it in here #}\n    {%- if messages | length != 0 %}\n        {%- set first_user_message = messages[0][\'content\']|trim %}\n        {%- set messages = messages[1:] %}\n    {%- else %}\n        {{- raise_exception("Cannot put tools in the first user message when there\'s no first user message!") }}\n{%- endif %}\n    {{- \'<|header_start|>user<|header_end|>\n\n\' -}}\n    {{- "Given the following functions, please respond with a JSON for a function call " }}\n    {{- "with its proper arguments that best answers the given prompt.\n\n" }}\n    {{- \'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.\' }}\n    {{- "Do not use variables.\n\n" }}\n    {%- for t in tools %}\n        {{- t | tojson(indent=4) }}\n        {{- "\n\n" }}\n    {%- endfor %}\n    {{- first_user_message + "<|eot|>"}}\n{%- endif %}\n\n{%- for message in messages %}\n    {%- if not (message.role == \'ipython\' or message.role == \'tool\' or \'tool_calls\' in message) %}\n    {{- \'<|header_start|>\' + message[\'role\'] + \'<|header_end|>\n\n\' }}\n        {%- if message[\'content\'] is string %}\n            {{- message[\'content\'] }}\n        {%- else %}\n            {%- for content in message[\'content\'] %}\n                {%- if content[\'type\'] == \'image\' %}\n                    {{- \'<|image|>\' }}\n                {%- elif content[\'type\'] == \'text\' %}\n                    {{- content[\'text\'] }}\n                {%- endif %}\n            {%- endfor %}\n        {%- endif %}\n        {{- "<|eot|>" }}\n    {%- elif \'tool_calls\' in message and message.tool_calls|length > 0 %}\n       {{- \'<|header_start|>assistant<|header_end|>\n\n\' -}}\n       {{- \'<|python_start|>\' }}\n        {%- if message[\'content\'] is string %}\n            {{- message[\'content\'] }}\n        {%- else %}\n            {%- for content in message[\'content\'] %}\n                {%- if content[\'type\'] == \'image\' %}\n                    {{- \'<|image|>\' }}\n                {%- elif content[\'type\'] == \'text\' %}\n                    {{- content[\'text\'] }}\n                {%- endif %}\n            {%- endfor %}\n        {%- endif %}\n       {{- \'<|python_end|>\' }}\n        {%- for tool_call in message.tool_calls %}\n           {{- \'{"name": "\' + tool_call.function.name + \'", \' }}\n           {{- \'"parameters": \' }}\n           {{- tool_call.function.arguments | tojson }}\n           {{- "}" }}\n        {%- endfor %}\n       {{- "<|eot|>" }}\n    {%- elif message.role == "tool" or message.role == "ipython" %}\n        {{- "<|header_start|>ipython<|header_end|>\n\n" }}\n        {%- if message.content is mapping or message.content is iterable %}\n            {{- message.content | tojson }}\n        {%- else %}\n            {{- message.content }}\n        {%- endif %}\n        {{- "<|eot|>" }}\n    {%- endif %}\n{%- endfor %}\n{%- if add_generation_prompt %}\n    {{- \'<|header_start|>assistant<|header_end|>\n\n\' }}\n{%- endif %}\n'
LLAMA4_PROCESSOR_FILES = ("tokenizer_config.json", "special_tokens_map.json", "preprocessor_config.json", "processor_config.json")


def llama4_token_ids() -> dict[str, int]:
    """Llama 4's special tokens and their real ids (200000-201133)."""
    return {t: LLAMA4_SPECIAL_TOKENS_START + i for i, t in enumerate(LLAMA4_SPECIAL_TOKENS)}


def llama4_tokenizer(vocab: int):
    """A ``tokenizers.Tokenizer`` of exactly ``vocab`` ids: the synthetic word-level vocabulary of
    :func:`llmstudy.training.finetune.synthetic_tokenizer` ("t<id>" words, its long unknown token at 0) with Llama 4's
    special tokens at their real ids, each one token wherever it stands in a text; ``<|begin_of_text|>`` is prepended
    when special tokens are added, as the real tokenizer does."""
    from tokenizers import AddedToken, processors

    from llmstudy.training.finetune import synthetic_word_level

    specials = llama4_token_ids()
    if vocab < LLAMA4_SPECIAL_TOKENS_START + len(specials):
        raise ValueError(f"vocab_size {vocab} cannot hold Llama 4's special tokens (ids up to "
                         f"{LLAMA4_SPECIAL_TOKENS_START + len(specials) - 1})")
    tok = synthetic_word_level(vocab, specials)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in LLAMA4_SPECIAL_TOKENS])
    bos_id = specials[LLAMA4_BOS]
    tok.post_processor = processors.TemplateProcessing(single=f"{LLAMA4_BOS} $A", pair=f"{LLAMA4_BOS}:0 $A:0 {LLAMA4_BOS}:1 $B:1",
                                                       special_tokens=[(LLAMA4_BOS, bos_id)])
    return tok


def write_llama4_processor_files(cfg: dict, dest: Path) -> None:
    """The tokenizer and processor files of a multimodal Llama 4 folder, readable by transformers 4.51.3 (vLLM 0.8.3):
    tokenizer.json (:func:`llama4_tokenizer`), tokenizer_config.json and special_tokens_map.json written as plain
    JSON (a ``PreTrainedTokenizerFast``; transformers 5's own save would name a class 4.51.3 lacks), the image
    processor and processor configs, and the chat template (an instruct config: eos ids holding ``<|eot|>``)."""
    from llmstudy.training.finetune import UNK_TOKEN

    text = cfg.get("text_config", cfg)
    ids = llama4_token_ids()
    eos_ids = text.get("eos_token_id")
    eos_ids = eos_ids if isinstance(eos_ids, list) else [eos_ids]
    instruct = ids[LLAMA4_EOS_INSTRUCT] in eos_ids
    llama4_tokenizer(vocab_size(cfg)).save(str(dest / "tokenizer.json"))
    special = {"bos_token": LLAMA4_BOS, "eos_token": LLAMA4_EOS_INSTRUCT if instruct else LLAMA4_EOS_BASE,
               "pad_token": LLAMA4_PAD, "unk_token": UNK_TOKEN}
    tok_cfg = {"tokenizer_class": "PreTrainedTokenizerFast", "processor_class": "Llama4Processor",
               "model_input_names": ["input_ids", "attention_mask"], "clean_up_tokenization_spaces": False,
               "model_max_length": text.get("max_position_embeddings", 8192), **special}
    if instruct:
        tok_cfg["chat_template"] = LLAMA4_CHAT_TEMPLATE
        (dest / "chat_template.json").write_text(json.dumps({"chat_template": LLAMA4_CHAT_TEMPLATE}, indent=1))
    else:
        (dest / "chat_template.json").unlink(missing_ok=True)
    (dest / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=1))
    (dest / "special_tokens_map.json").write_text(json.dumps(special, indent=1))
    (dest / "preprocessor_config.json").write_text(json.dumps(LLAMA4_PREPROCESSOR_CONFIG, indent=1))
    (dest / "processor_config.json").write_text(json.dumps(LLAMA4_PROCESSOR_CONFIG, indent=1))


# The multimodal architectures whose processor files prepare_model_dir can write.
_MM_PROCESSOR_WRITERS = {"Llama4ForConditionalGeneration": write_llama4_processor_files}
