"""Deconvolution on analytic curves (gamma-variate AIF; exponential, gamma and plug-flow residues with dispersion;
known CBF / MTT / delay)."""

from __future__ import annotations

import numpy as np
import pytest

from ctperf.config import DeconvolutionConfig
from ctperf.core.constants import KH, RHO_G_PER_ML
from ctperf.engine.deconvolution import deconvolve, oscillation_index, residue_peak
from ctperf.engine.maps import cbf_from_rmax, cbv_from_curves, mtt_from

FINE = 0.01


def gamma_aif(t, arrival=6.0, ttp_rel=5.0, alpha=3.0, peak=350.0):
    x = np.clip((t - arrival) / ttp_rel, 0, None)
    return peak * np.where(x > 0, x**alpha * np.exp(alpha * (1 - x)), 0.0)


def tissue_curve(t, cbf, mtt, delay, dispersion=0.0):
    """Continuous-time C = CBF*rho/(6000 kH) * AIF (x) h (x) exp(-t/MTT), sampled at t (fine-grid convolution)."""
    tf = np.arange(0, t[-1] + 20, FINE)
    a = gamma_aif(tf)
    r = np.exp(-tf / mtt)
    if dispersion > 0:
        h = np.exp(-tf / dispersion) / dispersion * FINE
        r = np.convolve(r, h)[: len(tf)]
    c = np.convolve(a, r)[: len(tf)] * FINE * cbf * RHO_G_PER_ML / (6000 * KH)
    return np.interp(t - delay, tf, c, left=0.0)


T = np.arange(0, 60.0, 1.0)
AIF = gamma_aif(T)
T90 = np.arange(0, 90.0, 1.0)  # long enough for MTTs up to 20 s
AIF90 = gamma_aif(T90).astype(np.float32)


def _run(cbf, mtt, delay, cfg, dispersion=0.0):
    c = tissue_curve(T, cbf, mtt, delay, dispersion)[None]
    out = deconvolve(c, AIF, 1.0, cfg)
    est_cbf = float(cbf_from_rmax(out.rmax_per_s)[0])
    est_cbv = float(cbv_from_curves(c, AIF)[0])
    return est_cbf, est_cbv, float(mtt_from(np.array([est_cbv]), np.array([est_cbf]))[0]), float(out.tmax_s[0])


def residue_curve(shape, cbf, mtt, delay, dispersion):
    """Tissue curve for a gamma(shape)-transit-time residue (``"box"``: plug flow) with exponential dispersion;
    returns (curve at T, apparent CBF = CBF * max(h (x) R), true Tmax = delay + argmax(h (x) R))."""
    from scipy.special import gammaincc

    tf = np.arange(0, T[-1] + 20, FINE)
    if shape == "box":
        r = (tf < mtt).astype(float)
    else:
        r = gammaincc(shape, shape * tf / mtt)
    if dispersion > 0:
        r = np.convolve(r, np.exp(-tf / dispersion) / dispersion * FINE)[: len(tf)]
    c = np.convolve(gamma_aif(tf), r)[: len(tf)] * FINE * cbf * RHO_G_PER_ML / (6000 * KH)
    return np.interp(T - delay, tf, c, left=0.0), cbf * r.max(), delay + tf[np.argmax(r)]


@pytest.mark.parametrize("cbf,mtt", [(60.0, 4.0), (25.0, 5.0), (12.0, 8.0)])
@pytest.mark.parametrize("delay", [0.0, 3.0, 6.0])
def test_bcsvd_recovers_noiseless_parameters(cbf, mtt, delay):
    est_cbf, est_cbv, est_mtt, tmax = _run(cbf, mtt, delay, DeconvolutionConfig())
    assert est_cbv == pytest.approx(cbf * mtt / 60.0, rel=0.02)
    assert est_cbf == pytest.approx(cbf, rel=0.05)
    assert est_mtt == pytest.approx(mtt, rel=0.06)
    assert tmax == pytest.approx(delay, abs=0.3)


