"""`ctperf batch`: study discovery, failure isolation, resume, a Dask scheduler on loopback, thread safety."""

import csv
import hashlib
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cohort_data import write_corrupt_study, write_fast_config, write_small_study
from ctperf.apps.batch import find_studies

pytest.importorskip("distributed", reason="the cohort extra (dask[distributed]) is not installed")

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "ctperf.cli", *args], capture_output=True, text=True, env=ENV,
                          timeout=timeout)


def _summary(out_root: Path) -> dict[str, dict]:
    with (out_root / "batch_summary.csv").open() as fh:
        return {r["study"]: r for r in csv.DictReader(fh)}


def test_find_studies_any_depth(tmp_path):
    for rel in ("a/p1", "a/p2/ctp", "b"):
        (tmp_path / rel).mkdir(parents=True)
        (tmp_path / rel / "IM1.dcm").write_bytes(b"x")
    (tmp_path / "a" / "notes.txt").write_text("not dicom")
    (tmp_path / "a" / "p2" / "IM0.dcm").write_bytes(b"x")  # loose files beside a study sub-folder
    assert [s.study_id for s in find_studies(tmp_path)] == ["a/p1", "a/p2/ctp", "b"]
    assert [s.study_id for s in find_studies(tmp_path, depth=2)] == ["a/p1", "a/p2"]
    out = tmp_path / "b" / "results"
    (out / "x").mkdir(parents=True)
    (out / "x" / "IM1.dcm").write_bytes(b"x")
    assert "b/results/x" not in [s.study_id for s in find_studies(tmp_path, exclude=out)]


@pytest.mark.slow
def test_batch_isolates_a_corrupt_study_and_resumes(tmp_path):
    cohort, out = tmp_path / "cohort", tmp_path / "out"
    write_small_study(cohort / "site1" / "p0", seed=0)
    write_small_study(cohort / "site1" / "p1", seed=1, lesion=None)
    write_corrupt_study(cohort / "site2" / "broken")
    cfg = write_fast_config(tmp_path / "fast.json")
    args = ("batch", "--input_root", str(cohort), "--out_root", str(out), "--workers", "2", "--config", str(cfg))

    r = _cli(*args)
    assert r.returncode == 1, r.stderr
    rows = _summary(out)
    assert [rows[k]["status"] for k in ("site1/p0", "site1/p1", "site2/broken")] == ["ok", "ok", "failed"]
    assert "DICOM" in rows["site2/broken"]["error"] and str(cohort) not in rows["site2/broken"]["error"]
    assert float(rows["site1/p0"]["hypoperfusion_ml"]) > 0 and float(rows["site1/p0"]["seconds"]) > 0
    assert (out / "site1" / "p0" / "metrics.json").is_file() and (out / "site1" / "p0" / "batch_done.json").is_file()
    assert "Traceback" not in r.stderr

    # resume: p0 is complete (skipped, files untouched); p1 looks half-finished (no completion record): redone
    stamp = (out / "site1" / "p0" / "metrics.json").stat().st_mtime_ns
    (out / "site1" / "p1" / "batch_done.json").unlink()
    r = _cli(*args)
    assert r.returncode == 1
    rows = _summary(out)
    assert [rows[k]["status"] for k in ("site1/p0", "site1/p1", "site2/broken")] == ["skipped", "ok", "failed"]
    assert (out / "site1" / "p0" / "metrics.json").stat().st_mtime_ns == stamp
    assert rows["site1/p0"]["hypoperfusion_ml"] != ""

    # another configuration: nothing is skipped; without the broken study every study succeeds (exit code 0)
    (cfg).write_text(json.dumps({"output": {"write_qa_png": False, "write_pdf": False},
                                 "thresholds": {"tmax_hypoperfusion_s": 8.0}}))
    (cohort / "site2" / "broken" / "IM0000.dcm").unlink()
    for f in (cohort / "site2" / "broken").iterdir():
        f.unlink()
    (cohort / "site2" / "broken").rmdir()
    r = _cli(*args)
    assert r.returncode == 0, r.stderr
    rows = _summary(out)
    assert {k: v["status"] for k, v in rows.items()} == {"site1/p0": "ok", "site1/p1": "ok"}


