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
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ctperf.errors import InputError


@dataclass
class PreprocessConfig:
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
    #: TIPS bilateral range parameter (larger = more smoothing across curve differences; see ctperf.denoise).
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
class DeconvolutionConfig:
    #: "bcsvd" (block-circulant SVD with oscillation-index threshold, Wu 2003), "tikhonov" or "svd" (standard
    #: truncated SVD, for comparison only).
    method: Literal["bcsvd", "tikhonov", "svd"] = "bcsvd"
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
    #: for reference residues exp(-t/MTT) (ctperf.deconvolution; the two reference dispersions below).
    correct_regularisation_bias: bool = True
    #: Reference residue of that correction: exp(-t/MTT) dispersed by an exponential kernel with this time
    #: constant (s), for the CBF (peak height) and the Tmax (peak time).  CBF is the flow of that model residue.
    #: 0 = the textbook undispersed residue.  0.5 s (mild dispersion) is a compromise: on the project phantom at
    #: 8 HU, against 0-1 s of true tissue dispersion, it keeps grey/white-matter CBF within -9..+8 % of the nominal
    #: flow (grey matter -22 % at 2 s) and the mean Tmax error within -0.1..+1.6 s; see docs/definitions.md.
    cbf_model_dispersion_s: float = 0.5
    tmax_model_dispersion_s: float = 0.5
    #: Candidate shapes of that reference residue: gamma-distributed transit times with these shape parameters
    #: (1 = exponential, one well-mixed compartment; large = plug flow, a box).  One value (default: the
    #: exponential) fixes the shape; several, e.g. [1, 2, 4, 30], let each voxel use the shape whose emulated
    #: residue fits its own best (pooled over 3 mm).  The choice matters: on plug-flow (box) phantoms the
    #: exponential correction reads CBF ~2.5x too high, the adaptive choice ~1.2x; on the project phantom
    #: (dispersed exponential) the adaptive choice reads grey-matter CBF 24 % below the nominal flow (default -9 %).
    residue_shapes: tuple[float, ...] = (1.0,)
    #: Radius (mm) of the in-plane median filter applied to the per-voxel MTT that selects the regularisation-bias
    #: correction (noise-robust lookup; see ctperf.deconvolution); 0 = per-voxel MTT.
    bias_tau_median_radius_mm: float = 3.0
    #: Radius (mm) of the in-plane median filter applied to Tmax within the tissue mask (removes isolated
    #: noise-driven residue peaks, keeps lesion edges); 0 = off.
    tmax_median_radius_mm: float = 3.0
    #: Radius (mm) of the same filter applied to the written rCBF map, which the core mask thresholds (per-voxel
    #: CBF noise otherwise scatters penumbra voxels below rCBF 30%); 0 = off.  CBF itself is not filtered.
    rcbf_median_radius_mm: float = 3.0


@dataclass
class AifConfig:
    #: Number of voxels averaged for the AIF and the VOF.
    n_aif_voxels: int = 5
    n_vof_voxels: int = 5
    #: Scale the AIF so that its area equals the VOF's (partial-volume correction).
    pv_correct_with_vof: bool = True


@dataclass
class Thresholds:
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
    #: Connected clusters smaller than this are removed from the masks (mL).
    min_cluster_ml: float = 0.5
    #: PVT qualitative sign: Tmax >= this in the superior sagittal sinus / torcula (s).
    pvt_tmax_s: float = 10.0
    #: Smallest rCBF reference region (normal-Tmax tissue, mL); below it rCBF, core, mismatch and eligibility are
    #: undefined (null with a reason) instead of computed from a handful of voxels.
    min_reference_ml: float = 5.0


@dataclass
class IngestConfig:
    #: Sampling interval (s, 0.3-10) for studies whose time tags were removed (e.g. by anonymisation): frames
    #: are then ordered by TemporalPositionIdentifier, AcquisitionNumber or InstanceNumber.  None = read the
    #: times from the files (a study without them is refused).  CLI: ``--frame-interval``.
    frame_interval_s: float | None = None
    #: Studies whose native float32 4D array would exceed this (GB) are block-averaged in-plane to
    #: ``preprocess.compute_pixel_mm`` while they are read (whole-brain scanners on a laptop); 0 = always.
    bin_on_load_above_gb: float = 2.0


@dataclass
class OutputConfig:
    write_qa_png: bool = True
    write_pdf: bool = True


@dataclass
class Config:
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    aif: AifConfig = field(default_factory=AifConfig)
    deconvolution: DeconvolutionConfig = field(default_factory=DeconvolutionConfig)
    thresholds: Thresholds = field(default_factory=Thresholds)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Config":
        """Build a config from nested ``{section: {setting: value}}``; every value is type-checked."""
        cfg = cls()
        if data is None:
            return cfg
        if not isinstance(data, dict):
            raise InputError("config: the file must hold sections of settings (e.g. [thresholds])")
        for section, values in data.items():
            if not hasattr(cfg, section) or not dataclasses.is_dataclass(getattr(cfg, section)):
                raise InputError(f"config: unknown section '{section}'")
            if not isinstance(values, dict):
                raise InputError(f"config: section '{section}' must be a table of settings")
            sub = getattr(cfg, section)
            hints = typing.get_type_hints(type(sub))
            names = {f.name for f in dataclasses.fields(sub)}
            for key, value in values.items():
                if key not in names:
                    raise InputError(f"config: unknown setting '{section}.{key}'")
                setattr(sub, key, _coerce(f"{section}.{key}", value, hints[key]))
        return cfg

    @classmethod
    def load(cls, path: str | Path | None) -> "Config":
        if path is None:
            return cls()
        p = Path(path)
        if not p.is_file():
            raise InputError(f"config file not found: {p}")
        text = p.read_text(encoding="utf-8")
        try:
            if p.suffix.lower() == ".toml":
                import tomllib

                data = tomllib.loads(text)
            elif p.suffix.lower() in (".yaml", ".yml"):
                import yaml  # optional dependency

                data = yaml.safe_load(text)
            else:
                data = json.loads(text)
        except Exception as exc:  # noqa: BLE001 - any parse failure is a user error
            raise InputError(f"config file {p.name} could not be parsed: {exc}") from None
        return cls.from_dict(data)


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """Check ``value`` against a dataclass field's type hint; return it converted (int -> float, list -> tuple)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        if value not in args:
            raise InputError(f"config: '{name}' must be one of {', '.join(map(repr, args))} (got {value!r})")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(name, value, arg)
            except InputError as exc:
                errors.append(str(exc))
        raise InputError(errors[0] if errors else f"config: '{name}' has an invalid value {value!r}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise InputError(f"config: '{name}' must be a list of numbers (got {value!r})")
        return tuple(_coerce(name, v, args[0]) for v in value)
    if hint is bool:
        if not isinstance(value, bool):
            raise InputError(f"config: '{name}' must be true or false (got {value!r})")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(f"config: '{name}' must be a whole number (got {value!r})")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(f"config: '{name}' must be a number (got {value!r})")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise InputError(f"config: '{name}' must be text (got {value!r})")
        return value
    return value
