"""Chapter 05 (the t-test and the paired comparison) and chapter 06 (conclusions).

Static checks of the committed notebooks, papermill runs on a fake build folder (synthetic outcomes
and results JSON, independent of chapters 01-04), and the tiny-profile smoke test of the whole chain.
"""

from __future__ import annotations

import ast
import math
import os
import re
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest

from thirtymusic_utils.book.paths import artifacts_dir, load_results, save_results
from thirtymusic_utils.evaluation import stats

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
NB05 = NOTEBOOKS / "06_t_test.ipynb"
NB06 = NOTEBOOKS / "08_conclusions.ipynb"
GLUE_ROLE = re.compile(r"\{glue:text\}`([^`:]+)(?::([^`]*))?`")
CONTRACT_05 = ["ttest_seed_pvalue", "paired_pvalue", "hr_diff_ci_low", "hr_diff_ci_high"]
VERDICTS = {"better than", "worse than", "not distinguishable from"}


# ------------------------------------------------------------------------------------- helpers


def _glue_keys(nb) -> list[tuple[str, str]]:
    """(key, format) of every glue role in the notebook's markdown."""
    return [
        (m.group(1), m.group(2) or "")
        for c in nb.cells
        if c.cell_type == "markdown"
        for m in GLUE_ROLE.finditer(c.source)
    ]


def _glued_values(nb) -> dict[str, str]:
    """The text/plain of every value glued in an executed notebook."""
    out = {}
    for c in nb.cells:
        for o in c.get("outputs", []):
            name = o.get("metadata", {}).get("scrapbook", {}).get("name")
            if name:
                text = [v for k, v in o["data"].items() if k.endswith("text/plain")]
                out[name] = text[0] if text else None
    return out


def _check_glue(executed: Path) -> dict[str, str]:
    """Every glue role of the prose has a glued value that formats as the role asks."""
    from myst_nb.core.variables import format_plain_text

    nb = nbformat.read(executed, as_version=4)
    values = _glued_values(nb)
    roles = _glue_keys(nb)
    assert roles, f"{executed.name}: the prose quotes no glued value"
    for key, fmt in roles:
        assert key in values, f"{executed.name}: prose quotes {key!r}, which is never glued"
        format_plain_text(values[key], fmt)  # raises when the value does not fit the format
    return values


def _fake_build(build_dir: Path, n: int = 400, seed: int = 0) -> dict[str, np.ndarray]:
    """Outcomes of chapters 02 and 04 plus their results JSON, with a clear winner.

    The improved embedding hits every user the tuned CF hits, plus more: it is better than CF.
    """
    rng = np.random.default_rng(seed)

    def ranks(q):
        return np.where(rng.random(n) < q, rng.integers(1, 11, n), 0)

    r = {
        "popularity": ranks(0.04),
        "cf_seed": ranks(0.07),
        "cf_seed_as_written": ranks(0.06),
        "cf_weighted": ranks(0.08),
        "cf_tuned": ranks(0.12),
        "embedding_seed": ranks(0.06),
    }
    extra = (r["cf_tuned"] == 0) & (rng.random(n) < 0.25)
    r["embedding_improved"] = np.where(extra, rng.integers(1, 11, n), r["cf_tuned"])
    users = np.arange(n) + 1
    artists = rng.integers(0, 1000, n)
    art = artifacts_dir(build_dir)
    base = {"user_id": users, "artist_id": artists}
    m02 = ["popularity", "cf_seed", "cf_seed_as_written", "cf_weighted", "cf_tuned"]
    pd.DataFrame({**base, **{f"rank_{m}": r[m] for m in m02}}).to_csv(
        art / "outcomes_02.csv", index=False
    )
    m04 = ["embedding_seed", "embedding_improved"]
    pd.DataFrame({**base, **{f"rank_{m}": r[m] for m in m04}}).to_csv(
        art / "outcomes_04.csv", index=False
    )
    hr = {m: float((v > 0).mean()) for m, v in r.items()}
    save_results(
        build_dir,
        "01_user_artist_matrix",
        {"n_users": 3 * n, "n_artists": 1000, "n_plays": 50 * n, "n_pairs": 20 * n},
    )
    save_results(
        build_dir,
        "02_collaborative_filtering",
        {
            "n_test_users": n,
            "hr_at_10_seed": hr["cf_seed"],
            "hr_at_10_weighted": hr["cf_weighted"],
            "hr_at_10_tuned": hr["cf_tuned"],
            "hr_at_10_popularity": hr["popularity"],
        },
    )
    save_results(build_dir, "04_embeddings", {"n_training_samples": 10 * n})
    save_results(
        build_dir,
        "05_training",
        {
            "hr_at_10_embedding": hr["embedding_improved"],
            "hr_at_10_embedding_seed": hr["embedding_seed"],
            "val_metric_best": 0.1,
        },
    )
    return r


