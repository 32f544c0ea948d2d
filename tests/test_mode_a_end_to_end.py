"""Mode A end to end on the digital phantom: DICOM -> maps, masks, indices vs known truth (issue 5)."""

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import nibabel as nib
import numpy as np
import pytest

from ctperf.config import Config
from ctperf.core.grid import resample_to_grid
from ctperf.io.metrics_files import load_schema
from ctperf.pipeline import MASK_FILES, MAP_FILES, run_dicom_folder
from ctperf.synthetic import PhantomSpec, make_phantom
from ctperf.synthetic.dicom_writer import DicomLayout, write_ctp_dicom

ROOT = Path(__file__).resolve().parents[1]
SPEC = dict(matrix=160, n_slices=8, pixel_mm=1.4, noise_hu=8.0, seed=3)


def _study(tmp_path_factory, name, **kw):
    ph = make_phantom(PhantomSpec(**{**SPEC, **kw}))
    d = tmp_path_factory.mktemp(name)
    write_ctp_dicom(ph.hu, ph.times_s, ph.affine_ras, d / "dicom", layout=DicomLayout(vendor="siemens"))
    return ph, d


@pytest.fixture(scope="module")
def lesion_run(tmp_path_factory):
    ph, d = _study(tmp_path_factory, "lesion", lesion="left")
    out = d / "out"
    res = run_dicom_folder(d / "dicom", out, Config())
    return ph, d, out, res


@pytest.fixture(scope="module")
def normal_run(tmp_path_factory):
    ph, d = _study(tmp_path_factory, "normal", lesion=None)
    out = d / "out"
    res = run_dicom_folder(d / "dicom", out, Config())
    return ph, out, res


def _truth_on_map_grid(ph, vol, affine_map, shape):
    return resample_to_grid(vol.astype(np.float32), ph.affine_ras, shape, affine_map) > 0.5


def test_outputs_exist_and_geometry(lesion_run):
    ph, _, out, res = lesion_run
    for f in [*MAP_FILES.values(), *MASK_FILES.values(), "metrics.json", "metrics.csv", "log.txt"]:
        assert (out / f).is_file(), f
    assert list((out / "qa").glob("*.png"))
    img = nib.load(str(out / "cbf.nii.gz"))
    # the map grid covers the same world box as the scan (same RAS orientation, possibly coarser voxels)
    corner_truth = ph.affine_ras @ np.array([0, 0, 0, 1.0])
    assert np.sign(np.diag(img.affine)[:3]).tolist() == np.sign(np.diag(ph.affine_ras)[:3]).tolist()
    vox0 = np.linalg.inv(img.affine) @ corner_truth
    assert np.all(np.abs(vox0[:3]) < 1.0)


def test_metrics_strict_json_and_schema(lesion_run):
    _, _, out, _ = lesion_run
    text = (out / "metrics.json").read_text()
    doc = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    jsonschema.validate(doc, load_schema())
    assert doc["mode"] == "A" and doc["thresholds"]["tmax_hypoperfusion_s"] == 6.0
    assert "PHANTOM" not in text and "PHANTOM" not in (out / "log.txt").read_text()


def test_lesion_mask_against_truth(lesion_run):
    ph, _, out, res = lesion_run
    hypo = res.lesion.hypoperfusion
    truth_hypo = _truth_on_map_grid(ph, ph.truth.hypoperfusion, res.perfusion.affine_ras, hypo.shape)
    dice = 2 * (hypo & truth_hypo).sum() / (hypo.sum() + truth_hypo.sum())
    assert dice >= 0.85, dice
    assert res.metrics["lesion_side"] == "left"


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=(
    "measured (engine 2.11), seed 3: Tmax > 6 s 81.5 mL against 100.0 mL (-18.5 %; 2.10: 82.6 mL; engines 2.8-2.9: "
    "86.5 mL, -13.5 %): the study dispersion prior splits 0.48 / 0.52 between 0 s and 1 s for this 1 s-dispersed "
    "tissue, so "
    "Tmax reads early, and 2.10's noise-robust MTT for the Tmax shift moves every study ~0.04-0.14 s earlier (seeds "
    "0, 1, 2, 4 closer to the truth; docs/engine-notes.md 'Model evidence')"))
def test_hypoperfusion_volume_against_truth(lesion_run):
    ph, _, _, res = lesion_run
    assert res.metrics["hypoperfusion_ml"] == pytest.approx(ph.truth_metrics["hypoperfusion_ml"], rel=0.15)


