"""Web app API (FastAPI TestClient): runs, SSE progress, results, threshold previews, downloads, security."""

from __future__ import annotations

import ast
import io
import json
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from web_helpers import HDR, modeb_inputs, new_client, small_settings, wait_job

from ctperf.apps.web import WebSettings
from ctperf.apps.web.results import MASK_VOLUMES

WEB = Path(__file__).resolve().parents[1] / "src" / "ctperf" / "apps" / "web"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("web")
    client = new_client(small_settings(root))
    study = client.post("/api/demo-study", headers=HDR).json()["path"]
    job = client.post("/api/jobs/mode-a", json={"path": study}, headers=HDR).json()
    done = wait_job(client, job["id"])
    assert done["status"] == "done", done
    return root, client, study, job, done["result"]["result_id"]


def test_page_and_bundled_viewer_served_without_cdn(env):
    _, client, *_ = env
    page = client.get("/")
    assert page.status_code == 200 and "niivue.umd.js" in page.text
    assert "Research use only" in client.get("/api/config").json()["disclaimer"]
    js = client.get("/static/niivue.umd.js")
    assert js.status_code == 200 and len(js.content) > 1_000_000
    for name in ("index.html", "app.js"):
        text = (WEB / "static" / name).read_text()
        assert "https://" not in text and "http://" not in text, name  # nothing fetched from the internet
    assert "0.69.0" in (WEB / "static" / "NIIVUE_LICENSE.txt").read_text()


def test_sse_progress_reports_every_stage(env):
    _, client, _, job, _ = env
    with client.stream("GET", f"/api/jobs/{job['id']}/events") as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]
    stages = [e["stage"] for e in events]
    for s in ("queued", "load", "reading DICOM", "deconvolution", "masks", "write", "done"):
        assert s in stages, (s, stages)
    assert events[-1]["status"] == "done" and events[-1]["result"]["result_id"]


def test_results_list_and_describe(env):
    _, client, _, _, rid = env
    rows = client.get("/api/results").json()
    assert [r["id"] for r in rows] == [rid] and rows[0]["mode"] == "A"
    assert rid.startswith("demo-")
    doc = client.get(f"/api/results/{rid}").json()
    assert doc["maps"]["cbf"]["unit"] == "mL/100 g/min" and doc["maps"]["tmax"]["unit"] == "s"
    assert set(doc["masks"]) == set(MASK_VOLUMES)
    assert len(doc["curves"]["aif"]["time_s"]) == len(doc["curves"]["aif"]["delta_hu"]) > 10
    assert doc["curves"]["aif"]["voxels_zyx"] and doc["curves"]["vof"]["voxels_zyx"]
    assert {"report.pdf", "metrics.json", "metrics.csv", "cbf.nii.gz"} <= set(doc["files"])
    assert [r["key"] for r in doc["table"]][:2] == ["hypoperfusion_ml", "core_ml"]
    assert isinstance(doc["qa_flags"], list)


def test_volumes_are_nifti_on_the_map_grid(env):
    _, client, _, _, rid = env
    shapes = set()
    for name in ("baseline", "cbf", "tmax", "core", "penumbra"):
        r = client.get(f"/api/results/{rid}/volume/{name}.nii.gz")
        assert r.status_code == 200, name
        shapes.add(nib.Nifti1Image.from_bytes(_gunzip(r.content)).shape)
    assert len(shapes) == 1
    lab = nib.Nifti1Image.from_bytes(_gunzip(client.get(f"/api/results/{rid}/curve-voxels.nii.gz").content))
    vals = np.asarray(lab.dataobj)
    assert (vals == 1).sum() >= 1 and (vals == 2).sum() >= 1
    assert client.get(f"/api/results/{rid}/volume/secret.nii.gz").status_code == 404


