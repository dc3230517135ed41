"""Readers for the 30Music dataset (idomaar and CSV forms) and the HetRec 2011 Last.fm 2K folder.

The 30Music ``sessions.idomaar`` file is several GB, so every file is streamed ``chunk_lines`` lines
at a time, and each chunk is parsed in blocks of a few MB. A block first goes through a *fast
path*: one compiled regex over the whole block checks each line against the documented canonical
form and pulls out the ids, ``bytes.count`` checks field counts and that the JSON braces balance,
and numpy turns the ids into int arrays. When the fast path cannot account for every line of a
block (a malformed line, or a legal variant such as reordered JSON keys or extra spaces), the block
is re-read by a *slow path* that parses each line with ``json`` and either raises
:class:`DataFormatError` naming the file, the 1-based line and what was expected
(``errors="raise"``) or skips and counts the line (``errors="skip"``). Both paths give the same
values for every line they both accept (the tests check this on random data). The fast path checks
the structure (field count, record type, numeric ids, balanced braces, every object a track with an
integer id, the end of the line) but not the syntax of JSON values it does not use: a line with
``"playratio":1.0x`` passes it unnoticed. Whitespace-only lines carry no data and are ignored.

Memory grows with the number of distinct (user, artist) pairs, with the number of sessions (the
per-session frame of :func:`scan_plays`) and with ``tracks.idomaar`` (the track -> artists map),
never with the size of the sessions file.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from itertools import islice, repeat
from operator import itemgetter
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import numpy as np
import pandas as pd
from tqdm import tqdm

__all__ = [
    "LAYOUT_FILES",
    "DataFormatError",
    "PlaysScan",
    "ReadReport",
    "detect_layout",
    "read_artists",
    "read_plays",
    "scan_plays",
]

MAX_ID = 2**31 - 1
"""Largest id accepted for users, artists, tracks and sessions (ids are packed into int64 keys)."""

LAYOUT_FILES: dict[str, tuple[str, ...]] = {
    "idomaar": (
        "entities/persons.idomaar",
        "entities/tracks.idomaar",
        "relations/sessions.idomaar",
    ),
    "csv": ("entities/persons.csv", "relations/sessions_short.csv"),
    "hetrec": ("user_artists.dat", "artists.dat"),
}
"""The files each supported form needs, relative to the data folder."""

_LAYOUT_NAMES = {
    "idomaar": "30Music, idomaar form",
    "csv": "30Music, CSV form",
    "hetrec": "HetRec 2011 Last.fm 2K",
}
_CSV_PERSONS_HEADER = "ID;Name"
_CSV_SESSIONS_HEADER = "ID;UserId;Type;Timestamp;ArtistsID"
_HETREC_PLAYS_HEADER = "userID\tartistID\tweight"
_HETREC_ARTISTS_HEADER = "id\tname\turl\tpictureURL"


# --------------------------------------------------------------------------------------------------
# Errors and the report


class DataFormatError(ValueError):
    """A malformed input: ``str(err) == f"{path.name}:{line}: {reason}"`` (no line when None)."""

    def __init__(self, path: str | os.PathLike, line: int | None, reason: str) -> None:
        self.path = Path(path)
        self.line = line
        self.reason = reason
        super().__init__(self.path, line, reason)

    def __str__(self) -> str:
        where = self.path.name if self.line is None else f"{self.path.name}:{self.line}"
        return f"{where}: {self.reason}"

    def __reduce__(self):
        return (type(self), (self.path, self.line, self.reason))


class _LineError(Exception):
    """Raised by the per-line parsers; the reader adds the file and the line number."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class ReadReport:
    """What a read saw: counts of lines, plays, skips and anomalies (all ints) and the layout.

    ``plays_read`` counts plays as the files hold them: track plays (objects) in the idomaar
    form, ``ArtistsID`` entries in the CSV form, summed weights in HetRec. Plays of tracks absent
    from ``tracks.idomaar`` are dropped (``plays_unknown_track``); artist plays credited to ids
    absent from the persons/artists file are kept (``plays_unknown_artist``). Duplicate person and
    track ids: the first line wins; sessions sharing an id are all kept
    (``duplicate_session_ids`` counts the extra ones). ``empty_sessions`` counts sessions with no
    plays in the file (no objects, empty ``ArtistsID``). ``slow_path_lines`` counts lines parsed
    one by one with ``json`` (a diagnostic: 0 on files in the documented form).
    """

    layout: str
    sessions_read: int = 0
    plays_read: int = 0
    persons_read: int = 0
    tracks_read: int = 0
    plays_unknown_track: int = 0
    plays_unknown_artist: int = 0
    duplicate_person_ids: int = 0
    duplicate_track_ids: int = 0
    duplicate_session_ids: int = 0
    empty_sessions: int = 0
    slow_path_lines: int = 0
    skipped_by_file: dict[str, int] = field(default_factory=dict)

    @property
    def skipped_lines(self) -> int:
        """Malformed lines skipped over all files (``errors="skip"``)."""
        return sum(self.skipped_by_file.values())

    def as_dict(self) -> dict[str, int | str]:
        """Flat dict: every count, ``skipped_lines`` and ``skipped_lines_<file>`` per file read."""
        out: dict[str, int | str] = {}
        for f in fields(self):
            if f.name != "skipped_by_file":
                out[f.name] = getattr(self, f.name)
        out["skipped_lines"] = self.skipped_lines
        for key, n in self.skipped_by_file.items():
            out[f"skipped_lines_{key}"] = int(n)
        return out


