"""lme4's ``drop1`` for lmer and glmer fits: the model refitted by ML without each fixed-effect term in turn.

``drop1`` mirrors ``drop1.merMod``: each fixed-effect term that no other term contains (R's
``drop.scope``) is removed in turn and the model refitted by ML; the table gives ``npar`` (parameters
removed) and ``AIC``, plus with ``test="Chisq"`` the LRT statistic and its p-value. An lmer fit loses a
term by moving its columns to the offset at 0, which changes only cross-products
(:meth:`~sparselmm.deviance.ProfiledDeviance.with_columns_in_offset`): no new design, no new factorisation;
a glmer fit is fitted afresh without it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import chi2

from ..errors import ModelSpecError
from ..optimize import refit_theta
from .comparison import REFIT_NOTE, as_ml, is_glmm

__all__ = ["drop1", "fixed_terms"]


def fixed_terms(design) -> dict[str, np.ndarray]:
    """Each fixed-effect term (R's label, e.g. ``x:cond``) and the positions of its columns in ``X``.

    The intercept is not a term (as in R's ``term.labels``); columns dropped for rank deficiency are skipped.
    """
    spec = design.fixed_spec
    if spec is None:
        raise ModelSpecError("drop1 needs a model fitted from a formula (sparselmm.lmer), not from arrays.")
    position = {name: j for j, name in enumerate(design.fixed_names)}
    columns = list(spec.column_names)
    out = {}
    for term, idx in spec.term_indices.items():
        label = str(term)
        if label == "1":
            continue
        out[label] = np.array([position[columns[i]] for i in idx if columns[i] in position], dtype=np.int64)
    return out


def _drop_scope(design) -> list[str]:
    """R's ``drop.scope``: the terms not contained in another term (marginality)."""
    factors = {str(t): {str(f) for f in t.factors} for t in design.fixed_spec.term_indices if str(t) != "1"}
    return [a for a, fa in factors.items() if not any(fa < fb for b, fb in factors.items() if b != a)]


def _drop_term(full, label: str, cols: np.ndarray) -> tuple[int, float]:
    """``(npar, −2 log-likelihood)`` of the ML fit without one fixed-effect term.

    An lmer fit moves the term's columns into the offset at 0 and refits θ from θ̂ on its own factor (the
    same optimum a fresh fit reaches: :func:`~sparselmm.optimize.refit_theta`); a glmer fit is fitted
    afresh without the term (:func:`sparselmm.refit.update`), as lme4's ``drop1`` does, and so is a fit with a
    residual structure (its ML refit records ``reml=False``; the residual parameters re-estimated).
    """
    if is_glmm(full) or getattr(full, "residual_structure", None) is not None:  # a fresh (ML) fit without it
        from ..refit import update

        reduced = update(full, f"~ . - {label}")
        return reduced.n_params, -2.0 * reduced.loglik
    design = full.design
    reduced = full.deviance_function.with_columns_in_offset(cols, 0.0, reml=False)
    _, dev, _ = refit_theta(reduced, full.theta, full.optinfo.theta_start, design.lower, full.optinfo.optimizer)
    return reduced.p + design.n_theta + 1, dev


def drop1(result, test: str = "none", scope=None, k: float = 2.0) -> pd.DataFrame:
    """lme4's ``drop1``: refit by ML without each fixed-effect term in turn (lmer and glmer fits).

    Parameters
    ----------
    result : LmerResult or GlmerResult
    test : {"none", "Chisq"}
        ``"Chisq"`` adds the likelihood-ratio statistic ``LRT`` and ``Pr(Chi)``.
    scope : list of str, optional
        Terms to drop (R's labels, e.g. ``"recipe:temp"``); default: every term not contained in another
        (R's ``drop.scope``).
    k : float
        Penalty per parameter in the "AIC" column (2: AIC; ``log(n)``: BIC).

    Returns
    -------
    DataFrame
        Rows ``<none>`` and one per term; columns ``npar`` (parameters removed; NaN for ``<none>``) and
        ``AIC`` (of the ML fits), plus ``LRT`` and ``Pr(Chi)`` with ``test="Chisq"``.

    Raises
    ------
    sparselmm.ModelSpecError
        An unknown ``test``, or a ``scope`` term that is not a fixed-effect term of the model.
    """
    if test not in ("none", "Chisq"):
        raise ModelSpecError(f"test={test!r} is not supported; use 'none' or 'Chisq' (lme4's 'user' is not offered).")
    design = result.design
    terms = fixed_terms(design)
    if scope is None:
        scope = _drop_scope(design)
    else:
        scope = [scope] if isinstance(scope, str) else list(scope)
        unknown = [s for s in scope if s not in terms]
        if unknown:
            raise ModelSpecError(f"scope names term(s) {unknown} that are not fixed-effect terms {list(terms)}.")
    full = as_ml(result)
    df = [full.n_params]
    aic = [-2.0 * full.loglik + k * full.n_params]
    for label in scope:
        npar, dev = _drop_term(full, label, terms[label])
        df.append(npar)
        aic.append(dev + k * npar)
    df = np.array(df, dtype=float)
    aic = np.array(aic)
    dfs = df[0] - df
    dfs[0] = np.nan
    table = pd.DataFrame({"npar": dfs, "AIC": aic}, index=["<none>"] + list(scope))
    if test == "Chisq":
        dev = aic - k * df
        lrt = dev - dev[0]
        lrt[0] = np.nan
        with np.errstate(invalid="ignore"):
            table["LRT"] = lrt
            table["Pr(Chi)"] = np.where(np.isnan(lrt), np.nan, chi2.sf(lrt, dfs))
    table.attrs["heading"] = ["Single term deletions", "", "Model:", result.formula]
    table.attrs["note"] = REFIT_NOTE if getattr(result, "reml", False) else ""
    return table
