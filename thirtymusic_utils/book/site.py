"""Assemble and build the HTML book from executed notebooks, and check what was built.

``python -m thirtymusic_utils.book.site build --build-dir build`` copies ``_config.yml``, ``book/_toc.yml``, the
prose pages of ``book/`` and ``BUILD_DIR/executed/*.ipynb`` into ``BUILD_DIR/book-src``, runs a strict
Jupyter Book 1 build (``-W -n --keep-going``: any warning fails it) and leaves the site in
``BUILD_DIR/html``. ``check`` verifies the built site (see :func:`check_html`).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

from .paths import PROJECT_ROOT, build_path


def toc_files(toc: Path) -> list[str]:
    """Page names listed in a ``_toc.yml`` (root first)."""
    text = toc.read_text()
    root = re.search(r"^root:\s*(\S+)", text, re.M)
    files = re.findall(r"^\s*-?\s*file:\s*(\S+)", text, re.M)
    return ([root.group(1)] if root else []) + files


def stage_book(build_dir: str | os.PathLike, root: Path = PROJECT_ROOT) -> Path:
    """Copy the config, the prose and the executed notebooks into ``BUILD_DIR/book-src``."""
    build = build_path(build_dir)
    src = build / "book-src"
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    shutil.copy(root / "_config.yml", src)
    for page in (root / "book").iterdir():
        if page.suffix in {".yml", ".md", ".png", ".svg"}:
            shutil.copy(page, src)
    missing = []
    for name in toc_files(root / "book" / "_toc.yml"):
        if (src / f"{name}.md").exists():
            continue
        executed = build / "executed" / f"{name}.ipynb"
        if executed.exists():
            shutil.copy(executed, src)
        else:
            missing.append(str(executed))
    if missing:
        raise FileNotFoundError(
            "these notebooks have not been executed yet (run `make execute`): " + ", ".join(missing)
        )
    return src


def build_book(build_dir: str | os.PathLike, root: Path = PROJECT_ROOT) -> Path:
    """Stage and build the book strictly; returns ``BUILD_DIR/html``. Raises on any Sphinx warning."""
    build = build_path(build_dir)
    src = stage_book(build, root)
    out = build / "jb"
    shutil.rmtree(out, ignore_errors=True)
    jb = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(jb), "build", str(src), "--path-output", str(out), "-W", "-n", "--keep-going"]
    subprocess.run(cmd, check=True)
    html = build / "html"
    shutil.rmtree(html, ignore_errors=True)
    shutil.copytree(out / "_build" / "html", html)
    return html


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value and name in {"href", "src"}:
                self.refs.append((tag, value))


def check_html(html_dir: str | os.PathLike, pages: list[str]) -> list[str]:
    """Problems of a built site: missing pages, broken internal links or images, remote scripts.

    Returns a list of messages (empty when the site is sound). Remote ``<script src>`` or stylesheet
    links are problems because the book must read offline.
    """
    html = Path(html_dir)
    problems = [f"page {p}.html is missing" for p in pages if not (html / f"{p}.html").exists()]
    for page in sorted(html.rglob("*.html")):
        if "_static" in page.relative_to(html).parts:
            continue  # theme templates shipped as static files, not pages
        parser = _Links()
        parser.feed(page.read_text(errors="replace"))
        for tag, ref in parser.refs:
            parts = urlsplit(ref)
            if parts.scheme in {"http", "https"} or ref.startswith("//"):
                if tag in {"script", "link", "img"} and not ref.startswith("https://www.last.fm"):
                    problems.append(f"{page.name}: <{tag}> loads {ref} from the network")
                continue
            if parts.scheme or not parts.path:
                continue  # mailto:, data:, javascript:, or a same-page anchor
            target = (page.parent / unquote(parts.path)).resolve()
            if not target.exists():
                problems.append(f"{page.name}: <{tag}> points to missing {ref}")
    return problems


def main(argv: list[str] | None = None) -> int:
    """Command line: ``build`` or ``check`` the book of a build folder."""
    parser = argparse.ArgumentParser(
        prog="python -m thirtymusic_utils.book.site", description=__doc__
    )
    parser.add_argument("command", choices=["build", "check"])
    parser.add_argument("--build-dir", default="build")
    args = parser.parse_args(argv)
    html = build_path(args.build_dir) / "html"
    if args.command == "build":
        html = build_book(args.build_dir)
    problems = check_html(html, toc_files(PROJECT_ROOT / "book" / "_toc.yml"))
    for problem in problems:
        print(problem, file=sys.stderr)
    if not problems:
        print(f"The book: {html / 'index.html'}")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
