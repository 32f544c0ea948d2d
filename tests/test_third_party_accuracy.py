"""Engine accuracy on third-party validation data (``../shared/third_party``; skipped when absent).

The harness (``benchmarks/validate.py``) tabulates every family; these tests hold the README's figures for the
OSIPI DSC cases convolved continuously (the file's own curves are rectangle-rule sums, see
``benchmarks/third_party/osipi.py``) and the Chakwizira DRO's delay insensitivity.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import third_party  # noqa: E402
import validate  # noqa: E402
from third_party import chakwizira, osipi  # noqa: E402

pytestmark = pytest.mark.skipif(third_party.data_dir() is None, reason="../shared/third_party absent")


@pytest.fixture(scope="module")
def cfg():
    return validate.make_config(None, [])[0]


def test_osipi_continuous_known_aif(cfg):
    """Known AIF, deconvolution step: CBF -2.4 % median (-1.3 to -5.0 %), Tmax +0.08 s (measured 2026-12-04)."""
    if not osipi.available():
        pytest.skip(f"{osipi.FILE} absent")
    case = osipi.load(continuous=True)[0]
    m = validate._curve_metrics(validate._known_rows(case, cfg))
    assert abs(m["cbf_median_error_pct"]) <= 5.0 and np.abs(m["cbf_error_pct_range"]).max() <= 7.0, m
    assert abs(m["tmax_bias_s"]) <= 0.2, m


def test_osipi_continuous_automatic(cfg):
    """Automatic AIF, 2 HU: CBF -11.2 %, Tmax error 0.17 s (engine 2.9; 2.8, whose study prior first found the
    cases' undispersed residue: -13.5 %; engine 2.7: -20.8 %, +0.51 s, the under-corrected undispersed residue)."""
    if not osipi.available():
        pytest.skip(f"{osipi.FILE} absent")
    case = osipi.load(continuous=True)[0]
    res = validate.run_engine(case.study, cfg)
    m = validate._curve_metrics(validate._region_table(case, res))
    assert abs(m["tmax_bias_s"]) <= 0.75, m
    assert abs(m["cbf_median_error_pct"]) <= 15.0, m["cbf_median_error_pct"]


@pytest.mark.xfail(strict=True, reason=(
    "measured 2026-12-04 (engine 2.7): CBF change -7.5 / +8.8 / -2.7 % for 1 / 3 / 6 s. The DRO's own AIF (one voxel, "
    "SNR 20) has a noise floor of 0.078, so the ladder keeps only 0.2 and 0.3, and there the CBF read moves with "
    "the delay (Tmax error 0.32-0.74 s; why not measured). With every level (aif_noise_margin = 0, engine "
    "2.6): +0.3 / -0.2 / +2.0 %, but Tmax 1.27-1.76 s late; margin 1: -2.4 / +4.4 / -0.3 %, Tmax 0.62-1.16 s"))
def test_chakwizira_known_aif_cbf_is_delay_insensitive(cfg):
    """Known AIF, undispersed exponential tissue delayed by 1 / 3 / 6 s: median CBF change within 5 % of the
    undelayed study."""
    if not chakwizira.available():
        pytest.skip(f"{chakwizira.FOLDER} absent")
    settings = [(0.0, 0.0), (1.0, 0.0), (3.0, 0.0), (6.0, 0.0)]
    case = chakwizira.load_delay_dispersion(settings=settings)
    change = validate._delay_dispersion_metrics(validate._known_rows(case, cfg))["cbf_change_pct_vs_no_delay"]
    for delay in (1, 3, 6):
        assert abs(change[f"delay{delay}_disp0"]) < 5.0, change
