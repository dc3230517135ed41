"""Tests of thirtymusic_utils.evaluation.stats against scipy, hand computations and simulation."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from thirtymusic_utils.book.paths import artifacts_dir, save_results
from thirtymusic_utils.evaluation import stats

# ------------------------------------------------------------------------------------ fixtures


FILE_MODELS = {
    "outcomes_02.csv": ("popularity", "cf_seed", "cf_seed_as_written", "cf_weighted"),
    "outcomes_03.csv": ("cf_tuned", "item_knn", "rp3beta", "ease", "ials", "bpr"),
    "outcomes_05.csv": ("embedding_seed", "embedding_improved"),
}


def _write_outcomes(build_dir, n=40, seed=0, shuffle_04=False, drop_04=0):
    """Outcome files as chapters 02, 03 and 05 write them; returns (outcomes_02, outcomes_05)."""
    rng = np.random.default_rng(seed)
    users = np.arange(n) + 100
    artists = rng.integers(1, 500, n)

    def ranks():
        return np.where(rng.random(n) < 0.3, rng.integers(1, 11, n), 0)

    frames = {}
    for name, models in FILE_MODELS.items():
        frames[name] = pd.DataFrame(
            {"user_id": users, "artist_id": artists, **{f"rank_{m}": ranks() for m in models}}
        )
    o4 = frames["outcomes_05.csv"]
    if shuffle_04:
        o4 = o4.iloc[::-1].reset_index(drop=True)
    if drop_04:
        o4 = o4.iloc[drop_04:].reset_index(drop=True)
    frames["outcomes_05.csv"] = o4
    art = artifacts_dir(build_dir)
    for name, f in frames.items():
        f.to_csv(art / name, index=False)
    return frames["outcomes_02.csv"], o4


# ------------------------------------------------------------------------------------- loading


def test_load_outcomes_joins_matching_pairs(tmp_path):
    o2, o4 = _write_outcomes(tmp_path)
    out = stats.load_outcomes(tmp_path)
    assert list(out["user_id"]) == list(o2["user_id"])
    assert list(out["rank_embedding_improved"]) == list(o4["rank_embedding_improved"])
    assert list(out["rank_cf_seed"]) == list(o2["rank_cf_seed"])
    assert "rank_ease" in out.columns
    ranks = stats.model_ranks(out)
    assert set(ranks) == set(stats.MODEL_LABELS)
    assert set(stats.model_ranks(out, stats.BOOK_MODELS)) == set(stats.BOOK_MODELS)


def test_load_outcomes_rejects_mismatched_pairs(tmp_path):
    _write_outcomes(tmp_path, shuffle_04=True)
    with pytest.raises(ValueError, match="different test pairs.*first at row 0"):
        stats.load_outcomes(tmp_path)


def test_load_outcomes_rejects_different_lengths(tmp_path):
    _write_outcomes(tmp_path, drop_04=3)
    with pytest.raises(ValueError, match="40 pairs but outcomes_05.csv has 37"):
        stats.load_outcomes(tmp_path)


def test_load_outcomes_missing_file_and_bad_ranks(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"outcomes_\*\.csv"):
        stats.load_outcomes(tmp_path)
    o2, _ = _write_outcomes(tmp_path)
    o2.loc[3, "rank_cf_seed"] = 11
    o2.to_csv(tmp_path / "artifacts" / "outcomes_02.csv", index=False)
    with pytest.raises(ValueError, match="rank_cf_seed must hold 0"):
        stats.load_outcomes(tmp_path)
    o2.loc[3, "rank_cf_seed"] = 1
    o2.assign(rank_mystery=0).to_csv(tmp_path / "artifacts" / "outcomes_02.csv", index=False)
    with pytest.raises(ValueError, match="rank_mystery is not a model of the registry"):
        stats.load_outcomes(tmp_path)
    o2.to_csv(tmp_path / "artifacts" / "outcomes_02.csv", index=False)
    o2[["user_id", "artist_id", "rank_cf_seed"]].to_csv(
        tmp_path / "artifacts" / "outcomes_09.csv", index=False
    )
    with pytest.raises(ValueError, match="rank_cf_seed is defined by both"):
        stats.load_outcomes(tmp_path)
    (tmp_path / "artifacts" / "outcomes_09.csv").unlink()
    # a copy of a model in a file that does not own it is ignored, with a warning
    o2.assign(rank_cf_tuned=0).to_csv(tmp_path / "artifacts" / "outcomes_02.csv", index=False)
    with pytest.warns(UserWarning, match="outcomes_03.csv defines it"):
        out = stats.load_outcomes(tmp_path)
    o3 = pd.read_csv(tmp_path / "artifacts" / "outcomes_03.csv")
    assert list(out["rank_cf_tuned"]) == list(o3["rank_cf_tuned"])


def test_optional_model_may_be_absent(tmp_path):
    o2, _ = _write_outcomes(tmp_path)
    o2.drop(columns=["rank_cf_seed_as_written"]).to_csv(
        tmp_path / "artifacts" / "outcomes_02.csv", index=False
    )
    ranks = stats.model_ranks(stats.load_outcomes(tmp_path))
    assert "cf_seed_as_written" not in ranks and "cf_seed" in ranks


def test_check_against_results(tmp_path):
    _write_outcomes(tmp_path)
    ranks = stats.model_ranks(stats.load_outcomes(tmp_path))
    results = {
        "02_collaborative_filtering": {"hr_at_10_seed": float((ranks["cf_seed"] > 0).mean())},
        "05_training": {"hr_at_10_embedding": float((ranks["embedding_improved"] > 0).mean())},
    }
    table = stats.check_against_results(ranks, results)
    assert table.set_index("model").loc["cf_seed", "matches"]
    assert table.set_index("model").loc["popularity", "matches"] is None
    results["05_training"]["hr_at_10_embedding"] += 0.01
    with pytest.raises(ValueError, match="embedding_improved"):
        stats.check_against_results(ranks, results)


def test_hits_and_reciprocal_ranks():
    r = np.array([0, 1, 2, 10, 5])
    assert stats.hits(r).tolist() == [False, True, True, True, True]
    assert stats.hits(r, k=5).tolist() == [False, True, True, False, True]
    np.testing.assert_allclose(stats.reciprocal_ranks(r), [0, 1, 0.5, 0.1, 0.2])


# ---------------------------------------------------------------------------- study's t-test


def test_study_ttest_reproducible_and_matches_scipy():
    rng = np.random.default_rng(1)
    a = rng.random(300) < 0.2
    b = rng.random(300) < 0.1
    r1 = stats.study_ttest(a, b, seed=7)
    r2 = stats.study_ttest(a, b, seed=7)
    r3 = stats.study_ttest(a, b, seed=8)
    np.testing.assert_array_equal(r1.means_a, r2.means_a)
    assert r1.pvalue == r2.pvalue
    assert not np.array_equal(r1.means_a, r3.means_a)
    assert r1.means_a.shape == (30,) and r1.means_b.shape == (30,)
    ref = sps.ttest_ind(r1.means_a, r1.means_b)
    assert r1.pvalue == pytest.approx(ref.pvalue) and r1.statistic == pytest.approx(ref.statistic)
    # each mean is the mean of 30 distinct users (10% of 300)
    assert np.all(np.isclose(r1.means_a * 30, np.round(r1.means_a * 30)))


def test_subsample_means_without_replacement():
    rng = np.random.default_rng(0)
    # a subsample of all users (fraction 1) without replacement has exactly the full mean
    v = np.arange(20, dtype=float)
    np.testing.assert_allclose(stats.subsample_means(v, 5, 1.0, rng), v.mean())
    assert stats.subsample_size(7, 0.1) == 1
    with pytest.raises(ValueError):
        stats.subsample_size(10, 0)


def test_study_subsample_table():
    vals = {"x": np.ones(50), "y": np.zeros(50)}
    t = stats.study_subsample_table(vals, n_subsamples=4, fraction=0.2, seed=0)
    assert len(t) == 8
    assert (t[t.model == "x"]["mean"] == 1).all() and (t[t.model == "y"]["mean"] == 0).all()


# -------------------------------------------------------------------------------- paired tests


def test_mcnemar_against_hand_binomial():
    # a hits only: 7 pairs; b hits only: 2 pairs; 5 both; 6 neither
    a = np.array([1] * 7 + [0] * 2 + [1] * 5 + [0] * 6, dtype=bool)
    b = np.array([0] * 7 + [1] * 2 + [1] * 5 + [0] * 6, dtype=bool)
    res = stats.mcnemar_exact(a, b)
    # two-sided exact: 2 * P(X <= 2), X ~ Bin(9, 1/2) = 2 * (1 + 9 + 36) / 512
    assert res.pvalue == pytest.approx(2 * 46 / 512)
    assert (res.n_a_only, res.n_b_only, res.n) == (7, 2, 20)
    assert res.hr_diff == pytest.approx((12 - 7) / 20)
    assert res.odds_ratio == pytest.approx(3.5)
    assert res.cohens_g == pytest.approx(7 / 9 - 0.5)


def test_mcnemar_edge_cases():
    same = np.array([1, 0, 1, 0], dtype=bool)
    res = stats.mcnemar_exact(same, same)
    assert res.pvalue == 1.0 and math.isnan(res.odds_ratio) and res.cohens_g == 0.0
    res = stats.mcnemar_exact(np.ones(3, bool), np.zeros(3, bool))
    assert res.odds_ratio == math.inf and res.pvalue == pytest.approx(0.25)
    with pytest.raises(ValueError, match="equal length"):
        stats.mcnemar_exact(np.ones(3), np.ones(4))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=60))
def test_mcnemar_matches_binomtest_and_is_symmetric(pairs):
    a = np.array([p[0] for p in pairs])
    b = np.array([p[1] for p in pairs])
    ab = stats.mcnemar_exact(a, b)
    ba = stats.mcnemar_exact(b, a)
    assert ab.pvalue == pytest.approx(ba.pvalue)
    assert ab.hr_diff == pytest.approx(-ba.hr_diff)
    n10, n01 = int((a & ~b).sum()), int((~a & b).sum())
    if n10 + n01:
        assert ab.pvalue == pytest.approx(sps.binomtest(n10, n10 + n01, 0.5).pvalue)
        # the vectorised form used by the simulation
        p_vec = min(1.0, 2 * sps.binom.cdf(min(n10, n01), n10 + n01, 0.5))
        assert ab.pvalue == pytest.approx(p_vec)


def test_wilcoxon_against_scipy():
    rng = np.random.default_rng(3)
    ra = np.where(rng.random(80) < 0.4, rng.integers(1, 11, 80), 0)
    rb = np.where(rng.random(80) < 0.2, rng.integers(1, 11, 80), 0)
    xa, xb = stats.reciprocal_ranks(ra), stats.reciprocal_ranks(rb)
    res = stats.wilcoxon_paired(xa, xb)
    ref = sps.wilcoxon(xa, xb)
    assert res.pvalue == pytest.approx(ref.pvalue)
    assert res.statistic == pytest.approx(ref.statistic)
    assert res.n_nonzero == int((xa != xb).sum())


def test_wilcoxon_all_zero_differences():
    x = np.array([0.0, 0.5, 1.0])
    res = stats.wilcoxon_paired(x, x)
    assert (res.statistic, res.pvalue, res.n_nonzero, res.rank_biserial) == (0.0, 1.0, 0, 0.0)


def test_rank_biserial_hand_example():
    # d = [3, -1, 2, 0]: non-zero |d| ranks 3, 1, 2; T+ = 5, T- = 1 -> r = 4/6
    a = np.array([3.0, 0.0, 2.0, 1.0])
    b = np.array([0.0, 1.0, 0.0, 1.0])
    assert stats.rank_biserial(a, b) == pytest.approx(4 / 6)
    assert stats.rank_biserial(b, a) == pytest.approx(-4 / 6)
    assert stats.rank_biserial(np.ones(3), np.zeros(3)) == 1.0


# ----------------------------------------------------------------------------------- intervals


def test_bootstrap_means_reproducible_and_chunk_independent_shape():
    x = np.arange(50, dtype=float)
    r1 = stats.bootstrap_means(x, n_resamples=500, seed=2)
    r2 = stats.bootstrap_means(x, n_resamples=500, seed=2)
    np.testing.assert_array_equal(r1, r2)
    assert r1.shape == (500,)
    # a tiny chunk bound forces one resample per chunk: same stream, same result
    r3 = stats.bootstrap_means(x, n_resamples=500, seed=2, max_chunk_elements=1)
    np.testing.assert_allclose(r1, r3)
    assert abs(r1.mean() - x.mean()) < 2
    # constant data: every replicate is the constant
    np.testing.assert_allclose(stats.bootstrap_means(np.full(9, 0.3), 20), 0.3)


def test_bootstrap_means_columns_are_paired():
    rng = np.random.default_rng(0)
    a = rng.random(60) < 0.5
    two = stats.bootstrap_means(np.column_stack([a, a]), n_resamples=300, seed=1)
    np.testing.assert_array_equal(two[:, 0], two[:, 1])  # same users in every column
    # brute force: the same indices drawn by hand give the same means
    idx = np.random.default_rng(1).integers(0, 60, size=(300, 60))
    np.testing.assert_allclose(two[:, 0], a[idx].mean(axis=1))


def test_paired_bootstrap_ci_contains_estimate():
    rng = np.random.default_rng(5)
    a = rng.random(200) < 0.3
    b = rng.random(200) < 0.2
    est, lo, hi = stats.paired_bootstrap_ci(a, b, n_resamples=2000, seed=0)
    assert est == pytest.approx(a.mean() - b.mean())
    assert lo <= est <= hi
    assert stats.paired_bootstrap_ci(a, a, n_resamples=100)[1:] == (0.0, 0.0)


def test_paired_bootstrap_ci_coverage():
    """Percentile CI of a paired Bernoulli difference covers the true value about 95% of the time."""
    rng = np.random.default_rng(11)
    n, reps, p_a, p_b = 150, 300, 0.35, 0.25
    covered = 0
    for rep in range(reps):
        u = rng.random(n)
        a = u < p_a
        # b: correlated with a for half the users, independent for the rest; marginal p_b
        b = np.where(rng.random(n) < 0.5, u < p_b, rng.random(n) < p_b)
        _, lo, hi = stats.paired_bootstrap_ci(a, b, n_resamples=1000, seed=rep)
        covered += lo <= p_a - p_b <= hi
    assert 0.90 <= covered / reps <= 0.99


def test_wilson_against_scipy():
    for k, n in [(0, 10), (5, 10), (10, 10), (3, 47), (120, 1000)]:
        ci = sps.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        lo, hi = stats.wilson_interval(k, n)
        assert lo == pytest.approx(ci.low, abs=1e-12) and hi == pytest.approx(ci.high, abs=1e-12)
    assert stats.wilson_interval(0, 10)[1] == pytest.approx(0.27753279986288926)
    for n in range(1, 200):
        assert stats.wilson_interval(0, n)[0] == 0.0 and stats.wilson_interval(n, n)[1] == 1.0
    with pytest.raises(ValueError):
        stats.wilson_interval(3, 2)


# -------------------------------------------------------------------------------------- Holm


def test_holm_hand_example():
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 -> max(0.06, 0.04) = 0.06
    adj = stats.holm([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(adj, [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(stats.holm([0.5, 0.9]), [1.0, 1.0])
    with pytest.raises(ValueError):
        stats.holm([0.1, float("nan")])


@settings(max_examples=80, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=20))
def test_holm_properties(p):
    p = np.array(p)
    adj = stats.holm(p)
    assert np.all(adj >= p - 1e-15) and np.all(adj <= 1)
    # monotone: a smaller raw p never gets a larger adjusted p
    order = np.argsort(p, kind="stable")
    assert np.all(np.diff(adj[order]) >= -1e-15)
    assert adj.min() == pytest.approx(min(1.0, p.min() * p.size))


# ----------------------------------------------------------------------------- model tables


def _ranks(seed=0, n=120):
    rng = np.random.default_rng(seed)
    return {
        m: np.where(rng.random(n) < q, rng.integers(1, 11, n), 0)
        for m, q in zip(
            stats.BOOK_MODELS, np.linspace(0.05, 0.3, len(stats.BOOK_MODELS)), strict=True
        )
    }


def test_model_summary_and_pairwise():
    ranks = _ranks()
    summary, reps = stats.model_summary(ranks, n_resamples=400, seed=0)
    assert list(summary["model"]) == list(stats.BOOK_MODELS)
    assert reps.shape == (400, len(stats.BOOK_MODELS))
    assert list(reps.columns) == list(stats.BOOK_MODELS)
    for _, row in summary.iterrows():
        assert row.ci_low <= row.hr_at_10 <= row.ci_high
        assert row.wilson_low <= row.hr_at_10 <= row.wilson_high
        assert row.hr_at_10 == pytest.approx((ranks[row.model] > 0).mean())
    table = stats.pairwise_comparisons(ranks, reps, n_resamples=400)
    m = len(stats.BOOK_MODELS)
    assert len(table) == m * (m - 1) // 2
    np.testing.assert_allclose(table["ci_level"], 1 - 0.05 / len(table))
    # the same seed gives the same intervals
    pd.testing.assert_frame_equal(table, stats.pairwise_comparisons(ranks, n_resamples=400, seed=0))
    sub = {m: ranks[m] for m in ["cf_seed", "popularity"]}
    one = stats.pairwise_comparisons(sub, n_resamples=400, adjust_intervals=False)
    assert len(one) == 1 and one["ci_level"].iloc[0] == 0.95
    np.testing.assert_allclose(table["mcnemar_p_holm"], stats.holm(table["mcnemar_p"]))
    row = stats.find_pair(table, "embedding_improved", "popularity")
    direct = stats.mcnemar_exact(ranks["embedding_improved"] > 0, ranks["popularity"] > 0)
    assert row["hr_diff"] == pytest.approx(direct.hr_diff)
    assert row["ci_low"] <= row["hr_diff"] <= row["ci_high"]
    assert row["n_a_only"] == direct.n_a_only
    back = stats.find_pair(table, "popularity", "embedding_improved")
    assert back["hr_diff"] == pytest.approx(-row["hr_diff"])
    with pytest.raises(KeyError):
        stats.find_pair(table, "popularity", "nope")


def test_better_of():
    ranks = {"a": np.array([1, 0, 0]), "b": np.array([1, 2, 0]), "c": np.array([1, 2, 0])}
    assert stats.better_of(ranks, ["a", "b", "c"]) == "b"
    assert stats.better_of(ranks, ["c", "b"]) == "c"
    with pytest.raises(KeyError):
        stats.better_of(ranks, ["z"])


def test_wording():
    assert stats.comparison_verdict(0.01, 0.05, 0.001) == "ahead of"
    assert stats.comparison_verdict(-0.05, -0.01, 0.001) == "behind"
    assert stats.comparison_verdict(-0.01, 0.05, 0.001) == "level with"
    assert stats.comparison_verdict(0.01, 0.05, 0.2) == "level with"
    assert stats.comparison_verdict(float("nan"), 0.05, 0.01) == "level with"
    # numpy scalars are numbers too (a float32 interval must not read as missing)
    assert stats.comparison_verdict(np.float32(0.01), np.float32(0.05), np.float64(0.001)) == (
        "ahead of"
    )
    assert stats.significance_word(0.01) == "significant"
    assert stats.significance_word(None) == "not significant"
    assert stats.rate_vs_nominal(100, 300) == "above"
    assert stats.rate_vs_nominal(15, 300) == "close to"
    assert stats.rate_vs_nominal(0, 500) == "below"
    assert stats.format_pvalue(0.0342) == "0.034"
    assert stats.format_pvalue(3.6e-4) == "3.6e-04"
    assert stats.format_pvalue(float("nan")) == "n/a"


# ---------------------------------------------------------------------------------- simulation


def test_correlated_hits_marginals_and_correlation():
    rng = np.random.default_rng(0)
    a, b = stats.correlated_hits(20000, 0.2, 0.6, rng)
    assert a.mean() == pytest.approx(0.2, abs=0.01) and b.mean() == pytest.approx(0.2, abs=0.01)
    assert stats.hit_correlation(a[0], b[0]) == pytest.approx(0.6, abs=0.03)
    assert stats.hit_correlation(np.zeros(5), np.ones(5)) == 0.0


def test_hypergeometric_shortcut_matches_subsampling():
    """The simulation's hypergeometric draw has the distribution of real subsample means."""
    rng = np.random.default_rng(4)
    h = rng.random(200) < 0.3
    k, m = int(h.sum()), 20
    direct = stats.subsample_means(h, 3000, 0.1, rng)
    shortcut = rng.hypergeometric(k, 200 - k, m, size=3000) / m
    assert sps.ks_2samp(direct, shortcut).pvalue > 0.01
    assert direct.var() == pytest.approx(shortcut.var(), rel=0.15)