@pytest.mark.slow
def test_batch_on_a_dask_scheduler_on_loopback(tmp_path):
    """The documented `dask scheduler` / `dask worker` commands, then `ctperf batch --scheduler`."""
    write_small_study(tmp_path / "cohort" / "p0", seed=2)
    cfg = write_fast_config(tmp_path / "fast.json")
    sched_file = tmp_path / "scheduler.json"
    procs = [subprocess.Popen([sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1", "--port", "0",
                               "--no-dashboard", "--scheduler-file", str(sched_file)], env=ENV,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        deadline = time.time() + 60
        while not sched_file.exists() and time.time() < deadline:
            time.sleep(0.2)
        address = json.loads(sched_file.read_text())["address"]
        assert address.startswith("tcp://127.0.0.1:")
        procs.append(subprocess.Popen([sys.executable, "-m", "dask", "worker", address, "--nworkers", "1",
                                       "--nthreads", "1", "--no-dashboard"], env=ENV,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        r = _cli("batch", "--input_root", str(tmp_path / "cohort"), "--out_root", str(tmp_path / "out"),
                 "--scheduler", address, "--config", str(cfg))
        assert r.returncode == 0, r.stderr
        assert _summary(tmp_path / "out")["p0"]["status"] == "ok"
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def test_unreachable_scheduler_is_one_line_error(tmp_path):
    write_corrupt_study(tmp_path / "cohort" / "p0")
    r = _cli("batch", "--input_root", str(tmp_path / "cohort"), "--out_root", str(tmp_path / "out"),
             "--scheduler", "tcp://127.0.0.1:9", timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "scheduler" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_pipeline_runs_in_threads_without_global_changes(tmp_path, monkeypatch):
    """Two studies at once in one process: own log.txt each, no umask probe, logger level and rcParams kept."""
    import matplotlib

    from ctperf.config import Config
    from ctperf.pipeline import run_dicom_folder

    write_small_study(tmp_path / "a", seed=0, n_slices=4)
    write_small_study(tmp_path / "b", seed=1, n_slices=5)

    umask = os.umask(0o022)
    os.umask(umask)

    def no_umask(*_):
        raise AssertionError("os.umask called during a run")

    monkeypatch.setattr(os, "umask", no_umask)
    level = logging.getLogger("ctperf").level
    rc = dict(matplotlib.rcParams)
    cfg = Config.from_dict({"output": {"write_qa_png": True, "write_pdf": True}})
    errors = []

    def run(name):
        try:
            run_dicom_folder(tmp_path / name, tmp_path / f"out_{name}", cfg)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert logging.getLogger("ctperf").level == level
    assert dict(matplotlib.rcParams) == rc
    for name, nz in (("a", 4), ("b", 5)):
        log = (tmp_path / f"out_{name}" / "log.txt").read_text()
        shapes = re.findall(r"shape x,y,z,t=\((\d+), (\d+), (\d+), (\d+)\)", log)
        assert len(shapes) == 1 and int(shapes[0][2]) == nz, log
        assert (tmp_path / f"out_{name}" / "report.pdf").is_file()
        assert (tmp_path / f"out_{name}").stat().st_mode & 0o777 == 0o777 & ~umask


def test_a_result_rethresholded_since_is_not_reported_as_done(tmp_path):
    """`ctperf recompute` in place (or the web app's saved thresholds) replaces metrics.json after the batch: the next
    batch runs the study again instead of listing the other thresholds' volumes as its own (review 46: a Tmax > 8 s
    result was listed as the default configuration's)."""
    from ctperf.apps.batch.discover import Study
    from ctperf.apps.batch.runner import DONE_FILE, completed_row, input_fingerprint

    study_dir, out = tmp_path / "p0", tmp_path / "out"
    study_dir.mkdir()
    (study_dir / "IM0.dcm").write_bytes(b"x")
    out.mkdir()
    (out / "metrics.json").write_text(json.dumps({"hypoperfusion_ml": 43.9}))
    record = {"config_sha256": "k", "input": input_fingerprint(study_dir), "seconds": 1.0,
              "metrics_sha256": hashlib.sha256((out / "metrics.json").read_bytes()).hexdigest()}
    (out / DONE_FILE).write_text(json.dumps(record))
    study = Study(path=study_dir, study_id="p0")
    row = completed_row(study, out, "k")
    assert row["status"] == "skipped" and row["hypoperfusion_ml"] == 43.9
    (out / "metrics.json").write_text(json.dumps({"hypoperfusion_ml": 23.3}))  # re-thresholded in place
    assert completed_row(study, out, "k") is None
    record.pop("metrics_sha256")  # a record from before the result was fingerprinted: run again too
    (out / DONE_FILE).write_text(json.dumps(record))
    assert completed_row(study, out, "k") is None
