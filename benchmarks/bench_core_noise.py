"""How the rCBF < 30 % core depends on the study's contrast-to-noise ratio: the measurement behind
``thresholds.core_min_contrast_to_noise``.

    python benchmarks/bench_core_noise.py [--quick] > benchmarks/results/core_noise.json

Runs the whole Mode A analysis (``ctperf.pipeline.analyse_study``, in memory) on the project phantom over voxel
noise, bolus strength, pixel size, frame interval, tissue dispersion, partial volume and anatomy, with the core
measured at any noise (``core_min_contrast_to_noise = 0``), and prints one JSON object: per study its
contrast-to-noise ratio (``qa_values.contrast_to_noise``: arterial peak / voxel noise x sqrt(1 s / frame interval)),
the core volume and its error against the truth (on the flow; and on the apparent CBF, the convention of the
threshold), the grey / white CBF ratio's error, and whether the default limit would flag it; then the core errors
summarised below and at or above that limit.
``docs/definitions.md`` §3 quotes ``results/core_noise.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys

import numpy as np

#: Studies (PhantomSpec keywords beside the default: 1.4 mm pixels, 8 HU, 1 s dispersion, AIF peak 350 HU).
STUDIES: tuple[dict, ...] = (
    {}, {"noise_hu": 9.0}, {"noise_hu": 10.0}, {"noise_hu": 11.0}, {"noise_hu": 12.0}, {"noise_hu": 13.0},
    {"noise_hu": 15.0},
    {"aif_peak_hu": 300.0}, {"aif_peak_hu": 275.0}, {"aif_peak_hu": 250.0}, {"aif_peak_hu": 225.0},
    {"aif_peak_hu": 200.0}, {"aif_peak_hu": 450.0, "noise_hu": 12.0}, {"aif_peak_hu": 500.0, "noise_hu": 15.0},
    {"pixel_mm": 1.0, "matrix": 224, "noise_hu": 8.0}, {"pixel_mm": 1.0, "matrix": 224, "noise_hu": 12.0},
    {"pixel_mm": 2.0, "matrix": 112, "noise_hu": 8.0}, {"pixel_mm": 2.0, "matrix": 112, "noise_hu": 10.0},
    {"pixel_mm": 2.0, "matrix": 112, "noise_hu": 15.0},
    {"dispersion_s": 0.0, "noise_hu": 10.0}, {"dispersion_s": 2.0, "noise_hu": 10.0},
    {"tissue_partial_volume": True, "noise_hu": 10.0},
    {"anatomy_seed": 1, "seed": 1, "lesion": "right"}, {"anatomy_seed": 1, "seed": 1, "lesion": "right", "noise_hu": 9.0},
    {"anatomy_seed": 1, "seed": 1, "lesion": "right", "noise_hu": 11.0},
    {"anatomy_seed": 2, "seed": 2}, {"anatomy_seed": 2, "seed": 2, "noise_hu": 10.5},
    {"anatomy_seed": 2, "seed": 2, "noise_hu": 12.0},
    # frames every 2 s / every 1 s for 60 s instead of 40 frames of 1.5 s
    *({"frame_times_s": [float(t) for t in np.arange(0.0, 60.0, step)], "noise_hu": hu}
      for step, hus in ((2.0, (8.0, 9.0, 10.0)), (1.0, (10.0, 11.0, 12.0))) for hu in hus),
)
QUICK = ({}, {"noise_hu": 12.0})


def measure(spec_kw: dict) -> dict:
    """One study: contrast-to-noise ratio, core and grey / white CBF errors (core measured at any noise)."""
    from ctperf.config import Config
    from ctperf.core.types import CTPStudy
    from ctperf.pipeline import analyse_study
    from ctperf.synthetic.phantom import PhantomSpec, make_phantom

    ph = make_phantom(PhantomSpec(**spec_kw))
    cfg = Config.from_dict({"thresholds": {"core_min_contrast_to_noise": 0.0}})
    out = analyse_study(CTPStudy(hu=ph.hu, times_s=ph.times_s, affine_ras=ph.affine_ras), cfg)
    res, em, tm = out.perfusion, out.metrics, ph.truth_metrics
    ratio_err = None
    if res.cbf.shape == ph.truth.tissue.shape:  # the engine's grid is the phantom's (no in-plane binning)
        normal = res.masks.tissue & ph.truth.tissue & ~ph.truth.lesion_any
        gm, wm = normal & (ph.truth.labels == 4), normal & (ph.truth.labels == 5)
        cbf_t = ph.truth.cbf_apparent
        ratio = float(np.nanmedian(res.cbf[gm]) / np.nanmedian(res.cbf[wm]))
        ratio_err = round(100.0 * (ratio / float(np.median(cbf_t[gm]) / np.median(cbf_t[wm])) - 1.0), 1)
    return {
        "study": spec_kw, "contrast_to_noise": res.qa_values["contrast_to_noise"],
        "noise_hu_measured": round(float(res.qa_values["noise_hu"]), 2),
        "aif_peak_scaled_hu": round(float(res.qa_values["aif_peak_scaled_hu"]), 1),
        "core_ml": em["core_ml"], "core_ml_truth": round(float(tm["core_ml"]), 2),
        "core_error_ml": round(em["core_ml"] - tm["core_ml"], 2),
        "core_error_pct": round(100.0 * (em["core_ml"] / tm["core_ml"] - 1.0), 1),
        "core_apparent_error_ml": round(em["core_ml"] - tm["core_apparent_ml"], 2),
        "gm_wm_cbf_ratio_error_pct": ratio_err,
        "hypoperfusion_error_pct": round(100.0 * (em["hypoperfusion_ml"] / tm["hypoperfusion_ml"] - 1.0), 1),
    }


def summary(rows: list[dict], limit: float) -> dict:
    """Median and range of the core errors (mL and % against the flow's core, mL against the apparent CBF's) and of
    the grey / white CBF ratio's error, for the studies below ``limit`` and at or above it."""
    out = {}
    for name, sel in (("below_limit", [r for r in rows if r["contrast_to_noise"] < limit]),
                      ("at_or_above_limit", [r for r in rows if r["contrast_to_noise"] >= limit])):
        if not sel:
            continue
        out[name] = {"studies": len(sel)}
        for key in ("core_error_ml", "core_error_pct", "core_apparent_error_ml", "gm_wm_cbf_ratio_error_pct"):
            v = [r[key] for r in sel if r[key] is not None]
            if v:
                out[name].update({f"{key}_median": round(float(np.median(v)), 2), f"{key}_range": [min(v), max(v)]})
    return out


def main(argv=None) -> int:
    from ctperf.config import Thresholds
    from ctperf.core.constants import ENGINE_VERSION

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="two studies only")
    args = ap.parse_args(argv)
    limit = Thresholds().core_min_contrast_to_noise
    rows = []
    for kw in (QUICK if args.quick else STUDIES):
        rows.append(measure(kw))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    for r in rows:
        r["flagged_by_default"] = r["contrast_to_noise"] < limit
    doc = {"benchmark": "core_noise", "date": datetime.date.today().isoformat(), "engine_version": ENGINE_VERSION,
           "core_min_contrast_to_noise": limit, "summary": summary(rows, limit), "studies": rows}
    print(json.dumps(doc, indent=1, allow_nan=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
