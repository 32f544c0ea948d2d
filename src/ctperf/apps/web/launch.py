"""``ctperf gui``: start the local web app with uvicorn and open the browser."""

from __future__ import annotations

import secrets
import threading
import webbrowser
from pathlib import Path

from ctperf.apps.web.settings import WebSettings, is_loopback
from ctperf.errors import CTPerfError


def serve(host: str, port: int, results: Path, allow: list[Path], token: str | None, open_browser: bool,
          max_upload_mb: float, show_identifiers: bool, echo=print) -> None:
    """Run the server until Ctrl-C.  A token is generated when ``host`` is not a loopback address."""
    try:
        import uvicorn

        from ctperf.apps.web.server import create_app
    except ImportError as exc:
        raise CTPerfError(f'the web app needs the "web" extra: pip install "ctperf[web]" ({exc.name} missing)') \
            from None
    if not is_loopback(host) and not token:
        token = secrets.token_urlsafe(24)
    try:
        settings = WebSettings(results_dir=results, allowed_roots=allow, host=host, port=port, token=token,
                           max_upload_mb=max_upload_mb, show_identifiers=show_identifiers)
    except ValueError as exc:
        raise CTPerfError(str(exc)) from None
    app = create_app(settings)
    shown = "localhost" if host in ("127.0.0.1", "::1") else host
    url = f"http://{shown if ':' not in shown else f'[{shown}]'}:{port}/" + (f"?token={token}" if token else "")
    echo(f"ctperf web app on {url}  (results in {settings.results_dir}; Ctrl-C to stop)")
    if not is_loopback(host):
        echo("warning: listening beyond this machine; anyone with the token can read and run studies")
    if open_browser:
        threading.Timer(1.0, webbrowser.open, args=(url,)).start()
    uvicorn.run(app, host=host, port=port, log_level="warning")
