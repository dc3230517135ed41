"""Chapters 03-04: the study's sample rule, the two-tower model, training, checkpoints, evaluation."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from thirtymusic_utils.bench_stages import bench_sample_full, bench_train_epoch_full
from thirtymusic_utils.evaluation.metrics import hit_ranks
from thirtymusic_utils.models.training import (
    ID_TOWER,
    IMPROVED_TOWER,
    IMPROVED_TRAIN,
    PAIR_IMPROVED_TRAIN,
    SEED_TOWER,
    SEED_TRAIN,
    TrainConfig,
    checkpoint_dir,
    fit,
    load_checkpoint,
    new_model,
    pairs_from_outcomes,
    rank_hidden,
    run_improved,
    save_checkpoint,
    similar_artists_embedding,
    top_n,
    train_pairs,
    validation_split,
)
from thirtymusic_utils.models.two_tower import (
    TowerConfig,
    TwoTower,
    heard_mask,
    resolve_device,
    sample_unheard,
    top_per_row,
)
from thirtymusic_utils.study.embedding import (
    output_cosines,
    run_seed,
    seed_diagnostics,
    study_metric,
    study_split,
)
from thirtymusic_utils.study.sample import (
    negative_counts,
    positive_mask,
    sample_statistics,
    study_sample,
)

# --------------------------------------------------------------------------------------------------
# helpers


def random_counts(
    rng: np.random.Generator, n_users: int, n_artists: int, density: float
) -> sp.csr_matrix:
    dense = (rng.random((n_users, n_artists)) < density) * rng.integers(1, 50, (n_users, n_artists))
    return sp.csr_matrix(dense.astype(np.int64))


@st.composite
def count_matrices(draw, max_users: int = 8, max_artists: int = 12):
    n_users = draw(st.integers(1, max_users))
    n_artists = draw(st.integers(1, max_artists))
    seed = draw(st.integers(0, 2**31 - 1))
    density = draw(st.floats(0.0, 1.0))
    return random_counts(np.random.default_rng(seed), n_users, n_artists, density)


def planted(n_per_group: int = 30, n_artists_per_group: int = 12, seed: int = 0) -> sp.csr_matrix:
    """Two user groups, each listening only to (a random half of) its own group of artists."""
    rng = np.random.default_rng(seed)
    n_users, n_artists = 2 * n_per_group, 2 * n_artists_per_group
    dense = np.zeros((n_users, n_artists), dtype=np.int64)
    for u in range(n_users):
        g = u // n_per_group
        own = np.arange(g * n_artists_per_group, (g + 1) * n_artists_per_group)
        heard = rng.choice(own, size=n_artists_per_group // 2, replace=False)
        dense[u, heard] = rng.integers(1, 20, size=len(heard))
    return sp.csr_matrix(dense)


# --------------------------------------------------------------------------------------------------
# the sample rule


HAND = sp.csr_matrix(
    np.array(
        [
            [
                6,
                3,
                1,
                0,
                0,
                0,
                0,
                0,
            ],  # shares .6 .3 .1 -> three positives (.1 reaches the threshold)
            [0, 0, 0, 95, 5, 0, 0, 0],  # shares .95 .05 -> one positive
            [0, 0, 0, 0, 0, 0, 0, 0],  # no plays: no positive
            [1, 1, 1, 1, 1, 1, 1, 1],  # shares 1/8 each -> all positive, nothing unheard
        ],
        dtype=np.int64,
    )
)


def test_positive_mask_hand_example():
    mask = positive_mask(HAND, 0.1)
    csr = HAND.tocsr()
    rows = np.repeat(np.arange(4), np.diff(csr.indptr))
    got = sorted(zip(rows[mask].tolist(), csr.indices[mask].tolist(), strict=True))
    want = [(0, 0), (0, 1), (0, 2), (1, 3)] + [(3, j) for j in range(8)]
    assert got == want


def test_negative_counts_truncate_like_python_int():
    # n_unheard per user: 5, 6, 8, 0
    assert negative_counts(HAND, 0.5).tolist() == [int(0.5 * 5), int(0.5 * 6), int(0.5 * 8), 0]
    assert negative_counts(HAND, 0.3).tolist() == [int(0.3 * 5), int(0.3 * 6), int(0.3 * 8), 0]


def test_zero_negatives_on_a_small_catalogue():
    """The study's negative = 1e-5 gives no negative at all below 100,000 artists."""
    assert negative_counts(HAND).tolist() == [0, 0, 0, 0]
    wide = sp.csr_matrix(([1], ([0], [0])), shape=(1, 99_999), dtype=np.int64)
    assert negative_counts(wide).tolist() == [0]  # 99,998 unheard -> int(0.99998) = 0
    wider = sp.csr_matrix(([1], ([0], [0])), shape=(1, 300_001), dtype=np.int64)
    assert negative_counts(wider).tolist() == [3]
    sample = study_sample(HAND, seed=0)
    stats = sample_statistics(sample)
    assert stats["n_negatives"] == 0
    assert stats["n_positives"] == 12
    assert stats["users_without_positive"] == 1
    assert (sample.targets == 1).all()


