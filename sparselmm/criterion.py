"""The profiled criterion from its pieces, with exact gradients, for the refits.

A bootstrap replicate, a profile point and a refit need the criterion at θ split into its pieces (ML:
``ν = n``; REML: ``ν = n − p`` and ``ld`` includes ``log|R_X|²``)::

    f(θ) = ld(θ) − Σ log wᵢ + ν (1 + log(2π r²(θ) / ν))

with the gradients ``∂ld/∂θ`` and ``∂r²/∂θ`` apart (the profiles work in ``(sd/cor, σ)``, where they
combine differently). Two evaluators give them:

* :class:`DenseCriterion`, dense q × q algebra for small ``q`` and any terms. With ``A = ΛᵀGΛ + I``
  (``G = ZᵀWZ``), ``B = ΛᵀZᵀWX`` and ``E_i = ∂Λ/∂θ_i``::

      ∂ld/∂θ_i = 2 tr(M E_i),  M = A⁻¹ΛᵀG                                    (ML)
                               M = A⁻¹ΛᵀG + A⁻¹B S⁻¹ (BᵀA⁻¹ΛᵀG − XᵀWZ)       (REML, S = R_XᵀR_X)
      ∂r²/∂θ_i = −2 uᵀE_iᵀ a,  a = ZᵀW(y − Xβ̂) − GΛu                         (envelope theorem)

  (REML differentiates ``log|[[A, B], [Bᵀ, XᵀWX]]|``.) It exists beside
  :class:`~sparselmm.deviance.ProfiledDeviance` because a refit loop evaluates it thousands of times and
  its dozen LAPACK/BLAS calls cost a fraction of the general solve's per-term bookkeeping (BENCHMARKS.md).
* :class:`FactorCriterion`, the pieces of a :class:`~sparselmm.deviance.ProfiledDeviance` with an analytic
  gradient (the dense-Schur factors): ``∂r²/∂θ`` as above from the sparse cross-products, ``∂ld/∂θ`` as the
  criterion's gradient minus ``ν/r² ∂r²/∂θ``. It can hold factors at θ̂ so that a bootstrap replicate's
  first evaluation costs two triangular solves (``∂ld/∂θ`` does not depend on ``y``).

:func:`evaluator` picks one (:data:`~sparselmm.linalg.thresholds.DENSE_MAX_Q`); the minimiser that uses
them is :func:`sparselmm.newton.quasi_newton`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg.lapack import dpotrf, dpotrs, dtrtrs

from .errors import NumericalError
from .linalg.dense import DenseFactor, lambda_pattern
from .linalg.thresholds import DENSE_FALLBACK_Q, DENSE_MAX_Q

__all__ = [
    "DenseCriterion",
    "FactorCriterion",
    "CriterionPieces",
    "dense_size",
    "evaluator",
]

LOG_2PI = float(np.log(2 * np.pi))
# the dense evaluator costs ~3q³ flops per evaluation with its gradient plus ~25 numpy calls: it is the
# fastest up to DENSE_MAX_Q; above it a factor with an analytic gradient is preferred (crossed_small, q = 420
# = 300 + 120: the Schur factor eliminates the 300 and works on a 120² block), and without one the dense
# evaluator is used up to DENSE_FALLBACK_Q, then derivative-free BOBYQA (both in sparselmm.linalg.thresholds)


def dense_size(devfun) -> int:
    """The order of the dense block a factorisation of ``devfun`` works on (q for CHOLMOD / dense): what the
    refit loops' BLAS-thread limit (:func:`sparselmm.linalg.threads.blas_threads`) measures."""
    q2 = getattr(getattr(devfun, "chol", None), "q2", None)
    return int(q2) if q2 is not None else int(devfun.design.q)


@dataclass
class CriterionPieces:
    """The criterion's pieces at one θ (see the module docstring).

    ``beta`` is on the scale of the data (shift added back); ``Lu = Λu`` (the random effects over σ).
    Gradients are None when not asked for.
    """

    theta: np.ndarray
    ld: float
    r2: float
    beta: np.ndarray
    dld: np.ndarray | None = None
    dr2: np.ndarray | None = None
    Lu: np.ndarray | None = None


