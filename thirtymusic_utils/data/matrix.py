"""The user x artist play-count matrix: sparse CSR over all users, with id maps and artist names."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..book.paths import artifacts_dir, require_artifact

MATRIX_FILE = "matrix.npz"
ARTISTS_FILE = "artists.csv"


@dataclass(frozen=True)
class UserArtistMatrix:
    """Play counts of every user (rows) and artist (columns).

    Rows follow ascending ``user_ids``, columns ascending ``artist_ids``; ``counts`` is int64 CSR with
    sorted indices and no explicit zeros. ``artist_names[j]`` names column ``j`` (empty when unknown).
    """

    counts: sp.csr_matrix
    user_ids: np.ndarray
    artist_ids: np.ndarray
    artist_names: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return self.counts.shape

    def user_index(self, user_id: int) -> int:
        """Row of an original user id (KeyError when absent)."""
        i = int(np.searchsorted(self.user_ids, user_id))
        if i >= len(self.user_ids) or self.user_ids[i] != user_id:
            raise KeyError(f"user {user_id} is not in the matrix")
        return i

    def artist_index(self, artist_id: int) -> int:
        """Column of an original artist id (KeyError when absent)."""
        j = int(np.searchsorted(self.artist_ids, artist_id))
        if j >= len(self.artist_ids) or self.artist_ids[j] != artist_id:
            raise KeyError(f"artist {artist_id} is not in the matrix")
        return j


def build_matrix(plays: pd.DataFrame, artists: pd.DataFrame | None = None) -> UserArtistMatrix:
    """Build the CSR matrix from ``read_plays`` output (and names from ``read_artists``).

    Memory is proportional to the number of rows of ``plays`` (the non-zero cells); duplicate
    (user, artist) rows are summed. Artists that only appear in ``artists`` get no column.
    """
    missing = {"user_id", "artist_id", "plays"} - set(plays.columns)
    if missing:
        raise ValueError(f"plays lacks columns {sorted(missing)}")
    users = plays["user_id"].to_numpy(np.int64)
    items = plays["artist_id"].to_numpy(np.int64)
    values = plays["plays"].to_numpy(np.int64)
    if len(values) and values.min() <= 0:
        raise ValueError("plays must be positive counts")
    user_ids, rows = np.unique(users, return_inverse=True)
    artist_ids, cols = np.unique(items, return_inverse=True)
    counts = sp.csr_matrix(
        (values, (rows.astype(np.int64), cols.astype(np.int64))),
        shape=(len(user_ids), len(artist_ids)),
        dtype=np.int64,
    )
    counts.sum_duplicates()
    counts.sort_indices()
    names = np.full(len(artist_ids), "", dtype=object)
    if artists is not None and len(artists):
        ids = artists["artist_id"].to_numpy(np.int64)
        pos = np.searchsorted(artist_ids, ids)
        ok = (pos < len(artist_ids)) & (artist_ids[np.minimum(pos, len(artist_ids) - 1)] == ids)
        names[pos[ok]] = artists["name"].to_numpy(object)[ok]
    return UserArtistMatrix(counts, user_ids, artist_ids, names)


def csr_arrays(matrix: sp.csr_matrix) -> dict[str, np.ndarray]:
    """The arrays of a CSR matrix, ready for ``np.savez`` (read back with :func:`csr_from_arrays`)."""
    return {
        "data": matrix.data,
        "indices": matrix.indices,
        "indptr": matrix.indptr,
        "shape": np.asarray(matrix.shape, dtype=np.int64),
    }


def csr_from_arrays(z) -> sp.csr_matrix:
    """The CSR matrix stored by :func:`csr_arrays` in an ``np.load`` result."""
    return sp.csr_matrix(
        (z["data"], z["indices"], z["indptr"]), shape=tuple(int(s) for s in z["shape"])
    )


def save_matrix(matrix: UserArtistMatrix, build_dir: str | os.PathLike | None) -> Path:
    """Write the matrix, its id maps and names to ``BUILD_DIR/artifacts``."""
    out = artifacts_dir(build_dir)
    np.savez_compressed(
        out / MATRIX_FILE,
        **csr_arrays(matrix.counts),
        user_ids=matrix.user_ids,
        artist_ids=matrix.artist_ids,
    )
    pd.DataFrame({"artist_id": matrix.artist_ids, "name": matrix.artist_names}).to_csv(
        out / ARTISTS_FILE, index=False
    )
    return out / MATRIX_FILE


def load_matrix(build_dir: str | os.PathLike | None) -> UserArtistMatrix:
    """Read the matrix written by chapter 01 (``save_matrix``)."""
    path = require_artifact(build_dir, MATRIX_FILE, "01_user_artist_matrix")
    with np.load(path) as z:
        counts = csr_from_arrays(z)
        user_ids, artist_ids = z["user_ids"], z["artist_ids"]
    names = pd.read_csv(path.with_name(ARTISTS_FILE), keep_default_na=False, dtype={"name": str})
    return UserArtistMatrix(counts, user_ids, artist_ids, names["name"].to_numpy(object))


def matrix_summary(matrix: UserArtistMatrix) -> dict[str, float]:
    """Headline sizes of the matrix, and what a dense copy of it would cost."""
    c = matrix.counts
    n_users, n_artists = c.shape
    sparse_bytes = c.data.nbytes + c.indices.nbytes + c.indptr.nbytes
    return {
        "n_users": int(n_users),
        "n_artists": int(n_artists),
        "n_plays": int(c.data.sum()),
        "n_pairs": int(c.nnz),
        "density": float(c.nnz / max(1, n_users * n_artists)),
        "sparse_mb": sparse_bytes / 2**20,
        "dense_gb": n_users * n_artists * 8 / 2**30,
    }


def top_artists(matrix: UserArtistMatrix, n: int = 10) -> pd.DataFrame:
    """The ``n`` artists with the most listeners (ties by more plays, then lower id), with names."""
    c = matrix.counts.tocsc()
    listeners = np.diff(c.indptr)
    plays = np.asarray(c.sum(axis=0)).ravel()
    order = np.lexsort((matrix.artist_ids, -plays, -listeners))[:n]
    return pd.DataFrame(
        {
            "artist_id": matrix.artist_ids[order],
            "name": matrix.artist_names[order],
            "listeners": listeners[order],
            "plays": plays[order],
        }
    )
