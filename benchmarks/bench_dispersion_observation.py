#!/usr/bin/env python
"""How long must tissue be followed past its peak for the study's dispersion prior to be right?

    python benchmarks/bench_dispersion_observation.py [--out benchmarks/results/dispersion_observation.json]

The project phantom (8 HU, default size) with acquisitions of 40-75 s (frames every 1.5 s, one study every 1 s),
boluses of FWHM 7-14 s and arrivals at 7 or 14 s, tissue with 1 s or no vascular dispersion.  Per study: the
engine's ``qa_values.tissue_observed_bolus_widths`` (acquisition end minus the median tissue TTP, over the AIF's FWHM),
the study prior's share on no dispersion, the normal tissue's Tmax bias and the Tmax > 6 s volume error against
the truth, with the measurability limits off.  ``ctperf.engine.DISPERSION_MIN_OBSERVED_WIDTHS`` was placed on these
figures (docs/definitions.md §2), with the prior fitted on the time grid (``dispersion_prior_fit = "grid"``).
Part 2: studies below the limit (45-50 s acquisitions, five anatomies, 0 / 1 / 2 s of dispersion) with the prior
fitted on the grid and with the default ``"auto"`` (at the acquired frames there).  About 5 min on 2 cores.
Research use only, not a medical device.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

#: (tissue dispersion s, acquisition length s, bolus FWHM s, bolus arrival s, frame step s); None = phantom default
STUDIES = [(1.0, 61.5, None, None, 1.5), (1.0, 40.0, None, None, 1.5), (1.0, 45.0, None, None, 1.5),
           (1.0, 50.0, None, None, 1.5), (1.0, 55.0, None, None, 1.5), (1.0, 70.0, None, None, 1.5),
           (1.0, 60.0, None, None, 1.0),
           (1.0, 50.0, None, 14.0, 1.5), (1.0, 55.0, None, 14.0, 1.5), (1.0, 61.5, None, 14.0, 1.5),
           (1.0, 70.0, None, 14.0, 1.5),
           (1.0, 40.0, 7.0, None, 1.5), (1.0, 45.0, 7.0, None, 1.5),
           (1.0, 55.0, 11.5, None, 1.5), (1.0, 61.5, 11.5, None, 1.5), (1.0, 70.0, 11.5, None, 1.5),
           (1.0, 61.5, 14.0, None, 1.5), (1.0, 75.0, 14.0, None, 1.5),
           (0.0, 45.0, None, None, 1.5), (0.0, 61.5, None, None, 1.5), (0.0, 50.0, None, 14.0, 1.5),
           (0.0, 61.5, 11.5, None, 1.5), (2.0, 61.5, None, None, 1.5)]
#: Part 2: (tissue dispersion s, acquisition length s, anatomy / noise seed, lesion side)
SHORT_STUDIES = [(1.0, 45.0, 0, "left"), (1.0, 45.0, 1, "right"), (1.0, 45.0, 2, "left"), (1.0, 45.0, 3, "right"),
                 (1.0, 50.0, 4, "left"), (2.0, 45.0, 0, "left"), (0.0, 45.0, 0, "left"), (0.0, 45.0, 1, "right"),
                 (0.0, 45.0, 2, "left")]


def run_study(dispersion_s: float, acq_s: float, fwhm_s: float | None, arrival_s: float | None,
              step_s: float, seed: int = 0, lesion: str = "left", fit: str = "grid") -> dict:
    import numpy as np
    from bench_measurability import config_without_limits
    from validate import lesion_metrics

    from ctperf.core.types import CTPStudy
    from ctperf.pipeline import analyse_study
    from ctperf.synthetic import PhantomSpec, make_phantom

    kw = {"dispersion_s": dispersion_s, "frame_times_s": list(np.arange(0.0, acq_s, step_s)), "seed": seed,
          "anatomy_seed": seed, "lesion": lesion}
    if fwhm_s is not None:
        kw["aif_fwhm_s"] = fwhm_s
    if arrival_s is not None:
        kw["aif_arrival_s"] = arrival_s
    ph = make_phantom(PhantomSpec(**kw))
    cfg = config_without_limits()
    cfg.deconvolution.dispersion_prior_fit = fit
    out = analyse_study(CTPStudy(hu=ph.hu, times_s=ph.times_s, affine_ras=ph.affine_ras), cfg)
    q, m = out.metrics["qa_values"], lesion_metrics(ph, out)
    share = q.get("study_dispersion_share_by_dispersion_s") or {}
    return {"dispersion_s": dispersion_s, "seed": seed, "prior_fit": fit,
            "prior_fitted_at": (q.get("study_dispersion_blocks") or {}).get("fit"),
            "acquisition_s": q["acquisition_s"], "frame_step_s": step_s,
            "bolus_fwhm_nominal_s": fwhm_s, "bolus_arrival_s": arrival_s,
            "aif_fwhm_s": q["aif_fwhm_s"], "tissue_observed_after_peak_s": q["tissue_observed_after_peak_s"],
            "tissue_observed_bolus_widths": q["tissue_observed_bolus_widths"],
            "prior_share_no_dispersion": share.get("0"),
            "tmax_normal_bias_s": None if m.get("tmax_normal_bias_s") is None else round(m["tmax_normal_bias_s"], 3),
            "tmax6_volume_error_pct": (None if m.get("tmax6_volume_error_pct") is None
                                       else round(m["tmax6_volume_error_pct"], 2)),
            "tmax_dispersion_ambiguous": out.metrics["qa_flags"]["tmax_dispersion_ambiguous"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, help="write the JSON document here too")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).parent))
    from _result_doc import emit

    from ctperf.engine import DISPERSION_MIN_OBSERVED_WIDTHS

    rows, short = [], []
    for study in STUDIES:
        rows.append(run_study(*study))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    for disp, acq, seed, side in SHORT_STUDIES:
        for fit in ("grid", "auto"):
            short.append(run_study(disp, acq, None, None, 1.5, seed, side, fit))
            print(json.dumps(short[-1]), file=sys.stderr, flush=True)
    return emit("bench_dispersion_observation", {"limit_bolus_widths": DISPERSION_MIN_OBSERVED_WIDTHS,
                                                 "studies": rows, "short_studies_grid_vs_auto": short}, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
