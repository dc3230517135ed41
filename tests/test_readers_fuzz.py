"""Fuzz and property tests of the readers (issue 12).

* One parser's semantics: on random mutations of valid lines of every kind, whatever the fast path
  accepts the per-line parser accepts too, with the same values; whole files read the same with
  the fast path switched off, and for any ``chunk_lines``.
* A fuzz test: a small valid dataset in each form, one line corrupted in a way that makes it
  invalid. ``errors="raise"`` names that file and line; ``errors="skip"`` returns exactly what the
  dataset without that line gives, and counts one skipped line.
"""

from __future__ import annotations

import json
import warnings
from contextlib import ExitStack
from dataclasses import fields
from pathlib import Path
from unittest import mock
from urllib.parse import quote_plus

import pandas as pd
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from thirtymusic_utils.data import readers
from thirtymusic_utils.data.readers import DataFormatError, ReadReport, scan_plays

FUZZ = settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

# --------------------------------------------------------------------------------------------------
# Random valid lines of every kind, and random mutations of them

ids = st.integers(0, 2**31 - 1)
small_ids = st.integers(0, 30)
ints = st.integers(-(10**6), 10**6)
texts = st.text(
    alphabet=st.sampled_from(list("abcXYZ019 %+/_-.'\"\\;:,{}[]é\tÿ") + ["\u00e9", "\u2603"]),
    max_size=12,
)


@st.composite
def session_lines(draw) -> bytes:
    objects = []
    n = draw(st.integers(0, 4))
    for j in range(n):
        ratio = draw(st.one_of(st.none(), st.integers(0, 300).map(lambda k: f"{k / 100:.2f}")))
        action = "null" if j == n - 1 else draw(st.sampled_from(['"play"', "null", '"skip"']))
        objects.append(
            f'{{"type":"track","id":{draw(small_ids)},"playstart":{draw(ints)},'
            f'"playtime":{draw(ints)},"playratio":{"null" if ratio is None else ratio},'
            f'"action":{action}}}'
        )
    numtracks = draw(st.one_of(st.just(n), st.integers(0, 6)))
    props = f'{{"numtracks":{numtracks},"playtime":{draw(ints)}}}'
    linked = (
        f'{{"subjects":[{{"type":"user","id":{draw(small_ids)}}}],"objects":[{",".join(objects)}]}}'
    )
    return f"event.session\t{draw(ids)}\t{draw(ints)}\t{props} {linked}".encode()


def _json_str(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)


@st.composite
def track_lines(draw) -> bytes:
    arts = ",".join(
        f'{{"type":"person","id":{a}}}' for a in draw(st.lists(small_ids, min_size=1, max_size=3))
    )
    ent = st.one_of(st.none(), st.lists(st.integers(-5, 10**6), max_size=2))
    albums, tags = draw(ent), draw(ent)

    def lst(kind: str, v) -> str:
        if v is None:
            return "null"
        return "[" + ",".join(f'{{"type":"{kind}","id":{i}}}' for i in v) + "]"

    mbid = draw(st.one_of(st.none(), texts))
    props = (
        f'{{"duration":{draw(ints)},"playcount":{draw(ints)},'
        f'"MBID":{"null" if mbid is None else _json_str(mbid)},"name":{_json_str(draw(texts))}}}'
    )
    linked = f'{{"artists":[{arts}],"albums":{lst("album", albums)},"tags":{lst("tag", tags)}}}'
    return f"track\t{draw(ids)}\t-1\t{props}\t{linked}".encode()


@st.composite
def person_lines(draw) -> bytes:
    name = draw(texts)
    name = quote_plus(name) if draw(st.booleans()) else name
    mbid = draw(st.one_of(st.none(), texts))
    props = f'{{"MBID":{"null" if mbid is None else _json_str(mbid)}, "name":{_json_str(name)}}}'
    return f"person\t{draw(ids)}\t-1\t{props}\t{{}}".encode()


@st.composite
def csv_person_lines(draw) -> bytes:
    name = draw(texts)
    return f"{draw(ids)};{name if draw(st.booleans()) else quote_plus(name)}".encode()


