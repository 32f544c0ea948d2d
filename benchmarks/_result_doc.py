"""The JSON document a measurement benchmark writes: what was run (benchmark, date, ctperf / engine / definition
versions, the research-use statement) and its parts; printed, and written to ``--out`` when given."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any


def emit(benchmark: str, parts: dict[str, Any], out: Path | None) -> int:
    """Print (and write to ``out``) the document of ``benchmark`` holding ``parts``; returns the exit code 0."""
    from ctperf import __version__
    from ctperf.core.constants import DEFINITION_VERSION, ENGINE_VERSION

    doc = {"benchmark": benchmark,
           "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "ctperf_version": __version__, "engine_version": ENGINE_VERSION, "definition_version": DEFINITION_VERSION,
           "disclaimer": "Research use only, not a medical device.", **parts}
    text = json.dumps(doc, indent=1)
    if out:
        out.write_text(text + "\n")
    print(text)
    return 0
