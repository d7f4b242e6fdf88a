"""Triton Python-backend model "postprocessing": generated token ids -> text.

Copied by the repository generator into ``<repo>/postprocessing/1/model.py`` with ``llmstudy_paths.json`` beside it
(numpy 1 first on ``sys.path``: BYTES outputs go through numpy, and the stub is built for numpy 1).

Input output_ids INT32 [-1] (one engine response: a streamed step's new ids, or all ids). Output text_output BYTES [1]:
the text those ids add in the middle of the sequence (``textcodec.decode_piece``), so streamed chunks concatenate to
exactly the non-streamed answer. Model-config parameter: tokenizer_dir.
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


class TritonPythonModel:
    def initialize(self, args):
        from llmstudy.serving.triton import textcodec

        self.codec = textcodec
        cfg = json.loads(args["model_config"])
        self.batched = int(cfg.get("max_batch_size", 0)) > 0
        self.tokenizer = textcodec.load_tokenizer(cfg["parameters"]["tokenizer_dir"]["string_value"])
        self.anchor = textcodec.anchor_id(self.tokenizer)

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                ids = pb_utils.get_input_tensor_by_name(request, "output_ids").as_numpy()
                if ids.ndim > 1 and ids.shape[0] != 1:
                    raise ValueError(f"one sequence per request, got a batch of {ids.shape[0]}")
                text = self.codec.decode_piece(self.tokenizer, ids.reshape(-1).tolist(), self.anchor)
            except Exception as e:  # noqa: BLE001
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"postprocessing: {e}")))
                continue
            out = np.array([text.encode("utf-8")], dtype=np.object_)
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("text_output", out.reshape(1, 1) if self.batched else out)]))
        return responses
