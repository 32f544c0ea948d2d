"""Issue 16: validated settings, visible warnings, recorded inputs, run-owned output folders, non-destructive
recompute, regional statistics, progress and exit codes (README "Trustworthy results")."""

import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import nibabel as nib
import numpy as np
import pytest

from ctperf.analysis.regions import map_statistics, regional_statistics
from ctperf.config import Config, Thresholds
from ctperf.errors import ConfigError, InputError
from ctperf.io.metrics_files import load_schema
from ctperf.io.outdir import MANIFEST, atomic_output_dir, check_output_dir, previous_result

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _cli(*args):
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "ctperf.cli", *args], capture_output=True, text=True, env=env)


def _sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _tree_hashes(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): _sha(p) for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------------ settings
@pytest.mark.parametrize("section, values, fragment", [
    ("thresholds", {"rcbf_core": 30}, "rcbf_core = 30 looks like a percentage; use 0.30"),
    ("thresholds", {"rcbf_core": -1}, "valid: 0 < rcbf_core < 1"),
    ("thresholds", {"tmax_hypoperfusion_s": 0}, "valid: 0 < tmax_hypoperfusion_s <= 30 s"),
    ("thresholds", {"tmax_levels_s": [4, -2]}, "tmax_levels_s = -2 is out of range"),
    ("thresholds", {"min_cluster_ml": -0.5}, "min_cluster_ml = -0.5 is out of range"),
    ("preprocess", {"pca_min_components": 30}, "must not exceed preprocess.pca_max_components"),
    ("preprocess", {"spatial_sigma_mm": -1}, "valid: 0 <= spatial_sigma_mm <= 20 mm"),
    ("aif", {"n_aif_voxels": 0}, "valid: 1 <= n_aif_voxels <= 1000"),
    ("deconvolution", {"oscillation_index": 5}, "looks like a percentage; use 0.05"),
])
def test_config_values_are_range_checked(section, values, fragment):
    with pytest.raises(ConfigError, match=None) as info:
        Config.from_dict({section: values})
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_every_numeric_setting_has_a_range():
    """Every number (or list of numbers) in the config has an entry in RANGES, and every entry names a setting."""
    import dataclasses
    import typing

    from ctperf.config import RANGES

    names = set()
    for section in dataclasses.fields(Config):
        sub = section.default_factory
        hints = typing.get_type_hints(sub)
        for f in dataclasses.fields(sub):
            name = f"{section.name}.{f.name}"
            names.add(name)
            text = str(hints[f.name])
            if hints[f.name] is not bool and ("float" in text or "int" in text):
                assert name in RANGES, f"{name} has no valid range in ctperf.config.RANGES"
    assert set(RANGES) <= names, set(RANGES) - names


def test_config_sections_check_on_construction_and_after_assignment():
    with pytest.raises(ValueError, match="looks like a percentage"):
        Thresholds(rcbf_core=30)
    with pytest.raises(InputError):
        Thresholds(tmax_hypoperfusion_s="6")
    cfg = Config()
    cfg.thresholds.rcbf_core = 38
    with pytest.raises(ConfigError, match="use 0.38"):
        cfg.check()
    assert Config.from_dict({"thresholds": {"tmax_levels_s": [4, 6]}}).thresholds.tmax_levels_s == (4.0, 6.0)


def test_bad_config_file_errors_are_one_line_and_early(tmp_path):
    pct = tmp_path / "pct.toml"
    pct.write_text("[thresholds]\nrcbf_core = 30\n")
    r = _cli("run", "--dicom_dir", str(tmp_path), "--out_dir", str(tmp_path / "o"), "--config", str(pct))
    assert r.returncode == 2 and "use 0.30" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    latin = tmp_path / "latin.toml"
    latin.write_bytes("# r\xe9glages\n[thresholds]\nrcbf_core = 0.3\n".encode("latin-1"))
    r = _cli("run", "--dicom_dir", str(tmp_path), "--out_dir", str(tmp_path / "o"), "--config", str(latin))
    assert r.returncode == 2 and "not UTF-8" in r.stderr and "internal error" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_exit_codes_are_in_help():
    for args in (("--help",), ("run", "--help"), ("maps", "--help"), ("recompute", "--help")):
        r = _cli(*args)
        assert r.returncode == 0 and "Exit codes" in r.stdout and "--fail-on-qa" in r.stdout.replace("\n", " ")


