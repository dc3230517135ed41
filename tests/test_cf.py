"""User-kNN collaborative filtering: the split, neighbours, aggregations, recommendation, tuning."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from thirtymusic_utils.bench_stages import bench_matrix, ours_top_n, seed_dense_top_n
from thirtymusic_utils.evaluation import protocol
from thirtymusic_utils.evaluation.protocol import Split, holdout_split, load_split, save_split
from thirtymusic_utils.models import knn as cf
from thirtymusic_utils.models.knn import (
    MODELS,
    aggregate_scores,
    best_setting,
    cf_top_n,
    load_outcomes,
    minmax_columns,
    neighbour_weights,
    outcomes_frame,
    popularity_top_n,
    recommend_top_n,
    save_outcomes,
    similar_artists,
    topk_neighbours,
    tune_knn,
    weight_matrix,
)

# --------------------------------------------------------------------------------------------------
# helpers


def random_counts(rng, n, m, density, high=6):
    """A random int64 CSR count matrix."""
    dense = rng.integers(1, high, size=(n, m)) * (rng.random((n, m)) < density)
    return sp.csr_matrix(dense.astype(np.int64))


def brute_neighbours(X, k, rows):
    """Cosine top-k by a dense float64 computation: (indices, sims) per row, ties by lower index."""
    D = X.toarray().astype(np.float64)
    norm = np.linalg.norm(D, axis=1)
    norm[norm == 0] = 1
    D /= norm[:, None]
    S = D @ D.T
    out = []
    for r in rows:
        s = S[r].copy()
        s[r] = -np.inf
        order = np.lexsort((np.arange(len(s)), -s))
        order = order[s[order] > 1e-12][:k]
        out.append((order, s[order]))
    return out


def assert_same_neighbours(X, k, rows, idx, sim):
    """Equal to brute force up to ties: the same similarity profile, valid and sorted indices."""
    n = X.shape[0]
    ref = brute_neighbours(X, k, np.arange(n) if rows is None else rows)
    assert idx.shape == sim.shape == (len(ref), k)
    assert idx.dtype == np.int64 and sim.dtype == np.float32
    D = X.toarray().astype(np.float64)
    norm = np.linalg.norm(D, axis=1)
    norm[norm == 0] = 1
    D /= norm[:, None]
    for i, (order, s) in enumerate(ref):
        got = idx[i][idx[i] >= 0]
        r = i if rows is None else rows[i]
        assert len(got) == len(order), (i, got, order)
        assert (idx[i][len(got) :] == -1).all() and (sim[i][len(got) :] == 0).all()
        assert r not in got.tolist()
        assert len(set(got.tolist())) == len(got)
        np.testing.assert_allclose(sim[i][: len(got)], s, atol=1e-5)
        np.testing.assert_allclose(D[got] @ D[r], s, atol=1e-5)  # the listed users' true cosines
        assert (np.diff(sim[i][: len(got)]) <= 0).all()


# --------------------------------------------------------------------------------------------------
# the split


@st.composite
def count_matrices(draw, max_users=40, max_artists=25):
    n = draw(st.integers(1, max_users))
    m = draw(st.integers(1, max_artists))
    values = draw(arrays(np.int64, (n, m), elements=st.integers(0, 4)))
    return sp.csr_matrix(values)


def simulate_study_loop(counts, candidates, min_artists, share):
    """The study's loop, literally: add while count * 10 < 3 * n_users (for share 0.3)."""
    num, den = share
    n_users = len(candidates)
    chosen = []
    for r in candidates:
        if counts[r].nnz > min_artists and len(chosen) * den < num * n_users:
            chosen.append(r)
    return chosen


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    counts=count_matrices(),
    min_artists=st.integers(1, 12),
    seed=st.integers(0, 2**31),
    share=st.sampled_from([(3, 10), (1, 2), (1, 1), (0, 1), (1, 7)]),
    restrict=st.booleans(),
    data=st.data(),
)
def test_split_invariants(counts, min_artists, seed, share, restrict, data):
    n = counts.shape[0]
    candidates = None
    if restrict:
        candidates = np.array(sorted(data.draw(st.sets(st.integers(0, n - 1)))), dtype=np.int64)
    hi = min(6, min_artists + 1)
    ranks = (min(2, hi), hi)
    split = holdout_split(
        counts, seed, min_artists=min_artists, test_share=share[0] / share[1], ranks=ranks,
        candidate_rows=candidates,
    )  # fmt: skip
    pool = np.arange(n) if candidates is None else candidates
    expected = simulate_study_loop(counts, pool, min_artists, share)
    assert split.test_rows.tolist() == expected
    assert split.test_rows.dtype == split.hidden_cols.dtype == split.hidden_rank.dtype == np.int64
    assert (np.diff(split.test_rows) > 0).all()
    assert set(split.test_rows.tolist()) <= set(pool.tolist())
    nnz = np.diff(counts.indptr)
    assert (nnz[split.test_rows] > min_artists).all()
    assert ((split.hidden_rank >= ranks[0]) & (split.hidden_rank <= ranks[1])).all()
    dense = counts.toarray()
    for r, c, rank in zip(split.test_rows, split.hidden_cols, split.hidden_rank, strict=True):
        row = dense[r]
        cols = np.flatnonzero(row)
        order = cols[np.lexsort((cols, -row[cols]))]  # counts descending, ties by column
        assert order[rank - 1] == c
    # train = counts minus exactly the hidden cells
    train = split.train
    assert train.dtype == np.int64 and train.shape == counts.shape
    assert (train.data != 0).all()
    diff = dense - train.toarray()
    expected_diff = np.zeros_like(dense)
    expected_diff[split.test_rows, split.hidden_cols] = dense[split.test_rows, split.hidden_cols]
    np.testing.assert_array_equal(diff, expected_diff)
    # deterministic per seed
    again = holdout_split(
        counts, seed, min_artists=min_artists, test_share=share[0] / share[1], ranks=ranks,
        candidate_rows=candidates,
    )  # fmt: skip
    np.testing.assert_array_equal(again.hidden_cols, split.hidden_cols)
    np.testing.assert_array_equal(again.hidden_rank, split.hidden_rank)
    assert (again.train != split.train).nnz == 0


