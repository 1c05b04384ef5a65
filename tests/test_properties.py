"""Invariances that must hold for any data (hypothesis): row order, level labels, affine changes of y,
and weights versus duplicated rows."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sparselmm

SETTINGS = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def make_data(seed, n_groups, per_group):
    rng = np.random.default_rng(seed)
    n = n_groups * per_group
    g = np.repeat(np.arange(n_groups), per_group)
    x = rng.normal(size=n)
    y = 1 + 0.5 * x + rng.normal(size=n_groups)[g] * rng.uniform(0.3, 2) + rng.normal(size=n)
    return pd.DataFrame({"y": y, "x": x, "g": [f"L{v}" for v in g]})


designs = st.tuples(st.integers(0, 10_000), st.integers(4, 12), st.integers(3, 8))


def fit(df, **kw):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sparselmm.lmer("y ~ x + (1 | g)", df, **kw)


@SETTINGS
@given(designs, st.integers(0, 2**31 - 1))
def test_row_permutation(design, perm_seed):
    df = make_data(*design)
    ref = fit(df)
    perm = np.random.default_rng(perm_seed).permutation(len(df))
    m = fit(df.iloc[perm].reset_index(drop=True))
    assert m.objective == pytest.approx(ref.objective, rel=1e-9, abs=1e-9)
    np.testing.assert_allclose(m.fixef, ref.fixef, rtol=1e-6, atol=1e-8)


@SETTINGS
@given(designs, st.integers(0, 2**31 - 1))
def test_level_relabelling(design, seed):
    df = make_data(*design)
    ref = fit(df)
    labels = df.g.unique()
    new = dict(zip(labels, np.random.default_rng(seed).permutation([f"Z{i}" for i in range(len(labels))])))
    m = fit(df.assign(g=df.g.map(new)))
    assert m.objective == pytest.approx(ref.objective, rel=1e-9, abs=1e-9)
    np.testing.assert_allclose(m.fixef, ref.fixef, rtol=1e-6, atol=1e-8)


@SETTINGS
@given(designs, st.floats(1e-3, 1e3), st.floats(-1e6, 1e6))
def test_affine_rescaling_of_y(design, scale, shift):
    df = make_data(*design)
    ref = fit(df)
    m = fit(df.assign(y=df.y * scale + shift))
    np.testing.assert_allclose(m.theta, ref.theta, rtol=1e-4, atol=1e-5)  # θ is relative to σ: unchanged
    assert m.sigma == pytest.approx(ref.sigma * scale, rel=1e-4)
    assert m.fixef["x"] == pytest.approx(ref.fixef["x"] * scale, rel=1e-4, abs=1e-6 * scale)
    assert m.fixef["Intercept"] == pytest.approx(ref.fixef["Intercept"] * scale + shift, rel=1e-4, abs=1e-4 * scale)


@SETTINGS
@given(designs, st.floats(-1e4, 1e4))
def test_adding_a_constant_moves_only_the_intercept(design, c):
    df = make_data(*design)
    ref = fit(df)
    m = fit(df.assign(y=df.y + c))
    assert m.objective == pytest.approx(ref.objective, rel=1e-8)
    np.testing.assert_allclose(m.theta, ref.theta, rtol=1e-4, atol=1e-6)
    assert m.fixef["x"] == pytest.approx(ref.fixef["x"], rel=1e-5, abs=1e-8)
    assert m.fixef["Intercept"] == pytest.approx(ref.fixef["Intercept"] + c, rel=1e-8, abs=1e-6)


@SETTINGS
@given(designs, st.floats(0.05, 3.0))
def test_weight_two_equals_duplicated_rows(design, theta):
    """At any θ the PLS solution (β, u, penalised RSS) with weights 2 equals the one with every row twice.
    (The optimised σ differs by design: duplication adds n residual degrees of freedom.)"""
    df = make_data(*design)
    dup = sparselmm.deviance_function("y ~ x + (1 | g)", pd.concat([df, df], ignore_index=True))
    w2 = sparselmm.deviance_function("y ~ x + (1 | g)", df, weights=np.full(len(df), 2.0))
    a, b = dup.solve([theta]), w2.solve([theta])
    np.testing.assert_allclose(b.beta, a.beta, rtol=1e-9, atol=1e-12)
    assert b.pwrss == pytest.approx(a.pwrss, rel=1e-9)
    np.testing.assert_allclose(w2.spherical_modes(b), dup.spherical_modes(a), rtol=1e-8, atol=1e-10)
