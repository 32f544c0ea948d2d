"""Mode B on a Mode A study whose ROI does not cover the whole brain (review 46, findings 5, 10, 11).

The parity tests (tests/test_modeb_parity.py) draw the ROI around the whole brain; here the ROI is drawn, as a user
would, around the lesion only, so delayed tissue outside it must still be kept out of the CBV indices' normal
reference, and what differs from Mode A must be said.  Also: Mode B records its input files and study_id as Mode A
does, and records only the config sections it uses.
"""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial import ConvexHull

from ctperf.config import Config, OutputConfig, Thresholds
from ctperf.io.nifti import load_volume
from ctperf.modeb.curves_csv import read_curve_csv, time_to_peak_s
from ctperf.modeb.pipeline_b import analyse_maps, data_record, run_maps, saved_tissue
from ctperf.modeb.roi_mip import roi_from_screenshot
from ctperf.pipeline import run_dicom_folder
from ctperf.synthetic import PhantomSpec, make_phantom
from ctperf.synthetic.dicom_writer import DicomLayout, write_ctp_dicom
from ctperf.synthetic.screenshots import render_mip_screenshot

#: The indices compared with Mode A's (the ROI-dependent Conventional CBV Index included).
INDEX_KEYS = ("hypoperfusion_ml", "core_ml", "penumbra_ml", "mismatch_volume_ml", "Mismatch_Ratio", "HIR",
              "tmax4_ml", "tmax6_ml", "tmax8_ml", "tmax10_ml", "lesion_side", "Corrected_CBV_Index",
              "CBV_Index_contra_hemisphere", "CBV_Index_mirror", "Conventional_CBV_Index", "PVT_sec",
              "sinus_tmax_s", "PVT_present", "DEFUSE3_eligible", "EXTEND_eligible")
QUICK = Config(output=OutputConfig(write_qa_png=False, write_pdf=False))


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """`ctperf demo`'s study (default phantom, seed 0) through Mode A, and a screenshot of its Tmax MIP with a
    yellow outline around the dilated hull of the hypoperfusion (as tools/make_mip.py of the review)."""
    d = tmp_path_factory.mktemp("demo")
    ph = make_phantom(PhantomSpec(seed=0))
    write_ctp_dicom(ph.hu, ph.times_s, ph.affine_ras, d / "dicom", layout=DicomLayout(vendor="siemens"), seed=0)
    out = d / "a"
    run_dicom_folder(d / "dicom", out, Config())
    tmax, aff = load_volume(out / "tmax.nii.gz")
    hypo = load_volume(out / "hypoperf_mask_tmax6.nii.gz")[0] > 0
    pts = np.argwhere(ndimage.binary_dilation(hypo.any(axis=0), iterations=6))
    hull = pts[ConvexHull(pts).vertices].astype(float)
    render_mip_screenshot(np.nan_to_num(tmax), aff, d / "mip.png", polygon_yx=hull, scale=1.3, offset_xy=(90, 60),
                          style="outline", distractors=True)
    return d, out, json.loads((out / "metrics.json").read_text())


def _run(d, out, dest, cfg=QUICK, **kw):
    maps = {k: out / f"{k}.nii.gz" for k in ("tmax", "cbv", "rcbf")}
    return run_maps(d / "mip.png", maps["tmax"], maps["cbv"], maps["rcbf"], out / "aif.csv", out / "vof.csv", dest,
                    cfg, **kw)


def test_cbv_reference_excludes_delayed_tissue_outside_the_roi(demo):
    d, out, m_a = demo
    tmax, aff = load_volume(out / "tmax.nii.gz")
    cbv, rcbf = (load_volume(out / f"{k}.nii.gz")[0] for k in ("cbv", "rcbf"))
    src = saved_tissue(out / "tmax.nii.gz", tmax.shape, aff)
    footprint = roi_from_screenshot(d / "mip.png", tmax, aff).footprint_zyx
    ttp = [time_to_peak_s(*read_curve_csv(out / f)) for f in ("aif.csv", "vof.csv")]
    res = analyse_maps(tmax, cbv, rcbf, aff, Config(), roi_footprint=footprint, aif_ttp_s=ttp[0], vof_ttp_s=ttp[1],
                       tissue=src.tissue, hemispheres=src.hemispheres, sinus=src.sinus)
    m_b = res.metrics
    # the case the whole-brain ROI of the parity test hid: contralateral Tmax >= 4 s tissue outside the ROI
    contra = src.hemispheres.side == (-1 if m_a["lesion_side"] == "left" else 1)
    assert (src.tissue & contra & (np.nan_to_num(tmax) >= 4.0) & ~footprint).sum() > 20
    for key in ("CBV_Index_contra_hemisphere", "Corrected_CBV_Index", "CBV_Index_mirror"):
        assert m_b[key] == m_a[key], key
    # the lesion volumes stay restricted to the footprint (docs/definitions.md, Mode B)
    assert m_b["tmax4_ml"] == pytest.approx(res.lesion.tmax_levels[4.0].sum() * m_b["voxel_volume_ml"], abs=1e-3)
    assert not (res.lesion.tmax_levels[4.0] & ~footprint).any()
    assert m_b["tmax4_ml"] < m_a["tmax4_ml"]
    assert m_b["hypoperfusion_ml"] == m_a["hypoperfusion_ml"] and m_b["core_ml"] == m_a["core_ml"]


