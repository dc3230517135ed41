"""Item-based kNN (Sarwar et al. 2001; as tuned by Ferrari Dacrema et al. 2019).

The similarity of artists ``i`` and ``j`` is the cosine of their listener columns with a shrinkage
term in the denominator, ``x_i . x_j / (|x_i| |x_j| + shrink)``, over the users' rows under an input
weighting (``binary`` or ``bm25``); each artist keeps its ``k`` most similar artists. A user's score
for artist ``j`` is the sum of the similarities of ``j`` to the artists the user played (binary rows).
Similarities are computed a block of artists at a time as sparse products and pruned to the top
``k`` per artist, so no dense artists x artists matrix is ever built.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ..evaluation.protocol import _as_counts, _as_rows
from .scoring import _topk_entries, map_blocks, top_n_blocks
from .user_knn import weight_rows

__all__ = [
    "ItemKNN",
    "blocked_topk",
    "cosine_item_similarities",
    "item_similarities",
    "prune_to_k",
    "sparse_topk_rows",
]


def sparse_topk_rows(M: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """Keep the ``k`` largest positive entries of each row of ``M`` (ties by lower column)."""
    M = sp.csr_matrix(M)
    M.sum_duplicates()
    return _topk_entries(M.indptr, M.indices, M.data, k, M.shape)


def _work_bounds(work: np.ndarray, block_items: int, max_work: float) -> list[int]:
    """Block starts over rows of ``work`` multiply-adds: at most ``max_work`` or ``block_items`` each."""
    bounds = [0]
    acc = 0.0
    for i, w in enumerate(work):
        if i > bounds[-1] and (acc + w > max_work or i - bounds[-1] >= block_items):
            bounds.append(i)
            acc = 0.0
        acc += w
    bounds.append(len(work))
    return bounds


#: ``transform(values, row_items, cols) -> values`` rescales the entries of a block product
Transform = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def blocked_topk(
    left: sp.csr_matrix,
    right: sp.csr_matrix,
    k: int,
    transforms: Sequence[Transform | None],
    *,
    block_items: int = 2048,
    max_work: float = 1e7,
    workers: int | None = None,
    dtype: np.dtype | type | None = None,
) -> list[sp.csr_matrix]:
    """Top-``k`` rows of ``transform(left @ right)`` for each of ``transforms`` (the product of a
    block is computed once for all), a block of ``left``'s rows at a time, diagonal dropped.

    Blocks run on ``workers`` threads (all cores, at most 2, by default); the result does not
    depend on the block sizes or the thread count. ``dtype``: the values are stored as that type
    once each block's top ``k`` is chosen (the choice is made on the transform's values).
    """
    left = sp.csr_matrix(left)
    right = sp.csr_matrix(right)
    n_cols = right.shape[1]
    # blocks of items whose product rows hold at most ``max_work`` multiply-adds together
    work = np.asarray(abs(left) @ np.diff(right.indptr).astype(np.float64)).ravel()
    bounds = _work_bounds(work, block_items, max_work)
    spans = [(s, e) for s, e in zip(bounds[:-1], bounds[1:], strict=True) if e > s]

    def one(span: tuple[int, int]) -> list[sp.csr_matrix]:
        s, e = span
        P = left[s:e] @ right
        P = sp.csr_matrix(P)
        row = np.repeat(np.arange(e - s, dtype=np.int32), np.diff(P.indptr))  # block rows
        row_items = row + np.int32(s)  # their items (int32: half the memory traffic of int64)
        diagonal = np.flatnonzero(P.indices == row_items)
        outs = []
        for f in transforms:
            vals = P.data.copy() if f is None else np.array(f(P.data, row_items, P.indices))
            vals[diagonal] = 0  # an item is not its own neighbour
            top = _topk_entries(P.indptr, P.indices, vals, k, (e - s, n_cols), row)
            outs.append(top if dtype is None else top.astype(dtype, copy=False))
        return outs

    parts = map_blocks(one, spans, workers)
    if not parts:
        return [sp.csr_matrix((0, n_cols)) for _ in transforms]
    # one matrix stacked at a time, its blocks let go at once: the peak is the blocks of every
    # matrix plus one stacked matrix, not twice the blocks (on ``full``, RP3beta's three betas at
    # k = 500 in float64 and stacked together ran chapter 03 out of 24 GB)
    stacked = []
    for t in range(len(transforms)):
        stacked.append(sp.vstack([p[t] for p in parts], format="csr"))
        for p in parts:
            p[t] = None
    return stacked


def item_similarities(
    left: sp.csr_matrix,
    right: sp.csr_matrix,
    k: int,
    transform: Transform | None = None,
    *,
    block_items: int = 2048,
    max_work: float = 1e7,
    workers: int | None = None,
) -> sp.csr_matrix:
    """Top-``k`` rows of ``left @ right`` (items x items), a block of ``left``'s rows at a time.

    ``transform(values, row_items, cols)`` rescales a block's entries before pruning; the diagonal
    (an item with itself) is dropped.
    """
    return blocked_topk(
        left, right, k, [transform], block_items=block_items, max_work=max_work, workers=workers
    )[0]


def cosine_item_similarities(
    train: sp.csr_matrix, k: int, shrink: float = 0.0, weighting: str = "binary"
) -> sp.csr_matrix:
    """Artist x artist shrunk cosine, top ``k`` per artist (see the module docstring)."""
    W = weight_rows(train, weighting).astype(np.float32).tocsc()
    WT = sp.csr_matrix(W.T)
    norms = np.sqrt(np.asarray(WT.multiply(WT).sum(axis=1)).ravel())

    def shrunk(vals: np.ndarray, row_items: np.ndarray, cols: np.ndarray) -> np.ndarray:
        # vals / (norms[row_items] * norms[cols] + shrink + 1e-12), in place on one temporary
        den = norms[cols]
        den *= norms[row_items]
        den += shrink
        den += 1e-12
        return np.divide(vals, den, out=den)

    return item_similarities(WT, sp.csr_matrix(W), k, shrunk)


@dataclass(frozen=True)
class ItemKNN:
    """Item-kNN setting: neighbours ``k``, cosine ``shrink``, input ``weighting``."""

    k: int = 100
    shrink: float = 10.0
    weighting: str = "binary"

    def fit(self, train: sp.csr_matrix) -> sp.csr_matrix:
        """The pruned artist x artist similarity matrix."""
        return cosine_item_similarities(train, self.k, self.shrink, self.weighting)

    def top_n(
        self,
        train: sp.csr_matrix,
        rows: np.ndarray,
        n: int = 10,
        fitted: sp.csr_matrix | None = None,
    ) -> np.ndarray:
        """Fit (unless ``fitted``, a similarity of :meth:`fit`, is given) and recommend ``n`` unheard
        artists to each of ``rows``."""
        t = _as_counts(train)
        rows = _as_rows(rows, t.shape[0])
        S = self.fit(t) if fitted is None else fitted
        B = t.astype(np.float32)
        B.data[:] = 1.0
        return top_n_blocks(lambda r: B[r] @ S, t, rows, n, block_rows=64, dense=False)


def prune_to_k(S: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """A similarity matrix with more neighbours per row cut to its top ``k`` (for k grids)."""
    return sparse_topk_rows(S, k)
