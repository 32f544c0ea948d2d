"""The noise-aware Tmax shift (``deconvolution.tmax_noise_aware``, off by default; docs/engine-notes.md "Model
evidence").

Its two building blocks are checked on exact inputs: the study's denoised noise (through a known linear
"denoising") and the tables (no noise level = the noise-free shift; a voxel's noise level picks and blends them).
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

from ctperf.config import Config
from ctperf.errors import ConfigError
from ctperf.engine.deconvolution import (NOISE_Q_GRID, aif_noise_floor, circulant_spectrum, model_family,
                                        noisy_shift_tables, padded_length)
from ctperf.engine.deconvolution.emulation import _blended_lookup, _family_tables, _grid_position, _observable_tables
from ctperf.engine.deconvolution.regularisation import _filters
from ctperf.engine import method_description
from ctperf.engine.noise_emulation import denoised_noise


def _identity_run(noise_hu=5.0, n_baseline=4, n_frames=30):
    """The error of 4000 voxels' curves through baseline subtraction and an identity resampling and denoising."""
    mask = np.ones((1, 40, 100), bool)
    times = np.arange(n_frames, dtype=float)
    curves = np.outer(np.linspace(0, 50, 4000), np.sin(times / 5.0))  # any curves: the error does not see them
    return denoised_noise(curves, mask, mask, times, times, n_baseline, noise_hu, lambda d, b: d[:, mask].T,
                          temporal_sigma_s=0.0, n_vectors=64, seed=3)


def test_denoised_noise_passes_white_noise_through_the_baseline_subtraction():
    out = _identity_run()
    # a frame after the baseline: its own noise minus the baseline mean: 5 * sqrt(1 + 1/4) HU
    after = np.sqrt(np.mean(out.rms_hu ** 2))
    assert after == pytest.approx(5.0 * np.sqrt((26 * 1.25 + 4 * 0.75) / 30), rel=0.02)
    assert out.vectors.shape == (64, 30) and len(out.rms_hu) == 4000
    np.testing.assert_allclose(_identity_run().vectors, out.vectors)  # seeded: the same study, the same noise


def test_denoised_noise_needs_a_measured_noise_level():
    mask = np.ones((1, 4, 4), bool)
    args = (np.zeros((16, 5)), mask, mask, np.arange(5.0), np.arange(5.0), 2)
    for level in (0.0, float("nan")):
        assert denoised_noise(*args, level, lambda d, b: d[:, mask].T, 0.0) is None


def _tables(noise_vectors):
    dt, t = 1.0, 50
    tt = np.arange(t) * dt
    aif = np.where(tt > 0, 300.0 * (tt / 8.0) ** 3 * np.exp(3.0 * (1.0 - tt / 8.0)), 0.0)
    cfg = Config.from_dict({"deconvolution": {"residue_shapes": [1.0], "model_dispersions_s": [0.0, 1.0]}}
                           ).deconvolution
    length = padded_length(t)
    filters, _ = _filters(circulant_spectrum(aif, dt, length), "bcsvd", cfg, aif_noise_floor(aif)[1])
    tau = np.geomspace(0.3, 60.0, 48)
    family = model_family(cfg)
    n_neg = 4
    heights, shifts, _, spectra = _family_tables(aif, filters, dt, length, t, n_neg, tau, family)
    y_grid = np.linspace(-np.log(tau[-1]) - 1.0, -np.log(tau[0]) + 1.0, 512)
    shift_y = _observable_tables(heights[:, -1], [shifts], tau, y_grid)[0]
    tabs = noisy_shift_tables(aif, filters, dt, length, t, n_neg, tau, spectra, shifts, shift_y, y_grid, 2, 1,
                              cfg.oscillation_index, noise_vectors)
    return shift_y, tabs


def test_tables_without_noise_are_the_noise_free_shift():
    vectors = np.random.default_rng(0).standard_normal((16, 50))
    shift_y, tabs = _tables(vectors)
    assert tabs.shape == shift_y.shape[:2] + (len(NOISE_Q_GRID), shift_y.shape[2])
    np.testing.assert_array_equal(tabs[:, :, 0], shift_y)
    assert np.isfinite(tabs).all()