@st.composite
def csv_session_lines(draw) -> bytes:
    listed = ",".join(map(str, draw(st.lists(small_ids, max_size=5))))
    if draw(st.booleans()):
        listed = f'"{listed}"'
    return f"{draw(ids)};{draw(small_ids)};event.session;{draw(ints)};{listed}".encode()


@st.composite
def hetrec_play_lines(draw) -> bytes:
    return f"{draw(small_ids)}\t{draw(small_ids)}\t{draw(st.integers(1, 10**6))}".encode()


@st.composite
def hetrec_artist_lines(draw) -> bytes:
    n = draw(st.integers(0, 2))
    rest = "".join("\t" + draw(texts).replace("\t", " ") for _ in range(n))
    return f"{draw(ids)}\t{draw(texts).replace(chr(9), ' ')}{rest}".encode()


NOISE = [bytes([c]) for c in b'019xeE.-+",:{}[] \t\\\r\x00\x1fn%'] + [b"\xff", b"\xc3", b"null"]


@st.composite
def mutated(draw, lines: st.SearchStrategy[bytes]) -> bytes:
    """A valid line with 0 to 3 random edits: insert, delete, replace, copy a slice, swap."""
    line = bytearray(draw(lines))
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(["insert", "delete", "replace", "copy", "swap", "digit"]))
        i = draw(st.integers(0, max(len(line) - 1, 0)))
        if op == "insert":
            line[i:i] = draw(st.sampled_from(NOISE))
        elif op == "delete" and line:
            del line[i]
        elif op == "replace" and line:
            line[i : i + 1] = draw(st.sampled_from(NOISE))
        elif op == "copy" and line:
            j = draw(st.integers(i, min(len(line), i + 60)))
            k = draw(st.integers(0, len(line)))
            line[k:k] = line[i:j]
        elif op == "swap" and len(line) > i + 1:
            line[i], line[i + 1] = line[i + 1], line[i]
        elif op == "digit":  # a value changed into another valid one
            digits = [k for k, c in enumerate(line) if 48 <= c <= 57]
            if digits:
                line[draw(st.sampled_from(digits))] = draw(st.integers(48, 57))
    return bytes(line)


def _values(kind: str, result) -> list[tuple]:
    """The fast path's chunk result as per-line tuples, like the slow parsers return them."""
    if kind in ("session", "csv_session"):
        return [
            (
                int(result.session_ids[0]),
                int(result.timestamps[0]),
                int(result.users[0]),
                result.items.tolist(),
                bool(result.numtracks_mismatch),
            )
        ]
    if kind == "track":
        return [(int(result.ids[0]), result.artists.tolist())]
    if kind in ("person", "csv_person", "hetrec_artist"):
        return [(int(result.ids[0]), result.names[0])]
    return [(int(result.users[0]), int(result.artists[0]), int(result.weights[0]))]


KINDS = {
    "session": (session_lines(), readers._fast_sessions, readers._slow_session),
    "track": (track_lines(), readers._fast_tracks, readers._slow_track),
    "person": (
        person_lines(),
        lambda lines: readers._fast_persons(lines, True),
        readers._slow_person,
    ),
    "csv_person": (
        csv_person_lines(),
        lambda lines: readers._fast_csv_persons(lines, True),
        readers._slow_csv_person,
    ),
    "csv_session": (csv_session_lines(), readers._fast_csv_sessions, readers._slow_csv_session),
    "hetrec_play": (hetrec_play_lines(), readers._fast_hetrec_plays, readers._slow_hetrec_play),
    "hetrec_artist": (
        hetrec_artist_lines(),
        lambda lines: readers._fast_hetrec_artists(lines, True),
        readers._slow_hetrec_artist,
    ),
}


def _slow_tuple(kind: str, rec) -> tuple:
    if kind in ("session", "csv_session"):
        sid, ts, uid, items, mismatch = rec
        return (sid, ts, uid, [int(t) for t in items], bool(mismatch))
    if kind == "track":
        return (rec[0], list(rec[1]))
    return tuple(rec)


