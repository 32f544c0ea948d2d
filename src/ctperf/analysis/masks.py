"""Lesion masks from perfusion maps (pure functions; definitions in docs/definitions.md).

- hypoperfusion: tissue with Tmax > ``tmax_hypoperfusion_s`` (default 6 s)
- core: tissue with rCBF < ``rcbf_core`` (default 0.30), inside the hypoperfusion region or within
  ``core_tmax_margin_px`` (1) in-plane pixels of it, unless ``core_requires_tmax`` is False (RAPID-style core)
- penumbra: hypoperfusion minus core
- no core where the study's contrast-to-noise ratio is below ``core_min_contrast_to_noise``
  (:func:`core_noise_reason`) or the acquisition ends too soon after the lesion peaks (:func:`core_truncation_reason`):
  the core is then unmeasured, not empty; no lesion at all without a usable bolus or with curves cut at the peak
  (:func:`lesion_unmeasured_reason`)
- Tmax level masks: tissue with Tmax >= level, for the reported Tmax volumes and the HIR

Connected clusters smaller than ``min_cluster_ml`` are removed from each mask (26-connectivity in 3D).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy import ndimage

from ctperf.analysis.indices import CBV_INDEX_KEYS
from ctperf.config import Thresholds
from ctperf.core.morphology import STRUCTURE_26, dilate_inplane, fill_holes_inplane, remove_small_clusters
from ctperf.core.types import LesionMasks

#: The thresholds that withhold values a study cannot measure (docs/definitions.md §3); 0 turns each off.
MEASURABILITY_LIMITS = ("core_min_contrast_to_noise", "core_min_observed_after_peak_s", "hir_min_observed_after_peak_s",
                        "lesion_min_contrast_to_noise", "lesion_min_observed_after_peak_s", "hypoperfusion_min_margin_s",
                        "cbv_index_min_observed_after_peak_s")

#: Tmax levels (s) whose volumes are always reported (tmax4_ml ... tmax10_ml), whatever the config adds.
REPORTED_TMAX_LEVELS_S = (4.0, 6.0, 8.0, 10.0)


def core_noise_reason(contrast_to_noise: float | None, thresholds: Thresholds,
                      unmeasured: str = "the rCBF core is") -> str | None:
    """Why the core (``unmeasured`` names what else the reason covers) cannot be measured at this contrast-to-noise
    ratio (arterial peak / voxel noise, ``qa_values.contrast_to_noise``), or None.

    Below ``thresholds.core_min_contrast_to_noise`` the edge-preserving denoising no longer tells grey from white
    matter or core from penumbra, CBF contrast flattens and the rCBF < ``rcbf_core`` core read 13-48 % small on the
    project phantom (docs/definitions.md §3); a ratio that could not be measured (None) does not suppress it.
    """
    limit = thresholds.core_min_contrast_to_noise
    if contrast_to_noise is None or limit <= 0 or contrast_to_noise >= limit:
        return None
    return (f"contrast-to-noise ratio {contrast_to_noise:.1f} below {limit:g} "
            f"(thresholds.core_min_contrast_to_noise): {unmeasured} not measurable at this noise")


def observed_after_peak_s(ttp_s: np.ndarray, hypoperfusion: np.ndarray, acquisition_s: float | None
                          ) -> tuple[float | None, str | None]:
    """How long (s) the acquisition went on after the hypoperfused tissue peaked: acquisition end - median time to
    peak (TTP map, s from the first frame) over the hypoperfusion mask; None with a reason when there is no
    hypoperfused tissue or no acquisition end.

    A lesion's curves (delayed, long transit) must be followed past their peak for their residue to be read: cut
    earlier, low flows read high (the core shrinks) and, cut at the peak, delayed tissue cannot be told from normal
    tissue (docs/definitions.md §3)."""
    sel = np.asarray(hypoperfusion, bool) & np.isfinite(ttp_s)
    if not sel.any():
        return None, "no hypoperfused tissue"
    if acquisition_s is None or not np.isfinite(acquisition_s):
        return None, "acquisition end unknown"
    return round(float(acquisition_s) - float(np.median(ttp_s[sel])), 2), None


def _cut_too_soon(observed_s: float | None, thresholds: Thresholds, setting: str, consequence: str) -> str | None:
    """The reason for a ``setting`` of ``thresholds`` that ``observed_s`` (:func:`observed_after_peak_s`) falls
    below, or None (no hypoperfusion, the limit off at 0, or met)."""
    limit = getattr(thresholds, setting)
    if observed_s is None or limit <= 0 or observed_s >= limit:
        return None
    return (f"acquisition ends {observed_s:.1f} s after the hypoperfused tissue's median time to peak, "
            f"< {limit:g} s (thresholds.{setting}): {consequence} (acquire longer)")


def core_truncation_reason(observed_s: float | None, thresholds: Thresholds) -> str | None:
    """Why the core cannot be measured on curves cut this soon after the lesion's peak, or None."""
    return _cut_too_soon(observed_s, thresholds, "core_min_observed_after_peak_s",
                         "its curves are cut before they return and the rCBF core is not measurable")


