"""Mode A, top to bottom: load -> preprocess -> denoise -> AIF/VOF -> deconvolve -> maps -> regularise (CBF/CBV/Tmax)
-> rCBF -> masks -> indices -> write.

:func:`analyse_study` is pure (arrays in, result out) and is what a batch worker, a web request or a DICOM node
calls; :func:`run_dicom_folder` adds the I/O edges (DICOM in, files out, written atomically).
:func:`recompute_outputs` re-derives masks and indices from saved maps with new thresholds (no deconvolution).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ctperf import DISCLAIMER, __version__
from ctperf.analysis.coverage import slab_coverage
from ctperf.analysis.indices import IndexInputs, compute_indices
from ctperf.analysis.masks import cortical_ribbon, lesion_masks, measurability, sinus_region
from ctperf.analysis.metrics import build_metrics, to_strict
from ctperf.config import Config, thread_count
from ctperf.core.grid import resample_to_grid, same_grid
from ctperf.core.midline import hemispheres_from_plane
from ctperf.core.types import (STANDARD_MAP_NAMES, AcquisitionMeta, CTPStudy, Curve, LesionMasks, PerfusionResult,
                               TissueMasks, spacing_xyz_mm, voxel_volume_ml)
from ctperf.errors import InputError
from ctperf.io.metrics_files import write_metrics
from ctperf.io.nifti import load_volume, save_volume
from ctperf.io.outdir import AUX_DIR, MAP_FILES, MASK_FILES, VOLUME_DESCRIPTIONS, atomic_output_dir, check_output_dir

log = logging.getLogger("ctperf")


Progress = Callable[[str], None] | None


@dataclass
class ModeAResult:
    perfusion: PerfusionResult
    lesion: LesionMasks
    metrics: dict[str, Any]
    meta: AcquisitionMeta
    cortex: np.ndarray
    sinus: np.ndarray | None
    #: User ROIs resampled onto the map grid (None when not given).
    roi: np.ndarray | None = None
    contra: np.ndarray | None = None
    stage_seconds: dict[str, float] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------- pure core
def analyse_study(study: CTPStudy, cfg: Config, roi_mask: np.ndarray | None = None,
                  contra_mask: np.ndarray | None = None, progress: Progress = None, *,
                  aif_mask: np.ndarray | None = None, vof_mask: np.ndarray | None = None) -> ModeAResult:
    """Run the whole Mode A analysis on an in-memory study (no file I/O).

    Parameters
    ----------
    study : CTPStudy
        The loaded acquisition (:func:`ctperf.io.dicom.load_ctp`, or built from arrays: HU (t, z, y, x), per-slice
        times (t, z) in s, voxel -> RAS affine).
    cfg : Config
        Every setting of the run (``Config()`` for the defaults; ``Config.from_dict`` / ``load_config``).
    roi_mask, contra_mask : ndarray of bool (z, y, x), optional
        Lesion-cortex ROI (Conventional CBV Index) and contralateral reference ROI, on the study grid.
    progress : callable(stage_name), optional
        Called as each stage starts (from the calling thread).
    aif_mask, vof_mask : ndarray of bool (z, y, x), optional
        The arterial input / venous output voxels drawn by the user, on the study grid, instead of the automatic
        choice (:func:`ctperf.engine.compute_perfusion`).

    Returns
    -------
    ModeAResult
        ``perfusion`` (maps on the computation grid, masks, AIF/VOF, QA), ``lesion`` (hypoperfusion, core,
        penumbra masks), ``metrics`` (the metrics.json document: indices with units, definitions, QA flags,
        provenance), ``cortex``, ``sinus``, the ROIs on the map grid and ``stage_seconds``.

    Notes
    -----
    A study that can be measured only in part (truncated bolus, noisy AIF, too small an rCBF reference, bilateral
    hypoperfusion...) gets QA flags and null values with reasons in ``metrics``, never a confident wrong number.
    """
    from ctperf.engine import compute_perfusion  # preprocess/denoise -> AIF/VOF -> deconvolve -> maps/regularise/rCBF

    perf = compute_perfusion(study, cfg, contra_mask=contra_mask, progress=progress, aif_mask=aif_mask,
                             vof_mask=vof_mask)
    roi = _on_grid(roi_mask, study.affine_ras, perf)
    contra = _on_grid(contra_mask, study.affine_ras, perf)
    result = lesions_and_indices(perf, cfg, roi, contra, _provenance(study.meta, spacing_xyz_mm(perf.affine_ras)),
                                 progress)
    result.meta = study.meta
    result.stage_seconds = {**perf.stage_seconds, **result.stage_seconds}
    return result


def lesions_and_indices(perf: PerfusionResult, cfg: Config, roi: np.ndarray | None, contra: np.ndarray | None,
                        provenance: dict[str, Any], progress: Progress = None, *,
                        config_record: dict[str, Any] | None = None) -> ModeAResult:
    """Masks -> indices -> metrics document from perfusion maps (also used to re-threshold saved maps).

    ``config_record`` (default ``cfg.to_dict()``) is the configuration written to the provenance; recompute
    passes the original run's engine settings there.
    """
    from ctperf.engine import method_description

    stages: dict[str, float] = {}
    t0 = time.perf_counter()
    _step(progress, "masks")
    # what the study allows to be measured (docs/definitions.md §3): no lesion at all without a usable bolus or on
    # curves cut at the lesion's peak; no core (nor penumbra) where the noise hides it, without a usable rCBF
    # reference or on curves cut before they return; masks empty and values null with the reason (maps kept)
    lesion = lesion_masks(perf.tmax, perf.rcbf, perf.masks.tissue, voxel_volume_ml(perf.affine_ras), cfg.thresholds)
    can = measurability(perf.ttp, lesion.hypoperfusion, perf.qa_flags, perf.qa_values, cfg.thresholds,
                        tmax_s=perf.tmax, tissue=perf.masks.tissue)
    lesion = can.masks(lesion)
    # a lesion reaching an end slice goes on beyond the slab: the lesion as reported (a kept core counts under a
    # global delay); nothing to say where no lesion region is measured
    unmeasured = can.lesion or (can.global_delay and can.core and f"{can.global_delay}; {can.core}")
    covered = slab_coverage(lesion.hypoperfusion | lesion.core, perf.affine_ras, unmeasured or None)
    cortex = cortical_ribbon(perf.masks.tissue, spacing_xyz_mm(perf.affine_ras)) & perf.masks.tissue
    sinus = sinus_region(perf.masks.vessels, perf.vof.voxels_zyx)
    stages["masks"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    _step(progress, "indices")
    indices = compute_indices(IndexInputs(
        cbv=perf.cbv, tmax_s=perf.tmax, lesion=lesion, tissue=perf.masks.tissue,
        voxel_volume_ml=voxel_volume_ml(perf.affine_ras), thresholds=cfg.thresholds, hemispheres=perf.hemispheres,
        cortex=cortex, aif_ttp_s=perf.aif.ttp_s, vof_ttp_s=perf.vof.ttp_s, sinus=sinus,
        roi_mask=roi, contra_mask=contra, lesion_reason=can.lesion, venous_reason=can.venous,
        late_tmax_reason=can.late_tmax,
        tmax_volume_reason=can.global_delay, cbv_withheld=can.cbv_indices_withheld(),
        **_reference_inputs(perf, can.core)))
    metrics = build_metrics(
        indices, mode="A", thresholds=cfg.thresholds,
        qa_flags={**perf.qa_flags, **can.qa_flags(), **covered.qa_flags()},
        qa_values={**perf.qa_values, "reference_cbf_ml_100g_min": perf.reference_cbf,
                   "affected_side_engine": perf.affected_side, **can.qa_values(), **covered.qa_values()},
        provenance={**provenance, "config": cfg.to_dict() if config_record is None else config_record},
        regions=mode_a_regions(perf, lesion, roi, contra, can.unmeasured_regions()),
        method=method_description(cfg.deconvolution))
    stages["indices"] = time.perf_counter() - t0
    return ModeAResult(perfusion=perf, lesion=lesion, metrics=metrics, meta=AcquisitionMeta(), cortex=cortex,
                       sinus=sinus, roi=roi, contra=contra, stage_seconds=stages)


def _reference_inputs(perf: PerfusionResult, core_reason: str | None = None) -> dict[str, Any]:
    """IndexInputs fields from the engine's hypoperfusion pattern (bilateral / posterior) and why the core is not
    measured (``core_reason``: :attr:`ctperf.analysis.masks.Measurability.core`)."""
    pattern = perf.qa_values.get("hypoperfusion_pattern")
    return {"reference_reason": core_reason,
            "hemisphere_logic": pattern not in ("bilateral", "posterior"),
            "hemisphere_reason": {"bilateral": "bilateral hypoperfusion: no less-affected hemisphere",
                                  "posterior": "posterior-circulation hypoperfusion: hemisphere comparison does "
                                               "not apply"}.get(pattern, "")}


def mode_a_regions(perf: PerfusionResult, lesion: LesionMasks, roi: np.ndarray | None,
                   contra: np.ndarray | None, unmeasured: dict[str, str] | None = None) -> dict[str, Any]:
    """Regional statistics (docs/definitions.md §5): lesion masks, tissue of each hemisphere, ROIs within tissue;
    the regions of ``unmeasured`` (:meth:`ctperf.analysis.masks.Measurability.unmeasured_regions`) null with their
    reason."""
    from ctperf.analysis.regions import regional_statistics, standard_regions

    regions = standard_regions(lesion, perf.masks.tissue, perf.hemispheres.side, roi, contra)
    maps = {k: getattr(perf, k) for k in ("cbf", "cbv", "mtt", "tmax", "rcbf")}
    return regional_statistics(maps, regions, voxel_volume_ml=voxel_volume_ml(perf.affine_ras),
                               unmeasured=unmeasured)


def _step(progress: Progress, name: str) -> None:
    log.info("stage: %s", name)
    if progress is not None:
        progress(name)


def _on_grid(mask, affine_src: np.ndarray, perf: PerfusionResult):
    """Bring a user mask given on the study grid onto the map grid (nearest neighbour)."""
    if mask is None:
        return None
    return resample_to_grid(np.asarray(mask, np.float32), affine_src, perf.cbf.shape, perf.affine_ras) > 0.5


def _provenance(meta: AcquisitionMeta, spacing) -> dict[str, Any]:
    """PHI-free provenance: no patient name/ID/dates; series UIDs only as short hashes."""
    uid_hashes = [hashlib.sha256(u.encode()).hexdigest()[:12] for u in meta.series_instance_uids]
    return {
        "software_version": __version__,
        "manufacturer": meta.manufacturer, "model": meta.model, "kvp": meta.kvp,
        "series_description": meta.series_description, "series_numbers": meta.series_numbers,
        "series_uid_sha256_12": uid_hashes, "n_files_used": meta.n_files_used,
        "n_files_skipped_non_dicom": meta.n_files_skipped_non_dicom,
        "input_spacing_xyz_mm": list(meta.spacing_xyz_mm), "map_spacing_xyz_mm": [float(s) for s in spacing],
        "gantry_tilt_deg": meta.gantry_tilt_deg, "warnings": meta.warnings,
        "series": {"chosen": {"series_numbers": meta.series_numbers, "series_uid_sha256_12": uid_hashes,
                              "description": meta.series_description, "n_files": meta.n_files_used},
                   "excluded_candidates": list(meta.excluded_candidates),
                   "n_image_groups_found": meta.extra.get("n_groups"),
                   "files_skipped": meta.extra.get("skipped", {})},
        "time_source": meta.extra.get("time_source"), "excluded_series": meta.extra.get("excluded_series", []),
        "binned_on_load": meta.extra.get("binned_on_load", 1),
    }


def study_id_for(meta: AcquisitionMeta, given: str | None = None) -> tuple[str | None, str]:
    """Pseudonymous study identifier: ``given`` (``--study-id``) or the first 16 hex digits of the SHA-256 of
    the StudyInstanceUID.  Returns (study_id or None, how it was made)."""
    if given:
        return str(given), "given (--study-id)"
    if meta.study_instance_uid:
        return hashlib.sha256(meta.study_instance_uid.encode()).hexdigest()[:16], "sha256(StudyInstanceUID)[:16]"
    return None, "the DICOM files carry no StudyInstanceUID (use --study-id)"


def file_record(path: str | Path) -> dict[str, Any]:
    """File name (no folders: they may name the patient) and SHA-256 of an input file."""
    p = Path(path)
    h = hashlib.sha256()
    with p.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return {"file": p.name, "sha256": h.hexdigest()}


# ---------------------------------------------------------------------------------------------- I/O edges
def load_mask_for_study(path: str | Path | None, study: CTPStudy) -> np.ndarray | None:
    """Read a NIfTI mask and resample it (nearest) onto the study grid."""
    return load_mask_input(path, study)[0]


def load_mask_input(path: str | Path | None, study: CTPStudy) -> tuple[np.ndarray | None, dict[str, Any] | None]:
    """Read a NIfTI mask, resample it (nearest neighbour, in world space) onto the study grid.

    Returns (mask or None, record): the record names the file (name + SHA-256) and says whether the mask's grid
    differed from the study's (``grid``: "same" or "resampled", with both grids).

    Raises
    ------
    InputError
        The mask does not overlap the CT perfusion volume.
    """
    if path is None:
        return None, None
    vol, aff = load_volume(path)
    on = resample_to_grid(vol, aff, study.hu.shape[1:], study.affine_ras) > 0.5
    if not on.any():
        raise InputError(f"mask {Path(path).name} does not overlap the CT perfusion volume")
    record = file_record(path)
    same = same_grid(vol.shape, aff, study.hu.shape[1:], study.affine_ras)
    record["grid"] = "same" if same else "resampled"
    if not same:
        record["mask_grid"] = _grid_text(vol.shape, aff)
        record["study_grid"] = _grid_text(study.hu.shape[1:], study.affine_ras)
    return on, record


def _grid_text(shape_zyx, affine) -> str:
    sp = spacing_xyz_mm(affine)
    return f"{shape_zyx[2]}x{shape_zyx[1]}x{shape_zyx[0]} voxels of {sp[0]:.2f}x{sp[1]:.2f}x{sp[2]:.2f} mm"


def _mask_notes(result: ModeAResult, records: dict[str, dict | None]) -> dict[str, Any]:
    """Complete the mask records with the fraction of each mask (on the map grid) inside the brain."""
    out = {}
    for role, rec in records.items():
        if rec is None:
            continue
        mask = result.roi if role == "roi_mask" else result.contra
        n = int(mask.sum()) if mask is not None else 0
        frac = float((mask & result.perfusion.masks.brain).sum()) / n if n else 0.0
        rec = {**rec, "fraction_in_brain": round(frac, 4)}
        if rec["grid"] == "resampled":
            rec["note"] = (f"--{role} {rec['file']} is on another grid ({rec['mask_grid']}; study "
                           f"{rec['study_grid']}): resampled in world space (nearest neighbour); "
                           f"{100 * frac:.0f}% of the mask lies inside the brain")
        elif frac < 0.5:
            rec["note"] = f"--{role} {rec['file']}: only {100 * frac:.0f}% of the mask lies inside the brain"
        if "note" in rec:
            log.warning(rec["note"])
        out[role] = rec
    return out


def run_dicom_folder(dicom_dir: str | Path, out_dir: str | Path, cfg: Config | None = None,
                     roi_mask: str | Path | None = None, contra_mask: str | Path | None = None,
                     series: str | None = None, progress: Progress = None,
                     load_progress: Callable[[int, int], None] | None = None, *,
                     config_file: str | Path | None = None, study_id: str | None = None,
                     overwrite: bool = False, dicom_out: bool = False, aif_mask: str | Path | None = None,
                     vof_mask: str | Path | None = None) -> ModeAResult:
    """Mode A from a DICOM folder to a complete output folder (written atomically): what ``ctperf run`` does.

    Parameters
    ----------
    dicom_dir : path
        Folder searched recursively for the CT perfusion acquisition (any vendor, any layout).
    out_dir : path
        Output folder (README "Outputs"); nothing appears in it unless every output was written.
    cfg : Config, optional
        Settings (defaults when None).
    roi_mask, contra_mask : path, optional
        NIfTI masks (study grid or any grid with a RAS affine) of the lesion-cortex ROI and the contralateral ROI.
    series : str, optional
        SeriesNumber, SeriesInstanceUID or a unique UID prefix, when the folder holds several acquisitions.
    progress, load_progress : callable, optional
        Called with each stage's name as it starts, and with (files done, files total) while decoding.
    config_file : path, optional
        The file ``cfg`` was read from; it and the masks are named with their SHA-256 in ``metrics.json``
        ``provenance.input_files`` and in log.txt.
    study_id : str, optional
        Replaces the default pseudonymous identifier (see :func:`study_id_for`).
    overwrite : bool
        A folder holding a Mode B result is refused unless True.
    dicom_out : bool
        Also write the derived DICOM objects (:mod:`ctperf.io.dicom_out`, extra ``dicom-out``) into
        ``out_dir/dicom``.
    aif_mask, vof_mask : path, optional
        NIfTI masks of the arterial input / venous output voxels, instead of the automatic choice (named with their
        SHA-256 in ``provenance.input_files`` like the ROIs).

    Returns
    -------
    ModeAResult
        As :func:`analyse_study`.

    Raises
    ------
    InputError, DicomError
        Bad input (one-line message; the CLI exits with code 2 and leaves no output folder).
    """
    from ctperf.dicom_io import load_ctp

    cfg = (cfg or Config()).check()
    check_output_dir(out_dir, mode="A", overwrite=overwrite)
    if dicom_out:
        from ctperf.io.dicom_out import read_source, require_highdicom
        require_highdicom()
    with _LogCapture() as logbuf:
        t0 = time.perf_counter()
        _step(progress, "load")
        study = load_ctp(dicom_dir, series=series, progress=load_progress,
                         frame_interval_s=cfg.ingest.frame_interval_s, bin_to_pixel_mm=cfg.preprocess.compute_pixel_mm,
                         bin_above_bytes=int(cfg.ingest.bin_on_load_above_gb * 1e9), workers=cfg.compute.workers)
        for warning in study.meta.warnings:
            log.warning("ingest: %s", warning)
        t_load = time.perf_counter() - t0
        log.info("loaded %s: shape x,y,z,t=%s, %d files, manufacturer=%s", study.meta.series_description or "CTP",
                 study.shape_xyzt, study.meta.n_files_used, study.meta.manufacturer)
        roi, roi_rec = load_mask_input(roi_mask, study)
        contra, contra_rec = load_mask_input(contra_mask, study)
        aif, aif_rec = load_mask_input(aif_mask, study)
        vof, vof_rec = load_mask_input(vof_mask, study)
        result = analyse_study(study, cfg, roi, contra, progress=progress, aif_mask=aif, vof_mask=vof)
        sid, how = study_id_for(study.meta, study_id)
        inputs = {"config": None if config_file is None else file_record(config_file),
                  **_mask_notes(result, {"roi_mask": roi_rec, "contra_mask": contra_rec}),
                  **{role: rec for role, rec in (("aif_mask", aif_rec), ("vof_mask", vof_rec)) if rec is not None}}
        result.metrics = with_study_id(result.metrics, sid, how)
        result.metrics["provenance"]["input_files"] = inputs
        for key, value in (("study_id", sid), ("inputs", inputs), ("series", result.metrics["provenance"]["series"])):
            log.info("%s: %s", key, json.dumps(value))
        result.stage_seconds = {"load": t_load, **result.stage_seconds}
        t1 = time.perf_counter()
        _step(progress, "write")
        source = read_source(dicom_dir, study.meta.series_instance_uids) if dicom_out else None
        write_outputs(result, out_dir, cfg, logbuf, dicom_source=source)
        result.stage_seconds["write"] = time.perf_counter() - t1
    return result


def with_study_id(metrics: dict[str, Any], study_id: str | None, how: str) -> dict[str, Any]:
    """The metrics document with ``study_id`` right after ``mode`` (null with a reason when unknown)."""
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        if key in ("study_id", "study_id_reason", "study_id_source"):
            continue
        out[key] = value
        if key == "mode":
            out["study_id"] = study_id
            out["study_id_source" if study_id else "study_id_reason"] = how
    return out


def write_outputs(result: ModeAResult, out_dir: str | Path, cfg: Config, logbuf: "_LogCapture | None" = None,
                  dicom_source=None) -> Path:
    """Write maps, masks, metrics, curves, QA figures and log.txt; nothing appears in out_dir unless all succeed.

    With ``dicom_source`` (:class:`ctperf.io.dicom_out.SourceStudy`) the derived DICOM objects go to ``dicom/``.
    """
    perf, lesion = result.perfusion, result.lesion

    def write_volumes(tmp: Path) -> None:
        for name, fname in MAP_FILES.items():
            save_volume(tmp / fname, getattr(perf, name), perf.affine_ras, description=VOLUME_DESCRIPTIONS[name])
        for name, fname in MASK_FILES.items():
            save_volume(tmp / fname, getattr(lesion, name), perf.affine_ras, dtype=np.uint8,
                        description=VOLUME_DESCRIPTIONS[name])
        write_metrics(result.metrics, tmp)

    # NIfTI compression (zlib releases the GIL) runs beside the figure drawing, the maps and the auxiliary
    # volumes in two threads when the run may use two (a one-thread pool writes them one after the other); the
    # summary PDF follows them in the pool, beside the QA figures (PNG and image compression release the GIL)
    with atomic_output_dir(out_dir) as tmp, \
            ThreadPoolExecutor(max_workers=thread_count(cfg.compute.workers, 2)) as pool:
        jobs = [pool.submit(write_volumes, tmp), pool.submit(_write_aux, tmp, result)]
        if cfg.output.write_qa_png or cfg.output.write_pdf:
            from ctperf.viz import qa_figures, report

            if cfg.output.write_pdf:
                jobs.append(pool.submit(report.write_summary_pdf, perf, lesion, result.metrics, tmp / "report.pdf"))
            if cfg.output.write_qa_png:
                qa_figures.write_qa_figures(perf, lesion, result.metrics, tmp / "qa")
        for job in jobs:
            job.result()
        if dicom_source is not None:
            from ctperf.io.dicom_out import write_dicom_outputs
            n = len(write_dicom_outputs(perf, lesion, result.metrics, dicom_source, tmp))
            log.info("wrote %d DICOM objects (research use only) to dicom/", n)
        _write_log(tmp / "log.txt", result, cfg, logbuf)
    return Path(out_dir)


def _voxel_mask(curve: Curve, shape_zyx: tuple[int, ...]) -> np.ndarray | None:
    """Bool (z, y, x) mask of a curve's voxels, or None without voxels."""
    vox = curve.voxels
    if not len(vox):
        return None
    mask = np.zeros(shape_zyx, bool)
    mask[tuple(vox.T)] = True
    return mask


