"""Automatic arterial input function (AIF) and venous output function (VOF) selection.

Method (in the spirit of Straka 2010 and Mouridsen 2006; fully vectorised over voxels)
-------------------------------------------------------------------------------------
Features of every candidate curve (delta HU on the uniform grid, temporally smoothed like the tissue curves):
peak height, time to peak (TTP), bolus arrival (first time above 20% of the peak), full width at half maximum
(FWHM), and the "return" = mean of the last samples / peak.

AIF
  1. candidates: the 1% brain voxels with the highest peak (at least 30) that return towards baseline
     (return < ``max_return_fraction``), peak before the last 15% of the acquisition and have a FWHM >= 3 s
     (narrower "peaks" are motion spikes); voxels whose absolute HU ever leaves [-100, 800] (bone or air moved
     in) are never candidates (for the VOF neither);
  2. arterial phase only: TTP within ``early_window_s`` of the 20th percentile of the candidates' TTP (veins
     and dispersed/delayed arteries distal to an occlusion peak later and are dropped - this is what keeps the
     AIF on the less-affected side);
  3. score = peak / FWHM (high and narrow = least partial volume and least dispersion);
  4. the AIF is the mean of the ``n_aif_voxels`` best voxels on the hemisphere of the best voxel (when
     hemisphere labels are given), so the cluster does not mix sides.
VOF
  Voxels (brain dilated by ~5 mm, without bone) peaking at least ``vof_min_delay_s`` after the AIF; the
  ``n_vof_voxels`` with the largest area under the curve (the venous sinus: late peak, largest area).  The
  ranking uses the mean area of the 8 in-plane neighbours (among voxels at least half as bright themselves)
  and the 3x3 mean TTP, so the choice is driven neither by each voxel's own noise nor by a bright neighbour (selecting the maximum of noisy areas would bias the VOF area, hence the AIF scaling, upwards).
Partial-volume correction
  The AIF is scaled so its area equals the VOF's (indicator conservation; the sinus is large enough to be free
  of partial volume).  Areas include an exponential tail extrapolation beyond the end of the acquisition so
  that the later VOF is not penalised by truncation.  The scale is only applied when the VOF area exceeds the
  AIF's by more than ``pv_tolerance`` (10%: smaller differences are within the measurement error of the two
  areas - tail extrapolation, noise; a smaller VOF area means the VOF itself is partial-volumed) and is capped
  at ``max_pv_scale``; it is skipped when the VOF curve is implausible (:func:`curve_is_clean`, e.g. motion).
  The measured ratio is always reported (qa_values ``vof_aif_area_ratio``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ctperf.results import Curve


@dataclass
class CurveFeatures:
    peak: np.ndarray
    ttp_s: np.ndarray
    arrival_s: np.ndarray
    fwhm_s: np.ndarray
    return_fraction: np.ndarray
    auc: np.ndarray


@dataclass
class AifVofSelection:
    aif: Curve
    vof: Curve
    #: AIF before partial-volume scaling (delta HU).
    aif_raw: np.ndarray
    pv_scale: float
    aif_side: int
    #: Area(VOF) / area(AIF before scaling), both with tail extrapolation.
    vof_aif_area_ratio: float = float("nan")
    #: False when the VOF curve is implausible (not flat before the bolus or too rough): then no PV scaling.
    vof_clean: bool = True


def curve_features(curves_nt: np.ndarray, time_s: np.ndarray) -> CurveFeatures:
    """Per-curve features (see module docstring); curves (n, T) delta HU."""
    x = np.asarray(curves_nt, np.float32)
    t = np.asarray(time_s, float)
    dt = float(t[1] - t[0])
    peak = x.max(axis=1)
    ipk = x.argmax(axis=1)
    pos = np.maximum(peak, 1e-6)[:, None]
    arr_idx = np.argmax(x > 0.2 * pos, axis=1)
    fwhm = (x > 0.5 * pos).sum(axis=1) * dt
    n_tail = max(2, len(t) // 20)
    ret = x[:, -n_tail:].mean(axis=1) / pos[:, 0]
    auc = x.sum(axis=1) * dt
    return CurveFeatures(peak, t[ipk], t[arr_idx], fwhm, ret, auc)


def area_with_tail(curve: np.ndarray, time_s: np.ndarray, max_tail_s: float = 30.0) -> float:
    """Area (delta HU * s) of a curve plus an exponential extrapolation of its decay beyond the last sample."""
    c = np.asarray(curve, float)
    dt = float(time_s[1] - time_s[0])
    area = float(c.sum() * dt)
    n = max(3, int(round(6.0 / dt)))
    if len(c) < 2 * n or c.max() <= 0:
        return area
    a, b = c[-2 * n : -n].mean(), c[-n:].mean()
    if a > 0 and b > 0 and b < a:
        tau = min(n * dt / np.log(a / b), max_tail_s)
        area += b * tau
    return area


def _pick_aif(curves: np.ndarray, coords: np.ndarray, time_s: np.ndarray, side: np.ndarray | None, n_aif: int,
              max_return_fraction: float, early_window_s: float, min_fwhm_s: float = 3.0) -> tuple[np.ndarray, int]:
    f = curve_features(curves, time_s)
    n = len(curves)
    n_cand = min(n, max(30, int(0.01 * n)))
    cand = np.argpartition(f.peak, -n_cand)[-n_cand:]
    t_end = time_s[-1] - 0.15 * (time_s[-1] - time_s[0])
    good = cand[(f.return_fraction[cand] < max_return_fraction) & (f.ttp_s[cand] < t_end) & (f.peak[cand] > 0)
                & (f.fwhm_s[cand] >= min_fwhm_s)]
    if len(good) < n_aif:
        good = cand[f.peak[cand] > 0]
    if len(good) == 0:
        good = cand
    ttp_ref = np.percentile(f.ttp_s[good], 20)
    early = good[f.ttp_s[good] <= ttp_ref + early_window_s]
    if len(early) >= 1:
        good = early
    score = f.peak[good] / np.maximum(f.fwhm_s[good], 1e-3)
    order = good[np.argsort(score)[::-1]]
    best_side = 0
    if side is not None:
        best_side = int(side[order[0]])
        same = order[side[order] == best_side]
        if len(same) >= min(n_aif, len(order)):
            order = same
    return order[:n_aif], best_side


def _smoothed_feature(values: np.ndarray, idx: tuple, shape: tuple, exclude_self: bool = False) -> np.ndarray:
    """In-plane 3x3 mean of a per-voxel feature over the candidate voxels (reduces noise-selection bias);
    with ``exclude_self`` the mean of the 8 neighbours only (the voxel's own noise does not affect its rank)."""
    vol = np.zeros(shape, np.float32)
    cnt = np.zeros(shape, np.float32)
    vol[idx] = values
    cnt[idx] = 1.0
    num = ndimage.uniform_filter(vol, size=(1, 3, 3)) * 9.0
    den = ndimage.uniform_filter(cnt, size=(1, 3, 3)) * 9.0
    if exclude_self:
        num[idx] -= values
        den[idx] -= 1.0
    return (num / np.maximum(den, 1e-6))[idx]


def _pick_vof(curves: np.ndarray, time_s: np.ndarray, aif_ttp_s: float, n_vof: int, min_delay_s: float,
              idx: tuple, shape: tuple) -> np.ndarray:
    f = curve_features(curves, time_s)
    nbr = _smoothed_feature(f.auc, idx, shape, exclude_self=True)
    # rank by the neighbours' area (independent of the voxel's own noise), among voxels that are themselves
    # at least half as bright (not the edge of the sinus)
    auc = np.where(f.auc >= 0.5 * nbr, nbr, -np.inf)
    ttp = _smoothed_feature(f.ttp_s, idx, shape)
    late = np.nonzero((ttp >= aif_ttp_s + min_delay_s) & (f.peak > 0))[0]
    if len(late) < n_vof:
        late = np.arange(len(curves))
    return late[np.argsort(auc[late])[::-1][:n_vof]]


def select_aif_vof(delta_tzyx: np.ndarray, time_s: np.ndarray, brain: np.ndarray, baseline_hu: np.ndarray,
                   pixel_mm: float, side_zyx: np.ndarray | None = None, n_aif: int = 5, n_vof: int = 5,
                   pv_correct: bool = True, max_return_fraction: float = 0.5, early_window_s: float = 1.5,
                   vof_min_delay_s: float = 2.0, max_pv_scale: float = 3.0,
                   pv_tolerance: float = 0.1) -> AifVofSelection:
    """Choose and average the AIF and VOF voxels (see module docstring).

    delta_tzyx : (T, z, y, x) delta HU on the uniform grid ``time_s``; brain : bool (z, y, x) search region for
    the AIF; side_zyx : optional hemisphere labels (+1 left, -1 right).
    """
    # no voxel that bone or air moves into (head motion): absolute HU must stay within [-100, 800]
    hu_ok = ((delta_tzyx.max(axis=0) + baseline_hu) < 800.0) & ((delta_tzyx.min(axis=0) + baseline_hu) > -100.0)
    idx = np.nonzero(brain & hu_ok)
    curves = delta_tzyx[:, idx[0], idx[1], idx[2]].T
    coords = np.stack(idx, axis=1)
    side = side_zyx[idx] if side_zyx is not None else None
    a_sel, a_side = _pick_aif(curves, coords, time_s, side, n_aif, max_return_fraction, early_window_s)
    aif_raw = curves[a_sel].mean(axis=0)
    aif_vox = coords[a_sel]
    del curves

    r = max(1, int(round(5.0 / pixel_mm)))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    region = ndimage.binary_dilation(brain, structure=((xx**2 + yy**2) <= r * r)[None]) & (baseline_hu < 150) & hu_ok
    vidx = np.nonzero(region)
    vcurves = delta_tzyx[:, vidx[0], vidx[1], vidx[2]].T
    aif_ttp = Curve(time_s, aif_raw).ttp_s
    v_sel = _pick_vof(vcurves, time_s, aif_ttp, n_vof, vof_min_delay_s, vidx, brain.shape)
    vof = vcurves[v_sel].mean(axis=0)
    vof_vox = np.stack(vidx, axis=1)[v_sel]

    vof_ok = curve_is_clean(vof, time_s, Curve(time_s, aif_raw).ttp_s)
    scale = 1.0
    a_area = area_with_tail(aif_raw, time_s)
    v_area = area_with_tail(vof, time_s)
    ratio = float(v_area / a_area) if a_area > 0 else float("nan")
    if pv_correct and vof_ok:
        if a_area > 0 and v_area > (1.0 + pv_tolerance) * a_area:
            scale = float(min(v_area / a_area, max_pv_scale))
    aif = aif_raw * np.float32(scale)
    return AifVofSelection(
        aif=Curve(time_s=np.asarray(time_s, float), delta_hu=aif.astype(np.float32), voxels_zyx=aif_vox),
        vof=Curve(time_s=np.asarray(time_s, float), delta_hu=vof.astype(np.float32), voxels_zyx=vof_vox),
        aif_raw=aif_raw.astype(np.float32), pv_scale=scale, aif_side=a_side, vof_aif_area_ratio=ratio,
        vof_clean=bool(vof_ok),
    )


def curve_is_clean(curve: np.ndarray, time_s: np.ndarray, before_s: float, max_pre: float = 0.1,
                   max_roughness: float = 0.08) -> bool:
    """Plausibility of a venous (or arterial) curve: flat before ``before_s`` (RMS <= ``max_pre`` x peak) and
    smooth (mean |second difference| <= ``max_roughness`` x peak).  Motion-corrupted curves fail."""
    c = np.asarray(curve, float)
    pk = float(c.max())
    if not np.isfinite(pk) or pk <= 0:
        return False
    pre = c[np.asarray(time_s) < before_s - 4.0]
    pre_ok = len(pre) == 0 or float(np.sqrt(np.mean(pre**2))) <= max_pre * pk
    rough = float(np.mean(np.abs(np.diff(c, 2)))) / pk if len(c) > 2 else 0.0
    return bool(pre_ok and rough <= max_roughness)
