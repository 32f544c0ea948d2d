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

err = Console(stderr=True)
out = Console()


def register(app: typer.Typer, fail: Callable[[BaseException], None]) -> None:
    """Add the cohort commands to ``app``; ``fail`` turns an exception into the CLI's one-line error and exit."""

    @app.command("batch")
    def batch_cmd(
        input_root: Path = typer.Option(..., "--input_root", "--input-root",
                                        help="Cohort folder: every folder below it that holds DICOM files and no "
                                             "study sub-folders is one study (any depth)."),
        out_root: Path = typer.Option(..., "--out_root", "--out-root",
                                      help="Output root: study S writes into OUT_ROOT/S; batch_summary.csv here."),
        workers: Optional[int] = typer.Option(None, "--workers", min=1,
                                              help="Worker processes of the local Dask cluster (default: CPU cores)."),
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
                raise_input("use either --workers (local cluster) or --scheduler, not both")
            cfg = Config.load(config)
            with _progress(quiet) as (on_start, on_result):
                result = run_batch(input_root, out_root, cfg.to_dict(), workers=workers, scheduler=scheduler,
                                   depth=depth, on_start=on_start, on_result=on_result)
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


def raise_input(message: str):
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
