"""Inference for covariance structures and residual structures (issue 21 item 5): Satterthwaite's df, Wald
intervals of the variance parameters on their unconstrained scale, profiles of structured fits, LRTs.

References:

* lmerTest's df for ``diag(1 + x | subj)`` = lme4's ``(1 + x || subj)`` (R 4.2.2 Patched (2022-11-10 r83330),
  lme4 1.1-31, lmerTest 3.1-3)::

      d <- read.csv("validation/data/covstruct_crossed.csv", stringsAsFactors = TRUE)
      summary(lmerTest::lmer(y ~ x + (1 + x || subj), d, REML = TRUE))$coefficients[, "df"]

* nlme 3.1-162 (same R)::

      d <- read.csv("validation/data/residual_nested.csv", stringsAsFactors = TRUE)
      i <- which(d$f == "a")[1]; d <- rbind(d[i, ], d[-i, ])   # varIdent's reference level: the first seen
      m <- lme(y ~ x, random = ~ 1 | subj, data = d, weights = varIdent(form = ~ 1 | f),
               correlation = corAR1(form = ~ t | subj), method = "REML",
               control = lmeControl(maxIter = 500, msMaxIter = 500, niterEM = 100, msTol = 1e-12, tolerance = 1e-10,
                                    .relStep = 1e-4))  # nlme's default step is below the rounding noise
      intervals(m, which = "var-cov")                  # (validation/run_residual_inference.R)

* an independent dense computation written here with numpy from the stated formulas (the marginal covariance
  ``V = Z Σ_b Zᵀ + σ² S R S`` of every row, the REML criterion, ``vcov(β) = (XᵀV⁻¹X)⁻¹``, central differences
  in the SD/correlation scale — a parametrisation the library does not use): Satterthwaite's
  ``ν = 2 (lᵀΦl)² / (gᵀ A g)``, ``A = 2 H⁻¹``, for a cs fit and for a varIdent + corAR1 fit.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import minimize
from scipy.stats import chi2

import sparselmm
from sparselmm.covstruct import Toeplitz
from sparselmm.errors import ModelSpecError

DATA = Path(__file__).resolve().parent.parent / "validation" / "data"


@pytest.fixture(scope="module")
def crossed():
    return pd.read_csv(DATA / "covstruct_crossed.csv")


@pytest.fixture(scope="module")
def nested():
    return pd.read_csv(DATA / "residual_nested.csv")


@pytest.fixture(scope="module")
def small_nested(nested):
    keep = nested["subj"].isin(sorted(nested["subj"].unique())[:12])
    return nested[keep].reset_index(drop=True)


# ---- an independent dense computation -------------------------------------------------------------------
def _hessian(f, x, h=1e-4):
    """Central differences (test code: scaled steps)."""
    x = np.asarray(x, float)
    m = x.size
    H = np.empty((m, m))
    s = h * np.maximum(np.abs(x), 0.1)
    for i in range(m):
        for j in range(m):
            e_i, e_j = np.eye(m)[i] * s[i], np.eye(m)[j] * s[j]
            H[i, j] = (f(x + e_i + e_j) - f(x + e_i - e_j) - f(x - e_i + e_j) + f(x - e_i - e_j)) / (4 * s[i] * s[j])
    return H, s


def _satterthwaite(V_of, u, X, y):
    """Satterthwaite's df of each coefficient from a marginal covariance ``V_of(u)`` (REML criterion)."""
    n, p = X.shape

    def reml(u):
        V = V_of(u)
        sign, logdet = np.linalg.slogdet(V)
        if sign <= 0:
            return np.inf
        Vi = np.linalg.inv(V)
        M = X.T @ Vi @ X
        beta = np.linalg.solve(M, X.T @ Vi @ y)
        r = y - X @ beta
        return logdet + np.linalg.slogdet(M)[1] + r @ Vi @ r + (n - p) * np.log(2 * np.pi)

    def vcov(u):
        return np.linalg.inv(X.T @ np.linalg.solve(V_of(u), X))

    H, s = _hessian(reml, u)
    A = 2 * np.linalg.inv(H)
    Phi = vcov(u)
    jac = []
    for i in range(u.size):
        e = np.eye(u.size)[i] * s[i]
        jac.append((vcov(u + e) - vcov(u - e)) / (2 * s[i]))
    out = []
    for k in range(p):
        g = np.array([J[k, k] for J in jac])
        out.append(2 * Phi[k, k] ** 2 / (g @ A @ g))
    return np.array(out)


