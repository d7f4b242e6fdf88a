"""Typed chapter parameters, declared once: validation, the notebook's parameters cell and the CLI flags.

papermill only warns about unknown parameters; a study that is rerun by others must refuse them. Each chapter
declares a spec (name -> :class:`Param`: type, default, help, choices, check) in one place. From it:
:func:`validate` checks what papermill injected (or what the CLI parsed) before any work starts;
:func:`notebook_cell` writes the notebook's parameters cell (``tests`` prove the notebook agrees);
:func:`add_arguments` / :func:`from_args` give the CLI the same flags, defaults and checks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


class ParameterError(ValueError):
    """A notebook parameter is unknown, mistyped or out of range; the message names it."""


@dataclass(frozen=True)
class Param:
    type: type | tuple
    default: Any
    help: str = ""
    choices: tuple | None = None
    check: Callable[[Any], str | None] | None = None  # returns an error message or None
    item: type | None = None  # element type of a list parameter (default: the default's first element's type)


def positive(v) -> str | None:
    return None if v > 0 else "must be > 0"


def non_negative(v) -> str | None:
    return None if v >= 0 else "must be >= 0"


def positive_ints(v) -> str | None:
    """A non-empty list of distinct positive integers (concurrencies, lengths, batch limits)."""
    if not v:
        return "needs at least one value"
    bad = [x for x in v if isinstance(x, bool) or not isinstance(x, int) or x <= 0]
    if bad:
        return f"every value must be a positive integer, got {bad}"
    return "values must be distinct" if len(set(v)) != len(v) else None


def known_model(v) -> str | None:
    """A model name under data/models or a path to a config.json; else the models module's error message."""
    from llmstudy.core import models as M

    try:
        M.config_path(v)
    except M.UnknownModelError as e:
        return str(e)
    return None


IPYTHON_NAMES = {"In", "Out", "get_ipython", "exit", "quit", "open"}


def validate(spec: dict[str, Param], values: dict[str, Any], strict: bool = False) -> dict[str, Any]:
    """Return the parameters (defaults filled in) or raise :class:`ParameterError` naming every bad one.

    With ``strict``, ``values`` is the notebook's namespace right after the parameters cell (and papermill's
    injected cell): any other public name there is an unknown parameter.
    """
    errors = []
    if strict:
        unknown = sorted(k for k in values if not k.startswith("_") and k not in IPYTHON_NAMES and k not in spec)
        if unknown:
            errors.append(f"unknown parameter(s) {unknown}; known: {sorted(spec)}")
    out = {}
    for name, p in spec.items():
        v = values.get(name, p.default)
        types = p.type if isinstance(p.type, tuple) else (p.type,)
        if isinstance(v, bool) and bool not in types:
            errors.append(f"{name}={v!r}: expected {'/'.join(t.__name__ for t in types)}, got bool")
            continue
        if int in types and float not in types and isinstance(v, float) and v.is_integer():
            v = int(v)
        if not isinstance(v, types):
            errors.append(f"{name}={v!r}: expected {'/'.join(t.__name__ for t in types)}, got {type(v).__name__}")
            continue
        if p.choices is not None and v not in p.choices:
            errors.append(f"{name}={v!r}: must be one of {list(p.choices)}")
            continue
        if p.check is not None:
            msg = p.check(v)
            if msg:
                errors.append(f"{name}={v!r}: {msg}")
                continue
        out[name] = v
    return out if not errors else _raise(errors)


def _raise(errors):
    raise ParameterError("invalid notebook parameter(s): " + "; ".join(errors))




# --- one home per parameter: notebook cells and CLI flags are derived from a chapter's spec -------------------------
def _py_type(p: Param) -> str:
    types = p.type if isinstance(p.type, tuple) else (p.type,)
    names = [t.__name__ if t is not type(None) else "None" for t in types]
    return names[0] if len(names) == 1 else " | ".join(names)


