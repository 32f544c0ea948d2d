#!/usr/bin/env python
"""`ctperf batch` throughput: 20 small phantom studies on a local Dask cluster of 2 workers vs 1; prints JSON.

    python benchmarks/bench_batch.py [--studies 20] [--data DIR] [--figures]

Studies are 64x64 in-plane, 4 slices, 40 frames (``tests/cohort_data.py``), generated once (``--data`` reuses
them).  Each run uses a fresh output root (nothing skipped) and is timed from the command's start to its exit,
in a fresh process, so cluster start-up (spawning the worker processes) is included: that is what a user waits
for.  ``studies_per_minute`` = studies / wall time * 60; ``speedup`` = 2-worker rate / 1-worker rate.  By
default the QA figures and PDF are off (the batch engine is measured, not matplotlib); ``--figures`` keeps them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def make_cohort(data: Path, n: int) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from cohort_data import write_small_study

    for i in range(n):
        folder = data / f"site{i % 2}" / f"p{i:02d}"
        if not folder.exists():
            write_small_study(folder, seed=i, lesion=("left", "right", None)[i % 3])


def run(data: Path, out: Path, workers: int, config: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "ctperf.cli", "batch", "--input_root", str(data), "--out_root",
                        str(out), "--workers", str(workers), "--config", str(config), "--quiet"],
                       capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"batch failed (exit {r.returncode}): {r.stderr.strip()}")
    import csv

    with (out / "batch_summary.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    ok = sum(row["status"] == "ok" for row in rows)
    task_s = [float(row["seconds"]) for row in rows if row["seconds"]]
    return {"workers": workers, "studies_ok": ok, "wall_s": round(wall, 2),
            "studies_per_minute": round(ok / wall * 60.0, 2),
            "median_study_s": round(sorted(task_s)[len(task_s) // 2], 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--studies", type=int, default=20)
    ap.add_argument("--data", type=Path, help="cohort folder to create or reuse")
    ap.add_argument("--figures", action="store_true", help="write the QA PNGs and PDF as a default run does")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="ctperf-bench-batch-") as tmp:
        tmp = Path(tmp)
        data = args.data or tmp / "cohort"
        make_cohort(data, args.studies)
        config = tmp / "config.json"
        config.write_text(json.dumps({"output": {"write_qa_png": args.figures, "write_pdf": args.figures}}))
        one = run(data, tmp / "out1", 1, config)
        two = run(data, tmp / "out2", 2, config)
    print(json.dumps({"studies": args.studies, "cpu_count": os.cpu_count(), "figures": args.figures,
                      "one_worker": one, "two_workers": two,
                      "speedup": round(two["studies_per_minute"] / one["studies_per_minute"], 2)}, indent=2))


if __name__ == "__main__":
    main()
