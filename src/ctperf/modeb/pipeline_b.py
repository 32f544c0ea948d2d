"""Mode B: the same indices as Mode A from existing maps + a yellow ROI on a MIP screenshot + AIF/VOF curves.

load maps -> tissue mask -> ROI footprint (registered screenshot) -> midline -> masks -> indices -> write.
:func:`analyse_maps` is pure (arrays in, masks and metrics out); :func:`run_maps` adds the file edges and writes
``metrics.json``, ``metrics.csv``, ``log.txt`` and ``masks/{core,hypoperfusion,penumbra}_mask.nii.gz`` atomically.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from ctperf import DISCLAIMER, __version__
from ctperf.config import Config
from ctperf.errors import InputError
from ctperf.hemispheres import find_midline
from ctperf.indices import IndexInputs, compute_indices
from ctperf.masks import cortical_ribbon, lesion_masks
from ctperf.metrics_io import build_metrics, write_metrics
from ctperf.modeb.curves_csv import read_curve_csv, time_to_peak_s
from ctperf.modeb.map_inputs import check_same_grid, load_map
from ctperf.modeb.roi_mip import roi_from_screenshot
from ctperf.nifti_io import load_volume, resample_to_grid, save_volume
from ctperf.pipeline import atomic_output_dir, check_output_dir
from ctperf.results import Hemispheres, LesionMasks
from ctperf.study import spacing_xyz_mm, voxel_volume_ml

log = logging.getLogger("ctperf")

#: Voxels whose CBV exceeds this multiple of the median brain CBV are treated as large vessels.
VESSEL_CBV_FACTOR = 4.0
#: An rCBF map whose median over the brain exceeds this is read as percent and divided by 100.
RCBF_PERCENT_MEDIAN = 5.0


@dataclass
class ModeBResult:
    lesion: LesionMasks
    metrics: dict[str, Any]
    tissue: np.ndarray
    hemispheres: Hemispheres | None
    roi_footprint: np.ndarray | None


def tissue_from_maps(tmax: np.ndarray, cbv: np.ndarray, rcbf: np.ndarray) -> np.ndarray:
    """Brain parenchyma on vendor maps: all three maps defined, CBV > 0, large vessels (very high CBV) removed."""
    defined = np.isfinite(tmax) & np.isfinite(cbv) & np.isfinite(rcbf)
    defined &= ~((tmax == 0) & (cbv == 0) & (rcbf == 0))  # zero-filled background of vendor exports
    brain = defined & (cbv > 0)
    if not brain.any():
        raise InputError("the maps contain no brain voxels (all undefined or zero)")
    median = float(np.median(cbv[brain]))
    return brain & (cbv < VESSEL_CBV_FACTOR * median)


def rcbf_as_fraction(rcbf: np.ndarray, tissue: np.ndarray) -> tuple[np.ndarray, str]:
    med = float(np.nanmedian(rcbf[tissue])) if tissue.any() else 1.0
    if med > RCBF_PERCENT_MEDIAN:
        return rcbf / 100.0, "percent"
    return rcbf, "fraction"


def analyse_maps(tmax_s: np.ndarray, cbv: np.ndarray, rcbf: np.ndarray, affine_ras: np.ndarray, cfg: Config,
                 roi_footprint: np.ndarray | None = None, aif_ttp_s: float | None = None,
                 vof_ttp_s: float | None = None, tissue: np.ndarray | None = None,
                 hemispheres: Hemispheres | None = None, provenance: dict | None = None,
                 qa_flags: dict[str, bool] | None = None, qa_values: dict[str, Any] | None = None) -> ModeBResult:
    """Indices from maps on one grid (pure).  ``rcbf`` is a fraction (1.0 = normal)."""
    if tissue is None:
        tissue = tissue_from_maps(tmax_s, cbv, rcbf)
    brain = tissue | (np.isfinite(tmax_s) & np.isfinite(cbv) & (np.nan_to_num(cbv) > 0))
    vox_ml = voxel_volume_ml(affine_ras)
    if hemispheres is None:
        try:
            hemispheres = find_midline(np.nan_to_num(cbv), brain, affine_ras)
        except ValueError:
            hemispheres = None
    lesion = lesion_masks(tmax_s, rcbf, tissue, vox_ml, cfg.thresholds, footprint=roi_footprint)
    indices = compute_indices(IndexInputs(
        cbv=cbv, tmax_s=tmax_s, lesion=lesion, tissue=tissue, voxel_volume_ml=vox_ml, thresholds=cfg.thresholds,
        hemispheres=hemispheres, cortex=cortical_ribbon(tissue, spacing_xyz_mm(affine_ras)) & tissue, aif_ttp_s=aif_ttp_s,
        vof_ttp_s=vof_ttp_s, sinus=None, roi_mask=roi_footprint))
    metrics = build_metrics(indices, mode="B", thresholds=cfg.thresholds, qa_flags=qa_flags, qa_values=qa_values,
                            provenance=provenance or {})
    return ModeBResult(lesion=lesion, metrics=metrics, tissue=tissue, hemispheres=hemispheres,
                       roi_footprint=roi_footprint)


#: QA limits for Mode B inputs.
MIN_ROI_REGISTRATION_SCORE = 0.7
MAX_COLOUR_REJECTED_FRACTION = 0.05
MIN_CURVE_PEAK_RATIO = 2.0


def _curve_is_flat(t: np.ndarray, y: np.ndarray) -> bool:
    """No bolus: the peak does not rise clearly above the first samples, or it sits at either end."""
    i = int(np.argmax(y))
    base = float(np.median(y[: max(2, len(y) // 10)]))
    rise = float(y[i]) - base
    spread = float(np.median(np.abs(y - np.median(y)))) or 1e-9
    return i in (0, len(y) - 1) or rise <= MIN_CURVE_PEAK_RATIO * spread


def mode_b_qa(registration: dict, infos: dict, aif, vof, aif_ttp: float, vof_ttp: float):
    """QA flags and the values behind them for Mode B inputs."""
    score = float(registration.get("score", float("nan")))
    rejected = {name: float(info.get("residual", {}).get("rejected_fraction", 0.0))
                for name, info in infos.items() if info.get("kind") == "dicom_colour"}
    flags = {
        "roi_registration_poor": bool(not np.isfinite(score) or score < MIN_ROI_REGISTRATION_SCORE),
        "colour_decoding_poor": bool(any(v > MAX_COLOUR_REJECTED_FRACTION for v in rejected.values())),
        "aif_curve_flat": _curve_is_flat(*aif),
        "vof_curve_flat": _curve_is_flat(*vof),
        "vof_peaks_before_aif": bool(vof_ttp <= aif_ttp),
    }
    values = {"roi_registration_score": score, "roi_registration_scale": registration.get("scale"),
              **{f"colour_rejected_fraction_{k}": v for k, v in rejected.items()}}
    return flags, values


def run_maps(mip, tmax, cbv, rcbf, aif_csv, vof_csv, out_dir, cfg: Config | None = None,
             ranges: dict[str, tuple[float, float] | None] | None = None, tissue_mask=None) -> dict[str, Any]:
    """Mode B from files to an output folder; returns the metrics document."""
    cfg = cfg or Config()
    ranges = ranges or {}
    check_output_dir(out_dir)
    maps, infos = {}, {}
    for name, path in (("tmax", tmax), ("cbv", cbv), ("rcbf", rcbf)):
        vol, aff, info = load_map(path, value_range=ranges.get(name))
        maps[name] = (vol, aff)
        infos[name] = {k: v for k, v in info.items() if k in ("kind", "residual", "warnings", "colour_bar",
                                                                "rejected_fraction", "residual_mean",
                                                                "residual_p95")}
    check_same_grid(maps)
    tmax_v, affine = maps["tmax"]
    cbv_v, rcbf_v = maps["cbv"][0], maps["rcbf"][0]
    tissue = None
    if tissue_mask is not None:
        tvol, taff = load_volume(tissue_mask)
        tissue = resample_to_grid(tvol, taff, tmax_v.shape, affine) > 0.5
    t_ref = tissue if tissue is not None else tissue_from_maps(tmax_v, cbv_v, rcbf_v)
    rcbf_v, rcbf_unit = rcbf_as_fraction(rcbf_v, t_ref)

    roi = roi_from_screenshot(mip, tmax_v, affine)
    t_aif, y_aif = read_curve_csv(aif_csv)
    t_vof, y_vof = read_curve_csv(vof_csv)
    aif_ttp, vof_ttp = time_to_peak_s(t_aif, y_aif), time_to_peak_s(t_vof, y_vof)
    qa_flags, qa_values = mode_b_qa(roi.registration, infos, (t_aif, y_aif), (t_vof, y_vof), aif_ttp, vof_ttp)
    provenance = {"software_version": __version__, "inputs": infos, "rcbf_input_unit": rcbf_unit,
                  "roi_registration": {k: v for k, v in roi.registration.items()
                                       if k in ("scale", "dx", "dy", "score", "roi_map_px", "flips")},
                  "roi_to_3d": "the 2D ROI drawn on the axial MIP is extruded through all slices (footprint)",
                  "config": cfg.to_dict()}
    res = analyse_maps(tmax_v, cbv_v, rcbf_v, affine, cfg, roi_footprint=roi.footprint_zyx,
                       aif_ttp_s=aif_ttp, vof_ttp_s=vof_ttp, tissue=tissue, provenance=provenance,
                       qa_flags=qa_flags, qa_values=qa_values)

    with atomic_output_dir(out_dir) as tmp:
        (tmp / "masks").mkdir()
        for name in ("core", "hypoperfusion", "penumbra"):
            save_volume(tmp / "masks" / f"{name}_mask.nii.gz", getattr(res.lesion, name), affine, dtype=np.uint8)
        save_volume(tmp / "masks" / "roi_footprint_mask.nii.gz", roi.footprint_zyx, affine, dtype=np.uint8)
        if cfg.output.write_qa_png:
            from ctperf.modeb.roi_mip import load_screenshot
            from ctperf.qa_plots import fig_roi_registration

            fig_roi_registration(load_screenshot(mip), tmax_v, affine, roi.mask2d_yx, res.lesion, res.metrics,
                                 tmp / "qa" / "roi_registration.png")
        write_metrics(res.metrics, tmp)
        lines = [f"ctperf {__version__} (Mode B) - {DISCLAIMER}",
                 f"definition_version: {res.metrics['definition_version']}",
                 "inputs: " + json.dumps({k: v.get("kind") for k, v in infos.items()}),
                 "qa_flags: " + json.dumps(res.metrics["qa_flags"]),
                 "provenance: " + json.dumps(res.metrics["provenance"], default=str)]
        (tmp / "log.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return res.metrics
