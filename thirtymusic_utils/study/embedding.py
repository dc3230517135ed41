"""The study's embedding model as it ran: its split, its training run (the ``seed`` configuration) and
its metric (notebook cells ``In [21]`` to ``In [33]``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from torch.nn import functional as F

from ..models.training import (
    SEED_TOWER,
    SEED_TRAIN,
    TrainConfig,
    TrainResult,
    fit,
    new_model,
    top_n,
)
from ..models.two_tower import TwoTower, heard_mask
from .sample import StudySample, study_sample

__all__ = [
    "SeedRun",
    "StudySplit",
    "output_cosines",
    "run_seed",
    "seed_diagnostics",
    "study_metric",
    "study_split",
]


@dataclass(frozen=True)
class StudySplit:
    """Indices into a :class:`StudySample`: ``train`` (all it trains on, in sample order), ``val``,
    ``test`` (positives only) and ``train_all`` (the training part before the ``train_fraction`` cut)."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    train_all: np.ndarray


def study_split(
    sample: StudySample,
    seed: int = 0,
    *,
    val_share: float = 0.15,
    test_share: float = 0.15,
    train_fraction: float = 1.0,
) -> StudySplit:
    """The study's split: positives shuffled, ``val_share`` to validation, ``test_share`` to test, the rest
    plus every negative to training; then only the first ``train_fraction`` of the training part (in
    sample order, i.e. the first users) is trained on."""
    if val_share < 0 or test_share < 0 or val_share + test_share >= 1:
        raise ValueError(
            f"need val_share, test_share >= 0 with sum < 1, got {val_share}, {test_share}"
        )
    if not 0.0 < train_fraction <= 1.0:
        raise ValueError(f"train_fraction must be in (0, 1], got {train_fraction}")
    rng = np.random.default_rng(seed)
    pos = np.flatnonzero(sample.is_positive)
    perm = rng.permutation(pos)
    n_val = int(round(val_share * len(pos)))
    n_test = int(round(test_share * len(pos)))
    val = np.sort(perm[:n_val])
    test = np.sort(perm[n_val : n_val + n_test])
    held = np.zeros(len(sample), dtype=bool)
    held[val] = True
    held[test] = True
    train_all = np.flatnonzero(~held)
    n_train = max(1, int(len(train_all) * train_fraction)) if len(train_all) else 0
    return StudySplit(train=train_all[:n_train], val=val, test=test, train_all=train_all)


