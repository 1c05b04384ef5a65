"""glmer's simulate, refit and parametric bootstrap (issue 20), and the lme4 comparison of its inference.

* ``simulate``: moments of many simulated responses against the fitted model (conditional on the fitted
  random effects: the fitted means and the family's variance; marginal: the means integrated over the random
  effects by Gauss-Hermite), seeds, shapes, the families.
* ``refit``: against a fresh ``glmer`` fit of the same response (the criterion no higher, within 1e-6
  relative), the fit untouched, the response checks.
* ``bootstrap`` / ``confint(method="boot")``: reproducible for any ``n_jobs``, lme4's names, coverage-style
  sanity; the deterministic comparison with lme4's ``bootMer`` (the same responses refitted) is
  validation/compare_glmer_inference.py's, run here on the committed references.
"""

from __future__ import annotations

import pickle
import sys

import numpy as np
import pandas as pd
import pytest
from helpers import CBPP, DATA, ROOT, quiet_call
from scipy import special

import sparselmm
from sparselmm import ArgumentError, DataError, ModelSpecError
from sparselmm.glmm import SeparationError
from sparselmm.glmm.fit import refit_glmm


@pytest.fixture(scope="module")
def cbpp(cbpp_data):
    return cbpp_data.copy()


@pytest.fixture(scope="module")
def cbpp_fit(cbpp):
    return quiet_call(sparselmm.glmer, CBPP, cbpp, family="binomial")


@pytest.fixture(scope="module")
def poisson_data():
    d = pd.read_csv(DATA / "glmm_sim_poisson.csv")
    return d


@pytest.fixture(scope="module")
def poisson_fit(poisson_data):
    return quiet_call(
        sparselmm.glmer,
        "y ~ x + cond + (1 | subj) + (1 | item)",
        poisson_data,
        family="poisson",
        offset="log_exposure",
    )


# ---- simulate --------------------------------------------------------------------------------------------
def test_simulate_shape_seed_and_scale(cbpp_fit):
    sims = cbpp_fit.simulate(4, seed=11)
    assert sims.shape == (cbpp_fit.nobs, 4)
    assert list(sims.columns) == ["sim_1", "sim_2", "sim_3", "sim_4"]
    pd.testing.assert_frame_equal(sims, cbpp_fit.simulate(4, seed=11))
    assert not sims.equals(cbpp_fit.simulate(4, seed=12))
    # proportions of the fit's trials: whole numbers of successes
    trials = cbpp_fit.design.weights
    k = sims.to_numpy() * trials[:, None]
    np.testing.assert_allclose(k, np.round(k), atol=1e-9)
    assert sims.to_numpy().min() >= 0 and sims.to_numpy().max() <= 1
    # a SeedSequence is the same seed as its entropy
    one = cbpp_fit.simulate(3, seed=np.random.SeedSequence(5))
    pd.testing.assert_frame_equal(one, cbpp_fit.simulate(3, seed=5))


def _z(mean, target, sd, nsim):
    return np.abs(mean - target) / (sd / np.sqrt(nsim))


def test_simulated_binomial_moments_match_the_fitted_model(cbpp_fit):
    nsim = 4000
    trials = cbpp_fit.design.weights
    # conditional on the fitted random effects: mean μ̂, variance μ̂(1 − μ̂)/trials
    cond = cbpp_fit.simulate(nsim, seed=1, use_u=True).to_numpy()
    mu = cbpp_fit.fitted()
    assert np.max(_z(cond.mean(axis=1), mu, np.sqrt(mu * (1 - mu) / trials), nsim)) < 4.5
    ratio = cond.var(axis=1, ddof=1) / (mu * (1 - mu) / trials)
    assert abs(np.mean(ratio) - 1) < 0.03
    # marginal: the mean integrated over b ~ N(0, θ²) (one scalar term) by Gauss-Hermite
    marg = cbpp_fit.simulate(nsim, seed=2).to_numpy()
    eta0 = cbpp_fit.X @ cbpp_fit.fixef.to_numpy()
    z, w = np.polynomial.hermite_e.hermegauss(40)
    expected = special.expit(eta0[:, None] + cbpp_fit.theta[0] * z[None, :]) @ (w / np.sqrt(2 * np.pi))
    assert np.max(_z(marg.mean(axis=1), expected, marg.std(axis=1, ddof=1), nsim)) < 4.5
    # the marginal draws are more variable than the conditional ones (the random effects are drawn too)
    assert np.mean(marg.var(axis=1)) > 1.2 * np.mean(cond.var(axis=1))


