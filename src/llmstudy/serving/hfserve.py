"""``transformers serve`` with the two things a serving benchmark needs that its CLI lacks (transformers 5.17).

* ``--random-weights SEED``: build the model from the folder's ``config.json`` with random weights on the device
  (the counterpart of vLLM's and SGLang's ``--load-format dummy``); no checkpoint is read.
* ``ignore_eos`` on ``/v1/completions``: the endpoint rejects fields outside OpenAI's schema (422), and a load
  tool that fixes output lengths sends ``ignore_eos`` (and ``repetition_penalty: 1.0``). Both are accepted here;
  ``ignore_eos`` sets the request's ``eos_token_id`` to -1, the continuous-batching scheduler's "no EOS", so every
  request runs to ``max_tokens``; ``repetition_penalty`` is applied as given (1.0 changes nothing).

Usage: ``python -m llmstudy.serving.hfserve MODEL_DIR [--random-weights SEED] [transformers serve options...]``. Runs
under the engine's Python and imports nothing else from llmstudy.
"""

from __future__ import annotations

import argparse
import sys

TAG = "[llmstudy hfserve]"


def accept_benchmark_fields() -> None:
    """Let ``/v1/completions`` take ``ignore_eos`` and ``repetition_penalty`` and honour them."""
    from transformers.cli.serving import completion as C

    class Params(C.TransformersTextCompletionCreateParams, total=False):
        ignore_eos: bool
        repetition_penalty: float

    build = C.CompletionHandler._build_generation_config

    def build_generation_config(self, body, model_generation_config, use_cb=False):
        g = build(self, body, model_generation_config, use_cb=use_cb)
        if body.get("ignore_eos"):
            g.eos_token_id = -1
        if body.get("repetition_penalty") is not None:
            g.repetition_penalty = float(body["repetition_penalty"])
        return g

    C.CompletionHandler._valid_params_class = Params
    C.CompletionHandler._build_generation_config = build_generation_config


def random_weights(seed: int) -> None:
    """Make the model manager build models from their config with random weights (seeded) instead of loading them."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.cli.serving import model_manager as MM

    def load(self, model_id_and_revision, tqdm_class=None, progress_callback=None, gguf_file=None):
        model_id = model_id_and_revision.split("@", 1)[0]
        cfg = AutoConfig.from_pretrained(model_id, trust_remote_code=self.trust_remote_code)
        dtype = self.dtype if isinstance(self.dtype, torch.dtype) else getattr(cfg, "dtype", None) or torch.float32
        device = self.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if isinstance(device, int):
            device = f"cuda:{device}"
        torch.manual_seed(seed)
        kw = {"attn_implementation": self.attn_implementation} if self.attn_implementation else {}
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(cfg, dtype=dtype, **kw)
        n = sum(p.numel() for p in model.parameters())
        print(f"{TAG} random weights: {n:,} parameters, dtype {dtype}, device {device}, seed {seed}", flush=True)
        return model.eval()

    MM.ModelManager._load_model = load


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m llmstudy.serving.hfserve", description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="model folder (config.json and tokenizer; no weights needed with --random-weights)")
    ap.add_argument("--random-weights", type=int, default=None, metavar="SEED")
    ours, rest = ap.parse_known_args(argv)
    accept_benchmark_fields()
    if ours.random_weights is not None:
        random_weights(ours.random_weights)
    from transformers.cli.transformers import main as transformers_main

    print(f"{TAG} transformers serve {ours.model} {' '.join(rest)}", flush=True)
    sys.argv = ["transformers", "serve", ours.model, *rest]
    transformers_main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
