"""Issue 23, items 4, 6 (statsmodels facade) and 9: every result pickles to a working object; the facade's
missing-value message names the right columns; tables and summaries print as lme4 / lmerTest print them."""

from __future__ import annotations

import io
import json
import pickle
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import sparselmm
import sparselmm.statsmodels as smx
from sparselmm.deviance import ProfiledDeviance
from sparselmm.errors import DataError
from sparselmm.linalg.factor import CholmodFactor

ROOT = Path(__file__).resolve().parent.parent
SLEEP = "Reaction ~ Days + (Days | Subject)"


def _roundtrip(obj):
    return pickle.loads(pickle.dumps(obj))


@pytest.fixture(scope="module")
def sleep_fit(sleepstudy):
    return sparselmm.lmer(SLEEP, sleepstudy, data_name="sleepstudy")


@pytest.fixture(scope="module")
def cbpp():
    sys.path.insert(0, str(ROOT / "validation"))
    import compare_glmm

    cases = json.loads((ROOT / "validation" / "glmm_cases.json").read_text())
    return compare_glmm.load(next(c for c in cases if c["id"] == "cbpp_logit"))


def _check_lmer_roundtrip(m, data):
    m2 = _roundtrip(m)
    assert type(m2) is type(m)
    assert "Random effects:" in str(m2.summary())
    pd.testing.assert_series_equal(m2.fixef, m.fixef)
    np.testing.assert_allclose(np.asarray(m2.predict(data)), np.asarray(m.predict(data)), rtol=1e-12)
    for g, re in m.ranef(cond_var=True).items():
        re2 = m2.ranef(cond_var=True)[g]
        pd.testing.assert_frame_equal(re2, re)
        np.testing.assert_allclose(re2.attrs["cond_var"], re.attrs["cond_var"], rtol=1e-8, atol=1e-12)
    pd.testing.assert_frame_equal(m2.confint(method="Wald"), m.confint(method="Wald"))
    return m2


# ---- item 4: pickling --------------------------------------------------------------------------------
@pytest.mark.parametrize("ordering", ["auto", "amd"])  # a dense-Schur factor, and CHOLMOD's (not picklable)
def test_lmer_result_pickles(sleepstudy, ordering):
    m = sparselmm.lmer(SLEEP, sleepstudy, ordering=ordering)
    m2 = _check_lmer_roundtrip(m, sleepstudy)
    assert m2.refit_ml().objective == pytest.approx(m.refit_ml().objective, rel=1e-10)
    _check_lmer_roundtrip(m2, sleepstudy)  # an unpickled result pickles again


def test_crossed_cholmod_lmer_pickles(sleepstudy):
    d = sleepstudy.assign(day=sleepstudy["Days"].astype(str))
    m = sparselmm.lmer("Reaction ~ 1 + (1 | Subject) + (1 | day)", d, ordering="metis")
    _check_lmer_roundtrip(m, d)


def test_glmer_result_pickles(cbpp):
    g = sparselmm.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)", cbpp, family="binomial")
    g2 = _roundtrip(g)
    assert "Random effects:" in str(g2.summary())
    pd.testing.assert_series_equal(g2.fixef, g.fixef)
    np.testing.assert_allclose(
        np.asarray(g2.predict(cbpp, type="response")), np.asarray(g.predict(cbpp, type="response"))
    )
    a, b = g.ranef(cond_var=True)["herd"], g2.ranef(cond_var=True)["herd"]
    pd.testing.assert_frame_equal(b, a)
    np.testing.assert_allclose(b.attrs["cond_var"], a.attrs["cond_var"], rtol=1e-8)
    pd.testing.assert_frame_equal(_roundtrip(g2).coef_table(), g.coef_table())


