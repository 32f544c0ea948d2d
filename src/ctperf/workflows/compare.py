"""`ctperf compare`: a follow-up study against its baseline.

PRR_percent from the two metrics documents and, when both output folders hold maps, a rigid registration of the
follow-up to the baseline (SimpleITK, on the pre-contrast baseline images), the reperfusion map (baseline
hypoperfusion, Tmax above the threshold, whose follow-up Tmax is no longer above it) with its volume, and a
figure.  Results made with different thresholds or definition versions are refused unless ``force`` (as
``ctperf prr``, through :func:`prr_document`).  A value that rests on a hypoperfusion volume one of the studies
withheld (null in its metrics.json) is null too, with a reason naming that study and its own reason: the follow-up
Tmax map of a study whose lesion is unmeasurable must not read as "hypoperfusion persists", nor an emptied baseline
mask as "no hypoperfusion".  An ``out_dir`` holding an analysis result (Mode A or B) is refused unless ``overwrite``:
compare would replace it with its own few files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ctperf import DISCLAIMER, __version__
from ctperf.analysis.indices import prr_percent
from ctperf.analysis.metrics import to_strict
from ctperf.errors import InputError

MAPS_NEEDED = ("tmax.nii.gz", "hypoperf_mask_tmax6.nii.gz", "aux/baseline_hu.nii.gz", "aux/tissue_mask.nii.gz")


def read_metrics(path: str | Path) -> dict[str, Any]:
    """metrics.json of an output folder (or the file itself)."""
    p = Path(path)
    p = p / "metrics.json" if p.is_dir() else p
    if not p.is_file():
        raise InputError(f"no metrics.json at {path}")
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise InputError(f"{p} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InputError(f"{p} is not a metrics document")
    return doc


def check_compare_out_dir(out_dir: str | Path, overwrite: bool = False) -> None:
    """Fail before any work when ``out_dir`` cannot be written or holds an analysis result (Mode A or B).

    compare's result set (compare.json, masks, figure) replaces the folder's previous ctperf result as a whole, so
    writing into an analysis folder (even the follow-up just read) would delete its maps, metrics and report.  An
    earlier compare result (manifest mode null, no metrics.json) is replaced as for any command.

    Raises
    ------
    InputError
        ``out_dir`` is not writable, or holds an analysis result and ``overwrite`` is False.
    """
    from ctperf.io.outdir import check_output_dir, previous_result

    check_output_dir(out_dir)
    mode, files = previous_result(out_dir)
    if files and not overwrite and (mode is not None or "metrics.json" in files):
        what = f"a Mode {mode}" if mode is not None else "an analysis"
        raise InputError(f"output folder {out_dir} holds {what} result; choose another --out_dir, or pass "
                         f"--overwrite to replace it with this compare result")


def withheld_reasons(base: dict, follow: dict) -> dict[str, str]:
    """{study: reason} for each study ('baseline', 'follow-up') whose hypoperfusion volume is withheld.

    A withheld volume is null in metrics.json (lesion_unmeasured, global_tmax_delay, ...) with the study's own
    ``hypoperfusion_ml_reason``; its mask is emptied and its Tmax map is not a lesion reading.
    """
    out = {}
    for name, doc in (("baseline", base), ("follow-up", follow)):
        if doc.get("hypoperfusion_ml") is None:
            why = doc.get("hypoperfusion_ml_reason") or "hypoperfusion_ml is null or missing in its metrics.json"
            out[name] = f"{name} hypoperfusion not measured: {why}"
    return out


def prr_document(base: dict, follow: dict, force: bool = False) -> dict[str, Any]:
    """PRR_percent of two metrics documents with their definitions check (shared by ``compare`` and ``prr``).

    Raises
    ------
    InputError
        Different thresholds or definition versions without ``force``: the PRR of one study read at Tmax > 6 s
        against one read at 8 s measures the thresholds, not the reperfusion.
    """
    diffs = definition_differences(base, follow)
    if diffs and not force:
        raise InputError("baseline and follow-up were made with different definitions (" + "; ".join(diffs) +
                         "); re-run one with the other's config, or use --force to compare anyway")
    vols = [base.get("hypoperfusion_ml"), follow.get("hypoperfusion_ml")]
    prr, reason = prr_percent(*vols)
    doc: dict[str, Any] = {"PRR_percent": prr}
    if prr is None:
        doc["PRR_percent_reason"] = "; ".join(withheld_reasons(base, follow).values()) or reason
    doc.update({"baseline_hypoperfusion_ml": vols[0], "followup_hypoperfusion_ml": vols[1],
                "definition_version": base.get("definition_version"), "thresholds": base.get("thresholds"),
                "forced": bool(force and diffs), "definition_differences": diffs})
    return doc


def definition_differences(base: dict, follow: dict) -> list[str]:
    """Thresholds and definition version that differ between two metrics documents ('name: a vs b')."""
    out = []
    if base.get("definition_version") != follow.get("definition_version"):
        out.append(f"definition_version: {base.get('definition_version')} vs {follow.get('definition_version')}")
    tb, tf = base.get("thresholds") or {}, follow.get("thresholds") or {}
    for key in sorted(set(tb) | set(tf)):
        if tb.get(key) != tf.get(key):
            out.append(f"thresholds.{key}: {tb.get(key)} vs {tf.get(key)}")
    return out


@dataclass
class Reperfusion:
    """Voxel-wise comparison on the baseline grid (bool (z, y, x) masks)."""

    reperfused: np.ndarray
    persistent: np.ndarray
    not_covered: np.ndarray
    followup_tmax: np.ndarray
    voxel_ml: float
    #: Follow-up hypoperfusion outside the baseline's (in baseline tissue the follow-up covers): a new deficit, or
    #: one that moved.
    new: np.ndarray


def reperfusion_masks(base_hypo: np.ndarray, followup_tmax_on_base: np.ndarray, followup_tissue_on_base: np.ndarray,
                      tmax_threshold_s: float, voxel_ml: float, base_tissue: np.ndarray | None = None) -> Reperfusion:
    """Split the baseline hypoperfusion into reperfused / persisting / not covered by the follow-up, and find the
    follow-up hypoperfusion outside it (new).

    Parameters
    ----------
    base_hypo : bool ndarray (z, y, x)
        Baseline hypoperfusion mask (Tmax > threshold).
    followup_tmax_on_base : float ndarray (z, y, x)
        Follow-up Tmax (s) resampled onto the baseline grid (NaN outside its field of view).
    followup_tissue_on_base : ndarray (z, y, x)
        Follow-up tissue mask resampled onto the baseline grid (> 0.5 = analysed tissue).
    tmax_threshold_s : float
        The hypoperfusion threshold both studies used.
    voxel_ml : float
        Volume of one baseline voxel (mL).
    base_tissue : bool ndarray (z, y, x), optional
        Baseline tissue (parenchyma); the new hypoperfusion is counted in tissue of both studies (every voxel of the
        baseline grid when not given).
    """
    base = np.asarray(base_hypo, bool)
    covered = (np.asarray(followup_tissue_on_base) > 0.5) & np.isfinite(followup_tmax_on_base)
    above = np.zeros_like(base)  # follow-up Tmax above the threshold, where the follow-up measured tissue
    above[covered] = np.asarray(followup_tmax_on_base)[covered] > tmax_threshold_s
    new = above & ~base if base_tissue is None else above & ~base & np.asarray(base_tissue, bool)
    return Reperfusion(base & covered & ~above, base & above, base & ~covered, followup_tmax_on_base, voxel_ml, new)


def compare_studies(baseline: str | Path, followup: str | Path, out_dir: str | Path | None = None, *,
                    force: bool = False, overwrite: bool = False, seed: int = 0) -> dict[str, Any]:
    """Compare a follow-up output folder with its baseline; write the results into ``out_dir`` when given.

    Returns the strict-JSON result document (also written as ``out_dir/compare.json``).

    Raises
    ------
    InputError
        Missing metrics; different thresholds / definition versions without ``force``; ``out_dir`` holding an
        analysis result without ``overwrite``.
    """
    if out_dir is not None:
        check_compare_out_dir(out_dir, overwrite)
    base_doc, fu_doc = read_metrics(baseline), read_metrics(followup)
    doc: dict[str, Any] = {"software": "ctperf", "software_version": __version__, "disclaimer": DISCLAIMER,
                           **prr_document(base_doc, fu_doc, force)}
    doc["units"] = {"PRR_percent": "%", "baseline_hypoperfusion_ml": "mL", "followup_hypoperfusion_ml": "mL",
                    "reperfused_ml": "mL", "persistent_hypoperfusion_ml": "mL", "not_covered_ml": "mL",
                    "reperfusion_percent": "%", "new_hypoperfusion_ml": "mL"}
    missing = [f"{name}/{f}" for name, d in (("baseline", baseline), ("follow-up", followup)) for f in MAPS_NEEDED
               if not (Path(d) / f).is_file()]
    if missing:
        doc.update({"maps_compared": False, "maps_compared_reason": f"no maps: missing {', '.join(missing)}"})
        _write(doc, out_dir, None)
        return to_strict(doc)
    threshold = float((base_doc.get("thresholds") or {}).get("tmax_hypoperfusion_s", 6.0))
    rep, base_hu, base_aff, tr = _register(Path(baseline), Path(followup), threshold, seed)
    withheld = withheld_reasons(base_doc, fu_doc)
    rep = withhold_masks(rep, withheld)
    doc.update({"maps_compared": True, **split_volumes(rep, withheld),
                "registration": {"method": "rigid (6 dof), Mattes mutual information, SimpleITK",
                                 "images": "pre-contrast baseline HU of each study", "rotation_deg": tr.rotation_deg,
                                 "centre_displacement_mm": tr.translation_mm, "metric": tr.metric,
                                 "baseline_to_followup_ras": tr.matrix_ras.tolist()}})
    _write(doc, out_dir, (rep, base_hu, base_aff, figure_title(doc, withheld)))
    return to_strict(doc)


def withhold_masks(rep: Reperfusion, withheld: dict[str, str]) -> Reperfusion:
    """``rep`` with its three masks emptied when a hypoperfusion is withheld, as Mode A empties a withheld lesion
    mask (the masks written then agree with the null volumes)."""
    if not withheld:
        return rep
    empty = np.zeros_like(rep.reperfused)
    return Reperfusion(empty, empty, empty, rep.followup_tmax, rep.voxel_ml, empty)


def split_volumes(rep: Reperfusion, withheld: dict[str, str]) -> dict[str, Any]:
    """reperfused / persisting / not covered volumes (mL), reperfusion_percent and the new hypoperfusion, the follow-up's outside the baseline's (mL): a contralateral or moved deficit, which the PRR's
    volumes net against the reperfusion.

    All of them are null with ``<key>_reason`` when either study's hypoperfusion is withheld (``withheld``:
    :func:`withheld_reasons`): they split the baseline hypoperfusion by the follow-up's Tmax, and even "not covered"
    reads the follow-up's Tmax map (where it is finite), which that study calls unmeasurable.
    """
    keys = ("reperfused_ml", "persistent_hypoperfusion_ml", "not_covered_ml", "reperfusion_percent",
            "new_hypoperfusion_ml")
    if withheld:
        reason = "; ".join(withheld.values())
        return {**dict.fromkeys(keys), **{f"{key}_reason": reason for key in keys}}
    covered_base = int(rep.reperfused.sum() + rep.persistent.sum())
    out: dict[str, Any] = dict(zip(keys, (
        float(rep.reperfused.sum() * rep.voxel_ml), float(rep.persistent.sum() * rep.voxel_ml),
        float(rep.not_covered.sum() * rep.voxel_ml),
        float(100.0 * rep.reperfused.sum() / covered_base) if covered_base else None,
        float(rep.new.sum() * rep.voxel_ml))))
    if not covered_base:
        out["reperfusion_percent_reason"] = "no baseline hypoperfusion inside the follow-up field of view"
    return out


def _register(baseline: Path, followup: Path, threshold: float, seed: int):
    from ctperf.analysis.registration import register_rigid, resample_to_fixed
    from ctperf.core.types import voxel_volume_ml
    from ctperf.io.nifti import load_volume

    base_hu, base_aff = load_volume(baseline / "aux" / "baseline_hu.nii.gz")
    fu_hu, fu_aff = load_volume(followup / "aux" / "baseline_hu.nii.gz")
    base_hypo = load_volume(baseline / "hypoperf_mask_tmax6.nii.gz")[0] > 0.5
    fu_tmax, fu_tmax_aff = load_volume(followup / "tmax.nii.gz")
    fu_tissue, fu_tissue_aff = load_volume(followup / "aux" / "tissue_mask.nii.gz")
    base_tissue = load_volume(baseline / "aux" / "tissue_mask.nii.gz")[0] > 0.5
    tr = register_rigid(base_hu, base_aff, fu_hu, fu_aff, seed=seed)
    tmax_on_base = resample_to_fixed(fu_tmax, fu_tmax_aff, base_hu.shape, base_aff, tr)
    tissue_on_base = resample_to_fixed(fu_tissue, fu_tissue_aff, base_hu.shape, base_aff, tr, nearest=True, fill=0.0)
    if base_hypo.shape != base_hu.shape or base_tissue.shape != base_hu.shape:
        raise InputError(f"{baseline}: the lesion or tissue mask and the baseline image have different grids")
    rep = reperfusion_masks(base_hypo, tmax_on_base, tissue_on_base, threshold, voxel_volume_ml(base_aff),
                            base_tissue)
    return rep, base_hu, base_aff, tr


def _write(doc: dict, out_dir, maps) -> None:
    if out_dir is None:
        return
    from ctperf.io.nifti import save_volume
    from ctperf.io.outdir import VOLUME_DESCRIPTIONS, atomic_output_dir

    with atomic_output_dir(out_dir) as tmp:
        if maps is not None:
            rep, base_hu, base_aff, title = maps
            from ctperf.viz.compare_figure import reperfusion_figure

            save_volume(tmp / "reperfusion_mask.nii.gz", rep.reperfused, base_aff, dtype=np.uint8)
            save_volume(tmp / "persistent_hypoperfusion_mask.nii.gz", rep.persistent, base_aff, dtype=np.uint8)
            save_volume(tmp / "new_hypoperfusion_mask.nii.gz", rep.new, base_aff, dtype=np.uint8)
            # NaN stays "unknown" (outside the follow-up's field of view, or no Tmax there), as in every Tmax map
            save_volume(tmp / "followup_tmax_on_baseline.nii.gz", rep.followup_tmax, base_aff,
                        description=VOLUME_DESCRIPTIONS["tmax"])
            reperfusion_figure(base_hu, base_aff, rep.reperfused, rep.persistent, title, tmp / "compare.png",
                               new=rep.new)
        (tmp / "compare.json").write_text(json.dumps(to_strict(doc), indent=2, allow_nan=False) + "\n",
                                          encoding="utf-8")


def figure_title(doc: dict, withheld: dict[str, str]) -> str:
    """compare.png's title: PRR and the split volumes as compare.json has them, "n/a" where withheld (and whose
    hypoperfusion was not measured; the full reasons are in compare.json)."""
    def shown(key: str, fmt: str) -> str:
        return "n/a" if doc.get(key) is None else fmt.format(doc[key])

    title = (f"PRR {shown('PRR_percent', '{:.0f} %')}; reperfused {shown('reperfused_ml', '{:.1f} mL')}, "
             f"persisting {shown('persistent_hypoperfusion_ml', '{:.1f} mL')}, "
             f"new {shown('new_hypoperfusion_ml', '{:.1f} mL')}")
    if withheld:
        title += f" ({' and '.join(withheld)} hypoperfusion not measured, see compare.json)"
    return title
