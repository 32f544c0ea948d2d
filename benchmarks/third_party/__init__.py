"""Converters that turn third-party perfusion reference data into ctperf studies (validation only).

The data live in ``../shared/third_party`` next to the worktree (see its README) and are read at run time; they are
never copied into this repository (their licences differ from ctperf's MIT).  Each module exposes ``available()``
and ``load(...)`` returning :class:`~third_party._layout.ThirdPartyCase` objects.  :func:`data_dir` finds the
folder (environment variable ``CTPERF_THIRD_PARTY`` overrides it); ``None`` when absent, so callers skip.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def data_dir() -> Path | None:
    """The third-party data folder, or None when it is absent."""
    env = os.environ.get("CTPERF_THIRD_PARTY")
    cands = [Path(env)] if env else []
    cands += [ROOT.parent / "shared" / "third_party", ROOT / ".." / "shared" / "third_party"]
    for c in cands:
        if c.is_dir():
            return c.resolve()
    return None
