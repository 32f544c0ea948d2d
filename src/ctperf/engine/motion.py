"""Rigid in-plane motion correction between CTP frames.

Method
------
Head motion during a CTP acquisition is dominated by in-plane translation and rotation about the
superior-inferior axis (the head rests in a holder; slices are thick).  We estimate, for every frame, one rigid
in-plane transform ``(tx_mm, ty_mm, rotation_rad)`` shared by all slices, by robust Gauss-Newton (Lucas-Kanade)
minimisation of the difference to one reference image.

* The registration image is the *bone* image ``clip(HU - 400, 0, 1000)``: the skull does not enhance, whereas
  vessels and brain change with the bolus and would bias an intensity registration.  Residuals are weighted with
  Huber weights (scale from the median absolute residual on the bone), so that the few voxels whose intensity
  changes for another reason (a strongly enhancing vessel above 400 HU, through-plane motion of the skull) do not
  pull the estimate.
* Reference: every frame - *including* frames 0 and 1 - is registered to one well-defined image.  Pass 1 aligns
  all frames to frame 0; pass 2 re-registers every frame to the voxel-wise *median* of the pass-1-aligned bone
  images (the bone does not enhance, so all frames may contribute; the median removes noise, residual enhancement
  and the misregistration of any single frame, and stays in frame 0's geometry up to the mean registration error).
  The transforms are finally re-expressed in frame 0's geometry (``T_i o T_0^-1``: frame 0 gets exactly zero
  and is never resampled; the frames' alignment to each other is that of the median reference).  A reference
  such as the mean of the first two frames would lie halfway between two positions when frame 1 moved and leave
  frames 0/1 misaligned by half of that motion.
* Each frame is registered from two starting points (no motion, and the previous frame's estimate: slow drift)
  and the better fit is kept (independent jitter between frames is common); from one when the two lie within
  the still-head tolerance (0.05 mm) of each other, since both then converge to the same optimum.
* It is estimated on a ~3 mm grid (up to 6 evenly spaced slices; a still head stops after the first pass:
  0.1 s for a 512 x 512 x 20 x 40 study, a few seconds with real motion) and then applied once, at native
  resolution, only to frames whose displacement exceeds a small tolerance.
* :func:`frame_displacement_mm` converts the transforms to one displacement per frame (translation + rotation at a
  head-radius lever arm), the quantity reported as QA.
* Through-plane motion (z translation, tilt) is not corrected; it shows up as residual misregistration (mainly at
  the skull and the skull base, which the AIF/VOF selection keeps away from).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy import ndimage

from ctperf.config import thread_count


def _matrix_offset(params: np.ndarray, px_mm: float, shape_yx: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """3x3 matrix and offset for ``ndimage.affine_transform`` on a (z, y, x) array: out(o) = in(M o + offset)."""
    tx, ty, th = float(params[0]), float(params[1]), float(params[2])
    c, s = np.cos(th), np.sin(th)
    cy, cx = (shape_yx[0] - 1) / 2.0, (shape_yx[1] - 1) / 2.0
    m = np.array([[1.0, 0.0, 0.0], [0.0, c, s], [0.0, -s, c]])
    centre = np.array([0.0, cy, cx])
    offset = centre - m @ centre + np.array([0.0, ty / px_mm, tx / px_mm])
    return m, offset


def warp_frame_inplane(frame_zyx: np.ndarray, params: np.ndarray, px_mm: float, order: int = 1) -> np.ndarray:
    """Resample one frame so that it aligns with the reference: ``out(x) = frame(T_params(x))`` (float32).

    The transform is in-plane, so each slice is resampled in 2D with a spline of order ``order`` (linear by
    default: no ringing at the 1000+ HU skull edge; the z axis is never interpolated).  The identity transform
    (all parameters 0, e.g. a registration's first iterate) returns a copy: interpolation at the voxel centres
    themselves reproduces the voxels exactly.
    """
    f = np.asarray(frame_zyx, np.float32)
    if not np.any(params):
        return f.copy()
    m, off = _matrix_offset(params, px_mm, f.shape[1:])
    out = np.empty(f.shape, np.float32)
    for z in range(f.shape[0]):
        out[z] = ndimage.affine_transform(f[z], m[1:, 1:], offset=off[1:], order=order, mode="nearest")
    return out


#: Largest lever arm (mm) of a rotation: a head radius.
HEAD_RADIUS_MM = 80.0


def _displacement_mm(params: np.ndarray, lever_arm_mm: float) -> np.ndarray:
    """|translation| + |rotation| x ``lever_arm_mm`` of rigid in-plane transforms ``(..., 3)`` (mm)."""
    p = np.asarray(params, float)
    return np.hypot(p[..., 0], p[..., 1]) + np.abs(p[..., 2]) * lever_arm_mm


def frame_moved(params: np.ndarray, px_mm: float, shape_yx, tol_mm: float) -> bool:
    """True when the frame's largest in-plane displacement (:func:`frame_displacement_mm`) > tol_mm."""
    return float(frame_displacement_mm(params, px_mm, shape_yx)[0]) > tol_mm


def _bone_image(frame_zyx: np.ndarray, factor: int) -> np.ndarray:
    """Bone image on a grid ``factor`` times coarser: 2x2-averaged samples every ``factor`` pixels, clipped to
    ``HU - 400`` in [0, 1000], then Gaussian-smoothed (1 coarse pixel) to widen the capture range."""
    f = np.asarray(frame_zyx)
    if factor > 1:
        h = max(1, factor // 2)
        parts = [f[:, a::factor, b::factor] for a in (0, h) for b in (0, h)]
        ny, nx = min(p.shape[1] for p in parts), min(p.shape[2] for p in parts)
        f = 0.25 * sum(np.asarray(p[:, :ny, :nx], np.float32) for p in parts)
    img = np.clip(np.asarray(f, np.float32) - 400.0, 0.0, 1000.0)
    return ndimage.gaussian_filter(img, sigma=(0, 1.0, 1.0))


def frame_displacement_mm(params: np.ndarray, px_mm: float, shape_yx) -> np.ndarray:
    """Per-frame displacement (mm) of rigid in-plane transforms ``(t, 3)``: |translation| + |rotation| x lever arm
    (half the field of view, at most a head radius of 80 mm) - the measure used by :func:`frame_moved`."""
    radius = min(0.5 * px_mm * float(np.mean(shape_yx)), HEAD_RADIUS_MM)
    return _displacement_mm(np.atleast_2d(params), radius)


def _huber_weights(e: np.ndarray, support: np.ndarray, k: float = 1.345) -> np.ndarray:
    """Huber IRLS weights of residuals ``e``; scale = 1.4826 x median |e| over ``support`` (the bone)."""
    a = np.abs(e)
    sel = a[support]
    s = 1.4826 * float(np.median(sel)) if sel.size else 0.0
    if not np.isfinite(s) or s <= 1e-6:
        return np.ones_like(e)
    c = k * s
    return np.where(a <= c, 1.0, c / np.maximum(a, 1e-12)).astype(np.float32)


def register_inplane(moving: np.ndarray, reference: np.ndarray, px_mm: float, init: np.ndarray | None = None,
                     n_iter: int = 10, tol: float = 0.01, robust: bool = True) -> tuple[np.ndarray, float]:
    """Robust Gauss-Newton rigid in-plane registration of two (z, y, x) images.

    Returns ``(params, cost)``: params = (tx_mm, ty_mm, rot_rad) such that ``warp_frame_inplane(moving, params)``
    matches ``reference``; cost = mean squared residual over the bone (either image > 0) at the final estimate.
    """
    p = np.zeros(3) if init is None else np.array(init, float)
    ny, nx = reference.shape[1:]
    yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float32)
    yy -= (ny - 1) / 2.0
    xx -= (nx - 1) / 2.0
    ref_bone = reference > 1.0
    for _ in range(n_iter):
        w = warp_frame_inplane(moving, p, px_mm, order=1)
        gy, gx = np.gradient(w, axis=(1, 2))
        e = w - reference
        wt = _huber_weights(e, ref_bone | (w > 1.0)) if robust else np.ones_like(e)
        j = np.stack([(gx / px_mm).ravel(), (gy / px_mm).ravel(),
                      (gx * (-yy) + gy * xx).ravel()], axis=1)
        jw = j * wt.reshape(-1, 1)
        h = jw.T @ j
        if not np.all(np.isfinite(h)) or np.linalg.cond(h) > 1e12:
            break
        dp = -np.linalg.solve(h, jw.T @ e.ravel())
        p += dp
        if abs(dp[0]) < tol and abs(dp[1]) < tol and abs(dp[2]) < tol * 1e-2:
            break
    w = warp_frame_inplane(moving, p, px_mm, order=1)
    sup = ref_bone | (w > 1.0)
    cost = float(np.mean((w - reference)[sup] ** 2)) if sup.any() else float("inf")
    return p, cost


def _plausible(p: np.ndarray) -> bool:
    return bool(np.all(np.isfinite(p)) and np.hypot(p[0], p[1]) <= 50 and abs(p[2]) <= 0.5)


def _register_all(bones: list[np.ndarray], ref: np.ndarray, pw: float, start: np.ndarray,
                  skip: tuple[int, ...] = (), same_start_mm: float = 0.0) -> np.ndarray:
    """Register every frame's bone image to ``ref``; starting points: ``start[i]`` and the previous frame's
    estimate (the better final fit wins).  The second start is skipped when it is within ``same_start_mm`` of the
    first (displacement at a head-radius lever arm, :data:`HEAD_RADIUS_MM`): Gauss-Newton from two such
    nearby points converges to the same optimum."""
    params = np.zeros((len(bones), 3))
    prev = np.zeros(3)
    for i, b in enumerate(bones):
        if i in skip:
            continue
        best, best_cost = np.zeros(3), np.inf
        same = np.allclose(start[i], prev) or _displacement_mm(start[i] - prev, HEAD_RADIUS_MM) < same_start_mm
        inits = [start[i]] if same else [start[i], prev]
        for init in inits:
            p, cost = register_inplane(b, ref, pw, init=init, n_iter=8)
            if _plausible(p) and cost < best_cost:
                best, best_cost = p, cost
        params[i] = best
        prev = best
    return params


def estimate_inplane_motion(hu_tzyx: np.ndarray, px_mm: float, n_ref_frames: int = 2,
                            work_pixel_mm: float = 3.0, max_slices: int = 6, n_passes: int = 2,
                            still_mm: float = 0.05, workers: int | None = 1) -> np.ndarray:
    """Per-frame rigid in-plane motion (t, 3) = (tx_mm, ty_mm, rotation_rad) relative to one reference image.

    Pass 1 registers every frame to frame 0; each further pass registers *every* frame (frames 0 and 1 included)
    to the voxel-wise median of the bone images aligned by the previous pass (see module docstring).
    ``n_ref_frames`` is kept for backward compatibility and ignored (the reference is no longer the mean of the
    first frames).  Returns zeros when the image has too little bone to register on.  ``workers``: threads for the
    frames' bone images (None = all CPU cores); the result does not depend on it.
    """
    del n_ref_frames
    nt, nz = hu_tzyx.shape[:2]
    zsel = np.unique(np.linspace(0, nz - 1, min(nz, max_slices)).round().astype(int))
    f = max(1, int(round(work_pixel_mm / px_mm)))
    pw = px_mm * f
    with ThreadPoolExecutor(max_workers=thread_count(workers, nt)) as pool:  # numpy / ndimage release the GIL
        bones = list(pool.map(lambda i: _bone_image(hu_tzyx[i, zsel], f), range(nt)))
    params = np.zeros((nt, 3))
    if (bones[0] > 50).sum() < 100 or nt < 2:
        return params
    params = _register_all(bones, bones[0], pw, params, skip=(0,), same_start_mm=still_mm)
    # a still head (every frame within 0.05 mm of frame 0 at an 80 mm lever arm): frame 0 is as good a reference
    # as the median image, so the refinement passes would return the same (sub-threshold) result
    if float(np.max(_displacement_mm(params, HEAD_RADIUS_MM))) < still_mm:
        return params
    for _ in range(max(0, n_passes - 1)):
        ref = np.median(np.stack([warp_frame_inplane(b, p, pw, order=1) for b, p in zip(bones, params)]), axis=0)
        params = _register_all(bones, ref, pw, params, same_start_mm=still_mm)
    # express in frame 0's geometry (T_i o T_0^-1): frame 0 is never resampled, the relative alignment of the
    # frames (all registered to the same median image) is unchanged, and the output grid is the scanner's
    return relative_to_frame(params, 0)


def _homogeneous(p: np.ndarray) -> np.ndarray:
    """3x3 homogeneous matrix of a transform on (y, x) coordinates in mm, centred on the image centre."""
    tx, ty, th = float(p[0]), float(p[1]), float(p[2])
    c, s = np.cos(th), np.sin(th)
    return np.array([[c, s, ty], [-s, c, tx], [0.0, 0.0, 1.0]])


def relative_to_frame(params: np.ndarray, k: int = 0) -> np.ndarray:
    """Re-express per-frame transforms (reference -> frame i) as frame k -> frame i: ``T_i o T_k^-1``.

    The transforms rotate about the image centre and translate in mm, so they compose as 3x3 matrices on
    centred (y, x) mm coordinates.  Frame k gets exactly zero.
    """
    p = np.asarray(params, float)
    inv_k = np.linalg.inv(_homogeneous(p[k]))
    out = np.zeros_like(p)
    for i in range(len(p)):
        m = _homogeneous(p[i]) @ inv_k
        out[i] = (m[1, 2], m[0, 2], np.arctan2(m[0, 1], m[0, 0]))
    out[k] = 0.0
    return out
