"""The error the denoising leaves in the study's curves: the input of the noise-aware Tmax shift.

The bias correction's Tmax shift (:mod:`ctperf.engine.deconvolution`) is emulated on noise-free model curves. A
noisy curve's residue peaks elsewhere: the argmax of a noisy, regularised residue is pulled towards the noise's
largest excursion near the guide, and the level the oscillation index picks depends on the noise too (measured on
the project phantom at 8 HU: undispersed tissue reads ~0.5 s late with the study mixture as the shift's prior,
docs/engine-notes.md "Model evidence"). The noise-aware shift (``deconvolution.tmax_noise_aware``,
:func:`ctperf.engine.deconvolution.noisy_shift_tables`) repeats the emulation with errors of the kind the curves
carry, which this module measures from the study itself by a parametric bootstrap:

the denoised curves stand in for the truth; white noise of the study's measured SD
(:attr:`Preprocessed.noise_hu`, the temporal SD of the baseline frames on the computation grid) is added to every
acquired frame and goes through the same baseline subtraction, resampling and temporal smoothing (one linear
operator per slice) and the same spatial denoising (whose edge-preserving weights are scaled to the noise it
measures); the re-denoised curves minus the denoised curves are one realisation of the error. The denoising is
nonlinear and projects onto the study's temporal basis, so the error is neither white nor stationary (measured:
white temporally smoothed noise of the same RMS corrects almost nothing). Adding the noise to the measured data
instead (twice its noise) makes the denoising smooth harder and under-estimates the error.

Assumes spatially white noise in the frames (the baseline SD is per voxel); spatially correlated noise survives
the spatial filter more, so its error would be under-estimated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ctperf.engine.preprocess import resample_to_grid


@dataclass
class DenoisedNoise:
    """``vectors``: (n_vectors, T) float64 error curves of tissue voxels (uniform grid, HU); ``rms_hu``: (n_mask,)
    RMS over time of each mask voxel's error."""

    vectors: np.ndarray
    rms_hu: np.ndarray


def denoised_noise(denoised_nt: np.ndarray, mask_zyx: np.ndarray, tissue_zyx: np.ndarray,
                   native_times_s: np.ndarray, grid_s: np.ndarray, n_baseline: int, noise_hu: float,
                   denoise: Callable[[np.ndarray, np.ndarray], np.ndarray], temporal_sigma_s: float,
                   n_vectors: int = 128, seed: int = 0, workers: int | None = None) -> DenoisedNoise | None:
    """One bootstrap realisation of the error of the denoised curves (see module docstring).

    denoised_nt : (n_mask, T) denoised delta HU curves on the uniform grid ``grid_s`` of the ``mask_zyx`` voxels
    (order of ``np.nonzero``); tissue_zyx : the voxels whose errors may enter ``vectors`` (brain without CSF);
    native_times_s : (t_native,) or (t_native, z) acquisition times on the time axis of ``grid_s`` (s);
    n_baseline : native baseline frames (their mean is subtracted, as from the data, and is the noise of the
    denoising's baseline image); denoise : the curves' spatial denoising, (delta HU (T, z, y, x), extra noise of
    its baseline image (z, y, x)) -> (n_mask, T); temporal_sigma_s : the temporal smoothing folded into the
    resampling. Returns None when the noise level is unknown or not positive. Seeded: the same study gives the
    same errors.
    """
    if not np.isfinite(noise_hu) or noise_hu <= 0 or not mask_zyx.any():
        return None
    rng = np.random.default_rng(seed)
    times = np.asarray(native_times_s, float)
    white = rng.standard_normal((times.shape[0],) + mask_zyx.shape, dtype=np.float32)
    white *= np.float32(noise_hu)
    baseline_noise = white[:max(1, n_baseline)].mean(axis=0)
    white -= baseline_noise
    noisy = resample_to_grid(white, times, grid_s, temporal_sigma_s, mask_zyx=mask_zyx, workers=workers)
    del white
    noisy[:, mask_zyx] += np.asarray(denoised_nt, np.float32).T
    error = denoise(noisy, baseline_noise).astype(np.float64)
    del noisy
    error -= denoised_nt
    rms = np.sqrt(np.mean(error ** 2, axis=1))
    pool = np.flatnonzero(tissue_zyx[mask_zyx])
    if len(pool) == 0:
        pool = np.arange(len(error))
    pick = rng.choice(pool, min(n_vectors, len(pool)), replace=False)
    return DenoisedNoise(vectors=error[np.sort(pick)], rms_hu=rms)
