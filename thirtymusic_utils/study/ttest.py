"""The study's t-test exactly as its code ran (notebook cells ``In [32]``, the embedding subsamples
cell and ``In [37]``).

* kNN side (``In [32]``): 30 subsamples ``sample(test_user_idxs, len(test_user_idxs) // 10)``, each
  scored by ``test_CF_model(sample, ...)``, which compares the ``i``-th subsample user's top 10 with
  ``test_artist_idxs[i]``: the hidden artist of the ``i``-th *test* user, not of that user. The hits
  are misaligned; :func:`cf_subsample_means` returns both the misaligned means (what ran) and the
  aligned ones.
* embedding side: 30 subsamples of ``test_unique_users // 10`` users of ``X_test``, each scored by the
  study's ``validate`` (``study.embedding.study_validate``).
* ``compare_samples_t_test`` (``In [37]``): ``scipy.stats.ttest_ind`` on the two lists.

Departure: the subsamples are drawn from a seeded ``random.Random`` (the study's ``random`` module was
not seeded). ``random.sample(population, k)`` draws the same positions for any population of the same
length, so drawing positions from ``range(n)`` reproduces the study's subsamples of user ids.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

__all__ = [
    "StudyTTestRun",
    "cf_subsample_means",
    "compare_samples_t_test",
    "embedding_subsample_means",
    "embedding_subsamples",
    "subsample_positions",
]

N_SUBSAMPLES = 30


def subsample_positions(
    rng: random.Random, n: int, n_subsamples: int = N_SUBSAMPLES, divisor: int = 10
) -> list[list[int]]:
    """``[sample(range(n), n // divisor) for i in range(n_subsamples)]``: positions, in draw order."""
    return [rng.sample(range(n), n // divisor) for _ in range(n_subsamples)]


def cf_subsample_means(
    top: np.ndarray, hidden: np.ndarray, positions: Sequence[Sequence[int]]
) -> tuple[np.ndarray, np.ndarray]:
    """Per subsample: HR@10 as ``test_CF_model(sample, ...)`` computed it (misaligned) and aligned.

    ``top`` are the test users' top-10 columns (test order), ``hidden`` their hidden columns.
    """
    top = np.asarray(top)
    hidden = np.asarray(hidden)
    mis, ali = [], []
    for pos in positions:
        p = np.asarray(pos, dtype=np.int64)
        if len(p) == 0:
            mis.append(float("nan"))
            ali.append(float("nan"))
            continue
        mis.append(float((top[p] == hidden[: len(p), None]).any(axis=1).mean()))
        ali.append(float((top[p] == hidden[p, None]).any(axis=1).mean()))
    return np.asarray(mis), np.asarray(ali)


@dataclass(frozen=True)
class StudyTTestRun:
    """``compare_samples_t_test(s1, s2)``: the means, population standard deviations, p-value."""

    mean_1: float
    mean_2: float
    std_1: float
    std_2: float
    statistic: float
    pvalue: float


def compare_samples_t_test(s1: Sequence[float], s2: Sequence[float]) -> StudyTTestRun:
    """``In [37]``: ``np.mean``, ``np.std`` (ddof 0) and ``scipy.stats.ttest_ind`` (equal variances)."""
    a = np.asarray(s1, dtype=float)
    b = np.asarray(s2, dtype=float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = sps.ttest_ind(a, b)
    return StudyTTestRun(
        float(np.mean(a)),
        float(np.mean(b)),
        float(np.std(a)),
        float(np.std(b)),
        float(res.statistic),
        float(res.pvalue),
    )


def embedding_subsamples(
    rng: random.Random, test_keys: Sequence[int], n_subsamples: int = N_SUBSAMPLES
) -> list[list[int]]:
    """``[sample(X_test_keys, test_unique_users // 10) for i in range(30)]``."""
    keys = list(test_keys)
    return [rng.sample(keys, len(keys) // 10) for _ in range(n_subsamples)]


def embedding_subsample_means(
    user_embed, artist_embed, X_test: dict, X_train: dict, samples: Sequence[Sequence[int]], metric
) -> np.ndarray:
    """Each subsample scored by ``metric(user_embed, artist_embed, X_test_sample, X_train, n_users)``
    (the study's ``validate``, or ``correct_validate``); NaN for an empty subsample."""
    out = []
    for s in samples:
        if not len(s):
            out.append(float("nan"))
            continue
        out.append(metric(user_embed, artist_embed, {u: X_test[u] for u in s}, X_train, len(s)))
    return np.asarray(out, dtype=float)