def test_streamed_result_pickles(sleepstudy):
    from sparselmm.scale import ChunkedFrames

    m = sparselmm.lmer(SLEEP, ChunkedFrames(sleepstudy, rows=50))
    m2 = _roundtrip(m)
    assert m2._source is None
    assert "Random effects:" in str(m2.summary())
    pd.testing.assert_series_equal(m2.fixef, m.fixef)
    np.testing.assert_allclose(np.asarray(m2.predict(sleepstudy)), np.asarray(m.predict(sleepstudy)))
    pd.testing.assert_frame_equal(m2.confint(method="Wald"), m.confint(method="Wald"))
    pd.testing.assert_frame_equal(m2.ranef()["Subject"], m.ranef()["Subject"])


def test_bootstrap_and_profile_pickle(sleep_fit):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        boot = sleep_fit.bootstrap(10, seed=1, progress=False)
        prof = sleep_fit.profile(which=[".sig01"], progress=False)
    boot2 = _roundtrip(boot)
    pd.testing.assert_frame_equal(boot2.draws, boot.draws)
    pd.testing.assert_frame_equal(boot2.confint(), boot.confint())
    prof2 = _roundtrip(prof)
    pd.testing.assert_frame_equal(prof2.confint(), prof.confint())


def times_two(x):
    return 2 * x


@pytest.fixture(scope="module")
def sm_fit(sleepstudy):
    model = sparselmm.mixedlm(
        "Reaction ~ np.log(Days + 1) + times_two(Days)", sleepstudy, groups="Subject", re_formula="~Days"
    )
    return model.fit()


def test_mixedlm_results_pickle(sm_fit, sleepstudy):
    # the model kept the caller's whole namespace (modules among it): only the names the formula reads remain
    assert set(sm_fit.model._context) == {"np", "times_two"}
    r2 = _roundtrip(sm_fit)
    assert "Mixed Linear Model Regression Results" in str(r2.summary())
    pd.testing.assert_series_equal(r2.params, sm_fit.params)
    pd.testing.assert_series_equal(r2.bse, sm_fit.bse)
    pd.testing.assert_series_equal(r2.predict(sleepstudy.head()), sm_fit.predict(sleepstudy.head()))
    pd.testing.assert_series_equal(r2.random_effects["308"], sm_fit.random_effects["308"])
    pd.testing.assert_frame_equal(r2.coef_table(), sm_fit.coef_table())
    _roundtrip(r2.model)


def test_mixedlm_crossed_cholmod_pickles(sleepstudy):
    d = sleepstudy.assign(one=1, day=sleepstudy["Days"].astype(str))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = sparselmm.mixedlm(
            "Reaction ~ 1", d, groups="one", vc_formula={"s": "0 + C(Subject)", "d": "0 + C(day)"}
        ).fit()
    lik = r.model.likelihood()  # the engine chose a dense-Schur factor; CHOLMOD's is the one that does not pickle
    lik._devfuns = {True: ProfiledDeviance(lik.design, lik.cross, reml=True, ordering="amd")}
    assert isinstance(lik.devfun(True).chol, CholmodFactor)
    r._cache.clear()
    r2 = _roundtrip(r)
    pd.testing.assert_series_equal(r2.fittedvalues, r.fittedvalues)
    pd.testing.assert_frame_equal(r2.coef_table(), r.coef_table())


def test_mixedlm_save_and_load(sm_fit, tmp_path):
    path = tmp_path / "fit.pickle"
    sm_fit.save(str(path))
    for loaded in (smx.load_pickle(path), smx.MixedLMResults.load(str(path)), smx.load(path)):
        pd.testing.assert_series_equal(loaded.params, sm_fit.params)
    buf = io.BytesIO()
    sm_fit.save(buf)
    buf.seek(0)
    assert smx.load_pickle(buf).llf == sm_fit.llf


def test_mixedlm_save_remove_data(sleepstudy, tmp_path):
    res = sparselmm.mixedlm("Reaction ~ Days", sleepstudy, groups="Subject").fit()
    bse = res.bse.copy()
    res.save(tmp_path / "small.pickle", remove_data=True)
    loaded = smx.load_pickle(tmp_path / "small.pickle")
    pd.testing.assert_series_equal(loaded.bse, bse)
    assert loaded.model.endog is None