def test_study_sample_hand_example_order_and_negatives():
    sample = study_sample(HAND, negative=0.5, seed=3)
    assert sample.users.tolist() == sorted(sample.users.tolist())
    # user 0: positives 0, 1, 2 first (target +1), then int(.5 * 5) = 2 negatives among 3..7
    u0 = sample.users == 0
    assert sample.artists[u0][:3].tolist() == [0, 1, 2]
    assert sample.targets[u0].tolist() == [1, 1, 1, -1, -1]
    neg0 = sample.artists[u0][3:]
    assert len(set(neg0.tolist())) == 2 and set(neg0.tolist()) <= {3, 4, 5, 6, 7}
    # user 1: one positive (3), int(.5 * 6) = 3 negatives, never 3 or 4 (heard)
    u1 = sample.users == 1
    assert sample.artists[u1][0] == 3 and sample.targets[u1][0] == 1
    assert set(sample.artists[u1][1:].tolist()) <= {0, 1, 2, 5, 6, 7}
    assert (sample.targets[u1][1:] == -1).all()
    # user 2: no plays, int(.5 * 8) = 4 negatives; user 3 heard everything: none
    assert (sample.targets[sample.users == 2] == -1).sum() == 4
    assert (sample.users == 3).sum() == 8
    assert not heard_mask(
        HAND, sample.users[sample.targets < 0], sample.artists[sample.targets < 0]
    ).any()


def test_study_sample_is_deterministic_per_seed():
    counts = random_counts(np.random.default_rng(1), 30, 40, 0.2)
    a = study_sample(counts, negative=0.3, seed=7)
    b = study_sample(counts, negative=0.3, seed=7)
    c = study_sample(counts, negative=0.3, seed=8)
    assert np.array_equal(a.artists, b.artists) and np.array_equal(a.targets, b.targets)
    assert not np.array_equal(a.artists, c.artists)


@settings(max_examples=60, deadline=None)
@given(count_matrices(), st.integers(0, 2**31 - 1), st.floats(0.0, 1.0))
def test_sample_unheard_draws_distinct_unheard_artists(counts, seed, frac):
    n_unheard = counts.shape[1] - np.diff(counts.indptr)
    k = np.floor(frac * n_unheard).astype(np.int64)
    rows, cols = sample_unheard(counts, k, seed)
    assert np.bincount(rows, minlength=counts.shape[0]).tolist() == k.tolist()
    assert not heard_mask(counts, rows, cols).any()
    assert ((cols >= 0) & (cols < counts.shape[1])).all()
    pairs = rows * counts.shape[1] + cols
    assert len(np.unique(pairs)) == len(pairs)
    assert (np.diff(pairs) > 0).all()  # sorted by row, then column
    dense = counts.toarray()
    for u in range(counts.shape[0]):  # brute force: the drawn columns are a subset of the unheard
        assert set(cols[rows == u].tolist()) <= set(np.flatnonzero(dense[u] == 0).tolist())


