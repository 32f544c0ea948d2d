"""Shared pieces of the derived DICOM objects: source headers, grid geometry, equipment and UIDs.

Only this package (and :mod:`ctperf.apps.node`) touches patient identifiers: the source study's patient and
study modules are read here, copied into the derived objects, and never logged or written to metrics.

Geometry convention
-------------------
ctperf maps live on a (z, y, x) grid with a 4x4 voxel (x, y, z) -> RAS affine (see :mod:`ctperf.core.types`). A DICOM
multi-frame image stores frames (rows = y, columns = x) with ImageOrientationPatient / PixelSpacing shared and one
ImagePositionPatient per frame, in LPS. The conversion is exact for any affine, including the *sheared* affine of
a gantry-tilted acquisition: the frames keep their tilted positions (each frame's position is the affine applied
to (0, 0, z)), exactly as the scanner wrote the source CT slices, so nothing is resampled. Readers that assume
orthogonal volumes see the same geometry as in the source series.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ctperf import __version__
from ctperf.errors import InputError

#: Dependency of this package (the ``dicom-out`` extra).
EXTRA_HINT = "DICOM outputs need highdicom: pip install 'ctperf[dicom-out]'"
#: Saved source headers (first time point, no pixels) so ``ctperf recompute`` can rebuild the DICOM objects.
SOURCE_HEADERS = "source_headers.json"
MANUFACTURER = "ctperf (open source)"
MODEL = "ctperf"
LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def require_highdicom():
    """Import highdicom or raise an :class:`InputError` that names the extra to install."""
    try:
        import highdicom  # noqa: F401
    except ImportError:
        raise InputError(EXTRA_HINT) from None
    return highdicom


@dataclass
class SourceStudy:
    """Header datasets (no pixel data) of the source CT series' first time point, ordered along the normal."""

    datasets: list  # list[pydicom.Dataset]

    @property
    def ref(self):
        """The dataset the derived objects copy patient/study/frame-of-reference modules from."""
        return self.datasets[0]

    def save(self, path: Path) -> None:
        path.write_text(json.dumps([ds.to_json_dict() for ds in self.datasets]), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> SourceStudy:
        from pydicom import Dataset

        try:
            items = json.loads(Path(path).read_text(encoding="utf-8"))
            return cls([Dataset.from_json(d) for d in items])
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise InputError(f"cannot read the saved DICOM source headers {Path(path).name}: {exc}") from None


def read_source(dicom_dir: str | Path, series_uids: Sequence[str]) -> SourceStudy:
    """Read the source headers of the analysed CT perfusion series (first time point, pixel data dropped).

    Parameters
    ----------
    dicom_dir : path
        The folder the study was loaded from.
    series_uids : sequence of str
        ``AcquisitionMeta.series_instance_uids`` of the analysed acquisition (the first one selects it).

    Raises
    ------
    InputError
        When the series is no longer in the folder.
    """
    from pydicom import dcmread

    from ctperf.io.dicom.plan import _prepare

    if not series_uids:
        raise InputError("the study has no SeriesInstanceUID; DICOM outputs need one")
    _, _, plan = _prepare(dicom_dir, series_uids[0])
    datasets = []
    for h in plan.frames[0]:
        ds = dcmread(h.path, stop_before_pixels=True)
        for tag in [t for t in ds.keys() if t.is_private]:
            del ds[tag]
        datasets.append(ds)
    return SourceStudy(datasets)


@dataclass(frozen=True)
class FrameGeometry:
    """DICOM plane geometry (LPS) of a (z, y, x) grid."""

    orientation: tuple[float, ...]  # ImageOrientationPatient: row direction (x index), column direction (y index)
    pixel_spacing: tuple[float, float]  # (between rows = y, between columns = x), mm
    spacing_between_slices: float  # along the slice normal, mm
    positions: np.ndarray  # (z, 3) ImagePositionPatient of every frame, LPS mm

    def highdicom(self):
        """(PixelMeasuresSequence, PlaneOrientationSequence, [PlanePositionSequence]) for highdicom."""
        from highdicom import (
            PixelMeasuresSequence,
            PlaneOrientationSequence,
            PlanePositionSequence,
        )

        measures = PixelMeasuresSequence(pixel_spacing=list(self.pixel_spacing),
                                         slice_thickness=self.spacing_between_slices,
                                         spacing_between_slices=self.spacing_between_slices)
        orient = PlaneOrientationSequence(coordinate_system="PATIENT", image_orientation=list(self.orientation))
        positions = [PlanePositionSequence(coordinate_system="PATIENT", image_position=[float(v) for v in p])
                     for p in self.positions]
        return measures, orient, positions


def frame_geometry(affine_ras: np.ndarray, n_slices: int) -> FrameGeometry:
    """Exact DICOM frame geometry of a (z, y, x) grid with a voxel (x, y, z) -> RAS affine (sheared allowed)."""
    lps = LPS_FROM_RAS @ np.asarray(affine_ras, float)
    dx, dy = np.linalg.norm(lps[:3, 0]), np.linalg.norm(lps[:3, 1])
    row_dir, col_dir = lps[:3, 0] / dx, lps[:3, 1] / dy
    normal = np.cross(row_dir, col_dir)
    positions = lps[:3, 3][None, :] + np.arange(n_slices)[:, None] * lps[:3, 2][None, :]
    return FrameGeometry(tuple(float(v) for v in (*row_dir, *col_dir)), (float(dy), float(dx)),
                         float(abs(lps[:3, 2] @ normal)), positions)


def affine_from_frames(orientation, pixel_spacing, positions: np.ndarray) -> np.ndarray:
    """Inverse of :func:`frame_geometry`: voxel (x, y, z) -> RAS affine from frames sorted along the normal."""
    iop = np.asarray(orientation, float)
    dy, dx = (float(v) for v in pixel_spacing)
    positions = np.asarray(positions, float)
    lps = np.eye(4)
    lps[:3, 0] = iop[:3] * dx
    lps[:3, 1] = iop[3:] * dy
    n = len(positions)
    lps[:3, 2] = (positions[-1] - positions[0]) / (n - 1) if n > 1 else np.cross(iop[:3], iop[3:])
    lps[:3, 3] = positions[0]
    return LPS_FROM_RAS @ lps


def mark_research(ds) -> None:
    """Attributes every ctperf object carries: ContentQualification RESEARCH (in the Parametric Map IOD; added to
    SEG, SR and SC as a standard extended attribute) and, on images, BodyPartExamined HEAD, so that Laterality may
    be absent (type 2C: required only for paired body parts)."""
    ds.ContentQualification = "RESEARCH"
    if "Rows" in ds:  # image IODs only (not in the SR IOD)
        ds.BodyPartExamined = "HEAD"
    if "Laterality" in ds and not ds.Laterality:
        del ds.Laterality


def software_versions() -> str:
    return f"ctperf {__version__}"


def contributing_equipment() -> list:
    """ContributingEquipmentSequence item naming ctperf and its version as the processing equipment."""
    from highdicom.base_content import ContributingEquipment
    from pydicom.sr.codedict import codes

    return [ContributingEquipment(manufacturer=MANUFACTURER, purpose_of_reference=codes.DCM.ProcessingEquipment,
                                  manufacturer_model_name=MODEL, software_versions=software_versions(),
                                  contribution_description="ctperf CT perfusion analysis, research use only")]


def algorithm_identification():
    """highdicom AlgorithmIdentificationSequence naming ctperf and its version."""
    from highdicom import AlgorithmIdentificationSequence
    from pydicom.sr.codedict import codes

    # CID 7162 has no "perfusion deconvolution" family; the lesion masks are thresholded maps cleaned by a
    # connected-cluster filter, the closest listed family
    return AlgorithmIdentificationSequence(name="ctperf", version=__version__, family=codes.cid7162.ClusterAnalysis,
                                           parameters={"research_use_only": "true"})


class SeriesNumbers:
    """New series numbers in the source study, above the source series number (9000+ block, stable order)."""

    BASE = 9000

    def __init__(self):
        self._next = self.BASE

    def __call__(self) -> int:
        self._next += 1
        return self._next
