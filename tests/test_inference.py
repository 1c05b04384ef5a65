"""Fixed-effect inference on lmer fits (sparselmm/inference/): summary with df and p-values, contest,
anova, and the bad inputs each must refuse with a clear error.

Reference numbers: lmerTest 3.1-3 / pbkrtest 0.5.2 on R 4.2.2 (``summary(m)``,
``summary(m, ddf = "Kenward-Roger")`` with ``m <- lmer(Reaction ~ Days + (Days|Subject), sleepstudy)``);
DESIGN.md lists the sleepstudy Satterthwaite values. Case-by-case comparisons against lmerTest and
pbkrtest are in tests/test_inference_validation.py.
"""

import numpy as np
import pytest

import sparselmm
from sparselmm.errors import ModelSpecError

LME4_THETA = [0.9667417739674123, 0.0151690588960361, 0.2309099532077945]  # lme4 1.1-31's θ̂ (REML)


@pytest.fixture(scope="module")
def sleep_fit():
    return sparselmm.lmer("Reaction ~ Days + (Days|Subject)", sparselmm.datasets.load("sleepstudy"))


@pytest.fixture(scope="module")
def sleep_at_lme4():
    """The model at lme4's θ̂ (no optimisation): lmerTest's numbers are evaluated there."""
    from sparselmm.optimize import OptInfo
    from sparselmm.results import LmerResult

    f = sparselmm.deviance_function("Reaction ~ Days + (Days|Subject)", sparselmm.datasets.load("sleepstudy"))
    theta = np.array(LME4_THETA)
    return LmerResult(f, f.solve(theta), OptInfo("none", 0, True, "lme4's θ̂", theta))


def test_coef_table_satterthwaite(sleep_at_lme4, sleep_fit):
    tab = sleep_at_lme4.coef_table()
    assert list(tab.columns) == ["Estimate", "Std. Error", "df", "t value", "Pr(>|t|)"]
    np.testing.assert_allclose(tab["df"], [16.9997262885, 16.9999837256], rtol=1e-6)
    assert tab.loc["Days", "t value"] == pytest.approx(6.771481489, rel=1e-6)
    assert tab.loc["Days", "Pr(>|t|)"] == pytest.approx(3.26382446993e-06, rel=1e-5)
    # sparselmm's own optimum has a REML criterion 1.5e-9 lower than lme4's; this balanced design's df
    # (exactly 17 in theory) are that sensitive to θ̂: 17.0000003 there
    np.testing.assert_allclose(sleep_fit.coef_table()["df"], [16.9997262885, 16.9999837256], rtol=5e-5)


def test_coef_table_kenward_roger(sleep_at_lme4):
    tab = sleep_at_lme4.coef_table(ddf="Kenward-Roger")
    np.testing.assert_allclose(tab["df"], [17.0, 17.0], rtol=1e-8)
    np.testing.assert_allclose(tab["Std. Error"], [6.82459669495, 1.54578964391], rtol=1e-6)
    assert tab.loc["Days", "Pr(>|t|)"] == pytest.approx(3.26380801815e-06, rel=1e-5)


def test_coef_table_lme4_has_no_df(sleep_fit):
    tab = sleep_fit.coef_table(ddf="lme4")
    assert list(tab.columns) == ["Estimate", "Std. Error", "t value"]


def test_summary_prints_df_and_p_values(sleep_fit):
    text = str(sleep_fit.summary())
    assert "t-tests use Satterthwaite's method" in text
    assert "Pr(>|t|)" in text and "3.26e-06 ***" in text
    assert "Kenward-Roger's method" in str(sleep_fit.summary(ddf="KR"))
    assert "Pr(>|t|)" not in str(sleep_fit.summary(ddf="lme4"))


def test_contest_one_row_equals_coefficient_test(sleep_fit):
    t = sleep_fit.contest([0, 1], joint=False)
    row = sleep_fit.coef_table().loc["Days"]
    assert t.loc[0, "df"] == pytest.approx(row["df"])
    assert t.loc[0, "t value"] == pytest.approx(row["t value"])
    assert t.loc[0, "lower"] < row["Estimate"] < t.loc[0, "upper"]
    F = sleep_fit.contest([0, 1])
    assert F.loc[0, "F value"] == pytest.approx(row["t value"] ** 2)
    assert F.loc[0, "NumDF"] == 1 and F.loc[0, "DenDF"] == pytest.approx(row["df"])


def test_contest_rhs_and_names(sleep_fit):
    import pandas as pd

    by_name = sleep_fit.contest(pd.Series({"Days": 1.0}), joint=False, rhs=10.0)
    assert by_name.loc[0, "t value"] == pytest.approx((sleep_fit.fixef["Days"] - 10) / sleep_fit.bse["Days"])


def test_rank_deficient_contrast_tests_its_row_space(sleep_fit):
    full = sleep_fit.contest(np.eye(2))
    doubled = sleep_fit.contest(np.array([[1.0, 0], [0, 1], [1, 1]]))
    assert doubled.loc[0, "NumDF"] == 2
    assert doubled.loc[0, "F value"] == pytest.approx(full.loc[0, "F value"], rel=1e-10)
    kr = sleep_fit.contest(np.array([[1.0, 0], [0, 1], [1, 1]]), ddf="KR")
    assert kr.loc[0, "NumDF"] == 2


