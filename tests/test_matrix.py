"""The sparse matrix equals a brute-force count; ids, names and the artifact round-trip."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from thirtymusic_utils.book.paths import load_results, save_results
from thirtymusic_utils.data.matrix import (
    build_matrix,
    load_matrix,
    matrix_summary,
    save_matrix,
    top_artists,
)

events = st.lists(
    st.tuples(st.integers(0, 30), st.integers(0, 40), st.integers(1, 50)), min_size=1, max_size=200
)


@settings(max_examples=60, deadline=None)
@given(events)
def test_matrix_equals_brute_force_count(rows):
    plays = pd.DataFrame(rows, columns=["user_id", "artist_id", "plays"])
    m = build_matrix(plays)
    expected = Counter()
    for u, a, p in rows:
        expected[(u, a)] += p
    assert list(m.user_ids) == sorted({u for u, _, _ in rows})
    assert list(m.artist_ids) == sorted({a for _, a, _ in rows})
    dense = m.counts.toarray()
    for (u, a), p in expected.items():
        assert dense[m.user_index(u), m.artist_index(a)] == p
    assert m.counts.nnz == len(expected)
    assert m.counts.dtype == np.int64
    assert m.counts.has_sorted_indices


def test_names_ids_and_round_trip(tmp_path):
    plays = pd.DataFrame({"user_id": [5, 5, 9], "artist_id": [70, 3, 3], "plays": [2, 1, 4]})
    artists = pd.DataFrame({"artist_id": [3, 70, 999], "name": ["Robin O'Brien", "Sigur Rós", "x"]})
    m = build_matrix(plays, artists)
    assert list(m.artist_names) == ["Robin O'Brien", "Sigur Rós"]
    with pytest.raises(KeyError):
        m.user_index(6)
    save_matrix(m, tmp_path)
    back = load_matrix(tmp_path)
    assert (back.counts != m.counts).nnz == 0
    assert list(back.user_ids) == [5, 9] and list(back.artist_names) == list(m.artist_names)
    summary = matrix_summary(m)
    assert (summary["n_users"], summary["n_artists"], summary["n_plays"], summary["n_pairs"]) == (
        2,
        2,
        7,
        3,
    )
    top = top_artists(m, 1)
    assert top["artist_id"].tolist() == [3] and top["listeners"].tolist() == [2]


def test_bad_plays_rejected():
    with pytest.raises(ValueError, match="positive"):
        build_matrix(pd.DataFrame({"user_id": [1], "artist_id": [1], "plays": [0]}))
    with pytest.raises(ValueError, match="lacks columns"):
        build_matrix(pd.DataFrame({"user_id": [1]}))


def test_results_json_merges_and_rejects_nested(tmp_path):
    save_results(tmp_path, "01_x", {"a": np.int64(3), "b": np.float32(0.5)})
    save_results(tmp_path, "01_x", {"c": "text", "d": float("nan")})
    assert load_results(tmp_path, "01_x") == {"a": 3, "b": 0.5, "c": "text", "d": None}
    with pytest.raises(TypeError):
        save_results(tmp_path, "01_x", {"e": [1, 2]})
    with pytest.raises(FileNotFoundError, match="02_y"):
        load_results(tmp_path, "02_y")
