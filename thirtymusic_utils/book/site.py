"""Assemble and build the HTML book from executed notebooks, and check what was built.

``python -m thirtymusic_utils.book.site build --build-dir build`` copies ``_config.yml``, ``book/_toc.yml``, the
prose pages of ``book/`` and ``BUILD_DIR/executed/*.ipynb`` into ``BUILD_DIR/book-src``, runs a strict
Jupyter Book 1 build (``-W -n --keep-going``: any warning fails it) and leaves the site in
``BUILD_DIR/html``. ``check`` verifies the built site (see :func:`check_html`, no browser needed) and,
when Chromium is installed, opens every page in headless Chromium (:mod:`.browser`).

Staging also makes the pages and the downloadable notebooks (``_sources/*.ipynb``) fit for readers:
papermill's injected-parameters cell is dropped (it holds the build machine's absolute paths; the
notebook's own ``parameters`` cell, tagged ``remove-cell``, keeps the defaults), the papermill metadata
loses its paths, and stderr / progress-bar outputs are stripped.
"""

from __future__ import annotations

import argparse
import json
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
    if (root / "book" / "_static").is_dir():
        shutil.copytree(root / "book" / "_static", src / "_static")
    if (build / "downloads").is_dir():  # whole tables behind the short ones (book/tables.py)
        shutil.copytree(build / "downloads", src / "_static" / "downloads", dirs_exist_ok=True)
    missing = []
    for name in toc_files(root / "book" / "_toc.yml"):
        if (src / f"{name}.md").exists():
            continue
        executed = build / "executed" / f"{name}.ipynb"
        if executed.exists():
            notebook = json.loads(executed.read_text())
            (src / executed.name).write_text(json.dumps(clean_notebook(notebook), indent=1))
        else:
            missing.append(str(executed))
    if missing:
        raise FileNotFoundError(
            "these notebooks have not been executed yet (run `make execute`): " + ", ".join(missing)
        )
    return src


#: Tags of cells that must not reach readers: papermill's injected parameters carry absolute paths.
DROP_TAGS = {"injected-parameters"}
#: Cells of these tags are removed from the page (the notebook keeps them).
REMOVE_TAGS = {"parameters"}
_PROGRESS = re.compile(r"\d+%\|.*\||\r")


def clean_notebook(notebook: dict) -> dict:
    """A copy of an executed notebook fit for readers (see the module docstring); not in place."""
    nb = json.loads(json.dumps(notebook))
    cells = []
    for cell in nb.get("cells", []):
        tags = set(cell.get("metadata", {}).get("tags", []))
        if tags & DROP_TAGS:
            continue
        if tags & REMOVE_TAGS and "remove-cell" not in tags:
            cell.setdefault("metadata", {})["tags"] = [
                *cell["metadata"].get("tags", []),
                "remove-cell",
            ]
        if cell.get("cell_type") == "code":
            cell["outputs"] = [o for o in cell.get("outputs", []) if not _noise(o)]
        cells.append(cell)
    nb["cells"] = cells
    pm = nb.get("metadata", {}).get("papermill")
    if isinstance(pm, dict):
        for key in ("input_path", "output_path", "parameters", "environment_variables"):
            pm.pop(key, None)
    return nb


def _noise(output: dict) -> bool:
    """stderr streams, progress bars (tqdm text or widgets) and papermill's own records."""
    if output.get("output_type") == "stream":
        if output.get("name") == "stderr":
            return True
        text = "".join(output.get("text", ""))
        return bool(_PROGRESS.search(text))
    return "application/vnd.jupyter.widget-view+json" in output.get("data", {})


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


#: Chapters not yet presented for readers (issue 11): their reader problems are reported as warnings,
#: not failures. Empty this set as each chapter gets its tags, glued figures and book tables.
PRESENTATION_PENDING: frozenset[str] = frozenset()
#: Most lines of code a page may show outside collapsed (hide-input) or removed cells.
VISIBLE_CODE_BUDGET = 60
#: An absolute path of a machine (Unix home/build folders or a Windows drive).
ABSOLUTE_PATH = re.compile(
    r"(?<![\w.~/-])/(?:tmp|home|work|root|Users|var|mnt|opt|private|srv)/\S*|\b[A-Z]:\\\S+"
)
_BAD_OUTPUT = re.compile(r"\bNaN\b|\bnan\b|\bNone\b|Traceback \(most recent call last\)|\bNaT\b")
#: MyST directive markup in an output: a returned string shown as its repr
_RAW_MYST = re.compile(r":::\{|```\{")
_HASH_ALT = re.compile(r"[0-9a-f]{24,}|\.(png|svg|jpe?g)$", re.I)
_HIDDEN_INPUT = {"tag_hide-input", "tag_remove-input", "tag_hide-cell", "tag_remove-cell"}


