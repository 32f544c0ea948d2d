"""Headers -> plan: (t, z) file table, frame times, voxel -> RAS affine and the PHI-free acquisition record."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ctperf.core.types import AcquisitionMeta
from ctperf.errors import DicomError
from ctperf.io.dicom.grouping import (
    MIN_TIMEPOINTS,
    FolderScan,
    SeriesGroup,
    _check_consistency,
    _is_ctp_candidate,
    _position_ids,
    _select,
    scan_folder,
)
from ctperf.io.dicom.scan import _Header
from ctperf.io.dicom.timing import (MAX_FRAME_INTERVAL_S, MIN_FRAME_INTERVAL_S, _check_time_axis, _order_frames,
                                   time_gap_warning)

#: Slice steps may differ from the end-to-end mean by this fraction of a step; more is refused (gap, jog slabs).
SLICE_STEP_TOL = 0.1


@dataclass
class _Plan:
    frames: list[list[_Header]]  # [t][z]
    times_s: np.ndarray  # (t, z)
    affine_ras: np.ndarray
    spacing_xyz: tuple[float, float, float]
    tilt_deg: float
    time_source: str
    warnings: list[str]
    n_duplicates: int


def _slice_geometry(f0: list[_Header], warnings: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row direction, column direction, slice step) in LPS of one time point's slices (sorted along the normal).

    Refuses slice positions that one affine cannot describe: gaps, overlaps or unequal steps of more than
    ``SLICE_STEP_TOL`` of a step (e.g. two slabs of a jog/toggle acquisition in one series).
    """
    iop = np.asarray(f0[0].iop)
    row_dir, col_dir = iop[:3] / np.linalg.norm(iop[:3]), iop[3:] / np.linalg.norm(iop[3:])
    normal = np.cross(row_dir, col_dir)
    normal /= np.linalg.norm(normal)
    ipps = np.array([h.ipp for h in f0])
    n_z = len(f0)
    if n_z == 1:
        return row_dir, col_dir, normal * (f0[0].thickness or 1.0)
    steps = np.diff(ipps, axis=0)
    d = steps @ normal
    typical = float(np.median(d))
    step = (ipps[-1] - ipps[0]) / (n_z - 1)
    dev = float(np.linalg.norm(steps - step, axis=1).max())
    if dev > SLICE_STEP_TOL * np.linalg.norm(step):
        breaks = np.flatnonzero(np.abs(d - typical) > SLICE_STEP_TOL * abs(typical))
        edges = [0, *(breaks + 1), n_z]
        slabs = [(float(ipps[a] @ normal), float(ipps[b - 1] @ normal)) for a, b in zip(edges[:-1], edges[1:])
                 if b > a]
        desc = ", ".join(f"{a:.1f} to {b:.1f} mm" for a, b in slabs[:4])
        raise DicomError(
            f"slice positions are not evenly spaced ({d.min():.2f} to {d.max():.2f} mm between neighbours, "
            f"typically {typical:.2f} mm; slabs at {desc}): slices are missing, or this is a multi-slab (jog/toggle) "
            "acquisition stored as one series, which one affine cannot describe; export each slab as its own "
            "series and choose it with --series")
    if dev > 0.01 * np.linalg.norm(step):
        warnings.append(f"slightly uneven slice spacing ({d.min():.2f}-{d.max():.2f} mm, within "
                        f"{100 * SLICE_STEP_TOL:g} % of a step); the affine uses the end-to-end spacing")
    return row_dir, col_dir, step


