"""A hand-drawn yellow ROI on a MIP screenshot -> a mask on the perfusion-map grid.

Steps
-----
1. **Yellow classification** (:func:`yellow_mask`): HSV hue 45-72 degrees, saturation >= 0.45, value >= 0.5,
   then connected components smaller than ``min_component_px`` are dropped.  This rejects green (hue ~120),
   orange (hue ~20-40), white / grey / black (low saturation) and the anti-aliased fringes of those colours
   (blending with grey keeps their hue; blending with black lowers the value).  Only the fringe of the yellow
   stroke itself (yellow over a dark background at < 50 % coverage) is lost.
2. **Filling** (:func:`fill_roi`): per yellow component, holes are filled.  A component that encloses an
   interior at least half as large as the stroke is an *outline*; the ROI is then its interior plus the inner
   half of the stroke (the polygon the person traced runs along the stroke centre).  An outline that does not
   close is closed by dilating it with a disk of the smallest radius r = 1 .. ``max_gap_px // 2`` that makes
   it enclose an interior, filling the holes and eroding back by r (a plain closing does not join facing line
   ends), i.e. gaps up to about ``max_gap_px`` screenshot pixels are bridged.
   Components that never enclose an interior are *painted areas* and are used as they are, unless they are
   thin strokes (< 8 px wide: an outline with a wider gap, yellow text or arrows), which are ignored; when
   nothing remains an :class:`InputError` asks to close the outline.  Several ROIs are united.
3. **Registration** (:func:`register_screenshot`): the axial MIP ``np.nanmax(tmax, axis=0)`` is put in
   radiological display orientation (patient right on image left, anterior up; flips / transpose derived from
   the affine).  The screenshot is converted to grey with coloured pixels (the ROI, other annotations) masked
   out (and thin bright strokes - white text, rulers - found by a 7 px white top-hat).  A coarse search over
   scales (log grid, 4 % steps) computes the *masked normalised cross-correlation*
   for all translations at once with FFTs (Padfield 2012) at ~80 px working resolution; the best (scale,
   translation) is refined at full resolution by Nelder-Mead on (scale, dy, dx) maximising the NCC.  This
   tolerates scale, offset, UI chrome and cropping of a screen capture (>= ``min_overlap`` of the MIP visible).
4. **Mapping back**: the screenshot ROI is resampled at the registered position of every display pixel and the
   display orientation undone, giving ``mask2d_yx`` on the map grid.

The ROI drawn on an axial MIP only constrains the in-plane position: ``footprint_zyx`` is ``mask2d_yx``
extruded through every slice (a column through the whole volume), not a 3D lesion ROI.  Combine it with a
3D criterion (e.g. Tmax > 6 s) to get voxels.

Colour-coded (rainbow / vendor table) MIP screenshots are detected by :func:`ctperf.modeb.colour_mip.is_colour_coded`
and take another route for steps 1-3 (:mod:`ctperf.modeb.colour_mip`): registration by the correlation ratio
between colour labels and MIP values, then the ROI is the yellow the colour map does not explain at the
registered position; the result is mapped back as in step 4.

Known limits: the screenshot must show the MIP of the same Tmax volume (grey: any window, the NCC is insensitive
to linear contrast changes, but not inverted; colour: any table that maps one value to one colour) without
rotation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy import fft as sfft
from scipy import ndimage, optimize
from skimage.transform import resize

from ctperf.errors import InputError

HUE_RANGE_DEG = (45.0, 72.0)
MIN_SATURATION = 0.45
MIN_VALUE = 0.5
#: RGB distance within which a pixel has the colour of the drawn stroke (colour-coded MIPs).
STROKE_COLOUR_TOL = 30.0


@dataclass
class RoiResult:
    """ROI on the map grid plus how the screenshot was registered.

    ``registration``: ``scale`` (screenshot pixels per map display pixel), ``dx`` / ``dy`` (screen continuous
    coordinate of the display origin), ``score`` (masked NCC, 1 = perfect), ``flips`` (transpose, flip_rows,
    flip_cols applied to map (y, x) for display) and ``roi_kind`` per component (outline / painted).
    """

    mask2d_yx: np.ndarray
    footprint_zyx: np.ndarray
    registration: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------ yellow


def _hsv(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    f = np.asarray(rgb)[..., :3].astype(np.float32) / 255.0
    r, g, b = f[..., 0], f[..., 1], f[..., 2]
    mx, mn = f.max(axis=-1), f.min(axis=-1)
    c = mx - mn
    safe = np.where(c > 0, c, 1)
    h = np.where(mx == r, ((g - b) / safe) % 6, np.where(mx == g, (b - r) / safe + 2, (r - g) / safe + 4))
    h = np.where(c > 0, h * 60.0, np.nan)
    s = np.where(mx > 0, c / np.where(mx > 0, mx, 1), 0)
    return h, s, mx


def yellow_mask(rgb: np.ndarray, min_component_px: int = 12) -> np.ndarray:
    """Strictly yellow pixels of an ``(y, x, 3)`` image (see the module docstring for the rule)."""
    img = np.asarray(rgb)[..., :3]
    mx = img.max(axis=-1)
    cand = (mx >= MIN_VALUE * 255) & ((mx - img.min(axis=-1)) >= MIN_SATURATION * mx)  # cheap pre-filter
    m = np.zeros(img.shape[:2], bool)
    if cand.any():
        h, s, v = _hsv(img[cand])
        m[cand] = (h >= HUE_RANGE_DEG[0]) & (h <= HUE_RANGE_DEG[1]) & (s >= MIN_SATURATION) & (v >= MIN_VALUE)
    return drop_small_components(m, min_component_px)


def drop_small_components(mask: np.ndarray, min_px: int) -> np.ndarray:
    """``mask`` without its 8-connected components smaller than ``min_px`` pixels."""
    if min_px <= 1 or not mask.any():
        return mask
    lab, _ = ndimage.label(mask, structure=np.ones((3, 3)))
    keep = np.bincount(lab.ravel()) >= min_px
    keep[0] = False
    return keep[lab]


def _disk(r: int) -> np.ndarray:
    y, x = np.mgrid[-r:r + 1, -r:r + 1]
    return x * x + y * y <= r * r + 0.5


def fill_roi(yellow: np.ndarray, max_gap_px: int = 12,
             min_paint_half_width_px: float = 4.0) -> tuple[np.ndarray, list[str]]:
    """Turn yellow strokes into a filled ROI (screenshot grid). Returns (mask, kind per component).

    Kinds: ``"outline"``, ``"outline (gap closed, radius r px)"``, ``"painted"`` or ``"open line (ignored)"``
    (a stroke thinner than ``2 * min_paint_half_width_px`` that encloses nothing even after gap closing:
    an outline with a gap wider than ``max_gap_px``, or yellow text / arrows; it contributes nothing).
    """
    lab, n = ndimage.label(yellow, structure=np.ones((3, 3)))
    roi = np.zeros_like(yellow, bool)
    kinds = []
    pad = max_gap_px + 2
    for i, sl in enumerate(ndimage.find_objects(lab), start=1):
        sl = tuple(slice(max(0, s.start - pad), s.stop + pad) for s in sl)
        comp = np.pad(lab[sl] == i, pad)
        filled = ndimage.binary_fill_holes(comp)
        interior = filled & ~comp
        kind = "outline"
        if interior.sum() < 0.5 * comp.sum():
            for r in range(1, max_gap_px // 2 + 1):
                # thicken by r (ends closer than ~2r join), fill, thin back by r
                fat = ndimage.binary_dilation(comp, _disk(r))
                filled = ndimage.binary_erosion(ndimage.binary_fill_holes(fat), _disk(r)) | comp
                interior = filled & ~comp
                if interior.sum() >= 0.5 * comp.sum():
                    kind = f"outline (gap closed, radius {r} px)"
                    break
            else:
                kind, filled, interior = "painted", ndimage.binary_fill_holes(comp), None
                if ndimage.distance_transform_edt(comp).max() < min_paint_half_width_px:
                    kinds.append("open line (ignored)")  # a thin stroke that encloses nothing
                    continue
        if interior is not None:
            # keep the interior and the inner half of the stroke: the traced contour is the stroke centre
            d_out = ndimage.distance_transform_edt(filled)
            d_in = ndimage.distance_transform_edt(~interior)
            filled = interior | (comp & (d_in <= d_out))
        kinds.append(kind)
        region = filled[pad:-pad, pad:-pad]
        tgt = roi[sl]
        tgt |= region[: tgt.shape[0], : tgt.shape[1]]
    return roi, kinds


# ------------------------------------------------------------------------------------ display orientation


def display_transform(affine_ras: np.ndarray) -> tuple[bool, bool, bool]:
    """(transpose, flip_rows, flip_cols) that put a map (y, x) slice in radiological display orientation.

    Display columns run towards the patient's left (RAS x decreasing: patient right on image left), display
    rows towards posterior (anterior at the top).  Standard DICOM axial slices need no change.
    """
    a = np.asarray(affine_ras, float)[:3, :2]
    transpose = abs(a[0, 1]) > abs(a[0, 0])
    if transpose:
        a = a[:, ::-1]
    return bool(transpose), bool(a[1, 1] > 0), bool(a[0, 0] > 0)


def to_display(img_yx: np.ndarray, flips) -> np.ndarray:
    transpose, fr, fc = flips
    out = img_yx.T if transpose else img_yx
    return out[::-1 if fr else 1, ::-1 if fc else 1]


def from_display(img_disp: np.ndarray, flips) -> np.ndarray:
    transpose, fr, fc = flips
    out = img_disp[::-1 if fr else 1, ::-1 if fc else 1]
    return out.T if transpose else out


def axial_mip(vol_zyx: np.ndarray) -> np.ndarray:
    """``np.nanmax(vol, axis=0)`` without all-NaN warnings (all-NaN columns stay NaN)."""
    # fmax ignores NaN without a warning (warnings.catch_warnings would change process-global state)
    return np.fmax.reduce(np.asarray(vol_zyx, dtype=np.float32), axis=0)


# ------------------------------------------------------------------------------------------- registration


def _masked_ncc_all_shifts(tpl: np.ndarray, img: np.ndarray, img_mask: np.ndarray, min_overlap: int):
    """Masked NCC of a fully valid template against ``img`` for every shift (template top-left at (dy, dx)).

    Returns ``(ncc, offsets)`` where ``ncc[i, j]`` is for shift ``(i - (th - 1), j - (tw - 1))``.
    """
    th, tw = tpl.shape
    ih, iw = img.shape
    shape = (sfft.next_fast_len(ih + th - 1), sfft.next_fast_len(iw + tw - 1))
    m = img_mask.astype(np.float64)
    im = img * m

    def F(a):
        return sfft.rfft2(a, shape)

    def corr(ft_t, ft_i):
        full = sfft.irfft2(np.conj(ft_t) * ft_i, shape)
        # shifts -(th-1)..ih-1 and -(tw-1)..iw-1: negative shifts wrap to the end
        full = np.roll(full, (th - 1, tw - 1), axis=(0, 1))
        return full[: ih + th - 1, : iw + tw - 1]

    fm, fi, fi2 = F(m), F(im), F(im * img)
    f1, ft, ft2 = F(np.ones_like(tpl)), F(tpl), F(tpl * tpl)
    n = corr(f1, fm)
    s_i, s_i2 = corr(f1, fi), corr(f1, fi2)
    s_t, s_t2 = corr(ft, fm), corr(ft2, fm)
    s_ti = corr(ft, fi)
    n_safe = np.maximum(n, 1)
    num = s_ti - s_t * s_i / n_safe
    var_t = s_t2 - s_t ** 2 / n_safe
    var_i = s_i2 - s_i ** 2 / n_safe
    eps = 1e-6 * max(float(np.max(var_t)), 1e-12)
    ok = (n >= min_overlap) & (var_t > eps) & (var_i > eps)
    ncc = np.where(ok, num / np.sqrt(np.maximum(var_t * var_i, 1e-30)), -1.0)
    return ncc, (th - 1, tw - 1)


def _ncc_at(params, screen, valid, mip, grid, min_count):
    """NCC between the MIP (display grid points ``grid``) and the screenshot sampled at the mapped positions."""
    log_s, ty, tx = params
    s = np.exp(log_s)
    rr, cc = grid
    qy = s * (rr + 0.5) + ty - 0.5
    qx = s * (cc + 0.5) + tx - 0.5
    vals = ndimage.map_coordinates(screen, [qy, qx], order=1, mode="constant", cval=0.0)
    ok = ndimage.map_coordinates(valid, [qy, qx], order=1, mode="constant", cval=0.0) > 0.99
    if ok.sum() < min_count:
        return -1.0
    a = mip[rr[ok], cc[ok]]
    b = vals[ok]
    a = a - a.mean()
    b = b - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 0 else -1.0


def _block_pyramid(screen: np.ndarray, valid: np.ndarray, min_side: int = 64) -> list[tuple[np.ndarray, np.ndarray]]:
    """2x pyramid of a screenshot (block means; validity = all four pixels valid) to keep resizing cheap.

    ``screen`` is ``(H, W)`` grey or ``(H, W, K)`` label memberships; ``valid`` is ``(H, W)``.
    """
    pyramid = [(np.asarray(screen, np.float64), np.asarray(valid, np.float64))]
    while min(pyramid[-1][0].shape[:2]) >= min_side:
        a, v = pyramid[-1]
        hh, ww = a.shape[0] // 2 * 2, a.shape[1] // 2 * 2
        a = a[:hh, :ww].reshape(hh // 2, 2, ww // 2, 2, *a.shape[2:]).mean(axis=(1, 3))
        v = v[:hh, :ww].reshape(hh // 2, 2, ww // 2, 2).min(axis=(1, 3))
        pyramid.append((a, v))
    return pyramid


def coarse_search(screen: np.ndarray, screen_valid: np.ndarray, mip_disp: np.ndarray, score_fn, *,
                  scale_range=(0.4, 3.0), min_overlap: float = 0.5, work_px: int = 80,
                  max_screen_px: int = 150_000, scale_step: float = 1.04,
                  anti_aliasing: bool = True) -> tuple[float, float, float, float]:
    """Exhaustive (scale, translation) search at ~``work_px`` working resolution.

    ``score_fn(template, image, image_mask, min_count) -> (score_all_shifts, (oy, ox))`` scores the template
    against every shift (:func:`_masked_ncc_all_shifts` for grey screenshots, :func:`corr_ratio_all_shifts` for
    colour-label memberships ``(H, W, K)``).  Returns ``(score, scale, dy, dx)``; ``score = -2`` when no scale
    gave an overlap of at least ``min_overlap`` of the template.  ``anti_aliasing=False`` resamples the
    nearest pyramid level (2x block means) without extra smoothing (cheaper for many label channels).
    """
    mip = np.asarray(mip_disp, np.float64)
    h, w = mip.shape
    H, W = screen.shape[:2]
    f_max = min(1.0, work_px / max(h, w))
    best = (-2.0, 1.0, 0.0, 0.0)
    n_steps = int(np.ceil(np.log(scale_range[1] / scale_range[0]) / np.log(scale_step))) + 1
    templates: dict[float, np.ndarray] = {}
    pyramid = _block_pyramid(screen, screen_valid)
    for s in np.geomspace(scale_range[0], scale_range[1], n_steps):
        # working resolution: template ~work_px, but the resampled screenshot capped at ~max_screen_px pixels
        # (large captures at small display zoom), and the template never below 24 px
        f = min(f_max, s * np.sqrt(max_screen_px / (H * W)))
        f = round(max(f, 24.0 / max(h, w)), 4)
        if f not in templates:
            templates[f] = resize(mip, (max(8, round(h * f)), max(8, round(w * f))), order=1, anti_aliasing=True)
        tpl = templates[f]
        th, tw = tpl.shape
        fy, fx = th / h, tw / w
        g = f / s
        sh, sw = max(4, round(H * g)), max(4, round(W * g))
        lvl = 0  # start from the coarsest pyramid level that is still finer than the target
        while lvl + 1 < len(pyramid) and pyramid[lvl + 1][0].shape[0] >= sh and pyramid[lvl + 1][0].shape[1] >= sw:
            lvl += 1
        src_img, src_valid = pyramid[lvl]
        img = resize(src_img, (sh, sw, *src_img.shape[2:]), order=1,
                     anti_aliasing=anti_aliasing and sh < src_img.shape[0])
        msk = resize(src_valid, (sh, sw), order=1, anti_aliasing=False) > 0.99
        ncc, (oy, ox) = score_fn(tpl, img, msk, int(min_overlap * th * tw))
        k = int(np.argmax(ncc))
        i, j = np.unravel_index(k, ncc.shape)
        if ncc[i, j] > best[0]:
            gy, gx = sh / H, sw / W
            # screen' continuous = template continuous + shift; screen = screen' / g
            dy, dx = (i - oy) / gy, (j - ox) / gx
            best = (float(ncc[i, j]), float(np.sqrt((fy / gy) * (fx / gx))), dy, dx)
    return best


def refine_registration(screen_grey: np.ndarray, screen_valid: np.ndarray, mip_disp: np.ndarray, start, *,
                        min_overlap: float = 0.5, work_px: int = 80) -> tuple[float, float, float, float]:
    """Nelder-Mead on (log scale, dy, dx) maximising the NCC at full display resolution (strided for large maps).

    ``start = (scale, dy, dx)`` from :func:`coarse_search`.  Returns ``(score, scale, dy, dx)``.
    """
    mip = np.asarray(mip_disp, np.float64)
    h, w = mip.shape
    s0, dy0, dx0 = start
    f_max = min(1.0, work_px / max(h, w))
    stride = max(1, int(np.ceil(max(h, w) / 200)))
    rr, cc = np.mgrid[0:h:stride, 0:w:stride]
    grid = (rr.ravel(), cc.ravel())
    valid = np.asarray(screen_valid, np.float64)
    screen = np.asarray(screen_grey, np.float64)
    mip_s = ndimage.gaussian_filter(mip, 0.7)
    min_count = int(min_overlap * grid[0].size)

    def cost(p):
        return -_ncc_at(p, screen, valid, mip_s, grid, min_count)

    x0 = np.array([np.log(s0), dy0, dx0])
    step = max(1.0, s0 / f_max / 2)
    simplex = np.array([x0, x0 + [0.03, 0, 0], x0 + [0, step, 0], x0 + [0, 0, step]])
    res = optimize.minimize(cost, x0, method="Nelder-Mead",
                            options=dict(initial_simplex=simplex, xatol=0.01, fatol=1e-7, maxiter=400))
    x = res.x  # the best simplex vertex, never worse than x0
    return float(-cost(x)), float(np.exp(x[0])), float(x[1]), float(x[2])


def register_screenshot(screen_grey: np.ndarray, screen_valid: np.ndarray, mip_disp: np.ndarray,
                        scale_range=(0.4, 3.0), min_overlap: float = 0.5, work_px: int = 80,
                        max_screen_px: int = 150_000) -> dict[str, float]:
    """Find ``scale, dy, dx`` with screen continuous coordinate = scale * display continuous coordinate + (dy, dx).

    ``mip_disp`` is the MIP in display orientation with NaNs already filled; ``screen_valid`` marks screenshot
    pixels usable for matching (grey, not annotation).  Returns a dict with ``scale``, ``dy``, ``dx``, ``score``
    (final NCC) and ``coarse_score``.
    """
    coarse, s0, dy0, dx0 = coarse_search(screen_grey, screen_valid, mip_disp, _masked_ncc_all_shifts,
                                         scale_range=scale_range, min_overlap=min_overlap, work_px=work_px,
                                         max_screen_px=max_screen_px)
    if coarse <= -1.0:
        raise InputError("could not register the screenshot to the Tmax MIP (no overlap at any scale)")
    score, s, dy, dx = refine_registration(screen_grey, screen_valid, mip_disp, (s0, dy0, dx0),
                                           min_overlap=min_overlap, work_px=work_px)
    return dict(scale=s, dy=dy, dx=dx, score=score, coarse_score=float(coarse))


# ------------------------------------------------------------------------------------------------ pipeline


def _check_score(score: float, min_score: float) -> None:
    if score < min_score:
        raise InputError(f"could not register the screenshot to the Tmax MIP (best correlation "
                         f"{score:.2f} < {min_score}); is it a MIP of this Tmax map?")


def _colour_bar_box(rgb: np.ndarray) -> np.ndarray:
    """Pixels of a colour bar burned into the screenshot (its yellow is not an ROI); all False without one."""
    from ctperf.modeb.colormap_decode import find_colour_bar

    out = np.zeros(rgb.shape[:2], bool)
    try:
        r0, r1, c0, c1 = find_colour_bar(rgb).exclude
    except InputError:
        return out
    out[max(0, r0 - 2):r1 + 2, max(0, c0 - 2):c1 + 2] = True
    return out


def _uniform_components(rgb: np.ndarray, mask: np.ndarray, min_share: float = 0.6) -> np.ndarray:
    """Keep the components of ``mask`` drawn in one colour: >= ``min_share`` of their pixels lie within
    ``STROKE_COLOUR_TOL`` of the component's median colour (a map's yellow band or colour-bar segment varies)."""
    lab, n = ndimage.label(mask, structure=np.ones((3, 3)))
    if n == 0:
        return mask
    f = rgb.astype(np.float32)
    keep = np.zeros(n + 1, bool)
    for i, sl in enumerate(ndimage.find_objects(lab), start=1):
        comp = lab[sl] == i
        px = f[sl][comp]
        dist = np.linalg.norm(px - np.median(px, axis=0), axis=1)
        keep[i] = np.mean(dist <= STROKE_COLOUR_TOL) >= min_share
    return keep[lab]


def _colour_roi(rgb, mip, valid, scale_range, max_gap_px, min_score):
    """ROI of a colour-coded MIP screenshot: register, keep the yellow the colour map does not explain, fill."""
    from ctperf.modeb.colour_mip import register_colour_screenshot, unexplained_by_map

    finite = np.isfinite(mip)
    lo, hi = float(np.nanmin(mip)), float(np.nanmax(mip))
    background = lo - 0.1 * max(hi - lo, 1e-3)  # undefined MIP pixels (black on screen) get their own value
    mip = np.where(finite, mip, background)
    creg = register_colour_screenshot(rgb, valid, mip, scale_range=scale_range)
    _check_score(creg.score, min_score)
    unexplained, inside = unexplained_by_map(creg, mip, valid, background)
    yellow_any = yellow_mask(rgb, min_component_px=1)
    cand = _uniform_components(rgb, drop_small_components(yellow_any & unexplained & ~_colour_bar_box(rgb), 12))
    if cand.any():
        # stretches of the stroke drawn over the map's own yellow match the map there: regain them by growing
        # the unexplained stroke into connected pixels of the stroke's own colour (this may also take the
        # map's iso-colour line where it touches the stroke; inside the outline that changes nothing)
        stroke_rgb = np.median(rgb[cand].astype(np.float32), axis=0)
        same = np.linalg.norm(rgb.astype(np.float32) - stroke_rgb, axis=-1) <= STROKE_COLOUR_TOL
        cand = ndimage.binary_propagation(cand, np.ones((3, 3), bool), mask=same | cand)
    ambiguous = ("the ROI colour is ambiguous: the yellow in the screenshot cannot be told apart from the yellow "
                 "of the colour-coded MIP; draw the ROI outline over non-yellow map regions or use a grey MIP")
    if not cand.any():
        raise InputError(ambiguous)
    roi_screen, kinds = fill_roi(cand, max_gap_px=2 * max_gap_px)
    if not roi_screen.any():
        raise InputError(ambiguous.replace("the ROI colour is ambiguous:", "the ROI colour is ambiguous or the "
                                           "outline is not closed:"))
    reg = dict(scale=creg.scale, dy=creg.dy, dx=creg.dx, score=creg.score, coarse_score=creg.coarse_score,
               yellow_in_map_px=int((yellow_any & ~unexplained & inside).sum()), roi_stroke_px=int(cand.sum()))
    return roi_screen, kinds, reg


def roi_from_rgb(rgb: np.ndarray, tmax_zyx: np.ndarray, affine_ras: np.ndarray, scale_range=(0.4, 3.0),
                 max_gap_px: int = 12, min_score: float = 0.4) -> RoiResult:
    """Pure-array core of :func:`roi_from_screenshot` (``rgb`` is the screenshot as ``(y, x, 3)`` uint8).

    Grey MIP screenshots follow the module steps; colour-coded ones (:func:`ctperf.modeb.colour_mip.is_colour_coded`)
    are registered and their ROI separated from the colour map by :mod:`ctperf.modeb.colour_mip`.
    """
    from ctperf.modeb.colour_mip import is_colour_coded

    rgb = np.asarray(rgb)[..., :3]
    f = rgb.astype(np.float32)
    colour = is_colour_coded(rgb)
    yellow = yellow_mask(rgb)
    if not yellow.any():
        raise InputError("no yellow ROI found in the MIP screenshot")
    if not colour:
        roi_screen, kinds = fill_roi(yellow, max_gap_px=max_gap_px)
        if not roi_screen.any():
            raise InputError(f"the yellow ROI outline is not closed (gap wider than ~{max_gap_px} screenshot "
                             "pixels); close the outline or paint the area")

    tmax = np.asarray(tmax_zyx, np.float32)
    flips = display_transform(affine_ras)
    mip = to_display(axial_mip(tmax), flips)
    if not np.isfinite(mip).any():
        raise InputError("the Tmax map is empty (all NaN); cannot register the screenshot")

    grey = f.mean(axis=-1)
    # thin bright strokes (white text, rulers) are annotations too: white top-hat over a 7 px window
    thin_bright = ndimage.binary_dilation(ndimage.white_tophat(grey, size=7) > 60, iterations=1)
    if colour:
        roi_screen, kinds, reg = _colour_roi(rgb, mip, ~thin_bright, scale_range, max_gap_px, min_score)
    else:
        mip = np.where(np.isfinite(mip), mip, np.nanmin(mip))
        chroma = f.max(axis=-1) - f.min(axis=-1)
        coloured = ndimage.binary_dilation((chroma > 25) | yellow, iterations=2)
        reg = register_screenshot(grey, ~(coloured | thin_bright), mip, scale_range=scale_range)
        _check_score(reg["score"], min_score)
    reg["mip_colour_coded"] = bool(colour)

    # sample the screenshot ROI at every display pixel centre (smoothed when the screenshot is larger)
    s, dy, dx = reg["scale"], reg["dy"], reg["dx"]
    roi_f = roi_screen.astype(np.float32)
    if s > 1.2:
        roi_f = ndimage.gaussian_filter(roi_f, 0.4 * (s - 1))
    h, w = mip.shape
    rr, cc = np.mgrid[0:h, 0:w].astype(np.float64)
    samp = ndimage.map_coordinates(roi_f, [s * (rr + 0.5) + dy - 0.5, s * (cc + 0.5) + dx - 0.5], order=1,
                                   mode="constant", cval=0.0)
    mask2d = from_display(samp >= 0.5, flips).copy()
    if not mask2d.any():
        raise InputError("the yellow ROI lies outside the registered Tmax MIP")
    footprint = np.broadcast_to(mask2d, tmax.shape).copy()
    reg.update(flips=list(flips), roi_kind=kinds, roi_screen_px=int(roi_screen.sum()),
               roi_map_px=int(mask2d.sum()))
    return RoiResult(mask2d, footprint, reg)


def load_screenshot(path) -> np.ndarray:
    """Read a PNG / JPEG screenshot as ``(y, x, 3)`` uint8 RGB (alpha dropped, palette expanded)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"screenshot not found: {p}")
    try:
        with Image.open(p) as im:
            return np.asarray(im.convert("RGB"))
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"cannot read screenshot {p.name}: {exc}") from None


def roi_from_screenshot(png_path, tmax_zyx: np.ndarray, affine_ras: np.ndarray, **kwargs) -> RoiResult:
    """ROI from a MIP screenshot with a yellow hand-drawn ROI, on the grid of ``tmax_zyx``.

    Returns :class:`RoiResult` with ``mask2d_yx`` (bool, map grid ``(y, x)``) and ``footprint_zyx`` (bool,
    ``mask2d_yx`` extruded through all slices: an axial-MIP ROI constrains the in-plane position only, it says
    nothing about which slices the lesion occupies).  Raises :class:`InputError` when no yellow is found or the
    screenshot cannot be registered to the MIP.  ``kwargs`` go to :func:`roi_from_rgb`.
    """
    return roi_from_rgb(load_screenshot(png_path), tmax_zyx, affine_ras, **kwargs)
