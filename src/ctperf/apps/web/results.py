"""Result folders: list, open, describe, serve volumes, and re-threshold saved maps (no deconvolution).

Threshold previews call :func:`ctperf.pipeline.lesions_and_indices` on the maps that
:func:`ctperf.pipeline.load_saved_result` rebuilds from the folder (cached per folder); "apply" calls
:func:`ctperf.pipeline.recompute_outputs`, the same path as ``ctperf recompute``, which rewrites masks, metrics,
figures and the PDF.
"""

from __future__ import annotations

import copy
import hashlib
import json
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ctperf.apps.web.runs import STUDIES, UPLOADS
from ctperf.apps.web.security import Forbidden, resolve_inside
from ctperf.apps.web.settings import WebSettings
from ctperf.config import Config
from ctperf.errors import InputError

#: Viewer volumes: name -> (file inside the result folder, unit shown with the colour bar).
MAP_VOLUMES = {"cbf": ("cbf.nii.gz", "mL/100 g/min"), "cbv": ("cbv.nii.gz", "mL/100 g"), "mtt": ("mtt.nii.gz", "s"),
               "tmax": ("tmax.nii.gz", "s"), "ttp": ("ttp.nii.gz", "s"), "rcbf": ("rcbf.nii.gz", "fraction")}
MASK_VOLUMES = {"core": "core_mask_rcbf30.nii.gz", "penumbra": "penumbra_mask.nii.gz",
                "hypoperfusion": "hypoperf_mask_tmax6.nii.gz"}
BASELINE = "aux/baseline_hu.nii.gz"
#: Slider ranges (inclusive) accepted for threshold previews.
TMAX_RANGE_S = (2.0, 16.0)
RCBF_RANGE = (0.05, 0.9)
#: Indices shown in the metrics table, in order.
TABLE_KEYS = ["hypoperfusion_ml", "core_ml", "penumbra_ml", "mismatch_volume_ml", "Mismatch_Ratio", "tmax10_ml",
              "HIR", "Corrected_CBV_Index", "CBV_Index_contra_hemisphere", "Conventional_CBV_Index", "PVT_sec",
              "PVT_present", "lesion_side", "DEFUSE3_eligible", "EXTEND_eligible"]


@dataclass
class _Saved:
    stamp: float
    perf: Any
    roi: Any
    contra: Any
    provenance: dict
    cfg: Config