def hir_truncation_reason(observed_s: float | None, thresholds: Thresholds) -> str | None:
    """Why the Tmax levels above the hypoperfusion threshold and the HIR are not measured on curves cut this soon
    after the lesion's peak, or None."""
    return _cut_too_soon(observed_s, thresholds, "hir_min_observed_after_peak_s",
                         "the most delayed tissue is cut before its peak, so long Tmax and the HIR are not measurable")


def cbv_truncation_reason(observed_s: float | None, thresholds: Thresholds) -> str | None:
    """Why the CBV indices are not measured on curves cut this soon after the lesion's peak, or None: the lesion's
    CBV is the area under its curve, and the area of a delayed, long-transit curve cut before it returns reads low
    (docs/definitions.md §3)."""
    return _cut_too_soon(observed_s, thresholds, "cbv_index_min_observed_after_peak_s",
                         "the lesion's curves are cut before they return, so its CBV and the CBV indices read low")


def no_bolus_reason(contrast_to_noise: float | None, aif_truncated: bool, thresholds: Thresholds) -> str | None:
    """Why nothing the bolus carries can be measured, or None: the arterial input is truncated (every map biased)
    or the contrast-to-noise ratio is below ``lesion_min_contrast_to_noise`` (a weak bolus, or strong noise)."""
    if aif_truncated:
        return ("arterial input still high at the end of the acquisition (qa_flags.aif_truncated): every map is "
                "biased and no lesion index is measurable (acquire longer)")
    limit = thresholds.lesion_min_contrast_to_noise
    if contrast_to_noise is not None and limit > 0 and contrast_to_noise < limit:
        return (f"contrast-to-noise ratio {contrast_to_noise:.1f} below {limit:g} "
                "(thresholds.lesion_min_contrast_to_noise): too little bolus contrast against the image noise to "
                "measure any lesion index")
    return None


def lesion_unmeasured_reason(contrast_to_noise: float | None, observed_s: float | None, aif_truncated: bool,
                             thresholds: Thresholds) -> str | None:
    """Why no lesion index can be measured, or None: no usable bolus (:func:`no_bolus_reason`) or the acquisition
    ends less than ``lesion_min_observed_after_peak_s`` after the hypoperfused tissue peaks (docs/definitions.md
    §3)."""
    no_bolus = no_bolus_reason(contrast_to_noise, aif_truncated, thresholds)
    if no_bolus is not None:
        return no_bolus
    return _cut_too_soon(observed_s, thresholds, "lesion_min_observed_after_peak_s",
                         "delayed tissue cannot be told from curves cut by the end of the acquisition; no lesion "
                         "index is measurable")


def normal_tissue_tmax_s(tmax_s: np.ndarray, hypoperfusion: np.ndarray, tissue: np.ndarray) -> float | None:
    """Median Tmax (s) of the tissue outside the hypoperfusion mask (None without such tissue): the study's normal
    tissue, near the threshold when the whole brain's bolus is delayed against the arterial input."""
    sel = np.asarray(tissue, bool) & ~np.asarray(hypoperfusion, bool) & np.isfinite(tmax_s)
    return round(float(np.median(tmax_s[sel])), 3) if sel.any() else None


