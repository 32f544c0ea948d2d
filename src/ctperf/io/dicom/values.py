"""DICOM value parsing (TM, DT, numbers, multi-values) and the UIDs ctperf needs by name."""

from __future__ import annotations

from typing import Any

import numpy as np
import pydicom

_NATIVE_LE = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"}
_IMPLICIT_LE = "1.2.840.10008.1.2"
_MEDIA_DIRECTORY = "1.2.840.10008.1.3.10"
_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def _tm_seconds(value: Any) -> float | None:
    """DICOM TM ('HHMMSS.frac', also 'HH:MM:SS') -> seconds since midnight, None if unparsable."""
    s = str(value or "").strip().replace(":", "")
    if len(s) < 2:
        return None
    try:
        hh = int(s[0:2])
        mm = int(s[2:4]) if len(s) >= 4 else 0
        ss = float(s[4:]) if len(s) > 4 else 0.0
    except ValueError:
        return None
    return hh * 3600.0 + mm * 60.0 + ss


def _dt_seconds(value: Any) -> float | None:
    """DICOM DT ('YYYYMMDDHHMMSS.frac[&ZZXX]') -> seconds since midnight of its day, None if no time part."""
    s = str(value or "").strip()
    for sign in "+-":
        if sign in s[8:]:
            s = s[: 8 + s[8:].index(sign)]
    return _tm_seconds(s[8:]) if len(s) > 8 else None


def _num(value: Any, kind=float):
    if value is None or value == "":
        return None
    try:
        return kind(value)
    except (TypeError, ValueError):
        return None


def _as_list(v) -> list:
    if v is None:
        return []
    if isinstance(v, (list, tuple, pydicom.multival.MultiValue)):
        return list(v)
    return [v]


def _unwrap_day(v: np.ndarray, ref: float) -> np.ndarray:
    """Seconds of the day -> seconds relative to ``ref``, midnight-safe for spans < 12 h."""
    return np.mod(np.asarray(v, float) - ref + 43200.0, 86400.0) - 43200.0
