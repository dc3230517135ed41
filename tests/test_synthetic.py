"""The synthetic 30Music generator: determinism, the on-disk formats and their quirks, the frames."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from urllib.parse import quote_plus, unquote_plus

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from thirtymusic_utils.data import synthetic as syn
from thirtymusic_utils.evaluation.protocol import holdout_split

FILES = (
    "entities/persons.idomaar",
    "entities/tracks.idomaar",
    "entities/persons.csv",
    "relations/sessions.idomaar",
    "relations/sessions_short.csv",
)


@pytest.fixture(scope="module")
def tiny() -> syn.SyntheticDataset:
    return syn.simulate("tiny", 0)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return syn.generate(tmp_path_factory.mktemp("syn") / "tiny-seed0", "tiny", 0)


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


# ------------------------------------------------------------------------------------------------
# brute-force parsers of the written files (json line by line, first line of a duplicate id wins)


def _parse_persons_idomaar(folder: Path) -> tuple[dict[int, str], list[int]]:
    names: dict[int, str] = {}
    order = []
    for line in _lines(folder / "entities/persons.idomaar"):
        kind, pid, ts, props, linked = line.split("\t")
        assert (kind, ts, linked) == ("person", "-1", "{}")
        order.append(int(pid))
        names.setdefault(int(pid), unquote_plus(json.loads(props)["name"]))
    return names, order


def _parse_tracks(folder: Path) -> tuple[dict[int, list[int]], list[int]]:
    tracks: dict[int, list[int]] = {}
    order = []
    for line in _lines(folder / "entities/tracks.idomaar"):
        kind, tid, ts, props, linked = line.split("\t")
        assert (kind, ts) == ("track", "-1")
        json.loads(props)
        artists = [a["id"] for a in json.loads(linked)["artists"]]
        order.append(int(tid))
        tracks.setdefault(int(tid), artists)
    return tracks, order


def _parse_sessions_idomaar(folder: Path) -> list[tuple[int, int, int, dict, dict]]:
    out = []
    for line in _lines(folder / "relations/sessions.idomaar"):
        fields = line.split("\t")
        assert len(fields) == 4, "4 TAB-separated fields, the JSON pair separated by one space"
        kind, sid, ts, rest = fields
        props, linked = rest.split(" ", 1)
        assert kind == "event.session"
        out.append((int(sid), int(ts), 0, json.loads(props), json.loads(linked)))
    return out


def _brute_plays_idomaar(folder: Path) -> pd.DataFrame:
    tracks, _ = _parse_tracks(folder)
    counts: Counter = Counter()
    for _, _, _, _, linked in _parse_sessions_idomaar(folder):
        user = linked["subjects"][0]["id"]
        for obj in linked["objects"]:
            for artist in tracks.get(obj["id"], []):
                counts[user, artist] += 1
    return _frame(counts)


def _brute_plays_csv(folder: Path) -> pd.DataFrame:
    lines = _lines(folder / "relations/sessions_short.csv")
    assert lines[0] == "ID;UserId;Type;Timestamp;ArtistsID"
    counts: Counter = Counter()
    for line in lines[1:]:
        sid, user, kind, ts, artists = line.split(";")
        for artist in filter(None, artists.split(",")):
            counts[int(user), int(artist)] += 1
    return _frame(counts)


def _frame(counts: Counter) -> pd.DataFrame:
    keys = sorted(counts)
    return pd.DataFrame(
        {
            "user_id": np.array([k[0] for k in keys], dtype=np.int64),
            "artist_id": np.array([k[1] for k in keys], dtype=np.int64),
            "plays": np.array([counts[k] for k in keys], dtype=np.int64),
        }
    )


# ------------------------------------------------------------------------------------------------
# profiles, shapes, determinism, atomic writing


def test_profiles_and_bad_profile():
    assert {"tiny", "default", "full"} <= set(syn.PROFILES)
    assert syn.PROFILES["full"].n_users == 45167
    with pytest.raises(ValueError, match="unknown profile 'huge'.*expected one of"):
        syn.simulate("huge")


def test_tiny_shapes(tiny):
    p = syn.PROFILES["tiny"]
    off = tiny.session_offsets
    assert off[0] == 0 and off[-1] == len(tiny.play_track_ids) and np.all(np.diff(off) >= 1)
    assert len(tiny.session_ids) == len(tiny.session_user_ids) == len(tiny.session_timestamps)
    assert len(np.unique(tiny.session_ids)) == tiny.n_sessions
    assert abs(tiny.n_sessions - p.n_sessions) < 0.2 * p.n_sessions
    assert set(np.unique(tiny.session_user_ids)) == set(range(1, p.n_users + 1))
    assert tiny.session_timestamps.min() >= syn.START_TIME
    assert tiny.session_timestamps.max() < syn.END_TIME
    toff = tiny.track_artist_offsets
    assert toff[0] == 0 and toff[-1] == len(tiny.track_artists) and np.all(np.diff(toff) >= 1)
    assert len(tiny.artist_ids) == p.n_artists == len(np.unique(tiny.artist_ids))
    assert np.isin(tiny.track_artists, tiny.artist_ids).all()
    for i in np.flatnonzero(np.diff(toff) > 1):  # several artists, never one twice
        artists = tiny.track_artists[toff[i] : toff[i + 1]]
        assert len(set(artists.tolist())) == len(artists)
    assert len(np.unique(tiny.track_ids)) == len(tiny.track_ids)
    assert not np.isin(tiny.unknown_track_ids, tiny.track_ids).any()
    plays = syn.plays_frame(tiny)
    assert (plays.groupby("user_id").size() > 10).sum() >= 30


def test_same_seed_same_bytes_other_seed_differs(tmp_path, tiny_dir):
    again = syn.generate(tmp_path / "again", "tiny", 0)
    other = syn.generate(tmp_path / "other", "tiny", 1)
    in_memory = syn.write_dataset(syn.simulate("tiny", 0), tmp_path / "memory")
    for rel in (*FILES, syn.COMPLETE):
        first = (tiny_dir / rel).read_bytes()
        assert (again / rel).read_bytes() == first, rel
        assert (in_memory / rel).read_bytes() == first, rel  # streaming == simulate + write
        assert (other / rel).read_bytes() != first, rel


def test_simulate_is_deterministic(tiny):
    again = syn.simulate("tiny", 0)
    assert np.array_equal(again.play_track_ids, tiny.play_track_ids)
    assert np.array_equal(again.session_timestamps, tiny.session_timestamps)
    assert list(again.artist_names) == list(tiny.artist_names)
    other = syn.simulate("tiny", 1)
    assert not np.array_equal(other.session_timestamps[:50], tiny.session_timestamps[:50])


def test_complete_marker_and_atomic_write(tmp_path, monkeypatch):
    out = tmp_path / "data"
    stale = tmp_path / "data.tmp"
    stale.mkdir()
    (stale / "junk").write_text("left by a killed run")
    syn.generate(out, "tiny", 0)
    assert not stale.exists()
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == sorted(
        [*FILES, syn.COMPLETE]
    )
    marker = json.loads((out / syn.COMPLETE).read_text())
    assert marker["profile"] == "tiny" and marker["seed"] == 0
    # the marker is the newest file: written last
    assert max(p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()) == (
        (out / syn.COMPLETE).stat().st_mtime_ns
    )

    # a complete folder is not generated again
    def boom(*args, **kwargs):
        raise AssertionError("generated again")

    monkeypatch.setattr(syn, "_catalogue", boom)
    assert syn.generate(out, "tiny", 0) == out
    monkeypatch.undo()
    # an incomplete folder (no marker) is replaced as a whole
    (out / syn.COMPLETE).unlink()
    (out / "stray").write_text("x")
    syn.generate(out, "tiny", 0)
    assert (out / syn.COMPLETE).exists() and not (out / "stray").exists()


def test_failed_generation_leaves_no_output(tmp_path, monkeypatch):
    def fail(self, *args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(syn._Writer, "_tracks", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        syn.generate(tmp_path / "data", "tiny", 0)
    assert not (tmp_path / "data").exists() and not (tmp_path / "data.tmp").exists()


def test_cli(tmp_path, capsys):
    assert syn.main(["--profile", "tiny", "--seed", "2", "--out", str(tmp_path / "cli")]) == 0
    assert (tmp_path / "cli" / syn.COMPLETE).exists()
    assert "ready" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------
# format quirks in the written files


def test_sessions_idomaar_format(tiny_dir, tiny):
    sessions = _parse_sessions_idomaar(tiny_dir)
    assert len(sessions) == tiny.n_sessions
    raw = _lines(tiny_dir / "relations/sessions.idomaar")
    assert all(line.count("\t") == 3 and "} {" in line for line in raw)
    null_ratio = 0
    for (sid, ts, _, props, linked), k in zip(sessions, range(tiny.n_sessions), strict=True):
        objects = linked["objects"]
        assert sid == tiny.session_ids[k] and ts == tiny.session_timestamps[k]
        assert linked["subjects"] == [{"type": "user", "id": int(tiny.session_user_ids[k])}]
        assert props["numtracks"] == len(objects) >= 1
        assert objects[-1]["playtime"] == -1 and objects[-1]["action"] is None
        assert all(o["action"] == "play" and o["playtime"] > 0 for o in objects[:-1])
        starts = [o["playstart"] for o in objects]
        assert starts[0] == 0
        assert all(
            b - a == o["playtime"]
            for a, b, o in zip(starts[:-1], starts[1:], objects[:-1], strict=True)
        )
        assert props["playtime"] == starts[-1]
        null_ratio += sum(o["playratio"] is None for o in objects)
    assert null_ratio > 0


def test_persons_format_duplicates_and_names(tiny_dir, tiny):
    line_re = re.compile(
        r'person\t\d+\t-1\t\{"MBID":(null|"[0-9a-f-]{36}"), "name":"[^" ]+"\}\t\{\}'
    )
    raw = _lines(tiny_dir / "entities/persons.idomaar")
    assert all(line_re.fullmatch(line) for line in raw)
    assert any('"MBID":null' in line for line in raw) and any('"MBID":"' in line for line in raw)
    names, order = _parse_persons_idomaar(tiny_dir)
    dup = [pid for pid, n in Counter(order).items() if n > 1]
    assert sorted(dup) == sorted(tiny.duplicate_person_ids.tolist()) and dup
    truth = dict(zip(tiny.artist_ids.tolist(), tiny.artist_names.tolist(), strict=True))
    # the first line of a duplicated id holds the true name, the second another spelling
    for pid in dup:
        assert names[pid] == truth[pid]
    assert set(names) == set(truth) - set(tiny.missing_person_ids.tolist())
    assert all(names[pid] == truth[pid] for pid in names)
    # CSV persons: same ids, same first names, same duplicates
    csv = _lines(tiny_dir / "entities/persons.csv")
    assert csv[0] == "ID;Name"
    pairs = [line.split(";") for line in csv[1:]]
    assert [int(p) for p, _ in pairs] == order
    first: dict[int, str] = {}
    for pid, q in pairs:
        first.setdefault(int(pid), unquote_plus(q))
    assert first == names


def test_odd_names_are_url_encoded(tiny_dir):
    raw = (tiny_dir / "entities/persons.idomaar").read_text(encoding="utf-8")
    assert raw.isascii()
    names, _ = _parse_persons_idomaar(tiny_dir)
    joined = "".join(names.values())
    for ch in ["'", "&", "+", "(", ")"]:
        assert ch in joined, ch
    assert any(not n.isascii() for n in names.values())  # accents and non-Latin scripts
    assert any(any("\u0400" <= c <= "\u04ff" for c in n) for n in names.values())  # Cyrillic
    assert "%2B" in raw and "%27" in raw and "%26" in raw and "+" in raw
    for name in syn.UNKNOWN_ARTIST_NAMES:
        assert name in names.values()


def test_tracks_quirks(tiny_dir, tiny):
    tracks, order = _parse_tracks(tiny_dir)
    counts = Counter(order)
    assert sorted(t for t, n in counts.items() if n > 1) == sorted(
        tiny.duplicate_track_ids.tolist()
    )
    assert any(len(a) > 1 for a in tracks.values())  # multi-artist tracks
    off = tiny.track_artist_offsets
    truth = {
        int(t): tiny.track_artists[off[i] : off[i + 1]].tolist()
        for i, t in enumerate(tiny.track_ids)
    }
    assert tracks == truth  # first line wins
    raw = _lines(tiny_dir / "entities/tracks.idomaar")
    props = [json.loads(line.split("\t")[3]) for line in raw]
    assert all("/_/" in p["name"] for p in props)
    assert any(p["duration"] == -1 for p in props) and any(p["MBID"] for p in props)
    linked = [json.loads(line.split("\t")[4]) for line in raw]
    assert any(x["albums"] is None for x in linked) and any(x["tags"] is None for x in linked)
    # artists referenced by tracks but missing from the persons files, and with plays
    persons, _ = _parse_persons_idomaar(tiny_dir)
    used = {a for arts in tracks.values() for a in arts}
    assert used - set(persons) == set(tiny.missing_person_ids.tolist()) != set()
    plays = syn.plays_frame(tiny)
    assert plays.artist_id.isin(tiny.missing_person_ids).any()


def test_unknown_tracks_are_played_and_missing_from_csv(tiny_dir, tiny):
    tracks, _ = _parse_tracks(tiny_dir)
    played = [
        o["id"] for *_, linked in _parse_sessions_idomaar(tiny_dir) for o in linked["objects"]
    ]
    unknown = [t for t in played if t not in tracks]
    assert len(unknown) == tiny.n_unknown_track_plays > 0
    assert set(unknown) <= set(tiny.unknown_track_ids.tolist())
    csv = _lines(tiny_dir / "relations/sessions_short.csv")[1:]
    assert any(line.endswith(";") for line in csv)  # a session of unknown tracks only: empty list
    assert all(line.split(";")[2] == "event.session" for line in csv)
    assert [int(line.split(";")[0]) for line in csv] == tiny.session_ids.tolist()


def test_placeholder_artists_get_plays(tiny):
    plays = syn.plays_frame(tiny)
    heard = plays.groupby("artist_id")["plays"].sum()
    assert all(heard.get(a, 0) > 0 for a in tiny.unknown_artist_ids.tolist())


# ------------------------------------------------------------------------------------------------
# plays_frame and sessions_frame against the files


def test_plays_frame_matches_brute_force_parsers(tiny_dir, tiny):
    plays = syn.plays_frame(tiny)
    assert list(plays.columns) == ["user_id", "artist_id", "plays"]
    assert all(plays[c].dtype == np.int64 for c in plays.columns)
    pd.testing.assert_frame_equal(plays, _brute_plays_csv(tiny_dir))
    pd.testing.assert_frame_equal(plays, _brute_plays_idomaar(tiny_dir))


def test_readers_agree_with_plays_frame(tiny_dir, tiny):
    from thirtymusic_utils.data import readers

    plays = syn.plays_frame(tiny)
    for layout in ("idomaar", "csv"):
        got = readers.read_plays(tiny_dir, layout=layout)
        pd.testing.assert_frame_equal(
            got.sort_values(["user_id", "artist_id"]).reset_index(drop=True), plays
        )
        report = got.attrs.get("report", {})
        if layout == "idomaar" and report:
            assert report["plays_unknown_track"] == tiny.n_unknown_track_plays
            assert report["duplicate_track_ids"] == len(tiny.duplicate_track_ids)
        if report:
            assert report["duplicate_person_ids"] == len(tiny.duplicate_person_ids)
            missing = plays[plays.artist_id.isin(tiny.missing_person_ids)]["plays"].sum()
            assert report["plays_unknown_artist"] == missing


def test_describe_of_the_read_csv_form_matches_memory(tiny_dir, tiny):
    from thirtymusic_utils.data import readers

    if not hasattr(readers, "scan_plays"):
        pytest.skip("readers.scan_plays is not there")
    scan = readers.scan_plays(tiny_dir, layout="csv")
    assert syn.describe(scan.plays, scan.sessions) == syn.describe(
        syn.plays_frame(tiny), syn.sessions_frame(tiny)
    )
    pd.testing.assert_frame_equal(
        scan.sessions.reset_index(drop=True), syn.sessions_frame(tiny), check_like=True
    )


def test_sessions_frame(tiny_dir, tiny):
    sessions = syn.sessions_frame(tiny)
    assert len(sessions) == tiny.n_sessions
    assert sessions["n_plays"].sum() == syn.plays_frame(tiny)["plays"].sum()
    csv = _lines(tiny_dir / "relations/sessions_short.csv")[1:]
    lists = [[int(a) for a in filter(None, line.split(";")[4].split(","))] for line in csv]
    assert sessions["n_plays"].tolist() == [len(x) for x in lists]
    assert sessions["n_artists"].tolist() == [len(set(x)) for x in lists]


def test_tiny_protocol_is_non_trivial(tiny):
    from thirtymusic_utils.data.matrix import build_matrix
    from thirtymusic_utils.evaluation.metrics import hit_ranks, hr_at_k
    from thirtymusic_utils.models import knn as cf

    m = build_matrix(syn.plays_frame(tiny))
    split = holdout_split(m.counts, 0)
    assert split.n_test >= 30
    pop = cf.popularity_top_n(split.train, split.test_rows, 10)
    idx, sim = cf.user_neighbours(split.train, 30, weighting="minmax", rows=split.test_rows)
    knn = cf.cf_top_n(split.train, split.test_rows, idx, sim, "seed_as_run", 10)
    for top in (pop, knn):
        hr = hr_at_k(hit_ranks(top, split.hidden_cols), 10)
        assert 0.02 < hr < 0.9


# ------------------------------------------------------------------------------------------------
# describe


def test_describe_by_hand():
    plays = pd.DataFrame(
        {
            "user_id": [1, 1, 1, 2, 2, 3],
            "artist_id": [10, 20, 30, 10, 40, 10],
            "plays": [5, 1, 1, 3, 2, 8],
        }
    )
    sessions = pd.DataFrame({"n_plays": [4, 10, 6, 0], "n_artists": [1, 3, 2, 0]})
    d = syn.describe(plays, sessions)
    # distinct artists per user: [3, 2, 1]
    assert d["n_users"] == 3 and d["n_artists"] == 4 and d["n_plays"] == 20
    assert d["user_artists_median"] == 2
    assert d["user_artists_p75"] == pytest.approx(2.5)
    assert d["user_artists_p90"] == pytest.approx(2.8)
    assert d["user_artists_p99"] == pytest.approx(2.98)
    assert d["share_users_over_10_artists"] == 0
    # artist totals [16, 2, 1, 1]: the top 1% and 10% are ceil(0.04) = ceil(0.4) = 1 artist
    assert d["top_1pct_artist_share"] == pytest.approx(16 / 20)
    assert d["top_10pct_artist_share"] == pytest.approx(16 / 20)
    assert d["n_sessions"] == 4
    assert d["session_plays_median"] == 5  # of [0, 4, 6, 10]
    assert d["session_plays_p90"] == pytest.approx(8.8)
    assert d["session_artists_median"] == 1.5
    assert "session_plays_median" not in syn.describe(plays)
    with pytest.raises(ValueError, match="plays lacks columns"):
        syn.describe(plays.drop(columns="plays"))


def test_real_facts_keys_match_describe(tiny):
    d = syn.describe(syn.plays_frame(tiny), syn.sessions_frame(tiny))
    hr_keys = {k for k in syn.REAL_FACTS if k.startswith("hr_at_10")}
    assert set(syn.REAL_FACTS) - hr_keys == set(d)
    assert syn.REAL_FACTS["hr_at_10_popularity"] == 0.040
    assert syn.REAL_FACTS["hr_at_10_seed"] == 0.065


# ------------------------------------------------------------------------------------------------
# properties of the building blocks


@settings(max_examples=50, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 6), min_size=1, max_size=8),
    seed=st.integers(0, 2**32 - 1),
)
def test_keyed_draws_stay_in_their_group(sizes, seed):
    rng = np.random.default_rng(seed)
    group = np.repeat(np.arange(len(sizes)), sizes)
    weights = rng.random(len(group)) + 1e-3
    keys = syn._keyed_cumsum(group, weights, len(sizes))
    ends = np.cumsum(sizes)
    which = rng.integers(0, len(sizes), 200)
    u = np.concatenate([rng.random(197), [0.0, 1 - 1e-16, 0.5]])
    idx = syn._draw_keyed(keys, ends, which, u)
    assert np.array_equal(group[idx], which)


@settings(max_examples=200, deadline=None)
@given(code=st.integers(0, 2**62 - 1))
def test_names_round_trip_through_url_encoding(code):
    name = syn._artist_name(code)
    title = syn._track_title(code % syn.N_TITLES)
    for text in (name, title):
        quoted = quote_plus(text)
        assert unquote_plus(quoted) == text
        assert quoted.isascii() and not set(quoted) & set(' ;\t"\\,/')


@settings(max_examples=20, deadline=None)
@given(max_plays=st.integers(1, 5000))
def test_chunks_of_partitions_the_sessions(tiny, max_plays):
    chunks = list(syn._chunks_of(tiny, max_plays))
    assert np.array_equal(np.concatenate([c.session_ids for c in chunks]), tiny.session_ids)
    assert np.array_equal(np.concatenate([c.track_ids for c in chunks]), tiny.play_track_ids)
    lengths = np.concatenate([np.diff(c.offsets) for c in chunks])
    assert np.array_equal(lengths, np.diff(tiny.session_offsets))


@pytest.mark.slow
def test_default_profile_is_calibrated():
    """The book's profile keeps the distributional facts and, under the study's protocol, puts each
    calibration method within ±30% of the real excerpt's HR@10, in the real excerpt's order
    (issue 9)."""
    from thirtymusic_utils.data.matrix import build_matrix
    from thirtymusic_utils.models.calibration import calibration_hr, calibration_table

    ds = syn.simulate("default", 0)
    plays = syn.plays_frame(ds)
    d = syn.describe(plays, syn.sessions_frame(ds))
    real = syn.REAL_FACTS
    for key in ("user_artists_median", "user_artists_p75", "session_plays_median"):
        assert d[key] == pytest.approx(real[key], rel=0.25), key
    for key in ("share_users_over_10_artists", "top_10pct_artist_share"):
        assert d[key] == pytest.approx(real[key], rel=0.2), key
    m = build_matrix(plays)
    table = calibration_table(calibration_hr(m.counts, 0, ease_items=4000))
    assert table["within ±30%"].all(), table
    # the methods rank as on the real excerpt: EASE > binary user-kNN > iALS > the study's > popular
    here = list(table["this data"].sort_values(ascending=False).index)
    assert here == list(table["real excerpt"].sort_values(ascending=False).index), table
