"""Small helpers the notebooks share: resolve the data folder, record and glue headline figures."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .paths import save_results, synthetic_data_dir


def resolve_data_dir(
    data_dir: str | os.PathLike | None,
    build_dir: str | os.PathLike | None,
    profile: str = "default",
    seed: int = 0,
) -> Path:
    """The folder to read: ``data_dir`` when given, else the synthetic dataset (generated if missing)."""
    if data_dir:
        path = Path(data_dir).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"data_dir {str(path)!r} does not exist")
        return path
    from ..data.synthetic import generate  # imported lazily: only the synthetic default needs it

    path = synthetic_data_dir(profile, seed, build_dir)
    if not (path / "COMPLETE").exists():
        generate(path, profile=profile, seed=seed)
    return path


def record(
    build_dir: str | os.PathLike | None, notebook: str, values: dict[str, Any]
) -> dict[str, Any]:
    """Write ``values`` to the notebook's results JSON and glue each one under its own key.

    Prose cells then quote them with ``{glue:text}`key:.3f``` roles, never as typed numbers.
    """
    save_results(build_dir, notebook, values)
    try:
        from myst_nb import glue
    except ImportError:  # pragma: no cover - myst-nb is a pinned dependency
        return values
    for key, value in values.items():
        glue(key, value.item() if hasattr(value, "item") else value, display=False)
    return values
