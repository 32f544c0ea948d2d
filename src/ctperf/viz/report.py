"""One-page A4 PDF summary of a study, laid out like the summary page clinicians know from commercial tools.

Contents (top to bottom): title with software and definition versions; headline numbers (core, Tmax
hypoperfusion, mismatch volume and ratio, HIR, CBV index); a row of core/penumbra key images; a row of Tmax key
images; Tmax level volumes, an AIF/VOF thumbnail and the QA flags; the research-use disclaimer in the footer.

No patient identifiers are printed (none are passed in). The page is laid out once (:func:`build_page`) and drawn
as a vector PDF with ReportLab (:mod:`ctperf.viz.pdf_canvas`) or as an image with Pillow (:mod:`ctperf.viz.raster`,
for the DICOM screen capture); matplotlib is not used (its import and text layout cost most of a run's write time).

A missing value reads "n/a" with a short reason that fits its place, cut at a word boundary (the full reason is
in metrics.json); lesion volumes carry a "\u2265" prefix when the lesion extends beyond the scanned slab.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np

from ctperf import DISCLAIMER, __version__
from ctperf.core.constants import DEFINITION_VERSION, DISPERSION_MIN_OBSERVED_WIDTHS
from ctperf.core.orientation import display_orientation
from ctperf.core.qa_text import SHORT_REASON_CHARS, by_priority, flag_meaning, short_reason, shorten
from ctperf.core.types import LesionMasks, PerfusionResult, spacing_xyz_mm, voxel_volume_ml
from ctperf.viz import raster
from ctperf.viz.qa_figures import (
    CORE_COLOR,
    KEYS_CORE,
    KEYS_HIR,
    KEYS_HYPO,
    KEYS_MISMATCH_RATIO,
    KEYS_PENUMBRA,
    LOWER_BOUND_NOTE,
    PENUMBRA_COLOR,
    TMAX_RANGE_S,
    MetricText,
    annotate_tiles,
    as_bool_mask,
    cbv_index_text,
    core_penumbra_mosaic,
    decimation_step,
    fit_box,
    hypo_outline_caption,
    lesion_beyond_coverage,
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
    volume_text,
)
from ctperf.viz.raster import Drawing

A4_IN = (8.27, 11.69)
N_KEY_IMAGES = 6
KEY_IMAGE_PX = 128
MARGIN = 0.045
RED = "#c00000"
GREEN = "#2e7d32"
#: Smallest full scale (mL) of the Tmax volume bars: a few mL in a lesion-free study must look small.
TMAX_BARS_MIN_FULL_SCALE_ML = 100.0


def _fit(cv: Drawing, make: Callable[[int], str], size_pt: float, width: float, bold: bool = False,
         start: int = SHORT_REASON_CHARS) -> str:
    """``make(limit)`` for the largest character limit (from ``start`` down) whose text fits ``width`` device units.

    ``make`` shortens its text to ``limit`` characters at a word boundary, so the result is never cut mid-word."""
    for limit in range(start, 4, -1):
        text = make(limit)
        if cv.text_width(text, size_pt, bold) <= width:
            return text
    return make(4)


def _number_box(cv: Drawing, rect, title: str, txt: MetricText, color: str) -> None:
    """A headline figure: small caption, big value (or n/a plus a short reason), unit.  ``rect`` in page
    fractions.  A lower-bound volume reads "\u2265 <value>"."""
    x, y, w, h = rect
    cv.rect(cv.fx(x), cv.fy(y + h), cv.fx(x + w), cv.fy(y), fill="#f4f5f7", edge="#c8ccd2", width=cv.pt(0.8),
            radius=cv.pt(4.7))
    cv.text(cv.fx(x + 0.012), cv.fy(y + h - 0.012), title, 8.5, color="0.25", va="top")
    if txt.available:
        cv.text(cv.fx(x + w / 2), cv.fy(y + h * 0.38), txt.shown, 26, bold=True, color=color, ha="center",
                va="center")
        if txt.unit:
            cv.text(cv.fx(x + w - 0.012), cv.fy(y + 0.01), txt.unit, 9, color="0.3", ha="right", va="bottom")
        return
    cv.text(cv.fx(x + w / 2), cv.fy(y + h * 0.5), "n/a", 22, bold=True, color="0.55", ha="center", va="center")
    why = _fit(cv, lambda n: short_reason(txt.reason, n), 6.8, (w - 0.024) * cv.width) if txt.reason else ""
    if why:
        cv.text(cv.fx(x + w / 2), cv.fy(y + 0.008), f"{why}\nsee metrics.json", 6.8, color="0.35", ha="center",
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


def bar_full_scale_ml(values: list[float]) -> float:
    """Full scale (mL) of the Tmax volume bars: at least 100 mL, else the largest value rounded up to 50 mL, so
    a bar's length reads the same volume in every report (2.5 mL is a sliver, not a full bar)."""
    largest = max([v for v in values if math.isfinite(v)] + [0.0])
    return max(TMAX_BARS_MIN_FULL_SCALE_ML, math.ceil(largest / 50.0) * 50.0)


