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
from ..evaluation.metrics import hit_ranks
from ..parallel import process_map
from . import cf as S

__all__ = [
    "LEDGER_COLUMNS",
    "EMBEDDING_DEPARTURES",
    "KNN_DEPARTURES",
    "KnnRuns",
    "embedding_ledger",
    "embedding_runs",
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


class KnnRuns:
    """HR@10 of variants of the study's kNN on one matrix and split seed, each piece of work done once.

    A variant is ``rank`` (the study's column order, or None for ties by id), ``first``, ``cap``,
    ``pad`` and ``aggregation`` as in :func:`~thirtymusic_utils.study.cf.run_study_cf`. Variants
    that share the split (``rank``, ``first``, ``cap``) share its neighbour search: the unpadded
    lists are the padded ones without their users of similarity 0 (the padding follows every
    positive neighbour), and each aggregation is one top-10 pass over those lists. ``known``: runs
    of ``run_study_cf`` on the same ``counts`` to reuse; one is taken when its column order, seed,
    ``k`` and settings match (padded, no ``user_rank``), otherwise ignored.
    """

    def __init__(
        self,
        counts: sp.spmatrix,
        rank: np.ndarray | None,
        seed: int = 0,
        *,
        k: int = S.STUDY_K,
        known: Sequence[S.StudyCF] = (),
    ) -> None:
        self.counts, self.seed, self.k = counts, seed, k
        self.rank = None if rank is None else np.asarray(rank, dtype=np.int64)
        self._splits: dict[tuple, tuple] = {}
        self._hr: dict[tuple, float] = {}
        self.searches = 0  # neighbour searches run here (not reused)
        n_cols = counts.shape[1]
        id_order = np.arange(n_cols)
        study_order = None if self.rank is None else np.argsort(self.rank, kind="stable")
        for run in known:
            st = run.settings
            if not (
                st.get("seed") == seed
                and st.get("k") == k
                and st.get("pad") is True
                and st.get("user_rank") is False
                and run.split.train.shape == counts.shape
            ):
                continue
            orders = [True] if np.array_equal(run.order, id_order) else []
            if study_order is not None and np.array_equal(run.order, study_order):
                orders.append(False)
            for is_id in orders:
                key = (is_id, st["first"], st["cap"])
                self._splits.setdefault(key, (run.study_split, run.idx, run.sim))
                for agg, hr in run.hr.items():
                    self._hr.setdefault((key, True, agg), hr)

    def split(self, *, id_ties: bool = False, first: int = 1, cap: str = "floor") -> tuple:
        """``(study_split, idx, sim)`` of the padded neighbour lists of that split."""
        key = (id_ties or self.rank is None, first, cap)
        if key not in self._splits:
            run = S.run_study_cf(
                self.counts, None if key[0] else self.rank, self.seed, k=self.k,
                first=first, cap=cap, pad=True, aggregations=("as_run",),
            )  # fmt: skip
            self.searches += 1
            self._splits[key] = (run.study_split, run.idx, run.sim)
            self._hr[(key, True, "as_run")] = run.hr["as_run"]
        return self._splits[key]

    def hr(
        self,
        *,
        rank: np.ndarray | None | str = "study",
        first: int = 1,
        cap: str = "floor",
        pad: bool = True,
        aggregation: str = "as_run",
    ) -> float:
        """HR@10 of one variant; ``rank=None`` breaks ties by artist id, ``"study"`` (the default)
        uses the column order given to the constructor."""
        id_ties = rank is None or self.rank is None
        key = (id_ties, first, cap)
        memo = (key, pad, aggregation)
        if memo not in self._hr:
            ss, idx, sim = self.split(id_ties=id_ties, first=first, cap=cap)
            if not pad:
                keep = sim > 0
                idx, sim = np.where(keep, idx, -1), np.where(keep, sim, 0.0)
            top = S.study_top_n(ss.train, ss.test_rows, idx, sim, aggregation)
            ranks = hit_ranks(top, ss.hidden_cols)
            self._hr[memo] = float((ranks > 0).mean()) if len(top) else float("nan")
        return self._hr[memo]

    def n_test(self, **split) -> int:
        """Test users of a split (``id_ties``, ``first``, ``cap``)."""
        return self.split(**split)[0].n_test


def knn_ledger(
    counts: sp.spmatrix,
    rank: np.ndarray | None,
    seed: int = 0,
    *,
    chapter: str = "02",
    k: int = S.STUDY_K,
    known: Sequence[S.StudyCF] = (),
) -> pd.DataFrame:
    """The kNN rows of the ledger on ``counts`` (study column order ``rank``), HR@10 as the figure.

    ``known``: runs already made on ``counts`` (see :class:`KnnRuns`), reused where they match.
    """
    runs = KnnRuns(counts, rank, seed, k=k, known=known)
    base = {"rank": "study", "first": 1, "cap": "floor", "pad": True, "aggregation": "as_run"}
    as_ran = runs.hr(**base)
    running = dict(base)
    rows = []
    for step, departure, code, text, fix, chain in KNN_DEPARTURES:
        alone = runs.hr(**{**base, **fix})
        if chain:
            running.update(fix)
            run_fig = runs.hr(**running)
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


#: The embedding departures in the order of the study's cells: (step, departure, code, text, fix or
#: None when not measured here, whether it joins the running chain).
EMBEDDING_DEPARTURES: list[tuple[str, str, str, str, str | None, bool]] = [
    (
        "negatives",
        "negatives from every artist",
        "set(all_artist_ids) - set(session.keys()) subtracts string keys from int ids: int(1e-5 n) "
        "negatives per user from the whole catalogue, played artists included (0 below 100,000 "
        "artists; 5 on 30Music)",
        "'negative samples were selected randomly from the artists that the user did not listen'",
        "negatives",
        True,
    ),
    (
        "slice",
        "1% slice before the split",
        "sample[:len(sample) // 100] keeps the first users' rows before decoding and splitting: "
        "validation and test users are trained users, artists ranked among the slice's only",
        "'I again used a piece of the sample' (no word on where the test users come from)",
        None,
        False,
    ),
    (
        "positive_split",
        "every row 'positive'",
        "if y: is true for +1 and -1: validation and test hold negatives, counted as relevant",
        "validation and test are the positive samples",
        "positive_split",
        True,
    ),
    (
        "step_per_epoch",
        "StepLR stepped per batch",
        "scheduler.step() inside the batch loop: the rate falls tenfold every 10 batches",
        "'trained for 2K epochs' (a rate that vanishes after a few dozen batches)",
        "step_per_epoch",
        True,
    ),
    (
        "correct_metric",
        "validate ranks batch positions",
        "positions inside shuffled batches of 1000 are used as artist ids, and the pooled "
        "candidates are sorted by cosine ascending: a figure at chance for any model",
        "'for each user ... we recommend topk new artists' and count the relevant ones",
        "correct_metric",
        True,
    ),
]


def _embedding_plan() -> list[tuple[str, ...]]:
    """The fix sets the embedding ledger retrains with, in the order of its rows (each once)."""
    plan: list[tuple[str, ...]] = []
    chain: list[str] = []
    for *_, fix, _in_chain in EMBEDDING_DEPARTURES:
        if fix is None:
            continue
        chain.append(fix)
        if fix != "correct_metric":
            for fixes in ((fix,), tuple(chain)):
                if fixes not in plan:
                    plan.append(fixes)
    return plan


def _embedding_run(counts, user_ids, artist_ids, first, catalogue_ids, seed, epochs, task):
    """One training of the study's embedding model with ``task = (fixes, chance_reps)``: the whole
    run when ``chance_reps`` is given, else a ledger retraining's (the study's metric, the correct top
    10's) with one chance repetition."""
    from .embedding_ran import run_as_ran

    fixes, chance_reps = task
    r = run_as_ran(
        counts, user_ids, artist_ids, first, catalogue_ids, seed,
        epochs=epochs, chance_reps=chance_reps or 1, fixes=frozenset(fixes),
    )  # fmt: skip
    return r if chance_reps else (r.study_metric, r.study_metric_correct)


def _embedding_rows(runs: dict[tuple[str, ...], tuple[float, float]], chapter: str) -> pd.DataFrame:
    """The ledger's rows from the retrainings' metrics, keyed by fix set (``()``: as it ran)."""

    def figure(r: tuple[float, float], fixes) -> float:
        return r[1] if "correct_metric" in fixes else r[0]

    as_ran = runs[()][0]
    rows: list[dict] = []
    chain: list[str] = []
    last = runs[()]
    for step, departure, code, text, fix, in_chain in EMBEDDING_DEPARTURES:
        if fix is None:
            alone = running = float("nan")
        elif fix == "correct_metric":
            alone = runs[()][1]
            chain.append(fix)
            running = last[1]
        else:
            alone = runs[(fix,)][0]
            chain.append(fix)
            last = runs[tuple(chain)]
            running = figure(last, chain)
        rows.append(
            {
                "chapter": chapter,
                "step": step,
                "departure": departure,
                "code": code,
                "text": text,
                "figure": "embedding metric",
                "as_ran": as_ran,
                "fixed_alone": alone,
                "running": running if in_chain else float("nan"),
            }
        )
    return pd.DataFrame(rows, columns=LEDGER_COLUMNS)


def _embedding_trainings(args: tuple, base, chance_reps: int, workers: int, progress: bool):
    """The ledger's retrainings, and the as-ran run (with ``chance_reps``) unless ``base`` is given,
    side by side in ``workers`` processes: ``(base, {fixes: (metric, correct metric)})``."""
    plan = [(fixes, None) for fixes in _embedding_plan()]
    if base is None:
        plan.insert(0, ((), chance_reps))
    got = process_map(
        _embedding_run, plan, shared=args, workers=workers, desc="embedding runs",
        progress=progress,
    )  # fmt: skip
    if base is None:
        base, got, plan = got[0], got[1:], plan[1:]
    runs = {fixes: g for (fixes, _), g in zip(plan, got, strict=True)}
    runs[()] = (base.study_metric, base.study_metric_correct)
    return base, runs


def embedding_ledger(
    counts: sp.spmatrix,
    user_ids: np.ndarray,
    artist_ids: np.ndarray,
    first: pd.DataFrame,
    catalogue_ids: np.ndarray,
    seed: int = 0,
    *,
    epochs: int = 100,
    base=None,
    chapter: str = "04",
    workers: int = 0,
    progress: bool = True,
) -> pd.DataFrame:
    """The embedding rows of the ledger; the figure is the study's test metric (``In [33]``).

    ``base`` is the as-ran run when already trained. The metric fix needs no training: the same model
    scored with a correct top k. Each retraining (one fix alone, or the fixes so far together) is an
    independent run with the same seed: they run side by side in ``workers`` processes
    (:func:`~thirtymusic_utils.parallel.process_map`; 0 = one a core, 1 = here, one after another),
    with the same results.
    """
    args = (counts, user_ids, artist_ids, first, catalogue_ids, seed, epochs)
    base, runs = _embedding_trainings(args, base, 1, workers, progress)
    return _embedding_rows(runs, chapter)


def embedding_runs(
    counts: sp.spmatrix,
    user_ids: np.ndarray,
    artist_ids: np.ndarray,
    first: pd.DataFrame,
    catalogue_ids: np.ndarray,
    seed: int = 0,
    *,
    epochs: int = 100,
    chance_reps: int = 20,
    chapter: str = "04",
    workers: int = 0,
    progress: bool = True,
):
    """The study's embedding run as it ran (``run_as_ran`` with ``chance_reps``) and its ledger
    (:func:`embedding_ledger`), every training side by side in ``workers`` processes: the as-ran run
    first, then the ledger's retrainings. Returns ``(run, ledger)``, what the two calls one after
    the other return."""
    args = (counts, user_ids, artist_ids, first, catalogue_ids, seed, epochs)
    base, runs = _embedding_trainings(args, None, max(1, int(chance_reps)), workers, progress)
    return base, _embedding_rows(runs, chapter)


def knn_seed_table(
    counts: sp.spmatrix,
    rank: np.ndarray | None,
    seeds: Sequence[int],
    *,
    k: int = S.STUDY_K,
    known: Sequence[S.StudyCF] = (),
) -> pd.DataFrame:
    """HR@10 per split seed: as run (study tie order), as run with ties by id, and the weighted fix.

    ``known``: runs already made on ``counts`` (see :class:`KnnRuns`), reused for their seed.
    """
    rows = []
    for s in seeds:
        runs = KnnRuns(counts, rank, s, k=k, known=known)
        as_run, weighted = runs.hr(), runs.hr(aggregation="weighted")
        rows.append(
            {
                "seed": int(s),
                "n_test": runs.n_test(),
                "hr_at_10_seed": as_run,
                "hr_at_10_seed_id_ties": runs.hr(rank=None),
                "hr_at_10_weighted": weighted,
                "weighted_minus_seed": weighted - as_run,
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
        pd.read_csv(folder / f"ledger_{c}.csv", dtype={"chapter": str})
        for c in chapters
        if (folder / f"ledger_{c}.csv").exists()
    ]
    if not parts:
        return pd.DataFrame(columns=LEDGER_COLUMNS)
    return pd.concat(parts, ignore_index=True)
