"""Mode A robustness: the same answer whatever the DICOM layout, sensible behaviour under acquisition variants.

Every test compares runs with each other (invariance) and with the phantom truth only where the physics is
unchanged, with tolerances a user would accept.  Absolute accuracy is tested in test_mode_a_end_to_end.py and
test_engine_accuracy.py; here the engine may still drift, so only invariance and sanity are asserted.

Runs are cached per module (each Mode A run on the small phantom costs a few seconds).
"""

from __future__ import annotations

import numpy as np
import pytest

from ctperf.config import Config
from ctperf.core.grid import resample_to_grid
from ctperf.pipeline import run_dicom_folder
from ctperf.synthetic import PhantomSpec, make_phantom
from ctperf.synthetic.dicom_writer import DicomLayout, tilted_affine_ras, write_ctp_dicom

SPEC = dict(matrix=128, n_slices=6, pixel_mm=1.7, noise_hu=8.0, seed=5)

#: Metrics that must not depend on the file layout.
LAYOUT_KEYS = ("hypoperfusion_ml", "core_ml", "penumbra_ml", "tmax4_ml", "tmax6_ml", "tmax8_ml", "tmax10_ml",
               "HIR", "PVT_sec", "aif_ttp_s", "vof_ttp_s", "CBV_Index_contra_hemisphere", "Corrected_CBV_Index",
               "CBV_Index_mirror")

LAYOUTS = {
    "siemens_plain": DicomLayout(vendor="siemens"),
    "ge_messy": DicomLayout(vendor="ge", nested_folders=True, file_naming="noext_shuffled",
                            series_per_timepoint=True, extra_series=True),
    # acquisition_time keeps AcquisitionDate at the study date: the default start 23:59:50 makes the
    # one-minute scan cross midnight, i.e. the clock jumps backwards after 10 s.
    "j2k_midnight": DicomLayout(vendor="siemens", transfer_syntax="jpeg2000_lossless",
                                time_tags="acquisition_time"),
    "rle_midnight": DicomLayout(vendor="siemens", transfer_syntax="rle", time_tags="acquisition_time"),
}


def _cfg() -> Config:
    cfg = Config()
    cfg.output.write_qa_png = False  # figures are covered by the end-to-end test; keep this file fast
    cfg.output.write_pdf = False
    return cfg


class _Runs:
    """Module-wide cache of phantoms and Mode A runs."""

    def __init__(self, factory):
        self.factory = factory
        self.phantoms: dict[tuple, object] = {}
        self.runs: dict[tuple, tuple] = {}

    def phantom(self, **kw):
        key = tuple(sorted((k, repr(v)) for k, v in {**SPEC, **kw}.items()))
        if key not in self.phantoms:
            self.phantoms[key] = make_phantom(PhantomSpec(**{**SPEC, **kw}))
        return self.phantoms[key]

    def run(self, layout: str = "siemens_plain", layout_obj: DicomLayout | None = None, **kw):
        key = (layout, tuple(sorted((k, repr(v)) for k, v in kw.items())))
        if key not in self.runs:
            ph = self.phantom(**kw)
            d = self.factory.mktemp(layout)
            write_ctp_dicom(ph.hu, ph.times_s, ph.affine_ras, d / "dicom", layout=layout_obj or LAYOUTS[layout])
            res = run_dicom_folder(d / "dicom", d / "out", _cfg())
            self.runs[key] = (ph, res, d)
        return self.runs[key]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return _Runs(tmp_path_factory)


@pytest.fixture(scope="module")
def ref(runs):
    """Reference: left MCA lesion, uniform 1.5 s sampling, no stagger/motion/rotation, siemens layout."""
    return runs.run(lesion="left")


def _on_map_grid(ph, vol, res):
    perf = res.perfusion
    return resample_to_grid(np.asarray(vol).astype(np.float32), ph.affine_ras, perf.cbf.shape,
                            perf.affine_ras) > 0.5


def _normal_tissue(ph, res):
    """Truth normal tissue (no lesion, no oligemia ring) on the map grid, restricted to the engine's tissue."""
    t = ph.truth
    m = _on_map_grid(ph, t.tissue & ~t.lesion_any, res)
    return m & res.perfusion.masks.tissue & np.isfinite(res.perfusion.cbf)


def _summary(res) -> str:
    m = res.metrics
    return ", ".join(f"{k}={m[k]}" for k in ("hypoperfusion_ml", "core_ml", "tmax4_ml", "tmax10_ml", "HIR",
                                             "PVT_sec", "CBV_Index_contra_hemisphere", "lesion_side"))