def _tmax_levels_panel(cv: Drawing, rect, result, lesion, metrics, t_thr: float) -> None:
    """Horizontal bars of the volume above each Tmax level (values read from the metrics document) on a fixed
    axis of at least 100 mL, labelled under the bars; a missing value reads "n/a"."""
    rows = tmax_level_volumes(result, lesion, metrics)
    if not rows:
        return
    x, y, w, h = rect
    x0, top, width = cv.fx(x), cv.fy(y + h), w * cv.width
    height = h * cv.height - cv.pt(9)  # room for the axis labels
    values = [t.number if t.available and t.number is not None else 0.0 for _, t in rows]
    full = bar_full_scale_ml(values)
    step = height / len(rows)
    for i, ((level, t), v) in enumerate(zip(rows, values)):
        yc = top + (i + 0.5) * step
        color = "#2e9d4a" if abs(level - t_thr) < 1e-6 else "#7f9fbf"
        length = min(max(v, 0.0) / full, 1.0) * width
        if length > 0:
            cv.rect(x0, yc - 0.3 * step, x0 + length, yc + 0.3 * step, fill=color)
        cv.text(x0 + length + cv.pt(3), yc, t.full() if t.available else "n/a", 7.5, va="center")
        cv.text(x0 - cv.pt(3.5), yc, f"Tmax \u2265 {level:g} s", 7.5, ha="right", va="center")
    bottom = top + height
    cv.line([(x0, top), (x0, bottom)], "black", width=cv.pt(0.8))
    cv.line([(x0, bottom), (x0 + width, bottom)], "0.6", width=cv.pt(0.5))
    for frac in (0.0, 0.5, 1.0):
        xx = x0 + frac * width
        cv.line([(xx, bottom), (xx, bottom + cv.pt(2))], "0.6", width=cv.pt(0.5))
        box = cv.text(xx, bottom + cv.pt(2.5), f"{frac * full:g}", 5.8, color="0.4", ha="center", va="top")
    cv.text(box[2] + cv.pt(2), bottom + cv.pt(2.5), "mL", 5.8, color="0.4", va="top")


QA_LINE_STEP = 0.0115  # page fraction between two QA panel lines (~9.7 pt)


def _flag_lines(cv: Drawing, raised: list[str], room: int, width: float) -> list[tuple[str, str, str]]:
    """(kind, flag name, meaning) lines of the raised QA flags within ``room`` lines: the name on one line and its
    meaning (shortened to ``width``) indented on the next when there is room for both, otherwise name and meaning on
    one line; flags that still do not fit are counted on a last line ("+ N more flags in metrics.json")."""
    if not raised:
        return []
    lines: list[tuple[str, str, str]] = []
    if 2 * len(raised) <= room:
        for k in raised:
            lines.append(("name", k, ""))
            lines.append(("meaning", k, _fit(cv, lambda n: flag_meaning(k, n), 6.5, width - cv.pt(8), start=90)))
        return lines
    shown = raised if len(raised) <= room else raised[: max(room - 1, 0)]
    for k in shown:
        rest = width - cv.text_width(f"{k}  ", 6.4, mono=True)
        lines.append(("inline", k, _fit(cv, lambda n: flag_meaning(k, n), 6.5, rest, start=90)))
    if len(shown) < len(raised):
        lines.append(("more", f"+ {len(raised) - len(shown)} more flag(s) in metrics.json", ""))
    return lines


