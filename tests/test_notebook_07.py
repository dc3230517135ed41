"""Chapter 07 (every model compared) executed with papermill on the tiny profile."""

from __future__ import annotations

import pandas as pd
import pytest

from thirtymusic_utils.evaluation import stats


@pytest.mark.notebook
@pytest.mark.slow
def test_notebook_07_tiny(tiny_book):
    results = tiny_book.run("07_comparison")
    b03 = tiny_book.run("03_baselines")
    build = tiny_book.build_dir
    # the rule: the best VALIDATION score of chapter 03 names the strongest baseline
    vals = {m: b03[f"val_hr_at_10_{m}"] for m in stats.VALIDATION_KEYS}
    assert results["best_baseline"] == max(vals, key=vals.get)
    for m in ("ease", "ials", "item_knn", "rp3beta"):
        assert results[f"hr_at_10_{m}"] == pytest.approx(b03[f"test_hr_at_10_{m}"])
    assert results["hr_at_10_best_baseline"] == pytest.approx(
        b03["hr_at_10_tuned"]
        if results["best_baseline"] == "cf_tuned"
        else b03[f"test_hr_at_10_{results['best_baseline']}"]
    )
    lo, hi = (
        results["embedding_vs_best_baseline_ci_low"],
        results["embedding_vs_best_baseline_ci_high"],
    )
    assert lo <= results["paired_hr_diff"] <= hi
    assert (results["hr_diff_ci_low"], results["hr_diff_ci_high"]) == (lo, hi)
    assert 0 <= results["paired_pvalue"] <= results["paired_pvalue_holm"] <= 1
    pairs = pd.read_csv(build / "artifacts" / "pairwise_07.csv")
    m = results["n_models_compared"]
    assert len(pairs) == m * (m - 1) // 2 == results["n_pairs_compared"]
    assert results["embedding_vs_best_baseline_verdict"] in {
        "ahead of",
        "behind",
        "level with",
    }
