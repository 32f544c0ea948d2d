"""Readability of the PDF summary and the QA figures (a neuroradiologist's review): short reasons that never cut a
word, lower-bound volumes, a QA panel that counts flags and keeps the PVT readout, no "nan", fixed display ranges
and scales, legends that cover no data, text that stays on the figure and apart from other text."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest

from ctperf.core.qa_text import (
    ELLIPSIS,
    PRIORITY_FLAGS,
    QA_FLAG_TEXT,
    by_priority,
    flag_meaning,
    short_reason,
    shorten,
    strip_parentheses,
)
from ctperf.viz import qa_figures, raster, report
from ctperf.viz.qa_figures import (
    DPI,
    HYPO_OUTLINE_COLOR,
    HYPO_SWATCH,
    MAP_SPECS,
    core_penumbra_legend,
    footnoted_legend,
    mismatch_volume_text,
    volume_text,
)
from test_qa_plots import make_case

#: Reasons as the analysis writes them (ctperf.analysis.masks / indices), the long ones that were cut mid-word.
REASONS = (
    "global bolus delay: normal tissue reads Tmax 5.2 s, within 1 s (thresholds.hypoperfusion_min_margin_s) of the "
    "6 s threshold, so its scatter crosses it and the Tmax volumes are not measurable",
    "contrast-to-noise ratio 5.2 below 14.5 (thresholds.lesion_min_contrast_to_noise): too little bolus contrast "
    "against the image noise to measure any lesion index",
    "acquisition ends 9.6 s after the hypoperfused tissue's median time to peak, < 16 s "
    "(thresholds.core_min_observed_after_peak_s): its curves are cut before they return and the rCBF core is not "
    "measurable (acquire longer)",
    "arterial input still high at the end of the acquisition (qa_flags.aif_truncated): every map is biased and no "
    "lesion index is measurable (acquire longer)",
    "the trials' imaging criteria apply to one hemispheric, anterior-circulation lesion (DEFUSE 3: internal carotid "
    "or proximal middle cerebral artery occlusion, Albers 2018; EXTEND: hemispheric stroke, Ma 2019); a global bolus "
    "delay also reads as bilateral hypoperfusion",
    "no tissue with Tmax above the hypoperfusion threshold",
    "core volume is 0 mL: ratio undefined (infinite when hypoperfusion > 0)",
    "no hypoperfusion (Tmax) region",
)
GLOBAL_DELAY = REASONS[0]


class Recorder(raster.Canvas):
    """A raster canvas that keeps every text drawn with its box (x0, y0, x1, y1), and every rectangle."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.texts: list[tuple[str, tuple[float, float, float, float]]] = []
        self.rects: list[tuple[tuple[float, float, float, float], object, object]] = []

    def text(self, x, y, s, *args, **kwargs):
        box = super().text(x, y, s, *args, **kwargs)
        self.texts.append((s, box))
        return box

    def rect(self, x0, y0, x1, y1, fill=None, edge=None, width=1, radius=0):
        self.rects.append(((x0, y0, x1, y1), fill, edge))
        return super().rect(x0, y0, x1, y1, fill=fill, edge=edge, width=width, radius=radius)

    def joined(self) -> str:
        return "\n".join(s for s, _ in self.texts)


def _page(result, lesion, metrics, dpi: float = 60) -> Recorder:
    page = Recorder(*report.A4_IN, dpi)
    report.build_page(page, result, lesion, metrics)
    return page


def _words(text: str) -> set[str]:
    return set(text.replace(ELLIPSIS, " ").split())


def _global_delay_metrics(metrics: dict) -> dict:
    """The metrics of a study with a global bolus delay: every Tmax volume null with the same long reason."""
    m = dict(metrics)
    for key in ("hypoperfusion_ml", "penumbra_ml", "mismatch_volume_ml", "Mismatch_Ratio", "HIR", "tmax4_ml",
                "tmax6_ml", "tmax8_ml", "tmax10_ml", "DEFUSE3_eligible", "EXTEND_eligible"):
        m[key] = None
        m[f"{key}_reason"] = GLOBAL_DELAY
    m["qa_flags"] = {**m.get("qa_flags", {}), "global_tmax_delay": True}
    m["qa_values"] = {"normal_tissue_tmax_s": 5.2, "coverage_mm": 30.0}
    return m


