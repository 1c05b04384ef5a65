"""Separation in binomial (and Poisson) GLMMs: fixed effects whose estimates run off to infinity.

A binomial outcome is *separated* by the fixed-effects design ``X`` when some direction ``d ≠ 0`` has
``xᵢ·d ≥ 0`` on every row with only successes, ``xᵢ·d ≤ 0`` on every row with only failures and
``xᵢ·d = 0`` on rows with both (complete separation when the inequalities are strict, quasi-complete
otherwise). Moving β along ``d`` then never lowers the likelihood of any row, whatever the random
effects are, so the maximum-likelihood estimate of every coefficient that some such ``d`` moves is
infinite: R's ``glm`` stops with "fitted probabilities numerically 0 or 1 occurred", lme4's glmer
with huge estimates, a singular Hessian or a PIRLS failure. For a Poisson count (log link) the same
holds with "only zeros" for "only failures" (a factor level whose counts are all zero).

Whether such a ``d`` exists is a linear programme (Konis 2007, as in R's ``detectseparation``): maximise
``Σ_{successes} xᵢ·d − Σ_{failures} xᵢ·d`` over the cone above with ``−1 ≤ d ≤ 1``. Because ``X`` has
full column rank (collinear columns are dropped before the fit), the optimum is positive exactly when the
data are separated. The coefficients that run off are those some direction of the cone moves; they are
found by maximising ``±dⱼ`` over the cone, one small LP per coefficient not already moved by the first
solution. Rows are deduplicated first, so a design of factors costs next to nothing.

The programme is solved only when the fit shows the symptom (fitted means numerically at the edge of
their range, or PIRLS breaking down), never for a fit without it.
"""

from __future__ import annotations

import numpy as np

from ..errors import ConvergenceWarning, NumericalError

__all__ = [
    "SeparationWarning",
    "SeparationError",
    "separated_columns",
    "separating_alone",
    "edge_fraction",
    "separation_message",
]

EDGE = 10 * np.finfo(float).eps  # glm.fit's threshold for "numerically 0 or 1"


class SeparationWarning(ConvergenceWarning):
    """Fitted means numerically at the edge of their range: separation; the message names the fixed effects."""


class SeparationError(NumericalError):
    """The fit broke down because the outcome is separated by the named fixed effects."""


def edge_fraction(family, mu, prior_weights) -> float:
    """Fraction of rows (with positive weight) whose fitted mean is numerically 0 or 1 (binomial) or 0 (counts)."""
    mu = np.asarray(mu, dtype=float)
    used = np.asarray(prior_weights) > 0
    if family.name == "binomial":
        edge = (mu < EDGE) | (mu > 1 - EDGE)
    elif family.name in ("poisson", "negative.binomial"):
        edge = mu < EDGE
    else:
        return 0.0
    return float(np.mean(edge[used])) if used.any() else 0.0


def _classes(family, y, pw):
    """Per row: +1 (only successes), −1 (only failures / zero count), 0 (both: an equality), None if n/a."""
    used = np.asarray(pw) > 0
    if family.name == "binomial":
        if family.link.name == "log":  # μ <= 1 bounds the log link: not the logistic geometry
            return None
        cls = np.where(y >= 1, 1, np.where(y <= 0, -1, 0))
    elif family.name in ("poisson", "negative.binomial") and family.link.name == "log":
        cls = np.where(y <= 0, -1, 0)
    else:
        return None
    return cls[used], used


def _solve(c, A_ub, b_ub, A_eq, b_eq, p):
    from scipy.optimize import linprog

    res = linprog(
        c,
        A_ub=A_ub if A_ub.size else None,
        b_ub=b_ub if A_ub.size else None,
        A_eq=A_eq if A_eq is not None and A_eq.size else None,
        b_eq=b_eq if A_eq is not None and A_eq.size else None,
        bounds=[(-1.0, 1.0)] * p,
        method="highs",
    )
    return res.x if res.status == 0 else None


