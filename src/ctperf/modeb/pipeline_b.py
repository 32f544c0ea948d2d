"""Mode B: the same indices as Mode A from existing maps + a yellow ROI on a MIP screenshot + AIF/VOF curves.

load maps -> tissue mask -> ROI footprint (registered screenshot) -> midline -> masks -> indices -> write.
:func:`analyse_maps` is pure (arrays in, masks and metrics out); :func:`run_maps` adds the file edges and writes
``metrics.json``, ``metrics.csv``, ``log.txt``, the masks under Mode A's names (``hypoperf_mask_tmax6.nii.gz``,
``core_mask_rcbf30.nii.gz``, ``penumbra_mask.nii.gz``) and the seed's
``masks/{core,hypoperfusion,penumbra}_mask.nii.gz``, ``qa/roi_registration.png`` and Mode A's ``report.pdf``,
atomically.

Tissue mask (one rule for both modes: brain without CSF and large vessels).  Mode A finds CSF on the
pre-contrast CT, which maps alone do not show (CSF and infarct core both read low CBV / rCBF).  So Mode B uses,
in this order, ``--tissue_mask``, the mask (and midline, venous sinus) of the ctperf Mode A folder the maps come
from (then the indices equal Mode A's, except where the ROI footprint enters by design: the note names them, see
:func:`mode_a_note`), or a mask derived from the maps; ``metrics.json`` ``provenance.tissue_mask`` and the console
say which, and that the last can give other CBV indices than Mode A on the same maps.

Provenance as in Mode A: ``provenance.input_files`` and log.txt name the config file and ``--tissue_mask`` (name +
SHA-256) and hash the screenshot, maps and curves (:func:`input_files`); ``provenance.config`` holds only the
config sections Mode B uses (:func:`config_provenance`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from dataclasses import dataclass
from typing import Any

import numpy as np

from ctperf import DISCLAIMER, __version__
from ctperf.analysis.coverage import slab_coverage
from ctperf.analysis.indices import IndexInputs, compute_indices
from ctperf.analysis.masks import cortical_ribbon, lesion_masks
from ctperf.analysis.metrics import build_metrics
from ctperf.config import Config
from ctperf.core.grid import resample_to_grid, same_grid
from ctperf.core.types import (Curve, Hemispheres, LesionMasks, PerfusionResult, TissueMasks, spacing_xyz_mm,
                               voxel_volume_ml)
from ctperf.engine.hemispheres import find_midline
from ctperf.errors import InputError
from ctperf.io.metrics_files import write_metrics
from ctperf.io.nifti import load_volume, save_volume
from ctperf.io.outdir import MASK_FILES, atomic_output_dir, check_output_dir
from ctperf.modeb.curves_csv import read_curve_csv, time_to_peak_s
from ctperf.modeb.map_inputs import check_same_grid, load_map
from ctperf.modeb.roi_mip import roi_from_screenshot
from ctperf.pipeline import analysed_line, file_record, with_study_id

log = logging.getLogger("ctperf")

#: Voxels whose CBV exceeds this multiple of the median brain CBV are treated as large vessels.
VESSEL_CBV_FACTOR = 4.0
#: An rCBF map whose median over the brain exceeds this is read as percent and divided by 100.
RCBF_PERCENT_MEDIAN = 5.0


@dataclass
class ModeBResult:
    lesion: LesionMasks
    metrics: dict[str, Any]
    tissue: np.ndarray
    hemispheres: Hemispheres | None
    roi_footprint: np.ndarray | None
    #: The index keys of ``metrics`` (what :func:`ctperf.analysis.indices.compute_indices` gives, no reasons).
    index_keys: tuple[str, ...] = ()


def tissue_from_maps(tmax: np.ndarray, cbv: np.ndarray, rcbf: np.ndarray) -> np.ndarray:
    """Brain parenchyma on vendor maps: all three maps defined, CBV > 0, large vessels (very high CBV) removed."""
    defined = np.isfinite(tmax) & np.isfinite(cbv) & np.isfinite(rcbf)
    defined &= ~((tmax == 0) & (cbv == 0) & (rcbf == 0))  # zero-filled background of vendor exports
    brain = defined & (cbv > 0)
    if not brain.any():
        raise InputError("the maps contain no brain voxels (all undefined or zero)")
    median = float(np.median(cbv[brain]))
    return brain & (cbv < VESSEL_CBV_FACTOR * median)


def rcbf_as_fraction(rcbf: np.ndarray, tissue: np.ndarray) -> tuple[np.ndarray, str]:
    med = float(np.nanmedian(rcbf[tissue])) if tissue.any() else 1.0
    if med > RCBF_PERCENT_MEDIAN:
        return rcbf / 100.0, "percent"
    return rcbf, "fraction"


def analyse_maps(tmax_s: np.ndarray, cbv: np.ndarray, rcbf: np.ndarray, affine_ras: np.ndarray, cfg: Config,
                 roi_footprint: np.ndarray | None = None, aif_ttp_s: float | None = None,
                 vof_ttp_s: float | None = None, tissue: np.ndarray | None = None,
                 hemispheres: Hemispheres | None = None, provenance: dict | None = None,
                 qa_flags: dict[str, bool] | None = None, qa_values: dict[str, Any] | None = None,
                 sinus: np.ndarray | None = None) -> ModeBResult:
    """Indices from maps on one grid (pure).  ``rcbf`` is a fraction (1.0 = normal).

    ``tissue``, ``hemispheres`` and ``sinus`` default to what the maps alone allow (:func:`tissue_from_maps`,
    a midline fitted to the CBV map, no venous sinus); pass those of the analysis that made the maps (see
    :func:`saved_tissue`) to get exactly its indices.

    ``roi_footprint`` (the screenshot ROI extruded through all slices) restricts every lesion mask and volume,
    the Tmax level volumes (``tmax4_ml`` ...) included (docs/definitions.md, Mode B), and is the lesion-cortex ROI
    of the Conventional CBV Index.  The "normal-appearing" reference of the other CBV indices (Tmax < 4 s) still
    excludes the Tmax >= 4 s tissue of the whole brain, as in Mode A: a delayed region outside the ROI is not
    normal tissue.
    """
    if tissue is None:
        tissue = tissue_from_maps(tmax_s, cbv, rcbf)
    brain = tissue | (np.isfinite(tmax_s) & np.isfinite(cbv) & (np.nan_to_num(cbv) > 0))
    vox_ml = voxel_volume_ml(affine_ras)
    if hemispheres is None:
        try:
            hemispheres = find_midline(np.nan_to_num(cbv), brain, affine_ras)
        except ValueError:
            hemispheres = None
    lesion = lesion_masks(tmax_s, rcbf, tissue, vox_ml, cfg.thresholds, footprint=roi_footprint)
    # the CBV indices' "normal-appearing" reference excludes Tmax >= 4 s tissue of the whole brain, not only the
    # footprint's (docs/definitions.md: Tmax < 4 s of the unaffected hemisphere); the volumes stay clipped
    whole = lesion if roi_footprint is None else lesion_masks(tmax_s, rcbf, tissue, vox_ml, cfg.thresholds)
    indices = compute_indices(IndexInputs(
        cbv=cbv, tmax_s=tmax_s, lesion=lesion, tissue=tissue, voxel_volume_ml=vox_ml, thresholds=cfg.thresholds,
        hemispheres=hemispheres, cortex=cortical_ribbon(tissue, spacing_xyz_mm(affine_ras)) & tissue,
        aif_ttp_s=aif_ttp_s, vof_ttp_s=vof_ttp_s, sinus=sinus, roi_mask=roi_footprint,
        delayed=whole.tmax_levels.get(4.0, lesion.hypoperfusion)))
    # a lesion reaching the maps' first or last slice goes on beyond the slab, as in Mode A: lower-bound volumes
    covered = slab_coverage(lesion.hypoperfusion | lesion.core, affine_ras)
    qa_flags = {**(qa_flags or {}), **covered.qa_flags()}
    qa_values = {**(qa_values or {}), **covered.qa_values()}
    metrics = build_metrics(indices, mode="B", thresholds=cfg.thresholds, qa_flags=qa_flags, qa_values=qa_values,
                            provenance=provenance or {}, method=MODE_B_METHOD,
                            regions=_regions(tmax_s, cbv, rcbf, tissue, lesion, hemispheres, roi_footprint, vox_ml))
    return ModeBResult(lesion=lesion, metrics=metrics, tissue=tissue, hemispheres=hemispheres,
                       roi_footprint=roi_footprint, index_keys=tuple(k for k in indices if not k.endswith("_reason")))


#: What Mode B's numbers rest on (metrics.json ``method``): the given maps, not ctperf's engine.
MODE_B_METHOD = {"engine_version": None, "deconvolution": "none (Mode B: vendor maps)",
                 "convention": "that of the software that made the maps",
                 "cbf": "not given (Mode B reads Tmax, CBV and rCBF maps)", "tmax": "the given Tmax map"}


def _regions(tmax_s, cbv, rcbf, tissue, lesion, hemispheres, roi_footprint, vox_ml) -> dict[str, Any]:
    """Regional statistics as in Mode A (docs/definitions.md §5); CBF and MTT are not given in Mode B."""
    from ctperf.analysis.regions import regional_statistics, standard_regions

    side = hemispheres.side if hemispheres is not None else None
    regions = standard_regions(lesion, tissue, side, roi=roi_footprint)
    maps = {"cbf": None, "cbv": cbv, "mtt": None, "tmax": tmax_s, "rcbf": rcbf}
    return regional_statistics(maps, regions, voxel_volume_ml=vox_ml)


#: QA limits for Mode B inputs.
MIN_ROI_REGISTRATION_SCORE = 0.7
MAX_COLOUR_REJECTED_FRACTION = 0.05
MIN_CURVE_PEAK_RATIO = 2.0


def _curve_is_flat(t: np.ndarray, y: np.ndarray) -> bool:
    """No bolus: the peak does not rise clearly above the first samples, or it sits at either end."""
    i = int(np.argmax(y))
    base = float(np.median(y[: max(2, len(y) // 10)]))
    rise = float(y[i]) - base
    spread = float(np.median(np.abs(y - np.median(y)))) or 1e-9
    return i in (0, len(y) - 1) or rise <= MIN_CURVE_PEAK_RATIO * spread


def mode_b_qa(registration: dict, infos: dict, aif, vof, aif_ttp: float, vof_ttp: float):
    """QA flags and the values behind them for Mode B inputs."""
    score = float(registration.get("score", float("nan")))
    rejected = {name: float(info.get("residual", {}).get("rejected_fraction", 0.0))
                for name, info in infos.items() if info.get("kind") == "dicom_colour"}
    flags = {
        "roi_registration_poor": bool(not np.isfinite(score) or score < MIN_ROI_REGISTRATION_SCORE),
        "colour_decoding_poor": bool(any(v > MAX_COLOUR_REJECTED_FRACTION for v in rejected.values())),
        "aif_curve_flat": _curve_is_flat(*aif),
        "vof_curve_flat": _curve_is_flat(*vof),
        "vof_peaks_before_aif": bool(vof_ttp <= aif_ttp),
    }
    values = {"roi_registration_score": score, "roi_registration_scale": registration.get("scale"),
              **{f"colour_rejected_fraction_{k}": v for k, v in rejected.items()}}
    return flags, values


#: How the tissue (parenchyma) mask of a Mode B run was obtained, for provenance and the console.
TISSUE_RULE = ("tissue = brain without CSF and large vessels (the rule of Mode A); Mode A finds CSF on the "
               "pre-contrast CT")
#: The tissue source of Mode A's own maps.
MODE_A_SOURCE = ("tissue mask, midline and venous sinus of the ctperf Mode A analysis that made these maps "
                 "(aux/ beside them)")
#: Why an index of Mode B on Mode A's own maps (its tissue, midline and sinus) can still differ from Mode A's.
DIFFERENCE_CAUSES = {
    "footprint": "by design: Mode B counts lesion tissue inside the ROI footprint only, Mode A in the whole brain",
    "roi": "by design: the ROI footprint is its lesion-cortex ROI, Mode A uses only a given --roi_mask",
    "withheld": "Mode A withheld them for a limit of the raw CT that maps do not show, see its *_reason",
    "thresholds": "the thresholds differ from the Mode A run's",
}
TISSUE_NOTES = {
    # used as is only when Mode A's metrics.json cannot be read; else :func:`mode_a_note` names the keys
    "mode_a": f"{MODE_A_SOURCE}: indices as Mode A's except the lesion volumes and the indices resting on them "
              f"({DIFFERENCE_CAUSES['footprint']}) and Conventional_CBV_Index ({DIFFERENCE_CAUSES['roi']})",
    "user": "tissue mask given with --tissue_mask",
    "maps": "tissue mask derived from the maps alone (defined, CBV > 0, large vessels removed): without the CT, "
            "CSF cannot be excluded as Mode A does, so CBV indices and core volume can differ from Mode A's on "
            "the same maps (give --tissue_mask, or keep Mode A's aux/ folder beside its maps)",
}


@dataclass
class TissueSource:
    """Tissue mask for Mode B and where it came from (``kind``: ``mode_a``, ``user`` or ``maps``)."""

    kind: str
    tissue: np.ndarray | None = None
    hemispheres: Hemispheres | None = None
    sinus: np.ndarray | None = None
    masks: TissueMasks | None = None
    #: The ``--tissue_mask`` file (name + SHA-256, ``grid`` "same" or "resampled") for ``provenance.input_files``.
    record: dict[str, Any] | None = None

    def provenance(self) -> dict[str, str]:
        return {"source": self.kind, "rule": TISSUE_RULE, "note": TISSUE_NOTES[self.kind]}


def saved_tissue(tmax_path, shape_zyx, affine_ras) -> TissueSource | None:
    """The tissue mask, midline and sinus of a ctperf Mode A output folder holding ``tmax_path`` (else None).

    Only used when the folder is complete (see :func:`ctperf.pipeline.load_saved_result`) and its grid is the
    grid of the maps given.
    """
    from ctperf.analysis.masks import sinus_region
    from ctperf.pipeline import load_saved_result

    if not _in_mode_a_folder(tmax_path):
        return None
    try:
        perf, _, _, _ = load_saved_result(Path(tmax_path).parent)
    except InputError:
        return None
    if perf.tmax.shape != tuple(shape_zyx) or not np.allclose(perf.affine_ras, affine_ras, atol=0.01):
        return None
    return TissueSource("mode_a", perf.masks.tissue, perf.hemispheres,
                        sinus_region(perf.masks.vessels, perf.vof.voxels_zyx), perf.masks)


def _in_mode_a_folder(tmax_path) -> bool:
    """``tmax_path`` is a NIfTI map in a ctperf Mode A output folder (one with ``aux/analysis.json``)."""
    p = Path(tmax_path)
    return p.is_file() and p.name.endswith((".nii", ".nii.gz")) and (p.parent / "aux" / "analysis.json").is_file()


def _tissue_source(tissue_mask, tmax_path, shape_zyx, affine_ras) -> TissueSource:
    if tissue_mask is not None:
        tvol, taff = load_volume(tissue_mask)
        record = {**file_record(tissue_mask),
                  "grid": "same" if same_grid(tvol.shape, taff, shape_zyx, affine_ras) else "resampled"}
        return TissueSource("user", resample_to_grid(tvol, taff, shape_zyx, affine_ras) > 0.5, record=record)
    return saved_tissue(tmax_path, shape_zyx, affine_ras) or TissueSource("maps")


def mode_a_metrics(tmax_path) -> dict[str, Any]:
    """The metrics document of the ctperf Mode A result whose map ``tmax_path`` is, else ``{}``."""
    if not _in_mode_a_folder(tmax_path):
        return {}
    try:
        doc = json.loads((Path(tmax_path).parent / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) and doc.get("mode") == "A" else {}


def _mode_b_study_id(mode_a: dict[str, Any]) -> tuple[str | None, str]:
    """The study_id of the Mode A result holding the maps (whatever the tissue source), else none: maps carry no
    DICOM study UID."""
    if mode_a.get("study_id"):
        return mode_a["study_id"], "the Mode A result holding the maps"
    return None, "Mode B maps carry no DICOM study to derive a pseudonymous id from"


def _plain(value: Any) -> Any:
    """``value`` as JSON reads it back (tuples as lists), to compare a document in memory with one on disk."""
    return json.loads(json.dumps(value, default=str))


def differences_from_mode_a(metrics: dict[str, Any], mode_a: dict[str, Any], keys) -> dict[str, list[str]]:
    """The index ``keys`` whose value differs from Mode A's on the same maps, grouped by cause (the keys of
    :data:`DIFFERENCE_CAUSES`).  Keys an older Mode A result lacks are not compared."""
    same_thresholds = _plain(metrics.get("thresholds")) == _plain(mode_a.get("thresholds"))
    out: dict[str, list[str]] = {}
    for key in keys:
        if key not in mode_a or _plain(metrics.get(key)) == mode_a[key]:
            continue
        cause = ("thresholds" if not same_thresholds else "roi" if key == "Conventional_CBV_Index"
                 else "withheld" if mode_a[key] is None else "footprint")
        out.setdefault(cause, []).append(key)
    return out


def mode_a_note(metrics: dict[str, Any], mode_a: dict[str, Any], keys) -> str:
    """The console / ``provenance.tissue_mask.note`` text for Mode B on Mode A's own maps: identical indices, or
    the ones that differ and why."""
    if not mode_a:
        return TISSUE_NOTES["mode_a"]
    diff = differences_from_mode_a(metrics, mode_a, keys)
    if not diff:
        return f"{MODE_A_SOURCE}: indices identical to Mode A's"
    parts = [f"{', '.join(names)} ({DIFFERENCE_CAUSES[cause]})" for cause, names in diff.items()]
    return f"{MODE_A_SOURCE}: indices identical to Mode A's except " + "; ".join(parts)


def summary_result(tmax, cbv, rcbf, affine, res: ModeBResult, src: TissueSource, aif, vof) -> PerfusionResult:
    """A :class:`PerfusionResult` view of a Mode B run for the shared QA figures and PDF summary.

    CBF, MTT and TTP are unknown (NaN); the curves are the CSV values as given.
    """
    unknown = np.full(tmax.shape, np.nan, np.float32)
    brain = np.isfinite(tmax) & np.isfinite(cbv)
    masks = src.masks or TissueMasks(brain=brain | res.tissue, csf=np.zeros(tmax.shape, bool),
                                     vessels=(brain | res.tissue) & ~res.tissue)
    hemi = res.hemispheres or Hemispheres(np.zeros(tmax.shape, np.int8), np.eye(4), np.zeros(3), np.zeros(3))
    return PerfusionResult(
        affine_ras=affine, cbf=unknown, cbv=cbv, mtt=unknown, tmax=tmax, ttp=unknown, rcbf=rcbf, masks=masks,
        hemispheres=hemi, aif=Curve(*aif), vof=Curve(*vof), affected_side=str(res.metrics.get("lesion_side")),
        reference_cbf=float("nan"), baseline_hu=np.zeros(tmax.shape, np.float32),
        qa_flags=dict(res.metrics.get("qa_flags") or {}), qa_values=dict(res.metrics.get("qa_values") or {}))


#: The config sections Mode B uses; the others set ctperf's own engine for raw CT perfusion (Mode A).
MODE_B_CONFIG_SECTIONS = ("thresholds", "output")


def config_provenance(cfg: Config) -> dict[str, Any]:
    """``provenance.config`` (only the sections Mode B uses) and ``config_not_used``.

    The engine sections (deconvolution, AIF, preprocessing, ...) are left out, so that no reader takes e.g.
    ``deconvolution.method`` for the method of a result made from vendor maps; ``config_not_used`` names them,
    with any setting the config changed there (ignored).
    """
    given, default = cfg.to_dict(), Config().to_dict()
    unused = [s for s in given if s not in MODE_B_CONFIG_SECTIONS]
    ignored = {f"{s}.{k}": v for s in unused for k, v in given[s].items() if _plain(v) != _plain(default[s][k])}
    return {"config": {s: given[s] for s in MODE_B_CONFIG_SECTIONS},
            "config_not_used": {"sections": unused, "ignored_settings": ignored,
                                "reason": "ctperf's engine settings for raw CT perfusion (Mode A); Mode B reads "
                                          "the maps as given"}}


def data_record(path) -> dict[str, Any]:
    """SHA-256 of an input image or curve file; for a DICOM series (a folder or a list of files), the SHA-256 of
    its files' sorted SHA-256s, and their number.

    No name: screenshots and exported maps are often named after the patient (the config and mask files are named,
    as in Mode A).
    """
    paths = [Path(p) for p in path] if isinstance(path, (list, tuple)) else [Path(path)]
    if len(paths) == 1 and paths[0].is_file():
        return {"sha256": file_record(paths[0])["sha256"]}
    files = [f for p in paths for f in ([p] if p.is_file() else sorted(p.rglob("*"))) if f.is_file()]
    digests = sorted(file_record(f)["sha256"] for f in files)
    return {"sha256": hashlib.sha256("\n".join(digests).encode()).hexdigest(), "n_files": len(digests)}


def input_files(config_file, src: TissueSource, data: dict[str, Any], ignored: dict[str, Any]) -> dict[str, Any]:
    """``provenance.input_files`` of a Mode B run: the config file (None: none given) and ``--tissue_mask`` by name
    + SHA-256 as Mode A records its config and masks, then the screenshot, maps and curves (:func:`data_record`).

    ``ignored`` (engine settings the config file changed) becomes the config record's ``note``, which the
    console shows.
    """
    config = None if config_file is None else file_record(config_file)
    if config is not None and ignored:
        config["note"] = (f"config {config['file']}: Mode B reads vendor maps and ignores the engine settings "
                          + ", ".join(f"{k} = {v}" for k, v in ignored.items()))
    return {"config": config, **({"tissue_mask": src.record} if src.record else {}),
            **{role: data_record(p) for role, p in data.items()}}


def log_lines(metrics: dict[str, Any]) -> list[str]:
    """log.txt of a Mode B run: versions, the UTC date and time of the analysis, study_id, the input files, QA flags
    and the provenance, as Mode A's."""
    prov = metrics.get("provenance", {})
    return [f"ctperf {__version__} (Mode B) - {DISCLAIMER}",
            analysed_line(),
            f"definition_version: {metrics.get('definition_version')}",
            f"study_id: {metrics.get('study_id')}",
            "input files (config and masks: name, sha256; images and curves: sha256): "
            + json.dumps(prov.get("input_files", {})),
            "inputs: " + json.dumps({k: v.get("kind") for k, v in (prov.get("inputs") or {}).items()}),
            "qa_flags: " + json.dumps(metrics.get("qa_flags", {})),
            "provenance: " + json.dumps(prov, default=str)]


