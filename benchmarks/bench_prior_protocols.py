"""How the study-wide dispersion prior behaves with the acquisition and the bolus, and why.

    python benchmarks/bench_prior_protocols.py [--noise 0 2 4 8] [--protocols full short45 ...] [--synthetic]
                                               [--pipeline-noise]

Part 1 runs the engine on the project phantom (1 s of dispersion, exponential residue, left lesion, 1.4 mm pixels)
for each protocol and noise level, with the prior fitted on the time grid (``dispersion_prior_fit = "grid"``: the
default fits short protocols at the acquired frames since engine 2.12, docs/definitions.md §2): the study prior's
dispersion shares (``qa_values`` as in metrics.json), the
median Tmax error of normal tissue and the Tmax > 6 s volume error.  A 45 s acquisition, a bolus arriving 7 s later
or one 14 s wide read right without noise but let the prior choose 0 s of dispersion at 4-8 HU (README "Known
gaps", docs/engine-notes.md "Measured 2026-12-05").

Part 2 (``--synthetic``) isolates the prior's evidence: the block curves and emulation tables the engine hands to
the study prior are captured for each protocol at 4 HU, and blocks are synthesised from one model of the family (the
1 s-dispersed exponential, MTT 4 s, peak 15 HU) with noise of a given SD, white or smoothed in time as the pipeline
smooths the curves (Gaussian, ``preprocess.temporal_sigma_s``).  Per protocol and noise: the share of blocks that the
undispersed exponential fits better than the true model, the mean misfit difference (HU^2) against the noise-free
one, and the mixture's dispersion shares for these blocks alone.  A consistent evidence would give the true model
the better fit in most blocks, a misfit gap near the noise-free one and a mixture on 1 s.

Part 3 (``--pipeline-noise``) starts from the noise-free study's own blocks (every way the phantom's tissue differs
from the family of models kept) and adds noise as the pipeline makes it: white per frame at the acquired frame
times, less the mean of the baseline frames, resampled to the uniform grid with the temporal smoothing (the
preprocessing's own matrix); beside it, white noise of the same SD added on the grid.  Per protocol and frame-noise
SD: the study mixture's dispersion shares for both.  The pipeline's noise turns the 45 s acquisition's prior from 1 s
to 0 s at a grid SD of ~0.7 HU, white noise on the grid leaves it split (docs/engine-notes.md, "Measured 2026-12-05
(session 39)").

Prints one JSON object.  Research use only, not a medical device.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys

import numpy as np

from validate import PROTOCOLS  # the harness's protocol families (frame times and bolus settings)


def phantom(protocol: str, noise_hu: float, dispersion_s: float = 1.0):
    """The project phantom (exponential residue, left lesion, 1.4 mm pixels) acquired with ``protocol``."""
    from ctperf.synthetic.phantom import PhantomSpec, make_phantom

    return make_phantom(PhantomSpec(dispersion_s=dispersion_s, noise_hu=noise_hu, **PROTOCOLS[protocol]))


def prior_summary(ph, out) -> dict:
    """The study prior's dispersion shares (``qa_values`` as in metrics.json), the normal-tissue Tmax bias (s) and
    the Tmax > 6 s volume error (%) of one engine run ``out`` on the phantom ``ph``."""
    res, tr = out.perfusion, ph.truth
    # 1.4 mm pixels: the computation grid is the phantom's own (no binning)
    assert tr.tmax.shape == res.tmax.shape, (tr.tmax.shape, res.tmax.shape)
    normal = tr.tissue.astype(bool) & ~tr.lesion_any.astype(bool) & res.masks.tissue
    truth_ml, est_ml = ph.truth_metrics.get("hypoperfusion_ml"), out.metrics.get("hypoperfusion_ml")
    return {"prior_by_dispersion_s": res.qa_values.get("study_dispersion_share_by_dispersion_s"),
            "tmax_normal_bias_s": round(float(np.nanmedian((res.tmax - tr.tmax)[normal])), 3),
            "tmax6_volume_error_pct": (round(100.0 * (est_ml / truth_ml - 1.0), 2) if est_ml and truth_ml else None)}


def measure(protocol: str, noise_hu: float, capture: dict | None = None) -> dict:
    """One engine run: the prior's dispersion shares, the normal-tissue Tmax bias (s) and the Tmax > 6 s volume
    error (%).  With ``capture`` (a dict), the study prior's inputs are stored in it (``"args"``, ``"kwargs"``),
    with the frame times (``"times_s"``, (frames, slices)) and the preprocessing's result (``"pre"``)."""
    import ctperf.engine as engine
    import ctperf.engine.deconvolution.circulant as circulant
    from ctperf.config import Config
    from ctperf.core.types import CTPStudy
    from ctperf.pipeline import analyse_study

    ph = phantom(protocol, noise_hu)
    original, original_pre = circulant.study_model_mixture, engine.preprocess_study

    def spy(*args, **kwargs):
        if capture is not None:
            capture["args"], capture["kwargs"] = args, kwargs
        return original(*args, **kwargs)

    def spy_pre(hu, times_s, *args, **kwargs):
        pre = original_pre(hu, times_s, *args, **kwargs)
        if capture is not None:
            capture["times_s"], capture["pre"] = np.asarray(times_s, float), pre
        return pre

    circulant.study_model_mixture, engine.preprocess_study = spy, spy_pre
    try:
        # the grid prior, whose evidence this benchmark studies (engine 2.12's default fits short protocols at the
        # acquired frames instead)
        cfg = Config.from_dict({"deconvolution": {"dispersion_prior_fit": "grid"}})
        out = analyse_study(CTPStudy(hu=ph.hu, times_s=ph.times_s, affine_ras=ph.affine_ras), cfg)
    finally:
        circulant.study_model_mixture, engine.preprocess_study = original, original_pre
    return {"protocol": protocol, "noise_hu": noise_hu, **prior_summary(ph, out)}


