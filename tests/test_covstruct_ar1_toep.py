"""Covariance structures ar1() and toep() in lmer formulas (sparselmm.covstruct), against glmmTMB 1.1.5.

Reference values: R 4.2.2 Patched (2022-11-10 r83330), glmmTMB 1.1.5, TMB 1.9.2, from
``Rscript validation/run_glmmtmb_covstruct.R ar1_reml ar1_ml toep_ml`` (the JSON files in
validation/reference_covstruct; data validation/data/covstruct_ar1.csv from validation/simulate_covstruct.py)::

    library(glmmTMB)
    d <- read.csv("validation/data/covstruct_ar1.csv", stringsAsFactors = TRUE)
    ctrl <- glmmTMBControl(optCtrl = list(rel.tol = 1e-10, eval.max = 1e4, iter.max = 1e4))
    m <- glmmTMB(y ~ x + ar1(0 + t | subj), d, REML = TRUE, control = ctrl)
    -2 * logLik(m); fixef(m)$cond; sigma(m); VarCorr(m)$cond$subj
    m <- glmmTMB(y ~ x + toep(0 + t | subj), d, REML = FALSE, control = ctrl)

The whole suite (ar1/toep REML and ML, toep with a crossed term) is compared live in
validation/compare_covstruct.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import structure_fd_jacobian

import sparselmm
from sparselmm.covstruct import AR1, Toeplitz, acf_to_pacf, make_structure, pacf_to_acf, tril_by_column
from sparselmm.errors import DataError, FormulaError
from sparselmm.formula import parse_formula

DATA = Path(__file__).resolve().parent.parent / "validation" / "data" / "covstruct_ar1.csv"
AR1_FORMULA = "y ~ x + ar1(0 + t | subj)"
TOEP_FORMULA = "y ~ x + toep(0 + t | subj)"


@pytest.fixture(scope="module")
def ar1data():
    return pd.read_csv(DATA)


def _lags(k: int) -> np.ndarray:
    return np.abs(np.subtract.outer(np.arange(k), np.arange(k)))


def _pacf_yule_walker(rho: np.ndarray) -> np.ndarray:
    """Partial autocorrelations by solving each order's Yule–Walker system: independent of Durbin–Levinson."""
    r = np.concatenate([[1.0], rho])
    out = []
    for m in range(1, r.size):
        R = r[_lags(m)]
        out.append(np.linalg.solve(R, r[1 : m + 1])[-1])
    return np.array(out)


