"""Benchmark of the perfusion engine on a clinical-size study (512 x 512 x 20 slices x 40 frames).

    python benchmarks/bench_engine.py            # phantom (cached in the temp dir after the first run)
    python benchmarks/bench_engine.py --random   # random HU noise around a head-like baseline (no phantom)

Prints one JSON object: seconds per engine stage, total engine seconds, peak RSS (MB) of the process and the
RSS before the engine ran (the 4D HU input alone is 512*512*20*40*4 B = 839 MB).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return float(line.split()[1]) / 1024.0
    return float("nan")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _phantom_input(matrix: int, n_slices: int, n_frames: int):
    cache = Path(tempfile.gettempdir()) / f"ctperf_bench_{matrix}_{n_slices}_{n_frames}.npz"
    if cache.exists():
        d = np.load(cache)
        return d["hu"], d["times"], d["affine"]
    from ctperf.synthetic.phantom import PhantomSpec, make_phantom

    ph = make_phantom(PhantomSpec(matrix=matrix, n_slices=n_slices, pixel_mm=0.45 * 512 / matrix,
                                  frame_times_s=list(np.arange(n_frames) * 1.5), noise_hu=8.0, seed=0))
    np.savez(cache, hu=ph.hu, times=ph.times_s, affine=ph.affine_ras)
    return ph.hu, ph.times_s, ph.affine_ras


def _random_input(matrix: int, n_slices: int, n_frames: int):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:matrix, 0:matrix]
    r = np.hypot(yy - matrix / 2, xx - matrix / 2) / (matrix / 2)
    base = np.where(r < 0.8, 35.0, np.where(r < 0.88, 1200.0, -1000.0)).astype(np.float32)
    hu = np.empty((n_frames, n_slices, matrix, matrix), np.float32)
    for t in range(n_frames):
        hu[t] = base[None] + rng.normal(0, 8, (n_slices, matrix, matrix)).astype(np.float32)
    times = np.repeat((np.arange(n_frames) * 1.5)[:, None], n_slices, axis=1)
    aff = np.diag([0.45, 0.45, 5.0, 1.0])
    return hu, times, aff


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--random", action="store_true")
    ap.add_argument("--matrix", type=int, default=512)
    ap.add_argument("--slices", type=int, default=20)
    ap.add_argument("--frames", type=int, default=40)
    args = ap.parse_args(argv)

    from ctperf.config import Config
    from ctperf.core.types import CTPStudy
    from ctperf.engine import compute_perfusion

    make = _random_input if args.random else _phantom_input
    hu, times, aff = make(args.matrix, args.slices, args.frames)
    hu = np.ascontiguousarray(hu, np.float32)
    rss_before = _rss_mb()
    t0 = time.perf_counter()
    res = compute_perfusion(CTPStudy(hu=hu, times_s=times, affine_ras=aff), Config())
    total = time.perf_counter() - t0
    out = {
        "input": "random" if args.random else "phantom",
        "shape_tzyx": list(hu.shape),
        "map_shape_zyx": list(res.cbf.shape),
        "compute_pixel_mm": res.qa_values.get("compute_pixel_mm"),
        "stage_seconds": res.stage_seconds,
        "engine_seconds": round(total, 3),
        "rss_before_engine_mb": round(rss_before, 1),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "cpu_count": os.cpu_count(),
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
