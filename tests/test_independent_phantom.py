"""Engine accuracy against an INDEPENDENT digital phantom (tests/independent_phantom.py; numpy/scipy only).

QIBA / Kudo-2013 style: 10 x 10 mm blocks with CBF in {10..70} mL/100g/min x MTT in {3..10} s, mirrored on both
hemispheres, residue exp(-t/MTT) (also plug flow "box" and gamma transit times), 1 s sampling over 60 s, 1 mm
pixels (native computation grid).  Per block: median over the interior (eroded by 2 voxels) of the engine maps.

Which blocks are scored (physics, not engine tuning):
* ``measurable``: noise-free peak enhancement >= the voxel noise SD (per-voxel CNR >= 1); below that the bolus is
  not visible in a voxel (CBF 10 blocks peak at 2.3-4.7 HU);
* ``evaluable``: truth CBV <= 7 mL/100g; the engine (by design, ``vessel_cbv_ml_100g`` = 8) treats CBV > 8 as large
  vessels, so blocks at or above ~8 are partly masked and their remaining voxels are a biased sample
  (checked separately in ``test_supraphysiological_cbv_blocks_are_vessel_masked``).

Truth Tmax = arrival delay (every residue here peaks at t = 0).  The phantom carries 7 small cortical veins per
side (vessels 1.6% of the brain); ``test_baseline_detection_without_extra_vessels`` runs the bare layout.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

import independent_phantom as ip
from ctperf.config import Config
from ctperf.core.types import CTPStudy
from ctperf.engine import compute_perfusion

SCENARIOS = {
    "exp3": dict(residue="exponential", noise_hu=3.0, cortical_veins=True),
    "exp8": dict(residue="exponential", noise_hu=8.0, cortical_veins=True),
    "box3": dict(residue="box", noise_hu=3.0, cortical_veins=True),
    "gamma3": dict(residue="gamma", noise_hu=3.0, cortical_veins=True),
    "exp3_delay4": dict(residue="exponential", noise_hu=3.0, cortical_veins=True, left_delay_s=4.0),
    "bare8": dict(residue="exponential", noise_hu=8.0, cortical_veins=False),
}
_CACHE: dict = {}


def _run(name: str):
    if name not in _CACHE:
        spec = ip.PhantomSpec(**SCENARIOS[name])
        ph = ip.make_phantom(spec)
        res = compute_perfusion(CTPStudy(hu=ph.hu, times_s=ph.times_s, affine_ras=ph.affine), Config())
        _CACHE[name] = (ph, res, _blocks(ph, res, spec))
    return _CACHE[name]


def _peak_hu(spec: ip.PhantomSpec, cbf: float, mtt: float) -> float:
    t = np.arange(0.0, spec.duration_s + 20.0, ip.FINE_DT)
    c = ip.tissue_curve(ip.arterial_input(t), t, cbf, mtt, 0.0, spec.residue, spec.gamma_shape)
    return float(np.interp(np.arange(0.0, spec.duration_s + 1e-6, spec.dt_s), t, c).max())


def _blocks(ph, res, spec) -> dict[str, np.ndarray]:
    """One row per (hemisphere, block): truth, interior medians, tissue fraction, errors, selections."""
    tr, rows = ph.truth, []
    for side in (1, -1):
        for b, cbf, mtt in ip.block_table():
            interior = ndimage.binary_erosion((tr["block"] == b) & (tr["side"] == side), np.ones((1, 5, 5), bool))
            m = interior & res.masks.tissue
            med = [float(np.nanmedian(a[m])) if m.any() else np.nan for a in (res.cbf, res.cbv, res.mtt, res.tmax)]
            rows.append([side, cbf, mtt, cbf * mtt / 60.0, float(np.nanmedian(tr["tmax"][interior])),
                         _peak_hu(spec, cbf, mtt), m.sum() / interior.sum(), *med])
    a = np.array(rows)
    keys = ("side", "cbf_t", "mtt_t", "cbv_t", "tmax_t", "peak_hu", "tissue_frac", "cbf", "cbv", "mtt", "tmax")
    d = {k: a[:, i] for i, k in enumerate(keys)}
    for k in ("cbf", "cbv", "mtt"):
        d[f"{k}_err"] = d[k] / d[f"{k}_t"] - 1.0
    d["tmax_err"] = d["tmax"] - d["tmax_t"]
    d["measurable"] = d["peak_hu"] >= spec.noise_hu
    d["evaluable"] = d["cbv_t"] <= 7.0 + 1e-9
    d["scored"] = d["measurable"] & d["evaluable"]
    return d


def _table(name: str) -> str:
    _, res, d = _run(name)
    lines = [f"--- {name} {SCENARIOS[name]}  qa_flags={[k for k, v in res.qa_flags.items() if v]} "
             f"n_baseline={res.qa_values['n_baseline_frames']}",
             "side CBF MTT peakHU tiss | CBF   err  | CBV   err  | MTT   err  | Tmax  err  (* = scored)"]
    for i in range(len(d["side"])):
        lines.append(f"{'L' if d['side'][i] > 0 else 'R'} {d['cbf_t'][i]:4.0f} {d['mtt_t'][i]:3.0f} "
                     f"{d['peak_hu'][i]:5.1f} {d['tissue_frac'][i]:4.2f} | {d['cbf'][i]:5.1f} {d['cbf_err'][i]:+5.2f}"
                     f" | {d['cbv'][i]:5.2f} {d['cbv_err'][i]:+5.2f} | {d['mtt'][i]:5.2f} {d['mtt_err'][i]:+5.2f}"
                     f" | {d['tmax'][i]:5.2f} {d['tmax_err'][i]:+5.2f} {'*' if d['scored'][i] else ''}")
    s = d["scored"]
    lines.append(f"scored n={s.sum()}: CBF err median {np.median(d['cbf_err'][s]):+.3f} max|.| "
                 f"{np.abs(d['cbf_err'][s]).max():.3f}; CBV {np.median(d['cbv_err'][s]):+.3f} / "
                 f"{np.abs(d['cbv_err'][s]).max():.3f}; MTT {np.median(d['mtt_err'][s]):+.3f} / "
                 f"{np.abs(d['mtt_err'][s]).max():.3f}; Tmax err mean {d['tmax_err'][s].mean():+.2f} "
                 f"max|.| {np.abs(d['tmax_err'][s]).max():.2f} s")
    return "\n".join(lines)


def _assert_blocks(d, key: str, median_limit: float, block_limit: float) -> None:
    """Median relative error over the scored blocks within ``median_limit``, every block within ``block_limit``."""
    s = d["scored"]
    assert abs(np.median(d[key][s])) <= median_limit, np.median(d[key][s])
    assert np.all(np.abs(d[key][s]) <= block_limit), _worst(d, key, s)


def _worst(d, key, sel) -> str:
    i = np.flatnonzero(sel)[np.argmax(np.abs(d[key][sel]))]
    side = "L" if d["side"][i] > 0 else "R"
    return f"{key}={d[key][i]:+.3f} at {side} CBF {d['cbf_t'][i]:.0f} MTT {d['mtt_t'][i]:.0f}"


@pytest.fixture(scope="module")
def exp3():
    return _run("exp3")


@pytest.fixture(scope="module")
def exp8():
    return _run("exp8")


def test_block_table_covers_every_block():
    """The per-block table (``_table``, printed by ``benchmarks``-style runs with -s) lists all 2 x 35 blocks."""
    _, _, d = _run("exp3")
    assert len(d["side"]) == 2 * len(ip.CBF_LEVELS) * len(ip.MTT_LEVELS)
    assert _table("exp3").count("\n") == len(d["side"]) + 2


# ---------------------------------------------------------------------------------------------------------------
# set-up: grid, AIF/VOF, midline
# ---------------------------------------------------------------------------------------------------------------

def test_grid_aif_vof_and_qa(exp3):
    ph, res, _ = exp3
    np.testing.assert_allclose(res.affine_ras, ph.affine, atol=1e-6)  # 1.0 mm pixels: native grid
    assert res.cbf.shape == ph.truth["cbf"].shape
    assert np.mean(ph.truth["artery"][tuple(res.aif.voxels_zyx.T)]) >= 0.8
    assert np.mean(ph.truth["vein"][tuple(res.vof.voxels_zyx.T)]) >= 0.8
    assert 0.9 <= res.qa_values["vof_aif_area_ratio"] <= 1.1  # same area by construction
    assert res.qa_values["n_baseline_frames"] >= 3
    assert not any(res.qa_flags.values()), res.qa_flags
    assert np.mean(res.masks.brain[ph.truth["side"] != 0]) > 0.99


def test_midline_of_symmetric_phantom(exp3):
    """The phantom is exactly mirror-symmetric about world x = 0 (and identical in every slice).  Before the fit
    charged points mirrored out of the slab, it tilted the plane 20 deg (95.7 % agreement) on this thin slab."""
    ph, res, _ = exp3
    tissue = ph.truth["tissue"]
    agree = float(np.mean(res.hemispheres.side[tissue] == ph.truth["side"][tissue]))
    assert agree >= 0.99
    assert abs(res.hemispheres.normal_ras[2]) < 0.05  # no pitch


# ---------------------------------------------------------------------------------------------------------------
# exponential residue, no delay: CBV, CBF, ordering, MTT, Tmax at 3 and 8 HU
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["exp3", "exp8"])  # exp8 worst block 16.1 % before the CBV regularisation (2.1)
def test_cbv_exponential(name):
    _assert_blocks(_run(name)[2], "cbv_err", median_limit=0.05, block_limit=0.15)


#: Issue 14 target at standard-dose noise: median CBF within 15 % of the truth for every residue shape.  Engine 2.9
#: (the study mixture's proportions for the height): exp3 / exp8 / box3 / gamma3 +1.0 / -2.2 / +3.0 / +5.9 %
#: (engine 2.8: -2.3 / -9.4 / +15.6 / +17.7 %).
@pytest.mark.parametrize("name", ["exp3", "exp3_delay4", "exp8", "box3", "gamma3"])
def test_cbf_median_every_residue_shape(name):
    d = _run(name)[2]
    assert abs(np.median(d["cbf_err"][d["scored"]])) <= 0.15, np.median(d["cbf_err"][d["scored"]])


#: Engine 2.9: worst block gamma3 / exp3 / exp8 +15.5 / -17.8 / -18.0 % (engine 2.8: -23 / -32 / -39 %).
@pytest.mark.parametrize("name", ["gamma3", "exp3", "exp8", pytest.param("box3", marks=pytest.mark.xfail(
    strict=True, reason="measured (engine 2.9): box residue, worst block CBF +32.5% at R CBF 40, MTT 4 s; median "
                        "+3.0% (engine 2.8: worst +84%, median +15.6%)"))])
def test_cbf_every_block_within_20_percent(name):
    _assert_blocks(_run(name)[2], "cbf_err", median_limit=0.15, block_limit=0.20)


@pytest.mark.parametrize("name", ["exp3", "exp8", pytest.param("box3", marks=pytest.mark.xfail(strict=True, reason=(
    "measured (engine 2.9): box residue, L MTT 3 column: CBF 30 -> 34.3, CBF 40 -> 33.6; R MTT 4 column: CBF 50 -> "
    "65.3, CBF 60 -> 60.6 (engine 2.8: L MTT 3, 43.4 and 42.6; engine 2.0: R MTT 4, 88 and 79; plug-flow blocks among "
    "exponential-looking neighbours get part of the exponential's correction)"))), "gamma3"])
def test_cbf_ordering(name):
    """Measured CBF increases with true CBF in every MTT column of both hemispheres (all evaluable blocks, even the
    unmeasurable CBF-10 ones), and ranks the whole grid."""
    _, _, d = _run(name)
    for side in (1, -1):
        for mtt in ip.MTT_LEVELS:
            sel = d["evaluable"] & (d["side"] == side) & (d["mtt_t"] == mtt)
            order = np.argsort(d["cbf_t"][sel])
            assert np.all(np.diff(d["cbf"][sel][order]) > 0), (side, mtt, d["cbf"][sel][order])
    rho = _spearman(d["cbf"][d["evaluable"]], d["cbf_t"][d["evaluable"]])
    assert rho >= 0.9, rho


def _spearman(a, b) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


#: exp3, engine 2.9: worst block MTT +19.1% at R CBF 20 / MTT 3 s, median -2.6% (engine 2.8: +51.2%, +0.4%).
@pytest.mark.parametrize("name", ["exp3", pytest.param("exp8", marks=pytest.mark.xfail(strict=True, reason=(
    "measured (engine 2.9), 8 HU: worst block MTT +31.2% at R CBF 40/MTT 3 (limit 20%); median +1.1% (engine 2.8: "
    "+77.7%, +9.2%; engine 2.6: +102%, +23.3%)")))])
def test_mtt_exponential(name):
    _, _, d = _run(name)
    s = d["scored"]
    assert np.all(np.abs(d["mtt_err"][s]) <= 0.20), _worst(d, "mtt_err", s)


@pytest.mark.parametrize("name", ["exp3", "exp8"])
def test_tmax_exponential(name):
    _, _, d = _run(name)
    s = d["scored"]
    assert d["tmax_err"][s].mean() <= 1.0 and np.abs(d["tmax_err"][s]).mean() <= 1.0
    assert np.all(np.abs(d["tmax_err"][s]) <= 1.5), _worst(d, "tmax_err", s)


def test_supraphysiological_cbv_blocks_are_vessel_masked(exp3):
    """Engine design (vessel_cbv_ml_100g = 8): blocks with truth CBV >= 9 are removed from tissue, CBV <= 7 kept."""
    _, _, d = exp3
    assert np.all(d["tissue_frac"][d["cbv_t"] >= 9.0] <= 0.1)
    assert np.all(d["tissue_frac"][d["cbv_t"] <= 7.0] >= 0.95)


# ---------------------------------------------------------------------------------------------------------------
# arrival delay: +4 s on every tissue voxel of the patient's left hemisphere
# ---------------------------------------------------------------------------------------------------------------

def test_delay_insensitivity(exp3):
    """Engine 2.9: median CBF change +2.1% for a 4 s delay, 96% of the blocks within 10%, Tmax worst 0.23 s, the
    undelayed hemisphere's CBF within 4.0% (engine 2.8: +2.5%, 96%, 6.4%; engine 2.6: +4.35%, 71%, 8.3%)."""
    _, _, d0 = exp3
    _, res4, d4 = _run("exp3_delay4")
    s = d0["scored"] & (d0["side"] > 0)
    change = d4["cbf"][s] / d0["cbf"][s] - 1
    assert abs(np.median(change)) <= 0.05
    assert np.mean(np.abs(change) <= 0.10) >= 0.9, np.round(change, 3)
    assert abs(np.median(d4["cbv"][s] / d0["cbv"][s] - 1)) <= 0.05
    assert np.all(np.abs(d4["tmax_err"][s]) <= 1.5), _worst(d4, "tmax_err", s)  # truth Tmax = 4 s
    r = d0["scored"] & (d0["side"] < 0)  # undelayed hemisphere unchanged
    assert np.all(np.abs(d4["tmax"][r] - d0["tmax"][r]) <= 0.5)
    assert np.all(np.abs(d4["cbf"][r] / d0["cbf"][r] - 1) <= 0.05)


