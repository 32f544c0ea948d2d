"""Quality-assurance figures (PNG) for one analysed study.

The five Mode A figures are drawn as raster images with numpy and Pillow (:mod:`ctperf.viz.raster`): matplotlib
would cost ~0.5 s to import plus 0.1-0.4 s per figure, most of a run's write stage.  The matplotlib helpers below
(``new_figure``, ``save_figure``, ``draw_*``) serve the other figures (Mode B, comparison, statistics, the PDF);
they draw on a stand-alone :class:`matplotlib.figure.Figure` with the Agg canvas, never through ``pyplot``.

Images are shown in the radiological convention (patient's right on the image left, anterior up). The
orientation is derived from ``result.affine_ras`` for every study (see :func:`display_orientation`), and every
panel carries the letters of its edges (R/L, A/P) so a wrong header is visible at a glance.

Metric values may be ``None`` (strict JSON null); they are printed as ``n/a (<short reason>)``: the leading label
of the ``<key>_reason`` entry, cut at a word boundary (:func:`ctperf.core.qa_text.short_reason`); the full reason
stays in metrics.json.  When the lesion reaches the first or last slice (``qa_flags.lesion_beyond_coverage``)
the volumes are lower bounds and are printed with a "≥" prefix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable

from typing import TYPE_CHECKING

import numpy as np

from ctperf import DISCLAIMER, __version__
from ctperf.config import Thresholds
from ctperf.core.orientation import DisplayOrientation, display_orientation
from ctperf.core.qa_text import SHORT_REASON_CHARS, reason_notes, short_reason
from ctperf.core.types import Curve, LesionMasks, PerfusionResult
from ctperf.core.types import voxel_volume_ml as study_voxel_volume_ml
from ctperf.viz import raster
from ctperf.viz.raster import Canvas

if TYPE_CHECKING:  # matplotlib is imported only by the helpers that draw with it (import costs ~0.5 s)
    from matplotlib.colors import Colormap
    from matplotlib.figure import Figure

# --------------------------------------------------------------------------------------------------------------
# Display constants
# --------------------------------------------------------------------------------------------------------------

#: Brain window W80 / L40 (HU).
BRAIN_WINDOW_HU = (0.0, 80.0)

#: (attribute, label, unit, vmin, vmax) of the perfusion maps, fixed clinical display ranges.
MAP_SPECS: tuple[tuple[str, str, str, float, float], ...] = (
    ("cbf", "CBF", "mL/100g/min", 0.0, 80.0),
    ("cbv", "CBV", "mL/100g", 0.0, 6.0),
    # 0-20 s: normal tissue reads ~8 s on ctperf's MTT maps; on 0-12 s a large part of it saturated (39 % above
    # 9 s in a review study) and the lesion's longer MTT could not be seen.
    ("mtt", "MTT", "s", 0.0, 20.0),
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
PNG_COMPRESS_LEVEL = raster.PNG_COMPRESS_LEVEL

FIGURE_NAMES = (
    "aif_vof.png",
    "tmax_mip.png",
    "core_penumbra_mip.png",
    "core_penumbra_montage.png",
    "maps_montage.png",
)


def map_cmap() -> Colormap:
    """Rainbow-like map familiar from clinical perfusion software; unknown values are black background."""
    import matplotlib

    return matplotlib.colormaps["turbo"].with_extremes(bad="black", under="black")


def _gray_cmap() -> Colormap:
    import matplotlib

    return matplotlib.colormaps["gray"].with_extremes(bad="black")


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
    """A metric ready to print: ``value`` ('12.3', 'n/a') plus an optional unit and a reason when missing.

    ``number`` is the value as a float (None when missing or not numeric); ``lower_bound`` marks a volume that is
    only a lower bound (the lesion extends beyond the scanned slab) and is printed with a "≥" prefix.
    """

    value: str
    unit: str
    reason: str | None
    available: bool
    number: float | None = None
    lower_bound: bool = False

    @property
    def shown(self) -> str:
        """The value as printed, "≥" prefix included (joined by a no-break space: never wrapped apart)."""
        return f"\u2265\u00a0{self.value}" if self.available and self.lower_bound else self.value

    def full(self) -> str:
        """Value and unit, or "n/a (<full reason>)"."""
        if not self.available:
            return f"n/a ({self.reason})" if self.reason else "n/a"
        return f"{self.shown} {self.unit}".strip()

    def short(self, limit: int = SHORT_REASON_CHARS) -> str:
        """Value and unit, or "n/a (<short reason>)" with the reason cut to ``limit`` characters at a word."""
        if self.available:
            return self.full()
        why = short_reason(self.reason, limit)
        return f"n/a ({why})" if why else "n/a"


def _as_number(value: Any) -> float | None:
    if isinstance(value, (bool, np.bool_)):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def metric_text(metrics: dict, names: Iterable[str] | str, unit: str = "", digits: int = 1) -> MetricText:
    """Format a metric looked up under any of ``names``; None/NaN/missing values become n/a with a reason."""
    names = (names,) if isinstance(names, str) else tuple(names)
    key, value = _lookup(metrics or {}, *names)
    if key is None:
        return MetricText("n/a", unit, "not computed", False)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MetricText("n/a", unit, _reason(metrics, key), False)
    return MetricText(_fmt_number(value, digits), unit, None, True, _as_number(value))


def lesion_beyond_coverage(metrics: dict) -> bool:
    """True when the lesion reaches the first or last slice: every lesion volume is then a lower bound."""
    flags = (metrics or {}).get("qa_flags")
    return bool(isinstance(flags, dict) and flags.get("lesion_beyond_coverage"))


#: What the "\u2265" before a volume means (printed next to the volumes when they are lower bounds).
LOWER_BOUND_NOTE = "\u2265 lower bound: the lesion reaches the first or last slice"


def volume_text(metrics: dict, names: Iterable[str] | str) -> MetricText:
    """A lesion volume in mL, marked as a lower bound ("≥") when the lesion extends beyond the slab."""
    txt = metric_text(metrics, names, "mL")
    return replace(txt, lower_bound=lesion_beyond_coverage(metrics)) if txt.available else txt


#: Names under which the summary metrics may appear (first match wins, case-insensitive).
KEYS_CORE = ("core_ml",)
KEYS_PENUMBRA = ("penumbra_ml",)
KEYS_HYPO = ("hypoperfusion_ml",)
KEYS_MISMATCH_RATIO = ("Mismatch_Ratio", "mismatch_ratio")
KEYS_MISMATCH_VOLUME = ("Mismatch_Volume_ml", "mismatch_volume_ml", "mismatch_ml", "Mismatch_Volume")
KEYS_HIR = ("HIR", "hypoperfusion_intensity_ratio")
#: CBV index variants in order of preference (ctperf.analysis.indices) with the caption each is shown under.
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
    return volume_text(metrics, KEYS_MISMATCH_VOLUME)


def voxel_volume_ml(result: PerfusionResult) -> float:
    return study_voxel_volume_ml(result.affine_ras)


def tmax_level_volumes(result: PerfusionResult, lesion: LesionMasks, metrics: dict) -> list[tuple[float, MetricText]]:
    """Volume with Tmax above each reported level, read from the metrics document (``tmax<level>_ml``); a level the
    document does not hold is "n/a" (figures never recompute a number the metrics report)."""
    levels = sorted({float(v) for v in lesion.tmax_levels} | {4.0, 6.0, 8.0, 10.0})
    return [(level, volume_text(metrics, f"tmax{level:g}_ml")) for level in levels]


def threshold(metrics: dict, name: str) -> float:
    """A threshold from ``metrics["thresholds"]`` (as written by ctperf.analysis.metrics), else the config default."""
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


def hypo_outline_caption(metrics: dict, drawn: bool, reason_chars: int = 30) -> str:
    """What the hypoperfusion outline on a Tmax image shows, or why there is none: not measured (with the reason
    shortened to ``reason_chars``) or no tissue above the threshold."""
    t = _g(thresholds_from(metrics)[0])
    if drawn:
        return f"white outline: Tmax > {t} s"
    txt = metric_text(metrics, KEYS_HYPO, "mL")
    if not txt.available:
        why = short_reason(txt.reason, reason_chars)
        return f"no Tmax > {t} s outline: not measured" + (f" ({why})" if why else "")
    if txt.number == 0:
        return f"no Tmax > {t} s outline: no tissue above {t} s"
    return f"no Tmax > {t} s outline drawn"


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
    v = np.asarray(vol)
    return np.fmax.reduce(v if np.issubdtype(v.dtype, np.floating) else v.astype(float), axis=0)


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
    b = np.asarray(baseline, np.float32)
    # nanmean without its all-NaN warning; warnings.catch_warnings would change process-global state
    finite = np.isfinite(b)
    clipped = np.clip(b, lo, hi, out=np.zeros_like(b), where=finite)
    with np.errstate(invalid="ignore", divide="ignore"):
        return clipped.sum(axis=0, dtype=np.float64) / finite.sum(axis=0)


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
# Drawing helpers (shared with ctperf.viz.report)
# --------------------------------------------------------------------------------------------------------------


def new_figure(width_in: float, height_in: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

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


def _safe_ttp(curve: Curve) -> float | None:
    try:
        y = np.asarray(curve.delta_hu, float)
        if y.size == 0 or not np.isfinite(y).any():
            return None
        return float(curve.ttp_s)
    except (ValueError, IndexError):
        return None


#: Venous-transit entries of the metrics (ctperf.analysis.indices) with their display labels and units.
PVT_KEYS = (
    ("PVT_sec", "PVT (VOF - AIF TTP)", "s"),
    ("sinus_tmax_s", "sinus Tmax", "s"),
    ("PVT_present", "PVT sign (sinus Tmax \u2265 {pvt:g} s)", ""),
)


def pvt_lines(result: PerfusionResult, metrics: dict, reason_chars: int = SHORT_REASON_CHARS) -> list[str]:
    """Venous transit: PVT metrics when reported (a missing one with its reason shortened to ``reason_chars``),
    else the VOF-AIF TTP delay measured on the curves."""
    metrics = metrics or {}
    lines = []
    pvt_thr = threshold(metrics, "pvt_tmax_s")
    for key, label, unit in PVT_KEYS:
        if _lookup(metrics, key)[0] is not None:
            lines.append(f"{label.format(pvt=pvt_thr)}: {metric_text(metrics, key, unit).short(reason_chars)}")
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


def _voxel_slices(voxels: np.ndarray, nz: int) -> list[int]:
    """Slices holding the voxels, most populated first."""
    v = voxels[(voxels[:, 0] >= 0) & (voxels[:, 0] < nz)]
    if v.size == 0:
        return []
    zs, counts = np.unique(v[:, 0], return_counts=True)
    return [int(zs[i]) for i in np.argsort(-counts, kind="stable")]


# ----- raster drawing helpers of the Mode A figures -----


def _canvas(width_in: float, height_in: float) -> Canvas:
    return Canvas(width_in, height_in, DPI)


def _finish(cv: raster.Canvas, path: Path) -> Path:
    """Research-use note in the bottom-right corner (every QA image carries it), on a strip added below the
    figure so that it never covers a panel or a legend, then the PNG."""
    cv.extend_bottom(int(round(cv.pt(11))))
    cv.text(cv.fx(0.995), cv.fy(0.004), f"ctperf {__version__} - {DISCLAIMER}", 6.5, color="0.45", ha="right",
            va="bottom")
    return cv.save_png(path)


def fit_box(cv: raster.Drawing, rect: tuple[float, float, float, float], rows: int, cols: int,
         aspect: float) -> tuple[float, float, float, float]:
    """Pixel box (x0, y0, w, h) of an image of rows x cols pixels (pixel height/width ``aspect``) centred in a
    matplotlib-style figure-fraction rect [left, bottom, width, height], like ``imshow(aspect=...)``."""
    left, bottom, width, height = rect
    bx, by, bw, bh = cv.fx(left), cv.fy(bottom + height), width * cv.width, height * cv.height
    ratio = rows * aspect / cols  # displayed height / width
    w, h = (bw, bw * ratio) if bw * ratio <= bh else (bh / ratio, bh)
    return bx + (bw - w) / 2.0, by + (bh - h) / 2.0, w, h


def show_image(cv: raster.Drawing, img: np.ndarray, box, outline_mask: np.ndarray | None = None,
               color=HYPO_OUTLINE_COLOR, lw_px: int = 1) -> tuple[int, int, int, int]:
    """Paste an RGB image into ``box`` with an optional mask outline drawn at display resolution."""
    x0, y0, w, h = box
    k = cv.image_scale
    shown = raster.resize_nearest(img, (int(round(w * k)), int(round(h * k))))
    if outline_mask is not None and np.any(outline_mask):
        edge = raster.outline(raster.resize_nearest(np.asarray(outline_mask, bool), shown.shape[1::-1]), lw_px)
        shown = shown.copy()
        shown[edge] = raster.rgb(color)
    return cv.paste(shown, x0, y0, shown.shape[1] / k, shown.shape[0] / k)


def edge_letters(cv: raster.Drawing, box, orient: DisplayOrientation, size_pt: float, vertical: bool = False) -> None:
    """Patient-direction letters (yellow on black) at the left/right (and top/bottom) edges of an image box."""
    x0, y0, w, h = box
    style = dict(color="yellow", bold=True, box="black", box_pad_pt=size_pt * 0.12)
    cv.text(x0 + 0.02 * w, y0 + h / 2.0, orient.left, size_pt, ha="left", va="center", **style)
    cv.text(x0 + 0.98 * w, y0 + h / 2.0, orient.right, size_pt, ha="right", va="center", **style)
    if vertical:
        cv.text(x0 + w / 2.0, y0 + 0.02 * h, orient.top, size_pt, ha="center", va="top", **style)
        cv.text(x0 + w / 2.0, y0 + 0.98 * h, orient.bottom, size_pt, ha="center", va="bottom", **style)


def annotate_tiles(cv: raster.Drawing, box, mosaic: Mosaic, orient: DisplayOrientation, titles: list[str] | None,
                    size_pt: float, title_pt: float | None = None) -> None:
    """Edge letters inside every mosaic tile (in the box where the mosaic was drawn) and an optional title above
    each tile."""
    x0, y0, w, h = box
    rows, cols = mosaic.image.shape[:2]
    sx, sy = w / cols, h / rows
    th, tw = mosaic.tile_shape
    style = dict(color="yellow", bold=True, box="black", box_pad_pt=size_pt * 0.12)
    for i, (r0, c0) in enumerate(mosaic.origins):
        mid = y0 + (r0 + th / 2.0) * sy
        cv.text(x0 + (c0 + 0.03 * tw) * sx, mid, orient.left, size_pt, ha="left", va="center", **style)
        cv.text(x0 + (c0 + 0.97 * tw) * sx, mid, orient.right, size_pt, ha="right", va="center", **style)
        if titles:
            cv.text(x0 + (c0 + tw / 2.0) * sx, y0 + r0 * sy - 1, titles[i], title_pt or size_pt, ha="center",
                    va="bottom")


def _gray_rgb(img2d: np.ndarray) -> np.ndarray:
    """Brain-windowed (W80/L40) grey RGB uint8 of a HU image; NaN black."""
    return raster.colorize(img2d, raster.GRAY_LUT, *BRAIN_WINDOW_HU)


def map_rgb(img2d: np.ndarray, vmin: float, vmax: float) -> np.ndarray:
    """Turbo colours of a map image; NaN and values below ``vmin`` black (as :func:`map_cmap`)."""
    return raster.colorize(img2d, raster.TURBO_LUT, vmin, vmax, bad=(0, 0, 0), under=(0, 0, 0))


def _legend(cv: raster.Drawing, x: float, y: float, entries: list[tuple[Any, Any, str]], size_pt: float,
            title: str | None = None, title_pt: float | None = None, ncol: int = 1, col_gap_pt: float = 14.0,
            ha: str = "left") -> float:
    """Legend entries (fill colour or None, edge colour or None, label) from the top-left (x, y) in pixels; with
    ``ncol`` > 1 one row of entries centred on x when ``ha`` is 'center'.  Returns the y below the legend."""
    step = cv.pt(size_pt) * 1.25
    if title:
        cv.text(x, y, title, title_pt or size_pt, va="top")
        y += cv.pt(title_pt or size_pt) * 1.5
    if ncol > 1:
        widths = [cv.pt(size_pt * 2.4) + cv.text_width(label, size_pt) for _, _, label in entries]
        total = sum(widths) + cv.pt(col_gap_pt) * (len(widths) - 1)
        cx = x - total / 2.0 if ha == "center" else x
        for (fill, edge, label), wdt in zip(entries, widths):
            tx = cv.legend_patch(cx, y, fill, edge, size_pt) if fill is not None else cx + cv.pt(size_pt * 2.4)
            cv.text(tx, y, label, size_pt, va="center")
            cx += wdt + cv.pt(col_gap_pt)
        return y + step
    for fill, edge, label in entries:
        lines = label.count("\n") + 1
        tx = cv.legend_patch(x, y + cv.pt(size_pt) * 0.6, fill, edge, size_pt) if fill is not None \
            else x + cv.pt(size_pt * 2.4)
        cv.text(tx, y, label, size_pt, va="top", linespacing=1.15)
        y += step * lines + cv.pt(size_pt) * 0.45
    return y


def _curve_legend_rows(cv: raster.Drawing, legend: list[tuple[Any, bool, str]], width: float, lfs: float
                       ) -> list[list[tuple[Any, bool, str, float]]]:
    """Legend entries (colour, dotted, label) packed greedily into rows no wider than ``width``; each entry gets
    its width."""
    sample, pad, gap = cv.pt(lfs * 2.0), cv.pt(lfs * 0.6), cv.pt(lfs * 1.5)
    rows: list[list[tuple[Any, bool, str, float]]] = [[]]
    used = 0.0
    for color, dotted, label in legend:
        ew = sample + pad + cv.text_width(label, lfs)
        if rows[-1] and used + gap + ew > width:
            rows.append([])
            used = 0.0
        used += (gap if rows[-1] else 0.0) + ew
        rows[-1].append((color, dotted, label, ew))
    return rows


def _draw_curve_legend(cv: raster.Drawing, rows, x0: float, y0: float, lfs: float, lw: float, marker: bool) -> None:
    """Draw legend rows from (x0, y0), top left, outside the axes so that no curve is covered."""
    sample, pad, gap, step = cv.pt(lfs * 2.0), cv.pt(lfs * 0.6), cv.pt(lfs * 1.5), cv.pt(lfs) * 1.45
    for r, row in enumerate(rows):
        yy, xx = y0 + step * (r + 0.5), x0
        for color, dotted, label, ew in row:
            cv.line([(xx, yy), (xx + sample, yy)], color, width=lw, dash=cv.pt(1.0) if dotted else None)
            if marker and not dotted:
                cv.marker(xx + sample / 2, yy, cv.pt(1.25), color, filled=True)
            cv.text(xx + sample + pad, yy, label, lfs, va="center")
            xx += ew + gap


def plot_curves(cv: raster.Drawing, box, result: PerfusionResult, fs: float, lw_pt: float, marker: bool) -> None:
    """AIF and VOF delta-HU curves with their times to peak (dashed) in a pixel box, with axes, ticks, grid and
    axis labels.  The legend takes the top of the box, above the axes, so it never covers a curve's peak; the axes
    fill the rest (tick labels and axis titles are drawn outside the box, as before)."""
    x0, y0, w, h = box
    series, legend = [], []
    for curve, name, color in ((result.aif, "AIF", AIF_COLOR), (result.vof, "VOF", VOF_COLOR)):
        t = np.asarray(curve.time_s, float)
        y = np.asarray(curve.delta_hu, float)
        if t.size == 0 or y.size != t.size or not np.isfinite(y).any():
            legend.append((color, True, f"{name}: not available"))
            continue
        ttp = _safe_ttp(curve)
        legend.append((color, False, f"{name} (peak {float(np.nanmax(y)):.0f} HU"
                       + (f", TTP {ttp:.1f} s)" if ttp is not None else ")")))
        series.append((t, y, ttp, color))
    lfs = fs - 1
    rows = _curve_legend_rows(cv, legend, w, lfs)
    legend_h = cv.pt(lfs) * 1.45 * len(rows) + cv.pt(lfs * 0.5)
    _draw_curve_legend(cv, rows, x0, y0, lfs, max(1.0, cv.pt(lw_pt)), marker)
    y0, h = y0 + legend_h, h - legend_h
    xs = np.concatenate([t[np.isfinite(y)] for t, y, _, _ in series]) if series else np.array([0.0, 1.0])
    ys = np.concatenate([y[np.isfinite(y)] for _, y, _, _ in series]) if series else np.array([0.0, 1.0])
    xs = np.concatenate([xs, [s[2] for s in series if s[2] is not None]])
    (xlo, xhi), (ylo, yhi) = [(float(a.min()), float(a.max())) for a in (xs, ys)]
    xlo, xhi = (xlo - 0.5, xhi + 0.5) if xhi <= xlo else (xlo - 0.05 * (xhi - xlo), xhi + 0.05 * (xhi - xlo))
    ylo, yhi = (ylo - 0.5, yhi + 0.5) if yhi <= ylo else (ylo - 0.05 * (yhi - ylo), yhi + 0.05 * (yhi - ylo))

    def px(tv, yv):
        return x0 + (tv - xlo) / (xhi - xlo) * w, y0 + h - (yv - ylo) / (yhi - ylo) * h

    tick = cv.pt(3.5)
    for t_ in raster.nice_ticks(xlo, xhi, 10 if w > cv.inch(2.5) else 6):
        xx = px(t_, ylo)[0]
        cv.line([(xx, y0), (xx, y0 + h)], "#e6e6e6", width=cv.pt(0.7))
        cv.line([(xx, y0 + h), (xx, y0 + h + tick)], "black", width=cv.pt(0.7))
        cv.text(xx, y0 + h + tick + cv.pt(2), f"{t_:g}", fs - 1, ha="center", va="top")
    label_right = x0
    for v in raster.nice_ticks(ylo, yhi, 10 if h > cv.inch(2.5) else 6):
        yy = px(xlo, v)[1]
        cv.line([(x0, yy), (x0 + w, yy)], "#e6e6e6", width=cv.pt(0.7))
        cv.line([(x0 - tick, yy), (x0, yy)], "black", width=cv.pt(0.7))
        label_right = min(label_right, cv.text(x0 - tick - cv.pt(2), yy, f"{v:g}", fs - 1, ha="right",
                                               va="center")[0])
    lw = max(1.0, cv.pt(lw_pt))
    for t, y, ttp, color in series:
        if ttp is not None:
            xx = px(ttp, ylo)[0]
            cv.line([(xx, y0), (xx, y0 + h)], color, width=max(1.0, cv.pt(0.9)), dash=cv.pt(2.5))
        ok = np.isfinite(y)
        pts = [px(a, b) for a, b in zip(t[ok], y[ok])]
        if len(pts) > 1:
            cv.line(pts, color, width=lw)
        if marker:
            for a, b in pts:
                cv.marker(a, b, cv.pt(1.25), color, filled=True)
    cv.rect(x0, y0, x0 + w, y0 + h, edge="black", width=cv.pt(0.8))
    cv.text(x0 + w / 2.0, y0 + h + tick + cv.pt(fs + 4), "time (s)", fs, ha="center", va="top")
    cv.text(label_right - cv.pt(4), y0 + h / 2.0, "\u0394HU", fs, ha="right", va="center", rotation=90)


# ----- figures -----


def fig_aif_vof(result: PerfusionResult, metrics: dict, path: Path) -> Path:
    base = np.asarray(result.baseline_hu)  # slices are converted one by one
    nz = base.shape[0]
    orient = display_orientation(result.affine_ras, base.shape)
    aif_vox, vof_vox = result.aif.voxels, result.vof.voxels
    aif_z, vof_z = _voxel_slices(aif_vox, nz), _voxel_slices(vof_vox, nz)
    slices = []
    for z in (aif_z[:1] + vof_z[:1]):
        if z not in slices:
            slices.append(z)
    n_img = max(1, len(slices))

    cv = _canvas(5.2 + 3.4 * n_img, 4.8)
    # grid of 1 + n_img columns (width ratios 1.55 : 1 : ...) between x = 0.06 and 0.99, y = 0.2 and 0.86
    ratios = [1.55] + [1.0] * n_img
    cell = 0.93 / (sum(ratios) + 0.12 * (len(ratios) - 1) * sum(ratios) / len(ratios))
    gap = 0.12 * cell * sum(ratios) / len(ratios)
    lefts = [0.06 + sum(ratios[:i]) * cell + i * gap for i in range(len(ratios))]
    bottom, height = 0.2, 0.66
    cx, cw = lefts[0], ratios[0] * cell
    curve_box = (cv.fx(cx), cv.fy(bottom + height), cw * cv.width, height * cv.height)
    plot_curves(cv, curve_box, result, 9.0, 1.6, marker=True)
    qa_values = (metrics or {}).get("qa_values") or {}
    drawn = ["your mask" if qa_values.get(f"{name}_source") == "mask" else "automatic" for name in ("aif", "vof")]
    title = ("Arterial input (AIF) and venous output (VOF)" if drawn == ["automatic"] * 2 else
             f"Arterial input (AIF, {drawn[0]}) and venous output (VOF, {drawn[1]})")
    cv.text(curve_box[0] + curve_box[2] / 2.0, curve_box[1] - cv.pt(5), title, 10, ha="center", va="bottom")
    lines = pvt_lines(result, metrics)
    # Venous transit readout under the curves (never over them).
    transit = cv.wrap("Venous transit:  " + "   \u00b7   ".join(lines), 8, cv.fx(0.93))
    cv.text(cv.fx(0.06), cv.fy(0.025), transit, 8, color="#b00000" if pvt_positive(result, metrics) else "black",
            va="bottom")

    shape_yx = base.shape[1:]
    rect = [(lefts[1 + i], bottom, cell, height) for i in range(n_img)]
    if not slices:
        x0, y0, w, h = cv.fx(rect[0][0]), cv.fy(bottom + height), cell * cv.width, height * cv.height
        cv.rect(x0, y0, x0 + w, y0 + h, fill="black")
        cv.text(x0 + w / 2.0, y0 + h / 2.0, "AIF/VOF voxel positions\nnot available", 9, color="white",
                ha="center", va="center")
    for i, z in enumerate(slices):
        img = orient.image(base[z])
        box = fit_box(cv, rect[i], img.shape[0], img.shape[1], orient.aspect)
        show_image(cv, _gray_rgb(img), box)
        x0, y0, w, h = box
        sx, sy = w / img.shape[1], h / img.shape[0]
        entries = []
        for vox, color, marker, name in ((aif_vox, AIF_COLOR, "o", "AIF"), (vof_vox, VOF_COLOR, "s", "VOF")):
            sel = vox[vox[:, 0] == z]
            if not len(sel):
                continue
            for _, y, x in sel:
                c, rr = orient.point(y, x, shape_yx)
                cv.marker(x0 + (c + 0.5) * sx, y0 + (rr + 0.5) * sy, cv.pt(3.4), color, marker, cv.pt(1.6))
            entries.append((marker, color, f"{name} ({len(sel)}/{len(vox)} voxels)"))
        edge_letters(cv, box, orient, 8, vertical=True)
        cv.text(x0 + w / 2.0, y0 - cv.pt(5), f"baseline, slice {z} (S {orient.slice_s_mm[z]:+.0f} mm), W80/L40",
                8.5, ha="center", va="bottom")
        if entries:  # marker legend centred under the image
            widths = [cv.pt(7 * 2.6) + cv.text_width(label, 7) for *_, label in entries]
            lx = x0 + w / 2.0 - (sum(widths) + cv.pt(10) * (len(widths) - 1)) / 2.0
            ly = y0 + h + cv.pt(14)
            for (marker, color, label), wd in zip(entries, widths):
                cv.marker(lx + cv.pt(7), ly, cv.pt(3.4), color, marker, cv.pt(1.6))
                cv.text(lx + cv.pt(7 * 2.6), ly, label, 7, va="center")
                lx += wd + cv.pt(10)
    cv.text(cv.fx(0.06), cv.fy(0.975), "QA: AIF / VOF", 12, bold=True, va="top")
    return _finish(cv, path)


def fig_tmax_mip(result: PerfusionResult, lesion: LesionMasks, metrics: dict, path: Path) -> Path:
    tmax = np.asarray(result.tmax)
    orient = display_orientation(result.affine_ras, tmax.shape)
    # Project brain parenchyma only: Tmax in CSF and large vessels is not meaningful and would dominate a MIP.
    tissue = _tissue_mask(result, tmax.shape)
    restricted = tissue is not None
    mip = orient.image(_nanmax_z(np.where(tissue, tmax, np.nan) if restricted else tmax))
    hypo = orient.image(as_bool_mask(lesion.hypoperfusion, tmax.shape).any(axis=0))

    cv = _canvas(6.4, 6.0)
    cv.text(cv.fx(0.04), cv.fy(0.955), "Tmax maximum-intensity projection (axial)", 12, bold=True)
    # the subtitle wraps within the figure; the image starts below its last line
    sub_bottom = _subtitle(cv, cv.fx(0.04), cv.fy(0.94), _tmax_mip_subtitle(metrics, bool(hypo.any())), 9,
                           cv.fx(0.96))
    top = min(0.88, 1.0 - sub_bottom / cv.height - 0.01)
    box = fit_box(cv, (0.04, 0.08, 0.78, top - 0.08), mip.shape[0], mip.shape[1], orient.aspect)
    show_image(cv, map_rgb(mip, *TMAX_RANGE_S), box, hypo, lw_px=2)
    edge_letters(cv, box, orient, 10, vertical=True)
    cv.colorbar(cv.fx(0.85), cv.fy(0.81), 0.035 * cv.width, 0.66 * cv.height, raster.TURBO_LUT, *TMAX_RANGE_S,
                "Tmax (s)", 9, 10)
    scope = "brain tissue (CSF and large vessels excluded)" if restricted else "all voxels"
    cv.text(cv.fx(0.04), cv.fy(0.015), f"Projected: {scope}; black: outside / unknown.\n"
            "Radiological convention: patient right on image left.", 7.5, color="0.3", va="bottom")
    return _finish(cv, path)


def _tmax_mip_subtitle(metrics: dict, drawn: bool) -> str:
    """The Tmax MIP's subtitle: what the outline shows (or why there is none) and the hypoperfusion volume."""
    hypo = volume_text(metrics, KEYS_HYPO)
    if drawn:
        return f"{hypo_outline_caption(metrics, True)} hypoperfusion, {hypo.short()}"
    return hypo_outline_caption(metrics, False, SHORT_REASON_CHARS)