@dataclass
class PlaysScan:
    """The result of :func:`scan_plays`.

    ``plays``: as :func:`read_plays`. ``sessions``: one row per session read, in file order, int64
    columns ``session_id, user_id, timestamp`` (unix seconds), ``n_plays`` (artist plays: one per
    artist of each known track played, as the CSV ``ArtistsID`` list holds them, so that
    ``sessions.n_plays.sum() == plays.plays.sum()``) and ``n_artists`` (distinct artists among
    them); None for HetRec, which has no sessions.
    """

    plays: pd.DataFrame
    sessions: pd.DataFrame | None
    report: ReadReport


# --------------------------------------------------------------------------------------------------
# Layout detection


def _missing(folder: Path, layout: str) -> list[str]:
    return [rel for rel in LAYOUT_FILES[layout] if not (folder / rel).is_file()]


def _expected_files_text() -> str:
    return "; ".join(
        f"{_LAYOUT_NAMES[name]}: {', '.join(files)}" for name, files in LAYOUT_FILES.items()
    )


def detect_layout(data_dir: str | os.PathLike) -> str:
    """Return ``"idomaar"``, ``"csv"`` or ``"hetrec"``: the form of the data in ``data_dir``.

    A folder holding both 30Music forms is read as idomaar. A missing folder raises
    FileNotFoundError; a folder holding none of the forms raises DataFormatError (a ValueError)
    listing the files each form needs.
    """
    folder = Path(data_dir)
    if not folder.exists():
        raise FileNotFoundError(f"data folder {folder} does not exist")
    if not folder.is_dir():
        raise NotADirectoryError(f"data folder {folder} is not a folder")
    for layout in LAYOUT_FILES:
        if not _missing(folder, layout):
            return layout
    partial = [
        f"{_LAYOUT_NAMES[name]} lacks {', '.join(_missing(folder, name))}"
        for name, files in LAYOUT_FILES.items()
        if len(_missing(folder, name)) < len(files)
    ]
    found = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    reason = (
        "no 30Music or HetRec data found; expected the files of one of these forms: "
        + _expected_files_text()
        + (f" ({'; '.join(partial)})" if partial else "")
        + f". The folder holds: {', '.join(found[:20]) or 'nothing'}"
        + (", ..." if len(found) > 20 else "")
    )
    raise DataFormatError(folder, None, reason)


def _resolve(data_dir: str | os.PathLike, layout: str) -> tuple[Path, str]:
    folder = Path(data_dir)
    if layout == "auto":
        return folder, detect_layout(folder)
    if layout not in LAYOUT_FILES:
        raise ValueError(f"layout must be 'auto', 'idomaar', 'csv' or 'hetrec', not {layout!r}")
    if not folder.is_dir():
        raise FileNotFoundError(f"data folder {folder} does not exist")
    missing = _missing(folder, layout)
    if missing:
        raise FileNotFoundError(
            f"{folder} lacks {', '.join(missing)} (the {_LAYOUT_NAMES[layout]} needs "
            f"{', '.join(LAYOUT_FILES[layout])})"
        )
    return folder, layout


def _check_errors(errors: str) -> None:
    if errors not in ("raise", "skip"):
        raise ValueError(f"errors must be 'raise' or 'skip', not {errors!r}")


# --------------------------------------------------------------------------------------------------
# Small helpers shared by the fast paths


def _ints(tokens: list[bytes] | tuple[bytes, ...]) -> np.ndarray:
    """Digit strings (already checked by a regex) to an int64 array."""
    if not tokens:
        return np.empty(0, dtype=np.int64)
    return np.fromstring(b" ".join(tokens), dtype=np.int64, sep=" ")


def _columns(found: list[tuple[bytes, ...]], n: int) -> list[list[bytes]]:
    """The columns of ``findall`` results (faster than ``zip(*found)`` on long lists)."""
    return [list(map(itemgetter(i), found)) for i in range(n)]


def _excl_cumsum(counts: np.ndarray) -> np.ndarray:
    out = np.zeros(len(counts), dtype=np.int64)
    if len(counts) > 1:
        np.cumsum(counts[:-1], out=out[1:])
    return out


