"""Chapter 06 (the study's t-test as it ran, and the whole defect ledger): template checks and the
tiny-profile run after chapters 01-05."""

from __future__ import annotations

import ast
import math
import re
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from thirtymusic_utils.study.ledger import EMBEDDING_DEPARTURES, KNN_DEPARTURES, LEDGER_COLUMNS

ROOT = Path(__file__).resolve().parent.parent
NB06 = ROOT / "notebooks" / "06_t_test.ipynb"
GLUE_ROLE = re.compile(r"\{glue:text\}`([^`:]+)(?::([^`]*))?`")


@pytest.mark.parametrize("name", ["02_collaborative_filtering", "04_embeddings", "06_t_test"])
def test_notebook_follows_template(name):
    nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    assert nb.metadata["kernelspec"]["name"] == "thirtymusic"
    first, params, imports = nb.cells[:3]
    assert first.cell_type == "markdown" and first.source.startswith(f"# {name[:2]} · ")
    assert "What this chapter does" in first.source
    assert {"parameters", "remove-cell"} <= set(params.metadata.get("tags", []))
    for p in ("data_dir", "build_dir", "seed", "profile"):
        assert re.search(rf"^{p} = ", params.source, re.MULTILINE), p
    assert "import" in imports.source
    assert nb.cells[-1].cell_type == "markdown" and "## What we found" in nb.cells[-1].source
    # findings quote glued values, never typed numbers (bar the study's own printed figures)
    prose = GLUE_ROLE.sub("", nb.cells[-1].source)
    study_figures = {"0.065", "0.006", "0.00036", "0.0032", "10,000", "2.5", "97.5"}
    small = {str(i) for i in range(11)} | {"30", "02", "03", "04", "05", "06", "07"}
    typed = {x.rstrip(".,") for x in re.findall(r"\d[\d.,]*", prose)} - study_figures - small
    assert not typed, typed
    for c in nb.cells:
        if c.cell_type == "code":
            assert not c.outputs and c.execution_count is None, "commit notebooks without outputs"
            tree = ast.parse(c.source)
            defs = [
                n
                for n in ast.walk(tree)
                if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.Lambda))
            ]
            assert not defs, "no function or class definitions in notebooks"


@pytest.mark.notebook
@pytest.mark.slow
def test_notebook_06_tiny(tiny_book):
    res = tiny_book.run("06_t_test")
    out = nbformat.read(tiny_book.done["06_t_test"], as_version=4)
    glued = {k for k, _ in GLUE_ROLE.findall(out.cells[-1].source)}
    assert glued <= set(res), glued - set(res)
    assert 0 <= res["study_ttest_cf_mean"] <= 1 and 0 <= res["study_ttest_cf_mean_aligned"] <= 1
    res02 = tiny_book.run("02_collaborative_filtering")
    assert res["study_ttest_cf_hr_full"] == pytest.approx(res02["hr_at_10_seed"])
    p = res["ttest_seed_pvalue"]
    assert p is None or math.isnan(p) or 0 <= p <= 1
    ledger = pd.read_csv(tiny_book.build_dir / "artifacts" / "ledger_06.csv")
    assert ledger.columns.tolist() == LEDGER_COLUMNS
    assert res["ledger_rows"] == len(KNN_DEPARTURES) + len(EMBEDDING_DEPARTURES) + len(ledger)
