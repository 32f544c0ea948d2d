"""One typed configuration object for the whole pipeline.

Defaults are the literature ones (docs/definitions.md). A config file (TOML, JSON or YAML) may override any field::

    [thresholds]
    tmax_hypoperfusion_s = 6.0
    rcbf_core = 0.30

    [deconvolution]
    method = "tikhonov"
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, ClassVar, Literal, NamedTuple

from ctperf.errors import ConfigError, InputError


class _Range(NamedTuple):
    """Valid interval of a number; ``fraction`` adds the hint for a value written as a percentage."""

    lo: float
    hi: float
    lo_open: bool = False
    hi_open: bool = False
    fraction: bool = False
    unit: str = ""

    def text(self, name: str) -> str:
        left = f"{self.lo:g} {'<' if self.lo_open else '<='} "
        right = f" {'<' if self.hi_open else '<='} {self.hi:g}"
        return f"{left}{name}{right}" + (f" {self.unit}" if self.unit else "") + (
            ", a fraction" if self.fraction else "")

    def contains(self, v: float) -> bool:
        return ((v > self.lo) if self.lo_open else (v >= self.lo)) and ((v < self.hi) if self.hi_open
                                                                         else (v <= self.hi))


def _r(lo, hi, unit="", lo_open=False, hi_open=False, fraction=False) -> _Range:
    return _Range(float(lo), float(hi), lo_open, hi_open, fraction, unit)


#: Valid range of every numeric setting, by ``section.name`` (lists: every element).  Checked when a section is
#: constructed (``__post_init__``) and when a file is loaded; settings not listed here are only type-checked.
RANGES: dict[str, _Range] = {
    "preprocess.motion_flag_mm": _r(0, 50, "mm", lo_open=True),
    "preprocess.spatial_sigma_mm": _r(0, 20, "mm"),
    "preprocess.temporal_sigma_s": _r(0, 10, "s"),
    "preprocess.time_step_s": _r(0, 10, "s", lo_open=True),
    "preprocess.compute_pixel_mm": _r(0, 10, "mm"),
    "preprocess.max_time_step_s": _r(0, 10, "s", lo_open=True),
    "preprocess.motion_apply_min_mm": _r(0, 50, "mm"),
    "preprocess.baseline_margin_s": _r(0, 30, "s"),
    "preprocess.tips_range_h": _r(0, 100, lo_open=True),
    "preprocess.tips_range_h_cbv": _r(0, 100, lo_open=True),
    "preprocess.spatial_sigma_cbv_mm": _r(0, 20, "mm"),
    "preprocess.pca_min_components": _r(1, 200),
    "preprocess.pca_max_components": _r(1, 200),
    "preprocess.vessel_cbv_ml_100g": _r(0, 100, "mL/100g", lo_open=True),
    "preprocess.vessel_peak_hu": _r(0, 3000, "HU", lo_open=True),
    "preprocess.brain_hu_min": _r(-1024, 3000, "HU"),
    "preprocess.brain_hu_max": _r(-1024, 3000, "HU"),
    "preprocess.csf_hu_max": _r(-1024, 3000, "HU"),
    "deconvolution.oscillation_index": _r(0, 1, lo_open=True, fraction=True),
    "deconvolution.svd_threshold": _r(0, 1, lo_open=True, hi_open=True, fraction=True),
    "deconvolution.tikhonov_lambda": _r(0, 1, lo_open=True, fraction=True),
    "deconvolution.oi_thresholds": _r(0, 1, lo_open=True, hi_open=True, fraction=True),
    "deconvolution.oi_reference_dt_s": _r(0, 10, "s", lo_open=True),
    "deconvolution.aif_noise_margin": _r(0, 100),
    "deconvolution.peak_window_s": _r(0, 60, "s"),
    "deconvolution.tmax_window_s": _r(0, 60, "s"),
    "deconvolution.residue_shapes": _r(0, 1000, lo_open=True),
    "deconvolution.model_dispersions_s": _r(0, 20, "s"),
    "deconvolution.model_choice_block_mm": _r(0, 50, "mm", lo_open=True),
    "deconvolution.model_evidence_radius_mm": _r(0, 100, "mm"),
    "deconvolution.dispersion_prior_block_mm": _r(0, 50, "mm", lo_open=True),
    "deconvolution.dispersion_prior_min_cnr": _r(0, 1000),
    "deconvolution.bias_tau_median_radius_mm": _r(0, 50, "mm"),
    "deconvolution.tmax_noise_vectors": _r(8, 4096),
    "deconvolution.tmax_median_radius_mm": _r(0, 50, "mm"),
    "deconvolution.rcbf_median_radius_mm": _r(0, 50, "mm"),
    "deconvolution.map_regularisation_sigma_mm": _r(0, 20, "mm", lo_open=True),
    "deconvolution.map_regularisation_h": _r(0, 100, lo_open=True),
    "deconvolution.tmax_regularisation_sigma_mm": _r(0, 20, "mm", lo_open=True),
    "deconvolution.tmax_regularisation_h": _r(0, 100, lo_open=True),
    "aif.n_aif_voxels": _r(1, 1000),
    "aif.n_vof_voxels": _r(1, 1000),
    "thresholds.tmax_hypoperfusion_s": _r(0, 30, "s", lo_open=True),
    "thresholds.tmax_levels_s": _r(0, 30, "s", lo_open=True),
    "thresholds.hir_tmax_s": _r(0, 30, "s", lo_open=True),
    "thresholds.rcbf_core": _r(0, 1, lo_open=True, hi_open=True, fraction=True),
    "thresholds.min_cluster_ml": _r(0, 100, "mL"),
    "thresholds.core_tmax_margin_px": _r(0, 10, "px"),
    "thresholds.pvt_tmax_s": _r(0, 60, "s", lo_open=True),
    "thresholds.min_reference_ml": _r(0, 1000, "mL"),
    "thresholds.core_min_contrast_to_noise": _r(0, 10000),
    "thresholds.core_min_observed_after_peak_s": _r(0, 600, "s"),
    "thresholds.lesion_min_contrast_to_noise": _r(0, 10000),
    "thresholds.lesion_min_observed_after_peak_s": _r(0, 600, "s"),
    "thresholds.hir_min_observed_after_peak_s": _r(0, 600, "s"),
    "thresholds.hypoperfusion_min_margin_s": _r(0, 60, "s"),
    "thresholds.cbv_index_min_observed_after_peak_s": _r(0, 600, "s"),
    "ingest.frame_interval_s": _r(0.3, 10, "s"),
    "ingest.bin_on_load_above_gb": _r(0, 1e6, "GB"),
    "compute.workers": _r(1, 4096, "threads"),
}

#: Settings that must be ordered (``a <= b``), with the section they belong to.
ORDERED: tuple[tuple[str, str], ...] = (("preprocess.pca_min_components", "preprocess.pca_max_components"),
                                        ("preprocess.brain_hu_min", "preprocess.brain_hu_max"))


class _Checked:
    """Mixin for config sections: every field is type- and range-checked on construction.

    Raises
    ------
    ConfigError
        A value of the wrong kind (e.g. text for a number) or outside its documented range (:data:`RANGES`).
    """

    section: ClassVar[str] = ""

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Re-check every field (also after attributes were set by hand); convert int -> float, list -> tuple."""
        hints = _hints(type(self))
        for f in dataclasses.fields(self):
            name = f"{self.section}.{f.name}"
            value = _coerce(name, getattr(self, f.name), hints[f.name])
            object.__setattr__(self, f.name, value)
            rng = RANGES.get(name)
            if rng is not None and value is not None:
                for v in value if isinstance(value, tuple) else (value,):
                    _check_range(name, v, rng)
                if isinstance(value, tuple) and not value:
                    raise ConfigError(f"config: {name} must list at least one value")
        for a, b in ORDERED:
            sa, na = a.split(".")
            sb, nb = b.split(".")
            if sa == self.section == sb and getattr(self, na) > getattr(self, nb):
                raise ConfigError(f"config: {a} = {getattr(self, na):g} must not exceed {b} = {getattr(self, nb):g}")


