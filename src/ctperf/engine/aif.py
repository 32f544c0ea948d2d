"""Automatic arterial input function (AIF) and venous output function (VOF) selection.

Method (in the spirit of Straka 2010 and Mouridsen 2006; fully vectorised over voxels)
-------------------------------------------------------------------------------------
Features of every candidate curve (delta HU on the uniform grid, temporally smoothed like the tissue curves):
peak height, time to peak (TTP), bolus arrival (first time above 20% of the peak), full width at half maximum
(FWHM), and the "return" = mean of the last samples / peak.

AIF
  1. candidates: the 1% (at least 30) brain voxels with the highest peak, extended up to 5% to every curve at least
     half as high as the brightest ones (half the median of the top 30 peaks), that return towards baseline
     (return < ``max_return_fraction``), peak before the last 15% of the acquisition and have a FWHM >= 3 s
     (narrower "peaks" are motion spikes); voxels that air moves into (absolute HU below -100) or whose HU is
     not bolus-shaped above ``BOLUS_HU_CHECK`` (already above it in the first frame, or above it in more than one
     separate excursion: bone moving in and out) are never candidates (for the VOF neither).  There is no fixed
     upper HU cap: strong boluses (AIF peaks of 700-1200 HU at 70-80 kVp) are used.  AIF candidates keep
     ``bone_margin_mm`` (in-plane) away
     from bone: after motion correction the skull edge still flickers by hundreds of HU (residual misregistration,
     through-plane motion), which looks like early, high enhancement;
  2. arterial phase: among the large-vessel candidates (peak >= half the 95th percentile), the *earliest group*
     of at least 3 curves whose arrival times (first time above 20% of the peak) lie within ``tol`` =
     ``coherence_fraction`` x the median FWHM of these curves (the bolus width).  Arteries precede the venous
     sinus by the brain transit time whatever their number or brightness - unlike a percentile of the candidates'
     TTP, which the large sinus dominates as soon as motion lowers the arterial peaks (partial volume);
  3. venous exclusion: bright curves arriving later than the arterial phase (sinus, veins) and every voxel within
     ``venous_margin_mm`` of them are excluded (sinus edge voxels can look early after motion correction);
  4. hemisphere: the side whose median tissue curve is later by more than ``hemisphere_delay_s``
     (:func:`less_affected_side`) is the affected one; the best candidate is taken on the other side when it has
     arterial-phase candidates;
  5. best = highest peak / FWHM among the arterial-phase candidates (high and narrow = least partial volume and
     least dispersion); the AIF is the mean of the ``n_aif_voxels`` best-scoring voxels on the best voxel's
     hemisphere that are *temporally coherent* with it (TTP and arrival within ``tol``); the number of
     arterial-phase candidates rejected for incoherence is reported (``aif_rejected_coherence``);
VOF
  Voxels (brain dilated by ~5 mm, without bone) peaking at least ``vof_min_delay_s`` after the AIF; the
  ``n_vof_voxels`` with the largest area under the curve (the venous sinus: late peak, largest area).  The
  ranking uses the mean area of the 8 in-plane neighbours (among voxels at least half as bright themselves)
  and the 3x3 mean TTP, so the choice is driven neither by each voxel's own noise nor by a bright neighbour
  (selecting the maximum of noisy areas would bias the VOF area, hence the AIF scaling, upwards).
Partial-volume correction
  The AIF is scaled so its area equals the VOF's (indicator conservation; the sinus is large enough to be free
  of partial volume).  The areas are compared over the same *transported* window
  (:func:`transport_area_ratio`): the VOF over the acquisition, the AIF up to the end minus the centroid lag of
  the VOF behind the AIF, so the later VOF is not penalised by truncation and no tail is extrapolated (an
  exponential tail fitted to a recirculating or truncated curve overestimated the VOF area by 5-14 % on noise-free
  phantom curves).  The scale is the area ratio clipped to
  [1, ``max_pv_scale``] - a continuous function of the ratio, without a dead band (a smaller VOF area means the
  VOF itself is partial-volumed, so the AIF is not scaled down); it is skipped when the VOF curve is implausible
  (:func:`curve_is_clean`, e.g. motion).
  The measured ratio is always reported (qa_values ``vof_aif_area_ratio``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ctperf.core.morphology import dilate_disk_inplane
from ctperf.core.types import Curve


@dataclass
class CurveFeatures:
    peak: np.ndarray
    ttp_s: np.ndarray
    arrival_s: np.ndarray
    fwhm_s: np.ndarray
    return_fraction: np.ndarray
    auc: np.ndarray

    def take(self, rows: np.ndarray) -> CurveFeatures:
        """The features of the curves ``rows`` (every feature is computed from its own curve alone)."""
        return CurveFeatures(*(np.asarray(v)[rows] for v in vars(self).values()))


@dataclass
class AifVofSelection:
    aif: Curve
    vof: Curve
    #: AIF before partial-volume scaling (delta HU).
    aif_raw: np.ndarray
    pv_scale: float
    aif_side: int
    #: Area(VOF) / area(AIF before scaling) over the same transported window (:func:`transport_area_ratio`).
    vof_aif_area_ratio: float = float("nan")
    #: False when the VOF curve is implausible (not flat before the bolus or too rough): then no PV scaling.
    vof_clean: bool = True
    #: Where the AIF / VOF voxels came from: "automatic" (this module's search) or "mask" (the user's).
    aif_source: str = "automatic"
    vof_source: str = "automatic"
    #: Well-scoring AIF candidates rejected because their TTP / arrival differ from the best candidate's by more
    #: than ``coherence_fraction`` x the bolus width (QA: many = motion or mixed arterial/venous candidates).
    aif_rejected_coherence: int = 0
    #: Bright AIF candidates rejected because they lie in / next to a late-arriving (venous) structure.
    aif_rejected_venous: int = 0
    #: Arrival (s) of the arterial phase (earliest coherent group of bright curves).
    arterial_arrival_s: float = float("nan")


def bolus_fwhm_s(curve: np.ndarray, dt_s: float) -> float:
    """Full width at half maximum (s) of one bolus curve sampled every ``dt_s``: between the half-peak crossings
    nearest its peak, linearly interpolated (NaN without a positive peak or when a side never falls to half).  The
    width of the first pass alone, to sub-sample precision; :func:`curve_features`' ``fwhm_s`` counts every sample
    above half, recirculation included, which is enough to rank candidate curves."""
    c = np.asarray(curve, float)
    if c.size < 3 or not np.isfinite(c).all() or c.max() <= 0:
        return float("nan")
    i, half = int(np.argmax(c)), 0.5 * float(c.max())
    below_l = np.flatnonzero(c[:i] < half)
    below_r = np.flatnonzero(c[i:] < half)
    if len(below_l) == 0 or len(below_r) == 0:
        return float("nan")
    a, b = int(below_l[-1]), i + int(below_r[0])
    left = a + (half - c[a]) / (c[a + 1] - c[a])
    right = b - 1 + (c[b - 1] - half) / (c[b - 1] - c[b])
    return float((right - left) * dt_s)


def frame_noise_sd(values_k: np.ndarray, times_s: np.ndarray, half: int = 3) -> float:
    """Robust SD of the white noise on a smooth curve sampled at ``times_s`` (any spacing): the median absolute
    leave-one-out residual of each sample from the quartic through its ``2 half`` nearest neighbours in time, scaled
    to the noise's SD (x 1.4826 / sqrt(1 + |w|^2), ``w`` the fit's weights).  A quartic follows a bolus's peak closely
    enough at clinical frame rates that the curve's own shape adds little to the residuals (measured: the noise of
    the project phantom's 5-voxel AIF at 8 / 15 HU, 3.57 / 6.68 HU, reads 3.57-3.64 / 7.90 HU; the Chakwizira DRO's
    one-voxel AIF, 21.5 HU, 20.4 HU).  NaN with fewer than ``2 half + 1`` samples."""
    v = np.asarray(values_k, np.float64)
    t = np.asarray(times_s, np.float64)
    centre = np.arange(half, len(v) - half)
    if len(centre) == 0:
        return float("nan")
    idx = centre[:, None] + np.r_[-half:0, 1:half + 1][None, :]  # (n, 2 half) neighbours of each sample
    design = (t[idx] - t[centre][:, None])[..., None] ** np.arange(4, -1, -1)  # (n, 2 half, 5)
    w = np.linalg.pinv(design)[:, -1, :]  # each fit's weights for its value at the left-out time
    res = (v[centre] - (w * v[idx]).sum(axis=1)) / np.sqrt(1.0 + (w * w).sum(axis=1))
    return float(np.median(np.abs(res)) * 1.4826)


def aif_noise_factor(aif_frames_k: np.ndarray, frame_noise_hu: float, operators_ztk: np.ndarray,
                     aif_grid_t: np.ndarray) -> np.ndarray:
    """``L`` (T, n_slices K) with ``L L'`` the covariance of the AIF's noise on the uniform time grid (delta HU^2).

    The AIF's mean frame values ``aif_frames_k`` (K,) carry white noise of SD ``frame_noise_hu``
    (:func:`frame_noise_sd`); the grid curve is the linear resampling-and-smoothing operator of the AIF's slices
    (``operators_ztk``, (n_slices, T, K): :func:`ctperf.engine.preprocess.resampling_matrices`, averaged over the
    slices) applied to them, times the partial-volume scale that made ``aif_grid_t`` (T,) (least squares between
    the two).  Used by the study dispersion prior: every model curve is built from this one noisy AIF, so its noise
    adds to every model's misfit, the more the sharper the model
    (:func:`ctperf.engine.deconvolution.aif_noise_misfits`)."""
    ops = np.asarray(operators_ztk, np.float64)
    pred = ops.mean(axis=0) @ np.asarray(aif_frames_k, np.float64)
    scale = float(pred @ np.asarray(aif_grid_t, np.float64)) / max(float(pred @ pred), 1e-12)
    # mean over the slices of M_z M_z': the slices' operators side by side, each / sqrt(n_slices)
    return scale * frame_noise_hu / np.sqrt(len(ops)) * np.concatenate(list(ops), axis=1)


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


@dataclass
class AifPick:
    """Result of :func:`_pick_aif` (indices into the candidate curves)."""

    selected: np.ndarray
    side: int
    #: Candidates that scored among the best on the chosen side but were rejected as temporally incoherent
    #: with the best candidate (TTP or arrival too far from it).
    rejected_coherence: int = 0
    #: Bright candidates dropped because they lie in / next to a late-peaking (venous) structure.
    rejected_venous: int = 0
    #: Arrival (s) of the earliest coherent cluster of bright curves (the arterial phase).
    arterial_arrival_s: float = float("nan")


def _earliest_cluster(arrival: np.ndarray, window_s: float, min_members: int) -> float:
    """Arrival of the earliest group of curves: the median of the first window ``[a, a + window_s]`` that holds at
    least ``min_members`` arrivals.

    The arterial phase is the *earliest* group of bright curves: arteries precede the venous sinus by the brain
    transit time, whatever their relative number or brightness.  Requiring a group (not a single curve) ignores an
    isolated early outlier.  Falls back to the minimum when no group is large enough.
    """
    a = np.sort(np.asarray(arrival, float))
    if len(a) == 0:
        return float("nan")
    m = max(1, min(int(min_members), len(a)))
    counts = np.searchsorted(a, a + window_s + 1e-9, side="right") - np.arange(len(a))
    ok = np.nonzero(counts >= m)[0]
    if len(ok) == 0:
        return float(a[0])
    i = int(ok[0])
    return float(np.median(a[i : i + counts[i]]))


def _pick_aif(curves: np.ndarray | None, coords: np.ndarray, time_s: np.ndarray, side: np.ndarray | None, n_aif: int,
              max_return_fraction: float, coherence_fraction: float, eligible: np.ndarray | None = None,
              shape: tuple | None = None, pixel_mm: float = 1.0, venous_margin_mm: float = 3.0,
              min_fwhm_s: float = 3.0, min_cluster: int = 3, preferred_side: int = 0,
              features: CurveFeatures | None = None) -> AifPick:
    """AIF voxels among ``curves`` (n, T); see the module docstring (steps 1-5).  ``features``: the curves'
    :func:`curve_features` when already computed (then ``curves`` is not needed)."""
    f = curve_features(curves, time_s) if features is None else features
    n = len(f.peak)
    ok = np.ones(n, bool) if eligible is None else np.asarray(eligible, bool)
    if ok.sum() < max(n_aif, 1):
        ok = np.ones(n, bool)
    peak = np.where(ok, f.peak, -np.inf)
    # candidates: the top 1% (>= 30) by peak, extended (up to 5%) to every curve at least half as high as the
    # brightest ones - a large venous sinus must not fill the candidate list on its own
    n_ok = int(ok.sum())
    n_min, n_max = min(n_ok, max(30, int(0.01 * n))), min(n_ok, max(30, int(0.05 * n)))
    top = np.argpartition(peak, -n_max)[-n_max:]
    top = top[np.argsort(peak[top])[::-1]]
    thr = 0.5 * float(np.median(peak[top[: min(30, len(top))]]))
    cand = top[: max(n_min, int(np.sum(peak[top] >= thr)))]
    t_end = time_s[-1] - 0.15 * (time_s[-1] - time_s[0])
    good = cand[(f.return_fraction[cand] < max_return_fraction) & (f.ttp_s[cand] < t_end) & (f.peak[cand] > 0)
                & (f.fwhm_s[cand] >= min_fwhm_s)]
    if len(good) < n_aif:
        good = cand[f.peak[cand] > 0]
    if len(good) == 0:
        good = cand
    # timing is read on the large vessels only (curves at least half as high as the brightest ones): the arrival
    # of a faint curve is dominated by noise
    big = good[f.peak[good] >= 0.5 * float(np.percentile(f.peak[good], 95))]
    # bolus width: the FWHM of the arterial curves (first guess from all vessel curves, which the wider venous
    # curves may dominate, then from the earliest group); timing tolerances are a fraction of it
    min_tol = 2.0 * float(time_s[1] - time_s[0])
    tol = max(coherence_fraction * float(np.median(f.fwhm_s[big])), min_tol)
    t_art = _earliest_cluster(f.arrival_s[big], tol, min_cluster)
    first = big[f.arrival_s[big] <= t_art + tol]
    tol = max(coherence_fraction * float(np.median(f.fwhm_s[first])), min_tol)
    early = big[f.arrival_s[big] <= t_art + tol]
    if len(early) == 0:
        early = good
    # venous structures: bright curves arriving clearly after the arterial phase, widened by a margin (after
    # motion correction the edge voxels of a sinus can look early and high; they are not arteries)
    n_ven = 0
    venous_near = np.zeros(n, bool)
    if shape is not None and coords is not None and len(coords):
        late = (f.peak >= float(np.min(f.peak[big]))) & (f.arrival_s > t_art + tol)
        if late.any():
            vol = np.zeros(shape, bool)
            vol[tuple(coords[late].T)] = True
            vol = _near(vol, venous_margin_mm, pixel_mm)
            venous_near = vol[tuple(coords.T)] & ~late
    n_ven = int(venous_near[good].sum())
    if (~venous_near[early]).any():
        early = early[~venous_near[early]]
    if side is not None and preferred_side:
        pref = early[side[early] == preferred_side]
        if len(pref):
            early = pref
    score = f.peak / np.maximum(f.fwhm_s, 1e-3)
    # reference timing: the median TTP / arrival of the best-scoring arterial-phase curves (one high but dispersed
    # or motion-modulated curve cannot set it); the best voxel is the best-scoring curve coherent with it
    top = early[np.argsort(score[early])[::-1][: max(min_cluster, n_aif)]]
    ttp_b, arr_b = float(np.median(f.ttp_s[top])), float(np.median(f.arrival_s[top]))
    coh_early = early[(np.abs(f.ttp_s[early] - ttp_b) <= tol) & (np.abs(f.arrival_s[early] - arr_b) <= tol)]
    best = int((coh_early if len(coh_early) else early)[np.argmax(score[coh_early if len(coh_early) else early])])

    # coherent with the reference timing: same arterial phase within a fraction of the bolus width
    coherent = (np.abs(f.ttp_s - ttp_b) <= tol) & (np.abs(f.arrival_s - arr_b) <= tol)
    order = good[np.argsort(score[good])[::-1]]
    best_side = 0
    if side is not None:
        best_side = int(side[best])
        same = order[side[order] == best_side]
        if len(same) >= min(n_aif, len(order)):
            order = same
    arterial_phase = np.zeros(n, bool)
    arterial_phase[big[f.arrival_s[big] <= t_art + tol]] = True
    chosen, n_coh = [best], 0
    for i in order:
        if len(chosen) >= n_aif:
            break
        if i == best or venous_near[i]:
            continue
        if not coherent[i]:
            # counted when it would otherwise have qualified (an arterial-phase vessel curve): QA of how mixed
            # the timing of the arterial candidates is (motion, dispersion); veins are not counted here
            n_coh += int(arterial_phase[i])
            continue
        chosen.append(int(i))
    return AifPick(np.asarray(chosen, int), best_side, n_coh, n_ven, t_art)


def less_affected_side(curves_nt: np.ndarray, side: np.ndarray | None, time_s: np.ndarray,
                       min_delay_s: float = 1.0) -> int:
    """Hemisphere (+1 / -1) whose typical tissue curve comes first, or 0 when neither is clearly later.

    Per hemisphere the voxel-wise *median* curve (vessels and noise do not move it) and its centroid time
    (first moment of its positive part); a side whose centroid is later by more than ``min_delay_s`` is the
    affected one (delayed, dispersed bolus downstream of an occlusion), and the AIF is taken on the other side.
    """
    if side is None:
        return 0
    t = np.asarray(time_s, float)
    cent = {}
    for s in (-1, 1):
        m = side == s
        if m.sum() < 50:
            return 0
        idx = np.flatnonzero(m)
        if len(idx) > 20000:  # the median curve of 20k evenly spread voxels is the same to well under 0.1 s
            idx = idx[:: len(idx) // 20000 + 1]
        med = np.clip(np.median(curves_nt[idx], axis=0), 0.0, None)
        if med.sum() <= 0:
            return 0
        cent[s] = float((t * med).sum() / med.sum())
    if abs(cent[1] - cent[-1]) <= min_delay_s:
        return 0
    return 1 if cent[1] < cent[-1] else -1


def _near(mask_zyx: np.ndarray, margin_mm: float, pixel_mm: float) -> np.ndarray:
    """``mask`` dilated in-plane by a disk of radius ``margin_mm`` (slices are thick: no dilation along z)."""
    m = np.asarray(mask_zyx, bool)
    if margin_mm <= 0 or not m.any():
        return m
    return dilate_disk_inplane(m, max(1, int(round(margin_mm / pixel_mm))))


def _smoothed_feature(values: np.ndarray, idx: tuple, shape: tuple, exclude_self: bool = False) -> np.ndarray:
    """In-plane 3x3 mean of a per-voxel feature over the candidate voxels (reduces noise-selection bias);
    with ``exclude_self`` the mean of the 8 neighbours only (the voxel's own noise does not affect its rank).

    Computed on the candidates' bounding box plus a 2-pixel margin of zeros: the filter reads the same values
    there as on the whole ``shape`` volume (which is 0 outside the candidates)."""
    lo = [max(0, int(i.min()) - 2) if len(i) else 0 for i in idx]
    hi = [min(n, int(i.max()) + 3) if len(i) else 0 for i, n in zip(idx, shape)]
    idx = tuple(i - a for i, a in zip(idx, lo))
    shape = tuple(b - a for a, b in zip(lo, hi))
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


def _largest_first(values: np.ndarray, n: int) -> np.ndarray:
    """``np.argsort(values)[::-1][:n]``: indices of the ``n`` largest values, largest first.

    When those ``n`` values are distinct and above all others (the order is then unique) they are found by a
    partition and only they are sorted; otherwise (ties, NaN) the full argsort decides, as before.
    """
    v = np.asarray(values)
    if 0 < n < len(v):
        top = np.flatnonzero(v >= np.partition(v, len(v) - n)[len(v) - n])
        if len(top) == n and len(np.unique(v[top])) == n:
            return top[np.argsort(v[top])[::-1]]
    return np.argsort(v)[::-1][:n]


def _pick_vof(f: CurveFeatures, aif_ttp_s: float, n_vof: int, min_delay_s: float, idx: tuple,
              shape: tuple) -> np.ndarray:
    """VOF voxels (indices into the candidates ``idx`` of a ``shape`` volume) from their curves' features ``f``
    (see the module docstring)."""
    nbr = _smoothed_feature(f.auc, idx, shape, exclude_self=True)
    # rank by the neighbours' area (independent of the voxel's own noise), among voxels that are themselves
    # at least half as bright (not the edge of the sinus)
    auc = np.where(f.auc >= 0.5 * nbr, nbr, -np.inf)
    ttp = _smoothed_feature(f.ttp_s, idx, shape)
    late = np.nonzero((ttp >= aif_ttp_s + min_delay_s) & (f.peak > 0))[0]
    if len(late) < n_vof:
        late = np.arange(len(f.peak))
    return late[_largest_first(auc[late], n_vof)]


def select_aif_vof(delta_tzyx: np.ndarray, time_s: np.ndarray, brain: np.ndarray, baseline_hu: np.ndarray,
                   pixel_mm: float, side_zyx: np.ndarray | None = None, n_aif: int = 5, n_vof: int = 5,
                   pv_correct: bool = True, max_return_fraction: float = 0.5, coherence_fraction: float = 0.25,
                   bone_margin_mm: float = 4.0, venous_margin_mm: float = 3.0, hemisphere_delay_s: float = 1.0,
                   vof_bone_margin_mm: float = 2.0,
                   vof_min_delay_s: float = 2.0, max_pv_scale: float = 3.0,
                   peak_zyx: np.ndarray | None = None, aif_voxels_zyx: np.ndarray | None = None,
                   vof_voxels_zyx: np.ndarray | None = None) -> AifVofSelection:
    """Choose and average the AIF and VOF voxels (see module docstring).

    delta_tzyx : (T, z, y, x) delta HU on the uniform grid ``time_s``; brain : bool (z, y, x) search region for
    the AIF; side_zyx : optional hemisphere labels (+1 left, -1 right); peak_zyx : ``delta_tzyx.max(axis=0)`` when
    the caller already has it (one pass over the 4D data less); aif_voxels_zyx, vof_voxels_zyx : (n, 3) voxels
    chosen by the user (averaged as they are, no search; the AIF is still scaled for partial volume by the VOF).
    """
    if aif_voxels_zyx is not None:
        return _user_selection(delta_tzyx, time_s, brain, baseline_hu, pixel_mm, side_zyx, n_vof, pv_correct,
                               vof_min_delay_s, vof_bone_margin_mm, max_pv_scale, peak_zyx, aif_voxels_zyx,
                               vof_voxels_zyx)
    hu_ok = bolus_plausible(delta_tzyx, baseline_hu, peak_zyx)
    aif_region = brain & hu_ok
    vof_region = _vof_region(brain, baseline_hu, pixel_mm, hu_ok, vof_bone_margin_mm)
    # one gather and one feature pass for the voxels of both searches (the regions overlap almost entirely)
    both = np.nonzero(aif_region | vof_region)
    all_curves = delta_tzyx[:, both[0], both[1], both[2]].T
    all_features = curve_features(all_curves, time_s)
    row = np.zeros(brain.shape, np.intp)
    row[both] = np.arange(len(both[0]))

    idx = np.nonzero(aif_region)
    a_rows = row[idx]
    coords = np.stack(idx, axis=1)
    side = side_zyx[idx] if side_zyx is not None else None
    # AIF voxels keep away from bone (in-plane): residual motion and through-plane partial volume of the skull
    # make its edge flicker by hundreds of HU, which looks like early, narrow, high enhancement
    near_bone = _near(baseline_hu > 150.0, bone_margin_mm, pixel_mm)
    # hemisphere labels of the AIF search voxels among all gathered curves (0: VOF-only voxels, in neither side)
    side_all = None if side is None else np.where(aif_region[both], side_zyx[both], 0)
    pref = less_affected_side(all_curves, side_all, time_s, hemisphere_delay_s)
    pick = _pick_aif(None, coords, time_s, side, n_aif, max_return_fraction, coherence_fraction,
                     eligible=~near_bone[idx], shape=brain.shape, pixel_mm=pixel_mm,
                     venous_margin_mm=venous_margin_mm, preferred_side=pref,
                     features=all_features.take(a_rows))
    a_sel, a_side = pick.selected, pick.side
    aif_raw = all_curves[a_rows[a_sel]].mean(axis=0)
    aif_vox = coords[a_sel]

    vidx = np.nonzero(vof_region)
    v_rows = row[vidx]
    aif_ttp = Curve(time_s, aif_raw).ttp_s
    if vof_voxels_zyx is None:
        v_sel = _pick_vof(all_features.take(v_rows), aif_ttp, n_vof, vof_min_delay_s, vidx, brain.shape)
        vof = all_curves[v_rows[v_sel]].mean(axis=0)
        vof_vox = np.stack(vidx, axis=1)[v_sel]
    else:
        vof, vof_vox = _mean_curve(delta_tzyx, vof_voxels_zyx)
    sel = _scaled_selection(aif_raw, aif_vox, vof, vof_vox, time_s, pv_correct, max_pv_scale)
    sel.aif_side, sel.vof_source = a_side, "automatic" if vof_voxels_zyx is None else "mask"
    sel.aif_rejected_coherence, sel.aif_rejected_venous = pick.rejected_coherence, pick.rejected_venous
    sel.arterial_arrival_s = pick.arterial_arrival_s
    return sel


def _vof_region(brain: np.ndarray, baseline_hu: np.ndarray, pixel_mm: float, hu_ok: np.ndarray,
                bone_margin_mm: float) -> np.ndarray:
    """The VOF search region: the brain dilated by ~5 mm, without bone, where the bolus is plausible (``hu_ok``).
    The sinus lies against the inner table of the skull: a margin of ``bone_margin_mm`` from bone is kept (residual
    motion makes the voxels touching bone flicker; the VOF is read in the sinus lumen)."""
    region = dilate_disk_inplane(brain, max(1, int(round(5.0 / pixel_mm)))) & (baseline_hu < 150) & hu_ok
    if bone_margin_mm > 0:
        region &= ~_near(baseline_hu >= 150, bone_margin_mm, pixel_mm)
    return region


def _mean_curve(delta_tzyx: np.ndarray, voxels_zyx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean curve (T,) of the given voxels ((n, 3) z, y, x) and those voxels."""
    vox = np.asarray(voxels_zyx, np.int64).reshape(-1, 3)
    return delta_tzyx[:, vox[:, 0], vox[:, 1], vox[:, 2]].mean(axis=1), vox


def _scaled_selection(aif_raw: np.ndarray, aif_vox: np.ndarray, vof: np.ndarray, vof_vox: np.ndarray,
                      time_s: np.ndarray, pv_correct: bool, max_pv_scale: float) -> AifVofSelection:
    """The AIF scaled for partial volume by the VOF's area (when the VOF is clean and ``pv_correct``)."""
    aif_ttp = Curve(time_s, aif_raw).ttp_s
    vof_ok = curve_is_clean(vof, time_s, aif_ttp)
    scale = 1.0
    ratio = transport_area_ratio(aif_raw, vof, time_s)
    if pv_correct and vof_ok:
        scale = partial_volume_scale(1.0, ratio, max_pv_scale)
    aif = aif_raw * np.float32(scale)
    return AifVofSelection(
        aif=Curve(time_s=np.asarray(time_s, float), delta_hu=aif.astype(np.float32), voxels_zyx=aif_vox),
        vof=Curve(time_s=np.asarray(time_s, float), delta_hu=vof.astype(np.float32), voxels_zyx=vof_vox),
        aif_raw=aif_raw.astype(np.float32), pv_scale=scale, aif_side=0, vof_aif_area_ratio=ratio,
        vof_clean=bool(vof_ok))


def _user_selection(delta_tzyx, time_s, brain, baseline_hu, pixel_mm, side_zyx, n_vof, pv_correct, vof_min_delay_s,
                    vof_bone_margin_mm, max_pv_scale, peak_zyx, aif_voxels_zyx, vof_voxels_zyx) -> AifVofSelection:
    """The user's AIF voxels (and VOF voxels, or the automatic VOF search after that AIF's peak); the AIF's side is
    the hemisphere most of its voxels lie in (0: none or the midline)."""
    aif_raw, aif_vox = _mean_curve(delta_tzyx, aif_voxels_zyx)
    if vof_voxels_zyx is not None:
        vof, vof_vox = _mean_curve(delta_tzyx, vof_voxels_zyx)
    else:
        hu_ok = bolus_plausible(delta_tzyx, baseline_hu, peak_zyx)
        vidx = np.nonzero(_vof_region(brain, baseline_hu, pixel_mm, hu_ok, vof_bone_margin_mm))
        curves = delta_tzyx[:, vidx[0], vidx[1], vidx[2]].T
        v_sel = _pick_vof(curve_features(curves, time_s), Curve(time_s, aif_raw).ttp_s, n_vof, vof_min_delay_s,
                          vidx, brain.shape)
        vof, vof_vox = curves[v_sel].mean(axis=0), np.stack(vidx, axis=1)[v_sel]
    sel = _scaled_selection(aif_raw, aif_vox, vof, vof_vox, time_s, pv_correct, max_pv_scale)
    if side_zyx is not None:
        sel.aif_side = int(np.sign(np.sign(side_zyx[tuple(aif_vox.T)]).sum()))
    sel.aif_source, sel.vof_source = "mask", "automatic" if vof_voxels_zyx is None else "mask"
    return sel


def transport_area_ratio(aif: np.ndarray, vof: np.ndarray, time_s: np.ndarray) -> float:
    """Area(VOF) / area(AIF) compared over the same transported window (indicator conservation).

    The VOF is the AIF delayed and dispersed by the brain, so its area up to the last sample T equals the AIF's
    area up to T - lag, with lag the difference of the curves' centroids (the mean transit from artery to vein).
    ``aif``, ``vof``: (T,) delta HU on the uniform grid ``time_s`` (s).  NaN when either area is not positive.
    On noise-free project and independent phantom curves the ratio reads 0.98-1.00 (truth 1), including
    acquisitions that end before the VOF returns to baseline.
    """
    a = np.asarray(aif, float)
    v = np.asarray(vof, float)
    t = np.asarray(time_s, float)
    dt = float(t[1] - t[0])
    pa, pv = np.clip(a, 0.0, None), np.clip(v, 0.0, None)
    if pa.sum() <= 0 or pv.sum() <= 0:
        return float("nan")
    lag = max(0.0, float((t * pv).sum() / pv.sum() - (t * pa).sum() / pa.sum()))
    a_area = float(np.interp(t[-1] - lag, t, np.cumsum(a) * dt))
    v_area = float(v.sum() * dt)
    return v_area / a_area if a_area > 0 and v_area > 0 else float("nan")


def partial_volume_scale(aif_area: float, vof_area: float, max_scale: float = 3.0) -> float:
    """AIF scale factor = area(VOF) / area(AIF) clipped to [1, ``max_scale``]; 1 when the AIF area is not positive.

    Continuous in the area ratio (no dead band): a 5 % larger VOF area scales the AIF by 1.05.
    """
    if not aif_area > 0 or not np.isfinite(vof_area):
        return 1.0
    return float(np.clip(vof_area / aif_area, 1.0, max_scale))


#: Above this absolute HU a voxel's curve must be one bolus excursion (bone is brighter, iodine rarely is).
BOLUS_HU_CHECK = 800.0


def bolus_plausible(delta_tzyx: np.ndarray, baseline_hu: np.ndarray, peak_zyx: np.ndarray | None = None
                    ) -> np.ndarray:
    """Voxels (z, y, x) whose curve can be contrast passing through: absolute HU never below -100 (air moved in)
    and, above ``BOLUS_HU_CHECK``, one contiguous excursion that starts after the first frame (bone moving in
    and out of a voxel gives several, bone at rest is bright from the start).  No fixed upper HU cap.

    The excursions are counted only on the few curves that cross ``BOLUS_HU_CHECK`` (the curve's minimum and
    maximum find them): a curve never above it passes that test, a curve always above it (bone) fails it.
    ``peak_zyx``: ``delta_tzyx.max(axis=0)`` when the caller already has it.
    """
    thr = BOLUS_HU_CHECK - np.asarray(baseline_hu)
    lowest = delta_tzyx.min(axis=0)
    always_high = lowest > thr
    ok = ((lowest + baseline_hu) > -100.0) & ~always_high
    peak = delta_tzyx.max(axis=0) if peak_zyx is None else peak_zyx
    crossing = np.flatnonzero((peak > thr) & ~always_high)
    if crossing.size:
        high = np.take(delta_tzyx.reshape(len(delta_tzyx), -1), crossing, axis=1) > thr.ravel()[crossing]
        n_runs = np.count_nonzero(high[1:] & ~high[:-1], axis=0)
        ok.ravel()[crossing] &= ~high[0] & (n_runs <= 1)
    return ok


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
