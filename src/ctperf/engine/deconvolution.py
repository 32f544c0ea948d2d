"""Deconvolution of tissue curves by the arterial input function (AIF).

Model (indicator dilution): ``C(t) = (CBF * kH / rho) * (AIF (x) R)(t)`` with the residue function ``R``
(``R(0) = 1`` for a tissue without delay).  In discrete form with step ``dt``: ``c = dt * A r`` where ``r`` is
the flow-scaled residue (1/s) and ``A`` the convolution matrix built from the AIF.

Methods
-------
``"bcsvd"`` (default) - block-circulant SVD with oscillation-index control (Wu et al., MRM 2003).
    The AIF and the tissue curve are zero-padded to ``L >= 2T`` samples; the convolution matrix becomes circulant,
    so the arrival delay of the tissue against the AIF no longer biases CBF ("delay insensitive").  A circulant
    matrix is diagonalised by the DFT: its singular values are ``|DFT(dt * aif_padded)|`` and its pseudo-inverse
    is a per-frequency filter.  We therefore deconvolve *all voxels at once* in the frequency domain
    (``r = IDFT(DFT(c) * W / DFT(dt*aif))``; ``W`` = 1 on the frequencies whose singular value is above
    ``P * max``, else 0).  The truncation ``P`` is chosen **per voxel** as the smallest value of a small ladder
    ``oi_thresholds`` whose residue has an oscillation index ``OI <= oscillation_index`` (Wu 2003); the whole
    ladder is evaluated vectorised, no per-voxel loops.  (Noisier curves -> more regularisation; clean grey
    matter keeps a small threshold so high flows are not underestimated.)  Levels below ``aif_noise_margin`` times
    the AIF's spectral noise floor are left out (:func:`truncation_ladder`): the AIF's noise there would attenuate
    the residue in a way the bias correction cannot emulate.
``"tikhonov"`` - the same circulant system with Tikhonov regularisation (Calamante et al., MRM 2003):
    filter ``|S|^2 / (|S|^2 + (lambda * max S)^2)``; ``lambda = tikhonov_lambda``.
``"svd"`` - standard truncated SVD of the lower-triangular (non-circulant) Toeplitz matrix with a fixed
    threshold (Ostergaard 1996).  Delay sensitive; for comparison only.
``"standard"`` - the classic model-free convention: the ``"bcsvd"`` ladder (all its levels, whatever the AIF's
    noise), the residue's maximum over the whole window and its time, no guided search and no correction (what
    published thresholds were derived on).

Outputs per voxel: ``rmax`` = max of the residue (1/s; CBF = 6000 kH/rho * rmax mL/100g/min) and ``tmax_s`` =
time of that maximum, located with sub-sample precision by a parabola through the peak sample and its
neighbours; negative delays (tissue before the AIF, wrapped to the end of the circulant window) are searched too
and reported as 0 (or kept negative with ``bound_tmax = False``, for callers that filter Tmax spatially before
bounding it).  Every run also returns the standard-convention values of the same residues.

Estimand (docs/definitions.md §2)
    The tissue's impulse response is ``F k(t) = F (h (x) R)(t - delay)`` (residue ``R`` of any shape, dispersion
    ``h``).  The default returns the peak of the *unregularised* ``F k`` and its time: the flow and the delay when
    the tissue has no dispersion, whatever the residue's shape.  ``F`` itself is not identifiable under dispersion.

Regularisation-bias correction (``correct_regularisation_bias``, default on)
    Any regularised deconvolution returns ``w (x) F k``: the response seen through the known effective filter
    ``w`` of the chosen level (for the circulant methods ``W = DFT(w)``: the truncation mask or the Tikhonov
    factor), further blurred by sampling a fast-rising response every ``dt``.  Its peak is lower and later than
    that of ``F k`` by amounts that depend on the shape of ``k``.  They are computed by a noise-free emulation of
    the whole measurement with *this study's AIF* (:func:`step_response_tables`) for a family of model residues
    (:func:`model_residues`: gamma transit-time survival functions, dispersed by exponential kernels; the family is
    ``residue_shapes`` x ``model_dispersions_s``) and a grid of MTTs.  Each model's likelihood is measured on the
    mean curves of small groups of voxels: by default on their deconvolved residues (:func:`model_weights`,
    ``model_evidence = "residues"``; weights smoothed in-plane), or by fitting each model's tissue curve (flow, delay
    and MTT free) to them (:func:`model_log_evidence`, ``"curves"``; large vessels and CSF excluded; the
    log-likelihoods of a neighbourhood's groups summed: the joint evidence).  The correction of each voxel is
    the weighted average of the models' corrections (heights geometrically), each at the MTT that model
    gives the voxel (exact inversion of the emulated peak-to-area ratio, :func:`log_tau_from_peak`).  The weights
    carry a study-wide prior (:func:`study_model_mixture`, :func:`model_prior`: noise hides the shape and the
    dispersion from one region, not from the study's informative blocks together): by default the mixture's
    proportions for the height and its dispersion shares for the Tmax shift, which leaves the plug-flow models out
    (a flat top has no defined peak time).  The ratio
    that selects the height correction may be filtered (``tau_filter``, the engine's 3 mm median): a noise-lifted
    peak would otherwise select a too short MTT and a too large correction; the Tmax shift's by default too (since
    engine 2.10; the voxel's own ratio before).  No fitted constants.

Lag-aware guided peak search (``peak_window_s``, ``tmax_window_s``; ladders of several levels)
    ``max(R)`` of a noisy residue is biased upwards by the maximum over the samples of its search window, most
    where the residue is flat and low (core, white matter).  The peak of level ``j`` lies between the peak of the
    most regularised residue (the guide) moved earlier by the difference of the two levels' regularisation lags
    (from the emulation) and the guide's peak, so the height is searched there (widened by ``peak_window_s``,
    default 0) and Tmax within ``+-tmax_window_s`` of the guide's peak.  ``peak_window_s = None``: whole window.
    With ``tau_filter`` the guide's peak time is itself filtered (the same spatial median) and its height read
    there: the maximum of a flat, noisy guide otherwise sits where the noise is highest (measured on the project
    phantom at 8 HU: core CBF 2.0x -> 1.75x the truth, core median rCBF 0.26 -> 0.23, the noise-free value).

The oscillation index is evaluated on a reference grid of ``oi_reference_dt_s`` (default 1 s) so that its
target does not depend on the chosen time step (Wu's value was defined for ~1 s sampling).
"""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import scipy.fft as sfft
from scipy import sparse
from scipy.special import gammaincc

from ctperf.config import DeconvolutionConfig, side_thread, thread_count

_CHUNK = 8192
#: Curves x MTT nodes x lags per chunk of :func:`curve_misfits` (its cross-correlations, float32).
_CURVE_CHUNK = 1 << 21


@dataclass
class DeconvolutionOutput:
    #: Peak of the flow-scaled residue (1/s), shape (n,).
    rmax_per_s: np.ndarray
    #: Time of the residue peak (s), shape (n,); >= 0 unless :func:`deconvolve` was asked for signed values.
    tmax_s: np.ndarray
    #: Regularisation used per voxel (truncation fraction or lambda), shape (n,).
    threshold: np.ndarray
    #: The standard model-free convention at the same regularisation: the maximum of the residue over the whole
    #: search window (1/s) and its time (s), no guided search and no bias correction.
    rmax_standard_per_s: np.ndarray | None = None
    tmax_standard_s: np.ndarray | None = None
    #: The model residues of the bias correction, (gamma shape k, dispersion d s) pairs (:func:`model_family`;
    #: one exponential model when the method has a single regularisation level); None for unguided methods.
    model_family: list[tuple[float, float]] | None = None
    #: Mean weight of each of those models in the height correction (with the study prior of ``height_prior``) over
    #: the evidence voxels (tissue), (n_models,) float64, or None.
    model_weight_mean: np.ndarray | None = None
    #: The proportion of each model in the study's mixture (``dispersion_prior = "study"``,
    #: :func:`study_model_mixture`), the prior of the models' weights, (n_models,), or None.
    study_mixture: np.ndarray | None = None
    #: (blocks that informed that mixture, tissue blocks offered), or None without a study prior.
    dispersion_prior_blocks: tuple[int, int] | None = None
    #: How far each voxel's Tmax would move between the dispersions its Tmax shift's weights leave open
    #: (:func:`dispersion_spread` of the models' noise-free shifts at the voxel's level and MTT; s), (n,) float32,
    #: or None without the guided correction.
    tmax_dispersion_sd_s: np.ndarray | None = None


