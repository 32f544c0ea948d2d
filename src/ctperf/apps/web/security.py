"""Access control: token check, Host-header check, CSRF header, and paths confined to allowed folders."""

from __future__ import annotations

import secrets
import stat
import zipfile
from pathlib import Path, PurePosixPath

from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse

from ctperf.apps.web.settings import LOOPBACK_NAMES, WebSettings, is_loopback
from ctperf.errors import InputError

TOKEN_HEADER = "x-ctperf-token"
TOKEN_COOKIE = "ctperf_token"
#: Every state-changing request must carry this header: browsers cannot add it cross-site without a CORS
#: preflight (which this server never grants), so other web pages cannot drive a local server.
CSRF_HEADER = "x-ctperf"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


class Forbidden(Exception):
    """A request for something outside the allowed folders."""


def resolve_inside(path: str | Path, roots: list[Path]) -> Path:
    """Resolve ``path`` (symlinks followed) and return it when it lies inside one of ``roots``.

    Raises
    ------
    Forbidden
        The resolved path is outside every root (``..``, absolute paths and symlinks out are all caught here).
    """
    p = Path(path).expanduser()
    try:
        resolved = p.resolve(strict=False)
    except (OSError, RuntimeError):
        raise Forbidden(f"{path} cannot be resolved") from None
    for root in roots:
        if resolved == root or resolved.is_relative_to(root):
            return resolved
    raise Forbidden("that folder is outside the folders this server may open")


def child_path(base: Path, rel: str) -> Path:
    """``base / rel`` for a relative, ``..``-free path that stays inside ``base`` after resolving symlinks."""
    parts = PurePosixPath(rel.replace("\\", "/")).parts
    if not parts or parts[0] == "/" or any(p in ("..", "") for p in parts) or ":" in parts[0]:
        raise Forbidden("bad file name")
    return resolve_inside(base.joinpath(*parts), [base.resolve()])


def safe_extract_zip(zip_path: Path, dest: Path, max_total_bytes: int, max_files: int = 100_000) -> int:
    """Unpack a zip into ``dest`` refusing zip-slip names, symlinks and zip bombs; returns the file count.

    Raises
    ------
    InputError
        Not a zip, a member escapes ``dest``, or the unpacked size exceeds ``max_total_bytes``.
    """
    dest = dest.resolve()
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError):
        raise InputError("the upload is not a zip file") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > max_files:
            raise InputError(f"the zip holds more than {max_files} files")
        if sum(i.file_size for i in infos) > max_total_bytes:
            raise InputError("the zip unpacks to more than the upload limit allows")
        n = 0
        for info in infos:
            if stat.S_ISLNK(info.external_attr >> 16):
                continue  # symlinks could point anywhere: skipped
            try:
                target = child_path(dest, info.filename.rstrip("/")) if info.filename.strip("/") else None
            except Forbidden:
                raise InputError(f"the zip has an unsafe member name: {info.filename!r}") from None
            if target is None:
                continue
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            written = 0
            with zf.open(info) as src, open(target, "wb") as out:
                while chunk := src.read(1 << 20):
                    written += len(chunk)
                    if written > info.file_size + 1024:  # size field lied: zip bomb
                        raise InputError("the zip's sizes are inconsistent")
                    out.write(chunk)
            n += 1
    return n


class AccessMiddleware(BaseHTTPMiddleware):
    """Token (when configured), Host header (on loopback) and CSRF header (on writes) for every request."""

    def __init__(self, app, settings: WebSettings):
        super().__init__(app)
        self.settings = settings

    async def dispatch(self, request: Request, call_next):
        s = self.settings
        host_header = request.headers.get("host") or ""
        host = host_header.split("]")[0] + "]" if host_header.startswith("[") else host_header.split(":")[0]
        if is_loopback(s.host) and host not in LOOPBACK_NAMES:
            return JSONResponse({"detail": "unexpected Host header"}, status_code=403)
        query_token = request.query_params.get("token")
        if s.token:
            given = (request.headers.get(TOKEN_HEADER) or request.cookies.get(TOKEN_COOKIE) or query_token or "")
            if not secrets.compare_digest(given.encode(), s.token.encode()):
                return JSONResponse({"detail": "a valid access token is required"}, status_code=401)
        if request.method not in SAFE_METHODS and request.headers.get(CSRF_HEADER) != "1":
            return JSONResponse({"detail": f"missing {CSRF_HEADER} header"}, status_code=403)
        response = await call_next(request)
        if s.token and query_token:
            response.set_cookie(TOKEN_COOKIE, s.token, httponly=True, samesite="strict")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        return response
