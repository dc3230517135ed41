"""``thirtymusic_utils.study.cf`` and ``study.ttest`` (kNN side) against the literal transcription of the
study's cells (``tests/study_oracle.py``) on small data: tiny synthetic, HetRec, and the first few hundred
users of the default profile. Equal means equal: the same test users, hidden artists, neighbour lists,
top-10 lists, HR@10 and t-test subsamples."""

from __future__ import annotations

import copy
import random

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import study_oracle as oracle
from hypothesis import given, settings
from hypothesis import strategies as st

from thirtymusic_utils.data.matrix import build_matrix
from thirtymusic_utils.data.order import study_column_order
from thirtymusic_utils.data.readers import read_plays
from thirtymusic_utils.evaluation.metrics import hit_ranks
from thirtymusic_utils.evaluation.protocol import extract_users
from thirtymusic_utils.study import cf as S
from thirtymusic_utils.study import ttest as T

# the oracle keeps the study's inplace=True calls, which pandas 3 deprecates
pytestmark = pytest.mark.filterwarnings("ignore:The inplace keyword")


def _oracle_g(data_dir):
    if (data_dir / "user_artists.dat").exists():
        return oracle.hetrec_g(pd.read_csv(data_dir / "user_artists.dat", sep="\t"))
    return oracle.cell_24(pd.read_csv(data_dir / "relations" / "sessions_short.csv", sep=";"))


def _check_against_oracle(data_dir, n_users: int, seed: int) -> None:
    m = extract_users(build_matrix(read_plays(data_dir)), n_users)
    rank = study_column_order(data_dir, m.artist_ids)
    run = S.run_study_cf(m.counts, rank, seed)
    uid, aid = m.user_ids, m.artist_ids

    matrix = oracle.cell_25(_oracle_g(data_dir), n_users)
    # the study's columns are the artists in first-appearance order
    assert list(map(int, matrix.columns)) == list(aid[np.argsort(rank)][: matrix.shape[1]])
    matrix, tu, ta, _ = oracle.cell_27(matrix, seed)
    # the split
    assert tu, "no test users: the check would be empty"
    assert list(uid[run.split.test_rows]) == tu
    assert list(aid[run.split.hidden_cols]) == ta
    train = matrix.loc[tu].to_numpy()
    mine = run.split.train[run.split.test_rows].toarray()[:, np.argsort(rank)][:, : train.shape[1]]
    np.testing.assert_array_equal(train, mine)
    # the neighbour lists (padding included) and their similarities
    cs = oracle.cell_28(matrix)
    nb = oracle.cell_29(cs, tu)
    np.testing.assert_array_equal(nb.loc[tu].to_numpy().astype(np.int64), uid[run.idx])
    for i, u in enumerate(tu):
        np.testing.assert_allclose(cs.loc[u, uid[run.idx[i]]].to_numpy(), run.sim[i], atol=1e-12)
    # the top 10, as run and as written, and HR@10
    n_lists = 0
    for agg, as_written in (("as_run", False), ("as_written", True)):
        hits = 0
        for i, u in enumerate(tu):
            res = oracle.recommend_to_user(u, matrix, nb, cs, as_written=as_written)
            assert list(map(int, res.index)) == [int(aid[c]) for c in run.top[agg][i] if c >= 0]
            hits += ta[i] in list(map(int, res.index))
            n_lists += len(res) > 0
        assert run.hr[agg] == hits / len(tu)
    assert n_lists > 0
    assert run.hr["as_run"] == oracle.test_CF_model(tu, ta, matrix, nb, cs)
    # the t-test's kNN subsamples, continuing the same random stream
    rng = copy.deepcopy(run.rng)
    samples, cf_sample = oracle.cell_32(tu, ta, matrix, nb, cs)
    pos = T.subsample_positions(rng, len(tu))
    assert [list(uid[run.split.test_rows][p]) for p in pos] == samples
    mis, _ = T.cf_subsample_means(run.top["as_run"], run.split.hidden_cols, pos)
    np.testing.assert_allclose(mis, cf_sample, rtol=0, atol=1e-15)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 3])
def test_study_cf_equals_oracle_tiny(tiny_data_dir, seed):
    _check_against_oracle(tiny_data_dir, 300, seed)


