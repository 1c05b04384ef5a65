"""Covariance structures diag() and cs() in lmer formulas (sparselmm.covstruct), against glmmTMB 1.1.5.

R references (R 4.2.2, glmmTMB 1.1.5, TMB 1.9.2)::

    library(glmmTMB)
    ctrl <- glmmTMBControl(optCtrl = list(rel.tol = 1e-10, eval.max = 1e4, iter.max = 1e4))
    m <- glmmTMB(Reaction ~ Days + cs(Days | Subject), sleepstudy, REML = FALSE, control = ctrl)
    -2 * logLik(m)     # 1751.939 (as lmer's (Days | Subject): with two coefficients cs is unstructured)
    m <- glmmTMB(Reaction ~ Days + diag(Days | Subject), sleepstudy, REML = TRUE, control = ctrl)
    -2 * logLik(m); sigma(m); attr(VarCorr(m)$cond$Subject, "stddev")

The simulated crossed cases (diag(0 + f | subj), cs(1 + x | subj) + (1 | item), …) are compared live in
validation/compare_covstruct.py.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from helpers import structure_fd_jacobian

import sparselmm
from sparselmm.covstruct import CompoundSymmetry, Diagonal, make_structure
from sparselmm.errors import FormulaError, ModelSpecError
from sparselmm.formula import parse_formula

DATA = "validation/data/covstruct_crossed.csv"


@pytest.fixture(scope="module")
def sleep():
    return sparselmm.datasets.load("sleepstudy")


@pytest.fixture(scope="module")
def crossed():
    from pathlib import Path

    return pd.read_csv(Path(__file__).resolve().parent.parent / DATA)


# ---- the structure maps --------------------------------------------------------------------------
@pytest.mark.parametrize("k", [2, 3, 4])
def test_cs_factor_is_cholesky_of_d_r_d(k):
    s = make_structure("cs", k)
    rng = np.random.default_rng(k)
    sd = rng.uniform(0.2, 2.0, k)
    for rho in (-1.0 / (k - 1) + 0.05, -0.1, 0.0, 0.3, 0.95):
        T = s.factor(np.append(sd, rho))
        R = np.full((k, k), rho) + (1 - rho) * np.eye(k)
        np.testing.assert_allclose(T @ T.T, sd[:, None] * R * sd[None, :], rtol=1e-12, atol=1e-14)
        assert np.allclose(T, np.tril(T)) and np.all(np.diag(T) >= 0)


@pytest.mark.parametrize("k", [2, 3, 4])
def test_cs_jacobian_matches_finite_differences(k):
    s = CompoundSymmetry(k)
    params = np.append(np.linspace(0.5, 1.5, k), 0.37)
    np.testing.assert_allclose(s.jacobian(params), structure_fd_jacobian(s, params), rtol=1e-6, atol=1e-8)


def test_cs_on_the_bounds_is_singular_and_finite():
    s = CompoundSymmetry(3)
    for rho in (1.0, -0.5):
        params = np.array([1.0, 2.0, 0.5, rho])
        T = s.factor(params)
        assert np.all(np.isfinite(T)) and np.min(np.diag(T)) < 1e-6
        assert np.all(np.isfinite(s.jacobian(params)))


def test_diag_map_and_jacobian():
    s = Diagonal(3)
    params = np.array([0.5, 1.0, 2.0])
    np.testing.assert_array_equal(s.factor(params), np.diag(params))
    np.testing.assert_allclose(s.jacobian(params), structure_fd_jacobian(s, params), atol=1e-9)
    assert s.n_params == 3 and np.all(s.lower == 0)


def test_structure_bounds_and_start():
    s = make_structure("cs", 4)
    np.testing.assert_allclose(s.lower, [0, 0, 0, 0, -1 / 3])
    np.testing.assert_allclose(s.upper[-1], 1.0)
    np.testing.assert_allclose(s.start, [1, 1, 1, 1, 0])
    us = make_structure("us", 2)
    np.testing.assert_array_equal(us.lower, [0, -np.inf, 0])


# ---- parsing and bad input ------------------------------------------------------------------------
def test_parse_structures():
    p = parse_formula("y ~ x + diag(1 + x | g) + cs(0 + f | a/b) + us(1 | h)")
    assert [t.structure for t in p.random] == ["diag", "cs", "cs", "us"]
    assert str(p.random[0]) == "diag(1 + x | g)"
    assert str(p.random[3]) == "(1 | h)"
    assert p.fixed == "x"


@pytest.mark.parametrize(
    "formula, match",
    [
        ("y ~ x + ar2(1 + x | g)", "Unknown covariance structure 'ar2'"),
        ("y ~ x + ou(0 + t | g)", "glmmTMB structure not available here yet"),
        ("y ~ x + diag(x) + (1 | g)", r"diag\(\) must wrap a random-effects term"),
        ("y ~ x + cs(1 + x || g)", "'\\|\\|' inside cs"),
        ("y ~ x - diag(1 | g) + (1 | h)", "cannot be subtracted"),
    ],
)
def test_bad_structure_terms(formula, match):
    with pytest.raises(FormulaError, match=match):
        parse_formula(formula)


def test_cs_with_one_coefficient_is_refused(sleep):
    with pytest.raises(FormulaError, match=r"cs\(1 \| Subject\) has a single coefficient"):
        sparselmm.lmer("Reaction ~ Days + cs(1 | Subject)", sleep)


# ---- fits against glmmTMB -------------------------------------------------------------------------
def test_us_is_the_default_term(sleep):
    a = sparselmm.lmer("Reaction ~ Days + us(Days | Subject)", sleep)
    b = sparselmm.lmer("Reaction ~ Days + (Days | Subject)", sleep)
    np.testing.assert_array_equal(a.theta, b.theta)
    assert a.design.theta_names() == ["Subject.(Intercept)", "Subject.Days.(Intercept)", "Subject.Days"]


def test_cs_with_two_coefficients_equals_unstructured(sleep):
    # R: -2 * logLik(glmmTMB(Reaction ~ Days + cs(Days | Subject), sleepstudy, REML = FALSE)) = 1751.939;
    # VarCorr: SDs 23.7806, 5.7168, correlation 0.081 (the us fit's)
    m = sparselmm.lmer("Reaction ~ Days + cs(Days | Subject)", sleep, reml=False)
    assert m.objective == pytest.approx(1751.9393444631978, rel=1e-10)
    vc = m.varcorr.to_frame()
    np.testing.assert_allclose(vc["sdcor"].iloc[:2], [23.7806, 5.7168], rtol=2e-5)
    assert vc["sdcor"].iloc[2] == pytest.approx(0.0813, abs=1e-4)
    assert m.design.theta_names() == ["Subject.(Intercept)", "Subject.Days", "Subject.rho"]
    assert m.n_params == 6


def test_diag_factor_against_glmmtmb(crossed):
    # R: m <- glmmTMB(y ~ x + diag(0 + f | subj) + (1 | item), d, REML = TRUE, control = ctrl)
    #    -2 * logLik(m) = 3093.8902924427; sigma(m) = 1.043437
    m = sparselmm.lmer("y ~ x + diag(0 + f | subj) + (1 | item)", crossed)
    assert m.objective <= 3093.8902924427 + 1e-6
    assert m.objective == pytest.approx(3093.8902924427, rel=1e-9)
    assert m.sigma == pytest.approx(1.043437, rel=1e-5)
    vc = m.varcorr.to_frame()
    subj = vc[vc["group"] == "subj"]
    assert len(subj) == 3 and subj["var2"].isna().all()  # no correlations
    assert m.n_params == 2 + 3 + 1 + 1
    text = str(m.summary())
    assert "diag(0 + f | subj)" in text


def test_cs_factor_against_glmmtmb(crossed):
    # R: m <- glmmTMB(y ~ x + cs(0 + f | subj) + (1 | item), d, REML = FALSE, control = ctrl)
    #    -2 * logLik(m) = 3068.58645960262; stddev 0.910121196780416 0.61021820149423 1.26338441679741;
    #    correlation 0.493608244023999; sigma 1.04254183532648
    m = sparselmm.lmer("y ~ x + cs(0 + f | subj) + (1 | item)", crossed, reml=False)
    assert m.objective <= 3068.58645960262 + 1e-7
    vc = m.varcorr.to_frame()
    subj = vc[vc["group"] == "subj"]
    np.testing.assert_allclose(
        subj["sdcor"].iloc[:3], [0.910121196780416, 0.61021820149423, 1.26338441679741], rtol=1e-4
    )
    np.testing.assert_allclose(subj["sdcor"].iloc[3:], 0.493608244023999, rtol=1e-4)
    assert m.sigma == pytest.approx(1.04254183532648, rel=1e-5)
    assert "(cs)" in str(m.varcorr)
    est = sparselmm.parameters.estimates(m)
    assert est[".sig04"] == pytest.approx(0.493608244023999, rel=1e-4)  # ρ after the three SDs
    ci = m.confint(method="Wald")
    assert list(ci.index[:6]) == [".sig01", ".sig02", ".sig03", ".sig04", ".sig05", ".sigma"]


# ---- the gradient ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "formula", ["y ~ x + diag(0 + f | subj) + (1 | item)", "y ~ x + cs(1 + x | subj) + (1 | item)"]
)
@pytest.mark.parametrize("reml", [True, False])
def test_gradient_against_finite_differences(crossed, formula, reml):
    f = sparselmm.deviance_function(formula, crossed, reml=reml)
    assert f.has_gradient
    theta = f.design.theta0 * 0.7 + 0.1
    if "cs(" in formula:
        theta[f.design.theta_names().index("subj.rho")] = 0.3
    _, g = f.value_and_gradient(theta)
    h = 1e-6
    fd = np.array([(f(theta + e) - f(theta - e)) / (2 * h) for e in np.eye(theta.size) * h])
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-6)


def test_fit_takes_the_gradient_path(crossed):
    m = sparselmm.lmer("y ~ x + cs(1 + x | subj) + (1 | item)", crossed)
    assert m.optinfo.optimizer == "lbfgsb"
    b = sparselmm.lmer("y ~ x + cs(1 + x | subj) + (1 | item)", crossed, ordering="amd")
    assert b.optinfo.optimizer == "bobyqa"  # CHOLMOD has no gradient: BOBYQA
    assert b.objective == pytest.approx(m.objective, rel=1e-9)


# ---- what is refused ------------------------------------------------------------------------------
def test_refusals(crossed):
    m = sparselmm.lmer("y ~ x + diag(1 + x | subj)", crossed)
    with pytest.raises(ModelSpecError, match="covariance-structure terms"):
        m.bootstrap(2, seed=1)
    with pytest.raises(ModelSpecError, match="Kenward-Roger's df are not available"):
        m.coef_table(ddf="Kenward-Roger")  # profiles and Satterthwaite: tests/test_structure_inference.py
    # glmer fits structured terms (tests/test_glmer_covstruct.py) and refuses the same tools
    crossed = crossed.assign(yb=(crossed["y"] > 1).astype(int))
    with warnings.catch_warnings():  # a singular fit (the slope's SD at 0) is beside the point here
        warnings.simplefilter("ignore")
        g = sparselmm.glmer("yb ~ x + diag(1 + x | subj)", crossed, family="binomial")
    with pytest.raises(ModelSpecError, match=r"diag\(1 \+ x \| subj\)"):
        g.profile()


def test_refit_ml_and_anova(crossed):
    m0 = sparselmm.lmer("y ~ x + diag(1 + x | subj) + (1 | item)", crossed, reml=False)
    m1 = sparselmm.lmer("y ~ x + cs(1 + x | subj) + (1 | item)", crossed, reml=False)
    tab = sparselmm.anova(m0, m1)
    assert list(tab["npar"]) == [6, 7]
    r = sparselmm.lmer("y ~ x + cs(1 + x | subj) + (1 | item)", crossed).refit_ml()
    assert r.objective == pytest.approx(m1.objective, rel=1e-9)
