"""`ctperf run --dicom-out`: Parametric Maps, SEG, SR and Secondary Captures (README "DICOM outputs")."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("highdicom", reason="the dicom-out extra (highdicom) is not installed")
import highdicom as hd  # noqa: E402
import pydicom  # noqa: E402

import ctperf  # noqa: E402
from ctperf.config import Config  # noqa: E402
from ctperf.io.dicom_out.parametric_map import MAPS, read_parametric_map  # noqa: E402
from ctperf.io.dicom_out.seg import read_segmentation  # noqa: E402
from ctperf.io.dicom_out.sr import read_report_values  # noqa: E402
from ctperf.io.nifti import load_volume  # noqa: E402
from ctperf.pipeline import MAP_FILES, MASK_FILES, recompute_outputs, run_dicom_folder  # noqa: E402
from ctperf.synthetic import PhantomSpec, make_phantom  # noqa: E402
from ctperf.synthetic.dicom_writer import DicomLayout, write_ctp_dicom  # noqa: E402

PATIENT = "SECRET^PATIENT"
PM_UID, SEG_UID = "1.2.840.10008.5.1.4.1.1.30", "1.2.840.10008.5.1.4.1.1.66.4"


def _study(root: Path, tilt: float) -> Path:
    ph = make_phantom(PhantomSpec(matrix=64, n_slices=4, pixel_mm=3.5, noise_hu=3.0, seed=0))
    write_ctp_dicom(ph.hu, ph.times_s, ph.affine_ras, root / "dicom",
                    layout=DicomLayout(gantry_tilt_deg=tilt, patient_name=PATIENT, patient_id="ID-SECRET-42"))
    return root / "dicom"


@pytest.fixture(scope="module", params=[0.0, 15.0], ids=["straight", "tilt15"])
def done(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"dcmout{int(request.param)}")
    src = _study(root, request.param)
    out = root / "out"
    run_dicom_folder(src, out, Config(), dicom_out=True)
    return src, out, request.param


def _src_ds(src: Path):
    return pydicom.dcmread(next(p for p in sorted(src.rglob("*")) if p.is_file() and p.suffix == ".dcm"),
                           stop_before_pixels=True)


def test_all_objects_written(done):
    _, out, _ = done
    names = sorted(p.name for p in (out / "dicom").glob("*.dcm"))
    assert names == sorted([f"pm_{m}.dcm" for m in MAPS] + ["seg_lesions.dcm", "sr_measurements.dcm",
                            "sc_summary.dcm", "sc_maps_montage.dcm", "sc_core_penumbra_montage.dcm",
                            "sc_tmax_mip.dcm", "sc_aif_vof.dcm"])


def test_parametric_maps_round_trip_the_nifti_maps(done):
    _, out, tilt = done
    for name, spec in MAPS.items():
        nii, aff = load_volume(out / MAP_FILES[name])
        data, aff_dcm, code = read_parametric_map(out / "dicom" / f"pm_{name}.dcm")
        assert code == spec.code[0]
        assert np.array_equal(data, nii, equal_nan=True), name
        np.testing.assert_allclose(aff_dcm, aff, atol=1e-4)
    if tilt:  # the tilted grid stays sheared (no resampling): z axis not orthogonal to the plane
        assert abs(np.dot(aff[:3, 2], np.cross(aff[:3, 0], aff[:3, 1]))) / (
            np.linalg.norm(aff[:3, 2]) * np.linalg.norm(np.cross(aff[:3, 0], aff[:3, 1]))) < np.cos(np.radians(10))


def test_seg_round_trips_the_masks_and_sr_the_metrics(done):
    _, out, _ = done
    seg = read_segmentation(out / "dicom" / "seg_lesions.dcm")
    for key, fname in MASK_FILES.items():
        assert np.array_equal(seg[key], load_volume(out / fname)[0] > 0.5), key
    metrics = json.loads((out / "metrics.json").read_text())
    values = read_report_values(out / "dicom" / "sr_measurements.dcm")
    for key in ("core_ml", "penumbra_ml", "hypoperfusion_ml", "HIR", "tmax6_ml", "Mismatch_Ratio"):
        if metrics[key] is not None:
            assert values[key] == pytest.approx(metrics[key]), key


def test_objects_in_source_study_and_frame_of_reference(done):
    src, out, _ = done
    ref = _src_ds(src)
    series = set()
    for p in sorted((out / "dicom").glob("*.dcm")):
        ds = pydicom.dcmread(p)
        assert ds.StudyInstanceUID == ref.StudyInstanceUID and ds.PatientID == ref.PatientID
        assert ds.SeriesInstanceUID != ref.SeriesInstanceUID and ds.SOPInstanceUID != ref.SOPInstanceUID
        series.add(ds.SeriesInstanceUID)
        assert ds.ContentQualification == "RESEARCH"
        assert f"ctperf {ctperf.__version__}" in [e.get("SoftwareVersions") for e in ds.ContributingEquipmentSequence]
        if ds.SOPClassUID in (PM_UID, SEG_UID):  # source frame of reference, references the source series
            assert ds.FrameOfReferenceUID == ref.FrameOfReferenceUID
            assert ref.SeriesInstanceUID in {s.SeriesInstanceUID for s in ds.ReferencedSeriesSequence}
        if ds.SOPClassUID == SEG_UID:
            for seg in ds.SegmentSequence:
                algo = seg.SegmentationAlgorithmIdentificationSequence[0]
                assert (algo.AlgorithmName, algo.AlgorithmVersion) == ("ctperf", ctperf.__version__)
    assert len(series) == 13


def test_highdicom_parses_every_object(done):
    _, out, _ = done
    d = out / "dicom"
    for name in MAPS:
        pm = hd.pm.ParametricMap.from_dataset(pydicom.dcmread(d / f"pm_{name}.dcm"))
        assert pm.SOPClassUID == PM_UID
    seg = hd.seg.segread(d / "seg_lesions.dcm")
    assert seg.SOPClassUID == SEG_UID and seg.number_of_segments == 3
    sr = hd.sr.srread(d / "sr_measurements.dcm")
    assert len(sr.content.get_volumetric_roi_measurement_groups()) == 3
    for p in d.glob("sc_*.dcm"):
        ds = pydicom.dcmread(p)
        assert ds.pixel_array.ndim == 3 and ds.pixel_array.shape[-1] == 3


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (Debian dicom3tools) not installed")
def test_dciodvfy_reports_no_errors(done):
    _, out, _ = done
    for p in sorted((out / "dicom").glob("*.dcm")):
        res = subprocess.run(["dciodvfy", str(p)], capture_output=True, text=True, timeout=60)
        errors = [ln for ln in (res.stdout + res.stderr).splitlines() if ln.startswith("Error")]
        assert not errors, (p.name, errors)


def test_no_identifiers_outside_the_dicom_folder(done):
    _, out, _ = done
    for p in (out / "metrics.json", out / "log.txt", out / "aux" / "analysis.json"):
        text = p.read_text()
        assert "SECRET" not in text and "ID-SECRET-42" not in text, p.name
    assert PATIENT in str(pydicom.dcmread(out / "dicom" / "sr_measurements.dcm").PatientName)


@pytest.mark.parametrize("done", [0.0], indirect=True, ids=["straight"])
def test_recompute_rebuilds_the_dicom_objects(done, tmp_path):
    _, out0, _ = done
    out = tmp_path / "copy"
    shutil.copytree(out0, out)
    before = pydicom.dcmread(out / "dicom" / "seg_lesions.dcm").SOPInstanceUID
    cfg = Config()
    cfg.thresholds.rcbf_core = 0.5
    metrics = recompute_outputs(out, cfg)
    assert pydicom.dcmread(out / "dicom" / "seg_lesions.dcm").SOPInstanceUID != before
    assert read_report_values(out / "dicom" / "sr_measurements.dcm")["core_ml"] == pytest.approx(metrics["core_ml"])
    seg = read_segmentation(out / "dicom" / "seg_lesions.dcm")
    assert np.array_equal(seg["core"], load_volume(out / MASK_FILES["core"])[0] > 0.5)


@pytest.mark.parametrize("done", [0.0], indirect=True, ids=["straight"])
def test_sr_carries_every_tmax_level_of_the_run(done, tmp_path):
    """Another hypoperfusion threshold adds its level (tmax7_ml) to metrics.json: the SR carries it too, coded
    "Volume Tmax >= 7 s" like every level (the SR said "> L s" and knew only 4 / 6 / 8 / 10 s; review 46)."""
    out, metrics = _recomputed(done, tmp_path, tmax_hypoperfusion_s=7.0)
    values = read_report_values(out / "dicom" / "sr_measurements.dcm")
    levels = {k for k in metrics if k.startswith("tmax") and k.endswith("_ml") and metrics[k] is not None}
    assert "tmax7_ml" in levels and levels <= set(values)
    for key in levels:
        assert values[key] == pytest.approx(metrics[key]), key
    ds = pydicom.dcmread(out / "dicom" / "sr_measurements.dcm")
    meanings = {item.ConceptNameCodeSequence[0].CodeMeaning for item in _content_items(ds)
                if "ConceptNameCodeSequence" in item}
    assert "Volume Tmax >= 7 s" in meanings and not any(m.startswith("Volume Tmax > ") for m in meanings)


def _recomputed(done, tmp_path, **thresholds):
    """A copy of the fixture's output folder re-thresholded with ``thresholds``: (folder, metrics)."""
    out = tmp_path / "copy"
    shutil.copytree(done[1], out)
    cfg = Config()
    for key, value in thresholds.items():
        setattr(cfg.thresholds, key, value)
    return out, recompute_outputs(out, cfg)


