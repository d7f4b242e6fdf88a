"""Small helpers for the book's notebooks."""

from __future__ import annotations


class Text(str):
    """A string that renders without quotes when glued into the page text (myst-nb shows ``repr``)."""

    def __repr__(self) -> str:
        return str(self)


def glue_text(name: str, value: str) -> None:
    from myst_nb import glue

    glue(name, Text(value), display=False)
