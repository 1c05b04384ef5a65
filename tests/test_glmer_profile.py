"""Likelihood profiles of glmer fits (issue 20 item 3): ``GlmerResult.profile``, ``sparselmm.profile`` and
``confint(method="profile")`` against lme4's ``confint(m, method = "profile")``, each profile point against a
fresh constrained fit, a singular fit, and the refusals.

lme4's references below are lme4 1.1-31 (R 4.2.2) with ``glmerControl(tolPwrss = 1e-12)``; lme4 finds its
ends by interpolating a spline through ζ on a grid, sparselmm solves ``ζ = ±z`` exactly, hence the
tolerance of 5e-4 (the largest difference measured is 1.6e-4; the Wald intervals differ by up to 0.05). The
live comparison over more cases is validation/compare_glmer_inference.py's ``profile`` section.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from helpers import CBPP, DATA, quiet_call

import sparselmm
from sparselmm import ModelSpecError
from sparselmm.inference.profile import Profile
from sparselmm.optimize import nlopt_minimize


@pytest.fixture(scope="module")
def cbpp(cbpp_data):
    d = cbpp_data.copy()
    for k in ("2", "3", "4"):  # the period contrasts as numbers, for the fresh fits with one in the offset
        d[f"p{k}"] = (d["period"] == k).astype(float)
    return d


@pytest.fixture(scope="module")
def cbpp_fit(cbpp):
    return quiet_call(sparselmm.glmer, CBPP, cbpp, family="binomial")


@pytest.fixture(scope="module")
def cbpp_profile(cbpp_fit):
    return cbpp_fit.profile(progress=False)


# R: d <- read.csv("validation/data/glmm_cbpp.csv"); d$herd <- factor(d$herd); d$period <- factor(d$period)
#    g <- glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), d, binomial,
#               control = glmerControl(tolPwrss = 1e-12))
#    print(confint(g, method = "profile"), digits = 10)
CBPP_LME4 = {
    ".sig01": (0.3460944698, 1.0998817155),
    "(Intercept)": (-1.9011560662, -0.9477945523),
    "period[T.2]": (-1.6166788930, -0.4078402705),
    "period[T.3]": (-1.8009177334, -0.5116102054),
    "period[T.4]": (-2.5006006973, -0.8008310511),
}


def test_cbpp_profile_intervals_match_lme4(cbpp_fit, cbpp_profile):
    assert isinstance(cbpp_profile, Profile)
    assert cbpp_profile.parameters == list(CBPP_LME4)  # lme4's names and order, no .sigma
    ci = cbpp_profile.confint()
    np.testing.assert_allclose(ci.to_numpy(), np.array(list(CBPP_LME4.values())), rtol=0, atol=5e-4)
    # confint(method="profile") and sparselmm.profile give the same ends
    ci2 = cbpp_fit.confint(method="profile")
    np.testing.assert_allclose(ci2.to_numpy(), ci.to_numpy(), rtol=0, atol=1e-8)
    ci3 = sparselmm.profile(cbpp_fit, which="period[T.3]", grid=False, progress=False).confint()
    np.testing.assert_allclose(ci3.to_numpy(), ci.loc[["period[T.3]"]].to_numpy(), rtol=0, atol=1e-8)
    # a Wald interval is not a profile interval: the tolerance above tells them apart
    wald = cbpp_fit.confint(method="Wald").iloc[1:]
    assert np.max(np.abs(wald.to_numpy() - ci.iloc[1:].to_numpy())) > 0.02
    assert not cbpp_profile.notes


def test_cbpp_profile_table_is_lme4s_layout(cbpp_profile):
    tab = cbpp_profile.table(".sig01")
    assert list(tab.columns) == [".zeta", *CBPP_LME4, ".par", ".focal", "deviance"]
    assert np.all(np.diff(tab[".zeta"].to_numpy()) > 0)  # monotone
    assert tab[".zeta"].min() < -2.5 and tab[".zeta"].max() > 2.5  # lme4's grid out to the cutoff
    est = tab[tab[".zeta"] == 0]
    assert len(est) == 1 and est["deviance"].iloc[0] == pytest.approx(cbpp_profile.base_deviance)


def test_profile_leaves_the_fit_alone(cbpp, cbpp_fit, cbpp_profile):
    fresh = quiet_call(sparselmm.glmer, CBPP, cbpp, family="binomial")
    assert cbpp_fit.criterion == fresh.criterion
    np.testing.assert_array_equal(cbpp_fit.theta, fresh.theta)
    np.testing.assert_array_equal(cbpp_fit._u, fresh._u)
    np.testing.assert_allclose(cbpp_fit.fitted(), fresh.fitted(), rtol=0, atol=0)


def test_fixed_effect_profile_point_is_a_fresh_constrained_fit(cbpp, cbpp_fit, cbpp_profile):
    """A point of period[T.2]'s profile is the fit with that coefficient held: glmer of the model without its
    column and with ``x · p2`` in the offset, from glmer's own start, reaches the same criterion."""
    pts = cbpp_profile.points[cbpp_profile.points["par"] == "period[T.2]"]
    for _, pt in pts.iloc[[0, len(pts) // 2, -1]].iterrows():
        d = cbpp.assign(off=pt["value"] * cbpp["p2"])
        fresh = quiet_call(
            sparselmm.glmer,
            "cbind(incidence, size - incidence) ~ p3 + p4 + (1 | herd)",
            d,
            family="binomial",
            offset="off",
        )
        assert pt["deviance"] == pytest.approx(fresh.criterion, abs=2e-6)
        assert pt["deviance"] <= fresh.criterion + 1e-6
        zeta = np.sign(pt["value"] - cbpp_fit.fixef.iloc[1]) * np.sqrt(fresh.criterion - cbpp_fit.criterion)
        assert pt["zeta"] == pytest.approx(zeta, abs=1e-5)


def test_variance_profile_point_is_a_fresh_constrained_fit(cbpp_fit, cbpp_profile):
    """A point of .sig01's profile against the fixed effects fitted from scratch (β = 0, BOBYQA) at θ held."""
    model = cbpp_fit._model.with_response(cbpp_fit._model.y)
    from sparselmm.glmm.objective import GlmmObjective

    obj = GlmmObjective(model, 1)
    pts = cbpp_profile.points[cbpp_profile.points["par"] == ".sig01"]
    for _, pt in pts.iloc[[0, -1]].iterrows():
        theta = np.array([pt["value"]])
        _, dev, _, _ = nlopt_minimize(
            lambda b, t=theta: obj.at_theta_beta(t, b),
            np.zeros(4),
            np.full(4, -np.inf),
            step=np.full(4, 0.5),
            ftol_abs=1e-12,
            xtol_abs=1e-10,
        )
        assert pt["deviance"] == pytest.approx(dev, abs=2e-6)
        assert pt["deviance"] <= dev + 1e-6


# R: d <- read.csv("validation/data/glmm_sim_poisson.csv")
#    g <- glmer(y0 ~ x + cond + (1 | subj) + (1 | item), d, poisson, control = glmerControl(tolPwrss = 1e-12))
#    print(confint(g, method = "profile"), digits = 10)
POISSON_LME4 = {
    ".sig01": (0.4594019842, 0.71877947303),
    ".sig02": (0.1779947559, 0.33524246458),
    "(Intercept)": (0.2380780103, 0.62529756214),
    "x": (0.2955311084, 0.38200894585),
    "cond": (-0.2376960188, -0.06730822296),
}


def test_crossed_poisson_profile_intervals_match_lme4():
    d = pd.read_csv(DATA / "glmm_sim_poisson.csv")
    g = quiet_call(sparselmm.glmer, "y0 ~ x + cond + (1 | subj) + (1 | item)", d, family="poisson")
    ci = g.confint(method="profile", progress=False)
    assert list(ci.index) == list(POISSON_LME4)
    np.testing.assert_allclose(ci.to_numpy(), np.array(list(POISSON_LME4.values())), rtol=0, atol=5e-4)


# ---- a singular fit: θ = 0 ------------------------------------------------------------------------------
# R: i <- 0:199
#    d <- data.frame(g = sprintf("g%02d", i %% 20), x = (i %% 7) / 7, y = as.numeric(((i * 37) %% 101) < 35))
#    m <- glmer(y ~ x + (1 | g), d, binomial, control = glmerControl(tolPwrss = 1e-12))  # theta 0: singular
#    print(confint(m, method = "profile"), digits = 10)
SINGULAR_LME4 = {
    ".sig01": (0.0, 0.32472937903),
    "(Intercept)": (-1.107399017, -0.06458462534),
    "x": (-1.180682045, 0.87071565208),
}


def test_singular_fit_profiles_without_crashing():
    i = np.arange(200)
    d = pd.DataFrame(
        {"g": [f"g{k % 20:02d}" for k in i], "x": (i % 7) / 7.0, "y": (((i * 37) % 101) < 35).astype(float)}
    )
    m = quiet_call(sparselmm.glmer, "y ~ x + (1 | g)", d, family="binomial")
    assert m.theta[0] == 0.0
    prof = m.profile(progress=False)
    ci = prof.confint()
    assert ci.loc[".sig01", "2.5 %"] == 0.0  # lme4's one-sided interval: the lower end is the bound
    np.testing.assert_allclose(ci.to_numpy(), np.array(list(SINGULAR_LME4.values())), rtol=0, atol=5e-4)
    sig = prof.table(".sig01")
    assert sig[".sig01"].min() == 0.0 and np.all(np.diff(sig[".zeta"].to_numpy()) > 0)
    # another level is interpolated from the points, the lower end still the bound
    assert prof.confint(0.8).loc[".sig01", "10 %"] == 0.0


# ---- refusals -------------------------------------------------------------------------------------------
def test_profile_refuses_bad_input(cbpp, cbpp_fit):
    with pytest.raises(ModelSpecError, match=r"unknown parameter\(s\) \['nope'\]"):
        cbpp_fit.confint(method="profile", parm="nope")
    with pytest.raises(ModelSpecError, match=r"unknown parameter\(s\) \['\.sigma'\]"):
        cbpp_fit.profile(which=".sigma")  # a binomial fit has no .sigma, as in lme4
    with pytest.raises(ModelSpecError, match="out of range"):
        cbpp_fit.profile(which=7)
    for level in (0, 1, 1.5, -0.2):
        with pytest.raises(ModelSpecError, match="strictly between 0 and 1"):
            cbpp_fit.confint(method="profile", level=level)
        with pytest.raises(ModelSpecError, match="strictly between 0 and 1"):
            cbpp_fit.profile(level=level)
    with pytest.raises(ModelSpecError, match="no REML criterion for a GLMM"):
        cbpp_fit.profile(criterion="REML")
    with pytest.raises(ModelSpecError, match="not known"):
        cbpp_fit.confint(method="likelihood")
    g0 = quiet_call(sparselmm.glmer, CBPP, cbpp, family="binomial", nAGQ=0)
    with pytest.raises(ModelSpecError, match="nAGQ=0"):
        g0.confint(method="profile")
    d = cbpp.assign(rate=(cbpp["incidence"] + 1) / cbpp["size"])
    gam = quiet_call(sparselmm.glmer, "rate ~ period + (1 | herd)", d, family="Gamma", link="log")
    with pytest.raises(ModelSpecError, match="dispersion"):
        gam.profile()


def test_wald_stays_the_default(cbpp_fit):
    """confint() of a glmer fit keeps meaning Wald (see GlmerResult.confint's docstring)."""
    ci = cbpp_fit.confint()
    assert ci.iloc[0].isna().all()
