"""Same maps, same numbers: Mode B on Mode A's own maps gives Mode A's indices (issue 16), and says so otherwise."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ctperf.config import Config
from ctperf.io.nifti import load_volume
from ctperf.modeb.curves_csv import read_curve_csv, time_to_peak_s
from ctperf.modeb.pipeline_b import analyse_maps, saved_tissue
from ctperf.pipeline import MASK_FILES, run_dicom_folder
from ctperf.synthetic import PhantomSpec, make_phantom
from ctperf.synthetic.dicom_writer import DicomLayout, write_ctp_dicom
from ctperf.synthetic.screenshots import render_mip_screenshot

ROOT = Path(__file__).resolve().parents[1]
INDEX_KEYS = ("hypoperfusion_ml", "core_ml", "penumbra_ml", "mismatch_volume_ml", "Mismatch_Ratio", "HIR",
              "tmax4_ml", "tmax6_ml", "tmax8_ml", "tmax10_ml", "lesion_side", "Corrected_CBV_Index",
              "CBV_Index_contra_hemisphere", "CBV_Index_mirror", "PVT_sec", "sinus_tmax_s", "PVT_present",
              "DEFUSE3_eligible", "EXTEND_eligible")


@pytest.fixture(scope="module")
def mode_a(tmp_path_factory):
    ph = make_phantom(PhantomSpec(matrix=160, n_slices=8, pixel_mm=1.4, noise_hu=8.0, seed=3, lesion="left"))
    d = tmp_path_factory.mktemp("parity")
    write_ctp_dicom(ph.hu, ph.times_s, ph.affine_ras, d / "dicom", layout=DicomLayout(vendor="siemens"))
    out = d / "a"
    run_dicom_folder(d / "dicom", out, Config())
    tmax, aff = load_volume(out / "tmax.nii.gz")
    # an ROI drawn around the whole brain: the footprint then excludes nothing Mode A counts
    ny, nx = tmax.shape[1:]
    poly = np.array([[2, 2], [2, nx - 3], [ny - 3, nx - 3], [ny - 3, 2]], float)
    render_mip_screenshot(tmax, aff, d / "mip.png", poly, scale=1.2, distractors=False)
    return d, out, json.loads((out / "metrics.json").read_text())


def _same(a, b) -> bool:
    """Equal index values: numbers within 1e-6 relative / 1e-3 absolute, anything else exactly."""
    if isinstance(a, (int, float)) and not isinstance(a, bool) and isinstance(b, (int, float)):
        return b == pytest.approx(a, rel=1e-6, abs=1e-3)
    return a == b


def _maps(out):
    return [load_volume(out / f"{k}.nii.gz")[0] for k in ("tmax", "cbv", "rcbf")], load_volume(out / "tmax.nii.gz")[1]


def test_same_maps_same_indices(mode_a):
    d, out, m_a = mode_a
    (tmax, cbv, rcbf), aff = _maps(out)
    src = saved_tissue(out / "tmax.nii.gz", tmax.shape, aff)
    assert src is not None and src.kind == "mode_a"
    ttp = [time_to_peak_s(*read_curve_csv(out / f)) for f in ("aif.csv", "vof.csv")]
    res = analyse_maps(tmax, cbv, rcbf, aff, Config(), aif_ttp_s=ttp[0], vof_ttp_s=ttp[1], tissue=src.tissue,
                       hemispheres=src.hemispheres, sinus=src.sinus)
    for key in INDEX_KEYS:
        assert _same(m_a[key], res.metrics[key]), key


def _run_b(d, folder, out):
    args = [sys.executable, "-m", "ctperf.cli", "maps", "--mip", str(d / "mip.png"),
            *[a for k in ("tmax", "cbv", "rcbf") for a in (f"--{k}", str(folder / f"{k}.nii.gz"))],
            "--aif_csv", str(folder / "aif.csv"), "--vof_csv", str(folder / "vof.csv"), "--out_dir", str(out)]
    r = subprocess.run(args, capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    return json.loads((out / "metrics.json").read_text()), r.stdout


def test_cli_on_mode_a_folder_matches_mode_a(mode_a, tmp_path):
    d, out, m_a = mode_a
    m_b, stdout = _run_b(d, out, tmp_path / "b")
    assert m_b["provenance"]["tissue_mask"]["source"] == "mode_a"
    for key in INDEX_KEYS:
        assert _same(m_a[key], m_b[key]), key
    # Mode A's mask names beside the seed's masks/ names, the same PDF summary, the ROI QA figure
    for f in (*MASK_FILES.values(), "masks/core_mask.nii.gz", "masks/hypoperfusion_mask.nii.gz",
              "masks/penumbra_mask.nii.gz", "report.pdf", "qa/roi_registration.png"):
        assert (tmp_path / "b" / f).is_file(), f
    assert (tmp_path / "b" / "report.pdf").read_bytes()[:5] == b"%PDF-"
    assert set(m_a) - set(m_b) == set()  # every Mode A key is in Mode B's metrics


def test_maps_without_mode_a_folder_state_the_difference(mode_a, tmp_path):
    d, out, m_a = mode_a
    bare = tmp_path / "maps"
    bare.mkdir()
    for f in ("tmax.nii.gz", "cbv.nii.gz", "rcbf.nii.gz", "aif.csv", "vof.csv"):
        shutil.copy(out / f, bare / f)
    m_b, stdout = _run_b(d, bare, tmp_path / "b")
    tm = m_b["provenance"]["tissue_mask"]
    assert tm["source"] == "maps" and "can differ from Mode A" in tm["note"]
    assert "can differ from Mode A" in " ".join(stdout.split())