def test_mixedlm_lost_namespace_is_named(sleepstudy):
    plus_one = lambda x: x + 1  # noqa: E731, F841 - read by the formula; a lambda does not pickle
    res = _roundtrip(sparselmm.mixedlm("Reaction ~ plus_one(Days)", sleepstudy, groups="Subject").fit())
    with pytest.raises(sparselmm.ModelSpecError, match="plus_one"):
        res.predict(sleepstudy.head())


# ---- item 6: the facade's missing-value message ------------------------------------------------------
@pytest.fixture
def rt_data():
    rng = np.random.default_rng(1)
    return pd.DataFrame(
        {
            "subj": np.repeat([f"s{i}" for i in range(10)], 6).astype(object),
            "cond": np.tile(list("abc"), 20),
            "rt": rng.normal(size=60),
        }
    )


def test_mixedlm_missing_groups_named(rt_data):
    rt_data.loc[3, "subj"] = np.nan
    for missing in ("none", "raise"):
        with pytest.raises(DataError, match=r"'subj' \(1\)") as err:
            sparselmm.mixedlm("rt ~ cond", rt_data, groups="subj", missing=missing)
        assert "'cond'" not in str(err.value) and "'rt'" not in str(err.value)
    rt_data.loc[7, "rt"] = np.nan
    with pytest.raises(DataError, match=r"2 rows .*'rt' \(1\), 'subj' \(1\)"):
        sparselmm.mixedlm("rt ~ cond", rt_data, groups="subj")
    model = sparselmm.mixedlm("rt ~ cond", rt_data, groups="subj", missing="drop")
    assert model.nobs == 58 and list(model.data.missing_row_idx) == [3, 7]


def test_mixedlm_arrays_missing_named(rt_data):
    groups = rt_data["subj"].to_numpy()
    groups[4] = None
    X = np.column_stack([np.ones(60), rng_x := np.arange(60.0)])
    with pytest.raises(DataError, match=r"in groups \(1\)") as err:
        smx.MixedLM(rt_data["rt"].to_numpy(), X, groups)
    assert "endog" not in str(err.value) and rng_x.size == 60


# ---- item 9: printing as R prints ----------------------------------------------------------------------
LEGEND = "Signif. codes:  0 '***' 0.001 '**' 0.01 '*' 0.05 '.' 0.1 ' ' 1"


def test_anova_prints_as_lmertest(sleep_fit):
    # lmerTest 3.1-3: anova(lmer(Reaction ~ Days + (Days | Subject), sleepstudy))
    table = sparselmm.anova(sleep_fit)
    assert repr(table).splitlines() == [
        "Type III Analysis of Variance Table with Satterthwaite's method",
        "     Sum Sq Mean Sq NumDF DenDF F value    Pr(>F)    ",
        "Days  30031   30031     1    17  45.853 3.264e-06 ***",
        "---",
        LEGEND,
    ]
    assert str(table) == repr(table)
    kr = repr(sparselmm.anova(sleep_fit, ddf="Kenward-Roger")).splitlines()
    assert kr[0] == "Type III Analysis of Variance Table with Kenward-Roger's method"
    assert (
        repr(sleep_fit.anova(type=1)).splitlines()[0] == "Type I Analysis of Variance Table with Satterthwaite's method"
    )
    assert repr(sleep_fit.anova(type="II")).splitlines()[0].startswith("Type II Analysis of Variance Table")
    lme4 = repr(sparselmm.anova(sleep_fit, ddf="lme4"))
    assert "Signif. codes" not in lme4 and "npar" in lme4  # no p-values, no stars
    # still a DataFrame: indexing, numbers, attrs
    assert isinstance(table, pd.DataFrame)
    assert table.loc["Days", "F value"] == pytest.approx(45.853, abs=1e-3)
    assert table.attrs["heading"].startswith("Type III")
    plain = table.to_frame()
    assert type(plain) is pd.DataFrame and plain.attrs["heading"] == table.attrs["heading"]
    assert type(table.loc[["Days"]]) is pd.DataFrame  # what is derived is a plain frame
    html = table._repr_html_()
    assert "<table" in html and "Satterthwaite" in html and "Signif. codes" in html and "***" in html


