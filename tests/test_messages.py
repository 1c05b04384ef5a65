"""Messages for a new user's mistakes (issue 23, items 6 and 7): each feeds the bad input and checks the
package's own error (naming the column, term or argument and saying what to do), or that a warning
points at the caller's line rather than into the library.
"""

from __future__ import annotations

import inspect
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import sparselmm
from sparselmm.design import RankDeficiencyWarning
from sparselmm.errors import (
    ArgumentError,
    ConvergenceWarning,
    DataError,
    FormulaError,
    SingularFitWarning,
    SparseLMMError,
    caller_stacklevel,
)
from sparselmm.formula import parse_formula

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "validation"))
import compare_glmm  # noqa: E402


@pytest.fixture(scope="module")
def sleep():
    return sparselmm.datasets.load("sleepstudy")


@pytest.fixture(scope="module")
def words():
    """A small crossed design: subjects × items, a three-level condition, a numeric and an integer covariate."""
    rng = np.random.default_rng(23)
    subj, item = np.meshgrid(np.arange(12), np.arange(10), indexing="ij")
    d = pd.DataFrame({"subj": subj.ravel().astype(str), "item": item.ravel().astype(str)})
    d["cond"] = np.array(["A", "B", "C"])[(subj.ravel() + item.ravel()) % 3]
    d["freq"] = rng.normal(size=len(d))
    d["len"] = rng.integers(3, 9, size=len(d))
    d["rt"] = 600 + 20 * (d.cond == "B") + 10 * d.freq + rng.normal(0, 30, len(d)) + rng.normal(0, 20, 12)[subj.ravel()]
    d["acc"] = (rng.random(len(d)) < 0.7).astype(int)
    return d


# --- 6: formulas ----------------------------------------------------------------------------------------
def test_glmer_without_random_terms_shows_the_callers_formula(words):
    with pytest.raises(FormulaError, match=r"No random-effects terms in 'acc ~ cond'") as err:
        sparselmm.glmer("acc ~ cond", words, family="binomial")
    assert "glmm_response" not in str(err.value)
    with pytest.raises(FormulaError, match=r"'cbind\(acc, 1 - acc\) ~ freq'"):
        sparselmm.glmer("cbind(acc, 1 - acc) ~ freq", words, family="binomial")


def test_glmer_missing_response_names_the_callers_column(words):
    d = words.assign(acc=words.acc.where(words.index != 5))
    with pytest.raises(DataError, match=r"Missing values .*acc: 1") as err:
        sparselmm.glmer("acc ~ cond + (1 | subj)", d, family="binomial", missing="raise")
    assert "glmm_response" not in str(err.value)


@pytest.mark.parametrize("fit", ["lmer", "glmer"])
def test_caret_inside_I_is_xor_not_power(words, fit):
    formula = ("rt" if fit == "lmer" else "acc") + " ~ cond + I(freq^2) + (1 | subj)"
    kwargs = {"family": "binomial"} if fit == "glmer" else {}
    with pytest.raises(FormulaError, match=r"bitwise xor.*write I\(freq\*\*2\)") as err:
        getattr(sparselmm, fit)(formula, words, **kwargs)
    assert "^" in str(err.value).splitlines()[-1]  # the caret under the offending '^'
    # an integer column does not fail in Python (len ^ 2 is len XOR 2): refused all the same
    with pytest.raises(FormulaError, match=r"I\(len\*\*2\)"):
        getattr(sparselmm, fit)(formula.replace("freq", "len"), words, **kwargs)


def test_caret_elsewhere():
    with pytest.raises(FormulaError, match=r"In the response.*write log\(rt\)\*\*2"):
        parse_formula("log(rt)^2 ~ x + (1 | g)")
    with pytest.raises(FormulaError, match=r"write log\(x\*\*2\)"):
        parse_formula("y ~ x + (1 + log(x^2) | g)")
    # between terms '^' keeps its formula meaning (interactions up to that order), as in R
    assert parse_formula("y ~ (a + b)^2 + (1 | g)").fixed == "(a + b)^2"
    assert parse_formula("y ~ I(x**2) + (1 | g)").fixed == "I(x**2)"


