"""The Pillow renderer of the QA figures (ctperf.viz.raster) against matplotlib's colour maps and ticks."""

from __future__ import annotations

import matplotlib
import numpy as np

from ctperf.viz import raster


def test_turbo_and_gray_match_matplotlib():
    x = np.linspace(-2.0, 17.0, 2001)[None, :]
    x[0, ::97] = np.nan
    for lut, name in ((raster.TURBO_LUT, "turbo"), (raster.GRAY_LUT, "gray")):
        cmap = matplotlib.colormaps[name].with_extremes(bad="black", under="black")
        want = np.round(cmap(np.ma.masked_invalid((x - 0.0) / 15.0))[..., :3] * 255).astype(int)
        got = raster.colorize(x, lut, 0.0, 15.0, under=(0, 0, 0)).astype(int)
        assert np.abs(got - want).max() <= 1, name


def test_outline_is_the_mask_border():
    m = np.zeros((7, 7), bool)
    m[2:5, 2:5] = True
    edge = raster.outline(m)
    assert edge.sum() == 8 and not edge[3, 3] and edge[2, 2]


def test_nice_ticks():
    assert raster.nice_ticks(0, 80) == [0, 20, 40, 60, 80]
    assert raster.nice_ticks(0, 15) == [0, 2.5, 5, 7.5, 10, 12.5, 15]
    assert [raster.tick_label(v, [0, 2.5]) for v in (0, 2.5)] == ["0.0", "2.5"]
