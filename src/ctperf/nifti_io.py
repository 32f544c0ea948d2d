"""NIfTI read/write at the edge of the engine (volumes are (z, y, x) in memory, (x, y, z) on disk)."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np

from ctperf.errors import InputError


def _gzip_compress(data: bytes) -> bytes:
    """Standard gzip stream of ``data`` (mtime 0): Intel ISA-L (``isal``, ~3.5x faster than zlib at a similar
    size) when installed, else zlib level 1 (nibabel's own default).  Both release the GIL while compressing."""
    try:
        from isal import igzip
    except ImportError:
        return gzip.compress(data, compresslevel=1, mtime=0)
    return igzip.compress(data, compresslevel=1, mtime=0)


def save_volume(path: str | Path, vol_zyx: np.ndarray, affine_ras: np.ndarray, dtype=np.float32) -> None:
    """Write a (z, y, x) volume as NIfTI with the given RAS affine (qform and sform both set, code 1).

    ``.nii.gz`` files are ordinary gzip streams of the single-file NIfTI (readable by nibabel, FSL, ITK, ...).
    """
    # A C-ordered (z, y, x) array transposed is the Fortran-ordered (x, y, z) array NIfTI stores: no copy needed
    data = np.asarray(vol_zyx).astype(dtype, copy=False).transpose(2, 1, 0)
    img = nib.Nifti1Image(data, np.asarray(affine_ras, dtype=float))
    img.set_qform(np.asarray(affine_ras, dtype=float), code=1)
    img.set_sform(np.asarray(affine_ras, dtype=float), code=1)
    if np.issubdtype(np.dtype(dtype), np.floating):
        img.header.set_xyzt_units("mm", "sec")
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


def same_grid(shape_a, affine_a, shape_b, affine_b, tol_mm: float = 0.01) -> bool:
    return tuple(shape_a) == tuple(shape_b) and np.allclose(affine_a, affine_b, atol=tol_mm)


def resample_to_grid(vol_zyx: np.ndarray, affine_src: np.ndarray, shape_zyx, affine_dst: np.ndarray,
                     order: int = 0) -> np.ndarray:
    """Resample a (z, y, x) volume onto another grid through world coordinates (nearest neighbour by default)."""
    from scipy import ndimage

    if same_grid(np.shape(vol_zyx), affine_src, shape_zyx, affine_dst):
        return np.asarray(vol_zyx)
    # dst voxel (x,y,z) -> world -> src voxel (x,y,z); then permute to (z,y,x) array order.
    m = np.linalg.inv(affine_src) @ affine_dst
    perm = np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], float)
    mz = perm @ m @ perm
    src = np.asarray(vol_zyx, np.float32)
    return ndimage.affine_transform(src, mz[:3, :3], offset=mz[:3, 3], output_shape=tuple(shape_zyx),
                                    order=order, mode="constant", cval=0.0)
