"""The study's embedding model exactly as its code ran: sample (``In [15]``), the 1% slice
(``In [20]``), id decoding (``In [21]``-``In [22]``), the split (``In [23]``-``In [24]``), the towers
(``In [25]``), training (``In [31]`` and the training cell) and the test (``In [33]``).

What the code does, where it differs from the study's text:

* **Negatives.** ``set(all_artist_ids) - set(session.keys())`` subtracts string keys from integer ids:
  nothing is removed, so every user gets ``int(1e-5 * n_catalogue)`` negatives drawn from the *whole*
  catalogue, played artists included (the text: "from the artists that the user did not listen").
  Below 100,000 artists that is 0; on 30Music's 560,927 it is 5 per user.
* **The 1% slice** ``sample[:len(sample) // 100]`` is taken before decoding and splitting: the first
  users only; validation and test users are inside the trained slice, and artists are ranked among
  the slice's artists only.
* **The split.** ``get_posisve_samples_idx`` tests ``if y:`` on targets of +1 and -1: always true, so
  every row is a "positive" and validation and test hold negatives (as relevant artists) too.
* **StepLR per batch**: ``scheduler.step()`` inside the batch loop divides the rate by 10 every 10
  batches.
* **Validation** every 20 epochs from epoch 0 with ``validate`` (:mod:`.validate`), at chance level.

Does it run as printed? Not quite. ``np.asarray`` of rows mixing ints and strings is an array of
strings, and ``torch.Tensor`` of it raises ``TypeError``; ``nn.CosineEmbeddingLoss`` rejects the
``(batch, 1)`` targets ``y = sample[:, 2:]`` gives. The minimal reading used here: the decoded columns
converted to int64 and the targets to float (``astype``), and the target column flattened.

Rules for what the study left to chance: one ``random.Random(seed)`` for ``random.sample``,
``np.random.RandomState(seed)`` for ``np.random.shuffle``, ``torch.manual_seed(seed)`` for the
weights and samplers; the decoding maps (``dict(enumerate(set(strings)))``, whose order changes
between processes) number users and artists in order of first appearance in the slice; the
catalogue set is built from the artist ids in ascending order (the study: persons.csv order).
"""

from __future__ import annotations

import copy
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from torch import nn

from ..book.paths import artifacts_dir, require_artifact
from ..evaluation.protocol import _as_counts
from .validate import correct_validate, study_validate, validate_chance

EMBEDDING_FIXES = ("negatives", "positive_split", "step_per_epoch", "correct_metric")

__all__ = [
    "EMBEDDING_FIXES",
    "AS_RAN_FILE",
    "AsRanRun",
    "load_as_ran",
    "save_as_ran",
    "StudyEmbedder",
    "array_to_dict",
    "create_sample",
    "decode",
    "run_as_ran",
    "session_dict",
    "split_data",
]


def session_dict(
    counts: sp.spmatrix, user_ids: np.ndarray, artist_ids: np.ndarray, first: pd.DataFrame
) -> dict:
    """``dictionary_data`` of ``In [24]``: row position -> {str(artist id): plays}, each user's artists in
    the order the user first played them (``first``: ``data.order.pair_first_positions``)."""
    c = _as_counts(counts)
    u = np.searchsorted(user_ids, first["user_id"].to_numpy())
    a_ = np.searchsorted(artist_ids, first["artist_id"].to_numpy())
    ok = (u < len(user_ids)) & (a_ < len(artist_ids))
    ok[ok] &= (user_ids[u[ok]] == first["user_id"].to_numpy()[ok]) & (
        artist_ids[a_[ok]] == first["artist_id"].to_numpy()[ok]
    )
    key = sp.csr_matrix(
        (first["first_position"].to_numpy()[ok] + 1, (u[ok], a_[ok])), shape=c.shape
    )
    key.sort_indices()
    if np.array_equal(key.indptr, c.indptr) and np.array_equal(key.indices, c.indices):
        kdata = key.data
    else:  # pairs the plays file and the matrix do not share get no position: they go last
        rows_of = np.repeat(np.arange(c.shape[0]), np.diff(c.indptr))
        kdata = np.asarray(key[rows_of, c.indices]).ravel()
    kdata = np.where(kdata > 0, kdata, np.iinfo(np.int64).max)
    out = {}
    for r in range(c.shape[0]):
        a, b = c.indptr[r], c.indptr[r + 1]
        cols = c.indices[a:b]
        kr = kdata[a:b]
        o = np.lexsort((cols, kr))
        out[r] = {
            str(int(artist_ids[j])): int(v) for j, v in zip(cols[o], c.data[a:b][o], strict=True)
        }
    return out


