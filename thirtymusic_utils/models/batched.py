"""The whole-data trainer of the two-tower model: batches of users, shared negatives, block scoring.

The pair trainer (:func:`~thirtymusic_utils.models.training.fit`) draws (user, artist) pairs and rebuilds
the user's history for every pair. This trainer is built for all of 30Music instead:

- a batch is a set of *users* (packed whole, about ``batch_pairs`` pairs per batch); every pair of those
  users is a positive of the batch;
- each user's history vector is one ``nn.EmbeddingBag`` sum per batch, after history dropout drawn on
  the batch; the pair's own artist is then left out by *subtracting* its (dropped-out) term, so the
  user vector of a pair is exactly the per-pair computation of :meth:`TwoTower.user_vectors` with
  ``drop=artist`` (checked by a test), at the cost of one row per pair;
- negatives are shared by the whole batch: ``n_negatives`` artists drawn from a mixture of the uniform
  and a popularity distribution, their logits corrected by ``log(q_j N)`` (logQ correction: zero for
  the uniform part, so ``negative_mix=0`` is the pair trainer's uniform sampled softmax); a negative
  equal to a pair's positive is masked;
- a step costs what the batch touches: the embedding rows a batch reads are gathered once (one
  ``torch.unique`` per table) into a small dense tensor, the backward pass leaves a dense gradient on
  those rows only, and :class:`RowAdam` (``SparseAdam``'s lazy update, without building or coalescing
  a sparse gradient; the rows updated by ``Adam``'s fused kernel) writes them back;
- the sampled-softmax loss computes its gradient in the forward pass, in blocks of rows
  (:func:`sampled_softmax_loss`), so the pairs x negatives logits never exist whole;
- no Python loop per example: a loop per batch only.

Scoring: :func:`score_top_k` ranks all artists for blocks of users with one matrix product per block,
sets the heard artists to ``-inf`` and keeps a partial ``torch.topk``; the block size follows a memory
budget. :func:`rank_hidden_blocks` (the hit rate's rank of one hidden artist per user) keeps no top-k:
it counts the unheard artists that score above the hidden one, tile by tile. CUDA is used when
present (:func:`resolve_device`); CPU threads come from :func:`configure_threads`.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, Self

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from torch import nn
from torch.nn import functional as F
from torch.optim.adam import adam
from tqdm import tqdm

from ..parallel import available_cores
from .two_tower import TwoTower, _check_counts, _row_of_entry, resolve_device

__all__ = [
    "BatchedConfig",
    "auto_batch_pairs",
    "available_cores",
    "BatchedResult",
    "TrainResult",
    "PairTable",
    "RowAdam",
    "busy_cores",
    "configure_threads",
    "fit_batched",
    "keep_freed_memory",
    "pair_table",
    "pair_user_vectors",
    "rank_hidden_blocks",
    "sampled_softmax_loss",
    "score_top_k",
]


# --------------------------------------------------------------------------------------------------
# Device and threads
# --------------------------------------------------------------------------------------------------


def _busy_jiffies() -> tuple[int, int] | None:
    """(busy, total) CPU jiffies of the whole machine so far (``/proc/stat``), or None off Linux."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields[:8]) - idle, sum(fields[:8])


def busy_cores(seconds: float = 0.25) -> float:
    """Cores that *other* processes kept busy over the next ``seconds`` (``/proc/stat`` sampled twice,
    this process's own CPU time taken out); 0.0 where it cannot be measured."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    a, c0, t0 = _busy_jiffies(), time.process_time(), time.perf_counter()
    time.sleep(seconds)
    b, c1, t1 = _busy_jiffies(), time.process_time(), time.perf_counter()
    if a is None or b is None or t1 <= t0:
        return 0.0
    others = (b[0] - a[0]) / tick - (c1 - c0)
    return max(0.0, others / (t1 - t0))


def configure_threads(n: int = 0) -> int:
    """Set torch's CPU threads and return the number: ``n``; when ``n <= 0``, ``OMP_NUM_THREADS`` if
    set, else the cores this process may use (``os.sched_getaffinity``) less those other processes
    keep busy now (:func:`busy_cores`, rounded), at least one.

    On cores shared with other processes a second thread does not pay: the threads of a parallel
    region wait for the slowest, which waits for its time slice. Measured on 2 cores, one epoch step:
    idle, 64 ms with two threads against 97 with one; beside one busy process, 120 to 240 ms with
    two (passive or spinning waits) against 92 with one."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    if n and n > 0:
        n = int(n)
    elif env.isdigit() and int(env) > 0:
        n = int(env)
    else:
        cores = available_cores()
        n = max(1, cores - int(round(busy_cores()))) if cores > 1 else 1
    torch.set_num_threads(n)
    return n


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters


def keep_freed_memory(mmap_threshold: int = 32 * 2**20, trim_threshold: int = 2**30) -> bool:
    """Ask glibc's allocator to keep freed blocks for reuse (``mallopt``): a training step allocates
    and frees tensors of a few MB, which glibc would otherwise hand back to the kernel and fault in
    again, zeroed, at every step (costly in a virtual machine). Returns False where there is no glibc.
    The process keeps up to ``trim_threshold`` bytes of freed memory for reuse."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    ok = mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold)) == 1
    return ok and mallopt(_M_TRIM_THRESHOLD, int(trim_threshold)) == 1


# --------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------


class ConfigDict:
    """JSON round trip and validated copies for the training configurations (dataclasses)."""

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (saved beside every checkpoint)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        """The configuration from :meth:`to_dict`'s dict; unknown fields are an error."""
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields {sorted(unknown)}")
        return cls(**d)

    def replace(self, **changes: Any) -> Self:
        """A copy with some fields changed (validated again)."""
        return type(self)(**{**asdict(self), **changes})


