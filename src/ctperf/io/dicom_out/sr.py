"""TID 1500 Measurement Report (Comprehensive 3D SR): lesion volumes and the research indices.

* One volumetric group (TID 1411) per SEG segment (core, penumbra, hypoperfusion) with its volume in mL,
  referencing the segment of the lesion SEG and the source CT series.
* One group (TID 1501) with the indices of ``metrics.json`` that have a value; indices that are null (with a
  reason in metrics.json) are left out. Indices without a standard code use the private scheme ``99CTPERF``
  (:data:`INDEX_CODES`: code value and meaning per metrics key; definitions in docs/definitions.md under the
  metrics key's name).

Every measurement carries the ctperf algorithm identification (name and version).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ctperf import __version__
from ctperf.io.dicom_out._common import (
    MANUFACTURER,
    MODEL,
    SourceStudy,
    contributing_equipment,
    mark_research,
)
from ctperf.io.dicom_out.seg import SEGMENTS

_VOLUME = ("118565006", "SCT", "Volume")
_UCUM = {"mL": ("ml", "UCUM", "milliliter"), "s": ("s", "UCUM", "second"), "1": ("1", "UCUM", "no units")}
#: metrics.json key -> (code value, meaning) in the private scheme 99CTPERF; the Tmax level volumes
#: (``tmax<L>_ml``, every level of the run) are coded by :func:`tmax_level_code`.
INDEX_CODES: dict[str, tuple[str, str]] = {
    "mismatch_volume_ml": ("MISMATCHVOL", "Mismatch volume"),
    "Mismatch_Ratio": ("MISMATCHRATIO", "Mismatch ratio"),
    "HIR": ("HIR", "Hypoperfusion intensity ratio"),
    "Corrected_CBV_Index": ("CBVIDXCORR", "Corrected CBV index"),
    "CBV_Index_contra_hemisphere": ("CBVIDXCONTRA", "CBV index, contralateral hemisphere"),
    "CBV_Index_mirror": ("CBVIDXMIRROR", "CBV index, mirrored region"),
    "Conventional_CBV_Index": ("CBVIDXCONV", "Conventional CBV index"),
    "aif_ttp_s": ("AIFTTP", "Arterial input time to peak"),
    "vof_ttp_s": ("VOFTTP", "Venous output time to peak"),
    "PVT_sec": ("PVT", "Prolonged venous transit time"),
    "sinus_tmax_s": ("SINUSTMAX", "Sinus Tmax"),
}
_VOLUME_KEYS = {"core": "core_ml", "penumbra": "penumbra_ml", "hypoperfusion": "hypoperfusion_ml"}
_TMAX_KEY = re.compile(r"tmax(\d+(?:\.\d+)?)_ml")
_TMAX_CODE = re.compile(r"TMAX(\d+(?:\.\d+)?)VOL")


def tmax_level_code(key: str) -> tuple[str, str] | None:
    """(code value, meaning) of a Tmax level volume ``tmax<L>_ml`` (tissue with Tmax >= L s, as in metrics.json;
    ASCII ">=", the SR's character set), or None for another key."""
    m = _TMAX_KEY.fullmatch(key)
    return None if m is None else (f"TMAX{m.group(1)}VOL", f"Volume Tmax >= {m.group(1)} s")


def _index_codes(metrics: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """The coded indices of one metrics document: its Tmax level volumes, then :data:`INDEX_CODES`."""
    levels = {key: code for key in metrics if (code := tmax_level_code(key)) is not None}
    return {**levels, **INDEX_CODES}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def build_report(metrics: dict[str, Any], seg, source: SourceStudy, *, series_number: int,
                 instance_number: int = 1):
    """Build the TID 1500 ``Comprehensive3DSR``.

    Parameters
    ----------
    metrics : dict
        The strict-JSON metrics document (``metrics.json``); volumes in mL, indices in the units of
        ``metrics["units"]``.
    seg : highdicom.seg.Segmentation
        The lesion SEG (:func:`ctperf.io.dicom_out.seg.build_segmentation`), referenced by segment.
    source : SourceStudy
    series_number, instance_number : int
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    algo = hd.sr.AlgorithmIdentification(name="ctperf", version=__version__)
    units = metrics.get("units", {})
    groups = []
    for spec in SEGMENTS:
        value = _number(metrics.get(_VOLUME_KEYS[spec.key]))
        measurements = [] if value is None else [hd.sr.Measurement(
            name=hd.sr.CodedConcept(*_VOLUME), value=value, unit=hd.sr.CodedConcept(*_UCUM["mL"]),
            algorithm_id=algo)]
        groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=f"ctperf {spec.label}"),
            referenced_segment=hd.sr.ReferencedSegment.from_segmentation(seg, segment_number=spec.number),
            finding_type=hd.sr.CodedConcept(*spec.property_type), algorithm_id=algo, measurements=measurements))
    index_measurements = []
    for key, (code, meaning) in _index_codes(metrics).items():
        value, unit = _number(metrics.get(key)), _UCUM.get(units.get(key, ""))
        if value is not None and unit is not None:
            index_measurements.append(hd.sr.Measurement(
                name=hd.sr.CodedConcept(code, "99CTPERF", meaning), value=value, unit=hd.sr.CodedConcept(*unit),
                algorithm_id=algo))
    groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="ctperf indices"),
        finding_type=hd.sr.CodedConcept("CTPINDICES", "99CTPERF", "CT perfusion research indices"),
        algorithm_id=algo, measurements=index_measurements))
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=hd.UID(), name="ctperf", manufacturer_name=MANUFACTURER, model_name=MODEL))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.LN.CTPerfusionHeadWithContrastIV, imaging_measurements=groups)
    sr = hd.sr.Comprehensive3DSR(
        evidence=[*source.datasets, seg], content=report, series_instance_uid=hd.UID(),
        series_number=series_number, sop_instance_uid=hd.UID(), instance_number=instance_number,
        manufacturer=MANUFACTURER, is_complete=True, is_final=False, is_verified=False,
        contributing_equipment=contributing_equipment())
    sr.SeriesDescription = "ctperf measurements (research)"
    mark_research(sr)
    return sr


def write_report(metrics: dict[str, Any], seg, source: SourceStudy, out_dir: Path, next_series) -> Path:
    """Write ``sr_measurements.dcm``; returns its path."""
    sr = build_report(metrics, seg, source, series_number=next_series())
    path = out_dir / "sr_measurements.dcm"
    sr.save_as(path, enforce_file_format=True)
    return path


def read_report_values(path: str | Path) -> dict[str, float]:
    """Numeric measurements of a ctperf SR: {"core_ml", "penumbra_ml", "hypoperfusion_ml", <index keys>}."""
    import highdicom as hd

    sr = hd.sr.srread(path)
    by_code = {code: key for key, (code, _) in INDEX_CODES.items()}
    values: dict[str, float] = {}
    for group in sr.content.get_volumetric_roi_measurement_groups():
        label = str(group.tracking_identifier).removeprefix("ctperf ")
        for m in group.get_measurements():
            values[_VOLUME_KEYS.get(label, label)] = float(m.value)
    for group in sr.content.get_image_measurement_groups():
        for m in group.get_measurements():
            level = _TMAX_CODE.fullmatch(m.name.value)
            key = f"tmax{level.group(1)}_ml" if level else by_code.get(m.name.value)
            if key is not None:
                values[key] = float(m.value)
    return values
