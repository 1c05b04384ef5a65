"""sparselmm.glmer_nb: the negative binomial GLMM with θ estimated (lme4's glmer.nb), and its refusals.

Reference values from R 4.2.2, lme4 1.1-31, MASS 7.3-58.2 on validation/data/glmer_nb_intercept.csv
(validation/simulate_glmer_nb.py); the full comparison, with glmmTMB, is validation/compare_glmer_nb.py.
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import sparselmm
from sparselmm import ArgumentError, ConvergenceWarning, DataError, ModelSpecError
from sparselmm.glmm import GlmerNbResult, NegativeBinomial, get_family
from sparselmm.glmm.negbin import theta_ml

DATA = Path(__file__).resolve().parent.parent / "validation" / "data"


@pytest.fixture(scope="module")
def nb_data():
    return pd.read_csv(DATA / "glmer_nb_intercept.csv")


@pytest.fixture(scope="module")
def nb_fit(nb_data):
    return sparselmm.glmer_nb("y ~ x + (1 | g)", nb_data)


# R: d <- read.csv("validation/data/glmer_nb_intercept.csv")
#    ctl <- glmerControl(tolPwrss = 1e-12)
#    g1 <- glmer(y ~ x + (1 | g), d, family = MASS::negative.binomial(theta = 2.79597296535251), control = ctl)
#    mt <- lme4:::optTheta(g1, interval = log(2.79597296535251) + c(-3, 3), tol = 1e-10, control = ctl)
#    getME(mt, "glmer.nb.theta"); fixef(mt); getME(mt, "theta"); logLik(mt); sqrt(diag(vcov(mt)))
LME4_TIGHT = {
    "nb_theta": 2.79593525743729,
    "beta": [0.872069584138441, 0.400001314971512],
    "theta": 0.516936927709553,
    "loglik": -1137.21147606599,
    "se": [0.092306192793277, 0.0421107258878891],
}
# R: m <- glmer.nb(y ~ x + (1 | g), data = d); logLik(m)  # -1137.21219488736 (df = 4)
#    glmer(y ~ x + (1 | g), d, family = MASS::negative.binomial(theta = getME(m, "glmer.nb.theta")),
#          control = glmerControl(tolPwrss = 1e-12), devFunOnly = TRUE)(c(getME(m, "theta"), fixef(m)))
LME4_DEFAULT_LOGLIK = -1137.21219488736
LME4_EXACT_AT_DEFAULT = 2274.42295077487


def test_matches_lme4_glmer_nb(nb_fit):
    m = nb_fit
    assert isinstance(m, GlmerNbResult)
    assert isinstance(m.family, NegativeBinomial)
    assert m.nb_theta == m.family.theta
    assert m.nb_theta == pytest.approx(LME4_TIGHT["nb_theta"], rel=1e-4)
    np.testing.assert_allclose(m.fixef.to_numpy(), LME4_TIGHT["beta"], rtol=1e-4)
    assert m.theta[0] == pytest.approx(LME4_TIGHT["theta"], rel=1e-4)
    assert m.loglik == pytest.approx(LME4_TIGHT["loglik"], abs=1e-4)
    np.testing.assert_allclose(m.bse.to_numpy(), LME4_TIGHT["se"], rtol=1e-2)
    # no worse than lme4's default glmer.nb fit, judged by its exact criterion at its estimates
    assert m.deviance <= LME4_EXACT_AT_DEFAULT + 1e-6
    assert m.loglik >= LME4_DEFAULT_LOGLIK
    # lme4's npar.merMod counts θ: logLik's df = 4
    assert m.n_params == 4
    assert m.aic == pytest.approx(-2 * m.loglik + 8)


def test_theta_search_recorded(nb_fit):
    det = nb_fit.optinfo.details["glmer_nb"]
    evals = det["evaluations"]
    assert det["n_refits"] == len(evals) >= 5
    assert det["theta"] == pytest.approx(nb_fit.nb_theta)
    # the final fit is at least as good as every θ evaluated, and the search started from theta.ml
    assert nb_fit.deviance <= min(e["criterion"] for e in evals) + 1e-8
    assert evals[0]["theta"] == pytest.approx(det["theta_ml"])
    assert det["poisson_criterion"] > nb_fit.deviance
    lo, hi = det["interval"]
    assert np.log(hi) - np.log(lo) == pytest.approx(6.0)


def test_summary_family_line(nb_fit):
    # lme4: family(mt)$family is "Negative Binomial(2.7959)" (MASS: format(round(theta, 4)))
    text = str(nb_fit.summary())
    assert " Family: Negative Binomial(2.7959)  ( log )" in text
    assert NegativeBinomial(2.79597296535251).label == "Negative Binomial(2.796)"  # lme4's default fit's


def test_glmer_family_string_hands_over(nb_data, nb_fit):
    m = sparselmm.glmer("y ~ x + (1 | g)", nb_data, family="negative_binomial")
    assert isinstance(m, GlmerNbResult)
    assert m.nb_theta == pytest.approx(nb_fit.nb_theta, rel=1e-8)
    assert m.loglik == pytest.approx(nb_fit.loglik, abs=1e-8)


def test_theta_start_refit_update_pickle(nb_data, nb_fit):
    m = sparselmm.glmer_nb("y ~ x + (1 | g)", nb_data, theta_start=1.0)
    assert "theta_start" in m.optinfo.details["glmer_nb"] and "poisson_criterion" not in m.optinfo.details["glmer_nb"]
    assert m.nb_theta == pytest.approx(nb_fit.nb_theta, rel=1e-3)
    # refit keeps θ̂ (lme4's refit of a glmer.nb fit); update runs glmer_nb again
    r = nb_fit.refit(nb_data["y"].to_numpy())
    assert isinstance(r, GlmerNbResult) and r.nb_theta == nb_fit.nb_theta
    assert r.loglik == pytest.approx(nb_fit.loglik, abs=1e-6)
    u = sparselmm.update(nb_fit, "~ . - x")
    assert isinstance(u, GlmerNbResult) and list(u.fixef.index) == ["Intercept"]
    p = pickle.loads(pickle.dumps(nb_fit))
    assert p.nb_theta == nb_fit.nb_theta and p.n_params == 4


def test_theta_ml_matches_mass():
    # R: y <- c(0, 3, 1, 7, 2, 0, 5, 12, 1, 4); mu <- c(1.2, 2.5, 1.8, 4.1, 2.2, 0.9, 3.7, 6.5, 1.5, 3.0)
    #    t <- MASS::theta.ml(y, mu, limit = 20); c(t); attr(t, "SE")
    #    MASS::theta.ml(y, mu, weights = c(1, 2, 1, 1, 3, 1, 1, 2, 1, 1), limit = 20)
    y = np.array([0, 3, 1, 7, 2, 0, 5, 12, 1, 4], float)
    mu = np.array([1.2, 2.5, 1.8, 4.1, 2.2, 0.9, 3.7, 6.5, 1.5, 3.0])
    th, se, warn = theta_ml(y, mu, limit=20)
    assert th == pytest.approx(24.5085213998516, rel=1e-8)
    assert se == pytest.approx(70.4549721895595, rel=1e-6)
    assert warn is None
    w = np.array([1, 2, 1, 1, 3, 1, 1, 2, 1, 1], float)
    assert theta_ml(y, mu, w, limit=20)[0] == pytest.approx(19.547698028799, rel=1e-8)


def test_large_theta_family_is_stable():
    # the log density at a large θ (the search's plateau near Poisson) keeps its digits
    from scipy import stats

    y = np.array([0.0, 1, 3, 7, 20])
    mu = np.array([0.5, 1.2, 2.9, 9.0, 15.0])
    w = np.ones(5)
    for th in (0.3, 2.5, 40.0, 1e4):
        ref = -2 * np.sum(stats.nbinom.logpmf(y, th, th / (th + mu)))
        assert NegativeBinomial(th).aic_term(y, mu, w) == pytest.approx(ref, abs=1e-9)
    pois = -2 * np.sum(stats.poisson.logpmf(y, mu))
    assert NegativeBinomial(1e12).aic_term(y, mu, w) == pytest.approx(pois, abs=1e-6)


def test_binary_response_fits_with_warning():
    # lme4 does not refuse a 0/1 response: glmer.nb(y ~ 1 + (1 | g)) on rbinom data returns theta = 69193.69 with
    # theta.ml's "iteration limit reached" warning. Here the search goes on to its limit (θ = 1e8, the Poisson
    # fit) and warns that there is no overdispersion.
    rng = np.random.default_rng(1)
    g = np.repeat(np.arange(20), 10)
    y = (rng.random(200) < 1 / (1 + np.exp(-rng.normal(size=20)[g]))).astype(int)
    d = pd.DataFrame({"g": [f"g{k}" for k in g], "y": y})
    with pytest.warns(ConvergenceWarning, match="no overdispersion"):
        m = sparselmm.glmer_nb("y ~ 1 + (1 | g)", d)
    assert m.nb_theta > 1e6
    pois = sparselmm.glmer("y ~ 1 + (1 | g)", d, family="poisson")
    assert m.loglik == pytest.approx(pois.loglik, abs=1e-5)


@pytest.mark.parametrize(
    ("values", "match"),
    [([-1.0], "negative count"), ([0.5], "non-integer")],
)
def test_non_count_response_refused(nb_data, values, match):
    d = nb_data.copy()
    d["y"] = d["y"].astype(float)
    d.loc[0, "y"] = values[0]
    with pytest.raises(DataError, match=match):
        sparselmm.glmer_nb("y ~ x + (1 | g)", d)
    with pytest.raises(DataError, match=match):
        sparselmm.glmer("y ~ x + (1 | g)", d, family="negative_binomial")


def test_bad_arguments(nb_data):
    f = "y ~ x + (1 | g)"
    with pytest.raises(ModelSpecError, match="Unknown family 'negbinomial'.*negative_binomial"):
        sparselmm.glmer(f, nb_data, family="negbinomial")
    # a θ with family="negative_binomial": known or a start? glmer takes none and says which is which
    with pytest.raises(ArgumentError, match="NegativeBinomial\\(theta=2\\).*theta_start"):
        sparselmm.glmer(f, nb_data, family="negative_binomial", theta=2)
    with pytest.raises(ArgumentError, match="theta_start"):
        sparselmm.glmer_nb(f, nb_data, theta=2)
    with pytest.raises(ArgumentError, match="always fits the negative binomial"):
        sparselmm.glmer_nb(f, nb_data, family=NegativeBinomial(2.0))
    with pytest.raises(ModelSpecError, match="glmer_nb"):
        get_family("negative_binomial")
    with pytest.raises(ModelSpecError, match="theta_start must be a positive number"):
        sparselmm.glmer_nb(f, nb_data, theta_start=-1.0)
    with pytest.raises(ModelSpecError, match="nAGQ = 5"):
        sparselmm.glmer_nb(f, nb_data, nAGQ=5)
    with pytest.raises(ModelSpecError, match="interval"):
        sparselmm.glmer_nb(f, nb_data, interval=(2.0, 1.0))
    with pytest.raises(ModelSpecError, match="Link 'logit'"):
        sparselmm.glmer_nb(f, nb_data, link="logit")


def test_known_theta_summary_label(nb_data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = sparselmm.glmer("y ~ x + (1 | g)", nb_data, family=NegativeBinomial(2.0))
    assert m.family.label == "Negative Binomial(2)"
    # lme4: summary(glmer(y ~ x + (1 | g), family = MASS::negative.binomial(2)))
    assert "Family: Negative Binomial(2)  ( log )" in str(m.summary())
    assert not isinstance(m, GlmerNbResult)
