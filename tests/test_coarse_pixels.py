"""The project phantom on 3 mm pixels (README "Known gaps": coarse pixels)."""

import pytest

from ctperf.config import Config
from ctperf.core.types import CTPStudy
from ctperf.pipeline import analyse_study
from ctperf.synthetic import PhantomSpec, make_phantom


@pytest.fixture(scope="module")
def coarse():
    ph = make_phantom(PhantomSpec(pixel_mm=3.0, matrix=75))  # the 160 x 1.4 mm field of view, 8 HU
    return ph, analyse_study(CTPStudy(hu=ph.hu, times_s=ph.times_s, affine_ras=ph.affine_ras), Config()).metrics


def test_coarse_pixels_keep_the_hypoperfusion(coarse):
    ph, m = coarse
    assert m["qa_values"]["compute_pixel_mm"] == pytest.approx(3.0)
    assert m["hypoperfusion_ml"] == pytest.approx(ph.truth_metrics["hypoperfusion_ml"], rel=0.15)


@pytest.mark.xfail(strict=True, reason=(
    "measured (definitions 2.17, engine 2.11, 8 HU, 3 mm pixels): core 17.5 mL against 24.8 mL (-7.3 mL; 3.7 HU, "
    "the same dose on 3 mm pixels: -6.1 mL), HIR 0.31 against 0.24 (+28 %): partial volume mixes the core's thin rim "
    "with penumbra above rCBF 30 %; 1.4 mm pixels -2.9 mL"))
def test_coarse_pixels_core_within_3_ml(coarse):
    ph, m = coarse
    assert m["core_ml"] == pytest.approx(ph.truth_metrics["core_ml"], abs=3.0)