@pytest.mark.parametrize("shape", [1, 2, 3, 5, "box"])
@pytest.mark.parametrize("dispersion", [0.0, 1.0, 2.0, 3.0])
def test_default_is_shape_and_dispersion_robust_noiseless(shape, dispersion):
    """No residue family is assumed: for gamma (k = 1..5) and plug-flow residues, with 0-3 s of dispersion, CBF is
    the peak of the unregularised residue h (x) R (the flow itself without dispersion) and Tmax its time."""
    for cbf, mtt in ((60.0, 4.0), (25.0, 5.0), (12.0, 8.0)):
        c, app, true_tmax = residue_curve(shape, cbf, mtt, 3.0, dispersion)
        out = deconvolve(c[None], AIF, 1.0, DeconvolutionConfig())
        assert float(cbf_from_rmax(out.rmax_per_s)[0]) == pytest.approx(app, rel=0.15)
        if shape != "box":  # the argmax of a flat top is ill-posed (issue 14: report, do not tune)
            assert float(out.tmax_s[0]) == pytest.approx(true_tmax, abs=0.4)


_OFF_GRID = ("measured (engine 2.1): an undispersed exponential arriving {} sample off the grid reads {}; the residue "
             "evidence moves each model to the observed peak by linear interpolation, which flattens a sharp residue, "
             "and the flattened model looks dispersed.  Cubic or band-limited alignment fixes this case but flips "
             "noise-free near-twins (exponential + 1 s dispersion vs undispersed gamma-2: "
             "test_default_is_shape_and_dispersion_robust_noiseless), so it is not adopted yet; on the block phantom "
             "at 2-8 HU off-grid delays read like on-grid ones (harness residue_exponential_offgrid)")


@pytest.mark.parametrize("fraction", [
    0.0,
    pytest.param(0.25, marks=pytest.mark.xfail(strict=True, reason=_OFF_GRID.format(
        "a quarter", "CBF -34 % and Tmax +0.86 s at MTT 2 s"))),
    pytest.param(0.5, marks=pytest.mark.xfail(strict=True, reason=_OFF_GRID.format(
        "half a", "CBF -34 % / -25 % and Tmax +0.90 s / +1.00 s at MTT 2 s / 3 s"))),
    0.75])
def test_arrival_between_two_samples_is_not_read_as_dispersion(fraction):
    """Tissue arrives at any time between two samples.  A sharp (undispersed) residue sampled off its onset must
    not look dispersed to the model evidence."""
    for cbf, mtt in ((90.0, 2.0), (60.0, 3.0), (60.0, 4.0), (25.0, 5.0), (12.0, 8.0)):
        c, app, true_tmax = residue_curve(1, cbf, mtt, 3.0 + fraction, 0.0)
        out = deconvolve(np.repeat(c[None], 4, axis=0), AIF, 1.0, DeconvolutionConfig(), shape_groups=np.zeros(4, int))
        assert float(cbf_from_rmax(out.rmax_per_s)[0]) == pytest.approx(app, rel=0.06), (cbf, mtt)
        assert float(out.tmax_s[0]) == pytest.approx(true_tmax, abs=0.25), (cbf, mtt)


def test_standard_method_is_the_uncorrected_model_free_convention():
    """``method = "standard"``: bcSVD + OI, Tmax = argmax of that residue, no correction; its Tmax of a sharp
    (undispersed) residue lags the truth by the regularisation lag, which the default removes."""
    c, app, true_tmax = residue_curve(1, 60.0, 4.0, 3.0, 0.0)
    std = deconvolve(c[None], AIF, 1.0, DeconvolutionConfig(method="standard"))
    default = deconvolve(c[None], AIF, 1.0, DeconvolutionConfig())
    assert float(std.tmax_s[0]) - true_tmax > 1.0
    assert float(cbf_from_rmax(std.rmax_per_s)[0]) < 0.85 * app
    # the default run carries the standard values of the same curves
    np.testing.assert_allclose(default.rmax_standard_per_s, std.rmax_per_s, rtol=1e-5)
    np.testing.assert_allclose(default.tmax_standard_s, std.tmax_s, atol=1e-5)


def test_bcsvd_is_delay_insensitive_and_svd_is_not():
    cfg = DeconvolutionConfig()
    cbf0 = _run(50.0, 4.0, 0.0, cfg)[0]
    cbf5 = _run(50.0, 4.0, 5.0, cfg)[0]
    assert cbf5 == pytest.approx(cbf0, rel=0.03)
    svd = DeconvolutionConfig(method="svd")
    s0, s5 = _run(50.0, 4.0, 0.0, svd)[0], _run(50.0, 4.0, 5.0, svd)[0]
    assert s5 < 0.9 * s0  # standard SVD underestimates delayed tissue (why it is for comparison only)


