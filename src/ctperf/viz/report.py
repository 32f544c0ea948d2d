"""One-page A4 PDF summary of a study, laid out like the summary page clinicians know from commercial tools.

Contents (top to bottom): title with software and definition versions; headline numbers (core, Tmax
hypoperfusion, mismatch volume and ratio, HIR, CBV index); a row of core/penumbra key images; a row of Tmax key
images; Tmax level volumes, an AIF/VOF thumbnail and the QA flags; the research-use disclaimer in the footer.

No patient identifiers are printed (none are passed in). The page is laid out once (:func:`build_page`) and drawn
as a vector PDF with ReportLab (:mod:`ctperf.viz.pdf_canvas`) or as an image with Pillow (:mod:`ctperf.viz.raster`,
for the DICOM screen capture); matplotlib is not used (its import and text layout cost most of a run's write time).
"""

from __future__ import annotations

import textwrap
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ctperf import DISCLAIMER, __version__
from ctperf.core.constants import DEFINITION_VERSION
from ctperf.core.orientation import display_orientation
from ctperf.core.types import LesionMasks, PerfusionResult, spacing_xyz_mm, voxel_volume_ml
from ctperf.viz import raster
from ctperf.viz.qa_figures import (
    CORE_COLOR,
    KEYS_CORE,
    KEYS_HIR,
    KEYS_HYPO,
    KEYS_MISMATCH_RATIO,
    PENUMBRA_COLOR,
    TMAX_RANGE_S,
    MetricText,
    annotate_tiles,
    as_bool_mask,
    cbv_index_text,
    core_penumbra_mosaic,
    decimation_step,
    fit_box,
    make_mosaic,
    map_mosaic,
    map_rgb,
    metric_text,
    mismatch_volume_text,
    pick_slices,
    plot_curves,
    pvt_lines,
    pvt_positive,
    qa_flags_of,
    show_image,
    slice_title,
    threshold,
    thresholds_from,
    tmax_level_volumes,
)
from ctperf.viz.raster import Drawing

A4_IN = (8.27, 11.69)
N_KEY_IMAGES = 6
KEY_IMAGE_PX = 128
MARGIN = 0.045
RED = "#c00000"


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _number_box(cv: Drawing, rect, title: str, txt: MetricText, color: str) -> None:
    """A headline figure: small caption, big value (or n/a plus the reason), unit.  ``rect`` in page fractions."""
    x, y, w, h = rect
    cv.rect(cv.fx(x), cv.fy(y + h), cv.fx(x + w), cv.fy(y), fill="#f4f5f7", edge="#c8ccd2", width=cv.pt(0.8),
            radius=cv.pt(4.7))
    cv.text(cv.fx(x + 0.012), cv.fy(y + h - 0.012), title, 8.5, color="0.25", va="top")
    if txt.available:
        cv.text(cv.fx(x + w / 2), cv.fy(y + h * 0.38), txt.value, 26, bold=True, color=color, ha="center",
                va="center")
        if txt.unit:
            cv.text(cv.fx(x + w - 0.012), cv.fy(y + 0.01), txt.unit, 9, color="0.3", ha="right", va="bottom")
    else:
        cv.text(cv.fx(x + w / 2), cv.fy(y + h * 0.5), "n/a", 22, bold=True, color="0.55", ha="center", va="center")
        if txt.reason:
            reason = textwrap.wrap(txt.reason, 46)
            if len(reason) > 2:
                reason = [reason[0], _short(" ".join(reason[1:]), 46)]
            cv.text(cv.fx(x + w / 2), cv.fy(y + 0.008), "\n".join(reason), 6.8, color="0.35", ha="center",
                    va="bottom", italic=True, linespacing=1.15)


def _legend_swatch(cv: Drawing, x: float, y: float, color, text: str) -> None:
    cv.rect(cv.fx(x), cv.fy(y + 0.004), cv.fx(x + 0.012), cv.fy(y - 0.004), fill=color)
    cv.text(cv.fx(x + 0.017), cv.fy(y), text, 7.5, va="center")


