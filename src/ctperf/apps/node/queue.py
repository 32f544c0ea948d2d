"""Persistent study queue (SQLite, WAL), shared by the receiver, analyser and sender threads.

States of a study::

    receiving -> queued -> analysing -> analysed -> sending -> sent
                                    \\-> failed              \\-> parked
                                     (no forward destination: analysed -> done)

An instance arriving for a study that is no longer ``receiving`` re-opens it (``receiving``) so the new data are
analysed; an instance arriving during its analysis sends the study back to ``receiving`` when that analysis ends.
On start, :meth:`StudyQueue.recover` puts interrupted work back in line: ``analysing`` becomes ``queued`` (or
``analysed`` when its results were completely written before the interruption, so a finished analysis is
never repeated) and ``sending`` becomes ``analysed``.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

#: Slack when comparing a results file's modification time with the analysis start: Linux stamps files with the
#: kernel's coarse clock (one tick, 1-10 ms), so a file written just after ``time.time()`` may carry an earlier time.
_MTIME_RESOLUTION_S = 0.1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS studies (
    key TEXT PRIMARY KEY, state TEXT NOT NULL, n_instances INTEGER NOT NULL DEFAULT 0,
    first_received REAL, last_received REAL, analysis_started REAL,
    analyses_started INTEGER NOT NULL DEFAULT 0, analyses_completed INTEGER NOT NULL DEFAULT 0,
    send_attempts INTEGER NOT NULL DEFAULT 0, next_send REAL NOT NULL DEFAULT 0, reason TEXT, updated REAL);
CREATE TABLE IF NOT EXISTS instances (
    sop_key TEXT PRIMARY KEY, study_key TEXT NOT NULL, sop_class TEXT, received REAL);
"""
OPEN_AGAIN = ("queued", "analysed", "done", "failed", "sent", "parked")


@dataclass
class StudyRow:
    key: str
    state: str
    n_instances: int
    last_received: float | None
    analyses_started: int
    analyses_completed: int
    send_attempts: int
    reason: str | None


