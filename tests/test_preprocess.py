"""Preprocessing: time handling (variable sampling, slice stagger), baseline detection, masks, grid, motion."""

from __future__ import annotations

import numpy as np
import pytest

from ctperf.config import PreprocessConfig
from ctperf.engine.motion import estimate_inplane_motion, warp_frame_inplane
from ctperf.engine.preprocess import (baseline_frame_count, bin_inplane, binned_affine, bolus_arrival_s, brain_mask,
                               preprocess_study, resample_to_grid, uniform_time_grid)


def _gamma(t, arrival=8.0):
    x = np.clip((t - arrival) / 5.0, 0, None)
    return 300.0 * np.where(x > 0, x**3 * np.exp(3 * (1 - x)), 0.0)


def test_variable_sampling_and_slice_stagger_are_resampled_exactly():
    # 1 s sampling for 20 frames, then 3 s; slice z is acquired z * 0.4 s after slice 0.
    ft = np.concatenate([np.arange(20) * 1.0, 19.0 + 3.0 * np.arange(1, 12)])
    nz = 4
    times = ft[:, None] + 0.4 * np.arange(nz)[None, :]
    grid = uniform_time_grid(times, None, max_time_step_s=1.0)
    assert grid[1] - grid[0] == pytest.approx(1.0)
    assert grid[-1] <= times[-1].min() + 1e-9  # no extrapolation past any slice's last sample
    # A curve that is linear in time is reproduced exactly at the true per-slice times.
    data = np.empty((len(ft), nz, 2, 2), np.float32)
    for z in range(nz):
        data[:, z] = (2.0 * times[:, z] + 1.0)[:, None, None]
    out = resample_to_grid(data, times, grid)
    inside = grid >= times[0].max()
    np.testing.assert_allclose(out[inside, :, 0, 0], (2.0 * grid[inside] + 1.0)[:, None] * np.ones(nz), rtol=1e-5)
    # A bolus curve sampled with stagger: every slice lands on the same absolute-time curve.
    for z in range(nz):
        data[:, z] = _gamma(times[:, z])[:, None, None]
    out = resample_to_grid(data, times, grid)
    dense = grid < 19.0
    np.testing.assert_allclose(out[dense & inside, :, 0, 0], _gamma(grid[dense & inside])[:, None] * np.ones(nz),
                               atol=12.0)
    ttp = grid[np.argmax(out[:, :, 0, 0], axis=0)]
    assert np.ptp(ttp) <= 1.0


def test_bolus_arrival_and_baseline_frames():
    t = np.arange(0, 50, 1.5)
    rng = np.random.default_rng(0)
    art = _gamma(t, arrival=7.0)[:, None] + rng.normal(0, 8, (len(t), 30))
    vein = _gamma(t, arrival=13.0)[:, None] * 1.1 + rng.normal(0, 8, (len(t), 300))
    arr = bolus_arrival_s(np.concatenate([art, vein], axis=1), t)
    assert 7.0 < arr < 11.0  # the arteries, not the (ten times more numerous) veins
    n = baseline_frame_count(t, arr, margin_s=2.5)
    assert 3 <= n <= 5 and t[n - 1] < 7.0  # no enhancing frame in the baseline


def test_binned_affine_keeps_world_positions():
    aff = np.array([[-0.45, 0, 0, 100.0], [0, -0.45, 0, 120.0], [0, 0, 5.0, -30.0], [0, 0, 0, 1]])
    b = binned_affine(aff, 2)
    # centre of binned voxel (0, 0) = mean of the native voxel centres (0..1, 0..1)
    np.testing.assert_allclose(b @ [0, 0, 0, 1], aff @ [0.5, 0.5, 0, 1])
    np.testing.assert_allclose(b @ [3, 2, 1, 1], aff @ [6.5, 4.5, 1, 1])
    v = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    np.testing.assert_allclose(bin_inplane(v, 2)[0], [[2.5, 4.5], [10.5, 12.5]])


def _head(n=96, px=2.0, nz=3, ellipse=1.0):
    yy, xx = np.mgrid[0:n, 0:n]
    r = np.hypot((yy - n / 2) / ellipse, xx - n / 2) * px
    img = np.full((n, n), -1000.0, np.float32)
    img[r < 88] = 40.0   # scalp
    img[r < 80] = 1200.0  # skull
    img[r < 72] = 35.0   # brain
    img[(r < 12)] = 5.0  # ventricle
    return np.repeat(img[None], nz, axis=0), r


def test_brain_mask_excludes_scalp_and_skull():
    vol, r = _head()
    m = brain_mask(vol, 2.0, PreprocessConfig())
    assert m[1][r < 66].all()  # brain incl. the ventricle (holes filled)
    assert not m[1][r > 74].any()  # no skull, no scalp