def test_split_thirty_percent_cap_is_strict_before_adding():
    # 10 users, all eligible: users are added while count * 10 < 3 * 10, i.e. 3 of them
    counts = sp.csr_matrix(np.ones((10, 12), dtype=np.int64))
    assert holdout_split(counts, 0).test_rows.tolist() == [0, 1, 2]
    # 11 users: 3 * 11 = 33 > 30, a fourth is added (count 3: 30 < 33)
    counts = sp.csr_matrix(np.ones((11, 12), dtype=np.int64))
    assert holdout_split(counts, 0).test_rows.tolist() == [0, 1, 2, 3]


def test_split_only_users_with_more_than_ten_artists():
    rows = [np.r_[np.ones(10), np.zeros(2)], np.ones(12), np.r_[np.ones(11), 0]]
    counts = sp.csr_matrix(np.array(rows, dtype=np.int64))
    split = holdout_split(counts, 0, test_share=1.0)
    assert split.test_rows.tolist() == [1, 2]


def test_split_rank_ties_by_artist_column_and_every_rank_drawn():
    # counts 5,3,3,3,3,3,... : ranks 2..6 are the tied 3s in column order
    row = np.array([5] + [3] * 11, dtype=np.int64)
    counts = sp.csr_matrix(np.tile(row, (200, 1)))
    split = holdout_split(counts, 1, test_share=1.0)
    np.testing.assert_array_equal(split.hidden_cols, split.hidden_rank - 1)
    assert set(split.hidden_rank.tolist()) == {2, 3, 4, 5, 6}
    other = holdout_split(counts, 2, test_share=1.0)
    assert (other.hidden_rank != split.hidden_rank).any()


def test_split_validation_from_non_test_users():
    rng = np.random.default_rng(0)
    counts = random_counts(rng, 300, 60, 0.3)
    split = holdout_split(counts, 0)
    non_test = np.setdiff1d(np.arange(300), split.test_rows)
    val = holdout_split(split.train, 1, candidate_rows=non_test)
    assert len(val.test_rows) > 0
    assert not set(val.test_rows.tolist()) & set(split.test_rows.tolist())
    # the validation train lacks both hold-outs
    removed = (counts - val.train).tocoo()
    assert removed.nnz == split.n_test + val.n_test