def test_threshold_preview_from_saved_maps_writes_nothing(env):
    root, client, _, _, rid = env
    folder = root / "results" / rid
    before = {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}
    saved = json.loads((folder / "metrics.json").read_text())
    same = client.get(f"/api/results/{rid}/tune", params={"tmax_s": 6.0, "rcbf": 0.3}).json()
    assert same["hypoperfusion_ml"] == pytest.approx(saved["hypoperfusion_ml"])
    assert same["core_ml"] == pytest.approx(saved["core_ml"])
    lo = client.get(f"/api/results/{rid}/tune", params={"tmax_s": 4.0, "rcbf": 0.3}).json()
    hi = client.get(f"/api/results/{rid}/tune", params={"tmax_s": 10.0, "rcbf": 0.3}).json()
    assert lo["hypoperfusion_ml"] > same["hypoperfusion_ml"] > hi["hypoperfusion_ml"]
    core_hi = client.get(f"/api/results/{rid}/tune", params={"tmax_s": 6.0, "rcbf": 0.5}).json()
    assert core_hi["core_ml"] > same["core_ml"]
    mask = client.get(f"/api/results/{rid}/tune/hypoperfusion.nii.gz", params={"tmax_s": 4.0, "rcbf": 0.3})
    img = nib.Nifti1Image.from_bytes(_gunzip(mask.content))
    vox_ml = abs(np.linalg.det(img.affine[:3, :3])) / 1000.0
    assert np.asarray(img.dataobj).sum() * vox_ml == pytest.approx(lo["hypoperfusion_ml"], rel=1e-3)
    assert client.get(f"/api/results/{rid}/tune", params={"tmax_s": 60, "rcbf": 0.3}).status_code == 400
    after = {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}
    assert after == before


def test_apply_rewrites_outputs_like_ctperf_recompute(env):
    root, client, _, _, rid = env
    folder = root / "results" / rid
    preview = client.get(f"/api/results/{rid}/tune", params={"tmax_s": 8.0, "rcbf": 0.3}).json()
    doc = client.post(f"/api/results/{rid}/apply", json={"tmax_s": 8.0, "rcbf": 0.3}, headers=HDR).json()
    m = json.loads((folder / "metrics.json").read_text())
    assert m["thresholds"]["tmax_hypoperfusion_s"] == 8.0 and m["provenance"]["recomputed_from_saved_maps"]
    assert m["hypoperfusion_ml"] == pytest.approx(preview["hypoperfusion_ml"])
    assert doc["metrics"]["hypoperfusion_ml"] == m["hypoperfusion_ml"]
    client.post(f"/api/results/{rid}/apply", json={"tmax_s": 6.0, "rcbf": 0.3}, headers=HDR)
    assert json.loads((folder / "metrics.json").read_text())["thresholds"]["tmax_hypoperfusion_s"] == 6.0


def test_downloads_and_no_path_traversal(env):
    _, client, _, _, rid = env
    assert client.get(f"/api/results/{rid}/files/metrics.json").json()["mode"] == "A"
    assert client.get(f"/api/results/{rid}/files/report.pdf").content[:4] == b"%PDF"
    assert client.get(f"/api/results/{rid}/files/metrics.csv").status_code == 200
    z = zipfile.ZipFile(io.BytesIO(client.get(f"/api/results/{rid}/archive.zip").content))
    assert {"cbf.nii.gz", "metrics.json", "report.pdf"} <= set(z.namelist())
    for bad in ("../../../../etc/passwd", "..%2F..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd", "aux/../../x"):
        r = client.get(f"/api/results/{rid}/files/{bad}")
        assert r.status_code in (403, 404), bad
        assert b"root:" not in r.content
    for bad in ("..", ".uploads", "..%2F..", "%2Fetc"):
        assert client.get(f"/api/results/{bad}").status_code in (403, 404), bad


