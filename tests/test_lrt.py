"""Likelihood-ratio tables (lme4's ``anova(m0, m1, ...)``) and ``drop1`` against lme4.

References: ``validation/reference_ci/anova.json`` and ``drop1.json`` (``Rscript validation/run_lme4_ci.R
anova drop1``; lme4 1.1-31).

Tolerances: logLik, deviance, AIC, BIC to 1e-6 relative and Chisq to 1e-6 absolute + 1e-5 relative (both
sides reach the ML optimum to ~1e-8 in the deviance; Chisq is a difference of deviances of order 1e3);
p-values to 1e-4 relative (they follow from Chisq); npar and Df exactly.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import REFERENCE_CI as REF
from helpers import ROOT
from helpers import reference_ci_fit as fit

import sparselmm
from sparselmm.errors import DataError, ModelSpecError
from sparselmm.inference.lrt import check_nested, drop1, likelihood_ratio_table

ANOVA = json.loads((REF / "anova.json").read_text())
DROP1 = json.loads((REF / "drop1.json").read_text())
RTOL = 1e-6


def column(ref: dict, name: str) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in ref["values"][name]], dtype=float)


def assert_close(got, want, rtol=RTOL, atol=0.0):
    got = np.asarray(got, dtype=float)
    assert np.array_equal(np.isnan(got), np.isnan(want))
    ok = ~np.isnan(want)
    np.testing.assert_allclose(got[ok], want[ok], rtol=rtol, atol=atol)


@pytest.mark.parametrize("case_id", list(ANOVA["cases"]))
def test_anova_table_matches_lme4(case_id):
    ref = ANOVA["cases"][case_id]
    ids = ref["models"]
    table = likelihood_ratio_table([fit(i) for i in ids], names=ids)
    assert list(table.index) == ref["rows"]
    assert list(table.columns) == ref["columns"]
    np.testing.assert_array_equal(table["npar"], column(ref, "npar"))
    assert_close(table["Df"], column(ref, "Df"), rtol=0)
    for name in ("AIC", "BIC", "logLik", "deviance"):
        assert_close(table[name], column(ref, name))
    assert_close(table["Chisq"], column(ref, "Chisq"), rtol=1e-5, atol=1e-6)
    assert_close(table["Pr(>Chisq)"], column(ref, "Pr(>Chisq)"), rtol=1e-4, atol=1e-300)
    refitted = bool(table.attrs["refitted"])
    assert refitted == any("refitting" in msg for msg in ref["messages"])
    assert (table.attrs["note"] == "refitting model(s) with ML (instead of REML)") == refitted


@pytest.mark.parametrize("case_id", list(DROP1["cases"]))
def test_drop1_matches_lme4(case_id):
    ref = DROP1["cases"][case_id]
    table = drop1(fit(ref["model"]), test=ref["test"])
    assert list(table.index) == ref["rows"]
    assert list(table.columns) == ref["columns"]
    assert_close(table["npar"], column(ref, "npar"), rtol=0)
    assert_close(table["AIC"], column(ref, "AIC"))
    if ref["test"] == "Chisq":
        assert_close(table["LRT"], column(ref, "LRT"), rtol=1e-5, atol=1e-6)
        assert_close(table["Pr(Chi)"], column(ref, "Pr(Chi)"), rtol=1e-4, atol=1e-300)


def test_drop1_method_and_scope():
    m = fit("cake_reml")
    table = m.drop1(test="Chisq", scope=["temp"])
    assert list(table.index) == ["<none>", "temp"]
    with pytest.raises(ModelSpecError, match="not fixed-effect terms"):
        m.drop1(scope=["tmp"])
    with pytest.raises(ModelSpecError, match="test="):
        m.drop1(test="F")


def test_anova_accepts_a_dict_and_leaves_the_fits_alone():
    m0, m1 = fit("sleep_int_reml"), fit("sleep_slopes_reml")
    before = (m0.objective, m1.objective, m1.theta.copy())
    table = likelihood_ratio_table({"small": m0, "big": m1})
    assert list(table.index) == ["small", "big"]
    assert table.attrs["refitted"] == ["small", "big"]
    assert table.attrs["heading"][2] == "small: Reaction ~ Days + (1|Subject)"
    assert (m0.objective, m1.objective) == before[:2] and np.array_equal(m1.theta, before[2])
    assert m1.reml and m1.deviance_function(m1.theta) == m1.objective


def test_anova_without_refit_warns_on_mixed_criteria():
    with pytest.warns(UserWarning, match="REML"):
        table = likelihood_ratio_table([fit("sleep_int_reml"), fit("sleep_slopes_ml")], refit=False)
    assert table.attrs["refitted"] == []


def test_models_fitted_to_different_rows_are_refused():
    sleep = sparselmm.datasets.load("sleepstudy")
    other = sleep.copy()
    other["Reaction"] = other["Reaction"] + 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m_other = sparselmm.lmer("Reaction ~ Days + (Days|Subject)", other)
        m_fewer = sparselmm.lmer("Reaction ~ Days + (Days|Subject)", sleep.iloc[:170])
    with pytest.raises(DataError, match="different response values"):
        likelihood_ratio_table([fit("sleep_int_reml"), m_other])
    with pytest.raises(DataError, match="numbers of rows"):
        likelihood_ratio_table([fit("sleep_int_reml"), m_fewer])


def test_models_that_are_not_nested_are_refused():
    # same npar, different fixed effects
    a, b = fit("crossed_x_ml"), fit("crossed_ml")
    assert check_nested(a, b) is None
    assert "fixed-effect column" in check_nested(b, a)
    # a correlated term is not nested in two uncorrelated ones, whatever the parameter count says
    slopes, uncorr = fit("sleep_slopes_ml"), fit("sleep_uncorr_ml")
    assert check_nested(uncorr, slopes) is None
    assert "random-effects term" in check_nested(slopes, uncorr)
    # different random terms with the same number of parameters
    pen_sample = fit("penicillin_sample_ml")
    data = sparselmm.datasets.load("Penicillin")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pen_plate = sparselmm.lmer("diameter ~ 1 + (1|plate)", data, reml=False)
    with pytest.raises(ModelSpecError, match="not nested"):
        likelihood_ratio_table([pen_sample, pen_plate])
    table = likelihood_ratio_table([pen_sample, pen_plate], check_nested_models=False)
    assert np.isnan(table["Pr(>Chisq)"].iloc[1]) and table["Df"].iloc[1] == 0


def test_nested_grouping_is_recognised_by_partition_not_name():
    pastes = sparselmm.datasets.load("Pastes")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        small = sparselmm.lmer("strength ~ 1 + (1|batch)", pastes)
        big = sparselmm.lmer("strength ~ 1 + (1|batch/cask)", pastes)
        renamed = pastes.assign(b2=pastes["batch"].astype(str) + "_x")
        small2 = sparselmm.lmer("strength ~ 1 + (1|b2)", renamed)
    assert check_nested(small, big) is None
    assert check_nested(small2, big) is None
    assert check_nested(big, small) is not None


def test_bad_model_lists():
    with pytest.raises(ModelSpecError, match="at least two"):
        likelihood_ratio_table([fit("sleep_int_ml")])
    with pytest.raises(ModelSpecError, match="distinct name"):
        likelihood_ratio_table([fit("sleep_int_ml"), fit("sleep_slopes_ml")], names=["a", "a"])
    with pytest.raises(ModelSpecError, match="not a fit"):
        likelihood_ratio_table([fit("sleep_int_ml"), "model"])


def test_parametric_bootstrap_lrt():
    """pbkrtest's PBmodcomp: the simulated null distribution of the LRT has the known shape.

    For a fixed effect the LRT is close to χ²₁ (mean 1, SD √2: 4.5 Monte-Carlo SEs at nsim = 300 is 0.37);
    for a variance component on the boundary about half the draws are 0 (the 50:50 χ²₀/χ²₁ mixture).
    """
    sleep_small = fit("sleep_noslope_ml")  # Reaction ~ 1 + (Days|Subject)
    table = sleep_small.bootstrap_lrt(fit("sleep_slopes_ml"), nsim=300, seed=5)
    assert list(table.index) == ["LRT", "PBtest"] and list(table.columns) == ["stat", "df", "p.value"]
    draws = np.array(table.attrs["draws"])
    assert table.attrs["failures"] == 0 and np.all(draws >= 0)
    assert abs(draws.mean() - 1.0) < 0.37
    observed = table.loc["LRT", "stat"]
    assert table.loc["PBtest", "p.value"] == pytest.approx((1 + np.sum(draws > observed)) / (1 + np.sum(draws > 0)))
    anova = likelihood_ratio_table([sleep_small, fit("sleep_slopes_ml")])
    assert observed == pytest.approx(anova["Chisq"].iloc[1], rel=1e-6)
    assert table.loc["LRT", "p.value"] == pytest.approx(anova["Pr(>Chisq)"].iloc[1], rel=1e-5)
    # reproducible, also with two workers
    again = sleep_small.bootstrap_lrt(fit("sleep_slopes_ml"), nsim=300, seed=5, n_jobs=2)
    np.testing.assert_array_equal(again.attrs["draws"], table.attrs["draws"])
    pen = fit("penicillin_sample_ml").bootstrap_lrt(fit("penicillin_ml"), nsim=200, seed=1)
    zeros = np.mean(np.array(pen.attrs["draws"]) < 1e-6)
    assert 0.35 < zeros < 0.75
    # pbkrtest's order, PBmodcomp(large, small), is accepted: the smaller model is the null (issue 23 item 8)
    swapped = fit("penicillin_ml").bootstrap_lrt(fit("penicillin_sample_ml"), nsim=5, seed=1)
    assert swapped.loc["LRT", "stat"] == pen.loc["LRT", "stat"]
    plate = sparselmm.lmer("diameter ~ 1 + (1|plate)", sparselmm.datasets.load("Penicillin"), reml=False)
    with pytest.raises(ModelSpecError, match="not nested"):
        plate.bootstrap_lrt(fit("penicillin_sample_ml"), nsim=5)
    with pytest.raises(ModelSpecError, match="nsim"):
        fit("penicillin_sample_ml").bootstrap_lrt(fit("penicillin_ml"), nsim=0)


# ---- refits reach a fresh fit's optimum (issue 23 item 1) ---------------------------------------------
def test_drop1_and_anova_refits_reach_fresh_fits():
    """On this maximal design (validation/data/maximal_3cond.csv) drop1's reduced fits, warm-started from the
    full model's θ̂ alone, stopped 0.49 (cond) and 1.0 (freq) deviance units above fresh fits of the reduced
    models; every refit now also starts where a fresh fit starts and keeps the lower optimum."""
    data = pd.read_csv(ROOT / "validation" / "data" / "maximal_3cond.csv")
    re = "(1 + cond|subj) + (1 + cond|item)"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        full = fit("maximal_reml")
        table = drop1(full, test="Chisq")
        fresh = {
            "<none>": sparselmm.lmer(f"rt ~ cond + freq + {re}", data, reml=False),
            "cond": sparselmm.lmer(f"rt ~ freq + {re}", data, reml=False),
            "freq": sparselmm.lmer(f"rt ~ cond + {re}", data, reml=False),
        }
        lrt = likelihood_ratio_table([fresh["cond"], full])
    for term, m in fresh.items():
        deviance = table.loc[term, "AIC"] - 2 * m.n_params
        assert deviance <= m.objective + 1e-6 * abs(m.objective), term
    assert full.refit_ml().objective <= fresh["<none>"].objective + 1e-6 * fresh["<none>"].objective
    assert lrt["Chisq"].iloc[1] == pytest.approx(table.loc["cond", "LRT"], rel=1e-6)


# ---- glmer fits: anova(g0, g1) and drop1 (issue 20 item 3) ---------------------------------------------------
def _cbpp():
    d = pd.read_csv(Path(__file__).parents[1] / "validation" / "data" / "glmm_cbpp.csv")
    d["herd"] = d["herd"].astype(str)
    d["period"] = d["period"].astype(str)
    return d


def test_glmer_likelihood_ratio_table_and_drop1_match_lme4():
    # R 4.2.2, lme4 1.1-31, PIRLS converged tightly as sparselmm's (control = glmerControl(tolPwrss = 1e-12)):
    # g1 <- glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), cbpp, binomial, control = ctl)
    # g0 <- update(g1, . ~ . - period); anova(g0, g1); drop1(g1, test = "Chisq")
    from sparselmm.inference.lrt import drop1

    d = _cbpp()
    g1 = sparselmm.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)", d, family="binomial")
    g0 = sparselmm.glmer("cbind(incidence, size - incidence) ~ 1 + (1 | herd)", d, family="binomial")
    table = sparselmm.anova(g0, g1)
    np.testing.assert_array_equal(table["npar"], [2, 5])
    np.testing.assert_allclose(table["logLik"], [-104.83131359, -92.02628187], atol=1e-6)
    assert table["Chisq"].iloc[1] == pytest.approx(25.61006344, abs=1e-5)
    assert table["Pr(>Chisq)"].iloc[1] == pytest.approx(1.150936697e-05, rel=1e-5)
    d1 = drop1(g1, test="Chisq")
    assert list(d1.index) == ["<none>", "period"]
    np.testing.assert_allclose(d1["AIC"], [194.0525637, 213.6626272], atol=1e-6)
    assert d1["LRT"].iloc[1] == pytest.approx(25.61006344, abs=1e-5)


def test_lmer_and_glmer_fits_are_not_compared():
    d = _cbpp()
    d["prop"] = d["incidence"] / d["size"]
    g = sparselmm.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)", d, family="binomial")
    m = sparselmm.lmer("prop ~ 1 + (1 | herd)", d)
    with pytest.raises(ModelSpecError, match="different kinds"):
        sparselmm.anova(m, g)


def test_glmer_anova_of_one_fit_says_what_to_do():
    g = sparselmm.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)", _cbpp(), family="binomial")
    with pytest.raises(ModelSpecError, match="second fit"):
        g.anova()
    # profile intervals of glmer fits exist now (tests/test_glmer_profile.py); an nAGQ=0 fit has none
    g0 = sparselmm.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)", _cbpp(), family="binomial", nAGQ=0)
    with pytest.raises(ModelSpecError, match="nAGQ=1"):
        g0.confint(method="profile")
