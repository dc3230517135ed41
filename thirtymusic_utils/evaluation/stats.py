"""Statistics of chapter 05: the study's subsample t-test and a sound paired comparison of models.

Every model of the book answers for the same test pairs (one hidden artist per test user), so each
model's result is a vector of per-user ranks (0 = the hidden artist is not in the top 10, else 1..10).
From those vectors this module computes:

- the study's procedure: 30 random 10% subsamples of the test users per model (drawn independently for
  each model), the mean of each, and an unpaired t-test on the two lists of means;
- paired tests on the same users: the exact McNemar test on hits, the Wilcoxon signed-rank test on
  reciprocal ranks, a paired bootstrap confidence interval of the HR@10 difference;
- a confidence interval of each model's HR@10 (percentile bootstrap and Wilson);
- all pairs of models with Holm's step-down correction, with effect sizes;
- a simulation of the study's procedure on two models of equal true HR@10 (its false-positive rate).

All random choices come from one ``seed`` (``np.random.default_rng``).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps
from statsmodels.stats.contingency_tables import mcnemar as _sm_mcnemar
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint
from tqdm import tqdm

from ..book.paths import build_path

#: The p-value the original study reported for its t-test (a figure of the study, not of this book).
STUDY_REPORTED_PVALUE = 0.00036

#: Every model the book scores, in reading order, with a label for tables and plots.
MODEL_LABELS: dict[str, str] = {
    "popularity": "Most popular",
    "cf_seed": "User-kNN CF, as the study ran it",
    "cf_seed_as_written": "User-kNN CF, as the study wrote it",
    "cf_weighted": "User-kNN CF, similarity-weighted",
    "cf_tuned": "User-kNN CF, tuned",
    "item_knn": "Item-kNN",
    "rp3beta": "RP3beta",
    "ease": "EASE",
    "ials": "iALS",
    "bpr": "BPR",
    "embedding_seed": "Two-tower, the study's setup",
    "embedding_improved": "Two-tower, improved",
}

#: The models the book compares (``cf_seed_as_written`` is shown in tables when present, not compared).
BOOK_MODELS: tuple[str, ...] = (
    "popularity",
    "cf_seed",
    "cf_weighted",
    "cf_tuned",
    "item_knn",
    "rp3beta",
    "ease",
    "ials",
    "bpr",
    "embedding_seed",
    "embedding_improved",
)

#: The baselines among which chapter 07 names the strongest (by validation HR@10).
BASELINE_MODELS: tuple[str, ...] = (
    "popularity",
    "cf_tuned",
    "item_knn",
    "rp3beta",
    "ease",
    "ials",
    "bpr",
)

#: Where each model's HR@10 is reported: (notebook, results key).
RESULT_KEYS: dict[str, tuple[str, str]] = {
    "popularity": ("02_collaborative_filtering", "hr_at_10_popularity"),
    "cf_seed": ("02_collaborative_filtering", "hr_at_10_seed"),
    "cf_seed_as_written": ("02_collaborative_filtering", "hr_at_10_seed_as_written"),
    "cf_weighted": ("02_collaborative_filtering", "hr_at_10_weighted"),
    "cf_tuned": ("03_baselines", "hr_at_10_tuned"),
    "item_knn": ("03_baselines", "test_hr_at_10_item_knn"),
    "rp3beta": ("03_baselines", "test_hr_at_10_rp3beta"),
    "ease": ("03_baselines", "test_hr_at_10_ease"),
    "ials": ("03_baselines", "test_hr_at_10_ials"),
    "bpr": ("03_baselines", "test_hr_at_10_bpr"),
    "embedding_seed": ("04_embeddings", "hr_at_10_embedding_seed"),
    "embedding_improved": ("05_training", "hr_at_10_embedding"),
}

#: Where each model's VALIDATION HR@10 is reported (the rule that names the strongest baseline).
VALIDATION_KEYS: dict[str, tuple[str, str]] = {
    "cf_tuned": ("03_baselines", "val_hr_at_10_cf_tuned"),
    "item_knn": ("03_baselines", "val_hr_at_10_item_knn"),
    "rp3beta": ("03_baselines", "val_hr_at_10_rp3beta"),
    "ease": ("03_baselines", "val_hr_at_10_ease"),
    "ials": ("03_baselines", "val_hr_at_10_ials"),
    "bpr": ("03_baselines", "val_hr_at_10_bpr"),
}

OUTCOME_PATTERN = "outcomes_*.csv"
#: The file that defines a model's outcomes where an older chapter may still write a copy.
OUTCOME_OWNERS: dict[str, str] = {
    m: "outcomes_03.csv" for m in ("cf_tuned", "item_knn", "rp3beta", "ease", "ials", "bpr")
}
OPTIONAL_MODELS = frozenset({"cf_seed_as_written"})
TOP_K = 10


# ----------------------------------------------------------------------------------------- loading


def _read_outcome_file(path: os.PathLike, models: Sequence[str]) -> pd.DataFrame:
    """One outcomes CSV with its pair columns and the rank columns of ``models`` checked."""
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path} does not exist: execute the chapter that writes it first (make book runs them in order)"
        )
    df = pd.read_csv(path)
    needed = ["user_id", "artist_id"] + [f"rank_{m}" for m in models if m not in OPTIONAL_MODELS]
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}; expected at least {needed}")
    for col in [c for c in df.columns if c.startswith("rank_")]:
        values = df[col]
        if values.isna().any() or not np.all(np.mod(values.to_numpy(dtype=float), 1) == 0):
            raise ValueError(f"{path}: column {col} must hold integers 0..{TOP_K}")
        if values.min() < 0 or values.max() > TOP_K:
            raise ValueError(
                f"{path}: column {col} must hold 0 (not in the top {TOP_K}) or a rank 1..{TOP_K}, "
                f"found values {values.min()}..{values.max()}"
            )
        df[col] = values.astype(np.int64)
    return df


def load_outcomes(build_dir: str | os.PathLike | None) -> pd.DataFrame:
    """Per-pair ranks of every model: every ``BUILD_DIR/artifacts/outcomes_*.csv`` joined.

    All files must list the same (user_id, artist_id) pairs in the same order (a clear error names
    the file and the first row where they differ) and no model may appear in two files. Returns
    ``user_id, artist_id, rank_<model>...`` (int64), files in name order.
    """
    art = build_path(build_dir) / "artifacts"
    paths = sorted(art.glob(OUTCOME_PATTERN))
    if not paths:
        raise FileNotFoundError(
            f"no {OUTCOME_PATTERN} in {art}: execute the chapters that write them first "
            "(make book runs them in order)"
        )
    parts = [_read_outcome_file(p, ()) for p in paths]
    first = parts[0]
    if len(first) == 0:
        raise ValueError(f"{paths[0]} holds no test pairs")
    a = first[["user_id", "artist_id"]].to_numpy()
    seen: dict[str, str] = {}
    ranks = []
    for path, part in zip(paths, parts, strict=True):
        if len(part) != len(first):
            raise ValueError(
                f"{paths[0].name} has {len(first)} pairs but {path.name} has {len(part)}: every "
                "chapter must score chapter 02's test pairs (re-run them on the same build)"
            )
        b = part[["user_id", "artist_id"]].to_numpy()
        differ = np.flatnonzero((a != b).any(axis=1))
        if differ.size:
            i = int(differ[0])
            raise ValueError(
                f"{paths[0].name} and {path.name} list different test pairs ({differ.size} rows "
                f"differ); first at row {i}: (user_id, artist_id) = {tuple(a[i])} vs {tuple(b[i])}. "
                "Every chapter must score the same pairs in the same order."
            )
        r = part.drop(columns=["user_id", "artist_id"]).reset_index(drop=True)
        for col in r.columns:
            if col.removeprefix("rank_") not in MODEL_LABELS:
                raise ValueError(
                    f"{path}: column {col} is not a model of the registry (MODEL_LABELS, "
                    f"RESULT_KEYS in evaluation/stats.py): add it there first"
                )
            if col in seen:
                owner = OUTCOME_OWNERS.get(col.removeprefix("rank_"))
                if owner in (seen[col], path.name):
                    other = path.name if owner == seen[col] else seen[col]
                    warnings.warn(
                        f"{other} also has {col}; {owner} defines it, the other copy is ignored",
                        stacklevel=2,
                    )
                    if owner == path.name:  # drop the earlier copy
                        ranks = [e.drop(columns=[col], errors="ignore") for e in ranks]
                        seen[col] = path.name
                    else:
                        r = r.drop(columns=[col])
                    continue
                raise ValueError(f"{col} is defined by both {seen[col]} and {path.name}")
            seen[col] = path.name
        ranks.append(r)
    return pd.concat([first[["user_id", "artist_id"]].reset_index(drop=True), *ranks], axis=1)


def strongest_baseline(
    results: Mapping[str, Mapping[str, Any]], candidates: Sequence[str] | None = None
) -> tuple[str, pd.DataFrame]:
    """The baseline with the best VALIDATION HR@10 (ties: the first in ``BASELINE_MODELS``).

    The rule is fixed before any test figure is looked at; returns the name and the table of
    validation scores it used.
    """
    names = list(candidates) if candidates is not None else list(VALIDATION_KEYS)
    rows = []
    for m in names:
        notebook, key = VALIDATION_KEYS[m]
        v = results.get(notebook, {}).get(key)
        if v is not None:
            rows.append({"model": m, "label": MODEL_LABELS[m], "val_hr_at_10": float(v)})
    if not rows:
        raise ValueError("no validation HR@10 of any baseline in the results (run chapter 03)")
    table = pd.DataFrame(rows)
    best = table.iloc[int(np.argmax(table["val_hr_at_10"].to_numpy()))]["model"]
    return str(best), table


def model_ranks(
    outcomes: pd.DataFrame, models: Sequence[str] | None = None
) -> dict[str, np.ndarray]:
    """``{model: ranks}`` for the models present in ``outcomes`` (all of ``MODEL_LABELS`` by default)."""
    names = list(models) if models is not None else list(MODEL_LABELS)
    out = {}
    for m in names:
        col = f"rank_{m}"
        if col in outcomes.columns:
            out[m] = outcomes[col].to_numpy(dtype=np.int64)
        elif models is not None:
            raise KeyError(f"outcomes have no column {col!r}; columns are {list(outcomes.columns)}")
    return out


def hits(ranks: np.ndarray, k: int = TOP_K) -> np.ndarray:
    """Boolean hit vector: the hidden artist is in the top ``k`` (rank 1..k; 0 means missed)."""
    ranks = np.asarray(ranks)
    return (ranks > 0) & (ranks <= k)


def reciprocal_ranks(ranks: np.ndarray, k: int = TOP_K) -> np.ndarray:
    """Per-pair reciprocal rank truncated at ``k``: 1/rank for a hit, 0 for a miss."""
    ranks = np.asarray(ranks)
    out = np.zeros(ranks.shape, dtype=float)
    h = hits(ranks, k)
    out[h] = 1.0 / ranks[h]
    return out


def check_against_results(
    ranks: Mapping[str, np.ndarray], results: Mapping[str, Mapping[str, Any]], tol: float = 1e-6
) -> pd.DataFrame:
    """Compare each model's HR@10 from the outcomes with the figure its chapter reported.

    ``results`` maps notebook names to their results JSON. Returns a table (model, from_outcomes,
    reported, matches); raises ValueError when a reported figure differs from the outcomes.
    """
    rows = []
    for model, r in ranks.items():
        notebook, key = RESULT_KEYS[model]
        reported = results.get(notebook, {}).get(key)
        hr = float(hits(r).mean())
        ok = None if reported is None else bool(abs(hr - float(reported)) <= tol)
        rows.append(
            {
                "model": model,
                "source": f"{notebook}:{key}",
                "hr_from_outcomes": hr,
                "hr_reported": reported,
                "matches": ok,
            }
        )
    table = pd.DataFrame(rows)
    bad = table[table["matches"] == False]  # noqa: E712 - None means "not reported"
    if len(bad):
        raise ValueError(
            "per-pair outcomes disagree with the chapters' reported HR@10 (stale build?):\n"
            + bad.to_string(index=False)
        )
    return table


# ---------------------------------------------------------------------------- the study's t-test


@dataclass(frozen=True)
class StudyTTest:
    """The study's test: the subsample means of each model and ``scipy.stats.ttest_ind`` on them."""

    means_a: np.ndarray
    means_b: np.ndarray
    statistic: float
    pvalue: float


