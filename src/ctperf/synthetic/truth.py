"""Ground truth of the phantom: maps, masks, independent index definitions and their export.

Index definitions (applied to the TRUTH maps with this module's own code, not the engine's):

* ``rCBF_true = CBF / mean(CBF over tissue of the hemisphere opposite the lesion)`` (all tissue if no lesion);
* ``hypoperfusion = tissue & Tmax > 6 s``; ``core = hypoperfusion & rCBF_true < 0.30``;
  ``penumbra = hypoperfusion & ~core``;
* ``HIR = vol(Tmax >= 10 s) / vol(Tmax > 6 s)``; ``Mismatch_Ratio = hypoperfusion / core``;
* ``Corrected_CBV_Index = mean CBV in hypoperfusion / mean CBV of contralateral cortical GM``;
  ``CBV_Index_contra_hemisphere = mean CBV in hypoperfusion / mean CBV of all contralateral tissue``;
* ``PVT_sec = TTP(VOF) - TTP(AIF)`` of the noiseless curves; ``PVT_present``: truth Tmax >= 10 s in the sinus.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .physics import curve_ttp

TMAX_HYPO_S = 6.0
#: What each truth map means (written into truth.json).
TRUTH_DEFINITIONS = {
    "cbf": "nominal flow F (mL/100g/min) of the tissue model C = F*rho/(6000 kH) * Ca (x) h (x) R",
    "cbv": "F * MTT / 60 (mL/100g)",
    "mtt": "mean transit time = area of the residue R (s)",
    "tmax": "bolus delay + time of the peak of the dispersed residue h (x) R (s); box residue: the time the "
            "rising edge of h (x) R reaches half its maximum (plateau start); no dispersion: the delay",
    "cbf_apparent": "F * max(h (x) R): what an ideal model-free deconvolution reads (mL/100g/min)",
    "core_apparent": "hypoperfusion & cbf_apparent / its contralateral mean < 0.30: the core on the model-free "
                     "convention the published rCBF threshold was derived on (= core without dispersion)",
    "dispersion": "time constant tau (s) of the unit-area exponential transport kernel h = exp(-t/tau)/tau",
}
RCBF_CORE = 0.30


@dataclass(repr=False)
class PhantomTruth:
    """Truth arrays, all (z, y, x) in the frame-0 (unmoved) position.

    Maps are defined on ``tissue``: cbf [mL/100g/min], cbv [mL/100g], mtt [s] are 0 elsewhere; tmax and delay_s
    [s] are the tissue values on tissue, ``venous_delay_s`` on venous-sinus voxels (label 8), 0 elsewhere
    (arteries carry the AIF itself).
    """

    cbf: np.ndarray
    cbv: np.ndarray
    mtt: np.ndarray
    tmax: np.ndarray
    delay_s: np.ndarray
    #: int8: 0 air, 1 scalp, 2 skull, 3 CSF, 4 GM, 5 WM, 6 deep grey, 7 artery, 8 venous sinus (majority class).
    labels: np.ndarray
    brain: np.ndarray
    tissue: np.ndarray
    csf: np.ndarray
    vessels: np.ndarray
    core: np.ndarray
    penumbra: np.ndarray
    hypoperfusion: np.ndarray
    lesion_any: np.ndarray
    sinus: np.ndarray
    cortex: np.ndarray
    side: np.ndarray
    aif_true: tuple[np.ndarray, np.ndarray]
    vof_true: tuple[np.ndarray, np.ndarray]
    aif_voxels_zyx: np.ndarray
    vof_voxels_zyx: np.ndarray
    #: Extras: partial-volume fractions of arterial and venous blood (0-1), and the CBF an ideal deconvolution
    #: of a dispersed tissue curve measures (CBF * max of the effective residue), mL/100g/min.
    artery_fraction: np.ndarray | None = None
    venous_fraction: np.ndarray | None = None
    cbf_apparent: np.ndarray | None = None
    #: rCBF_true map (set by compute_truth_masks).
    rcbf: np.ndarray | None = None
    #: The core on the apparent CBF (``TRUTH_DEFINITIONS["core_apparent"]``; set by compute_truth_masks when
    #: ``cbf_apparent`` is given): dispersion lowers the apparent CBF less in long-MTT (core) tissue than in
    #: short-MTT normal tissue, so the apparent rCBF of a core is higher than its flow ratio.
    core_apparent: np.ndarray | None = None
    #: Vascular dispersion time constant (s) of the tissue inflow and the peak time (s) of the dispersed residue
    #: ``h (x) R`` (truth Tmax = delay + residue_peak_s; for a box residue its plateau start), float32 (z, y, x).
    dispersion: np.ndarray | None = None
    residue_peak_s: np.ndarray | None = None
    #: Block id per voxel of a block phantom (:mod:`.blocks`; -1 background tissue, -2 not tissue), else None.
    block: np.ndarray | None = None

    def __repr__(self) -> str:
        return (f"PhantomTruth(shape={self.cbf.shape}, tissue={int(self.tissue.sum())} vox, "
                f"core={int(self.core.sum())} vox)")


def _contra_mask(truth: PhantomTruth, lesion_side: int) -> np.ndarray:
    if lesion_side == 0:
        return truth.tissue
    return truth.tissue & (truth.side == -lesion_side)


def compute_truth_masks(truth: PhantomTruth, lesion_side: int) -> None:
    """Fill ``rcbf``, ``hypoperfusion``, ``core`` and ``penumbra`` of ``truth`` in place from its maps."""
    ref = _contra_mask(truth, lesion_side)
    mean_ref = float(truth.cbf[ref].mean()) if ref.any() else float("nan")
    with np.errstate(invalid="ignore", divide="ignore"):
        rcbf = np.where(truth.tissue, truth.cbf / mean_ref, 0.0).astype(np.float32)
    truth.rcbf = rcbf
    truth.hypoperfusion = truth.tissue & (truth.tmax > TMAX_HYPO_S)
    truth.core = truth.hypoperfusion & (rcbf < RCBF_CORE)
    truth.penumbra = truth.hypoperfusion & ~truth.core
    if truth.cbf_apparent is not None:
        ref_app = float(truth.cbf_apparent[ref].mean()) if ref.any() else float("nan")
        with np.errstate(invalid="ignore", divide="ignore"):
            truth.core_apparent = truth.hypoperfusion & (truth.cbf_apparent / ref_app < RCBF_CORE)


def _f(x) -> float | None:
    """Strict-JSON float (None for NaN / inf / missing)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _median(a: np.ndarray) -> float | None:
    return _f(np.median(a)) if a.size else None


