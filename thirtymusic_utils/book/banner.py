"""The data banner that opens every results page: which data this page is about, at first sight.

Chapter 01 records what it read (``data_source``, ``layout``, ``data_name``, ``data_bytes``,
``data_files``, ``data_profile``, ``data_seed``, ``n_users``, ``n_plays``) and the run budget
(``profile_asked``, ``run_profile``: see :mod:`.budget`); every later chapter calls
``glue_banner(build_dir)`` in a hidden cell and opens its page with::

    ```{glue:md} data_banner
    :format: myst
    ```
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from .budget import SCALE_USERS
from .paths import load_results

BANNER_KEY = "data_banner"
_LAYOUTS = {
    "idomaar": "a 30Music folder (idomaar form)",
    "csv": "a 30Music folder (CSV form)",
    "hetrec": "a HetRec 2011 Last.fm 2K folder",
}


def human_bytes(n: int | float) -> str:
    """``2.3 GB``, ``14.1 MB``, ``812 kB``."""
    n = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit in {"B", "kB"} else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover


def banner_text(facts: Mapping[str, Any]) -> str:
    """The banner as MyST: a note admonition naming the data, its size, users and plays.

    On the synthetic stand-in it says that the stand-in was calibrated to the study's figures, so that a
    match with the study there is by construction, not a reproduction.
    """
    users, plays = int(facts["n_users"]), int(facts["n_plays"])
    counts = f"{users:,} users and {plays:,} plays"
    if facts.get("data_source") == "synthetic":
        profile, seed = facts.get("data_profile", "?"), facts.get("data_seed", "?")
        title = "Data: the synthetic 30Music stand-in"
        body = (
            f"This page is about the **synthetic stand-in** for 30Music (profile `{profile}`, seed "
            f"{seed}): {counts}. The stand-in was generated to match the study's published figures and "
            "statistics of real 30Music sessions, so where a figure here matches the study's, that is "
            "by construction, **not a reproduction** on real data."
        )
    else:
        layout = facts.get("layout", "?")
        what = _LAYOUTS.get(layout, f"a folder in {layout} layout")
        size = ""
        if facts.get("data_bytes") is not None:
            files = facts.get("data_files")
            size = f", {human_bytes(facts['data_bytes'])}" + (
                f" in {int(files):,} files" if files is not None else ""
            )
        name = facts.get("data_name")
        named = f" `{name}`" if name else ""
        title = "Data: " + (
            "HetRec 2011 Last.fm" if layout == "hetrec" else "30Music, user-supplied"
        )
        body = f"This page is about {what}{named}{size}: {counts}." + _budget_sentence(facts)
    return f":::{{admonition}} {title}\n:class: note data-banner\n\n{body}\n:::\n"


def _budget_sentence(facts: Mapping[str, Any]) -> str:
    """For a user's folder: which profile's run budget the chapters use, and why when it was scaled up."""
    run, asked = facts.get("run_profile"), facts.get("profile_asked")
    if not run:
        return ""
    if asked and run != asked:
        return (
            f" At more than {SCALE_USERS:,} users the runs use the `{run}` profile's budget, not "
            f"`{asked}`'s, which is sized for the default stand-in and would take hours here."
        )
    return f" The runs use the `{run}` profile's budget."


def glue_banner(build_dir: str | os.PathLike | None, facts: Mapping[str, Any] | None = None) -> str:
    """Glue the banner (from chapter 01's results unless ``facts`` are given) as ``data_banner``."""
    facts = load_results(build_dir, "01_user_artist_matrix") if facts is None else facts
    text = banner_text(facts)
    try:
        from IPython.display import Markdown
        from myst_nb import glue
    except ImportError:  # pragma: no cover - pinned dependencies
        return text
    glue(BANNER_KEY, Markdown(text), display=False)
    return text
