"""Outcome statistics of a cohort table: per predictor ROC/AUC (DeLong CI), Youden cut-off, cross-validated AUC,
univariable odds ratios; a multivariable logistic model; DeLong comparisons of every pair of predictors.

Pure on a :class:`pandas.DataFrame` (no files, no plots).  Problems in the data (missing values, text in a numeric
column, a constant predictor, too few subjects) never raise for one predictor: that predictor gets a ``reason``
and the result a note, and the other predictors are analysed.  Only an unusable outcome raises.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ctperf.analysis.stats.logistic import CrossValidated, LogisticFit, cross_validate, fit_logistic
from ctperf.analysis.stats.roc import AucCI, Cutoff, auc_ci, delong_test, roc_points, youden_cutoff
from ctperf.errors import InputError

_RULE = re.compile(r"^\s*(>=|<=|==|!=|>|<|=)\s*(.+?)\s*$")


def dichotomise(values: pd.Series, positive: str | None) -> tuple[pd.Series, str]:
    """Turn an outcome column into 1 (positive), 0 (negative) or NaN (missing).

    Parameters
    ----------
    values : Series
        The outcome column (numbers, e.g. an ASITN/SIR grade 0-4, or labels).
    positive : str or None
        ``">=3"`` (also ``>``, ``<=``, ``<``, ``==``, ``!=``) compares numbers; ``"good,excellent"`` lists the
        positive labels.  None: the column must already be binary (0/1 or true/false).

    Returns
    -------
    y : Series of float
        1.0, 0.0 or NaN.
    rule : str
        Human-readable definition of "positive", e.g. ``"grade >= 3"``.
    """
    name = str(values.name)
    present = values.notna()
    if positive is None:
        uniq = set(pd.unique(values[present]))
        if uniq <= {0, 1} or uniq <= {True, False}:
            return values.astype(float).where(present), f"{name} = 1"
        shown = ", ".join(map(str, sorted(uniq, key=str)[:8]))
        raise InputError(f"outcome '{name}' has the values {shown}; say which count as positive with --positive, "
                         "e.g. --positive '>=3'")
    m = _RULE.match(positive)
    if m:
        op, ref = m.group(1), m.group(2)
        num = pd.to_numeric(values, errors="coerce")
        try:
            refv = float(ref)
        except ValueError:
            raise InputError(f"--positive '{positive}': '{ref}' is not a number") from None
        bad = present & num.isna()
        if bad.any():
            raise InputError(f"outcome '{name}' holds values that are not numbers ({values[bad].iloc[0]!r}); "
                             f"--positive '{positive}' compares numbers")
        ops = {">=": np.greater_equal, "<=": np.less_equal, ">": np.greater, "<": np.less, "==": np.equal,
               "=": np.equal, "!=": np.not_equal}
        y = ops[op](num, refv).astype(float).where(present)
        return y, f"{name} {'==' if op == '=' else op} {ref}"
    labels = [t.strip() for t in positive.split(",") if t.strip()]
    as_text = values.astype(str).str.strip()
    y = as_text.isin(labels).astype(float).where(present)
    return y, f"{name} in {{{', '.join(labels)}}}"


@dataclass
class PredictorStats:
    """Everything computed for one predictor (None fields: not computable, see ``reason``)."""

    name: str
    n: int = 0
    n_positive: int = 0
    n_missing: int = 0
    direction: str | None = None
    auc: AucCI | None = None
    cutoff: Cutoff | None = None
    cv: CrossValidated | None = None
    logistic: LogisticFit | None = None
    roc_fpr: np.ndarray | None = None
    roc_tpr: np.ndarray | None = None
    reason: str | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Flat, JSON-ready summary (the stats.json keys)."""
        a, c, cv = self.auc, self.cutoff, self.cv
        lo = self.logistic.odds_ratios.get(self.name) if self.logistic else None
        d = {
            "n": self.n, "n_positive": self.n_positive, "n_missing": self.n_missing, "direction": self.direction,
            "auc": a.auc if a else None, "auc_ci95": list(a.ci95) if a else None, "auc_se": a.se if a else None,
            "auc_cv_mean": cv.auc_mean if cv else None, "auc_cv_sd": cv.auc_sd if cv else None,
            "cv_folds": cv.folds if cv else None,
            "cutoff": c.cutoff if c else None, "cutoff_rule": f"positive if value {c.rule} {c.cutoff:g}" if c else None,
            "sensitivity": c.sensitivity if c else None, "specificity": c.specificity if c else None,
            "youden_j": c.youden_j if c else None,
            "odds_ratio": lo.odds_ratio if lo else None, "odds_ratio_ci95": list(lo.ci95) if lo and lo.ci95 else None,
            "odds_ratio_per_sd": lo.per_sd if lo else None,
            "odds_ratio_per_sd_ci95": list(lo.per_sd_ci95) if lo and lo.per_sd_ci95 else None,
            "p_value": lo.p_value if lo else None,
            "brier_cv": cv.brier if cv else None, "calibration_slope_cv": cv.calibration_slope if cv else None,
            "roc": {"fpr": self.roc_fpr.tolist(), "tpr": self.roc_tpr.tolist()} if self.roc_fpr is not None else None,
        }
        if self.reason:
            d["reason"] = self.reason
        if self.logistic and self.logistic.problem:
            d["odds_ratio_reason"] = self.logistic.problem
        return d


