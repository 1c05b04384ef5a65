"""lmer's residual structures (sparselmm.residual): dispformula (varIdent) and corAR1.

Reference values: nlme 3.1-162 and glmmTMB 1.1.5 on R 4.2.2 Patched (2022-11-10 r83330), from
validation/run_residual.R on validation/data/residual_nested.csv (validation/simulate_residual.py); the full
comparison is validation/compare_residual.py (REPORT_RESIDUAL.md).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import sparselmm
from sparselmm.crossprod import cross_products
from sparselmm.design import build_design
from sparselmm.formula import parse_formula
from sparselmm.residual import ResidualCriterion, ResidualPieces, residual_structure

DATA = Path(__file__).resolve().parent.parent / "validation" / "data" / "residual_nested.csv"


@pytest.fixture(scope="module")
def nested():
    return pd.read_csv(DATA)


def small_data(seed=1):
    rng = np.random.default_rng(seed)
    rows = []
    for g in range(6):
        for t in np.sort(rng.choice(np.arange(1, 10), size=6, replace=False)):
            rows.append((f"g{g}", int(t)))
    d = pd.DataFrame(rows, columns=["g", "t"])
    d["f"] = rng.choice(list("abc"), len(d))
    d["item"] = rng.choice(list("pqrs"), len(d))
    d["x"] = rng.normal(size=len(d))
    d["y"] = d.x + rng.normal(size=len(d))
    d["w"] = rng.uniform(0.5, 2.0, len(d))
    return d.sample(frac=1, random_state=1).reset_index(drop=True)  # rows out of time order


def setup(d, formula="y ~ x + (1 | g) + (1 | item)", disp="f", cor=None, weights=None):
    cor = sparselmm.corAR1("t", "g") if cor is None else cor
    design = build_design(parse_formula(formula), d, weights=weights)
    st = residual_structure(d, design.data.rows, disp, cor or None)
    return design, st, ResidualPieces(design, st, cross_products(design).beta_shift)


def test_pieces_match_dense_weighted_crossproducts():
    d = small_data()
    design, st, pc = setup(d, weights="w")
    phi = np.array([0.3, -0.4, 0.6])
    cross, _ = pc.cross_at(phi)
    delta, rho = st.split(phi)
    t, g = d.t.to_numpy(), d.g.to_numpy()
    R = np.where(g[:, None] == g[None, :], rho ** np.abs(t[:, None] - t[None, :]), 0.0)  # ρ^|Δt| as nlme
    v = np.exp(delta[st.stratum]) / np.sqrt(d.w.to_numpy())
    Sigma = v[:, None] * R * v[None, :]
    W = np.linalg.inv(Sigma)
    Z, X = design.Zt.T.toarray(), design.X
    y = design.y - X @ cross.beta_shift
    np.testing.assert_allclose(cross.ZtWZ.toarray(), Z.T @ W @ Z, atol=1e-12)
    np.testing.assert_allclose(cross.ZtWX, Z.T @ W @ X, atol=1e-12)
    np.testing.assert_allclose(cross.ZtWy, Z.T @ W @ y, atol=1e-12)
    np.testing.assert_allclose(cross.XtWX, X.T @ W @ X, atol=1e-12)
    np.testing.assert_allclose(cross.XtWy, X.T @ W @ y, atol=1e-12)
    assert cross.ytWy == pytest.approx(y @ W @ y, rel=1e-12)
    assert cross.sum_log_w == pytest.approx(-np.linalg.slogdet(Sigma)[1], rel=1e-12)


@pytest.mark.parametrize("reml", [True, False])
def test_criterion_at_phi_zero_is_plain_lmer(reml):
    d = small_data()
    design, st, pc = setup(d)
    crit = ResidualCriterion(design, pc, reml)
    dev = sparselmm.deviance_function("y ~ x + (1 | g) + (1 | item)", d, reml=reml)
    for theta in ([0.5, 0.3], [1.2, 0.0]):
        assert crit(np.r_[theta, 0.0, 0.0, 0.0]) == pytest.approx(dev(np.array(theta)), rel=1e-10)


def test_evaluation_never_touches_rows():
    d = small_data()
    design, st, pc = setup(d)
    crit = ResidualCriterion(design, pc, True)
    x = np.array([0.7, 0.4, 0.2, -0.1, 0.5])
    before = crit(x)
    # the rows are gone: every evaluation reads only the pieces (no array with n entries)
    design.X = design.y = design.Zt = None
    st.stratum = st.pair_i = st.pair_j = None
    assert crit(x) == before
    n = len(d)
    sizes = [a.shape for a in vars(pc).values() if isinstance(a, np.ndarray)]
    assert all(n not in s for s in sizes)


def test_varident_reml_matches_nlme(nested):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = sparselmm.lmer("y ~ x + (1 | subj)", nested, dispformula="~ f")
    # nlme: lme(y ~ x, random = ~1 | subj, weights = varIdent(form = ~1 | f), method = "REML")
    assert m.objective == pytest.approx(594.1180768148, abs=1e-6)
    np.testing.assert_allclose(m.fixef.to_numpy(), [1.23740174, 0.50026757], rtol=1e-5)
    sd = m.residual_sd
    np.testing.assert_allclose([sd["a"], sd["b"], sd["c"]], [0.88012861, 1.5277332, 0.41417264], rtol=1e-5)
    assert m.n_params == 2 + 1 + 1 + 2
    text = str(m.summary())
    assert "Different standard deviations per stratum" in text and "Fixed effects:" in text


def test_ar1_varident_ml_matches_nlme(nested):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = sparselmm.lmer(
            "y ~ x + (1 | subj)", nested, reml=False, dispformula="~ f", correlation=sparselmm.corAR1("t", "subj")
        )
    # nlme: ... correlation = corAR1(form = ~ t | subj), method = "ML" (a corARMA(p = 1) with the gaps)
    assert m.objective == pytest.approx(566.2488633699, abs=1e-6)
    assert m.aic == pytest.approx(566.2488633699 + 2 * 7, abs=1e-6)
    assert "AR(1)" in str(m.summary())
    assert m.ranef()["subj"].shape == (30, 1)
    assert m.vcov.shape == (2, 2)


def test_ar1_gaps_ml_matches_nlme(nested):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = sparselmm.lmer("y ~ x + (1 | subj)", nested, reml=False, correlation=sparselmm.corAR1("t", "subj"))
    ref = 641.7906046457
    assert m.objective <= ref + 1e-6 and m.objective == pytest.approx(ref, abs=1e-5)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(dispformula="~ nope"), sparselmm.DataError, "nope"),
        (dict(dispformula="~ x"), sparselmm.ModelSpecError, "only factors"),
        (dict(dispformula="~ f + g"), sparselmm.ModelSpecError, "one factor"),
        (dict(dispformula="f"), sparselmm.ModelSpecError, "one-sided"),
        (dict(dispformula=3), sparselmm.ArgumentError, "dispformula"),
        (dict(correlation="ar1"), sparselmm.ArgumentError, "corAR1"),
        (dict(correlation=sparselmm.corAR1("tt", "g")), sparselmm.DataError, "tt"),
        (dict(correlation=sparselmm.corAR1("t", "gg")), sparselmm.DataError, "gg"),
        (dict(correlation=sparselmm.corAR1("tfrac", "g")), sparselmm.DataError, "tfrac"),
        (dict(correlation=sparselmm.corAR1("tdup", "g")), sparselmm.DataError, "'g0'"),
        (dict(correlation=sparselmm.corAR1("t", "row")), sparselmm.ModelSpecError, "no group has two"),
    ],
)
def test_bad_input(kwargs, exc, match):
    d = small_data()
    d["tfrac"] = d.t + 0.5
    d["tdup"] = d.t.where(d.g != "g0", 1)
    d["row"] = np.arange(len(d)).astype(str)
    with pytest.raises(exc, match=match):
        sparselmm.lmer("y ~ x + (1 | g)", d, **kwargs)


def test_bad_corar1_arguments():
    with pytest.raises(sparselmm.ArgumentError, match="time"):
        sparselmm.corAR1(3)
    with pytest.raises(sparselmm.ArgumentError, match="group"):
        sparselmm.corAR1("t", group=["g"])


def test_refused_tools(nested):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = sparselmm.lmer("y ~ x + (1 | subj)", nested, dispformula="~ f")
    for call in (
        lambda: m.refit(m.y),
        lambda: m.bootstrap(5),
        lambda: m.contest("x", ddf="Kenward-Roger"),  # Satterthwaite: tests/test_structure_inference.py
        lambda: m.coef_table("Kenward-Roger"),
        lambda: m.simulate(1),
    ):
        with pytest.raises(sparselmm.ModelSpecError, match="dispformula or correlation"):
            call()
    assert np.isfinite(m.confint(method="Wald").loc["x"]).all()
    assert len(m.predict()) == len(nested)


def test_likelihood_ratio_test_between_residual_structures(nested):
    """The LRT of varIdent against no residual structure (ML fits), nlme 3.1-162 on residual_nested.csv:
    lme(y ~ x, random = ~ 1 | subj, method = "ML") and update(m0, weights = varIdent(form = ~ 1 | f));
    anova(m0, m1): AIC 666.3837 / 600.3886, L.Ratio 69.99514 on 2 df."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m0 = sparselmm.lmer("y ~ x + (1 | subj)", nested, reml=False)
        m1 = sparselmm.lmer("y ~ x + (1 | subj)", nested, reml=False, dispformula="~ f")
        reml = sparselmm.lmer("y ~ x + (1 | subj)", nested, dispformula="~ f")
    table = sparselmm.anova(m0, m1).to_frame()
    np.testing.assert_allclose(table["AIC"], [666.3837, 600.3886], atol=6e-5)
    assert table["Chisq"].iloc[1] == pytest.approx(69.99514, abs=6e-5)
    assert table["Df"].iloc[1] == 2
    np.testing.assert_allclose(m1.anova(m0).to_frame()["Chisq"], table["Chisq"])
    # a REML fit is refitted by ML first (lme4's anova): the ML fit's row
    refitted = sparselmm.anova(m0, reml).to_frame()
    np.testing.assert_allclose(refitted["AIC"], table["AIC"], rtol=1e-9)
    assert refitted.attrs["refitted"] == ["m1"]