@dataclass
class BatchedConfig(ConfigDict):
    """How the whole-data trainer trains; JSON-serialisable and saved beside every checkpoint.

    ``batch_pairs``: pairs per batch (users are packed whole, so a batch may exceed it by one user);
    0 picks it from the data (:func:`auto_batch_pairs`: about 256 steps an epoch, 1,024 to 8,192 pairs).
    ``loss``: ``"softmax"`` (each positive against the ``n_negatives`` shared negatives) or
    ``"cosine_embedding"`` (the study's loss: 1 - cos for a positive, max(0, cos) for one uniform
    negative per pair; for the ablation). ``negative_mix``: share of the negatives drawn in proportion to
    ``artist_pairs ** popularity_power`` (the rest uniform), corrected in the logits by ``log(q N)``.
    ``pair_weighting``: weight of a pair, 1 or log1p(plays) scaled to mean 1. ``patience``: evaluations
    without improvement before stopping (0: never early). ``val_max_users``: validation users scored
    each epoch (a fixed random subset when there are more; 0 = all). ``user_chunk``: a user's pairs
    enter an epoch in random chunks of at most this many, each chunk with its own history sum and
    dropout draw (0: all of a user's pairs together), so a batch mixes many users.
    """

    name: str = "improved"
    loss: str = "softmax"
    epochs: int = 20
    batch_pairs: int = 0
    lr: float = 0.01
    n_negatives: int = 1024
    negative_mix: float = 0.0
    popularity_power: float = 0.75
    temperature: float = 0.2
    pair_weighting: str = "log"
    eval_every: int = 1
    patience: int = 4
    val_max_users: int = 0
    user_chunk: int = 32
    trainer: str = "batched"

    def __post_init__(self) -> None:
        if self.loss not in ("softmax", "cosine_embedding"):
            raise ValueError(f"loss must be softmax or cosine_embedding, got {self.loss!r}")
        if self.pair_weighting not in ("binary", "log"):
            raise ValueError(f"pair_weighting must be binary or log, got {self.pair_weighting!r}")
        if self.epochs < 1 or self.batch_pairs < 0 or self.eval_every < 1 or self.patience < 0:
            raise ValueError("epochs, batch_pairs and eval_every must be >= 1, patience >= 0")
        if self.n_negatives < 1 or self.val_max_users < 0 or self.user_chunk < 0:
            raise ValueError("n_negatives must be >= 1 and val_max_users >= 0")
        if not 0.0 <= self.negative_mix <= 1.0:
            raise ValueError(f"negative_mix must be in [0, 1], got {self.negative_mix}")
        if self.lr <= 0 or self.temperature <= 0:
            raise ValueError("lr and temperature must be positive")


