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
from scipy.linalg import eigh_tridiagonal
from scipy.linalg.lapack import dpotrf, dtrtrs

from ..errors import ModelSpecError, NumericalError
from . import threads

__all__ = ["MatrixFreeDeviance", "MatrixFreeState", "pcg"]

LOG_2PI = float(np.log(2 * np.pi))
PROBE_MEMORY = 128 * 2**20  # bytes of Lanczos vectors held at once (the probes run in batches within this)
BREAKDOWN = 1e-10  # a Lanczos step this short (A has unit diagonal) means the Krylov space is exhausted


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


def _divided_log(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(log a − log b)/(a − b)``, and ``1/a`` where ``a = b``, without cancellation near the diagonal."""
    x = (a - b) / b
    small = np.abs(x) < 1e-5
    xs = np.where(small, 1.0, x)
    out = np.log1p(xs) / (xs * b)
    series = (1.0 - x / 2.0 + x * x / 3.0) / b
    return np.where(small, series, out)


class MatrixFreeDeviance:
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
    """

    has_gradient = True

    def __init__(
        self,
        design,
        cross,
        reml: bool = True,
        n_probes: int = 16,
        seed: int = 0,
        rtol: float = 1e-10,
        lanczos_steps: int = 20,
        maxiter: int = 2000,
    ):
        self.design = design
        self.cross = cross
        self.reml = bool(reml)
        self.terms = design.terms
        for t in self.terms:
            if t.k != 1:
                raise ModelSpecError(
                    f"The matrix-free deviance needs scalar random-effects terms; {t.term} has {t.k} coefficients "
                    f"per level ({', '.join(t.cnms)}). Fit it with the exact factor, or split it into "
                    "independent scalar terms."
                )
        self.n, self.p = cross.n, cross.XtWX.shape[0]
        self.rtol, self.maxiter = float(rtol), int(maxiter)
        G = sp.csr_matrix(cross.ZtWZ)
        q = G.shape[0]
        first = self.terms[0]
        q1 = first.q
        G11 = G[:q1, :q1].tocoo()
        if np.any(G11.row != G11.col):
            raise ModelSpecError(
                f"The matrix-free deviance eliminates the first term {first.term}, whose rows must each have one "
                "level (its block of ZᵀWZ diagonal); this one has several nonzeros per row."
            )
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

    def _components(self, op: dict) -> list[tuple[int, np.ndarray, slice | None]]:
        """Each θ element: its index, ``Δ = ∂ ln δ/∂θ_k`` and the rest term's block (None for the first term).

        The first term moves ``δ`` through ``w`` (``∂w/∂t = 2t/d₁²``), a rest term through ``λ_k²`` only.
        """
        wdot = 2.0 * op["t"] / op["d1"] ** 2
        op["wdot"] = wdot
        out = [(self.terms[0].theta_offset, -(op["lam_r"] ** 2) * (self._Gr1_sq @ wdot) / op["delta"], None)]
        for off, size, k in self._rest:
            seg = slice(off, off + size)
            Delta = np.zeros(self.q_r)
            Delta[seg] = 2.0 * op["lam_r"][seg] * op["kappa"][seg] / op["delta"][seg]
            out.append((k, Delta, seg))
        return out

    def _A_dot(self, op: dict, Delta: np.ndarray, seg: slice | None, Y: np.ndarray, AY: np.ndarray) -> np.ndarray:
        """``(∂A/∂θ_k) Y`` for a few columns Y (``AY = A Y`` given), ``A = δ^-½ S δ^-½``.

        ``∂A = δ^-½ (∂S) δ^-½ − ½(ΔA + AΔ)`` with ``∂S = −Λ_r G_r1 diag(∂w) G_1r Λ_r`` for the first term
        and ``E_k K Λ_r + Λ_r K E_k`` for a rest term k (no division by θ_k, so also at θ_k = 0).
        """
        s, lam = op["s"][:, None], op["lam_r"][:, None]
        sY = s * Y
        if seg is None:
            dS = -lam * (self._Gr1 @ (op["wdot"][:, None] * (self._G1r @ (lam * sY))))
        else:
            Ek = np.zeros_like(sY)
            Ek[seg] = sY[seg]
            dS = lam * self._K_times(op, Ek)
            dS[seg] += self._K_times(op, lam * sY)[seg]
        return s * dS - 0.5 * (Delta[:, None] * AY + self._A_times(op, Delta[:, None] * Y))

    def _deflation(self, op: dict, gradient: bool) -> dict:
        """The near-null directions of ``A`` taken out exactly: ``W`` (one column per rest term,
        ``δ^½ 1`` on its block, normalised), ``P = AW``, ``a = WᵀAW``; with ``gradient`` also ``∂W``, ``∂P``
        and ``∂a`` for each θ element.

        Adding one to every effect of a rest term and subtracting it from the first term's (scaled by the
        λs) changes no fitted value, so ``A`` has a small eigenvalue whose eigenvector is close to
        ``δ^½ 1`` on that term (overlap 0.9998 on the 20,000 × 4,000 benchmark design). Its share of
        ``zᵀf(A)z`` is ``f(μ_min)(vᵀz)²``, a scaled χ²₁: it made the probes' spread skewed (skewness −2.5) and
        ten times wider (0.30 without it, 2.9 with), and the standard error over a few probes too small.
        ``log|A| = log|a| + log|B|`` with ``B = A − P a⁻¹ Pᵀ + WWᵀ`` (``A``'s Schur complement on the
        complement of W, the identity on W) leaves to the probes only the tight rest of the spectrum.
        """
        W = np.zeros((self.q_r, len(self._rest)))
        for j, (off, size, _) in enumerate(self._rest):
            v = np.sqrt(op["delta"][off : off + size])
            W[off : off + size, j] = v / np.linalg.norm(v)
        P = self._A_times(op, W)
        a = W.T @ P
        a_chol, info = dpotrf(a, lower=1)
        if info != 0:
            raise NumericalError("The deflated block WᵀAW is not positive definite at this theta.")
        a_inv = np.linalg.inv(a)
        defl = dict(W=W, P=P, a=a, a_inv=a_inv, logdet_a=2.0 * float(np.sum(np.log(np.diagonal(a_chol)))))
        if gradient:
            parts = []
            for k, Delta, seg in op["components"]:
                # ∂W: ∂(δ^½) = ½ Δ δ^½, then the normalisation (W's columns have disjoint supports)
                hW = 0.5 * Delta[:, None] * W
                Wd = hW - W * np.einsum("ij,ij->j", W, hW)
                Pd = self._A_dot(op, Delta, seg, W, P) + self._A_times(op, Wd)
                ad = Wd.T @ P + W.T @ Pd
                parts.append(dict(k=k, Wd=Wd, Pd=Pd, ad=0.5 * (ad + ad.T)))
            defl["parts"] = parts
        return defl

    def _B_times(self, op: dict, defl: dict, V: np.ndarray) -> np.ndarray:
        """``B V = A V − P a⁻¹ PᵀV + W WᵀV``."""
        P, W = defl["P"], defl["W"]
        return self._A_times(op, V) - P @ (defl["a_inv"] @ (P.T @ V)) + W @ (W.T @ V)

    def _lanczos(self, apply, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``m`` Lanczos steps with the operator ``apply`` from each column of Z at once, fully reorthogonalised.

        Returns ``alpha`` (B × m), ``beta`` (B × m; ``beta[:, j]`` couples steps j and j + 1), the basis
        ``Q`` (B × (m + 1) × q_r, rows the Lanczos vectors) and each probe's number of steps (fewer where its
        Krylov space was exhausted, e.g. with ``q_r ≤ m``).
        """
        m = self.lanczos_steps
        nb = Z.shape[1]
        Q = np.zeros((nb, m + 1, self.q_r))
        Q[:, 0] = (Z / np.linalg.norm(Z, axis=0)).T
        alpha, beta = np.zeros((nb, m)), np.zeros((nb, m))
        steps = np.full(nb, m)
        alive = np.ones(nb, dtype=bool)
        for j in range(m):
            W = apply(Q[:, j].T).T.copy()
            alpha[:, j] = np.einsum("bq,bq->b", Q[:, j], W)
            W -= alpha[:, j, None] * Q[:, j]
            if j:
                W -= beta[:, j - 1, None] * Q[:, j - 1]
            # twice is enough (Kahan–Parlett): keeps Q orthonormal to rounding, so T's quadrature and the
            # Krylov basis used by the gradient are those of exact arithmetic
            for _ in range(2):
                h = np.matmul(Q[:, : j + 1], W[:, :, None])
                W -= np.matmul(h.transpose(0, 2, 1), Q[:, : j + 1])[:, 0]
            beta[:, j] = np.linalg.norm(W, axis=1)
            broke = alive & (beta[:, j] < BREAKDOWN)
            steps[broke] = j + 1
            alive &= ~broke
            beta[~alive, j] = 0.0
            Q[alive, j + 1] = W[alive] / beta[alive, j, None]
        return alpha, beta, Q, steps

    def _logdet(self, op: dict, gradient: bool):
        """``log|A|`` (estimate), its standard error, the change over the last two Lanczos steps and, with
        ``gradient``, ``∂ log|A|/∂θ`` (the estimate's exact derivative) and its SE over the probes.

        ``log|A| = log|a| + tr(B − I) + tr f(B)`` (:meth:`_deflation`), ``f(x) = log x − x + 1``; the first
        two exact (``tr(B − I) = k − tr(a⁻¹PᵀP)`` as ``A`` has unit diagonal), the last by the probes.
        """
        nt = self.design.n_theta
        if self.q_r == 0:
            return 0.0, 0.0, 0.0, np.zeros(nt), np.zeros(nt)
        op["components"] = self._components(op)
        defl = self._deflation(op, gradient)
        W, P, a_inv = defl["W"], defl["P"], defl["a_inv"]
        PtP = P.T @ P
        exact = defl["logdet_a"] + W.shape[1] - float(np.sum(a_inv * PtP))
        probes = self._probes
        norm2 = np.einsum("ij,ij->j", probes, probes)
        values, shorter, grads = [], [], []
        for lo in range(0, probes.shape[1], self._batch):
            Z = probes[:, lo : lo + self._batch]
            alpha, beta, Q, steps = self._lanczos(lambda V: self._B_times(op, defl, V), Z)
            for b in range(Z.shape[1]):
                mb = steps[b]
                mu, Y = eigh_tridiagonal(alpha[b, :mb], beta[b, : mb - 1])
                if not np.all(mu > 0):
                    raise NumericalError("The Lanczos matrix is not positive definite at this theta.")
                c = Y[0]
                values.append(norm2[lo + b] * float(np.sum(c * c * (np.log(mu) - mu + 1.0))))
                if mb == self.lanczos_steps and mb > 3:
                    # the same quadrature two steps earlier: how far the last steps still moved it
                    mu2, Y2 = eigh_tridiagonal(alpha[b, : mb - 2], beta[b, : mb - 3])
                    c2 = Y2[0]
                    shorter.append(norm2[lo + b] * float(np.sum(c2 * c2 * (np.log(mu2) - mu2 + 1.0))))
                else:  # the Krylov space was exhausted: the quadrature is exact
                    shorter.append(values[-1])
                if gradient:
                    grads.append(self._probe_gradient(op, defl, alpha[b], beta[b], Q[b], mb, mu, Y, norm2[lo + b]))
        values = np.asarray(values)
        nprobe = values.size
        change = np.asarray(values) - np.asarray(shorter)
        if self.exact_trace:  # unit vectors: the sum is the trace itself
            est, se, change = exact + float(values.sum()), 0.0, float(abs(change.sum()))
            gsum = np.sum(grads, axis=0) if gradient else None
            gse = np.zeros(nt) if gradient else None
        else:
            est, change = exact + float(values.mean()), float(abs(change.mean()))
            se = float(values.std(ddof=1) / np.sqrt(nprobe)) if nprobe > 1 else float("nan")
            gsum = np.mean(grads, axis=0) if gradient else None
            if gradient:
                gse = np.std(grads, axis=0, ddof=1) / np.sqrt(nprobe) if nprobe > 1 else np.full(nt, np.nan)
            else:
                gse = None
        if gradient:
            gsum = gsum.copy()
            for (k, Delta, _), part in zip(op["components"], defl["parts"]):
                # Σ ln δ, and log|a| − tr(a⁻¹PᵀP)
                ad, Pd = part["ad"], part["Pd"]
                gsum[k] += np.sum(Delta) + np.sum(a_inv * ad)
                gsum[k] += np.sum((a_inv @ ad @ a_inv) * PtP) - 2.0 * np.sum(a_inv * (P.T @ Pd))
            for _, _, k in self._rest:
                if op["theta"][k] == 0.0:  # log|C| is even in θ_k: its derivative there is 0 (not the estimate's)
                    gsum[k] = 0.0
        return est, se, change, gsum, gse

    def _probe_gradient(self, op, defl, alpha, beta, Q, mb, mu, Y, norm2) -> np.ndarray:
        """One probe's ``∂ zᵀf(B)z/∂θ``: Daleckii–Krein on its Krylov basis, ``tr(∂B · QᵀΓQ)``.

        ``∂B = ∂A − ∂P a⁻¹Pᵀ − P a⁻¹∂Pᵀ + P a⁻¹ ∂a a⁻¹Pᵀ + ∂W Wᵀ + W ∂Wᵀ``; ``tr(∂A X)`` from ``diag(X)``
        and ``diag(AX)`` (a rest term's ``∂A`` is a diagonal rescaling of ``A``) or from ``G_1r`` (the first
        term), the rest from the k columns' products with the basis.
        """
        theta, delta = op["theta"], op["delta"]
        W, P, a_inv = defl["W"], defl["P"], defl["a_inv"]
        c = Y[0]
        # Γ = ‖z‖² Y (ccᵀ ∘ f[μ_i, μ_j]) Yᵀ for f = log x − x + 1
        F = _divided_log(mu[:, None], mu[None, :]) - 1.0
        Gam = norm2 * (Y @ (np.outer(c, c) * F) @ Y.T)
        Qb = Q[:mb]
        U = Gam @ Qb  # X = Qbᵀ Γ Qb
        diagX = np.einsum("aq,aq->q", Qb, U)
        TQ = alpha[:mb, None] * Qb  # T Qb (T tridiagonal): B Qbᵀ = Qbᵀ T + β_m q_{m+1} e_mᵀ
        TQ[1:] += beta[: mb - 1, None] * Qb[:-1]
        TQ[:-1] += beta[: mb - 1, None] * Qb[1:]
        QP, QW = Qb @ P, Qb @ W
        # A Qbᵀ = B Qbᵀ + P a⁻¹ (Qb P)ᵀ − W (Qb W)ᵀ
        diagAX = np.einsum("aq,aq->q", TQ, U) + beta[mb - 1] * Q[mb] * U[mb - 1]
        diagAX += np.einsum("qj,qj->q", P, U.T @ (QP @ a_inv)) - np.einsum("qj,qj->q", W, U.T @ QW)
        GP = Gam @ QP
        PXP = QP.T @ GP  # Pᵀ X P
        g = np.zeros(self.design.n_theta)
        for (k, Delta, seg), part in zip(op["components"], defl["parts"]):
            if seg is None:
                H = self._G1r @ ((op["lam_r"] * op["s"])[:, None] * Qb.T)
                trAX = -np.sum(op["wdot"] * np.einsum("sa,sa->s", H @ Gam, H)) - np.sum(Delta * diagAX)
            else:
                if theta[k] == 0.0:  # the true derivative there is 0 (log|C| is even in θ_k)
                    continue
                trAX = (2.0 / theta[k]) * np.sum(diagAX[seg] - diagX[seg] / delta[seg]) - np.sum(
                    Delta[seg] * diagAX[seg]
                )
            QPd, QWd = Qb @ part["Pd"], Qb @ part["Wd"]
            g[k] = (
                trAX
                - 2.0 * np.sum(a_inv * (GP.T @ QPd))
                + np.sum((a_inv @ part["ad"] @ a_inv) * PXP)
                + 2.0 * np.sum(QW * (Gam @ QWd))
            )
        return g

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

    def describe(self) -> str:
        """One line: what approximates what."""
        probes = "exact trace" if self.exact_trace else f"{self.n_probes} Rademacher probes (seed {self.seed})"
        return (
            f"matrix-free: PCG (rtol {self.rtol:g}) on the Schur complement of {self.terms[0].term} "
            f"({self.q_r:,} effects), log-determinant by stochastic Lanczos quadrature ({probes}, "
            f"{self.lanczos_steps} steps)"
        )


def _is_diagonal(M: sp.csr_matrix) -> bool:
    """Only diagonal entries are stored (explicit zeros off it count as off-diagonal)."""
    coo = M.tocoo()
    return bool(np.all(coo.row == coo.col))