def visible_code_lines(page_html: str) -> int:
    """Lines of code a reader sees on a page without opening a collapsed cell."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(page_html, "html.parser")
    article = soup.select_one("article.bd-article") or soup
    lines = 0
    for cell in article.select("div.cell"):
        if _HIDDEN_INPUT & set(cell.get("class", [])):
            continue
        for pre in cell.select("div.cell_input pre"):
            lines += sum(1 for line in pre.get_text().splitlines() if line.strip())
    return lines


def check_reader_page(page_html: str, name: str, budget: int = VISIBLE_CODE_BUDGET) -> list[str]:
    """What a reader would trip over on one page (no browser needed).

    Every image inside a ``<figure>`` with a caption and alt text in words (not a file hash); no NaN,
    None, NaT, traceback or raw MyST markup in outputs; no absolute path anywhere in the page
    (collapsed code included); no unresolved glue role; no raw pandas table (``book/tables.py`` formats them); at most ``budget``
    visible lines of code.
    """
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(page_html, "html.parser")
    article = soup.select_one("article.bd-article") or soup
    problems = []
    for img in article.find_all("img"):
        figure = img.find_parent("figure")
        caption = figure.find("figcaption") if figure else None
        if caption is None or not caption.get_text(strip=True):
            problems.append(f"{name}: image {img.get('src')} is not in a captioned figure")
        alt = (img.get("alt") or "").strip()
        if not alt or _HASH_ALT.search(alt):
            problems.append(f"{name}: image {img.get('src')} has no alt text in words ({alt!r})")
    for out in article.select("div.cell_output"):
        text = out.get_text(" ")
        bad = _BAD_OUTPUT.search(text)
        if bad:
            problems.append(f"{name}: an output shows {bad.group(0)!r}: ...{_around(text, bad)}...")
        raw = _RAW_MYST.search(text)
        if raw:
            problems.append(
                f"{name}: an output shows raw MyST markup (a returned string displayed: end the "
                f"call with ;): ...{_around(text, raw)}..."
            )
        if out.select("table.dataframe") and not out.select("table.book-table"):
            problems.append(f"{name}: a raw pandas table (format it with book.tables.book_table)")
    text = article.get_text(" ")
    for found in ABSOLUTE_PATH.finditer(text):
        problems.append(f"{name}: shows an absolute path {found.group(0)!r}")
    if "{glue" in text:
        problems.append(f"{name}: an unresolved glue role")
    if name[:2].isdigit():
        banner = article.select_one("div.data-banner")
        first_h2 = article.find("h2")
        if banner is None:
            problems.append(
                f"{name}: no data banner (glue_banner + a glue:md data_banner at the top)"
            )
        elif first_h2 is not None and first_h2 in banner.find_all_previous("h2"):
            problems.append(f"{name}: the data banner comes after the first section")
    lines = visible_code_lines(page_html)
    if lines > budget:
        problems.append(
            f"{name}: shows {lines} lines of code (budget {budget}; tag plumbing hide-input)"
        )
    return problems


def _around(text: str, match: re.Match) -> str:
    return " ".join(text[max(0, match.start() - 60) : match.end() + 60].split())


def check_html(
    html_dir: str | os.PathLike, pages: list[str], reader_pages: list[str] | None = None
) -> list[str]:
    """Problems of a built site: missing pages, broken internal links or images, remote scripts.

    Returns a list of messages (empty when the site is sound). Remote ``<script src>`` or stylesheet
    links are problems because the book must read offline. ``reader_pages`` (all ``pages`` when not
    given) also get the reader's checks of :func:`check_reader_page`.
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
    for name in pages if reader_pages is None else reader_pages:
        if (html / f"{name}.html").exists():
            problems += check_reader_page((html / f"{name}.html").read_text(errors="replace"), name)
        download = html / "_sources" / f"{name}.ipynb"
        if download.exists():
            problems += check_download(download)
    return problems


def check_download(path: Path) -> list[str]:
    """Noise in a downloadable notebook: stderr or progress-bar outputs, injected parameters, paths."""
    nb = json.loads(path.read_text())
    problems = []
    for i, cell in enumerate(nb.get("cells", [])):
        if "injected-parameters" in cell.get("metadata", {}).get("tags", []):
            problems.append(f"_sources/{path.name}: cell {i} holds papermill's injected parameters")
        if any(_noise(o) for o in cell.get("outputs", [])):
            problems.append(f"_sources/{path.name}: cell {i} has stderr or progress-bar output")
        for out in cell.get("outputs", []):
            text = json.dumps(out.get("text", "")) + json.dumps(
                out.get("data", {}).get("text/plain", "")
            )
            found = ABSOLUTE_PATH.search(text)
            if found:
                problems.append(
                    f"_sources/{path.name}: cell {i} prints an absolute path {found.group(0)!r}"
                )
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
    pages = toc_files(PROJECT_ROOT / "book" / "_toc.yml")
    ready = [p for p in pages if p not in PRESENTATION_PENDING]
    problems = check_html(html, pages, reader_pages=ready)
    for problem in problems:
        print(problem, file=sys.stderr)
    pending = [p for p in pages if p in PRESENTATION_PENDING and (html / f"{p}.html").exists()]
    for name in pending:
        found = check_reader_page((html / f"{name}.html").read_text(errors="replace"), name)
        if found:
            print(f"warning: {name} is not yet presented for readers ({len(found)} problems, e.g. "
                  f"{found[0]})", file=sys.stderr)  # fmt: skip
    if not problems:
        print(f"The book: {html / 'index.html'}")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
