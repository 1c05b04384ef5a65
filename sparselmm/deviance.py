"""The profiled deviance of a linear mixed model: penalised least squares with one sparse Cholesky.

For each θ (Bates et al. 2015, JSS 67(1), section 3):

* ``L Lᵀ = P (Λᵀ ZᵀWZ Λ + I) Pᵀ`` (CHOLMOD; ``P`` fixed by one symbolic analysis),
* ``[R_ZX | c_u] = L⁻¹ P Λᵀ [ZᵀWX | ZᵀWy]``,
* ``R_Xᵀ R_X = XᵀWX − R_ZXᵀ R_ZX``, ``c_β = R_X⁻ᵀ (XᵀWy − R_ZXᵀ c_u)``, ``β̂ = R_X⁻¹ c_β``,
* ``r² = yᵀWy − ‖c_u‖² − ‖c_β‖²`` and the ML or REML criterion from ``log|L|²``, ``log|R_X|²`` and ``r²``.

The factor is held behind one interface (:class:`sparselmm.linalg.factor.Factor`: refactor for θ, solves,
log-determinant, its gradient where available), so the deviance and its gradient never ask which one it is.
On the CHOLMOD factor the values of ``Λᵀ ZᵀWZ Λ`` are written in place into a fixed lower-triangular
pattern through index maps built once (:class:`~sparselmm.linalg.factor.BlockUpdater`), so an evaluation does no
sparse products and allocates no new sparse structure. For crossed models the factor is instead a
dense-Schur one (:mod:`sparselmm.linalg.schur`, :mod:`sparselmm.linalg.block_schur`), which also gives the
exact gradient (:meth:`ProfiledDeviance.gradient`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace

import numpy as np
from scipy.linalg.lapack import dpotrf, dtrtrs

from .criterion import DenseCriterion, evaluator_kind
from .crossprod import CrossProducts
from .design import Design
from .errors import MemoryLimitError, ModelSpecError, NumericalError
from .linalg import threads
from .linalg.block_schur import BlockSchurCholesky, block_schur_applicable
from .linalg.cost import (
    PREFERENCE_HOLDS_SECONDS,
    SLOWER_PATH_TOLERANCE,
    PathCost,
    dense_cost,
    format_bytes,
    format_seconds,
    memory_limit_bytes,
    predict_costs,
)
from .linalg.dense import DenseFactor
from .linalg.factor import BlockUpdater, CholmodFactor, Factor
from .linalg.matrix_free import MatrixFreeDeviance
from .linalg.schur import (
    NotDiagonalError,
    SchurCholesky,
    SchurNotWorthwhileError,
    complement_density,
    schur_applicable,
)
from .linalg.thresholds import AUTO_SCHUR_MIN_DENSITY, DENSE_MAX_Q

__all__ = ["BlockUpdater", "PLSState", "ProfiledDeviance", "describe_path", "profiled_deviance"]

LOG_2PI = float(np.log(2 * np.pi))


@dataclass
class PLSState:
    """The solution of the penalised least-squares problem at one θ."""

    theta: np.ndarray
    beta: np.ndarray  # fixed effects (on the original, unshifted response)
    c_u: np.ndarray
    R_ZX: np.ndarray
    R_X: np.ndarray  # upper triangular, R_Xᵀ R_X = XᵀWX − R_ZXᵀ R_ZX
    pwrss: float  # penalised weighted residual sum of squares
    ldL2: float  # log|L|²
    ldRX2: float  # log|R_X|²
    deviance: float


class ProfiledDeviance:
    """The profiled deviance ``f(θ)`` (ML or REML) of a design, as lme4's ``devFunOnly=TRUE`` returns it.

    Parameters
    ----------
    design : Design
    cross : CrossProducts
    reml : bool
    ordering : str
        CHOLMOD fill-reducing ordering for the one symbolic analysis.
    memory_limit : None, int, float or str
        Most memory the factor may plan to use (see :func:`sparselmm.linalg.cost.memory_limit_bytes`).
    reweightable : bool
        With a CHOLMOD ordering: the factor accepts another ``ZᵀWZ`` of the same pattern (:meth:`set_cross`).

    Attributes
    ----------
    costs : list of PathCost
        Each path's predicted memory and time per evaluation (:mod:`sparselmm.linalg.cost`).
    predicted : PathCost
        The prediction for the path taken.
    """

    def __init__(
        self,
        design: Design,
        cross: CrossProducts,
        reml: bool = True,
        ordering: str = "auto",
        memory_limit=None,
        reweightable: bool = False,
    ):
        self.design = design
        self.cross = cross
        self.reml = bool(reml)
        self.terms = design.terms
        self._reweightable = reweightable
        self.chol: Factor = self._analyse(ordering, memory_limit)
        self.ordering = self.chol.ordering
        self._small = threads.small_evaluation(self.chol.dense_flops())
        self._rhs = np.asfortranarray(np.column_stack([cross.ZtWX, cross.ZtWy]))
        self.n, self.p = cross.n, design.p
        self.n_evals = 0
        self.state: PLSState | None = None
        self._dense: DenseCriterion | None | bool = False  # built at the first value_and_gradient

    # which factor is held matters only to set-up, messages and tests, never to an evaluation
    @property
    def schur(self) -> bool:
        """The factor is the all-scalar dense-Schur one (:mod:`sparselmm.linalg.schur`)."""
        return isinstance(self.chol, SchurCholesky)

    @property
    def block_schur(self) -> bool:
        """The factor is the block-Schur one (:mod:`sparselmm.linalg.block_schur`)."""
        return isinstance(self.chol, BlockSchurCholesky)

    @property
    def updater(self) -> BlockUpdater | None:
        """The CHOLMOD factor's in-place writer of ``ΛᵀZᵀWZΛ`` (None for the dense-Schur factors)."""
        return getattr(self.chol, "updater", None)

    def _analyse(self, ordering: str, memory_limit) -> Factor:
        """Choose and analyse the factor of ``ΛᵀZᵀWZΛ + I``.

        ``"auto"``: the first of these paths that applies and whose predicted memory
        (:func:`sparselmm.linalg.cost.predict_costs`, kept in :attr:`costs`) fits ``memory_limit``:

        * the dense Cholesky of the whole ``C`` (:class:`~sparselmm.linalg.dense.DenseFactor`) for at most
          :data:`~sparselmm.linalg.thresholds.DENSE_MAX_Q` random effects without a covariance structure: the
          evaluations are :class:`~sparselmm.criterion.DenseCriterion`'s, and on a model this small the other
          factors' set-up (and the other paths' predictions, not computed here) cost more than the fit's
          evaluations save;
        * the scalar dense-Schur factor (:mod:`sparselmm.linalg.schur`): all terms scalar, the first
          diagonal and at least as large as the rest, the complement at least ``AUTO_SCHUR_MIN_DENSITY``
          full. It gives the analytic gradient; whole fits were faster than CHOLMOD + BOBYQA at every size
          measured (BENCHMARKS.md, "Measurements behind the linear-algebra choices");
        * the block-Schur factor (:mod:`sparselmm.linalg.block_schur`) for vector-valued terms (or scalar
          ones the scalar factor declines), its complement as full: also with the gradient;
        * CHOLMOD (and BOBYQA), with the ordering and the simplicial or supernodal mode chosen by measuring
          the fill at the start θ (:func:`sparselmm.linalg.factor.analyse_cholmod`).

        A path predicted to take more than ``PREFERENCE_HOLDS_SECONDS`` per evaluation and to make the whole
        fit more than ``SLOWER_PATH_TOLERANCE`` times slower than the fastest that fits is passed over (time
        per evaluation, weighted by the evaluations a fit without the gradient takes). When none fits,
        :class:`~sparselmm.errors.MemoryLimitError` gives each path's prediction.
        ``"schur"`` forces a Schur factor wherever one applies (memory permitting); a CHOLMOD ordering by
        name forces CHOLMOD with that ordering.
        """
        G = self.cross.ZtWZ
        q = G.shape[0]
        self.memory_limit = memory_limit_bytes(memory_limit)
        self._costs = None
        dense = dense_cost(q)
        if ordering == "auto" and self._dense_applies(q) and dense.fits(self.memory_limit):
            return self._chosen(dense, DenseFactor(self.terms, G))
        scalar, block, cholmod, _ = self.costs  # the last, matrix-free, is profiled_deviance's fallback
        limit = self.memory_limit
        fitting = [c.fit_seconds for c in self.costs[:3] if c.fits(limit)]
        fastest = min(fitting) if fitting else np.inf

        def eligible(c: PathCost) -> bool:  # fits, and under "auto" not predicted much slower than the fastest
            slow = c.seconds > PREFERENCE_HOLDS_SECONDS and c.fit_seconds > SLOWER_PATH_TOLERANCE * fastest
            return c.bytes <= limit and (ordering != "auto" or not slow)

        if ordering in ("schur", "auto") and schur_applicable(self.terms, q) and eligible(scalar):
            auto = ordering == "auto"
            try:
                return self._chosen(
                    scalar,
                    SchurCholesky(
                        G,
                        self.terms[0].q,
                        min_density=AUTO_SCHUR_MIN_DENSITY if auto else 0.0,
                        terms=self.terms,
                        dense_from=scalar.options["dense_from"],
                    ),
                )
            except (NotDiagonalError, SchurNotWorthwhileError):
                pass
        if ordering in ("schur", "auto") and block_schur_applicable(self.terms, q) and eligible(block):
            if ordering == "schur" or complement_density(G, self.terms[0].q) >= AUTO_SCHUR_MIN_DENSITY:
                return self._chosen(block, BlockSchurCholesky(G, self.terms))
        if ordering == "schur":
            fits = scalar.bytes <= limit or block.bytes <= limit
            raise (ModelSpecError if fits else MemoryLimitError)(
                "ordering='schur' needs scalar random-effects terms only and a first term with one level per "
                "row and at least as many levels as the others, or a first term of plain columns, and its dense "
                f"arrays within memory_limit ({format_bytes(limit)}): {scalar.describe()}; {block.describe()}. "
                "Use ordering='auto'."
            )
        if cholmod.bytes > limit:
            table = "; ".join(c.describe() for c in self.costs)
            err = MemoryLimitError(
                f"No factor of this model fits memory_limit={format_bytes(limit)} (predicted: {table}). "
                "Raise memory_limit if the machine has the memory, or fit a model with fewer levels on its "
                "smaller crossed factor."
            )
            err.costs, err.memory_limit = self.costs, limit  # what profiled_deviance's fallback decides on
            raise err
        factor = CholmodFactor(self.terms, G, self.factors(self.design.theta0), ordering, self._reweightable)
        return self._chosen(cholmod, factor)

    def _dense_applies(self, q: int) -> bool:
        """The whole ``C`` in dense algebra: few random effects (:data:`DENSE_MAX_Q`), no covariance structure
        (the dense factor puts θ straight into Λ) and fixed weights."""
        return q <= DENSE_MAX_Q and not self.design.structured and not self._reweightable

    @property
    def costs(self) -> list[PathCost]:
        """Each path's prediction (:func:`~sparselmm.linalg.cost.predict_costs`): scalar Schur, block Schur,
        CHOLMOD, matrix-free; computed on first use where the dense path was taken without it."""
        if self._costs is None:
            self._costs = predict_costs(self.terms, self.cross.ZtWZ, self.design.p, self.memory_limit)
        return self._costs

    def _chosen(self, cost: PathCost, factor: Factor) -> Factor:
        self.predicted = cost
        return factor

    exact = True  # (the matrix-free criterion is not: LmerResult refuses what needs C's factor there)

    @property
    def path(self) -> str:
        """How ``ΛᵀZᵀWZΛ + I`` is factored (``OptInfo.path``)."""
        return self.chol.describe()

    def factors(self, theta: np.ndarray) -> list[np.ndarray]:
        """The k × k lower-triangular factor of each term."""
        return [t.factor(theta) for t in self.terms]

    def Lambdat_times(self, factors: list[np.ndarray], V: np.ndarray) -> np.ndarray:
        """``Λᵀ V`` for a dense V with q rows."""
        out = np.empty_like(V)
        for t, T in zip(self.terms, factors):
            seg = V[t.offset : t.offset + t.q]
            if t.k == 1:
                out[t.offset : t.offset + t.q] = seg * T[0, 0]
            else:
                # row i of every level at once (rows i, i + k, ...): k² strided axpys. numpy's batched matmul
                # of the k × k blocks took 0.88 ms on the slopes benchmark (2e4 levels, k = 2), this 0.15 ms
                dest = out[t.offset : t.offset + t.q]
                for i in range(t.k):
                    acc = seg[0 :: t.k] * T[0, i]
                    for j in range(1, t.k):
                        acc += seg[j :: t.k] * T[j, i]
                    dest[i :: t.k] = acc
        return out

    def Lambda_times(self, factors: list[np.ndarray], v: np.ndarray) -> np.ndarray:
        """``Λ v`` for a vector v of length q."""
        out = np.empty_like(v)
        for t, T in zip(self.terms, factors):
            seg = v[t.offset : t.offset + t.q].reshape(t.n_levels, t.k)
            out[t.offset : t.offset + t.q] = (seg @ T.T).ravel()
        return out

    def solve(self, theta) -> PLSState:
        """Solve the PLS problem at θ; raises :class:`NumericalError` when a factorisation fails."""
        with self._blas_limit():
            return self._solve(theta)

    def _blas_limit(self):
        """The BLAS threads of an evaluation (:func:`sparselmm.linalg.threads.evaluation_limit`)."""
        return threads.evaluation_limit(self._small)

    def optimizer_blas_limit(self):
        """The BLAS threads for the optimiser's own steps (:func:`sparselmm.linalg.threads.optimizer_limit`)."""
        return threads.optimizer_limit(self._small)

    def _solve(self, theta) -> PLSState:
        theta = np.array(theta, dtype=float).ravel()
        if theta.size != self.design.n_theta:
            raise ModelSpecError(
                f"theta must have {self.design.n_theta} elements ({self.design.theta_names()}), not {theta.size}."
            )
        self.n_evals += 1
        factors = self.factors(theta)
        self.chol.refactor(theta, factors)
        sol = self.chol.solve_L(self.Lambdat_times(factors, self._rhs))
        p = self.p
        R_ZX, c_u = sol[:, :p], sol[:, p]
        cr = self.cross
        if p:
            # einsum, not a BLAS call: a threaded BLAS pool woken here spins and slows the next
            # CHOLMOD factorisation, which runs on another BLAS library's threads (measured 1.5-2x)
            R_X, info = dpotrf(cr.XtWX - np.einsum("qi,qj->ij", R_ZX, R_ZX), lower=0, clean=1)
            if info != 0:
                raise NumericalError("The fixed-effects block R_X is not positive definite at this theta.")
            c_beta, _ = dtrtrs(R_X, cr.XtWy - np.einsum("qi,q->i", R_ZX, c_u), lower=0, trans=1)
            beta, _ = dtrtrs(R_X, c_beta, lower=0)
        else:
            R_X, c_beta, beta = np.zeros((0, 0)), np.zeros(0), np.zeros(0)
        pwrss = cr.ytWy - np.einsum("q,q->", c_u, c_u) - c_beta @ c_beta
        if not pwrss > 0:
            raise NumericalError("The penalised residual sum of squares is not positive at this theta.")
        ldL2 = self.chol.logdet()
        ldRX2 = 2.0 * float(np.sum(np.log(np.abs(np.diagonal(R_X))))) if p else 0.0
        if self.reml:
            nmp = self.n - p
            dev = ldL2 + ldRX2 - cr.sum_log_w + nmp * (1.0 + LOG_2PI + np.log(pwrss / nmp))
        else:
            dev = ldL2 - cr.sum_log_w + self.n * (1.0 + LOG_2PI + np.log(pwrss / self.n))
        self.state = PLSState(theta, beta + cr.beta_shift, c_u, R_ZX, R_X, float(pwrss), ldL2, ldRX2, float(dev))
        return self.state

    def __call__(self, theta) -> float:
        """The deviance at θ; ``inf`` where the factorisation fails (a rejected optimiser step)."""
        try:
            return self.solve(theta).deviance
        except NumericalError:
            return float("inf")

    @property
    def has_gradient(self) -> bool:
        """An analytic gradient is available: the factor gives ``∂ log|ΛᵀZᵀWZΛ + I| / ∂θ`` (the dense-Schur
        factors of :mod:`sparselmm.linalg.schur` and :mod:`sparselmm.linalg.block_schur`)."""
        return self.chol.has_logdet_gradient

    def gradient(self, state: PLSState | None = None) -> np.ndarray:
        """The analytic gradient ``∂f/∂θ`` (see :meth:`_gradient`)."""
        with self._blas_limit():
            return self._gradient(state)

    def _gradient(self, state: PLSState | None = None) -> np.ndarray:
        """The analytic gradient ``∂f/∂θ`` at the θ of ``state`` (default: the last :meth:`solve`).

        With ``C = ΛᵀZᵀWZΛ + I``, ``D_k = ∂(ΛΛᵀ)/∂θ_k`` and ``V = W⁻¹ + ZΛΛᵀZᵀ``:

        * ``∂ log|C| / ∂θ_k`` comes from the factor (:meth:`logdet_gradient`: traces of ``C⁻¹`` on the
          pattern of each term's blocks);
        * REML adds ``∂ log|R_X|² = −tr(M⁻¹ ΨᵀD_kΨ)`` with ``M = R_XᵀR_X`` and ``Ψ = ZᵀV⁻¹X = ZᵀWX − GΛΞ``,
          ``Ξ = C⁻¹ΛᵀZᵀWX = L⁻ᵀR_ZX``;
        * ``∂r²/∂θ_k = −aᵀD_k a`` with ``a = ZᵀV⁻¹(y − Xβ̂) = ZᵀW(y − Xβ̂) − GΛu`` (envelope theorem);

        and the deviance adds ``ν/r² · ∂r²`` with ``ν = n`` (ML) or ``n − p`` (REML). All of this is in the
        entries of the terms' factors; a term with a covariance structure (``diag``, ``cs``) gets its
        parameters' gradient by the chain rule (:meth:`sparselmm.design.Design.chain_gradient`). The same formulas,
        with dense algebra, are :meth:`sparselmm.derivatives.DevianceDerivatives.profiled_gradient`. Where
        the factor's traces overwrite it (``gradient_consumes_factor``: the scalar Schur factor's ``potri``),
        the current state is dropped: call :meth:`solve` before using the factor again.
        """
        if not self.has_gradient:
            raise ModelSpecError(
                f"This deviance function (ordering={self.ordering!r}) has no analytic gradient: it needs "
                "the dense-Schur factor (ordering='auto' or 'schur'), which applies to crossed designs whose "
                "first term is eliminated. Use its values f(theta), e.g. with optimizer='bobyqa'."
            )
        if state is None and self.state is None:
            raise ModelSpecError(
                "No current theta (none evaluated yet, or the last gradient consumed the factor): "
                "call value_and_gradient(theta), or solve(theta) first."
            )
        state = self.state if state is None else state
        if state is not self.state:  # the factor holds another θ
            state = self.solve(state.theta)
        cr = self.cross
        factors = self.factors(state.theta)
        u = self.spherical_modes(state)
        Xi = self.chol.solve_Lt(state.R_ZX) if self.p else np.zeros((cr.ZtWZ.shape[0], 0))
        ld = self.chol.logdet_gradient(state.theta, self.terms)
        self.state = self.state if self.chol.holds_factor else None  # the traces may consume the factor
        G = cr.ZtWZ
        beta_s = state.beta - cr.beta_shift
        Psi = cr.ZtWX - G @ self._Lambda_times_cols(factors, Xi)
        a = cr.ZtWy - cr.ZtWX @ beta_s - G @ self.Lambda_times(factors, u)
        La = self.Lambdat_times(factors, a[:, None])[:, 0]
        reml_part = self.reml and self.p
        if reml_part:
            Rinv = dtrtrs(state.R_X, np.eye(self.p), lower=0)[0]
            PsiM = Psi @ (Rinv @ Rinv.T)
            LPsi = self.Lambdat_times(factors, np.asfortranarray(Psi))
        nu = (self.n - self.p) if self.reml else self.n
        grad = np.asarray(ld, dtype=float).copy()
        for t in self.terms:
            seg = slice(t.offset, t.offset + t.q)
            # Σ_g a[(g,r)] (Λᵀa)[(g,c)] for every (r, c): aᵀ D_k a = 2 of these
            Ka = a[seg].reshape(t.n_levels, t.k).T @ La[seg].reshape(t.n_levels, t.k)
            if reml_part:
                KP = np.einsum(
                    "grp,gcp->rc", PsiM[seg].reshape(t.n_levels, t.k, -1), LPsi[seg].reshape(t.n_levels, t.k, -1)
                )
            for j, (r, c) in enumerate(zip(*t.tril_indices())):
                k = t.lambda_offset + j
                grad[k] -= 2.0 * nu * Ka[r, c] / state.pwrss
                if reml_part:
                    grad[k] -= 2.0 * KP[r, c]
        # so far in the entries of the factors (λ); a structured term's θ by the chain rule through its map
        return self.design.chain_gradient(state.theta, grad)

    def _Lambda_times_cols(self, factors: list[np.ndarray], V: np.ndarray) -> np.ndarray:
        """``Λ V`` for a dense V with q rows (:meth:`Lambdat_times` with the transposed factors)."""
        return self.Lambdat_times([T.T for T in factors], V)

    def value_and_gradient(self, theta) -> tuple[float, np.ndarray]:
        """The deviance and its analytic gradient at θ (see :meth:`gradient`).

        For small ``q`` (:data:`~sparselmm.linalg.thresholds.DENSE_MAX_Q`) the same values come from the
        dense evaluator (:class:`sparselmm.criterion.DenseCriterion`), whose dozen LAPACK calls cost a
        fraction of the per-term bookkeeping of :meth:`solve` and :meth:`gradient`; it keeps no state, so
        call :meth:`solve` for the solution at θ.
        """
        if self._dense is False:
            small = self.has_gradient and evaluator_kind(self) == "dense"
            own = self.chol.workspace_copy() if isinstance(self.chol, DenseFactor) else None
            self._dense = DenseCriterion(self.terms, self.cross, self.reml, factor=own) if small else None
        if self._dense is not None:
            self.n_evals += 1
            self.state = None
            with self._blas_limit():
                return self._dense.value_and_gradient(theta)
        state = self.solve(theta)
        return state.deviance, self.gradient(state)

    # ---- quantities needed only once, after the fit -------------------------------------------
    def spherical_modes(self, state: PLSState) -> np.ndarray:
        """Conditional modes ``u = Pᵀ L⁻ᵀ (c_u − R_ZX β̂)`` of the spherical random effects."""
        beta_shifted = state.beta - self.cross.beta_shift
        return self.chol.solve_Lt(state.c_u - state.R_ZX @ beta_shifted)

    def set_cross(self, cross: CrossProducts) -> None:
        """Take other cross-products whose ``ZᵀWZ`` has this one's pattern, in place: the residual weights of
        :mod:`sparselmm.residual` at another φ. The symbolic analysis stays; needs ``reweightable=True`` and a
        CHOLMOD ordering."""
        if not getattr(self.chol, "reweightable", False):
            raise ModelSpecError(
                "set_cross needs a deviance function built with a CHOLMOD ordering and reweightable=True."
            )
        self.chol.set_gram(cross.ZtWZ)
        self._take_cross(cross)

    def _take_cross(self, cross: CrossProducts) -> None:
        """Use ``cross`` from the next evaluation on: its right-hand sides, no current state, no dense evaluator."""
        self.cross = cross
        self.p = cross.XtWX.shape[0]
        self._rhs = np.asfortranarray(np.column_stack([cross.ZtWX, cross.ZtWy]))
        self.state = None
        self._dense = False

    # ---- siblings for refits (inference/): same design and symbolic factor, other right-hand sides ----
    def with_response(self, y, share_factor: bool = False) -> ProfiledDeviance:
        """The deviance function of the same model fitted to another response ``y`` (length n).

        Only ``ZᵀWy``, ``XᵀWy``, ``yᵀWy`` and the shift ``β₀`` are formed anew
        (:meth:`CrossProducts.with_response`); ``ZᵀWZ``, ``ZᵀWX``, ``XᵀWX``, the block updater and the
        symbolic analysis are shared, so a bootstrap or ``refit`` replicate costs one pass over ``Zt``
        plus the optimisation. ``y`` is on the scale of the data (the offset is removed here, as in the
        fit). The returned function's ``design`` holds ``y`` as its response.

        Parameters
        ----------
        y : array-like
            New response for the model's n rows.
        share_factor : bool
            ``False`` (default): the new function gets its own copy of the numeric factor workspace, so
            evaluating it never disturbs this one (nor this one it). ``True``: the workspace is shared —
            cheaper, for a loop that owns both; the last :meth:`solve` of either decides what the
            factor holds.
        """
        y = np.array(y, dtype=float).ravel()
        if y.shape != self.design.y.shape:
            raise ModelSpecError(f"The new response has {y.size} values; the model was fitted to {self.design.n} rows.")
        if not np.all(np.isfinite(y)):
            raise ModelSpecError("The new response has missing or infinite values; refits need complete responses.")
        new = self._sibling(self.cross.with_response(self.design, y), self.reml, share_factor)
        new.design = replace(self.design, y=y)
        return new

    def with_reml(self, reml: bool, share_factor: bool = False) -> ProfiledDeviance:
        """The same model's deviance function on the other criterion (``reml=False``: −2 log-likelihood).

        Shares the cross-products and the symbolic analysis (no new CHOLMOD analysis, unlike a
        fresh :class:`ProfiledDeviance`); ``share_factor`` as in :meth:`with_response`.
        """
        return self._sibling(self.cross, bool(reml), share_factor)

    def with_columns_in_offset(self, columns, values, reml: bool | None = None, share_factor: bool = False):
        """The deviance function of the model with fixed-effect ``columns`` moved to the offset.

        ``β_j`` for ``j`` in ``columns`` is held at ``values`` (0 drops the columns, as ``drop1`` does;
        a grid of values profiles ``β_j``, as lme4's ``profile`` does). The cross-products follow
        without touching the rows (:meth:`CrossProducts.with_columns_in_offset`). The result's ``p`` and
        the ``beta`` of its states refer to the remaining columns only; ``design`` still describes the
        full model, so use the function for deviances and θ, not to build an :class:`LmerResult`.
        """
        cross = self.cross.with_columns_in_offset(columns, values)
        return self._sibling(cross, self.reml if reml is None else bool(reml), share_factor)

    def _sibling(self, cross: CrossProducts, reml: bool, share_factor: bool) -> ProfiledDeviance:
        new = copy.copy(self)
        new.reml = reml
        new._take_cross(cross)
        new.n_evals = 0
        if not share_factor:
            new.chol = self.chol.workspace_copy()
        return new


