"""The study dispersion prior fitted on the uniform grid (default) or at the acquired frame times, per acquisition
protocol, tissue dispersion and noise.

    python benchmarks/bench_frame_prior.py [--protocols short45 full ...] [--dispersions 0 1] [--noise 4 8]
                                           [--fits grid frames] [--components all bic]

The engine's prior (:func:`ctperf.engine.deconvolution.study_model_mixture`) fits block means of the curves on the
uniform grid, whose noise the resampling from the acquired frames and the temporal smoothing have correlated
(``bench_prior_protocols.py --pipeline-noise``).  ``deconvolution.dispersion_prior_fit = "frames"``
(:mod:`ctperf.engine.deconvolution.frame_prior`) fits the block means of the baseline-subtracted frames at the
acquired times instead, where the noise is white; ``dispersion_prior_components = "bic"`` averages the mixture over
the subsets of dispersions.  Per protocol (the harness's, ``validate.PROTOCOLS``), dispersion, noise and setting:
the prior's dispersion shares, where it was fitted, the normal-tissue Tmax bias (s) and the Tmax > 6 s volume error
(%) on the project phantom (exponential residue, left lesion).  Measured: docs/engine-notes.md, "Measured
2026-12-05 (session 40)".  ~10 s per run.  Prints one JSON object.  Research use only, not a medical device.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys

from bench_prior_protocols import PROTOCOLS, phantom, prior_summary


def measure(protocol: str, dispersion_s: float, noise_hu: float, fit: str, components: str) -> dict:
    """One engine run: the prior's dispersion shares and blocks, the normal-tissue Tmax bias (s) and the Tmax > 6 s
    volume error (%)."""
    from ctperf.config import Config
    from ctperf.core.types import CTPStudy
    from ctperf.pipeline import analyse_study

    ph = phantom(protocol, noise_hu, dispersion_s)
    cfg = Config.from_dict({"deconvolution": {"dispersion_prior_fit": fit, "dispersion_prior_components": components}})
    out = analyse_study(CTPStudy(hu=ph.hu, times_s=ph.times_s, affine_ras=ph.affine_ras), cfg)
    return {"protocol": protocol, "dispersion_s": dispersion_s, "noise_hu": noise_hu, "fit": fit,
            "components": components, "prior_blocks": out.perfusion.qa_values.get("study_dispersion_blocks"),
            **prior_summary(ph, out)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--protocols", nargs="+", default=list(PROTOCOLS), choices=list(PROTOCOLS))
    ap.add_argument("--dispersions", type=float, nargs="+", default=[1.0, 0.0], help="tissue dispersion (s)")
    ap.add_argument("--noise", type=float, nargs="+", default=[4.0, 8.0], help="image noise SDs (HU)")
    ap.add_argument("--fits", nargs="+", default=["grid", "frames"], choices=["grid", "frames"])
    ap.add_argument("--components", nargs="+", default=["all"], choices=["all", "bic"])
    args = ap.parse_args(argv)
    doc = {"created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "disclaimer": "Research use only, not a medical device.", "runs": []}
    for protocol in args.protocols:
        for disp in args.dispersions:
            for noise in args.noise:
                for fit in args.fits:
                    for components in args.components:
                        doc["runs"].append(measure(protocol, disp, noise, fit, components))
                        print(json.dumps(doc["runs"][-1]), file=sys.stderr, flush=True)
    print(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
