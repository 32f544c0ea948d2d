"""Quality-assurance figures (PNG) for one analysed study.

Every figure is drawn on a stand-alone :class:`matplotlib.figure.Figure` with the Agg canvas, never through
``pyplot``, so nothing is registered in pyplot's global figure manager and nothing leaks between calls.

Images are shown in the radiological convention (patient's right on the image left, anterior up). The
orientation is derived from ``result.affine_ras`` for every study (see :func:`display_orientation`), and every
panel carries the letters of its edges (R/L, A/P) so a wrong header is visible at a glance.

Metric values may be ``None`` (strict JSON null); they are printed as ``n/a (<reason>)`` using the
``<key>_reason`` entry when the metrics dict has one.
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Colormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from ctperf import DISCLAIMER, __version__
from ctperf.config import Thresholds
from ctperf.results import Curve, LesionMasks, PerfusionResult
from ctperf.study import voxel_volume_ml as study_voxel_volume_ml

# --------------------------------------------------------------------------------------------------------------
# Display constants
# --------------------------------------------------------------------------------------------------------------

#: Brain window W80 / L40 (HU).
BRAIN_WINDOW_HU = (0.0, 80.0)

#: (attribute, label, unit, vmin, vmax) of the perfusion maps, fixed clinical display ranges.
MAP_SPECS: tuple[tuple[str, str, str, float, float], ...] = (
    ("cbf", "CBF", "mL/100g/min", 0.0, 80.0),
    ("cbv", "CBV", "mL/100g", 0.0, 6.0),
    ("mtt", "MTT", "s", 0.0, 12.0),
    ("tmax", "Tmax", "s", 0.0, 15.0),
)
TMAX_RANGE_S = (0.0, 15.0)

CORE_COLOR = (1.0, 0.12, 0.55)  # magenta-red
PENUMBRA_COLOR = (0.15, 0.85, 0.25)  # green
HYPO_OUTLINE_COLOR = "white"
AIF_COLOR = "#d62728"
VOF_COLOR = "#1f5fbf"
OVERLAY_ALPHA = 0.6

#: Largest in-plane size (pixels) drawn per montage tile; larger slices are decimated for speed.
MONTAGE_MAX_PX = 128
MONTAGE_MAX_SLICES = 12
DPI = 110
#: zlib level of the PNG files (1 = fastest; the QA figures are flat-coloured and compress well anyway).
PNG_COMPRESS_LEVEL = 1

FIGURE_NAMES = (
    "aif_vof.png",
    "tmax_mip.png",
    "core_penumbra_mip.png",
    "core_penumbra_montage.png",
    "maps_montage.png",
)


def map_cmap() -> Colormap:
    """Rainbow-like map familiar from clinical perfusion software; unknown values are black background."""
    return matplotlib.colormaps["turbo"].with_extremes(bad="black", under="black")


def _gray_cmap() -> Colormap:
    return matplotlib.colormaps["gray"].with_extremes(bad="black")


# --------------------------------------------------------------------------------------------------------------
# Orientation
# --------------------------------------------------------------------------------------------------------------


def _direction_letter(vec: np.ndarray) -> str:
    """Letter of the RAS direction a vector points to most ('R', 'L', 'A', 'P', 'S' or 'I')."""
    axis = int(np.argmax(np.abs(vec)))
    return ("R", "A", "S")[axis] if vec[axis] > 0 else ("L", "P", "I")[axis]


@dataclass(frozen=True)
class DisplayOrientation:
    """How to turn a (y, x) slice of the map grid into a radiological-convention display image."""

    transpose: bool
    flip_lr: bool
    flip_ud: bool
    #: Letters at the left / right / top / bottom edges of the displayed image.
    left: str
    right: str
    top: str
    bottom: str
    #: Pixel height / width for ``imshow(aspect=...)``.
    aspect: float
    #: Slice indices ordered from inferior to superior.
    slice_order: tuple[int, ...]
    #: Superior (S) coordinate of each slice centre, mm, indexed by slice index.
    slice_s_mm: tuple[float, ...]

    def image(self, a2d: np.ndarray) -> np.ndarray:
        img = a2d.T if self.transpose else a2d
        if self.flip_lr:
            img = img[:, ::-1]
        if self.flip_ud:
            img = img[::-1, :]
        return img

    def point(self, y: float, x: float, shape_yx: tuple[int, int]) -> tuple[float, float]:
        """Display (column, row) of voxel (y, x) on a slice of shape ``shape_yx``."""
        ny, nx = shape_yx
        if self.transpose:
            row, col, nrows, ncols = x, y, nx, ny
        else:
            row, col, nrows, ncols = y, x, ny, nx
        if self.flip_lr:
            col = ncols - 1 - col
        if self.flip_ud:
            row = nrows - 1 - row
        return float(col), float(row)


def display_orientation(affine_ras: np.ndarray, shape_zyx: tuple[int, int, int]) -> DisplayOrientation:
    """Derive the radiological display of (y, x) slices from the voxel-to-RAS affine.

    The in-plane voxel axis closest to the patient's left-right direction becomes the horizontal image axis and
    runs from the patient's right (image left) to the patient's left; the other in-plane axis runs from anterior
    (top) to posterior. Slices are ordered inferior to superior.
    """
    a = np.asarray(affine_ras, float)
    m = a[:3, :3]
    col_vec, row_vec = m[:, 0], m[:, 1]
    transpose = abs(row_vec[0]) > abs(col_vec[0])
    h, v = (row_vec, col_vec) if transpose else (col_vec, row_vec)
    flip_lr = bool(h[0] > 0)  # display column must increase toward patient left (R coordinate decreasing)
    flip_ud = bool(v[1] > 0)  # display row must increase toward posterior (A coordinate decreasing)
    h_eff = -h if flip_lr else h
    v_eff = -v if flip_ud else v
    hn, vn = float(np.linalg.norm(h)), float(np.linalg.norm(v))
    aspect = vn / hn if hn > 0 and vn > 0 else 1.0

    nz, ny, nx = shape_zyx
    centre = np.array([(nx - 1) / 2.0, (ny - 1) / 2.0, 0.0, 1.0])
    s_mm = []
    for k in range(nz):
        centre[2] = k
        s_mm.append(float((a @ centre)[2]))
    order = tuple(int(i) for i in np.argsort(np.asarray(s_mm), kind="stable"))
    return DisplayOrientation(
        transpose=bool(transpose),
        flip_lr=flip_lr,
        flip_ud=flip_ud,
        left=_direction_letter(-h_eff),
        right=_direction_letter(h_eff),
        top=_direction_letter(-v_eff),
        bottom=_direction_letter(v_eff),
        aspect=aspect,
        slice_order=order,
        slice_s_mm=tuple(s_mm),
    )


# --------------------------------------------------------------------------------------------------------------
# Metrics formatting
# --------------------------------------------------------------------------------------------------------------


def _lookup(metrics: dict, *names: str) -> tuple[str | None, Any]:
    """Find the first of ``names`` in ``metrics`` (case-insensitive). Returns (actual key, value)."""
    lower = {str(k).lower(): k for k in metrics}
    for name in names:
        key = name if name in metrics else lower.get(name.lower())
        if key is not None:
            return key, metrics[key]
    return None, None


def _reason(metrics: dict, key: str | None) -> str | None:
    if key is None:
        return None
    _, reason = _lookup(metrics, f"{key}_reason")
    return str(reason) if reason not in (None, "") else None


def _fmt_number(value: Any, digits: int) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(v):
        return "n/a"
    if math.isinf(v):
        return "\u221e" if v > 0 else "-\u221e"
    return f"{v:.{digits}f}"


@dataclass(frozen=True)
class MetricText:
    """A metric ready to print: ``value`` ('12.3', 'n/a') plus an optional unit and a reason when missing."""

    value: str
    unit: str
    reason: str | None
    available: bool

    def full(self) -> str:
        if not self.available:
            return f"n/a ({self.reason})" if self.reason else "n/a"
        return f"{self.value} {self.unit}".strip()


def metric_text(metrics: dict, names: Iterable[str] | str, unit: str = "", digits: int = 1) -> MetricText:
    """Format a metric looked up under any of ``names``; None/NaN/missing values become n/a with a reason."""
    names = (names,) if isinstance(names, str) else tuple(names)
    key, value = _lookup(metrics or {}, *names)
    if key is None:
        return MetricText("n/a", unit, "not computed", False)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MetricText("n/a", unit, _reason(metrics, key), False)
    return MetricText(_fmt_number(value, digits), unit, None, True)


#: Names under which the summary metrics may appear (first match wins, case-insensitive).
KEYS_CORE = ("core_ml",)
KEYS_PENUMBRA = ("penumbra_ml",)
KEYS_HYPO = ("hypoperfusion_ml",)
KEYS_MISMATCH_RATIO = ("Mismatch_Ratio", "mismatch_ratio")
KEYS_MISMATCH_VOLUME = ("Mismatch_Volume_ml", "mismatch_volume_ml", "mismatch_ml", "Mismatch_Volume")
KEYS_HIR = ("HIR", "hypoperfusion_intensity_ratio")
#: CBV index variants in order of preference (ctperf.indices) with the caption each is shown under.
CBV_INDEX_CAPTIONS = (
    ("Corrected_CBV_Index", "Corrected CBV index"),
    ("CBV_Index_contra_hemisphere", "CBV index (vs contralateral)"),
    ("CBV_Index_mirror", "CBV index (vs mirror region)"),
    ("CBV_Index", "CBV index"),
)
KEYS_CBV_INDEX = tuple(k for k, _ in CBV_INDEX_CAPTIONS)


def cbv_index_text(metrics: dict) -> tuple[str, MetricText]:
    """(caption, value) of the first CBV index variant that has a value; else the first one reported."""
    first: tuple[str, MetricText] | None = None
    for key, caption in CBV_INDEX_CAPTIONS:
        if _lookup(metrics or {}, key)[0] is None:
            continue
        txt = metric_text(metrics, key, "", 2)
        if txt.available:
            return caption, txt
        first = first or (caption, txt)
    return first or ("CBV index", metric_text(metrics, KEYS_CBV_INDEX, "", 2))


def mismatch_volume_text(metrics: dict) -> MetricText:
    """Mismatch volume as reported in the metrics document (never recomputed here)."""
    return metric_text(metrics, KEYS_MISMATCH_VOLUME, "mL")


def voxel_volume_ml(result: PerfusionResult) -> float:
    return study_voxel_volume_ml(result.affine_ras)


def tmax_level_volumes(result: PerfusionResult, lesion: LesionMasks, metrics: dict) -> list[tuple[float, MetricText]]:
    """Volume with Tmax above each reported level, read from the metrics document (``tmax<level>_ml``); a level the
    document does not hold is "n/a" (figures never recompute a number the metrics report)."""
    levels = sorted({float(v) for v in lesion.tmax_levels} | {4.0, 6.0, 8.0, 10.0})
    return [(level, metric_text(metrics, f"tmax{level:g}_ml", "mL")) for level in levels]


def _lookup_level(levels: dict, level: float):
    for k, v in levels.items():
        if abs(float(k) - level) < 1e-6:
            return v
    return None


def threshold(metrics: dict, name: str) -> float:
    """A threshold from ``metrics["thresholds"]`` (as written by ctperf.metrics_io), else the config default."""
    section = (metrics or {}).get("thresholds")
    value = section.get(name) if isinstance(section, dict) else None
    if value is None:
        value = (metrics or {}).get(name)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value)):
        return float(value)
    return float(getattr(Thresholds(), name))


def thresholds_from(metrics: dict) -> tuple[float, float]:
    """(Tmax hypoperfusion threshold in s, rCBF core threshold as a fraction) used for the captions."""
    return threshold(metrics, "tmax_hypoperfusion_s"), threshold(metrics, "rcbf_core")


def qa_flags_of(result: PerfusionResult, metrics: dict) -> dict[str, bool]:
    """QA flags of the result merged with those in ``metrics["qa_flags"]`` (a flag raised anywhere counts)."""
    flags: dict[str, bool] = {}
    section = (metrics or {}).get("qa_flags")
    for source in (result.qa_flags or {}, section if isinstance(section, dict) else {}):
        for key, value in source.items():
            if isinstance(value, (bool, np.bool_)) or value is None:
                flags[str(key)] = flags.get(str(key), False) or bool(value)
    return flags


def _g(x: float) -> str:
    return f"{x:g}"


# --------------------------------------------------------------------------------------------------------------
# Array helpers
# --------------------------------------------------------------------------------------------------------------


def as_bool_mask(mask: np.ndarray | None, shape) -> np.ndarray:
    if mask is None:
        return np.zeros(shape, bool)
    m = np.asarray(mask)
    if m.shape != tuple(shape):
        return np.zeros(shape, bool)
    return m.astype(bool, copy=False)


def _nanmax_z(vol: np.ndarray) -> np.ndarray:
    """Maximum over z ignoring NaN (NaN where the whole column is NaN), without warnings."""
    return np.fmax.reduce(np.asarray(vol, float), axis=0)


def _tissue_mask(result: PerfusionResult, shape) -> np.ndarray | None:
    """Brain parenchyma (brain without CSF and vessels) when the masks provide a non-empty one, else None."""
    try:
        tissue = as_bool_mask(result.masks.tissue, shape)
    except (AttributeError, TypeError, ValueError):
        return None
    return tissue if tissue.any() else None


def _windowed_mean_z(baseline: np.ndarray) -> np.ndarray:
    """Mean over z of the brain-windowed baseline image (a readable anatomical backdrop for projections)."""
    lo, hi = BRAIN_WINDOW_HU
    clipped = np.clip(np.asarray(baseline, float), lo, hi)
    # nanmean without its all-NaN warning; warnings.catch_warnings would change process-global state
    finite = np.isfinite(clipped)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(finite, clipped, 0.0).sum(axis=0) / finite.sum(axis=0)


def decimation_step(shape_yx: tuple[int, int], max_px: int) -> int:
    return max(1, int(math.ceil(max(shape_yx) / float(max_px))))


def overlay_rgba(core: np.ndarray, penumbra: np.ndarray) -> np.ndarray:
    """RGBA image: core colour where core, penumbra colour where penumbra (and not core), transparent elsewhere."""
    rgba = np.zeros(core.shape + (4,), float)
    pen = penumbra & ~core
    rgba[pen, :3] = PENUMBRA_COLOR
    rgba[pen, 3] = OVERLAY_ALPHA
    rgba[core, :3] = CORE_COLOR
    rgba[core, 3] = OVERLAY_ALPHA + 0.15
    return rgba


def composite_rgb(base2d: np.ndarray, core2d: np.ndarray | None = None, pen2d: np.ndarray | None = None) -> np.ndarray:
    """Brain-windowed baseline as RGB with the core / penumbra colours blended in (NaN shown black)."""
    lo, hi = BRAIN_WINDOW_HU
    gray = np.clip((np.asarray(base2d, float) - lo) / (hi - lo), 0.0, 1.0)
    gray = np.where(np.isfinite(gray), gray, 0.0)
    rgb = np.repeat(gray[..., None], 3, axis=-1)
    if core2d is not None and pen2d is not None:
        over = overlay_rgba(np.asarray(core2d, bool), np.asarray(pen2d, bool))
        alpha = over[..., 3:4]
        rgb = rgb * (1.0 - alpha) + over[..., :3] * alpha
    return rgb


@dataclass(frozen=True)
class Mosaic:
    """Display tiles packed into one array (one imshow is far faster than one axes per slice)."""

    image: np.ndarray
    #: (row0, col0) of each tile in ``image``.
    origins: tuple[tuple[int, int], ...]
    tile_shape: tuple[int, int]


def make_mosaic(tiles: list[np.ndarray], cols: int, gap: int = 2, fill: float = np.nan,
                row_gap: int | None = None) -> Mosaic:
    """Pack equally sized 2D (or 2D x channels) tiles row by row, separated by ``gap`` pixels of ``fill``
    (``row_gap`` pixels between rows, e.g. to leave room for tile titles)."""
    h, w = tiles[0].shape[:2]
    cols = max(1, min(cols, len(tiles)))
    rows = int(math.ceil(len(tiles) / cols))
    rgap = gap if row_gap is None else row_gap
    extra = tiles[0].shape[2:]
    out = np.full((rows * h + (rows - 1) * rgap, cols * w + (cols - 1) * gap) + extra, fill, dtype=float)
    origins = []
    for i, tile in enumerate(tiles):
        r0, c0 = (i // cols) * (h + rgap), (i % cols) * (w + gap)
        out[r0:r0 + h, c0:c0 + w] = tile
        origins.append((r0, c0))
    return Mosaic(out, tuple(origins), (h, w))


def annotate_mosaic(ax, mosaic: Mosaic, orient: DisplayOrientation, titles: list[str] | None, fontsize: float,
                    title_size: float | None = None) -> None:
    """Edge letters (R/L) inside every tile and an optional title above each tile."""
    h, w = mosaic.tile_shape
    box = dict(boxstyle="square,pad=0.12", fc="black", ec="none", alpha=0.75)
    for i, (r0, c0) in enumerate(mosaic.origins):
        mid = r0 + h / 2.0
        ax.text(c0 + 0.03 * w, mid, orient.left, color="yellow", fontsize=fontsize, fontweight="bold", ha="left",
                va="center", bbox=box)
        ax.text(c0 + 0.97 * w, mid, orient.right, color="yellow", fontsize=fontsize, fontweight="bold",
                ha="right", va="center", bbox=box)
        if titles:
            ax.text(c0 + w / 2.0, r0 - 0.5, titles[i], color="black", fontsize=title_size or fontsize, ha="center",
                    va="bottom", clip_on=False)


def slice_title(orient: DisplayOrientation, z: int, with_index: bool = True) -> str:
    s = f"S {orient.slice_s_mm[z]:+.0f} mm"
    return f"sl {z}  {s}" if with_index else s


def pick_slices(result: PerfusionResult, orient: DisplayOrientation, n_max: int) -> list[int]:
    """Up to ``n_max`` slice indices through the brain, evenly spaced, ordered inferior to superior."""
    nz = result.tmax.shape[0]
    brain = as_bool_mask(result.masks.brain, result.tmax.shape)
    counts = brain.reshape(nz, -1).sum(axis=1)
    if not counts.any():
        counts = np.isfinite(np.asarray(result.tmax, float)).reshape(nz, -1).sum(axis=1)
    order = [k for k in orient.slice_order if counts[k] > 0] or list(orient.slice_order)
    if len(order) <= n_max:
        return order
    idx = np.unique(np.round(np.linspace(0, len(order) - 1, n_max)).astype(int))
    return [order[i] for i in idx]


# --------------------------------------------------------------------------------------------------------------
# Drawing helpers (shared with ctperf.report)
# --------------------------------------------------------------------------------------------------------------


def new_figure(width_in: float, height_in: float) -> Figure:
    fig = Figure(figsize=(width_in, height_in), dpi=DPI, facecolor="white")
    FigureCanvasAgg(fig)
    return fig


def label_edges(ax, orient: DisplayOrientation, fontsize: float = 7.0, vertical: bool = False) -> None:
    """Write the patient-direction letters at the left/right (and optionally top/bottom) image edges."""
    style = dict(color="yellow", fontsize=fontsize, fontweight="bold", transform=ax.transAxes, clip_on=False,
                 bbox=dict(boxstyle="square,pad=0.12", fc="black", ec="none", alpha=0.75))
    ax.text(0.02, 0.5, orient.left, ha="left", va="center", **style)
    ax.text(0.98, 0.5, orient.right, ha="right", va="center", **style)
    if vertical:
        ax.text(0.5, 0.98, orient.top, ha="center", va="top", **style)
        ax.text(0.5, 0.02, orient.bottom, ha="center", va="bottom", **style)


def _clean_axes(ax) -> None:
    """Image panels: no ticks or frame (axis drawing switched off entirely, which is also much faster)."""
    ax.set_axis_off()


def draw_map_slice(ax, img2d: np.ndarray, orient: DisplayOrientation, cmap, vmin: float, vmax: float, stride: int = 1):
    shown = orient.image(np.asarray(img2d, float))[::stride, ::stride]
    shown = np.ma.masked_invalid(shown)
    handle = ax.imshow(shown, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest",
                       aspect=orient.aspect, origin="upper")
    _clean_axes(ax)
    return handle


def draw_baseline(ax, baseline2d: np.ndarray, orient: DisplayOrientation, stride: int = 1):
    lo, hi = BRAIN_WINDOW_HU
    shown = np.ma.masked_invalid(orient.image(np.asarray(baseline2d, float))[::stride, ::stride])
    ax.imshow(shown, cmap=_gray_cmap(), vmin=lo, vmax=hi, interpolation="nearest", aspect=orient.aspect,
              origin="upper")
    _clean_axes(ax)


def draw_overlay(ax, core2d, penumbra2d, orient: DisplayOrientation, stride: int = 1):
    core = orient.image(np.asarray(core2d, bool))[::stride, ::stride]
    pen = orient.image(np.asarray(penumbra2d, bool))[::stride, ::stride]
    if core.any() or pen.any():
        ax.imshow(overlay_rgba(core, pen), interpolation="nearest", aspect=orient.aspect, origin="upper")


def draw_outline(ax, mask2d, orient: DisplayOrientation, stride: int = 1, color=HYPO_OUTLINE_COLOR, lw: float = 1.0):
    m = orient.image(np.asarray(mask2d, bool))[::stride, ::stride]
    if m.any() and m.shape[0] > 1 and m.shape[1] > 1:
        ax.contour(m.astype(float), levels=[0.5], colors=[color], linewidths=lw)


def draw_curves(ax, result: PerfusionResult, compact: bool = False) -> None:
    """AIF and VOF delta-HU curves with their times to peak marked."""
    fs = 6.5 if compact else 9.0
    for curve, name, color in ((result.aif, "AIF", AIF_COLOR), (result.vof, "VOF", VOF_COLOR)):
        t = np.asarray(curve.time_s, float)
        y = np.asarray(curve.delta_hu, float)
        if t.size == 0 or y.size != t.size or not np.isfinite(y).any():
            ax.plot([], [], color=color, ls=":", label=f"{name}: not available")
            continue
        peak = float(np.nanmax(y))
        ttp = _safe_ttp(curve)
        label = f"{name} (peak {peak:.0f} HU" + (f", TTP {ttp:.1f} s)" if ttp is not None else ")")
        ax.plot(t, y, color=color, lw=1.2 if compact else 1.6, marker=None if compact else "o", ms=2.5,
                label=label)
        if ttp is not None:
            ax.axvline(ttp, color=color, ls="--", lw=0.9, alpha=0.8)
    ax.set_xlabel("time (s)", fontsize=fs)
    ax.set_ylabel("\u0394HU", fontsize=fs)
    ax.tick_params(labelsize=fs - 1)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=fs - 1, loc="upper right", frameon=True)


def _safe_ttp(curve: Curve) -> float | None:
    try:
        y = np.asarray(curve.delta_hu, float)
        if y.size == 0 or not np.isfinite(y).any():
            return None
        return float(curve.ttp_s)
    except (ValueError, IndexError):
        return None


#: Venous-transit entries of the metrics (ctperf.indices) with their display labels and units.
PVT_KEYS = (
    ("PVT_sec", "PVT (VOF - AIF TTP)", "s"),
    ("sinus_tmax_s", "sinus Tmax", "s"),
    ("PVT_present", "PVT sign (sinus Tmax \u2265 {pvt:g} s)", ""),
)


def pvt_lines(result: PerfusionResult, metrics: dict) -> list[str]:
    """Venous transit: PVT metrics when reported, else the VOF-AIF TTP delay measured on the curves."""
    metrics = metrics or {}
    lines = []
    pvt_thr = threshold(metrics, "pvt_tmax_s")
    for key, label, unit in PVT_KEYS:
        if _lookup(metrics, key)[0] is not None:
            lines.append(f"{label.format(pvt=pvt_thr)}: {metric_text(metrics, key, unit).full()}")
    if not lines:
        ta, tv = _safe_ttp(result.aif), _safe_ttp(result.vof)
        if ta is not None and tv is not None:
            lines.append(f"VOF - AIF TTP delay: {tv - ta:.1f} s")
        lines.append("PVT sign: not reported")
    return lines


def pvt_positive(result: PerfusionResult, metrics: dict) -> bool:
    """True when the PVT sign is reported present (metrics ``PVT_present`` or any raised QA flag about PVT)."""
    _, present = _lookup(metrics or {}, "PVT_present")
    if isinstance(present, (bool, np.bool_)) and bool(present):
        return True
    return any(v for k, v in qa_flags_of(result, metrics).items() if "pvt" in k.lower())


def save_figure(fig: Figure, path: Path, disclaimer: bool = True, **kwargs) -> Path:
    """Save a QA figure; every QA image carries the research-use disclaimer in its bottom-right corner."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if disclaimer:
        fig.text(0.995, 0.004, f"ctperf {__version__} - {DISCLAIMER}", ha="right", va="bottom", fontsize=6.5,
                 color="0.45")
    # zlib level 1: ~4x faster PNG encoding than the default level 6 for a few % larger files
    fig.savefig(path, dpi=kwargs.pop("dpi", DPI), facecolor=fig.get_facecolor(),
                pil_kwargs={"compress_level": PNG_COMPRESS_LEVEL}, **kwargs)
    return path