# --- 6: one-level factors -----------------------------------------------------------------------------------
# R 4.2.2, lme4 1.1-31: lmer(Reaction ~ Days + f + (1|Subject), transform(sleepstudy, f = "a")) and the same
# with Days:f, (f|Subject) or a factor whose second level is unused all stop with "contrasts can be applied
# only to factors with 2 or more levels"; a constant numeric or logical column is dropped as rank deficient.
@pytest.mark.parametrize(
    "formula, where",
    [
        ("Reaction ~ Days + f + (1 | Subject)", "in the fixed effects"),
        ("Reaction ~ Days + Days:f + (1 | Subject)", "in the fixed effects"),
        ("Reaction ~ Days + C(f) + (1 | Subject)", "in the fixed effects"),
        ("Reaction ~ Days + (f | Subject)", r"in random-effects term \(f \| Subject\)"),
    ],
)
def test_one_level_factor_is_an_error(sleep, formula, where):
    d = sleep.assign(f="a")
    with pytest.raises(DataError, match=rf"Factor '(C\()?f\)?' {where} has only the level 'a'.*2 or more levels"):
        sparselmm.lmer(formula, d)


def test_one_level_factor_after_unused_levels_and_missing_rows(sleep):
    d = sleep.assign(f=pd.Categorical(["a"] * len(sleep), categories=["a", "b"]))
    with pytest.raises(DataError, match="Factor 'f' in the fixed effects has only the level 'a'"):
        sparselmm.lmer("Reaction ~ Days + f + (1 | Subject)", d)
    # the only 'b' row is dropped for its missing response
    d = sleep.assign(f=np.where(sleep.index == 0, "b", "a"), Reaction=sleep.Reaction.where(sleep.index != 0))
    with pytest.raises(DataError, match="rows dropped for missing values"):
        sparselmm.lmer("Reaction ~ Days + f + (1 | Subject)", d)


def test_one_level_factor_in_glmer(words):
    with pytest.raises(DataError, match="Factor 'site' in the fixed effects has only the level 'x'"):
        sparselmm.glmer("acc ~ freq + site + (1 | subj)", words.assign(site="x"), family="binomial")


@pytest.mark.parametrize("value", [3.0, True])
def test_constant_numeric_or_boolean_is_dropped_not_an_error(sleep, value):
    with pytest.warns(RankDeficiencyWarning, match=r"dropping 1 column\(s\): \['c'\]"):
        m = sparselmm.lmer("Reaction ~ Days + c + (1 | Subject)", sleep.assign(c=value))
    assert list(m.fixef.index) == ["Intercept", "Days"]


# --- 6: R's argument names ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"REML": False}, r"'REML': use reml=False"),
        ({"family": "binomial"}, r"'family': .*sparselmm\.glmer\(formula, data, family=\.\.\.\)"),
        ({"na.action": "na.omit"}, r"'na.action': use missing='drop'"),
        ({"subset": "Days > 2"}, r"'subset': select the rows before fitting"),
        ({"weight": "Days"}, r"'weight': did you mean weights="),
        ({"check.conv": False}, r"'check.conv': it is spelled check_conv="),
        ({"bogus": 1}, r"'bogus'; its arguments are formula, data, reml, "),
    ],
)
def test_lmer_r_spellings(sleep, kwargs, message):
    with pytest.raises(ArgumentError, match=message) as err:
        sparselmm.lmer("Reaction ~ Days + (Days | Subject)", sleep, **kwargs)
    assert isinstance(err.value, TypeError) and isinstance(err.value, SparseLMMError)


def test_lmer_reml_must_be_boolean(sleep):
    with pytest.raises(ArgumentError, match=r"reml must be True or False, not 'binomial'.*sparselmm\.glmer"):
        sparselmm.lmer("Reaction ~ Days + (Days | Subject)", sleep, "binomial")
    with pytest.raises(ArgumentError, match="use reml=False"):
        sparselmm.deviance_function("Reaction ~ Days + (Days | Subject)", sleep, REML=False)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"REML": False}, "glmer has no REML"),
        ({"reml": True}, "glmer has no REML"),
        ({"control": {}}, r"glmer takes its settings directly: nAGQ=, calc_derivs="),
        ({"calc.derivs": False}, "it is spelled calc_derivs="),
        ({"na.action": "na.omit"}, "use missing="),
    ],
)
def test_glmer_r_spellings(words, kwargs, message):
    with pytest.raises(ArgumentError, match=message):
        sparselmm.glmer("acc ~ freq + (1 | subj)", words, family="binomial", **kwargs)


