"""Mode B end to end: phantom truth maps (NIfTI and colour-coded DICOM) + yellow ROI screenshot + curve CSVs."""

import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial import ConvexHull

from ctperf.io.nifti import save_volume
from ctperf.pipeline import MASK_FILES
from ctperf.synthetic import PhantomSpec, make_phantom
from ctperf.synthetic.screenshots import render_mip_screenshot
from ctperf.synthetic.vendor_maps import ramp_colours, write_colour_series

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def truth_maps(tmp_path_factory):
    ph = make_phantom(PhantomSpec(matrix=192, n_slices=6, pixel_mm=1.15, noise_hu=0.0, lesion="left", seed=5))
    tr = ph.truth
    brain = tr.brain
    contra = tr.tissue & (tr.side == -1)
    rcbf = tr.cbf / tr.cbf[contra].mean()
    maps = {"tmax": tr.tmax, "cbv": tr.cbv, "rcbf": rcbf}
    maps = {k: np.where(brain, v, np.nan).astype(np.float32) for k, v in maps.items()}
    d = tmp_path_factory.mktemp("modeb")
    for k, v in maps.items():
        save_volume(d / f"{k}.nii.gz", v, ph.affine_ras)
    # curves as a vendor would export them: semicolon CSV with a header
    t, a = tr.aif_true
    tv, v = tr.vof_true
    (d / "aif.csv").write_text("time_s;AIF\n" + "\n".join(f"{x:.2f};{y:.3f}" for x, y in zip(t, a)))
    (d / "vof.csv").write_text("time_s,VOF\n" + "\n".join(f"{x:.2f},{y:.3f}" for x, y in zip(tv, v)))
    # ROI drawn generously around the whole lesion on the Tmax MIP
    les2d = ndimage.binary_dilation(tr.lesion_any.any(axis=0), iterations=6)
    pts = np.argwhere(les2d)
    hull = pts[ConvexHull(pts).vertices].astype(float)
    png, true_mask, _ = render_mip_screenshot(maps["tmax"], ph.affine_ras, d / "mip.png", polygon_yx=hull,
                                              scale=1.3, offset_xy=(90, 60), style="outline", distractors=True)
    # the same ROI on a jet-coloured Tmax MIP, as syngo.via / RAPID users have it
    render_mip_screenshot(maps["tmax"], ph.affine_ras, d / "mip_jet.png", polygon_yx=hull, scale=1.1,
                          offset_xy=(80, 70), lut=ramp_colours("jet"), window=(0.0, 16.0), distractors=True)
    return ph, d, maps, true_mask


def _run(d, out, extra=(), mip="mip.png"):
    args = [sys.executable, str(ROOT / "scripts" / "one_shot_from_mip.py"), "--mip", str(d / mip),
            "--aif_csv", str(d / "aif.csv"), "--vof_csv", str(d / "vof.csv"), "--out_dir", str(out), *extra]
    return subprocess.run(args, capture_output=True, text=True)


def test_mode_b_nifti_maps_match_truth(truth_maps, tmp_path):
    ph, d, _, _ = truth_maps
    out = tmp_path / "out"
    r = _run(d, out, ["--tmax", str(d / "tmax.nii.gz"), "--cbv", str(d / "cbv.nii.gz"),
                      "--rcbf", str(d / "rcbf.nii.gz")])
    assert r.returncode == 0, r.stderr
    for f in ("metrics.json", "log.txt", "masks/core_mask.nii.gz", "masks/hypoperfusion_mask.nii.gz",
              "masks/penumbra_mask.nii.gz", "qa/roi_registration.png", "report.pdf", *MASK_FILES.values()):
        assert (out / f).is_file(), f
    m = json.loads((out / "metrics.json").read_text())
    t = ph.truth_metrics
    assert m["mode"] == "B"
    # the phantom's lesion reaches its slab's end slices: lower-bound volumes, flagged as Mode A flags them
    assert m["qa_flags"].pop("lesion_beyond_coverage") and m["qa_values"]["lesion_end_slice_ml"] >= 1.0
    assert not any(m["qa_flags"].values()), m["qa_flags"]
    log = (out / "log.txt").read_text().splitlines()
    assert "mip.png" not in "\n".join(log)  # file names may carry patient names
    # dated once, at the top, as Mode A's: the UTC date and time of the analysis in ISO 8601
    assert log[1].startswith("analysed: ") and log[1].endswith("Z"), log[:3]
    when = datetime.fromisoformat(log[1].removeprefix("analysed: "))
    assert when.utcoffset() == timedelta(0) and datetime.now(timezone.utc) - when < timedelta(hours=1)
    assert m["hypoperfusion_ml"] == pytest.approx(t["hypoperfusion_ml"], rel=0.05)
    assert m["core_ml"] == pytest.approx(t["core_ml"], rel=0.10, abs=1.0)
    assert m["HIR"] == pytest.approx(t["HIR"], rel=0.05)
    assert m["CBV_Index_contra_hemisphere"] == pytest.approx(t["CBV_Index_contra_hemisphere"], rel=0.10)
    assert m["Corrected_CBV_Index"] == pytest.approx(t["Corrected_CBV_Index"], rel=0.10)
    assert m["PVT_sec"] == pytest.approx(t["PVT_sec"], abs=0.3)
    assert m["lesion_side"] == "left"


