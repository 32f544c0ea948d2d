"""What a deconvolution returns (:class:`DeconvolutionOutput`) and the voxel chunk its loops work in."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Voxels per chunk of the deconvolution loops (their (chunk, frames) work arrays stay small).
_CHUNK = 8192


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
    #: (blocks that informed that mixture, tissue blocks offered, where it was fitted: "grid" or "frames"), or None
    #: without a study prior.
    dispersion_prior_blocks: tuple[int, int, str] | None = None
    #: How far each voxel's Tmax would move between the dispersions its Tmax shift's weights leave open
    #: (:func:`dispersion_spread` of the models' noise-free shifts at the voxel's level and MTT; s), (n,) float32,
    #: or None without the guided correction.
    tmax_dispersion_sd_s: np.ndarray | None = None
    #: How far each voxel's CBF would move between the dispersions its height correction's weights leave open
    #: (:func:`dispersion_spread` of the models' noise-free log height factors at the voxel's level and MTT; log
    #: units, i.e. about a relative change), (n,) float32, or None without the guided correction.
    cbf_dispersion_sd: np.ndarray | None = None