def _ratio(num, den) -> float | None:
    if num is None or den is None or den == 0:
        return None
    return _f(num / den)


def compute_truth_metrics(truth: PhantomTruth, spec, affine_ras: np.ndarray, lesion_side: int) -> dict[str, Any]:
    """Truth indices (strict-JSON-able dict) computed independently from the truth maps."""
    vox_ml = float(abs(np.linalg.det(np.asarray(affine_ras)[:3, :3])) / 1000.0)
    tis = truth.tissue
    tmax = truth.tmax

    def vol(mask) -> float:
        return float(np.count_nonzero(mask) * vox_ml)

    hypo_ml = vol(truth.hypoperfusion)
    core_ml = vol(truth.core)
    pen_ml = vol(truth.penumbra)
    m: dict[str, Any] = {
        "hypoperfusion_ml": hypo_ml,
        "core_ml": core_ml,
        "penumbra_ml": pen_ml,
        "tmax4_ml": vol(tis & (tmax > 4.0)),
        "tmax6_ml": vol(tis & (tmax > 6.0)),
        "tmax8_ml": vol(tis & (tmax > 8.0)),
        "tmax10_ml": vol(tis & (tmax >= 10.0)),
    }
    m["HIR"] = _ratio(m["tmax10_ml"], m["tmax6_ml"])
    if core_ml > 0:
        m["Mismatch_Ratio"] = _ratio(hypo_ml, core_ml)
        m["Mismatch_Ratio_reason"] = None
    else:
        m["Mismatch_Ratio"] = None
        m["Mismatch_Ratio_reason"] = "core volume is 0 mL (ratio undefined)"
    m["mismatch_volume_ml"] = hypo_ml - core_ml
    if truth.core_apparent is not None:
        m["core_apparent_ml"] = vol(truth.core_apparent)

    contra = _contra_mask(truth, lesion_side)
    contra_cortex = contra & truth.cortex
    hyp_cbv = float(truth.cbv[truth.hypoperfusion].mean()) if truth.hypoperfusion.any() else None
    ctx_cbv = float(truth.cbv[contra_cortex].mean()) if contra_cortex.any() else None
    hem_cbv = float(truth.cbv[contra].mean()) if contra.any() else None
    m["Corrected_CBV_Index"] = _ratio(hyp_cbv, ctx_cbv)
    m["CBV_Index_contra_hemisphere"] = _ratio(hyp_cbv, hem_cbv)
    if hyp_cbv is None:
        m["CBV_Index_reason"] = "no Tmax > 6 s tissue"

    t_a, ca = truth.aif_true
    t_v, cv = truth.vof_true
    m["aif_ttp_s"] = _f(curve_ttp(t_a, ca))
    m["vof_ttp_s"] = _f(curve_ttp(t_v, cv))
    m["PVT_sec"] = _f(m["vof_ttp_s"] - m["aif_ttp_s"])
    sinus_tmax = tmax[truth.sinus]
    venous_tmax = float(np.median(sinus_tmax)) if sinus_tmax.size else float(spec.venous_delay_s)
    m["sinus_tmax_s"] = _f(venous_tmax)
    m["PVT_present"] = bool(venous_tmax >= 10.0)
    m["lesion_side"] = {1: "left", -1: "right", 0: "none"}[lesion_side]
    m["voxel_volume_ml"] = vox_ml
    m["rcbf_reference_cbf"] = _f(truth.cbf[contra].mean()) if contra.any() else None

    normal = tis & ~truth.lesion_any
    gm = normal & (truth.labels == 4)
    wm = normal & (truth.labels == 5)
    for name, mask in (("gm", gm), ("wm", wm)):
        m[f"{name}_cbf_median"] = _median(truth.cbf[mask])
        m[f"{name}_cbv_median"] = _median(truth.cbv[mask])
        m[f"{name}_mtt_median"] = _median(truth.mtt[mask])
        m[f"{name}_tmax_median"] = _median(truth.tmax[mask])
    m["tissue_ml"] = vol(tis)
    m["n_aif_voxels"] = int(len(truth.aif_voxels_zyx))
    m["n_vof_voxels"] = int(len(truth.vof_voxels_zyx))
    m["aif_peak_hu"] = _f(ca.max())
    m["vof_peak_hu"] = _f(cv.max())
    return m


