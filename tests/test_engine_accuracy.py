"""Engine accuracy against the project phantom (ctperf.synthetic) at 8 HU (targets) and 15 HU (recorded).

Truth conventions (see ctperf.synthetic.physics): the phantom's tissue inflow is dispersed (1 s exponential by
default), so the true residue is ``R_eff = h (x) exp(-t/MTT)``; its peak time is the truth Tmax.  The engine's CBF
estimates the peak of the unregularised residue (docs/definitions.md §2), ``truth.cbf_apparent`` = CBF * max(R_eff)
(the nominal flow is not identifiable under dispersion); CBV (an area ratio) is compared with ``truth.cbv``.  A
dispersion-free phantom checks the other end of the range.
"""

from __future__ import annotations

import numpy as np
import pytest

from ctperf.config import Config
from ctperf.core.types import CTPStudy
from ctperf.engine import compute_perfusion
from ctperf.synthetic import phantom as synthetic

_CACHE: dict = {}


def _run(noise_hu: float, delay_s: float, seed: int = 0):
    key = (noise_hu, delay_s, seed)
    if key not in _CACHE:
        ph = synthetic.make_phantom(synthetic.PhantomSpec(matrix=160, n_slices=8, pixel_mm=1.4, noise_hu=noise_hu,
                                                          lesion="left", tissue_delay_s=delay_s, seed=seed))
        res = compute_perfusion(CTPStudy(hu=ph.hu, times_s=ph.times_s, affine_ras=ph.affine_ras), Config())
        _CACHE[key] = (ph, res, _metrics(ph, res))
    return _CACHE[key]


def _metrics(ph, res) -> dict:
    tr = ph.truth
    have = res.masks.brain & np.isfinite(res.tmax)
    normal = tr.tissue & ~tr.lesion_any & have
    lesion = tr.tissue & tr.lesion_any & have
    m = {
        "tmax_mae_normal_s": float(np.mean(np.abs(res.tmax - tr.tmax)[normal])),
        "tmax_mae_lesion_s": float(np.mean(np.abs(res.tmax - tr.tmax)[lesion])),
        "normal_tmax_gt6_fraction": float(np.mean(res.tmax[normal] > 6.0)),
        "brain_coverage": float(np.mean(have[tr.tissue])),
    }
    for name, lab in (("gm", 4), ("wm", 5)):
        sel = normal & (tr.labels == lab)
        m[f"{name}_cbf_median"] = float(np.nanmedian(res.cbf[sel]))
        m[f"{name}_cbf_err_vs_apparent"] = m[f"{name}_cbf_median"] / float(np.median(tr.cbf_apparent[sel])) - 1
        m[f"{name}_cbf_err_vs_nominal"] = m[f"{name}_cbf_median"] / float(np.median(tr.cbf[sel])) - 1
        m[f"{name}_cbv_err"] = float(np.nanmedian(res.cbv[sel])) / float(np.median(tr.cbv[sel])) - 1
    core = tr.tissue & tr.core & have
    if core.any():
        m["core_median_rcbf"] = float(np.nanmedian(res.rcbf[core]))
    return m


@pytest.fixture(scope="module")
def base():
    return _run(8.0, 0.0)


def test_geometry_and_outputs(base):
    ph, res, _ = base
    np.testing.assert_allclose(res.affine_ras, ph.affine_ras, atol=1e-6)  # 1.4 mm pixels: native grid
    assert res.cbf.shape == ph.truth.cbf.shape
    for k in ("preprocess", "denoise", "aif", "deconvolution", "maps"):
        assert k in res.stage_seconds
    assert not any(res.qa_flags.values()), res.qa_flags
    assert res.qa_values["n_baseline_frames"] >= 3
    assert res.affected_side == "left"


