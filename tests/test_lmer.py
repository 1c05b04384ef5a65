"""lmer() end to end: lme4's published numbers, invariances, warnings, results API.

Published values: lme4 documentation and tests, as collected in shared/DESIGN.md ("Published lme4
numbers"); each is checked to the digits given there.
"""

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import sparselmm
from sparselmm import SingularFitWarning, datasets, lmer


def digits(value, reference, decimals):
    """True when ``value`` rounds to ``reference`` at the given number of decimals."""
    return abs(value - reference) <= 0.5 * 10.0**-decimals + 1e-12 * abs(reference)


def test_sleepstudy_reml_published(sleepstudy):
    m = lmer("Reaction ~ Days + (Days | Subject)", sleepstudy)
    assert digits(m.objective, 1743.628, 3)
    assert digits(m.fixef["Intercept"], 251.405105, 6)
    assert digits(m.fixef["Days"], 10.467286, 6)
    assert digits(m.sigma, 25.592, 3)
    assert m.optinfo.converged and not m.is_singular()


def test_reml_fit_deviance_is_ml_deviance_at_reml_estimates(sleepstudy):
    # R 4.2.2, lme4 1.1-31: deviance(lmer(Reaction ~ Days + (Days|Subject), sleepstudy), REML = FALSE)
    m = lmer("Reaction ~ Days + (Days | Subject)", sleepstudy)
    # exact at lme4's θ̂; sparselmm's own REML optimum (1.5e-9 lower in the REML criterion, L-BFGS-B on the
    # exact gradient) moves this ML deviance, which is not stationary there, by ~1e-5
    f_ml = sparselmm.deviance_function("Reaction ~ Days + (Days | Subject)", sleepstudy, reml=False)
    assert f_ml([0.9667417739674123, 0.0151690588960361, 0.2309099532077945]) == pytest.approx(1751.985866432, abs=1e-8)
    assert m.deviance == pytest.approx(1751.985866432, abs=5e-5)
    # and the REML log-likelihood, lme4's logLik(m): -871.814135979976
    assert m.loglik == pytest.approx(-871.814135979976, abs=1e-8)


def test_sleepstudy_ml_published(sleepstudy):
    m = lmer("Reaction ~ Days + (Days | Subject)", sleepstudy, reml=False)
    assert digits(m.objective, 1751.9393, 4)
    assert m.deviance == pytest.approx(m.objective)
    assert m.loglik == pytest.approx(-m.objective / 2)
    assert m.aic == pytest.approx(m.objective + 2 * 6)
    assert m.df_resid == 174


def test_dyestuff_published():
    m = lmer("Yield ~ 1 + (1 | Batch)", datasets.load("Dyestuff"))
    # lme4's value 319.654276842342; ours may only be lower (a tighter optimum), never higher
    assert m.objective <= 319.654276842342 + 1e-9
    assert m.objective == pytest.approx(319.654276842342, abs=1e-9)
    assert digits(m.theta[0], 0.84832, 5)


def test_dyestuff2_singular():
    with pytest.warns(SingularFitWarning, match="singular"):
        m = lmer("Yield ~ 1 + (1 | Batch)", datasets.load("Dyestuff2"))
    assert digits(m.objective, 161.8283, 4)
    assert m.theta[0] == 0.0
    assert m.is_singular()
    assert "boundary (singular) fit" in str(m.summary())


def test_penicillin_published():
    m = lmer("diameter ~ 1 + (1 | plate) + (1 | sample)", datasets.load("Penicillin"))
    assert digits(m.objective, 330.8606, 4)
    assert m.design.theta_names() == ["plate.(Intercept)", "sample.(Intercept)"]


def test_pastes_nested_published():
    m = lmer("strength ~ 1 + (1 | batch/cask)", datasets.load("Pastes"))
    assert digits(m.objective, 246.9907, 4)
    assert list(m.ranef()) == ["cask:batch", "batch"]  # lme4's names and order
    assert m.ngroups == {"cask:batch": 30, "batch": 10}


def test_insteval_ml_published():
    m = lmer("y ~ 1 + service + (1|s) + (1|d) + (1|dept:service)", datasets.load("InstEval"), reml=False)
    assert digits(m.objective, 237651.78, 2)


def _sleep_fit(df):
    return lmer("Reaction ~ Days + (Days | Subject)", df)


