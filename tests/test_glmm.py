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
    assert m.optinfo["n_evals"] > 0 and m.optinfo["converged"]


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
