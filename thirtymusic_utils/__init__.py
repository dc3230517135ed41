"""thirtymusic_utils: the tested logic behind the 30Music artist-recommendation book."""

from .matrix import UserArtistMatrix, build_matrix, load_matrix, save_matrix
from .paths import artifacts_dir, load_results, save_results
from .readers import (
    DataFormatError,
    PlaysScan,
    ReadReport,
    detect_layout,
    read_artists,
    read_plays,
    scan_plays,
)

__all__ = [
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
