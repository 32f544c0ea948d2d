"""What the model evidence of the bias correction knows about vascular dispersion, and what it costs.

    python benchmarks/bench_dispersion_evidence.py [--noise 0 3 8] [--dispersion 0 1]

Runs the engine on the project phantom (exponential residue, left lesion, 1.4 mm pixels) once per (noise, tissue
dispersion) and model family: the default (gamma shapes x dispersions 0-3 s, weighted by the evidence and the
study-wide dispersion prior, ``deconvolution.dispersion_prior = "study"``, default since engine 2.8), the same
family with a uniform prior (each region's evidence alone, the default until 2.7), and the same shapes restricted to
one dispersion (0 s or 1 s: an oracle when it matches the phantom), and the default with engine 2.9's Tmax shift
(each voxel's own peak-to-area ratio selects its MTT, ``deconvolution.tmax_shift_mtt = "voxel"``).  Prints one JSON
object; per row the mean model weights over the tissue by dispersion and by shape and the study prior's dispersion
shares (``qa_values`` as in metrics.json), the median Tmax error in normal tissue, and the Tmax > 6 s tissue volume
against the truth.
``tests/test_dispersion_evidence.py`` calls :func:`measure`.
docs/engine-notes.md "Model evidence" quotes ``results/dispersion_evidence.json``, written with
``python benchmarks/bench_dispersion_evidence.py > benchmarks/results/dispersion_evidence.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys

import numpy as np

#: Model families: the default (every dispersion, study-wide dispersion prior), the same with a uniform prior (each
#: region's evidence alone), and one dispersion only (an oracle when it matches the phantom).
FAMILIES = {"default": {}, "uniform prior": {"dispersion_prior": "uniform"},
            "undispersed models only": {"model_dispersions_s": (0.0,)},
            "1 s models only": {"model_dispersions_s": (1.0,)},
            "Tmax shift at the voxel's own MTT (engine 2.9)": {"tmax_shift_mtt": "voxel"}}


def measure(noise_hu: float, dispersion_s: float, family: str) -> dict:
    from ctperf.config import Config
    from ctperf.core.types import CTPStudy
    from ctperf.engine import compute_perfusion
    from ctperf.synthetic.phantom import PhantomSpec, make_phantom

    ph = make_phantom(PhantomSpec(matrix=160, n_slices=8, pixel_mm=1.4, noise_hu=noise_hu, lesion="left",
                                  dispersion_s=dispersion_s, seed=0))
    cfg = Config.from_dict({"deconvolution": dict(FAMILIES[family])})
    res = compute_perfusion(CTPStudy(hu=ph.hu, times_s=ph.times_s, affine_ras=ph.affine_ras), cfg)
    tr = ph.truth
    tissue = tr.tissue & res.masks.brain & np.isfinite(res.tmax)
    normal = tissue & ~tr.lesion_any
    voxel_ml = abs(float(np.linalg.det(res.affine_ras[:3, :3]))) / 1000.0
    return {
        "noise_hu": noise_hu, "dispersion_s": dispersion_s, "family": family,
        **{k: res.qa_values[k] for k in ("model_weight_by_dispersion_s", "model_weight_by_shape",
                                          "model_weight_reason", "study_dispersion_share_by_dispersion_s")},
        "tmax_error_normal_s": round(float(np.median(res.tmax[normal] - tr.tmax[normal])), 2),
        "tmax6_ml": round(float((tissue & (res.tmax > 6)).sum() * voxel_ml), 1),
        "tmax6_ml_truth": round(float((tissue & (tr.tmax > 6)).sum() * voxel_ml), 1),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--noise", type=float, nargs="+", default=[0.0, 3.0, 8.0])
    ap.add_argument("--dispersion", type=float, nargs="+", default=[0.0, 1.0])
    args = ap.parse_args(argv)
    import ctperf
    from ctperf.core.constants import DEFINITION_VERSION, ENGINE_VERSION

    rows = [measure(n, d, f) for n in args.noise for d in args.dispersion for f in FAMILIES]
    print(json.dumps({"benchmark": "dispersion_evidence", "ctperf_version": ctperf.__version__,
                      "engine_version": ENGINE_VERSION, "definition_version": DEFINITION_VERSION,
                      "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                      "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
