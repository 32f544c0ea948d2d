"""Background runs (Mode A, Mode B, demo study) with a progress event log that the browser follows over SSE.

One worker thread runs the jobs one after the other (a run already uses the machine's cores); each job records
its events in order, so a client that connects late still sees the whole history.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ctperf.errors import CTPerfError

log = logging.getLogger("ctperf.web")


@dataclass
class Job:
    id: str
    kind: str
    status: str = "queued"  # queued -> running -> done | error
    events: list[dict[str, Any]] = field(default_factory=list)
    result: dict[str, Any] | None = None
    error: str | None = None
    created: float = field(default_factory=time.time)
    _cond: threading.Condition = field(default_factory=threading.Condition, repr=False)

    def emit(self, **event) -> None:
        with self._cond:
            event.setdefault("status", self.status)
            event["t"] = round(time.time() - self.created, 2)
            self.events.append(event)
            self._cond.notify_all()

    def wait_events(self, start: int, timeout: float) -> list[dict[str, Any]]:
        """Events from index ``start`` on, waiting up to ``timeout`` s for a new one."""
        with self._cond:
            if len(self.events) <= start and self.status not in ("done", "error"):
                self._cond.wait(timeout)
            return list(self.events[start:])

    def summary(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "status": self.status, "result": self.result, "error": self.error,
                "last": self.events[-1] if self.events else None}


class JobManager:
    """Queue of jobs run by one worker thread."""

    def __init__(self, max_jobs_kept: int = 200):
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ctperf-web-job")
        self._jobs: dict[str, Job] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._max = max_jobs_kept

    def submit(self, kind: str, fn: Callable[[Job], dict[str, Any]]) -> Job:
        with self._lock:
            job = Job(id=f"j{next(self._ids)}", kind=kind)
            self._jobs[job.id] = job
            for old in list(self._jobs)[:-self._max]:
                self._jobs.pop(old, None)
        job.emit(stage="queued")
        self._pool.submit(self._run, job, fn)
        return job

    def _run(self, job: Job, fn) -> None:
        job.status = "running"
        job.emit(stage="started")
        try:
            job.result = fn(job)
            job.status = "done"
            job.emit(stage="done", result=job.result)
        except CTPerfError as exc:
            job.error, job.status = str(exc), "error"
            job.emit(stage="error", error=job.error)
        except MemoryError:
            job.error, job.status = "out of memory for this study", "error"
            job.emit(stage="error", error=job.error)
        except Exception as exc:  # noqa: BLE001 - reported to the user, details in the server log
            log.error("job %s failed:\n%s", job.id, traceback.format_exc())
            job.error, job.status = f"internal error: {type(exc).__name__}: {exc}", "error"
            job.emit(stage="error", error=job.error)

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def list(self) -> list[Job]:
        return list(self._jobs.values())

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
