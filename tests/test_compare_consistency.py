"""`ctperf compare` / `ctperf prr` agree with the studies they read (review 46, findings 1, 2, 6, 11).

- compare refuses an --out_dir holding an analysis result (it would replace it with its own files) unless
  --overwrite; an earlier compare result is replaced.
- A hypoperfusion volume one study withheld (null in its metrics.json) makes every value resting on it null with a
  reason naming that study and its own reason, never a number read from an emptied mask or an unmeasurable Tmax map.
- prr refuses studies made with different definitions, as compare does, unless --force (recorded).
- followup_tmax_on_baseline.nii.gz keeps NaN for unknown and is described like tmax.nii.gz.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cohort_data import FAST_CONFIG, write_small_study

pytest.importorskip("SimpleITK", reason="the cohort extra (SimpleITK) is not installed")

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src")}


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    """A baseline with a left MCA lesion, a follow-up without lesion, and a study whose lesion is unmeasurable
    (45 HU noise: no usable bolus, hypoperfusion_ml null), all with the default thresholds."""
    from ctperf.config import Config
    from ctperf.pipeline import run_dicom_folder

    root = tmp_path_factory.mktemp("compare_consistency")
    cfg = Config.from_dict(FAST_CONFIG)
    specs = {"base": dict(seed=0), "fu": dict(seed=1, lesion=None), "noisy": dict(seed=2, noise_hu=45.0)}
    for name, kw in specs.items():
        write_small_study(root / name / "dicom", n_slices=6, **kw)
        run_dicom_folder(root / name / "dicom", root / name / "out", cfg)
    noisy = json.loads((root / "noisy" / "out" / "metrics.json").read_text())
    assert noisy["hypoperfusion_ml"] is None and noisy["hypoperfusion_ml_reason"]
    return root


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "ctperf.cli", *args], capture_output=True, text=True, env=ENV)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


SPLIT_KEYS = ("reperfused_ml", "persistent_hypoperfusion_ml", "not_covered_ml", "reperfusion_percent",
              "new_hypoperfusion_ml")


# ------------------------------------------------------------------------------------------- 1. --out_dir guard
@pytest.mark.slow
def test_compare_refuses_an_analysis_folder_unless_overwrite(studies, tmp_path):
    target = tmp_path / "fu_copy"
    shutil.copytree(studies / "fu" / "out", target)
    before = _snapshot(target)
    args = ("compare", "--baseline", str(studies / "base" / "out"), "--followup", str(target), "--out_dir",
            str(target))
    r = _cli(*args)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Mode A result" in r.stderr and "--overwrite" in r.stderr
    assert _snapshot(target) == before
    r = _cli(*args, "--overwrite")
    assert r.returncode == 0, r.stderr
    assert (target / "compare.json").is_file() and not (target / "metrics.json").exists()
    # an earlier compare result is replaced as before, without --overwrite
    r = _cli("compare", "--baseline", str(studies / "base" / "out"), "--followup", str(studies / "fu" / "out"),
             "--out_dir", str(target))
    assert r.returncode == 0, r.stderr
    assert json.loads((target / "compare.json").read_text())["maps_compared"] is True


def test_compare_refuses_a_mode_b_folder(tmp_path):
    from ctperf.errors import InputError
    from ctperf.workflows.compare import check_compare_out_dir

    mode_b = tmp_path / "mb"
    mode_b.mkdir()
    (mode_b / "metrics.json").write_text("{}")
    (mode_b / "ctperf_manifest.json").write_text(json.dumps({"mode": "B", "files": ["metrics.json"]}))
    with pytest.raises(InputError, match="holds a Mode B result"):
        check_compare_out_dir(mode_b)
    check_compare_out_dir(mode_b, overwrite=True)
    legacy = tmp_path / "legacy"  # an old analysis folder: metrics.json without a mode, no manifest
    legacy.mkdir()
    (legacy / "metrics.json").write_text("{}")
    with pytest.raises(InputError, match="holds an analysis result"):
        check_compare_out_dir(legacy)
    check_compare_out_dir(tmp_path / "new")  # a new or empty folder is fine
    assert sorted(p.name for p in mode_b.iterdir()) == ["ctperf_manifest.json", "metrics.json"]


# ----------------------------------------------------------------------------------- 2. withheld hypoperfusion
def _compare_capturing_title(monkeypatch, baseline, followup, out_dir):
    import ctperf.viz.compare_figure as figure
    from ctperf.workflows.compare import compare_studies

    titles = []
    original = figure.reperfusion_figure

    def capture(*args, **kwargs):
        titles.append(args[4])
        return original(*args, **kwargs)

    monkeypatch.setattr(figure, "reperfusion_figure", capture)
    return compare_studies(baseline, followup, out_dir), titles[0]


def _masks_empty(out_dir: Path) -> bool:
    from ctperf.io.nifti import load_volume

    return all(load_volume(out_dir / f)[0].sum() == 0
               for f in ("reperfusion_mask.nii.gz", "persistent_hypoperfusion_mask.nii.gz",
                         "new_hypoperfusion_mask.nii.gz"))


@pytest.mark.slow
def test_withheld_followup_gives_no_split(studies, tmp_path, monkeypatch):
    reason = json.loads((studies / "noisy" / "out" / "metrics.json").read_text())["hypoperfusion_ml_reason"]
    doc, title = _compare_capturing_title(monkeypatch, studies / "base" / "out", studies / "noisy" / "out",
                                          tmp_path / "c")
    assert doc["baseline_hypoperfusion_ml"] > 20 and doc["followup_hypoperfusion_ml"] is None
    assert doc["maps_compared"] is True
    for key in (*SPLIT_KEYS, "PRR_percent"):
        assert doc[key] is None, key
        assert doc[f"{key}_reason"] == f"follow-up hypoperfusion not measured: {reason}", key
    assert "mL" not in title and "n/a" in title and "follow-up hypoperfusion not measured" in title
    assert _masks_empty(tmp_path / "c")
    assert json.loads((tmp_path / "c" / "compare.json").read_text()) == doc


@pytest.mark.slow
def test_withheld_baseline_is_not_reported_as_absent(studies, tmp_path, monkeypatch):
    reason = json.loads((studies / "noisy" / "out" / "metrics.json").read_text())["hypoperfusion_ml_reason"]
    doc, title = _compare_capturing_title(monkeypatch, studies / "noisy" / "out", studies / "fu" / "out",
                                          tmp_path / "c")
    for key in (*SPLIT_KEYS, "PRR_percent"):
        assert doc[key] is None, key
        assert doc[f"{key}_reason"] == f"baseline hypoperfusion not measured: {reason}", key
    assert "field of view" not in json.dumps(doc)
    assert "mL" not in title and "baseline hypoperfusion not measured" in title
    assert _masks_empty(tmp_path / "c")


@pytest.mark.slow
def test_measurable_pair_keeps_its_numbers(studies):
    from ctperf.workflows.compare import compare_studies

    doc = compare_studies(studies / "base" / "out", studies / "fu" / "out")
    assert all(doc[k] is not None for k in ("PRR_percent", *SPLIT_KEYS))
    assert not any(k.endswith("_reason") for k in doc)
    split = doc["reperfused_ml"] + doc["persistent_hypoperfusion_ml"] + doc["not_covered_ml"]
    assert split == pytest.approx(doc["baseline_hypoperfusion_ml"], abs=0.05)


# --------------------------------------------------------------------------------------- 3. prr's definitions
def _metrics(folder: Path, volume, thr: float, version: str = "2.18", reason: str | None = None) -> Path:
    folder.mkdir()
    doc = {"definition_version": version, "hypoperfusion_ml": volume, "thresholds": {"tmax_hypoperfusion_s": thr}}
    if reason:
        doc["hypoperfusion_ml_reason"] = reason
    (folder / "metrics.json").write_text(json.dumps(doc))
    return folder


def test_prr_refuses_different_definitions_unless_forced(tmp_path):
    base, fu8 = _metrics(tmp_path / "b", 43.9, 6.0), _metrics(tmp_path / "f8", 23.3, 8.0)
    r = _cli("prr", str(base), str(fu8))
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert "tmax_hypoperfusion_s: 6.0 vs 8.0" in r.stderr and "--force" in r.stderr
    fuv = _metrics(tmp_path / "fv", 23.3, 6.0, version="2.17")
    r = _cli("prr", str(base), str(fuv))
    assert r.returncode == 2 and "definition_version: 2.18 vs 2.17" in r.stderr
    r = _cli("prr", str(base), str(fu8), "--force", "--output", str(tmp_path / "prr.json"))
    assert r.returncode == 0, r.stderr
    assert "warning: compared despite different definitions" in r.stderr
    doc = json.loads((tmp_path / "prr.json").read_text())
    assert doc == json.loads(r.stdout)
    assert doc["forced"] is True and doc["definition_differences"] == ["thresholds.tmax_hypoperfusion_s: 6.0 vs 8.0"]
    assert doc["PRR_percent"] == pytest.approx(46.924, abs=1e-3)
    assert doc["definition_version"] == "2.18" and doc["thresholds"] == {"tmax_hypoperfusion_s": 6.0}


def test_prr_names_the_withheld_study(tmp_path):
    base = _metrics(tmp_path / "b", 43.9, 6.0)
    fu = _metrics(tmp_path / "f", None, 6.0, reason="no usable bolus")
    r = _cli("prr", str(base), str(fu))
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["PRR_percent"] is None and doc["forced"] is False and doc["definition_differences"] == []
    assert doc["PRR_percent_reason"] == "follow-up hypoperfusion not measured: no usable bolus"


# ------------------------------------------------------------------------------ 4. follow-up Tmax on the baseline
@pytest.mark.slow
def test_followup_tmax_on_baseline_keeps_nan_for_unknown(studies, tmp_path):
    import nibabel as nib

    from ctperf.io.nifti import load_volume

    r = _cli("compare", "--baseline", str(studies / "base" / "out"), "--followup", str(studies / "fu" / "out"),
             "--out_dir", str(tmp_path / "c"))
    assert r.returncode == 0, r.stderr
    path = tmp_path / "c" / "followup_tmax_on_baseline.nii.gz"
    tmax, _ = load_volume(path)
    tissue, _ = load_volume(studies / "base" / "out" / "aux" / "tissue_mask.nii.gz")
    assert np.isnan(tmax[tissue < 0.5]).mean() > 0.9  # outside the head: unknown, not 0 s
    assert np.isfinite(tmax[tissue > 0.5]).mean() > 0.9
    own = nib.load(studies / "fu" / "out" / "tmax.nii.gz").header["descrip"]
    assert nib.load(path).header["descrip"] == own == b"ctperf Tmax s"
