"""Loading Mode B maps (NIfTI, scalar DICOM, Parametric Map, colour DICOM) and the same-grid check."""

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from ctperf.errors import InputError
from ctperf.io.nifti import save_volume
from ctperf.modeb.map_inputs import PARAMETRIC_MAP_UID, check_same_grid, load_map
from ctperf.synthetic.vendor_maps import smooth_brain_map, write_colour_series

AFF = np.array([[-0.9, 0, 0, 60.0], [0, -0.9, 0, 80.0], [0, 0, 5.0, -20.0], [0, 0, 0, 1]])


def _lps_geometry(aff, k):
    lps = np.diag([-1.0, -1, 1, 1]) @ aff
    ipp = lps[:3, 2] * k + lps[:3, 3]
    iop = np.r_[lps[:3, 0] / np.linalg.norm(lps[:3, 0]), lps[:3, 1] / np.linalg.norm(lps[:3, 1])]
    return ipp, iop, [np.linalg.norm(lps[:3, 1]), np.linalg.norm(lps[:3, 0])]


def _base(sop_class, series_uid):
    fm = FileMetaDataset()
    fm.MediaStorageSOPClassUID = sop_class
    fm.MediaStorageSOPInstanceUID = generate_uid()
    fm.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = fm
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, fm.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.3", series_uid
    ds.Modality, ds.SeriesDescription = "CT", "CBV"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    return ds


def write_scalar_series(vol, aff, folder, slope=0.01, intercept=-5.0):
    """CT-like single-frame series, stored value = (v - intercept) / slope, reversed file order."""
    folder.mkdir(parents=True)
    uid = generate_uid()
    for k in range(vol.shape[0]):
        ds = _base("1.2.840.10008.5.1.4.1.1.2", uid)
        ipp, iop, ps = _lps_geometry(aff, k)
        ds.ImagePositionPatient, ds.ImageOrientationPatient, ds.PixelSpacing = list(ipp), list(iop), ps
        ds.InstanceNumber = k + 1
        ds.Rows, ds.Columns = vol.shape[1:]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
        ds.PixelData = np.round((vol[k] - intercept) / slope).astype(np.int16).tobytes()
        ds.save_as(folder / f"z{vol.shape[0] - k:03d}.dcm", enforce_file_format=True)


def write_parametric_map(vol, aff, path):
    """Multi-frame Parametric Map with 32-bit float pixel data, frames stored in reverse slice order."""
    ds = _base(PARAMETRIC_MAP_UID, generate_uid())
    ds.Modality = "CT"
    nz, ny, nx = vol.shape
    ds.NumberOfFrames, ds.Rows, ds.Columns = nz, ny, nx
    ds.BitsAllocated = 32
    shared = Dataset()
    _, iop, ps = _lps_geometry(aff, 0)
    po, pm, rw = Dataset(), Dataset(), Dataset()
    po.ImageOrientationPatient = list(iop)
    pm.PixelSpacing, pm.SliceThickness = ps, 5.0
    rw.RealWorldValueSlope, rw.RealWorldValueIntercept = 1.0, 0.0
    rw.RealWorldValueFirstValueMapped, rw.RealWorldValueLastValueMapped = 0, 100
    shared.PlaneOrientationSequence = Sequence([po])
    shared.PixelMeasuresSequence = Sequence([pm])
    shared.RealWorldValueMappingSequence = Sequence([rw])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    frames, per = [], []
    for k in reversed(range(nz)):
        f, pp = Dataset(), Dataset()
        pp.ImagePositionPatient = list(_lps_geometry(aff, k)[0])
        f.PlanePositionSequence = Sequence([pp])
        per.append(f)
        frames.append(vol[k])
    ds.PerFrameFunctionalGroupsSequence = Sequence(per)
    ds.FloatPixelData = np.stack(frames).astype(np.float32).tobytes()
    ds.save_as(path, enforce_file_format=True)


@pytest.fixture(scope="module")
def vol():
    return np.nan_to_num(smooth_brain_map((5, 64, 72), 0.0, 8.0, seed=1), nan=0.0)


def test_nifti(tmp_path, vol):
    save_volume(tmp_path / "cbv.nii.gz", vol, AFF)
    out, aff, info = load_map(tmp_path / "cbv.nii.gz")
    assert info["kind"] == "nifti" and out.dtype == np.float32
    np.testing.assert_allclose(out, vol, atol=1e-5)
    np.testing.assert_allclose(aff, AFF)


def test_scalar_dicom_series(tmp_path, vol):
    write_scalar_series(vol, AFF, tmp_path / "cbv")
    out, aff, info = load_map(tmp_path / "cbv")
    assert info["kind"] == "dicom_scalar" and out.shape == vol.shape
    np.testing.assert_allclose(out, vol, atol=0.006)
    np.testing.assert_allclose(aff, AFF, atol=1e-4)


