"""The metrics document (written as metrics.json / metrics.csv by :mod:`ctperf.io.metrics_files`): strict JSON (no
NaN/Infinity), units, versions, thresholds and QA flags.

Layout of metrics.json: the index keys (see :mod:`ctperf.analysis.indices`) at the top level, as the original tool had
them, plus the objects ``software_versions``, ``units``, ``thresholds``, ``qa_flags``, ``qa_values``, ``provenance``
and (Mode A) ``regions``.
metrics.csv holds the same document as one row; nested objects are flattened as ``section.key``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import platform
import re
from typing import Any

import numpy as np

from ctperf import DISCLAIMER, __version__
from ctperf.analysis.indices import UNITS
from ctperf.core.constants import DEFINITION_VERSION, HCT_LARGE_VESSEL, HCT_SMALL_VESSEL, KH, RHO_G_PER_ML


def to_strict(obj: Any) -> Any:
    """Convert numpy scalars/arrays to Python types and NaN/Inf to None (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): to_strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_strict(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_strict(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if dataclasses.is_dataclass(obj):
        return to_strict(dataclasses.asdict(obj))
    return obj


#: The packages whose arithmetic or file reading makes the numbers of metrics.json (their versions are recorded).
NUMERIC_PACKAGES = ("numpy", "scipy", "pydicom", "nibabel", "scikit-image")


def software_versions() -> dict[str, str | None]:
    """Versions of Python, ctperf and :data:`NUMERIC_PACKAGES` (None for one not installed): a result is reproduced
    with the same versions (a different numpy or scipy can change a last digit)."""
    from importlib import metadata

    def version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    return {"python": platform.python_version(), "ctperf": __version__, **{n: version(n) for n in NUMERIC_PACKAGES}}


def build_metrics(indices: dict[str, Any], *, mode: str, thresholds: Any, qa_flags: dict[str, bool] | None = None,
                  qa_values: dict[str, Any] | None = None, provenance: dict[str, Any] | None = None,
                  method: dict[str, Any] | None = None, regions: dict[str, Any] | None = None) -> dict[str, Any]:
    """The metrics document: index values (None + ``<key>_reason`` when undefined), units, thresholds,
    constants, QA, provenance and, when given, the engine ``method`` and ``regions`` (see
    :mod:`ctperf.analysis.regions`)."""
    doc: dict[str, Any] = {
        "software": "ctperf",
        "software_version": __version__,
        "definition_version": DEFINITION_VERSION,
        "software_versions": software_versions(),
        "mode": mode,
        "disclaimer": DISCLAIMER,
    }
    # Index values that came out NaN/inf get a reason as well as a null.
    for key, value in indices.items():
        if isinstance(value, (float, np.floating)) and not math.isfinite(float(value)):
            doc[key] = None
            doc.setdefault(f"{key}_reason", "not a finite number")
        else:
            doc[key] = value
    doc["units"] = {k: UNITS[k] for k in indices if k in UNITS}
    doc["units"].update({k: "mL" for k in indices if re.fullmatch(r"tmax[0-9.]+_ml", k)})
    doc["thresholds"] = to_strict(thresholds)
    doc["constants"] = {"rho_g_per_ml": RHO_G_PER_ML, "hct_large_vessel": HCT_LARGE_VESSEL,
                        "hct_small_vessel": HCT_SMALL_VESSEL, "kH": KH}
    doc["qa_flags"] = to_strict(qa_flags or {})
    doc["qa_values"] = to_strict(qa_values or {})
    doc["provenance"] = to_strict(provenance or {})
    if method is not None:
        doc["method"] = to_strict(method)
    if regions is not None:
        from ctperf.analysis.regions import REGION_MAPS

        doc["regions"] = to_strict(regions)
        doc["units"].update({"regions.volume_ml": "mL", **{f"regions.{k}": u for k, u in REGION_MAPS.items()}})
    return to_strict(doc)


def dumps(doc: dict[str, Any]) -> str:
    return json.dumps(to_strict(doc), indent=2, allow_nan=False)


def flatten(doc: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in doc.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, list):
            flat[name] = json.dumps(value)
        else:
            flat[name] = value
    return flat
