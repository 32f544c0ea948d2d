"""Hemisphere labels and the voxel mirror map of a midsagittal plane, and reflecting a volume across it (pure
geometry on arrays; the plane itself is fitted by :func:`ctperf.engine.hemispheres.find_midline`).

Volumes are (z, y, x) and ``affine_ras`` maps (x, y, z) to RAS mm.
"""

from __future__ import annotations

import numpy as np

from ctperf.core.grid import map_voxels_xyz
from ctperf.core.types import Hemispheres


def reflection_world(normal: np.ndarray, offset: float) -> np.ndarray:
    """4x4 reflection across the plane {p : normal . p = offset} (normal unit length, RAS mm)."""
    n = normal / np.linalg.norm(normal)
    m = np.eye(4)
    m[:3, :3] -= 2.0 * np.outer(n, n)
    m[:3, 3] = 2.0 * offset * n
    return m


def hemispheres_from_plane(mask_zyx: np.ndarray, affine_ras: np.ndarray, normal_ras: np.ndarray,
                           point_ras: np.ndarray) -> Hemispheres:
    """Hemisphere labels and the voxel mirror map for a given midsagittal plane (normal toward patient left)."""
    normal = np.asarray(normal_ras, float)
    normal = normal / np.linalg.norm(normal)
    if normal[0] > 0:
        normal = -normal
    point = np.asarray(point_ras, float)
    nz, ny, nx = mask_zyx.shape
    # Signed distance (mm) of every voxel centre to the plane, positive on the patient's left.
    a = affine_ras
    # broadcast index grids: the same arithmetic per voxel as full meshgrids, without allocating them
    zz, yy, xx = np.arange(nz)[:, None, None], np.arange(ny)[None, :, None], np.arange(nx)[None, None, :]
    dist = ((a[0, 0] * xx + a[0, 1] * yy + a[0, 2] * zz + a[0, 3] - point[0]) * normal[0]
            + (a[1, 0] * xx + a[1, 1] * yy + a[1, 2] * zz + a[1, 3] - point[1]) * normal[1]
            + (a[2, 0] * xx + a[2, 1] * yy + a[2, 2] * zz + a[2, 3] - point[2]) * normal[2])
    side = np.zeros(mask_zyx.shape, np.int8)
    side[(dist > 0) & mask_zyx] = 1
    side[(dist < 0) & mask_zyx] = -1
    refl = reflection_world(normal, float(normal @ point))
    mirror_vox = np.linalg.inv(a) @ refl @ a
    return Hemispheres(side=side, mirror_vox=mirror_vox, normal_ras=normal, point_ras=point)


def mirror(volume_zyx: np.ndarray, hemi: Hemispheres, order: int = 0, cval: float = 0.0) -> np.ndarray:
    """Reflect a (z, y, x) volume across the midline: out[v] = volume[mirror(v)].

    ``order=0`` (nearest) for masks, 1 for maps.  Boolean input gives boolean output.
    """
    vol = np.asarray(volume_zyx)
    out = map_voxels_xyz(vol, hemi.mirror_vox, order=order, cval=cval)
    return out > 0.5 if vol.dtype == bool else out
