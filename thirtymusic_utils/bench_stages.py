"""The bodies of ``make bench``'s model stages (``bench.py`` registers them), kept out of the model modules."""

from __future__ import annotations

import time

import numpy as np
import scipy.sparse as sp
import torch
from tqdm import tqdm

from .book.repro import peak_rss_mb
from .evaluation.metrics import hit_ranks, hr_at_k
from .evaluation.protocol import _as_counts, _as_rows, holdout_split
from .models.batched import (
    available_cores,
    busy_cores,
    configure_threads,
    fit_batched,
    rank_hidden_blocks,
)
from .models.knn import cf_top_n, topk_neighbours, user_neighbours, weight_matrix
from .models.training import (
    IMPROVED_TOWER,
    IMPROVED_TRAIN,
    improved_train_config,
    new_model,
    run_improved,
    validation_split,
)
from .models.two_tower import _check_counts, resolve_device
from .study.sample import study_sample


def bench_matrix(
    n_users: int = 45167,
    n_artists: int = 560_000,
    nnz: int = 20_000_000,
    seed: int = 0,
    *,
    zipf_a: float = 1.0,
    zipf_offset: float = 100.0,
    activity_sigma: float = 1.0,
) -> sp.csr_matrix:
    """A random play-count matrix of 30Music's full shape for benchmarks (about ``nnz`` non-zeros).

    Artist popularity is Zipf-like (weight of rank r: ``(r + 1 + zipf_offset) ** -zipf_a``, columns
    shuffled): with the defaults the top artist reaches about a third of the users and the top 10%
    of artists hold about 70% of the non-zeros. User activity is lognormal (``activity_sigma``);
    each draw picks an artist by popularity and a user by activity, repeated draws of a cell
    merge. Counts are geometric (mean 5). Every user has at least one artist.
    """
    rng = np.random.default_rng(seed)
    activity = rng.lognormal(0.0, activity_sigma, n_users)
    weights = (np.arange(n_artists) + 1.0 + zipf_offset) ** -zipf_a
    draws = int(nnz * 1.08)  # repeated cells merge: draw a little more than the target
    per_artist = rng.multinomial(draws, weights / weights.sum())
    cols = np.repeat(rng.permutation(n_artists).astype(np.int64), per_artist)
    cdf = np.cumsum(activity)
    cdf /= cdf[-1]
    rows = np.searchsorted(cdf, rng.random(draws), side="right").clip(max=n_users - 1)
    rows = np.concatenate([rows, np.arange(n_users)])  # nobody is left empty
    cols = np.concatenate([cols, rng.integers(0, n_artists, n_users)])
    keys = np.unique(rows * np.int64(n_artists) + cols)
    rows, cols = np.divmod(keys, n_artists)
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_users), out=indptr[1:])
    data = rng.geometric(0.2, len(keys)).astype(np.int64)
    return sp.csr_matrix((data, cols.astype(np.int32), indptr), shape=(n_users, n_artists))


def bench_knn_all_users(counts: sp.csr_matrix, k: int = 30, weighting: str = "minmax") -> dict:
    """Top-k neighbours of every user (the study's MinMax input): seconds and peak RSS."""
    X = weight_matrix(counts, weighting)
    t0 = time.perf_counter()
    idx, _ = topk_neighbours(X, k)
    seconds = time.perf_counter() - t0
    return {
        "seconds": seconds,
        "n_users": int(counts.shape[0]),
        "nnz": int(counts.nnz),
        "k": k,
        "mean_neighbours": float((idx >= 0).sum(axis=1).mean()),
        "peak_rss_mb": peak_rss_mb(),
    }


def bench_evaluate_hr10(counts: sp.csr_matrix, seed: int = 0, k: int = 30) -> dict:
    """The study's protocol end to end on all users (split, MinMax, kNN, as-run scores, HR@10)."""
    t0 = time.perf_counter()
    split = holdout_split(counts, seed)
    idx, sim = user_neighbours(split.train, k, weighting="minmax", rows=split.test_rows)
    top = cf_top_n(split.train, split.test_rows, idx, sim, "seed_as_run", 10)
    hr = hr_at_k(hit_ranks(top, split.hidden_cols), 10)
    return {
        "seconds": time.perf_counter() - t0,
        "n_test_users": split.n_test,
        "hr_at_10_seed": hr,
        "peak_rss_mb": peak_rss_mb(),
    }