@pytest.mark.parametrize("kind", sorted(KINDS))
@settings(max_examples=50, deadline=None)
@given(data=st.data())
def test_the_fast_path_accepts_only_what_the_slow_path_accepts(kind: str, data) -> None:
    lines, fast, slow = KINDS[kind]
    line = data.draw(mutated(lines))
    try:
        result = fast(line + b"\n")
    except Exception as e:  # the fast path must never raise either
        pytest.fail(f"fast path raised {e!r} on {line!r}")
    try:
        rec = slow(line + b"\n")
    except readers._LineError:
        rec = None
    except RecursionError:
        rec = None
    event(f"fast {'accepts' if result is not None else 'declines'}")
    if result is not None:
        assert rec is not None, f"the fast path accepted {line!r}, which the slow path rejects"
        assert _values(kind, result) == [_slow_tuple(kind, rec)], line


@pytest.mark.parametrize("kind", sorted(KINDS))
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_valid_lines_are_on_the_fast_path(kind: str, data) -> None:
    """The canonical forms drawn above (no escapes, ASCII keys) all take the fast path."""
    lines, fast, slow = KINDS[kind]
    line = data.draw(lines)
    result = fast(line + b"\n")
    try:
        rec = slow(line + b"\n")
    except readers._LineError:  # e.g. a name whose %-escapes are not UTF-8
        assert result is None
        return
    needs_slow = b"\\" in line or (kind == "csv_person" and b'"' in line.split(b";", 1)[1])
    needs_slow |= kind == "csv_person" and b";" in line.split(b";", 1)[1]
    if not needs_slow:
        assert result is not None, line
        assert _values(kind, result) == [_slow_tuple(kind, rec)]


# --------------------------------------------------------------------------------------------------
# Whole files: the same result with the fast path off, and for any chunk_lines


def _idomaar_files(session_text: list[bytes]) -> dict[str, bytes]:
    persons = [f'person\t{a}\t-1\t{{"MBID":null, "name":"A{a}"}}\t{{}}' for a in range(8)]
    tracks = [
        f'track\t{t}\t-1\t{{"duration":1,"playcount":1,"MBID":null,"name":"n"}}\t'
        f'{{"artists":[{{"type":"person","id":{t % 8}}}],"albums":null,"tags":null}}'
        for t in range(31)
    ]
    return {
        "entities/persons.idomaar": "\n".join(persons).encode() + b"\n",
        "entities/tracks.idomaar": "\n".join(tracks).encode() + b"\n",
        "relations/sessions.idomaar": b"\n".join(session_text) + b"\n",
    }


