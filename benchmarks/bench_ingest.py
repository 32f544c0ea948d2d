"""Benchmark DICOM ingestion: ``ctperf.dicom_io.load_ctp`` against bare pydicom read + decode.

Writes (or reuses with ``--data DIR``) a 512 x 512 x 20 slices x 40 frames CTP study (800 files, siemens
layout), then, each in a fresh subprocess so timings and peak RSS are clean:

(a) ``decode_only_s``: pydicom ``dcmread`` + ``pixel_array`` of every file (no sorting, no HU conversion);
(b) ``load_ctp_s`` and ``peak_rss_mb``: full ``load_ctp`` (scan, group, order, decode to float32 HU).

(c) ``alloc_touch_only_s``: allocating and filling an empty float32 array of the study's size, the floor any
    loader that returns the 4D HU array pays (first-touch page faults; expensive in fresh VMs) and that (a)
    does not pay.

Prints one JSON object: n_files, decode_only_s, load_ctp_s, ratio, alloc_touch_only_s, peak_rss_mb,
target_ratio (2.0), pass.
Each measurement is the best of ``--repeat`` interleaved runs (page cache warm after writing), which keeps
the ratio meaningful on a shared, busy machine.

Usage: python benchmarks/bench_ingest.py [--data DIR] [--nx 512] [--nz 20] [--nt 40] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

TARGET_RATIO = 2.0
RSS_LIMIT_MB = 2048.0

_DECODE_ONLY = r"""
import json, os, resource, sys, time
import pydicom
root = sys.argv[1]
files = sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs)
t0 = time.perf_counter()
n = 0
for f in files:
    try:
        arr = pydicom.dcmread(f).pixel_array
        n += 1
    except Exception:
        pass
dt = time.perf_counter() - t0
print(json.dumps({"seconds": dt, "n": n, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

_TOUCH_ONLY = r"""
import json, resource, sys, time
import numpy as np
shape = [int(v) for v in sys.argv[2].split(",")]
t0 = time.perf_counter()
a = np.empty(shape, dtype=np.float32)
a.fill(0.0)
dt = time.perf_counter() - t0
print(json.dumps({"seconds": dt, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

_LOAD_CTP = r"""
import json, resource, sys, time
from ctperf.dicom_io import load_ctp
t0 = time.perf_counter()
study = load_ctp(sys.argv[1])
dt = time.perf_counter() - t0
print(json.dumps({
    "seconds": dt,
    "shape": list(study.hu.shape),
    "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "children_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
}))
"""


def write_study(out: Path, nx: int, nz: int, nt: int) -> int:
    """Write a head-like CTP study (int16 HU, ~2 s sampling) with the siemens layout; returns #files."""
    from ctperf.synthetic.dicom_writer import DicomLayout, write_ctp_dicom

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:nx, 0:nx]
    r = np.hypot(yy - nx / 2, xx - nx / 2) / (nx / 2)
    base = np.where(r < 0.8, 35, np.where(r < 0.88, 1000, -1000)).astype(np.int16)
    hu = np.empty((nt, nz, nx, nx), dtype=np.int16)
    for t in range(nt):
        enh = int(30 * np.exp(-0.5 * ((t - nt / 3) / (nt / 8)) ** 2))
        for z in range(nz):
            hu[t, z] = base + enh + rng.integers(-8, 9, size=(nx, nx), dtype=np.int16)
    times = np.arange(nt) * 1.5
    affine = np.diag([-0.45, -0.45, 5.0, 1.0])
    affine[:3, 3] = [115.0, 115.0, -40.0]
    paths = write_ctp_dicom(hu, times, affine, out, DicomLayout(vendor="siemens"), seed=0)
    return len(paths)


def _run(code: str, data: Path, *extra: str) -> dict:
    res = subprocess.run([sys.executable, "-c", code, str(data), *extra], capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, help="folder to reuse (written there first if empty/missing)")
    ap.add_argument("--nx", type=int, default=512)
    ap.add_argument("--nz", type=int, default=20)
    ap.add_argument("--nt", type=int, default=40)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--write-only", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.write_only is not None:
        write_study(args.write_only, args.nx, args.nz, args.nt)
        return 0

    tmp = None
    data = args.data
    if data is None:
        tmp = tempfile.TemporaryDirectory(prefix="ctperf_bench_")
        data = Path(tmp.name) / "ctp"
    try:
        if not data.exists() or not any(data.rglob("*")):
            print(f"writing {args.nz * args.nt} files to {data} ...", file=sys.stderr)
            # in a subprocess, so the measuring children do not inherit (and report) the writer's memory
            subprocess.run([sys.executable, __file__, "--write-only", str(data), "--nx", str(args.nx),
                            "--nz", str(args.nz), "--nt", str(args.nt)], check=True)
            os.sync()  # flush dirty pages so write-back does not disturb the timings
        n_files = sum(1 for p in data.rglob("*") if p.is_file())
        runs = [(_run(_DECODE_ONLY, data), _run(_LOAD_CTP, data)) for _ in range(args.repeat)]  # interleaved
        decode = min((r[0] for r in runs), key=lambda r: r["seconds"])
        load = min((r[1] for r in runs), key=lambda r: r["seconds"])
        touch = min((_run(_TOUCH_ONLY, data, ",".join(map(str, load["shape"]))) for _ in range(args.repeat)),
                    key=lambda r: r["seconds"])
        ratio = load["seconds"] / decode["seconds"]
        peak = max(load["rss_mb"], load["children_rss_mb"])
        result = {
            "n_files": n_files,
            "shape_tzyx": load["shape"],
            "decode_only_s": round(decode["seconds"], 3),
            "load_ctp_s": round(load["seconds"], 3),
            "ratio": round(ratio, 3),
            "alloc_touch_only_s": round(touch["seconds"], 3),
            "peak_rss_mb": round(load["rss_mb"], 1),
            "decode_only_rss_mb": round(decode["rss_mb"], 1),
            "target_ratio": TARGET_RATIO,
            "pass": bool(ratio <= TARGET_RATIO and peak < RSS_LIMIT_MB),
        }
        print(json.dumps(result))
        return 0 if result["pass"] else 1
    finally:
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    raise SystemExit(main())
