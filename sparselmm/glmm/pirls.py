"""Penalised iteratively reweighted least squares (PIRLS) on the sparse engine.

For fixed θ (and β, or with β inside), the conditional mode ``u`` maximises
``log p(y | η) − ‖u‖²/2`` with ``η = offset + Xβ + ZΛu``. Each Fisher-scoring step solves

    (ΛᵀZᵀWZΛ + I) u = ΛᵀZᵀW z,      z = η − offset − Xβ + (y − μ)/(dμ/dη),   W = w (dμ/dη)²/V(μ)

(lme4's ``pwrssUpdate`` with ``uOnly``), or with β inside the same system extended by ``X`` (lme4's
first stage, ``nAGQ = 0``), eliminated through ``RZX = L⁻¹PΛᵀZᵀWX`` and the dense ``p × p`` Schur
complement. A step that raises the penalised deviance ``Σ devresid + ‖u‖²`` is halved (up to 10 times).

The sparsity pattern of ``ZᵀWZ`` does not depend on ``W``: the row pairs that make each stored entry
are listed once (``pos``, ``zz``), so each iteration forms the values as one ``bincount`` of
``wᵢ zᵢₐ zᵢᵦ`` over the rows, scales them by ``Λ`` and hands them to CHOLMOD, whose symbolic analysis
(fill-reducing ordering included) is done once per model. ``u`` (and ``β``) are warm-started from the
previous θ's solution, which is why most evaluations near the optimum take 2-3 iterations.

The rows stay in memory: the weights change every iteration, so ``ZᵀWZ`` cannot be accumulated in one
pass the way ``ZᵀZ`` is for linear models.

``Λ`` is filled from the entries of the terms' factors (the λ vector of :mod:`sparselmm.design`), not from θ:
a term with a covariance structure (``diag``, ``cs``, ``ar1``, ``toep``; :mod:`sparselmm.covstruct`) has θ the
structure's parameters, which its ``factor`` maps to ``T`` (:meth:`PirlsModel.lambda_values`). Without such a
term λ is θ itself, and nothing else changes.
"""

from __future__ import annotations

import copy

import numpy as np
import scipy.sparse as sp

from ..errors import NumericalError
from ..linalg.cholmod import SparseCholesky
from ..linalg.schur import complement_density
from ..linalg.thresholds import AUTO_SCHUR_MIN_DENSITY, AUTO_SCHUR_MIN_Q2, MAX_DENSE
from ..linalg.weighted_schur import WeightedSchur

__all__ = ["InvalidStart", "PirlsModel", "PirlsNotConverged"]

MAXIT = 100
MAX_HALVINGS = 10
TOL = 1e-10  # relative change of the penalised deviance below which PIRLS may stop (lme4: 1e-7) ...
STEP_TOL = 1e-9  # ... once the largest step in u (and β) is also below this (absolute; u is N(0, I) a priori)
# Both are needed: for non-canonical links (probit, cloglog) Fisher scoring converges linearly, and a
# small change of the penalised deviance leaves u off by ~sqrt(change); log|L|² is first order in u, so
# the criterion would carry ~1e-5 noise and its finite-difference Hessian (the SEs) would be wrong.


STALL_STEP_TOL = 1e-6  # after MAXIT iterations: accepted if the deviance is flat and the step below this


def _converged(old: float, new: float, biggest_step: float, strict: bool = False) -> bool:
    """PIRLS stopping rule: a small relative change of the penalised deviance *and* a small step, or
    (``strict=False``) a change at rounding level.

    The penalised deviance is stationary in ``u``, so it stops changing (to rounding) while ``u`` is
    still off by ~1e-7. The Laplace criterion is not stationary in ``u`` and carries that error. For
    binomial and Poisson fits that is harmless (validated: criterion ~1e-8, SEs ~1e-5 from lme4's tight
    refits) and the rounding exit saves 10-40 % of the PIRLS iterations; for Gamma and inverse Gaussian
    (``strict``: the criterion holds ``n log Σ devresid``, and Fisher scoring with a large dispersion
    converges slowly) it spoils the finite-difference Hessian — SEs 10-80 % off — so there only the step
    ends PIRLS (see :func:`_stalled` for the last resort).
    """
    change = abs(old - new)
    if change < TOL * (abs(new) + 0.1) and biggest_step < STEP_TOL:
        return True
    return not strict and change < 1e-15 * abs(new)


