"""Masks, indices, metrics and midline on small hand-made volumes with known answers."""

import json

import jsonschema
import numpy as np
import pytest

from ctperf.analysis.indices import IndexInputs, compute_indices
from ctperf.analysis.masks import cortical_ribbon, lesion_masks, remove_small_clusters
from ctperf.analysis.metrics import build_metrics, dumps
from ctperf.config import Config, Thresholds
from ctperf.core.midline import hemispheres_from_plane, mirror
from ctperf.engine.hemispheres import find_midline
from ctperf.io.metrics_files import load_schema, write_metrics

AFF = np.array([[-2.0, 0, 0, 63.0], [0, -2.0, 0, 80.0], [0, 0, 5.0, -10.0], [0, 0, 0, 1]])
SHAPE = (6, 64, 64)


def _head():
    z, y, x = np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij")
    world_x = AFF[0, 0] * x + AFF[0, 3]  # RAS x: patient left is negative
    world_y = AFF[1, 1] * y + AFF[1, 3]
    brain = (world_x / 50.0) ** 2 + ((world_y - 20) / 60.0) ** 2 < 1
    return brain, world_x, world_y


def _hemi(brain):
    return hemispheres_from_plane(brain, AFF, np.array([-1.0, 0, 0]), np.array([0.0, 20.0, 0.0]))


def _lesion_case():
    brain, wx, wy = _head()
    tmax = np.where(brain, 1.0, np.nan).astype(np.float32)
    lesion = brain & (wx < -10) & (wx > -40) & (np.abs(wy - 20) < 20)  # patient left
    core = lesion & (wx < -25)
    tmax[lesion] = 8.0
    tmax[lesion & (wx < -30)] = 12.0
    rcbf = np.where(brain, 1.0, np.nan).astype(np.float32)
    rcbf[core] = 0.1
    cbv = np.where(brain, 4.0, np.nan).astype(np.float32)
    cbv[lesion] = 3.0
    return brain, tmax, rcbf, cbv, lesion, core


def test_hemisphere_labels_and_mirror():
    brain, wx, _ = _head()
    hemi = _hemi(brain)
    assert (hemi.side[brain & (wx < -2)] == 1).all()  # RAS x < 0 is patient left
    assert (hemi.side[brain & (wx > 2)] == -1).all()
    blob = brain & (wx < -20) & (wx > -30)
    mb = mirror(blob, hemi)
    assert abs(int(mb.sum()) - int(blob.sum())) <= blob.sum() * 0.05
    assert (wx[mb] > 18).all()


def test_find_midline_recovers_offset_plane():
    brain, wx, wy = _head()
    img = np.where(brain, 30 + 10 * np.exp(-((np.abs(wx) - 15) ** 2 + (wy - 10) ** 2) / 80.0), 0)
    hemi = find_midline(img, brain, AFF)
    assert abs(abs(hemi.normal_ras[0]) - 1) < 0.01
    assert abs(hemi.point_ras[0]) < 1.0  # true midline at RAS x = 0


