"""Settings of the DICOM node (validated on construction)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from ctperf.errors import InputError

_AET = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # DICOM AE: 16 chars of the default repertoire, no backslash


def check_aet(value: str, what: str) -> str:
    value = value.strip()
    if not _AET.match(value) or not value.strip():
        raise InputError(f"{what} '{value}' is not a valid AE title (1-16 printable characters, no backslash)")
    return value


@dataclass(frozen=True)
class Destination:
    """A C-STORE destination ``AET@HOST:PORT``."""

    ae_title: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


def parse_forward(text: str) -> Destination:
    """Parse ``AET@HOST:PORT``.

    Raises
    ------
    InputError
        When the text does not have that form or the port is out of range.
    """
    m = re.match(r"^(?P<aet>[^@]+)@(?P<host>[^:@]+):(?P<port>\d+)$", text.strip())
    if not m or not 0 < int(m["port"]) < 65536:
        raise InputError(f"--forward '{text}' must look like AET@HOST:PORT (e.g. PACS@10.0.0.5:104)")
    return Destination(check_aet(m["aet"], "--forward AE title"), m["host"], int(m["port"]))


@dataclass(frozen=True)
class NodeSettings:
    """Everything the node needs; see ``ctperf node --help``.

    Times are in seconds.
    """

    out: Path
    ae_title: str = "CTPERF"
    port: int = 11112
    host: str = "0.0.0.0"
    forward: Destination | None = None
    allow: tuple[str, ...] = ()
    quiet_s: float = 30.0
    retries: int = 3
    retry_delay_s: float = 5.0
    poll_s: float = 0.5
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        check_aet(self.ae_title, "--ae-title")
        for a in self.allow:
            check_aet(a, "--allow")
        if not 0 < self.port < 65536:
            raise InputError(f"--port {self.port} is out of range 1-65535")
        if self.quiet_s <= 0 or self.retries < 1 or self.retry_delay_s < 0:
            raise InputError("--quiet-seconds must be > 0, --retries >= 1 and --retry-delay >= 0")

    @property
    def spool(self) -> Path:
        return self.out / "spool"

    @property
    def results(self) -> Path:
        return self.out / "results"

    @property
    def db_path(self) -> Path:
        return self.out / "node.sqlite"

    @property
    def log_path(self) -> Path:
        return self.out / "node.log"


def uid_key(uid: str, n: int = 16) -> str:
    """Short, stable, non-identifying name for a UID (hex of its SHA-256)."""
    return hashlib.sha256(str(uid).encode()).hexdigest()[:n]