def test_simulated_poisson_moments_with_offset(poisson_fit):
    nsim = 1000
    cond = poisson_fit.simulate(nsim, seed=3, use_u=True).to_numpy()
    mu = poisson_fit.fitted()
    assert np.all(cond == np.round(cond)) and cond.min() >= 0
    assert np.max(_z(cond.mean(axis=1), mu, np.sqrt(mu), nsim)) < 5.0
    assert abs(np.mean(cond.var(axis=1, ddof=1) / mu) - 1) < 0.03
    # marginal mean of a log link: exp(η₀ + offset + σ²_total / 2) for independent scalar terms
    marg = poisson_fit.simulate(nsim, seed=4).to_numpy()
    design = poisson_fit.design
    eta0 = design.X @ poisson_fit.fixef.to_numpy() + design.offset
    expected = np.exp(eta0 + 0.5 * np.sum(poisson_fit.theta**2))
    assert abs(np.mean(marg.mean(axis=1) / expected) - 1) < 0.02


def test_simulated_gamma_moments_use_the_dispersion():
    d = pd.read_csv(DATA / "glmm_sim_gamma_log.csv")
    g = quiet_call(sparselmm.glmer, "y ~ x + cond + (1 | g)", d, family="Gamma", link="log")
    nsim = 2000
    sims = g.simulate(nsim, seed=5, use_u=True).to_numpy()
    mu = g.fitted()
    assert sims.min() > 0
    assert abs(np.mean(sims.mean(axis=1) / mu) - 1) < 0.01
    # Var(y) = φ μ² with φ = sigma(m)²
    assert abs(np.mean(sims.var(axis=1, ddof=1) / (g.sigma**2 * mu**2)) - 1) < 0.05
    # lme4's bootstrap statistics: SDs from θ unscaled by σ, then σ, then the fixed effects
    stats = g.boot_statistics()
    assert list(stats.index[:2]) == [".sig01", ".sigma"]
    assert stats[".sig01"] == pytest.approx(g.theta[0])
    assert stats[".sigma"] == pytest.approx(g.sigma)


def test_simulate_refuses_non_integer_trials_and_warns_of_poisson_weights(cbpp, poisson_data):
    # trials 1e-5 off whole numbers: glmer accepts them (its check allows 1e-3), simulate does not
    d = cbpp.assign(prop=cbpp["incidence"] / cbpp["size"], w=cbpp["size"] + 1e-5)
    g = quiet_call(sparselmm.glmer, "prop ~ period + (1 | herd)", d, family="binomial", weights="w")
    with pytest.raises(ModelSpecError, match="not whole numbers of trials"):
        g.simulate(2, seed=1)
    pw = poisson_data.assign(w=np.where(np.arange(len(poisson_data)) % 2 == 0, 1.0, 2.0))
    gp = quiet_call(sparselmm.glmer, "y0 ~ x + (1 | subj)", pw, family="poisson", weights="w")
    with pytest.warns(UserWarning, match="prior weights are ignored"):
        gp.simulate(1, seed=1)


@pytest.mark.parametrize("nsim", [0, -3, 1.5, True, "2"])
def test_simulate_and_bootstrap_refuse_bad_nsim(cbpp_fit, nsim):
    with pytest.raises(ModelSpecError, match="nsim must be a whole number"):
        cbpp_fit.simulate(nsim)
    with pytest.raises(ModelSpecError, match="nsim must be a whole number"):
        cbpp_fit.bootstrap(nsim)


def test_simulate_refuses_a_bad_seed(cbpp_fit):
    with pytest.raises(ModelSpecError, match="seed must be"):
        cbpp_fit.simulate(2, seed="abc")
    with pytest.raises(ModelSpecError, match="seed must be"):
        cbpp_fit.bootstrap(2, seed=-1)


