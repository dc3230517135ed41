"""The baselines of chapter 03, their search budgets and the tuning loop on a validation hold-out.

Every model is tuned on the same validation hold-out (``holdout_split(train, seed + 1, ...)`` of
chapter 02's training matrix) with the budget below, chosen by validation HR@10 (ties: NDCG@10, then
the grid's order), refitted on chapter 02's training matrix and scored on its test pairs.

Budgets (``GRIDS[profile][model]``): full grids for the neighbourhood and linear models (one
similarity pass per value that changes the neighbour lists, smaller ``k`` pruned from the largest);
a seeded random sample of a stated size from the product grid for the factor models. A chosen
value at the edge of its grid is flagged (``edge_flags``); the neighbour counts, the kNN shrinkage
terms and EASE's penalty are extended until they are not (a parameter given one value is a fixed
setting, not a search). The ``full`` profile has a smaller stated budget (``_SCALE``) and validation
users (``VAL_USERS``), for its minutes-long similarity passes, and does not refit (``REFIT``): the
model fitted for the chosen setting on the validation training matrix (chapter 02's less the
validation users' hidden cells, 4,500 of 7.7M) scores the test users.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..evaluation.metrics import hit_ranks, ranking_metrics
from . import ease as ease_mod
from .item_knn import ItemKNN, prune_to_k
from .knn import outcomes_frame as knn_outcomes_frame
from .knn import popularity_top_n
from .mf import BPR, IALS
from .rp3beta import RP3beta, rp3beta_similarities
from .user_knn import K_GRID, SHRINK_GRID, SPACES, WEIGHTINGS, UserKNN

__all__ = [
    "BASELINES",
    "GRIDS",
    "REFIT",
    "VAL_USERS",
    "LABELS",
    "build",
    "edge_flags",
    "ease_n_items",
    "refits",
    "score_fitted",
    "setting_text",
    "tune",
    "validation_split",
]

#: the chapter-03 models in reading order (columns ``rank_<model>`` of outcomes_03.csv)
BASELINES = ("cf_tuned", "item_knn", "rp3beta", "ease", "ials", "bpr")
LABELS = {
    "cf_tuned": "User-kNN, tuned",
    "item_knn": "Item-kNN",
    "rp3beta": "RP3beta",
    "ease": "EASE",
    "ials": "iALS",
    "bpr": "BPR",
    "popularity": "Most popular",
}

_FULL: dict[str, dict[str, Sequence[Any]]] = {
    "cf_tuned": {"k": K_GRID, "weighting": WEIGHTINGS, "shrink": SHRINK_GRID, "space": SPACES},
    "item_knn": {
        "weighting": ("binary", "bm25"),
        "shrink": (0.0, 10.0, 50.0, 200.0),
        "k": (5, 10, 20, 50, 100, 200, 500),
    },
    "rp3beta": {
        "alpha": (0.25, 0.5, 0.75, 1.0),
        "beta": (0.0, 0.2, 0.4, 0.6),
        "k": (10, 20, 50, 100, 200, 500),
    },
    "ease": {"lam": (10.0, 50.0, 100.0, 250.0, 500.0, 1000.0)},
    "ials": {
        "factors": (16, 32, 64, 128, 256),
        "regularization": (0.001, 0.01, 0.1, 1.0),
        "alpha": (1.0, 5.0, 20.0, 50.0),
        "iterations": (10, 20),
        "weighting": ("binary", "log1p"),
        "_budget": (12,),
        "_refine": (6,),
    },
    "bpr": {
        "factors": (16, 32, 64, 128),
        "learning_rate": (0.005, 0.01, 0.05, 0.1),
        "regularization": (0.001, 0.01, 0.1),
        "iterations": (50, 100, 200),
        "_budget": (8,),
        "_refine": (6,),
    },
}
_TINY: dict[str, dict[str, Sequence[Any]]] = {
    "cf_tuned": {"k": (5, 10, 20), "weighting": WEIGHTINGS, "shrink": (0.0, 5.0), "space": SPACES},
    "item_knn": {"weighting": ("binary",), "shrink": (0.0, 10.0), "k": (10, 50)},
    "rp3beta": {"alpha": (1.0,), "beta": (0.0, 0.5), "k": (20, 50)},
    "ease": {"lam": (10.0, 100.0)},
    "ials": {
        "factors": (16,),
        "regularization": (0.1,),
        "alpha": (1.0, 10.0),
        "iterations": (5,),
        "weighting": ("binary",),
        "_budget": (2,),
    },
    "bpr": {
        "factors": (16,),
        "learning_rate": (0.05,),
        "regularization": (0.01,),
        "iterations": (20,),
        "_budget": (1,),
    },
}
#: the ``full`` profile's stated budget: on 2 cores one similarity pass over its 551K artists costs
#: minutes (chapter 03's tuning with this budget: item-kNN 190 to 258 s, RP3beta with three betas 360
#: to 440 s, in two runs) and a BPR iteration 6 s, so the default grids would take hours and the book
#: has an hour. These are one similarity pass per neighbourhood model (one input weighting and
#: shrinkage for item-kNN; one alpha and three betas for RP3beta, from no popularity penalty up: with
#: betas 0.2 to 0.6 the best was 0.2), their neighbour counts pruned from the largest and extended
#: past an edge from the same pass; EASE's penalty on the default's artist cap; and the factor models
#: at fixed iterations with no refinement (a factor-model grid of two values cannot show an edge:
#: ``edge_flags`` needs three)
_SCALE: dict[str, dict[str, Sequence[Any]]] = {
    "cf_tuned": {
        "k": (20, 50, 100, 200, 500, 1000),
        "weighting": ("binary", "bm25"),
        "shrink": (0.0, 10.0),
        "space": ("weighted", "binary"),
    },
    "item_knn": {"weighting": ("bm25",), "shrink": (50.0,), "k": (20, 50, 100, 200, 500)},
    "rp3beta": {"alpha": (0.5,), "beta": (0.0, 0.2, 0.4), "k": (10, 20, 50, 100, 200)},
    "ease": {"lam": (250.0, 500.0, 1000.0)},
    "ials": {
        "factors": (64, 128),
        "regularization": (0.01, 0.1),
        "alpha": (5.0, 20.0),
        "iterations": (10,),
        "weighting": ("binary", "log1p"),
        "_budget": (3,),
    },
    "bpr": {
        "factors": (64, 128),
        "learning_rate": (0.01, 0.05),
        "regularization": (0.01,),
        "iterations": (20,),
        "_budget": (1,),
    },
}
GRIDS = {"tiny": _TINY, "default": _FULL, "full": _SCALE}
#: validation users per profile (``validation_split``: a seeded random subset of that size of the
#: hold-out's users): absent = every user the hold-out takes, as on ``default``; on ``full`` each
#: setting's scoring and neighbour search then cost a third
VAL_USERS = {"full": 4500}
#: profiles that refit the chosen setting on chapter 02's training matrix before scoring the test
#: users (absent = refit); on ``full`` a refit is one more similarity pass or factor fit per model,
#: and the fit of the chosen setting on the validation training matrix scores the test users instead
REFIT = {"full": False}
#: EASE's artist cap per profile: 8 GB of dense matrices (``ease.max_items``), less where the
#: 2-core time budget of the book's profile asks for it (the share of test pairs it covers is reported)
# on ``full`` 8 GB would allow 18,918 artists (``max_items``: three float64 copies; the Gram matrix
# is now built in column blocks and the peak is nearer 1.5 copies), but time binds first: the
# Cholesky factor and inverse cost N^3 (15,000 artists: 227 s of LAPACK on 2 shared cores at load
# 5.8; 12,000 about 2 minutes a penalty), and scipy's bundled OpenBLAS segfaults in its threaded
# dpotrf from about 16,000 on (reproduced on a diagonal matrix; ``ease.THREADED_LAPACK_MAX_N`` runs
# larger ones on one thread); the hour of the full book leaves it the default's 8,000
EASE_ITEMS = {"tiny": 2000, "default": 8000, "full": 8000}


def validation_split(train: sp.csr_matrix, seed: int, profile: str = "default"):
    """Chapter 03's validation hold-out of chapter 02's training matrix: ``holdout_split(train,
    seed + 1)`` over every user; on a profile of :data:`VAL_USERS`, a seeded random subset of its
    users of that size, the other users' hidden cells left in the training matrix."""
    from ..evaluation.protocol import Split, holdout_split

    val = holdout_split(train, seed + 1, candidate_rows=np.arange(train.shape[0]))
    want = VAL_USERS.get(profile)
    if want is None or want >= val.n_test:
        return val
    keep = np.sort(np.random.default_rng([seed, 3]).choice(val.n_test, size=want, replace=False))
    c = train.tocsr().astype(np.int64)
    mask = sp.csr_matrix(
        (np.ones(len(keep), dtype=np.int64), (val.test_rows[keep], val.hidden_cols[keep])),
        shape=c.shape,
    )
    sub = c - c.multiply(mask)
    sub.eliminate_zeros()
    return Split(sub.tocsr(), val.test_rows[keep], val.hidden_cols[keep], val.hidden_rank[keep])


