"""The book's findings as sentences computed from the chapters' results JSON, never typed.

Three sentences open the book (the intro) and the conclusions page:

1. :func:`study_sentence` -- the study's two models as it ran them, on this data;
2. :func:`ttest_sentence` -- the study's t-test, and whether a paired test on the same users agrees;
3. :func:`headline_sentence` -- the improved two-tower model against the strongest baseline, with the
   verdict word the statistics allow, the second test's disagreement stated, and every tuned setting at
   the edge of its search grid flagged (:func:`search_limits`).

Verdict words follow the statistics: "ahead of"/"behind" only when the test is significant *and* the
interval of the difference excludes 0, else "level with" (never "best" for a tie).

The conclusions page adds :func:`ledger_sentence` (the defect ledger of chapters 02, 04 and 06) and
:func:`seed_sentence` (how far the study's kNN figure moves with the split seed).

Each figure is looked up by its agreed key (``KEY_HOMES`` names the chapter that writes it); a missing
key is an error naming that chapter, not a silent gap. ``FALLBACKS`` lists other names of the same
figure (chapter 07 records its interval level as ``ci_level_percent_07``).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Mapping
from numbers import Real
from typing import Any

import numpy as np

from .paths import load_results
from .tables import format_pvalue

#: The chapter that writes each key the verdicts read (agreed in the issues).
KEY_HOMES: dict[str, str] = {
    **dict.fromkeys(
        [
            "study_hr_at_10",
            "hr_at_10_seed",
            "hr_at_10_seed_id_ties",
            "hr_at_10_popularity",
            "ledger_knn_as_ran",
            "ledger_knn_fixed",
            "variance_n_seeds",
            "hr_at_10_seed_mean5",
            "hr_at_10_seed_sd5",
            "hr_at_10_seed_min5",
            "hr_at_10_seed_max5",
        ],
        "02_collaborative_filtering",
    ),
    **dict.fromkeys(
        [
            "hr_at_10_tuned",
            "hr_at_10_ease",
            "hr_at_10_ials",
            "hr_at_10_item_knn",
            "hr_at_10_rp3beta",
        ],
        "03_baselines",
    ),
    **dict.fromkeys(
        [
            "study_metric_seed",
            "study_metric_seed_chance",
            "study_metric_seed_correct",
            "ledger_emb_as_ran",
            "ledger_emb_fixed",
        ],
        "04_embeddings",
    ),
    **dict.fromkeys(["hr_at_10_embedding", "val_metric_best"], "05_training"),
    **dict.fromkeys(
        [
            "ttest_seed_pvalue",
            "study_ttest_cf_mean",
            "study_ttest_cf_mean_aligned",
            "study_ttest_embedding_mean",
            "study_reported_pvalue",
            "sim_fpr_study",
            "sim_fpr_mcnemar",
            "sim_reps",
            "ledger_ttest_as_ran",
            "ledger_ttest_fixed",
            "test_alpha",
        ],
        "06_t_test",
    ),
    **dict.fromkeys(
        [
            "best_baseline",
            "best_baseline_label",
            "hr_at_10_best_baseline",
            "val_hr_at_10_best_baseline",
            "hr_at_10_embedding_07",
            "embedding_vs_best_baseline_ci_low",
            "embedding_vs_best_baseline_ci_high",
            "paired_pvalue",
            "paired_hr_diff",
            "paired_wilcoxon_pvalue",
            "hr_diff_ci_low",
            "hr_diff_ci_high",
            "seed_pair_pvalue_holm",
            "ci_level_percent",
        ],
        "07_comparison",
    ),
}
#: Other names under which a chapter records the same figure.
FALLBACKS: dict[str, tuple[str, ...]] = {
    "best_baseline_label": ("best_baseline",),
    "ci_level_percent": ("ci_level_percent_07",),
    "hr_at_10_embedding_07": ("hr_at_10_embedding",),
}
_MISSING = object()
#: The figures the original study reported (figures of the study, not of this book).
STUDY_REPORTED = {"study_hr_at_10": 0.065, "study_metric_reported": 0.003}


class MissingResult(KeyError):
    """A results key no chapter wrote; the message names the chapter that should write it."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly
        return str(self.args[0])