# --------------------------------------------------------------------------------------------- 1. layouts
@pytest.mark.parametrize("layout", ["ge_messy", "j2k_midnight", "rle_midnight"])
def test_layout_invariance(runs, ref, layout):
    ph, r0, _ = ref
    _, r1, _ = runs.run(layout, lesion="left")
    m0, m1 = r0.metrics, r1.metrics
    # the same 40 x 6 perfusion images were found (no localizer / non-contrast image slipped in)
    assert r1.meta.n_files_used == r0.meta.n_files_used == ph.hu.shape[0] * ph.hu.shape[1]
    assert m1["lesion_side"] == m0["lesion_side"] == "left"
    np.testing.assert_allclose(r1.perfusion.affine_ras, r0.perfusion.affine_ras, atol=1e-3)
    for key in LAYOUT_KEYS:
        a, b = m0[key], m1[key]
        assert b == pytest.approx(a, rel=1e-3, abs=1e-3), f"{layout}: {key} {b} != {a}"
    for name in ("cbf", "cbv", "tmax"):
        a, b = getattr(r0.perfusion, name), getattr(r1.perfusion, name)
        assert np.array_equal(np.isfinite(a), np.isfinite(b)), name
        fin = np.isfinite(a)
        np.testing.assert_allclose(b[fin], a[fin], rtol=1e-3, atol=1e-3, err_msg=f"{layout}: {name}")
    assert np.array_equal(r1.lesion.hypoperfusion, r0.lesion.hypoperfusion)
    assert np.array_equal(r1.lesion.core, r0.lesion.core)


def test_midnight_crossing_timing(runs, ref):
    """Acquisition time crossing midnight with a fixed AcquisitionDate: sampling still 1.5 s over 58.5 s."""
    _, r0, _ = ref
    _, r1, _ = runs.run("j2k_midnight", lesion="left")
    q0, q1 = r0.metrics["qa_values"], r1.metrics["qa_values"]
    assert q1["acquisition_s"] == pytest.approx(q0["acquisition_s"], abs=1e-3)
    assert q1["acquisition_s"] == pytest.approx(58.5, abs=0.1)
    assert q1["bolus_arrival_s"] == pytest.approx(q0["bolus_arrival_s"], abs=1e-3)


# ------------------------------------------------------------------------------- 2. sampling and stagger
def test_variable_sampling_and_slice_stagger(runs, ref):
    """1 s frames for the first 20 s then 3 s frames, slices staggered by 0.8 s: same lesion volumes."""
    ph0, r0, _ = ref
    frames = [float(t) for t in np.r_[np.arange(0.0, 20.0, 1.0), np.arange(20.0, 60.5, 3.0)]]
    ph, r, _ = runs.run(lesion="left", frame_times_s=frames, slice_stagger_s=0.8)
    m, m0 = r.metrics, r0.metrics
    # the physics is unchanged: the truth volumes do not depend on the sampling
    assert ph.truth_metrics["hypoperfusion_ml"] == pytest.approx(ph0.truth_metrics["hypoperfusion_ml"], rel=1e-6)
    assert m["lesion_side"] == "left"
    assert abs(m["hypoperfusion_ml"] - m0["hypoperfusion_ml"]) <= max(3.0, 0.15 * m0["hypoperfusion_ml"]), \
        _summary(r)
    assert abs(m["core_ml"] - m0["core_ml"]) <= max(3.0, 0.15 * m0["core_ml"]), _summary(r)
    assert m["PVT_sec"] == pytest.approx(m0["PVT_sec"], abs=1.0)
    # relative CBF of normal tissue is not biased by the sampling.  (Absolute CBF is not compared: it scales
    # with the peak of the selected AIF, and which arterial voxels are picked - hence their partial volume -
    # legitimately changes with the sampling and the stagger; that is an AIF accuracy question.)
    c0 = np.median(r0.perfusion.rcbf[_normal_tissue(ph0, r0)])
    c1 = np.median(r.perfusion.rcbf[_normal_tissue(ph, r)])
    assert c1 == pytest.approx(c0, rel=0.05), (c1, c0)


