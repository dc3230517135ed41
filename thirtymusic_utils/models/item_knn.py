"""Item-based kNN (Sarwar et al. 2001; as tuned by Ferrari Dacrema et al. 2019).

The similarity of artists ``i`` and ``j`` is the cosine of their listener columns with a shrinkage
term in the denominator, ``x_i . x_j / (|x_i| |x_j| + shrink)``, over the users' rows under an input
weighting (``binary`` or ``bm25``); each artist keeps its ``k`` most similar artists. A user's score
for artist ``j`` is the sum of the similarities of ``j`` to the artists the user played (binary rows).
Similarities are computed a block of artists at a time as sparse products and pruned to the top
``k`` per artist, so no dense artists x artists matrix is ever built.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ..evaluation.protocol import _as_counts, _as_rows
from .scoring import top_n_blocks
from .user_knn import weight_rows

__all__ = [
    "ItemKNN",
    "cosine_item_similarities",
    "item_similarities",
    "prune_to_k",
    "sparse_topk_rows",
]


def sparse_topk_rows(M: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """Keep the ``k`` largest positive entries of each row of ``M`` (ties by lower column)."""
    M = sp.csr_matrix(M)
    M.sum_duplicates()
    n_rows = M.shape[0]
    row = np.repeat(np.arange(n_rows), np.diff(M.indptr))
    keep = M.data > 0
    row, col, val = row[keep], M.indices[keep].astype(np.int64), M.data[keep]
    order = np.lexsort((col, -val, row))
    row, col, val = row[order], col[order], val[order]
    first = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(row, minlength=n_rows), out=first[1:])
    pos = np.arange(len(row)) - first[row]
    sel = pos < k
    out = sp.csr_matrix((val[sel], (row[sel], col[sel])), shape=M.shape)
    out.sort_indices()
    return out


def item_similarities(
    left: sp.csr_matrix,
    right: sp.csr_matrix,
    k: int,
    transform: Callable[[sp.csr_matrix, np.ndarray], sp.csr_matrix] | None = None,
    *,
    block_items: int = 2048,
    max_work: float = 3e7,
) -> sp.csr_matrix:
    """Top-``k`` rows of ``left @ right`` (items x items), a block of ``left``'s rows at a time.

    ``transform(block_product, item_block)`` rescales a block before pruning; the diagonal (an
    item with itself) is dropped.
    """
    parts = []
    n = left.shape[0]
    # blocks of items whose product rows hold at most ``max_work`` multiply-adds together
    work = np.asarray(abs(left) @ np.diff(sp.csr_matrix(right).indptr).astype(np.float64)).ravel()
    bounds = [0]
    acc = 0.0
    for i, w in enumerate(work):
        if i > bounds[-1] and (acc + w > max_work or i - bounds[-1] >= block_items):
            bounds.append(i)
            acc = 0.0
        acc += w
    bounds.append(n)
    for s, e in zip(bounds[:-1], bounds[1:], strict=True):
        if e <= s:
            continue
        items = np.arange(s, e)
        P = (left[items] @ right).tocsr()
        if transform is not None:
            P = sp.csr_matrix(transform(P, items))
        P = P.tocoo()
        off = P.col != items[P.row]
        P = sp.csr_matrix(
            (P.data[off], (P.row[off], P.col[off])), shape=(len(items), right.shape[1])
        )
        parts.append(sparse_topk_rows(P, k))
    return sp.vstack(parts, format="csr") if parts else sp.csr_matrix((0, right.shape[1]))


def cosine_item_similarities(
    train: sp.csr_matrix, k: int, shrink: float = 0.0, weighting: str = "binary"
) -> sp.csr_matrix:
    """Artist x artist shrunk cosine, top ``k`` per artist (see the module docstring)."""
    W = weight_rows(train, weighting).astype(np.float32).tocsc()
    WT = sp.csr_matrix(W.T)
    norms = np.sqrt(np.asarray(WT.multiply(WT).sum(axis=1)).ravel())

    def shrunk(P: sp.csr_matrix, items: np.ndarray) -> sp.csr_matrix:
        P = P.tocoo()
        P.data = P.data / (norms[items][P.row] * norms[P.col] + shrink + 1e-12)
        return P.tocsr()

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
        self, train: sp.csr_matrix, rows: np.ndarray, n: int = 10, S: sp.csr_matrix | None = None
    ) -> np.ndarray:
        """Fit (unless ``S`` is given) and recommend ``n`` unheard artists to each of ``rows``."""
        t = _as_counts(train)
        rows = _as_rows(rows, t.shape[0])
        S = self.fit(t) if S is None else S
        B = t.astype(np.float32)
        B.data[:] = 1.0
        return top_n_blocks(lambda r: B[r] @ S, t, rows, n)


def prune_to_k(S: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """A similarity matrix with more neighbours per row cut to its top ``k`` (for k grids)."""
    return sparse_topk_rows(S, k)