class Results:
    """Every chapter's results JSON, looked up by key (the key's home chapter first)."""

    def __init__(self, by_chapter: Mapping[str, Mapping[str, Any]]) -> None:
        self.by_chapter = {name: dict(values) for name, values in by_chapter.items()}

    @classmethod
    def load(cls, build_dir: str | os.PathLike | None, chapters: Iterable[str]) -> Results:
        """Read ``BUILD_DIR/artifacts/<chapter>.json`` of each chapter (an error names a missing one)."""
        return cls({name: load_results(build_dir, name) for name in chapters})

    def _find(self, key: str) -> Any:
        home = KEY_HOMES.get(key)
        order = ([home] if home in self.by_chapter else []) + [
            c for c in self.by_chapter if c != home
        ]
        for chapter in order:
            if key in self.by_chapter[chapter] and self.by_chapter[chapter][key] is not None:
                return self.by_chapter[chapter][key]
        return _MISSING

    def has(self, key: str) -> bool:
        """Whether some chapter recorded ``key`` (or a fallback of it) with a value."""
        return self.get(key, None) is not None

    def get(self, key: str, default: Any = _MISSING) -> Any:
        """The value of ``key`` (or of its fallback keys); without ``default`` a missing key raises."""
        for name in (key, *FALLBACKS.get(key, ())):
            value = self._find(name)
            if value is not _MISSING:
                return value
        if default is not _MISSING:
            return default
        home = KEY_HOMES.get(key, "the chapter that computes it")
        where = f"notebooks/{home}.ipynb" if home in KEY_HOMES.values() else home
        raise MissingResult(
            f"results key {key!r} is missing: {where} should record it "
            f"(looked in {', '.join(self.by_chapter) or 'no chapter'})"
        )


def _is_num(v: Any) -> bool:
    """A finite real number (numpy scalars included), not a bool."""
    return isinstance(v, Real) and not isinstance(v, (bool, np.bool_)) and math.isfinite(v)


def verdict_word(ci_low: Any, ci_high: Any, pvalue: Any, alpha: float = 0.05) -> str:
    """ "ahead of", "behind" or "level with" for a difference a - b (test and interval must agree)."""
    if not all(_is_num(v) for v in (ci_low, ci_high, pvalue)):
        return "level with"
    if pvalue < alpha and ci_low > 0:
        return "ahead of"
    if pvalue < alpha and ci_high < 0:
        return "behind"
    return "level with"


def significant(pvalue: Any, alpha: float = 0.05) -> bool:
    """p < alpha (a missing p-value is not significant)."""
    return _is_num(pvalue) and pvalue < alpha


def _p(p: Any) -> str:
    return format_pvalue(p)


def _num(v: Any, digits: int = 3) -> str:
    """Fixed decimals; a non-zero value that would print as 0.000 or -0.000 keeps its sign and size."""
    v = float(v)
    if v != 0 and abs(v) < 0.5 * 10**-digits:
        return f"{v:.1e}"
    return f"{v:.{digits}f}"


def search_limits(results: Results) -> list[str]:
    """Tuned settings chosen at the edge of what was searched, as phrases (``k = 100 (top of 5–100)``).

    A chapter that tunes a setting ``<name>`` records the chosen value ``<name>`` with
    ``<name>_grid_min`` and ``<name>_grid_max`` (numbers); a best epoch records ``<name>`` and
    ``<name>_grid_max`` = the most epochs allowed. A chapter may also record ``baseline_edges``, its
    own phrases joined by "; " (chapter 03: ``"iALS: regularization = 0.001 (low edge)"``), which are
    passed on as they are. Settings without grid keys are not judged.
    """
    flags = []
    for chapter, values in results.by_chapter.items():
        edges = values.get("baseline_edges")
        if isinstance(edges, str) and edges.strip():
            flags += [f"{part.strip()} (chapter {chapter[:2]})" for part in edges.split("; ")]
        for key in sorted(values):
            m = re.fullmatch(r"(.+)_grid_max", key)
            if not m or m.group(1) not in values:
                continue
            name, chosen = m.group(1), values[m.group(1)]
            hi, lo = values[key], values.get(f"{name}_grid_min")
            if not (_is_num(chosen) and _is_num(hi)):
                continue
            label = name.replace("_", " ")
            span = f"{lo:g}–{hi:g}" if _is_num(lo) else f"up to {hi:g}"
            if chosen >= hi:
                flags.append(f"{label} = {chosen:g} (top of {span}, chapter {chapter[:2]})")
            elif _is_num(lo) and chosen <= lo:
                flags.append(f"{label} = {chosen:g} (bottom of {span}, chapter {chapter[:2]})")
    return flags


