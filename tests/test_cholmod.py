"""sparselmm.linalg.cholmod: one error class whichever scikit-sparse (0.4 or 0.5) is installed; the measured choice
of ordering and simplicial/supernodal mode (sparselmm.linalg.factor.analyse_cholmod)."""

import numpy as np
import pytest
import scipy.sparse as sp

import sparselmm
from sparselmm.linalg import cholmod
from sparselmm.linalg.cholmod import SparseCholesky
from sparselmm.linalg.factor import analyse_cholmod
from sparselmm.linalg.thresholds import SUPERNODAL_MIN_FLOPS_PER_ENTRY


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
    monkeypatch.setattr(cholmod, "_CholeskyFactor", Raising)
    with pytest.raises(sparselmm.NumericalError, match="must be square"):
        SparseCholesky(_spd(3))
    f._factor = Raising.__new__(Raising)
    with pytest.raises(sparselmm.NumericalError, match="shape mismatch"):
        f.factorize(_spd(3))


def _crossed_pattern():
    """ZᵀZ + I of the crossed_small validation case (300 users × 120 items): METIS fills less than AMD."""
    from compare import load_case_data, load_cases

    case = next(c for c in load_cases() if c["id"] == "crossed_small_ml")
    f = sparselmm.deviance_function(case["formula"], load_case_data(case), reml=False, ordering="amd")
    return f.updater.update(f.factors(np.array([0.7, 0.4]))).copy()


def _grid_pattern(n=20):
    """The 5-point Laplacian on an n × n grid: AMD fills less than METIS at this size."""
    T = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(n, n))
    eye = sp.identity(n)
    return sp.csc_matrix(sp.tril(sp.kron(eye, T) + sp.kron(T, eye)))


def _measured_fill(A, ordering):
    f = SparseCholesky(A, ordering=ordering)
    f.factorize(A, beta=1.0)
    c = f.column_counts().astype(float)
    return c.sum(), np.sum(c * c)


@pytest.mark.parametrize(("pattern", "winner"), [(_crossed_pattern, "metis"), (_grid_pattern, "amd")])
def test_auto_ordering_is_the_one_with_less_fill(pattern, winner):
    """ordering='auto' keeps whichever of AMD and METIS gives L fewer flops (and here fewer entries)."""
    A = pattern()
    chol, reports = analyse_cholmod(A, "auto")
    fill = {o: _measured_fill(A, o) for o in ("amd", "metis")}
    assert fill["amd"] != fill["metis"]  # a case where the choice matters
    assert {r.ordering: (r.nnz, r.flops) for r in reports} == fill
    assert chol.ordering == min(fill, key=lambda o: fill[o][1]) == winner
    assert fill[winner][0] < fill[{"amd": "metis", "metis": "amd"}[winner]][0]
    chol.factorize(A, beta=1.0)  # the returned analysis factors and solves like any other
    full = (A + sp.tril(A, -1).T).toarray() + np.eye(A.shape[0])
    assert chol.logdet() == pytest.approx(np.linalg.slogdet(full)[1], rel=1e-12)


def test_simplicial_unless_the_factor_is_dense():
    """Supernodal only from SUPERNODAL_MIN_FLOPS_PER_ENTRY flops per entry of L (a dense 600 × 600 block: ~400)."""
    assert analyse_cholmod(_grid_pattern(10), "amd")[0].mode == "simplicial"
    rng = np.random.default_rng(1)
    B = rng.normal(size=(600, 600))
    dense = sp.csc_matrix(np.tril(B @ B.T / 600))
    chol, (report,) = analyse_cholmod(dense, "amd")
    assert report.flops_per_entry >= SUPERNODAL_MIN_FLOPS_PER_ENTRY
    assert chol.mode == "supernodal"


def test_explicit_ordering_is_kept_and_measured_once():
    A = _grid_pattern(8)
    chol, reports = analyse_cholmod(A, "metis")
    assert chol.ordering == "metis" and [r.ordering for r in reports] == ["metis"]


def test_solve_L_takes_vectors_and_either_memory_order():
    A = _spd(7)
    f = SparseCholesky(A, ordering="amd")
    f.factorize(A)
    B = np.arange(21.0).reshape(7, 3)
    expected = np.column_stack([f.solve_L(B[:, j]) for j in range(3)])
    np.testing.assert_array_equal(f.solve_L(np.ascontiguousarray(B)), expected)
    np.testing.assert_array_equal(f.solve_L(np.asfortranarray(B)), expected)
