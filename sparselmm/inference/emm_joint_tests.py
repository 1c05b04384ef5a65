"""emmeans' ``joint_tests``: an F test of every model term computed from the reference grid (type-III-like
tests that do not depend on the coding of the factors)."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
from scipy import stats

from ..errors import ModelSpecError
from .emm_contrasts import contrast_coefficients
from .emmeans import EmmGrid, ModelView, ReferenceGrid, marginal_means

__all__ = ["joint_tests"]

_IDENT = re.compile(r"[A-Za-z_.][A-Za-z0-9_.]*")


def _orthonormal_rows(L: np.ndarray) -> np.ndarray:
    """R's ``t(qr.Q(qr(t(L))))[1:r, ]``: Gram–Schmidt of L's rows in order, dependent rows skipped."""
    basis = []
    for row in L:
        v = row.copy()
        for b in basis:
            v -= (b @ v) * b
        for b in basis:  # second pass for orthogonality
            v -= (b @ v) * b
        nrm = np.linalg.norm(v)
        if nrm > 1e-7 * max(np.linalg.norm(row), 1e-300):
            basis.append(v / nrm)
    return np.array(basis)


def _joint_test(view: ModelView, L: np.ndarray) -> tuple[int, float, float, float]:
    L = np.where(np.abs(L) < 1e-7, 0.0, L)
    L = L[np.any(L != 0, axis=1)]
    Q = _orthonormal_rows(L) if L.size else np.zeros((0, view.beta.size))
    r = Q.shape[0]
    if r == 0:
        return 0, np.nan, np.nan, np.nan
    z = Q @ view.beta
    F = float(z @ np.linalg.solve(Q @ view.V @ Q.T, z)) / r
    df2 = min(view.df(q) for q in Q)
    p = stats.chi2.sf(F * r, r) if np.isinf(df2) else stats.f.sf(F, r, df2)
    return r, df2, F, float(p)


def joint_tests(model, by=None, ddf=None) -> pd.DataFrame:
    """emmeans' ``joint_tests``: an F test of every model term from the reference grid (type-III-like).

    Each term's hypothesis is the set of interaction contrasts (consecutive differences) of the marginal
    means of its variables, covariates at their mean ± 1 (emmeans' ``meanint``); the F statistic is the
    Wald test of those contrasts and its denominator df the smallest df of their orthonormalised rows, as
    emmeans computes it. ``F.ratio`` is rounded to 3 decimals and the dfs to 2, as emmeans reports them.

    Parameters
    ----------
    model : LmerResult, GlmerResult or MixedLMResults
    by : str or list of str, optional
        Test the other terms within each level of these variables.
    ddf : {"Satterthwaite", "Kenward-Roger", "asymptotic"}, optional

    Returns
    -------
    DataFrame
        ``model term``, ``df1``, ``df2``, ``F.ratio``, ``p.value`` (and the ``by`` columns).

    Raises
    ------
    sparselmm.ModelSpecError
        ``by`` naming a variable not in the grid; a model without predictors.
    """
    view = ModelView(model, ddf)
    rg = ReferenceGrid(view, None, cov_reduce="meanint")
    by = [] if by is None else ([by] if isinstance(by, str) else list(by))
    facs = [n for n in rg.names if n not in by]
    if not facs:
        raise ModelSpecError("There are no factors to test.")
    unknown = [b for b in by if b not in rg.names]
    if unknown:
        raise ModelSpecError(f"by={unknown} names variables not in the grid; its variables are {rg.names}.")
    terms = _model_terms(view, facs)
    rows = []
    for term in terms:
        L, grid, _ = marginal_means(rg, [*term, *by], "equal")
        groups = [np.arange(len(grid))] if not by else EmmGrid(view, grid, L, by, "x").by_groups()
        for g in groups:
            Lg = L[g]
            # interaction contrasts: consecutive differences over each variable, the last variable first
            shape = [len(rg.levels[v]) for v in term]
            M = Lg.reshape([*shape[::-1], Lg.shape[1]])
            for axis in range(len(term)):
                k = shape[len(term) - 1 - axis]
                C, *_ = contrast_coefficients("consec", [str(i) for i in range(k)], [str(i) for i in range(k)])
                M = np.moveaxis(np.tensordot(C.T, M, axes=([1], [axis])), 0, axis)
            Lc = M.reshape(-1, Lg.shape[1])
            r, df2, F, p = _joint_test(view, Lc)
            row = {"model term": ":".join(term), "df1": r, "df2": round(df2, 2), "F.ratio": round(F, 3), "p.value": p}
            for b in by:
                row[b] = grid[b].iloc[g[0]]
            rows.append(row)
    cols = ["model term", *by, "df1", "df2", "F.ratio", "p.value"]
    out = pd.DataFrame(rows, columns=cols)
    return out[out["df1"] > 0].reset_index(drop=True)


def _model_terms(view: ModelView, facs: list[str]) -> list[tuple[str, ...]]:
    """The combinations of grid variables that occur together in a term of the formula, ordered as
    emmeans' ``joint_tests`` lists them (by order, then depth-first in grid order)."""
    from formulaic import Formula

    present = []
    for term in Formula(view.fixed):
        vars_ = set()
        for factor in term.factors:
            vars_ |= {m.group() for m in _IDENT.finditer(str(factor.expr))}
        present.append(vars_)
    found = []

    def walk(these):
        if these and any(set(these) <= t for t in present):
            found.append(tuple(these))
        last = facs.index(these[-1]) + 1 if these else 0
        for i in range(last, len(facs)):
            walk([*these, facs[i]])

    walk([])
    return sorted(found, key=len)