def test_split_rejects_bad_input():
    counts = sp.csr_matrix(np.ones((3, 12), dtype=np.int64))
    with pytest.raises(ValueError, match="ranks"):
        holdout_split(counts, 0, min_artists=3, ranks=(2, 6))
    with pytest.raises(ValueError, match="test_share"):
        holdout_split(counts, 0, test_share=1.5)
    with pytest.raises(ValueError, match="non-negative"):
        holdout_split(sp.csr_matrix(-np.ones((2, 12))), 0)
    with pytest.raises(ValueError, match="integer play counts"):
        holdout_split(sp.csr_matrix(np.full((2, 12), 0.5)), 0)
    with pytest.raises(TypeError, match="scipy.sparse"):
        holdout_split(np.ones((3, 12)), 0)
    with pytest.raises(ValueError, match="candidate_rows"):
        holdout_split(counts, 0, candidate_rows=np.array([5]))


def test_save_and_load_split(tmp_path):
    rng = np.random.default_rng(1)
    split = holdout_split(random_counts(rng, 50, 30, 0.5), 3)
    path = save_split(split, tmp_path)
    assert path == tmp_path / "artifacts" / "split.npz"
    back = load_split(tmp_path)
    assert isinstance(back, Split)
    assert (back.train != split.train).nnz == 0 and back.train.dtype == np.int64
    for name in ("test_rows", "hidden_cols", "hidden_rank"):
        np.testing.assert_array_equal(getattr(back, name), getattr(split, name))
    with pytest.raises(FileNotFoundError, match="02_collaborative_filtering"):
        load_split(tmp_path / "nothing")


# --------------------------------------------------------------------------------------------------
# weighting


def test_minmax_matches_dense_scaler_semantics():
    dense = np.array(
        [
            [2, 0, 7, 4, 0],
            [4, 1, 7, 0, 0],
            [6, 0, 7, 1, 3],
        ],
        dtype=np.int64,
    )  # column 0 is full (min 2), column 2 constant (range 0 -> all zeros), column 4 single
    got = minmax_columns(sp.csr_matrix(dense)).toarray()
    lo = dense.min(axis=0).astype(float)
    rng = dense.max(axis=0) - lo
    rng[rng == 0] = 1
    np.testing.assert_allclose(got, (dense - lo) / rng)
    assert got[0, 0] == 0 and got[2, 0] == 1 and (got[:, 2] == 0).all()
    assert minmax_columns(sp.csr_matrix(dense)).nnz == np.count_nonzero((dense - lo) / rng)


def test_weightings():
    counts = sp.csr_matrix(np.array([[1, 0, 3], [0, 5, 0]], dtype=np.int64))
    np.testing.assert_allclose(
        weight_matrix(counts, "log1p").toarray(), np.log1p(counts.toarray()), rtol=1e-6
    )
    np.testing.assert_array_equal(weight_matrix(counts, "binary").toarray(), counts.toarray() > 0)
    assert weight_matrix(counts, "minmax").dtype == np.float32
    with pytest.raises(ValueError, match="weighting must be one of"):
        weight_matrix(counts, "tfidf")


# --------------------------------------------------------------------------------------------------
# neighbours


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("head", [None, 0, 5, 1000])
@pytest.mark.parametrize("workers", [1, 2])
def test_topk_neighbours_matches_brute_force(symmetric, head, workers):
    rng = np.random.default_rng(7)
    for _trial in range(12):
        n, m = int(rng.integers(2, 70)), int(rng.integers(1, 40))
        X = random_counts(rng, n, m, rng.uniform(0.03, 0.5), high=4).astype(np.float64)
        k = int(rng.integers(1, 15))
        rows = None if symmetric else rng.integers(0, n, int(rng.integers(0, n + 1)))
        block = int(rng.integers(1, 25))
        idx, sim = topk_neighbours(
            X, k, rows=rows, block_rows=block, head_columns=head, workers=workers
        )
        assert_same_neighbours(X, k, rows, idx, sim)


@settings(max_examples=30, deadline=None)
@given(
    counts=count_matrices(max_users=30, max_artists=12),
    k=st.integers(1, 8),
    block=st.integers(1, 9),
)
def test_topk_neighbours_property(counts, k, block):
    X = counts.astype(np.float64)
    idx, sim = topk_neighbours(X, k, block_rows=block, head_columns=2, n_suffixes=3)
    assert_same_neighbours(X, k, None, idx, sim)


def test_topk_ties_go_to_lower_index_and_zero_similarity_is_no_neighbour():
    # users 1..4 are identical, user 5 shares nothing with user 0
    X = sp.csr_matrix(
        np.array([[1, 1, 0], [1, 0, 0], [1, 0, 0], [1, 0, 0], [1, 0, 0], [0, 0, 1]], dtype=float)
    )
    for head in (0, 3):
        for rows in (None, np.array([0, 5])):
            idx, sim = topk_neighbours(X, 2, rows=rows, block_rows=2, head_columns=head)
            assert idx[0].tolist() == [1, 2]
            assert sim[0] == pytest.approx([1 / np.sqrt(2)] * 2)
            assert idx[-1].tolist() == [-1, -1] and sim[-1].tolist() == [0, 0]


