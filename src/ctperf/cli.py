"""The `ctperf` command line.  Research use only - not a medical device."""

from __future__ import annotations

import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from ctperf import DISCLAIMER, __version__
from ctperf.errors import CTPerfError

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="rich",
                  help=f"ctperf {__version__}: automatic CT perfusion maps, lesion masks and stroke indices. "
                       f"{DISCLAIMER}")
err = Console(stderr=True)
out = Console()

#: Set CTPERF_DEBUG=1 to see tracebacks of unexpected errors.
_DEBUG = os.environ.get("CTPERF_DEBUG", "") not in ("", "0")


def _version(value: bool):
    if value:
        typer.echo(f"ctperf {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Show the version and exit.")):
    """ctperf command line."""


@contextmanager
def _stages(quiet: bool):
    """A rich progress display fed by the pipeline's stage names and file counts."""
    if quiet or not err.is_terminal:  # pipes and CI: no progress chatter, so errors stay one line
        yield (lambda name: None), None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=err, transient=False) as prog:
        task = prog.add_task("starting", total=None)

        def stage(name: str):
            prog.reset(task, description=name, total=None)

        def files(done: int, total: int):
            prog.update(task, description="reading DICOM", total=total, completed=done)

        yield stage, files


def _fail(exc: BaseException) -> None:
    if isinstance(exc, CTPerfError):
        err.print(f"[bold red]ctperf: error:[/bold red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code)
    if isinstance(exc, OSError) and getattr(exc, "strerror", None):
        where = f": {exc.filename}" if getattr(exc, "filename", None) else ""
        err.print(f"[bold red]ctperf: error:[/bold red] {exc.strerror}{where}", highlight=False, soft_wrap=True)
        raise typer.Exit(2)
    if isinstance(exc, MemoryError):
        err.print("[bold red]ctperf: error:[/bold red] out of memory for this study", highlight=False)
        raise typer.Exit(3)
    if _DEBUG:
        raise exc
    msg = " ".join(str(exc).split()) or type(exc).__name__
    err.print(f"[bold red]ctperf: internal error:[/bold red] {type(exc).__name__}: {msg} "
              "(set CTPERF_DEBUG=1 for details; please report it)", highlight=False, soft_wrap=True)
    raise typer.Exit(3)


VENDORS = ("siemens", "ge", "toshiba", "philips")


def _check_choice(option: str, value: str, choices) -> None:
    if value not in choices:
        raise CTPerfError(f"{option} must be one of {', '.join(choices)} (got '{value}')")


def _summary_table(metrics: dict, title: str, truth: dict | None = None) -> Table:
    table = Table(title=title, caption=DISCLAIMER)
    table.add_column("index")
    table.add_column("value", justify="right")
    if truth is not None:
        table.add_column("phantom truth", justify="right")
    units = metrics.get("units", {})
    keys = ["core_ml", "penumbra_ml", "hypoperfusion_ml", "Mismatch_Ratio", "mismatch_volume_ml", "tmax10_ml",
            "HIR", "Corrected_CBV_Index", "CBV_Index_contra_hemisphere", "PVT_sec", "PVT_present", "lesion_side",
            "DEFUSE3_eligible", "EXTEND_eligible"]
    for key in keys:
        if key not in metrics:
            continue
        val = metrics[key]
        shown = f"n/a ({metrics.get(key + '_reason', 'undefined')})" if val is None else (
            f"{val:.2f}" if isinstance(val, float) else str(val))
        unit = units.get(key, "")
        row = [key + (f" [{unit}]" if unit and unit != "1" else ""), shown]
        if truth is not None:
            tv = truth.get(key)
            row.append("" if tv is None else (f"{tv:.2f}" if isinstance(tv, float) else str(tv)))
        table.add_row(*row)
    flags = [k for k, v in metrics.get("qa_flags", {}).items() if v]
    if flags:
        table.add_row("[red]QA flags[/red]", "[red]" + ", ".join(flags) + "[/red]")
    return table


# --------------------------------------------------------------------------------------------- run (Mode A)
@app.command("run")
def run_cmd(
    dicom_dir: Path = typer.Option(..., "--dicom_dir", "--dicom-dir", help="Folder with the raw 4D CTP DICOM "
                                   "(searched recursively; other series and non-DICOM files are ignored)."),
    out_dir: Path = typer.Option(..., "--out_dir", "--out-dir", help="Output folder (created; files replaced)."),
    roi_mask: Optional[Path] = typer.Option(None, "--roi_mask", "--roi-mask",
                                            help="NIfTI lesion-cortex ROI for the Conventional CBV Index."),
    contra_mask: Optional[Path] = typer.Option(None, "--contra_mask", "--contra-mask",
                                               help="NIfTI contralateral reference ROI (rCBF and CBV index)."),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML/JSON/YAML file overriding defaults."),
    series: Optional[str] = typer.Option(None, "--series", help="Force a SeriesInstanceUID or SeriesNumber."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress display."),
    dicom_out: bool = typer.Option(False, "--dicom-out", help="Also write DICOM Parametric Maps, SEG, SR and "
                                   "Secondary Captures to OUT/dicom (needs ctperf[dicom-out])."),
):
    """[bold]Mode A[/bold]: raw 4D CTP DICOM -> CBF/CBV/MTT/Tmax/TTP/rCBF maps, lesion masks, metrics, QA figures."""
    try:
        from ctperf.config import Config
        from ctperf.pipeline import run_dicom_folder

        cfg = Config.load(config)
        with _stages(quiet) as (stage, files):
            result = run_dicom_folder(dicom_dir, out_dir, cfg, roi_mask, contra_mask, series, stage, files, dicom_out)
    except (Exception, MemoryError) as exc:  # noqa: BLE001
        _fail(exc)
        return
    if not quiet:
        out.print(_summary_table(result.metrics, f"ctperf results -> {out_dir}"))


# ------------------------------------------------------------------------------------------------- demo
@app.command("demo")
def demo_cmd(
    out_dir: Path = typer.Argument(..., help="Output folder for the demo study's results."),
    noise_hu: float = typer.Option(8.0, help="Phantom image noise (HU per voxel per frame)."),
    lesion: str = typer.Option("left", help="Lesion side: left, right or none."),
    vendor: str = typer.Option("siemens", help="DICOM layout of the generated study: siemens, ge, toshiba or philips."),
    seed: int = typer.Option(0, help="Random seed."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """Generate a digital phantom CTP study (DICOM + truth) and analyse it end to end."""
    try:
        from ctperf.config import Config
        from ctperf.pipeline import run_dicom_folder
        from ctperf.synthetic import PhantomSpec, make_phantom, write_truth
        from ctperf.synthetic.dicom_writer import DicomLayout, write_ctp_dicom

        _check_choice("--lesion", lesion, ("left", "right", "none"))
        _check_choice("--vendor", vendor, VENDORS)
        spec = PhantomSpec(noise_hu=noise_hu, lesion=None if lesion == "none" else lesion, seed=seed)
        with _stages(quiet) as (stage, files):
            stage("generating phantom")
            ph = make_phantom(spec)
            inp = Path(out_dir) / "demo_input"
            write_ctp_dicom(ph.hu, ph.times_s, ph.affine_ras, inp / "dicom", layout=DicomLayout(vendor=vendor),
                            seed=seed)
            write_truth(ph, inp / "truth")
            result = run_dicom_folder(inp / "dicom", out_dir, Config(), progress=stage, load_progress=files)
    except (Exception, MemoryError) as exc:  # noqa: BLE001
        _fail(exc)
        return
    if not quiet:
        out.print(_summary_table(result.metrics, f"ctperf demo -> {out_dir}", truth=ph.truth_metrics))
        out.print(f"Maps, masks, metrics.json and qa/ figures are in {out_dir}; phantom DICOM and truth in "
                  f"{Path(out_dir) / 'demo_input'}.")


# ---------------------------------------------------------------------------------------------- inspect
@app.command("inspect")
def inspect_cmd(
    dicom_dir: Path = typer.Argument(..., help="Folder to scan recursively."),
    as_json: bool = typer.Option(False, "--json", help="Print strict JSON instead of a table."),
    series: Optional[str] = typer.Option(None, "--series", help="Force a SeriesInstanceUID or SeriesNumber."),
):
    """List every DICOM series in a folder and show which one is the CT perfusion acquisition."""
    try:
        from ctperf.dicom_io import inspect_folder

        info = inspect_folder(dicom_dir, series=series)
    except (Exception, MemoryError) as exc:  # noqa: BLE001
        _fail(exc)
        return
    if as_json:
        typer.echo(json.dumps(info, indent=2, allow_nan=False))
        return
    table = Table(title=f"DICOM series in {dicom_dir}")
    for col in ("CTP", "description", "modality", "files", "slices", "time points"):
        table.add_column(col)
    for row in info.get("series", []):
        table.add_row("[green]yes[/green]" if row.get("is_ctp") else "", str(row.get("description", "")),
                      str(row.get("modality", "")), str(row.get("n_files", "")), str(row.get("n_slices", "")),
                      str(row.get("n_timepoints", "")))
    out.print(table)
    out.print(f"CTP shape (x, y, z, t): {info.get('shape_xyzt')}; manufacturer: {info.get('manufacturer')}; "
              f"frame times (s): {[round(t, 2) for t in info.get('frame_times_s', [])]}")


# ----------------------------------------------------------------------------------------- maps (Mode B)
@app.command("maps")
def maps_cmd(
    mip: Path = typer.Option(..., "--mip", help="MIP screenshot (PNG/JPEG) with a hand-drawn yellow ROI."),
    tmax: Path = typer.Option(..., "--tmax", help="Tmax map: NIfTI, scalar DICOM series, or colour-coded DICOM."),
    cbv: Path = typer.Option(..., "--cbv", help="CBV map (same forms)."),
    rcbf: Path = typer.Option(..., "--rcbf", help="rCBF map, as a fraction (1 = normal) or in percent (same forms)."),
    aif_csv: Path = typer.Option(..., "--aif_csv", "--aif-csv", help="AIF curve CSV (time_s, value)."),
    vof_csv: Path = typer.Option(..., "--vof_csv", "--vof-csv", help="VOF curve CSV (time_s, value)."),
    out_dir: Path = typer.Option(..., "--out_dir", "--out-dir", help="Output folder."),
    tmax_range: Optional[str] = typer.Option(None, "--tmax-range", help="LO,HI values of a colour-coded Tmax map's bar."),
    cbv_range: Optional[str] = typer.Option(None, "--cbv-range", help="LO,HI of a colour-coded CBV map's bar."),
    rcbf_range: Optional[str] = typer.Option(None, "--rcbf-range", help="LO,HI of a colour-coded rCBF map's bar."),
    tissue_mask: Optional[Path] = typer.Option(None, "--tissue_mask", "--tissue-mask",
                                               help="NIfTI brain-parenchyma mask (default: derived from the maps)."),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML/JSON/YAML file overriding thresholds."),
):
    """[bold]Mode B[/bold]: indices from existing vendor maps + a yellow ROI on a MIP screenshot + AIF/VOF CSV."""
    try:
        from ctperf.config import Config
        from ctperf.modeb.pipeline_b import run_maps

        metrics = run_maps(mip=mip, tmax=tmax, cbv=cbv, rcbf=rcbf, aif_csv=aif_csv, vof_csv=vof_csv,
                           out_dir=out_dir, cfg=Config.load(config),
                           ranges={"tmax": _parse_range(tmax_range), "cbv": _parse_range(cbv_range),
                                   "rcbf": _parse_range(rcbf_range)}, tissue_mask=tissue_mask)
    except (Exception, MemoryError) as exc:  # noqa: BLE001
        _fail(exc)
        return
    out.print(_summary_table(metrics, f"ctperf maps -> {out_dir}"))


def _parse_range(text: str | None):
    if text is None:
        return None
    try:
        lo, hi = (float(v) for v in text.replace(";", ",").split(","))
    except ValueError:
        raise CTPerfError(f"range '{text}' must be two numbers LO,HI") from None
    return (lo, hi)


# -------------------------------------------------------------------------------------------- recompute
@app.command("recompute")
def recompute_cmd(
    out_dir: Path = typer.Argument(..., help="A Mode A output folder (from `ctperf run`)."),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML/JSON/YAML with the new thresholds."),
    dicom_out: Optional[bool] = typer.Option(None, "--dicom-out/--no-dicom-out", help="Rebuild the DICOM objects "
                                             "(default: when an earlier run wrote them)."),
):
    """Re-derive masks and indices from saved maps with new thresholds (no second deconvolution)."""
    try:
        from ctperf.config import Config
        from ctperf.pipeline import recompute_outputs

        metrics = recompute_outputs(out_dir, Config.load(config), dicom_out)
    except (Exception, MemoryError) as exc:  # noqa: BLE001
        _fail(exc)
        return
    out.print(_summary_table(metrics, f"ctperf recompute -> {out_dir}"))


# -------------------------------------------------------------------------------------------- aggregate
@app.command("aggregate")
def aggregate_cmd(
    input_dir: Path = typer.Option(..., "--input_dir", "--input-dir", help="Folder searched for metrics.json."),
    output: Path = typer.Option(Path("summary.csv"), "--output", help="CSV with one row per study."),
):
    """Collect every study's metrics.json below a folder into one CSV (one row per study)."""
    try:
        from ctperf.utils.aggregate_metrics import aggregate

        n = aggregate(input_dir, output)
    except (Exception, MemoryError) as exc:  # noqa: BLE001
        _fail(exc)
        return
    out.print(f"{n} studies -> {output}")


# -------------------------------------------------------------------------------------------------- prr
@app.command("prr")
def prr_cmd(
    baseline: Path = typer.Argument(..., help="Baseline study: its output folder or metrics.json."),
    followup: Path = typer.Argument(..., help="Follow-up study: its output folder or metrics.json."),
    output: Optional[Path] = typer.Option(None, "--output", help="Also write the result as strict JSON here."),
):
    """Follow-up comparison: PRR % = 100 x (baseline - follow-up) / baseline hypoperfusion volume."""
    try:
        from ctperf.indices import prr_percent

        docs = [_read_metrics(p) for p in (baseline, followup)]
        vols = [d.get("hypoperfusion_ml") for d in docs]
        value, reason = prr_percent(*vols)
        result = {"PRR_percent": value, "baseline_hypoperfusion_ml": vols[0], "followup_hypoperfusion_ml": vols[1],
                  "units": {"PRR_percent": "%", "baseline_hypoperfusion_ml": "mL", "followup_hypoperfusion_ml": "mL"},
                  "software_version": __version__}
        if value is None:
            result["PRR_percent_reason"] = reason
        text = json.dumps(result, indent=2, allow_nan=False)
        if output is not None:
            Path(output).write_text(text + "\n", encoding="utf-8")
    except (Exception, MemoryError) as exc:  # noqa: BLE001
        _fail(exc)
        return
    typer.echo(text)


def _read_metrics(path: Path) -> dict:
    p = Path(path)
    p = p / "metrics.json" if p.is_dir() else p
    if not p.is_file():
        raise CTPerfError(f"no metrics.json at {path}")
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise CTPerfError(f"{p} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise CTPerfError(f"{p} is not a metrics document")
    return doc


# ---------------------------------------------------------------------------------------------- phantom
@app.command("phantom")
def phantom_cmd(
    out_dir: Path = typer.Argument(..., help="Folder for the phantom's DICOM (dicom/) and truth (truth/)."),
    vendor: str = typer.Option("siemens", help="DICOM layout: siemens, ge, toshiba or philips."),
    noise_hu: float = typer.Option(8.0, help="Noise (HU per voxel per frame)."),
    lesion: str = typer.Option("left", help="left, right or none."),
    matrix: int = typer.Option(160, help="In-plane matrix."),
    n_slices: int = typer.Option(8, help="Number of slices."),
    seed: int = typer.Option(0),
):
    """Write a digital phantom CTP study with known truth (for validation and training)."""
    try:
        from ctperf.synthetic import PhantomSpec, make_phantom, write_truth
        from ctperf.synthetic.dicom_writer import DicomLayout, write_ctp_dicom

        _check_choice("--lesion", lesion, ("left", "right", "none"))
        _check_choice("--vendor", vendor, VENDORS)
        ph = make_phantom(PhantomSpec(matrix=matrix, n_slices=n_slices, noise_hu=noise_hu,
                                      lesion=None if lesion == "none" else lesion, seed=seed))
        write_ctp_dicom(ph.hu, ph.times_s, ph.affine_ras, Path(out_dir) / "dicom", layout=DicomLayout(vendor=vendor),
                        seed=seed)
        write_truth(ph, Path(out_dir) / "truth")
    except (Exception, MemoryError) as exc:  # noqa: BLE001
        _fail(exc)
        return
    out.print(f"phantom study written to {out_dir}")


# ------------------------------------------------------------------------------------------------- node
from ctperf.apps.node.command import node_cmd  # noqa: E402  (imports typer only; pynetdicom when run)

app.command("node")(node_cmd)


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
