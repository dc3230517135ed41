"""Chapter 02 executed with papermill on the tiny profile: results JSON, split, outcomes, ledger."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from thirtymusic_utils.data.matrix import load_matrix
from thirtymusic_utils.evaluation.protocol import load_split
from thirtymusic_utils.models.knn import MODELS
from thirtymusic_utils.study.cf import load_study_cf
from thirtymusic_utils.study.ledger import KNN_DEPARTURES, LEDGER_COLUMNS

MODELS_SHORT = ("seed", "seed_as_written", "weighted", "popularity")


@pytest.mark.notebook
@pytest.mark.slow
def test_notebook_02_tiny(tiny_book):
    results = tiny_book.run("02_collaborative_filtering")
    n_test = results["n_test_users"]
    assert isinstance(n_test, int) and n_test > 0
    assert n_test <= results["cf_test_cap"] == int(results["cf_n_users"] * 0.3)
    for short in MODELS_SHORT:
        for metric in ("hr", "ndcg", "mrr"):
            value = results[f"{metric}_at_10_{short}"]
            assert 0.0 <= value <= 1.0, (metric, short, value)
        assert (
            results[f"mrr_at_10_{short}"]
            <= results[f"ndcg_at_10_{short}"]
            <= results[f"hr_at_10_{short}"]
        )
    for key in ("hr_at_10_seed", "hr_at_10_seed_id_ties", "hr_at_10_weighted"):
        lo, hi = results[f"{key}_min5"], results[f"{key}_max5"]
        assert lo <= results[f"{key}_mean5"] <= hi and results[f"{key}_sd5"] >= 0
    assert (
        results["hr_at_10_seed_min5"] <= results["hr_at_10_seed"] <= results["hr_at_10_seed_max5"]
    )
    assert results["ledger_knn_as_ran"] == results["hr_at_10_seed"]
    assert results["ledger_knn_weights_inverted_alone"] == pytest.approx(
        results["hr_at_10_weighted"]
    )
    assert results["ledger_knn_weights_discarded_alone"] == results["hr_at_10_seed_as_written"]

    build = tiny_book.build_dir
    split = load_split(build)
    matrix = load_matrix(build)
    assert split.n_test == n_test and split.train.shape == matrix.shape
    assert set(split.hidden_rank.tolist()) <= {2, 3, 4, 5, 6}
    outcomes = pd.read_csv(build / "artifacts" / "outcomes_02.csv")
    assert outcomes.columns.tolist() == ["user_id", "artist_id"] + [f"rank_{m}" for m in MODELS]
    np.testing.assert_array_equal(outcomes["user_id"], matrix.user_ids[split.test_rows])
    np.testing.assert_array_equal(outcomes["artist_id"], matrix.artist_ids[split.hidden_cols])
    assert results["hr_at_10_seed"] == pytest.approx((outcomes["rank_cf_seed"] > 0).mean())
    ledger = pd.read_csv(build / "artifacts" / "ledger_02.csv")
    assert ledger.columns.tolist() == LEDGER_COLUMNS
    assert ledger["step"].tolist() == [d[0] for d in KNN_DEPARTURES]
    rows, hidden, top, _ = load_study_cf(build)
    np.testing.assert_array_equal(rows, split.test_rows)
    np.testing.assert_array_equal(hidden, split.hidden_cols)
    hits = (top == hidden[:, None]).any(axis=1)
    assert hits.mean() == pytest.approx(results["hr_at_10_seed"])