def _indicator(codes):
    levels, inv = np.unique(codes, return_inverse=True)
    return np.eye(levels.size)[inv]


def test_satterthwaite_cs_against_a_dense_computation(crossed):
    d = crossed[crossed["subj"].isin(sorted(crossed["subj"].unique())[:15])].reset_index(drop=True)
    m = sparselmm.lmer("y ~ x + cs(1 + x | subj) + (1 | item)", d)
    X = np.column_stack([np.ones(len(d)), d["x"]])
    y = d["y"].to_numpy()
    G = _indicator(d["subj"])
    Zs = np.hstack([G, G * d["x"].to_numpy()[:, None]])  # intercepts, then slopes, per subject
    Zi = _indicator(d["item"])
    nsub = G.shape[1]

    def V_of(u):
        sd0, sd1, rho, sdi, sigma = u
        C = np.array([[sd0**2, rho * sd0 * sd1], [rho * sd0 * sd1, sd1**2]])
        Sb = np.kron(C, np.eye(nsub))
        return Zs @ Sb @ Zs.T + sdi**2 * Zi @ Zi.T + sigma**2 * np.eye(len(y))

    vals = sparselmm.parameters.estimates(m).to_numpy()
    cs_term = next(t for t in m.design.terms if t.group_name == "subj")
    item = next(t for t in m.design.terms if t.group_name == "item")
    u = np.append(vals[cs_term.theta_offset : cs_term.theta_offset + 3], [vals[item.theta_offset], m.sigma])
    ref = _satterthwaite(V_of, u, X, y)
    ours = m.coef_table()["df"].to_numpy()
    np.testing.assert_allclose(ours, ref, rtol=2e-4)


def test_satterthwaite_residual_structure_against_a_dense_computation(small_nested):
    d = small_nested
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = sparselmm.lmer("y ~ x + (1 | subj)", d, dispformula="~ f", correlation=sparselmm.corAR1("t", "subj"))
    X = np.column_stack([np.ones(len(d)), d["x"]])
    y = d["y"].to_numpy()
    Zs = _indicator(d["subj"])
    levels = sorted(d["f"].unique())
    stratum = np.array([levels.index(v) for v in d["f"]])
    same = d["subj"].to_numpy()[:, None] == d["subj"].to_numpy()[None, :]
    lag = np.abs(d["t"].to_numpy()[:, None] - d["t"].to_numpy()[None, :])

    def V_of(u):
        sd, sigma, r_b, r_c, rho = u
        s = np.array([1.0, r_b, r_c])[stratum]
        R = np.where(same, rho**lag, 0.0)
        return sd**2 * Zs @ Zs.T + sigma**2 * (s[:, None] * R * s[None, :])

    u = np.concatenate([[m.varcorr.to_frame()["sdcor"].iloc[0], m.sigma], m.sd_ratios.to_numpy()[1:], [m.rho]])
    ref = _satterthwaite(V_of, u, X, y)
    tab = m.coef_table()
    np.testing.assert_allclose(tab["df"].to_numpy(), ref, rtol=2e-4)
    text = str(m.summary())
    assert "Satterthwaite" in text and "not available" not in text


# ---- lmerTest: diag(1 + x | g) is lme4's (1 + x || g) ---------------------------------------------------
def test_satterthwaite_diag_matches_lmertest(crossed):
    m = sparselmm.lmer("y ~ x + diag(1 + x | subj)", crossed)
    lmertest = [38.9825133166595, 38.8656695978321]  # the module docstring's R call
    np.testing.assert_allclose(m.coef_table()["df"].to_numpy(), lmertest, rtol=1e-4)
    # the unstructured fit of the same model takes the exact-derivative route: the same df
    lme4 = sparselmm.lmer("y ~ x + (1 + x || subj)", crossed)
    np.testing.assert_allclose(lme4.coef_table()["df"].to_numpy(), lmertest, rtol=1e-4)


