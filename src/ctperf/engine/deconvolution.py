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
    matter keeps a small threshold so high flows are not underestimated.)
``"tikhonov"`` - the same circulant system with Tikhonov regularisation (Calamante et al., MRM 2003):
    filter ``|S|^2 / (|S|^2 + (lambda * max S)^2)``; ``lambda = tikhonov_lambda``.
``"svd"`` - standard truncated SVD of the lower-triangular (non-circulant) Toeplitz matrix with a fixed
    threshold (Ostergaard 1996).  Delay sensitive; for comparison only.

Outputs per voxel: ``rmax`` = max of the residue (1/s; CBF = 6000 kH/rho * rmax mL/100g/min) and ``tmax_s`` =
time of that maximum.  Tmax is located with sub-sample precision by a parabola through the peak sample and its
neighbours, on the OI-controlled (well-conditioned) residue; negative delays (tissue before the AIF, wrapped to
the end of the circulant window) are searched too and reported as 0.

Regularisation-bias correction (``correct_regularisation_bias``, default on)
    Any regularised deconvolution returns ``r_est = w (x) r_true``: the true residue seen through the
    effective filter ``w`` of the chosen regularisation (for the circulant methods ``W = DFT(w)`` is known
    exactly: the truncation mask or the Tikhonov factor), further blurred by sampling a fast-rising residue
    every ``dt``.  For a residue with a fast onset (normal tissue: ``R(t) = exp(-t/MTT)`` after the arrival
    delay) this lowers the peak (CBF underestimated, worst for high flow / short MTT) and moves it late (Tmax
    biased late by ~1-2 s).  Both effects are computed for each regularisation level by a noise-free emulation
    of the measurement with *this study's AIF* and reference residues ``exp(-t/tau)`` (optionally dispersed by
    ``cbf_model_dispersion_s`` for the height and ``tmax_model_dispersion_s`` for the time, default 0.5 s each)
    for a table of ``tau``; they are removed per voxel using its MTT ``tau``, obtained by exact inversion of the
    emulated ``peak / area-ratio = h(tau) / tau`` (:func:`log_tau_from_peak`).  The corrected CBF is the flow of
    the reference residue (for 0 dispersion the textbook flow).  Deterministic, no fitted constants.  A residue
    sharper than the reference stays slightly under-corrected, a smoother (more dispersed) one slightly
    over-corrected (Tmax early by a few tenths of a second).

Residue shape (``residue_shapes``)
    The correction above depends on the shape of the true residue: an exponential (sharp onset) loses much of
    its peak to regularisation, a plug-flow box (flat top) almost none.  By default the reference is the
    exponential (one well-mixed compartment, the usual tissue model).  With several candidate shapes
    (survival functions of gamma-distributed transit times, :func:`model_residues`) each voxel's most regularised
    residue is compared with each shape's emulated residue at the voxel's MTT (least-squares height, aligned on
    the peaks; :func:`_shape_misfit`); the log misfits are pooled over the neighbourhood (``tau_filter``), the
    best shape is chosen and its tables are used (blended where the filtered choice lies between two shapes).

