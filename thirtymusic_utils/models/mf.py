"""Matrix factorisation baselines from ``implicit`` (CPU build): iALS and BPR.

* iALS (Hu, Koren, Volinsky 2008): weighted least squares on all cells with confidence
  ``1 + alpha * r``, where ``r`` is the training count under an input weighting (``binary`` or
  ``log1p``); ``implicit.cpu.als.AlternatingLeastSquares`` with its conjugate-gradient solver.
* BPR (Rendle et al. 2009): pairwise ranking with sampled negatives on the binary matrix;
  ``implicit.cpu.bpr.BayesianPersonalizedRanking``, on one thread (its lock-free SGD over several
  threads gives different factors run to run).

Both are seeded (``random_state``) and run on ``num_threads`` threads. Recommendations are the
top dot products of the fitted factors with the user's training artists excluded
(``scoring.factor_top_n``: the lists of implicit's ``recommend(..., filter_already_liked_items=True)``
with ties by lower column, in one BLAS product per block of users; ``implicit_top_n`` calls
implicit's own ``recommend``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from ..evaluation.protocol import _as_counts, _as_rows
from .scoring import factor_top_n

__all__ = ["BPR", "IALS", "implicit_top_n"]


def _weighted(train: sp.csr_matrix, weighting: str) -> sp.csr_matrix:
    c = _as_counts(train).astype(np.float32)
    if weighting == "binary":
        c.data[:] = 1.0
    elif weighting == "log1p":
        c.data = np.log1p(c.data)
    elif weighting != "counts":
        raise ValueError(f"weighting must be binary, log1p or counts, got {weighting!r}")
    return c


def implicit_top_n(model, user_items: sp.csr_matrix, rows: np.ndarray, n: int = 10) -> np.ndarray:
    """Top-``n`` lists of a fitted ``implicit`` model by its own ``recommend``, -1 where it returns
    fewer (int64; ties in implicit's order)."""
    out = np.full((len(rows), n), -1, dtype=np.int64)
    for s in range(0, len(rows), 4096):
        r = rows[s : s + 4096]
        with threadpool_limits(1, "blas"):
            ids, scores = model.recommend(r, user_items[r], N=n, filter_already_liked_items=True)
        ids = np.asarray(ids, dtype=np.int64)
        ids[~np.isfinite(scores) | (ids < 0)] = -1
        out[s : s + len(r), : ids.shape[1]] = ids
    return out


@dataclass(frozen=True)
class IALS:
    """iALS setting."""

    factors: int = 64
    regularization: float = 0.05
    alpha: float = 10.0
    iterations: int = 15
    weighting: str = "log1p"
    seed: int = 0
    num_threads: int = 2

    def fit(self, train: sp.csr_matrix):
        """A fitted ``AlternatingLeastSquares``."""
        from implicit.cpu.als import AlternatingLeastSquares

        # implicit's advice, followed: its own threads, a 1-thread BLAS (its check still warns)
        with threadpool_limits(1, "blas"), warnings.catch_warnings():
            warnings.filterwarnings("ignore", "OpenBLAS is configured", RuntimeWarning)
            m = AlternatingLeastSquares(
                factors=self.factors,
                regularization=self.regularization,
                alpha=self.alpha,
                iterations=self.iterations,
                random_state=self.seed,
                num_threads=self.num_threads,
            )
            m.fit(_weighted(train, self.weighting), show_progress=False)
        return m

    def top_n(self, train: sp.csr_matrix, rows: np.ndarray, n: int = 10, fitted=None) -> np.ndarray:
        """Fit (unless ``fitted``, a model of :meth:`fit`, is given) and recommend ``n`` unheard
        artists to each of ``rows``."""
        t = _as_counts(train)
        rows = _as_rows(rows, t.shape[0])
        model = self.fit(t) if fitted is None else fitted
        return factor_top_n(model.user_factors, model.item_factors, t, rows, n)


@dataclass(frozen=True)
class BPR:
    """BPR setting."""

    factors: int = 64
    learning_rate: float = 0.05
    regularization: float = 0.01
    iterations: int = 100
    seed: int = 0
    num_threads: int = 1  # SGD over several threads is not reproducible

    def fit(self, train: sp.csr_matrix):
        """A fitted ``BayesianPersonalizedRanking``."""
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        m = BayesianPersonalizedRanking(
            factors=self.factors,
            learning_rate=self.learning_rate,
            regularization=self.regularization,
            iterations=self.iterations,
            random_state=self.seed,
            num_threads=self.num_threads,
        )
        with threadpool_limits(1, "blas"):
            m.fit(_weighted(train, "binary"), show_progress=False)
        return m

    def top_n(self, train: sp.csr_matrix, rows: np.ndarray, n: int = 10, fitted=None) -> np.ndarray:
        """Fit (unless ``fitted``, a model of :meth:`fit`, is given) and recommend ``n`` unheard
        artists to each of ``rows``."""
        t = _as_counts(train)
        rows = _as_rows(rows, t.shape[0])
        model = self.fit(t) if fitted is None else fitted
        return factor_top_n(model.user_factors, model.item_factors, t, rows, n)
