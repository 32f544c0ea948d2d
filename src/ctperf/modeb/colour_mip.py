"""Colour-coded (rainbow / vendor look-up table) Tmax MIP screenshots: registration and ROI separation.

Most workstations show the Tmax MIP through a colour table (jet / rainbow, Siemens-, GE-, Philips-, Toshiba- or
RAPID-style), and that table contains yellow itself.  No particular table is assumed; the screenshot is matched
to the MIP of the given Tmax volume:

1. **Colour labels** (:func:`colour_labels`): the screenshot's colours are clustered (k-means, ``N_LABELS``
   clusters in RGB) so each pixel gets a label.  A colour table maps one value to one colour, so at the right
   registration the label predicts the MIP value.
2. **Coarse registration** by the *correlation ratio* (:func:`corr_ratio_all_shifts`): ``eta = sqrt(1 - sum_k
   within-label variance of the MIP / total variance)`` for every translation at once with FFTs (three
   correlations per label, the same scale search as for grey screenshots).  ``eta = 1`` when the colour
   determines the value, whatever the table.
3. **Decoding and fine registration**: each label gets the mean MIP value of its pixels at the coarse position;
   the screenshot decoded this way is a grey image, refined by the same Nelder-Mead NCC as grey screenshots.
4. **ROI separation** (:func:`unexplained_by_map`): the joint histogram of (MIP value bin, colour label) at the
   final position tells which colours the table uses for which values.  A pixel is *explained by the map* when
   its label occurs at >= ``MIN_LABEL_SHARE`` of the pixels of some value bin within its neighbourhood's value
   range (the histogram is built twice, the second time from explained pixels only).  Yellow inside the colour
   map (a smooth band between green and orange, or the table's yellow step) is explained; a yellow stroke drawn
   over blue, green or red map regions is not.  The ROI is the yellow pixels that are *not* explained by the
   map (or lie outside it), filled like a grey-screenshot ROI; stretches of the outline drawn over the map's own
   yellow are bridged by the gap closing of :func:`ctperf.modeb.roi_mip.fill_roi`.

When yellow is present but none of it stands out from the map's own yellow, the ROI colour is ambiguous and an
:class:`~ctperf.errors.InputError` says so in one line.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import fft as sfft
from scipy import ndimage
from scipy.cluster.vq import kmeans2
from scipy.spatial import cKDTree

from ctperf.errors import InputError

#: Colour clusters used as labels for the correlation ratio.
N_LABELS = 24
#: Chroma (max - min of R, G, B) of a pixel counted as coloured when deciding grey vs colour-coded.
COLOUR_CHROMA = 40
#: Hue range (degrees) left out of that decision: a painted or translucent yellow ROI is not a colour map.
YELLOWISH_HUE_DEG = (35.0, 80.0)
#: A screenshot is colour-coded when its thick (>= 5 px), non-yellow coloured area exceeds both limits.
MIN_COLOUR_AREA_PX = 400
MIN_COLOUR_AREA_FRACTION = 0.003
#: Share of a value bin's pixels a colour label needs to count as the colour table's colour for that value.
MIN_LABEL_SHARE = 0.15
#: Value bins of the joint (value, label) histogram.
N_VALUE_BINS = 48
#: Largest screenshot (pixels) whose label memberships are built at full resolution.
MAX_MEMBERSHIP_PX = 400_000
#: Scale step of the correlation-ratio search; the decoded screenshot is then registered within +-1.5 steps.
COARSE_SCALE_STEP = 1.08


@dataclass
class ColourRegistration:
    """Registration of a colour-coded screenshot; ``labels`` / ``label_values`` decode it to MIP values."""

    scale: float
    dy: float
    dx: float
    score: float
    coarse_score: float
    labels: np.ndarray
    label_values: np.ndarray


def _hue_deg(f: np.ndarray) -> np.ndarray:
    r, g, b = f[..., 0], f[..., 1], f[..., 2]
    mx, mn = f.max(axis=-1), f.min(axis=-1)
    c = np.where(mx > mn, mx - mn, 1)
    h = np.where(mx == r, ((g - b) / c) % 6, np.where(mx == g, (b - r) / c + 2, (r - g) / c + 4))
    return h * 60.0


def is_colour_coded(rgb: np.ndarray) -> bool:
    """True when the screenshot shows a colour-coded map (see the module constants for the rule).

    Thin strokes (annotations, an outline) vanish under a 5 x 5 opening; yellow-ish hues are ignored so a
    painted or translucent yellow ROI on a grey MIP does not count.
    """
    f = np.asarray(rgb)[..., :3].astype(np.float32)
    chroma = f.max(axis=-1) - f.min(axis=-1)
    hue = _hue_deg(f)
    coloured = (chroma >= COLOUR_CHROMA) & ~((hue >= YELLOWISH_HUE_DEG[0]) & (hue <= YELLOWISH_HUE_DEG[1]))
    thick = ndimage.binary_opening(coloured, np.ones((5, 5), bool))
    area = int(thick.sum())
    return area >= MIN_COLOUR_AREA_PX and area >= MIN_COLOUR_AREA_FRACTION * coloured.size


def colour_labels(rgb: np.ndarray, k: int = N_LABELS, seed: int = 0,
                  max_samples: int = 40_000) -> tuple[np.ndarray, np.ndarray]:
    """K-means colour labels of an ``(H, W, 3)`` image: ``(labels (H, W) int, centres (k', 3) float)``.

    Distinct colours are clustered (weighted by a random pixel sample) and every pixel takes the label of the
    nearest centre; empty clusters are dropped, so ``k' <= k``.
    """
    img = np.asarray(rgb)[..., :3]
    flat = img.reshape(-1, 3).astype(np.int32)
    packed = (flat[:, 0] << 16) | (flat[:, 1] << 8) | flat[:, 2]
    uniq, inv = np.unique(packed, return_inverse=True)
    urgb = np.stack([(uniq >> 16) & 255, (uniq >> 8) & 255, uniq & 255], axis=1).astype(np.float64)
    rng = np.random.default_rng(seed)
    sample = urgb[inv[rng.integers(0, len(inv), min(max_samples, len(inv)))]]
    k = int(min(k, len(uniq)))
    centres, _ = kmeans2(sample, k, minit="++", seed=seed, iter=20)
    ulab = cKDTree(centres).query(urgb)[1]
    used, ulab = np.unique(ulab, return_inverse=True)
    return ulab[inv].reshape(img.shape[:2]), centres[used]


def memberships(labels: np.ndarray, valid: np.ndarray, n_labels: int) -> np.ndarray:
    """One-hot ``(H, W, K)`` float32 label memberships, zero where ``valid`` is False."""
    out = np.zeros((*labels.shape, n_labels), np.float32)
    yy, xx = np.nonzero(valid)
    out[yy, xx, labels[yy, xx]] = 1.0
    return out


def _block_memberships(labels: np.ndarray, valid: np.ndarray, n_labels: int, b: int):
    """Label memberships averaged over ``b x b`` blocks (``b = 1``: one-hot) and the all-valid block mask."""
    if b == 1:
        return memberships(labels, valid, n_labels), valid
    hh, ww = labels.shape[0] // b, labels.shape[1] // b
    lab = labels[: hh * b, : ww * b]
    ok = valid[: hh * b, : ww * b]
    block = (np.arange(hh * b)[:, None] // b) * ww + (np.arange(ww * b)[None, :] // b)
    counts = np.bincount((block[ok] * n_labels + lab[ok]), minlength=hh * ww * n_labels)
    memb = (counts.reshape(hh, ww, n_labels) / float(b * b)).astype(np.float32)
    valid_b = ok.reshape(hh, b, ww, b).all(axis=(1, 3))
    return memb, valid_b


def corr_ratio_all_shifts(tpl: np.ndarray, memb: np.ndarray, img_mask: np.ndarray, min_overlap: int):
    """Correlation ratio of the template values explained by the image labels, for every shift.

    ``tpl`` ``(th, tw)`` values; ``memb`` ``(ih, iw, K)`` label memberships (soft after resampling);
    ``img_mask`` ``(ih, iw)`` usable pixels.  Returns ``(eta, offsets)`` like
    :func:`ctperf.modeb.roi_mip._masked_ncc_all_shifts`: ``eta[i, j]`` in [0, 1] (-1 where the overlap is below
    ``min_overlap`` or the template is flat) is for the template's top-left at ``(i - (th - 1), j - (tw - 1))``.
    """
    th, tw = tpl.shape
    ih, iw, n_lab = memb.shape
    shape = (sfft.next_fast_len(ih + th - 1), sfft.next_fast_len(iw + tw - 1))
    m = memb * img_mask[..., None]

    def F(a):
        return sfft.rfft2(a, shape, axes=(0, 1))

    def corr(ft_t, ft_i):
        full = sfft.irfft2(np.conj(ft_t) * ft_i, shape, axes=(0, 1))
        full = np.roll(full, (th - 1, tw - 1), axis=(0, 1))
        return full[: ih + th - 1, : iw + tw - 1]

    f1, ft, ft2 = F(np.ones_like(tpl)), F(tpl), F(tpl * tpl)
    fm = F(m.astype(np.float64))  # (.., K): all labels in one transform
    fsum = F(m.sum(axis=-1, dtype=np.float64))
    n_tot, s_tot, q_tot = corr(f1, fsum), corr(ft, fsum), corr(ft2, fsum)
    n_k, s_k = corr(f1[..., None], fm), corr(ft[..., None], fm)
    # within-label sum of squares = sum_k (Q_k - S_k^2 / n_k), and sum_k Q_k = q_tot
    within = q_tot - np.sum(np.where(n_k > 0.5, s_k * s_k / np.maximum(n_k, 0.5), 0.0), axis=-1)
    total = q_tot - s_tot * s_tot / np.maximum(n_tot, 1.0)
    eps = 1e-6 * max(float(np.var(tpl)) * tpl.size, 1e-12)
    ok = (n_tot >= min_overlap) & (total > eps)
    eta2 = np.clip(1.0 - within / np.where(ok, total, 1.0), 0.0, 1.0)
    return np.where(ok, np.sqrt(eta2), -1.0), (th - 1, tw - 1)


def sample_mip(mip_disp: np.ndarray, shape_hw, scale: float, dy: float, dx: float) -> tuple[np.ndarray, np.ndarray]:
    """MIP value at every screenshot pixel for a registration (bilinear); ``(values, inside)``."""
    h, w = mip_disp.shape
    yy, xx = np.mgrid[0:shape_hw[0], 0:shape_hw[1]].astype(np.float64)
    ry = (yy + 0.5 - dy) / scale - 0.5
    rx = (xx + 0.5 - dx) / scale - 0.5
    inside = (ry >= -0.5) & (ry <= h - 0.5) & (rx >= -0.5) & (rx <= w - 0.5)
    vals = ndimage.map_coordinates(np.asarray(mip_disp, np.float64), [ry, rx], order=1, mode="nearest")
    return vals, inside


def _label_means(labels, weight_mask, values, n_labels):
    lab = labels[weight_mask]
    cnt = np.bincount(lab, minlength=n_labels).astype(np.float64)
    tot = np.bincount(lab, weights=values[weight_mask], minlength=n_labels)
    return np.where(cnt > 0, tot / np.maximum(cnt, 1), np.nan)


def register_colour_screenshot(rgb: np.ndarray, valid: np.ndarray, mip_disp: np.ndarray, *,
                               scale_range=(0.4, 3.0)) -> ColourRegistration:
    """Register a colour-coded screenshot to the MIP (display orientation, NaNs filled); see the module steps."""
    from ctperf.modeb.roi_mip import coarse_search, register_screenshot

    labels, centres = colour_labels(rgb)
    n_lab = len(centres)
    # the coarse search runs at <= ~150k screenshot pixels anyway: reduce large captures by block means first
    b = max(1, int(np.ceil(np.sqrt(labels.size / MAX_MEMBERSHIP_PX))))
    memb, valid_b = _block_memberships(labels, valid, n_lab, b)
    coarse, s0, dy0, dx0 = coarse_search(memb, valid_b, mip_disp, corr_ratio_all_shifts,
                                         scale_range=(scale_range[0] / b, scale_range[1] / b),
                                         scale_step=COARSE_SCALE_STEP, anti_aliasing=False)
    s0, dy0, dx0 = s0 * b, dy0 * b, dx0 * b
    del memb
    if coarse <= -1.0:
        raise InputError("could not register the screenshot to the Tmax MIP (no overlap at any scale)")
    # decode each label to the mean MIP value under it, then register the decoded (grey) screenshot near s0
    vals, inside = sample_mip(mip_disp, labels.shape, s0, dy0, dx0)
    lv = _label_means(labels, valid & inside, vals, n_lab)
    decoded = np.nan_to_num(lv[labels], nan=0.0)
    dec_valid = valid & np.isfinite(lv[labels])
    reg = register_screenshot(decoded, dec_valid, mip_disp,
                              scale_range=(s0 / COARSE_SCALE_STEP ** 1.5, s0 * COARSE_SCALE_STEP ** 1.5))
    score, s, dy, dx = reg["score"], reg["scale"], reg["dy"], reg["dx"]
    vals, inside = sample_mip(mip_disp, labels.shape, s, dy, dx)
    lv = _label_means(labels, valid & inside, vals, n_lab)
    return ColourRegistration(s, dy, dx, score, float(coarse), labels, lv)


def unexplained_by_map(reg: ColourRegistration, mip_disp: np.ndarray, valid: np.ndarray,
                       background_value: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixels whose colour the colour table does not use for the MIP values around them; ``(unexplained, inside)``.

    ``background_value`` is the value the MIP's undefined (NaN) pixels were filled with; it gets its own bin.
    """
    labels = reg.labels
    n_lab = len(reg.label_values)
    vals, inside = sample_mip(mip_disp, labels.shape, reg.scale, reg.dy, reg.dx)
    r = max(1, int(np.ceil(reg.scale)))
    lo = ndimage.minimum_filter(vals, size=2 * r + 1)
    hi = ndimage.maximum_filter(vals, size=2 * r + 1)
    fg = mip_disp[mip_disp > background_value]
    vmin, vmax = (float(fg.min()), float(fg.max())) if fg.size else (0.0, 1.0)
    edges = np.linspace(vmin, vmax + 1e-6 * max(abs(vmax), 1.0), N_VALUE_BINS)

    def to_bin(v):  # bin 0: background; 1..N: foreground values
        return np.where(v <= background_value + 1e-9, 0, 1 + np.clip(np.searchsorted(edges, v) - 1, 0,
                                                                       N_VALUE_BINS - 2))

    b, b_lo, b_hi = to_bin(vals), to_bin(lo), to_bin(hi)
    n_bins = N_VALUE_BINS
    use = valid & inside
    explained = np.zeros(labels.shape, bool)
    for _ in range(2):  # second pass: histogram from explained pixels only (strokes no longer vote)
        hist = np.bincount(b[use] * n_lab + labels[use], minlength=n_bins * n_lab).reshape(n_bins, n_lab)
        share = hist / np.maximum(hist.sum(axis=1, keepdims=True), 1)
        ok = share >= MIN_LABEL_SHARE
        explained[:] = False
        for k in range(n_bins):
            if ok[k].any():
                explained |= (b_lo <= k) & (b_hi >= k) & ok[k][labels]
        use = valid & inside & explained
    return ~explained | ~inside, inside