Lag-aware guided peak search (``peak_window_s``, ``tmax_window_s``; ladders of several levels)
    Root cause of "low flows read too high": ``max(R)`` of a noisy residue is the maximum over the samples of a
    search window, biased upwards by about ``sigma_R * E[max of m correlated standard normals]`` (order
    statistics), largest where the residue is flat and low (infarct core, white matter).  Measured on the project
    phantom at 8 HU, same regularisation level, true core: max(R) read 6.4 with noise vs 3.4 for the noiseless
    curves with the former +-3 s window (+0.8 sigma_R).  A narrower window reduces this bias, but the peak of
    the chosen residue is *earlier* than the peak of the most regularised residue (the guide) by the difference
    of their regularisation lags - up to ~3 s for long MTTs - so a narrow window centred on the guide cuts the
    peak off (-18 % CBF for a noiseless MTT = 8 s residue).  Hence the height is searched exactly where the
    peak of level ``j`` must lie: from ``t_guide - (lag_top(tau) - lag_j(tau))`` to ``t_guide`` (lags from the
    noise-free emulation below, ``tau`` = the voxel's noise-robust MTT), widened by ``peak_window_s`` (default 0)
    on both sides, with parabolic refinement.  Tmax is searched within ``+-tmax_window_s`` (default 3 s) of the
    guide's peak, which stops a noise bump elsewhere in the window from becoming Tmax.  The OI alone does not
    catch low-frequency noise.  ``peak_window_s = None``: whole window, unguided.

Noise-robust bias-correction lookup (``bias_tau_median_radius_mm``)
    The height correction ``1/height(level, tau)`` depends on the voxel's MTT ``tau``, estimated from its own
    (guide) peak.  A noise-lifted peak gives a too short ``tau`` and hence a too large correction: a positive
    feedback that multiplied noisy low-flow peaks by ~1.5 in the phantom core (vs ~1.04 for the same curves
    without noise).  MTT varies slowly and the table varies slowly with it, so the engine passes ``tau_filter``:
    an in-plane median (radius 3 mm, within the parenchyma; edge preserving, rejects the noise-driven short-tau
    outliers) of ``log tau``, used for the height correction and the lag-aware window.  The Tmax shift keeps the
    voxel's own ``tau`` (unchanged behaviour: with the filtered ``tau`` Tmax moves ~0.25 s earlier on the phantom,
    on top of the known over-correction of dispersed residues by the 0.5 s reference, see above).

