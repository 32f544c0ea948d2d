"""Colour-coded vendor maps: colour-bar detection and decoding back to values."""

import numpy as np
import pytest

from ctperf.errors import InputError
from ctperf.modeb.colormap_decode import decode_colour_series, decode_rgb, find_colour_bar
from ctperf.synthetic.vendor_maps import ramp_colours, render_colour_slice, smooth_brain_map, write_colour_series

LO, HI = 0.0, 12.0


@pytest.fixture(scope="module")
def brain_slice():
    return smooth_brain_map((3, 180, 200), LO, HI, seed=3)[1]


@pytest.mark.parametrize("ramp", ["jet", "rainbow", "warm"])
def test_decode_round_trip_any_ramp(brain_slice, ramp):
    rgb = render_colour_slice(brain_slice, (LO, HI), ramp_colours(ramp))
    bar = find_colour_bar(rgb)
    assert bar.orientation == "vertical"
    assert bar.bbox[3] > 0.9 * rgb.shape[1]  # near the right edge
    np.testing.assert_allclose(bar.ramp[0], ramp_colours(ramp)[0], atol=3)
    np.testing.assert_allclose(bar.ramp[-1], ramp_colours(ramp)[-1], atol=3)
    vals, res = decode_rgb(rgb, bar, (LO, HI))
    brain = np.isfinite(brain_slice)
    ok = brain & np.isfinite(vals)
    assert ok.sum() > 0.97 * brain.sum()  # only annotation pixels over the brain are lost
    err = np.abs(vals[ok] - brain_slice[ok]) / (HI - LO)
    assert err.max() < 0.02
    assert not np.isfinite(vals[~brain]).any()  # background, text, ticks, the bar itself -> NaN
    assert res["mean_distance"] < 3 and res["p95_distance"] < 6 and res["rejected_fraction"] < 0.01


def test_horizontal_bar_and_low_end(brain_slice):
    rgb = render_colour_slice(brain_slice, (LO, HI), ramp_colours("jet"))
    rot = np.ascontiguousarray(rgb.transpose(1, 0, 2))  # bar now horizontal along the bottom, low end right
    bar = find_colour_bar(rot, low_end="right")
    assert bar.orientation == "horizontal"
    vals, _ = decode_rgb(rot, bar, (LO, HI))
    truth = brain_slice.T
    ok = np.isfinite(truth) & np.isfinite(vals)
    assert np.abs(vals[ok] - truth[ok]).max() < 0.02 * (HI - LO)
    with pytest.raises(InputError):
        find_colour_bar(rot, low_end="bottom")


def test_reversed_bar_inverts_values(brain_slice):
    rgb = render_colour_slice(brain_slice, (LO, HI), ramp_colours("rainbow"))
    v1, _ = decode_rgb(rgb, find_colour_bar(rgb), (LO, HI))
    v2, _ = decode_rgb(rgb, find_colour_bar(rgb, low_end="top"), (LO, HI))
    ok = np.isfinite(v1)
    np.testing.assert_allclose(v2[ok], LO + HI - v1[ok], atol=0.02 * (HI - LO))


def test_off_ramp_colours_rejected(brain_slice):
    rgb = render_colour_slice(brain_slice, (LO, HI), ramp_colours("jet"))
    rgb[60:70, 60:70] = (255, 0, 255)  # magenta is not on a jet ramp
    vals, res = decode_rgb(rgb, find_colour_bar(rgb), (LO, HI))
    assert np.isnan(vals[60:70, 60:70]).all()
    assert res["n_rejected_far"] >= 100 and res["rejected_fraction"] > 0


