"""A head-like CT study around given tissue curves: skull ring, brain ellipse, tissue regions, arteries, a sinus.

Third-party data are single curves or DSC-MRI images without anatomy.  The engine needs a CT-like study to find
the brain, the AIF and the VOF automatically, so each region's curves are placed as a square block (with a
2-voxel gap of non-enhancing background) on a grid inside the brain ellipse of one slice; two arteries near the
front of the midline carry the AIF and a posterior sinus the VOF.  Curves are delta HU; the baseline anatomy
(skull 1100 HU, brain 30 HU, blocks 38 HU, air -1000 HU) is added.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ctperf.core.types import CTPStudy
from ctperf.synthetic import physics as P

#: Tissue curve scale CT / indicator-dilution (no density, no haematocrit): multiply a tissue concentration
#: C = F/6000 * (Ca (x) R) by RHO/KH so that the CT convention of ctperf reads F as the CBF.
CT_TISSUE_FACTOR = P.RHO / P.KH


@dataclass
class ThirdPartyCase:
    """One converted study with its truth, ready for :func:`ctperf.engine.compute_perfusion`."""

    name: str
    study: CTPStudy
    #: (z, y, x) int: region index (>= 0) of each voxel; -1 elsewhere.  Region interiors (eroded) in ``interior``.
    region: np.ndarray
    interior: np.ndarray
    #: One dict per region index: truth values (cbf, cbv, mtt, tmax, ...) and descriptors (shape, delay, ...).
    regions: list[dict[str, Any]]
    #: Known AIF (delta HU on ``aif_times_s``) for the known-AIF deconvolution path.
    aif_hu: np.ndarray
    aif_times_s: np.ndarray
    #: Region mean tissue curves (delta HU, (n_regions, T) on aif_times_s) for the known-AIF path.
    region_curves_hu: np.ndarray
    notes: list[str] = field(default_factory=list)


def venous_outflow(aif: np.ndarray, times_s: np.ndarray, delay_s: float = 5.0, dispersion_s: float = 2.5,
                   fine_dt: float = 0.05) -> np.ndarray:
    """VOF = the AIF delayed and exponentially dispersed (same area), sampled at ``times_s``."""
    tf = np.arange(0.0, float(times_s[-1]) + fine_dt, fine_dt)
    af = np.interp(tf, times_s, aif)
    return np.interp(times_s, tf, P.venous_curve(af, fine_dt, delay_s, dispersion_s))


def head_study(slices: list[list[np.ndarray]], aif_hu: np.ndarray, times_s: np.ndarray, *, matrix: int = 128,
               pixel_mm: float = 1.6, slice_mm: float = 5.0, noise_hu: float = 0.0, seed: int = 0,
               erode_px: int = 2) -> tuple[CTPStudy, np.ndarray, np.ndarray]:
    """Build the study.

    Parameters
    ----------
    slices : per slice, a list of regions; a region is an (n_vox, T) or (T,) array of delta-HU curves.  Block
        voxels cycle through the region's curves.  Regions are numbered consecutively over all slices.
    aif_hu : (T,) delta HU arterial input; times_s : (T,) frame times (s, uniform or not).
    noise_hu : Gaussian noise SD added to every voxel and frame (HU).

    Returns
    -------
    (study, region (z, y, x) int, interior (z, y, x) bool)
    """
    from scipy import ndimage

    n, px = int(matrix), float(pixel_mm)
    nz, nt = len(slices), len(times_s)
    c = (n - 1) / 2.0
    yy, xx = np.mgrid[0:n, 0:n]
    wx, wy = (c - xx) * px, (c - yy) * px
    brain = (wx / 70.0) ** 2 + (wy / 85.0) ** 2 <= 1.0
    skull = ((wx / 76.0) ** 2 + (wy / 91.0) ** 2 <= 1.0) & ~brain
    art = np.zeros((n, n), bool)
    for sx in (-1, 1):
        art |= ((wx - sx * 9.0) ** 2 + (wy - 58.0) ** 2) <= 3.5 ** 2
    sinus = (wx ** 2 + (wy + 72.0) ** 2) <= 4.0 ** 2
    base = np.full((n, n), -1000.0, np.float32)
    base[skull] = 1100.0
    base[brain] = 30.0
    base[art | sinus] = 40.0
    vof = venous_outflow(np.asarray(aif_hu, float), np.asarray(times_s, float))
    hu = np.repeat(np.repeat(base[None, None], nt, 0), nz, 1)
    region = np.full((nz, n, n), -1, int)
    interior = np.zeros((nz, n, n), bool)
    half = 50.0  # blocks fill |wx|, |wy| < 50 mm
    r0 = 0
    for z, regs in enumerate(slices):
        k = max(1, int(np.ceil(np.sqrt(len(regs)))))
        side_px = int(np.floor(2 * half / k / px))
        x_start = int(round(c - half / px))
        for i, curves in enumerate(regs):
            cur = np.atleast_2d(np.asarray(curves, np.float32))
            gy, gx = divmod(i, k)
            y0, x0 = x_start + gy * side_px, x_start + gx * side_px
            blk = np.zeros((n, n), bool)
            blk[y0 + 1 : y0 + side_px - 1, x0 + 1 : x0 + side_px - 1] = True
            blk &= brain & ~art & ~sinus
            idx = np.flatnonzero(blk)
            pick = cur[np.arange(len(idx)) % len(cur)]  # (n_vox, T)
            hu[:, z].reshape(nt, -1)[:, idx] = 38.0 + pick.T
            region[z].reshape(-1)[idx] = r0 + i
            interior[z] |= ndimage.binary_erosion(blk, iterations=erode_px)
        r0 += len(regs)
        hu[:, z, art] += np.asarray(aif_hu, np.float32)[:, None]
        hu[:, z, sinus] += vof.astype(np.float32)[:, None]
    if noise_hu > 0:
        hu += np.random.default_rng(seed).normal(0.0, noise_hu, hu.shape).astype(np.float32)
    affine = np.diag([-px, -px, float(slice_mm), 1.0])
    affine[:3, 3] = [c * px, c * px, 0.0]
    times = np.repeat(np.asarray(times_s, float)[:, None], nz, axis=1)
    return CTPStudy(hu=hu.astype(np.float32), times_s=times, affine_ras=affine), region, interior & (region >= 0)
