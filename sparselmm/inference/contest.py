"""t and F tests of fixed-effect contrasts with Satterthwaite or Kenward–Roger df (lmerTest's
``contest``, ``contest1D``, ``contestMD`` and the coefficient table of ``summary``).

The derivatives behind either method are computed once per fit, on first use, and kept on the result
(:func:`inference_for`); every contrast afterwards costs only p × p algebra.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pandas as pd
from scipy import stats

from ..derivatives import DevianceDerivatives
from ..errors import ModelSpecError
from .kenward_roger import KenwardRoger
from .satterthwaite import Satterthwaite
from .varpar import NumericDerivatives, needs_numeric

__all__ = ["DDF_METHODS", "coef_table", "contest", "inference_for", "normalize_ddf"]

DDF_METHODS = ("Satterthwaite", "Kenward-Roger", "lme4")
_ALIASES = {
    "satterthwaite": "Satterthwaite",
    "satt": "Satterthwaite",
    "kenward-roger": "Kenward-Roger",
    "kenward_roger": "Kenward-Roger",
    "kenwardroger": "Kenward-Roger",
    "kr": "Kenward-Roger",
    "lme4": "lme4",
    "none": "lme4",
}
T_COLUMNS = ["Estimate", "Std. Error", "df", "t value", "Pr(>|t|)"]
F_COLUMNS = ["Sum Sq", "Mean Sq", "NumDF", "DenDF", "F value", "Pr(>F)"]


def normalize_ddf(ddf) -> str:
    """lmerTest's method name for ``ddf``; a clear error for anything else."""
    key = str(ddf).strip().lower() if isinstance(ddf, str) else None
    if key not in _ALIASES:
        raise ModelSpecError(f"ddf={ddf!r} is not known; use one of {DDF_METHODS}.")
    return _ALIASES[key]


def inference_for(result, method: str):
    """The (cached) Satterthwaite or Kenward–Roger object of a fitted :class:`LmerResult`."""
    cache = result.__dict__.setdefault("_inference_cache", {})
    if method == "Kenward-Roger" and not result.reml:
        raise ModelSpecError(
            "Kenward-Roger's method is only defined for REML fits (pbkrtest refits ML models by REML and "
            "lmerTest refuses them): refit with lmer(..., reml=True), or use ddf='Satterthwaite'."
        )
    if method == "Kenward-Roger" and needs_numeric(result):
        raise ModelSpecError(
            "Kenward-Roger's df are not available for a fit with covariance-structure terms or a dispformula or "
            "correlation (pbkrtest's linear covariance parametrisation does not cover them); use ddf='Satterthwaite'."
        )
    if method not in cache:
        devfun = result.deviance_function
        limit = getattr(devfun, "_blas_limit", None)  # the engine's BLAS-threads policy (deviance.py)
        with limit() if limit is not None else contextlib.nullcontext():
            if "derivatives" not in cache:
                cache["derivatives"] = _derivatives(result, method)
            derivs = cache["derivatives"]
            cache[method] = Satterthwaite(derivs) if method == "Satterthwaite" else KenwardRoger(derivs)
    return cache[method]


def _derivatives(result, method: str):
    """The exact derivatives (:class:`DevianceDerivatives`), or for a fit with covariance structures or a residual
    structure the numerical ones of :mod:`sparselmm.inference.varpar` (Satterthwaite only)."""
    if not needs_numeric(result):
        return DevianceDerivatives(result.deviance_function, result.theta, result.sigma)
    if not result.deviance_function.exact:
        result.deviance_function.needs_exact("Satterthwaite's df (the criterion's derivatives)")
    return NumericDerivatives(result)