# ---- Wald intervals --------------------------------------------------------------------------------------
def test_wald_residual_matches_nlme_intervals(nested):
    m = sparselmm.lmer("y ~ x + (1 | subj)", nested, dispformula="~ f", correlation=sparselmm.corAR1("t", "subj"))
    ci = m.confint(method="Wald")
    assert list(ci.index) == [".sig01", ".sigma", ".ratio.b", ".ratio.c", ".rho", "(Intercept)", "x"]
    nlme = {  # intervals(m, which = "var-cov"), see the module docstring
        ".sig01": (0.773314932488843, 1.38519217484216),
        ".sigma": (0.788683129283594, 1.14561344375001),
        ".ratio.b": (1.34539073010628, 2.15042368476918),
        ".ratio.c": (0.383167905976347, 0.626168031937439),
        ".rho": (0.248214928460342, 0.616576444880279),
    }
    for name, (lo, hi) in nlme.items():
        np.testing.assert_allclose(ci.loc[name].to_numpy(), [lo, hi], rtol=5e-4, err_msg=name)
    # the estimate is inside, the interval of a ratio is asymmetric (log scale)
    assert ci.loc[".ratio.b", "2.5 %"] < m.sd_ratios["b"] < ci.loc[".ratio.b", "97.5 %"]
    sub = m.confint(parm=[".rho", "x"], method="Wald", level=0.9)
    assert list(sub.index) == [".rho", "x"] and list(sub.columns) == ["5 %", "95 %"]


def test_wald_plain_lmer_keeps_lme4s_na(crossed):
    m = sparselmm.lmer("y ~ x + (1 + x | subj)", crossed)
    ci = m.confint(method="Wald")
    assert ci.iloc[:4].isna().all().all() and ci.iloc[4:].notna().all().all()


def test_wald_singular_structure_has_no_interval_for_the_zero_sd(crossed):
    rng = np.random.default_rng(3)
    d = crossed.assign(y=crossed["x"] + rng.normal(size=len(crossed)))  # no random effect at all
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = sparselmm.lmer("y ~ x + diag(1 + x | subj)", d)
    ci = m.confint(method="Wald")
    zero = np.isclose(m.theta, 0.0)
    assert zero.any()
    assert ci.iloc[: m.theta.size][zero].isna().all().all()
    assert ci.loc[".sigma"].notna().all() and ci.loc["x"].notna().all()


# ---- profiles of structured fits --------------------------------------------------------------------------
def _fresh_constrained_fit(m, index: int, value: float) -> float:
    """The ML criterion with θ[index] held at ``value``, minimised over the rest from the design's start."""
    dev = m.deviance_function.with_reml(False)
    lo, up = m.design.lower, m.design.upper
    free = np.arange(m.theta.size) != index

    def f(z):
        t = np.empty(m.theta.size)
        t[free], t[index] = z, value
        return dev(t)

    x0 = np.clip(m.design.theta0[free], lo[free] + 1e-3, None)
    res = minimize(f, x0, method="L-BFGS-B", bounds=list(zip(lo[free], np.where(np.isinf(up[free]), None, up[free]))),
                   options={"ftol": 1e-14, "gtol": 1e-10, "maxiter": 5000})  # fmt: skip
    res2 = minimize(f, res.x, method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 20000})
    return min(res.fun, res2.fun)