def test_folders_outside_the_allowed_roots_are_refused(env):
    root, client, study, _, _ = env
    assert client.get("/api/browse", params={"path": "/etc"}).status_code == 403
    assert client.get("/api/browse", params={"path": str(root / ".." / "..")}).status_code == 403
    assert client.get("/api/inspect", params={"path": "/etc"}).status_code == 403
    assert client.post("/api/jobs/mode-a", json={"path": "/etc"}, headers=HDR).status_code == 403
    assert client.post("/api/results/open", json={"path": "/tmp"}, headers=HDR).status_code == 403
    listing = client.get("/api/browse", params={"path": str(root)}).json()
    assert "results" in listing["dirs"]
    info = client.get("/api/inspect", params={"path": study}).json()
    assert info["series"][0]["is_ctp"]
    assert "PHANTOM" not in json.dumps(info)  # the phantom's patient name never reaches the page


def test_open_result_folder_by_path(env, tmp_path):
    root, client, _, _, rid = env
    copy = root / "elsewhere" / "study-copy"
    import shutil

    shutil.copytree(root / "results" / rid, copy)
    r = client.post("/api/results/open", json={"path": str(copy)}, headers=HDR).json()
    assert r["id"].startswith("opened-")
    doc = client.get(f"/api/results/{r['id']}").json()
    assert doc["name"] == r["id"]  # folder names may carry patient names: hidden unless enabled
    assert client.post("/api/results/open", json={"path": str(root)}, headers=HDR).status_code == 400


def test_writes_need_the_csrf_header_and_a_loopback_host(env):
    _, client, *_ = env
    assert client.post("/api/demo-study").status_code == 403
    assert client.get("/api/config", headers={"host": "evil.example"}).status_code == 403
    assert client.get("/api/config", headers={"host": "localhost:8765"}).status_code == 200


def test_token_required_beyond_loopback(tmp_path):
    with pytest.raises(ValueError, match="token"):
        WebSettings(results_dir=tmp_path / "r", host="0.0.0.0")
    client = new_client(small_settings(tmp_path, host="0.0.0.0", token="s3cret-token"))
    assert client.get("/api/config").status_code == 401
    assert client.get("/").status_code == 401
    assert client.get("/api/config", headers={"X-CTPerf-Token": "wrong"}).status_code == 401
    assert client.get("/api/config", headers={"X-CTPerf-Token": "s3cret-token"}).status_code == 200
    first = client.get("/?token=s3cret-token")
    assert first.status_code == 200 and "ctperf_token" in first.headers["set-cookie"]
    assert "httponly" in first.headers["set-cookie"].lower()
    assert client.get("/api/config").status_code == 200  # the cookie now carries the token


def _zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def test_upload_zip_limits_and_unsafe_names(tmp_path):
    client = new_client(small_settings(tmp_path, max_upload_mb=0.05))
    big = b"x" * 60_000
    assert client.put("/api/uploads", content=big, headers=HDR).status_code == 413
    slip = _zip_bytes({"../../evil.txt": b"owned"})
    r = client.put("/api/uploads", content=slip, headers=HDR)
    assert r.status_code == 400 and "unsafe" in r.json()["detail"]
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "results" / "evil.txt").exists()
    bomb = _zip_bytes({"a.bin": b"\0" * 5_000_000})  # compresses to a few kB, unpacks past 4x the limit
    assert client.put("/api/uploads", content=bomb, headers=HDR).status_code == 400
    assert client.put("/api/uploads", content=b"not a zip", headers=HDR).status_code == 400
    ok = client.put("/api/uploads", content=_zip_bytes({"s/1.dcm": b"a", "s/2.dcm": b"b"}), headers=HDR).json()
    assert ok["n_files"] == 2
    assert client.post("/api/jobs/mode-a", json={"upload": "../../etc"}, headers=HDR).status_code == 403