def refits(profile: str) -> bool:
    """Whether ``profile`` refits the chosen settings on chapter 02's training matrix (:data:`REFIT`)."""
    return REFIT.get(profile, True)


def ease_n_items(profile: str) -> int:
    """The artist cap EASE runs with on ``profile``."""
    return EASE_ITEMS.get(profile, ease_mod.max_items())


def build(model: str, params: Mapping[str, Any], profile: str = "default", seed: int = 0):
    """The model object of a setting (with ``top_n(train, rows, n)``)."""
    p = dict(params)
    if model == "cf_tuned":
        return UserKNN(int(p["k"]), str(p["weighting"]), float(p["shrink"]), str(p["space"]))
    if model == "item_knn":
        return ItemKNN(int(p["k"]), float(p["shrink"]), str(p["weighting"]))
    if model == "rp3beta":
        return RP3beta(float(p["alpha"]), float(p["beta"]), int(p["k"]))
    if model == "ease":
        return ease_mod.EASE(float(p["lam"]), int(p.get("n_items", ease_n_items(profile))))
    if model == "ials":
        return IALS(
            int(p["factors"]),
            float(p["regularization"]),
            float(p["alpha"]),
            int(p["iterations"]),
            str(p["weighting"]),
            seed,
        )
    if model == "bpr":
        return BPR(
            int(p["factors"]),
            float(p["learning_rate"]),
            float(p["regularization"]),
            int(p["iterations"]),
            seed,
        )
    if model == "popularity":
        return _Popularity()
    raise ValueError(f"unknown model {model!r}: expected one of {BASELINES} or 'popularity'")


