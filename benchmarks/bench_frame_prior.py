"""A study dispersion prior fitted in the frame domain (prototype, measured and not adopted): does the exact likelihood
fix the prior that short acquisitions and broad boluses send to 0 s of dispersion?

    python benchmarks/bench_frame_prior.py [--protocols short45 full ...] [--dispersions 0 1] [--noise 4 8]
                                           [--interp pchip|linear] [--delay-step 0.1] [--tau-density 3]

The engine's prior (:func:`ctperf.engine.deconvolution.study_model_mixture`) fits block means of the curves on the
uniform grid, whose noise the resampling from the acquired frames and the temporal smoothing have correlated
(``bench_prior_protocols.py --pipeline-noise``).  This prototype replaces it, for one run, by a fit of the block
means of the baseline-subtracted frames at the acquired frame times: the noise there is white, and a free offset in
every model's fit absorbs the baseline's, so least squares is the likelihood.  Model curves: the family's residues
(shapes x dispersions) convolved on a fine grid with the AIF of the frames (the selected AIF voxels, interpolated
between frames), sampled at each frame time minus a delay (steps of ``--delay-step`` s), for MTTs
``--tau-density`` times denser than the engine's grid.  The mixture over the informative blocks (EM, as the engine)
becomes the run's prior; everything else is the engine's.

Per protocol, dispersion and noise: the prior's dispersion shares, the normal-tissue Tmax bias (s) and the
Tmax > 6 s volume error (%).  Measured (docs/engine-notes.md, "Measured 2026-12-05 (session 39)"): at 8 HU with 1 s
of dispersion every protocol within -2.4...+11.1 %; undispersed studies put up to 0.33 on 3 s; unstable at 4 HU.
Slow (~10 s per study): the prototype searches every delay and MTT.  The phantom's slices share their frame times
(slice 0's are used).  Prints one JSON object.  Research use only, not a medical device.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from contextlib import contextmanager

import numpy as np
import scipy.fft as sfft

from bench_prior_protocols import PROTOCOLS, phantom, prior_summary


def frame_model_curves(aif_k: np.ndarray, t_k: np.ndarray, family: list[tuple[float, float]], taus_s: np.ndarray,
                       delays_s: np.ndarray, interp: str, dt_fine_s: float = 0.05) -> np.ndarray:
    """Unit-flow model curves (n_models, n_tau * n_delay, K) at the frame times ``t_k`` (s, from the first frame):
    each residue of ``family`` (gamma shape, dispersion s) at each MTT convolved with the frame AIF ``aif_k``
    (interpolated on a ``dt_fine_s`` grid, ``interp`` "linear" or "pchip"), delayed by each of ``delays_s``."""
    from scipy.interpolate import PchipInterpolator

    from ctperf.engine.deconvolution.emulation import model_residues

    t_fine = np.arange(0.0, t_k[-1] + 1.0, dt_fine_s)
    if interp == "pchip":
        aif_fine = np.nan_to_num(PchipInterpolator(t_k, aif_k, extrapolate=False)(t_fine))
    else:
        aif_fine = np.interp(t_fine, t_k, aif_k, left=0.0)
    n = len(t_fine)
    aif_spec = sfft.rfft(aif_fine, n=2 * n)
    x = (t_k[None, :] - delays_s[:, None]) / dt_fine_s  # (n_delay, K) fine-grid positions
    i0 = np.clip(np.floor(x).astype(int), 0, n - 2)
    w = np.clip(x - i0, 0.0, 1.0)
    inside = x >= 0
    out = np.empty((len(family), len(taus_s) * len(delays_s), len(t_k)))
    for m, (shape_k, disp_s) in enumerate(family):
        _, res, _, _ = model_residues(np.asarray(taus_s), dt_fine_s, n, disp_s, 1, shape_k)
        c = sfft.irfft(sfft.rfft(res, n=2 * n, axis=1) * aif_spec[None], n=2 * n, axis=1)[:, :n] * dt_fine_s
        curves = (c[:, i0] * (1.0 - w) + c[:, i0 + 1] * w) * inside  # (n_tau, n_delay, K)
        out[m] = curves.reshape(-1, len(t_k))
    return out


def frame_mixture(blocks_k: np.ndarray, aif_k: np.ndarray, t_k: np.ndarray, family: list[tuple[float, float]],
                  tau_grid_s: np.ndarray, opts: dict) -> tuple[np.ndarray, int]:
    """The mixture proportions (n_models,) of the frame-domain fit of the blocks ``blocks_k`` (n, K) and the number
    of informative blocks used (as :func:`ctperf.engine.deconvolution.study_model_mixture`)."""
    from ctperf.engine.deconvolution import mixture_proportions
    from ctperf.engine.deconvolution.prior import informative_blocks

    taus = tau_grid_s[(tau_grid_s >= 1.0) & (tau_grid_s <= 25.0)]
    taus = np.geomspace(taus[0], taus[-1], opts["tau_density"] * (len(taus) - 1) + 1)
    delays = np.arange(-4.0, t_k[-1] / 2, opts["delay_step"])
    curves = frame_model_curves(aif_k, t_k, family, taus, delays, opts["interp"])
    curves -= curves.mean(axis=2, keepdims=True)  # a free offset: the baseline's noise and any constant
    c = blocks_k - blocks_k.mean(axis=1, keepdims=True)
    cc = (c * c).sum(axis=1)
    rss = np.empty((len(family), len(c)))
    for m in range(len(family)):
        norm = np.maximum((curves[m] ** 2).sum(axis=1), 1e-12)
        rss[m] = cc - (np.maximum(c @ curves[m].T, 0.0) ** 2 / norm[None]).max(axis=1)
    best = rss.min(axis=0)
    keep = informative_blocks(blocks_k, best, opts["min_cnr"])
    sigma2 = np.median(best[keep]) / (len(t_k) - 4.0)  # white noise: the pooled residual variance
    return mixture_proportions(-0.5 * (rss[:, keep] - best[keep]) / sigma2), int(keep.sum())


@contextmanager
def frame_prior(opts: dict):
    """Within the block, the engine's study prior is the frame-domain mixture (hooks on the preprocessing's
    resampling, the prior's block means, the AIF selection and the study mixture)."""
    import ctperf.engine as engine
    import ctperf.engine.deconvolution.circulant as circulant
    import ctperf.engine.preprocess as preprocess
    from ctperf.config import DeconvolutionConfig
    from ctperf.engine.deconvolution import model_family

    seen: dict = {}
    originals = (preprocess.resample_to_grid, engine.block_mean_curves, engine.select_aif_vof,
                 circulant.study_model_mixture)
    resample, blocks, select, _ = originals

    def resample_spy(hub, times, grid, temporal_sigma_s=0.0, mask_zyx=None, workers=None):
        seen["frames"], seen["times"] = np.array(hub, copy=True), np.asarray(times, float) - float(times[0, 0])
        return resample(hub, times, grid, temporal_sigma_s, mask_zyx=mask_zyx, workers=workers)

    def blocks_spy(data, mask, px, block_mm):
        seen["blocks"] = blocks(seen["frames"], mask, px, block_mm)
        return blocks(data, mask, px, block_mm)

    def select_spy(*args, **kwargs):
        sel = select(*args, **kwargs)
        seen["aif_voxels"] = sel.aif.voxels_zyx
        return sel

    def mixture(*args, **kwargs):
        v = seen["aif_voxels"]
        aif_k = seen["frames"][:, v[:, 0], v[:, 1], v[:, 2]].mean(axis=1)
        return frame_mixture(seen["blocks"], aif_k, seen["times"][:, 0], model_family(DeconvolutionConfig()),
                             args[8], opts)

    preprocess.resample_to_grid, engine.block_mean_curves = resample_spy, blocks_spy
    engine.select_aif_vof, circulant.study_model_mixture = select_spy, mixture
    try:
        yield
    finally:
        (preprocess.resample_to_grid, engine.block_mean_curves, engine.select_aif_vof,
         circulant.study_model_mixture) = originals