def test_profile_of_a_cs_correlation_reaches_a_fresh_fits_optimum(crossed):
    m = sparselmm.lmer("y ~ x + cs(1 + x | subj) + (1 | item)", crossed, reml=False)
    prof = m.profile(which=".sig03", grid=False)
    ci = prof.confint()
    lo, hi = ci.loc[".sig03"]
    assert -1 < lo < m.theta[2] < hi < 1
    pts = prof.points[prof.points["par"] == ".sig03"]
    rho_index = 2  # θ = (s0, s1, ρ, s_item): ρ is θ[2] itself
    for _, row in pts.iloc[[0, -1]].iterrows():
        fresh = _fresh_constrained_fit(m, rho_index, row["value"])
        assert row["deviance"] <= fresh + 1e-6
        assert row["deviance"] == pytest.approx(fresh, abs=1e-5)
    # ζ = ±1.96 at the ends: the deviance is 1.96² above the fit there
    ends = pts[np.isclose(pts["value"], lo) | np.isclose(pts["value"], hi)]
    np.testing.assert_allclose(ends["deviance"] - m.objective, norm_z2(), atol=1e-5)


def norm_z2() -> float:
    return float(chi2.ppf(0.95, 1))


def test_profile_intervals_cover_the_estimates_ar1(nested):
    a = pd.read_csv(DATA / "covstruct_ar1.csv")
    m = sparselmm.lmer("y ~ x + ar1(0 + t | subj)", a, reml=False)
    ci = m.confint(method="profile")
    est = sparselmm.parameters.estimates(m)
    assert ((ci.iloc[:, 0] < est) & (est < ci.iloc[:, 1])).all()
    wald = m.confint(method="Wald")
    # the profile and Wald intervals of a well-determined SD nearly agree
    np.testing.assert_allclose(ci.loc[".sigma"], wald.loc[".sigma"], rtol=5e-3)


def test_residual_bootstrap_intervals_are_refused(nested):
    m = sparselmm.lmer("y ~ x + (1 | subj)", nested, dispformula="~ f")
    with pytest.raises(ModelSpecError, match=r"confint\(method='boot'\).*use confint\(method='profile'\)"):
        m.confint(method="boot")


def test_kenward_roger_is_refused_with_a_way_out(crossed, nested):
    m = sparselmm.lmer("y ~ x + cs(1 + x | subj)", crossed)
    with pytest.raises(ModelSpecError, match="Kenward-Roger.*use ddf='Satterthwaite'"):
        m.coef_table(ddf="Kenward-Roger")
    r = sparselmm.lmer("y ~ x + (1 | subj)", nested, correlation=sparselmm.corAR1("t", "subj"))
    with pytest.raises(ModelSpecError, match="Kenward-Roger.*use ddf='Satterthwaite'"):
        r.contest("x", ddf="Kenward-Roger")
    assert r.contest("x")["DenDF"].iloc[0] > 0  # Satterthwaite's F test works


# ---- likelihood-ratio tests between structures --------------------------------------------------------------
def test_anova_between_structures(crossed):
    m_cs = sparselmm.lmer("y ~ x + cs(1 + x | subj) + (1 | item)", crossed, reml=False)
    m_us = sparselmm.lmer("y ~ x + (1 + x | subj) + (1 | item)", crossed, reml=False)
    m_diag = sparselmm.lmer("y ~ x + diag(1 + x | subj) + (1 | item)", crossed, reml=False)
    tab = sparselmm.anova(m_diag, m_cs, m_us)
    assert list(tab["npar"]) == [6, 7, 7]
    stat = m_diag.objective - m_cs.objective
    assert tab["Chisq"].iloc[1] == pytest.approx(stat, rel=1e-10)
    assert tab["Pr(>Chisq)"].iloc[1] == pytest.approx(chi2.sf(stat, 1), rel=1e-8)
    # cs of two coefficients is us of two: the same likelihood
    assert m_cs.objective == pytest.approx(m_us.objective, abs=1e-6)


# ---- the structures' inverse maps ------------------------------------------------------------------------
def test_toeplitz_from_sdcor_roundtrip_and_refusal():
    s = Toeplitz(4)
    params = np.array([0.5, 1.0, 2.0, 1.5, 0.6, -0.3, 0.2])
    back = s.from_sdcor(s.sdcor(params, 2.0), 2.0)
    np.testing.assert_allclose(back, params, atol=1e-12)
    with pytest.raises(np.linalg.LinAlgError):
        s.from_sdcor(np.array([1, 1, 1, 1, 0.9, 0.1, 0.9]), 1.0)
