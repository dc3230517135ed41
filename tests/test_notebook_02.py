"""Chapter 02 executed with papermill on the tiny profile: results JSON, split and outcomes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from thirtymusic_utils.data.matrix import load_matrix
from thirtymusic_utils.evaluation.protocol import load_split
from thirtymusic_utils.models.knn import MODELS, TUNING_GRIDS, WEIGHTINGS

MODELS_SHORT = ("seed", "seed_as_written", "weighted", "popularity", "tuned")


@pytest.mark.notebook
@pytest.mark.slow
def test_notebook_02_tiny(tiny_book):
    results = tiny_book.run("02_collaborative_filtering")
    n_test = results["n_test_users"]
    assert isinstance(n_test, int) and n_test > 0
    for short in MODELS_SHORT:
        for metric in ("hr", "ndcg", "mrr"):
            value = results[f"{metric}_at_10_{short}"]
            assert 0.0 <= value <= 1.0, (metric, short, value)
        assert (
            results[f"mrr_at_10_{short}"]
            <= results[f"ndcg_at_10_{short}"]
            <= results[f"hr_at_10_{short}"]
        )
    assert results["tuned_weighting"] in WEIGHTINGS
    assert results["tuned_k"] in TUNING_GRIDS["tiny"] or results["n_val_users"] == 0
    assert results["cf_seconds_total"] > 0

    build = tiny_book.build_dir
    split = load_split(build)
    matrix = load_matrix(build)
    assert split.n_test == n_test
    assert split.train.shape == matrix.shape
    outcomes = pd.read_csv(build / "artifacts" / "outcomes_02.csv")
    assert outcomes.columns.tolist() == ["user_id", "artist_id"] + [f"rank_{m}" for m in MODELS]
    assert len(outcomes) == n_test
    np.testing.assert_array_equal(outcomes["user_id"], matrix.user_ids[split.test_rows])
    np.testing.assert_array_equal(outcomes["artist_id"], matrix.artist_ids[split.hidden_cols])
    ranks = outcomes[[f"rank_{m}" for m in MODELS]].to_numpy()
    assert ((ranks >= 0) & (ranks <= 10)).all()
    # the results JSON agrees with the per-user outcomes
    assert results["hr_at_10_seed"] == pytest.approx((outcomes["rank_cf_seed"] > 0).mean())
    assert results["hr_at_10_tuned"] == pytest.approx((outcomes["rank_cf_tuned"] > 0).mean())