def test_simulation_study_inflates_and_mcnemar_does_not():
    sim = stats.simulate_study_false_positives(
        n_users=1000, hit_rate=0.1, n_reps=300, n_subsamples_grid=(5, 30), seed=0
    )
    t = sim.table.set_index(["method", "n_subsamples"])["rate"]
    study30 = t[("study's subsample t-test", 30)]
    mcnemar = t[("exact McNemar (paired)", 0)]
    assert study30 > 0.15  # far above the nominal 5%
    assert mcnemar < 0.09
    assert study30 > t[("study's subsample t-test", 5)]
    assert sim.pvalues_study.shape == (300,) and sim.pvalues_mcnemar.shape == (300,)
    assert sim.n_reps == 300
    assert sim.rejections_study == int((sim.pvalues_study < 0.05).sum())
    assert sim.rejections_mcnemar == int((sim.pvalues_mcnemar < 0.05).sum())
    again = stats.simulate_study_false_positives(
        n_users=1000, hit_rate=0.1, n_reps=300, n_subsamples_grid=(5, 30), seed=0
    )
    pd.testing.assert_frame_equal(sim.table, again.table)


# ------------------------------------------------------------------------------- book summary


def test_results_summary(tmp_path):
    save_results(tmp_path, "02_collaborative_filtering", {"hr_at_10_seed": 0.1})
    save_results(tmp_path, "05_training", {"hr_at_10_embedding": 0.2})
    save_results(tmp_path, "07_comparison", {"hr_ci_low_cf_seed": 0.05, "hr_ci_high_cf_seed": 0.15})
    from thirtymusic_utils.book.paths import load_results

    res = {
        n: load_results(tmp_path, n)
        for n in ["02_collaborative_filtering", "05_training", "07_comparison"]
    }
    table = stats.results_summary(res).set_index("model")
    assert list(table.index) == ["cf_seed", "embedding_improved"]
    assert table.loc["cf_seed", "ci_low"] == 0.05
    assert pd.isna(table.loc["embedding_improved", "ci_low"])
    with pytest.raises(ValueError):
        stats.results_summary({})