def create_sample(
    session_dict: dict,
    all_artist_ids: list[int],
    rng: random.Random,
    negative: float = 1e-5,
    positive: float = 0.1,
    *,
    fix_negatives: bool = False,
) -> list[list]:
    """``create_sample`` of ``In [15]`` with ``random.sample`` from ``rng``.

    ``not_listened_artists`` is computed once: subtracting a set of string keys from a set of int ids
    removes nothing, so it is the same list for every user (checked: the keys must be strings).
    """
    catalogue = list(set(all_artist_ids))
    sample = []
    for user, session in session_dict.items():
        if any(not isinstance(a, str) for a in session):
            raise TypeError("session keys must be strings, as the study's Counter keys were")
        factor = 1.0 / sum(session.values())
        for artist in session:
            if session[artist] * factor >= positive:
                sample.append([user, artist, 1])
        not_listened_artists = catalogue  # set(all_artist_ids) - set(session.keys()): all of it
        if fix_negatives:  # the text: artists the user did not listen to (keys as ints)
            heard = {int(a) for a in session}
            not_listened_artists = [a for a in catalogue if a not in heard]
        perc = int(len(not_listened_artists) * negative)
        indices = rng.sample(range(len(not_listened_artists)), perc)
        for i in indices:
            sample.append([user, not_listened_artists[i], -1])
    return sample


def decode(sample: list[list]) -> tuple[np.ndarray, np.ndarray, dict, dict]:
    """``In [21]``-``In [22]``: ``(X int64 [n, 2], y float32 [n], idx_2_user, idx_2_artist)``.

    Rules: ``np.asarray`` makes every entry a string, as in the study; ids are numbered in order of
    first appearance (the study: set order); ``X`` and ``y`` converted with ``astype`` (the study's
    ``torch.Tensor`` of a string array raises).
    """
    arr = np.asarray(sample)
    if arr.size == 0:
        return np.zeros((0, 2), np.int64), np.zeros(0, np.float32), {}, {}
    idx_2_user = dict(enumerate(dict.fromkeys(arr[:, 0])))
    user_2_idx = {v: k for k, v in idx_2_user.items()}
    idx_2_artist = dict(enumerate(dict.fromkeys(arr[:, 1])))
    artist_2_idx = {v: k for k, v in idx_2_artist.items()}
    X = np.stack(
        [
            np.array([user_2_idx[u] for u in arr[:, 0]], dtype=np.int64),
            np.array([artist_2_idx[a] for a in arr[:, 1]], dtype=np.int64),
        ],
        axis=1,
    )
    y = arr[:, 2].astype(np.float32)
    return X, y, idx_2_user, idx_2_artist


def split_data(
    y: np.ndarray,
    np_rng: np.random.RandomState,
    val_split_size=0.15,
    test_split_size=0.15,
    *,
    fix_positive: bool = False,
):
    """``split_data`` of ``In [24]``: (train, val, test) row indices. Every row is "positive"
    (``if y:`` is true for +1 and -1); ``fix_positive=True`` takes only +1 rows, as the text meant."""
    data_size = len(y)
    positive_idx = [i for i, t in enumerate(y) if (t > 0 if fix_positive else t)]
    indices = list(range(data_size))
    positive_data_size = len(positive_idx)
    val_split = int(np.floor(val_split_size * positive_data_size))
    test_split = int(np.floor((test_split_size + val_split_size) * positive_data_size))
    np_rng.shuffle(positive_idx)
    val_indices = positive_idx[:val_split]
    test_indices = positive_idx[val_split:test_split]
    train_indices = positive_idx[test_split:] + list(set(indices) - set(positive_idx))
    return train_indices, val_indices, test_indices


def array_to_dict(array: np.ndarray) -> defaultdict:
    """``In [26]``: {user: [artists]} in row order."""
    d = defaultdict(list)
    for i in array:
        d[int(i[0])].append(int(i[1]))
    return d


