"""Shared plumbing of the baselines: top-n lists from score blocks, exact top-k of dense rows, and a
small grid-search harness on a validation hold-out.

Every baseline of chapter 03 produces a top-n list per user through ``top_n_blocks``: a function
returns the scores of a block of users (dense or sparse), the user's training artists are excluded,
and the ``n`` best positive scores are kept. Ties go to the lower column in the sparse path
(``knn.recommend_top_n``) and in the dense path (``top_n_dense``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..evaluation.metrics import hit_ranks, ranking_metrics
from ..evaluation.protocol import _as_csr, _as_rows

__all__ = ["grid_search", "top_n_blocks", "top_n_dense", "top_n_scores", "topk_dense_rows"]


def topk_dense_rows(A: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` largest positive entries of each row of ``A``: ``(cols int64, vals float32)``.

    Sorted by value descending, ties by lower column; padded with -1 / 0.
    """
    from .knn import _decode, _top_rows

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


def top_n_scores(
    scores: np.ndarray | sp.spmatrix, exclude: sp.csr_matrix, n: int = 10, dense_share: float = 0.02
) -> np.ndarray:
    """Top-n of a score block, dense or sparse; a sparse block denser than ``dense_share`` goes
    through the dense path (same result: positive scores, ties by lower column)."""
    from .knn import recommend_top_n

    if sp.issparse(scores):
        S = sp.csr_matrix(scores)
        if S.nnz > dense_share * S.shape[0] * S.shape[1]:
            return top_n_dense(S.toarray(), exclude, n)
        return recommend_top_n(S, exclude, n)
    return top_n_dense(scores, exclude, n)


def top_n_blocks(
    score_block: Callable[[np.ndarray], np.ndarray | sp.spmatrix],
    train: sp.csr_matrix,
    rows: Iterable[int],
    n: int = 10,
    *,
    block_rows: int = 1024,
) -> np.ndarray:
    """Top-n unheard artists of users ``rows``: ``score_block(rows_block)`` gives their scores.

    Dense blocks must hold positive scores for anything worth recommending (see ``top_n_dense``).
    """
    t = _as_csr(train, "train")
    rows = _as_rows(
        np.asarray(list(rows) if not isinstance(rows, np.ndarray) else rows), t.shape[0]
    )
    out = np.full((len(rows), n), -1, dtype=np.int64)
    block_rows = max(16, min(block_rows, int(5e7 // max(t.shape[1], 1))))  # dense blocks <= 200 MB
    for s in range(0, len(rows), block_rows):
        r = rows[s : s + block_rows]
        out[s : s + len(r)] = top_n_scores(score_block(r), t[r], n)
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