def separated_columns(X, y, prior_weights, family, tol: float = 1e-7) -> list[int]:
    """Columns of ``X`` whose maximum-likelihood coefficient is infinite (empty if the data are not separated).

    Parameters
    ----------
    X : ndarray (n, p)
        The fixed-effects design (full column rank).
    y : ndarray (n,)
        The response as the family sees it (binomial: proportion of successes).
    prior_weights : ndarray (n,)
        Rows with weight 0 take no part.
    family : Family
        Binomial (logit, probit, cloglog) or Poisson / negative binomial with a log link; other families
        and links return an empty list.
    tol : float
        A direction counts when it moves the linear predictor by more than ``tol`` (relative to the
        size of ``X``).

    Returns
    -------
    list of int
        Column indices, in order.
    """
    got = _classes(family, np.asarray(y, dtype=float), prior_weights)
    if got is None:
        return []
    cls, used = got
    X = np.asarray(X, dtype=float)[used]
    if X.shape[0] == 0 or not np.any(cls != 0):
        return []
    p = X.shape[1]
    scale = max(1.0, float(np.max(np.abs(X))))
    rows = np.unique(np.column_stack([X, cls]), axis=0)
    Xu, cu = rows[:, :p], rows[:, p]
    eq = Xu[cu == 0]
    # equalities: d in the null space of the rows with both outcomes (an orthonormal basis N, d = N z)
    if eq.shape[0]:
        _u, sv, vt = np.linalg.svd(eq, full_matrices=True)
        rank = int(np.sum(sv > 1e-10 * max(sv.max(initial=0.0), 1.0)))
        N = vt[rank:].T
        if N.shape[1] == 0:
            return []
    else:
        N = None
    A_ub = -(cu[cu != 0][:, None] * Xu[cu != 0])  # sign · xᵢ·d >= 0  ->  −sign · xᵢ·d <= 0
    b_ub = np.zeros(A_ub.shape[0])
    A_eq = eq if N is not None else None
    b_eq = np.zeros(eq.shape[0]) if N is not None else None
    c = A_ub.sum(axis=0)  # minimise −Σ sign · xᵢ·d
    d = _solve(c, A_ub, b_ub, A_eq, b_eq, p)
    if d is None or -(c @ d) <= tol * scale:
        return []
    moved = set(np.flatnonzero(np.abs(d) > tol).tolist())
    for j in range(p):
        if j in moved:
            continue
        for sign in (1.0, -1.0):
            cj = np.zeros(p)
            cj[j] = -sign
            dj = _solve(cj, A_ub, b_ub, A_eq, b_eq, p)
            if dj is not None and abs(dj[j]) > tol:
                moved.add(j)
                break
    return sorted(moved)


def separating_alone(X, y, prior_weights, family, cols) -> list[int]:
    """Those of ``cols`` whose column separates the outcome on its own (with the intercept, if any).

    Under complete separation every coefficient can move along *some* separating direction, so all are
    infinite; the predictor that does the separating is the one that, with at most the intercept beside
    it (a threshold anywhere, not only at 0), still separates.
    """
    X = np.asarray(X, dtype=float)
    ones = [k for k in range(X.shape[1]) if np.all(X[:, k] == 1.0)]
    out = []
    for j in cols:
        keep = ([ones[0]] if ones and ones[0] != j else []) + [j]
        if (len(keep) - 1) in separated_columns(X[:, keep], y, prior_weights, family):
            out.append(j)
    return out


def separation_message(names, family, beta=None, fitted: bool = True, alone=()) -> str:
    """The warning / error text: what happened, which fixed effects, what to do."""
    binomial = family.name == "binomial"
    what = "fitted probabilities numerically 0 or 1 occurred" if binomial else "fitted rates numerically 0 occurred"
    outcome = "outcome is" if family.name == "binomial" else "zero counts are"
    listed = ", ".join(repr(n) for n in names)
    if beta is not None:
        label = "estimate" if fitted else "at"
        listed = ", ".join(f"{n!r} ({label} {b:.4g})" for n, b in zip(names, beta))
    head = f"glmer: {what}: " if fitted else f"glmer: {what.replace(' occurred', '')} (separation): "
    if alone:
        listed += f" (separating on its own: {', '.join(repr(n) for n in alone)})"
    return (
        f"{head}the {outcome} (quasi-)completely separated by the fixed effect(s) {listed}. Their "
        "maximum-likelihood estimates are infinite"
        + (
            ": the values reported are only where the optimiser stopped, and their standard errors and "
            "z tests are meaningless"
            if fitted
            else ", so glmer stops rather than report them (lme4 goes on to report huge estimates with "
            "meaningless standard errors)"
        )
        + ". Remove or merge the offending predictor or factor levels, or fit with a penalised / "
        "Bayesian method (e.g. R's blme::bglmer, brglm2)."
    )