class StudyEmbedder(nn.Module):
    """``UserEmbedder`` / ``ArtistEmbedder`` of ``In [25]`` (no extra features)."""

    def __init__(self, n_hidden: int, size: int, embedding_dim: int) -> None:
        super().__init__()
        self.embeddings = nn.Embedding(size, embedding_dim)
        self.model = nn.Sequential(
            nn.Linear(embedding_dim, n_hidden),
            nn.Sigmoid(),
            nn.Linear(n_hidden, n_hidden),
            nn.Sigmoid(),
        )

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return self.model(self.embeddings(X))


@dataclass
class AsRanRun:
    """The run: sample facts, split, the best model's metric as the study computed it and correctly."""

    n_sample: int
    n_positives: int
    n_negatives: int
    negatives_per_user: int
    n_slice: int
    n_users: int
    n_artists: int
    n_train: int
    n_val: int
    n_test: int
    val_users: int
    test_users: int
    test_negative_share: float
    val_users_in_train_share: float
    history: list[dict]
    best_epoch: int
    study_metric: float
    study_metric_correct: float
    chance: np.ndarray
    lr_after_epoch_1: float
    X_test: dict
    X_train: dict
    user_embed: torch.Tensor
    artist_embed: torch.Tensor


def run_as_ran(
    counts: sp.spmatrix,
    user_ids: np.ndarray,
    artist_ids: np.ndarray,
    first: pd.DataFrame,
    catalogue_ids: np.ndarray,
    seed: int = 0,
    *,
    epochs: int = 2000,
    eval_every: int = 20,
    chance_reps: int = 20,
    negative: float = 1e-5,
    positive: float = 0.1,
    fixes: frozenset[str] | set[str] = frozenset(),
) -> AsRanRun:
    """The study's embedding pipeline end to end on ``counts`` (every user), as the module docstring
    describes; ``catalogue_ids`` are the artist ids of the persons file (the study's ``artist_ids``).

    ``fixes`` switches departures off one by one: ``"negatives"`` (negatives from unheard artists),
    ``"positive_split"`` (only +1 rows to validation and test), ``"step_per_epoch"`` (StepLR once per
    epoch), ``"correct_metric"`` (validation and test with a correct top-k, ids over all artists)."""
    unknown = set(fixes) - set(EMBEDDING_FIXES)
    if unknown:
        raise ValueError(f"unknown fixes {sorted(unknown)}; known: {EMBEDDING_FIXES}")
    rng = random.Random(seed)
    np_rng = np.random.RandomState(seed)
    torch.manual_seed(seed)
    sample = create_sample(
        session_dict(counts, user_ids, artist_ids, first),
        [int(a) for a in catalogue_ids],
        rng,
        negative,
        positive,
    )
    n_pos = sum(1 for s in sample if s[2] == 1)
    per_user = int(len(set(int(a) for a in catalogue_ids)) * negative)
    full = len(sample)
    sample = sample[: len(sample) // 100]
    X, y, idx_2_user, idx_2_artist = decode(sample)
    if len(X) < 2:
        raise ValueError(f"the 1% slice holds {len(X)} rows: too few to split and train")
    train_ind, val_ind, test_ind = split_data(y, np_rng, fix_positive="positive_split" in fixes)
    Xt = torch.as_tensor(X)
    yt = torch.as_tensor(y)
    X_val = array_to_dict(X[val_ind])
    X_test = array_to_dict(X[test_ind])
    X_train = array_to_dict(X[train_ind])
    n_u, n_a = len(idx_2_user), len(idx_2_artist)
    user_emb = StudyEmbedder(20, n_u, 10)
    artist_emb = StudyEmbedder(20, n_a, 10)
    criterion = nn.CosineEmbeddingLoss()
    optimizer = torch.optim.Adam(
        list(user_emb.parameters()) + list(artist_emb.parameters()), lr=0.001
    )
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=10, gamma=0.1)
    dataset = torch.utils.data.TensorDataset(Xt, yt)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=256, sampler=torch.utils.data.SubsetRandomSampler(train_ind)
    )
    all_u = torch.arange(n_u)
    all_a = torch.arange(n_a)
    val_fn = correct_validate if "correct_metric" in fixes else study_validate
    history = []
    best, best_epoch, best_state = 0.0, -1, None
    lr1 = float("nan")
    for epoch in range(epochs):
        user_emb.train()
        artist_emb.train()
        for x, target in loader:
            loss = criterion(user_emb(x[:, 0]), artist_emb(x[:, -1]), target.view(-1))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if "step_per_epoch" not in fixes:
                scheduler.step()
        if "step_per_epoch" in fixes:
            scheduler.step()
        if epoch == 0:
            lr1 = optimizer.param_groups[0]["lr"]
        if epoch % eval_every == 0:
            with torch.no_grad():
                metric = val_fn(user_emb(all_u), artist_emb(all_a), X_val, X_train, len(X_val))
            history.append(
                {"epoch": epoch, "val_metric": metric, "lr": optimizer.param_groups[0]["lr"]}
            )
            # rule: the study kept a model only when metric > 0 (else its save cell fails with a
            # NameError); here the first validated model is kept until one beats it
            if metric > best or best_state is None:
                if metric > best:
                    best = metric
                best_epoch = epoch
                best_state = (
                    copy.deepcopy(user_emb.state_dict()),
                    copy.deepcopy(artist_emb.state_dict()),
                )
    user_emb.load_state_dict(best_state[0])
    artist_emb.load_state_dict(best_state[1])
    with torch.no_grad():
        ue, ae = user_emb(all_u), artist_emb(all_a)
        metric = study_validate(ue, ae, X_test, X_train, len(X_test))
        correct = correct_validate(ue, ae, X_test, X_train, len(X_test))
    chance = validate_chance(X_test, X_train, n_u, n_a, len(X_test), reps=chance_reps, seed=seed)
    train_users = set(X[train_ind, 0].tolist())
    return AsRanRun(
        n_sample=full,
        n_positives=n_pos,
        n_negatives=full - n_pos,
        negatives_per_user=per_user,
        n_slice=len(X),
        n_users=n_u,
        n_artists=n_a,
        n_train=len(train_ind),
        n_val=len(val_ind),
        n_test=len(test_ind),
        val_users=len(X_val),
        test_users=len(X_test),
        test_negative_share=float((y[test_ind] < 0).mean()) if len(test_ind) else float("nan"),
        val_users_in_train_share=float(np.mean([u in train_users for u in X_val]))
        if X_val
        else float("nan"),
        history=history,
        best_epoch=best_epoch,
        study_metric=float(metric),
        study_metric_correct=float(correct),
        chance=chance,
        lr_after_epoch_1=lr1,
        X_test=dict(X_test),
        X_train=X_train,
        user_embed=ue,
        artist_embed=ae,
    )


