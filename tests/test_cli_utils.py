"""CLI error behaviour, atomic output writing and cohort aggregation."""

import json
import re
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from ctperf.io.outdir import atomic_output_dir
from ctperf.utils.aggregate_metrics import aggregate

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "ctperf.cli", *args], capture_output=True, text=True, cwd=cwd)


def assert_analysed_line(log: str) -> None:
    """log.txt's second line is ``analysed: <UTC date and time, ISO 8601>``, of a run that just ended, and the only
    such line (the log's records are local times without a date)."""
    lines = log.splitlines()
    assert lines[1].startswith("analysed: ") and sum(ln.startswith("analysed:") for ln in lines) == 1, lines[:3]
    stamp = lines[1].removeprefix("analysed: ")
    when = datetime.fromisoformat(stamp)
    assert stamp.endswith("Z") and when.utcoffset() == timedelta(0), stamp
    assert timedelta(0) <= datetime.now(timezone.utc) - when < timedelta(hours=1), stamp


def test_version_and_help():
    r = _cli("--version")
    assert r.returncode == 0 and r.stdout.startswith("ctperf ")
    r = _cli("--help")
    assert r.returncode == 0 and "Research use only" in r.stdout


def test_missing_folder_is_one_line_error(tmp_path):
    r = _cli("run", "--dicom_dir", str(tmp_path / "nope"), "--out_dir", str(tmp_path / "o"))
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("args", [("run", "--bogus"), ("run",), ("nosuch",), ("run", "--dicom_dir", "d",
                                  "--out_dir", "o", "--fail-on-qa", "true"), ("demo", "o", "--noise-hu", "abc")])
def test_usage_errors_are_one_line(args, tmp_path):
    """Unknown option, missing option, unknown command, a value given to a flag, a bad number: one ctperf: error:
    line naming the command's --help, exit code 2, as every other refusal (no boxed message, no traceback)."""
    r = _cli(*args, cwd=tmp_path)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert lines[0].startswith("ctperf: error: ") and "--help" in lines[0] and "\u256d" not in r.stderr


def test_error_text_is_not_read_as_markup(tmp_path):
    """A folder named with [brackets] is named as it is (the message is text, not rich markup)."""
    r = _cli("run", "--dicom_dir", str(tmp_path / "scan[red]"), "--out_dir", str(tmp_path / "o"))
    assert r.returncode == 2 and "scan[red]" in r.stderr


def test_flags_show_no_value_type_in_help():
    r = _cli("run", "--help")
    assert r.returncode == 0 and "--fail-on-qa" in r.stdout and "<bool>" not in r.stdout


def test_seed_compatible_entry_point_usage(tmp_path):
    """`python ct_perfusion_auto.py --help` shows its own usage (no `run`), and its usage errors are one line."""
    script = str(ROOT / "ct_perfusion_auto.py")
    r = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "ct_perfusion_auto.py [OPTIONS]" in r.stdout and " run " not in r.stdout
    r = subprocess.run([sys.executable, script], capture_output=True, text=True, cwd=tmp_path)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1 and "--dicom_dir" in lines[0], r.stderr


def test_atomic_dir_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with atomic_output_dir(target) as tmp:
            (tmp / "half.nii.gz").write_text("x")
            raise RuntimeError("boom")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []
    with atomic_output_dir(target) as tmp:
        (tmp / "a.txt").write_text("1")
    with atomic_output_dir(target) as tmp:
        (tmp / "b.txt").write_text("2")
    # a run owns its folder's ctperf files: a.txt came from the previous run and is replaced by the new set
    assert sorted(p.name for p in target.iterdir()) == ["b.txt", "ctperf_manifest.json"]


def test_aggregate(tmp_path):
    for i in range(3):
        d = tmp_path / f"s{i}"
        d.mkdir()
        (d / "metrics.json").write_text(json.dumps({"core_ml": i, "qa_flags": {"poor_aif": False}}))
    n = aggregate(tmp_path, tmp_path / "summary.csv")
    assert n == 3
    text = (tmp_path / "summary.csv").read_text()
    assert "qa_flags.poor_aif" in text and "s2" in text
    r = subprocess.run([sys.executable, "-m", "ctperf.utils.aggregate_metrics", "--input_dir", str(tmp_path),
                        "--output", str(tmp_path / "s.csv")], capture_output=True, text=True)
    assert r.returncode == 0 and (tmp_path / "s.csv").exists()
    r = subprocess.run([sys.executable, "-m", "ctperf.utils.aggregate_metrics", "--input_dir",
                        str(tmp_path / "none")], capture_output=True, text=True)
    assert r.returncode != 0 and "Traceback" not in r.stderr


