#!/usr/bin/env python
"""When can the lesion be measured at all?  Short acquisitions, late boluses and weak contrast on the project phantom.

    python benchmarks/bench_measurability.py [--out benchmarks/results/measurability.json] [--quick]

Part 1 (truncation): the project phantom (left lesion, 8 HU, 1.4 mm pixels, 128 x 128 x 8) acquired for 24-45 s
instead of ~60 s, or with the bolus arriving 25-35 s into a 58.5 s acquisition, for several phantom variants
(dispersion 0 / 1 / 2 s, another anatomy with a right lesion, frames every 1 s or 2 s).  Per study: how long the
acquisition went on after the hypoperfused tissue's median time to peak (``qa_values.lesion_observed_after_peak_s``:
acquisition end - median TTP over the Tmax > 6 s mask), and the Tmax > 6 s and core volumes and the HIR against the
truth and against the same phantom acquired in full.

Part 2 (weak contrast): the same phantom with arterial peaks of 40-200 HU or 16-30 HU of noise, with and without a
lesion, and a study without any contrast: the contrast-to-noise ratio (``qa_values.contrast_to_noise``) against the
Tmax > 6 s volume's error (and the false Tmax > 6 s volume of lesion-free studies).

Part 3 (CBV indices): the acquisition cut at 48-54 s and contrast-to-noise ratios of ~19-30, between the parts
above, where the CBV indices' limits lie.

The core's, the CBV indices' and the lesion's limits of ``[thresholds]`` (docs/definitions.md §3) were placed on these figures; the
engine runs with every limit off here (``core_min_contrast_to_noise`` and the new limits 0), so what is measured is
what the engine would report.  Prints / writes one JSON document.  Research use only, not a medical device.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

VARIANTS = {"disp1": {}, "disp0": {"dispersion_s": 0.0}, "disp2": {"dispersion_s": 2.0},
            "anatomy1_right": {"anatomy_seed": 1, "seed": 1, "lesion": "right"},
            "frames1s": {"dt": 1.0}, "frames2s": {"dt": 2.0}}
ENDS_S = (24.0, 27.0, 30.0, 33.0, 36.0, 40.0, 45.0)
ARRIVALS_S = (25.0, 30.0, 35.0)
FULL_END_S = 58.5


def config_without_limits():
    """The default configuration with every measurability limit off (what the engine measures is reported)."""
    from ctperf.analysis.masks import MEASURABILITY_LIMITS
    from ctperf.config import Config

    cfg = Config()
    for name in MEASURABILITY_LIMITS:
        setattr(cfg.thresholds, name, 0.0)
    return cfg


def run_study(variant: dict, end_s: float = FULL_END_S, **spec) -> dict:
    """One engine run on the project phantom; the measurability figures and the volumes against the truth."""
    from ctperf.analysis.masks import (cbv_truncation_reason, core_truncation_reason, hir_truncation_reason,
                                       lesion_unmeasured_reason)
    from ctperf.config import Thresholds
    from ctperf.core.types import CTPStudy
    from ctperf.pipeline import analyse_study
    from ctperf.synthetic import PhantomSpec, make_phantom

    kw = {k: v for k, v in variant.items() if k != "dt"}
    dt = float(variant.get("dt", 1.5))
    kw.update(spec)
    kw.setdefault("matrix", 128)
    kw.setdefault("n_slices", 8)
    kw["frame_times_s"] = [dt * i for i in range(int(np.floor(end_s / dt + 1e-9)) + 1)]
    ph = make_phantom(PhantomSpec(**kw))
    out = analyse_study(CTPStudy(hu=ph.hu, times_s=ph.times_s, affine_ras=ph.affine_ras), config_without_limits())
    m, p, t = out.metrics, out.perfusion, ph.truth_metrics
    q, th = m["qa_values"], Thresholds()
    observed, cnr = q.get("lesion_observed_after_peak_s"), q.get("contrast_to_noise")
    return {
        "spec": {k: v for k, v in kw.items() if k not in ("frame_times_s", "matrix", "n_slices")},
        "frame_interval_s": dt, "acquisition_s": q.get("acquisition_s"), "aif_ttp_s": round(float(p.aif.ttp_s), 2),
        "lesion_observed_after_peak_s": observed, "contrast_to_noise": cnr,
        # what the default limits make of this study
        "lesion_unmeasured_by_default": lesion_unmeasured_reason(cnr, observed, bool(m["qa_flags"]["aif_truncated"]),
                                                                 th) is not None,
        "core_truncated_by_default": core_truncation_reason(observed, th) is not None,
        "hir_truncated_by_default": hir_truncation_reason(observed, th) is not None,
        "cbv_truncated_by_default": cbv_truncation_reason(observed, th) is not None,
        "hypoperfusion_ml": m.get("hypoperfusion_ml"), "hypoperfusion_ml_truth": round(t["hypoperfusion_ml"], 3),
        "core_ml": m.get("core_ml"), "core_ml_truth": round(t["core_ml"], 3),
        "hir": m.get("HIR"), "hir_truth": round(t["HIR"], 4) if t.get("HIR") is not None else None,
        "tmax10_ml": m.get("tmax10_ml"),
        "corrected_cbv_index": m.get("Corrected_CBV_Index"),
        "corrected_cbv_index_truth": t.get("Corrected_CBV_Index"),
        "cbv_index_contra": m.get("CBV_Index_contra_hemisphere"),
        "cbv_index_contra_truth": t.get("CBV_Index_contra_hemisphere"),
        "flags": sorted(k for k, v in m["qa_flags"].items() if v),
    }


def _errors(row: dict, full: dict | None) -> dict:
    def pct(a, b):
        return None if a is None or not b else round(100.0 * (a / b - 1.0), 1)

    row["hypoperfusion_error_pct"] = pct(row["hypoperfusion_ml"], row["hypoperfusion_ml_truth"])
    row["corrected_cbv_index_error_pct"] = pct(row["corrected_cbv_index"], row["corrected_cbv_index_truth"])
    row["cbv_index_contra_error_pct"] = pct(row["cbv_index_contra"], row["cbv_index_contra_truth"])
    row["core_error_ml"] = (None if row["core_ml"] is None or not row["core_ml_truth"]
                            else round(row["core_ml"] - row["core_ml_truth"], 2))
    if full is not None:
        row["hypoperfusion_vs_full_pct"] = pct(row["hypoperfusion_ml"], full["hypoperfusion_ml"])
        row["core_vs_full_ml"] = (None if row["core_ml"] is None or full["core_ml"] is None
                                  else round(row["core_ml"] - full["core_ml"], 2))
        row["hir_vs_full_pct"] = pct(row["hir"], full["hir"])
        row["corrected_cbv_index_vs_full_pct"] = pct(row["corrected_cbv_index"], full["corrected_cbv_index"])
    return row


def truncation(variants: dict, ends: tuple, arrivals: tuple) -> list[dict]:
    rows = []
    for name, variant in variants.items():
        full = _errors(run_study(variant), None)
        full["case"] = f"{name} full"
        rows.append(full)
        print(json.dumps(full), file=sys.stderr, flush=True)
        cases = [(f"{name} end {e:g} s", {"end_s": e}) for e in ends]
        cases += [(f"{name} bolus at {a:g} s", {"aif_arrival_s": a}) for a in arrivals]
        for label, kw in cases:
            row = _errors(run_study(variant, **kw), full)
            row["case"] = label
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    return rows


def weak_contrast(quick: bool) -> list[dict]:
    peaks = (60.0, 100.0, 150.0) if quick else (40.0, 60.0, 80.0, 100.0, 125.0, 150.0, 175.0, 200.0)
    cases = [(f"AIF peak {a:g} HU", {"aif_peak_hu": a}) for a in peaks]
    cases += [(f"noise {n:g} HU", {"noise_hu": n}) for n in ((25.0,) if quick else (16.0, 18.0, 20.0, 22.0, 25.0, 30.0))]
    if not quick:  # the band around the limit, on other noise seeds and another anatomy
        cases += [(f"noise {n:g} HU, seed {k}", {"noise_hu": n, "seed": k}) for n in (18.0, 20.0) for k in (1, 2)]
        cases += [(f"AIF peak {a:g} HU, anatomy 1", {"aif_peak_hu": a, "anatomy_seed": 1, "seed": 1})
                  for a in (125.0, 150.0, 175.0)]
    cases += [(f"no lesion, AIF peak {a:g} HU", {"aif_peak_hu": a, "lesion": None})
              for a in ((60.0,) if quick else (40.0, 60.0, 80.0, 100.0, 150.0))]
    cases += [("no contrast", {"aif_peak_hu": 1e-3}), ("no contrast, no lesion", {"aif_peak_hu": 1e-3, "lesion": None})]
    rows = []
    for label, kw in cases:
        row = _errors(run_study({}, **kw), None)
        row["case"] = label
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    return rows


def cbv_index(quick: bool) -> list[dict]:
    """Where the CBV indices come right: the acquisition cut at 48-54 s (the lesion followed ~20-27 s past its
    peak, between the truncation part's 45 s and the full ~58 s) and contrast-to-noise ratios of ~19-30 (8-14 HU
    of noise, arterial peaks of 225-275 HU), around the core's limit."""
    cases = [(f"{name} end {e:g} s", VARIANTS[name], {"end_s": e})
             for name in (("disp1",) if quick else ("disp1", "disp0", "disp2", "anatomy1_right"))
             for e in (48.0, 51.0, 54.0)]
    noise = [{"noise_hu": n} for n in ((12.0,) if quick else (9.0, 10.0, 11.0, 12.0, 13.0, 14.0))]
    if not quick:
        noise += [{"aif_peak_hu": a} for a in (225.0, 250.0, 275.0)]
        noise += [{"noise_hu": 11.0, "seed": 1}, {"noise_hu": 12.0, "anatomy_seed": 1, "seed": 1}]
    cases += [(", ".join(f"{k} {v:g}" for k, v in kw.items()), {}, kw) for kw in noise]
    rows = []
    for label, variant, kw in cases:
        row = _errors(run_study(variant, **kw), None)
        row["case"] = label
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, help="write the JSON document here too")
    ap.add_argument("--quick", action="store_true", help="two variants, fewer cases (~2 min)")
    args = ap.parse_args(argv)
    from _result_doc import emit

    variants = {k: VARIANTS[k] for k in ("disp1", "frames2s")} if args.quick else VARIANTS
    ends = (30.0, 36.0, 45.0) if args.quick else ENDS_S
    return emit("bench_measurability", {"truncation": truncation(variants, ends, ARRIVALS_S),
                                        "weak_contrast": weak_contrast(args.quick),
                                        "cbv_index": cbv_index(args.quick)}, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
