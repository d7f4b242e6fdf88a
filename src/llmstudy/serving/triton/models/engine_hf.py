"""Triton Python-backend model: the ensemble's "engine" step as transformers' greedy ``generate`` (the CPU engine).

Copied by the repository generator into ``<repo>/engine/1/model.py`` for ``engine="hf"`` (CI on CPU; the GPU runs use
``engine_vllm``). Same contract as ``engine_vllm``: decoupled (``model_transaction_policy { decoupled: true }``);
inputs input_ids, input_length, max_tokens, lora_id, ignore_eos, stream (INT32, read by DLPack: no numpy crosses the
stub, so the Python's own numpy 2 is fine here); output output_ids INT32 [-1]: with stream=1 one response per decoding
step carrying its new token id, the last step carrying the final flag; else one response with all ids and the final
flag. No empty final response: genai-perf counts one as a response of its own (a second response 0.4 ms after the
first in non-streaming mode, TTST and ITL then measure nothing).

Requests run one after another (no in-flight batching on CPU). Greedy decoding; ignore_eos keeps decoding past EOS
(the EOS id is emitted as it is, like vLLM's ignore_eos), so the output is exactly max_tokens long.
LoRA: peft adapters loaded at start; lora_id i selects adapters[i], -1 the base model (adapters disabled).

Model-config parameters (string values):
  engine_args  JSON: model (folder), dtype (default float32), num_threads (torch threads, default: torch's)
  adapters     JSON list of [name, path] (the preprocessing model's list, same order)
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

import triton_python_backend_utils as pb_utils  # noqa: E402


def _param(cfg, key, default=""):
    return cfg.get("parameters", {}).get(key, {}).get("string_value", default)


class _Cancelled(Exception):
    pass


class _StepSender:
    """A transformers streamer: every decoding step's new token id becomes one response (the prompt is skipped).
    The step that ends the sequence (``max_tokens`` reached, or an EOS id unless EOS is ignored) carries the final
    flag, so no empty response follows it (genai-perf would count one as a response of its own)."""

    def __init__(self, send, cancelled, max_tokens, eos_ids):
        self.send, self.cancelled, self.prompt_seen = send, cancelled, False
        self.left, self.eos, self.final_sent = max_tokens, set(eos_ids), False

    def put(self, value):
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        if self.cancelled():
            raise _Cancelled()
        ids = value.reshape(-1)
        self.left -= ids.numel()
        last = self.left <= 0 or any(int(i) in self.eos for i in ids)
        self.send(ids, pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL if last else 0)
        self.final_sent = self.final_sent or last

    def end(self):
        pass


class TritonPythonModel:
    def initialize(self, args):
        import torch
        from transformers import AutoModelForCausalLM

        cfg = json.loads(args["model_config"])
        if not pb_utils.using_decoupled_model_transaction_policy(cfg):
            raise pb_utils.TritonModelException("engine must be decoupled (model_transaction_policy { decoupled: true })")
        self.batched = int(cfg.get("max_batch_size", 0)) > 0
        ea = json.loads(_param(cfg, "engine_args", "{}"))
        if ea.get("num_threads"):
            torch.set_num_threads(int(ea["num_threads"]))
        self.adapters = [tuple(a) for a in json.loads(_param(cfg, "adapters", "[]"))]
        model = AutoModelForCausalLM.from_pretrained(ea["model"], dtype=getattr(torch, ea.get("dtype", "float32")))
        if self.adapters:
            from peft import PeftModel

            (name0, path0), *rest = self.adapters
            model = PeftModel.from_pretrained(model, path0, adapter_name=name0)
            for name, path in rest:
                model.load_adapter(path, adapter_name=name)
        self.model = model.eval()
        import numpy

        pb_utils.Logger.log_info(f"engine_hf ready: numpy {numpy.__version__}, torch {torch.__version__}; {ea}; adapters {[a[0] for a in self.adapters]}")

    @staticmethod
    def _ints(request, name, default=None):
        import torch

        t = pb_utils.get_input_tensor_by_name(request, name)
        if t is None:
            if default is None:
                raise ValueError(f"missing input {name}")
            return [default]
        return torch.from_dlpack(t.to_dlpack()).reshape(-1).tolist()

    def _tensor(self, ids):
        import torch

        t = torch.as_tensor(ids, dtype=torch.int32).reshape(-1).contiguous()
        return pb_utils.Tensor.from_dlpack("output_ids", t.reshape(1, -1) if self.batched else t)

    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()
            try:
                ids = self._ints(request, "input_ids")
                n = self._ints(request, "input_length", len(ids))[0]
                args = dict(ids=ids[:n], max_tokens=self._ints(request, "max_tokens", 16)[0],
                            lora_id=self._ints(request, "lora_id", -1)[0], ignore_eos=bool(self._ints(request, "ignore_eos", 0)[0]),
                            stream=bool(self._ints(request, "stream", 0)[0]))
                if not -1 <= args["lora_id"] < len(self.adapters):
                    raise ValueError(f"lora_id {args['lora_id']}: this repository has adapters {[a[0] for a in self.adapters]}")
                if args["max_tokens"] < 1:
                    raise ValueError(f"max_tokens must be >= 1, got {args['max_tokens']}")
                self._generate(sender, **args)
            except _Cancelled:
                sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
            except Exception as e:  # noqa: BLE001 - a bad request gets an error response, the model stays up
                sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"engine: {e}")), flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        return None

    def _generate(self, sender, ids, max_tokens, lora_id, ignore_eos, stream):
        import contextlib
        import copy

        import torch

        gc = copy.deepcopy(self.model.generation_config)
        gc.do_sample, gc.max_new_tokens, gc.min_new_tokens = False, max_tokens, None
        gc.temperature = gc.top_p = gc.top_k = None
        if ignore_eos:
            gc.eos_token_id = None
        if gc.pad_token_id is None:
            gc.pad_token_id = self.model.config.eos_token_id if self.model.config.eos_token_id is not None else 0
        if lora_id >= 0:
            self.model.set_adapter(self.adapters[lora_id][0])
            ctx = contextlib.nullcontext()
        else:
            ctx = self.model.disable_adapter() if self.adapters else contextlib.nullcontext()
        def send(new, flags=0):
            sender.send(pb_utils.InferenceResponse(output_tensors=[self._tensor(new)]), flags=flags)

        eos = gc.eos_token_id if isinstance(gc.eos_token_id, list) else ([] if gc.eos_token_id is None else [gc.eos_token_id])
        streamer = _StepSender(send, sender.is_cancelled, max_tokens, eos) if stream else None
        x = torch.tensor([ids], dtype=torch.long)
        with torch.inference_mode(), ctx:
            out = self.model.generate(input_ids=x, attention_mask=torch.ones_like(x), generation_config=gc, streamer=streamer)
        if stream:  # every step was sent as it came, the last one with the final flag
            if not streamer.final_sent:  # generation ended some other way: close the stream
                sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        else:  # one response carrying all ids and the final flag: clients (genai-perf) see exactly one response
            send(out[0, len(ids):], pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
