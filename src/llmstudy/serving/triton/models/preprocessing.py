"""Triton Python-backend model "preprocessing": prompt text -> token ids, request options -> INT32 flags.

Copied by the repository generator (``llmstudy.serving.triton.repository``) into ``<repo>/preprocessing/1/model.py``,
with ``llmstudy_paths.json`` beside it: numpy 1 first on ``sys.path`` (the stub is built for numpy 1 and BYTES
tensors go through numpy), then this package and the Python's site-packages (transformers, tokenizers).

Inputs (one sequence per request, so every tensor is [1, ...] under max_batch_size > 0): text_input BYTES;
max_tokens INT32; optional stream BOOL, lora_name BYTES ("" = base model), ignore_eos BOOL, and what genai-perf's
TensorRT-LLM path sends: exclude_input_in_output BOOL (true only), min_length INT32 (only with ignore_eos, which
makes every output exactly max_tokens long), bad_words / stop_words BYTES (empty only).
Outputs: input_ids INT32 [-1], input_length, max_tokens, lora_id (index into the adapter list, -1 = none),
ignore_eos, stream: INT32 [1]. A request the engine cannot serve as asked gets an error response naming why.

Model-config parameters: tokenizer_dir; adapters = JSON list of [name, path] (the engine's list, same order).
"""

import json
import os
import sys


def _add_paths():
    f = os.path.join(os.path.dirname(os.path.abspath(__file__)), "llmstudy_paths.json")
    if os.path.exists(f):
        with open(f) as fh:
            paths = json.load(fh)
        sys.path[:0] = [p for p in paths.get("first", []) + paths.get("then", []) if p not in sys.path]


_add_paths()

import numpy as np  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402


def _param(cfg, key, default=""):
    return cfg.get("parameters", {}).get(key, {}).get("string_value", default)


def _values(request, name):
    t = pb_utils.get_input_tensor_by_name(request, name)
    if t is None:
        return None
    a = t.as_numpy()
    if a.ndim > 1 and a.shape[0] != 1:
        raise ValueError(f"{name}: one sequence per request (got a batch of {a.shape[0]}); send one request per prompt")
    return a.reshape(-1)


def _one(request, name, default, kind):
    v = _values(request, name)
    if v is None or v.size == 0:
        return default
    if v.size != 1:
        raise ValueError(f"{name}: expected one value, got {v.size}")
    x = v[0]
    if kind is bytes:
        return x.decode("utf-8") if isinstance(x, bytes) else str(x)
    return kind(x)


class TritonPythonModel:
    def initialize(self, args):
        from llmstudy.serving.triton import textcodec

        self.codec = textcodec
        cfg = json.loads(args["model_config"])
        self.batched = int(cfg.get("max_batch_size", 0)) > 0
        self.tokenizer = textcodec.load_tokenizer(_param(cfg, "tokenizer_dir"))
        self.adapters = [a[0] for a in json.loads(_param(cfg, "adapters", "[]"))]
        pb_utils.Logger.log_info(f"preprocessing ready: numpy {np.__version__}, adapters {self.adapters}, tokenizer "
                                 f"{type(self.tokenizer).__name__} {textcodec.load_tokenizer.fallback_reason}")

    def _shape(self, a):
        return a.reshape(1, -1) if self.batched else a.reshape(-1)

    def _parse(self, request):
        text = _one(request, "text_input", None, bytes)
        if text is None:
            raise ValueError("text_input is required")
        max_tokens = _one(request, "max_tokens", None, int)
        if max_tokens is None or max_tokens < 1:
            raise ValueError(f"max_tokens must be a positive integer, got {max_tokens}")
        name = _one(request, "lora_name", "", bytes)
        if name and name not in self.adapters:
            raise ValueError(f"unknown lora_name {name!r}; this repository serves adapters {self.adapters} ('' = the base model)")
        ignore_eos = _one(request, "ignore_eos", False, bool)
        if not _one(request, "exclude_input_in_output", True, bool):
            raise ValueError("exclude_input_in_output=false is not served: text_output is the generated text only")
        min_length = _one(request, "min_length", 0, int)
        if min_length > max_tokens:
            raise ValueError(f"min_length {min_length} > max_tokens {max_tokens}")
        if min_length > 1 and not ignore_eos:
            raise ValueError("min_length is served only with ignore_eos=true (then every output is max_tokens long); the engine has no min-length input")
        for words in ("bad_words", "stop_words"):
            v = _values(request, words)
            if v is not None and any(bool(x) for x in v):
                raise ValueError(f"{words} is not served by this engine (send it empty or leave it out)")
        ids = self.codec.encode(self.tokenizer, text)
        if not ids:
            raise ValueError("text_input tokenized to no tokens")
        return ids, max_tokens, (self.adapters.index(name) if name else -1), ignore_eos, _one(request, "stream", False, bool)

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                ids, max_tokens, lora_id, ignore_eos, stream = self._parse(request)
            except Exception as e:  # noqa: BLE001 - every bad request is answered, the model stays up
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"preprocessing: {e}")))
                continue
            i32 = lambda name, v: pb_utils.Tensor(name, self._shape(np.asarray(v, dtype=np.int32)))  # noqa: E731
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                i32("input_ids", ids), i32("input_length", [len(ids)]), i32("max_tokens", [max_tokens]),
                i32("lora_id", [lora_id]), i32("ignore_eos", [int(ignore_eos)]), i32("stream", [int(stream)]),
            ]))
        return responses
