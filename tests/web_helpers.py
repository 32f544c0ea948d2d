"""Shared helpers of the web-app tests: a small demo-study server setup (64x64 phantom, seconds per run)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

fastapi = pytest.importorskip("fastapi", reason="the web extra (fastapi) is not installed")

from ctperf.apps.web import WebSettings, create_app

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


def modeb_inputs(folder: Path):
    """Mode B inputs from a small phantom's truth maps: NIfTI maps, curve CSVs and a MIP screenshot with an ROI.

    Returns (phantom, {form field: file name in ``folder``}).
    """
    import numpy as np
    from scipy import ndimage
    from scipy.spatial import ConvexHull

    from ctperf.io.nifti import save_volume
    from ctperf.synthetic import PhantomSpec, make_phantom
    from ctperf.synthetic.screenshots import render_mip_screenshot

    ph = make_phantom(PhantomSpec(matrix=96, n_slices=4, pixel_mm=2.3, noise_hu=0.0, lesion="left", seed=5))
    tr = ph.truth
    rcbf = tr.cbf / tr.cbf[tr.tissue & (tr.side == -1)].mean()
    maps = {k: np.where(tr.brain, v, np.nan).astype(np.float32) for k, v in
            {"tmax": tr.tmax, "cbv": tr.cbv, "rcbf": rcbf}.items()}
    for k, v in maps.items():
        save_volume(folder / f"{k}.nii.gz", v, ph.affine_ras)
    (folder / "aif.csv").write_text("time_s,AIF\n" + "\n".join(f"{x:.2f},{y:.3f}" for x, y in zip(*tr.aif_true)))
    (folder / "vof.csv").write_text("time_s,VOF\n" + "\n".join(f"{x:.2f},{y:.3f}" for x, y in zip(*tr.vof_true)))
    pts = np.argwhere(ndimage.binary_dilation(tr.lesion_any.any(axis=0), iterations=4))
    render_mip_screenshot(maps["tmax"], ph.affine_ras, folder / "mip.png", polygon_yx=pts[ConvexHull(pts).vertices],
                          scale=3.0, distractors=False)
    return ph, {"mip": "mip.png", "tmax": "tmax.nii.gz", "cbv": "cbv.nii.gz", "rcbf": "rcbf.nii.gz",
                "aif_csv": "aif.csv", "vof_csv": "vof.csv"}