def _subtitle(cv: raster.Drawing, x: float, y_top: float, text: str, size_pt: float, max_width: float) -> float:
    """Draw ``text`` wrapped to ``max_width`` device units from (x, y_top); returns the y of its bottom."""
    return cv.text(x, y_top, cv.wrap(text, size_pt, max_width - x), size_pt, va="top")[3]


#: The hypoperfusion swatch: the white outline drawn on the images, shown on the images' black background.
HYPO_SWATCH = ("black", HYPO_OUTLINE_COLOR)


def _volume_rows(metrics: dict, hypo_drawn: bool) -> list[tuple[Any, Any, str, MetricText]]:
    """(fill, edge, caption, value) of the core / penumbra / hypoperfusion / mismatch legend; the hypoperfusion
    swatch only when its outline is drawn on the images."""
    t_thr, rcbf = thresholds_from(metrics)
    hypo_fill, hypo_edge = HYPO_SWATCH if hypo_drawn else (None, None)
    outline = "white outline" if hypo_drawn else "no outline"
    return [
        (CORE_COLOR, None, f"Core (rCBF < {rcbf * 100:g}%)", volume_text(metrics, KEYS_CORE)),
        (PENUMBRA_COLOR, None, "Penumbra", volume_text(metrics, KEYS_PENUMBRA)),
        (hypo_fill, hypo_edge, f"Hypoperfusion (Tmax > {_g(t_thr)} s, {outline})", volume_text(metrics, KEYS_HYPO)),
        (None, None, "Mismatch volume", mismatch_volume_text(metrics)),
        (None, None, "Mismatch ratio", metric_text(metrics, KEYS_MISMATCH_RATIO, "", 2)),
    ]