def test_row_order_invariance(sleepstudy):
    ref = _sleep_fit(sleepstudy)
    shuffled = sleepstudy.sample(frac=1.0, random_state=3).reset_index(drop=True)
    m = _sleep_fit(shuffled)
    assert m.objective == pytest.approx(ref.objective, rel=1e-9)
    np.testing.assert_allclose(m.fixef, ref.fixef, rtol=1e-6)


def test_level_labels_invariance(sleepstudy):
    ref = _sleep_fit(sleepstudy)
    relabelled = sleepstudy.assign(Subject=sleepstudy["Subject"].astype(str).map(lambda s: f"zz{999 - int(s)}"))
    m = _sleep_fit(relabelled)
    assert m.objective == pytest.approx(ref.objective, rel=1e-9)
    np.testing.assert_allclose(m.fixef, ref.fixef, rtol=1e-6)
    as_int = sleepstudy.assign(Subject=sleepstudy["Subject"].astype(str).astype(int))
    assert _sleep_fit(as_int).objective == pytest.approx(ref.objective, rel=1e-9)


def test_caller_data_not_modified(sleepstudy):
    before = sleepstudy.copy(deep=True)
    _sleep_fit(sleepstudy)
    pd.testing.assert_frame_equal(sleepstudy, before)


def test_results_api(sleepstudy):
    m = _sleep_fit(sleepstudy)
    re = m.ranef()["Subject"]
    assert list(re.columns) == ["Intercept", "Days"] and len(re) == 18
    cv = m.ranef(cond_var=True)["Subject"]
    assert cv.attrs["cond_var"].shape == (18, 2, 2)
    vc = m.varcorr
    assert list(vc["group"]) == ["Subject", "Subject", "Subject", "Residual"]
    assert vc["sdcor"].iloc[-1] == pytest.approx(m.sigma)
    assert vc["sdcor"].iloc[2] == pytest.approx(0.0656, abs=5e-4)  # lme4: Corr 0.07 (0.06556)
    coef = m.coef()["Subject"]
    np.testing.assert_allclose(coef["Days"], m.fixef["Days"] + re["Days"])
    np.testing.assert_allclose(m.fitted() + m.residuals(), m.y)
    np.testing.assert_allclose(m.predict(), m.fitted())
    np.testing.assert_allclose(m.predict(re_form="~0"), m.X @ m.fixef.to_numpy())
    np.testing.assert_allclose(m.predict(sleepstudy), m.fitted())
    two = lmer("Reaction ~ Days + (1 | Subject) + (0 + Days | Subject)", sleepstudy)
    codes = sleepstudy["Subject"].cat.codes.to_numpy()
    np.testing.assert_allclose(
        two.predict(sleepstudy, re_form="~(1 | Subject)"),
        two.predict(sleepstudy, re_form="~0") + two.ranef()["Subject"]["Intercept"].to_numpy()[codes],
    )
    with pytest.raises(sparselmm.FormulaError, match="not in the model"):
        m.predict(sleepstudy, re_form="~(1 | Subject)")
    assert m.Z.shape == (180, 36) and m.Lambda.shape == (36, 36)
    np.testing.assert_allclose(m.Z @ m.b, m.fitted() - m.X @ m.fixef.to_numpy())
    assert m.vcov.shape == (2, 2)
    info = m.optinfo
    assert info.n_evals > 0 and info.setup_seconds > 0 and info.optimize_seconds > 0
    np.testing.assert_array_equal(info.theta_start, [1.0, 0.0, 1.0])
    text = str(m.summary())
    for piece in (
        "REML criterion at convergence: 1743.6",
        "Subject  (Intercept)",
        "Number of obs: 180",
        "Correlation of Fixed Effects",
        "t value",
    ):
        assert piece in text


def test_predict_new_levels(sleepstudy):
    m = _sleep_fit(sleepstudy)
    new = pd.DataFrame({"Days": [1.0, 2.0], "Subject": ["308", "NEW"]})
    with pytest.raises(sparselmm.DataError, match="allow_new_levels"):
        m.predict(new)
    p = m.predict(new, allow_new_levels=True)
    assert p[1] == pytest.approx(m.fixef["Intercept"] + 2 * m.fixef["Days"])
    assert p[0] == pytest.approx(m.predict(sleepstudy.iloc[[1]]).iloc[0])  # row 1: Subject 308, Days 1


