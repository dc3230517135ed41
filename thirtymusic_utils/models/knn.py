"""User-based collaborative filtering as the study ran it, as it wrote it, and corrected, on all users.

The pieces, in the order chapter 02 uses them:

* ``holdout_split``: the study's protocol. Users in id order (matrix rows); a user with more than
  ``min_artists`` distinct artists becomes a test user while ``count < test_share * n_users`` before
  adding them; one of their artists at play-count ranks 2..6 (descending counts, ties by lower column)
  is chosen uniformly and removed from the training matrix.
* ``weight_matrix``: the input weighting: ``minmax`` (scikit-learn ``MinMaxScaler`` semantics per artist
  column, implicit zeros included, as the study), ``log1p`` or ``binary``.
* ``topk_neighbours``: cosine top-k between users by blockwise sparse products, never a dense users x
  users matrix. The most popular artist columns go through a dense BLAS product, the long tail through
  sparse products; the per-row selection is a partial sort with exact tie handling.
* ``aggregate_scores``: the three aggregations of the neighbours' raw count rows: ``seed_as_run``
  (unweighted sum: the study's weighting line discarded its result), ``seed_as_written``
  (``1 - minmax(similarity)`` weights, which give the most similar neighbour weight 0) and
  ``weighted`` (cosine-similarity weights).
* ``recommend_top_n`` / ``popularity_top_n``: top-n unheard artists with positive score.
* metrics (re-exported from ``metrics``), tuning on a validation hold-out, per-user outcomes, and the
  benchmark bodies that ``make bench`` calls.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from scipy.linalg.blas import sgemm
from tqdm import tqdm

from ..book.paths import artifacts_dir, require_artifact
from ..evaluation.metrics import (
    catalogue_coverage,
    hit_ranks,
    hr_at_k,
    hr_by_activity,
    mean_popularity,
    mrr_at_k,
    ndcg_at_k,
    ranking_metrics,
)
from ..evaluation.protocol import Split, _as_counts, _as_csr, _as_rows

__all__ = [
    "AGGREGATIONS",
    "MODELS",
    "STUDY_HR_AT_10",
    "STUDY_K",
    "TUNING_GRIDS",
    "WEIGHTINGS",
    "aggregate_scores",
    "best_setting",
    "catalogue_coverage",
    "cf_top_n",
    "evaluation_table",
    "hit_ranks",
    "hr_at_k",
    "hr_by_activity",
    "load_outcomes",
    "mean_popularity",
    "minmax_columns",
    "mrr_at_k",
    "ndcg_at_k",
    "neighbour_weights",
    "outcomes_frame",
    "popularity",
    "popularity_top_n",
    "ranking_metrics",
    "recommend_top_n",
    "recommendation_table",
    "save_outcomes",
    "similar_artists",
    "topk_lowest_ties",
    "topk_neighbours",
    "tune_knn",
    "user_neighbours",
    "weight_matrix",
]

WEIGHTINGS = ("minmax", "log1p", "binary")
STUDY_HR_AT_10 = 0.065  # the study's reported HR@10 of its user-kNN (its own 10,000-user extract)
STUDY_K = 30
# the validation grid of k per profile ("tiny" must run in seconds)
TUNING_GRIDS = {
    "tiny": (5, 10, 20),
    "default": (10, 20, 30, 50, 100, 200, 300),
    "full": (10, 20, 30, 50, 100, 200, 300),
}
AGGREGATIONS = ("seed_as_run", "seed_as_written", "weighted")
# the columns of outcomes_02.csv after user_id, artist_id (the statistics chapters read them); the
# tuned user-kNN is chapter 03's (outcomes_03.csv)
MODELS = ("popularity", "cf_seed", "cf_seed_as_written", "cf_weighted")
OUTCOMES_FILE = "outcomes_02.csv"
DEFAULT_MEMORY_BUDGET = 2 * 2**30  # bytes of block temporaries in topk_neighbours (all workers)

_LOW32 = np.int64(0xFFFFFFFF)


# --------------------------------------------------------------------------------------------------
# input weighting


def minmax_columns(counts: sp.csr_matrix) -> sp.csr_matrix:
    """Scale each column to [0, 1] as scikit-learn's ``MinMaxScaler`` on the dense matrix would.

    The column minimum counts the implicit zeros (it is 0 unless every row has the artist); a
    constant column becomes all zeros (the scaler replaces a zero range by 1). float64 CSR.
    """
    c = _as_csr(counts).astype(np.float64)
    n = c.shape[0]
    col_nnz = np.bincount(c.indices, minlength=c.shape[1])
    col_max = np.zeros(c.shape[1])
    col_min = np.zeros(c.shape[1])
    if c.nnz:
        csc = c.tocsc()
        nonempty = np.flatnonzero(np.diff(csc.indptr) > 0)
        starts = csc.indptr[nonempty]
        col_max[nonempty] = np.maximum.reduceat(csc.data, starts)
        full = col_nnz == n  # no implicit zero in the column
        col_min[nonempty] = np.minimum.reduceat(csc.data, starts)
        col_min[~full] = 0.0
    rng = col_max - col_min
    rng[rng == 0] = 1.0
    out = c.copy()
    out.data = (out.data - col_min[out.indices]) / rng[out.indices]
    out.eliminate_zeros()
    return out


def weight_matrix(counts: sp.csr_matrix, weighting: str = "minmax") -> sp.csr_matrix:
    """The users' input vectors for cosine similarity: ``minmax``, ``log1p`` or ``binary`` (float32)."""
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    c = _as_counts(counts)
    if weighting == "minmax":
        out = minmax_columns(c)
    else:
        out = c.astype(np.float64)
        out.data = np.log1p(out.data) if weighting == "log1p" else np.ones_like(out.data)
    return out.astype(np.float32)