# ------------------------------------------------------------------------------------------- trial labels
def _indices(thresholds):
    from ctperf.analysis.indices import IndexInputs, compute_indices
    from ctperf.analysis.masks import lesion_masks

    tissue = np.ones((2, 20, 20), bool)
    tmax = np.where(np.arange(20)[None, None, :] < 10, 12.0, 2.0) * np.ones((2, 20, 20))
    rcbf = np.where(np.arange(20)[None, :, None] < 3, 0.1, 0.9) * np.ones((2, 20, 20))
    les = lesion_masks(tmax, rcbf, tissue, 0.1, thresholds)
    return compute_indices(IndexInputs(cbv=None, tmax_s=tmax, lesion=les, tissue=tissue, voxel_volume_ml=0.1,
                                       thresholds=thresholds))


def test_trial_labels_only_on_trial_thresholds():
    idx = _indices(Thresholds())
    assert isinstance(idx["DEFUSE3_eligible"], bool) and isinstance(idx["EXTEND_eligible"], bool)
    for thr in (Thresholds(tmax_hypoperfusion_s=8.0), Thresholds(rcbf_core=0.38)):
        idx = _indices(thr)
        assert idx["DEFUSE3_eligible"] is None and idx["EXTEND_eligible"] is None
        assert "trial thresholds" in idx["DEFUSE3_eligible_reason"]
        assert ("8" in idx["DEFUSE3_eligible_reason"]) or ("0.38" in idx["DEFUSE3_eligible_reason"])


# ----------------------------------------------------------------------------------------------- regions
def test_map_statistics_and_regions():
    s = map_statistics(np.array([1.0, 2.0, 3.0, 4.0, np.nan, np.inf]))
    assert s == {"mean": 2.5, "median": 2.5, "iqr": 1.5, "n": 4}
    cbf = np.arange(8, dtype=float).reshape(2, 2, 2)
    region = np.zeros((2, 2, 2), bool)
    region[0] = True
    out = regional_statistics({"cbf": cbf, "cbv": None}, {"core": region, "empty": ~np.ones_like(region),
                                                          "roi": None}, voxel_volume_ml=0.5)
    assert set(out) == {"core", "empty"}
    assert out["core"]["volume_ml"] == 2.0 and out["core"]["cbf"]["median"] == 1.5
    assert out["core"]["cbv"]["mean"] is None and out["core"]["cbv_reason"] == "no CBV map"
    assert out["empty"]["cbf_reason"] == "empty region" and out["empty"]["volume_ml"] == 0
    with pytest.raises(ValueError, match="shape"):
        regional_statistics({"cbf": cbf}, {"core": region[0]}, voxel_volume_ml=1.0)


# ---------------------------------------------------------------------------------------- output folders
def _fake_result(out: Path, mode: str, files: tuple[str, ...]) -> None:
    """A result set written through atomic_output_dir: metrics.json of ``mode`` plus ``files``."""
    with atomic_output_dir(out) as tmp:
        (tmp / "metrics.json").write_text(json.dumps({"mode": mode}))
        for rel in files:
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_text("old")