def _r(est: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> float:
    ok = mask & np.isfinite(est)
    return float(np.corrcoef(est[ok], truth[ok])[0, 1])


def test_map_quality_at_8hu(base):
    """docs/engine-notes.md "Map regularisation": voxelwise r with the truth over the tissue; CBV is regularised by
    default (its r is 0.50 without the filter) and so is Tmax since engine 2.3 (docs/engine-notes.md "Tmax
    regularisation": r 0.897 -> 0.915); MTT r 0.55 (engine 2.6, jointly filtered CBF and CBV; 0.48 in 2.5, the ratio
    of the CBV and CBF local means; 0.25 before)."""
    ph, res, _ = base
    tis = ph.truth.tissue & res.masks.tissue
    assert _r(res.cbv, ph.truth.cbv, tis) >= 0.70
    assert _r(res.tmax, ph.truth.tmax, tis) >= 0.91
    assert _r(res.mtt, ph.truth.mtt, tis) >= 0.45  # 0.55 (2.6; 0.48 in 2.5: ratio of the local means; 0.25 before)


def test_cbf_and_mtt_map_quality_targets_at_8hu(base):
    """Issue-14 targets, met since engine 2.6's log-domain CBF filter: r CBF 0.78, MTT 0.55 (0.61 / 0.48 before)."""
    ph, res, _ = base
    tis = ph.truth.tissue & res.masks.tissue
    assert _r(res.cbf, ph.truth.cbf_apparent, tis) >= 0.70
    assert _r(res.mtt, ph.truth.mtt, tis) >= 0.50


def test_aif_vof_voxels_are_artery_and_sinus(base):
    ph, res, _ = base
    lab = ph.truth.labels
    aif_labels = [lab[tuple(v)] for v in res.aif.voxels_zyx]
    assert np.mean(np.isin(aif_labels, [7])) >= 0.8
    assert np.mean(lab[tuple(res.vof.voxels_zyx.T)] == 8) >= 0.8  # venous sinus
    # the AIF comes from the unaffected (right, side -1) hemisphere
    assert np.all(ph.truth.side[tuple(res.aif.voxels_zyx.T)] <= 0)


def test_tmax_accuracy_8hu(base):
    _, _, m = base
    print("8 HU metrics:", {k: round(v, 3) for k, v in m.items()})
    assert m["brain_coverage"] > 0.97
    # README: 0.50 / 0.89 s (engine 2.11; 2.3-2.10, the Tmax filter on neighbours' noise: 0.58 / 1.02 s; engine 2.2
    # without the Tmax regularisation: 0.76 / 1.13 s)
    assert m["tmax_mae_normal_s"] <= 0.6
    assert m["tmax_mae_lesion_s"] <= 1.0
    assert m["normal_tmax_gt6_fraction"] < 0.02  # no argmax-of-noise Tmax in normal tissue


def test_cbf_cbv_accuracy_8hu(base):
    _, _, m = base
    assert abs(m["gm_cbv_err"]) <= 0.10
    assert abs(m["wm_cbv_err"]) <= 0.10
    assert m["gm_cbf_median"] > 1.8 * m["wm_cbf_median"]  # GM/WM contrast kept (2.62 against the truth's 2.79)
    assert m["core_median_rcbf"] < 0.25  # low flows in the core are not lifted (truth about 0.19)


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=(
    "measured (engine 2.9, 8 HU): median CBF grey matter -14.0 %, white matter -8.2 % of the truth (the peak of "
    "h (x) R; engine 2.8: -21.6 / -14.4 %; engine 2.6: -15.9 / -10.2 %, whose mixture of dispersions over-corrected "
    "the height of this 1 s-dispersed tissue); the log-domain CBF filter averages geometrically, which reads lower "
    "than the per-voxel "
    "values' level by about half their squared relative noise (-5 % / +7 % unfiltered before 2.6); ratios (rCBF, "
    "GM/WM) unaffected"))
def test_cbf_level_8hu(base):
    _, _, m = base
    assert abs(m["gm_cbf_err_vs_apparent"]) <= 0.10
    assert abs(m["wm_cbf_err_vs_apparent"]) <= 0.10


def test_cbf_is_delay_insensitive(base):
    """Grey matter +2.7 %, white matter +0.3 % for a 4 s tissue delay (engine 2.9; 2.6: +4.8 % / +1.8 %; +5.1 % /
    +1.7 % before its log-domain CBF filter)."""
    _assert_cbf_unchanged_by_a_4s_delay(seed=0)  # the undelayed study is ``base``'s
    _, _, m4 = _run(8.0, 4.0)
    assert m4["tmax_mae_normal_s"] <= 1.2  # Tmax follows the extra delay


