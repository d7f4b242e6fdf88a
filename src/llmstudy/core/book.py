"""Small helpers for the book's notebooks."""

from __future__ import annotations


class Text(str):
    """A string that renders without quotes when glued into the page text (myst-nb shows ``repr``)."""

    def __repr__(self) -> str:
        return str(self)


def glue_text(name: str, value: str) -> None:
    from myst_nb import glue

    glue(name, Text(value), display=False)


# --- provenance: every figure and table names the records it came from ---------------------------------------------
APPENDIX = "../runs.html"  # the run-records appendix, seen from a chapter page (notebooks/<chapter>.html)
PROVENANCE_CLASS = "llmstudy-provenance"


def run_anchor(experiment: str, run_id: str) -> str:
    """The HTML id of a record's section in the appendix (docutils' id rules, so Sphinx keeps it as is)."""
    from docutils.nodes import make_id

    return make_id(f"run-{experiment}-{run_id}")


def record_models(experiment: str | None, run_ids) -> list[str]:
    """The models that the records ``experiment/run_id`` measured (their ``model`` parameter), sorted; records
    without one, or that cannot be read, add nothing. A figure's source line names them, so a page never shows
    another model's measurements unnamed (forks)."""
    from llmstudy.core.paths import runs_dir
    from llmstudy.core.records import RecordError, load_record, run_models

    found = set()
    for r in run_ids:
        try:
            found.update(run_models(load_record(runs_dir() / str(experiment) / str(r))))
        except (RecordError, OSError, ValueError):
            continue
    return sorted(found)


def provenance_html(experiment: str | None = None, run_ids=(), computed: str = "", published: str = "") -> str:
    """The provenance line as HTML: linked run ids, and what else the figure/table rests on."""
    import html

    ids = sorted({str(r) for r in run_ids if r is not None and str(r) not in ("", "nan")})
    parts = []
    if ids:
        links = ", ".join(f'<a href="{APPENDIX}#{run_anchor(experiment, r)}"><code>{html.escape(experiment)}/{html.escape(r)}</code></a>' for r in ids)
        models = record_models(experiment, ids)
        named = f" (model{'s' if len(models) > 1 else ''} {', '.join(f'<code>{html.escape(m)}</code>' for m in models)})" if models else ""
        parts.append(f"run record{'s' if len(ids) > 1 else ''} {links}{named}")
    elif experiment:
        parts.append(f"no run record in <code>data/runs/{html.escape(experiment)}/</code> matches")
    if computed:
        parts.append(f"computed from {html.escape(computed)}")
    if published:
        parts.append(f"published: {html.escape(published)}")
    if not parts:
        raise ValueError("provenance needs run ids, a computation or a published source")
    data = " ".join(f"{experiment}/{r}" for r in ids)
    return f'<p class="{PROVENANCE_CLASS}" data-runs="{html.escape(data)}">Source: {"; ".join(parts)}.</p>'


class Provenance:
    """Displays as the HTML line in the book and as plain text elsewhere (papermill outputs, terminals)."""

    def __init__(self, html_text: str):
        self.html_text = html_text

    def _repr_html_(self) -> str:
        return self.html_text

    def __repr__(self) -> str:
        import re

        return re.sub(r"<[^>]+>", "", self.html_text)


def provenance(experiment: str | None = None, run_ids=(), computed: str = "", published: str = "") -> None:
    """Show, under a figure or table, the run ids it came from (linked to the appendix) or what it was computed from.

    Call it in the same cell right after ``plt.show()`` / ``display(table)``; the book's tests require one in every
    cell that outputs a figure or a table.
    """
    from IPython.display import display

    display(Provenance(provenance_html(experiment, run_ids, computed, published)))


# --- a chapter rendered for a model the study has not measured (forks) ---------------------------------------------
def not_measured(model_title: str, command: str) -> str:
    """The sentence a page shows in place of a measured number for a model without a run record of its own."""
    return f"not measured for {model_title} yet (measure it on a GPU runner: `{command}`)"
