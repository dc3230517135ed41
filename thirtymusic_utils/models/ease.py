"""EASE (Steck, WWW 2019): a closed-form linear item-item model.

``B = I - P / diag(P)`` with ``P = (X^T X + lambda I)^-1`` over the binary user x artist matrix ``X``,
and a zero diagonal; a user's scores are ``x_u B``. The Gram matrix is artists x artists and dense,
so on a large catalogue EASE runs on the ``N`` artists with most training listeners, ``N`` chosen so
that its dense float64 matrices fit ``memory_budget`` (8 GB unless stated); artists outside the top
``N`` are never recommended (``coverage_of_pairs`` reports the share of hidden artists inside it).
The inverse goes through a Cholesky factorisation (LAPACK ``potrf`` / ``potri``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.linalg import lapack
from threadpoolctl import threadpool_limits

from ..evaluation.protocol import _as_counts, _as_rows
from .knn import popularity
from .scoring import top_n_dense

__all__ = [
    "DEFAULT_MEMORY_BUDGET",
    "EASE",
    "coverage_of_pairs",
    "ease_items",
    "gram_matrix",
    "max_items",
]

DEFAULT_MEMORY_BUDGET = 8 * 2**30
#: the largest Gram matrix factored on all BLAS threads (15,000 ran; 16,384 segfaulted)
THREADED_LAPACK_MAX_N = 15_000
_COPIES = 3  # the Gram matrix / its inverse, B, and a block of scores or a temporary


def max_items(memory_budget: int = DEFAULT_MEMORY_BUDGET) -> int:
    """The most artists whose dense float64 N x N matrices (``_COPIES`` of them) fit the budget."""
    return int(np.sqrt(memory_budget / (8 * _COPIES)))


def ease_items(train: sp.csr_matrix, n_max: int) -> np.ndarray:
    """The columns EASE runs on: up to ``n_max`` artists with most training listeners (at least one),
    ties by lower column; returned in ascending column order."""
    pop = popularity(train)
    order = np.lexsort((np.arange(len(pop)), -pop))
    order = order[pop[order] > 0][:n_max]
    return np.sort(order)


def coverage_of_pairs(items: np.ndarray, hidden_cols: np.ndarray) -> float:
    """Share of hidden (test) artists among ``items``."""
    return (
        float(np.isin(np.asarray(hidden_cols), items).mean()) if len(hidden_cols) else float("nan")
    )


def mirror_upper(P: np.ndarray, step: int = 2048) -> np.ndarray:
    """Copy the upper triangle of square ``P`` onto its lower one, in place, ``step`` columns at a time."""
    n = P.shape[0]
    for j0 in range(0, n, step):
        j1 = min(n, j0 + step)
        blk = P[j0:j1, j0:j1]
        iu = np.triu_indices(j1 - j0, 1)
        blk.T[iu] = blk[iu]
        P[j1:, j0:j1] = P[j0:j1, j1:].T
    return P


def gram_matrix(X: sp.spmatrix, step: int = 1024) -> np.ndarray:
    """``X^T X`` as a dense float64 array in Fortran order, ``step`` columns at a time (no sparse
    copy of the whole product, whose entries would take more memory than the dense result)."""
    Xc = sp.csc_matrix(X)
    XT = sp.csr_matrix(Xc.T)
    n = Xc.shape[1]
    G = np.empty((n, n), dtype=np.float64, order="F")
    for j0 in range(0, n, step):
        j1 = min(n, j0 + step)
        G[:, j0:j1] = (XT @ Xc[:, j0:j1]).toarray()
    return G


def ease_weights(X: sp.csr_matrix, lam: float) -> np.ndarray:
    """The EASE item-item matrix (float32, zero diagonal) of the binary matrix ``X``."""
    G = gram_matrix(X)
    G[np.diag_indices_from(G)] += lam
    # G is in Fortran order, which LAPACK factors in place (a C-ordered array would be copied
    # first, doubling the memory). scipy's bundled OpenBLAS (0.3.30) segfaults in its threaded
    # dpotrf from about 16,000 columns on (a plain diagonal matrix will do; not a memory or stack
    # limit): above THREADED_LAPACK_MAX_N the factorisation runs on one thread.
    threads = None if G.shape[0] <= THREADED_LAPACK_MAX_N else 1
    with threadpool_limits(threads, "blas"):
        c, info = lapack.dpotrf(G, lower=False, overwrite_a=True)
        if info != 0:
            raise np.linalg.LinAlgError(
                f"EASE: Gram matrix + {lam} I is not positive definite ({info})"
            )
        P, info = lapack.dpotri(c, lower=False, overwrite_c=True)
    if info != 0:  # pragma: no cover - potrf succeeded, so potri does
        raise np.linalg.LinAlgError(f"EASE: inverse failed ({info})")
    mirror_upper(P)  # potri fills the upper triangle only
    d = np.diag(P).copy()
    P /= -d[None, :]
    P[np.diag_indices_from(P)] = 0.0
    return P.astype(np.float32)


@dataclass(frozen=True)
class EASE:
    """EASE setting: L2 penalty ``lam`` and the cap ``n_items`` on the artists it runs on."""

    lam: float = 50.0
    n_items: int = max_items()

    def fit(self, train: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
        """``(items, B)``: the columns it runs on and its weights over them."""
        t = _as_counts(train)
        items = ease_items(t, self.n_items)
        X = t[:, items].astype(np.float32)
        X.data[:] = 1.0
        return items, ease_weights(X, self.lam)

    def top_n(
        self,
        train: sp.csr_matrix,
        rows: np.ndarray,
        n: int = 10,
        fitted: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> np.ndarray:
        """Fit (unless ``fitted`` is given) and recommend ``n`` unheard artists to each of ``rows``."""
        t = _as_counts(train)
        rows = _as_rows(rows, t.shape[0])
        items, B = self.fit(t) if fitted is None else fitted
        X = t[:, items].astype(np.float32)
        X.data[:] = 1.0
        out = np.full((len(rows), n), -1, dtype=np.int64)
        for s in range(0, len(rows), 1024):
            r = rows[s : s + 1024]
            S = np.asarray(X[r] @ B)
            # scores can be negative: shift each row so that every candidate is positive
            S = S - S.min(axis=1, keepdims=True) + 1e-6
            top = top_n_dense(S, X[r], n)
            out[s : s + len(r)] = np.where(top >= 0, items[np.maximum(top, 0)], -1)
        return out