def subsample_size(n: int, fraction: float) -> int:
    """Users per subsample: ``round(fraction * n)``, at least 1."""
    if n < 1:
        raise ValueError("need at least one test user")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    return max(1, int(round(fraction * n)))


def subsample_means(
    values: np.ndarray, n_subsamples: int, fraction: float, rng: np.random.Generator
) -> np.ndarray:
    """Means of ``n_subsamples`` random subsamples (each without replacement, overlapping each other)."""
    values = np.asarray(values, dtype=float)
    m = subsample_size(values.size, fraction)
    return np.array(
        [values[rng.choice(values.size, m, replace=False)].mean() for _ in range(n_subsamples)]
    )


def study_ttest(
    values_a: np.ndarray,
    values_b: np.ndarray,
    n_subsamples: int = 30,
    fraction: float = 0.1,
    seed: int = 0,
) -> StudyTTest:
    """The study's procedure: independent subsamples per model, then an unpaired t-test on the means.

    ``values_*`` are per-user metric values (hits for HR@10). Reproducible for a given ``seed``.
    """
    rng = np.random.default_rng(seed)
    a = subsample_means(values_a, n_subsamples, fraction, rng)
    b = subsample_means(values_b, n_subsamples, fraction, rng)
    with warnings.catch_warnings():  # identical means give NaN (reported), not a warning
        warnings.simplefilter("ignore", RuntimeWarning)
        res = sps.ttest_ind(a, b)
    return StudyTTest(a, b, float(res.statistic), float(res.pvalue))


