"""Report tables: the one helper every page uses to turn a tidy frame into a table a reader can read.

Rules (the reader's check enforces the visible ones): at most ``MAX_COLUMNS`` columns, human headers with units,
counts as integers with thousands separators, a fixed number of decimals per column, "—" (or a named outcome such as
"OOM") instead of NaN/None, no index column. Long tables go into a collapsed ``<details>`` block.

    from llmstudy.publishing.tables import Col, table
    table(df, [Col("model", "Model"), Col("kv_tokens", "KV tokens", kind="int"),
               Col("error_pct", "Error (%)", decimals=2, signed=True)],
          caption="…", collapsed=False)

``table`` returns an object that renders as HTML in the book and as plain text in a terminal or papermill output.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from numbers import Integral, Real

MAX_COLUMNS = 8
MISSING = "—"
TABLE_CLASS = "llmstudy-table"


@dataclass(frozen=True)
class Col:
    """One visible column: ``key`` in the frame, ``header`` shown (with its unit), and how values print.

    kind: "auto" (ints as ints, floats with ``decimals``), "int" (rounded, thousands separators), "float",
    "pct" (float followed by " %"), "text", "code" (monospace), "bool" ("yes"/"no").
    ``missing`` replaces NaN/None in this column (e.g. "OOM", "not run"); ``signed`` prints a leading "+".
    """

    key: str
    header: str
    kind: str = "auto"
    decimals: int = 2
    signed: bool = False
    missing: str = MISSING
    align: str | None = None  # "left" / "right"; default: numbers right, text left

    def __post_init__(self):
        if self.kind not in ("auto", "int", "float", "pct", "text", "code", "bool"):
            raise ValueError(f"Col({self.key!r}): unknown kind {self.kind!r}")


def _is_missing(v) -> bool:
    if v is None:
        return True
    try:
        import pandas as pd

        if v is pd.NA or v is pd.NaT:
            return True
    except ImportError:  # pragma: no cover
        pass
    if isinstance(v, float) and math.isnan(v):
        return True
    return isinstance(v, str) and v.strip().lower() in ("", "nan", "none", "n/a", "<na>")


def fmt_value(v, col: Col) -> str:
    """One cell as text, by the column's rules."""
    if _is_missing(v):
        return col.missing
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):
        try:
            v = v.item()  # numpy scalars
        except (ValueError, AttributeError):
            pass
    kind = col.kind
    if kind == "bool" or isinstance(v, bool):
        return "yes" if v else "no"
    if kind in ("text", "code"):
        return str(v)
    if kind == "auto":
        if isinstance(v, Integral):
            kind = "int"
        elif isinstance(v, Real):
            kind = "int" if float(v).is_integer() and col.decimals == 0 else "float"
        else:
            return str(v)
    if not isinstance(v, Real):
        try:
            v = float(v)
        except (TypeError, ValueError):
            return str(v)
    sign = "+" if col.signed else ""
    if kind == "int":
        return f"{round(v):{sign},d}"
    text = f"{v:{sign},.{col.decimals}f}"
    return text + " %" if kind == "pct" else text


def _numeric(col: Col, values) -> bool:
    if col.kind in ("int", "float", "pct"):
        return True
    if col.kind in ("text", "code", "bool"):
        return False
    present = [v.item() if hasattr(v, "item") and not isinstance(v, (str, bytes)) else v for v in values if not _is_missing(v)]
    return bool(present) and all(isinstance(v, Real) and not isinstance(v, bool) for v in present)


class Table:
    """A formatted table: ``_repr_html_`` for the book, ``__repr__`` (aligned text) elsewhere, ``rows`` for tests."""

    def __init__(self, headers, rows, aligns, caption="", collapsed=False, summary=""):
        self.headers = list(headers)
        self.rows = [list(r) for r in rows]
        self.aligns = list(aligns)
        self.caption = caption
        self.collapsed = collapsed
        self.summary = summary

    def _repr_html_(self) -> str:
        esc = html.escape
        head = "".join(f'<th style="text-align:{a}">{esc(h)}</th>' for h, a in zip(self.headers, self.aligns))
        body = "".join(
            "<tr>" + "".join(f'<td style="text-align:{a}">{c}</td>' for c, a in zip(r, self.aligns)) + "</tr>"
            for r in ((self._cell(c, i) for i, c in enumerate(row)) for row in self.rows)
        )
        cap = f"<caption>{esc(self.caption)}</caption>" if self.caption else ""
        out = f'<table class="{TABLE_CLASS}">{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
        if self.collapsed:
            summary = self.summary or f"{self.caption or 'Table'} ({len(self.rows)} rows)"
            out = f'<details class="llmstudy-details"><summary>{esc(summary)}</summary>{out}</details>'
        return out

    def _cell(self, text: str, i: int) -> str:
        return f"<code>{html.escape(text)}</code>" if self._code[i] else html.escape(text)

    def __repr__(self) -> str:
        widths = [max([len(h)] + [len(r[i]) for r in self.rows]) for i, h in enumerate(self.headers)]

        def line(cells):
            return "  ".join(c.rjust(w) if a == "right" else c.ljust(w) for c, w, a in zip(cells, widths, self.aligns)).rstrip()

        out = [line(self.headers), line(["-" * w for w in widths])] + [line(r) for r in self.rows]
        return (self.caption + "\n" if self.caption else "") + "\n".join(out)

    def __len__(self) -> int:
        return len(self.rows)


def table(df, cols, caption: str = "", collapsed: bool | None = None, collapse_over: int = 15, summary: str = "",
          max_columns: int = MAX_COLUMNS) -> Table:
    """Format ``df`` (a pandas DataFrame or a list of dicts) for a page.

    Only the columns named in ``cols`` are shown, in that order (the index is never shown: reset it first if it holds
    data). ``collapsed`` defaults to "more than ``collapse_over`` rows". More than ``max_columns`` columns is an
    error: pivot, split or drop constant columns into the caption instead.
    """
    cols = [c if isinstance(c, Col) else Col(c, c) for c in cols]
    if len(cols) > max_columns:
        raise ValueError(f"{len(cols)} columns ({', '.join(c.header for c in cols)}): a page table shows at most "
                         f"{max_columns}; pivot it, split it or move constant columns into the caption")
    records = df.to_dict("records") if hasattr(df, "to_dict") else list(df)
    missing = [c.key for c in cols if records and c.key not in records[0]]
    if missing:
        raise KeyError(f"table: no column {missing} (have {sorted(records[0])})")
    rows, aligns, code = [], [], []
    for c in cols:
        values = [r.get(c.key) for r in records]
        aligns.append(c.align or ("right" if _numeric(c, values) else "left"))
        code.append(c.kind == "code")
    for r in records:
        rows.append([fmt_value(r.get(c.key), c) for c in cols])
    t = Table([c.header for c in cols], rows, aligns, caption=caption,
              collapsed=len(rows) > collapse_over if collapsed is None else collapsed, summary=summary)
    t._code = code
    return t