@pytest.mark.parametrize("k", [1, 3, 6])  # sparse path, sparse path, dense (permutation) path
def test_sample_unheard_is_uniform(k):
    """Each unheard artist is drawn with probability k / n_unheard (chi-square-sized tolerance)."""
    counts = sp.csr_matrix(np.array([[0, 4, 0, 0, 2, 0, 0, 0, 0, 1]], dtype=np.int64))
    unheard = [0, 2, 3, 5, 6, 7, 8]
    trials = 3000
    hits = np.zeros(10)
    for t in range(trials):
        _, cols = sample_unheard(counts, np.array([k]), t)
        hits[cols] += 1
    expected = trials * k / len(unheard)
    assert hits[[1, 4, 9]].sum() == 0
    assert np.all(np.abs(hits[unheard] - expected) < 5 * math.sqrt(expected))


def test_sample_unheard_rejects_impossible_requests():
    with pytest.raises(ValueError, match="unheard artists"):
        sample_unheard(HAND, np.array([6, 0, 0, 0]))
    with pytest.raises(ValueError, match="one entry per user"):
        sample_unheard(HAND, np.array([1, 1]))
    with pytest.raises(TypeError, match="scipy.sparse"):
        study_sample(np.ones((2, 2)))
    with pytest.raises(ValueError, match="share"):
        positive_mask(HAND, 1.5)


@settings(max_examples=40, deadline=None)
@given(count_matrices(), st.integers(0, 2**31 - 1))
def test_heard_mask_matches_dense(counts, seed):
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, counts.shape[0], 50)
    cols = rng.integers(0, counts.shape[1], 50)
    assert heard_mask(counts, rows, cols).tolist() == (counts.toarray()[rows, cols] > 0).tolist()


# --------------------------------------------------------------------------------------------------
# the towers


def test_study_towers_shapes_and_ranges():
    torch.manual_seed(0)
    model = TwoTower(TowerConfig(n_users=7, n_artists=11, **SEED_TOWER))
    names = [type(m).__name__ for m in model.user_tower]
    assert names == ["Embedding", "Linear", "Sigmoid", "Linear", "Sigmoid"]
    assert model.user_tower[0].weight.shape == (7, 10)
    assert model.artist_tower[0].weight.shape == (11, 10)
    u = model.user_vectors(torch.arange(7))
    a = model.artist_vectors()
    assert u.shape == (7, 20) and a.shape == (11, 20)
    assert ((u > 0) & (u < 1)).all() and ((a > 0) & (a < 1)).all()
    s = model(torch.tensor([0, 1, 2]), torch.tensor([3, 4, 5]))
    assert s.shape == (3,)
    assert ((s >= 0) & (s <= 1 + 1e-6)).all()  # cosine of non-negative vectors is never negative
    m = model.score_matrix(u, a)
    assert m.shape == (7, 11)
    assert torch.allclose(m[1, 4], model(torch.tensor([1]), torch.tensor([4]))[0], atol=1e-6)


def test_improved_towers_shapes_and_ranges():
    torch.manual_seed(0)
    model = TwoTower(TowerConfig(n_users=5, n_artists=9, **IMPROVED_TOWER))
    model.set_history(random_counts(np.random.default_rng(0), 5, 9, 0.5))
    assert model.config.output_dim == IMPROVED_TOWER["embedding_dim"]
    u = model.user_vectors(torch.arange(5))
    assert u.shape == (5, model.config.output_dim)
    s = model.score_matrix(u, model.artist_vectors())
    assert s.shape == (5, 9) and (s.abs() <= 1 + 1e-5).all()
    for tower in (
        SEED_TOWER,
        ID_TOWER,
        {**ID_TOWER, "layer_sizes": (32, 16), "activation": "relu"},
    ):
        m = TwoTower(TowerConfig(n_users=5, n_artists=9, **tower))
        assert m.user_vectors(torch.arange(5)).shape == (5, m.config.output_dim)
        assert m.artist_vectors().shape == (9, m.config.output_dim)
    bare = TwoTower(
        TowerConfig(n_users=3, n_artists=4, embedding_dim=6, layer_sizes=(), similarity="dot")
    )
    assert bare.user_vectors(torch.arange(3)).shape == (3, 6)