def _write_aux(tmp: Path, result: ModeAResult) -> None:
    """Everything `recompute` needs to rebuild the result from disk (masks, baseline, midline, curves, QA)."""
    perf = result.perfusion
    for curve, fname in ((perf.aif, "aif.csv"), (perf.vof, "vof.csv")):
        write_curve_csv(tmp / fname, curve)
    aux = tmp / AUX_DIR
    aux.mkdir()
    vols = {"brain_mask": perf.masks.brain, "csf_mask": perf.masks.csf, "vessel_mask": perf.masks.vessels,
            "tissue_mask": perf.masks.tissue, "roi_mask": result.roi, "contra_mask": result.contra}
    # the AIF / VOF voxels as masks: open them in a viewer, edit, and pass them back with --aif-mask / --vof-mask
    for curve, name in ((perf.aif, "aif_voxels"), (perf.vof, "vof_voxels")):
        vols[name] = _voxel_mask(curve, perf.masks.brain.shape)
    for name, vol in vols.items():
        if vol is not None:
            save_volume(aux / f"{name}.nii.gz", vol, perf.affine_ras, dtype=np.uint8)
    save_volume(aux / "baseline_hu.nii.gz", perf.baseline_hu, perf.affine_ras)
    for name, vol in perf.aux_maps.items():
        save_volume(aux / f"{name}.nii.gz", vol, perf.affine_ras)
    analysis = {
        "midline": {"normal_ras": perf.hemispheres.normal_ras, "point_ras": perf.hemispheres.point_ras},
        "aif": {"time_s": perf.aif.time_s, "delta_hu": perf.aif.delta_hu, "voxels_zyx": perf.aif.voxels_zyx},
        "vof": {"time_s": perf.vof.time_s, "delta_hu": perf.vof.delta_hu, "voxels_zyx": perf.vof.voxels_zyx},
        "affected_side": perf.affected_side, "reference_cbf": perf.reference_cbf,
        "qa_flags": perf.qa_flags, "qa_values": perf.qa_values,
        "provenance": {k: v for k, v in result.metrics.get("provenance", {}).items() if k != "config"},
    }
    (aux / "analysis.json").write_text(json.dumps(to_strict(analysis), indent=1, allow_nan=False))