def _section_title(cv: Drawing, x: float, y: float, text: str) -> None:
    cv.text(cv.fx(x), cv.fy(y), text, 10, bold=True, color="#1a2a40", va="bottom")


def _key_image_row(cv: Drawing, result, lesion, orient, slices, y: float, height: float, kind: str) -> None:
    """One row of key slices drawn as a single mosaic (core/penumbra overlay, or Tmax with its outline)."""
    if not slices:
        return
    n = len(slices)
    width = (1 - 2 * MARGIN - 0.05) / N_KEY_IMAGES
    x0 = MARGIN + (N_KEY_IMAGES - n) * width / 2
    rect = (x0, y, n * width, height)
    if kind == "core":
        mosaic, _ = core_penumbra_mosaic(result, lesion, orient, slices, n, KEY_IMAGE_PX)
        img = raster.to_uint8(mosaic.image)
        box = fit_box(cv, rect, img.shape[0], img.shape[1], orient.aspect)
        box = show_image(cv, img, box)
    else:
        tmax = np.asarray(result.tmax)
        mosaic = map_mosaic(tmax, orient, slices, n, KEY_IMAGE_PX)
        hypo_vol = as_bool_mask(lesion.hypoperfusion, tmax.shape)
        stride = decimation_step(tmax.shape[1:], KEY_IMAGE_PX)
        hypo = make_mosaic([orient.image(hypo_vol[z])[::stride, ::stride].astype(float) for z in slices], n,
                           fill=0.0)
        box = fit_box(cv, rect, *mosaic.image.shape[:2], orient.aspect)
        box = show_image(cv, map_rgb(mosaic.image, *TMAX_RANGE_S), box, hypo.image > 0.5)
        cv.colorbar(cv.fx(1 - MARGIN - 0.018), cv.fy(y + 0.9 * height), cv.fx(0.012), 0.8 * height * cv.height,
                    raster.TURBO_LUT, *TMAX_RANGE_S, "Tmax (s)", 6, 6.5)
    annotate_tiles(cv, box, mosaic, orient, [slice_title(orient, z, with_index=False) for z in slices], 5.5,
                   title_pt=6)


def _tmax_levels_panel(cv: Drawing, rect, result, lesion, metrics, t_thr: float) -> None:
    """Horizontal bars of the volume above each Tmax level (values read from the metrics document)."""
    rows = tmax_level_volumes(result, lesion, metrics)
    if not rows:
        return
    x, y, w, h = rect
    x0, top, width, height = cv.fx(x), cv.fy(y + h), w * cv.width, h * cv.height
    values = [float(t.value) if t.available and t.value.replace(".", "", 1).isdigit() else 0.0 for _, t in rows]
    vmax = max(values + [1.0]) * 1.6
    step = height / len(rows)
    for i, ((level, t), v) in enumerate(zip(rows, values)):
        yc = top + (i + 0.5) * step
        color = "#2e9d4a" if abs(level - t_thr) < 1e-6 else "#7f9fbf"
        if v > 0:
            cv.rect(x0, yc - 0.3 * step, x0 + v / vmax * width, yc + 0.3 * step, fill=color)
        cv.text(x0 + (v / vmax + 0.03 / 1.6) * width, yc, t.full() if t.available else "n/a", 7.5, va="center")
        cv.text(x0 - cv.pt(3.5), yc, f"Tmax \u2265 {level:g} s", 7.5, ha="right", va="center")
    cv.line([(x0, top), (x0, top + height)], "black", width=cv.pt(0.8))