def run_maps(mip, tmax, cbv, rcbf, aif_csv, vof_csv, out_dir, cfg: Config | None = None,
             ranges: dict[str, tuple[float, float] | None] | None = None, tissue_mask=None, *,
             config_file=None) -> dict[str, Any]:
    """Mode B from files to an output folder; returns the metrics document.

    ``config_file`` is the file ``cfg`` was read from: it, ``tissue_mask`` (name + SHA-256) and the screenshot,
    maps and curves (SHA-256) are recorded in ``provenance.input_files`` and log.txt (:func:`input_files`).
    """
    cfg = cfg or Config()
    ranges = ranges or {}
    check_output_dir(out_dir)
    maps, infos = {}, {}
    for name, path in (("tmax", tmax), ("cbv", cbv), ("rcbf", rcbf)):
        vol, aff, info = load_map(path, value_range=ranges.get(name))
        maps[name] = (vol, aff)
        infos[name] = {k: v for k, v in info.items() if k in ("kind", "residual", "warnings", "colour_bar",
                                                                "rejected_fraction", "residual_mean",
                                                                "residual_p95")}
    check_same_grid(maps)
    tmax_v, affine = maps["tmax"]
    cbv_v, rcbf_v = maps["cbv"][0], maps["rcbf"][0]
    src = _tissue_source(tissue_mask, tmax, tmax_v.shape, affine)
    tissue = src.tissue
    t_ref = tissue if tissue is not None else tissue_from_maps(tmax_v, cbv_v, rcbf_v)
    rcbf_v, rcbf_unit = rcbf_as_fraction(rcbf_v, t_ref)

    roi = roi_from_screenshot(mip, tmax_v, affine)
    t_aif, y_aif = read_curve_csv(aif_csv)
    t_vof, y_vof = read_curve_csv(vof_csv)
    aif_ttp, vof_ttp = time_to_peak_s(t_aif, y_aif), time_to_peak_s(t_vof, y_vof)
    qa_flags, qa_values = mode_b_qa(roi.registration, infos, (t_aif, y_aif), (t_vof, y_vof), aif_ttp, vof_ttp)
    config = config_provenance(cfg)
    files = input_files(config_file, src, {"mip": mip, "tmax": tmax, "cbv": cbv, "rcbf": rcbf,
                                           "aif_csv": aif_csv, "vof_csv": vof_csv},
                        config["config_not_used"]["ignored_settings"])
    provenance = {"software_version": __version__, "input_files": files, "inputs": infos,
                  "rcbf_input_unit": rcbf_unit,
                  "roi_registration": {k: v for k, v in roi.registration.items()
                                       if k in ("scale", "dx", "dy", "score", "roi_map_px", "flips",
                                                "mip_colour_coded", "yellow_in_map_px")},
                  "roi_to_3d": "the 2D ROI drawn on the axial MIP is extruded through all slices (footprint)",
                  "tissue_mask": src.provenance(), **config}
    res = analyse_maps(tmax_v, cbv_v, rcbf_v, affine, cfg, roi_footprint=roi.footprint_zyx,
                       aif_ttp_s=aif_ttp, vof_ttp_s=vof_ttp, tissue=tissue, hemispheres=src.hemispheres,
                       sinus=src.sinus, provenance=provenance, qa_flags=qa_flags, qa_values=qa_values)

    mode_a = mode_a_metrics(tmax)
    res.metrics = with_study_id(res.metrics, *_mode_b_study_id(mode_a))
    if src.kind == "mode_a":
        res.metrics["provenance"]["tissue_mask"]["note"] = mode_a_note(res.metrics, mode_a, res.index_keys)
    with atomic_output_dir(out_dir) as tmp:
        (tmp / "masks").mkdir()
        for name in ("core", "hypoperfusion", "penumbra"):  # the seed's names and Mode A's names
            save_volume(tmp / "masks" / f"{name}_mask.nii.gz", getattr(res.lesion, name), affine, dtype=np.uint8)
            save_volume(tmp / MASK_FILES[name], getattr(res.lesion, name), affine, dtype=np.uint8)
        save_volume(tmp / "masks" / "roi_footprint_mask.nii.gz", roi.footprint_zyx, affine, dtype=np.uint8)
        if cfg.output.write_qa_png:
            from ctperf.modeb.roi_mip import load_screenshot
            from ctperf.viz.qa_figures import fig_roi_registration

            fig_roi_registration(load_screenshot(mip), tmax_v, affine, roi.mask2d_yx, res.lesion, res.metrics,
                                 tmp / "qa" / "roi_registration.png")
        if cfg.output.write_pdf:
            from ctperf.viz.report import write_summary_pdf

            view = summary_result(tmax_v, cbv_v, rcbf_v, affine, res, src, (t_aif, y_aif), (t_vof, y_vof))
            write_summary_pdf(view, res.lesion, res.metrics, tmp / "report.pdf")
        write_metrics(res.metrics, tmp)
        (tmp / "log.txt").write_text("\n".join(log_lines(res.metrics)) + "\n", encoding="utf-8")
    return res.metrics
