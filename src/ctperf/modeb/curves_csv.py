"""AIF / VOF time curves from CSV files, and time to peak.

Tolerated CSV dialects: comma, semicolon, tab or whitespace separated; with or without a header row (any leading
non-numeric lines are treated as header / title lines); decimal commas when the separator is ``;``, tab or
whitespace (European spreadsheet export); extra columns; surrounding whitespace, quotes, blank lines and ``#``
comments; a UTF-8 byte-order mark.

Column choice: the time column is the header matching ``time`` / ``t`` / ``sec`` / ``s`` (``ms`` headers are
converted to seconds), else the first column.  The value column is ``value_column`` (name or 0-based index) if
given, else the first header matching a curve word (``hu``, ``value``, ``aif``, ``vof``, ``signal``,
``intensity``, ``enhancement``, ``density``, ``concentration``, ``mean``), else the first other column.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ctperf.core.types import time_to_peak_s as shared_time_to_peak_s
from ctperf.errors import InputError

_TIME_WORDS = {"t", "time", "times", "sec", "secs", "second", "seconds", "s", "ms", "acq", "acquisition",
               "timepoint", "tsec", "ts", "tms", "times"}
_VALUE_WORDS = re.compile(r"(hu|value|aif|vof|signal|intensity|enhancement|density|conc|mean|curve)", re.I)


def _split(line: str, sep: str | None) -> list[str]:
    parts = line.split() if sep is None else line.split(sep)
    return [p.strip().strip('"').strip("'").strip() for p in parts]


def _to_float(field: str, decimal_comma: bool) -> float:
    s = field.replace(" ", "")
    if decimal_comma:
        s = s.replace(",", ".")
    return float(s)  # raises ValueError for text


def _numeric_row(fields: list[str], decimal_comma: bool) -> bool:
    """At least two numeric fields, and numbers in at least half of the non-empty fields (text columns allowed)."""
    n_num = n_text = 0
    for f in fields:
        if f == "":
            continue
        try:
            _to_float(f, decimal_comma)
            n_num += 1
        except ValueError:
            n_text += 1
    return n_num >= 2 and n_num >= n_text


def parse_curve_text(text: str, value_column: str | int | None = None, min_rows: int = 4,
                     name: str = "curve") -> tuple[np.ndarray, np.ndarray]:
    """Parse CSV text to ``(time_s, values)`` float64 arrays sorted by time (see module docstring)."""
    lines = [ln.strip() for ln in text.lstrip("\ufeff").splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    if not lines:
        raise InputError(f"{name}: CSV file is empty")
    sample = "\n".join(lines[:50])
    if ";" in sample:
        sep, decimal_comma = ";", True
    elif "\t" in sample:
        sep, decimal_comma = "\t", True
    elif "," in sample:
        sep, decimal_comma = ",", False
    else:
        sep, decimal_comma = None, True

    rows = [_split(ln, sep) for ln in lines]
    first_data = next((i for i, r in enumerate(rows) if _numeric_row(r, decimal_comma)), None)
    if first_data is None:
        raise InputError(f"{name}: no numeric rows found (expected columns time_s and a value)")
    header = rows[first_data - 1] if first_data > 0 else None

    ncol = len(rows[first_data])
    t_col, t_scale = 0, 1.0
    v_col = None
    if header is not None:
        for i, h in enumerate(header):
            words = re.findall(r"[a-z]+", h.lower())
            if words and words[0] in _TIME_WORDS:
                t_col = i
                t_scale = 1e-3 if ("ms" in words or "millisec" in h.lower()) else 1.0
                break
    if isinstance(value_column, str):
        if header is None or value_column.lower() not in [h.lower() for h in header]:
            raise InputError(f"{name}: no column named {value_column!r} (columns: {header})")
        v_col = [h.lower() for h in header].index(value_column.lower())
    elif isinstance(value_column, int):
        v_col = value_column
    elif header is not None:
        v_col = next((i for i, h in enumerate(header) if i != t_col and _VALUE_WORDS.search(h)), None)
    if v_col is None:
        v_col = next((i for i in range(ncol) if i != t_col), None)
    if v_col is None or v_col == t_col:
        raise InputError(f"{name}: need a time column and a value column")

    t, y = [], []
    for r in rows[first_data:]:
        try:
            tv, yv = _to_float(r[t_col], decimal_comma), _to_float(r[v_col], decimal_comma)
        except (ValueError, IndexError):
            continue
        if np.isfinite(tv) and np.isfinite(yv):
            t.append(tv * t_scale)
            y.append(yv)
    if len(t) < min_rows:
        raise InputError(f"{name}: only {len(t)} usable rows (need >= {min_rows} time points)")
    t_arr, y_arr = np.asarray(t, float), np.asarray(y, float)
    order = np.argsort(t_arr, kind="stable")
    return t_arr[order], y_arr[order]


def read_curve_csv(path, value_column: str | int | None = None, min_rows: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Read an AIF / VOF CSV file as ``(time_s, values)`` sorted by time. Raises :class:`InputError`."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"curve file not found: {p}")
    raw = p.read_bytes()
    if b"\x00" in raw[:4096]:
        raise InputError(f"{p.name}: not a text CSV file")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    return parse_curve_text(text, value_column=value_column, min_rows=min_rows, name=p.name)


def time_to_peak_s(t: np.ndarray, y: np.ndarray) -> float:
    """Time to peak of a curve read from CSV (the same refinement as Mode A, :func:`ctperf.core.types.time_to_peak_s`);
    raises :class:`InputError` for a curve without finite samples."""
    ttp = shared_time_to_peak_s(t, y)
    if not np.isfinite(ttp):
        raise InputError("time_to_peak: empty curve")
    return ttp
