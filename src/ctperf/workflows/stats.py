"""`ctperf stats`: a cohort table (e.g. `ctperf aggregate`'s summary.csv, optionally joined with a clinical table)
-> stats.json, PNG plots and one self-contained HTML report.  The statistics live in :mod:`ctperf.analysis.stats`.
"""

from __future__ import annotations

import base64
import html
import json
import re
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from ctperf import DISCLAIMER, __version__
from ctperf.analysis.metrics import to_strict
from ctperf.analysis.stats import CohortStats, analyse_cohort
from ctperf.errors import InputError

METHODS = (
    "Discrimination: receiver operating characteristic (ROC) analysis; area under the curve (AUC) with a 95 % "
    "confidence interval from DeLong's variance (DeLong 1988, fast algorithm of Sun & Xu 2014); pairs of AUCs "
    "compared with DeLong's paired test. Each predictor is oriented so that its AUC is >= 0.5 (direction 'lower': "
    "lower values go with the positive outcome). Cut-off: Youden index (sensitivity + specificity - 1). "
    "Cross-validated AUC: stratified {folds}-fold cross-validation (seed {seed}) of a logistic model, AUC per test "
    "fold, mean +- SD over folds. Odds ratios: maximum-likelihood logistic regression (statsmodels), Wald 95 % CI, "
    "per unit and per SD of the predictor; the multivariable model uses complete cases. Calibration: out-of-fold "
    "predicted probabilities against observed frequencies (quantile bins), Brier score and calibration slope."
)


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV (any delimiter pandas can sniff) or Excel table."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"table not found: {p}")
    try:
        if p.suffix.lower() in (".xlsx", ".xlsm", ".xls"):
            return pd.read_excel(p)
        return pd.read_csv(p, sep=None, engine="python")
    except ImportError as exc:
        raise InputError(f"cannot read {p.name}: {exc} (pip install 'ctperf[cohort]')") from None
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {p.name}: {' '.join(str(exc).split())}") from None


def join_clinical(data: pd.DataFrame, clinical: pd.DataFrame, on: str, notes: list[str]) -> pd.DataFrame:
    """Inner join on ``on`` (compared as text); unmatched rows are counted in ``notes``; duplicate ids refused."""
    for name, t in (("data", data), ("clinical", clinical)):
        if on not in t.columns:
            raise InputError(f"--on {on}: no such column in the {name} table")
        dup = t[on].astype(str)[t[on].astype(str).duplicated()]
        if len(dup):
            raise InputError(f"--on {on}: the {name} table repeats the id {dup.iloc[0]!r}")
    left, right = data.assign(**{on: data[on].astype(str)}), clinical.assign(**{on: clinical[on].astype(str)})
    merged = left.merge(right, on=on, how="inner", suffixes=("", "_clinical"))
    for name, t in (("data", left), ("clinical", right)):
        lost = len(t) - len(merged)
        if lost:
            notes.append(f"join on '{on}': {lost} row(s) of the {name} table have no partner and are left out")
    if merged.empty:
        raise InputError(f"join on '{on}': no id is in both tables")
    return merged


def run_stats(data: str | Path, outcome: str, predictors: list[str], out_dir: str | Path, *,
              positive: str | None = None, clinical: str | Path | None = None, on: str | None = None,
              folds: int = 5, seed: int = 0) -> tuple[CohortStats, dict]:
    """Analyse, then write stats.json, the PNG plots and report.html into ``out_dir`` (atomically)."""
    from ctperf.io.outdir import atomic_output_dir

    table = read_table(data)
    notes: list[str] = []
    if clinical is not None:
        if not on:
            raise InputError("--clinical needs --on COLUMN (the id shared by both tables)")
        table = join_clinical(table, read_table(clinical), on, notes)
    res = analyse_cohort(table, outcome, predictors, positive=positive, folds=folds, seed=seed)
    res.notes[:0] = notes
    doc = to_strict({"software": "ctperf", "software_version": __version__, "disclaimer": DISCLAIMER,
                     "created_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                     "data": Path(data).name, "clinical": Path(clinical).name if clinical else None,
                     **res.to_dict()})
    with atomic_output_dir(out_dir) as tmp:
        figures = _figures(res, tmp)
        (tmp / "stats.json").write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n", encoding="utf-8")
        (tmp / "report.html").write_text(_html(res, doc, figures), encoding="utf-8")
    return res, doc


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "predictor"


def _figures(res: CohortStats, tmp: Path) -> list[tuple[str, Path]]:
    from ctperf.viz.stats_plots import calibration_figure, roc_figure, roc_overlay_figure

    out = []
    usable = [p for p in res.predictors.values() if p.auc is not None]
    if usable:
        out.append(("ROC curves", roc_overlay_figure(res, tmp / "roc_all.png")))
    for p in usable:
        out.append((f"ROC: {p.name}", roc_figure(p, tmp / f"roc_{_safe(p.name)}.png")))
    cal = [(f"univariable {p.name}", p.cv, _safe(p.name)) for p in usable if p.cv is not None]
    if res.multivariable_cv is not None:
        cal.insert(0, ("multivariable model", res.multivariable_cv, "multivariable"))
    for title, cv, stem in cal:
        out.append((f"Calibration: {title}", calibration_figure(cv.y, cv.probability, cv.brier, cv.calibration_slope,
                                                                 f"Calibration: {title}",
                                                                 tmp / f"calibration_{stem}.png")))
    return out


