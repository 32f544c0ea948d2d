"""Where the rCBF reference comes from, and when the hemisphere comparison does not apply.

rCBF is CBF divided by the mean CBF of normal-appearing reference tissue.  The usual reference is the
less-affected hemisphere (an MCA-territory stroke is one-sided).  Two hypoperfusion patterns break that
assumption and are recognised here from the Tmax map alone (no atlas):

* **bilateral**: both hemispheres hold hypoperfused tissue (Tmax above the hypoperfusion threshold), the smaller
  at least ``BILATERAL_MIN_FRACTION`` of the larger and at least ``BILATERAL_MIN_ML``;
* **posterior circulation**: at least ``POSTERIOR_MIN_FRACTION`` of the hypoperfused volume lies in the posterior
  ``POSTERIOR_BAND`` of the brain's anterior-posterior extent (occipital lobes, cerebellum, brainstem are fed by
  the vertebro-basilar system, which crosses the midline).

In both cases the reference is normal-Tmax tissue anywhere in the brain (:func:`normal_reference`), the
hemisphere-based indices are not computed, and a QA flag says so.  A reference smaller than ``min_reference_ml``
gives no rCBF at all (:func:`reference_shortfall`): core, mismatch and eligibility are then undefined, never 0.

Pure numpy on (z, y, x) arrays; ``affine_ras`` maps voxel (x, y, z) to RAS mm.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ctperf.core.morphology import remove_small_clusters

#: Smaller / larger hemisphere hypoperfusion volume at and above which the pattern is bilateral.
BILATERAL_MIN_FRACTION = 0.3
#: ... and the smaller hemisphere's volume must be at least this (mL).
BILATERAL_MIN_ML = 5.0
#: Posterior part of the brain's anterior-posterior extent (fraction) used for the posterior-circulation test.
POSTERIOR_BAND = 0.35
#: Fraction of the hypoperfused volume inside that band at and above which the pattern is posterior circulation.
POSTERIOR_MIN_FRACTION = 0.6
#: Below this hypoperfused volume (mL) there is no pattern to classify.
MIN_PATTERN_ML = 1.0


@dataclass
class HypoperfusionPattern:
    """Which hemisphere logic applies to a Tmax map.

    kind : 'none' (no hypoperfusion), 'unilateral', 'bilateral' or 'posterior'.
    left_ml, right_ml : hypoperfused tissue volume (mL) per hemisphere (patient left / right).
    posterior_fraction : share of the hypoperfused volume in the posterior band (NaN without hypoperfusion).
    """

    kind: str
    left_ml: float
    right_ml: float
    posterior_fraction: float

    @property
    def hemisphere_logic(self) -> bool:
        """False when comparing one hemisphere with the other is meaningless (bilateral or posterior)."""
        return self.kind in ("none", "unilateral")


def hypoperfusion_pattern(tmax_zyx: np.ndarray, tissue: np.ndarray, side_zyx: np.ndarray, affine_ras: np.ndarray,
                          voxel_ml: float, *, threshold_s: float, min_cluster_ml: float = 0.0
                          ) -> HypoperfusionPattern:
    """Classify the hypoperfusion (tissue with Tmax > ``threshold_s``, clusters < ``min_cluster_ml`` removed).

    Parameters
    ----------
    tmax_zyx : float (z, y, x), s (NaN outside the brain).
    tissue : bool (z, y, x) parenchyma mask.
    side_zyx : int8 (z, y, x), +1 patient left, -1 right, 0 outside / on the midline.
    affine_ras : 4x4 voxel (x, y, z) -> RAS mm (posterior = smaller RAS y).
    voxel_ml : volume of one voxel (mL).
    """
    hyp = tissue & np.isfinite(tmax_zyx) & (np.nan_to_num(tmax_zyx) > threshold_s)
    hyp = remove_small_clusters(hyp, voxel_ml, min_cluster_ml)
    left = float((hyp & (side_zyx > 0)).sum() * voxel_ml)
    right = float((hyp & (side_zyx < 0)).sum() * voxel_ml)
    if left + right < MIN_PATTERN_ML or not tissue.any():
        return HypoperfusionPattern("none", left, right, float("nan"))
    a_p = _ras_y(affine_ras, tissue.shape)
    y_tissue = a_p[tissue]
    lo, hi = float(y_tissue.min()), float(y_tissue.max())
    posterior = a_p < lo + POSTERIOR_BAND * (hi - lo)
    frac = float((hyp & posterior).sum() / max(int(hyp.sum()), 1))
    small, large = min(left, right), max(left, right)
    if frac >= POSTERIOR_MIN_FRACTION:
        kind = "posterior"
    elif small >= max(BILATERAL_MIN_ML, BILATERAL_MIN_FRACTION * large):
        kind = "bilateral"
    else:
        kind = "unilateral"
    return HypoperfusionPattern(kind, left, right, frac)


def _ras_y(affine_ras: np.ndarray, shape_zyx: tuple[int, int, int]) -> np.ndarray:
    """RAS y (anterior, mm) of every voxel centre, shape (z, y, x)."""
    a = np.asarray(affine_ras, float)
    zz, yy, xx = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in shape_zyx), indexing="ij")
    return a[1, 0] * xx + a[1, 1] * yy + a[1, 2] * zz + a[1, 3]


def normal_reference(tissue: np.ndarray, tmax_zyx: np.ndarray, *, normal_tmax_s: float = 4.0,
                     margin_s: float = 2.0) -> np.ndarray:
    """Normal-Tmax tissue anywhere in the brain: Tmax below ``max(normal_tmax_s, P25 + margin_s)``.

    The lower quartile of the tissue's Tmax (not the median) sets the raised limit when the whole brain is
    delayed against the AIF, so up to ~70 % of the brain may be hypoperfused without entering the reference.
    """
    ok = tissue & np.isfinite(tmax_zyx)
    if not ok.any():
        return ok
    limit = max(normal_tmax_s, float(np.percentile(tmax_zyx[ok], 25)) + margin_s)
    return ok & (tmax_zyx < limit)


def reference_shortfall(reference: np.ndarray, voxel_ml: float, min_reference_ml: float) -> str | None:
    """Reason string when the reference region is too small for a trustworthy mean CBF, else None."""
    vol = float(np.asarray(reference, bool).sum() * voxel_ml)
    if vol < min_reference_ml:
        return (f"rCBF reference region holds {vol:.1f} mL of normal-Tmax tissue (< {min_reference_ml:g} mL): "
                "rCBF, core and mismatch are undefined")
    return None


def truncation_affected_maps(aif_truncated: bool, acquisition_truncated: bool) -> list[str]:
    """Maps (and the indices built on them) a truncated bolus biases.

    A truncated AIF (still high at the end) corrupts the deconvolution input and its area: every map.  Tissue or
    venous curves cut before they return (the AIF complete) bias the areas: CBV, MTT = CBV / CBF and, through the
    VOF partial-volume scaling of the AIF, the absolute CBF scale (rCBF and Tmax are not affected).
    """
    if aif_truncated:
        return ["cbf", "cbv", "mtt", "tmax", "rcbf"]
    if acquisition_truncated:
        return ["cbv", "mtt", "cbf"]
    return []
