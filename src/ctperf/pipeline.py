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
from ctperf.metrics_io import build_metrics, write_metrics
from ctperf.nifti_io import load_volume, resample_to_grid, save_volume
from ctperf.results import Curve, LesionMasks, PerfusionResult
from ctperf.study import AcquisitionMeta, CTPStudy

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
    stage_seconds: dict[str, float] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------- pure core
def analyse_study(study: CTPStudy, cfg: Config, roi_mask: np.ndarray | None = None,
                  contra_mask: np.ndarray | None = None, progress: Progress = None) -> ModeAResult:
    """Run the whole Mode A analysis on an in-memory study (no file I/O).

    ``roi_mask`` / ``contra_mask`` are bool (z, y, x) volumes on the study grid.
    """
    from ctperf.engine import compute_perfusion  # preprocess -> AIF/VOF -> deconvolve -> maps -> hemispheres/rCBF

    stages: dict[str, float] = {}
    perf = compute_perfusion(study, cfg, contra_mask=_on_grid(contra_mask, study, None), progress=progress)
    stages.update(perf.stage_seconds)

    t0 = time.perf_counter()
    _step(progress, "masks")
    lesion, cortex, sinus, spacing = masks_for_result(perf, cfg)
    stages["masks"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    _step(progress, "indices")
    roi = _on_grid(roi_mask, study, perf)
    contra = _on_grid(contra_mask, study, perf)
    indices = compute_indices(IndexInputs(
        cbv=perf.cbv, tmax_s=perf.tmax, lesion=lesion, tissue=perf.masks.tissue,
        voxel_volume_ml=_voxel_ml(perf.affine_ras), thresholds=cfg.thresholds, hemispheres=perf.hemispheres,
        cortex=cortex, aif_ttp_s=perf.aif.ttp_s, vof_ttp_s=perf.vof.ttp_s, sinus=sinus,
        roi_mask=roi, contra_mask=contra))
    stages["indices"] = time.perf_counter() - t0

    metrics = build_metrics(
        indices, mode="A", thresholds=cfg.thresholds, qa_flags=perf.qa_flags,
        qa_values={**perf.qa_values, "reference_cbf_ml_100g_min": perf.reference_cbf,
                   "affected_side_engine": perf.affected_side},
        provenance=_provenance(study.meta, cfg, spacing))
    return ModeAResult(perfusion=perf, lesion=lesion, metrics=metrics, meta=study.meta, cortex=cortex,
                       sinus=sinus, stage_seconds=stages)


def masks_for_result(perf: PerfusionResult, cfg: Config):
    spacing = tuple(float(s) for s in np.sqrt((perf.affine_ras[:3, :3] ** 2).sum(axis=0)))
    lesion = lesion_masks(perf.tmax, perf.rcbf, perf.masks.tissue, _voxel_ml(perf.affine_ras), cfg.thresholds)
    cortex = cortical_ribbon(perf.masks.tissue, spacing) & perf.masks.tissue
    sinus = sinus_region(perf.masks.vessels, perf.vof.voxels_zyx)
    return lesion, cortex, sinus, spacing


def _voxel_ml(affine: np.ndarray) -> float:
    return float(abs(np.linalg.det(affine[:3, :3])) / 1000.0)


def _step(progress: Progress, name: str) -> None:
    log.info("stage: %s", name)
    if progress is not None:
        progress(name)


def _on_grid(mask, study: CTPStudy, perf: PerfusionResult | None):
    """Bring a user mask given on the study grid onto the map grid (nearest neighbour)."""
    if mask is None:
        return None
    m = np.asarray(mask)
    if perf is None:
        return m.astype(bool)
    return resample_to_grid(m.astype(np.float32), study.affine_ras, perf.cbf.shape, perf.affine_ras) > 0.5


def _provenance(meta: AcquisitionMeta, cfg: Config, spacing) -> dict[str, Any]:
    """PHI-free provenance: no patient name/ID/dates; series UIDs only as short hashes."""
    uid_hashes = [hashlib.sha256(u.encode()).hexdigest()[:12] for u in meta.series_instance_uids]
    return {
        "software_version": __version__,
        "manufacturer": meta.manufacturer, "model": meta.model, "kvp": meta.kvp,
        "series_description": meta.series_description, "series_numbers": meta.series_numbers,
        "series_uid_sha256_12": uid_hashes, "n_files_used": meta.n_files_used,
        "n_files_skipped_non_dicom": meta.n_files_skipped_non_dicom,
        "input_spacing_xyz_mm": list(meta.spacing_xyz_mm), "map_spacing_xyz_mm": list(spacing),
        "gantry_tilt_deg": meta.gantry_tilt_deg, "warnings": meta.warnings,
        "config": cfg.to_dict(),
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
                     load_progress: Callable[[int, int], None] | None = None) -> ModeAResult:
    """Mode A from a DICOM folder to a complete output folder (written atomically)."""
    from ctperf.dicom_io import load_ctp

    cfg = cfg or Config()
    check_output_dir(out_dir)
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
        write_outputs(result, out_dir, cfg, logbuf)
        result.stage_seconds["write"] = time.perf_counter() - t1
    return result


def write_outputs(result: ModeAResult, out_dir: str | Path, cfg: Config, logbuf: "_LogCapture | None" = None) -> Path:
    """Write maps, masks, metrics, curves, QA figures and log.txt; nothing appears in out_dir unless all succeed."""
    perf, lesion = result.perfusion, result.lesion
    with atomic_output_dir(out_dir) as tmp:
        for name, fname in MAP_FILES.items():
            save_volume(tmp / fname, getattr(perf, name), perf.affine_ras)
        for name, fname in MASK_FILES.items():
            save_volume(tmp / fname, getattr(lesion, name), perf.affine_ras, dtype=np.uint8)
        _write_aux(tmp, result)
        write_metrics(result.metrics, tmp)
        if cfg.output.write_qa_png or cfg.output.write_pdf:
            from ctperf import qa_plots, report

            if cfg.output.write_qa_png:
                qa_plots.write_qa_figures(perf, lesion, result.metrics, tmp / "qa")
            if cfg.output.write_pdf:
                report.write_summary_pdf(perf, lesion, result.metrics, tmp / "report.pdf")
        _write_log(tmp / "log.txt", result, cfg, logbuf)
    return Path(out_dir)


def _write_aux(tmp: Path, result: ModeAResult) -> None:
    perf = result.perfusion
    for curve, fname in ((perf.aif, "aif.csv"), (perf.vof, "vof.csv")):
        write_curve_csv(tmp / fname, curve)
    aux = tmp / AUX_DIR
    aux.mkdir()
    save_volume(aux / "tissue_mask.nii.gz", perf.masks.tissue, perf.affine_ras, dtype=np.uint8)
    save_volume(aux / "brain_mask.nii.gz", perf.masks.brain, perf.affine_ras, dtype=np.uint8)
    save_volume(aux / "cortex_mask.nii.gz", result.cortex, perf.affine_ras, dtype=np.uint8)
    if result.sinus is not None:
        save_volume(aux / "sinus_mask.nii.gz", result.sinus, perf.affine_ras, dtype=np.uint8)
    (aux / "midline.json").write_text(json.dumps({
        "normal_ras": perf.hemispheres.normal_ras.tolist(), "point_ras": perf.hemispheres.point_ras.tolist(),
        "aif_ttp_s": perf.aif.ttp_s, "vof_ttp_s": perf.vof.ttp_s, "reference_cbf": perf.reference_cbf,
        "qa_flags": result.metrics.get("qa_flags", {}), "qa_values": result.metrics.get("qa_values", {}),
        "provenance": result.metrics.get("provenance", {}),
    }, indent=2, allow_nan=False))


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
def recompute_outputs(out_dir: str | Path, cfg: Config) -> dict[str, Any]:
    """New thresholds on saved maps: rewrite the masks and metrics of a Mode A output folder (no deconvolution)."""
    out = Path(out_dir)
    needed = [out / MAP_FILES["tmax"], out / MAP_FILES["rcbf"], out / MAP_FILES["cbv"],
              out / AUX_DIR / "tissue_mask.nii.gz", out / AUX_DIR / "midline.json"]
    missing = [p.name for p in needed if not p.exists()]
    if missing:
        raise InputError(f"{out} is not a ctperf Mode A output folder (missing {', '.join(missing)})")
    tmax, aff = load_volume(out / MAP_FILES["tmax"])
    rcbf, _ = load_volume(out / MAP_FILES["rcbf"])
    cbv, _ = load_volume(out / MAP_FILES["cbv"])
    tissue = load_volume(out / AUX_DIR / "tissue_mask.nii.gz")[0] > 0.5
    brain = load_volume(out / AUX_DIR / "brain_mask.nii.gz")[0] > 0.5
    cortex = load_volume(out / AUX_DIR / "cortex_mask.nii.gz")[0] > 0.5
    sinus_p = out / AUX_DIR / "sinus_mask.nii.gz"
    sinus = load_volume(sinus_p)[0] > 0.5 if sinus_p.exists() else None
    info = json.loads((out / AUX_DIR / "midline.json").read_text())
    hemi = hemispheres_from_plane(brain, aff, np.array(info["normal_ras"]), np.array(info["point_ras"]))
    vox_ml = _voxel_ml(aff)
    lesion = lesion_masks(tmax, rcbf, tissue, vox_ml, cfg.thresholds)
    indices = compute_indices(IndexInputs(
        cbv=cbv, tmax_s=tmax, lesion=lesion, tissue=tissue, voxel_volume_ml=vox_ml, thresholds=cfg.thresholds,
        hemispheres=hemi, cortex=cortex, aif_ttp_s=info.get("aif_ttp_s"), vof_ttp_s=info.get("vof_ttp_s"),
        sinus=sinus))
    prov = dict(info.get("provenance", {}))
    prov["config"] = cfg.to_dict()
    prov["recomputed_from_saved_maps"] = True
    metrics = build_metrics(indices, mode="A", thresholds=cfg.thresholds, qa_flags=info.get("qa_flags"),
                            qa_values=info.get("qa_values"), provenance=prov)
    with atomic_output_dir(out, replace_files=True) as tmp:
        for name, fname in MASK_FILES.items():
            save_volume(tmp / fname, getattr(lesion, name), aff, dtype=np.uint8)
        write_metrics(metrics, tmp)
    return metrics


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
