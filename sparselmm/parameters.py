"""lme4's parameters of an lmer fit: θ ↔ (sd, cor, σ), their names and order, which to report, at what level.

The parameters and their names are lme4's (``profnames`` with ``oldNames = TRUE``): for each random-effects
term in lme4's order, the lower triangle of its matrix of standard deviations (diagonal) and correlations
(below it), column by column — ``.sig01`` … — then the residual SD ``.sigma``, then the fixed effects
under R's names (``(Intercept)`` for formulaic's ``Intercept``; other columns keep sparselmm's names).
A term with k coefficients contributes ``sd1, cor21, cor31, sd2, cor32, sd3`` for k = 3 (lme4's
``Cv_to_Sv``), the same order as θ. :func:`sdcor` goes from θ and σ to these; :class:`SdCorMap` back, with
its Jacobian. Confidence intervals, the bootstrap, profiles and plots all name, select and label
parameters here.
"""

from __future__ import annotations

from numbers import Integral

import numpy as np
import pandas as pd

from .design import r_name
from .errors import ModelSpecError, NumericalError

__all__ = ["estimates", "parameter_names", "percent_labels", "sdcor"]


# ---- θ → (sd, cor, σ) and lme4's names -------------------------------------------------------------
def parameter_names(result) -> list[str]:
    """lme4's names of the parameters, in confint's order: ``.sig01``…, ``.sigma``, fixed effects.

    A glmer fit of a family without a dispersion (binomial, Poisson) has no ``.sigma``, as in lme4.

    Examples
    --------
    >>> import sparselmm
    >>> from sparselmm.parameters import parameter_names
    >>> m = sparselmm.lmer("Reaction ~ Days + (Days | Subject)", sparselmm.datasets.load("sleepstudy"))
    >>> parameter_names(m)
    ['.sig01', '.sig02', '.sig03', '.sigma', '(Intercept)', 'Days']
    """
    n_theta = result.design.n_theta
    family = getattr(result, "family", None)  # a glmer fit: σ only where the family has a dispersion
    sigma = [".sigma"] if family is None or family.has_scale else []
    return [f".sig{i + 1:02d}" for i in range(n_theta)] + sigma + fixed_r_names(result)


def fixed_r_names(result) -> list[str]:
    """The fixed-effect names as R prints them (``(Intercept)``; other names as sparselmm has them)."""
    return [r_name(n) for n in result.design.fixed_names]


def sdcor(design, theta: np.ndarray, sigma: float) -> np.ndarray:
    """Standard deviations and correlations of the random effects from θ and σ (lme4's ``Cv_to_Sv``).

    Per term, the lower triangle of ``σ² T Tᵀ`` as SDs on the diagonal and correlations below it, column by
    column (θ's order). A correlation with a zero SD is NaN, as R's ``cov2cor`` gives.
    """
    out = np.empty(design.n_theta)
    for t in design.terms:
        if not t.unstructured:  # diag: its SDs; cs: its SDs, then the common correlation (sparselmm.covstruct)
            out[t.theta_offset : t.theta_offset + t.n_theta] = t.structure.sdcor(t.params(theta), sigma)
            continue
        T = t.factor(theta)
        cov = sigma**2 * (T @ T.T)
        sd = np.sqrt(np.diag(cov))
        r, c = t.tril_indices()
        with np.errstate(invalid="ignore", divide="ignore"):
            vals = np.where(r == c, sd[r], cov[r, c] / (sd[r] * sd[c]))
        out[t.theta_offset : t.theta_offset + t.n_theta] = vals
    return out


def parameter_values(design, theta: np.ndarray, sigma: float, beta: np.ndarray) -> np.ndarray:
    """Every parameter in :func:`parameter_names`' order from θ, σ and β: SDs/correlations, σ, fixed effects."""
    return np.concatenate([sdcor(design, theta, sigma), [sigma], beta])


def estimates(result) -> pd.Series:
    """The estimates of :func:`parameter_names`' parameters: SDs/correlations, σ, fixed effects (a glmer fit of
    a family without a dispersion has no σ among them, as in :func:`parameter_names`)."""
    values = parameter_values(result.design, result.theta, result.sigma, result.fixef)
    family = getattr(result, "family", None)
    if family is not None and not family.has_scale:
        values = np.delete(values, result.design.n_theta)
    return pd.Series(values, index=parameter_names(result), name="estimate")


# ---- (sd, cor, σ) → θ ----------------------------------------------------------------------------
def psd_cholesky(A: np.ndarray) -> np.ndarray:
    """Lower Cholesky factor of a positive semi-definite matrix; a zero pivot gives a zero column."""
    k = A.shape[0]
    L = np.zeros_like(A)
    scale = max(float(np.max(np.abs(np.diag(A)))), 1e-300)
    for j in range(k):
        d = A[j, j] - L[j, :j] @ L[j, :j]
        if d <= 1e-13 * scale:
            if d < -1e-8 * scale:
                raise np.linalg.LinAlgError("not positive semi-definite")
            continue
        L[j, j] = np.sqrt(d)
        L[j + 1 :, j] = (A[j + 1 :, j] - L[j + 1 :, :j] @ L[j, :j]) / L[j, j]
    return L


