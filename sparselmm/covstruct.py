"""Covariance structures of a random-effects term: maps from the term's own parameters to its factor.

A term ``(x + … | g)`` with k coefficients has covariance ``Σ = σ² T Tᵀ`` with ``T`` its k × k
lower-triangular relative factor (one block of ``Λθ``). A *structure* says which ``T`` are allowed and how
they are parametrised; the optimiser works on the structure's parameters (the term's slice of θ), and every
engine (CHOLMOD, the Schur factors, the dense and matrix-free paths) sees only ``T``. glmmTMB 1.1's syntax
and definitions (its vignette ``covstruct``: "Heterogeneous unstructured ``us`` n(n+1)/2 parameters,
heterogeneous compound symmetry ``cs`` n+1, heterogeneous diagonal ``diag`` n"):

* ``us(x + … | g)`` — unstructured, the same as ``(x + … | g)``: θ is the lower triangle of ``T`` column by
  column (lme4's θ), diagonal entries ≥ 0.
* ``diag(x + … | g)`` — independent effects: θ is the k diagonal entries of ``T`` (each ≥ 0), off-diagonals 0.
  Unlike lme4's ``||`` it keeps factor terms whole: ``diag(0 + f | g)`` has one variance per level of f.
* ``cs(x + … | g)`` — heterogeneous compound symmetry ``Σ = D R D``, ``D = diag(sd₁ … sd_k)``, R with a
  common correlation ρ off the diagonal. θ = ``(s₁ … s_k, ρ)`` with ``s_i = sd_i / σ`` ≥ 0 and
  ``−1/(k−1) ≤ ρ ≤ 1``; ``T = diag(s) L_R`` with ``L_R`` the Cholesky factor of R, which has a closed form
  (every column of ``L_R`` is constant below its diagonal): with ``S₀ = 0``,
  ``d_j = √(1 − S_j)``, ``c_j = (ρ − S_j) / d_j``, ``S_{j+1} = S_j + c_j²``; ``L_R[j, j] = d_j``,
  ``L_R[i, j] = c_j`` (i > j). glmmTMB refuses nothing for k = 1 but its fit has no likelihood (NA logLik,
  a non-positive-definite Hessian, and ``print`` fails); here k = 1 is refused.
* ``ar1(0 + f | g)`` — AR(1) over the levels of a time factor f, in the factor's level order (glmmTMB:
  "unit spaced levels"), one variance: ``Σ_ij = sd² ρ^|i−j|``. θ = ``(s, ρ)``, ``s = sd / σ`` ≥ 0,
  −1 ≤ ρ ≤ 1 (glmmTMB's ``phi``). ``T = s L`` with the closed-form Cholesky factor of the AR(1) correlation
  matrix, ``L[i, 0] = ρ^i`` and ``L[i, j] = ρ^(i−j) √(1 − ρ²)`` for 1 ≤ j ≤ i (the innovations of the
  process). glmmTMB 1.1 stops unless the term is a single factor and warns on an intercept; here both, and
  a single column (a numeric variable or a one-level factor), are refused.
* ``toep(x + … | g)`` — heterogeneous Toeplitz ``Σ = D R D``, ``R_ij = ρ_|i−j|`` (k SDs, k − 1 correlations by
  lag, as glmmTMB). glmmTMB maps each ρ_l to (−1, 1) on its own, so part of its parameter space is not
  positive definite; here θ = ``(s₁ … s_k, φ₁ … φ_{k−1})`` with φ the partial autocorrelations in [−1, 1],
  which Durbin–Levinson maps one to one onto the positive (semi-)definite Toeplitz correlation matrices —
  every θ in the box is a covariance, and the optimum is glmmTMB's. With ``a_m`` the order-m prediction
  coefficients (``a_{m,m} = φ_m``, ``a_{m,j} = a_{m−1,j} − φ_m a_{m−1,m−j}``) and innovation variances
  ``v_m = ∏_{l≤m} (1 − φ_l²)``, ``A R Aᵀ = diag(v)`` for the unit lower-triangular ``A`` with
  ``A[m, m−j] = −a_{m,j}``, so ``L_R = A⁻¹ diag(√v)`` and ``T = diag(s) L_R`` (ar1 is φ = (ρ, 0, …, 0)).
  :meth:`Toeplitz.sdcor` reports the lag correlations ρ_l, glmmTMB's parameters.

Each structure gives its factor, the Jacobian ``∂ tril(T) / ∂θ_term`` (the lower triangle column by column,
lme4's order), which the exact deviance gradient in the entries of ``T`` (:mod:`sparselmm.deviance`)
composes with, its bounds, its start and its parameters' names and values on the SD/correlation scale.
"""

