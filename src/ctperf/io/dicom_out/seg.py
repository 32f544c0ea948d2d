"""DICOM Segmentation (binary) with the lesion masks: core, penumbra and hypoperfusion (one segment each).

Segment numbers are fixed (:data:`SEGMENTS`) so the Structured Report and other tools can reference them. The
frames use the map grid's exact geometry (see :mod:`._common`), so the SEG overlays the Parametric Maps and the
source CT.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ctperf.io.dicom_out._common import (
    MANUFACTURER,
    MODEL,
    SourceStudy,
    algorithm_identification,
    contributing_equipment,
    frame_geometry,
    mark_research,
    software_versions,
)


@dataclass(frozen=True)
class SegmentSpec:
    number: int
    key: str  # LesionMasks attribute
    label: str
    property_type: tuple[str, str, str]
    description: str


_CATEGORY = ("49755003", "SCT", "Morphologically abnormal structure")
#: Segments of the lesion SEG (number -> mask).
SEGMENTS: tuple[SegmentSpec, ...] = (
    SegmentSpec(1, "core", "core", ("55641003", "SCT", "Infarct"),
                "ischaemic core: rCBF below the core threshold (see metrics thresholds)"),
    SegmentSpec(2, "penumbra", "penumbra", ("52674009", "SCT", "Ischemia"),
                "penumbra: hypoperfused tissue outside the core"),
    SegmentSpec(3, "hypoperfusion", "hypoperfusion", ("TMAXHYPO", "99CTPERF", "Hypoperfusion (Tmax threshold)"),
                "hypoperfusion: Tmax above the hypoperfusion threshold"),
)


def build_segmentation(masks: dict[str, np.ndarray], affine_ras: np.ndarray, source: SourceStudy, *,
                       series_number: int, instance_number: int = 1, unmeasured: tuple[str, ...] = ()):
    """Build a binary highdicom ``Segmentation`` of the lesion masks.

    Parameters
    ----------
    masks : dict of bool arrays (z, y, x)
        ``core``, ``penumbra`` and ``hypoperfusion`` on the map grid.
    affine_ras : (4, 4) array
        Voxel (x, y, z) -> RAS affine of the map grid.
    source : SourceStudy
    series_number, instance_number : int
    unmeasured : tuple of str
        Keys of the masks that could not be measured (their volume is null in metrics.json, e.g. the core and the
        penumbra below the contrast-to-noise limit): their (empty) segments are labelled "<label> (not measured)".

    Returns
    -------
    highdicom.seg.Segmentation
        RESEARCH qualified; every segment carries the ctperf AlgorithmIdentificationSequence. Empty segments
        are kept (a zero core is a result; an unmeasured one says so in its label).
    """
    import highdicom as hd
    from highdicom.seg import Segmentation, SegmentDescription

    algo = algorithm_identification()
    descs = [SegmentDescription(
        segment_number=s.number, segment_label=f"{s.label} (not measured)" if s.key in unmeasured else s.label,
        segmented_property_category=hd.sr.CodedConcept(*_CATEGORY),
        segmented_property_type=hd.sr.CodedConcept(*s.property_type), algorithm_type="AUTOMATIC",
        algorithm_identification=algo) for s in SEGMENTS]
    stack = np.stack([np.asarray(masks[s.key], bool) for s in SEGMENTS], axis=-1)  # (z, y, x, segments)
    measures, orient, positions = frame_geometry(affine_ras, stack.shape[0]).highdicom()
    seg = Segmentation(
        source_images=source.datasets, pixel_array=stack.astype(np.uint8), segmentation_type="BINARY",
        segment_descriptions=descs, series_instance_uid=hd.UID(), series_number=series_number,
        sop_instance_uid=hd.UID(), instance_number=instance_number, manufacturer=MANUFACTURER,
        manufacturer_model_name=MODEL, software_versions=software_versions(), device_serial_number="0",
        pixel_measures=measures, plane_orientation=orient, plane_positions=positions,
        content_label="LESIONS", content_description="ctperf lesion masks (research use only)",
        omit_empty_frames=False, contributing_equipment=contributing_equipment())
    seg.SeriesDescription = "ctperf lesions (research)"
    mark_research(seg)
    return seg


def write_segmentation(masks: dict[str, np.ndarray], affine_ras: np.ndarray, source: SourceStudy, out_dir: Path,
                       next_series, unmeasured: tuple[str, ...] = ()):
    """Write ``seg_lesions.dcm``; returns (path, dataset)."""
    seg = build_segmentation(masks, affine_ras, source, series_number=next_series(), unmeasured=unmeasured)
    path = out_dir / "seg_lesions.dcm"
    seg.save_as(path, enforce_file_format=True)
    return path, seg


def read_segmentation(path: str | Path) -> dict[str, np.ndarray]:
    """Read the lesion SEG back as {key: bool (z, y, x)}, frames ordered along the slice normal."""
    from pydicom import dcmread

    ds = dcmread(path)
    frames = np.asarray(ds.pixel_array).reshape(int(ds.NumberOfFrames), ds.Rows, ds.Columns).astype(bool)
    iop = np.asarray(ds.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient, float)
    normal = np.cross(iop[:3], iop[3:])
    per = ds.PerFrameFunctionalGroupsSequence
    seg_no = np.array([int(f.SegmentIdentificationSequence[0].ReferencedSegmentNumber) for f in per])
    height = np.array([np.asarray(f.PlanePositionSequence[0].ImagePositionPatient, float) @ normal for f in per])
    out = {}
    for s in SEGMENTS:
        sel = np.flatnonzero(seg_no == s.number)
        out[s.key] = frames[sel[np.argsort(height[sel], kind="stable")]]
    return out
