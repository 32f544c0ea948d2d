"""Edge-preserving spatio-temporal noise reduction of tissue time-attenuation curves.

Method (configurable in :class:`ctperf.config.PreprocessConfig`)
-----------------------------------------------------------------
1. **Temporal**: Gaussian smoothing of every curve on the uniform time grid (``temporal_sigma_s``).  The *same*
   kernel is applied to the arterial input function (the AIF is selected from the same temporally smoothed
   data), so the kernel cancels in the deconvolution (``g*C = (g*AIF) (x) R``) instead of widening the residue.
2. **Temporal subspace**: the brain curves are projected on their leading temporal principal components (rank
   chosen from the eigenvalue spectrum, bounded by ``pca_min_components`` .. ``pca_max_components``).  This
   removes noise dimensions and makes the spatial filter cheap (it runs on K coefficient images, not T frames).
3. **Spatial, edge preserving** (``spatial_filter``):

   * ``"bilateral"`` (default): a time-intensity-profile-similarity (TIPS) bilateral filter (Mendrik et al.,
     IEEE TMI 2011).  Each voxel becomes a weighted mean of its in-plane neighbours within the brain; the weight
     is a spatial Gaussian (``spatial_sigma_mm``) times a range kernel on the distance between the two whole
     curves, normalised by the noise of that distance: neighbours whose curves differ more than noise explains
     (grey vs white matter, lesion vs normal, vessel vs tissue, CSF) get ~zero weight, so grey/white contrast
     and lesion edges are preserved.
   * ``"gaussian"``: normalised Gaussian smoothing within the brain mask (for comparison).
   * ``"none"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy import ndimage

from ctperf.config import thread_count
from ctperf.core.morphology import bounding_box


def temporal_smooth(curves: np.ndarray, dt_s: float, sigma_s: float, axis: int = 0) -> np.ndarray:
    """Gaussian smoothing along ``axis`` (sigma in s, edge values held); float32; no-op when sigma <= 0."""
    if sigma_s is None or sigma_s <= 0:
        return np.asarray(curves, np.float32)
    return ndimage.gaussian_filter1d(np.asarray(curves, np.float32), sigma_s / dt_s, axis=axis, mode="nearest",
                                     truncate=3.0)


def temporal_basis(curves_nt: np.ndarray, min_k: int = 8, max_k: int = 20) -> np.ndarray:
    """Leading temporal principal components (T, K) of a set of curves (n, T) (uncentred, i.e. of X^T X).

    K = number of eigenvalues above 4x the median eigenvalue (the noise floor) + 4, clipped to [min_k, max_k].
    """
    x = np.asarray(curves_nt, np.float32)
    t = x.shape[1]
    if len(x) > 50000:
        x = x[:: int(np.ceil(len(x) / 50000))]
    cov = (x.T.astype(np.float64) @ x.astype(np.float64)) / max(len(x), 1)
    evals, evecs = np.linalg.eigh(cov)
    evals, evecs = evals[::-1], evecs[:, ::-1]
    floor = float(np.median(evals))
    k = int(np.sum(evals > 4.0 * floor)) + 4
    k = int(np.clip(k, min(min_k, t), min(max_k, t)))
    return np.ascontiguousarray(evecs[:, :k].astype(np.float32))


def _coefficient_noise(coef_kzyx: np.ndarray, mask: np.ndarray, lags_px: Sequence[int] | None = None) -> np.ndarray:
    """Robust noise SD of each coefficient image from its differences along x (MAD / sqrt 2) between voxels ``lag``
    pixels apart: one lag per image (None: 1 for every image, neighbours; lags are clipped to [1, nx - 1])."""
    lags = np.ones(len(coef_kzyx), int) if lags_px is None else np.asarray(lags_px, int)
    if lags.shape != (len(coef_kzyx),):
        raise ValueError(f"{len(lags)} noise lags for {len(coef_kzyx)} images")
    lags = np.clip(lags, 1, max(1, coef_kzyx.shape[-1] - 1))
    sd = np.empty(len(coef_kzyx), np.float32)
    for lag in map(int, np.unique(lags)):
        idx = np.flatnonzero(lags == lag)
        imgs = coef_kzyx if len(idx) == len(coef_kzyx) else coef_kzyx[idx]
        pair = mask[..., lag:] & mask[..., :-lag]
        d = (imgs[..., lag:] - imgs[..., :-lag])[:, pair]
        sd[idx] = 1.4826 * np.median(np.abs(d - np.median(d, axis=1, keepdims=True)), axis=1) / np.sqrt(2.0)
    return np.maximum(sd, 1e-6).astype(np.float32)


def kernel_radius_px(sigma_mm: float, pixel_mm: float) -> int:
    """Radius (pixels) of the in-plane Gaussian kernel of :func:`tips_bilateral`: 2 sigma, at least one pixel."""
    return max(1, int(np.ceil(2.0 * (sigma_mm / pixel_mm))))


def tips_bilateral(coef_kzyx: np.ndarray, mask: np.ndarray, pixel_mm: float, sigma_mm: float,
                   range_h: float = 1.0, guide_extra: np.ndarray | None = None, n_guide: int = 4,
                   guide_sigma_px: float = 0.7, second: tuple[float, np.ndarray, float] | None = None,
                   workers: int | None = None, noise_lags_px: Sequence[int] | None = None):
    """TIPS-like bilateral filter of coefficient images (K, z, y, x) within ``mask`` (in-plane neighbourhood).

    The range kernel compares *guide* features of voxel i and neighbour j: the ``n_guide`` leading temporal
    coefficients (where the curve shape lives) plus optional extra images (e.g. the baseline HU, which separates
    grey from white matter and CSF), each lightly pre-smoothed within the mask (Gaussian ``guide_sigma_px``, as
    NL-means compares patches rather than single noisy voxels) and divided by its noise SD.  With
    ``D_ij = sum_f (g_if - g_jf)^2 / 2`` (chi-square with m = number of features under "same tissue"):

        w_ij = exp(-r^2 / (2 sigma_px^2)) * exp(-max(D_ij - m, 0) / (h^2 sqrt(2 m)))

    i.e. neighbours whose curves differ by more than noise explains (in units of the chi-square spread) are
    excluded.  The filtered output is the weighted mean of all K coefficients.  ``second = (h2, image, sigma2_mm)``
    additionally filters one (z, y, x) image with the same distances but range parameter ``h2`` and spatial
    sigma ``sigma2_mm`` (<= sigma_mm); then the return value is ``(filtered coefficients, filtered image)``.
    ``workers``: threads over slabs of slices (None = all CPU cores); the result does not depend on it.
    ``noise_lags_px``: per guide feature, the distance (pixels along x) of the differences its noise SD is read
    from (None: 1 for every feature, neighbours).
    """
    k, nz, ny, nx = coef_kzyx.shape
    sig_px = sigma_mm / pixel_mm
    r = kernel_radius_px(sigma_mm, pixel_mm)
    # Sparse stencil for wide kernels: neighbours on a lattice of step ~sigma/2 px (a-trous style), so the cost
    # does not grow with the square of the kernel width on fine grids.
    step = max(1, int(np.floor(sig_px / 1.6)))
    feats = [coef_kzyx[i] for i in range(min(n_guide, k))]
    if guide_extra is not None:
        feats += [np.asarray(g, np.float32) for g in np.atleast_3d(guide_extra).reshape(-1, nz, ny, nx)]
    guide = np.stack(feats)
    if guide_sigma_px > 0:
        guide = gaussian_in_mask(guide, mask, 1.0, guide_sigma_px)
    guide = guide / _coefficient_noise(guide, mask, noise_lags_px)[:, None, None, None]
    m_feat = guide.shape[0]
    m = mask.astype(np.float32)
    pad = ((0, 0), (0, 0), (r, r), (r, r))
    gp = np.pad(guide, pad)
    cp = np.pad(coef_kzyx, pad)
    mp = np.pad(m, pad[1:])
    scale = np.float32(1.0 / (max(range_h, 1e-3) ** 2 * np.sqrt(2.0 * m_feat)))
    # outside the mask the output is the input; inside it, the weighted means written slice by slice below
    acc = np.array(coef_kzyx, copy=True)
    if second is not None:
        scale2 = np.float32(1.0 / (max(second[0], 1e-3) ** 2 * np.sqrt(2.0 * m_feat)))
        sig2_px = max(second[2], 1e-3) / pixel_mm
        ip = np.pad(np.asarray(second[1], np.float32), pad[1:])
        acc2 = np.array(second[1], np.float32, copy=True)
    lattice = range(-(r // step) * step, r + 1, step)
    offsets = [(dy, dx) for dy in lattice for dx in lattice if dy * dy + dx * dx <= r * r]

    def filter_slice(z: int) -> None:
        """The weighted means of slice ``z`` (slices are independent: in-plane filter).

        Only the bounding box of the slice's own mask voxels is computed (the brain's extent changes from slice
        to slice; one slice's sums also stay in the processor's cache across the offsets).  The range kernel is
        symmetric: the guide distance of voxel i to its neighbour i + o equals that of i + o to i (offset -o), and
        so do the spatial factors.  The lattice holds -o with every o, so the distances and the ``exp`` are
        computed once per pair of offsets, on a box that covers the voxels of both, and the second offset reads
        its weights from that box shifted by o.  The sums still run in the order of ``offsets`` with the same
        elementwise operations, so the result does not depend on this organisation (nor on the threads).
        """
        rows, cols = np.flatnonzero(mask[z].any(axis=1)), np.flatnonzero(mask[z].any(axis=0))
        if len(rows) == 0:
            return
        by, bx = rows[0], cols[0]
        hy, hx = rows[-1] + 1 - by, cols[-1] + 1 - bx  # the box: [by, by + hy) x [bx, bx + hx)
        a = np.zeros((k, hy, hx), acc.dtype)
        wsum = np.zeros((hy, hx), np.float32)
        kbuf = np.empty((k, hy, hx), np.float32)  # work buffer, reused for every offset
        if second is not None:
            a2 = np.zeros((hy, hx), np.float32)
            wsum2 = np.zeros((hy, hx), np.float32)
        pending = {}  # offset -> (origin of its weights' box, range x spatial weights of the pair, second's)
        for dy, dx in offsets:
            if (-dy, -dx) in pending:
                (y0, x0), t1, t2 = pending.pop((-dy, -dx))
                # weights of offset o at padded position q are the pair's weights at q + o
                box = (slice(r + by + dy - y0, r + by + dy - y0 + hy), slice(r + bx + dx - x0, r + bx + dx - x0 + hx))
            else:
                # padded positions q where this offset needs weights (q = r + p) or its partner -o does
                # (q = r + p - o), and the distances between q and q + o
                y0, x0 = r + by - max(dy, 0), r + bx - max(dx, 0)
                ys, xs = slice(y0, r + by + hy - min(dy, 0)), slice(x0, r + bx + hx - min(dx, 0))
                fbuf = gp[:, z, ys.start + dy:ys.stop + dy, xs.start + dx:xs.stop + dx] - gp[:, z, ys, xs]
                np.square(fbuf, out=fbuf)
                excess = fbuf.sum(axis=0)
                excess *= np.float32(0.5)
                excess -= m_feat
                np.maximum(excess, 0.0, out=excess)
                rr = dy * dy + dx * dx
                t1 = np.exp(-excess * scale)
                t1 *= np.float32(np.exp(-rr / (2.0 * sig_px**2)))
                t2 = None
                if second is not None:
                    t2 = np.exp(-excess * scale2)
                    t2 *= np.float32(np.exp(-rr / (2.0 * sig2_px**2)))
                if (dy, dx) != (0, 0):
                    pending[(dy, dx)] = ((y0, x0), t1, t2)
                box = (slice(r + by - y0, r + by - y0 + hy), slice(r + bx - x0, r + bx - x0 + hx))
            sl = (z, slice(r + by + dy, r + by + dy + hy), slice(r + bx + dx, r + bx + dx + hx))
            w = t1[box] * mp[sl]  # = spatial * range weight * neighbour in the mask, in that order
            np.multiply(cp[(slice(None),) + sl], w[None], out=kbuf)
            a += kbuf
            wsum += w
            if second is not None:
                w2 = t2[box] * mp[sl]
                a2 += w2 * ip[sl]
                wsum2 += w2
        inside = mask[z, by:by + hy, bx:bx + hx]
        out = acc[:, z, by:by + hy, bx:bx + hx]
        out[:] = np.where(inside[None], a / np.maximum(wsum, 1e-6)[None], out)
        if second is not None:
            out2 = acc2[z, by:by + hy, bx:bx + hx]
            out2[:] = np.where(inside, a2 / np.maximum(wsum2, 1e-6), out2)

    # numpy releases the GIL in these array operations: slices run in parallel threads
    with ThreadPoolExecutor(max_workers=thread_count(workers, nz)) as pool:
        list(pool.map(filter_slice, range(nz)))
    return acc if second is None else (acc, acc2)


def gaussian_in_mask(coef_kzyx: np.ndarray, mask: np.ndarray, pixel_mm: float, sigma_mm: float) -> np.ndarray:
    """Normalised in-plane Gaussian smoothing restricted to ``mask`` (no leakage from outside the brain)."""
    s = (0, sigma_mm / pixel_mm, sigma_mm / pixel_mm)
    m = mask.astype(np.float32)
    den = np.maximum(ndimage.gaussian_filter(m, s), 1e-6)
    out = np.stack([ndimage.gaussian_filter(c * m, s) / den for c in coef_kzyx])
    return np.where(mask[None], out, coef_kzyx)


def denoise_tissue_curves(delta_tzyx: np.ndarray, mask: np.ndarray, pixel_mm: float, method: str,
                          sigma_mm: float, range_h: float = 1.0, min_k: int = 8,
                          max_k: int = 20, guide_zyx: np.ndarray | None = None,
                          range_h_area: float | None = None,
                          sigma_area_mm: float | None = None,
                          workers: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Denoised curves (n_mask, T) float32 of the voxels in ``mask`` (order of ``np.nonzero(mask)``), and the
    denoised area under each curve (n_mask,) (delta HU x samples) for CBV.

    The area is linear in the curve, so it needs no smoothing to be unbiased; it is filtered with the same TIPS
    distances but a more selective range parameter ``range_h_area`` (default: ``range_h``), which keeps thin
    grey-matter ribbons from being averaged with white matter and CSF, and a smaller spatial sigma
    ``sigma_area_mm`` (default: ``sigma_mm``).

    ``delta_tzyx`` should already be temporally smoothed (:func:`temporal_smooth`); ``guide_zyx`` (e.g. the
    baseline HU image) is an extra feature of the bilateral range kernel.  Steps 2-3 of the module
    docstring; only the bounding box of the mask is processed.  ``workers``: threads of the bilateral filter
    (None = all CPU cores).
    """
    if not np.any(mask):
        return np.zeros((0, delta_tzyx.shape[0]), np.float32)
    bb = bounding_box(mask)
    sub = delta_tzyx[(slice(None),) + bb]
    msub = mask[bb]
    curves = sub[:, msub].T  # (n, T)
    if method == "none":
        return np.ascontiguousarray(curves, dtype=np.float32), curves.sum(axis=1, dtype=np.float64)
    basis = temporal_basis(curves, min_k, max_k)  # (T, K)
    coef = np.zeros((basis.shape[1],) + msub.shape, np.float32)
    coef[:, msub] = (curves @ basis).T
    area = np.zeros(msub.shape, np.float32)
    area[msub] = curves.sum(axis=1)
    if method == "bilateral":
        extra = None if guide_zyx is None else np.asarray(guide_zyx, np.float32)[bb][None]
        h2 = range_h if range_h_area is None else range_h_area
        coef, area = tips_bilateral(coef, msub, pixel_mm, sigma_mm, range_h, guide_extra=extra,
                                    second=(h2, area, sigma_mm if sigma_area_mm is None else sigma_area_mm),
                                    workers=workers)
    elif method == "gaussian":
        coef = gaussian_in_mask(coef, msub, pixel_mm, sigma_mm)
        area = gaussian_in_mask(area[None], msub, pixel_mm, sigma_mm)[0]
    else:
        raise ValueError(f"unknown spatial filter {method!r}")
    return np.ascontiguousarray(coef[:, msub].T @ basis.T, dtype=np.float32), area[msub].astype(np.float64)
