"""Exact derivatives of the deviance (sparselmm/derivatives.py) against finite differences, against the
dense n × n algebra pbkrtest performs, and against lmerTest's numbers.

References: lmerTest 3.1-3 / pbkrtest 0.5.2 / lme4 1.1-31 on R 4.2.2, printed with ``digits = 12`` from
``m <- lmer(Reaction ~ Days + (Days|Subject), sleepstudy)``: ``solve(m@vcov_varpar / 2)`` (the Hessian),
``m@Jac_list`` and ``as.matrix(pbkrtest::vcovAdj(m))``.
"""

import numpy as np
import pandas as pd
import pytest

import sparselmm
from sparselmm.derivatives import DevianceDerivatives

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def _csv(name, nrows=None):
    return pd.read_csv(ROOT / "validation" / "data" / name, nrows=nrows)


def devfun_vp(devfun, vp):
    """lmerTest's ``devfun_vp``: the deviance in (θ, σ) with β profiled (up to the constant Σ log w)."""
    st = devfun.solve(vp[:-1])
    s2 = vp[-1] ** 2
    dev = st.ldL2 + st.pwrss / s2 + devfun.n * np.log(2 * np.pi * s2)
    if devfun.reml:
        dev += st.ldRX2 - devfun.p * np.log(2 * np.pi * s2)
    return dev


def vcov_at(devfun, vp):
    st = devfun.solve(vp[:-1])
    Ri = np.linalg.inv(st.R_X)
    return vp[-1] ** 2 * Ri @ Ri.T


def fd_hessian(f, x, h=1e-4):
    m = x.size
    H = np.zeros((m, m))
    steps = h * np.maximum(1.0, np.abs(x))
    for i in range(m):
        for j in range(i + 1):
            ei, ej = np.eye(m)[i] * steps[i], np.eye(m)[j] * steps[j]
            H[i, j] = H[j, i] = (f(x + ei + ej) - f(x + ei - ej) - f(x - ei + ej) + f(x - ei - ej)) / (
                4 * steps[i] * steps[j]
            )
    return H


CASES = [
    ("Reaction ~ Days + (Days|Subject)", "sleepstudy", None, True),
    ("Reaction ~ Days + (Days|Subject)", "sleepstudy", None, False),
    ("Reaction ~ Days + (Days||Subject)", "sleepstudy", None, True),
    ("y ~ x + z + (1 + x + z|g)", "slopes_many.csv", None, True),  # 3 × 3 blocks
    ("y ~ x + cond + (1 + x|user) + (1|item)", "crossed_small.csv", None, False),  # crossed, 2 × 2 block
    ("y ~ x + (1|school/class)", "nested_unbalanced.csv", None, True),  # nested (CHOLMOD path)
    ("y ~ x + (1|g)", "weighted.csv", "w", True),  # prior weights
]


def _load(data):
    return sparselmm.datasets.load(data) if not data.endswith(".csv") else _csv(data)


@pytest.fixture(scope="module", params=CASES, ids=lambda c: f"{c[0]}|{c[1]}|{'REML' if c[3] else 'ML'}")
def fitted(request):
    formula, data, weights, reml = request.param
    with np.errstate(all="ignore"):
        return sparselmm.lmer(formula, _load(data), reml=reml, weights=weights)


def test_varpar_hessian_matches_finite_differences(fitted):
    f = fitted.deviance_function
    d = DevianceDerivatives(f, fitted.theta, fitted.sigma)
    x = np.r_[fitted.theta, fitted.sigma]
    H = d.varpar_hessian()
    Hfd = fd_hessian(lambda v: devfun_vp(f, v), x)
    assert np.max(np.abs(H - Hfd)) <= 2e-5 * np.max(np.abs(H))


