"""The AIF's own noise and the study dispersion prior (`deconvolution.aif_noise_in_prior`, an option; definitions 2.20).

Every model curve the prior fits is the measured AIF convolved with a residue, so it carries the AIF's noise, which the
tissue never saw; sharp residues pass more of it.  The option discounts its expected share of each fit's misfit: right
for undispersed tissue, but it reads dispersed tissue as undispersed (docs/engine-notes.md "session 48"), so it is off.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.fft as sfft

from ctperf.engine.aif import aif_noise_factor, frame_noise_sd
from ctperf.engine.deconvolution import aif_noise_misfits, curve_misfits
from ctperf.engine.deconvolution.emulation import _emulated_tissue_spectra
from ctperf.engine.deconvolution.regularisation import padded_length

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_aif_noise as bench  # noqa: E402  (benchmarks/ is not a package)

_bolus = bench._bolus  # a gamma-variate bolus (peak 350 HU, FWHM 8.2 s)


@pytest.mark.parametrize("times", [np.arange(0.0, 60.0, 1.0), np.arange(0.0, 60.0, 1.5),
                                   np.r_[np.arange(0.0, 30.0, 1.0), np.arange(30.0, 62.0, 2.0)]])
@pytest.mark.parametrize("sd", [3.0, 8.0, 20.0])
def test_frame_noise_sd_reads_the_noise_not_the_bolus(times, sd):
    """White noise on a bolus at clinical frame rates: the estimate follows the noise (mean of 20 draws within 20 %;
    measured +1...+3 % at 1 s frames, +10...+18 % at 1.5 s, the bolus's frames lifting the median; one draw scatters
    by ~25 % with 40 frames), and a noise-free bolus reads almost none."""
    rng = np.random.default_rng(0)
    clean = _bolus(times)
    est = [frame_noise_sd(clean + rng.normal(0.0, sd, len(times)), times) for _ in range(20)]
    assert np.mean(est) == pytest.approx(sd, rel=0.20), est
    assert frame_noise_sd(clean, times) < 0.5


def test_frame_noise_sd_needs_enough_frames():
    assert np.isnan(frame_noise_sd(np.ones(6), np.arange(6.0)))


def test_aif_noise_misfits_are_what_the_noise_leaves_in_the_true_models_fit():
    """tr((I - P) A C A') against Monte Carlo: one block of each residue, fitted by ``curve_misfits`` under its own
    model with 100 draws of AIF noise; the mean excess misfit over the noise-free AIF's, per flow squared (measured
    within 5 %)."""
    t = np.arange(0.0, 70.0, 1.0)
    n_t, dt, sd, flow = len(t), 1.0, 18.0, 0.01
    length = padded_length(n_t)
    clean = _bolus(t)
    taus = np.geomspace(0.3, 60.0, 48)
    family = [(1.0, 0.0), (1.0, 1.0), (1.0, 2.0)]
    expected = aif_noise_misfits(family, taus, dt, n_t, sd * np.eye(n_t), clean)
    node = int(np.argmin(np.abs(np.log(taus) - np.log(4.0))))
    rng = np.random.default_rng(5)

    def misfit(m: int, aif: np.ndarray, block: np.ndarray) -> float:
        shape_k, disp_s = family[m]
        spectra = _emulated_tissue_spectra(aif, dt, length, n_t, taus, disp_s, shape_k)[0][None]
        return float(curve_misfits(block[None], spectra, length, 4, np.full((1, 1), node), 4)[0][0, 0])

    for m, (shape_k, disp_s) in enumerate(family):
        spec, _, _ = _emulated_tissue_spectra(clean, dt, length, n_t, taus[node:node + 1], disp_s, shape_k)
        block = flow * sfft.irfft(spec, n=length)[0, :n_t]
        excess = np.mean([misfit(m, clean + rng.normal(0.0, sd, n_t), block) for _ in range(100)])
        excess -= misfit(m, clean, block)
        assert excess == pytest.approx(flow ** 2 * expected[m, node], rel=0.12), (m, excess, expected[m, node])
    # a sharp residue passes more of the AIF's noise than the same residue dispersed
    assert (expected[0, 10:40] > expected[1, 10:40]).all()


def test_aif_noise_factor_carries_the_partial_volume_scale():
    times = np.arange(0.0, 40.0, 1.0)
    frames = _bolus(times) + np.random.default_rng(2).normal(0.0, 4.0, len(times))
    ops = np.eye(len(times))[None]  # frames on the grid as they are
    sd = frame_noise_sd(frames, times)
    factor = aif_noise_factor(frames, sd, ops, 2.0 * frames)
    np.testing.assert_allclose(factor @ factor.T, (2.0 * sd) ** 2 * np.eye(len(times)), atol=1e-9)
    assert np.isnan(frame_noise_sd(frames[:5], times[:5]))  # too few frames: no noise, so no factor


@functools.cache
def _shares(seed: int, aif_sd: float, true_disp: float) -> dict:
    return bench.prior_shares(seed, aif_sd, true_disp)


def _prior_share(seed: int, aif_sd: float, corrected: bool, true_disp: float = 0.0) -> float:
    """The study prior's share on the true dispersion for 400 blocks of exponential tissue (MTT 2.5-6 s, whole
    sample delays 0-2 s, 0.15 HU white noise) made with the noise-free AIF, the models built from that AIF plus one
    draw of white noise (``benchmarks/bench_aif_noise.py``'s part A, which measures it over noise levels)."""
    return _shares(seed, aif_sd, true_disp)["corrected" if corrected else "plain"][0]


def test_a_noisy_aif_unsettles_the_prior_and_the_option_fixes_undispersed_tissue():
    """Six draws of an AIF with 5 % white noise (18 HU on a 350 HU peak), undispersed tissue: uncorrected, three draws
    read it dispersed (share on no dispersion 1 / 1 / 0 / 0 / 0 / 1); with the option every draw reads it right (1.00).
    Measured 2026-12-06."""
    plain = [_prior_share(seed, 18.0, False) for seed in range(6)]
    corrected = [_prior_share(seed, 18.0, True) for seed in range(6)]
    assert sum(p < 0.5 for p in plain) >= 2, plain
    assert min(corrected) >= 0.9, corrected


@pytest.mark.xfail(strict=True, reason=(
    "measured 2026-12-06: 1 s-dispersed tissue, six draws of 5 % AIF noise: the share on 1 s is 1 / 1 / 1 / 0.99 / 1 "
    "/ 0 uncorrected (mean 0.83) but 0 / 0 / 0.79 / 1 / 1 / 0 with aif_noise_in_prior (mean 0.47; 2 s of dispersion, "
    "eight draws: 0.62 -> 0.30): how much of the AIF's noise a model's fit absorbs depends on the truth as well as on "
    "the model, so the expected share of the true model over-corrects the sharp one fitted to dispersed tissue"))
def test_the_option_keeps_dispersed_tissue_dispersed():
    corrected = [_prior_share(seed, 18.0, True, true_disp=1.0) for seed in range(6)]
    assert np.mean(corrected) >= 0.8, corrected


@pytest.fixture(scope="module")
def small_study():
    """The small project phantom (8 HU, five AIF voxels) and its default run, shared by the tests below."""
    from ctperf.config import Config
    from ctperf.core.types import CTPStudy
    from ctperf.engine import compute_perfusion
    from ctperf.synthetic import PhantomSpec, make_phantom

    ph = make_phantom(PhantomSpec(matrix=112, pixel_mm=2.0, n_slices=6, z_bottom_mm=-15.0, noise_hu=8.0))
    study = CTPStudy(hu=ph.hu, times_s=ph.times_s, affine_ras=ph.affine_ras)
    return ph, study, compute_perfusion(study, Config())


def test_a_run_reports_the_noise_of_its_aif_frames(small_study):
    """``qa_values.aif_frame_noise_hu``: the noise of the AIF's mean frames (project phantom, 8 HU, five AIF voxels:
    about 8 / sqrt 5 = 3.6 HU when their noise is independent; this one reads 4.5 HU, the estimate's ~25 % scatter);
    null without the frames (the prior fitted on the grid keeps none)."""
    from ctperf.config import Config
    from ctperf.engine import compute_perfusion

    _, study, res = small_study
    n_vox = len(res.aif.voxels_zyx)
    assert res.qa_values["aif_frame_noise_hu"] == pytest.approx(res.qa_values["noise_hu"] / np.sqrt(n_vox), rel=0.35)
    grid = compute_perfusion(study, Config.from_dict({"deconvolution": {"dispersion_prior_fit": "grid"}}))
    assert grid.qa_values["aif_frame_noise_hu"] is None


def test_an_aif_noisier_than_2_percent_of_its_peak_flags_the_dispersion(small_study):
    """``AIF_FRAME_NOISE_MAX_FRACTION``: on the project phantom, one draw of noise shared by every arterial voxel moved
    the prior either way from ~1.2 % of the AIF's peak on (1 s-dispersed tissue read 1.00 on no dispersion, normal
    tissue Tmax -1.1 / -1.3 s, at 2.2 / 3.4 %, unflagged before), while the phantom's own five-voxel AIF (1.1 %) reads
    right (docs/engine-notes.md "session 48").  Above 2 % both dispersion flags are raised, with the reason."""
    from ctperf.config import Config
    from ctperf.core.constants import AIF_FRAME_NOISE_MAX_FRACTION
    from ctperf.core.types import CTPStudy
    from ctperf.engine import compute_perfusion

    ph, _, clean = small_study
    assert clean.qa_values["aif_frame_noise_fraction"] < AIF_FRAME_NOISE_MAX_FRACTION
    assert clean.qa_values["dispersion_aif_noise_reason"] is None
    hu = ph.hu.copy()
    enhancement = hu.max(axis=0) - hu[0]
    arterial = enhancement > 0.2 * enhancement.max()
    hu[:, arterial] += np.random.default_rng(0).normal(0.0, 0.06 * 350.0, len(hu)).astype(np.float32)[:, None]
    noisy = compute_perfusion(CTPStudy(hu=hu, times_s=ph.times_s, affine_ras=ph.affine_ras), Config())
    assert noisy.qa_values["aif_frame_noise_fraction"] > AIF_FRAME_NOISE_MAX_FRACTION
    assert noisy.qa_flags["tmax_dispersion_ambiguous"] and noisy.qa_flags["cbf_dispersion_ambiguous"]
    assert "of its peak" in noisy.qa_values["dispersion_aif_noise_reason"]