def test_ambiguous_dispersion_is_flagged(lesion_run):
    """Seed 3's study prior splits 0.48 / 0.52 between 0 s and 1 s of dispersion (the strict xfails around this
    test): metrics.json says so, with how far Tmax and CBF move between the two (measured 0.735 s and 14.3 %; seeds
    0, 1, 2, 4 of the same phantom, whose priors hold 0.97-1.00 on 1 s: 0.04-0.29 s and 0.9-7.2 %, unflagged)."""
    _, _, out, _ = lesion_run
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["qa_flags"]["tmax_dispersion_ambiguous"] is True
    assert doc["qa_values"]["tmax_dispersion_sd_s"] > 0.4
    assert doc["qa_flags"]["cbf_dispersion_ambiguous"] is True
    assert doc["qa_values"]["cbf_dispersion_sd_pct"] > 10.0


def test_core_volume_against_truth(lesion_run):
    """Engines 2.10-2.11: 23.7 mL against 24.7 mL (2.9: 23.4 mL; engine 2.8: 21.9 mL; engine 2.6: 21.4 mL, 2.1: 18.9 mL).
    Under dispersion the two conventions' cores differ: on the flow 24.7 mL, on the apparent CBF (the peak of
    h(x)R, which dispersion lowers less for long-MTT tissue) 20.6 mL; the estimate lies between them (README Known
    gaps "Core volume")."""
    ph, _, _, res = lesion_run
    m, t = res.metrics, ph.truth_metrics
    assert abs(m["core_ml"] - t["core_ml"]) <= 3.0, (m["core_ml"], t["core_ml"])
    assert t["core_apparent_ml"] < t["core_ml"] - 2.0
    assert t["core_apparent_ml"] <= m["core_ml"] <= t["core_ml"], (m["core_ml"], t["core_apparent_ml"], t["core_ml"])


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=(
    "measured (engine 2.11), 8 HU on 1.4 mm pixels, seed 3: HIR 0.159 against 0.242 (-34 %), Tmax > 6 s 81.5 mL "
    "against 100.0 mL (2.10: 0.161, 82.6 mL; engines 2.8-2.9: 0.162, 86.5 mL): on this seed the study dispersion "
    "prior is split 0.48 / 0.52 "
    "between 0 s and 1 s for 1 s-dispersed tissue (0.97-1.00 on 1 s on seeds 0, 1, 2, 4), so Tmax reads early "
    "(normal tissue -0.60 s; 2.9: -0.47 s). Engine "
    "2.6 (uniform prior; 2.3: 0.208): HIR 0.207 (-14 %; engine 2.2 "
    "without the Tmax regularisation -7 %, helped by noise): noise-free the default then read the lesion centre's "
    "Tmax early (true Tmax 8-10 s: -1.25 s, 10-12 s: -2.0 s; Tmax > 10 s 0 mL, HIR 0): for long-MTT tissue the "
    "time of the flat peak of "
    "h(x)R spans 0-6.4 s (MTT 17 s) over the family's 0-3 s of dispersion and the regional evidence does not "
    "identify the dispersion; with the study dispersion prior the noise-free error was -0.2 s (HIR 0.205)"))
def test_hir_against_truth(lesion_run):
    ph, _, _, res = lesion_run
    assert res.metrics["HIR"] == pytest.approx(ph.truth_metrics["HIR"], rel=0.10)


def test_indices_against_truth(lesion_run):
    ph, _, _, res = lesion_run
    m, t = res.metrics, ph.truth_metrics
    assert m["CBV_Index_contra_hemisphere"] == pytest.approx(t["CBV_Index_contra_hemisphere"], rel=0.10)
    assert m["PVT_sec"] == pytest.approx(t["PVT_sec"], rel=0.10)


def test_no_lesion_study(normal_run):
    ph, out, res = normal_run
    m = res.metrics
    assert m["hypoperfusion_ml"] < 2.0
    assert m["core_ml"] < 1.0
    assert m["Mismatch_Ratio"] is None and m["Mismatch_Ratio_reason"]


def test_recompute_with_new_thresholds(lesion_run, tmp_path):
    import shutil

    from ctperf.pipeline import recompute_outputs

    _, _, out, res = lesion_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    cfg = Config()
    cfg.thresholds.tmax_hypoperfusion_s = 10.0
    m = recompute_outputs(copy, cfg)
    assert m["hypoperfusion_ml"] == pytest.approx(res.metrics["tmax10_ml"], rel=0.05, abs=0.5)
    cfg = Config()
    m2 = recompute_outputs(copy, cfg)
    assert m2["hypoperfusion_ml"] == pytest.approx(res.metrics["hypoperfusion_ml"], abs=1e-6)