def test_topk_handles_empty_rows_and_tiny_inputs():
    X = sp.csr_matrix(np.array([[0, 0], [1, 0], [2, 0]], dtype=float))
    idx, sim = topk_neighbours(X, 5)
    assert idx[0].tolist() == [-1] * 5
    assert idx[1].tolist() == [2, -1, -1, -1, -1]
    idx, _ = topk_neighbours(sp.csr_matrix((1, 3)), 3)
    assert idx.tolist() == [[-1, -1, -1]]
    with pytest.raises(ValueError, match="k must"):
        topk_neighbours(X, 0)
    with pytest.raises(ValueError, match="rows"):
        topk_neighbours(X, 1, rows=[3])


# --------------------------------------------------------------------------------------------------
# aggregation and recommendation

HAND_COUNTS = sp.csr_matrix(np.array([[1, 0, 2, 0], [0, 3, 0, 1], [4, 0, 0, 5]], dtype=np.int64))


def test_aggregations_hand_example():
    idx = np.array([[1, 2, -1]])
    sim = np.array([[0.8, 0.2, 0.0]])
    as_run = aggregate_scores(idx, sim, HAND_COUNTS, "seed_as_run").toarray()
    np.testing.assert_allclose(as_run, [[4, 3, 0, 6]])
    # minmax over (0.8, 0.2) is (1, 0): weights 1 - that = (0, 1): only the least similar counts
    written = aggregate_scores(idx, sim, HAND_COUNTS, "seed_as_written").toarray()
    np.testing.assert_allclose(written, [[4, 0, 0, 5]])
    weighted = aggregate_scores(idx, sim, HAND_COUNTS, "weighted").toarray()
    np.testing.assert_allclose(weighted, [[0.8, 2.4, 0, 0.8 + 1.0]])


def test_neighbour_weights_edge_cases():
    idx = np.array([[0, -1], [1, 2], [-1, -1]])
    sim = np.array([[0.5, 0.0], [0.3, 0.3], [0.0, 0.0]])
    # one neighbour or a constant list: MinMaxScaler maps to 0, the weight is 1
    w = neighbour_weights(sim, idx, "seed_as_written")
    np.testing.assert_allclose(w, [[1, 0], [1, 1], [0, 0]])
    np.testing.assert_allclose(neighbour_weights(sim, idx, "seed_as_run"), [[1, 0], [1, 1], [0, 0]])
    np.testing.assert_allclose(
        neighbour_weights(sim, idx, "weighted"), [[0.5, 0], [0.3, 0.3], [0, 0]]
    )
    with pytest.raises(ValueError, match="aggregation must be one of"):
        neighbour_weights(sim, idx, "mean")


def test_recommend_top_n_excludes_heard_and_breaks_ties_by_column():
    scores = np.array([[0.0, 5.0, 5.0, 9.0, 1.0, -2.0], [3.0, 0, 0, 0, 0, 0]])
    heard = sp.csr_matrix(np.array([[0, 0, 0, 1, 0, 0], [0, 0, 0, 0, 0, 0]]))
    expected = [[1, 2, 4, -1], [0, -1, -1, -1]]
    assert recommend_top_n(scores, heard, 4).tolist() == expected
    assert recommend_top_n(sp.csr_matrix(scores), heard, 4).tolist() == expected
    assert recommend_top_n(sp.csr_matrix(scores), heard, 1).tolist() == [[1], [0]]
    with pytest.raises(ValueError, match="shape"):
        recommend_top_n(scores, sp.csr_matrix((1, 6)), 2)


def test_recommend_top_n_sparse_equals_dense_on_random_scores():
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 4, (40, 30)).astype(float) * (rng.random((40, 30)) < 0.5)
    heard = sp.csr_matrix(rng.random((40, 30)) < 0.2)
    dense = recommend_top_n(scores, heard, 7)
    np.testing.assert_array_equal(recommend_top_n(sp.csr_matrix(scores), heard, 7), dense)
    for r in range(40):  # reference: stable sort of -score over the allowed columns
        s = np.where(heard[r].toarray().ravel(), -np.inf, scores[r])
        order = np.argsort(-s, kind="stable")
        order = order[s[order] > 0][:7]
        assert dense[r][: len(order)].tolist() == order.tolist()