def _execute(notebook: Path, build_dir: Path, **params) -> Path:
    import papermill as pm

    out = build_dir / "executed" / notebook.name
    out.parent.mkdir(parents=True, exist_ok=True)
    pm.execute_notebook(
        str(notebook),
        str(out),
        parameters={
            "data_dir": "",
            "build_dir": str(build_dir),
            "seed": 0,
            "profile": "tiny",
            **params,
        },
        kernel_name=os.environ.get("THIRTYMUSIC_KERNEL", "thirtymusic"),
        cwd=str(NOTEBOOKS),
        progress_bar=False,
    )
    return out


def _check_results_05(res: dict, build_dir: Path) -> None:
    """The chapter's JSON: contract keys, sane values, agreement with a direct recomputation."""
    for key in CONTRACT_05:
        assert key in res, f"06_t_test.json lacks {key!r}"
    assert res["paired_cf_model"] in ("cf_weighted", "cf_tuned")
    assert res["hr_diff_ci_low"] <= res["paired_hr_diff"] <= res["hr_diff_ci_high"]
    assert 0 <= res["paired_pvalue"] <= 1
    assert res["ttest_seed_pvalue"] is None or 0 <= res["ttest_seed_pvalue"] <= 1
    assert 0 <= res["sim_fpr_study"] <= 1 and 0 <= res["sim_fpr_mcnemar"] <= 1
    assert res["paired_verdict"] in VERDICTS and res["seed_pair_verdict"] in VERDICTS
    ranks = stats.model_ranks(stats.load_outcomes(build_dir))
    cf = stats.better_of(ranks, ["cf_weighted", "cf_tuned"])
    assert res["paired_cf_model"] == cf
    mc = stats.mcnemar_exact(stats.hits(ranks["embedding_improved"]), stats.hits(ranks[cf]))
    assert res["paired_pvalue"] == pytest.approx(mc.pvalue)
    assert res["paired_hr_diff"] == pytest.approx(mc.hr_diff)
    study = stats.study_ttest(stats.hits(ranks["cf_seed"]), stats.hits(ranks["embedding_seed"]))
    if res["ttest_seed_pvalue"] is not None:
        assert res["ttest_seed_pvalue"] == pytest.approx(study.pvalue)
    for m in stats.BOOK_MODELS:
        hr = stats.hits(ranks[m]).mean()
        assert res[f"hr_ci_low_{m}"] <= hr <= res[f"hr_ci_high_{m}"]
        assert res[f"wilson_low_{m}"] <= hr <= res[f"wilson_high_{m}"]
    pairs = pd.read_csv(build_dir / "artifacts" / "pairwise_05.csv")
    assert len(pairs) == math.comb(len(stats.BOOK_MODELS), 2)


def _check_conclusions(res06: dict, res05: dict) -> None:
    """Every figure of 06 is prefixed concl_ and its verdicts follow from 05's numbers."""
    assert res06 and all(k.startswith("concl_") for k in res06)
    assert res06["concl_primary_verdict"] == stats.comparison_verdict(
        res05["hr_diff_ci_low"],
        res05["hr_diff_ci_high"],
        res05["paired_pvalue"],
        res05["test_alpha"],
    )
    assert res06["concl_hr_diff"] == pytest.approx(res05["paired_hr_diff"])
    assert res06["concl_seed_pair_verdict"] in VERDICTS
    assert res06["concl_tests_agree"] in ("agree", "disagree")


