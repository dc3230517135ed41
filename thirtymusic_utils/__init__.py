"""thirtymusic_utils: the tested logic behind the 30Music artist-recommendation book."""

import os as _os

# torch's OpenMP threads (and implicit's) wait for work in a spin loop, then sleep. libgomp's default
# spin is long: on cores shared with other processes a spinning thread takes the time slice of the
# thread that has the work (a two-thread epoch ran four times slower than a one-thread one).
# Passive waiting (no spin) costs a wake-up per parallel region instead, which made the same epoch
# three times slower on an idle machine (194 against 64 ms a step). A short spin (10,000 turns, tens
# of microseconds) was the fastest on an idle machine; on a loaded one, configure_threads takes one
# thread. Only set when the caller set neither; read when torch loads, so set before it.
if "OMP_WAIT_POLICY" not in _os.environ:
    _os.environ.setdefault("GOMP_SPINCOUNT", "10000")

from .book.paths import artifacts_dir, load_results, save_results
from .data.matrix import UserArtistMatrix, build_matrix, load_matrix, save_matrix
from .data.readers import (
    DataFormatError,
    PlaysScan,
    ReadReport,
    detect_layout,
    read_artists,
    read_plays,
    scan_plays,
)
from .evaluation.protocol import Split, holdout_split, load_split, save_split

__all__ = [
    "Split",
    "holdout_split",
    "load_split",
    "save_split",
    "DataFormatError",
    "PlaysScan",
    "ReadReport",
    "UserArtistMatrix",
    "artifacts_dir",
    "build_matrix",
    "detect_layout",
    "load_matrix",
    "load_results",
    "read_artists",
    "read_plays",
    "save_matrix",
    "save_results",
    "scan_plays",
]
__version__ = "0.1.0"
