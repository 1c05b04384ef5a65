"""Optimiser wrapper and lme4-style convergence checks."""

import warnings

import numpy as np
import pytest

import sparselmm
from sparselmm.optimize import deriv12, is_singular, optimize_theta


def test_is_singular_uses_diagonal_elements_only():
    lower = np.array([0.0, -np.inf, 0.0])
    assert is_singular(np.array([1.0, 0.0, 5e-5]), lower)
    assert not is_singular(np.array([1.0, 0.0, 0.5]), lower)  # an off-diagonal 0 is not singular


def test_derivatives_of_a_quadratic():
    H = np.array([[2.0, 0.5], [0.5, 1.0]])
    fun = lambda x: 0.5 * x @ H @ x + x[0]  # noqa: E731
    x = np.array([0.3, -0.2])
    g, h = deriv12(fun, x, fun(x))
    np.testing.assert_allclose(g, H @ x + [1, 0], atol=1e-7)
    np.testing.assert_allclose(h, H, atol=1e-5)


def test_quadratic_minimum_found_with_bounds():
    theta, f, info = optimize_theta(
        lambda x: (x[0] - 2) ** 2 + (x[1] + 1) ** 2 + 1, np.array([1.0, 0.0]), np.array([0.0, -np.inf])
    )
    np.testing.assert_allclose(theta, [2, -1], atol=1e-5)
    assert info.converged and info.n_evals > 0


def test_stopped_early_warns(sleepstudy):
    with pytest.warns(sparselmm.ConvergenceWarning):
        m = sparselmm.lmer("Reaction ~ Days + (Days | Subject)", sleepstudy, control={"maxeval": 5})
    assert not m.optinfo.converged
    assert any("did not report convergence" in msg for msg in m.optinfo.messages)


def test_restart_from_the_edge():
    # a minimum just off the boundary: started at 0 the optimiser must still leave it
    theta, f, info = optimize_theta(lambda x: (x[0] - 0.3) ** 2, np.array([0.0]), np.array([0.0]))
    assert theta[0] == pytest.approx(0.3, abs=1e-5)


def test_best_point_kept_when_the_optimiser_returns_none(monkeypatch):
    """NLopt's 'roundoff limited' stop returns no point: the best evaluated θ must be used, not the start."""
    import sparselmm.optimize as opt

    def fake_run(fun, x0, lower, method, ctrl, fun_grad=None, blas=None, upper=None):
        for x in ([0.9], [0.5], [0.7]):
            fun(np.array(x))
        return None, 0.0, True, "NLopt roundoff limited"

    monkeypatch.setattr(opt, "_run", fake_run)
    theta, f, info = optimize_theta(lambda x: (x[0] - 0.5) ** 2, np.array([1.0]), np.array([0.0]), check_conv=False)
    assert theta[0] == 0.5 and f == 0.0


class _QuadraticWithGradient:
    """(θ₀ − 0.5)² + θ₁², even in θ₁ like a profiled deviance: its minimum is on the bound θ₁ = 0."""

    has_gradient = True

    def __call__(self, x):
        return float((x[0] - 0.5) ** 2 + x[1] ** 2)

    def value_and_gradient(self, x):
        return self(x), np.array([2 * (x[0] - 0.5), 2 * x[1]])


def test_auto_uses_the_analytic_gradient_and_lands_on_the_bound():
    with pytest.warns(sparselmm.SingularFitWarning):
        theta, f, info = optimize_theta(_QuadraticWithGradient(), np.array([1.0, 1.0]), np.zeros(2))
    assert info.optimizer == "lbfgsb"
    assert theta[1] == 0.0  # snapped to the bound, as BOBYQA would land there
    assert theta[0] == pytest.approx(0.5, abs=1e-6)
    assert info.n_evals < 20


def test_auto_without_gradient_is_bobyqa():
    theta, f, info = optimize_theta(lambda x: float((x[0] - 0.5) ** 2), np.array([1.0]), np.zeros(1))
    assert info.optimizer == "bobyqa"
    assert theta[0] == pytest.approx(0.5, abs=1e-6)


def test_derivative_check_uses_the_analytic_gradient():
    class Bowl(_QuadraticWithGradient):
        def __call__(self, x):
            return float((x[0] - 0.5) ** 2 + 3 * (x[1] - 0.25) ** 2)

        def value_and_gradient(self, x):
            return self(x), np.array([2 * (x[0] - 0.5), 6 * (x[1] - 0.25)])

    theta, f, info = optimize_theta(Bowl(), np.array([1.0, 1.0]), np.zeros(2))
    np.testing.assert_allclose(info.hessian, [[2, 0], [0, 6]], atol=1e-6)
    np.testing.assert_allclose(info.gradient, 0, atol=1e-5)
    assert info.converged and not info.messages


def test_a_failed_gradient_run_is_finished_by_bobyqa(monkeypatch):
    import sparselmm.optimize as opt

    real_run = opt._run

    def failing_lbfgsb(fun, x0, lower, method, ctrl, fun_grad=None, blas=None, upper=None):
        if method == "lbfgsb":
            fun_grad(x0)
            return np.asarray(x0, float), fun(x0), False, "L-BFGS-B: ABNORMAL_TERMINATION_IN_LNSRCH"
        return real_run(fun, x0, lower, method, ctrl, fun_grad, upper=upper)

    monkeypatch.setattr(opt, "_run", failing_lbfgsb)
    with pytest.warns(sparselmm.SingularFitWarning):
        theta, f, info = optimize_theta(_QuadraticWithGradient(), np.array([1.0, 1.0]), np.zeros(2), check_conv=False)
    assert info.optimizer == "lbfgsb" and "then NLopt" in info.message
    assert theta[0] == pytest.approx(0.5, abs=1e-5) and theta[1] == pytest.approx(0.0, abs=1e-5)


def test_gradient_fit_leaves_a_zero_theta_that_is_a_local_maximum():
    """statsmodels' lme05 data (one random slope, ML): L-BFGS-B reached θ = 0, lme4's restart_edge saw that
    stepping off lowers the deviance, and the gradient method restarted at θ = 1e-5 stopped there (its
    gradient is O(θ) because the deviance is even in θ): deviance 1160.31 against 1158.91 at θ = 0.29.
    The restart now runs BOBYQA, as lme4's does."""
    import importlib.util
    from pathlib import Path

    import pandas as pd

    import sparselmm

    spec = importlib.util.find_spec("statsmodels")
    if spec is None:
        pytest.skip("statsmodels (test dependency) not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "regression" / "tests" / "results" / "lme05.csv"
    d = pd.read_csv(path)
    d["groups"] = d["groups"].astype(str)
    formula = "endog ~ 0 + exog_fe_0 + exog_fe_1 + exog_fe_2 + (0 + exog_re_0 | groups)"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        auto = sparselmm.lmer(formula, d, reml=False)
        bobyqa = sparselmm.lmer(formula, d, reml=False, optimizer="bobyqa")
    assert auto.optinfo.optimizer == "lbfgsb"
    assert auto.objective <= bobyqa.objective + 1e-9 * abs(bobyqa.objective)
    assert auto.theta[0] == pytest.approx(bobyqa.theta[0], rel=1e-4)
