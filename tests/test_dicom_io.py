"""DICOM layer: synthetic writer -> ctperf.dicom_io round trips over every layout option, dcm2niix agreement,
CTP selection among extra series, series forcing, PHI-freeness and one-line errors for bad input.

Small data (32 x 40 pixels, 4 slices, 7 frames) keeps the whole file to a few seconds.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from ctperf.dicom_io import MIN_TIMEPOINTS, inspect_folder, load_ctp, scan_folder
from ctperf.errors import DicomError
from ctperf.synthetic.dicom_writer import DicomLayout, fov_mask, tilted_affine_ras, write_ctp_dicom

T, Z, Y, X = 7, 4, 32, 40  # non-square matrix catches row/column mix-ups
STAGGER_S = 0.25  # per-slice acquisition stagger
FRAME_TIMES = np.array([0.0, 1.0, 2.0, 3.0, 6.0, 9.0, 12.0])  # 1 s then 3 s sampling


def make_hu(seed: int = 0, n_t: int = T) -> np.ndarray:
    """Integer HU, distinct per frame and slice, within [-900, 1500]."""
    rng = np.random.default_rng(seed)
    hu = rng.integers(-150, 400, size=(n_t, Z, Y, X)).astype(np.float64)
    hu += 11 * np.arange(n_t)[:, None, None, None] + 101 * np.arange(Z)[None, :, None, None]
    hu[:, :, 0, 0] = 1500.0  # bright corner pixel
    return hu


def make_times(n_t: int = T) -> np.ndarray:
    return FRAME_TIMES[:n_t, None] + STAGGER_S * np.arange(Z)[None, :] + 3.0


def make_affine() -> np.ndarray:
    """Oblique, anisotropic (x 0.8, y 0.9, z 5 mm) voxel -> RAS affine, radiological-style x flip."""
    th = np.deg2rad(8.0)
    rot = np.array([[1, 0, 0], [0, np.cos(th), -np.sin(th)], [0, np.sin(th), np.cos(th)]])
    a = np.eye(4)
    a[:3, :3] = rot @ np.diag([-0.8, -0.9, 5.0])
    a[:3, 3] = [12.5, 20.0, -31.0]
    return a


HU = make_hu()
TIMES = make_times()
AFF = make_affine()


def expected_hu(layout: DicomLayout) -> tuple[np.ndarray, np.ndarray | None]:
    hu = HU.copy()
    if layout.vendor == "philips":
        hu = np.maximum(hu, -1000)
    outside = None
    if layout.vendor in ("ge", "toshiba"):
        outside = np.broadcast_to(fov_mask(Y, X), (Z, Y, X))
        hu[:, outside] = -1024
    return hu, outside


def ras_of_file(path: Path) -> np.ndarray:
    ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    ipp = np.array([float(v) for v in ds.ImagePositionPatient])
    return ipp * np.array([-1, -1, 1])


def check_roundtrip(out: Path, layout: DicomLayout, paths: list[Path], times: np.ndarray = TIMES):
    study = load_ctp(out)
    hu, outside = expected_hu(layout)
    assert study.hu.dtype == np.float32 and study.hu.shape == (T, Z, Y, X)
    assert study.hu.flags.c_contiguous
    np.testing.assert_array_equal(study.hu, hu.astype(np.float32))
    if outside is None:
        assert study.outside_fov is None
    else:
        np.testing.assert_array_equal(study.outside_fov, outside)
    if layout.time_tags == "temporal_position":
        ft = times[:, 0] - times[0, 0]
        exp_t = np.repeat((np.arange(T) * (ft[-1] / (T - 1)))[:, None], Z, axis=1)
    else:
        exp_t = times - times[0, 0]
    np.testing.assert_allclose(study.times_s, exp_t, atol=1e-3)
    np.testing.assert_allclose(study.affine_ras, tilted_affine_ras(AFF, layout.gantry_tilt_deg), atol=1e-4)
    # independent check: every file's ImagePositionPatient is where the affine puts voxel (0, 0, z)
    for z in (0, Z - 1):
        np.testing.assert_allclose(study.affine_ras @ [0, 0, z, 1], np.r_[ras_of_file(paths[2 * Z + z]), 1], atol=1e-4)
    assert study.meta.n_files_used == T * Z
    assert study.meta.gantry_tilt_deg == pytest.approx(layout.gantry_tilt_deg, abs=1e-3)
    assert "PHANTOM" not in repr(study.meta)
    return study


LAYOUTS = {
    "siemens_plain": DicomLayout(),
    "ge": DicomLayout(vendor="ge"),
    "toshiba_implicit": DicomLayout(vendor="toshiba", transfer_syntax="implicit_le"),
    "philips": DicomLayout(vendor="philips"),
    "jpeg_lossless_ge": DicomLayout(vendor="ge", transfer_syntax="jpeg_lossless"),
    "jpeg2000_toshiba": DicomLayout(vendor="toshiba", transfer_syntax="jpeg2000_lossless"),
    "rle_siemens": DicomLayout(transfer_syntax="rle"),
    "jpegls_ge": DicomLayout(vendor="ge", transfer_syntax="jpegls_lossless"),
    "jpegls_siemens": DicomLayout(transfer_syntax="jpegls_lossless"),
    "series_per_timepoint": DicomLayout(series_per_timepoint=True, vendor="ge"),
    "nested_uid": DicomLayout(nested_folders=True, file_naming="uid"),
    "noext_shuffled": DicomLayout(nested_folders=True, file_naming="noext_shuffled", vendor="toshiba"),
    "extra_series": DicomLayout(extra_series=True, series_per_timepoint=True),
    "tilt": DicomLayout(gantry_tilt_deg=15.0),
    "tilt_negative_ge": DicomLayout(gantry_tilt_deg=-7.5, vendor="ge"),
    "acquisition_time_midnight": DicomLayout(time_tags="acquisition_time"),
    "content_time": DicomLayout(time_tags="content_time", vendor="philips"),
    "trigger_time": DicomLayout(time_tags="trigger_time"),
    "temporal_position": DicomLayout(time_tags="temporal_position", vendor="ge"),
    "acquisition_time_noon": DicomLayout(time_tags="acquisition_time", start_time="120000"),
}


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_roundtrip_layouts(tmp_path, name):
    layout = LAYOUTS[name]
    paths = write_ctp_dicom(HU, TIMES, AFF, tmp_path / "d", layout, seed=3)
    assert len(paths) == T * Z
    check_roundtrip(tmp_path / "d", layout, paths)


def test_stored_encoding_is_vendor_like(tmp_path):
    """Siemens: unsigned + intercept -1024; GE: signed + padding -2000; Toshiba: per-file slopes."""
    p = write_ctp_dicom(HU, TIMES, AFF, tmp_path / "s", DicomLayout(), seed=1)
    ds = pydicom.dcmread(p[0])
    assert ds.PixelRepresentation == 0 and float(ds.RescaleIntercept) == -1024
    assert ds.PixelSpacing == [0.9, 0.8]  # (row spacing, column spacing)
    p = write_ctp_dicom(HU, TIMES, AFF, tmp_path / "g", DicomLayout(vendor="ge"), seed=1)
    ds = pydicom.dcmread(p[0])
    assert ds.PixelRepresentation == 1 and ds.PixelPaddingValue == -2000 and ds.NumberOfTemporalPositions == T
    p = write_ctp_dicom(HU, TIMES, AFF, tmp_path / "t", DicomLayout(vendor="toshiba"), seed=1)
    slopes = {float(pydicom.dcmread(f, stop_before_pixels=True).RescaleSlope) for f in p}
    assert slopes == {0.5, 1.0}
    inst = [int(pydicom.dcmread(f, stop_before_pixels=True).InstanceNumber) for f in p[:Z]]
    q = write_ctp_dicom(HU, TIMES, AFF, tmp_path / "s2", DicomLayout(), seed=1)
    inst_s = [int(pydicom.dcmread(f, stop_before_pixels=True).InstanceNumber) for f in q[:Z]]
    assert inst_s == sorted(inst_s, reverse=True)  # InstanceNumber runs against slice order
    assert inst  # toshiba numbering exists


def test_midnight_crossing_is_in_the_data(tmp_path):
    p = write_ctp_dicom(HU, TIMES, AFF, tmp_path / "d", DicomLayout(time_tags="acquisition_time"), seed=0)
    t_first = pydicom.dcmread(p[0], stop_before_pixels=True).AcquisitionTime
    t_last = pydicom.dcmread(p[-1], stop_before_pixels=True).AcquisitionTime
    assert t_first.startswith("2359") and t_last.startswith("0000")
    study = load_ctp(tmp_path / "d")
    assert np.all(np.diff(study.times_s[:, 0]) > 0)


def test_extra_series_and_inspect(tmp_path):
    layout = DicomLayout(extra_series=True, vendor="ge", nested_folders=True, file_naming="noext_shuffled")
    write_ctp_dicom(HU, TIMES, AFF, tmp_path / "d", layout, seed=5)
    scan = scan_folder(tmp_path / "d")
    assert scan.skipped["non_dicom"] == 1  # README.txt
    # CTP, non-contrast and the localizer's two orientations (one group each)
    assert len(scan.groups) == 4 and scan.ctp is not None and scan.ctp.n_timepoints == T
    info = inspect_folder(tmp_path / "d")
    text = json.dumps(info, allow_nan=False)  # strict JSON
    for phi in ("PHANTOM", "19500101", layout.patient_id):
        assert phi not in text
    assert info["shape_xyzt"] == [X, Y, Z, T]
    np.testing.assert_allclose(info["frame_times_s"], FRAME_TIMES - FRAME_TIMES[0], atol=1e-3)
    np.testing.assert_allclose(np.array(info["affine_ras"]), AFF, atol=1e-4)
    assert info["manufacturer"] == "GE MEDICAL SYSTEMS"
    assert len(info["series_instance_uids"]) == 1
    rows = {r["description"]: r for r in info["series"]}
    assert rows["CTP 4D Perfusion"]["is_ctp"] and rows["CTP 4D Perfusion"]["n_files"] == T * Z
    assert rows["Topogram 0.6 T20f"]["is_localizer"] and not rows["Topogram 0.6 T20f"]["is_ctp"]
    assert rows["Head non-contrast 5mm"]["n_timepoints"] == 1 and not rows["Head non-contrast 5mm"]["is_ctp"]
    assert info["skipped"]["non_dicom"] == 1


def test_series_forcing(tmp_path):
    write_ctp_dicom(HU, TIMES, AFF, tmp_path / "d", DicomLayout(extra_series=True, series_per_timepoint=True), seed=2)
    auto = load_ctp(tmp_path / "d")
    assert len(auto.meta.series_instance_uids) == T and auto.meta.series_numbers == list(range(100, 100 + T))
    # a SeriesNumber of one time point selects the whole acquisition group
    forced = load_ctp(tmp_path / "d", series="103")
    np.testing.assert_array_equal(forced.hu, auto.hu)
    forced = load_ctp(tmp_path / "d", series=auto.meta.series_instance_uids[0])
    assert forced.hu.shape == auto.hu.shape
    with pytest.raises(DicomError, match="single time point"):
        load_ctp(tmp_path / "d", series="2")  # the non-contrast series
    with pytest.raises(DicomError, match="series '77' not found"):
        load_ctp(tmp_path / "d", series="77")


def test_progress_and_duplicates(tmp_path):
    paths = write_ctp_dicom(HU, TIMES, AFF, tmp_path / "d", DicomLayout(), seed=0)
    shutil.copy(paths[5], tmp_path / "d" / "copy_of_a_file.dcm")
    calls = []
    study = load_ctp(tmp_path / "d", progress=lambda n, tot: calls.append((n, tot)))
    assert calls[-1] == (T * Z, T * Z) and len(calls) == T * Z + 1
    assert study.meta.n_duplicate_frames_dropped == 1
    assert any("duplicate" in w for w in study.meta.warnings)
    np.testing.assert_array_equal(study.hu, HU.astype(np.float32))


# ---------------------------------------------------------------------------------------------------------
# bad input -> one-line DicomError
# ---------------------------------------------------------------------------------------------------------
def _raises(path, match, **kw) -> str:
    with pytest.raises(DicomError, match=match) as exc:
        load_ctp(path, **kw)
    msg = str(exc.value)
    assert "\n" not in msg and len(msg) < 400
    return msg


def test_error_missing_and_empty_folder(tmp_path):
    _raises(tmp_path / "nope", "not found")
    (tmp_path / "empty").mkdir()
    _raises(tmp_path / "empty", "empty")


def test_error_no_dicom(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "notes.txt").write_text("hello")
    (d / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    _raises(d, "no DICOM files found")


def test_error_missing_slice(tmp_path):
    paths = write_ctp_dicom(HU, TIMES, AFF, tmp_path / "d", DicomLayout(), seed=0)
    paths[3 * Z + 1].unlink()
    _raises(tmp_path / "d", "missing slices")


def test_error_missing_slice_series_per_timepoint(tmp_path):
    paths = write_ctp_dicom(HU, TIMES, AFF, tmp_path / "d", DicomLayout(series_per_timepoint=True), seed=0)
    paths[3 * Z + 1].unlink()
    _raises(tmp_path / "d", "missing slices")


def test_error_single_timepoint(tmp_path):
    write_ctp_dicom(HU[:1], TIMES[:1], AFF, tmp_path / "d", DicomLayout(), seed=0)
    msg = _raises(tmp_path / "d", "single-time-point")
    assert "CTP 4D Perfusion" in msg


def test_error_too_few_timepoints(tmp_path):
    n = MIN_TIMEPOINTS - 2
    write_ctp_dicom(HU[:n], TIMES[:n], AFF, tmp_path / "d", DicomLayout(), seed=0)
    _raises(tmp_path / "d", "no CT perfusion series")
    # forcing the series accepts a short acquisition
    assert load_ctp(tmp_path / "d", series="4").hu.shape[0] == n


def test_error_inconsistent_matrix(tmp_path):
    paths = write_ctp_dicom(HU, TIMES, AFF, tmp_path / "d", DicomLayout(), seed=0)
    ds = pydicom.dcmread(paths[9])
    ds.Rows, ds.Columns = 16, 16
    ds.PixelData = np.zeros((16, 16), np.uint16).tobytes()
    ds.save_as(paths[9])
    _raises(tmp_path / "d", "inconsistent images .* matrices")


def test_error_no_timing(tmp_path):
    paths = write_ctp_dicom(HU, TIMES, AFF, tmp_path / "d", DicomLayout(), seed=0)
    for p in paths:
        ds = pydicom.dcmread(p)
        del ds.AcquisitionDateTime
        ds.save_as(p)
    _raises(tmp_path / "d", "cannot determine frame times")


def test_error_corrupt_pixels(tmp_path):
    paths = write_ctp_dicom(HU, TIMES, AFF, tmp_path / "d", DicomLayout(transfer_syntax="rle"), seed=0)
    raw = paths[4].read_bytes()
    paths[4].write_bytes(raw[: len(raw) - 300])
    _raises(tmp_path / "d", "cannot decode pixel data")


# ---------------------------------------------------------------------------------------------------------
# agreement with dcm2niix
# ---------------------------------------------------------------------------------------------------------
DCM2NIIX = shutil.which("dcm2niix")


def _dcm2niix(src: Path, out: Path) -> nib.Nifti1Image:
    out.mkdir()
    subprocess.run([DCM2NIIX, "-z", "y", "-b", "n", "-o", str(out), "-f", "%s_%t", str(src)],
                   check=True, capture_output=True, timeout=60)
    files = sorted(out.glob("*.nii.gz"))
    assert len(files) == 1, files
    return nib.load(files[0])


@pytest.mark.skipif(DCM2NIIX is None, reason="dcm2niix is not installed (apt install dcm2niix)")
@pytest.mark.parametrize("layout", [DicomLayout(), DicomLayout(vendor="philips", transfer_syntax="jpeg_lossless")],
                         ids=["siemens", "philips_jpeg"])
def test_affine_matches_dcm2niix(tmp_path, layout):
    """Same voxel content at the same world positions (after both are reoriented to canonical RAS).

    Not run on the "ge" layout: it numbers InstanceNumber in random order on purpose, and dcm2niix sorts
    frames by InstanceNumber (it warns that AcquisitionTime disagrees), so its volumes are scrambled there.
    """
    write_ctp_dicom(HU, TIMES, AFF, tmp_path / "d", layout, seed=0)
    ref = nib.as_closest_canonical(_dcm2niix(tmp_path / "d", tmp_path / "n"))
    study = load_ctp(tmp_path / "d")
    mine = nib.as_closest_canonical(nib.Nifti1Image(study.hu.transpose(3, 2, 1, 0), study.affine_ras))
    assert ref.shape == mine.shape
    np.testing.assert_allclose(ref.affine, mine.affine, atol=1e-3)
    ref_data = np.asarray(ref.dataobj, dtype=np.float32)
    mine_data = np.asarray(mine.dataobj)
    inside = ~np.broadcast_to(fov_mask(Y, X).T[:, :, None, None], (X, Y, Z, T))
    inside = nib.as_closest_canonical(nib.Nifti1Image(inside.astype(np.uint8), study.affine_ras)).get_fdata() > 0
    np.testing.assert_array_equal(ref_data[inside], mine_data[inside])


@pytest.mark.skipif(DCM2NIIX is None, reason="dcm2niix is not installed (apt install dcm2niix)")
def test_tilted_affine_vs_dcm2niix_loosely(tmp_path):
    """dcm2niix handles gantry tilt differently: it reports the tilt (estimated from the slice vector) and,
    without its resampling option, stores an orthogonal approximation of the sheared geometry, so world
    positions differ by up to about one slice thickness at the volume corners. Only loose agreement is required
    here: the same tilt is reported, the voxel content is identical and corners agree within 1.5 slice
    thicknesses. Our sheared affine is checked strictly against ImagePositionPatient in the round trips.
    """
    layout = DicomLayout(gantry_tilt_deg=12.0)
    write_ctp_dicom(HU, TIMES, AFF, tmp_path / "d", layout, seed=0)
    out = subprocess.run([DCM2NIIX, "-z", "y", "-b", "n", "-o", str(tmp_path), "-f", "%s_%t", str(tmp_path / "d")],
                         check=True, capture_output=True, text=True, timeout=60).stdout
    assert "estimated from slice vector 12" in out
    ref = nib.load(sorted(tmp_path.glob("*.nii.gz"))[0])
    study = load_ctp(tmp_path / "d")
    ref_c = nib.as_closest_canonical(ref)
    mine_c = nib.as_closest_canonical(nib.Nifti1Image(study.hu.transpose(3, 2, 1, 0), study.affine_ras))
    a, b = ref_c.affine, mine_c.affine
    corners = np.array([[i, j, k, 1] for i in (0, X - 1) for j in (0, Y - 1) for k in (0, Z - 1)]).T
    dist = np.linalg.norm((a @ corners - b @ corners)[:3], axis=0)
    assert dist.max() < 1.5 * 5.0
    np.testing.assert_array_equal(np.asarray(ref_c.dataobj, dtype=np.float32), np.asarray(mine_c.dataobj))


# ---------------------------------------------------------------------------------------------------------
# header reader: fast path vs pydicom, sequences, private data, unusual encodings
# ---------------------------------------------------------------------------------------------------------
def _add_sequence_and_private(ds: pydicom.Dataset) -> None:
    from pydicom.sequence import Sequence

    inner = pydicom.Dataset()
    inner.CodeValue = "X"
    item = pydicom.Dataset()
    item.ReferencedSOPInstanceUID = "1.2.3"
    item.ConceptNameCodeSequence = Sequence([inner])
    item.is_undefined_length_sequence_item = True
    ds.ReferencedImageSequence = Sequence([item, item])
    ds["ReferencedImageSequence"].is_undefined_length = True
    ds.add_new(0x00290010, "LO", "VENDOR CSA HEADER")
    ds.add_new(0x00291010, "OB", b"\x01" * 5000)


@pytest.mark.parametrize("syntax", ["explicit_le", "implicit_le"])
def test_fast_header_reader_matches_pydicom(tmp_path, syntax):
    from ctperf import dicom_io

    layout = DicomLayout(vendor="toshiba", transfer_syntax=syntax)
    paths = write_ctp_dicom(HU, TIMES, AFF, tmp_path / "d", layout, seed=4)
    for p in paths:
        ds = pydicom.dcmread(p)
        _add_sequence_and_private(ds)
        ds.save_as(p)
    for p in paths[:6]:
        with open(p, "rb") as fp:
            ts, offset, _ = dicom_io._fast_header_values(fp)  # must not need the pydicom fallback
        status, fast = dicom_io._read_header(str(p))
        ds = pydicom.dcmread(p, stop_before_pixels=True)
        status2, slow = dicom_io._header_from(ds.get, str(p), str(ds.file_meta.TransferSyntaxUID), offset)
        assert status == status2 == "ok" and fast == slow
    check_roundtrip(tmp_path / "d", DicomLayout(vendor="toshiba"), paths)


def test_slow_path_deflated_and_no_preamble(tmp_path):
    """Deflated syntax and raw datasets without preamble/file meta go through pydicom and still load."""
    paths = write_ctp_dicom(HU, TIMES, AFF, tmp_path / "d", DicomLayout(), seed=0)
    for i, p in enumerate(paths):
        ds = pydicom.dcmread(p)
        if i % 2:
            ds.file_meta.TransferSyntaxUID = pydicom.uid.DeflatedExplicitVRLittleEndian
            ds.save_as(p, enforce_file_format=True)
        else:
            ds.preamble = None
            ds.file_meta = pydicom.dataset.FileMetaDataset()
            pydicom.dcmwrite(p, ds, implicit_vr=True, little_endian=True, enforce_file_format=False)
    assert paths[0].read_bytes()[:2] == b"\x08\x00"
    check_roundtrip(tmp_path / "d", DicomLayout(), paths)


def test_non_image_and_multiframe_are_skipped(tmp_path):
    paths = write_ctp_dicom(HU, TIMES, AFF, tmp_path / "d", DicomLayout(), seed=0)
    ds = pydicom.dcmread(paths[0])
    for kw in ("Rows", "Columns", "PixelData"):
        delattr(ds, kw)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4.5"
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    ds.save_as(tmp_path / "d" / "report.dcm", enforce_file_format=True)  # e.g. a structured report
    mf = pydicom.dcmread(paths[1])
    mf.NumberOfFrames = 2
    mf.PixelData = mf.PixelData * 2
    mf.save_as(tmp_path / "d" / "enhanced.dcm", enforce_file_format=True)
    scan = scan_folder(tmp_path / "d")
    assert scan.skipped == {"non_dicom": 0, "non_image": 1, "multiframe": 1, "unreadable": 0, "no_permission": 0}
    assert load_ctp(tmp_path / "d").meta.extra["skipped"]["multiframe"] == 1
    only = tmp_path / "only"
    only.mkdir()
    shutil.copy(tmp_path / "d" / "enhanced.dcm", only / "x.dcm")
    _raises(only, "multi-frame")


def test_error_slice_gap(tmp_path):
    hu = np.concatenate([HU, HU[:, :1]], axis=1)  # 5 slices, then remove slice 2 from every frame
    times = np.concatenate([TIMES, TIMES[:, :1]], axis=1)
    paths = write_ctp_dicom(hu, times, AFF, tmp_path / "d", DicomLayout(), seed=0)
    for t in range(T):
        paths[t * (Z + 1) + 2].unlink()
    _raises(tmp_path / "d", "not evenly spaced")


def test_trigger_time_used_when_clock_times_are_constant(tmp_path):
    """Some scanners stamp every frame with the series start time: the next source that varies is used."""
    paths = write_ctp_dicom(HU, TIMES, AFF, tmp_path / "d", DicomLayout(time_tags="trigger_time"), seed=0)
    for p in paths:
        ds = pydicom.dcmread(p)
        ds.AcquisitionTime = "101500.000000"
        ds.save_as(p)
    study = load_ctp(tmp_path / "d")
    assert study.meta.extra["time_source"] == "TriggerTime"
    np.testing.assert_allclose(study.times_s, TIMES - TIMES[0, 0], atol=1e-3)


def test_bits_above_bits_stored_are_ignored(tmp_path):
    """Unsigned 12-bit pixels with junk in the top 4 bits (old overlay planes) decode to the same HU."""
    paths = write_ctp_dicom(HU, TIMES, AFF, tmp_path / "d", DicomLayout(), seed=0)
    for p in paths:
        ds = pydicom.dcmread(p)
        assert ds.BitsStored == 12
        ds.PixelData = (np.frombuffer(ds.PixelData, "<u2") | 0xF000).astype("<u2").tobytes()
        ds.save_as(p)
    check_roundtrip(tmp_path / "d", DicomLayout(), paths)


def test_signed_12_bit_is_sign_extended(tmp_path):
    paths = write_ctp_dicom(HU, TIMES, AFF, tmp_path / "d", DicomLayout(vendor="ge"), seed=0)
    for p in paths:
        ds = pydicom.dcmread(p)
        ds.BitsStored, ds.HighBit = 12, 11
        ds.PixelData = (np.frombuffer(ds.PixelData, "<i2").view("<u2") & 0x0FFF).astype("<u2").tobytes()
        ds.save_as(p)
    check_roundtrip(tmp_path / "d", DicomLayout(vendor="ge"), paths)
