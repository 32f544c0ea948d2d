"""The study dispersion prior fitted at the acquired frame times (``dispersion_prior_fit = "frames"``).

The grid prior (:func:`ctperf.engine.deconvolution.prior.study_model_mixture`) fits block means of the curves on
the uniform time grid, whose noise the resampling between frames and the temporal smoothing have correlated; a
wrong model fits such noise better than the true one, and the mixture goes decisively to no dispersion on short
acquisitions and broad boluses (docs/engine-notes.md, "Measured 2026-12-05").  Here the block means of the
baseline-subtracted frames are fitted where they were measured: their noise is white, a free offset absorbs the
baseline's, and least squares is the likelihood.  The model curves are the family's residues convolved with the
AIF of the frames (monotone cubic interpolation between them) on a fine grid, sampled at the frame times minus a
delay; the fit searches the delay (0.1 s) and the MTT (nodes ~9 % apart) from a coarse grid to a fine one around
each block's best coarse nodes.  An option, not the default: docs/engine-notes.md, "Measured 2026-12-05 (session
40)" (a global tissue delay moves it; dispersed tissue of a study whose dispersion varies is under-represented).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.fft as sfft

from ctperf.engine.deconvolution.emulation import model_residues
from ctperf.engine.deconvolution.prior import (_PRIOR_MIN_BLOCKS, informative_blocks, mixture_proportions,
                                              subset_averaged_mixture)

#: The fine search: delays every ``_DELAY_STEP_S`` s and 37 MTT nodes ~9 % apart; the coarse grid takes every
#: ``_COARSE_DELAY``-th delay and ``_COARSE_TAU``-th node (~31 % apart), and the fine stage searches
#: ``_FINE_REACH`` coarse steps either side of each of a block's ``_N_STARTS`` best coarse nodes (around the best
#: one alone it misses the exhaustive optimum of a few percent of the (block, model) pairs by up to several log
#: units, mostly dispersed plug flow, whose fit has several optima).
_DELAY_STEP_S = 0.1
_COARSE_TAU = 3
_COARSE_DELAY = 5
_FINE_REACH = 1
_N_STARTS = 3
#: Blocks per chunk of the fine stage.
_CHUNK_BLOCKS = 512
#: The fine search is run on the blocks whose coarse fit gives them at least this fraction of the informative
#: contrast-to-noise (the fine fit only lowers the residual: a block below would need its residual to fall by
#: more than a third; on the bench study 2950 blocks -> ~700 fitted finely, 463 informative).
_PREFILTER = 0.8
#: MTT range (s) of the fit and nodes per factor 25 of it on the coarse grid.
_TAU_RANGE_S = (1.0, 25.0)
_COARSE_TAU_NODES = 13
#: Earliest delay searched (s, before the AIF's).
_MIN_DELAY_S = -4.0


@dataclass
class FrameBlocks:
    """What the frame-domain prior fits: block means (n_blocks, K) of the baseline-subtracted frames (delta HU), the
    AIF's frame values (K,) (delta HU) and the frame times (K,) (s, on the AIF's slice clock; a block's slice offset
    is absorbed by its delay); and the same blocks' mean curves on the uniform grid (n_blocks, T), for the grid prior
    when too few frame blocks are informative."""

    blocks_k: np.ndarray
    aif_k: np.ndarray
    times_s: np.ndarray
    grid_blocks: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.blocks_k)


def frame_model_curves(aif_k: np.ndarray, t_k: np.ndarray, family: list[tuple[float, float]], taus_s: np.ndarray,
                       delays_s: np.ndarray, dt_fine_s: float = 0.05) -> np.ndarray:
    """Unit-flow model curves (n_models, n_tau, n_delay, K), float32, each less its mean over the frames (the fit's
    free offset): every (gamma shape, dispersion) of ``family`` at every MTT of ``taus_s`` convolved with the frame
    AIF (monotone cubic between the frames, 0 before the first) on a ``dt_fine_s`` grid, sampled at the frame times
    ``t_k`` (s, from the first frame) minus each delay of ``delays_s`` (linear between fine samples, 0 before
    arrival)."""
    from scipy.interpolate import PchipInterpolator  # only when the option is set (its import costs ~0.1 s)

    t_k = np.asarray(t_k, np.float64)
    delays_s = np.asarray(delays_s, np.float64)
    # the latest sample read: the last frame at the earliest delay (the AIF is 0 past its last frame)
    t_fine = np.arange(0.0, t_k[-1] - t_k[0] - min(float(delays_s.min()), 0.0) + 1.0, dt_fine_s)
    aif_fine = np.nan_to_num(PchipInterpolator(t_k - t_k[0], np.asarray(aif_k, np.float64),
                                               extrapolate=False)(t_fine))
    n = len(t_fine)
    aif_spec = sfft.rfft(aif_fine, n=2 * n)
    x = (t_k[None, :] - t_k[0] - delays_s[:, None]) / dt_fine_s  # (n_delay, K)
    i0 = np.clip(np.floor(x).astype(np.int64), 0, n - 2)
    w = np.clip(x - i0, 0.0, 1.0)
    inside = x >= 0
    out = np.empty((len(family), len(taus_s), len(delays_s), len(t_k)), np.float32)
    for m, (shape_k, disp_s) in enumerate(family):
        _, res, _, _ = model_residues(np.asarray(taus_s, np.float64), dt_fine_s, n, disp_s, 1, shape_k)
        c = sfft.irfft(sfft.rfft(res, n=2 * n, axis=1) * aif_spec[None], n=2 * n, axis=1)[:, :n] * dt_fine_s
        curves = (c[:, i0] * (1.0 - w) + c[:, i0 + 1] * w) * inside
        out[m] = curves - curves.mean(axis=2, keepdims=True)
    return out


def fit_frame_blocks(blocks_k: np.ndarray, curves: np.ndarray, fine: bool = True) -> np.ndarray:
    """Residual sums of squares (n_models, n_blocks) of each block's best fit under each model (free offset,
    non-negative flow, the delay and the MTT searched): on every ``_COARSE_TAU``-th MTT and ``_COARSE_DELAY``-th
    delay of ``curves`` (:func:`frame_model_curves`; only there when ``fine`` is False: an upper bound), then on
    every node within ``_FINE_REACH`` coarse steps of each of the block's ``_N_STARTS`` best coarse nodes (blocks in
    chunks of ``_CHUNK_BLOCKS``: ~25 MB of candidate curves at a time)."""
    c = np.asarray(blocks_k, np.float64)
    c = c - c.mean(axis=1, keepdims=True)
    cc = (c * c).sum(axis=1)
    c32 = c.astype(np.float32)
    n_models, n_tau, n_delay, k = curves.shape
    d_tau = np.arange(-_FINE_REACH * _COARSE_TAU, _FINE_REACH * _COARSE_TAU + 1)
    d_delay = np.arange(-_FINE_REACH * _COARSE_DELAY, _FINE_REACH * _COARSE_DELAY + 1)
    norms = np.maximum(np.einsum("mtdk,mtdk->mtd", curves, curves, dtype=np.float64), 1e-12)
    norms32 = norms.astype(np.float32)
    rss = np.empty((n_models, len(c)))
    for m in range(n_models):
        coarse = curves[m, ::_COARSE_TAU, ::_COARSE_DELAY]
        shape = coarse.shape[:2]
        # each coarse node's explained sum of squares, float32: the coarse stage only ranks the nodes
        gain = np.maximum(c32 @ coarse.reshape(-1, k).T, 0.0)
        gain *= gain
        gain /= norms32[m, ::_COARSE_TAU, ::_COARSE_DELAY].reshape(1, -1)
        if not fine:
            rss[m] = cc - gain.max(axis=1)
            continue
        # the fine stage around each of the block's _N_STARTS best coarse nodes (the fit has several optima)
        top = np.argpartition(-gain, _N_STARTS - 1, axis=1)[:, :_N_STARTS]  # (n, starts)
        ti, di = np.unravel_index(top, shape)
        tau_idx = np.clip(ti[:, :, None] * _COARSE_TAU + d_tau, 0, n_tau - 1)[:, :, :, None]        # (n, s, 7, 1)
        delay_idx = np.clip(di[:, :, None] * _COARSE_DELAY + d_delay, 0, n_delay - 1)[:, :, None, :]  # (n, s, 1, 11)
        for lo in range(0, len(c), _CHUNK_BLOCKS):
            sl = slice(lo, lo + _CHUNK_BLOCKS)
            cand = curves[m][tau_idx[sl], delay_idx[sl]].reshape(len(tau_idx[sl]), -1, k)  # (chunk, s * 77, K)
            pf = np.matmul(cand, c32[sl, :, None])[:, :, 0].astype(np.float64)
            nf = norms[m][tau_idx[sl], delay_idx[sl]].reshape(len(pf), -1)
            rss[m, sl] = cc[sl] - (np.maximum(pf, 0.0) ** 2 / nf).max(axis=1)
    return rss


def frame_study_mixture(frames: FrameBlocks, family: list[tuple[float, float]], min_cnr: float,
                        components: str = "all") -> tuple[np.ndarray, int] | None:
    """The study's mixture of models (n_models,) fitted to the frame blocks and the number of blocks used: the
    informative blocks (curve peak >= ``min_cnr`` x the RMS residual of the best fit; the fine fit runs on the
    blocks whose coarse fit reaches ``_PREFILTER`` of it), None when fewer than
    ``_PRIOR_MIN_BLOCKS`` are (the frames' noise is not smoothed, so at 15 HU few blocks are, and the evidence of
    weakly enhancing blocks goes decisively to no dispersion: the grid prior is then used).  The noise variance is
    the informative blocks' median best residual per degree of freedom (K frames less offset, flow, delay, MTT).
    ``components``: "all" (the maximum-likelihood mixture over every model) or "bic" (averaged over the subsets
    of dispersions by their Bayesian information criterion, :func:`subset_averaged_mixture`)."""
    t_k = np.asarray(frames.times_s, np.float64)
    taus = np.geomspace(*_TAU_RANGE_S, _COARSE_TAU * (_COARSE_TAU_NODES - 1) + 1)
    span = t_k[-1] - t_k[0]
    delays = np.arange(_MIN_DELAY_S, span / 2.0 + 1e-9, _DELAY_STEP_S)
    curves = frame_model_curves(frames.aif_k, t_k, family, taus, delays)
    blocks = np.asarray(frames.blocks_k, np.float64)
    if min_cnr > 0:  # the fine search only for blocks whose coarse fit leaves them near informative
        coarse_best = fit_frame_blocks(blocks, curves, fine=False).min(axis=0)
        blocks = blocks[informative_blocks(blocks, coarse_best, _PREFILTER * min_cnr, min_blocks=0)]
    rss = fit_frame_blocks(blocks, curves)
    best = rss.min(axis=0)
    keep = informative_blocks(blocks, best, min_cnr, min_blocks=0)
    if min_cnr > 0 and keep.sum() < _PRIOR_MIN_BLOCKS:
        return None
    dof = max(len(t_k) - 4.0, 1.0)
    sigma2 = max(float(np.median(best[keep])) / dof, 1e-12)
    log_lik = -0.5 * (rss[:, keep] - best[keep]) / sigma2
    if components == "bic":
        return subset_averaged_mixture(log_lik, family), int(keep.sum())
    return mixture_proportions(log_lik), int(keep.sum())
