"""lmer's continuous-time AR(1) residual correlation, corCAR1 (sparselmm.residual, sparselmm.residual_correlation).

Reference values: nlme 3.1-162 on R 4.2.2 Patched (2022-11-10 r83330), from validation/run_residual.R on
validation/data/residual_car1.csv (validation/simulate_residual.py: 40 subjects, irregular real times ``t``,
almost all gaps distinct), cases car1_ml_nlme and car1_varident_reml_nlme of validation/residual_cases.json::

    library(nlme)
    d <- read.csv("validation/data/residual_car1.csv")
    ctrl <- lmeControl(maxIter = 500, msMaxIter = 500, niterEM = 100, msTol = 1e-12, tolerance = 1e-10)
    m1 <- lme(y2 ~ x, random = ~ 1 | subj, data = d, correlation = corCAR1(form = ~ t | subj),
              method = "ML", control = ctrl)
    m2 <- lme(y ~ x, random = ~ 1 | subj, data = d, correlation = corCAR1(form = ~ t | subj),
              weights = varIdent(form = ~ 1 | f), method = "REML", control = ctrl)
    -2 * logLik(m1); fixef(m1); m1$sigma; coef(m1$modelStruct$corStruct, unconstrained = FALSE)
    sqrt(getVarCov(m1)[1])   # and the same for m2, with m2$sigma * coef(m2$modelStruct$varStruct, ...)

The full comparison (ML and REML, with and without varIdent, a quarter grid of times, integer times) is
validation/compare_residual.py (REPORT_RESIDUAL.md).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import sparselmm
import sparselmm.residual as residual
from sparselmm.crossprod import cross_products
from sparselmm.design import build_design
from sparselmm.formula import parse_formula
from sparselmm.residual import ResidualCriterion, ResidualPieces, residual_structure

DATA = Path(__file__).resolve().parent.parent / "validation" / "data"


@pytest.fixture(scope="module")
def car1():
    return pd.read_csv(DATA / "residual_car1.csv")


def fit(formula, data, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sparselmm.lmer(formula, data, **kwargs)


def small_data(seed=3, grid=False):
    """6 groups of 7 rows at irregular real times (or on a quarter grid), rows shuffled, three strata."""
    rng = np.random.default_rng(seed)
    shape, n = (6, 7), 42
    steps = rng.choice([0.25, 0.5, 1.0], shape) if grid else rng.exponential(0.8, shape) + 0.05
    d = pd.DataFrame({"g": np.repeat([f"g{i}" for i in range(6)], 7), "t": np.cumsum(steps, axis=1).ravel()})
    d = d.assign(f=rng.choice(list("abc"), n), item=rng.choice(list("pqrs"), n), x=rng.normal(size=n))
    d = d.assign(y=d.x + rng.normal(size=n), w=rng.uniform(0.5, 2.0, n))
    return d.sample(frac=1, random_state=1).reset_index(drop=True)


def setup(d, formula="y ~ x + (1 | g) + (1 | item)", disp="f", weights="w", cor=None):
    cor = sparselmm.corCAR1("t", "g") if cor is None else cor
    design = build_design(parse_formula(formula), d, weights=weights)
    st = residual_structure(d, design.data.rows, disp, cor)
    return design, st, ResidualPieces(design, st, cross_products(design).beta_shift)


def dense_sigma(d, st, phi):
    """The n × n residual covariance over σ²: V^{1/2} R V^{1/2}, R_ij = φ^|t_i − t_j| within a group."""
    delta, rho = st.split(phi)
    t, g = d.t.to_numpy(), d.g.to_numpy()
    R = np.where(g[:, None] == g[None, :], rho ** np.abs(t[:, None] - t[None, :]), 0.0)
    v = np.exp(delta[st.stratum]) / np.sqrt(d.w.to_numpy())
    return v[:, None] * R * v[None, :]


# ---- against a direct dense computation ---------------------------------------------------------------
@pytest.mark.parametrize("fill", [0.0, 2.0])  # the piece stacks stored dense, then CSR
def test_pieces_match_dense_weighted_crossproducts(monkeypatch, fill):
    monkeypatch.setattr(residual, "DENSE_STACK_FILL", fill)
    d = small_data()
    design, st, pc = setup(d)
    assert sp.issparse(pc.g_stack) == (fill > 1)
    phi = np.array([0.3, -0.4, 0.7])
    cross, _ = pc.cross_at(phi)
    Sigma = dense_sigma(d, st, phi)
    W = np.linalg.inv(Sigma)
    M = np.column_stack([design.Zt.T.toarray(), design.X, design.y - design.X @ cross.beta_shift])
    c = cross
    got = np.block(
        [
            [c.ZtWZ.toarray(), c.ZtWX, c.ZtWy[:, None]],
            [c.ZtWX.T, c.XtWX, c.XtWy[:, None]],
            [c.ZtWy[None, :], c.XtWy[None, :], np.array([[c.ytWy]])],
        ]
    )
    np.testing.assert_allclose(got, M.T @ W @ M, rtol=1e-11, atol=1e-11)
    assert cross.sum_log_w == pytest.approx(-np.linalg.slogdet(Sigma)[1], rel=1e-11)


@pytest.mark.parametrize("reml", [False, True])
@pytest.mark.parametrize("grid", [False, True])
def test_criterion_equals_dense_likelihood(reml, grid):
    """The per-piece criterion at (θ, δ, φ) against −2 log L profiled over β and σ from the n × n marginal
    covariance σ²(ZΛΛᵀZᵀ + V^{1/2} R V^{1/2}), formed and factored densely."""
    d = small_data(grid=grid)
    design, st, pc = setup(d, formula="y ~ x + (1 | g)")
    crit = ResidualCriterion(design, pc, reml)
    n, p = design.n, design.p
    Z, X, y = design.Zt.T.toarray(), design.X, design.y
    for theta, phi in ((0.8, [0.2, -0.3, 0.55]), (0.3, [-0.1, 0.4, 0.05]), (1.5, [0.0, 0.0, 0.0])):
        A = theta**2 * Z @ Z.T + dense_sigma(d, st, np.array(phi))
        Ai = np.linalg.inv(A)
        XtAX = X.T @ Ai @ X
        beta = np.linalg.solve(XtAX, X.T @ Ai @ y)
        r = y - X @ beta
        r2 = r @ Ai @ r
        dof = n - p if reml else n
        want = np.linalg.slogdet(A)[1] + dof * (1 + np.log(2 * np.pi * r2 / dof))
        if reml:
            want += np.linalg.slogdet(XtAX)[1]
        assert crit(np.r_[theta, phi]) == pytest.approx(want, rel=1e-10)


def test_phi_zero_is_plain_lmer():
    d = small_data()
    design, st, pc = setup(d, disp=None, weights=None)
    crit = ResidualCriterion(design, pc, True)
    dev = sparselmm.deviance_function("y ~ x + (1 | g) + (1 | item)", d)
    for theta in ([0.5, 0.3], [1.2, 0.0]):
        assert crit(np.r_[theta, 0.0]) == pytest.approx(dev(np.array(theta)), rel=1e-10)
    assert crit(np.r_[0.5, 0.3, -0.1]) == np.inf  # corCAR1's φ is not negative


# ---- the cost: pieces by distinct gap ------------------------------------------------------------------
def test_pieces_per_distinct_gap():
    """Grid times: the pieces depend on the distinct gaps and strata only, not on the rows (a data set four
    times as long has the same pieces); distinct real gaps: one gap value per pair, each kept exactly."""
    grid = small_data(grid=True)
    _, st, pc = setup(grid)
    longer = pd.concat([grid.assign(g=grid.g + f"_{k}") for k in range(4)], ignore_index=True)
    _, _, pc4 = setup(longer)
    assert pc.gaps.size <= 5 and pc4.n_pieces == pc.n_pieces
    np.testing.assert_array_equal(pc4.gaps, pc.gaps)
    np.testing.assert_array_equal(pc4.pairs_per_gap, 4 * pc.pairs_per_gap)
    irregular = small_data()
    _, st, pc = setup(irregular)
    assert pc.gaps.size == np.unique(st.gap).size == st.pair_i.size
    n_levels = len(st.levels)
    assert pc.n_pieces <= n_levels + pc.gaps.size * n_levels * (n_levels + 3) // 2


# ---- against nlme -------------------------------------------------------------------------------------
def test_car1_ml_matches_nlme(car1):
    m = fit("y2 ~ x + (1 | subj)", car1, reml=False, correlation=sparselmm.corCAR1("t", "subj"))
    ref = 557.20009697416  # nlme car1_ml_nlme
    assert m.objective <= ref + 1e-8 and m.objective == pytest.approx(ref, abs=1e-6)
    np.testing.assert_allclose(m.fixef.to_numpy(), [1.25279798683043, 0.507719326842114], rtol=1e-5)
    assert m.sigma == pytest.approx(0.988348626559385, rel=1e-5)
    assert m.rho == pytest.approx(0.427434018159523, rel=1e-4)
    vc = m.varcorr.to_frame()
    assert float(vc[vc.group == "subj"].sdcor.iloc[0]) == pytest.approx(1.13011667203, rel=1e-5)
    assert list(m.residual_parameters.index) == ["Phi"]
    assert m.n_params == 2 + 1 + 1 + 1


def test_car1_varident_reml_matches_nlme(car1):
    m = fit("y ~ x + (1 | subj)", car1, dispformula="~ f", correlation=sparselmm.corCAR1("t", "subj"))
    ref = 600.731022253129  # nlme car1_varident_reml_nlme
    assert m.objective <= ref + 1e-8 and m.objective == pytest.approx(ref, abs=1e-6)
    np.testing.assert_allclose(m.fixef.to_numpy(), [1.13566090877549, 0.547487390381458], rtol=1e-5)
    sd = m.residual_sd
    np.testing.assert_allclose(
        [sd["a"], sd["b"], sd["c"]], [0.867896661696826, 1.64424615043242, 0.543249372612209], rtol=1e-4
    )
    assert m.rho == pytest.approx(0.36617117762519, rel=1e-4)
    vc = m.varcorr.to_frame()
    assert float(vc[vc.group == "subj"].sdcor.iloc[0]) == pytest.approx(1.2370445, rel=1e-4)
    assert list(m.residual_parameters.index) == ["delta.b", "delta.c", "Phi"]
    text = str(m.summary())
    assert "Correlation Structure: Continuous AR(1)" in text and "Formula: ~ t | subj" in text
    assert "Phi" in text and f"{m.rho:9.7f}" in text and "Different standard deviations per stratum" in text


def test_integer_consecutive_times_equal_corar1():
    """On consecutive integer times (residual_crossed.csv: 1 … 12 within subject) corCAR1's φ^|Δt| is corAR1's
    ρ^|Δt|: the criteria agree at every (θ, ρ ≥ 0), and so do the fits (glmmTMB's optimum 777.0510001333)."""
    d = pd.read_csv(DATA / "residual_crossed.csv")
    formula = "y ~ x + (1 | subj) + (1 | item)"
    crits = [
        setup(d, formula, None, None, cor) for cor in (sparselmm.corAR1("t", "subj"), sparselmm.corCAR1("t", "subj"))
    ]
    ar1, car1 = (ResidualCriterion(design, pc, False) for design, _, pc in crits)
    for x in ([0.8, 0.5, 0.6], [0.3, 1.1, 0.05], [1.0, 0.2, 0.0]):
        assert car1(np.array(x)) == pytest.approx(ar1(np.array(x)), rel=1e-13)
    a = fit(formula, d, reml=False, correlation=sparselmm.corAR1("t", "subj"))
    c = fit(formula, d, reml=False, correlation=sparselmm.corCAR1("t", "subj"))
    assert c.objective == pytest.approx(a.objective, abs=1e-7)
    assert c.objective == pytest.approx(777.0510001333, abs=1e-6)
    assert c.rho == pytest.approx(a.rho, rel=1e-4)
    np.testing.assert_allclose(c.fixef, a.fixef, rtol=1e-5)
    np.testing.assert_allclose(c.theta, a.theta, rtol=1e-4)


# ---- bad input -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "time, group, exc, match",
    [
        ("tt", "g", sparselmm.DataError, "corCAR1.*'tt'"),
        ("t", "gg", sparselmm.DataError, "corCAR1.*'gg'"),
        ("tstr", "g", sparselmm.DataError, "'tstr' must hold numbers.*pd.to_numeric"),
        ("tdate", "g", sparselmm.DataError, "'tdate' must hold numbers"),
        ("tbool", "g", sparselmm.DataError, "'tbool' must hold numbers"),
        ("tinf", "g", sparselmm.DataError, "'tinf' has a missing or infinite value"),
        ("tneg", "g", sparselmm.DataError, "'tneg' must hold non-negative times.*min"),
        ("tdup", "g", sparselmm.DataError, "appears more than once in group 'g0' of 'g'"),
        ("t", "row", sparselmm.ModelSpecError, "corCAR1: no group has two"),
    ],
)
def test_bad_times(time, group, exc, match):
    d = small_data()
    d["tstr"] = d.t.astype(str)
    d["tdate"] = pd.Timestamp("2024-01-01") + pd.to_timedelta(d.t, unit="D")
    d["tbool"] = d.t > 2
    d["tinf"] = d.t.where(d.index != 5, np.inf)
    d["tneg"] = d.t - 1.0
    d["tdup"] = d.t.where(d.g != "g0", 1.5)
    d["row"] = np.arange(len(d)).astype(str)
    with pytest.raises(exc, match=match):
        sparselmm.lmer("y ~ x + (1 | g)", d, correlation=sparselmm.corCAR1(time, group))


