"""Cohort outcome statistics (pure on DataFrames and arrays): ROC/AUC with DeLong CIs, Youden cut-offs,
cross-validated AUC, logistic regression with odds ratios, calibration and Brier score."""

from ctperf.analysis.stats.cohort import CohortStats, PredictorStats, analyse_cohort, dichotomise
from ctperf.analysis.stats.logistic import cross_validate, fit_logistic
from ctperf.analysis.stats.roc import auc_ci, delong_auc_cov, delong_test, youden_cutoff

__all__ = ["CohortStats", "PredictorStats", "analyse_cohort", "auc_ci", "cross_validate", "delong_auc_cov",
           "delong_test", "dichotomise", "fit_logistic", "youden_cutoff"]
