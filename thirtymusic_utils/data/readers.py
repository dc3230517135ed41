"""Readers for the 30Music dataset (idomaar and CSV forms) and the HetRec 2011 Last.fm 2K folder.

The 30Music ``sessions.idomaar`` file is several GB, so every file is streamed in blocks of whole
lines of about :data:`BLOCK_BYTES` (at most ``chunk_lines`` lines; ``.gz``, ``.bz2`` and ``.xz``
files too, decompressed on the fly). A block is split into lines only when it needs the slow path.
A block first goes through a *fast path*: one compiled regex over the whole block checks each line against the documented canonical form, the JSON included (every key,
every value: an integer, a number, a string without escapes or null, as the format has them), and
numpy turns the ids into int arrays. Whenever the fast path cannot account for every line of a block
(a malformed line, or a legal variant such as reordered JSON keys, extra spaces or escapes), the
block is re-read by a *slow path* that parses each line with ``json``. The slow path defines what a
valid line is; the fast path accepts only lines the slow path accepts, with equal values (property
tests check this on random mutations), so the result never depends on a line's neighbours or on
``chunk_lines``. A malformed line raises :class:`DataFormatError` naming the file, the 1-based line
and what was expected (``errors="raise"``), or is skipped and counted (``errors="skip"``).
Whitespace-only lines carry no data and are ignored.

Nothing is lost or invented silently:

* an input with no records (an empty file), or with more than ``max_unknown_share`` (default
  :data:`MAX_UNKNOWN_SHARE`, 5%) of its plays naming tracks or artists that the entity files lack
  (a truncated ``tracks.idomaar``), is a :class:`DataFormatError` with ``errors="raise"`` and a
  :class:`ReadWarning` with ``errors="skip"``, which also counts it in the :class:`ReadReport`;
* a file of which not one line could be read (compressed bytes under a plain name, CR-only line
  endings, UTF-16, another form's file) is an error in both modes, saying what the bytes look like;
* bytes that are not UTF-8, raw or URL-encoded in a name, are an error with ``errors="raise"``; with
  ``errors="skip"`` the line is read with U+FFFD in their place and counted (``not_utf8_lines``);
* a CSV or HetRec file whose last line has no newline may have been cut mid-value (an id or a
  weight cut short looks valid): that line is an error, or skipped and counted
  (``possibly_truncated_lines``). idomaar lines end in JSON and are checked like any other.

Files of at least :data:`PARALLEL_MIN_BYTES` (the full tracks and sessions files) have their fast
path run in worker processes (one less than the usable CPUs, at most 4), and in the main process
whenever every worker is busy, while the main process reads and counts; the result is the same
(``THIRTYMUSIC_READ_WORKERS`` sets their number, 0 turns them off).

Memory grows with the number of distinct (user, artist) pairs, with the number of sessions (the
per-session frame of :func:`scan_plays`) and with ``tracks.idomaar`` (the track -> artists map),
never with the size of the sessions file.
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import os
import re
import sys
import warnings
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from itertools import repeat
from operator import itemgetter
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote_plus, unquote_to_bytes

import numpy as np
import pandas as pd
from tqdm import tqdm

__all__ = [
    "LAYOUT_FILES",
    "MAX_UNKNOWN_SHARE",
    "DataFormatError",
    "PlaysScan",
    "ReadReport",
    "ReadWarning",
    "detect_layout",
    "read_artists",
    "read_plays",
    "scan_plays",
]

MAX_ID = 2**31 - 1
"""Largest id accepted for users, artists, tracks and sessions (ids are packed into int64 keys)."""

MAX_UNKNOWN_SHARE = 0.05
"""Default largest share of plays that may name tracks (or artists) absent from the entity files.

Above it the entity file is taken to be truncated or from another copy of the data: an error with
``errors="raise"``, a warning with ``errors="skip"``. The real data and the synthetic stand-in stay
far below it (the tiny synthetic profile: 1.3% of plays to missing artists, 0.4% to missing tracks);
a ``tracks.idomaar`` cut in half sends about half of the plays to missing tracks.
"""

LAYOUT_FILES: dict[str, tuple[str, ...]] = {
    "idomaar": (
        "entities/persons.idomaar",
        "entities/tracks.idomaar",
        "relations/sessions.idomaar",
    ),
    "csv": ("entities/persons.csv", "relations/sessions_short.csv"),
    "hetrec": ("user_artists.dat", "artists.dat"),
}
"""The files each supported form needs, relative to the data folder (each may also be compressed:
the same name ending in ``.gz``, ``.bz2`` or ``.xz``)."""

COMPRESSED_SUFFIXES = (".gz", ".bz2", ".xz")
"""Suffixes of compressed input files, read transparently (and streamed) in this order of preference
after the plain file."""

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
# Errors, warnings and the report


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


class ReadWarning(UserWarning):
    """What ``errors="raise"`` would have raised, with ``errors="skip"``: an empty input, a share of
    plays to unknown tracks or artists above the limit, malformed lines skipped in a file."""


class _LineError(Exception):
    """Raised by the per-line parsers; the reader adds the file and the line number."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _NotUtf8(_LineError):
    """The line (or a URL-encoded name in it) is not valid UTF-8; skip mode retries it leniently."""