def global_delay_reason(normal_tmax_s: float | None, thresholds: Thresholds) -> str | None:
    """Why the volumes above a Tmax threshold are not measured, or None: the normal tissue's median Tmax
    (:func:`normal_tissue_tmax_s`) lies less than ``thresholds.hypoperfusion_min_margin_s`` below
    ``tmax_hypoperfusion_s``, so normal tissue crosses the threshold by its scatter alone (a global bolus delay:
    a proximal stenosis or an arterial input upstream of it; docs/definitions.md §3)."""
    margin = thresholds.hypoperfusion_min_margin_s
    if normal_tmax_s is None or margin <= 0 or normal_tmax_s < thresholds.tmax_hypoperfusion_s - margin:
        return None
    return (f"global bolus delay: normal tissue reads Tmax {normal_tmax_s:.1f} s, within {margin:g} s "
            f"(thresholds.hypoperfusion_min_margin_s) of the {thresholds.tmax_hypoperfusion_s:g} s threshold, so "
            "its scatter crosses it and the Tmax volumes are not measurable")


@dataclass
class Measurability:
    """What the study allows to be measured (Mode A; docs/definitions.md §3), each part a reason or None."""

    #: Acquisition end - median TTP of the hypoperfused tissue (s), or None with ``observed_reason``.
    observed_after_peak_s: float | None
    observed_reason: str | None
    #: No lesion index at all (a truncated AIF, no usable bolus, curves cut at the lesion's peak).
    lesion: str | None
    #: No core (and so no penumbra, mismatch or trial label): an unusable rCBF reference, the contrast-to-noise
    #: ratio below the core's limit, curves cut before they return.
    reference: str | None
    core_noise: str | None
    core_truncated: str | None
    #: No Tmax level above the hypoperfusion threshold and no HIR: the most delayed tissue cut before its peak.
    late_tmax: str | None
    #: Median Tmax (s) of the tissue outside the hypoperfusion mask, and why no Tmax volume (hypoperfusion,
    #: penumbra, mismatch, Tmax levels, HIR, lesion CBV, trial labels) is measured: a global delay, or None.
    normal_tmax_s: float | None = None
    global_delay: str | None = None
    #: No CBV index: the lesion's curves cut before they return (their areas read low), or None.
    cbv_truncated: str | None = None
    #: No Corrected CBV Index: the core's contrast-to-noise limit (the same reason as ``core_noise``), or None.
    corrected_cbv_noise: str | None = None
    #: No venous index (AIF / VOF times to peak, PVT): no usable bolus, or the lesion's curves cut at its peak with
    #: the venous outflow cut too (``qa_flags.acquisition_truncated``); None where only the lesion is unmeasured.
    venous: str | None = None

    @property
    def core(self) -> str | None:
        """Why the core is not measured (the first of the reasons that apply), or None."""
        return self.lesion or self.reference or self.core_noise or self.core_truncated

    def qa_flags(self) -> dict[str, bool]:
        return {"core_noise_limited": self.core_noise is not None, "core_truncated": self.core_truncated is not None,
                "hir_truncated": self.late_tmax is not None, "lesion_unmeasured": self.lesion is not None,
                "global_tmax_delay": self.global_delay is not None, "cbv_truncated": self.cbv_truncated is not None}

    def qa_values(self) -> dict[str, Any]:
        return {"lesion_observed_after_peak_s": self.observed_after_peak_s,
                "lesion_observed_after_peak_reason": self.observed_reason, "lesion_unmeasured_reason": self.lesion,
                "normal_tissue_tmax_s": self.normal_tmax_s}

    def cbv_indices_withheld(self) -> dict[str, str]:
        """The CBV indices that are not measured, with the reason: every one on curves cut before they return; the
        Corrected CBV Index also below the core's contrast-to-noise limit, where the denoising flattens the lesion's
        CBV contrast against the thin cortical reference (read +6...+66 % there on the project phantom; the
        hemisphere and mirror indices stay within -8...+2 %; docs/definitions.md §3)."""
        if self.cbv_truncated is not None:
            return dict.fromkeys(CBV_INDEX_KEYS, self.cbv_truncated)
        if self.corrected_cbv_noise is not None:
            return {"Corrected_CBV_Index": self.corrected_cbv_noise}
        return {}

    def unmeasured_regions(self) -> dict[str, str]:
        """The lesion regions (``regions`` in metrics.json) that are not measured, with the reason."""
        if self.lesion is not None:
            return dict.fromkeys(("core", "penumbra", "hypoperfusion"), self.lesion)
        out = dict.fromkeys(("core", "penumbra"), self.core) if self.core is not None else {}
        if self.global_delay is not None:
            out.update(hypoperfusion=self.global_delay, penumbra=self.global_delay)
        return out

    def masks(self, lesion: LesionMasks) -> LesionMasks:
        """``lesion`` without what is not measured: every mask empty without a lesion, the core and penumbra
        (hypoperfusion minus an unmeasured core) empty without a core, every mask but the core empty under a global
        delay; their volumes are null."""
        if self.lesion is not None:
            empty = np.zeros_like(lesion.hypoperfusion)
            return LesionMasks(hypoperfusion=empty, core=empty.copy(), penumbra=empty.copy(),
                               tmax_levels={lv: empty.copy() for lv in lesion.tmax_levels})
        if self.core is not None:
            lesion = replace(lesion, core=np.zeros_like(lesion.core), penumbra=np.zeros_like(lesion.penumbra))
        if self.global_delay is not None:  # the core (rCBF) is kept: it lies well above the threshold
            empty = np.zeros_like(lesion.hypoperfusion)
            lesion = replace(lesion, hypoperfusion=empty, penumbra=empty.copy(),
                             tmax_levels={lv: empty.copy() for lv in lesion.tmax_levels})
        return lesion