# ---------------------------------------------------------------------------------------------- 3. delay
def test_global_tissue_delay(runs, ref):
    """All tissue 4 s late relative to the AIF: Tmax shifts by ~4 s everywhere, CBF does not change.

    Observed (seed 5, engine of 2026-11-25): normal-tissue median Tmax 1.64 -> 5.60 s, median CBF 21.8 -> 22.2
    mL/100g/min; Tmax > 6 s volume 67 -> 202 mL (truth 72 -> 263 mL: normal WM/GM sit at Tmax ~6 s, so the
    absolute Tmax threshold sweeps in a large, noise-sensitive part of the normal brain). Since definitions 2.17
    normal tissue that near the threshold withholds the Tmax volumes (global_tmax_delay); the core is kept.
    """
    ph0, r0, _ = ref
    ph, r, _ = runs.run(lesion="left", tissue_delay_s=4.0)
    m, m0 = r.metrics, r0.metrics
    n0, n1 = _normal_tissue(ph0, r0), _normal_tissue(ph, r)
    cbf0, cbf1 = np.median(r0.perfusion.cbf[n0]), np.median(r.perfusion.cbf[n1])
    assert cbf1 == pytest.approx(cbf0, rel=0.05), (cbf1, cbf0)
    # Tmax of normal tissue moves by the delay (+-1 s)
    tmax0, tmax1 = np.median(r0.perfusion.tmax[n0]), np.median(r.perfusion.tmax[n1])
    assert tmax1 - tmax0 == pytest.approx(4.0, abs=1.0), (tmax0, tmax1)
    assert not m0["qa_flags"]["global_tmax_delay"] and m0["hypoperfusion_ml"] is not None
    assert m["qa_flags"]["global_tmax_delay"] and m["qa_values"]["normal_tissue_tmax_s"] >= 5.0
    for key in ("hypoperfusion_ml", "penumbra_ml", "tmax4_ml", "tmax6_ml", "tmax10_ml", "HIR", "Mismatch_Ratio",
                "DEFUSE3_eligible"):
        assert m[key] is None and "global bolus delay" in m[f"{key}_reason"], key
    assert m["core_ml"] == pytest.approx(m0["core_ml"], abs=5.0), (m["core_ml"], m0["core_ml"])
    assert not r.lesion.hypoperfusion.any() and not r.lesion.penumbra.any() and r.lesion.core.any()


# ------------------------------------------------------------------------------------------- 4. rotation
def test_head_rotation(runs, ref):
    _, r0, _ = ref
    ph, r, _ = runs.run(lesion="left", rotation_deg=12.0)
    m = r.metrics
    assert m["lesion_side"] == "left"
    # head left-right axis: head u (patient left) rotated by +12 deg in the scanner frame (x left, y posterior)
    th = np.deg2rad(12.0)
    lr_scanner = np.array([np.cos(th), np.sin(th), 0.0])
    lr_ras = np.array([-lr_scanner[0], -lr_scanner[1], 0.0])  # RAS: x right, y anterior
    n = np.asarray(r.perfusion.hemispheres.normal_ras, float)
    angle = np.degrees(np.arccos(min(1.0, abs(n @ lr_ras) / np.linalg.norm(n))))
    assert angle <= 3.0, (angle, n)
    assert m["CBV_Index_contra_hemisphere"] == pytest.approx(r0.metrics["CBV_Index_contra_hemisphere"], rel=0.10)
    assert m["hypoperfusion_ml"] == pytest.approx(r0.metrics["hypoperfusion_ml"], rel=0.15), _summary(r)


# --------------------------------------------------------------------------------------------- 5. motion
MOTION_MM = 2.0


def _true_motion_max_mm(ph) -> float:
    """Truth in the engine's definition: in-plane translation + |yaw| x 80 mm lever arm, relative to frame 0."""
    mo = ph.motion
    return float((np.hypot(mo[:, 0], mo[:, 1]) + np.abs(mo[:, 5]) * 80.0).max())


def test_motion_reported(runs, ref):
    """The QA value reports head motion of the right magnitude (and ~0 without motion)."""
    _, r0, _ = ref
    ph, r, _ = runs.run(lesion="left", motion_mm=MOTION_MM)
    true_max = _true_motion_max_mm(ph)
    reported = r.metrics["qa_values"]["motion_max_mm"]
    # the engine registers to the mean of the first two frames (frame 1 moves in the phantom), hence the slack
    assert 0.5 * true_max <= reported <= 1.5 * true_max + 0.5, (reported, true_max)
    assert r.metrics["qa_flags"]["motion_excessive"]
    assert r0.metrics["qa_values"]["motion_max_mm"] < 0.5
    assert not r0.metrics["qa_flags"]["motion_excessive"]


def test_motion_volumes(runs, ref):
    """Motion-corrected study: lesion volumes and indices close to the motion-free run."""
    _, r0, _ = ref
    _, r, _ = runs.run(lesion="left", motion_mm=MOTION_MM)
    m, m0 = r.metrics, r0.metrics
    assert m["lesion_side"] == "left"
    assert m["qa_values"]["n_baseline_frames"] >= 3, _summary(r)
    assert m["PVT_sec"] == pytest.approx(m0["PVT_sec"], abs=2.0), _summary(r)
    assert m["hypoperfusion_ml"] == pytest.approx(m0["hypoperfusion_ml"], rel=0.20), _summary(r)
    assert abs(m["core_ml"] - m0["core_ml"]) <= max(3.0, 0.30 * m0["core_ml"]), _summary(r)