def has_grids(results: Results) -> bool:
    """Whether any chapter recorded a search grid (``*_grid_max``, or ``baseline_edges``)."""
    return any(
        k.endswith("_grid_max") or k == "baseline_edges"
        for v in results.by_chapter.values()
        for k in v
    )


def study_sentence(results: Results) -> str:
    """The study's two models as it ran them, on this data, beside the figures the study reported."""
    hr = results.get("hr_at_10_seed")
    reported = results.get("study_hr_at_10", STUDY_REPORTED["study_hr_at_10"])
    metric = results.get("study_metric_seed")
    metric_reported = results.get("study_metric_reported", STUDY_REPORTED["study_metric_reported"])
    text = (
        f"Run as the study ran it, its user-kNN recommender reaches HR@10 = {_num(hr)} on this data "
        f"(the study reported {_num(reported)}), and its two-tower model scores {_num(metric, 4)} on the "
        f"study's own metric (the study reported {_num(metric_reported, 4)})"
    )
    chance = results.get("study_metric_seed_chance", None)
    if _is_num(chance):
        relation = "no more than" if metric <= chance else "above"
        text += f", {relation} the {_num(chance, 4)} a random ranking scores"
    correct = results.get("study_metric_seed_correct", None)
    if _is_num(correct):
        text += f" (computed as the study meant it: {_num(correct, 4)})"
    if results.get("data_source", None) == "synthetic":
        text += (
            "; on the synthetic stand-in, which was calibrated to the study's figures, a match with "
            "them is by construction, not a reproduction"
        )
    return text + "."


def ttest_sentence(results: Results, alpha: float | None = None) -> str:
    """The study's t-test on this data, and whether the paired test on the same users agrees."""
    alpha = results.get("test_alpha", 0.05) if alpha is None else alpha
    p_t = results.get("ttest_seed_pvalue", None)
    if _is_num(p_t):
        word = "significant" if significant(p_t, alpha) else "not significant"
        text = (
            f"The study's t-test, as its code ran (each kNN subsample user checked against another "
            f"user's hidden artist, the embedding side scored by a metric at chance), calls the "
            f"difference between its two models {word} (p = {_p(p_t)})"
        )
    else:
        text = (
            "The study's t-test is undefined on this data (too few embedding test users for its "
            "subsamples)"
        )
    fpr, reps = results.get("sim_fpr_study", None), results.get("sim_reps", None)
    if _is_num(fpr) and _is_num(reps):
        text += (
            f"; even with both sides fixed, between two equally good models it declares a difference "
            f"in {100 * fpr:.0f}% of {int(reps):,} simulated repetitions (nominal {100 * alpha:.0f}%)"
        )
        fpr_pair = results.get("sim_fpr_mcnemar", None)
        if _is_num(fpr_pair):
            text += f", a paired McNemar test on the same users in {100 * fpr_pair:.0f}%"
    p_pair = results.get("seed_pair_pvalue_holm", None)
    if _is_num(p_pair):
        same = significant(p_pair, alpha) == significant(p_t, alpha)
        pair_word = "significant" if significant(p_pair, alpha) else "not significant"
        text += (
            f"; the paired McNemar test on the same users finds it {pair_word} "
            f"(p = {_p(p_pair)}), so the two tests {'agree' if same else 'disagree'}"
        )
    return text + "."