def test_popularity_top_n_hand_example():
    train = sp.csr_matrix(
        np.array([[1, 1, 0, 0, 0], [1, 0, 1, 0, 0], [1, 1, 0, 0, 0], [0, 0, 1, 1, 0]])
    )  # listeners per column: 3, 2, 2, 1, 0
    top = popularity_top_n(train, np.array([0, 3]), n=4)
    assert top.tolist() == [[2, 3, -1, -1], [0, 1, -1, -1]]


def test_cf_top_n_blocks_equal_one_pass():
    rng = np.random.default_rng(4)
    counts = random_counts(rng, 60, 40, 0.25)
    rows = np.arange(0, 60, 3)
    idx, sim = topk_neighbours(weight_matrix(counts, "log1p"), 5, rows=rows)
    one = cf_top_n(counts, rows, idx, sim, "weighted", 10, block_rows=1000)
    blocks = cf_top_n(counts, rows, idx, sim, "weighted", 10, block_rows=3)
    np.testing.assert_array_equal(one, blocks)
    scores = aggregate_scores(idx, sim, counts, "weighted")
    np.testing.assert_array_equal(one, recommend_top_n(scores, counts[rows], 10))
    heard = counts[rows].toarray() > 0
    got = np.take_along_axis(heard, np.maximum(one, 0), axis=1) & (one >= 0)
    assert not got.any()


def test_similar_artists_matches_dense_cosine():
    rng = np.random.default_rng(5)
    counts = random_counts(rng, 50, 20, 0.3)
    W = (counts.toarray() > 0).astype(float)
    norm = np.linalg.norm(W, axis=0)
    for col in range(20):
        cols, sims = similar_artists(counts, col, n=5)
        if norm[col] == 0:
            assert (cols == -1).all()
            continue
        cos = (W.T @ W[:, col]) / np.where(norm > 0, norm * norm[col], 1)
        cos[col] = 0
        order = np.lexsort((np.arange(20), -cos))
        order = order[cos[order] > 0][:5]
        assert cols[: len(order)].tolist() == order.tolist()
        np.testing.assert_allclose(sims[: len(order)], cos[order])
    many, _ = similar_artists(counts, [0, 1], n=5)
    assert many.shape == (2, 5)


def test_dense_seed_baseline_agrees_with_ours():
    rng = np.random.default_rng(6)
    counts = random_counts(rng, 80, 50, 0.2, high=30)
    rows = np.arange(0, 80, 4)
    dense = seed_dense_top_n(counts, rows, k=10, n=5, slab_bytes=80 * 8 * 7)  # 7-column slabs
    ours = ours_top_n(counts, rows, k=10, n=5)
    # equal up to ties: the listed artists carry the same reference scores
    X = minmax_columns(counts).toarray()
    X /= np.maximum(np.linalg.norm(X, axis=1), 1e-300)[:, None]
    S = X @ X.T
    for i, r in enumerate(rows):
        s = S[r].copy()
        s[r] = -np.inf
        order = np.lexsort((np.arange(80), -s))[:10]
        order = order[s[order] > 0]
        score = counts[order].toarray().sum(axis=0).astype(float)
        score[counts[r].indices] = 0
        for top in (dense[i], ours[i]):
            valid = top[top >= 0]
            expect = np.sort(score[score > 0])[::-1][: len(valid)]
            np.testing.assert_allclose(score[valid], expect)


# --------------------------------------------------------------------------------------------------
# tuning, outcomes, extract, bench matrix


def test_tune_knn_and_best_setting():
    rng = np.random.default_rng(8)
    counts = random_counts(rng, 120, 40, 0.35)
    split = holdout_split(counts, 0)
    table = tune_knn(
        split.train, split.test_rows, split.hidden_cols, ks=(3, 10), weightings=("binary", "log1p")
    )
    assert len(table) == 4
    assert set(table.columns) >= {"weighting", "k", "hr_at_10", "ndcg_at_10", "mrr_at_10"}
    assert table["hr_at_10"].between(0, 1).all()
    k, w = best_setting(table)
    assert (k, w) in set(zip(table["k"], table["weighting"], strict=True))
    hand = pd.DataFrame(
        {"weighting": ["log1p", "minmax", "binary", "minmax"], "k": [50, 30, 30, 10],
         "hr_at_10": [0.2, 0.2, 0.2, 0.1], "ndcg_at_10": [0.1, 0.1, 0.1, 0.5]}
    )  # fmt: skip
    # a tie on HR and NDCG: the smaller k, then the order of WEIGHTINGS
    assert best_setting(hand) == (30, "minmax")
    with pytest.raises(ValueError, match="no validation users"):
        tune_knn(split.train, np.array([], dtype=np.int64), np.array([], dtype=np.int64))


