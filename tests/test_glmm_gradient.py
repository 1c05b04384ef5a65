"""The exact gradient of glmer's Laplace criterion (sparselmm.glmm.gradient) and what uses it: the selected
inverse of the dense-Schur factor, PIRLS's extrapolated warm start, the Hessian at the optimum."""

import numpy as np
import pandas as pd
import pytest

import sparselmm
from sparselmm.glmm import pirls
from sparselmm.glmm.gradient import gradient_supported
from sparselmm.glmm.objective import GlmmObjective
from sparselmm.optimize import deriv12


def _crossed(n=3000, n_subj=300, n_item=40, seed=11):
    rng = np.random.default_rng(seed)
    s, i = rng.integers(0, n_subj, n), rng.integers(0, n_item, n)
    x, cond = rng.normal(size=n), rng.integers(0, 2, n)
    eta = -0.3 + 0.5 * x + 0.4 * cond + rng.normal(0, 0.9, n_subj)[s] + rng.normal(0, 0.6, n_item)[i]
    y = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(float)
    return pd.DataFrame({"y": y, "x": x, "cond": cond, "subj": s.astype(str), "item": i.astype(str)})


@pytest.fixture(scope="module")
def crossed_fit():
    return sparselmm.glmer("y ~ x + cond + (1 | subj) + (1 | item)", _crossed(), family="binomial")


def _objective(fit, schur):
    design = fit._design
    model = pirls.PirlsModel(design, fit.family, design.y, fit._model.pw, fit._model.offset, schur=schur)
    assert model.schur == schur
    return GlmmObjective(model, 1)


def _fd_gradient(obj, theta, beta, h=1e-5):
    x, nth = np.concatenate([theta, beta]), theta.size
    out = np.empty(x.size)
    for i in range(x.size):
        a, b = x.copy(), x.copy()
        a[i] += h
        b[i] -= h
        out[i] = (obj.at_theta_beta(a[:nth], a[nth:]) - obj.at_theta_beta(b[:nth], b[nth:])) / (2 * h)
    return out


@pytest.mark.parametrize("schur", [True, False])
def test_gradient_matches_differences_binomial(crossed_fit, schur):
    obj = _objective(crossed_fit, schur)
    assert obj.gradient is not None
    theta, beta = crossed_fit.theta * 1.2, crossed_fit.fixef.to_numpy() + 0.1  # away from the optimum
    f, g = obj.value_and_gradient(theta, beta)
    assert f == pytest.approx(obj.at_theta_beta(theta, beta), rel=1e-13)
    fd = _fd_gradient(obj, theta, beta)
    assert np.max(np.abs(g)) > 10  # a real slope, not rounding
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-5)


def test_gradient_matches_differences_poisson_three_terms():
    rng = np.random.default_rng(5)
    n = 1500
    a, b, c = rng.integers(0, 60, n), rng.integers(0, 12, n), rng.integers(0, 5, n)
    x = rng.normal(size=n)
    mu = np.exp(0.5 + 0.3 * x + rng.normal(0, 0.5, 60)[a] + rng.normal(0, 0.3, 12)[b] + rng.normal(0, 0.4, 5)[c])
    d = pd.DataFrame({"y": rng.poisson(mu), "x": x, "a": a.astype(str), "b": b.astype(str), "c": c.astype(str)})
    fit = sparselmm.glmer("y ~ x + (1 | a) + (1 | b) + (1 | c)", d, family="poisson", calc_derivs=False)
    obj = GlmmObjective(fit._model.with_response(fit._model.y), 1)
    theta, beta = fit.theta * np.array([0.8, 1.3, 1.1]), fit.fixef.to_numpy() - 0.05
    _, g = obj.value_and_gradient(theta, beta)
    np.testing.assert_allclose(g, _fd_gradient(obj, theta, beta), rtol=1e-6, atol=1e-5)


