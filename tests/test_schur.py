"""The dense-Schur factor gives exactly what the CHOLMOD factor gives (it is the same algebra)."""

import json

import numpy as np
import pytest
from compare import REFERENCE_DIR, load_case_data, load_cases

import sparselmm
from sparselmm import ModelSpecError
from sparselmm.schur import SchurCholesky

CASES = {c["id"]: c for c in load_cases()}
CROSSED = ["crossed_small_reml", "crossed_large_ml", "penicillin_reml", "pastes_nested_reml", "nested_slash_reml"]


@pytest.mark.parametrize("case_id", CROSSED)
def test_deviance_equals_cholmod_and_lme4(case_id):
    case = CASES[case_id]
    data = load_case_data(case)
    kw = dict(reml=case["reml"], weights=case["weights"], offset=case["offset"])
    ref = json.loads((REFERENCE_DIR / f"{case_id}.json").read_text())
    schur = sparselmm.deviance_function(case["formula"], data, ordering="schur", **kw)
    chol = sparselmm.deviance_function(case["formula"], data, ordering="default", **kw)
    assert schur.ordering == "schur"
    for point in ref["devfun"]:
        assert schur(point["theta"]) == pytest.approx(point["value"], rel=1e-10)
        assert schur(point["theta"]) == pytest.approx(chol(point["theta"]), rel=1e-12)


def test_fit_results_equal_cholmod():
    case = CASES["crossed_small_slopes_reml"]  # first term (user) has a slope: schur does not apply
    with pytest.raises(ModelSpecError, match="ordering='schur'"):
        sparselmm.deviance_function(case["formula"], load_case_data(case), ordering="schur")
    case = CASES["crossed_small_ml"]
    data = load_case_data(case)
    a = sparselmm.lmer(case["formula"], data, reml=False, ordering="schur")
    b = sparselmm.lmer(case["formula"], data, reml=False, ordering="default")
    assert a.objective == pytest.approx(b.objective, rel=1e-12)
    np.testing.assert_allclose(a.theta, b.theta, rtol=1e-7)
    for g in ("user", "item"):
        ra, rb = a.ranef(cond_var=True)[g], b.ranef(cond_var=True)[g]
        np.testing.assert_allclose(ra.to_numpy(), rb.to_numpy(), rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(ra.attrs["cond_sd"].to_numpy(), rb.attrs["cond_sd"].to_numpy(), rtol=1e-6)


def test_auto_considers_schur_on_large_crossed_designs():
    f = sparselmm.deviance_function(
        "y ~ 1 + service + (1|s) + (1|d) + (1|dept:service)", sparselmm.datasets.load("InstEval"), reml=False
    )
    assert f.ordering in ("schur", "metis")  # chosen by timing one factorisation of each
    assert f([0.3, 0.5, 0.2]) == pytest.approx(
        sparselmm.deviance_function(
            "y ~ 1 + service + (1|s) + (1|d) + (1|dept:service)",
            sparselmm.datasets.load("InstEval"),
            reml=False,
            ordering="metis",
        )([0.3, 0.5, 0.2]),
        rel=1e-12,
    )


def test_not_positive_definite_is_a_numerical_error():
    import scipy.sparse as sp

    A = sp.csc_matrix(np.array([[1.0, 0, 0], [0, 1.0, 0], [2.0, 2.0, 1.0]]))
    fac = SchurCholesky(A, 2)
    with pytest.raises(sparselmm.NumericalError):
        fac.factorize(A, beta=0.0)
    fac.factorize(A, beta=10.0)
    assert np.isfinite(fac.logdet())
