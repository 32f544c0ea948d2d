"""ROC analysis: AUC with DeLong variance (fast algorithm of Sun & Xu), DeLong comparison, Youden cut-off.

All functions are pure on arrays.  ``y`` is a 1-D array of 0/1 outcomes (1 = positive), scores are "higher means
more likely positive" (orient a predictor first with :func:`orient`).

References
----------
DeLong ER, DeLong DM, Clarke-Pearson DL. Comparing the areas under two or more correlated receiver operating
characteristic curves: a nonparametric approach. Biometrics 1988;44:837-845. doi:10.2307/2531595
Sun X, Xu W. Fast implementation of DeLong's algorithm for comparing the areas under correlated receiver operating
characteristic curves. IEEE Signal Process Lett 2014;21:1389-1393. doi:10.1109/LSP.2014.2337313
Youden WJ. Index for rating diagnostic tests. Cancer 1950;3:32-35.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

#: Two-sided 95 % normal quantile.
Z95 = float(stats.norm.ppf(0.975))


def _check(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y)
    scores = np.atleast_2d(np.asarray(scores, dtype=float))
    if y.ndim != 1 or scores.shape[1] != y.size:
        raise ValueError(f"scores of shape {scores.shape} do not match {y.size} outcomes")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("outcomes must be 0 or 1")
    if y.min() == y.max():
        raise ValueError("both outcome classes are needed for a ROC analysis")
    if not np.isfinite(scores).all():
        raise ValueError("scores must be finite (drop missing values first)")
    return y.astype(bool), scores


def delong_auc_cov(y, scores) -> tuple[np.ndarray, np.ndarray]:
    """AUCs of one or more scores and their DeLong covariance matrix (fast midrank algorithm).

    Parameters
    ----------
    y : array_like, shape (n,)
        Outcomes, 0 or 1.
    scores : array_like, shape (n,) or (k, n)
        One row per score (higher = more likely positive), measured on the same n subjects.

    Returns
    -------
    auc : ndarray, shape (k,)
        Mann-Whitney AUC of every score (ties count one half).
    cov : ndarray, shape (k, k)
        DeLong covariance of the AUC estimates.

    Notes
    -----
    With m positives and n negatives, the structural components are V10_i = (Tz_i - Tx_i) / n for positive i and
    V01_j = 1 - (Tz_j - Ty_j) / m for negative j, where Tz, Tx and Ty are midranks in the pooled sample, among
    the positives and among the negatives (Sun & Xu 2014); cov = S10 / m + S01 / n with S the sample covariances.
    O((m + n) log(m + n)) per score instead of the O(m n) pairwise kernel.
    """
    y, s = _check(y, scores)
    pos, neg = s[:, y], s[:, ~y]
    m, n = pos.shape[1], neg.shape[1]
    tx = stats.rankdata(pos, axis=1)
    ty = stats.rankdata(neg, axis=1)
    tz = stats.rankdata(np.concatenate([pos, neg], axis=1), axis=1)
    auc = (tz[:, :m].sum(axis=1) / m - (m + 1) / 2.0) / n
    v10 = (tz[:, :m] - tx) / n
    v01 = 1.0 - (tz[:, m:] - ty) / m
    cov = np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / n
    return auc, cov


@dataclass(frozen=True)
class AucCI:
    """AUC with its DeLong standard error and 95 % confidence interval (normal, clipped to [0, 1])."""

    auc: float
    se: float
    ci95: tuple[float, float]


def auc_ci(y, score) -> AucCI:
    """AUC of one score with its DeLong 95 % CI (as pROC's ``ci.auc(method="delong")``)."""
    auc, cov = delong_auc_cov(y, score)
    se = float(np.sqrt(max(cov[0, 0], 0.0)))
    a = float(auc[0])
    return AucCI(a, se, (max(0.0, a - Z95 * se), min(1.0, a + Z95 * se)))


@dataclass(frozen=True)
class DelongTest:
    """Paired DeLong test of AUC_a - AUC_b on the same subjects (two-sided)."""

    auc_a: float
    auc_b: float
    diff: float
    diff_ci95: tuple[float, float]
    z: float | None
    p_value: float | None


def delong_test(y, score_a, score_b) -> DelongTest:
    """Compare two correlated AUCs (DeLong 1988): z = (A - B) / sqrt(var A + var B - 2 cov AB).

    ``z`` and ``p_value`` are None when the difference has no variance (identical rankings).
    """
    auc, cov = delong_auc_cov(y, np.vstack([score_a, score_b]))
    diff = float(auc[0] - auc[1])
    var = float(cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1])
    if var <= 1e-15:
        return DelongTest(float(auc[0]), float(auc[1]), diff, (diff, diff), None, None)
    se = np.sqrt(var)
    z = diff / se
    return DelongTest(float(auc[0]), float(auc[1]), diff, (float(diff - Z95 * se), float(diff + Z95 * se)), float(z),
                      float(2.0 * stats.norm.sf(abs(z))))


def orient(y, x) -> tuple[np.ndarray, str]:
    """Return the score oriented so that higher means positive, and the direction of ``x``.

    ``"higher"`` when larger values of ``x`` go with the positive outcome (AUC of ``x`` >= 0.5), else ``"lower"``
    and the score is ``-x`` (the reported AUC is then that of ``-x``, >= 0.5).
    """
    x = np.asarray(x, float)
    auc, _ = delong_auc_cov(y, x)
    return (x, "higher") if auc[0] >= 0.5 else (-x, "lower")


@dataclass(frozen=True)
class Cutoff:
    """Youden-optimal cut-off: positive when ``value >= cutoff`` (direction higher) or ``<= cutoff`` (lower)."""

    cutoff: float
    rule: str
    sensitivity: float
    specificity: float
    youden_j: float


def roc_points(y, score) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve (fpr, tpr, thresholds) of a score, every distinct value a threshold (scikit-learn)."""
    from sklearn.metrics import roc_curve

    y, s = _check(y, score)
    return roc_curve(y, s[0], drop_intermediate=False)


def youden_cutoff(y, x, direction: str) -> Cutoff:
    """Cut-off maximising sensitivity + specificity - 1, in the units of ``x``.

    The cut-off is an observed value of ``x``; ties of J go to the first (strictest) threshold.
    """
    if direction not in ("higher", "lower"):
        raise ValueError(f"direction must be 'higher' or 'lower', not {direction!r}")
    sign = 1.0 if direction == "higher" else -1.0
    fpr, tpr, thr = roc_points(y, sign * np.asarray(x, float))
    j = tpr - fpr
    i = int(np.argmax(j[1:]) + 1)  # index 0 is the (inf) threshold that calls nobody positive
    return Cutoff(float(sign * thr[i]), ">=" if sign > 0 else "<=", float(tpr[i]), float(1.0 - fpr[i]),
                  float(j[i]))
