"""Typed notebook parameters: validate what papermill injected before any work starts.

papermill only warns about unknown parameters; a study that is rerun by others must refuse them. Each chapter
declares a spec (name -> type, choices, checks) and calls :func:`validate` on the notebook's globals.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


class ParameterError(ValueError):
    """A notebook parameter is unknown, mistyped or out of range; the message names it."""


@dataclass(frozen=True)
class Param:
    type: type | tuple
    default: Any
    help: str = ""
    choices: tuple | None = None
    check: Callable[[Any], str | None] | None = None  # returns an error message or None


def positive(v) -> str | None:
    return None if v > 0 else "must be > 0"


def non_negative(v) -> str | None:
    return None if v >= 0 else "must be >= 0"


def known_model(v) -> str | None:
    """A model name under data/models or a path to a config.json; else the models module's error message."""
    from . import models as M

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