@dataclass
class CohortStats:
    outcome: str
    outcome_rule: str
    n_total: int
    n_outcome_missing: int
    folds: int
    seed: int
    predictors: dict[str, PredictorStats]
    #: Multivariable logistic model on complete cases of the usable predictors (None with fewer than 2).
    multivariable: LogisticFit | None = None
    multivariable_cv: CrossValidated | None = None
    multivariable_y: np.ndarray | None = None
    comparisons: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        multi = None
        if self.multivariable is not None:
            mv, cv = self.multivariable, self.multivariable_cv
            multi = {"predictors": mv.names, "n": mv.n, "problem": mv.problem,
                     "odds_ratios": {k: {"odds_ratio": o.odds_ratio, "ci95": list(o.ci95) if o.ci95 else None,
                                         "odds_ratio_per_sd": o.per_sd,
                                         "per_sd_ci95": list(o.per_sd_ci95) if o.per_sd_ci95 else None,
                                         "p_value": o.p_value} for k, o in mv.odds_ratios.items()},
                     "auc_apparent": auc_ci(self.multivariable_y, mv.probability).auc if mv.problem is None else None,
                     "auc_cv_mean": cv.auc_mean if cv else None, "auc_cv_sd": cv.auc_sd if cv else None,
                     "brier_cv": cv.brier if cv else None,
                     "calibration_slope_cv": cv.calibration_slope if cv else None,
                     "calibration_intercept_cv": cv.calibration_intercept if cv else None}
        return {"outcome": self.outcome, "positive": self.outcome_rule, "n_total": self.n_total,
                "n_outcome_missing": self.n_outcome_missing, "cv_folds": self.folds, "cv_seed": self.seed,
                "predictors": {k: p.to_dict() for k, p in self.predictors.items()},
                "multivariable": multi, "comparisons": self.comparisons, "notes": self.notes}


def analyse_cohort(df: pd.DataFrame, outcome: str, predictors: list[str], *, positive: str | None = None,
                   folds: int = 5, seed: int = 0) -> CohortStats:
    """Run the whole outcome analysis on a table with one row per subject.

    Parameters
    ----------
    df : DataFrame
        One row per subject.
    outcome : str
        Outcome column (binary, or ordinal/categorical with ``positive``).
    predictors : list of str
        Numeric predictor columns.
    positive : str, optional
        Dichotomisation rule (see :func:`dichotomise`).
    folds, seed : int
        Stratified K-fold cross-validation (same folds for every predictor).

    Raises
    ------
    InputError
        A named column is missing, or the outcome has fewer than 2 subjects in a class.
    """
    missing = [c for c in [outcome, *predictors] if c not in df.columns]
    if missing:
        raise InputError(f"column(s) not in the table: {', '.join(missing)} (columns: "
                         f"{', '.join(map(str, df.columns[:30]))}{' ...' if len(df.columns) > 30 else ''})")
    if not predictors:
        raise InputError("name at least one predictor (--predictors A,B)")
    y_all, rule = dichotomise(df[outcome], positive)
    notes = []
    n_out_missing = int(y_all.isna().sum())
    if n_out_missing:
        notes.append(f"outcome '{outcome}': {n_out_missing} of {len(df)} rows have no value and are left out")
    y_known = y_all.dropna()
    if y_known.nunique() < 2 or y_known.value_counts().min() < 2:
        raise InputError(f"outcome '{rule}': need at least 2 positive and 2 negative subjects "
                         f"(have {int(y_known.sum())} positive, {int((y_known == 0).sum())} negative)")
    res = CohortStats(outcome, rule, len(df), n_out_missing, folds, seed, {}, notes=notes)
    columns = {}
    for name in predictors:
        p, x = _one_predictor(name, df[name], y_all, folds, seed)
        res.predictors[name] = p
        res.notes.extend(p.notes)
        if p.reason is None:
            columns[name] = x
    _multivariable(res, columns, y_all, folds, seed)
    _comparisons(res, columns, y_all)
    if not columns:
        res.notes.append("no predictor could be analysed")
    return res


