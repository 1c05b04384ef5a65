"""Where the optimiser starts: lme4's moment start for models of random intercepts, a user's ``start=``
checked against θ, and the default (1 on Λ's diagonals, 0 elsewhere: ``Design.theta0``).

The moment start is computed from per-level sums of the response, so in-memory fits (sums from the rows)
and fits from chunks (sums accumulated chunk by chunk, :mod:`sparselmm.scale`) start at the same θ.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .errors import ModelSpecError

__all__ = ["moment_start", "moment_start_from_sums", "start_theta"]


def start_theta(design, start) -> np.ndarray:
    """A user's ``start=`` checked against the model's θ: its length and the zero bounds of diagonals."""
    theta0 = np.asarray(start, dtype=float).ravel()
    if theta0.shape != design.theta0.shape:
        raise ModelSpecError(
            f"start has {theta0.size} values but the model has {design.n_theta} theta parameters "
            f"({design.theta_names()})."
        )
    if np.any(theta0 < design.lower):
        raise ModelSpecError("start has negative values for diagonal theta elements; they must be >= 0.")
    upper = getattr(design, "upper", None)
    if upper is not None and np.any(theta0 > upper):
        raise ModelSpecError(
            f"start is above the upper bounds of the covariance structures' parameters ({design.theta_names()}): "
            f"upper {upper.tolist()}."
        )
    return theta0


def _level_codes(term) -> np.ndarray | None:
    """Each row's level when the term is a plain random intercept (Z an indicator matrix), else None."""
    if term.Zt_block is None:
        return term.refs if term.cnms == ["Intercept"] else None
    block = sp.csc_matrix(term.Zt_block)  # a copy: levels × rows
    block.eliminate_zeros()
    if block.shape[0] != term.n_levels or np.any(np.diff(block.indptr) != 1) or np.any(block.data != 1):
        return None
    return block.indices


def moment_start_from_sums(theta0, level_sums, level_counts, ysum: float, ysq: float, n: int) -> np.ndarray:
    """lme4's moment start from the response's per-level sums and counts (one array of each per term),
    ``Σy``, ``Σy²`` and ``n``; ``theta0`` where it does not apply (``v_e ≤ 0`` or fewer than 2 rows).

    ``v_f = (Σ_l S_l²/N_l − (Σy)²/n)/(n − 1)`` is the variance of the factor's level means expanded to the
    rows, ``v_e = var(y) − Σ v_f``, ``θ_f = sqrt(v_f / v_e)`` (lme4's ``mkLmerDevfun``, 1.1-29 and later).
    """
    theta0 = np.asarray(theta0, dtype=float).copy()
    if n < 2:
        return theta0
    v = []
    for S, N in zip(level_sums, level_counts):
        S, N = np.asarray(S, dtype=float), np.asarray(N)
        seen = N > 0
        v.append((np.sum(S[seen] ** 2 / N[seen]) - ysum**2 / n) / (n - 1))
    v_e = (ysq - ysum**2 / n) / (n - 1) - sum(v)
    if np.isfinite(v_e) and v_e > 0:
        return np.sqrt(np.maximum(np.array(v), 0.0) / v_e)
    return theta0


def moment_start(design) -> np.ndarray:
    """lme4's starting θ for models whose random effects are all scalar intercepts on distinct factors.

    As lme4's ``mkLmerDevfun`` (see :func:`moment_start_from_sums`); for any other model lme4's default
    (1 on diagonals, 0 elsewhere). Starting where lme4 starts also makes evaluation counts comparable with
    lme4's. Variance components given as indicator matrices (the statsmodels facade's
    ``vc_formula={"s": "0 + C(s)"}``) count as intercepts.
    """
    codes = [_level_codes(t) for t in design.terms]
    names = [t.group_name for t in design.terms]
    if any(c is None for c in codes) or len(set(names)) != len(names):
        return design.theta0.copy()
    y = np.asarray(design.y, dtype=float)
    sums = [np.bincount(refs, weights=y, minlength=t.n_levels) for t, refs in zip(design.terms, codes)]
    counts = [np.bincount(refs, minlength=t.n_levels) for t, refs in zip(design.terms, codes)]
    return moment_start_from_sums(design.theta0, sums, counts, float(y.sum()), float(y @ y), y.size)
