"""Simulated negative binomial GLMM data for the glmer_nb validation (fixed seeds): validation/data/glmer_nb_*.csv.

Run from the repository root: ``python validation/simulate_glmer_nb.py``. The files are committed so R and
Python read the same rows; rewriting them is harmless (the generator and the seeds are fixed). Counts are
drawn as numpy's ``negative_binomial(θ, θ / (θ + μ))`` (R's ``rnbinom(size = θ, mu = μ)``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

OUT = Path(__file__).parent / "data"


def nb(rng, mu, theta):
    return rng.negative_binomial(theta, theta / (theta + mu))


def intercept(seed=211):
    """(1 | g): 40 groups of 5-20 rows, a covariate x, θ = 2.5, SD(g) = 0.6."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(5, 21, size=40)
    g = np.repeat(np.arange(40), sizes)
    x = rng.normal(size=g.size)
    b = rng.normal(scale=0.6, size=40)
    mu = np.exp(1.0 + 0.4 * x + b[g])
    return pd.DataFrame({"g": [f"g{k:02d}" for k in g], "x": x, "y": nb(rng, mu, 2.5)})


def crossed(seed=212):
    """(1 | a) + (1 | b): 30 x 20 levels, 70 % of the cells, a covariate and a two-level factor, θ = 4."""
    rng = np.random.default_rng(seed)
    a = np.repeat(np.arange(30), 20)
    b = np.tile(np.arange(20), 30)
    keep = rng.random(a.size) < 0.7
    a, b = a[keep], b[keep]
    x = rng.normal(size=a.size)
    cond = rng.integers(0, 2, size=a.size)
    ba, bb = rng.normal(scale=0.5, size=30), rng.normal(scale=0.35, size=20)
    mu = np.exp(0.5 + 0.3 * x - 0.4 * cond + ba[a] + bb[b])
    y = nb(rng, mu, 4.0)
    return pd.DataFrame({"a": [f"a{k:02d}" for k in a], "b": [f"b{k:02d}" for k in b], "x": x, "cond": cond, "y": y})


def slope(seed=213):
    """(1 + x | g): 35 groups of 12 rows, correlated intercept and slope (SDs 0.5, 0.3, r = 0.3), an exposure
    offset (log_exposure), θ = 1.5."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(35), 12)
    x = rng.normal(size=g.size)
    C = np.array([[0.25, 0.3 * 0.5 * 0.3], [0.3 * 0.5 * 0.3, 0.09]])
    re = rng.multivariate_normal([0, 0], C, size=35)
    expo = rng.uniform(0.5, 3.0, size=g.size)
    mu = np.exp(0.8 + 0.5 * x + re[g, 0] + re[g, 1] * x + np.log(expo))
    return pd.DataFrame({"g": [f"g{k:02d}" for k in g], "x": x, "log_exposure": np.log(expo), "y": nb(rng, mu, 1.5)})


def main():
    OUT.mkdir(exist_ok=True)
    for name, fn in (("intercept", intercept), ("crossed", crossed), ("slope", slope)):
        df = fn()
        df.to_csv(OUT / f"glmer_nb_{name}.csv", index=False)
        print(name, df.shape, "mean y", round(float(df["y"].mean()), 3))


if __name__ == "__main__":
    main()