def _numeric(name: str, col: pd.Series, notes: list[str]) -> pd.Series:
    num = pd.to_numeric(col, errors="coerce")
    text = col.notna() & num.isna()
    if text.any():
        notes.append(f"predictor '{name}': {int(text.sum())} value(s) are not numbers (e.g. {col[text].iloc[0]!r}) "
                     "and are treated as missing")
    return num.where(np.isfinite(num))


def _one_predictor(name, col, y_all, folds, seed) -> tuple[PredictorStats, pd.Series]:
    p = PredictorStats(name)
    x = _numeric(name, col, p.notes)
    ok = x.notna() & y_all.notna()
    p.n_missing = int((x.isna() & y_all.notna()).sum())
    if p.n_missing:
        p.notes.append(f"predictor '{name}': {p.n_missing} of {int(y_all.notna().sum())} subjects have no value "
                       "and are left out of its analysis")
    xv, yv = x[ok].to_numpy(float), y_all[ok].to_numpy(int)
    p.n, p.n_positive = len(yv), int(yv.sum())
    if p.n_positive < 2 or p.n - p.n_positive < 2:
        p.reason = f"too few subjects with a value ({p.n_positive} positive, {p.n - p.n_positive} negative)"
    elif np.ptp(xv) == 0:
        p.reason = f"constant predictor (every value is {xv[0]:g}): no ROC or odds ratio"
    if p.reason:
        p.notes.append(f"predictor '{name}': {p.reason}")
        return p, x
    a = auc_ci(yv, xv)
    p.direction = "higher" if a.auc >= 0.5 else "lower"
    score = xv if p.direction == "higher" else -xv
    p.auc = auc_ci(yv, score)
    p.roc_fpr, p.roc_tpr, _ = roc_points(yv, score)
    p.cutoff = youden_cutoff(yv, xv, p.direction)
    p.logistic = fit_logistic(yv, xv[:, None], [name])
    if p.logistic.problem:
        p.notes.append(f"predictor '{name}': {p.logistic.problem}")
    try:
        p.cv = cross_validate(yv, xv[:, None], folds=folds, seed=seed)
    except ValueError as exc:
        p.notes.append(f"predictor '{name}': no cross-validation: {exc}")
    return p, x


def _multivariable(res: CohortStats, columns: dict[str, pd.Series], y_all: pd.Series, folds, seed) -> None:
    if len(columns) < 2:
        return
    frame = pd.DataFrame(columns).assign(_y=y_all).dropna()
    names = [c for c in columns if frame[c].nunique() > 1]
    if len(names) < 2:
        res.notes.append("multivariable model skipped: fewer than 2 predictors vary among the complete cases")
        return
    yv = frame["_y"].to_numpy(int)
    if min(yv.sum(), len(yv) - yv.sum()) < 2:
        res.notes.append("multivariable model skipped: too few complete cases in an outcome class")
        return
    X = frame[names].to_numpy(float)
    res.multivariable = fit_logistic(yv, X, names)
    res.multivariable_y = yv
    if len(frame) < len(y_all.dropna()):
        res.notes.append(f"multivariable model: {len(frame)} complete cases of {len(y_all.dropna())}")
    if res.multivariable.problem:
        res.notes.append(f"multivariable model: {res.multivariable.problem}")
    try:
        res.multivariable_cv = cross_validate(yv, X, folds=folds, seed=seed)
    except ValueError as exc:
        res.notes.append(f"multivariable model: no cross-validation: {exc}")


def _comparisons(res: CohortStats, columns: dict[str, pd.Series], y_all: pd.Series) -> None:
    """Paired DeLong test for every pair of analysable predictors, on the subjects having both values."""
    for a, b in itertools.combinations(columns, 2):
        frame = pd.DataFrame({"a": columns[a], "b": columns[b], "y": y_all}).dropna()
        yv = frame["y"].to_numpy(int)
        if min(yv.sum(), len(yv) - yv.sum()) < 2:
            continue
        sa = frame["a"].to_numpy(float) * (1 if res.predictors[a].direction == "higher" else -1)
        sb = frame["b"].to_numpy(float) * (1 if res.predictors[b].direction == "higher" else -1)
        t = delong_test(yv, sa, sb)
        res.comparisons.append({"a": a, "b": b, "n": len(yv), "auc_a": t.auc_a, "auc_b": t.auc_b,
                                "auc_diff": t.diff, "auc_diff_ci95": list(t.diff_ci95), "z": t.z,
                                "p_value": t.p_value})
