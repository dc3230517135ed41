"""One figure style for the whole book, and the helper that glues a figure for ``{glue:figure}``.

A chapter draws with :func:`new_figure` (or plain ``plt.subplots`` after :func:`use_book_style`) and ends
the cell with ``glue_figure("fig_name", fig, alt="...")``. The prose then shows it, numbered and
captioned, with::

    ```{glue:figure} fig_name
    :name: fig-fig_name
    :alt: what the figure shows, in words

    Caption: one sentence saying what to look at.
    ```

and refers to it as ``{numref}`fig-fig_name``` (Figure N). The figure is not displayed where it is
drawn, so it appears once, in its numbered place.
"""

from __future__ import annotations

from typing import Any

import matplotlib as mpl
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

#: Width of a figure that spans the text column, in inches (at 110 dpi about the column's width, so
#: 11 pt text stays about 11 pt on the page).
COLUMN_WIDTH = 7.2
#: Colour cycle (colour-blind safe, Okabe–Ito), one meaning per colour across the book.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]
STYLE: dict[str, Any] = {
    "figure.figsize": (COLUMN_WIDTH, 4.0),
    "figure.dpi": 110,
    "savefig.dpi": 110,
    "savefig.bbox": "tight",
    "font.size": 11,
    "axes.titlesize": 12,
    "axes.labelsize": 11,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
    "legend.fontsize": 10,
    "legend.frameon": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.prop_cycle": mpl.cycler(color=PALETTE),
    "figure.constrained_layout.use": True,
}


def use_book_style() -> None:
    """Apply the book's matplotlib style (call once, in the imports cell)."""
    plt.rcParams.update(STYLE)


def new_figure(
    ncols: int = 1, nrows: int = 1, height: float | None = None, **kwargs: Any
) -> tuple[Figure, Any]:
    """``plt.subplots`` in the book's style, the column's width; a panel row is at least 3.2 in high.

    More than two panels side by side would shrink their text below legibility at the column's width:
    lay them out in rows instead (``nrows``).
    """
    if ncols > 2:
        raise ValueError("at most two panels side by side at the text column's width; use nrows")
    use_book_style()
    h = height if height is not None else (4.0 if ncols == 1 else 3.4) * nrows
    return plt.subplots(nrows, ncols, figsize=(COLUMN_WIDTH, h), **kwargs)


def glue_figure(name: str, fig: Figure, alt: str) -> Figure:
    """Glue ``fig`` under ``name`` for a ``{glue:figure}`` directive, without displaying it here.

    ``alt`` (the figure in words, for screen readers) is kept on the figure as ``fig.book_alt``; the
    directive's ``:alt:`` option is what reaches the HTML. The figure is closed afterwards.
    """
    if not alt or not alt.strip():
        raise ValueError(f"figure {name!r} needs alt text saying what it shows")
    fig.book_alt = alt  # type: ignore[attr-defined]
    try:
        from myst_nb import glue
    except ImportError:  # pragma: no cover - myst-nb is a pinned dependency
        return fig
    glue(name, fig, display=False)
    plt.close(fig)
    return fig
