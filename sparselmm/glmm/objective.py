"""The criterion glmer optimises, and the quasi-Newton polish of its joint (θ, β) stage.

:class:`GlmmObjective` evaluates lme4's criterion with warm-started PIRLS (:mod:`sparselmm.glmm.pirls`):
at θ for ``nAGQ = 0`` (β inside PIRLS), at (θ, β) for ``nAGQ >= 1`` (the Laplace approximation, or adaptive
Gauss–Hermite quadrature for ``nAGQ > 1``); the formulas are in :mod:`sparselmm.glmm.glmer`.
:func:`newton_polish` minimises it from the ``nAGQ = 0`` optimum on central-difference gradients.
"""

from __future__ import annotations

import numpy as np

from ..errors import NumericalError
from ..newton import quasi_newton
from ..optimize import DERIV_STEP, fd_gradient
from .gradient import LaplaceGradient, gradient_supported
from .pirls import InvalidStart, PirlsModel, PirlsNotConverged

__all__ = ["GlmmObjective", "newton_polish", "newton_polish_exact"]


# PIRLS starts from the mode extrapolated along dû/dp (from the last exact gradient) at points this close to
# it, in every coordinate of (θ, β): the finite differences about it and the quasi-Newton steps
PREDICT_RADIUS = 0.05


class GlmmObjective:
    """The criterion at (θ) for nAGQ = 0 and at (θ, β) for nAGQ >= 1, with warm starts and counters.

    Where :func:`~sparselmm.glmm.gradient.gradient_supported`, :meth:`value_and_gradient` gives the exact
    gradient too (``self.gradient`` is then a :class:`~sparselmm.glmm.gradient.LaplaceGradient`, else None).
    """

    def __init__(self, model: PirlsModel, nAGQ: int):
        self.model = model
        self.nAGQ = nAGQ
        self.n_evals = 0
        self.gradient = LaplaceGradient(model) if gradient_supported(model, nAGQ) else None
        self._center = None  # (θ, β) stacked, û there, dû/dp: the last exact gradient's point
        self._last = None  # (θ, β) stacked of the last nAGQ >= 1 evaluation: the model's state is there
        self.eta_start = model.family.link.linkfun(model.family.mustart(model.y, model.pw))
        if nAGQ > 1:
            t = model.design.terms[0]
            self.refs = t.refs
            self.nlev = t.n_levels
            nodes, weights = np.polynomial.hermite_e.hermegauss(nAGQ)
            self.gh_z, self.gh_w = nodes, weights / np.sqrt(2 * np.pi)

    def laplace(self, mu, u) -> float:
        m = self.model
        return m.family.aic_term(m.y, mu, m.pw) + float(u @ u) + m.chol.logdet()

    def at_theta(self, theta) -> float:
        """nAGQ = 0: β and u by PIRLS at θ."""
        self.n_evals += 1
        m = self.model
        try:
            if m.beta is None:
                raise PirlsNotConverged("cold start")
            u, beta, eta, mu, w, pdev, RX = m.pirls_ub(theta)
        except PirlsNotConverged:
            u, beta, eta, mu, w, pdev, RX = m.pirls_ub(theta, eta_start=self.eta_start)
        self.RX = RX
        return self.laplace(mu, u)

    def at_theta_beta(self, theta, beta) -> float:
        """nAGQ >= 1: u by PIRLS at (θ, β); Laplace or AGQ criterion."""
        self.n_evals += 1
        m = self.model
        self._last = None
        try:
            u, eta, mu, w, pdev = m.pirls_u(theta, beta, u0=self._predicted_mode(theta, beta))
        except InvalidStart:  # Xβ outside the family's mean space (an inverse link with η <= 0)
            return np.inf
        except PirlsNotConverged:
            try:
                u, eta, mu, w, pdev = m.pirls_u(theta, beta, u0=np.zeros(m.q))
            except InvalidStart:
                return np.inf
        self._last = np.concatenate([theta, beta])
        if self.nAGQ <= 1:
            return self.laplace(mu, u)
        return self.agq(theta, beta, u, eta, mu)

    def _predicted_mode(self, theta, beta):
        """The mode at (θ, β) to first order from the last exact gradient's point, or None (PIRLS then starts
        from the last evaluation's mode): one Newton step from there is then ~(distance)² from the mode."""
        if self._center is None:
            return None
        x0, u0, dudp = self._center
        dx = np.concatenate([theta, beta]) - x0
        if not np.max(np.abs(dx), initial=0.0) <= PREDICT_RADIUS:
            return None
        return u0 + dudp @ dx

    def value_and_gradient(self, theta, beta) -> tuple[float, np.ndarray]:
        """The Laplace criterion and its exact gradient in (θ, β) (``self.gradient`` must not be None);
        raises :class:`~sparselmm.errors.NumericalError` where the criterion is not finite."""
        theta, beta = np.asarray(theta, dtype=float), np.asarray(beta, dtype=float)
        f = self.at_theta_beta(theta, beta)
        if not np.isfinite(f):
            raise NumericalError("the criterion is not finite here")
        return f, self._gradient_here(theta, beta)

    def gradient_at(self, theta, beta) -> np.ndarray:
        """The exact gradient at (θ, β), evaluating the criterion there first unless the last evaluation was
        at that point (a line search's accepted point)."""
        theta, beta = np.asarray(theta, dtype=float), np.asarray(beta, dtype=float)
        if self._last is None or not np.array_equal(self._last, np.concatenate([theta, beta])):
            return self.value_and_gradient(theta, beta)[1]
        return self._gradient_here(theta, beta)

    def _gradient_here(self, theta, beta) -> np.ndarray:
        g, dudp = self.gradient(theta, beta)
        self._center = (np.concatenate([theta, beta]), self.model.u.copy(), dudp)
        return g

    def agq(self, theta, beta, u, eta, mu) -> float:
        m = self.model
        fam, y, pw = m.family, m.y, m.pw
        lam = theta[0]
        refs = self.refs
        devc0 = u * u + np.bincount(refs, weights=fam.dev_resids(y, mu, pw), minlength=self.nlev)
        # one scalar term: C = ΛᵀZᵀWZΛ + I is diagonal, L_jj = sqrt(C_jj)
        w, _d = fam.working_weights(eta, mu, pw)
        zcol = m.design.terms[0].z[:, 0]
        Cjj = 1.0 + lam * lam * np.bincount(refs, weights=w * zcol * zcol, minlength=self.nlev)
        sd = 1.0 / np.sqrt(Cjj)
        mult = np.zeros(self.nlev)
        for zk, wk in zip(self.gh_z, self.gh_w):
            if zk == 0:
                mult += wk
                continue
            uk = u + zk * sd
            eta_k = eta + lam * zcol * (uk - u)[refs]
            devc = uk * uk + np.bincount(
                refs, weights=fam.dev_resids(y, fam.link.linkinv(eta_k), pw), minlength=self.nlev
            )
            mult += np.exp(-0.5 * (devc - devc0) + 0.5 * zk * zk) * wk
        return float(devc0.sum() + np.log(Cjj).sum() - 2 * np.log(mult).sum())


