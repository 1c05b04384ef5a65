"""GLM families for :func:`sparselmm.glmer`: link, inverse link, variance, deviance residuals, −2 log p(y|μ).

Each family is R's ``family`` object in small: the link functions clamp as R's ``make.link`` /
``binomial()$linkinv`` do (so μ never reaches 0 or 1 and ``dμ/dη`` never 0), the deviance residuals
are R's ``dev.resids``, and :meth:`Family.aic_term` is R's ``family$aic`` without the ``+ 2 p``:
``−2 Σ log p(yᵢ | μᵢ)`` *including* the normalising constant (``log choose(n, k)``, ``log y!``). That
is the term lme4's Laplace deviance adds (``glmResp::Laplace = ldL2 + ‖u‖² + aic()``), so ``−2 log L``
here is lme4's ``-2 * logLik(m)``.

Adding a family means writing its ``variance``, ``dev_resids``, ``aic_term``, ``validate`` and
``mustart``; links are shared. :class:`NegativeBinomial` (known θ, MASS's ``negative.binomial``) is
such an addition (a subclass of Poisson: same support and start).

:class:`Gamma` and :class:`InverseGaussian` have a dispersion φ (``has_scale = True``). lme4 treats it
the way R's ``family$aic`` does, and so do we: PIRLS minimises ``Σ devresid + ‖u‖²`` (φ plays no
part in the conditional modes), and the Laplace criterion's ``−2 log p(y | μ)`` is evaluated at the
moment estimate ``φ̂ = Σ devresid / Σ w`` computed from the same μ — so φ is profiled out of the
criterion rather than optimised. R's ``family$aic`` for these two families adds ``+ 2`` (the
dispersion counted as a parameter); lme4's ``glmResp::Laplace`` keeps it, so ``−2 log L`` here keeps it
too, and matches lme4's ``-2 * logLik(m)`` and the ``deviance`` column of its summary. The σ lme4
reports for these fits (``sigma(m)``, the ``Residual`` row of ``VarCorr``) is a different quantity,
``sqrt((Σ pearson² + ‖u‖²) / n)`` — see :class:`sparselmm.glmm.GlmerResult`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special, stats

from ..errors import DataError, ModelSpecError

__all__ = [
    "Link",
    "Family",
    "Binomial",
    "Poisson",
    "NegativeBinomial",
    "Gamma",
    "InverseGaussian",
    "get_family",
    "LINKS",
]

EPS = np.finfo(float).eps
_LOGIT_THRESH = 30.0  # R's binomial linkinv: eta outside ±30 gives mu = eps or 1 - eps
_PROBIT_THRESH = -stats.norm.ppf(EPS)


@dataclass(frozen=True)
class Link:
    """A link ``η = g(μ)`` with inverse ``μ = g⁻¹(η)`` and ``dμ/dη`` (R's ``make.link``)."""

    name: str

    def linkfun(self, mu):
        mu = np.asarray(mu, dtype=float)
        if self.name == "logit":
            return np.log(mu / (1 - mu))
        if self.name == "probit":
            return stats.norm.ppf(mu)
        if self.name == "cloglog":
            return np.log(-np.log1p(-mu))
        if self.name == "log":
            return np.log(mu)
        if self.name == "identity":
            return mu
        if self.name == "inverse":
            return 1 / mu
        if self.name == "sqrt":
            return np.sqrt(mu)
        if self.name == "1/mu^2":
            return 1 / (mu * mu)
        raise AssertionError(self.name)

    def linkinv(self, eta):
        eta = np.asarray(eta, dtype=float)
        if self.name == "logit":
            # R's C_logit_linkinv: beyond ±30 the odds are eps or 1/eps, so μ = eps/(1+eps) or 1/(1+eps)
            # (glm's "fitted probabilities numerically 0 or 1" — sparselmm.glmm.separation — keys on this)
            mu = special.expit(eta)
            mu = np.where(eta < -_LOGIT_THRESH, EPS / (1 + EPS), mu)
            return np.where(eta > _LOGIT_THRESH, 1 / (1 + EPS), mu)
        if self.name == "probit":
            return stats.norm.cdf(np.clip(eta, -_PROBIT_THRESH, _PROBIT_THRESH))
        if self.name == "cloglog":
            return np.clip(-np.expm1(-np.exp(np.minimum(eta, 700.0))), EPS, 1 - EPS)
        if self.name == "log":
            return np.maximum(np.exp(eta), EPS)
        if self.name == "identity":
            return eta
        if self.name == "inverse":
            with np.errstate(divide="ignore"):
                return 1 / eta
        if self.name == "sqrt":
            return eta**2
        if self.name == "1/mu^2":  # R's make.link("1/mu^2"): η must be > 0 (NaN otherwise, refused by PIRLS)
            with np.errstate(invalid="ignore", divide="ignore"):
                return 1 / np.sqrt(eta)
        raise AssertionError(self.name)

    def mu_eta(self, eta):
        eta = np.asarray(eta, dtype=float)
        if self.name == "logit":  # R's C_logit_mu_eta: eps beyond ±30
            e = np.exp(-np.abs(eta))
            return np.where(np.abs(eta) > _LOGIT_THRESH, EPS, np.maximum(e / (1 + e) ** 2, EPS))
        if self.name == "probit":
            return np.maximum(stats.norm.pdf(eta), EPS)
        if self.name == "cloglog":
            e = np.minimum(eta, 700.0)
            return np.maximum(np.exp(e) * np.exp(-np.exp(e)), EPS)
        if self.name == "log":
            return np.maximum(np.exp(eta), EPS)
        if self.name == "identity":
            return np.ones_like(eta)
        if self.name == "inverse":
            with np.errstate(divide="ignore"):
                return -1 / eta**2
        if self.name == "sqrt":
            return 2 * eta
        if self.name == "1/mu^2":
            with np.errstate(invalid="ignore", divide="ignore"):
                return -1 / (2 * eta**1.5)
        raise AssertionError(self.name)


LINKS = ("logit", "probit", "cloglog", "log", "identity", "inverse", "sqrt", "1/mu^2")


class Family:
    """Base class: a GLM family with a link; subclasses give variance, deviance residuals and −2 log p."""

    name = "family"
    links: tuple[str, ...] = ()
    default_link = ""
    #: True for families with a dispersion parameter (lme4's ``useSc``): Gamma, inverse Gaussian
    has_scale = False

    def __init__(self, link: str | None = None):
        link = self.default_link if link is None else link
        if not isinstance(link, str) or link not in self.links:
            raise ModelSpecError(
                f"Link {link!r} is not available for the {self.name} family; choose one of {list(self.links)}."
            )
        self.link = Link(link)

    def __repr__(self) -> str:
        return f"{self.name}(link={self.link.name!r})"

    @property
    def label(self) -> str:
        """The family as R's ``family(m)$family`` names it, for printing (``"Negative Binomial(3.0435)"``)."""
        return self.name

    def variance(self, mu):  # pragma: no cover - abstract
        raise NotImplementedError

    def dev_resids(self, y, mu, wt):  # pragma: no cover - abstract
        raise NotImplementedError

    def aic_term(self, y, mu, wt) -> float:  # pragma: no cover - abstract
        """``−2 Σ log p(yᵢ | μᵢ)`` with the normalising constant (R's ``family$aic`` minus ``2 p``)."""
        raise NotImplementedError

    def validate(self, y, wt, response: str | None = None) -> None:  # pragma: no cover - abstract
        """Raise :class:`~sparselmm.errors.DataError` if ``y`` is outside the family's support.

        ``response`` is the response as written in the formula; the message names it.
        """
        raise NotImplementedError

    def valid_mu(self, mu) -> bool:
        """Whether every ``μ`` is inside the family's mean space (R's ``validmu``); PIRLS refuses other steps.

        The binomial and Poisson links clamp μ into range, so only the families with unclamped links
        (Gamma, inverse Gaussian: ``μ > 0``) need this.
        """
        return True

    def mustart(self, y, wt):  # pragma: no cover - abstract
        raise NotImplementedError

    def draw(self, mu: np.ndarray, wt: np.ndarray, rng: np.random.Generator, dispersion: float = 1.0) -> np.ndarray:
        """One response drawn from the family at the means ``mu`` (the simulation of lme4's ``simulate``).

        Parameters
        ----------
        mu : ndarray
            Means on the response scale.
        wt : ndarray
            Prior weights (binomial: the trials, whole numbers).
        rng : numpy.random.Generator
        dispersion : float
            φ of a family with a dispersion (``sigma(m)²`` of the fit); ignored otherwise.

        Returns
        -------
        ndarray
            The response on the scale the family is fitted on (binomial: proportions of successes).
        """
        raise ModelSpecError(f"Simulating from the {self.name} family is not implemented.")

    def check_simulable(self, wt: np.ndarray) -> None:
        """Raise :class:`~sparselmm.errors.ModelSpecError` where :meth:`draw` cannot use the prior weights
        (binomial: trials that are not whole numbers, as lme4's ``simulate``)."""

    def _cached(self, name, y, wt, make):
        """A term that depends on (y, weights) only, computed once per response (PIRLS calls these often)."""
        cache = self.__dict__.setdefault("_cache", {})
        hit = cache.get(name)
        if hit is not None and hit[0] is y and hit[1] is wt:
            return hit[2]
        value = make()
        cache[name] = (y, wt, value)
        return value

    def working_weights(self, eta, mu, wt):
        """IRLS (Fisher) weights ``w (dμ/dη)² / V(μ)`` — lme4's ``sqrtXwt²``."""
        d = self.link.mu_eta(eta)
        return wt * d * d / self.variance(mu), d


class Binomial(Family):
    """Binomial: ``y`` a proportion with prior weights = trials (or 0/1 with weight 1)."""

    name = "binomial"
    links = ("logit", "probit", "cloglog", "log")
    default_link = "logit"

    def variance(self, mu):
        return mu * (1 - mu)

    def dev_resids(self, y, mu, wt):
        c = self._cached("dev", y, wt, lambda: special.xlogy(y, y) + special.xlogy(1 - y, 1 - y))
        return 2 * wt * (c - y * np.log(mu) - (1 - y) * np.log1p(-mu))

    def aic_term(self, y, mu, wt) -> float:
        # R: m = if (any(n > 1)) n else weights; -2 sum((weights/m) * dbinom(round(m y), round(m), mu, log=TRUE));
        # here the weights already hold the trials, so m = weights and weights/m = 1 (0 where m = 0)
        def make():
            m = np.round(wt)
            k = np.round(wt * y)
            const = special.gammaln(m + 1) - special.gammaln(k + 1) - special.gammaln(m - k + 1)
            return m, k, float(np.sum(np.where(m > 0, const, 0.0)))

        m, k, const = self._cached("aic", y, wt, make)
        ll = np.where(m > 0, k * np.log(mu) + (m - k) * np.log1p(-mu), 0.0)
        return float(-2 * (const + np.sum(ll)))

    def validate(self, y, wt, response: str | None = None) -> None:
        if np.any(y < 0) or np.any(y > 1):
            bad = int(np.sum((y < 0) | (y > 1)))
            raise DataError(
                f"binomial response: {bad} value(s) outside [0, 1]. Give 0/1 outcomes, proportions with "
                "weights = number of trials, or cbind(successes, failures)."
            )
        k = y * wt
        if np.any(np.abs(k - np.round(k)) > 1e-3):
            bad = int(np.sum(np.abs(k - np.round(k)) > 1e-3))
            raise DataError(
                f"binomial response: {bad} non-integer number(s) of successes (proportion × weights); the "
                "successes and trials must be whole numbers."
            )

    def mustart(self, y, wt):
        return (wt * y + 0.5) / (wt + 1)

    def check_simulable(self, wt) -> None:
        bad = np.abs(wt - np.round(wt)) > 1e-8
        if np.any(bad):
            raise ModelSpecError(
                f"Cannot simulate binomial responses: {int(bad.sum())} prior weight(s) are not whole numbers of "
                "trials (lme4: 'cannot simulate from non-integer prior.weights')."
            )

    def draw(self, mu, wt, rng, dispersion=1.0):
        # lme4's binomial simfun: rbinom(size = wts, prob = mu) / wts (a cbind response: its successes; the
        # trials are the fit's either way); a row with 0 trials stays 0
        trials = np.round(wt).astype(np.int64)
        k = rng.binomial(trials, np.clip(mu, 0.0, 1.0))
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(trials > 0, k / np.maximum(trials, 1), 0.0)


class Poisson(Family):
    """Poisson counts."""

    name = "poisson"
    links = ("log", "identity", "sqrt")
    default_link = "log"

    def variance(self, mu):
        return mu

    def dev_resids(self, y, mu, wt):
        c = self._cached("dev", y, wt, lambda: special.xlogy(y, y))
        return 2 * wt * (c - y * np.log(mu) - (y - mu))

    def aic_term(self, y, mu, wt) -> float:
        const = self._cached("aic", y, wt, lambda: float(np.sum(special.gammaln(y + 1) * wt)))
        return float(-2 * (np.sum((y * np.log(mu) - mu) * wt) - const))

    def validate(self, y, wt, response: str | None = None) -> None:
        if np.any(y < 0):
            raise DataError(f"poisson response: {int(np.sum(y < 0))} negative count(s); counts must be >= 0.")
        if np.any(np.abs(y - np.round(y)) > 1e-8):
            raise DataError(
                f"poisson response: {int(np.sum(np.abs(y - np.round(y)) > 1e-8))} non-integer value(s); "
                "counts must be whole numbers (use an offset for exposure, not a rate response)."
            )

    def mustart(self, y, wt):
        return y + 0.1

    def draw(self, mu, wt, rng, dispersion=1.0):
        # lme4's poisson simfun: rpois(mu), the prior weights ignored (simulate() warns of them)
        return rng.poisson(mu).astype(float)


class NegativeBinomial(Poisson):
    """Negative binomial with known shape ``theta`` (MASS's ``negative.binomial(theta)``): V(μ) = μ + μ²/θ."""

    name = "negative.binomial"
    links = ("log", "identity", "sqrt")
    default_link = "log"

    def __init__(self, theta: float = 1.0, link: str | None = None):
        if not (isinstance(theta, (int, float)) and np.isfinite(theta) and theta > 0):
            raise ModelSpecError(f"negative binomial theta must be a positive number, not {theta!r}.")
        self.theta = float(theta)
        super().__init__(link)

    def __repr__(self) -> str:
        return f"negative.binomial(theta={self.theta:g}, link={self.link.name!r})"

    @property
    def label(self) -> str:
        """MASS's family name, ``"Negative Binomial(θ)"`` with θ as R's ``format(round(theta, 4))``."""
        return f"Negative Binomial({round(self.theta, 4):.7g})"

    def variance(self, mu):
        return mu + mu * mu / self.theta

    def mustart(self, y, wt):
        return y + (y == 0) / 6  # MASS's negative.binomial()$initialize

    def draw(self, mu, wt, rng, dispersion=1.0):
        # lme4's negative.binomial simfun: rnbinom(mu = mu, size = theta); numpy's p = size / (size + mu)
        th = self.theta
        return rng.negative_binomial(th, th / (th + mu)).astype(float)

    def dev_resids(self, y, mu, wt):
        # MASS's 2 w (y log(max(1, y)/μ) − (y + θ) log((y + θ)/(μ + θ))), the second log as log1p: at a large θ
        # (glmer_nb's search over θ, data close to Poisson) the ratio is 1 + O(1/θ) and its log would lose
        # the digits PIRLS's step-halving compares
        th = self.theta
        return 2 * wt * (y * np.log(np.maximum(1, y) / mu) - (y + th) * np.log1p((y - mu) / (mu + th)))

    def aic_term(self, y, mu, wt) -> float:
        # −2 Σ w log dnbinom(y; θ, μ), written without the cancellations of large θ:
        # (y + θ) log(μ + θ) − θ log θ = y log(μ + θ) + θ log1p(μ/θ), and log Γ(θ) − log Γ(θ + y) =
        # betaln(θ, y) − log Γ(y) (0 for y = 0), which scipy evaluates accurately for a large θ
        th = self.theta

        def const():
            pos = y > 0
            lg = np.zeros_like(y, dtype=float)
            lg[pos] = special.betaln(th, y[pos]) - special.gammaln(y[pos])
            return special.gammaln(y + 1) + lg

        term = y * np.log((mu + th) / mu) + th * np.log1p(mu / th) + self._cached("aic", y, wt, const)
        return float(2 * np.sum(term * wt))


class _PositiveContinuous(Family):
    """Shared by Gamma and inverse Gaussian: ``y > 0``, ``μ > 0``, a dispersion, R's start ``μ = y``."""

    has_scale = True

    def validate(self, y, wt, response: str | None = None) -> None:
        bad = ~(y > 0)
        if np.any(bad):
            which = f"the response {response!r}" if response else "the response"
            first = np.flatnonzero(bad)[:5]
            raise DataError(
                f"{self.name} family: {which} has {int(bad.sum())} value(s) <= 0 (rows {first.tolist()}"
                f"{' ...' if bad.sum() > 5 else ''}, e.g. {y[first[0]]:g}); the {self.name} family needs "
                "y > 0. Drop or recode those rows, or choose another family."
            )

    def valid_mu(self, mu) -> bool:
        return bool(np.all(mu > 0) and np.all(np.isfinite(mu)))

    def mustart(self, y, wt):
        return np.asarray(y, dtype=float).copy()  # R's Gamma()$initialize / inverse.gaussian()$initialize

    @staticmethod
    def _dispersion(dev: float, wt) -> float:
        """The moment estimate ``Σ devresid / Σ w`` that R's ``family$aic`` (and so lme4) plugs in."""
        return dev / float(np.sum(wt))


class Gamma(_PositiveContinuous):
    """Gamma with a dispersion (shape ``1/φ``): V(μ) = μ²; links inverse (R's default), log, identity.

    ``aic_term`` is R's ``Gamma()$aic`` (lme4's ``gammaDist::aic``): ``−2 Σ w log dgamma(y; 1/φ̂, μφ̂) + 2``
    with ``φ̂ = Σ devresid / Σ w``.
    """

    name = "Gamma"
    links = ("inverse", "identity", "log")
    default_link = "inverse"

    def variance(self, mu):
        return mu * mu

    def draw(self, mu, wt, rng, dispersion=1.0):
        # Var(y) = φ μ² / w: shape w/φ, scale μφ/w. lme4 1.1-31's Gamma simfun uses shape = sigma(m) * w
        # instead (a different distribution unless σ = 1); this is the fitted model's
        shape = wt / dispersion
        return rng.gamma(shape, mu / shape)

    def dev_resids(self, y, mu, wt):
        with np.errstate(invalid="ignore", divide="ignore"):
            r = y / mu
            return -2 * wt * (np.log(r) - (y - mu) / mu)

    def aic_term(self, y, mu, wt) -> float:
        dev = float(np.sum(self.dev_resids(y, mu, wt)))
        disp = self._dispersion(dev, wt)
        shape = 1 / disp
        logy = self._cached("logy", y, wt, lambda: np.log(y))
        with np.errstate(invalid="ignore", divide="ignore"):
            scale = mu * disp
            ll = (shape - 1) * logy - y / scale - special.gammaln(shape) - shape * np.log(scale)
        return float(-2 * np.sum(wt * ll) + 2)


class InverseGaussian(_PositiveContinuous):
    """Inverse Gaussian with a dispersion: V(μ) = μ³; links 1/mu^2 (R's default), inverse, identity, log.

    ``aic_term`` is R's ``inverse.gaussian()$aic`` (lme4's ``inverseGaussianDist::aic``):
    ``Σw (log(2π φ̂) + 1) + 3 Σ w log y + 2`` with ``φ̂ = Σ devresid / Σ w``.
    """

    name = "inverse.gaussian"
    links = ("1/mu^2", "inverse", "identity", "log")
    default_link = "1/mu^2"

    def variance(self, mu):
        return mu * mu * mu

    def draw(self, mu, wt, rng, dispersion=1.0):
        # Var(y) = φ μ³ / w: the Wald distribution with shape λ = w/φ. lme4 1.1-31's simfun uses
        # statmod::rinvgauss(shape = w / sigma(m)), i.e. φ = σ instead of σ²
        return rng.wald(mu, wt / dispersion)

    def dev_resids(self, y, mu, wt):
        return wt * (y - mu) ** 2 / (y * mu * mu)

    def aic_term(self, y, mu, wt) -> float:
        dev = float(np.sum(self.dev_resids(y, mu, wt)))
        wsum = float(np.sum(wt))
        const = self._cached("aic", y, wt, lambda: 3 * float(np.sum(np.log(y) * wt)))
        with np.errstate(invalid="ignore", divide="ignore"):
            return float(wsum * (np.log(2 * np.pi * dev / wsum) + 1) + const + 2)


FAMILIES = {
    "binomial": Binomial,
    "poisson": Poisson,
    "gamma": Gamma,
    "inverse.gaussian": InverseGaussian,
    "inverse_gaussian": InverseGaussian,
    "inversegaussian": InverseGaussian,
}


#: names of the negative binomial with θ estimated (lme4's ``glmer.nb``, glmmTMB's ``nbinom2``), which
#: :func:`sparselmm.glmer` hands to :func:`sparselmm.glmer_nb`
NEGATIVE_BINOMIAL_NAMES = ("negative_binomial", "negative.binomial", "negativebinomial", "nbinom2")


def get_family(family, link: str | None = None) -> Family:
    """A :class:`Family` from an instance, a class or a name, as R's ``family`` argument.

    Parameters
    ----------
    family : Family, Family subclass or str
        ``"binomial"``, ``"poisson"``, ``"Gamma"`` (any case) or ``"inverse.gaussian"``
        (``"inverse_gaussian"`` also accepted); or ``Gamma(link="log")``, ``Binomial``, ...
    link : str, optional
        The link, for a family given by name or class (R: ``Gamma(link = "log")``).

    Returns
    -------
    Family
    """
    if isinstance(family, Family):
        if link is not None and link != family.link.name:
            if isinstance(family, NegativeBinomial):
                return NegativeBinomial(family.theta, link)
            return type(family)(link)
        return family
    if isinstance(family, type) and issubclass(family, Family):
        return family(link)
    if isinstance(family, str):
        key = family.lower().strip()
        if key in FAMILIES:
            return FAMILIES[key](link)
        if key in NEGATIVE_BINOMIAL_NAMES:
            raise ModelSpecError(
                f"family={family!r} estimates the negative binomial θ: fit it with sparselmm.glmer_nb (or "
                "sparselmm.glmer, which hands it over); for a known θ pass "
                "family=sparselmm.glmm.NegativeBinomial(theta=...)."
            )
    raise ModelSpecError(
        f"Unknown family {family!r}; available families are ['binomial', 'poisson', 'Gamma', 'inverse.gaussian', "
        "'negative_binomial'] (e.g. family='binomial', family=sparselmm.glmm.Gamma(link='log'), "
        "sparselmm.glmm.NegativeBinomial(theta=2) for a known theta; 'negative_binomial' estimates it)."
    )