def test_tower_config_round_trip_and_errors():
    cfg = TowerConfig(n_users=3, n_artists=4, **ID_TOWER)
    assert TowerConfig.from_dict(json.loads(cfg.to_json())) == cfg
    with pytest.raises(ValueError, match="activation"):
        TowerConfig(n_users=3, n_artists=4, activation="swish")
    with pytest.raises(ValueError, match="unknown"):
        TowerConfig.from_dict({**cfg.to_dict(), "depth": 3})
    with pytest.raises(ValueError, match="at least one"):
        TowerConfig(n_users=0, n_artists=4)


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    want = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device(None).type == want
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            resolve_device("cuda")


# --------------------------------------------------------------------------------------------------
# evaluation helpers against brute force


def test_top_n_matches_brute_force_and_pads():
    counts = random_counts(np.random.default_rng(2), 6, 9, 0.4)
    counts = counts.tolil()
    counts[5] = 1  # user 5 heard everything
    counts = sp.csr_matrix(counts)
    model = new_model(6, 9, ID_TOWER, seed=1)
    top = top_n(model, np.arange(6), counts, n=4)
    with torch.no_grad():
        scores = model.score_matrix(
            model.user_vectors(torch.arange(6)), model.artist_vectors()
        ).numpy()
    dense = counts.toarray()
    for u in range(6):
        cand = [j for j in np.argsort(-scores[u], kind="stable") if dense[u, j] == 0][:4]
        assert top[u][: len(cand)].tolist() == cand
        assert (top[u][len(cand) :] == -1).all()
    assert (top[5] == -1).all()


def test_rank_hidden_uses_chapter_02_ranks():
    counts = random_counts(np.random.default_rng(3), 8, 12, 0.3)
    model = new_model(8, 12, SEED_TOWER, seed=0)
    top = top_n(model, np.arange(8), counts, n=10)
    hidden = np.where(top[:, 2] >= 0, top[:, 2], 0)
    ranks = rank_hidden(model, np.arange(8), hidden, counts)
    assert ranks.tolist() == hit_ranks(top, hidden).tolist()


def test_study_metric_matches_hand_computation():
    rng = np.random.default_rng(4)
    exclude = random_counts(rng, 10, 15, 0.3)
    relevant = random_counts(rng, 10, 15, 0.2)
    relevant = sp.csr_matrix(relevant.multiply(exclude.toarray() == 0))
    relevant.eliminate_zeros()
    model = new_model(10, 15, ID_TOWER, seed=2)
    k = 3
    with torch.no_grad():
        scores = model.score_matrix(
            model.user_vectors(torch.arange(10)), model.artist_vectors()
        ).numpy()
    per_user = []
    for u in range(10):
        rel = set(np.flatnonzero(relevant.toarray()[u]).tolist())
        if not rel:
            continue
        cand = [j for j in np.argsort(-scores[u], kind="stable") if exclude.toarray()[u, j] == 0][
            :k
        ]
        per_user.append(len(rel & set(cand)) / min(k, len(rel)))
    assert study_metric(model, relevant, exclude, k=k) == pytest.approx(np.mean(per_user))


def test_similar_artists_embedding_matches_brute_force():
    model = new_model(4, 12, ID_TOWER, seed=5)
    cols, sims = similar_artists_embedding(model, 3, n=5)
    with torch.no_grad():
        a = torch.nn.functional.normalize(model.artist_vectors(), dim=-1).numpy()
    cos = a @ a[3]
    cos[3] = -np.inf
    assert cols.tolist() == np.argsort(-cos, kind="stable")[:5].tolist()
    assert np.allclose(sims, cos[cols], atol=1e-6)
    assert 3 not in cols.tolist()
    with pytest.raises(ValueError, match="out of range"):
        similar_artists_embedding(model, 12)


def test_pairs_from_outcomes():
    frame = pd.DataFrame({"user_id": [30, 10], "artist_id": [7, 5], "rank_cf_seed": [0, 3]})
    rows, cols = pairs_from_outcomes(frame, np.array([10, 20, 30]), np.array([5, 6, 7]))
    assert rows.tolist() == [2, 0] and cols.tolist() == [2, 0]
    with pytest.raises(KeyError, match="user ids"):
        pairs_from_outcomes(frame, np.array([10, 20]), np.array([5, 6, 7]))


# --------------------------------------------------------------------------------------------------
# the study's split


