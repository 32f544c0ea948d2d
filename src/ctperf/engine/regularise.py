"""Edge-preserving regularisation of the CBF, CBV (jointly; CBF in the log domain) and Tmax maps (all default since
2.6): rolling-guidance joint bilateral.

At standard-dose noise the per-voxel CBF/CBV estimates carry a noise of ~50 % (grey matter) to ~70 % (white
matter) of their value, while grey matter is a ribbon only 2-3 voxels thick: plain smoothing mixes it with white
matter and flattens the grey/white contrast, and a bilateral filter guided by the noisy maps themselves cannot
tell the two tissues apart voxel by voxel.  The filter here therefore runs twice (rolling guidance, Zhang et al.,
ECCV 2014):

1. a *joint bilateral* pass (Petschnigg et al. / Eisemann & Durand, SIGGRAPH 2004; the range kernel of
   :func:`ctperf.engine.denoise.tips_bilateral`, Mendrik et al., IEEE TMI 2011) on (CBF, CBV) whose range kernel
   compares the lightly pre-smoothed maps and the baseline (non-contrast) HU image, each in units of its own noise SD;
2. the same filter applied again to the *original* maps, but guided by the pass-1 output (plus the baseline):
   the guide is now far less noisy, so grey/white and lesion boundaries are recognised and kept, while the
   averaging weights stay those of a bilateral filter (a weighted mean of neighbours that look alike).

CBF and CBV are filtered with *identical* weights, and MTT is recomputed as 60 CBV / CBF by the caller, so the
central volume theorem still holds exactly for the filtered pair.  By default (since 2.6) the engine writes the
filtered CBF (averaged in the log domain, :func:`regularise_flow_maps`), CBV and their MTT; with
``map_regularisation`` off it writes the measured CBF, the filtered CBV and the MTT of the filtered pair (the ratio of
the two local means).  The engine passes the written, non-negative CBF
(:func:`ctperf.engine.maps.nonnegative_maps`; on the project phantom at 8 HU the median CBF of the infarct core is
the same whether the clipped or the unclipped estimates are filtered, 5.9 mL/100g/min, and the clipped maps give a
less noisy MTT) and the CBV *before* its bounds: averaging CBV values clipped at 0 biases noisy white matter upwards
(15 HU: +22 % instead of +12 %).  By default (``deconvolution.map_regularisation``) both filtered maps are kept;
with it off only the filtered CBV is kept (``deconvolution.cbv_regularisation``).
In the linear domain the weighted mean is linear in the data, so regional means are kept; in the log domain (the
default) it is a weighted geometric mean and the CBF level reads lower by about half the squared relative noise
(project phantom at 8 HU: grey / white matter -15.9 / -10.2 %), while ratios such as rCBF are kept.  Only voxels
of the tissue mask are used and changed.

Tmax (:func:`regularise_tmax`) is filtered on its own, guided by itself and the baseline image: its per-voxel noise
(~1 s at standard dose) is spatially correlated by the denoising, and its true structure is territorial (areas of
similar delay separated by steps at the lesion edges), which is what a bilateral filter keeps.
"""

from __future__ import annotations

import numpy as np

from ctperf.core.morphology import bounding_box
from ctperf.engine.denoise import kernel_radius_px, tips_bilateral


def rolling_joint_bilateral(maps_kzyx: np.ndarray, mask: np.ndarray, guide_zyx: np.ndarray | None,
                            pixel_mm: float, sigma_mm: float = 4.0, range_h: float = 2.0,
                            first_sigma_mm: float | None = None, first_range_h: float | None = None,
                            first_guide_sigma_px: float = 1.2, filtered: tuple[int, ...] | None = None,
                            workers: int | None = None, map_noise_lag_px: int = 1) -> np.ndarray:
    """Two-pass (rolling-guidance) joint bilateral filter of K co-registered maps inside ``mask``.

    Parameters
    ----------
    maps_kzyx : (K, z, y, x) float maps (e.g. CBF and CBV); NaN is treated as 0 inside the mask.
    mask : (z, y, x) bool, the voxels that are filtered and that may contribute (e.g. parenchyma without CSF and
        large vessels).
    guide_zyx : optional (z, y, x) extra guide image (e.g. baseline HU) used in both passes, or None.
    pixel_mm : in-plane pixel spacing (mm).
    sigma_mm, range_h : spatial Gaussian sigma (mm) and range parameter of the second (final) pass; the range
        kernel is ``exp(-max(D - m, 0) / (h^2 sqrt(2m)))`` with D the noise-normalised squared guide distance over
        m features (:func:`ctperf.engine.denoise.tips_bilateral`).
    first_sigma_mm, first_range_h : the same for the first pass (default: 0.75 sigma_mm and 1.25 range_h).
    first_guide_sigma_px : Gaussian pre-smoothing (pixels) of the first pass's guide (the noisy maps).
    filtered : indices of the maps the second pass filters (all by default); every map guides both passes, the
        others are returned unchanged.
    workers : threads of the filter (None = all CPU cores); the result does not depend on it.
    map_noise_lag_px : the maps' guides (and pass 1's outputs guiding pass 2) are scaled by the noise of their
        differences this many pixels apart (1: neighbours); the extra guide always by its neighbours'.

    Returns
    -------
    (K, z, y, x) float32: the filtered maps inside ``mask``; voxels outside it are returned unchanged.
    """
    maps = np.asarray(maps_kzyx, np.float32)
    mask = np.asarray(mask, bool)
    if not mask.any():
        return maps.copy()
    bb = bounding_box(mask)
    msub = mask[bb]
    sub = np.where(msub[None], np.nan_to_num(maps[(slice(None),) + bb]), 0.0).astype(np.float32)
    extra = None if guide_zyx is None else np.asarray(guide_zyx, np.float32)[bb][None]
    s1 = 0.75 * sigma_mm if first_sigma_mm is None else first_sigma_mm
    h1 = 1.25 * range_h if first_range_h is None else first_range_h
    lags = [map_noise_lag_px] * len(sub) + ([] if extra is None else [1])
    first = tips_bilateral(sub, msub, pixel_mm, s1, h1, guide_extra=extra, n_guide=len(sub),
                           guide_sigma_px=first_guide_sigma_px, workers=workers, noise_lags_px=lags)
    guide = first if extra is None else np.concatenate([first, extra])
    keep = list(range(len(maps)) if filtered is None else filtered)
    final = tips_bilateral(sub[keep], msub, pixel_mm, sigma_mm, range_h, guide_extra=guide, n_guide=0,
                           guide_sigma_px=0.0, workers=workers, noise_lags_px=lags)
    out = maps.copy()
    out[(keep,) + bb] = np.where(msub[None], final, out[(keep,) + bb])
    return out


