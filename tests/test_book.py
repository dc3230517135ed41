"""Chapter 01 and 07 smoke tests on the tiny profile, and the strict build of the whole book."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from thirtymusic_utils.book.browser import check_in_browser, find_chromium
from thirtymusic_utils.book.site import (
    PRESENTATION_PENDING,
    build_book,
    check_html,
    toc_files,
)
from thirtymusic_utils.data.matrix import load_matrix
from thirtymusic_utils.data.readers import read_plays

ROOT = Path(__file__).resolve().parent.parent


def _text(page: Path) -> str:
    """The article's text and outputs as a reader sees them (typographic quotes back to plain ones)."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(page.read_text(), "html.parser")
    article = soup.select_one("article.bd-article") or soup
    for code in article.select("div.cell_input"):
        code.decompose()  # the text a reader reads, not the (collapsed) code
    return " ".join(article.get_text(" ").replace("\u2019", "'").split())


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
    assert results["data_files"] == sum(1 for f in tiny_book.data_dir.rglob("*") if f.is_file())
    assert results["data_bytes"] == sum(
        f.stat().st_size for f in tiny_book.data_dir.rglob("*") if f.is_file()
    )
    assert results["data_source"] == "synthetic" and results["data_profile"] == "tiny"
    assert results["profile_asked"] == results["run_profile"] == "tiny"  # the stand-in's own budget


@pytest.mark.notebook
@pytest.mark.book
@pytest.mark.slow
def test_strict_book_build_has_every_chapter_and_no_broken_links(tiny_book):
    results = tiny_book.run("09_reproducibility")
    assert len(results["repro_fingerprint"]) == 16
    html = build_book(tiny_book.build_dir)  # -W -n --keep-going: any warning raises
    pages = toc_files(ROOT / "book" / "_toc.yml")
    ready = [p for p in pages if p not in PRESENTATION_PENDING]
    assert check_html(html, pages, reader_pages=ready) == []
    chapter = (html / "01_user_artist_matrix.html").read_text()
    assert chapter.count("<figcaption") >= 2 and "Fig. 1" in chapter  # numbered, captioned figures
    assert f"{results['repro_fingerprint']}" in (html / "09_reproducibility.html").read_text()
    conclusions = json.loads(
        (tiny_book.build_dir / "artifacts" / "08_conclusions.json").read_text()
    )
    intro, page_08 = _text(html / "intro.html"), _text(html / "08_conclusions.html")
    for key in ("verdict_study", "verdict_ttest", "verdict_headline"):
        sentence = " ".join(conclusions[f"concl_{key}"].split())
        assert sentence in intro and sentence in page_08  # glued from the results, not typed
    assert "concl_" not in page_08  # verdicts, not key dumps
    assert "not a reproduction" in chapter and "not a reproduction" in page_08  # the data banner
    binary = find_chromium()
    if binary is not None:  # read as a reader would, when Chromium is installed (make check-book)
        shots = tiny_book.build_dir / "screenshots"
        found = check_in_browser(html, ready, shots, binary)
        assert {page: problems for page, problems in found.items() if problems} == {}
        assert all((shots / f"{page}.png").stat().st_size > 0 for page in ready)
