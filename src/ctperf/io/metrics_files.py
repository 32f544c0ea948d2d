"""metrics.json and metrics.csv files of a metrics document (:mod:`ctperf.analysis.metrics`), and its JSON schema."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from ctperf.analysis.metrics import dumps, flatten

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "schemas" / "metrics.schema.json"


def write_metrics(doc: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """Write metrics.json and metrics.csv into ``out_dir``."""
    out_dir = Path(out_dir)
    jpath, cpath = out_dir / "metrics.json", out_dir / "metrics.csv"
    jpath.write_text(dumps(doc) + "\n", encoding="utf-8")
    row = flatten(doc)
    with cpath.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(row))
        writer.writeheader()
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return jpath, cpath


def load_schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
