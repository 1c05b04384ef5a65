"""Multiplicity adjustments of t/z tests, as emmeans 1.8's ``summary(adjust=)`` applies them to a family of
contrasts (``.adj.p.value``): Tukey's studentized range, Scheffé, Šidák, Bonferroni, Holm, Benjamini–Hochberg
(``"fdr"``), emmeans' Dunnett approximation (``"dunnettx"``), the multivariate t (``"mvt"``) and none.

Every function works on one family (one ``by`` group) at a time; the caller loops over the groups.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from ..errors import ModelSpecError

__all__ = ["ADJUST_METHODS", "adjusted_p_values", "normalize_adjust"]

ADJUST_METHODS = (
    "tukey",
    "scheffe",
    "sidak",
    "bonferroni",
    "holm",
    "hochberg",
    "fdr",
    "BH",
    "BY",
    "dunnettx",
    "mvt",
    "none",
)
P_ADJUST_METHODS = ("holm", "hochberg", "bonferroni", "BH", "BY", "fdr", "none")  # R's p.adjust, as emmeans
MVT_DRAWS = 400_000  # Monte-Carlo draws of the multivariate t; standard error of a p-value <= 0.0008
MVT_SEED = 20230217


def normalize_adjust(adjust) -> str:
    """emmeans' name of an adjustment (``"BH"`` = ``"fdr"``); a clear error for anything else."""
    if not isinstance(adjust, str):
        raise ModelSpecError(f"adjust={adjust!r} must be a string, one of {ADJUST_METHODS}.")
    key = adjust.strip().lower()
    if key in ("bh", "by"):
        return key.upper()
    for name in ADJUST_METHODS:
        if name.lower() == key:
            return name
    raise ModelSpecError(f"adjust={adjust!r} is not known; use one of {ADJUST_METHODS}.")


def p_adjust(p: np.ndarray, method: str) -> np.ndarray:
    """R's ``p.adjust(p, method)`` for one family (``n = length(p)``)."""
    p = np.asarray(p, dtype=float)
    n = p.size
    if method == "none" or n <= 1:
        return p.copy()
    if method == "bonferroni":
        return np.minimum(1.0, n * p)
    if method == "holm":
        o = np.argsort(p, kind="stable")
        adj = np.minimum(1.0, np.maximum.accumulate((n - np.arange(n)) * p[o]))
        out = np.empty(n)
        out[o] = adj
        return out
    if method in ("hochberg", "BH", "fdr", "BY"):
        o = np.argsort(p, kind="stable")[::-1]  # decreasing
        i = np.arange(n, 0, -1)
        if method == "hochberg":
            adj = np.minimum(1.0, np.minimum.accumulate((n - i + 1) * p[o]))
        else:
            q = np.sum(1.0 / np.arange(1, n + 1)) if method == "BY" else 1.0
            adj = np.minimum(1.0, np.minimum.accumulate(q * n / i * p[o]))
        out = np.empty(n)
        out[o] = adj
        return out
    raise AssertionError(method)


def _zapsmall(x: np.ndarray, digits: int = 7) -> np.ndarray:
    """R's ``zapsmall``, which emmeans applies to Tukey's df: rounded to 7 significant digits of the largest,
    to whole numbers when the family has a non-estimable (NA, then infinite) df."""
    mx = np.max(np.where(np.isnan(x), np.inf, np.abs(x))) if x.size else 0.0
    if not mx > 0:
        return x
    places = 0 if np.isinf(mx) else max(0, digits - int(np.ceil(np.log10(mx))))
    return np.where(np.isfinite(x), np.round(x, places), x)


def _ptukey_upper(q: np.ndarray, nmeans: float, df: np.ndarray) -> np.ndarray:
    df = _zapsmall(df)
    return np.array([stats.studentized_range.sf(qi, nmeans, di) for qi, di in zip(q, df)])


