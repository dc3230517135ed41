"""The study's user-kNN exactly as its code ran (notebook cells ``In [24]`` to ``In [32]``).

Everything runs in the study's *column space*: the matrix's artist columns permuted into the order
the study's matrix had them (first appearance, :func:`thirtymusic_utils.data.order.study_column_order`),
so that "ties by lower column" is the study's tie order. Results are mapped back to the book's
columns (artists in id order) at the end.

Deterministic rules where the study's result depends on an order that cannot be reproduced:

* **Sorts.** The study sorted with pandas' default quicksort, which is not stable on ties (numpy's
  introsort, or a SIMD sort on recent CPUs): which of two equally played artists is hidden, which of
  two equally scored artists enters the top 10, and which zero-similarity users pad a neighbour list
  were decided by the sort's internals. Here every sort is stable: ties go to the lower column (the
  artist met first) or the lower row (the user with the lower id).
* **The candidate artists.** ``list(set(top_artists.index) - set(listened.index))`` iterated a set of
  strings, whose order changes from one Python process to the next (hash randomisation). Here the
  candidates keep column order.
* **Random draws.** The study called ``randrange`` and ``sample`` of the unseeded ``random`` module;
  here one ``random.Random(seed)`` stream serves the split (``In [27]``) and then the t-test's
  subsamples (``In [32]``), in the notebook's order.

:func:`tie_spread` measures how far HR@10 moves when these ties are broken at random instead.

Not emulated, because it depends on the pandas version the study had: pandas before 1.1 called the
function of ``DataFrame.apply`` twice on the first row, which would have drawn a second ``randrange``
for user 4 (the first user, who has more than 10 artists); ``recommend_to_user`` also looked up each
recommended artist's name (``artists.loc[ids]``), which fails for an artist missing from
``persons.csv``. The book follows pandas 1.1 and later (one call per row) and leaves the names out.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from ..book.paths import artifacts_dir, require_artifact
from ..evaluation.metrics import hit_ranks
from ..evaluation.protocol import Split, _as_counts
from ..models.knn import recommend_top_n
from ..models.scoring import map_blocks

__all__ = [
    "STUDY_AGGREGATIONS",
    "STUDY_K",
    "STUDY_CF_FILE",
    "StudyCF",
    "load_study_cf",
    "save_study_cf",
    "misaligned_hits",
    "permute_columns",
    "run_study_cf",
    "study_minmax",
    "study_neighbours",
    "study_split",
    "study_top_n",
    "study_weights",
    "tie_spread",
]

STUDY_K = 30
STUDY_N = 10
#: the aggregations: ``as_run`` (the weighting line's result discarded: a plain sum), ``as_written``
#: (the text's ``1 - minmax(similarity)`` weights, with pandas' arithmetic), ``weighted`` (similarity)
STUDY_AGGREGATIONS = ("as_run", "as_written", "weighted")


def permute_columns(counts: sp.spmatrix, rank: np.ndarray) -> sp.csr_matrix:
    """``counts`` with column ``j`` moved to position ``rank[j]`` (int64 CSR, sorted indices)."""
    c = _as_counts(counts)
    rank = np.asarray(rank, dtype=np.int64)
    if rank.shape != (c.shape[1],):
        raise ValueError(f"rank must have one entry per column ({c.shape[1]}), got {rank.shape}")
    out = sp.csr_matrix((c.data.copy(), rank[c.indices], c.indptr.copy()), shape=c.shape)
    out.sort_indices()
    return out


def study_split(
    counts: sp.spmatrix,
    seed: int | random.Random = 0,
    *,
    test_share: float = 0.3,
    n_listened: int = 10,
    topk: int = 6,
    first: int = 1,
    cap: str = "floor",
) -> tuple[Split, random.Random]:
    """The study's train/test split (``In [27]``, ``select_test``) on a matrix in study column order.

    Users in row order; a user with more than ``n_listened`` artists becomes a test user while
    ``len(test_user_idxs) < int(n_users * test_share)``; ``randrange(first, topk)`` picks a position
    in the user's artists sorted by play count descending (stable: ties by lower column); that
    artist is hidden. The study: ``first=1`` (ranks 2..6; its text says "from top_6"), ``cap="floor"``.
    ``cap="ceil"`` admits users while ``count < test_share * n_users`` (the book's former rule).
    Returns the split and the ``random.Random`` stream, to be continued by the t-test (``In [32]``).

    Departures: the draws come from ``random.Random(seed)``, not the unseeded global stream; the sort
    is stable (the study's quicksort was not).
    """
    rng = seed if isinstance(seed, random.Random) else random.Random(seed)
    c = _as_counts(counts)
    n = c.shape[0]
    if cap == "floor":
        test_size = int(n * test_share)
    elif cap == "ceil":
        test_size = int(np.ceil(n * test_share - 1e-12))
    else:
        raise ValueError(f"cap must be 'floor' or 'ceil', got {cap!r}")
    nnz = np.diff(c.indptr)
    rows = np.flatnonzero(nnz > n_listened)[:test_size].astype(np.int64)
    hidden = np.empty(len(rows), dtype=np.int64)
    hidden_rank = np.empty(len(rows), dtype=np.int64)
    positions = np.empty(len(rows), dtype=np.int64)
    for i, r in enumerate(rows):
        j = rng.randrange(first, topk)
        a, b = c.indptr[r], c.indptr[r + 1]
        p = a + np.argsort(-c.data[a:b], kind="stable")[j]
        positions[i] = p
        hidden[i] = c.indices[p]
        hidden_rank[i] = j + 1
    train = c.copy()
    train.data[positions] = 0
    train.eliminate_zeros()
    return Split(train, rows, hidden, hidden_rank), rng


def study_minmax(counts: sp.spmatrix) -> sp.csr_matrix:
    """scikit-learn's ``MinMaxScaler().fit_transform`` on the dense matrix (``In [28]``), kept sparse.

    The same float64 arithmetic: ``x * scale + min_`` with ``scale = 1 / (max - min)`` (1 where the
    range is 0) and ``min_ = -min * scale``; the column minimum counts the zeros.
    """
    c = _as_counts(counts).astype(np.float64)
    n, m = c.shape
    csc = c.tocsc()
    nnz = np.diff(csc.indptr)
    col_max = np.zeros(m)
    col_min = np.zeros(m)
    ne = np.flatnonzero(nnz > 0)
    if len(ne):
        col_max[ne] = np.maximum.reduceat(csc.data, csc.indptr[ne])
        full = ne[nnz[ne] == n]
        col_min[full] = np.minimum.reduceat(csc.data, csc.indptr[full]) if len(full) else 0.0
    rng = col_max - col_min
    rng[rng == 0.0] = 1.0
    scale = 1.0 / rng
    min_ = 0.0 - col_min * scale
    out = c.copy()
    out.data = out.data * scale[out.indices] + min_[out.indices]
    out.eliminate_zeros()
    return out


def _l2_rows(X: sp.csr_matrix) -> sp.csr_matrix:
    sq = np.zeros(X.shape[0])
    np.add.at(sq, np.repeat(np.arange(X.shape[0]), np.diff(X.indptr)), X.data * X.data)
    norm = np.sqrt(sq)
    norm[norm == 0.0] = 1.0
    out = X.copy()
    out.data = out.data / np.repeat(norm, np.diff(X.indptr))
    return out


def study_neighbours(
    train: sp.spmatrix,
    k: int = STUDY_K,
    *,
    rows: np.ndarray | None = None,
    pad: bool = True,
    user_rank: np.ndarray | None = None,
    block_rows: int = 256,
    workers: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest users of each of ``rows`` (``In [28]``, ``In [29]``, ``find_n_neighbours``).

    MinMax-scaled rows (:func:`study_minmax`), cosine similarity in float64, the diagonal set to 0,
    then each row sorted descending and its first ``k`` kept. With ``pad=True`` (the study) users of
    similarity 0 (the user itself among them) fill a list that has fewer than ``k`` positive ones, as
    the study's full sort did; with ``pad=False`` they are dropped (index -1, similarity 0). Ties
    go to the lower row (or lower ``user_rank``). Returns ``(idx, sim)``, ``[len(rows), k]``.

    Departures: blockwise sparse products instead of the dense users x users matrix (the same
    cosines up to float rounding); a stable sort instead of quicksort (see the module docstring).
    Blocks of ``block_rows`` rows run on ``workers`` threads (all cores, at most 2, by default); the
    result depends on neither.
    """
    X = _l2_rows(study_minmax(train))
    n = X.shape[0]
    rows = np.arange(n, dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
    k_eff = min(k, n)
    XT = X.T.tocsr()
    idx = np.full((len(rows), k), -1, dtype=np.int64)
    sim = np.zeros((len(rows), k))
    tie = None if user_rank is None else np.asarray(user_rank, dtype=np.int64)

    def block(s: int) -> None:  # rows s .. s + block_rows, written to their own slices
        q = rows[s : s + block_rows]
        S = (X[q] @ XT).toarray()
        S[np.arange(len(q)), q] = 0.0
        if k_eff < n:  # the k-th largest: the (n - k)-th smallest, without negating a copy
            kth = np.partition(S, n - k_eff, axis=1)[:, n - k_eff]
        else:
            kth = S.min(axis=1)
        for i in range(len(q)):
            row = S[i]
            gt = np.flatnonzero(row > kth[i])
            eq = np.flatnonzero(row == kth[i])
            if tie is not None:
                eq = eq[np.argsort(tie[eq], kind="stable")]
            cand = np.concatenate([gt, eq[: k_eff - len(gt)]])
            key = cand if tie is None else tie[cand]
            cand = cand[np.lexsort((key, -row[cand]))]
            vals = row[cand]
            if not pad:
                cand, vals = cand[vals > 0], vals[vals > 0]
            idx[s + i, : len(cand)] = cand
            sim[s + i, : len(cand)] = vals

    # the product, the densifying and the partition release the GIL: two blocks at once
    map_blocks(block, range(0, len(rows), block_rows), workers)
    return idx, sim


def study_weights(sim: np.ndarray, idx: np.ndarray, aggregation: str) -> np.ndarray:
    """Neighbour weights of ``In [30]`` (``recommend_to_user``); 0 for missing neighbours (-1).

    ``as_run``: 1 for every listed neighbour (padding included): the line
    ``knn_matrix.sort_index().mul(coef, axis=0)`` discarded its result. ``as_written``: that line's
    result used: ``coef = 1 - (s - min) / (max - min)`` over the user's list, so padding users
    (similarity 0, the minimum) get weight 1 and the most similar neighbour 0; a list of equal
    similarities gives ``0 / 0 = NaN`` weights, which pandas' ``sum`` skips: weight 0. ``weighted``:
    the similarity (the fix).
    """
    if aggregation not in STUDY_AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {STUDY_AGGREGATIONS}, got {aggregation!r}")
    valid = np.asarray(idx) >= 0
    sim = np.asarray(sim, dtype=np.float64)
    if aggregation == "as_run":
        w = np.ones_like(sim)
    elif aggregation == "weighted":
        w = sim.copy()
    else:
        lo = np.where(valid, sim, np.inf).min(axis=1, keepdims=True)
        hi = np.where(valid, sim, -np.inf).max(axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            w = 1.0 - (sim - lo) / (hi - lo)
        w = np.where(np.isfinite(w), w, 0.0)
    return np.where(valid, w, 0.0)


def study_top_n(
    train: sp.spmatrix,
    rows: np.ndarray,
    idx: np.ndarray,
    sim: np.ndarray,
    aggregation: str = "as_run",
    n: int = STUDY_N,
    *,
    block_rows: int = 1024,
    workers: int | None = None,
) -> np.ndarray:
    """The top ``n`` of ``In [30]``: the neighbours' raw count rows summed with :func:`study_weights`,
    artists with a positive score the user has not heard, sorted descending (ties by lower column).

    Departure: candidates in column order, not the order of a Python set of strings; a stable sort.
    Blocks of ``block_rows`` rows run on ``workers`` threads (all cores, at most 2, by default); the
    result depends on neither.
    """
    t = _as_counts(train)
    tf = t.astype(np.float64)
    rows = np.asarray(rows, dtype=np.int64)
    out = np.full((len(rows), n), -1, dtype=np.int64)
    w_all = study_weights(sim, idx, aggregation)

    def block(s: int) -> None:  # rows s .. s + block_rows, written to their own slice
        i = idx[s : s + block_rows]
        w = w_all[s : s + block_rows]
        valid = i >= 0
        W = sp.csr_matrix(
            (w[valid], i[valid], np.concatenate([[0], np.cumsum(valid.sum(axis=1))])),
            shape=(len(i), t.shape[0]),
        )
        scores = (W @ tf).tocsr()
        scores.eliminate_zeros()
        out[s : s + block_rows] = recommend_top_n(scores, t[rows[s : s + block_rows]], n)

    # one block's sparse product (which releases the GIL) beside another's ranking
    map_blocks(block, range(0, len(rows), block_rows), workers)
    return out


def misaligned_hits(top: np.ndarray, hidden: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """The hits ``test_CF_model(sample, ...)`` counted on a subsample (``In [31]``, ``In [32]``).

    ``positions[i]`` is the test position of the subsample's ``i``-th user; the study compared that
    user's top 10 with ``test_artist_idxs[i]``, the hidden artist of the ``i``-th *test* user.
    """
    positions = np.asarray(positions, dtype=np.int64)
    h = np.asarray(hidden)[: len(positions)]
    return (np.asarray(top)[positions] == h[:, None]).any(axis=1)


@dataclass
class StudyCF:
    """One run of the study's kNN: the split and the top 10 per aggregation, in the book's columns."""

    split: Split  # train in the book's columns; hidden_cols in the book's columns
    top: dict[str, np.ndarray]
    ranks: dict[str, np.ndarray]
    hr: dict[str, float]
    idx: np.ndarray
    sim: np.ndarray
    rng: random.Random
    study_split: Split = field(repr=False)  # the same split in the study's columns
    order: np.ndarray = field(repr=False)  # order[p] = book column at study position p
    #: the arguments of the run (seed, k, first, cap, pad, whether a user_rank broke ties)
    settings: dict = field(default_factory=dict, repr=False)


def run_study_cf(
    counts: sp.spmatrix,
    rank: np.ndarray | None,
    seed: int = 0,
    *,
    k: int = STUDY_K,
    first: int = 1,
    cap: str = "floor",
    pad: bool = True,
    aggregations: tuple[str, ...] = STUDY_AGGREGATIONS,
    user_rank: np.ndarray | None = None,
) -> StudyCF:
    """The study's kNN end to end: split (``In [27]``), neighbours (``In [28]``-``In [29]``), top 10
    and HR@10 (``In [30]``-``In [31]``).

    ``rank`` is the study's column order (``None``: artist id order, i.e. ties by id); ``first``,
    ``cap``, ``pad`` switch single departures off (see :func:`study_split`, :func:`study_neighbours`).
    """
    c = _as_counts(counts)
    rank = np.arange(c.shape[1], dtype=np.int64) if rank is None else np.asarray(rank, np.int64)
    order = np.argsort(rank, kind="stable")
    cs = permute_columns(c, rank)
    ssplit, rng = study_split(cs, seed, first=first, cap=cap)
    idx, sim = study_neighbours(
        ssplit.train, k, rows=ssplit.test_rows, pad=pad, user_rank=user_rank
    )
    top, ranks, hr = {}, {}, {}
    for agg in aggregations:
        t = study_top_n(ssplit.train, ssplit.test_rows, idx, sim, agg)
        ranks[agg] = hit_ranks(t, ssplit.hidden_cols)
        hr[agg] = float((ranks[agg] > 0).mean()) if len(t) else float("nan")
        top[agg] = np.where(t >= 0, order[np.maximum(t, 0)], -1)
    # back to the book's columns: study position p is book column order[p]
    train = sp.csr_matrix(
        (ssplit.train.data.copy(), order[ssplit.train.indices], ssplit.train.indptr.copy()),
        shape=c.shape,
    )
    train.sort_indices()
    book = Split(train, ssplit.test_rows, order[ssplit.hidden_cols], ssplit.hidden_rank)
    settings = {
        "seed": seed,
        "k": k,
        "first": first,
        "cap": cap,
        "pad": pad,
        "user_rank": user_rank is not None,
    }
    return StudyCF(book, top, ranks, hr, idx, sim, rng, ssplit, order, settings)


def tie_spread(
    counts: sp.spmatrix,
    split_rank: np.ndarray | None,
    seed: int = 0,
    *,
    n_orders: int = 10,
    k: int = STUDY_K,
    order_seed: int = 12345,
    base: StudyCF | None = None,
) -> dict[str, np.ndarray]:
    """HR@10 (as run) when the ties the study's quicksort and set order decided are broken at random.

    With the split fixed (the study's, from ``split_rank``), ``n_orders`` random tie orders of the
    top 10's artists (``top10``) and, separately, of the neighbour lists' users (``neighbours``); and
    with the hidden artist's ties random as well, a fresh split per order (``all``). Returns arrays
    of HR@10, one per order. ``base``: ``run_study_cf(counts, split_rank, seed, k=k)`` when already
    run (its split and neighbour lists are reused; a run with other settings is an error).
    """
    c = _as_counts(counts)
    n_users, n_art = c.shape
    want = {"seed": seed, "k": k, "first": 1, "cap": "floor", "pad": True, "user_rank": False}
    if base is None:
        base = run_study_cf(c, split_rank, seed, k=k, aggregations=("as_run",))
    else:
        rank = np.arange(n_art) if split_rank is None else np.asarray(split_rank, np.int64)
        if base.settings != want or not np.array_equal(base.order, np.argsort(rank, kind="stable")):
            raise ValueError(
                f"base is a run with settings {base.settings} and another column order; "
                f"tie_spread needs {want} in the order of split_rank"
            )
    ss = base.study_split
    gen = np.random.default_rng(order_seed)
    out = {"top10": [], "neighbours": [], "all": []}
    for _ in range(n_orders):
        perm = gen.permutation(n_art)  # a random rank for each study column
        tr = permute_columns(ss.train, perm)
        t = study_top_n(tr, ss.test_rows, base.idx, base.sim, "as_run")
        out["top10"].append(float((hit_ranks(t, perm[ss.hidden_cols]) > 0).mean()))
        urank = gen.permutation(n_users)
        i2, s2 = study_neighbours(ss.train, k, rows=ss.test_rows, user_rank=urank)
        t = study_top_n(ss.train, ss.test_rows, i2, s2, "as_run")
        out["neighbours"].append(float((hit_ranks(t, ss.hidden_cols) > 0).mean()))
        r_all = gen.permutation(n_art)
        out["all"].append(
            run_study_cf(c, r_all, seed, k=k, aggregations=("as_run",), user_rank=urank).hr[
                "as_run"
            ]
        )
    return {key: np.asarray(v) for key, v in out.items()}


STUDY_CF_FILE = "study_cf.npz"


def save_study_cf(run: StudyCF, build_dir) -> Path:
    """Write what chapter 06's t-test needs: test rows, hidden columns, the as-run top 10 (book
    columns) and the state of the random stream after the split (``BUILD_DIR/artifacts/study_cf.npz``)."""
    path = artifacts_dir(build_dir) / STUDY_CF_FILE
    state = run.rng.getstate()
    np.savez_compressed(
        path,
        test_rows=run.split.test_rows,
        hidden_cols=run.split.hidden_cols,
        top_as_run=run.top["as_run"],
        rng_state=np.asarray(state[1], dtype=np.int64),
        rng_version=np.asarray(state[0]),
    )
    return path


def load_study_cf(build_dir) -> tuple[np.ndarray, np.ndarray, np.ndarray, random.Random]:
    """``(test_rows, hidden_cols, top_as_run, rng)`` as chapter 02 saved them."""
    path = require_artifact(build_dir, STUDY_CF_FILE, "02_collaborative_filtering")
    with np.load(path) as z:
        rng = random.Random()
        rng.setstate((int(z["rng_version"]), tuple(int(x) for x in z["rng_state"]), None))
        return z["test_rows"], z["hidden_cols"], z["top_as_run"], rng
