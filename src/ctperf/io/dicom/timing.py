"""Frame times: which tag gives them, frame order without them, and the checks on the time axis."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ctperf.errors import DicomError
from ctperf.io.dicom.values import _unwrap_day

if TYPE_CHECKING:
    from ctperf.io.dicom.grouping import SeriesGroup
    from ctperf.io.dicom.scan import _Header

#: Plausible interval between CT perfusion time points (s); outside it the time axis is refused.
MIN_FRAME_INTERVAL_S, MAX_FRAME_INTERVAL_S = 0.3, 10.0
#: Timing sources, best first: (name, attribute of _Header).
_TIME_SOURCES = (
    ("AcquisitionDateTime", "t_acq_datetime"),
    ("AcquisitionTime", "t_acq_time"),
    ("ContentTime", "t_content_time"),
    ("TriggerTime", "t_trigger"),
    ("TemporalPositionIdentifier x TemporalResolution", "t_temporal"),
)


def _pick_time_source(hs: list[_Header], pos_ids: np.ndarray) -> tuple[str, np.ndarray] | None:
    """First timing source present on every file that varies between frames at the same position.

    Clock times (AcquisitionDateTime, AcquisitionTime, ContentTime) are used as seconds of the day and unwrapped
    modulo 24 h around the first file, which is midnight-safe even when a scanner keeps the study date on
    images acquired after midnight (valid while an acquisition lasts < 12 h). Returns (name, seconds per file).
    """
    multi = np.bincount(pos_ids)[pos_ids] > 1
    for name, attr in _TIME_SOURCES:
        vals = [getattr(h, attr) for h in hs]
        if any(v is None for v in vals):
            continue
        v = np.asarray(vals, dtype=float)
        if attr in ("t_acq_datetime", "t_acq_time", "t_content_time"):
            v = _unwrap_day(v, v[0])
        if not multi.any() or np.ptp(v[multi]) > 0:
            return name, v
    return None


def _frame_order_key(hs: list[_Header], pos_ids: np.ndarray) -> tuple[str, np.ndarray] | None:
    """Frame order without times: TemporalPositionIdentifier, AcquisitionNumber or InstanceNumber, the first one
    present on every file that differs between the files of each slice position. Returns (name, key per file)."""
    for name, attr in (("TemporalPositionIdentifier", "tpi"), ("AcquisitionNumber", "acquisition_number"),
                       ("InstanceNumber", "instance_number")):
        vals = [getattr(h, attr) for h in hs]
        if any(v is None for v in vals):
            continue
        key = np.asarray(vals, dtype=float)
        order = np.lexsort((key, pos_ids))
        same_pos = np.diff(pos_ids[order]) == 0
        if not np.any(same_pos & (np.diff(key[order]) == 0)):
            return name, key
    return None


def _check_time_axis(times: np.ndarray, source: str) -> None:
    """Frame times (t, z) must increase strictly at every slice and step by 0.3-10 s."""
    if len(times) < 2:
        return
    steps = np.diff(times, axis=0)
    if np.any(steps <= 0):
        t, z = np.argwhere(steps <= 0)[0]
        raise DicomError(
            f"frame times from {source} are not strictly increasing after sorting (frames {t} and {t + 1} of "
            f"slice {z} are {steps[t, z]:+.3f} s apart); the series mixes acquisitions or the time tag is wrong")
    lo, hi = float(steps.min()), float(steps.max())
    if lo < MIN_FRAME_INTERVAL_S or hi > MAX_FRAME_INTERVAL_S:
        raise DicomError(
            f"implausible sampling interval from {source}: time points {lo:.2f}-{hi:.2f} s apart (expected "
            f"{MIN_FRAME_INTERVAL_S:g}-{MAX_FRAME_INTERVAL_S:g} s); choose the series with --series or give the "
            "interval with --frame-interval if the time tags are wrong")


def time_gap_warning(times: np.ndarray) -> str | None:
    """A warning when frames seem to be missing: a step of the first slice's frame times more than 1.6 times both
    its neighbours' (an isolated gap, unlike a protocol that changes its sampling for good, e.g. 1 s then 3 s), or
    None.  A gap over the bolus lowers the sampled arterial peak and the maps lose what it held."""
    t = np.asarray(times, float)
    t = t[:, 0] if t.ndim == 2 else t
    steps = np.diff(t)
    if len(steps) < 3:
        return None
    gap = np.flatnonzero((steps[1:-1] > 1.6 * steps[:-2]) & (steps[1:-1] > 1.6 * steps[2:])) + 1
    if not len(gap):
        return None
    i = int(gap[np.argmax(steps[gap])])
    more = f" and {len(gap) - 1} more" if len(gap) > 1 else ""
    return (f"frames missing? the time axis jumps {steps[i]:.1f} s from {t[i]:.1f} s, between steps of "
            f"{steps[i - 1]:.1f} / {steps[i + 1]:.1f} s{more}; a gap over the bolus lowers the arterial peak "
            "and the maps")


def _order_frames(hs: list[_Header], pos_ids: np.ndarray, group: SeriesGroup, frame_interval_s: float | None,
                  warnings: list[str]) -> tuple[str, np.ndarray, np.ndarray, bool]:
    """(time source, time per file or None-equivalent, order key per file, times_from_interval)."""
    picked = _pick_time_source(hs, pos_ids)
    if picked is not None:
        source, t_all = picked
        if frame_interval_s is not None:
            warnings.append(f"--frame-interval {frame_interval_s:g} s ignored: frame times read from {source}")
        use_tpi = all(h.tpi is not None for h in hs)
        key = np.array([h.tpi for h in hs], dtype=float) if use_tpi else np.round(t_all, 3)
        if source == "ContentTime":
            warnings.append("frame times come from ContentTime, which is often the reconstruction time rather than "
                            "the acquisition time; check the time axis (AIF/VOF curves)")
        return source, t_all, key, False
    if frame_interval_s is None:
        raise DicomError(
            f"cannot determine frame times of '{group.description}': no AcquisitionDateTime, AcquisitionTime, "
            "ContentTime, TriggerTime or TemporalPositionIdentifier+TemporalResolution that differs between time "
            "points (removed by anonymisation?); give the sampling interval with --frame-interval SECONDS")
    ordered = _frame_order_key(hs, pos_ids)
    if ordered is None:
        raise DicomError(
            "--frame-interval needs a frame order, but no TemporalPositionIdentifier, AcquisitionNumber or "
            "InstanceNumber tells the time points of each slice apart")
    name, key = ordered
    warnings.append(f"no frame times in the files: frames ordered by {name}, {frame_interval_s:g} s apart "
                    "(--frame-interval); per-slice timing offsets are unknown")
    return f"--frame-interval ({frame_interval_s:g} s, order by {name})", np.zeros(len(hs)), key, True