def test_gradient_vanishes_at_the_optimum(crossed_fit):
    # the fit's own gradient (optinfo) is the exact one: near zero relative to the curvature
    g, H = crossed_fit.optinfo.gradient, crossed_fit.optinfo.hessian
    assert crossed_fit.optinfo.details["derivatives"] == "exact gradient, central differences"
    assert 0.5 * g @ np.linalg.solve(H, g) < 1e-9  # the predicted decrease left


@pytest.mark.parametrize("stored_pairs", [True, False])
def test_inverse_on_pattern_equals_dense_inverse(crossed_fit, stored_pairs):
    obj = _objective(crossed_fit, True)
    m = obj.model
    obj.at_theta_beta(crossed_fit.theta, crossed_fit.fixef.to_numpy())
    if not stored_pairs:
        m.chol.pairs = None  # the sparse-dense product route of a factor with too many pairs to store
    Cinv = m.solve(np.eye(m.q))
    np.testing.assert_allclose(m.chol.inverse_on_pattern(), Cinv[m.M_row, m.M_col], rtol=1e-10, atol=1e-13)


def test_predicted_warm_start_reaches_the_same_mode(crossed_fit):
    obj = _objective(crossed_fit, True)
    theta, beta = crossed_fit.theta, crossed_fit.fixef.to_numpy()
    obj.value_and_gradient(theta, beta)  # sets the extrapolation point
    theta2, beta2 = theta + 1e-4, beta - 1e-4
    m = obj.model
    before = m.n_pirls
    f_pred = obj.at_theta_beta(theta2, beta2)
    its_pred = m.n_pirls - before
    u_pred = m.u.copy()
    cold = GlmmObjective(m.with_response(m.y), 1)  # no extrapolation point: PIRLS from u = 0
    f_cold = cold.at_theta_beta(theta2, beta2)
    np.testing.assert_allclose(u_pred, cold.model.u, atol=1e-9)
    assert f_pred == pytest.approx(f_cold, rel=1e-13)
    assert its_pred == 1  # the extrapolated mode is ~1e-8 off: one Newton step to rounding
    assert cold.model.n_pirls >= 3


def test_hessian_from_exact_gradient_equals_deriv12(crossed_fit):
    obj = _objective(crossed_fit, True)
    theta, beta = crossed_fit.theta, crossed_fit.fixef.to_numpy()
    f = obj.at_theta_beta(theta, beta)
    nth = theta.size
    _, H = deriv12(lambda x: obj.at_theta_beta(x[:nth], x[nth:]), np.concatenate([theta, beta]), f)
    np.testing.assert_allclose(crossed_fit.optinfo.hessian, H, rtol=2e-5, atol=1e-3)
    se_fd = np.sqrt(np.diag(2 * np.linalg.inv(H))[nth:])
    np.testing.assert_allclose(crossed_fit.bse.to_numpy(), se_fd, rtol=1e-5)


def test_cbpp_unchanged(cbpp_data):
    # criterion and SEs of the central-difference fit before the exact gradient (sparselmm at c8ddc91)
    m = sparselmm.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)", cbpp_data, family="binomial")
    assert m.deviance <= 184.0525637295142 + 1e-9
    np.testing.assert_allclose(m.bse.to_numpy(), [0.232471926, 0.3066425326, 0.3266377755, 0.4274362844], rtol=2e-6)
    assert m.optinfo.details["n_gradients"] > 0


@pytest.mark.parametrize(
    ("family", "nAGQ", "expected"),
    [("binomial", 1, True), ("binomial", 2, False), ("binomial", 0, False), (("binomial", "probit"), 1, False)],
)
def test_gradient_supported(cbpp_data, family, nAGQ, expected):
    fam, link = family if isinstance(family, tuple) else (family, None)
    m = sparselmm.glmer(
        "cbind(incidence, size - incidence) ~ period + (1 | herd)",
        cbpp_data,
        family=fam,
        link=link,
        nAGQ=nAGQ,
        calc_derivs=False,
    )
    assert gradient_supported(m._model, nAGQ) is expected