def test_run_owns_its_files_and_keeps_the_users(tmp_path):
    out = tmp_path / "out"
    _fake_result(out, "A", ("qa/old.png", "report.pdf"))
    (out / "my_notes.txt").write_text("mine")
    mode, files = previous_result(out)
    assert mode == "A" and sorted(files) == sorted(["metrics.json", "qa/old.png", "report.pdf", MANIFEST])
    with atomic_output_dir(out) as tmp:
        (tmp / "metrics.json").write_text(json.dumps({"mode": "A", "new": True}))
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == sorted(
        ["metrics.json", "my_notes.txt", MANIFEST])
    assert json.loads((out / "metrics.json").read_text())["new"] is True
    assert not list(tmp_path.glob(".out.ctperf-*"))


def test_other_mode_refused_unless_overwrite(tmp_path):
    out = tmp_path / "b_result"
    _fake_result(out, "B", ("masks/core_mask.nii.gz",))
    with pytest.raises(InputError, match="holds a Mode B result.*--overwrite"):
        check_output_dir(out, mode="A")
    check_output_dir(out, mode="A", overwrite=True)
    check_output_dir(out, mode="B")
    before = _tree_hashes(out)
    r = _cli("run", "--dicom_dir", str(tmp_path / "nodicom"), "--out_dir", str(out))
    assert r.returncode == 2 and "Mode B result" in r.stderr and _tree_hashes(out) == before
    with atomic_output_dir(out) as tmp:  # with --overwrite the A set replaces the whole B set
        (tmp / "metrics.json").write_text(json.dumps({"mode": "A"}))
    assert not (out / "masks").exists() and previous_result(out)[0] == "A"


def test_unwritable_output_folder_found_before_analysis(tmp_path, monkeypatch):
    import tempfile

    out = tmp_path / "ro"
    out.mkdir()

    def refuse(*a, dir=None, **k):
        if dir is not None and Path(dir) == out:
            raise PermissionError(13, "Permission denied")
        return real(*a, dir=dir, **k)

    real = tempfile.mkstemp
    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(InputError, match="cannot write to the output folder .*Permission denied"):
        check_output_dir(out)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores folder permissions")
def test_read_only_output_folder_cli(tmp_path):
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o555)
    try:
        r = _cli("run", "--dicom_dir", str(tmp_path / "nodicom"), "--out_dir", str(out))
        assert r.returncode == 2 and "cannot write to the output folder" in r.stderr
    finally:
        out.chmod(0o755)


# ------------------------------------------------------------------------------------------ progress bar
def test_one_progress_bar_over_the_run():
    from ctperf.apps.terminal import MODE_A_STAGES, RunProgress

    class Fake:
        def __init__(self):
            self.state = {}

        def update(self, task, **kw):
            self.state.update(kw)

    fake = Fake()
    bar = RunProgress(fake, 0, MODE_A_STAGES)
    total = fake.state["total"]
    seen = []
    for name in MODE_A_STAGES:
        bar.stage(name)
        seen.append(fake.state["completed"])
        if name == "load":
            bar.part(5, 10)
            assert "5/10" in fake.state["description"] and 0 < fake.state["completed"] < total
        assert fake.state["description"].startswith(f"[{MODE_A_STAGES.index(name) + 1}/{len(MODE_A_STAGES)}]")
    assert seen[1] > fake.state["completed"] * 0 + seen[0]
    assert seen == sorted(seen) and seen[0] == 0 and seen[-1] < total
    bar.stage("an engine stage added later")  # unknown stages are shown but neither lengthen nor move the bar
    assert fake.state["total"] == total and fake.state["completed"] == seen[-1]
    bar.finish()
    assert fake.state["completed"] == fake.state["total"]


