"""Shared helpers of the web-app tests: a small demo-study server setup (64x64 phantom, seconds per run)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

fastapi = pytest.importorskip("fastapi", reason="the web extra (fastapi) is not installed")

from ctperf.apps.web import WebSettings, create_app  # noqa: E402

HDR = {"X-CTPerf": "1"}
BASE = "http://127.0.0.1"


def small_settings(root: Path, **kw) -> WebSettings:
    """Results in ``root/results``; ``root`` is the only other folder studies may come from."""
    return WebSettings(results_dir=root / "results", allowed_roots=[root], demo_matrix=64, demo_slices=4, **kw)


def wait_job(client, job_id: str, timeout_s: float = 120.0) -> dict:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["status"] in ("done", "error"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish in {timeout_s} s")


def new_client(settings: WebSettings):
    from fastapi.testclient import TestClient

    return TestClient(create_app(settings), base_url=BASE)