class _PiecesCriterion:
    """The criterion from its pieces; shared by both evaluators."""

    reml: bool
    n: int
    p: int
    slw: float
    n_theta: int

    @property
    def nu(self) -> int:
        return self.n - self.p if self.reml else self.n

    def value(self, parts: CriterionPieces) -> float:
        nu = self.nu
        return float(parts.ld - self.slw + nu * (1.0 + LOG_2PI + np.log(parts.r2 / nu)))

    def value_and_gradient(self, theta) -> tuple[float, np.ndarray]:
        parts = self.parts(theta, gradient=True)
        return self.value(parts), parts.dld + (self.nu / parts.r2) * parts.dr2

    def __call__(self, theta) -> float:
        try:
            return self.value(self.parts(theta, gradient=False))
        except NumericalError:
            return float("inf")

    def parts(self, theta, gradient: bool = True) -> CriterionPieces:  # pragma: no cover - abstract
        raise NotImplementedError


class DenseCriterion(_PiecesCriterion):
    """The profiled criterion and its exact gradient in dense q × q algebra (small q, any terms).

    Parameters
    ----------
    terms : list of ReTerm
    cross : CrossProducts
    reml : bool
    factor : DenseFactor, optional
        The dense factor of this ``ZᵀWZ`` to work in (a deviance function on the dense path holds one); by
        default one is built.
    """

    def __init__(self, terms, cross, reml: bool, factor: DenseFactor | None = None):
        self.terms = terms
        self.reml = bool(reml)
        self.q = cross.ZtWZ.shape[0]
        self.p = cross.XtWX.shape[0]
        self.n = cross.n
        self.slw = cross.sum_log_w
        self.n_theta = sum(t.n_theta for t in terms)
        self.factor = DenseFactor(terms, cross.ZtWZ) if factor is None else factor
        self.G = self.factor.G
        self.ZtX = np.ascontiguousarray(cross.ZtWX, dtype=float).reshape(self.q, self.p)
        self.XtX = np.asarray(cross.XtWX, dtype=float)
        self.rows, self.cols, self.idx = self.factor.rows, self.factor.cols, self.factor.idx
        self.set_response(cross.ZtWy, cross.XtWy, cross.ytWy, cross.beta_shift)

    def set_response(self, ZtWy, XtWy, ytWy: float, beta_shift) -> None:
        """Use another (shifted) response: ``ZᵀWy``, ``XᵀWy``, ``yᵀWy`` and the shift ``β₀`` added to β."""
        self.Zty = np.asarray(ZtWy, dtype=float).ravel()
        self.Xty = np.asarray(XtWy, dtype=float).ravel()
        self.yty = float(ytWy)
        self.beta_shift = np.asarray(beta_shift, dtype=float).ravel()
        self.ZtXy = np.column_stack([self.ZtX, self.Zty])
        self._XtZ = np.ascontiguousarray(self.ZtX.T)
        # the augmented matrix's fixed lower-right block [[XᵀWX, XᵀWy], [yᵀWX, yᵀWy]]
        self._tail = np.block([[self.XtX, self.Xty[:, None]], [self.Xty[None, :], np.array([[self.yty]])]])

    def with_response(self, ZtWy, XtWy, ytWy: float, beta_shift) -> DenseCriterion:
        """A copy for another response, sharing ``G`` and the pattern."""
        new = object.__new__(DenseCriterion)
        new.__dict__.update(self.__dict__)
        new.factor = self.factor.workspace_copy()  # G and the pattern shared, its own factor
        new.set_response(ZtWy, XtWy, ytWy, beta_shift)
        return new

    def with_cross(self, cross, reml: bool | None = None) -> DenseCriterion:
        """A copy for other cross-products with the same ``ZᵀWZ`` (e.g. columns moved to the offset)."""
        new = object.__new__(DenseCriterion)
        new.__dict__.update(self.__dict__)
        new.factor = self.factor.workspace_copy()  # G and the pattern shared, its own factor
        new.reml = self.reml if reml is None else bool(reml)
        new.p = cross.XtWX.shape[0]
        new.ZtX = np.ascontiguousarray(cross.ZtWX, dtype=float).reshape(self.q, new.p)
        new.XtX = np.asarray(cross.XtWX, dtype=float)
        new.set_response(cross.ZtWy, cross.XtWy, cross.ytWy, cross.beta_shift)
        return new

    def with_gram(self, G: np.ndarray, cross) -> DenseCriterion:
        """A copy for other weights ``W`` of the same rows: ``G`` the dense ``ZᵀWZ`` and ``cross`` the other
        cross-products and ``Σ log w`` (its ``ZtWZ`` is not read), as :mod:`sparselmm.residual` forms them
        at each evaluation — no sparse-to-dense conversion."""
        new = self.with_cross(cross)
        new.factor = new.factor.with_gram(G)
        new.G = new.factor.G
        new.slw = float(cross.sum_log_w)
        return new

    def parts(self, theta, gradient: bool = True) -> CriterionPieces:
        """The pieces at θ from one Cholesky factor of the augmented matrix (MixedModels.jl's layout)::

            Ω = [[ΛᵀGΛ + I, ΛᵀZᵀWX, ΛᵀZᵀWy],     L_Ω = [[L,     0,    0],
                 [XᵀWZΛ,    XᵀWX,   XᵀWy ],            [R_ZXᵀ, R_Xᵀ, 0],
                 [yᵀWZΛ,    yᵀWX,   yᵀWy ]]            [c_uᵀ,  c_βᵀ, r]]

        so ``r² = r*r``, and the leading ``q + p`` block gives ``u`` and ``β`` in one triangular solve. The
        REML gradient's ``M`` is the first ``q`` rows of ``Ω₍q+p₎⁻¹ [ΛᵀG; XᵀWZ]`` (the derivative of
        ``log|Ω₍q+p₎|``). One LAPACK call replaces the three factorisations and four solves of the blockwise
        route: these evaluations are most of a small model's fit and of every refit loop."""
        theta = np.asarray(theta, dtype=float)
        q, p = self.q, self.p
        fac = self.factor
        A = fac.form(theta)
        m = q + p + 1
        Om = np.empty((m, m), order="F")  # only the lower triangle is written and read
        Om[:q, :q] = A
        Om[q:, :q] = fac.Lambdat_times(self.ZtXy).T
        Om[q:, q:] = self._tail
        Lf, info = dpotrf(Om, lower=1, clean=0, overwrite_a=1)
        if info != 0:
            if info <= q:
                raise NumericalError("ΛᵀZᵀWZΛ + I is not positive definite at this theta.")
            if info <= q + p:
                raise NumericalError("The fixed-effects block R_X is not positive definite at this theta.")
            raise NumericalError("The penalised residual sum of squares is not positive at this theta.")
        d = np.diagonal(Lf)
        r2 = float(d[q + p]) ** 2
        ld = 2.0 * float(np.sum(np.log(d[: q + p] if self.reml else d[:q])))
        if not gradient:
            beta = dtrtrs(Lf[q : q + p, q : q + p], Lf[q + p, q : q + p], lower=1, trans=1)[0] if p else np.zeros(0)
            return CriterionPieces(theta, ld, r2, beta + self.beta_shift)
        Lqp = Lf[: q + p, : q + p]
        ub = dtrtrs(Lqp, Lf[q + p, : q + p], lower=1, trans=1)[0]
        u, beta = ub[:q], ub[q:]
        parts = CriterionPieces(theta, ld, r2, beta + self.beta_shift)
        LtG = fac.LtG
        if self.reml and p:
            M = dpotrs(Lqp, np.vstack([LtG, self._XtZ]), lower=1)[0][:q]
        else:
            M = dpotrs(Lf[:q, :q], LtG, lower=1)[0]
        Lu = fac.Lambda_times(u)
        a = self.Zty - self.ZtX @ beta - self.G @ Lu
        nt = self.n_theta
        parts.dld = 2.0 * np.bincount(self.idx, weights=M[self.cols, self.rows], minlength=nt)
        parts.dr2 = -2.0 * np.bincount(self.idx, weights=u[self.cols] * a[self.rows], minlength=nt)
        parts.Lu = Lu
        return parts


