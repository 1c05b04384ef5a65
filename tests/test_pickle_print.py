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
from sparselmm.factor import CholmodFactor

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
