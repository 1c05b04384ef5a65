"""Simulate the data of the residual-structure validation (validation/residual_cases.json).

Usage (repository root)::

    python validation/simulate_residual.py

Writes ``validation/data/residual_nested.csv``: 30 subjects observed at times 1 … 8 with about 12 % of the
rows left out at random (so most subjects have gaps in time), a numeric ``x`` (standard normal), a 3-level
factor ``f`` (``a``, ``b``, ``c``, drawn per row) and ``y = 1 + 0.5 x + b_subj + e`` with subject intercepts
of SD 1 and residuals AR(1) within subject over time (ρ = 0.5 per unit of time, so ρ^|Δt| across a gap) with
SDs (1.0, 1.8, 0.6) by level of f. Seed 20240601.

Also writes ``validation/data/residual_crossed.csv``: 24 subjects × 12 items, fully crossed, each subject
seeing the items in its own random order at times 1 … 12 (``t``; ``tf`` the same as a factor ``t01`` … ``t12``,
for glmmTMB's ar1 term), ``y = 1 + 0.5 x + b_subj + b_item + e`` with SDs 0.8, 0.5 and AR(1) residuals within
subject (ρ = 0.6, SD 1). Seed 20240602.

And ``validation/data/residual_car1.csv`` (corCAR1): 40 subjects with 4 … 9 visits at irregular real times
``t`` (the first uniform on [0, 1), then gaps exponential with mean 0.6, rounded to 3 decimals: the gaps are
almost all distinct), ``tq`` the same visits on a quarter grid (gaps 0.25 … 1.5, few distinct), ``x``, a
3-level factor ``f`` per row and ``y = 1 + 0.5 x + b_subj + e`` with subject intercepts of SD 1 and residuals
continuous-time AR(1) within subject over ``t`` (φ = 0.4 per unit of time) with SDs (1.0, 1.8, 0.6) by level
of f; ``y2 = 1 + 0.5 x + b_subj + e`` the same without the SDs by level (residual SD 1). Seed 20240603. All
three files are reproducible and committed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

DATA = Path(__file__).resolve().parent / "data"


def ar1_series(rng, times: np.ndarray, rho: float) -> np.ndarray:
    """A stationary AR(1) series of unit variance observed at the (sorted) ``times``: correlation ``ρ^|Δt|``,
    for integer times or, with ``ρ ≥ 0``, real ones (the continuous-time AR(1))."""
    e = np.empty(times.size)
    e[0] = rng.standard_normal()
    for j in range(1, times.size):
        a = rho ** (times[j] - times[j - 1])
        e[j] = a * e[j - 1] + np.sqrt(1 - a * a) * rng.standard_normal()
    return e


def simulate_nested(seed: int = 20240601) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(30):
        times = np.arange(1, 9)
        times = times[rng.random(times.size) > 0.12]
        e = ar1_series(rng, times, 0.5)
        b = rng.standard_normal()
        for t, ei in zip(times, e):
            f = rng.integers(3)
            x = rng.standard_normal()
            y = 1.0 + 0.5 * x + b + ei * (1.0, 1.8, 0.6)[f]
            rows.append((round(y, 6), round(x, 6), "abc"[f], f"s{s:02d}", int(t)))
    return pd.DataFrame(rows, columns=["y", "x", "f", "subj", "t"])


def simulate_crossed(seed: int = 20240602) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n_subj, n_item = 24, 12
    b_subj = 0.8 * rng.standard_normal(n_subj)
    b_item = 0.5 * rng.standard_normal(n_item)
    rows = []
    for s in range(n_subj):
        order = rng.permutation(n_item)
        times = np.arange(1, n_item + 1)
        e = ar1_series(rng, times, 0.6)
        for t, i, ei in zip(times, order, e):
            x = rng.standard_normal()
            y = 1.0 + 0.5 * x + b_subj[s] + b_item[i] + ei
            rows.append((round(y, 6), round(x, 6), f"s{s:02d}", f"i{i:02d}", int(t), f"t{t:02d}"))
    return pd.DataFrame(rows, columns=["y", "x", "subj", "item", "t", "tf"])


def simulate_car1(seed: int = 20240603) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(40):
        m = int(rng.integers(4, 10))
        t = np.round(rng.random() + np.concatenate([[0.0], np.cumsum(rng.exponential(0.6, m - 1) + 0.01)]), 3)
        tq = np.cumsum(rng.choice([0.25, 0.5, 0.75, 1.0, 1.5], m))
        e = ar1_series(rng, t, 0.4)
        b = rng.standard_normal()
        for ti, qi, ei in zip(t, tq, e):
            f = rng.integers(3)
            x = rng.standard_normal()
            y = 1.0 + 0.5 * x + b + ei * (1.0, 1.8, 0.6)[f]
            y2 = 1.0 + 0.5 * x + b + ei
            rows.append((round(y, 6), round(y2, 6), round(x, 6), "abc"[f], f"s{s:02d}", float(ti), float(qi)))
    return pd.DataFrame(rows, columns=["y", "y2", "x", "f", "subj", "t", "tq"])


if __name__ == "__main__":
    DATA.mkdir(exist_ok=True)
    simulate_nested().to_csv(DATA / "residual_nested.csv", index=False)
    simulate_crossed().to_csv(DATA / "residual_crossed.csv", index=False)
    simulate_car1().to_csv(DATA / "residual_car1.csv", index=False)
