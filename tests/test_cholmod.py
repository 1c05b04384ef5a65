"""sparselmm._cholmod: one error class whichever scikit-sparse (0.4 or 0.5) is installed."""

import numpy as np
import pytest
import scipy.sparse as sp

import sparselmm
from sparselmm import _cholmod
from sparselmm._cholmod import SparseCholesky


def _spd(n=5):
    rng = np.random.default_rng(0)
    A = rng.normal(size=(n, n))
    return sp.csc_matrix(np.tril(A @ A.T + n * np.eye(n)))


def test_non_square_matrix_is_a_numerical_error():
    with pytest.raises(sparselmm.NumericalError, match="symbolic analysis .* 3 x 4, not square"):
        SparseCholesky(sp.csc_matrix((3, 4)))


def test_wrong_shape_at_factorisation_is_a_numerical_error():
    f = SparseCholesky(_spd(5))
    with pytest.raises(sparselmm.NumericalError, match="4 x 4, but the analysis was for 5 x 5"):
        f.factorize(_spd(4))


def test_round_trip():
    A = _spd(6)
    f = SparseCholesky(A)
    f.factorize(A)
    full = (A + sp.tril(A, -1).T).toarray()
    assert f.logdet() == pytest.approx(np.linalg.slogdet(full)[1], rel=1e-12)
    b = np.arange(6.0)
    x = f.solve_Lt(f.solve_L(b[:, None]))
    np.testing.assert_allclose(full @ x[:, 0], b, rtol=1e-10, atol=1e-12)
    assert f.nnz() >= 6


def test_a_raw_value_error_from_scikit_sparse_becomes_numerical_error(monkeypatch):
    """scikit-sparse 0.5 validates input itself and raises plain ValueError: wrapped like CholmodError."""

    class Raising:
        def __init__(self, *args, **kwargs):
            raise ValueError("Input matrix must be square")

        def factorize(self, *args, **kwargs):
            raise ValueError("shape mismatch")

    f = SparseCholesky(_spd(3))
    monkeypatch.setattr(_cholmod, "_CholeskyFactor", Raising)
    with pytest.raises(sparselmm.NumericalError, match="must be square"):
        SparseCholesky(_spd(3))
    f._factor = Raising.__new__(Raising)
    with pytest.raises(sparselmm.NumericalError, match="shape mismatch"):
        f.factorize(_spd(3))