# The fast-path patterns match the canonical forms of the real files (as documented) exactly: JSON
# spacing variants, reordered keys, a TAB where the format has a space (or the reverse) are legal
# but go through the slow path. Sessions and tracks lines must hold exactly 3 and 4 TABs (checked
# by counting), so that the cheap [^\n]* repeats cannot hide an extra field. Every pattern starts
# with "\n" (the chunk is joined as "\n" + lines, ending in "\n") so that the regex engine can jump
# to candidate positions with a literal search, and ends before the line's "\n". With as many
# matches as lines, each line is matched by exactly one match lying inside it (so a repeat like
# [^}]* that could run past a newline cannot join two lines unnoticed). Single-character negated
# classes ([^\t]*) are used where possible: the regex engine runs them much faster than sets.
_NUM = rb"(\d{1,10})"  # an id; the value is checked against MAX_ID after conversion
_TS = rb"(-?\d{1,18})"
_EOL = rb"[ \r]*(?=\n)"  # trailing spaces only: a trailing TAB would be one more field
_SESSION_RE = re.compile(
    rb"\nevent\.session\t" + _NUM + rb"\t" + _TS + rb"\t\{[^}]*\} "
    rb'\{"subjects":\[\{"type":"user","id":' + _NUM + rb'\}\],"objects":\[[^\n]*\]\}' + _EOL
)
_TRACK_ID = b'"track","id":'
_TRACK_ID_RE = re.compile(rb'"track","id":(\d{1,10})(?![\d.eE])')
_ARTIST_OBJ = rb'\{"type":"person","id":\d{1,10}\}'
_ARTIST_ID_RE = re.compile(rb'"id":(\d{1,10})')
_TRACK_RE = re.compile(
    rb"\ntrack\t" + _NUM + rb"\t-?\d{1,18}\t\{[^\t]*\}\t"
    rb'\{"artists":\[(' + _ARTIST_OBJ + rb"(?:," + _ARTIST_OBJ + rb")*)\](?:,[^\n]*)?\}" + _EOL
)
_PERSON_RE = re.compile(
    rb"\nperson\t" + _NUM + rb'\t-?\d{1,18}\t\{"MBID":(?:null|"[^"\\\t\n]*"), ?'
    rb'"name":"([^"\\\t\n]*)"\}\t\{[^\t\n]*\}' + _EOL
)
_CSV_PERSON_RE = re.compile(rb"\n" + _NUM + rb';("?)([^"\r\n]*)\2\r?(?=\n)')
_CSV_SESSION_RE = re.compile(
    rb"\n"
    + _NUM
    + b";"
    + _NUM
    + rb";[^;\n]*;"
    + _TS
    + rb'(?:;"((?:\d{1,10}(?:,\d{1,10})*)?)"|;((?:\d{1,10}(?:,\d{1,10})*)?))\r?(?=\n)'
)
_HETREC_PLAY_RE = re.compile(rb"\n" + _NUM + rb"\t" + _NUM + rb"\t(\d{1,18})\r?(?=\n)")
_HETREC_ARTIST_RE = re.compile(rb"\n" + _NUM + rb"\t([^\t\r\n]*)(?:\t[^\t\r\n]*){0,2}\r?(?=\n)")
_INT_RE = re.compile(r"-?\d+")


def _blob(lines: list[bytes]) -> bytes:
    """The chunk as one bytes object framed by newlines (see the patterns above)."""
    if lines and lines[-1].endswith(b"\n"):
        return b"".join([b"\n", *lines])
    return b"".join([b"\n", *lines, b"\n"])


_TRIM = b" \t\r\n"


# --------------------------------------------------------------------------------------------------
# Slow path: one line at a time, with precise messages


def _text(line: bytes) -> str:
    try:
        return line.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError as e:
        raise _LineError(f"line is not valid UTF-8 (byte {e.start + 1})") from None


def _id_field(value: str, what: str) -> int:
    if not value.isascii() or not value.isdigit():
        raise _LineError(f"{what} {value!r} is not a non-negative integer")
    n = int(value)
    if n > MAX_ID:
        raise _LineError(f"{what} {value} is out of range (at most {MAX_ID})")
    return n


def _int_field(value: str, what: str) -> int:
    if not _INT_RE.fullmatch(value.strip()) or len(value.strip().lstrip("-")) > 18:
        raise _LineError(f"{what} {value!r} is not an integer (at most 18 digits)")
    return int(value)