def test_study_split_partitions_positives():
    counts = random_counts(np.random.default_rng(5), 40, 30, 0.2)
    sample = study_sample(counts, negative=0.2, seed=0)
    s = study_split(sample, seed=1, train_fraction=0.25)
    pos = np.flatnonzero(sample.is_positive)
    assert set(s.val) | set(s.test) | set(s.train_all) == set(range(len(sample)))
    assert not (set(s.val) & set(s.test)) and not (set(s.val) & set(s.train_all))
    assert set(s.val) <= set(pos) and set(s.test) <= set(pos)
    assert len(s.val) == round(0.15 * len(pos)) and len(s.test) == round(0.15 * len(pos))
    negatives = np.flatnonzero(~sample.is_positive)
    assert set(negatives) <= set(s.train_all)
    assert s.train.tolist() == s.train_all[: int(len(s.train_all) * 0.25)].tolist()  # first users


# --------------------------------------------------------------------------------------------------
# training


def test_training_lowers_loss_and_recovers_planted_groups():
    counts = planted()
    users, artists, w = train_pairs(counts)
    model = new_model(*counts.shape, {**ID_TOWER, "embedding_dim": 16, "layer_sizes": (16,)})
    cfg = PAIR_IMPROVED_TRAIN.replace(
        epochs=40, batch_size=64, lr=0.02, n_negatives=10_000, patience=0, sparse_embeddings=False
    )
    res = fit(model, users, artists, w, cfg, seed=0, progress=False)
    loss = res.history["loss"].to_numpy()
    assert loss[-1] < 0.7 * loss[0]
    top = top_n(model, np.arange(counts.shape[0]), counts, n=3)
    group_of_user = np.arange(counts.shape[0]) // 30
    group_of_top = top // 12
    assert (group_of_top == group_of_user[:, None]).mean() > 0.95


@pytest.mark.parametrize("loss", ["softmax", "bpr"])
def test_sampled_losses_lower_the_loss(loss):
    counts = planted(seed=1)
    users, artists, w = train_pairs(counts, "log")
    model = new_model(*counts.shape, ID_TOWER, seed=0)
    cfg = PAIR_IMPROVED_TRAIN.replace(
        loss=loss, epochs=15, batch_size=64, lr=0.01, n_negatives=8, patience=0
    )
    res = fit(model, users, artists, w, cfg, seed=0, progress=False)
    assert res.history["loss"].iloc[-3:].mean() < res.history["loss"].iloc[:3].mean()


def test_cosine_embedding_loss_lowers_with_negatives():
    counts = planted(seed=2)
    sample = study_sample(counts, negative=0.3, seed=0)
    model = new_model(*counts.shape, {**SEED_TOWER, "output_activation": "none"}, seed=0)
    cfg = SEED_TRAIN.replace(
        epochs=40, scheduler_step="none", train_fraction=1.0, lr=0.03, patience=0
    )
    res = fit(model, sample.users, sample.artists, sample.targets, cfg, seed=0, progress=False)
    assert res.history["loss"].iloc[-1] < 0.7 * res.history["loss"].iloc[0]