def core_penumbra_legend(metrics: dict, reasons: bool = True, hypo_drawn: bool = True) -> list[tuple[Any, Any, str]]:
    """(fill colour or None, edge colour or None, label) of the core / penumbra / hypoperfusion legend; a missing
    value reads "n/a (<short reason>)", or with ``reasons`` False "n/a (see metrics.json)" (one-row legends)."""

    def shown(txt: MetricText) -> str:
        return txt.short() if reasons or txt.available else "n/a (see metrics.json)"

    return [(fill, edge, f"{caption}: {shown(txt)}") for fill, edge, caption, txt in _volume_rows(metrics, hypo_drawn)]


def footnoted_legend(metrics: dict, hypo_drawn: bool = True) -> tuple[list[tuple[Any, Any, str]], list[str]]:
    """The legend with each distinct reason for a missing value written once, as a note under it.

    Entries read "n/a" (one reason) or "n/a (1)", "n/a (2)" (several); the notes are "n/a: <short reason>" or
    "(1) <short reason>", then where the full reasons are.
    """
    rows = _volume_rows(metrics, hypo_drawn)
    reasons: list[str] = []
    for *_, txt in rows:
        why = short_reason(txt.reason, 48) if not txt.available else ""
        if why and why not in reasons:
            reasons.append(why)
    marks, notes = reason_notes(reasons)
    entries = []
    for fill, edge, caption, txt in rows:
        why = short_reason(txt.reason, 48) if not txt.available else ""
        mark = marks[reasons.index(why)] if why else ""
        entries.append((fill, edge, f"{caption}: {txt.full() if txt.available else 'n/a' + mark}"))
    if any(not txt.available for *_, txt in rows):
        notes.append("full reasons in metrics.json")
    if lesion_beyond_coverage(metrics):
        notes.append(LOWER_BOUND_NOTE)
    return entries, notes


