"""Mode A, top to bottom: load -> preprocess -> AIF/VOF -> deconvolve -> maps -> masks -> indices -> write.

:func:`analyse_study` is pure (arrays in, result out) and is what a batch worker, a web request or a DICOM node
calls; :func:`run_dicom_folder` adds the I/O edges (DICOM in, files out, written atomically).
:func:`recompute_outputs` re-derives masks and indices from saved maps with new thresholds (no deconvolution).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ctperf import DISCLAIMER, __version__
from ctperf.config import Config
from ctperf.errors import InputError
from ctperf.hemispheres import hemispheres_from_plane
from ctperf.indices import IndexInputs, compute_indices
from ctperf.masks import cortical_ribbon, lesion_masks, sinus_region
from ctperf.metrics_io import build_metrics, to_strict, write_metrics
from ctperf.nifti_io import load_volume, resample_to_grid, save_volume
from ctperf.results import Curve, LesionMasks, PerfusionResult, TissueMasks
from ctperf.study import AcquisitionMeta, CTPStudy, spacing_xyz_mm, voxel_volume_ml

log = logging.getLogger("ctperf")

MAP_FILES = {"cbf": "cbf.nii.gz", "cbv": "cbv.nii.gz", "mtt": "mtt.nii.gz", "tmax": "tmax.nii.gz",
             "ttp": "ttp.nii.gz", "rcbf": "rcbf.nii.gz"}
MASK_FILES = {"hypoperfusion": "hypoperf_mask_tmax6.nii.gz", "core": "core_mask_rcbf30.nii.gz",
              "penumbra": "penumbra_mask.nii.gz"}
AUX_DIR = "aux"

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
                  contra_mask: np.ndarray | None = None, progress: Progress = None) -> ModeAResult:
    """Run the whole Mode A analysis on an in-memory study (no file I/O).

    ``roi_mask`` / ``contra_mask`` are bool (z, y, x) volumes on the study grid.
    """
    from ctperf.engine import compute_perfusion  # preprocess -> AIF/VOF -> deconvolve -> maps -> hemispheres/rCBF

    perf = compute_perfusion(study, cfg, contra_mask=contra_mask, progress=progress)
    roi = _on_grid(roi_mask, study.affine_ras, perf)
    contra = _on_grid(contra_mask, study.affine_ras, perf)
    result = lesions_and_indices(perf, cfg, roi, contra, _provenance(study.meta, spacing_xyz_mm(perf.affine_ras)),
                                 progress)
    result.meta = study.meta
    result.stage_seconds = {**perf.stage_seconds, **result.stage_seconds}
    return result


def lesions_and_indices(perf: PerfusionResult, cfg: Config, roi: np.ndarray | None, contra: np.ndarray | None,
                        provenance: dict[str, Any], progress: Progress = None) -> ModeAResult:
    """Masks -> indices -> metrics document from perfusion maps (also used to re-threshold saved maps)."""
    stages: dict[str, float] = {}
    t0 = time.perf_counter()
    _step(progress, "masks")
    lesion = lesion_masks(perf.tmax, perf.rcbf, perf.masks.tissue, voxel_volume_ml(perf.affine_ras),
                          cfg.thresholds)
    cortex = cortical_ribbon(perf.masks.tissue, spacing_xyz_mm(perf.affine_ras)) & perf.masks.tissue
    sinus = sinus_region(perf.masks.vessels, perf.vof.voxels_zyx)
    stages["masks"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    _step(progress, "indices")
    indices = compute_indices(IndexInputs(
        cbv=perf.cbv, tmax_s=perf.tmax, lesion=lesion, tissue=perf.masks.tissue,
        voxel_volume_ml=voxel_volume_ml(perf.affine_ras), thresholds=cfg.thresholds, hemispheres=perf.hemispheres,
        cortex=cortex, aif_ttp_s=perf.aif.ttp_s, vof_ttp_s=perf.vof.ttp_s, sinus=sinus,
        roi_mask=roi, contra_mask=contra))
    metrics = build_metrics(
        indices, mode="A", thresholds=cfg.thresholds, qa_flags=perf.qa_flags,
        qa_values={**perf.qa_values, "reference_cbf_ml_100g_min": perf.reference_cbf,
                   "affected_side_engine": perf.affected_side},
        provenance={**provenance, "config": cfg.to_dict()})
    stages["indices"] = time.perf_counter() - t0
    return ModeAResult(perfusion=perf, lesion=lesion, metrics=metrics, meta=AcquisitionMeta(), cortex=cortex,
                       sinus=sinus, roi=roi, contra=contra, stage_seconds=stages)


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
    }


# ---------------------------------------------------------------------------------------------- I/O edges
def load_mask_for_study(path: str | Path | None, study: CTPStudy) -> np.ndarray | None:
    """Read a NIfTI mask and resample it (nearest) onto the study grid."""
    if path is None:
        return None
    vol, aff = load_volume(path)
    on = resample_to_grid(vol, aff, study.hu.shape[1:], study.affine_ras) > 0.5
    if not on.any():
        raise InputError(f"mask {Path(path).name} does not overlap the CT perfusion volume")
    return on


def run_dicom_folder(dicom_dir: str | Path, out_dir: str | Path, cfg: Config | None = None,
                     roi_mask: str | Path | None = None, contra_mask: str | Path | None = None,
                     series: str | None = None, progress: Progress = None,
                     load_progress: Callable[[int, int], None] | None = None,
                     dicom_out: bool = False) -> ModeAResult:
    """Mode A from a DICOM folder to a complete output folder (written atomically).

    ``dicom_out`` also writes the derived DICOM objects (:mod:`ctperf.io.dicom_out`) into ``out_dir/dicom``.
    """
    from ctperf.dicom_io import load_ctp

    cfg = cfg or Config()
    check_output_dir(out_dir)
    if dicom_out:
        from ctperf.io.dicom_out import read_source, require_highdicom
        require_highdicom()
    with _LogCapture() as logbuf:
        t0 = time.perf_counter()
        _step(progress, "load")
        study = load_ctp(dicom_dir, series=series, progress=load_progress)
        t_load = time.perf_counter() - t0
        log.info("loaded %s: shape x,y,z,t=%s, %d files, manufacturer=%s", study.meta.series_description or "CTP",
                 study.shape_xyzt, study.meta.n_files_used, study.meta.manufacturer)
        result = analyse_study(study, cfg, load_mask_for_study(roi_mask, study),
                               load_mask_for_study(contra_mask, study), progress=progress)
        result.stage_seconds = {"load": t_load, **result.stage_seconds}
        t1 = time.perf_counter()
        _step(progress, "write")
        source = read_source(dicom_dir, study.meta.series_instance_uids) if dicom_out else None
        write_outputs(result, out_dir, cfg, logbuf, dicom_source=source)
        result.stage_seconds["write"] = time.perf_counter() - t1
    return result


def write_outputs(result: ModeAResult, out_dir: str | Path, cfg: Config, logbuf: "_LogCapture | None" = None,
                  dicom_source=None) -> Path:
    """Write maps, masks, metrics, curves, QA figures and log.txt; nothing appears in out_dir unless all succeed.

    With ``dicom_source`` (:class:`ctperf.io.dicom_out.SourceStudy`) the derived DICOM objects go to ``dicom/``.
    """
    perf, lesion = result.perfusion, result.lesion

    def write_volumes(tmp: Path) -> None:
        for name, fname in MAP_FILES.items():
            save_volume(tmp / fname, getattr(perf, name), perf.affine_ras)
        for name, fname in MASK_FILES.items():
            save_volume(tmp / fname, getattr(lesion, name), perf.affine_ras, dtype=np.uint8)
        _write_aux(tmp, result)
        write_metrics(result.metrics, tmp)

    with atomic_output_dir(out_dir) as tmp, ThreadPoolExecutor(max_workers=1) as pool:
        # NIfTI compression (zlib releases the GIL) runs beside the figure drawing
        volumes = pool.submit(write_volumes, tmp)
        if cfg.output.write_qa_png or cfg.output.write_pdf:
            from ctperf import qa_plots, report

            if cfg.output.write_qa_png:
                qa_plots.write_qa_figures(perf, lesion, result.metrics, tmp / "qa")
            if cfg.output.write_pdf:
                report.write_summary_pdf(perf, lesion, result.metrics, tmp / "report.pdf")
        volumes.result()
        if dicom_source is not None:
            from ctperf.io.dicom_out import write_dicom_outputs
            n = len(write_dicom_outputs(perf, lesion, result.metrics, dicom_source, tmp))
            log.info("wrote %d DICOM objects (research use only) to dicom/", n)
        _write_log(tmp / "log.txt", result, cfg, logbuf)
    return Path(out_dir)


def _write_aux(tmp: Path, result: ModeAResult) -> None:
    """Everything `recompute` needs to rebuild the result from disk (masks, baseline, midline, curves, QA)."""
    perf = result.perfusion
    for curve, fname in ((perf.aif, "aif.csv"), (perf.vof, "vof.csv")):
        write_curve_csv(tmp / fname, curve)
    aux = tmp / AUX_DIR
    aux.mkdir()
    vols = {"brain_mask": perf.masks.brain, "csf_mask": perf.masks.csf, "vessel_mask": perf.masks.vessels,
            "tissue_mask": perf.masks.tissue, "roi_mask": result.roi, "contra_mask": result.contra}
    for name, vol in vols.items():
        if vol is not None:
            save_volume(aux / f"{name}.nii.gz", vol, perf.affine_ras, dtype=np.uint8)
    save_volume(aux / "baseline_hu.nii.gz", perf.baseline_hu, perf.affine_ras)
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
        qa_values=info.get("qa_values", {}))
    return perf, mask("roi_mask"), mask("contra_mask"), info.get("provenance", {})


def write_curve_csv(path: Path, curve: Curve) -> None:
    lines = ["time_s,delta_hu"] + [f"{t:.3f},{v:.4f}" for t, v in zip(curve.time_s, curve.delta_hu)]
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


def _write_log(path: Path, result: ModeAResult, cfg: Config, logbuf) -> None:
    lines = [f"ctperf {__version__} - {DISCLAIMER}",
             f"definition_version: {result.metrics.get('definition_version')}",
             "stage seconds: " + json.dumps({k: round(v, 3) for k, v in result.stage_seconds.items()}),
             "provenance: " + json.dumps(result.metrics.get("provenance", {}), default=str),
             "qa_flags: " + json.dumps(result.metrics.get("qa_flags", {}))]
    if logbuf is not None:
        lines += ["", "log:"] + logbuf.lines
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


# ------------------------------------------------------------------------------------- recompute from maps
def recompute_outputs(out_dir: str | Path, cfg: Config, dicom_out: bool | None = None) -> dict[str, Any]:
    """New thresholds on saved maps: rewrite masks, metrics, QA figures, report and log (no deconvolution).

    The mask files keep their standard names; ``metrics.json`` ``thresholds`` and ``log.txt`` say which
    thresholds produced them. The DICOM objects of an earlier ``--dicom-out`` run are rebuilt from the saved
    source headers (``dicom_out=None``: when present; True: required; False: left as they are).
    """
    perf, roi, contra, provenance = load_saved_result(out_dir)
    source = None
    if dicom_out is not False:
        from ctperf.io.dicom_out import saved_source

        source = saved_source(out_dir)
        if dicom_out and source is None:
            raise InputError(f"{out_dir} has no DICOM source headers: run `ctperf run --dicom-out` on the study "
                             "first")
    with _LogCapture() as logbuf:
        log.info("recomputed masks and indices from the saved maps with new thresholds (no deconvolution)")
        result = lesions_and_indices(perf, cfg, roi, contra, {**provenance, "recomputed_from_saved_maps": True})
        write_outputs(result, out_dir, cfg, logbuf, dicom_source=source)
    return result.metrics


# ----------------------------------------------------------------------------------------- atomic writing
class atomic_output_dir:
    """Context manager: yields a temporary folder beside ``out_dir``; on success its contents are moved into
    ``out_dir`` (created if needed, existing files of the same name replaced); on failure nothing is left."""

    def __init__(self, out_dir: str | Path, replace_files: bool = True):
        self.out_dir = Path(out_dir)
        self.replace_files = replace_files

    def __enter__(self) -> Path:
        self.tmp = _make_temp_beside(self.out_dir)
        return self.tmp

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return False
        try:
            if not self.out_dir.exists():
                os.replace(self.tmp, self.out_dir)
                return False
            for item in sorted(self.tmp.iterdir()):
                dest = self.out_dir / item.name
                if dest.is_dir() and item.is_dir():
                    shutil.rmtree(dest)
                elif dest.exists():
                    dest.unlink()
                os.replace(item, dest)
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)
        return False


def _make_temp_beside(out_dir: Path) -> Path:
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"output folder {out_dir} is an existing file")
    parent = out_dir.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.ctperf-tmp-", dir=parent))
    except OSError as exc:
        raise InputError(f"cannot write to {out_dir}: {exc.strerror or exc}") from None
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; results should be readable like any new folder
    return tmp


def check_output_dir(out_dir: str | Path) -> None:
    """Fail early (before any analysis) when ``out_dir`` cannot be written."""
    shutil.rmtree(_make_temp_beside(Path(out_dir)), ignore_errors=True)


class _LogCapture(logging.Handler):
    """Collect ctperf log records (for log.txt) while a run is in progress."""

    def __init__(self):
        super().__init__(level=logging.INFO)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))

    def emit(self, record):
        self.lines.append(self.format(record))

    def __enter__(self):
        self._old_level = log.level
        log.setLevel(logging.INFO)
        log.addHandler(self)
        return self

    def __exit__(self, *exc):
        log.removeHandler(self)
        log.setLevel(self._old_level)
        return False
