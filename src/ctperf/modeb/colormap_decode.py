"""Decode colour-coded vendor maps (RGB screenshots / Secondary Captures) back to scalar values.

Method
------
1. **Colour bar** (:func:`find_colour_bar`): pixels are *chromatic* when ``max(R,G,B) - min(R,G,B) >= 50`` and
   the saturation ``(max - min) / max >= 0.4``.  Connected components of chromatic pixels are candidate bars if
   they are long thin near-rectangles (long side >= 15 % of the image side, short side <= 25 % of the long side,
   bounding box >= 70 % filled), nearly constant across their width and *vary* along their length (total colour
   path >= 150 RGB units, no jumps).  The best candidate (longest colour path x length) wins.  The bar is then
   extended along its axis over achromatic ramp ends (e.g. a white top) as long as the strip stays uniform across
   its width, changes smoothly and differs from the image background.  The ramp is the per-position median
   colour across the central part of the bar.  No particular colour map is assumed.
2. **Orientation**: by convention the low end of a vertical bar is at the bottom and of a horizontal bar at the
   left (syngo.via and most viewers); pass ``low_end=`` to override.
3. **Decoding** (:func:`decode_rgb`): the ramp is resampled to >= 1024 positions linearly mapped to
   ``value_range``; every *distinct* colour of the image is matched to its nearest ramp colour with a KD-tree
   (vectorised, cost ~ number of distinct colours).  Pixels are rejected (NaN) when achromatic (grey, black,
   white: text, annotations, background), next to bright annotations (anti-aliased text edges blend with the
   map colour), farther than ``max_distance`` RGB units from the ramp, or inside the
   colour bar.  Achromatic parts of a ramp (black/white ends) therefore decode as NaN by
   default, because they cannot be told apart from the background and annotations.
4. **Residual**: mean and 95th percentile nearest-ramp distance of accepted pixels, fraction of chromatic
   pixels rejected as too far from the ramp, and fraction of achromatic pixels.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from ctperf.errors import InputError

#: Chroma (max - min of R, G, B) and saturation needed for a pixel to count as coloured.
MIN_CHROMA = 50
MIN_SATURATION = 0.4
#: Pixels with chroma below this are achromatic (grey / black / white) and never decoded.
ACHROMATIC_CHROMA = 30


@dataclass
class ColourBar:
    """A colour bar found in an image.

    ``orientation`` is ``"vertical"`` or ``"horizontal"``; ``bbox = (row0, row1, col0, col1)`` half-open;
    ``ramp`` is ``(n, 3)`` float RGB ordered from the low value to the high value; ``exclude`` is the bbox grown
    by 2 pixels, which :func:`decode_rgb` leaves undecoded.
    """

    orientation: str
    bbox: tuple[int, int, int, int]
    ramp: np.ndarray
    exclude: tuple[int, int, int, int] = (0, 0, 0, 0)
    score: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def reversed(self) -> "ColourBar":
        """The same bar with its low and high ends swapped."""
        return replace(self, ramp=self.ramp[::-1].copy())

    def as_dict(self) -> dict[str, Any]:
        return dict(orientation=self.orientation, bbox=list(map(int, self.bbox)), n_ramp=int(len(self.ramp)),
                    ramp_low_rgb=[round(float(v)) for v in self.ramp[0]],
                    ramp_high_rgb=[round(float(v)) for v in self.ramp[-1]], score=round(float(self.score), 1),
                    warnings=list(self.extra.get("warnings", [])))


def _chroma(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    f = rgb.astype(np.int16)
    mx, mn = f.max(axis=-1), f.min(axis=-1)
    return mx - mn, mx


def chromatic_mask(rgb: np.ndarray) -> np.ndarray:
    """True where a pixel is clearly coloured (not grey, black, white)."""
    c, mx = _chroma(rgb)
    return (c >= MIN_CHROMA) & (c >= MIN_SATURATION * np.maximum(mx, 1))


def _profile(strip: np.ndarray) -> tuple[np.ndarray, float]:
    """Median colour along axis 0 of a ``(length, width, 3)`` strip and its mean across-width spread.

    Short achromatic runs (<= 3 samples) *inside* the strip (tick marks drawn across the bar) are replaced by
    linear interpolation between their chromatic neighbours; achromatic ends are kept.
    """
    w = strip.shape[1]
    core = strip[:, w // 4: w - w // 4].astype(float) if w >= 4 else strip.astype(float)
    prof = np.median(core, axis=1)
    dev = np.abs(core - prof[:, None, :]).max(axis=-1).mean(axis=1)
    chrom = (prof.max(axis=1) - prof.min(axis=1)) >= ACHROMATIC_CHROMA
    if chrom.any():
        lab, n = ndimage.label(~chrom)
        idx = np.flatnonzero(chrom)
        for k, sl in enumerate(ndimage.find_objects(lab), start=1):
            a, b = sl[0].start, sl[0].stop
            if a > 0 and b < len(prof) and b - a <= 3:
                for c in range(3):
                    prof[a:b, c] = np.interp(np.arange(a, b), idx, prof[idx, c])
                dev[a:b] = 0.0
    if len(prof) >= 15:
        # lossy compression smears marks into neighbouring samples: replace samples that stick out of a
        # running median (kinks of a piecewise-linear ramp deviate by ~2 steps and are kept)
        med = ndimage.median_filter(prof, size=(7, 1), mode="nearest")
        step = float(np.median(np.linalg.norm(np.diff(prof, axis=0), axis=1)))
        out = np.linalg.norm(prof - med, axis=1) > max(15.0, 3.5 * step)
        out[:3] = out[-3:] = False
        prof[out] = med[out]
    return prof, float(dev.mean())


def _background_colour(rgb: np.ndarray) -> np.ndarray:
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]]).astype(np.int32)
    packed = (border[:, 0] << 16) | (border[:, 1] << 8) | border[:, 2]
    vals, counts = np.unique(packed, return_counts=True)
    v = vals[np.argmax(counts)]
    return np.array([(v >> 16) & 255, (v >> 8) & 255, v & 255], float)


def _extend(rgb: np.ndarray, r0: int, r1: int, c0: int, c1: int, bg: np.ndarray) -> tuple[int, int]:
    """Grow a vertical strip [r0, r1) x [c0, c1) up and down over uniform, smoothly changing, non-background rows."""
    prof, _ = _profile(rgb[r0:r1, c0:c1])
    steps = np.linalg.norm(np.diff(prof, axis=0), axis=1)
    max_step = max(30.0, 4.0 * float(np.median(steps)) if len(steps) else 30.0)

    def ok(r: int, ref: np.ndarray) -> bool:
        row = rgb[r, c0:c1].astype(float)
        med = np.median(row, axis=0)
        return (np.abs(row - med).max() <= 12 and np.linalg.norm(med - bg) > 40
                and np.linalg.norm(med - ref) <= max_step)

    while r0 > 0 and ok(r0 - 1, np.median(rgb[r0, c0:c1].astype(float), axis=0)):
        r0 -= 1
    while r1 < rgb.shape[0] and ok(r1, np.median(rgb[r1 - 1, c0:c1].astype(float), axis=0)):
        r1 += 1
    return r0, r1


def find_colour_bar(rgb: np.ndarray, low_end: str | None = None, min_length_frac: float = 0.15) -> ColourBar:
    """Locate the colour bar burned into an ``(y, x, 3)`` RGB image and read its colour ramp.

    ``low_end`` is where the low value sits: ``"bottom"`` (default for vertical bars), ``"top"``, ``"left"``
    (default for horizontal bars) or ``"right"``.  Raises :class:`InputError` when no bar is found.
    """
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[-1] < 3:
        raise InputError(f"expected an RGB image, got shape {rgb.shape}")
    rgb = rgb[..., :3]
    chrom = chromatic_mask(rgb)
    best = None
    # label twice, bridging thin (<= 3 px) interruptions such as tick marks across the bar along each axis
    for axis_vertical, struct in ((True, np.ones((5, 1), bool)), (False, np.ones((1, 5), bool))):
        lab, _ = ndimage.label(ndimage.binary_closing(chrom, struct) | chrom)
        best = _best_candidate(rgb, lab, axis_vertical, min_length_frac, best)
    if best is None:
        raise InputError("colour bar not found in the colour-coded map (no long, thin strip of smoothly varying "
                         "colours); is this a colour-coded map?")
    return _finish_bar(rgb, best, low_end)


def _best_candidate(rgb, lab, want_vertical: bool, min_length_frac: float, best):
    """Best bar candidate among the components of ``lab`` with the wanted orientation, vs the current ``best``."""
    ny, nx = rgb.shape[:2]
    for i, sl in enumerate(ndimage.find_objects(lab), start=1):
        if sl is None:
            continue
        h, w = sl[0].stop - sl[0].start, sl[1].stop - sl[1].start
        vertical = h >= w
        if vertical != want_vertical:
            continue
        long_, short = (h, w) if vertical else (w, h)
        side = ny if vertical else nx
        if long_ < max(16, min_length_frac * side) or short < 2 or short > 0.25 * long_:
            continue
        if (lab[sl] == i).mean() < 0.7:
            continue
        strip = rgb[sl] if vertical else rgb[sl].transpose(1, 0, 2)
        prof, spread = _profile(strip)
        steps = np.linalg.norm(np.diff(prof, axis=0), axis=1)
        path = float(steps.sum())
        if spread > 15 or path < 150 or (steps.max() > max(40.0, 0.25 * path) and not _is_step_ramp(prof, steps)):
            continue
        score = path * long_
        if best is None or score > best[0]:
            best = (score, vertical, sl)
    return best


def _is_step_ramp(prof: np.ndarray, steps: np.ndarray, jump: float = 40.0) -> bool:
    """A bar of a few uniform colour blocks (step tables such as RAPID-style Tmax or GE 3-colour).

    True when the profile has 2-16 jumps larger than ``jump`` and every block between them that is longer than
    two samples (shorter ones are resampling transitions) is uniform and at least three samples long; at least
    three such blocks.
    """
    big = np.flatnonzero(steps > jump)
    if not 2 <= len(big) <= 16:
        return False
    blocks = [b for b in np.split(prof, big + 1) if len(b) > 2]
    return len(blocks) >= 3 and all(np.abs(b - np.median(b, axis=0)).max() <= 12 for b in blocks)


def _finish_bar(rgb: np.ndarray, best, low_end: str | None) -> ColourBar:
    """Extend the chosen strip over achromatic ramp ends, read the ramp, orient it."""
    ny, nx = rgb.shape[:2]
    score, vertical, sl = best
    r0, r1, c0, c1 = sl[0].start, sl[0].stop, sl[1].start, sl[1].stop
    bg = _background_colour(rgb)
    if vertical:
        r0, r1 = _extend(rgb, r0, r1, c0, c1, bg)
        prof, _ = _profile(rgb[r0:r1, c0:c1])
    else:
        t = rgb.transpose(1, 0, 2)
        c0, c1 = _extend(t, c0, c1, r0, r1, bg)
        prof, _ = _profile(t[c0:c1, r0:r1])
    default = "bottom" if vertical else "left"
    low = low_end or default
    allowed = ("bottom", "top") if vertical else ("left", "right")
    if low not in allowed:
        raise InputError(f"low_end={low!r} does not fit a {'vertical' if vertical else 'horizontal'} colour bar")
    # profile runs top->bottom (vertical) or left->right (horizontal)
    ramp = prof[::-1] if low in ("bottom", "right") else prof
    warnings = []
    for end, col in (("low", ramp[0]), ("high", ramp[-1])):
        if np.linalg.norm(col - bg) < 60:
            warnings.append(f"the {end} end of the colour bar fades into the background colour; the bar may be "
                            "longer than detected and decoded values biased")
    m = 2  # the bar's own anti-aliased border; labels and ticks are achromatic and rejected anyway
    exclude = (max(0, r0 - m), min(ny, r1 + m), max(0, c0 - m), min(nx, c1 + m))
    return ColourBar("vertical" if vertical else "horizontal", (r0, r1, c0, c1), ramp.copy(), exclude, score,
                     extra=dict(background_rgb=bg.tolist(), warnings=warnings))


def decode_rgb(rgb: np.ndarray, bar: ColourBar, value_range, max_distance: float = 30.0,
               reject_achromatic: bool = True, exclude_bar: bool = True,
               annotation_halo: int = 1) -> tuple[np.ndarray, dict[str, Any]]:
    """Convert an ``(y, x, 3)`` RGB image to ``(y, x)`` float32 values through ``bar``'s ramp.

    ``value_range=(lo, hi)`` are the values at the low and high ends of the bar.  Pixels that are achromatic,
    farther than ``max_distance`` (Euclidean, 0-255 RGB units) from the ramp, within ``annotation_halo`` pixels of
    bright grey/white annotations or off-ramp colours (anti-aliased text edges), or inside ``bar.exclude`` are NaN.
    Returns ``(values, residual)`` with residual keys ``mean_distance``, ``p95_distance`` (accepted pixels),
    ``n_accepted``, ``rejected_fraction`` (chromatic pixels too far from the ramp / all chromatic pixels) and
    ``achromatic_fraction`` (of all pixels outside the bar).
    """
    lo, hi = _check_range(value_range)
    img = np.asarray(rgb)[..., :3]
    ny, nx = img.shape[:2]
    ramp = np.asarray(bar.ramp, float)
    m = max(1024, 4 * len(ramp))
    pos = np.linspace(0, len(ramp) - 1, m)
    fine = np.stack([np.interp(pos, np.arange(len(ramp)), ramp[:, c]) for c in range(3)], axis=1)
    ramp_vals = lo + (hi - lo) * np.arange(len(ramp)) / max(len(ramp) - 1, 1)
    # a constant stretch of the bar (identical neighbouring samples) is ambiguous: give it its mid value
    run = np.concatenate([[0], np.cumsum(np.linalg.norm(np.diff(ramp, axis=0), axis=1) >= 0.5)])
    ramp_vals = (np.bincount(run, weights=ramp_vals) / np.bincount(run))[run]
    fine_vals = np.interp(pos, np.arange(len(ramp)), ramp_vals)

    flat = img.reshape(-1, 3).astype(np.int32)
    packed = (flat[:, 0] << 16) | (flat[:, 1] << 8) | flat[:, 2]
    uniq, inv = np.unique(packed, return_inverse=True)
    urgb = np.stack([(uniq >> 16) & 255, (uniq >> 8) & 255, uniq & 255], axis=1).astype(float)
    dist_u, idx_u = cKDTree(fine).query(urgb)
    chroma_u = urgb.max(axis=1) - urgb.min(axis=1)
    achrom_u = chroma_u < ACHROMATIC_CHROMA if reject_achromatic else np.zeros(len(uniq), bool)
    dist = dist_u[inv].reshape(ny, nx)
    achrom = achrom_u[inv].reshape(ny, nx)
    values = fine_vals[idx_u][inv].reshape(ny, nx).astype(np.float32)

    inside = np.ones((ny, nx), bool)
    if exclude_bar:
        r0, r1, c0, c1 = bar.exclude
        inside[r0:r1, c0:c1] = False
    # pixels touching annotations (text, rulers) may be blended with them by anti-aliasing: annotations are
    # (bright achromatic pixels or colours far from the ramp); reject their neighbours as well
    bright = (urgb.max(axis=1) >= 90)[inv].reshape(ny, nx)
    far = ~achrom & (dist > max_distance) & inside
    annotation = (achrom & bright) | far
    halo = ndimage.binary_dilation(annotation, iterations=annotation_halo) & ~annotation & ~achrom \
        if annotation_halo else np.zeros((ny, nx), bool)
    accepted = ~achrom & ~halo & ~far & inside
    values[~accepted] = np.nan
    d_acc = dist[accepted]
    n_chrom = int(accepted.sum() + far.sum())
    residual = dict(
        mean_distance=float(d_acc.mean()) if d_acc.size else float("nan"),
        p95_distance=float(np.percentile(d_acc, 95)) if d_acc.size else float("nan"),
        n_accepted=int(accepted.sum()),
        n_rejected_far=int(far.sum()),
        n_rejected_annotation_halo=int((halo & inside).sum()),
        rejected_fraction=float(far.sum() / n_chrom) if n_chrom else 0.0,
        achromatic_fraction=float((achrom & inside).sum() / max(int(inside.sum()), 1)),
        max_distance=float(max_distance),
    )
    return values, residual


def parse_range(text: str | None) -> tuple[float, float] | None:
    """Parse a ``--range`` option such as ``"0,10"``, ``"0:10"``, ``"0 10"`` or ``"-1.5;4"`` (None passes)."""
    if text is None or str(text).strip() == "":
        return None
    parts = [p for p in re.split(r"[,;:\s]+", str(text).strip()) if p]
    if len(parts) != 2:
        raise InputError(f"--range must be two numbers LO,HI, got {text!r}")
    return _check_range(parts)


def _check_range(value_range) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value_range)
    except (TypeError, ValueError):
        raise InputError(f"value range must be two numbers LO,HI, got {value_range!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo == hi:
        raise InputError(f"invalid colour-bar value range {lo:g},{hi:g}")
    return lo, hi


def decode_rgb_volume(rgb_zyx3: np.ndarray, value_range, bar: ColourBar | None = None, low_end: str | None = None,
                      max_distance: float = 30.0) -> tuple[np.ndarray, dict[str, Any]]:
    """Decode a stack of colour slices ``(z, y, x, 3)`` to ``(z, y, x)`` float32 values.

    The colour bar is located once (middle slice first, then the others) and reused for every slice since
    vendors burn the same bar into each image.  Returns ``(volume, info)``; ``info`` has ``colour_bar``,
    ``value_range`` and the pooled ``residual`` (accepted-pixel weighted mean distance, worst per-slice p95,
    pooled rejected fraction).
    """
    lo, hi = _check_range(value_range)
    stack = np.asarray(rgb_zyx3)
    nz = stack.shape[0]
    if bar is None:
        order = [nz // 2] + [k for k in range(nz) if k != nz // 2]
        for k in order:
            try:
                bar = find_colour_bar(stack[k], low_end=low_end)
                break
            except InputError:
                continue
        if bar is None:
            raise InputError("colour bar not found in any slice of the colour-coded map")
    vol = np.empty(stack.shape[:3], np.float32)
    res = []
    for k in range(nz):
        vol[k], r = decode_rgb(stack[k], bar, (lo, hi), max_distance=max_distance)
        res.append(r)
    n_acc = np.array([r["n_accepted"] for r in res], float)
    n_far = np.array([r["n_rejected_far"] for r in res], float)
    means = np.array([r["mean_distance"] if r["n_accepted"] else 0.0 for r in res])
    p95 = [r["p95_distance"] for r in res if r["n_accepted"]]
    if n_acc.sum() == 0:
        raise InputError("no pixel of the colour-coded map matches its colour bar (wrong image or colour bar)")
    residual = dict(
        mean_distance=float((means * n_acc).sum() / n_acc.sum()),
        p95_distance_worst_slice=float(max(p95)),
        rejected_fraction=float(n_far.sum() / max(n_acc.sum() + n_far.sum(), 1)),
        achromatic_fraction=float(np.mean([r["achromatic_fraction"] for r in res])),
        n_accepted=int(n_acc.sum()),
    )
    warnings = list(bar.extra.get("warnings", []))
    if residual["rejected_fraction"] > 0.05:
        warnings.append(f"{100 * residual['rejected_fraction']:.0f}% of coloured pixels are far from the colour-bar "
                        "ramp (wrong bar, lossy compression or overlays)")
    return vol, dict(colour_bar=bar.as_dict(), value_range=[lo, hi], residual=residual, warnings=warnings)


def decode_colour_series(source, value_range=None, low_end: str | None = None,
                         max_distance: float = 30.0) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Read a colour-coded DICOM series (folder, file or list of files) and decode it:
    ``(volume_zyx, affine_ras, info)``.

    Geometry comes from ImagePositionPatient / ImageOrientationPatient / PixelSpacing, slices sorted along the
    slice normal (see :func:`ctperf.modeb.map_inputs.read_dicom_series`).  ``value_range`` is required.
    """
    from ctperf.modeb.map_inputs import read_dicom_series

    src = Path(source[0]) if isinstance(source, (list, tuple)) and source else Path(source)
    if value_range is None:
        raise InputError(f"{src.name}: the colour-bar value range is unknown; give it with --range LO,HI")
    data, affine, meta = read_dicom_series(list(source) if isinstance(source, (list, tuple)) else src)
    if data.ndim != 4:
        raise InputError(f"{src.name} is not a colour-coded map (PhotometricInterpretation {meta['photometric']})")
    vol, info = decode_rgb_volume(data, value_range, low_end=low_end, max_distance=max_distance)
    warnings = list(meta.get("warnings", [])) + info.pop("warnings", [])
    return vol, affine, {**meta, **info, "warnings": warnings, "kind": "dicom_colour"}