def measurability(ttp_s: np.ndarray, hypoperfusion: np.ndarray, qa_flags: dict[str, Any], qa_values: dict[str, Any],
                  thresholds: Thresholds, *, tmax_s: np.ndarray | None = None,
                  tissue: np.ndarray | None = None) -> Measurability:
    """What a study's lesion allows to be measured, from the TTP map, the hypoperfusion mask, the Tmax map and tissue
    mask (the global delay; not judged without them) and the engine's QA (``contrast_to_noise``, ``acquisition_s``,
    ``reference_reason``, ``aif_truncated``); decided on the maps, so ``ctperf recompute`` re-decides with other
    limits."""
    observed, observed_reason = observed_after_peak_s(ttp_s, hypoperfusion, qa_values.get("acquisition_s"))
    normal = None if tmax_s is None or tissue is None else normal_tissue_tmax_s(tmax_s, hypoperfusion, tissue)
    cnr = qa_values.get("contrast_to_noise")
    lesion = lesion_unmeasured_reason(cnr, observed, bool(qa_flags.get("aif_truncated")), thresholds)
    venous = no_bolus_reason(cnr, bool(qa_flags.get("aif_truncated")), thresholds)
    if venous is None and lesion is not None and qa_flags.get("acquisition_truncated"):
        venous = lesion  # the venous outflow is cut as well as the lesion's curves
    return Measurability(
        observed_after_peak_s=observed, observed_reason=observed_reason, lesion=lesion, venous=venous,
        reference=qa_values.get("reference_reason"), core_noise=core_noise_reason(cnr, thresholds),
        corrected_cbv_noise=core_noise_reason(cnr, thresholds, "the rCBF core and the Corrected CBV Index are"),
        core_truncated=core_truncation_reason(observed, thresholds),
        late_tmax=hir_truncation_reason(observed, thresholds), cbv_truncated=cbv_truncation_reason(observed, thresholds),
        normal_tmax_s=normal, global_delay=global_delay_reason(normal, thresholds))


def _grown(mask: np.ndarray, margin_px: int) -> np.ndarray:
    """``mask`` and the pixels within ``margin_px`` in-plane steps of it (4-connected: a diamond of that radius)."""
    if margin_px <= 0:
        return mask
    r = int(margin_px)
    yy, xx = np.ogrid[-r:r + 1, -r:r + 1]
    return dilate_inplane(mask, np.abs(yy) + np.abs(xx) <= r)