def _qa_panel(cv: Drawing, x: float, y_top: float, result: PerfusionResult, metrics: dict) -> None:
    """Raised QA flags in red first, then the passed checks, then the venous-transit (PVT) readout."""
    flags = qa_flags_of(result, metrics)
    raised = [k for k, v in flags.items() if v]
    passed = [k for k, v in flags.items() if not v]
    max_lines = 8
    lines: list[tuple[str, str]] = [(f"FLAG  {_short(k, 34)}", RED) for k in raised]
    pvt = pvt_lines(result, metrics)
    room = max(max_lines - len(lines) - len(pvt) - 1, 0)
    if len(passed) <= room:
        lines += [(f"ok    {_short(k, 34)}", "#2e7d32") for k in passed]
    elif passed:
        lines += [(f"ok    {_short(k, 34)}", "#2e7d32") for k in passed[: max(room - 1, 0)]]
        lines.append((f"ok    {len(passed) - max(room - 1, 0)} further checks", "#2e7d32"))
    if not flags:
        lines.append(("no QA flags reported", "0.3"))
    pvt_color = RED if pvt_positive(result, metrics) else "0.2"
    for text in pvt:
        wrapped = textwrap.wrap(text, 36, subsequent_indent="  ")
        lines += [(part, pvt_color) for part in wrapped]
    if len(lines) > max_lines:
        lines = lines[: max_lines - 1] + [(f"\u2026 {len(lines) - max_lines + 1} more in metrics.json", "0.3")]
    summary = f"{len(raised)} QA flag(s) raised" if raised else "no QA flag raised"
    cv.text(cv.fx(x), cv.fy(y_top), summary, 8.5, bold=True, color=RED if raised else "#2e7d32", va="top")
    for i, (text, color) in enumerate(lines):
        cv.text(cv.fx(x), cv.fy(y_top - 0.02 - i * 0.0145), text, 7.0, color=color, va="top", mono=True)


def _definition_version(metrics: dict) -> str:
    value = (metrics or {}).get("definition_version")
    return str(value) if value not in (None, "") else DEFINITION_VERSION


def _details(result: PerfusionResult, metrics: dict) -> list[tuple[str, str]]:
    """Acquisition-independent facts about the analysis (no identifiers)."""
    spacing = spacing_xyz_mm(result.affine_ras)
    nz, ny, nx = np.asarray(result.tmax).shape
    brain = as_bool_mask(result.masks.brain, (nz, ny, nx))
    rows = [
        ("map grid (x, y, z)", f"{nx} x {ny} x {nz} voxels"),
        ("voxel size", f"{spacing[0]:.2f} x {spacing[1]:.2f} x {spacing[2]:.2f} mm"),
        ("brain volume", f"{np.count_nonzero(brain) * voxel_volume_ml(result.affine_ras):.0f} mL"),
        ("AIF / VOF voxels", f"{len(np.reshape(result.aif.voxels_zyx, (-1, 3)))} / "
                             f"{len(np.reshape(result.vof.voxels_zyx, (-1, 3)))}"),
    ]
    for name, curve in (("AIF", result.aif), ("VOF", result.vof)):
        y = np.asarray(curve.delta_hu, float)
        if y.size and np.isfinite(y).any():
            rows.append((f"{name} peak / TTP", f"{np.nanmax(y):.0f} HU / {curve.ttp_s:.1f} s"))
    for key, label in (("DEFUSE3_eligible", "DEFUSE 3 imaging criteria"),
                       ("EXTEND_eligible", "EXTEND imaging criteria")):
        value = (metrics or {}).get(key)
        if isinstance(value, bool):
            rows.append((label, "met" if value else "not met"))
        elif key in (metrics or {}):  # null with its reason (thresholds, lesion pattern, reference, noise)
            reason = str(metrics.get(f"{key}_reason") or "")
            if "this run: " in reason:  # non-trial thresholds: the thresholds that differ are the point
                reason = "this run: " + reason.split("this run: ", 1)[1]
            rows.append((label, f"n/a ({_short(reason, 34)})" if reason else "n/a"))
    if result.stage_seconds:
        rows.append(("processing time", f"{sum(float(v) for v in result.stage_seconds.values()):.1f} s"))
    for key, value in (result.qa_values or {}).items():
        # Numbers only: QA values are measurements; free text is left to metrics.json.
        if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_)):
            text = f"{float(value):.3g}" if isinstance(value, (float, np.floating)) else str(value)
            rows.append((_short(str(key), 30), text))
    return rows


