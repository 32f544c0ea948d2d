#!/usr/bin/env python
"""How near the Tmax threshold may normal tissue read before the Tmax volumes stop being measurable?

    python benchmarks/bench_global_delay.py [--out benchmarks/results/global_delay.json] [--quick]

The project phantom (8 HU, 1.4 mm pixels, 128 x 128 x 8) with every tissue voxel's bolus delayed by 0-4 s against
the arterial input (a global delay: a proximal stenosis, or an arterial input sampled upstream of it), with and
without a left MCA lesion, for 1 s and no vascular dispersion and another anatomy (right lesion).  Per study: the
normal tissue's median Tmax (``qa_values.normal_tissue_tmax_s``: outside the Tmax > 6 s mask) and the Tmax > 6 s
volume, core and HIR against the truth.  The engine runs with ``thresholds.hypoperfusion_min_margin_s`` = 0 (and the
other measurability limits off), so what is measured is what the engine would report; the default limit
(docs/definitions.md §3) was placed on these figures.  Prints / writes one JSON document.  Research use only, not a
medical device.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

VARIANTS = {"disp1": {}, "disp0": {"dispersion_s": 0.0}, "anatomy1_right": {"anatomy_seed": 1, "seed": 1}}
DELAYS_S = (0.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0)


def run_study(variant: dict, delay_s: float, lesion: bool) -> dict:
    """One engine run; the normal tissue's Tmax and the lesion figures against the truth."""
    from ctperf.analysis.masks import global_delay_reason
    from bench_measurability import config_without_limits
    from ctperf.config import Thresholds
    from ctperf.core.types import CTPStudy
    from ctperf.pipeline import analyse_study
    from ctperf.synthetic import PhantomSpec, make_phantom

    kw = {"matrix": 128, "n_slices": 8, "tissue_delay_s": delay_s, **variant}
    kw["lesion"] = ("right" if kw.get("anatomy_seed") else "left") if lesion else None
    ph = make_phantom(PhantomSpec(**kw))
    out = analyse_study(CTPStudy(hu=ph.hu, times_s=ph.times_s, affine_ras=ph.affine_ras), config_without_limits())
    m, t = out.metrics, ph.truth_metrics
    normal = m["qa_values"]["normal_tissue_tmax_s"]
    hyp, hyp_t = m.get("hypoperfusion_ml"), round(float(t["hypoperfusion_ml"]), 3)
    return {
        "spec": {k: v for k, v in kw.items() if k not in ("matrix", "n_slices")},
        "normal_tissue_tmax_s": normal,
        "withheld_by_default": global_delay_reason(normal, Thresholds()) is not None,
        "hypoperfusion_ml": hyp, "hypoperfusion_ml_truth": hyp_t,
        "hypoperfusion_error_pct": (round(100.0 * (hyp / hyp_t - 1.0), 1) if hyp is not None and hyp_t > 0 else None),
        "hypoperfusion_false_ml": hyp if not lesion else None,
        "core_ml": m.get("core_ml"), "core_ml_truth": round(float(t["core_ml"]), 3),
        "hir": m.get("HIR"), "hir_truth": None if t.get("HIR") is None else round(float(t["HIR"]), 4),
        "flags": sorted(k for k, v in m["qa_flags"].items() if v),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, help="write the JSON document here too")
    ap.add_argument("--quick", action="store_true", help="one variant, four delays (~1 min)")
    args = ap.parse_args(argv)
    from _result_doc import emit

    variants = {"disp1": VARIANTS["disp1"]} if args.quick else VARIANTS
    delays = (0.0, 2.0, 3.0, 4.0) if args.quick else DELAYS_S
    rows = []
    for name, variant in variants.items():
        for lesion in (True, False):
            for delay in delays:
                row = {"case": f"{name} {'lesion' if lesion else 'no lesion'} delay {delay:g} s",
                       **run_study(variant, delay, lesion)}
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    return emit("bench_global_delay", {"studies": rows}, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
