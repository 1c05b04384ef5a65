"""Profiles of the fixed effects: each constrained fit moves one column of ``X`` into the offset.

A mixin of :class:`~sparselmm.inference.profile_fits.ConstrainedFits`, which gives ``fit``, ``devfun``,
``design``, ``ev``, ``n_var``, ``H_theta``, ``_zeta``, ``fit_tol`` and ``point`` (the class of its results).
The fit with ``β_col = x`` held is the ML fit of the model whose offset gains ``x · X[:, col]``, by
quasi-Newton on the exact gradient where the model has one, else BOBYQA; the profile's slope comes from the
envelope theorem.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from ..criterion import DenseCriterion, FactorCriterion
from ..errors import NumericalError
from ..newton import PROBE, quasi_newton
from ..optimize import optimize_theta
from ..parameters import parameter_values

__all__ = ["BetaFits"]


class BetaFits:
    """Constrained fits with one fixed effect held (mixed into ``ConstrainedFits``)."""

    def _beta_evaluator(self, col: int, x: float):
        if isinstance(self.ev, DenseCriterion):
            return self.ev.with_cross(self.devfun.cross.with_columns_in_offset([col], x), reml=False)
        if isinstance(self.ev, FactorCriterion):
            return FactorCriterion(self.devfun.with_columns_in_offset([col], x, reml=False, share_factor=True))
        return None

    def _fit_beta(self, j: int, x: float, start, H):
        col = j - self.n_var
        lower = self.design.lower
        theta0 = self.fit.theta if start is None else np.maximum(start, lower)
        ev = self._beta_evaluator(col, x)
        theta = None
        if ev is not None:
            if H is None:
                H = self.H_theta() if self.H_theta() is not None else np.eye(lower.size)
            try:
                theta, dev, _, H_new, _, ok = quasi_newton(
                    ev.value_and_gradient,
                    theta0,
                    lower,
                    np.full(lower.size, np.inf),
                    H,
                    self.fit_tol,
                    probe=np.where(lower == 0, PROBE, 0.0),
                    H_check=self.H_theta(),
                )
                parts = ev.parts(theta, gradient=True)
            except NumericalError:
                ok = False
            if not ok:
                theta = None
        if theta is None:
            reduced = self.devfun.with_columns_in_offset([col], x, reml=False, share_factor=True)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                theta, dev, _ = optimize_theta(reduced, theta0, lower, "bobyqa", None, False, True)
            state = reduced.solve(theta)
            beta_k, r2, ddev, H_new = state.beta, state.pwrss, None, None
        else:
            beta_k, r2 = parts.beta, parts.r2
            ddev = self._beta_slope(col, x, beta_k, parts.Lu, r2)
        n = self.devfun.n
        sigma = math.sqrt(r2 / n)
        beta = np.insert(beta_k, col, x)
        params = parameter_values(self.design, theta, sigma, beta)
        zeta, slope = self._zeta(j, x, float(dev), ddev)
        return self.point(x, zeta, float(dev), slope, params, np.asarray(theta, float).copy(), H_new)

    def _beta_slope(self, col: int, x: float, beta_k, Lu, r2: float) -> float:
        """``d/dx`` of the profiled ML deviance with ``β_col = x``: ``(n/r²) ∂r²/∂x``, ``∂r²/∂x = −2 x_jᵀWe``
        (envelope theorem), from the full model's cross-products."""
        cr = self.devfun.cross
        beta = np.insert(beta_k, col, x) - cr.beta_shift
        xWe = cr.XtWy[col] - cr.XtWX[col] @ beta - cr.ZtWX[:, col] @ Lu
        return (self.devfun.n / r2) * (-2.0 * float(xWe))
