"""Acquisition imperfections of the phantom: spatially correlated image noise and rigid head motion."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


class CorrelatedNoise:
    """Gaussian noise, correlated in-plane like a reconstruction kernel, independent per frame and slice.

    White noise is filtered with a 2D Gaussian of full width at half maximum ``fwhm_mm`` (in-plane only: thick
    slices are reconstructed independently) and rescaled by the analytic factor of that discrete filter so that
    the expected per-voxel standard deviation is exactly ``std_hu``.
    """

    def __init__(self, std_hu: float, fwhm_mm: float, pixel_mm: float, rng: np.random.Generator):
        self.std_hu = float(std_hu)
        self.rng = rng
        self.sigma_px = float(fwhm_mm) / (2.0 * np.sqrt(2.0 * np.log(2.0))) / float(pixel_mm) if fwhm_mm > 0 else 0.0
        if self.sigma_px > 0:
            delta = np.zeros(8 * int(np.ceil(4 * self.sigma_px)) + 9)
            delta[len(delta) // 2] = 1.0
            k = ndimage.gaussian_filter1d(delta, self.sigma_px)
            gain_1d = float(np.sqrt(np.sum(k * k)))
            self.scale = self.std_hu / (gain_1d * gain_1d)
        else:
            self.scale = self.std_hu

    def frame(self, shape_zyx: tuple[int, int, int]) -> np.ndarray:
        """One frame of noise, float32, shape (z, y, x), HU."""
        if self.std_hu <= 0:
            return np.zeros(shape_zyx, dtype=np.float32)
        n = self.rng.standard_normal(shape_zyx, dtype=np.float32)
        if self.sigma_px > 0:
            n = ndimage.gaussian_filter(n, sigma=(0.0, self.sigma_px, self.sigma_px), mode="reflect")
        n *= np.float32(self.scale)
        return n


def motion_parameters(n_frames: int, amplitude_mm: float, rng: np.random.Generator) -> np.ndarray:
    """Per-frame rigid motion, shape (t, 6): translations (x, y, z) in mm and rotations (about x, y, z) in rad.

    Frame 0 is the reference (all zeros).  Translations are uniform in [-A, A] in-plane and [-A/2, A/2]
    through-plane, rotations in [-A/50, A/50] rad (in-plane yaw) and half that for pitch/roll.
    """
    p = np.zeros((n_frames, 6))
    if amplitude_mm <= 0 or n_frames < 2:
        return p
    a = float(amplitude_mm)
    lim = np.array([a, a, 0.5 * a, 0.5 * a / 50.0, 0.5 * a / 50.0, a / 50.0])
    p[1:] = rng.uniform(-1.0, 1.0, size=(n_frames - 1, 6)) * lim
    return p


def rotation_matrix(rx: float, ry: float, rz: float) -> np.ndarray:
    """Rotation (x, y, z axes, radians), applied as Rz @ Ry @ Rx, in the scanner (x, y, z) frame."""
    cx, sx, cy, sy, cz, sz = np.cos(rx), np.sin(rx), np.cos(ry), np.sin(ry), np.cos(rz), np.sin(rz)
    mx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    my = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    mz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return mz @ my @ mx


def apply_rigid(vol_zyx: np.ndarray, params: np.ndarray, voxel_xyz_mm, centre_xyz_index) -> np.ndarray:
    """Move the content of a (z, y, x) volume by the rigid transform ``params`` about ``centre_xyz_index``.

    The moved image is ``I_t(x) = I_0(R^T (x - c - t) + c)`` (trilinear interpolation, edge values repeated).
    """
    if not np.any(params):
        return vol_zyx
    s = np.asarray(voxel_xyz_mm, float)[::-1]  # mm per index along (z, y, x)
    c = np.asarray(centre_xyz_index, float)[::-1] * s
    r_xyz = rotation_matrix(*params[3:6])
    perm = np.array([[0, 0, 1], [0, 1, 0], [1, 0, 0]], float)
    r = perm @ r_xyz @ perm  # same rotation expressed on (z, y, x) axes
    t = np.asarray(params[:3], float)[::-1]
    m = np.diag(1.0 / s) @ r.T @ np.diag(s)
    offset = (c - r.T @ (c + t)) / s
    return ndimage.affine_transform(vol_zyx, m, offset=offset, order=1, mode="nearest").astype(np.float32,
                                                                                            copy=False)