def test_signatures_and_docs_are_kept():
    for fn, first in ((sparselmm.lmer, ["formula", "data", "reml"]), (sparselmm.glmer, ["formula", "data", "family"])):
        assert list(inspect.signature(fn).parameters)[:3] == first
        assert "Parameters" in fn.__doc__
    assert sparselmm.ArgumentError is ArgumentError


# --- 6: zero weights ---------------------------------------------------------------------------------------
# R 4.2.2 Patched (2022-11-10 r83330), lme4 1.1-31:
#   d <- sleepstudy
#   d$w <- rep(c(1, 2, 0.5), length.out = nrow(d)); d$w[c(3, 17, 50, 101)] <- 0
#   m <- lmer(Reaction ~ Days + (Days | Subject), d, weights = w, subset = w > 0)
#   print(c(REMLcrit(m), fixef(m), getME(m, "theta"), sigma(m), nobs(m)), digits = 12)
# lmer(..., weights = w) itself (no subset) keeps the rows and adds log(0) to its Σ log w: REMLcrit is Inf at
# every θ, the optimiser never leaves its start (θ = 1, 0, 1) and fixef are 251.859, 10.137 with nobs 180 —
# lme4 2.1-0 still computes Σ log w over all rows (src/respModule.cpp). Zero weights meaning "no influence"
# (R's lm) is the fit on the other rows, which is the subset fit above.
R_ZERO_WEIGHTS = {
    "reml": 1714.0487296868241,
    "fixef": [251.8222699094219, 10.1544209117219],
    "theta": [1.0556172198475, -0.0292017307603, 0.2385908300377],
    "sigma": 25.6546135454630,
    "nobs": 176,
}


def test_zero_weights_lmer_match_lme4_without_those_rows(sleep):
    w = np.resize([1.0, 2.0, 0.5], len(sleep))
    w[[2, 16, 49, 100]] = 0
    m = sparselmm.lmer("Reaction ~ Days + (Days | Subject)", sleep.assign(w=w), weights="w")
    ref = R_ZERO_WEIGHTS
    assert m.objective == pytest.approx(ref["reml"], abs=1e-6)
    np.testing.assert_allclose(m.fixef.to_numpy(), ref["fixef"], rtol=1e-6)
    np.testing.assert_allclose(m.theta, ref["theta"], atol=1e-4)
    assert m.sigma == pytest.approx(ref["sigma"], rel=1e-5)
    assert m.nobs == ref["nobs"] and m.design.data.n_zero_weight == 4
    assert 2 not in m.design.data.rows and 3 in m.design.data.rows
    # the same fit as leaving the rows out
    keep = w > 0
    m2 = sparselmm.lmer("Reaction ~ Days + (Days | Subject)", sleep[keep], weights=w[keep])
    assert m.objective == pytest.approx(m2.objective, abs=1e-9)


def test_zero_weights_glmer_match_lme4():
    # R 4.2.2, lme4 1.1-31 (tight PIRLS, as validation/compare_glmm.py's references):
    #   d2 <- cbpp; d2$prop <- d2$incidence/d2$size; d2$w <- d2$size; d2$w[c(2, 7, 20)] <- 0
    #   g1 <- glmer(prop ~ period + (1 | herd), d2, weights = w, family = binomial,
    #               control = glmerControl(tolPwrss = 1e-12))
    #   print(c(-2*c(logLik(g1)), fixef(g1), getME(g1, "theta"), nobs(g1)), digits = 12)
    # gives 174.126497345202, -1.424515446805 -1.082717888429 -1.085129773356 -1.556478870856, 0.649251302352
    # (the same with subset = w > 0: glmer's zero-weight rows have no influence); nobs 56 there, 53 here
    # (R's glm counts only rows with non-zero weight, nobs.glm).
    cases = {c["id"]: c for c in compare_glmm.json.loads((ROOT / "validation" / "glmm_cases.json").read_text())}
    d = compare_glmm.load(cases["cbpp_logit"]).copy()
    d["prop"] = d.incidence / d["size"]
    w = d["size"].to_numpy(float)
    w[[1, 6, 19]] = 0
    g = sparselmm.glmer("prop ~ period + (1 | herd)", d, weights=w, family="binomial")
    assert g.deviance == pytest.approx(174.126497345202, abs=1e-6)
    np.testing.assert_allclose(
        g.fixef.to_numpy(), [-1.424515446805, -1.082717888429, -1.085129773356, -1.556478870856], atol=2e-5
    )
    np.testing.assert_allclose(g.theta, [0.649251302352], atol=2e-5)
    assert g.nobs == 53


