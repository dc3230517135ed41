"""Training the two-tower model, the study's way (``seed``, chapter 04) and properly (``improved``, chapter 05).

- ``seed``: the study's choices — ``nn.CosineEmbeddingLoss`` on its ±1 sample, Adam 1e-3, batch 256,
  ``StepLR(step_size=10, gamma=0.1)`` stepped after every *batch* (``scheduler_step="batch"``), trained on the
  first 1% of the training sample, validated every 20 epochs with the study's metric. It trains with the
  pair trainer :func:`fit` (a loop over batches of pairs), which is what the study ran.
- ``improved``: the same two-tower family — wider, without the squashing sigmoid, and with a user tower
  that reads the artists the user played — trained on every (user, artist) pair of chapter 02's training
  matrix with a softmax ranking loss over sampled negatives, validated with HR@10 on a hold-out of
  training users made by chapter 02's own protocol. It trains with the whole-data trainer
  (:mod:`thirtymusic_utils.models.batched`: batches of users, shared negatives); :data:`PAIR_IMPROVED_TRAIN`
  keeps the same configuration on the pair trainer, for comparison.

Both keep the best validation state (early stopping), record learning curves, save a ``state_dict`` plus a
JSON config (:func:`save_checkpoint` / :func:`load_checkpoint`), choose the device automatically (CUDA when
present) unless told, and take every random choice from one ``seed``.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from ..book.paths import artifacts_dir
from .batched import (
    BatchedConfig,
    BatchedResult,
    ConfigDict,
    TrainResult,
    fit_batched,
    rank_hidden_blocks,
)
from .two_tower import (
    TowerConfig,
    TwoTower,
    _check_counts,
    _row_of_entry,
    resolve_device,
    sample_unheard,
)

__all__ = [
    "ABLATION",
    "ID_TOWER",
    "IMPROVED_TOWER",
    "IMPROVED_TRAIN",
    "ImprovedRun",
    "ImprovedTuning",
    "OUTCOMES_05_FILE",
    "PAIR_IMPROVED_TRAIN",
    "SEED_TOWER",
    "SEED_TRAIN",
    "TRAIN_PROFILES",
    "TrainConfig",
    "TrainResult",
    "checkpoint_dir",
    "fit",
    "holdout_hit_rate",
    "improved_train_config",
    "load_checkpoint",
    "most_listened",
    "new_model",
    "outcomes_05_frame",
    "pairs_from_outcomes",
    "profile_settings",
    "rank_hidden",
    "run_ablation",
    "run_improved",
    "tune_improved",
    "save_checkpoint",
    "save_outcomes_05",
    "similar_artists_embedding",
    "similar_artists_table",
    "top_n",
    "train_pairs",
    "validation_split",
]


# --------------------------------------------------------------------------------------------------
# Configurations
# --------------------------------------------------------------------------------------------------


@dataclass
class TrainConfig(ConfigDict):
    """How to train; JSON-serialisable and saved beside every checkpoint.

    ``loss``: ``"cosine_embedding"`` (the study: ``nn.CosineEmbeddingLoss`` on ±1 targets),
    ``"softmax"`` (cross-entropy of the positive against ``n_negatives`` artists drawn uniformly and
    shared by the batch; the whole catalogue when ``n_negatives >= n_artists``) or ``"bpr"`` (one uniform
    negative per positive). ``scheduler_step``: ``"batch"`` steps ``StepLR`` after every batch as the
    study's code did, ``"epoch"`` after every epoch, ``"none"`` keeps the learning rate.
    ``patience``: evaluations without improvement before stopping (0 never stops early).
    ``sparse_embeddings``: sparse embedding gradients with ``SparseAdam`` (Adam on the Linear layers), so a
    step costs what the batch touches, not the whole catalogue; the study used plain Adam.
    ``train_fraction``: train on the first share of the examples (the study: 1%; :func:`run_seed`).
    ``pair_weighting``: weight of a (user, artist) pair, 1 or log1p(plays) scaled to mean 1.
    ``negatives_per_positive``: unheard artists per pair when :func:`run_improved` trains the
    cosine-embedding loss (the ablation).
    """

    name: str = "improved"
    loss: str = "softmax"
    epochs: int = 30
    batch_size: int = 1024
    lr: float = 1e-3
    weight_decay: float = 0.0
    scheduler_step: str = "none"
    step_size: int = 10
    gamma: float = 0.1
    n_negatives: int = 1024
    temperature: float = 0.1
    eval_every: int = 1
    patience: int = 3
    train_fraction: float = 1.0
    pair_weighting: str = "binary"
    sparse_embeddings: bool = False
    negatives_per_positive: int = 4

    def __post_init__(self) -> None:
        if self.loss not in ("cosine_embedding", "softmax", "bpr"):
            raise ValueError(f"loss must be cosine_embedding, softmax or bpr, got {self.loss!r}")
        if self.scheduler_step not in ("batch", "epoch", "none"):
            raise ValueError(
                f"scheduler_step must be batch, epoch or none, got {self.scheduler_step!r}"
            )
        if self.pair_weighting not in ("binary", "log"):
            raise ValueError(f"pair_weighting must be binary or log, got {self.pair_weighting!r}")
        if self.epochs < 1 or self.batch_size < 1 or self.eval_every < 1 or self.patience < 0:
            raise ValueError("epochs, batch_size and eval_every must be >= 1, patience >= 0")
        if not 0.0 < self.train_fraction <= 1.0:
            raise ValueError(f"train_fraction must be in (0, 1], got {self.train_fraction}")
        if self.lr <= 0 or self.temperature <= 0:
            raise ValueError("lr and temperature must be positive")


#: The study's towers (pass ``n_users``/``n_artists``): Embedding(n, 10), Linear(10, 20), Sigmoid,
#: Linear(20, 20), Sigmoid, cosine.
SEED_TOWER: dict[str, Any] = {
    "embedding_dim": 10,
    "layer_sizes": (20, 20),
    "activation": "sigmoid",
    "output_activation": "sigmoid",
    "similarity": "cosine",
}

#: The study's training: cosine-embedding loss, Adam 1e-3, batch 256, StepLR(10, 0.1) per batch,
#: the first 1% of the training sample, validation every 20 epochs.
SEED_TRAIN = TrainConfig(
    name="seed",
    loss="cosine_embedding",
    epochs=100,
    batch_size=256,
    lr=1e-3,
    scheduler_step="batch",
    step_size=10,
    gamma=0.1,
    eval_every=20,
    patience=3,
    train_fraction=0.01,
)

#: The corrected towers: a wider embedding (128, the ``full`` profile's size; chapter 05 chooses each
#: profile's on validation with :func:`tune_improved`, :data:`TRAIN_PROFILES`) and no squashing sigmoid (a cosine of non-negative vectors is
#: never negative, so the study's towers cannot push an artist away from a user); the user tower reads
#: the user's played artists (mean of a second artist embedding, weighted by log plays, half of them
#: dropped at random in training) instead of a user-id embedding that must be learnt from each user's
#: few pairs alone.
IMPROVED_TOWER: dict[str, Any] = {
    "embedding_dim": 128,
    "layer_sizes": (),
    "activation": "none",
    "output_activation": "none",
    "similarity": "cosine",
    "init_std": 0.1,
    "user_input": "history",
    "history_dropout": 0.5,
    "max_history": 256,
}

#: The ablation's embedding size before its last step, to the size :func:`tune_improved` chose.
ABLATION_DIM = 64

#: The ablation's id-based towers: the improved shape (64-d) but the study's user-id input.
ID_TOWER: dict[str, Any] = {
    **IMPROVED_TOWER,
    "embedding_dim": ABLATION_DIM,
    "user_input": "id",
    "history_dropout": 0.0,
    "max_history": 0,
}

#: The corrected training as the pair trainer (:func:`fit`) ran it before the whole-data trainer: every
#: training pair weighted by log plays, sampled-softmax ranking loss over 1,024 uniform negatives shared by
#: a batch of 1,024 pairs, no learning-rate decay, sparse Adam, early stopping on validation HR@10. Kept
#: for comparison (about 8,000 pairs/s on 2 cores at full scale).
PAIR_IMPROVED_TRAIN = TrainConfig(
    name="improved",
    loss="softmax",
    epochs=20,
    batch_size=1024,
    lr=0.01,
    scheduler_step="none",
    n_negatives=1024,
    temperature=0.2,
    eval_every=1,
    patience=4,
    pair_weighting="log",
    sparse_embeddings=True,
)

#: The corrected training on the whole-data trainer (:func:`~thirtymusic_utils.models.batched.fit_batched`):
#: the same loss family, in batches of users (chunks of up to 32 of a user's pairs, one history sum and
#: dropout draw per chunk), the pair's artist left out by subtraction, 512 negatives shared by the batch
#: and drawn half by popularity (logQ-corrected), batch size from the data (1,024 to 8,192 pairs),
#: learning rate 0.02, temperature 0.15, early stopping on validation HR@10 (the epoch budget and
#: patience per profile: :func:`improved_train_config`). The temperature was chosen on chapter 05's
#: validation users, mean best HR@10 over seeds 0 to 4, on the default stand-in and on HetRec:
#: 0.2 gave 0.147 and 0.395, 0.15 0.150 (seeds 0 to 3) and 0.416, 0.1 (seeds 0 to 2) 0.135 and 0.397
#: (``run_improved`` per seed on chapter 02's split; the closing note of issue 10 has the table).
IMPROVED_TRAIN = BatchedConfig(
    name="improved",
    loss="softmax",
    epochs=20,
    batch_pairs=0,
    lr=0.02,
    n_negatives=512,
    negative_mix=0.5,
    popularity_power=0.75,
    temperature=0.15,
    pair_weighting="log",
    eval_every=1,
    patience=4,
    user_chunk=32,
)


# --------------------------------------------------------------------------------------------------
# The study's split and metric
# --------------------------------------------------------------------------------------------------


@torch.no_grad()
def top_n(
    model: TwoTower,
    rows: np.ndarray,
    exclude: sp.spmatrix | None = None,
    n: int = 10,
    *,
    batch_size: int = 1024,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Top-``n`` artist columns per user row by the model's score, excluding ``exclude``'s stored cells.

    Returns int64 ``[len(rows), n]``, best first, padded with -1 when fewer than ``n`` artists remain.
    Scores (which may be negative) are computed in dense blocks of ``batch_size`` users x all artists.
    """
    dev = resolve_device(device) if device is not None else next(model.parameters()).device
    model = model.to(dev).eval()
    rows = np.asarray(rows, dtype=np.int64)
    n_artists = model.config.n_artists
    k = min(n, n_artists)
    ex = None if exclude is None else sp.csr_matrix(exclude)
    if ex is not None and ex.shape != (model.config.n_users, n_artists):
        raise ValueError(
            f"exclude has shape {ex.shape}, the model {model.config.n_users, n_artists}"
        )
    a = model.artist_vectors()
    out = np.full((len(rows), n), -1, dtype=np.int64)
    for start in range(0, len(rows), batch_size):
        block = rows[start : start + batch_size]
        u = model.user_vectors(torch.as_tensor(block, device=dev))
        scores = model.score_matrix(u, a)
        if ex is not None:
            sub = ex[block]
            r = torch.as_tensor(_row_of_entry(sub), device=dev)
            c = torch.as_tensor(sub.indices.astype(np.int64), device=dev)
            scores[r, c] = -math.inf
        val, idx = torch.topk(scores, k, dim=1)
        idx = idx.cpu().numpy()
        idx[~torch.isfinite(val).cpu().numpy()] = -1
        out[start : start + len(block), :k] = idx
    return out