from __future__ import annotations

from functools import cache, partial

import numpy as np
from scipy.linalg import solve_triangular

from .errors import DataError, FormulaError, ModelSpecError
from .formula import STRUCTURES, split_lhs_terms

__all__ = ["STRUCTURES", "CovStructure", "make_structure", "refuse_structured"]


@cache
def tril_by_column(k: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of the lower triangle of a k × k matrix, column by column (lme4's θ order)."""
    cols, rows = np.triu_indices(k)
    return rows, cols


def r_name(name: str) -> str:
    """R's name for a model-matrix column: formulaic's ``Intercept`` is lme4's ``(Intercept)``."""
    return "(Intercept)" if name == "Intercept" else name


class CovStructure:
    """The map from a term's parameters (its slice of θ) to its k × k lower-triangular factor ``T``.

    Attributes
    ----------
    name : str
        ``"us"``, ``"diag"``, ``"cs"``, ``"ar1"`` or ``"toep"``.
    k : int
        Number of coefficients of the term.
    n_params : int
        Number of parameters (the term's elements of θ).
    lower, upper : ndarray
        Bounds of the parameters.
    start : ndarray
        The default start (lme4's: 1 on the diagonal, 0 elsewhere; every correlation parameter 0 for
        ``cs``, ``ar1`` and ``toep``).
    """

    name = "us"

    def __init__(self, k: int):
        self.k = int(k)
        self.rows, self.cols = tril_by_column(self.k)
        self.n_params = self.rows.size
        on_diag = self.rows == self.cols
        self.lower = np.where(on_diag, 0.0, -np.inf)
        self.upper = np.full(self.n_params, np.inf)
        self.start = on_diag.astype(float)

    @property
    def is_unstructured(self) -> bool:
        """θ is the lower triangle of ``T`` itself (``us``, and any structure of a single coefficient
        whose map is the identity)."""
        return True

    def factor(self, params: np.ndarray) -> np.ndarray:
        """The k × k lower-triangular factor ``T`` at the term's parameters."""
        T = np.zeros((self.k, self.k))
        T[self.rows, self.cols] = params
        return T

    def jacobian(self, params: np.ndarray) -> np.ndarray:
        """``∂ tril(T) / ∂params``: (k(k+1)/2) × n_params, the lower triangle column by column."""
        return np.eye(self.n_params)

    def param_names(self, group: str, cnms: list[str]) -> list[str]:
        """Names of the parameters, ``g.(Intercept)``, ``g.Days.(Intercept)`` (lme4's θ names)."""
        return [
            f"{group}.{r_name(cnms[i])}" if i == j else f"{group}.{r_name(cnms[i])}.{r_name(cnms[j])}"
            for i, j in zip(self.rows, self.cols)
        ]

    def sdcor(self, params: np.ndarray, sigma: float) -> np.ndarray:
        """The parameters on lme4's scale, in their order: SDs on the diagonal, correlations below it."""
        T = self.factor(params)
        cov = sigma**2 * (T @ T.T)
        sd = np.sqrt(np.diag(cov))
        r, c = self.rows, self.cols
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(r == c, sd[r], cov[r, c] / (sd[r] * sd[c]))

    def is_sd(self) -> np.ndarray:
        """Which parameters are (relative) standard deviations (a zero one makes the fit singular)."""
        return self.rows == self.cols

    def from_sdcor(self, values: np.ndarray, sigma: float) -> np.ndarray:
        """The parameters at SDs/correlations ``values`` (:meth:`sdcor`'s order) and σ, the inverse of :meth:`sdcor`
        for the structured terms (``s = sd / σ``, correlations as they are); an unstructured term's inverse is
        :class:`sparselmm.parameters.SdCorMap`'s Cholesky factor."""
        out = np.array(values, dtype=float)
        sd = self.is_sd()
        out[sd] = out[sd] / sigma
        return out

    def from_sdcor_jacobian(self, values: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
        """``∂params/∂values`` (n_params × n_params) and ``∂params/∂σ`` of :meth:`from_sdcor`."""
        values = np.asarray(values, dtype=float)
        sd = self.is_sd()
        return np.diag(np.where(sd, 1.0 / sigma, 1.0)), np.where(sd, -values / sigma**2, 0.0)

    def __repr__(self) -> str:
        return f"{self.name}(k={self.k})"


class Diagonal(CovStructure):
    """``diag(x + … | g)``: ``T = diag(θ_term)``, one relative SD per coefficient, no correlations."""

    name = "diag"

    def __init__(self, k: int):
        super().__init__(k)
        self.n_params = self.k
        self.lower = np.zeros(self.k)
        self.upper = np.full(self.k, np.inf)
        self.start = np.ones(self.k)
        self._diag_pos = np.flatnonzero(self.rows == self.cols)

    @property
    def is_unstructured(self) -> bool:
        return self.k == 1

    def factor(self, params: np.ndarray) -> np.ndarray:
        return np.diag(np.asarray(params, dtype=float))

    def jacobian(self, params: np.ndarray) -> np.ndarray:
        J = np.zeros((self.rows.size, self.k))
        J[self._diag_pos, np.arange(self.k)] = 1.0
        return J

    def param_names(self, group: str, cnms: list[str]) -> list[str]:
        return [f"{group}.{r_name(c)}" for c in cnms]

    def sdcor(self, params: np.ndarray, sigma: float) -> np.ndarray:
        return sigma * np.asarray(params, dtype=float)

    def is_sd(self) -> np.ndarray:
        return np.ones(self.k, dtype=bool)


class CompoundSymmetry(CovStructure):
    """``cs(x + … | g)``: ``T = diag(s) L_R(ρ)``, θ_term = ``(s₁ … s_k, ρ)`` (see the module docstring)."""

    name = "cs"
    FD_STEP = 1e-7
    EDGE = 1e-10  # a pivot d_j below this: R is singular (ρ on a bound), the Jacobian by one-sided differences

    def __init__(self, k: int):
        super().__init__(k)
        if self.k < 2:
            raise ValueError("compound symmetry needs at least two coefficients")
        self.n_params = self.k + 1
        self.lower = np.append(np.zeros(self.k), -1.0 / (self.k - 1))
        self.upper = np.append(np.full(self.k, np.inf), 1.0)
        self.start = np.append(np.ones(self.k), 0.0)

    @property
    def is_unstructured(self) -> bool:
        return False

    def _chol_corr(self, rho: float, derivative: bool = False):
        """``L_R`` (and ``∂L_R/∂ρ``) by the closed form; a zero pivot gives a zero column below it."""
        k = self.k
        L = np.zeros((k, k))
        dL = np.zeros((k, k))
        S = dS = 0.0
        edge = False
        for j in range(k):
            rest = 1.0 - S
            if rest < -1e-12 or not np.isfinite(rest):  # outside the bounds: no factor
                L[:] = np.nan
                return (L, dL, True) if derivative else L
            d = np.sqrt(max(rest, 0.0))
            L[j, j] = d
            if d <= self.EDGE:
                edge = True
                break  # the remaining columns are 0 (R is singular; psd completion)
            dd = -dS / (2.0 * d)
            dL[j, j] = dd
            if j < k - 1:
                c = (rho - S) / d
                dc = (1.0 - dS) / d - c * dd / d
                L[j + 1 :, j] = c
                dL[j + 1 :, j] = dc
                S, dS = S + c * c, dS + 2.0 * c * dc
        return (L, dL, edge) if derivative else L

    def factor(self, params: np.ndarray) -> np.ndarray:
        params = np.asarray(params, dtype=float)
        return params[: self.k, None] * self._chol_corr(float(params[self.k]))

    def jacobian(self, params: np.ndarray) -> np.ndarray:
        params = np.asarray(params, dtype=float)
        s, rho = params[: self.k], float(params[self.k])
        L, dL, edge = self._chol_corr(rho, derivative=True)
        r, c = self.rows, self.cols
        J = np.zeros((r.size, self.n_params))
        for i in range(self.k):  # ∂T/∂s_i: row i of L_R
            on_row = r == i
            J[on_row, i] = L[i, c[on_row]]
        if edge:  # ρ on a bound: one-sided difference into the interior
            h = self.FD_STEP if rho - self.FD_STEP < self.lower[-1] else -self.FD_STEP
            L2 = self._chol_corr(rho + h)
            J[:, self.k] = ((s[:, None] * (L2 - L))[r, c]) / h
        else:
            J[:, self.k] = (s[:, None] * dL)[r, c]
        return J

    def param_names(self, group: str, cnms: list[str]) -> list[str]:
        return [f"{group}.{r_name(c)}" for c in cnms] + [f"{group}.rho"]

    def sdcor(self, params: np.ndarray, sigma: float) -> np.ndarray:
        params = np.asarray(params, dtype=float)
        return np.append(sigma * params[: self.k], params[self.k])

    def is_sd(self) -> np.ndarray:
        return np.append(np.ones(self.k, dtype=bool), False)


def _one_sided(fun, x: float, lower: float, step: float) -> np.ndarray:
    """``(fun(x ± step) − fun(x)) / ±step`` into the interior from a bound (lower if ``x`` is at it, else upper),
    where the analytic derivative of a correlation factor is infinite (a √(1 − ρ²) at ρ = ±1)."""
    h = step if x - step < lower else -step
    return (fun(x + h) - fun(x)) / h


class AR1(CovStructure):
    """``ar1(0 + f | g)``: ``T = s L(ρ)``, θ_term = ``(s, ρ)`` (see the module docstring)."""

    name = "ar1"
    FD_STEP = 1e-7
    EDGE = 1e-10  # √(1 − ρ²) below this: ρ on a bound, the ρ column of the Jacobian by a one-sided difference

    def __init__(self, k: int):
        super().__init__(k)
        if self.k < 2:
            raise ValueError("AR(1) needs at least two coefficients")
        self.n_params = 2
        self.lower = np.array([0.0, -1.0])
        self.upper = np.array([np.inf, 1.0])
        self.start = np.array([1.0, 0.0])
        self._lag = self.rows - self.cols
        self._first = self.cols == 0

    @property
    def is_unstructured(self) -> bool:
        return False

    def _tril(self, rho: float, derivative: bool = False):
        """The lower triangle of ``L(ρ)`` column by column (and its ρ-derivative, None on a bound)."""
        lag, first = self._lag, self._first
        rest = 1.0 - rho * rho
        if rest < -1e-12 or not np.isfinite(rest):  # outside the bounds: no factor
            vals = np.full(lag.size, np.nan)
            return (vals, None) if derivative else vals
        c = np.sqrt(max(rest, 0.0))
        p = rho ** lag.astype(float)  # ρ^0 = 1, also at ρ = 0
        vals = np.where(first, p, p * c)
        if not derivative:
            return vals
        if c <= self.EDGE:
            return vals, None
        dp = np.where(lag > 0, lag * rho ** np.maximum(lag - 1, 0).astype(float), 0.0)
        return vals, np.where(first, dp, dp * c - p * rho / c)

    def factor(self, params: np.ndarray) -> np.ndarray:
        params = np.asarray(params, dtype=float)
        T = np.zeros((self.k, self.k))
        T[self.rows, self.cols] = params[0] * self._tril(float(params[1]))
        return T

    def jacobian(self, params: np.ndarray) -> np.ndarray:
        params = np.asarray(params, dtype=float)
        s, rho = float(params[0]), float(params[1])
        vals, dvals = self._tril(rho, derivative=True)
        if dvals is None:
            dvals = _one_sided(self._tril, rho, self.lower[1], self.FD_STEP)
        return np.column_stack([vals, s * dvals])

    def param_names(self, group: str, cnms: list[str]) -> list[str]:
        return [f"{group}.sd", f"{group}.rho"]

    def sdcor(self, params: np.ndarray, sigma: float) -> np.ndarray:
        params = np.asarray(params, dtype=float)
        return np.array([sigma * params[0], params[1]])

    def is_sd(self) -> np.ndarray:
        return np.array([True, False])


def pacf_to_acf(phi: np.ndarray) -> np.ndarray:
    """The autocorrelations ρ₁ … ρ_{k−1} of the partial autocorrelations φ₁ … φ_{k−1} (Durbin–Levinson)."""
    phi = np.asarray(phi, dtype=float)
    return Toeplitz(phi.size + 1).chol_corr(phi)[1:, 0]


def acf_to_pacf(rho: np.ndarray) -> np.ndarray:
    """The partial autocorrelations of the autocorrelations ρ₁ … ρ_{k−1} (Durbin–Levinson); the inverse of
    :func:`pacf_to_acf` on the positive-definite Toeplitz correlation matrices."""
    r = np.concatenate([[1.0], np.asarray(rho, dtype=float)])
    phi, a, v = np.empty(r.size - 1), np.zeros(0), 1.0
    for m in range(1, r.size):
        f = (r[m] - a @ r[m - 1 : 0 : -1]) / v
        a = np.append(a - f * a[::-1], f)
        v *= 1.0 - f * f
        phi[m - 1] = f
    return phi


class Toeplitz(CovStructure):
    """``toep(x + … | g)``: ``T = diag(s) L_R(φ)``, θ_term = ``(s₁ … s_k, φ₁ … φ_{k−1})`` with φ the partial
    autocorrelations (see the module docstring); :meth:`sdcor` reports the lag correlations."""

    name = "toep"
    FD_STEP = 1e-7
    EDGE = 1e-10  # √(1 − φ²) below this: φ on a bound, its Jacobian column by a one-sided difference

    def __init__(self, k: int):
        super().__init__(k)
        if self.k < 2:
            raise ValueError("a Toeplitz structure needs at least two coefficients")
        k = self.k
        self.n_params = 2 * k - 1
        self.lower = np.append(np.zeros(k), np.full(k - 1, -1.0))
        self.upper = np.append(np.full(k, np.inf), np.ones(k - 1))
        self.start = np.append(np.ones(k), np.zeros(k - 1))

    @property
    def is_unstructured(self) -> bool:
        return False

    def _levinson(self, phi: np.ndarray, derivative: bool = False):
        """``A`` (unit lower triangular), the innovation variances ``v`` and, with ``derivative``,
        ``∂A/∂φ_p`` ((k−1) × k × k) by forward differentiation of the Durbin–Levinson recursion."""
        k = self.k
        A, v = np.eye(k), np.ones(k)
        dA = np.zeros((k - 1, k, k)) if derivative else None
        a, da = np.zeros(0), np.zeros((k - 1, 0))
        for m in range(1, k):
            f = phi[m - 1]
            new = np.append(a - f * a[::-1], f)  # a_{m,j} = a_{m−1,j} − φ_m a_{m−1,m−j}; a_{m,m} = φ_m
            v[m] = v[m - 1] * (1.0 - f * f)
            A[m, :m] = -new[::-1]  # A[m, m−j] = −a_{m,j}
            if derivative:
                dnew = np.zeros((k - 1, m))
                dnew[:, : m - 1] = da - f * da[:, ::-1]
                dnew[m - 1, : m - 1] -= a[::-1]
                dnew[m - 1, m - 1] = 1.0
                dA[:, m, :m] = -dnew[:, ::-1]
                da = dnew
            a = new
        return A, v, dA

    def chol_corr(self, phi: np.ndarray) -> np.ndarray:
        """``L_R = A⁻¹ diag(√v)``, the Cholesky factor of the Toeplitz correlation matrix; NaN outside the box."""
        phi = np.asarray(phi, dtype=float)
        if np.any(~np.isfinite(phi)) or np.any(np.abs(phi) > 1.0 + 1e-12):
            return np.full((self.k, self.k), np.nan)
        A, v, _ = self._levinson(phi)
        Ainv = solve_triangular(A, np.eye(self.k), lower=True, unit_diagonal=True)
        return Ainv * np.sqrt(np.maximum(v, 0.0))[None, :]

    def factor(self, params: np.ndarray) -> np.ndarray:
        params = np.asarray(params, dtype=float)
        return params[: self.k, None] * self.chol_corr(params[self.k :])

    def jacobian(self, params: np.ndarray) -> np.ndarray:
        params = np.asarray(params, dtype=float)
        k, r, c = self.k, self.rows, self.cols
        s, phi = params[:k], params[k:]
        A, v, dA = self._levinson(phi, derivative=True)
        Ainv = solve_triangular(A, np.eye(k), lower=True, unit_diagonal=True)
        sv = np.sqrt(np.maximum(v, 0.0))
        L = Ainv * sv[None, :]
        J = np.zeros((r.size, self.n_params))
        for i in range(k):  # ∂T/∂s_i: row i of L_R
            on_row = r == i
            J[on_row, i] = L[i, c[on_row]]
        for p in range(k - 1):
            one_minus = 1.0 - phi[p] ** 2
            if np.sqrt(max(one_minus, 0.0)) <= self.EDGE:  # φ_p on a bound: ∂√v/∂φ_p is infinite there
                J[:, k + p] = _one_sided(partial(self._factor_with, params, k + p), phi[p], -1.0, self.FD_STEP)
                continue
            # ∂√v_m/∂φ_p = −√v_m φ_p / (1 − φ_p²) for m > p (v_m has the factor 1 − φ_p² from m = p + 1 on)
            dsv = np.where(np.arange(k) > p, -sv * phi[p] / one_minus, 0.0)
            dL = -Ainv @ dA[p] @ L + Ainv * dsv[None, :]  # d(A⁻¹ S) = −A⁻¹ dA A⁻¹ S + A⁻¹ dS
            J[:, k + p] = (s[:, None] * dL)[r, c]
        return J

    def _factor_with(self, params: np.ndarray, index: int, value: float) -> np.ndarray:
        """tril(T) with ``params[index]`` replaced by ``value``."""
        x = np.array(params, dtype=float)
        x[index] = value
        return self.factor(x)[self.rows, self.cols]

    def param_names(self, group: str, cnms: list[str]) -> list[str]:
        lags = [f"{group}.pacf{lag}" for lag in range(1, self.k)]
        return [f"{group}.{r_name(c)}" for c in cnms] + lags

    def sdcor(self, params: np.ndarray, sigma: float) -> np.ndarray:
        """σ s₁ … σ s_k, then the lag correlations ρ₁ … ρ_{k−1} (glmmTMB's), not θ's partial ones."""
        params = np.asarray(params, dtype=float)
        return np.append(sigma * params[: self.k], self.chol_corr(params[self.k :])[1:, 0])

    def is_sd(self) -> np.ndarray:
        return np.append(np.ones(self.k, dtype=bool), np.zeros(self.k - 1, dtype=bool))

    def from_sdcor(self, values: np.ndarray, sigma: float) -> np.ndarray:
        """θ_term from the SDs and the lag correlations; ``numpy.linalg.LinAlgError`` where the lag correlations
        are not those of a positive-definite Toeplitz matrix (a partial autocorrelation outside (−1, 1))."""
        values = np.asarray(values, dtype=float)
        phi = acf_to_pacf(values[self.k :])
        if not np.all(np.abs(phi) < 1.0):
            raise np.linalg.LinAlgError("the lag correlations are not those of a positive-definite Toeplitz matrix")
        return np.append(values[: self.k] / sigma, phi)

    def from_sdcor_jacobian(self, values: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
        from .optimize import fd_gradient  # the package's one central-difference routine

        values = np.asarray(values, dtype=float)
        J, dsigma = super().from_sdcor_jacobian(values, sigma)
        k = self.k
        J[k:, k:] = fd_gradient(acf_to_pacf, values[k:], h=1e-7).T
        return J, dsigma


def _time_variable(term: str) -> str:
    """The variable of a term ``ar1(0 + t | g)`` as :class:`~sparselmm.formula.RandomTerm` prints it (for
    messages; ``"t"`` if it cannot be read)."""
    try:
        _, pieces = split_lhs_terms(term[term.index("(") + 1 : term.rindex("|")])
    except ValueError:
        return "t"
    return pieces[0] if len(pieces) == 1 else "t"


def refuse_structured(design, what: str, alternative: str = "") -> None:
    """A :class:`~sparselmm.ModelSpecError` naming the terms when ``design`` has covariance-structure terms
    (``diag`` with several coefficients, ``cs``, ``ar1``, ``toep``), for a computation not yet written for them."""
    terms = design.structured_terms() if hasattr(design, "structured_terms") else []
    if terms:
        names = ", ".join(str(t.term) for t in terms)
        extra = f", {alternative}" if alternative else ""
        raise ModelSpecError(
            f"{what} are not available yet for models with covariance-structure terms ({names}): "
            f"fit the unstructured term (x | g) for them{extra}."
        )


def make_structure(name: str, k: int, term: str = "") -> CovStructure:
    """The structure ``name`` for a term of ``k`` coefficients.

    Raises
    ------
    sparselmm.FormulaError
        An unknown name, or ``cs`` or ``toep`` with a single coefficient.
    sparselmm.DataError
        ``ar1`` with a single column (its time variable is numeric or has one level).
    """
    if name == "us":
        return CovStructure(k)
    if name == "diag":
        return Diagonal(k)
    if name == "cs":
        if k < 2:
            raise FormulaError(
                f"The compound-symmetry term {term} has a single coefficient, so it has no correlation: "
                "write (1 | g) or diag(1 | g) (glmmTMB's fit of cs() with one coefficient has no likelihood)."
            )
        return CompoundSymmetry(k)
    if name == "toep":
        if k < 2:
            raise FormulaError(
                f"The Toeplitz term {term} has a single coefficient, so it has no correlation: write (1 | g) or "
                "diag(1 | g)."
            )
        return Toeplitz(k)
    if name == "ar1":
        if k < 2:
            t = _time_variable(term)
            raise DataError(
                f"The AR(1) term {term} has a single column: ar1 needs its time variable to be a factor with at "
                f"least two levels, and {t} is numeric (or has one level). Make it a factor whose levels are the "
                f"times in order, e.g. data['{t}'] = pd.Categorical(data['{t}'], categories=[<the times in order>]), "
                f"or write ar1(0 + C({t}) | g)."
            )
        return AR1(k)
    raise FormulaError(f"Unknown covariance structure {name!r} in {term}: use one of {STRUCTURES}.")