def _qa_panel(cv: Drawing, x: float, y_top: float, width: float, y_bottom: float, result: PerfusionResult,
              metrics: dict) -> None:
    """Raised QA flags in red, each with its one-line meaning, then the number of passed checks, then the venous
    transit (PVT) readout, which is always shown.  Flags and checks are counted, not wrapped lines; flags that
    withhold a number come first, and those that do not fit between ``y_top`` and ``y_bottom`` (page fractions) are
    counted on a "more in metrics.json" line."""
    flags = qa_flags_of(result, metrics)
    raised = by_priority([k for k, v in flags.items() if v])
    n_passed = len(flags) - len(raised)
    w = width * cv.width
    pvt = [_fit(cv, lambda n, i=i: pvt_lines(result, metrics, n)[i], 6.8, w)
           for i in range(len(pvt_lines(result, metrics)))]
    room = int((y_top - 0.02 - y_bottom) / QA_LINE_STEP) + 1 - len(pvt) - 1  # the passed-checks line
    summary = f"{len(raised)} QA flag(s) raised" if raised else "no QA flag raised"
    cv.text(cv.fx(x), cv.fy(y_top), summary, 8.5, bold=True, color=RED if raised else GREEN, va="top")
    yy = y_top - 0.02

    def line(text: str, color, size: float = 6.8, mono: bool = False, dx: float = 0.0) -> None:
        cv.text(cv.fx(x) + dx, cv.fy(yy), text, size, color=color, va="top", mono=mono)

    for kind, name, meaning in _flag_lines(cv, raised, room, w):
        if kind == "name":
            line(name, RED, mono=True)
        elif kind == "meaning":
            line(meaning, "0.25", 6.5, dx=cv.pt(8))
        elif kind == "inline":  # many flags: a smaller name, its meaning on the same line
            line(name, RED, 6.4, mono=True)
            line(meaning, "0.25", 6.5, dx=cv.text_width(f"{name}  ", 6.4, mono=True))
        elif kind == "more":
            line(name, "0.3")
        yy -= QA_LINE_STEP
    if not flags:
        line("no QA flags reported", "0.3")
    elif raised:
        line(f"ok: {n_passed} other checks passed", GREEN)
    else:
        line(f"ok: all {n_passed} checks passed", GREEN)
    yy -= QA_LINE_STEP
    pvt_color = RED if pvt_positive(result, metrics) else "0.2"
    for text in pvt:
        line(text, pvt_color)
        yy -= QA_LINE_STEP


def _definition_version(metrics: dict) -> str:
    value = (metrics or {}).get("definition_version")
    return str(value) if value not in (None, "") else DEFINITION_VERSION


def _eligibility_value(metrics: dict, key: str) -> str | None:
    """A trial-criteria row's value: met / not met / n/a with its reason (None when the metrics do not hold it)."""
    value = (metrics or {}).get(key)
    if isinstance(value, bool):
        return "met" if value else "not met"
    if key not in (metrics or {}):
        return None
    reason = str(metrics.get(f"{key}_reason") or "")
    if "this run: " in reason:  # non-trial thresholds: the thresholds that differ are the point
        return "n/a (this run: " + reason.split("this run: ", 1)[1] + ")"
    why = short_reason(reason)
    return f"n/a ({why})" if why else "n/a"


def _voxel_count(curve, source: str | None) -> str:
    """How many voxels a curve averages, "(your mask)" when the user drew them (``qa_values.*_source``), "n/a" for a
    curve without voxels (Mode B reads its curves from CSV files)."""
    n = len(curve.voxels)
    if n == 0:
        return "n/a"
    return f"{n} (your mask)" if source == "mask" else str(n)


def _study_rows(result: PerfusionResult, metrics: dict) -> list[tuple[str, str]]:
    """Facts about the analysed study (left column of the details): grid, brain, AIF/VOF, trial criteria."""
    spacing = spacing_xyz_mm(result.affine_ras)
    nz, ny, nx = np.asarray(result.tmax).shape
    brain = as_bool_mask(result.masks.brain, (nz, ny, nx))
    rows = [
        ("map grid (x, y, z)", f"{nx} x {ny} x {nz} voxels"),
        ("voxel size", f"{spacing[0]:.2f} x {spacing[1]:.2f} x {spacing[2]:.2f} mm"),
        ("brain volume", f"{np.count_nonzero(brain) * voxel_volume_ml(result.affine_ras):.0f} mL"),
        ("AIF / VOF voxels", " / ".join(_voxel_count(curve, ((metrics or {}).get("qa_values") or {}).get(source))
                                        for curve, source in ((result.aif, "aif_source"), (result.vof, "vof_source")))),
    ]
    for name, curve in (("AIF", result.aif), ("VOF", result.vof)):
        y = np.asarray(curve.delta_hu, float)
        if y.size and np.isfinite(y).any():
            rows.append((f"{name} peak / TTP", f"{np.nanmax(y):.0f} HU / {curve.ttp_s:.1f} s"))
    for key, label in (("DEFUSE3_eligible", "DEFUSE 3 imaging criteria"),
                       ("EXTEND_eligible", "EXTEND imaging criteria")):
        value = _eligibility_value(metrics, key)
        if value is not None:
            rows.append((label, value))
    return rows


