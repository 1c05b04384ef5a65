"""Simulate the data of the covariance-structure validation (validation/covstruct_cases.json).

Usage (repository root)::

    python validation/simulate_covstruct.py

Writes ``validation/data/covstruct_crossed.csv``: 40 subjects × 24 items, fully crossed (960 rows), a numeric
``x`` (standard normal), a 3-level factor ``f`` (``a``, ``b``, ``c``; the item's number mod 3, so it varies
within each subject) and ``y`` from ``1 + 0.5 x + b_subj[f] + s_subj x + b_item + e`` with subject effects per
level of f drawn with SDs (1.0, 0.6, 1.4) and a common correlation 0.4 (compound symmetry, heterogeneous
variances), a subject slope of SD 0.3, item intercepts of SD 0.5 and residual SD 1. NumPy's default
generator with seed 20240521: the file is reproducible and committed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

OUT = Path(__file__).resolve().parent / "data" / "covstruct_crossed.csv"


def simulate(seed: int = 20240521) -> pd.DataFrame:
    """The crossed data set described in the module docstring."""
    rng = np.random.default_rng(seed)
    n_subj, n_item = 40, 24
    subj = np.repeat(np.arange(n_subj), n_item)
    item = np.tile(np.arange(n_item), n_subj)
    f = item % 3
    x = rng.standard_normal(subj.size)
    sd = np.array([1.0, 0.6, 1.4])
    R = np.full((3, 3), 0.4) + 0.6 * np.eye(3)
    b_f = rng.multivariate_normal(np.zeros(3), sd[:, None] * R * sd[None, :], size=n_subj)
    slope = 0.3 * rng.standard_normal(n_subj)
    b_item = 0.5 * rng.standard_normal(n_item)
    y = 1.0 + 0.5 * x + b_f[subj, f] + slope[subj] * x + b_item[item] + rng.standard_normal(subj.size)
    return pd.DataFrame(
        {
            "y": np.round(y, 6),
            "x": np.round(x, 6),
            "f": np.array(["a", "b", "c"])[f],
            "subj": [f"s{s:02d}" for s in subj],
            "item": [f"i{i:02d}" for i in item],
        }
    )


if __name__ == "__main__":
    simulate().to_csv(OUT, index=False)
    print(f"wrote {OUT}")
