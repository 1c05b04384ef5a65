"""Likelihood profiles (``LmerResult.profile``) against lme4's ``profile.merMod`` and against direct minimisation.

References: ``validation/reference_ci/profile_table.json`` (``Rscript validation/run_lme4_ci.R profile_table``:
lme4 1.1-31's ``as.data.frame(profile(m))``) and ``profile.json`` (``confint(m)``).

Tolerances:

* At each of lme4's points (parameter held at lme4's value), sparselmm's constrained fit: ζ within 1e-3 of
  lme4's and its criterion never above lme4's by more than 1e-6 (deviance units) — measured: median |Δζ|
  1e-9, largest 9e-5; the other parameters there within 1e-3 relative at the median point (measured 2e-4;
  flat directions move single points more).
* The REML-criterion profile against an independent BOBYQA minimisation of the REML criterion with σ held:
  1e-6 in the criterion (both optimise to ~1e-8).
* The derivative-free fallback against lme4's intervals: 1e-3 relative, as the gradient path.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from helpers import REFERENCE_CI as REF
from helpers import ROOT
from helpers import reference_ci_fit as fit

import sparselmm
from sparselmm.errors import ModelSpecError
from sparselmm.inference import profile_fits
from sparselmm.inference.profile import ProfileWarning, _Profiler, profile
from sparselmm.parameters import estimates, parameter_names

TABLE = json.loads((REF / "profile_table.json").read_text())
PROFILE = json.loads((REF / "profile.json").read_text())


def r_name(name: str) -> str:
    return name.replace("[T.", "").replace("]", "")


def test_table_has_lme4s_layout_and_a_monotone_zeta():
    m = fit("sleep_slopes_reml")
    prof = m.profile(progress=False)
    names = parameter_names(m)
    table = prof.table()
    assert list(table.columns) == [".zeta", *names, ".par", ".focal", "deviance"]
    assert list(table[".par"].cat.categories) == names == prof.parameters
    ml = m.refit_ml()
    est = estimates(ml)
    for name, rows in table.groupby(".par", observed=True):
        np.testing.assert_array_equal(rows[".focal"], rows[name])
        assert np.all(np.diff(rows[".focal"]) > 0) and np.all(np.diff(rows[".zeta"]) > 0), name
        centre = rows[rows[".zeta"] == 0.0]
        assert len(centre) == 1
        np.testing.assert_allclose(centre[names].to_numpy()[0], est.to_numpy(), rtol=1e-12)
        # the grid reaches lme4's cutoff sqrt(qchisq(0.99, 6)) = 4.1 on both sides, or a bound (a correlation's 1)
        assert rows[".zeta"].min() < -4.0
        assert rows[".zeta"].max() > 4.0 or rows[".focal"].max() == 1.0
    np.testing.assert_allclose(table["deviance"], ml.objective + table[".zeta"] ** 2, rtol=1e-12)
    assert prof.criterion == "ML" and prof.notes == []
    assert list(prof.table(".sigma")[".par"].unique()) == [".sigma"]
    with pytest.raises(ModelSpecError, match="not profiled"):
        prof.table("Dayz")


@pytest.mark.parametrize("case_id", list(TABLE["cases"]))
def test_zeta_and_parameters_at_lme4s_points(case_id):
    ref = TABLE["cases"][case_id]
    prof = _Profiler(fit(case_id), "ML")
    assert [r_name(n) for n in prof.names] == ref["names"]
    values = np.array(ref["values"], dtype=float).T
    d_zeta, d_par, worse = [], [], []
    for i, (par, x, zeta) in enumerate(zip(ref["par"], ref["focal"], ref["zeta"])):
        if zeta == 0.0:  # lme4's own estimate
            continue
        pt = prof.deviance_at(ref["names"].index(par), float(x))
        worse.append(pt.zeta**2 - zeta**2)
        if abs(zeta) - abs(pt.zeta) <= 1e-3:  # not where sparselmm finds a lower constrained optimum
            d_zeta.append(abs(pt.zeta - zeta))
        d_par.append(np.max(np.abs(pt.params - values[i]) / np.maximum(np.abs(values[i]), 1e-2)))
    assert max(worse) < 1e-6
    assert max(d_zeta) < 1e-3
    assert np.median(d_par) < 1e-3


def test_reml_criterion_profile():
    m = fit("sleep_slopes_reml")
    with pytest.raises(ModelSpecError, match="REML criterion"):
        m.profile(which="Days", criterion="REML", progress=False)
    with pytest.raises(ModelSpecError, match="criterion"):
        m.profile(criterion="likelihood", progress=False)
    prof = m.profile(which=[".sigma", ".sig01"], criterion="REML", progress=False, grid=False)
    assert prof.criterion == "REML" and prof.base_deviance == m.objective
    np.testing.assert_allclose(prof.estimates.to_numpy(), estimates(m).to_numpy(), rtol=1e-12)
    # the point with σ held at its lower end: the REML criterion minimised over θ, independently (BOBYQA)
    import nlopt

    s = prof.intervals[(".sigma", 0.95)][0]
    devfun = m.deviance_function.with_response(m.y)
    n, p = m.nobs, m.design.p

    def crit(theta, grad=None):
        st = devfun.solve(np.asarray(theta))
        return st.ldL2 + st.ldRX2 + st.pwrss / s**2 + (n - p) * np.log(2 * np.pi * s**2)

    opt = nlopt.opt(nlopt.LN_BOBYQA, 3)
    opt.set_min_objective(crit)
    opt.set_lower_bounds(m.design.lower)
    opt.set_xtol_abs(1e-10)
    opt.set_ftol_abs(1e-12)
    opt.optimize(m.theta)
    assert opt.last_optimum_value() - m.objective == pytest.approx(1.959964**2, abs=1e-5)
    # the REML intervals of the SDs are wider than the ML ones (of the ML refit); σ's coincide here, as σ̂
    # does (the fixed effects vary within subjects: REML's correction goes to the random effects)
    ml = m.profile(which=[".sig01", ".sigma"], progress=False, grid=False).confint()
    reml = prof.confint()
    assert reml.loc[".sig01"].iloc[1] > ml.loc[".sig01"].iloc[1] * 1.03
    assert reml.loc[".sig01"].iloc[0] > ml.loc[".sig01"].iloc[0] * 1.03
    # an ML fit is refitted by REML first
    reml_of_ml = fit("sleep_slopes_ml").profile(which=".sigma", criterion="REML", progress=False, grid=False)
    np.testing.assert_allclose(reml_of_ml.confint(), prof.confint().loc[[".sigma"]], rtol=1e-5)


def test_profile_leaves_the_fit_alone():
    m = fit("penicillin_reml")
    before = (m.theta.copy(), m.objective, m.sigma, m.fixef.copy())
    m.profile(progress=False)
    assert np.array_equal(m.theta, before[0]) and (m.objective, m.sigma) == before[1:3]
    assert m.fixef.equals(before[3]) and m.reml
    assert m.deviance_function(m.theta) == m.objective


def test_a_lower_deviance_is_reported_not_used():
    m = fit("sleep_int_ml")
    devfun = m.deviance_function.with_response(m.y)
    off = sparselmm.LmerResult(devfun, devfun.solve(m.theta * 1.5), m.optinfo)  # not at the optimum
    with pytest.warns(ProfileWarning, match="below the fit"):
        prof = off.profile(which=".sig01", progress=False, grid=False)
    assert any("below the fit" in note for note in prof.notes)
    assert prof.base_deviance == off.objective  # the profile keeps the fit's minimum


def test_the_derivative_free_fallback_agrees(monkeypatch):
    case_id = "sleep_slopes_ml"
    m = fit(case_id)
    exact = m.confint(method="profile", progress=False)
    monkeypatch.setattr(profile_fits, "evaluator", lambda devfun: None)
    fallback = m.confint(method="profile", progress=False)
    ref = PROFILE["cases"][case_id]
    want = np.column_stack([ref["lower"], ref["upper"]])
    assert np.all(np.abs(fallback.to_numpy() - want) < 1e-3 * np.maximum(np.abs(want), 1e-2))
    np.testing.assert_allclose(fallback, exact, rtol=1e-4)


def test_bad_arguments():
    m = fit("dyestuff_reml")
    with pytest.raises(ModelSpecError, match="unknown parameter"):
        m.profile(which=".sig07", progress=False)
    with pytest.raises(ModelSpecError, match="between 0 and 1"):
        m.profile(level=1.5, progress=False)
    with pytest.raises(ModelSpecError, match="alphamax"):
        profile(m, alphamax=0.0, progress=False)


def test_progress_bar_is_quiet_for_short_runs(capsys):
    """The package's policy (sparselmm.progress): by default a bar only for profiles that last more than
    2 s on a terminal or in a notebook; progress=True always shows it."""
    fit("dyestuff_reml").profile(grid=False)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    fit("dyestuff_reml").profile(progress=True, grid=False)
    captured = capsys.readouterr()
    assert captured.out == "" and "profile:" in captured.err


def test_profile_of_a_singular_maximal_fit():
    """Issue 23 item 3: profiling a singular maximal fit raised a raw LinAlgError (ψ left the positive
    semi-definite cone) and ``.sig01``'s lower end was NaN. lme4 1.1-31 (R 4.2.2), ``confint(m, parm =
    c(".sig01", ".sig04", ".sigma"), method = "profile", oldNames = TRUE)`` on validation/data/maximal_3cond.csv:
    .sig01 [27.40861, 45.01324], .sig04 [0, 16.53434], .sigma [47.70617, 51.96177] (1.6 min). lme4's
    constrained fits stop on higher faces of this singular fit's boundary: at its ends our constrained
    criterion is below d̂ + z², so our intervals contain lme4's."""
    data = pd.read_csv(ROOT / "validation" / "data" / "maximal_3cond.csv")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = sparselmm.lmer("rt ~ cond + freq + (1 + cond|subj) + (1 + cond|item)", data)
        prof = m.profile(which=[".sig01", ".sigma"], grid=False, progress=False)
    ci = prof.confint()
    lme4 = {".sig01": (27.40861, 45.01324), ".sigma": (47.70617, 51.96177)}
    for name, (lo, hi) in lme4.items():
        got_lo, got_hi = ci.loc[name]
        assert np.isfinite([got_lo, got_hi]).all(), name
        assert got_lo <= lo + 1e-6 and got_hi >= hi - 1e-6, name
        assert hi - lo > 0.8 * (got_hi - got_lo), name  # not wider than lme4's by more than the faces explain
    # the ends are where ζ = ±z, checked against the points fitted
    pts = prof.points.set_index(["par", "value"])
    for name in (".sig01", ".sigma"):
        lo, hi = ci.loc[name]
        assert pts.loc[(name, lo), "zeta"] == pytest.approx(-1.959964, abs=1e-5)
        assert pts.loc[(name, hi), "zeta"] == pytest.approx(1.959964, abs=1e-5)