def _assert_cbf_unchanged_by_a_4s_delay(seed: int) -> None:
    """Grey- and white-matter median CBF of the study with a 4 s tissue delay within 5 % of the undelayed one's
    (noise realisation ``seed``), over the normal tissue both studies hold."""
    _, res0, _ = _run(8.0, 0.0, seed)
    ph4, res4, _ = _run(8.0, 4.0, seed)
    tr = ph4.truth
    normal = tr.tissue & ~tr.lesion_any & res0.masks.brain & res4.masks.brain
    for lab in (4, 5):
        sel = normal & (tr.labels == lab)
        c0, c4 = np.nanmedian(res0.cbf[sel]), np.nanmedian(res4.cbf[sel])
        assert abs(c4 / c0 - 1) < 0.05, (lab, c0, c4)


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=(
    "measured (engine 2.10, 8 HU, noise seed 3): grey matter -22.1 %, white matter -17.5 % for the 4 s delay. Each "
    "study sets its own dispersion prior: seed 3's undelayed study puts 0.48 on 0 s (flagged "
    "tmax_dispersion_ambiguous), its delayed one 0.00, and the height correction follows. Seeds 0-7: grey matter "
    "-22.1 ... +2.7 %, median -3.0 %, 3 of 8 at or beyond 5 % (harness family delay_seeds, 6 s: median -2.1 %, "
    "range -20.6 ... +2.1 %)"))
def test_cbf_is_delay_insensitive_on_another_noise_realisation():
    _assert_cbf_unchanged_by_a_4s_delay(seed=3)


def test_ambiguous_dispersion_flags_cbf():
    """How far the study's dispersion leaves CBF open (qa_values.cbf_dispersion_sd_pct): seed 3's undelayed study,
    whose prior splits 0.48 / 0.52 between 0 s and 1 s (the strict xfail above: the same study delayed 4 s reads
    its grey matter 22 % lower), is flagged (measured 14.3 %); seed 0's, prior 0.99 on 1 s, is not (4.2 %; seeds
    0-7 otherwise 0.9-9.3 %, harness family delay_seeds)."""
    _, res3, _ = _run(8.0, 0.0, seed=3)
    _, res0, _ = _run(8.0, 0.0)
    assert res3.qa_flags["cbf_dispersion_ambiguous"] is True
    assert res3.qa_values["cbf_dispersion_sd_pct"] > 12.0
    assert res0.qa_flags["cbf_dispersion_ambiguous"] is False
    assert 0.0 < res0.qa_values["cbf_dispersion_sd_pct"] < 6.0


def test_records_15hu_behaviour(record_property):
    _, res, m = _run(15.0, 0.0)
    print("15 HU metrics:", {k: round(v, 3) for k, v in m.items()})
    for k, v in m.items():
        record_property(k, round(v, 4))
    assert m["tmax_mae_normal_s"] <= 1.6
    assert m["tmax_mae_lesion_s"] <= 2.5
    assert m["normal_tmax_gt6_fraction"] < 0.05
    assert abs(m["gm_cbv_err"]) <= 0.2 and abs(m["wm_cbv_err"]) <= 0.2
    assert res.affected_side == "left"


def _run_spec(cfg: Config | None = None, **kw):
    ph = synthetic.make_phantom(synthetic.PhantomSpec(matrix=160, n_slices=8, pixel_mm=1.4, noise_hu=8.0,
                                                      seed=0, **kw))
    res = compute_perfusion(CTPStudy(hu=ph.hu, times_s=ph.times_s, affine_ras=ph.affine_ras), cfg or Config())
    return ph, res, _metrics(ph, res)


def test_variable_sampling_and_slice_stagger_end_to_end():
    # 1 s sampling then 3 s, and a 1 s acquisition stagger across the slab
    frames = list(np.arange(20) * 1.0) + list(19.0 + 3.0 * np.arange(1, 14))
    _, res, m = _run_spec(slice_stagger_s=1.0, frame_times_s=frames)
    print("stagger/variable sampling metrics:", {k: round(v, 3) for k, v in m.items()})
    assert m["tmax_mae_normal_s"] <= 1.0 and m["tmax_mae_lesion_s"] <= 1.6
    assert abs(m["gm_cbv_err"]) <= 0.10 and abs(m["wm_cbv_err"]) <= 0.10
    assert res.affected_side == "left"


