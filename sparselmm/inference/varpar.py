"""The criterion in all variance parameters, for fits whose θ is not Λ's entries or whose weights move.

A fit with covariance structures (:mod:`sparselmm.covstruct`: θ maps non-linearly to Λ) or with a residual
structure (:mod:`sparselmm.residual`: the weights ``W(φ)`` depend on φ) has no exact second derivatives in
:mod:`sparselmm.derivatives`; here the criterion and ``vcov(β)`` are differentiated numerically with the
package's central differences (:func:`~sparselmm.optimize.deriv12`, :func:`~sparselmm.optimize.fd_gradient`).
The criterion is lmerTest's ``devfun_vp`` with the residual parameters added (ν = n, or n − p for REML)::

    d(θ, φ, σ) = log|L|² [+ log|R_X|²] − Σ log wᵢ(φ) + r²(θ, φ) / σ² + ν log(2πσ²),   vcov(β) = σ² (R_XᵀR_X)⁻¹

It serves two users:

* Satterthwaite's df (:class:`NumericDerivatives`, what :class:`~sparselmm.inference.satterthwaite.Satterthwaite`
  reads) in the fit's own parameters ``v = (θ, φ, log σ)`` — lmerTest's ``(θ, σ)`` up to σ's log, which does
  not change the df at the optimum (the df are invariant under a one-to-one map of the variance parameters
  there).
* Wald intervals of the variance parameters on their unconstrained scale (:func:`wald_variance_intervals`):
  ``η = (log sd, atanh cor, …, log σ, δ, atanh ρ)`` — the SDs and correlations of lme4's order (a structure's
  SDs, its ρ or lag correlations), σ, then the log SD ratios of ``varIdent`` and ``corAR1``'s ρ (corCAR1's φ on
  the logit scale, as nlme) — with the
  Hessian of the criterion in η, ``vcov(η) = 2 H⁻¹`` and ``η̂ ± z·SE`` mapped back, as nlme's ``intervals()``
  (its ``apVar``) and glmmTMB's ``confint(method = "wald")`` do. A parameter on its bound (an SD at 0, a
  correlation at ±1) is held there and gets no interval (NaN), as it has no unconstrained value.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import norm

from ..deviance import ProfiledDeviance
from ..errors import NumericalError
from ..optimize import deriv12, fd_gradient
from ..parameters import SdCorMap, parameter_names, percent_labels, sdcor

__all__ = ["NumericDerivatives", "VarparCriterion", "variance_names", "wald_variance_intervals"]

LOG_2PI = float(np.log(2 * np.pi))


def needs_numeric(result) -> bool:
    """A fit whose variance parameters are differentiated here: covariance structures or a residual structure."""
    return result.design.structured or getattr(result, "residual_structure", None) is not None


def residual_names(result) -> list[str]:
    """The residual parameters' rows of the intervals: ``.ratio.<level>`` (nlme's varIdent SD ratios to the first
    level), then ``.rho`` (corAR1's) or ``.Phi`` (corCAR1's)."""
    s = getattr(result, "residual_structure", None)
    if s is None:
        return []
    cor = [f".{s.correlation.parameter}"] if s.correlation is not None else []
    return [f".ratio.{lev}" for lev in s.levels[1:]] + cor


def variance_names(result) -> list[str]:
    """The names of :func:`~sparselmm.parameters.parameter_names` with the residual parameters after ``.sigma``."""
    names = parameter_names(result)
    n_var = result.design.n_theta + 1
    return names[:n_var] + residual_names(result) + names[n_var:]


class VarparCriterion:
    """``d(θ, φ, σ)`` and ``vcov(β)`` of a fit at any variance parameters (see the module docstring).

    The fit's own deviance function is not touched: a fit without a residual structure is evaluated on a
    sibling (:meth:`~sparselmm.deviance.ProfiledDeviance.with_reml`), one with a residual structure on a
    CHOLMOD factor that takes each φ's cross-products
    (:class:`~sparselmm.residual.ResidualPieces`, :meth:`~sparselmm.deviance.ProfiledDeviance.set_cross`).
    """

    def __init__(self, result):
        self.result = result
        self.design = design = result.design
        self.reml = bool(result.reml)
        devfun = result.deviance_function
        self.structure = getattr(result, "residual_structure", None)
        self.phi_hat = np.asarray(getattr(result, "phi", np.zeros(0)), dtype=float)
        self._pieces = None
        if self.structure is not None:
            from ..residual import ResidualPieces

            self._pieces = ResidualPieces(design, self.structure, devfun.cross.beta_shift)
            cross, _ = self._pieces.cross_at(self.phi_hat)
            self._devfun = ProfiledDeviance(design, cross, self.reml, ordering="default", reweightable=True)
            self.phi_lower, self.phi_upper = self.structure.bounds()
        else:
            self._devfun = devfun.with_reml(self.reml)
            self.phi_lower = self.phi_upper = np.zeros(0)
        self.n_theta, self.n_phi = design.n_theta, self.phi_hat.size
        self.nu = design.n - design.p if self.reml else design.n
        self.theta_hat = np.asarray(result.theta, dtype=float)
        self.sigma_hat = float(result.sigma)

    def _state(self, theta, phi):
        if self._pieces is not None:
            cor = self.structure.correlation
            if cor is not None and not cor.admissible(float(phi[-1])):
                raise NumericalError(f"the {cor.name} parameter is outside its range")
            self._devfun.set_cross(self._pieces.cross_at(phi)[0])
        return self._devfun.solve(theta)

    def deviance(self, theta, phi, sigma: float) -> float:
        """``d(θ, φ, σ)``; ``inf`` where the model is not defined."""
        try:
            st = self._state(theta, phi)
        except (NumericalError, np.linalg.LinAlgError, FloatingPointError):
            return np.inf
        ld = st.ldL2 + (st.ldRX2 if self.reml else 0.0) - self._devfun.cross.sum_log_w
        s2 = sigma * sigma
        return float(ld + st.pwrss / s2 + self.nu * (LOG_2PI + np.log(s2)))

    def vcov_beta(self, theta, phi, sigma: float) -> np.ndarray:
        """``σ² (R_XᵀR_X)⁻¹`` at ``(θ, φ)``."""
        st = self._state(theta, phi)
        Rinv = np.linalg.inv(st.R_X)
        return sigma**2 * (Rinv @ Rinv.T)

    # ---- the fit's own parameters v = (θ, φ, log σ) ---------------------------------------------------
    def split(self, v) -> tuple[np.ndarray, np.ndarray, float]:
        v = np.asarray(v, dtype=float)
        return v[: self.n_theta], v[self.n_theta : self.n_theta + self.n_phi], float(np.exp(v[-1]))

    @property
    def v_hat(self) -> np.ndarray:
        return np.concatenate([self.theta_hat, self.phi_hat, [np.log(self.sigma_hat)]])

    @property
    def v_lower(self) -> np.ndarray:
        return np.concatenate([self.design.lower, self.phi_lower, [-np.inf]])


class NumericDerivatives:
    """Satterthwaite's ingredients by central differences in ``v = (θ, φ, log σ)`` (lmerTest's method, its
    ``devfun_vp`` Hessian and the Jacobian of ``vcov(β)``), with the interface of
    :class:`~sparselmm.derivatives.DevianceDerivatives` that :class:`~sparselmm.inference.satterthwaite.Satterthwaite`
    reads: ``vcov_beta``, :meth:`vcov_beta_jacobian` and :meth:`varpar_hessian`.

    Parameters
    ----------
    result : LmerResult
        A fit with covariance structures or a residual structure.
    """

    def __init__(self, result):
        self.crit = VarparCriterion(result)
        c = self.crit
        theta, phi, sigma = c.split(c.v_hat)
        self.vcov_beta = c.vcov_beta(theta, phi, sigma)

    def _dev(self, v) -> float:
        return self.crit.deviance(*self.crit.split(v))

    def varpar_hessian(self) -> np.ndarray:
        """The Hessian of ``d`` in ``v`` at the fit (:func:`~sparselmm.optimize.deriv12`, steps clipped at θ's
        lower bounds)."""
        c = self.crit
        v = c.v_hat
        _, H = deriv12(self._dev, v, self._dev(v), c.v_lower)
        return 0.5 * (H + H.T)

    def vcov_beta_jacobian(self) -> list[np.ndarray]:
        """``∂ vcov(β) / ∂v``: one p × p matrix per element of ``v`` (central differences)."""
        c = self.crit
        J = fd_gradient(lambda v: c.vcov_beta(*c.split(v)), c.v_hat, c.v_lower)
        return [0.5 * (Jk + Jk.T) for Jk in J]


# ---- Wald intervals on the unconstrained scale -------------------------------------------------------------
def _eta_kinds(crit: VarparCriterion, psi_map: SdCorMap) -> list[str]:
    """``"log"`` for SDs and σ, ``"atanh"`` for correlations and corAR1's ρ, ``"logit"`` for corCAR1's φ in (0, 1)
    (nlme's unconstrained scales), ``"id"`` for log SD ratios."""
    kinds = ["atanh" if c else "log" for c in psi_map.is_cor]  # ψ = (sd/cor…, σ)
    s = crit.structure
    if s is not None:
        kinds += ["id"] * s.n_delta
        if s.correlation is not None:
            kinds.append("logit" if s.correlation.lower == 0.0 else "atanh")
    return kinds


FORWARD = {"log": np.log, "atanh": np.arctanh, "logit": lambda x: np.log(x / (1.0 - x)), "id": lambda x: x}
BACKWARD = {"log": np.exp, "atanh": np.tanh, "logit": lambda e: 1.0 / (1.0 + np.exp(-e)), "id": lambda e: e}


def _forward(values: np.ndarray, kinds: list[str]) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.array([FORWARD[k](x) for x, k in zip(values, kinds)], dtype=float)


def _backward(eta: np.ndarray, kinds: list[str]) -> np.ndarray:
    with np.errstate(over="ignore"):
        return np.array([BACKWARD[k](e) for e, k in zip(eta, kinds)], dtype=float)


def wald_variance_intervals(result, level: float) -> tuple[pd.DataFrame, pd.Series]:
    """Wald intervals of every variance parameter on its unconstrained scale, mapped back (module docstring).

    Parameters
    ----------
    result : LmerResult
        A fit with covariance structures or a residual structure.
    level : float
        Confidence level (checked by the caller).

    Returns
    -------
    (DataFrame, Series)
        The intervals (rows: ``.sig01`` …, ``.sigma``, then ``.ratio.<level>`` and ``.rho``/``.Phi``; varIdent's δ is
        reported as the SD ratio ``exp δ``) and the standard errors on the unconstrained scale (NaN for a
        parameter on its bound or without a positive variance).
    """
    crit = VarparCriterion(result)
    psi_map = SdCorMap(crit.design)
    kinds = _eta_kinds(crit, psi_map)
    n_psi = crit.n_theta + 1
    psi_hat = np.append(sdcor(crit.design, crit.theta_hat, crit.sigma_hat), crit.sigma_hat)
    values = np.concatenate([psi_hat, crit.phi_hat])
    eta_hat = _forward(values, kinds)
    lower = np.concatenate([psi_map.lower, crit.phi_lower])
    upper = np.concatenate([psi_map.upper, crit.phi_upper])
    # on a bound (an SD at 0, a correlation at ±1 or a structure's limit) or undefined (a correlation of a zero SD)
    free = np.isfinite(eta_hat) & (values > lower) & (values < upper)

    def dev(eta_free) -> float:
        eta = eta_hat.copy()
        eta[free] = eta_free
        vals = np.where(free, _backward(eta, kinds), values)
        try:
            theta = psi_map.theta(vals[:n_psi])
        except (np.linalg.LinAlgError, NumericalError):
            return np.inf
        return crit.deviance(theta, vals[n_psi:], float(vals[n_psi - 1]))

    se = np.full(values.size, np.nan)
    if free.any():
        x0 = eta_hat[free]
        _, H = deriv12(dev, x0, dev(x0))
        try:
            cov = 2.0 * np.linalg.inv(0.5 * (H + H.T))
            var = np.diag(cov)
            se[free] = np.where(var > 0, np.sqrt(np.abs(var)), np.nan)
        except np.linalg.LinAlgError:
            pass
    a = (1 - level) / 2
    z = norm.ppf(1 - a)
    ends = np.column_stack([_backward(eta_hat - z * se, kinds), _backward(eta_hat + z * se, kinds)])
    if crit.structure is not None and crit.structure.n_delta:  # δ reported as the SD ratio exp(δ), as nlme
        d = slice(n_psi, n_psi + crit.structure.n_delta)
        ends[d] = np.exp(ends[d])
    ends[np.isnan(se)] = np.nan
    names = variance_names(result)
    var_names = names[:n_psi] + residual_names(result)
    table = pd.DataFrame(ends, index=var_names, columns=percent_labels(level))
    return table, pd.Series(se, index=var_names, name="se (unconstrained scale)")
