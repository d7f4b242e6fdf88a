"""Build what the browser calculators load, at book-build time: ``python -m llmstudy.calc.bundle OUT_DIR``.

* ``llmstudy-calc.zip``: the standard-library modules of the package (:data:`SHIPPED`: this package without this
  builder, :mod:`llmstudy.core.arch`, :mod:`llmstudy.core.paths`, empty package ``__init__`` files) and every shipped
  model config (``data/models/*/config.json`` + ``SOURCE.md``), copied from the checkout, never by hand. Entries
  carry a fixed date, so an unchanged tree gives the same bytes.
* ``measured.json``: the measured cases, precomputed from ``data/runs`` with the library: every memory_accounting row
  (setup, measured allocator peak) and every context_limits row with its planner deployment (the chapter's
  ``row_deployment``) and the tokens vLLM logged, so the page can put the measured value and the error beside a
  prediction of the same configuration.

Unlike the rest of :mod:`llmstudy.calc`, this module may use pandas and the chapters (it never ships).
"""

from __future__ import annotations

import io
import json
import math
import sys
import zipfile
from pathlib import Path

from llmstudy.core.paths import models_dir, repo_root

SHIPPED = ("llmstudy/__init__.py", "llmstudy/core/__init__.py", "llmstudy/core/arch.py", "llmstudy/core/paths.py",
           "llmstudy/calc/__init__.py", "llmstudy/calc/tensors.py", "llmstudy/calc/models.py", "llmstudy/calc/memory.py",
           "llmstudy/calc/kv.py", "llmstudy/calc/browser.py")
ZIP_NAME, MEASURED_NAME = "llmstudy-calc.zip", "measured.json"
_DATE = (2020, 1, 1, 0, 0, 0)


def package_zip() -> bytes:
    """The zip the page unpacks into Pyodide: ``src/llmstudy/...`` modules and ``root/`` (a study root with the configs)."""
    src = Path(__file__).resolve().parents[2]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        def add(arc: str, data: bytes):
            info = zipfile.ZipInfo(arc, _DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, data)

        for rel in SHIPPED:
            add(f"src/{rel}", (src / rel).read_bytes())
        add("root/_config.yml", b"# the calculators' study root (configs only)\n")
        for cfg in sorted(models_dir().glob("*/config.json")):
            add(f"root/data/models/{cfg.parent.name}/config.json", cfg.read_bytes())
            source = cfg.parent / "SOURCE.md"
            if source.is_file():
                add(f"root/data/models/{cfg.parent.name}/SOURCE.md", source.read_bytes())
    return buf.getvalue()


def _num(v):
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return v
    return None if math.isnan(f) else f


def measured_memory() -> list[dict]:
    """Every memory_accounting row: the setup it measured and its allocator peak."""
    from llmstudy.core.records import results

    df = results("memory_accounting")
    out = []
    for _, r in df.iterrows():
        lora_r = _num(r.get("lora_r"))
        out.append({"run_id": r["run_id"], "gpu": r["gpu"], "model": r["model"], "setup": r["setup"], "outcome": r["outcome"],
                    "lora_r": int(lora_r) if lora_r is not None else None,
                    "peak_allocated_GiB": _num(r.get("peak_allocated_GiB")), "method": r["method"], "optimizer": r["optimizer"],
                    "weight_dtype": r["weight_dtype"], "seq_len": int(r["seq_len"]), "micro_batch": int(r["micro_batch"]),
                    "grad_ckpt": bool(r["grad_ckpt"])})
    return out


def measured_capacity() -> list[dict]:
    """Every context_limits row the planner models: its deployment's key and the tokens vLLM logged."""
    from llmstudy.calc.browser import deployment_key
    from llmstudy.chapters.context_limits.analysis import row_deployment
    from llmstudy.core.records import results

    df = results("context_limits")
    out = []
    for _, r in df.iterrows():
        row = r.to_dict()
        try:
            dep = row_deployment(row)
        except ValueError:
            continue
        if dep is None:
            continue
        out.append({"run_id": row["run_id"], "config": row.get("config"), "gpu": row.get("gpu"), "outcome": row["outcome"],
                    "kv_cache_tokens": _num(row.get("kv_cache_tokens")), "label": dep.label(), "key": deployment_key(dep)})
    return out


def measured() -> dict:
    return {"memory": measured_memory(), "capacity": measured_capacity()}


def write(out: Path) -> list[Path]:
    """Write the zip and the measured cases into ``out`` (files left untouched when their bytes are unchanged)."""
    out.mkdir(parents=True, exist_ok=True)
    files = {ZIP_NAME: package_zip(), MEASURED_NAME: json.dumps(measured(), indent=1, sort_keys=True).encode()}
    paths = []
    for name, data in files.items():
        p = out / name
        if not p.is_file() or p.read_bytes() != data:
            p.write_bytes(data)
        paths.append(p)
    return paths


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0]) if args else repo_root() / "book" / "_static" / "calc" / "gen"
    for p in write(out):
        print(f"{p} ({p.stat().st_size:,} B)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


def snippet(kind: str, depth: int = 1, **data) -> str:
    """The HTML that puts one calculator on a page: ``kind`` "memory" or "capacity", ``data`` its first inputs
    (``model``, ``method``, ``gpu``, ``num_gpus``, ``kv_dtype``, ``version``...), ``depth`` how many folders below the
    book's root the page sits (a chapter notebook: 1). A chapter's code cell shows it with ``IPython.display.HTML``."""
    import html

    if kind not in ("memory", "capacity"):
        raise ValueError(f"kind must be 'memory' or 'capacity', got {kind!r}")
    up = "../" * depth
    attrs = "".join(f' data-{k.replace("_", "-")}="{html.escape(str(v))}"' for k, v in data.items() if v is not None)
    return (f'<div class="llmstudy-calc" data-calc="{kind}"{attrs}></div>\n'
            f'<link rel="stylesheet" href="{up}_static/calc/calc.css">\n<script src="{up}_static/calc/calc.js"></script>\n')
