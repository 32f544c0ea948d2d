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