# ----------------------------------------------------------------------------------------- 6. right side
def test_right_sided_lesion(runs):
    ph, r, _ = runs.run(lesion="right")
    m, t = r.metrics, ph.truth_metrics
    assert t["lesion_side"] == "right"
    assert m["lesion_side"] == "right"
    q = m["qa_values"]
    assert q["tmax6_right_ml"] > 10 * max(q["tmax6_left_ml"], 0.1)
    assert m["hypoperfusion_ml"] == pytest.approx(t["hypoperfusion_ml"], rel=0.15), _summary(r)
    assert abs(m["core_ml"] - t["core_ml"]) <= max(5.0, 0.35 * t["core_ml"]), _summary(r)


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=(
    "measured (engine 2.11, seed 5, 8 HU, 1.7 mm pixels): hypoperfusion / truth 0.99 right against 1.11 left (2.10: "
    "0.98 / 1.11; engine 2.9: 1.03 / 1.11, within 0.10): the study dispersion prior differs between the mirrored "
    "studies (left 0.58 / 0.42 on 1 / 2 s, right 0.15 / 0.85 on 0 / 1 s: its ambiguity at 8 HU, README Known gaps), and 2.10's noise-robust MTT "
    "for the Tmax shift moved the right study's normal tissue +0.09 -> -0.01 s while the left stays +0.43 s"))
def test_right_sided_lesion_mirrors_the_left(runs, ref):
    """Mirror symmetry: the engine's error on the right equals its error on the left (same anatomy, mirrored)."""
    ph0, r0, _ = ref
    ph, r, _ = runs.run(lesion="right")
    err_r = r.metrics["hypoperfusion_ml"] / ph.truth_metrics["hypoperfusion_ml"]
    err_l = r0.metrics["hypoperfusion_ml"] / ph0.truth_metrics["hypoperfusion_ml"]
    assert err_r == pytest.approx(err_l, abs=0.10), (err_r, err_l)


# ------------------------------------------------------------------------------------------- 7. gantry tilt
def test_gantry_tilt_geometry(runs, ref):
    """Same pixels written with a 15 deg gantry tilt: the map grid is the sheared scanner grid, the voxels are
    cos(15 deg) smaller (slice spacing along the plane normal 5 cos 15 mm), everything else unchanged."""
    tilt = 15.0
    _, r0, _ = ref
    ph, r, _ = runs.run("tilt15", layout_obj=DicomLayout(vendor="siemens", gantry_tilt_deg=tilt), lesion="left")
    assert r.meta.gantry_tilt_deg == pytest.approx(tilt, abs=0.01)
    assert r.metrics["lesion_side"] == "left"
    true_aff = tilted_affine_ras(ph.affine_ras, tilt)
    aff = r.perfusion.affine_ras
    # first voxel of the map grid at the first voxel of the scan (the map grid may be coarser: same corner)
    np.testing.assert_allclose(aff @ [0, 0, 0, 1.0], true_aff @ [0, 0, 0, 1.0], atol=0.5)
    # the in-plane axes follow the tilted planes; the slice step follows the table
    for col in range(3):
        u = aff[:3, col] / np.linalg.norm(aff[:3, col])
        v = true_aff[:3, col] / np.linalg.norm(true_aff[:3, col])
        assert abs(u @ v) > np.cos(np.deg2rad(1.0)), (col, aff, true_aff)
    # the pixel data are those of the reference run: volumes scale with the voxel volume, the rest is equal
    cos = np.cos(np.deg2rad(tilt))
    vox, vox0 = abs(np.linalg.det(aff[:3, :3])), abs(np.linalg.det(r0.perfusion.affine_ras[:3, :3]))
    assert vox == pytest.approx(vox0 * cos, rel=1e-4)
    m, m0 = r.metrics, r0.metrics
    for key in ("hypoperfusion_ml", "core_ml", "penumbra_ml", "tmax4_ml", "tmax8_ml", "tmax10_ml"):
        assert m[key] == pytest.approx(m0[key] * cos, rel=2e-3, abs=0.02), (key, m[key], m0[key])
    for key in ("HIR", "PVT_sec", "aif_ttp_s", "vof_ttp_s"):
        assert m[key] == pytest.approx(m0[key], rel=1e-3, abs=1e-3), (key, m[key], m0[key])