def test_uploaded_zip_runs_and_result_names_hide_folder_names(env, tmp_path):
    _, _, study, _, _ = env
    client = new_client(small_settings(tmp_path))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for f in sorted(Path(study).rglob("*")):
            if f.is_file():
                z.write(f, "DOE^JOHN/" + str(f.relative_to(study)))
    up = client.put("/api/uploads", content=buf.getvalue(), headers=HDR).json()
    job = client.post("/api/jobs/mode-a", json={"upload": up["upload"]}, headers=HDR).json()
    done = wait_job(client, job["id"])
    assert done["status"] == "done", done
    rid = done["result"]["result_id"]
    assert rid.startswith("upload-") and "DOE" not in json.dumps(client.get("/api/results").json())
    (tmp_path / "DOE^JANE").mkdir()
    bad = client.post("/api/jobs/mode-a", json={"path": str(tmp_path / "DOE^JANE")}, headers=HDR).json()
    failed = wait_job(client, bad["id"])
    assert failed["status"] == "error" and failed["error"]  # no DICOM: a one-line error, no result folder
    assert "DOE" not in json.dumps(failed) and "Traceback" not in failed["error"]
    assert [r["id"] for r in client.get("/api/results").json()] == [rid]


def test_mode_b_from_the_same_api(tmp_path):
    ph, names = modeb_inputs(tmp_path)
    client = new_client(small_settings(tmp_path))
    files = {k: (f"PATIENT_{v}", (tmp_path / v).read_bytes()) for k, v in names.items()}
    job = client.post("/api/jobs/mode-b", files=files, headers=HDR).json()
    done = wait_job(client, job["id"])
    assert done["status"] == "done", done
    doc = client.get(f"/api/results/{done['result']['result_id']}").json()
    assert doc["mode"] == "B" and doc["metrics"]["mode"] == "B"
    assert doc["metrics"]["hypoperfusion_ml"] == pytest.approx(ph.truth_metrics["hypoperfusion_ml"], rel=0.1)
    assert "maps" not in doc and "masks/core_mask.nii.gz" in doc["files"]
    assert client.get(f"/api/results/{doc['id']}/tune", params={"tmax_s": 6, "rcbf": 0.3}).status_code == 400


def test_web_layer_imports_no_engine_module():
    engine = {"engine", "deconvolution", "aif", "denoise", "maps", "preprocess", "motion", "hemispheres", "masks",
              "indices"}
    for path in WEB.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                parts = name.split(".")
                assert not (parts[0] == "ctperf" and len(parts) > 1 and parts[1] in engine), (path.name, name)


def test_gui_command_is_registered_and_refuses_open_binding_without_web_extra_problems():
    from typer.testing import CliRunner

    from ctperf.cli import app

    r = CliRunner().invoke(app, ["gui", "--help"])
    assert r.exit_code == 0 and "--port" in r.output and "--results" in r.output


def _gunzip(data: bytes) -> bytes:
    import gzip

    return gzip.decompress(data)


def test_ctperf_gui_serves_on_loopback_and_needs_a_token_elsewhere(tmp_path):
    import os
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(WEB.parents[2])}
    cmd = [sys.executable, "-m", "ctperf.cli", "gui", "--port", str(port), "--results", str(tmp_path / "r"),
           "--no-browser"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        doc, t0 = None, time.monotonic()
        while doc is None and time.monotonic() - t0 < 30:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/config", timeout=2) as r:
                    doc = json.loads(r.read())
            except OSError:
                time.sleep(0.2)
        assert doc is not None and doc["results_dir"] == str((tmp_path / "r").resolve())
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
    assert f"http://localhost:{port}/" in out and "token" not in out
    bad = subprocess.run([sys.executable, "-m", "ctperf.cli", "gui", "--host", "0.0.0.0", "--port", "1",
                          "--results", str(tmp_path / "r"), "--no-browser", "--max-upload-mb", "0"],
                         env=env, capture_output=True, text=True, timeout=60, check=False)
    assert bad.returncode == 2 and "ctperf: error:" in bad.stderr and "Traceback" not in bad.stderr