# --------------------------------------------------------------------------------------------------
# top-k neighbours


def _l2_rows(X: sp.csr_matrix) -> sp.csr_matrix:
    """Rows scaled to unit L2 norm (float32); all-zero rows stay zero."""
    Xf = X.astype(np.float32, copy=True)
    sq = np.bincount(
        np.repeat(np.arange(Xf.shape[0]), np.diff(Xf.indptr)),
        weights=Xf.data.astype(np.float64) ** 2,
        minlength=Xf.shape[0],
    )
    norm = np.sqrt(sq)
    norm[norm == 0] = 1.0
    Xf.data = (Xf.data / np.repeat(norm, np.diff(Xf.indptr))).astype(np.float32)
    return Xf


@dataclass
class _Parts:
    """Normalised rows split by column: a dense head of popular artists and a sparse tail."""

    head: np.ndarray  # (n, H) float32, C order
    tail: sp.csr_matrix  # (n, A) float32 without the head entries
    suffixes: list[tuple[int, sp.csr_matrix]]  # (lo, tail[lo:].T as CSR), lo ascending from 0


def _split_columns(
    Xn: sp.csr_matrix, head_columns: int | None, budget: int, starts: Sequence[int]
) -> _Parts:
    """Split the columns of ``Xn`` and transpose the tail from each of ``starts`` on."""
    n, n_cols = Xn.shape
    col_nnz = np.bincount(Xn.indices, minlength=n_cols)
    if head_columns is None:
        # a column is worth a dense pass when enough users share it: dense costs one multiply-add
        # per user pair and column, sparse a scattered update per pair of its listeners
        h = int((col_nnz >= max(64, n // 32)).sum())
        h = min(h, 4096, max(0, budget // (8 * max(n, 1))))
    else:
        h = min(int(head_columns), n_cols)
    order = np.argsort(-col_nnz, kind="stable")[:h]
    head_cols = np.sort(order[col_nnz[order] > 0])
    h = len(head_cols)
    pos = np.full(n_cols, -1, dtype=np.int64)
    pos[head_cols] = np.arange(h)
    row_of = np.repeat(np.arange(n), np.diff(Xn.indptr))
    in_head = pos[Xn.indices] >= 0
    head = np.zeros((n, h), dtype=np.float32)
    head[row_of[in_head], pos[Xn.indices[in_head]]] = Xn.data[in_head]
    keep = ~in_head
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(row_of[keep], minlength=n), out=indptr[1:])
    tail = sp.csr_matrix((Xn.data[keep], Xn.indices[keep], indptr), shape=(n, n_cols))
    suffixes = []
    if tail.nnz:
        T = tail.T.tocsr()  # artists x users, users ascending within each row
        T.sort_indices()
        for lo in starts:
            if lo == 0:
                suffixes.append((0, T))
                continue
            later = T.indices >= lo  # a suffix of every row
            ck = np.zeros(len(later) + 1, dtype=np.int64)
            np.cumsum(later, out=ck[1:])
            sub_indptr = np.zeros(n_cols + 1, dtype=np.int64)
            np.cumsum(ck[T.indptr[1:]] - ck[T.indptr[:-1]], out=sub_indptr[1:])
            sub = sp.csr_matrix(
                (T.data[later], T.indices[later] - lo, sub_indptr), shape=(n_cols, n - lo)
            )
            suffixes.append((int(lo), sub))
    return _Parts(head, tail, suffixes)


def _block(parts: _Parts, q: np.ndarray, col0: int) -> np.ndarray:
    """Cosine of users ``q`` against users ``col0..n-1`` as a dense float32 block."""
    lo, S = col0, None
    for s_lo, s_T in parts.suffixes:  # the latest transposed suffix that covers col0
        if s_lo <= col0:
            lo, S = s_lo, s_T
    n, h = parts.head.shape
    D = None
    if S is not None:
        Xq = parts.tail[q]
        if Xq.nnz:
            D = (Xq @ S).toarray()  # the sparse tail, dense: (len(q), n - lo) float32, C order
    if D is None:
        D = np.zeros((len(q), n - lo), dtype=np.float32)
    if h:
        # D += head[q] @ head[lo:].T in place: as Fortran arrays, D.T (n-lo x q) += op(A) @ B
        out = sgemm(
            1.0, parts.head[lo:].T, parts.head[q].T, beta=1.0, c=D.T, trans_a=1, overwrite_c=1
        )
        if not np.shares_memory(out, D):  # pragma: no cover - f2py copies only unexpected layouts
            D = np.ascontiguousarray(out.T)
    return D[:, col0 - lo :]


def _encode(vals: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """int64 keys ordered as (similarity desc, id asc); -1 for non-positive similarities."""
    v = np.ascontiguousarray(vals, dtype=np.float32)
    keys = (v.view(np.int32).astype(np.int64) << 32) | (_LOW32 - ids.astype(np.int64))
    keys[~(v > 0)] = -1
    return keys


def _decode(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    valid = keys >= 0
    idx = np.where(valid, _LOW32 - (keys & _LOW32), -1).astype(np.int64)
    bits = np.where(valid, keys >> 32, 0).astype(np.int32)
    return idx, bits.view(np.float32).copy()


def _kth_sim(keys: np.ndarray) -> np.ndarray:
    """The similarity of each row's last (k-th) key, 0 where the row is not full."""
    last = keys[:, -1]
    bits = np.where(last >= 0, last >> 32, 0).astype(np.int32)
    return bits.view(np.float32).copy()


def _group_top(keys: np.ndarray, groups: np.ndarray, m: int, kk: int) -> np.ndarray:
    """The ``kk`` largest keys of each of ``m`` groups, sorted descending, -1 padded."""
    out = np.full((m, kk), -1, dtype=np.int64)
    if len(keys) == 0:
        return out
    order = np.lexsort((-keys, groups))
    g, key = groups[order], keys[order]
    first = np.zeros(m + 1, dtype=np.int64)
    np.cumsum(np.bincount(g, minlength=m), out=first[1:])
    pos = np.arange(len(g)) - first[g]
    keep = pos < kk
    out[g[keep], pos[keep]] = key[keep]
    return out


def topk_lowest_ties(
    A: np.ndarray, take: int, positive: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """``torch.topk`` of the ``take`` (<= columns) largest values of each row of float32 ``A``:
    ``(vals, cols)``, unsorted. Where more cells tie with a row's ``take``-th value than places are
    left, the lowest columns among them win; rows whose ``take``-th value is not positive (not
    finite, with ``positive=False``) are left as ``torch.topk`` gives them."""
    vals, idx = (t.numpy() for t in torch.topk(torch.from_numpy(A), take, dim=1))
    if take < A.shape[1]:
        kth = vals[:, -1]
        judged = kth > 0 if positive else np.isfinite(kth)
        crossing = judged & (np.count_nonzero(A >= kth[:, None], axis=1) > take)
        for r in np.flatnonzero(crossing):  # ties across the cut: the lowest columns win
            row = A[r]
            gt = np.flatnonzero(row > kth[r])
            eq = np.flatnonzero(row == kth[r])[: take - len(gt)]
            idx[r] = np.concatenate([gt, eq])
            vals[r] = row[idx[r]]
    return vals, idx


def _top_rows(A: np.ndarray, kk: int, offset: int) -> np.ndarray:
    """Keys of the ``kk`` largest positive entries of each row (column j has id offset + j).

    Exact: entries tied with the kk-th value are taken in ascending id order. Sorted descending.
    """
    m, N = A.shape
    out = np.full((m, kk), -1, dtype=np.int64)
    take = min(kk, N)
    if take == 0 or m == 0:
        return out
    vals, idx = topk_lowest_ties(A, take)
    keys = _encode(vals, idx + offset)
    keys.sort(axis=1)
    out[:, :take] = keys[:, ::-1]
    return out


def _top_cols(L: np.ndarray, kk: int, thr: np.ndarray, offset: int) -> np.ndarray:
    """Per column of ``L`` (a later user), keys of the entries (block users, id offset + row) that
    can enter its top ``kk``: those at least ``thr`` (its current k-th similarity, 0 if unknown)
    and, where ``thr`` is unknown, at least the column's own kk-th value. Returns (N, kk) keys."""
    m, N = L.shape
    tiny = np.float32(np.finfo(np.float32).tiny)
    lo = np.maximum(thr.astype(np.float32), tiny)
    free = np.flatnonzero(thr <= 0)
    take = min(kk, m)
    if len(free) and take < m:
        sub = torch.from_numpy(np.ascontiguousarray(L[:, free]))
        lo[free] = np.maximum(torch.topk(sub, take, dim=0).values[-1].numpy(), tiny)
    rows, cols = np.nonzero(L >= lo[None, :])
    return _group_top(_encode(L[rows, cols], rows + offset), cols, N, kk)


def _merge(a: np.ndarray, b: np.ndarray, kk: int) -> np.ndarray:
    """The kk largest keys of each row of ``a`` and ``b`` together, sorted descending."""
    both = np.concatenate([a, b], axis=1)
    both.sort(axis=1)
    return both[:, ::-1][:, :kk]


def _auto_block_rows(n: int, workers: int, budget: int) -> int:
    # per block row: the dense block (4 B per user), masks and the sparse product (about 12 B per
    # user when dense-ish) with its dense copy
    per_row = 24 * max(n, 1)
    b = budget // (max(workers, 1) * per_row)
    return int(min(max(b, 16), 4096))


def topk_neighbours(
    X: sp.csr_matrix,
    k: int,
    *,
    rows: np.ndarray | None = None,
    block_rows: int | None = None,
    progress: bool = False,
    workers: int | None = None,
    head_columns: int | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    n_suffixes: int = 8,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` most cosine-similar rows of ``X`` for each of ``rows`` (all rows when None).

    Returns ``(idx, sim)``: int64 ``[n_rows, k]`` row indices padded with -1, and float32
    similarities padded with 0, sorted by similarity descending, ties by lower index. A row is
    never its own neighbour and rows with zero (or negative) similarity are not neighbours.

    Rows are L2-normalised in float32 and processed in blocks of ``block_rows`` (chosen from
    ``memory_budget`` when None) by ``workers`` threads: ``block @ X.T`` as a dense product over
    the popular columns (``head_columns`` of them; chosen by a cost model when None) plus a sparse
    product over the rest, then a per-row partial sort (``torch.topk``) with exact tie handling.
    With ``rows=None`` each pair is computed once (block against later users only) and offered
    to both users, who keep it if it beats their current k-th neighbour; the sparse tail is
    transposed from ``n_suffixes`` evenly spaced block starts on (memory against wasted work).
    """
    if not sp.issparse(X):
        raise TypeError(f"X must be a scipy.sparse matrix, got {type(X).__name__}")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    X = sp.csr_matrix(X)
    n = X.shape[0]
    symmetric = rows is None
    queries = np.arange(n, dtype=np.int64) if symmetric else _as_rows(rows, n)
    m_all = len(queries)
    idx_out = np.full((m_all, k), -1, dtype=np.int64)
    sim_out = np.zeros((m_all, k), dtype=np.float32)
    kk = min(k, n - 1)
    if kk <= 0 or m_all == 0:
        return idx_out, sim_out
    workers = workers or min(4, os.cpu_count() or 1)
    B = int(block_rows) if block_rows else _auto_block_rows(n, workers, memory_budget)
    if B < 1:
        raise ValueError(f"block_rows must be positive, got {block_rows}")
    Xn = _l2_rows(_as_csr(X, "X"))
    starts = list(range(0, m_all, B))
    # symmetric: the tail is transposed from a few block starts on; a block uses the latest one
    n_suffix = min(len(starts), max(1, int(n_suffixes))) if symmetric else 1
    suffix_starts = sorted({starts[(i * len(starts)) // n_suffix] for i in range(n_suffix)})
    parts = _split_columns(Xn, head_columns, memory_budget, suffix_starts)
    out_keys = np.full((m_all, kk), -1, dtype=np.int64)
    buffer = np.full((n, kk), -1, dtype=np.int64) if symmetric else None

    def work(start: int, thr_later: np.ndarray | None):
        q = queries[start : start + B]
        m = len(q)
        if not symmetric:
            A = _block(parts, q, 0)
            A[np.arange(m), q] = -1.0  # self
            return start, _top_rows(A, kk, 0), None
        a = int(q[0])
        A = _block(parts, q, a)
        A[np.arange(m), np.arange(m)] = -1.0  # self
        row_keys = _top_rows(A, kk, a)
        col_keys = _top_cols(A[:, m:], kk, thr_later, a) if A.shape[1] > m else None
        return start, row_keys, col_keys

    def submit(pool: ThreadPoolExecutor, start: int):
        if symmetric:  # later users' k-th similarity offered so far: a bound that is never too high
            return pool.submit(work, start, _kth_sim(buffer[min(start + B, n) :]))
        return pool.submit(work, start, None)

    bar = tqdm(total=m_all, desc="neighbours", unit="user", disable=not progress, leave=False)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: deque = deque()
        todo = iter(starts)
        for s in todo:
            pending.append(submit(pool, s))
            if len(pending) > workers:
                break
        while pending:
            start, row_keys, col_keys = pending.popleft().result()
            m = len(row_keys)
            if symmetric:
                out_keys[start : start + m] = _merge(buffer[start : start + m], row_keys, kk)
                if col_keys is not None:
                    later = buffer[start + m :]
                    upd = np.flatnonzero(col_keys[:, 0] > later[:, -1])
                    if len(upd):
                        later[upd] = _merge(later[upd], col_keys[upd], kk)
            else:
                out_keys[start : start + m] = row_keys
            nxt = next(todo, None)
            if nxt is not None:
                pending.append(submit(pool, nxt))
            bar.update(m)
    bar.close()
    idx, sim = _decode(out_keys)
    idx_out[:, :kk] = idx
    sim_out[:, :kk] = sim
    return idx_out, sim_out


def user_neighbours(
    train: sp.csr_matrix,
    k: int,
    *,
    weighting: str = "minmax",
    rows: np.ndarray | None = None,
    progress: bool = False,
    **kwargs,
) -> tuple[np.ndarray, np.ndarray]:
    """``topk_neighbours`` of ``rows`` on the training matrix weighted by ``weighting``."""
    return topk_neighbours(
        weight_matrix(train, weighting), k, rows=rows, progress=progress, **kwargs
    )


# --------------------------------------------------------------------------------------------------
# aggregation and recommendation


def neighbour_weights(sim: np.ndarray, idx: np.ndarray, aggregation: str) -> np.ndarray:
    """Weight of each neighbour's count row under ``aggregation`` (0 for padding).

    ``seed_as_run``: 1 each. ``seed_as_written``: ``1 - minmax(sim)`` over the user's neighbours
    (MinMaxScaler semantics: a constant list scales to 0, so every weight is 1). ``weighted``: sim.
    """
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
    sim = np.asarray(sim, dtype=np.float64)
    valid = np.asarray(idx) >= 0
    if sim.shape != valid.shape:
        raise ValueError(f"sim and idx must have the same shape, got {sim.shape} and {valid.shape}")
    if aggregation == "seed_as_run":
        w = np.ones_like(sim)
    elif aggregation == "weighted":
        w = sim.copy()
    else:
        lo = np.where(valid, sim, np.inf).min(axis=1, initial=np.inf)[:, None]
        hi = np.where(valid, sim, -np.inf).max(axis=1, initial=-np.inf)[:, None]
        rng = hi - lo
        rng = np.where(np.isfinite(rng) & (rng > 0), rng, 1.0)
        scaled = np.where(valid, (sim - np.where(np.isfinite(lo), lo, 0.0)) / rng, 0.0)
        w = 1.0 - scaled
    return np.where(valid, w, 0.0)


def aggregate_scores(
    idx: np.ndarray, sim: np.ndarray, counts: sp.csr_matrix, aggregation: str
) -> sp.csr_matrix:
    """Scores ``[n_rows, n_artists]``: the neighbours' raw count rows summed with their weights."""
    counts = sp.csr_matrix(counts)
    if counts.dtype != np.float64:
        counts = counts.astype(np.float64)
    idx = np.asarray(idx, dtype=np.int64)
    w = neighbour_weights(sim, idx, aggregation)
    valid = idx >= 0
    if valid.any() and idx[valid].max() >= counts.shape[0]:
        raise ValueError(
            f"neighbour indices reach {idx[valid].max()}, counts has {counts.shape[0]} rows"
        )
    m = idx.shape[0]
    W = sp.csr_matrix(
        (w[valid], idx[valid], np.concatenate([[0], np.cumsum(valid.sum(axis=1))])),
        shape=(m, counts.shape[0]),
    )
    return (W @ counts).tocsr()


def _top_n_row(vals: np.ndarray, cols: np.ndarray, n: int) -> np.ndarray:
    """The ``n`` columns of highest positive value, ties by lower column, as a -1 padded row."""
    out = np.full(n, -1, dtype=np.int64)
    pos = vals > 0
    vals, cols = vals[pos], cols[pos]
    if len(vals) > n:
        t = np.partition(vals, len(vals) - n)[len(vals) - n]
        keep = vals >= t
        vals, cols = vals[keep], cols[keep]
    order = np.lexsort((cols, -vals))[:n]
    out[: len(order)] = cols[order]
    return out


def recommend_top_n(
    scores: sp.csr_matrix | np.ndarray, exclude: sp.csr_matrix, n: int = 10
) -> np.ndarray:
    """Top ``n`` columns per row by score, skipping cells present in ``exclude`` (heard artists).

    Only positive scores are recommended; ties go to the lower column. Returns int64 ``[rows, n]``
    padded with -1. ``scores`` may be sparse or dense; ``exclude`` has the same shape.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    ex = sp.csr_matrix(exclude, copy=True)
    if ex.shape != scores.shape:
        raise ValueError(f"exclude must have the shape of scores {scores.shape}, got {ex.shape}")
    ex.eliminate_zeros()
    ex.sort_indices()
    m = scores.shape[0]
    out = np.full((m, n), -1, dtype=np.int64)
    if sp.issparse(scores):
        S = scores.tocsr()  # a CSR input is used as it is: it must not repeat a cell
        for r in range(m):
            a, b = S.indptr[r], S.indptr[r + 1]
            if b == a:
                continue
            vals, cols = S.data[a:b], S.indices[a:b].astype(np.int64)
            heard = ex.indices[ex.indptr[r] : ex.indptr[r + 1]]
            if len(heard):
                pos = np.minimum(np.searchsorted(heard, cols), len(heard) - 1)
                unheard = heard[pos] != cols
                vals, cols = vals[unheard], cols[unheard]
            out[r] = _top_n_row(vals, cols, n)
        return out
    S = np.array(scores, dtype=np.float64, copy=True)
    if S.ndim != 2:
        raise ValueError(f"scores must be 2-D, got shape {S.shape}")
    rr, cc = ex.nonzero()
    S[rr, cc] = -np.inf
    cols = np.arange(S.shape[1], dtype=np.int64)
    for r in range(m):
        out[r] = _top_n_row(S[r], cols, n)
    return out


def evaluation_table(
    topn: dict[str, np.ndarray],
    ranks: dict[str, np.ndarray],
    n_items: int,
    item_share: np.ndarray,
    labels: dict[str, str] | None = None,
    k: int = 10,
) -> pd.DataFrame:
    """One row per model: HR/NDCG/MRR@k, catalogue coverage and the mean ``item_share`` (e.g. share
    of training users who played the artist) of its recommendations."""
    labels = labels or {}
    records = []
    for model, top in topn.items():
        m = ranking_metrics(ranks[model], k)
        records.append(
            {
                "model": labels.get(model, model),
                f"HR@{k}": m["hr"],
                f"NDCG@{k}": m["ndcg"],
                f"MRR@{k}": m["mrr"],
                "coverage": catalogue_coverage(top, n_items),
                "mean listener share": mean_popularity(top, item_share),
            }
        )
    return pd.DataFrame(records).set_index("model")


def popularity(train: sp.csr_matrix) -> np.ndarray:
    """Number of training users who played each artist (int64)."""
    t = sp.csr_matrix(train)
    return np.bincount(t.indices[t.data != 0], minlength=t.shape[1]).astype(np.int64)


def popularity_top_n(train: sp.csr_matrix, rows: np.ndarray, n: int = 10) -> np.ndarray:
    """Most-popular baseline: the ``n`` artists with most training listeners that each user has not
    heard (ties by lower column; artists nobody played are never recommended)."""
    t = _as_csr(train, "train")
    rows = _as_rows(rows, t.shape[0])
    pop = popularity(t)
    order = np.lexsort((np.arange(len(pop)), -pop))
    order = order[pop[order] > 0]
    out = np.full((len(rows), n), -1, dtype=np.int64)
    for i, r in enumerate(rows):
        heard = t.indices[t.indptr[r] : t.indptr[r + 1]]
        cand = order[: n + len(heard)]
        cand = cand[~np.isin(cand, heard, assume_unique=True)][:n]
        out[i, : len(cand)] = cand
    return out


def cf_top_n(
    train: sp.csr_matrix,
    rows: np.ndarray,
    idx: np.ndarray,
    sim: np.ndarray,
    aggregation: str,
    n: int = 10,
    *,
    block_rows: int = 1024,
    progress: bool = False,
) -> np.ndarray:
    """Top-n recommendations of users ``rows`` from their neighbours ``(idx, sim)``, block by block.

    Excludes what each user played in ``train``; memory is bounded by ``block_rows`` users' scores.
    """
    t = sp.csr_matrix(train)
    rows = _as_rows(rows, t.shape[0])
    if len(idx) != len(rows):
        raise ValueError(f"idx must have one row per user in rows ({len(rows)}), got {len(idx)}")
    tf = t.astype(np.float64)
    out = np.full((len(rows), n), -1, dtype=np.int64)
    for s in tqdm(
        range(0, len(rows), block_rows), desc=aggregation, disable=not progress, leave=False
    ):
        e = s + block_rows
        scores = aggregate_scores(idx[s:e], sim[s:e], tf, aggregation)
        out[s:e] = recommend_top_n(scores, t[rows[s:e]], n)
    return out


def recommendation_table(matrix, row: int, cols: np.ndarray, scores: sp.csr_matrix | None = None):
    """A DataFrame of one user's recommendations with artist ids and names (and scores if given).

    ``matrix`` is the ``UserArtistMatrix``; ``scores`` a 1 x n_artists sparse row of that user.
    """
    cols = np.asarray(cols, dtype=np.int64)
    cols = cols[cols >= 0]
    frame = pd.DataFrame(
        {
            "rank": np.arange(1, len(cols) + 1),
            "artist_id": matrix.artist_ids[cols],
            "name": matrix.artist_names[cols],
        }
    )
    if scores is not None:
        frame["score"] = np.asarray(sp.csr_matrix(scores)[0, cols].todense()).ravel()
    frame.attrs["user_id"] = int(matrix.user_ids[row])
    return frame


def similar_artists(
    train: sp.csr_matrix, col: int | Sequence[int], n: int = 10, *, weighting: str = "binary"
) -> tuple[np.ndarray, np.ndarray]:
    """The ``n`` artists most cosine-similar to artist column ``col`` (over users, sparse).

    Columns are the users' ``weighting`` vectors; the artist itself and artists with zero
    similarity are left out; ties go to the lower column. Returns ``(cols int64, sims float64)``
    padded with -1 / 0; 1-D for one column, 2-D for a list of columns.
    """
    W = weight_matrix(train, weighting).astype(np.float64).tocsc()
    n_cols = W.shape[1]
    one = np.ndim(col) == 0
    targets = np.atleast_1d(np.asarray(col, dtype=np.int64))
    if len(targets) and (targets.min() < 0 or targets.max() >= n_cols):
        raise ValueError(f"col must be artist columns in [0, {n_cols}), got {targets}")
    norms = np.sqrt(np.asarray(W.multiply(W).sum(axis=0)).ravel())
    Wr = W.tocsr()
    out_c = np.full((len(targets), n), -1, dtype=np.int64)
    out_s = np.zeros((len(targets), n))
    for i, j in enumerate(targets):
        a, b = W.indptr[j], W.indptr[j + 1]
        if b == a:
            continue
        users, vals = W.indices[a:b], W.data[a:b]
        dots = np.asarray(Wr[users].T @ vals).ravel()
        with np.errstate(divide="ignore", invalid="ignore"):
            cos = np.where(norms > 0, dots / (norms * norms[j]), 0.0)
        cos[j] = 0.0
        top = _top_n_row(cos, np.arange(n_cols, dtype=np.int64), n)
        out_c[i] = top
        out_s[i, top >= 0] = cos[top[top >= 0]]
    if one:
        return out_c[0], out_s[0]
    return out_c, out_s


# --------------------------------------------------------------------------------------------------
# tuning on a validation hold-out


def tune_knn(
    train: sp.csr_matrix,
    rows: np.ndarray,
    hidden_cols: np.ndarray,
    *,
    ks: Sequence[int] = (10, 20, 30, 50, 100, 200, 300),
    weightings: Sequence[str] = WEIGHTINGS,
    aggregation: str = "weighted",
    n: int = 10,
    progress: bool = False,
) -> pd.DataFrame:
    """HR/NDCG/MRR@n of user-kNN for every (weighting, k) on a validation hold-out.

    ``train`` must already lack the validation users' hidden cells. Neighbours are computed once per
    weighting at the largest k; smaller k take the prefix of the sorted lists.
    """
    rows = _as_rows(rows, train.shape[0])
    if len(rows) == 0:
        raise ValueError(
            "no validation users: carve a validation hold-out with holdout_split first"
        )
    ks = sorted({int(x) for x in ks})
    if ks[0] < 1:
        raise ValueError(f"ks must be positive, got {ks}")
    records = []
    for weighting in weightings:
        idx, sim = user_neighbours(train, ks[-1], weighting=weighting, rows=rows, progress=progress)
        for k in ks:
            top = cf_top_n(train, rows, idx[:, :k], sim[:, :k], aggregation, n)
            m = ranking_metrics(hit_ranks(top, hidden_cols), n)
            records.append(
                {
                    "weighting": weighting,
                    "k": k,
                    f"hr_at_{n}": m["hr"],
                    f"ndcg_at_{n}": m["ndcg"],
                    f"mrr_at_{n}": m["mrr"],
                    "n_users": len(rows),
                }
            )
    return pd.DataFrame(records)


def best_setting(table: pd.DataFrame, n: int = 10) -> tuple[int, str]:
    """The (k, weighting) with the highest HR@n; ties by NDCG@n, then smaller k, then WEIGHTINGS order."""
    if table.empty:
        raise ValueError("the tuning table is empty")
    t = table.assign(
        _w=[WEIGHTINGS.index(w) if w in WEIGHTINGS else 99 for w in table["weighting"]]
    )
    t = t.sort_values(
        [f"hr_at_{n}", f"ndcg_at_{n}", "k", "_w"], ascending=[False, False, True, True]
    )
    best = t.iloc[0]
    return int(best["k"]), str(best["weighting"])


# --------------------------------------------------------------------------------------------------
# per-user outcomes for chapter 05


def outcomes_frame(
    user_ids: np.ndarray,
    artist_ids: np.ndarray,
    split: Split,
    ranks: dict[str, np.ndarray],
    models: Sequence[str] = MODELS,
) -> pd.DataFrame:
    """One row per test user: original ``user_id``, hidden ``artist_id`` and ``rank_<model>`` per model.

    ``ranks`` maps each of ``models`` (chapter 02's ``MODELS`` by default) to its hit ranks
    (0 = not in the top 10, else 1..10).
    """
    missing = [m for m in models if m not in ranks]
    if missing:
        raise ValueError(f"ranks lacks models {missing}; expected all of {tuple(models)}")
    frame = pd.DataFrame(
        {
            "user_id": np.asarray(user_ids, dtype=np.int64)[split.test_rows],
            "artist_id": np.asarray(artist_ids, dtype=np.int64)[split.hidden_cols],
        }
    )
    for model in models:
        r = np.asarray(ranks[model], dtype=np.int64)
        if len(r) != split.n_test:
            raise ValueError(
                f"ranks[{model!r}] has {len(r)} values, the split {split.n_test} test users"
            )
        frame[f"rank_{model}"] = r
    return frame


def save_outcomes(frame: pd.DataFrame, build_dir: str | os.PathLike | None) -> Path:
    """Write ``BUILD_DIR/artifacts/outcomes_02.csv``."""
    path = artifacts_dir(build_dir) / OUTCOMES_FILE
    frame.to_csv(path, index=False)
    return path


def load_outcomes(build_dir: str | os.PathLike | None) -> pd.DataFrame:
    """Read ``outcomes_02.csv`` (int64 columns)."""
    path = require_artifact(build_dir, OUTCOMES_FILE, "02_collaborative_filtering")
    return pd.read_csv(path, dtype="int64")
