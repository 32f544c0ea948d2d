"""Noise-free emulation of the measurement for a family of model residues: the regularisation-bias correction's
tables (height and Tmax shift per level and MTT), their lookups and the noise-aware Tmax shift's noisy tables."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.fft as sfft
from scipy.special import gammaincc

from ctperf.config import DeconvolutionConfig, thread_count
from ctperf.engine.deconvolution.peaks import _peak_signed, _time_index
from ctperf.engine.deconvolution.regularisation import oscillation_index


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


#: Gamma shapes at or above this are plug-flow models (a flat-topped residue), left out of the Tmax shift by
#: default (``tmax_shift_without_plug_flow``).
PLUG_FLOW_SHAPE_K = 10.0


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
    twice as much, docs/engine-notes.md "Model evidence").
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
