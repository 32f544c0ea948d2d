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
    """The slab's craniocaudal extent and the hypoperfusion in its end slices."""

    #: Number of slices x slice spacing perpendicular to the slices (mm; a gantry tilt does not lengthen it).
    coverage_mm: float
    #: Hypoperfusion (mL) in the first / last slice (inferior / superior in the map's slice order).
    first_slice_ml: float
    last_slice_ml: float

    @property
    def lesion_beyond(self) -> bool:
        """True when the hypoperfusion reaches an end slice with at least :data:`MIN_END_SLICE_ML`."""
        return max(self.first_slice_ml, self.last_slice_ml) >= MIN_END_SLICE_ML

    def qa_flags(self) -> dict[str, bool]:
        return {"lesion_beyond_coverage": self.lesion_beyond}

    def qa_values(self) -> dict[str, Any]:
        return {"coverage_mm": round(self.coverage_mm, 2),
                "lesion_end_slice_ml": round(max(self.first_slice_ml, self.last_slice_ml), 3)}


def slab_coverage(hypoperfusion_zyx: np.ndarray, affine_ras: np.ndarray) -> Coverage:
    """:class:`Coverage` of a hypoperfusion mask (bool, (z, y, x)) on the grid of ``affine_ras`` (voxel -> RAS mm)."""
    hyp = np.asarray(hypoperfusion_zyx, bool)
    vox_ml = voxel_volume_ml(affine_ras)
    n_z = hyp.shape[0]
    return Coverage(coverage_mm=float(n_z * abs(slice_axis_mm(affine_ras)[1])),
                    first_slice_ml=float(hyp[0].sum()) * vox_ml if n_z else 0.0,
                    last_slice_ml=float(hyp[-1].sum()) * vox_ml if n_z else 0.0)
