"""Warm-started quasi-Newton minimisation within box bounds, for fits that start next to a known optimum.

A refit, a bootstrap replicate, a profile point and glmer's last polish all start close to the optimum they
look for: a Newton-type method that starts from a good Hessian needs a few steps where BOBYQA rebuilds a
quadratic model from scratch. :func:`hessian` gives that Hessian from differences of an exact gradient;
:func:`quasi_newton` is the one projected-BFGS iteration every such fit runs (the first fits themselves use
:func:`sparselmm.optimize.optimize_theta`: NLopt's BOBYQA or scipy's L-BFGS-B).
"""

from __future__ import annotations

import numpy as np
from scipy.linalg.lapack import dpotrf, dpotrs

from .errors import NumericalError

__all__ = ["PROBE", "REFIT_TOL", "hessian", "quasi_newton"]

# a fit that stops at a zero θ_k tries θ_k = PROBE (lme4's restart_edge): the criterion is even in a scalar
# θ_k, so 0 is stationary and may be a maximum along θ_k
PROBE = 1e-3
# the warm refits (sparselmm.refit, the bootstrap's replicates, the bootstrap LRT's) stop when the predicted
# decrease of the criterion is below this (deviance units): θ within ~1e-4 standard errors of the optimum
# (ζ² = Δ deviance); on sleepstudy a tighter tolerance moved no bootstrap statistic by more than 2e-6 of its
# bootstrap SD
REFIT_TOL = 1e-8


def hessian(fun_grad, x: np.ndarray, lower=None, upper=None, rel_step: float = 1e-5) -> np.ndarray:
    """A positive-definite Hessian from forward differences of an exact gradient (``n + 1`` calls).

    Steps go inwards at an upper bound. Negative or tiny curvatures (a flat direction, a boundary optimum)
    are raised to a floor so the matrix can start a quasi-Newton iteration.
    """
    x = np.asarray(x, dtype=float)
    n = x.size
    _, g0 = fun_grad(x)
    H = np.empty((n, n))
    for i in range(n):
        h = rel_step * max(abs(x[i]), 1e-2)
        if upper is not None and x[i] + h > upper[i]:
            h = -h
        step = x.copy()
        step[i] += h
        H[:, i] = (fun_grad(step)[1] - g0) / h
    H = (H + H.T) / 2
    w, V = np.linalg.eigh(H)
    floor = max(float(np.max(np.abs(w))) * 1e-8, 1e-10)
    return (V * np.maximum(np.abs(w), floor)) @ V.T


