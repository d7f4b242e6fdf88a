"""Typed notebook parameters: validate what papermill injected before any work starts.

papermill only warns about unknown parameters; a study that is rerun by others must refuse them. Each chapter
declares a spec (name -> type, choices, checks) and calls :func:`validate` on the notebook's globals.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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
    item_choices: tuple | None = None  # for lists: allowed items
    extra: dict = field(default_factory=dict)


def positive(v) -> str | None:
    return None if v > 0 else "must be > 0"


def validate(spec: dict[str, Param], values: dict[str, Any]) -> dict[str, Any]:
    """Return the parameters (defaults filled in) or raise :class:`ParameterError` naming every bad one."""
    errors = []
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
        if isinstance(v, (list, tuple)) and p.item_choices is not None:
            bad = [x for x in v if x not in p.item_choices]
            if bad:
                errors.append(f"{name}: unknown item(s) {bad}; allowed: {list(p.item_choices)}")
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


def check_unknown(spec: dict[str, Param], injected: dict[str, Any]) -> None:
    unknown = sorted(set(injected) - set(spec))
    if unknown:
        raise ParameterError(f"unknown notebook parameter(s) {unknown}; known: {sorted(spec)}")


def injected_parameters(namespace: dict) -> dict:
    """The names papermill injected: those it recorded in the notebook, else every spec name in the namespace."""
    return {k: v for k, v in namespace.items() if not k.startswith("_")}
