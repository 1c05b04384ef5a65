"""The profiled deviance without a factor: PCG for the PLS solves, stochastic Lanczos for ``log|C|``.

For crossed models with very many levels on both sides no exact factor of ``C = ΛᵀZᵀWZΛ + I`` fits in
memory. :class:`MatrixFreeDeviance` needs only products with the sparse ``G = ZᵀWZ`` (all terms scalar, so
``Λ = diag(λ)``).

**The first term eliminated.** Every row has one level of the first (largest) term, so its block
``C₁₁ = t² diag(g₁) + I`` is diagonal (``t = θ₁``). The rest ``r`` of the effects see the Schur complement

    ``S = C_rr − C_r1 C₁₁⁻¹ C_1r = I + Λ_r K Λ_r``,  ``K = G_rr − G_r1 diag(w) G_1r``,  ``w = t²/(t² g₁ + 1)``,

applied as two sparse products with ``G_r1`` and one with ``G_rr`` (never formed). Its diagonal
``δ = 1 + λ_r²(diag G_rr − (G_r1∘G_r1) w)`` is exact and cheap, so ``log|C| = Σ log(t²g₁ + 1) + Σ log δ
+ log|A|`` with ``A = δ^-½ S δ^-½``, unit diagonal.

**PLS.** With ``b = Λᵀ[ZᵀWX | ZᵀWy]`` the p + 1 systems ``C V = b`` become ``S V_r = b_r − C_r1 C₁₁⁻¹ b₁``
(PCG with the preconditioner ``δ``, the p + 1 columns' products batched) and ``V₁ = C₁₁⁻¹(b₁ − C_1r V_r)``.
For two terms this is CG with the symmetric block Gauss–Seidel (backfitting) preconditioner of Ghosh,
Hastie & Owen (2022), with ``S``'s own diagonal for ``C₂₂``'s. The quadratic forms
``bᵀC⁻¹b = b₁ᵀC₁₁⁻¹b₁ + b̃_rᵀS⁻¹b̃_r`` are taken with the residuals (``b̃_iᵀx_j + x_iᵀr_j``), whose error is
quadratic in the solves' errors. Then, as :class:`sparselmm.deviance.ProfiledDeviance` does with ``L⁻¹``:
``R_XᵀR_X = XᵀWX − b_XᵀV_X``, ``R_Xᵀc_β = XᵀWy − b_XᵀV_y``, ``β̂ = R_X⁻¹c_β``,
``r² = yᵀWy − b_yᵀV_y − ‖c_β‖²``, ``u = V_y − V_Xβ̂``. Iterations to ``rtol = 1e-10`` on users × items
designs of 1e4 to 1e6 rows (up to 200,000 × 80,000 levels): 7–10 at θ = (0.8, 0.5), at most 26 at
θ = (10, 8), where Jacobi on ``C`` took up to 90 and block Gauss–Seidel on ``C`` 45
(``benchmarks/matrix_free_iterations.py iterations``).

**log|A| by stochastic Lanczos quadrature** (Ubaru, Chen & Saad 2017): Rademacher probes ``z`` drawn once
at construction (fixed seed) and a fixed number of Lanczos steps (full reorthogonalisation), so the value
is a smooth deterministic function of θ. Two reductions of the probes' variance, both exact in value:

* deflation of ``A``'s one near-null direction per rest term, ``W ≈ δ^½ 1`` on its block (a shift of the
  term's effects against the first term's): ``log|A| = log|WᵀAW| + log|B|`` with ``B`` the Schur complement
  on W's complement (:meth:`MatrixFreeDeviance._deflation`), which also removes the χ²₁ skew that made the
  spread over a few probes understate the error;
* the quadrature is of ``f(x) = log x − x + 1``, since ``tr(B − I)`` is known exactly (``A`` has unit
  diagonal): ``zᵀ(B − I)z``, the probes' first-order noise, is removed.

Per-probe standard deviation of the log-determinant at θ̂ on the 10,000 × 2,000 benchmark design: 18.8 on
``C`` itself, 20.2 Jacobi-scaled, 2.6 on ``A``, 0.95 with ``f``, 0.030 with the deflation too. With
``q_r ≤ n_probes`` the unit vectors are the probes and the trace is exact.

**Gradient.** ``∂ log|C|/∂θ_k`` is the exact derivative of the same estimate: the exact parts
differentiated, and per probe the Daleckii–Krein formula on its Krylov basis ``Q`` (``T = Y diag(μ) Yᵀ``,
``c = Yᵀe₁``): ``∂(zᵀf(B)z) = tr(∂B · QᵀΓQ)``, ``Γ = ‖z‖² Y (ccᵀ ∘ f[μ_i, μ_j]) Yᵀ`` with divided
differences of ``f``; ``∂A`` is a diagonal rescaling of ``A`` (rest terms) or
``δ^-½ Λ_r G_r1 diag(∂w) G_1r Λ_r δ^-½`` (the first term), the deflation adds rank-k terms. Hutchinson's
``zᵀC⁻¹∂C z`` with the probes' solves is unbiased for the true gradient but is not the derivative of the
estimated value, so the optimiser would see a gradient inconsistent with its values (off by the
estimate's own noise); the derivative of the estimate agrees with central differences of the value to
~1e-9 relative, needs no further solves, and costs ``O(m²q)`` per probe. The r² and REML parts are
:meth:`ProfiledDeviance._gradient`'s formulas, exact given the PCG solves.

Accuracy (L-BFGS-B from lme4's start against :class:`~sparselmm.deviance.ProfiledDeviance`; 1e4, 1e5 and
1e6 rows crossed plus a 1e5-row design with θ ≈ (2.5, 2); 16 probes, 20 steps): exact deviance at the
approximate optimum at most 6e-9 above the minimum, θ within 1e-6 relative, β within 2e-7 of its SE; with
4 probes at most 3e-6, 6e-5 and 1e-5.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from scipy.linalg.lapack import dpotrf, dtrtrs

from ..errors import ModelSpecError, NumericalError
from . import threads
from .slq import StochasticLogdet

__all__ = ["MatrixFreeDeviance", "MatrixFreeState", "matrix_free_applicable", "pcg"]

LOG_2PI = float(np.log(2 * np.pi))
PROBE_MEMORY = 128 * 2**20  # bytes of Lanczos vectors held at once (the probes run in batches within this)
N_PROBES = 16  # the default probes (module docstring: 4 met the accuracy targets, 16 leave a margin)
LANCZOS_STEPS = 20


@dataclass
class MatrixFreeState:
    """The PLS solution at one θ, from PCG solves and the stochastic log-determinant.

    ``u`` are the spherical conditional modes (``b = Λu``); ``R_X`` is the upper Cholesky factor of
    ``XᵀWX − b_XᵀC⁻¹b_X`` as in :class:`sparselmm.deviance.PLSState`; ``ldC`` the estimate of
    ``log|C|`` and ``ldC_se`` its standard error.
    """

    theta: np.ndarray
    beta: np.ndarray  # fixed effects (on the original, unshifted response)
    u: np.ndarray
    R_X: np.ndarray
    pwrss: float
    ldC: float
    ldC_se: float
    lanczos_change: float  # |change of the log|C| estimate over the last two Lanczos steps|: their convergence
    ldRX2: float
    deviance: float
    iterations: np.ndarray  # PCG iterations of each right-hand side
    gradient: np.ndarray | None = None
    gradient_se: np.ndarray | None = None
    V_X: np.ndarray | None = field(default=None, repr=False)  # C⁻¹ b_X (q × p), for the REML gradient


def pcg(apply, B: np.ndarray, dinv: np.ndarray, rtol: float, maxiter: int) -> tuple[np.ndarray, np.ndarray]:
    """Solve ``A X = B`` column by column with CG preconditioned by ``diag(1/dinv)``, the products batched.

    Each column runs its own recurrence (its own step lengths) and stops when its residual is below
    ``rtol·‖b‖``, so a column's result does not depend on the others (nor on how many there are).

    Parameters
    ----------
    apply : callable
        ``apply(P)`` returns ``A P`` for a dense ``P`` with several columns.
    B : ndarray, shape (n, c)
    dinv : ndarray, shape (n,)
        The inverse of the diagonal preconditioner.
    rtol : float
    maxiter : int

    Returns
    -------
    X : ndarray, shape (n, c)
    iterations : ndarray of int, shape (c,)

    Raises
    ------
    NumericalError
        A column has not converged in ``maxiter`` iterations, or a step found ``pᵀAp ≤ 0``.
    """
    n, c = B.shape
    X = np.zeros((n, c))
    R = B.copy()
    bnorm = np.linalg.norm(B, axis=0)
    iters = np.zeros(c, dtype=np.int64)
    active = np.flatnonzero(bnorm > 0)
    Zp = dinv[:, None] * R
    P = Zp.copy()
    rz = np.einsum("ij,ij->j", R, Zp)
    for _ in range(maxiter):
        if active.size == 0:
            break
        Pa = P[:, active]
        AP = apply(Pa)
        pAp = np.einsum("ij,ij->j", Pa, AP)
        if not np.all(pAp > 0):
            raise NumericalError("CG met a direction of non-positive curvature: C is not positive definite here.")
        alpha = rz[active] / pAp
        X[:, active] += alpha * Pa
        Ra = R[:, active] - alpha * AP
        R[:, active] = Ra
        iters[active] += 1
        done = np.linalg.norm(Ra, axis=0) <= rtol * bnorm[active]
        go = ~done
        active, Ra = active[go], Ra[:, go]
        Za = dinv[:, None] * Ra
        rz_new = np.einsum("ij,ij->j", Ra, Za)
        P[:, active] = Za + (rz_new / rz[active]) * P[:, active]
        rz[active] = rz_new
    if active.size:
        raise NumericalError(f"PCG did not reach rtol={rtol:g} in {maxiter} iterations.")
    return X, iters


class MatrixFreeDeviance(StochasticLogdet):
    """The profiled deviance ``f(θ)`` (ML or REML) of an all-scalar model without a factor of ``C``.

    Approximate: ``log|C|`` is a stochastic Lanczos estimate with probes fixed at construction, so
    :attr:`error_estimate` gives its standard error at the last θ; the PLS solves are PCG to ``rtol``.
    See the module docstring for the algebra.

    Parameters
    ----------
    design : Design
        Every random-effects term scalar (one coefficient per level), the first term's block of
        ``ZᵀWZ`` diagonal (one level per row).
    cross : CrossProducts
    reml : bool
    n_probes : int
        Rademacher probes of the log-determinant estimate (its standard error falls as 1/√n_probes).
        With ``n_probes`` at least the number ``q_r`` of effects outside the first term, the unit
        vectors are used instead and the trace is exact. 4 probes already met the accuracy targets on
        the benchmark designs (module docstring); 16 leave a margin for worse-conditioned ones.
    seed : int
        Seed of the probes (drawn once, here).
    rtol : float
        Relative residual at which each PCG solve stops.
    lanczos_steps : int
        Lanczos steps per probe (fixed, so the value is smooth in θ).
    maxiter : int
        Most PCG iterations per solve.
    costs : list of PathCost, optional
        The cost model's predictions for this design (:func:`sparselmm.linalg.cost.predict_costs`); the
        last is this path's (:attr:`predicted`).
    memory_limit : float, optional
        The memory limit the path was chosen under (bytes; reported only).
    """

    has_gradient = True
    exact = False  # the criterion is an estimate: results needing C's factor refuse (LmerResult)

    def __init__(
        self,
        design,
        cross,
        reml: bool = True,
        n_probes: int = N_PROBES,
        seed: int = 0,
        rtol: float = 1e-10,
        lanczos_steps: int = LANCZOS_STEPS,
        maxiter: int = 2000,
        costs: list | None = None,
        memory_limit: float | None = None,
    ):
        self.design = design
        self.cross = cross
        self.reml = bool(reml)
        self.terms = design.terms
        reason = matrix_free_applicable(self.terms, cross.ZtWZ)
        if reason:
            raise ModelSpecError(f"The matrix-free deviance {reason}.")
        self.n, self.p = cross.n, cross.XtWX.shape[0]
        self.rtol, self.maxiter = float(rtol), int(maxiter)
        self._options = dict(n_probes=n_probes, seed=seed, rtol=rtol, lanczos_steps=lanczos_steps, maxiter=maxiter)
        G = sp.csr_matrix(cross.ZtWZ)
        q = G.shape[0]
        q1 = self.terms[0].q
        self.q, self.q1, self.q_r = q, q1, q - q1
        self._g1 = np.asarray(G.diagonal()[:q1], dtype=float)
        self._G1r = G[:q1, q1:].tocsr()
        self._Gr1 = G[q1:, :q1].tocsr()
        self._Gr1_sq = self._Gr1.multiply(self._Gr1).tocsr()
        Grr = G[q1:, q1:].tocsr()
        self._gr = np.asarray(Grr.diagonal(), dtype=float)
        # with two terms G_rr is diagonal: multiply by a vector rather than a sparse matrix
        self._Grr = None if _is_diagonal(Grr) else Grr
        # the rest terms' positions in the r coordinates and θ
        self._rest = [(t.offset - q1, t.q, t.theta_offset) for t in self.terms[1:]]
        self._rhs = np.column_stack([cross.ZtWX, cross.ZtWy])
        self.n_probes = int(n_probes)
        self.seed = seed
        self.exact_trace = self.q_r <= self.n_probes
        self.lanczos_steps = int(min(lanczos_steps, max(self.q_r, 1)))
        if self.q_r == 0:
            self._probes = np.zeros((0, 0))
        elif self.exact_trace:
            self._probes = np.eye(self.q_r)
        else:
            rng = np.random.default_rng(seed)
            self._probes = rng.choice(np.array([-1.0, 1.0]), size=(self.q_r, self.n_probes))
        m = self.lanczos_steps
        per_probe = 8 * (m + 1) * max(self.q_r, 1)
        self._batch = int(max(1, min(self._probes.shape[1] or 1, PROBE_MEMORY // per_probe)))
        self.n_evals = 0
        self.state: MatrixFreeState | None = None
        self.costs = costs
        self.predicted = costs[-1] if costs else None
        self.memory_limit = memory_limit

    # ---- the operator at θ ---------------------------------------------------------------------------
    def _setup(self, theta: np.ndarray) -> dict:
        """Everything of θ the products need: ``λ``, ``C₁₁``, the elimination weights and ``δ = diag(S)``."""
        theta = np.array(theta, dtype=float).ravel()
        if theta.size != self.design.n_theta:
            raise ModelSpecError(
                f"theta must have {self.design.n_theta} elements ({self.design.theta_names()}), not {theta.size}."
            )
        t = theta[self.terms[0].theta_offset]
        lam_r = np.empty(self.q_r)
        for off, size, th in self._rest:
            lam_r[off : off + size] = theta[th]
        with np.errstate(over="ignore", invalid="ignore"):
            d1 = t * t * self._g1 + 1.0
            w = t * t / d1
            kappa = self._gr - self._Gr1_sq @ w  # diag(K)
            delta = 1.0 + lam_r * lam_r * kappa
        if not (np.all(np.isfinite(d1)) and np.all(np.isfinite(delta)) and np.all(delta > 0)):
            raise NumericalError("ΛᵀZᵀWZΛ + I overflows at this theta.")
        return dict(theta=theta, t=t, lam_r=lam_r, d1=d1, w=w, kappa=kappa, delta=delta)

    def _S_times(self, op: dict, V: np.ndarray) -> np.ndarray:
        """``S V = V + Λ_r (G_rr − G_r1 diag(w) G_1r) Λ_r V`` for a dense V (q_r × c)."""
        lam = op["lam_r"][:, None]
        Y = lam * V
        GY = self._gr[:, None] * Y if self._Grr is None else self._Grr @ Y
        GY -= self._Gr1 @ (op["w"][:, None] * (self._G1r @ Y))
        return V + lam * GY

    def _A_times(self, op: dict, V: np.ndarray) -> np.ndarray:
        """``A V = δ^-½ S δ^-½ V``."""
        s = op["s"][:, None]
        return s * self._S_times(op, s * V)

    def _solve_C(self, op: dict, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``C⁻¹ b`` through the first-term elimination and PCG on ``S``.

        Returns ``V = C⁻¹ b``, the reduced right-hand sides ``b̃_r``, their solutions' true residuals and the
        iteration counts.
        """
        t, d1, lam_r = op["t"], op["d1"], op["lam_r"]
        b1, br = b[: self.q1], b[self.q1 :]
        rhs = br - lam_r[:, None] * (self._Gr1 @ (t * b1 / d1[:, None]))
        if self.q_r:
            Xr, iters = pcg(lambda P: self._S_times(op, P), rhs, 1.0 / op["delta"], self.rtol, self.maxiter)
            resid = rhs - self._S_times(op, Xr)
        else:
            Xr, iters, resid = rhs.copy(), np.zeros(b.shape[1], dtype=np.int64), rhs.copy()
        V1 = (b1 - t * (self._G1r @ (lam_r[:, None] * Xr))) / d1[:, None]
        return np.vstack([V1, Xr]), rhs, resid, iters

    def solve_C(self, theta, b, return_iterations: bool = False):
        """``C⁻¹ b`` at θ (``C = ΛᵀZᵀWZΛ + I``) by the PCG of the evaluations, for b of shape (q,) or (q, c).

        With ``return_iterations``, also the PCG iterations of each column.
        """
        b = np.asarray(b, dtype=float)
        op = self._setup(theta)
        with threads.one_blas_thread():
            V, _, _, iters = self._solve_C(op, b.reshape(self.q, -1))
        return (V.reshape(b.shape), iters) if return_iterations else V.reshape(b.shape)

    # ---- the stochastic log-determinant and its gradient ---------------------------------------------
    def _K_times(self, op: dict, Y: np.ndarray) -> np.ndarray:
        """``K Y = (G_rr − G_r1 diag(w) G_1r) Y``."""
        GY = self._gr[:, None] * Y if self._Grr is None else self._Grr @ Y
        return GY - self._Gr1 @ (op["w"][:, None] * (self._G1r @ Y))

    # ---- the deviance ------------------------------------------------------------------------------
    def solve(self, theta) -> MatrixFreeState:
        """Solve the PLS problem at θ; raises :class:`NumericalError` where a solve or factor fails."""
        return self._evaluate(theta, gradient=False)

    def optimizer_blas_limit(self):
        """The BLAS threads for the optimiser's own steps: one (as for the evaluations, :meth:`_evaluate`)."""
        return threads.one_blas_thread()

    def _evaluate(self, theta, gradient: bool) -> MatrixFreeState:
        # one BLAS thread: the dense work is thin (q × m by m × m) products, bound by memory, and the sparse
        # products run on one thread anyway; a threaded pool woken by the tiny eigh/potrf calls only spins
        with threads.one_blas_thread():
            return self._evaluate_at(theta, gradient)

    def _evaluate_at(self, theta, gradient: bool) -> MatrixFreeState:
        op = self._setup(theta)
        op["s"] = 1.0 / np.sqrt(op["delta"])
        self.n_evals += 1
        theta, t, lam_r = op["theta"], op["t"], op["lam_r"]
        q1, p, cr = self.q1, self.p, self.cross
        lam = np.concatenate([np.full(q1, t), lam_r])
        b = lam[:, None] * self._rhs
        V, rhs, resid, iters = self._solve_C(op, b)
        b1, d1 = b[:q1], op["d1"]
        Xr = V[q1:]
        # bᵀC⁻¹b: the first block exactly, the rest with the residual correction (second order in the error)
        QF = b1.T @ (b1 / d1[:, None]) + rhs.T @ Xr + Xr.T @ resid
        QF = 0.5 * (QF + QF.T)
        if p:
            R_X, info = dpotrf(cr.XtWX - QF[:p, :p], lower=0, clean=1)
            if info != 0:
                raise NumericalError("The fixed-effects block R_X is not positive definite at this theta.")
            c_beta, _ = dtrtrs(R_X, cr.XtWy - QF[:p, p], lower=0, trans=1)
            beta, _ = dtrtrs(R_X, c_beta, lower=0)
        else:
            R_X, c_beta, beta = np.zeros((0, 0)), np.zeros(0), np.zeros(0)
        pwrss = float(cr.ytWy - QF[p, p] - c_beta @ c_beta)
        if not pwrss > 0:
            raise NumericalError("The penalised residual sum of squares is not positive at this theta.")
        u = V[:, p] - V[:, :p] @ beta
        ldA, ldA_se, change, gA, gA_se = self._logdet(op, gradient)
        ldC = float(np.sum(np.log(d1)) + np.sum(np.log(op["delta"])) + ldA)
        ldRX2 = 2.0 * float(np.sum(np.log(np.abs(np.diagonal(R_X))))) if p else 0.0
        nu = (self.n - p) if self.reml else self.n
        dev = ldC - cr.sum_log_w + nu * (1.0 + LOG_2PI + np.log(pwrss / nu))
        if self.reml:
            dev += ldRX2
        if not np.isfinite(dev):
            raise NumericalError("The deviance is not finite at this theta.")
        state = MatrixFreeState(
            theta=theta,
            beta=beta + cr.beta_shift,
            u=u,
            R_X=R_X,
            pwrss=pwrss,
            ldC=ldC,
            ldC_se=ldA_se,
            lanczos_change=change,
            ldRX2=ldRX2,
            deviance=float(dev),
            iterations=iters,
            V_X=V[:, :p],
        )
        if gradient:
            state.gradient = self._gradient(op, state, lam, gA)
            state.gradient_se = gA_se
        self.state = state
        return state

    def _gradient(self, op: dict, state: MatrixFreeState, lam: np.ndarray, g_logdet: np.ndarray) -> np.ndarray:
        """``∂f/∂θ``: ``∂ log|C|`` (exact parts and the estimate's own derivative), and as in
        :meth:`sparselmm.deviance.ProfiledDeviance._gradient`, ``−ν/r² · aᵀD_k a`` with
        ``a = ZᵀW(y − Xβ̂) − GΛu`` and, for REML, ``−tr(M⁻¹ΨᵀD_kΨ)`` with ``Ψ = ZᵀWX − GΛC⁻¹b_X``;
        ``D_k = ∂(ΛΛᵀ)/∂θ_k = 2θ_k E_k`` for scalar terms."""
        cr, p, t = self.cross, self.p, op["t"]
        theta = op["theta"]
        grad = g_logdet.copy()
        # ∂ Σ ln(t² g₁ + 1)
        grad[self.terms[0].theta_offset] += float(np.sum(2.0 * t * self._g1 / op["d1"]))
        beta_s = state.beta - cr.beta_shift
        a = cr.ZtWy - cr.ZtWX @ beta_s - self._G_times(lam * state.u)
        nu = (self.n - p) if self.reml else self.n
        reml_part = self.reml and p
        if reml_part:
            Psi = cr.ZtWX - self._G_times(lam[:, None] * state.V_X)
            Rinv = dtrtrs(state.R_X, np.eye(p), lower=0)[0]
            PsiM = Psi @ (Rinv @ Rinv.T)
        for tm in self.terms:
            seg = slice(tm.offset, tm.offset + tm.q)
            k = tm.theta_offset
            th = theta[k]
            grad[k] -= 2.0 * nu * th * float(a[seg] @ a[seg]) / state.pwrss
            if reml_part:
                grad[k] -= 2.0 * th * float(np.einsum("ij,ij->", PsiM[seg], Psi[seg]))
        return grad

    def _G_times(self, V: np.ndarray) -> np.ndarray:
        """``G V`` (``G = ZᵀWZ``) from its blocks."""
        q1 = self.q1
        V1, Vr = V[:q1], V[q1:]
        g1 = self._g1 if V.ndim == 1 else self._g1[:, None]
        top = g1 * V1 + self._G1r @ Vr
        if self._Grr is None:
            gr = self._gr if V.ndim == 1 else self._gr[:, None]
            bottom = gr * Vr + self._Gr1 @ V1
        else:
            bottom = self._Grr @ Vr + self._Gr1 @ V1
        return np.concatenate([top, bottom])

    def __call__(self, theta) -> float:
        """The deviance at θ; ``inf`` where a solve fails (a rejected optimiser step)."""
        try:
            return self.solve(theta).deviance
        except NumericalError:
            return float("inf")

    def value_and_gradient(self, theta) -> tuple[float, np.ndarray]:
        """The deviance and its gradient at θ (the gradient is the derivative of this value; module docstring)."""
        state = self._evaluate(theta, gradient=True)
        return state.deviance, state.gradient

    def gradient(self, state: MatrixFreeState | None = None) -> np.ndarray:
        """The gradient at the θ of ``state`` (default: the last evaluation), evaluated anew if needed."""
        state = self.state if state is None else state
        if state is None:
            raise ModelSpecError("No current theta: call value_and_gradient(theta) or solve(theta) first.")
        if state.gradient is None:
            state = self._evaluate(state.theta, gradient=True)
        return state.gradient

    # ---- what the fit reports ------------------------------------------------------------------------
    def spherical_modes(self, state: MatrixFreeState | None = None) -> np.ndarray:
        """Conditional modes ``u = C⁻¹(b_y − b_Xβ̂)`` of the spherical random effects (``b = Λu``)."""
        state = self.state if state is None else state
        if state is None:
            raise ModelSpecError("No current theta: call solve(theta) first.")
        return state.u

    def vcov_beta(self, state: MatrixFreeState | None = None) -> np.ndarray:
        """``σ² (XᵀV⁻¹X)⁻¹ = σ² (R_XᵀR_X)⁻¹`` from the Schur complement of the p × p block (the p + 1 PCG
        solves of the evaluation), with ``σ² = r²/(n − p)`` (REML) or ``r²/n`` (ML) as lme4's ``vcov``."""
        state = self.state if state is None else state
        if state is None:
            raise ModelSpecError("No current theta: call solve(theta) first.")
        p = self.p
        if not p:
            return np.zeros((0, 0))
        sigma2 = state.pwrss / ((self.n - p) if self.reml else self.n)
        Rinv = dtrtrs(state.R_X, np.eye(p), lower=0)[0]
        return sigma2 * (Rinv @ Rinv.T)

    @property
    def error_estimate(self) -> float:
        """Standard error of the log-determinant estimate (so of the deviance) at the last θ, from the
        spread over the probes (0 with exact traces; nan before any evaluation)."""
        return float("nan") if self.state is None else self.state.ldC_se

    @property
    def iterations(self) -> np.ndarray:
        """PCG iterations of each of the p + 1 solves of the last evaluation."""
        return np.zeros(0, dtype=np.int64) if self.state is None else self.state.iterations

    @property
    def path(self) -> str:
        """The path's name, as :attr:`sparselmm.linalg.cost.PathCost.path` and ``OptInfo.path`` give it."""
        return "matrix-free (approximate)"

    def factors(self, theta) -> list[np.ndarray]:
        """The 1 × 1 factor of each (scalar) term, as :meth:`sparselmm.deviance.ProfiledDeviance.factors`."""
        return [t.factor(theta) for t in self.terms]

    def Lambda_times(self, factors: list[np.ndarray], u: np.ndarray) -> np.ndarray:
        """``Λ u`` (Λ diagonal: each term's λ on its levels)."""
        lam = np.concatenate([np.full(t.q, float(np.asarray(T).ravel()[0])) for t, T in zip(self.terms, factors)])
        return lam * u if u.ndim == 1 else lam[:, None] * u

    def with_reml(self, reml: bool, share_factor: bool = False) -> MatrixFreeDeviance:
        """The same model's criterion on the other scale (``reml=False``: −2 log-likelihood), with the same
        probes, so its values are the same estimate's (``share_factor`` is accepted for the exact one's
        signature; there is no factor)."""
        return MatrixFreeDeviance(
            self.design, self.cross, reml, costs=self.costs, memory_limit=self.memory_limit, **self._options
        )

    def needs_exact(self, what: str):
        """Raise the error of a computation that needs an exact factor of ``C``."""
        limit = "" if self.memory_limit is None else f" (memory_limit {self.memory_limit / 2**30:.2f} GB)"
        raise ModelSpecError(
            f"{what}: not available on an approximate fit. It needs an exact factor of ΛᵀZᵀWZΛ + I, and this "
            f"fit used the matrix-free path{limit}. fixef, vcov, ranef "
            "(without cond_var), sigma, theta, predict, summary and Wald intervals are available; for the rest, "
            "refit with a memory_limit the exact factor fits (the cost model's predictions: "
            "optinfo.predicted and the MemoryLimitError of ordering='auto' with a smaller limit)."
        )

    def with_response(self, y, share_factor: bool = False):
        """Refused: refits with a new response (bootstrap, simulate-and-refit) need an exact factor."""
        self.needs_exact("A refit with a new response (bootstrap, refit)")

    def with_columns_in_offset(self, columns, values, reml=None, share_factor: bool = False):
        """Refused: profiles and drop1 refits of fixed effects need an exact factor."""
        self.needs_exact("A refit with fixed effects held (profile, drop1)")

    def approximation(self) -> dict:
        """What the estimate at the last θ is and how good: ``criterion_se`` (the standard error of the
        log-determinant estimate, so of the criterion, over the probes), ``lanczos_change`` (how far the last
        two Lanczos steps moved it), ``pcg_iterations``, and the settings (``n_probes``, ``seed``,
        ``lanczos_steps``, ``rtol``, ``exact_trace``)."""
        st = self.state
        return {
            "criterion_se": float("nan") if st is None else float(st.ldC_se),
            "lanczos_change": float("nan") if st is None else float(st.lanczos_change),
            "pcg_iterations": [] if st is None else [int(i) for i in st.iterations],
            "n_probes": self.n_probes,
            "seed": self.seed,
            "lanczos_steps": self.lanczos_steps,
            "rtol": self.rtol,
            "exact_trace": bool(self.exact_trace),
        }

    def describe(self) -> str:
        """One line: what approximates what."""
        probes = "exact trace" if self.exact_trace else f"{self.n_probes} Rademacher probes (seed {self.seed})"
        return (
            f"matrix-free: PCG (rtol {self.rtol:g}) on the Schur complement of {self.terms[0].term} "
            f"({self.q_r:,} effects), log-determinant by stochastic Lanczos quadrature ({probes}, "
            f"{self.lanczos_steps} steps)"
        )


