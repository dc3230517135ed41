"""Shared plumbing of the baselines: top-n lists from score blocks, exact top-k of dense rows, and a
small grid-search harness on a validation hold-out.

Every baseline of chapter 03 produces a top-n list per user through ``top_n_blocks``: a function
returns the scores of a block of users (dense or sparse), the user's training artists are excluded,
and the ``n`` best positive scores are kept. Ties go to the lower column in the sparse path
(``top_n_sparse``) and in the dense path (``top_n_dense``), both comparing scores in float32.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from ..evaluation.metrics import hit_ranks, ranking_metrics
from ..evaluation.protocol import _as_csr, _as_rows
from .knn import _decode, _top_rows, topk_lowest_ties

__all__ = [
    "factor_top_n",
    "grid_search",
    "map_blocks",
    "top_n_blocks",
    "top_n_dense",
    "top_n_finite",
    "top_n_scores",
    "top_n_sparse",
    "topk_dense_rows",
]


#: elements of one padded (rows x width) matrix in the k-th value search
_PAD_ELEMENTS = 1 << 22


def _row_kth(vals: np.ndarray, first: np.ndarray, cnt: np.ndarray, k: int) -> np.ndarray:
    """The ``k``-th largest value of each segment ``vals[first[i] : first[i] + cnt[i]]`` (cnt > k).

    Segments of similar length are padded (with 0, below every value) into dense chunks and
    ``torch.topk`` finds each row's k-th value; only the value is needed, not its position.
    """
    out = np.empty(len(cnt), dtype=vals.dtype)
    order = np.argsort(cnt, kind="stable")
    c_sorted = cnt[order]
    i, n = 0, len(order)
    while i < n:
        window = c_sorted[i : i + 4096]
        fits = np.arange(1, len(window) + 1) * window <= _PAD_ELEMENTS
        m = max(1, int(np.count_nonzero(fits)))  # fits is True then False (both factors grow)
        rows = order[i : i + m]
        c = cnt[rows]
        offs = np.zeros(m + 1, dtype=np.int64)
        np.cumsum(c, out=offs[1:])
        total = int(offs[-1])
        start = np.repeat(first[rows] - offs[:-1], c)
        pos = np.arange(total, dtype=np.int64)
        pad = np.zeros((m, int(c.max())), dtype=vals.dtype)
        pad[np.repeat(np.arange(m), c), pos - np.repeat(offs[:-1], c)] = vals[start + pos]
        top = torch.topk(torch.from_numpy(pad), k, dim=1, sorted=False).values
        out[rows] = top.min(dim=1).values.numpy()
        i += m
    return out


def _sample_bound(indptr: np.ndarray, data: np.ndarray, k: int) -> np.ndarray:
    """A lower bound of each row's ``k``-th largest value (0 where none is computed).

    For a row with many more than ``k`` entries, the ``k``-th largest of a prefix of about
    ``sqrt(k * nnz)`` of its entries: never above the row's own ``k``-th value, and so filtering
    with it keeps every entry that can enter the top ``k`` while dropping most others.
    """
    cnt = np.diff(indptr)
    lb = np.zeros(len(cnt), dtype=data.dtype)
    big = np.flatnonzero(cnt > 8 * k)
    if len(big):
        size = np.minimum(cnt[big], np.maximum(4 * k, 2 * np.sqrt(k * cnt[big]).astype(np.int64)))
        lb[big] = _row_kth(data, indptr[big], size, k)
    return lb


def _topk_entries(
    indptr: np.ndarray,
    indices: np.ndarray,
    data: np.ndarray,
    k: int,
    shape: tuple[int, int],
    row: np.ndarray | None = None,
) -> sp.csr_matrix:
    """The ``k`` largest positive entries of each row of a CSR without duplicate cells, ties by
    lower column, as a CSR with sorted indices (``row``: each entry's row, if already at hand).

    Exact without sorting the entries: a lower bound of each row's k-th value drops most entries
    (``_sample_bound``), then the k-th value of each row with more than ``k`` candidates
    (``_row_kth``), every entry above it, and of the entries equal to it the lowest columns.
    """
    m = shape[0]
    lb = _sample_bound(indptr, data, k)
    lb = np.maximum(lb, np.nextafter(data.dtype.type(0), data.dtype.type(1)))  # positive only
    if row is None:
        row = np.repeat(np.arange(m, dtype=np.int32), np.diff(indptr))
    e = np.flatnonzero(data >= lb[row])
    r, c, v = row[e], indices[e], data[e]
    del row, e
    cnt = np.bincount(r, minlength=m)
    first = np.zeros(m + 1, dtype=np.int64)
    np.cumsum(cnt, out=first[1:])
    heavy = cnt > k
    kth = np.zeros(m, dtype=v.dtype)
    if heavy.any():
        h = np.flatnonzero(heavy)
        kth[h] = _row_kth(v, first[h], cnt[h], k)
    kr = kth[r]
    keep = v > kr
    if heavy.any():
        tied = (v == kr) & heavy[r]
        need = k - np.bincount(r[keep], minlength=m)
        n_tied = np.bincount(r[tied], minlength=m)
        t = np.flatnonzero(tied)
        crossing = (n_tied > need)[r[t]]
        keep[t[~crossing]] = True  # every tied entry fits
        t = t[crossing]
        if len(t):  # more entries tie with the k-th than places are left: lowest columns first
            t = t[np.lexsort((c[t], r[t]))]
            tr = r[t]
            starts = np.zeros(m + 1, dtype=np.int64)
            np.cumsum(np.bincount(tr, minlength=m), out=starts[1:])
            rank = np.arange(len(t)) - starts[tr]
            keep[t[rank < need[tr]]] = True
    out_indptr = np.zeros(m + 1, dtype=np.int64)
    np.cumsum(np.bincount(r[keep], minlength=m), out=out_indptr[1:])
    out = sp.csr_matrix((v[keep], c[keep], out_indptr), shape=shape)
    out.sort_indices()
    return out


def topk_dense_rows(A: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` largest positive entries of each row of ``A``: ``(cols int64, vals float32)``.

    Sorted by value descending, ties by lower column; padded with -1 / 0.
    """
    keys = _top_rows(np.ascontiguousarray(A, dtype=np.float32), k, 0)
    return _decode(keys)


def top_n_dense(scores: np.ndarray, exclude: sp.csr_matrix, n: int = 10) -> np.ndarray:
    """Top ``n`` columns per row of a dense score block, skipping the cells of ``exclude``.

    Only positive scores are recommended (shift scores that can be negative before calling);
    ties go to the lower column. Returns int64 ``[rows, n]`` padded with -1.
    """
    S = np.array(scores, dtype=np.float32, copy=True)
    ex = sp.csr_matrix(exclude)
    if ex.shape != S.shape:
        raise ValueError(f"exclude must have the shape of scores {S.shape}, got {ex.shape}")
    rr, cc = ex.nonzero()
    S[rr, cc] = 0.0
    cols, _ = topk_dense_rows(S, n)
    return cols


def top_n_finite(scores: np.ndarray, n: int = 10) -> np.ndarray:
    """Top ``n`` columns per row of a dense float32 block by score, any finite score (negative ones
    too), ties by lower column; ``-inf`` marks a cell that is never recommended. -1 padded.

    ``knn.topk_lowest_ties`` finds each row's n best, the lowest columns winning ties across the
    cut.
    """
    S = np.ascontiguousarray(scores, dtype=np.float32)
    m, n_cols = S.shape
    out = np.full((m, n), -1, dtype=np.int64)
    take = min(n, n_cols)
    if take == 0 or m == 0:
        return out
    vals, idx = topk_lowest_ties(S, take, positive=False)
    order = np.lexsort((idx, -vals), axis=1)
    idx = np.take_along_axis(idx, order, axis=1)
    vals = np.take_along_axis(vals, order, axis=1)
    out[:, :take] = np.where(np.isneginf(vals), -1, idx)
    return out


def factor_top_n(
    user_factors: np.ndarray,
    item_factors: np.ndarray,
    train: sp.csr_matrix,
    rows: np.ndarray,
    n: int = 10,
    *,
    block_rows: int = 256,
) -> np.ndarray:
    """Top-n unheard artists of users ``rows`` by the dot product of their factors (float32,
    one BLAS product per block of users; any finite score, ties by lower column). A block of 256
    users x 551K artists is 560 MB."""
    t = _as_csr(train, "train")
    rows = _as_rows(rows, t.shape[0])
    U = np.asarray(user_factors, dtype=np.float32)
    V = np.ascontiguousarray(item_factors, dtype=np.float32)
    out = np.full((len(rows), n), -1, dtype=np.int64)
    for s in range(0, len(rows), block_rows):
        r = rows[s : s + block_rows]
        S = U[r] @ V.T
        ex = t[r]
        S[np.repeat(np.arange(len(r)), np.diff(ex.indptr)), ex.indices] = -np.inf
        out[s : s + len(r)] = top_n_finite(S, n)
    return out


def top_n_sparse(scores: sp.spmatrix, exclude: sp.csr_matrix, n: int = 10) -> np.ndarray:
    """Top ``n`` columns per row of a sparse score block, skipping the cells of ``exclude``: the
    result of ``top_n_dense`` on the dense block (scores compared in float32, positive ones only,
    ties by lower column), without densifying. A CSR input must not repeat a cell.

    Heard cells are zeroed through a boolean mask of a few rows at a time; the selection is
    ``_topk_entries`` (exact, no sort of the entries).
    """
    S = sp.csr_matrix(scores)
    ex = sp.csr_matrix(exclude)
    if ex.shape != S.shape:
        raise ValueError(f"exclude must have the shape of scores {S.shape}, got {ex.shape}")
    m, n_cols = S.shape
    v = np.array(S.data, dtype=np.float32)
    row = np.repeat(np.arange(m, dtype=np.int32), np.diff(S.indptr))
    if ex.nnz and S.nnz:
        step = max(1, (1 << 27) // max(n_cols, 1))  # mask chunks of at most 128 MB
        for a in range(0, m, step):
            b = min(m, a + step)
            lo, hi = S.indptr[a], S.indptr[b]
            elo, ehi = ex.indptr[a], ex.indptr[b]
            if hi == lo or ehi == elo:
                continue
            mask = np.zeros((b - a) * n_cols, dtype=bool)
            er = np.repeat(np.arange(b - a, dtype=np.int64), np.diff(ex.indptr[a : b + 1]))
            mask[er * n_cols + ex.indices[elo:ehi]] = True
            flat = (row[lo:hi] - np.int32(a)).astype(np.int64)
            flat *= n_cols
            flat += S.indices[lo:hi]
            v[lo:hi][mask[flat]] = 0.0
    T = _topk_entries(S.indptr, S.indices, v, n, (m, n_cols), row)
    r = np.repeat(np.arange(m), np.diff(T.indptr))
    order = np.lexsort((T.indices, -T.data, r))
    out = np.full((m, n), -1, dtype=np.int64)
    out[r[order], np.arange(len(order)) - T.indptr[r[order]]] = T.indices[order]
    return out


def top_n_scores(
    scores: np.ndarray | sp.spmatrix, exclude: sp.csr_matrix, n: int = 10
) -> np.ndarray:
    """Top-n of a score block, dense (``top_n_dense``) or sparse (``top_n_sparse``, same result:
    positive scores, ties by lower column)."""
    if sp.issparse(scores):
        return top_n_sparse(scores, exclude, n)
    return top_n_dense(scores, exclude, n)


def map_blocks(fn: Callable[[Any], Any], items: Iterable[Any], workers: int | None = None) -> list:
    """``[fn(x) for x in items]``, in order, on ``workers`` threads (all cores, at most 2, by
    default): for blocks whose work releases the GIL, as scipy's sparse products do."""
    items = list(items)
    workers = workers or min(2, os.cpu_count() or 1)
    if workers > 1 and len(items) > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(fn, items))
    return [fn(x) for x in items]


def top_n_blocks(
    score_block: Callable[[np.ndarray], np.ndarray | sp.spmatrix],
    train: sp.csr_matrix,
    rows: Iterable[int],
    n: int = 10,
    *,
    block_rows: int = 1024,
    dense: bool = True,
    workers: int | None = None,
) -> np.ndarray:
    """Top-n unheard artists of users ``rows``: ``score_block(rows_block)`` gives their scores.

    Dense blocks must hold positive scores for anything worth recommending (see ``top_n_dense``)
    and are capped at 200 MB; ``dense=False`` promises sparse blocks, which are not capped and run
    on ``workers`` threads (all cores, at most 2, by default: scipy's sparse products release the
    GIL). The result does not depend on the block size or the thread count.
    """
    t = _as_csr(train, "train")
    rows = _as_rows(
        np.asarray(list(rows) if not isinstance(rows, np.ndarray) else rows), t.shape[0]
    )
    out = np.full((len(rows), n), -1, dtype=np.int64)
    if dense:
        block_rows = max(16, min(block_rows, int(5e7 // max(t.shape[1], 1))))
        workers = 1
    starts = range(0, len(rows), block_rows)

    def one(s: int) -> None:
        r = rows[s : s + block_rows]
        out[s : s + len(r)] = top_n_scores(score_block(r), t[r], n)

    map_blocks(one, starts, workers)
    return out


def grid_search(
    top_n_of: Callable[..., np.ndarray],
    grid: Iterable[Mapping[str, Any]],
    hidden_cols: np.ndarray,
    n: int = 10,
) -> pd.DataFrame:
    """Validation figures of every setting of ``grid``: ``top_n_of(**setting)`` gives the top-n lists
    of the validation users (in the order of ``hidden_cols``). One row per setting with its
    parameters, ``hr_at_n``, ``ndcg_at_n``, ``mrr_at_n`` and ``seconds``."""
    records = []
    for setting in grid:
        t0 = time.perf_counter()
        top = top_n_of(**setting)
        m = ranking_metrics(hit_ranks(top, hidden_cols), n)
        records.append(
            {
                **setting,
                f"hr_at_{n}": m["hr"],
                f"ndcg_at_{n}": m["ndcg"],
                f"mrr_at_{n}": m["mrr"],
                "seconds": time.perf_counter() - t0,
            }
        )
    return pd.DataFrame(records)
