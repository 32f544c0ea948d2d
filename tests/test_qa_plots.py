"""QA figures and the one-page PDF summary, on a small hand-built result (no engine, no phantom)."""

from __future__ import annotations

import struct
import time
import zlib
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest

import ctperf
from ctperf.core.types import Curve, Hemispheres, LesionMasks, PerfusionResult, TissueMasks
from ctperf.viz.qa_figures import (
    FIGURE_NAMES,
    cbv_index_text,
    metric_text,
    pvt_lines,
    qa_flags_of,
    thresholds_from,
    tmax_level_volumes,
    write_qa_figures,
)
from ctperf.viz.report import write_summary_pdf

NZ, NY, NX = 6, 64, 64
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _gamma_variate(t, t0, alpha, beta, peak):
    s = np.clip(t - t0, 0, None)
    y = s**alpha * np.exp(-s / beta)
    return peak * y / y.max()


def _affine(flip_x: bool = False) -> np.ndarray:
    """Standard axial scan: column index toward patient left (RAS x decreasing), row index toward posterior."""
    a = np.diag([-3.0, -3.0, 5.0, 1.0])
    a[:3, 3] = (96.0, 96.0, -10.0)
    if flip_x:
        a[0, 0] = 3.0
        a[0, 3] = -96.0
    return a