# --------------------------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------------------------


def _voxels(curve: Curve) -> np.ndarray:
    """The curve's (z, y, x) voxel indices as an (n, 3) int array (n may be 0)."""
    v = np.asarray(curve.voxels_zyx)
    return v.astype(int).reshape(-1, 3) if v.size else np.zeros((0, 3), int)


def _voxel_slices(voxels: np.ndarray, nz: int) -> list[int]:
    """Slices holding the voxels, most populated first."""
    v = voxels[(voxels[:, 0] >= 0) & (voxels[:, 0] < nz)]
    if v.size == 0:
        return []
    zs, counts = np.unique(v[:, 0], return_counts=True)
    return [int(zs[i]) for i in np.argsort(-counts, kind="stable")]


def fig_aif_vof(result: PerfusionResult, metrics: dict, path: Path) -> Path:
    base = np.asarray(result.baseline_hu, float)
    nz = base.shape[0]
    orient = display_orientation(result.affine_ras, base.shape)
    aif_vox, vof_vox = _voxels(result.aif), _voxels(result.vof)
    aif_z, vof_z = _voxel_slices(aif_vox, nz), _voxel_slices(vof_vox, nz)
    slices = []
    for z in (aif_z[:1] + vof_z[:1]):
        if z not in slices:
            slices.append(z)
    n_img = max(1, len(slices))

    fig = new_figure(5.2 + 3.4 * n_img, 4.8)
    gs = fig.add_gridspec(1, 1 + n_img, width_ratios=[1.55] + [1.0] * n_img, left=0.06, right=0.99, top=0.86,
                          bottom=0.2, wspace=0.12)
    ax = fig.add_subplot(gs[0, 0])
    draw_curves(ax, result)
    lines = pvt_lines(result, metrics)
    # Venous transit readout under the curves (never over them).
    fig.text(0.06, 0.025, "Venous transit:  " + "   \u00b7   ".join(lines), ha="left", va="bottom", fontsize=8,
             color="#b00000" if pvt_positive(result, metrics) else "black", wrap=True)
    ax.set_title("Arterial input (AIF) and venous output (VOF)", fontsize=10)

    shape_yx = base.shape[1:]
    if not slices:
        axi = fig.add_subplot(gs[0, 1])
        axi.set_xticks([])
        axi.set_yticks([])
        axi.set_facecolor("black")
        axi.text(0.5, 0.5, "AIF/VOF voxel positions\nnot available", color="white", ha="center", va="center",
                 transform=axi.transAxes, fontsize=9)
    for i, z in enumerate(slices):
        axi = fig.add_subplot(gs[0, 1 + i])
        draw_baseline(axi, base[z], orient)
        for vox, color, marker, name in ((aif_vox, AIF_COLOR, "o", "AIF"), (vof_vox, VOF_COLOR, "s", "VOF")):
            sel = vox[vox[:, 0] == z]
            if len(sel):
                pts = np.array([orient.point(y, x, shape_yx) for _, y, x in sel])
                axi.scatter(pts[:, 0], pts[:, 1], s=46, facecolors="none", edgecolors=color, linewidths=1.6,
                            marker=marker, label=f"{name} ({len(sel)}/{len(vox)} voxels)")
        label_edges(axi, orient, fontsize=8, vertical=True)
        axi.set_title(f"baseline, slice {z} (S {orient.slice_s_mm[z]:+.0f} mm), W80/L40", fontsize=8.5)
        if axi.get_legend_handles_labels()[0]:
            axi.legend(fontsize=7, loc="lower center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)
    fig.suptitle("QA: AIF / VOF", fontsize=12, fontweight="bold", x=0.06, ha="left", y=0.975)
    return save_figure(fig, path)


def fig_tmax_mip(result: PerfusionResult, lesion: LesionMasks, metrics: dict, path: Path) -> Path:
    tmax = np.asarray(result.tmax, float)
    orient = display_orientation(result.affine_ras, tmax.shape)
    t_thr, _ = thresholds_from(metrics)
    # Project brain parenchyma only: Tmax in CSF and large vessels is not meaningful and would dominate a MIP.
    tissue = _tissue_mask(result, tmax.shape)
    restricted = tissue is not None
    mip = _nanmax_z(np.where(tissue, tmax, np.nan) if restricted else tmax)
    hypo = as_bool_mask(lesion.hypoperfusion, tmax.shape).any(axis=0)

    fig = new_figure(6.4, 6.0)
    ax = fig.add_axes([0.04, 0.08, 0.78, 0.8])
    handle = draw_map_slice(ax, mip, orient, map_cmap(), *TMAX_RANGE_S)
    draw_outline(ax, hypo, orient, lw=1.3)
    label_edges(ax, orient, fontsize=10, vertical=True)
    cax = fig.add_axes([0.85, 0.15, 0.035, 0.66])
    cb = fig.colorbar(handle, cax=cax)
    cb.set_label("Tmax (s)", fontsize=10)
    cb.ax.tick_params(labelsize=9)
    hypo_txt = metric_text(metrics, KEYS_HYPO, "mL")
    fig.text(0.04, 0.955, "Tmax maximum-intensity projection (axial)", fontsize=12, fontweight="bold")
    fig.text(0.04, 0.915, f"white outline: Tmax > {_g(t_thr)} s hypoperfusion, {hypo_txt.full()}", fontsize=9)
    scope = "brain tissue (CSF and large vessels excluded)" if restricted else "all voxels"
    fig.text(0.04, 0.015, f"Projected: {scope}; black: outside / unknown.\n"
             "Radiological convention: patient right on image left.", fontsize=7.5, color="0.3", va="bottom")
    return save_figure(fig, path)


def core_penumbra_legend(metrics: dict) -> list[tuple[Any, str]]:
    t_thr, rcbf = thresholds_from(metrics)
    return [
        (Patch(facecolor=CORE_COLOR, edgecolor="none"),
         f"Core (rCBF < {rcbf * 100:g}%): {metric_text(metrics, KEYS_CORE, 'mL').full()}"),
        (Patch(facecolor=PENUMBRA_COLOR, edgecolor="none"),
         f"Penumbra: {metric_text(metrics, KEYS_PENUMBRA, 'mL').full()}"),
        (Patch(facecolor="0.35", edgecolor="white", lw=1.2),
         f"Hypoperfusion (Tmax > {_g(t_thr)} s, white outline): {metric_text(metrics, KEYS_HYPO, 'mL').full()}"),
        (Line2D([], [], color="none"), f"Mismatch volume: {mismatch_volume_text(metrics).full()}"),
        (Line2D([], [], color="none"), f"Mismatch ratio: {metric_text(metrics, KEYS_MISMATCH_RATIO, '', 2).full()}"),
    ]


def fig_core_penumbra_mip(result: PerfusionResult, lesion: LesionMasks, metrics: dict, path: Path) -> Path:
    shape = np.asarray(result.tmax).shape
    orient = display_orientation(result.affine_ras, shape)
    core = as_bool_mask(lesion.core, shape).any(axis=0)
    pen = as_bool_mask(lesion.penumbra, shape).any(axis=0)
    hypo = as_bool_mask(lesion.hypoperfusion, shape).any(axis=0)

    fig = new_figure(9.0, 5.6)
    ax = fig.add_axes([0.02, 0.06, 0.52, 0.82])
    draw_baseline(ax, _windowed_mean_z(result.baseline_hu), orient)
    draw_overlay(ax, core, pen & ~core, orient)
    draw_outline(ax, hypo, orient, color="white", lw=0.9)
    label_edges(ax, orient, fontsize=10, vertical=True)
    handles, labels = zip(*core_penumbra_legend(metrics))
    # Wrap long labels (n/a reasons) but never between a number and its unit.
    labels = ["\n   ".join(textwrap.wrap(label.replace(" mL", "\u00a0mL"), 48)) for label in labels]
    fig.legend(handles, labels, loc="upper left", bbox_to_anchor=(0.56, 0.84), fontsize=9, frameon=False,
               handlelength=1.6, alignment="left", title="Volumes", title_fontsize=10)
    fig.text(0.02, 0.945, "Core / penumbra projection (axial)", fontsize=12, fontweight="bold")
    fig.text(0.02, 0.905, "overlays projected through all slices over the mean brain-windowed baseline (W80/L40); "
             "white outline: hypoperfusion", fontsize=7.5, color="0.25")
    fig.text(0.56, 0.08, "Radiological convention:\npatient right on image left.", fontsize=7.5, color="0.3")
    return save_figure(fig, path)


def core_penumbra_mosaic(result: PerfusionResult, lesion: LesionMasks, orient: DisplayOrientation,
                         slices: list[int], cols: int, max_px: int) -> tuple[Mosaic, Mosaic]:
    """RGB mosaic of baseline + core/penumbra, and the matching mosaic of the hypoperfusion mask."""
    base = np.asarray(result.baseline_hu, float)
    shape = base.shape
    stride = decimation_step(shape[1:], max_px)
    core = as_bool_mask(lesion.core, shape)
    pen = as_bool_mask(lesion.penumbra, shape) & ~core
    hypo = as_bool_mask(lesion.hypoperfusion, shape)

    def view(a2d):
        return orient.image(a2d)[::stride, ::stride]

    rgb = [composite_rgb(view(base[z]), view(core[z]), view(pen[z])) for z in slices]
    masks = [view(hypo[z]).astype(float) for z in slices]
    row_gap = max(2, int(round(0.16 * rgb[0].shape[0])))
    return (make_mosaic(rgb, cols, fill=1.0, row_gap=row_gap),
            make_mosaic(masks, cols, fill=0.0, row_gap=row_gap))


def map_mosaic(vol: np.ndarray, orient: DisplayOrientation, slices: list[int], cols: int, max_px: int) -> Mosaic:
    stride = decimation_step(vol.shape[1:], max_px)
    return make_mosaic([orient.image(np.asarray(vol[z], float))[::stride, ::stride] for z in slices], cols)


def show_mosaic(ax, mosaic: Mosaic, orient: DisplayOrientation, **kwargs):
    handle = ax.imshow(mosaic.image if mosaic.image.ndim == 3 else np.ma.masked_invalid(mosaic.image),
                       interpolation="nearest", aspect=orient.aspect, origin="upper", **kwargs)
    ax.set_axis_off()
    return handle


def contour_mosaic(ax, mask_mosaic: Mosaic, color=HYPO_OUTLINE_COLOR, lw: float = 0.7) -> None:
    m = mask_mosaic.image
    if m.any() and m.shape[0] > 1 and m.shape[1] > 1:
        ax.contour(m, levels=[0.5], colors=[color], linewidths=lw)


def fig_core_penumbra_montage(result: PerfusionResult, lesion: LesionMasks, metrics: dict, path: Path) -> Path:
    shape = np.asarray(result.baseline_hu).shape
    orient = display_orientation(result.affine_ras, shape)
    slices = pick_slices(result, orient, MONTAGE_MAX_SLICES)
    cols = min(6, len(slices))
    rgb, hypo = core_penumbra_mosaic(result, lesion, orient, slices, cols, MONTAGE_MAX_PX)

    tile = 1.55
    img_w = cols * tile
    fig_w = max(img_w + 0.3, 7.5)  # room for the title and legend even with few slices
    height_img = img_w * orient.aspect * rgb.image.shape[0] / rgb.image.shape[1]
    fig = new_figure(fig_w, height_img + 1.2)
    fh = fig.get_figheight()
    ax = fig.add_axes([(fig_w - img_w) / 2 / fig_w, 0.5 / fh, img_w / fig_w, height_img / fh])
    show_mosaic(ax, rgb, orient)
    contour_mosaic(ax, hypo, lw=0.6)
    annotate_mosaic(ax, rgb, orient, [slice_title(orient, z) for z in slices], fontsize=6, title_size=7)
    fig.text(0.01, 1.0 - 0.3 / fh, "Core / penumbra by slice (inferior \u2192 superior)", fontsize=11,
             fontweight="bold", va="center")
    handles, labels = zip(*core_penumbra_legend(metrics)[:3])
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=7.5, frameon=False, bbox_to_anchor=(0.5, 0.0))
    return save_figure(fig, path)