@pytest.mark.slow
def test_study_cf_equals_oracle_hetrec(hetrec_dir):
    _check_against_oracle(hetrec_dir, 300, 0)


@pytest.fixture(scope="session")
def default_data_dir(tmp_path_factory):
    from thirtymusic_utils.data.synthetic import generate

    out = tmp_path_factory.mktemp("data") / "synthetic-default-seed0"
    generate(out, profile="default", seed=0)
    return out


@pytest.mark.slow
def test_study_cf_equals_oracle_default_head(default_data_dir):
    _check_against_oracle(default_data_dir, 400, 1)


def test_study_split_rules():
    # one user of 12 artists: counts 5,5,4,4,3,3,2,2,1,1,1,1 in study column order
    counts = sp.csr_matrix(np.array([[5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 1, 1]]))
    draws = [random.Random(7).randrange(1, 6)]
    split, _ = S.study_split(counts, 7, test_share=1.0)
    assert split.hidden_cols.tolist() == draws  # stable sort: column j is at position j
    assert split.hidden_rank.tolist() == [draws[0] + 1]
    # the cap: int(0.3 * n) users, floor; ceil admits one more here
    many = sp.csr_matrix(np.ones((7, 11), dtype=np.int64))
    assert S.study_split(many, 0)[0].n_test == 2
    assert S.study_split(many, 0, cap="ceil")[0].n_test == 3


