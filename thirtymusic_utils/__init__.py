"""thirtymusic_utils: the tested logic behind the 30Music artist-recommendation book."""

from .paths import artifacts_dir, load_results, save_results

__all__ = ["artifacts_dir", "load_results", "save_results"]
__version__ = "0.1.0"