def load_saved_result(out_dir: str | Path) -> tuple[PerfusionResult, np.ndarray | None, np.ndarray | None, dict]:
    """Rebuild the PerfusionResult of a Mode A output folder from its files (no deconvolution).

    Returns (perfusion, roi, contra, provenance).
    """
    out = Path(out_dir)
    aux = out / AUX_DIR
    needed = [out / f for f in MAP_FILES.values()] + [aux / f"{n}.nii.gz" for n in
                                                       ("brain_mask", "csf_mask", "vessel_mask", "baseline_hu")]
    needed.append(aux / "analysis.json")
    missing = [p.name for p in needed if not p.exists()]
    if missing:
        raise InputError(f"{out} is not a complete ctperf Mode A output folder (missing {', '.join(missing)})")
    maps = {name: load_volume(out / fname) for name, fname in MAP_FILES.items()}
    aff = maps["tmax"][1]

    def mask(name):
        p = aux / f"{name}.nii.gz"
        return load_volume(p)[0] > 0.5 if p.exists() else None

    try:
        info = json.loads((aux / "analysis.json").read_text(encoding="utf-8"))
        brain = mask("brain_mask")
        hemi = hemispheres_from_plane(brain, aff, np.array(info["midline"]["normal_ras"], float),
                                      np.array(info["midline"]["point_ras"], float))
        curves = {k: Curve(np.array(info[k]["time_s"], float), np.array(info[k]["delta_hu"], float),
                           np.array(info[k]["voxels_zyx"], int).reshape(-1, 3)) for k in ("aif", "vof")}
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{aux / 'analysis.json'} is damaged: {exc}") from None
    perf = PerfusionResult(
        affine_ras=aff, **{name: vol for name, (vol, _) in maps.items()},
        masks=TissueMasks(brain=brain, csf=mask("csf_mask"), vessels=mask("vessel_mask")), hemispheres=hemi,
        aif=curves["aif"], vof=curves["vof"], affected_side=info.get("affected_side", "none"),
        reference_cbf=float(info.get("reference_cbf") or float("nan")),
        baseline_hu=load_volume(aux / "baseline_hu.nii.gz")[0], qa_flags=info.get("qa_flags", {}),
        qa_values=info.get("qa_values", {}),
        # the standard convention's maps go with the result (a re-thresholded set still names them in its method)
        aux_maps={name: load_volume(aux / f"{name}.nii.gz")[0] for name in STANDARD_MAP_NAMES
                  if (aux / f"{name}.nii.gz").exists()})
    return perf, mask("roi_mask"), mask("contra_mask"), info.get("provenance", {})