def _stalled(old: float, new: float, biggest_step: float) -> bool:
    """After ``MAXIT`` iterations: accept a deviance flat to rounding with steps below ``STALL_STEP_TOL``."""
    return abs(old - new) <= 1e-15 * abs(new) and biggest_step < STALL_STEP_TOL


class _Extrapolation:
    """Aitken-style extrapolation for Fisher scoring that converges slowly and linearly.

    Fisher scoring with a non-canonical link and a large dispersion can converge at a rate near 1 (an
    inverse Gaussian log-link fit of skewed data: 0.91 per iteration, ~200 iterations to a 1e-9 step;
    lme4 stops with "pwrssUpdate did not converge" once its tolerance is tight). Then the steps keep one
    line and shrink by a constant ratio: with the signed ratio ``ρ`` (negative when successive steps
    alternate, as they do there: ρ = −0.91) the remaining distance is ``step · ρ / (1 − ρ)``, so
    :meth:`factor` proposes the multiplier ``1 / (1 − ρ)`` of the Fisher step once two successive steps
    are (anti)parallel (|cosine| > 0.99) and shrink by 0.5 < |ρ| < 0.995. PIRLS takes the extrapolated
    step only if it does not raise the penalised deviance; otherwise the ordinary step (with halving).
    """

    def __init__(self):
        self.prev = None

    def factor(self, step) -> float:
        prev, self.prev = self.prev, step
        if prev is None:
            return 1.0
        n0, n1 = float(np.linalg.norm(prev)), float(np.linalg.norm(step))
        if n0 == 0.0 or n1 == 0.0:
            return 1.0
        cos = float(prev @ step) / (n0 * n1)
        r = n1 / n0
        if abs(cos) > 0.99 and 0.5 < r < 0.995:
            rho = r if cos > 0 else -r  # signed contraction: steps that alternate in sign have rho < 0
            return min(1.0 / (1.0 - rho), 50.0)
        return 1.0

    def reset(self) -> None:
        self.prev = None


class PirlsNotConverged(NumericalError):
    """PIRLS did not converge for the θ (and β) given; the message names them."""


class InvalidStart(PirlsNotConverged):
    """The starting point of PIRLS gives means outside the family's range (no iteration was possible)."""


