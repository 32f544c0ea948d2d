"""Standard truncated SVD of the lower-triangular Toeplitz matrix (Ostergaard 1996): delay sensitive, for comparison."""

from __future__ import annotations

import numpy as np

from ctperf.engine.deconvolution.output import _CHUNK, DeconvolutionOutput
from ctperf.engine.deconvolution.peaks import residue_peak


def deconvolve_standard_svd(tissue_nt: np.ndarray, aif_t: np.ndarray, dt_s: float,
                            threshold: float) -> DeconvolutionOutput:
    """Standard truncated SVD (Ostergaard 1996) of the lower-triangular Toeplitz matrix (delay sensitive)."""
    a = np.asarray(aif_t, np.float64)
    t = len(a)
    idx = np.arange(t)
    amat = np.where(idx[:, None] >= idx[None, :], a[np.clip(idx[:, None] - idx[None, :], 0, t - 1)], 0.0) * dt_s
    u, s, vt = np.linalg.svd(amat)
    sinv = np.where(s >= threshold * s.max(), 1.0 / s, 0.0)
    pinv = (vt.T * sinv) @ u.T  # (T, T)
    tissue = np.asarray(tissue_nt, np.float32)
    rmax = np.zeros(len(tissue), np.float32)
    tmax = np.zeros(len(tissue), np.float32)
    pinv32 = pinv.T.astype(np.float32)
    for start in range(0, len(tissue), _CHUNK):
        r = tissue[start : start + _CHUNK] @ pinv32
        rmax[start : start + _CHUNK], tmax[start : start + _CHUNK] = residue_peak(r, dt_s, t, 0)
    return DeconvolutionOutput(rmax, tmax, np.full(len(tissue), threshold, np.float32))