# ---------------------------------------------------------------------------------------------------------------
# Short reasons (fix 1) and flag meanings (fix 3)
# ---------------------------------------------------------------------------------------------------------------


def test_short_reason_is_the_leading_label():
    assert short_reason(GLOBAL_DELAY) == "global bolus delay"
    assert short_reason(REASONS[1]) == "contrast-to-noise ratio 5.2 below 14.5"  # setting name dropped
    assert short_reason(REASONS[6]) == "core volume is 0 mL"
    assert short_reason("no hypoperfusion (Tmax) region") == "no hypoperfusion region"
    assert short_reason(None) == "" and short_reason("") == ""


@pytest.mark.parametrize("limit", [12, 20, 30, 40, 60])
@pytest.mark.parametrize("reason", REASONS)
def test_short_reason_fits_and_never_cuts_a_word(reason, limit):
    short = short_reason(reason, limit)
    assert len(short) <= limit
    source = _words(strip_parentheses(reason.replace("the hypoperfused tissue's median time to peak", "lesion peak")))
    source |= {w.rstrip(",;:") for w in source}
    assert _words(short) <= source, short  # only whole words of the reason
    assert not short.endswith((" the", " of", " to", " after", ",", ";", ":"))


def test_shorten_marks_a_cut_and_keeps_whole_words():
    assert shorten("short enough", 40) == "short enough"
    cut = shorten("the hypoperfusion reaches the first or last slice of the slab", 30)
    assert cut.endswith(ELLIPSIS) and len(cut) <= 30
    assert _words(cut) <= _words("the hypoperfusion reaches the first or last slice of the slab")
    assert shorten("x" * 50, 10) == ""  # a single word longer than the room is left out, not cut


@pytest.mark.parametrize("flag", sorted(QA_FLAG_TEXT))
def test_every_flag_has_a_short_meaning(flag):
    meaning = flag_meaning(flag, 55)
    assert 0 < len(meaning) <= 55
    assert "qa_values." not in meaning and "thresholds." not in meaning  # setting names are left to metrics.json
    assert flag_meaning("a_flag_nobody_knows") == "see metrics.json"


def test_flags_that_withhold_numbers_come_first():
    assert by_priority(["aif_poor", "lesion_beyond_coverage", "vof_unreliable", "lesion_unmeasured"]) == \
        ["lesion_unmeasured", "lesion_beyond_coverage", "aif_poor", "vof_unreliable"]
    assert set(PRIORITY_FLAGS) <= set(QA_FLAG_TEXT)


def test_flag_meanings_moved_to_core_and_terminal_uses_them():
    from ctperf.apps import terminal

    assert terminal.QA_FLAG_TEXT is QA_FLAG_TEXT
    lines = terminal.warning_lines({"qa_flags": {"global_tmax_delay": True}})
    assert lines[0][1] == f"QA flag global_tmax_delay: {QA_FLAG_TEXT['global_tmax_delay']}"