def test_parametric_map(tmp_path, vol):
    write_parametric_map(vol, AFF, tmp_path / "tmax_pm.dcm")
    out, aff, info = load_map(tmp_path / "tmax_pm.dcm")
    assert info["sop_class"] == PARAMETRIC_MAP_UID
    np.testing.assert_allclose(out, vol, atol=1e-6)
    np.testing.assert_allclose(aff, AFF, atol=1e-4)


@pytest.mark.parametrize("photometric", ["RGB", "YBR_FULL"])
def test_colour_dicom_autodetected(tmp_path, photometric):
    truth = smooth_brain_map((3, 100, 130), 0.0, 10.0, seed=4)
    write_colour_series(truth, AFF, tmp_path / "tmaxd", (0, 10), ramp="rainbow", photometric=photometric)
    out, aff, info = load_map(tmp_path / "tmaxd", value_range=(0, 10))
    assert info["kind"] == "dicom_colour"
    np.testing.assert_allclose(aff, AFF, atol=1e-4)
    ok = np.isfinite(truth) & np.isfinite(out)
    assert ok.sum() > 0.9 * np.isfinite(truth).sum()
    assert np.abs(out[ok] - truth[ok]).max() < 0.2  # 2 % of the range
    with pytest.raises(InputError, match="value range"):
        load_map(tmp_path / "tmaxd")


def test_load_errors(tmp_path, vol):
    with pytest.raises(InputError, match="not found"):
        load_map(tmp_path / "missing")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.txt").write_text("hello")
    with pytest.raises(InputError, match="no DICOM"):
        load_map(tmp_path / "junk")
    write_scalar_series(vol, AFF, tmp_path / "mix" / "a")
    write_scalar_series(vol, AFF, tmp_path / "mix" / "b")
    with pytest.raises(InputError, match="2 DICOM series"):
        load_map(tmp_path / "mix")


def test_check_same_grid():
    a = np.zeros((20, 256, 256))
    check_same_grid({"tmax": (a, AFF), "cbv": (a.copy(), AFF.copy())})
    with pytest.raises(InputError) as e:
        check_same_grid({"tmax": (a, AFF), "cbv": (np.zeros((20, 256, 250)), AFF)})
    assert str(e.value) == "maps have different grids: tmax (20x256x256) vs cbv (20x256x250)"
    shifted = AFF.copy()
    shifted[0, 3] += 2.0
    with pytest.raises(InputError, match="maps have different grids: tmax .* cbf"):
        check_same_grid({"tmax": (a, AFF), "cbv": (a, AFF), "cbf": (a, shifted)})


def test_palette_colour_and_file_list(tmp_path):
    """A PALETTE COLOR map (indices + 16-bit LUT) is expanded to RGB and decoded; a list of files works too."""
    from PIL import Image

    from ctperf.synthetic.vendor_maps import ramp_colours, render_colour_slice

    truth = smooth_brain_map((2, 100, 130), 0.0, 10.0, seed=8)
    folder = tmp_path / "pal"
    folder.mkdir()
    paths = []
    uid = generate_uid()
    for k in range(truth.shape[0]):
        rgb = render_colour_slice(truth[k], (0, 10), ramp_colours("jet"))
        q = Image.fromarray(rgb).quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        pal = np.asarray(q.getpalette()[: 256 * 3], np.uint16).reshape(-1, 3)
        pal = np.vstack([pal, np.zeros((256 - len(pal), 3), np.uint16)])
        ds = _base("1.2.840.10008.5.1.4.1.1.7", uid)
        ipp, iop, ps = _lps_geometry(AFF, k)
        ds.ImagePositionPatient, ds.ImageOrientationPatient, ds.PixelSpacing = list(ipp), list(iop), ps
        ds.PhotometricInterpretation = "PALETTE COLOR"
        ds.Rows, ds.Columns = rgb.shape[:2]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        for c, name in enumerate(("Red", "Green", "Blue")):
            setattr(ds, f"{name}PaletteColorLookupTableDescriptor", [256, 0, 16])
            setattr(ds, f"{name}PaletteColorLookupTableData", (pal[:, c] * 257).astype("<u2").tobytes())
        ds.PixelData = np.asarray(q, np.uint8).tobytes()
        p = folder / f"{k}.dcm"
        ds.save_as(p, enforce_file_format=True)
        paths.append(p)
    out, aff, info = load_map(folder, value_range=(0, 10))
    assert info["kind"] == "dicom_colour" and info["photometric"] == "PALETTE COLOR"
    ok = np.isfinite(truth) & np.isfinite(out)
    assert ok.sum() > 0.9 * np.isfinite(truth).sum()
    assert np.median(np.abs(out[ok] - truth[ok])) < 0.1  # 256-colour quantisation limits the precision

    from ctperf.modeb.colormap_decode import decode_colour_series

    out2, aff2, _ = decode_colour_series(paths[::-1], (0, 10))
    np.testing.assert_allclose(aff2, AFF, atol=1e-4)
    np.testing.assert_array_equal(np.isfinite(out2), np.isfinite(out))