The oscillation index is evaluated on a reference grid of ``oi_reference_dt_s`` (default 1 s) so that its
target does not depend on the chosen time step (Wu's value was defined for ~1 s sampling).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import scipy.fft as sfft
from scipy.special import gammaincc

from ctperf.config import DeconvolutionConfig

_CHUNK = 32768


@dataclass
class DeconvolutionOutput:
    #: Peak of the flow-scaled residue (1/s), shape (n,).
    rmax_per_s: np.ndarray
    #: Time of the residue peak (s), shape (n,).
    tmax_s: np.ndarray
    #: Regularisation used per voxel (truncation fraction or lambda), shape (n,).
    threshold: np.ndarray
    #: Uncorrected residue peak (1/s) and its time (s) (equal to the above when no bias correction was applied).
    rmax_raw_per_s: np.ndarray | None = None
    tmax_raw_s: np.ndarray | None = None


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
                             dispersion_s: float, shape_k: float, fine: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Spectra (rfft, circulant length) of the noise-free tissue curves ``AIF (x) R_tau`` for unit flow, sampled
    every ``dt_s`` like the data (continuous convolution on a grid ``fine`` times finer, AIF linearly
    interpolated), and the true residue peak times (s)."""
    tf, ex, _, true_t = model_residues(tau_grid_s, dt_s, n_pos, dispersion_s, fine, shape_k)
    t = np.arange(n_pos) * dt_s
    af = np.interp(tf, t, np.asarray(aif_t, float))
    n = len(tf)
    cf = sfft.irfft(sfft.rfft(ex, n=2 * n, axis=1) * sfft.rfft(af, n=2 * n)[None], n=2 * n, axis=1)[:, :n]
    return sfft.rfft(cf[:, ::fine] * (dt_s / fine), n=length, axis=1), true_t


def emulated_residues(aif_t: np.ndarray, inverse_filter: np.ndarray, dt_s: float, length: int, n_pos: int,
                      n_neg: int, tau_grid_s: np.ndarray, dispersion_s: float, shape_k: float) -> np.ndarray:
    """Noise-free deconvolved residues for unit flow, (n_tau, n_neg + n_pos) in search-window layout (times
    ``-n_neg*dt .. (n_pos-1)*dt``), for one regularisation level and one model residue shape."""
    c_spec, _ = _emulated_tissue_spectra(aif_t, dt_s, length, n_pos, tau_grid_s, dispersion_s, shape_k)
    return _search_window(sfft.irfft(c_spec * inverse_filter[None], n=length, axis=1), n_pos, n_neg)


def step_response_tables(aif_t: np.ndarray, inverse_filters: list[np.ndarray], dt_s: float, length: int,
                         n_pos: int, n_neg: int, tau_grid_s: np.ndarray,
                         dispersion_s: float = 0.0, shape_k: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Noise-free emulation of the whole measurement for reference residues (:func:`model_residues`).

    For each ``tau``: the continuous tissue curve ``AIF (x) R_tau`` is computed on a fine grid (AIF linearly
    interpolated), sampled every ``dt_s`` like the data, and deconvolved with each regularisation level's
    inverse filter.  Returns the estimated peak height for a unit flow, and the estimated minus true peak time
    (s), as arrays (n_levels, n_tau).  This captures both the regularisation and the discretisation
    of a fast-rising residue at the sampling step.  The heights are absolute (the peak read for a unit flow): the
    true peak is 1 without dispersion and ``max(h_disp (x) exp(-t/tau)) < 1`` with it, so dividing a measured peak
    by the height returns the flow ``F`` of the model residue in both cases.
    """
    c_spec, true_t = _emulated_tissue_spectra(aif_t, dt_s, length, n_pos, tau_grid_s, dispersion_s, shape_k)
    heights, shifts = [], []
    for filt in inverse_filters:
        r = sfft.irfft(c_spec * filt[None], n=length, axis=1)
        pk, tm = _peak_signed(r, dt_s, n_pos, n_neg)
        heights.append(pk)
        shifts.append(tm - true_t)
    return np.array(heights), np.array(shifts)


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
                          heights: np.ndarray, shifts: np.ndarray, tau_grid_s: np.ndarray,
                          shifts_tmax: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Divide ``rmax`` by the step-response height and subtract its peak shift, per voxel (unguided search).

    The table entry is selected by the voxel's MTT ``tau``, obtained from its own peak at its own level
    (:func:`log_tau_from_peak`).  ``shifts_tmax`` (optional): the peak-shift table of a different reference
    residue for Tmax (default ``shifts``).
    """
    lt = np.log(tau_grid_s)
    shifts = shifts if shifts_tmax is None else shifts_tmax
    h = np.ones(len(rmax))
    s = np.zeros(len(rmax))
    for j in range(heights.shape[0]):
        m = level == j
        if m.any():
            log_tau = log_tau_from_peak(rmax[m], auc_ratio[m], heights[j], tau_grid_s)
            h[m] = np.interp(log_tau, lt, heights[j])
            s[m] = np.interp(log_tau, lt, shifts[j])
    return ((rmax / np.clip(h, 0.2, 1.0)).astype(np.float32),
            np.maximum(tmax - s, 0.0).astype(np.float32))


def padded_length(n: int) -> int:
    """Circulant length: at least 2 n (Wu 2003), rounded up to a fast FFT size."""
    return int(sfft.next_fast_len(2 * n, real=True))


def circulant_spectrum(aif: np.ndarray, dt_s: float, length: int) -> np.ndarray:
    """Eigenvalues of the block-circulant convolution matrix (= its singular values in modulus), rfft layout."""
    return sfft.rfft(np.asarray(aif, np.float64) * dt_s, n=length)


def oscillation_index(residue: np.ndarray, axis: int = -1) -> np.ndarray:
    """Wu 2003 oscillation index: ``OI = (1/L) (1/max r) sum_k |r[k] - 2 r[k-1] + r[k-2]|``."""
    r = np.moveaxis(np.asarray(residue), axis, -1)
    d2 = np.abs(r[..., 2:] - 2.0 * r[..., 1:-1] + r[..., :-2]).sum(axis=-1)
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


def _argmax_window(residue: np.ndarray, n_pos: int, n_neg: int) -> np.ndarray:
    """Index of the maximum within the search window (window coordinates, see :func:`_peak_signed`)."""
    return np.argmax(_search_window(residue, n_pos, n_neg), axis=1)


def _peak_signed(residue: np.ndarray, dt_s: float, n_pos: int, n_neg: int, centre_idx: np.ndarray | None = None,
                 half_width: int = 0, span_idx: tuple[np.ndarray, np.ndarray] | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Peak value and sub-sample time (s, may be negative) of each residue row (circulant layout).

    Searches times ``-n_neg*dt .. (n_pos-1)*dt`` (negative times are the wrapped end of the window) - or only
    ``centre_idx +- half_width`` samples of it when given - locates the maximum sample and refines it with a
    parabola through its two neighbours.
    """
    win = _search_window(residue, n_pos, n_neg)
    if span_idx is not None:
        cols = np.arange(win.shape[1])[None, :]
        far = (cols < np.asarray(span_idx[0])[:, None] - half_width) | (cols > np.asarray(span_idx[1])[:, None] + half_width)
        i = np.argmax(np.where(far, -np.inf, win), axis=1)
    elif centre_idx is not None and half_width > 0:
        i = _argmax_near(win, centre_idx, half_width)
    else:
        i = np.argmax(win, axis=1)
    frac, peak = _parabola_peak(win, i)
    t = (i + frac - n_neg) * dt_s
    return peak.astype(np.float32), t.astype(np.float32)


def _argmax_near(win: np.ndarray, centre_idx: np.ndarray, half_width: int) -> np.ndarray:
    """Index of each row's maximum within ``centre_idx +- half_width``."""
    cols = np.arange(win.shape[1])[None, :]
    far = np.abs(cols - np.asarray(centre_idx)[:, None]) > half_width
    return np.argmax(np.where(far, -np.inf, win), axis=1)


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


def _filters(spec: np.ndarray, method: str, cfg: DeconvolutionConfig) -> tuple[list[np.ndarray], list[float]]:
    """Frequency-domain pseudo-inverse filters ``W / S`` for each regularisation level (rfft layout)."""
    mag = np.abs(spec)
    smax = float(mag.max())
    inv = np.zeros_like(spec)
    nz = mag > 1e-12 * smax
    inv[nz] = 1.0 / spec[nz]
    if method == "bcsvd":
        levels = sorted(float(p) for p in cfg.oi_thresholds)
        return [np.where(mag >= p * smax, inv, 0.0).astype(np.complex64) for p in levels], levels
    if method == "tikhonov":
        lam = float(cfg.tikhonov_lambda) * smax
        return [(np.conj(spec) / (mag**2 + lam**2)).astype(np.complex64)], [float(cfg.tikhonov_lambda)]
    raise ValueError(f"unknown circulant method {method!r}")


def _shape_tables(aif_t, filters, dt_s, length, t, n_neg, tau_grid, shapes, dispersion_s):
    """Emulated heights and peak shifts, arrays (n_shapes, n_levels, n_tau) (see :func:`step_response_tables`)."""
    tabs = [step_response_tables(aif_t, filters, dt_s, length, t, n_neg, tau_grid, dispersion_s, k) for k in shapes]
    return np.array([h for h, _ in tabs]), np.array([sh for _, sh in tabs])


def _shape_misfit(win: np.ndarray, guide_idx: np.ndarray, model_tau_w: np.ndarray, log_tau: np.ndarray,
                  lt: np.ndarray, half_w: int, before: int = 3, after: int = 20) -> np.ndarray:
    """Mean squared difference between each voxel's residue ``win`` (n, W) and a model residue
    (``model_tau_w`` (n_tau, W) on the MTT grid ``exp(lt)``) at the voxel's MTT, with the least-squares height,
    aligned on the two peaks with sub-sample precision (the voxel's searched within +-``half_w`` of
    ``guide_idx``), from ``before`` samples before to ``after`` samples after the peak."""
    n, w = win.shape
    pos = np.clip(np.interp(log_tau, lt, np.arange(len(lt))), 0, len(lt) - 1)
    i0 = np.floor(pos).astype(int)
    i1 = np.minimum(i0 + 1, len(lt) - 1)
    f = (pos - i0)[:, None]
    model = (1.0 - f) * model_tau_w[i0] + f * model_tau_w[i1]
    i_obs = _argmax_near(win, guide_idx, half_w)
    p_obs = i_obs + _parabola_peak(win, i_obs)[0]
    i_mod = np.argmax(model, axis=1)
    p_mod = i_mod + _parabola_peak(model, i_mod)[0]
    a = i_obs[:, None] + np.arange(-before, after + 1)[None, :]
    b = a - p_obs[:, None] + p_mod[:, None]  # fractional model index at the same time from the peak
    ok = (a >= 0) & (a < w) & (b >= 0) & (b <= w - 1)
    b0 = np.clip(np.floor(b).astype(int), 0, w - 2)
    fb = np.clip(b - b0, 0.0, 1.0)
    rows = np.arange(n)[:, None]
    mod = np.where(ok, (1.0 - fb) * model[rows, b0] + fb * model[rows, b0 + 1], 0.0)
    obs = np.where(ok, win[rows, np.clip(a, 0, w - 1)], 0.0)
    amp = (obs * mod).sum(axis=1) / np.maximum((mod * mod).sum(axis=1), 1e-12)  # least-squares height
    d = obs - mod * amp[:, None]
    return (d * d).sum(axis=1) / np.maximum(ok.sum(axis=1), 1)


def _shape_bracket(u: np.ndarray, n_s: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The two candidate shapes around the continuous shape index ``u`` and the weight of the upper one."""
    s0 = np.clip(np.floor(u).astype(int), 0, n_s - 1)
    s1 = np.minimum(s0 + 1, n_s - 1)
    return s0, s1, (u - s0).astype(np.float64)


def _blend(table_s_l_tau: np.ndarray, u: np.ndarray, log_tau: np.ndarray, lt: np.ndarray) -> np.ndarray:
    """Per-voxel table values (n_levels, n) at shape index ``u`` and log MTT ``log_tau`` (linear in both)."""
    n_s, n_l, _ = table_s_l_tau.shape
    s0, s1, w = _shape_bracket(u, n_s)
    out = np.empty((n_l, len(u)))
    cols = np.arange(len(u))
    for j in range(n_l):
        per_shape = np.array([np.interp(log_tau, lt, table_s_l_tau[s, j]) for s in range(n_s)])  # (n_s, n)
        out[j] = (1.0 - w) * per_shape[s0, cols] + w * per_shape[s1, cols]
    return out


def deconvolve_circulant(tissue_nt: np.ndarray, aif_t: np.ndarray, dt_s: float, cfg: DeconvolutionConfig,
                         method: str | None = None, max_negative_delay_s: float = 4.0,
                         tau_filter=None) -> DeconvolutionOutput:
    """Block-circulant deconvolution (bcSVD with per-voxel OI threshold, or Tikhonov) of many curves.

    tissue_nt : (n, T) delta HU on the uniform grid (step ``dt_s``); aif_t : (T,) delta HU, same grid.
    """
    method = method or cfg.method
    tissue = np.asarray(tissue_nt, np.float32)
    n, t = tissue.shape
    length = padded_length(t)
    spec = circulant_spectrum(aif_t, dt_s, length)
    filters, levels = _filters(spec, method, cfg)
    n_neg = int(round(max_negative_delay_s / dt_s))
    sub = max(1, int(round(cfg.oi_reference_dt_s / dt_s)))
    target = float(cfg.oscillation_index)
    guided = cfg.peak_window_s is not None and cfg.peak_window_s >= 0 and len(filters) > 1
    half_w = int(round(cfg.peak_window_s / dt_s)) if guided else 0
    tmax_half_w = max(1, int(round(cfg.tmax_window_s / dt_s)))
    top = len(filters) - 1

    rmax = np.zeros(n, np.float32)
    tmax = np.zeros(n, np.float32)
    thr = np.full(n, levels[-1], np.float32)
    level = np.full(n, top, np.int16)
    a_sum = float(np.sum(aif_t))
    auc_ratio = tissue.sum(axis=1, dtype=np.float64) / a_sum if a_sum > 0 else np.zeros(n)
    tau_grid = np.geomspace(0.3, 60.0, 48)
    lt = np.log(tau_grid)
    correct = cfg.correct_regularisation_bias
    shapes = tuple(float(k) for k in cfg.residue_shapes) if len(filters) > 1 else (1.0,)
    heights = shifts = shifts_tmax = None
    if correct or guided:
        heights, shifts = _shape_tables(aif_t, filters, dt_s, length, t, n_neg, tau_grid, shapes,
                                        cfg.cbf_model_dispersion_s)
        shifts_tmax = shifts
        if cfg.tmax_model_dispersion_s != cfg.cbf_model_dispersion_s:
            shifts_tmax = _shape_tables(aif_t, filters, dt_s, length, t, n_neg, tau_grid, shapes,
                                        cfg.tmax_model_dispersion_s)[1]

    # per-voxel correction tables (n_levels, n): height and lags of the matching model residue
    h_vox = st_vox = None
    g_t = np.zeros(n, np.float64)
    g_idx_all = None
    if guided:
        # pass 1: peak of the most regularised residue (robust to noise), the voxel's MTT for each candidate
        # residue shape, and how well each shape's emulated residue fits the voxel's (see the module doc)
        n_s = len(shapes)
        g_idx_all = np.zeros(n, int)
        lt_shapes = np.zeros((n_s, n))
        misfit = np.zeros((n_s, n))
        models = ([emulated_residues(aif_t, filters[top], dt_s, length, t, n_neg, tau_grid,
                                     cfg.cbf_model_dispersion_s, k) for k in shapes] if n_s > 1 else [])
        for start in range(0, n, _CHUNK):
            stop = min(n, start + _CHUNK)
            c_spec = sfft.rfft(tissue[start:stop], n=length, axis=1, workers=-1)
            r_top = sfft.irfft(c_spec * filters[top][None], n=length, axis=1, workers=-1)
            p_top, g_t[start:stop] = _peak_signed(r_top, dt_s, t, n_neg)
            gi = np.clip(np.rint(g_t[start:stop] / dt_s).astype(int) + n_neg, 0, t + n_neg - 1)
            g_idx_all[start:stop] = gi
            for si in range(n_s):
                lt_shapes[si, start:stop] = log_tau_from_peak(p_top, auc_ratio[start:stop], heights[si, top],
                                                              tau_grid)
            if n_s > 1:
                win = _search_window(r_top, t, n_neg)
                misfit[:, start:stop] = [_shape_misfit(win, gi, models[si], lt_shapes[si, start:stop], lt,
                                                       tmax_half_w) for si in range(n_s)]
        u = np.zeros(n)
        if n_s > 1:
            if tau_filter is not None:
                # the residue shape is a regional property: pool the neighbourhood (median of the log misfits)
                misfit = np.array([tau_filter(np.log(np.maximum(m, 1e-30))) for m in misfit])
            u = np.argmin(misfit, axis=0).astype(np.float64)
            if tau_filter is not None:
                u = np.clip(np.asarray(tau_filter(u), np.float64), 0, n_s - 1)
        del misfit
        s0, s1, w = _shape_bracket(u, n_s)
        cols = np.arange(n)
        ltau_voxel = (1.0 - w) * lt_shapes[s0, cols] + w * lt_shapes[s1, cols]
        ltau = ltau_voxel if tau_filter is None else np.asarray(tau_filter(ltau_voxel), np.float64)
        # height lookup with the noise-robust (filtered) MTT, lags with the voxel's own MTT (see the module doc)
        h_vox = _blend(heights, u, ltau, lt)
        s_win = _blend(shifts, u, ltau, lt)
        st_vox = _blend(shifts_tmax, u, ltau_voxel, lt)

    def solve_chunk(start: int) -> None:
        """Ladder of regularisation levels for voxels ``start : start + _CHUNK`` (writes disjoint slices)."""
        stop = min(n, start + _CHUNK)
        c_spec = sfft.rfft(tissue[start:stop], n=length, axis=1)
        todo = np.arange(stop - start)
        for j, filt in enumerate(filters):
            r = sfft.irfft(c_spec[todo] * filt[None], n=length, axis=1)
            ok = np.ones(len(todo), bool) if j == top else oscillation_index(r[:, ::sub]) <= target
            if ok.any():
                sel = start + todo[ok]
                if not guided:
                    pk, tm = _peak_signed(r[ok], dt_s, t, n_neg)
                else:
                    # the peak of level j lies between the guide's peak moved earlier by the difference of the two
                    # levels' regularisation lags (emulated at the voxel's MTT and shape) and the guide's peak
                    gi = g_idx_all[sel]
                    lag = np.maximum(s_win[top, sel] - s_win[j, sel], 0.0)
                    early = np.clip(np.rint((g_t[sel] - lag) / dt_s).astype(int) + n_neg, 0, t + n_neg - 1)
                    pk, _ = _peak_signed(r[ok], dt_s, t, n_neg, half_width=half_w, span_idx=(early, gi))
                    _, tm = _peak_signed(r[ok], dt_s, t, n_neg, centre_idx=gi, half_width=tmax_half_w)
                rmax[sel] = pk
                tmax[sel] = tm
                thr[sel] = levels[j]
                level[sel] = j
            todo = todo[~ok]
            if len(todo) == 0:
                break

    # chunks in parallel threads (FFTs and numpy reductions release the GIL)
    with ThreadPoolExecutor(max_workers=max(1, min(os.cpu_count() or 1, -(-n // _CHUNK)))) as pool:
        list(pool.map(solve_chunk, range(0, n, _CHUNK)))
    out = DeconvolutionOutput(rmax_per_s=rmax, tmax_s=np.maximum(tmax, 0.0), threshold=thr,
                              rmax_raw_per_s=rmax, tmax_raw_s=np.maximum(tmax, 0.0))
    if correct:
        if h_vox is None:  # unguided: per-voxel MTT from its own peak, single (first) shape
            out.rmax_per_s, out.tmax_s = apply_bias_correction(rmax, tmax, level, auc_ratio, heights[0], shifts[0],
                                                               tau_grid, shifts_tmax=shifts_tmax[0])
        else:
            cols = np.arange(n)
            h = np.clip(h_vox[level, cols], 0.2, 1.0)
            out.rmax_per_s = (rmax / h).astype(np.float32)
            out.tmax_s = np.maximum(tmax - st_vox[level, cols], 0.0).astype(np.float32)
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
               tau_filter=None) -> DeconvolutionOutput:
    """Dispatch on ``cfg.method`` ("bcsvd" | "tikhonov" | "svd").

    ``tau_filter`` (optional, circulant methods): a function mapping the per-voxel log MTT estimates (n,) used
    to look up the regularisation-bias correction to filtered values (e.g. a spatial median, see the module doc).
    """
    if cfg.method == "svd":
        return deconvolve_standard_svd(tissue_nt, aif_t, dt_s, cfg.svd_threshold)
    return deconvolve_circulant(tissue_nt, aif_t, dt_s, cfg, tau_filter=tau_filter)