class PirlsModel:
    """PIRLS for one GLMM: the rows, the fixed pattern of ``ZᵀWZ`` and one CHOLMOD analysis.

    Parameters
    ----------
    design : sparselmm.design.Design
        ``Zt``, ``X`` and the θ layout.
    family : Family
    y, prior_weights, offset : ndarray
    """

    def __init__(self, design, family, y, prior_weights, offset, schur: bool | str = "auto"):
        self.design = design
        self.family = family
        self.y = y
        self.pw = prior_weights
        self.offset = offset
        self.X = design.X
        Zt = sp.csc_matrix(design.Zt)
        Zt.sort_indices()
        self.Zt = Zt
        self.Z = Zt.T.tocsr()
        self.n, self.q, self.p = design.n, design.q, design.p
        self.scalar = all(t.k == 1 for t in design.terms)
        self.structured = bool(design.structured)  # θ → the factors' entries through each term's structure
        self._Lind = None
        self._pattern()
        A = self.M_lower.copy()
        A.data[:] = 1.0
        if not self.scalar:  # the pattern of ΛᵀMΛ and the map that fills it (see _bilinear_map)
            self._lambda_parts(design.theta0)
            A = self._bilinear_map()
        self.schur = False
        if schur and self.scalar and len(design.terms) > 1:
            q1 = design.terms[0].q
            q2 = self.q - q1
            if q1 >= q2 and q2 <= MAX_DENSE and (schur != "auto" or self._schur_pays(q1, q2)):
                try:
                    self.chol = WeightedSchur(self.M_row, self.M_col, self.q, q1)
                    self.schur = True
                except ValueError:
                    pass
        if not self.schur:
            self.chol = SparseCholesky((A + sp.identity(self.q, format="csc")).tocsc())
        self.strict = bool(getattr(family, "has_scale", False))  # see _converged
        self.n_pirls = 0  # PIRLS iterations, all evaluations
        self.n_factor = 0
        # warm starts
        self.u = np.zeros(self.q)
        self.beta = None

    def with_response(self, y: np.ndarray, family=None) -> PirlsModel:
        """The same model for another response (a refit, a bootstrap replicate): the pattern of ``ZᵀWZ``, the
        maps that fill it and the symbolic analysis are shared, the factor's numeric workspace, the warm starts
        and the counters are its own; ``self`` is not touched. ``family``: another family for it (the
        negative binomial at another θ, :mod:`sparselmm.glmm.negbin`); default this model's."""
        new = copy.copy(self)
        if family is not None:
            new.family = family
            new.strict = bool(getattr(family, "has_scale", False))
        new.y = np.asarray(y, dtype=float)
        new.design = copy.copy(self.design)  # the design's response is the new one; X, Z, terms are shared
        new.design.y = new.y
        if self.schur:  # a factorisation rebinds every numeric array: a shallow copy has its own workspace
            new.chol = copy.copy(self.chol)
        else:
            pattern = (self.M_lower if self.scalar else self._A_map[4]).copy()
            pattern.data[:] = 1.0
            new.chol = self.chol.copy_analysis((pattern + sp.identity(self.q, format="csc")).tocsc())
        new.u = np.zeros(self.q)
        new.beta = None
        new.n_pirls = new.n_factor = 0
        return new

    @property
    def blas_size(self) -> int:
        """The size of the dense part of the factor, by which glmer's fits, refits and profiles hold the BLAS
        threads (:func:`sparselmm.linalg.threads.blas_threads`): the Schur complement's rows, or ``q``."""
        return self.chol.q2 if self.schur else self.q

    def _schur_pays(self, q1: int, q2: int) -> bool:
        """``schur="auto"``: the dense-Schur factor for complements of at least ``AUTO_SCHUR_MIN_Q2`` rows
        that are at least ``AUTO_SCHUR_MIN_DENSITY`` full (lmer's rule; both in :mod:`sparselmm.linalg.thresholds`).

        Measured per factorisation, one BLAS thread (crossed binary, 1e4 subjects × 1e3 items): CHOLMOD
        0.044 / 0.042 / 0.95 s against 0.012 / 0.019 / 0.32 s dense at 1e4 / 1e5 / 1e6 rows; on VerbAgg
        (24 items) CHOLMOD's 0.3 ms beats the dense factor's 0.8 ms of per-call work.
        """
        if q2 < AUTO_SCHUR_MIN_Q2:
            return False
        return complement_density(self.M_lower + self.M_lower.T, q1) >= AUTO_SCHUR_MIN_DENSITY

    # --- pattern of ZᵀWZ, fixed over W ---------------------------------------------------------------
    def _pattern(self):
        Zt = self.Zt
        indptr, rows, vals = Zt.indptr, Zt.indices, Zt.data
        counts = np.diff(indptr)
        # all pairs (a >= b) of nonzeros within each column (= row of Z)
        pa, pb, pz, pi = [], [], [], []
        for c in np.unique(counts):
            if c == 0:
                continue
            cols = np.flatnonzero(counts == c)
            start = indptr[cols]
            idx = start[:, None] + np.arange(c)[None, :]
            r = rows[idx]
            v = vals[idx]
            ii, jj = np.tril_indices(c)
            ra, rb = r[:, ii], r[:, jj]
            a = np.maximum(ra, rb).ravel()
            b = np.minimum(ra, rb).ravel()
            pa.append(a)
            pb.append(b)
            pz.append((v[:, ii] * v[:, jj]).ravel())
            pi.append(np.repeat(cols, len(ii)))
        a, b, zz, obs = (np.concatenate(x) for x in (pa, pb, pz, pi))
        # lower-triangular CSC pattern: column b, row a
        key = b.astype(np.int64) * self.q + a
        ukey, pos = np.unique(key, return_inverse=True)
        col, row = ukey // self.q, ukey % self.q
        M = sp.csc_matrix((np.ones(ukey.size), (row, col)), shape=(self.q, self.q))
        M.sort_indices()
        # csc from sorted (col, row) keys keeps the order of ukey
        self.M_lower = M
        self.pos, self.zz, self.obs = pos, zz, obs
        self.M_row, self.M_col = row, col
        self.diag_idx = np.flatnonzero(row == col)

    def _bilinear_map(self) -> sp.csc_matrix:
        """For vector-valued terms: ``A = Λᵀ M Λ`` (lower triangle) as one bincount per factorisation.

        ``A_ij = Σ Lt_ip M_pr Lt_jr`` over the stored entries; every product (position of ``A``, entry of
        ``M``, the two θ indices) is listed once here, so a factorisation forms ``A`` without sparse-sparse
        products (scipy's per-call overhead was most of the time on small models).
        """
        q = self.q
        T = self._Lt_pattern
        row, col = self.M_row, self.M_col
        off = row != col
        k = np.concatenate([np.arange(row.size), np.flatnonzero(off)])
        p = np.concatenate([row, col[off]])
        r = np.concatenate([col, row[off]])

        def expand(cols, base):
            # for each item (column c of Lt): every stored entry of that column
            counts = np.diff(T.indptr)[cols]
            item = np.repeat(base, counts)
            start = np.repeat(T.indptr[cols] - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
            return item, start + np.arange(counts.sum())

        it1, e1 = expand(p, np.arange(p.size))
        it2, e2 = expand(r[it1], np.arange(it1.size))
        e1 = e1[it2]
        kk = k[it1][it2]
        i, j = T.indices[e1], T.indices[e2]
        keep = i >= j
        i, j, kk, e1, e2 = i[keep], j[keep], kk[keep], e1[keep], e2[keep]
        key = j.astype(np.int64) * q + i
        ukey, pos = np.unique(key, return_inverse=True)
        A = sp.csc_matrix((np.ones(ukey.size), (ukey % q, ukey // q)), shape=(q, q))
        A.sort_indices()
        self._A_map = (pos, kk, self._Lind[e1], self._Lind[e2], A)
        return A

    def ZtWZ_lower(self, w: np.ndarray) -> sp.csc_matrix:
        """Lower triangle of ``ZᵀWZ`` on the fixed pattern (values from the rows)."""
        M = self.M_lower.copy()
        M.data = np.bincount(self.pos, weights=self.zz * w[self.obs], minlength=M.nnz)
        return M

    def lambda_values(self, theta) -> np.ndarray:
        """The entries of every term's factor's lower triangle, term by term (the λ that fills ``Λ``): θ itself
        unless a term has a covariance structure, whose ``factor`` then maps its slice of θ to its ``T``."""
        theta = np.asarray(theta, dtype=float)
        if not self.structured:
            return theta
        return np.concatenate([t.factor(theta)[t.tril_indices()] for t in self.design.terms])

    def _lambda_template(self) -> sp.csc_matrix:
        """``Λᵀ`` with each stored entry its (1-based) position in λ: the pattern and lme4's ``Lind``."""
        if not self.structured:  # θ is λ: the design's own Λᵀ at θ = 1, 2, …
            return sp.csc_matrix(self.design.Lambdat(np.arange(1.0, self.design.n_theta + 1)))
        blocks = []
        for t in self.design.terms:
            r, c = t.tril_indices()
            T = np.zeros((t.k, t.k))
            T[r, c] = t.lambda_offset + np.arange(1.0, t.n_lambda + 1)
            blocks.append(sp.kron(sp.identity(t.n_levels, format="csc"), sp.csc_matrix(T.T)))
        return sp.csc_matrix(sp.block_diag(blocks, format="csc"))

    def _lambda_parts(self, theta):
        """``Λᵀ`` for θ by filling a fixed pattern (lme4's ``Lind``, into λ: :meth:`lambda_values`), and its
        diagonal for scalar terms."""
        theta = self.lambda_values(theta)
        if self._Lind is None:
            T = self._lambda_template()
            T.eliminate_zeros()  # kron keeps the structural zeros of each k x k block
            T.sort_indices()
            self._Lt_pattern = T
            self._Lind = np.rint(T.data).astype(np.int64) - 1
        T = self._Lt_pattern
        Lt = sp.csc_matrix((theta[self._Lind], T.indices, T.indptr), shape=T.shape)
        lam = theta[self._Lind] if self.scalar else None  # diagonal Λ: one entry per column, in order
        return Lt, lam

    def factor(self, theta, w, parts=None) -> None:
        """Factor ``ΛᵀZᵀWZΛ + I`` numerically (the symbolic analysis is reused)."""
        Lt, lam = parts if parts is not None else self._lambda_parts(theta)
        M = self.ZtWZ_lower(w)
        if self.schur:
            self.chol.factorize(M.data, lam)
            self.n_factor += 1
            return
        if self.scalar:
            M.data *= lam[self.M_row] * lam[self.M_col]
            A = M
        else:
            pos, kk, l1, l2, pattern = self._A_map
            lam_all = self.lambda_values(theta)
            vals = np.bincount(pos, weights=M.data[kk] * lam_all[l1] * lam_all[l2], minlength=pattern.nnz)
            A = sp.csc_matrix((vals, pattern.indices, pattern.indptr), shape=pattern.shape)
        self.chol.factorize(A, beta=1.0)
        self.n_factor += 1

    def solve(self, b):
        return self.chol.solve_Lt(self.chol.solve_L(b))

    # --- linear predictor and penalised deviance --------------------------------------------------------
    def eta(self, theta_parts, u, beta):
        Lt, lam = theta_parts
        b = lam * u if lam is not None else Lt.T @ u
        return self.offset + self.X @ beta + self.Z @ b

    def pdev(self, eta, u):
        """Penalised deviance ``Σ devresid + ‖u‖²`` and μ; ``inf`` where μ leaves the family's mean space."""
        fam = self.family
        mu = fam.link.linkinv(eta)
        if not fam.valid_mu(mu):
            return np.inf, mu
        return float(np.sum(fam.dev_resids(self.y, mu, self.pw)) + u @ u), mu

    def _fail(self, theta, beta, what):
        raise PirlsNotConverged(
            f"PIRLS did not converge at theta = {np.array2string(np.asarray(theta), precision=6)}"
            f"{'' if beta is None else ', beta = ' + np.array2string(np.asarray(beta), precision=6)}: {what}. "
            "The model may be too complex for the data (quasi-separation, a variance running to infinity); "
            "try simpler random effects, rescaled covariates, or check the response."
        )

    # --- PIRLS over u with β fixed ----------------------------------------------------------------------
    def pirls_u(self, theta, beta, u0=None):
        """Conditional modes ``u`` at fixed (θ, β); returns (u, eta, mu, w, pdev) with L factored at final W."""
        parts = self._lambda_parts(theta)
        Lt = parts[0]
        u = (self.u if u0 is None else u0).copy()
        if not np.all(np.isfinite(u)):
            u = np.zeros(self.q)
        eta = self.eta(parts, u, beta)
        old, mu = self.pdev(eta, u)
        if not np.isfinite(old):
            u = np.zeros(self.q)
            eta = self.eta(parts, u, beta)
            old, mu = self.pdev(eta, u)
            if not np.isfinite(old):  # Xβ itself gives an invalid μ (e.g. η <= 0 for an inverse link)
                raise InvalidStart(
                    f"the fixed effects beta = {np.array2string(np.asarray(beta), precision=6)} "
                    "give means outside the family's range"
                )
        fixed = self.offset + self.X @ beta

        def target(u, eta, mu, w, d):
            z = eta - fixed + (self.y - mu) / d
            return self.solve(Lt @ (self.Zt @ (w * z)))

        u, eta, mu, w, old = self._scoring(
            theta, parts, u, eta, mu, old, lambda u: self.eta(parts, u, beta), target, beta
        )
        self.u = u
        return u, eta, mu, w, old

    # --- PIRLS over (u, β): lme4's nAGQ = 0 ---------------------------------------------------------------
    def pirls_ub(self, theta, u0=None, beta0=None, eta_start=None):
        """Joint conditional modes (u, β) at θ; returns (u, beta, eta, mu, w, pdev, RX) with L at final W."""
        parts = self._lambda_parts(theta)
        Lt = parts[0]
        X, q = self.X, self.q
        if eta_start is not None:
            x = np.zeros(q + self.p)
            eta = eta_start
            mu = self.family.link.linkinv(eta)
            old = np.inf
        else:
            u = self.u if u0 is None else u0
            beta = self.beta if beta0 is None else beta0
            x = np.concatenate([u, beta])
            eta = self.eta(parts, x[:q], x[q:])
            old, mu = self.pdev(eta, x[:q])
            if not np.isfinite(old):
                raise InvalidStart("the warm start gives means outside the family's range")

        def target(x, eta, mu, w, d):
            # (u, β) of the Fisher step: β from the Schur complement of the u block, then u
            z = eta - self.offset + (self.y - mu) / d
            RZX, RX = self._fixed_factor(w, Lt, theta, x[q:])
            cu = self.chol.solve_L(Lt @ (self.Zt @ (w * z)))
            rb = X.T @ (w * z) - RZX.T @ cu
            beta_new = np.linalg.solve(RX.T, np.linalg.solve(RX, rb))
            return np.concatenate([self.chol.solve_Lt(cu - RZX @ beta_new), beta_new])

        x, eta, mu, w, old = self._scoring(
            theta, parts, x, eta, mu, old, lambda x: self.eta(parts, x[:q], x[q:]), target, None
        )
        _, RX = self._fixed_factor(w, Lt, theta, x[q:])
        self.u, self.beta = x[:q].copy(), x[q:].copy()
        return self.u, self.beta, eta, mu, w, old, RX

    def fixed_schur(self, w, Lt):
        """``RZX = L⁻¹ΛᵀZᵀWX`` and the Schur complement ``XᵀWX − RZXᵀRZX`` of the fixed effects (``L`` factored
        at the weights ``w``, ``Lt`` = ``Λᵀ``)."""
        WX = self.X * w[:, None]
        RZX = self.chol.solve_L(np.asarray(Lt @ (self.Zt @ WX)))
        return RZX, self.X.T @ WX - RZX.T @ RZX

    def _fixed_factor(self, w, Lt, theta, beta):
        """``RZX`` and ``RX``, the Cholesky factor of the Schur complement (:meth:`fixed_schur`); one that is
        not positive definite ends PIRLS (:meth:`_fail` at ``theta``, ``beta``)."""
        RZX, S = self.fixed_schur(w, Lt)
        try:
            return RZX, np.linalg.cholesky(S)
        except np.linalg.LinAlgError:
            self._fail(theta, beta, "the fixed-effects cross-product is not positive definite")

    # --- the iteration both share -----------------------------------------------------------------------
    def _scoring(self, theta, parts, x, eta, mu, old, predictor, target, fail_beta):
        """Fisher scoring from ``x`` (``u``, or ``u`` and ``β`` stacked) until :func:`_converged`.

        Each iteration factors ``ΛᵀZᵀWZΛ + I`` at the working weights; ``target(x, eta, mu, w, d)`` is then
        the Fisher step's new ``x`` and ``predictor(x)`` the linear predictor at ``x``. The step is
        extrapolated (:class:`_Extrapolation`) where that does not raise the penalised deviance
        ``old``, else halved (up to ``MAX_HALVINGS`` times) until it does not. Failures name θ and
        ``fail_beta``. Returns ``(x, eta, mu, w, pdev)`` with the factor at the final weights.
        """
        fam = self.family
        q = self.q
        converged = False
        extra = _Extrapolation()
        for _ in range(MAXIT):
            self.n_pirls += 1
            w, d = fam.working_weights(eta, mu, self.pw)
            self.factor(theta, w, parts)
            step = target(x, eta, mu, w, d) - x
            f = extra.factor(step)
            taken = False
            if f != 1.0 and np.isfinite(old):
                cand = x + f * step
                eta_c = predictor(cand)
                new, mu_c = self.pdev(eta_c, cand[:q])
                if np.isfinite(new) and new <= old:
                    step = f * step
                    extra.reset()
                    taken = True
            if not taken:
                for _h in range(MAX_HALVINGS + 1):
                    cand = x + step
                    eta_c = predictor(cand)
                    new, mu_c = self.pdev(eta_c, cand[:q])
                    if np.isfinite(new) and new <= old + 1e-12 * abs(old):
                        break
                    step = step / 2
                else:
                    self._fail(theta, fail_beta, "step halving did not reduce the penalised deviance")
            x, eta, mu = cand, eta_c, mu_c
            biggest = np.max(np.abs(step), initial=0.0)
            if _converged(old, new, biggest, self.strict):
                converged = True
                old = new
                break
            last = (old, new, biggest)
            old = new
        if not converged and not _stalled(*last):
            self._fail(theta, fail_beta, f"no convergence in {MAXIT} iterations")
        w, _d = fam.working_weights(eta, mu, self.pw)
        self.factor(theta, w, parts)
        return x, eta, mu, w, old
