"""Collect many studies' metrics.json into one CSV (one row per study).

Seed-compatible usage::

    python -m ctperf.utils.aggregate_metrics --input_dir D --output summary.csv

Each row carries ``study`` (the folder of the metrics.json relative to the input folder), ``study_id`` (the
pseudonymous identifier of the study, empty for results written before it existed) and the flattened
metrics (nested objects as ``section.key``).  Unreadable files are skipped with a warning on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from ctperf.errors import CTPerfError, InputError
from ctperf.metrics_io import flatten


def collect(input_dir: str | Path) -> pd.DataFrame:
    root = Path(input_dir)
    if not root.is_dir():
        raise InputError(f"input folder not found: {root}")
    rows = []
    for path in sorted(root.rglob("metrics.json")):
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            print(f"aggregate_metrics: skipping {path}: {exc}", file=sys.stderr)
            continue
        if not isinstance(doc, dict):
            print(f"aggregate_metrics: skipping {path}: not a JSON object", file=sys.stderr)
            continue
        rel = path.parent.relative_to(root)
        flat = flatten(doc)
        rows.append({"study": str(rel) if str(rel) != "." else root.name, "study_id": flat.pop("study_id", None),
                     **flat})
    if not rows:
        raise InputError(f"no metrics.json found below {root}")
    return pd.DataFrame(rows)


def aggregate(input_dir: str | Path, output: str | Path) -> int:
    df = collect(input_dir)
    out = Path(output)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        df.to_csv(out, index=False)
    except OSError as exc:
        raise InputError(f"cannot write {out}: {exc.strerror or exc}") from None
    return len(df)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ctperf.utils.aggregate_metrics",
                                     description="Aggregate ctperf metrics.json files into one CSV.")
    parser.add_argument("--input_dir", "--input-dir", required=True, help="folder searched recursively")
    parser.add_argument("--output", default="summary.csv", help="output CSV (default summary.csv)")
    args = parser.parse_args(argv)
    try:
        n = aggregate(args.input_dir, args.output)
    except CTPerfError as exc:
        print(f"aggregate_metrics: error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(f"{n} studies -> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