def test_padding_and_weights():
    # user 0 shares an artist with user 1 only: 1 positive neighbour, the rest padding
    counts = sp.csr_matrix(
        np.array([[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=np.int64)
    )
    idx, sim = S.study_neighbours(counts, 3, rows=np.array([0]))
    assert idx[0].tolist() == [1, 0, 2]  # then zero-similarity users by row, the user itself first
    assert sim[0, 1] == 0 and sim[0, 0] > 0
    w = S.study_weights(sim, idx, "as_written")
    assert w[0].tolist() == [0.0, 1.0, 1.0]  # most similar 0, padding 1
    nidx, _ = S.study_neighbours(counts, 3, rows=np.array([0]), pad=False)
    assert nidx[0].tolist() == [1, -1, -1]
    # equal similarities: 0 / 0 in pandas is NaN, skipped by sum: no weight
    assert S.study_weights(np.zeros((1, 2)), np.zeros((1, 2), int), "as_written").tolist() == [
        [0.0, 0.0]
    ]


@settings(max_examples=25, deadline=None)
@given(
    st.integers(0, 2**31 - 1),
    st.integers(2, 40),
    st.integers(1, 12),
    st.sampled_from([1, 3, 7]),
    st.booleans(),
    st.booleans(),
)
def test_neighbours_do_not_depend_on_blocks_or_threads(seed, n_users, k, block_rows, pad, ranked):
    """Blocks on two threads give the neighbour lists and top-n lists of one block on one thread,
    ties and padding included (small integer counts: many equal cosines and scores)."""
    rng = np.random.default_rng(seed)
    counts = sp.csr_matrix((rng.random((n_users, 9)) < 0.3) * rng.integers(1, 4, (n_users, 9)))
    rows = rng.choice(n_users, size=min(n_users, 11), replace=False)
    user_rank = rng.permutation(n_users) if ranked else None
    one = S.study_neighbours(
        counts, k, rows=rows, pad=pad, user_rank=user_rank, block_rows=10**6, workers=1
    )
    two = S.study_neighbours(
        counts, k, rows=rows, pad=pad, user_rank=user_rank, block_rows=block_rows, workers=2
    )
    np.testing.assert_array_equal(one[0], two[0])
    np.testing.assert_array_equal(one[1], two[1])
    for agg in S.STUDY_AGGREGATIONS:
        top1 = S.study_top_n(counts, rows, *one, agg, 4, block_rows=10**6, workers=1)
        top2 = S.study_top_n(counts, rows, *one, agg, 4, block_rows=block_rows, workers=2)
        np.testing.assert_array_equal(top1, top2)


def test_misaligned_subsample_means():
    top = np.array([[1, 2], [3, 4], [5, 6]])
    hidden = np.array([1, 4, 6])
    mis, ali = T.cf_subsample_means(top, hidden, [[2, 0], [1]])
    # subsample [2, 0]: user 2's list against hidden[0] = 1 (miss), user 0's against hidden[1] = 4
    assert mis.tolist() == [0.0, 0.0] and ali.tolist() == [1.0, 1.0]


def test_subsample_positions_match_random_sample():
    ids = [11, 42, 7, 99, 5, 3, 8, 21, 34, 55, 89]
    a = random.Random(3)
    b = random.Random(3)
    pos = T.subsample_positions(a, len(ids), 4, 5)
    assert [[ids[p] for p in s] for s in pos] == [b.sample(ids, len(ids) // 5) for _ in range(4)]


def test_book_and_study_columns_agree(tiny_data_dir):
    m = build_matrix(read_plays(tiny_data_dir))
    rank = study_column_order(tiny_data_dir, m.artist_ids)
    run = S.run_study_cf(m.counts, rank, 0, aggregations=("as_run",))
    back = S.permute_columns(run.split.train, rank)
    assert (back != run.study_split.train).nnz == 0
    assert (run.order[run.study_split.hidden_cols] == run.split.hidden_cols).all()
    # the tie spread's identity order is the rule itself
    idx, sim = S.study_neighbours(
        run.study_split.train, rows=run.study_split.test_rows, user_rank=np.arange(m.shape[0])
    )
    np.testing.assert_array_equal(idx, run.idx)


@pytest.mark.parametrize("layout", ["idomaar", "csv"])
def test_scan_gathers_the_first_plays_that_a_second_read_finds(tiny_data_dir, layout):
    from thirtymusic_utils.data.order import first_appearance_keys, pair_first_positions
    from thirtymusic_utils.data.readers import scan_plays

    scan = scan_plays(tiny_data_dir, layout=layout, chunk_lines=50, pair_first=True)
    again = first_appearance_keys(tiny_data_dir, layout=layout)
    assert len(again) > 50
    pd.testing.assert_frame_equal(scan.first_plays, again)
    pairs = pair_first_positions(tiny_data_dir, layout=layout)
    assert len(pairs) == len(scan.plays)
    pd.testing.assert_frame_equal(scan.pair_first, pairs)
    assert scan_plays(tiny_data_dir, layout=layout, chunk_lines=50).pair_first is None
    m = build_matrix(scan.plays)
    np.testing.assert_array_equal(
        study_column_order(tiny_data_dir, m.artist_ids, keys=scan.first_plays),
        study_column_order(tiny_data_dir, m.artist_ids, layout=layout),
    )


def test_scan_first_plays_on_hetrec_and_their_round_trip(hetrec_dir, tmp_path):
    from thirtymusic_utils.data.order import (
        first_appearance_keys,
        load_first_plays,
        load_pair_first,
        pair_first_positions,
        save_first_plays,
        save_pair_first,
    )
    from thirtymusic_utils.data.readers import scan_plays

    scan = scan_plays(hetrec_dir, pair_first=True, chunk_lines=4_000)
    for frame, reread, save, load in (
        (scan.first_plays, first_appearance_keys, save_first_plays, load_first_plays),
        (scan.pair_first, pair_first_positions, save_pair_first, load_pair_first),
    ):
        pd.testing.assert_frame_equal(frame, reread(hetrec_dir))
        assert load(tmp_path) is None
        save(frame, tmp_path)
        pd.testing.assert_frame_equal(load(tmp_path), frame)
        save(None, tmp_path)
        assert load(tmp_path) is None


def _naive_hr(counts, rank, seed, *, aggregation="as_run", **kw):
    """One full run of run_study_cf per variant: the reference the shared work must equal."""
    return S.run_study_cf(counts, rank, seed, aggregations=(aggregation,), **kw).hr[aggregation]


@pytest.fixture(scope="module")
def tiny_counts_rank(tiny_data_dir):
    m = build_matrix(read_plays(tiny_data_dir))
    return m.counts, study_column_order(tiny_data_dir, m.artist_ids)


def test_knn_ledger_shares_work_and_equals_a_run_per_variant(tiny_counts_rank):
    from thirtymusic_utils.study import ledger as L

    counts, rank = tiny_counts_rank
    seed = 3
    base = {"first": 1, "cap": "floor", "pad": True, "aggregation": "as_run"}
    as_ran = _naive_hr(counts, rank, seed, **base)
    running = dict(base)
    want_alone, want_running = [], []
    for _, _, _, _, fix, chain in L.KNN_DEPARTURES:
        kw = {**base, **fix}
        r = kw.pop("rank", rank)
        want_alone.append(_naive_hr(counts, r, seed, **kw))
        if chain:
            running.update(fix)
            want_running.append(_naive_hr(counts, rank, seed, **running))
        else:
            want_running.append(np.nan)
    known = [
        S.run_study_cf(counts, rank, seed),
        S.run_study_cf(counts, None, seed, aggregations=("as_run",)),
        S.run_study_cf(counts, rank, seed + 1),  # another seed: must not be taken
    ]
    for reuse in ((), known):
        got = L.knn_ledger(counts, rank, seed, known=reuse)
        assert (got["as_ran"] == as_ran).all()
        np.testing.assert_array_equal(got["fixed_alone"].to_numpy(), want_alone)
        np.testing.assert_array_equal(got["running"].to_numpy(), want_running)
    # one fix at a time: four splits, two of them known; the running chain adds one (first 0, ceil)
    runs = L.KnnRuns(counts, rank, seed, known=known)
    for _, _, _, _, fix, _ in L.KNN_DEPARTURES:
        runs.hr(**{**base, **fix})
    assert runs.searches == 2
    runs.hr(first=0, cap="ceil", pad=False, aggregation="weighted")
    assert runs.searches == 3
    assert runs.hr(pad=False) == _naive_hr(counts, rank, seed, pad=False)


def test_knn_seed_table_equals_a_run_per_seed(tiny_counts_rank):
    from thirtymusic_utils.study import ledger as L

    counts, rank = tiny_counts_rank
    known = [S.run_study_cf(counts, rank, 0), S.run_study_cf(counts, None, 0)]
    table = L.knn_seed_table(counts, rank, [0, 1], known=known)
    for row in table.itertuples():
        run = S.run_study_cf(counts, rank, row.seed)
        assert row.n_test == run.split.n_test
        assert row.hr_at_10_seed == run.hr["as_run"]
        assert row.hr_at_10_weighted == run.hr["weighted"]
        assert row.hr_at_10_seed_id_ties == _naive_hr(counts, None, row.seed)


def test_tie_spread_reuses_the_run_it_is_given_and_refuses_another(tiny_counts_rank):
    """Fresh or reusing a run: the same spread; its first order is the one a plain loop draws (a
    column rank, a user rank, a split rank) and scores."""
    counts, rank = tiny_counts_rank
    fresh = S.tie_spread(counts, rank, 2, n_orders=2)
    base = S.run_study_cf(counts, rank, 2)
    reused = S.tie_spread(counts, rank, 2, n_orders=2, base=base)
    assert set(fresh) == {"top10", "neighbours", "all"}
    for key in fresh:
        assert len(fresh[key]) == 2
        np.testing.assert_array_equal(reused[key], fresh[key])
    gen = np.random.default_rng(12345)
    n_users, n_art = counts.shape
    ss = base.study_split
    perm = gen.permutation(n_art)
    t = S.study_top_n(S.permute_columns(ss.train, perm), ss.test_rows, base.idx, base.sim, "as_run")
    assert fresh["top10"][0] == (hit_ranks(t, perm[ss.hidden_cols]) > 0).mean()
    urank = gen.permutation(n_users)
    r_all = gen.permutation(n_art)
    run = S.run_study_cf(counts, r_all, 2, aggregations=("as_run",), user_rank=urank)
    assert fresh["all"][0] == run.hr["as_run"]
    with pytest.raises(ValueError, match="tie_spread needs"):
        S.tie_spread(counts, rank, 2, n_orders=1, base=S.run_study_cf(counts, None, 2))
    with pytest.raises(ValueError, match="tie_spread needs"):
        S.tie_spread(counts, rank, 2, n_orders=1, base=S.run_study_cf(counts, rank, 3))
