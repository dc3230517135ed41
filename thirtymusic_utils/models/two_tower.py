"""Chapter 03: the study's training sample and its two-tower embedding model.

The sample rule (the study's, reproduced): for every user, the *positives* are the artists whose share of
the user's plays is at least ``positive`` (target +1); the *negatives* are ``int(negative * n_unheard)``
artists drawn uniformly without replacement from the artists the user never played (target -1).

Everything here is vectorised over users: negatives are drawn as *ranks* among a user's unheard artists
and mapped to columns with one global ``searchsorted`` over the CSR structure, so there is never a per-user
set difference over the catalogue, nor a dense users x artists array.

The model: two towers of the same shape, one over user ids and one over artist ids,
``nn.Embedding(n, d)`` followed by Linear layers; the score of a (user, artist) pair is the cosine (or the
dot product) of the two towers' outputs. The study's towers are ``Embedding(n, 10)``, ``Linear(10, 20)``,
``Sigmoid``, ``Linear(20, 20)``, ``Sigmoid``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "TowerConfig",
    "TwoTower",
    "heard_mask",
    "resolve_device",
    "sample_unheard",
    "top_per_row",
]


# --------------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------------


def _check_counts(counts: Any) -> sp.csr_matrix:
    """``counts`` as a canonical CSR matrix (sorted indices, no explicit zeros), or a clear error."""
    if not sp.issparse(counts):
        raise TypeError(
            f"counts must be a scipy.sparse users x artists matrix, got {type(counts).__name__}"
        )
    if counts.ndim != 2:
        raise ValueError(f"counts must be 2-D (users x artists), got shape {counts.shape}")
    csr = sp.csr_matrix(counts)
    if csr.nnz and csr.data.min() < 0:
        raise ValueError("counts must hold non-negative play counts")
    if not csr.has_canonical_format or (csr.nnz and (csr.data == 0).any()):
        csr = csr.copy()
        csr.sum_duplicates()
        csr.eliminate_zeros()
        csr.sort_indices()
    return csr


def _row_of_entry(csr: sp.csr_matrix) -> np.ndarray:
    """Row index of every stored entry (int64, length nnz)."""
    return np.repeat(np.arange(csr.shape[0], dtype=np.int64), np.diff(csr.indptr))


# --------------------------------------------------------------------------------------------------
# The sample rule
# --------------------------------------------------------------------------------------------------


def _unheard_keys(csr: sp.csr_matrix) -> np.ndarray:
    """Sorted int64 keys that map (row, rank among the row's unheard columns) to a column.

    For a row with sorted heard columns ``h_0 < h_1 < ...``, ``g_i = h_i - i`` is non-decreasing and the
    ``r``-th unheard column is ``r + #{i : g_i <= r}``. Offsetting every row by ``row * (n_cols + 1)``
    makes one globally sorted array, so a single ``searchsorted`` serves all rows at once.
    """
    rows = _row_of_entry(csr)
    within = np.arange(csr.nnz, dtype=np.int64) - csr.indptr[rows].astype(np.int64)
    g = csr.indices.astype(np.int64) - within
    return rows * (csr.shape[1] + 1) + g


def _rank_to_column(
    csr: sp.csr_matrix, keys: np.ndarray, rows: np.ndarray, ranks: np.ndarray
) -> np.ndarray:
    """Column of the ``ranks[i]``-th unheard artist of ``rows[i]`` (see ``_unheard_keys``)."""
    query = rows * (csr.shape[1] + 1) + ranks
    before = np.searchsorted(keys, query, side="right") - csr.indptr[rows].astype(np.int64)
    return ranks + before


def _sorted_unique(a: np.ndarray) -> np.ndarray:
    """Sorted distinct values (a sort and a mask: faster than ``np.unique``'s hashing on big arrays)."""
    a = np.sort(a)
    if len(a) < 2:
        return a
    return a[np.concatenate(([True], a[1:] != a[:-1]))]


def _distinct_ranks(n_avail: np.ndarray, k: np.ndarray, rng: np.random.Generator) -> tuple:
    """For each row ``u``, ``k[u]`` distinct ranks drawn uniformly from ``range(n_avail[u])``.

    Returns ``(rows, ranks)`` sorted by row, then rank. Rows asking for more than half of what they have are drawn
    as a random permutation prefix; the others by drawing with replacement and topping up duplicates
    (invariant under relabelling the ranks, hence every k-subset is equally likely).
    """
    if (k > n_avail).any():
        bad = int(np.flatnonzero(k > n_avail)[0])
        raise ValueError(f"row {bad} asks for {k[bad]} distinct draws out of {n_avail[bad]}")
    dense = np.flatnonzero((k > 0) & (2 * k > n_avail))
    sparse_rows = np.flatnonzero((k > 0) & (2 * k <= n_avail))
    out_rows: list[np.ndarray] = []
    out_ranks: list[np.ndarray] = []
    if len(dense):
        # random permutation of each row's ranks (total size < 2 * sum(k)), keep the first k
        sizes = n_avail[dense]
        r = np.repeat(dense, sizes)
        start = np.cumsum(sizes) - sizes
        ranks = np.arange(sizes.sum(), dtype=np.int64) - np.repeat(start, sizes)
        order = np.lexsort((rng.random(len(r)), r))
        r, ranks = r[order], ranks[order]
        pos = np.arange(len(r), dtype=np.int64) - np.repeat(start, sizes)
        keep = pos < np.repeat(k[dense], sizes)
        out_rows.append(r[keep])
        out_ranks.append(ranks[keep])
    if len(sparse_rows):
        big = int(n_avail.max()) + 1
        have = np.zeros(0, dtype=np.int64)  # keys row * big + rank, unique
        need = k[sparse_rows].copy()
        while need.sum() > 0:
            r = np.repeat(sparse_rows, need)
            draws = (rng.random(len(r)) * n_avail[r]).astype(np.int64)
            draws = np.minimum(draws, n_avail[r] - 1)  # guard against rounding up to n_avail
            have = _sorted_unique(np.concatenate([have, r * big + draws]))
            got = np.bincount(have // big, minlength=len(k))[sparse_rows]
            need = k[sparse_rows] - got
        out_rows.append(have // big)
        out_ranks.append(have % big)
    if not out_rows:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    big = int(n_avail.max()) + 1
    keys = np.sort(np.concatenate([r * big + x for r, x in zip(out_rows, out_ranks, strict=True)]))
    return keys // big, keys % big


def sample_unheard(
    counts: sp.spmatrix, n_per_user: np.ndarray, seed: int | np.random.Generator = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``n_per_user[u]`` distinct artists user ``u`` never played, uniformly, for all users at once.

    Returns ``(rows, cols)`` int64 arrays sorted by row, then column. No dense users x artists array
    is built, and no per-user set difference over the catalogue is taken.
    """
    csr = _check_counts(counts)
    k = np.asarray(n_per_user, dtype=np.int64)
    if k.shape != (csr.shape[0],):
        raise ValueError(f"n_per_user must have one entry per user ({csr.shape[0]}), got {k.shape}")
    if (k < 0).any():
        raise ValueError("n_per_user must be non-negative")
    rng = np.random.default_rng(seed)
    n_unheard = csr.shape[1] - np.diff(csr.indptr).astype(np.int64)
    if (k > n_unheard).any():
        bad = int(np.flatnonzero(k > n_unheard)[0])
        raise ValueError(
            f"user row {bad} asks for {k[bad]} negatives but has only {n_unheard[bad]} unheard artists"
        )
    rows, ranks = _distinct_ranks(n_unheard, k, rng)
    # sorted by (row, rank), and rank -> column is increasing within a row: sorted by (row, column)
    return rows, _rank_to_column(csr, _unheard_keys(csr), rows, ranks)


def heard_mask(counts: sp.spmatrix, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Whether each (rows[i], cols[i]) is a stored (played) cell of ``counts``: one sparse lookup."""
    csr = _check_counts(counts)
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    n_cols = csr.shape[1]
    keys = _row_of_entry(csr) * n_cols + csr.indices.astype(np.int64)  # globally sorted
    query = rows * n_cols + cols
    if not len(keys):
        return np.zeros(len(query), dtype=bool)
    pos = np.minimum(np.searchsorted(keys, query), len(keys) - 1)
    return keys[pos] == query


# --------------------------------------------------------------------------------------------------
# The two-tower model
# --------------------------------------------------------------------------------------------------

USER_INPUTS = ("id", "history", "id+history")
_ACTIVATIONS = {"sigmoid": nn.Sigmoid, "relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}


@dataclass
class TowerConfig:
    """Shape of both towers; JSON-serialisable so a checkpoint can rebuild the model.

    The study's tower is ``TowerConfig(n_users, n_artists)``: embedding 10, layers (20, 20), sigmoid
    after every layer, cosine similarity. ``output_activation="none"`` drops the activation after the
    last layer (the output may then be negative); ``layer_sizes=()`` leaves the bare embedding.
    ``user_input="history"`` feeds the user tower the mean of embeddings of the artists the user played
    (weighted by log plays; see :meth:`TwoTower.set_history`) instead of a user-id embedding, like the
    user towers of YouTube-style two-tower recommenders; ``"id+history"`` adds the two.
    ``history_dropout``: in training, each history artist is left out with this probability (the rest
    scaled up), so the tower learns to complete a history rather than to memorise it.
    ``max_history``: only the user's most played artists enter the history (0 = all), which bounds the
    cost of a user vector for the heaviest listeners.
    """

    n_users: int
    n_artists: int
    embedding_dim: int = 10
    layer_sizes: tuple[int, ...] = (20, 20)
    activation: str = "sigmoid"
    output_activation: str = "sigmoid"
    similarity: str = "cosine"
    init_std: float | None = None  # None: PyTorch's default N(0, 1) for the embeddings
    user_input: str = "id"
    history_dropout: float = 0.0
    max_history: int = 0

    def __post_init__(self) -> None:
        self.layer_sizes = tuple(int(s) for s in self.layer_sizes)
        if self.n_users < 1 or self.n_artists < 1:
            raise ValueError(
                f"need at least one user and one artist, got {self.n_users}, {self.n_artists}"
            )
        if self.embedding_dim < 1 or any(s < 1 for s in self.layer_sizes):
            raise ValueError(f"sizes must be positive: {self.embedding_dim}, {self.layer_sizes}")
        for name in (self.activation, self.output_activation):
            if name != "none" and name not in _ACTIVATIONS:
                raise ValueError(
                    f"activation must be one of {sorted(_ACTIVATIONS)} or 'none', got {name!r}"
                )
        if self.similarity not in ("cosine", "dot"):
            raise ValueError(f"similarity must be 'cosine' or 'dot', got {self.similarity!r}")
        if self.max_history < 0:
            raise ValueError(f"max_history must be >= 0 (0 = no limit), got {self.max_history}")
        if not 0.0 <= self.history_dropout < 1.0:
            raise ValueError(f"history_dropout must be in [0, 1), got {self.history_dropout}")
        if self.user_input not in USER_INPUTS:
            raise ValueError(f"user_input must be one of {USER_INPUTS}, got {self.user_input!r}")

    @property
    def output_dim(self) -> int:
        return self.layer_sizes[-1] if self.layer_sizes else self.embedding_dim

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["layer_sizes"] = list(self.layer_sizes)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TowerConfig:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown TowerConfig fields {sorted(unknown)}")
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def _tower(n: int, cfg: TowerConfig, embedding: bool = True) -> nn.Sequential:
    """``Embedding(n, d)`` (``Identity`` when ``embedding`` is False) then Linear layers with the
    configured activations."""
    layers: list[nn.Module] = [nn.Embedding(n, cfg.embedding_dim) if embedding else nn.Identity()]
    if embedding and cfg.init_std is not None:
        nn.init.normal_(layers[0].weight, std=cfg.init_std)
    width = cfg.embedding_dim
    for i, size in enumerate(cfg.layer_sizes):
        layers.append(nn.Linear(width, size))
        last = i == len(cfg.layer_sizes) - 1
        act = cfg.output_activation if last else cfg.activation
        if act != "none":
            layers.append(_ACTIVATIONS[act]())
        width = size
    return nn.Sequential(*layers)


def top_per_row(counts: sp.spmatrix, k: int) -> sp.csr_matrix:
    """Keep each row's ``k`` largest cells (ties: lower column first); ``k = 0`` keeps everything."""
    csr = _check_counts(counts)
    if k <= 0 or not csr.nnz or np.diff(csr.indptr).max() <= k:
        return csr
    rows = _row_of_entry(csr)
    order = np.lexsort((csr.indices, -csr.data, rows))
    rank = np.arange(csr.nnz, dtype=np.int64) - csr.indptr[rows[order]]
    keep = np.sort(order[rank < k])
    out = sp.csr_matrix(
        (csr.data[keep], (rows[keep], csr.indices[keep])), shape=csr.shape, dtype=csr.dtype
    )
    out.sort_indices()
    return out


class TwoTower(nn.Module):
    """Two towers of the same shape over user ids and artist ids; a pair's score is their similarity.

    With ``config.user_input`` ``"history"`` (or ``"id+history"``) the user tower's input is a weighted
    sum of a second artist embedding (``user_history``) over the user's played artists (plus the
    user-id embedding); the histories are buffers (saved in the ``state_dict``) set by
    :meth:`set_history`.
    """

    def __init__(self, config: TowerConfig) -> None:
        super().__init__()
        self.config = config
        self.user_tower = _tower(config.n_users, config, embedding=config.user_input != "history")
        self.artist_tower = _tower(config.n_artists, config)
        self.user_history: nn.EmbeddingBag | None = None
        if config.user_input != "id":
            self.user_history = nn.EmbeddingBag(config.n_artists, config.embedding_dim, mode="sum")
            nn.init.normal_(self.user_history.weight, std=config.init_std or 1.0)
            self.register_buffer("hist_indptr", torch.zeros(config.n_users + 1, dtype=torch.int64))
            self.register_buffer("hist_indices", torch.zeros(0, dtype=torch.int64))
            self.register_buffer("hist_weights", torch.zeros(0, dtype=torch.float32))

    @property
    def has_history(self) -> bool:
        return self.user_history is not None

    def set_history(self, counts: sp.spmatrix) -> TwoTower:
        """Set the users' histories from a users x artists count matrix: each user's (at most
        ``max_history`` most played) artists, weighted by log1p(plays) and summing to 1 per user.
        Only for a model whose user tower reads histories."""
        if not self.has_history:
            raise ValueError("this model's user tower has no history input (user_input='id')")
        csr = _check_counts(counts)
        if csr.shape != (self.config.n_users, self.config.n_artists):
            raise ValueError(
                f"history matrix has shape {csr.shape}, "
                f"the model {(self.config.n_users, self.config.n_artists)}"
            )
        csr = top_per_row(csr, self.config.max_history)
        rows = _row_of_entry(csr)
        w = np.log1p(csr.data.astype(np.float64))
        sums = np.bincount(rows, weights=w, minlength=csr.shape[0])
        w = w / np.where(sums > 0, sums, 1.0)[rows]
        return self.set_history_arrays(
            torch.as_tensor(csr.indptr.astype(np.int64)),
            torch.as_tensor(csr.indices.astype(np.int64)),
            torch.as_tensor(w.astype(np.float32)),
        )

    def set_history_arrays(
        self, indptr: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor
    ) -> TwoTower:
        """Set the history buffers directly (CSR arrays; used when loading a checkpoint)."""
        dev = self.artist_tower[0].weight.device
        self.hist_indptr = indptr.to(dev, torch.int64)
        self.hist_indices = indices.to(dev, torch.int64)
        self.hist_weights = weights.to(dev, torch.float32)
        return self

    def _history_sum(self, users: torch.Tensor, drop: torch.Tensor | None) -> torch.Tensor:
        """Weighted sum of ``user_history`` embeddings over each user's artists, ``drop[i]`` left out."""
        starts = self.hist_indptr[users]
        lens = self.hist_indptr[users + 1] - starts
        offsets = torch.cumsum(lens, 0) - lens
        total = int(lens.sum())
        pos = torch.repeat_interleave(starts - offsets, lens) + torch.arange(
            total, device=users.device
        )
        items = self.hist_indices[pos]
        w = self.hist_weights[pos]
        if drop is not None:
            w = w * (items != torch.repeat_interleave(drop, lens)).to(w.dtype)
        p = self.config.history_dropout
        if self.training and p > 0:
            keep = torch.rand(w.shape, device=w.device) >= p
            w = w * keep.to(w.dtype) / (1.0 - p)
        return self.user_history(items, offsets, per_sample_weights=w)

    def user_vectors(self, users: torch.Tensor, drop: torch.Tensor | None = None) -> torch.Tensor:
        """Output of the user tower for user indices (``[len(users), output_dim]``).

        ``drop`` (one artist per user) is left out of the user's history: training scores a played
        artist without letting the user tower see it.
        """
        if not self.has_history:
            return self.user_tower(users)
        x = self._history_sum(users, drop)
        if self.config.user_input == "id+history":
            x = x + self.user_tower[0](users)
        return self.user_tower[1:](x)

    def artist_vectors(self, artists: torch.Tensor | None = None) -> torch.Tensor:
        """Output of the artist tower (all artists when ``artists`` is None)."""
        if artists is None:
            artists = torch.arange(self.config.n_artists, device=self.artist_tower[0].weight.device)
        return self.artist_tower(artists)

    def similarity(self, u: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """Pairwise similarity of matching rows of ``u`` and ``a`` (cosine or dot)."""
        if self.config.similarity == "cosine":
            return F.cosine_similarity(u, a, dim=-1)
        return (u * a).sum(-1)

    def score_matrix(self, u: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """All-pairs similarity ``[len(u), len(a)]`` between tower outputs."""
        if self.config.similarity == "cosine":
            u = F.normalize(u, dim=-1)
            a = F.normalize(a, dim=-1)
        return u @ a.T

    def forward(self, users: torch.Tensor, artists: torch.Tensor) -> torch.Tensor:
        """Similarity of each (users[i], artists[i]) pair."""
        return self.similarity(self.user_vectors(users), self.artist_vectors(artists))


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` when given, else CUDA when available, else the CPU."""
    if device is not None and device != "auto":
        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device {device!r} requested but CUDA is not available")
        return dev
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
