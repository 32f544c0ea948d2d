"""The block-circulant system (Wu 2003): padding, the AIF spectrum, its noise floor, the ladder of truncation levels,
the oscillation index and each level's frequency filter."""

from __future__ import annotations

import numpy as np
import scipy.fft as sfft

from ctperf.config import DeconvolutionConfig


def padded_length(n: int) -> int:
    """Circulant length: at least 2 n (Wu 2003), rounded up to a fast FFT size."""
    return int(sfft.next_fast_len(2 * n, real=True))


def circulant_spectrum(aif: np.ndarray, dt_s: float, length: int) -> np.ndarray:
    """Eigenvalues of the block-circulant convolution matrix (= its singular values in modulus), rfft layout."""
    return sfft.rfft(np.asarray(aif, np.float64) * dt_s, n=length)


def aif_noise_floor(aif_t: np.ndarray) -> tuple[float, float]:
    """(SD of the AIF's pre-bolus samples, the AIF's noise floor in its spectrum relative to the spectrum's maximum).

    The pre-bolus samples are those before the bolus's rise (the last sample at or below 5 % of the peak before the
    AIF first reaches half its peak, less one; noise seldom reaches half the peak); with fewer than three both are
    NaN.  The floor is ``SD sqrt(T) / sum(AIF)`` (white noise over T samples against the DC bin, the
    spectrum's maximum for a positive bolus).  Where it exceeds the lowest regularisation level, noise-only
    frequencies of the AIF pass the deconvolution filter: the tissue (which saw the noise-free AIF) has almost no
    power there, so its residue comes out lower and later than the noise-free emulation of the correction predicts
    (measured on AIFs with 2-5 % noise: Tmax 0.6-1.9 s late, CBF 10-25 % low; README "Known gaps").
    """
    a = np.asarray(aif_t, np.float64)
    peak = float(a.max()) if a.size else 0.0
    half = int(np.argmax(a >= 0.5 * peak)) if peak > 0 else 0
    low = np.flatnonzero(a[:half] <= 0.05 * peak)
    base = a[: max(int(low[-1]) - 1, 0)] if len(low) else a[:0]
    total = float(a.sum())
    if len(base) < 3 or total <= 0:
        return float("nan"), float("nan")
    sd = float(base.std(ddof=1))
    return sd, sd * float(np.sqrt(len(a))) / total


def truncation_ladder(cfg: DeconvolutionConfig, aif_floor: float = float("nan")) -> list[float]:
    """The bcSVD truncation levels (fractions of the AIF spectrum's maximum, ascending) used with an AIF of noise
    floor ``aif_floor`` (:func:`aif_noise_floor`): ``oi_thresholds`` without the levels below
    ``aif_noise_margin x aif_floor`` (the highest level is always kept; all of them when the floor is unknown, the
    margin is 0, or ``cfg.method`` is "standard": the classic convention keeps its whole ladder).

    Why: where the AIF's spectrum ``S`` carries a noise ``N`` (complex Gaussian, ``E|N|^2 = s^2``), the inverse filter
    applied to a tissue that saw the noise-free AIF passes ``S / (S + N)``, whose mean is ``1 - exp(-|S|^2 / s^2)``:
    such frequencies are attenuated (63 % kept at S/N = 1, 98 % at 2) while the correction's emulation, built with
    the same noisy AIF, assumes they pass whole; the residue then reads lower and later than corrected.
    """
    levels = sorted(float(p) for p in cfg.oi_thresholds)
    if cfg.method != "standard" and cfg.aif_noise_margin > 0 and np.isfinite(aif_floor):
        levels = [p for p in levels if p >= cfg.aif_noise_margin * aif_floor] or levels[-1:]
    return levels


def lowest_regularisation(cfg: DeconvolutionConfig, aif_floor: float = float("nan")) -> float:
    """The smallest regularisation the method uses, as a fraction of the AIF spectrum's maximum: frequencies of the
    AIF above it pass the filter (bcsvd / standard: the lowest level of :func:`truncation_ladder` for an AIF of
    noise floor ``aif_floor``; tikhonov: lambda; svd: the threshold)."""
    if cfg.method == "tikhonov":
        return float(cfg.tikhonov_lambda)
    if cfg.method == "svd":
        return float(cfg.svd_threshold)
    return truncation_ladder(cfg, aif_floor)[0]


def passband(filt: np.ndarray) -> int:
    """The number of leading rfft bins ``filt`` passes (its last nonzero bin + 1; at least 1)."""
    nz = np.flatnonzero(filt)
    return int(nz[-1]) + 1 if len(nz) else 1


def filtered_residues(spec: np.ndarray, filt: np.ndarray, length: int, padded: np.ndarray,
                      workers: int | None = None) -> np.ndarray:
    """``irfft(spec * filt, n=length)`` along axis 1 for spectra ``spec`` (m, F') that hold at least the bins
    ``filt`` passes (:func:`passband`): the product is formed on those bins only (the others are zeros either
    way: the same residues), in the work buffer ``padded`` (at least m rows of ``length // 2 + 1`` bins of the
    product's dtype, reused between calls), whose other bins are set to 0."""
    k = passband(filt)
    buf = padded[:len(spec)]
    buf[:, k:] = 0
    np.multiply(spec[:, :k], filt[:k], out=buf[:, :k])
    return sfft.irfft(buf, n=length, axis=1, workers=workers)


def oscillation_index(residue: np.ndarray, axis: int = -1) -> np.ndarray:
    """Wu 2003 oscillation index: ``OI = (1/L) (1/max r) sum_k |r[k] - 2 r[k-1] + r[k-2]|``."""
    r = np.moveaxis(np.asarray(residue), axis, -1)
    d2 = r[..., 2:] - 2.0 * r[..., 1:-1]  # in place from here: one temporary for the whole second difference
    d2 += r[..., :-2]
    d2 = np.abs(d2, out=d2).sum(axis=-1)
    rmax = r.max(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        oi = d2 / (r.shape[-1] * rmax)
    return np.where(rmax > 0, oi, np.inf)


def _filters(spec: np.ndarray, method: str, cfg: DeconvolutionConfig,
             aif_floor: float = float("nan")) -> tuple[list[np.ndarray], list[float]]:
    """Frequency-domain pseudo-inverse filters ``W / S`` for each regularisation level (rfft layout); bcSVD: the
    levels of :func:`truncation_ladder` for an AIF of noise floor ``aif_floor``."""
    mag = np.abs(spec)
    smax = float(mag.max())
    inv = np.zeros_like(spec)
    nz = mag > 1e-12 * smax
    inv[nz] = 1.0 / spec[nz]
    if method == "bcsvd":
        levels = truncation_ladder(cfg, aif_floor)
        return [np.where(mag >= p * smax, inv, 0.0).astype(np.complex64) for p in levels], levels
    if method == "tikhonov":
        lam = float(cfg.tikhonov_lambda) * smax
        return [(np.conj(spec) / (mag**2 + lam**2)).astype(np.complex64)], [float(cfg.tikhonov_lambda)]
    raise ValueError(f"unknown circulant method {method!r}")