@cache
def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _check_range(name: str, v: float, rng: _Range) -> None:
    if rng.contains(v):
        return
    short = name.split(".")[-1]
    if rng.fraction and 1 < v <= 100:
        raise ConfigError(f"config: {name} = {v:g} looks like a percentage; use {v / 100:.2f} "
                          f"(valid: {rng.text(short)})")
    raise ConfigError(f"config: {name} = {v:g} is out of range (valid: {rng.text(short)})")


@dataclass
class PreprocessConfig(_Checked):
    section: ClassVar[str] = "preprocess"
    motion_correction: bool = True
    #: Frames whose max displacement exceeds this are flagged (mm).
    motion_flag_mm: float = 2.0
    #: Edge-preserving spatial denoising: "bilateral" (default), "gaussian" or "none".
    spatial_filter: Literal["bilateral", "gaussian", "none"] = "bilateral"
    #: Spatial scale of the denoising kernel (Gaussian sigma, mm).
    spatial_sigma_mm: float = 3.0
    #: Temporal smoothing of tissue curves (Gaussian sigma, s); 0 disables.
    temporal_sigma_s: float = 1.0
    #: Uniform time step used for deconvolution (s). None: the median native sampling interval.
    time_step_s: float | None = None
    #: In-plane grid for computation (mm): the native grid is block-averaged by the integer factor
    #: round(compute_pixel_mm / native pixel) (>= 1; 0 = native grid); maps are written on that grid (exact affine).
    compute_pixel_mm: float = 1.0
    #: Upper bound for the automatic uniform time step (s) when ``time_step_s`` is None.
    max_time_step_s: float = 1.0
    #: Frames whose estimated in-plane motion is below this (mm) are not resampled.
    motion_apply_min_mm: float = 0.1
    #: Baseline frames end this long before the detected arterial bolus arrival (20% of the rise) (s).
    baseline_margin_s: float = 2.5
    #: TIPS bilateral range parameter (larger = more smoothing across curve differences; see ctperf.engine.denoise).
    tips_range_h: float = 1.5
    #: Range parameter for the curve areas used for CBV (more selective: CBV is linear and needs no smoothing to
    #: be unbiased, but smoothing across the grey/white boundary biases it).
    tips_range_h_cbv: float = 0.5
    #: Spatial sigma (mm) of that CBV-area filter.
    spatial_sigma_cbv_mm: float = 1.5
    #: Bounds for the number of temporal principal components kept before spatial filtering.
    pca_min_components: int = 8
    pca_max_components: int = 20
    #: Large vessels: brain voxels with CBV above this (mL/100g) or a peak enhancement above vessel_peak_hu.
    vessel_cbv_ml_100g: float = 8.0
    vessel_peak_hu: float = 100.0
    #: Brain mask HU window on the baseline image.
    brain_hu_min: float = -20.0
    brain_hu_max: float = 80.0
    #: CSF: baseline HU below this inside the brain.
    csf_hu_max: float = 15.0


