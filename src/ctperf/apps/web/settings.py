"""Settings of one web-app server (no process-global state: everything hangs off this object)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

#: Host names accepted in the ``Host`` header when the server listens on a loopback address (DNS-rebinding guard).
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]", "::1")


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass
class WebSettings:
    """What the server may touch and how it is protected.

    Parameters
    ----------
    results_dir
        Where runs write their output folders (one per run) and uploads are unpacked (``.uploads/``).
    allowed_roots
        Folders whose studies and result folders may be opened by path (``results_dir`` is always allowed).
    host
        Listening address; any address other than loopback requires ``token``.
    token
        Access token; required on every request when set (header ``X-CTPerf-Token``, cookie or ``?token=``).
    max_upload_mb
        Largest accepted upload (zip or Mode B files, MB); a zip may unpack to at most 4x this.
    show_identifiers
        Show input folder paths and name result folders after the input folder.  Off by default because folder
        names often carry patient names.
    demo_matrix
        In-plane matrix of the demo phantom study (160 as ``ctperf demo``; tests use 64).
    """

    results_dir: Path
    allowed_roots: list[Path] = field(default_factory=list)
    host: str = "127.0.0.1"
    port: int = 8765
    token: str | None = None
    max_upload_mb: float = 2048.0
    show_identifiers: bool = False
    demo_matrix: int = 160
    demo_slices: int = 8

    def __post_init__(self):
        self.results_dir = Path(self.results_dir).expanduser().resolve()
        roots = [self.results_dir] + [Path(p).expanduser().resolve() for p in self.allowed_roots]
        self.allowed_roots = list(dict.fromkeys(roots))
        if not is_loopback(self.host) and not self.token:
            raise ValueError(f"a token is required when listening on {self.host} (not a loopback address)")
        if self.max_upload_mb <= 0:
            raise ValueError("max_upload_mb must be positive")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)
