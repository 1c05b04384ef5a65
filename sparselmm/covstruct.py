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

Each structure gives its factor, the Jacobian ``∂ tril(T) / ∂θ_term`` (the lower triangle column by column,
lme4's order), which the exact deviance gradient in the entries of ``T`` (:mod:`sparselmm.deviance`)
composes with, its bounds, its start and its parameters' names and values on the SD/correlation scale.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from .errors import FormulaError, ModelSpecError

__all__ = ["STRUCTURES", "CovStructure", "make_structure", "refuse_structured"]

STRUCTURES = ("us", "diag", "cs")


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
        ``"us"``, ``"diag"`` or ``"cs"``.
    k : int
        Number of coefficients of the term.
    n_params : int
        Number of parameters (the term's elements of θ).
    lower, upper : ndarray
        Bounds of the parameters.
    start : ndarray
        The default start (lme4's: 1 on the diagonal, 0 elsewhere; ρ = 0 for ``cs``).
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


def refuse_structured(design, what: str, alternative: str = "") -> None:
    """A :class:`~sparselmm.ModelSpecError` naming the terms when ``design`` has covariance-structure terms
    (``diag`` with several coefficients, ``cs``), for a computation not yet written for them."""
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
        An unknown name, or ``cs`` with a single coefficient.
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
    raise FormulaError(f"Unknown covariance structure {name!r} in {term}: use one of {STRUCTURES}.")
