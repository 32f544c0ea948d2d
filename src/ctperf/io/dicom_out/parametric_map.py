"""One DICOM Parametric Map per perfusion map (float32 pixels, DCM quantity codes, UCUM units).

Pixels are the NIfTI map values exactly (float32, real-world value mapping slope 1, intercept 0). Voxels without a
value (NaN outside the analysed tissue) are stored as :data:`FLOAT_PADDING` and declared as the Float Pixel
Padding Value, which no map can take (all maps are >= 0), so a reader gets the NaN back.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ctperf.io.dicom_out._common import (
    MANUFACTURER,
    MODEL,
    SourceStudy,
    affine_from_frames,
    contributing_equipment,
    frame_geometry,
    mark_research,
    software_versions,
)

#: Stored value for voxels without a map value (NaN in the NIfTI map).
FLOAT_PADDING = -1.0


@dataclass(frozen=True)
class MapSpec:
    """How one map is coded: quantity (DCM), unit (UCUM), description and a default display window."""

    name: str
    code: tuple[str, str, str]  # (value, scheme, meaning)
    unit: tuple[str, str, str]
    label: str
    window: tuple[float, float]  # (centre, width)


#: Perfusion maps (ctperf key -> coding); codes from PS3.16 CID 7180/DCM, units UCUM.
MAPS: dict[str, MapSpec] = {
    "cbf": MapSpec("cbf", ("113055", "DCM", "Regional Cerebral Blood Flow"),
                   ("ml/[100]g/min", "UCUM", "milliliter per 100 gram per minute"), "CBF", (40.0, 80.0)),
    "cbv": MapSpec("cbv", ("113056", "DCM", "Regional Cerebral Blood Volume"),
                   ("ml/[100]g", "UCUM", "milliliter per 100 gram"), "CBV", (3.0, 6.0)),
    "mtt": MapSpec("mtt", ("113052", "DCM", "Mean Transit Time"), ("s", "UCUM", "second"), "MTT", (6.0, 12.0)),
    "tmax": MapSpec("tmax", ("113084", "DCM", "Tmax"), ("s", "UCUM", "second"), "TMAX", (6.0, 12.0)),
    "ttp": MapSpec("ttp", ("113069", "DCM", "Time To Peak"), ("s", "UCUM", "second"), "TTP", (20.0, 40.0)),
    "rcbf": MapSpec("rcbf", ("126397", "DCM", "Relative Regional Blood Flow"), ("1", "UCUM", "no units"), "RCBF",
                    (0.6, 1.2)),
}


def build_parametric_map(values_zyx: np.ndarray, affine_ras: np.ndarray, spec: MapSpec, source: SourceStudy, *,
                         series_number: int, instance_number: int = 1):
    """Build a highdicom ``ParametricMap`` of one map.

    Parameters
    ----------
    values_zyx : array (z, y, x)
        Map values in the unit of ``spec`` (NaN = no value).
    affine_ras : (4, 4) array
        Voxel (x, y, z) -> RAS affine of the map grid (sheared for a gantry tilt; see :mod:`._common`).
    spec : MapSpec
    source : SourceStudy
        Source CT headers: patient/study modules, frame of reference and the referenced source images.
    series_number, instance_number : int

    Returns
    -------
    highdicom.pm.ParametricMap
        New series and SOP instance UIDs, in the source study and frame of reference, RESEARCH qualified.
    """
    import highdicom as hd
    from highdicom.pm import ParametricMap, RealWorldValueMapping

    vals = np.asarray(values_zyx, np.float32)
    finite = np.isfinite(vals)
    pixels = np.where(finite, vals, np.float32(FLOAT_PADDING)).astype(np.float32)
    lo, hi = (float(vals[finite].min()), float(vals[finite].max())) if finite.any() else (0.0, 0.0)
    unit = hd.sr.CodedConcept(*spec.unit)
    quantity = hd.sr.CodedConcept(*spec.code)
    rwvm = RealWorldValueMapping(lut_label=spec.label, lut_explanation=f"{spec.code[2]} ({spec.unit[0]})",
                                 unit=unit, value_range=(min(lo, 0.0), max(hi, 0.0)), slope=1.0, intercept=0.0,
                                 quantity_definition=quantity)
    measures, orient, positions = frame_geometry(affine_ras, vals.shape[0]).highdicom()
    pm = ParametricMap(
        source_images=source.datasets, pixel_array=pixels, series_instance_uid=hd.UID(),
        series_number=series_number, sop_instance_uid=hd.UID(), instance_number=instance_number,
        manufacturer=MANUFACTURER, manufacturer_model_name=MODEL, software_versions=software_versions(),
        device_serial_number="0", contains_recognizable_visual_features=False, real_world_value_mappings=[rwvm],
        voi_lut_transformations=[hd.VOILUTTransformation(window_center=spec.window[0],
                                                         window_width=spec.window[1])],
        content_label=spec.label,
        content_description=f"ctperf {spec.code[2]} (research use only)", pixel_measures=measures,
        plane_orientation=orient, plane_positions=positions, content_qualification="RESEARCH",
        contributing_equipment=contributing_equipment())
    pm.FloatPixelPaddingValue = FLOAT_PADDING
    pm.FloatPixelPaddingRangeLimit = FLOAT_PADDING  # a one-value range: dciodvfy requires the pair
    mark_research(pm)
    pm.SeriesDescription = f"ctperf {spec.label} (research)"
    return pm


def write_parametric_maps(maps: dict[str, np.ndarray], affine_ras: np.ndarray, source: SourceStudy, out_dir: Path,
                          next_series) -> list[Path]:
    """Write ``pm_<name>.dcm`` for every map in :data:`MAPS` present in ``maps``; returns the paths."""
    paths = []
    for name, spec in MAPS.items():
        if name not in maps:
            continue
        pm = build_parametric_map(maps[name], affine_ras, spec, source, series_number=next_series())
        path = out_dir / f"pm_{name}.dcm"
        pm.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def read_parametric_map(path: str | Path) -> tuple[np.ndarray, np.ndarray, str]:
    """Read a ctperf Parametric Map back as ((z, y, x) float32 with NaN restored, RAS affine, quantity code)."""
    from pydicom import dcmread

    ds = dcmread(path)
    data = np.asarray(ds.pixel_array, np.float32).reshape(int(ds.NumberOfFrames), ds.Rows, ds.Columns)
    pad = ds.get("FloatPixelPaddingValue")
    if pad is not None:
        data = np.where(data == np.float32(pad), np.float32(np.nan), data)
    shared = ds.SharedFunctionalGroupsSequence[0]
    iop = shared.PlaneOrientationSequence[0].ImageOrientationPatient
    spacing = shared.PixelMeasuresSequence[0].PixelSpacing
    pos = np.array([f.PlanePositionSequence[0].ImagePositionPatient for f in ds.PerFrameFunctionalGroupsSequence],
                   float)
    normal = np.cross(np.asarray(iop[:3], float), np.asarray(iop[3:], float))
    order = np.argsort(pos @ normal, kind="stable")
    code = ds.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0].QuantityDefinitionSequence[0]
    return data[order], affine_from_frames(iop, spacing, pos[order]), str(code.ConceptCodeSequence[0].CodeValue)