def test_seed_wrapper_matches_ctperf_run(lesion_run, tmp_path):
    """`python ct_perfusion_auto.py` is `ctperf run`; --roi_mask adds the Conventional CBV Index only."""
    from ctperf.io.nifti import save_volume

    ph, d, out, res = lesion_run
    roi = tmp_path / "roi.nii.gz"
    save_volume(roi, ph.truth.lesion_any & ph.truth.cortex, ph.affine_ras, dtype=np.uint8)  # on the scan grid
    wrapped = tmp_path / "wrapped"
    r = subprocess.run([sys.executable, str(ROOT / "ct_perfusion_auto.py"), "--dicom_dir", str(d / "dicom"),
                        "--out_dir", str(wrapped), "--roi_mask", str(roi), "-q"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    a, b = json.loads((out / "metrics.json").read_text()), json.loads((wrapped / "metrics.json").read_text())
    for key in ("hypoperfusion_ml", "core_ml", "penumbra_ml", "HIR", "Corrected_CBV_Index", "PVT_sec"):
        assert a[key] == b[key], key
    for f in [*MASK_FILES.values(), *MAP_FILES.values()]:
        assert np.array_equal(np.asanyarray(nib.load(str(out / f)).dataobj),
                              np.asanyarray(nib.load(str(wrapped / f)).dataobj), equal_nan=True), f
    assert a["Conventional_CBV_Index"] is None and a["Conventional_CBV_Index_reason"]
    # truth: mean true CBV in the ROI / in its mirror image across the phantom's midline
    from ctperf.core.midline import mirror
    from ctperf.engine.hemispheres import find_midline

    tr = ph.truth
    hemi = find_midline(np.clip(ph.hu[0], 0, 80), tr.brain, ph.affine_ras)
    roi_t = tr.lesion_any & tr.cortex & tr.tissue
    truth_index = tr.cbv[roi_t].mean() / tr.cbv[mirror(roi_t, hemi) & tr.tissue & ~roi_t].mean()
    assert b["Conventional_CBV_Index"] == pytest.approx(truth_index, rel=0.15)


def test_mode_b_on_mode_a_maps_gives_same_indices(lesion_run, tmp_path):
    """One indices module: Mode B on Mode A's own maps (ROI covering the whole brain) reproduces Mode A."""
    from ctperf.io.nifti import load_volume
    from ctperf.synthetic.screenshots import render_mip_screenshot

    _, _, out, res = lesion_run
    tmax, aff = load_volume(out / "tmax.nii.gz")
    ny, nx = tmax.shape[1:]
    frame = np.array([[1, 1], [1, nx - 2], [ny - 2, nx - 2], [ny - 2, 1]], float)
    render_mip_screenshot(tmax, aff, tmp_path / "mip.png", polygon_yx=frame, scale=1.5, style="outline")
    mb = tmp_path / "b"
    r = subprocess.run([sys.executable, "-m", "ctperf.cli", "maps", "--mip", str(tmp_path / "mip.png"),
                        "--tmax", str(out / "tmax.nii.gz"), "--cbv", str(out / "cbv.nii.gz"),
                        "--rcbf", str(out / "rcbf.nii.gz"), "--aif_csv", str(out / "aif.csv"),
                        "--vof_csv", str(out / "vof.csv"), "--tissue-mask", str(out / "aux" / "tissue_mask.nii.gz"),
                        "--out_dir", str(mb)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    b = json.loads((mb / "metrics.json").read_text())
    a = res.metrics
    for key in ("hypoperfusion_ml", "core_ml", "penumbra_ml", "tmax4_ml", "tmax8_ml", "tmax10_ml", "HIR",
                "Mismatch_Ratio", "lesion_side", "DEFUSE3_eligible", "EXTEND_eligible"):
        assert b[key] == a[key], key
    assert b["PVT_sec"] == pytest.approx(a["PVT_sec"], abs=0.35)  # TTP from the CSV's 3-decimal curve samples
    for key in ("Corrected_CBV_Index", "CBV_Index_contra_hemisphere", "CBV_Index_mirror"):
        assert b[key] == pytest.approx(a[key], rel=0.05), key  # midline re-fitted on the CBV map