def study_subsample_table(
    values: Mapping[str, np.ndarray], n_subsamples: int = 30, fraction: float = 0.1, seed: int = 0
) -> pd.DataFrame:
    """The study's subsample means for every model (long form: model, subsample, mean)."""
    rng = np.random.default_rng(seed)
    frames = [
        pd.DataFrame(
            {
                "model": model,
                "subsample": np.arange(n_subsamples),
                "mean": subsample_means(v, n_subsamples, fraction, rng),
            }
        )
        for model, v in values.items()
    ]
    return pd.concat(frames, ignore_index=True)


# ---------------------------------------------------------------------------------- paired tests


@dataclass(frozen=True)
class McNemarResult:
    """Exact McNemar test of two paired hit vectors, with effect sizes.

    ``n_a_only``: pairs that only model a hits; ``n_b_only``: only model b. ``hr_diff`` is
    HR(a) - HR(b); ``odds_ratio`` = n_a_only / n_b_only; ``cohens_g`` = n_a_only / discordant - 0.5.
    """

    n: int
    n_a_only: int
    n_b_only: int
    hr_diff: float
    pvalue: float
    odds_ratio: float
    cohens_g: float


def mcnemar_exact(hits_a: np.ndarray, hits_b: np.ndarray) -> McNemarResult:
    """Exact McNemar test (``statsmodels``): a two-sided binomial test (p = 1/2) on the discordant
    pairs."""
    a = np.asarray(hits_a, dtype=bool)
    b = np.asarray(hits_b, dtype=bool)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(
            f"expected two 1-D hit vectors of equal length, got {a.shape} and {b.shape}"
        )
    if a.size == 0:
        raise ValueError("expected at least one pair")
    n10 = int(np.count_nonzero(a & ~b))
    n01 = int(np.count_nonzero(~a & b))
    d = n10 + n01
    # statsmodels' exact McNemar: a two-sided binomial test (p = 1/2) on the discordant cells
    table = [[int(np.count_nonzero(a & b)), n10], [n01, int(np.count_nonzero(~a & ~b))]]
    p = 1.0 if d == 0 else min(1.0, float(_sm_mcnemar(table, exact=True).pvalue))
    if n01 > 0:
        odds = n10 / n01
    else:
        odds = math.inf if n10 > 0 else math.nan
    g = n10 / d - 0.5 if d else 0.0
    return McNemarResult(a.size, n10, n01, (n10 - n01) / a.size, p, odds, g)


