"""Midsagittal plane of a brain image (:func:`find_midline`); the hemisphere labels and the mirror map of a plane
are :mod:`ctperf.core.midline`'s.

The midline is the plane of best bilateral symmetry of the brain, found by minimising the robust (mean absolute)
difference between an image and its reflection across a candidate plane (a classic approach, e.g. Liu, Collins &
Tsin 2001; Ardekani 1997).  The search starts from the principal axes of the brain mask, so it is robust to head
rotation in the scanner and to gantry tilt, and does not assume the image centre is the midline.  A mean-absolute
cost keeps an asymmetric lesion from pulling the plane.

Pure numpy/scipy on arrays; volumes are (z, y, x) and ``affine_ras`` maps (x, y, z) to RAS mm.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage, optimize

from ctperf.core.midline import hemispheres_from_plane, reflection_world
from ctperf.core.types import Hemispheres, spacing_xyz_mm

#: Largest plausible angle (degrees) between the midline plane normal and the image left-right axis.
_MAX_YAW_DEG = 45.0


def _vox_to_world(affine: np.ndarray, xyz: np.ndarray) -> np.ndarray:
    return xyz @ affine[:3, :3].T + affine[:3, 3]


def _normal_from_angles(yaw: float, pitch: float, lr_axis: np.ndarray, ap_axis: np.ndarray, si_axis: np.ndarray):
    """Unit normal rotated from the left-right axis by yaw (about SI) and pitch (toward SI), radians."""
    n = np.cos(pitch) * (np.cos(yaw) * lr_axis + np.sin(yaw) * ap_axis) + np.sin(pitch) * si_axis
    return n / np.linalg.norm(n)


def find_midline(image_zyx: np.ndarray, brain_mask_zyx: np.ndarray, affine_ras: np.ndarray,
                 max_points: int = 40000, seed: int = 0) -> Hemispheres:
    """Fit the midsagittal plane of a brain image.

    Parameters
    ----------
    image_zyx : 3D image with bilateral structure (e.g. baseline HU clipped to a brain window, or a CBV map).
    brain_mask_zyx : bool mask of the brain (intracranial).
    affine_ras : 4x4 voxel (x, y, z) -> RAS mm.
    """
    mask = np.asarray(brain_mask_zyx, bool)
    if mask.sum() < 50:
        raise ValueError("brain mask too small to find the midline")
    img = np.where(mask, np.nan_to_num(np.asarray(image_zyx, np.float32)), 0.0).astype(np.float32)
    lo, hi = np.percentile(img[mask], [2, 98])
    img = np.clip(img, lo, hi)
    # Smooth lightly in-plane so the cost is smooth in the plane parameters.
    spacing = spacing_xyz_mm(affine_ras)  # mm per x, y, z index
    img = ndimage.gaussian_filter(img, sigma=(0.0, 1.5 / spacing[1], 1.5 / spacing[0]))

    zyx = np.argwhere(mask)
    rng = np.random.default_rng(seed)
    if len(zyx) > max_points:
        zyx = zyx[rng.choice(len(zyx), max_points, replace=False)]
    xyz = zyx[:, ::-1].astype(float)
    world = _vox_to_world(affine_ras, xyz)
    values = img[tuple(zyx.T)]

    # Principal axes of the brain in the (approximately axial) image plane give the initial left-right axis.
    centre = world.mean(axis=0)
    si_axis = np.array([0.0, 0.0, 1.0])
    inplane = world - centre
    inplane = inplane - np.outer(inplane @ si_axis, si_axis)
    cov = inplane.T @ inplane / len(inplane)
    evals, evecs = np.linalg.eigh(cov)
    # Smallest in-plane variance (excluding the SI direction) is left-right for a human head (longer AP than LR).
    candidates = [evecs[:, i] for i in np.argsort(evals) if abs(evecs[:, i] @ si_axis) < 0.5]
    lr0 = candidates[0] if candidates else np.array([1.0, 0.0, 0.0])
    if abs(lr0[0]) < np.cos(np.deg2rad(_MAX_YAW_DEG)):
        lr0 = np.array([1.0, 0.0, 0.0])  # implausible principal axis: fall back to the scanner's LR axis
    lr0 = lr0 * np.sign(lr0[0])
    ap0 = np.cross(si_axis, lr0)

    inv = np.linalg.inv(affine_ras)
    zyx_img_shape = img.shape
    unrelated = float(np.mean(np.abs(values - values[rng.permutation(len(values))])))

    def cost(params):
        yaw, pitch, offset = params
        n = _normal_from_angles(yaw, pitch, lr0, ap0, si_axis)
        refl = reflection_world(n, offset + n @ centre)
        w2 = world @ refl[:3, :3].T + refl[:3, 3]
        v2 = w2 @ inv[:3, :3].T + inv[:3, 3]  # x, y, z index
        # "nearest": points on the first/last slice map back to z = -1e-15 or nz - 1 + 1e-15 under a sheared
        # (tilted) affine; "constant" would read them as 0 and make the cost depend on round-off
        sampled = ndimage.map_coordinates(img, [v2[:, 2], v2[:, 1], v2[:, 0]], order=1, mode="nearest")
        inside = (v2[:, 2] >= -0.5) & (v2[:, 2] <= zyx_img_shape[0] - 0.5)
        if inside.sum() < 0.5 * len(v2):
            return 1e9
        # a point mirrored out of the slab costs what an unrelated pairing costs, so tilting the plane until
        # the (discriminating) lateral points leave a thin slab is never rewarded
        return float((np.abs(sampled[inside] - values[inside]).sum() + (~inside).sum() * unrelated) / len(v2))

    # Coarse search over yaw and offset, then a local refinement including pitch.
    best = None
    for yaw in np.deg2rad(np.arange(-12, 13, 4)):
        for off in np.arange(-12, 13, 3.0):
            c = cost((yaw, 0.0, off))
            if best is None or c < best[0]:
                best = (c, yaw, off)
    res = optimize.minimize(cost, x0=[best[1], 0.0, best[2]], method="Powell",
                            options={"xtol": 1e-3, "ftol": 1e-4, "maxiter": 2000})
    yaw, pitch, off = res.x
    pitch = float(np.clip(pitch, -np.deg2rad(20), np.deg2rad(20)))
    n_fit = _normal_from_angles(yaw, pitch, lr0, ap0, si_axis)
    # The fitted plane is {p : n_fit . (p - centre) = off}; take its point nearest the brain centre.
    point = centre + off * n_fit
    return hemispheres_from_plane(mask, affine_ras, n_fit, point)