class _Popularity:
    def top_n(self, train, rows, n=10):
        return popularity_top_n(train, rows, n)


def setting_text(model: str, params: Mapping[str, Any]) -> str:
    """The tuned setting in words for a table."""
    skip = {"n_items"}
    return ", ".join(
        f"{k} = {v:g}" if isinstance(v, float) else f"{k} = {v}"
        for k, v in params.items()
        if k not in skip
    )


def _metrics(top, hidden, n=10) -> dict[str, float]:
    m = ranking_metrics(hit_ranks(top, hidden), n)
    return {f"hr_at_{n}": m["hr"], f"ndcg_at_{n}": m["ndcg"], f"mrr_at_{n}": m["mrr"]}


def _pick(table: pd.DataFrame, n: int = 10) -> dict[str, Any]:
    t = table.assign(_o=np.arange(len(table)))
    t = t.sort_values([f"hr_at_{n}", f"ndcg_at_{n}", "_o"], ascending=[False, False, True])
    row = t.iloc[0]
    metric = {f"hr_at_{n}", f"ndcg_at_{n}", f"mrr_at_{n}", "_o", "stage", "seconds"}
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items() if k not in metric}


def _edge_steps(
    grid: Mapping[str, Sequence[Any]],
    table: pd.DataFrame,
    best: Mapping[str, Any],
    keys: Sequence[str],
) -> list[dict[str, Any]]:
    """Settings not yet tried that move one numeric parameter of ``best`` one step outward where it
    sits at the smallest or largest value tried: to the grid's next value, or past the grid by the
    ratio of its last two values (integers rounded; a value of 0 is a natural bound)."""
    out = []
    for key in keys:
        values = sorted(v for v in grid[key] if isinstance(v, (int, float)))
        if len(values) < 2 or not isinstance(best[key], (int, float, np.number)):
            continue
        tried = sorted(pd.unique(table[key]))
        v = best[key]
        if v == tried[-1]:
            above = [x for x in values if x > v]
            nxt = above[0] if above else v * values[-1] / values[-2]
        elif v == tried[0] and v > 0:
            below = [x for x in values if x < v]
            nxt = below[-1] if below else v * values[0] / values[1]
        else:
            continue
        if isinstance(values[0], int):
            nxt = int(round(nxt))
            if nxt == v or nxt < 1:
                continue
        cand = {**{k: best[k] for k in keys}, key: nxt}
        seen = (table[list(keys)] == pd.Series(cand)).all(axis=1).any()
        if not seen:
            out.append(cand)
    return out


