"""The defect ledger: each departure of the study's code, its figure as it ran, with that departure
fixed alone, and the running figure as the fixes accumulate, in the study's order.

Chapters 02 (user-kNN), 04 (embedding) and 06 (t-test) each write their rows to
``BUILD_DIR/artifacts/ledger_<chapter>.csv``; chapter 06 shows them as one table. Columns:

``chapter, step, departure, code, text, figure, as_ran, fixed_alone, running``

``figure`` names what the numbers are (e.g. "kNN HR@10"); ``running`` is the figure with this fix
and every earlier fix of the same chapter applied (NaN for a row that is not a fix, such as a tie
order the study left to chance).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..book.paths import artifacts_dir
from . import cf as S

__all__ = [
    "LEDGER_COLUMNS",
    "KNN_DEPARTURES",
    "knn_ledger",
    "knn_seed_table",
    "load_ledger",
    "save_ledger",
    "seed_summary",
]

LEDGER_COLUMNS = [
    "chapter",
    "step",
    "departure",
    "code",
    "text",
    "figure",
    "as_ran",
    "fixed_alone",
    "running",
]

#: The kNN departures in the order of the study's cells: (step, departure, what the code does,
#: what the text says, the run_study_cf arguments that fix it, whether it joins the running chain).
KNN_DEPARTURES: list[tuple[str, str, str, str, dict, bool]] = [
    (
        "hidden_ranks",
        "hidden artist from ranks 2-6",
        "randrange(1, 6) indexes the sorted row: ranks 2 to 6, never the favourite",
        "cells deleted 'from top_6 most listened artists'",
        {"first": 0},
        True,
    ),
    (
        "test_cap",
        "test cap rounded down",
        "test_size = int(0.3 n), users added while len(test_user_idxs) < test_size",
        "not stated (the book's former rule: while count < 0.3 n, a ceiling)",
        {"cap": "ceil"},
        True,
    ),
    (
        "tie_order",
        "ties in first-appearance order",
        "stable sorts break play-count and score ties by the matrix's column order (first "
        "appearance); the study's quicksort and set order left them to chance (see the tie spread)",
        "not stated (the book's former rule: ties by artist id)",
        {"rank": None},
        False,
    ),
    (
        "padding",
        "neighbour lists padded",
        "sort_values over all users keeps 30 even when fewer have a positive similarity: "
        "zero-similarity users (the user itself among them) fill the list",
        "'the k most similar users'",
        {"pad": False},
        True,
    ),
    (
        "weights_discarded",
        "weighting line discarded",
        "knn_matrix.sort_index().mul(coef, axis=0) is not assigned: an unweighted sum of the "
        "neighbours' counts",
        "a weighted sum with coefficients 1 - minmax(similarity)",
        {"aggregation": "as_written"},
        True,
    ),
    (
        "weights_inverted",
        "weights upside down",
        "1 - minmax(similarity) gives the most similar neighbour weight 0 and padding users 1",
        "'the closer a user to the target user the bigger will be the coefficient'",
        {"aggregation": "weighted"},
        True,
    ),
]


def _hr(counts, rank, seed, **kw) -> float:
    agg = kw.pop("aggregation", "as_run")
    return S.run_study_cf(counts, rank, seed, aggregations=(agg,), **kw).hr[agg]


def knn_ledger(
    counts: sp.spmatrix, rank: np.ndarray | None, seed: int = 0, *, chapter: str = "02"
) -> pd.DataFrame:
    """The kNN rows of the ledger on ``counts`` (study column order ``rank``), HR@10 as the figure."""
    base = {"rank": rank, "first": 1, "cap": "floor", "pad": True, "aggregation": "as_run"}
    as_ran = _hr(counts, seed=seed, **base)
    running = dict(base)
    rows = []
    for step, departure, code, text, fix, chain in KNN_DEPARTURES:
        alone = _hr(counts, seed=seed, **{**base, **fix})
        if chain:
            running.update(fix)
            run_fig = _hr(counts, seed=seed, **running)
        else:
            run_fig = float("nan")
        rows.append(
            {
                "chapter": chapter,
                "step": step,
                "departure": departure,
                "code": code,
                "text": text,
                "figure": "kNN HR@10",
                "as_ran": as_ran,
                "fixed_alone": alone,
                "running": run_fig,
            }
        )
    return pd.DataFrame(rows, columns=LEDGER_COLUMNS)


def knn_seed_table(
    counts: sp.spmatrix, rank: np.ndarray | None, seeds: Sequence[int]
) -> pd.DataFrame:
    """HR@10 per split seed: as run (study tie order), as run with ties by id, and the weighted fix."""
    rows = []
    for s in seeds:
        run = S.run_study_cf(counts, rank, s, aggregations=("as_run", "weighted"))
        idt = S.run_study_cf(counts, None, s, aggregations=("as_run",))
        rows.append(
            {
                "seed": int(s),
                "n_test": run.split.n_test,
                "hr_at_10_seed": run.hr["as_run"],
                "hr_at_10_seed_id_ties": idt.hr["as_run"],
                "hr_at_10_weighted": run.hr["weighted"],
                "weighted_minus_seed": run.hr["weighted"] - run.hr["as_run"],
            }
        )
    return pd.DataFrame(rows)


def seed_summary(table: pd.DataFrame, columns: Sequence[str], suffix: str = "5") -> dict:
    """``{col}_mean5, _sd5, _min5, _max5`` for each column (sample sd, ddof 1)."""
    out = {}
    for c in columns:
        v = table[c].to_numpy(dtype=float)
        out[f"{c}_mean{suffix}"] = float(v.mean())
        out[f"{c}_sd{suffix}"] = float(v.std(ddof=1)) if len(v) > 1 else 0.0
        out[f"{c}_min{suffix}"] = float(v.min())
        out[f"{c}_max{suffix}"] = float(v.max())
    return out


def save_ledger(frame: pd.DataFrame, build_dir: str | os.PathLike | None, chapter: str) -> Path:
    """Write ``BUILD_DIR/artifacts/ledger_<chapter>.csv``."""
    missing = [c for c in LEDGER_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"ledger rows lack columns {missing}")
    path = artifacts_dir(build_dir) / f"ledger_{chapter}.csv"
    frame[LEDGER_COLUMNS].to_csv(path, index=False)
    return path


def load_ledger(build_dir: str | os.PathLike | None, chapters: Sequence[str] = ("02", "04", "06")):
    """The ledger rows of ``chapters`` that exist, in order, as one frame."""
    folder = artifacts_dir(build_dir)
    parts = [
        pd.read_csv(folder / f"ledger_{c}.csv")
        for c in chapters
        if (folder / f"ledger_{c}.csv").exists()
    ]
    if not parts:
        return pd.DataFrame(columns=LEDGER_COLUMNS)
    return pd.concat(parts, ignore_index=True)
