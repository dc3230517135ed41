"""The study's column order: artists in order of first appearance.

The study built its matrix with ``json_normalize`` over one ``Counter`` per user (notebook cells
``In [24]`` and ``In [25]``): users in id order, and within a user the artists in the order they first
occur in the user's plays (sessions one after the other, each session's ``ArtistsID`` list in order).
``json_normalize`` makes one column per key in order of first appearance over the users, so the study's
column ``j`` is the ``j``-th artist met when reading user 1's plays, then user 2's, and so on. Every
stable sort in the study then breaks ties in this order.

Departure: the study sorted the sessions by ``UserId`` with pandas' default quicksort, which is not
stable, so the order of a user's sessions was the sort's, not the file's. That order cannot be
reproduced; here a user's sessions are read in file order (a stable sort).

The order is read from the data folder because the play-count matrix has lost it:

* CSV form: ``relations/sessions_short.csv``, the study's own input;
* idomaar form: ``relations/sessions.idomaar`` (tracks in play order, each credited to its artists in
  the order ``tracks.idomaar`` lists them);
* HetRec: ``user_artists.dat`` in file order (it has no sessions).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from ..book.paths import artifacts_dir
from .readers import LAYOUT_FILES, _merge, _min_keys, _pair_first_frame, _push, detect_layout

__all__ = [
    "FIRST_PLAYS_FILE",
    "PAIR_FIRST_FILE",
    "first_appearance_keys",
    "load_first_plays",
    "load_pair_first",
    "pair_first_positions",
    "save_first_plays",
    "save_pair_first",
    "study_column_order",
]

#: chapter 01's record of each artist's first play (``PlaysScan.first_plays``)
FIRST_PLAYS_FILE = "first_plays.npz"
_KEY_COLUMNS = ("artist_id", "first_user", "first_position")
#: chapter 01's record of each (user, artist) pair's first play (``PlaysScan.pair_first``)
PAIR_FIRST_FILE = "pair_first.npz"
_PAIR_COLUMNS = ("user_id", "artist_id", "first_position")

_TRACK_IN_SESSION = re.compile(r'"type"\s*:\s*"track"\s*,\s*"id"\s*:\s*(\d+)')


def _csv_plays(path: Path, chunk_rows: int):
    """(users, artists) of every play of ``sessions_short.csv``, chunk by chunk, in file order."""
    reader = pd.read_csv(
        path,
        sep=";",
        usecols=["UserId", "ArtistsID"],
        dtype={"UserId": np.int64, "ArtistsID": str},
        keep_default_na=False,
        chunksize=chunk_rows,
    )
    for chunk in reader:
        lists = chunk["ArtistsID"].to_numpy(object)
        users = chunk["UserId"].to_numpy(np.int64)
        nonempty = np.array([len(s) > 0 for s in lists], dtype=bool)
        lens = np.array([s.count(",") + 1 if s else 0 for s in lists], dtype=np.int64)
        if not nonempty.any():
            continue
        artists = np.array(",".join(lists[nonempty]).split(","), dtype=np.int64)
        yield np.repeat(users, lens), artists


def _idomaar_plays(folder: Path):
    """(users, artists) of every artist play of ``sessions.idomaar``, session by session, in file order."""
    track_artists: dict[int, list[int]] = {}
    with open(folder / LAYOUT_FILES["idomaar"][1], encoding="utf-8", errors="replace") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 5:
                continue
            try:
                tid = int(parts[1])
                linked = json.loads(parts[4])
            except (ValueError, json.JSONDecodeError):
                continue
            if tid in track_artists:
                continue  # duplicate track ids: the first line wins, as in the readers
            track_artists[tid] = [int(a["id"]) for a in (linked.get("artists") or [])]
    users: list[int] = []
    artists: list[int] = []
    with open(folder / LAYOUT_FILES["idomaar"][2], encoding="utf-8", errors="replace") as f:
        for line in f:
            m = re.search(r'"subjects"\s*:\s*\[\s*\{[^}]*"id"\s*:\s*(\d+)', line)
            if not m:
                continue
            user = int(m.group(1))
            for tid in _TRACK_IN_SESSION.findall(line):
                for a in track_artists.get(int(tid), ()):
                    users.append(user)
                    artists.append(a)
            if len(users) > 2_000_000:
                yield np.asarray(users, np.int64), np.asarray(artists, np.int64)
                users, artists = [], []
    yield np.asarray(users, np.int64), np.asarray(artists, np.int64)


def _hetrec_plays(folder: Path):
    df = pd.read_csv(folder / "user_artists.dat", sep="\t", dtype=np.int64)
    yield df["userID"].to_numpy(np.int64), df["artistID"].to_numpy(np.int64)


def _plays(folder: Path, layout: str, chunk_rows: int):
    layout = detect_layout(folder) if layout == "auto" else layout
    if layout == "csv":
        return _csv_plays(folder / LAYOUT_FILES["csv"][1], chunk_rows)
    if layout == "idomaar":
        return _idomaar_plays(folder)
    if layout == "hetrec":
        return _hetrec_plays(folder)
    raise ValueError(f"layout must be auto, csv, idomaar or hetrec, got {layout!r}")


def pair_first_positions(
    data_dir: str | os.PathLike, *, layout: str = "auto", chunk_rows: int = 200_000
) -> pd.DataFrame:
    """For every (user, artist) pair played: the position of its first play in the file's play
    sequence. Sorting a user's artists by it gives the order of the user's ``Counter`` (``In [24]``).
    Returns ``user_id, artist_id, first_position`` (int64), sorted by user then position."""
    parts: list[tuple[np.ndarray, np.ndarray]] = []
    offset = 0
    for users, artists in _plays(Path(data_dir), layout, chunk_rows):
        pos = offset + np.arange(len(users), dtype=np.int64)
        offset += len(users)
        parts = _push(parts, _min_keys((users << 32) | artists, pos))
    return _pair_first_frame(parts)


def first_appearance_keys(
    data_dir: str | os.PathLike, *, layout: str = "auto", chunk_rows: int = 200_000
) -> pd.DataFrame:
    """For every artist played: the first user (lowest id) who played it and the position of that play.

    Returns ``artist_id, first_user, first_position`` (int64), one row per artist, where
    ``first_position`` is the play's index in the file's play sequence. Sorting by
    ``(first_user, first_position)`` gives the study's column order.
    """
    folder = Path(data_dir)
    plays = _plays(folder, layout, chunk_rows)
    parts: list[tuple[np.ndarray, np.ndarray]] = []
    offset = 0
    for users, artists in plays:
        if len(users) and (users.min() < 0 or users.max() >= 1 << 23):
            raise ValueError(
                f"{folder}: user ids must lie in [0, 2**23) to order artists, got {users.max()}"
            )
        pos = offset + np.arange(len(users), dtype=np.int64)
        offset += len(users)
        # one key per play: user in the high bits, position in the low 40 bits
        parts = _push(parts, _min_keys(artists, (users << 40) | pos))
    a, k = _merge(parts)
    return pd.DataFrame(
        {"artist_id": a, "first_user": k >> 40, "first_position": k & ((1 << 40) - 1)}
    )


def _save(
    frame: pd.DataFrame | None,
    build_dir: str | os.PathLike | None,
    name: str,
    columns: tuple[str, ...],
    compressed: bool,
) -> Path | None:
    path = artifacts_dir(build_dir) / name
    if frame is None:
        path.unlink(missing_ok=True)
        return None
    save = np.savez_compressed if compressed else np.savez
    save(path, **{c: frame[c].to_numpy(np.int64) for c in columns})
    return path


def _load(
    build_dir: str | os.PathLike | None, name: str, columns: tuple[str, ...]
) -> pd.DataFrame | None:
    path = artifacts_dir(build_dir) / name
    if not path.exists():
        return None
    with np.load(path) as z:
        return pd.DataFrame({c: z[c] for c in columns})


def save_first_plays(keys: pd.DataFrame | None, build_dir: str | os.PathLike | None) -> Path | None:
    """Write ``keys`` (as :func:`first_appearance_keys` returns them) to ``BUILD_DIR/artifacts``;
    with ``keys=None`` remove an earlier file, so that no stale order outlives its data."""
    return _save(keys, build_dir, FIRST_PLAYS_FILE, _KEY_COLUMNS, True)


def load_first_plays(build_dir: str | os.PathLike | None) -> pd.DataFrame | None:
    """The keys :func:`save_first_plays` wrote, or None when chapter 01 wrote none."""
    return _load(build_dir, FIRST_PLAYS_FILE, _KEY_COLUMNS)


def save_pair_first(pairs: pd.DataFrame | None, build_dir: str | os.PathLike | None) -> Path | None:
    """Write ``pairs`` (as :func:`pair_first_positions` returns them, ``PlaysScan.pair_first``) to
    ``BUILD_DIR/artifacts``, uncompressed (one pass over millions of pairs is cheaper to read back than
    to inflate); with ``pairs=None`` remove an earlier file."""
    return _save(pairs, build_dir, PAIR_FIRST_FILE, _PAIR_COLUMNS, False)


def load_pair_first(build_dir: str | os.PathLike | None) -> pd.DataFrame | None:
    """The pairs :func:`save_pair_first` wrote, or None when chapter 01 wrote none."""
    return _load(build_dir, PAIR_FIRST_FILE, _PAIR_COLUMNS)


def study_column_order(
    data_dir: str | os.PathLike,
    artist_ids: np.ndarray,
    *,
    layout: str = "auto",
    keys: pd.DataFrame | None = None,
) -> np.ndarray:
    """The study's column order for a matrix whose columns are ``artist_ids`` (ascending).

    Returns ``rank`` (int64, one per column): ``rank[j]`` is column ``j``'s position in the study's
    matrix. Artists the folder's plays never mention come last, by id. ``keys``: the first plays
    already gathered (``scan_plays(...).first_plays``, or :func:`load_first_plays`); without them
    the folder is read again.
    """
    artist_ids = np.asarray(artist_ids, dtype=np.int64)
    if keys is None:
        keys = first_appearance_keys(data_dir, layout=layout)
    pos = np.searchsorted(artist_ids, keys["artist_id"].to_numpy())
    ok = (pos < len(artist_ids)) & (
        artist_ids[np.minimum(pos, max(len(artist_ids) - 1, 0))] == keys["artist_id"].to_numpy()
    )
    big = np.iinfo(np.int64).max
    key = np.full(len(artist_ids), big, dtype=np.int64)
    key[pos[ok]] = (keys["first_user"].to_numpy()[ok] << 40) | keys["first_position"].to_numpy()[ok]
    order = np.lexsort((np.arange(len(artist_ids)), key))
    rank = np.empty(len(artist_ids), dtype=np.int64)
    rank[order] = np.arange(len(artist_ids))
    return rank
