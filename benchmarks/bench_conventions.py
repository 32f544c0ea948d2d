"""Offset between the default maps (unregularised residue) and the standard model-free convention.

    python benchmarks/bench_conventions.py [--noise 3 8] [--dispersion 0 1 2.5]

Runs the engine once per (noise, tissue dispersion) on the project phantom (exponential residue, left lesion) and
prints one JSON object: median (standard - default) Tmax in normal tissue and in the lesion, Tmax > 6 s volumes of
both conventions and of the truth, and the ratio of the two grey-matter CBFs.  docs/definitions.md §2 quotes it.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np


def measure(noise_hu: float, dispersion_s: float) -> dict:
    from ctperf.config import Config
    from ctperf.core.types import CTPStudy
    from ctperf.engine import compute_perfusion
    from ctperf.synthetic.phantom import PhantomSpec, make_phantom

    ph = make_phantom(PhantomSpec(matrix=160, n_slices=8, pixel_mm=1.4, noise_hu=noise_hu, lesion="left",
                                  dispersion_s=dispersion_s, seed=0))
    res = compute_perfusion(CTPStudy(hu=ph.hu, times_s=ph.times_s, affine_ras=ph.affine_ras), Config())
    tr = ph.truth
    tissue = tr.tissue & res.masks.brain & np.isfinite(res.tmax)
    tmax_std = res.aux_maps["tmax_standard"]
    diff = tmax_std - res.tmax
    voxel_ml = abs(float(np.linalg.det(res.affine_ras[:3, :3]))) / 1000.0
    gm = tissue & (tr.labels == 4) & ~tr.lesion_any & (res.cbf > 0)
    return {
        "noise_hu": noise_hu, "dispersion_s": dispersion_s,
        "tmax_offset_normal_s": round(float(np.median(diff[tissue & ~tr.lesion_any])), 2),
        "tmax_offset_lesion_s": round(float(np.median(diff[tissue & tr.lesion_any])), 2),
        "tmax6_ml_default": round(float((tissue & (res.tmax > 6)).sum() * voxel_ml), 1),
        "tmax6_ml_standard": round(float((tissue & (tmax_std > 6)).sum() * voxel_ml), 1),
        "tmax6_ml_truth": round(float((tissue & (tr.tmax > 6)).sum() * voxel_ml), 1),
        "gm_cbf_standard_over_default": round(float(np.median(res.aux_maps["cbf_standard"][gm] / res.cbf[gm])), 3),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--noise", type=float, nargs="+", default=[3.0, 8.0])
    ap.add_argument("--dispersion", type=float, nargs="+", default=[0.0, 1.0, 2.5])
    args = ap.parse_args(argv)
    rows = [measure(n, d) for n in args.noise for d in args.dispersion]
    print(json.dumps({"benchmark": "conventions", "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
