"""One look for every figure in the book: crisp (SVG), full text width, colour-blind-safe colours, legends outside
the data, reference lines for published numbers and rules of thumb.

Every notebook calls ``setup()`` once (in its imports cell). Figures then use ``PALETTE`` / ``color(i)`` and
``ref_line`` / ``legend_outside`` rather than ad-hoc styling.
"""

from __future__ import annotations

# Okabe & Ito (2008), "Color Universal Design": distinguishable with every common colour-vision deficiency.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
# An ordered (sequential) ramp for ordered levels such as batch sizes: distinct in lightness as well as hue.
SEQUENTIAL = ("#fde725", "#7ad151", "#22a884", "#2a788e", "#414487", "#440154")

WIDTH_IN = 10.0  # the text column at 1400 px is ~ 800 px; SVG scales to it


def color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def ramp(n: int) -> list[str]:
    """``n`` colours from the sequential ramp, light to dark (n <= 6 distinct; more repeat the ends evenly)."""
    if n <= 0:
        return []
    if n == 1:
        return [SEQUENTIAL[3]]
    return [SEQUENTIAL[round(i * (len(SEQUENTIAL) - 1) / (n - 1))] for i in range(n)]


def setup() -> None:
    """Matplotlib/seaborn defaults for the book, and SVG output in notebooks."""
    import matplotlib as mpl

    cjk = _cjk_font()
    mpl.rcParams.update({
        "figure.figsize": (WIDTH_IN, 4.8),
        "figure.dpi": 110,
        "savefig.dpi": 200,
        "figure.constrained_layout.use": True,
        "axes.prop_cycle": mpl.cycler(color=list(PALETTE)),
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "axes.titlesize": 12,
        "axes.titleweight": "bold",
        "axes.labelsize": 11,
        "legend.frameon": False,
        "font.size": 10.5,
        "svg.fonttype": "none",  # text stays text in the SVG (searchable, crisp)
        "font.family": ["DejaVu Sans", *([cjk] if cjk else []), "sans-serif"],
    })
    try:
        from matplotlib_inline.backend_inline import set_matplotlib_formats

        set_matplotlib_formats("svg")
    except ImportError:  # pragma: no cover - outside IPython
        pass


def _cjk_font() -> str | None:
    """"Noto Sans CJK JP" where it is installed (Japanese labels), else None. matplotlib's font cache is rebuilt once
    when the font is on disk but not in the cache (the fonts were installed after matplotlib first ran)."""
    from matplotlib import font_manager as fm

    name = "Noto Sans CJK JP"
    if any(f.name == name for f in fm.fontManager.ttflist):
        return name
    if any("NotoSansCJK" in p for p in fm.findSystemFonts()):
        fm.fontManager = fm._load_fontmanager(try_read_cache=False)
        if any(f.name == name for f in fm.fontManager.ttflist):
            return name
    return None


def ref_line(ax, y=None, x=None, label: str = "", color: str = "#555555", style: str = "--") -> None:
    """A labelled reference line (a published number, a rule of thumb) drawn on ``ax``; the label sits on the line."""
    if y is not None:
        ax.axhline(y, color=color, ls=style, lw=1.2, zorder=1)
        if label:
            ax.annotate(label, xy=(1.0, y), xycoords=("axes fraction", "data"), xytext=(-4, 3), textcoords="offset points",
                        ha="right", va="bottom", fontsize=9, color=color)
    if x is not None:
        ax.axvline(x, color=color, ls=style, lw=1.2, zorder=1)
        if label:
            ax.annotate(label, xy=(x, 1.0), xycoords=("data", "axes fraction"), xytext=(3, -4), textcoords="offset points",
                        ha="left", va="top", fontsize=9, color=color, rotation=90)


def legend_outside(ax_or_fig, title: str | None = None, loc: str = "right") -> None:
    """Put the legend outside the plotting area (right of it, or below with ``loc="below"``)."""
    if loc == "below":
        ax_or_fig.legend(title=title, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=4)
    else:
        ax_or_fig.legend(title=title, loc="upper left", bbox_to_anchor=(1.01, 1.0))
