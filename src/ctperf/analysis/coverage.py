"""Does the lesion lie inside the acquired slab? (docs/definitions.md §3, "Coverage")

CT perfusion often covers only 40-80 mm of the brain, fewer than the 100-150 mm of the supratentorial brain. A
lesion that reaches the first or last slice goes on beyond the slab: every volume (hypoperfusion, core, penumbra,
mismatch) is then the covered part only, a lower bound, and a trial label rests on that lower bound (Emmer 2014:
an 8 cm slab shows ~10 % less infarct core than whole-brain coverage, 3-4 cm slabs less still).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ctperf.core.types import slice_axis_mm, voxel_volume_ml

#: Hypoperfusion (mL) in the first or last slice from which the lesion counts as going on beyond the slab (about
#: 2 cm^2 of cross-section in a 5 mm slice; the 1 mL below which no lesion side is named).
MIN_END_SLICE_ML = 1.0


@dataclass(frozen=True)
class Coverage:
    """The slab's craniocaudal extent and the reported lesion in its end slices."""

    #: Number of slices x slice spacing perpendicular to the slices (mm; a gantry tilt does not lengthen it).
    coverage_mm: float
    #: Lesion (mL) in the first / last slice (inferior / superior in the map's slice order); None when no lesion
    #: region is measured (``unmeasured_reason``).
    first_slice_ml: float | None
    last_slice_ml: float | None
    unmeasured_reason: str | None = None

    @property
    def end_slice_ml(self) -> float | None:
        return None if self.first_slice_ml is None else max(self.first_slice_ml, self.last_slice_ml)

    @property
    def lesion_beyond(self) -> bool:
        """True when the lesion reaches an end slice with at least :data:`MIN_END_SLICE_ML`."""
        return self.end_slice_ml is not None and self.end_slice_ml >= MIN_END_SLICE_ML

    def qa_flags(self) -> dict[str, bool]:
        return {"lesion_beyond_coverage": self.lesion_beyond}

    def qa_values(self) -> dict[str, Any]:
        end = self.end_slice_ml
        values = {"coverage_mm": round(self.coverage_mm, 2),
                  "lesion_end_slice_ml": None if end is None else round(end, 3)}
        if end is None:
            values["lesion_end_slice_reason"] = self.unmeasured_reason or "no lesion region measured"
        return values


def slab_coverage(lesion_zyx: np.ndarray, affine_ras: np.ndarray, unmeasured_reason: str | None = None) -> Coverage:
    """:class:`Coverage` of the reported lesion (bool, (z, y, x): the hypoperfusion and core masks as reported, so a
    kept core counts where the hypoperfusion is withheld) on the grid of ``affine_ras`` (voxel -> RAS mm); with
    ``unmeasured_reason`` (no lesion region is measured) the end slices' volume is None with that reason, not 0."""
    les = np.asarray(lesion_zyx, bool)
    n_z = les.shape[0]
    coverage_mm = float(n_z * abs(slice_axis_mm(affine_ras)[1]))
    if unmeasured_reason is not None or not n_z:
        return Coverage(coverage_mm, None, None, unmeasured_reason or "no slices")
    vox_ml = voxel_volume_ml(affine_ras)
    return Coverage(coverage_mm, float(les[0].sum()) * vox_ml, float(les[-1].sum()) * vox_ml)