def test_anova_stars_only_when_some_p_below_tenth(sleepstudy):
    # printCoefmat: no stars column and no legend when no p-value is below 0.1
    d = sleepstudy.assign(noise=np.random.default_rng(0).normal(size=len(sleepstudy)))
    table = sparselmm.lmer("Reaction ~ noise + (1 | Subject)", d).anova()
    assert table["Pr(>F)"].iloc[0] > 0.1
    lines = repr(table).splitlines()
    assert "Signif. codes" not in repr(table) and lines[1].endswith("Pr(>F)") and "*" not in lines[2]


def test_lrt_table_prints_every_column(sleepstudy, sleep_fit):
    # lme4 1.1-31: anova(m0, m) with m0 <- update(m, . ~ . - Days)
    m0 = sparselmm.lmer("Reaction ~ 1 + (Days | Subject)", sleepstudy, data_name="sleepstudy")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = sparselmm.anova(m0, sleep_fit, names=["m0", "m"])
    lines = repr(table).splitlines()
    assert "…" not in repr(table) and "..." not in repr(table)
    assert lines[0] == "refitting model(s) with ML (instead of REML)"
    assert lines[1:4] == ["Data: sleepstudy", "Models:", "m0: Reaction ~ 1 + (Days | Subject)"]
    assert table.attrs["heading"] == lines[1:5]
    assert lines[5:] == [
        "   npar    AIC    BIC  logLik deviance  Chisq Df Pr(>Chisq)    ",
        "m0    5 1785.5 1801.4 -887.74   1775.5                         ",
        "m     6 1763.9 1783.1 -875.97   1751.9 23.537  1  1.226e-06 ***",
        "---",
        LEGEND,
    ]
    assert table.loc["m", "Df"] == 1
    assert "<table" in table._repr_html_() and "Models:" in table._repr_html_()


def test_drop1_table_prints_as_r(sleep_fit):
    table = sleep_fit.drop1(test="Chisq")
    text = repr(table)
    assert "Single term deletions" in text and "Model:" in text
    lines = text.splitlines()
    assert lines[lines.index("Model:") + 2].split() == ["npar", "AIC", "LRT", "Pr(Chi)"]
    assert lines[-2:] == ["---", LEGEND]
    assert table.loc["Days", "npar"] == 1 and "<table" in table._repr_html_()


def test_varcorr_prints_compactly(sleep_fit):
    # lme4: print(VarCorr(m)) — Groups, Name, Std.Dev., Corr (lme4's numbers: 24.7407, 5.9221, 0.066, 25.5918)
    lines = repr(sleep_fit.varcorr).splitlines()
    assert lines[0] == " Groups   Name        Std.Dev. Corr "
    assert lines[1].startswith(" Subject  (Intercept) 24.740") and lines[1].endswith("       ")
    assert lines[2].startswith("          Days         5.922") and lines[2].endswith("  0.066")
    assert lines[3].startswith(" Residual             25.59")
    assert len(lines) == 4
    both = sleep_fit.varcorr.format_lines(comp=("Variance", "Std.Dev."))
    assert both[0].split() == ["Groups", "Name", "Variance", "Std.Dev.", "Corr"]
    # the frame is as before
    vc = sleep_fit.varcorr
    assert list(vc.columns) == ["group", "var1", "var2", "vcov", "sdcor"] and len(vc) == 4
    assert type(vc.to_frame()) is pd.DataFrame and "<pre>" in vc._repr_html_()


def test_varcorr_two_terms_on_one_factor(sleepstudy):
    m = sparselmm.lmer("Reaction ~ Days + (1 | Subject) + (0 + Days | Subject)", sleepstudy)
    lines = repr(m.varcorr).splitlines()
    assert [line.split()[0] for line in lines[1:]] == ["Subject", "Subject.1", "Residual"]
    assert "Corr" not in lines[0]