# ---- refit -----------------------------------------------------------------------------------------------
def _fresh_cbpp(cbpp, y):
    d = cbpp.assign(k=np.round(y * cbpp["size"]))
    return quiet_call(sparselmm.glmer, "cbind(k, size - k) ~ period + (1 | herd)", d, family="binomial")


def _check_against_fresh(refitted, fresh):
    # refit runs a fresh fit's stages too and keeps the lower optimum: no higher than a fresh glmer fit
    assert refitted.deviance <= fresh.deviance
    assert abs(refitted.deviance - fresh.deviance) <= 1e-6 * abs(fresh.deviance)
    np.testing.assert_allclose(refitted.fixef.to_numpy(), fresh.fixef.to_numpy(), atol=2e-3)


@pytest.mark.filterwarnings("ignore::sparselmm.SingularFitWarning")
def test_refit_reaches_a_fresh_fit_and_leaves_the_fit_alone(cbpp, cbpp_fit):
    before = (cbpp_fit.deviance, cbpp_fit.fitted().copy(), cbpp_fit.theta.copy())
    sims = cbpp_fit.simulate(4, seed=21)
    for j in range(sims.shape[1]):
        r = cbpp_fit.refit(sims.iloc[:, j])
        _check_against_fresh(r, _fresh_cbpp(cbpp, sims.iloc[:, j].to_numpy()))
        np.testing.assert_array_equal(r.y, sims.iloc[:, j].to_numpy())
        assert r.optinfo.details["refit"]["kept"] in ("warm", "fresh")
        assert set(r.optinfo.details["refit"]["criteria"]) == {"warm", "fresh"}
    assert cbpp_fit.deviance == before[0]
    np.testing.assert_array_equal(cbpp_fit.fitted(), before[1])
    np.testing.assert_array_equal(cbpp_fit.theta, before[2])
    # the fit's own response: its own optimum
    again = cbpp_fit.refit(cbpp_fit.y)
    assert again.deviance <= cbpp_fit.deviance + 1e-9
    np.testing.assert_allclose(again.bse.to_numpy(), cbpp_fit.bse.to_numpy(), rtol=1e-3)


def test_refit_takes_cbind_columns(cbpp, cbpp_fit):
    y = cbpp_fit.simulate(1, seed=8).iloc[:, 0].to_numpy()
    k = np.round(y * cbpp["size"].to_numpy())
    two = np.column_stack([k, cbpp["size"].to_numpy() - k])
    a = cbpp_fit.refit(y)
    b = cbpp_fit.refit(pd.DataFrame(two, columns=["k", "n_k"]))
    assert a.deviance == b.deviance


def test_refit_of_crossed_poisson_with_offset(poisson_data, poisson_fit):
    y = poisson_fit.simulate(1, seed=9).iloc[:, 0].to_numpy()
    r = poisson_fit.refit(y)
    fresh = quiet_call(
        sparselmm.glmer,
        "ysim ~ x + cond + (1 | subj) + (1 | item)",
        poisson_data.assign(ysim=y),
        family="poisson",
        offset="log_exposure",
    )
    _check_against_fresh(r, fresh)


@pytest.mark.parametrize("nAGQ", [0, 5])
def test_refit_with_nagq(cbpp, nAGQ):
    g = quiet_call(sparselmm.glmer, CBPP, cbpp, family="binomial", nAGQ=nAGQ)
    y = g.simulate(1, seed=10).iloc[:, 0].to_numpy()
    d = cbpp.assign(k=np.round(y * cbpp["size"]))
    fresh = quiet_call(sparselmm.glmer, "cbind(k, size - k) ~ period + (1 | herd)", d, family="binomial", nAGQ=nAGQ)
    _check_against_fresh(g.refit(y), fresh)


def test_refit_after_unpickling(cbpp_fit):
    g2 = pickle.loads(pickle.dumps(cbpp_fit))
    y = cbpp_fit.simulate(1, seed=12).iloc[:, 0]
    assert g2.refit(y).deviance == cbpp_fit.refit(y).deviance


