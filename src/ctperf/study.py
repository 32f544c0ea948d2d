"""The in-memory CT perfusion study every engine step works on.

Axis convention (used everywhere in ctperf):
- 4D arrays are ``(t, z, y, x)``; 3D arrays ``(z, y, x)``.  ``x`` is the DICOM column index, ``y`` the row
  index, ``z`` the slice index ordered along the slice normal.
- ``affine_ras`` is a 4x4 matrix in nibabel's convention: it maps voxel index ``(i, j, k) = (x, y, z)`` to RAS+
  world millimetres.  NIfTI files store volumes transposed to ``(x, y, z)`` (see :mod:`ctperf.io.nifti`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


def spacing_xyz_mm(affine_ras: np.ndarray) -> np.ndarray:
    """Voxel spacing (mm) along the x, y, z index axes of a voxel -> RAS affine."""
    return np.sqrt((np.asarray(affine_ras, float)[:3, :3] ** 2).sum(axis=0))


def voxel_volume_ml(affine_ras: np.ndarray) -> float:
    """Volume of one voxel (mL) of a voxel -> RAS affine (handles sheared, e.g. gantry-tilted, grids)."""
    return float(abs(np.linalg.det(np.asarray(affine_ras, float)[:3, :3])) / 1000.0)


@dataclass
class AcquisitionMeta:
    """PHI-free description of the acquisition (safe to log and to put in metrics)."""

    manufacturer: str = ""
    model: str = ""
    kvp: float | None = None
    series_description: str = ""
    series_instance_uids: list[str] = field(default_factory=list)
    series_numbers: list[int] = field(default_factory=list)
    study_instance_uid: str = ""
    #: Voxel spacing (x, y, z) in mm.
    spacing_xyz_mm: tuple[float, float, float] = (1.0, 1.0, 1.0)
    gantry_tilt_deg: float = 0.0
    transfer_syntaxes: list[str] = field(default_factory=list)
    n_files_used: int = 0
    n_files_skipped_non_dicom: int = 0
    n_duplicate_frames_dropped: int = 0
    warnings: list[str] = field(default_factory=list)
    #: Other plausible CT perfusion acquisitions in the folder that were not chosen, one PHI-free dict each
    #: (e.g. series numbers, short UID hash, time points, reason); filled by the DICOM loader.
    excluded_candidates: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class CTPStudy:
    """A loaded 4D CT perfusion acquisition."""

    #: Hounsfield units, float32, shape (t, z, y, x).
    hu: np.ndarray
    #: Acquisition time of every frame and slice, seconds from the first frame's first slice, shape (t, z).
    times_s: np.ndarray
    #: 4x4 voxel (x, y, z) -> RAS mm.
    affine_ras: np.ndarray
    meta: AcquisitionMeta = field(default_factory=AcquisitionMeta)
    #: True where a pixel was padding / outside the reconstructed field of view, shape (z, y, x), or None.
    outside_fov: np.ndarray | None = None

    @property
    def shape_xyzt(self) -> tuple[int, int, int, int]:
        t, z, y, x = self.hu.shape
        return (x, y, z, t)

    @property
    def frame_times_s(self) -> np.ndarray:
        """Time of each frame at its first slice, starting at 0 (s)."""
        ft = self.times_s[:, 0]
        return ft - ft[0]

    @property
    def voxel_volume_ml(self) -> float:
        return voxel_volume_ml(self.affine_ras)
