"""Process settings applied by the applications at start-up (never by the pipeline itself)."""

import numpy as np

from ctperf.apps.runtime import prefer_small_pages

try:
    from numpy._core.multiarray import _set_madvise_hugepage
except ImportError:  # numpy < 2
    from numpy.core.multiarray import _set_madvise_hugepage


def test_prefer_small_pages_respects_the_users_choice(monkeypatch):
    before = _set_madvise_hugepage(True)  # returns the previous setting
    try:
        monkeypatch.setenv("NUMPY_MADVISE_HUGEPAGE", "1")
        assert prefer_small_pages() is False
        assert _set_madvise_hugepage(True) is True  # unchanged
        monkeypatch.delenv("NUMPY_MADVISE_HUGEPAGE")
        assert prefer_small_pages() is True
        assert _set_madvise_hugepage(True) is False  # it was switched off
        assert np.zeros(1 << 22).sum() == 0.0
    finally:
        _set_madvise_hugepage(before)


def test_single_threaded_blas_respects_the_users_choice(monkeypatch):
    from threadpoolctl import threadpool_info, threadpool_limits

    from ctperf.apps.runtime import BLAS_THREAD_VARIABLES, single_threaded_blas

    # two threads first (the test session itself runs on one, tests/conftest.py); the limits are restored on exit
    with threadpool_limits(limits=2, user_api="blas"):
        for name in BLAS_THREAD_VARIABLES:
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("OPENBLAS_NUM_THREADS", "2")
        assert single_threaded_blas() is False

        def blas_threads():
            return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]

        assert blas_threads() and all(n == 2 for n in blas_threads())  # the user's setting is left alone
        monkeypatch.delenv("OPENBLAS_NUM_THREADS")
        assert single_threaded_blas() is True
        assert all(n == 1 for n in blas_threads())  # numpy's OpenBLAS (and scipy's, once loaded)