def test_subsample_table_draws_like_study_ttest():
    rng = np.random.default_rng(2)
    a, b = rng.random(100) < 0.3, rng.random(100) < 0.2
    t = stats.study_subsample_table({"a": a, "b": b, "c": a}, n_subsamples=10, seed=5)
    res = stats.study_ttest(a, b, n_subsamples=10, seed=5)
    np.testing.assert_array_equal(t[t.model == "a"]["mean"], res.means_a)
    np.testing.assert_array_equal(t[t.model == "b"]["mean"], res.means_b)


def test_pair_and_model_records():
    ranks = _ranks(seed=3)
    summary, reps = stats.model_summary(ranks, n_resamples=300, seed=0)
    table = stats.pairwise_comparisons(ranks, reps)
    row = stats.find_pair(table, "embedding_improved", "cf_tuned")
    rec = stats.pair_record(row, "primary", use_holm=False)
    assert rec["primary_pvalue"] == row["mcnemar_p"]
    assert rec["primary_pvalue_text"] == stats.format_pvalue(row["mcnemar_p"])
    assert rec["primary_verdict"] == stats.comparison_verdict(
        row["ci_low"], row["ci_high"], row["mcnemar_p"]
    )
    assert stats.pair_record(row, "x")["x_verdict"] == stats.comparison_verdict(
        row["ci_low"], row["ci_high"], row["mcnemar_p_holm"]
    )
    mrec = stats.model_record(summary)
    assert len(mrec) == 4 * len(stats.BOOK_MODELS)
    assert mrec["hr_ci_low_popularity"] == summary.set_index("model").loc["popularity", "ci_low"]