def test_per_batch_scheduler_decays_every_step_size_batches():
    counts = planted()
    sample = study_sample(counts, seed=0)
    model = new_model(*counts.shape, SEED_TOWER)
    cfg = SEED_TRAIN.replace(epochs=3, batch_size=8, train_fraction=1.0, patience=0)
    res = fit(model, sample.users, sample.artists, sample.targets, cfg, seed=0, progress=False)
    batches = math.ceil(len(sample) / 8)
    for epoch, lr_end in zip(res.history["epoch"], res.history["lr_end"], strict=True):
        assert lr_end == pytest.approx(1e-3 * 0.1 ** ((epoch * batches) // 10))
    per_epoch = cfg.replace(scheduler_step="epoch", step_size=1)
    res = fit(new_model(*counts.shape, SEED_TOWER), sample.users, sample.artists, sample.targets,
              per_epoch, seed=0, progress=False)  # fmt: skip
    assert res.history["lr"].tolist() == pytest.approx([1e-3, 1e-4, 1e-5])


def test_early_stopping_keeps_the_best_state():
    counts = planted()
    users, artists, w = train_pairs(counts)
    model = new_model(*counts.shape, ID_TOWER)
    scores = iter([0.5, 0.9, 0.4, 0.3, 0.2, 0.1, 0.0])
    states = []

    def validate(m):
        states.append({k: v.clone() for k, v in m.state_dict().items()})
        return next(scores)

    cfg = PAIR_IMPROVED_TRAIN.replace(epochs=7, batch_size=64, patience=2)
    res = fit(model, users, artists, w, cfg, validate=validate, seed=0, progress=False)
    assert res.best_epoch == 2 and res.best_metric == 0.9
    assert res.stopped_early and len(res.history) == 4
    for k, v in model.state_dict().items():
        assert torch.equal(v, states[1][k])


def test_training_is_deterministic_on_cpu():
    counts = planted()
    users, artists, w = train_pairs(counts, "log")
    cfg = PAIR_IMPROVED_TRAIN.replace(epochs=3, batch_size=32, n_negatives=7, patience=0)
    weights = []
    for seed in (11, 11, 12):
        model = new_model(*counts.shape, ID_TOWER, seed=seed)
        fit(model, users, artists, w, cfg, seed=seed, device="cpu", progress=False)
        weights.append(model.state_dict())
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert not all(torch.equal(weights[0][k], weights[2][k]) for k in weights[0])


def test_fit_rejects_bad_input():
    model = new_model(3, 4, ID_TOWER)
    with pytest.raises(ValueError, match="one length"):
        fit(model, [0, 1], [0], [1.0, 1.0], PAIR_IMPROVED_TRAIN, progress=False)
    with pytest.raises(ValueError, match="artist indices"):
        fit(model, [0], [9], [1.0], PAIR_IMPROVED_TRAIN, progress=False)
    with pytest.raises(ValueError, match=r"\+1 or -1"):
        fit(model, [0], [1], [0.5], SEED_TRAIN, progress=False)
    with pytest.raises(ValueError, match="scheduler_step"):
        TrainConfig(scheduler_step="sometimes")
    with pytest.raises(ValueError, match="set_history"):
        fit(new_model(3, 4, IMPROVED_TOWER), [0], [1], [1.0], PAIR_IMPROVED_TRAIN, progress=False)


# --------------------------------------------------------------------------------------------------
# checkpoints


def test_checkpoint_round_trip(tmp_path):
    model = new_model(6, 9, ID_TOWER, seed=3)
    cfg = PAIR_IMPROVED_TRAIN.replace(epochs=2)
    folder = save_checkpoint(checkpoint_dir(tmp_path, "improved"), model, cfg, {"val_metric": 0.25})
    assert (folder / "model.pt").exists() and (folder / "config.json").exists()
    assert folder == tmp_path / "artifacts" / "checkpoints" / "improved"
    loaded, meta = load_checkpoint(folder, device="cpu")
    assert meta["extra"]["val_metric"] == 0.25
    assert TrainConfig.from_dict(meta["train"]) == cfg
    users = torch.arange(6)
    with torch.no_grad():
        want = model.eval().score_matrix(model.user_vectors(users), model.artist_vectors())
        got = loaded.score_matrix(loaded.user_vectors(users), loaded.artist_vectors())
    assert torch.equal(want, got)
    assert not isinstance(torch.load(folder / "model.pt", weights_only=True), torch.nn.Module)


def test_load_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="save_checkpoint"):
        load_checkpoint(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    torch.save({}, tmp_path / "model.pt")
    with pytest.raises(ValueError, match="tower"):
        load_checkpoint(tmp_path)


# --------------------------------------------------------------------------------------------------
# the two configurations end to end, on small data


def test_run_seed_on_planted_data():
    counts = planted(n_per_group=60)
    run = run_seed(counts, 0, config=SEED_TRAIN.replace(epochs=40), progress=False)
    assert 0.0 <= run.study_metric_test <= 1.0
    assert run.result.history["val_metric"].notna().sum() == 2  # epochs 20 and 40
    d = seed_diagnostics(run)
    assert d["seed_train_negatives"] == 0
    assert d["seed_train_examples"] == len(run.split.train)
    assert d["seed_artist_cosine_min"] >= 0.0  # sigmoid outputs: no negative cosine
    assert d["seed_lr_final"] == pytest.approx(
        1e-3 * 0.1 ** (40 * d["seed_batches_per_epoch"] // 10)
    )


def test_validation_split_lowers_threshold_until_enough_users():
    rng = np.random.default_rng(6)
    counts = random_counts(rng, 200, 60, 0.12)  # about 7 artists per user
    test_rows = np.arange(0, 200, 3)
    val, used = validation_split(counts, test_rows, 0, pool="non_test", min_users=20)
    assert len(val.test_rows) >= 20 and 5 <= used <= 10
    assert not set(val.test_rows.tolist()) & set(test_rows.tolist())
    nnz = np.diff(counts.indptr)
    assert (nnz[val.test_rows] > used).all()


def test_run_improved_on_planted_data():
    counts = planted(n_per_group=40, n_artists_per_group=30)
    test_rows = np.arange(0, 80, 4)
    for cfg in (
        IMPROVED_TRAIN.replace(epochs=3, batch_pairs=128, n_negatives=16),  # the batched trainer
        PAIR_IMPROVED_TRAIN.replace(epochs=3, batch_size=128, n_negatives=16),  # the pair trainer
    ):
        check_run_improved(counts, test_rows, cfg)


def check_run_improved(counts, test_rows, cfg):
    run = run_improved(counts, test_rows, 0, config=cfg, val_pool="non_test", progress=False)
    assert len(run.val_split.test_rows) >= 1
    assert not set(run.val_split.test_rows.tolist()) & set(test_rows.tolist())
    assert run.result.history["val_metric"].notna().all()
    assert run.result.best_metric == run.result.history["val_metric"].max()
    # after training the user tower reads the complete rows of the training matrix
    assert run.model.hist_indices.tolist() == counts.indices.tolist()
    assert run.val_split.train.nnz == counts.nnz - len(run.val_split.test_rows)


def test_validation_split_pool_all_is_chapter_02_protocol():
    from thirtymusic_utils.evaluation.protocol import holdout_split

    counts = random_counts(np.random.default_rng(10), 120, 40, 0.4)
    val, used = validation_split(counts, np.arange(10), 3, pool="all")
    want = holdout_split(counts, 4)
    assert used == 10
    assert np.array_equal(val.test_rows, want.test_rows)
    assert np.array_equal(val.hidden_cols, want.hidden_cols)
    with pytest.raises(ValueError, match="pool"):
        validation_split(counts, np.arange(10), 3, pool="some")


def test_output_cosines():
    model = new_model(5, 8, SEED_TOWER, seed=0)
    c = output_cosines(model, "artist", n=6)
    assert len(c) == 6 * 5 // 2 and (c <= 1 + 1e-6).all()
    with pytest.raises(ValueError, match="tower"):
        output_cosines(model, "album")


def test_bench_bodies_on_small_data():
    counts = random_counts(np.random.default_rng(7), 50, 80, 0.1)
    s = bench_sample_full(counts, 0)
    assert s["n_sample"] == s["n_positives"] + s["n_negatives"] and s["seconds"] >= 0
    t = bench_train_epoch_full(counts, 0)
    assert (
        t["n_pairs"] == counts.nnz
        and t["pairs_per_second"] > 0
        and t["epoch_seconds"] > 0
        and t["train_device"] in ("cpu", "cuda")
        and t["train_threads"] >= 1
    )


# --------------------------------------------------------------------------------------------------
# the history user tower


def history_model(counts: sp.csr_matrix, dropout: float = 0.0, seed: int = 0):
    tower = {**IMPROVED_TOWER, "user_input": "history", "history_dropout": dropout}
    return new_model(*counts.shape, tower, seed).set_history(counts)


def test_history_tower_is_the_weighted_mean_of_played_artists():
    counts = sp.csr_matrix(np.array([[3, 0, 1, 0], [0, 0, 0, 0], [1, 1, 1, 1]], dtype=np.int64))
    model = history_model(counts).eval()
    emb = model.user_history.weight.detach()
    w = np.log1p(np.array([3.0, 1.0]))
    w = w / w.sum()
    with torch.no_grad():
        got = model._history_sum(torch.tensor([0, 1, 2]), None)
        want0 = float(w[0]) * emb[0] + float(w[1]) * emb[2]
        assert torch.allclose(got[0], want0, atol=1e-6)
        assert torch.equal(got[1], torch.zeros_like(got[1]))  # no plays: empty history
        assert torch.allclose(got[2], emb.mean(0), atol=1e-6)
        dropped = model._history_sum(torch.tensor([0, 2]), torch.tensor([2, 3]))
        assert torch.allclose(dropped[0], float(w[0]) * emb[0], atol=1e-6)
        assert torch.allclose(dropped[1], emb[:3].sum(0) / 4, atol=1e-6)


def test_history_dropout_only_in_training():
    counts = random_counts(np.random.default_rng(8), 5, 20, 0.5)
    model = history_model(counts, dropout=0.5)
    users = torch.arange(5)
    with torch.no_grad():
        model.eval()
        a, b = model.user_vectors(users), model.user_vectors(users)
        assert torch.equal(a, b)
        model.train()
        torch.manual_seed(0)
        c = model.user_vectors(users)
        assert not torch.equal(a, c)
    with pytest.raises(ValueError, match="no history"):
        new_model(5, 20, ID_TOWER).set_history(counts)
    with pytest.raises(ValueError, match="history_dropout"):
        TowerConfig(n_users=2, n_artists=2, history_dropout=1.0)


def test_history_checkpoint_round_trip(tmp_path):
    counts = random_counts(np.random.default_rng(9), 7, 15, 0.3)
    model = history_model(counts, dropout=0.5, seed=4)
    users, artists, w = train_pairs(counts, "log")
    cfg = PAIR_IMPROVED_TRAIN.replace(epochs=2, batch_size=16, n_negatives=5, patience=0)
    fit(model, users, artists, w, cfg, seed=0, progress=False)
    folder = save_checkpoint(tmp_path / "ck", model, cfg)
    loaded, _ = load_checkpoint(folder, device="cpu")
    assert torch.equal(loaded.hist_indices, model.hist_indices)
    assert np.array_equal(
        top_n(loaded, np.arange(7), counts, 5), top_n(model.eval(), np.arange(7), counts, 5)
    )


def test_history_tower_recovers_planted_groups():
    counts = planted(seed=3)
    model = history_model(counts, dropout=0.3, seed=1)
    users, artists, w = train_pairs(counts, "log")
    cfg = PAIR_IMPROVED_TRAIN.replace(
        epochs=30, batch_size=64, lr=0.02, n_negatives=10_000, patience=0, sparse_embeddings=False
    )
    res = fit(model, users, artists, w, cfg, seed=0, progress=False)
    assert res.history["loss"].iloc[-1] < 0.8 * res.history["loss"].iloc[0]
    top = top_n(model, np.arange(counts.shape[0]), counts, n=3)
    assert (top // 12 == (np.arange(counts.shape[0]) // 30)[:, None]).mean() > 0.95


@settings(max_examples=40, deadline=None)
@given(count_matrices(), st.integers(0, 6))
def test_top_per_row_matches_brute_force(counts, k):
    got = top_per_row(counts, k).toarray()
    dense = counts.toarray()
    for u in range(dense.shape[0]):
        nz = np.flatnonzero(dense[u])
        order = sorted(nz.tolist(), key=lambda j: (-dense[u, j], j))
        keep = order if k == 0 else order[:k]
        want = np.zeros_like(dense[u])
        want[keep] = dense[u, keep]
        assert got[u].tolist() == want.tolist()


def test_max_history_keeps_the_most_played_artists():
    counts = sp.csr_matrix(np.array([[5, 1, 3, 2], [0, 4, 0, 0], [0, 0, 0, 0]], dtype=np.int64))
    tower = {**IMPROVED_TOWER, "max_history": 2}
    model = new_model(3, 4, tower).set_history(counts)  # the last user (no plays) is the edge case
    assert model.hist_indptr.tolist() == [0, 2, 3, 3]
    assert model.hist_indices.tolist() == [0, 2, 1]
    assert model.hist_weights.tolist() == pytest.approx(
        [np.log1p(5) / (np.log1p(5) + np.log1p(3)), np.log1p(3) / (np.log1p(5) + np.log1p(3)), 1.0]
    )
