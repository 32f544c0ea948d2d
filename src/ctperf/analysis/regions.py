"""Regional statistics of the perfusion maps (``metrics.json`` ``regions``; docs/definitions.md §5).

For every region (core, penumbra, hypoperfusion, the two hemispheres and, when given, the user's ROI and
contralateral ROI) the volume and, per map, the mean, median and interquartile range of the finite voxel values.
Pure numpy: maps and masks in, a strict-JSON-able dict out.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

#: Maps summarised in every region, with their units.
REGION_MAPS: dict[str, str] = {"cbf": "mL/100g/min", "cbv": "mL/100g", "mtt": "s", "tmax": "s",
                               "rcbf": "fraction"}
#: Region names in output order.
REGION_NAMES = ("core", "penumbra", "hypoperfusion", "hemisphere_left", "hemisphere_right", "roi", "contra")


def map_statistics(values: np.ndarray) -> dict[str, float | int | None]:
    """Mean, median and interquartile range (75th - 25th percentile) of the finite entries of ``values``.

    Parameters
    ----------
    values : ndarray
        Any shape; NaN/inf entries are ignored.

    Returns
    -------
    dict
        ``mean``, ``median``, ``iqr`` (None when no finite value) and ``n`` (number of finite values).
    """
    v = np.asarray(values, float).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {"mean": None, "median": None, "iqr": None, "n": 0}
    q25, q50, q75 = np.percentile(v, [25.0, 50.0, 75.0])
    return {"mean": round(float(v.mean()), 4), "median": round(float(q50), 4), "iqr": round(float(q75 - q25), 4),
            "n": int(v.size)}


def regional_statistics(maps: Mapping[str, np.ndarray | None], regions: Mapping[str, np.ndarray | None], *,
                        voxel_volume_ml: float, unmeasured: Mapping[str, str] | None = None
                        ) -> dict[str, dict[str, Any]]:
    """Volume and per-map statistics of every region.

    Parameters
    ----------
    maps : mapping of str to ndarray (z, y, x) or None
        Keys of :data:`REGION_MAPS`; a missing or None map gives null statistics with a reason.
    regions : mapping of str to bool ndarray (z, y, x) or None
        Regions on the maps' grid; None entries are left out of the result (e.g. no ``--roi_mask``).
    voxel_volume_ml : float
        Volume of one voxel (mL).
    unmeasured : mapping of str to str, optional
        Regions that could not be measured (e.g. the core below the contrast-to-noise limit), with the reason: their
        volume and statistics are null with ``volume_reason`` / ``<map>_reason``, whatever their mask holds.

    Returns
    -------
    dict
        ``{region: {"volume_ml", "n_voxels", <map>: {"mean", "median", "iqr", "n"}}}``; an empty region or a
        region without finite values of a map carries ``<map>_reason``.

    Raises
    ------
    ValueError
        A region and a map of different shapes.
    """
    out: dict[str, dict[str, Any]] = {}
    for name, mask in regions.items():
        if mask is None:
            continue
        why = (unmeasured or {}).get(name)
        if why is not None:
            entry = {"volume_ml": None, "n_voxels": None, "volume_reason": why}
            for key in REGION_MAPS:
                entry[key], entry[f"{key}_reason"] = map_statistics(np.empty(0)), why
            out[name] = entry
            continue
        m = np.asarray(mask, bool)
        n = int(m.sum())
        entry: dict[str, Any] = {"volume_ml": round(n * float(voxel_volume_ml), 3), "n_voxels": n}
        for key in REGION_MAPS:
            vol = maps.get(key)
            if vol is None:
                entry[key] = map_statistics(np.empty(0))
                entry[f"{key}_reason"] = f"no {key.upper()} map"
                continue
            if vol.shape != m.shape:
                raise ValueError(f"region '{name}' has shape {m.shape}, {key} map {vol.shape}")
            entry[key] = map_statistics(vol[m])
            if entry[key]["mean"] is None:
                entry[f"{key}_reason"] = "empty region" if n == 0 else f"no finite {key.upper()} value in the region"
        out[name] = entry
    return out


def standard_regions(lesion: Any, tissue: np.ndarray, side: np.ndarray | None, roi: np.ndarray | None = None,
                     contra: np.ndarray | None = None) -> dict[str, np.ndarray | None]:
    """The regions of :data:`REGION_NAMES` on one grid: the lesion masks (``lesion.core`` / ``.penumbra`` /
    ``.hypoperfusion``), the tissue of each hemisphere (``side`` +1 left, -1 right; None: no midline) and the ROIs
    within tissue (None: not given)."""
    return {"core": lesion.core, "penumbra": lesion.penumbra, "hypoperfusion": lesion.hypoperfusion,
            "hemisphere_left": None if side is None else tissue & (side > 0),
            "hemisphere_right": None if side is None else tissue & (side < 0),
            "roi": None if roi is None else roi & tissue, "contra": None if contra is None else contra & tissue}
