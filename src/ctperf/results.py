"""Typed results passed between pipeline steps (pure data; no I/O).

All volumes are (z, y, x) on the map grid described by ``affine_ras`` (see :mod:`ctperf.study`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


def time_to_peak_s(t: np.ndarray, y: np.ndarray) -> float:
    """Time of a curve's maximum, refined by the vertex of the parabola through the peak sample and its two
    neighbours (exact for non-uniform sampling; the sample time at either end or where the three points are not
    concave; clamped to the neighbouring sample times).  NaN for an empty curve.  Used by Mode A and Mode B."""
    t = np.asarray(t, float)
    y = np.asarray(y, float)
    ok = np.isfinite(t) & np.isfinite(y)
    t, y = t[ok], y[ok]
    if t.size == 0:
        return float("nan")
    i = int(np.argmax(y))
    if i == 0 or i == t.size - 1:
        return float(t[i])
    t0, t1, t2 = t[i - 1: i + 2]
    y0, y1, y2 = y[i - 1: i + 2]
    d01 = (y1 - y0) / (t1 - t0)  # Newton divided differences of the interpolating parabola
    d12 = (y2 - y1) / (t2 - t1)
    a = (d12 - d01) / (t2 - t0)
    if a >= 0:
        return float(t1)
    # p(x) = y0 + d01 (x - t0) + a (x - t0)(x - t1);  p'(x) = 0 at the vertex
    return float(np.clip((t0 + t1) / 2 - d01 / (2 * a), t0, t2))


@dataclass
class Curve:
    """A time-concentration curve in delta HU (above baseline)."""

    time_s: np.ndarray
    delta_hu: np.ndarray
    #: Voxel indices (z, y, x) averaged into this curve, shape (n, 3).
    voxels_zyx: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), int))

    @property
    def ttp_s(self) -> float:
        """Time to peak (s), see :func:`time_to_peak_s`."""
        return time_to_peak_s(self.time_s, self.delta_hu)


@dataclass
class TissueMasks:
    brain: np.ndarray
    csf: np.ndarray
    vessels: np.ndarray

    @property
    def tissue(self) -> np.ndarray:
        """Brain parenchyma used for statistics: brain without CSF and large vessels."""
        return self.brain & ~self.csf & ~self.vessels


@dataclass
class Hemispheres:
    """Midline and hemisphere labels.

    ``side`` is +1 in the patient's left hemisphere, -1 in the right, 0 outside the brain / on the plane.
    ``mirror_vox`` is a 4x4 matrix mapping voxel index (x, y, z, 1) to the index of its mirror image across the
    midsagittal plane.
    """

    side: np.ndarray
    mirror_vox: np.ndarray
    normal_ras: np.ndarray
    point_ras: np.ndarray


@dataclass
class PerfusionResult:
    """Everything the deconvolution engine produces for one study."""

    affine_ras: np.ndarray
    #: mL/100g/min, mL/100g, s, s, s; NaN outside the brain.
    cbf: np.ndarray
    cbv: np.ndarray
    mtt: np.ndarray
    tmax: np.ndarray
    ttp: np.ndarray
    #: CBF relative to normal-appearing tissue of the less-affected hemisphere (fraction, 1.0 = normal).
    rcbf: np.ndarray
    masks: TissueMasks
    hemispheres: Hemispheres
    aif: Curve
    vof: Curve
    #: 'left' | 'right' | 'none': hemisphere with the larger Tmax > 6 s volume (or 'none' when both are ~0).
    affected_side: str
    #: Mean CBF of the reference (normal, less-affected hemisphere) tissue, mL/100g/min.
    reference_cbf: float
    #: Baseline (pre-contrast) image in HU, for QA figures.
    baseline_hu: np.ndarray
    #: QA flags (bool) and QA measurements (numbers) with units in their names.
    qa_flags: dict[str, bool] = field(default_factory=dict)
    qa_values: dict[str, Any] = field(default_factory=dict)
    #: Wall-clock seconds per stage.
    stage_seconds: dict[str, float] = field(default_factory=dict)
    #: Extra maps written to ``aux/`` (e.g. ``cbf_standard``, ``tmax_standard``: the standard model-free
    #: convention on the same study), same grid and units as the maps of the same name.
    aux_maps: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class LesionMasks:
    """Binary lesion masks on the map grid plus the Tmax level masks used by the indices."""

    hypoperfusion: np.ndarray
    core: np.ndarray
    penumbra: np.ndarray
    #: Tmax >= level (after tissue restriction and cluster filtering), keyed by level in seconds.
    tmax_levels: dict[float, np.ndarray] = field(default_factory=dict)
