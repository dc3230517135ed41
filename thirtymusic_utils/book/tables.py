"""The one table formatter of the book: tables written for a person, rendered as themed HTML.

Every table a chapter shows goes through :func:`book_table` (a frame) or :func:`key_table` (a dict of
named figures). The rules, applied in one place:

- human column and row labels (``LABELS``, then snake_case turned into words);
- integers as integers with thousands separators, other numbers to 4 significant digits;
- p-values (columns whose name says so, or ``pvalues=[...]``) in scientific notation below 0.001;
- ``—`` for a missing value (NaN, None, NaT), never the words NaN or None;
- intervals as ``0.153 [0.142, 0.165]`` (``intervals={"HR@10 [95% CI]": ("hr", "lo", "hi")}``);
- long tables: the first ``max_rows`` rows on the page and the whole table as a CSV to download;
- the HTML carries the class ``book-table`` (styled by ``_static/book.css`` to fit the text column).
"""

from __future__ import annotations

import html
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import pandas as pd

from .paths import build_path

MISSING = "—"
#: Labels of the keys and columns the chapters use, where snake_case -> words is not enough.
LABELS: dict[str, str] = {
    "hr_at_10": "HR@10",
    "mrr_at_10": "MRR@10",
    "ndcg_at_10": "NDCG@10",
    "ci_low": "CI low",
    "ci_high": "CI high",
    "n": "Users",
    "n_users": "Users",
    "n_artists": "Artists",
    "n_plays": "Plays",
    "n_pairs": "User–artist pairs",
    "n_test_users": "Test users",
    "density": "Density",
    "sparse_mb": "Sparse matrix (MB)",
    "dense_gb": "Dense matrix (GB)",
    "mcnemar_p": "McNemar p",
    "mcnemar_p_holm": "McNemar p (Holm)",
    "wilcoxon_p": "Wilcoxon p",
    "wilcoxon_p_holm": "Wilcoxon p (Holm)",
    "pvalue": "p-value",
    "hr_diff": "HR@10 difference",
    "model": "Model",
    "label": "Model",
    "k": "k",
    "seconds": "Seconds",
    "skipped_lines": "Malformed lines skipped",
    "plays_unknown_track": "Plays of unknown tracks",
    "plays_unknown_artist": "Plays of unknown artists",
    "duplicate_ids": "Duplicate ids",
    "sha256": "SHA-256",
    "bytes": "Bytes",
    "file": "File",
    "package": "Package",
    "version": "Version",
    "cpu_count": "CPU cores",
    "torch_device": "Torch device",
    # the calibration statistics of data/synthetic.py (describe, REAL_FACTS)
    "n_sessions": "Sessions",
    "user_artists_median": "Artists per user, median",
    "user_artists_p75": "Artists per user, 75th percentile",
    "user_artists_p90": "Artists per user, 90th percentile",
    "user_artists_p99": "Artists per user, 99th percentile",
    "share_users_over_10_artists": "Share of users with over 10 artists",
    "session_plays_median": "Plays per session, median",
    "session_plays_p90": "Plays per session, 90th percentile",
    "session_plays_p99": "Plays per session, 99th percentile",
    "session_artists_median": "Artists per session, median",
    "session_artists_p90": "Artists per session, 90th percentile",
    "top_1pct_artist_share": "Share of plays, top 1% of artists",
    "top_10pct_artist_share": "Share of plays, top 10% of artists",
}
_ACRONYMS = {"hr": "HR", "mrr": "MRR", "ndcg": "NDCG", "ci": "CI", "cf": "CF", "knn": "kNN",
             "id": "id", "ids": "ids", "mb": "MB", "gb": "GB", "csv": "CSV", "ials": "iALS",
             "ease": "EASE", "bpr": "BPR", "rp3beta": "RP3beta", "sha256": "SHA-256",
             "pvalue": "p-value"}  # fmt: skip
_P_COLUMN = re.compile(r"(^|_)(p|pvalue|p_value|pval)(_|$)", re.I)