def test_tikhonov_option():
    cfg = DeconvolutionConfig(method="tikhonov", tikhonov_lambda=0.1)
    est_cbf, _, _, tmax = _run(40.0, 4.0, 2.0, cfg)
    assert est_cbf == pytest.approx(40.0, rel=0.12)
    assert tmax == pytest.approx(2.0, abs=0.6)
    raw = DeconvolutionConfig(method="tikhonov", correct_regularisation_bias=False)
    assert _run(40.0, 4.0, 2.0, raw)[0] < est_cbf  # the correction lifts the regularised peak


def test_noisy_many_voxels_vectorised():
    rng = np.random.default_rng(1)
    c = tissue_curve(T, 50.0, 4.0, 2.0)
    curves = c[None] + rng.normal(0, 1.0, (4000, len(T)))
    groups = np.arange(4000) // 16  # the model is chosen on the mean of 16 curves (engine: 4 mm blocks)
    out = deconvolve(curves.astype(np.float32), AIF, 1.0, DeconvolutionConfig(), shape_groups=groups)
    cbf = cbf_from_rmax(out.rmax_per_s)
    assert np.median(cbf) == pytest.approx(50.0, rel=0.15)
    assert np.median(np.abs(out.tmax_s - 2.0)) < 1.0
    # a noisier voxel gets more regularisation (per-voxel OI threshold)
    noisy = c[None] + rng.normal(0, 4.0, (4000, len(T)))
    out2 = deconvolve(noisy.astype(np.float32), AIF, 1.0, DeconvolutionConfig(), shape_groups=groups)
    assert np.median(out2.threshold) > np.median(out.threshold)