def _qa_value(result: PerfusionResult, metrics: dict, key: str) -> tuple[bool, float | None, str | None]:
    """(reported, value, reason) of a QA value from metrics["qa_values"] (else the result): a null or NaN value is
    None, with the ``<key>_reason`` (or the reason named without the unit suffix) when there is one."""
    section = (metrics or {}).get("qa_values")
    source = section if isinstance(section, dict) and key in section else (result.qa_values or {})
    if key not in source:
        return False, None, None
    value = source.get(key)
    number = None
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_)):
        number = float(value) if math.isfinite(float(value)) else None
    base = key.rsplit("_", 1)[0] if key.endswith(("_s", "_hu", "_mm")) else key
    reason = source.get(f"{key}_reason") or source.get(f"{base}_reason")
    return True, number, (str(reason) if reason and number is None else None)


def _limit_rows(result: PerfusionResult, metrics: dict) -> list[tuple[str, str, bool]]:
    """(label, value with its limits, below a limit) of the measurements that decide which indices are withheld
    (right column of the details); a value the study did not report is left out, a null one reads "n/a"."""
    def thr(name: str) -> str:
        return f"{threshold(metrics, name):g}"

    specs = [
        ("contrast-to-noise", "contrast_to_noise", "{:.1f}",
         f"needs \u2265 {thr('lesion_min_contrast_to_noise')} lesion, \u2265 {thr('core_min_contrast_to_noise')} core",
         lambda v: v < threshold(metrics, "core_min_contrast_to_noise")),
        ("noise", "noise_hu", "{:.1f} HU", "", None),
        ("acquisition length", "acquisition_s", "{:.1f} s", "", None),
        ("lesion observed after peak", "lesion_observed_after_peak_s", "{:.1f} s",
         f"needs \u2265 {thr('lesion_min_observed_after_peak_s')} lesion, "
         f"{thr('hir_min_observed_after_peak_s')} HIR, {thr('core_min_observed_after_peak_s')} core, "
         f"{thr('cbv_index_min_observed_after_peak_s')} CBV",
         lambda v: v < max(threshold(metrics, "core_min_observed_after_peak_s"),
                           threshold(metrics, "cbv_index_min_observed_after_peak_s"))),
        ("tissue followed past peak", "tissue_observed_bolus_widths", "{:.2f} bolus widths",
         f"needs \u2265 {DISPERSION_MIN_OBSERVED_WIDTHS:g} for the dispersion",
         lambda v: v < DISPERSION_MIN_OBSERVED_WIDTHS),
        ("normal-tissue Tmax", "normal_tissue_tmax_s", "{:.1f} s", f"needs < {_normal_tmax_limit(metrics):g} s",
         lambda v: v >= _normal_tmax_limit(metrics)),
        ("coverage", "coverage_mm", "{:.0f} mm",
         "lesion reaches first / last slice" if lesion_beyond_coverage(metrics) else "",
         lambda v: lesion_beyond_coverage(metrics)),
    ]
    rows = []
    for label, key, fmt, limits, fails in specs:
        reported, value, reason = _qa_value(result, metrics, key)
        if not reported:
            continue
        if value is None:
            why = short_reason(reason, 34) if reason else ""
            rows.append((label, f"n/a ({why})" if why else "n/a", False))
            continue
        text = fmt.format(value) + (f" ({limits})" if limits else "")
        rows.append((label, text, bool(fails and fails(value))))
    return rows


def _normal_tmax_limit(metrics: dict) -> float:
    """Normal tissue reading Tmax at or above this (s) is a global bolus delay: the Tmax volumes are withheld."""
    return threshold(metrics, "tmax_hypoperfusion_s") - threshold(metrics, "hypoperfusion_min_margin_s")