def test_gradient_and_jacobian_match_finite_differences(fitted):
    f = fitted.deviance_function
    theta = fitted.theta * 1.1 + 0.05  # off the optimum: nonzero gradient
    d = DevianceDerivatives(f, theta, 1.3 * fitted.sigma)
    x = np.r_[theta, 1.3 * fitted.sigma]
    g = d.varpar_gradient()
    J = d.vcov_beta_jacobian()
    for i in range(x.size):
        h = 1e-6 * max(1.0, abs(x[i]))
        e = np.eye(x.size)[i] * h
        g_fd = (devfun_vp(f, x + e) - devfun_vp(f, x - e)) / (2 * h)
        assert abs(g[i] - g_fd) <= 1e-5 * max(1.0, np.max(np.abs(g)))
        J_fd = (vcov_at(f, x + e) - vcov_at(f, x - e)) / (2 * h)
        assert np.max(np.abs(J[i] - J_fd)) <= 1e-6 * max(1e-12, np.max(np.abs(J[i])))
    # the profiled deviance f(θ): its gradient is devfun_vp's θ-gradient at σ̂(θ)
    gp = d.profiled_gradient()
    for i in range(theta.size):
        h = 1e-6 * max(1.0, abs(theta[i]))
        e = np.eye(theta.size)[i] * h
        assert abs(gp[i] - (f(theta + e) - f(theta - e)) / (2 * h)) <= 1e-5 * max(1.0, np.max(np.abs(gp)))


def test_singular_theta_uses_the_general_path():
    """θ = 0 (Λ singular): the Λ⁻¹ shortcut is off, and the Hessian still matches finite differences."""
    data = _csv("singular.csv")
    f = sparselmm.deviance_function("y ~ x + (1 + x|g)", data, reml=False)
    theta = np.array([0.0, 0.3, 0.5])
    st = f.solve(theta)
    sigma = np.sqrt(st.pwrss / f.n)
    d = DevianceDerivatives(f, theta, sigma)
    H = d.varpar_hessian()
    Hfd = fd_hessian(lambda v: devfun_vp(f, v), np.r_[theta, sigma])
    assert np.max(np.abs(H - Hfd)) <= 2e-5 * np.max(np.abs(H))


def test_sleepstudy_matches_lmertest():
    ss = sparselmm.datasets.load("sleepstudy")
    m = sparselmm.lmer("Reaction ~ Days + (Days|Subject)", ss)
    # evaluate at lme4's optimum so the comparison is of the algebra, not of two optimisers
    theta = np.array([0.9667417739674123, 0.0151690588960361, 0.2309099532077945])
    d = DevianceDerivatives(m.deviance_function, theta)
    assert d.sigma == pytest.approx(25.5917957216753, rel=1e-12)
    h_lmertest = np.array(
        [
            [41.16270374562, 31.10070720582, 5.33723598886, 2.06491838543],
            [31.10070720582, 418.89462035736, 171.31043128569, 1.86774236319],
            [5.33723598886, 171.31043128569, 873.45681326037, 9.52300976629],
            [2.06491838543, 1.86774236319, 9.52300976629, 1.08712247077],
        ]
    )
    # lmerTest's numDeriv Hessian carries its own ~1e-7 relative error
    np.testing.assert_allclose(d.varpar_hessian(), h_lmertest, rtol=1e-6, atol=1e-6 * 873)
    J = d.vcov_beta_jacobian()
    np.testing.assert_allclose(J[0], [[70.350873903639, 0.551934647904], [0.551934647904, 0.0]], atol=1e-6)
    np.testing.assert_allclose(J[1], [[0.0, 35.17543681387], [35.17543681387, 1.10386936967]], atol=1e-6)
    np.testing.assert_allclose(J[2], [[0.0, 0.0], [0.0, 16.8035740825]], atol=1e-6)
    np.testing.assert_allclose(J[3], [[3.639847750828, -0.113402625779], [-0.113402625779, 0.186736847166]], rtol=1e-9)