def model_residues(tau_grid_s: np.ndarray, dt_s: float, n_pos: int, dispersion_s: float = 0.0,
                   fine: int = 10, shape_k: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Reference residues on a grid ``fine`` times finer than ``dt_s``, mean transit time ``tau``: the survival
    function of gamma-distributed transit times of shape ``shape_k`` (``k = 1``: ``exp(-t/tau)``, one well-mixed
    compartment; large ``k``: plug flow, a box of length ``tau``), optionally convolved with the unit-area
    dispersion kernel ``exp(-t/d)/d`` (``d = dispersion_s``).

    Returns (fine time grid (s), residues (n_tau, n_fine), true peak heights, true peak times (s)).
    """
    tf = np.arange(n_pos * fine) * (dt_s / fine)
    if shape_k == 1.0:
        ex = np.exp(-tf[None, :] / tau_grid_s[:, None])
    else:
        ex = gammaincc(shape_k, shape_k * tf[None, :] / tau_grid_s[:, None])
    if dispersion_s > 0:
        k = np.exp(-tf / dispersion_s)
        k /= k.sum()
        n = len(tf)
        ex = sfft.irfft(sfft.rfft(ex, n=2 * n, axis=1) * sfft.rfft(k, n=2 * n)[None], n=2 * n, axis=1)[:, :n]
    return tf, ex, ex.max(axis=1), tf[np.argmax(ex, axis=1)]


def _emulated_tissue_spectra(aif_t: np.ndarray, dt_s: float, length: int, n_pos: int, tau_grid_s: np.ndarray,
                             dispersion_s: float, shape_k: float, fine: int = 10
                             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Spectra (rfft, circulant length) of the noise-free tissue curves ``AIF (x) R_tau`` for unit flow, sampled
    every ``dt_s`` like the data (continuous convolution on a grid ``fine`` times finer, AIF linearly
    interpolated), the true peak heights and the true peak times (s) of the (dispersed) residues."""
    tf, ex, true_h, true_t = model_residues(tau_grid_s, dt_s, n_pos, dispersion_s, fine, shape_k)
    t = np.arange(n_pos) * dt_s
    af = np.interp(tf, t, np.asarray(aif_t, float))
    n = len(tf)
    cf = sfft.irfft(sfft.rfft(ex, n=2 * n, axis=1) * sfft.rfft(af, n=2 * n)[None], n=2 * n, axis=1)[:, :n]
    return sfft.rfft(cf[:, ::fine] * (dt_s / fine), n=length, axis=1), true_h, true_t


def step_response_tables(aif_t: np.ndarray, inverse_filters: list[np.ndarray], dt_s: float, length: int,
                         n_pos: int, n_neg: int, tau_grid_s: np.ndarray,
                         dispersion_s: float = 0.0, shape_k: float = 1.0
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Noise-free emulation of the whole measurement for model residues (:func:`model_residues`).

    For each ``tau``: the continuous tissue curve ``AIF (x) R_tau`` is computed on a fine grid (AIF linearly
    interpolated), sampled every ``dt_s`` like the data, and deconvolved with each regularisation level's
    inverse filter.  Returns the estimated peak height for a unit flow and the estimated minus true peak time
    (s), as arrays (n_levels, n_tau), the true peak height of the (dispersed) residue, (n_tau,), and the spectra
    of the sampled tissue curves, (n_tau, length // 2 + 1).  This captures both the regularisation and the
    discretisation of a fast-rising residue at the sampling step.  The heights are absolute (the peak read for a
    unit flow): ``peak / area`` of a measured residue inverts them for the MTT (:func:`log_tau_from_peak`), and
    ``true / estimated`` height is the factor that restores the peak of the unregularised residue ``h (x) R``.
    """
    c_spec, true_h, true_t = _emulated_tissue_spectra(aif_t, dt_s, length, n_pos, tau_grid_s, dispersion_s,
                                                      shape_k)
    heights, shifts = [], []
    for filt in inverse_filters:
        pk, tm = _peak_signed(sfft.irfft(c_spec * filt[None], n=length, axis=1), dt_s, n_pos, n_neg)
        heights.append(pk)
        shifts.append(tm - true_t)
    return np.array(heights), np.array(shifts), true_h, c_spec


def log_tau_from_peak(peak_per_s: np.ndarray, auc_ratio_s: np.ndarray, heights_level: np.ndarray,
                      tau_grid_s: np.ndarray) -> np.ndarray:
    """log MTT per voxel from a measured residue peak and the area ratio, by exact inversion of the emulation.

    For a residue ``F exp(-t/tau)`` the area ratio is ``A = F tau`` and the peak read at a regularisation level is
    ``F h(tau)`` (``h`` from :func:`step_response_tables`), so ``peak / A = h(tau) / tau`` - a decreasing function
    of ``tau`` that is inverted by interpolation (no fixed-point iteration, which converged too slowly where
    ``h`` changes fast with ``tau``: short MTTs, grey matter).  Values outside the table are clipped to its range.
    """
    lt = np.log(tau_grid_s)
    g = np.log(np.clip(heights_level, 1e-6, None)) - lt
    g = np.minimum.accumulate(g)  # enforce a decreasing table (flat tails cannot be inverted anyway)
    with np.errstate(divide="ignore", invalid="ignore"):
        y = np.log(np.asarray(peak_per_s, np.float64) / np.asarray(auc_ratio_s, np.float64))
    y = np.nan_to_num(y, nan=-np.inf, posinf=np.inf, neginf=-np.inf)
    return np.interp(-y, -g, lt)  # np.interp needs increasing x: invert -g (increasing) -> log tau


def apply_bias_correction(rmax: np.ndarray, tmax: np.ndarray, level: np.ndarray, auc_ratio: np.ndarray,
                          heights: np.ndarray, rel_heights: np.ndarray, shifts: np.ndarray,
                          tau_grid_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Restore the unregularised residue peak and its time, per voxel, for one model residue (unguided search).

    The table entry is selected by the voxel's MTT ``tau``, obtained from its own peak at its own level with the
    absolute ``heights`` (:func:`log_tau_from_peak`); ``rmax`` is divided by the relative height (estimated /
    true peak) and the peak shift is subtracted from ``tmax``.
    """
    lt = np.log(tau_grid_s)
    h = np.ones(len(rmax))
    s = np.zeros(len(rmax))
    for j in range(heights.shape[0]):
        m = level == j
        if m.any():
            log_tau = log_tau_from_peak(rmax[m], auc_ratio[m], heights[j], tau_grid_s)
            h[m] = np.interp(log_tau, lt, rel_heights[j])
            s[m] = np.interp(log_tau, lt, shifts[j])
    return ((rmax / np.clip(h, 0.2, 1.2)).astype(np.float32),
            (tmax - s).astype(np.float32))


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


def residue_peak(residue: np.ndarray, dt_s: float, n_pos: int, n_neg: int) -> tuple[np.ndarray, np.ndarray]:
    """Peak value and sub-sample time (clipped at >= 0) of each residue row; see :func:`_peak_signed`."""
    pk, t = _peak_signed(residue, dt_s, n_pos, n_neg)
    return pk, np.maximum(t, 0.0).astype(np.float32)



def _search_window(residue: np.ndarray, n_pos: int, n_neg: int) -> np.ndarray:
    if n_neg > 0:
        return np.concatenate([residue[:, -n_neg:], residue[:, :n_pos]], axis=1)
    return residue[:, :n_pos]


def _peak_signed(residue: np.ndarray, dt_s: float, n_pos: int, n_neg: int, centre_idx: np.ndarray | None = None,
                 half_width: int = 0, span_idx: tuple[np.ndarray, np.ndarray] | None = None,
                 window: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Peak value and sub-sample time (s, may be negative) of each residue row (circulant layout).

    Searches times ``-n_neg*dt .. (n_pos-1)*dt`` (negative times are the wrapped end of the window) - or only
    ``centre_idx +- half_width`` samples of it when given - locates the maximum sample and refines it with a
    parabola through its two neighbours.  ``window``: ``_search_window(residue, n_pos, n_neg)`` when the caller
    already has it (several searches of the same residues).
    """
    win = _search_window(residue, n_pos, n_neg) if window is None else window
    if span_idx is not None:
        i = _argmax_between(win, np.asarray(span_idx[0]) - half_width, np.asarray(span_idx[1]) + half_width)
    elif centre_idx is not None and half_width > 0:
        i = _argmax_near(win, centre_idx, half_width)
    else:
        i = np.argmax(win, axis=1)
    frac, peak = _parabola_peak(win, i)
    t = (i + frac - n_neg) * dt_s
    return peak.astype(np.float32), t.astype(np.float32)


def _argmax_near(win: np.ndarray, centre_idx: np.ndarray, half_width: int) -> np.ndarray:
    """Index of each row's maximum within ``centre_idx +- half_width``."""
    centre = np.asarray(centre_idx)
    return _argmax_between(win, centre - half_width, centre + half_width)


def _argmax_between(win: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Index of each row's maximum over the columns ``lo .. hi`` (inclusive, clipped to the window; the first of
    equal maxima; 0 where the range is empty), read from a band of those columns only."""
    n, w = win.shape
    lo = np.maximum(np.asarray(lo, np.int64), 0)
    hi = np.minimum(np.asarray(hi, np.int64), w - 1)
    if n == 0:
        return np.zeros(0, np.int64)
    cols = lo[:, None] + np.arange(max(int((hi - lo).max()), 0) + 1)[None, :]
    band = np.where(cols <= hi[:, None], win[np.arange(n)[:, None], np.minimum(cols, w - 1)], -np.inf)
    return np.where(hi >= lo, lo + np.argmax(band, axis=1), 0)


def _parabola_peak(y: np.ndarray, i: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sub-sample offset (-0.5..0.5) and height of each row's maximum near its sample ``i``: the parabola through
    ``i`` and its two neighbours (offset 0 and the sample itself at the ends or where the parabola is not
    concave)."""
    w = y.shape[1]
    rows = np.arange(len(y))
    y0 = y[rows, np.clip(i - 1, 0, w - 1)]
    y1 = y[rows, i]
    y2 = y[rows, np.clip(i + 1, 0, w - 1)]
    denom = y0 - 2.0 * y1 + y2
    interior = (i > 0) & (i < w - 1) & (denom < 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.clip(np.where(interior, 0.5 * (y0 - y2) / denom, 0.0), -0.5, 0.5)
    return frac, np.where(interior, y1 - 0.25 * (y0 - y2) * frac, y1)


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


def model_family(cfg: DeconvolutionConfig) -> list[tuple[float, float]]:
    """The candidate model residues of the bias correction: (gamma shape ``k``, dispersion ``d`` s) pairs."""
    return [(float(k), float(d)) for d in cfg.model_dispersions_s for k in cfg.residue_shapes]


def _family_tables(aif_t, filters, dt_s, length, t, n_neg, tau_grid, family, n_threads: int = 1):
    """:func:`step_response_tables` of every model of the family, stacked along a first axis (n_models, ...);
    the models in ``n_threads`` parallel threads (independent: the result does not depend on it)."""
    with ThreadPoolExecutor(max_workers=thread_count(n_threads, len(family))) as pool:
        tabs = list(pool.map(lambda kd: step_response_tables(aif_t, filters, dt_s, length, t, n_neg, tau_grid,
                                                             kd[1], kd[0]), family))
    return tuple(np.array([tab[i] for tab in tabs]) for i in range(4))


def _observed_band(win: np.ndarray, i_obs: np.ndarray, before: int = 3, after: int = 20
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Sample indices ``a`` (n, before + after + 1) of each residue of ``win`` (n, W) from ``before`` samples before
    to ``after`` samples after its peak sample ``i_obs``, and the residue's values there (clipped to the window);
    what :func:`_shape_misfit` compares, the same for every model."""
    a = i_obs[:, None] + np.arange(-before, after + 1)[None, :]
    return a, np.take_along_axis(win, np.clip(a, 0, win.shape[1] - 1), axis=1)


def _shape_misfit(win: np.ndarray, i_obs: np.ndarray, p_obs: np.ndarray, model_tau_w: np.ndarray,
                  log_tau: np.ndarray, lt: np.ndarray, before: int = 3, after: int = 20,
                  band: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Mean squared difference between each residue ``win`` (n, W) and a model residue (``model_tau_w``
    (n_tau, W) on the MTT grid ``exp(lt)``) at the residue's MTT, with the least-squares height, aligned on the
    two peaks with sub-sample precision (observed peak sample ``i_obs``, sub-sample position ``p_obs``), from
    ``before`` samples before to ``after`` samples after the peak.  ``band``: :func:`_observed_band` of the
    residues when the caller already has it (several models against the same residues)."""
    n, w = win.shape
    pos = np.clip(np.interp(log_tau, lt, np.arange(len(lt))), 0, len(lt) - 1)
    i0 = np.floor(pos).astype(int)
    i1 = np.minimum(i0 + 1, len(lt) - 1)
    f = (pos - i0)[:, None]
    # (1 - f) * model[i0] + f * model[i1], in place (the same products and sum)
    model = np.take(model_tau_w, i0, axis=0)
    model *= 1.0 - f
    upper = np.take(model_tau_w, i1, axis=0)
    upper *= f
    model += upper
    i_mod = np.argmax(model, axis=1)
    p_mod = i_mod + _parabola_peak(model, i_mod)[0]
    a, observed = _observed_band(win, i_obs, before, after) if band is None else band
    b = a - p_obs[:, None] + p_mod[:, None]  # fractional model index at the same time from the peak
    ok = (a >= 0) & (a < w) & (b >= 0) & (b <= w - 1)
    b0 = np.clip(np.floor(b).astype(int), 0, w - 2)
    fb = np.clip(b - b0, 0.0, 1.0)
    mod = np.take_along_axis(model, b0, axis=1)
    mod *= 1.0 - fb
    upper = np.take_along_axis(model, b0 + 1, axis=1)
    upper *= fb
    mod += upper
    mod = np.where(ok, mod, 0.0)
    obs = np.where(ok, observed, 0.0)
    amp = (obs * mod).sum(axis=1) / np.maximum((mod * mod).sum(axis=1), 1e-12)  # least-squares height
    d = obs - mod * amp[:, None]
    return (d * d).sum(axis=1) / np.maximum(ok.sum(axis=1), 1)


def _group_means(tissue_nt: np.ndarray, groups: np.ndarray, aif_t: np.ndarray):
    """Mean curve (n_groups, T) and area ratio to the AIF of each group of ``groups`` (n,) labels, the group index
    of each voxel and the group sizes."""
    n = len(tissue_nt)
    labels, inverse = np.unique(groups, return_inverse=True)
    counts = np.bincount(inverse, minlength=len(labels)).astype(np.float64)
    member = sparse.csr_matrix((1.0 / counts[inverse], (inverse, np.arange(n))), shape=(len(labels), n))
    mean = np.asarray(member @ np.asarray(tissue_nt, np.float64))
    a_sum = float(np.sum(aif_t))
    auc = mean.sum(axis=1) / a_sum if a_sum > 0 else np.zeros(len(labels))
    return mean, auc, inverse, counts


def model_weights(tissue_nt: np.ndarray, groups: np.ndarray, aif_t: np.ndarray, filters: list[np.ndarray],
                  model_spectra: np.ndarray, heights: np.ndarray, dt_s: float, length: int, n_neg: int,
                  tau_grid_s: np.ndarray, tmax_half_w: int, oi_sub: int, oi_target: float,
                  n_threads: int = 1) -> np.ndarray:
    """Relative likelihood of each model residue for each voxel (n_models, n), evaluated per group of voxels.

    The residue shape is a regional property and its signature (the sharpness of the onset, the width of the top)
    is fine detail that noise hides in a single voxel, so the tissue curves of each group (``groups`` (n,) int
    labels, e.g. small in-plane blocks) are averaged first.  Each group's mean curve is deconvolved at the least
    regularised level whose residue passes the oscillation-index test (its own, less noisy, ladder) and compared
    with each model's noise-free emulated residue at the same level and at the group's MTT
    (:func:`_shape_misfit`).  The misfits become relative likelihoods: Gaussian residuals with the best fit's
    variance and two degrees of freedom per frequency the level keeps; where noise hides the shape, the weights
    spread over every model that fits, rather than a noisy pick of one.  ``model_spectra`` (n_models, n_tau, F)
    and ``heights`` (n_models, n_levels, n_tau) come from :func:`_family_tables`.  Columns sum to 1.
    ``n_threads``: the models' misfits are computed in that many threads (the result does not depend on it).
    """
    n, t = tissue_nt.shape
    mean, auc, inverse, counts = _group_means(tissue_nt, groups, aif_t)
    n_g = len(mean)
    c_spec = sfft.rfft(mean, n=length, axis=1)
    lt = np.log(tau_grid_s)
    n_m = len(model_spectra)
    weight = np.ones((n_m, n_g))
    todo = np.arange(n_g)
    top = len(filters) - 1
    # the models' misfits in parallel threads
    with ThreadPoolExecutor(max_workers=thread_count(n_threads, n_m)) as pool:
        for j, filt in enumerate(filters):
            r = sfft.irfft(c_spec[todo] * filt[None], n=length, axis=1)
            ok = np.ones(len(todo), bool) if j == top else oscillation_index(r[:, ::oi_sub]) <= oi_target
            if ok.any():
                g = todo[ok]
                p_j, g_t = _peak_signed(r[ok], dt_s, t, n_neg)
                win = _search_window(r[ok], t, n_neg)
                gi = _time_index(g_t, dt_s, t, n_neg)
                i_obs = _argmax_near(win, gi, tmax_half_w)
                p_obs = i_obs + _parabola_peak(win, i_obs)[0]
                band = _observed_band(win, i_obs)
                mis = np.empty((n_m, len(g)))

                def misfit_of(m: int) -> None:
                    model_w = _search_window(sfft.irfft(model_spectra[m] * filt[None], n=length, axis=1), t, n_neg)
                    log_tau = log_tau_from_peak(p_j, auc[g], heights[m, j], tau_grid_s)
                    mis[m] = _shape_misfit(win, i_obs, p_obs, model_w, log_tau, lt, band=band)

                list(pool.map(misfit_of, range(n_m)))
                dof = 2.0 * np.count_nonzero(filt)
                best_mis = np.maximum(mis.min(axis=0), 1e-30)
                weight[:, g] = np.exp(-0.5 * dof * (mis - best_mis) / best_mis)
            todo = todo[~ok]
            if len(todo) == 0:
                break
    weight /= weight.sum(axis=0, keepdims=True)
    # rounded to float32 per group, then spread over the voxels: the same values as rounding every voxel's copy,
    # without an (n_models, n) float64 intermediate
    return np.take(weight.astype(np.float32), inverse, axis=1)


def _voxels_or_all(mask: np.ndarray | None, n: int) -> np.ndarray:
    """The voxels (bool, (n,)) that inform the model weights: ``mask``, or all of them when it is None or empty."""
    return np.ones(n, bool) if mask is None or not np.any(mask) else np.asarray(mask, bool)


def mean_model_weights(weight_m_n: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Mean of each model's per-voxel weight (n_models, n) over the voxels of ``mask`` (all when None or empty),
    (n_models,) float64; accumulated in place (no copy of the selected columns)."""
    w = np.asarray(weight_m_n)
    sel = _voxels_or_all(mask, w.shape[1])
    return np.add.reduce(w, axis=1, where=sel[None, :], dtype=np.float64) / max(int(sel.sum()), 1)


def study_model_weights(weight_m_n: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """One set of model weights for the whole study: the joint evidence of all groups (the sum of their log
    likelihoods, over the voxels of ``mask``), so the model that fits the study best carries the weight and the
    others only as far as the data cannot tell them apart.  Returns (n_models, n), the same column everywhere."""
    return _study_column(np.log(np.maximum(np.asarray(weight_m_n, np.float64), 1e-30)), mask)


def _study_column(log_ev_m_n: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Weights from the per-voxel log-likelihoods (n_models, n) summed over the voxels of ``mask`` (all when None
    or empty), shared by every voxel: (n_models, n), one read-only column."""
    sel = log_ev_m_n[:, _voxels_or_all(mask, log_ev_m_n.shape[1])]
    column = weights_from_log_evidence(sel.sum(axis=1, keepdims=True, dtype=np.float64))
    return np.broadcast_to(column, log_ev_m_n.shape)


def curve_misfits(mean_gt: np.ndarray, model_spectra: np.ndarray, length: int, max_negative_lag: int,
                  tau_centre_m_g: np.ndarray, half_tau: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares misfit of each model's tissue curve to each measured curve, in the concentration domain.

    For model ``m`` the curve is ``F (AIF (x) R_m,tau)(t - delay)``.  The flow ``F >= 0`` is solved in closed form,
    the delay by search over every whole sample from ``-max_negative_lag`` to half the acquisition (all lags at
    once through the cross-correlation with the model curve delayed by each lag, then a parabola through the best
    lag), and ``tau`` over the nodes ``tau_centre_m_g +- half_tau`` of the model's MTT grid (then a parabola in the
    node index).

    mean_gt : (n, T) curves; model_spectra : (n_models, n_tau, F) rfft (length ``length``) of the unit-flow model
    curves of T samples; tau_centre_m_g : (n_models, n) int node per model and curve.
    Returns (misfit (n_models, n): residual sum of squares, lag-1 autocorrelation (n,) of the best fit's
    residual).
    """
    n, t = mean_gt.shape
    n_m, n_tau, _ = model_spectra.shape
    c = np.asarray(mean_gt, np.float64)
    c32 = c.astype(np.float32)
    cc = (c * c).sum(axis=1)
    models_t = sfft.irfft(model_spectra, n=length, axis=2)[:, :, :t]  # (m, tau, T)
    # squared norm of a model curve delayed by `lag` samples, seen in the window [0, T)
    cum = np.concatenate([np.zeros((n_m, n_tau, 1)), np.cumsum(models_t**2, axis=2)], axis=2)
    lags = np.arange(-max_negative_lag, t // 2)
    norms = np.maximum(cum[:, :, np.minimum(t, t - lags)] - cum[:, :, np.maximum(0, -lags)], 1e-12).astype(np.float32)
    # every model curve delayed by every lag, seen in the window: (m, tau * lags, T).  The cross-correlations of
    # the curves with them are one matrix product per model and chunk (the curves are short: measured 4x faster
    # than an FFT of every curve with every MTT node searched)
    src = np.arange(t)[None, :] - lags[:, None]
    delayed = np.where((src >= 0) & (src < t), models_t[:, :, np.clip(src, 0, t - 1)], 0.0)
    delayed = delayed.astype(np.float32).reshape(n_m, n_tau * len(lags), t)
    offs = np.arange(-half_tau, half_tau + 1)
    misfit = np.empty((n_m, n))
    best = np.zeros((2, n_m, n), int)  # best tau node and lag index per model
    # curves in chunks: the (curves, nodes, lags) cross-correlations stay small (8 MB)
    step = max(1, _CURVE_CHUNK // (n_tau * len(lags)))
    for a in range(0, n, step):
        b = min(n, a + step)
        rows = np.arange(b - a)
        for m in range(n_m):
            idx = np.clip(tau_centre_m_g[m][a:b, None] + offs[None, :], 0, n_tau - 1)  # (chunk, k)
            corr = (c32[a:b] @ delayed[m].T).reshape(b - a, n_tau, len(lags))[rows[:, None], idx]
            gain = np.maximum(corr, 0.0) ** 2 / norms[m][idx]  # explained sum of squares, (chunk, k, n_lags)
            i_lag = np.argmax(gain, axis=2)
            _, k_ref = _parabola_peak(gain.reshape(-1, gain.shape[2]), i_lag.ravel())
            k_ref = np.maximum(k_ref.reshape(i_lag.shape), np.take_along_axis(gain, i_lag[..., None], 2)[..., 0])
            j = np.argmax(k_ref, axis=1)
            _, top = _parabola_peak(k_ref, j)
            misfit[m, a:b] = np.maximum(cc[a:b] - np.maximum(top, k_ref.max(axis=1)), 0.0)
            best[0, m, a:b] = idx[rows, j]
            best[1, m, a:b] = i_lag[rows, j]
    # residual of the best model (whole samples): its lag-1 autocorrelation measures the noise's correlation
    mb = np.argmin(misfit, axis=0)
    rows = np.arange(n)
    curve = models_t[mb, best[0, mb, rows]]  # (n, T)
    lag = lags[best[1, mb, rows]]
    src = np.arange(t)[None, :] - lag[:, None]
    shifted = np.where((src >= 0) & (src < t), np.take_along_axis(curve, np.clip(src, 0, t - 1), 1), 0.0)
    amp = np.maximum((shifted * c).sum(axis=1), 0.0) / np.maximum((shifted * shifted).sum(axis=1), 1e-12)
    res = c - amp[:, None] * shifted
    res -= res.mean(axis=1, keepdims=True)
    rho = (res[:, 1:] * res[:, :-1]).sum(axis=1) / np.maximum((res * res).sum(axis=1), 1e-30)
    return misfit, rho


def model_log_evidence(tissue_nt: np.ndarray, groups: np.ndarray, aif_t: np.ndarray, top_filter: np.ndarray,
                       model_spectra: np.ndarray, heights_top: np.ndarray, dt_s: float, length: int, n_neg: int,
                       tau_grid_s: np.ndarray) -> np.ndarray:
    """Log-likelihood of each model residue given each group's mean curve, shared out over the group's voxels.

    The residue's shape is a regional property whose signature noise hides in a single voxel, so the tissue
    curves of each group (``groups`` (n,) int labels, e.g. small in-plane blocks) are averaged and each model's
    noise-free tissue curve is fitted to the mean (:func:`block_log_likelihood`).  The fit is made on the curves,
    not on deconvolved residues: a noisy residue's maximum is biased upwards, which systematically favours sharp
    models (measured).

    Returns (n_models, n): each voxel carries ``1 / group size`` of its group's log-likelihood (maximum 0), so
    that sums over voxels count each group once.
    """
    mean, _, inverse, counts = _group_means(tissue_nt, groups, aif_t)
    log_lik = block_log_likelihood(mean, aif_t, top_filter, model_spectra, heights_top, dt_s, length, n_neg,
                                   tau_grid_s)
    return (log_lik / counts[None, :])[:, inverse].astype(np.float32)


def block_log_likelihood(mean_gt: np.ndarray, aif_t: np.ndarray, top_filter: np.ndarray, model_spectra: np.ndarray,
                         heights_top: np.ndarray, dt_s: float, length: int, n_neg: int, tau_grid_s: np.ndarray,
                         half_tau: int = 2) -> np.ndarray:
    """Log-likelihood (n_models, n_groups) of each model's tissue curve given each mean curve ``mean_gt``
    (n_groups, T), maximum 0 per group: :func:`block_evidence` without the residuals."""
    return block_evidence(mean_gt, aif_t, top_filter, model_spectra, heights_top, dt_s, length, n_neg, tau_grid_s,
                          half_tau)[0]


def block_evidence(mean_gt: np.ndarray, aif_t: np.ndarray, top_filter: np.ndarray, model_spectra: np.ndarray,
                   heights_top: np.ndarray, dt_s: float, length: int, n_neg: int, tau_grid_s: np.ndarray,
                   half_tau: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Log-likelihood (n_models, n_groups) of each model's tissue curve given each mean curve ``mean_gt``
    (n_groups, T), flow, delay and MTT free (:func:`curve_misfits`), maximum 0 per group, and the residual sum of
    squares of each group's best fit (n_groups,).

    Likelihood: Gaussian noise with the best fit's residual variance; the noise is temporally correlated (temporal
    smoothing, resampling), so the effective number of independent samples is ``(T - 3) (1 - rho) / (1 + rho)``
    with ``rho`` the median lag-1 autocorrelation of the best fits' residuals.  The MTT nodes searched are
    ``half_tau`` nodes either side of each model's MTT for the group's peak-to-area ratio of the most regularised
    residue (``top_filter``, ``heights_top`` (n_models, n_tau)).
    """
    mean = np.asarray(mean_gt, np.float64)
    n_g, t = mean.shape
    a_sum = float(np.sum(aif_t))
    auc = mean.sum(axis=1) / a_sum if a_sum > 0 else np.zeros(n_g)
    p_top, _ = _peak_signed(sfft.irfft(sfft.rfft(mean, n=length, axis=1) * top_filter[None], n=length, axis=1),
                            dt_s, t, n_neg)
    lt = np.log(tau_grid_s)
    n_m = len(model_spectra)
    centre = np.empty((n_m, n_g), int)
    for m in range(n_m):
        node = np.interp(log_tau_from_peak(p_top, auc, heights_top[m], tau_grid_s), lt, np.arange(len(lt)))
        centre[m] = np.clip(np.rint(node), 0, len(lt) - 1).astype(int)
    mis, rho = curve_misfits(mean, model_spectra, length, n_neg, centre, half_tau)
    r = float(np.clip(np.median(rho), 0.0, 0.95)) if len(rho) else 0.0
    nu = max(1.0, (t - 3) * (1.0 - r) / (1.0 + r))
    best = np.maximum(mis.min(axis=0), 1e-30)
    return -0.5 * nu * (mis - best) / best, best


def mixture_proportions(log_lik_m_g: np.ndarray, max_iter: int = 1000, tol: float = 1e-7) -> np.ndarray:
    """Maximum-likelihood proportions (n_models,) of a mixture of the models over the groups (EM), from each
    group's log-likelihoods (n_models, n_groups): the share of the study's blocks each model explains best, as
    far as the data can tell them apart."""
    ll = np.asarray(log_lik_m_g, np.float64)
    lik = np.exp(ll - ll.max(axis=0, keepdims=True))
    lik_t = np.ascontiguousarray(lik.T)
    pi = np.full(len(ll), 1.0 / len(ll))
    for _ in range(max_iter):
        # the mean over the groups of the posteriors pi_m lik_mg / sum_k pi_k lik_kg, as two matrix-vector products
        new = pi * (lik @ (1.0 / np.maximum(lik_t @ pi, 1e-300))) / lik.shape[1]
        done = np.abs(new - pi).max() < tol
        pi = new
        if done:
            break
    return pi


def dispersion_shares(proportions_m: np.ndarray, family: list[tuple[float, float]]) -> np.ndarray:
    """Each model's dispersion's share of the mixture (n_models,): the proportions summed over the shapes."""
    disp = np.array([d for _, d in family])
    prop = np.asarray(proportions_m, np.float64)
    return np.array([prop[disp == d].sum() for d in disp])


def weights_from_log_evidence(log_ev_m_n: np.ndarray) -> np.ndarray:
    """Normalised model weights (columns sum to 1) from summed log-likelihoods (n_models, n)."""
    w = np.exp(log_ev_m_n - log_ev_m_n.max(axis=0, keepdims=True))
    return (w / w.sum(axis=0, keepdims=True)).astype(np.float32)


def _observable_tables(heights_top: np.ndarray, tables: list[np.ndarray], tau_grid_s: np.ndarray,
                       y_grid: np.ndarray) -> list[np.ndarray]:
    """Each model's tables (n_models, n_levels, n_tau) re-indexed by the observable ``y = log(peak / area)`` of
    the most regularised residue (``y_grid``), through that model's MTT (:func:`log_tau_from_peak`); returns
    arrays (n_models, n_levels, len(y_grid))."""
    lt = np.log(tau_grid_s)
    out = []
    for tab in tables:
        o = np.empty(tab.shape[:2] + (len(y_grid),))
        for m in range(tab.shape[0]):
            lt_m = log_tau_from_peak(np.exp(y_grid), np.ones_like(y_grid), heights_top[m], tau_grid_s)
            for j in range(tab.shape[1]):
                o[m, j] = np.interp(lt_m, lt, tab[m, j])
        out.append(o)
    return out


def _model_lookups(table_m_y: np.ndarray, i0: np.ndarray, frac: np.ndarray) -> np.ndarray:
    """Every model's ``table[m](y)`` per voxel, (n, n_models), linear in ``y`` (grid index ``i0`` and fraction
    ``frac``).  The table rows of each voxel are gathered as contiguous blocks from the transposed table (several
    times faster than gathering columns of every model)."""
    tab, frac = np.asarray(table_m_y), np.asarray(frac)
    tab_t = np.ascontiguousarray(tab.T, dtype=np.result_type(tab, frac))  # (n_y, n_models)
    terms = tab_t[i0]
    terms *= (1.0 - frac)[:, None]
    upper = tab_t[i0 + 1]
    upper *= frac[:, None]
    terms += upper
    return terms


def _weighted_lookup(table_m_y: np.ndarray, weight_m_n: np.ndarray, i0: np.ndarray, frac: np.ndarray) -> np.ndarray:
    """``sum_m weight[m] * table[m](y)`` per voxel (:func:`_model_lookups`, :func:`_weighted_sum`)."""
    return _weighted_sum(_model_lookups(table_m_y, i0, frac), weight_m_n, in_place=True)


def _weighted_sum(values_n_m: np.ndarray, weight_m_n: np.ndarray, in_place: bool = False) -> np.ndarray:
    """``sum_m weight[m] * values[:, m]`` per voxel; each voxel's sum runs over its contiguous models (numpy's
    pairwise summation, as for a column-gathered layout).  ``in_place``: ``values_n_m`` may be overwritten."""
    terms = values_n_m if in_place else values_n_m.copy()
    terms *= np.asarray(weight_m_n).T
    return terms.sum(axis=1)


def dispersion_spread(values_n_m: np.ndarray, weight_m_n: np.ndarray, family: list[tuple[float, float]]
                      ) -> np.ndarray:
    """Spread (n,) of per-model values (n, n_models) between the dispersions of the models of ``family``: the SD,
    under the voxel's weights (n_models, n), of each dispersion's weighted mean value around their overall weighted
    mean.  For the Tmax shift this is how far Tmax would move between the dispersions the weights leave open (the
    shapes within one dispersion are averaged first, as :func:`dispersion_shares` sums them); 0 where one
    dispersion holds all the weight."""
    w = np.asarray(weight_m_n, np.float64).T  # (n, n_models)
    disp = np.array([d for _, d in family])
    groups = (disp[:, None] == np.unique(disp)[None, :]).astype(np.float64)  # (n_models, n_dispersions)
    w_d = w @ groups  # each dispersion's weight, (n, D)
    mean_d = ((w * np.asarray(values_n_m, np.float64)) @ groups) / np.maximum(w_d, 1e-300)
    share = w_d / np.maximum(w_d.sum(axis=1, keepdims=True), 1e-300)
    mean = (share * mean_d).sum(axis=1, keepdims=True)
    return np.sqrt((share * (mean_d - mean) ** 2).sum(axis=1))


def _weights_from_curves(tissue, groups, evidence, aif_t, top_filter, model_spectra, heights_top, dt_s, length,
                         n_neg, tau_grid, scope, evidence_filter, n_threads: int = 1) -> np.ndarray:
    """Model weights (n_models, n) from the curve-domain evidence (:func:`model_log_evidence`) of the groups of
    the ``evidence`` voxels, summed over the whole study (``scope = "study"``) or over each voxel's neighbourhood
    (``evidence_filter``; voxels with no evidence in reach keep the uniform prior)."""
    n_m, n = len(model_spectra), len(tissue)
    log_ev = np.zeros((n_m, n), np.float32)
    log_ev[:, evidence] = model_log_evidence(tissue[evidence], groups[evidence], aif_t, top_filter, model_spectra,
                                             heights_top, dt_s, length, n_neg, tau_grid)
    if scope == "study":
        return _study_column(log_ev, evidence)
    if evidence_filter is not None:
        log_ev = _map_rows(evidence_filter, log_ev, n_threads)
    return weights_from_log_evidence(log_ev)


def _map_rows(func, rows: np.ndarray, n_threads: int) -> np.ndarray:
    """``func`` applied to each row of ``rows`` (e.g. a spatial filter of one model's per-voxel values), rows in
    parallel threads; float32 (n_rows, n)."""
    with ThreadPoolExecutor(max_workers=thread_count(n_threads, len(rows))) as pool:
        return np.array(list(pool.map(func, rows)), np.float32)


def _time_index(time_s: np.ndarray, dt_s: float, t: int, n_neg: int) -> np.ndarray:
    """Index in the peak-search window (:func:`_search_window`) of the sample nearest each time (s)."""
    return np.clip(np.rint(np.asarray(time_s) / dt_s).astype(int) + n_neg, 0, t + n_neg - 1)


def _guide_windows(tissue: np.ndarray, top_filter: np.ndarray, length: int, n_neg: int,
                   n_threads: int) -> np.ndarray:
    """Peak-search windows (:func:`_search_window`, (n, T + n_neg) float32) of every voxel's most regularised
    residue (``top_filter``), chunk by chunk; kept so the guide's peak can be read again at another time without
    a second pass of FFTs."""
    n, t = tissue.shape
    win = np.empty((n, t + n_neg), np.float32)
    for start in range(0, n, _CHUNK):
        stop = min(n, start + _CHUNK)
        c_spec = sfft.rfft(tissue[start:stop], n=length, axis=1, workers=n_threads)
        r_top = sfft.irfft(c_spec * top_filter[None], n=length, axis=1, workers=n_threads)
        win[start:stop] = _search_window(r_top, t, n_neg)
    return win


def _guide_peaks(windows: np.ndarray, auc_ratio: np.ndarray, dt_s: float, t: int, n_neg: int,
                 centre_idx: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``y = log(peak / area)`` and the peak time (s) of the guide residues' search ``windows``
    (:func:`_guide_windows`); with ``centre_idx`` the peak is taken within +- 1 sample of those window indices."""
    n = len(windows)
    y, g_t = np.zeros(n), np.zeros(n)
    for start in range(0, n, _CHUNK):
        stop = min(n, start + _CHUNK)
        near = None if centre_idx is None else centre_idx[start:stop]
        p_top, g_t[start:stop] = _peak_signed(None, dt_s, t, n_neg, centre_idx=near, half_width=1,
                                              window=windows[start:stop])
        with np.errstate(divide="ignore", invalid="ignore"):
            y[start:stop] = np.log(p_top / auc_ratio[start:stop])
    return y, g_t


def deconvolve_circulant(tissue_nt: np.ndarray, aif_t: np.ndarray, dt_s: float, cfg: DeconvolutionConfig,
                         method: str | None = None, max_negative_delay_s: float = 4.0,
                         tau_filter=None, shape_groups: np.ndarray | None = None, weight_filter=None,
                         evidence_filter=None, evidence_mask: np.ndarray | None = None,
                         prior_blocks: np.ndarray | None = None, workers: int | None = None,
                         noise_vectors: np.ndarray | None = None,
                         noise_rms: np.ndarray | None = None) -> DeconvolutionOutput:
    """Block-circulant deconvolution (bcSVD with per-voxel OI threshold, or Tikhonov) of many curves.

    tissue_nt : (n, T) delta HU on the uniform grid (step ``dt_s``); aif_t : (T,) delta HU, same grid.
    shape_groups : (n,) int labels of the groups of voxels whose mean curves measure the models' likelihoods.
    weight_filter : ``model_evidence = "residues"``, regional scope: a function smoothing per-voxel weights (n,).
    evidence_filter : ``model_evidence = "curves"``, regional scope: a function summing per-voxel
    log-likelihoods (n,) over each voxel's neighbourhood (e.g. an in-plane Gaussian with peak 1).
    evidence_mask : (n,) bool, the voxels whose curves may inform the model weights with the "curves" evidence and
    the "study" scope (tissue: no large vessels, whose curves deconvolve to a spike, and no CSF).
    prior_blocks : (n_blocks, T) mean curves of in-plane tissue blocks (same grid as ``tissue_nt``) that set the
    study-wide prior of the models (``dispersion_prior = "study"``: :func:`study_model_mixture`); None = uniform.
    workers : threads for the FFTs and the voxel chunks (None = all CPU cores); the result does not depend on it.
    noise_vectors, noise_rms : (n_vec, T) curves of the study's denoised noise and (n,) each voxel's noise RMS (same
    units as the curves; :mod:`ctperf.engine.noise_emulation`): given both, the guided correction's Tmax shift is
    the noise-aware one (:func:`noisy_shift_tables`, at each voxel's noise RMS / curve peak).

    Tmax values are signed (a peak before the arrival is negative); :func:`deconvolve` bounds them.
    """
    n_threads = thread_count(workers)
    method = method or cfg.method
    tissue = np.asarray(tissue_nt, np.float32)
    n, t = tissue.shape
    length = padded_length(t)
    spec = circulant_spectrum(aif_t, dt_s, length)
    filters, levels = _filters(spec, method, cfg, aif_noise_floor(aif_t)[1])
    n_neg = int(round(max_negative_delay_s / dt_s))
    sub = max(1, int(round(cfg.oi_reference_dt_s / dt_s)))
    target = float(cfg.oscillation_index)
    guided = cfg.peak_window_s is not None and cfg.peak_window_s >= 0 and len(filters) > 1
    half_w = int(round(cfg.peak_window_s / dt_s)) if guided else 0
    tmax_half_w = max(1, int(round(cfg.tmax_window_s / dt_s)))
    top = len(filters) - 1

    rmax = np.zeros(n, np.float32)
    tmax = np.zeros(n, np.float32)
    rmax_std = rmax if not guided else np.zeros(n, np.float32)  # the standard convention (unguided peak)
    tmax_std = tmax if not guided else np.zeros(n, np.float32)
    thr = np.full(n, levels[-1], np.float32)
    level = np.full(n, top, np.int16)
    a_sum = float(np.sum(aif_t))
    auc_ratio = tissue.sum(axis=1, dtype=np.float64) / a_sum if a_sum > 0 else np.zeros(n)
    tau_grid = np.geomspace(0.3, 60.0, 48)
    correct = cfg.correct_regularisation_bias
    family = model_family(cfg) if len(filters) > 1 else [(1.0, 0.0)]
    heights = shifts = rel_heights = None
    noise_aware = correct and guided and noise_vectors is not None and noise_rms is not None and len(noise_vectors) > 0
    q_pos = noisy_shift_y = None
    if correct or guided:
        heights, shifts, true_h, model_spectra = _family_tables(aif_t, filters, dt_s, length, t, n_neg, tau_grid,
                                                                family, n_threads)
        rel_heights = heights / np.maximum(true_h[:, None, :], 1e-9)  # estimated / true peak of h (x) R

    g_t = np.zeros(n, np.float64)
    g_idx_all = height_prior = None
    if guided:
        # pass 1: the weight of each model residue for each voxel (the evidence of the groups in its
        # neighbourhood or in the whole study: see model_log_evidence), the peak of the most regularised residue
        # (robust to noise) and the voxel's MTT under each model
        n_m = len(family)

        def weight_maps() -> tuple[np.ndarray, np.ndarray | None, tuple[int, int] | None]:
            """Each region's model weights (n_models, n), and the study's mixture of models (n_models,) with
            (blocks used, blocks offered) when a study prior is set."""
            if n_m == 1:
                return np.ones((1, n), np.float32), None, None
            if prior_blocks is None or len(prior_blocks) == 0:
                return evidence_weights(), None, None

            def mixture() -> tuple[np.ndarray, int]:
                return study_model_mixture(prior_blocks, aif_t, filters[top], model_spectra, heights[:, top], dt_s,
                                           length, n_neg, tau_grid, cfg.dispersion_prior_min_cnr)

            # the mixture and the regional evidence are independent: side by side with more than one thread
            with side_thread(n_threads) as beside:
                pending_mixture = beside.submit(mixture) if beside is not None else None
                w = evidence_weights()
                p, used = pending_mixture.result() if pending_mixture is not None else mixture()
            return w, p, (used, len(prior_blocks))

        def evidence_weights() -> np.ndarray:
            grp = np.arange(n) if shape_groups is None else np.asarray(shape_groups)
            ev = _voxels_or_all(evidence_mask, n)
            if cfg.model_evidence == "curves":
                return _weights_from_curves(tissue, grp, ev, aif_t, filters[top], model_spectra, heights[:, top],
                                            dt_s, length, n_neg, tau_grid, cfg.model_weights_scope,
                                            evidence_filter, n_threads)
            w = model_weights(tissue, grp, aif_t, filters, model_spectra, heights, dt_s, length, n_neg,
                              tau_grid, tmax_half_w, sub, target, n_threads)
            if cfg.model_weights_scope == "study":
                return study_model_weights(w, ev)
            if weight_filter is not None:
                w = _map_rows(weight_filter, w, n_threads)
                w /= np.maximum(w.sum(axis=0, keepdims=True), 1e-12)
            return w

        # the model weights (block means) and the guide residues (every voxel) are independent: with more than one
        # thread they are computed side by side (both are mostly numpy/FFT work that releases the GIL)
        with side_thread(n_threads) as side:
            pending_weight = side.submit(weight_maps) if side is not None else None
            guide_win = _guide_windows(tissue, filters[top], length, n_neg, n_threads)
            y, g_t = _guide_peaks(guide_win, auc_ratio, dt_s, t, n_neg)
            if tau_filter is not None:
                # the guide's peak time, spatially filtered: a flat, noisy residue (core, white matter) otherwise
                # puts its maximum where the noise is highest, which lifts the peak read there; the guide's height
                # is then read at the filtered time (+- 1 sample).  A second reading: the median needs every
                # voxel's time first.
                g_t = np.asarray(tau_filter(g_t), np.float64)
                y, _ = _guide_peaks(guide_win, auc_ratio, dt_s, t, n_neg,
                                    centre_idx=_time_index(g_t, dt_s, t, n_neg))
            del guide_win
            g_idx_all = _time_index(g_t, dt_s, t, n_neg)
            # the tables as functions of y = log(peak / area) (each model's MTT follows from y); y outside the range
            # of the MTT grid is clipped to it.  (Still beside the model weights, which need none of this.)
            y_grid = np.linspace(-np.log(tau_grid[-1]) - 1.0, -np.log(tau_grid[0]) + 1.0, 512)
            y = np.clip(np.nan_to_num(y, nan=y_grid[0], posinf=y_grid[-1], neginf=y_grid[0]), y_grid[0], y_grid[-1])
            # noise-robust MTT for the height lookup and the lag-aware window: the filtered observable
            y_filt = (y if tau_filter is None
                      else np.clip(np.asarray(tau_filter(y), np.float64), y_grid[0], y_grid[-1]))
            log_h_y, shift_y = _observable_tables(heights[:, top], [np.log(np.clip(rel_heights, 0.2, 1.2)), shifts],
                                                  tau_grid, y_grid)
            if noise_aware:
                noisy_shift_y = noisy_shift_tables(aif_t, filters, dt_s, length, t, n_neg, tau_grid, model_spectra,
                                                   shifts, shift_y, y_grid, tmax_half_w, sub, target, noise_vectors,
                                                   n_threads=n_threads)
                q_pos = _grid_position(np.asarray(noise_rms, np.float64) / np.maximum(tissue.max(axis=1), 1e-3),
                                       NOISE_Q_GRID)
            regional, mixture, prior_used = pending_weight.result() if pending_weight is not None else weight_maps()
        # the weights of the height correction (and of the guided height search; with a study prior, filled chunk by
        # chunk in solve_chunk's threads) and the prior of the Tmax shift's weights, which leaves out the plug-flow
        # models (their flat top has no defined peak time)
        height_prior = None if mixture is None else model_prior(mixture, family, cfg.height_prior)
        weight = regional if height_prior is None else np.empty_like(regional)
        in_shift = np.array([not (cfg.tmax_shift_without_plug_flow and k >= PLUG_FLOW_SHAPE_K) for k, _ in family])
        tmax_prior = in_shift.astype(np.float64)
        if mixture is not None:
            tmax_prior *= model_prior(mixture, family, cfg.tmax_prior)

        pos_filt = _grid_position(y_filt, y_grid)
        pos_shift = pos_filt if cfg.tmax_shift_mtt == "filtered" else _grid_position(y, y_grid)

    def solve_chunk(start: int) -> None:
        """Ladder of regularisation levels for voxels ``start : start + _CHUNK`` (writes disjoint slices)."""
        stop = min(n, start + _CHUNK)
        if height_prior is not None:
            weight[:, start:stop] = apply_prior(regional[:, start:stop], height_prior)
        c_spec = sfft.rfft(tissue[start:stop], n=length, axis=1)
        todo = np.arange(stop - start)
        for j, filt in enumerate(filters):
            r = sfft.irfft(c_spec[todo] * filt[None], n=length, axis=1)
            ok = np.ones(len(todo), bool) if j == top else oscillation_index(r[:, ::sub]) <= target
            if ok.any():
                sel = start + todo[ok]
                r_ok = r if ok.all() else r[ok]
                if not guided:
                    pk, tm = _peak_signed(r_ok, dt_s, t, n_neg)
                else:
                    # the peak of level j lies between the guide's peak moved earlier by the difference of the two
                    # levels' regularisation lags (emulated at the voxel's MTT and shape) and the guide's peak
                    gi = g_idx_all[sel]
                    i0, fr = pos_filt[0][sel], pos_filt[1][sel]
                    w_sel = weight[:, sel]
                    shift_j = _model_lookups(shift_y[:, j], i0, fr)  # every model's noise-free shift at level j
                    lag = np.maximum(_weighted_lookup(shift_y[:, top], w_sel, i0, fr) - _weighted_sum(shift_j, w_sel),
                                     0.0)
                    early = _time_index(g_t[sel] - lag, dt_s, t, n_neg)
                    win = _search_window(r_ok, t, n_neg)
                    pk, _ = _peak_signed(r_ok, dt_s, t, n_neg, half_width=half_w, span_idx=(early, gi), window=win)
                    _, tm = _peak_signed(r_ok, dt_s, t, n_neg, centre_idx=gi, half_width=tmax_half_w, window=win)
                    rmax_std[sel], tmax_std[sel] = _peak_signed(r_ok, dt_s, t, n_neg, window=win)
                    if correct:  # the level's bias correction, looked up here so it runs in the chunks' threads
                        log_h[sel] = _weighted_lookup(log_h_y[:, j], w_sel, i0, fr)
                        w_shift = apply_prior(regional[:, sel], tmax_prior)
                        i_s, fr_s = pos_shift[0][sel], pos_shift[1][sel]
                        # every model's noise-free shift at the shift's MTT: their weighted sum and their spread
                        # between dispersions
                        per_model = (shift_j if pos_shift is pos_filt else
                                     _model_lookups(shift_y[:, j], i_s, fr_s))
                        shift[sel] = (_blended_lookup(noisy_shift_y[:, j], w_shift, i_s, fr_s, q_pos[0][sel],
                                                      q_pos[1][sel]) if noise_aware else
                                      _weighted_sum(per_model, w_shift))
                        shift_sd[sel] = dispersion_spread(per_model, w_shift, family)
                rmax[sel] = pk
                tmax[sel] = tm
                thr[sel] = levels[j]
                level[sel] = j
            todo = todo[~ok]
            if len(todo) == 0:
                break

    # guided correction: the log height factor and the peak shift of each voxel at its level (set by solve_chunk)
    log_h = np.zeros(n) if guided and correct else None
    shift = np.zeros(n) if guided and correct else None
    shift_sd = np.zeros(n, np.float32) if guided and correct else None
    # chunks in parallel threads (FFTs and numpy reductions release the GIL)
    with ThreadPoolExecutor(max_workers=thread_count(n_threads, -(-n // _CHUNK))) as pool:
        list(pool.map(solve_chunk, range(0, n, _CHUNK)))
    out = DeconvolutionOutput(rmax_per_s=rmax, tmax_s=tmax.astype(np.float32), threshold=thr,
                              rmax_standard_per_s=rmax_std.copy(), tmax_standard_s=tmax_std.astype(np.float32),
                              model_family=family if guided else None,
                              model_weight_mean=mean_model_weights(weight, evidence_mask) if guided else None,
                              study_mixture=mixture if guided else None,
                              dispersion_prior_blocks=prior_used if guided else None)
    if correct:
        if not guided:  # unguided: per-voxel MTT from its own peak, single (first) model
            out.rmax_per_s, out.tmax_s = apply_bias_correction(rmax, tmax, level, auc_ratio, heights[0],
                                                               rel_heights[0], shifts[0], tau_grid)
        else:
            out.rmax_per_s = (rmax * np.exp(-log_h)).astype(np.float32)
            out.tmax_s = (tmax - shift).astype(np.float32)
            out.tmax_dispersion_sd_s = shift_sd
    return out


#: MTT nodes (either side of the noisy first guess, a factor ~1.12 apart) searched by the fits that set the study
#: dispersion prior: a first guess from the peak of a noisy block's residue can be off by a factor of 2-3.
_PRIOR_TAU_NODES = 12


#: Fewest blocks the study dispersion prior is fitted to: with fewer informative blocks (:func:`informative_blocks`)
#: it uses all of them.
_PRIOR_MIN_BLOCKS = 8


def study_model_mixture(block_means_gt: np.ndarray, aif_t: np.ndarray, top_filter: np.ndarray,
                        model_spectra: np.ndarray, heights_top: np.ndarray, dt_s: float, length: int, n_neg: int,
                        tau_grid_s: np.ndarray, min_cnr: float = 0.0) -> tuple[np.ndarray, int]:
    """The proportions (n_models,) of the mixture of models that best explains the mean curves of the study's
    informative tissue blocks (:func:`block_evidence`, :func:`informative_blocks` with ``min_cnr``,
    :func:`mixture_proportions`), and the number of blocks used: the study-wide prior of the models' weights
    (:func:`model_prior`).

    One block's curve hardly tells an undispersed residue from a dispersed one at clinical noise (the shape and the
    delay absorb the difference), but a whole study's blocks together do, as long as the dispersion is shared by
    much of the tissue; where regions differ, the mixture keeps each dispersion's share.  Each block's evidence is
    weak (a small fraction of a log unit at 8 HU), so a small bias shared by many blocks decides the mixture: the
    weakly enhancing blocks, whose fits are biased by the noise (measured: towards more dispersion at 8 HU, towards
    none at 15 HU), are left out."""
    log_lik, best_rss = block_evidence(block_means_gt, aif_t, top_filter, model_spectra, heights_top, dt_s, length,
                                       n_neg, tau_grid_s, half_tau=_PRIOR_TAU_NODES)
    keep = informative_blocks(block_means_gt, best_rss, min_cnr)
    return mixture_proportions(log_lik[:, keep]), int(keep.sum())


def model_prior(mixture_m: np.ndarray, family: list[tuple[float, float]], kind: str) -> np.ndarray:
    """The prior (n_models,) the study's mixture (:func:`study_model_mixture`) puts on each model: its proportion
    (``kind = "mixture"``) or its dispersion's share (``"dispersion"``, :func:`dispersion_shares`: the shapes are
    left to each region's evidence)."""
    if kind == "mixture":
        return np.asarray(mixture_m, np.float64)
    if kind == "dispersion":
        return dispersion_shares(mixture_m, family)
    raise ValueError(f"unknown model prior {kind!r}")


def informative_blocks(block_means_gt: np.ndarray, best_rss: np.ndarray, min_cnr: float,
                       min_blocks: int = _PRIOR_MIN_BLOCKS) -> np.ndarray:
    """The blocks (bool, (n_blocks,)) whose mean curve peaks at least ``min_cnr`` times above the RMS residual of its
    best model fit (``best_rss``: residual sum of squares over the T samples); all of them when ``min_cnr <= 0`` or
    fewer than ``min_blocks`` qualify."""
    curves = np.asarray(block_means_gt, np.float64)
    rms = np.sqrt(np.asarray(best_rss, np.float64) / max(curves.shape[1], 1))
    keep = curves.max(axis=1, initial=0.0) >= min_cnr * rms
    return keep if min_cnr > 0 and keep.sum() >= min_blocks else np.ones(len(curves), bool)


#: Gamma shapes at or above this are plug-flow models (a flat-topped residue), left out of the Tmax shift by
#: default (``tmax_shift_without_plug_flow``).
PLUG_FLOW_SHAPE_K = 10.0


def apply_prior(weight_m_n: np.ndarray, prior_m: np.ndarray) -> np.ndarray:
    """Model weights (n_models, n) times a prior (n_models,), renormalised; a column the prior would empty keeps
    its weights."""
    w = np.asarray(weight_m_n, np.float64) * np.asarray(prior_m, np.float64)[:, None]
    total = w.sum(axis=0, keepdims=True)
    return np.where(total > 1e-12, w / np.maximum(total, 1e-300), weight_m_n).astype(np.float32)


#: Relative noise levels q (RMS of a curve's denoised noise / the curve's peak) of the noise-aware Tmax shift's
#: tables (:func:`noisy_shift_tables`); a voxel between two levels gets the linear blend of their shifts, one beyond
#: the last level that level's shift.
NOISE_Q_GRID = np.array([0.0, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32])

#: Every how many MTTs of the tables' grid the noisy readings are emulated (the noise's change of the shift is
#: interpolated in log MTT between them: it varies slowly, and the emulation is the option's main cost).
_NOISE_TAU_STEP = 3

#: Fewest noisy readings of a table entry that chose a level for the entry to be their median (otherwise the median
#: of all readings at that level).
_MIN_LEVEL_READINGS = 8


def noisy_shift_tables(aif_t: np.ndarray, filters: list[np.ndarray], dt_s: float, length: int, t: int, n_neg: int,
                       tau_grid_s: np.ndarray, model_spectra: np.ndarray, shifts: np.ndarray,
                       shift_free_y: np.ndarray, y_grid: np.ndarray, tmax_half_w: int, oi_sub: int,
                       oi_target: float, noise_vectors: np.ndarray, n_threads: int = 1) -> np.ndarray:
    """The Tmax shift of every model and level under the study's noise, (n_models, n_levels, n_q, n_y) (s).

    Each model's unit-flow curve at each MTT (``model_spectra``, :func:`step_response_tables`) plus each of the
    ``noise_vectors`` (n_vec, T; each scaled to RMS ``q`` x the curve's peak, q from :data:`NOISE_Q_GRID`, the grid
    the engine positions each voxel's noise-to-peak ratio on) is read as the engine reads a voxel: the most
    regularised residue's peak guides the search (the noise-free guide: the engine's guide is spatially filtered),
    the first level whose residue passes the oscillation index is the voxel's level, and its residue's peak is
    searched within ``tmax_half_w`` samples of the guide. The shift is the noise-free shift (``shifts``,
    (n_models, n_levels, n_tau)) plus the median change of the peak time the noise causes over
    the readings that chose the level (all readings of the level when fewer than :data:`_MIN_LEVEL_READINGS`
    did). Noise moves the observable y = log(peak / area) too: each level of q is indexed by the mean y of its
    noisy readings. ``shift_free_y`` (n_models, n_levels, n_y) is the noise-free shift already on ``y_grid``
    (:func:`_observable_tables`), used as is for q = 0. The readings are emulated at every
    :data:`_NOISE_TAU_STEP`-th MTT of ``tau_grid_s``.

    The median, not the mean: the readings' errors are skewed (a noise excursion moves the argmax by whole
    samples), and the Tmax maps pass spatial median filters (measured: the mean over-corrects low-flow tissue
    twice as much, README "Model evidence").
    """
    vec = np.asarray(noise_vectors, np.float64)
    vec = vec / np.maximum(np.sqrt(np.mean(vec ** 2, axis=1, keepdims=True)), 1e-12)
    n_v = len(vec)
    nodes = np.unique(np.r_[np.arange(0, len(tau_grid_s), _NOISE_TAU_STEP), len(tau_grid_s) - 1])
    n_nodes = len(nodes)
    top = len(filters) - 1
    a_sum = float(np.sum(aif_t))
    lt = np.log(tau_grid_s)
    out = np.empty(shifts.shape[:2] + (len(NOISE_Q_GRID), len(y_grid)))

    def one_model(m: int) -> None:
        c = sfft.irfft(model_spectra[m, nodes], n=length, axis=1)[:, :t]  # (n_nodes, t) unit-flow curves
        free = [sfft.irfft(model_spectra[m, nodes] * filt[None], n=length, axis=1) for filt in filters]
        gi = _time_index(_peak_signed(free[top], dt_s, t, n_neg)[1], dt_s, t, n_neg)
        tm_free = np.array([_peak_signed(r, dt_s, t, n_neg, centre_idx=gi, half_width=tmax_half_w)[1]
                            for r in free])  # (n_levels, n_nodes)
        gi_all = np.repeat(gi, n_v)
        for qa, q in enumerate(NOISE_Q_GRID):
            if q <= 0:
                out[m, :, qa] = shift_free_y[m]
                continue
            noisy = (c[:, None, :] + (q * c.max(axis=1))[:, None, None] * vec[None]).reshape(-1, t)
            spec = sfft.rfft(noisy, n=length, axis=1)
            r_top = sfft.irfft(spec * filters[top][None], n=length, axis=1)
            p_top, _ = _peak_signed(r_top, dt_s, t, n_neg, centre_idx=gi_all, half_width=1)
            auc = noisy.sum(axis=1) / a_sum
            with np.errstate(divide="ignore", invalid="ignore"):
                y_obs = np.log(np.maximum(p_top, 1e-9) / np.maximum(auc, 1e-9)).reshape(n_nodes, n_v).mean(axis=1)
            # y falls with the MTT: made monotone, then each y of the grid mapped to an MTT
            lt_y = np.interp(-y_grid, -np.minimum.accumulate(y_obs), lt[nodes])
            chosen = np.full(len(noisy), top)
            undecided = np.ones(len(noisy), bool)
            change = np.empty((len(filters), n_nodes))
            for j, filt in enumerate(filters):
                r = r_top if j == top else sfft.irfft(spec * filt[None], n=length, axis=1)
                _, tm = _peak_signed(r, dt_s, t, n_neg, centre_idx=gi_all, half_width=tmax_half_w)
                if j < top:
                    ok = undecided & (oscillation_index(r[:, ::oi_sub]) <= oi_target)
                    chosen[ok] = j
                    undecided &= ~ok
                d = (tm - np.repeat(tm_free[j], n_v)).reshape(n_nodes, n_v)
                at_level = (chosen == j).reshape(n_nodes, n_v)  # final: a reading's level is set at most once
                change[j] = np.median(d, axis=1)
                rows = at_level.sum(axis=1) >= _MIN_LEVEL_READINGS
                if rows.any():
                    change[j, rows] = np.nanmedian(np.where(at_level[rows], d[rows], np.nan), axis=1)
            for j in range(len(filters)):
                out[m, j, qa] = np.interp(lt_y, lt, shifts[m, j] + np.interp(lt, lt[nodes], change[j]))

    with ThreadPoolExecutor(max_workers=thread_count(n_threads, len(model_spectra))) as pool:
        list(pool.map(one_model, range(len(model_spectra))))
    return out


def _grid_position(values: np.ndarray, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the grid interval of each value and the fraction within it (clipped to the grid's ends)."""
    i0 = np.clip(np.searchsorted(grid, values, side="right") - 1, 0, len(grid) - 2)
    return i0, np.clip((values - grid[i0]) / (grid[i0 + 1] - grid[i0]), 0.0, 1.0)


def _blended_lookup(table_m_q_y: np.ndarray, weight_m_n: np.ndarray, i0: np.ndarray, frac: np.ndarray,
                    q0: np.ndarray, q_frac: np.ndarray) -> np.ndarray:
    """:func:`_weighted_lookup` of a table with a noise-level axis (n_models, n_q, n_y): each voxel's lookup at
    its two neighbouring levels (``q0``, ``q0 + 1``), blended linearly by ``q_frac``."""
    out = np.zeros(len(i0))
    for a in np.unique(np.concatenate([q0, q0 + 1])):
        wq = np.where(q0 == a, 1.0 - q_frac, 0.0) + np.where(q0 + 1 == a, q_frac, 0.0)
        use = np.flatnonzero(wq > 0)
        if len(use):
            out[use] += wq[use] * _weighted_lookup(table_m_q_y[:, a], weight_m_n[:, use], i0[use], frac[use])
    return out


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


def deconvolve(tissue_nt: np.ndarray, aif_t: np.ndarray, dt_s: float, cfg: DeconvolutionConfig,
               tau_filter=None, shape_groups: np.ndarray | None = None, weight_filter=None, evidence_filter=None,
               evidence_mask: np.ndarray | None = None, prior_blocks: np.ndarray | None = None,
               workers: int | None = None, bound_tmax: bool = True, noise_vectors: np.ndarray | None = None,
               noise_rms: np.ndarray | None = None) -> DeconvolutionOutput:
    """Dispatch on ``cfg.method`` ("bcsvd" | "standard" | "tikhonov" | "svd").

    ``tau_filter`` (optional, circulant methods): a function mapping per-voxel values (n,) to filtered values (e.g.
    a spatial median), applied to the guide's peak time and to the log peak-to-area ratio that looks up the
    regularisation-bias correction (see the module doc).
    ``workers``: threads the circulant methods may use (None = all CPU cores); the result does not depend on it.
    ``bound_tmax``: report a peak before the arrival (a noisy residue, or tissue just ahead of the AIF) as 0 s
    (default), or keep it negative, so that a spatial filter applied before the bound averages the values
    themselves (a mean of values bounded at 0 is biased late where the true Tmax is near 0).
    ``noise_vectors``, ``noise_rms``: the noise-aware Tmax shift (:func:`deconvolve_circulant`).
    """
    if cfg.method == "svd":
        out = deconvolve_standard_svd(tissue_nt, aif_t, dt_s, cfg.svd_threshold)
        out.rmax_standard_per_s, out.tmax_standard_s = out.rmax_per_s, out.tmax_s
    elif cfg.method == "standard":
        classic = dataclasses.replace(cfg, peak_window_s=None, correct_regularisation_bias=False)
        out = deconvolve_circulant(tissue_nt, aif_t, dt_s, classic, method="bcsvd", workers=workers)
    else:
        out = deconvolve_circulant(tissue_nt, aif_t, dt_s, cfg, tau_filter=tau_filter, shape_groups=shape_groups,
                                   weight_filter=weight_filter, evidence_filter=evidence_filter,
                                   evidence_mask=evidence_mask, prior_blocks=prior_blocks, workers=workers,
                                   noise_vectors=noise_vectors, noise_rms=noise_rms)
    if bound_tmax:
        out.tmax_s = np.maximum(out.tmax_s, 0.0)
        if out.tmax_standard_s is not None:
            out.tmax_standard_s = np.maximum(out.tmax_standard_s, 0.0)
    return out
