"""Render screen-capture-like MIP screenshots with a hand-drawn yellow ROI (test-data generator).

An *independent truth generator* for :mod:`ctperf.modeb.roi_mip`: it imports nothing from ctperf outside
``ctperf.synthetic``.  The axial maximum-intensity projection of a ``(z, y, x)`` volume is shown in grey in
radiological orientation (patient right on image left, anterior up; derived here from the RAS affine), scaled by
a factor, placed in a viewer window with UI chrome (toolbar, side panel, text), cropped, and annotated with an
anti-aliased yellow ROI (outline or painted area, drawn with 4x supersampling) plus green / orange / white
distractor strokes.  The function returns the image path and the TRUE ROI mask on the map grid ``(y, x)``:
pixels whose centre lies inside the ROI polygon.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from matplotlib.path import Path as MplPath
from PIL import Image, ImageDraw

YELLOW = (255, 235, 0)
SUPERSAMPLE = 4


def display_flips(affine_ras: np.ndarray) -> tuple[bool, bool, bool]:
    """(transpose, flip_rows, flip_cols) turning a (y, x) slice into radiological display orientation."""
    a = np.asarray(affine_ras, float)[:3, :2]
    transpose = abs(a[0, 1]) > abs(a[0, 0])  # the row axis (y) runs left-right: swap axes
    if transpose:
        a = a[:, ::-1]
    flip_cols = a[0, 0] > 0  # display columns must run towards patient left (RAS x decreasing)
    flip_rows = a[1, 1] > 0  # display rows must run towards posterior (RAS y decreasing)
    return bool(transpose), bool(flip_rows), bool(flip_cols)


def to_display(img_yx: np.ndarray, affine_ras: np.ndarray) -> np.ndarray:
    transpose, fr, fc = display_flips(affine_ras)
    out = np.swapaxes(img_yx, 0, 1) if transpose else img_yx
    if fr:
        out = out[::-1]
    if fc:
        out = out[:, ::-1]
    return out


def _points_to_display(points_yx: np.ndarray, shape_yx, affine_ras) -> np.ndarray:
    """Map (y, x) index coordinates on the map grid to (row, col) index coordinates on the display."""
    transpose, fr, fc = display_flips(affine_ras)
    p = np.asarray(points_yx, float).copy()
    ny, nx = shape_yx
    if transpose:
        p = p[:, ::-1]
        ny, nx = nx, ny
    if fr:
        p[:, 0] = ny - 1 - p[:, 0]
    if fc:
        p[:, 1] = nx - 1 - p[:, 1]
    return p


def blob_polygon(centre_yx, radii_yx, n: int = 28, wobble: float = 0.12, seed: int = 0) -> np.ndarray:
    """A smooth irregular closed polygon (n, 2) in (y, x) index coordinates (the hand-drawn ROI shape)."""
    rng = np.random.default_rng(seed)
    th = np.linspace(0, 2 * np.pi, n, endpoint=False)
    r = 1.0 + wobble * (np.sin(2 * th + rng.uniform(0, 6)) * rng.uniform(0.5, 1) +
                        np.sin(3 * th + rng.uniform(0, 6)) * rng.uniform(0.3, 0.8))
    return np.stack([centre_yx[0] + radii_yx[0] * r * np.sin(th), centre_yx[1] + radii_yx[1] * r * np.cos(th)], 1)


def polygon_mask(polygon_yx: np.ndarray, shape_yx) -> np.ndarray:
    """Pixels of a (y, x) grid whose centre (integer index coordinate) lies inside the polygon."""
    yy, xx = np.mgrid[0:shape_yx[0], 0:shape_yx[1]]
    inside = MplPath(np.asarray(polygon_yx)[:, ::-1]).contains_points(np.stack([xx.ravel(), yy.ravel()], 1))
    return inside.reshape(shape_yx)


def _grey_mip(vol_zyx: np.ndarray, window, lut=None) -> np.ndarray:
    """MIP as uint8 grey ``(y, x)`` or, with ``lut`` (``(n, 3)`` uint8, low value first), colour ``(y, x, 3)``.

    Undefined (NaN) pixels are black in both cases.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mip = np.nanmax(np.asarray(vol_zyx, float), axis=0)
    if window is None:
        window = (float(np.nanpercentile(mip, 1)), float(np.nanpercentile(mip, 99.5)))
    lo, hi = window
    t = np.clip((np.nan_to_num(mip, nan=lo) - lo) / (hi - lo), 0, 1)
    if lut is not None:
        lut = np.asarray(lut, np.uint8)
        rgb = lut[np.round(t * (len(lut) - 1)).astype(int)]
        return np.where(np.isfinite(mip)[..., None], rgb, 0).astype(np.uint8)
    return np.where(np.isfinite(mip), t * 255, 0).astype(np.uint8)


