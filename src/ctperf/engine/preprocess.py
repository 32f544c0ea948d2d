"""Preprocessing of a 4D CTP acquisition into baseline-subtracted curves on a uniform time grid.

Every function here is pure (numpy in, numpy out).  Array conventions follow :mod:`ctperf.core.types`:
4D arrays are ``(t, z, y, x)``, 3D arrays ``(z, y, x)``, affines map voxel ``(x, y, z)`` to RAS mm.

Steps (see :func:`preprocess_study`):

1. rigid in-plane motion correction between frames (:mod:`ctperf.engine.motion`), applied once per moved frame;
2. in-plane binning to the computation grid (integer factor ``round(compute_pixel_mm / pixel_mm)``; area average,
   so the affine stays exact: the new voxel centre is the centre of the binned block);
3. automatic baseline frames: frames acquired ``baseline_margin_s`` before the bolus reaches the earliest of the
   brightest enhancing voxels (arteries);
4. baseline image (mean of baseline frames, HU) and ``delta HU = HU - baseline``;
5. brain and CSF masks from the baseline image (HU window + morphology);
6. per-slice times ``times_s[t, z]`` and variable sampling -> every voxel curve linearly resampled onto one
   uniform time grid shared by all slices (so arterial and tissue curves from different slices are compared at
   true acquisition times).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage, special

from ctperf.config import PreprocessConfig, thread_count
from ctperf.core.grid import bin_factor_for, bin_inplane, binned_affine  # noqa: F401 (re-exported)
from ctperf.core.morphology import dilate_disk_inplane, fill_holes_inplane
from ctperf.core.types import spacing_xyz_mm
from ctperf.engine.motion import estimate_inplane_motion, frame_displacement_mm, frame_moved, warp_frame_inplane


@dataclass
class Preprocessed:
    """Output of :func:`preprocess_study` (all on the computation grid)."""

    #: Baseline-subtracted curves, delta HU, float32, shape (T, z, y, x) on the uniform time grid (temporally
    #: smoothed when ``preprocess_study`` was given a ``temporal_sigma_s``).
    delta_hu: np.ndarray
    #: Uniform time grid (s, from the study's first frame), shape (T,).
    time_s: np.ndarray
    dt_s: float
    #: Mean of the baseline frames (HU), (z, y, x).
    baseline_hu: np.ndarray
    brain: np.ndarray
    csf: np.ndarray
    affine_ras: np.ndarray
    #: In-plane binning factor applied to the native grid.
    bin_factor: int
    n_baseline_frames: int
    #: Time of bolus arrival in the arterial-like global curve (s).
    bolus_arrival_s: float
    #: Temporal noise SD (HU) on the computation grid: the median over brain voxels of the standard deviation of
    #: their baseline frames, divided by :func:`median_sd_fraction` (an estimate of the SD for any number of frames).
    noise_hu: float
    #: Per-frame in-plane rigid motion: (tx_mm, ty_mm, rotation_rad) relative to the reference frames.
    motion_params: np.ndarray
    motion_max_mm: float
    #: Time of the last sample of each slice (s) - for truncation checks.
    acquisition_end_s: float
    #: The study's first frame time (s, the input's clock): ``time_s`` and ``acquisition_end_s`` count from it, and
    #: so must any native frame times compared with them.
    time_origin_s: float
    extra: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------------------------
# Grid helpers
# ----------------------------------------------------------------------------------------------------------------

def pixel_spacing_mm(affine_ras: np.ndarray) -> np.ndarray:
    """Voxel size (x, y, z) in mm from the columns of the affine."""
    return spacing_xyz_mm(affine_ras)


# ----------------------------------------------------------------------------------------------------------------
# Time handling
# ----------------------------------------------------------------------------------------------------------------

def median_frame_interval_s(times_s: np.ndarray) -> float:
    """Median interval (s) between consecutive acquired frames over every slice's times ((t,) or (t, z)); NaN
    when no interval is positive."""
    d = np.diff(np.asarray(times_s, float), axis=0)
    return float(np.median(d[d > 0])) if np.any(d > 0) else float("nan")


def uniform_time_grid(times_s: np.ndarray, time_step_s: float | None, max_time_step_s: float = 1.0) -> np.ndarray:
    """Uniform grid (s) covering the interval sampled by every slice.

    Starts at the earliest sample of any slice and ends at the earliest "last sample" over slices (no
    extrapolation at the end).  Step: ``time_step_s`` or, when None, the median native interval capped at
    ``max_time_step_s`` (a finer grid reduces Tmax quantisation and the high-flow underestimation of SVD).
    """
    t = np.asarray(times_s, float)
    if t.ndim == 1:
        t = t[:, None]
    if time_step_s is None or time_step_s <= 0:
        step = median_frame_interval_s(t)
        step = min(step if np.isfinite(step) else 1.0, max_time_step_s)
    else:
        step = float(time_step_s)
    t0 = float(t[0].min())
    t1 = float(t[-1].min())
    n = int(np.floor((t1 - t0) / step + 1e-6)) + 1
    return t0 + step * np.arange(max(n, 2))


def resampling_matrices(times_s: np.ndarray, grid_s: np.ndarray, temporal_sigma_s: float = 0.0) -> np.ndarray:
    """Per-slice linear operators (z, T_grid, T_native) mapping native samples to the uniform grid.

    Row ``k`` of slice ``z`` linearly interpolates the slice's samples at ``grid_s[k]`` (values before the
    slice's first sample are held).  With ``temporal_sigma_s > 0`` the Gaussian temporal smoothing on the uniform
    grid (edges held, :func:`ctperf.engine.denoise.temporal_smooth`) is folded in: ``M_z = G @ W_z``.
    """
    t = np.asarray(times_s, float)
    nt, nz = t.shape
    ng = len(grid_s)
    mats = np.zeros((nz, ng, nt))
    rows = np.arange(ng)
    for z in range(nz):
        tz = t[:, z]
        i = np.clip(np.searchsorted(tz, grid_s, side="right") - 1, 0, nt - 2)
        w = np.clip((grid_s - tz[i]) / np.maximum(tz[i + 1] - tz[i], 1e-9), 0.0, 1.0)
        mats[z, rows, i] += 1.0 - w
        mats[z, rows, i + 1] += w
    if temporal_sigma_s and temporal_sigma_s > 0 and ng > 1:
        dt = float(grid_s[1] - grid_s[0])
        g = ndimage.gaussian_filter1d(np.eye(ng), temporal_sigma_s / dt, axis=0, mode="nearest", truncate=3.0)
        mats = np.einsum("ij,zjk->zik", g, mats)
    return mats.astype(np.float32)


def resample_to_grid(data_tzyx: np.ndarray, times_s: np.ndarray, grid_s: np.ndarray,
                     temporal_sigma_s: float = 0.0, mask_zyx: np.ndarray | None = None,
                     workers: int | None = None) -> np.ndarray:
    """Resample every voxel curve onto ``grid_s`` slice by slice (``times_s`` is (t, z)); float32 (T, z, y, x).

    Linear interpolation in time (and optionally Gaussian temporal smoothing), applied as one small matrix per
    slice to all its voxels at once (see :func:`resampling_matrices`).  With ``mask_zyx`` only the voxels inside
    it are kept; the others are 0.

    Each slice is one BLAS matrix product read straight from the input frames and written straight into the
    output (both are views: no gather/scatter copies), over the band of image rows that holds the slice's mask
    voxels; the voxels of that band outside the mask are then zeroed.  Every output voxel is the product of the
    same operator row with its own curve, whatever the band, so the result depends neither on the band nor on
    ``workers`` (threads over slices; numpy releases the GIL, None = all CPU cores).
    """
    nt, nz = data_tzyx.shape[:2]
    t = np.asarray(times_s, float)
    if t.ndim == 1:
        t = np.repeat(t[:, None], nz, axis=1)
    mats = resampling_matrices(t, np.asarray(grid_s, float), temporal_sigma_s)
    ng = len(grid_s)
    out = np.zeros((ng,) + data_tzyx.shape[1:], np.float32)  # pages outside every band are never touched

    def one_slice(z: int) -> None:
        if mask_zyx is None:
            y0, y1 = 0, data_tzyx.shape[2]
        else:
            rows = np.flatnonzero(np.any(mask_zyx[z], axis=1))
            if not len(rows):
                return
            y0, y1 = int(rows[0]), int(rows[-1]) + 1
        src = np.asarray(data_tzyx[:, z, y0:y1], np.float32).reshape(nt, -1)
        np.matmul(mats[z], src, out=out[:, z, y0:y1].reshape(ng, -1))
        if mask_zyx is not None:
            np.copyto(out[:, z, y0:y1], np.float32(0.0), where=~np.asarray(mask_zyx[z, y0:y1], bool))

    with ThreadPoolExecutor(max_workers=thread_count(workers, nz)) as pool:
        list(pool.map(one_slice, range(nz)))
    return out


def bolus_arrival_s(curves_tn: np.ndarray, frame_times_s: np.ndarray, fraction: float = 0.2,
                    percentile: float = 5.0) -> float:
    """Arterial bolus arrival (s) from a set of bright enhancing curves (t, n).

    Per curve: the first time it exceeds (and stays above for two frames) its pre-contrast level (mean of the
    first two frames) + ``fraction`` of its range, linearly interpolated between frames.  The arrival is a low
    ``percentile`` of these times, so the arteries (earliest) are found even when the much larger venous sinus
    dominates the brightest voxels.
    """
    c = np.asarray(curves_tn, np.float32)
    t = np.asarray(frame_times_s, float)
    base = c[:2].mean(axis=0)
    thr = base + fraction * (c.max(axis=0) - base)
    above = c > thr[None]
    stays = above.copy()
    stays[:-1] &= above[1:]
    i = np.argmax(stays, axis=0)
    # Curves "rising" at the very first frames are not bolus curves (motion moving an edge into the voxel,
    # bone/air partial volume): a usable acquisition always has pre-contrast frames.
    keep = i >= 2
    if keep.sum() >= max(5, 0.2 * len(i)):
        c, thr, i = c[:, keep], thr[keep], i[keep]
    i = np.clip(i, 1, len(t) - 1)
    cols = np.arange(c.shape[1])
    c0, c1 = c[i - 1, cols], c[i, cols]
    with np.errstate(divide="ignore", invalid="ignore"):
        f = np.clip(np.where(c1 != c0, (thr - c0) / (c1 - c0), 1.0), 0.0, 1.0)
    ta = t[i - 1] + f * (t[i] - t[i - 1])
    return float(np.percentile(ta, percentile))


def baseline_frame_count(frame_times_s: np.ndarray, arrival_s: float, margin_s: float,
                         min_frames: int = 1) -> int:
    """Number of frames acquired at least ``margin_s`` before the bolus arrival (>= min_frames)."""
    return max(min_frames, int(np.sum(np.asarray(frame_times_s) < arrival_s - margin_s)))


def median_sd_fraction(n_samples: int) -> float:
    """Median of the sample SD (ddof 1) of ``n_samples`` independent Gaussian values, as a fraction of their SD:
    sqrt(median of chi-square with n - 1 degrees of freedom / (n - 1)) (0.67 for 2 samples, 0.89 for 4, 0.95 for 8);
    the median of per-voxel SDs divided by it estimates the noise SD whatever the number of baseline frames."""
    k = max(int(n_samples), 2) - 1
    return float(np.sqrt(2.0 * special.gammaincinv(0.5 * k, 0.5) / k))


def bright_curves(hu_tzyx: np.ndarray, candidate_mask: np.ndarray, top_fraction: float = 0.01,
                  max_hu: float = 800.0, min_hu: float = -100.0) -> np.ndarray:
    """HU curves (t, n) of the voxels with the largest *smooth* temporal enhancement (arteries, veins).

    Voxels that ever exceed ``max_hu`` or fall below ``min_hu`` are excluded (bone or air moving into a voxel
    with head motion is not contrast enhancement), and the ranking uses the range of the 3-frame running median
    of each curve, so single-frame jumps (motion jitter at edges) do not rank.
    """
    nt = hu_tzyx.shape[0]
    step = max(1, nt // 20)
    sub = hu_tzyx[::step]
    hi = sub.max(axis=0)
    ok = candidate_mask & (hi < max_hu) & (sub.min(axis=0) > min_hu)
    cand = np.flatnonzero(ok)
    if cand.size == 0:
        cand = np.flatnonzero(candidate_mask) if candidate_mask.any() else np.arange(ok.size)
    rng = (hi - hu_tzyx[0]).ravel()[cand]
    n = max(20, int(top_fraction * candidate_mask.sum()))
    k = min(5 * n, cand.size)
    pre_idx = cand[np.argpartition(rng, -k)[-k:]]
    curves = hu_tzyx.reshape(nt, -1)[:, pre_idx]
    med = ndimage.median_filter(curves, size=(3, 1), mode="nearest")
    srng = med.max(axis=0) - np.median(med[:2], axis=0)
    best = np.argsort(srng)[::-1][:n]
    # vessels enhance several times more than tissue: when they are fewer than n voxels, the rest of the top n
    # would be noisy tissue curves (whose noise-driven "rises" come early), so keep only curves enhancing at
    # least a quarter as much as the strongest vessels (median of the top 5)
    strong = srng[best] >= 0.25 * float(np.median(srng[best[:5]]))
    if strong.sum() >= 5:
        best = best[strong]
    return curves[:, best]


# ----------------------------------------------------------------------------------------------------------------
# Masks
# ----------------------------------------------------------------------------------------------------------------

def brain_mask(baseline_hu: np.ndarray, pixel_mm: float, cfg: PreprocessConfig,
               outside_fov: np.ndarray | None = None) -> np.ndarray:
    """Intracranial soft tissue from the baseline image.

    Voxels in the HU window [brain_hu_min, brain_hu_max] (excludes air, fat and bone), in-plane opening by a
    ~3 mm disk (cuts thin scalp/skull-base bridges), the largest 3D connected component, dilation back within the
    window, and per-slice hole filling.
    """
    cand = (baseline_hu >= cfg.brain_hu_min) & (baseline_hu <= cfg.brain_hu_max)
    if outside_fov is not None:
        cand &= ~outside_fov
    # Exclude anything touching bone closely: soft tissue outside the skull is separated by the bone ring.
    r = max(1, int(round(3.0 / pixel_mm)))
    core = ~dilate_disk_inplane(~cand, r, border=True)  # in-plane erosion (outside the image: background)
    lab, n = ndimage.label(core)
    if n == 0:
        return np.zeros_like(cand)
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    keep = lab == int(np.argmax(sizes))
    return fill_holes_inplane(dilate_disk_inplane(keep, r) & cand)


def csf_mask(baseline_hu: np.ndarray, brain: np.ndarray, csf_hu_max: float) -> np.ndarray:
    """CSF: brain voxels whose baseline HU (mean of the baseline frames; not smoothed, so one-voxel-wide sulci
    are kept - averaging over the baseline frames already gives a noise of ~noise/sqrt(n_baseline)) is below
    ``csf_hu_max``."""
    return brain & (np.asarray(baseline_hu) < csf_hu_max)


# ----------------------------------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------------------------------

def preprocess_study(hu_tzyx: np.ndarray, times_s: np.ndarray, affine_ras: np.ndarray, cfg: PreprocessConfig,
                     outside_fov: np.ndarray | None = None, temporal_sigma_s: float = 0.0,
                     workers: int | None = None, keep_frames: bool = False) -> Preprocessed:
    """Motion correction, binning, baseline, masks and uniform-time resampling (see module docstring).

    ``keep_frames``: also keep the baseline-subtracted frames of the brain at their acquired times,
    ``extra["frames_brain"]`` (frames, brain voxels) float32, with ``extra["frame_times_s"]`` (frames, z) on the
    clock of ``time_s`` (the frame-domain dispersion prior reads them).

    ``temporal_sigma_s`` > 0 folds the temporal Gaussian of the denoising step into the resampling operator
    (both are linear in time; one matrix product per slice instead of two passes over the 4D array).
    ``workers``: threads for the per-frame binning (None = all CPU cores); the result does not depend on it.
    """
    hu = np.asarray(hu_tzyx)
    times = np.asarray(times_s, float)
    if times.ndim == 1:
        times = np.repeat(times[:, None], hu.shape[1], axis=1)
    nt = hu.shape[0]
    spacing = pixel_spacing_mm(affine_ras)
    px = float(np.mean(spacing[:2]))

    # 1. motion (estimated on a ~3 mm grid, applied once to frames that moved)
    motion = np.zeros((nt, 3))
    if cfg.motion_correction and nt > 2:
        motion = estimate_inplane_motion(hu, px, n_ref_frames=2, workers=workers)
    disp = frame_displacement_mm(motion, px, hu.shape[2:])
    motion_max_mm = float(disp.max()) if len(disp) else 0.0

    # 2. binning
    f = bin_factor_for(affine_ras, cfg.compute_pixel_mm)
    aff = binned_affine(affine_ras, f)
    hub = np.empty((nt, hu.shape[1], hu.shape[2] // f, hu.shape[3] // f), np.float32)

    def bin_frame(i: int) -> None:
        frame = hu[i]
        if frame_moved(motion[i], px, hu.shape[2:], cfg.motion_apply_min_mm):
            frame = warp_frame_inplane(frame, motion[i], px)
        bin_inplane(frame, f, out=hub[i])

    with ThreadPoolExecutor(max_workers=thread_count(workers, nt)) as pool:  # numpy releases the GIL
        list(pool.map(bin_frame, range(nt)))
    del hu
    fov = None
    if outside_fov is not None:
        fov = bin_inplane(outside_fov.astype(np.float32), f) > 0
    pxb = px * f

    # 3. baseline frames from the arterial-like curve (brightest enhancing soft-tissue voxels)
    first = hub[0]
    soft = (first > cfg.brain_hu_min) & (first < 150.0)
    if fov is not None:
        soft &= ~fov
    # away (>= 4 mm in-plane) from bone and air, whose edges flicker with head motion
    soft &= ~dilate_disk_inplane(~soft, max(1, int(round(4.0 / pxb))))
    frame_t = times[:, 0] - times[0, 0]
    t_arr = bolus_arrival_s(bright_curves(hub, soft), frame_t)
    n_base = baseline_frame_count(frame_t, t_arr, cfg.baseline_margin_s)
    n_base = min(n_base, max(1, nt - 3))
    baseline = hub[:n_base].mean(axis=0)

    # 4./5. masks
    brain = brain_mask(baseline, pxb, cfg, fov)
    csf = csf_mask(baseline, brain, cfg.csf_hu_max)

    # noise: temporal SD in the baseline frames (needs >= 2 frames; the median of the voxels' sample SDs scaled to
    # the SD, so it does not depend on how many frames there are); else frame differences of the first two
    bsel = brain & ~csf
    if n_base >= 2 and bsel.any():
        noise = float(np.median(hub[:n_base, bsel].std(axis=0, ddof=1))) / median_sd_fraction(n_base)
    elif bsel.any():
        noise = float(np.median(np.abs(hub[1, bsel] - hub[0, bsel])) / 0.954)
    else:
        noise = float("nan")

    # 6. delta HU in place, then uniform time grid
    hub -= baseline[None]
    grid = uniform_time_grid(times, cfg.time_step_s, cfg.max_time_step_s)
    # curves are needed in the brain and a margin around it (the venous sinus search reaches 5 mm outside)
    r_near = max(1, int(round(8.0 / pxb)))
    near_brain = ndimage.maximum_filter(brain, size=(1, 2 * r_near + 1, 2 * r_near + 1))  # square: separable
    delta = resample_to_grid(hub, times, grid, temporal_sigma_s, mask_zyx=near_brain, workers=workers)
    t0 = float(times[0, 0])
    extra = {"frames_brain": hub[:, brain], "frame_times_s": times - t0} if keep_frames else {}
    del hub
    return Preprocessed(
        delta_hu=delta, time_s=grid - t0, dt_s=float(grid[1] - grid[0]), baseline_hu=baseline.astype(np.float32),
        brain=brain, csf=csf, affine_ras=aff, bin_factor=f, n_baseline_frames=int(n_base),
        bolus_arrival_s=float(t_arr), noise_hu=noise, motion_params=motion, motion_max_mm=motion_max_mm,
        acquisition_end_s=float(times[-1].min() - t0), time_origin_s=t0, extra=extra,
    )
