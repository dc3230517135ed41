"""Chapter 03 (the baselines) executed with papermill on the tiny profile."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from thirtymusic_utils.data.matrix import load_matrix
from thirtymusic_utils.evaluation.protocol import load_split
from thirtymusic_utils.models.baselines import BASELINES


@pytest.mark.notebook
@pytest.mark.slow
def test_notebook_03_tiny(tiny_book):
    results = tiny_book.run("03_baselines")
    build = tiny_book.build_dir
    split = load_split(build)
    matrix = load_matrix(build)
    outcomes = pd.read_csv(build / "artifacts" / "outcomes_03.csv")
    assert outcomes.columns.tolist() == ["user_id", "artist_id"] + [f"rank_{m}" for m in BASELINES]
    assert len(outcomes) == split.n_test == results["n_test_users_b"]
    np.testing.assert_array_equal(outcomes["user_id"], matrix.user_ids[split.test_rows])
    np.testing.assert_array_equal(outcomes["artist_id"], matrix.artist_ids[split.hidden_cols])
    # the results JSON agrees with the per-user outcomes
    assert results["hr_at_10_tuned"] == pytest.approx((outcomes["rank_cf_tuned"] > 0).mean())
    for m in BASELINES[1:]:
        assert results[f"test_hr_at_10_{m}"] == pytest.approx((outcomes[f"rank_{m}"] > 0).mean())
        assert 0 <= results[f"val_hr_at_10_{m}"] <= 1
        assert results[f"mrr_at_10_{m}"] <= results[f"ndcg_at_10_{m}"]
    assert 0 < results["ease_pair_share"] <= 1
    assert results["n_val_users_b"] > 0
    assert results["tuned_space"] in ("counts", "weighted", "binary")