def newton_polish(fun, x0, f0, lower, H_beta, tol=5e-9, upper=None):
    """Minimise ``fun`` from ``x0`` by :func:`sparselmm.newton.quasi_newton` on central-difference gradients.

    The start Hessian is ``diag(θ second differences) ⊕ H_beta`` (``H_beta``: 2 × the nAGQ = 0 information
    of β): the second differences come with the first gradient, so the start costs 2m evaluations instead
    of the 2m + m(m−1) of a full difference Hessian; BFGS corrects the missing θ-β coupling. Stops when the
    predicted decrease ``½ gᵀH⁻¹g`` is below ``tol``.

    ``upper`` (default none): upper bounds of (θ, β), those of a covariance structure's parameters
    (:mod:`sparselmm.covstruct`); the differences and the steps stay within them.

    Returns ``(x, f, n_steps)``, or None when the start Hessian is not positive definite or the iteration
    does not converge — the caller then falls back to BOBYQA.
    """
    m, nb = x0.size, H_beta.shape[0]
    hi = np.full(m, np.inf) if upper is None else np.asarray(upper, dtype=float)
    up, dn = np.minimum(x0 + DERIV_STEP, hi), np.maximum(x0 - DERIV_STEP, lower)
    g = np.empty(m)
    H = np.zeros((m, m))
    for i in range(m):
        xa, xs = x0.copy(), x0.copy()
        xa[i], xs[i] = up[i], dn[i]
        fa, fs = fun(xa), fun(xs)
        g[i] = (fa - fs) / (up[i] - dn[i])
        H[i, i] = (fa - 2 * f0 + fs) / ((up[i] - dn[i]) / 2) ** 2
    nt = m - nb
    H[nt:, nt:] = H_beta
    H[np.arange(nt), np.arange(nt)] = np.where(np.diag(H)[:nt] > 0, np.diag(H)[:nt], 1.0)
    if np.min(np.linalg.eigvalsh(H)) <= 0:
        return None

    def gradient(x):
        return fd_gradient(fun, x, lower, upper=hi)

    return _polish(fun, gradient, x0, (f0, g), lower, hi, H, tol)


# the exact-gradient polish stops at this predicted decrease (the difference polish's 5e-9 is set by its
# gradient's truncation error; an exact gradient affords the tighter stop for a step or two more)
EXACT_POLISH_TOL = 1e-10


def newton_polish_exact(fun_grad, gradient, fun, x0, lower, H_beta, n_theta: int, tol=EXACT_POLISH_TOL, upper=None):
    """:func:`newton_polish` on the exact gradient: ``fun_grad(x) -> (f, g)``, ``gradient(x)`` (after
    ``fun(x)``, the line search's accepted point) and ``fun(x)``; ``upper`` as there (the exact gradient applies to
    no covariance structure yet, so its callers have none).

    The start Hessian takes its θ columns (θ's rows and its coupling to β) from forward differences of the
    gradient (``n_theta`` calls) and its β block from ``H_beta``. Returns ``(x, f, n_steps)``, or None as
    :func:`newton_polish` does.
    """
    f0, g0 = fun_grad(x0)
    m = x0.size
    H = np.zeros((m, m))
    H[n_theta:, n_theta:] = H_beta
    for i in range(n_theta):
        xa = x0.copy()
        xa[i] += DERIV_STEP
        col = (fun_grad(xa)[1] - g0) / DERIV_STEP
        H[:, i] = col
        H[i, :] = col
    H = (H + H.T) / 2
    if not np.all(np.isfinite(H)) or np.min(np.linalg.eigvalsh(H)) <= 0:
        return None
    hi = np.full(m, np.inf) if upper is None else np.asarray(upper, dtype=float)
    polished = _polish(fun, gradient, x0, (f0, g0), lower, hi, H, tol)
    return None if polished is None else (*polished[:2], polished[2] + n_theta + 1)


def _polish(fun, gradient, x0, first, lower, upper, H, tol):
    """The quasi-Newton iteration both polishes run from ``x0`` (``first = (f0, g0)`` there) with the start
    Hessian ``H``: ``(x, f, n_steps)``, or None where it does not converge."""
    x, f, _, _, n_steps, ok = quasi_newton(
        None, x0, lower, upper, H, tol, first=first, return_H=False, fun=fun, gradient=gradient
    )
    return (x, f, n_steps) if ok else None
