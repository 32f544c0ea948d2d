"""The study-wide prior of the models: the mixture that best explains the informative tissue blocks
(:func:`study_model_mixture`) and how it weights each voxel's models."""

from __future__ import annotations

import itertools

import numpy as np

from ctperf.engine.deconvolution.evidence import block_evidence


def mixture_proportions(log_lik_m_g: np.ndarray, max_iter: int = 1000, tol: float = 1e-7) -> np.ndarray:
    """Maximum-likelihood proportions (n_models,) of a mixture of the models over the groups (EM), from each
    group's log-likelihoods (n_models, n_groups): the share of the study's blocks each model explains best, as
    far as the data can tell them apart."""
    ll = np.asarray(log_lik_m_g, np.float64)
    lik = np.exp(ll - ll.max(axis=0, keepdims=True))
    lik_t = np.ascontiguousarray(lik.T)
    pi = np.full(len(ll), 1.0 / len(ll))
    for _ in range(max_iter):
        # the mean over the groups of the posteriors pi_m lik_mg / sum_k pi_k lik_kg, as two matrix-vector products
        new = pi * (lik @ (1.0 / np.maximum(lik_t @ pi, 1e-300))) / lik.shape[1]
        done = np.abs(new - pi).max() < tol
        pi = new
        if done:
            break
    return pi


def mixture_log_likelihood(log_lik_m_g: np.ndarray, proportions_m: np.ndarray) -> float:
    """Log-likelihood of the groups under the mixture ``proportions_m`` (up to each group's constant)."""
    ll = np.asarray(log_lik_m_g, np.float64)
    top = ll.max(axis=0)
    return float((np.log(np.maximum(np.exp(ll - top).T @ np.asarray(proportions_m, np.float64), 1e-300)) + top).sum())


def subset_averaged_mixture(log_lik_m_g: np.ndarray, family: list[tuple[float, float]]) -> np.ndarray:
    """The mixture (n_models,) averaged over every non-empty subset S of the family's dispersions: each subset's
    maximum-likelihood mixture (:func:`mixture_proportions` over its models, log-likelihood l_S over the n groups),
    weighted by exp(-BIC_S / 2) with BIC_S = -2 l_S + k_S ln n and k_S = the subset's models less one (its free
    proportions; Schwarz 1978).

    The evidence that tells dispersions apart is a small fraction of a log unit per block, so a maximum-likelihood
    mixture over every dispersion reads the blocks' scatter as heterogeneity: undispersed studies get 0.1-0.3 on
    3 s (a component whose removal costs < 1 log unit).  A dispersion enters the prior only as far as the study's
    blocks pay for it."""
    ll = np.asarray(log_lik_m_g, np.float64)
    disp = np.array([d for _, d in family])
    values = np.unique(disp)
    log_n = np.log(max(ll.shape[1], 2))
    half_bic, mixtures = [], []
    for r in range(1, len(values) + 1):
        for subset in itertools.combinations(values, r):
            inside = np.isin(disp, subset)
            pi = mixture_proportions(ll[inside])
            full = np.zeros(len(disp))
            full[inside] = pi
            half_bic.append(-mixture_log_likelihood(ll[inside], pi) + 0.5 * (inside.sum() - 1) * log_n)
            mixtures.append(full)
    w = np.exp(min(half_bic) - np.array(half_bic))
    return (w / w.sum()) @ np.array(mixtures)


def dispersion_shares(proportions_m: np.ndarray, family: list[tuple[float, float]]) -> np.ndarray:
    """Each model's dispersion's share of the mixture (n_models,): the proportions summed over the shapes."""
    disp = np.array([d for _, d in family])
    prop = np.asarray(proportions_m, np.float64)
    return np.array([prop[disp == d].sum() for d in disp])


#: MTT nodes (either side of the noisy first guess, a factor ~1.12 apart) searched by the fits that set the study
#: dispersion prior: a first guess from the peak of a noisy block's residue can be off by a factor of 2-3.
_PRIOR_TAU_NODES = 12


#: Fewest blocks the study dispersion prior is fitted to: with fewer informative blocks (:func:`informative_blocks`)
#: it uses all of them.
_PRIOR_MIN_BLOCKS = 8


