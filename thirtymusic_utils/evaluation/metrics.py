"""Ranking metrics of the hold-out protocol: one hidden artist per test user, a top-n list per user.

A user's outcome is the 1-based position of their hidden artist in their top-n list, or 0 when it is
not there (``hit_ranks``). HR@k, NDCG@k and MRR@k are means over users of a function of that rank:

* HR@k: 1 when ``1 <= rank <= k``, else 0 (the study's figure);
* NDCG@k: ``1 / log2(rank + 1)`` within the first k, else 0 (one relevant item, so the ideal DCG is 1);
* MRR@k: ``1 / rank`` within the first k, else 0.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = [
    "catalogue_coverage",
    "hit_ranks",
    "hr_at_k",
    "hr_by_activity",
    "mean_popularity",
    "mrr_at_k",
    "ndcg_at_k",
    "ranking_metrics",
]


def hit_ranks(topn: np.ndarray, hidden_cols: np.ndarray) -> np.ndarray:
    """Position (1..n) of each row's hidden column in its top-n row, 0 when absent (int64)."""
    topn = np.asarray(topn)
    hidden = np.asarray(hidden_cols)
    if topn.ndim != 2:
        raise ValueError(f"topn must be a 2-D array (users x n), got shape {topn.shape}")
    if hidden.ndim != 1 or len(hidden) != topn.shape[0]:
        raise ValueError(
            f"hidden_cols must hold one column per row of topn ({topn.shape[0]}), got shape {hidden.shape}"
        )
    if topn.shape[1] == 0:
        return np.zeros(len(hidden), dtype=np.int64)
    match = topn == hidden[:, None]
    hit = match.any(axis=1)
    return np.where(hit, match.argmax(axis=1) + 1, 0).astype(np.int64)


def _ranks(ranks: np.ndarray, k: int) -> np.ndarray:
    r = np.asarray(ranks)
    if r.ndim != 1:
        raise ValueError(f"ranks must be a 1-D array of hit ranks, got shape {r.shape}")
    if len(r) == 0:
        raise ValueError("ranks is empty: there are no test users to average over")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if (r < 0).any():
        raise ValueError("ranks must be 0 (a miss) or a 1-based position")
    return r.astype(np.int64)


def hr_at_k(ranks: np.ndarray, k: int = 10) -> float:
    """Hit rate: the share of users whose hidden artist is within their first ``k`` recommendations."""
    r = _ranks(ranks, k)
    return float(((r >= 1) & (r <= k)).mean())


def ndcg_at_k(ranks: np.ndarray, k: int = 10) -> float:
    """Mean NDCG@k with one relevant item per user: ``1/log2(rank+1)`` for a hit within k, else 0."""
    r = _ranks(ranks, k)
    hit = (r >= 1) & (r <= k)
    gain = np.zeros(len(r))
    gain[hit] = 1.0 / np.log2(r[hit] + 1.0)
    return float(gain.mean())


def mrr_at_k(ranks: np.ndarray, k: int = 10) -> float:
    """Mean reciprocal rank cut at k: ``1/rank`` for a hit within k, else 0."""
    r = _ranks(ranks, k)
    hit = (r >= 1) & (r <= k)
    rr = np.zeros(len(r))
    rr[hit] = 1.0 / r[hit]
    return float(rr.mean())


def ranking_metrics(ranks: np.ndarray, k: int = 10) -> dict[str, float]:
    """``{"hr": .., "ndcg": .., "mrr": ..}`` at ``k`` for one model's hit ranks."""
    return {"hr": hr_at_k(ranks, k), "ndcg": ndcg_at_k(ranks, k), "mrr": mrr_at_k(ranks, k)}


def catalogue_coverage(topn: np.ndarray, n_items: int) -> float:
    """Share of the ``n_items`` artists that appear in at least one top-n list."""
    if n_items < 1:
        raise ValueError(f"n_items must be positive, got {n_items}")
    t = np.asarray(topn)
    return float(len(np.unique(t[t >= 0])) / n_items)


def mean_popularity(topn: np.ndarray, popularity: np.ndarray) -> float:
    """Mean ``popularity`` (e.g. share of training users who played it) of the recommended artists."""
    t = np.asarray(topn)
    t = t[t >= 0]
    if len(t) == 0:
        return float("nan")
    return float(np.asarray(popularity, dtype=np.float64)[t].mean())


def hr_by_activity(
    ranks: np.ndarray,
    activity: np.ndarray,
    edges: tuple[int, ...] = (11, 20, 50, 100, 200, 500),
    k: int = 10,
) -> pd.DataFrame:
    """HR@k per bucket of user activity (e.g. distinct training artists), one row per non-empty bucket.

    Buckets are ``[edges[i], edges[i+1])`` plus one open bucket above the last edge; users below the
    first edge form their own bucket.
    """
    r = _ranks(ranks, k)
    a = np.asarray(activity)
    if a.shape != r.shape:
        raise ValueError(f"activity must have one value per rank ({r.shape}), got {a.shape}")
    bounds = [-np.inf, *edges, np.inf]
    rows = []
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        sel = (a >= lo) & (a < hi)
        if not sel.any():
            continue
        if np.isinf(lo):
            label = f"< {int(hi)}"
        elif np.isinf(hi):
            label = f">= {int(lo)}"
        else:
            label = f"{int(lo)}-{int(hi) - 1}"
        rows.append(
            {"activity": label, "n_users": int(sel.sum()), f"hr_at_{k}": hr_at_k(r[sel], k)}
        )
    return pd.DataFrame(rows)