# -------------------------------------------------------------------------------- end to end (small study)
@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A small phantom study (one duplicated file: an ingest warning), one `ctperf run -q` with a contra mask on
    a coarser grid, and the run's outputs."""
    import pydicom

    from ctperf.io.nifti import save_volume
    from ctperf.synthetic import PhantomSpec, make_phantom
    from ctperf.synthetic.dicom_writer import DicomLayout, write_ctp_dicom

    d = tmp_path_factory.mktemp("h16")
    ph = make_phantom(PhantomSpec(matrix=64, n_slices=4, lesion="left", seed=0))
    write_ctp_dicom(ph.hu, ph.times_s, ph.affine_ras, d / "dicom", layout=DicomLayout(vendor="siemens"))
    first = sorted((d / "dicom").rglob("*.dcm"))[0]
    shutil.copy(first, d / "dicom" / "copy_of_one_file.dcm")
    # contralateral (patient right) half of the head, on a grid 2x coarser in-plane
    aff2 = ph.affine_ras.copy()
    aff2[:3, :2] *= 2.0
    nz, ny, nx = ph.hu.shape[1:]
    coarse = np.zeros((nz, ny // 2, nx // 2), np.uint8)
    xs = (aff2 @ np.stack([np.arange(nx // 2), np.zeros(nx // 2), np.zeros(nx // 2), np.ones(nx // 2)]))[0]
    centre = (ph.affine_ras @ [nx / 2, 0, 0, 1])[0]
    coarse[:, ny // 4: 3 * ny // 4, (xs > centre + 10) & (xs < centre + 50)] = 1
    contra = d / "contra.nii.gz"
    save_volume(contra, coarse, aff2, dtype=np.uint8)
    out = d / "out"
    r = _cli("run", "--dicom_dir", str(d / "dicom"), "--out_dir", str(out), "--contra_mask", str(contra), "-q")
    assert r.returncode == 0, r.stderr
    study_uid = str(pydicom.dcmread(first, stop_before_pixels=True).StudyInstanceUID)
    return {"dir": d, "out": out, "contra": contra, "stdout": r.stdout, "study_uid": study_uid,
            "metrics": json.loads((out / "metrics.json").read_text())}


def test_quiet_run_prints_result_and_warnings(study):
    text = " ".join(study["stdout"].split())
    assert "core_ml" in text and "Warnings" in text
    assert "ingest: dropped 1 duplicate frame" in text
    assert "contra_mask contra.nii.gz is on another grid" in text and "resampled in world space" in text
    assert "% of the mask lies inside the brain" in text
    for flag in [k for k, v in study["metrics"]["qa_flags"].items() if v]:
        assert f"QA flag {flag}" in text


def test_inputs_recorded(study):
    m = study["metrics"]
    assert m["study_id"] == hashlib.sha256(study["study_uid"].encode()).hexdigest()[:16]
    rec = m["provenance"]["input_files"]["contra_mask"]
    assert rec["file"] == "contra.nii.gz" and rec["sha256"] == _sha(study["contra"])
    assert rec["grid"] == "resampled" and 0.5 < rec["fraction_in_brain"] <= 1.0
    assert m["provenance"]["input_files"]["config"] is None
    series = m["provenance"]["series"]
    assert series["chosen"]["series_numbers"] and series["excluded_candidates"] == []
    log = (study["out"] / "log.txt").read_text()
    assert rec["sha256"] in log and "series:" in log and m["study_id"] in log
    assert study["study_uid"] not in log and study["study_uid"] not in json.dumps(m)


def test_regions_in_metrics_and_csv(study):
    m = study["metrics"]
    jsonschema.validate(m, load_schema())
    regions = m["regions"]
    assert set(regions) == {"core", "penumbra", "hypoperfusion", "hemisphere_left", "hemisphere_right", "contra"}
    assert regions["core"]["volume_ml"] == pytest.approx(m["core_ml"], abs=1e-3)
    assert regions["hypoperfusion"]["volume_ml"] == pytest.approx(m["hypoperfusion_ml"], abs=1e-3)
    assert regions["core"]["rcbf"]["median"] < m["thresholds"]["rcbf_core"]
    assert regions["hypoperfusion"]["tmax"]["median"] > m["thresholds"]["tmax_hypoperfusion_s"]
    left, right = regions["hemisphere_left"], regions["hemisphere_right"]
    assert left["volume_ml"] + right["volume_ml"] > regions["hypoperfusion"]["volume_ml"]
    assert left["tmax"]["n"] == left["n_voxels"] and right["cbf"]["n"] == right["n_voxels"]  # no NaN in tissue
    with (study["out"] / "metrics.csv").open() as fh:
        row = next(csv.DictReader(fh))
    assert float(row["regions.core.cbf.mean"]) == pytest.approx(regions["core"]["cbf"]["mean"])
    assert "regions.contra.rcbf.iqr" in row and "study_id" in row


def test_recompute_into_new_folder_leaves_original_untouched(study, tmp_path):
    out = study["out"]
    before = _tree_hashes(out)
    cfg = tmp_path / "t.toml"
    cfg.write_text("[thresholds]\nrcbf_core = 0.38\n[deconvolution]\nmethod = 'bcsvd'\n")
    new = tmp_path / "new"
    r = _cli("recompute", str(out), "--config", str(cfg), "--out_dir", str(new))
    assert r.returncode == 0, r.stderr
    assert _tree_hashes(out) == before
    m, orig = json.loads((new / "metrics.json").read_text()), study["metrics"]
    assert m["recomputed_from"]["metrics_sha256"] == before["metrics.json"]
    assert m["recomputed_from"]["thresholds"]["rcbf_core"] == 0.3 and m["thresholds"]["rcbf_core"] == 0.38
    assert m["provenance"]["config"]["deconvolution"] == orig["provenance"]["config"]["deconvolution"]
    assert m["provenance"]["config"]["thresholds"]["rcbf_core"] == 0.38
    assert m["study_id"] == orig["study_id"]
    assert m["DEFUSE3_eligible"] is None and "rcbf_core = 0.38" in m["DEFUSE3_eligible_reason"]
    assert m["core_ml"] >= orig["core_ml"]
    assert "not computed" in " ".join(r.stdout.split())
    # the standard convention's maps the method names go with the result (before: dropped by recompute)
    for name in m["method"]["standard_maps"]:
        a, b = (np.asanyarray(nib.load(d / name).dataobj) for d in (new, out))
        assert np.array_equal(a, b, equal_nan=True), name
    # the new folder is itself a complete Mode A result
    bad = tmp_path / "bad.toml"
    bad.write_text("[deconvolution]\nmethod = 'tikhonov'\n")
    r = _cli("recompute", str(new), "--config", str(bad), "--out_dir", str(tmp_path / "never"))
    assert r.returncode == 2 and "needs a new deconvolution" in r.stderr and not (tmp_path / "never").exists()
    # threads never change a result: a [compute] section is accepted (it was refused as "needs a new deconvolution")
    threads = tmp_path / "threads.toml"
    threads.write_text("[compute]\nworkers = 1\n")
    r = _cli("recompute", str(new), "--config", str(threads), "--out_dir", str(tmp_path / "one_thread"))
    assert r.returncode == 0, r.stderr
    one = json.loads((tmp_path / "one_thread" / "metrics.json").read_text())
    # (the config names no thresholds, so the defaults: those of the original run)
    assert one["core_ml"] == orig["core_ml"] and one["hypoperfusion_ml"] == orig["hypoperfusion_ml"]
    r = _cli("recompute", str(new), "--out_dir", str(new))
    assert r.returncode == 2 and "must differ" in r.stderr


def test_recompute_with_a_contrast_to_noise_limit_above_the_study(study, tmp_path):
    """thresholds.core_min_contrast_to_noise decides on the saved maps: above the study's ratio the core and what
    rests on it are null with the reason (the rCBF map is kept); 0 measures it again, as in the original run."""
    import nibabel as nib

    orig = study["metrics"]
    assert orig["qa_values"]["contrast_to_noise"] >= Thresholds().core_min_contrast_to_noise
    assert orig["core_ml"] is not None
    assert orig["qa_flags"]["core_noise_limited"] is False
    cfg = tmp_path / "t.toml"
    cfg.write_text("[thresholds]\ncore_min_contrast_to_noise = 1000\n")
    new = tmp_path / "strict"
    r = _cli("recompute", str(study["out"]), "--config", str(cfg), "--out_dir", str(new))
    assert r.returncode == 0, r.stderr
    m = json.loads((new / "metrics.json").read_text())
    assert m["qa_flags"]["core_noise_limited"] is True
    for key in ("core_ml", "penumbra_ml", "Mismatch_Ratio", "DEFUSE3_eligible", "EXTEND_eligible"):
        assert m[key] is None and "contrast-to-noise ratio" in m[f"{key}_reason"], key
    assert m["hypoperfusion_ml"] == orig["hypoperfusion_ml"]
    assert not np.asarray(nib.load(new / "core_mask_rcbf30.nii.gz").dataobj).any()
    assert np.isfinite(np.asarray(nib.load(new / "rcbf.nii.gz").dataobj)).any()
    assert "core_noise_limited" in r.stdout
    cfg.write_text("[thresholds]\ncore_min_contrast_to_noise = 0\n")
    r = _cli("recompute", str(new), "--config", str(cfg), "--out_dir", str(tmp_path / "any"))
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "any" / "metrics.json").read_text())
    assert m["core_ml"] == orig["core_ml"] and m["qa_flags"]["core_noise_limited"] is False


def test_recompute_with_lesion_limits_above_the_study(study, tmp_path):
    """thresholds.lesion_min_observed_after_peak_s / core_min_observed_after_peak_s decide on the saved maps too (the
    TTP map and the acquisition's end): above the study's value nothing / no core is reported, with the reason; the
    penumbra mask is then empty as well."""
    import nibabel as nib

    orig = study["metrics"]
    observed = orig["qa_values"]["lesion_observed_after_peak_s"]
    assert observed >= Thresholds().core_min_observed_after_peak_s and orig["qa_flags"]["lesion_unmeasured"] is False
    cfg = tmp_path / "t.toml"
    cfg.write_text(f"[thresholds]\ncore_min_observed_after_peak_s = {observed + 1:.1f}\n")
    r = _cli("recompute", str(study["out"]), "--config", str(cfg), "--out_dir", str(tmp_path / "core"))
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "core" / "metrics.json").read_text())
    assert m["qa_flags"]["core_truncated"] and m["core_ml"] is None and m["penumbra_ml"] is None
    assert m["hypoperfusion_ml"] == orig["hypoperfusion_ml"] and "core_truncated" in r.stdout
    assert not np.asarray(nib.load(tmp_path / "core" / "penumbra_mask.nii.gz").dataobj).any()
    cfg.write_text(f"[thresholds]\nlesion_min_observed_after_peak_s = {observed + 1:.1f}\n")
    r = _cli("recompute", str(study["out"]), "--config", str(cfg), "--out_dir", str(tmp_path / "none"))
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "none" / "metrics.json").read_text())
    assert m["qa_flags"]["lesion_unmeasured"] and m["hypoperfusion_ml"] is None and m["HIR"] is None
    assert not np.asarray(nib.load(tmp_path / "none" / "hypoperf_mask_tmax6.nii.gz").dataobj).any()
    # the venous transit needs the bolus, not the lesion: kept while the venous outflow is not cut (since 2.18)
    assert not m["qa_flags"]["acquisition_truncated"]
    for key in ("aif_ttp_s", "vof_ttp_s", "PVT_sec", "sinus_tmax_s", "PVT_present"):
        assert m[key] is not None and m[key] == orig[key] and f"{key}_reason" not in m, key


def test_in_place_recompute_replaces_the_set_and_fail_on_qa(study, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(study["out"], copy)
    (copy / "qa" / "stale_from_an_old_run.png").write_text("stale")
    man = json.loads((copy / MANIFEST).read_text())
    man["files"].append("qa/stale_from_an_old_run.png")
    (copy / MANIFEST).write_text(json.dumps(man))
    (copy / "reading_notes.txt").write_text("mine")
    analysis = json.loads((copy / "aux" / "analysis.json").read_text())
    analysis["qa_flags"] = {**analysis["qa_flags"], "vof_unreliable": True}
    (copy / "aux" / "analysis.json").write_text(json.dumps(analysis))
    r = _cli("recompute", str(copy), "--fail-on-qa")
    assert r.returncode == 3 and "QA flag vof_unreliable" in r.stdout and "--fail-on-qa" in r.stderr
    assert not (copy / "qa" / "stale_from_an_old_run.png").exists()
    assert (copy / "reading_notes.txt").read_text() == "mine"
    assert json.loads((copy / "metrics.json").read_text())["qa_flags"]["vof_unreliable"] is True


def test_aggregate_rows_carry_study_id(study, tmp_path):
    from ctperf.utils.aggregate_metrics import collect

    df = collect(study["out"].parent)
    assert list(df.columns[:2]) == ["study", "study_id"]
    assert study["metrics"]["study_id"] in set(df["study_id"])


def test_mode_b_into_a_mode_a_folder_is_refused(study):
    before = _tree_hashes(study["out"])
    r = _cli("maps", "--mip", "m.png", "--tmax", "t.nii.gz", "--cbv", "c.nii.gz", "--rcbf", "r.nii.gz",
             "--aif_csv", "a.csv", "--vof_csv", "v.csv", "--out_dir", str(study["out"]))
    assert r.returncode == 2 and "holds a Mode A result" in r.stderr and "--overwrite" in r.stderr
    assert _tree_hashes(study["out"]) == before


def test_pdf_header_names_the_study(study):
    from ctperf.viz import report
    from ctperf.pipeline import lesions_and_indices, load_saved_result
    from ctperf.viz.raster import Canvas

    class Recorder(Canvas):  # the page drawn at low resolution, every text kept
        texts: list[str] = []

        def text(self, x, y, s, *args, **kwargs):
            self.texts.append(s)
            return super().text(x, y, s, *args, **kwargs)

    perf, roi, contra, prov = load_saved_result(study["out"])
    res = lesions_and_indices(perf, Config(), roi, contra, prov)
    page = Recorder(*report.A4_IN, 30)
    report.build_page(page, perf, res.lesion, study["metrics"])
    texts = " ".join(page.texts)
    assert f"study {study['metrics']['study_id']}" in texts


def test_writable_folder_in_a_read_only_place(tmp_path, monkeypatch):
    """An existing, writable --out_dir whose parent cannot be written (a shared read-only mount with a user folder in
    it): the result is staged inside the folder itself and moved into place; nothing hidden is left behind.
    (Simulated: as root, folder permissions are not enforced.)"""
    import errno

    import ctperf.io.outdir as outdir

    out = tmp_path / "ro_parent" / "results"
    out.mkdir(parents=True)
    (out / "notes.txt").write_text("mine")
    made = outdir._new_hidden_dir

    def no_parent(where, prefix):
        if Path(where).resolve() == out.parent.resolve():
            raise PermissionError(errno.EACCES, "Permission denied")
        return made(where, prefix)

    monkeypatch.setattr(outdir, "_new_hidden_dir", no_parent)
    check_output_dir(out, mode="A")
    for text in ("one", "two"):  # a first result, then one that replaces it
        with atomic_output_dir(out, mode="A") as tmp:
            assert tmp.parent == out
            (tmp / "metrics.json").write_text(json.dumps({"mode": "A", "run": text}))
    assert json.loads((out / "metrics.json").read_text())["run"] == "two"
    assert sorted(p.name for p in out.iterdir()) == sorted([MANIFEST, "metrics.json", "notes.txt"])
    with pytest.raises(InputError, match="cannot write"):
        check_output_dir(out.parent / "new_folder", mode="A")  # a new folder there needs the parent
