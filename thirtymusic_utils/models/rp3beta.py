"""RP3beta (Paudel, Christoffel, Jannach, Bernstein 2017), as Ferrari Dacrema et al. 2019 run it.

A random walk user -> artist -> user -> artist on the bipartite listening graph: ``P_ui`` is the
users' binary rows normalised to sum 1 and ``P_iu`` the artists' listener columns normalised to sum
1, each entry raised to ``alpha``; the artist x artist transition ``W = P_iu @ P_ui`` is divided by
the target artist's popularity (listeners) to the power ``beta`` (which pushes the long tail) and
each artist keeps its top ``k``. A user's scores are their ``P_ui`` row times ``W``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ..evaluation.protocol import _as_counts, _as_rows
from .item_knn import blocked_topk
from .scoring import top_n_blocks

__all__ = ["RP3beta", "rp3beta_similarities", "transition_matrices"]


def _row_normalised(M: sp.csr_matrix) -> sp.csr_matrix:
    M = sp.csr_matrix(M, dtype=np.float64)
    s = np.asarray(M.sum(axis=1)).ravel()
    M.data = M.data / np.repeat(np.where(s > 0, s, 1.0), np.diff(M.indptr))
    return M


def transition_matrices(train: sp.csr_matrix, alpha: float) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """``(P_ui ** alpha, P_iu ** alpha)`` of the binary training matrix (float32 CSR)."""
    B = _as_counts(train).astype(np.float64)
    B.data[:] = 1.0
    pui = _row_normalised(B)
    piu = _row_normalised(B.T.tocsr())
    pui.data **= alpha
    piu.data **= alpha
    return pui.astype(np.float32), piu.astype(np.float32)


def rp3beta_similarities(
    train: sp.csr_matrix, alpha: float, betas: Sequence[float], k: int
) -> dict[float, sp.csr_matrix]:
    """The top-``k`` RP3beta matrices for every ``beta`` (one walk product per block for all)."""
    pui, piu = transition_matrices(train, alpha)
    pop = np.asarray((_as_counts(train) > 0).sum(axis=0)).ravel().astype(np.float64)
    pop = np.where(pop > 0, pop, 1.0)
    bs = [float(b) for b in dict.fromkeys(float(b) for b in betas)]

    def divide_by(b: float):
        scale = pop**b  # the target artist's popularity ** beta, once per artist

        def f(vals: np.ndarray, row_items: np.ndarray, cols: np.ndarray) -> np.ndarray:
            out = vals.astype(np.float64)
            out /= scale[cols]
            return out

        return f

    # chosen in float64, stored in float32 block by block (not whole matrices of float64)
    mats = blocked_topk(piu, pui, k, [divide_by(b) for b in bs], dtype=np.float32)
    return dict(zip(bs, mats, strict=True))


@dataclass(frozen=True)
class RP3beta:
    """RP3beta setting: ``alpha``, ``beta``, neighbours ``k``."""

    alpha: float = 1.0
    beta: float = 0.5
    k: int = 100

    def fit(self, train: sp.csr_matrix) -> sp.csr_matrix:
        """The pruned artist x artist walk matrix."""
        return rp3beta_similarities(train, self.alpha, [self.beta], self.k)[float(self.beta)]

    def top_n(
        self,
        train: sp.csr_matrix,
        rows: np.ndarray,
        n: int = 10,
        fitted: sp.csr_matrix | None = None,
    ) -> np.ndarray:
        """Fit (unless ``fitted``, a walk matrix of :meth:`fit`, is given) and recommend ``n``
        unheard artists to each of ``rows``."""
        t = _as_counts(train)
        rows = _as_rows(rows, t.shape[0])
        S = self.fit(t) if fitted is None else fitted
        pui, _ = transition_matrices(t, self.alpha)
        return top_n_blocks(lambda r: pui[r] @ S, t, rows, n, block_rows=64, dense=False)
