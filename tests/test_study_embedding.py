"""``study.embedding_ran`` and ``study.validate`` against the transcription of the study's embedding
cells (``tests/study_oracle.py``): the sample with its real negatives, the 1% slice and decoding, the
all-rows "positive" split, and the study's ``validate``."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pytest
import study_oracle as oracle
import torch

from thirtymusic_utils.data.matrix import build_matrix
from thirtymusic_utils.data.order import pair_first_positions
from thirtymusic_utils.data.readers import read_plays
from thirtymusic_utils.study import embedding_ran as E
from thirtymusic_utils.study.validate import correct_validate, study_validate, validate_chance

pytestmark = pytest.mark.filterwarnings("ignore:The inplace keyword")


@pytest.fixture(scope="module")
def tiny(tiny_data_dir):
    m = build_matrix(read_plays(tiny_data_dir))
    first = pair_first_positions(tiny_data_dir)
    return m, first, tiny_data_dir


def test_session_dict_is_the_study_dictionary(tiny):
    m, rank, folder = tiny
    g = oracle.cell_24(pd.read_csv(folder / "relations" / "sessions_short.csv", sep=";"))
    ours = E.session_dict(m.counts, m.user_ids, m.artist_ids, rank)
    theirs = g.to_dict()["ArtistsID"]
    assert list(ours) == list(theirs)
    for u in theirs:
        assert list(ours[u].items()) == list(theirs[u].items())


@pytest.mark.parametrize("catalogue", [600, 250_000])
def test_create_sample_equals_oracle(tiny, catalogue):
    m, rank, _ = tiny
    sd = E.session_dict(m.counts, m.user_ids, m.artist_ids, rank)
    ids = list(range(catalogue))  # 250,000 artists: int(2.5) = 2 negatives per user
    random.seed(5)
    theirs = oracle.create_sample(sd, ids)
    ours = E.create_sample(sd, ids, random.Random(5))
    assert ours == theirs
    n_neg = sum(1 for s in ours if s[2] == -1)
    assert n_neg == int(catalogue * 1e-5) * len(sd)


def test_decode_and_split_equal_oracle(tiny):
    m, rank, _ = tiny
    sd = E.session_dict(m.counts, m.user_ids, m.artist_ids, rank)
    sample = E.create_sample(sd, list(range(250_000)), random.Random(1))
    X, y, iu, ia = E.decode(sample[: len(sample) // 100])
    Xo, yo, iuo, iao = oracle.cell_20_21_22(sample)
    np.testing.assert_array_equal(X, Xo.numpy())
    np.testing.assert_array_equal(y, yo.numpy().ravel())
    assert iu == iuo and ia == iao
    assert (y < 0).any()  # the slice holds negatives
    np.random.seed(3)  # noqa: NPY002 - the global stream the study used
    theirs = oracle.split_data(yo)
    ours = E.split_data(y, np.random.RandomState(3))
    assert ours == theirs
    # every row counts as "positive": validation and test hold the negatives too
    assert len(ours[0]) + len(ours[1]) + len(ours[2]) == len(y)


@pytest.mark.parametrize("n_artists", [37, 1000, 2500])
def test_validate_equals_oracle(n_artists):
    gen = torch.Generator().manual_seed(0)
    ue = torch.randn(30, 20, generator=gen)
    ae = torch.randn(n_artists, 20, generator=gen)
    rng = np.random.default_rng(0)
    X_val = {u: rng.integers(0, n_artists, rng.integers(1, 5)).tolist() for u in range(0, 30, 2)}
    from collections import defaultdict

    X = defaultdict(list, {u: rng.integers(0, n_artists, 6).tolist() for u in range(0, 30, 3)})
    torch.manual_seed(11)
    theirs = oracle.validate(ue, ae, X_val, X, len(X_val))
    state_theirs = torch.get_rng_state()
    torch.manual_seed(11)
    ours = study_validate(ue, ae, X_val, X, len(X_val))
    assert ours == theirs
    # the same draws from torch's global state: what the study's loop draws next is the same
    assert torch.equal(torch.get_rng_state(), state_theirs)
    assert 0 <= correct_validate(ue, ae, X_val, X, len(X_val)) <= 1
    chance = validate_chance(X_val, X, 30, n_artists, len(X_val), reps=3)
    assert chance.shape == (3,) and ((chance >= 0) & (chance <= 1)).all()


def test_validate_ignores_the_model():
    # a perfect model (each user's relevant artist has the best cosine) scores no better than chance
    # when the batch positions are unrelated to artist ids: the metric is blind to the ranking
    n = 3000
    ae = torch.eye(n)[:, :50] + 0.0
    ae = torch.randn(n, 50, generator=torch.Generator().manual_seed(1))
    ue = ae[:40].clone()  # user u's vector is artist u's
    X_val = {u: [u] for u in range(40)}
    assert correct_validate(ue, ae, X_val, {}, 40) == 1.0
    torch.manual_seed(0)
    assert study_validate(ue, ae, X_val, {}, 40) < 0.2