def test_inspect_json_and_table(tmp_path):
    import numpy as np

    from ctperf.synthetic.dicom_writer import DicomLayout, write_ctp_dicom

    t, z = 6, 3
    hu = np.full((t, z, 16, 16), 30.0, np.float32)
    hu += np.arange(t, dtype=np.float32)[:, None, None, None]
    times = np.repeat(np.arange(t, dtype=float)[:, None] * 1.5, z, axis=1)
    aff = np.array([[-1.0, 0, 0, 10], [0, -1.0, 0, 20], [0, 0, 5.0, -30], [0, 0, 0, 1]])
    write_ctp_dicom(hu, times, aff, tmp_path / "d", layout=DicomLayout(vendor="ge", extra_series=True))
    r = _cli("inspect", str(tmp_path / "d"), "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout, parse_constant=lambda c: pytest.fail(c))
    assert info["shape_xyzt"] == [16, 16, 3, 6]
    assert info["frame_times_s"][0] == 0 and info["frame_times_s"][-1] == pytest.approx(7.5)
    assert len(info["affine_ras"]) == 4 and info["manufacturer"]
    assert info["series_instance_uids"]
    assert "PHANTOM" not in r.stdout
    r = _cli("inspect", str(tmp_path / "d"))
    assert r.returncode == 0 and "CTP" in r.stdout
    r = _cli("inspect", str(tmp_path / "empty_nonexistent"))
    assert r.returncode != 0 and "Traceback" not in r.stderr


def test_demo_runs_without_a_terminal(tmp_path):
    """The README's first command, as CI and pipes run it (no TTY, and with -q); its numbers against the phantom's
    truth as the README quotes them (engine 2.11: core 22.3 against 24.7 mL, Tmax > 6 s 103.6 against 100.0 mL,
    HIR 0.24 against 0.24)."""
    r = _cli("demo", str(tmp_path / "out"), "-q")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out" / "metrics.json").is_file() and (tmp_path / "out" / "report.pdf").is_file()
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    truth = json.loads((tmp_path / "out" / "demo_input" / "truth" / "truth.json").read_text())
    assert abs(m["core_ml"] - truth["core_ml"]) <= 3.0, (m["core_ml"], truth["core_ml"])
    assert m["hypoperfusion_ml"] == pytest.approx(truth["hypoperfusion_ml"], rel=0.10)
    assert m["HIR"] == pytest.approx(truth["HIR"], rel=0.10)
    # the note under the table says which truth map the CBF map estimates, naming only truth files the demo wrote
    text = " ".join(r.stdout.split())
    assert "compare it with truth_cbf_apparent.nii.gz" in text and "above truth_mtt.nii.gz" in text, r.stdout
    named = set(re.findall(r"truth_\w+\.nii\.gz", text))
    assert named == {"truth_cbf_apparent.nii.gz", "truth_cbf.nii.gz", "truth_mtt.nii.gz"}
    assert all((tmp_path / "out" / "demo_input" / "truth" / f).is_file() for f in named)
    # log.txt is dated once, at the top: UTC date and time of the analysis, ISO 8601
    assert_analysed_line((tmp_path / "out" / "log.txt").read_text())
    r = _cli("demo", str(tmp_path / "out2"), "--lesion", "middle")
    assert r.returncode == 2 and "--lesion" in r.stderr and not (tmp_path / "out2").exists()


def test_output_folder_as_option_too(tmp_path):
    """`ctperf phantom` (and `ctperf demo`) take the output folder as OUT_DIR or as --out_dir, like `ctperf run`;
    neither, or two different folders, is a one-line error before anything is written."""
    r = _cli("phantom", "--out_dir", str(tmp_path / "ph"), "-q", "--matrix", "64", "--n-slices", "2")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "ph" / "truth").is_dir() and any((tmp_path / "ph" / "dicom").rglob("*"))
    for args in (("demo", "-q"), ("phantom", "-q"), ("demo", str(tmp_path / "a"), "--out_dir", str(tmp_path / "b"))):
        r = _cli(*args, cwd=tmp_path)
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert r.returncode == 2 and len(lines) == 1 and "output folder" in lines[0], r.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.parametrize("text, fragment", [
    ("[deconvolution]\nmethod = 'tikhonv'\n", "must be one of"),
    ("[thresholds]\nrcbf_core = '0.3'\n", "must be a number"),
    ("[thresholds]\ntmax_levels_s = 5\n", "list of numbers"),
    ("[thresholds]\ncore_requires_tmax = 1\n", "true or false"),
])
def test_bad_config_values_are_one_line_errors(tmp_path, text, fragment):
    cfg = tmp_path / "c.toml"
    cfg.write_text(text)
    r = _cli("run", "--dicom_dir", str(tmp_path), "--out_dir", str(tmp_path / "o"), "--config", str(cfg))
    assert r.returncode == 2 and fragment in r.stderr and "Traceback" not in r.stderr


def test_output_path_problems_are_reported_before_analysis(tmp_path):
    (tmp_path / "afile").write_text("x")
    r = _cli("run", "--dicom_dir", str(tmp_path), "--out_dir", str(tmp_path / "afile"))
    assert r.returncode == 2 and "existing file" in r.stderr


def test_prr(tmp_path):
    from ctperf.analysis.indices import prr_percent

    assert prr_percent(100.0, 25.0) == (75.0, None)
    assert prr_percent(0.0, 5.0)[0] is None
    for name, vol in (("base", 80.0), ("fu", 20.0)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(json.dumps({"hypoperfusion_ml": vol}))
    r = _cli("prr", str(tmp_path / "base"), str(tmp_path / "fu"), "--output", str(tmp_path / "prr.json"))
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "prr.json").read_text())["PRR_percent"] == 75.0
    r = _cli("prr", str(tmp_path / "base"), str(tmp_path / "nope"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
