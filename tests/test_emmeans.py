"""sparselmm.emmeans, contrast, emtrends and joint_tests against R's emmeans, and their bad-input errors.

Reference values: R 4.2.2 Patched (2022-11-10 r83330), emmeans 1.8.4.1, lme4 1.1-31, lmerTest 3.1-3, pbkrtest
0.5.2, printed by validation/run_emmeans.R (cases in validation/emmeans_cases.json), e.g. for cake::

    m <- lmer(angle ~ recipe * temperature + (1|recipe:replicate), data = cake)
    summary(contrast(emmeans(m, ~ temperature, lmer.df = "satterthwaite"), "poly"))
    summary(pairs(emmeans(m, ~ recipe | temperature, lmer.df = "kenward-roger")))

factorial_crossed (validation/data/factorial_crossed.csv, cond/grp/subj/item as factors)::

    m <- lmer(y ~ cond * grp + x + (1 + x|subj) + (1|item), data = d)
    summary(emmeans(m, ~ cond, lmer.df = "satterthwaite"))
    summary(contrast(emmeans(m, ~ cond, lmer.df = "satterthwaite"), "trt.vs.ctrl"))

cbpp (validation/data/glmm_cbpp.csv, herd and period as factors)::

    g <- glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), data = d, family = binomial)
    summary(pairs(emmeans(g, ~ period, type = "response")))
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import sparselmm
from sparselmm import DataError, ModelSpecError
from sparselmm.inference.adjust import adjusted_p_values, p_adjust

DATA = Path(__file__).resolve().parents[1] / "validation" / "data"


@pytest.fixture(scope="module")
def cake_fit():
    return sparselmm.lmer("angle ~ recipe * temperature + (1|recipe:replicate)", sparselmm.datasets.load("cake"))


@pytest.fixture(scope="module")
def factorial_fit():
    d = pd.read_csv(DATA / "factorial_crossed.csv")
    return sparselmm.lmer("y ~ cond * grp + x + (1 + x|subj) + (1|item)", d)


@pytest.fixture(scope="module")
def cbpp_fit():
    d = pd.read_csv(DATA / "glmm_cbpp.csv")
    d["period"] = d["period"].astype(str)
    d["herd"] = d["herd"].astype(str)
    return sparselmm.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)", d, family="binomial")


def test_cake_emmeans_and_poly_contrasts(cake_fit):
    emm = sparselmm.emmeans(cake_fit, "temperature")
    tab = emm.to_frame()
    assert list(tab.columns) == ["temperature", "emmean", "SE", "df", "lower.CL", "upper.CL"]
    R_emmean = [
        27.9777777777774,
        29.9555555555552,
        31.4222222222219,
        32.1777777777775,
        35.8444444444441,
        35.3555555555552,
    ]
    np.testing.assert_allclose(tab["emmean"], R_emmean, rtol=1e-9)
    np.testing.assert_allclose(tab["SE"], 1.17669911794591, rtol=1e-7)
    np.testing.assert_allclose(tab["df"], 77.4368230826871, rtol=1e-6)
    np.testing.assert_allclose(tab["lower.CL"].iloc[0], 25.6348814029647, rtol=1e-7)
    con = sparselmm.contrast(emm, "poly").to_frame()
    assert con["contrast"].tolist() == ["linear", "quadratic", "cubic", "quartic", "degree 5"]
    np.testing.assert_allclose(
        con["estimate"], [55.3111111111111, -3.53333333333335, -7.35555555555554, -6.86666666666668, -14.5111111111111]
    )
    np.testing.assert_allclose(
        con["SE"], [5.64301527371661, 6.18161351552155, 9.04895562110568, 3.5689562272126, 10.7068686816378], rtol=1e-7
    )
    np.testing.assert_allclose(con["df"], 210.0, rtol=1e-6)
    np.testing.assert_allclose(con["p.value"].iloc[3], 0.0557065897033918, rtol=1e-5)


def test_cake_pairs_by_temperature_kenward_roger(cake_fit):
    emm = sparselmm.emmeans(cake_fit, "~ recipe | temperature", ddf="Kenward-Roger")
    tab = emm.to_frame()
    assert tab["temperature"].tolist()[:4] == ["175", "175", "175", "185"]
    np.testing.assert_allclose(tab["emmean"].iloc[:3], [29.1333333333322, 26.8666666666668, 27.9333333333334])
    np.testing.assert_allclose(tab["SE"], 2.03810265750379, rtol=1e-7)
    np.testing.assert_allclose(tab["df"], 77.4368234032383, rtol=1e-6)
    pairs = emm.pairs().to_frame()
    assert list(pairs.columns) == ["contrast", "temperature", "estimate", "SE", "df", "t.ratio", "p.value"]
    assert pairs["contrast"].tolist()[:3] == ["A - B", "A - C", "B - C"]
    np.testing.assert_allclose(pairs["estimate"].iloc[:3], [2.26666666666543, 1.19999999999885, -1.06666666666658])
    np.testing.assert_allclose(pairs["t.ratio"].iloc[:2], [0.786405613469763, 0.416332383601468], rtol=1e-7)
    text = str(emm)
    assert "temperature = 175:" in text and "Degrees-of-freedom method: kenward-roger" in text


def test_factorial_emmeans_and_dunnett(factorial_fit):
    # as fitted (sparselmm's θ̂ within 1e-5 of lme4's): tolerances of the fit, not of the algebra
    emm = sparselmm.emmeans(factorial_fit, "cond")
    tab = emm.to_frame()
    np.testing.assert_allclose(tab["emmean"], [0.953078784937512, 1.5849637151339, 1.09862219834992], rtol=1e-4)
    np.testing.assert_allclose(tab["df"], [33.3304279953942, 33.8567788482595, 33.3875042706444], rtol=1e-3)
    con = sparselmm.contrast(emm, "trt.vs.ctrl").to_frame()
    assert con["contrast"].tolist() == ["b - a", "c - a"]
    np.testing.assert_allclose(con["p.value"], [0.0241946037889562, 0.749498917063556], rtol=1e-3)
    mvt = emm.pairs(adjust="mvt").to_frame()  # Monte Carlo on both sides
    np.testing.assert_allclose(mvt["p.value"], [0.0327126542732455, 0.80611393750558, 0.115105199487338], atol=3e-3)


def test_glmer_response_scale_odds_ratios(cbpp_fit):
    emm = sparselmm.emmeans(cbpp_fit, "period", type="response")
    tab = emm.to_frame()
    assert list(tab.columns) == ["period", "prob", "SE", "df", "asymp.LCL", "asymp.UCL"]
    np.testing.assert_allclose(
        tab["prob"], [0.198049157275459, 0.0838732556676203, 0.0739734822137297, 0.0483906660762352], rtol=1e-4
    )
    np.testing.assert_allclose(tab["SE"].iloc[0], 0.0369227455072226, rtol=1e-3)
    np.testing.assert_allclose(tab["asymp.UCL"].iloc[0], 0.280316425175083, rtol=1e-4)
    assert np.all(np.isinf(tab["df"]))
    con = emm.pairs().to_frame()
    assert list(con.columns) == ["contrast", "odds.ratio", "SE", "df", "null", "z.ratio", "p.value"]
    assert con["contrast"].iloc[0] == "period1 / period2"
    np.testing.assert_allclose(con["odds.ratio"].iloc[:2], [2.69747427186049, 3.09152391884485], rtol=1e-4)
    np.testing.assert_allclose(con["z.ratio"].iloc[0], 3.23607840814089, rtol=1e-4)
    np.testing.assert_allclose(con["p.value"].iloc[0], 0.0066504439365711, rtol=1e-3)
    # the link scale is the default
    assert "emmean" in sparselmm.emmeans(cbpp_fit, "period").to_frame().columns


def test_emtrends_and_joint_tests_kenward_roger():
    d = pd.read_csv(DATA / "factorial_crossed.csv")
    m = sparselmm.lmer("y ~ cond * x + grp + (1|subj) + (1|item)", d)
    tr = sparselmm.emtrends(m, "cond", "x").to_frame()
    np.testing.assert_allclose(tr["x.trend"], [0.587304582987714, 0.380787975915921, 0.564023266630359], rtol=1e-6)
    jt = sparselmm.joint_tests(m, ddf="Kenward-Roger")
    assert jt["model term"].tolist() == ["cond", "x", "grp", "cond:x"]
    assert jt["df1"].tolist() == [2, 1, 1, 2]
    np.testing.assert_allclose(jt["df2"], [20.87, 651.74, 33.93, 648.04], atol=0.011)
    np.testing.assert_allclose(jt["F.ratio"], [3.661, 135.027, 0.074, 2.176], atol=2e-3)


def test_p_adjust_matches_r():
    # p.adjust(c(0.01, 0.04, 0.03, 0.2), "holm" / "BH" / "hochberg") in R 4.2.2
    p = np.array([0.01, 0.04, 0.03, 0.2])
    np.testing.assert_allclose(p_adjust(p, "holm"), [0.04, 0.09, 0.09, 0.2])
    np.testing.assert_allclose(p_adjust(p, "BH"), [0.04, 0.05333333333333334, 0.05333333333333334, 0.2])
    np.testing.assert_allclose(p_adjust(p, "hochberg"), [0.04, 0.08, 0.08, 0.2])
    # ptukey(sqrt(2) * 2.5, 3, 20, lower.tail = FALSE) in R 4.2.2
    p_t, used = adjusted_p_values([2.5, 0.1], [20.0, 20.0], "tukey", 3, "pairs")
    assert used == "tukey"
    np.testing.assert_allclose(p_t[0], 0.0531316559664355, rtol=1e-6)
    # Tukey on contrasts that are not pairwise comparisons falls back to Sidak, as emmeans does
    _, used = adjusted_p_values([2.5, 0.1], [20.0, 20.0], "tukey", 3, "contrast")
    assert used == "sidak"


def test_identity_link_response_is_the_link_scale(factorial_fit):
    a = sparselmm.emmeans(factorial_fit, "cond", ddf="asymptotic").to_frame()
    b = sparselmm.emmeans(factorial_fit, "cond", ddf="asymptotic", type="response").to_frame()
    pd.testing.assert_frame_equal(a, b)
    assert "asymp.LCL" in a.columns


def test_bad_input(factorial_fit, cbpp_fit):
    with pytest.raises(ModelSpecError, match=r"\['nope'\] is not in the reference grid"):
        sparselmm.emmeans(factorial_fit, "nope")
    with pytest.raises(ModelSpecError, match="not in the reference grid"):
        sparselmm.emmeans(factorial_fit, "cond", by="subj")
    with pytest.raises(DataError, match="at= names \\['z'\\]"):
        sparselmm.emmeans(factorial_fit, "cond", at={"z": 1})
    with pytest.raises(DataError, match="level"):
        sparselmm.emmeans(factorial_fit, "cond", at={"cond": ["a", "q"]})
    emm = sparselmm.emmeans(factorial_fit, "cond")
    with pytest.raises(ModelSpecError, match="adjust='tukee' is not known"):
        emm.pairs(adjust="tukee")
    with pytest.raises(ModelSpecError, match="method='pairs' is not known"):
        sparselmm.contrast(emm, "pairs")
    with pytest.raises(ModelSpecError, match="has 2 weights but there are 3 means"):
        sparselmm.contrast(emm, {"ab": [1, -1]})
    with pytest.raises(ModelSpecError, match="ref='z' names no level"):
        sparselmm.contrast(emm, "trt.vs.ctrl", ref="z")
    with pytest.raises(ModelSpecError, match="type='probability' is not known"):
        sparselmm.emmeans(factorial_fit, "cond", type="probability")
    with pytest.raises(ModelSpecError, match="weights='even' is not known"):
        sparselmm.emmeans(factorial_fit, "cond", weights="even")
    with pytest.raises(ModelSpecError, match="ddf='Wald' is not known"):
        sparselmm.emmeans(factorial_fit, "cond", ddf="Wald")
    with pytest.raises(ModelSpecError, match="asymptotic"):
        sparselmm.emmeans(cbpp_fit, "period", ddf="Kenward-Roger")
    with pytest.raises(ModelSpecError, match="not a numeric predictor"):
        sparselmm.emtrends(factorial_fit, "cond", "grp")
    with pytest.raises(ModelSpecError, match="by=\\['subj'\\]"):
        sparselmm.joint_tests(factorial_fit, by="subj")
    with pytest.raises(ModelSpecError, match="emmeans takes a fit"):
        sparselmm.emmeans(object(), "cond")


def test_non_estimable_means_of_a_rank_deficient_fit():
    # R: the cell cond = c, grp = trt removed (validation/emmeans_cases.json, model fc_missing_cell);
    # summary(pairs(emmeans(m, ~ cond, lmer.df = "satterthwaite"), adjust = "holm"))
    d = pd.read_csv(DATA / "factorial_crossed.csv")
    d = d[~((d["cond"] == "c") & (d["grp"] == "trt"))].reset_index(drop=True)
    with pytest.warns(sparselmm.RankDeficiencyWarning):
        m = sparselmm.lmer("y ~ cond * grp + x + (1|subj) + (1|item)", d)
    emm = sparselmm.emmeans(m, "cond")
    tab = emm.to_frame()
    np.testing.assert_allclose(tab["emmean"].iloc[:2], [0.955440176454344, 1.57822343559136], rtol=1e-5)
    assert np.isnan(tab["emmean"].iloc[2]) and np.isnan(tab["SE"].iloc[2])
    con = emm.pairs(adjust="holm").to_frame()
    np.testing.assert_allclose(con["estimate"].iloc[0], -0.622783259137011, rtol=1e-5)
    np.testing.assert_allclose(con["p.value"].iloc[0], 0.0569379379485444, rtol=1e-4)
    assert con["estimate"].iloc[1:].isna().all()
