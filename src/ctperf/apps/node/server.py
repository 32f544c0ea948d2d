"""Run the node: receiver + analyser + sender threads around the persistent queue; graceful SIGTERM."""

from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path
from typing import Any

from ctperf.apps.node.queue import StudyQueue
from ctperf.apps.node.settings import NodeSettings
from ctperf.core.qa_text import short_reason
from ctperf.errors import CTPerfError, InputError

log = logging.getLogger("ctperf.node")


def require_pynetdicom() -> None:
    try:
        import pynetdicom  # noqa: F401 - availability check
    except ImportError:
        raise InputError("the DICOM node needs pynetdicom and highdicom: pip install 'ctperf[node]'") from None


def _setup_logging(settings: NodeSettings) -> None:
    """Node log to ``<out>/node.log`` and stderr (study keys only, never patient identifiers)."""
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s")
    log.handlers.clear()
    for h in (logging.FileHandler(settings.log_path, encoding="utf-8"), logging.StreamHandler()):
        h.setFormatter(fmt)
        log.addHandler(h)
    log.setLevel(logging.INFO)
    log.propagate = False
    logging.getLogger("pynetdicom").setLevel(logging.ERROR)  # its INFO/DEBUG lines can dump dataset elements


def analyse_one(key: str, settings: NodeSettings, cfg) -> tuple[bool, str | None]:
    """Mode A with DICOM outputs on one spooled study; (ok, reason). Never raises for bad input."""
    from ctperf.pipeline import run_dicom_folder

    try:
        result = run_dicom_folder(settings.spool / key, settings.results / key, cfg, dicom_out=True)
    except CTPerfError as exc:
        return False, str(exc)
    except MemoryError:
        return False, "out of memory for this study"
    except Exception as exc:  # noqa: BLE001 - one bad study must never stop the node
        return False, f"internal error {type(exc).__name__} (please report it)"
    return True, volumes_text(result.metrics)


def volumes_text(metrics: dict) -> str:
    """The node's one-line summary of a result (log, --status): core and hypoperfusion in mL, or "n/a" with the
    short reason of a withheld value (never "None mL")."""
    parts = []
    for key, name in (("core_ml", "core"), ("hypoperfusion_ml", "hypoperfusion")):
        value = metrics.get(key)
        parts.append(f"{name} {value:.1f} mL" if isinstance(value, (int, float)) else
                     f"{name} n/a ({short_reason(metrics.get(f'{key}_reason')) or 'not measured'})")
    return ", ".join(parts)


def _analyser(settings: NodeSettings, queue: StudyQueue, stop: threading.Event, cfg) -> None:
    while not stop.is_set():
        queue.promote_quiet(settings.quiet_s)
        key = queue.take("queued", "analysing")
        if key is None:
            stop.wait(settings.poll_s)
            continue
        log.info("study %s: analysis started", key)
        t0 = time.perf_counter()
        ok, reason = analyse_one(key, settings, cfg)
        queue.finish_analysis(key, ok, reason, forward=settings.forward is not None)
        if ok:
            log.info("study %s: analysed in %.1f s (%s)", key, time.perf_counter() - t0, reason)
        else:
            log.warning("study %s: analysis failed, instances kept in the spool: %s", key, reason)


def _sender(settings: NodeSettings, queue: StudyQueue, stop: threading.Event) -> None:
    from ctperf.apps.node.forward import send_files
    from ctperf.io.dicom_out import DICOM_DIR

    while not stop.is_set():
        key = queue.take("analysed", "sending", "AND next_send <= ?", (time.time(),))
        if key is None:
            stop.wait(settings.poll_s)
            continue
        files = sorted((settings.results / key / DICOM_DIR).glob("*.dcm"))
        reason = send_files(files, settings.forward, settings.ae_title)
        state = queue.send_result(key, reason is None, reason, settings.retries, settings.retry_delay_s)
        if state == "sent":
            log.info("study %s: %d result objects sent to %s", key, len(files), settings.forward)
        elif state == "parked":
            log.error("study %s: sending failed %d times, results parked in %s: %s", key, settings.retries,
                      settings.results / key, reason)
        else:
            log.warning("study %s: sending failed, will retry: %s", key, reason)


def _remove_partial_files(settings: NodeSettings) -> None:
    """Delete what an interrupted run left half-written: spool ``.part`` files and temporary result folders."""
    import shutil

    settings.spool.mkdir(parents=True, exist_ok=True)
    for p in settings.spool.glob(".*.part"):
        p.unlink(missing_ok=True)
    for p in settings.results.glob(".*.ctperf-tmp-*"):
        shutil.rmtree(p, ignore_errors=True)


def run_node(settings: NodeSettings, cfg=None, ready: threading.Event | None = None) -> None:
    """Serve until SIGTERM/SIGINT (from the main thread) or until ``settings.extra['stop']`` is set.

    On stop: no new associations, the running analysis and send finish, the queue is closed.
    """
    from ctperf.apps.node.scp import start_server
    from ctperf.config import Config
    from ctperf.io.dicom_out import require_highdicom

    require_pynetdicom()
    require_highdicom()
    cfg = cfg or Config()
    settings.out.mkdir(parents=True, exist_ok=True)
    settings.results.mkdir(parents=True, exist_ok=True)
    _setup_logging(settings)
    _remove_partial_files(settings)
    queue = StudyQueue(settings.db_path)
    recovered = queue.recover(settings.results, forward=settings.forward is not None)
    if any(recovered.values()):
        log.info("restart: %s", recovered)
    stop: threading.Event = settings.extra.get("stop") or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    try:
        server = start_server(settings, queue)
    except OSError as exc:
        queue.close()
        raise InputError(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}") from None
    workers = [threading.Thread(target=_analyser, args=(settings, queue, stop, cfg), name="analyser", daemon=True)]
    if settings.forward is not None:
        workers.append(threading.Thread(target=_sender, args=(settings, queue, stop), name="sender", daemon=True))
    for w in workers:
        w.start()
    log.info("ctperf node %s listening on %s:%d (forward: %s, allowed callers: %s)", settings.ae_title,
             settings.host, settings.port, settings.forward or "none", ",".join(settings.allow) or "any")
    if ready is not None:
        ready.set()
    try:
        while not stop.wait(settings.poll_s):
            pass
    finally:
        log.info("stopping: no new associations; finishing the running analysis/send")
        server.shutdown()
        stop.set()
        for w in workers:
            w.join()
        queue.close()
        log.info("stopped")


def node_status(out: str | Path) -> dict[str, Any]:
    """Strict-JSON summary of a node's queue (study keys only, no identifiers)."""
    db = Path(out) / "node.sqlite"
    if not db.is_file():
        raise InputError(f"no ctperf node database in {out} (start one with `ctperf node --out {out}`)")
    queue = StudyQueue(db)
    try:
        rows = queue.studies()
        n_instances = queue.n_instances()
    finally:
        queue.close()
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.state] = counts.get(r.state, 0) + 1
    return {"instances": n_instances, "studies": len(rows), "by_state": counts,
            "study_list": [{"key": r.key, "state": r.state, "instances": r.n_instances,
                            "analyses_started": r.analyses_started, "analyses_completed": r.analyses_completed,
                            "send_attempts": r.send_attempts, "reason": r.reason} for r in rows]}
