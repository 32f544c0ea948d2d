"""Figures of the cohort statistics (ROC curves, calibration) on stand-alone Agg figures, never pyplot."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ctperf.analysis.stats.cohort import CohortStats, PredictorStats
from ctperf.viz.qa_figures import new_figure, save_figure


def roc_figure(p: PredictorStats, path: Path) -> Path:
    """ROC curve of one predictor with AUC (DeLong 95 % CI), CV AUC and the Youden point."""
    fig = new_figure(4.6, 4.6)
    ax = fig.add_axes((0.15, 0.14, 0.8, 0.76))
    ax.plot([0, 1], [0, 1], color="0.7", lw=0.8, ls="--")
    ax.plot(p.roc_fpr, p.roc_tpr, color="#1f5fa8", lw=1.8, drawstyle="steps-post")
    c = p.cutoff
    ax.plot([1 - c.specificity], [c.sensitivity], "o", color="#c0392b",
            label=f"Youden: {c.rule} {c.cutoff:.3g} (sens {c.sensitivity:.2f}, spec {c.specificity:.2f})")
    _square(ax)
    title = f"{p.name}: AUC {p.auc.auc:.3f} ({p.auc.ci95[0]:.3f}-{p.auc.ci95[1]:.3f})"
    if p.cv is not None:
        title += f"\nCV AUC {p.cv.auc_mean:.2f} ± {p.cv.auc_sd:.2f} ({p.cv.folds}-fold)"
    ax.set_title(title, fontsize=9)
    ax.legend(loc="lower right", fontsize=7, frameon=False)
    return save_figure(fig, path)


def roc_overlay_figure(res: CohortStats, path: Path) -> Path:
    """All analysable predictors' ROC curves on one plot."""
    fig = new_figure(5.2, 5.0)
    ax = fig.add_axes((0.13, 0.12, 0.82, 0.8))
    ax.plot([0, 1], [0, 1], color="0.7", lw=0.8, ls="--")
    for p in res.predictors.values():
        if p.auc is not None:
            label = f"{p.name} ({'' if p.direction == 'higher' else 'lower = positive, '}AUC {p.auc.auc:.3f})"
            ax.plot(p.roc_fpr, p.roc_tpr, lw=1.5, drawstyle="steps-post", label=label)
    _square(ax)
    ax.set_title(f"ROC: {res.outcome_rule}", fontsize=10)
    ax.legend(loc="lower right", fontsize=7, frameon=False)
    return save_figure(fig, path)


def calibration_figure(y: np.ndarray, prob: np.ndarray, brier: float, slope: float | None, title: str,
                       path: Path, n_bins: int = 5) -> Path:
    """Calibration plot (observed fraction positive against mean predicted probability, quantile bins)."""
    from sklearn.calibration import calibration_curve

    bins = int(max(2, min(n_bins, len(y) // 10)))
    obs, pred = calibration_curve(y, prob, n_bins=bins, strategy="quantile")
    fig = new_figure(4.6, 4.6)
    ax = fig.add_axes((0.15, 0.14, 0.8, 0.74))
    ax.plot([0, 1], [0, 1], color="0.7", lw=0.8, ls="--", label="ideal")
    ax.plot(pred, obs, "o-", color="#1f5fa8", label=f"{bins} quantile bins")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("predicted probability (out-of-fold)")
    ax.set_ylabel("observed fraction positive")
    extra = f", slope {slope:.2f}" if slope is not None else ""
    ax.set_title(f"{title}\nBrier {brier:.3f}{extra}", fontsize=9)
    ax.legend(loc="upper left", fontsize=7, frameon=False)
    return save_figure(fig, path)


def _square(ax) -> None:
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("sensitivity")