AS_RAN_FILE = "study_embedding.npz"


def _dict_arrays(d: dict, name: str) -> dict[str, np.ndarray]:
    users = np.asarray([u for u, v in d.items() for _ in v], dtype=np.int64)
    artists = np.asarray([a for v in d.values() for a in v], dtype=np.int64)
    keys = np.asarray(list(d.keys()), dtype=np.int64)
    return {f"{name}_users": users, f"{name}_artists": artists, f"{name}_keys": keys}


def _arrays_dict(z, name: str) -> dict:
    d = {int(k): [] for k in z[f"{name}_keys"]}
    for u, a in zip(z[f"{name}_users"], z[f"{name}_artists"], strict=True):
        d[int(u)].append(int(a))
    return d


def save_as_ran(run: AsRanRun, build_dir) -> Path:
    """Write the best model's embeddings and ``X_test`` / ``X_train`` for chapter 06's t-test."""
    path = artifacts_dir(build_dir) / AS_RAN_FILE
    np.savez_compressed(
        path,
        user_embed=run.user_embed.numpy(),
        artist_embed=run.artist_embed.numpy(),
        **_dict_arrays(run.X_test, "test"),
        **_dict_arrays(run.X_train, "train"),
    )
    return path


def load_as_ran(build_dir) -> tuple[torch.Tensor, torch.Tensor, dict, defaultdict]:
    """``(user_embed, artist_embed, X_test, X_train)`` as chapter 04 saved them (dicts in key order)."""
    path = require_artifact(build_dir, AS_RAN_FILE, "04_embeddings")
    with np.load(path) as z:
        return (
            torch.as_tensor(z["user_embed"]),
            torch.as_tensor(z["artist_embed"]),
            _arrays_dict(z, "test"),
            defaultdict(list, _arrays_dict(z, "train")),
        )