def _pdunnx(x: np.ndarray, k: float, df: np.ndarray) -> np.ndarray:
    """emmeans' ``.pdunnx``: Dunnett's P(max |t| < x) for k comparisons with a control, approximated by a
    weighted mean of the Tukey (with (1 + √(1+8k))/2 means) and Šidák probabilities."""
    twt = (k - 1) / k
    nmeans = (1 + np.sqrt(1 + 8 * k)) / 2
    tukey = np.array([stats.studentized_range.cdf(np.sqrt(2) * xi, nmeans, di) for xi, di in zip(x, df)])
    sidak = np.where(np.isinf(df), stats.chi2.cdf(x**2, 1), stats.f.cdf(x**2, 1, np.where(np.isinf(df), 1.0, df))) ** k
    return twt * tukey + (1 - twt) * sidak


def _mvt_df(df: float) -> float:
    """emmeans' ``.fix.df`` then mvtnorm's integer df (0 = normal)."""
    if df > 0:
        df = max(1.0, df)
    if np.isinf(df) or df > 9999:
        return np.inf
    return float(np.floor(df + 0.25))


def _pmvt_two_sided(abs_t: np.ndarray, df: np.ndarray, corr: np.ndarray) -> np.ndarray:
    """1 − P(max_i |T_i| < |t|) for T multivariate t with correlation ``corr`` (emmeans' ``.my.pmvt`` through
    mvtnorm's ``pmvt``). mvtnorm integrates by randomised quasi-Monte Carlo (abseps 1e-3); here plain Monte
    Carlo with a fixed seed, which also handles the singular correlations of pairwise differences."""
    evals, evecs = np.linalg.eigh(corr)
    root = evecs * np.sqrt(np.clip(evals, 0.0, None))
    rng = np.random.default_rng(MVT_SEED)
    z = rng.standard_normal((MVT_DRAWS, corr.shape[0])) @ root.T
    zmax = np.max(np.abs(z), axis=1)
    out = np.empty(abs_t.size)
    cache: dict[float, np.ndarray] = {}
    for i, (t, d) in enumerate(zip(abs_t, df)):
        d = _mvt_df(d)
        if d not in cache:
            if np.isinf(d):
                cache[d] = zmax
            else:
                scale = np.sqrt(np.random.default_rng(MVT_SEED + 1).chisquare(d, MVT_DRAWS) / d)
                cache[d] = zmax / scale
        out[i] = float(np.mean(cache[d] >= t))
    return out


def adjusted_p_values(t, df, adjust: str, fam_size: int, est_type: str, corr=None, scheffe_rank=None):
    """Adjusted two-sided p-values of one family of t (or z, ``df = inf``) ratios.

    Parameters
    ----------
    t, df : array-like
        The ratios and their degrees of freedom.
    adjust : str
        A name from :data:`ADJUST_METHODS`.
    fam_size : int
        emmeans' family size: the number of means compared (Tukey's number of means).
    est_type : {"pairs", "contrast", "prediction"}
        Tukey's method is only for one set of pairwise comparisons; emmeans falls back to Šidák otherwise.
    corr : ndarray, optional
        Correlation matrix of the estimates (``"mvt"``).
    scheffe_rank : int, optional
        Rank of the family's linear functions (``"scheffe"``).

    Returns
    -------
    (ndarray, str)
        The p-values and the adjustment actually used.
    """
    t = np.asarray(t, dtype=float)
    df = np.asarray(df, dtype=float)
    n = t.size
    if n == 1 and adjust != "scheffe":
        adjust = "none"
    if adjust == "tukey" and est_type != "pairs":
        adjust = "sidak"
    abs_t = np.abs(t)
    unadj = 2.0 * stats.t.sf(abs_t, df)
    if adjust in P_ADJUST_METHODS:
        return p_adjust(unadj, "BH" if adjust == "fdr" else adjust), adjust
    if adjust == "sidak":
        return 1.0 - (1.0 - unadj) ** n, adjust
    if adjust == "tukey":
        return _ptukey_upper(np.sqrt(2) * abs_t, fam_size, df), adjust
    if adjust == "scheffe":
        r = int(scheffe_rank)
        finite = np.where(np.isinf(df), 1.0, df)
        return np.where(np.isinf(df), stats.chi2.sf(t**2, r), stats.f.sf(t**2 / r, r, finite)), adjust
    if adjust == "dunnettx":
        return 1.0 - _pdunnx(abs_t, n, df), adjust
    if adjust == "mvt":
        return _pmvt_two_sided(abs_t, df, np.asarray(corr, dtype=float)), adjust
    raise AssertionError(adjust)