def auto_batch_pairs(n_pairs: int, steps: int = 256, low: int = 1024, high: int = 8192) -> int:
    """Pairs per batch for ``n_pairs`` training pairs: ``n_pairs // steps`` clipped to [low, high].

    Small data keeps small batches (enough steps an epoch to learn in a few epochs, as the pair
    trainer's 1,024); the whole dataset gets large ones (the per-batch overhead amortised).
    """
    return int(min(high, max(low, n_pairs // max(1, steps))))


# --------------------------------------------------------------------------------------------------
# The pairs, grouped by user, with their place in the history
# --------------------------------------------------------------------------------------------------


@dataclass
class PairTable:
    """Every training pair, as CSR over users, on one device.

    ``indptr``/``artists``/``weights``: the pairs of user ``u`` are ``indptr[u]:indptr[u+1]``.
    ``hist_pos``: for each pair, the position of its artist in the model's history arrays (the
    user's entry in ``hist_indices``), or -1 when the artist is not in the history (``max_history``).
    """

    indptr: torch.Tensor
    artists: torch.Tensor
    weights: torch.Tensor
    hist_pos: torch.Tensor

    @property
    def n_pairs(self) -> int:
        return int(self.artists.numel())


def pair_table(
    counts: sp.spmatrix, model: TwoTower, weighting: str = "log", device: torch.device | None = None
) -> PairTable:
    """The training pairs of ``counts`` grouped by user, with their history positions in ``model``."""
    csr = _check_counts(counts)
    n_users, n_artists = model.config.n_users, model.config.n_artists
    if csr.shape != (n_users, n_artists):
        raise ValueError(f"counts have shape {csr.shape}, the model {(n_users, n_artists)}")
    if weighting == "binary":
        w = np.ones(csr.nnz, dtype=np.float32)
    elif weighting == "log":
        w = np.log1p(csr.data.astype(np.float64))
        w = (w / w.mean()).astype(np.float32) if csr.nnz else w.astype(np.float32)
    else:
        raise ValueError(f"weighting must be binary or log, got {weighting!r}")
    rows = _row_of_entry(csr)
    hist_pos = np.full(csr.nnz, -1, dtype=np.int64)
    if model.has_history:
        h_indptr = model.hist_indptr.cpu().numpy()
        h_idx = model.hist_indices.cpu().numpy()
        if len(h_idx):
            h_rows = np.repeat(np.arange(n_users, dtype=np.int64), np.diff(h_indptr))
            h_keys = h_rows * n_artists + h_idx  # sorted: CSR with sorted columns
            keys = rows * n_artists + csr.indices.astype(np.int64)
            pos = np.minimum(np.searchsorted(h_keys, keys), len(h_keys) - 1)
            hist_pos = np.where(h_keys[pos] == keys, pos, -1)
    dev = device or model.artist_tower[0].weight.device
    return PairTable(
        indptr=torch.as_tensor(csr.indptr.astype(np.int64)).to(dev),
        artists=torch.as_tensor(csr.indices.astype(np.int64)).to(dev),
        weights=torch.as_tensor(w).to(dev),
        hist_pos=torch.as_tensor(hist_pos).to(dev),
    )


def _ragged_span(
    starts: torch.Tensor, lens: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Positions ``starts[i] .. starts[i] + lens[i] - 1`` for all i, concatenated: (positions, the
    ``i`` of each, the offset of each run in the result)."""
    offsets = torch.cumsum(lens, 0) - lens
    total = int(lens.sum())
    local = torch.repeat_interleave(torch.arange(len(lens), device=lens.device), lens)
    pos = starts[local] + torch.arange(total, device=lens.device) - offsets[local]
    return pos, local, offsets


def _ragged(
    indptr: torch.Tensor, rows: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Positions of the entries of ``rows`` in CSR arrays: (positions, local row of each, offsets)."""
    starts = indptr[rows]
    return _ragged_span(starts, indptr[rows + 1] - starts)


@dataclass
class _PairIndex:
    """The index work of a batch of pairs (see :func:`pair_user_vectors`), before any embedding is read.

    ``artists``/``weights``/``local``: per pair; ``ids``: the user of each pair (``users[local]``);
    ``items``/``hist_w``/``hoff``: the entries' history bags (items, weights after dropout, offsets);
    ``w_pair``: the weight the pair's own artist had in its bag (0 when not in the history);
    ``own``: the pairs whose ``w_pair`` is not 0 (the only ones whose own term is subtracted).
    Entries that history dropout zeroed are left out of the bags (they add nothing to a sum), so a
    training step reads, and updates, only the history rows that it kept.
    """

    artists: torch.Tensor
    weights: torch.Tensor
    local: torch.Tensor
    ids: torch.Tensor
    items: torch.Tensor | None = None
    hist_w: torch.Tensor | None = None
    hoff: torch.Tensor | None = None
    w_pair: torch.Tensor | None = None
    own: torch.Tensor | None = None


def _pair_index(
    model: TwoTower,
    users: torch.Tensor,
    pairs: PairTable,
    generator: torch.Generator | None = None,
    chunks: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> _PairIndex:
    """Pairs, history bags and the dropout draw of a batch (the random draw: one ``torch.rand``)."""
    if chunks is None:
        ppos, local, _ = _ragged(pairs.indptr, users)
    else:
        order, starts, lens = chunks
        ppos, local, _ = _ragged_span(starts, lens)
        ppos = order[ppos]
    artists = pairs.artists[ppos]
    ix = _PairIndex(artists=artists, weights=pairs.weights[ppos], local=local, ids=users[local])
    if model.has_history:
        hpos, _, hoff = _ragged(model.hist_indptr, users)
        w = model.hist_weights[hpos]
        items = model.hist_indices[hpos]
        p = model.config.history_dropout
        keep = None
        if model.training and p > 0:
            keep = torch.rand(w.shape, generator=generator, device=w.device) >= p
            w = w * keep.to(w.dtype) / (1.0 - p)
        # the pair's term: its weight as it entered the bag (after dropout), at its history position
        hp = pairs.hist_pos[ppos]
        inside = hp >= 0
        local_h = (hoff[local] + hp - model.hist_indptr[users][local]).clamp(min=0)
        ix.w_pair = torch.where(inside, w[local_h] if len(w) else torch.zeros_like(ix.weights), 0.0)
        ix.own = torch.nonzero(ix.w_pair).squeeze(1)
        if keep is not None:  # the dropped entries out of the bags: same sums, fewer rows
            bag_of = torch.repeat_interleave(
                torch.arange(len(users), device=w.device),
                torch.diff(hoff, append=hoff.new_tensor([len(w)])),
            )
            kept = torch.bincount(bag_of[keep], minlength=len(users))
            items, w, hoff = items[keep], w[keep], torch.cumsum(kept, 0) - kept
        ix.items, ix.hist_w, ix.hoff = items, w, hoff
    return ix


def _pair_inputs(
    model: TwoTower,
    ix: _PairIndex,
    bag: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None,
    ids: tuple[torch.Tensor, torch.Tensor] | None,
    sparse: bool = False,
) -> torch.Tensor:
    """The user-tower input per pair from the embedding rows: ``bag = (weight, rows of the history
    items, rows of the artists of the pairs ``ix.own``)`` for the history table, ``ids = (weight, rows of the pairs'
    users)`` for the user-id table (rows of ``weight``: the full table, or a gathered part of it)."""
    x: torch.Tensor | None = None
    if bag is not None:
        weight, items, own_rows = bag
        h = F.embedding_bag(
            items, weight, ix.hoff, mode="sum", per_sample_weights=ix.hist_w, sparse=sparse
        )
        own = F.embedding(own_rows, weight, sparse=sparse)
        assert ix.w_pair is not None and ix.own is not None
        # index_select, not h[ix.local]: outside deterministic mode the indexing's backward (an
        # accumulating index_put_) sums repeated rows in an order that depends on the thread count
        x = h.index_select(0, ix.local)
        x = x.index_add(0, ix.own, own * ix.w_pair[ix.own].unsqueeze(1), alpha=-1)
    if ids is not None:
        e = F.embedding(ids[1], ids[0], sparse=sparse)
        x = e if x is None else x + e
    assert x is not None
    return x


def pair_user_vectors(
    model: TwoTower,
    users: torch.Tensor,
    pairs: PairTable,
    generator: torch.Generator | None = None,
    *,
    sparse: bool = False,
    chunks: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """User-tower input for every pair of ``users``, each pair's artist left out of its history.

    One embedding-bag sum per entry of ``users`` (history dropout drawn once per entry when the model
    is training), then the pair's own term subtracted. Without ``chunks`` an entry stands for all of
    the user's pairs; with ``chunks = (order, starts, lens)`` entry ``i`` stands for the pairs
    ``order[starts[i] : starts[i] + lens[i]]`` (a chunk of the user's pairs; a user may appear more
    than once). Returns ``(x, artists, weights, local)``: the tower input per pair (before the tower's
    layers), the pair's artist, its weight, and the index of its entry within ``users``.
    """
    ix = _pair_index(model, users, pairs, generator, chunks)
    bag = None
    if model.has_history:
        assert model.user_history is not None and ix.items is not None
        assert ix.own is not None
        bag = (model.user_history.weight, ix.items, ix.artists[ix.own])
    ids = None if model.config.user_input == "history" else (model.user_tower[0].weight, ix.ids)
    return _pair_inputs(model, ix, bag, ids, sparse), ix.artists, ix.weights, ix.local


# --------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    """What :func:`~thirtymusic_utils.models.training.fit` returns: the learning curves and the best validation state (already loaded)."""

    history: pd.DataFrame
    best_epoch: int
    best_metric: float
    best_state: dict[str, torch.Tensor]
    stopped_early: bool
    seconds: float
    n_examples: int
    device: str

    def summary(self) -> dict[str, Any]:
        """Flat numbers for the results JSON."""
        return {
            "best_epoch": self.best_epoch,
            "best_metric": self.best_metric,
            "epochs_run": int(self.history["epoch"].max()) if len(self.history) else 0,
            "stopped_early": int(self.stopped_early),
            "seconds": self.seconds,
            "n_examples": self.n_examples,
        }


@dataclass
class BatchedResult(TrainResult):
    """What :func:`fit_batched` returns: a :class:`TrainResult` with the threads and the batch size used."""

    threads: int
    batch_pairs: int


def _state_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _sampler(pairs: PairTable, n_artists: int, config: BatchedConfig, dev: torch.device):
    """The negatives' distribution ``q`` (mixture of uniform and popularity) and ``log(q N)``."""
    uniform = torch.full((n_artists,), 1.0 / n_artists, dtype=torch.float64, device=dev)
    if config.negative_mix <= 0:
        return None, torch.zeros(n_artists, device=dev)
    pop = torch.bincount(pairs.artists, minlength=n_artists).to(torch.float64)
    pop = pop.pow(config.popularity_power)
    pop = pop / pop.sum()
    q = (1 - config.negative_mix) * uniform + config.negative_mix * pop
    return q, torch.log(q * n_artists).to(torch.float32)


class _Normalize(torch.autograd.Function):
    """``F.normalize(x, dim=1)`` with its gradient in three operations, ``(g - y (y . g)) / n``,
    instead of autograd's chain through the norm (about eight passes over the rows)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, eps: float) -> torch.Tensor:  # type: ignore[override]
        norm = torch.linalg.vector_norm(x, dim=1, keepdim=True)
        n = norm.clamp_min(eps)
        y = x / n
        ctx.save_for_backward(y, n, norm > eps)
        return y

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor):  # type: ignore[override]
        y, n, inside = ctx.saved_tensors
        dot = (y * g).sum(1, keepdim=True).mul_(inside)  # the norm's term only where not clamped
        return (g - y * dot).div_(n), None


def _cosine(x: torch.Tensor) -> torch.Tensor:
    """Rows of ``x`` scaled to unit length (``F.normalize``; gradient by :class:`_Normalize`)."""
    return _Normalize.apply(x, 1e-12)


class RowAdam:
    """Adam on the rows of embedding tables that a step read: lazy, as ``torch.optim.SparseAdam`` (a
    row's moments and weights move only when the row is read; one step count per table), given the
    gradient of the gathered rows directly, so no sparse gradient is built or coalesced.

    The update of the gathered rows is ``torch.optim.Adam``'s fused kernel (one pass over weights,
    gradient and moments, instead of six elementwise passes): the same steps as ``SparseAdam`` but
    for where ``eps`` enters (after the bias correction of the second moment, as in ``Adam``).
    """

    def __init__(
        self, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8
    ) -> None:
        self.lr, self.betas, self.eps = float(lr), betas, float(eps)
        self.state: dict[int, dict[str, Any]] = {}

    @torch.no_grad()
    def step(
        self,
        weight: torch.Tensor,
        rows: torch.Tensor,
        grad: torch.Tensor,
        current: torch.Tensor | None = None,
    ) -> None:
        """Update ``weight[rows]`` (``rows`` distinct) with the gradient ``grad`` of those rows.

        ``current``: ``weight[rows]`` when the caller has gathered it already (a contiguous one is
        updated in place, as scratch)."""
        st = self.state.get(id(weight))
        if st is None:  # moments as two tables (the fused kernel needs contiguous rows)
            st = self.state[id(weight)] = {
                "step": torch.zeros((), dtype=torch.float32, device=weight.device),
                "exp_avg": torch.zeros_like(weight, memory_format=torch.contiguous_format),
                "exp_avg_sq": torch.zeros_like(weight, memory_format=torch.contiguous_format),
            }
        m = st["exp_avg"].index_select(0, rows)
        v = st["exp_avg_sq"].index_select(0, rows)
        new = weight.index_select(0, rows) if current is None else current.contiguous()
        b1, b2 = self.betas
        adam(
            [new], [grad.contiguous()], [m], [v], [], [st["step"]],
            fused=True, amsgrad=False, beta1=b1, beta2=b2, lr=self.lr,
            weight_decay=0.0, eps=self.eps, maximize=False,
        )  # fmt: skip
        with _plain_copies():
            st["exp_avg"].index_copy_(0, rows, m)
            st["exp_avg_sq"].index_copy_(0, rows, v)
            weight.index_copy_(0, rows, new)


@contextmanager
def _plain_copies() -> Iterator[None]:
    """Deterministic algorithms off for a copy to *distinct* rows (no two writes to one place, so the
    result does not depend on their order): torch's deterministic ``index_copy_`` takes twice as long
    on the CPU and adds nothing there."""
    on = torch.are_deterministic_algorithms_enabled()
    warn = torch.is_deterministic_algorithms_warn_only_enabled()
    if on:
        torch.use_deterministic_algorithms(False)
    try:
        yield
    finally:
        if on:
            torch.use_deterministic_algorithms(True, warn_only=warn)


class _Rows:
    """The rows of one embedding table that a batch reads, gathered once into a dense leaf tensor
    (``sub``): the lookups index ``sub`` (``inverse``, one tensor per index set), the backward pass
    leaves a dense gradient on it, and :class:`RowAdam` writes the update back to ``rows``."""

    def __init__(self, weight: torch.Tensor, *index_sets: torch.Tensor) -> None:
        flat = torch.cat([i.reshape(-1) for i in index_sets])
        self.weight = weight
        self.rows, inv = torch.unique(flat, sorted=True, return_inverse=True)
        self.sub = weight.detach().index_select(0, self.rows).requires_grad_(True)
        self.inverse = list(inv.split([i.numel() for i in index_sets]))


def _cdf(q: torch.Tensor | None) -> torch.Tensor | None:
    """The cumulative distribution of ``q`` (float64), which :func:`_draw_negatives` searches."""
    return None if q is None else torch.cumsum(q.to(torch.float64), 0)


def _draw_negatives(
    config: BatchedConfig, n_art: int, n_pairs: int, q: torch.Tensor | None,
    gen: torch.Generator, dev: torch.device, cdf: torch.Tensor | None = None,
) -> torch.Tensor:  # fmt: skip
    """The batch's negatives: one uniform artist per pair (``cosine_embedding``), else
    ``n_negatives`` shared ones drawn from ``q`` (uniform when ``q`` is None), with replacement, by
    searching uniform draws in ``q``'s cumulative distribution ``cdf`` (:func:`_cdf`; computed here
    when not given): a step then costs ``n_negatives`` binary searches, not a pass over ``q``."""
    if config.loss == "cosine_embedding":
        return torch.randint(n_art, (n_pairs,), generator=gen, device=dev)
    if q is None:
        return torch.randint(n_art, (config.n_negatives,), generator=gen, device=dev)
    cdf = _cdf(q) if cdf is None else cdf
    assert cdf is not None
    x = torch.rand(config.n_negatives, generator=gen, device=dev, dtype=torch.float64) * cdf[-1]
    return torch.searchsorted(cdf, x, right=True).clamp_(max=len(cdf) - 1)


def _batch_loss(
    model: TwoTower,
    users: torch.Tensor,
    pairs: PairTable,
    config: BatchedConfig,
    q: torch.Tensor | None,
    logq: torch.Tensor,
    gen: torch.Generator,
    chunks: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    cdf: torch.Tensor | None = None,
) -> tuple[torch.Tensor, int, list[_Rows]]:
    """Weighted loss of one batch of users (or chunks of users' pairs), its number of pairs, and the
    gathered embedding rows it read (their ``sub.grad`` holds the embedding gradients after
    ``backward``; the tables themselves get no gradient). ``cdf``: ``q``'s cumulative distribution
    (:func:`_cdf`), when the caller keeps it across steps."""
    ix = _pair_index(model, users, pairs, gen, chunks)
    artists, weights = ix.artists, ix.weights
    n_art = model.config.n_artists
    dev = users.device
    neg = _draw_negatives(config, n_art, len(artists), q, gen, dev, cdf)
    tables: list[_Rows] = []
    bag = ids = None
    if model.has_history:
        assert model.user_history is not None and ix.items is not None
        assert ix.own is not None
        hb = _Rows(model.user_history.weight, ix.items, artists[ix.own])
        bag = (hb.sub, hb.inverse[0], hb.inverse[1])
        tables.append(hb)
    if model.config.user_input != "history":
        ub = _Rows(model.user_tower[0].weight, ix.ids)
        ids = (ub.sub, ub.inverse[0])
        tables.append(ub)
    ab = _Rows(model.artist_tower[0].weight, artists, neg)
    tables.append(ab)
    x = _pair_inputs(model, ix, bag, ids)
    u = model.user_tower[1:](x)
    emb_a = F.embedding(torch.cat(ab.inverse), ab.sub)
    a_all = model.artist_tower[1:](emb_a)
    a, an = a_all[: len(artists)], a_all[len(artists) :]
    cosine = model.config.similarity == "cosine"
    if cosine:
        u, a, an = _cosine(u), _cosine(a), _cosine(an)
    s_pos = (u * a).sum(-1)
    if config.loss == "cosine_embedding":
        s_neg = (u * an).sum(-1)
        per = (1.0 - s_pos) + s_neg.clamp(min=0.0)
        return per.sum() / (2 * len(per)), len(artists), tables
    mask_r, mask_c = _positive_hits(neg, artists)
    loss = sampled_softmax_loss(
        u, a, an, -logq[neg], weights / weights.sum(), 1.0 / config.temperature, mask_r, mask_c
    )
    return loss, len(artists), tables


def _positive_hits(neg: torch.Tensor, artists: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every (pair, negative slot) where a shared negative is the pair's own positive (draws with
    replacement repeat, so every copy), sorted by pair: found by sorting the negatives."""
    m = len(neg)
    order = torch.argsort(neg)
    sneg = neg[order]
    first = torch.searchsorted(sneg, artists)
    last = torch.searchsorted(sneg, artists, right=True)
    reps = last - first
    r = torch.repeat_interleave(torch.arange(len(artists), device=neg.device), reps)
    start = torch.repeat_interleave(first.clamp(max=m - 1), reps)
    off = torch.arange(len(r), device=neg.device) - torch.repeat_interleave(
        torch.cumsum(reps, 0) - reps, reps
    )
    return r, order[start + off]


#: The widest range of a batch's logits for which one shift for the whole batch is safe: every
#: ``exp(logit - shift)`` then lies in [exp(-80), 1], normal in float32 (no underflow to 0).
_SHIFT_RANGE = 80.0


class _SampledSoftmax(torch.autograd.Function):
    """The weighted sampled-softmax loss with its gradient computed in the forward pass, in blocks of
    rows (so a block's logits stay in cache; the pairs x negatives matrix is never whole).

    The logsumexp's shift is one number for the whole batch when the logits' bounds allow it
    (Cauchy-Schwarz: ``|inv_t u . a| <= inv_t |u| max|a|``; for cosine towers whenever
    ``2 / temperature`` plus the range of the logQ terms is at most 80, as at every temperature the
    book uses): folded into the negatives' bias, it saves a row maximum and a subtraction over every
    block. Wider ranges (dot towers with large vectors) take each row's maximum. The rows' weights ``c / z`` enter
    the gradient products on their narrow side (pairs x dim, not pairs x negatives).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        u: torch.Tensor,
        a_pos: torch.Tensor,
        a_neg: torch.Tensor,
        neg_bias: torch.Tensor,
        c: torch.Tensor,
        inv_t: float,
        mask_r: torch.Tensor,
        mask_c: torch.Tensor,
        block: int,
    ) -> torch.Tensor:
        n = len(u)
        s_pos = (u * a_pos).sum(-1).mul_(inv_t)
        grad_u = torch.empty_like(u)
        grad_neg = torch.zeros_like(a_neg)
        g_pos = torch.empty_like(s_pos)
        per = torch.empty_like(s_pos)
        # bounds on every logit of the batch, negatives' and positives'
        zero = a_neg.new_zeros(())
        neg_norm, pos_norm, u_max, b_hi, b_lo = torch.stack(  # one read-back, not five
            [
                torch.linalg.vector_norm(a_neg, dim=1).max(),
                torch.linalg.vector_norm(a_pos, dim=1).max() if n else zero,
                torch.linalg.vector_norm(u, dim=1).max() if n else zero,
                neg_bias.max().to(zero.dtype),
                neg_bias.min().to(zero.dtype),
            ]
        ).tolist()
        reach = inv_t * max(neg_norm, pos_norm) * u_max
        hi, lo = max(reach + b_hi, reach), min(-reach + b_lo, -reach)
        shift = hi if math.isfinite(hi - lo) and hi - lo <= _SHIFT_RANGE else None
        bias = neg_bias if shift is None else neg_bias - shift
        bounds = torch.searchsorted(
            mask_r, torch.arange(0, n + block, block, device=u.device).clamp(max=n)
        ).tolist()
        for k, b0 in enumerate(range(0, n, block)):
            b1 = min(n, b0 + block)
            ub = u[b0:b1]
            e = torch.addmm(bias.unsqueeze(0), ub, a_neg.T, alpha=inv_t)
            m0, m1 = bounds[k], bounds[k + 1]
            if m1 > m0:
                e[mask_r[m0:m1] - b0, mask_c[m0:m1]] = -math.inf
            sp_ = s_pos[b0:b1]
            if shift is None:
                top = torch.maximum(e.amax(1), sp_)
                e.sub_(top.unsqueeze(1))
            else:
                top = torch.full_like(sp_, shift)
            e.exp_()  # exp(logit - top)
            e_pos = (sp_ - top).exp_()
            z = e.sum(1).add_(e_pos)
            per[b0:b1] = top + z.log() - sp_
            coef = c[b0:b1] / z  # dL/d(negative logit) = coef * e
            gp = coef * e_pos - c[b0:b1]  # dL/d(positive logit)
            g_pos[b0:b1] = gp
            cu = coef.unsqueeze(1)
            grad_u[b0:b1] = torch.mm(e, a_neg).mul_(cu).add_(gp.unsqueeze(1) * a_pos[b0:b1])
            grad_neg.addmm_(e.T, ub * cu)
        grad_u.mul_(inv_t)
        grad_neg.mul_(inv_t)
        grad_pos = u * (g_pos * inv_t).unsqueeze(1)
        ctx.save_for_backward(grad_u, grad_pos, grad_neg)
        return (per * c).sum()

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor):  # type: ignore[override]
        grad_u, grad_pos, grad_neg = ctx.saved_tensors
        return grad_u * grad_out, grad_pos * grad_out, grad_neg * grad_out, *([None] * 6)


def sampled_softmax_loss(
    u: torch.Tensor,
    a_pos: torch.Tensor,
    a_neg: torch.Tensor,
    neg_bias: torch.Tensor,
    c: torch.Tensor,
    inv_t: float,
    mask_r: torch.Tensor,
    mask_c: torch.Tensor,
    block: int = 512,
) -> torch.Tensor:
    """``sum_i c_i (logsumexp_j z_ij - z_i0)`` with ``z_i0 = inv_t * u_i . a_pos_i`` (the positive) and
    ``z_ij = inv_t * u_i . a_neg_j + neg_bias_j`` (the shared negatives; ``-inf`` at ``(mask_r,
    mask_c)``, sorted by row). Differentiable in ``u``, ``a_pos`` and ``a_neg``."""
    return _SampledSoftmax.apply(u, a_pos, a_neg, neg_bias, c, inv_t, mask_r, mask_c, block)


def _batches(lens: torch.Tensor, users: torch.Tensor, batch_pairs: int) -> list[torch.Tensor]:
    """Split ``users`` (in order) into runs of about ``batch_pairs`` pairs (users kept whole)."""
    before = torch.cumsum(lens, 0) - lens
    bid = (before // batch_pairs).cpu()
    counts = torch.bincount(bid).tolist() if len(bid) else []
    return [b for b in torch.split(users, [c for c in counts]) if len(b)]


def _epoch_batches(
    pairs: PairTable,
    lens_all: torch.Tensor,
    active: torch.Tensor,
    config: BatchedConfig,
    batch_pairs: int,
    gen: torch.Generator,
):
    """One epoch's batches, in random order: ``(users, chunks)`` per batch (see
    :func:`pair_user_vectors`); every pair appears in exactly one batch."""
    dev = active.device
    c = config.user_chunk
    if not c:
        users = active[torch.randperm(len(active), generator=gen, device=dev)]
        for batch in _batches(lens_all[users], users, batch_pairs):
            yield batch, None
        return
    n_users = len(lens_all)
    rows = torch.repeat_interleave(torch.arange(n_users, device=dev), lens_all)
    # the pairs of each user in a random order: sort by row + a uniform key in [0, 1)
    keys = rows.to(torch.float64) + torch.rand(
        len(rows), generator=gen, device=dev, dtype=torch.float64
    )
    order = torch.argsort(keys)
    n_chunks = (lens_all + c - 1) // c
    unit_user = torch.repeat_interleave(torch.arange(n_users, device=dev), n_chunks)
    k = torch.arange(len(unit_user), device=dev) - torch.repeat_interleave(
        torch.cumsum(n_chunks, 0) - n_chunks, n_chunks
    )
    unit_start = pairs.indptr[unit_user] + k * c
    unit_len = torch.minimum(lens_all[unit_user] - k * c, torch.full_like(k, c))
    units = torch.randperm(len(unit_user), generator=gen, device=dev)
    for b in _batches(unit_len[units], units, batch_pairs):
        yield unit_user[b], (order, unit_start[b], unit_len[b])


def fit_batched(
    model: TwoTower,
    counts: sp.spmatrix,
    config: BatchedConfig,
    *,
    validate: Callable[[TwoTower], float] | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool = True,
    deterministic: bool = True,
) -> BatchedResult:
    """Train ``model`` on every stored pair of ``counts``, in batches of users; keep the best state.

    The model's histories (when its user tower reads them) must already be set
    (:meth:`TwoTower.set_history`); usually from ``counts`` itself. ``validate(model) -> float``
    (higher is better) runs every ``config.eval_every`` epochs and after the last one; without it the
    last state is kept. Every random choice (user order, dropout, negatives) comes from one
    ``torch.Generator`` seeded with ``seed`` on the training device; on the CPU two runs give
    identical weights, whatever the thread count (``MKL_CBWR``: see ``thirtymusic_utils/__init__``).
    """
    if model.has_history and len(model.hist_indices) == 0:
        raise ValueError(
            "the model's user tower reads histories: call model.set_history(counts) first"
        )
    dev = resolve_device(device)
    previous = torch.are_deterministic_algorithms_enabled()
    warn = torch.is_deterministic_algorithms_warn_only_enabled()
    fill = torch.utils.deterministic.fill_uninitialized_memory
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        # every tensor the trainer allocates uninitialised it writes whole before reading, so the
        # NaN fill that deterministic mode adds to each allocation is only cost (about 7% of a step)
        torch.utils.deterministic.fill_uninitialized_memory = False  # type: ignore[attr-defined]
    try:
        return _fit(model, counts, config, validate, seed, dev, progress)
    finally:
        torch.use_deterministic_algorithms(previous, warn_only=warn)
        torch.utils.deterministic.fill_uninitialized_memory = fill  # type: ignore[attr-defined]


def _fit(
    model: TwoTower,
    counts: sp.spmatrix,
    config: BatchedConfig,
    validate: Callable[[TwoTower], float] | None,
    seed: int,
    dev: torch.device,
    progress: bool,
) -> BatchedResult:
    start = time.perf_counter()
    keep_freed_memory()
    model = model.to(dev)
    pairs = pair_table(counts, model, config.pair_weighting, dev)
    if pairs.n_pairs == 0:
        raise ValueError("no training pairs: the count matrix is empty")
    gen = torch.Generator(device=dev).manual_seed(int(seed))
    q, logq = _sampler(pairs, model.config.n_artists, config, dev)
    cdf = _cdf(q)
    batch_pairs = config.batch_pairs or auto_batch_pairs(pairs.n_pairs)
    lens_all = pairs.indptr[1:] - pairs.indptr[:-1]
    active = torch.nonzero(lens_all > 0).squeeze(1)
    emb_params = [
        m.weight for m in model.modules() if isinstance(m, (nn.Embedding, nn.EmbeddingBag))
    ]
    rest = [p for p in model.parameters() if all(p is not e for e in emb_params)]
    row_adam = RowAdam(lr=config.lr)
    opts: list[torch.optim.Optimizer] = [torch.optim.Adam(rest, lr=config.lr)] if rest else []
    records: list[dict[str, Any]] = []
    best_metric, best_epoch, bad = -math.inf, 0, 0
    best_state = _state_copy(model)
    stopped_early = False
    bar = tqdm(range(1, config.epochs + 1), desc=f"train {config.name}", disable=not progress)
    for epoch in bar:
        model.train()
        t0, c0 = time.perf_counter(), time.process_time()
        total, seen = 0.0, 0
        for batch, chunks in _epoch_batches(pairs, lens_all, active, config, batch_pairs, gen):
            loss, n, tables = _batch_loss(model, batch, pairs, config, q, logq, gen, chunks, cdf)
            for o in opts:
                o.zero_grad(set_to_none=True)
            loss.backward()
            for t in tables:
                assert t.sub.grad is not None
                row_adam.step(t.weight, t.rows, t.sub.grad, t.sub.detach())
            for o in opts:
                o.step()
            total += float(loss.detach()) * n
            seen += n
        train_seconds = time.perf_counter() - t0
        cpu_seconds = time.process_time() - c0
        rec: dict[str, Any] = {
            "epoch": epoch,
            "loss": total / max(seen, 1),
            "val_metric": float("nan"),
            "epoch_seconds": train_seconds,
            "pairs_per_second": seen / train_seconds if train_seconds > 0 else float("nan"),
            "epoch_cpu_seconds": cpu_seconds,
            "val_seconds": float("nan"),
        }
        last = epoch == config.epochs
        if validate is not None and (epoch % config.eval_every == 0 or last):
            model.eval()
            t1 = time.perf_counter()
            metric = float(validate(model))
            rec["val_seconds"] = time.perf_counter() - t1
            rec["val_metric"] = metric
            if metric > best_metric:
                best_metric, best_epoch, bad = metric, epoch, 0
                best_state = _state_copy(model)
            else:
                bad += 1
            bar.set_postfix(loss=f"{rec['loss']:.4f}", val=f"{metric:.4f}")
        records.append(rec)
        if config.patience and bad >= config.patience:
            stopped_early = not last
            break
    bar.close()
    if validate is None:
        best_state, best_epoch, best_metric = _state_copy(model), len(records), float("nan")
    model.load_state_dict(best_state)
    model.eval()
    return BatchedResult(
        history=pd.DataFrame.from_records(records),
        best_epoch=best_epoch,
        best_metric=float(best_metric),
        best_state=best_state,
        stopped_early=stopped_early,
        seconds=time.perf_counter() - start,
        n_examples=pairs.n_pairs,
        device=str(dev),
        threads=torch.get_num_threads(),
        batch_pairs=batch_pairs,
    )


# --------------------------------------------------------------------------------------------------
# Scoring at scale
# --------------------------------------------------------------------------------------------------


@torch.no_grad()
def score_top_k(
    model: TwoTower,
    rows: np.ndarray,
    exclude: sp.spmatrix | None = None,
    k: int = 10,
    *,
    block_bytes: int = 256 * 2**20,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Top-``k`` artist columns per user row, heard artists (``exclude``'s cells) left out.

    Users are scored in blocks: one matrix product of the block's user vectors with every artist
    vector, ``-inf`` at the block's excluded cells, a partial ``torch.topk``. A block holds at most
    ``block_bytes`` of float32 scores. Returns int64 ``[len(rows), k]``, best first, -1 padded.
    """
    dev = resolve_device(device) if device is not None else model.artist_tower[0].weight.device
    model = model.to(dev).eval()
    rows = np.asarray(rows, dtype=np.int64)
    n_users, n_art = model.config.n_users, model.config.n_artists
    kk = min(k, n_art)
    ex = None if exclude is None else sp.csr_matrix(exclude)
    if ex is not None and ex.shape != (n_users, n_art):
        raise ValueError(f"exclude has shape {ex.shape}, the model {(n_users, n_art)}")
    a = model.artist_vectors()
    if model.config.similarity == "cosine":
        a = F.normalize(a, dim=-1)
    block = max(1, int(block_bytes // (4 * n_art)))
    out = np.full((len(rows), k), -1, dtype=np.int64)
    for s in range(0, len(rows), block):
        blk = rows[s : s + block]
        u = model.user_vectors(torch.as_tensor(blk, device=dev))
        if model.config.similarity == "cosine":
            u = F.normalize(u, dim=-1)
        scores = u @ a.T
        if ex is not None:
            sub = ex[blk]
            r = torch.as_tensor(_row_of_entry(sub), device=dev)
            c = torch.as_tensor(sub.indices.astype(np.int64), device=dev)
            scores[r, c] = -math.inf
        val, idx = torch.topk(scores, kk, dim=1)
        idx = torch.where(torch.isfinite(val), idx, torch.full_like(idx, -1))
        out[s : s + len(blk), :kk] = idx.cpu().numpy()
        del scores
    return out


@torch.no_grad()
def rank_hidden_blocks(
    model: TwoTower,
    rows: np.ndarray,
    hidden_cols: np.ndarray,
    exclude: sp.spmatrix,
    k: int = 10,
    *,
    device: str | torch.device | None = None,
    block_rows: int = 256,
    block_cols: int = 4096,
    early_exit: bool = True,
) -> np.ndarray:
    """Rank (1..k) of each row's hidden artist among the artists not in ``exclude``'s row, 0 = a miss
    (beyond ``k``, or the hidden artist is excluded): chapter 02's ranks, ``hit_ranks`` of the top ``k``.

    No top-k is kept: the rank is one plus the number of unheard artists that score above the hidden
    one (ties: a lower column ranks first), counted in tiles of ``block_rows`` users x ``block_cols``
    artists (one matrix product and one comparison per tile, small enough to stay in cache), the
    heard artists of the tile that score above it subtracted (read from the tile at the rows' sparse
    entries). With ``early_exit`` a row leaves as soon as ``k`` unheard artists score above its hidden
    one (a miss, whatever the rest of the columns hold), so the cost falls with the share of misses;
    without it every tile is scored (the cost of an all-hit block, independent of the weights).
    """
    rows = np.asarray(rows, dtype=np.int64)
    hidden_cols = np.asarray(hidden_cols, dtype=np.int64)
    if rows.shape != hidden_cols.shape:
        raise ValueError(f"rows {rows.shape} and hidden_cols {hidden_cols.shape} must match")
    dev = resolve_device(device) if device is not None else model.artist_tower[0].weight.device
    model = model.to(dev).eval()
    n_users, n_art = model.config.n_users, model.config.n_artists
    ex = _check_counts(exclude)
    if ex.shape != (n_users, n_art):
        raise ValueError(f"exclude has shape {ex.shape}, the model {(n_users, n_art)}")
    if len(rows) and (hidden_cols.min() < 0 or hidden_cols.max() >= n_art):
        raise ValueError(f"hidden_cols must be artist columns in [0, {n_art})")
    cosine = model.config.similarity == "cosine"
    a = model.artist_vectors()
    a = (F.normalize(a, dim=-1) if cosine else a).contiguous()
    block_cols = min(int(block_cols), 2**24)  # the counts are float sums of 0/1: exact below 2**24
    n_tiles = -(-n_art // block_cols)
    out = np.zeros(len(rows), dtype=np.int64)
    for s0 in range(0, len(rows), block_rows):
        blk = rows[s0 : s0 + block_rows]
        nb = len(blk)
        h = torch.as_tensor(hidden_cols[s0 : s0 + block_rows], device=dev)
        u = model.user_vectors(torch.as_tensor(blk, device=dev))
        u = (F.normalize(u, dim=-1) if cosine else u).contiguous()
        s_h = (u * a[h]).sum(-1)
        # "> s_down" is ">= s_h": the threshold for artists left of the hidden one (ties rank first)
        s_down = torch.nextafter(s_h, torch.full_like(s_h, -math.inf))
        # the block's heard entries, grouped by tile
        sub = ex[blk]
        hr = torch.as_tensor(_row_of_entry(sub), device=dev)
        hc = torch.as_tensor(sub.indices.astype(np.int64), device=dev)
        heard_hidden = torch.bincount(hr[hc == h[hr]], minlength=nb) > 0
        keep = hc != h[hr]
        hr, hc = hr[keep], hc[keep]
        order = torch.argsort(hc // block_cols, stable=True)
        hr, hc = hr[order], hc[order]
        bounds = torch.searchsorted(
            hc, torch.arange(0, n_tiles + 1, device=dev) * block_cols
        ).tolist()
        above = torch.zeros(nb, dtype=torch.int64, device=dev)
        active = torch.nonzero(~heard_hidden).squeeze(1)
        pos = torch.full((nb,), -1, dtype=torch.int64, device=dev)
        for j in range(n_tiles):
            if len(active) == 0:
                break
            c0, c1 = j * block_cols, min(n_art, (j + 1) * block_cols)
            ha, sa = h[active], s_h[active]
            tile = u[active] @ a[c0:c1].T
            thr = torch.where(ha >= c1, s_down[active], sa)
            fix = torch.zeros(len(active), dtype=torch.int64, device=dev)
            inside = torch.nonzero((ha >= c0) & (ha < c1)).squeeze(1)
            if len(inside):  # rows whose hidden artist is in this tile: ties left of it, and itself
                t_in = tile[inside]
                hcol = (ha[inside] - c0).unsqueeze(1)
                cols = torch.arange(c1 - c0, device=dev).unsqueeze(0)
                ties = (t_in == sa[inside].unsqueeze(1)) & (cols < hcol)
                own = t_in.gather(1, hcol).squeeze(1) > sa[inside]
                fix[inside] += ties.sum(1) - own.to(torch.int64)
            lo, hi = bounds[j], bounds[j + 1]
            if hi > lo:  # heard artists of the tile that were counted
                pos[active] = torch.arange(len(active), device=dev)
                p = pos[hr[lo:hi]]
                ok = p >= 0
                p, c = p[ok], hc[lo:hi][ok]
                vals = tile[p, c - c0]
                ahead = torch.where(c < ha[p], vals >= sa[p], vals > sa[p])
                fix -= torch.bincount(p[ahead], minlength=len(active))
                pos[active] = -1
            # the count, in place as float 0/1 (exact below 2**24 columns; about three times faster
            # than a bool tile summed as integers)
            cnt = tile.gt_(thr.unsqueeze(1)).sum(1).to(torch.int64) + fix
            above[active] += cnt
            if early_exit:
                active = active[above[active] < k]
        rank = above + 1
        rank = torch.where((rank <= k) & ~heard_hidden, rank, torch.zeros_like(rank))
        out[s0 : s0 + nb] = rank.cpu().numpy()
    return out