def human_label(name: Any, labels: Mapping[str, str] | None = None) -> str:
    """A label for a person: ``labels``/``LABELS`` first, else snake_case as words (``n_`` = count)."""
    key = str(name)
    for table in (labels or {}, LABELS):
        if key in table:
            return table[key]
    if key != key.lower() or "_" not in key and " " in key:
        return key  # already written for a person
    words = key.replace("_at_", "@").split("_")
    if words and words[0] == "n" and len(words) > 1:
        words = words[1:]  # n_users: the number of users
    out = []
    for w in words:
        if "@" in w:
            head, _, k = w.partition("@")
            out.append(f"{_ACRONYMS.get(head, head)}@{k}")
        else:
            out.append(_ACRONYMS.get(w, w))
    text = " ".join(out)
    return text[:1].upper() + text[1:] if text[:1].islower() else text


def is_missing(value: Any) -> bool:
    """True for None, NaN, NaT and pandas' NA."""
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def format_number(value: Any, digits: int = 4) -> str:
    """An integer as an integer (``11,994``), a float to ``digits`` significant digits, ``—`` missing."""
    if is_missing(value):
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if hasattr(value, "item") and not isinstance(value, str):
        value = value.item()
    if isinstance(value, Integral):
        return f"{int(value):,}"
    if isinstance(value, Real):
        v = float(value)
        if math.isinf(v):
            return "∞" if v > 0 else "−∞"
        if v.is_integer() and abs(v) < 1e15:
            return f"{int(v):,}"
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e6):
            return f"{v:.{digits - 1}e}"
        text = f"{v:.{digits}g}"
        if "e" in text:  # .g switched to exponent form for a value >= 10**digits
            text = f"{v:,.0f}"
        return text
    return str(value)


def format_pvalue(p: Any, digits: int = 2) -> str:
    """A p-value: three decimals from 0.001 up, scientific below (``1.8e-44``), ``—`` when missing."""
    if is_missing(p):
        return MISSING
    p = float(p)
    if p == 0:
        return "< 1e-300"
    if p < 1e-3:
        return f"{p:.{digits - 1}e}"
    return f"{p:.3f}"


def format_interval(estimate: Any, low: Any, high: Any, digits: int = 3) -> str:
    """``0.153 [0.142, 0.165]``; a missing bound shows as ``—``."""

    def one(v: Any) -> str:
        if is_missing(v):
            return MISSING
        v = float(v)
        if v != 0 and abs(v) < 0.5 * 10**-digits:  # would print as 0.000 or -0.000
            return f"{v:.1e}"
        return f"{v:.{digits}f}"

    if is_missing(low) and is_missing(high):
        return one(estimate)
    return f"{one(estimate)} [{one(low)}, {one(high)}]"


@dataclass
class BookTable:
    """A formatted table: ``frame`` holds the strings shown; displays as a themed HTML table."""

    frame: pd.DataFrame
    caption: str | None = None
    download: str | None = None  # link (relative to the page) of the whole table as CSV
    n_rows_total: int | None = None
    show_index: bool = False

    def to_html(self) -> str:
        """The HTML of the table (class ``book-table``), with its caption and download link."""
        cols = list(self.frame.columns)
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
        if self.show_index:
            head = f"<th>{html.escape(str(self.frame.index.name or ''))}</th>" + head
        body = []
        for idx, row in self.frame.iterrows():
            cells = "".join(
                f'<td class="{"num" if _looks_numeric(v) else "txt"}">{html.escape(str(v))}</td>'
                for v in row
            )
            if self.show_index:
                cells = f'<th scope="row">{html.escape(str(idx))}</th>' + cells
            body.append(f"<tr>{cells}</tr>")
        cap = (
            f'<p class="book-table-caption">{html.escape(self.caption)}</p>' if self.caption else ""
        )
        note = ""
        if self.download:
            shown = len(self.frame)
            total = self.n_rows_total or shown
            more = f"The first {shown:,} of {total:,} rows; " if total > shown else ""
            note = (
                f'<p class="book-table-note">{more}<a href="{html.escape(self.download)}" '
                f"download>download the whole table (CSV)</a>.</p>"
            )
        return (
            f'<div class="book-table-wrap">{cap}<table class="book-table table">'
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>{note}</div>"
        )

    def _repr_html_(self) -> str:
        return self.to_html()

    def __repr__(self) -> str:
        return self.frame.to_string(index=self.show_index)