def _dense_kr_blocks(m):
    """pbkrtest's vcovAdj16_internal ingredients with explicit n × n matrices (small n only)."""
    design = m.design
    Z = design.Zt.T.toarray()
    X = design.X
    w = design.weights if design.weights is not None else np.ones(design.n)
    G = []
    for t in design.terms:
        rows, cols = t.tril_indices()
        Zt_ = Z[:, t.offset : t.offset + t.q]
        for r, c in zip(rows, cols):
            E = np.zeros((t.k, t.k))
            E[r, c] = E[c, r] = 1.0
            G.append(Zt_ @ np.kron(np.eye(t.n_levels), E) @ Zt_.T)
    G.append(np.diag(1.0 / w))
    gam = []
    for t, T in zip(design.terms, m.deviance_function.factors(m.theta)):
        S = m.sigma**2 * T @ T.T
        rows, cols = t.tril_indices()
        gam.extend(S[rows, cols])
    gam.append(m.sigma**2)
    Sigma = sum(g * Gi for g, Gi in zip(gam, G))
    Si = np.linalg.inv(Sigma)
    P = [-(X.T @ Si @ Gr @ Si @ X) for Gr in G]
    Q = [[X.T @ Si @ Gr @ Si @ Gs @ Si @ X for Gs in G] for Gr in G]
    K = np.array([[np.trace(Gr @ Si @ Gs @ Si) for Gs in G] for Gr in G])
    return P, Q, K


@pytest.mark.parametrize(
    "formula,data,weights",
    [
        ("Reaction ~ Days + (Days|Subject)", "sleepstudy", None),
        ("y ~ x + (1 + x|g)", "singular.csv", None),
        ("y ~ x + (1|g)", "weighted.csv", "w"),
    ],
)
def test_kenward_roger_blocks_equal_dense_algebra(formula, data, weights, quiet):
    frame = _load(data)
    if len(frame) > 400:
        frame = frame.iloc[:400]
    m = sparselmm.lmer(formula, frame, weights=weights)
    d = DevianceDerivatives(m.deviance_function, m.theta, m.sigma)
    P, Q, K = d.kenward_roger_blocks()
    P0, Q0, K0 = _dense_kr_blocks(m)
    np.testing.assert_allclose(K, K0, rtol=1e-9)
    for r in range(len(P)):
        np.testing.assert_allclose(P[r], P0[r], rtol=1e-9, atol=1e-12 * np.max(np.abs(P0[r])))
        for s in range(len(P)):
            np.testing.assert_allclose(Q[r][s], Q0[r][s], rtol=1e-9, atol=1e-12 * np.max(np.abs(Q0[r][s])))


def test_kenward_roger_adjusted_vcov_matches_pbkrtest():
    from sparselmm.inference.kenward_roger import KenwardRoger

    f = sparselmm.deviance_function("Reaction ~ Days + (Days|Subject)", sparselmm.datasets.load("sleepstudy"))
    theta = np.array([0.9667417739674123, 0.0151690588960361, 0.2309099532077945])  # lme4's θ̂
    kr = KenwardRoger(DevianceDerivatives(f, theta))
    np.testing.assert_allclose(
        kr.vcov_adj, [[46.57512004879, -1.45108841663], [-1.45108841663, 2.38946562321]], rtol=1e-9
    )


LOWRANK_CASES = [
    ("y ~ x + cond + (1 + x|user) + (1|item)", "crossed_small.csv", None, True, None),  # 2 × 2 first term
    ("y ~ x + cond + (1 + x|user) + (1 + x|item)", "crossed_small.csv", None, True, None),  # dense V
    ("y ~ x + (1|school/class)", "nested_unbalanced.csv", None, True, None),
    ("y ~ x + (1|g)", "weighted.csv", "w", True, None),
    # a zero θ: Λ is singular, so Ω and HᵀH come from the G route (no Λ⁻¹)
    ("y ~ x + cond + (1 + x|user) + (1|item)", "crossed_small.csv", None, True, [0.8, 0.1, 0.0, 0.5]),
    ("y ~ x + cond + (1 + x|user) + (1 + x|item)", "crossed_small.csv", None, False, [0.8, 0.1, 0.0, 0.5, 0.2, 0.3]),
]