def test_short_acquisition_keeps_normal_tissue_tmax():
    """8 HU, 1 s dispersion, 30 frames of 1.5 s (tissue followed 2.5 bolus widths past its peak): the study prior
    fitted on the time grid puts 1.00 on no dispersion (normal tissue -0.88 s, harness lesion_short45: Tmax > 6 s
    -29.4 %); since engine 2.12 it is fitted at the acquired frames there (+0.14 s, measured 2026-12-06), and the
    study is flagged: below the limit the frames read the dispersion with a scatter (docs/definitions.md §2)."""
    ph, res, _ = _run_spec(frame_times_s=list(np.arange(0.0, 45.0, 1.5)))
    tr = ph.truth
    normal = tr.tissue & ~tr.lesion_any & res.masks.brain & np.isfinite(res.tmax)
    bias = float(np.median((res.tmax - tr.tmax)[normal]))
    assert res.qa_values["study_dispersion_blocks"]["fit"] == "frames"
    assert res.qa_flags["tmax_dispersion_ambiguous"]
    assert abs(bias) <= 0.4, bias


def test_head_motion_is_flagged_and_tolerated():
    _, res, m = _run_spec(motion_mm=2.0)  # random 3D jitter every frame (harsh)
    print("motion metrics:", {k: round(v, 3) for k, v in m.items()}, res.qa_values["motion_max_mm"])
    assert res.qa_flags["motion_excessive"]
    assert res.qa_values["n_baseline_frames"] >= 3
    assert m["tmax_mae_normal_s"] <= 1.5
    assert res.affected_side == "left"


@pytest.fixture(scope="module")
def no_dispersion():
    return _run_spec(lesion="left", dispersion_s=0.0)


def test_dispersion_free_phantom_tmax(no_dispersion):
    """No tissue dispersion (the textbook model, truth Tmax = arrival delay)."""
    _, _, m = no_dispersion
    assert m["tmax_mae_normal_s"] <= 1.5 and m["normal_tmax_gt6_fraction"] < 0.02


@pytest.mark.xfail(strict=True, reason=(
    "measured (engine 2.9), 8 HU: grey/white-matter CBF -16.9% / -12.3% of the flow (3 HU: -3.4% / +0.5%; engine "
    "2.8: -34.8% / -28.5%, 3 HU grey -14.8%; engine 2.6: -44.0% / -37.6%, 3 HU -28.7% / -23.3%; 2.6 adds the "
    "log-domain CBF filter's level bias): noise hides the sharp onset of an undispersed exponential from each "
    "region; since 2.9 the study mixture (0.98 the undispersed exponential) sets the shape of the height correction, "
    "and what is left at 8 HU is close to the level bias the 1 s-dispersed phantom shows (-14.0% / -8.2%)"))
def test_dispersion_free_phantom_cbf(no_dispersion):
    _, _, m = no_dispersion
    assert abs(m["gm_cbf_err_vs_nominal"]) <= 0.15 and abs(m["wm_cbf_err_vs_nominal"]) <= 0.15


def _run_3hu(dispersion_s: float, cfg: Config):
    ph = synthetic.make_phantom(synthetic.PhantomSpec(matrix=160, n_slices=8, pixel_mm=1.4, noise_hu=3.0, seed=0,
                                                      lesion="left", dispersion_s=dispersion_s))
    res = compute_perfusion(CTPStudy(hu=ph.hu, times_s=ph.times_s, affine_ras=ph.affine_ras), cfg)
    return _metrics(ph, res)


def test_curve_evidence_option_on_undispersed_tissue():
    """``model_evidence = "curves"`` (docs/engine-notes.md "Model evidence"): on the dispersion-free phantom at 3 HU
    the grey-matter CBF reads within 15 % of the flow (the default: -3.4 % in engine 2.9, -14.8 % in 2.8, -28.7 % in
    2.6) and Tmax within 0.6 s; with 1 s of dispersion it stays within 15 % of the estimand (grey +8 %, white +13 %
    measured)."""
    cfg = Config()
    cfg.deconvolution.model_evidence = "curves"
    m0 = _run_3hu(0.0, cfg)
    assert abs(m0["gm_cbf_err_vs_nominal"]) <= 0.15, m0
    assert m0["tmax_mae_normal_s"] <= 0.6, m0
    m1 = _run_3hu(1.0, cfg)
    assert abs(m1["gm_cbf_err_vs_apparent"]) <= 0.15 and abs(m1["wm_cbf_err_vs_apparent"]) <= 0.15, m1