def render_mip_screenshot(vol_zyx: np.ndarray, affine_ras: np.ndarray, out_path, polygon_yx=None, *,
                          scale: float = 1.0, offset_xy=(70, 50), canvas_wh=None, crop_ltrb=None, window=None,
                          style: str = "outline", line_width: float = 3.0, gap_px: float = 0.0,
                          distractors: bool = True, jpeg_quality: int = 90, fill_alpha: float = 0.35,
                          lut=None, seed: int = 0):
    """Render the axial MIP of ``vol_zyx`` as a screenshot with a yellow ROI.

    ``polygon_yx``: ROI polygon vertices in map index coordinates (y, x); default a blob right of centre.
    ``scale``: display zoom of the MIP; ``offset_xy``: where the MIP's top-left lands on the canvas;
    ``canvas_wh``: canvas size (default: fits the MIP plus chrome); ``crop_ltrb``: final crop box on the canvas.
    ``style``: ``"outline"`` (closed anti-aliased polygon of ``line_width`` screen pixels; ``gap_px > 0`` leaves
    an opening of that length), ``"painted"`` (opaque filled polygon) or ``"both"`` (outline over a translucent
    fill of opacity ``fill_alpha``).  ``.jpg`` paths are saved as JPEG.
    ``lut`` (``(n, 3)`` uint8, low value first) shows the MIP colour-coded through that table over ``window``
    (default: 1st-99.5th percentile) instead of in grey.

    Returns ``(path, true_mask_yx, info)``; ``info`` has the exact ``scale_xy`` and ``offset_xy`` of the MIP in
    the final image (screen continuous coordinate = scale * display continuous coordinate + offset).
    """
    rng = np.random.default_rng(seed)
    nz, ny, nx = np.shape(vol_zyx)
    if polygon_yx is None:
        polygon_yx = blob_polygon((ny * 0.45, nx * 0.62), (ny * 0.13, nx * 0.1), seed=seed)
    polygon_yx = np.asarray(polygon_yx, float)
    truth = polygon_mask(polygon_yx, (ny, nx))

    disp = to_display(_grey_mip(vol_zyx, window, lut), affine_ras)
    h, w = disp.shape[:2]
    sw, sh = max(1, int(round(w * scale))), max(1, int(round(h * scale)))
    sx, sy = sw / w, sh / h
    mip_img = Image.fromarray(disp).resize((sw, sh), Image.BILINEAR).convert("RGB")
    ox, oy = offset_xy
    cw, ch = canvas_wh if canvas_wh is not None else (ox + sw + 60, oy + sh + 40)

    # UI chrome: dark canvas, toolbar, side panel with buttons, black viewport
    canvas = Image.new("RGB", (cw, ch), (38, 38, 42))
    d = ImageDraw.Draw(canvas)
    d.rectangle([0, 0, cw, 26], fill=(62, 62, 68))
    d.text((8, 7), "syngo.via   File   View   Tools   Layout", fill=(235, 235, 235))
    d.rectangle([0, 27, 44, ch], fill=(52, 52, 58))
    for k in range(6):
        d.rectangle([8, 40 + 34 * k, 36, 64 + 34 * k], fill=(90, 90, 98), outline=(140, 140, 150))
    d.rectangle([48, 30, cw - 4, ch - 4], fill=(0, 0, 0))
    canvas.paste(mip_img, (ox, oy))

    big = Image.new("RGBA", (cw * SUPERSAMPLE, ch * SUPERSAMPLE), (0, 0, 0, 0))
    bd = ImageDraw.Draw(big)

    def to_big(points_yx: np.ndarray) -> list[tuple[float, float]]:
        rc = _points_to_display(points_yx, (ny, nx), affine_ras)
        xs = sx * (rc[:, 1] + 0.5) + ox  # screen continuous coordinates
        ys = sy * (rc[:, 0] + 0.5) + oy
        return [(SUPERSAMPLE * x - 0.5, SUPERSAMPLE * y - 0.5) for x, y in zip(xs, ys)]

    if distractors:
        cy, cx = polygon_yx.mean(axis=0)
        ry, rx = np.ptp(polygon_yx, axis=0)
        t = np.linspace(0, 1, 30)
        green = np.stack([cy + ry * (0.9 + 0.3 * t), cx - rx * (1.2 - 2.0 * t)], 1)
        orange = np.stack([cy - ry * (0.9 + 0.2 * np.sin(3 * t)), cx - rx * (1.5 - 1.8 * t)], 1)
        bd.line(to_big(green), fill=(40, 200, 40, 255), width=int(3 * SUPERSAMPLE), joint="curve")
        bd.line(to_big(orange), fill=(255, 140, 0, 255), width=int(3 * SUPERSAMPLE), joint="curve")
        bd.line(to_big(np.array([[ny * 0.85, nx * 0.2], [ny * 0.85, nx * 0.45]])), fill=(255, 255, 255, 255),
                width=int(2 * SUPERSAMPLE))
    pts = to_big(polygon_yx)
    if style == "painted":
        bd.polygon(pts, fill=YELLOW + (255,))
    if style == "both":  # translucent fill under an outline (a common annotation style)
        fill_layer = Image.new("RGBA", big.size, (0, 0, 0, 0))
        ImageDraw.Draw(fill_layer).polygon(pts, fill=YELLOW + (int(255 * fill_alpha),))
        big.alpha_composite(fill_layer)
    if style in ("outline", "both"):
        closed = pts + pts[:1]
        if gap_px > 0:  # leave an opening of gap_px screen pixels (arc length) at a random place
            xy = np.asarray(closed)
            seg = np.hypot(*np.diff(xy, axis=0).T)
            n_sub = np.maximum(1, np.ceil(seg).astype(int))  # ~1 supersampled pixel spacing
            dense = np.concatenate([xy[i] + np.outer(np.arange(n_sub[i]) / n_sub[i], xy[i + 1] - xy[i])
                                    for i in range(len(seg))])
            arc = np.concatenate([[0], np.cumsum(np.hypot(*np.diff(dense, axis=0).T))])
            start = int(rng.integers(len(dense)))
            dense, arc = np.roll(dense, -start, axis=0), (np.roll(arc, -start) - arc[start]) % arc[-1]
            keep = arc >= SUPERSAMPLE * gap_px
            closed = [tuple(p) for p in dense[keep][np.argsort(arc[keep])]]
        bd.line(closed, fill=YELLOW + (255,), width=int(round(line_width * SUPERSAMPLE)), joint="curve")
    if style not in ("outline", "painted", "both"):
        raise ValueError(f"unknown style {style!r}")
    overlay = big.resize((cw, ch), Image.BOX)
    canvas = Image.alpha_composite(canvas.convert("RGBA"), overlay).convert("RGB")
    d = ImageDraw.Draw(canvas)
    if distractors:
        d.text((ox + 6, oy + 6), "Tmax MIP", fill=(255, 255, 255))
        d.text((ox + 6, oy + sh // 2), "R", fill=(255, 255, 255))

    if crop_ltrb is not None:
        canvas = canvas.crop(tuple(int(v) for v in crop_ltrb))
        ox, oy = ox - crop_ltrb[0], oy - crop_ltrb[1]
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() in (".jpg", ".jpeg"):
        canvas.save(out, quality=jpeg_quality)
    else:
        canvas.save(out)
    info = dict(scale_xy=(sx, sy), offset_xy=(float(ox), float(oy)), display_flips=display_flips(affine_ras))
    return out, truth, info
