"""The book's presentation: the table formatter, the figure helper, the banner, the verdicts, the cleaning
of executed notebooks, the reader's DOM checks, and every chapter's cell tags (issue 11)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from thirtymusic_utils.book.banner import banner_text, human_bytes
from thirtymusic_utils.book.figures import glue_figure, new_figure
from thirtymusic_utils.book.site import (
    ABSOLUTE_PATH,
    PRESENTATION_PENDING,
    VISIBLE_CODE_BUDGET,
    check_reader_page,
    clean_notebook,
    toc_files,
    visible_code_lines,
)
from thirtymusic_utils.book.tables import (
    book_table,
    format_interval,
    format_number,
    format_pvalue,
    human_label,
    key_table,
)
from thirtymusic_utils.book.verdicts import (
    MissingResult,
    Results,
    headline_sentence,
    ledger_sentence,
    search_limits,
    seed_sentence,
    study_sentence,
    ttest_sentence,
    verdict_word,
    verdicts,
)

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = [c for c in toc_files(ROOT / "book" / "_toc.yml")]
HIDDEN = {"hide-input", "remove-input", "remove-cell", "hide-cell"}

# ------------------------------------------------------------------------------------------ tables


def test_numbers_are_written_for_a_person():
    assert format_number(11994.0) == "11,994"
    assert format_number(np.int64(45167)) == "45,167"
    assert format_number(0.153456789) == "0.1535"
    assert format_number(12.3456) == "12.35"
    assert format_number(1.8e-44) == "1.800e-44"
    assert format_number(float("nan")) == "—" and format_number(None) == "—"
    assert format_number(True) == "yes"
    assert format_pvalue(1.8e-44) == "1.8e-44" and format_pvalue(0.0123) == "0.012"
    assert format_pvalue(0.0) == "< 1e-300" and format_pvalue(None) == "—"
    assert format_interval(0.1534, 0.1421, 0.1649) == "0.153 [0.142, 0.165]"
    assert format_interval(0.2, float("nan"), None) == "0.200"
    assert format_interval(0.01, -0.0003, 0.02) == "0.010 [-3.0e-04, 0.020]"  # never "-0.000"


def test_labels_are_words():
    assert human_label("hr_at_10") == "HR@10"
    assert human_label("n_test_users") == "Test users"
    assert human_label("cf_coverage_seed") == "CF coverage seed"
    assert human_label("n_sessions") == "Sessions" and human_label("n_val_users") == "Val users"
    assert human_label("first 4,620 users") == "first 4,620 users"
    assert human_label("x", {"x": "Ex"}) == "Ex"


def test_book_table_formats_drops_empty_rows_and_links_long_tables(tmp_path):
    frame = pd.DataFrame(
        {
            "model": ["a", "b", None],
            "hr_at_10": [0.1534, 0.2, np.nan],
            "ci_low": [0.1421, np.nan, np.nan],
            "ci_high": [0.1649, np.nan, np.nan],
            "mcnemar_p": [1.8e-44, 0.5, np.nan],
            "hits": [11994.0, 3.0, np.nan],
        }
    )
    table = book_table(frame, intervals={"HR@10 [95% CI]": ("hr_at_10", "ci_low", "ci_high")})
    assert list(table.frame.columns) == ["HR@10 [95% CI]", "Model", "McNemar p", "Hits"]
    assert len(table.frame) == 2  # the all-missing row is gone
    row = table.frame.iloc[0].to_dict()
    assert row == {"HR@10 [95% CI]": "0.153 [0.142, 0.165]", "Model": "a", "McNemar p": "1.8e-44",
                   "Hits": "11,994"}  # fmt: skip
    html = table.to_html()
    assert 'class="book-table' in html and "NaN" not in html and "None" not in html
    long = pd.DataFrame({"k": range(50), "value": np.linspace(0, 1, 50)})
    short = book_table(long, max_rows=10, csv_name="long.csv", build_dir=tmp_path)
    assert len(short.frame) == 10 and short.download == "_static/downloads/long.csv"
    assert len(pd.read_csv(tmp_path / "downloads" / "long.csv")) == 50
    assert "The first 10 of 50 rows" in short.to_html()
    with pytest.raises(ValueError):
        book_table(long, max_rows=10, csv_name="../escape.csv", build_dir=tmp_path)


def test_key_table_formats_each_value_by_its_type():
    table = key_table({"n_users": 1000.0, "density": 0.020444, "paired_pvalue": 1e-11, "x": None})
    assert table.frame.to_dict("records") == [
        {"": "Users", "Value": "1,000"},
        {"": "Density", "Value": "0.02044"},
        {"": "Paired p-value", "Value": "1.0e-11"},
        {"": "X", "Value": "—"},
    ]


# ----------------------------------------------------------------------------------------- figures


def test_figures_need_alt_text_and_fit_the_column():
    with pytest.raises(ValueError, match="alt text"):
        glue_figure("fig_x", new_figure()[0], alt=" ")
    with pytest.raises(ValueError, match="side by side"):
        new_figure(ncols=3)
    fig, axes = new_figure(ncols=2)
    assert fig.get_figwidth() <= 7.5 and len(axes) == 2
    assert glue_figure("fig_y", fig, alt="two panels").book_alt == "two panels"


# ------------------------------------------------------------------------------------------ banner


def test_banner_says_which_data_and_that_the_stand_in_is_no_reproduction():
    synthetic = banner_text(
        {
            "data_source": "synthetic",
            "data_profile": "default",
            "data_seed": 0,
            "n_users": 12000,
            "n_plays": 1234567,
            "layout": "idomaar",
        }  # fmt: skip
    )
    assert "synthetic stand-in" in synthetic and "not a reproduction" in synthetic
    assert "12,000 users" in synthetic and "1,234,567 plays" in synthetic
    assert synthetic.startswith(":::{admonition}")
    real = banner_text(
        {
            "data_source": "user-supplied",
            "layout": "hetrec",
            "data_name": "hetrec2011-lastfm-2k",
            "data_bytes": 3_100_000,
            "data_files": 7,
            "n_users": 1892,
            "n_plays": 92834,
        }  # fmt: skip
    )
    assert "HetRec" in real and "3.1 MB in 7 files" in real and "1,892 users" in real
    assert "reproduction" not in real and not ABSOLUTE_PATH.search(real)
    assert human_bytes(2_300_000_000) == "2.3 GB" and human_bytes(812) == "812 B"


def test_banner_names_the_run_budget_of_a_users_folder_and_why_it_was_scaled_up():
    facts = {"data_source": "user-supplied", "layout": "idomaar", "n_plays": 31_351_945}
    same = banner_text(
        {**facts, "n_users": 4620, "profile_asked": "default", "run_profile": "default"}
    )
    assert "`default` profile's budget" in same and "hours" not in same
    scaled = banner_text(
        {**facts, "n_users": 45167, "profile_asked": "default", "run_profile": "full"}
    )
    assert "`full` profile's budget" in scaled and "`default`'s" in scaled and "15,000" in scaled
    assert "budget" not in banner_text({**facts, "n_users": 4620})  # an older chapter 01 result


# ---------------------------------------------------------------------------------------- verdicts


def _results(**overrides):
    by_chapter = {
        "02_collaborative_filtering": {"hr_at_10_seed": 0.064, "study_hr_at_10": 0.065},
        "03_baselines": {"best_baseline": "ease", "best_baseline_label": "EASE",
                         "hr_at_10_best_baseline": 0.150, "alpha_reg": 500, "alpha_reg_grid_min": 10,
                         "alpha_reg_grid_max": 500, "k": 50, "k_grid_min": 10, "k_grid_max": 200},
        "04_embeddings": {"study_metric_seed": 0.003, "study_metric_seed_chance": 0.004,
                          "study_metric_seed_correct": 0.011},
        "05_training": {"hr_at_10_embedding": 0.153, "val_metric_best": 0.16},
        "06_t_test": {"ttest_seed_pvalue": 3.6e-4, "sim_fpr_study": 0.33, "sim_reps": 500,
                      "test_alpha": 0.05},
        "07_comparison": {"embedding_vs_best_baseline_ci_low": -0.004,
                          "embedding_vs_best_baseline_ci_high": 0.010, "paired_pvalue": 0.41,
                          "paired_wilcoxon_pvalue": 0.03, "seed_pair_pvalue_holm": 0.2,
                          "ci_level_percent": 95.0},
    }  # fmt: skip
    for key, value in overrides.items():
        chapter = next(c for c, v in by_chapter.items() if key in v)
        by_chapter[chapter][key] = value
    return Results(by_chapter)


def test_verdict_words_follow_the_statistics():
    assert verdict_word(-0.004, 0.010, 0.41) == "level with"
    assert verdict_word(0.001, 0.010, 0.01) == "ahead of"
    assert verdict_word(-0.01, -0.001, 0.01) == "behind"
    assert verdict_word(0.001, 0.010, 0.2) == "level with"  # interval alone is not enough
    assert verdict_word(-0.001, 0.010, 0.01) == "level with"  # test alone is not enough
    assert verdict_word(None, 0.1, 0.01) == "level with"


def test_a_tie_is_level_with_and_the_disagreeing_test_is_stated():
    text = headline_sentence(_results())
    assert "is level with the strongest baseline, EASE (HR@10 0.150)" in text
    assert "best" not in text.replace("strongest", "")
    assert "Wilcoxon test on reciprocal ranks disagrees (p = 0.030)" in text
    assert "[-0.004, 0.010]" in text and "McNemar's p = 0.410" in text
    near_zero = headline_sentence(_results(embedding_vs_best_baseline_ci_low=-0.0003))
    assert "[-3.0e-04, 0.010]" in near_zero
    ahead = headline_sentence(
        _results(embedding_vs_best_baseline_ci_low=0.002, paired_pvalue=0.001)
    )
    assert "is ahead of" in ahead and "Wilcoxon test on reciprocal ranks agrees" in ahead


def test_search_limits_are_flagged_at_the_edge_of_a_grid():
    flags = search_limits(_results())
    assert flags == ["alpha reg = 500 (top of 10–500, chapter 03)"]
    assert "Search limits: alpha reg = 500" in headline_sentence(_results())
    inside = headline_sentence(_results(alpha_reg=100))
    assert "Every tuned setting lies inside its search grid" in inside
    assert search_limits(_results(k=10)) == [
        "alpha reg = 500 (top of 10–500, chapter 03)",
        "k = 10 (bottom of 10–200, chapter 03)",
    ]
    # chapter 03's own phrases for the baselines' grids are passed on, one per model
    edges = _results(alpha_reg=100)
    edges.by_chapter["03_baselines"]["baseline_edges"] = (
        "iALS: regularization = 0.001 (low edge); BPR: factors = 16 (low edge)"
    )
    assert search_limits(edges) == [
        "iALS: regularization = 0.001 (low edge) (chapter 03)",
        "BPR: factors = 16 (low edge) (chapter 03)",
    ]
    assert "Every tuned setting lies inside" not in headline_sentence(edges)
    edges.by_chapter["03_baselines"]["baseline_edges"] = ""  # none at an edge
    assert "Every tuned setting lies inside its search grid" in headline_sentence(edges)


def test_study_and_ttest_sentences():
    study = study_sentence(_results())
    assert "HR@10 = 0.064 on this data (the study reported 0.065)" in study
    assert (
        "own metric (the study reported 0.0030), no more than the 0.0040 a random ranking" in study
    )
    assert "(computed as the study meant it: 0.0110)." in study  # real data: no calibration note
    synthetic = Results(
        {**_results().by_chapter, "01_user_artist_matrix": {"data_source": "synthetic"}}
    )
    assert "by construction, not a reproduction." in study_sentence(synthetic)
    ttest = ttest_sentence(_results())
    assert "significant (p = 3.6e-04)" in ttest and "33% of 500" in ttest
    assert "not significant (p = 0.200), so the two tests disagree" in ttest
    assert set(verdicts(_results())) == {"verdict_study", "verdict_ttest", "verdict_headline"}


def test_a_missing_key_names_the_chapter_that_should_write_it():
    results = _results()
    del results.by_chapter["07_comparison"]["paired_pvalue"]
    with pytest.raises(MissingResult, match=r"'paired_pvalue' is missing: notebooks/07_comparison"):
        headline_sentence(results)
    # the comparison keys chapter 06 wrote before chapter 07 existed no longer stand in
    old = Results(
        {
            "06_t_test": {
                "hr_diff_ci_low": -0.1,
                "hr_diff_ci_high": 0.05,
                "paired_pvalue": 1.0,
                "paired_cf_label": "User-kNN CF, similarity-weighted",
            },
            "05_training": {"hr_at_10_embedding": 0.3},
        }  # fmt: skip
    )
    with pytest.raises(MissingResult, match=r"notebooks/07_comparison"):
        headline_sentence(old)


def test_ledger_and_seed_sentences_quote_the_chapters_keys():
    results = Results(
        {
            "02_collaborative_filtering": {
                "ledger_knn_as_ran": 0.064,
                "ledger_knn_fixed": 0.081,
                "variance_n_seeds": 5,
                "hr_at_10_seed_mean5": 0.062,
                "hr_at_10_seed_sd5": 0.004,
                "hr_at_10_seed_min5": 0.057,
                "hr_at_10_seed_max5": 0.068,
            },
            "04_embeddings": {"ledger_emb_as_ran": 0.0031, "ledger_emb_fixed": 0.0420},
            "06_t_test": {"ledger_ttest_as_ran": 3.6e-4, "ledger_ttest_fixed": None},
        }  # fmt: skip
    )
    text = ledger_sentence(results)
    assert "HR@10 0.064 as it ran to 0.081" in text and "from 0.0031 to 0.0420" in text
    assert "p-value from 3.6e-04 to undefined" in text
    results.by_chapter["06_t_test"]["ledger_ttest_as_ran"] = None
    assert "and its t-test is undefined on this data (chapter 06)." in ledger_sentence(results)
    assert "5 split seeds" in seed_sentence(results) and "(sd 0.004, from 0.057 to 0.068)" in (
        seed_sentence(results)
    )


# ------------------------------------------------------------------------ staging and DOM checks


def test_clean_notebook_drops_injected_parameters_stderr_and_progress_bars():
    nb = {
        "metadata": {"papermill": {"input_path": "/abs/in.ipynb", "output_path": "/abs/out.ipynb",
                                   "parameters": {"build_dir": "/abs/build"}, "duration": 2.0}},
        "cells": [
            {"cell_type": "code", "metadata": {"tags": ["parameters"]}, "outputs": [], "source": ""},
            {"cell_type": "code", "metadata": {"tags": ["injected-parameters"]}, "outputs": [],
             "source": 'build_dir = "/abs/build"'},
            {"cell_type": "code", "metadata": {}, "source": "run()", "outputs": [
                {"output_type": "stream", "name": "stderr", "text": "warning\n"},
                {"output_type": "stream", "name": "stdout", "text": "  40%|####   | 4/10\r"},
                {"output_type": "display_data", "data": {
                    "application/vnd.jupyter.widget-view+json": {}, "text/plain": "HBox()"}},
                {"output_type": "stream", "name": "stdout", "text": "kept\n"},
            ]},
        ],
    }  # fmt: skip
    clean = clean_notebook(nb)
    assert len(clean["cells"]) == 2 and "remove-cell" in clean["cells"][0]["metadata"]["tags"]
    assert clean["cells"][1]["outputs"] == [{"output_type": "stream", "name": "stdout",
                                             "text": "kept\n"}]  # fmt: skip
    assert clean["metadata"]["papermill"] == {"duration": 2.0}
    assert "/abs" not in json.dumps(clean) and len(nb["cells"]) == 3  # the input is untouched


GOOD_PAGE = """<html><body><article class="bd-article">
<p>Text</p>
<div class="cell tag_hide-input docutils container"><details><div class="cell_input"><pre>import x
import y</pre></div></details><div class="cell_output"><table class="book-table"><tr><td>1</td></tr>
</table></div></div>
<div class="cell docutils container"><div class="cell_input"><pre>model.fit()
</pre></div></div>
<figure id="fig-a"><img alt="Users per bucket" src="_images/a.png"><figcaption>Fig. 1 Users.</figcaption>
</figure></article></body></html>"""


def test_reader_checks_pass_a_good_page_and_find_what_a_reader_trips_over():
    assert check_reader_page(GOOD_PAGE, "good") == []
    assert visible_code_lines(GOOD_PAGE) == 1
    bad = (
        GOOD_PAGE.replace(
            'alt="Users per bucket"', 'alt="_images/3f00bf3e6e2b30a79d824561396a3fc9.png"'
        )
        .replace("<figcaption>Fig. 1 Users.</figcaption>", "")
        .replace("<td>1</td>", "<td>NaN</td>")
        .replace("<p>Text</p>", "<p>Read /tmp/build-x/data and {glue:text}`k`</p>")
        .replace("model.fit()\n", "model.fit()\n" * (VISIBLE_CODE_BUDGET + 1))
    )
    problems = "\n".join(check_reader_page(bad, "bad"))
    for expected in ("not in a captioned figure", "no alt text in words", "shows 'NaN'",
                     "absolute path '/tmp/build-x/data'", "unresolved glue role",
                     f"shows {VISIBLE_CODE_BUDGET + 1} lines of code"):  # fmt: skip
        assert expected in problems
    shown = GOOD_PAGE.replace(
        "<tr><td>1</td></tr>\n</table>",
        "<tr><td>1</td></tr>\n</table><pre>':::{admonition} Data\\n:class: note'</pre>",
    )
    assert any("raw MyST markup" in p for p in check_reader_page(shown, "shown"))
    raw = GOOD_PAGE.replace('class="book-table"', 'class="dataframe"')
    assert any("raw pandas table" in p for p in check_reader_page(raw, "raw"))


# ------------------------------------------------------------------- the chapters' source notebooks


def _source_problems(name: str) -> list[str]:
    path = ROOT / "notebooks" / f"{name}.ipynb"
    nb = json.loads(path.read_text())
    problems, visible = [], 0
    for i, cell in enumerate(nb["cells"]):
        src = "".join(cell["source"])
        tags = set(cell.get("metadata", {}).get("tags", []))
        if cell["outputs"] if cell["cell_type"] == "code" else False:
            problems.append(f"cell {i} is committed with outputs")
        if cell["cell_type"] == "code":
            if "parameters" in tags and "remove-cell" not in tags:
                problems.append(f"cell {i}: the parameters cell is not tagged remove-cell")
            if not tags & HIDDEN:
                visible += sum(1 for line in src.splitlines() if line.strip())
            if "plt.show()" in src:
                problems.append(f"cell {i}: plt.show() (glue the figure with glue_figure instead)")
            for found in ABSOLUTE_PATH.finditer(src):
                problems.append(f"cell {i}: absolute path {found.group(0)!r}")
        else:
            for block in re.findall(r"```\{glue:figure\}[^`]*```", src):
                if ":name:" not in block or ":alt:" not in block:
                    problems.append(f"cell {i}: a glue:figure without :name: and :alt:")
    if visible > VISIBLE_CODE_BUDGET:
        problems.append(f"{visible} visible lines of code (budget {VISIBLE_CODE_BUDGET})")
    return problems


@pytest.mark.parametrize(
    "chapter", [c for c in CHAPTERS if (ROOT / "notebooks" / f"{c}.ipynb").exists()]
)
def test_chapter_tags_hide_the_plumbing(chapter, request):
    if chapter in PRESENTATION_PENDING:
        request.applymarker(
            pytest.mark.xfail(reason="presentation pending (issue 11)", strict=False)
        )
    assert _source_problems(chapter) == []


def test_every_chapter_of_the_toc_has_a_notebook():
    assert [c for c in CHAPTERS if not (ROOT / "notebooks" / f"{c}.ipynb").exists()] == []
