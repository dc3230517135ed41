"""The hold-out protocol of the book: the study's split rule on the sparse matrix, and its input checks.

``holdout_split``: users in id order (matrix rows); a user with more than ``min_artists`` distinct
artists becomes a test user while ``count < test_share * n_users`` before adding them; one of their
artists at play-count ranks 2..6 (descending counts, ties by lower column) is chosen uniformly and
removed from the training matrix. The study's own code differs in its cap and its tie order: see
``thirtymusic_utils.study``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from ..book.paths import artifacts_dir, require_artifact
from ..data.matrix import csr_arrays, csr_from_arrays

__all__ = ["SPLIT_FILE", "Split", "extract_users", "holdout_split", "load_split", "save_split"]

SPLIT_FILE = "split.npz"

# --------------------------------------------------------------------------------------------------
# input checks


def _as_csr(matrix: sp.spmatrix | sp.sparray, name: str = "counts") -> sp.csr_matrix:
    """A canonical CSR copy (sorted indices, duplicates summed, no explicit zeros)."""
    if not sp.issparse(matrix):
        raise TypeError(
            f"{name} must be a scipy.sparse matrix (users x artists), got {type(matrix).__name__}"
        )
    if matrix.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {matrix.shape}")
    m = sp.csr_matrix(matrix, copy=True)
    m.sum_duplicates()
    m.eliminate_zeros()
    m.sort_indices()
    return m


def _as_counts(counts: sp.spmatrix | sp.sparray, name: str = "counts") -> sp.csr_matrix:
    m = _as_csr(counts, name)
    if not np.issubdtype(m.dtype, np.integer):
        if len(m.data) and not np.all(m.data == np.round(m.data)):
            raise ValueError(
                f"{name} must hold integer play counts, got dtype {m.dtype} with fractions"
            )
    if len(m.data) and m.data.min() < 0:
        raise ValueError(f"{name} must hold non-negative play counts, found {m.data.min()}")
    return m.astype(np.int64)


def _as_rows(rows: Iterable[int] | np.ndarray, n: int, name: str = "rows") -> np.ndarray:
    r = np.asarray(rows, dtype=np.int64).ravel()
    if len(r) and (r.min() < 0 or r.max() >= n):
        raise ValueError(
            f"{name} must be row indices in [0, {n}), got values in [{r.min()}, {r.max()}]"
        )
    return r


# --------------------------------------------------------------------------------------------------
# the hold-out split


@dataclass
class Split:
    """The study's hold-out: a training matrix and one hidden (row, column) pair per test user.

    ``train`` is ``counts`` with exactly the hidden cells removed (int64 CSR, no explicit zeros);
    ``test_rows`` ascend; ``hidden_cols[i]`` was at play-count rank ``hidden_rank[i]`` of row
    ``test_rows[i]``.
    """

    train: sp.csr_matrix
    test_rows: np.ndarray
    hidden_cols: np.ndarray
    hidden_rank: np.ndarray

    @property
    def n_test(self) -> int:
        """Number of test users."""
        return len(self.test_rows)


def _share(test_share: float) -> Fraction:
    if not 0 <= test_share <= 1:
        raise ValueError(f"test_share must be within [0, 1], got {test_share}")
    return Fraction(test_share).limit_denominator(1_000_000)


def holdout_split(
    counts: sp.csr_matrix,
    seed: int,
    *,
    min_artists: int = 10,
    test_share: float = 0.3,
    ranks: tuple[int, int] = (2, 6),
    candidate_rows: np.ndarray | None = None,
) -> Split:
    """The study's hold-out split (see the module docstring); every random choice from ``seed``.

    Candidates are the rows of ``counts`` (or only ``candidate_rows``) in ascending order; the cap is
    ``test_share`` of the number of candidates: a user is added while ``count < test_share * n``.
    ``ranks`` is the inclusive range of play-count ranks to hide from (rank 1 is the top artist).
    """
    c = _as_counts(counts)
    n_rows = c.shape[0]
    lo, hi = int(ranks[0]), int(ranks[1])
    if not 1 <= lo <= hi:
        raise ValueError(f"ranks must be (lo, hi) with 1 <= lo <= hi, got {ranks}")
    if hi > min_artists + 1:
        raise ValueError(
            f"ranks {ranks} reach beyond what a test user is sure to have (more than {min_artists} artists)"
        )
    share = _share(test_share)
    if candidate_rows is None:
        candidates = np.arange(n_rows, dtype=np.int64)
    else:
        candidates = np.unique(_as_rows(candidate_rows, n_rows, "candidate_rows"))
    n_users = len(candidates)
    # users are added while count * den < num * n_users: that is ceil(num * n_users / den) of them
    cap = -(-share.numerator * n_users // share.denominator)
    nnz = np.diff(c.indptr)
    eligible = candidates[nnz[candidates] > min_artists]
    test_rows = eligible[:cap]
    rng = np.random.default_rng(seed)
    hidden_rank = rng.integers(lo, hi + 1, size=len(test_rows)).astype(np.int64)
    hidden_cols = np.empty(len(test_rows), dtype=np.int64)
    positions = np.empty(len(test_rows), dtype=np.int64)
    for i, (r, rank) in enumerate(zip(test_rows, hidden_rank, strict=True)):
        start, end = c.indptr[r], c.indptr[r + 1]
        # stable sort of descending counts: ties keep ascending column (= artist id) order
        pos = np.argsort(-c.data[start:end], kind="stable")[rank - 1]
        positions[i] = start + pos
        hidden_cols[i] = c.indices[start + pos]
    train = c.copy()
    train.data[positions] = 0
    train.eliminate_zeros()
    return Split(train, test_rows.astype(np.int64), hidden_cols, hidden_rank)


def save_split(split: Split, build_dir: str | os.PathLike | None, name: str = SPLIT_FILE) -> Path:
    """Write the split to ``BUILD_DIR/artifacts/split.npz`` (or ``name``)."""
    path = artifacts_dir(build_dir) / name
    np.savez_compressed(
        path,
        **csr_arrays(split.train),
        test_rows=split.test_rows,
        hidden_cols=split.hidden_cols,
        hidden_rank=split.hidden_rank,
    )
    return path


def load_split(build_dir: str | os.PathLike | None, name: str = SPLIT_FILE) -> Split:
    """Read the split written by chapter 02 (``save_split``)."""
    path = require_artifact(build_dir, name, "02_collaborative_filtering")
    with np.load(path) as z:
        train = csr_from_arrays(z)
        return Split(
            train,
            z["test_rows"].astype(np.int64),
            z["hidden_cols"].astype(np.int64),
            z["hidden_rank"].astype(np.int64),
        )


def extract_users(matrix, max_users: int = 0):
    """The first ``max_users`` users (by id) of a ``UserArtistMatrix``, as the study's extract; 0 = all.

    Columns are kept as they are (an artist nobody in the extract played is an empty column).
    """
    if max_users < 0:
        raise ValueError(f"max_users must be >= 0 (0 = all users), got {max_users}")
    if max_users == 0 or max_users >= matrix.shape[0]:
        return matrix
    return type(matrix)(
        matrix.counts[:max_users].tocsr(),
        matrix.user_ids[:max_users],
        matrix.artist_ids,
        matrix.artist_names,
    )