def _detail_columns(result: PerfusionResult, metrics: dict) -> tuple[list[tuple[str, str, bool]], ...]:
    """(label, value, red) rows of the two details columns: the study facts; the values that decide what is
    withheld, with their limits (red when below one), then the processing time."""
    left = [(label, text, False) for label, text in _study_rows(result, metrics)]
    right = _limit_rows(result, metrics)
    if result.stage_seconds:
        right.append(("processing time", f"{sum(float(v) for v in result.stage_seconds.values()):.1f} s", False))
    return left, right


def _details(result: PerfusionResult, metrics: dict) -> list[tuple[str, str]]:
    """(label, value) of the analysis details, left column then right (no identifiers; a null value reads "n/a"
    with its short reason, never "nan")."""
    return [(label, text) for column in _detail_columns(result, metrics) for label, text, _ in column]


DETAIL_COLUMNS = ((MARGIN, 0.175), (0.445, 0.175))  # (key x, value offset) of the two columns, page fractions
DETAIL_ROWS = 8


def _details_panel(cv: Drawing, y_top: float, result: PerfusionResult, metrics: dict) -> None:
    """Study facts on the left; on the right the measurements that decide what is withheld (red where one is
    below its limit) and the processing time.  Long values are shortened to their column at a word boundary."""
    _section_title(cv, MARGIN, y_top, "Analysis details")
    value_ends = (DETAIL_COLUMNS[1][0] - 0.01, 1 - MARGIN)
    for (kx, dx), rows, end in zip(DETAIL_COLUMNS, _detail_columns(result, metrics), value_ends):
        for r, (key, value, red) in enumerate(rows[:DETAIL_ROWS]):
            yy = cv.fy(y_top - 0.018 - r * 0.0145)
            width = (end - kx - dx) * cv.width
            shown = value if cv.text_width(value, 7.2) <= width else _fit_value(cv, value, width)
            cv.text(cv.fx(kx), yy, key, 7.2, color="0.35", va="center")
            cv.text(cv.fx(kx + dx), yy, shown, 7.2, color=RED if red else "0.1", va="center")


def _fit_value(cv: Drawing, value: str, width: float) -> str:
    """A details value too long for its column: an "n/a (reason)" keeps its brackets, other text is cut at a word."""
    if value.startswith("n/a (") and value.endswith(")"):
        reason = value[5:-1]
        return _fit(cv, lambda n: f"n/a ({shorten(reason, n)})" if shorten(reason, n) else "n/a", 7.2, width)
    return _fit(cv, lambda n: shorten(value, n), 7.2, width, start=len(value))


def _hline(cv: Drawing, y: float, color, lw_pt: float) -> None:
    cv.line([(cv.fx(MARGIN), cv.fy(y)), (cv.fx(1 - MARGIN), cv.fy(y))], color, width=cv.pt(lw_pt))


def _header_facts(metrics: dict, t_thr: float, rcbf: float) -> list[str]:
    """The header line's facts, from the metrics document: affected side, reference CBF, the thresholds, and the
    scanned coverage (where the lesion is not measured its side is null, "n/a", and so is the reference)."""
    m = metrics or {}
    side = {"left": "left", "right": "right", "none": "none detected"}.get(str(m.get("lesion_side")), "n/a")
    if m.get("lesion_side_reason"):  # bilateral, posterior, a global delay: no side is named, for a reason
        side = "n/a"
    qa_values = m.get("qa_values") or {}
    ref = qa_values.get("reference_cbf_ml_100g_min")
    measured = not (m.get("qa_flags") or {}).get("lesion_unmeasured")
    ref_txt = (f"{ref:.1f} mL/100g/min" if measured and isinstance(ref, (int, float)) and np.isfinite(ref)
               else "n/a")
    cov = qa_values.get("coverage_mm")
    cov_txt = f"{cov:.0f} mm" if isinstance(cov, (int, float)) and np.isfinite(cov) else "n/a"
    if lesion_beyond_coverage(m):
        cov_txt += " (lesion exceeds it)"
    return [f"Affected hemisphere: {side}", f"reference CBF: {ref_txt}", f"core: rCBF < {rcbf * 100:g}%",
            f"hypoperfusion: Tmax > {t_thr:g} s", f"coverage {cov_txt}"]


def _header_line(cv: Drawing, facts: list[str], size_pt: float, width: float, smallest: float = 6.5
                 ) -> tuple[str, float]:
    """The facts joined into one line that fits ``width``: wide separators if they fit, else narrow ones at the
    largest font size (steps of 0.2 pt, down to ``smallest``) that fits."""
    wide = "   \u00b7   ".join(facts)
    if cv.text_width(wide, size_pt) <= width:
        return wide, size_pt
    narrow = "  \u00b7  ".join(facts)
    while size_pt > smallest and cv.text_width(narrow, size_pt) > width:
        size_pt -= 0.2
    return narrow, size_pt


