"""Engine review fixes: contra_mask on a binned computation grid, hemisphere fallback orientation and QA flag,
non-negative CBV/CBF maps, one lesion-side rule for maps and indices."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from ctperf import engine
from ctperf.analysis.indices import lesion_side
from ctperf.analysis.masks import lesion_masks
from ctperf.config import Config, Thresholds
from ctperf.core.types import CTPStudy, Hemispheres
from ctperf.engine import maps as mp
from ctperf.synthetic import phantom as synthetic


@pytest.fixture(scope="module")
def binned_run():
    """1.4 mm phantom computed on a 2.8 mm grid (bin factor 2) with a contralateral ROI on the scan grid."""
    ph = synthetic.make_phantom(synthetic.PhantomSpec(matrix=160, n_slices=4, pixel_mm=1.4, noise_hu=8.0,
                                                      lesion="left", seed=1))
    cfg = Config()
    cfg.preprocess.compute_pixel_mm = 2.8
    contra = ph.truth.tissue & (ph.truth.side < 0)  # right hemisphere tissue, scan grid
    res = engine.compute_perfusion(CTPStudy(hu=ph.hu, times_s=ph.times_s, affine_ras=ph.affine_ras), cfg,
                                   contra_mask=contra)
    return ph, cfg, contra, res


def test_contra_mask_is_resampled_to_the_binned_grid(binned_run):
    ph, _, contra, res = binned_run
    assert res.qa_values["compute_bin_factor"] == 2
    assert res.cbf.shape != contra.shape  # the case that used to raise a broadcast error
    assert res.qa_values["reference_voxels"] > 0
    ref = engine.contra_on_grid(contra, ph.affine_ras, res.affine_ras, res.masks.tissue)
    assert ref.shape == res.cbf.shape and not (ref & ~res.masks.tissue).any()  # within tissue only
    # the resampled ROI lies on the patient's right (side -1) on the computation grid
    assert np.mean(res.hemispheres.side[ref] < 0) > 0.97
    # and it covers (in mL) about what it covers on the scan grid, restricted to tissue
    vox_scan = abs(np.linalg.det(ph.affine_ras[:3, :3])) / 1000
    vox_map = abs(np.linalg.det(res.affine_ras[:3, :3])) / 1000
    assert ref.sum() * vox_map == pytest.approx(contra.sum() * vox_scan, rel=0.25)
    assert np.isfinite(res.reference_cbf) and res.reference_cbf > 0


def test_contra_on_grid_same_grid_is_identity_within_tissue():
    aff = np.diag([1.0, 1.0, 5.0, 1.0])
    m = np.zeros((2, 10, 10), bool)
    m[:, 2:6, 3:8] = True
    tissue = np.ones_like(m)
    tissue[:, 2, :] = False
    out = engine.contra_on_grid(m, aff, aff, tissue)
    np.testing.assert_array_equal(out, m & tissue)


def test_maps_are_bounded_and_defined_in_tissue(binned_run):
    _, _, _, res = binned_run
    t = res.masks.tissue
    assert np.all(res.cbv[t] >= 0) and np.all(res.cbf[t] >= 0)
    assert np.all(np.isfinite(res.mtt[t])) and np.all(np.isfinite(res.cbf[t])) and np.all(np.isfinite(res.cbv[t]))
    assert np.all((res.mtt[t] >= 0) & (res.mtt[t] <= mp.MTT_MAX_S))
    assert np.all(res.cbv[t] <= mp.CBV_MAX_ML_100G) and np.all(res.cbf[t] <= mp.CBF_MAX_ML_100G_MIN)


def test_times_are_undefined_in_csf(binned_run):
    """Engine 2.13: no bolus passes through CSF, so MTT, Tmax and TTP are NaN there (they read noise before: two
    thirds of the demo's CSF above Tmax 6 s); CBF and CBV keep their (near-zero) values; tissue is untouched."""
    _, _, _, res = binned_run
    csf = res.masks.csf
    assert csf.sum() > 50
    for name in ("mtt", "tmax", "ttp"):
        assert np.isnan(getattr(res, name)[csf]).all(), name
        assert np.isfinite(getattr(res, name)[res.masks.tissue]).all(), name
    assert np.isnan(res.aux_maps["tmax_standard"][csf]).all()
    assert np.isfinite(res.cbf[csf]).all() and np.isfinite(res.cbv[csf]).all()
    assert np.isfinite(res.tmax[res.masks.vessels]).all()  # the sinus's Tmax (PVT) is kept


def test_nonnegative_maps_policy():
    cbv = np.array([-0.5, 0.0, 2.0, np.nan, 3.0, 2.0], np.float32)
    cbf = np.array([10.0, 5.0, 30.0, 20.0, -1.0, 0.5], np.float32)
    v, mtt, f = mp.nonnegative_maps(cbv, cbf)
    np.testing.assert_array_equal(v[:3], [0.0, 0.0, 2.0])
    assert np.isnan(v[3]) and v[4] == 3.0
    np.testing.assert_array_equal(f, [10.0, 5.0, 30.0, 20.0, 0.0, 0.5])
    assert mtt[0] == 0.0 and mtt[1] == 0.0 and np.isnan(mtt[3])
    assert mtt[4] == mp.MTT_MAX_S  # CBF at the noise floor: the longest measurable transit
    assert mtt[5] == mp.MTT_MAX_S  # 240 s clipped to the bound
    assert mtt[2] == pytest.approx(60.0 * 2.0 / 30.0)


@pytest.mark.parametrize("flip_x", [False, True])
def test_centre_of_mass_split_labels_patient_left_as_plus_one(flip_x):
    nz, ny, nx = 2, 20, 40
    aff = np.diag([1.0, 1.0, 5.0, 1.0])
    if flip_x:  # x index increasing towards the patient's left (world x decreasing), as in LPS-ordered columns
        aff[0, 0] = -1.0
        aff[0, 3] = nx - 1.0
    brain = np.zeros((nz, ny, nx), bool)
    brain[:, 5:15, 5:35] = True
    hemi = engine._centre_of_mass_split(brain, aff)
    xi = np.arange(nx)
    world_x = aff[0, 0] * xi + aff[0, 3]
    cx = world_x[5:35].mean()
    left_cols = (world_x < cx) & (xi >= 5) & (xi < 35)  # RAS: patient's left = smaller world x
    assert np.all(hemi.side[:, 5:15][..., left_cols] == 1)
    assert np.all(hemi.side[:, 5:15][..., ~left_cols & (xi >= 5) & (xi < 35)] == -1)
    assert np.all(hemi.side[~brain] == 0)
    # the mirror map sends a voxel to the other hemisphere
    v = hemi.mirror_vox @ np.array([6.0, 10.0, 0.0, 1.0])
    assert v[0] == pytest.approx(33.0)


def test_midline_fallback_is_flagged_and_logged(caplog):
    aff = np.diag([1.0, 1.0, 5.0, 1.0])
    brain = np.zeros((1, 10, 10), bool)
    brain[0, 3:7, 2:8] = True  # too small for the plane fit -> ValueError -> fallback
    with caplog.at_level(logging.WARNING, logger="ctperf"):
        hemi, fallback = engine._hemispheres(np.full(brain.shape, 30.0, np.float32), brain, aff)
    assert fallback is True
    assert isinstance(hemi, Hemispheres)
    assert any("midline" in r.getMessage() for r in caplog.records)


def test_engine_reports_midline_fallback_flag(binned_run):
    _, _, _, res = binned_run
    assert res.qa_flags["midline_fallback"] is False
    assert res.affected_side == "left"


def test_affected_side_matches_indices_rule():
    rng = np.random.default_rng(0)
    shape = (4, 30, 30)
    tissue = np.ones(shape, bool)
    side = np.ones(shape, np.int8)
    side[..., 15:] = -1
    thr = Thresholds()
    for trial in range(30):
        tmax = rng.uniform(0, 5, shape).astype(np.float32)
        # a few scattered voxels (removed as small clusters) and blobs on each side
        tmax[rng.uniform(size=shape) < 0.01] = 9.0
        a, b = rng.integers(0, 8, 2)
        tmax[:, 2:2 + a, 2:2 + a] = 8.0
        tmax[:, 20:20 + b, 20:20 + b] = 8.0
        for vox_ml in (0.01, 0.05):
            got, _ = mp.affected_side(tmax, tissue, side, vox_ml, thr.tmax_hypoperfusion_s,
                                      min_cluster_ml=thr.min_cluster_ml)
            lm = lesion_masks(tmax, None, tissue, vox_ml, thr)
            hemi = Hemispheres(side=side, mirror_vox=np.eye(4), normal_ras=np.array([-1.0, 0, 0]),
                               point_ras=np.zeros(3))
            assert got == lesion_side(lm.hypoperfusion, hemi, vox_ml), (trial, vox_ml)