def _write(folder: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    return folder


def _outcome(folder: Path, errors: str, **kw) -> tuple:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            scan = scan_plays(folder, errors=errors, max_unknown_share=1, **kw)
        except DataFormatError as e:
            return ("error", e.path.name, e.line, e.reason)
    r = scan.report.as_dict()
    r.pop("slow_path_lines")
    return ("ok", scan.plays.to_dict("list"), scan.sessions.to_dict("list"), r)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_files_read_the_same_with_the_fast_path_off_and_any_chunk_lines(
    tmp_path_factory, data
) -> None:
    form = data.draw(st.sampled_from(["idomaar", "csv"]))
    gen = session_lines() if form == "idomaar" else csv_session_lines()
    lines = data.draw(st.lists(st.one_of(gen, mutated(gen)), min_size=1, max_size=8))
    folder = tmp_path_factory.mktemp("f")
    if form == "idomaar":
        _write(folder, _idomaar_files(lines))
    else:
        _write(
            folder,
            {
                "entities/persons.csv": b"ID;Name\n" + b"".join(b"%d;A\n" % a for a in range(31)),
                "relations/sessions_short.csv": b"ID;UserId;Type;Timestamp;ArtistsID\n"
                + b"\n".join(lines)
                + b"\n",
            },
        )
    for errors in ("raise", "skip"):
        outcomes = [_outcome(folder, errors, chunk_lines=c) for c in (1, 2, 100_000)]
        with ExitStack() as stack:  # the slow path alone
            for name in ("_fast_sessions", "_fast_csv_sessions", "_fast_tracks"):
                stack.enter_context(mock.patch.object(readers, name, lambda lines: None))
            stack.enter_context(
                mock.patch.object(readers, "_fast_persons", lambda lines, names: None)
            )
            stack.enter_context(
                mock.patch.object(readers, "_fast_csv_persons", lambda lines, names: None)
            )
            outcomes.append(_outcome(folder, errors))
        event(f"{errors}: {outcomes[0][0]}")
        for o in outcomes[1:]:
            assert o == outcomes[0]


# --------------------------------------------------------------------------------------------------
# The fuzz test: one line made invalid, in a small valid dataset of each form

NAMES = ["Alpha", "Beta", "Gamma", "Delta", "Epsilon"]  # no digits: every digit is in a number


def idomaar_dataset() -> dict[str, list[str]]:
    persons = [
        f'person\t{a}\t-1\t{{"MBID":null, "name":"{quote_plus(n)}"}}\t{{}}'
        for a, n in enumerate(NAMES)
    ]
    tracks = []
    for t in range(6):
        arts = ",".join(f'{{"type":"person","id":{a}}}' for a in sorted({t % 5, (t * 3) % 5}))
        albums = "null" if t % 2 else f'[{{"type":"album","id":{100 + t}}}]'
        tracks.append(
            f'track\t{10 + t}\t-1\t{{"duration":{180 + t},"playcount":{t},"MBID":null,'
            f'"name":"{NAMES[t % 5]}/_/Song"}}\t{{"artists":[{arts}],"albums":{albums},'
            f'"tags":[{{"type":"tag","id":{t}}}]}}'
        )
    sessions = []
    for s, (user, played) in enumerate([(1, [10, 11, 10]), (2, [12, 13]), (1, [14, 15, 11, 12])]):
        objs = []
        for j, t in enumerate(played):
            last = j == len(played) - 1
            objs.append(
                f'{{"type":"track","id":{t},"playstart":{60 * j},"playtime":{-1 if last else 60},'
                f'"playratio":{"null" if j % 2 else "0.98"},"action":{"null" if last else chr(34) + "play" + chr(34)}}}'  # noqa: E501
            )
        sessions.append(
            f'event.session\t{500 + s}\t{1390231051 + s}\t{{"numtracks":{len(played)},'
            f'"playtime":{60 * len(played)}}} {{"subjects":[{{"type":"user","id":{user}}}],'
            f'"objects":[{",".join(objs)}]}}'
        )
    return {
        "entities/persons.idomaar": persons,
        "entities/tracks.idomaar": tracks,
        "relations/sessions.idomaar": sessions,
    }


def csv_dataset() -> dict[str, list[str]]:
    return {
        "entities/persons.csv": ["ID;Name"] + [f"{a};{n}" for a, n in enumerate(NAMES)],
        "relations/sessions_short.csv": [
            "ID;UserId;Type;Timestamp;ArtistsID",
            "500;1;event.session;1390231051;0,1,0,2",
            '501;2;event.session;1390231052;"3,4"',
            "502;1;event.session;1390231053;4,0,1",
            '503;3;event.session;1390231054;""',
        ],
    }


def hetrec_dataset() -> dict[str, list[str]]:
    return {
        "artists.dat": ["id\tname\turl\tpictureURL"]
        + [
            f"{a}\t{n}\thttp://www.last.fm/music/{n}\thttp://img/{n}.png"
            for a, n in enumerate(NAMES)
        ],
        "user_artists.dat": ["userID\tartistID\tweight"]
        + [f"{u}\t{a}\t{10 * u + a + 1}" for u in (2, 3) for a in range(4)],
    }


DATASETS = {"idomaar": idomaar_dataset, "csv": csv_dataset, "hetrec": hetrec_dataset}
HEADERS = {"persons.csv", "sessions_short.csv", "artists.dat", "user_artists.dat"}


def corruptions(rel: str, line: str) -> list[tuple]:
    """Edits that make ``line`` invalid for sure (each reasoned about in the comments)."""
    name = Path(rel).name
    raw = line.encode()
    digits = [i for i, c in enumerate(line) if c.isdigit()]
    out: list[tuple] = [("letter", i) for i in digits]  # a letter in a number
    out += [("after", i) for i in digits]  # a character that cannot follow a digit
    if name.endswith(".idomaar"):
        # a brace, bracket, quote, colon, JSON comma or TAB less: invalid JSON or one field less
        out += [("delete", i) for i, c in enumerate(line) if c in '{}[]":,\t']
        out += [("cut", p) for p in range(1, len(raw))]  # a JSON object cut short is not one
        start = 0
        while (i := line.find("null", start)) >= 0:  # valid JSON, but too deep to be read
            out.append(("deep", i))
            start = i + 1
    elif name.endswith(".csv"):
        quoted = line.count('"') == 2
        out += [("delete", i) for i, c in enumerate(line) if c == ";" or (c == '"' and quoted)]
        fields_end = [i for i, c in enumerate(line) if c == ";"][-1]  # before the last field
        out += [("cut", p) for p in range(1, fields_end + 1)]  # a field less
    else:
        tabs = [i for i, c in enumerate(line) if c == "\t"]
        keep = tabs if name == "user_artists.dat" else tabs[:1]  # artists may lack url fields
        out += [("delete", i) for i in keep]
        out += [("cut", p) for p in range(1, keep[-1] + 1)]
    return out


def corrupt(line: bytes, how: tuple, char: bytes) -> bytes:
    kind, i = how
    if kind == "letter":
        return line[:i] + char + line[i + 1 :]
    if kind == "after":
        return line[: i + 1] + char + line[i + 1 :]
    if kind == "delete":
        return line[:i] + line[i + 1 :]
    if kind == "cut":
        return line[:i]
    assert kind == "deep"
    return line[:i] + b"[" * 3000 + b"]" * 3000 + line[i + 4 :]


COUNTS = [f.name for f in fields(ReadReport) if f.name not in ("skipped_by_file", "warnings")]


def _files(folder: Path, files: dict[str, list[bytes]]) -> Path:
    return _write(folder, {rel: b"".join(x + b"\n" for x in lines) for rel, lines in files.items()})


@FUZZ
@given(data=st.data())
def test_fuzz_one_corrupt_line(tmp_path_factory, data) -> None:
    form = data.draw(st.sampled_from(sorted(DATASETS)))
    files = {rel: [x.encode() for x in lines] for rel, lines in DATASETS[form]().items()}
    rel = data.draw(st.sampled_from(sorted(files)))
    first = 1 if Path(rel).name in HEADERS else 0
    index = data.draw(st.integers(first, len(files[rel]) - 1))
    how = data.draw(st.sampled_from(corruptions(rel, files[rel][index].decode())))
    char = data.draw(st.sampled_from([b"q", b"X", b"-", b"[", b'"', b"\xff"]))
    if how[0] == "letter":
        char = data.draw(st.sampled_from([b"q", b"X", b"z"]))
    bad = dict(files)
    bad[rel] = [
        *files[rel][:index],
        corrupt(files[rel][index], how, char),
        *files[rel][index + 1 :],
    ]
    without = dict(files)
    without[rel] = files[rel][:index] + files[rel][index + 1 :]
    folder = _files(tmp_path_factory.mktemp("bad"), bad)
    chunk_lines = data.draw(st.sampled_from([1, 2, 100_000]))
    event(f"{form} {Path(rel).name} {how[0]}")

    with pytest.raises(DataFormatError) as info, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scan_plays(folder, chunk_lines=chunk_lines)
    assert (info.value.path.name, info.value.line) == (Path(rel).name, index + 1), info.value

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = scan_plays(folder, errors="skip", chunk_lines=chunk_lines)
        want = scan_plays(_files(tmp_path_factory.mktemp("ok"), without), errors="skip")
    key = {"persons.idomaar": "persons", "tracks.idomaar": "tracks", "persons.csv": "persons",
           "artists.dat": "artists", "user_artists.dat": "user_artists"}.get(Path(rel).name, "sessions")  # fmt: skip  # noqa: E501
    assert got.report.skipped_by_file[key] == 1 and got.report.skipped_lines == 1
    assert want.report.skipped_lines == 0
    pd.testing.assert_frame_equal(got.plays, want.plays)
    if want.sessions is not None:
        pd.testing.assert_frame_equal(got.sessions, want.sessions)
    for name in COUNTS:
        if name != "slow_path_lines":
            assert getattr(got.report, name) == getattr(want.report, name), name
