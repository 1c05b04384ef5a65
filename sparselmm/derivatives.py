"""Exact derivatives of the linear mixed model's deviance, for inference.

Everything here is computed at one θ (normally θ̂) from the cross-products and ``Λθ``, never from an
n × n matrix. With ``V = W⁻¹ + ZΛΛᵀZᵀ`` (so ``Var(y) = σ² V``), ``G = ZᵀWZ`` and the matrix the engine
factors, ``C = ΛᵀGΛ + I``, the Woodbury identity ``V⁻¹ = W − WZΛ C⁻¹ ΛᵀZᵀW`` turns every quantity
into q × q, q × p and p × p blocks:

* ``Ω = ZᵀV⁻¹Z = G − GΛ H`` with ``H = C⁻¹ΛᵀG`` (note ``ΛᵀΩ = H`` and ``ΛᵀΩΛ = I − C⁻¹``),
* ``Ψ = ZᵀV⁻¹X = ZᵀWX − GΛ Ξ`` with ``Ξ = C⁻¹ΛᵀZᵀWX``, ``M = XᵀV⁻¹X = R_XᵀR_X``,
* ``Ω_P = ZᵀPZ = Ω − Ψ M⁻¹ Ψᵀ`` for REML's ``P = V⁻¹ − V⁻¹X M⁻¹XᵀV⁻¹``,
* ``a = ZᵀP y`` (the residual of the GLS fit mapped to the random effects).

θ enters ``V`` through ``D_k = ∂(ΛΛᵀ)/∂θ_k = E_kΛᵀ + ΛE_kᵀ`` and
``D_kl = ∂²(ΛΛᵀ)/∂θ_k∂θ_l = E_kE_lᵀ + E_lE_kᵀ`` with ``E_k = ∂Λ/∂θ_k`` (Λ is linear in θ), all
block-diagonal and sparse. Then, with ``ℓ = log|V| (+ log|M|)`` and ``r² = yᵀPy`` (the PWRSS):

* ``∂ℓ/∂θ_k = tr(Ω_X D_k)``, ``∂²ℓ/∂θ_k∂θ_l = tr(Ω_X D_kl) − tr(Ω_X D_k Ω_X D_l)``
  (``Ω_X = Ω`` for ML, ``Ω_P`` for REML),
* ``∂r²/∂θ_k = −aᵀD_k a``, ``∂²r²/∂θ_k∂θ_l = 2 aᵀD_k Ω_P D_l a − aᵀD_kl a``,
* ``∂M/∂θ_k = −ΨᵀD_kΨ``, so ``∂ vcov(β)/∂θ_k = σ² M⁻¹ΨᵀD_kΨM⁻¹`` and ``∂ vcov(β)/∂σ = 2σ M⁻¹``.

These give lmerTest's Satterthwaite ingredients exactly — the Hessian of its ``devfun_vp(θ, σ) =
ℓ + r²/σ² + ν log(2πσ²)`` (``ν = n`` or ``n − p``) and the Jacobian of ``vcov(β)`` — where lmerTest
takes Richardson finite differences of refits. Kenward–Roger's blocks (pbkrtest's ``P_r``, ``Q_rs``,
``tr(Σ⁻¹G_rΣ⁻¹G_s)``) use the same matrices in pbkrtest's linear (co)variance parametrisation, with
the residual direction ``W⁻¹`` reduced by ``ZᵀV⁻¹W⁻¹V⁻¹Z = Ω − HᵀH``,
``XᵀV⁻¹W⁻¹V⁻¹X = M − ΞᵀΞ``, ``XᵀV⁻¹W⁻¹V⁻¹W⁻¹V⁻¹X = M − ΞᵀΞ − ΞᵀC⁻¹Ξ`` and
``tr((V⁻¹W⁻¹)²) = n − q + ‖C⁻¹‖²_F``.

When the first (largest) term is at least half of the random effects it is eliminated: its block of
``C`` is block diagonal, so ``C⁻¹ = J + U S⁻¹ Uᵀ`` with ``J`` and ``U`` sparse and ``S`` the dense q₂ × q₂
complement of the other terms, and ``Ω = N₀ − V S⁻¹ Vᵀ`` (:class:`LowRankOmega`). Every product, entry
and trace above — Kenward–Roger's ``HᵀH`` entries and ``‖C⁻¹‖²_F`` included — is then sparse work plus
q₂ × q₂ dense work; no q × q matrix is formed (InstEval: q = 4,128, q₂ = 1,156). Otherwise ``C⁻¹``, ``H`` and
``Ω`` are dense q × q (:class:`DenseOmega`). :data:`~sparselmm.linalg.thresholds.MAX_DENSE_Q` bounds the
dense block's rows either way.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
import scipy.sparse as sp

from .covstruct import refuse_structured
from .errors import ModelSpecError
from .linalg.c_inverse import (
    DenseOmega,
    DenseParts,
    LowRankOmega,
    c_inverse,
    c_inverse_parts,
    dense_enough,
    gram,
    lambda_inverse,
    rowdot,
    scale_columns,
    scale_rows,
    sparse_dense_product,
    spd_inverse,
    term_factor_inverses,
)
from .linalg.thresholds import DENSE_BELOW_Q, MAX_DENSE_Q

__all__ = ["DevianceDerivatives", "dense_dimension"]


def dense_dimension(design) -> int:
    """Rows of the dense block the exact derivatives form: the random effects left after eliminating the
    first (largest) term when it is at least half of them (:func:`c_inverse_parts`), else all q."""
    terms = design.terms
    q = int(design.q)
    if terms and terms[0].q >= q - terms[0].q:
        return q - terms[0].q
    return q


class DevianceDerivatives:
    """Exact derivatives of the deviance at one θ, built once and shared by every inference method.

    Parameters
    ----------
    devfun : ProfiledDeviance
        The model's deviance function (its design, cross-products and criterion).
    theta : array-like
        Where to differentiate (θ̂ for inference).
    sigma : float, optional
        Residual SD; by default the profiled σ̂(θ) of the criterion (REML or ML).
    """

    def __init__(self, devfun, theta, sigma: float | None = None):
        if not devfun.exact:
            devfun.needs_exact("Satterthwaite's and Kenward–Roger's df (the criterion's exact derivatives)")
        refuse_structured(
            devfun.design, "Satterthwaite's and Kenward–Roger's df", "or use ddf='lme4' (t tests without df)"
        )
        self.devfun = devfun
        self.design = devfun.design
        self.cross = devfun.cross
        self.reml = devfun.reml
        self.theta = np.asarray(theta, dtype=float).copy()
        q = self.cross.ZtWZ.shape[0]
        state = devfun.solve(self.theta)
        self.state = state
        self.n, self.p, self.q = self.cross.n, self.design.p, q
        self.nu = self.n - self.p if self.reml else self.n
        self.pwrss = state.pwrss
        self.sigma = float(np.sqrt(state.pwrss / self.nu)) if sigma is None else float(sigma)
        self._build()

    # ---- the q-space blocks ---------------------------------------------------------------------
    def _build(self) -> None:
        cr = self.cross
        G = cr.ZtWZ.tocsc()
        Lt = self.design.Lambdat(self.theta).tocsc()  # Λᵀ
        LtG = (Lt @ G).tocsr()  # ΛᵀG, sparse
        C = (LtG @ Lt.T).tocsc()
        C = (C + sp.identity(self.q, format="csc")).tocsc()
        self.Lt, self._C, self._LtG = Lt, C, LtG
        terms = self.design.terms
        # small q: dense q × q algebra is cheaper than the sparse products' per-call overhead (kb07, q = 352,
        # 20 θ: 210 trace pairs of tiny sparse products took 1.5× the fit)
        parts = c_inverse_parts(C, terms) if self.q > DENSE_BELOW_Q else None
        LtZtWX = np.asarray(Lt @ cr.ZtWX).reshape(self.q, self.p)
        if parts is None:
            # no block-diagonal first term to eliminate: dense C⁻¹, H and Ω (bounded by MAX_DENSE_Q)
            self._check_dense()
            dense = self._dense
            self.omega = DenseOmega(dense.Omega)
            cinv_times = dense.cinv_times
            self._parts = None
        else:
            # C⁻¹ = J + U S⁻¹ Uᵀ: Ω = N₀ − V S⁻¹ Vᵀ with N₀ sparse and V sparse q × q₂ — no q × q matrix
            J, U, Sinv = parts
            if Sinv.shape[0] > MAX_DENSE_Q:
                raise ModelSpecError(
                    f"Exact derivatives need a dense {Sinv.shape[0]} × {Sinv.shape[0]} complement of the "
                    f"smaller random-effect terms (limit {MAX_DENSE_Q}); use ddf='lme4' (no degrees of "
                    "freedom) for this model."
                )

            def cinv_times(B):
                return np.asarray(J @ B) + np.asarray(U @ (Sinv @ np.asarray(U.T @ B)))

            T_inv = term_factor_inverses(terms, self.theta)
            if T_inv is not None:
                # ΛᵀG = (C − I)Λ⁻¹, so Ω = Λ⁻ᵀ(I − C⁻¹)Λ⁻¹ = Λ⁻ᵀ(I − J)Λ⁻¹ − (Λ⁻ᵀU) S⁻¹ (Λ⁻ᵀU)ᵀ
                Linv = lambda_inverse(terms, T_inv)
                N0 = (Linv.T @ (sp.identity(self.q, format="csr") - J) @ Linv).tocsr()
                V = (Linv.T @ U).tocsr()
            else:
                # near-singular Λ: Ω = G − GΛ C⁻¹ ΛᵀG without Λ⁻¹
                Linv = None
                N0 = (G - LtG.T @ (J @ LtG)).tocsr()
                V = (LtG.T @ U).tocsr()
            self.omega = LowRankOmega(N0, V, Sinv)
            self._parts, self._Linv = parts, Linv
        self._cinv_times_fn = cinv_times
        self._Xi = self.Xi = cinv_times(LtZtWX)  # Ξ = C⁻¹ΛᵀZᵀWX
        self._Cinv_y = cinv_times(np.asarray(Lt @ cr.ZtWy).reshape(self.q, -1))
        Xi = self._Xi
        self.Psi = np.asarray(cr.ZtWX - LtG.T @ Xi).reshape(self.q, self.p)  # Ψ = ZᵀV⁻¹X
        M = cr.XtWX - LtZtWX.T @ Xi
        self.M = 0.5 * (M + M.T)
        self.Minv = spd_inverse(self.M) if self.p else np.zeros((0, 0))
        # a = ZᵀP y = ZᵀV⁻¹(y − Xβ̂) on the shifted response of the cross-products
        ZtVinvy = np.asarray(cr.ZtWy).reshape(self.q, -1) - LtG.T @ self._Cinv_y
        beta_shifted = self.state.beta - cr.beta_shift
        self.a = np.asarray(ZtVinvy.ravel() - self.Psi @ beta_shifted).ravel()
        self.term_rows = [slice(t.offset, t.offset + t.q) for t in terms]

    def _check_dense(self) -> None:
        if self.q > MAX_DENSE_Q:
            raise ModelSpecError(
                f"Exact derivatives need dense q × q matrices and this model has q = {self.q} random effects "
                f"(limit {MAX_DENSE_Q}); use ddf='lme4' (no degrees of freedom) for this model."
            )

    @cached_property
    def _dense(self) -> DenseParts:
        """Dense ``C⁻¹`` (or ``H`` holding its storage), ``H = C⁻¹ΛᵀG`` and ``Ω`` — Kenward–Roger's
        residual direction needs them; Satterthwaite, gradients and traces do not when the first term
        was eliminated."""
        self._check_dense()
        Cinv = c_inverse(self._C, self.design.terms)
        T_inv = term_factor_inverses(self.design.terms, self.theta)
        if T_inv is not None:
            # Λ well conditioned: ΛᵀG = (C − I)Λ⁻¹, so H = (I − C⁻¹)Λ⁻¹ and Ω = Λ⁻ᵀ(I − C⁻¹)Λ⁻¹ —
            # q² work instead of the q · nnz(G) of two sparse-dense products
            H = Cinv
            H *= -1.0
            H[np.diag_indices_from(H)] += 1.0
            scale_columns(H, self.design.terms, T_inv)  # H = (I − C⁻¹) Λ⁻¹, in place
            Omega = H.copy()
            scale_rows(Omega, self.design.terms, T_inv)  # Ω = Λ⁻ᵀ H
            Cinv = None  # overwritten by H; C⁻¹ = I − H Λ when needed (Kenward–Roger)
        else:
            LtG = self._LtG
            H = np.asarray((LtG.T @ Cinv).T)  # C⁻¹ΛᵀG (C⁻¹ symmetric)
            Omega = self.cross.ZtWZ.toarray()
            Omega -= np.asarray(LtG.T @ H)
            Omega = 0.5 * (Omega + Omega.T)
        return DenseParts(Cinv, H, Omega, T_inv, self.Lt)

    @property
    def Cinv(self) -> np.ndarray | None:
        return self._dense.Cinv

    @property
    def H(self) -> np.ndarray:
        return self._dense.H

    @property
    def Omega(self) -> np.ndarray:
        """Dense ``Ω = ZᵀV⁻¹Z`` (formed on first use)."""
        return self._dense.Omega

    # Ω_X = Ω − [REML] Ψ M⁻¹ Ψᵀ is never formed: its rank-p correction is applied where it is used
    def _omega_x_times(self, v: np.ndarray, reml: bool | None = None) -> np.ndarray:
        """``Ω_X v`` (``Ω_P`` for REML, ``Ω`` for ML; ``reml=True`` forces ``Ω_P``)."""
        out = self.omega.matmat(v)
        if self.reml if reml is None else reml:
            out -= self.Psi @ (self.Minv @ (self.Psi.T @ v))
        return out

    def _sparse_trace(self, A: sp.spmatrix) -> float:
        """``tr(A Ω_X)`` for a sparse symmetric ``A``."""
        if A.nnz == 0:
            return 0.0
        A = A.tocoo()
        val = float(A.data @ self.omega.entries(A.row, A.col))
        if self.reml:
            PM = self.Psi @ self.Minv
            val -= float(A.data @ np.einsum("ij,ij->i", PM[A.row], self.Psi[A.col]))
        return val

    # ---- θ directions -------------------------------------------------------------------------
    @cached_property
    def param_term(self) -> list[int]:
        """The term of each θ element (and of each of pbkrtest's covariance elements)."""
        return [i for i, t in enumerate(self.design.terms) for _ in range(t.n_theta)]

    def _trace_products(self, mats: list[sp.csr_matrix], reml: bool) -> np.ndarray:
        """``tr(A_k Ω_X A_l Ω_X)`` for every pair of symmetric, term-block-diagonal sparse ``A``
        (``Ω_X = Ω_P = Ω − ΨM⁻¹Ψᵀ`` if ``reml``, else ``Ω``).

        The ``Ω`` part is the representation's own (:meth:`LowRankOmega.trace_products` or
        :meth:`DenseOmega.trace_products`). REML's rank-p correction is applied without forming
        ``Ω_P``: with ``U = Ψ``, ``V = ΨM⁻¹`` and ``W_l = Ω A_l U``, the trace loses
        ``sum(A_kV ∘ W_l) + sum(A_lV ∘ W_k)`` and gains ``tr((VᵀA_kU)(VᵀA_lU))`` — q × p work per
        direction (on InstEval this replaced three 3,000 × 4,128 outer products).
        """
        rows = [self.term_rows[i] for i in self.param_term]
        out = self.omega.trace_products(mats, rows)
        m = len(mats)
        if reml and self.p:
            U, V = self.Psi, self.Psi @ self.Minv
            AU = [np.asarray(A @ U) for A in mats]
            AV = [np.asarray(A @ V) for A in mats]
            W = [self.omega.matmat(x) for x in AU]
            VAU = [x.T @ U for x in AV]  # VᵀA_kU (A_k symmetric)
            for k in range(m):
                for l in range(k + 1):
                    corr = -float(np.sum(AV[k] * W[l])) - float(np.sum(AV[l] * W[k]))
                    corr += float(np.sum(VAU[k] * VAU[l].T))
                    out[k, l] += corr
                    if l != k:
                        out[l, k] += corr
        return out

    @cached_property
    def E(self) -> list[sp.csr_matrix]:
        """``E_k = ∂Λ/∂θ_k`` (q × q, one entry per level of the θ element's term)."""
        out = []
        for t in self.design.terms:
            rows, cols = t.tril_indices()
            base = t.offset + np.arange(t.n_levels) * t.k
            for r, c in zip(rows, cols):
                out.append(sp.csr_matrix((np.ones(t.n_levels), (base + r, base + c)), shape=(self.q, self.q)))
        return out

    @cached_property
    def D(self) -> list[sp.csr_matrix]:
        """``D_k = ∂(ΛΛᵀ)/∂θ_k = E_kΛᵀ + ΛE_kᵀ``."""
        out = []
        for Ek in self.E:
            A = (Ek @ self.Lt).tocsr()
            out.append((A + A.T).tocsr())
        return out

    def _D2(self, k: int, l: int) -> sp.csr_matrix:
        """``D_kl = E_kE_lᵀ + E_lE_kᵀ`` (zero unless θ_k and θ_l share a term and a column)."""
        A = (self.E[k] @ self.E[l].T).tocsr()
        return (A + A.T).tocsr()

    # ---- lmerTest's Satterthwaite ingredients ---------------------------------------------------
    def varpar_hessian(self) -> np.ndarray:
        """Hessian of lmerTest's ``devfun_vp`` in ``varpar = (θ, σ)`` at (θ, σ) (exact)."""
        nth = self.theta.size
        s2 = self.sigma**2
        T2 = self._trace_products(self.D, self.reml)  # tr(Ω_X D_k Ω_X D_l)
        Da = [Dk @ self.a for Dk in self.D]
        OPDa = [self._omega_x_times(v, reml=True) for v in Da]
        Hs = np.zeros((nth + 1, nth + 1))
        term = self.param_term
        for k in range(nth):
            for l in range(k + 1):
                t2 = T2[k, l]
                r2 = 2.0 * float(Da[k] @ OPDa[l])
                t1 = 0.0
                if term[k] == term[l]:  # D_kl vanishes across terms
                    D2 = self._D2(k, l)
                    if D2.nnz:
                        t1 = self._sparse_trace(D2)
                        r2 -= float(self.a @ (D2 @ self.a))
                Hs[k, l] = Hs[l, k] = t1 - t2 + r2 / s2
            Hs[k, nth] = Hs[nth, k] = 2.0 * float(self.a @ Da[k]) / self.sigma**3
        Hs[nth, nth] = 6.0 * self.pwrss / s2**2 - 2.0 * self.nu / s2
        return Hs

    def varpar_gradient(self) -> np.ndarray:
        """Gradient of lmerTest's ``devfun_vp`` in ``(θ, σ)`` (zero at the optimum, up to convergence)."""
        nth = self.theta.size
        g = np.zeros(nth + 1)
        for k, Dk in enumerate(self.D):
            g[k] = self._sparse_trace(Dk) - float(self.a @ (Dk @ self.a)) / self.sigma**2
        g[nth] = -2.0 * self.pwrss / self.sigma**3 + 2.0 * self.nu / self.sigma
        return g

    def profiled_gradient(self) -> np.ndarray:
        """Gradient of the profiled deviance ``f(θ)`` (ML or REML) in θ."""
        g = np.zeros(self.theta.size)
        for k, Dk in enumerate(self.D):
            g[k] = self._sparse_trace(Dk) - self.nu * float(self.a @ (Dk @ self.a)) / self.pwrss
        return g

    @cached_property
    def vcov_beta(self) -> np.ndarray:
        """``σ² M⁻¹`` (lme4's ``vcov``)."""
        return self.sigma**2 * self.Minv

    def vcov_beta_jacobian(self) -> list[np.ndarray]:
        """``∂ vcov(β) / ∂ varpar``: one p × p matrix per θ element, then one for σ."""
        out = []
        for Dk in self.D:
            B = self.Minv @ (self.Psi.T @ np.asarray(Dk @ self.Psi)) @ self.Minv
            out.append(self.sigma**2 * 0.5 * (B + B.T))
        out.append(2.0 * self.sigma * self.Minv)
        return out

    # ---- Kenward–Roger (pbkrtest's parametrisation) ---------------------------------------------
    def _cinv_times(self, B: np.ndarray) -> np.ndarray:
        """``C⁻¹ B``; with ``H = (I − C⁻¹)Λ⁻¹`` holding C⁻¹'s storage, ``C⁻¹ = I − HΛ``."""
        return self._cinv_times_fn(B)

    @cached_property
    def _colsq(self) -> np.ndarray:
        """Column sums of squares of the dense ``H`` (the diagonal of ``HᵀH``)."""
        return np.einsum("ij,ij->j", self.H, self.H)

    @cached_property
    def _hth_lowrank(self):
        """``HᵀH = N_h + W S⁻¹ Vᵀ + V S⁻¹ Wᵀ + V K₂ Vᵀ`` (``K₂ = S⁻¹UᵀUS⁻¹``) from ``C⁻¹ = J + US⁻¹Uᵀ``.

        With Λ⁻¹: ``HᵀH = Λ⁻ᵀ(I − C⁻¹)²Λ⁻¹``, so with ``D₀ = I − J``: ``N_h = Λ⁻ᵀD₀²Λ⁻¹``,
        ``W = −Λ⁻ᵀD₀U``. Without: ``HᵀH = RᵀC⁻²R`` (``R = ΛᵀG``): ``N_h = RᵀJ²R``, ``W = RᵀJU``.
        """
        J, U, Sinv = self._parts
        UtU = sp.csr_matrix(gram(U, U)) if dense_enough(U) else (U.T @ U).tocsr()  # YᵀY + I
        K2 = Sinv @ sparse_dense_product(UtU, Sinv)
        if self._Linv is not None:
            Li = self._Linv
            D0 = (sp.identity(self.q, format="csr") - J).tocsr()
            N_h = (Li.T @ (D0 @ (D0 @ Li))).tocsr()
            W = (-(Li.T @ (D0 @ U))).tocsr()
        else:
            R = self._LtG
            JR = (J @ R).tocsr()
            N_h = (JR.T @ JR).tocsr()
            W = (JR.T @ U).tocsr()
        return N_h, W, K2, UtU

    def _hth_entries(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Entries of ``HᵀH`` (``H = C⁻¹ΛᵀG``) at paired ``rows``, ``cols`` (Kenward–Roger's residual terms)."""
        if self._parts is None:
            out = np.empty(rows.size)
            on_diag = rows == cols
            out[on_diag] = self._colsq[rows[on_diag]]  # (HᵀH)_ii: column sums of squares, one pass
            off = ~on_diag
            if off.any():
                out[off] = np.einsum("ki,ki->i", self.H[:, rows[off]], self.H[:, cols[off]])
            return out
        N_h, W, K2, _ = self._hth_lowrank
        om = self.omega
        out = np.asarray(N_h[rows, cols]).ravel().astype(float)
        step = max(1, om.CHUNK_ENTRIES // max(1, om.Sinv.shape[0]))
        for s in range(0, rows.size, step):
            r, c = rows[s : s + step], cols[s : s + step]
            out[s : s + step] += rowdot(W[r], om.vs_rows(c))
            out[s : s + step] += rowdot(W[c], om.vs_rows(r))
            out[s : s + step] += rowdot(om.V[c], np.asarray(om.V[r] @ K2))
        return out

    def _cinv_frobenius2(self) -> float:
        """``‖C⁻¹‖²_F = tr(C⁻²)``."""
        if self._parts is not None:
            # tr((J + US⁻¹Uᵀ)²) = tr(J²) + 2 Σ S⁻¹ ∘ UᵀJU + Σ K₂ ∘ UᵀU
            J, U, Sinv = self._parts
            _, _, K2, UtU = self._hth_lowrank
            JU = (J @ U).tocsr()
            UJU = sp.coo_matrix(gram(U, JU)) if dense_enough(U) else (U.T @ JU).tocoo()
            UtU = UtU.tocoo()
            total = float(J.multiply(J).sum())
            total += 2.0 * float(UJU.data @ Sinv[UJU.row, UJU.col]) if UJU.nnz else 0.0
            total += float(UtU.data @ K2[UtU.row, UtU.col]) if UtU.nnz else 0.0
            return total
        if self.Cinv is not None:
            return float(np.einsum("ij,ij->", self.Cinv, self.Cinv))
        # C⁻¹ = I − HΛ: ‖I − HΛ‖² = q − 2 tr(HΛ) + ‖HΛ‖²; per term ‖H_t (I ⊗ T)‖² = Σ_levels tr(Tᵀ G_g T)
        # with G_g the k × k Gram matrix of H's columns of level g — one pass over H, no q × q copy
        total = float(self.q)
        for t, T in zip(self.design.terms, [t.factor(self.theta) for t in self.design.terms]):
            cols = slice(t.offset, t.offset + t.q)
            diag_blocks = self.H[cols, cols].reshape(t.n_levels, t.k, t.n_levels, t.k)
            idx = np.arange(t.n_levels)
            HT_diag = np.matmul(diag_blocks[idx, :, idx, :], T)  # (HΛ) diagonal blocks
            total -= 2.0 * float(np.einsum("gii->", HT_diag))
            if t.k == 1:
                total += float(T[0, 0] ** 2 * np.sum(self._colsq[cols]))
            else:
                Hc = self.H[:, cols].reshape(self.q, t.n_levels, t.k)
                grams = np.einsum("agi,agj->gij", Hc, Hc)  # (m, k, k)
                total += float(np.einsum("ji,gjk,ki->", T, grams, T))  # tr(Tᵀ G_g T)
        return total

    @cached_property
    def Delta(self) -> list[sp.csr_matrix]:
        """pbkrtest's random-effect directions: per term, ``I_m ⊗ (E_ij + E_ji)`` for each covariance
        element (lower triangle by column, lme4's θ order); ``Z Δ Zᵀ`` is its ``G_r``."""
        out = []
        for t in self.design.terms:
            rows, cols = t.tril_indices()
            base = t.offset + np.arange(t.n_levels) * t.k
            for r, c in zip(rows, cols):
                if r == c:
                    M = sp.csr_matrix((np.ones(t.n_levels), (base + r, base + r)), shape=(self.q, self.q))
                else:
                    ii = np.concatenate([base + r, base + c])
                    jj = np.concatenate([base + c, base + r])
                    M = sp.csr_matrix((np.ones(ii.size), (ii, jj)), shape=(self.q, self.q))
                out.append(M)
        return out

    def kenward_roger_blocks(self) -> tuple[list[np.ndarray], list[list[np.ndarray]], np.ndarray]:
        """pbkrtest's ``P_r``, ``Q_rs`` and ``Ktrace`` for γ = (covariance elements, σ²).

        ``Σ = σ²V = Σ_r γ_r G_r`` with ``G_r = ZΔ_rZᵀ`` and, for the residual, ``G = W⁻¹`` (pbkrtest
        uses the identity, i.e. it ignores prior weights; the two agree when there are none).
        """
        s2 = self.sigma**2
        Psi, Xi = self.Psi, self.Xi
        nre = len(self.Delta)
        DPsi = [np.asarray(Dr @ Psi) for Dr in self.Delta]  # Δ_r Ψ
        KRE = self._trace_products(self.Delta, False)  # tr(Δ_r Ω Δ_s Ω)
        Rz = Psi - self._LtG.T @ self._cinv_times(Xi)  # ZᵀV⁻¹W⁻¹V⁻¹X = Ψ − HᵀΞ, HᵀΞ = GΛC⁻¹Ξ
        P = [-(Psi.T @ d) / s2**2 for d in DPsi]
        XtVWVX = self.M - Xi.T @ Xi
        P.append(-XtVWVX / s2**2)
        m = nre + 1
        Q = [[None] * m for _ in range(m)]
        OmDPsi = [self._omega_x_times(d, reml=False) for d in DPsi]  # Ω Δ_s Ψ
        for r in range(nre):
            for s in range(nre):
                Q[r][s] = (DPsi[r].T @ OmDPsi[s]) / s2**3
            Q[r][nre] = (DPsi[r].T @ Rz) / s2**3
            Q[nre][r] = Q[r][nre].T
        Q[nre][nre] = (self.M - Xi.T @ Xi - Xi.T @ self._cinv_times(Xi)) / s2**3
        K = np.zeros((m, m))
        for r in range(nre):
            for s in range(r + 1):
                K[r, s] = K[s, r] = KRE[r, s] / s2**2
            # tr(Δ_r (Ω − HᵀH)): only the entries of HᵀH on Δ_r's pattern are needed
            Dr = self.Delta[r].tocoo()
            hth = self._hth_entries(Dr.row, Dr.col)
            om = self.omega.entries(Dr.row, Dr.col)
            K[r, nre] = K[nre, r] = (float(Dr.data @ om) - float(Dr.data @ hth)) / s2**2
        K[nre, nre] = (self.n - self.q + self._cinv_frobenius2()) / s2**2
        return P, Q, K