def test_viz_does_not_import_the_apps_and_qa_text_is_pure():
    code = ("import sys, ctperf.viz.report, ctperf.viz.qa_figures\n"
            "print(any(m.startswith('ctperf.apps') for m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
    code = "import sys, ctperf.core.qa_text\nprint(sorted(m for m in sys.modules if m.startswith('ctperf.')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['ctperf.core', 'ctperf.core.qa_text']"


def test_pdf_shows_short_reasons_never_cut_mid_word():
    result, lesion, metrics = make_case()
    m = _global_delay_metrics(metrics)
    page = _page(result, lesion, m)
    text = page.joined()
    assert "global bolus delay\nsee metrics.json" in text  # number cards: short reason, then where the rest is
    assert "penumbra n/a (global bolus delay)" in text  # legend under the key images
    assert "hypoperfusion_m" not in text and "thresholds." not in text
    rows = dict(report._details(result, m))
    assert rows["DEFUSE 3 imaging criteria"] == "n/a (global bolus delay)"
    for s, _ in page.texts:  # whatever was shortened ends on a whole word of the page's sources
        if s.endswith(ELLIPSIS + ")") or s.endswith(ELLIPSIS):
            assert re.search(r"\w\u2026\)?$", s), s


# ---------------------------------------------------------------------------------------------------------------
# Lower-bound volumes and the coverage (fix 2)
# ---------------------------------------------------------------------------------------------------------------


def test_volumes_are_lower_bounds_when_the_lesion_leaves_the_slab():
    _, _, metrics = make_case()
    beyond = {**metrics, "qa_flags": {"lesion_beyond_coverage": True}}
    assert volume_text(beyond, "core_ml").full().startswith("\u2265\u00a0")
    assert volume_text(beyond, "hypoperfusion_ml").shown.startswith("\u2265")
    assert mismatch_volume_text(beyond).full().startswith("\u2265")
    assert not volume_text(metrics, "core_ml").full().startswith("\u2265")
    labels = [label for _, _, label in core_penumbra_legend(beyond)]
    assert all("\u2265" in label for label in labels[:4]) and "\u2265" not in labels[4]  # not the ratio
    _, notes = footnoted_legend(beyond)
    assert any("lower bound" in n for n in notes)


def test_pdf_cards_legend_and_header_under_lesion_beyond_coverage():
    result, lesion, metrics = make_case()
    beyond = {**metrics, "qa_flags": {"lesion_beyond_coverage": True}, "qa_values": {"coverage_mm": 40.0}}
    texts = [s for s, _ in _page(result, lesion, beyond).texts]
    core = f"{metrics['core_ml']:.1f}"
    assert f"\u2265\u00a0{core}" in texts  # the core card
    assert f"\u2265\u00a0{metrics['hypoperfusion_ml']:.1f}" in texts
    assert f"\u2265\u00a0{metrics['mismatch_volume_ml']:.1f}" in texts
    assert f"core \u2265\u00a0{core} mL" in texts  # legend swatch
    header = next(s for s in texts if s.startswith("Affected hemisphere"))
    assert "coverage 40 mm" in header
    assert "\u2265" not in " ".join(s for s in texts if s.startswith("Affected"))


def test_header_names_the_coverage_in_every_report():
    result, lesion, metrics = make_case()
    texts = [s for s, _ in _page(result, lesion, {**metrics, "qa_values": {"coverage_mm": 80.0}}).texts]
    assert any(s.startswith("Affected hemisphere") and "coverage 80 mm" in s for s in texts)
    assert f"\u2265\u00a0{metrics['core_ml']:.1f}" not in texts
    texts = [s for s, _ in _page(result, lesion, metrics).texts]  # not reported: still named
    assert any(s.startswith("Affected hemisphere") and "coverage n/a" in s for s in texts)


# ---------------------------------------------------------------------------------------------------------------
# QA panel (fix 3)
# ---------------------------------------------------------------------------------------------------------------


def _qa_texts(page: Recorder) -> list[str]:
    """Texts of the QA panel: right of its title, above the analysis details."""
    title = next(box for s, box in page.texts if s == "QA")
    details = next(box for s, box in page.texts if s == "Analysis details")
    return [s for s, box in page.texts if box[0] >= title[0] - 1 and title[1] <= box[1] < details[1]]


def test_qa_panel_gives_every_raised_flag_its_meaning_and_keeps_the_pvt_readout():
    result, lesion, metrics = make_case()
    result.qa_flags = {}
    raised = ["core_truncated", "hir_truncated", "lesion_beyond_coverage"]
    m = {**metrics, "qa_flags": {**{k: True for k in raised}, **{f"check_{i}": False for i in range(15)}}}
    texts = _qa_texts(_page(result, lesion, m))
    for flag in raised:
        assert flag in texts
        assert any(s.rstrip(ELLIPSIS) and flag_meaning(flag).startswith(s.rstrip(ELLIPSIS)) for s in texts), flag
    assert "PVT (VOF - AIF TTP): 4.2 s" in texts
    assert any(s.startswith("PVT sign") for s in texts)
    passed = [s for s in texts if "checks passed" in s]
    assert passed == ["ok: 15 other checks passed"]  # counted, not listed


def test_qa_panel_counts_flags_not_lines_when_many_are_raised():
    result, lesion, metrics = make_case()
    flags = sorted(QA_FLAG_TEXT)  # 24 raised flags: more than fit
    page = _page(result, lesion, {**metrics, "qa_flags": {k: True for k in flags}})
    texts = _qa_texts(page)
    shown = [s for s in texts if s in flags]  # in page order
    more = [s for s in texts if "more flag" in s]
    assert len(more) == 1
    n_more = int(re.search(r"\+ (\d+) more flag", more[0]).group(1))
    raised = len(set(flags) | set(k for k, v in result.qa_flags.items() if v))
    assert len(shown) + n_more == raised  # every raised flag is either shown or counted
    assert any(s.startswith("PVT (VOF - AIF TTP)") for s in texts)  # the PVT readout is always kept
    assert any(s.startswith("PVT sign") for s in texts)
    assert not any("more in metrics.json" in s and "flag" not in s for s in texts)  # no count of wrapped lines
    assert shown[:3] == ["lesion_unmeasured", "core_noise_limited", "core_truncated"]  # what withholds numbers first
    _assert_no_overlap(page, texts)


# ---------------------------------------------------------------------------------------------------------------
# Analysis details (fix 7)
# ---------------------------------------------------------------------------------------------------------------


def test_details_show_the_deciding_values_with_their_limits_and_no_nan():
    result, lesion, metrics = make_case()
    result.qa_values = {"aif_noise_hu": float("nan"), "aif_peak_scaled_hu": 338.0}
    m = {**metrics, "qa_values": {
        "contrast_to_noise": 5.2, "noise_hu": 8.4, "acquisition_s": 58.5, "lesion_observed_after_peak_s": None,
        "lesion_observed_after_peak_reason": "no hypoperfused tissue", "normal_tissue_tmax_s": None,
        "coverage_mm": 40.0, "aif_noise_hu": None, "aif_noise_reason": "fewer than 3 pre-bolus samples"},
        "thresholds": {**metrics["thresholds"], "core_min_contrast_to_noise": 29.5,
                       "lesion_min_contrast_to_noise": 14.5, "hypoperfusion_min_margin_s": 1.0}}
    rows = dict(report._details(result, m))
    assert rows["contrast-to-noise"] == "5.2 (needs \u2265 14.5 lesion, \u2265 29.5 core)"
    assert rows["noise"] == "8.4 HU"
    assert rows["acquisition length"] == "58.5 s"
    assert rows["lesion observed after peak"] == "n/a (no hypoperfused tissue)"
    assert rows["normal-tissue Tmax"] == "n/a"
    assert rows["coverage"] == "40 mm"
    assert not any(re.search(r"\bnan\b", v) for v in rows.values())
    assert not any(k.startswith("aif_") for k in rows)  # raw internal keys are gone
    assert "AIF peak / TTP" in rows
    page = _page(result, lesion, m)
    assert not re.search(r"\bnan\b", page.joined())
    red = [s for s, _ in page.texts if s.startswith("5.2 (needs")]
    assert red  # drawn (in red: below the core limit)


def test_details_limits_follow_the_thresholds():
    result, _, metrics = make_case()
    m = {**metrics, "thresholds": {**metrics["thresholds"], "tmax_hypoperfusion_s": 8.0,
                                   "hypoperfusion_min_margin_s": 1.5, "core_min_observed_after_peak_s": 20.0},
         "qa_values": {"normal_tissue_tmax_s": 2.44, "lesion_observed_after_peak_s": 32.39}}
    rows = dict(report._details(result, m))
    assert rows["normal-tissue Tmax"] == "2.4 s (needs < 6.5 s)"
    assert rows["lesion observed after peak"] == "32.4 s (needs \u2265 8 lesion, 11 HIR, 20 core, 22 CBV)"


# ---------------------------------------------------------------------------------------------------------------
# Display ranges and scales (fixes 4, 5)
# ---------------------------------------------------------------------------------------------------------------


def test_mtt_display_range_is_0_to_20_s():
    specs = {attr: (vmin, vmax) for attr, _, _, vmin, vmax in MAP_SPECS}
    assert specs["mtt"] == (0.0, 20.0)


def test_tmax_bars_have_a_fixed_full_scale_of_at_least_100_ml():
    assert report.bar_full_scale_ml([2.5, 0.0, 0.0, 0.0]) == 100.0
    assert report.bar_full_scale_ml([146.9, 103.6, 60.2, 25.0]) == 150.0
    assert report.bar_full_scale_ml([]) == 100.0


def test_small_volumes_draw_short_bars():
    """2.5 mL in a lesion-free study is a sliver: its bar is 2.5 % of the axis, not the axis."""
    result, lesion, metrics = make_case()
    m = {**metrics, "tmax4_ml": 2.5, "tmax6_ml": 0.0, "tmax8_ml": 0.0, "tmax10_ml": 0.0}
    page = _page(result, lesion, m, dpi=100)
    bars = [box for box, fill, _ in page.rects if fill in ("#2e9d4a", "#7f9fbf")]
    assert len(bars) == 1
    label = next(box for s, box in page.texts if s == "100")  # the axis' full-scale label
    zero = next(box for s, box in page.texts if s == "0" and abs(box[1] - label[1]) < 1)
    axis = (label[0] + label[2]) / 2 - (zero[0] + zero[2]) / 2
    assert (bars[0][2] - bars[0][0]) / axis == pytest.approx(0.025, abs=0.01)
    assert "n/a" in [s for s, _ in _page(result, lesion, {**m, "tmax8_ml": None}).texts]


# ---------------------------------------------------------------------------------------------------------------
# AIF / VOF legend (fix 6)
# ---------------------------------------------------------------------------------------------------------------


def _curve_frame(page: Recorder):
    """The axes frame of the AIF/VOF plot: the black-edged rectangle without fill."""
    return [box for box, fill, edge in page.rects if fill is None and edge == "black"]


def test_curve_legend_is_above_the_axes_in_the_pdf_and_the_qa_figure(monkeypatch, tmp_path):
    result, lesion, metrics = make_case()
    page = _page(result, lesion, metrics, dpi=100)
    frame = _curve_frame(page)[-1]
    legend = [box for s, box in page.texts if s.startswith(("AIF (peak", "VOF (peak"))]
    assert len(legend) == 2 and all(box[3] <= frame[1] + 0.5 for box in legend)

    canvases: list[Recorder] = []

    def canvas(w, h):
        canvases.append(Recorder(w, h, DPI))
        return canvases[-1]

    monkeypatch.setattr(qa_figures, "_canvas", canvas)
    qa_figures.fig_aif_vof(result, metrics, tmp_path / "aif_vof.png")
    cv = canvases[-1]
    frame = [box for box, fill, edge in cv.rects if fill is None and edge == "black" and box[2] - box[0] > 100][0]
    legend = [box for s, box in cv.texts if s.startswith(("AIF (peak", "VOF (peak"))]
    assert len(legend) == 2 and all(box[3] <= frame[1] + 0.5 for box in legend)


# ---------------------------------------------------------------------------------------------------------------
# QA figures' text (fix 8) and the hypoperfusion outline (fix 9)
# ---------------------------------------------------------------------------------------------------------------


def _assert_no_overlap(cv: Recorder, texts: list[str] | None = None) -> None:
    boxes = [(s, box) for s, box in cv.texts if s.strip() and (texts is None or s in texts) and len(s) > 1]
    for i, (a, ba) in enumerate(boxes):
        for b, bb in boxes[i + 1:]:
            overlap_x = min(ba[2], bb[2]) - max(ba[0], bb[0])
            overlap_y = min(ba[3], bb[3]) - max(ba[1], bb[1])
            assert overlap_x <= 1 or overlap_y <= 1, (a, b)


def _figure(monkeypatch, tmp_path, draw) -> Recorder:
    canvases: list[Recorder] = []

    def canvas(w, h):
        canvases.append(Recorder(w, h, DPI))
        return canvases[-1]

    monkeypatch.setattr(qa_figures, "_canvas", canvas)
    draw(tmp_path / "figure.png")
    return canvases[-1]


def test_tmax_mip_subtitle_stays_on_the_figure(monkeypatch, tmp_path):
    result, lesion, metrics = make_case()
    long = "a very long reason " * 12
    m = {**metrics, "hypoperfusion_ml": None, "hypoperfusion_ml_reason": long}
    cv = _figure(monkeypatch, tmp_path, lambda p: qa_figures.fig_tmax_mip(result, lesion, m, p))
    assert all(0 <= box[0] and box[2] <= cv.width for _, box in cv.texts)
    _assert_no_overlap(cv)
    sub = [s for s, _ in cv.texts if "outline" in s]
    assert sub and "hypoperfusion, n/a (a very long reason" in sub[0].replace("\n", " ")


def test_core_penumbra_mip_writes_each_reason_once_without_overlap(monkeypatch, tmp_path):
    result, lesion, metrics = make_case()
    m = {**metrics, "qa_flags": {"lesion_beyond_coverage": True}}
    for key in ("core_ml", "penumbra_ml", "hypoperfusion_ml", "mismatch_volume_ml", "Mismatch_Ratio"):
        m[key], m[f"{key}_reason"] = None, REASONS[1]
    m["Mismatch_Ratio_reason"] = REASONS[6]
    cv = _figure(monkeypatch, tmp_path, lambda p: qa_figures.fig_core_penumbra_mip(result, lesion, m, p))
    text = cv.joined().replace("\n", " ")
    assert text.count("contrast-to-noise ratio 5.2 below 14.5") == 1
    assert text.count("core volume is 0 mL") == 1
    assert "(1) contrast-to-noise" in text and "(2) core volume" in text
    assert "thresholds." not in text
    assert all(0 <= box[0] and box[2] <= cv.width and box[3] <= cv.height for _, box in cv.texts)
    _assert_no_overlap(cv)


def test_outline_caption_says_when_no_outline_is_drawn():
    result, lesion, metrics = make_case()
    m = _global_delay_metrics(metrics)
    empty = type(lesion)(hypoperfusion=np.zeros_like(lesion.hypoperfusion), core=lesion.core,
                         penumbra=np.zeros_like(lesion.penumbra), tmax_levels=lesion.tmax_levels)
    texts = [s for s, _ in _page(result, empty, m).texts]
    assert "Tmax \u2014 no Tmax > 6 s outline: not measured (global bolus delay)" in texts
    assert not any("white outline" in s for s in texts)
    texts = [s for s, _ in _page(result, empty, {**metrics, "hypoperfusion_ml": 0.0}).texts]
    assert "Tmax \u2014 no Tmax > 6 s outline: no tissue above 6 s" in texts
    texts = [s for s, _ in _page(result, lesion, metrics).texts]
    assert "Tmax \u2014 white outline: Tmax > 6 s" in texts


def test_hypoperfusion_swatch_matches_the_outline_drawn():
    _, _, metrics = make_case()
    fill, edge, label = core_penumbra_legend(metrics)[2]
    assert (fill, edge) == HYPO_SWATCH and edge == HYPO_OUTLINE_COLOR  # the colour show_image outlines with
    assert "white outline" in label and HYPO_OUTLINE_COLOR == "white"
    fill, edge, label = core_penumbra_legend(metrics, hypo_drawn=False)[2]
    assert fill is None and edge is None and "no outline" in label
    # the swatch's ring is drawn inside it, so a white outline stays visible on a white page
    cv = Recorder(2, 1, 100)
    cv.legend_patch(10, 50, *HYPO_SWATCH, size_pt=9)
    (outer, outer_fill, _), (inner, inner_fill, inner_edge) = cv.rects
    assert outer_fill == "black" and inner_fill is None and inner_edge == "white"
    assert inner[0] > outer[0] and inner[2] < outer[2]


def test_voxel_counts_name_drawn_curves_and_none_for_csv_curves():
    """Analysis details: "5 (your mask)" for a drawn AIF, "n/a" for Mode B's curves read from CSV (it said 0 / 0)."""
    from ctperf.core.types import Curve
    from ctperf.viz.report import _voxel_count

    t = np.arange(3.0)
    drawn = Curve(time_s=t, delta_hu=t, voxels_zyx=np.zeros((5, 3), int))
    assert _voxel_count(drawn, "mask") == "5 (your mask)" and _voxel_count(drawn, "automatic") == "5"
    assert _voxel_count(Curve(time_s=t, delta_hu=t, voxels_zyx=np.zeros((0, 3), int)), None) == "n/a"
    assert _voxel_count(Curve(time_s=t, delta_hu=t), None) == "n/a"
