"""Secondary Capture images (RGB) of the one-page summary and the key QA figures, for PACS viewers.

The images carry the "research use only" text burned in (it is part of every figure); they are screen captures,
not measurements, so they have no patient coordinate system. They contain no patient identifiers in the pixels
(ctperf figures never show them); BurnedInAnnotation is NO.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ctperf.io.dicom_out._common import (
    MANUFACTURER,
    SourceStudy,
    contributing_equipment,
    mark_research,
    software_versions,
)

#: QA figures captured, in series order (file in the output's qa/ folder -> description).
KEY_FIGURES = {
    "maps_montage.png": "ctperf maps montage",
    "core_penumbra_montage.png": "ctperf core and penumbra",
    "tmax_mip.png": "ctperf Tmax MIP",
    "aif_vof.png": "ctperf AIF and VOF",
}
SUMMARY_DPI = 110


def render_summary_page(perf, lesion, metrics: dict, dpi: int = SUMMARY_DPI) -> np.ndarray:
    """The summary page of ``report.pdf`` as an RGB uint8 array (rows, columns, 3)."""
    from ctperf.viz import report

    return report.render_summary_page(perf, lesion, metrics or {}, dpi)


def build_capture(rgb: np.ndarray, description: str, source: SourceStudy, *, series_number: int,
                  instance_number: int = 1):
    """Build a highdicom ``SCImage`` (RGB, 8 bit) of one image, in the source study."""
    import highdicom as hd

    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source.ref, pixel_array=np.ascontiguousarray(rgb, dtype=np.uint8),
        photometric_interpretation="RGB", bits_allocated=8, coordinate_system="PATIENT", patient_orientation=("L", "P"),
        series_instance_uid=hd.UID(), series_number=series_number, sop_instance_uid=hd.UID(),
        instance_number=instance_number, manufacturer=MANUFACTURER,
        transfer_syntax_uid=hd.UID("1.2.840.10008.1.2.1"), contributing_equipment=contributing_equipment())
    sc.PatientOrientation = None  # a page, not a view of the patient: type 2, present and empty
    sc.SeriesDescription = f"{description} (research)"
    sc.ImageComments = "ctperf - research use only, not for clinical decisions"
    sc.BurnedInAnnotation = "NO"
    mark_research(sc)
    sc.SoftwareVersions = software_versions()
    sc.DerivationDescription = "ctperf screen capture"
    return sc


def write_captures(out_root: Path, out_dir: Path, next_series, summary_rgb: np.ndarray | None,
                   source: SourceStudy) -> list[Path]:
    """Write ``sc_summary.dcm`` (if ``summary_rgb``) and ``sc_<figure>.dcm`` for every key QA figure present in
    ``out_root/qa``; returns the paths."""
    from PIL import Image

    images = []
    if summary_rgb is not None:
        images.append(("sc_summary.dcm", summary_rgb, "ctperf summary"))
    for fname, desc in KEY_FIGURES.items():
        p = out_root / "qa" / fname
        if p.is_file():
            with Image.open(p) as im:
                images.append((f"sc_{Path(fname).stem}.dcm", np.asarray(im.convert("RGB")), desc))
    paths = []
    for name, rgb, desc in images:
        sc = build_capture(rgb, desc, source, series_number=next_series())
        sc.save_as(out_dir / name, enforce_file_format=True)
        paths.append(out_dir / name)
    return paths