def _lesion_legend(cv: Drawing, y: float, metrics: dict) -> None:
    """Core / penumbra swatches under the key images, each value or "n/a (short reason)" fitted to its place, and
    the meaning of "\u2265" when the volumes are lower bounds."""
    note = LOWER_BOUND_NOTE if lesion_beyond_coverage(metrics) else ""
    note_w = cv.text_width(note, 7) * 1.05 + cv.pt(12) if note else 0.0  # italic runs a little wider
    room = (1 - 2 * MARGIN) * cv.width - note_w  # device units for the two entries
    x = cv.fx(MARGIN)
    for i, (color, name, keys) in enumerate(((CORE_COLOR, "core", KEYS_CORE),
                                             (PENUMBRA_COLOR, "penumbra", KEYS_PENUMBRA))):
        txt = volume_text(metrics, keys)
        label = _fit(cv, lambda n: f"{name} {txt.short(n)}", 7.5, room / 2.0 - cv.pt(24) if i == 0 else
                     cv.fx(1 - MARGIN) - note_w - x - cv.pt(12))
        _legend_swatch(cv, x / cv.width, y, color, label)
        # the next entry at 0.3 page width, or after a longer label
        x = max(x + 0.3 * cv.width, x + cv.text_width(label, 7.5) + cv.pt(30))
    if note:
        cv.text(cv.fx(1 - MARGIN), cv.fy(y), note, 7, color="0.35", ha="right", va="center", italic=True)


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
    header, size = _header_line(cv, _header_facts(metrics, t_thr, rcbf), 8.2, (1 - 2 * MARGIN) * cv.width)
    text(MARGIN, 0.934, header, size, color="0.2", va="center")
    _hline(cv, 0.922, "#1a2a40", 1.2)

    # Headline numbers
    boxes = [
        (f"Core (rCBF < {rcbf * 100:g}%)", volume_text(metrics, KEYS_CORE), "#b0106a"),
        (f"Hypoperfusion (Tmax > {t_thr:g} s)", volume_text(metrics, KEYS_HYPO), "#1f7a34"),
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
    n_slices = result.tmax.shape[0]
    shown = "" if len(slices) == n_slices else f"{len(slices)} of {n_slices} slices, evenly spaced  \u00b7  "
    text(1 - MARGIN, y + 0.001, f"{shown}radiological view: patient {orient.left} on image left", 7, color="0.35",
         ha="right", va="bottom")
    y -= img_h + 0.016
    _key_image_row(cv, result, lesion, orient, slices, y, img_h, "core")
    y -= 0.014
    _lesion_legend(cv, y, metrics)
    y -= 0.03
    drawn = bool(as_bool_mask(lesion.hypoperfusion, np.asarray(result.tmax).shape).any())
    _section_title(cv, MARGIN, y, _fit(cv, lambda n: f"Tmax \u2014 {hypo_outline_caption(metrics, drawn, n)}", 10,
                                       (1 - 2 * MARGIN) * cv.width, bold=True))
    y -= img_h + 0.016
    _key_image_row(cv, result, lesion, orient, slices, y, img_h, "tmax")

    # Bottom panels: Tmax volume bars | AIF / VOF curves | QA flags, then the analysis details
    y -= 0.02
    _hline(cv, y, "0.75", 0.8)
    y -= 0.03
    details_top = 0.195
    panel_h = y - 0.012 - 0.228
    _section_title(cv, MARGIN, y, "Tmax volumes")
    _tmax_levels_panel(cv, [MARGIN + 0.075, y - 0.012 - panel_h, 0.13, panel_h], result, lesion, metrics, t_thr)
    _section_title(cv, 0.36, y, "AIF / VOF")
    top = y - 0.006  # the legend takes the top of the box, above the axes
    plot_curves(cv, (cv.fx(0.4), cv.fy(top), 0.195 * cv.width, (panel_h - 0.031) * cv.height), result, 6.5, 1.2,
                marker=False)
    _section_title(cv, 0.625, y, "QA")
    _qa_panel(cv, 0.625, y - 0.008, 1 - MARGIN - 0.625, details_top + 0.021, result, metrics)
    _details_panel(cv, details_top, result, metrics)

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