def _read_json(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{path.name} cannot be read: {exc}") from None
    if not isinstance(doc, dict):
        raise InputError(f"{path.name} is not a metrics document")
    return doc


def result_mode(folder: Path) -> str | None:
    """'A' (full Mode A folder, viewer and tuning available), 'B', or None when not a ctperf result folder."""
    if not (folder / "metrics.json").is_file():
        return None
    if (folder / "aux" / "analysis.json").is_file() and (folder / "tmax.nii.gz").is_file():
        return "A"
    return "B"


def table_rows(metrics: dict) -> list[dict[str, Any]]:
    units = metrics.get("units", {})
    rows = []
    for key in TABLE_KEYS:
        if key in metrics:
            rows.append({"key": key, "value": metrics[key], "unit": units.get(key, ""),
                         "reason": metrics.get(f"{key}_reason")})
    return rows


class ResultStore:
    """The result folders this server may show: every ctperf folder in ``results_dir`` plus opened ones."""

    def __init__(self, settings: WebSettings, cache_size: int = 2):
        self.s = settings
        self._opened: dict[str, Path] = {}
        self._saved: OrderedDict[str, _Saved] = OrderedDict()
        self._previews: OrderedDict[tuple, Any] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------------------------- folders
    def list(self) -> list[dict[str, Any]]:
        folders: dict[str, Path] = {}
        if self.s.results_dir.is_dir():
            for p in sorted(self.s.results_dir.iterdir()):
                if p.is_dir() and p.name not in (UPLOADS, STUDIES) and not p.name.startswith("."):
                    folders[p.name] = p
        folders.update(self._opened)
        rows = []
        for rid, p in folders.items():
            mode = result_mode(p)
            if mode is None:
                continue
            try:
                m = _read_json(p / "metrics.json")
            except InputError:
                continue
            rows.append({"id": rid, "name": self._display_name(rid, p), "mode": mode,
                         "modified": (p / "metrics.json").stat().st_mtime,
                         "hypoperfusion_ml": m.get("hypoperfusion_ml"), "core_ml": m.get("core_ml"),
                         "qa_flags": [k for k, v in m.get("qa_flags", {}).items() if v]})
        rows.sort(key=lambda r: r["modified"], reverse=True)
        return rows

    def _display_name(self, rid: str, p: Path) -> str:
        return p.name if (rid == p.name or self.s.show_identifiers) else rid

    def open(self, path: str) -> str:
        """Register a result folder given by path (inside the allowed folders); returns its id."""
        folder = resolve_inside(path, self.s.allowed_roots)
        if not folder.is_dir() or result_mode(folder) is None:
            raise InputError("that folder is not a ctperf result folder (no metrics.json)")
        if folder.parent == self.s.results_dir:
            return folder.name
        rid = "opened-" + hashlib.sha256(str(folder).encode()).hexdigest()[:10]
        self._opened[rid] = folder
        return rid

    def folder(self, rid: str) -> Path:
        if rid in self._opened:
            return self._opened[rid]
        if not rid or "/" in rid or "\\" in rid or rid.startswith(".") or rid in (UPLOADS, STUDIES):
            raise Forbidden("bad result id")
        p = resolve_inside(self.s.results_dir / rid, [self.s.results_dir])
        if not p.is_dir() or result_mode(p) is None:
            raise KeyError(rid)
        return p

    # ------------------------------------------------------------------------------------------- details
    def describe(self, rid: str) -> dict[str, Any]:
        p = self.folder(rid)
        metrics = _read_json(p / "metrics.json")
        mode = result_mode(p)
        files = sorted(str(f.relative_to(p)) for f in p.rglob("*") if f.is_file() and not f.name.startswith("."))
        doc: dict[str, Any] = {
            "id": rid, "name": self._display_name(rid, p), "mode": mode, "metrics": metrics,
            "table": table_rows(metrics), "thresholds": metrics.get("thresholds", {}),
            "qa_flags": [k for k, v in metrics.get("qa_flags", {}).items() if v], "files": files,
            "disclaimer": metrics.get("disclaimer"),
        }
        if mode == "A":
            analysis = _read_json(p / "aux" / "analysis.json")
            doc["curves"] = {k: analysis.get(k) for k in ("aif", "vof")}
            doc["maps"] = {k: {"unit": u} for k, (f, u) in MAP_VOLUMES.items() if (p / f).is_file()}
            doc["masks"] = [k for k, f in MASK_VOLUMES.items() if (p / f).is_file()]
            doc["tune_ranges"] = {"tmax_s": TMAX_RANGE_S, "rcbf": RCBF_RANGE}
        return doc

    def volume_path(self, rid: str, name: str) -> Path:
        p = self.folder(rid)
        rel = MAP_VOLUMES[name][0] if name in MAP_VOLUMES else MASK_VOLUMES.get(name)
        if name == "baseline":
            rel = BASELINE
        if rel is None or not (p / rel).is_file():
            raise KeyError(name)
        return p / rel

    # ------------------------------------------------------------------------------------ threshold tuning
    def _load(self, rid: str) -> _Saved:
        from ctperf.pipeline import load_saved_result

        p = self.folder(rid)
        if result_mode(p) != "A":
            raise InputError("threshold tuning needs a Mode A result folder (saved maps)")
        stamp = (p / "metrics.json").stat().st_mtime
        with self._lock:
            hit = self._saved.get(rid)
            if hit is not None and hit.stamp == stamp:
                self._saved.move_to_end(rid)
                return hit
        perf, roi, contra, provenance = load_saved_result(p)
        try:
            cfg = Config.from_dict(_read_json(p / "metrics.json").get("provenance", {}).get("config") or {})
        except InputError:
            cfg = Config()
        saved = _Saved(stamp, perf, roi, contra, provenance, cfg)
        with self._lock:
            self._saved[rid] = saved
            while len(self._saved) > self._cache_size:
                self._saved.popitem(last=False)
        return saved

    @staticmethod
    def thresholds_cfg(base: Config, tmax_s: float, rcbf: float) -> Config:
        if not (TMAX_RANGE_S[0] <= tmax_s <= TMAX_RANGE_S[1]):
            raise InputError(f"Tmax threshold must be within {TMAX_RANGE_S[0]}-{TMAX_RANGE_S[1]} s")
        if not (RCBF_RANGE[0] <= rcbf <= RCBF_RANGE[1]):
            raise InputError(f"rCBF threshold must be within {RCBF_RANGE[0]}-{RCBF_RANGE[1]}")
        cfg = copy.deepcopy(base)
        cfg.thresholds.tmax_hypoperfusion_s = float(tmax_s)
        cfg.thresholds.rcbf_core = float(rcbf)
        return cfg

    def preview(self, rid: str, tmax_s: float, rcbf: float):
        """Masks and indices for new thresholds, from the saved maps (nothing written)."""
        from ctperf.pipeline import lesions_and_indices

        key = (rid, round(tmax_s, 3), round(rcbf, 4))
        saved = self._load(rid)
        with self._lock:
            hit = self._previews.get(key)
            if hit is not None and hit[0] == saved.stamp:
                return hit[1]
        cfg = self.thresholds_cfg(saved.cfg, tmax_s, rcbf)
        res = lesions_and_indices(saved.perf, cfg, saved.roi, saved.contra,
                                  {**saved.provenance, "recomputed_from_saved_maps": True})
        with self._lock:
            self._previews[key] = (saved.stamp, res)
            while len(self._previews) > 8:
                self._previews.popitem(last=False)
        return res

    def preview_mask_bytes(self, rid: str, tmax_s: float, rcbf: float, mask: str) -> bytes:
        from ctperf.io.nifti import save_volume

        if mask not in MASK_VOLUMES:
            raise KeyError(mask)
        res = self.preview(rid, tmax_s, rcbf)
        return _nifti_bytes(save_volume, getattr(res.lesion, mask), res.perfusion.affine_ras, np.uint8)

    def curve_voxels_bytes(self, rid: str) -> bytes:
        """A label volume on the map grid: 1 at the AIF voxels, 2 at the VOF voxels."""
        from ctperf.io.nifti import save_volume

        saved = self._load(rid)
        lab = np.zeros(saved.perf.tmax.shape, np.uint8)
        for value, curve in ((1, saved.perf.aif), (2, saved.perf.vof)):
            zyx = curve.voxels
            ok = np.all((zyx >= 0) & (zyx < lab.shape), axis=1)
            lab[tuple(zyx[ok].T)] = value
        return _nifti_bytes(save_volume, lab, saved.perf.affine_ras, np.uint8)

    def apply(self, rid: str, tmax_s: float, rcbf: float) -> dict[str, Any]:
        """Write the new thresholds' masks, metrics, figures and PDF into the folder (``ctperf recompute``)."""
        from ctperf.pipeline import recompute_outputs

        saved = self._load(rid)
        recompute_outputs(self.folder(rid), self.thresholds_cfg(saved.cfg, tmax_s, rcbf))
        return self.describe(rid)


def _nifti_bytes(save_volume, vol, affine, dtype) -> bytes:
    with tempfile.TemporaryDirectory(prefix="ctperf-web-") as d:
        path = Path(d) / "v.nii.gz"
        save_volume(path, vol, affine, dtype=dtype)
        return path.read_bytes()
