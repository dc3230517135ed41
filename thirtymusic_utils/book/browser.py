"""Read the built book as a reader would: every page in headless Chromium, offline, 1400 px wide.

``python -m thirtymusic_utils.book.browser --build-dir build`` (``make check-book``) opens every page of
``BUILD_DIR/html`` through the DevTools protocol and checks, in the rendered page:

- nothing overflows the main text column horizontally (a table or figure wider than the column, or one
  cut off inside a scrolling box);
- every image sits inside a ``<figure>`` with a caption;
- no "NaN", "None" or traceback in the outputs;

and writes a screenshot of each page's first screen and of the whole page to ``BUILD_DIR/screenshots``.
Chromium runs with no network (every host resolves to nothing) and a fresh profile; nothing is
downloaded. Without Chromium it says so and exits 0 (the same DOM checks without a browser are
:func:`.site.check_reader_page`, part of ``make test``).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from .paths import PROJECT_ROOT, build_path
from .site import PRESENTATION_PENDING, toc_files

WIDTH, HEIGHT = 1400, 900
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-extensions",
    "--hide-scrollbars",
    "--host-resolver-rules=MAP * ~NOTFOUND",
    f"--window-size={WIDTH},{HEIGHT}",
]

#: Runs in the page; returns the problems a reader would see, as a JSON list of strings.
PAGE_CHECKS = r"""
(() => {
  const out = [];
  const article = document.querySelector('article.bd-article') || document.body;
  const col = article.getBoundingClientRect();
  const clipped = el => {
    for (let a = el.parentElement; a && a !== article; a = a.parentElement) {
      const s = getComputedStyle(a);
      if (['auto', 'scroll', 'hidden', 'clip'].includes(s.overflowX)) return a;
    }
    return null;
  };
  const visible = el => el.getClientRects().length > 0 && !el.closest('details:not([open])');
  const what = el => el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') +
      (el.className && typeof el.className === 'string' ? '.' + el.className.split(' ')[0] : '');
  for (const el of article.querySelectorAll('table, img, figure, svg, .cell_output, p, pre')) {
    if (!visible(el)) continue;
    const r = el.getBoundingClientRect();
    const box = clipped(el);
    if (box) {
      const isCode = el.tagName === 'PRE' || box.tagName === 'PRE' || box.closest('.cell_input');
      if (!isCode && box.scrollWidth > box.clientWidth + 2)
        out.push(`${what(el)} is cut off: ${box.scrollWidth}px of content in a ${box.clientWidth}px box`);
    } else if (r.right > col.right + 2 || r.left < col.left - 2) {
      out.push(`${what(el)} overflows the text column (${Math.round(r.left)}-${Math.round(r.right)} px` +
               ` vs ${Math.round(col.left)}-${Math.round(col.right)} px)`);
    }
  }
  for (const img of article.querySelectorAll('img')) {
    const fig = img.closest('figure');
    const cap = fig && fig.querySelector('figcaption');
    if (!cap || !cap.innerText.trim()) out.push(`image ${img.getAttribute('src')} is not in a captioned figure`);
    if (!img.complete || img.naturalWidth === 0) out.push(`image ${img.getAttribute('src')} did not load`);
  }
  for (const o of article.querySelectorAll('.cell_output')) {
    const m = o.innerText.match(/\bNaN\b|\bnan\b|\bNone\b|\bNaT\b|Traceback \(most recent call last\)/);
    if (m) out.push(`an output shows "${m[0]}"`);
  }
  if (document.documentElement.scrollWidth > window.innerWidth + 2)
    out.push(`the page scrolls sideways (${document.documentElement.scrollWidth}px wide)`);
  return JSON.stringify([...new Set(out)]);
})()
"""


def find_chromium() -> str | None:
    """Path of an installed Chromium or Chrome (``CHROMIUM`` overrides), or None."""
    if os.environ.get("CHROMIUM"):
        return os.environ["CHROMIUM"]
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


class Chromium:
    """A headless Chromium driven over the DevTools protocol (websocket-client), one tab."""

    def __init__(self, binary: str, timeout: float = 30.0) -> None:
        import websocket  # websocket-client, a pinned dependency

        self.profile = tempfile.mkdtemp(prefix="book-chromium-")
        self.proc = subprocess.Popen(
            [binary, *FLAGS, f"--user-data-dir={self.profile}", "--remote-debugging-port=0",
             "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        port_file = Path(self.profile) / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while not port_file.exists() or not port_file.read_text().strip():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.close()
                raise RuntimeError(f"{binary} did not start its DevTools endpoint")
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list").read())
        page = next(t for t in targets if t.get("type") == "page")
        self.ws = websocket.create_connection(
            page["webSocketDebuggerUrl"], timeout=timeout, suppress_origin=True
        )
        self.next_id = 0
        self.call("Page.enable")
        self.call("Emulation.setDeviceMetricsOverride",
                  width=WIDTH, height=HEIGHT, deviceScaleFactor=1, mobile=False)  # fmt: skip

    def call(self, method: str, **params) -> dict:
        """Send one DevTools command and return its result (events in between are skipped)."""
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def open(self, url: str, timeout: float = 30.0) -> None:
        """Navigate and wait for the load event."""
        self.call("Page.navigate", url=url)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = json.loads(self.ws.recv())
            if msg.get("method") == "Page.loadEventFired":
                time.sleep(0.3)  # let the theme's scripts settle the layout
                return
        raise TimeoutError(f"{url} did not load in {timeout:.0f} s")

    def evaluate(self, script: str):
        """Value of a JavaScript expression in the page."""
        res = self.call("Runtime.evaluate", expression=script, returnByValue=True)
        return res["result"].get("value")

    def screenshot(self, path: Path, full_page: bool) -> None:
        """PNG of the first screen or of the whole page."""
        if not full_page:
            data = self.call("Page.captureScreenshot", format="png")["data"]
        else:  # lay the page out in one tall window, so that it looks as it does when scrolled
            height = min(int(self.evaluate("document.documentElement.scrollHeight")), 20000)
            self.call("Emulation.setDeviceMetricsOverride",
                      width=WIDTH, height=height, deviceScaleFactor=1, mobile=False)  # fmt: skip
            time.sleep(0.3)
            data = self.call("Page.captureScreenshot", format="png")["data"]
            self.call("Emulation.setDeviceMetricsOverride",
                      width=WIDTH, height=HEIGHT, deviceScaleFactor=1, mobile=False)  # fmt: skip
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        """Stop the browser and delete its profile."""
        try:
            self.ws.close()
        except Exception:  # noqa: BLE001 - closing a half-started browser
            pass
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.profile, ignore_errors=True)


def check_in_browser(
    html_dir: str | os.PathLike, pages: list[str], shots_dir: str | os.PathLike, binary: str
) -> dict[str, list[str]]:
    """Open each page, run :data:`PAGE_CHECKS`, write ``<page>.png`` (whole) and ``<page>-top.png``."""
    html, shots = Path(html_dir).resolve(), Path(shots_dir)
    shots.mkdir(parents=True, exist_ok=True)
    browser = Chromium(binary)
    found: dict[str, list[str]] = {}
    try:
        for name in pages:
            page = html / f"{name}.html"
            if not page.exists():
                found[name] = [f"{page.name} is missing"]
                continue
            browser.open(page.as_uri())
            found[name] = json.loads(browser.evaluate(PAGE_CHECKS))
            browser.screenshot(shots / f"{name}-top.png", full_page=False)
            browser.screenshot(shots / f"{name}.png", full_page=True)
    finally:
        browser.close()
    return found


def main(argv: list[str] | None = None) -> int:
    """Command line of ``make check-book``."""
    parser = argparse.ArgumentParser(prog="python -m thirtymusic_utils.book.browser",
                                     description=__doc__.split("\n\n")[0])  # fmt: skip
    parser.add_argument("--build-dir", default="build")
    parser.add_argument("--pages", nargs="*", help="page names (default: every page of the toc)")
    args = parser.parse_args(argv)
    build = build_path(args.build_dir)
    pages = args.pages or toc_files(PROJECT_ROOT / "book" / "_toc.yml")
    binary = find_chromium()
    if binary is None:
        print("check-book: no Chromium installed (apt-get install -y chromium); skipped the browser "
              "checks (the DOM checks without a browser run in make test)")  # fmt: skip
        return 0
    found = check_in_browser(build / "html", pages, build / "screenshots", binary)
    bad = 0
    for name, problems in found.items():
        for problem in problems:
            pending = name in PRESENTATION_PENDING
            print(f"{'warning (presentation pending): ' if pending else ''}{name}: {problem}",
                  file=sys.stderr)  # fmt: skip
            bad += not pending
    print(f"check-book: {len(found)} pages, {bad} problems; screenshots in {build / 'screenshots'}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