def describe_path(devfun: ProfiledDeviance | MatrixFreeDeviance) -> str:
    """The path taken and its predicted cost, for verbose output (``"dense Schur complement; predicted
    1.2 GB, 3.1 s/evaluation; memory limit 14.0 GB"``)."""
    what = devfun.chol.describe() if devfun.exact else devfun.describe()
    c = devfun.predicted
    if c is None:
        return what
    limit = "" if devfun.memory_limit is None else f"; memory limit {format_bytes(devfun.memory_limit)}"
    return f"{what}; predicted {format_bytes(c.bytes)}, {format_seconds(c.seconds)}/evaluation{limit}"


def profiled_deviance(
    design: Design, cross: CrossProducts, reml: bool = True, ordering: str = "auto", memory_limit=None
) -> ProfiledDeviance | MatrixFreeDeviance:
    """The criterion a fit minimises: exact (:class:`ProfiledDeviance`) wherever a factor fits
    ``memory_limit``, else approximate (:class:`~sparselmm.linalg.matrix_free.MatrixFreeDeviance`).

    Under ``ordering="auto"`` the matrix-free path is the fallback when no factor fits and the model is
    all-scalar with a first term of one level per row (crossed designs); ``ordering="matrix-free"`` asks for
    it. When it does not apply or fit either, :class:`~sparselmm.errors.MemoryLimitError` gives every path's
    prediction.
    """
    if ordering == "matrix-free":
        limit = memory_limit_bytes(memory_limit)
        costs = predict_costs(design.terms, cross.ZtWZ, design.p, limit)
        if costs[-1].applicable and costs[-1].bytes > limit:
            raise MemoryLimitError(
                f"The matrix-free path does not fit memory_limit={format_bytes(limit)}: {costs[-1].describe()}."
            )
        return MatrixFreeDeviance(design, cross, reml, costs=costs, memory_limit=limit)
    try:
        return ProfiledDeviance(design, cross, reml, ordering, memory_limit)
    except MemoryLimitError as err:
        costs, limit = getattr(err, "costs", None), getattr(err, "memory_limit", None)
        if ordering != "auto" or costs is None or not costs[-1].fits(limit):
            raise
        return MatrixFreeDeviance(design, cross, reml, costs=costs, memory_limit=limit)
