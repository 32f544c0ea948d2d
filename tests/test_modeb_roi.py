"""Yellow ROI on a MIP screenshot -> mask on the map grid."""

import numpy as np
import pytest
from PIL import Image

from ctperf.errors import InputError
from ctperf.modeb.roi_mip import display_transform, fill_roi, roi_from_screenshot, to_display, yellow_mask
from ctperf.synthetic.screenshots import blob_polygon, render_mip_screenshot
from ctperf.synthetic.vendor_maps import smooth_brain_map

# standard DICOM axial (LPS rows/cols) and a NIfTI-style RAS+ affine (display must flip both axes)
AFF_LPS = np.array([[-0.9, 0, 0, 80.0], [0, -0.9, 0, 90.0], [0, 0, 5.0, -20.0], [0, 0, 0, 1]])
AFF_RAS = np.array([[0.9, 0, 0, -80.0], [0, 0.9, 0, -90.0], [0, 0, 5.0, -20.0], [0, 0, 0, 1]])


@pytest.fixture(scope="module")
def tmax():
    return smooth_brain_map((6, 150, 170), 0.0, 14.0, seed=7, texture=0.06)


def dice(a, b):
    return 2 * (a & b).sum() / (a.sum() + b.sum())


def test_yellow_classification():
    colours = {
        (255, 235, 0): True, (255, 255, 0): True, (230, 205, 30): True, (240, 220, 90): True,
        (40, 200, 40): False, (150, 255, 0): False, (255, 140, 0): False, (255, 165, 0): False,
        (255, 255, 255): False, (128, 128, 128): False, (0, 0, 0): False, (255, 250, 200): False,
        # anti-aliased fringes of distractors: green / orange / white blended 50 % with grey or black
        (84, 164, 84): False, (20, 100, 20): False, (191, 133, 64): False, (128, 70, 0): False,
        (191, 191, 191): False,
    }
    img = np.zeros((len(colours) * 6, 6, 3), np.uint8)
    for i, c in enumerate(colours):
        img[6 * i: 6 * i + 6] = c
    m = yellow_mask(img, min_component_px=1)
    for i, (c, expected) in enumerate(colours.items()):
        assert m[6 * i + 3, 3] == expected, c


def test_fill_outline_gap_and_painted():
    yy, xx = np.mgrid[0:100, 0:100]
    r = np.hypot(yy - 50, xx - 50)
    ring = (r > 19) & (r < 22)
    filled, kinds = fill_roi(ring)
    assert kinds == ["outline"] and dice(filled, r < 20.5) > 0.97
    open_ring = ring & ~((xx > 60) & (np.abs(yy - 50) < 4))  # 7 px gap
    filled, kinds = fill_roi(open_ring, max_gap_px=12)
    assert kinds[0].startswith("outline (gap closed") and dice(filled, r < 20.5) > 0.95
    blob = r < 15
    filled, kinds = fill_roi(blob)
    assert kinds == ["painted"] and (filled == blob).all()
    wide_open = ring & ~((xx > 55) & (np.abs(yy - 50) < 12))  # 23 px gap: not an ROI
    filled, kinds = fill_roi(wide_open, max_gap_px=12)
    assert kinds == ["open line (ignored)"] and not filled.any()


def test_display_is_radiological():
    for aff in (AFF_LPS, AFF_RAS):
        img = np.arange(12.0).reshape(3, 4)
        disp = to_display(img, display_transform(aff))
        # world RAS x of every display pixel: must decrease to the right (patient right on image left)
        jj, ii = np.meshgrid(np.arange(4), np.arange(3))
        world_x = aff[0, 0] * jj + aff[0, 1] * ii
        world_y = aff[1, 0] * jj + aff[1, 1] * ii
        wx, wy = to_display(world_x, display_transform(aff)), to_display(world_y, display_transform(aff))
        assert (np.diff(wx, axis=1) < 0).all() and (np.diff(wy, axis=0) < 0).all()
        assert disp.shape == (3, 4)
    assert display_transform(AFF_LPS) == (False, False, False)
    assert display_transform(AFF_RAS) == (False, True, True)


