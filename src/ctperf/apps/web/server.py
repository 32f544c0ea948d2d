"""The FastAPI application: JSON API under /api, the single-page app and its bundled NiiVue under /static."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import tempfile
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    Response,
    StreamingResponse,
)
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

from ctperf import DISCLAIMER, __version__
from ctperf.apps.web import runs
from ctperf.apps.web.jobs import JobManager
from ctperf.apps.web.results import ResultStore
from ctperf.apps.web.security import (
    AccessMiddleware,
    Forbidden,
    child_path,
    resolve_inside,
    safe_extract_zip,
)
from ctperf.apps.web.settings import WebSettings
from ctperf.cli import _parse_range
from ctperf.errors import CTPerfError

STATIC = Path(__file__).parent / "static"
NIFTI = "application/gzip"
Upload = Annotated[UploadFile, File()]
MODEB_FILES = ("mip", "tmax", "cbv", "rcbf", "aif_csv", "vof_csv")


class StudyRequest(BaseModel):
    path: str | None = None
    upload: str | None = None
    series: str | None = None


class OpenRequest(BaseModel):
    path: str


class Thresholds(BaseModel):
    tmax_s: float
    rcbf: float


def create_app(settings: WebSettings) -> FastAPI:
    """Build the app for one server; all state lives on ``app.state`` (jobs, results, settings)."""
    settings.results_dir.mkdir(parents=True, exist_ok=True)
    jobs, store = JobManager(), ResultStore(settings)

    @asynccontextmanager
    async def lifespan(app):
        yield
        jobs.shutdown()

    app = FastAPI(title="ctperf", version=__version__, docs_url=None, redoc_url=None, openapi_url=None,
                  lifespan=lifespan)
    app.add_middleware(AccessMiddleware, settings=settings)
    app.state.settings, app.state.jobs, app.state.results = settings, jobs, store
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(CTPerfError)
    async def _user_error(request, exc):
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(Forbidden)
    async def _forbidden(request, exc):
        return JSONResponse({"detail": str(exc)}, status_code=403)

    @app.exception_handler(KeyError)
    async def _missing(request, exc):
        return JSONResponse({"detail": "not found"}, status_code=404)

    # ----------------------------------------------------------------------------------------------- page
    @app.get("/", response_class=HTMLResponse)
    def index():
        return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"),
                            headers={"Cache-Control": "no-store"})

    @app.get("/api/config")
    def config():
        return {"version": __version__, "disclaimer": DISCLAIMER, "show_identifiers": settings.show_identifiers,
                "max_upload_mb": settings.max_upload_mb,
                "roots": [str(p) for p in settings.allowed_roots], "results_dir": str(settings.results_dir)}

    # ------------------------------------------------------------------------------------------- studies
    @app.get("/api/browse")
    def browse(path: str | None = None):
        """Sub-folders of a folder inside the allowed roots (no path: the roots)."""
        if not path:
            return {"path": None, "parent": None, "dirs": [str(p) for p in settings.allowed_roots]}
        folder = resolve_inside(path, settings.allowed_roots)
        if not folder.is_dir():
            raise CTPerfError("not a folder")
        try:
            entries = sorted(folder.iterdir(), key=lambda p: p.name.lower())
        except PermissionError:
            raise Forbidden("permission denied") from None
        dirs = [p.name for p in entries if p.is_dir() and not p.name.startswith(".")]
        n_files = sum(1 for p in entries if p.is_file())
        parent = folder.parent
        try:
            resolve_inside(parent, settings.allowed_roots)
        except Forbidden:
            parent = None
        return {"path": str(folder), "parent": str(parent) if parent else None, "dirs": dirs, "n_files": n_files}

    @app.get("/api/inspect")
    def inspect(path: str):
        from ctperf.dicom_io import inspect_folder

        return inspect_folder(resolve_inside(path, settings.allowed_roots))

    @app.post("/api/demo-study")
    def demo_study():
        return {"path": str(runs.make_demo_study(settings))}

    @app.put("/api/uploads")
    async def upload_zip(request: Request):
        """A zipped study as the raw request body (streamed to disk, size-limited, unpacked safely)."""
        limit = settings.max_upload_bytes
        if int(request.headers.get("content-length") or 0) > limit:
            raise HTTPException(413, f"upload larger than {settings.max_upload_mb:g} MB")
        uid = uuid.uuid4().hex[:12]
        dest = settings.results_dir / runs.UPLOADS / uid
        dest.mkdir(parents=True)
        zpath = dest.with_suffix(".zip")
        size = 0
        try:
            with open(zpath, "wb") as fh:
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > limit:
                        raise HTTPException(413, f"upload larger than {settings.max_upload_mb:g} MB")
                    fh.write(chunk)
            n = await asyncio.to_thread(safe_extract_zip, zpath, dest, 4 * limit)
        except BaseException:
            shutil.rmtree(dest, ignore_errors=True)
            raise
        finally:
            zpath.unlink(missing_ok=True)
        return {"upload": uid, "n_files": n, "bytes": size}

    def _study_dir(req: StudyRequest) -> tuple[Path, str]:
        if req.upload:
            if not re.fullmatch(r"[0-9a-f]{12}", req.upload):
                raise Forbidden("bad upload id")
            folder = settings.results_dir / runs.UPLOADS / req.upload
            if not folder.is_dir():
                raise KeyError(req.upload)
            return folder, "upload"
        if not req.path:
            raise CTPerfError("choose a study folder or upload a zip")
        folder = resolve_inside(req.path, settings.allowed_roots)
        if not folder.is_dir():
            raise CTPerfError("the study folder does not exist")
        demo = (settings.results_dir / runs.STUDIES) in folder.parents
        label = "demo" if demo else (folder.name if settings.show_identifiers else "run")
        return folder, label

    # ---------------------------------------------------------------------------------------------- jobs
    @app.post("/api/jobs/mode-a")
    def start_mode_a(req: StudyRequest):
        folder, label = _study_dir(req)
        job = jobs.submit("mode-a", lambda j: runs.run_mode_a(settings, j, folder, label, req.series))
        return job.summary()

    @app.post("/api/jobs/mode-b")
    async def start_mode_b(request: Request, mip: Upload, tmax: Upload, cbv: Upload, rcbf: Upload, aif_csv: Upload,
                           vof_csv: Upload, tmax_range: Annotated[str, Form()] = "",
                           cbv_range: Annotated[str, Form()] = "", rcbf_range: Annotated[str, Form()] = ""):
        if int(request.headers.get("content-length") or 0) > settings.max_upload_bytes:
            raise HTTPException(413, f"upload larger than {settings.max_upload_mb:g} MB")
        ranges = {k: _parse_range(v or None)
                  for k, v in (("tmax", tmax_range), ("cbv", cbv_range), ("rcbf", rcbf_range))}
        dest = settings.results_dir / runs.UPLOADS / f"modeb-{uuid.uuid4().hex[:12]}"
        dest.mkdir(parents=True)
        files = dict(zip(MODEB_FILES, (mip, tmax, cbv, rcbf, aif_csv, vof_csv)))
        try:
            inputs = {k: await _save_upload(f, dest, k, settings) for k, f in files.items()}
        except BaseException:
            shutil.rmtree(dest, ignore_errors=True)
            raise
        job = jobs.submit("mode-b", lambda j: runs.run_mode_b(settings, j, inputs, ranges))
        return job.summary()

    @app.get("/api/jobs")
    def list_jobs():
        return [j.summary() for j in jobs.list()]

    @app.get("/api/jobs/{job_id}")
    def job_status(job_id: str):
        job = jobs.get(job_id)
        if job is None:
            raise KeyError(job_id)
        return job.summary()

    @app.get("/api/jobs/{job_id}/events")
    async def job_events(job_id: str, request: Request):
        """Server-sent events: every progress event of the job, then one with status done or error."""
        job = jobs.get(job_id)
        if job is None:
            raise KeyError(job_id)

        async def stream():
            i = 0
            while True:
                events = await asyncio.to_thread(job.wait_events, i, 10.0)
                for ev in events:
                    yield f"data: {json.dumps(ev, allow_nan=False, default=str)}\n\n"
                i += len(events)
                if job.status in ("done", "error") and i >= len(job.events):
                    return
                if not events:
                    yield ": keep-alive\n\n"
                if await request.is_disconnected():
                    return

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})

    # ------------------------------------------------------------------------------------------- results
    @app.get("/api/results")
    def list_results():
        return store.list()

    @app.post("/api/results/open")
    def open_result(req: OpenRequest):
        return {"id": store.open(req.path)}

    @app.get("/api/results/{rid}")
    def result(rid: str):
        return store.describe(rid)

    @app.get("/api/results/{rid}/volume/{name}.nii.gz")
    def volume(rid: str, name: str):
        return FileResponse(store.volume_path(rid, name), media_type=NIFTI, headers={"Cache-Control": "no-store"})

    @app.get("/api/results/{rid}/curve-voxels.nii.gz")
    def curve_voxels(rid: str):
        return Response(store.curve_voxels_bytes(rid), media_type=NIFTI)

    @app.get("/api/results/{rid}/tune")
    def tune(rid: str, tmax_s: float = Query(...), rcbf: float = Query(...)):
        from ctperf.apps.web.results import table_rows

        res = store.preview(rid, tmax_s, rcbf)
        return {"tmax_s": tmax_s, "rcbf": rcbf, "table": table_rows(res.metrics),
                "hypoperfusion_ml": res.metrics.get("hypoperfusion_ml"), "core_ml": res.metrics.get("core_ml"),
                "penumbra_ml": res.metrics.get("penumbra_ml")}

    @app.get("/api/results/{rid}/tune/{mask}.nii.gz")
    def tune_mask(rid: str, mask: str, tmax_s: float = Query(...), rcbf: float = Query(...)):
        return Response(store.preview_mask_bytes(rid, tmax_s, rcbf, mask), media_type=NIFTI)

    @app.post("/api/results/{rid}/apply")
    def apply(rid: str, req: Thresholds):
        return store.apply(rid, req.tmax_s, req.rcbf)

    @app.get("/api/results/{rid}/files/{rel:path}")
    def download(rid: str, rel: str):
        path = child_path(store.folder(rid), rel)
        if not path.is_file():
            raise KeyError(rel)
        return FileResponse(path, filename=path.name)

    @app.get("/api/results/{rid}/archive.zip")
    def archive(rid: str):
        folder = store.folder(rid)
        tmp = Path(tempfile.mkdtemp(prefix="ctperf-web-zip-"))
        zpath = Path(shutil.make_archive(str(tmp / rid), "zip", root_dir=folder))
        return FileResponse(zpath, filename=f"{rid}.zip", media_type="application/zip",
                            background=_cleanup(tmp))

    return app


def _cleanup(folder: Path):
    from starlette.background import BackgroundTask

    return BackgroundTask(shutil.rmtree, folder, ignore_errors=True)


async def _save_upload(f: UploadFile, dest: Path, name: str, settings: WebSettings) -> Path:
    """Store one Mode B upload under a neutral name (uploaded file names may carry patient names)."""
    low = (f.filename or "").lower()
    suffix = next((s for s in (".nii.gz", ".nii", ".png", ".jpg", ".jpeg", ".csv", ".txt", ".zip", ".dcm")
                   if low.endswith(s)), "")
    target = dest / f"{name}{suffix}"
    size = 0
    with open(target, "wb") as out:
        while chunk := await f.read(1 << 20):
            size += len(chunk)
            if size > settings.max_upload_bytes:
                raise HTTPException(413, f"upload larger than {settings.max_upload_mb:g} MB")
            out.write(chunk)
    if suffix == ".zip":  # a DICOM map series
        folder = dest / name
        await asyncio.to_thread(safe_extract_zip, target, folder, 4 * settings.max_upload_bytes)
        target.unlink()
        return folder
    return target