def _make_plan(group: SeriesGroup, min_timepoints: int, frame_interval_s: float | None = None) -> _Plan:
    """Order the group's files into (t, z), derive the frame times and the voxel -> RAS affine (headers only).

    Slices are ordered along the normal, frames by TemporalPositionIdentifier or time (or, with
    ``frame_interval_s`` and no time tags, by acquisition/instance number); exact duplicates are dropped; the
    time axis must increase strictly with a plausible step; the slices must be evenly spaced.
    """
    hs = sorted(group.headers, key=lambda h: h.path)
    pos_ids, centres = _position_ids(hs)
    n_z = len(centres)
    warnings: list[str] = []
    if np.bincount(pos_ids).max() == 1:
        raise DicomError(
            f"series '{group.description}' has a single time point ({n_z} slices); a CT perfusion acquisition "
            "needs repeated time points"
        )
    if frame_interval_s is not None and not MIN_FRAME_INTERVAL_S <= frame_interval_s <= MAX_FRAME_INTERVAL_S:
        raise DicomError(f"--frame-interval {frame_interval_s:g} is outside the plausible "
                         f"{MIN_FRAME_INTERVAL_S:g}-{MAX_FRAME_INTERVAL_S:g} s")
    time_source, t_all, order_key, from_interval = _order_frames(hs, pos_ids, group, frame_interval_s, warnings)

    # sort by (position, order key); drop duplicates (same position and same key)
    idx = np.lexsort((order_key, pos_ids))
    dup = np.zeros(len(hs), dtype=bool)
    same = (np.diff(pos_ids[idx]) == 0) & (np.diff(order_key[idx]) == 0)
    dup[idx[1:][same]] = True
    n_dup = int(dup.sum())
    if n_dup:
        example = Path(hs[int(np.flatnonzero(dup)[0])].path).name
        warnings.append(f"dropped {n_dup} duplicate frame(s) with the same slice position and time (e.g. {example})")
    keep = idx[~dup[idx]]
    counts = np.bincount(pos_ids[keep], minlength=n_z)
    n_t = int(counts.max())
    if n_t < min_timepoints:
        raise DicomError(
            f"series '{group.description}' has only {n_t} time points; at least {min_timepoints} are needed"
        )
    if (counts != n_t).any():
        bad = np.flatnonzero(counts != n_t)
        raise DicomError(
            f"incomplete acquisition: {len(bad)} of {n_z} slice positions have fewer than {n_t} time points "
            f"(e.g. {counts[bad[0]]} at {centres[bad[0]]:.1f} mm); a time point is missing slices"
        )
    table = keep.reshape(n_z, n_t).T  # [t, z] indices into hs (positions ascending along the normal)
    frames = [[hs[i] for i in row] for row in table]
    if from_interval:
        times = np.repeat((np.arange(n_t) * float(frame_interval_s))[:, None], n_z, axis=1)
    else:
        times = t_all[table]
        times = times - times[0, 0]
    _check_time_axis(times, time_source)
    if (gap := time_gap_warning(times)) is not None:
        warnings.append(gap)

    # geometry from the first time point (LPS), then LPS -> RAS
    f0 = frames[0]
    row_dir, col_dir, step = _slice_geometry(f0, warnings)
    normal = np.cross(row_dir, col_dir)
    dy, dx = f0[0].spacing
    lps = np.eye(4)
    lps[:3, 0] = row_dir * dx
    lps[:3, 1] = col_dir * dy
    lps[:3, 2] = step
    lps[:3, 3] = f0[0].ipp
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    dz = abs(float(step @ normal))
    geom_tilt = float(np.degrees(np.arccos(min(1.0, dz / np.linalg.norm(step)))))
    header_tilt = f0[0].tilt
    tilt = header_tilt if header_tilt else (geom_tilt if geom_tilt > 0.01 else 0.0)
    if geom_tilt > 0.01:
        warnings.append(
            f"gantry tilt {tilt:g} deg: the affine is sheared (non-orthogonal) so voxel world positions are exact; "
            "tools that assume orthogonal voxels may resample"
        )
    return _Plan(frames, times, affine, (float(dx), float(dy), dz), float(tilt), time_source, warnings, n_dup)


def _excluded_rows(scan: FolderScan, group: SeriesGroup) -> list[dict]:
    """PHI-free list of the groups not analysed and why (for metrics provenance and the log)."""
    return [{"series_numbers": g.series_numbers, "description": g.description, "n_files": g.n_files,
             "reason": g.excluded_reason or "not selected"} for g in scan.groups if g is not group]


def _excluded_candidates(scan: FolderScan, group: SeriesGroup) -> list[dict]:
    """Other plausible CT perfusion acquisitions (>= MIN_TIMEPOINTS time points) not analysed, PHI-free."""
    return [{"series_numbers": g.series_numbers, "series_option": g.series_option, "description": g.description,
             "n_slices": g.n_slices, "n_timepoints": g.n_timepoints,
             "reason": g.excluded_reason or "not the series chosen with --series"}
            for g in scan.groups if g is not group and _is_ctp_candidate(g)]


def _meta(scan: FolderScan, group: SeriesGroup, plan: _Plan) -> AcquisitionMeta:
    h0 = plan.frames[0][0]
    used = [h for row in plan.frames for h in row]
    uids = list(dict.fromkeys(h.series_uid for h in used))
    numbers = list(dict.fromkeys(h.series_number for h in used if h.series_number is not None))
    warnings = list(plan.warnings)
    # series of the same geometry split off by protocol or cadence are worth a warning; the rest is routine
    for g in scan.groups:
        if g is not group and g.note:
            warnings.append(f"excluded series #{','.join(map(str, g.series_numbers)) or '?'} "
                            f"'{g.description}': {g.note}")
    note = scan.problem_note()
    if note:
        warnings.append(f"{note}; they were skipped")
    return AcquisitionMeta(
        manufacturer=h0.manufacturer,
        model=h0.model,
        kvp=h0.kvp,
        series_description=h0.series_description,
        series_instance_uids=uids,
        series_numbers=numbers,
        study_instance_uid=h0.study_uid,
        spacing_xyz_mm=plan.spacing_xyz,
        gantry_tilt_deg=plan.tilt_deg,
        transfer_syntaxes=sorted({h.transfer_syntax for h in used}),
        n_files_used=len(used),
        n_files_skipped_non_dicom=scan.skipped.get("non_dicom", 0),
        n_duplicate_frames_dropped=plan.n_duplicates,
        warnings=warnings,
        excluded_candidates=_excluded_candidates(scan, group),
        extra={
            "time_source": plan.time_source,
            "slice_thickness_mm": h0.thickness,
            "n_files_total": scan.n_files_total,
            "skipped": dict(scan.skipped),
            "unreadable_files": {k: v[:20] for k, v in scan.problems.items()},
            "n_groups": len(scan.groups),
            "excluded_series": _excluded_rows(scan, group),
        },
    )


def _prepare(dicom_dir, series: str | None, frame_interval_s: float | None = None):
    scan = scan_folder(dicom_dir)
    group = _select(scan, series)
    try:
        _check_consistency(scan, group)
        plan = _make_plan(group, min_timepoints=2 if series is not None else MIN_TIMEPOINTS,
                          frame_interval_s=frame_interval_s)
    except DicomError as exc:
        note = scan.problem_note()
        if note:  # the real cause is often a file that could not be read
            raise DicomError(f"{exc}; {note}") from None
        raise
    return scan, group, plan