def test_motion_estimation_recovers_rigid_shift():
    vol, _ = _head(n=160, px=1.0, ellipse=1.25)  # elliptical skull: rotation is observable
    vol[:, 20:30, 70:90] = 1500.0  # bony landmark (e.g. frontal crest) far from the centre
    params_true = np.array([2.0, -1.5, np.deg2rad(2.0)])
    moved = np.empty_like(vol)
    # frame content displaced by params: moved(T(x)) = vol(x) -> warp by the inverse
    inv = warp_frame_inplane(vol, params_true, 1.0)  # vol(T(x))
    hu = np.stack([vol, vol, inv])
    est = estimate_inplane_motion(hu, 1.0, n_ref_frames=2, work_pixel_mm=2.0)
    # aligning frame 2 back: warp(frame2, est) ~ vol, i.e. est is the inverse transform (~ -params_true)
    assert np.all(est[:2] == 0)
    np.testing.assert_allclose(est[2, :2], -params_true[:2], atol=0.3)
    assert est[2, 2] == pytest.approx(-params_true[2], abs=np.deg2rad(0.6))
    realigned = warp_frame_inplane(inv, est[2], 1.0)
    bone = vol > 500
    assert np.mean(np.abs(realigned[bone] - vol[bone])) < np.mean(np.abs(inv[bone] - vol[bone])) * 0.3
    del moved


def test_preprocess_study_end_to_end_small():
    vol, r = _head(n=64, px=3.0, nz=2)
    t = np.arange(0, 45, 1.5)
    hu = np.repeat(vol[None], len(t), axis=0)
    hu[:, :, r < 72] += (0.1 * _gamma(t, 9.0))[:, None, None]
    times = np.repeat(t[:, None], 2, axis=1)
    pre = preprocess_study(hu.astype(np.float32), times, np.diag([3.0, 3.0, 5.0, 1.0]), PreprocessConfig())
    assert pre.delta_hu.shape[1:] == (2, 64, 64)
    assert pre.n_baseline_frames >= 3
    assert pre.brain[1][r < 60].mean() > 0.95
    assert abs(float(np.median(pre.delta_hu[0][pre.brain]))) < 1.0
    assert "frames_brain" not in pre.extra


def test_preprocess_keeps_the_baseline_subtracted_frames_when_asked():
    """``keep_frames``: the brain's frames at their acquired times, less the baseline (the frame-domain dispersion
    prior's input), float32, with the frame times on the clock of ``time_s``."""
    vol, r = _head(n=64, px=3.0, nz=2)
    t = np.arange(0, 45, 1.5) + 100.0  # a scanner clock
    hu = np.repeat(vol[None], len(t), axis=0)
    hu[:, :, r < 72] += (0.1 * _gamma(t - 100.0, 9.0))[:, None, None]
    times = np.repeat(t[:, None], 2, axis=1)
    pre = preprocess_study(hu.astype(np.float32), times, np.diag([3.0, 3.0, 5.0, 1.0]), PreprocessConfig(),
                           keep_frames=True)
    frames = pre.extra["frames_brain"]
    assert frames.dtype == np.float32 and frames.shape == (len(t), int(pre.brain.sum()))
    np.testing.assert_allclose(pre.extra["frame_times_s"], times - 100.0)
    np.testing.assert_allclose(frames[:pre.n_baseline_frames].mean(axis=0), 0.0, atol=1e-3)  # less the baseline
    peak_frame = int(np.argmax(frames.mean(axis=1)))
    assert frames[peak_frame].mean() > 5.0  # the enhancement, not resampled



@pytest.mark.parametrize("arrival_s", [4.0, 5.5, 9.0, 15.0])
def test_noise_estimate_does_not_depend_on_the_baseline_frame_count(arrival_s):
    """``noise_hu`` is the SD of the voxels' noise whether 2 or 10 frames precede the bolus (the median of per-voxel
    sample SDs alone reads 0.67 / 0.89 / 0.95 of it for 2 / 4 / 8 frames)."""
    from ctperf.engine.preprocess import median_sd_fraction

    vol, r = _head(n=64, px=3.0, nz=2)
    t = np.arange(0, 45, 1.5)
    hu = np.repeat(vol[None], len(t), axis=0)
    hu[:, :, r < 72] += (0.1 * _gamma(t, arrival_s))[:, None, None]
    hu[:, :, r < 12] += _gamma(t, arrival_s)[:, None, None]  # an artery-like core: the bolus arrival is found
    hu += np.random.default_rng(0).normal(0.0, 6.0, hu.shape)
    times = np.repeat(t[:, None], 2, axis=1)
    pre = preprocess_study(hu.astype(np.float32), times, np.diag([3.0, 3.0, 5.0, 1.0]),
                           PreprocessConfig(motion_correction=False))
    assert pre.n_baseline_frames == {4.0: 2, 5.5: 3, 9.0: 6, 15.0: 10}[arrival_s]
    assert pre.noise_hu == pytest.approx(6.0, rel=0.03)
    assert median_sd_fraction(2) == pytest.approx(0.6745, abs=1e-4)
    assert median_sd_fraction(4) == pytest.approx(0.8881, abs=1e-4)