@dataclass(frozen=True)
class WilcoxonResult:
    """Wilcoxon signed-rank test of paired values (a - b) with the matched-pairs rank-biserial r."""

    statistic: float
    pvalue: float
    n_nonzero: int
    rank_biserial: float


def rank_biserial(x_a: np.ndarray, x_b: np.ndarray) -> float:
    """Matched-pairs rank-biserial correlation (T+ - T-) / (T+ + T-) over the non-zero differences.

    Positive when a tends to be larger than b; 0 when all differences are zero.
    """
    d = np.asarray(x_a, dtype=float) - np.asarray(x_b, dtype=float)
    d = d[d != 0]
    if d.size == 0:
        return 0.0
    r = sps.rankdata(np.abs(d))
    t_plus = r[d > 0].sum()
    t_minus = r[d < 0].sum()
    return float((t_plus - t_minus) / (t_plus + t_minus))


def wilcoxon_paired(x_a: np.ndarray, x_b: np.ndarray) -> WilcoxonResult:
    """``scipy.stats.wilcoxon`` on paired values (zeros dropped); all-zero differences give p = 1."""
    a = np.asarray(x_a, dtype=float)
    b = np.asarray(x_b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"expected two 1-D vectors of equal length, got {a.shape} and {b.shape}")
    nz = int(np.count_nonzero(a != b))
    if nz == 0:
        return WilcoxonResult(0.0, 1.0, 0, 0.0)
    res = sps.wilcoxon(a, b, zero_method="wilcox")
    return WilcoxonResult(float(res.statistic), float(res.pvalue), nz, rank_biserial(a, b))


# ------------------------------------------------------------------------------------- intervals


