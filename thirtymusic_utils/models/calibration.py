"""The synthetic generator's calibration check: five recommenders under the study's protocol.

``calibration_hr`` runs, on one matrix, the methods whose HR@10 the real 30Music excerpt reports
(``data.synthetic.REAL_FACTS``): most popular, the study's user-kNN as its code ran (MinMax, k = 30,
unweighted sum of raw counts; the package's tie order), binary cosine user-kNN with k = 100 summing
the neighbours' binary rows, EASE (lambda = 50) and implicit's ALS with its default settings.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..data.synthetic import REAL_FACTS
from ..evaluation.metrics import hit_ranks, hr_at_k
from ..evaluation.protocol import holdout_split
from . import knn as cf
from .ease import EASE
from .mf import IALS
from .user_knn import UserKNN

__all__ = ["CALIBRATION_KEYS", "calibration_hr", "calibration_table", "ranking_sentence"]

#: method -> key of ``REAL_FACTS``
CALIBRATION_KEYS = {
    "most popular": "hr_at_10_popularity",
    "user-kNN as the study ran it": "hr_at_10_seed",
    "binary user-kNN, k = 100": "hr_at_10_binary_cosine_k100",
    "EASE, lambda = 50": "hr_at_10_ease",
    "iALS (implicit defaults)": "hr_at_10_als",
}


def calibration_hr(
    counts: sp.csr_matrix, seed: int = 0, ease_items: int = 8000
) -> dict[str, float]:
    """HR@10 of the five calibration methods on the study's hold-out split of ``counts``."""
    split = holdout_split(counts, seed)
    tr, rows, hid = split.train, split.test_rows, split.hidden_cols

    def hr(top: np.ndarray) -> float:
        return hr_at_k(hit_ranks(top, hid), 10)

    idx, sim = cf.user_neighbours(tr, 30, weighting="minmax", rows=rows)
    return {
        "most popular": hr(cf.popularity_top_n(tr, rows)),
        "user-kNN as the study ran it": hr(cf.cf_top_n(tr, rows, idx, sim, "seed_as_run")),
        "binary user-kNN, k = 100": hr(UserKNN(100, "binary", 0.0, "binary").top_n(tr, rows)),
        "EASE, lambda = 50": hr(EASE(50.0, ease_items).top_n(tr, rows)),
        "iALS (implicit defaults)": hr(IALS(100, 0.01, 1.0, 15, "counts", seed).top_n(tr, rows)),
    }


def calibration_table(measured: dict[str, float]) -> pd.DataFrame:
    """Measured HR@10 beside the real excerpt's figure, their ratio and whether it is within ±30%."""
    rows = []
    for method, key in CALIBRATION_KEYS.items():
        real = REAL_FACTS[key]
        ratio = measured[method] / real
        rows.append(
            {
                "method": method,
                "this data": measured[method],
                "real excerpt": real,
                "ratio": ratio,
                "within ±30%": bool(0.7 <= ratio <= 1.3),
            }
        )
    return pd.DataFrame(rows).set_index("method")


def ranking_sentence(table: pd.DataFrame) -> str:
    """Whether the methods of :func:`calibration_table` rank on this data as on the real excerpt."""
    here = list(table["this data"].sort_values(ascending=False).index)
    real = list(table["real excerpt"].sort_values(ascending=False).index)
    if here == real:
        return f"The five methods rank here as on the real excerpt: {' > '.join(here)}."
    return (
        f"The five methods rank here as {' > '.join(here)}, unlike the real excerpt: "
        f"{' > '.join(real)}."
    )
