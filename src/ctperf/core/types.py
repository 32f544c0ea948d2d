"""The data model every step works on: the loaded study (:class:`CTPStudy`, :class:`AcquisitionMeta`) and the typed
results passed between pipeline steps (:class:`Curve`, :class:`TissueMasks`, :class:`Hemispheres`,
:class:`PerfusionResult`, :class:`LesionMasks`).  Pure data; no I/O.

Axis convention (used everywhere in ctperf):
- 4D arrays are ``(t, z, y, x)``; 3D arrays ``(z, y, x)``.  ``x`` is the DICOM column index, ``y`` the row
  index, ``z`` the slice index ordered along the slice normal.
- ``affine_ras`` is a 4x4 matrix in nibabel's convention: it maps voxel index ``(i, j, k) = (x, y, z)`` to RAS+
  world millimetres.  NIfTI files store volumes transposed to ``(x, y, z)`` (see :mod:`ctperf.io.nifti`).
  Result volumes are (z, y, x) on the map grid described by their ``affine_ras``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


def spacing_xyz_mm(affine_ras: np.ndarray) -> np.ndarray:
    """Voxel spacing (mm) along the x, y, z index axes of a voxel -> RAS affine."""
    return np.sqrt((np.asarray(affine_ras, float)[:3, :3] ** 2).sum(axis=0))


def slice_axis_mm(affine_ras: np.ndarray) -> tuple[np.ndarray, float]:
    """Unit normal (RAS) of the slice planes of a voxel -> RAS affine and the planes' signed spacing (mm) along it:
    a gantry tilt shears the slice index axis but not the distance between the planes."""
    m = np.asarray(affine_ras, float)[:3, :3]
    normal = np.cross(m[:, 0], m[:, 1])
    normal /= np.linalg.norm(normal)
    return normal, float(m[:, 2] @ normal)


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


def time_to_peak_s(t: np.ndarray, y: np.ndarray) -> float:
    """Time of a curve's maximum, refined by the vertex of the parabola through the peak sample and its two
    neighbours (exact for non-uniform sampling; the sample time at either end or where the three points are not
    concave; clamped to the neighbouring sample times).  NaN for an empty curve.  Used by Mode A and Mode B."""
    t = np.asarray(t, float)
    y = np.asarray(y, float)
    ok = np.isfinite(t) & np.isfinite(y)
    t, y = t[ok], y[ok]
    if t.size == 0:
        return float("nan")
    i = int(np.argmax(y))
    if i == 0 or i == t.size - 1:
        return float(t[i])
    t0, t1, t2 = t[i - 1: i + 2]
    y0, y1, y2 = y[i - 1: i + 2]
    d01 = (y1 - y0) / (t1 - t0)  # Newton divided differences of the interpolating parabola
    d12 = (y2 - y1) / (t2 - t1)
    a = (d12 - d01) / (t2 - t0)
    if a >= 0:
        return float(t1)
    # p(x) = y0 + d01 (x - t0) + a (x - t0)(x - t1);  p'(x) = 0 at the vertex
    return float(np.clip((t0 + t1) / 2 - d01 / (2 * a), t0, t2))


@dataclass
class Curve:
    """A time-concentration curve in delta HU (above baseline)."""

    time_s: np.ndarray
    delta_hu: np.ndarray
    #: Voxel indices (z, y, x) averaged into this curve, shape (n, 3).
    voxels_zyx: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), int))

    @property
    def ttp_s(self) -> float:
        """Time to peak (s), see :func:`time_to_peak_s`."""
        return time_to_peak_s(self.time_s, self.delta_hu)

    @property
    def voxels(self) -> np.ndarray:
        """``voxels_zyx`` as an (n, 3) int array (n = 0: no voxels, e.g. Mode B's curves read from CSV)."""
        v = np.asarray(self.voxels_zyx if self.voxels_zyx is not None else [])
        return v.astype(int).reshape(-1, 3) if v.size else np.zeros((0, 3), int)


@dataclass
class TissueMasks:
    brain: np.ndarray
    csf: np.ndarray
    vessels: np.ndarray

    @property
    def tissue(self) -> np.ndarray:
        """Brain parenchyma used for statistics: brain without CSF and large vessels."""
        return self.brain & ~self.csf & ~self.vessels


@dataclass
class Hemispheres:
    """Midline and hemisphere labels.

    ``side`` is +1 in the patient's left hemisphere, -1 in the right, 0 outside the brain / on the plane.
    ``mirror_vox`` is a 4x4 matrix mapping voxel index (x, y, z, 1) to the index of its mirror image across the
    midsagittal plane.
    """

    side: np.ndarray
    mirror_vox: np.ndarray
    normal_ras: np.ndarray
    point_ras: np.ndarray


@dataclass
class PerfusionResult:
    """Everything the deconvolution engine produces for one study."""

    affine_ras: np.ndarray
    #: mL/100g/min, mL/100g, s, s, s; NaN outside the brain.
    cbf: np.ndarray
    cbv: np.ndarray
    mtt: np.ndarray
    tmax: np.ndarray
    ttp: np.ndarray
    #: CBF relative to normal-appearing tissue of the less-affected hemisphere (fraction, 1.0 = normal).
    rcbf: np.ndarray
    masks: TissueMasks
    hemispheres: Hemispheres
    aif: Curve
    vof: Curve
    #: 'left' | 'right' | 'none': hemisphere with the larger Tmax > 6 s volume (or 'none' when both are ~0).
    affected_side: str
    #: Mean CBF of the reference (normal, less-affected hemisphere) tissue, mL/100g/min.
    reference_cbf: float
    #: Baseline (pre-contrast) image in HU, for QA figures.
    baseline_hu: np.ndarray
    #: QA flags (bool) and QA measurements (numbers) with units in their names.
    qa_flags: dict[str, bool] = field(default_factory=dict)
    qa_values: dict[str, Any] = field(default_factory=dict)
    #: Wall-clock seconds per stage.
    stage_seconds: dict[str, float] = field(default_factory=dict)
    #: Extra maps written to ``aux/`` (e.g. ``cbf_standard``, ``tmax_standard``: the standard model-free
    #: convention on the same study), same grid and units as the maps of the same name.
    aux_maps: dict[str, np.ndarray] = field(default_factory=dict)


#: The maps of the standard model-free convention (block-circulant SVD with an oscillation index, Wu 2003, no bias
#: correction) that every Mode A run writes to ``aux/`` beside the default maps (:attr:`PerfusionResult.aux_maps`).
STANDARD_MAP_NAMES = ("cbf_standard", "tmax_standard")


@dataclass
class LesionMasks:
    """Binary lesion masks on the map grid plus the Tmax level masks used by the indices."""

    hypoperfusion: np.ndarray
    core: np.ndarray
    penumbra: np.ndarray
    #: Tmax >= level (after tissue restriction and cluster filtering), keyed by level in seconds.
    tmax_levels: dict[float, np.ndarray] = field(default_factory=dict)