def lesion_masks(tmax_s: np.ndarray, rcbf: np.ndarray | None, tissue: np.ndarray, voxel_volume_ml: float,
                 thresholds: Thresholds, footprint: np.ndarray | None = None) -> LesionMasks:
    """Hypoperfusion, core and penumbra masks.

    tmax_s : Tmax map (s); NaN where undefined.
    rcbf : relative CBF (fraction of normal; 1.0 = normal) or None (then the core is empty).
    tissue : bool mask of brain parenchyma (no CSF, no large vessels) where the masks may lie.
    footprint : optional bool mask restricting all lesion masks (Mode B ROI footprint).
    """
    region = np.asarray(tissue, bool) & np.isfinite(tmax_s)
    if footprint is not None:
        region &= np.asarray(footprint, bool)
    tmax = np.where(region, tmax_s, -np.inf)
    mcl = thresholds.min_cluster_ml

    hypo = remove_small_clusters(tmax > thresholds.tmax_hypoperfusion_s, voxel_volume_ml, mcl)
    if rcbf is not None:
        low_flow = region & np.isfinite(rcbf) & (np.nan_to_num(rcbf, nan=np.inf) < thresholds.rcbf_core)
        if thresholds.core_requires_tmax:
            low_flow &= _grown(hypo, thresholds.core_tmax_margin_px)
        core = remove_small_clusters(low_flow, voxel_volume_ml, mcl)
    else:
        core = np.zeros_like(hypo)
    penumbra = hypo & ~core

    levels = sorted(set(float(x) for x in (*thresholds.tmax_levels_s, *REPORTED_TMAX_LEVELS_S))
                    | {float(thresholds.hir_tmax_s), float(thresholds.tmax_hypoperfusion_s)})
    tmax_levels = {lv: remove_small_clusters(tmax >= lv, voxel_volume_ml, mcl) for lv in levels}
    return LesionMasks(hypoperfusion=hypo, core=core, penumbra=penumbra, tmax_levels=tmax_levels)


def cortical_ribbon(brain_mask_zyx: np.ndarray, spacing_xyz_mm, depth_mm: float = 3.0,
                    closing_mm: float = 5.0) -> np.ndarray:
    """Outer shell of the brain, ``depth_mm`` thick below the closed outer brain surface, in-plane per slice.

    Pass the parenchyma (tissue) mask; the default depth is the typical human cortical thickness (~2.5-3 mm,
    Fischl & Dale 2000).

    The brain mask is first closed (``closing_mm``) and hole-filled, so sulci and the interhemispheric fissure do
    not pull the shell into white matter whether or not the mask includes CSF.  Used as the "cortex" reference
    region of the Corrected CBV Index (no grey-matter segmentation needed; independent of map noise).
    """
    mask = np.asarray(brain_mask_zyx, bool)
    sx, sy = float(spacing_xyz_mm[0]), float(spacing_xyz_mm[1])
    ry, rx = max(1, int(round(closing_mm / sy))), max(1, int(round(closing_mm / sx)))
    yy, xx = np.ogrid[-ry:ry + 1, -rx:rx + 1]
    disk = (yy * sy) ** 2 + (xx * sx) ** 2 <= closing_mm ** 2
    # closing on a padded volume (as scipy's binary_closing of each padded slice): dilation, then erosion
    padded = np.pad(mask, ((0, 0), (ry, ry), (rx, rx)))
    closed = ~dilate_inplane(~dilate_inplane(padded, disk), disk, border=True)[:, ry:-ry, rx:-rx]
    filled = fill_holes_inplane(closed | mask)
    # within depth_mm of the background (in-plane, mm): the same distances as distance_transform_edt's
    dy, dx = int(depth_mm // sy) + 1, int(depth_mm // sx) + 1
    yy, xx = np.ogrid[-dy:dy + 1, -dx:dx + 1]
    shell = np.sqrt((yy * sy) ** 2 + (xx * sx) ** 2) <= depth_mm
    return filled & dilate_inplane(~filled, shell) & mask


def sinus_region(vessels_zyx: np.ndarray, vof_voxels_zyx: np.ndarray) -> np.ndarray | None:
    """Venous sinus voxels: the connected large-vessel components that contain the VOF voxels."""
    vessels = np.asarray(vessels_zyx, bool)
    vox = np.asarray(vof_voxels_zyx, int).reshape(-1, 3)
    if not vessels.any() or len(vox) == 0:
        return None
    labels, _ = ndimage.label(vessels, structure=STRUCTURE_26)
    ids = {int(labels[tuple(v)]) for v in vox} - {0}
    region = np.isin(labels, list(ids)) if ids else np.zeros_like(vessels)
    region[tuple(vox.T)] = True
    return region