@dataclass
class DeconvolutionConfig(_Checked):
    section: ClassVar[str] = "deconvolution"
    #: "bcsvd" (default: block-circulant SVD with oscillation-index threshold, Wu 2003, and the shape-robust
    #: regularisation-bias correction; estimates the unregularised residue's peak and peak time), "standard" (the
    #: classic model-free convention: the same bcSVD, Tmax = argmax of that residue, no correction; what published
    #: thresholds were derived on), "tikhonov", or "svd" (truncated SVD, delay sensitive, for comparison only).
    method: Literal["bcsvd", "standard", "tikhonov", "svd"] = "bcsvd"
    #: Oscillation-index target for bcSVD (Wu 2003 used 0.095 for MR; 0.05 on the 1 s reference grid gives
    #: a well-conditioned residue for Tmax at CT noise levels; see ctperf.deconvolution).
    oscillation_index: float = 0.05
    #: Fixed truncation threshold (fraction of the largest singular value) for "svd".
    svd_threshold: float = 0.2
    #: Tikhonov regularisation as a fraction of the largest singular value.
    tikhonov_lambda: float = 0.1
    #: Ladder of bcSVD truncation thresholds (fraction of the largest singular value) tried per voxel; the
    #: smallest one whose residue has OI <= oscillation_index is used.
    oi_thresholds: tuple[float, ...] = (0.02, 0.04, 0.07, 0.1, 0.15, 0.2, 0.3)
    #: bcSVD ("bcsvd", the default): truncation levels below this multiple of the AIF's spectral noise floor
    #: (``qa_values.aif_noise_floor``) are left out of that ladder (the highest level is always kept), so no
    #: frequency is inverted where the AIF's noise is more than half its signal: there the inverse of a noisy AIF
    #: spectrum attenuates the residue on average by ``exp(-(S/N)^2)`` (2 % at S/N = 2), which the correction's
    #: emulation, built with the same noisy AIF, cannot see (Tmax late, CBF low).  A clinical AIF (floor 0.005-0.009
    #: at 8-15 HU) keeps every level.  0 = off; the "standard" method never uses it.
    aif_noise_margin: float = 2.0
    #: The oscillation index is computed on a residue sampled at this step (s) so its target is grid independent.
    oi_reference_dt_s: float = 1.0
    #: Guided peak search (bcSVD/Tikhonov ladders, see ctperf.deconvolution): the residue peak is searched between
    #: the peak of the most regularised residue, moved earlier by the known difference of regularisation lags,
    #: and that peak, widened by this margin (s) on both sides; None = whole window (unguided).
    peak_window_s: float | None = 0.0
    #: With the guided search, Tmax (the residue peak's time) is searched within +- this (s) of the most
    #: regularised residue's peak (robust location; the peak *height* uses the lag-aware window above).
    tmax_window_s: float = 3.0
    #: Remove the CBF/Tmax bias of the chosen regularisation, computed by noise-free emulation with the study AIF
    #: for a family of model residues (ctperf.engine.deconvolution; the two families below).
    correct_regularisation_bias: bool = True
    #: Candidate model residues of that correction (ctperf.engine.deconvolution): survival functions of
    #: gamma-distributed transit times with these shape parameters (1 = exponential, one well-mixed compartment;
    #: 2-5 = gamma; 50 ~ plug flow, a box) ...
    residue_shapes: tuple[float, ...] = (1.0, 2.0, 3.0, 5.0, 50.0)
    #: ... each convolved with an exponential vascular-dispersion kernel of these time constants (s).  Each region
    #: uses the model whose emulated residue fits its own best; the correction restores the peak (CBF) and the
    #: peak time (Tmax) of the unregularised residue, whatever its shape.
    model_dispersions_s: tuple[float, ...] = (0.0, 1.0, 2.0, 3.0)
    #: The model is chosen on the mean curve of in-plane blocks of this size (mm): the shape of the residue is
    #: a regional property whose signature noise hides in a single voxel.
    model_choice_block_mm: float = 4.0
    #: "regional": each voxel uses the model weights of its own neighbourhood (follows regional differences of
    #: residue shape); "study": one set of weights from the joint evidence of all tissue blocks (every voxel's
    #: correction rests on the same model, so ratios such as rCBF compare like with like).
    model_weights_scope: Literal["study", "regional"] = "regional"
    #: How a block's fit to each model is measured: "residues" (default: the block-mean residue at its own
    #: regularisation level against each model's emulated residue; regional weights smoothed over
    #: ``model_choice_block_mm``) or "curves" (each model's tissue curve fitted to the block-mean curve, flow,
    #: delay and MTT free; large vessels excluded; regional log-likelihoods summed over
    #: ``model_evidence_radius_mm``).  Measured trade-offs in docs/engine-notes.md ("Model evidence").
    model_evidence: Literal["residues", "curves"] = "residues"
    #: With "curves": width (mm, in-plane Gaussian sigma) of the neighbourhood whose blocks' log-likelihoods are
    #: summed for the regional weights; 0 = each block alone.
    model_evidence_radius_mm: float = 10.0
    #: Prior of the models' dispersions: "study" (default since engine 2.8: a study-wide prior, the mixture of
    #: models that best explains the tissue curves of the in-plane blocks of ``dispersion_prior_block_mm``
    #: together, its dispersion proportions multiplied into each region's weights) or "uniform" (each region's
    #: evidence alone; noise spreads it over every dispersion, so undispersed tissue reads ~1.2 s late at 8 HU).
    dispersion_prior: Literal["uniform", "study"] = "study"
    #: Side (mm) of those in-plane blocks (tissue blocks at least half covered; 4 mm blocks favour sharp models
    #: under noise, 16 mm blocks mix tissues: docs/engine-notes.md "Model evidence").
    dispersion_prior_block_mm: float = 8.0
    #: Only blocks whose curve peaks at least this many times above the RMS residual of their best model fit inform
    #: the prior (all blocks when fewer than 8 qualify; 0 = all blocks): the evidence of weakly enhancing blocks
    #: is biased by the noise, towards more dispersion at 8 HU and towards none at 15 HU (docs/engine-notes.md
    #: "Model evidence").
    dispersion_prior_min_cnr: float = 10.0
    #: Where the study prior fits the blocks: "grid" (the curves on the uniform time grid, as the deconvolution sees
    #: them), "frames" (the baseline-subtracted frames at their acquired times, white noise and an exact likelihood,
    #: :mod:`ctperf.engine.deconvolution.frame_prior`) or "auto" (default since engine 2.12: "grid" where the tissue
    #: was followed at least ``ctperf.core.constants.DISPERSION_MIN_OBSERVED_WIDTHS`` arterial bolus widths past its
    #: peak, "frames" where it was not).  On the grid the resampling between frames and the temporal smoothing
    #: correlate the noise, and a short acquisition, a late or a broad bolus reads decisively undispersed (Tmax > 6 s
    #: -29 / -14 / -16 %); at the frames a 4 s tissue delay moves the prior (CBF +13 %) and the block phantom's
    #: dispersed slices read ~0.4 s earlier (docs/engine-notes.md, "Measured 2026-12-05" and "session 47").  With
    #: fewer than 8 informative frame blocks (``dispersion_prior_min_cnr``) the grid's blocks are fitted instead;
    #: with ``dispersion_prior_min_cnr`` = 0 every frame block is used and there is no such fallback.
    dispersion_prior_fit: Literal["grid", "frames", "auto"] = "auto"
    #: Which dispersions the study mixture may use: "all" (the maximum-likelihood mixture over every model, which
    #: reads the blocks' scatter as heterogeneity) or "bic" (an option: averaged over the subsets of dispersions by
    #: their Bayesian information criterion, a dispersion enters only as far as the blocks pay for it;
    #: :func:`ctperf.engine.deconvolution.prior.subset_averaged_mixture`).
    dispersion_prior_components: Literal["all", "bic"] = "all"
    #: Option (off): the study prior's grid fits discount each model's expected misfit from the AIF's own noise.
    #: Every model curve is the measured AIF convolved with the model's residue, so it carries the AIF's noise, which
    #: the tissue never saw, a sharp residue more than a dispersed one; uncorrected, a noisy AIF unsettles the prior
    #: (the Chakwizira DRO's one-voxel AIF, 5 % noise: its undispersed tissue reads 1 s of dispersion, Tmax +1.45 s,
    #: CBF -16 %; with the option +0.08 s, +10 %).  But how much of that noise a model's fit absorbs depends on the
    #: truth as well as the model, so the correction reads dispersed tissue as undispersed (synthetic blocks, 5 % AIF
    #: noise, 1 s / 2 s of dispersion: share on the truth 0.75 / 0.62 -> 0.40 / 0.30).  docs/engine-notes.md
    #: "session 48".
    aif_noise_in_prior: bool = False
    #: Leave the plug-flow models (gamma shape >= 10: a flat top) out of the Tmax shift of the correction (they
    #: keep their share of the height correction).  A flat top's argmax is ill-posed: a dispersed plateau peaks
    #: at its end, so any weight noise gives such a model would move Tmax towards the plateau's end.
    tmax_shift_without_plug_flow: bool = True
    #: What that study prior multiplies into the weights of the height (CBF) correction and of the guided height
    #: search: "mixture" (each model's proportion in the study's mixture, its shape and dispersion; default since
    #: engine 2.9) or "dispersion" (its dispersion's share only, the shapes left to each region's evidence).
    height_prior: Literal["mixture", "dispersion"] = "mixture"
    #: The same for the Tmax shift.  Default "dispersion": an undispersed study's mixture is one sharp model, whose
    #: per-voxel Tmax reading under noise is late (docs/engine-notes.md "Model evidence").
    tmax_prior: Literal["mixture", "dispersion"] = "dispersion"
    #: The MTT that selects each voxel's Tmax shift, read from the guide residue's peak-to-area ratio: "filtered"
    #: (default since engine 2.10: its 3 mm in-plane median, ``bias_tau_median_radius_mm``, as for the height
    #: correction) or "voxel" (the voxel's own ratio, engines 2.0-2.9: noise in the ratio moved undispersed tissue
    #: 0.06-0.14 s later at 8 HU on four of five seeds of the project phantom, docs/engine-notes.md "Model evidence").
    tmax_shift_mtt: Literal["filtered", "voxel"] = "filtered"
    #: Noise-aware Tmax shift (off by default; measured in docs/engine-notes.md "Model evidence"): the shift is emulated
    #: with the study's own noise as the denoising leaves it (ctperf.engine.noise_emulation) at each voxel's noise-to-
    #: peak ratio, instead of on noise-free curves. Meant with ``tmax_prior = "mixture"``: the "dispersion" prior
    #: already compensates the late reading under noise, so both together read undispersed tissue early.
    tmax_noise_aware: bool = False
    #: Noise curves (tissue voxels of one noise realisation) that emulation draws.
    tmax_noise_vectors: int = 128
    #: Radius (mm) of the in-plane median filter applied to the per-voxel MTT that selects the regularisation-bias
    #: correction (noise-robust lookup; see ctperf.deconvolution); 0 = per-voxel MTT.
    bias_tau_median_radius_mm: float = 3.0
    #: Radius (mm) of the in-plane median filter applied to Tmax within the tissue mask (removes isolated
    #: noise-driven residue peaks, keeps lesion edges); 0 = off.
    tmax_median_radius_mm: float = 3.0
    #: Radius (mm) of the same filter applied to the written rCBF map, which the core mask thresholds (per-voxel
    #: CBF noise otherwise scatters penumbra voxels below rCBF 30%); 0 = off.  (CBF itself: ``map_regularisation``.)
    rcbf_median_radius_mm: float = 3.0
    #: Edge-preserving regularisation of the CBF and CBV maps (rolling-guidance joint bilateral filter guided by
    #: the maps and the baseline HU image, ctperf.engine.regularise; MTT recomputed as 60 CBV / CBF; rCBF and the
    #: core from the filtered CBF).  On by default since engine 2.6, with CBF in the log domain (below): on the
    #: validation harness it raises the voxelwise correlation of CBF with the truth from 0.61 to 0.78 at 8 HU and
    #: brings the grey/white CBF ratio and the core closer to the truth (docs/engine-notes.md "Map regularisation").
    map_regularisation: bool = True
    #: Domain in which that filter averages CBF: "log" (``log(CBF + 1 mL/100g/min)``: a weighted geometric mean,
    #: whose range kernel compares relative differences, so grey and white matter and delayed tissue, whose noise
    #: differs in size and skew, are averaged alike) or "linear" (weighted arithmetic mean; on the harness's block
    #: phantom its CBF changes by 7-10 % for a 6 s delay).  Also sets the CBF guide of the CBV/MTT filter when
    #: ``map_regularisation`` is off.
    map_regularisation_domain: Literal["log", "linear"] = "log"
    #: The same filter applied to the CBV map alone (weights from CBF, CBV and the baseline HU image; CBF, rCBF and
    #: the core as measured; MTT recomputed as 60 CBV / CBF).  Used only when ``map_regularisation = false`` (the
    #: 2.2-2.5 default); ignored while ``map_regularisation`` filters both (the default since 2.6).  On the
    #: validation harness's realistic phantom at 8 HU it raised the voxelwise correlation of CBV with the truth from
    #: 0.50 to 0.71 and changed no CBF-derived number (engine 2.2; docs/engine-notes.md "Map regularisation").
    cbv_regularisation: bool = True
    #: With ``map_regularisation`` off (CBV filtered, CBF as measured): MTT = 60 CBV / CBF from CBF and CBV averaged
    #: with the *same* weights of that filter (the ratio of their local edge-preserving means; with
    #: ``map_regularisation`` on those are the written maps) rather than the ratio of the written maps: a ratio of two
    #: noisy estimates is far noisier than either, and its per-voxel mean is biased.  On the harness's realistic phantom
    #: at 8 HU it raises MTT's voxelwise r with the truth from 0.25 to 0.48 and changes no other map (engine 2.5, linear
    #: CBF weights; docs/engine-notes.md "Map regularisation").  The CBF of that pair is averaged in
    #: ``map_regularisation_domain`` (log by default).  Only with ``cbv_regularisation`` (CBF filtered too: the same
    #: thing).
    mtt_regularisation: bool = True
    #: Spatial sigma (mm) of that filter's final pass (the first pass uses 0.75 x this).
    map_regularisation_sigma_mm: float = 4.0
    #: Range parameter of that filter (larger = more smoothing across differences of the guide; see
    #: ctperf.engine.denoise.tips_bilateral).
    map_regularisation_h: float = 2.0
    #: Edge-preserving regularisation of the Tmax maps (the default's and the standard convention's), after the median
    #: above: the same rolling-guidance joint bilateral filter, guided by Tmax itself and the baseline HU image, so that
    #: only neighbours with a similar Tmax are averaged and lesion edges stay where they are.  Per-voxel Tmax noise at
    #: standard dose is ~1 s; on the validation harness's phantom families (docs/engine-notes.md "Tmax
    #: regularisation") it lowers the Tmax mean absolute error and keeps steps of 2 s.
    tmax_regularisation: bool = True
    #: Spatial sigma (mm) of that filter's final pass (the first pass uses 0.75 x this) and its range parameter, in
    #: chi-square SDs of Tmax's noise across the kernel's radius (docs/definitions.md §6 step 10).
    tmax_regularisation_sigma_mm: float = 6.0
    tmax_regularisation_h: float = 1.0