def test_a_voxels_noise_level_blends_its_two_neighbouring_tables():
    table = np.zeros((2, len(NOISE_Q_GRID), 4))
    table[:, :, :] = np.arange(len(NOISE_Q_GRID))[None, :, None]  # table value = index of the level
    w = np.full((2, 3), 0.5)
    q = np.array([0.0, 0.03, 1.0])  # on a level, between 0.02 and 0.04, beyond the last level
    q0, qf = _grid_position(q, NOISE_Q_GRID)
    got = _blended_lookup(table, w, np.zeros(3, int), np.zeros(3), q0, qf)
    np.testing.assert_allclose(got, [0.0, 2.5, len(NOISE_Q_GRID) - 1])


def test_option_is_off_by_default_validated_and_recorded():
    dc = Config().deconvolution
    assert dc.tmax_noise_aware is False and dc.tmax_noise_vectors == 128
    assert method_description(dc)["model_family"]["tmax_noise_aware"] is False
    on = Config.from_dict({"deconvolution": {"tmax_noise_aware": True}}).deconvolution
    assert method_description(on)["model_family"]["tmax_noise_aware"] is True
    with pytest.raises(ConfigError):
        Config.from_dict({"deconvolution": {"tmax_noise_vectors": 4}})


# ------------------------------------------------------------------------------ project phantom, 8 HU (~4-8 s each)
@functools.cache
def _phantom_row(dispersion_s: float, noise_aware: bool) -> dict:
    """Undispersed / dispersed project phantom at 8 HU, the study mixture as the Tmax shift's prior."""
    from ctperf.core.types import CTPStudy
    from ctperf.engine import compute_perfusion
    from ctperf.synthetic.phantom import PhantomSpec, make_phantom

    ph = make_phantom(PhantomSpec(matrix=160, n_slices=8, pixel_mm=1.4, noise_hu=8.0, lesion="left",
                                  dispersion_s=dispersion_s, seed=0))
    cfg = Config.from_dict({"deconvolution": {"tmax_prior": "mixture", "tmax_noise_aware": noise_aware}})
    res = compute_perfusion(CTPStudy(hu=ph.hu, times_s=ph.times_s, affine_ras=ph.affine_ras), cfg)
    tr = ph.truth
    tissue = tr.tissue & res.masks.brain & np.isfinite(res.tmax)
    normal = tissue & ~tr.lesion_any
    return {"normal_s": float(np.median(res.tmax[normal] - tr.tmax[normal])),
            "tmax6_ratio": float((tissue & (res.tmax > 6)).sum() / (tissue & (tr.tmax > 6)).sum())}


def test_noise_aware_shift_reads_undispersed_tissue_earlier_at_8hu():
    """Mixture prior alone: normal tissue +0.41 s, Tmax > 6 s +4.5 %; noise-aware: +0.14 s, -7.0 % (definitions 2.15,
    whose noise_hu is the SD for any number of baseline frames; 2.14: +0.19 s, -5.6 %; the option moves the volume
    further from the truth than the plain mixture prior; engine 2.10: +0.35 s, +6.7 % / +0.16 s, -3.4 %)."""
    plain, aware = _phantom_row(0.0, False), _phantom_row(0.0, True)
    assert abs(aware["tmax6_ratio"] - 1.0) <= 0.10 and abs(plain["tmax6_ratio"] - 1.0) <= 0.10, (plain, aware)
    assert aware["normal_s"] <= plain["normal_s"] - 0.15, (plain, aware)


@pytest.mark.xfail(strict=True, reason="measured (engine 2.11, definitions 2.15): undispersed normal tissue still "
                   "+0.14 s late at 8 HU with the noise-aware shift (2.14: +0.19 s; 2.10: +0.16 s; the default reads +0.15 s; the emulation's "
                   "correction grows with the noise-to-peak ratio, the late reading does not: +0.4-0.6 s at every flow; docs/engine-notes.md "
                   "'Model evidence')")
def test_noise_aware_shift_reads_undispersed_normal_tissue_within_a_tenth_of_a_second():
    assert abs(_phantom_row(0.0, True)["normal_s"]) <= 0.1


def test_noise_aware_shift_reads_dispersed_tissue_at_8hu():
    """1 s of dispersion, mixture prior alone: +0.19 s, +1.9 %; noise-aware: +0.06 s, -2.5 % (definitions 2.15; engine 2.10: +0.07 s, -2.2 %)."""
    row = _phantom_row(1.0, True)
    assert abs(row["normal_s"]) <= 0.2 and abs(row["tmax6_ratio"] - 1.0) <= 0.05, row