def synthetic_evidence(args: tuple, sigmas: tuple[float, ...], n_blocks: int = 400, seed: int = 0) -> list[dict]:
    """The prior's evidence on blocks synthesised from the 1 s-dispersed exponential (MTT 4 s, peak 15 HU) with
    noise of each SD in ``sigmas`` (HU), white and smoothed in time like the pipeline's curves, with the captured AIF
    and tables ``args`` of :func:`ctperf.engine.deconvolution.study_model_mixture`."""
    import scipy.fft as sfft
    from scipy import ndimage

    from ctperf.config import DeconvolutionConfig, PreprocessConfig
    from ctperf.engine.deconvolution import block_evidence, mixture_proportions, model_family
    from ctperf.engine.deconvolution.evidence import curve_misfits
    from ctperf.engine.deconvolution.prior import _PRIOR_TAU_NODES

    blocks, aif, top_filter, spectra, heights_top, dt, length, n_neg, tau_grid = args[:9]
    family = model_family(DeconvolutionConfig())
    disp = np.array([d for _, d in family])
    m_true, m_d0 = family.index((1.0, 1.0)), family.index((1.0, 0.0))
    k = int(np.argmin(np.abs(tau_grid - 4.0)))
    t = blocks.shape[1]
    curve = sfft.irfft(spectra[m_true, k], n=length)[:t]
    curve *= 15.0 / curve.max()
    centre = np.full((len(family), 1), k)
    mis0 = curve_misfits(curve[None], spectra, length, n_neg, centre, _PRIOR_TAU_NODES)[0][:, 0]
    gap0 = float(mis0[m_d0] - mis0[m_true])
    rng = np.random.default_rng(seed)
    rows = []
    smooth_s = PreprocessConfig().temporal_sigma_s
    for sd, smoothed in [(sd, sm) for sd in sigmas for sm in (False, True)]:
        noise = rng.normal(0.0, 1.0, (n_blocks, t))
        if smoothed:
            noise = ndimage.gaussian_filter1d(noise, smooth_s / dt, axis=1, mode="nearest", truncate=3.0)
            noise /= noise.std()
        data = curve[None] + sd * noise
        ll, _ = block_evidence(data, aif, top_filter, spectra, heights_top, dt, length, n_neg, tau_grid,
                               half_tau=_PRIOR_TAU_NODES)
        share = mixture_proportions(ll)
        mis = curve_misfits(data, spectra, length, n_neg, np.full((len(family), n_blocks), k), _PRIOR_TAU_NODES)[0]
        rows.append({"noise_sd_hu": sd, "noise": "smoothed in time" if smoothed else "white",
                     "undispersed_fits_better": round(float((mis[m_d0] < mis[m_true]).mean()), 3),
                     "misfit_gap_hu2": round(float(np.mean(mis[m_d0] - mis[m_true])), 3),
                     "misfit_gap_noise_free_hu2": round(gap0, 3),
                     "mixture_by_dispersion_s": {f"{d:g}": round(float(share[disp == d].sum()), 3)
                                                 for d in np.unique(disp)}})
    return rows


