"""The HTML checker finds what it must; the reproducibility helpers are stable."""

from __future__ import annotations

import json

from thirtymusic_utils.book.repro import (
    data_files,
    data_fingerprint,
    notebook_durations,
    package_versions,
)
from thirtymusic_utils.book.site import check_html, toc_files


def test_check_html_reports_missing_pages_links_and_remote_scripts(tmp_path):
    (tmp_path / "_images").mkdir()
    (tmp_path / "_images" / "fig.png").write_bytes(b"png")
    (tmp_path / "intro.html").write_text(
        '<a href="ch.html#top">ok</a><img src="_images/fig.png"><a href="#here">anchor</a>'
        '<a href="https://example.org/page">outbound reading link</a>'
    )
    (tmp_path / "ch.html").write_text("<p>chapter</p>")
    assert check_html(tmp_path, ["intro", "ch"], reader_pages=[]) == []
    # the reader's checks (tests/test_presentation.py) want the image in a captioned figure
    assert any("captioned figure" in p for p in check_html(tmp_path, ["intro", "ch"]))
    (tmp_path / "bad.html").write_text(
        '<img src="_images/gone.png"><a href="nowhere.html">x</a>'
        '<script src="https://cdn.example.org/mathjax.js"></script>'
    )
    problems = check_html(tmp_path, ["intro", "ch", "missing"], reader_pages=[])
    assert not any(p.startswith(("intro", "ch")) for p in problems)
    assert "page missing.html is missing" in problems
    assert any("gone.png" in p for p in problems)
    assert any("nowhere.html" in p for p in problems)
    assert any("from the network" in p for p in problems)


def test_toc_files_reads_root_and_chapters(tmp_path):
    toc = tmp_path / "_toc.yml"
    toc.write_text(
        "format: jb-book\nroot: intro\nparts:\n  - chapters:\n      - file: a\n      - file: b\n"
    )
    assert toc_files(toc) == ["intro", "a", "b"]


def test_data_fingerprint_is_stable_and_sensitive(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.txt").write_text("one")
    (tmp_path / "sub" / "b.txt").write_text("two")
    first, files = data_fingerprint(tmp_path)
    again, _ = data_fingerprint(tmp_path)
    assert first == again and list(files["file"]) == ["a.txt", "sub/b.txt"]
    (tmp_path / "sub" / "b.txt").write_text("two!")
    changed, _ = data_fingerprint(tmp_path)
    assert changed != first


def test_a_folder_linked_in_from_elsewhere_is_read_through_its_links(tmp_path):
    store = tmp_path / "disk"
    (store / "relations").mkdir(parents=True)
    (store / "relations" / "sessions.idomaar").write_text("s")
    (store / "persons.idomaar").write_text("p")
    copy = tmp_path / "30music"
    (copy / "entities").mkdir(parents=True)
    (copy / "relations").symlink_to(store / "relations", target_is_directory=True)
    (copy / "entities" / "persons.idomaar").symlink_to(store / "persons.idomaar")
    (copy / "entities" / "gone.idomaar").symlink_to(tmp_path / "nowhere")
    (copy / "relations" / "loop").symlink_to(copy, target_is_directory=True)  # a link to a parent
    rel = [p.relative_to(copy).as_posix() for p in data_files(copy)]
    assert rel == ["entities/persons.idomaar", "relations/sessions.idomaar"]
    linked, files = data_fingerprint(copy)
    assert list(files["file"]) == rel and int(files["bytes"].sum()) == 2
    (store / "relations" / "sessions.idomaar").write_text("s2")  # a change behind the link shows
    assert data_fingerprint(copy)[0] != linked


def test_notebook_durations_and_versions(tmp_path):
    (tmp_path / "executed").mkdir()
    meta = {"metadata": {"papermill": {"duration": 1.5, "end_time": "t"}}, "cells": []}
    (tmp_path / "executed" / "01_x.ipynb").write_text(json.dumps(meta))
    durations = notebook_durations(tmp_path)
    assert durations.to_dict("records") == [{"notebook": "01_x", "seconds": 1.5, "end": "t"}]
    versions = package_versions(("numpy", "no-such-package-xyz"))
    assert (
        versions["version"].iloc[1] == "not installed" and versions["version"].iloc[0][0].isdigit()
    )
