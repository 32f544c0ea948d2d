"""Derived DICOM objects of a ctperf result (extra ``dicom-out``: highdicom).

:func:`write_dicom_outputs` writes into one folder (``<out_dir>/dicom/`` in a Mode A output):

* ``pm_<map>.dcm``: one Parametric Map per perfusion map (:mod:`.parametric_map`),
* ``seg_lesions.dcm``: core, penumbra and hypoperfusion segments (:mod:`.seg`),
* ``sr_measurements.dcm``: TID 1500 report with volumes and indices (:mod:`.sr`),
* ``sc_*.dcm``: Secondary Captures of the summary page and key QA figures (:mod:`.capture`),
* ``source_headers.json``: the source headers (first time point, no pixels) so ``ctperf recompute`` can
  rebuild the objects without the source folder.

Every object gets new series/SOP UIDs in the source study and frame of reference, references the source series,
and is marked research (ContentQualification RESEARCH where the IOD has it; ctperf name and version in the
AlgorithmIdentification / SoftwareVersions). These files carry the patient and study modules of the source,
unlike every other ctperf output.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ctperf.io.dicom_out._common import (
    SOURCE_HEADERS,
    SeriesNumbers,
    SourceStudy,
    read_source,
    require_highdicom,
)

__all__ = ["DICOM_DIR", "SOURCE_HEADERS", "SourceStudy", "read_source", "write_dicom_outputs", "saved_source"]

#: Sub-folder of a Mode A output folder holding the DICOM objects.
DICOM_DIR = "dicom"


def write_dicom_outputs(perf, lesion, metrics: dict[str, Any], source: SourceStudy, out_root: Path,
                        *, summary_page: bool = True) -> list[Path]:
    """Write every derived DICOM object of one result into ``out_root / "dicom"``.

    Parameters
    ----------
    perf : PerfusionResult
        Maps (z, y, x) and their RAS affine.
    lesion : LesionMasks
    metrics : dict
        The metrics document.
    source : SourceStudy
    out_root : Path
        The (temporary) output folder; its ``qa/`` figures are captured when present.
    summary_page : bool
        Also capture the one-page summary.

    Returns
    -------
    list of Path
    """
    require_highdicom()
    from ctperf.io.dicom_out.capture import render_summary_page, write_captures
    from ctperf.io.dicom_out.parametric_map import write_parametric_maps
    from ctperf.io.dicom_out.seg import write_segmentation
    from ctperf.io.dicom_out.sr import write_report

    out = Path(out_root) / DICOM_DIR
    out.mkdir(parents=True, exist_ok=True)
    numbers = SeriesNumbers()
    maps = {k: getattr(perf, k) for k in ("cbf", "cbv", "mtt", "tmax", "ttp", "rcbf")}
    paths = write_parametric_maps(maps, perf.affine_ras, source, out, numbers)
    masks = {k: getattr(lesion, k) for k in ("core", "penumbra", "hypoperfusion")}
    unmeasured = tuple(k for k in masks if metrics.get(f"{k}_ml") is None)  # null volume: not measured
    seg_path, seg = write_segmentation(masks, perf.affine_ras, source, out, numbers, unmeasured)
    paths += [seg_path, write_report(metrics, seg, source, out, numbers)]
    summary = render_summary_page(perf, lesion, metrics) if summary_page else None
    paths += write_captures(Path(out_root), out, numbers, summary, source)
    source.save(out / SOURCE_HEADERS)
    return paths


def saved_source(out_dir: str | Path) -> SourceStudy | None:
    """The source headers saved by an earlier ``--dicom-out`` run in ``out_dir``, or None."""
    p = Path(out_dir) / DICOM_DIR / SOURCE_HEADERS
    return SourceStudy.load(p) if p.is_file() else None