def _pairs_csr(users: np.ndarray, artists: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    """Binary CSR of (user, artist) pairs."""
    data = np.ones(len(users), dtype=np.float32)
    m = sp.csr_matrix((data, (users, artists)), shape=shape)
    m.sum_duplicates()
    m.data[:] = 1.0
    return m


def study_metric(
    model: TwoTower,
    relevant: sp.spmatrix,
    exclude: sp.spmatrix,
    k: int = 10,
    *,
    device: str | torch.device | None = None,
) -> float:
    """The study's metric: mean over users with a relevant artist of |top-k ∩ relevant| / min(k, |relevant|).

    ``relevant`` and ``exclude`` are users x artists matrices (the held-out positives and the user's
    training artists); the top-k excludes ``exclude``'s cells.
    """
    rel = sp.csr_matrix(relevant)
    users = np.flatnonzero(np.diff(rel.indptr))
    if not len(users):
        return float("nan")
    top = top_n(model, users, exclude, k, device=device)
    hits = _row_hits(top, rel, users)
    sizes = np.diff(rel.indptr)[users]
    return float(np.mean(hits / np.minimum(k, sizes)))


def _row_hits(top: np.ndarray, rel: sp.csr_matrix, users: np.ndarray) -> np.ndarray:
    """Per user row: how many of ``top``'s columns are stored in ``rel``'s row."""

    rows = np.repeat(users, top.shape[1])
    cols = top.ravel()
    ok = cols >= 0
    hit = np.zeros(len(cols), dtype=bool)
    hit[ok] = heard_mask(rel, rows[ok], cols[ok])
    return hit.reshape(top.shape).sum(axis=1)


@dataclass
class SeedRun:
    """The ``seed`` configuration trained on a matrix: sample, split, model, curves and its own metric."""

    model: TwoTower
    result: TrainResult
    config: TrainConfig
    sample: StudySample
    split: StudySplit
    study_metric_val: float
    study_metric_test: float


def _split_pairs(sample: StudySample, idx: np.ndarray) -> sp.csr_matrix:
    return _pairs_csr(sample.users[idx], sample.artists[idx], (sample.n_users, sample.n_artists))


def run_seed(
    counts: sp.spmatrix,
    seed: int = 0,
    *,
    config: TrainConfig = SEED_TRAIN,
    tower: dict[str, Any] | None = None,
    positive: float = 0.1,
    negative: float = 1e-5,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> SeedRun:
    """The study's pipeline on ``counts``: its sample rule, its split, its model, loss, schedule and metric.

    Validation (the study's metric on the validation positives) runs every ``config.eval_every`` epochs;
    the best state is kept and scored on the test positives. Artists of the user's training part are
    excluded from the top-k.
    """
    sample = study_sample(counts, positive=positive, negative=negative, seed=seed)
    if not sample.is_positive.any():
        raise ValueError(f"the sample has no positives (no artist reaches a share of {positive})")
    ssplit = study_split(sample, seed, train_fraction=config.train_fraction)
    exclude = _split_pairs(sample, ssplit.train_all)
    rel_val = _split_pairs(sample, ssplit.val)
    rel_test = _split_pairs(sample, ssplit.test)
    model = new_model(sample.n_users, sample.n_artists, tower or SEED_TOWER, seed)
    result = fit(
        model,
        sample.users[ssplit.train],
        sample.artists[ssplit.train],
        sample.targets[ssplit.train],
        config,
        validate=lambda m: study_metric(m, rel_val, exclude),
        seed=seed,
        device=device,
        progress=progress,
    )
    return SeedRun(
        model=model,
        result=result,
        config=config,
        sample=sample,
        split=ssplit,
        study_metric_val=result.best_metric,
        study_metric_test=study_metric(model, rel_test, exclude),
    )


@torch.no_grad()
def output_cosines(
    model: TwoTower, tower: str = "artist", n: int = 2000, seed: int = 0
) -> np.ndarray:
    """Cosines between the outputs of ``n`` random distinct users or artists (all pairs i < j).

    A collapsed model (every output pointing the same way) shows cosines piled up near 1.
    """
    if tower not in ("user", "artist"):
        raise ValueError(f"tower must be 'user' or 'artist', got {tower!r}")
    total = model.config.n_users if tower == "user" else model.config.n_artists
    idx = np.random.default_rng(seed).choice(total, size=min(n, total), replace=False)
    dev = next(model.parameters()).device
    t = torch.as_tensor(np.sort(idx), device=dev)
    v = model.user_vectors(t) if tower == "user" else model.artist_vectors(t)
    v = F.normalize(v, dim=-1)
    c = (v @ v.T).cpu().numpy()
    return c[np.triu_indices(len(idx), k=1)].astype(np.float64)


def seed_diagnostics(run: SeedRun) -> dict[str, float | int]:
    """Why the ``seed`` configuration scores so low, in numbers (flat dict for the results JSON)."""
    sample, ssplit, cfg = run.sample, run.split, run.config
    trained_users = np.unique(sample.users[ssplit.train])
    val_users = np.unique(sample.users[ssplit.val])
    n_batches_per_epoch = -(-len(ssplit.train) // cfg.batch_size)
    h = run.result.history
    cos_a = output_cosines(run.model, "artist")
    cos_u = output_cosines(run.model, "user")
    return {
        "seed_train_examples": int(len(ssplit.train)),
        "seed_train_negatives": int((sample.targets[ssplit.train] < 0).sum()),
        "seed_train_users": int(len(trained_users)),
        "seed_train_user_share": float(len(trained_users) / max(sample.n_users, 1)),
        "seed_val_users_trained_share": float(np.isin(val_users, trained_users).mean())
        if len(val_users)
        else float("nan"),
        "seed_batches_per_epoch": int(n_batches_per_epoch),
        "seed_lr_final": float(h["lr_end"].iloc[-1]),
        "seed_lr_after_epoch_1": float(h["lr_end"].iloc[0]),
        "seed_artist_cosine_mean": float(cos_a.mean()) if len(cos_a) else float("nan"),
        "seed_artist_cosine_min": float(cos_a.min()) if len(cos_a) else float("nan"),
        "seed_user_cosine_mean": float(cos_u.mean()) if len(cos_u) else float("nan"),
    }
