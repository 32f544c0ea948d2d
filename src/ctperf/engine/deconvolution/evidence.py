"""How well each model residue explains the tissue, per group of voxels: on the deconvolved residues
(:func:`model_weights`) or on the curves (:func:`model_log_evidence`, :func:`block_evidence`)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.fft as sfft
from scipy import sparse

from ctperf.config import thread_count
from ctperf.engine.deconvolution.emulation import log_tau_from_peak, model_residues
from ctperf.engine.deconvolution.peaks import _argmax_near, _parabola_peak, _peak_signed, _search_window, _time_index
from ctperf.engine.deconvolution.regularisation import oscillation_index


#: Curves x MTT nodes x lags per chunk of :func:`curve_misfits` (its cross-correlations, float32).
_CURVE_CHUNK = 1 << 21


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
                  tau_centre_m_g: np.ndarray, half_tau: int = 2,
                  aif_noise_m_tau: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Least-squares misfit of each model's tissue curve to each measured curve, in the concentration domain.

    For model ``m`` the curve is ``F (AIF (x) R_m,tau)(t - delay)``.  The flow ``F >= 0`` is solved in closed form,
    the delay by search over every whole sample from ``-max_negative_lag`` to half the acquisition (all lags at
    once through the cross-correlation with the model curve delayed by each lag, then a parabola through the best
    lag), and ``tau`` over the nodes ``tau_centre_m_g +- half_tau`` of the model's MTT grid (then a parabola in the
    node index).

    mean_gt : (n, T) curves; model_spectra : (n_models, n_tau, F) rfft (length ``length``) of the unit-flow model
    curves of T samples; tau_centre_m_g : (n_models, n) int node per model and curve; aif_noise_m_tau : (n_models,
    n_tau) the sum of squares the AIF's noise leaves in each model's fit per unit flow squared
    (:func:`aif_noise_misfits`).
    Returns (misfit (n_models, n): residual sum of squares, lag-1 autocorrelation (n,) of the best fit's
    residual, and with ``aif_noise_m_tau`` the AIF's noise's expected share of each misfit (n_models, n): the table
    at the fit's best whole MTT node times its flow squared; else None).
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
    aif_share = None if aif_noise_m_tau is None else np.empty((n_m, n))
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
            if aif_share is not None:  # the flow squared (explained / model norm) at the best whole node
                node, lag = idx[rows, j], i_lag[rows, j]
                aif_share[m, a:b] = gain[rows, j, lag] / norms[m][node, lag] * aif_noise_m_tau[m][node]
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
    return misfit, rho, aif_share


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
                   half_tau: int = 2, aif_noise_m_tau: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Log-likelihood (n_models, n_groups) of each model's tissue curve given each mean curve ``mean_gt``
    (n_groups, T), flow, delay and MTT free (:func:`curve_misfits`), maximum 0 per group, and the residual sum of
    squares of each group's best fit (n_groups,).

    Likelihood: Gaussian noise with the best fit's residual variance; the noise is temporally correlated (temporal
    smoothing, resampling), so the effective number of independent samples is ``(T - 3) (1 - rho) / (1 + rho)``
    with ``rho`` the median lag-1 autocorrelation of the best fits' residuals.  The MTT nodes searched are
    ``half_tau`` nodes either side of each model's MTT for the group's peak-to-area ratio of the most regularised
    residue (``top_filter``, ``heights_top`` (n_models, n_tau)).  ``aif_noise_m_tau`` (:func:`aif_noise_misfits`):
    each model's misfit is lowered by the AIF's noise's expected share of it before the likelihoods are compared (at
    least to 1e-6 of the curve's sum of squares); the noise scale and the returned residual stay those of the best
    uncorrected fit.
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
    mis, rho, aif_share = curve_misfits(mean, model_spectra, length, n_neg, centre, half_tau, aif_noise_m_tau)
    r = float(np.clip(np.median(rho), 0.0, 0.95)) if len(rho) else 0.0
    nu = max(1.0, (t - 3) * (1.0 - r) / (1.0 + r))
    best = np.maximum(mis.min(axis=0), 1e-30)
    if aif_share is None:
        return -0.5 * nu * (mis - best) / best, best
    corrected = np.maximum(mis - aif_share, 1e-6 * (mean * mean).sum(axis=1)[None])
    return -0.5 * nu * (corrected - corrected.min(axis=0)) / best, best


def weights_from_log_evidence(log_ev_m_n: np.ndarray) -> np.ndarray:
    """Normalised model weights (columns sum to 1) from summed log-likelihoods (n_models, n)."""
    w = np.exp(log_ev_m_n - log_ev_m_n.max(axis=0, keepdims=True))
    return (w / w.sum(axis=0, keepdims=True)).astype(np.float32)


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


def aif_noise_misfits(family: list[tuple[float, float]], tau_grid_s: np.ndarray, dt_s: float, n_pos: int,
                      aif_noise_factor: np.ndarray, aif_t: np.ndarray, fine: int = 10) -> np.ndarray:
    """Expected sum of squares (n_models, n_tau) that the AIF's noise leaves in the least-squares fit of each model's
    tissue curve, per unit flow squared: ``tr((I - P) A C A')``, with ``C = L L'`` the AIF's noise covariance on the
    time grid (``aif_noise_factor`` = ``L``, (T, r): :func:`ctperf.engine.aif.aif_noise_factor`), ``A`` the model
    curve's response to each AIF sample, computed as the model curves are
    (:func:`ctperf.engine.deconvolution.emulation._emulated_tissue_spectra`: the residue on a grid ``fine`` times
    finer, the AIF linearly interpolated between its samples), and ``P`` the projection onto what the fit adjusts
    at the model curve ``A aif`` (``aif_t``): its flow, its delay and its MTT (the curve, its time derivative and its
    derivative in log MTT, by central differences).

    Why: the data's tissue saw the noise-free AIF, while every model curve is the measured AIF convolved with the
    model's residue, so even the true model misses the tissue by this much (times its flow squared), and a sharp
    residue, which passes more of the AIF's noise, by more than a dispersed one: uncorrected, a noisy AIF moves the
    study prior towards dispersion (:func:`block_evidence` subtracts it).  The part of the noise the fit's flow,
    delay and MTT absorb (25-35 % of ``tr(A C A')``, differently for each model) does not reach the misfit."""
    factor = np.asarray(aif_noise_factor, np.float64)[:n_pos]
    aif = np.asarray(aif_t, np.float64)[:n_pos]
    n_fft = sfft.next_fast_len(2 * n_pos)
    factor_spec = sfft.rfft(factor, n=n_fft, axis=0)  # (F, r)
    aif_spec = sfft.rfft(aif, n=n_fft)
    hat = np.interp(np.arange(-fine, fine + 1), [-fine, 0, fine], [0.0, 1.0, 0.0])  # a sample on the fine grid
    log_tau = np.log(np.asarray(tau_grid_s, np.float64))
    out = np.empty((len(family), len(tau_grid_s)))
    for m, (shape_k, disp_s) in enumerate(family):
        _, r_fine, _, _ = model_residues(np.asarray(tau_grid_s, np.float64), dt_s, n_pos + 1, disp_s, fine, shape_k)
        padded = np.concatenate([np.zeros((len(tau_grid_s), fine)), r_fine], axis=1)
        # response of the sampled curve to a unit AIF sample ``lag`` samples earlier (n_tau, T)
        windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * fine + 1, axis=1)[:, ::fine][:, :n_pos]
        resp_spec = sfft.rfft(windows @ hat * (dt_s / fine), n=n_fft, axis=1)
        # A L: each column of L convolved with the response (causal), the first n_pos samples; and the model curve
        a_l = sfft.irfft(resp_spec[:, :, None] * factor_spec[None], n=n_fft, axis=1)[:, :n_pos]
        curve = sfft.irfft(resp_spec * aif_spec[None], n=n_fft, axis=1)[:, :n_pos]
        # the fit's tangent directions: flow (the curve), delay (its time derivative), log MTT (across the nodes)
        d_time = np.gradient(curve, axis=1)
        d_tau = np.gradient(curve, log_tau, axis=0)
        q, _ = np.linalg.qr(np.stack([curve, d_time, d_tau], axis=2))  # (n_tau, T, 3) orthonormal
        out[m] = np.square(a_l).sum(axis=(1, 2)) - np.square(np.einsum("ktj,ktr->kjr", q, a_l)).sum(axis=(1, 2))
    return out