def test_negative_and_all_zero_weights_are_errors(sleep):
    w = np.ones(len(sleep))
    w[7] = -1.0
    with pytest.raises(DataError, match="weights must be positive .*1 are negative, the first at row 7"):
        sparselmm.lmer("Reaction ~ Days + (1 | Subject)", sleep, weights=w)
    with pytest.raises(DataError, match="All weights are zero"):
        sparselmm.lmer("Reaction ~ Days + (1 | Subject)", sleep, weights=np.zeros(len(sleep)))


# --- 7: warnings point at the caller ---------------------------------------------------------------------------
def _caught(fn):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fn()
    return result, caught


def _singular_data():
    rng = np.random.default_rng(1)  # both lmer and glmer estimate the group variance as zero
    d = pd.DataFrame({"g": np.repeat(np.arange(30), 10), "x": rng.normal(size=300)})
    d["y"] = d.x + rng.normal(size=300)
    d["b"] = (rng.random(300) < 1 / (1 + np.exp(-d.x))).astype(int)
    return d


def test_glmer_warnings_point_at_the_caller():
    _, caught = _caught(lambda: sparselmm.glmer("b ~ x + (1 | g)", _singular_data(), family="binomial"))
    singular = [w for w in caught if issubclass(w.category, SingularFitWarning)]
    assert singular and all(w.filename == __file__ for w in caught)


def test_lmer_and_refit_warnings_point_at_the_caller():
    d = _singular_data()
    m, caught = _caught(lambda: sparselmm.lmer("y ~ x + (1 | g)", d))
    assert [w.category for w in caught] == [SingularFitWarning] and caught[0].filename == __file__
    m0, _ = _caught(lambda: sparselmm.lmer("y ~ 1 + (1 | g)", d, reml=False))
    # anova(m0, m) refits m by ML inside sparselmm.inference.lrt: its warning still names this file
    _, caught = _caught(lambda: sparselmm.anova(m0, m))
    assert caught and all(w.filename == __file__ for w in caught)
    _, caught = _caught(lambda: sparselmm.lmer("y ~ x + I(2 * x) + (1 | g)", d))
    assert RankDeficiencyWarning in [w.category for w in caught] and all(w.filename == __file__ for w in caught)


def test_anova_warnings_point_at_the_caller(sleep, monkeypatch):
    import sparselmm.inference.satterthwaite as satterthwaite

    # every eigenvalue of the (theta, sigma) Hessian counts as "close to zero": Satterthwaite warns
    monkeypatch.setattr(satterthwaite, "EIGEN_TOL", 1e12)
    for call in (lambda m: sparselmm.anova(m), lambda m: m.anova(type=1)):
        m = sparselmm.lmer("Reaction ~ Days + (Days | Subject)", sleep)
        _, caught = _caught(lambda call=call, m=m: call(m))
        assert [w.category for w in caught] == [ConvergenceWarning]
        assert caught[0].filename == __file__ and "may not have converged" in str(caught[0].message)


def test_caller_stacklevel_outside_the_package():
    # called from outside sparselmm, the warning belongs to the calling function's own line
    def f():
        warnings.warn("here", UserWarning, stacklevel=caller_stacklevel())

    _, caught = _caught(f)
    assert caught[0].filename == __file__ and caught[0].lineno == inspect.getsourcelines(f)[1] + 1


def test_anova_of_a_glmer_fit_is_a_clear_error():
    """sparselmm.anova(glmer fit) raised a raw AttributeError ('GlmerResult' object has no attribute 'design')."""
    data = pd.DataFrame(
        {"y": [0, 1, 1, 0, 1, 0, 1, 1, 0, 1, 1, 0] * 5, "x": np.arange(60) % 7, "g": np.repeat(list("abcdef"), 10)}
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g = sparselmm.glmer("y ~ x + (1|g)", data, family="binomial")
    with pytest.raises(sparselmm.ModelSpecError, match="not a GlmerResult"):
        sparselmm.anova(g)
