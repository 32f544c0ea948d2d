"""`.nii.gz` volumes are standard gzip streams of nibabel's own NIfTI bytes, with or without ISA-L."""

from __future__ import annotations

import gzip
import sys

import nibabel as nib
import numpy as np
import pytest

from ctperf.io.nifti import load_volume, rigid_stand_in, save_volume


@pytest.mark.parametrize("without_isal", [False, True])
def test_nii_gz_is_gzip_of_the_plain_nifti(tmp_path, monkeypatch, without_isal):
    if without_isal:
        monkeypatch.setitem(sys.modules, "isal", None)  # import fails: the zlib fallback is used
    affine = np.diag([-0.9, -0.9, 5.0, 1.0])
    affine[:3, 3] = [100.0, 120.0, -30.0]
    vol = np.random.default_rng(0).random((4, 5, 6)).astype(np.float32)
    vol[0, 0, 0] = np.nan
    save_volume(tmp_path / "v.nii.gz", vol, affine)
    save_volume(tmp_path / "v.nii", vol, affine)
    assert gzip.decompress((tmp_path / "v.nii.gz").read_bytes()) == (tmp_path / "v.nii").read_bytes()
    back, aff = load_volume(tmp_path / "v.nii.gz")
    assert np.array_equal(back, vol, equal_nan=True) and np.allclose(aff, affine)
    save_volume(tmp_path / "m.nii.gz", vol > 0.5, affine, dtype=np.uint8)
    img = nib.load(str(tmp_path / "m.nii.gz"))
    assert img.get_data_dtype() == np.uint8
    assert np.array_equal(np.asarray(img.dataobj).transpose(2, 1, 0), vol > 0.5)


def _tilted_affine(deg: float) -> np.ndarray:
    """A gantry-tilted grid: slices shifted along y as they go up (shear), as the DICOM positions of such a scan."""
    a = np.diag([0.9, 0.9, 5.0, 1.0])
    a[1, 2] = 5.0 * np.tan(np.deg2rad(deg))
    a[:3, 3] = (-100.0, -120.0, -30.0)
    return a


@pytest.mark.parametrize("tilt", [0.0, 15.0])
def test_header_geometry_units_and_description(tmp_path, tilt):
    """sform always exact; the qform too when it can hold the affine, for a sheared (tilted) one the rigid stand-in
    exact at the centre (ITK reads the qform: the centre voxel where it is, the others within half the slab's
    shear, not turned by a polar decomposition); units mm; a description."""
    import nibabel as nib

    aff = _tilted_affine(tilt)
    vol = np.arange(4 * 6 * 5, dtype=np.float32).reshape(4, 6, 5)
    save_volume(tmp_path / "v.nii.gz", vol, aff, description="ctperf CBF mL/100g/min")
    save_volume(tmp_path / "m.nii.gz", vol > 50, aff, dtype=np.uint8)
    for name in ("v.nii.gz", "m.nii.gz"):
        img = nib.load(tmp_path / name)
        hdr = img.header
        assert int(hdr["sform_code"]) == 1 and int(hdr["qform_code"]) == 1 and np.allclose(img.affine, aff)
        assert hdr.get_xyzt_units()[0] == "mm"
        assert np.allclose(hdr.get_qform(), aff if not tilt else rigid_stand_in(aff, (5, 6, 4)), atol=1e-4)
    assert nib.load(tmp_path / "v.nii.gz").header["descrip"].tobytes().rstrip(b"\0") == b"ctperf CBF mL/100g/min"
    sitk = pytest.importorskip("SimpleITK")
    img = sitk.ReadImage(str(tmp_path / "v.nii.gz"))
    for ijk, tol in (((2.0, 2.5, 1.5), 0.01), ((0.0, 0.0, 0.0), 0.01 + 1.5 * 5.0 * np.tan(np.deg2rad(tilt)))):
        ras = aff @ np.array([*ijk, 1.0])  # the centre voxel (x, y, z) = (2, 2.5, 1.5), then a corner
        lps = np.asarray(img.TransformContinuousIndexToPhysicalPoint(ijk))
        assert np.allclose(lps, [-ras[0], -ras[1], ras[2]], atol=tol), (ijk, lps, ras)
