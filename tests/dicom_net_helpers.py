"""Helpers for the DICOM node tests: free loopback ports, a C-STORE sender, a node subprocess, an Orthanc."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import ctperf

LOOPBACK = "127.0.0.1"
SRC_ROOT = str(Path(ctperf.__file__).resolve().parents[1])


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str, poll: float = 0.2):
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def send_files(paths, port: int, calling: str = "SCANNER", called: str = "CTPERF", own_syntax_only: bool = False
               ) -> list[int]:
    """C-STORE the files in one association; returns the status codes (-1 when no response).

    ``own_syntax_only`` proposes only each file's transfer syntax (so compressed data travel compressed)."""
    from pydicom import dcmread
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
    from pynetdicom import AE

    datasets = [dcmread(p) for p in paths]
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 120  # a loaded CI machine can be slow
    for uid in sorted({(str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)) for ds in datasets}):
        ae.add_requested_context(uid[0], [uid[1]] if own_syntax_only else
                                 [uid[1], ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    assoc = ae.associate(LOOPBACK, port, ae_title=called)
    if not assoc.is_established:
        return [-1] * len(datasets)
    codes = []
    try:
        for ds in datasets:
            st = assoc.send_c_store(ds)
            codes.append(int(getattr(st, "Status", -1)))
    finally:
        assoc.release()
    return codes


def send_concurrently(file_lists, port: int) -> list[int]:
    """Each file list sent by its own process, all at once (independent senders, like several scanners).

    Processes, not threads: pynetdicom's requestor is not safe with many associations in one process
    (pydicom/pynetdicom#842), which would test the test client rather than the node."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(len(file_lists), mp_context=multiprocessing.get_context("spawn")) as pool:
        results = list(pool.map(send_files, file_lists, [port] * len(file_lists)))
    return [c for codes in results for c in codes]


def echo(port: int, calling: str = "SCANNER", called: str = "CTPERF") -> bool:
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    assoc = ae.associate(LOOPBACK, port, ae_title=called)
    if not assoc.is_established:
        return False
    try:
        st = assoc.send_c_echo()
        return getattr(st, "Status", None) == 0
    finally:
        assoc.release()


class NodeProcess:
    """`ctperf node` in a subprocess on loopback."""

    def __init__(self, out: Path, port: int, *extra: str, quiet_s: float = 1.0):
        self.out, self.port = Path(out), port
        self.args = [sys.executable, "-m", "ctperf.cli", "node", "--out", str(out), "--host", LOOPBACK,
                     "--port", str(port), "--quiet-seconds", str(quiet_s), *extra]
        self.proc = None

    def start(self):
        env = {**os.environ, "PYTHONPATH": SRC_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               "MPLBACKEND": "Agg"}
        self.log = open(self.out.parent / f"{self.out.name}.stderr", "ab")
        self.proc = subprocess.Popen(self.args, env=env, stdout=self.log, stderr=self.log)
        wait_for(lambda: self._up(), 60, "the node to answer C-ECHO")
        return self

    def _up(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"node exited with {self.proc.returncode}: "
                                 f"{(self.out.parent / f'{self.out.name}.stderr').read_text()[-2000:]}")
        try:
            return echo(self.port)
        except Exception:  # noqa: BLE001
            return False

    def status(self) -> dict:
        res = subprocess.run([sys.executable, "-m", "ctperf.cli", "node", "--out", str(self.out), "--status",
                              "--json"], capture_output=True, text=True, timeout=60,
                             env={**os.environ, "PYTHONPATH": SRC_ROOT})
        assert res.returncode == 0, res.stderr
        return json.loads(res.stdout)

    def kill(self):
        self.proc.kill()
        self.proc.wait(30)
        self.log.close()

    def ensure_stopped(self):
        """Kill the node if a failed test left it running."""
        if self.proc is not None and self.proc.poll() is None:
            self.kill()

    def terminate(self, timeout: float = 120) -> int:
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout)
        self.log.close()
        return rc


class Orthanc:
    """A private Orthanc (Debian package) on loopback with its own config and storage in ``root``."""

    def __init__(self, root: Path, node_port: int):
        self.root = Path(root)
        self.dicom_port, self.http_port = free_port(), free_port()
        self.node_port = node_port
        self.proc = None

    @staticmethod
    def available() -> str | None:
        return shutil.which("Orthanc") or (shutil.which("orthanc"))

    def start(self):
        self.root.mkdir(parents=True, exist_ok=True)
        cfg = {"Name": "ctperf-test", "StorageDirectory": str(self.root / "storage"),
               "IndexDirectory": str(self.root / "index"), "DicomAet": "ORTHANC", "DicomPort": self.dicom_port,
               "HttpPort": self.http_port, "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
               "DicomCheckCalledAet": False, "DicomAlwaysAllowStore": True, "DicomAlwaysAllowEcho": True,
               "Plugins": [], "StableAge": 1, "HttpServerEnabled": True, "DicomServerEnabled": True,
               "DicomModalities": {"ctperf": ["CTPERF", LOOPBACK, self.node_port]},
               "ConcurrentJobs": 1, "LimitFindResults": 0, "StorageCompression": False}
        (self.root / "orthanc.json").write_text(json.dumps(cfg))
        self.log = open(self.root / "orthanc.log", "ab")
        self.proc = subprocess.Popen([self.available(), str(self.root / "orthanc.json")], stdout=self.log,
                                     stderr=self.log)
        wait_for(self._up, 60, "Orthanc to start")
        return self

    def _up(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"Orthanc exited: {(self.root / 'orthanc.log').read_text()[-2000:]}")
        try:
            return self.get("/system") is not None
        except OSError:
            return False

    def get(self, path: str, raw: bool = False):
        with urllib.request.urlopen(f"http://{LOOPBACK}:{self.http_port}{path}", timeout=30) as r:
            data = r.read()
        return data if raw else json.loads(data)

    def instances(self) -> list[str]:
        return self.get("/instances")

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if hasattr(self, "log"):
            self.log.close()