def fig_core_penumbra_mip(result: PerfusionResult, lesion: LesionMasks, metrics: dict, path: Path) -> Path:
    shape = np.asarray(result.tmax).shape
    orient = display_orientation(result.affine_ras, shape)
    core = as_bool_mask(lesion.core, shape).any(axis=0)
    pen = as_bool_mask(lesion.penumbra, shape).any(axis=0)
    hypo = orient.image(as_bool_mask(lesion.hypoperfusion, shape).any(axis=0))
    img = raster.to_uint8(composite_rgb(orient.image(_windowed_mean_z(result.baseline_hu)), orient.image(core),
                                        orient.image(pen & ~core)))

    cv = _canvas(9.0, 5.6)
    box = fit_box(cv, (0.02, 0.06, 0.52, 0.82), img.shape[0], img.shape[1], orient.aspect)
    show_image(cv, img, box, hypo, lw_px=1)
    edge_letters(cv, box, orient, 10, vertical=True)
    entries, notes = footnoted_legend(metrics, bool(hypo.any()))
    # Wrap long labels but never between a number and its unit; each distinct reason once, under the legend.
    x_legend, width = cv.fx(0.565), cv.fx(0.41)
    entries = [(fill, edge, cv.wrap(label.replace(" mL", "\u00a0mL"), 9, width - cv.pt(9 * 2.4)).replace("\n", "\n   "))
               for fill, edge, label in entries]
    bottom = _legend(cv, x_legend, cv.fy(0.82), entries, 9, title="Volumes", title_pt=10)
    if notes:
        cv.text(x_legend, bottom + cv.pt(4), cv.wrap("\n".join(notes), 8, width), 8, color="0.3", va="top",
                italic=True)
    cv.text(cv.fx(0.02), cv.fy(0.945), "Core / penumbra projection (axial)", 12, bold=True)
    outline = "white outline: hypoperfusion" if hypo.any() else hypo_outline_caption(metrics, False, SHORT_REASON_CHARS)
    cv.text(cv.fx(0.02), cv.fy(0.905), "overlays projected through all slices over the mean brain-windowed baseline "
            f"(W80/L40); {outline}", 7.5, color="0.25")
    # under the image, apart from the legend and its notes
    cv.text(cv.fx(0.02), cv.fy(0.012), "Radiological convention: patient right on image left.", 7.5, color="0.3",
            va="bottom")
    return _finish(cv, path)