@dataclass
class AifConfig(_Checked):
    section: ClassVar[str] = "aif"
    #: Number of voxels averaged for the AIF and the VOF.
    n_aif_voxels: int = 5
    n_vof_voxels: int = 5
    #: Scale the AIF so that its area equals the VOF's (partial-volume correction).
    pv_correct_with_vof: bool = True


@dataclass
class Thresholds(_Checked):
    section: ClassVar[str] = "thresholds"
    #: Hypoperfusion threshold on Tmax (s): Tmax > this.
    tmax_hypoperfusion_s: float = 6.0
    #: Further Tmax levels whose volumes are reported (s).
    tmax_levels_s: tuple[float, ...] = (4.0, 6.0, 8.0, 10.0)
    #: HIR numerator threshold (s): volume Tmax >= this / volume Tmax >= tmax_hypoperfusion_s.
    hir_tmax_s: float = 10.0
    #: Core threshold on rCBF (fraction of contralateral normal tissue): rCBF < this.
    rcbf_core: float = 0.30
    #: True: core only inside the Tmax hypoperfusion region (original tool). False: RAPID-style core.
    core_requires_tmax: bool = True
    #: With ``core_requires_tmax``: a core voxel may also lie this many pixels (in-plane, sharing sides) outside the
    #: Tmax > ``tmax_hypoperfusion_s`` region.  Near-zero flow leaves a voxel's residue without a defined peak, so
    #: its Tmax scatters (on the undispersed project phantom 8 % of the true core read 4.6-5.8 s against 7.5-8.2 s,
    #: one to four pixels from the region); 0 is the strict gate of definitions <= 2.20 (docs/definitions.md §4).
    core_tmax_margin_px: int = 1
    #: Connected clusters smaller than this are removed from the masks (mL).
    min_cluster_ml: float = 0.5
    #: PVT qualitative sign: Tmax >= this in the superior sagittal sinus / torcula (s).
    pvt_tmax_s: float = 10.0
    #: Smallest rCBF reference region (normal-Tmax tissue, mL); below it rCBF, core, mismatch and eligibility are
    #: undefined (null with a reason) instead of computed from a handful of voxels.
    min_reference_ml: float = 5.0
    #: Lowest contrast-to-noise ratio (``qa_values.contrast_to_noise``: arterial peak / voxel noise x sqrt(1 s /
    #: frame interval)) at which the core is measured; below it core, penumbra, mismatch and eligibility are null
    #: with a reason and ``qa_flags.core_noise_limited`` is raised (the core read 13-48 % small there on the project
    #: phantom, docs/definitions.md §3).  0 measures the core at any noise.
    core_min_contrast_to_noise: float = 29.5
    #: Shortest time (s) the acquisition must go on after the hypoperfused tissue's median time to peak
    #: (``qa_values.lesion_observed_after_peak_s``) for the core to be measured; below it the lesion's curves are cut
    #: before they return, core, penumbra, mismatch and eligibility are null with a reason and
    #: ``qa_flags.core_truncated`` is raised (docs/definitions.md §3).  0 measures the core however short.
    core_min_observed_after_peak_s: float = 16.0
    #: The same for the Tmax levels above the hypoperfusion threshold (``tmax8_ml``, ``tmax10_ml``) and the HIR:
    #: the longest-delayed tissue peaks last; below it they are null with a reason and ``qa_flags.hir_truncated``
    #: is raised (docs/definitions.md §3).  0: no such limit.
    hir_min_observed_after_peak_s: float = 11.0
    #: Lowest contrast-to-noise ratio at which any lesion index is reported: below it (no usable bolus: a weak or
    #: absent contrast injection, extreme noise) every index is null with a reason and ``qa_flags.lesion_unmeasured``
    #: is raised (docs/definitions.md §3).  0 reports them at any contrast.
    lesion_min_contrast_to_noise: float = 14.5
    #: The same for ``qa_values.lesion_observed_after_peak_s``: an acquisition that ends this soon after the
    #: hypoperfused tissue peaks cannot tell delayed tissue from truncated curves.  0: no such limit.
    lesion_min_observed_after_peak_s: float = 8.0
    #: How far (s) below ``tmax_hypoperfusion_s`` the normal tissue's median Tmax (``qa_values.normal_tissue_tmax_s``,
    #: outside the hypoperfusion) must lie for the Tmax volumes to be measured: nearer (a global bolus delay) normal
    #: tissue crosses the threshold by noise, so hypoperfusion, penumbra, mismatch, Tmax levels, HIR, lesion CBV
    #: indices and trial labels are null with a reason and ``qa_flags.global_tmax_delay`` is raised
    #: (docs/definitions.md §3).  0: no such limit.
    hypoperfusion_min_margin_s: float = 1.0
    #: Shortest time (s) the acquisition must go on after the hypoperfused tissue's median time to peak for the CBV
    #: indices: the lesion's CBV is the area under its curve, which must have returned; below it every CBV index is
    #: null with a reason and ``qa_flags.cbv_truncated`` is raised (docs/definitions.md §3).  0: no such limit.
    cbv_index_min_observed_after_peak_s: float = 22.0


