"""Confidence intervals (``LmerResult.confint``) against lme4's ``confint.merMod``.

References: ``validation/reference_ci/wald.json`` (``Rscript validation/run_lme4_ci.R wald``; lme4 1.1-31).

Tolerances:

* Wald intervals to 1e-5 relative to the interval's half-width scale: they are ``β̂ ± z·SE`` and β̂, SE
  agree with lme4 to ~1e-6 relative (the validation report's β and SE tolerances); the optimum of θ,
  which SE depends on, differs by optimiser tolerance (~1e-6 in θ).
* Names and the NA pattern exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import CI_CASES as CASES
from helpers import REFERENCE_CI as REF
from helpers import reference_ci_fit as fit

import sparselmm
from sparselmm.errors import ModelSpecError
from sparselmm.parameters import estimates, parameter_names, percent_labels, sdcor

WALD = json.loads((REF / "wald.json").read_text())
WALD_RTOL = 1e-5


def same_names(ours: list[str], theirs: list[str]) -> None:
    """Names agree, except that R codes factor levels as ``recipeB`` where formulaic writes ``recipe[T.B]``."""
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert a == b or a.replace("[T.", "").replace("]", "") == b, (a, b)


@pytest.mark.parametrize("case_id", list(WALD["cases"]))
def test_wald_matches_lme4(case_id):
    m = fit(case_id)
    for ref in WALD["cases"][case_id]["intervals"]:
        ci = m.confint(method="Wald", level=ref["level"])
        assert list(ci.columns) == ref["columns"]
        same_names(list(ci.index), ref["names"])
        for col, key in zip(ci.columns, ("lower", "upper")):
            want = np.array([np.nan if v is None else v for v in ref[key]], dtype=float)
            got = ci[col].to_numpy()
            assert np.array_equal(np.isnan(got), np.isnan(want))
            ok = ~np.isnan(want)
            scale = np.maximum(np.abs(want[ok]), np.sqrt(np.diag(m.vcov.to_numpy())))
            np.testing.assert_array_less(np.abs(got[ok] - want[ok]), WALD_RTOL * scale)


def test_names_and_estimates_follow_lme4_layout():
    m = fit("sleep_slopes_reml")
    assert parameter_names(m) == [".sig01", ".sig02", ".sig03", ".sigma", "(Intercept)", "Days"]
    est = estimates(m)
    vc = m.varcorr
    # sd(Intercept), cor(Days, Intercept), sd(Days): the lower triangle column by column
    np.testing.assert_allclose(est.iloc[:3], [vc.sdcor[0], vc.sdcor[2], vc.sdcor[1]], rtol=1e-12)
    assert est[".sigma"] == pytest.approx(m.sigma, rel=1e-14)
    np.testing.assert_allclose(est.iloc[4:].to_numpy(), m.fixef.to_numpy(), rtol=1e-14)


def test_sdcor_of_a_three_by_three_term_in_theta_order():
    m = fit("sleep_slopes_ml")
    design = m.design
    theta = np.array([1.0, 0.5, 2.0])
    T = np.array([[1.0, 0.0], [0.5, 2.0]])
    cov = 4.0 * T @ T.T
    sd = np.sqrt(np.diag(cov))
    np.testing.assert_allclose(sdcor(design, theta, 2.0), [sd[0], cov[1, 0] / (sd[0] * sd[1]), sd[1]])
    # a zero SD leaves the correlation undefined (R's cov2cor gives NaN)
    out = sdcor(design, np.array([0.0, 0.0, 1.0]), 1.0)
    assert out[0] == 0 and np.isnan(out[1]) and out[2] == 1


def test_parm_selection():
    m = fit("cake_reml")
    ci = m.confint(parm=["(Intercept)", "temp"], method="Wald")
    assert list(ci.index) == ["(Intercept)", "temp"]
    assert list(m.confint(parm="Intercept", method="Wald").index) == ["(Intercept)"]
    assert list(m.confint(parm="beta_", method="Wald").index) == parameter_names(m)[2:]
    assert list(m.confint(parm="theta_", method="Wald").index) == [".sig01", ".sigma"]
    assert list(m.confint(parm=[0, 5], method="wald").index) == [".sig01", "temp"]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"parm": "Dayz"}, "unknown parameter"),
        ({"parm": [".sig07"]}, "unknown parameter"),
        ({"parm": 17}, "out of range"),
        ({"level": 1.0}, "strictly between 0 and 1"),
        ({"level": 0}, "strictly between 0 and 1"),
        ({"level": "high"}, "between 0 and 1"),
        ({"method": "likelihood"}, "not known"),
        ({"method": "boot", "nsim": 0}, "nsim"),
        ({"method": "boot", "nsim": 2.5}, "nsim"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, match):
    m = fit("sleep_slopes_reml")
    kwargs = {"method": "Wald", **kwargs}
    with pytest.raises(ModelSpecError, match=match):
        m.confint(**kwargs)


def test_percent_labels_as_r_formats_them():
    assert percent_labels(0.95) == ["2.5 %", "97.5 %"]
    assert percent_labels(0.9) == ["5 %", "95 %"]
    assert percent_labels(0.999) == ["0.05 %", "99.95 %"]
    assert percent_labels(0.99) == ["0.5 %", "99.5 %"]


def test_boot_method_returns_lme4_layout():
    m = fit("dyestuff_reml")
    ci = m.confint(method="boot", nsim=40, seed=3, progress=False)
    assert list(ci.index) == parameter_names(m)
    assert list(ci.columns) == ["2.5 %", "97.5 %"]
    assert np.all(ci.iloc[:, 0] <= ci.iloc[:, 1])
    again = m.confint(method="boot", nsim=40, seed=3, progress=False, boot_type="basic")
    assert not again.equals(ci)


@pytest.mark.filterwarnings("ignore:extreme order statistics")  # 5 replicates: the ends are the extremes
def test_confint_does_not_change_the_fit():
    m = fit("sleep_slopes_reml")
    before = (m.theta.copy(), m.fixef.copy(), m.sigma, m.objective)
    m.confint(method="boot", nsim=5, seed=1, progress=False)
    assert np.array_equal(before[0], m.theta) and before[1].equals(m.fixef)
    assert (before[2], before[3]) == (m.sigma, m.objective)
    assert m.deviance_function(m.theta) == m.objective


# ---- profile intervals ------------------------------------------------------------------------------
# References: validation/reference_ci/profile.json (lme4's confint(m), method "profile"). Tolerance 1e-3
# relative (absolute for values below 1e-2, e.g. an SD whose interval starts at 0): lme4 interpolates a
# spline through ~8 profile points per side where sparselmm solves ζ = ±z; the two agreed to < 2e-4.
PROFILE = json.loads((REF / "profile.json").read_text())
PROFILE_RTOL = 1e-3


@pytest.mark.parametrize("case_id", list(PROFILE["cases"]))
def test_profile_intervals_match_lme4(case_id):
    ref = PROFILE["cases"][case_id]
    m = fit(case_id)
    ci = m.confint(method="profile", progress=False)
    same_names(list(ci.index), ref["names"])
    # lme4's known failures (cases.json "profile_exceptions", e.g. lme4 issue #192 with prior weights) are
    # compared with lme4's Wald interval instead: within 5 % of its half-width
    special = CASES.get("profile_exceptions", {}).get(case_id, {}).get("params", [])
    rows = np.array([n not in special for n in ref["names"]])
    for col, key in zip(ci.columns, ("lower", "upper")):
        want = np.array(ref[key], dtype=float)[rows]
        got = ci[col].to_numpy()[rows]
        np.testing.assert_array_less(np.abs(got - want), PROFILE_RTOL * np.maximum(np.abs(want), 1e-2))
    if special:
        wald = next(iv for iv in WALD["cases"][case_id]["intervals"] if iv["level"] == 0.95)
        idx = [wald["names"].index(n) for n in special]
        w = np.column_stack([np.array(wald["lower"], dtype=float)[idx], np.array(wald["upper"], dtype=float)[idx]])
        half = (w[:, 1] - w[:, 0])[:, None] / 2
        assert np.all(np.abs(ci.loc[special].to_numpy() - w) < 0.05 * half)


def test_profile_reports_points_and_leaves_the_fit_alone():
    from sparselmm.inference.profile import profile

    m = fit("penicillin_reml")
    before = (m.theta.copy(), m.objective)
    prof = profile(m, which=[".sig01", "(Intercept)"], level=0.9, progress=False)
    assert np.array_equal(m.theta, before[0]) and m.objective == before[1] and m.reml
    assert m.deviance_function(m.theta) == m.objective
    assert list(prof.confint(0.9).index) == [".sig01", "(Intercept)"]
    for name, pts in prof.points.groupby("par"):
        pts = pts.sort_values("value")
        assert np.all(np.diff(pts["zeta"]) > -1e-6), name
    assert prof.notes == []
    # another level is interpolated through the tabulated points (as lme4's spline): close to the exact ends
    exact = profile(m, which=[".sig01", "(Intercept)"], level=0.95, grid=False, progress=False).confint(0.95)
    np.testing.assert_allclose(prof.confint(0.95), exact, rtol=1e-3)
    # the ML estimate is the centre: ζ there is 0 and the intervals contain it
    est = prof.estimates
    lo, hi = prof.intervals[(".sig01", 0.9)]
    assert lo < est[".sig01"] < hi


def test_profile_of_a_boundary_fit_ends_at_zero():
    m = fit("pastes_nested_reml")
    ci = m.confint(parm=".sig02", method="profile")
    assert ci.iloc[0, 0] == 0.0


def test_wald_intervals_of_a_glmer_fit_match_lme4():
    # R 4.2.2, lme4 1.1-31: confint(glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), cbpp,
    # binomial, control = glmerControl(tolPwrss = 1e-12)), method = "Wald"); no .sigma row for the binomial.
    # lme4's SEs come from a finite-difference Hessian, ours too but on its own steps: 2e-5 apart
    from sparselmm.inference.confint import confint

    d = pd.read_csv(Path(__file__).parents[1] / "validation" / "data" / "glmm_cbpp.csv")
    d["herd"] = d["herd"].astype(str)
    d["period"] = d["period"].astype(str)
    g = sparselmm.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)", d, family="binomial")
    ci = confint(g, method="Wald")
    assert list(ci.index) == [".sig01", "(Intercept)", "period[T.2]", "period[T.3]", "period[T.4]"]
    assert ci.iloc[0].isna().all()
    ref = [
        [-1.854171506, -0.9428925810],
        [-1.593322142, -0.3913096186],
        [-1.768862013, -0.4884662807],
        [-2.418078324, -0.7425528718],
    ]
    np.testing.assert_allclose(ci.iloc[1:].to_numpy(), ref, atol=1e-4)
