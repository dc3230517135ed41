"""User-kNN tuned as the literature tunes it (Ferrari Dacrema, Cremonesi and Jannach, RecSys 2019).

Three choices besides k, each chosen on a validation hold-out:

* the similarity's input weighting (``WEIGHTINGS``): ``binary``, ``log1p``, ``minmax`` (the
  study's), ``tfidf`` and ``bm25`` (``implicit.nearest_neighbours``' weightings, users as documents,
  artists as terms; BM25 with K1 = 1.2, B = 0.75);
* a shrinkage term on the cosine similarity: ``cos(a, b) * c / (c + shrink)`` with ``c`` the number
  of artists the two users share (Bell and Koren's shrinkage: similarities from few shared artists
  are trusted less); ``shrink = 0`` is the plain cosine;
* the aggregation space (``SPACES``): the neighbours' ``counts`` (raw play counts, as the study),
  their ``weighted`` rows (the weighting above) or their ``binary`` rows (who listened), summed with
  the similarities as weights.

``neighbours`` computes the top ``k`` of the query users once, blockwise (a dense block of query
users x all users, never users x users); a smaller k is the prefix of the sorted lists, so one pass
at the largest k serves every k and every aggregation space.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..evaluation.metrics import hit_ranks, ranking_metrics
from ..evaluation.protocol import _as_counts, _as_rows
from .knn import DEFAULT_MEMORY_BUDGET, _block, _split_columns, minmax_columns
from .scoring import map_blocks, top_n_blocks, topk_dense_rows

__all__ = [
    "K_GRID",
    "SHRINK_GRID",
    "SPACES",
    "WEIGHTINGS",
    "UserKNN",
    "aggregate",
    "extend_k_grid",
    "neighbours",
    "tune_user_knn",
    "user_knn_top_n",
    "weight_rows",
]

WEIGHTINGS = ("binary", "log1p", "minmax", "tfidf", "bm25")
SPACES = ("counts", "weighted", "binary")
# k grid: extended (doubling) while the best k sits at its top, up to the number of users - 1
K_GRID = (5, 10, 20, 50, 100, 200, 500, 1000)
SHRINK_GRID = (0.0, 2.0, 5.0, 10.0, 20.0)
#: the memory the k search's widest neighbour table may take (``tune_user_knn``'s ``max_k=None``)
NEIGHBOUR_BYTES = 1 << 30
#: a shrink at the top of the grid is followed by ``SHRINK_STEP`` times it, up to ``MAX_SHRINK``
SHRINK_STEP = 2.5
MAX_SHRINK = 1000.0
BM25_K1, BM25_B = 1.2, 0.75


def weight_rows(counts: sp.csr_matrix, weighting: str) -> sp.csr_matrix:
    """The users' rows under ``weighting`` (one of ``WEIGHTINGS``), float32 CSR."""
    from implicit.nearest_neighbours import bm25_weight, tfidf_weight

    c = _as_counts(counts)
    if weighting == "binary":
        out = c.astype(np.float64)
        out.data[:] = 1.0
    elif weighting == "log1p":
        out = c.astype(np.float64)
        out.data = np.log1p(out.data)
    elif weighting == "minmax":
        out = minmax_columns(c)
    elif weighting == "tfidf":
        out = sp.csr_matrix(tfidf_weight(c.astype(np.float64)))
    elif weighting == "bm25":
        out = sp.csr_matrix(bm25_weight(c.astype(np.float64), K1=BM25_K1, B=BM25_B))
    else:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    out.data = np.maximum(out.data, 0.0)  # an idf can dip below 0 for an artist nearly all play
    out.eliminate_zeros()
    out.sort_indices()
    return out.astype(np.float32)