def test_refit_of_a_separated_response_raises(cbpp, cbpp_fit):
    y = cbpp_fit.y.copy()
    y[(cbpp["period"] == "4").to_numpy()] = 0.0  # no cases in period 4: its coefficient runs to -inf
    with pytest.raises(SeparationError, match=r"period\[T.4\]"):
        cbpp_fit.refit(y)


def test_refit_refuses_bad_responses(cbpp_fit, poisson_fit):
    n = cbpp_fit.nobs
    with pytest.raises(ModelSpecError, match=f"has {n - 1} values but the model was fitted to {n} rows"):
        cbpp_fit.refit(cbpp_fit.y[:-1])
    with pytest.raises(ModelSpecError, match="2 columns"):
        poisson_fit.refit(pd.DataFrame({"a": poisson_fit.y, "b": poisson_fit.y}))
    bad = cbpp_fit.y.copy()
    bad[0] = 0.5 / cbpp_fit.design.weights[0]  # half a success
    with pytest.raises(DataError, match="newresp is not a binomial response.*non-integer number"):
        cbpp_fit.refit(bad)
    with pytest.raises(DataError, match="outside \\[0, 1\\]"):
        cbpp_fit.refit(cbpp_fit.y + 1.0)
    nan = cbpp_fit.y.copy()
    nan[3] = np.nan
    with pytest.raises(DataError, match="missing or infinite"):
        cbpp_fit.refit(nan)
    with pytest.raises(DataError, match="non-integer value"):
        poisson_fit.refit(poisson_fit.y + 0.5)
    with pytest.raises(DataError, match="negative count"):
        poisson_fit.refit(-poisson_fit.y)
    two = np.column_stack([np.zeros(n), np.ones(n)])
    with pytest.raises(ModelSpecError, match="differ from the fit's trials"):
        cbpp_fit.refit(two)
    with pytest.raises(ArgumentError, match="no control"):
        sparselmm.refit.refit(cbpp_fit, cbpp_fit.y, control={"maxeval": 10})


# ---- bootstrap ---------------------------------------------------------------------------------------------
def test_bootstrap_names_reproducibility_and_sanity(cbpp_fit):
    boot = cbpp_fit.bootstrap(60, seed=31, progress=False)
    names = [".sig01", "(Intercept)", "period[T.2]", "period[T.3]", "period[T.4]"]
    assert list(boot.draws.columns) == names  # lme4's: no .sigma for the binomial
    assert boot.failures.empty and boot.draws.notna().all().all()
    pd.testing.assert_series_equal(boot.t0, cbpp_fit.boot_statistics(), check_names=False)
    again = cbpp_fit.bootstrap(60, seed=31, progress=False, n_jobs=2)
    pd.testing.assert_frame_equal(boot.draws, again.draws)
    ci = boot.confint()
    assert list(ci.columns) == ["2.5 %", "97.5 %"] and list(ci.index) == names
    assert np.all(ci.iloc[:, 0] < boot.t0) and np.all(boot.t0 < ci.iloc[:, 1])
    # the bootstrap SDs of the fixed effects are near the Wald SEs
    sd = boot.draws.iloc[:, 1:].std().to_numpy()
    np.testing.assert_allclose(sd, cbpp_fit.bse.to_numpy(), rtol=0.35)
    # confint(method="boot") is the same bootstrap's intervals
    pd.testing.assert_frame_equal(cbpp_fit.confint(method="boot", nsim=60, seed=31, progress=False), ci)
    sub = cbpp_fit.confint(parm="theta_", method="boot", nsim=60, seed=31, progress=False)
    assert list(sub.index) == [".sig01"]


def test_bootstrap_replicate_is_the_simulated_response(cbpp_fit):
    boot = cbpp_fit.bootstrap(3, func=lambda fit: fit.y, seed=41, progress=False)
    sims = cbpp_fit.simulate(3, seed=41)
    np.testing.assert_array_equal(boot.draws.to_numpy(), sims.to_numpy().T)


