"""NIfTI read/write at the edge of the engine (volumes are (z, y, x) in memory, (x, y, z) on disk)."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np

from ctperf.core.grid import resample_to_grid, same_grid  # noqa: F401 (re-exported)
from ctperf.core.types import slice_axis_mm
from ctperf.errors import InputError


def _gzip_compress(data: bytes) -> bytes:
    """Standard gzip stream of ``data`` (mtime 0): Intel ISA-L (``isal``, ~3.5x faster than zlib at a similar
    size) when installed, else zlib level 1 (nibabel's own default).  Both release the GIL while compressing."""
    try:
        from isal import igzip
    except ImportError:
        return gzip.compress(data, compresslevel=1, mtime=0)
    return igzip.compress(data, compresslevel=1, mtime=0)


def rigid_stand_in(affine: np.ndarray, shape_xyz) -> np.ndarray:
    """The rigid (shear-free) affine closest to a sheared one where it matters: the in-plane axes as they are, the
    slice axis along the planes' normal with the planes' spacing, and exact at the volume's centre voxel.

    A gantry-tilted acquisition's slices are shifted in-plane from one to the next (a sheared affine), which a
    NIfTI qform cannot hold; off the centre slice this stand-in misplaces voxels by that shift (half the slab's
    shear at its ends), where a polar decomposition of the affine would turn the whole grid."""
    a = np.asarray(affine, float)
    m = a[:3, :3]
    normal, spacing = slice_axis_mm(a)  # spacing signed: the slices' order along the normal
    rigid = np.eye(4)
    rigid[:3, :3] = np.column_stack([m[:, 0], m[:, 1], normal * spacing])
    centre = (np.asarray(shape_xyz, float) - 1.0) / 2.0
    rigid[:3, 3] = (m @ centre + a[:3, 3]) - rigid[:3, :3] @ centre
    return rigid


def save_volume(path: str | Path, vol_zyx: np.ndarray, affine_ras: np.ndarray, dtype=np.float32,
                description: str | None = None) -> None:
    """Write a (z, y, x) volume as NIfTI with the given RAS affine as the sform (code 1), the qform (code 1) the same
    affine or, when it is sheared (gantry tilt), its :func:`rigid_stand_in`; spatial units mm and the header's
    ``descrip`` (at most 80 characters), e.g. the map and its unit.

    nibabel, FSL and dcm2niix's readers use the exact sform; ITK-based tools read the qform (and refuse a sheared
    sform without one).  ``.nii.gz`` files are ordinary gzip streams of the single-file NIfTI.
    """
    # A C-ordered (z, y, x) array transposed is the Fortran-ordered (x, y, z) array NIfTI stores: no copy needed
    data = np.asarray(vol_zyx).astype(dtype, copy=False).transpose(2, 1, 0)
    affine = np.asarray(affine_ras, dtype=float)
    img = nib.Nifti1Image(data, affine)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    if not np.allclose(img.get_qform(), affine, rtol=0.0, atol=1e-3):
        img.set_qform(rigid_stand_in(affine, data.shape), code=1)
    img.header.set_xyzt_units("mm", "sec")
    if description:
        img.header["descrip"] = description.encode("ascii", "replace")[:80]
    path = Path(path)
    if path.name.lower().endswith(".nii.gz"):
        path.write_bytes(_gzip_compress(img.to_bytes()))
    else:
        nib.save(img, str(path))


def load_volume(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a 3D NIfTI (or a 4D one with a single volume) as ((z, y, x) float32, 4x4 RAS affine)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"file not found: {p}")
    try:
        img = nib.load(str(p))
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"cannot read NIfTI {p.name}: {exc}") from None
    data = np.squeeze(data)
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim != 3:
        raise InputError(f"{p.name}: expected a 3D volume, got shape {data.shape}")
    return np.ascontiguousarray(data.transpose(2, 1, 0)).astype(np.float32), np.asarray(img.affine, dtype=float)