# ------------------------------------------------------------- library versions against the hand ones


def _holm_by_hand(p):
    p = np.asarray(p, dtype=float)
    m = len(p)
    order = np.argsort(p, kind="stable")
    adj = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adj
    return out


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=12))
def test_holm_statsmodels_matches_hand(p):
    np.testing.assert_allclose(stats.holm(p), _holm_by_hand(p), atol=1e-12)


def _wilson_by_hand(k, n, level=0.95):
    z = float(sps.norm.ppf((1 + level) / 2))
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return centre - half, centre + half


@pytest.mark.parametrize("k,n", [(0, 5), (3, 10), (40, 3600), (17, 17)])
def test_wilson_statsmodels_matches_hand(k, n):
    lo, hi = stats.wilson_interval(k, n)
    hlo, hhi = _wilson_by_hand(k, n)
    assert lo == pytest.approx(max(0.0, hlo), abs=1e-12)
    assert hi == pytest.approx(min(1.0, hhi), abs=1e-12)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=60))
def test_mcnemar_statsmodels_matches_binomtest(pairs):
    a = np.array([x for x, _ in pairs])
    b = np.array([y for _, y in pairs])
    n10, n01 = int((a & ~b).sum()), int((~a & b).sum())
    hand = 1.0 if n10 + n01 == 0 else sps.binomtest(n10, n10 + n01, 0.5).pvalue
    assert stats.mcnemar_exact(a, b).pvalue == pytest.approx(hand, rel=1e-9, abs=1e-12)


