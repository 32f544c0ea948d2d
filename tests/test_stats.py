"""Cohort statistics: AUC against independent computations, DeLong variance and test, a published example,
odds ratios of a known effect, cross-validation, Youden cut-off, dichotomisation and the `ctperf stats` command."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

pytest.importorskip("statsmodels", reason="the cohort extra (statsmodels) is not installed")
pytest.importorskip("sklearn", reason="the cohort extra (scikit-learn) is not installed")

from ctperf.analysis.stats import (analyse_cohort, auc_ci, cross_validate, delong_auc_cov, delong_test,  # noqa: E402
                                   dichotomise, fit_logistic, youden_cutoff)
from ctperf.errors import InputError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
#: Binormal cohort with unit variances and mean separation 1: population AUC = Phi(1 / sqrt 2).
TRUE_AUC = float(stats.norm.cdf(1 / np.sqrt(2)))


def _binormal(n_pos=120, n_neg=180, seed=0, decimals=None):
    rng = np.random.default_rng(seed)
    x = np.r_[rng.normal(1.0, 1.0, n_pos), rng.normal(0.0, 1.0, n_neg)]
    if decimals is not None:
        x = np.round(x, decimals)  # ties
    return np.r_[np.ones(n_pos, int), np.zeros(n_neg, int)], x


def _explicit_delong(y, scores):
    """DeLong 1988 written out with the pairwise kernel psi (O(m n)), independent of the midrank algorithm."""
    scores = np.atleast_2d(scores)
    pos, neg = scores[:, y == 1], scores[:, y == 0]
    psi = (pos[:, :, None] > neg[:, None, :]) + 0.5 * (pos[:, :, None] == neg[:, None, :])
    v10, v01 = psi.mean(axis=2), psi.mean(axis=1)
    m, n = pos.shape[1], neg.shape[1]
    return psi.mean(axis=(1, 2)), np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / n


def test_auc_equals_mann_whitney_u_to_3_decimals():
    y, x = _binormal(decimals=1)
    a = auc_ci(y, x)
    u = stats.mannwhitneyu(x[y == 1], x[y == 0]).statistic
    independent = u / (np.sum(y == 1) * np.sum(y == 0))
    assert round(a.auc, 3) == round(independent, 3)
    assert a.auc == pytest.approx(independent, abs=1e-12)
    assert a.ci95[0] < TRUE_AUC < a.ci95[1]


def test_delong_covariance_equals_explicit_pairwise_computation():
    rng = np.random.default_rng(1)
    y, x = _binormal(60, 80, seed=2, decimals=1)
    x2 = np.round(x + rng.normal(0, 1, x.size), 1)
    auc, cov = delong_auc_cov(y, np.vstack([x, x2]))
    auc_e, cov_e = _explicit_delong(y, np.vstack([x, x2]))
    np.testing.assert_allclose(auc, auc_e, atol=1e-12)
    np.testing.assert_allclose(cov, cov_e, atol=1e-12)
    t = delong_test(y, x, x2)
    var = cov_e[0, 0] + cov_e[1, 1] - 2 * cov_e[0, 1]
    assert t.z == pytest.approx((auc_e[0] - auc_e[1]) / np.sqrt(var), rel=1e-9)
    assert t.p_value == pytest.approx(2 * stats.norm.sf(abs(t.z)), rel=1e-9)
    same = delong_test(y, x, 2 * x + 1)  # identical ranking: no variance, no p-value
    assert same.diff == 0 and same.p_value is None


def test_delong_se_agrees_with_bootstrap():
    y, x = _binormal(seed=3)
    a = auc_ci(y, x)
    rng = np.random.default_rng(4)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    boots = []
    for _ in range(1000):  # stratified bootstrap, AUC by the Mann-Whitney identity
        i, j = rng.choice(pos, pos.size), rng.choice(neg, neg.size)
        boots.append(stats.mannwhitneyu(x[i], x[j]).statistic / (pos.size * neg.size))
    assert a.se == pytest.approx(np.std(boots, ddof=1), rel=0.12)


def test_published_example_hanley_mcneil_1982():
    """CT ratings of 109 patients (Hanley & McNeil, Radiology 1982;143:29-36, Table 1): AUC 0.893, SE 0.032."""
    neg = np.repeat([1, 2, 3, 4, 5], [33, 6, 6, 11, 2])
    pos = np.repeat([1, 2, 3, 4, 5], [3, 2, 2, 11, 33])
    y, x = np.r_[np.zeros(neg.size, int), np.ones(pos.size, int)], np.r_[neg, pos].astype(float)
    a = auc_ci(y, x)
    assert round(a.auc, 3) == 0.893
    assert a.se == pytest.approx(0.032, abs=0.002)  # DeLong vs the paper's exponential approximation


def test_youden_cutoff_both_directions():
    y = np.array([0, 0, 0, 1, 1, 1])
    c = youden_cutoff(y, np.array([1.0, 2, 3, 4, 5, 6]), "higher")
    assert (c.cutoff, c.rule, c.sensitivity, c.specificity) == (4.0, ">=", 1.0, 1.0)
    c = youden_cutoff(y, np.array([6.0, 5, 4, 3, 2, 1]), "lower")
    assert (c.cutoff, c.rule, c.sensitivity, c.specificity) == (3.0, "<=", 1.0, 1.0)
    y2, x2 = _binormal(seed=5)
    c = youden_cutoff(y2, x2, "higher")
    sens = np.mean(x2[y2 == 1] >= c.cutoff)
    spec = np.mean(x2[y2 == 0] < c.cutoff)
    assert (c.sensitivity, c.specificity) == pytest.approx((sens, spec))


def test_odds_ratios_of_a_known_effect():
    rng = np.random.default_rng(6)
    n = 3000
    x1, x2 = rng.normal(0, 1, n), rng.normal(0, 2, n)
    p = 1 / (1 + np.exp(-(-0.5 + 0.8 * x1 - 0.25 * x2)))
    y = (rng.random(n) < p).astype(int)
    uni = fit_logistic(y, x1[:, None], ["x1"]).odds_ratios["x1"]
    multi = fit_logistic(y, np.c_[x1, x2], ["x1", "x2"]).odds_ratios
    for o, true in ((multi["x1"], np.exp(0.8)), (multi["x2"], np.exp(-0.25))):
        assert o.ci95[0] < true < o.ci95[1]
        assert o.odds_ratio == pytest.approx(true, rel=0.1)
    assert multi["x2"].per_sd == pytest.approx(multi["x2"].odds_ratio ** multi["x2"].sd)
    assert uni.odds_ratio > 1 and uni.p_value < 1e-10


def test_separation_is_reported_not_raised():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    fit = fit_logistic(y, np.arange(8.0)[:, None], ["x"])
    assert fit.problem and "separation" in fit.problem and fit.odds_ratios["x"].odds_ratio is None


def test_cross_validated_auc_mean_and_sd():
    y, x = _binormal(seed=7)
    cv = cross_validate(y, x[:, None], folds=5, seed=0)
    assert cv.auc_per_fold.shape == (5,) and cv.auc_sd > 0
    assert cv.auc_mean == pytest.approx(auc_ci(y, x).auc, abs=0.04)
    assert 0 < cv.brier < 0.25
    with pytest.raises(ValueError, match="smaller --cv"):
        cross_validate(np.r_[np.ones(3, int), np.zeros(27, int)], np.arange(30.0)[:, None], folds=5, seed=0)


def test_dichotomise_rules():
    s = pd.Series([0, 1, 2, 3, 4, None], name="grade")
    y, rule = dichotomise(s, ">=3")
    assert y.tolist()[:5] == [0, 0, 0, 1, 1] and np.isnan(y.iloc[5]) and rule == "grade >= 3"
    y, _ = dichotomise(pd.Series(["good", "poor", "excellent"], name="c"), "good, excellent")
    assert y.tolist() == [1, 0, 1]
    y, _ = dichotomise(pd.Series([0, 1, 1], name="b"), None)
    assert y.tolist() == [0, 1, 1]
    with pytest.raises(InputError, match="--positive"):
        dichotomise(s, None)
    with pytest.raises(InputError, match="not a number"):
        dichotomise(s, ">=high")


def _cohort(n=123, seed=8):
    rng = np.random.default_rng(seed)
    grade = rng.integers(0, 5, n).astype(float)
    good = grade >= 3
    data = pd.DataFrame({"study": [f"site/p{i:03d}" for i in range(n)],
                         "Corrected_CBV_Index": rng.normal(0.7 + 0.25 * good, 0.15),
                         "HIR": rng.normal(0.5 - 0.2 * good, 0.2), "flat": 1.0})
    data.loc[[3, 7], "HIR"] = np.nan
    data["HIR"] = data["HIR"].astype(object)
    data.loc[9, "HIR"] = "n/a"
    clinical = pd.DataFrame({"study": data["study"], "asitn_grade": grade})
    clinical.loc[5, "asitn_grade"] = np.nan
    return data, clinical


def test_analyse_cohort_messages_and_keys():
    data, clinical = _cohort()
    res = analyse_cohort(data.merge(clinical, on="study"), "asitn_grade", ["Corrected_CBV_Index", "HIR", "flat"],
                         positive=">=3", folds=5)
    d = res.to_dict()
    cbv, hir, flat = (d["predictors"][k] for k in ("Corrected_CBV_Index", "HIR", "flat"))
    for key in ("auc", "auc_ci95", "auc_cv_mean", "auc_cv_sd", "cutoff", "sensitivity", "specificity"):
        assert cbv[key] is not None and hir[key] is not None and flat[key] is None
    assert cbv["direction"] == "higher" and hir["direction"] == "lower" and hir["n_missing"] == 3
    assert "constant" in flat["reason"]
    text = " ".join(d["notes"])
    assert "not numbers" in text and "no value" in text and "constant" in text
    assert d["multivariable"]["predictors"] == ["Corrected_CBV_Index", "HIR"]
    assert d["comparisons"][0]["a"] == "Corrected_CBV_Index" and d["comparisons"][0]["p_value"] is not None


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "ctperf.cli", *args], capture_output=True, text=True,
                          env={**__import__("os").environ, "PYTHONPATH": str(ROOT / "src")})


def test_stats_command_writes_json_plots_and_report(tmp_path):
    data, clinical = _cohort()
    data.to_csv(tmp_path / "summary.csv", index=False)
    clinical.to_csv(tmp_path / "clinical.csv", index=False)
    out = tmp_path / "stats"
    r = _cli("stats", "--data", str(tmp_path / "summary.csv"), "--clinical", str(tmp_path / "clinical.csv"),
             "--on", "study", "--outcome", "asitn_grade", "--positive", ">=3",
             "--predictors", "Corrected_CBV_Index,HIR,flat", "--cv", "5", "--out_dir", str(out))
    assert r.returncode == 0, r.stderr
    assert "constant" in r.stderr and "Traceback" not in r.stderr
    doc = json.loads((out / "stats.json").read_text())
    assert doc["positive"] == "asitn_grade >= 3" and doc["n_outcome_missing"] == 1
    assert 0.5 < doc["predictors"]["Corrected_CBV_Index"]["auc"] <= 1
    assert doc["predictors"]["flat"]["auc"] is None and "NaN" not in (out / "stats.json").read_text()
    for f in ("roc_all.png", "roc_Corrected_CBV_Index.png", "roc_HIR.png", "calibration_multivariable.png",
              "report.html"):
        assert (out / f).stat().st_size > 1000, f
    html = (out / "report.html").read_text()
    assert "DeLong" in html and "data:image/png;base64," in html and "Research use only" in html

    bad = _cli("stats", "--data", str(tmp_path / "summary.csv"), "--outcome", "nope", "--predictors", "HIR",
               "--out_dir", str(tmp_path / "bad"))
    assert bad.returncode == 2 and "nope" in bad.stderr and "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and not (tmp_path / "bad").exists()
