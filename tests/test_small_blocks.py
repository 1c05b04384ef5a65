"""sparselmm.linalg.small_blocks: the written-out small-block kernels equal numpy's on stacks of 1 × 1 to 3 × 3 blocks
(and fall back to numpy for few levels or larger blocks)."""

import numpy as np
import pytest

from sparselmm.linalg.small_blocks import bcholesky, bmatmul, btri_inv
from sparselmm.linalg.thresholds import SMALL_BLOCKS_MIN_LEVELS


@pytest.mark.parametrize("k", [1, 2, 3, 4])
@pytest.mark.parametrize("m", [5, SMALL_BLOCKS_MIN_LEVELS, 500])
def test_kernels_equal_numpy(k, m):
    rng = np.random.default_rng(k * 100 + m)
    A = rng.normal(size=(m, k, k))
    S = A @ A.transpose(0, 2, 1) + 0.1 * np.eye(k)
    L = bcholesky(S)
    np.testing.assert_allclose(L, np.linalg.cholesky(S), rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(btri_inv(L), np.linalg.inv(L), rtol=1e-9, atol=1e-11)
    B = rng.normal(size=(m, k, 3))
    T = rng.normal(size=(k, k))
    np.testing.assert_allclose(bmatmul(A, B), A @ B, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(bmatmul(T, S), T @ S, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(bmatmul(S, T), S @ T, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("bad", [np.nan, -1.0])
def test_cholesky_refuses_a_block_that_is_not_positive_definite(bad):
    S = np.tile(np.eye(2), (200, 1, 1))
    S[17, 1, 1] = bad
    with pytest.raises(np.linalg.LinAlgError):
        bcholesky(S)