def test_bootstrap_func_gets_glmer_refits_with_standard_errors(cbpp_fit):
    boot = cbpp_fit.bootstrap(4, func=lambda fit: fit.bse, seed=42, progress=False)
    assert list(boot.draws.columns) == list(cbpp_fit.bse.index)
    assert np.all(boot.draws.to_numpy() > 0)


def test_warm_refit_that_ends_at_the_bound_is_checked_from_the_fresh_start(cbpp):
    # lme4 1.1-31's bootMer of glmer(incidence / size ~ period + (1 | herd), weights = size,
    # control = glmerControl(tolPwrss = 1e-12)), seed 102, replicate 97 (validation/reference_glmer_inference/
    # cbpp_prop_weights.json): lme4's refit reaches -2 log L = 162.85240889919 at sd 0.0520. The warm
    # quasi-Newton run alone stopped at θ = 2.9e-5, 2.7e-3 higher
    import json

    ref = json.loads((ROOT / "validation" / "reference_glmer_inference" / "cbpp_prop_weights.json").read_text())
    y = np.array(ref["boot"]["responses"][96], dtype=float)
    d = cbpp.assign(prop=cbpp["incidence"] / cbpp["size"])
    g = quiet_call(sparselmm.glmer, "prop ~ period + (1 | herd)", d, family="binomial", weights="size")
    r = quiet_call(refit_glmm, g, y, check_conv=False, fresh=False, calc_derivs=False)
    assert r.deviance <= 162.85240889919 + 1e-6
    assert r.theta[0] == pytest.approx(0.0520120827852814, abs=1e-3)
    assert r.optinfo.details["refit"]["kept"] == "fresh"


def test_bootstrap_records_separated_replicates_as_failures(cbpp, cbpp_fit):
    # a replicate's refit that raises is recorded with its reason, the run goes on (lme4's bootMer: NA)
    from sparselmm.inference.bootstrap_fits import _GlmmReplicator

    rep = _GlmmReplicator(cbpp_fit, None, None, use_u=False)
    y = cbpp_fit.y.copy()
    y[(cbpp["period"] == "4").to_numpy()] = 0.0
    rep.sim.draw = lambda rng: y
    out = rep.many([(0, np.random.SeedSequence(1))])
    assert out[0][1] is None and "SeparationError" in out[0][2]


def test_bootstrap_and_confint_refuse_bad_arguments(cbpp_fit):
    from sparselmm.inference.bootstrap import bootstrap

    with pytest.raises(ModelSpecError, match="tol= and control="):
        bootstrap(cbpp_fit, 2, tol=1e-6)
    with pytest.raises(ModelSpecError, match="n_jobs"):
        cbpp_fit.bootstrap(2, n_jobs=0)
    with pytest.raises(ModelSpecError, match="not known"):
        cbpp_fit.confint(method="bogus")
    with pytest.raises(ModelSpecError):
        cbpp_fit.confint(parm=".sigma")  # a binomial fit has no .sigma
    with pytest.raises(ModelSpecError, match="not a bootstrap interval type"):
        cbpp_fit.confint(method="boot", nsim=2, seed=1, boot_type="bca", progress=False)


def test_wald_intervals_keep_their_positional_level(cbpp_fit):
    ci = cbpp_fit.confint(level=0.9)
    assert list(ci.columns) == ["5 %", "95 %"]
    assert ci.iloc[0].isna().all()


# ---- lme4's references (validation/compare_glmer_inference.py) --------------------------------------------
def test_against_lme4_references():
    sys.path.insert(0, str(ROOT / "validation"))
    try:
        import compare_glmer_inference
    finally:
        sys.path.pop(0)
    # Wald, anova, drop1 and (cbpp_logit, sim_trials_cbind) the bootstrap's refits of lme4's own responses;
    # cbpp_logit's PBmodcomp shortened: 20 draws of sparselmm's own run, 20 of pbkrtest's responses refitted
    cases = ["cbpp_logit", "cbpp_probit", "cbpp_nagq0", "sim_trials_cbind"]
    assert compare_glmer_inference.main(["--pb-nsim", "20", "--pb-responses", "20", *cases]) == 0