def test_mode_b_colour_coded_mip_screenshot(truth_maps, tmp_path):
    """The issue's user: a jet-coloured Tmax MIP with a yellow outline, green / orange strokes and white text."""
    ph, d, _, _ = truth_maps
    out = tmp_path / "out"
    r = _run(d, out, ["--tmax", str(d / "tmax.nii.gz"), "--cbv", str(d / "cbv.nii.gz"),
                      "--rcbf", str(d / "rcbf.nii.gz")], mip="mip_jet.png")
    assert r.returncode == 0, r.stderr
    m = json.loads((out / "metrics.json").read_text())
    assert m["provenance"]["roi_registration"]["score"] > 0.9
    assert m["hypoperfusion_ml"] == pytest.approx(ph.truth_metrics["hypoperfusion_ml"], rel=0.10)
    assert m["core_ml"] == pytest.approx(ph.truth_metrics["core_ml"], rel=0.10, abs=1.0)


def test_mode_b_colour_coded_dicom(truth_maps, tmp_path):
    ph, d, maps, _ = truth_maps
    ranges = {"tmax": (0.0, 20.0), "cbv": (0.0, 8.0), "rcbf": (0.0, 2.0)}
    args = []
    for name, rng in ranges.items():
        write_colour_series(maps[name], ph.affine_ras, tmp_path / name, rng,
                            label=name.upper())
        args += [f"--{name}", str(tmp_path / name), f"--{name}-range", f"{rng[0]},{rng[1]}"]
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "ctperf.cli", "maps", "--mip", str(d / "mip.png"),
                        "--aif_csv", str(d / "aif.csv"), "--vof_csv", str(d / "vof.csv"), "--out_dir", str(out),
                        *args], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    m = json.loads((out / "metrics.json").read_text())
    t = ph.truth_metrics
    assert m["hypoperfusion_ml"] == pytest.approx(t["hypoperfusion_ml"], rel=0.10)
    assert m["core_ml"] == pytest.approx(t["core_ml"], rel=0.15, abs=1.5)


def test_mode_b_clear_errors(truth_maps, tmp_path):
    ph, d, maps, _ = truth_maps
    save_volume(tmp_path / "small.nii.gz", maps["cbv"][:, :100, :100], ph.affine_ras)
    r = _run(d, tmp_path / "o1", ["--tmax", str(d / "tmax.nii.gz"), "--cbv", str(tmp_path / "small.nii.gz"),
                                  "--rcbf", str(d / "rcbf.nii.gz")])
    assert r.returncode != 0 and "different grids" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "bad.csv").write_text("hello\nworld\n")
    r = subprocess.run([sys.executable, "-m", "ctperf.cli", "maps", "--mip", str(d / "mip.png"),
                        "--tmax", str(d / "tmax.nii.gz"), "--cbv", str(d / "cbv.nii.gz"), "--rcbf",
                        str(d / "rcbf.nii.gz"), "--aif_csv", str(tmp_path / "bad.csv"), "--vof_csv",
                        str(d / "vof.csv"), "--out_dir", str(tmp_path / "o2")], capture_output=True, text=True)
    assert r.returncode != 0 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


def test_mode_b_names_its_config_file_through_the_cli(truth_maps, tmp_path):
    """`ctperf maps --config F` (and the seed script) name F with its SHA-256 in metrics.json and log.txt, as Mode A
    does, and say that engine settings in it are ignored (review 46: Mode B recorded no input file)."""
    ph, d, _, _ = truth_maps
    cfg = tmp_path / "mine.toml"
    cfg.write_text("[thresholds]\nrcbf_core = 0.3\n[deconvolution]\nmethod = 'standard'\n")
    out = tmp_path / "out"
    r = _run(d, out, ["--tmax", str(d / "tmax.nii.gz"), "--cbv", str(d / "cbv.nii.gz"), "--rcbf",
                      str(d / "rcbf.nii.gz"), "--config", str(cfg)])
    assert r.returncode == 0, r.stderr
    m = json.loads((out / "metrics.json").read_text())
    rec = m["provenance"]["input_files"]["config"]
    assert rec["file"] == "mine.toml" and len(rec["sha256"]) == 64 and "deconvolution.method" in rec["note"]
    assert "deconvolution" not in m["provenance"]["config"]
    assert rec["sha256"] in (out / "log.txt").read_text()
