"""Find and load the CT perfusion acquisition in a real-world DICOM folder.

Pipeline
--------
1. **Scan** every file below the folder (any names, any depth). Headers are parsed without pixel data
   (``stop_before_pixels``); files that are not DICOM are skipped and counted. The byte offset of each file's
   PixelData element is remembered so native (uncompressed) pixels can later be read with one ``seek``.
2. **Group** image files by Study + FrameOfReference + orientation + matrix + pixel spacing + slice
   thickness (scanners may give every time point its own SeriesInstanceUID). Inside such a key, multi-phase
   series stand alone; single-phase series with (nearly) the same slice positions are merged.
3. **Choose** the CT perfusion group: many slice positions each repeated over >= 5 time points (localizers
   and single-phase series never qualify), or the group holding ``series=`` (a SeriesInstanceUID or a
   SeriesNumber).
4. **Order** slices by ImagePositionPatient projected on the slice normal (cross product of the
   ImageOrientationPatient vectors) and frames by TemporalPositionIdentifier or acquisition time; build
   ``times_s[t, z]`` from the best timing tags (midnight-safe) and the voxel -> RAS affine (sheared for a
   gantry tilt).
5. **Decode** only the chosen files, straight into one preallocated float32 ``(t, z, y, x)`` array, applying
   every file's own RescaleSlope/Intercept; PixelPaddingValue (and PixelPaddingRangeLimit) become the
   ``outside_fov`` mask, where HU is set to -1024.

All user-input problems raise :class:`ctperf.errors.DicomError` with a one-line message. Nothing returned here
contains patient identifiers (name, ID, birth date).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ctperf.core.grid import bin_factor_for, binned_affine
from ctperf.core.types import CTPStudy
from ctperf.errors import DicomError
from ctperf.io.dicom.grouping import (
    EQUALLY_PLAUSIBLE_FRACTION,
    MIN_TIMEPOINTS,
    POSITION_TOL_MM,
    FolderScan,
    SeriesGroup,
    scan_folder,
)
from ctperf.io.dicom.pixels import OUTSIDE_FOV_HU, _decode_into
from ctperf.io.dicom.plan import SLICE_STEP_TOL, _meta, _prepare
from ctperf.io.dicom.timing import MAX_FRAME_INTERVAL_S, MIN_FRAME_INTERVAL_S

__all__ = ["load_ctp", "scan_folder", "inspect_folder", "FolderScan", "SeriesGroup", "MIN_TIMEPOINTS",
           "POSITION_TOL_MM", "OUTSIDE_FOV_HU", "MIN_FRAME_INTERVAL_S", "MAX_FRAME_INTERVAL_S",
           "EQUALLY_PLAUSIBLE_FRACTION", "SLICE_STEP_TOL"]


def load_ctp(dicom_dir, series: str | None = None, progress: Callable[[int, int], None] | None = None, *,
             frame_interval_s: float | None = None, bin_to_pixel_mm: float | None = None,
             bin_above_bytes: int = 0, workers: int | None = None) -> CTPStudy:
    """Find the CT perfusion acquisition in ``dicom_dir`` and load it.

    Parameters
    ----------
    dicom_dir : path
        Folder searched recursively (any file names; non-DICOM files are skipped and counted).
    series : str, optional
        Force a SeriesInstanceUID, a SeriesNumber (digits) or a unique prefix of a SeriesInstanceUID. The
        whole acquisition group containing that series is loaded (e.g. all one-series-per-time-point series).
        Error if not found or ambiguous. Without it, a folder with two equally plausible CT perfusion
        acquisitions is refused (the message lists the ``series`` value of each).
    progress : callable(n_done, n_total), optional
        Called while decoding pixels (from the calling thread).
    frame_interval_s : float, optional
        Sampling interval (s, 0.3-10) for studies whose time tags were removed: frames are then ordered by
        TemporalPositionIdentifier, AcquisitionNumber or InstanceNumber. Ignored (with a warning) when the
        files carry usable times.
    bin_to_pixel_mm, bin_above_bytes : optional
        When the native float32 4D array would exceed ``bin_above_bytes``, every slice is block-averaged
        in-plane while it is decoded, by the integer factor closest to ``bin_to_pixel_mm`` / native pixel
        (the affine is that of the block centres). Keeps whole-brain studies within laptop memory.
    workers : int, optional
        CPU threads for decoding (None = all cores).

    Raises
    ------
    DicomError
        Missing/unreadable folder, no or ambiguous CT perfusion, incomplete or inconsistent acquisition,
        implausible time axis (not strictly increasing, steps outside 0.3-10 s), missing times without
        ``frame_interval_s``, unevenly spaced slices (gaps, multi-slab series), undecodable pixels.

    Returns
    -------
    CTPStudy
        ``hu`` float32 (t, z, y, x) in HU (-1024 outside the field of view), ``times_s`` (t, z) seconds from
        the first frame's first slice, ``affine_ras`` voxel (x, y, z) -> RAS mm, PHI-free ``meta`` and
        ``outside_fov`` (z, y, x) bool or None when the files carry no pixel padding.
    """
    scan, group, plan = _prepare(dicom_dir, series, frame_interval_s)
    h0 = plan.frames[0][0]
    n_t, n_z = len(plan.frames), len(plan.frames[0])
    factor, affine = 1, plan.affine_ras
    if bin_to_pixel_mm and 4 * n_t * n_z * h0.rows * h0.cols > bin_above_bytes:
        factor = bin_factor_for(plan.affine_ras, bin_to_pixel_mm)
    meta = _meta(scan, group, plan)
    if factor > 1:
        affine = binned_affine(plan.affine_ras, factor)
        meta.extra["binned_on_load"] = factor
        meta.warnings.append(f"large study ({h0.cols}x{h0.rows}x{n_z}x{n_t}): slices block-averaged {factor}x{factor} "
                             "in-plane while reading to save memory")
    shape = (n_t, n_z, h0.rows // factor, h0.cols // factor)
    try:
        hu = np.empty(shape, dtype=np.float32)
    except MemoryError:
        raise DicomError(f"not enough memory for a {shape[3]}x{shape[2]}x{n_z}x{n_t} float32 array") from None
    outside = _decode_into(plan, hu, progress, bin_factor=factor, workers=workers)
    return CTPStudy(hu=hu, times_s=plan.times_s.astype(float), affine_ras=affine, meta=meta, outside_fov=outside)


def inspect_folder(dicom_dir, series: str | None = None, *, frame_interval_s: float | None = None) -> dict:
    """Describe the folder and its CT perfusion acquisition from headers only (no pixel decoding).

    Returns a strict-JSON-able dict: ``shape_xyzt`` [x, y, z, t], ``frame_times_s`` (first slice, from 0),
    ``affine_ras`` (4x4 list), ``spacing_xyz_mm``, ``gantry_tilt_deg``, ``series_instance_uids``,
    ``series_numbers``, ``series_description``, ``manufacturer``, ``model``, ``kvp``, ``transfer_syntaxes``,
    ``time_source``, ``warnings``, ``n_files_total``, ``skipped`` (counts by reason) and ``series``: one row per
    image group found (description, modality, n_files, n_slices, n_timepoints, is_ctp, ...).
    No patient identifiers are included. Raises DicomError when no usable CT perfusion is found.
    """
    scan, group, plan = _prepare(dicom_dir, series, frame_interval_s)
    meta = _meta(scan, group, plan)
    rows = []
    for g in scan.groups:
        r = g.row()
        r["is_ctp"] = g is group
        if g is group:
            r["excluded_reason"] = None
        elif r["is_ctp"] is False and scan.groups.index(g) == scan.ctp_index:
            r["excluded_reason"] = "not the series chosen with --series"
        rows.append(r)
    n_t, n_z = len(plan.frames), len(plan.frames[0])
    h0 = plan.frames[0][0]

    def clean(x):
        return None if x is None or not np.isfinite(x) else float(x)

    return {
        "shape_xyzt": [h0.cols, h0.rows, n_z, n_t],
        "frame_times_s": [round(float(v), 6) for v in (plan.times_s[:, 0] - plan.times_s[0, 0])],
        "affine_ras": [[float(v) for v in row] for row in plan.affine_ras],
        "spacing_xyz_mm": [float(v) for v in plan.spacing_xyz],
        "gantry_tilt_deg": float(plan.tilt_deg),
        "series_instance_uids": meta.series_instance_uids,
        "series_numbers": meta.series_numbers,
        "series_description": meta.series_description,
        "manufacturer": meta.manufacturer,
        "model": meta.model,
        "kvp": clean(meta.kvp),
        "transfer_syntaxes": meta.transfer_syntaxes,
        "time_source": plan.time_source,
        "n_duplicate_frames_dropped": plan.n_duplicates,
        "warnings": meta.warnings,
        "n_files_total": scan.n_files_total,
        "skipped": dict(scan.skipped),
        "unreadable_files": meta.extra["unreadable_files"],
        "series": rows,
    }
