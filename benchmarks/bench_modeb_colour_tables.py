"""Mode B ROI recovery and time on colour-coded Tmax MIP screenshots, one per vendor-style colour table.

For every table of ``../shared/third_party/pct-pma-colormaps/data_PMA_lut.csv`` (27 tables, read at run time,
never copied) plus ctperf's own jet and rainbow ramps, a synthetic screenshot (zoom 1.2, UI chrome, anti-aliased
yellow outline, green / orange / white distractors) is rendered from a smooth Tmax phantom and passed to
:func:`ctperf.modeb.roi_mip.roi_from_screenshot`.

Prints one JSON object: ``tables`` (name -> dice, registration score, zoom, seconds, or the one-line error),
``n_tables``, ``n_with_roi``, ``dice_median``, ``seconds_median``.

Usage: python benchmarks/bench_modeb_colour_tables.py [--tables ASIST,Tmax]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

from ctperf.errors import InputError  # noqa: E402
from ctperf.modeb.roi_mip import roi_from_screenshot  # noqa: E402
from ctperf.synthetic.screenshots import blob_polygon, render_mip_screenshot  # noqa: E402
from ctperf.synthetic.vendor_maps import ramp_colours, smooth_brain_map  # noqa: E402
from third_party_luts import load_pma_luts  # noqa: E402

AFF = np.array([[-0.9, 0, 0, 80.0], [0, -0.9, 0, 90.0], [0, 0, 5.0, -20.0], [0, 0, 0, 1]])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tables", default="", help="comma-separated subset of table names")
    args = ap.parse_args()
    luts = {"jet": ramp_colours("jet"), "rainbow": ramp_colours("rainbow"), **(load_pma_luts() or {})}
    if args.tables:
        luts = {k: v for k, v in luts.items() if k in args.tables.split(",")}
    tmax = smooth_brain_map((6, 150, 170), 0.0, 14.0, seed=7, texture=0.06)
    poly = blob_polygon((75, 100), (30, 28), seed=1)
    out: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, lut in luts.items():
            png, truth, _ = render_mip_screenshot(tmax, AFF, Path(tmp) / f"{name}.png", poly, lut=lut,
                                                  window=(0, 14), scale=1.2, seed=3)
            t0 = time.perf_counter()
            try:
                res = roi_from_screenshot(png, tmax, AFF)
            except InputError as exc:
                out[name] = {"error": str(exc), "seconds": round(time.perf_counter() - t0, 2)}
                continue
            m = res.mask2d_yx
            out[name] = {"dice": round(float(2 * (m & truth).sum() / (m.sum() + truth.sum())), 4),
                         "score": round(res.registration["score"], 4),
                         "zoom": round(res.registration["scale"], 4),
                         "colour_route": bool(res.registration["mip_colour_coded"]),
                         "seconds": round(time.perf_counter() - t0, 2)}
    ok = [v for v in out.values() if "dice" in v]
    print(json.dumps({"tables": out, "n_tables": len(out), "n_with_roi": len(ok),
                      "dice_median": float(np.median([v["dice"] for v in ok])) if ok else None,
                      "seconds_median": float(np.median([v["seconds"] for v in out.values()])) if out else None},
                     indent=1))


if __name__ == "__main__":
    main()
