"""`ctperf aggregate` for cohorts: study ids, stable columns, versions per row, mixed-version warning, xlsx."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from ctperf.utils.aggregate_metrics import aggregate, collect

ROOT = Path(__file__).resolve().parents[1]


def _study(root: Path, rel: str, **doc):
    d = root / rel
    d.mkdir(parents=True)
    base = {"software_version": "0.1.0", "definition_version": "1.0", "mode": "A", "core_ml": 1.0,
            "thresholds": {"tmax_hypoperfusion_s": 6.0}, "qa_flags": {"motion": False}}
    (d / "metrics.json").write_text(json.dumps({**base, **doc}))


def test_ids_columns_and_versions(tmp_path):
    _study(tmp_path, "siteB/p2", HIR=0.3, zzz_extra=1)
    _study(tmp_path, "siteA/p1", hypoperfusion_ml=50.0)
    _study(tmp_path, ".p9.ctperf-tmp-abc", core_ml=99.0)  # an unfinished run's temporary folder
    df = collect(tmp_path)
    assert df["study"].tolist() == ["siteA/p1", "siteB/p2"]
    assert list(df.columns[:5]) == ["study", "study_id", "software_version", "definition_version", "mode"]
    cols = list(df.columns)
    assert cols.index("hypoperfusion_ml") < cols.index("core_ml") < cols.index("HIR") < cols.index("zzz_extra") \
        < cols.index("thresholds.tmax_hypoperfusion_s") < cols.index("qa_flags.motion")
    # same columns in the same order whichever study is read first
    other = tmp_path / "copy"
    _study(other, "a", HIR=0.3, zzz_extra=1)
    _study(other, "b", hypoperfusion_ml=50.0)
    assert list(collect(other).columns) == cols


def test_mixed_versions_warn_and_xlsx(tmp_path):
    pytest.importorskip("openpyxl", reason="the cohort extra (openpyxl) is not installed")
    _study(tmp_path, "p1")
    _study(tmp_path, "p2", definition_version="1.1", thresholds={"tmax_hypoperfusion_s": 8.0})
    warnings = []
    assert aggregate(tmp_path, tmp_path / "out" / "summary.xlsx", warn=warnings.append) == 2
    assert any("definition_version" in w for w in warnings)
    assert any("thresholds.tmax_hypoperfusion_s" in w for w in warnings)
    xl = pd.read_excel(tmp_path / "out" / "summary.xlsx")
    assert xl["definition_version"].astype(str).tolist() == ["1.0", "1.1"]
    assert [f for f in os.listdir(tmp_path / "out")] == ["summary.xlsx"]  # no temporary file left

    r = subprocess.run([sys.executable, "-m", "ctperf.utils.aggregate_metrics", "--input_dir", str(tmp_path),
                        "--output", str(tmp_path / "s.xlsx"), "--format", "xlsx"], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert r.returncode == 0 and "warning" in r.stderr and "definition_version" in r.stderr
    r = subprocess.run([sys.executable, "-m", "ctperf.cli", "aggregate", "--input_dir", str(tmp_path), "--output",
                        str(tmp_path / "s.csv")], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert r.returncode == 0 and "warning" in r.stderr
    assert pd.read_csv(tmp_path / "s.csv")["study"].tolist() == ["p1", "p2"]


def test_shared_study_id_warns_once_naming_the_folders(tmp_path):
    """Two rows with one study_id (the same study analysed twice, or one result in two folders): one warning per id,
    naming the folders; distinct ids and rows without a study_id (older results) raise none."""
    _study(tmp_path, "siteA/p1", study_id="a1b2c3d4e5f60718")
    _study(tmp_path, "siteB/p1_again", study_id="a1b2c3d4e5f60718")
    _study(tmp_path, "siteB/p2", study_id="0000000000000002")
    _study(tmp_path, "old/p3")
    _study(tmp_path, "old/p4")
    warnings = []
    assert aggregate(tmp_path, tmp_path / "summary.csv", warn=warnings.append) == 5
    assert len(warnings) == 1, warnings
    assert "a1b2c3d4e5f60718" in warnings[0] and "siteA/p1, siteB/p1_again" in warnings[0]
    assert "siteB/p2" not in warnings[0] and "old/" not in warnings[0]

    r = subprocess.run([sys.executable, "-m", "ctperf.cli", "aggregate", "--input_dir", str(tmp_path), "--output",
                        str(tmp_path / "s.csv")], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert r.returncode == 0 and r.stderr.count("share study_id") == 1, r.stderr
    assert "siteA/p1" in r.stderr and "siteB/p1_again" in r.stderr