def _json_id(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_ID:
        raise _LineError(f"{what} is {json.dumps(value)}, expected an integer id 0..{MAX_ID}")
    return value


def _is_truncated(s: str, err: json.JSONDecodeError) -> bool:
    unbalanced = s.count("{") > s.count("}") or s.count("[") > s.count("]")
    return err.pos >= len(s) - 1 or (unbalanced and not s.endswith("}"))


def _load_json(s: str, what: str) -> dict:
    s = s.strip()
    if not s.startswith("{"):
        raise _LineError(f"{what} must be a JSON object starting with '{{', found {s[:30]!r}")
    try:
        obj = json.loads(s)
    except json.JSONDecodeError as e:
        if _is_truncated(s, e):
            raise _LineError(f"{what} is truncated") from None
        raise _LineError(f"{what} is not valid JSON ({e.msg} at column {e.pos + 1})") from None
    if not isinstance(obj, dict):
        raise _LineError(f"{what} must be a JSON object")
    return obj


_IDOMAAR_FIELDS = (
    "5 fields (type, id, timestamp, properties JSON, linked JSON) separated by TAB, "
    "the last one or two possibly by one space instead"
)
_TWO_JSON_RE = re.compile(r"(\{[^{}]*\})\s+(\{.*)", re.S)


def _idomaar_fields(line: bytes, record: str) -> tuple[int, int, str, dict]:
    """Split an idomaar line into (id, timestamp, properties text, linked JSON)."""
    text = _text(line).lstrip("\ufeff")
    parts = text.split("\t")
    if len(parts) == 4 and parts[3].lstrip().startswith("{"):
        m = _TWO_JSON_RE.fullmatch(parts[3].strip())
        if m is None:
            raise _LineError(
                f"expected the properties JSON, one space and the linked JSON in field 4, "
                f"found {parts[3][:60]!r}"
            )
        parts = [*parts[:3], m.group(1), m.group(2)]
    if len(parts) != 5:
        raise _LineError(f"expected {_IDOMAAR_FIELDS}; found {len(parts)} TAB-separated fields")
    if parts[0] != record:
        raise _LineError(f"expected record type {record!r}, found {parts[0][:40]!r}")
    rid = _id_field(parts[1], "id")
    ts = _int_field(parts[2], "timestamp")
    props = parts[3].strip()
    if not (props.startswith("{") and props.endswith("}")):
        raise _LineError(f"properties JSON must be a JSON object, found {props[:40]!r}")
    return rid, ts, props, _load_json(parts[4], "linked JSON")


def _slow_person(line: bytes) -> tuple[int, bytes]:
    pid, _, props_text, _ = _idomaar_fields(line, "person")
    props = _load_json(props_text, "properties JSON")
    name = props.get("name")
    if not isinstance(name, str):
        raise _LineError(f"properties JSON has no string 'name' (found {json.dumps(name)})")
    mbid = props.get("MBID")
    if mbid is not None and not isinstance(mbid, str):
        raise _LineError(f"MBID must be null or a string, found {json.dumps(mbid)}")
    return pid, name.encode("utf-8")


def _slow_track(line: bytes) -> tuple[int, list[int]]:
    tid, _, _, linked = _idomaar_fields(line, "track")
    artists = linked.get("artists")
    if not isinstance(artists, list) or not artists:
        raise _LineError(
            'track has no artists: expected linked.artists = [{"type":"person","id":N}, ...], '
            f"found {json.dumps(artists)[:60]}"
        )
    ids = []
    for k, a in enumerate(artists):
        if not isinstance(a, dict) or a.get("type") != "person":
            raise _LineError(f'linked.artists[{k}] is not {{"type":"person","id":N}}')
        ids.append(_json_id(a.get("id"), f"linked.artists[{k}].id"))
    return tid, ids


def _slow_session(line: bytes) -> tuple[int, int, int, list[int]]:
    sid, ts, _, linked = _idomaar_fields(line, "event.session")
    subjects = linked.get("subjects")
    users = (
        [s for s in subjects if isinstance(s, dict) and s.get("type") == "user"]
        if isinstance(subjects, list)
        else []
    )
    if not users:
        raise _LineError(
            'missing user: expected linked.subjects = [{"type":"user","id":N}], '
            f"found {json.dumps(subjects)[:60]}"
        )
    if len(users) > 1:
        raise _LineError(f"expected one user in linked.subjects, found {len(users)}")
    uid = _json_id(users[0].get("id"), "user id")
    objects = linked.get("objects")
    if not isinstance(objects, list):
        raise _LineError(f"linked.objects must be a list of tracks, found {json.dumps(objects)}")
    tracks = []
    for k, o in enumerate(objects):
        if not isinstance(o, dict) or o.get("type") != "track":
            raise _LineError(f'linked.objects[{k}] is not a track {{"type":"track","id":N,...}}')
        tracks.append(_json_id(o.get("id"), f"linked.objects[{k}].id"))
    return sid, ts, uid, tracks


def _split_fields(line: bytes, sep: str, n: int, names: str) -> list[str]:
    parts = _text(line).split(sep)
    if len(parts) != n:
        raise _LineError(
            f"expected {n} {'TAB' if sep == chr(9) else repr(sep)}-separated fields "
            f"({names}), found {len(parts)}"
        )
    return parts


def _unquote_field(value: str, strip: bool = True) -> str:
    if strip:
        value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def _slow_csv_person(line: bytes) -> tuple[int, bytes]:
    text = _text(line)
    if ";" not in text:
        raise _LineError("expected 2 ';'-separated fields (ID;Name), found 1")
    pid, name = text.split(";", 1)
    return _id_field(_unquote_field(pid), "ID"), _unquote_field(name, strip=False).encode("utf-8")


def _slow_csv_session(line: bytes) -> tuple[int, int, int, list[int]]:
    sid, uid, _, ts, artists = _split_fields(line, ";", 5, _CSV_SESSIONS_HEADER)
    sid_n = _id_field(_unquote_field(sid), "ID")
    uid_n = _id_field(_unquote_field(uid), "UserId")
    ts_n = _int_field(_unquote_field(ts), "Timestamp (unix seconds)")
    listed = _unquote_field(artists)
    ids = []
    if listed:
        for k, a in enumerate(listed.split(",")):
            if not a.strip():
                raise _LineError(f"ArtistsID entry {k + 1} is empty in {listed[:60]!r}")
            ids.append(_id_field(a.strip(), f"ArtistsID entry {k + 1}"))
    return sid_n, ts_n, uid_n, ids


def _slow_hetrec_play(line: bytes) -> tuple[int, int, int]:
    u, a, w = _split_fields(line, "\t", 3, _HETREC_PLAYS_HEADER.replace("\t", " "))
    weight = _int_field(w, "weight")
    if not 1 <= weight < 10**18:
        raise _LineError(f"weight must be a positive play count, found {weight}")
    return _id_field(u.strip(), "userID"), _id_field(a.strip(), "artistID"), weight


def _slow_hetrec_artist(line: bytes) -> tuple[int, bytes]:
    parts = _text(line).split("\t")
    if not 2 <= len(parts) <= 4:
        raise _LineError(
            f"expected 4 TAB-separated fields (id name url pictureURL), found {len(parts)}"
        )
    return _id_field(parts[0].strip(), "id"), parts[1].encode("utf-8")


# --------------------------------------------------------------------------------------------------
# Chunk results (the fast and the slow path build the same structures)


@dataclass
class _Named:
    ids: np.ndarray
    names: list[bytes] | None


@dataclass
class _Tracks:
    ids: np.ndarray
    n_artists: np.ndarray
    artists: np.ndarray


@dataclass
class _Sessions:
    session_ids: np.ndarray
    timestamps: np.ndarray
    users: np.ndarray
    n_items: np.ndarray
    items: np.ndarray  # track ids (idomaar) or artist ids (CSV), session after session


@dataclass
class _Weights:
    users: np.ndarray
    artists: np.ndarray
    weights: np.ndarray


def _all_ok(*arrays: np.ndarray) -> bool:
    return all(len(a) == 0 or int(a.max()) <= MAX_ID for a in arrays)


def _fast_persons(lines: list[bytes], need_names: bool) -> _Named | None:
    found = _PERSON_RE.findall(_blob(lines))
    if len(found) != len(lines):
        return None
    ids, names = _columns(found, 2)
    arr = _ints(ids)
    if not _all_ok(arr):
        return None
    return _Named(arr, list(names) if need_names else None)


def _fast_csv_persons(lines: list[bytes], need_names: bool) -> _Named | None:
    found = _CSV_PERSON_RE.findall(_blob(lines))
    if len(found) != len(lines):
        return None
    arr = _ints([f[0] for f in found])
    if not _all_ok(arr):
        return None
    return _Named(arr, [f[2] for f in found] if need_names else None)


def _fast_hetrec_artists(lines: list[bytes], need_names: bool) -> _Named | None:
    found = _HETREC_ARTIST_RE.findall(_blob(lines))
    if len(found) != len(lines):
        return None
    arr = _ints([f[0] for f in found])
    if not _all_ok(arr):
        return None
    names = [f[1] for f in found]
    if need_names:
        try:
            for n in names:
                n.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return _Named(arr, names if need_names else None)


def _fast_tracks(lines: list[bytes]) -> _Tracks | None:
    blob = _blob(lines)
    found = _TRACK_RE.findall(blob)
    if len(found) != len(lines) or blob.count(b"\t") != 4 * len(lines):
        return None
    tids, lists = _columns(found, 2)
    joined = b",".join(lists)
    artists = _ints(_ARTIST_ID_RE.findall(joined))
    if len(artists) == len(lists):  # one artist per track, the usual case
        n_art = np.ones(len(lists), dtype=np.int64)
    else:
        n_art = np.fromiter(map(bytes.count, lists, repeat(b"{")), dtype=np.int64, count=len(lists))
    ids = _ints(tids)
    if len(artists) != int(n_art.sum()) or not _all_ok(ids, artists):
        return None
    return _Tracks(ids, n_art, artists)


def _fast_sessions(lines: list[bytes]) -> _Sessions | None:
    blob = _blob(lines)
    found = _SESSION_RE.findall(blob)
    if len(found) != len(lines):
        return None
    sids, stamps, users = _columns(found, 3)
    n_plays = np.fromiter(
        map(bytes.count, lines, repeat(_TRACK_ID)), dtype=np.int64, count=len(lines)
    )
    total = int(n_plays.sum())
    if blob.count(b"\t") != 3 * len(lines):
        return None
    tracks = _TRACK_ID_RE.findall(blob)
    # Every '"track","id":' is followed by an id (so each line's ids are its own), and the braces
    # balance: one each for the properties, the linked JSON, the user and every object.
    braces = total + 3 * len(lines)
    if len(tracks) != total or blob.count(b"{") != braces or blob.count(b"}") != braces:
        return None
    sid_arr, user_arr, track_arr = _ints(sids), _ints(users), _ints(tracks)
    if not _all_ok(sid_arr, user_arr, track_arr):
        return None
    return _Sessions(sid_arr, _ints(stamps), user_arr, n_plays, track_arr)


def _fast_csv_sessions(lines: list[bytes]) -> _Sessions | None:
    found = _CSV_SESSION_RE.findall(_blob(lines))
    if len(found) != len(lines):
        return None
    sids, users, stamps, quoted, plain = _columns(found, 5)
    lists = [q or p for q, p in zip(quoted, plain, strict=True)]
    n_items = np.fromiter(
        (s.count(b",") + 1 if s else 0 for s in lists), dtype=np.int64, count=len(lists)
    )
    nonempty = [s for s in lists if s]
    items = (
        np.fromstring(b",".join(nonempty), dtype=np.int64, sep=",")
        if nonempty
        else np.empty(0, dtype=np.int64)
    )
    sid_arr, user_arr = _ints(sids), _ints(users)
    if len(items) != int(n_items.sum()) or not _all_ok(sid_arr, user_arr, items):
        return None
    return _Sessions(sid_arr, _ints(stamps), user_arr, n_items, items)


def _fast_hetrec_plays(lines: list[bytes]) -> _Weights | None:
    found = _HETREC_PLAY_RE.findall(_blob(lines))
    if len(found) != len(lines):
        return None
    u, a, w = _columns(found, 3)
    users, artists, weights = _ints(u), _ints(a), _ints(w)
    if not _all_ok(users, artists) or (len(weights) and weights.min() < 1):
        return None
    return _Weights(users, artists, weights)


def _build_named(recs: list[tuple[int, bytes]], need_names: bool) -> _Named:
    return _Named(
        np.fromiter((r[0] for r in recs), dtype=np.int64, count=len(recs)),
        [r[1] for r in recs] if need_names else None,
    )


def _build_tracks(recs: list[tuple[int, list[int]]]) -> _Tracks:
    return _Tracks(
        np.array([r[0] for r in recs], dtype=np.int64),
        np.array([len(r[1]) for r in recs], dtype=np.int64),
        np.array([a for r in recs for a in r[1]], dtype=np.int64),
    )


def _build_sessions(recs: list[tuple[int, int, int, list[int]]]) -> _Sessions:
    return _Sessions(
        np.array([r[0] for r in recs], dtype=np.int64),
        np.array([r[1] for r in recs], dtype=np.int64),
        np.array([r[2] for r in recs], dtype=np.int64),
        np.array([len(r[3]) for r in recs], dtype=np.int64),
        np.array([t for r in recs for t in r[3]], dtype=np.int64),
    )


def _build_weights(recs: list[tuple[int, int, int]]) -> _Weights:
    arr = np.array(recs, dtype=np.int64).reshape(-1, 3)
    return _Weights(arr[:, 0].copy(), arr[:, 1].copy(), arr[:, 2].copy())


# --------------------------------------------------------------------------------------------------
# The chunked reader


@dataclass
class _Source:
    key: str  # the report's per-file key
    path: Path
    fast: Callable[[list[bytes]], Any]
    slow: Callable[[bytes], Any]
    build: Callable[[list], Any]
    header: str | None = None  # expected header line (compared case-insensitively)
    sep: str = "\t"


def _check_header(src: _Source, line: bytes) -> None:
    try:
        text = line.decode("utf-8").lstrip("\ufeff").strip()
    except UnicodeDecodeError:
        text = repr(line[:60])
    found = [_unquote_field(f).lower() for f in text.split(src.sep)]
    expected = [f.lower() for f in src.header.split(src.sep)]
    if found != expected:
        raise DataFormatError(
            src.path, 1, f"expected the header {src.header!r}, found {text[:80]!r}"
        )


BLOCK_BYTES = 4 << 20
"""The fast path works on blocks of about this many bytes, so that its passes stay in cache."""


def _blocks(lines: list[bytes]) -> Iterator[tuple[int, list[bytes]]]:
    """Split a chunk into runs of whole lines of about BLOCK_BYTES: (offset, lines)."""
    sizes = np.cumsum(np.fromiter(map(len, lines), dtype=np.int64, count=len(lines)))
    if len(lines) <= 1 or sizes[-1] <= BLOCK_BYTES:
        yield 0, lines
        return
    cuts = np.searchsorted(sizes, np.arange(BLOCK_BYTES, sizes[-1], BLOCK_BYTES), side="right")
    bounds = np.unique(np.concatenate(([0], cuts, [len(lines)])))
    for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        yield a, lines[a:b]


def _parse_block(
    src: _Source, lines: list[bytes], start: int, report: ReadReport, errors: str
) -> Any:
    """The fast path, else line by line (``start`` is the 1-based number of the first line)."""
    result = src.fast(lines)
    if result is not None:
        return result
    report.slow_path_lines += len(lines)
    recs = []
    for i, line in enumerate(lines):
        if not line.strip(_TRIM):
            continue
        try:
            recs.append(src.slow(line))
        except _LineError as e:
            if errors == "raise":
                raise DataFormatError(src.path, start + i, e.reason) from None
            report.skipped_by_file[src.key] += 1
    return src.build(recs)


def _chunks(
    src: _Source, report: ReadReport, errors: str, chunk_lines: int, progress: bool
) -> Iterator[Any]:
    """Read ``src.path`` ``chunk_lines`` lines at a time; yield parsed blocks of each chunk."""
    report.skipped_by_file.setdefault(src.key, 0)
    size = src.path.stat().st_size
    with (
        open(src.path, "rb") as f,
        tqdm(
            total=size,
            unit="B",
            unit_scale=True,
            desc=src.path.name,
            disable=not progress,
            file=sys.stderr,
        ) as bar,
    ):
        lineno = 0
        if src.header is not None:
            first = f.readline()
            lineno = 1
            if not first:
                raise DataFormatError(
                    src.path, 1, f"file is empty; expected the header {src.header!r}"
                )
            _check_header(src, first)
        pos = f.tell()
        while True:
            lines = list(islice(f, chunk_lines))
            if not lines:
                break
            if lineno == 0 and lines[0].startswith(b"\xef\xbb\xbf"):
                lines[0] = lines[0][3:]
            for offset, block in _blocks(lines):
                yield _parse_block(src, block, lineno + offset + 1, report, errors)
            lineno += len(lines)
            now = f.tell()
            bar.update(now - pos)
            pos = now


def _first_wins(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct ids and, for each, the position of its first occurrence."""
    order = np.argsort(ids, kind="stable")
    s = ids[order]
    first = np.ones(len(s), dtype=bool)
    first[1:] = s[1:] != s[:-1]
    return s[first], order[first]


def _read_named(
    src: _Source, report: ReadReport, errors: str, chunk_lines: int, progress: bool, names: bool
) -> tuple[np.ndarray, list[bytes] | None]:
    """Read a persons/artists file: distinct ids (sorted, first line wins) and their raw names."""
    id_parts, name_parts = [], []
    for chunk in _chunks(src, report, errors, chunk_lines, progress):
        id_parts.append(chunk.ids)
        if names:
            name_parts.extend(chunk.names)
    ids = np.concatenate(id_parts) if id_parts else np.empty(0, dtype=np.int64)
    uniq, first = _first_wins(ids)
    report.duplicate_person_ids += len(ids) - len(uniq)
    report.persons_read = len(uniq)
    return uniq, ([name_parts[i] for i in first] if names else None)


class _TrackArtists:
    """tracks.idomaar as CSR: distinct track id -> its artists (first line of an id wins)."""

    def __init__(self, tracks: _Tracks) -> None:
        self.ids, keep = _first_wins(tracks.ids)
        self.duplicates = len(tracks.ids) - len(self.ids)
        line_start = _excl_cumsum(tracks.n_artists)
        self.counts = tracks.n_artists[keep]
        self.offsets = _excl_cumsum(self.counts)
        total = int(self.counts.sum())
        src = np.repeat(line_start[keep] - self.offsets, self.counts) + np.arange(total)
        self.artists = tracks.artists[src]
        self.single = bool(len(self.counts) == 0 or self.counts.max() == 1)
        self.max_id = int(self.ids[-1]) if len(self.ids) else -1
        self.dense: np.ndarray | None = None
        if self.max_id < 4 * len(self.ids) + 1_000_000:
            self.dense = np.full(self.max_id + 1, -1, dtype=np.int32)
            self.dense[self.ids] = np.arange(len(self.ids), dtype=np.int32)

    def positions(self, track_ids: np.ndarray) -> np.ndarray:
        """Row of each track id, -1 when the track is unknown."""
        if self.dense is not None:
            pos = np.full(len(track_ids), -1, dtype=np.int64)
            ok = track_ids <= self.max_id
            pos[ok] = self.dense[track_ids[ok]]
            return pos
        if len(self.ids) == 0:
            return np.full(len(track_ids), -1, dtype=np.int64)
        p = np.minimum(np.searchsorted(self.ids, track_ids), len(self.ids) - 1)
        return np.where(self.ids[p] == track_ids, p, -1)

    def expand(self, track_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        """(play index, artist id) for each artist of each known track, and #unknown plays."""
        pos = self.positions(track_ids)
        known = pos >= 0
        idx = np.flatnonzero(known)
        p = pos[known]
        unknown = len(track_ids) - len(idx)
        if self.single:
            return idx, self.artists[self.offsets[p]], unknown
        cnt = self.counts[p]
        total = int(cnt.sum())
        within = np.arange(total) - np.repeat(_excl_cumsum(cnt), cnt)
        return np.repeat(idx, cnt), self.artists[np.repeat(self.offsets[p], cnt) + within], unknown


class _PairCounter:
    """Sums counts per int64 key, merging chunk results now and then (memory ~ distinct keys)."""

    def __init__(self) -> None:
        self.keys = np.empty(0, dtype=np.int64)
        self.counts = np.empty(0, dtype=np.int64)
        self.pending: list[tuple[np.ndarray, np.ndarray]] = []
        self.n_pending = 0

    def add(self, keys: np.ndarray, counts: np.ndarray) -> None:
        self.pending.append((keys, counts))
        self.n_pending += len(keys)
        if self.n_pending > max(4_000_000, len(self.keys)):
            self._merge()

    def _merge(self) -> None:
        if not self.pending:
            return
        k = np.concatenate([self.keys] + [p[0] for p in self.pending])
        c = np.concatenate([self.counts] + [p[1] for p in self.pending])
        self.pending, self.n_pending = [], 0
        order = np.argsort(k)
        k, c = k[order], c[order]
        if len(k) == 0:
            self.keys, self.counts = k, c
            return
        starts = np.flatnonzero(np.concatenate(([True], k[1:] != k[:-1])))
        self.keys, self.counts = k[starts], np.add.reduceat(c, starts)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        self._merge()
        return self.keys, self.counts


_LOW32 = np.int64(0xFFFFFFFF)


def _plays_frame(keys: np.ndarray, counts: np.ndarray, report: ReadReport) -> pd.DataFrame:
    df = pd.DataFrame(
        {
            "user_id": (keys >> 32).astype(np.int64),
            "artist_id": (keys & _LOW32).astype(np.int64),
            "plays": counts.astype(np.int64),
        }
    )
    df.attrs["report"] = report.as_dict()
    return df


def _count_unknown_artists(
    keys: np.ndarray, counts: np.ndarray, known: np.ndarray, report: ReadReport
) -> None:
    artists = keys & _LOW32
    if len(known) == 0:
        report.plays_unknown_artist = int(counts.sum())
        return
    p = np.minimum(np.searchsorted(known, artists), len(known) - 1)
    report.plays_unknown_artist = int(counts[known[p] != artists].sum())


# --------------------------------------------------------------------------------------------------
# Sources per form


def _persons_source(folder: Path, layout: str, names: bool) -> _Source:
    if layout == "idomaar":
        return _Source(
            "persons",
            folder / LAYOUT_FILES["idomaar"][0],
            lambda lines: _fast_persons(lines, names),
            _slow_person,
            lambda recs: _build_named(recs, names),
        )
    if layout == "csv":
        return _Source(
            "persons",
            folder / LAYOUT_FILES["csv"][0],
            lambda lines: _fast_csv_persons(lines, names),
            _slow_csv_person,
            lambda recs: _build_named(recs, names),
            header=_CSV_PERSONS_HEADER,
            sep=";",
        )
    return _Source(
        "artists",
        folder / "artists.dat",
        lambda lines: _fast_hetrec_artists(lines, names),
        _slow_hetrec_artist,
        lambda recs: _build_named(recs, names),
        header=_HETREC_ARTISTS_HEADER,
    )


def _scan_sessions(
    src: _Source,
    tracks: _TrackArtists | None,
    report: ReadReport,
    errors: str,
    chunk_lines: int,
    progress: bool,
) -> tuple[_PairCounter, pd.DataFrame]:
    pairs = _PairCounter()
    cols: dict[str, list[np.ndarray]] = {
        k: [] for k in ("session_id", "user_id", "timestamp", "n_plays", "n_artists")
    }
    for chunk in _chunks(src, report, errors, chunk_lines, progress):
        n_s = len(chunk.users)
        report.sessions_read += n_s
        report.plays_read += len(chunk.items)
        report.empty_sessions += int(np.count_nonzero(chunk.n_items == 0))
        session_of_item = np.repeat(np.arange(n_s, dtype=np.int64), chunk.n_items)
        if tracks is None:
            sess, artists = session_of_item, chunk.items
        else:
            idx, artists, unknown = tracks.expand(chunk.items)
            report.plays_unknown_track += unknown
            sess = session_of_item[idx]
        uniq, cnt = np.unique((sess << 32) | artists, return_counts=True)
        s = uniq >> 32
        pairs.add((chunk.users[s] << 32) | (uniq & _LOW32), cnt)
        cols["session_id"].append(chunk.session_ids)
        cols["user_id"].append(chunk.users)
        cols["timestamp"].append(chunk.timestamps)
        cols["n_plays"].append(np.bincount(sess, minlength=n_s).astype(np.int64))
        cols["n_artists"].append(np.bincount(s, minlength=n_s).astype(np.int64))
    sessions = pd.DataFrame(
        {
            k: (np.concatenate(v) if v else np.empty(0, dtype=np.int64)).astype(np.int64)
            for k, v in cols.items()
        }
    )
    report.duplicate_session_ids = len(sessions) - len(np.unique(sessions["session_id"].to_numpy()))
    return pairs, sessions


def _scan_hetrec(
    folder: Path, report: ReadReport, errors: str, chunk_lines: int, progress: bool
) -> tuple[np.ndarray, np.ndarray]:
    src = _Source(
        "user_artists",
        folder / "user_artists.dat",
        _fast_hetrec_plays,
        _slow_hetrec_play,
        _build_weights,
        header=_HETREC_PLAYS_HEADER,
    )
    pairs = _PairCounter()
    for chunk in _chunks(src, report, errors, chunk_lines, progress):
        report.plays_read += int(chunk.weights.sum())
        pairs.add((chunk.users << 32) | chunk.artists, chunk.weights)
    return pairs.result()


def scan_plays(
    data_dir: str | os.PathLike,
    *,
    layout: str = "auto",
    errors: str = "raise",
    progress: bool = False,
    chunk_lines: int = 100_000,
) -> PlaysScan:
    """Stream a data folder once: per (user, artist) play counts, per-session stats, a report.

    ``layout`` is ``"auto"`` (see :func:`detect_layout`), ``"idomaar"``, ``"csv"`` or ``"hetrec"``.
    ``errors="raise"`` stops at the first malformed line with a :class:`DataFormatError` naming the
    file, the line and what was expected; ``errors="skip"`` skips such lines and counts them in the
    report. Files are read ``chunk_lines`` lines at a time; the result does not depend on it.
    """
    _check_errors(errors)
    if chunk_lines < 1:
        raise ValueError(f"chunk_lines must be at least 1, not {chunk_lines}")
    folder, layout = _resolve(data_dir, layout)
    report = ReadReport(layout=layout)
    known, _ = _read_named(
        _persons_source(folder, layout, names=False), report, errors, chunk_lines, progress, False
    )
    if layout == "hetrec":
        keys, counts = _scan_hetrec(folder, report, errors, chunk_lines, progress)
        _count_unknown_artists(keys, counts, known, report)
        return PlaysScan(_plays_frame(keys, counts, report), None, report)
    if layout == "idomaar":
        tsrc = _Source(
            "tracks", folder / LAYOUT_FILES["idomaar"][1], _fast_tracks, _slow_track, _build_tracks
        )
        parts = list(_chunks(tsrc, report, errors, chunk_lines, progress))
        merged = _Tracks(
            *(
                np.concatenate([getattr(p, a) for p in parts])
                if parts
                else np.empty(0, dtype=np.int64)
                for a in ("ids", "n_artists", "artists")
            )
        )
        del parts
        tracks: _TrackArtists | None = _TrackArtists(merged)
        del merged
        report.duplicate_track_ids = tracks.duplicates
        report.tracks_read = len(tracks.ids)
        ssrc = _Source(
            "sessions",
            folder / LAYOUT_FILES["idomaar"][2],
            _fast_sessions,
            _slow_session,
            _build_sessions,
        )
    else:
        tracks = None
        ssrc = _Source(
            "sessions",
            folder / LAYOUT_FILES["csv"][1],
            _fast_csv_sessions,
            _slow_csv_session,
            _build_sessions,
            header=_CSV_SESSIONS_HEADER,
            sep=";",
        )
    pairs, sessions = _scan_sessions(ssrc, tracks, report, errors, chunk_lines, progress)
    keys, counts = pairs.result()
    _count_unknown_artists(keys, counts, known, report)
    sessions.attrs["report"] = report.as_dict()
    return PlaysScan(_plays_frame(keys, counts, report), sessions, report)


def read_plays(
    data_dir: str | os.PathLike,
    *,
    layout: str = "auto",
    errors: str = "raise",
    progress: bool = False,
) -> pd.DataFrame:
    """Play counts per user and artist: int64 ``user_id, artist_id, plays`` (plays >= 1).

    One row per (user, artist) pair with at least one play, sorted by (user_id, artist_id), with a
    default RangeIndex; ids are as in the files. ``df.attrs["report"]`` holds the
    :class:`ReadReport` as a flat dict. See :func:`scan_plays` for ``layout`` and ``errors``.
    """
    return scan_plays(data_dir, layout=layout, errors=errors, progress=progress).plays


def read_artists(
    data_dir: str | os.PathLike,
    *,
    layout: str = "auto",
    errors: str = "raise",
) -> pd.DataFrame:
    """Artist names: ``artist_id`` (int64, unique, sorted) and ``name`` (str).

    30Music names are URL-encoded and decoded with ``urllib.parse.unquote_plus``; HetRec names are
    plain UTF-8 and kept as they are. Duplicate ids: the first line wins (counted in
    ``df.attrs["report"]``).
    """
    _check_errors(errors)
    folder, layout = _resolve(data_dir, layout)
    report = ReadReport(layout=layout)
    ids, raw = _read_named(
        _persons_source(folder, layout, names=True), report, errors, 100_000, False, True
    )
    texts = [b.decode("utf-8", errors="replace") for b in raw or []]
    if layout != "hetrec":
        texts = [unquote_plus(t) for t in texts]
    df = pd.DataFrame({"artist_id": ids.astype(np.int64), "name": pd.Series(texts, dtype=str)})
    df.attrs["report"] = report.as_dict()
    return df
