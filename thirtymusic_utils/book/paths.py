"""Where things live: the project root, the build folder and its artifacts, the results JSON files.

Every notebook reads and writes through these helpers so that the layout is defined once:

``BUILD_DIR/artifacts/<notebook>.json``   headline figures of one notebook (a flat JSON object)
``BUILD_DIR/artifacts/...``               other artifacts (matrix, split, per-user outcomes, checkpoints)
``BUILD_DIR/executed/<notebook>.ipynb``   the papermill-executed notebooks
``BUILD_DIR/data/synthetic-<profile>-seed<seed>``  the generated default dataset
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent
DEFAULT_BUILD_DIR = PROJECT_ROOT / "build"


def build_path(build_dir: str | os.PathLike | None = None) -> Path:
    """The build folder as a Path (``build/`` in the project root when not given)."""
    return Path(build_dir) if build_dir else DEFAULT_BUILD_DIR


def artifacts_dir(build_dir: str | os.PathLike | None = None) -> Path:
    """``BUILD_DIR/artifacts``, created if missing."""
    path = build_path(build_dir) / "artifacts"
    path.mkdir(parents=True, exist_ok=True)
    return path


def synthetic_data_dir(profile: str, seed: int, build_dir: str | os.PathLike | None = None) -> Path:
    """Folder of the generated synthetic dataset for a profile and seed."""
    return build_path(build_dir) / "data" / f"synthetic-{profile}-seed{seed}"


def require_artifact(build_dir: str | os.PathLike | None, name: str, producer: str) -> Path:
    """Path of an artifact an earlier notebook writes; a clear error names that notebook if missing."""
    path = build_path(build_dir) / "artifacts" / name
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist: execute notebooks/{producer}.ipynb first "
            "(make book runs the notebooks in order)"
        )
    return path


def _plain(value: Any) -> Any:
    """A JSON-safe scalar: numpy numbers become Python numbers, NaN becomes None."""
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    raise TypeError(
        f"results must be flat numbers or strings, got {type(value).__name__}: {value!r}"
    )


def save_results(
    build_dir: str | os.PathLike | None, notebook: str, results: dict[str, Any]
) -> Path:
    """Merge ``results`` into ``BUILD_DIR/artifacts/<notebook>.json`` (a flat JSON object)."""
    path = artifacts_dir(build_dir) / f"{notebook}.json"
    data: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    data.update({str(k): _plain(v) for k, v in results.items()})
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    return path


def load_results(build_dir: str | os.PathLike | None, notebook: str) -> dict[str, Any]:
    """Read ``BUILD_DIR/artifacts/<notebook>.json``; a clear error names the notebook to run first."""
    path = require_artifact(build_dir, f"{notebook}.json", notebook)
    return json.loads(path.read_text())