def neighbours(
    weighted: sp.csr_matrix,
    rows: np.ndarray,
    k: int,
    *,
    shrink: float = 0.0,
    block_rows: int = 128,
    head_columns: int | None = None,
    workers: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` neighbours of users ``rows`` by (shrunk) cosine of the rows of ``weighted``.

    The dot products of a block of users with every user sum a dense BLAS product over the
    ``head_columns`` most popular artists (``knn.topk_neighbours``' cost model when None) and a
    sparse product over the rest; blocks run on ``workers`` threads (all cores, at most 2, by
    default). Returns ``(idx int64 [len(rows), k], sim float32)`` padded with -1 / 0, sorted by similarity
    descending, ties by lower index; a user is never its own neighbour.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if shrink < 0:
        raise ValueError(f"shrink must be >= 0, got {shrink}")
    W = sp.csr_matrix(weighted, dtype=np.float32)
    n = W.shape[0]
    rows = _as_rows(rows, n)
    norms = np.sqrt(np.asarray(W.multiply(W).sum(axis=1)).ravel()).astype(np.float32)
    inv = np.where(norms > 0, 1.0 / np.where(norms > 0, norms, 1.0), 0.0).astype(np.float32)
    # the popular artists as dense columns (one BLAS product), the long tail as sparse products
    parts = _split_columns(W, head_columns, DEFAULT_MEMORY_BUDGET, [0])
    if shrink:
        B = W.copy()
        B.data[:] = 1.0
        parts_b = _split_columns(B, head_columns, DEFAULT_MEMORY_BUDGET, [0])
    idx = np.full((len(rows), k), -1, dtype=np.int64)
    sim = np.zeros((len(rows), k), dtype=np.float32)

    def one(s: int) -> None:
        q = rows[s : s + block_rows]
        D = _block(parts, q, 0)  # W[q] @ W.T, dense
        D *= inv[q][:, None]
        D *= inv[None, :]
        if shrink:
            C = _block(parts_b, q, 0)  # shared artists
            D *= C / (C + np.float32(shrink))
        D[np.arange(len(q)), q] = 0.0
        i, v = topk_dense_rows(D, k)
        idx[s : s + len(q)] = i
        sim[s : s + len(q)] = v

    map_blocks(one, range(0, len(rows), block_rows), workers)  # the sparse products release the GIL
    return idx, sim


def aggregate(idx: np.ndarray, sim: np.ndarray, rows_matrix: sp.csr_matrix) -> sp.csr_matrix:
    """Scores: the neighbours' rows of ``rows_matrix`` summed with their similarities as weights."""
    idx = np.asarray(idx, dtype=np.int64)
    valid = idx >= 0
    W = sp.csr_matrix(
        (
            np.asarray(sim, dtype=np.float64)[valid],
            idx[valid],
            np.concatenate([[0], np.cumsum(valid.sum(axis=1))]),
        ),
        shape=(idx.shape[0], rows_matrix.shape[0]),
    )
    return (W @ sp.csr_matrix(rows_matrix, dtype=np.float64)).tocsr()


def _space_matrix(counts: sp.csr_matrix, weighted: sp.csr_matrix, space: str) -> sp.csr_matrix:
    if space == "counts":
        return counts.astype(np.float64)
    if space == "weighted":
        return weighted.astype(np.float64)
    if space == "binary":
        b = counts.astype(np.float64)
        b.data[:] = 1.0
        return b
    raise ValueError(f"space must be one of {SPACES}, got {space!r}")


def user_knn_top_n(
    counts: sp.csr_matrix,
    rows: np.ndarray,
    idx: np.ndarray,
    sim: np.ndarray,
    space: str,
    weighted: sp.csr_matrix | None = None,
    n: int = 10,
    *,
    block_rows: int = 32,
) -> np.ndarray:
    """Top-n unheard artists of users ``rows`` from their neighbours, aggregated in ``space``.

    Small blocks: a block's arrays stay below glibc's mmap threshold (32 MB), so their memory is
    reused instead of mapped and faulted in afresh (which cost as much system time as the work)."""
    c = _as_counts(counts)
    M = _space_matrix(c, weighted if weighted is not None else c, space)
    rows = _as_rows(rows, c.shape[0])
    if len(idx) != len(rows):
        raise ValueError(f"idx must have one row per user in rows ({len(rows)}), got {len(idx)}")
    where = np.full(c.shape[0], -1, dtype=np.int64)  # a user's line in idx / sim
    where[rows] = np.arange(len(rows))

    def scores(r: np.ndarray) -> sp.csr_matrix:
        return aggregate(idx[where[r]], sim[where[r]], M)

    # sparse score blocks (top_n_sparse), on threads
    return top_n_blocks(scores, c, rows, n, block_rows=block_rows, dense=False)


@dataclass(frozen=True)
class UserKNN:
    """A user-kNN setting: ``k``, input ``weighting``, ``shrink`` and aggregation ``space``."""

    k: int = 100
    weighting: str = "binary"
    shrink: float = 0.0
    space: str = "binary"

    def top_n(self, train: sp.csr_matrix, rows: np.ndarray, n: int = 10) -> np.ndarray:
        """Fit on ``train`` and recommend ``n`` unheard artists to each of ``rows``."""
        W = weight_rows(train, self.weighting)
        idx, sim = neighbours(W, rows, self.k, shrink=self.shrink)
        return user_knn_top_n(train, rows, idx, sim, self.space, W, n)


def extend_k_grid(ks: Sequence[int], n_users: int) -> tuple[int, ...]:
    """``ks`` sorted and capped at ``n_users - 1`` (the most neighbours a user can have)."""
    cap = max(1, n_users - 1)
    out = sorted({min(int(x), cap) for x in ks if int(x) >= 1})
    return tuple(out)


def _evaluate(counts, rows, hidden, idx, sim, W, ks, spaces, extra: dict, n: int) -> list[dict]:
    recs = []
    for space in spaces:
        for k in ks:
            top = user_knn_top_n(counts, rows, idx[:, :k], sim[:, :k], space, W, n)
            m = ranking_metrics(hit_ranks(top, hidden), n)
            recs.append(
                {
                    **extra,
                    "space": space,
                    "k": int(k),
                    f"hr_at_{n}": m["hr"],
                    f"ndcg_at_{n}": m["ndcg"],
                    f"mrr_at_{n}": m["mrr"],
                }
            )
    return recs


def _best(table: pd.DataFrame, n: int = 10) -> pd.Series:
    """Highest HR@n; ties by NDCG@n, then smaller k, then table order."""
    t = table.reset_index(drop=True)
    t = t.assign(_order=np.arange(len(t)))
    t = t.sort_values(
        [f"hr_at_{n}", f"ndcg_at_{n}", "k", "_order"], ascending=[False, False, True, True]
    )
    return t.iloc[0].drop("_order")


def tune_user_knn(
    train: sp.csr_matrix,
    rows: np.ndarray,
    hidden_cols: np.ndarray,
    *,
    ks: Sequence[int] = K_GRID,
    weightings: Sequence[str] = WEIGHTINGS,
    spaces: Sequence[str] = SPACES,
    shrinks: Sequence[float] = SHRINK_GRID,
    max_k: int | None = None,
    n: int = 10,
) -> tuple[pd.DataFrame, UserKNN]:
    """Coarse-to-fine search of user-kNN on a validation hold-out (``train`` lacks the hidden cells).

    1. Every weighting x space x k, plain cosine (one neighbour pass per weighting at the largest k).
    2. The best (weighting, space): every shrink of ``shrinks`` x k (one pass per shrink); while
       the best shrink is the largest tried, ``SHRINK_STEP`` times it (up to ``MAX_SHRINK``).
    3. While the best k is the grid's largest and below ``max_k`` (and the user count), the grid is
       doubled at its top and step 2's best (weighting, shrink, space) re-run over the new k.
       ``max_k=None``: as many neighbours as fit ``NEIGHBOUR_BYTES`` for the validation users
       (every other user on the default profile; a fixed 4,000 stopped its curve while it rose).

    Returns the table of every evaluated setting (column ``stage``) and the chosen ``UserKNN``.
    """
    c = _as_counts(train)
    rows = _as_rows(rows, c.shape[0])
    if len(rows) == 0:
        raise ValueError(
            "no validation users: carve a validation hold-out with holdout_split first"
        )
    ks = extend_k_grid(ks, c.shape[0])
    recs: list[dict] = []
    cache: dict[str, sp.csr_matrix] = {}
    for weighting in weightings:
        W = cache.setdefault(weighting, weight_rows(c, weighting))
        idx, sim = neighbours(W, rows, ks[-1])
        recs += _evaluate(
            c,
            rows,
            hidden_cols,
            idx,
            sim,
            W,
            ks,
            spaces,
            {"stage": "coarse", "weighting": weighting, "shrink": 0.0},
            n,
        )
    best = _best(pd.DataFrame(recs), n)
    weighting = str(best["weighting"])
    W = cache[weighting]
    todo = sorted({float(x) for x in shrinks} - {0.0})
    while todo:
        shrink = todo.pop(0)
        idx, sim = neighbours(W, rows, ks[-1], shrink=shrink)
        recs += _evaluate(
            c,
            rows,
            hidden_cols,
            idx,
            sim,
            W,
            ks,
            [str(best["space"])],
            {"stage": "shrink", "weighting": weighting, "shrink": shrink},
            n,
        )
        top = float(_best(pd.DataFrame(recs), n)["shrink"])
        if not todo and top == shrink and shrink < MAX_SHRINK:  # best at the top: one step more
            todo.append(min(SHRINK_STEP * shrink, MAX_SHRINK))
    best = _best(pd.DataFrame(recs), n)
    if max_k is None:
        max_k = max(ks[-1], NEIGHBOUR_BYTES // (12 * max(1, len(rows))))  # int64 ids + float32
    cap = min(int(max_k), c.shape[0] - 1)
    while int(best["k"]) == ks[-1] and ks[-1] < cap:
        new = tuple(x for x in (min(2 * ks[-1], cap), min(4 * ks[-1], cap)) if x > ks[-1])
        ks = tuple(sorted(set(ks) | set(new)))
        idx, sim = neighbours(
            W := cache.setdefault(str(best["weighting"]), weight_rows(c, str(best["weighting"]))),
            rows,
            ks[-1],
            shrink=float(best["shrink"]),
        )
        recs += _evaluate(
            c,
            rows,
            hidden_cols,
            idx,
            sim,
            W,
            new,
            [str(best["space"])],
            {
                "stage": "extend",
                "weighting": str(best["weighting"]),
                "shrink": float(best["shrink"]),
            },
            n,
        )
        best = _best(pd.DataFrame(recs), n)
    table = pd.DataFrame(recs)
    chosen = UserKNN(
        k=int(best["k"]),
        weighting=str(best["weighting"]),
        shrink=float(best["shrink"]),
        space=str(best["space"]),
    )
    return table, chosen
