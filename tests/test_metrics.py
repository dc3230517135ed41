"""Ranking metrics against hand-computed examples."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from thirtymusic_utils.evaluation.metrics import (
    catalogue_coverage,
    hit_ranks,
    hr_at_k,
    hr_by_activity,
    mean_popularity,
    mrr_at_k,
    ndcg_at_k,
    ranking_metrics,
)


def test_hit_ranks_hand_example():
    topn = np.array([[5, 3, 9], [1, 2, -1], [7, 8, 4], [-1, -1, -1]])
    hidden = np.array([9, 5, 7, 0])
    assert hit_ranks(topn, hidden).tolist() == [3, 0, 1, 0]
    assert hit_ranks(topn, hidden).dtype == np.int64


def test_hit_ranks_never_matches_padding():
    # a hidden column is never -1, but padding must not match a real column either
    assert hit_ranks(np.array([[-1, -1]]), np.array([0])).tolist() == [0]


def test_metrics_hand_example():
    ranks = np.array([1, 2, 0, 10, 11])
    assert hr_at_k(ranks, 10) == pytest.approx(3 / 5)
    assert hr_at_k(ranks, 1) == pytest.approx(1 / 5)
    assert ndcg_at_k(ranks, 10) == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(11)) / 5)
    assert mrr_at_k(ranks, 10) == pytest.approx((1 + 1 / 2 + 1 / 10) / 5)
    assert mrr_at_k(ranks, 2) == pytest.approx((1 + 1 / 2) / 5)
    assert ranking_metrics(ranks, 10) == {
        "hr": hr_at_k(ranks, 10),
        "ndcg": ndcg_at_k(ranks, 10),
        "mrr": mrr_at_k(ranks, 10),
    }


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 20), min_size=1, max_size=50), st.integers(1, 20))
def test_metric_orderings(ranks, k):
    r = np.array(ranks)
    hr, ndcg, mrr = hr_at_k(r, k), ndcg_at_k(r, k), mrr_at_k(r, k)
    assert 0 <= mrr <= ndcg <= hr <= 1  # 1/r <= 1/log2(r+1) <= 1 for r >= 1
    if (r == 1).all():
        assert hr == ndcg == mrr == 1


def test_metrics_reject_bad_input():
    with pytest.raises(ValueError, match="empty"):
        hr_at_k(np.array([], dtype=np.int64))
    with pytest.raises(ValueError, match="k must"):
        ndcg_at_k(np.array([1]), 0)
    with pytest.raises(ValueError, match="0 \\(a miss\\)"):
        mrr_at_k(np.array([-1]))
    with pytest.raises(ValueError, match="one column per row"):
        hit_ranks(np.zeros((2, 3), dtype=np.int64), np.zeros(3, dtype=np.int64))


def test_coverage_and_popularity():
    topn = np.array([[0, 1, -1], [1, 2, -1]])
    assert catalogue_coverage(topn, 10) == pytest.approx(0.3)
    pop = np.array([0.5, 0.1, 0.2, 0.9])
    assert mean_popularity(topn, pop) == pytest.approx((0.5 + 0.1 + 0.1 + 0.2) / 4)
    assert math.isnan(mean_popularity(np.full((1, 2), -1), pop))


def test_hr_by_activity_buckets():
    ranks = np.array([1, 0, 3, 0, 12])
    activity = np.array([5, 11, 19, 25, 600])
    table = hr_by_activity(ranks, activity, edges=(11, 20, 50), k=10)
    assert table["activity"].tolist() == ["< 11", "11-19", "20-49", ">= 50"]
    assert table["n_users"].tolist() == [1, 2, 1, 1]
    assert table["hr_at_10"].tolist() == pytest.approx([1.0, 0.5, 0.0, 0.0])
