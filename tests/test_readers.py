"""Tests of the dataset readers: every documented quirk, precise errors, brute-force references."""

from __future__ import annotations

import json
import pickle
import re
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote_plus

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from thirtymusic_utils.data import readers
from thirtymusic_utils.data.readers import (
    LAYOUT_FILES,
    DataFormatError,
    ReadReport,
    detect_layout,
    read_artists,
    read_plays,
    scan_plays,
)

# --------------------------------------------------------------------------------------------------
# Writers of the two 30Music forms, exactly as 30music-format.md shows them


def person_line(pid: int, name: str, mbid: str | None = None) -> str:
    mb = "null" if mbid is None else f'"{mbid}"'
    return f'person\t{pid}\t-1\t{{"MBID":{mb}, "name":"{quote_plus(name)}"}}\t{{}}'


def track_line(
    tid: int, artists: list[int], albums: str | None = "x", tags: str | None = "x"
) -> str:
    arts = ",".join(f'{{"type":"person","id":{a}}}' for a in artists)
    alb = "null" if albums is None else f'[{{"type":"album","id":{tid}}}]'
    tag = "null" if tags is None else f'[{{"type":"tag","id":{tid % 7}}}]'
    props = f'{{"duration":-1,"playcount":4,"MBID":null,"name":"A/_/Title+{tid}"}}'
    return f'track\t{tid}\t-1\t{props}\t{{"artists":[{arts}],"albums":{alb},"tags":{tag}}}'


def session_line(sid: int, ts: int, user: int, tracks: list[int]) -> str:
    objs = []
    for j, t in enumerate(tracks):
        if j == len(tracks) - 1:  # the last object: playtime -1, action null
            objs.append(
                f'{{"type":"track","id":{t},"playstart":{58 * j},"playtime":-1,'
                f'"playratio":1.00,"action":null}}'
            )
        else:
            ratio = "null" if j % 2 == 0 else "1.01"
            objs.append(
                f'{{"type":"track","id":{t},"playstart":{58 * j},"playtime":58,'
                f'"playratio":{ratio},"action":"play"}}'
            )
    props = f'{{"numtracks":{len(tracks)},"playtime":{58 * len(tracks)}}}'
    linked = f'{{"subjects":[{{"type":"user","id":{user}}}],"objects":[{",".join(objs)}]}}'
    return f"event.session\t{sid}\t{ts}\t{props} {linked}"


