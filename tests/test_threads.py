"""sparselmm.linalg.threads: the one BLAS-thread policy limits every loaded BLAS to one thread below its
threshold, leaves the threads alone above it, and restores each library's own count on exit."""

import pytest
from threadpoolctl import ThreadpoolController

import sparselmm
from sparselmm.linalg import threads
from sparselmm.linalg.thresholds import EVALUATION_ONE_THREAD_FLOPS, LOOP_ONE_THREAD_FLOPS


def _blas_threads() -> list[int]:
    return [lib["num_threads"] for lib in ThreadpoolController().info() if lib["user_api"] == "blas"]


@pytest.fixture
def two_threads():
    """Every BLAS on two threads for the test (the policy only ever lowers counts to one)."""
    with ThreadpoolController().limit(limits=2, user_api="blas"):
        before = _blas_threads()
        if not before or max(before) < 2:
            pytest.skip("no BLAS that runs on two threads here")
        yield before


def test_one_thread_below_the_threshold_and_restored(two_threads):
    with threads.blas_threads(10):
        assert set(_blas_threads()) == {1}
    assert _blas_threads() == two_threads


def test_unchanged_above_the_threshold(two_threads):
    big = int(round(LOOP_ONE_THREAD_FLOPS ** (1 / 3))) + 1
    with threads.blas_threads(big):
        assert _blas_threads() == two_threads
    with threads.blas_threads(big, below=(big + 1) ** 3):  # a caller's own threshold
        assert set(_blas_threads()) == {1}


def test_small_evaluations_run_on_one_thread(two_threads):
    assert threads.small_evaluation(EVALUATION_ONE_THREAD_FLOPS / 2)
    assert not threads.small_evaluation(EVALUATION_ONE_THREAD_FLOPS)
    with threads.evaluation_limit(True), threads.optimizer_limit(True):
        assert set(_blas_threads()) == {1}
    assert _blas_threads() == two_threads


def test_the_deviance_uses_the_policy(two_threads):
    f = sparselmm.deviance_function("Reaction ~ Days + (Days | Subject)", sparselmm.datasets.load("sleepstudy"))
    assert f._small == threads.small_evaluation(f.chol.dense_flops())
    with f._blas_limit():
        assert min(_blas_threads()) == 1
    assert _blas_threads() == two_threads


def test_nested_one_thread_contexts_restore_the_outer_counts(two_threads):
    with threads.one_blas_thread():
        with threads.evaluation_limit(True):
            assert set(_blas_threads()) == {1}
        assert set(_blas_threads()) == {1}  # the inner context left the outer one's limit in place
    assert _blas_threads() == two_threads
