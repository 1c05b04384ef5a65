"""Simulated GLMM validation data (fixed seeds): validation/data/glmm_sim_*.csv.

Run from the repository root: ``python validation/simulate_glmm.py``. Each design is documented below;
rewriting the files of earlier designs is harmless (the generators and seeds are fixed);
the files are committed so R and Python read the same rows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

OUT = Path(__file__).parent / "data"


def crossed(seed, n_subj, n_item, sd_s, sd_i, beta, family, slope_sd=0.0):
    rng = np.random.default_rng(seed)
    s = np.repeat(np.arange(n_subj), n_item)
    i = np.tile(np.arange(n_item), n_subj)
    keep = rng.random(s.size) < 0.85  # unbalanced
    s, i = s[keep], i[keep]
    x = rng.normal(size=s.size)
    cond = rng.integers(0, 2, size=s.size)
    bs = rng.normal(scale=sd_s, size=n_subj)
    bi = rng.normal(scale=sd_i, size=n_item)
    slope = rng.normal(scale=slope_sd, size=n_subj)
    eta = beta[0] + beta[1] * x + beta[2] * cond + bs[s] + bi[i] + slope[s] * x
    df = pd.DataFrame({"subj": [f"s{k:03d}" for k in s], "item": [f"i{k:03d}" for k in i], "x": x, "cond": cond})
    if family == "binomial":
        df["y"] = (rng.random(s.size) < 1 / (1 + np.exp(-eta))).astype(int)
    else:
        expo = rng.uniform(0.5, 4.0, size=s.size)
        df["exposure"] = expo
        df["log_exposure"] = np.log(expo)
        df["y"] = rng.poisson(np.exp(eta + np.log(expo)))
        df["y0"] = rng.poisson(np.exp(eta))  # without exposure
    return df


def binomial_trials(seed, n_grp=40, per=8):
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(n_grp), per)
    x = rng.normal(size=g.size)
    n = rng.integers(1, 25, size=g.size)
    eta = -0.5 + 0.8 * x + rng.normal(scale=0.9, size=n_grp)[g]
    k = rng.binomial(n, 1 / (1 + np.exp(-eta)))
    return pd.DataFrame({"g": [f"g{k:02d}" for k in g], "x": x, "k": k, "n": n, "prop": k / n})


def singular(seed):
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(10), 30)
    x = rng.normal(size=g.size)
    eta = 0.2 + 0.5 * x  # no group effect: the ML variance is at (or next to) zero
    y = (rng.random(g.size) < 1 / (1 + np.exp(-eta))).astype(int)
    return pd.DataFrame({"g": [f"g{k:02d}" for k in g], "x": x, "y": y})


def positive(seed, n_grp, per, sd_g, beta, family, link, shape=4.0, n_item=0, sd_i=0.0, slope_sd=0.0):
    """Gamma / inverse Gaussian responses (issue #14's dispersion families).

    ``n_grp`` groups of ``per`` rows (85 % kept, unbalanced), a covariate ``x`` and a 0/1 ``cond``;
    with ``n_item > 0`` each row also gets a crossed ``item`` (random intercepts ``sd_i``). The linear
    predictor is on the ``link`` scale; Gamma draws have shape ``shape`` (dispersion 1/shape),
    inverse Gaussian draws (numpy's Wald) have λ = ``shape`` (variance μ³/λ).
    """
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(n_grp), per)
    keep = rng.random(g.size) < 0.85
    g = g[keep]
    n = g.size
    x = rng.normal(size=n)
    cond = rng.integers(0, 2, size=n)
    bg = rng.normal(scale=sd_g, size=n_grp)
    slope = rng.normal(scale=slope_sd, size=n_grp)
    eta = beta[0] + beta[1] * x + beta[2] * cond + bg[g] + slope[g] * x
    df = pd.DataFrame({"g": [f"g{k:03d}" for k in g], "x": x, "cond": cond})
    if n_item:
        item = rng.integers(0, n_item, size=n)
        eta = eta + rng.normal(scale=sd_i, size=n_item)[item]
        df["item"] = [f"i{k:03d}" for k in item]
    inverse_links = {"log": np.exp, "inverse": lambda e: 1 / e, "identity": lambda e: e}
    inverse_links["1/mu^2"] = lambda e: 1 / np.sqrt(e)
    mu = inverse_links[link](eta)
    assert np.all(mu > 0), "simulated means must be positive"
    if family == "Gamma":
        df["y"] = rng.gamma(shape, mu / shape)
    else:
        df["y"] = rng.wald(mu, shape)
    return df


def main():
    OUT.mkdir(exist_ok=True)
    crossed(101, 60, 40, 0.8, 0.5, (-0.3, 0.6, 0.4), "binomial").to_csv(OUT / "glmm_sim_binary.csv", index=False)
    crossed(202, 50, 30, 0.5, 0.3, (0.4, 0.3, -0.2), "poisson").to_csv(OUT / "glmm_sim_poisson.csv", index=False)
    crossed(303, 40, 20, 0.7, 0.4, (0.1, 0.5, 0.3), "binomial", slope_sd=0.4).to_csv(
        OUT / "glmm_sim_slopes.csv", index=False
    )
    binomial_trials(404).to_csv(OUT / "glmm_sim_trials.csv", index=False)
    singular(11).to_csv(OUT / "glmm_sim_singular.csv", index=False)
    # families with a dispersion (Gamma, inverse Gaussian)
    gamma_log = positive(505, 30, 12, 0.5, (0.8, 0.4, -0.3), "Gamma", "log", shape=3.0)
    gamma_log["w"] = 1.0 + gamma_log["cond"]  # prior weights for sim_gamma_weights (no draws: y unchanged)
    gamma_log.to_csv(OUT / "glmm_sim_gamma_log.csv", index=False)
    positive(606, 25, 10, 0.05, (0.5, 0.08, 0.15), "Gamma", "inverse", shape=5.0).to_csv(
        OUT / "glmm_sim_gamma_inverse.csv", index=False
    )
    positive(707, 40, 15, 0.4, (1.0, 0.3, 0.2), "Gamma", "log", shape=2.0, n_item=25, sd_i=0.3).to_csv(
        OUT / "glmm_sim_gamma_crossed.csv", index=False
    )
    positive(808, 25, 12, 0.08, (0.6, 0.1, 0.15), "inverse.gaussian", "1/mu^2", shape=20.0).to_csv(
        OUT / "glmm_sim_invgauss.csv", index=False
    )
    positive(909, 30, 10, 0.4, (0.3, 0.3, 0.2), "inverse.gaussian", "log", shape=20.0, slope_sd=0.2).to_csv(
        OUT / "glmm_sim_invgauss_log.csv", index=False
    )


if __name__ == "__main__":
    main()
