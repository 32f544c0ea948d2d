"""Collect many studies' metrics.json into one table (one row per study), as CSV or Excel.

Seed-compatible usage::

    python -m ctperf.utils.aggregate_metrics --input_dir D --output summary.csv [--format xlsx]

Each row carries ``study`` (the folder of the metrics.json relative to the input folder, ``/``-separated),
``study_id`` (the pseudonymous identifier of the study, empty for results written before it existed), the
software and definition versions, and the flattened metrics (nested objects as ``section.key``).  The column
order is stable: it depends on the column names only, never on which study was read first.  A warning is printed
when the studies were made with different software or definition versions, or different thresholds, and when rows
share a ``study_id`` (one study counted twice).  Unreadable files are skipped with a warning on stderr; hidden
folders (e.g. unfinished temporary output) are not searched.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Callable

import pandas as pd

from ctperf.analysis.indices import UNITS
from ctperf.analysis.metrics import flatten
from ctperf.errors import CTPerfError, InputError

#: Columns that open every row, in this order.
LEAD_COLUMNS = ("study", "study_id", "software_version", "definition_version", "mode")
#: Nested sections, in this order after the top-level values.
SECTIONS = ("thresholds", "qa_flags", "qa_values", "regions", "method", "units", "constants", "provenance")
#: Columns whose values should agree across a cohort (a warning otherwise).
MUST_AGREE = ("software_version", "definition_version")
FORMATS = ("csv", "xlsx")


def _print_warning(message: str) -> None:
    print(f"aggregate_metrics: warning: {message}", file=sys.stderr)


def collect(input_dir: str | Path, warn: Callable[[str], None] = _print_warning) -> pd.DataFrame:
    """Read every metrics.json below ``input_dir`` into a DataFrame with stable column order."""
    root = Path(input_dir)
    if not root.is_dir():
        raise InputError(f"input folder not found: {root}")
    rows = []
    for path in sorted(root.rglob("metrics.json")):
        rel = path.parent.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            warn(f"skipping {path}: {exc}")
            continue
        if not isinstance(doc, dict):
            warn(f"skipping {path}: not a JSON object")
            continue
        flat = flatten(doc)
        rows.append({"study": rel.as_posix() if str(rel) != "." else root.name,
                     "study_id": flat.pop("study_id", None), **flat})
    if not rows:
        raise InputError(f"no metrics.json found below {root}")
    df = pd.DataFrame(rows)
    return df[ordered_columns(df.columns)]


def ordered_columns(columns) -> list[str]:
    """Lead columns, index values (in the order of :data:`ctperf.analysis.indices.UNITS`), other top-level values
    (sorted), then the nested sections in :data:`SECTIONS` order (keys sorted), then anything else (sorted)."""
    cols = [str(c) for c in columns]
    lead = [c for c in LEAD_COLUMNS if c in cols]
    top = [c for c in cols if "." not in c and c not in lead]
    known = [k for k in UNITS if k in top]
    rest_top = sorted(c for c in top if c not in known and c not in ("software", "disclaimer"))
    nested = [c for s in SECTIONS for c in sorted(c for c in cols if c.startswith(s + "."))]
    tail = [c for c in ("software", "disclaimer") if c in cols]
    placed = set(lead + known + rest_top + nested + tail)
    return lead + known + rest_top + nested + sorted(c for c in cols if c not in placed) + tail


def mixed_values(df: pd.DataFrame) -> list[str]:
    """Warnings for versions and thresholds that differ between studies."""
    out = []
    for col in [*MUST_AGREE, *(c for c in df.columns if str(c).startswith("thresholds."))]:
        if col not in df.columns:
            continue
        counts = df[col].astype(str).where(df[col].notna(), "missing").value_counts()
        if len(counts) > 1:
            shown = ", ".join(f"{v}: {n} stud{'y' if n == 1 else 'ies'}" for v, n in counts.items())
            out.append(f"studies were made with different {col} values ({shown}); compare them with care")
    return out


def shared_study_ids(df: pd.DataFrame) -> list[str]:
    """Warnings for rows that share a ``study_id``: one per id, naming the folders (``study``) that hold it.

    The same study analysed twice, or one result copied to two folders, would otherwise enter a cohort's statistics
    twice unnoticed.  Rows without a study_id (results older than it) are not compared.
    """
    if "study_id" not in df.columns:
        return []
    known = df[df["study_id"].notna() & (df["study_id"].astype(str) != "")]
    out = []
    for study_id, rows in known.groupby(known["study_id"].astype(str), sort=True):
        if len(rows) > 1:
            out.append(f"{len(rows)} rows share study_id {study_id} ({', '.join(map(str, rows['study']))}): the same "
                       "study analysed more than once, or one result in several folders; keep one row per study")
    return out


def aggregate(input_dir: str | Path, output: str | Path, fmt: str | None = None,
              warn: Callable[[str], None] = _print_warning) -> int:
    """Write the cohort table to ``output`` (CSV, or XLSX when ``fmt="xlsx"`` or the name ends in .xlsx).

    Returns the number of studies.  The file is written atomically (a temporary file renamed into place).
    """
    out = Path(output)
    fmt = fmt or ("xlsx" if out.suffix.lower() == ".xlsx" else "csv")
    if fmt not in FORMATS:
        raise InputError(f"--format must be one of {', '.join(FORMATS)} (got '{fmt}')")
    df = collect(input_dir, warn)
    for message in [*mixed_values(df), *shared_study_ids(df)]:
        warn(message)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "xlsx":
            try:
                import openpyxl  # noqa: F401
            except ImportError:
                raise InputError("--format xlsx needs openpyxl (pip install 'ctperf[cohort]')") from None
            df.to_excel(tmp, index=False, sheet_name="studies", engine="openpyxl")
        else:
            df.to_csv(tmp, index=False)
        os.replace(tmp, out)
    except OSError as exc:
        raise InputError(f"cannot write {out}: {exc.strerror or exc}") from None
    finally:
        _remove_temporary(tmp)
    return len(df)


def _remove_temporary(tmp: Path) -> None:
    """Remove the temporary file ``tmp`` if it was made.  Errors are ignored: where it could not be made (a
    read-only file system answers even the removal of a missing file with EROFS) the error to report is the one
    naming the output, and an error here would replace it with one naming the temporary file."""
    try:
        tmp.unlink(missing_ok=True)
    except OSError:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ctperf.utils.aggregate_metrics",
                                     description="Aggregate ctperf metrics.json files into one table.")
    parser.add_argument("--input_dir", "--input-dir", required=True, help="folder searched recursively")
    parser.add_argument("--output", default="summary.csv", help="output file (default summary.csv)")
    parser.add_argument("--format", choices=FORMATS, default=None,
                        help="csv or xlsx (default: from the output name, else csv)")
    args = parser.parse_args(argv)
    try:
        n = aggregate(args.input_dir, args.output, args.format)
    except CTPerfError as exc:
        print(f"aggregate_metrics: error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(f"{n} studies -> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