def test_varcorr_missing_names_are_nan(sleepstudy, sleep_fit, cbpp):
    scalar = sparselmm.lmer("Reaction ~ Days + (1 | Subject)", sleepstudy).varcorr
    g = sparselmm.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)", cbpp, family="binomial").varcorr
    for vc in (scalar, sleep_fit.varcorr, g):
        variances = vc[vc["group"] != "Residual"]
        missing = vc["var2"][vc["var2"].isna()]
        assert not any(v is None for v in vc["var2"]) and not any(v is None for v in vc["var1"])
        assert all(isinstance(v, float) and np.isnan(v) for v in missing)
        assert len(missing) >= len(variances) - 1
    assert np.isnan(scalar["var1"].iloc[-1]) and np.isnan(scalar["var2"].iloc[-1])


def test_summary_correlation_headers_unique(sleepstudy):
    rng = np.random.default_rng(2)
    d = pd.DataFrame(
        {
            "subj": np.repeat([f"s{i}" for i in range(20)], 12),
            "cond": np.tile(list("ABC"), 80),
            "x": rng.normal(size=240),
        }
    )
    d["rt"] = rng.normal(size=240) + (d["cond"] == "B") + rng.normal(size=20)[np.repeat(np.arange(20), 12)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = sparselmm.lmer("rt ~ cond * x + (1 + cond | subj)", d)
    text = str(m.summary())
    lines = text.splitlines()
    at = lines.index("Correlation of Fixed Effects:")
    header = lines[at + 1].split()
    # R's abbreviate(names, 6) of these names (checked in R 4.2.2)
    assert header == ["(Intr)", "cn[T.B]", "cn[T.C]", "x", "c[T.B]:"]
    assert len(set(header)) == len(header)
    assert lines[at + 2].startswith("cond[T.B]   -0.") or lines[at + 2].startswith("cond[T.B]    0.")
    # random effects as lme4's formatVC: aligned correlation columns
    re = lines[lines.index("Random effects:") + 1 : lines.index("Random effects:") + 7]
    assert re[0].split() == ["Groups", "Name", "Variance", "Std.Dev.", "Corr"]
    corr_col = re[0].index("Corr")
    assert all(line[corr_col - 1] == " " for line in re[2:4])
    assert "groups:  subj, 20" in text
    assert "<pre>" in m.summary()._repr_html_()


def test_r_abbreviate_matches_r():
    names = [
        "(Intercept)",
        "cond[T.B]",
        "cond[T.C]",
        "x",
        "cond[T.B]:x",
        "cond[T.C]:x",
        "Days",
        "poly(x, 2)1",
        "poly(x, 2)2",
        "Intercept",
        "recipe[T.B]:temperature",
        "recipe[T.C]:temperature",
        "AgeGroup",
    ]
    from sparselmm.printing import r_abbreviate

    # R 4.2.2: abbreviate(names, 6) and abbreviate(names, 11)
    assert r_abbreviate(names, 6) == [
        "(Intr)",
        "cn[T.B]",
        "cn[T.C]",
        "x",
        "c[T.B]:",
        "c[T.C]:",
        "Days",
        "p(,2)1",
        "p(,2)2",
        "Intrcp",
        "r[T.B]",
        "r[T.C]",
        "AgeGrp",
    ]
    assert r_abbreviate(names, 11)[10:12] == ["rcp[T.B]:tm", "rcp[T.C]:tm"]


def test_r_number_formats():
    from sparselmm.printing import r_format, r_format_pval, r_zapsmall

    # R 4.2.2: format(x, digits = 5), format(zapsmall(x, 5), digits = 5), format.pval(p, digits = 3)
    assert r_format([24.7404, 5.92213, 25.5918], 5) == ["24.7404", " 5.9221", "25.5918"]
    assert r_format([0.001234, 123.4], 5) == ["1.234e-03", "1.234e+02"]
    assert r_format(r_zapsmall([8.86132859, 211.172597, 205.214617], 5), 5) == ["  8.861", "211.173", "205.215"]
    assert r_format_pval([3.05e-14, 0.000377, 5.74e-07], 3) == ["3.05e-14", "0.000377", "5.74e-07"]
    assert r_format_pval([1.218e-8, 1e-17, 0.0004986], 3) == ["1.22e-08", "< 2e-16", "0.000499"]


def test_bootstrap_repr_is_short(sleep_fit):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        boot = sleep_fit.bootstrap(30, seed=3, progress=False)
    text = repr(boot)
    lines = text.splitlines()
    assert lines[0].startswith("Parametric bootstrap: 30 replicates (0 failed), 6 statistics")
    assert len(lines) <= 3 + 1 + boot.draws.shape[1]
    assert lines[3].split() == ["original", "bias", "std.", "error"]
    assert "draws=" not in text and "<pre>" in boot._repr_html_()


def test_glmer_summary_html_and_groups(cbpp):
    g = sparselmm.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)", cbpp, family="binomial")
    assert "<pre>" in g.summary()._repr_html_()
    text = str(g.summary())
    assert " Groups Name        Variance Std.Dev." in text