@pytest.mark.parametrize("formula,data,weights,reml,theta", LOWRANK_CASES)
def test_low_rank_omega_equals_dense_algebra(formula, data, weights, reml, theta, monkeypatch, quiet):
    """The first term eliminated (Ω = N₀ − V S⁻¹ Vᵀ, never q × q) gives the dense q × q algebra's numbers."""
    import sparselmm.derivatives as mod

    m = sparselmm.lmer(formula, _load(data), weights=weights, reml=reml)
    assert isinstance(DevianceDerivatives(m.deviance_function, m.theta).omega, mod.DenseOmega)  # small q
    monkeypatch.setattr(mod, "DENSE_BELOW_Q", 0)
    # off the optimum (gradients not ~0, where only cancellation would be compared)
    th = m.theta * 1.1 + 0.05 if theta is None else np.asarray(theta, float)
    low = DevianceDerivatives(m.deviance_function, th, 1.3 * m.sigma)
    assert isinstance(low.omega, mod.LowRankOmega)
    assert (low._Linv is None) == (theta is not None)
    monkeypatch.setattr(mod, "c_inverse_parts", lambda C, terms: None)
    dense = DevianceDerivatives(m.deviance_function, th, 1.3 * m.sigma)
    assert isinstance(dense.omega, mod.DenseOmega)
    for name in ("varpar_hessian", "varpar_gradient", "profiled_gradient"):
        a, b = getattr(low, name)(), getattr(dense, name)()
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-9 * np.max(np.abs(b)), err_msg=name)
    for a, b in zip(low.vcov_beta_jacobian(), dense.vcov_beta_jacobian()):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10 * np.max(np.abs(b)))
    if reml:
        (P, Q, K), (P0, Q0, K0) = low.kenward_roger_blocks(), dense.kenward_roger_blocks()
        np.testing.assert_allclose(K, K0, rtol=1e-8)
        for r in range(len(P)):
            np.testing.assert_allclose(P[r], P0[r], rtol=1e-8, atol=1e-11 * np.max(np.abs(P0[r])))
            for s in range(len(P)):
                np.testing.assert_allclose(Q[r][s], Q0[r][s], rtol=1e-8, atol=1e-11 * np.max(np.abs(Q0[r][s])))


def test_too_many_random_effects_is_refused(monkeypatch):
    """The dense path (no term to eliminate) is bounded by q; the eliminated one by the complement q₂."""
    import sparselmm.derivatives as mod
    from sparselmm.errors import ModelSpecError

    ss = sparselmm.datasets.load("sleepstudy")
    m = sparselmm.lmer("Reaction ~ Days + (Days|Subject)", ss)
    monkeypatch.setattr(mod, "MAX_DENSE_Q", 10)
    monkeypatch.setattr(mod, "DENSE_BELOW_Q", 0)
    # one term eliminated: nothing dense is left, so the limit does not apply
    d = DevianceDerivatives(m.deviance_function, m.theta)
    assert d.varpar_hessian().shape == (4, 4)
    crossed = sparselmm.lmer("y ~ x + cond + (1 + x|user) + (1|item)", _csv("crossed_small.csv"))
    q2 = crossed.design.q - crossed.design.terms[0].q
    with pytest.raises(ModelSpecError, match=f"dense {q2} × {q2} complement"):
        DevianceDerivatives(crossed.deviance_function, crossed.theta)
    monkeypatch.setattr(mod, "c_inverse_parts", lambda C, terms: None)
    with pytest.raises(ModelSpecError, match="q = 36"):
        DevianceDerivatives(m.deviance_function, m.theta)