def test_predict_refuses_an_unseen_fixed_effect_level():
    """R's predict refuses a new level of a fixed-effect factor ("factor cond has new level D"); formulaic
    would code it as an all-zero row, i.e. silently predict the reference level (issue 23 item 2)."""
    data = pd.read_csv(Path(__file__).resolve().parents[1] / "validation" / "data" / "maximal_3cond.csv")
    m = sparselmm.lmer("rt ~ cond + freq + (1|subj) + (1 + cond|item)", data)
    new = pd.DataFrame({"cond": ["D"], "freq": [0.1], "subj": ["s1"], "item": ["i1"]})
    with pytest.raises(sparselmm.DataError, match=r"column 'cond' has level\(s\) \['D'\]"):
        m.predict(new)
    with pytest.raises(sparselmm.DataError, match="'cond'"):
        m.predict(new, re_form="~0")
    ok = new.assign(cond="B")
    assert np.isfinite(np.asarray(m.predict(ok))).all()


def test_weights_equal_duplication_at_fixed_theta(sleepstudy):
    """Weight 2 and a duplicated row carry the same information about β and b at a given θ
    (σ differs by design: the duplicate adds n residuals), so the PLS solutions agree exactly."""
    doubled = pd.concat([sleepstudy, sleepstudy], ignore_index=True)
    f_dup = sparselmm.deviance_function("Reaction ~ Days + (Days | Subject)", doubled, reml=False)
    f_w = sparselmm.deviance_function(
        "Reaction ~ Days + (Days | Subject)", sleepstudy, reml=False, weights=np.full(180, 2.0)
    )
    for theta in ([0.9, 0.05, 0.2], [0.3, -0.1, 0.5]):
        a, b = f_dup.solve(theta), f_w.solve(theta)
        np.testing.assert_allclose(b.beta, a.beta, rtol=1e-10)
        assert b.pwrss == pytest.approx(a.pwrss, rel=1e-10)
        np.testing.assert_allclose(f_w.spherical_modes(b), f_dup.spherical_modes(a), rtol=1e-8, atol=1e-10)


def test_rank_deficient_columns_dropped():
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"g": np.repeat(np.arange(20), 5), "x1": rng.normal(size=100), "x2": rng.normal(size=100)})
    df["x3"] = df.x1 + df.x2
    df["y"] = df.x1 + rng.normal(size=100) + np.repeat(rng.normal(size=20), 5)
    with pytest.warns(sparselmm.RankDeficiencyWarning, match="dropping 1 column"):
        m = lmer("y ~ x1 + x2 + x3 + (1 | g)", df)
    assert list(m.fixef.index) == ["Intercept", "x1", "x2"]
    assert m.design.dropped_columns == ["x3"]


def test_theta_order_sorted_by_levels_like_lme4():
    df = datasets.load("Pastes")
    m = sparselmm.deviance_function("strength ~ 1 + (1 | batch) + (1 | batch:cask)", df)
    assert m.design.theta_names() == ["batch:cask.(Intercept)", "batch.(Intercept)"]


def test_optimizers_agree(sleepstudy):
    ref = _sleep_fit(sleepstudy)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for opt in ("nelder_mead", "lbfgsb"):
            m = lmer("Reaction ~ Days + (Days | Subject)", sleepstudy, optimizer=opt)
            assert m.objective == pytest.approx(ref.objective, rel=1e-6)


def test_moment_start_matches_lme4():
    # lme4 1.1-31's starting theta for InstEval's intercept-only model (traced from mkLmerDevfun's start
    # heuristic): 0.3641439 0.4900189 0.1399384
    from sparselmm.start import moment_start

    f = sparselmm.deviance_function("y ~ 1 + service + (1|s) + (1|d) + (1|dept:service)", datasets.load("InstEval"))
    np.testing.assert_allclose(moment_start(f.design), [0.3641439, 0.4900189, 0.1399384], atol=5e-8)
    g = sparselmm.deviance_function("Reaction ~ Days + (Days | Subject)", datasets.load("sleepstudy"))
    np.testing.assert_array_equal(moment_start(g.design), [1.0, 0.0, 1.0])  # slopes: lme4's default start


def test_facade_predict_refuses_an_unseen_level():
    """The statsmodels facade's predict shares the check (patsy refuses a new level too)."""
    data = pd.read_csv(Path(__file__).resolve().parents[1] / "validation" / "data" / "maximal_3cond.csv")
    res = sparselmm.mixedlm("rt ~ cond + freq", data, groups="subj").fit()
    with pytest.raises(sparselmm.DataError, match="column 'cond' has level"):
        res.predict(pd.DataFrame({"cond": ["D"], "freq": [0.0]}))
