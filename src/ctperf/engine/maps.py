"""Perfusion maps from deconvolution outputs, vessel mask, affected side and relative CBF.

Units (docs/definitions.md §2; Ostergaard 1996, Wintermark 2005):

* ``CBF [mL/100g/min] = 6000 * kH / rho * max(R)`` with the flow-scaled residue ``R`` in 1/s;
* ``CBV [mL/100g] = 100 * kH / rho * AUC(tissue) / AUC(AIF)`` (both in delta HU on the same time grid,
  AUC over the acquisition window);
* ``MTT [s] = 60 * CBV / CBF`` (central volume theorem; since 2.6 the engine writes it from the written, jointly
  filtered maps, :mod:`ctperf.engine.regularise`; with ``map_regularisation`` off it is the 2.5 ratio of the local
  means of CBV and CBF averaged with the same edge-preserving weights);
* ``Tmax [s]`` = time of the residue maximum (arrival delay of the tissue relative to the AIF, plus dispersion);
* ``TTP [s]`` = time to peak of the denoised tissue curve, from the first frame (parabolic sub-sample refinement).

Non-negativity policy (:func:`nonnegative_maps`)
    CBF and CBV are non-negative quantities, but their estimates are noisy (CBV estimates are unbiased: CBV is
    linear in the data; the log-filtered CBF written since 2.6 reads low by ~1/2 (relative noise)^2): in tissue
    whose true CBV is of the order of the noise of its estimate (infarct core, white matter at high noise) a
    fraction of voxels comes out below 0.  The written maps are the estimates projected onto the
    physical range, ``max(estimate, 0)`` (the constrained maximum-likelihood estimate of a non-negative scalar
    under Gaussian noise).  Consequence, documented: a per-voxel value of 0 means "at or below the noise floor",
    and regional *means* of very low CBV/CBF regions are biased upwards by at most ``E[max(-e, 0)]`` =
    ``0.4 * sigma`` (sigma = voxel noise of the estimate; zero-mean error e) - negligible for normal tissue,
    ~0.1-0.3 mL/100g for the core CBV at 8-15 HU noise.  The maps are bounded (:data:`CBV_MAX_ML_100G`,
    :data:`CBF_MAX_ML_100G_MIN`, :data:`MTT_MAX_S`); where CBF is at the noise floor MTT is its bound.
    The vessel mask uses the (unclipped) CBV of the strongly denoised curves (see ctperf.engine).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy import ndimage

from ctperf.config import thread_count
from ctperf.core.constants import KH, RHO_G_PER_ML
from ctperf.core.morphology import bounding_box
from ctperf.engine.deconvolution import residue_peak

CBF_PER_RMAX = 6000.0 * KH / RHO_G_PER_ML
CBV_PER_RATIO = 100.0 * KH / RHO_G_PER_ML


def cbf_from_rmax(rmax_per_s: np.ndarray) -> np.ndarray:
    """CBF (mL/100g/min) from the residue peak (1/s)."""
    return (CBF_PER_RMAX * np.asarray(rmax_per_s, np.float64)).astype(np.float32)


def cbv_from_area(tissue_area: np.ndarray, aif_t: np.ndarray) -> np.ndarray:
    """CBV (mL/100g) = 100 kH/rho * AUC(tissue)/AUC(AIF); ``tissue_area`` = sum of each tissue curve's samples
    on the same uniform grid as ``aif_t``."""
    a = float(np.sum(aif_t))
    if a <= 0:
        return np.full(len(tissue_area), np.nan, np.float32)
    return (CBV_PER_RATIO * np.asarray(tissue_area, np.float64) / a).astype(np.float32)


def cbv_from_curves(tissue_nt: np.ndarray, aif_t: np.ndarray) -> np.ndarray:
    """CBV (mL/100g) from curves (n, T) on the AIF's grid (see :func:`cbv_from_area`)."""
    return cbv_from_area(np.asarray(tissue_nt).sum(axis=1, dtype=np.float64), aif_t)


