"""ctperf.core.morphology: the fast in-plane morphology gives exactly scipy's results (the pipeline's masks are
unchanged by it), and the cortical ribbon built on it equals the per-slice scipy construction."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ctperf.analysis.masks import cortical_ribbon
from ctperf.core.morphology import dilate_disk_inplane, dilate_inplane, disk, fill_holes_inplane


def _ellipse(ry: float, rx: float) -> np.ndarray:
    iy, ix = int(ry), int(rx)
    yy, xx = np.ogrid[-iy:iy + 1, -ix:ix + 1]
    return (yy / ry) ** 2 + (xx / rx) ** 2 <= 1.0


def _random_masks(seed: int, n: int):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        shape = (int(rng.integers(1, 4)), int(rng.integers(1, 25)), int(rng.integers(1, 25)))
        yield rng, rng.random(shape) < rng.random()


def test_disk_dilation_and_erosion_equal_scipy():
    for rng, m in _random_masks(3, 80):
        r = int(rng.integers(0, 8))
        st = disk(r)[None]
        assert np.array_equal(dilate_disk_inplane(m, r), ndimage.binary_dilation(m, st))
        assert np.array_equal(~dilate_disk_inplane(~m, r, border=True), ndimage.binary_erosion(m, st))


def test_ellipse_dilation_equals_scipy():
    for rng, m in _random_masks(4, 60):
        fp = _ellipse(float(rng.uniform(0.5, 6)), float(rng.uniform(0.5, 6)))
        assert np.array_equal(dilate_inplane(m, fp), ndimage.binary_dilation(m, fp[None]))


def test_fill_holes_inplane_equals_per_slice_scipy():
    for _, m in _random_masks(5, 60):
        m = ndimage.binary_dilation(m, disk(1)[None])  # larger blobs: real holes
        expected = np.stack([ndimage.binary_fill_holes(s) for s in m])
        assert np.array_equal(fill_holes_inplane(m), expected)


def _ribbon_reference(mask, spacing, depth_mm=3.0, closing_mm=5.0):
    """The cortical ribbon's definition written with scipy per slice (closing, hole filling, distance map)."""
    sx, sy = spacing[:2]
    ry, rx = max(1, int(round(closing_mm / sy))), max(1, int(round(closing_mm / sx)))
    yy, xx = np.ogrid[-ry:ry + 1, -rx:rx + 1]
    fp = (yy * sy) ** 2 + (xx * sx) ** 2 <= closing_mm ** 2
    out = np.zeros_like(mask)
    for z in range(mask.shape[0]):
        if mask[z].any():
            closed = ndimage.binary_closing(np.pad(mask[z], ((ry, ry), (rx, rx))), structure=fp)[ry:-ry, rx:-rx]
            filled = ndimage.binary_fill_holes(closed | mask[z])
            out[z] = filled & (ndimage.distance_transform_edt(filled, sampling=(sy, sx)) <= depth_mm) & mask[z]
    return out


def test_cortical_ribbon_equals_scipy_construction():
    rng = np.random.default_rng(6)
    zz, yy, xx = np.mgrid[0:6, 0:80, 0:70]
    head = ((yy - 40) / 34.0) ** 2 + ((xx - 35) / 28.0) ** 2 <= 1.0
    sulci = rng.random(head.shape) < 0.08  # CSF-like gaps the closing must bridge
    mask = head & ~sulci
    mask[0] = False  # an empty slice
    for spacing in ((0.9, 0.9, 5.0), (0.7, 1.1, 5.0), (0.8984375, 0.8984375, 5.0)):
        assert np.array_equal(cortical_ribbon(mask, spacing), _ribbon_reference(mask, spacing))


def test_bounding_box_is_that_of_the_true_voxels():
    from ctperf.core.morphology import bounding_box

    rng = np.random.default_rng(0)
    for fraction in (0.0, 0.01, 0.2):
        m = rng.random((4, 9, 11)) < fraction
        zz, yy, xx = np.nonzero(m)
        expected = ((slice(zz.min(), zz.max() + 1), slice(yy.min(), yy.max() + 1), slice(xx.min(), xx.max() + 1))
                    if len(zz) else (slice(0, 0),) * 3)
        assert bounding_box(m) == expected