def quasi_newton(
    fun_grad,
    x0: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    H0: np.ndarray | None,
    tol: float,
    first: tuple[float, np.ndarray] | None = None,
    max_iter: int = 40,
    probe: np.ndarray | None = None,
    H_check: np.ndarray | None = None,
    H0_inv: np.ndarray | None = None,
    return_H: bool = True,
    fun=None,
    last_step: float = 100.0,
    gradient=None,
):
    """Minimise within box bounds by projected BFGS started from the Hessian ``H0`` (or its inverse ``H0_inv``).

    ``fun_grad(x) -> (f, g)`` may raise :class:`NumericalError` (a rejected point). ``first`` is
    ``fun_grad(x0)`` if already known. ``probe``: per variable, a step off a zero lower bound to try once the
    iteration stops there (lme4's ``restart_edge``): the deviance is even in a scalar θ_k, so θ_k = 0 is a
    stationary point that may be a maximum along θ_k; if the step lowers the criterion the iteration goes
    on from there. ``H_check``: a second Hessian approximation (e.g. the one at the known optimum) under
    which the predicted decrease must also be small before the iteration stops — a BFGS matrix inherited
    from a neighbouring problem can be badly scaled and stop it early; if not, the iteration restarts from
    ``H_check``. The iteration keeps the inverse Hessian (BFGS's inverse update; a variable held at a bound
    is taken out by a Schur complement), so a step is one small matrix-vector product.

    ``fun(x) -> f`` (the criterion alone, cheaper than with its gradient): when the predicted decrease is
    within ``last_step × tol``, the step is taken and checked with ``fun`` only; if the criterion falls by at
    least half the predicted amount, stop there (``g`` is then None): the model's error after such a step is
    of higher order than the decrease. Saves the last gradient of most fits.

    ``gradient(x) -> g`` (with ``fun``; ``fun_grad`` may then be None): a gradient that costs more than the
    criterion (finite differences, 2m evaluations): the line search evaluates ``fun`` alone and the gradient
    only at the point it accepts.

    Returns ``(x, f, g, H, n_calls, converged)``; ``x`` is the last point evaluated, ``H`` the updated
    Hessian approximation (to warm-start a neighbouring problem; None unless ``return_H``).
    """
    if gradient is not None:

        def fun_grad(x):
            return fun(x), gradient(x)

    bounded = bool(np.any(np.isfinite(lower)) or np.any(np.isfinite(upper)))
    x = np.minimum(np.maximum(np.asarray(x0, dtype=float), lower), upper)
    n_calls = 0
    if first is None:
        f, g = fun_grad(x)
        n_calls += 1
    else:
        f, g = first
    Hinv = np.linalg.inv(H0) if H0_inv is None else np.array(H0_inv, dtype=float, copy=True)

    def result(ok):
        H = None
        if return_H:
            try:
                H = np.linalg.inv(Hinv)
            except np.linalg.LinAlgError:
                H = H0
        return x, f, g, H, n_calls, ok

    if not np.isfinite(f):
        return result(False)
    probed = np.zeros(x.size, dtype=bool)
    for _ in range(max_iter):
        active = ((x <= lower) & (g >= 0)) | ((x >= upper) & (g <= 0)) if bounded else None
        if active is None or not active.any():
            d = -(Hinv @ g)
        elif active.all():
            d = np.zeros_like(x)
        else:  # (H_ff)⁻¹ = Hinv_ff − Hinv_fa Hinv_aa⁻¹ Hinv_af
            fr, ac = np.flatnonzero(~active), np.flatnonzero(active)
            try:
                K = Hinv[np.ix_(fr, fr)] - Hinv[np.ix_(fr, ac)] @ np.linalg.solve(
                    Hinv[np.ix_(ac, ac)], Hinv[np.ix_(ac, fr)]
                )
            except np.linalg.LinAlgError:
                K = np.diag(1.0 / np.maximum(np.abs(np.diag(H0 if H0 is not None else np.eye(x.size)))[fr], 1e-8))
            d = np.zeros_like(x)
            d[fr] = -(K @ g[fr])
        decrease = -0.5 * float(g @ d)
        if not decrease >= 0:  # lost positive definiteness: restart from the start's Hessian
            Hinv = np.linalg.inv(H0) if H0_inv is None else np.array(H0_inv, dtype=float, copy=True)
            continue
        if decrease <= tol and H_check is not None:
            free = ~active if active is not None else np.ones(x.size, dtype=bool)
            if free.any():
                C2, info2 = dpotrf(H_check[np.ix_(free, free)], lower=1, clean=1)
                if info2 == 0 and 0.5 * float(g[free] @ dpotrs(C2, g[free], lower=1)[0]) > 100 * tol:
                    Hinv = np.linalg.inv(H_check)
                    H_check = None
                    continue
        if fun is not None and tol < decrease <= last_step * tol and (probe is None or not np.any(x == 0)):
            xn = x + d
            if bounded:
                xn = np.minimum(np.maximum(xn, lower), upper)
            try:
                fn = fun(xn)
            except NumericalError:
                fn = np.inf
            n_calls += 1
            # the quadratic model predicts a decrease of `decrease` (≤ last_step × tol): any decrease beyond
            # half of it (less the criterion's rounding) confirms the step and leaves less than tol
            if fn <= f - 0.5 * decrease + 1e-13 * abs(f):
                x, f, g = xn, fn, None
                return result(True)
        if decrease <= tol:
            if probe is None:
                return result(True)
            edge = np.flatnonzero((x == 0) & (lower == 0) & (probe > 0) & ~probed)
            moved = False
            for i in edge:
                probed[i] = True
                xt = x.copy()
                xt[i] = probe[i]
                try:
                    ft, gt = fun_grad(xt)
                except NumericalError:
                    ft = np.inf
                n_calls += 1
                if ft < f:
                    x, f, g, moved = xt, ft, gt, True
                    break
            if not moved:
                return result(True)
            continue
        alpha = 1.0
        to_bound = None  # the largest step along d inside the box, computed when a step leaves it
        for trial in range(12):
            if trial == 1 and to_bound is not None and 0 < to_bound < 0.5:  # the projected step failed: go to the
                alpha = to_bound  # first bound instead
            xn = x + alpha * d
            if bounded and (np.any(xn < lower) or np.any(xn > upper)):
                if to_bound is None:
                    moving = d != 0
                    room = np.where(d < 0, lower - x, upper - x)[moving] / d[moving]
                    to_bound = float(np.min(room)) if room.size else 1.0
                xn = np.minimum(np.maximum(xn, lower), upper)
            try:
                fn, gn = (fun(xn), None) if gradient is not None else fun_grad(xn)
            except NumericalError:
                fn, gn = np.inf, None
            n_calls += 1
            if fn <= f + 1e-4 * float(g @ (xn - x)):  # false for inf and nan
                if gn is None:
                    gn = gradient(xn)
                break
            alpha *= 0.3 if not np.isfinite(fn) else 0.5
        else:
            return result(False)
        s, yv = xn - x, gn - g
        sy = float(s @ yv)
        if sy > 1e-12 * np.sqrt(float(s @ s) * float(yv @ yv)):
            Hy = Hinv @ yv
            rho = 1.0 / sy
            Hinv = (
                Hinv + (rho * (1.0 + rho * float(yv @ Hy))) * np.outer(s, s) - rho * (np.outer(Hy, s) + np.outer(s, Hy))
            )
        x, f, g = xn, fn, gn
    return result(False)