class SdCorMap:
    """From lme4's ``(sd/cor…, σ)`` (ψ, in :func:`sdcor`'s order with σ last) to θ, with its Jacobian.

    Per term, θ is the lower triangle of the Cholesky factor of the SD/correlation matrix, over σ; a structured
    term's θ is its structure's :meth:`~sparselmm.covstruct.CovStructure.from_sdcor`. ``lower``/``upper`` are
    ψ's bounds (SD ≥ 0, −1 ≤ cor ≤ 1 or the structure's, σ ≥ 0); ``is_cor`` marks the correlations.
    """

    def __init__(self, design):
        self.design = design
        lower, upper, is_cor = [], [], []
        for t in design.terms:
            if not t.unstructured:  # a structure's SDs (≥ 0) and correlations within its own bounds
                sd = t.structure.is_sd()
                lower.extend(np.where(sd, 0.0, t.structure.lower))
                upper.extend(np.where(sd, np.inf, t.structure.upper))
                is_cor.extend(~sd)
                continue
            r, c = t.tril_indices()
            lower.extend(np.where(r == c, 0.0, -1.0))
            upper.extend(np.where(r == c, np.inf, 1.0))
            is_cor.extend(r != c)
        self.lower = np.array(lower + [0.0])
        self.upper = np.array(upper + [np.inf])
        self.is_cor = np.array(is_cor + [False], dtype=bool)

    def theta(self, psi: np.ndarray, jacobian: bool = False):
        """θ at ψ; with ``jacobian``, also ``∂θ/∂ψ`` (n_theta × (n_theta + 1), σ last)."""
        sigma = psi[-1]
        n_theta = self.design.n_theta
        theta = np.empty(n_theta)
        J = np.zeros((n_theta, n_theta + 1)) if jacobian else None
        for t in self.design.terms:
            sl = slice(t.theta_offset, t.theta_offset + t.n_theta)
            vals = psi[sl]
            if not t.unstructured:  # sparselmm.covstruct: s = sd / σ, the correlations mapped by the structure
                theta[sl] = t.structure.from_sdcor(vals, sigma)
                if jacobian:
                    J[sl, sl], J[sl, -1] = t.structure.from_sdcor_jacobian(vals, sigma)
                continue
            if t.k == 1:
                theta[t.theta_offset] = vals[0] / sigma
                if jacobian:
                    J[t.theta_offset, t.theta_offset] = 1.0 / sigma
                    J[t.theta_offset, -1] = -theta[t.theta_offset] / sigma
                continue
                theta[t.theta_offset] = vals[0] / sigma
                if jacobian:
                    J[t.theta_offset, t.theta_offset] = 1.0 / sigma
                continue
            r, c = t.tril_indices()
            S = np.zeros((t.k, t.k))
            S[r, c] = vals
            sd = np.diag(S).copy()
            below = np.tril(S, -1)  # the correlations
            R = np.eye(t.k) + below + below.T
            A = sd[:, None] * R * sd[None, :]
            C = psd_cholesky(A)
            theta[sl] = C[r, c] / sigma
            if jacobian:
                try:
                    J[sl, sl] = self._chol_jacobian(C, sd, R, r, c) / sigma
                except NumericalError:  # singular (an SD at 0, a correlation at ±1): one-sided differences
                    J[sl, sl] = self._fd_jacobian(vals, C, t.k, r, c, self.lower[sl], self.upper[sl]) / sigma
                J[sl, -1] = -theta[sl] / sigma
        return (theta, J) if jacobian else theta

    @staticmethod
    def _fd_jacobian(vals, C, k, r, c, lower, upper, h: float = 1e-7) -> np.ndarray:
        """``∂ tril(C) / ∂(sd/cor)`` by one-sided differences stepping into the bounds."""
        out = np.empty((r.size, r.size))
        base = C[r, c]
        for m in range(r.size):
            step = h * max(abs(vals[m]), 1.0)
            if vals[m] + step > upper[m]:
                step = -step
            v = vals.copy()
            v[m] += step
            S = np.zeros((k, k))
            S[r, c] = v
            sd = np.diag(S).copy()
            below = np.tril(S, -1)
            R = np.eye(k) + below + below.T
            out[:, m] = (psd_cholesky(sd[:, None] * R * sd[None, :])[r, c] - base) / step
        return out

    @staticmethod
    def _chol_jacobian(C, sd, R, r, c) -> np.ndarray:
        """``∂ tril(C) / ∂(sd/cor)`` for ``C Cᵀ = A = diag(sd) R diag(sd)``: ``dC = C Φ(C⁻¹ dA C⁻ᵀ)``."""
        k = C.shape[0]
        out = np.empty((r.size, r.size))
        if np.min(np.diag(C)) <= 1e-10 * max(float(np.max(np.diag(C))), 1e-300):
            raise NumericalError("the SD/correlation matrix is singular here: no derivative")
        Cinv = np.linalg.inv(C)
        for m, (i, j) in enumerate(zip(r, c)):
            dA = np.zeros((k, k))
            if i == j:  # an SD
                v = R[i] * sd
                dA[i, :] += v
                dA[:, i] += v
            else:  # a correlation
                dA[i, j] = dA[j, i] = sd[i] * sd[j]
            X = Cinv @ dA @ Cinv.T
            Phi = np.tril(X, -1) + np.diag(np.diag(X)) / 2
            out[:, m] = (C @ Phi)[r, c]
        return out

    def feasible(self, psi: np.ndarray, held: int) -> np.ndarray:
        """ψ with the correlations other than ψ[held] shrunk towards 0 until every term's SD/correlation
        matrix is positive semi-definite.

        At a singular fit the correlation matrix is singular, so holding one of its parameters at a new value
        with the others at their estimates usually leaves the cone (no θ exists there); shrinking the other
        correlations keeps the held one and reaches a valid matrix (at 0 only the held correlation, |x| < 1,
        is off the diagonal).
        """
        psi = psi.copy()
        free_cor = self.is_cor.copy()
        free_cor[held] = False
        try:
            self.theta(psi)
            return psi
        except np.linalg.LinAlgError:
            pass
        base = psi[free_cor].copy()
        for shrink in (0.999, 0.99, 0.95, 0.9, 0.8, 0.6, 0.4, 0.2, 0.0):
            psi[free_cor] = shrink * base
            try:
                self.theta(psi)
                return psi
            except np.linalg.LinAlgError:
                continue
        return psi

    def in_bounds(self, psi) -> bool:
        """σ > 0 and every SD and correlation within its bounds."""
        return psi[-1] > 0 and not (np.any(psi < self.lower) or np.any(psi > self.upper))


