"""Shared fixtures: the real HetRec folder (skipped when absent), tiny synthetic data, notebook runs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HETREC_DIR = ROOT.parent / "shared" / "data" / "hetrec2011-lastfm-2k"
NOTEBOOKS = ROOT / "notebooks"
KERNEL = os.environ.get("THIRTYMUSIC_KERNEL", "thirtymusic")


@pytest.fixture(scope="session")
def hetrec_dir() -> Path:
    """The real HetRec 2011 Last.fm 2K folder beside the checkout; the test is skipped without it."""
    if not (HETREC_DIR / "user_artists.dat").exists():
        pytest.skip(f"real data not available at {HETREC_DIR}")
    return HETREC_DIR


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory) -> Path:
    """A tiny synthetic 30Music folder (both forms), generated once per test session."""
    from thirtymusic_utils.data.synthetic import generate

    out = tmp_path_factory.mktemp("data") / "synthetic-tiny-seed0"
    generate(out, profile="tiny", seed=0)
    return out


class TinyBook:
    """Executes the notebooks in order on the tiny profile, once each, into one build folder."""

    order = [
        "01_user_artist_matrix",
        "02_collaborative_filtering",
        "03_baselines",
        "04_embeddings",
        "05_training",
        "06_t_test",
        "07_comparison",
        "08_conclusions",
        "intro",
        "09_reproducibility",
    ]

    def __init__(self, build_dir: Path, data_dir: Path) -> None:
        self.build_dir = build_dir
        self.data_dir = data_dir
        self.done: dict[str, Path] = {}

    def run(self, name: str) -> dict:
        """Execute ``name`` (and every notebook before it) and return its results JSON."""
        import papermill as pm

        for step in self.order[: self.order.index(name) + 1]:
            if step in self.done:
                continue
            out = self.build_dir / "executed" / f"{step}.ipynb"
            out.parent.mkdir(parents=True, exist_ok=True)
            pm.execute_notebook(
                str(NOTEBOOKS / f"{step}.ipynb"),
                str(out),
                parameters={
                    "data_dir": str(self.data_dir),
                    "build_dir": str(self.build_dir),
                    "seed": 0,
                    "profile": "tiny",
                },
                kernel_name=KERNEL,
                cwd=str(NOTEBOOKS),
                progress_bar=False,
            )
            self.done[step] = out
        return json.loads((self.build_dir / "artifacts" / f"{name}.json").read_text())


@pytest.fixture(scope="session")
def tiny_book(tmp_path_factory, tiny_data_dir) -> TinyBook:
    """Run notebooks on the tiny profile: ``tiny_book.run("02_collaborative_filtering")``."""
    return TinyBook(tmp_path_factory.mktemp("build"), tiny_data_dir)