def write_curve_csv(path: Path, curve: Curve) -> None:
    lines = ["time_s,delta_hu"] + [f"{t:.3f},{v:.4f}" for t, v in zip(curve.time_s, curve.delta_hu)]
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


def analysed_line() -> str:
    """log.txt's second line: the UTC date and time of the analysis (when its result is written), ISO 8601.

    The log's records carry local clock times without a date (``09:38:33``); this line dates the run once.  It is
    the time of the analysis, not of the scan (no patient data).
    """
    return "analysed: " + datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _write_log(path: Path, result: ModeAResult, cfg: Config, logbuf) -> None:
    prov = result.metrics.get("provenance", {})
    lines = [f"ctperf {__version__} - {DISCLAIMER}",
             analysed_line(),
             f"definition_version: {result.metrics.get('definition_version')}",
             "stage seconds: " + json.dumps({k: round(v, 3) for k, v in result.stage_seconds.items()}),
             f"study_id: {result.metrics.get('study_id')}",
             "input files (name, sha256): " + json.dumps(prov.get("input_files", {})),
             "series: " + json.dumps(prov.get("series", {})),
             *(["recomputed_from: " + json.dumps(result.metrics["recomputed_from"])]
               if "recomputed_from" in result.metrics else []),
             "provenance: " + json.dumps(prov, default=str),
             "qa_flags: " + json.dumps(result.metrics.get("qa_flags", {}))]
    if logbuf is not None:
        lines += ["", "log:"] + logbuf.lines
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


