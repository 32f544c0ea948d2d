#!/usr/bin/env python
"""Whole Mode A run (DICOM ingest -> written outputs) on a clinical-size phantom study; prints JSON.

Targets: 512x512x20x40 study on 2 cores in <= 10 s wall time and <= 3 GB peak RSS (issue 4), and within 8x the
time bare pydicom needs to read and decode the same files (issue 14; ``ratio_to_decode``).

    python benchmarks/bench_pipeline.py [--data DIR] [--matrix 512] [--slices 20]

The study is generated once (``--data`` reuses it); the timed run happens in a fresh subprocess so the peak RSS
is that of the analysis alone.  The decode-only reference (``bench_ingest.py``'s, fresh subprocess) runs just
before and just after it; the faster of the two is reported as ``decode_only_s``.  ``cpu_s``: CPU seconds (user +
system) of the whole analysis process, imports included (less sensitive to other load than the wall time).
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

TARGET_S = 10.0
TARGET_RSS_MB = 3072.0
TARGET_RATIO = 8.0


def make_study(data: Path, matrix: int, slices: int) -> None:
    from ctperf.synthetic import PhantomSpec, make_phantom
    from ctperf.synthetic.dicom_writer import DicomLayout, write_ctp_dicom

    fov_mm = 230.0
    ph = make_phantom(PhantomSpec(matrix=matrix, n_slices=slices, pixel_mm=fov_mm / matrix, noise_hu=8.0,
                                  lesion="left", seed=1))
    write_ctp_dicom(ph.hu, ph.times_s, ph.affine_ras, data, layout=DicomLayout(vendor="siemens"), seed=1)


def child(data: str, out: str) -> None:
    from ctperf.apps.runtime import configure_process
    from ctperf.config import Config
    from ctperf.pipeline import run_dicom_folder

    configure_process()  # as the ctperf command does at start-up

    t0 = time.perf_counter()
    res = run_dicom_folder(data, out, Config())
    total = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    rss_mb = usage.ru_maxrss / 1024.0
    print(json.dumps({"total_s": total, "cpu_s": round(usage.ru_utime + usage.ru_stime, 2), "peak_rss_mb": rss_mb,
                      "stage_s": {k: round(v, 3) for k, v in res.stage_seconds.items()}}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, help="DICOM folder to (re)use; generated if missing")
    ap.add_argument("--matrix", type=int, default=512)
    ap.add_argument("--slices", type=int, default=20)
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    from _fresh_process import run_in_fresh_process
    from bench_ingest import _DECODE_ONLY, _run

    res = run_in_fresh_process(__file__, args.data, lambda folder: make_study(folder, args.matrix, args.slices),
                               around=lambda folder: _run(_DECODE_ONLY, folder))
    decode = res.pop("around")["seconds"]
    res.update({"matrix": args.matrix, "slices": args.slices, "frames": 40, "decode_only_s": round(decode, 3),
                "ratio_to_decode": round(res["total_s"] / decode, 2), "target_s": TARGET_S,
                "target_ratio": TARGET_RATIO, "target_rss_mb": TARGET_RSS_MB,
                "pass": (res["total_s"] <= TARGET_S and res["total_s"] <= TARGET_RATIO * decode
                         and res["peak_rss_mb"] <= TARGET_RSS_MB)})
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