def test_outcomes_frame_round_trip(tmp_path):
    rng = np.random.default_rng(9)
    split = holdout_split(random_counts(rng, 40, 30, 0.6), 0)
    user_ids = np.arange(40) * 10 + 7
    artist_ids = np.arange(30) * 3 + 1
    ranks = {m: rng.integers(0, 11, split.n_test) for m in MODELS}
    frame = outcomes_frame(user_ids, artist_ids, split, ranks)
    assert frame.columns.tolist() == ["user_id", "artist_id"] + [f"rank_{m}" for m in MODELS]
    assert frame["user_id"].tolist() == (split.test_rows * 10 + 7).tolist()
    assert frame["artist_id"].tolist() == (split.hidden_cols * 3 + 1).tolist()
    save_outcomes(frame, tmp_path)
    back = load_outcomes(tmp_path)
    pd.testing.assert_frame_equal(back, frame, check_dtype=False)
    assert (back.dtypes == np.int64).all()
    with pytest.raises(ValueError, match="lacks models"):
        outcomes_frame(user_ids, artist_ids, split, {"popularity": ranks["popularity"]})


def test_extract_users_keeps_the_first_users():
    from thirtymusic_utils.data.matrix import UserArtistMatrix

    counts = sp.csr_matrix(np.arange(12).reshape(4, 3))
    matrix = UserArtistMatrix(
        counts, np.array([3, 5, 8, 9]), np.array([1, 2, 3]), np.array(["a", "b", "c"], dtype=object)
    )
    small = protocol.extract_users(matrix, 2)
    assert small.shape == (2, 3) and small.user_ids.tolist() == [3, 5]
    assert protocol.extract_users(matrix, 0) is matrix
    with pytest.raises(ValueError, match="max_users"):
        protocol.extract_users(matrix, -1)


def test_bench_matrix_shape_and_determinism():
    a = bench_matrix(n_users=300, n_artists=2000, nnz=20_000, seed=1)
    b = bench_matrix(n_users=300, n_artists=2000, nnz=20_000, seed=1)
    assert a.shape == (300, 2000) and a.dtype == np.int64
    assert 15_000 < a.nnz < 22_000
    assert (a != b).nnz == 0
    assert (np.diff(a.indptr) > 0).all()
    col = np.sort(np.bincount(a.indices, minlength=2000))[::-1]
    assert col[:20].mean() > 4 * np.median(col)  # Zipf-skewed columns


def test_real_hetrec_neighbours_and_protocol(hetrec_dir):
    from thirtymusic_utils.data.matrix import build_matrix
    from thirtymusic_utils.data.readers import read_plays

    counts = build_matrix(read_plays(hetrec_dir)).counts
    split = holdout_split(counts, 0)
    assert 0 < split.n_test and split.n_test * 10 < 3 * counts.shape[0] + 10
    X = weight_matrix(split.train, "minmax")
    idx, sim = topk_neighbours(X, 30)  # all users, automatic dense head on the popular artists
    Xd = X.astype(np.float64)
    norm = np.sqrt(np.asarray(Xd.multiply(Xd).sum(axis=1)).ravel())
    Xd = sp.diags(1 / np.where(norm > 0, norm, 1)) @ Xd
    rows = np.arange(0, counts.shape[0], 7)
    S = (Xd[rows] @ Xd.T).toarray()
    for i, r in enumerate(rows):
        s = S[i]
        s[r] = -np.inf
        ref = np.sort(s[s > 0])[::-1][:30]
        got = idx[r][idx[r] >= 0]
        assert len(got) == len(ref)
        np.testing.assert_allclose(s[got], ref, atol=1e-6)
        np.testing.assert_allclose(sim[r][: len(got)], ref, atol=1e-5)
    # the protocol end to end on real data
    top = cf_top_n(
        split.train, split.test_rows, idx[split.test_rows], sim[split.test_rows], "weighted"
    )
    assert 0 < cf.hr_at_k(cf.hit_ranks(top, split.hidden_cols)) <= 1