# ---- which parameters, at what level ---------------------------------------------------------------
def percent_labels(level: float) -> list[str]:
    """Column labels ``"2.5 %"``, ``"97.5 %"`` as R's ``format(100 * a, trim = TRUE, digits = 3)`` makes them."""
    a = (1 - level) / 2
    probs = [100 * a, 100 * (1 - a)]
    # R formats the two numbers together: enough decimals for 3 significant digits of each, then the most
    decimals = 0
    for p in probs:
        text = f"{p:.3g}"
        if "e" not in text and "." in text:
            decimals = max(decimals, len(text.split(".")[1].rstrip("0")))
    return [f"{p:.{decimals}f} %" for p in probs]


def check_level(level) -> float:
    """``level`` as a float strictly between 0 and 1, else :class:`ModelSpecError`."""
    try:
        value = float(level)
    except (TypeError, ValueError):
        raise ModelSpecError(f"level must be a number between 0 and 1 (e.g. 0.95), not {level!r}.") from None
    if not 0 < value < 1:
        raise ModelSpecError(f"level must be strictly between 0 and 1 (e.g. 0.95), not {level!r}.")
    return value


def select_parameters(parm, names: list[str], n_var: int) -> list[int]:
    """Positions selected by ``parm`` (lme4's ``get.which``), with a clear error for unknown names.

    ``parm`` is None (all), a name or list of names (``"Intercept"`` and ``"(Intercept)"`` both work),
    ``"theta_"`` (all variance parameters, ``.sigma`` included) or ``"beta_"`` (all fixed effects), or
    integer positions (0-based).
    """
    if parm is None:
        return list(range(len(names)))
    items = [parm] if isinstance(parm, (str, Integral)) else list(parm)
    chosen: set[int] = set()
    unknown = []
    for item in items:
        if isinstance(item, Integral) and not isinstance(item, bool):
            if not 0 <= int(item) < len(names):
                raise ModelSpecError(f"parm position {item} is out of range; the model has {len(names)} parameters.")
            chosen.add(int(item))
        elif item == "theta_":
            chosen.update(range(n_var))
        elif item == "beta_":
            chosen.update(range(n_var, len(names)))
        elif isinstance(item, str) and r_name(item) in names:
            chosen.add(names.index(r_name(item)))
        else:
            unknown.append(item)
    if unknown:
        raise ModelSpecError(
            f"parm names unknown parameter(s) {unknown}; the parameters are {names} "
            "(or use 'theta_' for the variance parameters, 'beta_' for the fixed effects)."
        )
    return sorted(chosen)