def test_scipy_bootstrap_matches_hand_bootstrap():
    rng = np.random.default_rng(4)
    a, b = rng.random(800) < 0.3, rng.random(800) < 0.2
    _, lo, hi = stats.paired_bootstrap_ci(a, b, n_resamples=4000, seed=1)
    reps = stats.bootstrap_means(a.astype(float) - b, n_resamples=4000, seed=2)
    hlo, hhi = stats.percentile_ci(reps)
    assert lo == pytest.approx(hlo, abs=0.01) and hi == pytest.approx(hhi, abs=0.01)
    cis = stats.paired_difference_cis({"a": a, "b": b}, [("a", "b")], n_resamples=4000, seed=1)
    assert cis[0, 0] == pytest.approx(hlo, abs=0.01) and cis[0, 1] == pytest.approx(hhi, abs=0.01)


def test_strongest_baseline_by_validation():
    res = {
        "03_baselines": {
            "val_hr_at_10_cf_tuned": 0.2,
            "val_hr_at_10_ease": 0.25,
            "val_hr_at_10_ials": 0.25,
            "hr_at_10_ials": 0.9,  # a test figure never decides
        }
    }
    best, table = stats.strongest_baseline(res)
    assert best == "ease" and set(table["model"]) == {"cf_tuned", "ease", "ials"}
    with pytest.raises(ValueError, match="no validation HR@10"):
        stats.strongest_baseline({})


def test_registry_covers_every_model():
    assert set(stats.BOOK_MODELS) <= set(stats.MODEL_LABELS) == set(stats.RESULT_KEYS)
    assert set(stats.VALIDATION_KEYS) <= set(stats.BASELINE_MODELS)
