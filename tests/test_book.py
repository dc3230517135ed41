"""Chapter 01 and 07 smoke tests on the tiny profile, and the strict build of the whole book."""

from __future__ import annotations

from pathlib import Path

import pytest

from thirtymusic_utils.book.site import build_book, check_html, toc_files
from thirtymusic_utils.data.matrix import load_matrix
from thirtymusic_utils.data.readers import read_plays

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.notebook
@pytest.mark.slow
def test_chapter_01_results_match_the_data(tiny_book):
    results = tiny_book.run("01_user_artist_matrix")
    plays = read_plays(tiny_book.data_dir, errors="skip")
    assert results["n_users"] == plays["user_id"].nunique()
    assert results["n_artists"] == plays["artist_id"].nunique()
    assert results["n_plays"] == int(plays["plays"].sum())
    assert results["n_pairs"] == len(plays)
    matrix = load_matrix(tiny_book.build_dir)
    assert matrix.counts.nnz == results["n_pairs"]
    assert results["plays_unknown_track"] >= 0 and results["layout"] == "idomaar"


@pytest.mark.notebook
@pytest.mark.book
@pytest.mark.slow
def test_strict_book_build_has_every_chapter_and_no_broken_links(tiny_book):
    results = tiny_book.run("09_reproducibility")
    assert len(results["repro_fingerprint"]) == 16
    html = build_book(tiny_book.build_dir)  # -W -n --keep-going: any warning raises
    pages = toc_files(ROOT / "book" / "_toc.yml")
    assert check_html(html, pages) == []
    chapter = (html / "01_user_artist_matrix.html").read_text()
    assert "<img" in chapter  # the figures were rendered
    assert f"{results['repro_fingerprint']}" in (html / "09_reproducibility.html").read_text()
