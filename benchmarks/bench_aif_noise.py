#!/usr/bin/env python
"""The AIF's own noise and the study dispersion prior: the measurement behind ``AIF_FRAME_NOISE_MAX_FRACTION``.

    python benchmarks/bench_aif_noise.py [--out benchmarks/results/aif_noise.json] [--quick]

Every model curve the study's dispersion prior fits to the tissue blocks is the measured AIF convolved with a model
residue (vascular dispersion 0 / 1 / 2 / 3 s), so it carries the AIF's noise, which the tissue never saw; the prior
can follow that noise instead of the tissue.  Since definitions 2.20 the engine reports the noise of the AIF's
frames (``qa_values.aif_frame_noise_hu``, and over the AIF's peak ``aif_frame_noise_fraction``) and raises both
dispersion flags (``tmax_dispersion_ambiguous``, ``cbf_dispersion_ambiguous``, with
``qa_values.dispersion_aif_noise_reason``) above ``ctperf.core.constants.AIF_FRAME_NOISE_MAX_FRACTION`` (2 %).
docs/engine-notes.md "session 48" placed that limit on throw-away scripts; this benchmark measures it again.

Part A (synthetic blocks, the setup of ``tests/test_aif_noise_prior.py::_prior_share``): 400 blocks of exponential
tissue (MTT 2.5-6 s, whole-sample delays 0-2 s, 0.15 HU white noise, 1 s frames) made with a noise-free
gamma-variate AIF (peak 350 HU), the models built from that AIF plus one draw of white noise of 0.5-5 % of the peak;
true dispersion 0 / 1 / 2 s; six draws each.  Per draw: the study prior's share on the true dispersion
(``dispersion_shares(study_model_mixture(...))``), plain and with the correction of ``deconvolution.aif_noise_in_prior``
(``aif_noise_misfits`` with the known noise SD); per setting the mean and the fraction of draws below 0.5 ("wrong").

Part B (the pipeline): the project phantom (``ctperf.synthetic.make_phantom``, default size, 8 HU) with 0 and 1 s of
dispersion, one draw of noise added to every arterial voxel's curve (the same draw for all of them: voxels whose
enhancement exceeds a fifth of the maximum), SD 0-4 % of 350 HU, three draws each (draw k is the same standard-normal
vector at every level, scaled); ``compute_perfusion`` with the default ``Config``.  Per run: the fraction the engine
reads, the flags and reasons, the study prior's dispersion shares and the normal-tissue Tmax bias (median of
estimated minus true Tmax over tissue outside the lesion, as ``validate.py``'s ``tmax_normal_bias_s``); per noise
level and per side of the limit (the fraction read), the largest |bias| over flagged and unflagged runs.

About 2.5 min on the 2-core development machine (part A ~1 min, 90 draws; part B 32 engine runs of ~2.5 s, the
noise-free study run once per dispersion); ``--quick`` (two draws in part A, one in part B) ~50 s.  With
``--out X.json`` a Markdown summary is written beside it (``X.md``).
Research use only, not a medical device.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

#: Part A: AIF noise SD as a fraction of the 350 HU peak, true dispersions (s), draws.
A_FRACTIONS = (0.005, 0.01, 0.02, 0.03, 0.05)
A_DISPERSIONS = (0.0, 1.0, 2.0)
A_SEEDS, A_SEEDS_QUICK = 6, 2
#: Part B: shared arterial noise SD as a fraction of 350 HU, phantom dispersions (s), draws.
B_FRACTIONS = (0.0, 0.01, 0.015, 0.02, 0.03, 0.04)
B_DISPERSIONS = (0.0, 1.0)
B_SEEDS, B_SEEDS_QUICK = 3, 1
PEAK_HU = 350.0
#: |normal-tissue Tmax bias| (s) above which a run counts as gone wrong in the summaries.
BIAS_LIMIT_S = 0.5


def _r(v, nd: int = 4):
    """Rounded float, None for None / NaN / inf (strict JSON)."""
    if v is None:
        return None
    v = float(v)
    return round(v, nd) if math.isfinite(v) else None


# ----------------------------------------------------------------------------------------------- part A
def _bolus(t: np.ndarray, peak: float = PEAK_HU, arrival: float = 7.0, rise: float = 6.0) -> np.ndarray:
    """A gamma-variate bolus (FWHM 8.2 s with the default rise), as in tests/test_aif_noise_prior.py."""
    x = np.clip(t - arrival, 0.0, None)
    return peak * (x / rise) ** 3 * np.exp(3.0 * (1.0 - x / rise))


def prior_shares(seed: int, aif_sd: float, true_disp: float, n_blocks: int = 400) -> dict:
    """One draw of part A: the study prior's share on ``true_disp`` plain and corrected, and the dispersion each
    reads (the largest share).  Same random stream and setup as ``_prior_share`` of tests/test_aif_noise_prior.py
    (the blocks built per delay rather than one at a time)."""
    import scipy.fft as sfft

    from ctperf.config import DeconvolutionConfig
    from ctperf.engine.deconvolution import aif_noise_misfits, dispersion_shares, study_model_mixture
    from ctperf.engine.deconvolution.emulation import _emulated_tissue_spectra, _family_tables, model_family
    from ctperf.engine.deconvolution.regularisation import _filters, aif_noise_floor, circulant_spectrum, padded_length

    rng = np.random.default_rng(seed)
    t = np.arange(0.0, 70.0, 1.0)
    n_t, dt = len(t), 1.0
    clean = _bolus(t)
    aif = clean + rng.normal(0.0, aif_sd, n_t)
    cfg = DeconvolutionConfig()
    family = model_family(cfg)
    disp = [d for _, d in family]
    length = padded_length(n_t)
    filters, _ = _filters(circulant_spectrum(aif, dt, length), "bcsvd", cfg, aif_noise_floor(aif)[1])
    taus_grid = np.geomspace(0.3, 60.0, 48)
    heights, _, _, spectra = _family_tables(aif, filters, dt, length, n_t, 4, taus_grid, family)
    taus, flows = rng.uniform(2.5, 6.0, n_blocks), rng.uniform(0.006, 0.015, n_blocks)
    delays = rng.integers(0, 3, n_blocks)
    noise = rng.normal(0.0, 0.15, (n_blocks, n_t))  # the same stream as one row per block
    blocks = np.empty((n_blocks, n_t))
    for d in np.unique(delays):
        sel = delays == d
        spec, _, _ = _emulated_tissue_spectra(np.r_[np.zeros(d), clean[:n_t - d]], dt, length, n_t, taus[sel],
                                              true_disp, 1.0)
        blocks[sel] = flows[sel, None] * sfft.irfft(spec, n=length, axis=1)[:, :n_t]
    blocks += noise
    k_aif = aif_noise_misfits(family, taus_grid, dt, n_t, aif_sd * np.eye(n_t), aif)
    out = {}
    for name, k in (("plain", None), ("corrected", k_aif)):
        mix, _ = study_model_mixture(blocks, aif, filters[-1], spectra, heights[:, -1], dt, length, 4, taus_grid,
                                     10.0, "all", family, k)
        shares = dispersion_shares(mix, family)
        out[name] = (float(shares[disp.index(true_disp)]), float(disp[int(np.argmax(shares))]))
    return out


def part_a(n_seeds: int, log) -> list[dict]:
    rows = []
    for frac in A_FRACTIONS:
        for true_disp in A_DISPERSIONS:
            t0 = time.perf_counter()
            draws = [prior_shares(s, frac * PEAK_HU, true_disp) for s in range(n_seeds)]
            row = {"aif_noise_fraction": frac, "aif_noise_sd_hu": round(frac * PEAK_HU, 3),
                   "true_dispersion_s": true_disp, "seeds": list(range(n_seeds))}
            for name in ("plain", "corrected"):
                share = [d[name][0] for d in draws]
                row[name] = {"share_on_truth_by_seed": [_r(v) for v in share],
                             "read_dispersion_s_by_seed": [d[name][1] for d in draws],
                             "share_on_truth_mean": _r(np.mean(share)),
                             "wrong_fraction": _r(np.mean([v < 0.5 for v in share]))}
            rows.append(row)
            log(f"A {frac:.3f} disp {true_disp:g}: plain {row['plain']['share_on_truth_mean']} corrected "
                f"{row['corrected']['share_on_truth_mean']} ({time.perf_counter() - t0:.1f} s)")
    return rows


# ----------------------------------------------------------------------------------------------- part B
def part_b(n_seeds: int, log) -> list[dict]:
    from validate import normal_tissue, to_grid  # the harness's truth-on-grid helpers

    from ctperf.config import Config
    from ctperf.core.types import CTPStudy
    from ctperf.engine import TMAX_DISPERSION_FLAG_S, compute_perfusion
    from ctperf.synthetic import PhantomSpec, make_phantom

    rows = []
    for disp in B_DISPERSIONS:
        ph = make_phantom(PhantomSpec(dispersion_s=disp))
        enhancement = ph.hu.max(axis=0) - ph.hu[0]
        arterial = enhancement > 0.2 * enhancement.max()
        n_frames = ph.hu.shape[0]
        baseline_bias = None
        for frac in B_FRACTIONS:
            # no noise: every draw is the same study (one run)
            for seed in (range(n_seeds) if frac > 0 else (None,)):
                t0 = time.perf_counter()
                hu = ph.hu.copy()
                if seed is not None:
                    draw = np.random.default_rng(seed).normal(0.0, 1.0, n_frames)
                    hu[:, arterial] += (frac * PEAK_HU * draw).astype(np.float32)[:, None]
                res = compute_perfusion(CTPStudy(hu=hu, times_s=ph.times_s, affine_ras=ph.affine_ras), Config())
                q, f = res.qa_values, res.qa_flags
                _, normal, _, _ = normal_tissue(ph, res)
                terr = res.tmax - to_grid(ph.truth.tmax, res.tmax.shape)
                bias = float(np.nanmedian(terr[normal]))
                if seed is None:
                    baseline_bias = bias
                shares = q.get("study_dispersion_share_by_dispersion_s")
                spread = q.get("tmax_dispersion_sd_s")
                # what raised tmax_dispersion_ambiguous: the Tmax spread between the dispersions' corrections (above
                # TMAX_DISPERSION_FLAG_S), the AIF's frame noise, a tissue curve followed too briefly
                triggers = [name for name, on in (
                    ("spread", spread is not None and spread > TMAX_DISPERSION_FLAG_S),
                    ("aif_noise", q.get("dispersion_aif_noise_reason") is not None),
                    ("observation", q.get("tmax_dispersion_observation_reason") is not None)) if on]
                row = {"dispersion_s": disp, "noise_fraction_nominal": frac,
                       "noise_sd_hu": round(frac * PEAK_HU, 3), "seed": seed,
                       "arterial_voxels": int(arterial.sum()), "aif_voxels": len(res.aif.voxels_zyx),
                       "aif_peak_hu": _r(q.get("aif_peak_hu"), 2),
                       "aif_frame_noise_hu": _r(q.get("aif_frame_noise_hu"), 3),
                       "aif_frame_noise_fraction": _r(q.get("aif_frame_noise_fraction"), 5),
                       "tmax_dispersion_ambiguous": bool(f["tmax_dispersion_ambiguous"]),
                       "cbf_dispersion_ambiguous": bool(f["cbf_dispersion_ambiguous"]),
                       "flagged_by_aif_noise": q.get("dispersion_aif_noise_reason") is not None,
                       "tmax_flag_triggers": triggers,
                       "dispersion_aif_noise_reason": q.get("dispersion_aif_noise_reason"),
                       "tmax_dispersion_sd_s": _r(q.get("tmax_dispersion_sd_s"), 3),
                       "tmax_dispersion_reason": q.get("tmax_dispersion_reason"),
                       "tmax_dispersion_observation_reason": q.get("tmax_dispersion_observation_reason"),
                       "cbf_dispersion_sd_pct": _r(q.get("cbf_dispersion_sd_pct"), 3),
                       "cbf_dispersion_reason": q.get("cbf_dispersion_reason"),
                       "prior_share_by_dispersion_s": (None if shares is None
                                                       else {k: _r(v) for k, v in shares.items()}),
                       "prior_share_on_truth": None if shares is None else _r(shares.get(f"{disp:g}")),
                       "prior_fitted_at": (q.get("study_dispersion_blocks") or {}).get("fit"),
                       "tmax_normal_bias_s": _r(bias, 3),
                       "tmax_normal_bias_vs_noise_free_s": _r(bias - baseline_bias, 3),
                       "run_s": round(time.perf_counter() - t0, 2)}
                rows.append(row)
                log(json.dumps({k: v for k, v in row.items() if "reason" not in k}))
    return rows


def _max_abs(values: list) -> float | None:
    v = [abs(x) for x in values if x is not None]
    return _r(max(v), 3) if v else None


def _group(runs: list[dict]) -> dict:
    """Counts and the largest |normal Tmax bias| (absolute and against the noise-free run) of ``runs``, over the
    unflagged and the flagged ones (``tmax_dispersion_ambiguous``, for any reason, and for the AIF's noise)."""
    flagged = [r for r in runs if r["tmax_dispersion_ambiguous"]]
    unflagged = [r for r in runs if not r["tmax_dispersion_ambiguous"]]
    out = {"runs": len(runs), "flagged": len(flagged), "flagged_by_aif_noise": sum(r["flagged_by_aif_noise"]
                                                                                    for r in runs)}
    for name, sel in (("unflagged", unflagged), ("flagged", flagged)):
        out[f"max_abs_tmax_bias_{name}_s"] = _max_abs([r["tmax_normal_bias_s"] for r in sel])
        out[f"max_abs_tmax_bias_vs_noise_free_{name}_s"] = _max_abs([r["tmax_normal_bias_vs_noise_free_s"]
                                                                     for r in sel])
    out[f"runs_bias_over_{BIAS_LIMIT_S:g}_s"] = sum(abs(r["tmax_normal_bias_s"]) > BIAS_LIMIT_S for r in runs)
    return out


def summarise_b(rows: list[dict], limit: float) -> dict:
    by_level = []
    for frac in B_FRACTIONS:
        sel = [r for r in rows if r["noise_fraction_nominal"] == frac]
        fr = [r["aif_frame_noise_fraction"] for r in sel if r["aif_frame_noise_fraction"] is not None]
        entry = {"noise_fraction_nominal": frac, "fraction_read_range": [min(fr), max(fr)] if fr else None,
                 **_group(sel),
                 "tmax_normal_bias_s_by_dispersion": {f"{d:g}": [r["tmax_normal_bias_s"] for r in sel
                                                                 if r["dispersion_s"] == d] for d in B_DISPERSIONS}}
        by_level.append(entry)
    read = [r for r in rows if r["aif_frame_noise_fraction"] is not None]
    by_side = {"fraction_read_at_or_below_limit": _group([r for r in read if r["aif_frame_noise_fraction"] <= limit]),
               "fraction_read_above_limit": _group([r for r in read if r["aif_frame_noise_fraction"] > limit])}
    wrong_unflagged = [{k: r[k] for k in ("dispersion_s", "noise_fraction_nominal", "seed", "aif_frame_noise_fraction",
                                          "tmax_normal_bias_s", "prior_share_on_truth")}
                       for r in rows if abs(r["tmax_normal_bias_s"]) > BIAS_LIMIT_S
                       and not r["tmax_dispersion_ambiguous"]]
    return {"by_noise_level": by_level, "by_side_of_limit": by_side,
            f"runs_bias_over_{BIAS_LIMIT_S:g}_s_unflagged": wrong_unflagged}


# ----------------------------------------------------------------------------------------------- output
def _f(v, fmt: str = "+.3f") -> str:
    return "–" if v is None else format(v, fmt)


def to_markdown(doc: dict) -> str:
    lim = doc["aif_frame_noise_max_fraction"]
    lines = [f"# AIF noise and the study dispersion prior (`{doc['benchmark']}`)", "",
             (f"Research use only, not a medical device. ctperf {doc['ctperf_version']} (engine "
              f"{doc['engine_version']}, definitions {doc['definition_version']}), {doc['mode']} run, "
              f"{doc['runtime_s']:.0f} s on {doc['machine']}; limit `AIF_FRAME_NOISE_MAX_FRACTION` = {lim:g}."), "",
             "## Part A: synthetic blocks, share of the study prior on the true dispersion", "",
             (f"400 blocks, models from the AIF plus one draw of white noise; mean over {doc['part_a_seeds']} "
              "draws (wrong = share < 0.5)."), "",
             ("| AIF noise % of peak | true dispersion s | plain mean | plain wrong | corrected mean | corrected wrong "
              "| plain by draw | corrected by draw |"), "|---|---|---|---|---|---|---|---|"]
    for r in doc["part_a"]:
        p, c = r["plain"], r["corrected"]
        lines.append(f"| {100 * r['aif_noise_fraction']:g} | {r['true_dispersion_s']:g} | "
                     f"{p['share_on_truth_mean']:.3f} | {p['wrong_fraction']:.2f} | {c['share_on_truth_mean']:.3f} | "
                     f"{c['wrong_fraction']:.2f} | {' / '.join(f'{v:.2f}' for v in p['share_on_truth_by_seed'])} | "
                     f"{' / '.join(f'{v:.2f}' for v in c['share_on_truth_by_seed'])} |")
    lines += ["", "## Part B: project phantom, one draw of noise shared by every arterial voxel", "",
              ("| dispersion s | noise % of 350 HU | draw | fraction read % | Tmax flag (triggers) | by AIF noise | "
               "prior share on truth | prior by dispersion 0/1/2/3 s | normal Tmax bias s | vs noise-free s |"),
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in doc["part_b"]["runs"]:
        fr = r["aif_frame_noise_fraction"]
        lines.append(f"| {r['dispersion_s']:g} | {100 * r['noise_fraction_nominal']:g} | "
                     f"{'–' if r['seed'] is None else r['seed']} | {_f(None if fr is None else 100 * fr, '.2f')} | "
                     f"{', '.join(r['tmax_flag_triggers']) if r['tmax_dispersion_ambiguous'] else 'no'} | "
                     f"{'yes' if r['flagged_by_aif_noise'] else 'no'} | {_f(r['prior_share_on_truth'], '.3f')} | "
                     f"{' / '.join(f'{v:.2f}' for v in (r['prior_share_by_dispersion_s'] or {}).values()) or '–'} | "
                     f"{_f(r['tmax_normal_bias_s'])} | {_f(r['tmax_normal_bias_vs_noise_free_s'])} |")
    lines += ["", "Per noise level (max |normal Tmax bias|, s):", "",
              ("| noise % | fraction read % | runs | flagged (AIF noise) | max unflagged | max flagged | "
               "bias by draw, 0 s dispersion | bias by draw, 1 s dispersion |"), "|---|---|---|---|---|---|---|---|"]
    for e in doc["part_b"]["summary"]["by_noise_level"]:
        rng = e["fraction_read_range"]
        by = e["tmax_normal_bias_s_by_dispersion"]
        lines.append(f"| {100 * e['noise_fraction_nominal']:g} | "
                     f"{'–' if rng is None else f'{100 * rng[0]:.2f}–{100 * rng[1]:.2f}'} | {e['runs']} | "
                     f"{e['flagged']} ({e['flagged_by_aif_noise']}) | "
                     f"{_f(e['max_abs_tmax_bias_unflagged_s'], '.3f')} | "
                     f"{_f(e['max_abs_tmax_bias_flagged_s'], '.3f')} | "
                     f"{' / '.join(_f(v) for v in by['0'])} | "
                     f"{' / '.join(_f(v) for v in by['1'])} |")
    lines += ["", "By the fraction the engine reads:", ""]
    for side, g in doc["part_b"]["summary"]["by_side_of_limit"].items():
        lines.append(f"- {side.replace('_', ' ')}: {g['runs']} runs, {g['flagged']} flagged "
                     f"({g['flagged_by_aif_noise']} by the AIF's noise), max |bias| unflagged "
                     f"{_f(g['max_abs_tmax_bias_unflagged_s'], '.3f')} s, flagged "
                     f"{_f(g['max_abs_tmax_bias_flagged_s'], '.3f')} s, "
                     f"{g[f'runs_bias_over_{BIAS_LIMIT_S:g}_s']} with |bias| > {BIAS_LIMIT_S:g} s")
    wrong = doc["part_b"]["summary"][f"runs_bias_over_{BIAS_LIMIT_S:g}_s_unflagged"]
    lines.append(f"- unflagged runs with |bias| > {BIAS_LIMIT_S:g} s: "
                 + ("none" if not wrong else "; ".join(json.dumps(w) for w in wrong)))
    return "\n".join(lines) + "\n"


def git_state() -> dict:
    """The checkout measured: its commit and the files under src/ changed against it (None without git)."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src"], cwd=root, capture_output=True,
                               text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "src_changed": None}
    return {"commit": head.stdout.strip(), "src_changed": [ln[3:] for ln in dirty.stdout.splitlines()]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, help="write the JSON document here too (and its Markdown summary beside it)")
    ap.add_argument("--quick", action="store_true",
                    help=f"{A_SEEDS_QUICK} draws per setting in part A, {B_SEEDS_QUICK} in part B (~50 s)")
    ap.add_argument("--part", choices=("a", "b", "both"), default="both", help="run one part only")
    args = ap.parse_args(argv)
    from _result_doc import emit

    from ctperf.core.constants import AIF_FRAME_NOISE_MAX_FRACTION

    def log(s: str) -> None:
        print(s, file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    n_a = A_SEEDS_QUICK if args.quick else A_SEEDS
    n_b = B_SEEDS_QUICK if args.quick else B_SEEDS
    a_rows = part_a(n_a, log) if args.part in ("a", "both") else []
    b_rows = part_b(n_b, log) if args.part in ("b", "both") else []
    parts = {"mode": "quick" if args.quick else "full",
             "machine": f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}",
             "load_average_at_start": _r(load, 2), "git": git_state(), "runtime_s": round(time.perf_counter() - t0, 1),
             "aif_frame_noise_max_fraction": AIF_FRAME_NOISE_MAX_FRACTION, "bias_limit_s": BIAS_LIMIT_S,
             "part_a_seeds": n_a, "part_b_seeds": n_b,
             "part_a_setup": "400 blocks, exponential residue, MTT 2.5-6 s, delays 0-2 s, 0.15 HU white noise, 1 s "
                             "frames over 70 s, gamma-variate AIF peak 350 HU; models from the AIF plus one draw "
                             "of white noise; corrected = aif_noise_misfits with the known noise SD",
             "part_a": a_rows,
             "part_b_setup": "project phantom (default PhantomSpec, 8 HU) with dispersion_s 0 / 1; one draw of "
                             "noise (seed k: the same standard-normal vector at every level) added to every voxel "
                             "whose enhancement exceeds 0.2 x the maximum; compute_perfusion with Config(); bias = "
                             "median (estimated - true Tmax) over normal tissue (validate.normal_tissue); flagged = "
                             "qa_flags.tmax_dispersion_ambiguous",
             "part_b": {"runs": b_rows, "summary": summarise_b(b_rows, AIF_FRAME_NOISE_MAX_FRACTION) if b_rows
                        else None}}
    json.dumps(parts, allow_nan=False)  # strict JSON, or fail here
    rc = emit("bench_aif_noise", parts, args.out)
    if args.out and a_rows and b_rows:
        doc = json.loads(args.out.read_text())
        args.out.with_suffix(".md").write_text(to_markdown(doc))
    return rc


if __name__ == "__main__":
    from ctperf.apps.runtime import configure_process

    configure_process()  # as the ctperf command does at start-up
    raise SystemExit(main())
