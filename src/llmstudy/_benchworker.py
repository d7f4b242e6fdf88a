"""A long-lived ``vllm bench serve``: imports vLLM once and runs one benchmark per line read from stdin.

Spawning ``vllm bench serve`` per point costs ~20 s of imports on the GPU host (more than many points take);
this worker runs the same code (``vllm.benchmarks.serve.add_cli_args`` + ``main``) with the same arguments.
Protocol: it prints ``READY``; each stdin line is ``{"args": [...], "console": path}``; it answers ``OK`` or
``ERR <reason>`` on its stdout and writes the benchmark's own output to ``console``. Runs under vLLM's Python, so
it imports nothing from llmstudy.
"""

import contextlib
import json
import sys
import traceback

MARK = "@@llmstudy-bench@@ "


def main() -> int:
    from vllm.benchmarks.serve import add_cli_args
    from vllm.benchmarks.serve import main as bench_main
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    proto = sys.stdout  # vLLM's loggers also write here: answers carry a marker the client looks for
    print(MARK + "READY", file=proto, flush=True)
    for line in sys.stdin:
        job = json.loads(line)
        parser = FlexibleArgumentParser()
        add_cli_args(parser)
        status = "OK"
        with open(job["console"], "w") as con, contextlib.redirect_stdout(con), contextlib.redirect_stderr(con):
            print("$ vllm bench serve " + " ".join(job["args"]), flush=True)
            try:
                bench_main(parser.parse_args(job["args"]))
            except BaseException as e:  # argparse exits with SystemExit; report, keep serving
                traceback.print_exc()
                status = "ERR " + repr(e)[:300].replace("\n", " ")
        print(MARK + status, file=proto, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
