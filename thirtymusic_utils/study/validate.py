"""The study's embedding metric exactly as its code ran (notebook cell ``In [28]``, ``validate``), its
chance level, and the same metric with a correct top k.

What ``validate`` does: the artist embeddings go through a ``DataLoader`` with a
``SubsetRandomSampler`` in batches of 1000; for each user the cosine with each batch is sorted
descending and the first k values are kept *with their positions inside the batch*; those positions,
not artist ids, are then pooled over batches, sorted by cosine **ascending** (the lowest of the
pooled candidates first), filtered with ``np.setdiff1d(..., assume_unique=True)`` against the user's
training artists and cut to k. The user's score is ``|intersect1d(relevant, those positions)| /
min(k, |relevant|)``, averaged over ``n_unique_users``. Positions inside a shuffled batch are
unrelated to artist ids, so the figure is at chance for any model: :func:`validate_chance`.

Departures: none in the arithmetic (the same torch and numpy calls); the sampler's shuffle draws
from the torch generator passed in (the study's global one).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

__all__ = [
    "STUDY_SIZES",
    "correct_validate",
    "study_scale_chance",
    "study_validate",
    "validate_chance",
]

#: The sizes the study printed: 10,000 rows in the 1% slice, 1,427 users and 8,889 artists after
#: decoding, 466 test users (``test_unique_users``); 15% of the rows go to test, 70% to training.
STUDY_SIZES = {"rows": 10_000, "users": 1427, "artists": 8889, "test_users": 466}
#: The study's test figure (``In [33]``).
STUDY_METRIC = 0.003218884120171674


@torch.no_grad()
def study_validate(
    all_user_embed: torch.Tensor,
    all_artist_embed: torch.Tensor,
    X_val: Mapping[int, Sequence[int]],
    X: Mapping[int, Sequence[int]],
    n_unique_users: int,
    k: int = 10,
    batch_size: int = 1000,
    generator: torch.Generator | None = None,
) -> float:
    """``validate`` of ``In [28]``, call for call (``X`` returns ``[]`` for a user it lacks).

    Its ``DataLoader`` over a ``SubsetRandomSampler`` is replaced by what it does, draw for draw:
    per user an iterator's base seed from torch's global random state, the sampler's permutation
    of the artists (from ``generator``, else the global state), and batches of the embeddings in
    that order; the same batches, figure and random state after it, without fetching one artist
    at a time (the oracle test checks all three against the study's cell).
    """
    cosine = torch.nn.CosineSimilarity()
    n_a = all_artist_embed.shape[0]
    total_relevant = 0.0
    for user_id, artists in X_val.items():
        relevant_artists = np.array(artists)
        listened_artists = np.array(X.get(user_id, []))
        topk = torch.Tensor()
        topk_indices = torch.Tensor()
        current_user_tensor = all_user_embed[user_id].view(1, all_user_embed.shape[1])
        torch.empty((), dtype=torch.int64).random_()  # the iterator's base seed (loader: global)
        order = torch.randperm(n_a, generator=generator)  # the sampler's order
        for s in range(0, n_a, batch_size):
            batch_artist = all_artist_embed[order[s : s + batch_size]]
            cos_dist = cosine(current_user_tensor, batch_artist)
            topk_b, topk_indices_b = torch.sort(cos_dist, descending=True)
            topk = torch.cat([topk, topk_b[:k]], dim=0)
            topk_indices = torch.cat(
                [topk_indices, topk_indices_b[:k].type(torch.FloatTensor)], dim=0
            )
        topk_all = np.transpose(torch.stack([topk, topk_indices], dim=0).detach().numpy())
        topk_all = topk_all[topk_all[:, 0].argsort()]
        topk_idx = topk_all[:, 1]
        recs = np.setdiff1d(topk_idx, listened_artists, assume_unique=True)[:k]
        n_relevant = len(relevant_artists)
        total_relevant += np.intersect1d(relevant_artists, recs).shape[0] / min(k, n_relevant)
    return total_relevant / n_unique_users


@torch.no_grad()
def correct_validate(
    all_user_embed: torch.Tensor,
    all_artist_embed: torch.Tensor,
    X_val: Mapping[int, Sequence[int]],
    X: Mapping[int, Sequence[int]],
    n_unique_users: int,
    k: int = 10,
) -> float:
    """The metric the study's text describes: each user's k unheard artists of highest cosine (ids,
    over all artists at once), ``|top k ∩ relevant| / min(k, |relevant|)``, averaged the same way."""
    u = torch.nn.functional.normalize(all_user_embed, dim=1)
    a = torch.nn.functional.normalize(all_artist_embed, dim=1)
    total = 0.0
    for user_id, artists in X_val.items():
        cos = (a @ u[user_id]).clone()
        heard = np.asarray(X.get(user_id, []), dtype=np.int64)
        if len(heard):
            cos[torch.as_tensor(heard)] = -np.inf
        order = torch.argsort(cos, descending=True, stable=True)[:k].numpy()
        rel = np.unique(np.asarray(artists, dtype=np.int64))
        total += len(np.intersect1d(rel, order)) / min(k, len(artists))
    return total / n_unique_users


def validate_chance(
    X_val: Mapping[int, Sequence[int]],
    X: Mapping[int, Sequence[int]],
    n_users: int,
    n_artists: int,
    n_unique_users: int,
    *,
    dim: int = 20,
    reps: int = 20,
    seed: int = 0,
    k: int = 10,
    batch_size: int = 1000,
) -> np.ndarray:
    """``study_validate`` with random embeddings (no information about anyone), ``reps`` times: the
    metric's chance distribution for these users, relevant and training artists."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(reps):
        ue = torch.randn(n_users, dim, generator=gen)
        ae = torch.randn(n_artists, dim, generator=gen)
        out.append(study_validate(ue, ae, X_val, X, n_unique_users, k, batch_size, gen))
    return np.asarray(out)


def study_scale_chance(
    reps: int = 200, seed: int = 0, k: int = 10, batch_size: int = 1000
) -> np.ndarray:
    """The chance distribution of ``validate`` at the study's own sizes (:data:`STUDY_SIZES`).

    Reconstruction: 1,500 test rows (15% of 10,000) spread over 466 users (each at least one) and 7,000
    training rows over 1,427 users, artists drawn uniformly from 8,889. Only the sizes are the study's.
    Emulated, not run: the batch shuffle is independent of the model, so the 10 positions a batch
    contributes are a uniform 10-subset of its positions whatever the embeddings, and the order in
    which the pooled candidates are taken is independent of their positions. Each user's candidates
    are therefore drawn as such subsets, taken in random order through the same ``np.setdiff1d`` /
    ``np.intersect1d`` calls as ``validate``.
    """
    rng = np.random.default_rng(seed)
    n_u, n_a, n_t = STUDY_SIZES["users"], STUDY_SIZES["artists"], STUDY_SIZES["test_users"]
    n_test_rows = int(0.3 * STUDY_SIZES["rows"]) - int(0.15 * STUDY_SIZES["rows"])
    n_train_rows = STUDY_SIZES["rows"] - 2 * int(0.15 * STUDY_SIZES["rows"])
    sizes = [batch_size] * (n_a // batch_size) + ([n_a % batch_size] if n_a % batch_size else [])
    out = []
    for _ in range(reps):
        users = rng.choice(n_u, n_t, replace=False)
        owner = np.concatenate([users, rng.choice(users, n_test_rows - n_t)])
        X_test: dict[int, list[int]] = {}
        for u, a in zip(owner, rng.integers(0, n_a, n_test_rows), strict=True):
            X_test.setdefault(int(u), []).append(int(a))
        X: dict[int, list[int]] = {}
        for u, a in zip(
            rng.integers(0, n_u, n_train_rows), rng.integers(0, n_a, n_train_rows), strict=True
        ):
            X.setdefault(int(u), []).append(int(a))
        total = 0.0
        for u, rel in X_test.items():
            cand = np.concatenate(
                [np.argpartition(rng.random(b), min(k, b) - 1)[: min(k, b)] for b in sizes]
            ).astype(np.float32)
            cand = cand[rng.permutation(len(cand))]
            recs = np.setdiff1d(cand, np.array(X.get(u, [])), assume_unique=True)[:k]
            total += np.intersect1d(np.array(rel), recs).shape[0] / min(k, len(rel))
        out.append(total / len(X_test))
    return np.asarray(out)