# ------------------------------------------------------------------------------------- recompute from maps
#: Config sections recompute can change (everything else shaped the saved maps and needs `ctperf run`).
RECOMPUTE_SECTIONS = ("thresholds", "output")
#: Sections that never change a result (threads: README "Threads per run"), so recompute accepts any value there.
RESULT_NEUTRAL_SECTIONS = ("compute",)


def recompute_outputs(out_dir: str | Path, cfg: Config, *, new_out_dir: str | Path | None = None,
                      config_data: dict[str, Any] | None = None, config_file: str | Path | None = None,
                      overwrite: bool = False, dicom_out: bool | None = None) -> dict[str, Any]:
    """New thresholds on saved maps: masks, metrics, QA figures, report and log (no deconvolution).

    Parameters
    ----------
    out_dir : path
        A Mode A output folder.
    cfg : Config
        Only its ``thresholds`` and ``output`` sections are used.
    new_out_dir : path, optional
        Write the complete result (maps copied) to this new folder and leave ``out_dir`` untouched; default:
        replace the result in ``out_dir``.
    config_data : dict, optional
        The settings as given by the user (the parsed config file).  Settings of other sections than
        :data:`RECOMPUTE_SECTIONS` must equal the original run's: they shaped the saved maps.
    config_file : path, optional
        The config file, named with its SHA-256 in ``provenance.input_files``.
    dicom_out : bool, optional
        Rebuild the DICOM objects of an earlier ``--dicom-out`` run from its saved source headers (None: when
        present; True: required; False: not written).

    Returns
    -------
    dict
        The metrics document; ``recomputed_from`` names the original result (folder name, SHA-256 of its
        metrics.json, its thresholds), ``provenance.config`` keeps the original engine settings.

    Raises
    ------
    InputError
        Not a complete Mode A folder; a setting that needs a new deconvolution; ``new_out_dir`` is ``out_dir``.
    """
    src = Path(out_dir)
    dest = src if new_out_dir is None else Path(new_out_dir)
    if new_out_dir is not None and dest.resolve() == src.resolve():
        raise InputError("--out_dir must differ from the folder being recomputed (omit it to replace in place)")
    perf, roi, contra, provenance = load_saved_result(src)
    original = _read_original_metrics(src)
    engine_cfg = (original.get("provenance") or {}).get("config") or {}
    _reject_engine_changes(config_data or {}, engine_cfg)
    check_output_dir(dest, mode="A", overwrite=overwrite)
    source = None
    if dicom_out is not False:
        from ctperf.io.dicom_out import saved_source

        source = saved_source(src)
        if dicom_out and source is None:
            raise InputError(f"{src} has no DICOM source headers: run `ctperf run --dicom-out` on the study first")
    record = {**engine_cfg, **{k: v for k, v in cfg.to_dict().items() if k in RECOMPUTE_SECTIONS}}
    with _LogCapture() as logbuf:
        log.info("recomputed masks and indices from the saved maps with new thresholds (no deconvolution)")
        result = lesions_and_indices(perf, cfg, roi, contra, {**provenance, "recomputed_from_saved_maps": True},
                                     config_record=record)
        prov = result.metrics["provenance"]
        prov["input_files"] = {**(original.get("provenance") or {}).get("input_files", {}),
                               "recompute_config": None if config_file is None else file_record(config_file)}
        sid = original.get("study_id")
        result.metrics = with_study_id(result.metrics, sid, original.get("study_id_source")
                                        or original.get("study_id_reason") or "unknown (older ctperf result)")
        result.metrics["recomputed_from"] = {
            "folder": src.resolve().name,
            "metrics_sha256": file_record(src / "metrics.json")["sha256"] if (src / "metrics.json").is_file()
            else None,
            "software_version": original.get("software_version"), "thresholds": original.get("thresholds")}
        log.info("recomputed_from: %s", json.dumps(result.metrics["recomputed_from"]))
        write_outputs(result, dest, cfg, logbuf, dicom_source=source)
    return result.metrics


