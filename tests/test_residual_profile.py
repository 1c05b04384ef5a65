"""Refits by ML and likelihood profiles of residual-structure fits (issue 21 item 5): ``refit_ml``, ``anova``
between REML fits, ``confint(method="profile")`` over the random-effect SD, σ, varIdent's ratios, corAR1's ρ,
corCAR1's φ and the fixed effects.

The reference for the profiles is an independent dense computation written here with numpy: −2 log L of the
marginal model ``V = s² ZZᵀ + σ² S R S`` (every row, β by generalised least squares or held), minimised by scipy
from a default start in its own unconstrained parameters — a parametrisation and an optimiser the library does not
use. glmmTMB's live profiles: validation/run_residual_profile.R + compare_residual_profile.py.
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
from sparselmm.errors import ModelSpecError

DATA = Path(__file__).resolve().parent.parent / "validation" / "data"
Q95 = float(chi2.ppf(0.95, 1))


@pytest.fixture(scope="module")
def nested():
    return pd.read_csv(DATA / "residual_nested.csv")


@pytest.fixture(scope="module")
def small(nested):
    keep = nested["subj"].isin(sorted(nested["subj"].unique())[:12])
    return nested[keep].reset_index(drop=True)


def quiet_lmer(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sparselmm.lmer(*args, **kwargs)


# ---- refit_ml and anova ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kw",
    [
        {"dispformula": "~ f"},
        {"correlation": "ar1"},
        {"dispformula": "~ f", "correlation": "ar1"},
    ],
)
def test_refit_ml_reaches_a_fresh_ml_fit(nested, kw):
    kw = dict(kw)
    if kw.get("correlation") == "ar1":
        kw["correlation"] = sparselmm.corAR1("t", "subj")
    m = quiet_lmer("y ~ x + (1 | subj)", nested, **kw)
    ml = m.refit_ml()
    fresh = quiet_lmer("y ~ x + (1 | subj)", nested, reml=False, **kw)
    assert not ml.reml and ml.objective == pytest.approx(fresh.objective, abs=1e-7)
    np.testing.assert_allclose(ml.phi, fresh.phi, atol=2e-5)
    np.testing.assert_allclose(ml.theta, fresh.theta, atol=2e-5)
    np.testing.assert_allclose(ml.fixef, fresh.fixef, atol=2e-5)
    assert ml.refit_ml() is ml and m.refit_reml() is m
    assert ml.refit_reml().objective == pytest.approx(m.objective, abs=1e-7)
    assert ml.call.kwargs["reml"] is False  # update() of the refit stays on ML
    assert ml.n_params == m.n_params


def test_anova_between_reml_residual_fits_refits_by_ml(nested):
    ar1 = sparselmm.corAR1("t", "subj")
    a = quiet_lmer("y ~ x + (1 | subj)", nested, dispformula="~ f")
    b = quiet_lmer("y ~ x + (1 | subj)", nested, dispformula="~ f", correlation=ar1)
    tab = sparselmm.anova(a, b).to_frame()
    a_ml = quiet_lmer("y ~ x + (1 | subj)", nested, dispformula="~ f", reml=False)
    b_ml = quiet_lmer("y ~ x + (1 | subj)", nested, dispformula="~ f", correlation=ar1, reml=False)
    ref = sparselmm.anova(a_ml, b_ml).to_frame()
    np.testing.assert_allclose(tab[["AIC", "BIC", "logLik"]], ref[["AIC", "BIC", "logLik"]], rtol=1e-9)
    assert tab["Chisq"].iloc[1] == pytest.approx(ref["Chisq"].iloc[1], abs=1e-6)
    assert list(tab["npar"]) == [6, 7]
    assert tab.attrs["refitted"] == ["m0", "m1"]


# ---- an independent dense ML criterion -------------------------------------------------------------------------
class DenseML:
    """−2 log L of ``y ~ x + (1 | subj)`` with varIdent on ``f`` and AR(1) ``ρ^|Δt|`` within ``subj``, at
    ``p = (s, σ, δ_b, δ_c, ρ)``, β by GLS (or ``β_x`` held)."""

    def __init__(self, d: pd.DataFrame):
        self.y = d["y"].to_numpy()
        self.X = np.column_stack([np.ones(len(d)), d["x"].to_numpy()])
        g = d["subj"].to_numpy()
        self.same = g[:, None] == g[None, :]
        t = d["t"].to_numpy().astype(float)
        self.lag = np.abs(t[:, None] - t[None, :])
        self.k = pd.Categorical(d["f"], categories=["a", "b", "c"]).codes

    def __call__(self, p, beta_x=None) -> float:
        s, sigma, db, dc, rho = p
        e = np.exp(np.array([0.0, db, dc]))[self.k]
        R = np.where(self.same, rho**self.lag, 0.0)
        V = s * s * self.same + sigma * sigma * e[:, None] * R * e[None, :]
        try:
            L = np.linalg.cholesky(V)
        except np.linalg.LinAlgError:
            return np.inf
        Xw = np.linalg.solve(L, self.X)
        yw = np.linalg.solve(L, self.y)
        if beta_x is None:
            beta = np.linalg.lstsq(Xw, yw, rcond=None)[0]
        else:
            b0 = float(np.sum(Xw[:, 0] * (yw - Xw[:, 1] * beta_x)) / np.sum(Xw[:, 0] ** 2))
            beta = np.array([b0, beta_x])
        r = yw - Xw @ beta
        return float(2 * np.sum(np.log(np.diag(L))) + r @ r + len(self.y) * np.log(2 * np.pi))

    def constrained(self, held: int | None, value: float, beta_x=None) -> float:
        """The minimum over every parameter but ``held`` (position in p; None: all free), from a default start,
        in ``(log s, log σ, δ_b, δ_c, atanh ρ)``."""
        free = [i for i in range(5) if i != held]
        to_p = [np.exp, np.exp, lambda v: v, lambda v: v, np.tanh]

        def f(z):
            p = np.empty(5)
            for i, zi in zip(free, z):
                p[i] = to_p[i](zi)
            if held is not None:
                p[held] = value
            return self(p, beta_x)

        best = np.inf
        # a default start and one with a larger σ and smaller s (near ρ = 1 the residual takes over the subject's
        # variance and BFGS from the first can stop on the way)
        for start in ([0.0, 0.0, 0.0, 0.0, 0.2], [-1.0, 0.7, 0.0, 0.0, 1.0]):
            x0 = np.array(start)[free]
            res = minimize(f, x0, method="BFGS", options={"gtol": 1e-9, "maxiter": 2000})
            res2 = minimize(f, res.x, method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 20000})
            best = min(best, res.fun, res2.fun)
        return best


HELD = {".sig01": 0, ".sigma": 1, ".ratio.b": 2, ".ratio.c": 3, ".rho": 4}


def dense_at(dense: DenseML, name: str, x: float) -> float:
    if name == "x":
        return dense.constrained(None, 0.0, beta_x=x)
    return dense.constrained(HELD[name], np.log(x) if name.startswith(".ratio") else x)


@pytest.fixture(scope="module")
def small_profile(small):
    m = quiet_lmer("y ~ x + (1 | subj)", small, dispformula="~ f", correlation=sparselmm.corAR1("t", "subj"))
    return m, m.profile(grid=True)


def test_profile_points_reach_fresh_constrained_fits(small, small_profile):
    m, prof = small_profile
    dense = DenseML(small)
    base = dense.constrained(None, 0.0)
    assert prof.base_deviance == pytest.approx(base, abs=1e-6)  # the ML refit's optimum
    assert prof.base_deviance == pytest.approx(m.refit_ml().objective, abs=1e-9)
    for name in (".sig01", ".sigma", ".ratio.b", ".rho", "x"):
        pts = prof.points[prof.points["par"] == name].sort_values("value")
        for _, row in pts.iloc[[0, len(pts) // 2, -1]].iterrows():
            fresh = dense_at(dense, name, row["value"])
            assert row["deviance"] <= fresh + 1e-6, (name, row["value"])
            assert row["deviance"] == pytest.approx(fresh, abs=2e-6), (name, row["value"])


def test_profile_interval_ends_are_chisq_above_the_optimum(small, small_profile):
    m, prof = small_profile
    dense = DenseML(small)
    base = dense.constrained(None, 0.0)
    ci = prof.confint()
    assert list(ci.index) == [".sig01", ".sigma", ".ratio.b", ".ratio.c", ".rho", "(Intercept)", "x"]
    est = prof.estimates
    assert ((ci.iloc[:, 0] < est) & (est < ci.iloc[:, 1])).all()
    for name in (".sig01", ".sigma", ".ratio.c", ".rho", "x"):
        for end in ci.loc[name]:
            assert dense_at(dense, name, end) - base == pytest.approx(Q95, abs=2e-5), (name, end)
    # the same intervals from confint (ends only, no grid)
    np.testing.assert_allclose(m.confint(method="profile"), ci, rtol=1e-6)
    np.testing.assert_allclose(m.confint(parm=".rho", method="profile"), ci.loc[[".rho"]], rtol=1e-6)


def test_profile_table_has_the_residual_axes(small_profile):
    _, prof = small_profile
    frame = prof.table(".ratio.b")
    assert {".zeta", ".ratio.b", ".rho", ".sigma", ".focal", "deviance"} <= set(frame.columns)
    assert (frame[".ratio.b"] > 0).all() and (frame[".rho"].abs() < 1).all()
    assert np.all(np.diff(frame[".zeta"].to_numpy()) > 0)  # monotone in the held ratio


def test_reml_profile_of_the_variance_parameters(small):
    m = quiet_lmer("y ~ x + (1 | subj)", small, correlation=sparselmm.corAR1("t", "subj"), reml=False)
    prof = m.profile(which=[".sigma", ".rho"], criterion="REML", grid=False)
    assert prof.criterion == "REML"
    assert prof.base_deviance == pytest.approx(m.refit_reml().objective, abs=1e-9)
    lo, hi = prof.confint().loc[".rho"]
    assert lo < m.refit_reml().rho < hi
    pts = prof.points
    assert (pts["deviance"] >= prof.base_deviance - 1e-7).all()
    with pytest.raises(ModelSpecError, match="REML criterion"):
        m.profile(which="x", criterion="REML")


def test_corcar1_phi_profile(nested):
    d = pd.read_csv(DATA / "residual_car1.csv")
    m = quiet_lmer("y2 ~ x + (1 | subj)", d, correlation=sparselmm.corCAR1("t", "subj"), reml=False)
    prof = m.profile(which=".Phi", grid=False)
    lo, hi = prof.confint().loc[".Phi"]
    assert 0 <= lo < m.rho < hi < 1
    pts = prof.points
    ends = pts[np.isclose(pts["value"], lo) | np.isclose(pts["value"], hi)]
    np.testing.assert_allclose(ends["deviance"] - m.objective, Q95, atol=1e-6)


# ---- Wald against profile --------------------------------------------------------------------------------------
def simulate(n_subj: int, n_t: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_subj):
        b = rng.normal(0, 1.0)
        e = 0.0
        for t in range(n_t):
            f = "ab"[(s + t) % 2]
            e = 0.5 * e + np.sqrt(1 - 0.25) * rng.normal()
            x = rng.normal()
            rows.append((f"s{s:03d}", t, f, x, 1 + 0.5 * x + b + (2.0 if f == "b" else 1.0) * e * 0.8))
    return pd.DataFrame(rows, columns=["subj", "t", "f", "x", "y"])


def test_wald_and_profile_agree_on_a_well_determined_parameter():
    d = simulate(300, 8, 3)
    m = quiet_lmer("y ~ x + (1 | subj)", d, dispformula="~ f", correlation=sparselmm.corAR1("t", "subj"), reml=False)
    which = [".sigma", ".ratio.b", ".rho", "x"]
    prof = m.confint(parm=which, method="profile")
    wald = m.confint(parm=which, method="Wald")
    np.testing.assert_allclose(prof, wald, rtol=3e-3)


def test_wald_and_profile_differ_on_a_poorly_determined_parameter():
    d = simulate(6, 6, 5)  # six subjects: the random intercept's SD is barely determined
    m = quiet_lmer("y ~ x + (1 | subj)", d, correlation=sparselmm.corAR1("t", "subj"), reml=False)
    prof = m.profile(which=".sig01", grid=False)
    ci = prof.confint().loc[".sig01"].to_numpy()
    wald = m.confint(parm=".sig01", method="Wald").loc[".sig01"].to_numpy()
    sd = m.theta[0] * m.sigma
    assert wald[0] < sd < wald[1] and ci[0] < sd < ci[1]
    # ζ stays above −1.96 down to an SD of 0: the profile's lower end is the bound (lme4 reports 0 there), where
    # Wald's interval, symmetric in log SD, ends well above it
    assert ci[0] == 0.0 and wald[0] > 0.3 * sd
    assert any("up to the bound" in note for note in prof.notes)
    assert abs(ci[1] / wald[1] - 1) > 0.05


# ---- drop1 and ranova ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("reml", "gls"), [(True, -305.94855210), (False, -302.85033787)])
def test_ranova_against_nlme_gls(nested, reml, gls):
    """The model without its random intercept is nlme's gls with the same structure (nlme 3.1-162, R 4.2.2;
    varIdent's reference level "a" moved to the first row)::

        gls(y ~ x, d, weights = varIdent(form = ~ 1 | f), correlation = corAR1(form = ~ t | subj), method = "REML",
            control = glsControl(maxIter = 500, msMaxIter = 500, msTol = 1e-12, tolerance = 1e-10))
    """
    ar1 = sparselmm.corAR1("t", "subj")
    m = quiet_lmer("y ~ x + (1 | subj)", nested, dispformula="~ f", correlation=ar1, reml=reml)
    tab = m.ranova()
    assert list(tab["npar"]) == [7, 6]
    assert tab["logLik"].iloc[0] == pytest.approx(m.loglik, abs=1e-9)
    assert tab["logLik"].iloc[1] == pytest.approx(gls, abs=2e-6)
    assert tab["LRT"].iloc[1] == pytest.approx(2 * (m.loglik - gls), abs=4e-6)


def test_ranova_of_a_two_term_residual_fit_refits_with_the_structure(nested):
    ar1 = sparselmm.corAR1("t", "subj")
    d = nested.assign(grp=nested["subj"].str[:2] + (nested.index % 3).astype(str))
    m = quiet_lmer("y ~ x + (1 | subj) + (1 | grp)", d, correlation=ar1, reml=False)
    tab = m.ranova()
    small = quiet_lmer("y ~ x + (1 | grp)", d, correlation=ar1, reml=False)
    assert tab.loc["(1 | subj)", "logLik"] == pytest.approx(small.loglik, abs=1e-9)


def test_drop1_refits_the_residual_structure_by_ml(nested):
    ar1 = sparselmm.corAR1("t", "subj")
    m = quiet_lmer("y ~ x + (1 | subj)", nested, dispformula="~ f", correlation=ar1)
    tab = m.drop1(test="Chisq")
    m0 = quiet_lmer("y ~ 1 + (1 | subj)", nested, dispformula="~ f", correlation=ar1, reml=False)
    ref = sparselmm.anova(m0, m).to_frame()
    assert tab.loc["x", "LRT"] == pytest.approx(ref["Chisq"].iloc[1], abs=1e-6)
    np.testing.assert_allclose(tab["AIC"].to_numpy(), ref["AIC"].to_numpy()[::-1], rtol=1e-9)
    assert tab.attrs["note"]  # refitted by ML, as lme4 says


def test_the_bootstrap_is_still_refused_with_a_way_out(nested):
    m = quiet_lmer("y ~ x + (1 | subj)", nested, dispformula="~ f")
    with pytest.raises(ModelSpecError, match=r"dispformula or correlation.*use confint\(method='profile'\)"):
        m.bootstrap(5)
    with pytest.raises(ModelSpecError, match=r"use the likelihood-ratio test of sparselmm.anova"):
        m.bootstrap_lrt(m)
    with pytest.raises(ModelSpecError, match=r"fit the new response with sparselmm.lmer"):
        m.refit(m.y)
    with pytest.raises(ModelSpecError, match=r"use confint\(method='profile'\)"):
        m.confint(method="boot")
