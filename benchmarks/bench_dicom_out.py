"""Benchmark the DICOM outputs (``ctperf run --dicom-out``) at the benchmark study size.

Builds a 512 x 512 x 20 result (six float32 maps with NaN outside a disk, three lesion masks, a metrics
document) and the source headers of a matching 20-slice CT series, then times ``write_dicom_outputs`` without
the Secondary Captures (their cost is the figure drawing, measured by ``bench_pipeline.py``): six Parametric
Maps, the SEG and the SR. Prints one JSON object: first_call_s (includes highdicom loading its standard tables
once per process), seconds (best of the later ``--repeat`` calls; a DICOM node pays only this), total_mb written,
peak_rss_mb, target_s, pass.

Usage: python benchmarks/bench_dicom_out.py [--nx 512] [--nz 20] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

TARGET_S = 5.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nx", type=int, default=512)
    ap.add_argument("--nz", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    from ctperf.io.dicom_out import read_source, write_dicom_outputs
    from ctperf.synthetic.dicom_writer import write_ctp_dicom

    nx, nz = args.nx, args.nz
    aff = np.array([[-0.45, 0, 0, 115.0], [0, -0.45, 0, 115.0], [0, 0, 5.0, -40.0], [0, 0, 0, 1]])
    yy, xx = np.mgrid[:nx, :nx]
    inside = np.broadcast_to(((yy - nx / 2) ** 2 + (xx - nx / 2) ** 2) < (0.4 * nx) ** 2, (nz, nx, nx))
    rng = np.random.default_rng(0)
    maps = {k: np.where(inside, rng.gamma(2.0, s, (nz, nx, nx)), np.nan).astype(np.float32)
            for k, s in (("cbf", 20.0), ("cbv", 1.5), ("mtt", 2.5), ("tmax", 1.5), ("ttp", 10.0), ("rcbf", 0.4))}
    perf = SimpleNamespace(affine_ras=aff, **maps)
    lesion = SimpleNamespace(core=maps["rcbf"] < 0.3, hypoperfusion=maps["tmax"] > 6,
                             penumbra=(maps["tmax"] > 6) & ~(maps["rcbf"] < 0.3))
    metrics = {"core_ml": 10.0, "penumbra_ml": 50.0, "hypoperfusion_ml": 60.0, "HIR": 0.3,
               "units": {"HIR": "1"}}
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        files = write_ctp_dicom(np.zeros((2, nz, nx, nx), np.float32), np.array([0.0, 1.5]), aff, tmp / "src")
        import pydicom

        source = read_source(tmp / "src", [pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID])
        for i in range(args.repeat):
            out = tmp / f"out{i}"
            t0 = time.perf_counter()
            write_dicom_outputs(perf, lesion, metrics, source, out, summary_page=False)
            times.append(time.perf_counter() - t0)
        total = sum(p.stat().st_size for p in (out / "dicom").glob("*.dcm")) / 1e6
    best = min(times[1:] or times)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"shape_zyx": [nz, nx, nx], "first_call_s": round(times[0], 3), "seconds": round(best, 3), "total_mb": round(total, 1),
                      "peak_rss_mb": round(rss, 1), "target_s": TARGET_S, "pass": best <= TARGET_S}))


if __name__ == "__main__":
    main()
