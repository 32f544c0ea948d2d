"""Block-circulant deconvolution of all voxels at once: the ladder of regularisation levels, the guided peak search and
the regularisation-bias correction (:func:`deconvolve_circulant`)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import scipy.fft as sfft

from ctperf.config import DeconvolutionConfig, side_thread, thread_count
from ctperf.engine.deconvolution.emulation import (NOISE_Q_GRID, PLUG_FLOW_SHAPE_K, _blended_lookup, _family_tables,
                                                   _grid_position, _model_lookups, _observable_tables,
                                                   _weighted_lookup, _weighted_sum, apply_bias_correction,
                                                   dispersion_spread, model_family, noisy_shift_tables)
from ctperf.engine.deconvolution.evidence import (_map_rows, _voxels_or_all, _weights_from_curves, aif_noise_misfits,
                                                  mean_model_weights, model_weights, study_model_weights)
from ctperf.engine.deconvolution.frame_prior import FrameBlocks, frame_study_mixture
from ctperf.engine.deconvolution.output import _CHUNK, DeconvolutionOutput
from ctperf.engine.deconvolution.peaks import _peak_signed, _search_window, _time_index
from ctperf.engine.deconvolution.prior import apply_prior, model_prior, study_model_mixture
from ctperf.engine.deconvolution.regularisation import (_filters, aif_noise_floor, circulant_spectrum,
                                                        filtered_residues, oscillation_index, padded_length,
                                                        passband)


def _guide_windows(tissue: np.ndarray, top_filter: np.ndarray, length: int, n_neg: int, n_bins: int,
                   n_threads: int) -> tuple[np.ndarray, np.ndarray]:
    """Peak-search windows (:func:`_search_window`, (n, T + n_neg) float32) of every voxel's most regularised
    residue (``top_filter``), chunk by chunk; kept so the guide's peak can be read again at another time without
    a second pass of FFTs.  Also returns the curves' spectra over their first ``n_bins`` rfft bins (n, n_bins)
    complex64 (the ladder's passband, :attr:`_Ladder.n_bins`: the ladder reads them instead of a second FFT)."""
    n, t = tissue.shape
    win = np.empty((n, t + n_neg), np.float32)
    spectra = np.empty((n, n_bins), np.complex64)
    padded = np.empty((min(n, _CHUNK), length // 2 + 1), np.complex64)
    for start in range(0, n, _CHUNK):
        stop = min(n, start + _CHUNK)
        c_spec = sfft.rfft(tissue[start:stop], n=length, axis=1, workers=n_threads)
        spectra[start:stop] = c_spec[:, :n_bins]
        win[start:stop] = _search_window(filtered_residues(c_spec, top_filter, length, padded, n_threads), t, n_neg)
    return win, spectra


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


@dataclass(frozen=True)
class _Ladder:
    """The regularisation levels of one study's AIF and how each level's residues are read.

    ``filters``: each level's frequency filter (rfft layout, padded length ``length``), least regularised first;
    ``levels``: their truncation fractions (or lambda); residues are searched over ``n_frames + n_neg`` samples of
    ``dt_s`` (``n_neg`` before the arrival); the oscillation index is read every ``oi_sub`` samples against
    ``oi_target``; the guided search widens the height's span by ``peak_half_w`` samples and reads Tmax within
    ``tmax_half_w`` samples of the guide's peak."""

    filters: list[np.ndarray]
    levels: list[float]
    length: int
    n_frames: int
    n_neg: int
    dt_s: float
    oi_sub: int
    oi_target: float
    peak_half_w: int
    tmax_half_w: int

    @property
    def top(self) -> int:
        """Index of the most regularised level (the guide's; every voxel passes there)."""
        return len(self.filters) - 1

    @property
    def n_bins(self) -> int:
        """The leading rfft bins any level passes (:func:`passband`): the residues need only these."""
        return max(passband(filt) for filt in self.filters)


@dataclass
class _Tables:
    """The noise-free emulation of the model family (:func:`_family_tables`): each model's estimated peak
    ``heights`` (n_models, n_levels, n_tau), peak ``shifts`` (s), estimated / true peak ``rel_heights`` and the
    unit-flow model curves' spectra (n_models, n_tau, F), on the MTT grid ``tau_grid_s``."""

    heights: np.ndarray
    shifts: np.ndarray
    rel_heights: np.ndarray
    model_spectra: np.ndarray
    tau_grid_s: np.ndarray


@dataclass
class _Guide:
    """Pass 1 of the guided ladder, for every voxel: the guide residue's peak time (s, filtered) and its index in
    the search window, the positions on the observable grid of the height's and the Tmax shift's MTT, the models'
    regional weights (n_models, n) with the priors of the height (None: the regional weights as they are) and of
    the Tmax shift, the tables as functions of the observable (log height factor, shift; n_models, n_levels, y),
    the noise-aware shift's tables and each voxel's noise position (None without), the study mixture, and the
    curves' spectra over the ladder's passband (:func:`_guide_windows`)."""

    time_s: np.ndarray
    time_idx: np.ndarray
    pos_height: tuple[np.ndarray, np.ndarray]
    pos_shift: tuple[np.ndarray, np.ndarray]
    regional: np.ndarray
    height_prior: np.ndarray | None
    tmax_prior: np.ndarray
    log_h_y: np.ndarray
    shift_y: np.ndarray
    noisy_shift_y: np.ndarray | None
    q_pos: tuple[np.ndarray, np.ndarray] | None
    mixture: np.ndarray | None
    prior_used: tuple[int, int, str] | None
    #: The height correction's weights (n_models, n): the regional ones, or (with a height prior) filled chunk by
    #: chunk in the ladder's threads.
    weight: np.ndarray
    #: The curves' spectra over the ladder's passband (n, :attr:`_Ladder.n_bins`) complex64, from the guide's FFTs.
    spectra: np.ndarray


@dataclass
class _Readings:
    """What the ladder reads per voxel (n,): the peak (1/s) and its time (s, signed), the standard convention's,
    the level used and its truncation value; with the guided correction the log height factor and its spread
    between dispersions (log units), the Tmax shift (s) and its spread between dispersions (s)."""

    rmax: np.ndarray
    tmax: np.ndarray
    rmax_std: np.ndarray
    tmax_std: np.ndarray
    thr: np.ndarray
    level: np.ndarray
    log_h: np.ndarray | None
    log_h_sd: np.ndarray | None
    shift: np.ndarray | None
    shift_sd: np.ndarray | None

    @classmethod
    def empty(cls, n: int, ladder: _Ladder, guided: bool, correct: bool) -> _Readings:
        rmax, tmax = np.zeros(n, np.float32), np.zeros(n, np.float32)
        with_correction = guided and correct
        return cls(rmax=rmax, tmax=tmax,
                   # unguided, the standard convention is the reading itself
                   rmax_std=rmax if not guided else np.zeros(n, np.float32),
                   tmax_std=tmax if not guided else np.zeros(n, np.float32),
                   thr=np.full(n, ladder.levels[-1], np.float32), level=np.full(n, ladder.top, np.int16),
                   log_h=np.zeros(n) if with_correction else None,
                   log_h_sd=np.zeros(n, np.float32) if with_correction else None,
                   shift=np.zeros(n) if with_correction else None,
                   shift_sd=np.zeros(n, np.float32) if with_correction else None)


def deconvolve_circulant(tissue_nt: np.ndarray, aif_t: np.ndarray, dt_s: float, cfg: DeconvolutionConfig,
                         method: str | None = None, max_negative_delay_s: float = 4.0,
                         tau_filter=None, shape_groups: np.ndarray | None = None, weight_filter=None,
                         evidence_filter=None, evidence_mask: np.ndarray | None = None,
                         prior_blocks: np.ndarray | FrameBlocks | None = None, workers: int | None = None,
                         noise_vectors: np.ndarray | None = None,
                         noise_rms: np.ndarray | None = None,
                         aif_noise: np.ndarray | None = None) -> DeconvolutionOutput:
    """Block-circulant deconvolution (bcSVD with per-voxel OI threshold, or Tikhonov) of many curves.

    tissue_nt : (n, T) delta HU on the uniform grid (step ``dt_s``); aif_t : (T,) delta HU, same grid.
    shape_groups : (n,) int labels of the groups of voxels whose mean curves measure the models' likelihoods.
    weight_filter : ``model_evidence = "residues"``, regional scope: a function smoothing per-voxel weights (n,).
    evidence_filter : ``model_evidence = "curves"``, regional scope: a function summing per-voxel
    log-likelihoods (n,) over each voxel's neighbourhood (e.g. an in-plane Gaussian with peak 1).
    evidence_mask : (n,) bool, the voxels whose curves may inform the model weights with the "curves" evidence and
    the "study" scope (tissue: no large vessels, whose curves deconvolve to a spike, and no CSF).
    prior_blocks : (n_blocks, T) mean curves of in-plane tissue blocks (same grid as ``tissue_nt``) that set the
    study-wide prior of the models (``dispersion_prior = "study"``: :func:`study_model_mixture`), or the same blocks
    at the acquired frame times (:class:`FrameBlocks`, ``dispersion_prior_fit = "frames"``:
    :func:`frame_study_mixture`, the grid blocks in ``grid_blocks`` when too few frame blocks are informative);
    None = uniform.
    workers : threads for the FFTs and the voxel chunks (None = all CPU cores); the result does not depend on it.
    noise_vectors, noise_rms : (n_vec, T) curves of the study's denoised noise and (n,) each voxel's noise RMS (same
    units as the curves; :mod:`ctperf.engine.noise_emulation`): given both, the guided correction's Tmax shift is
    the noise-aware one (:func:`noisy_shift_tables`, at each voxel's noise RMS / curve peak).
    aif_noise : (T, r) factor L of the AIF's noise covariance L L' on the grid
    (:func:`ctperf.engine.aif.aif_noise_factor`): the grid study prior discounts what it adds to each model's misfit
    (:func:`aif_noise_misfits`); None = not.

    Steps: the ladder of levels for this AIF; the noise-free emulation of the model family (when the result is
    corrected or guided); pass 1 (:func:`_guided_pass`: the models' weights, the guide residue's peak and each
    voxel's MTT observable); the ladder, chunk by chunk in threads (:func:`_solve_chunk`); the correction.
    Tmax values are signed (a peak before the arrival is negative); :func:`deconvolve` bounds them.
    """
    n_threads = thread_count(workers)
    tissue = np.asarray(tissue_nt, np.float32)
    n, t = tissue.shape
    length = padded_length(t)
    filters, levels = _filters(circulant_spectrum(aif_t, dt_s, length), method or cfg.method, cfg,
                               aif_noise_floor(aif_t)[1])
    guided = cfg.peak_window_s is not None and cfg.peak_window_s >= 0 and len(filters) > 1
    ladder = _Ladder(filters=filters, levels=levels, length=length, n_frames=t,
                     n_neg=int(round(max_negative_delay_s / dt_s)), dt_s=dt_s,
                     oi_sub=max(1, int(round(cfg.oi_reference_dt_s / dt_s))), oi_target=float(cfg.oscillation_index),
                     peak_half_w=int(round(cfg.peak_window_s / dt_s)) if guided else 0,
                     tmax_half_w=max(1, int(round(cfg.tmax_window_s / dt_s))))
    correct = cfg.correct_regularisation_bias
    a_sum = float(np.sum(aif_t))
    auc_ratio = tissue.sum(axis=1, dtype=np.float64) / a_sum if a_sum > 0 else np.zeros(n)
    family = model_family(cfg) if len(filters) > 1 else [(1.0, 0.0)]
    tables = None
    if correct or guided:
        tau_grid = np.geomspace(0.3, 60.0, 48)
        heights, shifts, true_h, model_spectra = _family_tables(aif_t, filters, dt_s, length, t, ladder.n_neg,
                                                                tau_grid, family, n_threads)
        tables = _Tables(heights=heights, shifts=shifts,
                         rel_heights=heights / np.maximum(true_h[:, None, :], 1e-9),  # estimated / true peak
                         model_spectra=model_spectra, tau_grid_s=tau_grid)
    noise_aware = correct and guided and noise_vectors is not None and noise_rms is not None and len(noise_vectors) > 0
    guide = (_guided_pass(tissue, aif_t, ladder, tables, cfg, family, auc_ratio, tau_filter, shape_groups,
                          weight_filter, evidence_filter, evidence_mask, prior_blocks,
                          (noise_vectors, noise_rms) if noise_aware else None, n_threads, aif_noise)
             if guided else None)

    readings = _Readings.empty(n, ladder, guided, correct)
    # chunks in parallel threads (FFTs and numpy reductions release the GIL); each writes its own slices
    with ThreadPoolExecutor(max_workers=thread_count(n_threads, -(-n // _CHUNK))) as pool:
        list(pool.map(lambda start: _solve_chunk(tissue, start, min(n, start + _CHUNK), ladder, guide, readings,
                                                 family, correct),
                      range(0, n, _CHUNK)))
    r = readings
    out = DeconvolutionOutput(rmax_per_s=r.rmax, tmax_s=r.tmax.astype(np.float32), threshold=r.thr,
                              rmax_standard_per_s=r.rmax_std.copy(), tmax_standard_s=r.tmax_std.astype(np.float32),
                              model_family=family if guided else None,
                              model_weight_mean=mean_model_weights(guide.weight, evidence_mask) if guided else None,
                              study_mixture=guide.mixture if guided else None,
                              dispersion_prior_blocks=guide.prior_used if guided else None)
    if correct:
        if not guided:  # unguided: per-voxel MTT from its own peak, single (first) model
            out.rmax_per_s, out.tmax_s = apply_bias_correction(r.rmax, r.tmax, r.level, auc_ratio, tables.heights[0],
                                                               tables.rel_heights[0], tables.shifts[0],
                                                               tables.tau_grid_s)
        else:
            out.rmax_per_s = (r.rmax * np.exp(-r.log_h)).astype(np.float32)
            out.tmax_s = (r.tmax - r.shift).astype(np.float32)
            out.tmax_dispersion_sd_s = r.shift_sd
            out.cbf_dispersion_sd = r.log_h_sd
    return out


def _model_weight_maps(tissue: np.ndarray, aif_t: np.ndarray, ladder: _Ladder, tables: _Tables,
                       cfg: DeconvolutionConfig, family: list[tuple[float, float]], shape_groups, weight_filter,
                       evidence_filter, evidence_mask, prior_blocks, n_threads: int, aif_noise=None):
    """Each region's model weights (n_models, n), and the study's mixture of models (n_models,) with (blocks used,
    blocks offered, where it was fitted) when a study prior is set (``prior_blocks``: the grid blocks' curves or
    :class:`FrameBlocks`; otherwise None, None)."""
    n, n_models = len(tissue), len(family)
    top, filters = ladder.top, ladder.filters
    heights, model_spectra, tau_grid = tables.heights, tables.model_spectra, tables.tau_grid_s
    if n_models == 1:
        return np.ones((1, n), np.float32), None, None

    def evidence_weights() -> np.ndarray:
        grp = np.arange(n) if shape_groups is None else np.asarray(shape_groups)
        ev = _voxels_or_all(evidence_mask, n)
        if cfg.model_evidence == "curves":
            return _weights_from_curves(tissue, grp, ev, aif_t, filters[top], model_spectra, heights[:, top],
                                        ladder.dt_s, ladder.length, ladder.n_neg, tau_grid, cfg.model_weights_scope,
                                        evidence_filter, n_threads)
        w = model_weights(tissue, grp, aif_t, filters, model_spectra, heights, ladder.dt_s, ladder.length,
                          ladder.n_neg, tau_grid, ladder.tmax_half_w, ladder.oi_sub, ladder.oi_target, n_threads)
        if cfg.model_weights_scope == "study":
            return study_model_weights(w, ev)
        if weight_filter is not None:
            w = _map_rows(weight_filter, w, n_threads)
            w /= np.maximum(w.sum(axis=0, keepdims=True), 1e-12)
        return w

    if prior_blocks is None or len(prior_blocks) == 0:
        return evidence_weights(), None, None

    def mixture() -> tuple[np.ndarray | None, int, str]:
        """(mixture, blocks used, where it was fitted: "frames" or "grid"); no mixture when frame blocks without
        grid blocks have too few informative ones."""
        grid_blocks = prior_blocks
        if isinstance(prior_blocks, FrameBlocks):  # the grid's blocks when too few frame blocks are informative
            fitted = frame_study_mixture(prior_blocks, family, cfg.dispersion_prior_min_cnr,
                                         cfg.dispersion_prior_components)
            if fitted is not None:
                return (*fitted, "frames")
            if prior_blocks.grid_blocks is None:
                return None, 0, "frames"
            grid_blocks = prior_blocks.grid_blocks
        k_aif = (None if aif_noise is None else
                 aif_noise_misfits(family, tau_grid, ladder.dt_s, ladder.n_frames, aif_noise, aif_t))
        return (*study_model_mixture(grid_blocks, aif_t, filters[top], model_spectra, heights[:, top], ladder.dt_s,
                                     ladder.length, ladder.n_neg, tau_grid, cfg.dispersion_prior_min_cnr,
                                     cfg.dispersion_prior_components, family, k_aif), "grid")

    # the mixture and the regional evidence are independent: side by side with more than one thread
    with side_thread(n_threads) as beside:
        pending_mixture = beside.submit(mixture) if beside is not None else None
        w = evidence_weights()
        p, used, fit = pending_mixture.result() if pending_mixture is not None else mixture()
    return (w, None, None) if p is None else (w, p, (used, len(prior_blocks), fit))


def _guided_pass(tissue: np.ndarray, aif_t: np.ndarray, ladder: _Ladder, tables: _Tables, cfg: DeconvolutionConfig,
                 family: list[tuple[float, float]], auc_ratio: np.ndarray, tau_filter, shape_groups, weight_filter,
                 evidence_filter, evidence_mask, prior_blocks, noise: tuple[np.ndarray, np.ndarray] | None,
                 n_threads: int, aif_noise=None) -> _Guide:
    """Pass 1 of the guided ladder: the weight of each model residue for each voxel (the evidence of the groups in
    its neighbourhood or in the whole study: see :func:`model_log_evidence`, with the study prior), the peak of the
    most regularised residue (robust to noise) and the voxel's MTT observable ``y = log(peak / area)`` under each
    model.  ``noise``: (noise vectors, noise RMS) for the noise-aware Tmax shift, or None."""
    dt_s, t, n_neg, top = ladder.dt_s, ladder.n_frames, ladder.n_neg, ladder.top
    tau_grid = tables.tau_grid_s
    noisy_shift_y = q_pos = None
    # the model weights (block means) and the guide residues (every voxel) are independent: with more than one
    # thread they are computed side by side (both are mostly numpy/FFT work that releases the GIL)
    with side_thread(n_threads) as side:
        weight_args = (tissue, aif_t, ladder, tables, cfg, family, shape_groups, weight_filter, evidence_filter,
                       evidence_mask, prior_blocks, n_threads, aif_noise)
        pending_weight = side.submit(_model_weight_maps, *weight_args) if side is not None else None
        guide_win, spectra = _guide_windows(tissue, ladder.filters[top], ladder.length, n_neg, ladder.n_bins,
                                            n_threads)
        y, g_t = _guide_peaks(guide_win, auc_ratio, dt_s, t, n_neg)
        if tau_filter is not None:
            # the guide's peak time, spatially filtered: a flat, noisy residue (core, white matter) otherwise
            # puts its maximum where the noise is highest, which lifts the peak read there; the guide's height
            # is then read at the filtered time (+- 1 sample).  A second reading: the median needs every
            # voxel's time first.
            g_t = np.asarray(tau_filter(g_t), np.float64)
            y, _ = _guide_peaks(guide_win, auc_ratio, dt_s, t, n_neg, centre_idx=_time_index(g_t, dt_s, t, n_neg))
        del guide_win
        # the tables as functions of y = log(peak / area) (each model's MTT follows from y); y outside the range
        # of the MTT grid is clipped to it.  (Still beside the model weights, which need none of this.)
        y_grid = np.linspace(-np.log(tau_grid[-1]) - 1.0, -np.log(tau_grid[0]) + 1.0, 512)
        y = np.clip(np.nan_to_num(y, nan=y_grid[0], posinf=y_grid[-1], neginf=y_grid[0]), y_grid[0], y_grid[-1])
        # noise-robust MTT for the height lookup and the lag-aware window: the filtered observable
        y_filt = y if tau_filter is None else np.clip(np.asarray(tau_filter(y), np.float64), y_grid[0], y_grid[-1])
        log_h_y, shift_y = _observable_tables(tables.heights[:, top],
                                              [np.log(np.clip(tables.rel_heights, 0.2, 1.2)), tables.shifts],
                                              tau_grid, y_grid)
        if noise is not None:
            noise_vectors, noise_rms = noise
            noisy_shift_y = noisy_shift_tables(aif_t, ladder.filters, dt_s, ladder.length, t, n_neg, tau_grid,
                                               tables.model_spectra, tables.shifts, shift_y, y_grid, ladder.tmax_half_w,
                                               ladder.oi_sub, ladder.oi_target, noise_vectors, n_threads=n_threads)
            q_pos = _grid_position(np.asarray(noise_rms, np.float64) / np.maximum(tissue.max(axis=1), 1e-3),
                                   NOISE_Q_GRID)
        regional, mixture, prior_used = (pending_weight.result() if pending_weight is not None
                                         else _model_weight_maps(*weight_args))
    # the prior of the height correction's weights (and of the guided height search), and that of the Tmax shift's
    # weights, which leaves out the plug-flow models (their flat top has no defined peak time)
    in_shift = np.array([not (cfg.tmax_shift_without_plug_flow and k >= PLUG_FLOW_SHAPE_K) for k, _ in family])
    tmax_prior = in_shift.astype(np.float64)
    if mixture is not None:
        tmax_prior *= model_prior(mixture, family, cfg.tmax_prior)
    height_prior = None if mixture is None else model_prior(mixture, family, cfg.height_prior)
    pos_filt = _grid_position(y_filt, y_grid)
    return _Guide(time_s=g_t, time_idx=_time_index(g_t, dt_s, t, n_neg), pos_height=pos_filt,
                  pos_shift=pos_filt if cfg.tmax_shift_mtt == "filtered" else _grid_position(y, y_grid),
                  regional=regional, height_prior=height_prior, tmax_prior=tmax_prior, log_h_y=log_h_y,
                  shift_y=shift_y, noisy_shift_y=noisy_shift_y, q_pos=q_pos, mixture=mixture, prior_used=prior_used,
                  weight=regional if height_prior is None else np.empty_like(regional), spectra=spectra)


def _solve_chunk(tissue: np.ndarray, start: int, stop: int, ladder: _Ladder, guide: _Guide | None,
                 out: _Readings, family: list[tuple[float, float]], correct: bool) -> None:
    """The ladder of regularisation levels for voxels ``start:stop``: each voxel is read at the least regularised
    level whose residue passes the oscillation-index test (the top level always passes); with a ``guide`` the peak
    is searched where pass 1 places it and (``correct``) the level's bias correction is looked up here, so it runs
    in the chunks' threads.  Writes the voxels' slices of ``out`` (and of ``guide.weight`` with a height prior)."""
    dt_s, t, n_neg, top = ladder.dt_s, ladder.n_frames, ladder.n_neg, ladder.top
    g = guide
    if g is not None and g.height_prior is not None:
        g.weight[:, start:stop] = apply_prior(g.regional[:, start:stop], g.height_prior)
    c_spec = g.spectra[start:stop] if g is not None else sfft.rfft(tissue[start:stop], n=ladder.length, axis=1)
    padded = np.empty((stop - start, ladder.length // 2 + 1), np.complex64)
    todo = np.arange(stop - start)
    for j, filt in enumerate(ladder.filters):
        r = filtered_residues(c_spec[todo], filt, ladder.length, padded)
        ok = np.ones(len(todo), bool) if j == top else oscillation_index(r[:, ::ladder.oi_sub]) <= ladder.oi_target
        if ok.any():
            sel = start + todo[ok]
            r_ok = r if ok.all() else r[ok]
            if g is None:
                pk, tm = _peak_signed(r_ok, dt_s, t, n_neg)
            else:
                # the peak of level j lies between the guide's peak moved earlier by the difference of the two
                # levels' regularisation lags (emulated at the voxel's MTT and shape) and the guide's peak
                gi = g.time_idx[sel]
                i0, fr = g.pos_height[0][sel], g.pos_height[1][sel]
                w_sel = g.weight[:, sel]
                shift_j = _model_lookups(g.shift_y[:, j], i0, fr)  # every model's noise-free shift at level j
                lag = np.maximum(_weighted_lookup(g.shift_y[:, top], w_sel, i0, fr) - _weighted_sum(shift_j, w_sel),
                                 0.0)
                early = _time_index(g.time_s[sel] - lag, dt_s, t, n_neg)
                win = _search_window(r_ok, t, n_neg)
                pk, _ = _peak_signed(r_ok, dt_s, t, n_neg, half_width=ladder.peak_half_w, span_idx=(early, gi),
                                     window=win)
                _, tm = _peak_signed(r_ok, dt_s, t, n_neg, centre_idx=gi, half_width=ladder.tmax_half_w, window=win)
                out.rmax_std[sel], out.tmax_std[sel] = _peak_signed(r_ok, dt_s, t, n_neg, window=win)
                if correct:
                    # every model's log height factor at level j: their weighted sum and their spread between
                    # dispersions (before the sum, which works in place)
                    per_model_h = _model_lookups(g.log_h_y[:, j], i0, fr)
                    out.log_h_sd[sel] = dispersion_spread(per_model_h, w_sel, family)
                    out.log_h[sel] = _weighted_sum(per_model_h, w_sel, in_place=True)
                    w_shift = apply_prior(g.regional[:, sel], g.tmax_prior)
                    i_s, fr_s = g.pos_shift[0][sel], g.pos_shift[1][sel]
                    # every model's noise-free shift at the shift's MTT: their weighted sum and their spread
                    # between dispersions
                    per_model = shift_j if g.pos_shift is g.pos_height else _model_lookups(g.shift_y[:, j], i_s, fr_s)
                    out.shift[sel] = (_blended_lookup(g.noisy_shift_y[:, j], w_shift, i_s, fr_s, g.q_pos[0][sel],
                                                      g.q_pos[1][sel]) if g.noisy_shift_y is not None else
                                      _weighted_sum(per_model, w_shift))
                    out.shift_sd[sel] = dispersion_spread(per_model, w_shift, family)
            out.rmax[sel] = pk
            out.tmax[sel] = tm
            out.thr[sel] = ladder.levels[j]
            out.level[sel] = j
        todo = todo[~ok]
        if len(todo) == 0:
            break