class FactorCriterion(_PiecesCriterion):
    """The pieces of a :class:`~sparselmm.deviance.ProfiledDeviance` that has an analytic gradient."""

    def __init__(self, devfun):
        if not getattr(devfun, "has_gradient", False):
            raise ValueError("FactorCriterion needs a deviance function with an analytic gradient")
        self.devfun = devfun
        self.reml = devfun.reml
        self.n, self.p = devfun.n, devfun.p
        self.slw = devfun.cross.sum_log_w
        self.n_theta = devfun.design.n_theta
        self.rows, self.cols, self.idx = lambda_pattern(devfun.terms)
        self._held = None
        self._H_ld = self._h = None

    def _dr2(self, theta, beta, u) -> tuple[np.ndarray, np.ndarray]:
        cr, dv = self.devfun.cross, self.devfun
        Lu = dv.Lambda_times(dv.factors(theta), u)
        a = cr.ZtWy - cr.ZtWX @ (beta - cr.beta_shift) - cr.ZtWZ @ Lu
        dr2 = -2.0 * np.bincount(self.idx, weights=u[self.cols] * a[self.rows], minlength=self.n_theta)
        return dr2, Lu

    def parts(self, theta, gradient: bool | str = True) -> CriterionPieces:
        """The pieces at θ; ``gradient="r2"``: ``∂r²/∂θ`` only (no ``∂ld/∂θ``, whose traces of ``C⁻¹`` are
        most of a gradient's cost), for :meth:`exact_dld` to complete from the factor still held."""
        theta = np.asarray(theta, dtype=float)
        if self._held is not None and np.array_equal(theta, self._held[0]["theta"]):
            return self._parts_at(self._held[0], bool(gradient))
        dv = self.devfun
        state = dv.solve(theta)
        ld = state.ldL2 + (state.ldRX2 if self.reml else 0.0)
        parts = CriterionPieces(theta, ld, state.pwrss, state.beta.copy())
        if not gradient:
            return parts
        u = dv.spherical_modes(state)
        parts.dr2, parts.Lu = self._dr2(theta, state.beta, u)
        if gradient == "r2":
            return parts
        g = dv.gradient(state)
        parts.dld = g - (self.nu / state.pwrss) * parts.dr2
        return parts

    def exact_dld(self, parts: CriterionPieces) -> np.ndarray:
        """``∂ld/∂θ`` at the θ of ``parts`` from the factor of the last :meth:`parts` call (no refactorisation
        when that was at the same θ)."""
        if parts.dld is not None:
            return parts.dld
        dv = self.devfun
        state = dv.state if dv.state is not None and np.array_equal(dv.state.theta, parts.theta) else None
        g = dv.gradient(state if state is not None else dv.solve(parts.theta))
        return g - (self.nu / parts.r2) * parts.dr2

    # ---- a bootstrap replicate's first evaluation and Hessian, from factors held near θ̂ ---------------
    def hold_at(self, theta, hessian: bool = True, rel_step: float = 1e-4) -> None:
        """Keep factors (each in its own workspace) at θ and, with ``hessian``, at ``θ + h_j e_j``, with the
        response-free pieces there (``ld``, ``∂ld/∂θ``; their differences give ``∇²ld``).

        A sibling for a new response (:meth:`with_cross`) then evaluates the criterion and its gradient at
        θ with two triangular solves (:meth:`parts`), and its whole Hessian there with 2 per held point
        (:meth:`start`): ``∇²f = ∇²ld + ν (∇²r²/r² − ∇r²∇r²ᵀ/r⁴)``, ``∇²r²`` by differences of the exact
        ``∇r²`` across the held points — so the replicate's first step is a Newton step.
        """
        theta = np.asarray(theta, dtype=float).copy()
        points = [theta]
        if hessian:
            for j in range(theta.size):
                step = theta.copy()
                step[j] += rel_step * max(abs(theta[j]), 0.05)
                points.append(step)
        held = []
        for th in points:
            work = self.devfun.with_reml(self.devfun.reml)  # own workspace (same cross-products), kept at th
            parts = FactorCriterion(work).parts(th, gradient=True)  # consumes the factor on the Schur path
            state = work.solve(th)  # the factor at th again, kept from now on
            held.append(
                {
                    "theta": th,
                    "work": work,
                    "factors": work.factors(th),
                    "R_ZX": state.R_ZX,
                    "R_X": state.R_X,
                    "ld": parts.ld,
                    "dld": parts.dld,
                }
            )
        self._held = held
        if hessian:
            h = np.array([points[j + 1][j] - theta[j] for j in range(theta.size)])
            D = np.column_stack([(held[j + 1]["dld"] - held[0]["dld"]) / h[j] for j in range(theta.size)])
            self._H_ld = (D + D.T) / 2
            self._h = h

    def with_cross(self, cross, share_factor: bool = True) -> FactorCriterion:
        """The evaluator of the same model with other cross-products (a new response), sharing the factor
        workspace and, if :meth:`hold_at` was called, the factors held there."""
        new = object.__new__(FactorCriterion)
        new.__dict__.update(self.__dict__)
        new.devfun = self.devfun._sibling(cross, self.reml, share_factor)
        return new

    def start(self) -> tuple[float, np.ndarray, np.ndarray | None]:
        """The criterion, its gradient and its Hessian at the held θ for this sibling's response (None where it
        is not positive definite: measured on Penicillin, the deviance of some responses curves down in the
        direction of a large θ_k at θ̂)."""
        held, nu = self._held, self.nu
        p0 = self._parts_at(held[0], True)
        D = np.column_stack(
            [(self._parts_at(held[j + 1], True).dr2 - p0.dr2) / self._h[j] for j in range(self._h.size)]
        )
        H = self._H_ld + nu * ((D + D.T) / (2 * p0.r2) - np.outer(p0.dr2, p0.dr2) / p0.r2**2)
        if np.min(np.linalg.eigvalsh(H)) <= 0:  # θ̂ is not in this response's basin: no Newton model there
            H = None
        return self.value(p0), p0.dld + (nu / p0.r2) * p0.dr2, H

    def _parts_at(self, hold: dict, gradient: bool) -> CriterionPieces:
        dv = self.devfun
        work, cr, p = hold["work"], dv.cross, self.p
        c_u = work.chol.solve_L(work.Lambdat_times(hold["factors"], cr.ZtWy[:, None]))[:, 0]
        R_ZX, R_X = hold["R_ZX"], hold["R_X"]
        if p:
            c_beta = dtrtrs(R_X, cr.XtWy - R_ZX.T @ c_u, lower=0, trans=1)[0]
            beta_s = dtrtrs(R_X, c_beta, lower=0)[0]
        else:
            c_beta = beta_s = np.zeros(0)
        r2 = float(cr.ytWy - c_u @ c_u - c_beta @ c_beta)
        if not r2 > 0:
            raise NumericalError("The penalised residual sum of squares is not positive at this theta.")
        parts = CriterionPieces(hold["theta"], hold["ld"], r2, beta_s + cr.beta_shift)
        if gradient:
            u = work.chol.solve_Lt(c_u - R_ZX @ beta_s)
            parts.dr2, parts.Lu = self._dr2(hold["theta"], parts.beta, u)
            parts.dld = hold["dld"]
        return parts


def evaluator_kind(devfun) -> str | None:
    """``"dense"``, ``"factor"`` or None: which evaluator :func:`evaluator` builds (see DENSE_MAX_Q); None
    also for an approximate criterion (the matrix-free one), whose refits use its own values, and for a model
    with a covariance structure (``diag``, ``cs``), whose refits use the deviance function."""
    if not devfun.exact or devfun.design.structured:  # its index maps put θ straight into Λ
        return None
    q = devfun.design.q
    if q <= DENSE_MAX_Q:
        return "dense"
    if getattr(devfun, "has_gradient", False):
        return "factor"
    return "dense" if q <= DENSE_FALLBACK_Q else None


def evaluator(devfun):
    """The fastest exact-gradient evaluator of ``devfun``'s criterion, or None if there is none."""
    kind = evaluator_kind(devfun)
    if kind == "dense":
        return DenseCriterion(devfun.terms, devfun.cross, devfun.reml)
    if kind == "factor":
        return FactorCriterion(devfun)
    return None