class StudyQueue:
    """Thread-safe access to the node's SQLite database (one connection, one lock)."""

    def __init__(self, path: Path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _tx(self, statements):
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                out = statements(self._db)
                self._db.execute("COMMIT")
                return out
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    # -------------------------------------------------------------------------------------------- receiver
    def add_instance(self, study_key: str, sop_key: str, sop_class: str) -> None:
        """Record one stored instance (after its file is in place); a new instance re-opens a finished study, an
        instance already received (the same study sent again, e.g. after a timeout) changes nothing, so the study
        is neither analysed nor forwarded twice."""
        now = time.time()

        def run(db):
            new = db.execute("INSERT OR IGNORE INTO instances VALUES (?, ?, ?, ?)",
                             (sop_key, study_key, sop_class, now)).rowcount
            db.execute("INSERT OR IGNORE INTO studies (key, state, first_received, updated) "
                       "VALUES (?, 'receiving', ?, ?)", (study_key, now, now))
            if new:
                db.execute(f"UPDATE studies SET n_instances = n_instances + 1, last_received = ?, updated = ?, "
                           f"state = CASE WHEN state IN {OPEN_AGAIN} THEN 'receiving' ELSE state END WHERE key = ?",
                           (now, now, study_key))
        self._tx(run)

    # -------------------------------------------------------------------------------------------- analyser
    def promote_quiet(self, quiet_s: float) -> int:
        """``receiving`` studies without a new instance for ``quiet_s`` become ``queued``."""
        now = time.time()
        return self._tx(lambda db: db.execute(
            "UPDATE studies SET state = 'queued', updated = ? WHERE state = 'receiving' AND last_received < ?",
            (now, now - quiet_s)).rowcount)

    def take(self, state: str, new_state: str, extra_sql: str = "", args: tuple = ()) -> str | None:
        """Atomically move the oldest study in ``state`` to ``new_state``; returns its key or None."""
        now = time.time()

        def run(db):
            row = db.execute(f"SELECT key FROM studies WHERE state = ? {extra_sql} ORDER BY first_received LIMIT 1",
                             (state, *args)).fetchone()
            if row is None:
                return None
            sets = ", analysis_started = ?, analyses_started = analyses_started + 1" \
                if new_state == "analysing" else ""
            db.execute(f"UPDATE studies SET state = ?, updated = ?{sets} WHERE key = ?",
                       (new_state, now, *((now,) if sets else ()), row[0]))
            return row[0]
        return self._tx(run)

    def finish_analysis(self, key: str, ok: bool, reason: str | None, forward: bool) -> None:
        """End an analysis: ``analysed``/``done`` or ``failed``; back to ``receiving`` if data came meanwhile."""
        now = time.time()
        state = ("analysed" if forward else "done") if ok else "failed"
        self._tx(lambda db: db.execute(
            "UPDATE studies SET analyses_completed = analyses_completed + ?, reason = ?, updated = ?, "
            "state = CASE WHEN last_received > analysis_started THEN 'receiving' ELSE ? END WHERE key = ?",
            (1 if ok else 0, reason, now, state, key)))

    # ---------------------------------------------------------------------------------------------- sender
    def send_result(self, key: str, ok: bool, reason: str | None, retries: int, delay_s: float) -> str:
        """Record a send attempt; returns the new state (``sent``, ``analysed`` to retry later, ``parked``)."""
        now = time.time()

        def run(db):
            attempts = db.execute("SELECT send_attempts FROM studies WHERE key = ?", (key,)).fetchone()[0] + 1
            state = "sent" if ok else ("parked" if attempts >= retries else "analysed")
            wait = delay_s * 2 ** (attempts - 1)
            db.execute("UPDATE studies SET state = CASE WHEN state = 'sending' THEN ? ELSE state END, "
                       "send_attempts = ?, next_send = ?, reason = ?, updated = ? WHERE key = ?",
                       (state, 0 if ok else attempts, now + wait, reason, now, key))
            return state
        return self._tx(run)

    # ----------------------------------------------------------------------------------------------- start
    def recover(self, results_dir: Path, forward: bool = True) -> dict[str, int]:
        """Put work interrupted by a crash or kill back in line (see the module docstring); an analysis completed
        before the stop becomes ``analysed`` (to be sent) or, without a forward destination, ``done``."""
        now = time.time()
        finished = "analysed" if forward else "done"

        def run(db):
            done = 0
            for key, started in db.execute(
                    "SELECT key, analysis_started FROM studies WHERE state = 'analysing'").fetchall():
                metrics = Path(results_dir) / key / "metrics.json"
                if (metrics.is_file() and started is not None
                        and metrics.stat().st_mtime >= started - _MTIME_RESOLUTION_S):
                    db.execute("UPDATE studies SET state = ?, analyses_completed = analyses_completed + 1,"
                               " updated = ? WHERE key = ?", (finished, now, key))
                    done += 1
            requeued = db.execute("UPDATE studies SET state = 'queued', updated = ? WHERE state = 'analysing'",
                                  (now,)).rowcount
            resend = db.execute("UPDATE studies SET state = 'analysed', next_send = 0, updated = ? "
                                "WHERE state = 'sending'", (now,)).rowcount
            return {"requeued": requeued, "completed_before_stop": done, "resend": resend}
        return self._tx(run)

    # ---------------------------------------------------------------------------------------------- status
    def studies(self) -> list[StudyRow]:
        with self._lock:
            rows = self._db.execute(
                "SELECT key, state, n_instances, last_received, analyses_started, analyses_completed, "
                "send_attempts, reason FROM studies ORDER BY first_received").fetchall()
        return [StudyRow(*r) for r in rows]

    def n_instances(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM instances").fetchone()[0])
