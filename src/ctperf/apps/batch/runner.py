"""Run many studies through Mode A on Dask: a local cluster by default, or any Dask distributed scheduler.

One Dask task is one study (:func:`run_study`, executed on a worker).  Each task catches its own errors, so a
failing study is isolated and reported as a row; the others finish.  A study whose output folder already holds a
complete result made with the same configuration and the same input files is skipped (resumable batches); a
half-finished one (no completion record) is run again.  The client writes ``batch_summary.csv``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ctperf.apps.batch.discover import Study, find_studies
from ctperf.errors import CTPerfError, InputError

#: Completion record written into a study's output folder after its results are complete.
DONE_FILE = "batch_done.json"
SUMMARY_FILE = "batch_summary.csv"
#: Metrics copied into the summary (mL).
VOLUME_KEYS = ("hypoperfusion_ml", "core_ml", "penumbra_ml", "mismatch_volume_ml")
SUMMARY_COLUMNS = ("study", "status", "error", "seconds", *VOLUME_KEYS)


@dataclass(frozen=True)
class BatchResult:
    rows: list[dict[str, Any]]
    summary_csv: Path

    @property
    def n_failed(self) -> int:
        return sum(r["status"] == "failed" for r in self.rows)


def config_key(cfg_dict: dict[str, Any]) -> str:
    """SHA-256 of the configuration (canonical JSON): results made with another configuration are redone.  The
    ``compute`` section (threads) does not change results and is left out."""
    settings = {k: v for k, v in cfg_dict.items() if k != "compute"}
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=list).encode()).hexdigest()


def with_threads(cfg_dict: dict[str, Any], threads: int | None) -> dict[str, Any]:
    """``cfg_dict`` with ``compute.workers = threads`` (unchanged when ``threads`` is None)."""
    if threads is None:
        return cfg_dict
    return {**cfg_dict, "compute": {**cfg_dict.get("compute", {}), "workers": int(threads)}}


def input_fingerprint(study_dir: str | Path) -> str:
    """Number and total size of the files of a study (cheap; a changed input folder is run again)."""
    n = size = 0
    for dirpath, _dirs, files in os.walk(study_dir):
        for f in files:
            try:
                size += os.stat(os.path.join(dirpath, f)).st_size
                n += 1
            except OSError:
                continue
    return f"{n} files, {size} bytes"


def completed_row(study: Study, out_dir: Path, key: str) -> dict[str, Any] | None:
    """The summary row of a study already done with this configuration and input, and whose result is still the one
    the batch wrote (``ctperf recompute`` in place, or the web app's saved thresholds, replace metrics.json: then
    the study is run again rather than reported with other thresholds), else None."""
    try:
        done = json.loads((out_dir / DONE_FILE).read_text(encoding="utf-8"))
        raw = (out_dir / "metrics.json").read_bytes()
        metrics = json.loads(raw)
    except (OSError, ValueError):
        return None
    if not isinstance(done, dict) or done.get("config_sha256") != key or not isinstance(metrics, dict):
        return None
    if done.get("input") != input_fingerprint(study.path) or done.get("metrics_sha256") != _sha256(raw):
        return None
    return _row(study.study_id, "skipped", "", done.get("seconds"), metrics)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _row(study_id: str, status: str, error: str, seconds, metrics: dict | None) -> dict[str, Any]:
    row = {"study": study_id, "status": status, "error": error,
           "seconds": None if seconds is None else round(float(seconds), 2)}
    row.update({k: (metrics or {}).get(k) for k in VOLUME_KEYS})
    return row


def run_study(study_dir: str, out_dir: str, study_id: str, cfg_dict: dict[str, Any], key: str) -> dict[str, Any]:
    """Dask task: one study through Mode A; never raises (a failure becomes a ``failed`` row).

    The completion record is removed before and written after the run, so an interrupted run leaves a folder
    that the next batch recognises as unfinished.
    """
    from ctperf.config import Config
    from ctperf.pipeline import run_dicom_folder

    t0 = time.perf_counter()
    out = Path(out_dir)
    try:
        (out / DONE_FILE).unlink(missing_ok=True)
        _remove_stale_temp(out)
        result = run_dicom_folder(study_dir, out, Config.from_dict(cfg_dict))
        seconds = time.perf_counter() - t0
        record = {"config_sha256": key, "input": input_fingerprint(study_dir), "seconds": round(seconds, 3),
                  "metrics_sha256": _sha256((out / "metrics.json").read_bytes()),
                  "software_version": result.metrics.get("software_version"),
                  "definition_version": result.metrics.get("definition_version")}
        (out / DONE_FILE).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
        return _row(study_id, "ok", "", seconds, result.metrics)
    except CTPerfError as exc:
        error = str(exc)
    except MemoryError:
        error = "out of memory for this study"
    except Exception as exc:  # noqa: BLE001 - isolate the study; the batch goes on
        error = f"internal error: {type(exc).__name__}: {' '.join(str(exc).split())}"
    # the summary names studies by their id; the input root may hold names a cohort table should not repeat
    return _row(study_id, "failed", error.replace(str(study_dir), study_id), time.perf_counter() - t0, None)


def _remove_stale_temp(out: Path) -> None:
    """Remove temporary folders an interrupted run of this study left beside its output folder."""
    import shutil

    if out.parent.is_dir():
        for tmp in out.parent.glob(f".{out.name}.ctperf-tmp-*"):
            shutil.rmtree(tmp, ignore_errors=True)


def run_batch(input_root: str | Path, out_root: str | Path, cfg_dict: dict[str, Any], *, workers: int | None = None,
              threads: int | None = None, scheduler: str | None = None, depth: int | None = None,
              on_start: Callable[[int, int], None] | None = None,
              on_result: Callable[[dict[str, Any]], None] | None = None) -> BatchResult:
    """Run every study below ``input_root`` and write ``out_root/batch_summary.csv``.

    Parameters
    ----------
    input_root, out_root : path
        Cohort folder (see :func:`~ctperf.apps.batch.discover.find_studies`) and the output root; study ``S``
        writes into ``out_root/S``.  With a remote scheduler both must be the same paths on every worker
        (a shared file system).
    cfg_dict : dict
        ``Config.to_dict()`` of the run configuration (rebuilt on the workers with ``Config.from_dict``).
    workers : int, optional
        Worker processes of the local cluster (default: the number of CPU cores).  Ignored with ``scheduler``.
    threads : int, optional
        CPU threads of each study (``compute.workers`` of its configuration).  Default on the local cluster:
        cores // worker processes (at least 1), so parallel studies do not oversubscribe the machine; with
        ``scheduler``: the configuration's ``compute.workers`` (None = every core of the worker's machine).
    scheduler : str, optional
        Address of a running Dask scheduler, e.g. ``tcp://10.0.0.5:8786``.
    depth : int, optional
        Study folder depth (see ``find_studies``).
    on_start, on_result : callable, optional
        ``on_start(n_to_run, n_skipped)`` once, ``on_result(row)`` for every study as it finishes (progress).

    Raises
    ------
    InputError
        No studies, unreachable scheduler, or an output root that cannot be written.
    """
    out_root = Path(out_root).resolve()
    studies = find_studies(input_root, exclude=out_root, depth=depth)
    key = config_key(cfg_dict)
    try:
        out_root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot write to {out_root}: {exc.strerror or exc}") from None
    rows: dict[str, dict[str, Any]] = {}
    todo: list[Study] = []
    for s in studies:
        done = completed_row(s, out_root / s.study_id, key)
        if done is None:
            todo.append(s)
        else:
            rows[s.study_id] = done
    if on_start is not None:
        on_start(len(todo), len(rows))
    for row in rows.values():
        if on_result is not None:
            on_result(row)
    if todo:
        for row in _run_on_dask(todo, out_root, cfg_dict, key, workers=workers, threads=threads, scheduler=scheduler):
            rows[row["study"]] = row
            if on_result is not None:
                on_result(row)
    ordered = [rows[s.study_id] for s in studies]
    summary = write_summary(ordered, out_root / SUMMARY_FILE)
    return BatchResult(ordered, summary)


def _run_on_dask(todo: list[Study], out_root: Path, cfg_dict: dict[str, Any], key: str, *, workers: int | None,
                 threads: int | None, scheduler: str | None):
    """Submit one task per study and yield the rows as they finish (a lost worker fails only its study)."""
    import logging

    from distributed import Client, LocalCluster, as_completed

    from ctperf.apps.runtime import configure_process

    cluster = None
    try:
        if scheduler:
            client = Client(scheduler, timeout="10s")
        else:
            n = max(1, workers or os.cpu_count() or 1)
            threads = threads or max(1, (os.cpu_count() or 1) // n)
            # the workers' own logs stay quiet below CRITICAL: a study's failure is reported in its summary row,
            # and at shutdown a worker's heartbeat can race the scheduler's closing and log a traceback
            cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                                   silence_logs=logging.CRITICAL)
            client = Client(cluster)
            client.run(configure_process)  # our own worker processes: the CLI's process settings
    except (OSError, TimeoutError) as exc:
        if cluster is not None:
            cluster.close()
        raise InputError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
    try:
        cfg_dict = with_threads(cfg_dict, threads)
        futures = {client.submit(run_study, str(s.path), str(out_root / s.study_id), s.study_id, cfg_dict, key,
                                 pure=False, retries=0): s for s in todo}
        for fut in as_completed(futures):
            s = futures[fut]
            try:
                row = fut.result()
            except Exception as exc:  # noqa: BLE001 - e.g. KilledWorker: the worker died on this study
                row = _row(s.study_id, "failed", f"worker lost: {type(exc).__name__}: {' '.join(str(exc).split())}",
                           None, None)
            fut.release()
            yield row
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def write_summary(rows: list[dict[str, Any]], path: Path) -> Path:
    """Write the summary CSV atomically (a temporary file renamed into place); rows keep their order."""
    import csv

    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with tmp.open("w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=list(SUMMARY_COLUMNS))
            w.writeheader()
            for row in rows:
                w.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in SUMMARY_COLUMNS})
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise InputError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path