def json_clean(x, ndigits: int | None = None):
    """Strict-JSON copy of ``x``: numpy scalars/arrays to Python, NaN/inf to None, floats rounded if ``ndigits``."""
    if isinstance(x, dict):
        return {str(k): json_clean(v, ndigits) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_clean(v, ndigits) for v in x]
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        v = _f(x)
        return round(v, ndigits) if v is not None and ndigits is not None else v
    if isinstance(x, np.ndarray):
        return json_clean(x.tolist(), ndigits)
    return x



def write_truth(ph, out_dir) -> Path:
    """Write the truth maps (NIfTI, (x, y, z) on disk with ``ph.affine_ras``) and ``truth.json``; returns out_dir.

    Files: truth_cbf, truth_cbv, truth_mtt, truth_tmax, truth_delay (float32), truth_labels (int8),
    truth_core, truth_penumbra, truth_hypoperfusion (uint8) ``.nii.gz``; when present also truth_cbf_apparent
    (CBF x peak of the dispersed residue), truth_dispersion, truth_residue_peak (float32), truth_core_apparent
    (uint8, the core on the apparent CBF) and truth_block (int16).
    truth.json holds ``ph.truth_metrics`` at the top level plus ``phantom_spec`` and ``truth_definitions``.
    """
    import nibabel as nib

    from .phantom import spec_to_dict

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    aff = np.asarray(ph.affine_ras, dtype=float)
    tr = ph.truth
    items = {
        "truth_cbf": (tr.cbf, np.float32), "truth_cbv": (tr.cbv, np.float32), "truth_mtt": (tr.mtt, np.float32),
        "truth_tmax": (tr.tmax, np.float32), "truth_delay": (tr.delay_s, np.float32),
        "truth_labels": (tr.labels, np.int8), "truth_core": (tr.core, np.uint8),
        "truth_penumbra": (tr.penumbra, np.uint8), "truth_hypoperfusion": (tr.hypoperfusion, np.uint8),
    }
    for name, arr, dtype in (("truth_cbf_apparent", tr.cbf_apparent, np.float32),
                             ("truth_dispersion", tr.dispersion, np.float32),
                             ("truth_residue_peak", tr.residue_peak_s, np.float32),
                             ("truth_core_apparent", tr.core_apparent, np.uint8),
                             ("truth_block", tr.block, np.int16)):
        if arr is not None:
            items[name] = (arr, dtype)
    for name, (arr, dtype) in items.items():
        data = np.ascontiguousarray(np.asarray(arr).astype(dtype).transpose(2, 1, 0))
        img = nib.Nifti1Image(data, aff)
        img.set_qform(aff, code=1)
        img.set_sform(aff, code=1)
        img.header.set_xyzt_units("mm", "sec")
        nib.save(img, str(out / f"{name}.nii.gz"))
    doc = dict(ph.truth_metrics)
    doc["phantom_spec"] = spec_to_dict(ph.spec)
    doc["truth_definitions"] = TRUTH_DEFINITIONS
    with open(out / "truth.json", "w") as fh:
        json.dump(json_clean(doc), fh, indent=2, allow_nan=False)
    return out