def test_cholmod_route_equals_the_dense_one(monkeypatch):
    """Above DENSE_FALLBACK_Q random effects each φ's ZᵀWZ is written into one CHOLMOD pattern
    (ProfiledDeviance.set_cross): forced here on the crossed validation case, it reaches the dense route's
    optimum (glmmTMB 1.1.5 at its own estimates: 777.0510001333, validation/residual_cases.json)."""
    import sparselmm.residual as residual

    d = pd.read_csv(DATA.parent / "residual_crossed.csv")
    for c in ("subj", "item"):
        d[c] = d[c].astype("category")
    kw = dict(reml=False, correlation=sparselmm.corAR1(time="t", group="subj"))
    dense = sparselmm.lmer("y ~ x + (1 | subj) + (1 | item)", d, **kw)
    monkeypatch.setattr(residual, "DENSE_FALLBACK_Q", 0)
    sparse = sparselmm.lmer("y ~ x + (1 | subj) + (1 | item)", d, **kw)
    assert sparse.objective == pytest.approx(dense.objective, rel=1e-12)
    assert sparse.objective == pytest.approx(777.0510001333, abs=1e-6)
    np.testing.assert_allclose(sparse.theta, dense.theta, rtol=1e-6)
    np.testing.assert_allclose(sparse.fixef, dense.fixef, rtol=1e-8)
    plain = sparselmm.deviance_function("y ~ x + (1 | subj) + (1 | item)", d, ordering="default")
    with pytest.raises(sparselmm.ModelSpecError, match="reweightable=True"):
        plain.set_cross(plain.cross)


def test_missing_values_in_structure_columns(nested):
    d = nested.copy()
    d.loc[3, "f"] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = sparselmm.lmer("y ~ x + (1 | subj)", d, reml=False, dispformula="~ f")
    assert m.nobs == len(d) - 1
    with pytest.raises(sparselmm.DataError, match="'f'"):
        sparselmm.lmer("y ~ x + (1 | subj)", d, dispformula="~ f", missing="raise")