def mtt_from(cbv: np.ndarray, cbf: np.ndarray) -> np.ndarray:
    """MTT (s) = 60 CBV / CBF; NaN where CBF <= 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(cbf > 0, 60.0 * cbv / cbf, np.nan).astype(np.float32)


def combine_flow(cbf_smooth: np.ndarray, cbv_smooth: np.ndarray, cbv_sharp: np.ndarray,
                 min_cbv: float = 0.2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Combine the strongly denoised residue with the edge-preserved CBV (returns CBV, MTT, CBF).

    The residue (hence CBF = peak, and MTT = 60 CBV/CBF) needs strong denoising, which mixes thin grey matter
    with white matter and flattens the GM/WM CBF contrast.  MTT is a *ratio* of two quantities that the mixing
    affects alike (and GM and WM MTTs are close), so it survives the mixing; CBV is linear and is taken from the
    selectively filtered area.  Hence ``MTT = 60 CBV_smooth / CBF_smooth`` and ``CBF = 60 CBV_sharp / MTT``
    (= ``CBF_smooth * CBV_sharp / CBV_smooth``; where CBV_smooth < ``min_cbv`` mL/100g the smooth CBF is kept).
    The central volume theorem ``CBF = 60 CBV / MTT`` holds exactly for the returned maps.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(cbv_smooth > min_cbv, cbv_sharp / cbv_smooth, 1.0)
    cbf = (cbf_smooth * np.clip(ratio, 0.0, 4.0)).astype(np.float32)
    cbv = np.where(cbv_smooth > min_cbv, cbv_sharp, cbv_smooth).astype(np.float32)
    return cbv, mtt_from(cbv, cbf), cbf


#: Bounds of the written maps (docs/definitions.md §6 step 9): estimates outside are clipped to them.  CBV and CBF have
#: no physiological upper limit below a large vessel's (100 % blood), which the bounds leave room for; MTT is
#: bounded by the longest transit time the deconvolution can resolve in a ~60 s acquisition.
CBV_MAX_ML_100G = 100.0
CBF_MAX_ML_100G_MIN = 1000.0
MTT_MAX_S = 30.0


def nonnegative_maps(cbv: np.ndarray, cbf: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clip CBV to [0, CBV_MAX] and CBF to [0, CBF_MAX] (NaN kept) and compute MTT = 60 CBV/CBF in [0, MTT_MAX].

    Returns (CBV, MTT, CBF).  Where CBF is at the noise floor (0) MTT is ``MTT_MAX_S`` ("at or beyond the longest
    measurable transit"), so MTT is defined wherever CBV and CBF are (never NaN inside the tissue or the core);
    see "Non-negativity policy" in the module docstring.
    """
    cbv = np.where(np.isnan(cbv), cbv, np.clip(cbv, 0.0, CBV_MAX_ML_100G)).astype(np.float32)
    cbf = np.where(np.isnan(cbf), cbf, np.clip(cbf, 0.0, CBF_MAX_ML_100G_MIN)).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        mtt = np.where(cbf > 0, 60.0 * cbv / cbf, MTT_MAX_S)
    mtt = np.where(np.isnan(cbv) | np.isnan(cbf), np.nan, np.minimum(mtt, MTT_MAX_S)).astype(np.float32)
    return cbv, mtt, cbf


def ttp_from_curves(tissue_nt: np.ndarray, time_s: np.ndarray) -> np.ndarray:
    """Time to peak (s from the first frame) with parabolic refinement."""
    dt = float(time_s[1] - time_s[0])
    _, t = residue_peak(np.asarray(tissue_nt, np.float32), dt, tissue_nt.shape[1], 0)
    return (t + float(time_s[0])).astype(np.float32)


def to_volume(values_n: np.ndarray, mask_zyx: np.ndarray, fill: float = np.nan) -> np.ndarray:
    """Scatter per-voxel values (order of ``np.nonzero(mask)``) into a float32 (z, y, x) volume."""
    out = np.full(mask_zyx.shape, fill, np.float32)
    out[mask_zyx] = values_n
    return out


def masked_median(vol_zyx: np.ndarray, mask: np.ndarray, pixel_mm: float, radius_mm: float,
                  workers: int | None = None) -> np.ndarray:
    """In-plane median filter of a map inside ``mask`` (window ``2 round(radius_mm/pixel_mm) + 1`` pixels).

    Removes isolated outliers (e.g. a residue peak picked on a noise spike) while keeping step edges such as a
    lesion boundary; used on Tmax, rCBF and the bias correction's MTT lookup (``tau_filter`` in
    :func:`ctperf.engine.compute_perfusion`).  Voxels outside the mask are first filled with the local mask mean
    (normalised Gaussian) so they do not pull the median; values outside the mask are returned unchanged.
    ``workers``: threads over the slices (None = all CPU cores).
    """
    r = int(round(radius_mm / pixel_mm)) if radius_mm and radius_mm > 0 else 0
    if r < 1 or not mask.any():
        return vol_zyx
    _, ys, xs = bounding_box(mask)
    bb = (slice(None), slice(max(ys.start - r, 0), ys.stop + r), slice(max(xs.start - r, 0), xs.stop + r))
    msub = mask[bb]
    v = np.where(msub, np.nan_to_num(vol_zyx[bb]), 0.0).astype(np.float32)
    m = msub.astype(np.float32)
    s = (0, r, r)
    fill = ndimage.gaussian_filter(v, s) / np.maximum(ndimage.gaussian_filter(m, s), 1e-6)
    med = _median_per_slice(np.where(msub, v, fill), 2 * r + 1, msub, workers)
    out = np.array(vol_zyx, np.float32, copy=True)
    out[bb] = np.where(msub, med, out[bb])
    return out