def test_masks_and_volumes():
    brain, tmax, rcbf, cbv, lesion, core = _lesion_case()
    vml = abs(np.linalg.det(AFF[:3, :3])) / 1000
    les = lesion_masks(tmax, rcbf, brain, vml, Thresholds())
    assert (les.hypoperfusion == lesion).all()
    assert (les.core == core).all()
    assert (les.penumbra == (lesion & ~core)).all()
    # RAPID-style core (no Tmax gate) also finds a low-flow region outside Tmax > 6 s; the gated core does not
    outside = brain & ~lesion
    cx = int(round(np.nonzero(lesion)[2].mean()))
    mx = SHAPE[2] - 1 - cx  # the same place in the other half of the image
    low = np.zeros_like(outside)
    low[:, SHAPE[1] // 2 - 4:SHAPE[1] // 2 + 4, mx - 4:mx + 4] = True
    low &= outside
    assert low.sum() * vml >= Thresholds().min_cluster_ml  # the cluster survives the size filter
    rcbf2 = rcbf.copy()
    rcbf2[low] = 0.1
    rapid = lesion_masks(tmax, rcbf2, brain, vml, Thresholds(core_requires_tmax=False)).core
    gated = lesion_masks(tmax, rcbf2, brain, vml, Thresholds()).core
    assert (rapid == (core | low)).all()
    assert (gated == core).all()


def test_core_gate_is_one_pixel_wide():
    """Definitions 2.21: a low-flow voxel whose own Tmax reads <= 6 s is core when it shares an in-plane side with
    the Tmax > 6 s region (near-zero flow leaves its Tmax undefined); two pixels away, diagonal only, or with
    ``core_tmax_margin_px = 0`` (the strict gate of 2.20) it is not."""
    tissue = np.ones((2, 20, 20), bool)
    tmax = np.zeros(tissue.shape)
    tmax[:, 5:15, 5:15] = 8.0                      # the hypoperfused square
    rcbf = np.ones(tissue.shape)
    rcbf[:, 6:14, 6:17] = 0.1                      # low flow reaching 2 pixels beyond its right edge (x = 15, 16)
    rcbf[:, 15, 15] = 0.1                          # diagonal to the square's corner (14, 14)
    vml = 0.5                                      # 0.5 mL voxels: every cluster here survives the 0.5 mL filter
    core = lesion_masks(tmax, rcbf, tissue, vml, Thresholds()).core
    strict = lesion_masks(tmax, rcbf, tissue, vml, Thresholds(core_tmax_margin_px=0)).core
    assert strict[:, 6:14, 6:15].all() and strict.sum() == 2 * 8 * 9
    assert core[:, 6:14, 15].all() and not core[:, :, 16].any() and not core[:, 15, 15].any()
    assert core.sum() == strict.sum() + 2 * 8
    les = lesion_masks(tmax, rcbf, tissue, vml, Thresholds())
    assert not (les.penumbra & les.core).any() and (les.penumbra == (les.hypoperfusion & ~les.core)).all()


def test_small_clusters_removed():
    m = np.zeros(SHAPE, bool)
    m[2, 10:20, 10:20] = True
    m[4, 40, 40] = True
    out = remove_small_clusters(m, 0.02, 0.5)
    assert out[2, 15, 15] and not out[4, 40, 40]


def test_indices_known_values():
    brain, tmax, rcbf, cbv, lesion, core = _lesion_case()
    vml = abs(np.linalg.det(AFF[:3, :3])) / 1000
    thr = Thresholds()
    les = lesion_masks(tmax, rcbf, brain, vml, thr)
    hemi = _hemi(brain)
    sinus = np.zeros(SHAPE, bool)
    sinus[3, 60, 30:34] = True
    tmax_s = tmax.copy()
    tmax_s[sinus] = 11.0
    idx = compute_indices(IndexInputs(cbv=cbv, tmax_s=tmax_s, lesion=les, tissue=brain, voxel_volume_ml=vml,
                                      thresholds=thr, hemispheres=hemi, cortex=cortical_ribbon(brain, (2, 2, 5)),
                                      aif_ttp_s=12.0, vof_ttp_s=19.5, sinus=sinus, roi_mask=lesion))
    assert idx["hypoperfusion_ml"] == pytest.approx(lesion.sum() * vml, rel=1e-6)
    assert idx["core_ml"] == pytest.approx(core.sum() * vml, rel=1e-6)
    assert idx["Mismatch_Ratio"] == pytest.approx(lesion.sum() / core.sum(), rel=1e-3)
    assert idx["HIR"] == pytest.approx((tmax >= 10).sum() / lesion.sum(), rel=1e-3)
    assert idx["Corrected_CBV_Index"] == pytest.approx(0.75, rel=1e-3)
    assert idx["CBV_Index_contra_hemisphere"] == pytest.approx(0.75, rel=1e-3)
    assert idx["CBV_Index_mirror"] == pytest.approx(0.75, rel=1e-3)
    assert idx["Conventional_CBV_Index"] == pytest.approx(0.75, rel=1e-3)
    assert idx["PVT_sec"] == pytest.approx(7.5)
    assert idx["PVT_present"] is True
    assert idx["lesion_side"] == "left"


def test_no_lesion_gives_zero_and_null_ratio():
    brain, *_ = _lesion_case()
    tmax = np.where(brain, 1.0, np.nan)
    rcbf = np.where(brain, 1.0, np.nan)
    vml = 0.02
    les = lesion_masks(tmax, rcbf, brain, vml, Thresholds())
    idx = compute_indices(IndexInputs(cbv=np.where(brain, 4.0, np.nan), tmax_s=tmax, lesion=les, tissue=brain,
                                      voxel_volume_ml=vml, thresholds=Thresholds(), hemispheres=_hemi(brain)))
    assert idx["hypoperfusion_ml"] == 0 and idx["core_ml"] == 0
    assert idx["Mismatch_Ratio"] is None and "core" in idx["Mismatch_Ratio_reason"]
    assert idx["HIR"] is None and idx["HIR_reason"]
    assert idx["lesion_side"] == "none"
    assert idx["DEFUSE3_eligible"] is False
    doc = build_metrics(idx, mode="A", thresholds=Thresholds(), qa_flags={"poor_aif": False},
                        qa_values={"x": float("nan")})
    text = dumps(doc)
    json.loads(text)  # strict JSON
    assert "NaN" not in text and "Infinity" not in text
    jsonschema.validate(doc, load_schema())


def test_no_trial_label_for_bilateral_or_posterior_hypoperfusion():
    """Both trials selected one hemispheric lesion: a bilateral or posterior pattern gets no DEFUSE 3 / EXTEND label
    (None with the pattern and the trials' criterion), the volumes stay; the unilateral case keeps its label."""
    brain, tmax, rcbf, cbv, lesion, core = _lesion_case()
    les = lesion_masks(tmax, rcbf, brain, 0.02, Thresholds())

    def indices(**kw):
        return compute_indices(IndexInputs(cbv=cbv, tmax_s=tmax, lesion=les, tissue=brain, voxel_volume_ml=0.02,
                                           thresholds=Thresholds(), hemispheres=_hemi(brain), **kw))

    assert isinstance(indices()["DEFUSE3_eligible"], bool)
    idx = indices(hemisphere_logic=False, hemisphere_reason="bilateral hypoperfusion: no less-affected hemisphere")
    for key in ("DEFUSE3_eligible", "EXTEND_eligible"):
        assert idx[key] is None
        assert idx[f"{key}_reason"].startswith("bilateral hypoperfusion") and "hemispheric" in idx[f"{key}_reason"]
    assert idx["hypoperfusion_ml"] == pytest.approx(lesion.sum() * 0.02) and idx["core_ml"] > 0
    # an unusable rCBF reference still takes precedence (every core-derived value)
    idx = indices(hemisphere_logic=False, hemisphere_reason="posterior", reference_reason="too small")
    assert idx["DEFUSE3_eligible"] is None and idx["DEFUSE3_eligible_reason"] == "too small"


def test_metrics_files(tmp_path):
    brain, tmax, rcbf, cbv, lesion, core = _lesion_case()
    les = lesion_masks(tmax, rcbf, brain, 0.02, Thresholds())
    idx = compute_indices(IndexInputs(cbv=cbv, tmax_s=tmax, lesion=les, tissue=brain, voxel_volume_ml=0.02,
                                      thresholds=Thresholds(), hemispheres=_hemi(brain)))
    doc = build_metrics(idx, mode="A", thresholds=Thresholds())
    jsonschema.validate(doc, load_schema())
    jp, cp = write_metrics(doc, tmp_path)
    assert json.loads(jp.read_text())["core_ml"] == doc["core_ml"]
    header = cp.read_text().splitlines()[0].split(",")
    assert "core_ml" in header and "thresholds.rcbf_core" in header
    assert doc["units"]["core_ml"] == "mL" and doc["definition_version"]
    # the versions that made the numbers: Python, ctperf and the numeric packages (a column each in metrics.csv)
    versions = doc["software_versions"]
    assert versions["ctperf"] == doc["software_version"] and versions["numpy"] == np.__version__
    assert {"python", "scipy", "pydicom", "nibabel", "scikit-image"} <= set(versions)
    assert "software_versions.numpy" in header


def test_config_file_overrides(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("[thresholds]\ntmax_hypoperfusion_s = 8\nrcbf_core = 0.38\n[deconvolution]\nmethod = 'tikhonov'\n")
    cfg = Config.load(p)
    assert cfg.thresholds.tmax_hypoperfusion_s == 8.0 and cfg.deconvolution.method == "tikhonov"
    bad = tmp_path / "bad.toml"
    bad.write_text("[thresholds]\nnot_a_setting = 1\n")
    from ctperf.errors import InputError

    with pytest.raises(InputError, match="unknown setting"):
        Config.load(bad)
    # a typo names the setting it was probably meant to be; a name like none gets no guess
    bad.write_text("[thresholds]\nrcbf_cor = 0.3\n")
    with pytest.raises(InputError, match=r"unknown setting 'thresholds.rcbf_cor' \(did you mean 'rcbf_core'\?\)"):
        Config.load(bad)
    bad.write_text("[threshold]\nrcbf_core = 0.3\n")
    with pytest.raises(InputError, match=r"did you mean 'thresholds'"):
        Config.load(bad)
    bad.write_text("[thresholds]\nnot_a_setting = 1\n")
    with pytest.raises(InputError) as info:
        Config.load(bad)
    assert "did you mean" not in str(info.value)


def test_custom_tmax_levels_keep_standard_keys_and_units():
    brain, tmax, rcbf, cbv, lesion, core = _lesion_case()
    thr = Thresholds(tmax_levels_s=(5.0, 9.0))
    les = lesion_masks(tmax, rcbf, brain, 0.02, thr)
    idx = compute_indices(IndexInputs(cbv=cbv, tmax_s=tmax, lesion=les, tissue=brain, voxel_volume_ml=0.02,
                                      thresholds=thr, hemispheres=_hemi(brain)))
    doc = build_metrics(idx, mode="A", thresholds=thr)
    jsonschema.validate(doc, load_schema())
    assert {"tmax4_ml", "tmax5_ml", "tmax9_ml", "tmax10_ml"} <= set(doc)
    assert doc["units"]["tmax5_ml"] == "mL" and doc["units"]["tmax9_ml"] == "mL"