def _as_contrast(result, L) -> np.ndarray:
    names = list(result.fixef.index)
    p = len(names)
    if isinstance(L, str):
        # a fixed-effect term's label: its type-III hypothesis, as a row of lmerTest's anova
        from .contrasts import term_contrasts

        hyps = term_contrasts(result.design, 3)
        if L not in hyps:
            raise ModelSpecError(f"{L!r} is not a fixed-effect term of the model; its terms are {list(hyps)}.")
        L = hyps[L]
    elif isinstance(L, (pd.Series, pd.DataFrame)):
        labels = L.index if isinstance(L, pd.Series) else L.columns
        unknown = [c for c in labels if c not in names]
        if unknown:
            raise ModelSpecError(f"Contrast names {unknown} are not fixed effects of the model; they are {names}.")
        L = L.reindex(names, fill_value=0.0) if isinstance(L, pd.Series) else L.reindex(columns=names, fill_value=0.0)
        L = L.to_numpy()
    try:
        L = np.array(L, dtype=float)
    except (TypeError, ValueError):
        raise ModelSpecError(
            "The contrast L must be numeric: a vector of length p or a matrix with p columns."
        ) from None
    if L.ndim == 1:
        L = L[None, :]
    if L.ndim != 2 or L.shape[1] != p:
        raise ModelSpecError(
            f"The contrast has {L.shape[-1] if L.ndim else 0} columns but the model has p = {p} fixed effects "
            f"({names}); give one value per fixed effect."
        )
    if not np.all(np.isfinite(L)):
        raise ModelSpecError("The contrast L contains missing or infinite values.")
    return L


def _rhs(rhs, m: int) -> np.ndarray:
    rhs = np.atleast_1d(np.asarray(rhs, dtype=float))
    if rhs.size == 1:
        rhs = np.full(m, float(rhs[0]))
    if rhs.size != m:
        raise ModelSpecError(f"rhs has {rhs.size} values for a contrast with {m} rows; give one per row or a scalar.")
    return rhs


def _t_rows(result, L: np.ndarray, rhs: np.ndarray, method: str, level: float | None) -> pd.DataFrame:
    beta = result.fixef.to_numpy()
    rows = []
    if method == "lme4":
        V = result.vcov.to_numpy()
        for l, r in zip(L, rhs):
            est = float(l @ beta)
            se = float(np.sqrt(l @ V @ l))
            rows.append([est, se, (est - r) / se])
        return pd.DataFrame(rows, columns=["Estimate", "Std. Error", "t value"])
    inf = inference_for(result, method)
    for l, r in zip(L, rhs):
        est = float(l @ beta)
        var, df = inf.t_df(l)
        se = float(np.sqrt(var))
        t = (est - r) / se
        row = [est, se, df, t]
        if level is not None:
            half = stats.t.ppf(0.5 + level / 2, df) * se
            row += [est - half, est + half]
        rows.append(row + [2.0 * stats.t.sf(abs(t), df)])
    cols = T_COLUMNS[:4] + (["lower", "upper"] if level is not None else []) + ["Pr(>|t|)"]
    return pd.DataFrame(rows, columns=cols)


def coef_table(result, ddf="Satterthwaite") -> pd.DataFrame:
    """The fixed-effects table of lmerTest's ``summary(m, ddf=)``: a t test of each fixed effect.

    Parameters
    ----------
    result : LmerResult
    ddf : {"Satterthwaite", "Kenward-Roger", "lme4"}
        Satterthwaite's df (lmerTest's default); Kenward–Roger's, with the standard errors from the
        adjusted covariance ``Φ_A`` (REML fits only, as pbkrtest); or lme4's table without df and p-values.

    Returns
    -------
    DataFrame
        One row per fixed effect (named as ``result.fixef``); columns ``Estimate``, ``Std. Error``, ``df``,
        ``t value``, ``Pr(>|t|)`` (``ddf="lme4"``: ``Estimate``, ``Std. Error``, ``t value``).

    Raises
    ------
    sparselmm.ModelSpecError
        An unknown ``ddf``, or Kenward–Roger's method on an ML fit.
    """
    method = normalize_ddf(ddf)
    names = list(result.fixef.index)
    L = np.eye(len(names))
    tab = _t_rows(result, L, np.zeros(len(names)), method, None)
    tab.index = names
    return tab