def seed_dense_top_n(
    counts: sp.csr_matrix,
    rows: np.ndarray,
    k: int = 30,
    n: int = 10,
    *,
    slab_bytes: int = 512 * 2**20,
    progress: bool = False,
) -> np.ndarray:
    """The study's dense approach, re-implemented as the benchmark baseline (float64 numpy).

    Dense pivot of the matrix's non-empty columns, MinMax per column, dense cosine of ``rows``
    against every user, a full argsort per row for the ``k`` neighbours (zero similarities are not
    neighbours, as in ``topk_neighbours``), the neighbours' dense count rows summed unweighted, heard
    artists removed and a full argsort of the scores. The dense matrix is materialised in column
    slabs of ``slab_bytes`` so that it fits in memory; the arithmetic is the dense one.
    """
    c = _as_counts(counts).tocsc()
    nonempty = np.flatnonzero(np.diff(c.indptr) > 0)
    c = c[:, nonempty]
    n_users, n_cols = c.shape
    rows = _as_rows(rows, n_users)
    width = max(1, int(slab_bytes // (8 * max(n_users, 1))))
    gram = np.zeros((len(rows), n_users))
    sq = np.zeros(n_users)
    for lo in tqdm(range(0, n_cols, width), desc="dense gram", disable=not progress, leave=False):
        slab = c[:, lo : lo + width].toarray().astype(np.float64)
        mn, mx = slab.min(axis=0), slab.max(axis=0)
        rng = mx - mn
        rng[rng == 0] = 1.0
        slab = (slab - mn) / rng
        gram += slab[rows] @ slab.T
        sq += (slab * slab).sum(axis=1)
    norm = np.sqrt(sq)
    with np.errstate(divide="ignore", invalid="ignore"):
        sims = gram / (norm[rows][:, None] * norm[None, :])
    sims[~np.isfinite(sims)] = 0.0
    sims[np.arange(len(rows)), rows] = -np.inf
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    nsim = np.take_along_axis(sims, order, axis=1)
    cr = c.tocsr()
    out = np.full((len(rows), n), -1, dtype=np.int64)
    for i, r in enumerate(rows):
        nbrs = order[i][nsim[i] > 0]
        score = cr[nbrs].toarray().sum(axis=0).astype(np.float64)
        score[cr.indices[cr.indptr[r] : cr.indptr[r + 1]]] = -np.inf
        top = np.argsort(-score, kind="stable")[:n]
        top = top[score[top] > 0]
        out[i, : len(top)] = nonempty[top]
    return out


def ours_top_n(counts: sp.csr_matrix, rows: np.ndarray, k: int = 30, n: int = 10) -> np.ndarray:
    """The same recommendations as ``seed_dense_top_n``, sparse: MinMax, top-k kNN, as-run sums."""
    idx, sim = user_neighbours(counts, k, weighting="minmax", rows=rows)
    return cf_top_n(counts, rows, idx, sim, "seed_as_run", n)


def _extract_rows(counts: sp.csr_matrix, seed: int, max_users: int, max_rows: int):
    c = sp.csr_matrix(counts)[:max_users]
    split = holdout_split(c, seed)
    return split.train, split.test_rows[:max_rows]


def bench_seed_dense_10k(
    counts: sp.csr_matrix, seed: int = 0, *, max_users: int = 10_000, max_rows: int = 200
) -> dict:
    """The dense baseline on the first ``max_users`` users' training matrix, for the first
    ``max_rows`` test users of its hold-out (its cost is linear in that number)."""
    train, rows = _extract_rows(counts, seed, max_users, max_rows)
    t0 = time.perf_counter()
    seed_dense_top_n(train, rows)
    return {"seconds": time.perf_counter() - t0, "n_users": train.shape[0], "n_rows": len(rows),
            "peak_rss_mb": peak_rss_mb()}  # fmt: skip


def bench_ours_10k(
    counts: sp.csr_matrix, seed: int = 0, *, max_users: int = 10_000, max_rows: int = 200
) -> dict:
    """``ours_top_n`` on exactly the input of ``bench_seed_dense_10k``."""
    train, rows = _extract_rows(counts, seed, max_users, max_rows)
    t0 = time.perf_counter()
    ours_top_n(train, rows)
    return {"seconds": time.perf_counter() - t0, "n_users": train.shape[0], "n_rows": len(rows),
            "peak_rss_mb": peak_rss_mb()}  # fmt: skip


# --------------------------------------------------------------------------------------------------
# Benchmarks (wired into `make bench` by bench.py)
# --------------------------------------------------------------------------------------------------


def bench_sample_full(counts: sp.spmatrix, seed: int = 0) -> dict[str, float]:
    """Time the study's sample rule on ``counts``: seconds, samples per second, sample sizes."""
    t0 = time.perf_counter()
    sample = study_sample(counts, seed=seed)
    seconds = time.perf_counter() - t0
    n_pos = int(sample.is_positive.sum())
    return {
        "seconds": seconds,
        "samples_per_second": len(sample) / seconds if seconds > 0 else float("nan"),
        "n_sample": len(sample),
        "n_positives": n_pos,
        "n_negatives": len(sample) - n_pos,
    }


# --------------------------------------------------------------------------------------------------
# The whole-data two-tower trainer (issue 10): one epoch, training to early stop, scoring all test users
# --------------------------------------------------------------------------------------------------


def _trainer_facts() -> dict[str, float | int | str]:
    """Threads, device and the machine's load when a trainer stage starts (the cores are shared).

    The bench measures the machine's cores: every core this process may use (or ``OMP_NUM_THREADS``),
    not :func:`configure_threads`'s share of what the load leaves, which one 0.25 s sample of
    ``/proc/stat`` decides (a moment of hypervisor steal once halved a run's threads). What other
    processes kept busy at the start is recorded beside it."""
    import os

    load1, load5, _ = os.getloadavg()
    busy = busy_cores()
    return {
        "train_device": str(resolve_device(None)),
        "train_threads": configure_threads(
            0 if os.environ.get("OMP_NUM_THREADS") else available_cores()
        ),
        "busy_cores_at_start": round(busy, 2),
        "load_average_1min": load1,
        "load_average_5min": load5,
    }


def bench_train_epoch_full(
    counts: sp.spmatrix, seed: int = 0, device: str | torch.device | None = None
) -> dict[str, float | str]:
    """One epoch of the whole-data trainer (``IMPROVED_TRAIN``) over every pair of ``counts``."""
    facts = _trainer_facts()
    csr = _check_counts(counts)
    model = new_model(csr.shape[0], csr.shape[1], IMPROVED_TOWER, seed)
    if model.has_history:
        model.set_history(csr)
    cfg = IMPROVED_TRAIN.replace(epochs=1, patience=0)
    result = fit_batched(model, csr, cfg, seed=seed, device=device, progress=False)
    rec = result.history.iloc[0]
    return {
        **facts,
        "seconds": float(rec["epoch_seconds"]),
        "epoch_seconds": float(rec["epoch_seconds"]),
        "pairs_per_second": float(rec["pairs_per_second"]),
        "epoch_cpu_seconds": float(rec["epoch_cpu_seconds"]),
        "n_pairs": result.n_examples,
        "batch_pairs": int(result.batch_pairs),
        "train_device": result.device,
        "peak_rss_mb": peak_rss_mb(),
    }


def bench_train_full(
    counts: sp.spmatrix, seed: int = 0, device: str | torch.device | None = None
) -> dict[str, float | str]:
    """Chapter 05's training at this scale through the package: chapter 02's split, the validation
    hold-out, ``run_improved`` to early stop (the ``full`` profile's budget and patience), then HR@10
    on the test pairs."""
    facts = _trainer_facts()
    t0 = time.perf_counter()
    split = holdout_split(counts, seed)
    val = validation_split(split.train, split.test_rows, seed)
    cfg = improved_train_config("full")
    t1 = time.perf_counter()
    run = run_improved(
        split.train, split.test_rows, seed, config=cfg, val=val, device=device, progress=True
    )
    t2 = time.perf_counter()
    c2 = time.process_time()
    ranks = rank_hidden_blocks(run.model, split.test_rows, split.hidden_cols, split.train)
    t3 = time.perf_counter()
    score_cpu = time.process_time() - c2
    h = run.result.history
    return {
        **facts,
        "seconds": t3 - t0,
        "split_seconds": t1 - t0,
        "train_seconds": t2 - t1,
        "score_test_seconds": t3 - t2,
        "score_test_cpu_seconds": score_cpu,
        "epochs_run": int(h["epoch"].max()),
        "best_epoch": run.result.best_epoch,
        "stopped_early": int(run.result.stopped_early),
        "mean_epoch_seconds": float(h["epoch_seconds"].mean()),
        "mean_epoch_cpu_seconds": float(h["epoch_cpu_seconds"].mean()),
        "mean_val_seconds": float(h["val_seconds"].mean()),
        "val_metric_best": run.result.best_metric,
        "n_val_users": int(len(val[0].test_rows)),
        "n_test_users": int(len(split.test_rows)),
        "hr_at_10_embedding": float(hr_at_k(ranks, 10)),
        "train_device": run.result.device,
        "peak_rss_mb": peak_rss_mb(),
    }


def bench_score_all_test_users(
    counts: sp.spmatrix, seed: int = 0, device: str | torch.device | None = None
) -> dict[str, float | str]:
    """Rank the hidden artist of every test user of chapter 02's split among all unheard artists
    (``rank_hidden_blocks``) with an untrained improved model, every tile scored (no early exit): the
    cost of a block in which every row is a hit, independent of the weights (a trained model's misses
    leave early; ``bench_train_full`` times that case)."""
    facts = _trainer_facts()
    split = holdout_split(counts, seed)
    csr = split.train
    model = new_model(csr.shape[0], csr.shape[1], IMPROVED_TOWER, seed)
    if model.has_history:
        model.set_history(csr)
    model = model.to(resolve_device(device))
    t0, c0 = time.perf_counter(), time.process_time()
    rank_hidden_blocks(model, split.test_rows, split.hidden_cols, csr, early_exit=False)
    seconds = time.perf_counter() - t0
    return {
        **facts,
        "seconds": seconds,
        "cpu_seconds": time.process_time() - c0,
        "n_test_users": int(len(split.test_rows)),
        "users_per_second": len(split.test_rows) / seconds if seconds > 0 else float("nan"),
        "peak_rss_mb": peak_rss_mb(),
    }


# --------------------------------------------------------------------------------------------------
# baselines of chapter 03 (helper B's block): fit on the study's training matrix, score every test user

#: the settings the bench fits (typical of what chapter 03's validation search chooses; the factor
#: models at the iterations of the ``full`` profile's budget, ``baselines.GRIDS["full"]``)
BASELINE_BENCH_SETTINGS: dict[str, dict] = {
    "popularity": {},
    "cf_tuned": {"k": 500, "weighting": "bm25", "shrink": 10.0, "space": "weighted"},
    "item_knn": {"k": 200, "shrink": 50.0, "weighting": "binary"},
    "rp3beta": {"alpha": 0.75, "beta": 0.4, "k": 200},
    "ease": {"lam": 250.0},
    "ials": {
        "factors": 128,
        "regularization": 0.1,
        "alpha": 20.0,
        "iterations": 10,
        "weighting": "log1p",
    },
    "bpr": {"factors": 128, "learning_rate": 0.05, "regularization": 0.01, "iterations": 30},
}


def bench_baseline(counts: sp.csr_matrix, seed: int = 0, model: str = "popularity") -> dict:
    """One chapter-03 baseline: fit on the training matrix of the study's split and recommend a top
    10 to every test user (wall and CPU seconds of fit + score, the load average around them, peak
    RSS, HR@10; the cores may be shared, so CPU seconds say more than wall seconds there)."""
    import os

    from .models.baselines import build, ease_n_items

    split = holdout_split(counts, seed)
    params = dict(BASELINE_BENCH_SETTINGS[model])
    load1 = os.getloadavg()[0]
    t0, c0 = time.perf_counter(), time.process_time()
    top = build(model, params, "full", seed).top_n(split.train, split.test_rows, 10)
    seconds = time.perf_counter() - t0
    out = {
        "seconds": seconds,
        "cpu_seconds": time.process_time() - c0,
        "load_average_1min_start": load1,
        "load_average_1min_end": os.getloadavg()[0],
        "n_test_users": split.n_test,
        "hr_at_10": hr_at_k(hit_ranks(top, split.hidden_cols), 10),
        "peak_rss_mb": peak_rss_mb(),
    }
    if model == "ease":
        out["ease_n_items"] = ease_n_items("full")
    return out
