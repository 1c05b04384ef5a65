"""The cost model (sparselmm.linalg.cost): memory limits, path rules, predictions and the refusal."""

import numpy as np
import pandas as pd
import pytest

import sparselmm
from sparselmm.errors import MemoryLimitError, ModelSpecError
from sparselmm.linalg.cost import format_bytes, memory_limit_bytes, predict_costs


def _crossed(seed=3, n=4000, n_u=300, n_i=120):
    rng = np.random.default_rng(seed)
    u = rng.integers(0, n_u, n)
    i = rng.integers(0, n_i, n)
    y = 1.0 + rng.normal(0, 0.6, n_u)[u] + rng.normal(0, 0.4, n_i)[i] + rng.normal(0, 1.0, n)
    return pd.DataFrame({"y": y, "x": rng.normal(size=n), "u": u.astype(str), "i": i.astype(str)})


def test_memory_limit_parsing():
    assert memory_limit_bytes("8GB") == 8 * 2**30
    assert memory_limit_bytes("500 MB") == 500 * 2**20
    assert memory_limit_bytes("2GiB") == 2 * 2**30
    assert memory_limit_bytes(1e9) == 1e9
    assert memory_limit_bytes(None) > 0
    for bad in ("lots", "-3GB", 0, -1.0, True, float("nan"), [8]):
        with pytest.raises(ModelSpecError, match="memory_limit"):
            memory_limit_bytes(bad)
    assert format_bytes(7.2 * 2**30) == "7.2 GB"


def test_prediction_covers_the_arrays_the_schur_factor_holds():
    data = _crossed()
    dev = sparselmm.deviance_function("y ~ x + (1|u) + (1|i)", data)
    assert dev.schur
    chol = dev.chol
    held = chol._S.nbytes + chol._Q.data.nbytes + chol._Q.indices.nbytes + chol._Q.indptr.nbytes
    scalar = dev.costs[0]
    assert scalar.path == "dense Schur complement" and dev.predicted is scalar
    # the prediction is a peak (Q built in CSC and converted; the pattern mask): above what is held, not far
    assert held <= scalar.bytes <= 3 * held


def test_memory_limit_moves_the_fit_to_cholmod_with_the_same_optimum():
    data = _crossed()
    schur = sparselmm.lmer("y ~ x + (1|u) + (1|i)", data, reml=False)
    assert schur.optinfo.path == "dense Schur complement"
    costs = schur._devfun.costs
    # a limit between CHOLMOD's prediction and both Schur factors' takes CHOLMOD
    limit = 0.5 * (costs[2].bytes + min(costs[0].bytes, costs[1].bytes))
    assert costs[2].bytes < limit < min(costs[0].bytes, costs[1].bytes)
    chol = sparselmm.lmer("y ~ x + (1|u) + (1|i)", data, reml=False, memory_limit=limit)
    assert chol.optinfo.path.startswith("CHOLMOD")
    assert chol.optinfo.predicted["path"] == "CHOLMOD sparse Cholesky"
    assert chol.objective == pytest.approx(schur.objective, rel=1e-9)
    np.testing.assert_allclose(chol.theta, schur.theta, rtol=2e-4)


def test_refusal_names_every_path_and_the_limit():
    data = _crossed()
    with pytest.raises(MemoryLimitError, match="memory_limit=1.0 KB") as err:
        sparselmm.lmer("y ~ x + (1|u) + (1|i)", data, memory_limit=1024)
    msg = str(err.value)
    for path in ("dense Schur complement", "block Schur complement", "CHOLMOD sparse Cholesky"):
        assert path in msg
    assert isinstance(err.value, sparselmm.SparseLMMError) and isinstance(err.value, MemoryError)
    with pytest.raises(MemoryLimitError, match="ordering='schur'"):
        sparselmm.deviance_function("y ~ x + (1|u) + (1|i)", data, ordering="schur", memory_limit=1024)


def test_costs_of_a_vector_term_model():
    data = _crossed()
    dev = sparselmm.deviance_function("y ~ x + (1 + x|u) + (1|i)", data)
    scalar, block, cholmod, matrix_free = dev.costs
    assert not scalar.applicable and "scalar" in scalar.reason
    assert not matrix_free.applicable and "(1 + x | u)" in matrix_free.reason
    assert block.applicable and block.gradient and not cholmod.gradient
    assert dev.predicted.path == "block Schur complement"
    # the block factor's dense q₁ × q₂ and q₂ × q₂ arrays: 3 of each, 8 bytes per entry
    q1, q2 = 600, 120
    assert block.bytes >= 8 * (3 * q1 * q2 + 3 * q2 * q2)


def test_predict_costs_of_one_term():
    data = _crossed()
    dev = sparselmm.deviance_function("y ~ x + (1|u)", data)
    costs = predict_costs(dev.terms, dev.cross.ZtWZ, dev.p)
    assert not costs[0].applicable  # one term: nothing to eliminate into a complement
    assert costs[1].applicable and costs[1].bytes < 1e6


def test_dense_levels_threshold_trades_pairs_for_dense_columns():
    from sparselmm.linalg.cost import DENSE_LEVELS_MIN_PAIRS, dense_levels_threshold

    # 2,000 light levels (k = 50) and 20 heavy ones (k = 2,000) over q₂ = 3,000
    k = np.concatenate([np.full(2000, 50), np.full(20, 2000)])
    pairs = float(np.sum(k * (k + 1) / 2))
    assert pairs > DENSE_LEVELS_MIN_PAIRS
    dense_from, seconds, nbytes = dense_levels_threshold(k, 3000, np.inf)
    assert dense_from == 2000  # the heavy levels go dense, the light stay in Q
    assert nbytes == pytest.approx(24 * 2000 * 50 * 51 / 2 + 16 * 3000 * 20)
    # over q₂ = 300 a dense level is cheaper in memory than a light one in Q (4,800 B against 30,600 B): a
    # budget below the time-optimal split takes every level dense, the least memory
    _, _, fastest = dense_levels_threshold(k, 300, np.inf)
    dense_from, _, nbytes = dense_levels_threshold(k, 300, 1.0)
    assert dense_from == 50 and nbytes == pytest.approx(16 * 300 * 2020) and nbytes < fastest
    # small Q: nothing moves
    assert dense_levels_threshold(np.full(100, 30), 3000, np.inf)[0] is None