def headline_sentence(results: Results, alpha: float | None = None) -> str:
    """The improved two-tower model against the strongest baseline, in words the statistics allow."""
    alpha = results.get("test_alpha", 0.05) if alpha is None else alpha
    lo = results.get("embedding_vs_best_baseline_ci_low")
    hi = results.get("embedding_vs_best_baseline_ci_high")
    p = results.get("paired_pvalue")
    baseline = results.get("best_baseline_label")
    hr_e = results.get("hr_at_10_embedding_07")
    hr_b = results.get("hr_at_10_best_baseline", None)
    level = results.get("ci_level_percent", 95.0)
    word = verdict_word(lo, hi, p, alpha)
    base = f"{baseline} (HR@10 {_num(hr_b)})" if _is_num(hr_b) else str(baseline)
    text = (
        f"The improved two-tower model (HR@10 {_num(hr_e)}) is {word} the strongest baseline, "
        f"{base}, chosen by validation HR@10 before any test figure was looked at: the "
        f"{level:.0f}% interval of the difference is [{_num(lo)}, {_num(hi)}] "
        f"and McNemar's p = {_p(p)}"
    )
    p_w = results.get("paired_wilcoxon_pvalue", None)
    if _is_num(p_w):
        if significant(p_w, alpha) != significant(p, alpha):
            text += (
                f"; the Wilcoxon test on reciprocal ranks disagrees (p = {_p(p_w)}), so the ranking "
                "evidence is mixed"
            )
        else:
            text += f", and the Wilcoxon test on reciprocal ranks agrees (p = {_p(p_w)})"
    flags = search_limits(results)
    if flags:
        text += ". Search limits: " + "; ".join(flags) + " sit at the edge of their grids"
    elif has_grids(results):
        text += ". Every tuned setting lies inside its search grid"
    return text + "."


def _fig(v: Any, digits: int = 3, pvalue: bool = False) -> str:
    if not _is_num(v):
        return "undefined"
    return _p(v) if pvalue else _num(v, digits)


def ledger_sentence(results: Results) -> str:
    """The defect ledger in one sentence: each model's figure as it ran and with every fix applied."""
    p_ran = results.get("ledger_ttest_as_ran", None)
    p_fixed = results.get("ledger_ttest_fixed", None)
    if _is_num(p_ran) or _is_num(p_fixed):
        ttest = (
            f"its t-test's p-value from {_fig(p_ran, pvalue=True)} to "
            f"{_fig(p_fixed, pvalue=True)} (chapter 06)"
        )
    else:
        ttest = "its t-test is undefined on this data (chapter 06)"
    return (
        f"Fixing the study's departures from its own text one by one (the defect ledger) takes its "
        f"user-kNN from HR@10 {_fig(results.get('ledger_knn_as_ran'))} as it ran to "
        f"{_fig(results.get('ledger_knn_fixed'))} (chapter 02), its embedding model's test metric from "
        f"{_fig(results.get('ledger_emb_as_ran'), 4)} to {_fig(results.get('ledger_emb_fixed'), 4)} "
        f"(chapter 04), and {ttest}."
    )


def seed_sentence(results: Results) -> str:
    """How far the study's kNN figure moves with the split seed (chapter 02's seed table)."""
    n = results.get("variance_n_seeds")
    return (
        f"Over {int(n)} split seeds the study's user-kNN as it ran averages HR@10 "
        f"{_num(results.get('hr_at_10_seed_mean5'))} (sd {_num(results.get('hr_at_10_seed_sd5'))}, "
        f"from {_num(results.get('hr_at_10_seed_min5'))} to "
        f"{_num(results.get('hr_at_10_seed_max5'))}): one split's figure, the study's included, "
        "carries that much uncertainty from the draw of the test users alone."
    )


def verdicts(results: Results) -> dict[str, str]:
    """The three sentences under the keys ``verdict_study``, ``verdict_ttest``, ``verdict_headline``."""
    return {
        "verdict_study": study_sentence(results),
        "verdict_ttest": ttest_sentence(results),
        "verdict_headline": headline_sentence(results),
    }