def _prose_without_glue(source: str) -> str:
    text = GLUE_ROLE.sub("", source)
    text = re.sub(r"HR@10|top 10|^\s*\d+\.\s", "", text, flags=re.MULTILINE)
    return text


# ------------------------------------------------------------------------------ static checks


@pytest.mark.parametrize("path", [NB05, NB06], ids=["05", "06"])
def test_notebook_follows_template(path):
    nb = nbformat.read(path, as_version=4)
    assert nb.metadata["kernelspec"]["name"] == "thirtymusic"
    first, params, imports = nb.cells[:3]
    assert first.cell_type == "markdown" and first.source.startswith(f"# {path.name[:2]} · ")
    assert "What this chapter does" in first.source
    assert "parameters" in params.metadata.get("tags", [])
    for name in ("data_dir", "build_dir", "seed", "profile"):
        assert re.search(rf"^{name} = ", params.source, re.MULTILINE), name
    assert "import" in imports.source
    assert nb.cells[-1].cell_type == "markdown" and "## What we found" in nb.cells[-1].source
    for c in nb.cells:
        if c.cell_type == "code":
            assert not c.outputs and c.execution_count is None, "commit notebooks without outputs"
            src = "\n".join(
                line for line in c.source.splitlines() if not line.lstrip().startswith("%")
            )
            tree = ast.parse(src)
            defs = [
                n
                for n in ast.walk(tree)
                if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.Lambda))
            ]
            assert not defs, "no function or class definitions in notebooks"


def test_conclusions_quote_only_their_own_glue():
    nb = nbformat.read(NB06, as_version=4)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    keys = _glue_keys(nb)
    assert keys
    for key, _ in keys:
        assert key.startswith("concl_"), f"06 quotes {key!r}: it must re-glue under concl_"
        assert f'"{key}"' in code, f"06 quotes {key!r} but never records it"
    # no typed numbers in the conclusions' prose (numbered list markers and HR@10 aside)
    assert not re.search(r"\d", _prose_without_glue(nb.cells[-1].source))


def test_chapter_05_findings_have_no_typed_numbers():
    nb = nbformat.read(NB05, as_version=4)
    assert not re.search(r"\d", _prose_without_glue(nb.cells[-1].source))


# ------------------------------------------------------------------- runs on a fake build folder


@pytest.mark.notebook
@pytest.mark.slow
def test_notebooks_05_06_on_fake_build(tmp_path):
    """05 and 06 on synthetic outcomes with a clear winner; independent of chapters 01-04."""
    _fake_build(tmp_path)
    out05 = _execute(NB05, tmp_path, n_resamples=2000, sim_reps=200)
    res05 = load_results(tmp_path, "06_t_test")
    _check_results_05(res05, tmp_path)
    assert res05["paired_cf_model"] == "cf_tuned"
    assert res05["paired_verdict"] == "better than"  # built in: embedding hits a superset of CF
    assert res05["paired_n_cf_only"] == 0
    values05 = _check_glue(out05)
    for key in CONTRACT_05:
        assert key in values05
    out06 = _execute(NB06, tmp_path)
    res06 = load_results(tmp_path, "08_conclusions")
    _check_conclusions(res06, res05)
    assert res06["concl_primary_verdict"] == "better than"
    _check_glue(out06)


# --------------------------------------------------------------------- the tiny-profile smoke test


@pytest.mark.notebook
@pytest.mark.slow
def test_notebooks_05_06_tiny(tiny_book):
    """The whole chain on the tiny profile: 01..05, then the conclusions."""
    res05 = tiny_book.run("06_t_test")
    _check_results_05(res05, tiny_book.build_dir)
    _check_glue(tiny_book.done["06_t_test"])
    if "08_conclusions" in tiny_book.order:
        res06 = tiny_book.run("08_conclusions")
        out06 = tiny_book.done["08_conclusions"]
    else:  # the fixture does not know chapter 06 yet: execute it on the same build folder
        out06 = _execute(NB06, tiny_book.build_dir)
        res06 = load_results(tiny_book.build_dir, "08_conclusions")
    _check_conclusions(res06, res05)
    _check_glue(out06)