@dataclass
class ReadReport:
    """What a read saw: counts of lines, plays, skips and anomalies (all ints) and the layout.

    ``plays_read`` counts plays as the files hold them: track plays (objects) in the idomaar
    form, ``ArtistsID`` entries in the CSV form, summed weights in HetRec. Plays of tracks absent
    from ``tracks.idomaar`` are dropped (``plays_unknown_track``); artist plays credited to ids
    absent from the persons/artists file are kept (``plays_unknown_artist``). Duplicate person and
    track ids: the first line wins; sessions sharing an id are all kept
    (``duplicate_session_ids`` counts the extra ones). ``empty_sessions`` counts sessions with no
    plays in the file (no objects, empty ``ArtistsID``); ``numtracks_mismatch`` idomaar sessions
    whose ``numtracks`` property is missing or differs from the number of objects (kept as they
    are). ``slow_path_lines`` counts lines parsed one by one with ``json`` (a diagnostic: 0 on files
    in the documented form). With ``errors="skip"``: ``not_utf8_lines`` lines read with U+FFFD in
    place of bytes that are not UTF-8; ``possibly_truncated_lines`` last lines without a newline
    that may be cut short (skipped, so also in ``skipped_lines``); ``empty_files`` inputs without a
    record; ``warnings`` the messages warned (not in :meth:`as_dict`).
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
    numtracks_mismatch: int = 0
    slow_path_lines: int = 0
    not_utf8_lines: int = 0
    possibly_truncated_lines: int = 0
    empty_files: int = 0
    skipped_by_file: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def skipped_lines(self) -> int:
        """Malformed lines skipped over all files (``errors="skip"``)."""
        return sum(self.skipped_by_file.values())

    def as_dict(self) -> dict[str, int | str]:
        """Flat dict: every count, ``skipped_lines`` and ``skipped_lines_<file>`` per file read."""
        out: dict[str, int | str] = {}
        for f in fields(self):
            if f.name not in ("skipped_by_file", "warnings"):
                out[f.name] = getattr(self, f.name)
        out["skipped_lines"] = self.skipped_lines
        for key, n in self.skipped_by_file.items():
            out[f"skipped_lines_{key}"] = int(n)
        return out


def _fail_or_warn(
    path: Path, line: int | None, reason: str, errors: str, report: ReadReport
) -> None:
    """Raise the DataFormatError (``errors="raise"``) or warn it and keep it in the report."""
    err = DataFormatError(path, line, reason)
    if errors == "raise":
        raise err
    report.warnings.append(str(err))
    warnings.warn(str(err), ReadWarning, stacklevel=4)


@dataclass
class PlaysScan:
    """The result of :func:`scan_plays`.

    ``plays``: as :func:`read_plays`. ``sessions``: one row per session read, in file order, int64
    columns ``session_id, user_id, timestamp`` (unix seconds), ``n_plays`` (artist plays: one per
    artist of each known track played, as the CSV ``ArtistsID`` list holds them, so that
    ``sessions.n_plays.sum() == plays.plays.sum()``) and ``n_artists`` (distinct artists among
    them); None for HetRec, which has no sessions. ``first_plays``: each artist's first play, as
    :func:`thirtymusic_utils.data.order.first_appearance_keys` reads it (``artist_id, first_user,
    first_position``), gathered on the same pass; None when a user id lies outside ``[0, 2**23)``.
    ``pair_first``: each (user, artist) pair's first play, as
    :func:`thirtymusic_utils.data.order.pair_first_positions` reads it, on the same pass and terms.
    """

    plays: pd.DataFrame
    sessions: pd.DataFrame | None
    report: ReadReport
    first_plays: pd.DataFrame | None = None
    pair_first: pd.DataFrame | None = None


# --------------------------------------------------------------------------------------------------
# Layout detection


def _probe(path: Path) -> bool | None:
    """Whether ``path`` is a file; None when a folder on the way may not be looked into."""
    try:
        return path.is_file()
    except PermissionError:
        return None


def _find(folder: Path, rel: str) -> Path | None:
    """The file holding ``rel``: the plain file, else its ``.gz``, ``.bz2`` or ``.xz`` form."""
    for suffix in ("", *COMPRESSED_SUFFIXES):
        path = folder / (rel + suffix)
        if _probe(path):
            return path
    return None


def _missing(folder: Path, layout: str) -> list[str]:
    return [rel for rel in LAYOUT_FILES[layout] if _find(folder, rel) is None]


def _denied(folder: Path, layout: str) -> list[str]:
    """The files of ``layout`` that may exist but sit in a folder that may not be looked into."""
    return [rel for rel in LAYOUT_FILES[layout] if _probe(folder / rel) is None]


def _expected_files_text() -> str:
    return "; ".join(
        f"{_LAYOUT_NAMES[name]}: {', '.join(files)}" for name, files in LAYOUT_FILES.items()
    )


def detect_layout(data_dir: str | os.PathLike) -> str:
    """Return ``"idomaar"``, ``"csv"`` or ``"hetrec"``: the form of the data in ``data_dir``.

    A folder holding both 30Music forms is read as idomaar. Each file may be compressed
    (``sessions.idomaar.gz``). A missing folder raises FileNotFoundError; a folder holding none of
    the forms raises DataFormatError (a ValueError) listing the files each form needs, or
    PermissionError naming the files that may be there but cannot be looked at.
    """
    folder = Path(data_dir)
    if not folder.exists():
        raise FileNotFoundError(f"data folder {folder} does not exist")
    if not folder.is_dir():
        raise NotADirectoryError(f"data folder {folder} is not a folder")
    for layout in LAYOUT_FILES:
        if not _missing(folder, layout):
            return layout
    for layout in LAYOUT_FILES:
        denied = _denied(folder, layout)
        if denied and set(_missing(folder, layout)) <= set(denied):
            raise PermissionError(
                f"{folder} may hold the {_LAYOUT_NAMES[layout]}, but permission is denied to look "
                f"at {', '.join(denied)}"
            )
    partial = [
        f"{_LAYOUT_NAMES[name]} lacks {', '.join(_missing(folder, name))}"
        for name, files in LAYOUT_FILES.items()
        if len(_missing(folder, name)) < len(files)
    ]
    found = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    reason = (
        "no 30Music or HetRec data found; expected the files of one of these forms (each may "
        "also be compressed, ending in .gz, .bz2 or .xz): "
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
    denied = _denied(folder, layout)
    if missing and set(missing) <= set(denied):
        raise PermissionError(
            f"permission is denied to look at {', '.join(missing)} in {folder} (the "
            f"{_LAYOUT_NAMES[layout]})"
        )
    if missing:
        raise FileNotFoundError(
            f"{folder} lacks {', '.join(missing)} (the {_LAYOUT_NAMES[layout]} needs "
            f"{', '.join(LAYOUT_FILES[layout])}, each possibly ending in .gz, .bz2 or .xz)"
        )
    return folder, layout


def _path(folder: Path, rel: str) -> Path:
    """The file of ``rel`` found by :func:`_find` (the layout was resolved, so it exists)."""
    found = _find(folder, rel)
    return found if found is not None else folder / rel


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


def _n_repeats(values: np.ndarray) -> int:
    """How many values repeat an earlier one (a sort: numpy's hashed unique is far slower)."""
    s = np.sort(values)
    return int(np.count_nonzero(s[1:] == s[:-1]))


def _excl_cumsum(counts: np.ndarray) -> np.ndarray:
    out = np.zeros(len(counts), dtype=np.int64)
    if len(counts) > 1:
        np.cumsum(counts[:-1], out=out[1:])
    return out


# The fast-path patterns match the canonical forms of the real files (as documented) exactly, the
# JSON included: every key in its place and every value in the JSON grammar (an integer without
# leading zeros, a number, null, a string without escapes or control characters). JSON spacing
# variants, reordered keys, escapes, a TAB where the format has a space (or the reverse) are legal
# but go through the slow path, which parses them with ``json``; so whatever the fast path accepts,
# the slow path accepts with the same values. No repeat can cross a TAB or a newline, so a line
# cannot hide an extra field. Every pattern starts with "\n" (the chunk is joined as "\n" + lines,
# ending in "\n") so that the regex engine can jump to candidate positions with a literal search,
# and ends before the line's "\n". With as many matches as lines, each line is matched by exactly
# one match lying inside it. Where a pattern admits non-ASCII bytes (names), the block must also
# be valid UTF-8 (see _utf8_ok).
_NUM = rb"(\d{1,10})"  # an id field; the value is checked against MAX_ID after conversion
_TS = rb"(-?\d{1,18})"
_EOL = rb"[ \r]*(?=\n)"  # trailing spaces only: a trailing TAB would be one more field
_JID = rb"(?!0\d)\d{1,10}"  # a JSON id: no leading zeros, checked against MAX_ID
_JINT = rb"-?(?!0\d)\d{1,18}"
_JNUM = _JINT + rb"(?:\.\d{1,17})?"
_JSTR = rb'"[^"\\\x00-\x1f]*"'
_PLAY = (
    rb'\{"type":"track","id":' + _JID + rb',"playstart":' + _JINT + rb',"playtime":' + _JINT
    + rb',"playratio":(?:null|' + _JNUM + rb'),"action":(?:null|"[a-z_]{0,32}")\}'
)  # fmt: skip
# (?:...)*+ is possessive: a line that fails does not backtrack through its objects
_SESSION_RE = re.compile(
    rb"\nevent\.session\t" + _NUM + rb"\t" + _TS + rb'\t\{"numtracks":((?!0\d)\d{1,18}),'
    rb'"playtime":' + _JINT + rb'\} \{"subjects":\[\{"type":"user","id":(' + _JID + rb")\}\],"
    rb'"objects":\[(?:' + _PLAY + rb"(?:," + _PLAY + rb")*+)?\]\}" + _EOL
)
_TRACK_ID = b'"track","id":'
_TRACK_ID_RE = re.compile(rb'"track","id":(\d{1,10})')
_ARTIST_OBJ = rb'\{"type":"person","id":' + _JID + rb"\}"
_ARTIST_ID_RE = re.compile(rb'"id":(\d{1,10})')
_ENTITY = rb'\{"type":"[a-z_]{1,32}","id":' + _JINT + rb"\}"
_ENTITIES = rb"(?:null|\[(?:" + _ENTITY + rb"(?:," + _ENTITY + rb")*+)?\])"
_TRACK_RE = re.compile(
    rb"\ntrack\t" + _NUM + rb'\t-?\d{1,18}\t\{"duration":' + _JINT + rb',"playcount":' + _JINT
    + rb',"MBID":(?:null|' + _JSTR + rb'),"name":' + _JSTR + rb'\}\t\{"artists":\[('
    + _ARTIST_OBJ + rb"(?:," + _ARTIST_OBJ + rb')*+)\],"albums":' + _ENTITIES + rb',"tags":'
    + _ENTITIES + rb"\}" + _EOL
)  # fmt: skip
_PERSON_RE = re.compile(
    rb"\nperson\t" + _NUM + rb'\t-?\d{1,18}\t\{"MBID":(?:null|' + _JSTR + rb"), ?"
    rb'"name":"([^"\\\x00-\x1f]*)"\}\t\{\}' + _EOL
)
_CSV_PERSON_RE = re.compile(rb"\n" + _NUM + rb';("?)([^";\r\n]*)\2\r?(?=\n)')
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
_INT_RE = re.compile(r"-?\d+", re.ASCII)


def _blob(data: bytes) -> bytes:
    """A block of whole lines framed by newlines (see the patterns above)."""
    return b"\n" + data if data.endswith(b"\n") else b"\n" + data + b"\n"


def _n_lines(blob: bytes) -> int:
    """The number of lines of a framed block."""
    return blob.count(b"\n") - 1


def _split_lines(data: bytes) -> list[bytes]:
    """A block's lines as iterating over the file gives them (split after each LF only)."""
    return io.BytesIO(data).readlines()


def _utf8_ok(blob: bytes) -> bool:
    """Whether ``blob`` is valid UTF-8 (a fast ASCII check first)."""
    if blob.isascii():
        return True
    try:
        blob.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _name_utf8_ok(name: bytes | str) -> bool:
    """Whether a URL-encoded 30Music name decodes to valid UTF-8 (``%E9`` alone does not)."""
    if ("%" if isinstance(name, str) else b"%") not in name:
        return True
    try:
        unquote_to_bytes(name).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


_TRIM = b" \t\r\n"


# --------------------------------------------------------------------------------------------------
# Slow path: one line at a time, with precise messages. Each parser takes ``strict``: False only
# when skip mode retries a line that was not valid UTF-8, which is then read with U+FFFD.


def _text(line: bytes, strict: bool = True) -> str:
    try:
        return line.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError as e:
        if not strict:
            return line.decode("utf-8", errors="replace").rstrip("\r\n")
        raise _NotUtf8(
            f"line is not valid UTF-8 (byte {e.start + 1}: {line[e.start : e.start + 1]!r})"
        ) from None


def _name_bytes(name: str, strict: bool, url_encoded: bool = True) -> bytes:
    """A name as UTF-8 bytes. 30Music names are URL-encoded UTF-8, so ``%E9`` alone (Latin-1) is
    not valid; nor is a lone surrogate (``\\ud800`` in JSON). Lenient: kept, read as U+FFFD."""
    try:
        raw = name.encode("utf-8")
    except UnicodeEncodeError:
        if strict:
            raise _NotUtf8(f"name {name[:60]!r} is not valid UTF-8 (a lone surrogate)") from None
        return name.encode("utf-8", errors="replace")
    if strict and url_encoded and not _name_utf8_ok(raw):
        raise _NotUtf8(f"name {name[:60]!r} is not valid UTF-8 once URL-decoded")
    return raw


def _id_field(value: str, what: str) -> int:
    if not value.isascii() or not value.isdigit():
        raise _LineError(f"{what} {value[:40]!r} is not a non-negative integer")
    n = int(value)
    if n > MAX_ID:
        raise _LineError(f"{what} {value} is out of range (at most {MAX_ID})")
    return n


def _int_field(value: str, what: str) -> int:
    stripped = value.strip()
    if not _INT_RE.fullmatch(stripped) or len(stripped.lstrip("-")) > 18:
        raise _LineError(f"{what} {value[:40]!r} is not an integer (at most 18 digits)")
    return int(stripped)


def _json_id(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_ID:
        shown = json.dumps(value) if not isinstance(value, int) or value < 10**30 else "huge"
        raise _LineError(f"{what} is {shown[:60]}, expected an integer id 0..{MAX_ID}")
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
    except RecursionError:
        raise _LineError(f"{what} is nested too deeply to be read") from None
    except ValueError as e:  # e.g. an integer of more than 4300 digits
        raise _LineError(f"{what} is not valid JSON ({str(e)[:80]})") from None
    if not isinstance(obj, dict):
        raise _LineError(f"{what} must be a JSON object")
    return obj


_IDOMAAR_FIELDS = (
    "5 fields (type, id, timestamp, properties JSON, linked JSON) separated by TAB, "
    "the last one or two possibly by one space instead"
)
_TWO_JSON_RE = re.compile(r"(\{[^{}]*\})\s+(\{.*)", re.S)


def _idomaar_fields(line: bytes, record: str, strict: bool) -> tuple[int, int, dict, dict]:
    """Split an idomaar line into (id, timestamp, properties JSON, linked JSON)."""
    text = _text(line, strict).lstrip("\ufeff")
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
    props = _load_json(parts[3], "properties JSON")
    return rid, ts, props, _load_json(parts[4], "linked JSON")


def _slow_person(line: bytes, strict: bool = True) -> tuple[int, bytes]:
    pid, _, props, _ = _idomaar_fields(line, "person", strict)
    name = props.get("name")
    if not isinstance(name, str):
        raise _LineError(f"properties JSON has no string 'name' (found {json.dumps(name)[:40]})")
    mbid = props.get("MBID")
    if mbid is not None and not isinstance(mbid, str):
        raise _LineError(f"MBID must be null or a string, found {json.dumps(mbid)[:40]}")
    return pid, _name_bytes(name, strict)


def _slow_track(line: bytes, strict: bool = True) -> tuple[int, list[int]]:
    tid, _, _, linked = _idomaar_fields(line, "track", strict)
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


def _slow_session(line: bytes, strict: bool = True) -> tuple[int, int, int, list[int], bool]:
    """(session id, timestamp, user, track ids, whether numtracks is missing or disagrees)."""
    sid, ts, props, linked = _idomaar_fields(line, "event.session", strict)
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
        raise _LineError(
            f"linked.objects must be a list of tracks, found {json.dumps(objects)[:60]}"
        )
    tracks = []
    for k, o in enumerate(objects):
        if not isinstance(o, dict) or o.get("type") != "track":
            raise _LineError(f'linked.objects[{k}] is not a track {{"type":"track","id":N,...}}')
        tracks.append(_json_id(o.get("id"), f"linked.objects[{k}].id"))
    n = props.get("numtracks")
    mismatch = isinstance(n, bool) or not isinstance(n, int) or n != len(tracks)
    return sid, ts, uid, tracks, mismatch


def _split_fields(line: bytes, sep: str, n: int, names: str, strict: bool) -> list[str]:
    parts = _text(line, strict).split(sep)
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


_CSV_PERSON_QUOTED_RE = re.compile(r'([^;]*);(\s*"[^"]*"\s*)')


def _slow_csv_person(line: bytes, strict: bool = True) -> tuple[int, bytes]:
    text = _text(line, strict)
    parts = text.split(";")
    if len(parts) > 2:  # a ';' inside a quoted name is part of it; any other is one field more
        m = _CSV_PERSON_QUOTED_RE.fullmatch(text)
        if m is None:
            raise _LineError(f"expected 2 ';'-separated fields (ID;Name), found {len(parts)}")
        parts = [m.group(1), m.group(2)]
    if len(parts) != 2:
        raise _LineError("expected 2 ';'-separated fields (ID;Name), found 1")
    pid, name = parts
    name = _unquote_field(name, strip=False)
    return _id_field(_unquote_field(pid), "ID"), _name_bytes(name, strict)


_CSV_LIST_RE = re.compile(r"\s*\d{1,10}\s*(?:,\s*\d{1,10}\s*)*", re.ASCII)


def _csv_artist_list(listed: str) -> np.ndarray:
    """The ArtistsID list as an int64 array (numpy, so that a 10 MB list stays cheap)."""
    if not listed:
        return np.empty(0, dtype=np.int64)
    if _CSV_LIST_RE.fullmatch(listed) is None:
        for k, a in enumerate(listed.split(",")):  # find the culprit for the message
            if not a.strip():
                raise _LineError(f"ArtistsID entry {k + 1} is empty in {listed[:60]!r}")
            _id_field(a.strip(), f"ArtistsID entry {k + 1}")
        raise _LineError(f"ArtistsID {listed[:60]!r} is not a list of artist ids")
    ids = np.fromstring(listed, dtype=np.int64, sep=",")
    big = np.flatnonzero(ids > MAX_ID)
    if len(big):
        k = int(big[0])
        raise _LineError(f"ArtistsID entry {k + 1} {ids[k]} is out of range (at most {MAX_ID})")
    return ids


def _slow_csv_session(line: bytes, strict: bool = True) -> tuple[int, int, int, np.ndarray, bool]:
    sid, uid, _, ts, artists = _split_fields(line, ";", 5, _CSV_SESSIONS_HEADER, strict)
    sid_n = _id_field(_unquote_field(sid), "ID")
    uid_n = _id_field(_unquote_field(uid), "UserId")
    ts_n = _int_field(_unquote_field(ts), "Timestamp (unix seconds)")
    return sid_n, ts_n, uid_n, _csv_artist_list(_unquote_field(artists)), False


def _slow_hetrec_play(line: bytes, strict: bool = True) -> tuple[int, int, int]:
    u, a, w = _split_fields(line, "\t", 3, _HETREC_PLAYS_HEADER.replace("\t", " "), strict)
    weight = _int_field(w, "weight")
    if not 1 <= weight < 10**18:
        raise _LineError(f"weight must be a positive play count, found {weight}")
    return _id_field(u.strip(), "userID"), _id_field(a.strip(), "artistID"), weight


def _slow_hetrec_artist(line: bytes, strict: bool = True) -> tuple[int, bytes]:
    parts = _text(line, strict).split("\t")
    if not 2 <= len(parts) <= 4:
        raise _LineError(
            f"expected 4 TAB-separated fields (id name url pictureURL), found {len(parts)}"
        )
    return _id_field(parts[0].strip(), "id"), _name_bytes(parts[1], strict, url_encoded=False)


# --------------------------------------------------------------------------------------------------
# Chunk results (the fast and the slow path build the same structures)


@dataclass
class _Named:
    ids: np.ndarray
    names: list[bytes] | None

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class _Tracks:
    ids: np.ndarray
    n_artists: np.ndarray
    artists: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class _Sessions:
    session_ids: np.ndarray
    timestamps: np.ndarray
    users: np.ndarray
    n_items: np.ndarray
    items: np.ndarray  # track ids (idomaar) or artist ids (CSV), session after session
    numtracks_mismatch: int = 0

    def __len__(self) -> int:
        return len(self.session_ids)


@dataclass
class _Weights:
    users: np.ndarray
    artists: np.ndarray
    weights: np.ndarray

    def __len__(self) -> int:
        return len(self.users)


def _all_ok(*arrays: np.ndarray) -> bool:
    return all(len(a) == 0 or int(a.max()) <= MAX_ID for a in arrays)


_ESCAPED_HIGH_RE = re.compile(rb"%[89A-Fa-f][0-9A-Fa-f]")  # a %-escape of a byte >= 0x80


def _names_ok(blob: bytes, names: list[bytes]) -> bool:
    """The URL-encoded names of a block the fast path matched decode as the slow path requires."""
    if _ESCAPED_HIGH_RE.search(blob) is None:  # only ASCII once decoded
        return True
    return all(_name_utf8_ok(n) for n in names if _ESCAPED_HIGH_RE.search(n))


def _fast_persons(data: bytes, need_names: bool) -> _Named | None:
    blob = _blob(data)
    found = _PERSON_RE.findall(blob)
    if len(found) != _n_lines(blob) or not _utf8_ok(blob):
        return None
    ids, names = _columns(found, 2)
    arr = _ints(ids)
    if not _all_ok(arr) or not _names_ok(blob, names):
        return None
    return _Named(arr, names if need_names else None)


def _fast_csv_persons(data: bytes, need_names: bool) -> _Named | None:
    blob = _blob(data)
    found = _CSV_PERSON_RE.findall(blob)
    if len(found) != _n_lines(blob) or not _utf8_ok(blob):
        return None
    arr = _ints([f[0] for f in found])
    names = [f[2] for f in found]
    if not _all_ok(arr) or not _names_ok(blob, names):
        return None
    return _Named(arr, names if need_names else None)


def _fast_hetrec_artists(data: bytes, need_names: bool) -> _Named | None:
    blob = _blob(data)
    found = _HETREC_ARTIST_RE.findall(blob)
    if len(found) != _n_lines(blob) or not _utf8_ok(blob):
        return None
    arr = _ints([f[0] for f in found])
    if not _all_ok(arr):
        return None
    return _Named(arr, [f[1] for f in found] if need_names else None)


def _fast_tracks(data: bytes) -> _Tracks | None:
    blob = _blob(data)
    found = _TRACK_RE.findall(blob)
    if len(found) != _n_lines(blob) or not _utf8_ok(blob):
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


_PLAY_ID_OFFSET = len(b'{"type":"track","id":')
_ID_DIGITS = np.arange(11)
_LEFT_ALIGNED = 10.0 ** (10 - _ID_DIGITS)
_POW10 = 10.0 ** np.arange(12)


def _fast_sessions(data: bytes) -> _Sessions | None:
    blob = _blob(data)
    found = _SESSION_RE.findall(blob)
    # Each match spans one whole line, so every line has the pattern's braces and no others:
    # "{" opens the numtracks object, the subjects object, the user, then one object per play,
    # whose id starts _PLAY_ID_OFFSET bytes on. The plays and their ids are read off the bytes.
    arr = np.frombuffer(blob, dtype=np.uint8)
    newlines = np.flatnonzero(arr == 10)
    n = len(newlines) - 1
    if len(found) != n:
        return None
    sids, stamps, numtracks, users = _columns(found, 4)
    braces = np.flatnonzero(arr == 123)
    first = np.searchsorted(braces, newlines)  # each line's first brace
    n_plays = np.diff(first) - 3
    play = np.ones(len(braces), dtype=bool)
    for k in range(3):
        play[first[:-1] + k] = False
    starts = braces[play] + _PLAY_ID_OFFSET
    window = arr[starts[:, None] + _ID_DIGITS] - np.uint8(48)  # a JSON id and its ","
    width = np.argmin(window <= 9, axis=1)  # the pattern puts "," within 11 bytes
    digits = np.where(_ID_DIGITS < width[:, None], window, 0).astype(np.float64)
    # left-aligned digits as one number, then shifted right: exact, all below 2**53
    tracks = ((digits * _LEFT_ALIGNED).sum(axis=1) // _POW10[11 - width]).astype(np.int64)
    sid_arr, user_arr = _ints(sids), _ints(users)
    if not _all_ok(sid_arr, user_arr, tracks):
        return None
    mismatch = int(np.count_nonzero(_ints(numtracks) != n_plays))
    return _Sessions(sid_arr, _ints(stamps), user_arr, n_plays, tracks, mismatch)


def _fast_csv_sessions(data: bytes) -> _Sessions | None:
    blob = _blob(data)
    found = _CSV_SESSION_RE.findall(blob)
    if len(found) != _n_lines(blob) or not _utf8_ok(blob):
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


def _fast_hetrec_plays(data: bytes) -> _Weights | None:
    blob = _blob(data)
    found = _HETREC_PLAY_RE.findall(blob)
    if len(found) != _n_lines(blob):
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


def _build_sessions(recs: list[tuple[int, int, int, Any, bool]]) -> _Sessions:
    items = [np.asarray(r[3], dtype=np.int64) for r in recs]
    return _Sessions(
        np.array([r[0] for r in recs], dtype=np.int64),
        np.array([r[1] for r in recs], dtype=np.int64),
        np.array([r[2] for r in recs], dtype=np.int64),
        np.array([len(t) for t in items], dtype=np.int64),
        np.concatenate(items) if items else np.empty(0, dtype=np.int64),
        sum(r[4] for r in recs),
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
    fast: Callable[[bytes], Any]  # a block of whole lines -> its records, or None
    slow: Callable[..., Any]  # (line, strict=True) -> record, or raises _LineError
    build: Callable[[list], Any]
    header: str | None = None  # expected header line (compared case-insensitively)
    sep: str = "\t"
    may_be_cut: Callable[[bytes], bool] | None = None  # could a valid last line be cut short?
    parallel: bool = False  # may ``fast`` (a module-level function) run in worker processes?


def _csv_may_be_cut(line: bytes) -> bool:
    """A CSV or HetRec line ends in a value that, cut short, still looks valid (an id, a weight,
    a name), unless it ends in a closing quote or in the CR of a CRLF pair."""
    return not line.rstrip(b" \t").endswith((b'"', b"\r"))


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
"""Files are read in blocks of whole lines of about this many bytes, so that the fast path's passes
stay in cache and the lines are never split apart unless a block needs the slow path."""


def _blocks(data: bytes, chunk_lines: int) -> Iterator[tuple[int, int, bytes]]:
    """A run of whole lines cut into blocks of at most ``chunk_lines`` lines:
    (offset of the first line, number of lines, bytes)."""
    n = data.count(b"\n") + (not data.endswith(b"\n"))
    if n <= chunk_lines:
        yield 0, n, data
        return
    ends = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10) + 1
    cuts = [0, *ends[chunk_lines - 1 :: chunk_lines].tolist()]
    if cuts[-1] < len(data):
        cuts.append(len(data))
    for i, (lo, hi) in enumerate(zip(cuts[:-1], cuts[1:], strict=True)):
        yield i * chunk_lines, min(chunk_lines, n - i * chunk_lines), data[lo:hi]


@dataclass
class _FileState:
    """Per file: records read and the first line skipped (for the messages at its end)."""

    records: int = 0
    first_skip: tuple[int, str] | None = None


def _parse_line(src: _Source, line: bytes, lenient: bool) -> tuple[Any, bool]:
    """(record, whether it was read with U+FFFD); every failure becomes a _LineError."""
    try:
        try:
            return src.slow(line), False
        except _NotUtf8:
            if not lenient:
                raise
            return src.slow(line, False), True
    except _LineError:
        raise
    except RecursionError:
        raise _LineError("the line is nested too deeply to be read") from None
    except MemoryError:
        raise
    except Exception as e:  # a parser bug must still name the file and the line
        raise _LineError(
            f"the line could not be read ({type(e).__name__}: {str(e)[:80]})"
        ) from None


def _skip(src: _Source, report: ReadReport, state: _FileState, line: int, reason: str) -> None:
    report.skipped_by_file[src.key] += 1
    if state.first_skip is None:
        state.first_skip = (line, reason)


_NOT_RUN = object()  # the fast path has not been tried on a block yet


def _try_fast(fast: Callable[[bytes], Any], data: bytes) -> Any:
    """``fast(data)``, or None when it raises (defensive: the slow path has the last word)."""
    try:
        return fast(data)
    except Exception:
        return None


def _parse_block(
    src: _Source,
    data: bytes,
    start: int,
    report: ReadReport,
    errors: str,
    state: _FileState,
    fast: Any = _NOT_RUN,
) -> Any:
    """The fast path (or its result ``fast``, from a worker), else line by line (``start`` is the
    1-based number of the first line)."""
    result = _try_fast(src.fast, data) if fast is _NOT_RUN else fast
    if result is not None:
        return result
    lines = _split_lines(data)
    report.slow_path_lines += len(lines)
    recs = []
    for i, line in enumerate(lines):
        if not line.strip(_TRIM):
            continue
        try:
            rec, replaced = _parse_line(src, line, errors == "skip")
        except _LineError as e:
            if errors == "raise":
                raise DataFormatError(src.path, start + i, e.reason) from None
            _skip(src, report, state, start + i, e.reason)
            continue
        report.not_utf8_lines += replaced
        recs.append(rec)
    return src.build(recs)


_COMPRESSIONS = {".gz": "gzip", ".bz2": "bzip2", ".xz": "xz"}
_STREAM_ERRORS = (EOFError, OSError, lzma.LZMAError, zlib.error)


def _compression(path: Path) -> str | None:
    return _COMPRESSIONS.get(path.suffix.lower())


@contextmanager
def _open_stream(path: Path) -> Iterator[tuple[IO[bytes], IO[bytes]]]:
    """(decompressed binary stream, raw file): the raw file tells the progress in bytes read."""
    with open(path, "rb") as raw:
        kind = _compression(path)
        if kind is None:
            yield raw, raw
            return
        if kind == "gzip":
            f: IO[bytes] = gzip.GzipFile(fileobj=raw, mode="rb")
        else:
            f = bz2.BZ2File(raw) if kind == "bzip2" else lzma.LZMAFile(raw)
        with f:
            yield f, raw


_MAGIC = (
    (b"\x1f\x8b", "gzip-compressed data", ".gz"),
    (b"BZh", "bzip2-compressed data", ".bz2"),
    (b"\xfd7zXZ\x00", "xz-compressed data", ".xz"),
    (b"PK\x03\x04", "a zip archive (unzip it)", None),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed data (decompress it with zstd -d)", None),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive (extract it)", None),
)


def _looks_like(head: bytes) -> tuple[str, str | None] | None:
    """What the first bytes of a file that is not text look like, and the suffix to give it."""
    for magic, what, suffix in _MAGIC:
        if head.startswith(magic):
            return what, suffix
    if head.startswith((b"\xff\xfe", b"\xfe\xff")) or head[1:8:2] == b"\x00\x00\x00\x00":
        return "UTF-16 text (convert it to UTF-8)", None
    if b"\x00" in head:
        return "binary data (NUL bytes), not text", None
    if b"\n" not in head and b"\r" in head.rstrip(b"\r"):
        return "text with CR-only line endings, classic Mac style (convert them to LF)", None
    return None


def _sniff(path: Path) -> None:
    """Raise, in both modes, on a file whose bytes cannot be read as lines of text at all."""
    kind = _compression(path)
    try:
        with _open_stream(path) as (f, _):
            head = f.read(1 << 16)
    except _STREAM_ERRORS as e:
        with open(path, "rb") as raw:
            found = _looks_like(raw.read(1 << 16))
        holds = f"; it holds {found[0]}" if found else ""
        raise DataFormatError(
            path, None, f"is named as {kind} data but cannot be decompressed ({e}){holds}"
        ) from None
    found = _looks_like(head)
    if found is not None:
        what, suffix = found
        advice = ""
        if suffix is not None and kind is None:
            advice = f": name it {path.name}{suffix} to have it decompressed as it is read"
        raise DataFormatError(path, None, f"cannot be read as text: it holds {what}{advice}")


def _stream_error(src: _Source, lineno: int, e: Exception) -> DataFormatError:
    return DataFormatError(
        src.path,
        lineno + 1,
        f"the {_compression(src.path)} data is corrupt or cut short after line {lineno} ({e})",
    )


def _read_first_line(f: IO[bytes], src: _Source) -> bytes:
    try:
        return f.readline()
    except _STREAM_ERRORS as e:
        if _compression(src.path) is None:
            raise
        raise _stream_error(src, 0, e) from None


def _read_block(f: IO[bytes], src: _Source, lineno: int) -> bytes:
    """About BLOCK_BYTES of whole lines (the last line of the file may lack its newline)."""
    try:
        data = f.read(BLOCK_BYTES)
        if data and not data.endswith(b"\n"):
            data += f.readline()
        return data
    except _STREAM_ERRORS as e:
        if _compression(src.path) is None:
            raise
        raise _stream_error(src, lineno, e) from None


PARALLEL_MIN_BYTES = 256 << 20
"""Files at least this large (``tracks.idomaar``, the sessions) have their fast path run in worker
processes, ``THIRTYMUSIC_READ_WORKERS`` of them (default: as many as the CPUs this process may
use, at most 4, none on one CPU; 0 turns them off). A worker reads its own spans of a plain file;
the main process finds where the spans end, runs the fast path itself on the spans that come while
every worker is busy, maps tracks to artists, falls back to the slow path and counts, in file
order, so the result is the same. On 2 CPUs two workers beat one (full profile, warm cache: 41 to
44 s against 48 to 52): with one, the main process parsed half of the spans besides its own work."""


def _read_workers() -> int:
    setting = os.environ.get("THIRTYMUSIC_READ_WORKERS", "").strip()
    if setting:
        return max(0, int(setting))
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cpus = os.cpu_count() or 1
    return min(4, cpus) if cpus > 1 else 0


@contextmanager
def _fast_pool(src: _Source, size: int) -> Iterator[tuple[Any, int]]:
    """A process pool for the fast path of a large file and its size, or (None, 0)."""
    n = _read_workers() if src.parallel and size >= PARALLEL_MIN_BYTES else 0
    pool = None
    if n:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        try:
            # fork: workers need nothing from the main module (spawn would re-run a script
            # that calls read_plays without a __main__ guard)
            pool = ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("fork"))
        except (OSError, ValueError):  # no processes to be had (or no fork): read in this one
            pool, n = None, 0
    try:
        yield pool, n
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def _submit(pool: Any, fast: Callable, *args: Any) -> Any:
    try:
        return pool.submit(fast, *args)
    except Exception:  # a broken pool: the main process runs the fast path itself
        return None


class _Done:
    """A block whose fast path this process ran itself while the workers were busy."""

    def __init__(self, fast: Callable[[bytes], Any], block: bytes) -> None:
        self.value = _try_fast(fast, block)

    def done(self) -> bool:
        return True

    def result(self) -> Any:
        return self.value


def _ready(job: Any) -> bool:
    return job is None or job.done()


def _fast_result(future: Any) -> Any:
    if future is None:
        return _NOT_RUN
    try:
        return future.result()
    except Exception:  # a worker that failed: the main process parses the block itself
        return _NOT_RUN


_SPAN_FDS: dict[str, int] = {}  # per worker process: the files it reads spans of


def _read_span(fd: int, start: int, end: int) -> bytes:
    data = os.pread(fd, end - start, start)
    while len(data) < end - start:  # pread may return less than asked
        more = os.pread(fd, end - start - len(data), start + len(data))
        if not more:
            break
        data += more
    return data


def _span_fast(fd: int, start: int, end: int, fast: Callable[[bytes], Any]) -> tuple:
    """Bytes ``start:end`` of the file ``fd`` through the fast path: (records, or None when the
    fast path fails or the file gave fewer bytes than the span, number of lines, the bytes)."""
    data = _read_span(fd, start, end)
    value = _try_fast(fast, data) if len(data) == end - start else None
    return value, data.count(b"\n"), data


def _fast_span(path: str, start: int, end: int, fast: Callable[[bytes], Any]) -> tuple:
    """In a worker: :func:`_span_fast` on ``path``, read by the worker itself (so the block never
    travels through a pipe); the bytes are not sent back (the main process re-reads them if the
    slow path needs them)."""
    fd = _SPAN_FDS.get(path)
    if fd is None:
        fd = _SPAN_FDS[path] = os.open(path, os.O_RDONLY)
    value, n_lines, _ = _span_fast(fd, start, end, fast)
    return value, n_lines, None


class _DoneSpan:
    """A span whose fast path this process ran itself while the workers were busy (it keeps the
    bytes, which the slow path then needs)."""

    def __init__(self, fd: int, start: int, end: int, fast: Callable[[bytes], Any]) -> None:
        self.value = _span_fast(fd, start, end, fast)

    def done(self) -> bool:
        return True

    def result(self) -> Any:
        return self.value


SPAN_PROBE = 1 << 16


def _span_end(fd: int, start: int, size: int) -> int:
    """The end of the span of whole lines from ``start``: just after the first newline at or after
    ``start + BLOCK_BYTES`` (``size`` when there is none)."""
    at = start + BLOCK_BYTES - 1
    while at < size:
        chunk = os.pread(fd, SPAN_PROBE, at)
        if not chunk:
            break
        i = chunk.find(b"\n")
        if i >= 0:
            return at + i + 1
        at += len(chunk)
    return size


_CUT_REASON = (
    "the file does not end with a newline, so its last line may have been cut short (an id, a "
    "weight or a name cut short still looks valid); add the newline if the line is complete"
)


def _chunks(
    src: _Source, report: ReadReport, errors: str, chunk_lines: int, progress: bool
) -> Iterator[Any]:
    """Read ``src.path`` ``chunk_lines`` lines at a time; yield parsed blocks of each chunk.

    At the end of the file: a file without a record is an error (``errors="raise"``) or a warning,
    and a file none of whose lines could be read is an error in both modes.
    """
    report.skipped_by_file.setdefault(src.key, 0)
    state = _FileState()
    _sniff(src.path)
    size = src.path.stat().st_size
    with (
        _open_stream(src.path) as (f, raw),
        tqdm(
            total=size,
            unit="B",
            unit_scale=True,
            desc=src.path.name,
            disable=not progress,
            file=sys.stderr,
        ) as bar,
        _fast_pool(src, size) as (pool, workers),
    ):
        # (job, the block's bytes and its first line) or (job, a span's (start, end), None)
        pending: deque[tuple[Any, bytes | tuple[int, int], int | None]] = deque()
        ahead = 2 * workers

        span_line = [0]  # lines before the next span to settle (spans do not know their start)

        def settle(keep: int) -> Iterator[Any]:
            """Parse (in file order) the blocks sent to the workers, leaving ``keep`` in flight
            (-1: only those already done)."""
            while len(pending) > max(keep, 0) and (keep >= 0 or _ready(pending[0][0])):
                future, block, start = pending.popleft()
                if isinstance(block, tuple):  # a span the worker read itself
                    yield from settle_span(future, *block)
                    continue
                part = _parse_block(src, block, start, report, errors, state, _fast_result(future))
                state.records += len(part)
                yield part

        def settle_span(future: Any, lo: int, hi: int) -> Iterator[Any]:
            got = _fast_result(future)
            value, n, data = (None, -1, None) if got is _NOT_RUN else got
            if value is not None and n <= chunk_lines:
                state.records += len(value)
                span_line[0] += n
                yield value
                return
            if data is None:  # the slow path needs the bytes: read them here
                data = _read_span(span_fd, lo, hi)
            first = span_line[0] + 1
            fast = _NOT_RUN if got is _NOT_RUN else value  # None: tried and failed, go slow
            for offset, n_block, block in _blocks(data, chunk_lines):
                part = _parse_block(src, block, first + offset, report, errors, state,
                                    fast if n_block == n else _NOT_RUN)  # fmt: skip
                state.records += len(part)
                span_line[0] += n_block
                yield part

        lineno = 0
        if src.header is not None:
            first = _read_first_line(f, src)
            lineno = 1
            if not first:
                raise DataFormatError(
                    src.path, 1, f"file is empty; expected the header {src.header!r}"
                )
            _check_header(src, first)
        pos = raw.tell()
        # a plain file read by workers: each reads its spans of whole lines itself; this process
        # only finds where the spans end. The file's last span, when it lacks a final newline,
        # and a file that starts with a byte-order mark are left to the loop below.
        span_fd = os.open(src.path, os.O_RDONLY) if pool is not None and f is raw else -1
        try:
            bom = span_fd >= 0 and lineno == 0 and os.pread(span_fd, 3, 0) == b"\xef\xbb\xbf"
            if span_fd >= 0 and not bom:
                span_line[0] = lineno
                while pos < size:
                    end = _span_end(span_fd, pos, size)
                    if end == size and os.pread(span_fd, 1, size - 1) != b"\n":
                        break  # the last line has no newline: read below, as it may be cut
                    yield from settle(-1)
                    busy = sum(not isinstance(job, _DoneSpan) for job, _, _ in pending) >= ahead
                    if busy:
                        job: Any = _DoneSpan(span_fd, pos, end, src.fast)
                    else:
                        job = _submit(pool, _fast_span, str(src.path), pos, end, src.fast)
                    pending.append((job, (pos, end), None))
                    bar.update(end - pos)
                    pos = end
                yield from settle(0)
                lineno = span_line[0]
                raw.seek(pos)
            while True:
                data = _read_block(f, src, lineno)
                if not data:
                    break
                if lineno == 0 and data.startswith(b"\xef\xbb\xbf"):
                    data = data[3:]
                last = None  # the file's last line, when it has no newline and may be cut short
                if src.may_be_cut is not None and not data.endswith(b"\n"):
                    cut = data.rfind(b"\n") + 1
                    if data[cut:].strip(_TRIM) and src.may_be_cut(data[cut:]):
                        data, last = data[:cut], data[cut:]
                n_lines = 0
                for offset, n_lines_block, block in _blocks(data, chunk_lines) if data else ():
                    n_lines += n_lines_block
                    if pool is not None:
                        yield from settle(-1)
                        # with every worker busy, this process runs the fast path on the block itself
                        busy = sum(not isinstance(job, _Done) for job, _, _ in pending) >= ahead
                        job = _Done(src.fast, block) if busy else _submit(pool, src.fast, block)
                        pending.append((job, block, lineno + offset + 1))
                        continue
                    part = _parse_block(src, block, lineno + offset + 1, report, errors, state)
                    state.records += len(part)
                    yield part
                if last is not None:
                    yield from settle(0)
                    n = lineno + n_lines + 1
                    if len(_parse_block(src, last, n, report, errors, state)):  # else skipped
                        if errors == "raise":
                            raise DataFormatError(src.path, n, _CUT_REASON)
                        report.possibly_truncated_lines += 1
                        _skip(src, report, state, n, _CUT_REASON)
                    n_lines += 1
                lineno += n_lines
                now = raw.tell()
                bar.update(now - pos)
                pos = now
        finally:
            if span_fd >= 0:
                os.close(span_fd)
        yield from settle(0)
    if state.records == 0:
        skipped = report.skipped_by_file[src.key]
        if skipped:
            line, reason = state.first_skip or (None, "")
            raise DataFormatError(
                src.path,
                None,
                f"not one of its {skipped:,} lines could be read (line {line}: {reason})",
            )
        report.empty_files += 1
        what = "holds only the header" if src.header is not None else "is empty"
        _fail_or_warn(src.path, None, f"{what}: no records to read", errors, report)
    elif report.skipped_by_file[src.key] and errors == "skip":
        line, reason = state.first_skip or (None, "")
        n = report.skipped_by_file[src.key]
        report.warnings.append(f"{src.path.name}: {n:,} malformed lines skipped")
        warnings.warn(
            f"{src.path.name}: {n:,} malformed line{'s' if n > 1 else ''} skipped (the first, "
            f"line {line}: {reason})",
            ReadWarning,
            stacklevel=4,
        )


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


def _min_keys(artists: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per distinct artist, the smallest key."""
    if len(artists) == 0:
        return artists.astype(np.int64), keys.astype(np.int64)
    order = np.lexsort((keys, artists))
    a, k = artists[order], keys[order]
    first = np.concatenate(([True], a[1:] != a[:-1]))
    return a[first], k[first]


def _merge(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    if not parts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return _min_keys(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))


def _push(
    parts: list[tuple[np.ndarray, np.ndarray]], part: tuple[np.ndarray, np.ndarray]
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``parts`` with ``part`` added, merged into one once more than 16 are held (memory ~ keys)."""
    parts.append(part)
    return [_merge(parts)] if len(parts) > 16 else parts


def _pair_first_frame(parts: list[tuple[np.ndarray, np.ndarray]]) -> pd.DataFrame:
    """``user_id, artist_id, first_position`` from parts keyed ``user << 32 | artist`` (the smallest
    position each), sorted by user then position."""
    pair, pos = _merge(parts)
    order = np.lexsort((pos, pair >> 32))
    pair, pos = pair[order], pos[order]
    return pd.DataFrame(
        {"user_id": pair >> 32, "artist_id": pair & 0xFFFFFFFF, "first_position": pos}
    )


#: user ids below this bound fit a first-play key (user in the high bits, position in the low 40)
_FIRST_USER_BOUND = 1 << 23
_POSITION_BITS = 40


class _FirstPlays:
    """Per artist, its first play: the lowest user id, then the earliest place in the play sequence
    (the study's column order, :mod:`thirtymusic_utils.data.order`). Memory ~ distinct artists.
    Per (user, artist) pair, the place of its first play (the order of the user's ``Counter``,
    :func:`thirtymusic_utils.data.order.pair_first_positions`). Memory ~ distinct pairs."""

    def __init__(self, pairs: bool = False) -> None:
        self.parts: list[tuple[np.ndarray, np.ndarray]] = []
        self.pair_parts: list[tuple[np.ndarray, np.ndarray]] = []
        self.offset = 0
        self.ok = True
        self.keep_pairs = pairs

    def add(self, users: np.ndarray, artists: np.ndarray) -> None:
        if not self.ok or len(users) == 0:
            return
        if users.min() < 0 or users.max() >= _FIRST_USER_BOUND:
            self.ok, self.parts, self.pair_parts = False, [], []
            return
        pos = self.offset + np.arange(len(users), dtype=np.int64)
        self.offset += len(users)
        self.parts = _push(self.parts, _min_keys(artists, (users << _POSITION_BITS) | pos))
        if self.keep_pairs:
            self.pair_parts = _push(self.pair_parts, _min_keys((users << 32) | artists, pos))

    def pairs(self) -> pd.DataFrame | None:
        """``user_id, artist_id, first_position`` per pair, sorted by user then position."""
        if not (self.ok and self.keep_pairs):
            return None
        parts, self.pair_parts = self.pair_parts, []
        return _pair_first_frame(parts)

    def result(self) -> pd.DataFrame | None:
        if not self.ok:
            return None
        a, k = _merge(self.parts)
        return pd.DataFrame(
            {
                "artist_id": a,
                "first_user": k >> _POSITION_BITS,
                "first_position": k & ((1 << _POSITION_BITS) - 1),
            }
        )


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
            _path(folder, LAYOUT_FILES["idomaar"][0]),
            lambda data: _fast_persons(data, names),
            _slow_person,
            lambda recs: _build_named(recs, names),
        )
    if layout == "csv":
        return _Source(
            "persons",
            _path(folder, LAYOUT_FILES["csv"][0]),
            lambda data: _fast_csv_persons(data, names),
            _slow_csv_person,
            lambda recs: _build_named(recs, names),
            header=_CSV_PERSONS_HEADER,
            sep=";",
            may_be_cut=_csv_may_be_cut,
        )
    return _Source(
        "artists",
        _path(folder, "artists.dat"),
        lambda data: _fast_hetrec_artists(data, names),
        _slow_hetrec_artist,
        lambda recs: _build_named(recs, names),
        header=_HETREC_ARTISTS_HEADER,
        may_be_cut=_csv_may_be_cut,
    )


def _scan_sessions(
    src: _Source,
    tracks: _TrackArtists | None,
    report: ReadReport,
    errors: str,
    chunk_lines: int,
    progress: bool,
    first: _FirstPlays,
) -> tuple[_PairCounter, pd.DataFrame, _FirstPlays]:
    pairs = _PairCounter()
    cols: dict[str, list[np.ndarray]] = {
        k: [] for k in ("session_id", "user_id", "timestamp", "n_plays", "n_artists")
    }
    for chunk in _chunks(src, report, errors, chunk_lines, progress):
        n_s = len(chunk.users)
        report.sessions_read += n_s
        report.plays_read += len(chunk.items)
        report.empty_sessions += int(np.count_nonzero(chunk.n_items == 0))
        report.numtracks_mismatch += chunk.numtracks_mismatch
        session_of_item = np.repeat(np.arange(n_s, dtype=np.int64), chunk.n_items)
        if tracks is None:
            sess, artists = session_of_item, chunk.items
        else:
            idx, artists, unknown = tracks.expand(chunk.items)
            report.plays_unknown_track += unknown
            sess = session_of_item[idx]
        first.add(chunk.users[sess], artists)
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
    report.duplicate_session_ids = _n_repeats(sessions["session_id"].to_numpy())
    return pairs, sessions, first


def _scan_hetrec(
    folder: Path,
    report: ReadReport,
    errors: str,
    chunk_lines: int,
    progress: bool,
    first: _FirstPlays,
) -> tuple[np.ndarray, np.ndarray, _FirstPlays]:
    src = _Source(
        "user_artists",
        _path(folder, "user_artists.dat"),
        _fast_hetrec_plays,
        _slow_hetrec_play,
        _build_weights,
        header=_HETREC_PLAYS_HEADER,
        may_be_cut=_csv_may_be_cut,
    )
    pairs = _PairCounter()
    for chunk in _chunks(src, report, errors, chunk_lines, progress):
        report.plays_read += int(chunk.weights.sum())
        pairs.add((chunk.users << 32) | chunk.artists, chunk.weights)
        first.add(chunk.users, chunk.artists)
    return (*pairs.result(), first)


def _share_text(n: int, total: int) -> str:
    share = n / total
    return f"{share:.0%}" if share >= 0.095 else f"{share:.1%}"


def _check_unknown(
    path: Path,
    n: int,
    total: int,
    what: tuple[str, str],
    limit: float,
    errors: str,
    report: ReadReport,
) -> None:
    """Too many plays naming ids that ``path`` lacks: the file is likely cut short."""
    if total == 0 or n / total <= limit:
        return
    unit, verb = what
    reason = (
        f"looks truncated: {_share_text(n, total)} of the {unit} ({n:,} of {total:,}) {verb} it "
        f"lacks, more than the {limit:.0%} accepted (max_unknown_share)"
    )
    _fail_or_warn(path, None, reason, errors, report)


def scan_plays(
    data_dir: str | os.PathLike,
    *,
    layout: str = "auto",
    errors: str = "raise",
    progress: bool = False,
    chunk_lines: int = 100_000,
    max_unknown_share: float = MAX_UNKNOWN_SHARE,
    pair_first: bool = False,
) -> PlaysScan:
    """Stream a data folder once: per (user, artist) play counts, per-session stats, a report.

    ``layout`` is ``"auto"`` (see :func:`detect_layout`), ``"idomaar"``, ``"csv"`` or ``"hetrec"``.
    ``errors="raise"`` stops at the first malformed line with a :class:`DataFormatError` naming the
    file, the line and what was expected, and on an input without records or with more than
    ``max_unknown_share`` of the plays naming tracks (or of the artist plays naming artists) that
    the entity files lack; ``errors="skip"`` skips such lines and counts them in the report, and
    warns (:class:`ReadWarning`) of the rest. A file of which no line can be read is an error in
    both modes. Files are read ``chunk_lines`` lines at a time; the result does not depend on it.
    ``pair_first=True`` also keeps each pair's first play (``PlaysScan.pair_first``; memory ~ pairs).
    """
    _check_errors(errors)
    if chunk_lines < 1:
        raise ValueError(f"chunk_lines must be at least 1, not {chunk_lines}")
    if not 0 <= max_unknown_share <= 1:
        raise ValueError(f"max_unknown_share must lie in [0, 1], not {max_unknown_share}")
    folder, layout = _resolve(data_dir, layout)
    report = ReadReport(layout=layout)
    psrc = _persons_source(folder, layout, names=False)
    known, _ = _read_named(psrc, report, errors, chunk_lines, progress, False)
    if layout == "hetrec":
        keys, counts, first = _scan_hetrec(
            folder, report, errors, chunk_lines, progress, _FirstPlays(pair_first)
        )
        _count_unknown_artists(keys, counts, known, report)
        if len(known):
            _check_unknown(
                psrc.path,
                report.plays_unknown_artist,
                report.plays_read,
                ("plays", "go to artists"),
                max_unknown_share,
                errors,
                report,
            )
        return PlaysScan(
            _plays_frame(keys, counts, report), None, report, first.result(), first.pairs()
        )
    tsrc = None
    if layout == "idomaar":
        tsrc = _Source(
            "tracks",
            _path(folder, LAYOUT_FILES["idomaar"][1]),
            _fast_tracks,
            _slow_track,
            _build_tracks,
            parallel=True,
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
            _path(folder, LAYOUT_FILES["idomaar"][2]),
            _fast_sessions,
            _slow_session,
            _build_sessions,
            parallel=True,
        )
    else:
        tracks = None
        ssrc = _Source(
            "sessions",
            _path(folder, LAYOUT_FILES["csv"][1]),
            _fast_csv_sessions,
            _slow_csv_session,
            _build_sessions,
            header=_CSV_SESSIONS_HEADER,
            sep=";",
            may_be_cut=_csv_may_be_cut,
            parallel=True,
        )
    pairs, sessions, first = _scan_sessions(
        ssrc, tracks, report, errors, chunk_lines, progress, _FirstPlays(pair_first)
    )
    keys, counts = pairs.result()
    _count_unknown_artists(keys, counts, known, report)
    if tsrc is not None and report.tracks_read:
        _check_unknown(
            tsrc.path,
            report.plays_unknown_track,
            report.plays_read,
            ("plays", "name tracks"),
            max_unknown_share,
            errors,
            report,
        )
    if len(known):
        _check_unknown(
            psrc.path,
            report.plays_unknown_artist,
            int(counts.sum()),
            ("artist plays", "go to artists"),
            max_unknown_share,
            errors,
            report,
        )
    sessions.attrs["report"] = report.as_dict()
    return PlaysScan(
        _plays_frame(keys, counts, report), sessions, report, first.result(), first.pairs()
    )


def read_plays(
    data_dir: str | os.PathLike,
    *,
    layout: str = "auto",
    errors: str = "raise",
    progress: bool = False,
    max_unknown_share: float = MAX_UNKNOWN_SHARE,
) -> pd.DataFrame:
    """Play counts per user and artist: int64 ``user_id, artist_id, plays`` (plays >= 1).

    One row per (user, artist) pair with at least one play, sorted by (user_id, artist_id), with a
    default RangeIndex; ids are as in the files. ``df.attrs["report"]`` holds the
    :class:`ReadReport` as a flat dict. See :func:`scan_plays` for ``layout``, ``errors`` and
    ``max_unknown_share``.
    """
    return scan_plays(
        data_dir,
        layout=layout,
        errors=errors,
        progress=progress,
        max_unknown_share=max_unknown_share,
    ).plays


def read_artists(
    data_dir: str | os.PathLike,
    *,
    layout: str = "auto",
    errors: str = "raise",
) -> pd.DataFrame:
    """Artist names: ``artist_id`` (int64, unique, sorted) and ``name`` (str).

    30Music names are URL-encoded and decoded with ``urllib.parse.unquote_plus``; HetRec names are
    plain UTF-8 and kept as they are. Names that are not valid UTF-8 (raw, or once URL-decoded)
    raise a :class:`DataFormatError` naming the file and line, or with ``errors="skip"`` are read
    with U+FFFD in place of the bad bytes and counted (``not_utf8_lines``). Duplicate ids: the first
    line wins (counted in ``df.attrs["report"]``). An artists file without a record is an error
    (``errors="raise"``) or a :class:`ReadWarning`.
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