def study_model_mixture(block_means_gt: np.ndarray, aif_t: np.ndarray, top_filter: np.ndarray,
                        model_spectra: np.ndarray, heights_top: np.ndarray, dt_s: float, length: int, n_neg: int,
                        tau_grid_s: np.ndarray, min_cnr: float = 0.0, components: str = "all",
                        family: list[tuple[float, float]] | None = None,
                        aif_noise_m_tau: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """The proportions (n_models,) of the mixture of models that best explains the mean curves of the study's
    informative tissue blocks (:func:`block_evidence`, :func:`informative_blocks` with ``min_cnr``,
    :func:`mixture_proportions`), and the number of blocks used: the study-wide prior of the models' weights
    (:func:`model_prior`).

    One block's curve hardly tells an undispersed residue from a dispersed one at clinical noise (the shape and the
    delay absorb the difference), but a whole study's blocks together do, as long as the dispersion is shared by
    much of the tissue; where regions differ, the mixture keeps each dispersion's share.  Each block's evidence is
    weak (a small fraction of a log unit at 8 HU), so a small bias shared by many blocks decides the mixture: the
    weakly enhancing blocks, whose fits are biased by the noise (measured: towards more dispersion at 8 HU, towards
    none at 15 HU), are left out.  ``components = "bic"``: the mixture averaged over the subsets of dispersions
    (:func:`subset_averaged_mixture`, needs ``family``).  ``aif_noise_m_tau``: the misfit the AIF's own noise adds
    to each model (:func:`ctperf.engine.deconvolution.evidence.aif_noise_misfits`), taken off each fit's."""
    log_lik, best_rss = block_evidence(block_means_gt, aif_t, top_filter, model_spectra, heights_top, dt_s, length,
                                       n_neg, tau_grid_s, half_tau=_PRIOR_TAU_NODES,
                                       aif_noise_m_tau=aif_noise_m_tau)
    keep = informative_blocks(block_means_gt, best_rss, min_cnr)
    if components == "bic":
        if family is None:
            raise ValueError('components = "bic" needs the model family')
        return subset_averaged_mixture(log_lik[:, keep], family), int(keep.sum())
    return mixture_proportions(log_lik[:, keep]), int(keep.sum())


def model_prior(mixture_m: np.ndarray, family: list[tuple[float, float]], kind: str) -> np.ndarray:
    """The prior (n_models,) the study's mixture (:func:`study_model_mixture`) puts on each model: its proportion
    (``kind = "mixture"``) or its dispersion's share (``"dispersion"``, :func:`dispersion_shares`: the shapes are
    left to each region's evidence)."""
    if kind == "mixture":
        return np.asarray(mixture_m, np.float64)
    if kind == "dispersion":
        return dispersion_shares(mixture_m, family)
    raise ValueError(f"unknown model prior {kind!r}")


def informative_blocks(block_means_gt: np.ndarray, best_rss: np.ndarray, min_cnr: float,
                       min_blocks: int = _PRIOR_MIN_BLOCKS) -> np.ndarray:
    """The blocks (bool, (n_blocks,)) whose mean curve peaks at least ``min_cnr`` times above the RMS residual of its
    best model fit (``best_rss``: residual sum of squares over the T samples); all of them when ``min_cnr <= 0`` or
    fewer than ``min_blocks`` qualify."""
    curves = np.asarray(block_means_gt, np.float64)
    rms = np.sqrt(np.asarray(best_rss, np.float64) / max(curves.shape[1], 1))
    keep = curves.max(axis=1, initial=0.0) >= min_cnr * rms
    return keep if min_cnr > 0 and keep.sum() >= min_blocks else np.ones(len(curves), bool)


def apply_prior(weight_m_n: np.ndarray, prior_m: np.ndarray) -> np.ndarray:
    """Model weights (n_models, n) times a prior (n_models,), renormalised; a column the prior would empty keeps
    its weights."""
    w = np.asarray(weight_m_n, np.float64) * np.asarray(prior_m, np.float64)[:, None]
    total = w.sum(axis=0, keepdims=True)
    return np.where(total > 1e-12, w / np.maximum(total, 1e-300), weight_m_n).astype(np.float32)
