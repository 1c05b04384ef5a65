"""Simulate the data of the covariance-structure validation (validation/covstruct_cases.json).

Usage (repository root)::

    python validation/simulate_covstruct.py

Writes ``validation/data/covstruct_crossed.csv``: 40 subjects × 24 items, fully crossed (960 rows), a numeric
``x`` (standard normal), a 3-level factor ``f`` (``a``, ``b``, ``c``; the item's number mod 3, so it varies
within each subject) and ``y`` from ``1 + 0.5 x + b_subj[f] + s_subj x + b_item + e`` with subject effects per
level of f drawn with SDs (1.0, 0.6, 1.4) and a common correlation 0.4 (compound symmetry, heterogeneous
variances), a subject slope of SD 0.3, item intercepts of SD 0.5 and residual SD 1. NumPy's default
generator with seed 20240521: the file is reproducible and committed.

Also writes ``validation/data/covstruct_ar1.csv`` for the ``ar1``/``toep`` cases: 50 subjects × 5 times
(factor ``t``, levels ``t1`` … ``t5``) × 3 replicates (750 rows; the replicates make the subject-by-time effects
separable from the residual), a numeric ``x``, and subject-by-time effects ``b_subj[t]`` from a Toeplitz
covariance with SDs (1.0, 0.8, 1.2, 0.9, 1.1) and AR(1) correlations 0.6^|i−j|; ``y = 1 + 0.5 x + b + e``
(residual SD 1) and a Poisson count ``count ~ Poisson(exp(0.3 + 0.4 x + 0.6 b))`` for the glmer case. Seed
20240522.

Also writes ``validation/data/covstruct_glmm.csv`` for the glmer cases: 60 subjects × 18 items, fully crossed
(1080 rows), a numeric ``x``, a 3-level factor ``f`` (the item's number mod 3), subject effects per level of f
with SDs (0.8, 0.5, 1.1) and a common correlation 0.5, item intercepts of SD 0.4; a binary ``yb`` from
``logit P = −0.3 + 0.6 x + b_subj[f] + b_item`` and a count ``count ~ Poisson(exp(0.2 + 0.4 x + d_subj[f] +
b_item))`` with independent subject effects ``d`` of SDs (0.7, 0.3, 0.5) (a diagonal structure). Seed 20240523.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

OUT = Path(__file__).resolve().parent / "data" / "covstruct_crossed.csv"
OUT_AR1 = Path(__file__).resolve().parent / "data" / "covstruct_ar1.csv"
OUT_GLMM = Path(__file__).resolve().parent / "data" / "covstruct_glmm.csv"


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


def simulate_ar1(seed: int = 20240522) -> pd.DataFrame:
    """The repeated-measures data set of the ar1/toep cases described in the module docstring."""
    rng = np.random.default_rng(seed)
    n_subj, n_time, n_rep = 50, 5, 3
    subj = np.repeat(np.arange(n_subj), n_time * n_rep)
    time = np.tile(np.repeat(np.arange(n_time), n_rep), n_subj)
    x = rng.standard_normal(subj.size)
    sd = np.array([1.0, 0.8, 1.2, 0.9, 1.1])
    lag = np.abs(np.subtract.outer(np.arange(n_time), np.arange(n_time)))
    b = rng.multivariate_normal(np.zeros(n_time), sd[:, None] * 0.6**lag * sd[None, :], size=n_subj)
    eff = b[subj, time]
    y = 1.0 + 0.5 * x + eff + rng.standard_normal(subj.size)
    count = rng.poisson(np.exp(0.3 + 0.4 * x + 0.6 * eff))
    return pd.DataFrame(
        {
            "y": np.round(y, 6),
            "count": count,
            "x": np.round(x, 6),
            "t": [f"t{k + 1}" for k in time],
            "subj": [f"s{s:02d}" for s in subj],
        }
    )


def simulate_glmm(seed: int = 20240523) -> pd.DataFrame:
    """The crossed binary and count data of the glmer cases described in the module docstring."""
    rng = np.random.default_rng(seed)
    n_subj, n_item = 60, 18
    subj = np.repeat(np.arange(n_subj), n_item)
    item = np.tile(np.arange(n_item), n_subj)
    f = item % 3
    x = rng.standard_normal(subj.size)
    sd = np.array([0.8, 0.5, 1.1])
    R = np.full((3, 3), 0.5) + 0.5 * np.eye(3)
    b_f = rng.multivariate_normal(np.zeros(3), sd[:, None] * R * sd[None, :], size=n_subj)
    b_item = 0.4 * rng.standard_normal(n_item)
    eta = -0.3 + 0.6 * x + b_f[subj, f] + b_item[item]
    yb = (rng.random(subj.size) < 1.0 / (1.0 + np.exp(-eta))).astype(int)
    d_f = rng.standard_normal((n_subj, 3)) * np.array([0.7, 0.3, 0.5])
    count = rng.poisson(np.exp(0.2 + 0.4 * x + d_f[subj, f] + b_item[item]))
    return pd.DataFrame(
        {
            "yb": yb,
            "count": count,
            "x": np.round(x, 6),
            "f": np.array(["a", "b", "c"])[f],
            "subj": [f"s{s:02d}" for s in subj],
            "item": [f"i{i:02d}" for i in item],
        }
    )


if __name__ == "__main__":
    simulate().to_csv(OUT, index=False)
    print(f"wrote {OUT}")
    simulate_ar1().to_csv(OUT_AR1, index=False)
    print(f"wrote {OUT_AR1}")
    simulate_glmm().to_csv(OUT_GLMM, index=False)
    print(f"wrote {OUT_GLMM}")
