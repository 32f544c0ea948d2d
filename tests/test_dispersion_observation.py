"""The study's dispersion prior needs the tissue followed long enough past its peak (definitions 2.19).

Below ``DISPERSION_MIN_OBSERVED_WIDTHS`` arterial bolus widths the study prior reads no dispersion whatever the tissue's
(1 s-dispersed project phantom, 8 HU: a 45 s acquisition Tmax > 6 s -29 %, a late bolus -14 %, a broad one -16 %;
``benchmarks/results/dispersion_observation.json``), so ``qa_flags.tmax_dispersion_ambiguous`` is raised with the
reason, and the prior is fitted at the acquired frames instead (``dispersion_prior_fit = "auto"``, engine 2.12).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from ctperf.config import Config
from ctperf.core.types import CTPStudy
from ctperf.engine import DISPERSION_MIN_OBSERVED_WIDTHS, bolus_fwhm_s, compute_perfusion, observed_bolus_widths
from ctperf.synthetic import PhantomSpec, make_phantom


def test_bolus_fwhm_of_a_gaussian():
    t = np.arange(0.0, 60.0, 0.5)
    sigma = 4.0
    curve = 300.0 * np.exp(-0.5 * ((t - 20.0) / sigma) ** 2)
    assert bolus_fwhm_s(curve, 0.5) == pytest.approx(2.0 * np.sqrt(2.0 * np.log(2.0)) * sigma, abs=0.05)


@pytest.mark.parametrize("curve", [np.zeros(20), np.linspace(0.0, 1.0, 20), np.linspace(1.0, 0.0, 20)])
def test_bolus_fwhm_is_nan_without_a_whole_bolus(curve):
    assert np.isnan(bolus_fwhm_s(curve, 1.0))


def test_observed_widths_ratio_and_reason():
    t = np.arange(0.0, 60.0, 1.0)
    aif = 300.0 * np.exp(-0.5 * ((t - 15.0) / 4.0) ** 2)  # FWHM 9.42 s
    values, short, why = observed_bolus_widths(np.array([20.0, 21.0, 22.0]), 59.0, aif, 1.0)
    assert values["tissue_observed_after_peak_s"] == pytest.approx(38.0)
    assert values["aif_fwhm_s"] == pytest.approx(9.42, abs=0.02)
    assert values["tissue_observed_bolus_widths"] == pytest.approx(38.0 / 9.42, abs=0.01)
    assert not short and why is None
    values, short, why = observed_bolus_widths(np.array([20.0, 21.0, 22.0]), 45.0, aif, 1.0)
    assert short and values["tissue_observed_bolus_widths"] < DISPERSION_MIN_OBSERVED_WIDTHS
    assert "24.0 s past its peak" in why and "below 3.5" in why
    # a degenerate width (a one-sample spike) does not divide by zero; the ratio is compared unrounded
    values, short, _ = observed_bolus_widths(np.array([20.0]), 45.0, np.array([0.0, 1.0, 0.0]), 0.004)
    assert values["tissue_observed_bolus_widths"] is not None and not short
    values, short, _ = observed_bolus_widths(np.array([20.0]), 20.0 + 3.4999 * bolus_fwhm_s(aif, 1.0), aif, 1.0)
    assert short and values["tissue_observed_bolus_widths"] == 3.5  # reported rounded, flagged
    # nothing measurable: no flag, null values
    values, short, why = observed_bolus_widths(np.array([np.nan]), 45.0, np.zeros_like(aif), 1.0)
    assert values == {"tissue_observed_after_peak_s": None, "aif_fwhm_s": None, "tissue_observed_bolus_widths": None}
    assert not short and why is None


def _run(acq_s: float, cfg: Config | None = None):
    ph = make_phantom(PhantomSpec(matrix=112, pixel_mm=2.0, n_slices=6, z_bottom_mm=-15.0,
                                  frame_times_s=list(np.arange(0.0, acq_s, 1.5))))
    return compute_perfusion(CTPStudy(hu=ph.hu, times_s=ph.times_s, affine_ras=ph.affine_ras), cfg or Config())


def test_a_45_s_acquisition_is_flagged_and_a_full_one_is_not():
    full, short = _run(61.5), _run(45.0)
    assert full.qa_values["tissue_observed_bolus_widths"] > DISPERSION_MIN_OBSERVED_WIDTHS
    assert full.qa_values["tmax_dispersion_observation_reason"] is None
    assert short.qa_values["tissue_observed_bolus_widths"] < DISPERSION_MIN_OBSERVED_WIDTHS
    assert short.qa_flags["tmax_dispersion_ambiguous"] is True
    assert "past its peak" in short.qa_values["tmax_dispersion_observation_reason"]
    # below the limit the prior is fitted at the acquired frames ("auto"), above it on the time grid
    assert full.qa_values["study_dispersion_blocks"]["fit"] == "grid"
    assert short.qa_values["study_dispersion_blocks"]["fit"] == "frames"
    assert "fitted at the acquired frames" in short.qa_values["tmax_dispersion_observation_reason"]
    json.dumps(short.qa_values, allow_nan=False)  # strict JSON


def test_the_grid_prior_reads_a_short_acquisition_undispersed():
    """What the flag is for: fitted on the grid, the 1 s-dispersed tissue of a 45 s acquisition reads no dispersion."""
    res = _run(45.0, Config.from_dict({"deconvolution": {"dispersion_prior_fit": "grid"}}))
    assert res.qa_flags["tmax_dispersion_ambiguous"]
    assert res.qa_values["study_dispersion_share_by_dispersion_s"]["0"] > 0.9
