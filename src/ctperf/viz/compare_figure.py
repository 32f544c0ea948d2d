"""Figure of a follow-up comparison: baseline anatomy with reperfused, persisting and new hypoperfusion."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ctperf.core.orientation import display_orientation
from ctperf.viz.qa_figures import draw_baseline, label_edges, new_figure, save_figure

REPERFUSED_RGBA = (0.1, 0.8, 0.2, 0.65)
#: Width (inches) the title (PRR and the two volumes, or why they are not measured) and the legend line need.
MIN_WIDTH_IN = 8.5
PERSISTENT_RGBA = (0.9, 0.1, 0.1, 0.65)
NEW_RGBA = (1.0, 0.6, 0.0, 0.65)


def reperfusion_figure(baseline_hu: np.ndarray, affine_ras: np.ndarray, reperfused: np.ndarray,
                       persistent: np.ndarray, title: str, path: Path, n_max: int = 4, *,
                       new: np.ndarray) -> Path:
    """Up to ``n_max`` baseline slices with the most hypoperfusion of either study, in radiological display.

    Green: baseline Tmax above the threshold, no longer above it at follow-up (reperfused); red: still above it;
    orange (``new``): above it at follow-up only.
    """
    orient = display_orientation(affine_ras, baseline_hu.shape)
    lesion = (reperfused | persistent | new).reshape(len(baseline_hu), -1).sum(axis=1)
    ranked = [int(k) for k in np.argsort(-lesion, kind="stable")[:n_max] if lesion[k] > 0] or [len(lesion) // 2]
    slices = [k for k in orient.slice_order if k in ranked]
    # 2.6 in per slice, and never narrower than the title and legend lines need (one slice when nothing is marked)
    width_in = max(2.6 * len(slices) + 0.4, MIN_WIDTH_IN)
    cell = 2.6 / width_in
    fig = new_figure(width_in, 3.4)
    for i, z in enumerate(slices):
        ax = fig.add_axes((0.02 + i * cell, 0.07, cell - 0.01, 0.70))
        draw_baseline(ax, baseline_hu[z], orient)
        over = np.zeros(baseline_hu.shape[1:] + (4,))
        over[reperfused[z]] = REPERFUSED_RGBA
        over[persistent[z]] = PERSISTENT_RGBA
        over[new[z]] = NEW_RGBA
        ax.imshow(orient.image(over), interpolation="nearest", aspect=orient.aspect, origin="upper")
        label_edges(ax, orient)
        ax.set_title(f"S {orient.slice_s_mm[z]:+.0f} mm", fontsize=8)
    fig.text(0.02, 0.94, title, fontsize=9.5, fontweight="bold")
    fig.text(0.02, 0.885, "green: reperfused (baseline hypoperfusion no longer present), red: persisting, orange: new "
             "(follow-up only)", fontsize=8)
    return save_figure(fig, path)