def test_missing_times():
    d = small_data()
    d.loc[4, "t"] = np.nan
    with pytest.raises(sparselmm.DataError, match="'t'.*missing='drop'"):
        sparselmm.lmer("y ~ x + (1 | g)", d, correlation=sparselmm.corCAR1("t", "g"), missing="raise")
    m = fit("y ~ x + (1 | g)", d, correlation=sparselmm.corCAR1("t", "g"))  # missing="drop", the default
    assert m.nobs == len(d) - 1


def test_bad_arguments():
    with pytest.raises(sparselmm.ArgumentError, match=r"corCAR1\(time=...\)"):
        sparselmm.corCAR1(3)
    with pytest.raises(sparselmm.ArgumentError, match=r"corCAR1\(group=...\)"):
        sparselmm.corCAR1("t", group=["g"])
    d = small_data()
    with pytest.raises(sparselmm.ArgumentError, match="corCAR1"):
        sparselmm.lmer("y ~ x + (1 | g)", d, correlation="car1")
    with pytest.raises(sparselmm.DataError, match=r"use sparselmm.corCAR1\('t'"):
        sparselmm.lmer("y ~ x + (1 | g)", d, correlation=sparselmm.corAR1("t", "g"))  # real times


def test_repr_and_export():
    c = sparselmm.corCAR1("t", "g")
    assert repr(c) == "corCAR1(time='t', group='g')" and c.formula() == "~ t | g"
    assert repr(sparselmm.corCAR1("t")) == "corCAR1(time='t')"
    assert "corCAR1" in sparselmm.__all__