# ---- the factor against a direct construction ----------------------------------------------------
@pytest.mark.parametrize("k", [2, 3, 5])
@pytest.mark.parametrize("rho", [-0.95, -0.4, 0.0, 0.3, 0.9])
def test_ar1_factor_is_cholesky_of_ar1_covariance(k, rho):
    s = 1.7
    T = AR1(k).factor(np.array([s, rho]))
    np.testing.assert_allclose(T @ T.T, s**2 * rho ** _lags(k), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(T, np.linalg.cholesky(s**2 * rho ** _lags(k)), rtol=1e-10, atol=1e-14)
    i, j = np.tril_indices(k)
    expected = np.where(j == 0, rho ** (i - j), rho ** (i - j) * np.sqrt(1 - rho**2))  # the brief's closed form
    np.testing.assert_allclose(T[i, j], s * expected, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("k", [2, 3, 4, 6])
def test_toeplitz_factor_is_cholesky_of_d_r_d(k):
    rng = np.random.default_rng(k)
    s = make_structure("toep", k)
    for _ in range(5):
        sd = rng.uniform(0.2, 2.0, k)
        phi = rng.uniform(-0.95, 0.95, k - 1)
        rho = pacf_to_acf(phi)
        R = np.concatenate([[1.0], rho])[_lags(k)]
        assert np.min(np.linalg.eigvalsh(R)) > 0  # every point of the box is a correlation matrix
        np.testing.assert_allclose(_pacf_yule_walker(rho), phi, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(acf_to_pacf(rho), phi, rtol=1e-10, atol=1e-12)
        T = s.factor(np.append(sd, phi))
        np.testing.assert_allclose(T @ T.T, sd[:, None] * R * sd[None, :], rtol=1e-11, atol=1e-13)
        np.testing.assert_allclose(T, np.linalg.cholesky(sd[:, None] * R * sd[None, :]), rtol=1e-9, atol=1e-12)
        # glmmTMB's parameters (SDs, correlations by lag) come back from sdcor at σ = 1
        np.testing.assert_allclose(s.sdcor(np.append(sd, phi), 1.0), np.append(sd, rho), rtol=1e-12)


def test_ar1_is_toeplitz_with_one_partial_autocorrelation():
    for rho in (-0.7, 0.0, 0.55):
        a = AR1(4).factor(np.array([1.3, rho]))
        t = Toeplitz(4).factor(np.array([1.3] * 4 + [rho, 0.0, 0.0]))
        np.testing.assert_allclose(a, t, rtol=1e-13, atol=1e-15)


def test_bounds_start_and_names():
    a, t = make_structure("ar1", 4), make_structure("toep", 3)
    np.testing.assert_array_equal(a.lower, [0, -1])
    np.testing.assert_array_equal(a.upper, [np.inf, 1])
    np.testing.assert_array_equal(a.start, [1, 0])
    np.testing.assert_array_equal(t.lower, [0, 0, 0, -1, -1])
    np.testing.assert_array_equal(t.upper, [np.inf, np.inf, np.inf, 1, 1])
    np.testing.assert_array_equal(t.start, [1, 1, 1, 0, 0])
    assert a.param_names("g", ["ta", "tb", "tc", "td"]) == ["g.sd", "g.rho"]
    assert t.param_names("g", ["a", "b", "c"]) == ["g.a", "g.b", "g.c", "g.pacf1", "g.pacf2"]
    assert list(a.is_sd()) == [True, False] and list(t.is_sd()) == [True, True, True, False, False]


# ---- the Jacobians ---------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [2, 3, 5])
@pytest.mark.parametrize("rho", [-0.8, 0.0, 0.37, 0.99])
def test_ar1_jacobian_matches_finite_differences(k, rho):
    s = AR1(k)
    params = np.array([0.8, rho])
    np.testing.assert_allclose(s.jacobian(params), structure_fd_jacobian(s, params), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("k", [2, 3, 4, 5])
def test_toeplitz_jacobian_matches_finite_differences(k):
    s = Toeplitz(k)
    rng = np.random.default_rng(10 + k)
    for _ in range(3):
        params = np.append(rng.uniform(0.3, 2.0, k), rng.uniform(-0.9, 0.9, k - 1))
        np.testing.assert_allclose(s.jacobian(params), structure_fd_jacobian(s, params), rtol=1e-6, atol=1e-7)


def test_on_the_bounds_factor_is_singular_and_jacobian_finite():
    for rho in (1.0, -1.0):
        a = AR1(4)
        T = a.factor(np.array([1.2, rho]))
        assert np.all(np.isfinite(T)) and np.min(np.diag(T)) < 1e-12
        J = a.jacobian(np.array([1.2, rho]))
        assert np.all(np.isfinite(J))
        # the one-sided difference from the interior: the sd column is exact, the ρ column finite and large
        np.testing.assert_allclose(J[:, 0], a.factor(np.array([1.0, rho]))[tril_by_column(4)])
    t = Toeplitz(4)
    params = np.array([1.0, 0.5, 2.0, 1.5, 0.4, -1.0, 0.3])
    T = t.factor(params)
    assert np.all(np.isfinite(T)) and abs(T[2, 2]) < 1e-12 and abs(T[3, 3]) < 1e-12
    J = t.jacobian(params)
    assert np.all(np.isfinite(J))
    interior = [0, 1, 2, 3, 4, 6]  # the columns of the parameters not on a bound are still analytic
    np.testing.assert_allclose(J[:, interior], structure_fd_jacobian(t, params)[:, interior], rtol=1e-6, atol=1e-6)


def test_outside_the_box_has_no_factor():
    r, c = tril_by_column(3)
    assert np.all(np.isnan(AR1(3).factor(np.array([1.0, 1.5]))[r, c]))
    assert np.all(np.isnan(Toeplitz(3).factor(np.array([1.0, 1.0, 1.0, 0.2, -1.2]))[r, c]))


# ---- the deviance's gradient -----------------------------------------------------------------------
@pytest.mark.parametrize("formula", [AR1_FORMULA, TOEP_FORMULA])
@pytest.mark.parametrize("reml", [True, False])
def test_deviance_gradient_against_finite_differences(ar1data, formula, reml):
    small = ar1data[ar1data["subj"].isin(sorted(ar1data["subj"].unique())[:15])]
    f = sparselmm.deviance_function(formula, small, reml=reml)
    assert f.has_gradient
    theta = f.design.theta0 * 0.8 + 0.1
    corr = ~np.isinf(f.design.upper)
    theta[corr] = np.linspace(0.5, -0.3, int(corr.sum()))
    _, g = f.value_and_gradient(theta)
    h = 1e-6
    fd = np.array([(f(theta + e) - f(theta - e)) / (2 * h) for e in np.eye(theta.size) * h])
    np.testing.assert_allclose(g, fd, rtol=1e-5, atol=1e-5)


# ---- fits: glmmTMB's values, equivalences ----------------------------------------------------------
def test_ar1_reml_against_glmmtmb(ar1data):
    m = sparselmm.lmer(AR1_FORMULA, ar1data)
    assert m.objective <= 2424.35900525747 + 1e-7
    assert m.objective == pytest.approx(2424.35900525747, rel=1e-9)
    np.testing.assert_allclose(m.fixef.to_numpy(), [0.888809636733431, 0.505730552442693], rtol=1e-5)
    assert m.sigma == pytest.approx(0.978361873383916, rel=1e-5)
    vc = m.varcorr.to_frame()
    subj = vc[vc["group"] == "subj"]
    np.testing.assert_allclose(subj["sdcor"].iloc[:5], 1.04036732354808, rtol=1e-5)
    # the correlations, column by column: ρ^(i − j)
    i, j = np.tril_indices(5, -1)
    order = np.lexsort((i, j))
    np.testing.assert_allclose(subj["sdcor"].iloc[5:], 0.583500463375998 ** (i - j)[order], rtol=1e-4)
    est = sparselmm.parameters.estimates(m)
    assert list(est.index) == [".sig01", ".sig02", ".sigma", "(Intercept)", "x"]
    assert est[".sig01"] == pytest.approx(1.04036732354808, rel=1e-5)
    assert est[".sig02"] == pytest.approx(0.583500463375998, rel=1e-4)
    assert m.design.theta_names() == ["subj.sd", "subj.rho"]
    assert m.n_params == 2 + 2 + 1
    assert "ar1(0 + t | subj)" in str(m.summary())


def test_toep_ml_against_glmmtmb(ar1data):
    m = sparselmm.lmer(TOEP_FORMULA, ar1data, reml=False)
    assert m.objective <= 2402.85690552056 + 1e-7
    assert m.objective == pytest.approx(2402.85690552056, rel=1e-9)
    assert m.sigma == pytest.approx(0.979066459231575, rel=1e-5)
    sd = [1.22189996826953, 0.845308821948711, 1.23123322104022, 0.990961187351165, 0.812232044281663]
    lags = [0.63073395586481, 0.270101486176849, 0.11367989622173, 0.22898808538173]
    est = sparselmm.parameters.estimates(m)
    np.testing.assert_allclose(est.iloc[:5], sd, rtol=1e-4)
    np.testing.assert_allclose(est.iloc[5:9], lags, rtol=1e-4, atol=1e-4)  # lag correlations, not θ's pacf
    vc = m.varcorr.to_frame()
    cors = vc[(vc["group"] == "subj") & vc["var2"].notna()]["sdcor"].to_numpy()
    np.testing.assert_allclose(cors[:4], est.iloc[5:9], rtol=1e-12)  # the first column is the lags
    assert m.design.theta_names()[5:] == ["subj.pacf1", "subj.pacf2", "subj.pacf3", "subj.pacf4"]
    assert m.n_params == 2 + 9 + 1


def test_nested_structures_order_their_criteria(ar1data):
    """ar1 ⊂ toep ⊂ us (ML): the criteria at the optima can only fall; cs ⊂ toep too."""
    crit = {
        s: sparselmm.lmer(f"y ~ x + {s}(0 + t | subj)", ar1data, reml=False).objective
        for s in ("ar1", "cs", "toep", "us")
    }
    assert crit["ar1"] >= crit["toep"] - 1e-6
    assert crit["cs"] >= crit["toep"] - 1e-6
    assert crit["toep"] >= crit["us"] - 1e-6


def test_toep_with_two_coefficients_equals_us_and_cs():
    # with k = 2 Toeplitz, compound symmetry and unstructured are the same family of covariances
    sleep = sparselmm.datasets.load("sleepstudy")
    # R: -2 * logLik(glmmTMB(Reaction ~ Days + cs(Days | Subject), sleepstudy, REML = FALSE)) = 1751.939
    us = sparselmm.lmer("Reaction ~ Days + (Days | Subject)", sleep, reml=False)
    toep = sparselmm.lmer("Reaction ~ Days + toep(Days | Subject)", sleep, reml=False)
    cs = sparselmm.lmer("Reaction ~ Days + cs(Days | Subject)", sleep, reml=False)
    assert toep.objective == pytest.approx(us.objective, rel=1e-10)
    assert toep.objective == pytest.approx(cs.objective, rel=1e-10)
    assert toep.objective == pytest.approx(1751.9393444631978, rel=1e-10)
    est = sparselmm.parameters.estimates(toep).to_numpy()
    np.testing.assert_allclose(est, sparselmm.parameters.estimates(cs).to_numpy(), rtol=1e-4)
    # us lists sd₁, cor, sd₂ (lme4's order); toep (as cs) both SDs, then the correlation
    np.testing.assert_allclose(est[[0, 2, 1, 3, 4, 5]], sparselmm.parameters.estimates(us).to_numpy(), rtol=1e-4)


def test_cholmod_path_agrees(ar1data):
    a = sparselmm.lmer(AR1_FORMULA, ar1data)
    b = sparselmm.lmer(AR1_FORMULA, ar1data, ordering="amd")
    assert b.optinfo.optimizer == "bobyqa"  # CHOLMOD has no gradient: BOBYQA within the bounds
    assert b.objective == pytest.approx(a.objective, rel=1e-9)


def test_ordered_categorical_sets_the_time_order(ar1data):
    # the AR(1) runs over the factor's level order: reversing it leaves an AR(1) (|i − j| is symmetric)
    # but a shuffled order is another model
    d = ar1data.assign(t=pd.Categorical(ar1data["t"], categories=["t5", "t4", "t3", "t2", "t1"]))
    m = sparselmm.lmer(AR1_FORMULA, d)
    assert m.objective == pytest.approx(2424.35900525747, rel=1e-9)
    d = ar1data.assign(t=pd.Categorical(ar1data["t"], categories=["t3", "t1", "t5", "t2", "t4"]))
    assert sparselmm.lmer(AR1_FORMULA, d).objective > 2424.35900525747 + 1.0


# ---- what is refused -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "formula, match",
    [
        ("y ~ x + ar1(1 + t | subj)", r"ar1\(1 \+ t \| subj\) has an intercept.*ar1\(0 \+ t \| subj\)"),
        ("y ~ x + ar1(t | subj)", "has an intercept"),
        ("y ~ x + ar1(0 + t + x | subj)", "must have a single time factor"),
        ("y ~ x + ar1(0 + poly(x, 2) | subj)", "must have a single time factor"),
        ("y ~ x + ar1(0 + t || subj)", r"'\|\|' inside ar1\(0 \+ t \|\| subj\)"),
        ("y ~ x + ar1(0 + t)", r"ar1\(\) must wrap a random-effects term"),
        ("y ~ x + toep(1 + x || subj)", r"'\|\|' inside toep"),
    ],
)
def test_bad_formulas_are_refused(formula, match):
    with pytest.raises(FormulaError, match=match):
        parse_formula(formula)


def test_ar1_of_a_numeric_variable_is_refused(ar1data):
    d = ar1data.assign(tn=ar1data["t"].str[1:].astype(int))
    with pytest.raises(DataError, match=r"ar1\(0 \+ tn \| subj\) has a single column.*tn is numeric"):
        sparselmm.lmer("y ~ x + ar1(0 + tn | subj)", d)
    # what the message suggests works
    m = sparselmm.lmer("y ~ x + ar1(0 + C(tn) | subj)", d)
    assert m.objective == pytest.approx(2424.35900525747, rel=1e-9)


def test_ar1_of_a_one_level_factor_is_refused(ar1data):
    with pytest.raises(DataError, match="only the level"):
        sparselmm.lmer("y ~ x + ar1(0 + t | subj)", ar1data[ar1data["t"] == "t1"])


def test_single_coefficient_structures_are_refused(ar1data):
    with pytest.raises(FormulaError, match=r"toep\(1 \| subj\) has a single coefficient"):
        sparselmm.lmer("y ~ x + toep(1 | subj)", ar1data)
    with pytest.raises(DataError, match="single column"):
        make_structure("ar1", 1, "ar1(0 + x | g)")
    with pytest.raises(ValueError):
        AR1(1)
    with pytest.raises(ValueError):
        Toeplitz(1)


def test_glmer_fits_them(ar1data):
    # glmmTMB 1.1.5's criterion of this model (validation/reference_covstruct/ar1_poisson.json); the glmer cases
    # are tests/test_glmer_covstruct.py's
    g = sparselmm.glmer("count ~ x + ar1(0 + t | subj)", ar1data, family="poisson")
    assert g.criterion <= 2345.9877812079 + 1e-9 * 2345.9877812079
    assert g.criterion == pytest.approx(2345.9877812079, rel=1e-9)
