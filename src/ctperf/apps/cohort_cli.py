"""`ctperf batch`, `ctperf compare` and `ctperf stats`: the cohort-research commands.

Registered on the main Typer app by :func:`register`; heavy imports (dask, statsmodels, SimpleITK) happen inside
the commands so ``ctperf --help`` stays fast.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Optional

import typer
from rich.console import Console

from ctperf.apps.help_text import EXIT_CODES_BATCH, epilog

err = Console(stderr=True)
out = Console()


def register(app: typer.Typer, fail: Callable[[BaseException], None]) -> None:
    """Add the cohort commands to ``app``; ``fail`` turns an exception into the CLI's one-line error and exit."""

    @app.command("batch", epilog=epilog("batch", EXIT_CODES_BATCH))
    def batch_cmd(
        input_root: Path = typer.Option(..., "--input_root", "--input-root",
                                        help="Cohort folder: every folder below it that holds DICOM files and no "
                                             "study sub-folders is one study (any depth)."),
        out_root: Path = typer.Option(..., "--out_root", "--out-root",
                                      help="Output root: study S writes into OUT_ROOT/S; batch_summary.csv here."),
        workers: Optional[int] = typer.Option(None, "--workers", min=1,
                                              help="Worker processes of the local Dask cluster (default: CPU cores)."),
        threads: Optional[int] = typer.Option(None, "--threads", min=1,
                                              help="CPU threads per study (default: CPU cores // --workers on the "
                                                   "local cluster; with --scheduler: compute.workers of the config, "
                                                   "else every core)."),
        scheduler: Optional[str] = typer.Option(None, "--scheduler",
                                                help="Use a running Dask scheduler, e.g. tcp://HOST:8786 (workers "
                                                     "must see the same paths)."),
        config: Optional[Path] = typer.Option(None, "--config", help="TOML/JSON/YAML file overriding defaults."),
        depth: Optional[int] = typer.Option(None, "--depth", min=0,
                                            help="Studies are the folders exactly this many levels below "
                                                 "INPUT_ROOT (e.g. 1 for patient/series/*.dcm)."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress display."),
    ):
        """Run every study of a cohort folder on Dask (resumable; a failing study does not stop the others).

        Exit code 0 when every study succeeded or was already done, 1 when any failed.
        """
        try:
            from ctperf.apps.batch import run_batch
            from ctperf.config import Config

            if workers is not None and scheduler:
                _input_error("use either --workers (local cluster) or --scheduler, not both")
            cfg = Config.load(config)
            with _progress(quiet) as (on_start, on_result):
                result = run_batch(input_root, out_root, cfg.to_dict(), workers=workers, threads=threads,
                                   scheduler=scheduler, depth=depth, on_start=on_start, on_result=on_result)
        except (Exception, MemoryError) as exc:  # noqa: BLE001
            fail(exc)
            return
        counts = {s: sum(r["status"] == s for r in result.rows) for s in ("ok", "failed", "skipped")}
        for r in result.rows:
            if r["status"] == "failed":
                err.print(f"[red]failed[/red] {r['study']}: {r['error']}", highlight=False, soft_wrap=True)
        out.print(f"{counts['ok']} ok, {counts['failed']} failed, {counts['skipped']} skipped -> "
                  f"{result.summary_csv}", highlight=False)
        raise typer.Exit(1 if counts["failed"] else 0)


    @app.command("compare", epilog=epilog("compare"))
    def compare_cmd(
        baseline: Path = typer.Option(..., "--baseline", help="Baseline study's output folder (or its metrics.json)."),
        followup: Path = typer.Option(..., "--followup", help="Follow-up study's output folder (or metrics.json)."),
        out_dir: Optional[Path] = typer.Option(None, "--out_dir", "--out-dir",
                                               help="Write compare.json, the reperfusion masks and compare.png here "
                                                    "(default: print the JSON only)."),
        force: bool = typer.Option(False, "--force", help="Compare even if the thresholds or definition versions "
                                                          "differ (recorded in the result)."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace a Mode A or Mode B result already in "
                                                                  "--out_dir (refused otherwise: compare would "
                                                                  "delete its maps, metrics and report)."),
    ):
        """Follow-up vs baseline: PRR %, and with maps a rigid registration, the reperfused, persisting and new
        hypoperfusion (masks and volumes) and a figure."""
        try:
            import json

            from ctperf.workflows.compare import compare_studies

            doc = compare_studies(baseline, followup, out_dir, force=force, overwrite=overwrite)
        except (Exception, MemoryError) as exc:  # noqa: BLE001
            fail(exc)
            return
        warn_if_forced(doc)
        typer.echo(json.dumps(doc, indent=2, allow_nan=False))

    @app.command("stats", epilog=epilog("stats"))
    def stats_cmd(
        data: Path = typer.Option(..., "--data", help="Cohort table (CSV or XLSX), e.g. the summary.csv of "
                                                      "`ctperf aggregate`; one row per subject."),
        outcome: str = typer.Option(..., "--outcome", help="Outcome column (binary, or ordinal with --positive)."),
        predictors: str = typer.Option(..., "--predictors", help="Comma-separated predictor columns, e.g. "
                                                                 "Corrected_CBV_Index,HIR."),
        out_dir: Path = typer.Option(..., "--out_dir", "--out-dir", help="Output folder: stats.json, PNG plots, "
                                                                         "report.html."),
        positive: Optional[str] = typer.Option(None, "--positive", help="Which outcome values are positive: "
                                               "'>=3' (also >, <=, <, ==, !=) or labels 'good,excellent'."),
        clinical: Optional[Path] = typer.Option(None, "--clinical", help="Second table (e.g. outcomes) joined on "
                                                                         "--on."),
        on: Optional[str] = typer.Option(None, "--on", help="Id column shared by --data and --clinical."),
        cv: int = typer.Option(5, "--cv", min=2, help="Folds of the stratified cross-validation."),
        seed: int = typer.Option(0, "--seed", help="Seed of the cross-validation folds."),
    ):
        """Outcome statistics: ROC/AUC with DeLong CI, Youden cut-off, CV AUC, logistic regression, calibration."""
        try:
            import warnings

            from ctperf.workflows.stats import run_stats

            # the command reports separation and convergence problems as notes; statsmodels' own warnings would
            # only repeat them with a source line (set once for this command, not inside the library)
            warnings.filterwarnings("ignore", module="statsmodels")

            names = [p.strip() for p in predictors.split(",") if p.strip()]
            res, doc = run_stats(data, outcome, names, out_dir, positive=positive, clinical=clinical, on=on,
                                 folds=cv, seed=seed)
        except (Exception, MemoryError) as exc:  # noqa: BLE001
            fail(exc)
            return
        for note in doc["notes"]:
            err.print(f"note: {note}", highlight=False, soft_wrap=True)
        out.print(_stats_table(doc))
        out.print(f"stats.json, plots and report.html -> {out_dir}", highlight=False)


def warn_if_forced(doc: dict) -> None:
    """The warning of ``compare`` and ``prr`` when ``--force`` let different definitions through."""
    if doc.get("forced"):
        err.print("ctperf: warning: compared despite different definitions: "
                  + "; ".join(doc["definition_differences"]), highlight=False, soft_wrap=True)


def _stats_table(doc: dict):
    from rich.table import Table

    from ctperf import DISCLAIMER

    table = Table(title=f"outcome: {doc['positive']}", caption=DISCLAIMER)
    for col in ("predictor", "n", "AUC (95% CI)", "CV AUC", "cut-off", "sens", "spec", "OR/SD (95% CI)"):
        table.add_column(col)

    def f(v, d=3):
        return "n/a" if v is None else f"{v:.{d}f}"

    for name, d in doc["predictors"].items():
        if d["auc"] is None:
            table.add_row(name, str(d["n"]), f"n/a ({d.get('reason', '')})", "", "", "", "", "")
            continue
        ci, orci = d["auc_ci95"], d["odds_ratio_per_sd_ci95"]
        table.add_row(name, str(d["n"]), f"{f(d['auc'])} ({f(ci[0])}-{f(ci[1])})",
                      "n/a" if d["auc_cv_mean"] is None else f"{d['auc_cv_mean']:.2f} ± {d['auc_cv_sd']:.2f}",
                      d["cutoff_rule"].replace("positive if value ", ""), f(d["sensitivity"], 2),
                      f(d["specificity"], 2),
                      "n/a" if orci is None else f"{f(d['odds_ratio_per_sd'], 2)} ({f(orci[0], 2)}-{f(orci[1], 2)})")
    return table


def _input_error(message: str):
    from ctperf.errors import InputError

    raise InputError(message)


@contextmanager
def _progress(quiet: bool):
    """Rich progress bar over the studies of a batch (nothing when quiet or not on a terminal)."""
    if quiet or not err.is_terminal:
        yield None, None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
        TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=err) as prog:
        task = prog.add_task("studies", total=None)
        failed = [0]

        def on_start(n_run: int, n_skipped: int):
            prog.update(task, total=n_run + n_skipped, description=f"studies ({n_skipped} already done)")

        def on_result(row):
            failed[0] += row["status"] == "failed"
            prog.update(task, advance=1, description=f"studies ({failed[0]} failed)" if failed[0] else "studies")

        yield on_start, on_result
