"""The study-wide dispersion prior (``deconvolution.dispersion_prior = "study"``, option; docs/definitions.md §2,
README "Model evidence").

Its building blocks are checked on exact inputs; on the project phantom at 8 HU it is checked to find the tissue's
dispersion (0 s and 1 s) and to read the undispersed study's Tmax > 6 s volume right, and its measured failure on
dispersed tissue (Tmax read late under noise) is a strict expected failure carrying the measured number.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from ctperf.config import Config
from ctperf.errors import ConfigError
from ctperf.engine import block_mean_curves, dispersion_prior_summary
from ctperf.engine.deconvolution import apply_prior, dispersion_shares, mixture_proportions

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_dispersion_evidence as bench  # noqa: E402

FAMILY = [(k, d) for d in (0.0, 1.0) for k in (1.0, 2.0)]  # (shape, dispersion), the engine's order


def test_mixture_concentrates_on_a_model_every_block_prefers():
    ll = np.zeros((4, 300))
    ll[[0, 2, 3]] = -0.5  # model 1 better by 0.5 nats in every block: weak alone, decisive together
    pi = mixture_proportions(ll)
    assert pi.sum() == pytest.approx(1.0) and pi[1] > 0.99, pi


def test_mixture_keeps_the_shares_of_blocks_that_differ():
    ll = np.full((4, 100), -50.0)
    ll[0, :30] = 0.0  # 30 blocks clearly model 0, 70 clearly model 3
    ll[3, 30:] = 0.0
    np.testing.assert_allclose(mixture_proportions(ll), [0.3, 0.0, 0.0, 0.7], atol=1e-6)


def test_dispersion_shares_sum_the_shapes_of_each_dispersion():
    np.testing.assert_allclose(dispersion_shares([0.1, 0.2, 0.3, 0.4], FAMILY), [0.3, 0.3, 0.7, 0.7])


def test_prior_multiplies_and_renormalises_and_never_empties_a_column():
    w = np.array([[0.5, 1.0], [0.5, 0.0], [0.0, 0.0], [0.0, 0.0]], np.float32)  # 2 voxels, 4 models
    prior = np.array([0.2, 0.8, 0.0, 0.0])
    out = apply_prior(w, prior)
    np.testing.assert_allclose(out[:, 0], [0.2, 0.8, 0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(out.sum(axis=0), 1.0, atol=1e-6)
    emptied = apply_prior(w, np.array([0.0, 1.0, 0.0, 0.0]))  # voxel 2 only fits model 0, which the prior excludes
    np.testing.assert_allclose(emptied[:, 1], w[:, 1])


def test_block_means_average_the_mask_in_each_block_at_least_half_covered():
    data = np.arange(2 * 1 * 4 * 4, dtype=np.float32).reshape(2, 1, 4, 4)  # (T, z, y, x)
    mask = np.zeros((1, 4, 4), bool)
    mask[0, :2, :2] = True  # block (0, 0) full
    mask[0, 2, 2:] = True  # block (1, 1) half
    mask[0, 0, 3] = True  # block (0, 1) a quarter: dropped
    out = block_mean_curves(data, mask, pixel_mm=1.0, block_mm=2.0)
    assert out.shape == (2, 2)
    np.testing.assert_allclose(out[0], [data[t, 0, :2, :2].mean() for t in range(2)])
    np.testing.assert_allclose(out[1], [data[t, 0, 2, 2:].mean() for t in range(2)])


def test_summary_is_null_with_a_reason_when_off_or_missing():
    off = dispersion_prior_summary(None, FAMILY, "uniform")
    assert off["study_dispersion_share_by_dispersion_s"] is None and "uniform" in off["study_dispersion_reason"]
    missing = dispersion_prior_summary(None, FAMILY, "study")
    assert missing["study_dispersion_share_by_dispersion_s"] is None and missing["study_dispersion_reason"]
    bad = dispersion_prior_summary(np.array([np.nan, 0, 1, 0]), FAMILY, "study")
    assert bad["study_dispersion_share_by_dispersion_s"] is None
    ok = dispersion_prior_summary(np.array([0.9, 0.9, 0.1, 0.1]), FAMILY, "study")
    assert ok == {"study_dispersion_share_by_dispersion_s": {"0": 0.9, "1": 0.1}, "study_dispersion_reason": None}
    json.dumps(ok, allow_nan=False)


def test_option_is_off_by_default_and_validated():
    assert Config().deconvolution.dispersion_prior == "uniform"
    assert Config.from_dict({"deconvolution": {"dispersion_prior": "study"}}).deconvolution.dispersion_prior == "study"
    with pytest.raises(ConfigError):
        Config.from_dict({"deconvolution": {"dispersion_prior_block_mm": 0}})
    with pytest.raises(ConfigError):
        Config.from_dict({"deconvolution": {"dispersion_prior": "regional"}})


# ------------------------------------------------------------------------------ project phantom, 8 HU (~15 s each)
@functools.cache
def _row(dispersion_s: float) -> dict:
    return bench.measure(8.0, dispersion_s, "study dispersion prior")


@pytest.mark.parametrize("dispersion_s", [0.0, 1.0])
def test_study_prior_finds_the_tissue_dispersion_at_8hu(dispersion_s):
    shares = _row(dispersion_s)["study_dispersion_share_by_dispersion_s"]
    assert shares[f"{dispersion_s:g}"] >= 0.9, shares


def test_study_prior_reads_the_undispersed_hypoperfusion_volume_at_8hu():
    row = _row(0.0)
    assert abs(row["tmax6_ml"] / row["tmax6_ml_truth"] - 1.0) <= 0.10, row  # default: +57 % (harness)
    assert abs(row["tmax_error_normal_s"]) <= 0.4, row


@pytest.mark.xfail(strict=True, raises=AssertionError,
                   reason="measured (engine 2.6, 8 HU, 1 s dispersion, study prior 0.96 on the right dispersion): "
                          "normal-tissue Tmax +0.65 s, Tmax > 6 s 110.3 mL against 100.0 mL (default +0.15 s, "
                          "99.4 mL; engine 2.1: +0.68 s, 111.7 mL): under noise the residue's maximum is read "
                          "later (+0.5 s) and its MTT shorter (the maximum lifted by noise) than the noise-free "
                          "emulation of the correction assumes")
def test_study_prior_reads_dispersed_tissue_within_half_a_second_at_8hu():
    row = _row(1.0)
    assert abs(row["tmax_error_normal_s"]) <= 0.5, row
    assert abs(row["tmax6_ml"] / row["tmax6_ml_truth"] - 1.0) <= 0.10, row