def rank_hidden(
    model: TwoTower,
    rows: np.ndarray,
    hidden_cols: np.ndarray,
    exclude: sp.spmatrix,
    n: int = 10,
    *,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Rank (1..n) of each row's hidden artist in the model's top-``n`` excluding heard artists, 0 = miss.

    Uses chapter 02's ``hit_ranks`` so the two chapters count hits identically.
    """
    from ..evaluation.metrics import hit_ranks

    rows = np.asarray(rows, dtype=np.int64)
    hidden_cols = np.asarray(hidden_cols, dtype=np.int64)
    if rows.shape != hidden_cols.shape:
        raise ValueError(f"rows {rows.shape} and hidden_cols {hidden_cols.shape} must match")
    top = top_n(model, rows, exclude, n, device=device)
    return np.asarray(hit_ranks(top, hidden_cols), dtype=np.int64)


def holdout_hit_rate(
    model: TwoTower,
    rows: np.ndarray,
    hidden_cols: np.ndarray,
    exclude: sp.spmatrix,
    k: int = 10,
    *,
    device: str | torch.device | None = None,
) -> float:
    """HR@k of the model on hold-out pairs (chapter 02's protocol and metric)."""
    from ..evaluation.metrics import hr_at_k

    return float(hr_at_k(rank_hidden(model, rows, hidden_cols, exclude, k, device=device), k=k))


# --------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------


def train_pairs(
    counts: sp.spmatrix, weighting: str = "binary"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every stored (user, artist) cell of ``counts`` with a weight (1, or log1p(plays) scaled to mean 1)."""
    csr = _check_counts(counts)
    users = _row_of_entry(csr)
    artists = csr.indices.astype(np.int64)
    if weighting == "binary":
        w = np.ones(len(users), dtype=np.float32)
    elif weighting == "log":
        w = np.log1p(csr.data.astype(np.float64))
        w = (w / w.mean()).astype(np.float32) if len(w) else w.astype(np.float32)
    else:
        raise ValueError(f"weighting must be binary or log, got {weighting!r}")
    return users, artists, w


def _state_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _batch_loss(
    model: TwoTower,
    users: torch.Tensor,
    artists: torch.Tensor,
    values: torch.Tensor,
    config: TrainConfig,
    gen: torch.Generator,
) -> torch.Tensor:
    """Loss of one batch (``values``: ±1 targets for cosine_embedding, example weights otherwise)."""
    u = model.user_vectors(users, drop=artists) if model.has_history else model.user_vectors(users)
    a = model.artist_vectors(artists)
    if config.loss == "cosine_embedding":
        return F.cosine_embedding_loss(u, a, values)
    n_art = model.config.n_artists
    dev = users.device
    if config.loss == "bpr":
        neg = torch.randint(n_art, (len(users),), generator=gen).to(dev)
        s_pos = model.similarity(u, a)
        s_neg = model.similarity(u, model.artist_vectors(neg))
        per = -F.logsigmoid((s_pos - s_neg) / config.temperature)
        return (per * values).sum() / values.sum()
    # softmax over the positive and shared negatives (or the whole catalogue)
    if config.n_negatives >= n_art:
        logits = model.score_matrix(u, model.artist_vectors()) / config.temperature
        per = F.cross_entropy(logits, artists, reduction="none")
    else:
        neg = torch.randint(n_art, (config.n_negatives,), generator=gen).to(dev)
        s_pos = model.similarity(u, a).unsqueeze(1)
        s_neg = model.score_matrix(u, model.artist_vectors(neg))
        s_neg = s_neg.masked_fill(neg.unsqueeze(0) == artists.unsqueeze(1), -math.inf)
        logits = torch.cat([s_pos, s_neg], dim=1) / config.temperature
        per = -F.log_softmax(logits, dim=1)[:, 0]
    return (per * values).sum() / values.sum()


def fit(
    model: TwoTower,
    users: np.ndarray,
    artists: np.ndarray,
    values: np.ndarray,
    config: TrainConfig,
    *,
    validate: Callable[[TwoTower], float] | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool = True,
    deterministic: bool = True,
) -> TrainResult:
    """Train ``model`` on (users, artists, values) examples; keep and load the best validation state.

    ``values`` are the ±1 targets for ``loss="cosine_embedding"`` and example weights otherwise.
    ``validate(model) -> float`` (higher is better) runs every ``config.eval_every`` epochs and after the
    last one; without it the last state is kept. Shuffling and negatives come from a
    ``torch.Generator`` seeded with ``seed``, in-model randomness (history dropout) from
    ``torch.manual_seed(seed)``; on the CPU two runs give identical weights.
    """
    users = np.asarray(users, dtype=np.int64)
    artists = np.asarray(artists, dtype=np.int64)
    values = np.asarray(values, dtype=np.float32)
    if not (len(users) == len(artists) == len(values)):
        raise ValueError(
            f"users, artists, values must have one length, got {len(users)}, {len(artists)}, {len(values)}"
        )
    if not len(users):
        raise ValueError("no training examples")
    cfg = model.config
    if users.min() < 0 or users.max() >= cfg.n_users or artists.min() < 0:
        raise ValueError(f"user indices must lie in [0, {cfg.n_users})")
    if artists.max() >= cfg.n_artists:
        raise ValueError(f"artist indices must lie in [0, {cfg.n_artists})")
    if config.loss == "cosine_embedding" and not np.isin(values, (-1.0, 1.0)).all():
        raise ValueError("cosine_embedding needs targets of +1 or -1")
    if model.has_history and len(model.hist_indices) == 0:
        raise ValueError(
            "the model's user tower reads histories: call model.set_history(counts) first"
        )
    if config.loss != "cosine_embedding" and (values <= 0).any():
        raise ValueError(
            f"{config.loss} needs positive example weights (only positives as examples)"
        )

    dev = resolve_device(device)
    previous_det = torch.are_deterministic_algorithms_enabled()
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        return _fit(model, users, artists, values, config, validate, seed, dev, progress)
    finally:
        torch.use_deterministic_algorithms(previous_det)


def _fit(
    model: TwoTower,
    users: np.ndarray,
    artists: np.ndarray,
    values: np.ndarray,
    config: TrainConfig,
    validate: Callable[[TwoTower], float] | None,
    seed: int,
    dev: torch.device,
    progress: bool,
) -> TrainResult:
    start_time = time.perf_counter()
    model = model.to(dev)
    torch.manual_seed(int(seed))  # in-model randomness (history dropout)
    gen = torch.Generator().manual_seed(int(seed))
    t_users = torch.as_tensor(users)
    t_artists = torch.as_tensor(artists)
    t_values = torch.as_tensor(values)
    embeddings = [
        m for m in (model.user_tower[0], model.artist_tower[0]) if isinstance(m, nn.Embedding)
    ]
    if model.user_history is not None:
        embeddings.append(model.user_history)
    if config.sparse_embeddings:
        for emb in embeddings:
            emb.sparse = True
        emb_params = [emb.weight for emb in embeddings]
        rest = [p for p in model.parameters() if all(p is not e for e in emb_params)]
        opts: list[torch.optim.Optimizer] = [torch.optim.SparseAdam(emb_params, lr=config.lr)]
        if rest:
            opts.append(torch.optim.Adam(rest, lr=config.lr, weight_decay=config.weight_decay))
    else:
        opts = [
            torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        ]
    scheds = (
        [
            torch.optim.lr_scheduler.StepLR(o, step_size=config.step_size, gamma=config.gamma)
            for o in opts
        ]
        if config.scheduler_step != "none"
        else []
    )
    try:
        return _loop(
            model,
            t_users,
            t_artists,
            t_values,
            config,
            validate,
            gen,
            dev,
            opts,
            scheds,
            progress,
            start_time,
        )
    finally:
        for emb in embeddings:
            emb.sparse = False


def _loop(
    model: TwoTower,
    t_users: torch.Tensor,
    t_artists: torch.Tensor,
    t_values: torch.Tensor,
    config: TrainConfig,
    validate: Callable[[TwoTower], float] | None,
    gen: torch.Generator,
    dev: torch.device,
    opts: list[torch.optim.Optimizer],
    scheds: list[torch.optim.lr_scheduler.LRScheduler],
    progress: bool,
    start_time: float,
) -> TrainResult:
    """The epoch loop of :func:`fit`."""
    n = len(t_users)
    records: list[dict[str, Any]] = []
    best_metric, best_epoch = -math.inf, 0
    best_state = _state_copy(model)
    bad_evals = 0
    stopped_early = False
    bar = tqdm(range(1, config.epochs + 1), desc=f"train {config.name}", disable=not progress)
    for epoch in bar:
        model.train()
        t0 = time.perf_counter()
        perm = torch.randperm(n, generator=gen)
        total, seen = 0.0, 0
        lr_start = opts[0].param_groups[0]["lr"]
        for b in range(0, n, config.batch_size):
            idx = perm[b : b + config.batch_size]
            bu = t_users[idx].to(dev)
            ba = t_artists[idx].to(dev)
            bv = t_values[idx].to(dev)
            loss = _batch_loss(model, bu, ba, bv, config, gen)
            for o in opts:
                o.zero_grad(set_to_none=True)
            loss.backward()
            for o in opts:
                o.step()
            if config.scheduler_step == "batch":
                for sc in scheds:
                    sc.step()
            total += float(loss.detach()) * len(idx)
            seen += len(idx)
        if config.scheduler_step == "epoch":
            for sc in scheds:
                sc.step()
        rec: dict[str, Any] = {
            "epoch": epoch,
            "loss": total / max(seen, 1),
            "lr": lr_start,
            "lr_end": opts[0].param_groups[0]["lr"],
            "val_metric": float("nan"),
            "epoch_seconds": time.perf_counter() - t0,
        }
        last = epoch == config.epochs
        if validate is not None and (epoch % config.eval_every == 0 or last):
            model.eval()
            metric = float(validate(model))
            rec["val_metric"] = metric
            if metric > best_metric:
                best_metric, best_epoch = metric, epoch
                best_state = _state_copy(model)
                bad_evals = 0
            else:
                bad_evals += 1
            bar.set_postfix(
                loss=f"{rec['loss']:.4f}", val=f"{metric:.4f}", best=f"{best_metric:.4f}"
            )
        else:
            bar.set_postfix(loss=f"{rec['loss']:.4f}")
        records.append(rec)
        if config.patience and bad_evals >= config.patience:
            stopped_early = not last
            break
    bar.close()
    if validate is None:
        best_state, best_epoch, best_metric = _state_copy(model), len(records), float("nan")
    model.load_state_dict(best_state)
    model.eval()
    return TrainResult(
        history=pd.DataFrame.from_records(records),
        best_epoch=best_epoch,
        best_metric=float(best_metric),
        best_state=best_state,
        stopped_early=stopped_early,
        seconds=time.perf_counter() - start_time,
        n_examples=n,
        device=str(dev),
    )


def new_model(n_users: int, n_artists: int, tower: dict[str, Any], seed: int = 0) -> TwoTower:
    """A freshly initialised :class:`TwoTower` (weights from ``torch.manual_seed(seed)``)."""
    torch.manual_seed(int(seed))
    return TwoTower(TowerConfig(n_users=n_users, n_artists=n_artists, **tower))


# --------------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------------


def checkpoint_dir(build_dir: str | os.PathLike | None, name: str) -> Path:
    """``BUILD_DIR/artifacts/checkpoints/<name>`` (created)."""
    path = artifacts_dir(build_dir) / "checkpoints" / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def save_checkpoint(
    folder: str | os.PathLike,
    model: TwoTower,
    train_config: TrainConfig | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``model.pt`` (the ``state_dict``) and ``config.json`` (tower + training config + extra)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(_state_copy(model), folder / "model.pt")
    meta = {
        "tower": model.config.to_dict(),
        "train": train_config.to_dict() if train_config is not None else None,
        "extra": extra or {},
        "torch_version": torch.__version__,
    }
    (folder / "config.json").write_text(
        json.dumps(meta, indent=2, sort_keys=True, default=float) + "\n"
    )
    return folder


def load_checkpoint(
    folder: str | os.PathLike, device: str | torch.device | None = None
) -> tuple[TwoTower, dict[str, Any]]:
    """Rebuild the model from ``config.json`` and load ``model.pt``; returns (model in eval mode, meta)."""
    folder = Path(folder)
    cfg_path, state_path = folder / "config.json", folder / "model.pt"
    for p in (cfg_path, state_path):
        if not p.exists():
            raise FileNotFoundError(
                f"{p} does not exist: expected a checkpoint written by save_checkpoint"
            )
    meta = json.loads(cfg_path.read_text())
    if "tower" not in meta:
        raise ValueError(f"{cfg_path} has no 'tower' entry: not a two-tower checkpoint")
    model = TwoTower(TowerConfig.from_dict(meta["tower"]))
    dev = resolve_device(device)
    state = torch.load(state_path, map_location=dev, weights_only=True)
    if model.has_history:
        model.set_history_arrays(state["hist_indptr"], state["hist_indices"], state["hist_weights"])
    model.load_state_dict(state)
    return model.to(dev).eval(), meta


# --------------------------------------------------------------------------------------------------
# Lookups
# --------------------------------------------------------------------------------------------------


@torch.no_grad()
def similar_artists_embedding(
    model: TwoTower, col: int, n: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """The ``n`` artists whose tower outputs have the highest cosine with artist ``col`` (itself excluded).

    Returns (columns, cosines), best first.
    """
    n_art = model.config.n_artists
    if not 0 <= col < n_art:
        raise ValueError(f"artist column {col} out of range [0, {n_art})")
    model.eval()
    a = F.normalize(model.artist_vectors(), dim=-1)
    sims = a @ a[col]
    sims[col] = -math.inf
    val, idx = torch.topk(sims, min(n, n_art - 1))
    return idx.cpu().numpy().astype(np.int64), val.cpu().numpy().astype(np.float64)


def pairs_from_outcomes(
    outcomes: pd.DataFrame, user_ids: np.ndarray, artist_ids: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of the (user_id, artist_id) pairs of an outcomes table (chapter 02's), in order."""
    missing = {"user_id", "artist_id"} - set(outcomes.columns)
    if missing:
        raise ValueError(f"outcomes table lacks columns {sorted(missing)}")

    def index(ids: np.ndarray, values: np.ndarray, what: str) -> np.ndarray:
        pos = np.searchsorted(ids, values)
        ok = (pos < len(ids)) & (ids[np.minimum(pos, len(ids) - 1)] == values)
        if not ok.all():
            raise KeyError(
                f"{what} {values[~ok][:5].tolist()} of the outcomes are not in the matrix"
            )
        return pos.astype(np.int64)

    rows = index(np.asarray(user_ids), outcomes["user_id"].to_numpy(np.int64), "user ids")
    cols = index(np.asarray(artist_ids), outcomes["artist_id"].to_numpy(np.int64), "artist ids")
    return rows, cols


# --------------------------------------------------------------------------------------------------
# The two configurations end to end
# --------------------------------------------------------------------------------------------------


@dataclass
class ImprovedRun:
    """The ``improved`` configuration: validation hold-out, model, curves."""

    model: TwoTower
    result: TrainResult | BatchedResult
    config: TrainConfig | BatchedConfig
    val_split: Any  # cf.Split of the validation users
    val_min_artists: int


def validation_split(
    train: sp.spmatrix,
    test_rows: np.ndarray,
    seed: int = 0,
    *,
    pool: str = "all",
    min_artists: int = 10,
    floor: int = 5,
    min_users: int = 500,
) -> tuple[Any, int]:
    """A validation hold-out carved from chapter 02's training matrix by its protocol (``holdout_split``).

    ``pool="all"`` (as chapter 02's tuning): any user may be drawn, with seed ``seed + 1``; a test user
    drawn loses a second artist from its training row, for training and validation only, and its
    test artist stays hidden throughout. ``pool="non_test"``: only users outside the test set; when
    fewer than ``min_users`` of them have more than ``min_artists`` artists (the test cap takes most
    heavy users), the threshold is lowered step by step down to ``floor``. Returns (split, threshold).
    """
    from ..evaluation.protocol import holdout_split

    if pool not in ("all", "non_test"):
        raise ValueError(f"pool must be 'all' or 'non_test', got {pool!r}")
    if floor > min_artists:
        raise ValueError(f"floor ({floor}) must not exceed min_artists ({min_artists})")
    csr = _check_counts(train)
    if pool == "all":
        val = holdout_split(csr, seed + 1, min_artists=min_artists)
        if len(val.test_rows) == 0:
            raise ValueError(f"no validation users: no user has more than {min_artists} artists")
        return val, min_artists
    candidates = np.setdiff1d(np.arange(csr.shape[0], dtype=np.int64), np.asarray(test_rows))
    best = None
    for ma in range(min_artists, floor - 1, -1):
        val = holdout_split(
            csr, seed, candidate_rows=candidates, min_artists=ma, ranks=(2, min(6, ma + 1))
        )
        # a lower threshold is only taken when it adds validation users
        if best is None or len(val.test_rows) > len(best[0].test_rows):
            best = (val, ma)
        if len(best[0].test_rows) >= min_users:
            break
    assert best is not None
    if len(best[0].test_rows) == 0:
        raise ValueError("no validation users: no non-test user has enough artists")
    return best


def run_improved(
    train: sp.spmatrix,
    test_rows: np.ndarray,
    seed: int = 0,
    *,
    config: BatchedConfig | TrainConfig = IMPROVED_TRAIN,
    tower: dict[str, Any] | None = None,
    val_pool: str = "all",
    val: tuple[Any, int] | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> ImprovedRun:
    """Train the ``improved`` configuration on chapter 02's training matrix ``train``.

    Validation users are carved from ``train`` (:func:`validation_split` with ``val_pool``, or ``val``
    when given as its result); the model trains on every pair of the validation split's training
    matrix (the test users' rows included, as kNN uses them) and early-stops on validation HR@10.
    A user tower that reads histories then gets the users' complete rows of ``train`` (histories are
    inputs, not weights), so the final model sees what kNN sees.

    A :class:`~thirtymusic_utils.models.batched.BatchedConfig` (the default) trains with the whole-data
    trainer (:func:`~thirtymusic_utils.models.batched.fit_batched`); a :class:`TrainConfig` with the
    pair trainer :func:`fit` (as before it, e.g. :data:`PAIR_IMPROVED_TRAIN`; with
    ``loss="cosine_embedding"`` the pairs are +1 examples and ``negatives_per_positive`` unheard artists
    per pair the -1 examples). With ``config.val_max_users`` (batched only) a fixed random subset of the
    validation users is scored each epoch.
    """
    vsplit, ma = val if val is not None else validation_split(train, test_rows, seed, pool=val_pool)
    csr = _check_counts(train)
    model = new_model(csr.shape[0], csr.shape[1], tower or IMPROVED_TOWER, seed)
    if model.has_history:
        model.set_history(vsplit.train)
    v_rows, v_cols = vsplit.test_rows, vsplit.hidden_cols
    if isinstance(config, BatchedConfig):
        if config.val_max_users and len(v_rows) > config.val_max_users:
            pick = np.sort(
                np.random.default_rng(seed + 2).choice(
                    len(v_rows), config.val_max_users, replace=False
                )
            )
            v_rows, v_cols = v_rows[pick], v_cols[pick]

        def validate(m: TwoTower) -> float:
            from ..evaluation.metrics import hr_at_k

            return float(hr_at_k(rank_hidden_blocks(m, v_rows, v_cols, vsplit.train), k=10))

        result: TrainResult | BatchedResult = fit_batched(
            model, vsplit.train, config, validate=validate, seed=seed, device=device,
            progress=progress,
        )  # fmt: skip
    else:
        users, artists, w = train_pairs(vsplit.train, config.pair_weighting)
        if config.loss == "cosine_embedding":
            n_unheard = vsplit.train.shape[1] - np.diff(vsplit.train.indptr)
            want = config.negatives_per_positive * np.diff(vsplit.train.indptr)
            neg_u, neg_a = sample_unheard(vsplit.train, np.minimum(want, n_unheard), seed)
            users = np.concatenate([users, neg_u])
            artists = np.concatenate([artists, neg_a])
            w = np.concatenate([np.ones(len(w), np.float32), -np.ones(len(neg_u), np.float32)])
        result = fit(
            model,
            users,
            artists,
            w,
            config,
            validate=lambda m: holdout_hit_rate(m, v_rows, v_cols, vsplit.train),
            seed=seed,
            device=device,
            progress=progress,
        )
    if model.has_history:
        model.set_history(csr)
    return ImprovedRun(
        model=model, result=result, config=config, val_split=vsplit, val_min_artists=ma
    )


@dataclass
class ImprovedTuning:
    """:func:`tune_improved`: the run of the chosen embedding size and one row per size tried."""

    run: ImprovedRun
    table: pd.DataFrame
    embedding_dim: int
    at_edge: bool


def _next_dims(dims: tuple[int, ...], best: int, cap: int) -> tuple[int, ...]:
    """``dims`` with one more size past the edge the best sits on (halved below, doubled above,
    within 8..cap); unchanged when the best is inside or ``dims`` is one fixed size."""
    if len(dims) < 2:
        return dims
    if best == dims[0] and dims[0] // 2 >= 8:
        return (dims[0] // 2, *dims)
    if best == dims[-1] and 2 * dims[-1] <= cap:
        return (*dims, 2 * dims[-1])
    return dims


def tune_improved(
    train: sp.spmatrix,
    test_rows: np.ndarray,
    seed: int = 0,
    *,
    dims: tuple[int, ...] = (64, 128, 256),
    max_dim: int = 1024,
    config: BatchedConfig = IMPROVED_TRAIN,
    tower: dict[str, Any] | None = None,
    val: tuple[Any, int] | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> ImprovedTuning:
    """The ``improved`` configuration with its embedding size chosen on the validation users, as
    chapter 03 tunes the baselines: one :func:`run_improved` (early stopping) per size of ``dims``,
    the best validation HR@10 wins (ties: the smaller size), and a best size at the grid's edge
    adds the next size past it (halved or doubled, up to ``max_dim``) until the best is inside. One
    size is a fixed setting. Only the chosen run's model is kept.

    ``table``: embedding_dim, val_metric (best validation HR@10), best_epoch, epochs_run, seconds.
    ``at_edge``: the chosen size is still at an edge of a grid of two or more (``max_dim`` reached).
    """
    grid = tuple(sorted({int(d) for d in dims}))
    if not grid or grid[0] < 1:
        raise ValueError(f"dims must be positive sizes, got {dims!r}")
    val = val if val is not None else validation_split(train, test_rows, seed)
    rows: dict[int, dict[str, Any]] = {}
    best: ImprovedRun | None = None
    best_dim = 0
    while True:
        for d in grid:
            if d in rows:
                continue
            t0 = time.perf_counter()
            run = run_improved(
                train,
                test_rows,
                seed,
                config=config,
                tower={**(tower or IMPROVED_TOWER), "embedding_dim": d},
                val=val,
                device=device,
                progress=progress,
            )
            h = run.result.history
            rows[d] = {
                "embedding_dim": d,
                "val_metric": float(run.result.best_metric),
                "best_epoch": int(run.result.best_epoch),
                "epochs_run": int(h["epoch"].max()),
                "seconds": time.perf_counter() - t0,
            }
            better = best is None or rows[d]["val_metric"] > rows[best_dim]["val_metric"]
            tie = best is not None and rows[d]["val_metric"] == rows[best_dim]["val_metric"]
            if better or (tie and d < best_dim):
                best, best_dim = run, d
            del run
        nxt = _next_dims(grid, best_dim, max_dim)
        if nxt == grid:
            break
        grid = nxt
    assert best is not None
    table = pd.DataFrame([rows[d] for d in sorted(rows)])
    at_edge = len(grid) > 1 and best_dim in (grid[0], grid[-1])
    return ImprovedTuning(run=best, table=table, embedding_dim=best_dim, at_edge=at_edge)


#: The ablation of chapter 05: from the study's choices to the improved configuration, one step at a
#: time, each trained on the same validation hold-out (name -> (tower, training changes)).
ABLATION: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "study towers and loss, all pairs + 1 negative each, constant lr": (
        SEED_TOWER,
        {"loss": "cosine_embedding", "pair_weighting": "binary"},
    ),
    "study towers, sampled-softmax loss": (SEED_TOWER, {}),
    "id towers (64-d, no sigmoid), sampled softmax": (ID_TOWER, {}),
    "history user tower, 64-d, no dropout": (
        {**IMPROVED_TOWER, "embedding_dim": ABLATION_DIM, "history_dropout": 0.0},
        {},
    ),
    "history user tower, 64-d, dropout 0.5": (
        {**IMPROVED_TOWER, "embedding_dim": ABLATION_DIM},
        {},
    ),
}


def run_ablation(
    train: sp.spmatrix,
    test_rows: np.ndarray,
    seed: int = 0,
    *,
    epochs: int = 5,
    val: tuple[Any, int] | None = None,
    variants: dict[str, tuple[dict[str, Any], dict[str, Any]]] | None = None,
    reference: ImprovedRun | None = None,
    reference_name: str | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Validation HR@10 per epoch of each variant (default :data:`ABLATION`), ``epochs`` epochs each.

    Returns a long table: variant, epoch, loss, val_metric. No early stopping, so every curve is whole.
    ``reference`` (the improved run, trained with the same seed and data) adds its first ``epochs``
    epochs as the last variant instead of training it again (training is deterministic per seed),
    named ``reference_name`` or by its embedding size; a variant with the reference's towers and
    training is left out.
    """
    val = val if val is not None else validation_split(train, test_rows, seed)
    frames = []
    n_users, n_artists = train.shape
    for name, (tower, changes) in (variants or ABLATION).items():
        same = TowerConfig(n_users=n_users, n_artists=n_artists, **tower)
        if reference is not None and not changes and same == reference.model.config:
            continue  # the reference itself (its embedding size is the ablation's)
        cfg = IMPROVED_TRAIN.replace(
            **{**changes, "epochs": epochs, "patience": 0, "name": "ablation"}
        )
        run = run_improved(
            train,
            test_rows,
            seed,
            config=cfg,
            tower=tower,
            val=val,
            device=device,
            progress=progress,
        )
        h = run.result.history[["epoch", "loss", "val_metric"]].copy()
        h.insert(0, "variant", name)
        frames.append(h)
    if reference is not None:
        h = reference.result.history[["epoch", "loss", "val_metric"]]
        h = h[h["epoch"] <= epochs].copy()
        dim = reference.model.config.embedding_dim
        h.insert(
            0, "variant", reference_name or f"improved: history user tower, {dim}-d, dropout 0.5"
        )
        frames.append(h)
    return pd.concat(frames, ignore_index=True)


# --------------------------------------------------------------------------------------------------
# Notebook helpers: profile settings, outcomes, similar-artist tables
# --------------------------------------------------------------------------------------------------

#: Epoch budgets per profile (``seed_epochs``: chapter 04; ``improved_epochs``, ``ablation_epochs``:
#: chapter 05) and the improved run's early-stopping patience (``improved_patience``: epochs without
#: a better validation HR@10). On ``default`` the validation curve climbs slowly and noisily: with a
#: budget of 16 and patience 4 the best epoch was the last for three seeds of five and one run stopped
#: at epoch 6 after a dip (test HR@10 0.129 against 0.153 to 0.156); with 40 and 8 the best epochs
#: were 14 to 33. On ``full`` 13,549 validation users give a steadier curve that flattens by epoch 6
#: (``make bench``, ``train_full``), so the patience stays 4; the ablation's variants there get 2
#: epochs each instead of 3.
#:
#: ``embedding_dims``: the embedding sizes :func:`tune_improved` tries on the validation users (a best
#: size at an edge adds the next, up to ``max_embedding_dim``). On ``default`` validation HR@10 rose
#: with the size for five seeds of five from 32 to 256 (means 0.139, 0.152, 0.159, 0.164). On ``full``
#: the size is fixed at 128 by the budget: one epoch on 2 cores takes 26 s at 64, 49 s at 128 and 88 s
#: at 256 (peak RSS 2.3, 3.7 and 6.5 GB), past the trainer's goal of 60 s an epoch and 8 GB.
TRAIN_PROFILES: dict[str, dict[str, Any]] = {
    "tiny": {
        "seed_epochs": 40,
        "improved_epochs": 4,
        "ablation_epochs": 2,
        "improved_patience": 4,
        "embedding_dims": (16, 32),
        "max_embedding_dim": 64,
    },
    "default": {
        "seed_epochs": 100,
        "improved_epochs": 40,
        "ablation_epochs": 3,
        "improved_patience": 8,
        "embedding_dims": (64, 128, 256),
        "max_embedding_dim": 1024,
    },
    "full": {
        "seed_epochs": 100,
        "improved_epochs": 20,
        "ablation_epochs": 2,
        "improved_patience": 4,
        "embedding_dims": (128,),
        "max_embedding_dim": 128,
    },
}


def profile_settings(profile: str) -> dict[str, Any]:
    """Epoch budgets and embedding sizes of a profile (see :data:`TRAIN_PROFILES`)."""
    if profile not in TRAIN_PROFILES:
        raise ValueError(f"unknown profile {profile!r}: expected one of {sorted(TRAIN_PROFILES)}")
    return dict(TRAIN_PROFILES[profile])


def improved_train_config(profile: str, epochs: int = 0) -> BatchedConfig:
    """:data:`IMPROVED_TRAIN` with the profile's epoch budget (``epochs`` when positive) and
    early-stopping patience (:data:`TRAIN_PROFILES`)."""
    settings = profile_settings(profile)
    return IMPROVED_TRAIN.replace(
        epochs=int(epochs) if epochs > 0 else settings["improved_epochs"],
        patience=settings["improved_patience"],
    )


def most_listened(counts: sp.spmatrix, n: int = 3) -> np.ndarray:
    """Columns of the ``n`` artists with the most plays (ties: lower column first)."""
    csr = _check_counts(counts)
    plays = np.asarray(csr.sum(axis=0)).ravel()
    order = np.lexsort((np.arange(len(plays)), -plays))
    return order[:n].astype(np.int64)


def similar_artists_table(
    names: np.ndarray,
    model: TwoTower,
    train: sp.spmatrix,
    cols: np.ndarray,
    n: int = 10,
) -> pd.DataFrame:
    """For each artist column: its ``n`` nearest artists by the model (cosine of artist-tower outputs)
    beside chapter 02's item neighbours (``cf.similar_artists`` on the training matrix), with names."""
    from .knn import similar_artists

    names = np.asarray(names, dtype=object)

    def label(c: int) -> str:
        return str(names[c]) if c >= 0 and names[c] else ("" if c < 0 else f"artist column {c}")

    records = []
    for col in np.asarray(cols, dtype=np.int64):
        emb_c, emb_s = similar_artists_embedding(model, int(col), n)
        cf_c, cf_s = similar_artists(sp.csr_matrix(train), int(col), n)
        for i in range(n):
            records.append(
                {
                    "artist": label(int(col)),
                    "rank": i + 1,
                    "embedding": label(int(emb_c[i])) if i < len(emb_c) else "",
                    "embedding_cosine": float(emb_s[i]) if i < len(emb_s) else float("nan"),
                    "cf": label(int(cf_c[i])) if i < len(cf_c) else "",
                    "cf_cosine": float(cf_s[i]) if i < len(cf_s) and cf_c[i] >= 0 else float("nan"),
                }
            )
    return pd.DataFrame.from_records(records)


OUTCOMES_05_FILE = "outcomes_05.csv"


def outcomes_05_frame(outcomes_02: pd.DataFrame, rank_improved: np.ndarray) -> pd.DataFrame:
    """Chapter 05's per-user outcomes: chapter 02's (user_id, artist_id) pairs, in order, with the
    improved two-tower's rank of the hidden artist (0 = miss, else 1..10)."""
    if len(rank_improved) != len(outcomes_02):
        raise ValueError(
            f"rank_improved has {len(rank_improved)} values, outcomes_02 has {len(outcomes_02)} rows"
        )
    return pd.DataFrame(
        {
            "user_id": outcomes_02["user_id"].to_numpy(np.int64),
            "artist_id": outcomes_02["artist_id"].to_numpy(np.int64),
            "rank_embedding_improved": np.asarray(rank_improved, dtype=np.int64),
        }
    )


def save_outcomes_05(frame: pd.DataFrame, build_dir: str | os.PathLike | None) -> Path:
    """Write ``BUILD_DIR/artifacts/outcomes_05.csv``."""
    path = artifacts_dir(build_dir) / OUTCOMES_05_FILE
    frame.to_csv(path, index=False)
    return path