@dataclass
class IngestConfig(_Checked):
    section: ClassVar[str] = "ingest"
    #: Sampling interval (s, 0.3-10) for studies whose time tags were removed (e.g. by anonymisation): frames
    #: are then ordered by TemporalPositionIdentifier, AcquisitionNumber or InstanceNumber.  None = read the
    #: times from the files (a study without them is refused).  CLI: ``--frame-interval``.
    frame_interval_s: float | None = None
    #: Studies whose native float32 4D array would exceed this (GB) are block-averaged in-plane to
    #: ``preprocess.compute_pixel_mm`` while they are read (whole-brain scanners on a laptop); 0 = always.
    bin_on_load_above_gb: float = 2.0


@dataclass
class OutputConfig(_Checked):
    section: ClassVar[str] = "output"
    write_qa_png: bool = True
    write_pdf: bool = True


@dataclass
class ComputeConfig(_Checked):
    section: ClassVar[str] = "compute"
    #: Threads one run may use (FFT workers and the thread pools of decoding, denoising, deconvolution and the
    #: median filters); None = every CPU core.  ``ctperf batch`` sets it to cores // worker processes so parallel
    #: studies do not oversubscribe the machine.  Does not change any result.
    workers: int | None = None


def thread_count(workers: int | None, tasks: int | None = None) -> int:
    """Threads to use for ``workers`` (None = all CPU cores), at most ``tasks`` when given, at least 1."""
    n = workers if workers is not None else (os.cpu_count() or 1)
    return max(1, min(n, tasks) if tasks is not None else n)