def fig_maps_montage(result: PerfusionResult, metrics: dict, path: Path) -> Path:
    shape = np.asarray(result.tmax).shape
    orient = display_orientation(result.affine_ras, shape)
    slices = pick_slices(result, orient, 8)
    n = max(len(slices), 1)
    cmap = map_cmap()

    tile = 1.3
    first = map_mosaic(np.asarray(result.tmax, float), orient, slices, n, MONTAGE_MAX_PX)
    row_h = tile * orient.aspect * first.tile_shape[0] / first.tile_shape[1]
    label_w, cbar_w = 0.45, 0.95
    img_w = n * tile
    fig_w = max(img_w + label_w + cbar_w, 6.5)  # room for the title even with few slices
    fig_h = 4 * (row_h + 0.08) + 0.75
    fig = new_figure(fig_w, fig_h)
    for r, (attr, label, unit, vmin, vmax) in enumerate(MAP_SPECS):
        vol = np.asarray(getattr(result, attr), float)
        mosaic = first if attr == "tmax" else map_mosaic(vol, orient, slices, n, MONTAGE_MAX_PX)
        bottom = 0.08 + (3 - r) * (row_h + 0.08)
        ax = fig.add_axes([label_w / fig_w, bottom / fig_h, img_w / fig_w, row_h / fig_h])
        handle = show_mosaic(ax, mosaic, orient, cmap=cmap, vmin=vmin, vmax=vmax)
        titles = [slice_title(orient, z) for z in slices] if r == 0 else None
        annotate_mosaic(ax, mosaic, orient, titles, fontsize=5.5, title_size=6.5)
        fig.text(0.5 * label_w / fig_w, (bottom + row_h / 2) / fig_h, label, rotation=90, ha="center",
                 va="center", fontsize=10, fontweight="bold")
        cax = fig.add_axes([(label_w + img_w + 0.1) / fig_w, (bottom + 0.05 * row_h) / fig_h, 0.1 / fig_w,
                            0.9 * row_h / fig_h])
        cb = fig.colorbar(handle, cax=cax, extend="max")
        cb.set_label(unit, fontsize=7)
        cb.ax.tick_params(labelsize=6.5)
    fig.text(0.01, 1.0 - 0.25 / fig_h, "Perfusion maps (fixed display ranges; black = outside brain / unknown)",
             fontsize=10.5, fontweight="bold", va="center")
    return save_figure(fig, path)


