"""The study's sample rule *as its text describes it* (notebook cell ``In [15]``, ``create_sample``).

Not as its code ran: the code's negatives come from the whole catalogue, played artists included
(``set(all_artist_ids) - set(session.keys())`` subtracts string keys from int ids); that version is
:func:`thirtymusic_utils.study.embedding_ran.create_sample`. This one is the fixed rule, vectorised:

For every user, the *positives* are the artists whose share of the user's plays is at least ``positive``
(target +1); the *negatives* are ``int(negative * n_unheard)`` artists drawn uniformly without
replacement from the artists the user never played (target -1). Vectorised over users: negatives are
drawn as ranks among a user's unheard artists (``models.negatives``), never a per-user set difference
over the catalogue, nor a dense users x artists array.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ..models.two_tower import _check_counts, _row_of_entry, sample_unheard

__all__ = ["StudySample", "negative_counts", "positive_mask", "sample_statistics", "study_sample"]


def positive_mask(counts: sp.spmatrix, positive: float = 0.1) -> np.ndarray:
    """Boolean mask over ``counts``' stored entries (canonical CSR order): share of the row >= ``positive``.

    The share of an artist is its play count divided by the user's total plays.
    """
    if not 0.0 <= positive <= 1.0:
        raise ValueError(f"positive must be a share in [0, 1], got {positive}")
    csr = _check_counts(counts)
    totals = np.asarray(csr.sum(axis=1), dtype=np.float64).ravel()
    rows = _row_of_entry(csr)
    share = csr.data.astype(np.float64) / np.where(totals > 0, totals, 1.0)[rows]
    return share >= positive


def negative_counts(counts: sp.spmatrix, negative: float = 1e-5) -> np.ndarray:
    """Negatives per user, as the study computed them: ``int(negative * n_unheard)`` (int64 per row).

    ``n_unheard`` is the number of catalogue artists (columns) the user never played. With the study's
    ``negative = 1e-5`` this is 0 for every user unless the catalogue has at least 100,000 artists.
    """
    if not 0.0 <= negative <= 1.0:
        raise ValueError(f"negative must be a fraction in [0, 1], got {negative}")
    csr = _check_counts(counts)
    n_unheard = csr.shape[1] - np.diff(csr.indptr).astype(np.int64)
    # float64 product then truncation toward zero: exactly Python's int(negative * n_unheard)
    return np.trunc(negative * n_unheard.astype(np.float64)).astype(np.int64)


@dataclass(frozen=True)
class StudySample:
    """The study's training sample, in its order: user by user, positives (by column) then negatives.

    ``users`` and ``artists`` are row and column indices of the matrix the sample was drawn from;
    ``targets`` are +1 (positive) or -1 (negative), float32 as ``nn.CosineEmbeddingLoss`` expects.
    """

    users: np.ndarray
    artists: np.ndarray
    targets: np.ndarray
    n_users: int
    n_artists: int
    positive: float
    negative: float

    def __len__(self) -> int:
        return len(self.users)

    @property
    def is_positive(self) -> np.ndarray:
        return self.targets > 0


def study_sample(
    counts: sp.spmatrix,
    *,
    positive: float = 0.1,
    negative: float = 1e-5,
    seed: int = 0,
) -> StudySample:
    """The study's sample rule on a users x artists count matrix (see the module docstring).

    Vectorised over all users; memory grows with the number of positives and negatives drawn.
    """
    csr = _check_counts(counts)
    pos = positive_mask(csr, positive)
    pos_rows = _row_of_entry(csr)[pos]
    pos_cols = csr.indices.astype(np.int64)[pos]
    neg_rows, neg_cols = sample_unheard(csr, negative_counts(csr, negative), seed)
    rows = np.concatenate([pos_rows, neg_rows])
    cols = np.concatenate([pos_cols, neg_cols])
    targets = np.concatenate(
        [np.ones(len(pos_rows), np.float32), -np.ones(len(neg_rows), np.float32)]
    )
    # user by user; within a user the positives (target +1) first, each block by column
    order = np.lexsort((cols, -targets, rows))
    return StudySample(
        users=rows[order],
        artists=cols[order],
        targets=targets[order],
        n_users=csr.shape[0],
        n_artists=csr.shape[1],
        positive=positive,
        negative=negative,
    )


def sample_statistics(sample: StudySample) -> dict[str, float | int]:
    """Headline statistics of a study sample (flat dict of numbers, for the results JSON)."""
    is_pos = sample.is_positive
    pos_per_user = np.bincount(sample.users[is_pos], minlength=sample.n_users)
    neg_per_user = np.bincount(sample.users[~is_pos], minlength=sample.n_users)
    n_pos = int(is_pos.sum())
    n_neg = int((~is_pos).sum())
    return {
        "n_sample_users": int(sample.n_users),
        "n_sample_artists": int(sample.n_artists),
        "n_positives": n_pos,
        "n_negatives": n_neg,
        "n_sample": n_pos + n_neg,
        "positives_per_user_mean": float(pos_per_user.mean()) if sample.n_users else 0.0,
        "positives_per_user_max": int(pos_per_user.max()) if sample.n_users else 0,
        "users_without_positive": int((pos_per_user == 0).sum()),
        "negatives_per_user_mean": float(neg_per_user.mean()) if sample.n_users else 0.0,
        "negatives_per_user_max": int(neg_per_user.max()) if sample.n_users else 0,
        "negative_share": float(n_neg / max(n_pos + n_neg, 1)),
        "artists_in_positives": int(len(np.unique(sample.artists[is_pos]))),
        "min_catalogue_for_one_negative": int(np.ceil(1.0 / sample.negative))
        if sample.negative > 0
        else 0,
    }
