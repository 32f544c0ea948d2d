"""`.nii.gz` volumes are standard gzip streams of nibabel's own NIfTI bytes, with or without ISA-L."""

from __future__ import annotations

import gzip
import sys

import nibabel as nib
import numpy as np
import pytest

from ctperf.io.nifti import load_volume, save_volume


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