def core_penumbra_mosaic(result: PerfusionResult, lesion: LesionMasks, orient: DisplayOrientation,
                         slices: list[int], cols: int, max_px: int) -> tuple[Mosaic, Mosaic]:
    """RGB mosaic of baseline + core/penumbra, and the matching mosaic of the hypoperfusion mask."""
    base = np.asarray(result.baseline_hu)  # slices are converted one by one
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
    cv = _canvas(fig_w, height_img + 1.2)
    box = (cv.inch((fig_w - img_w) / 2), cv.inch(0.7), cv.inch(img_w), cv.inch(height_img))
    box = show_image(cv, raster.to_uint8(rgb.image), box, hypo.image > 0.5, lw_px=1)
    annotate_tiles(cv, box, rgb, orient, [slice_title(orient, z) for z in slices], 6, title_pt=7)
    cv.text(cv.fx(0.01), cv.inch(0.3), "Core / penumbra by slice (inferior \u2192 superior)", 11, bold=True,
            va="center")
    _legend(cv, cv.width / 2.0, cv.height - cv.pt(12),
            core_penumbra_legend(metrics, reasons=False, hypo_drawn=bool(np.any(hypo.image > 0.5)))[:3], 7.5, ncol=3,
            ha="center")
    return _finish(cv, path)