def _details_panel(cv: Drawing, y_top: float, result: PerfusionResult, metrics: dict) -> None:
    _section_title(cv, MARGIN, y_top, "Analysis details")
    rows = _details(result, metrics)
    per_col = 8
    rows = rows[: 2 * per_col]
    for i, (key, value) in enumerate(rows):
        col, r = divmod(i, per_col)
        x = MARGIN + col * 0.46
        yy = cv.fy(y_top - 0.018 - r * 0.0145)
        cv.text(cv.fx(x), yy, key, 7.2, color="0.35", va="center")
        cv.text(cv.fx(x + 0.2), yy, value, 7.2, color="0.1", va="center")


def _hline(cv: Drawing, y: float, color, lw_pt: float) -> None:
    cv.line([(cv.fx(MARGIN), cv.fy(y)), (cv.fx(1 - MARGIN), cv.fy(y))], color, width=cv.pt(lw_pt))


def build_page(cv: Drawing, result: PerfusionResult, lesion: LesionMasks, metrics: dict) -> None:
    """Lay the summary page out on ``cv`` (an A4 :class:`ctperf.viz.raster.Canvas` or
    :class:`ctperf.viz.pdf_canvas.PdfCanvas`); positions are page fractions from the bottom left."""
    t_thr, rcbf = thresholds_from(metrics)
    orient = display_orientation(result.affine_ras, np.asarray(result.tmax).shape)
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")

    def text(x, y, s, size, **kw):
        return cv.text(cv.fx(x), cv.fy(y), s, size, **kw)

    # Header
    text(MARGIN, 0.962, "ctperf summary", 22, bold=True, color="#1a2a40", va="center")
    text(1 - MARGIN, 0.970, f"ctperf {__version__}  \u00b7  definitions v{_definition_version(metrics)}", 9,
         ha="right", va="center", color="0.2")
    study = (metrics or {}).get("study_id")
    text(1 - MARGIN, 0.954, (f"study {study}  \u00b7  " if study else "") + f"generated {now}", 8, ha="right",
         va="center", color="0.35")
    # from the metrics document: where the lesion is not measured its side is null ("n/a"), and so is the reference
    m = metrics or {}
    side = {"left": "left", "right": "right", "none": "none detected"}.get(str(m.get("lesion_side")), "n/a")
    if m.get("lesion_side_reason"):  # bilateral, posterior, a global delay: no side is named, for a reason
        side = "n/a"
    ref = (m.get("qa_values") or {}).get("reference_cbf_ml_100g_min")
    measured = not (m.get("qa_flags") or {}).get("lesion_unmeasured")
    ref_txt = (f"{ref:.1f} mL/100g/min" if measured and isinstance(ref, (int, float)) and np.isfinite(ref)
               else "n/a")
    text(MARGIN, 0.934, f"Affected hemisphere: {side}   \u00b7   reference CBF: {ref_txt}   \u00b7   core: rCBF "
         f"< {rcbf * 100:g}%   \u00b7   hypoperfusion: Tmax > {t_thr:g} s", 8.2, color="0.2", va="center")
    _hline(cv, 0.922, "#1a2a40", 1.2)

    # Headline numbers
    boxes = [
        (f"Core (rCBF < {rcbf * 100:g}%)", metric_text(metrics, KEYS_CORE, "mL"), "#b0106a"),
        (f"Hypoperfusion (Tmax > {t_thr:g} s)", metric_text(metrics, KEYS_HYPO, "mL"), "#1f7a34"),
        ("Mismatch volume", mismatch_volume_text(metrics), "#1a2a40"),
        ("Mismatch ratio", metric_text(metrics, KEYS_MISMATCH_RATIO, "", 2), "#1a2a40"),
        (f"HIR (Tmax \u2265 {threshold(metrics, 'hir_tmax_s'):g} s / Tmax \u2265 {t_thr:g} s)",
         metric_text(metrics, KEYS_HIR, "", 2), "#1a2a40"),
        (*cbv_index_text(metrics), "#1a2a40"),
    ]
    gap = 0.012
    bw = (1 - 2 * MARGIN - 2 * gap) / 3
    bh = 0.082
    for i, (title, txt, color) in enumerate(boxes):
        r, c = divmod(i, 3)
        _number_box(cv, (MARGIN + c * (bw + gap), 0.828 - r * (bh + gap), bw, bh), title, txt, color)

    # Key images: square tiles as wide as the row allows
    slices = pick_slices(result, orient, N_KEY_IMAGES)
    tile_w = (1 - 2 * MARGIN - 0.05) / N_KEY_IMAGES
    img_h = min(tile_w * A4_IN[0] / A4_IN[1] * orient.aspect, 0.12)
    y = 0.700
    _section_title(cv, MARGIN, y, "Core (magenta) and penumbra (green)")
    text(1 - MARGIN, y + 0.001, f"radiological view: patient {orient.left} on image left", 7, color="0.35",
         ha="right", va="bottom")
    y -= img_h + 0.016
    _key_image_row(cv, result, lesion, orient, slices, y, img_h, "core")
    y -= 0.014
    # each entry within its 0.3 page width (a missing value's reason is in the number boxes above)
    _legend_swatch(cv, MARGIN, y, CORE_COLOR, _short(f"core {metric_text(metrics, KEYS_CORE, 'mL').full()}", 44))
    _legend_swatch(cv, MARGIN + 0.3, y, PENUMBRA_COLOR,
                   _short(f"penumbra {metric_text(metrics, ('penumbra_ml',), 'mL').full()}", 44))
    y -= 0.03
    _section_title(cv, MARGIN, y, f"Tmax (white outline: Tmax > {t_thr:g} s)")
    y -= img_h + 0.016
    _key_image_row(cv, result, lesion, orient, slices, y, img_h, "tmax")

    # Bottom panels
    y -= 0.02
    _hline(cv, y, "0.75", 0.8)
    y -= 0.03
    panel_h = y - 0.012 - 0.24
    _section_title(cv, MARGIN, y, "Tmax volumes")
    _tmax_levels_panel(cv, [MARGIN + 0.075, y - 0.012 - panel_h, 0.22, panel_h], result, lesion, metrics, t_thr)
    _section_title(cv, 0.375, y, "AIF / VOF")
    top = y - 0.012 - panel_h + 0.025 + (panel_h - 0.025)
    plot_curves(cv, (cv.fx(0.415), cv.fy(top), 0.255 * cv.width, (panel_h - 0.025) * cv.height), result, 6.5, 1.2,
                marker=False)
    _section_title(cv, 0.71, y, "QA")
    _qa_panel(cv, 0.71, y - 0.008, result, metrics)
    _details_panel(cv, 0.205, result, metrics)

    # Footer
    _hline(cv, 0.062, "0.75", 0.8)
    text(0.5, 0.045, DISCLAIMER, 9, bold=True, color=RED, ha="center", va="center")
    text(0.5, 0.027, "Automatic research analysis; volumes and indices follow the ctperf definitions "
         f"v{_definition_version(metrics)}. Review the QA figures before using any number.", 6.5, color="0.35",
         ha="center", va="center")
    text(1 - MARGIN, 0.012, "page 1/1", 6.5, color="0.45", ha="right", va="center")


def render_summary_page(result: PerfusionResult, lesion: LesionMasks, metrics: dict, dpi: float) -> np.ndarray:
    """The summary page as an RGB uint8 array (rows, columns, 3) at ``dpi`` (same layout as the PDF)."""
    cv = raster.Canvas(*A4_IN, dpi)
    build_page(cv, result, lesion, metrics or {})
    return np.array(cv.image)


def write_summary_pdf(result: PerfusionResult, lesion: LesionMasks, metrics: dict, pdf_path: Path) -> Path:
    """Write the one-page A4 summary PDF and return its path (parent folders are created)."""
    from ctperf.viz.pdf_canvas import PdfCanvas

    pdf_path = Path(pdf_path)
    pdf_path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {
        "Title": "ctperf summary",
        "Subject": DISCLAIMER,
        "Creator": f"ctperf {__version__} (definitions v{_definition_version(metrics)})",
        "Keywords": "CT perfusion; research use only",
    }
    cv = PdfCanvas(pdf_path, *A4_IN, metadata=metadata)
    build_page(cv, result, lesion, metrics or {})
    return cv.save()