# ---------------------------------------------------------------------------------------------------------------
# other residue shapes
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["box3", "gamma3"])
def test_cbv_other_residues(name):
    _assert_blocks(_run(name)[2], "cbv_err", median_limit=0.05, block_limit=0.15)


@pytest.mark.parametrize("name", [
    pytest.param("box3", marks=pytest.mark.xfail(strict=True, reason=(
        "measured (engine 2.11): box residue, Tmax mean +1.06 s, worst +2.88 s at L CBF 40 / MTT 10 (2.10: +1.08 s, "
        "+3.15 s; 2.8: +1.12 s, +3.20 s; engine 2.1: "
        "+1.51 s, 25/58 blocks beyond 1.5 s, worst +4.3 s; a flat residue's argmax is ill-posed on [0, MTT); truth "
        "taken as its start, 0)"))),
    "gamma3"])  # engine 2.11: mean +0.23 s, worst 0.62 s (2.10: +0.24 / 0.72; 2.8: +0.28 / 0.83; 2.1: +0.96 / 1.80 s)
def test_tmax_other_residues(name):
    _, _, d = _run(name)
    s = d["scored"]
    assert np.all(np.abs(d["tmax_err"][s]) <= 1.5), _worst(d, "tmax_err", s)


# ---------------------------------------------------------------------------------------------------------------
# the brief's bare vessel layout (2 arteries + 1 sinus = 0.4% of the brain) at 8 HU
# ---------------------------------------------------------------------------------------------------------------

def test_baseline_detection_without_extra_vessels():
    ph, res, d = _run("bare8")
    # vessels are 0.4 % of the brain here: the bolus arrival must come from them, not from the noisiest tissue
    # curves (before the fix: arrival 1.6 s, one baseline frame, CBV -25 %, CBF -22 %)
    assert res.qa_values["n_baseline_frames"] >= 3
    assert 6.0 <= res.qa_values["bolus_arrival_s"] <= 11.0
    assert not res.qa_flags["too_few_baseline_frames"]
    s = d["scored"]
    assert abs(np.median(d["cbv_err"][s])) <= 0.08
    # CBF as with the veins (exp8: -20 % at 8 HU, the known gap of test_cbf_median_every_residue_shape[exp8])
    e = _run("exp8")[2]
    assert abs(np.median(d["cbf_err"][s]) - np.median(e["cbf_err"][e["scored"]])) <= 0.03