def pipeline_noise_evidence(protocol: str, sds: tuple[float, ...] = (0.5, 1.0, 2.0), seed: int = 0) -> list[dict]:
    """The study mixture on the noise-free study's blocks with noise of each frame SD in ``sds`` (HU) added as the
    pipeline makes it (white per frame, less the baseline frames' mean, resampled with the temporal smoothing) and,
    beside it, white noise of the same SD on the grid."""
    from ctperf.config import DeconvolutionConfig, PreprocessConfig
    from ctperf.engine.deconvolution import model_family, study_model_mixture
    from ctperf.engine.preprocess import resampling_matrices

    capture: dict = {}
    measure(protocol, 0.0, capture)
    args, kwargs, pre = capture["args"], capture["kwargs"], capture["pre"]
    blocks = np.asarray(args[0], np.float64)
    times = capture["times_s"]
    times = times[:, None] if times.ndim == 1 else times
    grid = pre.time_s + pre.time_origin_s
    # the phantom's slices share their frame times (slice 0's matrix for every block)
    m = resampling_matrices(times, grid, PreprocessConfig().temporal_sigma_s)[0]
    disp = np.array([d for _, d in model_family(DeconvolutionConfig())])
    rng = np.random.default_rng(seed)

    def shares(data: np.ndarray) -> dict:
        mix, _ = study_model_mixture(data, *args[1:], **kwargs)
        return {f"{d:g}": round(float(mix[disp == d].sum()), 3) for d in np.unique(disp)}

    rows = []
    for sd in sds:
        e = sd * rng.normal(size=(len(blocks), len(times)))
        e -= e[:, :pre.n_baseline_frames].mean(axis=1, keepdims=True)
        noise = e @ m.T
        white = rng.normal(0.0, float(noise.std()), noise.shape)
        rows.append({"frame_noise_sd_hu": sd, "grid_noise_sd_hu": round(float(noise.std()), 3),
                     "pipeline_noise_mixture_by_dispersion_s": shares(blocks + noise),
                     "white_grid_noise_mixture_by_dispersion_s": shares(blocks + white)})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--noise", type=float, nargs="*", default=[0.0, 4.0, 8.0],
                    help="image noise SDs (HU) of part 1 (none: part 1 is skipped)")
    ap.add_argument("--protocols", nargs="+", default=list(PROTOCOLS), choices=list(PROTOCOLS))
    ap.add_argument("--synthetic", action="store_true", help="part 2: the evidence on synthetic blocks")
    ap.add_argument("--pipeline-noise", action="store_true",
                    help="part 3: the noise-free study's blocks with noise added as the pipeline makes it")
    args = ap.parse_args(argv)
    doc = {"created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "disclaimer": "Research use only, not a medical device.", "runs": [], "synthetic": [],
           "pipeline_noise": []}
    for protocol in args.protocols:
        for noise in args.noise:
            doc["runs"].append(measure(protocol, noise))
            print(json.dumps(doc["runs"][-1]), file=sys.stderr, flush=True)
        if args.synthetic:
            capture: dict = {}
            measure(protocol, 4.0, capture)
            doc["synthetic"].append({"protocol": protocol,
                                     "rows": synthetic_evidence(capture["args"], (0.35, 0.7))})
            print(json.dumps(doc["synthetic"][-1]), file=sys.stderr, flush=True)
        if args.pipeline_noise:
            doc["pipeline_noise"].append({"protocol": protocol, "rows": pipeline_noise_evidence(protocol)})
            print(json.dumps(doc["pipeline_noise"][-1]), file=sys.stderr, flush=True)
    print(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