def test_oscillation_index_definition():
    L = 40
    alt = np.tile([1.0, 0.0], L // 2)
    # |r_k - 2 r_{k-1} + r_{k-2}| = 2 for every k >= 2 -> OI = 2 (L - 2) / (L * max r)
    assert oscillation_index(alt[None])[0] == pytest.approx(2 * (L - 2) / L)
    smooth = np.exp(-np.arange(L) / 10.0)
    assert oscillation_index(smooth[None])[0] < 0.01
    assert np.isinf(oscillation_index(np.zeros((1, L)))[0])


def test_residue_peak_subsample():
    t = np.arange(0, 20.0, 1.0)
    for true in (3.0, 3.3, 3.5, 4.8):
        r = np.exp(-((t - true) ** 2) / 8.0)
        pk, tm = residue_peak(r[None], 1.0, len(t), 0)
        assert tm[0] == pytest.approx(true, abs=0.08)
        assert pk[0] == pytest.approx(1.0, abs=0.02)


def _noisy_low_flow(n=3000, sd=2.0, seed=0):
    """Core-like curves (CBF 5, MTT 16 s, 1 s dispersion, delay 3 s) + white noise, both temporally smoothed like
    the engine does (the AIF too)."""
    from ctperf.engine.denoise import temporal_smooth

    rng = np.random.default_rng(seed)
    aif = temporal_smooth(AIF[:, None], 1.0, 1.0, axis=0)[:, 0]
    c0 = tissue_curve(T, 5.0, 16.0, 3.0, 1.0)
    clean = temporal_smooth(c0[None], 1.0, 1.0, axis=1)
    noisy = temporal_smooth(c0[None] + rng.normal(0, sd, (n, len(T))), 1.0, 1.0, axis=1)
    return aif, clean, noisy


def test_lag_aware_window_reduces_the_noise_lift_of_low_flows():
    aif, clean, noisy = _noisy_low_flow()
    lift = {}
    for name, cfg in (("default", DeconvolutionConfig()), ("wide", DeconvolutionConfig(peak_window_s=3.0)),
                      ("unguided", DeconvolutionConfig(peak_window_s=None))):
        c = float(cbf_from_rmax(deconvolve(clean, aif, 1.0, cfg).rmax_per_s)[0])
        est = cbf_from_rmax(deconvolve(noisy, aif, 1.0, cfg).rmax_per_s)
        lift[name] = float(np.median(est)) - c
    assert lift["default"] < lift["wide"] < lift["unguided"]
    # the noiseless height is the same as with the wide window (the peak is inside the lag-aware window)
    c_def = cbf_from_rmax(deconvolve(clean, aif, 1.0, DeconvolutionConfig()).rmax_per_s)[0]
    c_wide = cbf_from_rmax(deconvolve(clean, aif, 1.0, DeconvolutionConfig(peak_window_s=3.0)).rmax_per_s)[0]
    assert c_def == pytest.approx(c_wide, rel=0.02)


def test_noise_robust_mtt_lookup_lowers_the_correction_of_noisy_low_flows():
    aif, _, noisy = _noisy_low_flow()
    cfg = DeconvolutionConfig()
    a = cbf_from_rmax(deconvolve(noisy, aif, 1.0, cfg).rmax_per_s)
    b = cbf_from_rmax(deconvolve(noisy, aif, 1.0, cfg, tau_filter=lambda lt: np.full_like(lt, np.median(lt)))
                      .rmax_per_s)
    assert float(np.mean(b)) < float(np.mean(a))
    # the same filter steadies the guide's peak time, so Tmax of identical noisy curves scatters less
    ta = deconvolve(noisy[:200], aif, 1.0, cfg).tmax_s
    tb = deconvolve(noisy[:200], aif, 1.0, cfg, tau_filter=lambda v: np.full_like(v, np.median(v))).tmax_s
    assert float(np.std(tb)) < float(np.std(ta))


def test_study_scope_uses_one_model_for_every_voxel():
    """``model_weights_scope = "study"``: the joint evidence of all groups picks one mixture for the whole study."""
    rng = np.random.default_rng(3)
    c, app, _ = residue_curve(3, 40.0, 5.0, 2.0, 0.0)
    curves = (c[None] + rng.normal(0, 0.5, (800, len(T)))).astype(np.float32)
    groups = np.arange(800) // 16
    out = deconvolve(curves, AIF, 1.0, DeconvolutionConfig(model_weights_scope="study"), shape_groups=groups)
    assert float(np.median(cbf_from_rmax(out.rmax_per_s))) == pytest.approx(app, rel=0.10)


def _family_evidence(shape, dispersion, noise_hu, n_groups=48, per_group=9, seed=0):
    """Summed log-likelihood of each model of the default family for noisy groups of curves of one residue."""
    from ctperf.engine.deconvolution import circulant_spectrum, model_family, model_log_evidence, padded_length
    from ctperf.engine.deconvolution.emulation import _family_tables
    from ctperf.engine.deconvolution.regularisation import _filters

    cfg = DeconvolutionConfig()
    rng = np.random.default_rng(seed)
    curves, groups = [], []
    for g in range(n_groups):
        c, _, _ = residue_curve(shape, rng.uniform(25, 60), rng.uniform(3, 7), rng.uniform(0, 3), dispersion)
        curves.append(c[None] + rng.normal(0, noise_hu, (per_group, len(T))))
        groups += [g] * per_group
    curves = np.concatenate(curves).astype(np.float32)
    length = padded_length(len(T))
    filters, _ = _filters(circulant_spectrum(AIF, 1.0, length), "bcsvd", cfg)
    family = model_family(cfg)
    tau = np.geomspace(0.3, 60.0, 48)
    heights, _, _, spectra = _family_tables(AIF, filters, 1.0, length, len(T), 4, tau, family)
    ev = model_log_evidence(curves, np.array(groups), AIF, filters[-1], spectra, heights[:, -1], 1.0, length, 4, tau)
    return family, ev.astype(float).sum(axis=1)


@pytest.mark.parametrize("shape,dispersion", [(1, 0.0), (1, 1.0), (1, 2.0), (3, 1.0)])
def test_curve_evidence_picks_the_true_residue(shape, dispersion):
    """``model_evidence = "curves"`` fits each model's tissue curve to the group means (flow, delay, MTT free):
    with noise, the joint evidence of many groups points at the true shape and dispersion."""
    family, total = _family_evidence(shape, dispersion, noise_hu=2.0)
    assert family[int(np.argmax(total))] == (float(shape), dispersion)


def test_vessels_do_not_inform_the_model_weights():
    """Arterial curves deconvolve to a spike (the sharpest model): excluded by ``evidence_mask``, they leave the
    tissue's weights as they were without them."""
    rng = np.random.default_rng(5)
    c, app, _ = residue_curve(1, 40.0, 5.0, 1.0, 1.0)
    tissue = c[None] + rng.normal(0, 0.5, (400, len(T)))
    vessels = AIF[None] * rng.uniform(0.8, 1.0, (100, 1)) + rng.normal(0, 0.5, (100, len(T)))
    curves = np.concatenate([tissue, vessels]).astype(np.float32)
    groups = np.arange(500) // 10
    cfg = DeconvolutionConfig(model_weights_scope="study", model_evidence="curves")
    ref = deconvolve(curves[:400], AIF, 1.0, cfg, shape_groups=groups[:400])
    mask = np.arange(500) < 400
    out = deconvolve(curves, AIF, 1.0, cfg, shape_groups=groups, evidence_mask=mask)
    np.testing.assert_allclose(out.rmax_per_s[:400], ref.rmax_per_s, rtol=1e-5)
    assert float(np.median(cbf_from_rmax(out.rmax_per_s[:400]))) == pytest.approx(app, rel=0.10)


def test_curve_evidence_regional_option_runs_and_is_bounded():
    """The "curves" evidence with regional pooling on noisy exponential curves: CBF within 15 % of the truth."""
    rng = np.random.default_rng(7)
    c, app, true_tmax = residue_curve(1, 40.0, 5.0, 2.0, 1.0)
    curves = (c[None] + rng.normal(0, 1.0, (600, len(T)))).astype(np.float32)
    groups = np.arange(600) // 9
    out = deconvolve(curves, AIF, 1.0, DeconvolutionConfig(model_evidence="curves"), shape_groups=groups,
                     evidence_filter=lambda v: np.full_like(v, v.sum()))
    assert float(np.median(cbf_from_rmax(out.rmax_per_s))) == pytest.approx(app, rel=0.15)
    assert float(np.median(out.tmax_s)) == pytest.approx(true_tmax, abs=0.75)


def test_banded_argmax_matches_the_masked_argmax():
    """``_argmax_between`` reads only the band of columns it searches; it must pick what a full-width masked argmax
    picks (first of equal maxima, NaN as the maximum, 0 for an empty range)."""
    from ctperf.engine.deconvolution.peaks import _argmax_between, _argmax_near

    rng = np.random.default_rng(0)
    for trial in range(200):
        n, w = int(rng.integers(1, 40)), int(rng.integers(1, 30))
        win = rng.integers(0, 4, size=(n, w)).astype(np.float32)
        if trial % 3 == 0:
            win[rng.random((n, w)) < 0.05] = np.nan
        lo = rng.integers(-5, w + 5, n)
        hi = lo + rng.integers(-3, 10, n)
        cols = np.arange(w)[None]
        masked = np.where((cols < lo[:, None]) | (cols > hi[:, None]), -np.inf, win)
        np.testing.assert_array_equal(_argmax_between(win, lo, hi), np.argmax(masked, axis=1))
        c, h = rng.integers(-3, w + 3, n), int(rng.integers(0, 5))
        masked = np.where(np.abs(cols - c[:, None]) > h, -np.inf, win)
        np.testing.assert_array_equal(_argmax_near(win, c, h), np.argmax(masked, axis=1))


def test_tmax_bound_at_zero_unless_signed_values_are_asked_for():
    """Tissue arriving 2 s before the AIF: reported at 0 s by default; ``bound_tmax = False`` keeps the negative
    reading (the engine filters Tmax spatially before it bounds it)."""
    c = tissue_curve(T, 50.0, 4.0, -2.0)[None]
    for method in ("bcsvd", "standard"):
        cfg = DeconvolutionConfig(method=method)
        bounded = deconvolve(c, AIF, 1.0, cfg)
        signed = deconvolve(c, AIF, 1.0, cfg, bound_tmax=False)
        assert bounded.tmax_s[0] == 0.0 and bounded.tmax_standard_s[0] == 0.0
        assert signed.tmax_s[0] < -0.3 and signed.tmax_standard_s[0] < -0.3  # standard: -2 s + its lag
        assert signed.rmax_per_s[0] == bounded.rmax_per_s[0]
    assert signed.tmax_s[0] == signed.tmax_standard_s[0]  # method "standard": one reading
    assert deconvolve(c, AIF, 1.0, DeconvolutionConfig(), bound_tmax=False).tmax_s[0] == pytest.approx(-2.0, abs=0.1)


def _noisy_aifs(fraction: float, n: int = 8) -> list[np.ndarray]:
    """The test AIF with white noise of ``fraction`` of its peak on every sample (seeds 0..n-1)."""
    return [(AIF + fraction * AIF.max() * np.random.default_rng(s).standard_normal(len(T))).astype(np.float32)
            for s in range(n)]


def test_aif_noise_floor_and_lowest_regularisation():
    """The AIF's noise floor (pre-bolus SD x sqrt(T) / sum) is 0 for a clean AIF, grows with the noise, and is NaN
    without three pre-bolus samples; the bcSVD ladder leaves out the levels below aif_noise_margin x the floor (the
    highest level always kept), the standard convention keeps them all."""
    from ctperf.engine.deconvolution import aif_noise_floor, lowest_regularisation, truncation_ladder

    assert aif_noise_floor(AIF) == (0.0, 0.0)
    floors = {f: np.median([aif_noise_floor(a)[1] for a in _noisy_aifs(f)]) for f in (0.01, 0.03)}
    assert 0.005 < floors[0.01] < 0.02 < floors[0.03] < 0.06, floors
    assert np.isnan(aif_noise_floor(np.roll(AIF, -6))[1])  # bolus from the second sample: no baseline
    cfg = DeconvolutionConfig()
    full = sorted(cfg.oi_thresholds)
    assert lowest_regularisation(cfg) == 0.02 and truncation_ladder(cfg) == full  # floor unknown: all levels
    assert truncation_ladder(cfg, 0.009) == full  # 2 x 0.009 < 0.02: a clinical AIF at 15 HU keeps every level
    assert truncation_ladder(cfg, 0.03) == [p for p in full if p >= 0.06]
    assert lowest_regularisation(cfg, 0.03) == 0.07
    assert truncation_ladder(cfg, 1.0) == full[-1:]  # the highest level is always kept
    assert truncation_ladder(DeconvolutionConfig(aif_noise_margin=0.0), 0.03) == full
    assert lowest_regularisation(DeconvolutionConfig(method="standard"), 0.03) == 0.02
    assert lowest_regularisation(DeconvolutionConfig(method="tikhonov")) == DeconvolutionConfig().tikhonov_lambda


def test_aif_inverse_gain_under_noise():
    """The reason for the margin: with complex Gaussian noise N (E|N|^2 = s^2) on the AIF's spectrum S, the mean of
    S / (S + N), what the inverse filter passes of a tissue that saw the noise-free AIF, is 1 - exp(-|S|^2 / s^2):
    63 % at S/N = 1, 98 % at S/N = 2 (truncation_ladder's docstring)."""
    rng = np.random.default_rng(0)
    noise = (rng.standard_normal(400_000) + 1j * rng.standard_normal(400_000)) / np.sqrt(2.0)
    for snr in (1.0, 2.0):
        assert np.mean(snr / (snr + noise)).real == pytest.approx(1.0 - np.exp(-snr**2), abs=0.01)


def _noisy_aif_errors(fraction: float, cfg: DeconvolutionConfig) -> tuple[float, float]:
    """Mean Tmax error (s) and relative CBF error of noise-free tissue (delay 0) deconvolved with AIFs carrying white
    noise of ``fraction`` of their peak (8 seeds, 60 s at 1 s)."""
    c = np.stack([tissue_curve(T, f, m, 0.0) for f, m in ((60, 4), (25, 5), (40, 6))]).astype(np.float32)
    tmax, cbf = [], []
    for a in _noisy_aifs(fraction):
        out = deconvolve(c, a, 1.0, cfg, shape_groups=np.zeros(3, int))
        tmax.append(out.tmax_s.mean())
        cbf.append((cbf_from_rmax(out.rmax_per_s) / np.array([60.0, 25.0, 40.0]) - 1).mean())
    return float(np.mean(tmax)), float(np.mean(cbf))


def test_noisy_aif_does_not_bias_tmax_or_cbf():
    """AIF noise 2 / 3 % of its peak (floor ~0.023 / 0.035): measured (engine 2.7) Tmax +0.10 / +0.21 s, CBF -0.7 /
    -2.5 %; without the margin (engine 2.6) +0.57 / +1.06 s and -10 / -18 %."""
    for fraction in (0.02, 0.03):
        tmax, cbf = _noisy_aif_errors(fraction, DeconvolutionConfig())
        assert abs(tmax) <= 0.3 and abs(cbf) <= 0.05, (fraction, tmax, cbf)
    tmax, cbf = _noisy_aif_errors(0.03, DeconvolutionConfig(aif_noise_margin=0.0))
    assert tmax > 0.8 and cbf < -0.15, (tmax, cbf)  # the bias the margin removes


@pytest.mark.xfail(strict=True, reason=(
    "measured 2026-12-04 (engine 2.7): AIF noise 5 % of its peak (floor ~0.058, ladder from 0.15): Tmax +0.63 s, "
    "CBF -14.9 % (without the margin +1.32 s, -24.7 %); what is left is not measured"))
def test_very_noisy_aif_does_not_bias_tmax_or_cbf():
    tmax, cbf = _noisy_aif_errors(0.05, DeconvolutionConfig())
    assert abs(tmax) <= 0.3 and abs(cbf) <= 0.10, (tmax, cbf)


@pytest.mark.xfail(strict=True, reason=(
    "measured 2026-12-04 (engine 2.4): noise-free exponential residues with 1 s dispersion and MTT 12-20 s (severely "
    "hypoperfused tissue), delays 8.0-8.75 s: Tmax error mean -0.94 s, worst -2.25 s (the true model alone: -0.19 s). "
    "A slowly decaying residue is only shifted by the dispersion, so the evidence cannot tell the dispersions apart and "
    "picks an undispersed model at some sub-sample delays; the realistic phantom's core then reads 2 s early without "
    "noise (HIR 0 vs 0.24). The study dispersion prior reads it right (README, Known gaps)"))
def test_long_transit_dispersed_tissue_tmax_without_noise():
    errors = []
    for mtt in (12.0, 16.0, 20.0):
        t = np.linspace(0.0, 60.0, 60001)
        h = (np.exp(-t / mtt) - np.exp(-t)) * mtt / (mtt - 1.0)  # exponential residue (x) 1 s dispersion kernel
        for delay in (8.0, 8.25, 8.5, 8.75):
            c = tissue_curve(T90, 20.0, mtt, delay, 1.0)[None].astype(np.float32)
            out = deconvolve(c, AIF90, 1.0, DeconvolutionConfig(), shape_groups=np.zeros(1, int))
            errors.append(float(out.tmax_s[0]) - delay - t[np.argmax(h)])
    errors = np.array(errors)
    assert np.abs(errors).mean() <= 0.5 and np.abs(errors).max() <= 1.0, errors.round(2)


def test_dispersion_spread_is_the_spread_between_dispersions():
    """How far Tmax would move between the dispersions the weights leave open: 0 with one dispersion (whatever the
    shapes), half the difference for an even split, shapes within a dispersion averaged first."""
    from ctperf.engine import dispersion_ambiguity
    from ctperf.engine.deconvolution import dispersion_spread

    family = [(1.0, 0.0), (2.0, 0.0), (1.0, 1.0), (2.0, 1.0)]  # (shape, dispersion s)
    values = np.array([[1.0, 3.0, 2.0, 2.0],    # one dispersion holds all the weight: no spread
                       [1.0, 1.0, 3.0, 3.0],    # even split, 2 s apart: SD 1 s
                       [0.0, 2.0, 3.0, 3.0]])   # the 0 s shapes average to 1 s first
    weights = np.array([[0.5, 0.0, 0.25], [0.5, 0.5, 0.25], [0.0, 0.5, 0.5], [0.0, 0.0, 0.0]])
    np.testing.assert_allclose(dispersion_spread(values, weights, family), [0.0, 1.0, 1.0], atol=1e-12)
    weights[:, 2] = [0.375, 0.375, 0.25, 0.0]  # 3 : 1 between 1 s and 3 s: SD sqrt(3 / 16) x 2
    np.testing.assert_allclose(dispersion_spread(values, weights, family)[2], np.sqrt(0.75 * 0.25) * 2.0)
    # the study's QA value: the median over tissue; none without the guided correction
    tissue = np.array([1, 1, 1, 0], bool)
    assert dispersion_ambiguity(np.array([0.1, 0.5, 0.6, 9.0], np.float32), tissue) == (0.5, True, None)
    value, flag, why = dispersion_ambiguity(None, tissue)
    assert value is None and flag is False and "guided correction" in why
    # the CBF spread: log units as percent, its own limit and reason
    log_sd = np.array([0.05, 0.12, 0.2, 9.0], np.float32)
    assert dispersion_ambiguity(log_sd, tissue, limit=10.0, scale=100.0) == (12.0, True, None)
    assert dispersion_ambiguity(log_sd, tissue, limit=15.0, scale=100.0) == (12.0, False, None)
    value, flag, why = dispersion_ambiguity(None, tissue, limit=10.0, scale=100.0, what="height correction")
    assert value is None and flag is False and "height correction" in why
    assert dispersion_ambiguity(log_sd, np.zeros(4, bool))[2] == "no tissue voxels"
