"""Process-wide settings that an application (CLI, web app, DICOM node, batch workers) applies once at start-up.

The pipeline itself never changes process-global state; these calls belong to the programs that own the process.
"""

from __future__ import annotations

import os


def prefer_small_pages() -> bool:
    """Ask numpy not to request transparent huge pages for its large arrays (unless ``NUMPY_MADVISE_HUGEPAGE`` is
    set, which then decides).  Returns True when the setting was changed.

    On Linux numpy advises the kernel to back large arrays with 2 MB pages; where transparent huge pages are in
    ``madvise`` mode, each such page is allocated and zeroed at its first touch, which on virtual machines can cost
    far more than it saves.  A Mode A run fills about 1 GB of fresh arrays (decoded frames, the resampled curves),
    so this decides seconds: measured on the 2-core development VM (`benchmarks/bench_pipeline.py`, 512x512x20x40),
    filling 210 MB of new arrays took 0.35 s with the hint and 0.025 s without; the whole run 6.4-6.8 s -> 5.2-6.0 s,
    CPU 11.6-12.1 s -> 9.2-10.4 s.  The results are identical.
    """
    if "NUMPY_MADVISE_HUGEPAGE" in os.environ:
        return False
    try:
        from numpy._core.multiarray import _set_madvise_hugepage
    except ImportError:  # numpy < 2
        try:
            from numpy.core.multiarray import _set_madvise_hugepage
        except ImportError:
            return False
    _set_madvise_hugepage(False)
    return True


#: Environment variables by which a user sets the BLAS libraries' thread counts; any of them set decides.
BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")


def single_threaded_blas() -> bool:
    """Run numpy's BLAS (matrix products) on one thread per calling thread (unless one of
    :data:`BLAS_THREAD_VARIABLES` is set, which then decides).  Returns True when the setting was changed.

    The pipeline spreads its work over its own threads (``compute.workers``), several of which multiply matrices
    at the same time (the resampling to the uniform time grid, the denoising's temporal basis, the dispersion
    prior's curve fits); OpenBLAS's own thread pool on top of them oversubscribes the cores and its waiting
    threads spin.  Measured on the 2-core development VM (`benchmarks/bench_pipeline.py`, 512x512x20x40, engine
    2.10): whole run 6.3-6.6 s -> 5.9-6.3 s, CPU 10.3-10.7 s -> 9.2-9.8 s.  It also makes the numbers independent
    of the machine's core count: OpenBLAS splits a product differently with another number of threads, which
    changes the last bits of the maps (on that study the indices move in their fourth decimal).
    """
    if any(v in os.environ for v in BLAS_THREAD_VARIABLES):
        return False
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")
    return True


def configure_process() -> None:
    """Every start-up setting of this module (:func:`prefer_small_pages`, :func:`single_threaded_blas`)."""
    prefer_small_pages()
    single_threaded_blas()