def side_thread(workers: int | None):
    """Context manager giving a one-thread executor for work that can run beside the caller's (independent inputs,
    mostly numpy work that releases the GIL) when ``workers`` allows more than one thread, else None: the caller
    then does that work itself, after its own."""
    return ThreadPoolExecutor(max_workers=1) if thread_count(workers) > 1 else nullcontext()


def _did_you_mean(name: str, known) -> str:
    """``" (did you mean 'x'?)"`` for the closest known name (a typo in a config file), else ``""``."""
    import difflib

    close = difflib.get_close_matches(str(name), sorted(known), n=1, cutoff=0.75)
    return f" (did you mean '{close[0]}'?)" if close else ""


@dataclass
class Config:
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    aif: AifConfig = field(default_factory=AifConfig)
    deconvolution: DeconvolutionConfig = field(default_factory=DeconvolutionConfig)
    thresholds: Thresholds = field(default_factory=Thresholds)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    compute: ComputeConfig = field(default_factory=ComputeConfig)

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> "Config":
        """Re-check every section (catches values set by attribute after construction); returns ``self``."""
        for f in dataclasses.fields(self):
            sub = getattr(self, f.name)
            if not isinstance(sub, _Checked):
                raise ConfigError(f"config: section '{f.name}' must be a {f.type} object")
            sub.check()
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Config":
        """Build a config from nested ``{section: {setting: value}}``; every value is type- and range-checked.

        Raises
        ------
        ConfigError
            Unknown section or setting, a value of the wrong kind or outside its range (:data:`RANGES`).
        """
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise ConfigError("config: the file must hold sections of settings (e.g. [thresholds])")
        sections = {f.name: f for f in dataclasses.fields(cls)}
        built = {}
        for section, values in data.items():
            if section not in sections:
                raise ConfigError(f"config: unknown section '{section}'{_did_you_mean(section, sections)}")
            if not isinstance(values, dict):
                raise ConfigError(f"config: section '{section}' must be a table of settings")
            sub_cls = sections[section].default_factory
            names = {f.name for f in dataclasses.fields(sub_cls)}
            for key in values:
                if key not in names:
                    raise ConfigError(f"config: unknown setting '{section}.{key}'{_did_you_mean(key, names)}")
            built[section] = sub_cls(**values)
        return cls(**built)

    @classmethod
    def load(cls, path: str | Path | None) -> "Config":
        """Read a TOML (.toml), YAML (.yaml/.yml) or JSON file; None gives the defaults."""
        if path is None:
            return cls()
        return cls.from_dict(read_config_file(path))