def _fmt(v, digits=3) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{digits}g}" if abs(v) >= 1000 or (v != 0 and abs(v) < 0.001) else f"{v:.{digits}f}"
    return html.escape(str(v))


def _ci(v) -> str:
    return "n/a" if not v else f"{_fmt(v[0])}–{_fmt(v[1])}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _html(res: CohortStats, doc: dict, figures: list[tuple[str, Path]]) -> str:
    """One self-contained HTML file (figures embedded as PNG data URIs) to attach to a manuscript."""
    preds = doc["predictors"]
    t1 = _table(["predictor", "n (pos.)", "AUC (95 % CI, DeLong)", "CV AUC mean ± SD", "cut-off (Youden)",
                 "sensitivity", "specificity", "note"],
                [[html.escape(k), f"{d['n']} ({d['n_positive']})", f"{_fmt(d['auc'])} ({_ci(d['auc_ci95'])})",
                  "n/a" if d["auc_cv_mean"] is None else f"{d['auc_cv_mean']:.2f} ± {d['auc_cv_sd']:.2f}",
                  html.escape(d["cutoff_rule"] or "n/a"), _fmt(d["sensitivity"]), _fmt(d["specificity"]),
                  html.escape(d.get("reason") or d.get("odds_ratio_reason") or "")] for k, d in preds.items()])
    t2 = _table(["predictor", "OR per unit (95 % CI)", "OR per SD (95 % CI)", "p"],
                [[html.escape(k), f"{_fmt(d['odds_ratio'])} ({_ci(d['odds_ratio_ci95'])})",
                  f"{_fmt(d['odds_ratio_per_sd'])} ({_ci(d['odds_ratio_per_sd_ci95'])})", _fmt(d["p_value"])]
                 for k, d in preds.items()])
    multi = doc.get("multivariable")
    t3 = ""
    if multi:
        t3 = "<h2>Multivariable logistic regression</h2>" + _table(
            ["predictor", "OR per unit (95 % CI)", "OR per SD (95 % CI)", "p"],
            [[html.escape(k), f"{_fmt(o['odds_ratio'])} ({_ci(o['ci95'])})",
              f"{_fmt(o['odds_ratio_per_sd'])} ({_ci(o['per_sd_ci95'])})", _fmt(o["p_value"])]
             for k, o in multi["odds_ratios"].items()])
        cv = ("n/a" if multi["auc_cv_mean"] is None else f"{multi['auc_cv_mean']:.2f} ± {multi['auc_cv_sd']:.2f}")
        t3 += (f"<p>n = {multi['n']} complete cases; apparent AUC {_fmt(multi['auc_apparent'])}; cross-validated AUC "
               f"{cv}; Brier score (out-of-fold) {_fmt(multi['brier_cv'])}; calibration slope "
               f"{_fmt(multi['calibration_slope_cv'], 2)}.</p>")
    t4 = ""
    if doc["comparisons"]:
        t4 = "<h2>Comparison of AUCs (DeLong paired test)</h2>" + _table(
            ["A", "B", "n", "AUC A", "AUC B", "difference (95 % CI)", "p"],
            [[html.escape(c["a"]), html.escape(c["b"]), str(c["n"]), _fmt(c["auc_a"]), _fmt(c["auc_b"]),
              f"{_fmt(c['auc_diff'])} ({_ci(c['auc_diff_ci95'])})", _fmt(c["p_value"])] for c in doc["comparisons"]])
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in doc["notes"]) or "<li>none</li>"
    imgs = "".join(f"<figure><img alt='{html.escape(t)}' src='data:image/png;base64,"
                   f"{base64.b64encode(p.read_bytes()).decode()}'><figcaption>{html.escape(t)}</figcaption></figure>"
                   for t, p in figures)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>ctperf outcome statistics: {html.escape(res.outcome_rule)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}}table{{border-collapse:collapse;
margin:1em 0}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left;font-size:14px}}th{{background:#f3f4f6}}
figure{{display:inline-block;margin:0.5em}}img{{max-width:480px}}.disc{{color:#a00}}</style></head><body>
<h1>Outcome statistics</h1>
<p class="disc">{html.escape(DISCLAIMER)}</p>
<p>Outcome: <b>{html.escape(res.outcome_rule)}</b> (positive); {res.n_total} rows, {res.n_outcome_missing} without an
outcome. ctperf {html.escape(__version__)}, {html.escape(doc['created_utc'])}; data: {html.escape(str(doc['data']))}
{'; clinical: ' + html.escape(str(doc['clinical'])) if doc['clinical'] else ''}.</p>
<h2>Discrimination</h2>{t1}
<h2>Univariable logistic regression</h2>{t2}
{t3}{t4}
<h2>Notes on the data</h2><ul>{notes}</ul>
<h2>Methods</h2><p>{html.escape(METHODS.format(folds=res.folds, seed=res.seed))}</p>
<h2>Figures</h2>{imgs}
</body></html>
"""