def _looks_numeric(text: Any) -> bool:
    return bool(re.fullmatch(r"[<>−\-+]?\s?[\d.,]+(e[-+]?\d+)?( \[.*\])?%?", str(text)))


def _format_column(values: pd.Series, is_p: bool, digits: int) -> list[str]:
    if is_p:
        return [format_pvalue(v) for v in values]
    return [format_number(v, digits) for v in values]


def book_table(
    frame: pd.DataFrame | pd.Series,
    labels: Mapping[str, str] | None = None,
    *,
    columns: Sequence[str] | None = None,
    intervals: Mapping[str, tuple[str, str, str]] | None = None,
    pvalues: Iterable[str] = (),
    percent: Iterable[str] = (),
    digits: int = 4,
    index: bool | None = None,
    drop_empty_rows: bool = True,
    max_rows: int = 20,
    csv_name: str | None = None,
    build_dir: str | os.PathLike | None = None,
    caption: str | None = None,
) -> BookTable:
    """Format ``frame`` for a reader (see the module docstring for the rules).

    ``columns`` selects and orders the columns shown (after ``intervals`` are built, by their original
    names or the interval's label). A table longer than ``max_rows`` shows its head and, when
    ``csv_name`` and ``build_dir`` are given, writes the whole table to
    ``BUILD_DIR/downloads/<csv_name>`` (staged into the book's ``_static/downloads``) and links it.
    """
    if isinstance(frame, pd.Series):
        frame = frame.to_frame()
    df = frame.copy()
    show_index = bool(index) if index is not None else not isinstance(df.index, pd.RangeIndex)
    if drop_empty_rows and len(df.columns):
        df = df[~df.apply(lambda r: all(is_missing(v) for v in r), axis=1)]
    pset = set(pvalues) | {c for c in df.columns if _P_COLUMN.search(str(c))}
    out = pd.DataFrame(index=df.index)
    used: set[str] = set()
    for label, (est, lo, hi) in (intervals or {}).items():
        out[label] = [
            format_interval(a, b, c) for a, b, c in zip(df[est], df[lo], df[hi], strict=True)
        ]
        used |= {est, lo, hi}
    pct = set(percent)
    for c in df.columns:
        if c in used and c not in (columns or ()):
            continue
        if c in pct:
            out[c] = [MISSING if is_missing(v) else f"{100 * float(v):.1f}%" for v in df[c]]
        else:
            out[c] = _format_column(df[c], c in pset, digits)
    if columns is not None:
        out = out[[c for c in columns if c in out.columns]]
    out.columns = [human_label(c, labels) for c in out.columns]
    out.index = [human_label(i, labels) for i in out.index] if show_index else out.index
    if show_index:
        out.index.name = human_label(frame.index.name, labels) if frame.index.name else ""
    total = len(out)
    link = None
    if total > max_rows:
        if csv_name and build_dir is not None:
            link = write_download(frame, csv_name, build_dir)
        out = out.head(max_rows)
    return BookTable(out, caption=caption, download=link, n_rows_total=total, show_index=show_index)


def key_table(
    values: Mapping[str, Any],
    labels: Mapping[str, str] | None = None,
    *,
    pvalues: Iterable[str] = (),
    digits: int = 4,
    name: str = "Value",
    caption: str | None = None,
) -> BookTable:
    """A two-column table of named figures (``{"n_users": 1000, ...}``), each value formatted by type."""
    pset = set(pvalues)
    rows = []
    for key, value in values.items():
        if key in pset or _P_COLUMN.search(key):
            text = format_pvalue(value)
        else:
            text = format_number(value, digits)
        rows.append({"": human_label(key, labels), name: text})
    return BookTable(pd.DataFrame(rows, columns=["", name]), caption=caption)


def write_download(frame: pd.DataFrame, csv_name: str, build_dir: str | os.PathLike) -> str:
    """Write ``frame`` to ``BUILD_DIR/downloads/<csv_name>``; returns the link a page uses for it."""
    if not re.fullmatch(r"[\w.-]+\.csv", csv_name):
        raise ValueError(f"csv_name must be a plain file name ending in .csv, got {csv_name!r}")
    folder = Path(build_path(build_dir)) / "downloads"
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_csv(folder / csv_name, index=not isinstance(frame.index, pd.RangeIndex))
    return f"_static/downloads/{csv_name}"