def bootstrap_means(
    values: np.ndarray,
    n_resamples: int = 10_000,
    seed: int = 0,
    max_chunk_elements: int = 1 << 22,
    progress: bool = False,
) -> np.ndarray:
    """Means of ``n_resamples`` bootstrap resamples of the rows of ``values`` (n,) or (n, k).

    Rows (users) are resampled with replacement, the same rows for every column, so differences of
    columns are paired bootstrap replicates. Indices are drawn in chunks of at most
    ``max_chunk_elements`` gathered values to bound memory. Returns (n_resamples,) or (n_resamples, k).
    """
    arr = np.asarray(values)
    one_d = arr.ndim == 1
    if one_d:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise ValueError(f"expected a non-empty (n,) or (n, k) array, got shape {np.shape(values)}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be positive, got {n_resamples}")
    if arr.dtype == bool:
        arr = arr.astype(np.int8)
    n, k = arr.shape
    rng = np.random.default_rng(seed)
    out = np.empty((n_resamples, k))
    rows = max(1, max_chunk_elements // (n * k))
    starts = range(0, n_resamples, rows)
    for start in tqdm(starts, desc="bootstrap", disable=not progress):
        stop = min(n_resamples, start + rows)
        idx = rng.integers(0, n, size=(stop - start, n))
        for j in range(k):
            out[start:stop, j] = arr[:, j][idx].sum(axis=1, dtype=np.float64) / n
    return out[:, 0] if one_d else out


def percentile_ci(replicates: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of bootstrap replicates."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    lo, hi = np.quantile(np.asarray(replicates, dtype=float), [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def paired_bootstrap_ci(
    x_a: np.ndarray,
    x_b: np.ndarray,
    n_resamples: int = 10_000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Paired bootstrap percentile CI of mean(a) - mean(b) (``scipy.stats.bootstrap`` on the paired
    differences, users resampled): returns (estimate, low, high)."""
    a = np.asarray(x_a, dtype=float)
    b = np.asarray(x_b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"expected two 1-D vectors of equal length, got {a.shape} and {b.shape}")
    d = a - b
    est = float(a.mean() - b.mean())
    if np.all(d == d[0]):
        return est, float(d[0]), float(d[0])
    res = sps.bootstrap(
        (d,),
        np.mean,
        n_resamples=n_resamples,
        confidence_level=level,
        method="percentile",
        rng=np.random.default_rng(seed),
        vectorized=True,
    )
    return est, float(res.confidence_interval.low), float(res.confidence_interval.high)


def wilson_interval(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion ``k / n`` (``statsmodels.proportion_confint``)."""
    if n <= 0 or not 0 <= k <= n:
        raise ValueError(f"expected 0 <= k <= n and n > 0, got k={k}, n={n}")
    lo, hi = proportion_confint(k, n, alpha=1 - level, method="wilson")
    p = k / n
    # clamp against rounding: the interval always holds k / n and stays inside [0, 1]
    return min(p, max(0.0, float(lo))), max(p, min(1.0, float(hi)))


# ---------------------------------------------------------------------------- multiple testing


def holm(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values (same order as given), capped at 1 (``statsmodels``)."""
    p = np.asarray(pvalues, dtype=float)
    if p.ndim != 1:
        raise ValueError(f"expected a 1-D list of p-values, got shape {p.shape}")
    if np.any(np.isnan(p)) or np.any((p < 0) | (p > 1)):
        raise ValueError(f"p-values must lie in [0, 1], got {p}")
    if p.size == 0:
        return p
    return multipletests(p, method="holm")[1]


# -------------------------------------------------------------------------------- model tables


def model_summary(
    ranks: Mapping[str, np.ndarray],
    n_resamples: int = 10_000,
    level: float = 0.95,
    seed: int = 0,
    progress: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-model HR@10 with percentile bootstrap and Wilson intervals, plus MRR@10.

    Returns the table (one row per model) and the bootstrap replicates of HR@10 (n_resamples rows,
    one column per model, the same resampled users for every model, so column differences are
    paired replicates), drawn by ``scipy.stats.bootstrap``. ``progress`` is ignored.
    """
    names = list(ranks)
    h = np.column_stack([hits(ranks[m]) for m in names])
    H = h.T.astype(np.float64)  # models x users; scipy resamples the users jointly (paired)
    if np.all(H == H[:, :1]):
        reps = np.tile(H[:, 0], (n_resamples, 1))
    else:
        res = sps.bootstrap(
            (H,),
            lambda x, axis=-1: x.mean(axis=axis),
            axis=-1,
            n_resamples=n_resamples,
            confidence_level=level,
            method="percentile",
            rng=np.random.default_rng(seed),
            vectorized=True,
            batch=max(1, int(2e8 // max(H.size, 1))),
        )
        reps = np.asarray(res.bootstrap_distribution).T
    rows = []
    for j, m in enumerate(names):
        k, n = int(h[:, j].sum()), h.shape[0]
        lo, hi = percentile_ci(reps[:, j], level)
        wlo, whi = wilson_interval(k, n, level)
        rows.append(
            {
                "model": m,
                "label": MODEL_LABELS.get(m, m),
                "n": n,
                "hits": k,
                "hr_at_10": k / n,
                "ci_low": lo,
                "ci_high": hi,
                "wilson_low": wlo,
                "wilson_high": whi,
                "mrr_at_10": float(reciprocal_ranks(ranks[m]).mean()),
            }
        )
    return pd.DataFrame(rows), pd.DataFrame(reps, columns=names)


def paired_difference_cis(
    ranks: Mapping[str, np.ndarray],
    pairs: Sequence[tuple[str, str]],
    level: float = 0.95,
    n_resamples: int = 10_000,
    seed: int = 0,
) -> np.ndarray:
    """Percentile bootstrap intervals of HR@10(a) - HR@10(b) for each pair, ``(len(pairs), 2)``.

    One ``scipy.stats.bootstrap`` run resamples the users jointly for every model (paired).
    """
    names = list(ranks)
    col = {m: j for j, m in enumerate(names)}
    H = np.vstack([hits(ranks[m]).astype(np.float64) for m in names])  # models x users
    ia = np.array([col[a] for a, _ in pairs])
    ib = np.array([col[b] for _, b in pairs])

    def diff(x: np.ndarray, axis: int = -1) -> np.ndarray:
        mu = x.mean(axis=axis)  # (models, ...) with the users axis last
        return mu[ia] - mu[ib]

    d = diff(H)
    if np.all(H == H[:, :1]):  # nothing varies: every resample gives the same differences
        return np.column_stack([d, d])
    res = sps.bootstrap(
        (H,),
        diff,
        axis=-1,
        n_resamples=n_resamples,
        confidence_level=level,
        method="percentile",
        rng=np.random.default_rng(seed),
        vectorized=True,
        batch=max(1, int(2e8 // max(H.size, 1))),
    )
    lo = np.where(np.isnan(res.confidence_interval.low), d, res.confidence_interval.low)
    hi = np.where(np.isnan(res.confidence_interval.high), d, res.confidence_interval.high)
    return np.column_stack([lo, hi])


def pairwise_comparisons(
    ranks: Mapping[str, np.ndarray],
    replicates: pd.DataFrame | None = None,
    n_resamples: int = 10_000,
    level: float = 0.95,
    alpha: float = 0.05,
    seed: int = 0,
    adjust_intervals: bool = True,
) -> pd.DataFrame:
    """All pairs of models: McNemar and Wilcoxon p-values (raw and Holm), CI and effect sizes.

    Each row compares ``model_a`` with ``model_b`` (differences are a - b, pairs in the order
    of ``ranks``). Intervals are paired percentile bootstrap intervals (``paired_difference_cis``);
    with ``adjust_intervals`` they are at the Bonferroni level ``1 - (1 - level) / m`` for m pairs,
    which contains what Holm's step-down would give each pair (column ``ci_level``). ``replicates``
    is accepted for compatibility and ignored.
    """
    names = list(ranks)
    if len(names) < 2:
        raise ValueError("need at least two models to compare")
    pairs = [(names[i], names[j]) for i, j in combinations(range(len(names)), 2)]
    ci_level = 1 - (1 - level) / len(pairs) if adjust_intervals else level
    cis = paired_difference_cis(ranks, pairs, ci_level, n_resamples, seed)
    rows = []
    for (a, b), (lo, hi) in zip(pairs, cis, strict=True):
        mc = mcnemar_exact(hits(ranks[a]), hits(ranks[b]))
        wx = wilcoxon_paired(reciprocal_ranks(ranks[a]), reciprocal_ranks(ranks[b]))
        rows.append(
            {
                "model_a": a,
                "model_b": b,
                "hr_diff": mc.hr_diff,
                "ci_low": float(lo),
                "ci_high": float(hi),
                "ci_level": ci_level,
                "n_a_only": mc.n_a_only,
                "n_b_only": mc.n_b_only,
                "odds_ratio": mc.odds_ratio,
                "cohens_g": mc.cohens_g,
                "mcnemar_p": mc.pvalue,
                "wilcoxon_p": wx.pvalue,
                "rank_biserial": wx.rank_biserial,
            }
        )
    table = pd.DataFrame(rows)
    table["mcnemar_p_holm"] = holm(table["mcnemar_p"].to_numpy())
    table["wilcoxon_p_holm"] = holm(table["wilcoxon_p"].to_numpy())
    table["significant_holm"] = table["mcnemar_p_holm"] < alpha
    return table


def find_pair(table: pd.DataFrame, a: str, b: str) -> dict[str, Any]:
    """The row comparing ``a`` with ``b`` as a dict, oriented as a - b (flipped if stored b - a)."""
    row = table[(table["model_a"] == a) & (table["model_b"] == b)]
    if len(row):
        return row.iloc[0].to_dict()
    row = table[(table["model_a"] == b) & (table["model_b"] == a)]
    if not len(row):
        raise KeyError(f"no comparison of {a!r} with {b!r} in the table")
    d = row.iloc[0].to_dict()
    return {
        **d,
        "model_a": a,
        "model_b": b,
        # 0.0 - x, not -x: a zero stays 0.0 instead of printing as -0.0
        "hr_diff": 0.0 - d["hr_diff"],
        "ci_low": 0.0 - d["ci_high"],
        "ci_high": 0.0 - d["ci_low"],
        "n_a_only": d["n_b_only"],
        "n_b_only": d["n_a_only"],
        "odds_ratio": (1 / d["odds_ratio"]) if d["odds_ratio"] else math.inf,
        "cohens_g": 0.0 - d["cohens_g"],
        "rank_biserial": 0.0 - d["rank_biserial"],
    }


def better_of(ranks: Mapping[str, np.ndarray], candidates: Sequence[str]) -> str:
    """The candidate with the highest HR@10 (the first one listed on a tie)."""
    present = [c for c in candidates if c in ranks]
    if not present:
        raise KeyError(f"none of {list(candidates)} among the models {list(ranks)}")
    scores = [hits(ranks[c]).mean() for c in present]
    return present[int(np.argmax(scores))]


# ------------------------------------------------------------------------------------- wording


def comparison_verdict(ci_low: float, ci_high: float, pvalue: float, alpha: float = 0.05) -> str:
    """ "ahead of", "behind" or "level with" for a difference a - b: the book's one verdict rule,
    :func:`thirtymusic_utils.book.verdicts.verdict_word` (the test and the interval must agree)."""
    from ..book.verdicts import verdict_word

    return verdict_word(ci_low, ci_high, pvalue, alpha)


def significance_word(pvalue: float | None, alpha: float = 0.05) -> str:
    """ "significant" or "not significant" at level ``alpha`` (NaN/None counts as not significant)."""
    if pvalue is None or math.isnan(pvalue):
        return "not significant"
    return "significant" if pvalue < alpha else "not significant"


def rate_vs_nominal(count: int, n: int, nominal: float = 0.05, alpha: float = 0.01) -> str:
    """ "above", "below" or "close to": a rejection rate ``count / n`` against the nominal rate."""
    if n <= 0:
        raise ValueError("need at least one repetition")
    if sps.binomtest(count, n, nominal, alternative="greater").pvalue < alpha:
        return "above"
    if sps.binomtest(count, n, nominal, alternative="less").pvalue < alpha:
        return "below"
    return "close to"


def format_pvalue(p: float | None) -> str:
    """A p-value for prose: three decimals, scientific below 0.001, "n/a" when undefined."""
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "n/a"
    if p == 0:
        return "< 1e-300"
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


# ----------------------------------------------------------------------------------- simulation


STUDY_METHOD = "study's subsample t-test"
MCNEMAR_METHOD = "exact McNemar (paired)"


@dataclass(frozen=True)
class SimulationResult:
    """The study's procedure on two models of equal true HR@10, repeated ``n_reps`` times.

    ``table``: method, n_subsamples, rejections, n_reps, rate (false-positive rate at ``alpha``).
    ``pvalues_study``/``pvalues_mcnemar``: per-repetition p-values at ``n_subsamples_main``.
    """

    table: pd.DataFrame
    pvalues_study: np.ndarray
    pvalues_mcnemar: np.ndarray
    n_subsamples_main: int

    @property
    def n_reps(self) -> int:
        """Number of repetitions."""
        return int(self.pvalues_mcnemar.size)

    @property
    def rejections_study(self) -> int:
        """Rejections of the study's test at ``n_subsamples_main`` subsamples."""
        t = self.table
        row = t[(t["method"] == STUDY_METHOD) & (t["n_subsamples"] == self.n_subsamples_main)]
        return int(row["rejections"].iloc[0])

    @property
    def rejections_mcnemar(self) -> int:
        """Rejections of the exact McNemar test."""
        return int(self.table.loc[self.table["method"] == MCNEMAR_METHOD, "rejections"].iloc[0])


def correlated_hits(
    n: int, hit_rate: float, correlation: float, rng: np.random.Generator, size: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Two (size, n) Bernoulli(hit_rate) hit arrays with per-user correlation ``correlation`` >= 0.

    Model b copies model a's outcome with probability ``correlation``, else draws its own: both
    have the same true HR and their phi coefficient is ``correlation``.
    """
    if not 0 <= hit_rate <= 1 or not 0 <= correlation <= 1:
        raise ValueError(
            f"hit_rate and correlation must lie in [0, 1], got {hit_rate}, {correlation}"
        )
    a = rng.random((size, n)) < hit_rate
    own = rng.random((size, n)) < hit_rate
    copy = rng.random((size, n)) < correlation
    return a, np.where(copy, a, own)


def simulate_study_false_positives(
    n_users: int,
    hit_rate: float,
    correlation: float = 0.0,
    n_reps: int = 500,
    n_subsamples_grid: Sequence[int] = (5, 10, 30, 100),
    n_subsamples_main: int = 30,
    fraction: float = 0.1,
    alpha: float = 0.05,
    seed: int = 0,
) -> SimulationResult:
    """False-positive rate of the study's subsample t-test when both models have equal true HR@10.

    Each repetition draws per-user hits for two equally good models on ``n_users`` test users, then
    runs the study's procedure (independent overlapping subsamples per model, t-test on the means)
    for each number of subsamples in the grid, and the exact McNemar test on the same hits.
    The number of hits in a subsample drawn without replacement is hypergeometric, which is what
    is drawn here (exactly the distribution of :func:`subsample_means` on hits, and fast).
    """
    if n_users < 2:
        raise ValueError(f"need at least two users, got {n_users}")
    grid = sorted(set(int(s) for s in n_subsamples_grid) | {int(n_subsamples_main)})
    rng = np.random.default_rng(seed)
    a, b = correlated_hits(n_users, hit_rate, correlation, rng, size=n_reps)
    ka = a.sum(axis=1)
    kb = b.sum(axis=1)
    m = subsample_size(n_users, fraction)
    rows = []
    p_main = np.full(n_reps, np.nan)
    for s in grid:
        ma = rng.hypergeometric(ka[:, None], n_users - ka[:, None], m, size=(n_reps, s)) / m
        mb = rng.hypergeometric(kb[:, None], n_users - kb[:, None], m, size=(n_reps, s)) / m
        with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
            # repetitions whose means are (nearly) all equal give NaN or imprecise p: not warned
            warnings.simplefilter("ignore", RuntimeWarning)
            p = np.asarray(sps.ttest_ind(ma, mb, axis=1).pvalue, dtype=float)
        if s == n_subsamples_main:
            p_main = p
        rej = int(np.count_nonzero(p < alpha))
        rows.append(
            {
                "method": STUDY_METHOD,
                "n_subsamples": s,
                "rejections": rej,
                "n_reps": n_reps,
                "rate": rej / n_reps,
            }
        )
    n10 = (a & ~b).sum(axis=1)
    n01 = (~a & b).sum(axis=1)
    d = n10 + n01
    # exact two-sided binomial test at 1/2 (symmetric): 2 * P(X <= min), capped at 1; 1 if no discordance
    p_mc = np.where(d > 0, np.minimum(1.0, 2 * sps.binom.cdf(np.minimum(n10, n01), d, 0.5)), 1.0)
    rej = int(np.count_nonzero(p_mc < alpha))
    rows.append(
        {
            "method": MCNEMAR_METHOD,
            "n_subsamples": 0,
            "rejections": rej,
            "n_reps": n_reps,
            "rate": rej / n_reps,
        }
    )
    return SimulationResult(pd.DataFrame(rows), p_main, p_mc, int(n_subsamples_main))


def hit_correlation(hits_a: np.ndarray, hits_b: np.ndarray) -> float:
    """Phi coefficient of two hit vectors, clipped to [0, 1] (0 when undefined)."""
    a = np.asarray(hits_a, dtype=float)
    b = np.asarray(hits_b, dtype=float)
    if a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.clip(np.corrcoef(a, b)[0, 1], 0.0, 1.0))


# --------------------------------------------------------------------------- the book's summary


def results_summary(results: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """One row per model: HR@10 as its chapter reported it, with chapter 07's intervals.

    ``results`` maps notebook names ("02_collaborative_filtering", ..., "07_comparison") to their
    results JSON. Models whose chapter did not report them are left out; intervals that chapter 07
    did not record (:func:`model_record`) are None.
    """
    t07 = results.get("07_comparison", {})
    rows = []
    for model, (notebook, key) in RESULT_KEYS.items():
        hr = results.get(notebook, {}).get(key)
        if hr is None:
            continue
        rows.append(
            {
                "model": model,
                "label": MODEL_LABELS[model],
                "chapter": notebook,
                "hr_at_10": float(hr),
                "ci_low": t07.get(f"hr_ci_low_{model}"),
                "ci_high": t07.get(f"hr_ci_high_{model}"),
                "wilson_low": t07.get(f"wilson_low_{model}"),
                "wilson_high": t07.get(f"wilson_high_{model}"),
            }
        )
    if not rows:
        raise ValueError("no model HR@10 found in the results of chapters 02 and 04")
    return pd.DataFrame(rows)


def pair_record(
    row: Mapping[str, Any], prefix: str, alpha: float = 0.05, use_holm: bool = True
) -> dict[str, Any]:
    """Flat results-JSON entries of one comparison (a row of :func:`pairwise_comparisons`).

    Keys ``<prefix>_hr_diff, _ci_low, _ci_high, _pvalue, _pvalue_holm, _pvalue_text, _verdict``; the
    verdict (see :func:`comparison_verdict`) uses the Holm-adjusted p-value unless ``use_holm`` is
    False (a single comparison fixed in advance).
    """
    p = float(row["mcnemar_p_holm"] if use_holm else row["mcnemar_p"])
    return {
        f"{prefix}_model_a": row["model_a"],
        f"{prefix}_model_b": row["model_b"],
        f"{prefix}_hr_diff": float(row["hr_diff"]),
        f"{prefix}_ci_low": float(row["ci_low"]),
        f"{prefix}_ci_high": float(row["ci_high"]),
        f"{prefix}_pvalue": float(row["mcnemar_p"]),
        f"{prefix}_pvalue_holm": float(row["mcnemar_p_holm"]),
        f"{prefix}_pvalue_text": format_pvalue(p),
        f"{prefix}_verdict": comparison_verdict(row["ci_low"], row["ci_high"], p, alpha),
    }


def model_record(summary: pd.DataFrame) -> dict[str, float]:
    """Flat results-JSON entries of each model's intervals (rows of :func:`model_summary`).

    Keys ``hr_ci_low_<model>, hr_ci_high_<model>, wilson_low_<model>, wilson_high_<model>``.
    """
    out: dict[str, float] = {}
    for _, r in summary.iterrows():
        out[f"hr_ci_low_{r['model']}"] = float(r["ci_low"])
        out[f"hr_ci_high_{r['model']}"] = float(r["ci_high"])
        out[f"wilson_low_{r['model']}"] = float(r["wilson_low"])
        out[f"wilson_high_{r['model']}"] = float(r["wilson_high"])
    return out