def test_statsmodels_lookalike_summary_html(sm_fit):
    from sparselmm.statsmodels.summary import MixedLMSummary

    s = MixedLMSummary("Mixed Linear Model Regression Results", {"Model:": "MixedLM"}, pd.DataFrame({"Coef.": [1.0]}))
    assert s._repr_html_() == s.as_html() and "<table" in s._repr_html_()
    assert hasattr(sm_fit.summary(), "_repr_html_")


# ---- item 9: predict returns a Series on the data's index ----------------------------------------------
def test_lmer_predict_series_on_index(sleepstudy, sleep_fit):
    labelled = sleepstudy.set_index(pd.Index([f"r{i}" for i in range(len(sleepstudy))]))
    p = sleep_fit.predict(labelled)
    assert isinstance(p, pd.Series) and p.index.equals(labelled.index)
    np.testing.assert_allclose(p.to_numpy(), sleep_fit.fitted())
    assert isinstance(sleep_fit.predict(labelled, re_form="~0"), pd.Series)
    # on the fitted data: the caller's labels of the rows kept
    d = labelled.copy()
    d.loc[["r3", "r10"], "Reaction"] = np.nan
    m = sparselmm.lmer(SLEEP, d)
    fitted = m.predict()
    assert isinstance(fitted, pd.Series) and list(fitted.index) == [i for i in d.index if i not in ("r3", "r10")]
    np.testing.assert_allclose(fitted.to_numpy(), m.fitted())
    assert isinstance(sleep_fit.predict({"Days": [1.0], "Subject": ["308"]}), np.ndarray)  # a dict: an array


def test_glmer_predict_series_on_index(cbpp):
    d = cbpp.set_index(cbpp.index + 100)
    g = sparselmm.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)", d, family="binomial")
    for p in (g.predict(), g.predict(d), g.predict(d, type="response")):
        assert isinstance(p, pd.Series) and p.index.equals(d.index)
    np.testing.assert_allclose(g.predict(type="response").to_numpy(), g.fitted())