def measure(protocol: str, dispersion_s: float, noise_hu: float, opts: dict) -> dict:
    """One engine run with the frame-domain prior: its dispersion shares, the normal-tissue Tmax bias (s) and the
    Tmax > 6 s volume error (%)."""
    from ctperf.config import Config
    from ctperf.core.types import CTPStudy
    from ctperf.pipeline import analyse_study

    ph = phantom(protocol, noise_hu, dispersion_s)
    with frame_prior(opts):
        out = analyse_study(CTPStudy(hu=ph.hu, times_s=ph.times_s, affine_ras=ph.affine_ras), Config())
    return {"protocol": protocol, "dispersion_s": dispersion_s, "noise_hu": noise_hu, **prior_summary(ph, out)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--protocols", nargs="+", default=list(PROTOCOLS), choices=list(PROTOCOLS))
    ap.add_argument("--dispersions", type=float, nargs="+", default=[1.0, 0.0], help="tissue dispersion (s)")
    ap.add_argument("--noise", type=float, nargs="+", default=[4.0, 8.0], help="image noise SDs (HU)")
    ap.add_argument("--interp", choices=["pchip", "linear"], default="pchip", help="the frame AIF between frames")
    ap.add_argument("--delay-step", type=float, default=0.1, help="delay search step (s)")
    ap.add_argument("--tau-density", type=int, default=3, help="MTT nodes per node of the engine's grid")
    ap.add_argument("--min-cnr", type=float, default=10.0, help="informative blocks (as the engine's default)")
    args = ap.parse_args(argv)
    opts = {"interp": args.interp, "delay_step": args.delay_step, "tau_density": args.tau_density,
            "min_cnr": args.min_cnr}
    doc = {"created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "disclaimer": "Research use only, not a medical device.", "options": opts, "runs": []}
    for protocol in args.protocols:
        for disp in args.dispersions:
            for noise in args.noise:
                doc["runs"].append(measure(protocol, disp, noise, opts))
                print(json.dumps(doc["runs"][-1]), file=sys.stderr, flush=True)
    print(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