def fig_roi_registration(screenshot_rgb: np.ndarray, tmax_zyx: np.ndarray, affine_ras: np.ndarray,
                         roi_yx: np.ndarray, lesion: LesionMasks, metrics: dict, path: Path) -> Path:
    """Mode B: the user's screenshot beside the Tmax MIP with the registered yellow ROI and the lesion masks."""
    tmax = np.asarray(tmax_zyx, float)
    orient = display_orientation(affine_ras, tmax.shape)
    mip = _nanmax_z(tmax)
    core = as_bool_mask(lesion.core, tmax.shape).any(axis=0)
    pen = as_bool_mask(lesion.penumbra, tmax.shape).any(axis=0) & ~core
    fig = new_figure(11.0, 5.6)
    ax0 = fig.add_axes([0.02, 0.07, 0.44, 0.76])
    ax0.imshow(np.asarray(screenshot_rgb)[..., :3], interpolation="antialiased")
    _clean_axes(ax0)
    ax0.set_title("screenshot as given (dashed: where the Tmax MIP was found)", fontsize=10)
    reg = ((metrics or {}).get("provenance") or {}).get("roi_registration") or {}
    if all(isinstance(reg.get(k), (int, float)) for k in ("scale", "dx", "dy")):
        from matplotlib.patches import Rectangle

        h, w = mip.shape if not (reg.get("flips") or [False])[0] else mip.shape[::-1]
        ax0.add_patch(Rectangle((reg["dx"] - 0.5, reg["dy"] - 0.5), reg["scale"] * w, reg["scale"] * h, fill=False,
                                edgecolor="cyan", linestyle="--", linewidth=1.0))
    ax1 = fig.add_axes([0.5, 0.07, 0.38, 0.76])
    handle = draw_map_slice(ax1, mip, orient, map_cmap(), *TMAX_RANGE_S)
    draw_overlay(ax1, core, pen, orient)
    draw_outline(ax1, np.asarray(roi_yx, bool), orient, color="yellow", lw=1.5)
    label_edges(ax1, orient, fontsize=9, vertical=True)
    ax1.set_title("Tmax MIP, registered ROI (yellow), core / penumbra in ROI", fontsize=10)
    cax = fig.add_axes([0.9, 0.2, 0.02, 0.6])
    fig.colorbar(handle, cax=cax).set_label("Tmax (s)", fontsize=9)
    score = (metrics.get("qa_values") or {}).get("roi_registration_score")
    reg = f"registration score {score:.2f}" if isinstance(score, (int, float)) else "registration score n/a"
    fig.text(0.02, 0.95, "Mode B: ROI registration", fontsize=12, fontweight="bold")
    fig.text(0.02, 0.915, f"{reg}; {metric_text(metrics, KEYS_HYPO, 'mL').full()} hypoperfusion in the ROI footprint",
             fontsize=9)
    return save_figure(fig, path)


def write_qa_figures(result: PerfusionResult, lesion: LesionMasks, metrics: dict, qa_dir: Path) -> list[Path]:
    """Write the five QA PNGs into ``qa_dir`` (created if needed) and return their paths in a fixed order."""
    qa_dir = Path(qa_dir)
    qa_dir.mkdir(parents=True, exist_ok=True)
    metrics = metrics or {}
    # No matplotlib.rc_context here: it swaps the process-global rcParams and is not safe when several studies
    # draw at once (batch threads); the figures use matplotlib's default font (DejaVu Sans).
    return [
        fig_aif_vof(result, metrics, qa_dir / "aif_vof.png"),
        fig_tmax_mip(result, lesion, metrics, qa_dir / "tmax_mip.png"),
        fig_core_penumbra_mip(result, lesion, metrics, qa_dir / "core_penumbra_mip.png"),
        fig_core_penumbra_montage(result, lesion, metrics, qa_dir / "core_penumbra_montage.png"),
        fig_maps_montage(result, metrics, qa_dir / "maps_montage.png"),
    ]
