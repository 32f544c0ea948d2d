"""Shared by the whole-run benchmarks: generate a study once, then time the analysis in a fresh process."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable


def run_in_fresh_process(script: str, data: Path | None, make: Callable[[Path], None], *extra: str,
                         around: Callable[[Path], dict] | None = None) -> dict:
    """Generate the study with ``make(folder)`` unless ``data`` holds one, run ``script --child DATA OUT *extra`` in
    a new interpreter (so its peak RSS is the analysis alone) and return the JSON object it prints last.

    ``around(folder)`` (optional) is called just before and just after that run (e.g. a reference timing on the
    same files in the same conditions); its result with the smaller ``"seconds"`` is returned as ``"around"``."""
    with tempfile.TemporaryDirectory() as tmp:
        data = data or Path(tmp) / "dicom"
        if not data.exists() or not any(data.iterdir()):
            t0 = time.perf_counter()
            make(data)
            print(f"generated study in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        out = Path(tmp) / "out"
        before = around(data) if around else None
        r = subprocess.run([sys.executable, script, "--child", str(data), str(out), *extra], capture_output=True,
                           text=True)
        if r.returncode != 0:
            print(r.stderr, file=sys.stderr)
            sys.exit(r.returncode)
        res = json.loads(r.stdout.strip().splitlines()[-1])
        if around:
            res["around"] = min(before, around(data), key=lambda a: a["seconds"])
        return res
