"""Logistic regression with odds ratios (statsmodels maximum likelihood) and cross-validated discrimination and
calibration (scikit-learn).  Pure on arrays.

References
----------
Steyerberg EW. Clinical Prediction Models, 2nd ed. Springer 2019 (calibration slope, Brier score).
Brier GW. Verification of forecasts expressed in terms of probability. Mon Weather Rev 1950;78:1-3.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: An odds ratio per SD above exp(this) is taken as (quasi-)complete separation: not estimable.
SEPARATION_LOG_OR_PER_SD = 12.0


@dataclass(frozen=True)
class OddsRatio:
    """Odds ratio of one predictor: per unit of the predictor and per standard deviation (SD) of it."""

    odds_ratio: float | None
    ci95: tuple[float, float] | None
    per_sd: float | None
    per_sd_ci95: tuple[float, float] | None
    p_value: float | None
    sd: float


@dataclass(frozen=True)
class LogisticFit:
    """Maximum-likelihood logistic regression of y on the columns of X."""

    names: list[str]
    odds_ratios: dict[str, OddsRatio]
    n: int
    #: In-sample predicted probabilities, shape (n,).
    probability: np.ndarray
    #: Why no odds ratios could be estimated (separation, no convergence), else None.
    problem: str | None = None
    notes: list[str] = field(default_factory=list)


def fit_logistic(y, X, names: list[str]) -> LogisticFit:
    """Fit ``logit P(y=1) = b0 + X b`` and return the odds ratios with 95 % Wald CIs.

    Parameters
    ----------
    y : array_like, shape (n,)
        Outcomes 0/1.
    X : array_like, shape (n, p)
        Predictors without the intercept column (finite, none constant).
    names : list of str
        Predictor names, length p.
    """
    import statsmodels.api as sm
    from statsmodels.tools.sm_exceptions import PerfectSeparationError

    y = np.asarray(y, float)
    X = np.asarray(X, float).reshape(len(y), -1)
    sd = X.std(axis=0, ddof=1)
    try:
        res = sm.Logit(y, sm.add_constant(X, has_constant="add")).fit(disp=0, maxiter=200)
    except (PerfectSeparationError, np.linalg.LinAlgError) as exc:
        return _not_estimable(names, sd, len(y), y, f"not estimable ({type(exc).__name__})")
    params, ci, pvals = np.asarray(res.params), np.asarray(res.conf_int()), np.asarray(res.pvalues)
    converged = bool(res.mle_retvals.get("converged", True))
    if not converged or np.any(np.abs(params[1:] * sd) > SEPARATION_LOG_OR_PER_SD) or not np.isfinite(ci).all():
        return _not_estimable(names, sd, len(y), np.asarray(res.predict(), float),
                              "perfect or quasi-complete separation: the outcome is predicted without error, "
                              "odds ratios are not estimable")
    ors = {}
    for i, name in enumerate(names, start=1):
        ors[name] = OddsRatio(float(np.exp(params[i])), (float(np.exp(ci[i, 0])), float(np.exp(ci[i, 1]))),
                              float(np.exp(params[i] * sd[i - 1])),
                              (float(np.exp(ci[i, 0] * sd[i - 1])), float(np.exp(ci[i, 1] * sd[i - 1]))),
                              float(pvals[i]), float(sd[i - 1]))
    return LogisticFit(list(names), ors, len(y), np.asarray(res.predict(), float))


def _not_estimable(names, sd, n, prob, reason) -> LogisticFit:
    ors = {name: OddsRatio(None, None, None, None, None, float(s)) for name, s in zip(names, sd)}
    return LogisticFit(list(names), ors, n, np.asarray(prob, float), problem=reason)


@dataclass(frozen=True)
class CrossValidated:
    """K-fold cross-validated discrimination and calibration of a logistic model."""

    folds: int
    auc_per_fold: np.ndarray
    auc_mean: float
    auc_sd: float
    #: Out-of-fold predicted probabilities, shape (n,): every subject predicted by a model that did not see it.
    probability: np.ndarray
    brier: float
    calibration_slope: float | None
    calibration_intercept: float | None
    #: The outcomes the probabilities belong to, shape (n,).
    y: np.ndarray


def cross_validate(y, X, *, folds: int, seed: int) -> CrossValidated:
    """Stratified K-fold CV of an (unpenalised) logistic model on standardised predictors.

    The AUC is computed within each test fold (mean +- SD over folds, SD with ddof=1, the "0.83 +- 0.07" form);
    Brier score and calibration slope/intercept use the pooled out-of-fold probabilities (the slope is the
    coefficient of a logistic recalibration ``logit P(y) = a + b logit(p_oof)``; 1 is ideal).

    Raises
    ------
    ValueError
        A class has fewer members than ``folds``.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import brier_score_loss, roc_auc_score
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y = np.asarray(y, int)
    X = np.asarray(X, float).reshape(len(y), -1)
    smallest = int(min(np.sum(y == 1), np.sum(y == 0)))
    if folds < 2 or smallest < folds:
        raise ValueError(f"{folds}-fold cross-validation needs at least {folds} subjects in each outcome class "
                         f"(the smaller class has {smallest}); use a smaller --cv")
    prob = np.empty(len(y))
    aucs = []
    for train, test in StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(X, y):
        model = make_pipeline(StandardScaler(), LogisticRegression(C=np.inf, max_iter=1000))
        model.fit(X[train], y[train])
        prob[test] = model.predict_proba(X[test])[:, 1]
        aucs.append(roc_auc_score(y[test], prob[test]))
    aucs = np.asarray(aucs)
    slope, intercept = _recalibration(y, prob)
    return CrossValidated(folds, aucs, float(aucs.mean()), float(aucs.std(ddof=1)), prob,
                          float(brier_score_loss(y, prob)), slope, intercept, y)


def _recalibration(y, prob) -> tuple[float | None, float | None]:
    import statsmodels.api as sm

    p = np.clip(prob, 1e-6, 1 - 1e-6)
    lp = np.log(p / (1 - p))
    try:
        res = sm.Logit(np.asarray(y, float), sm.add_constant(lp, has_constant="add")).fit(disp=0, maxiter=200)
    except Exception:  # noqa: BLE001 - separation or singular fit: no recalibration line
        return None, None
    if not bool(res.mle_retvals.get("converged", True)):
        return None, None
    return float(res.params[1]), float(res.params[0])
