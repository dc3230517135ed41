"""thirtymusic_utils: the tested logic behind the 30Music artist-recommendation book."""

import os as _os

# torch's OpenMP threads spin while they wait for work by default; on cores shared with other
# processes a spinning thread takes the time slice of the thread that has the work, and a two-thread
# training epoch ran many times slower than with one thread. Passive waiting (unless the caller set
# a policy) costs a wake-up per parallel region instead. Read when torch loads, so set before.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

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
