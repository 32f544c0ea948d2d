"""Grid geometry on numpy arrays: in-plane binning and its affine, and resampling a volume onto another grid
through world coordinates (volumes are (z, y, x); affines map (x, y, z) voxel indices to RAS mm)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ctperf.core.types import spacing_xyz_mm


def bin_factor_for(affine_ras: np.ndarray, compute_pixel_mm: float) -> int:
    """Integer in-plane binning factor that brings the native pixel closest to ``compute_pixel_mm`` (>= 1)."""
    if not compute_pixel_mm or compute_pixel_mm <= 0:
        return 1
    px = float(np.mean(spacing_xyz_mm(affine_ras)[:2]))
    return max(1, int(round(compute_pixel_mm / px)))


def binned_affine(affine_ras: np.ndarray, factor: int) -> np.ndarray:
    """Affine of an in-plane ``factor`` x ``factor`` block-average grid (block centres; exact)."""
    s = np.eye(4)
    s[0, 0] = s[1, 1] = factor
    s[0, 3] = s[1, 3] = (factor - 1) / 2.0
    return np.asarray(affine_ras, float) @ s


def bin_inplane(vol: np.ndarray, factor: int, out: np.ndarray | None = None) -> np.ndarray:
    """Block-average the last two axes (y, x) by ``factor`` (remainder rows/columns dropped), float32.

    ``out``: optional float32 array of the result's shape to write into.  Each 2-D image is reduced on its own
    (it stays in the CPU cache between the passes): the columns of every block summed first (one pass over the
    input), then the rows on the already reduced image - much faster than reshape(...).mean(axis=(..)) or
    ``factor``^2 strided accumulations.
    """
    if factor == 1:
        if out is None:
            return np.asarray(vol, np.float32)
        out[...] = vol
        return out
    *lead, ny, nx = vol.shape
    ny2, nx2 = ny // factor, nx // factor
    if out is None:
        out = np.empty((*lead, ny2, nx2), np.float32)
    scale = np.float32(1.0 / factor**2)
    for idx in np.ndindex(*lead):
        img, res = vol[idx][: ny2 * factor, : nx2 * factor], out[idx]
        rows = np.add(img[:, 0::factor], img[:, 1::factor], dtype=np.float32)
        for b in range(2, factor):
            rows += img[:, b::factor]
        np.add(rows[0::factor], rows[1::factor], out=res)
        for a in range(2, factor):
            res += rows[a::factor]
        res *= scale
    return out


def same_grid(shape_a, affine_a, shape_b, affine_b, tol_mm: float = 0.01) -> bool:
    return tuple(shape_a) == tuple(shape_b) and np.allclose(affine_a, affine_b, atol=tol_mm)


def map_voxels_xyz(volume_zyx: np.ndarray, map_xyz: np.ndarray, output_shape=None, order: int = 0,
                   cval: float = 0.0) -> np.ndarray:
    """``out[v] = volume[map(v)]`` for a 4x4 affine ``map_xyz`` of voxel indices in (x, y, z) order (the order of
    the affines), applied to a (z, y, x) array: the map is permuted to the array's axis order and handed to
    ``scipy.ndimage.affine_transform`` (interpolation ``order``, ``cval`` outside).  float32 in, float32 out."""
    perm = np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], float)
    mz = perm @ np.asarray(map_xyz, float) @ perm
    return ndimage.affine_transform(np.asarray(volume_zyx, np.float32), mz[:3, :3], offset=mz[:3, 3],
                                    output_shape=None if output_shape is None else tuple(output_shape), order=order,
                                    mode="constant", cval=cval)


def resample_to_grid(vol_zyx: np.ndarray, affine_src: np.ndarray, shape_zyx, affine_dst: np.ndarray,
                     order: int = 0) -> np.ndarray:
    """Resample a (z, y, x) volume onto another grid through world coordinates (nearest neighbour by default)."""
    if same_grid(np.shape(vol_zyx), affine_src, shape_zyx, affine_dst):
        return np.asarray(vol_zyx)
    # dst voxel (x, y, z) -> world -> src voxel (x, y, z)
    return map_voxels_xyz(vol_zyx, np.linalg.inv(affine_src) @ affine_dst, shape_zyx, order)
