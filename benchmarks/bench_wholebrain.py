#!/usr/bin/env python
"""Whole-brain, thin-slice study (512 x 512 x 160 slices x 30 frames) through Mode A within a 16 GB laptop; JSON.

Target (issue 15 item 4): the run completes with a peak RSS <= 12 GiB (16 GB minus room for the OS and a
desktop).  Such a study is 5.0 GB as native float32; ``ctperf`` block-averages each slice in-plane to the
~1 mm computation grid while it is read (``[ingest] bin_on_load_above_gb``, default 2 GB), so the full-resolution
4D array never exists.

    python benchmarks/bench_wholebrain.py [--data DIR] [--slices 160] [--frames 30] [--no-bin]

The study is generated once (``--data`` reuses it): the project phantom (thin 1 mm slices, 0.9 mm pixels) is
made slab by slab and written at 0.45 mm (each pixel repeated 2 x 2), so generation itself stays small.  The
timed run happens in a fresh subprocess so the peak RSS (``ru_maxrss``) is that of the analysis alone.
``--no-bin`` disables the binning on load to show what it saves (needs > 12 GB).
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np

TARGET_RSS_MB = 12 * 1024.0
MATRIX = 512
CHUNK = 20


def make_study(data: Path, slices: int, frames: int) -> None:
    """Write a 512 x 512 x ``slices`` x ``frames`` CTP (2 s sampling) slab by slab (one sub-folder per slab)."""
    from ctperf.synthetic import PhantomSpec, make_phantom
    from ctperf.synthetic.dicom_writer import DicomLayout, write_ctp_dicom

    half = MATRIX // 2
    up = np.eye(4)
    up[0, 0] = up[1, 1] = 0.5
    up[0, 3] = up[1, 3] = -0.25  # voxel i of the 2x grid sits at i / 2 - 0.25 of the phantom grid
    z_bottom = -0.5 * slices
    for z0 in range(0, slices, CHUNK):
        n = min(CHUNK, slices - z0)
        ph = make_phantom(PhantomSpec(matrix=half, n_slices=n, pixel_mm=0.9, slice_mm=1.0, z_bottom_mm=z_bottom + z0,
                                      frame_times_s=list(2.0 * np.arange(frames)), noise_hu=12.0, lesion="left",
                                      seed=1))
        hu = np.repeat(np.repeat(ph.hu, 2, axis=2), 2, axis=3)
        write_ctp_dicom(hu, ph.times_s, ph.affine_ras @ up, data / f"slab{z0:03d}", layout=DicomLayout(), seed=1)
        del ph, hu


def child(data: str, out: str, no_bin: str) -> None:
    from ctperf.config import Config
    from ctperf.pipeline import run_dicom_folder

    cfg = Config()
    if no_bin == "1":
        cfg.ingest.bin_on_load_above_gb = 1e9
    t0 = time.perf_counter()
    res = run_dicom_folder(data, out, cfg)
    total = time.perf_counter() - t0
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps({"total_s": round(total, 1), "peak_rss_mb": round(rss_mb, 1),
                      "binned_on_load": res.meta.extra.get("binned_on_load", 1),
                      "map_shape_zyx": list(res.perfusion.cbf.shape),
                      "stage_s": {k: round(v, 1) for k, v in res.stage_seconds.items()}}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, help="DICOM folder to (re)use; generated if missing")
    ap.add_argument("--slices", type=int, default=160)
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--no-bin", action="store_true", help="read at native resolution (no binning on load)")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    from _fresh_process import run_in_fresh_process

    res = run_in_fresh_process(__file__, args.data, lambda folder: make_study(folder, args.slices, args.frames), "1" if args.no_bin else "0")
    res.update({"matrix": MATRIX, "slices": args.slices, "frames": args.frames, "target_rss_mb": TARGET_RSS_MB,
                "native_float32_gb": round(4 * MATRIX * MATRIX * args.slices * args.frames / 1e9, 2),
                "pass": res["peak_rss_mb"] <= TARGET_RSS_MB})
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