@pytest.mark.parametrize(
    "L,match",
    [
        ([1.0, 0.0, 0.0], "p = 2 fixed effects"),
        ([[0.0, 0.0]], "zero"),
        ([[np.nan, 1.0]], "missing or infinite"),
        ([["a", "b"]], "numeric"),
    ],
)
def test_bad_contrasts_are_refused(sleep_fit, L, match):
    with pytest.raises(ModelSpecError, match=match):
        sleep_fit.contest(L)


def test_unknown_names_are_refused(sleep_fit):
    import pandas as pd

    with pytest.raises(ModelSpecError, match="'Dayz'"):
        sleep_fit.contest(pd.Series({"Dayz": 1.0}))
    with pytest.raises(ModelSpecError, match="not a fixed-effect term"):
        sleep_fit.contest("Dayz")


def test_rank_deficient_contrast_with_rhs_is_refused(sleep_fit):
    with pytest.raises(ModelSpecError, match="rank 1"):
        sleep_fit.contest([[1.0, 0.0], [2.0, 0.0]], rhs=[1.0, 3.0])


def test_unknown_ddf_and_type_are_refused(sleep_fit):
    with pytest.raises(ModelSpecError, match="ddf='Wald'"):
        sleep_fit.coef_table(ddf="Wald")
    with pytest.raises(ModelSpecError, match="type=4"):
        sleep_fit.anova(type=4)


def test_kenward_roger_needs_reml():
    m = sparselmm.lmer("Reaction ~ Days + (Days|Subject)", sparselmm.datasets.load("sleepstudy"), reml=False)
    with pytest.raises(ModelSpecError, match="only defined for REML fits"):
        m.coef_table(ddf="Kenward-Roger")
    # the summary falls back to lme4's table and says why
    text = str(m.summary(ddf="Kenward-Roger"))
    assert "only defined for REML fits" in text
    assert m.coef_table()["df"].notna().all()  # Satterthwaite works on ML fits


def test_inference_is_computed_once(sleep_fit):
    sleep_fit.coef_table()
    cached = sleep_fit._inference_cache["Satterthwaite"]
    sleep_fit.contest([1, 1])
    assert sleep_fit._inference_cache["Satterthwaite"] is cached


def test_statsmodels_facade_offers_the_same_df_on_request(sleep_fit):
    r = sparselmm.mixedlm(
        "Reaction ~ Days", sparselmm.datasets.load("sleepstudy"), groups="Subject", re_formula="~Days"
    )
    res = r.fit()
    tab = res.coef_table()
    # the facade's optimiser stops at a θ̂ within ~1e-5 of lmer's; df and SEs follow to that accuracy
    np.testing.assert_allclose(tab["df"], sleep_fit.coef_table()["df"], rtol=1e-4)
    np.testing.assert_allclose(tab["Std. Error"], sleep_fit.bse, rtol=1e-4)
    assert res.pvalues.iloc[1] == pytest.approx(2 * __import__("scipy").stats.norm.sf(abs(res.tvalues.iloc[1])))
    kr = res.contest([0, 1], ddf="Kenward-Roger", joint=False)
    assert kr.loc[0, "df"] == pytest.approx(17.0, rel=1e-6)


def test_anova_type3_with_poly_matches_lmertest():
    """``poly(x, 2)`` (a stateful transform whose variable formulaic does not report) in an interaction.

    lmerTest 3.1-3 on R 4.2.2: ``anova(lmer(y ~ f3*poly(x, 2) + (1|g), d))`` with d =
    tests/data/contrasts_sim.csv (written by tests/data/make_contrasts_lmertest.R).
    """
    import pandas as pd

    d = pd.read_csv(__import__("pathlib").Path(__file__).parent / "data" / "contrasts_sim.csv")
    tab = sparselmm.lmer("y ~ f3*poly(x, 2) + (1|g)", d).anova()
    assert list(tab.index) == ["f3", "poly(x, 2)", "f3:poly(x, 2)"]
    np.testing.assert_allclose(tab["NumDF"], [2, 2, 4])
    np.testing.assert_allclose(tab["DenDF"], [76.762163, 78.008107, 77.463564], rtol=1e-6)
    np.testing.assert_allclose(tab["F value"], [23.62038, 28.23333, 6.84484], rtol=1e-5)
    np.testing.assert_allclose(tab["Sum Sq"], [20.484512, 24.485045, 11.872229], rtol=1e-6)


def test_summary_default_skips_df_on_large_models(sleep_fit, monkeypatch):
    import sparselmm.summary as summ

    # sleepstudy has one term: nothing is left dense (dense_dimension 0), so only a negative limit skips
    monkeypatch.setattr(summ, "AUTO_DDF_MAX_DENSE", -1)
    text = str(sleep_fit.summary())
    assert "Pr(>|t|)" not in text and "summary(ddf='Satterthwaite')" in text
    assert "Pr(>|t|)" in str(sleep_fit.summary(ddf="Satterthwaite"))
