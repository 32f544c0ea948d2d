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
#: metrics.json key -> (code value, meaning) in the private scheme 99CTPERF.
INDEX_CODES: dict[str, tuple[str, str]] = {
    "tmax4_ml": ("TMAX4VOL", "Volume Tmax > 4 s"),
    "tmax6_ml": ("TMAX6VOL", "Volume Tmax > 6 s"),
    "tmax8_ml": ("TMAX8VOL", "Volume Tmax > 8 s"),
    "tmax10_ml": ("TMAX10VOL", "Volume Tmax > 10 s"),
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
    for key, (code, meaning) in INDEX_CODES.items():
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
            key = by_code.get(m.name.value)
            if key is not None:
                values[key] = float(m.value)
    return values