def write_lines(path: Path, lines: list[str], newline: str = "\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes("".join(line + newline for line in lines).encode("utf-8"))
    return path


def write_idomaar(folder: Path, persons: list[str], tracks: list[str], sessions: list[str]) -> Path:
    write_lines(folder / "entities" / "persons.idomaar", persons)
    write_lines(folder / "entities" / "tracks.idomaar", tracks)
    write_lines(folder / "relations" / "sessions.idomaar", sessions)
    return folder


def write_csv(folder: Path, persons: list[str], sessions: list[str]) -> Path:
    write_lines(folder / "entities" / "persons.csv", ["ID;Name", *persons])
    write_lines(
        folder / "relations" / "sessions_short.csv",
        ["ID;UserId;Type;Timestamp;ArtistsID", *sessions],
    )
    return folder


@contextmanager
def block_bytes(n: int) -> Iterator[None]:
    """Make the fast path work on blocks of about ``n`` bytes (default: a few MB)."""
    old = readers.BLOCK_BYTES
    readers.BLOCK_BYTES = n
    try:
        yield
    finally:
        readers.BLOCK_BYTES = old


def csv_session(sid: int, ts: int, user: int, artists: list[int], quoted: bool = False) -> str:
    listed = ",".join(map(str, artists))
    return f"{sid};{user};event.session;{ts};" + (f'"{listed}"' if quoted else listed)


def plays_frame(counter: Counter) -> pd.DataFrame:
    """The expected read_plays frame of a Counter {(user, artist): plays}."""
    rows = sorted((u, a, n) for (u, a), n in counter.items() if n > 0)
    return pd.DataFrame(
        {
            "user_id": np.array([r[0] for r in rows], dtype=np.int64),
            "artist_id": np.array([r[1] for r in rows], dtype=np.int64),
            "plays": np.array([r[2] for r in rows], dtype=np.int64),
        }
    )


def assert_plays_equal(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert list(got.columns) == ["user_id", "artist_id", "plays"]
    assert all(got[c].dtype == np.int64 for c in got.columns)
    assert isinstance(got.index, pd.RangeIndex) and got.index.start == 0
    pd.testing.assert_frame_equal(got.reset_index(drop=True), expected, check_like=False)


ANY = 1.0  # max_unknown_share for data that names unknown tracks or artists on purpose
ALLOW = {"max_unknown_share": ANY}


# --------------------------------------------------------------------------------------------------
# A small hand-written dataset holding every quirk of the format


@pytest.fixture
def quirky(tmp_path: Path) -> Path:
    persons = [
        person_line(1, "Everything Is Illuminated"),
        person_line(2, "Robin O'Brien", mbid="8a3a9d0c-1111-4000-8000-000000000002"),
        person_line(3, "Nicholas Gunn  (2012)"),
        person_line(1, "Duplicate Loses"),  # duplicate id: the first line wins
        person_line(4, "Florence + the Machine"),
    ]
    tracks = [
        track_line(10, [1]),
        track_line(11, [2, 3], albums=None),  # two artists, albums null
        track_line(12, [9], tags=None),  # artist 9 is not in persons: plays kept, counted
        track_line(10, [4]),  # duplicate track id: the first line wins (artist 1)
        track_line(13, [4], albums=None, tags=None),
    ]
    sessions = [
        session_line(100, 1390231051, 7, [10, 11, 10]),
        session_line(101, 1390231052, 8, [12, 99, 13]),  # track 99 is unknown: dropped, counted
        session_line(102, 1390231053, 7, []),  # an empty session
        session_line(103, 1390231054, 8, [11]),
    ]
    return write_idomaar(tmp_path / "quirky", persons, tracks, sessions)


QUIRKY_PLAYS = Counter(
    {(7, 1): 2, (7, 2): 1, (7, 3): 1, (8, 9): 1, (8, 4): 1, (8, 2): 1, (8, 3): 1}
)


def test_quirky_lines_are_in_the_documented_form(quirky: Path) -> None:
    """The fixture really has the quirks: a space before the linked JSON, a space in properties."""
    session = (quirky / "relations" / "sessions.idomaar").read_text().splitlines()[0]
    assert session.count("\t") == 3 and "} {" in session
    assert '"playtime":-1,"playratio":1.00,"action":null}]}' in session
    assert '"playratio":null' in session
    person = (quirky / "entities" / "persons.idomaar").read_text().splitlines()[1]
    assert person.count("\t") == 4 and '", "name":"Robin+O%27Brien"' in person
    assert '"MBID":null, ' in (quirky / "entities" / "persons.idomaar").read_text()
    tracks = (quirky / "entities" / "tracks.idomaar").read_text()
    assert '"albums":null' in tracks and '"tags":null' in tracks


def test_read_plays_on_all_quirks(quirky: Path) -> None:
    df = read_plays(quirky, max_unknown_share=ANY)
    assert_plays_equal(df, plays_frame(QUIRKY_PLAYS))
    report = df.attrs["report"]
    assert report["layout"] == "idomaar"
    assert report["sessions_read"] == 4
    assert report["plays_read"] == 7  # track plays (objects), unknown tracks included
    assert report["plays_unknown_track"] == 1
    assert report["plays_unknown_artist"] == 1  # the play credited to artist 9
    assert report["duplicate_person_ids"] == 1
    assert report["duplicate_track_ids"] == 1
    assert report["empty_sessions"] == 1
    assert report["duplicate_session_ids"] == 0
    assert report["persons_read"] == 4 and report["tracks_read"] == 4
    assert report["skipped_lines"] == 0 and report["slow_path_lines"] == 0
    assert {"skipped_lines_persons", "skipped_lines_tracks", "skipped_lines_sessions"} <= set(
        report
    )


def test_scan_sessions_frame(quirky: Path) -> None:
    scan = scan_plays(quirky, max_unknown_share=ANY)
    s = scan.sessions
    assert list(s.columns) == ["session_id", "user_id", "timestamp", "n_plays", "n_artists"]
    assert all(s[c].dtype == np.int64 for c in s.columns)
    assert s["session_id"].tolist() == [100, 101, 102, 103]
    assert s["user_id"].tolist() == [7, 8, 7, 8]
    assert s["timestamp"].tolist() == [1390231051, 1390231052, 1390231053, 1390231054]
    # artist plays: track 11 has two artists; track 99 is unknown
    assert s["n_plays"].tolist() == [4, 2, 0, 2]
    assert s["n_plays"].sum() == scan.plays["plays"].sum()
    # session 100: artists 1 (track 10, first line), 2 and 3 (track 11); 101: 9 and 4; 103: 2, 3
    assert s["n_artists"].tolist() == [3, 2, 0, 2]
    assert isinstance(scan.report, ReadReport)
    assert scan.report.as_dict() == scan.plays.attrs["report"]


def test_read_artists_decodes_names_and_first_wins(quirky: Path) -> None:
    df = read_artists(quirky)
    assert df["artist_id"].dtype == np.int64
    assert df["artist_id"].tolist() == [1, 2, 3, 4]
    assert df["name"].tolist() == [
        "Everything Is Illuminated",
        "Robin O'Brien",
        "Nicholas Gunn  (2012)",
        "Florence + the Machine",
    ]
    assert df.attrs["report"]["duplicate_person_ids"] == 1


def test_raw_persons_encoding_is_unquote_plus(tmp_path: Path) -> None:
    """The literal lines of the format document decode as urllib.parse.unquote_plus does."""
    lines = [
        'person\t145148\t-1\t{"MBID":null, "name":"Everything+Is+Illuminated"}\t{}',
        'person\t297899\t-1\t{"MBID":null, "name":"Robin+O%27Brien"}\t{}',
        'person\t250429\t-1\t{"MBID":null, "name":"Nicholas+Gunn++(2012)"}\t{}',
    ]
    folder = write_idomaar(tmp_path / "d", lines, [], [])
    df = read_artists(folder)
    assert df.set_index("artist_id")["name"].to_dict() == {
        145148: "Everything Is Illuminated",
        250429: "Nicholas Gunn  (2012)",
        297899: "Robin O'Brien",
    }


def test_documented_example_lines_parse(tmp_path: Path) -> None:
    """The example track and (shortened) session lines of 30music-format.md, byte for byte."""
    track = (
        'track\t0\t-1\t{"duration":-1,"playcount":4,"MBID":null,'
        '"name":"000003+Music+Instructor/_/Dj%27s+Rock+Da+House"}\t{"artists":[{"type":"person",'
        '"id":0}],"albums":[{"type":"album","id":0}],"tags":[{"type":"tag","id":12}]}'
    )
    session = (
        'event.session\t287144\t1390231051\t{"numtracks":3,"playtime":4547} {"subjects":[{"type":'
        '"user","id":44361}],"objects":[{"type":"track","id":0,"playstart":0,"playtime":58,'
        '"playratio":null,"action":"play"},{"type":"track","id":0,"playstart":58,"playtime":310,'
        '"playratio":1.01,"action":"play"},{"type":"track","id":0,"playstart":4548,"playtime":-1,'
        '"playratio":1.00,"action":null}]}'
    )
    person = 'person\t0\t-1\t{"MBID":null, "name":"000003+Music+Instructor"}\t{}'
    folder = write_idomaar(tmp_path / "d", [person], [track], [session])
    scan = scan_plays(folder)
    assert_plays_equal(scan.plays, plays_frame(Counter({(44361, 0): 3})))
    assert scan.report.slow_path_lines == 0
    assert read_artists(folder)["name"].tolist() == ["000003 Music Instructor"]


def test_duplicate_session_ids_are_kept_and_counted(tmp_path: Path) -> None:
    sessions = [
        session_line(1, 10, 7, [10]),
        session_line(1, 11, 8, [10]),
        session_line(2, 9, 7, [10]),
    ]
    folder = write_idomaar(tmp_path / "d", [person_line(1, "A")], [track_line(10, [1])], sessions)
    scan = scan_plays(folder)
    assert scan.report.duplicate_session_ids == 1
    assert scan.sessions["session_id"].tolist() == [1, 1, 2]
    assert_plays_equal(scan.plays, plays_frame(Counter({(7, 1): 2, (8, 1): 1})))


def test_synthetic_folder_reads_the_same_in_both_forms(tiny_data_dir: Path) -> None:
    """The synthetic default (helper module) writes both forms: both read alike, on the fast path."""
    ido = scan_plays(tiny_data_dir, layout="idomaar")
    csv = scan_plays(tiny_data_dir, layout="csv")
    assert detect_layout(tiny_data_dir) == "idomaar"
    pd.testing.assert_frame_equal(ido.plays, csv.plays)
    pd.testing.assert_frame_equal(ido.sessions, csv.sessions)
    pd.testing.assert_frame_equal(
        read_artists(tiny_data_dir, layout="idomaar"), read_artists(tiny_data_dir, layout="csv")
    )
    for scan in (ido, csv):
        assert scan.report.slow_path_lines == 0 and scan.report.skipped_lines == 0
        assert scan.sessions["n_plays"].sum() == scan.plays["plays"].sum() > 0


# --------------------------------------------------------------------------------------------------
# The CSV form


def test_csv_form_empty_and_quoted_artist_lists(tmp_path: Path) -> None:
    persons = ["1;Everything+Is+Illuminated", "2;Robin+O%27Brien", "2;Duplicate"]
    sessions = [
        csv_session(1, 100, 5, [1, 2, 1]),
        csv_session(2, 101, 5, []),  # empty ArtistsID
        csv_session(3, 102, 6, [2, 3], quoted=True),  # quoted; 3 is not in persons
        csv_session(4, 103, 6, [], quoted=True),  # quoted and empty
    ]
    folder = write_csv(tmp_path / "csv", persons, sessions)
    assert detect_layout(folder) == "csv"
    scan = scan_plays(folder, max_unknown_share=ANY)
    assert_plays_equal(
        scan.plays, plays_frame(Counter({(5, 1): 2, (5, 2): 1, (6, 2): 1, (6, 3): 1}))
    )
    r = scan.report
    assert (r.sessions_read, r.plays_read, r.empty_sessions) == (4, 5, 2)
    assert (r.plays_unknown_artist, r.duplicate_person_ids, r.slow_path_lines) == (1, 1, 0)
    assert scan.sessions["n_plays"].tolist() == [3, 0, 2, 0]
    assert scan.sessions["session_id"].tolist() == [1, 2, 3, 4]
    assert scan.sessions["timestamp"].tolist() == [100, 101, 102, 103]
    assert scan.sessions["n_artists"].tolist() == [2, 0, 2, 0]
    assert read_artists(folder)["name"].tolist() == ["Everything Is Illuminated", "Robin O'Brien"]


def test_csv_and_idomaar_forms_of_the_same_data_agree(tmp_path: Path) -> None:
    names = {1: "Everything Is Illuminated", 2: "Robin O'Brien", 3: "AC/DC", 4: "Sigur Rós"}
    track_artists = {10: [1], 11: [2, 3], 12: [4], 13: [1, 4]}
    sessions = [
        (1, 100, 5, [10, 11, 10]),
        (2, 101, 6, []),
        (3, 102, 6, [13, 12, 12]),
        (4, 9, 5, [11]),
    ]
    ido = write_idomaar(
        tmp_path / "ido",
        [person_line(p, n) for p, n in names.items()],
        [track_line(t, a) for t, a in track_artists.items()],
        [session_line(s, ts, u, tr) for s, ts, u, tr in sessions],
    )
    csv = write_csv(
        tmp_path / "csv",
        [f"{p};{quote_plus(n)}" for p, n in names.items()],
        [
            csv_session(s, ts, u, [a for t in tr for a in track_artists[t]], quoted=s % 2 == 0)
            for s, ts, u, tr in sessions
        ],
    )
    a, b = read_plays(ido), read_plays(csv)
    pd.testing.assert_frame_equal(a, b)
    pd.testing.assert_frame_equal(read_artists(ido), read_artists(csv))
    assert read_artists(ido)["name"].tolist() == list(names.values())
    pd.testing.assert_frame_equal(scan_plays(ido).sessions, scan_plays(csv).sessions)


# --------------------------------------------------------------------------------------------------
# Layout detection


def test_detect_layout_prefers_idomaar_when_both_forms_are_present(quirky: Path) -> None:
    write_csv(quirky, ["1;A"], [csv_session(1, 1, 1, [1])])
    assert detect_layout(quirky) == "idomaar"
    assert read_plays(quirky, max_unknown_share=ANY).attrs["report"]["layout"] == "idomaar"
    assert (
        read_plays(quirky, layout="csv", max_unknown_share=ANY).attrs["report"]["layout"] == "csv"
    )


def test_unknown_layout_lists_the_expected_files(tmp_path: Path) -> None:
    (tmp_path / "stray.txt").write_text("x")
    write_lines(tmp_path / "entities" / "persons.idomaar", [person_line(1, "A")])
    with pytest.raises(DataFormatError) as info:
        detect_layout(tmp_path)
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    for files in LAYOUT_FILES.values():
        for rel in files:
            assert rel in message
    assert "lacks entities/tracks.idomaar" in message and "stray.txt" in message
    with pytest.raises(DataFormatError):
        read_plays(tmp_path)


def test_missing_folder_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        detect_layout(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_plays(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="relations/sessions_short.csv"):
        read_plays(tmp_path, layout="csv")
    with pytest.raises(ValueError, match="layout must be"):
        read_plays(tmp_path, layout="parquet")


def test_bad_arguments(quirky: Path) -> None:
    with pytest.raises(ValueError, match="errors must be"):
        read_plays(quirky, errors="ignore")
    with pytest.raises(ValueError, match="chunk_lines"):
        scan_plays(quirky, chunk_lines=0)


# --------------------------------------------------------------------------------------------------
# Malformed lines: errors="raise" names file:line and what was wrong; errors="skip" counts


GOOD_SESSION = session_line(200, 1390231060, 9, [10])
GOOD_TRACK = track_line(20, [1])

# (file, the bad line, the expected reason pattern)
MALFORMED = {
    "truncated linked JSON": (
        "sessions",
        GOOD_SESSION[:-40],
        r"^linked JSON is truncated$",
    ),
    "missing timestamp field": (
        "sessions",
        GOOD_SESSION.replace("\t1390231060\t", "\t"),
        r"expected 5 fields .* found 3 TAB-separated fields",
    ),
    "non-numeric session id": (
        "sessions",
        GOOD_SESSION.replace("\t200\t", "\t2x0\t"),
        r"id '2x0' is not a non-negative integer",
    ),
    "wrong record type": (
        "sessions",
        GOOD_SESSION.replace("event.session", "event.sesion"),
        r"expected record type 'event.session', found 'event.sesion'",
    ),
    "missing user": (
        "sessions",
        GOOD_SESSION.replace('[{"type":"user","id":9}]', "[]"),
        r"missing user",
    ),
    "non-numeric user": (
        "sessions",
        GOOD_SESSION.replace('"user","id":9', '"user","id":"nine"'),
        r'user id is "nine", expected an integer id',
    ),
    "non-numeric timestamp": (
        "sessions",
        GOOD_SESSION.replace("\t1390231060\t", "\tyesterday\t"),
        r"timestamp 'yesterday' is not an integer",
    ),
    "object without id": (
        "sessions",
        GOOD_SESSION.replace('"type":"track","id":10,', '"type":"track",'),
        r"linked.objects\[0\].id is null",
    ),
    "id out of range": (
        "sessions",
        GOOD_SESSION.replace('"type":"track","id":10', '"type":"track","id":99999999999'),
        r"linked.objects\[0\].id is 99999999999, expected an integer id 0..2147483647",
    ),
    "invalid linked JSON": (
        "sessions",
        GOOD_SESSION.replace('"action":null}', '"action":null'),  # a brace missing mid-line
        r"linked JSON is not valid JSON \(Expecting ',' delimiter at column \d+\)",
    ),
    "track with no artists": (
        "tracks",
        GOOD_TRACK.replace('[{"type":"person","id":1}]', "[]"),
        r"track has no artists",
    ),
    "track with a non-numeric artist": (
        "tracks",
        GOOD_TRACK.replace('"person","id":1', '"person","id":"x"'),
        r'linked.artists\[0\].id is "x"',
    ),
    "truncated track": ("tracks", GOOD_TRACK[:-30], r"^linked JSON is truncated$"),
    "person without a name": (
        "persons",
        'person\t5\t-1\t{"MBID":null, "nom":"X"}\t{}',
        r"properties JSON has no string 'name'",
    ),
    "person with a numeric MBID": (
        "persons",
        'person\t5\t-1\t{"MBID":12, "name":"X"}\t{}',
        r"MBID must be null or a string",
    ),
    "person as a track": ("persons", GOOD_TRACK, r"expected record type 'person', found 'track'"),
}


def malformed_folder(tmp_path: Path, which: str, bad: str) -> tuple[Path, str, int]:
    """The quirky-like dataset with ``bad`` inserted as line 3 of the named file."""
    persons = [person_line(1, "A"), person_line(2, "B"), person_line(3, "C")]
    tracks = [track_line(10, [1]), track_line(11, [2, 3]), track_line(12, [3])]
    sessions = [
        session_line(1, 10, 7, [10, 11]),
        session_line(2, 11, 8, [12, 10]),
        session_line(3, 12, 7, [11]),
    ]
    lists = {"persons": persons, "tracks": tracks, "sessions": sessions}
    lists[which] = [*lists[which][:2], bad, *lists[which][2:]]
    folder = write_idomaar(tmp_path / "bad", lists["persons"], lists["tracks"], lists["sessions"])
    name = {"persons": "persons.idomaar", "tracks": "tracks.idomaar"}.get(which, "sessions.idomaar")
    return folder, name, 3


@pytest.mark.parametrize(
    ("chunk_lines", "block"), [(1, 1 << 22), (2, 1 << 22), (100_000, 1 << 22), (100_000, 300)]
)
@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_line_raises_with_file_and_line(
    tmp_path: Path, case: str, chunk_lines: int, block: int
) -> None:
    which, bad, reason = MALFORMED[case]
    folder, name, line = malformed_folder(tmp_path, which, bad)
    with pytest.raises(DataFormatError) as info, block_bytes(block):
        scan_plays(folder, chunk_lines=chunk_lines)
    err = info.value
    assert (err.path.name, err.line) == (name, line)
    assert str(err).startswith(f"{name}:{line}: ")
    assert re.search(reason, err.reason), err.reason
    assert str(err) == f"{name}:{line}: {err.reason}"


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_line_is_skipped_and_counted(tmp_path: Path, case: str) -> None:
    which, bad, _ = MALFORMED[case]
    folder, _, _ = malformed_folder(tmp_path, which, bad)
    clean, _, _ = malformed_folder(tmp_path / "clean", which, "")
    got = scan_plays(folder, errors="skip")
    want = scan_plays(clean)  # the same data with a blank line instead (blank lines carry nothing)
    assert got.report.skipped_by_file[which] == 1
    assert got.report.skipped_lines == 1
    assert got.plays.attrs["report"][f"skipped_lines_{which}"] == 1
    assert want.report.skipped_lines == 0
    pd.testing.assert_frame_equal(got.plays, want.plays, check_like=False)
    pd.testing.assert_frame_equal(got.sessions, want.sessions)


def test_error_message_format_and_pickling(tmp_path: Path) -> None:
    err = DataFormatError(tmp_path / "sessions.idomaar", 4321, "linked JSON is truncated")
    assert str(err) == "sessions.idomaar:4321: linked JSON is truncated"
    assert isinstance(err, ValueError)
    again = pickle.loads(pickle.dumps(err))
    assert (str(again), again.line, again.path) == (str(err), 4321, err.path)
    assert str(DataFormatError(tmp_path / "x", None, "why")) == "x: why"


CSV_MALFORMED = {
    "empty ArtistsID entry": (csv_session(9, 1, 5, [1]) + ",,2", r"ArtistsID entry 2 is empty"),
    "wrong field count": ("9;5;event.session;1", r"expected 5 ';'-separated fields .* found 4"),
    "non-numeric user": ("9;bob;event.session;1;1,2", r"UserId 'bob' is not a non-negative"),
    "non-numeric artist": ("9;5;event.session;1;1,x", r"ArtistsID entry 2 'x' is not"),
    "non-numeric timestamp": ("9;5;event.session;now;1", r"Timestamp \(unix seconds\) 'now'"),
}


@pytest.mark.parametrize("case", sorted(CSV_MALFORMED))
def test_csv_malformed_lines(tmp_path: Path, case: str) -> None:
    bad, reason = CSV_MALFORMED[case]
    sessions = [csv_session(1, 1, 5, [1, 2]), bad, csv_session(2, 2, 6, [2])]
    folder = write_csv(tmp_path / "csv", ["1;A", "2;B"], sessions)
    with pytest.raises(DataFormatError) as info:
        read_plays(folder)
    assert str(info.value).startswith("sessions_short.csv:3: ")  # the header is line 1
    assert re.search(reason, info.value.reason), info.value.reason
    df = read_plays(folder, errors="skip")
    assert df.attrs["report"]["skipped_lines_sessions"] == 1
    assert_plays_equal(df, plays_frame(Counter({(5, 1): 1, (5, 2): 1, (6, 2): 1})))


def test_csv_header_is_checked(tmp_path: Path) -> None:
    folder = write_csv(tmp_path / "csv", ["1;A"], [csv_session(1, 1, 5, [1])])
    path = folder / "relations" / "sessions_short.csv"
    path.write_text(path.read_text().split("\n", 1)[1])  # drop the header
    with pytest.raises(DataFormatError, match=r"^sessions_short.csv:1: expected the header"):
        read_plays(folder)
    path.write_text("")
    with pytest.raises(DataFormatError, match=r"^sessions_short.csv:1: file is empty"):
        read_plays(folder)


def test_hetrec_malformed_lines(tmp_path: Path) -> None:
    write_lines(tmp_path / "artists.dat", ["id\tname\turl\tpictureURL", "1\tA\tu\tp"], "\r\n")
    write_lines(
        tmp_path / "user_artists.dat",
        ["userID\tartistID\tweight", "2\t1\t5", "2\t1", "3\t1\t0", "3\t7\t4"],
        "\r\n",
    )
    with pytest.raises(DataFormatError, match=r"^user_artists.dat:3: expected 3 TAB-separated"):
        read_plays(tmp_path)
    df = read_plays(tmp_path, errors="skip")
    assert df.attrs["report"]["skipped_lines_user_artists"] == 2  # the short line and weight 0
    assert_plays_equal(df, plays_frame(Counter({(2, 1): 5, (3, 7): 4})))
    assert df.attrs["report"]["plays_unknown_artist"] == 4


# --------------------------------------------------------------------------------------------------
# Fast path and slow path agree; variants the fast path does not know still read correctly


def test_json_variants_take_the_slow_path_and_agree(quirky: Path, tmp_path: Path) -> None:
    """Spaces inside the JSON, reordered keys, TAB instead of space, CRLF: the same plays."""
    variant = tmp_path / "variant"
    for rel in LAYOUT_FILES["idomaar"]:
        lines = (quirky / rel).read_text().splitlines()
        if rel.endswith("sessions.idomaar"):
            lines = [
                ln.replace('"subjects":[', '"subjects": [').replace("} {", "}\t{") for ln in lines
            ]
        elif rel.endswith("tracks.idomaar"):
            lines = [
                re.sub(r'\{"type":"person","id":(\d+)\}', r'{"id": \1, "type": "person"}', ln)
                for ln in lines
            ]
        else:
            lines = [
                ln.replace('{"MBID":null, "name":', '{"name":').replace(
                    "}\t{}", ', "MBID":null}\t{}'
                )
                for ln in lines
            ]
        write_lines(variant / rel, lines, "\r\n")
    base, other = scan_plays(quirky, **ALLOW), scan_plays(variant, **ALLOW)
    assert base.report.slow_path_lines == 0
    assert other.report.slow_path_lines > 0
    pd.testing.assert_frame_equal(base.plays, other.plays)
    pd.testing.assert_frame_equal(base.sessions, other.sessions)
    pd.testing.assert_frame_equal(read_artists(quirky), read_artists(variant))


def test_crlf_bom_and_blank_lines(quirky: Path, tmp_path: Path) -> None:
    variant = tmp_path / "crlf"
    for rel in LAYOUT_FILES["idomaar"]:
        lines = (quirky / rel).read_text().splitlines()
        write_lines(variant / rel, lines, "\r\n")
    base, crlf = scan_plays(quirky, **ALLOW), scan_plays(variant, **ALLOW)
    assert crlf.report.slow_path_lines == 0  # CRLF is on the fast path
    pd.testing.assert_frame_equal(base.plays, crlf.plays)
    path = variant / "relations" / "sessions.idomaar"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes().replace(b"\r\n", b"\r\n\r\n", 1) + b"\n")
    pd.testing.assert_frame_equal(base.plays, read_plays(variant, **ALLOW))


def test_sparse_huge_track_ids_use_the_searchsorted_lookup(tmp_path: Path) -> None:
    tracks = [track_line(2_000_000_000, [1]), track_line(5, [2]), track_line(1_999_999_999, [3])]
    sessions = [session_line(1, 1, 4, [2_000_000_000, 5, 1_999_999_999, 77, 5])]
    folder = write_idomaar(tmp_path / "d", [person_line(1, "A")], tracks, sessions)
    df = read_plays(folder, **ALLOW)
    assert_plays_equal(df, plays_frame(Counter({(4, 1): 1, (4, 2): 2, (4, 3): 1})))
    assert df.attrs["report"]["plays_unknown_track"] == 1


def test_progress_bar_goes_to_stderr(quirky: Path, capsys) -> None:
    read_plays(quirky, progress=True, **ALLOW)
    captured = capsys.readouterr()
    assert captured.out == "" and "sessions.idomaar" in captured.err


# --------------------------------------------------------------------------------------------------
# Brute-force references on random data (hypothesis)


@st.composite
def datasets(draw):
    n_persons = draw(st.integers(1, 8))
    n_tracks = draw(st.integers(1, 12))
    artist_lists = st.lists(st.integers(0, n_persons + 2), min_size=1, max_size=3, unique=True)
    track_artists = [draw(artist_lists) for _ in range(n_tracks)]
    # extra lines for already seen track ids (the first line wins)
    dup_tracks = draw(st.lists(st.tuples(st.integers(0, n_tracks - 1), artist_lists), max_size=3))
    sessions = draw(
        st.lists(
            st.tuples(st.integers(0, 6), st.lists(st.integers(0, n_tracks + 2), max_size=12)),
            min_size=1,  # an empty sessions file is an error
            max_size=15,
        )
    )
    return n_persons, track_artists, dup_tracks, sessions


def brute_force(track_artists, dup_tracks, sessions) -> tuple[Counter, list[tuple[int, int]]]:
    """Plays per (user, artist) and (n_plays, n_artists) per session, the obvious way."""
    mapping = {t: arts for t, arts in enumerate(track_artists)}  # duplicates come later: ignored
    counts: Counter = Counter()
    per_session = []
    for user, tracks in sessions:
        seen = set()
        for t in tracks:
            for a in mapping.get(t, []):
                counts[(user, a)] += 1
                seen.add(a)
        per_session.append((sum(len(mapping.get(t, [])) for t in tracks), len(seen)))
    return counts, per_session


def write_random(folder: Path, n_persons, track_artists, dup_tracks, sessions) -> Path:
    return write_idomaar(
        folder,
        [person_line(p, f"Artist {p}") for p in range(n_persons)],
        [track_line(t, arts) for t, arts in enumerate(track_artists)]
        + [track_line(t, arts) for t, arts in dup_tracks],
        [session_line(s, 1000 + s, u, tr) for s, (u, tr) in enumerate(sessions)],
    )


def write_variant(folder: Path, n_persons, track_artists, dup_tracks, sessions) -> Path:
    """Legal variants of the idomaar form: JSON with spaces, keys reordered, TAB/space swapped."""

    def person(p: int) -> str:
        props = json.dumps({"name": quote_plus(f"Artist {p}"), "MBID": None})
        return f"person\t{p}\t-1\t{props} {{}}"

    def track(t: int, arts: list[int]) -> str:
        linked = {"tags": None, "artists": [{"id": a, "type": "person"} for a in arts]}
        return f"track\t{t}\t-1\t{{}} {json.dumps(linked)}"

    def session(s: int, u: int, tracks: list[int]) -> str:
        objects = [{"id": t, "type": "track", "playratio": None} for t in tracks]
        linked = {"objects": objects, "subjects": [{"type": "user", "id": u}]}
        return f"event.session\t{s}\t{1000 + s}\t{{}}\t{json.dumps(linked)}"

    return write_idomaar(
        folder,
        [person(p) for p in range(n_persons)],
        [track(t, arts) for t, arts in enumerate(track_artists)]
        + [track(t, arts) for t, arts in dup_tracks],
        [session(s, u, tr) for s, (u, tr) in enumerate(sessions)],
    )


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=datasets())
def test_read_plays_matches_brute_force(tmp_path_factory, data) -> None:
    n_persons, track_artists, dup_tracks, sessions = data
    folder = write_random(tmp_path_factory.mktemp("h"), *data)
    counts, per_session = brute_force(track_artists, dup_tracks, sessions)
    expected = plays_frame(counts)
    results = [scan_plays(folder, chunk_lines=c, **ALLOW) for c in (1, 2, 3, 100_000)]
    with block_bytes(200):  # many small fast-path blocks inside one chunk
        results.append(scan_plays(folder, **ALLOW))
    assert all(r.report.slow_path_lines == 0 for r in results)
    # the same data in legal variants that only the slow path reads
    variant = write_variant(tmp_path_factory.mktemp("v"), *data)
    results.append(scan_plays(variant, chunk_lines=4, **ALLOW))
    assert results[-1].report.slow_path_lines > 0
    for scan in results:
        assert_plays_equal(scan.plays, expected)
        assert (
            list(zip(scan.sessions["n_plays"], scan.sessions["n_artists"], strict=True))
            == per_session
        )
        pd.testing.assert_frame_equal(scan.sessions, results[0].sessions)
        assert scan.report.skipped_lines == 0
        for key in ("plays_read", "plays_unknown_track", "plays_unknown_artist", "empty_sessions"):
            assert getattr(scan.report, key) == getattr(results[0].report, key)
    r = results[0].report
    assert r.duplicate_track_ids == len(dup_tracks)  # extra lines of an already seen id
    assert r.plays_read == sum(len(tr) for _, tr in sessions)
    assert r.plays_unknown_track == sum(t >= len(track_artists) for _, tr in sessions for t in tr)
    assert r.plays_unknown_artist == sum(n for (_, a), n in counts.items() if a >= n_persons)
    assert r.empty_sessions == sum(not tr for _, tr in sessions)
    # the CSV form of the same plays (one entry per artist of each play) reads the same
    csv = write_csv(
        tmp_path_factory.mktemp("c"),
        [f"{p};Artist+{p}" for p in range(n_persons)],
        [
            csv_session(
                s,
                1000 + s,
                u,
                [a for t in tr if t < len(track_artists) for a in track_artists[t]],
                quoted=s % 2 == 1,
            )
            for s, (u, tr) in enumerate(sessions)
        ],
    )
    for c in (1, 3, 100_000):
        from_csv = scan_plays(csv, chunk_lines=c, **ALLOW)
        pd.testing.assert_frame_equal(from_csv.plays, results[0].plays)
        pd.testing.assert_frame_equal(from_csv.sessions, results[0].sessions)


# --------------------------------------------------------------------------------------------------
# The real HetRec 2011 Last.fm 2K folder


def test_hetrec_against_an_independent_parse(hetrec_dir: Path) -> None:
    rows = (hetrec_dir / "user_artists.dat").read_bytes().decode("utf-8").splitlines()
    assert rows[0].strip() == "userID\tartistID\tweight"
    triples = [tuple(int(x) for x in r.split("\t")) for r in rows[1:] if r.strip()]
    expected = Counter()
    for u, a, w in triples:
        expected[(u, a)] += w
    df = read_plays(hetrec_dir)
    assert detect_layout(hetrec_dir) == "hetrec"
    assert_plays_equal(df, plays_frame(expected))

    names = {}
    for r in (hetrec_dir / "artists.dat").read_text(encoding="utf-8").splitlines()[1:]:
        pid, name = r.split("\t")[:2]
        names.setdefault(int(pid), name)
    artists = read_artists(hetrec_dir)
    assert artists["artist_id"].tolist() == sorted(names)
    assert artists["name"].tolist() == [names[k] for k in sorted(names)]
    assert any("+" in n for n in artists["name"])  # not unquoted: "+" stays a plus

    # cross-check with the counts stated in PROVENANCE.txt
    facts = (hetrec_dir / "PROVENANCE.txt").read_text()
    m = re.search(r"([\d,]+) users, ([\d,]+) artists, ([\d,]+) user-artist", facts)
    n_users, n_artists, n_rows = (int(g.replace(",", "")) for g in m.groups())
    assert df["user_id"].nunique() == n_users
    assert len(artists) == n_artists
    assert len(df) == n_rows
    r = df.attrs["report"]
    assert r["layout"] == "hetrec" and r["skipped_lines"] == 0 and r["slow_path_lines"] == 0
    assert r["plays_read"] == sum(w for _, _, w in triples)
    assert r["plays_unknown_artist"] == sum(w for _, a, w in triples if a not in names)
    assert scan_plays(hetrec_dir).sessions is None
