"""`compute.workers`: the thread count of one run reaches every thread pool and FFT, never changes a result, and
the batch gives each study its share of the cores."""

import json
import os

import numpy as np
import pytest

from cohort_data import SMALL, write_fast_config, write_small_study
from ctperf.config import ComputeConfig, Config, thread_count
from ctperf.errors import ConfigError


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True])
def test_workers_must_be_a_positive_whole_number(bad):
    with pytest.raises(ConfigError, match="compute.workers"):
        Config.from_dict({"compute": {"workers": bad}})
    with pytest.raises(ConfigError, match="compute.workers"):
        ComputeConfig(workers=bad)


def test_thread_count():
    assert Config().compute.workers is None
    assert thread_count(None) == (os.cpu_count() or 1)
    assert thread_count(3) == 3
    assert thread_count(3, tasks=2) == 2 and thread_count(None, tasks=0) == 1


def _pool_sizes(monkeypatch, *modules):
    """Record ``max_workers`` of every ThreadPoolExecutor the given modules create."""
    from concurrent.futures import ThreadPoolExecutor

    sizes = []

    class Spy(ThreadPoolExecutor):
        def __init__(self, max_workers=None, *a, **k):
            sizes.append(max_workers)
            super().__init__(max_workers, *a, **k)

    for mod in modules:
        monkeypatch.setattr(mod, "ThreadPoolExecutor", Spy)
    return sizes


def test_deconvolve_workers_reach_the_pool_and_change_nothing(monkeypatch):
    from ctperf.engine import deconvolution as dcv
    from ctperf.engine.deconvolution import circulant, emulation, evidence

    rng = np.random.default_rng(0)
    t = np.arange(40.0)
    aif = 400.0 * (t / 8.0) ** 3 * np.exp(-(t - 8.0) / 2.0) * (t > 0) / 8.0
    aif = np.where(t > 0, aif, 0.0)
    tau = rng.uniform(2.0, 8.0, 300)
    resid = np.exp(-t[None, :] / tau[:, None])
    tissue = 0.01 * np.array([np.convolve(aif, r)[:40] for r in resid]) + rng.normal(0, 1.0, (300, 40))
    monkeypatch.setattr(circulant, "_CHUNK", 64)  # 5 chunks, so the pool size is not capped by the work
    sizes = _pool_sizes(monkeypatch, circulant, emulation, evidence)
    cfg = Config().deconvolution
    groups = np.arange(300) // 10
    outs = {}
    for w in (None, 1, 3):
        sizes.clear()
        outs[w] = dcv.deconvolve(tissue, aif, 1.0, cfg, shape_groups=groups, workers=w)
        # the voxel chunks' pool has the run's thread count (capped by the 5 chunks); no pool exceeds it (the model
        # weights' side thread and its models' pool run while the main thread computes the guide residues)
        assert thread_count(w, 5) in sizes and max(sizes) <= thread_count(w), (w, sizes)
        if thread_count(w) == 1:
            assert set(sizes) == {1}
    for w in (1, 3):
        for field in ("rmax_per_s", "tmax_s", "threshold", "rmax_standard_per_s", "tmax_standard_s"):
            np.testing.assert_array_equal(getattr(outs[w], field), getattr(outs[None], field))


def test_compute_perfusion_passes_workers_to_every_pool(monkeypatch):
    from ctperf.core.types import CTPStudy
    from ctperf.engine import compute_perfusion
    import ctperf.engine.deconvolution.circulant
    import ctperf.engine.deconvolution.emulation
    import ctperf.engine.deconvolution.evidence
    import ctperf.engine.denoise
    import ctperf.engine.maps
    from ctperf.synthetic import PhantomSpec, make_phantom

    ph = make_phantom(PhantomSpec(**SMALL, lesion="left", seed=0))
    study = CTPStudy(hu=ph.hu, times_s=ph.times_s, affine_ras=ph.affine_ras)
    dcv = ctperf.engine.deconvolution
    sizes = _pool_sizes(monkeypatch, ctperf.engine.denoise, dcv.circulant, dcv.emulation, dcv.evidence,
                        ctperf.engine.maps)
    reg = {"deconvolution": {"map_regularisation": True}}  # its bilateral filter has a pool too
    one = compute_perfusion(study, Config.from_dict({"compute": {"workers": 1}, **reg}))
    assert len(sizes) >= 5 and set(sizes) == {1}, sizes  # denoise, deconvolution, 4 median filters, regularisation
    sizes.clear()
    every = compute_perfusion(study, Config.from_dict(reg))
    assert max(sizes) == min(os.cpu_count() or 1, SMALL["n_slices"])
    for name in ("cbf", "cbv", "mtt", "tmax", "ttp", "rcbf"):
        np.testing.assert_array_equal(getattr(one, name), getattr(every, name))


def test_batch_config_key_ignores_threads():
    from ctperf.apps.batch.runner import config_key, with_threads

    base = Config().to_dict()
    two = with_threads(base, 2)
    assert two["compute"] == {"workers": 2} and base["compute"] == {"workers": None}
    assert with_threads(base, None) is base
    assert config_key(two) == config_key(base)
    assert config_key({**base, "thresholds": {**base["thresholds"], "rcbf_core": 0.2}}) != config_key(base)


@pytest.mark.slow
def test_batch_gives_each_study_its_share_of_the_cores(tmp_path):
    pytest.importorskip("distributed", reason="the cohort extra (dask[distributed]) is not installed")
    from ctperf.apps.batch import run_batch

    write_small_study(tmp_path / "cohort" / "p0", seed=0)
    cfg = Config.load(write_fast_config(tmp_path / "fast.json")).to_dict()
    res = run_batch(tmp_path / "cohort", tmp_path / "out", cfg, workers=2)
    assert res.n_failed == 0, res.rows
    metrics = json.loads((tmp_path / "out" / "p0" / "metrics.json").read_text())
    assert metrics["provenance"]["config"]["compute"]["workers"] == max(1, (os.cpu_count() or 1) // 2)
    res = run_batch(tmp_path / "cohort", tmp_path / "out2", cfg, workers=1, threads=1)
    metrics = json.loads((tmp_path / "out2" / "p0" / "metrics.json").read_text())
    assert metrics["provenance"]["config"]["compute"]["workers"] == 1


def test_masked_median_equals_scipy_median_filter_inside_the_mask():
    from scipy import ndimage

    from ctperf.engine.maps import _median_per_slice

    rng = np.random.default_rng(1)
    vol = rng.normal(size=(3, 40, 50)).astype(np.float32)
    where = rng.random(vol.shape) < 0.4
    where[1] = False
    for size in (3, 7):
        got = _median_per_slice(vol, size, where, workers=2)
        ref = np.stack([ndimage.median_filter(s, size=size) for s in vol])
        np.testing.assert_array_equal(got[where], ref[where])
        np.testing.assert_array_equal(got[~where], vol[~where])