#: Offset (mL/100g/min) of the log-domain CBF filter, ``log(CBF + offset)``: keeps the noise floor (CBF 0 in the
#: core) finite; small against grey and white matter flows.  The harness's results move little between 0.5 and 2
#: (docs/engine-notes.md "Map regularisation").
CBF_LOG_OFFSET_ML_100G_MIN = 1.0


def regularise_flow_maps(cbf_zyx: np.ndarray, cbv_zyx: np.ndarray, tissue: np.ndarray, baseline_hu: np.ndarray,
                         pixel_mm: float, sigma_mm: float = 4.0, range_h: float = 2.0, filter_cbf: bool = True,
                         workers: int | None = None, log_cbf: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """CBF (mL/100g/min) and CBV (mL/100g) maps filtered jointly by :func:`rolling_joint_bilateral` inside
    ``tissue``, guided by the maps and the baseline HU image; returns (CBF, CBV) float32 (z, y, x).  With
    ``filter_cbf = False`` only CBV is filtered (with the same weights) and CBF is returned as given.

    With ``log_cbf`` CBF (clipped at 0) is filtered, and guides, as ``log(CBF + CBF_LOG_OFFSET_ML_100G_MIN)``: the
    per-voxel CBF noise grows with the flow and is skewed (the peak of a noisy residue), so relative differences
    tell tissues apart evenly, and a weighted geometric mean is not pulled up by the skew, which differs with the
    bolus delay.  The default here is linear, but the engine passes ``log_cbf=True`` by default
    (``deconvolution.map_regularisation_domain = "log"``); the geometric mean then reads a flat region's CBF lower
    than its arithmetic level by about half the squared relative noise (``tests/test_map_regularisation.py``).
    Recompute MTT (and re-apply the bounds) from the result with :func:`ctperf.engine.maps.nonnegative_maps`.
    ``sigma_mm <= 0`` returns the inputs unchanged.
    """
    if sigma_mm <= 0:
        return np.asarray(cbf_zyx, np.float32), np.asarray(cbv_zyx, np.float32)
    cbf = np.asarray(cbf_zyx, np.float32)
    if log_cbf:
        cbf = np.log(np.maximum(np.nan_to_num(cbf), 0.0) + CBF_LOG_OFFSET_ML_100G_MIN)
    out = rolling_joint_bilateral(np.stack([cbf, cbv_zyx]), tissue, baseline_hu, pixel_mm, sigma_mm, range_h,
                                  filtered=None if filter_cbf else (1,), workers=workers)
    if log_cbf:  # back to mL/100g/min (CBF as given where it was not filtered)
        out[0] = (np.where(np.asarray(tissue, bool), np.exp(out[0]) - CBF_LOG_OFFSET_ML_100G_MIN, cbf_zyx)
                  if filter_cbf else cbf_zyx)
    return out[0], out[1]


def regularise_tmax(tmax_zyx: np.ndarray, tissue: np.ndarray, baseline_hu: np.ndarray, pixel_mm: float,
                    sigma_mm: float = 6.0, range_h: float = 1.0, workers: int | None = None) -> np.ndarray:
    """Tmax map (s) filtered by :func:`rolling_joint_bilateral` inside ``tissue``, guided by Tmax itself and the
    baseline HU image (float32 (z, y, x); voxels outside ``tissue`` unchanged).

    Both passes average only neighbours whose Tmax (after pass 1, whose guide is far less noisy) differs from the
    voxel's by less than the noise explains plus about ``range_h`` chi-square SDs, so a lesion edge (a step of Tmax)
    is not moved.  The Tmax guides are scaled by their noise across the final kernel's radius
    (:func:`~ctperf.engine.denoise.kernel_radius_px`), not between neighbours: the denoising makes neighbouring
    voxels share their Tmax errors, so neighbour differences read the noise too low and every farther pair would
    look like an edge (docs/definitions.md §6 step 10).  Voxels without a finite Tmax neither contribute nor
    change.  ``sigma_mm <= 0`` returns the input unchanged.
    """
    tmax = np.asarray(tmax_zyx, np.float32)
    if sigma_mm <= 0:
        return tmax
    # Tmax's noise as the kernel compares it: across the final kernel's radius (both passes)
    return rolling_joint_bilateral(tmax[None], np.asarray(tissue, bool) & np.isfinite(tmax), baseline_hu, pixel_mm,
                                   sigma_mm, range_h, workers=workers,
                                   map_noise_lag_px=kernel_radius_px(sigma_mm, pixel_mm))[0]