def test_note_names_the_indices_that_differ_from_mode_a(demo, tmp_path):
    d, out, m_a = demo
    m_b = _run(d, out, tmp_path / "b")
    tm = m_b["provenance"]["tissue_mask"]
    assert tm["source"] == "mode_a"
    differ = [k for k in INDEX_KEYS if m_b[k] != m_a[k]]
    assert set(differ) == {"tmax4_ml", "Conventional_CBV_Index"}  # nothing else, CBV_Index_contra_hemisphere above all
    head, _, named = tm["note"].partition("indices identical to Mode A's except ")
    assert named, tm["note"]
    for key in INDEX_KEYS:
        assert (key in named.replace("(", " ").replace(",", " ").split()) == (key in differ), key
    assert "ROI footprint" in named


def test_note_says_identical_when_nothing_differs(demo, tmp_path):
    from ctperf.modeb.pipeline_b import mode_a_note

    _, _, m_a = demo
    assert mode_a_note(m_a, m_a, INDEX_KEYS).endswith("indices identical to Mode A's")
    other = {**m_a, "thresholds": {**m_a["thresholds"], "tmax_hypoperfusion_s": 8.0}, "hypoperfusion_ml": 1.0}
    assert "hypoperfusion_ml (the thresholds differ" in mode_a_note(other, m_a, INDEX_KEYS)


@pytest.fixture(scope="module")
def with_config(demo, tmp_path_factory):
    """Mode B on the demo's maps with a config file (Tmax 8 s, and an engine setting Mode B does not use) and the
    demo's own tissue mask given as --tissue_mask."""
    d, out, _ = demo
    cfg_file = d / "t8.toml"
    cfg_file.write_text('[thresholds]\ntmax_hypoperfusion_s = 8\n[deconvolution]\nmethod = "tikhonov"\n'
                        '[output]\nwrite_pdf = false\nwrite_qa_png = false\n')
    dest = tmp_path_factory.mktemp("b8") / "out"
    m = _run(d, out, dest, Config.load(cfg_file), tissue_mask=out / "aux" / "tissue_mask.nii.gz",
             config_file=cfg_file)
    return d, out, cfg_file, dest, m


def _sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_inputs_and_study_id_recorded_like_mode_a(with_config, demo):
    d, out, cfg_file, dest, m = with_config
    files = m["provenance"]["input_files"]
    mask = out / "aux" / "tissue_mask.nii.gz"
    assert files["config"] == {"file": "t8.toml", "sha256": _sha(cfg_file), "note": files["config"]["note"]}
    assert files["tissue_mask"] == {"file": "tissue_mask.nii.gz", "sha256": _sha(mask), "grid": "same"}
    data = {"mip": d / "mip.png", **{k: out / f"{k}.nii.gz" for k in ("tmax", "cbv", "rcbf")},
            "aif_csv": out / "aif.csv", "vof_csv": out / "vof.csv"}
    for role, path in data.items():
        assert files[role] == {"sha256": _sha(path)}, role  # no file name: it may name the patient
    # the study of the Mode A folder holding the maps, also with --tissue_mask
    assert m["study_id"] == demo[2]["study_id"] is not None
    log = (dest / "log.txt").read_text()
    assert f"study_id: {m['study_id']}\n" in log
    for text in ("t8.toml", _sha(cfg_file), "tissue_mask.nii.gz", _sha(mask), _sha(d / "mip.png")):
        assert text in log, text
    assert "mip.png" not in log and str(d) not in log and str(out) not in log  # no folders, no image names
    assert json.loads((dest / "metrics.json").read_text())["provenance"]["input_files"] == files


def test_config_records_only_the_sections_mode_b_uses(with_config):
    _, _, _, _, m = with_config
    prov = m["provenance"]
    assert set(prov["config"]) == {"thresholds", "output"}
    assert prov["config"]["thresholds"]["tmax_hypoperfusion_s"] == m["thresholds"]["tmax_hypoperfusion_s"] == 8.0
    assert m["method"]["deconvolution"].startswith("none")
    unused = prov["config_not_used"]
    assert {"deconvolution", "aif", "preprocess"} <= set(unused["sections"])
    assert unused["ignored_settings"] == {"deconvolution.method": "tikhonov"}
    assert "deconvolution.method = tikhonov" in prov["input_files"]["config"]["note"]  # shown on the console
    assert Config.from_dict(prov["config"]).thresholds == Thresholds(tmax_hypoperfusion_s=8.0)  # still a config


def test_data_record_of_a_series_ignores_file_names(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for folder, names in ((a, ("IM1", "IM2")), (b, ("x_9.dcm", "x_1.dcm"))):
        (folder / "sub").mkdir(parents=True)
        (folder / names[0]).write_bytes(b"slice one")
        (folder / "sub" / names[1]).write_bytes(b"slice two")
    rec = data_record(a)
    assert rec == data_record(b) and rec["n_files"] == 2 and set(rec) == {"sha256", "n_files"}
    assert data_record([a / "IM1", a / "sub" / "IM2"])["sha256"] == rec["sha256"]
    assert data_record(a / "IM1") == {"sha256": hashlib.sha256(b"slice one").hexdigest()}
