"""The dense path for small models: ``ΛᵀZᵀZΛ + I`` and ``[X y]`` factored as one augmented matrix.

Its optimum must be the other exact paths' (block Schur via ``ordering="schur"``, CHOLMOD via a named
ordering) and lme4's: sleepstudy's REML criterion 1743.6282719 (lme4 1.1-31, ``lmer(Reaction ~ Days +
(Days | Subject), sleepstudy)``, ``REMLcrit()`` = 1743.628271956; validation/reference/sleepstudy_slopes_reml).
"""

from __future__ import annotations

import numpy as np
import pytest

import sparselmm
from sparselmm.criterion import DenseCriterion
from sparselmm.errors import NumericalError
from sparselmm.linalg.dense import DenseFactor

SLEEP = "Reaction ~ Days + (Days | Subject)"


@pytest.fixture(scope="module")
def sleep():
    return sparselmm.datasets.load("sleepstudy")


def test_small_model_takes_the_dense_path_and_reaches_lme4s_optimum(sleep):
    m = sparselmm.lmer(SLEEP, sleep)
    assert isinstance(m._devfun.chol, DenseFactor)
    assert m.optinfo.path.startswith("dense Cholesky") and m.optinfo.predicted["path"] == "dense Cholesky"
    assert m.objective == pytest.approx(1743.628271956, abs=2e-6)
    for ordering in ("schur", "default"):  # block Schur; CHOLMOD (BOBYQA)
        other = sparselmm.lmer(SLEEP, sleep, ordering=ordering)
        assert not isinstance(other._devfun.chol, DenseFactor)
        assert m.objective <= other.objective + 1e-8 * abs(other.objective)
        np.testing.assert_allclose(m.theta, other.theta, rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(m.fixef, other.fixef, rtol=1e-6)
    # every path evaluates the same criterion at the same theta
    th = m.theta * 0.8 + 0.05
    values = [sparselmm.deviance_function(SLEEP, sleep, ordering=o)(th) for o in ("auto", "schur", "default")]
    np.testing.assert_allclose(values, values[0], rtol=1e-12)


def test_the_other_paths_predictions_are_there_when_asked_for(sleep):
    dev = sparselmm.deviance_function(SLEEP, sleep)
    assert dev.predicted.path == "dense Cholesky"
    assert [c.path for c in dev.costs][:3] == [
        "dense Schur complement",
        "block Schur complement",
        "CHOLMOD sparse Cholesky",
    ]


def test_structures_and_tiny_memory_limits_keep_the_other_paths(sleep):
    structured = sparselmm.deviance_function("Reaction ~ Days + cs(Days | Subject)", sleep)
    assert not isinstance(structured.chol, DenseFactor)  # θ reaches Λ through the structure's map
    tight = sparselmm.deviance_function(SLEEP, sleep, memory_limit=2000)  # dense needs ~50 KB, block Schur 1.7 KB
    assert not isinstance(tight.chol, DenseFactor)


def test_augmented_factor_agrees_with_the_block_solve(sleep):
    """The criterion, β and the gradient from the augmented factor equal ProfiledDeviance's blockwise solve
    (and a finite difference) on the block-Schur factor."""
    for reml in (True, False):
        dev = sparselmm.deviance_function(SLEEP, sleep, reml=reml, ordering="schur")
        crit = DenseCriterion(dev.terms, dev.cross, reml)
        th = np.array([0.9, 0.02, 0.25])
        val, grad = crit.value_and_gradient(th)
        state = dev.solve(th)
        assert val == pytest.approx(state.deviance, rel=1e-13)
        np.testing.assert_allclose(crit.parts(th, gradient=False).beta, state.beta, rtol=1e-12)
        np.testing.assert_allclose(grad, dev.gradient(dev.solve(th)), rtol=1e-8, atol=1e-9)


def test_a_theta_that_overflows_is_a_rejected_step(sleep):
    dev = sparselmm.deviance_function(SLEEP, sleep)
    crit = DenseCriterion(dev.terms, dev.cross, True)
    with pytest.raises(NumericalError, match="overflows"):
        crit.parts(np.array([1e200, 0.0, 1e200]))
    assert dev(np.array([1e200, 0.0, 1e200])) == float("inf")