def make_case(empty_lesion: bool = False, with_nans: bool = True, flip_x: bool = False, shape=(NZ, NY, NX)):
    nz, ny, nx = shape
    z, y, x = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
    cy, cx, r = ny / 2, nx / 2, 0.42 * min(ny, nx)
    dist = np.hypot(y - cy, x - cx)
    brain = dist < r
    skull = (dist >= r) & (dist < r + 0.06 * min(ny, nx))
    csf = brain & (np.hypot(y - cy, (x - cx) * 2.5) < 0.07 * min(ny, nx))
    vessels = np.zeros(shape, bool)

    # Lesion in the patient's LEFT hemisphere: larger x index for this affine (column -> patient left).
    lx = cx + 0.22 * nx if not flip_x else cx - 0.22 * nx
    blob = np.hypot(y - cy + 0.05 * ny, x - lx) < 0.17 * min(ny, nx)
    blob &= (z >= 1) & (z <= nz - 2) & brain
    core_blob = blob & (np.hypot(y - cy + 0.05 * ny, x - lx) < 0.08 * min(ny, nx))

    rng = np.random.default_rng(0)
    nan_out = np.where(brain, 0.0, np.nan)
    cbf = 50 + 5 * rng.standard_normal(shape) + nan_out
    cbf[blob] = 20.0
    cbf[core_blob] = 6.0
    cbv = 4.0 + 0.3 * rng.standard_normal(shape) + nan_out
    cbv[core_blob] = 1.0
    mtt = 60 * cbv / cbf
    tmax = 1.5 + 0.5 * rng.random(shape) + nan_out
    tmax[blob] = 9.0
    tmax[core_blob] = 13.0
    if with_nans:
        for vol in (cbf, cbv, mtt, tmax):
            vol[min(2, nz - 1), 20:26, 20:26] = np.nan  # unknown values inside the brain
    ttp = tmax + 8.0
    rcbf = cbf / 50.0
    baseline = np.where(brain, 35.0, -1000.0).astype(float)
    baseline[skull] = 1000.0
    baseline[csf] = 5.0
    baseline += 2 * rng.standard_normal(shape)

    t = np.arange(0, 60, 1.5)
    aif = Curve(t, _gamma_variate(t, 8.0, 3.0, 1.6, 320.0), np.array([[2, 30, 30], [2, 31, 30], [3, 30, 31]]))
    vof = Curve(t, _gamma_variate(t, 11.0, 3.0, 2.0, 420.0), np.array([[4, int(0.88 * ny), nx // 2]]))

    side = np.where(brain, np.where(x > cx, 1, -1), 0).astype(np.int8)
    mirror = np.eye(4)
    mirror[0, 0], mirror[0, 3] = -1.0, nx - 1.0
    hemis = Hemispheres(side=side, mirror_vox=mirror, normal_ras=np.array([1.0, 0, 0]), point_ras=np.zeros(3))

    result = PerfusionResult(
        affine_ras=_affine(flip_x), cbf=cbf, cbv=cbv, mtt=mtt, tmax=tmax, ttp=ttp, rcbf=rcbf,
        masks=TissueMasks(brain=brain, csf=csf, vessels=vessels), hemispheres=hemis, aif=aif, vof=vof,
        affected_side="left", reference_cbf=50.0, baseline_hu=baseline,
        qa_flags={"motion_over_2mm": False, "aif_truncated": True, "pvt_positive": False},
        qa_values={"max_motion_mm": 0.7},
    )
    if empty_lesion:
        hypo = core = pen = np.zeros(shape, bool)
        levels = {lv: np.zeros(shape, bool) for lv in (4.0, 6.0, 8.0, 10.0)}
    else:
        hypo, core = blob, core_blob
        pen = hypo & ~core
        levels = {lv: brain & (np.nan_to_num(tmax) >= lv) for lv in (4.0, 6.0, 8.0, 10.0)}
    lesion = LesionMasks(hypoperfusion=hypo, core=core, penumbra=pen, tmax_levels=levels)

    # Same layout as metrics.json (index keys at the top level, nested thresholds / qa_flags), written by hand.
    vox_ml = 3 * 3 * 5 / 1000.0
    metrics = {
        "software_version": ctperf.__version__,
        "definition_version": "1.0",
        "core_ml": float(core.sum() * vox_ml),
        "penumbra_ml": float(pen.sum() * vox_ml),
        "hypoperfusion_ml": float(hypo.sum() * vox_ml),
        "mismatch_volume_ml": float(pen.sum() * vox_ml),
        "tmax4_ml": float(levels[4.0].sum() * vox_ml),
        "tmax6_ml": float(levels[6.0].sum() * vox_ml),
        "tmax8_ml": None,
        "tmax8_ml_reason": "not computed in this test",
        "tmax10_ml": float(levels[10.0].sum() * vox_ml),
        "HIR": None,
        "HIR_reason": "no tissue with Tmax above the hypoperfusion threshold",
        "Corrected_CBV_Index": None,
        "Corrected_CBV_Index_reason": "no cortex mask",
        "CBV_Index_contra_hemisphere": 0.71,
        "PVT_sec": 4.2,
        "PVT_present": None,
        "PVT_present_reason": "no venous sinus voxels identified",
        "DEFUSE3_eligible": True,
        "thresholds": {"tmax_hypoperfusion_s": 6.0, "rcbf_core": 0.3, "hir_tmax_s": 10.0, "pvt_tmax_s": 10.0},
        "qa_flags": {"vof_truncated": True},
    }
    if not core.any():
        metrics["Mismatch_Ratio"] = None
        metrics["Mismatch_Ratio_reason"] = "core volume is 0 mL: ratio undefined"
    else:
        metrics["Mismatch_Ratio"] = float(hypo.sum() / core.sum())
    return result, lesion, metrics


def _check_png(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    assert len(data) > 8_000, f"{path.name} suspiciously small ({len(data)} bytes)"
    width, height = struct.unpack(">II", data[16:24])
    assert 300 <= width <= 3000 and 200 <= height <= 3000, (path.name, width, height)
    return width, height


def _pdf_text(data: bytes) -> bytes:
    """Raw PDF bytes plus every inflated stream (enough for a text search without a PDF library)."""
    chunks = [data]
    pos = 0
    while True:
        start = data.find(b"stream", pos)
        if start < 0:
            break
        start = data.find(b"\n", start) + 1
        end = data.find(b"endstream", start)
        try:
            chunks.append(zlib.decompress(data[start:end]))
        except zlib.error:
            pass
        pos = end + 9
    return b"\n".join(chunks)


@pytest.mark.parametrize("empty_lesion", [False, True])
def test_figures_and_pdf_written(tmp_path, empty_lesion):
    """All files written and valid; the second case also has no NaNs, no AIF/VOF voxels and no VOF curve."""
    result, lesion, metrics = make_case(empty_lesion=empty_lesion, with_nans=not empty_lesion)
    if empty_lesion:
        result.aif.voxels_zyx = np.zeros((0, 3), int)
        result.vof.voxels_zyx = np.zeros((0, 3), int)
        result.vof.delta_hu = np.full_like(result.vof.delta_hu, np.nan)
    before = plt.get_fignums()
    t0 = time.perf_counter()
    paths = write_qa_figures(result, lesion, metrics, tmp_path / "qa")
    pdf = write_summary_pdf(result, lesion, metrics, tmp_path / "summary.pdf")
    elapsed = time.perf_counter() - t0

    assert [p.name for p in paths] == list(FIGURE_NAMES)
    for p in paths:
        assert p.parent == tmp_path / "qa"
        _check_png(p)
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF") and data.rstrip().endswith(b"%%EOF")
    assert 20_000 < len(data) < 5_000_000
    assert data.count(b"/Count 1") == 1  # exactly one page
    text = _pdf_text(data)
    assert ctperf.DISCLAIMER.encode() in text  # in the document metadata
    assert plt.get_fignums() == before == []
    assert elapsed < 15


def test_all_unknown_maps_and_single_slice(tmp_path):
    """An engine failure (all maps NaN, empty masks, no metrics) still gives readable figures."""
    result, lesion, _ = make_case(empty_lesion=True, shape=(1, 48, 40))
    for attr in ("cbf", "cbv", "mtt", "tmax", "ttp", "rcbf", "baseline_hu"):
        setattr(result, attr, np.full((1, 48, 40), np.nan))
    result.masks.brain[:] = False
    result.aif.delta_hu = np.full_like(result.aif.delta_hu, np.nan)
    result.qa_flags = {"pvt_positive": np.bool_(True)}
    metrics = {k: None for k in ("core_ml", "penumbra_ml", "hypoperfusion_ml", "Mismatch_Ratio", "HIR")}
    metrics["core_ml_reason"] = "no usable AIF"
    for p in write_qa_figures(result, lesion, metrics, tmp_path / "qa"):
        assert p.read_bytes()[:8] == PNG_MAGIC
    pdf = write_summary_pdf(result, lesion, metrics, tmp_path / "deep" / "s.pdf")
    assert pdf.read_bytes().startswith(b"%PDF")
    assert plt.get_fignums() == []


def test_large_study_is_fast(tmp_path):
    result, lesion, metrics = make_case(shape=(20, 256, 256))
    t0 = time.perf_counter()
    write_qa_figures(result, lesion, metrics, tmp_path / "qa")
    write_summary_pdf(result, lesion, metrics, tmp_path / "summary.pdf")
    assert time.perf_counter() - t0 < 10  # target ~3 s on a free core; generous for shared CI machines


def test_metric_text_none_with_reason():
    m = {"HIR": None, "HIR_reason": "no hypoperfusion", "core_ml": 12.345, "CBV_Index": float("nan")}
    assert metric_text(m, "HIR").full() == "n/a (no hypoperfusion)"
    assert metric_text(m, "core_ml", "mL").full() == "12.3 mL"
    assert metric_text(m, "cbv_index").full() == "n/a"
    assert metric_text(m, "missing_key").full() == "n/a (not computed)"


def test_one_row_legend_leaves_reasons_to_metrics_json():
    """The core / penumbra montage's one-row legend names a missing volume without its reason, which the projection
    figure's legend gives in short (its leading label) and metrics.json in full."""
    from ctperf.viz.qa_figures import core_penumbra_legend

    why = "contrast-to-noise ratio 23.9 below 36 (thresholds.core_min_contrast_to_noise): not measurable"
    m = {"core_ml": None, "core_ml_reason": why, "penumbra_ml": None, "penumbra_ml_reason": why,
         "hypoperfusion_ml": 98.9}
    short = [label for _, _, label in core_penumbra_legend(m, reasons=False)[:3]]
    assert short[0].endswith("n/a (see metrics.json)") and short[1].endswith("n/a (see metrics.json)")
    assert short[2].endswith("98.9 mL")
    assert core_penumbra_legend(m)[0][2].endswith("n/a (contrast-to-noise ratio 23.9 below 36)")


def test_metrics_layout_is_read():
    result, lesion, metrics = make_case()
    assert cbv_index_text(metrics)[0] == "CBV index (vs contralateral)"
    assert cbv_index_text(metrics)[1].full() == "0.71"
    flags = qa_flags_of(result, metrics)
    assert flags["vof_truncated"] and flags["aif_truncated"] and not flags["motion_over_2mm"]
    assert thresholds_from({"thresholds": {"tmax_hypoperfusion_s": 8.0, "rcbf_core": 0.2}}) == (8.0, 0.2)
    assert thresholds_from({}) == (6.0, 0.3)
    levels = dict(tmax_level_volumes(result, lesion, metrics))
    assert levels[4.0].full() == f"{metrics['tmax4_ml']:.1f} mL"
    assert levels[8.0].full() == "n/a (not computed in this test)"
    lines = pvt_lines(result, metrics)
    assert "PVT (VOF - AIF TTP): 4.2 s" in lines
    assert any("n/a (no venous sinus voxels identified)" in line for line in lines)


def test_pdf_names_the_thresholds_behind_missing_trial_labels():
    """With non-trial thresholds the PDF's eligibility rows say which threshold differs (the start of the reason,
    "trial labels need the trial thresholds", would be all that fits)."""
    from ctperf.analysis.indices import trial_thresholds_reason
    from ctperf.config import Thresholds
    from ctperf.viz.report import _details

    result, _, metrics = make_case()
    why = trial_thresholds_reason(Thresholds(rcbf_core=0.34))
    rows = dict(_details(result, {**metrics, "DEFUSE3_eligible": None, "DEFUSE3_eligible_reason": why,
                                  "EXTEND_eligible": True}))
    assert rows["DEFUSE 3 imaging criteria"] == "n/a (this run: rcbf_core = 0.34)"
    assert rows["EXTEND imaging criteria"] == "met"