def _read_original_metrics(out_dir: Path) -> dict[str, Any]:
    p = out_dir / "metrics.json"
    if not p.is_file():
        return {}
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise InputError(f"{p} is not valid JSON") from None
    return doc if isinstance(doc, dict) else {}


def _reject_engine_changes(config_data: dict[str, Any], original: dict[str, Any]) -> None:
    """Raise when the user's settings change anything the saved maps depend on."""
    if not isinstance(config_data, dict):
        return
    for section, values in config_data.items():
        if section in RECOMPUTE_SECTIONS + RESULT_NEUTRAL_SECTIONS or not isinstance(values, dict):
            continue
        checked = Config.from_dict({section: values}).to_dict()[section]
        for key in values:
            old = (original.get(section) or {}).get(key, "<not recorded>")
            new = to_strict(checked[key])
            if to_strict(old) != new:
                raise InputError(
                    f"recompute only changes [thresholds] and [output]: {section}.{key} = {new!r} differs from "
                    f"the original run's {old!r} and needs a new deconvolution (use `ctperf run`)")


class _LogCapture(logging.Handler):
    """Collect the ctperf log records of the calling thread (for log.txt) while a run is in progress.

    Thread-safe without process-global changes during a run: the ``ctperf`` logger is set to INFO once, when this
    module is imported, and a logger filter lets INFO records through only for threads that are capturing (other
    records below the level the application configured are dropped as before).  Records of one run never land in
    another run's log.txt, and no logger level is touched while studies run in parallel.
    """

    def __init__(self):
        super().__init__(level=logging.INFO)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
        self.addFilter(lambda record: record.thread == self._thread)

    def emit(self, record):
        self.lines.append(self.format(record))

    def __enter__(self):
        self._thread = threading.get_ident()
        with _CAPTURE_LOCK:
            _CAPTURING[self._thread] = _CAPTURING.get(self._thread, 0) + 1
        log.addHandler(self)  # Logger.addHandler/removeHandler are locked inside logging
        return self

    def __exit__(self, *exc):
        log.removeHandler(self)
        with _CAPTURE_LOCK:
            left = _CAPTURING.pop(self._thread) - 1
            if left:
                _CAPTURING[self._thread] = left
        return False


_CAPTURE_LOCK = threading.Lock()
_CAPTURING: dict[int, int] = {}


def _capture_filter(record: logging.LogRecord) -> bool:
    """Pass a ctperf record when its thread is capturing a run log, or when the application asked for its level."""
    if record.thread in _CAPTURING:
        return True
    parent = log.parent
    return parent is None or record.levelno >= parent.getEffectiveLevel()


if log.level == logging.NOTSET:  # once, at import: the application's own level setting is respected
    log.setLevel(logging.INFO)
    log.addFilter(_capture_filter)