def _median_per_slice(vol_zyx: np.ndarray, size: int, where: np.ndarray, workers: int | None = None) -> np.ndarray:
    """2D ``size`` x ``size`` median (odd ``size``, edges reflected: ``scipy.ndimage.median_filter``) of each
    slice at the voxels ``where`` (bool, same shape; the others keep their input values).

    A partial sort of each voxel's window computes only the voxels needed (the same medians, several times faster
    than filtering the whole bounding box); slices in parallel threads (numpy releases the GIL).
    """
    out = np.array(vol_zyx, copy=True)
    h = size // 2
    padded = np.pad(vol_zyx, ((0, 0), (h, h), (h, h)), mode="symmetric")  # = ndimage's "reflect"

    def one(k: int) -> None:
        if where[k].any():
            # the voxels' windows, a copy partitioned in place
            windows = np.lib.stride_tricks.sliding_window_view(padded[k], (size, size))[where[k]]
            windows = windows.reshape(len(windows), -1)
            windows.partition(size * size // 2, axis=1)
            out[k][where[k]] = windows[:, size * size // 2]

    with ThreadPoolExecutor(max_workers=thread_count(workers, len(vol_zyx))) as pool:
        list(pool.map(one, range(len(vol_zyx))))
    return out


def vessel_mask(cbv_zyx: np.ndarray, peak_hu_zyx: np.ndarray, brain: np.ndarray, cbv_max: float,
                peak_max_hu: float) -> np.ndarray:
    """Large vessels: brain voxels with CBV above ``cbv_max`` or a peak enhancement above ``peak_max_hu``."""
    return brain & ((np.nan_to_num(cbv_zyx) > cbv_max) | (np.nan_to_num(peak_hu_zyx) > peak_max_hu))


def affected_side(tmax_zyx: np.ndarray, tissue: np.ndarray, side_zyx: np.ndarray, voxel_ml: float,
                  threshold_s: float = 6.0, min_ml: float = 1.0, min_cluster_ml: float = 0.0) -> tuple[str, dict]:
    """'left' | 'right' | 'none': hemisphere with the larger Tmax > threshold tissue volume (mL).

    Same rule as :func:`ctperf.analysis.indices.lesion_side` on the hypoperfusion mask of
    :mod:`ctperf.analysis.masks`: tissue with Tmax > ``threshold_s`` after removing clusters smaller than
    ``min_cluster_ml``; 'none' when both hemispheres hold less than ``min_ml``; a tie goes to 'left'.
    """
    from ctperf.core.morphology import remove_small_clusters

    hyp = tissue & np.isfinite(tmax_zyx) & (np.nan_to_num(tmax_zyx) > threshold_s)
    hyp = remove_small_clusters(hyp, voxel_ml, min_cluster_ml)
    left = float((hyp & (side_zyx > 0)).sum() * voxel_ml)
    right = float((hyp & (side_zyx < 0)).sum() * voxel_ml)
    vols = {"tmax6_left_ml": left, "tmax6_right_ml": right}
    if max(left, right) < min_ml:
        return "none", vols
    return ("left" if left >= right else "right"), vols


def reference_region(tissue: np.ndarray, tmax_zyx: np.ndarray, side_zyx: np.ndarray, affected: str,
                     normal_tmax_s: float = 4.0, margin_s: float = 2.0) -> np.ndarray:
    """Normal-appearing tissue of the less-affected hemisphere (both hemispheres if 'none').

    Normal-appearing = Tmax below ``max(normal_tmax_s, median Tmax of that hemisphere's tissue + margin_s)``:
    4 s as usual, raised when the whole brain is delayed against the AIF (e.g. AIF taken upstream of a
    bilateral delay), so the reference does not collapse to a few voxels.
    """
    hemi = tissue & np.isfinite(tmax_zyx)
    if affected == "left":
        hemi &= side_zyx < 0
    elif affected == "right":
        hemi &= side_zyx > 0
    else:
        hemi &= side_zyx != 0
    if not hemi.any():
        return hemi
    limit = max(normal_tmax_s, float(np.median(tmax_zyx[hemi])) + margin_s)
    return hemi & (tmax_zyx < limit)


def relative_cbf(cbf_zyx: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, float]:
    """rCBF = CBF / mean CBF of the reference region; returns (rCBF map, reference mean CBF)."""
    vals = cbf_zyx[reference & np.isfinite(cbf_zyx)]
    ref = float(np.mean(vals)) if vals.size else float("nan")
    if not np.isfinite(ref) or ref <= 0:
        return np.full_like(cbf_zyx, np.nan), ref
    return (cbf_zyx / ref).astype(np.float32), ref