# ---- issue 22: one result base, one summary layout -----------------------------------------------------
def test_glmer_summary_prints_with_lmers_parts(cbpp):
    """GlmmSummary is built from LmerSummary's parts (sparselmm.summary): the criteria line per column, the
    coefficient table with LmerSummary's number formats (Estimate and Std. Error with 4 significant digits of
    the column's smallest value, 3 decimals for z, format.pval, stars) and the optimiser line of the fit's
    OptInfo. The numbers are those of coef_table(), aic, bic; lme4 1.1-31 prints cbpp's z value of the
    intercept as -6.0xx and its p-value below 1e-8 with '***'."""
    from sparselmm.summary import coefficient_lines

    g = sparselmm.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)", cbpp, family="binomial")
    lines = str(g.summary()).splitlines()
    names = next(k for k, line in enumerate(lines) if line.split() == ["AIC", "BIC", "logLik", "deviance", "df.resid"])
    assert lines[names + 1].split() == [f"{g.aic:.1f}", f"{g.bic:.1f}", f"{g.loglik:.1f}", f"{g.deviance:.1f}", "51"]
    i = lines.index("Fixed effects:")
    ct = g.coef_table()
    table = coefficient_lines(ct)
    assert lines[i + 1 : i + 1 + len(table)] == table
    assert table[0].split() == ["Estimate", "Std.", "Error", "z", "value", "Pr(>|z|)"]
    row = table[1].split()
    assert row[0] == "(Intercept)" and row[-1] == "***"
    est, se, z = (float(v) for v in row[1:4])
    assert est == pytest.approx(ct["Estimate"].iloc[0], abs=5e-5)
    assert se == pytest.approx(ct["Std. Error"].iloc[0], abs=5e-5)
    assert z == pytest.approx(ct["z value"].iloc[0], abs=5e-4) and -6.1 < z < -6.0
    assert float(row[4]) == pytest.approx(ct["Pr(>|z|)"].iloc[0], rel=5e-3) and float(row[4]) < 1e-8
    assert table[-2:] == ["---", "Signif. codes:  0 '***' 0.001 '**' 0.01 '*' 0.05 '.' 0.1 ' ' 1"]
    status = next(line for line in lines if line.startswith("optimizer ("))
    assert status == f"optimizer ({g.optinfo.optimizer}) convergence code: 0 (OK)"


def test_results_share_repr_and_accessors(sleep_fit, cbpp):
    g = sparselmm.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)", cbpp, family="binomial")
    assert repr(sleep_fit) == (
        f"<LmerResult 'Reaction ~ Days + (Days | Subject)' (REML), objective={sleep_fit.objective:.4f}, n=180>"
    )
    assert repr(g) == (
        "<GlmerResult 'cbind(incidence, size - incidence) ~ period + (1 | herd)' "
        f"(binomial(link='logit'), Laplace), objective={g.objective:.4f}, n=56>"
    )
    assert sleep_fit.bse.name == g.bse.name == "se"
    # lme4: sleepstudy's REML fit has 6 parameters (2 β, 3 θ, σ); cbpp's binomial fit 5 (4 β, 1 θ, no σ)
    assert (sleep_fit.n_params, g.n_params) == (6, 5)
    assert list(sleep_fit.varcorr["group"]) == ["Subject"] * 3 + ["Residual"]
    assert list(g.varcorr["group"]) == ["herd"]
    for m in (sleep_fit, g):
        assert m.Z.shape == (m.nobs, m.design.q) and m.Lambdat.shape == (m.design.q, m.design.q)
        np.testing.assert_allclose(m.Lambda @ m.u, m.b, rtol=1e-12, atol=1e-12)
        coef = next(iter(m.coef().values()))
        np.testing.assert_allclose(
            coef["Intercept"], m.fixef["Intercept"] + next(iter(m.ranef().values()))["Intercept"]
        )


def test_predict_type_is_lme4s_on_both_fits(sleep_fit, sleepstudy, cbpp):
    """One predict (the result base's) with lme4's ``type``: the identity link of a linear model gives the same
    values on both scales; glmer's response scale is its fitted means."""
    from sparselmm.errors import ModelSpecError

    g = sparselmm.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)", cbpp, family="binomial")
    pd.testing.assert_series_equal(sleep_fit.predict(type="response"), sleep_fit.predict())
    np.testing.assert_allclose(sleep_fit.predict(sleepstudy, type="response").to_numpy(), sleep_fit.fitted())
    np.testing.assert_allclose(g.predict(cbpp, "response").to_numpy(), g.fitted(), rtol=1e-12)  # type second
    for m in (sleep_fit, g):
        with pytest.raises(ModelSpecError, match="type='mean': use 'link' or 'response'"):
            m.predict(type="mean")