def _content_items(ds):
    for item in getattr(ds, "ContentSequence", []):
        yield item
        yield from _content_items(item)


@pytest.mark.parametrize("done", [0.0], indirect=True, ids=["straight"])
def test_unmeasured_core_is_labelled_in_the_seg_and_absent_from_the_sr(done, tmp_path):
    """A core that cannot be measured (here: a contrast-to-noise limit above the study's ratio) has null core and
    penumbra volumes; their SEG segments are empty and say "not measured", and the SR carries no volume for them."""
    out, metrics = _recomputed(done, tmp_path, core_min_contrast_to_noise=1e6)
    assert metrics["core_ml"] is None and metrics["penumbra_ml"] is None and metrics["hypoperfusion_ml"] is not None
    ds = pydicom.dcmread(out / "dicom" / "seg_lesions.dcm")
    assert [s.SegmentLabel for s in ds.SegmentSequence] == ["core (not measured)", "penumbra (not measured)",
                                                             "hypoperfusion"]
    seg = read_segmentation(out / "dicom" / "seg_lesions.dcm")
    assert not seg["core"].any() and not seg["penumbra"].any()
    values = read_report_values(out / "dicom" / "sr_measurements.dcm")
    assert "core_ml" not in values and "penumbra_ml" not in values and "hypoperfusion_ml" in values


@pytest.mark.parametrize("done", [0.0], indirect=True, ids=["straight"])
def test_recompute_dicom_out_without_source_is_one_line_error(done, tmp_path):
    from typer.testing import CliRunner

    from ctperf.cli import app

    _, out0, _ = done
    out = tmp_path / "copy"
    shutil.copytree(out0, out, ignore=shutil.ignore_patterns("dicom"))
    res = CliRunner().invoke(app, ["recompute", str(out), "--dicom-out"])
    assert res.exit_code == 2 and "ctperf: error:" in res.output and "Traceback" not in res.output


def test_missing_highdicom_names_the_extra_before_any_analysis(monkeypatch, tmp_path):
    import sys

    from ctperf.errors import InputError

    monkeypatch.setitem(sys.modules, "highdicom", None)  # import highdicom -> ImportError
    with pytest.raises(InputError, match=r"ctperf\[dicom-out\]"):
        run_dicom_folder(tmp_path / "no-such-study", tmp_path / "out", Config(), dicom_out=True)
    assert not (tmp_path / "out").exists()
