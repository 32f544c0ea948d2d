"""Stroke research indices from perfusion maps and lesion masks — one implementation for Mode A and Mode B.

Every definition (formula, threshold, literature source) is in docs/definitions.md; the key names of the
original tool are kept.  Undefined values are ``None`` together with a ``<key>_reason`` string, so metrics
stay strict JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ctperf.config import Thresholds
from ctperf.core.midline import mirror
from ctperf.core.types import Hemispheres, LesionMasks

#: Units of every numeric index key (dimensionless ratios are "1").
UNITS: dict[str, str] = {
    "hypoperfusion_ml": "mL", "core_ml": "mL", "penumbra_ml": "mL", "mismatch_volume_ml": "mL",
    "hypoperfusion_vox": "voxels", "core_vox": "voxels", "penumbra_vox": "voxels",
    "tmax4_ml": "mL", "tmax6_ml": "mL", "tmax8_ml": "mL", "tmax10_ml": "mL",
    "Mismatch_Ratio": "1", "HIR": "1", "Corrected_CBV_Index": "1", "CBV_Index_contra_hemisphere": "1",
    "CBV_Index_mirror": "1", "Conventional_CBV_Index": "1", "PVT_sec": "s", "aif_ttp_s": "s", "vof_ttp_s": "s",
    "sinus_tmax_s": "s", "voxel_volume_ml": "mL",
}

#: Imaging-eligibility criteria (Albers 2018 DEFUSE 3; Campbell 2015 / Ma 2019 EXTEND(-IA)).
DEFUSE3 = {"core_max_ml": 70.0, "mismatch_ratio_min": 1.8, "mismatch_volume_min_ml": 15.0}
EXTEND = {"core_max_ml": 70.0, "mismatch_ratio_min_exclusive": 1.2, "mismatch_volume_min_exclusive_ml": 10.0}
#: The lesion thresholds both trials used (RAPID: Tmax > 6 s, rCBF < 30 %); the labels need exactly these.
TRIAL_THRESHOLDS = {"tmax_hypoperfusion_s": 6.0, "rcbf_core": 0.30}
#: Why the labels are not given for a bilateral or posterior-circulation hypoperfusion pattern: both trials
#: selected one hemispheric, anterior-circulation lesion, and their volumes are that lesion's.
TRIAL_LESION_REASON = ("the trials' imaging criteria apply to one hemispheric, anterior-circulation lesion (DEFUSE 3: "
                       "internal carotid or proximal middle cerebral artery occlusion, Albers 2018; EXTEND: "
                       "hemispheric stroke, Ma 2019); a global bolus delay also reads as bilateral hypoperfusion")


def trial_thresholds_reason(thr: Thresholds) -> str | None:
    """None when ``thr`` uses the trial lesion thresholds, otherwise why the trial labels are not computed."""
    diff = [f"{k} = {getattr(thr, k):g}" for k, v in TRIAL_THRESHOLDS.items()
            if not np.isclose(float(getattr(thr, k)), v, rtol=0, atol=1e-9)]
    if not diff:
        return None
    return "trial labels need the trial thresholds (Tmax > 6 s, rCBF < 0.30); this run: " + ", ".join(diff)

#: The CBV indices of the hypoperfusion region (mean CBV there over a reference), and all CBV indices (with the
#: Conventional CBV Index of a given lesion-cortex ROI).
LESION_CBV_INDEX_KEYS = ("Corrected_CBV_Index", "CBV_Index_contra_hemisphere", "CBV_Index_mirror")
CBV_INDEX_KEYS = LESION_CBV_INDEX_KEYS + ("Conventional_CBV_Index",)
#: The venous transit: AIF and VOF times to peak, PVT and its qualitative sign; they need the bolus, not the lesion.
VENOUS_INDEX_KEYS = ("aif_ttp_s", "vof_ttp_s", "PVT_sec", "sinus_tmax_s", "PVT_present")
#: The indices that rest on the Tmax hypoperfusion region (with the Tmax level volumes): null under a global delay.
TMAX_VOLUME_KEYS = ("hypoperfusion_ml", "hypoperfusion_vox", "penumbra_ml", "penumbra_vox", "mismatch_volume_ml",
                    "Mismatch_Ratio", "HIR", *LESION_CBV_INDEX_KEYS, "DEFUSE3_eligible", "EXTEND_eligible")

#: Minimum hypoperfusion volume (mL) below which no lesion side is named.
MIN_LESION_ML_FOR_SIDE = 1.0


@dataclass
class IndexInputs:
    """Everything the indices need; all volumes (z, y, x) on one grid."""

    cbv: np.ndarray | None
    tmax_s: np.ndarray
    lesion: LesionMasks
    tissue: np.ndarray
    voxel_volume_ml: float
    thresholds: Thresholds
    hemispheres: Hemispheres | None = None
    #: Cortical reference region (e.g. cortical ribbon) for the Corrected CBV Index.
    cortex: np.ndarray | None = None
    aif_ttp_s: float | None = None
    vof_ttp_s: float | None = None
    #: Superior sagittal sinus / torcula voxels for the qualitative PVT sign.
    sinus: np.ndarray | None = None
    #: Lesion-cortex ROI (Conventional CBV Index numerator) and optional explicit contralateral ROI.
    roi_mask: np.ndarray | None = None
    contra_mask: np.ndarray | None = None
    #: Why the core cannot be measured, or None: an unusable rCBF reference (too few voxels) or, in Mode A, any
    #: reason of :attr:`ctperf.analysis.masks.Measurability.core` (contrast-to-noise below the core's limit, curves
    #: cut before they return); then core, penumbra, mismatch and the eligibility labels are None with this reason
    #: (never 0 mL / eligible).
    reference_reason: str | None = None
    #: Why no lesion index can be measured, or None (Mode A: no usable bolus, an arterial input or lesion curves
    #: cut by the end of the acquisition); then every index is None with this reason, the venous ones
    #: (``VENOUS_INDEX_KEYS``) only when ``venous_reason`` is set too.
    lesion_reason: str | None = None
    #: Why the venous indices cannot be measured under ``lesion_reason``, or None (Mode A: no usable bolus, or the
    #: venous outflow cut as well: :attr:`ctperf.analysis.masks.Measurability.venous`).
    venous_reason: str | None = None
    #: Why the Tmax levels above the hypoperfusion threshold and the HIR cannot be measured, or None (Mode A:
    #: curves cut before the most delayed tissue peaks); then they are None with this reason.
    late_tmax_reason: str | None = None
    #: Why no volume above a Tmax threshold can be measured, or None (Mode A: a global bolus delay puts normal tissue
    #: near the threshold); then hypoperfusion, penumbra, mismatch, the Tmax levels, HIR, the lesion's CBV indices,
    #: the lesion side (not "none": the side is not known) and the trial labels are None with this reason (the core
    #: is kept).
    tmax_volume_reason: str | None = None
    #: CBV indices that cannot be measured, each with the reason (Mode A: curves cut before they return; the Corrected
    #: CBV Index below the core's contrast-to-noise limit); they are None with it.
    cbv_withheld: dict[str, str] = field(default_factory=dict)
    #: False for bilateral or posterior-circulation hypoperfusion: no lesion side, no index that compares one
    #: hemisphere with the other (the Corrected CBV Index then uses normal cortex of both hemispheres) and no
    #: trial eligibility label (the trials selected one hemispheric lesion).
    hemisphere_logic: bool = True
    #: Why the hemisphere logic does not apply (e.g. "posterior-circulation hypoperfusion").
    hemisphere_reason: str = "hemisphere comparison does not apply"
    #: Delayed tissue (Tmax >= 4 s) that the CBV indices' "normal-appearing" references leave out; None: the
    #: lesion's own 4 s level.  Mode B passes the whole tissue's, its lesion masks being clipped to the ROI
    #: footprint (a delayed region outside the ROI is not normal tissue either).
    delayed: np.ndarray | None = None


def _ratio(num: float | None, den: float | None, what: str) -> tuple[float | None, str | None]:
    if num is None or den is None:
        return None, f"{what}: an input is undefined"
    if not np.isfinite(num) or not np.isfinite(den) or den <= 0:
        return None, f"{what}: denominator is zero or undefined"
    return float(num / den), None


def _mean(values: np.ndarray | None, mask: np.ndarray | None, stat=np.mean) -> float | None:
    """``stat`` (mean by default) of the finite ``values`` inside ``mask``; None when nothing is there."""
    if values is None or mask is None:
        return None
    sel = values[np.asarray(mask, bool) & np.isfinite(values)]
    return float(stat(sel)) if sel.size else None


def lesion_side(hypoperfusion: np.ndarray, hemi: Hemispheres | None, voxel_volume_ml: float) -> str:
    """'left' / 'right' (patient) hemisphere holding more hypoperfusion, or 'none'."""
    if hemi is None:
        return "none"
    left = float((hypoperfusion & (hemi.side > 0)).sum()) * voxel_volume_ml
    right = float((hypoperfusion & (hemi.side < 0)).sum()) * voxel_volume_ml
    if max(left, right) < MIN_LESION_ML_FOR_SIDE:
        return "none"
    return "left" if left >= right else "right"


class _Indices(dict):
    """The flat, ordered index document being built: a value, or None with a ``<key>_reason``."""

    def put(self, key: str, value, reason: str | None = None) -> None:
        self[key] = value
        if value is None:
            self[f"{key}_reason"] = reason or "undefined"

    def withhold(self, keys, reason: str) -> None:
        """Set each of ``keys`` to None with ``reason`` (replacing any value or earlier reason): what cannot be
        measured is null, never 0 mL / eligible."""
        for key in list(keys):
            self.pop(f"{key}_reason", None)
            self.put(key, None, reason)


def compute_indices(inp: IndexInputs) -> dict[str, Any]:
    """All indices as a flat, ordered dict (values float/int/bool/str/None; ``*_reason`` for None values): lesion
    volumes, mismatch and HIR, the lesion side, the CBV indices, venous transit and the imaging-eligibility labels
    (docs/definitions.md)."""
    out = _Indices()
    _volume_indices(out, inp)
    side = lesion_side(inp.lesion.hypoperfusion, inp.hemispheres, inp.voxel_volume_ml)
    if not inp.hemisphere_logic and out["hypoperfusion_vox"]:
        side = "none"
        out["lesion_side_reason"] = inp.hemisphere_reason
    out["lesion_side"] = side
    _cbv_indices(out, inp, side)
    for key, reason in inp.cbv_withheld.items():
        out.withhold((key,), reason)
    _venous_indices(out, inp)
    _eligibility(out, inp)
    if inp.tmax_volume_reason is not None:
        out.withhold(TMAX_VOLUME_KEYS + tuple(f"tmax{lv:g}_ml" for lv in inp.lesion.tmax_levels) + ("lesion_side",),
                     inp.tmax_volume_reason)
    if inp.lesion_reason is not None:
        kept = () if inp.venous_reason is not None else VENOUS_INDEX_KEYS
        out.withhold([k for k in out if not k.endswith("_reason") and k not in kept], inp.lesion_reason)
    out["voxel_volume_ml"] = round(inp.voxel_volume_ml, 6)
    return dict(out)


def _volume_indices(out: _Indices, inp: IndexInputs) -> None:
    """Hypoperfusion, core and penumbra volumes (mL and voxels), the mismatch, the Tmax level volumes and HIR."""
    thr, v, les = inp.thresholds, inp.voxel_volume_ml, inp.lesion
    hypo_vox, core_vox, pen_vox = int(les.hypoperfusion.sum()), int(les.core.sum()), int(les.penumbra.sum())
    hypo_ml, core_ml, pen_ml = hypo_vox * v, core_vox * v, pen_vox * v
    out.put("hypoperfusion_ml", round(hypo_ml, 3))
    out.put("core_ml", round(core_ml, 3))
    out.put("penumbra_ml", round(pen_ml, 3))
    out.put("hypoperfusion_vox", hypo_vox)
    out.put("core_vox", core_vox)
    out.put("penumbra_vox", pen_vox)
    out.put("mismatch_volume_ml", round(hypo_ml - core_ml, 3))
    if core_vox == 0:
        out.put("Mismatch_Ratio", None, "core volume is 0 mL: ratio undefined (infinite when hypoperfusion > 0)")
    else:
        out.put("Mismatch_Ratio", round(hypo_ml / core_ml, 4))

    for level, mask in sorted(les.tmax_levels.items()):
        out.put(f"tmax{level:g}_ml", round(float(mask.sum()) * v, 3))

    hir_num = les.tmax_levels.get(float(thr.hir_tmax_s))
    hir_den = les.tmax_levels.get(float(thr.tmax_hypoperfusion_s))
    hir, reason = _ratio(None if hir_num is None else float(hir_num.sum()),
                         None if hir_den is None else float(hir_den.sum()),
                         f"HIR (Tmax>={thr.hir_tmax_s:g} s / Tmax>={thr.tmax_hypoperfusion_s:g} s)")
    out.put("HIR", None if hir is None else round(hir, 4),
            reason and "no tissue with Tmax above the hypoperfusion threshold")
    if inp.late_tmax_reason is not None:
        out.withhold([f"tmax{lv:g}_ml" for lv in les.tmax_levels if lv > thr.tmax_hypoperfusion_s] + ["HIR"],
                     inp.late_tmax_reason)


def _cbv_indices(out: _Indices, inp: IndexInputs, side: str) -> None:
    """Corrected, contralateral-hemisphere, mirror and conventional CBV indices (mean lesion CBV over a reference)."""
    cbv, hemi, les = inp.cbv, inp.hemispheres, inp.lesion
    keys = LESION_CBV_INDEX_KEYS
    delayed = les.tmax_levels.get(4.0, les.hypoperfusion) if inp.delayed is None else inp.delayed
    lesion_cbv = _mean(cbv, les.hypoperfusion) if out["hypoperfusion_vox"] else None
    if cbv is None:
        for key in keys:
            out.put(key, None, "no CBV map")
    elif lesion_cbv is None:
        for key in keys:
            out.put(key, None, "no hypoperfusion (Tmax) region")
    elif not inp.hemisphere_logic:
        normal = inp.tissue & ~delayed
        ref_cortex = _mean(cbv, None if inp.cortex is None else (inp.cortex & normal))
        val, reason = _ratio(lesion_cbv, ref_cortex, "Corrected CBV Index (normal cortex of both hemispheres)")
        out.put("Corrected_CBV_Index", None if val is None else round(val, 4), reason or "no cortex mask")
        for key in keys[1:]:
            out.put(key, None, inp.hemisphere_reason)
    elif hemi is None or side == "none":
        for key in keys:
            out.put(key, None, "no hemisphere split (midline) available")
    else:
        contra = hemi.side == (-1 if side == "left" else 1)
        normal_contra = inp.tissue & contra & ~delayed
        ref_cortex = _mean(cbv, None if inp.cortex is None else (inp.cortex & normal_contra))
        val, reason = _ratio(lesion_cbv, ref_cortex, "Corrected CBV Index")
        out.put("Corrected_CBV_Index", None if val is None else round(val, 4), reason or "no cortex mask")
        val, reason = _ratio(lesion_cbv, _mean(cbv, normal_contra), "CBV index vs contralateral hemisphere")
        out.put("CBV_Index_contra_hemisphere", None if val is None else round(val, 4), reason)
        mirrored = mirror(les.hypoperfusion, hemi) & inp.tissue & ~les.hypoperfusion
        val, reason = _ratio(lesion_cbv, _mean(cbv, mirrored), "CBV index vs mirrored region")
        out.put("CBV_Index_mirror", None if val is None else round(val, 4), reason)

    if inp.roi_mask is None or cbv is None:
        out.put("Conventional_CBV_Index", None,
                "no lesion-cortex ROI given (--roi_mask)" if cbv is not None else "no CBV map")
    else:
        roi = np.asarray(inp.roi_mask, bool) & inp.tissue
        if inp.contra_mask is not None:
            ref = np.asarray(inp.contra_mask, bool) & inp.tissue
        elif hemi is not None:
            ref = mirror(roi, hemi) & inp.tissue & ~roi
        else:
            ref = None
        val, reason = _ratio(_mean(cbv, roi), _mean(cbv, ref), "Conventional CBV Index")
        out.put("Conventional_CBV_Index", None if val is None else round(val, 4),
                reason if ref is not None else "no contralateral ROI and no midline to mirror the ROI")


def _venous_indices(out: _Indices, inp: IndexInputs) -> None:
    """AIF and VOF times to peak, the venous transit PVT_sec and the qualitative PVT sign (sinus Tmax)."""
    put = out.put
    put("aif_ttp_s", None if inp.aif_ttp_s is None else round(float(inp.aif_ttp_s), 3), "no AIF curve")
    put("vof_ttp_s", None if inp.vof_ttp_s is None else round(float(inp.vof_ttp_s), 3), "no VOF curve")
    if inp.aif_ttp_s is None or inp.vof_ttp_s is None:
        put("PVT_sec", None, "AIF and VOF curves are both needed")
    else:
        put("PVT_sec", round(float(inp.vof_ttp_s - inp.aif_ttp_s), 3))
    sinus_tmax = _mean(inp.tmax_s, inp.sinus, stat=np.median)
    put("sinus_tmax_s", None if sinus_tmax is None else round(sinus_tmax, 3), "no venous sinus voxels identified")
    if sinus_tmax is None:
        put("PVT_present", None, "no venous sinus voxels identified")
    else:
        out["PVT_present"] = bool(sinus_tmax >= inp.thresholds.pvt_tmax_s)


def _eligibility(out: _Indices, inp: IndexInputs) -> None:
    """DEFUSE 3 and EXTEND imaging-eligibility labels (only with the trials' lesion thresholds, and only for one
    hemispheric lesion: None with the reason for a bilateral or posterior-circulation pattern); without a usable
    rCBF reference every core-derived value becomes None with its reason (never 0 mL / eligible)."""
    v = inp.voxel_volume_ml
    hypo_vox, core_vox = out["hypoperfusion_vox"], out["core_vox"]
    hypo_ml, core_ml = hypo_vox * v, core_vox * v
    ratio_ok_d3 = ((core_vox == 0 and hypo_vox > 0)
                   or (core_vox > 0 and hypo_ml / core_ml >= DEFUSE3["mismatch_ratio_min"]))
    ratio_ok_ex = ((core_vox == 0 and hypo_vox > 0)
                   or (core_vox > 0 and hypo_ml / core_ml > EXTEND["mismatch_ratio_min_exclusive"]))
    not_trial = trial_thresholds_reason(inp.thresholds)
    if not not_trial and not inp.hemisphere_logic and hypo_vox:
        not_trial = f"{inp.hemisphere_reason}; {TRIAL_LESION_REASON}"
    if not_trial:
        out.put("DEFUSE3_eligible", None, not_trial)
        out.put("EXTEND_eligible", None, not_trial)
    else:
        out["DEFUSE3_eligible"] = bool(core_ml < DEFUSE3["core_max_ml"] and ratio_ok_d3
                                       and hypo_ml - core_ml >= DEFUSE3["mismatch_volume_min_ml"])
        out["EXTEND_eligible"] = bool(core_ml < EXTEND["core_max_ml"] and ratio_ok_ex
                                      and hypo_ml - core_ml > EXTEND["mismatch_volume_min_exclusive_ml"])
    if inp.reference_reason is not None:
        out.withhold(("core_ml", "core_vox", "penumbra_ml", "penumbra_vox", "mismatch_volume_ml", "Mismatch_Ratio",
                      "DEFUSE3_eligible", "EXTEND_eligible"), inp.reference_reason)



def prr_percent(baseline_hypoperfusion_ml: float | None, followup_hypoperfusion_ml: float | None
                ) -> tuple[float | None, str | None]:
    """Perfusion reversal/reduction ratio (%): 100 * (baseline - follow-up) / baseline hypoperfusion volume."""
    if baseline_hypoperfusion_ml is None or followup_hypoperfusion_ml is None:
        return None, "a hypoperfusion volume is missing"
    if baseline_hypoperfusion_ml <= 0:
        return None, "baseline hypoperfusion volume is 0 mL"
    value = 100.0 * (baseline_hypoperfusion_ml - followup_hypoperfusion_ml) / baseline_hypoperfusion_ml
    return round(value, 3), None