CASES = [
    dict(scale=1.0),
    dict(scale=0.7, offset_xy=(95, 55)),
    dict(scale=1.6, crop_ltrb=(30, 20, 340, 300)),
    dict(scale=1.3, style="painted", offset_xy=(60, 80)),
    dict(scale=1.15, gap_px=9),
    dict(scale=0.85, suffix=".jpg"),
    dict(scale=1.25, affine="ras", crop_ltrb=(40, 35, 300, 260)),
    dict(scale=1.1, style="both", window=(2.0, 9.0)),
]


@pytest.mark.parametrize("case", CASES, ids=[str(i) for i in range(len(CASES))])
def test_roi_from_screenshot(tmp_path, tmax, case):
    case = dict(case)
    aff = AFF_RAS if case.pop("affine", "lps") == "ras" else AFF_LPS
    path = tmp_path / ("shot" + case.pop("suffix", ".png"))
    poly = blob_polygon((70, 105), (17, 13), seed=len(case))
    png, truth, info = render_mip_screenshot(tmax, aff, path, poly, seed=3, **case)
    res = roi_from_screenshot(png, tmax, aff)
    assert res.mask2d_yx.shape == tmax.shape[1:] and res.mask2d_yx.dtype == bool
    assert res.footprint_zyx.shape == tmax.shape and (res.footprint_zyx == res.mask2d_yx[None]).all()
    assert dice(res.mask2d_yx, truth) >= 0.9
    reg = res.registration
    assert reg["scale"] == pytest.approx(info["scale_xy"][0], rel=0.03)
    assert reg["dx"] == pytest.approx(info["offset_xy"][0], abs=2.5)
    assert reg["dy"] == pytest.approx(info["offset_xy"][1], abs=2.5)
    assert reg["score"] > 0.8


def test_no_yellow(tmp_path, tmax):
    png, _, _ = render_mip_screenshot(tmax, AFF_LPS, tmp_path / "s.png", style="outline")
    rgb = np.asarray(Image.open(png).convert("RGB")).copy()
    rgb[yellow_mask(rgb, min_component_px=1)] = (255, 140, 0)  # the ROI repainted orange
    Image.fromarray(rgb).save(tmp_path / "orange.png")
    with pytest.raises(InputError, match="no yellow"):
        roi_from_screenshot(tmp_path / "orange.png", tmax, AFF_LPS)
    with pytest.raises(InputError, match="not found"):
        roi_from_screenshot(tmp_path / "missing.png", tmax, AFF_LPS)
    png, _, _ = render_mip_screenshot(tmax, AFF_LPS, tmp_path / "open.png", gap_px=25)
    with pytest.raises(InputError, match="not closed"):
        roi_from_screenshot(png, tmax, AFF_LPS)


def test_unrelated_screenshot_rejected(tmp_path, tmax):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 255, (200, 220, 1), dtype=np.uint8).repeat(3, axis=2)
    rgb[80:120, 90:120] = (255, 235, 0)
    Image.fromarray(rgb).save(tmp_path / "noise.png")
    with pytest.raises(InputError, match="register"):
        roi_from_screenshot(tmp_path / "noise.png", tmax, AFF_LPS)


def test_colour_coded_mip_without_roi_is_ambiguous(tmp_path, tmax):
    """A jet-coded MIP (with its colour bar) and no drawn ROI: its yellow band is the map's, not an ROI."""
    from ctperf.synthetic.vendor_maps import ramp_colours, render_colour_slice

    from ctperf.modeb.roi_mip import axial_mip

    rgb = render_colour_slice(axial_mip(tmax), (0, 14), ramp_colours("jet"), annotations=False)
    Image.fromarray(rgb).save(tmp_path / "colour_mip.png")
    with pytest.raises(InputError, match="ROI colour is ambiguous"):
        roi_from_screenshot(tmp_path / "colour_mip.png", tmax, AFF_LPS)
