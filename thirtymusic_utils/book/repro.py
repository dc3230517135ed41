"""What a reader needs to reproduce a build: versions, machine, data fingerprint, chapter run times."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import resource
from importlib import metadata
from pathlib import Path

import pandas as pd

from .paths import build_path

PACKAGES = (
    "numpy", "scipy", "pandas", "matplotlib", "torch", "papermill", "jupyter-book", "myst-nb",
    "jupyterlab", "ipykernel", "thirtymusic-utils",
)  # fmt: skip
# files up to 64 MiB are hashed whole; larger ones by size, head and tail
WHOLE_FILE_LIMIT = 64 * 2**20
EDGE = 2**20


def package_versions(packages: tuple[str, ...] = PACKAGES) -> pd.DataFrame:
    """Installed version of each package (``not installed`` when absent)."""
    rows = []
    for name in packages:
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            version = "not installed"
        rows.append({"package": name, "version": version})
    return pd.DataFrame(rows)


def machine_info() -> dict[str, str | int]:
    """Python, OS, processor and core count of the machine that ran the build."""
    import torch

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count() or 0,
        "torch_device": "cuda" if torch.cuda.is_available() else "cpu",
    }


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    size = path.stat().st_size
    h.update(str(size).encode())
    with path.open("rb") as f:
        if size <= WHOLE_FILE_LIMIT:
            for block in iter(lambda: f.read(EDGE), b""):
                h.update(block)
        else:
            h.update(f.read(EDGE))
            f.seek(size - EDGE)
            h.update(f.read(EDGE))
    return h.hexdigest()


def data_files(data_dir: str | os.PathLike) -> list[Path]:
    """Every file under a data folder, sorted, following symbolic links to files and folders (a
    30Music copy is often linked in from a larger disk); a link that points nowhere is left out, and a
    folder reached twice through links (a link to a parent) is walked once."""
    root = Path(data_dir)
    found, seen = [], set()
    for folder, subfolders, names in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            subfolders.clear()
            continue
        seen.add(real)
        found.extend(p for p in (Path(folder) / n for n in names) if p.is_file())
    return sorted(found)


def data_fingerprint(data_dir: str | os.PathLike) -> tuple[str, pd.DataFrame]:
    """A SHA-256 fingerprint of a data folder and the per-file digests behind it.

    Files up to 64 MiB are hashed whole; larger ones (30Music's sessions file is several GB) by their size
    and their first and last MiB, which tells copies apart in practice without reading gigabytes.
    """
    root = Path(data_dir)
    rows = []
    for path in data_files(root):
        rel = path.relative_to(root).as_posix()
        rows.append({"file": rel, "bytes": path.stat().st_size, "sha256": _file_digest(path)})
    total = hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()
    return total, pd.DataFrame(rows, columns=["file", "bytes", "sha256"])


def notebook_durations(build_dir: str | os.PathLike | None) -> pd.DataFrame:
    """Seconds each executed notebook took, from the metadata papermill records."""
    rows = []
    for path in sorted((build_path(build_dir) / "executed").glob("*.ipynb")):
        meta = json.loads(path.read_text()).get("metadata", {}).get("papermill", {})
        rows.append(
            {"notebook": path.stem, "seconds": meta.get("duration"), "end": meta.get("end_time")}
        )
    return pd.DataFrame(rows, columns=["notebook", "seconds", "end"])


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB (``resource.getrusage``)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
