"""Triton Python-backend model: the ensemble's "engine" step as vLLM's async engine (in-flight batching).

Copied by the repository generator into ``<repo>/engine/1/model.py``. It plays the part the ``tensorrt_llm`` backend
plays in the article's ensemble: token ids in, token ids out, decoupled (one response per decoding step when
``stream`` is 1). What differs from the TensorRT-LLM backend is the engine: vLLM's ``AsyncLLM`` (continuous batching,
paged KV cache, LoRA per request) instead of a compiled TensorRT engine with its own batch manager.

Every tensor crosses the stub by DLPack, never numpy: Triton 2.51's Python-backend stub is built for numpy 1, and
vLLM needs numpy 2 (with numpy 2 the stub's numpy path corrupts outputs). Inputs: input_ids, input_length, max_tokens,
lora_id, ignore_eos, stream (INT32). Output: output_ids (INT32).

Model-config parameters (string values):
  engine_args  JSON of vLLM engine arguments (model, dtype, max_model_len, max_num_seqs, enable_lora, ...)
  adapters     JSON list of [name, path]; lora_id i selects adapters[i], -1 the base model
"""

import asyncio
import json
import multiprocessing
import os
import sys
import threading
import uuid

import triton_python_backend_utils as pb_utils

# The stub's embedded interpreter starts in the C locale (ASCII file encoding: torch's templates fail to load) and
# ignores PYTHONPATH: switch to UTF-8 and put PYTHONPATH (vLLM's staged site first) on sys.path ourselves.
try:
    import locale

    locale.setlocale(locale.LC_CTYPE, "C.UTF-8")
except Exception:  # noqa: BLE001 - a missing locale leaves the default
    pass


def _add_paths():
    """The repository generator's llmstudy_paths.json: its "first", then PYTHONPATH's entries (as a normal
    interpreter would put them before site-packages), then its "then"."""
    f = os.path.join(os.path.dirname(os.path.abspath(__file__)), "llmstudy_paths.json")
    d = {}
    if os.path.exists(f):
        with open(f) as fh:
            d = json.load(fh)
    env = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    paths = d.get("first", []) + env + d.get("then", [])
    sys.path[:0] = [p for p in dict.fromkeys(paths) if p not in sys.path]


_add_paths()


def _param(cfg, key, default=""):
    return cfg.get("parameters", {}).get(key, {}).get("string_value", default)


class TritonPythonModel:
    def initialize(self, args):
        import torch  # noqa: F401  (DLPack on CPU tensors; CUDA is never initialised in this process)
        from vllm import SamplingParams  # noqa: F401
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        self.model_config = cfg = json.loads(args["model_config"])
        if not pb_utils.using_decoupled_model_transaction_policy(cfg):
            raise pb_utils.TritonModelException("engine must be decoupled (model_transaction_policy { decoupled: true })")
        # spawn, where vLLM uses it, must start a Python interpreter, not this stub binary
        py = os.environ.get("LLMSTUDY_ENGINE_PYTHON") or os.path.join(sys.base_prefix, "bin", "python3")
        if os.path.exists(py):
            multiprocessing.set_executable(py)
        self.batched = int(cfg.get("max_batch_size", 0)) > 0
        engine_args = json.loads(_param(cfg, "engine_args", "{}"))
        self.adapters = [tuple(a) for a in json.loads(_param(cfg, "adapters", "[]"))]
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run_loop, daemon=True)
        self.thread.start()
        self.engine = AsyncLLM.from_engine_args(AsyncEngineArgs(**engine_args))
        self.inflight = 0
        self.lock = threading.Lock()
        pb_utils.Logger.log_info(f"engine_vllm ready: {engine_args}; adapters {[a[0] for a in self.adapters]}")

    def _run_loop(self):
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    @staticmethod
    def _ints(request, name, default=None):
        t = pb_utils.get_input_tensor_by_name(request, name)
        if t is None:
            if default is None:
                raise ValueError(f"missing input {name}")
            return [default]
        import torch

        return torch.from_dlpack(t.to_dlpack()).reshape(-1).tolist()

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
            except Exception as e:  # a bad request gets an error response, the model stays up
                sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(e))),
                            flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
                continue
            asyncio.run_coroutine_threadsafe(self._generate(sender, **args), self.loop)
        return None

    async def _generate(self, sender, ids, max_tokens, lora_id, ignore_eos, stream):
        import torch
        from vllm import SamplingParams
        from vllm.lora.request import LoRARequest
        from vllm.sampling_params import RequestOutputKind

        rid = uuid.uuid4().hex
        lora = None
        if lora_id >= 0:
            name, path = self.adapters[lora_id]
            lora = LoRARequest(name, lora_id + 1, path)
        sp = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=ignore_eos, detokenize=False,
                            output_kind=RequestOutputKind.DELTA if stream else RequestOutputKind.FINAL_ONLY)
        with self.lock:
            self.inflight += 1
        try:
            final = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
            done = False
            async for out in self.engine.generate({"prompt_token_ids": ids}, sp, rid, lora_request=lora):
                if sender.is_cancelled():
                    await self.engine.abort(rid)
                    break
                new = list(out.outputs[0].token_ids)
                if new:  # the shape the config declares: [1, n] under max_batch_size > 0, else [n]
                    ids_out = torch.tensor(new, dtype=torch.int32)
                    t = pb_utils.Tensor.from_dlpack("output_ids", ids_out.reshape(1, -1) if self.batched else ids_out)
                    # the last tokens carry the final flag: no empty closing response for clients to count
                    sender.send(pb_utils.InferenceResponse(output_tensors=[t]), flags=final if out.finished else 0)
                    done = out.finished
            if not done:
                sender.send(flags=final)
        except Exception as e:
            sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"engine: {e}")),
                        flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        finally:
            with self.lock:
                self.inflight -= 1

    def finalize(self):
        try:
            self.engine.shutdown()
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