def _extend_k(ks: Sequence[int], best: int, cap: int) -> tuple:
    """``ks`` with one more value past the edge the best ``k`` sits on (halved below, doubled above,
    within 1..cap); unchanged when the best is inside or ``ks`` is one fixed value."""
    ks = tuple(sorted(ks))
    if len(ks) < 2:
        return ks
    if best == ks[0] and ks[0] > 1:
        return (max(1, ks[0] // 2), *ks)
    if best == ks[-1] and ks[-1] < cap:
        return (*ks, min(cap, 2 * ks[-1]))
    return ks


def _extend_shrink(shrinks: Sequence[float], best: float, cap: float = 1000.0) -> tuple:
    """``shrinks`` with 4 times the largest appended when the best is the largest (and below
    ``cap``); unchanged otherwise (0, no shrinkage, is a natural lower bound; one value is a fixed
    setting)."""
    shrinks = tuple(sorted(float(s) for s in shrinks))
    if len(shrinks) > 1 and best == shrinks[-1] and 0 < best < cap:
        return (*shrinks, min(cap, 4 * best))
    return shrinks


def _one_pass(cache: dict, key: Any, k: int, one_pass: bool, fit, *args) -> Any:
    """The similarity of ``key`` with at least ``k`` neighbours: the one kept in ``cache`` when it
    has them, else ``fit(*args)`` (a kept one with fewer goes first); kept when the grid is
    ``one_pass`` (a k grid extended downwards is then pruned from it), else let go once used."""
    hit = cache.pop(key, None)
    if hit is None or hit[0] < k:
        hit = None  # the narrower pass goes before the wider one is built
        hit = (k, fit(*args))
    if one_pass:
        cache[key] = hit
    return hit[1]


class _Best:
    """The fitted model of the best setting so far (the order of :func:`_pick`: validation HR@10,
    then NDCG@10, then the first tried), kept only when asked."""

    def __init__(self, keep: bool, n: int):
        self.keep, self.n, self.score, self.fitted = keep, n, None, None

    def offer(self, rec: Mapping[str, Any], fitted: Any) -> None:
        score = (rec[f"hr_at_{self.n}"], rec[f"ndcg_at_{self.n}"])
        if self.keep and (self.score is None or score > self.score):
            self.score, self.fitted = score, fitted


def tune(
    model: str,
    train: sp.csr_matrix,
    rows: np.ndarray,
    hidden_cols: np.ndarray,
    *,
    profile: str = "default",
    seed: int = 0,
    n: int = 10,
    keep: bool = False,
):
    """Validation table of ``model`` over its budget and the chosen setting (see module docstring).

    ``train`` is the validation training matrix (the validation users' hidden cells removed).
    Returns ``(table, chosen)``, or with ``keep`` ``(table, chosen, fitted)``: the chosen setting's
    model fitted on ``train`` (for :func:`score_fitted`; ``None`` for the user-kNN, whose neighbours
    are searched per user).
    """
    grid = GRIDS.get(profile, _FULL)[model]
    if model == "cf_tuned":
        from .user_knn import tune_user_knn

        table, chosen = tune_user_knn(
            train,
            rows,
            hidden_cols,
            ks=grid["k"],
            weightings=grid["weighting"],
            spaces=grid["space"],
            shrinks=grid["shrink"],
            n=n,
        )
        params = {
            "k": chosen.k,
            "weighting": chosen.weighting,
            "shrink": chosen.shrink,
            "space": chosen.space,
        }
        return (table, params, None) if keep else (table, params)
    recs: list[dict] = []
    best = _Best(keep, n)
    if model == "item_knn":
        ks, shrinks = tuple(grid["k"]), tuple(grid["shrink"])
        cache: dict = {}
        while True:
            one_pass = len(grid["weighting"]) * len(shrinks) == 1
            for w, h in itertools.product(grid["weighting"], shrinks):
                S = _one_pass(cache, (w, h), ks[-1], one_pass, ItemKNN(ks[-1], h, w).fit, train)
                for k in ks:
                    if any(r["k"] == k and r["weighting"] == w and r["shrink"] == h for r in recs):
                        continue
                    P = prune_to_k(S, k)
                    top = ItemKNN(k, h, w).top_n(train, rows, n, fitted=P)
                    recs.append(
                        {
                            "weighting": w,
                            "shrink": float(h),
                            "k": int(k),
                            **_metrics(top, hidden_cols, n),
                        }
                    )
                    best.offer(recs[-1], P)
                S = P = None  # (unless kept) this similarity goes before the next one is built
            picked = _pick(pd.DataFrame(recs), n)
            ks2 = _extend_k(ks, int(picked["k"]), train.shape[1] - 1)
            shrinks2 = _extend_shrink(shrinks, float(picked["shrink"]))
            if ks2 == ks and shrinks2 == shrinks:
                break
            ks, shrinks = ks2, shrinks2
    elif model == "rp3beta":
        ks = tuple(grid["k"])
        one_pass = len(grid["alpha"]) == 1
        cache = {}
        while True:
            for a in grid["alpha"]:
                mats = _one_pass(
                    cache, a, ks[-1], one_pass, rp3beta_similarities, train, a, grid["beta"], ks[-1]
                )
                for b, S in mats.items():
                    for k in ks:
                        if any(r["k"] == k and r["alpha"] == a and r["beta"] == b for r in recs):
                            continue
                        P = prune_to_k(S, k)
                        top = RP3beta(a, b, k).top_n(train, rows, n, fitted=P)
                        recs.append(
                            {
                                "alpha": float(a),
                                "beta": float(b),
                                "k": int(k),
                                **_metrics(top, hidden_cols, n),
                            }
                        )
                        best.offer(recs[-1], P)
                mats = S = P = None  # (unless kept) before the next alpha's are built
            picked = _pick(pd.DataFrame(recs), n)
            ks2 = _extend_k(ks, int(picked["k"]), train.shape[1] - 1)
            if ks2 == ks:
                break
            ks = ks2
    elif model == "ease":
        lams = list(grid["lam"])
        n_items = ease_n_items(profile)
        done: set[float] = set()
        while True:
            for lam in lams:
                if lam in done:
                    continue
                done.add(lam)
                m = ease_mod.EASE(lam, n_items)
                fitted = m.fit(train)
                top = m.top_n(train, rows, n, fitted=fitted)
                recs.append(
                    {"lam": float(lam), "n_items": n_items, **_metrics(top, hidden_cols, n)}
                )
                best.offer(recs[-1], fitted)
                fitted = None
            picked = _pick(pd.DataFrame(recs), n)
            if picked["lam"] == max(lams):
                lams.append(max(lams) * 2)
            elif picked["lam"] == min(lams) and min(lams) > 1:
                lams.insert(0, min(lams) / 4)
            else:
                break
    elif model in ("ials", "bpr"):
        keys = [k for k in grid if not k.startswith("_")]
        combos = list(itertools.product(*(grid[k] for k in keys)))
        budget = min(int(grid["_budget"][0]), len(combos))
        rng = np.random.default_rng(seed)
        pick = rng.choice(len(combos), size=budget, replace=False)

        def run(params: dict[str, Any], extra: dict[str, Any]) -> None:
            m = build(model, params, profile, seed)
            fitted = m.fit(train)
            top = m.top_n(train, rows, n, fitted=fitted)
            recs.append({**params, **extra, **_metrics(top, hidden_cols, n)})
            best.offer(recs[-1], fitted)

        for i in sorted(pick):
            run(dict(zip(keys, combos[i], strict=True)), {})
        extra = int(grid.get("_refine", (0,))[0])
        while extra > 0:  # the best setting, one parameter moved past its edge at a time
            done_t = pd.DataFrame(recs)
            step = _edge_steps(grid, done_t, _pick(done_t, n), keys)
            if not step:
                break
            for params in step[:extra]:
                run(params, {"stage": "refine"})
            extra -= min(extra, len(step))
    else:
        raise ValueError(f"unknown model {model!r}: expected one of {BASELINES}")
    table = pd.DataFrame(recs)
    chosen = _pick(table, n)
    return (table, chosen, best.fitted) if keep else (table, chosen)


def score_fitted(
    model: str,
    params: Mapping[str, Any],
    fitted: Any,
    train: sp.csr_matrix,
    rows: np.ndarray,
    n: int = 10,
    *,
    profile: str = "default",
    seed: int = 0,
) -> np.ndarray:
    """Top-``n`` lists for ``rows`` from a model already fitted (``tune(..., keep=True)``), the
    users' histories and the exclusion of heard artists taken from ``train``; a model without a
    fitted object (``None``: user-kNN, most popular) is fitted on ``train``."""
    m = build(model, params, profile, seed)
    if fitted is None:
        return m.top_n(train, rows, n)
    return m.top_n(train, rows, n, fitted=fitted)


def edge_flags(model: str, table: pd.DataFrame, chosen: Mapping[str, Any]) -> list[str]:
    """The parameters whose chosen value is the smallest or largest value tried (numeric ones with
    at least three values tried; a smallest value of 0 is a natural bound, not an edge), as
    ``"name = value (low edge)"`` / ``(high edge)``."""
    out = []
    for name, value in chosen.items():
        if name not in table.columns or name == "n_items":
            continue
        tried = pd.unique(table[name])
        if len(tried) < 3 or not all(isinstance(v, (int, float, np.number)) for v in tried):
            continue
        shown = int(value) if float(value).is_integer() else value  # 16, not 16.0
        if value == max(tried):
            out.append(f"{name} = {shown} (high edge)")
        elif value == min(tried) and value != 0:  # 0 (no shrinkage, no penalty) is a natural bound
            out.append(f"{name} = {shown} (low edge)")
    return out


OUTCOMES_FILE = "outcomes_03.csv"


def outcomes_frame(
    user_ids: np.ndarray, artist_ids: np.ndarray, split, ranks: Mapping[str, np.ndarray]
) -> pd.DataFrame:
    """One row per test pair: ``user_id, artist_id, rank_<model>`` for every model of ``BASELINES``."""
    return knn_outcomes_frame(user_ids, artist_ids, split, dict(ranks), models=BASELINES)


def save_outcomes(frame: pd.DataFrame, build_dir) -> str:
    """Write ``BUILD_DIR/artifacts/outcomes_03.csv``."""
    from ..book.paths import artifacts_dir

    path = artifacts_dir(build_dir) / OUTCOMES_FILE
    frame.to_csv(path, index=False)
    return str(path)