def notebook_cell(spec: dict[str, Param], header: str = "") -> str:
    """The source of a notebook's ``parameters`` cell, written from the spec (names, annotations, defaults)."""
    lines = [header] if header else []
    # papermill's parser reads ``name: type = value`` only for a plain type name; a union goes into the comment
    lines += [f"{name}: {_py_type(p)} = {p.default!r}" if "|" not in _py_type(p) else f"{name} = {p.default!r}  # {_py_type(p)}"
              for name, p in spec.items()]
    return "\n".join(lines)


def parameters_cell(nb_path) -> tuple[int, str]:
    """Index and source of the cell tagged ``parameters`` in a notebook file."""
    import json
    from pathlib import Path

    nb = json.loads(Path(nb_path).read_text())
    for i, cell in enumerate(nb["cells"]):
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            src = cell["source"]
            return i, src if isinstance(src, str) else "".join(src)
    raise ParameterError(f"{nb_path}: no cell tagged 'parameters'")


def notebook_defaults(nb_path) -> dict[str, Any]:
    """The values the notebook's parameters cell assigns (executed in an empty namespace)."""
    ns: dict[str, Any] = {}
    exec(compile(parameters_cell(nb_path)[1], str(nb_path), "exec"), {}, ns)  # noqa: S102 - our own notebook
    return {k: v for k, v in ns.items() if not k.startswith("__")}


def notebook_mismatches(nb_path, spec: dict[str, Param]) -> list[str]:
    """Where a notebook's parameters cell disagrees with its spec (names or defaults); empty when they agree."""
    got = notebook_defaults(nb_path)
    out = [f"{k}: in the notebook, not in the spec" for k in got if k not in spec]
    out += [f"{k}: in the spec, not in the notebook" for k in spec if k not in got]
    out += [f"{k}: notebook {got[k]!r} != spec {spec[k].default!r}" for k in spec if k in got and got[k] != spec[k].default]
    return out


def write_notebook_cell(nb_path, spec: dict[str, Param], header: str = "") -> bool:
    """Rewrite the notebook's parameters cell from the spec; True when the file changed."""
    import json
    from pathlib import Path

    path = Path(nb_path)
    nb = json.loads(path.read_text())
    i, old = parameters_cell(path)
    first = old.splitlines()[0] if old.startswith("#") and not header else header
    new = notebook_cell(spec, first)
    if new == old:
        return False
    nb["cells"][i]["source"] = new.splitlines(keepends=True)
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    return True


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_arguments(parser, spec: dict[str, Param], names=None, exclude=(), positional=()) -> None:
    """Add one CLI flag per spec entry (type, default, choices and help from the spec).

    Lists become ``nargs`` flags typed by their default's elements (or ``Param.item``); booleans become
    ``--x/--no-x``; a value that may be None defaults to None. ``positional`` names become positional arguments
    (optional, with the spec's default). Values are validated with :func:`from_args` after parsing.
    """
    import argparse

    for name, p in spec.items():
        if (names is not None and name not in names) or name in exclude:
            continue
        types = p.type if isinstance(p.type, tuple) else (p.type,)
        kw: dict[str, Any] = {"default": p.default, "help": p.help + (f" (default: {p.default!r})" if p.default not in ("", None, []) else "")}
        if bool in types:
            kw["action"] = argparse.BooleanOptionalAction
        elif list in types:
            item = p.item or (type(p.default[0]) if p.default else str)
            kw.update(nargs="*" if not p.default else "+", type=item)
            if p.choices:
                kw["choices"] = p.choices
        else:
            scalar = [t for t in types if t is not type(None)]
            kw["type"] = float if float in scalar else scalar[0]
            if p.choices:
                kw["choices"] = p.choices
        if name in positional:
            kw.pop("action", None)
            parser.add_argument(name, nargs="?" if kw.get("nargs") is None else kw.pop("nargs"), **kw)
        else:
            parser.add_argument(flag(name), dest=name, **kw)


def from_args(spec: dict[str, Param], args, names=None) -> dict[str, Any]:
    """The validated parameters from an argparse namespace built by :func:`add_arguments`."""
    values = {k: getattr(args, k) for k in spec if (names is None or k in names) and hasattr(args, k)}
    sub = {k: p for k, p in spec.items() if k in values}
    return validate(sub, values)
