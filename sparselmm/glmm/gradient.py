"""The exact gradient of glmer's Laplace criterion in (θ, β), for canonical links and scalar random effects.

The criterion (:mod:`sparselmm.glmm.glmer`) at (θ, β) is

    f = D(μ) + ‖û‖² + log|C|,      C = ΛᵀZᵀWZΛ + I,      η = offset + Xβ + ZΛû,

``D = −2 log p(y | μ)``, ``û`` the conditional mode and ``W`` the working weights at ``û``. Three parts:

* ``D + ‖u‖²`` is stationary in ``u`` at ``û`` (for a family without a dispersion ``D`` is the deviance plus
  a constant, and PIRLS minimises the deviance plus ``‖u‖²``), so only its partial derivatives count:
  ``−2 rᵀ ∂η/∂p`` with ``r = pw (y − μ) μ′ / V`` (``∂η/∂β = X``, ``∂η/∂θ_k = Z E_k u``; ``E_k`` selects
  the columns of term ``k``, Λ being diagonal).
* ``log|C|`` at fixed ``W``: ``tr(C⁻¹ ∂C/∂θ_k) = 2 Σ_{a∈k, b} C⁻¹_ab G_ab λ_b`` (``G = ZᵀWZ``).
* ``log|C|`` through ``W``: ``Σᵢ hᵢ w′ᵢ dηᵢ/dp`` with ``hᵢ = (ZΛ C⁻¹ ΛᵀZᵀ)ᵢᵢ``, ``w′ = dw/dη`` and the
  total ``dη/dp = ∂η/∂p + ZΛ dû/dp``; the mode moves by ``dû/dp = −C⁻¹ ∂g/∂p`` where
  ``g = u − ΛᵀZᵀr`` is the score in ``u``: ``∂g/∂β = ΛᵀZᵀWX``, ``∂g/∂θ_k = −E_k Zᵀr + ΛᵀZᵀW Z E_k u``.
  That ``C`` is the Hessian of the penalised deviance in ``u`` (Fisher scoring's is the observed one) holds
  for canonical links only: binomial-logit and Poisson-log.

``C⁻¹`` is needed only where ``G`` is stored (the pairs of random effects that share a row): from the
dense-Schur factor's :meth:`~sparselmm.linalg.weighted_schur.WeightedSchur.inverse_on_pattern`, or for a small
CHOLMOD factor from the dense inverse. ``dû/dp`` (q × m) is also the first-order warm start of PIRLS at a
nearby point (:meth:`sparselmm.glmm.objective.GlmmObjective.at_theta_beta`).
"""

from __future__ import annotations

import numpy as np

from ..errors import NumericalError

__all__ = ["DENSE_INVERSE_MAX", "LaplaceGradient", "gradient_supported"]

# a CHOLMOD factor's C⁻¹ is formed dense (q solves): up to this many random effects only
DENSE_INVERSE_MAX = 2000
CANONICAL = {("binomial", "logit"), ("poisson", "log")}


def gradient_supported(model, nAGQ: int) -> bool:
    """Whether :class:`LaplaceGradient` applies: the Laplace criterion (``nAGQ = 1``), scalar terms (so no
    covariance-structure term: each has k ≥ 2 coefficients, and its θ is not Λ's entries), a canonical link of a
    family without a dispersion, and ``C⁻¹`` on the pattern affordable. Elsewhere the fit differentiates the
    criterion itself (central differences)."""
    fam = model.family
    return (
        nAGQ == 1
        and model.scalar
        and not model.design.structured
        and (fam.name, fam.link.name) in CANONICAL
        and type(fam).__name__ in ("Binomial", "Poisson")
        and (model.schur or model.q <= DENSE_INVERSE_MAX)
    )


class LaplaceGradient:
    """The gradient of the Laplace criterion of ``model`` (a :class:`~sparselmm.glmm.pirls.PirlsModel`) in
    (θ, β), at the state its last PIRLS run left: ``u`` the mode and the factor at the mode's weights."""

    def __init__(self, model):
        self.model = model
        model._lambda_parts(model.design.theta0)  # builds _Lind: column -> θ index (one per column, scalar)
        self.k_of = model._Lind.copy()
        self.n_theta = model.design.theta0.size
        self.n_evals = 0

    def _selected_inverse(self) -> np.ndarray:
        m = self.model
        if m.schur:
            return m.chol.inverse_on_pattern()
        Cinv = m.solve(np.eye(m.q))
        return Cinv[m.M_row, m.M_col]

    def __call__(self, theta, beta) -> tuple[np.ndarray, np.ndarray]:
        """``(gradient, dû/dp)`` at (θ, β), the model's mode and factor there (the caller's evaluation)."""
        self.n_evals += 1
        m = self.model
        fam = m.family
        theta = np.asarray(theta, dtype=float)
        nth, k_of = self.n_theta, self.k_of
        u = m.u
        lam = theta[k_of]
        eta = m.offset + m.X @ beta + m.Z @ (lam * u)
        mu = fam.link.linkinv(eta)
        w, d = fam.working_weights(eta, mu, m.pw)
        r = w * (m.y - mu) / d
        wprime = w * (1.0 - 2.0 * mu) if fam.name == "binomial" else w  # dw/dη for logit, log

        # ∂η/∂p: Z E_k u for θ_k, X for β
        Uk = np.zeros((m.q, nth))
        Uk[np.arange(m.q), k_of] = u
        V = np.hstack([np.asarray(m.Z @ Uk), m.X])
        # ∂g/∂p and the moving mode dû/dp = −C⁻¹ ∂g/∂p
        dg = lam[:, None] * np.asarray(m.Zt @ (w[:, None] * V))
        Ztr = m.Zt @ r
        dg[np.arange(m.q), k_of] -= Ztr
        dudp = -m.solve(dg)
        deta = V + m.Z @ (lam[:, None] * dudp)

        cinv = self._selected_inverse()
        if not np.all(np.isfinite(cinv)):
            raise NumericalError("C⁻¹ is not finite at this theta")
        row, col = m.M_row, m.M_col
        off = row != col
        # hᵢ = Σ over the pairs (a ≥ b) of row i of (2 − δ_ab) z_a z_b λ_a λ_b C⁻¹_ab
        pair_w = cinv * lam[row] * lam[col] * np.where(off, 2.0, 1.0)
        h = np.bincount(m.obs, weights=m.zz * pair_w[m.pos], minlength=m.n)
        G = np.bincount(m.pos, weights=m.zz * w[m.obs], minlength=row.size)
        # tr(C⁻¹ ∂C/∂θ_k) at fixed W: 2 Σ_{a∈k} Σ_b C⁻¹_ab G_ab λ_b over the full symmetric pattern
        gc = G * cinv
        trace = np.bincount(k_of[row], weights=gc * lam[col], minlength=nth)
        trace += np.bincount(k_of[col[off]], weights=gc[off] * lam[row[off]], minlength=nth)

        grad = -2.0 * (r @ V) + (h * wprime) @ deta
        grad[:nth] += 2.0 * trace
        return grad, dudp