def contest(result, L, ddf="Satterthwaite", joint: bool = True, rhs=0.0, level: float = 0.95) -> pd.DataFrame:
    """Test ``Lβ = rhs`` (lmerTest's ``contest``, ``contest1D`` and ``contestMD``; pbkrtest's F test).

    Parameters
    ----------
    result : LmerResult
    L : array-like, Series, DataFrame or str
        A contrast vector (length p) or matrix (p columns); a Series/DataFrame is aligned on the fixed
        effects' names (missing ones count as 0); a term label such as ``"f"`` or ``"x:f"`` tests that
        term's type-III hypothesis.
    ddf : {"Satterthwaite", "Kenward-Roger", "lme4"}
    joint : bool
        True: one F test of all rows (Sum Sq, Mean Sq, NumDF, DenDF, F value, Pr(>F)); the rank and the
        tested directions come from the eigen-decomposition of ``LΦLᵀ`` (Satterthwaite) or the row
        space of ``L`` (Kenward–Roger), as lmerTest/pbkrtest do. False: a t test per row with a
        ``level`` confidence interval.
    rhs : float or array-like
        Hypothesised value(s) of ``Lβ``: one per row of ``L``, or one for all.
    level : float
        Confidence level of the per-row intervals (``joint=False``).

    Returns
    -------
    DataFrame
        ``joint=True``: one row with ``Sum Sq``, ``Mean Sq``, ``NumDF``, ``DenDF``, ``F value``, ``Pr(>F)``
        (``ddf="lme4"``: ``Sum Sq``, ``Mean Sq``, ``npar``, ``F value``). ``joint=False``: one row per row of
        ``L`` with ``Estimate``, ``Std. Error``, ``df``, ``t value``, ``lower``, ``upper``, ``Pr(>|t|)``
        (``ddf="lme4"``: ``Estimate``, ``Std. Error``, ``t value``).

    Raises
    ------
    sparselmm.ModelSpecError
        ``L`` is not numeric, has the wrong number of columns, names unknown fixed effects or terms, is zero
        or has no estimable direction; a rank-deficient ``L`` with a nonzero ``rhs``; ``rhs`` of the wrong
        length; ``level`` outside (0, 1); an unknown ``ddf``; Kenward–Roger's method on an ML fit.

    Examples
    --------
    >>> import sparselmm
    >>> from sparselmm.inference.contest import contest
    >>> m = sparselmm.lmer("Reaction ~ Days + (Days | Subject)", sparselmm.datasets.load("sleepstudy"))
    >>> contest(m, [0, 1])["NumDF"].item()
    1
    >>> list(contest(m, [[1, 0], [0, 1]], joint=False).columns)
    ['Estimate', 'Std. Error', 'df', 't value', 'lower', 'upper', 'Pr(>|t|)']
    """
    method = normalize_ddf(ddf)
    L = _as_contrast(result, L)
    rhs = _rhs(rhs, L.shape[0])
    if not joint:
        if not 0 < level < 1:
            raise ModelSpecError(f"level={level} must be between 0 and 1.")
        return _t_rows(result, L, rhs, method, None if method == "lme4" else level)
    rank = int(np.linalg.matrix_rank(L))
    if rank == 0:
        raise ModelSpecError("The contrast L is zero: it has no direction to test.")
    beta = result.fixef.to_numpy()
    if np.any(rhs != 0):
        if rank < L.shape[0]:
            raise ModelSpecError(
                f"The contrast has {L.shape[0]} rows but rank {rank}; with a nonzero rhs the hypothesis is "
                "ill-defined (its rows may contradict each other). Remove the dependent rows."
            )
        beta = beta - np.linalg.pinv(L) @ rhs
    sigma2 = result.sigma**2
    if method == "lme4":
        Lr = _row_basis(L, rank)
        Lb = Lr @ beta
        F = float(Lb @ np.linalg.solve(Lr @ result.vcov.to_numpy() @ Lr.T, Lb)) / rank
        return pd.DataFrame(
            [[F * sigma2 * rank, F * sigma2, rank, F]], columns=["Sum Sq", "Mean Sq", "npar", "F value"]
        )
    if method == "Satterthwaite":
        inf = inference_for(result, method)
        F, q, ddf_ = inf.f_test(L, beta)
        if q == 0:
            raise ModelSpecError("The contrast L has no estimable direction (LΦLᵀ is zero).")
        MS = F * sigma2
        return pd.DataFrame([[MS * q, MS, q, ddf_, F, stats.f.sf(F, q, ddf_)]], columns=F_COLUMNS)
    inf = inference_for(result, method)
    Lr = _row_basis(L, rank)
    F, FU, q, ddf_ = inf.f_test(Lr, beta, rank)
    MS = FU * sigma2
    return pd.DataFrame([[MS * q, MS, q, ddf_, F, stats.f.sf(F, q, ddf_)]], columns=F_COLUMNS)


def _row_basis(L: np.ndarray, rank: int) -> np.ndarray:
    """``L`` itself when of full row rank, else an orthonormal basis of its row space (pbkrtest's
    ``force_full_rank``; the F test and KR's df depend on the row space only)."""
    if rank == L.shape[0]:
        return L
    _, _, Vt = np.linalg.svd(L, full_matrices=False)
    return Vt[:rank]
