"""sparselmm.glmer against lme4's glmer (lme4 1.1-31 references in validation/reference_glmm).

* lme4's published cbpp values (lme4 tests/testthat/test-glmer.R).
* Every case of validation/glmm_cases.json against the committed glmer references, with the tolerances
  of validation/compare_glmm.py (criterion no higher than lme4's; β, θ, SEs).
* Accessors against the same references (ranef and conditional variances, fitted, residuals, deviance()).
* Bad input: responses outside the family's support, unknown family or link, nAGQ > 1 with several terms.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import sparselmm
from sparselmm.errors import DataError, FormulaError, ModelSpecError, NumericalError, SparseLMMError
from sparselmm.glmm import Binomial, Poisson, pirls

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "validation"))
import compare_glmm  # noqa: E402

CASES = json.loads((ROOT / "validation" / "glmm_cases.json").read_text())
REF = ROOT / "validation" / "reference_glmm"
CBPP = "cbind(incidence, size - incidence) ~ period + (1 | herd)"


def _ref(cid):
    return json.loads((REF / f"{cid}.json").read_text())


@pytest.fixture(scope="module")
def cbpp():
    return compare_glmm.load(next(c for c in CASES if c["id"] == "cbpp_logit"))


@pytest.fixture(scope="module")
def cbpp_fit(cbpp):
    return sparselmm.glmer(CBPP, cbpp, family="binomial", data_name="cbpp")


def test_cbpp_published(cbpp_fit):
    # lme4 tests/testthat/test-glmer.R: beta, theta, -2 log L = 184.0527, AIC = 194.0527
    m = cbpp_fit
    np.testing.assert_allclose(m.fixef.to_numpy(), [-1.39855, -0.99234, -1.12868, -1.58030], atol=5e-5)
    np.testing.assert_allclose(m.theta, [0.642227], atol=1e-4)
    # lme4's value carries its PIRLS tolerance (log|L|^2 one step behind); ours is the exact Laplace, lower
    assert 184.0520 < m.deviance <= 184.0527
    assert m.aic == pytest.approx(m.deviance + 10)
    assert m.loglik == pytest.approx(-m.deviance / 2)
    assert m.df_resid == 51 and m.nobs == 56 and m.ngroups == {"herd": 15}
    assert not m.is_singular()


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_against_glmer(case):
    res = compare_glmm.run_case(case, _ref(case["id"]))
    assert res["failed"] == [], res


def test_accessors_against_glmer(cbpp_fit):
    m, ref = cbpp_fit, _ref("cbpp_logit")
    re = m.ranef(cond_var=True)["herd"]
    np.testing.assert_allclose(re.iloc[:, 0], ref["ranef"][0]["values"][0], atol=2e-3)
    np.testing.assert_allclose(re.attrs["cond_var"][:, 0, 0], ref["ranef"][0]["cond_var_diag"][0], atol=5e-4)
    np.testing.assert_allclose(m.fitted()[:20], ref["fitted_head"], atol=5e-4)
    np.testing.assert_allclose(m.residuals("pearson")[:20], ref["resid_pearson_head"], atol=3e-3)
    np.testing.assert_allclose(m.residuals()[:20], ref["resid_deviance_head"], atol=3e-3)
    assert m.deviance_residual_sum == pytest.approx(ref["deviance"], abs=1e-2)  # lme4's deviance(m)
    np.testing.assert_allclose(m.residuals("response"), m._design.y - m.fitted())
    vc = m.varcorr
    assert vc.loc[0, "sdcor"] == pytest.approx(m.theta[0]) and "Residual" not in set(vc["group"])


def test_vector_term_cond_var():
    case = next(c for c in CASES if c["id"] == "sim_slopes")
    ref = _ref("sim_slopes")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = sparselmm.glmer(case["formula"], compare_glmm.load(case), family="binomial")
    re = m.ranef(cond_var=True)
    for r in ref["ranef"]:
        frame = re[r["group"]]
        for j, vals in enumerate(r["values"]):
            np.testing.assert_allclose(frame.iloc[:, j], vals, atol=5e-3)
            np.testing.assert_allclose(frame.attrs["cond_var"][:, j, j], r["cond_var_diag"][j], atol=2e-3)


def test_predict_and_summary(cbpp_fit, cbpp):
    m = cbpp_fit
    np.testing.assert_allclose(m.predict(cbpp), m.predict())
    np.testing.assert_allclose(m.predict(type="response"), m.fitted())
    pop = m.predict(cbpp, re_form="~0")
    np.testing.assert_allclose(pop, m._design.X @ m.fixef.to_numpy())
    new = cbpp.iloc[:3].copy()
    new["herd"] = ["999", "999", "1"]
    with pytest.raises(DataError, match="not seen"):
        m.predict(new)
    p = m.predict(new, allow_new_levels=True)
    assert p[0] == pytest.approx(pop[0])
    text = str(m.summary())
    for piece in [
        "Laplace Approximation",
        "Family: binomial  ( logit )",
        "herd   (Intercept)",
        "z value",
        "Number of obs: 56, groups:  herd, 15",
        "(Intercept)",
        "Data: cbpp",
    ]:
        assert piece in text
    ct = m.coef_table()
    assert list(ct.columns) == ["Estimate", "Std. Error", "z value", "Pr(>|z|)"]
    assert m.optinfo.n_evals > 0 and m.optinfo.converged


def test_proportion_weights_equal_cbind(cbpp, cbpp_fit):
    d = cbpp.assign(prop=cbpp["incidence"] / cbpp["size"])
    m = sparselmm.glmer("prop ~ period + (1 | herd)", d, family="binomial", weights="size")
    assert m.deviance == pytest.approx(cbpp_fit.deviance, abs=1e-8)
    np.testing.assert_allclose(m.fixef, cbpp_fit.fixef, atol=1e-6)


def test_family_objects(cbpp):
    m1 = sparselmm.glmer(CBPP, cbpp, family=Binomial("probit"), nAGQ=0)
    m2 = sparselmm.glmer(CBPP, cbpp, family="binomial", link="probit", nAGQ=0)
    assert m1.deviance == pytest.approx(m2.deviance)
    assert repr(Poisson()) == "poisson(link='log')"


# ---- bad input -----------------------------------------------------------------------------------------
@pytest.fixture
def counts():
    rng = np.random.default_rng(1)
    g = np.repeat(np.arange(10), 5)
    return pd.DataFrame({"y": rng.poisson(2, 50), "x": rng.normal(size=50), "g": g, "h": np.tile(np.arange(5), 10)})


def test_negative_counts(counts):
    counts.loc[3, "y"] = -1
    with pytest.raises(DataError, match="negative count"):
        sparselmm.glmer("y ~ x + (1 | g)", counts, family="poisson")


def test_non_integer_counts(counts):
    counts["y"] = counts["y"] + 0.5
    with pytest.raises(DataError, match="non-integer"):
        sparselmm.glmer("y ~ x + (1 | g)", counts, family="poisson")


def test_proportion_above_one(counts):
    counts["p"] = counts["y"] / 2.0
    with pytest.raises(DataError, match=r"outside \[0, 1\]"):
        sparselmm.glmer("p ~ x + (1 | g)", counts, family="binomial", weights=np.full(50, 2.0))


def test_non_integer_successes(counts):
    counts["p"] = np.clip(counts["y"] / 10.0, 0, 1) + 0.01
    with pytest.raises(DataError, match="non-integer number"):
        sparselmm.glmer("p ~ x + (1 | g)", counts, family="binomial", weights=np.full(50, 10.0))
    counts["k"] = counts["y"] + 0.5
    with pytest.raises(DataError, match="non-integer number"):
        sparselmm.glmer("cbind(k, 10 - k) ~ x + (1 | g)", counts, family="binomial")


def test_negative_cbind(counts):
    with pytest.raises(DataError, match="negative counts"):
        sparselmm.glmer("cbind(y, 1 - y) ~ x + (1 | g)", counts, family="binomial")


def test_unknown_family_and_link(counts):
    with pytest.raises(ModelSpecError, match="Unknown family"):
        sparselmm.glmer("y ~ x + (1 | g)", counts, family="gaussian-ish")
    with pytest.raises(ModelSpecError, match="Link 'logit' is not available for the poisson"):
        sparselmm.glmer("y ~ x + (1 | g)", counts, family="poisson", link="logit")
    with pytest.raises(SparseLMMError):
        sparselmm.glmer("y ~ x + (1 | g)", counts, family=3)


def test_agq_needs_one_scalar_term(counts):
    with pytest.raises(ModelSpecError, match="single scalar random-effects term"):
        sparselmm.glmer("y ~ x + (1 | g) + (1 | h)", counts, family="poisson", nAGQ=5)
    with pytest.raises(ModelSpecError, match="single scalar random-effects term"):
        sparselmm.glmer("y ~ x + (1 + x | g)", counts, family="poisson", nAGQ=3)
    with pytest.raises(ModelSpecError, match="nAGQ must be"):
        sparselmm.glmer("y ~ x + (1 | g)", counts, family="poisson", nAGQ=-1)


def test_bad_formula(counts):
    with pytest.raises(FormulaError):
        sparselmm.glmer("cbind(y) ~ x + (1 | g)", counts, family="poisson")
    with pytest.raises(FormulaError):
        sparselmm.glmer("y ~ x", counts, family="poisson")


def test_pirls_failure_names_theta(counts, monkeypatch):
    monkeypatch.setattr(pirls, "MAXIT", 1)
    with pytest.raises(NumericalError, match="PIRLS did not converge at theta"):
        sparselmm.glmer("y ~ x + (1 | g)", counts, family="poisson")


def test_weighted_schur_equals_cholmod():
    case = next(c for c in CASES if c["id"] == "grouseticks")
    d = compare_glmm.load(case)
    m = sparselmm.glmer(case["formula"], d, family="poisson", calc_derivs=False)
    design, fam = m._design, m.family
    rng = np.random.default_rng(3)
    w = rng.uniform(0.1, 3.0, design.n)
    theta = np.array([0.7, 0.4, 1.1])
    b = rng.normal(size=design.q)
    out = []
    for schur in (False, True):
        pm = pirls.PirlsModel(design, fam, design.y, np.ones(design.n), np.zeros(design.n), schur=schur)
        assert pm.schur == schur
        pm.factor(theta, w)
        out.append((pm.chol.logdet(), pm.solve(b), pm.chol.solve_L(b) @ pm.chol.solve_L(b)))
    assert out[0][0] == pytest.approx(out[1][0], rel=1e-12)
    np.testing.assert_allclose(out[0][1], out[1][1], rtol=1e-9, atol=1e-12)
    assert out[0][2] == pytest.approx(out[1][2], rel=1e-10)  # bᵀC⁻¹b, whatever the permutation


def test_negative_binomial_family():
    nb = sparselmm.glmm.NegativeBinomial(2.5)
    assert repr(nb) == "negative.binomial(theta=2.5, link='log')"
    mu = np.array([0.5, 2.0, 7.0])
    np.testing.assert_allclose(nb.variance(mu), mu + mu**2 / 2.5)
    with pytest.raises(ModelSpecError, match="theta must be a positive"):
        sparselmm.glmm.NegativeBinomial(-1)


# ---- families with a dispersion: Gamma, inverse Gaussian (issue #14) -------------------------------------
def _fit_case(cid, **kw):
    case = next(c for c in CASES if c["id"] == cid)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sparselmm.glmer(case["formula"], compare_glmm.load(case), family=case["family"], link=case["link"], **kw)


@pytest.fixture(scope="module")
def gamma_fit():
    return _fit_case("sim_gamma_log", data_name="d")


def test_gamma_log_against_lme4(gamma_fit):
    # lme4 1.1-31 glmer, run_glmer.R case sim_gamma_log: Gamma(link = "log"), y ~ x + cond + (1 | g), refit
    # with glmerControl(tolPwrss = 1e-12) (the "tight" entry of validation/reference_glmm/sim_gamma_log.json;
    # lme4's default fit stops PIRLS early and its finite-difference SEs are then meaningless, ~0.003)
    m = gamma_fit
    assert m.deviance == pytest.approx(844.244282708992, abs=2e-5)
    np.testing.assert_allclose(m.fixef, [0.73398759742612, 0.418511716538575, -0.260370707121103], atol=2e-5)
    np.testing.assert_allclose(m.theta, [0.662388647430141], atol=1e-4)
    assert m.sigma == pytest.approx(0.556146759394931, rel=1e-4)
    np.testing.assert_allclose(m.bse, [0.114625845191308, 0.0304062389319746, 0.0642617842032997], rtol=3e-3)
    # lme4 counts the dispersion as a parameter: AIC = -2 log L + 2 * (3 + 1 + 1), df.resid = n - 5
    assert m.n_params == 5 and m.df_resid == 302
    assert m.aic == pytest.approx(m.deviance + 10)
    assert m.family.has_scale and repr(m.family) == "Gamma(link='log')"


def test_gamma_varcorr_ranef_and_summary(gamma_fit):
    # lme4 1.1-31 glmer, run_glmer.R case sim_gamma_log: as.data.frame(VarCorr(m)) scales θ by sigma(m) and
    # has a Residual row; ranef(condVar = TRUE) scales the conditional variances by sigma(m)^2
    m, ref = gamma_fit, _ref("sim_gamma_log")
    vc = m.varcorr
    assert list(vc["group"]) == ["g", "Residual"]
    np.testing.assert_allclose(vc["vcov"], [r["vcov"] for r in ref["varcorr"]], rtol=5e-3)  # default fit
    t = ref["tight"]  # the tight refit: sigma * theta and sigma
    np.testing.assert_allclose(vc["sdcor"], [t["sigma"] * t["theta"], t["sigma"]], rtol=2e-4)
    assert vc.loc[0, "sdcor"] == pytest.approx(m.sigma * m.theta[0])
    re = m.ranef(cond_var=True)["g"]
    # against lme4's default fit, whose intercept is 0.0019 (0.017 SE) from the tight optimum: the modes shift
    np.testing.assert_allclose(re.iloc[:, 0], ref["ranef"][0]["values"][0], atol=4e-3)
    np.testing.assert_allclose(re.attrs["cond_var"][:, 0, 0], ref["ranef"][0]["cond_var_diag"][0], rtol=5e-3)
    np.testing.assert_allclose(m.fitted()[:20], ref["fitted_head"], rtol=3e-3)
    np.testing.assert_allclose(m.residuals("pearson")[:20], ref["resid_pearson_head"], atol=3e-3)
    np.testing.assert_allclose(m.residuals()[:20], ref["resid_deviance_head"], atol=3e-3)
    text = str(m.summary())
    for piece in ["Family: Gamma  ( log )", "Residual", "t value", "Pr(>|z|)", "g        (Intercept)"]:
        assert piece in text, piece
    assert list(m.coef_table().columns) == ["Estimate", "Std. Error", "t value", "Pr(>|z|)"]
    resid_line = next(line for line in text.splitlines() if line.strip().startswith("Residual"))
    assert f"{m.sigma:.4g}" in resid_line


def test_inverse_gaussian_against_lme4():
    # lme4 1.1-31 glmer, run_glmer.R case sim_invgauss: inverse.gaussian() (link 1/mu^2), tight refit
    m = _fit_case("sim_invgauss")
    assert m.family.link.name == "1/mu^2"
    assert m.deviance == pytest.approx(85.9114665734866, abs=2e-5)
    np.testing.assert_allclose(m.fixef, [0.606509906318505, 0.122436162293656, 0.177595925220981], atol=2e-5)
    np.testing.assert_allclose(m.theta, [0.422773007345162], atol=1e-4)
    assert m.sigma == pytest.approx(0.210059157014285, rel=1e-4)
    np.testing.assert_allclose(m.bse, [0.0383364088077537, 0.0157553389695302, 0.0385799924093326], rtol=3e-3)
    assert m.aic == pytest.approx(95.9114665615773, abs=1e-4)  # lme4's AIC (its default fit)


def test_gamma_crossed_against_lme4():
    # lme4 1.1-31 glmer, run_glmer.R case sim_gamma_crossed: Gamma(link = "log"), (1 | g) + (1 | item), tight
    m = _fit_case("sim_gamma_crossed")
    assert m.deviance == pytest.approx(1999.4802152885, abs=2e-5)
    np.testing.assert_allclose(m.fixef, [0.848162806176121, 0.351745177069049, 0.253166209087784], atol=1e-4)
    np.testing.assert_allclose(m.theta, [0.5107359395663, 0.367311627766194], atol=2e-4)
    assert m.sigma == pytest.approx(0.670419632643604, rel=1e-4)


def test_dispersion_family_selection():
    from sparselmm.glmm import Gamma, InverseGaussian, get_family

    assert repr(get_family("Gamma")) == "Gamma(link='inverse')"  # R's default link
    assert repr(get_family("gamma", link="log")) == "Gamma(link='log')"
    assert repr(get_family(Gamma, link="identity")) == "Gamma(link='identity')"
    assert repr(get_family("inverse.gaussian")) == "inverse.gaussian(link='1/mu^2')"
    assert repr(get_family(InverseGaussian(link="log"))) == "inverse.gaussian(link='log')"
    assert get_family("poisson").has_scale is False and Gamma().has_scale is True
    with pytest.raises(ModelSpecError, match="Link 'logit' is not available for the Gamma"):
        Gamma(link="logit")
    # R's Gamma()$aic at the moment estimate of the dispersion, + 2 (lme4's gammaDist::aic)
    y, mu, wt = np.array([0.5, 1.2, 3.0, 2.2]), np.array([0.8, 1.0, 2.5, 2.0]), np.ones(4)
    g = Gamma("log")
    disp = g.dev_resids(y, mu, wt).sum() / 4
    from scipy import stats

    expected = -2 * stats.gamma.logpdf(y, 1 / disp, scale=mu * disp).sum() + 2
    assert g.aic_term(y, mu, wt) == pytest.approx(expected, rel=1e-12)
    ig = InverseGaussian()
    np.testing.assert_allclose(ig.link.linkinv(ig.link.linkfun(mu)), mu)
    np.testing.assert_allclose(ig.link.mu_eta(np.array([0.25])), [-4.0])  # -1 / (2 eta^1.5)


def test_dispersion_families_need_positive_response():
    d = compare_glmm.load(next(c for c in CASES if c["id"] == "sim_gamma_log")).copy()
    d.loc[[3, 17], "y"] = [0.0, -1.5]
    with pytest.raises(DataError, match=r"Gamma family: the response 'y' has 2 value\(s\) <= 0 \(rows \[3, 17\]"):
        sparselmm.glmer("y ~ x + (1 | g)", d, family="Gamma", link="log")
    with pytest.raises(DataError, match="inverse.gaussian family: the response 'log1p\\(y\\)'"):
        sparselmm.glmer("log1p(y) ~ x + (1 | g)", d.assign(y=d["y"].clip(lower=-0.5)), family="inverse.gaussian")


# ---- separation (issue #14) ------------------------------------------------------------------------------
@pytest.fixture
def separated():
    rng = np.random.default_rng(5)
    n = 200
    g = np.repeat(np.arange(20), 10)
    z = rng.normal(size=n)
    eta = 0.3 * z + rng.normal(scale=0.7, size=20)[g]
    d = pd.DataFrame({"y": (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(int), "z": z, "g": g})
    d["trt"] = np.where(rng.random(n) < 0.3, "b", "a")
    d.loc[d["trt"] == "b", "y"] = 1  # quasi-complete: every row of level b is a success
    d["sep"] = np.where(d["y"] == 1, rng.uniform(0.1, 2, n), -rng.uniform(0.1, 2, n))  # complete
    return d


@pytest.mark.parametrize("nAGQ", [0, 1])
def test_quasi_separation_names_the_fixed_effect(separated, nAGQ):
    from sparselmm.glmm import SeparationError

    with pytest.raises(SeparationError, match=r"fitted probabilities numerically 0 or 1.*'trt\[T.b\]'") as info:
        sparselmm.glmer("y ~ z + trt + (1 | g)", separated, family="binomial", nAGQ=nAGQ)
    assert "'z'" not in str(info.value).split("(PIRLS")[0]  # only the separating coefficient is named
    assert isinstance(info.value, NumericalError)


def test_complete_separation_names_the_predictor(separated):
    from sparselmm.glmm import SeparationError

    with pytest.raises(SeparationError, match="separating on its own: 'sep'"):
        sparselmm.glmer("y ~ z + sep + (1 | g)", separated, family="binomial")


def test_poisson_zero_level_is_separation():
    from sparselmm.glmm import SeparationError

    rng = np.random.default_rng(7)
    g = np.repeat(np.arange(24), 10)
    d = pd.DataFrame({"x": rng.normal(size=240), "g": g, "lev": np.tile(["a", "b", "c"], 80)})
    d["y"] = rng.poisson(np.exp(0.5 + 0.3 * d["x"] + rng.normal(scale=0.5, size=24)[g]))
    d.loc[d["lev"] == "c", "y"] = 0
    with pytest.raises(SeparationError, match=r"fitted rates numerically 0.*'lev\[T.c\]'"):
        sparselmm.glmer("y ~ x + lev + (1 | g)", d, family="poisson")


def test_separated_columns_lp():
    from sparselmm.glmm.separation import separated_columns, separating_alone

    fam = Binomial()
    # level 0 (column 1 = 0): outcomes not monotone in x, so no direction in (intercept, x) separates them;
    # level 1: only successes, so its coefficient runs to +infinity (quasi-complete separation)
    level = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 1.0])
    x = np.array([-1, -0.5, 0, 0.5, 1, 1.5, 0.3, -0.2, 0.8, 0.1])
    X = np.column_stack([np.ones(10), level, x])
    y = np.array([0, 1, 1, 0, 0, 1, 1, 1, 1, 1.0])
    w = np.ones(10)
    assert separated_columns(X, y, w, fam) == [1]
    assert separating_alone(X, y, w, fam, [1]) == [1]
    y2 = y.copy()
    y2[7] = 0  # level 1 has a failure now
    assert separated_columns(X, y2, w, fam) == []
    # proportions strictly between 0 and 1 cannot be separated; zero-weight rows take no part
    assert separated_columns(X, np.full(10, 0.5), w, fam) == []
    w0 = w.copy()
    w0[6:] = 0
    X0 = np.column_stack([np.ones(10), x])
    assert separated_columns(X0, y, w0, fam) == []
    # complete separation by x (every coefficient can move; x does it on its own)
    y3 = (x > 0.2).astype(float)
    cols = separated_columns(X0, y3, w, fam)
    assert 1 in cols and separating_alone(X0, y3, w, fam, cols) == [1]
    assert separated_columns(X, y, w, sparselmm.glmm.Gamma("log")) == []  # not a family that separates


def test_edge_fit_warns(cbpp, monkeypatch):
    # the warning path: fitted means at the edge without a separating fixed effect (forced by widening the
    # edge) is reported with the random effects as the cause, as a SeparationWarning
    from sparselmm.glmm import SeparationWarning, separation

    monkeypatch.setattr(separation, "EDGE", 0.5)
    with pytest.warns(SeparationWarning, match="no fixed effect separates the outcome"):
        m = sparselmm.glmer(CBPP, cbpp, family="binomial", nAGQ=0)
    assert m.optinfo.details["separation"] == []
    assert np.all(np.isfinite(m.bse))


def test_no_separation_on_ordinary_data(cbpp_fit):
    assert cbpp_fit.optinfo.details["separation"] == []
    assert not any("separat" in msg for msg in cbpp_fit.optinfo.messages)


def test_inverse_link_outside_mean_space():
    # BOBYQA (polish=False) steps into beta giving eta <= 0 under the 1/mu^2 link: such points are refused
    # without stopping the optimiser; lme4 1.1-31 glmer, run_glmer.R case sim_invgauss (tight refit)
    m = _fit_case("sim_invgauss", polish=False)
    assert m.deviance == pytest.approx(85.9114665734866, abs=2e-5)
    # a start PIRLS cannot keep inside the mean space: a clear error (lme4: "PIRLS loop resulted in NaN value")
    rng = np.random.default_rng(0)
    g = np.repeat(np.arange(20), 10)
    x = rng.normal(size=200)
    mu = np.exp(0.5 + 0.3 * x + rng.normal(scale=0.5, size=20)[g])
    d = pd.DataFrame({"y": rng.gamma(3, mu / 3), "x": x, "g": g})
    with pytest.raises(NumericalError, match="every fitted mean must stay positive.*link='log'"):
        sparselmm.glmer("y ~ x + (1 | g)", d, family="inverse.gaussian")
    # the log link fits, though Fisher scoring oscillates with ratio -0.91 there (PIRLS extrapolates). lme4
    # 1.1-31 glmer(y ~ x + (1 | g), family = inverse.gaussian("log")) on these rows (written out, live run):
    # -2logL 577.1672 (its loose PIRLS; its tolPwrss = 1e-12 refit stops: "pwrssUpdate did not converge"),
    # theta 0.7657906, beta (0.5481216, 0.3611684), sigma 0.5048897
    m = sparselmm.glmer("y ~ x + (1 | g)", d, family="inverse.gaussian", link="log")
    assert np.all(np.isfinite(m.bse))
    np.testing.assert_allclose(m.theta, [0.7657906], atol=5e-3)
    assert np.all(np.abs(m.fixef.to_numpy() - [0.5481216, 0.3611684]) < 0.02 * m.bse.to_numpy())
    assert m.sigma == pytest.approx(0.5048897, rel=2e-3)
    assert 577.16 < m.deviance < 577.18


def test_auto_factor_choice(monkeypatch):
    """schur="auto": the dense-Schur factor for a crossed design with a large, dense complement (and the
    same fit as CHOLMOD's), CHOLMOD for a small complement (VerbAgg-like: 24 items)."""
    rng = np.random.default_rng(11)
    n, ns, ni = 6000, 400, 150
    s, i = rng.integers(0, ns, n), rng.integers(0, ni, n)
    eta = -0.3 + 0.5 * rng.normal(size=ns)[s] + 0.4 * rng.normal(size=ni)[i]
    d = pd.DataFrame({"y": (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(int), "s": s, "i": i})
    m = sparselmm.glmer("y ~ 1 + (1 | s) + (1 | i)", d, family="binomial", calc_derivs=False)
    design, fam = m._design, m.family
    auto = pirls.PirlsModel(design, fam, design.y, np.ones(n), np.zeros(n))
    assert auto.schur
    small = d.assign(i=d["i"] % 24)
    m2 = sparselmm.glmer("y ~ 1 + (1 | s) + (1 | i)", small, family="binomial", calc_derivs=False)
    assert not pirls.PirlsModel(m2._design, fam, m2._design.y, np.ones(n), np.zeros(n)).schur
    # the fit does not depend on the factor
    orig = pirls.PirlsModel.__init__
    monkeypatch.setattr(pirls.PirlsModel, "__init__", lambda self, *a, **k: orig(self, *a, **{**k, "schur": False}))
    m_chol = sparselmm.glmer("y ~ 1 + (1 | s) + (1 | i)", d, family="binomial", calc_derivs=False)
    assert abs(m_chol.deviance - m.deviance) < 1e-7
    np.testing.assert_allclose(m_chol.theta, m.theta, rtol=1e-5)


def test_predict_re_form_subset_of_terms():
    """re_form as a formula keeps only the named terms (lme4's re.form = ~(1 | BROOD)), on new data too."""
    case = next(c for c in CASES if c["id"] == "grouseticks")
    d = compare_glmm.load(case)
    m = sparselmm.glmer(case["formula"], d, family="poisson", calc_derivs=False)
    re = m.ranef()
    brood = re["BROOD"].iloc[:, 0]
    expect = m._design.X @ m.fixef.to_numpy() + brood.reindex(d["BROOD"].to_numpy()).to_numpy()
    np.testing.assert_allclose(m.predict(re_form="~(1 | BROOD)"), expect, rtol=1e-12)
    np.testing.assert_allclose(m.predict(d.iloc[:20], re_form="~(1|BROOD)"), expect[:20], rtol=1e-12)
    np.testing.assert_allclose(
        m.predict(d.iloc[:20], re_form="~(1|BROOD)", type="response"), np.exp(expect[:20]), rtol=1e-12
    )
    with pytest.raises(FormulaError, match="not in the model"):
        m.predict(re_form="~(1 | nest)")


def test_ranef_has_lmers_shape_and_plots(cbpp_fit):
    """glmer's ranef had its own column names and an ndarray cond_sd, so plot_ranef failed on it (issue 20
    item 3, issue 22): both fits now share one ranef shape (sparselmm.results.ranef_frames)."""
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    from sparselmm.plot import plot_ranef

    re = cbpp_fit.ranef(cond_var=True)["herd"]
    assert list(re.columns) == ["Intercept"] and re.index.name == "herd"
    assert isinstance(re.attrs["cond_sd"], pd.DataFrame)
    np.testing.assert_allclose(re.attrs["cond_sd"].to_numpy()[:, 0], np.sqrt(re.attrs["cond_var"][:, 0, 0]))
    fig = plot_ranef(cbpp_fit)
    assert fig is not None


def test_glmer_ranef_cond_var_and_plots_share_lmers_result_base():
    """Issue 22: GlmerResult and LmerResult extend one base (sparselmm.result_base.MixedModelResult), so glmer's
    ranef has lmer's shape, its conditional variances come from the one routine lmer uses, and the plots work.
    sim_slopes: 40 subjects with (1 + x | subj), 20 items with (1 | item); lme4's condVar diagonals are checked
    in test_vector_term_cond_var, here the whole blocks against a dense σ²Λ(ΛᵀZᵀWZΛ + I)⁻¹Λᵀ."""
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from sparselmm.optimize import SINGULAR_TOL
    from sparselmm.result_base import MixedModelResult

    case = next(c for c in CASES if c["id"] == "sim_slopes")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = sparselmm.glmer(case["formula"], compare_glmm.load(case), family="binomial")
    assert isinstance(m, MixedModelResult)
    re = m.ranef(cond_var=True)
    assert list(re) == ["subj", "item"] and list(re["subj"].columns) == ["Intercept", "x"]
    assert re["subj"].attrs["cond_var"].shape == (40, 2, 2) and re["item"].attrs["cond_var"].shape == (20, 1, 1)
    # the modes are the ones the fit holds: b = Λu, level-major within each term
    np.testing.assert_allclose(m.Lambda @ m.u, m.b, rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(re["subj"].to_numpy().ravel(), m.b[:80])
    np.testing.assert_array_equal(re["item"].to_numpy().ravel(), m.b[80:])
    # the conditional covariances against the dense inverse at the fitted weights
    Zt, Lt = m.Zt.toarray(), m.Lambdat.toarray()
    C = Lt @ (Zt * m._state["w"]) @ Zt.T @ Lt.T + np.eye(100)
    V = m.sigma**2 * Lt.T @ np.linalg.solve(C, Lt)
    dense_subj = np.array([V[2 * i : 2 * i + 2, 2 * i : 2 * i + 2] for i in range(40)])
    np.testing.assert_allclose(re["subj"].attrs["cond_var"], dense_subj, rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(re["item"].attrs["cond_var"][:, 0, 0], np.diag(V)[80:], rtol=1e-9)
    # the same accessors and conventions as lmer's
    assert m.bse.name == "se" and m.n_params == 3 + 4  # β and θ; binomial has no σ
    assert m.is_singular() == m.is_singular(SINGULAR_TOL)
    fig = m.plot_ranef(group="subj")
    assert isinstance(fig, Figure) and len([ax for ax in fig.axes if ax.get_visible()]) == 2
    fig = m.plot_residuals(type="deviance")
    np.testing.assert_allclose(fig.axes[0].get_lines()[0].get_ydata(), m.residuals("deviance"))
    assert fig.axes[0].get_ylabel() == "Deviance residuals"
