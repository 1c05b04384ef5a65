"""update() with R's '.' notation and lmerTest's ranova(), against R.

References: R 4.2.2, lme4 1.1-31, lmerTest 3.1-3 (Debian bookworm), e.g.
``print(ranova(lmer(Reaction ~ Days + (Days | Subject), sleepstudy)), digits = 10)``.
"""

import pickle
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import sparselmm
from sparselmm.errors import FormulaError, ModelSpecError
from sparselmm.formula import update_formula


@pytest.fixture(scope="module")
def sleep():
    return sparselmm.datasets.load("sleepstudy")


@pytest.mark.parametrize(
    "new,expected",
    [
        ("~ . - x", "y ~ a + a:x + (a | g)"),
        ("~ . - x:a", "y ~ a + x + (a | g)"),  # an interaction is the same whatever the factors' order
        ("~ . - (a|g) + (1 | g)", "y ~ a + x + a:x + (1 | g)"),
        ("log(.) ~ .", "log(y) ~ a + x + a:x + (a | g)"),
        (". ~ . - 1", "y ~ 0 + a + x + a:x + (a | g)"),
        ("~ z", "y ~ z"),
    ],
)
def test_update_formula_follows_r(new, expected):
    # R: update(y ~ a*x + (a | g), new) expands a*x to a + x + a:x and removes what '-' names
    assert update_formula("y ~ a*x + (a | g)", new) == expected


@pytest.mark.parametrize("new", ["~ . - nothere", "~ . - (1 | h)", "y + x", "~ - ."])
def test_update_formula_refuses_what_it_cannot_do(new):
    with pytest.raises(FormulaError):
        update_formula("y ~ a*x + (a | g)", new)


def test_update_refits_as_a_fresh_fit(sleep):
    m = sparselmm.lmer("Reaction ~ Days + (Days | Subject)", sleep)
    m1 = sparselmm.update(m, "~ . - (Days | Subject) + (1 | Subject)")
    fresh = sparselmm.lmer("Reaction ~ Days + (1 | Subject)", sleep)
    assert m1.loglik == pytest.approx(fresh.loglik, abs=1e-9)
    assert m1.loglik == pytest.approx(-893.2325427, abs=1e-6)  # R: logLik(lmer(Reaction ~ Days + (1|Subject)))
    ml = sparselmm.update(m, reml=False)
    assert not ml.reml and ml.loglik == pytest.approx(-875.9696722, abs=1e-6)  # R: REML = FALSE


def test_update_of_a_glmer_fit():
    cbpp = pd.read_csv(Path(__file__).parents[1] / "validation" / "data" / "glmm_cbpp.csv")
    cbpp["herd"] = cbpp["herd"].astype(str)
    cbpp["period"] = cbpp["period"].astype(str)
    g = sparselmm.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)", cbpp, family="binomial")
    g0 = sparselmm.update(g, "~ . - period")
    # R (lme4 1.1-31): -2 * logLik(glmer(cbind(incidence, size - incidence) ~ 1 + (1 | herd), cbpp, binomial,
    # control = glmerControl(tolPwrss = 1e-12))) = 209.6626271883 (PIRLS converged tightly, as sparselmm's;
    # lme4's default tolerance reports 209.6630704, see validation/run_glmer.R)
    assert -2 * g0.loglik == pytest.approx(209.6626271883, abs=1e-6)


def test_update_errors(sleep):
    m = sparselmm.lmer("Reaction ~ Days + (Days | Subject)", sleep)
    with pytest.raises(ModelSpecError, match="pass it again"):
        sparselmm.update(pickle.loads(pickle.dumps(m)), "~ . - Days")
    with pytest.raises(ModelSpecError, match="does not record"):
        sparselmm.update(object(), "~ . - Days")
    with pytest.raises(sparselmm.ArgumentError, match="start"):
        sparselmm.update(m, start=[1, 0, 1])
    with pytest.raises(FormulaError, match="does not have"):
        sparselmm.update(m, "~ . - x")


# R: print(ranova(m), digits = 10) for each model (lmerTest 3.1-3)
RANOVA = [
    (
        "Reaction ~ Days + (Days | Subject)",
        True,
        ["<none>", "Days in (Days | Subject)"],
        [6, 4],
        [-871.8141360, -893.2325427],
        [np.nan, 42.83681343],
    ),
    (
        "Reaction ~ Days + (1 | Subject) + (0 + Days | Subject)",
        True,
        ["<none>", "(1 | Subject)", "Days in (0 + Days | Subject)"],
        [5, 4, 4],
        [-871.8346468, -883.2625137, -893.2325427],
        [np.nan, 22.85573390, 42.79579181],
    ),
    (
        "Reaction ~ Days + (Days | Subject)",
        False,  # reduce.terms = FALSE: the term removed whole, a linear model left
        ["<none>", "(Days | Subject)"],
        [6, 3],
        [-871.8141360, -946.8318317],
        [np.nan, 150.0353915],
    ),
]


@pytest.mark.parametrize("formula,reduce_terms,labels,npar,loglik,lrt", RANOVA)
def test_ranova_matches_lmertest(sleep, formula, reduce_terms, labels, npar, loglik, lrt):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = sparselmm.ranova(sparselmm.lmer(formula, sleep), reduce_terms=reduce_terms)
    assert list(table.index) == labels
    np.testing.assert_array_equal(table["npar"], npar)
    np.testing.assert_allclose(table["logLik"], loglik, atol=1e-6)
    np.testing.assert_allclose(table["LRT"], lrt, atol=2e-6)
    assert "ANOVA-like table for random-effects" in str(table)


def test_ranova_of_a_maximum_likelihood_fit(sleep):
    # R: ranova(lmer(Reaction ~ Days + (1 + Days | Subject), sleepstudy, REML = FALSE))
    table = sparselmm.ranova(sparselmm.lmer("Reaction ~ Days + (1 + Days | Subject)", sleep, reml=False))
    assert list(table.index) == ["<none>", "Days in (1 + Days | Subject)"]
    np.testing.assert_allclose(table["logLik"], [-875.9696722, -897.0393215], atol=1e-6)
    assert table["Pr(>Chisq)"].iloc[1] == pytest.approx(7.0724e-10, rel=1e-4)


def test_ranova_needs_an_lmer_fit():
    with pytest.raises(ModelSpecError, match="sparselmm.lmer"):
        sparselmm.ranova(object())