def fig_maps_montage(result: PerfusionResult, metrics: dict, path: Path) -> Path:
    shape = np.asarray(result.tmax).shape
    orient = display_orientation(result.affine_ras, shape)
    slices = pick_slices(result, orient, 8)
    n = max(len(slices), 1)

    tile = 1.3
    first = map_mosaic(np.asarray(result.tmax), orient, slices, n, MONTAGE_MAX_PX)
    row_h = tile * orient.aspect * first.tile_shape[0] / first.tile_shape[1]
    label_w, cbar_w = 0.45, 0.95
    img_w = n * tile
    fig_w = max(img_w + label_w + cbar_w, 6.5)  # room for the title even with few slices
    foot = 0.08  # below the last row (the research-use note gets its own strip, see _finish)
    fig_h = 4 * (row_h + 0.08) + 0.75
    cv = _canvas(fig_w, fig_h)
    for r, (attr, label, unit, vmin, vmax) in enumerate(MAP_SPECS):
        vol = np.asarray(getattr(result, attr))
        mosaic = first if attr == "tmax" else map_mosaic(vol, orient, slices, n, MONTAGE_MAX_PX)
        top = cv.inch(fig_h - (foot + (3 - r) * (row_h + 0.08) + row_h))
        box = show_image(cv, map_rgb(mosaic.image, vmin, vmax), (cv.inch(label_w), top, cv.inch(img_w), cv.inch(row_h)))
        titles = [slice_title(orient, z) for z in slices] if r == 0 else None
        annotate_tiles(cv, box, mosaic, orient, titles, 5.5, title_pt=6.5)
        cv.text(cv.inch(0.5 * label_w), top + cv.inch(row_h / 2), label, 10, bold=True, ha="center", va="center",
                rotation=90)
        cv.colorbar(cv.inch(label_w + img_w + 0.1), top + cv.inch(0.05 * row_h), cv.inch(0.1), cv.inch(0.9 * row_h),
                    raster.TURBO_LUT, vmin, vmax, unit, 6.5, 7, extend_max=True)
    cv.text(cv.fx(0.01), cv.inch(0.25), "Perfusion maps (fixed display ranges; black = outside brain / unknown)",
            10.5, bold=True, va="center")
    return _finish(cv, path)


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
    fig.text(0.02, 0.915, f"{reg}; {metric_text(metrics, KEYS_HYPO, 'mL').short()} hypoperfusion in the ROI footprint",
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