def test_colour_bar_not_found():
    rng = np.random.default_rng(0)
    grey = np.repeat(rng.integers(0, 255, (120, 140, 1), dtype=np.uint8), 3, axis=2)
    with pytest.raises(InputError, match="colour bar not found"):
        find_colour_bar(grey)
    noise = rng.integers(0, 255, (120, 140, 3), dtype=np.uint8)  # colourful but no smooth strip
    with pytest.raises(InputError, match="colour bar not found"):
        find_colour_bar(noise)
    flat = np.zeros((120, 140, 3), np.uint8)
    flat[10:110, 120:130] = (200, 30, 30)  # a uniform red strip is not a colour ramp
    with pytest.raises(InputError, match="colour bar not found"):
        find_colour_bar(flat)


def test_decode_series_geometry(tmp_path):
    vol = smooth_brain_map((4, 110, 140), LO, HI, seed=5)
    aff = np.array([[-0.8, 0, 0, 40.0], [0, -0.8, 0, 55.0], [0, 0, 4.0, -12.0], [0, 0, 0, 1]])
    write_colour_series(vol, aff, tmp_path / "tmaxd", (LO, HI), ramp="jet")
    out, aff2, info = decode_colour_series(tmp_path / "tmaxd", (LO, HI))
    np.testing.assert_allclose(aff2, aff, atol=1e-3)
    ok = np.isfinite(vol) & np.isfinite(out)
    assert ok.sum() > 0.95 * np.isfinite(vol).sum()
    assert np.abs(out[ok] - vol[ok]).max() < 0.02 * (HI - LO)
    assert info["colour_bar"]["orientation"] == "vertical" and info["residual"]["rejected_fraction"] < 0.01
    with pytest.raises(InputError, match="range"):
        decode_colour_series(tmp_path / "tmaxd", None)


def test_framed_bar_with_ticks_and_jpeg(brain_slice):
    import io

    from PIL import Image

    rgb = render_colour_slice(brain_slice, (LO, HI), ramp_colours("jet"), bar_frame=True, ticks_across_bar=True)
    vals, _ = decode_rgb(rgb, find_colour_bar(rgb), (LO, HI))
    ok = np.isfinite(brain_slice) & np.isfinite(vals)
    assert ok.sum() > 0.97 * np.isfinite(brain_slice).sum()
    assert np.abs(vals[ok] - brain_slice[ok]).max() < 0.02 * (HI - LO)
    # lossy (JPEG q95) capture: bulk accuracy holds, sharp edges are smeared
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=95)
    jpg = np.asarray(Image.open(buf).convert("RGB"))
    vals, res = decode_rgb(jpg, find_colour_bar(jpg), (LO, HI))
    ok = np.isfinite(brain_slice) & np.isfinite(vals)
    err = np.abs(vals[ok] - brain_slice[ok]) / (HI - LO)
    assert ok.sum() > 0.9 * np.isfinite(brain_slice).sum()
    assert np.median(err) < 0.005 and np.percentile(err, 95) < 0.02


def test_black_ramp_end_warns(brain_slice):
    from ctperf.modeb.colormap_decode import decode_rgb_volume

    t = np.linspace(0, 1, 256)[:, None]
    hot = np.round(np.clip(3 * t - np.array([0, 1, 2]), 0, 1) * 255).astype(np.uint8)  # black-red-yellow-white
    rgb = render_colour_slice(brain_slice, (LO, HI), hot)
    vals, info = decode_rgb_volume(rgb[None], (LO, HI))
    assert any("fades into the background" in w for w in info["warnings"])
    bar = find_colour_bar(rgb)
    assert tuple(bar.ramp[-1].round()) == (255, 255, 255)  # the white top end was recovered by extension


def test_flat_ramp_stretch_gets_mid_value(brain_slice):
    ramp = ramp_colours("jet")
    ramp[230:] = ramp[230]  # the top 10 % of the range shares one colour
    rgb = render_colour_slice(brain_slice, (LO, HI), ramp)
    vals, _ = decode_rgb(rgb, find_colour_bar(rgb), (LO, HI))
    ok = np.isfinite(brain_slice) & np.isfinite(vals)
    err = np.abs(vals[ok] - brain_slice[ok]) / (HI - LO)
    assert err.max() < 0.06  # at most half the ambiguous stretch, not the whole of it