def read_config_file(path: str | Path) -> Any:
    """Parse a config file into plain data (no checks on the settings themselves).

    Raises
    ------
    InputError
        Missing or unreadable file, not UTF-8 text, a syntax error, or YAML without PyYAML installed.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"config file not found: {p}")
    try:
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"config file {p.name} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at "
                         f"offset {exc.start}); save it as UTF-8") from None
    except OSError as exc:
        raise InputError(f"cannot read config file {p}: {exc.strerror or exc}") from None
    suffix = p.suffix.lower()
    if suffix in (".yaml", ".yml"):
        try:
            import yaml  # optional dependency
        except ImportError:
            raise InputError(f"config file {p.name} is YAML, which needs PyYAML: pip install 'ctperf[yaml]' "
                             "(or use a .toml / .json file)") from None
        parse, errors = yaml.safe_load, (yaml.YAMLError,)
    elif suffix == ".toml":
        import tomllib

        parse, errors = tomllib.loads, (tomllib.TOMLDecodeError,)
    else:
        parse, errors = json.loads, (ValueError,)
    try:
        return parse(text)
    except errors as exc:
        msg = " ".join(str(exc).split())
        raise InputError(f"config file {p.name} could not be parsed: {msg}") from None


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """Check ``value`` against a dataclass field's type hint; return it converted (int -> float, list -> tuple)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"config: '{name}' must be one of {', '.join(map(repr, args))} (got {value!r})")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(name, value, arg)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"config: '{name}' has an invalid value {value!r}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config: '{name}' must be a list of numbers (got {value!r})")
        return tuple(_coerce(name, v, args[0]) for v in value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config: '{name}' must be true or false (got {value!r})")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config: '{name}' must be a whole number (got {value!r})")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config: '{name}' must be a number (got {value!r})")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"config: '{name}' must be text (got {value!r})")
        return value
    return value