def matrix_free_applicable(terms, G: sp.spmatrix) -> str:
    """Why :class:`MatrixFreeDeviance` cannot take this model (empty when it can): it needs scalar terms only,
    the first one with one level per row (its block of ``G = ZᵀWZ`` diagonal)."""
    if not terms:
        return "needs random-effects terms"
    for t in terms:
        if t.k != 1:
            return f"needs scalar random-effects terms; {t.term} has {t.k} coefficients per level ({', '.join(t.cnms)})"
    q1 = terms[0].q
    # the first q1 columns of the (symmetric) G, read in place: their rows above q1 must be the diagonal only
    Gc = G if sp.isspmatrix_csc(G) else sp.csc_matrix(G)
    end = Gc.indptr[q1]
    rows = Gc.indices[:end]
    cols = np.repeat(np.arange(q1), np.diff(Gc.indptr[: q1 + 1]))
    inside = rows < q1
    if np.any(rows[inside] != cols[inside]):
        return (
            f"eliminates the first term {terms[0].term}, whose rows must each have one level (its block of "
            "ZᵀWZ diagonal); this one has several nonzeros per row"
        )
    return ""


def _is_diagonal(M: sp.csr_matrix) -> bool:
    """Only diagonal entries are stored (explicit zeros off it count as off-diagonal)."""
    coo = M.tocoo()
    return bool(np.all(coo.row == coo.col))
