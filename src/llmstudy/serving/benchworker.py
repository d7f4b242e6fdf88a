"""A long-lived ``vllm bench serve``: imports vLLM once and runs one benchmark per line read from stdin.

Spawning ``vllm bench serve`` per point costs ~20 s of imports on the GPU host (more than many points take);
this worker runs the same code (``vllm.benchmarks.serve.add_cli_args`` + ``main``) with the same arguments.
Protocol: it prints ``READY``; each stdin line is ``{"args": [...], "console": path, "prompts": path}``; it answers
``OK`` or ``ERR <reason>`` on its stdout and writes the benchmark's own output to ``console``. Runs under vLLM's
Python, so it imports nothing from llmstudy.

``prompts`` (optional) receives a digest of the exact requests the benchmark sent after all of its own prompt
adjustments (the dataset's re-encoding, the alignment to the server's tokenizer): the SHA-256 of every prompt's
token ids under the benchmark's tokenizer, in order. Two engines given the same digest were sent the same tokens.
"""

import contextlib
import hashlib
import json
import sys
import traceback

MARK = "@@llmstudy-bench@@ "


def prompt_digest(requests, tokenizer) -> dict:
    """Count and SHA-256 of the requests' prompt token ids (text prompts encoded without special tokens)."""
    ids = []
    for r in requests:
        p = r.prompt
        ids.append(list(p) if isinstance(p, list) else tokenizer.encode(p, add_special_tokens=False))
    lens = [len(x) for x in ids]
    return {"prompt_token_ids_sha256": hashlib.sha256(json.dumps(ids).encode()).hexdigest(), "prompts": len(ids), "prompt_tokens_min": min(lens, default=0), "prompt_tokens_max": max(lens, default=0)}


def _digesting(serve_module, sink: dict):
    """Wrap ``vllm.benchmarks.serve.benchmark`` so every run leaves the digest of the requests it was given in ``sink``."""
    original = serve_module.benchmark

    async def benchmark(*args, **kwargs):
        sink.clear()
        sink.update(prompt_digest(kwargs["input_requests"], kwargs["tokenizer"]))
        return await original(*args, **kwargs)

    serve_module.benchmark = benchmark


def main() -> int:
    import vllm.benchmarks.serve as serve_module
    from vllm.benchmarks.serve import add_cli_args
    from vllm.benchmarks.serve import main as bench_main
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    digest: dict = {}
    _digesting(serve_module, digest)

    proto = sys.stdout  # vLLM's loggers also write here: answers carry a marker the client looks for
    print(MARK + "READY", file=proto, flush=True)
    for line in sys.stdin:
        job = json.loads(line)
        parser = FlexibleArgumentParser()
        add_cli_args(parser)
        status = "OK"
        digest.clear()
        with open(job["console"], "w") as con, contextlib.redirect_stdout(con), contextlib.redirect_stderr(con):
            print("$ vllm bench serve " + " ".join(job["args"]), flush=True)
            try:
                bench_main(parser.parse_args(job["args"]))
            except BaseException as e:  # argparse exits with SystemExit; report, keep serving
                traceback.print_exc()
                status = "ERR " + repr(e)[:300].replace("\n", " ")
        if job.get("prompts") and digest:
            with open(job["prompts"], "w") as f:
                json.dump(digest, f)
        print(MARK + status, file=proto, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
