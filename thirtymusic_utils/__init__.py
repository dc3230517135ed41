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
# MKL (torch's CPU BLAS) picks its GEMM kernels by the thread count: a product with a few rows (a
# batch's last block) summed in another order on 2 threads than on 1, and training runs that differed
# by one rounding drifted apart (default HR@10 0.158 on 2 threads, 0.163 on 1, same seed). Strict
# conditional numerical reproducibility makes ?gemm's result independent of the thread count
# (``tests/test_trainer.py``), at no measurable cost: a full epoch 45.4 s with it, 50.8 s without, in
# the noise of repeated runs. Read at MKL's first call, so set before torch runs one.
_os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")

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
