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

Modules
-------
``regularisation`` the circulant system, its truncation ladder, filters and the oscillation index; ``peaks`` reading a
residue's peak; ``emulation`` the noise-free emulation behind the bias correction and its lookups; ``evidence`` each
model's likelihood per group of voxels; ``prior`` the study-wide mixture of the models; ``circulant`` the whole
ladder with the guided search and the correction (:func:`deconvolve_circulant`); ``svd`` the standard truncated SVD;
``output`` :class:`DeconvolutionOutput`.  :func:`deconvolve` dispatches on the method.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ctperf.config import DeconvolutionConfig
from ctperf.engine.deconvolution.circulant import deconvolve_circulant
from ctperf.engine.deconvolution.emulation import (NOISE_Q_GRID, PLUG_FLOW_SHAPE_K, apply_bias_correction,
                                                   dispersion_spread, log_tau_from_peak, model_family,
                                                   model_residues, noisy_shift_tables, step_response_tables)
from ctperf.engine.deconvolution.evidence import (aif_noise_misfits, block_evidence, block_log_likelihood,
                                                  curve_misfits, mean_model_weights, model_log_evidence, model_weights,
                                                  study_model_weights, weights_from_log_evidence)
from ctperf.engine.deconvolution.frame_prior import FrameBlocks
from ctperf.engine.deconvolution.output import DeconvolutionOutput
from ctperf.engine.deconvolution.peaks import residue_peak
from ctperf.engine.deconvolution.prior import (apply_prior, dispersion_shares, informative_blocks,
                                               mixture_proportions, model_prior, study_model_mixture)
from ctperf.engine.deconvolution.regularisation import (aif_noise_floor, circulant_spectrum, lowest_regularisation,
                                                        oscillation_index, padded_length, truncation_ladder)
from ctperf.engine.deconvolution.svd import deconvolve_standard_svd

__all__ = [
    "NOISE_Q_GRID", "PLUG_FLOW_SHAPE_K", "DeconvolutionOutput", "aif_noise_floor", "aif_noise_misfits",
    "apply_bias_correction", "apply_prior", "block_evidence", "block_log_likelihood", "circulant_spectrum",
    "curve_misfits", "deconvolve", "deconvolve_circulant", "deconvolve_standard_svd", "dispersion_shares",
    "dispersion_spread", "informative_blocks", "log_tau_from_peak", "lowest_regularisation", "mean_model_weights",
    "mixture_proportions", "model_family", "model_log_evidence", "model_prior", "model_residues", "model_weights",
    "noisy_shift_tables", "oscillation_index", "padded_length", "residue_peak", "step_response_tables",
    "study_model_mixture", "study_model_weights", "truncation_ladder", "weights_from_log_evidence",
]


def deconvolve(tissue_nt: np.ndarray, aif_t: np.ndarray, dt_s: float, cfg: DeconvolutionConfig,
               tau_filter=None, shape_groups: np.ndarray | None = None, weight_filter=None, evidence_filter=None,
               evidence_mask: np.ndarray | None = None, prior_blocks: np.ndarray | FrameBlocks | None = None,
               workers: int | None = None, bound_tmax: bool = True, noise_vectors: np.ndarray | None = None,
               noise_rms: np.ndarray | None = None, aif_noise: np.ndarray | None = None) -> DeconvolutionOutput:
    """Dispatch on ``cfg.method`` ("bcsvd" | "standard" | "tikhonov" | "svd").

    ``tau_filter`` (optional, circulant methods): a function mapping per-voxel values (n,) to filtered values (e.g.
    a spatial median), applied to the guide's peak time and to the log peak-to-area ratio that looks up the
    regularisation-bias correction (see the module doc).
    ``workers``: threads the circulant methods may use (None = all CPU cores); the result does not depend on it.
    ``bound_tmax``: report a peak before the arrival (a noisy residue, or tissue just ahead of the AIF) as 0 s
    (default), or keep it negative, so that a spatial filter applied before the bound averages the values
    themselves (a mean of values bounded at 0 is biased late where the true Tmax is near 0).
    ``noise_vectors``, ``noise_rms``: the noise-aware Tmax shift; ``aif_noise``: the factor of the AIF's noise
    covariance for the study prior (:func:`deconvolve_circulant`).
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
                                   noise_vectors=noise_vectors, noise_rms=noise_rms, aif_noise=aif_noise)
    if bound_tmax:
        out.tmax_s = np.maximum(out.tmax_s, 0.0)
        if out.tmax_standard_s is not None:
            out.tmax_standard_s = np.maximum(out.tmax_standard_s, 0.0)
    return out
