"""The `ctperf` command line.  Research use only - not a medical device."""

from __future__ import annotations

import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ctperf import DISCLAIMER, __version__
from ctperf.apps.help_text import EXIT_CODES, EXIT_CODES_SERVER, epilog
from ctperf.errors import CTPerfError

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="rich",
                  help=f"ctperf {__version__}: automatic CT perfusion maps, lesion masks and stroke indices. "
                       f"{DISCLAIMER}", epilog=EXIT_CODES)
err = Console(stderr=True)
out = Console()


def _flags_take_no_value() -> None:
    """Recent typer shows ``<bool>`` beside on/off flags in --help, which reads as if ``--fail-on-qa true`` were
    expected; flags take no value, so show no type for them (other options keep theirs)."""
    from typer.core import TyperOption

    shown = getattr(TyperOption, "display_type_rich", None)
    if shown is None or getattr(shown, "_ctperf_flags", False):
        return

    def display_type_rich(self, ctx):
        return None if getattr(self, "is_flag", False) else shown(self, ctx)

    display_type_rich._ctperf_flags = True
    TyperOption.display_type_rich = display_type_rich


_flags_take_no_value()

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


def _stages(quiet: bool, stages=None):
    """One progress bar over the whole run (stderr); yields (stage, part) callbacks.  ``-q`` hides it."""
    from ctperf.apps.terminal import MODE_A_STAGES, run_progress

    return run_progress(err, MODE_A_STAGES if stages is None else stages, quiet)


def _result_stamp(folder: Path | None) -> tuple[int, int, int] | None:
    """What identifies the ctperf result in ``folder`` now: its manifest's inode, size and modification time (None
    without one).  A new result replaces the manifest, so a changed stamp means a new result was moved in."""
    from ctperf.io.outdir import MANIFEST

    try:
        st = (Path(folder) / MANIFEST).stat()
    except (OSError, TypeError):
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def _unwritten(folder: Path | None, before: tuple[int, int, int] | None, nothing: str = "no output written") -> str:
    """What an interrupted command left in its output folder, in words.

    Results are written atomically (:mod:`ctperf.io.outdir`): staged in a hidden folder that is removed when the
    command is interrupted, and moved into ``folder`` only at the end (a swap cut short is rolled back).  So either
    the earlier state of ``folder`` is unchanged (``nothing`` says so), or the new result was complete before the
    interruption.
    """
    if _result_stamp(folder) not in (None, before):
        return f"the result in {folder} was written completely before the interruption"
    return nothing + (f"; the earlier result in {folder} is unchanged" if before is not None else "")


@contextmanager
def _on_interrupt(what: Callable[[], str]) -> Iterator[None]:
    """Ctrl-C (SIGINT) during a command: one line on stderr, ``ctperf: interrupted; <what()>``, and exit code 130
    (as a shell reports a process ended by SIGINT).  Without it the command ends silently and the user cannot tell
    what was left behind.  ``what`` is called once the interrupted work has unwound (the progress bar closed, the
    staged output removed), so it can look at the disk."""
    try:
        yield
    except KeyboardInterrupt:
        err.print(f"ctperf: interrupted; {what()}", style="bold red", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(130) from None


def _on_interrupt_writing(folder: Path | None):
    """:func:`_on_interrupt` of a command that writes one result into ``folder``: the line says whether the earlier
    result there is unchanged or the new one was complete (:func:`_unwritten`, against the result there now)."""
    before = _result_stamp(folder)
    return _on_interrupt(lambda: _unwritten(folder, before))


def _finish(metrics: dict, title: str, fail_on_qa: bool = False, truth: dict | None = None, note: str = "") -> None:
    """Result table with the reasons of missing values under it (each once), ``note``, then the warnings in colour;
    exit 3 when a QA flag is raised and ``fail_on_qa``."""
    from ctperf.apps.terminal import print_warnings

    table, notes = _summary_table(metrics, title, truth=truth)
    out.print(table)
    for line in notes:
        out.print(line, markup=False, highlight=False, soft_wrap=True)
    if note:
        out.print(note, markup=False)
    n_flags = print_warnings(out, metrics)
    if fail_on_qa and n_flags:
        err.print(f"[bold red]ctperf: {n_flags} QA flag(s) raised (--fail-on-qa)[/bold red]", highlight=False)
        raise typer.Exit(3)


_FAIL_ON_QA = typer.Option(False, "--fail-on-qa", help="Exit with code 3 when any QA flag is raised.")
_OVERWRITE = typer.Option(False, "--overwrite", help="Replace a result of the other mode already in --out_dir.")


def _fail(exc: BaseException) -> None:
    # the message is printed as text, not rich markup: a folder named "scan[red]" must keep its brackets
    if isinstance(exc, CTPerfError):
        err.print(f"[bold red]ctperf: error:[/bold red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code)
    if isinstance(exc, OSError) and getattr(exc, "strerror", None):
        where = f": {exc.filename}" if getattr(exc, "filename", None) else ""
        err.print(f"[bold red]ctperf: error:[/bold red] {escape(exc.strerror + where)}", highlight=False,
                  soft_wrap=True)
        raise typer.Exit(2)
    if isinstance(exc, MemoryError):
        err.print("[bold red]ctperf: error:[/bold red] out of memory for this study", highlight=False)
        raise typer.Exit(4)
    if _DEBUG:
        raise exc
    msg = " ".join(str(exc).split()) or type(exc).__name__
    err.print(f"[bold red]ctperf: internal error:[/bold red] {type(exc).__name__}: {escape(msg)} "
              "(set CTPERF_DEBUG=1 for details; please report it)", highlight=False, soft_wrap=True)
    raise typer.Exit(4)


VENDORS = ("siemens", "ge", "toshiba", "philips")


#: ``--out_dir`` beside a positional output folder (``demo``, ``phantom``): ``ctperf run`` takes the folder as
#: ``--out_dir``, and users type it the same way for the other commands.
_OUT_DIR_ALIAS = typer.Option(None, "--out_dir", "--out-dir", help="The output folder, instead of OUT_DIR.")


class _OutDirCommand(typer.core.TyperCommand):
    """A command whose output folder is required but may be given two ways, as the argument OUT_DIR or as
    ``--out_dir`` (``demo``, ``phantom``): the usage line says so, "(OUT_DIR | --out_dir OUT_DIR)", instead of the
    "[OUT_DIR]" of an optional argument (the argument is optional to the parser only because the option may replace
    it; :func:`_output_folder` requires one of them)."""

    def collect_usage_pieces(self, ctx):
        pieces = super().collect_usage_pieces(ctx)
        return [("(OUT_DIR | --out_dir OUT_DIR)" if piece == "[OUT_DIR]" else piece) for piece in pieces]


def _out_dir_argument(what: str):
    """The positional OUT_DIR of an :class:`_OutDirCommand`; ``what`` says what goes into the folder."""
    return typer.Argument(None, metavar="OUT_DIR", show_default=False,
                          help=f"{what} Required: give it here or as --out_dir.")


def _output_folder(positional: Path | None, option: Path | None) -> Path:
    """The output folder given either as the positional argument or as ``--out_dir`` (one-line error otherwise)."""
    if positional is not None and option is not None and Path(positional) != Path(option):
        raise CTPerfError(f"two output folders given ({positional} and --out_dir {option}); give one")
    folder = positional if positional is not None else option
    if folder is None:
        raise CTPerfError("no output folder given: pass OUT_DIR or --out_dir")
    return Path(folder)


def _check_choice(option: str, value: str, choices) -> None:
    if value not in choices:
        raise CTPerfError(f"{option} must be one of {', '.join(choices)} (got '{value}')")


#: The indices of the result table, in order.
SUMMARY_KEYS = ("core_ml", "penumbra_ml", "hypoperfusion_ml", "Mismatch_Ratio", "mismatch_volume_ml", "tmax10_ml",
                "HIR", "Corrected_CBV_Index", "CBV_Index_contra_hemisphere", "PVT_sec", "PVT_present", "lesion_side",
                "DEFUSE3_eligible", "EXTEND_eligible")


def _summary_table(metrics: dict, title: str, truth: dict | None = None) -> tuple[Table, list[str]]:
    """The result table and the notes to print under it: a reason shared by several missing values is written once
    there (:func:`ctperf.apps.terminal.missing_value_cells`)."""
    from ctperf.apps.terminal import missing_value_cells

    table = Table(title=title, caption=DISCLAIMER)
    table.add_column("index")
    table.add_column("value", justify="right")
    if truth is not None:
        table.add_column("phantom truth", justify="right")
    units = metrics.get("units", {})
    missing, notes = missing_value_cells(metrics, SUMMARY_KEYS)
    for key in SUMMARY_KEYS:
        if key not in metrics:
            continue
        val = metrics[key]
        shown = escape(missing[key]) if val is None else (f"{val:.2f}" if isinstance(val, float) else str(val))
        unit = units.get(key, "")
        row = [key + (f" [{unit}]" if unit and unit != "1" else ""), shown]
        if truth is not None:
            tv = truth.get(key)
            row.append("" if tv is None else (f"{tv:.2f}" if isinstance(tv, float) else str(tv)))
        table.add_row(*row)
    flags = [k for k, v in metrics.get("qa_flags", {}).items() if v]
    if flags:
        table.add_row("[red]QA flags[/red]", "[red]" + ", ".join(flags) + "[/red]")
    return table, notes


# --------------------------------------------------------------------------------------------- run (Mode A)
def _check_study_id(value: str | None) -> str | None:
    import re

    if value is not None and not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", value):
        raise CTPerfError(f"--study-id must be 1-64 letters, digits, '.', '_' or '-' (got '{value}')")
    return value


@app.command("run", epilog=epilog("run", EXIT_CODES))
def run_cmd(
    dicom_dir: Path = typer.Option(..., "--dicom_dir", "--dicom-dir", help="Folder with the raw 4D CTP DICOM "
                                   "(searched recursively; other series and non-DICOM files are ignored)."),
    out_dir: Path = typer.Option(..., "--out_dir", "--out-dir", help="Output folder (created; files replaced)."),
    roi_mask: Optional[Path] = typer.Option(None, "--roi_mask", "--roi-mask",
                                            help="NIfTI lesion-cortex ROI for the Conventional CBV Index."),
    contra_mask: Optional[Path] = typer.Option(None, "--contra_mask", "--contra-mask",
                                               help="NIfTI contralateral reference ROI (rCBF and CBV index)."),
    aif_mask: Optional[Path] = typer.Option(None, "--aif_mask", "--aif-mask", help="NIfTI mask of the arterial "
                                            "input voxels, instead of the automatic AIF (still scaled for partial "
                                            "volume by the VOF)."),
    vof_mask: Optional[Path] = typer.Option(None, "--vof_mask", "--vof-mask", help="NIfTI mask of the venous "
                                            "output voxels (e.g. the superior sagittal sinus), instead of the "
                                            "automatic VOF."),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML/JSON/YAML file overriding defaults."),
    series: Optional[str] = typer.Option(None, "--series", help="Force a SeriesNumber, SeriesInstanceUID or unique "
                                         "UID prefix (see `ctperf inspect`)."),
    frame_interval: Optional[float] = typer.Option(None, "--frame-interval", metavar="SECONDS",
                                                   help="Sampling interval for studies whose time tags were removed "
                                                        "(frames ordered by acquisition/instance number)."),
    study_id: Optional[str] = typer.Option(None, "--study-id", "--study_id", help="Pseudonymous study label for "
                                           "metrics, report and aggregate rows (default: SHA-256 prefix of the "
                                           "StudyInstanceUID)."),
    fail_on_qa: bool = _FAIL_ON_QA,
    overwrite: bool = _OVERWRITE,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress display (the result is still printed)."),
    dicom_out: bool = typer.Option(False, "--dicom-out", help="Also write DICOM Parametric Maps, SEG, SR and "
                                   "Secondary Captures to OUT/dicom (needs the extra: "
                                   "pip install 'ctperf\\[dicom-out]')."),
):
    """[bold]Mode A[/bold]: raw 4D CTP DICOM -> CBF/CBV/MTT/Tmax/TTP/rCBF maps, lesion masks, metrics, QA figures."""
    with _on_interrupt_writing(out_dir):
        try:
            from ctperf.config import Config
            from ctperf.pipeline import run_dicom_folder

            cfg = Config.load(config)
            if frame_interval is not None:
                cfg.ingest.frame_interval_s = frame_interval
            with _stages(quiet) as (stage, files):
                result = run_dicom_folder(dicom_dir, out_dir, cfg, roi_mask, contra_mask, series, stage, files,
                                          config_file=config, study_id=_check_study_id(study_id),
                                          overwrite=overwrite, dicom_out=dicom_out, aif_mask=aif_mask,
                                          vof_mask=vof_mask)
        except (Exception, MemoryError) as exc:  # noqa: BLE001
            _fail(exc)
            return
    _finish(result.metrics, f"ctperf results -> {out_dir}", fail_on_qa)


# ------------------------------------------------------------------------------------------------- demo
#: Printed under the demo's table.  The phantom has 1 s of vascular dispersion, under which the default CBF estimates
#: the peak of h (x) R, not the nominal flow (docs/definitions.md section 2): the written maps compared with
#: truth_cbf.nii.gz read CBF -46 % and MTT +77 % (new-user audit), which looks like a broken tool.  ASCII only: a
#: cp1252 pipe cannot encode the convolution sign.
DEMO_MAPS_NOTE = ("Maps: CBF estimates the peak of the dispersed residue h(x)R; compare it with "
                  "truth_cbf_apparent.nii.gz (the nominal flow truth_cbf.nii.gz is not identifiable under dispersion), "
                  "so MTT reads above truth_mtt.nii.gz; docs/definitions.md section 2.")


@app.command("demo", cls=_OutDirCommand, epilog=epilog("demo"))
def demo_cmd(
    out_dir: Optional[Path] = _out_dir_argument("Output folder for the demo study's results (the generated "
                                                "study goes into its demo_input/)."),
    out_dir_option: Optional[Path] = _OUT_DIR_ALIAS,
    noise_hu: float = typer.Option(8.0, help="Phantom image noise (HU per voxel per frame)."),
    lesion: str = typer.Option("left", help="Lesion side: left, right or none."),
    vendor: str = typer.Option("siemens", help="DICOM layout of the generated study: siemens, ge, toshiba or philips."),
    seed: int = typer.Option(0, help="Random seed."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress display (the result is still printed)."),
):
    """Generate a digital phantom CTP study (DICOM + truth) and analyse it end to end."""
    folder = out_dir if out_dir is not None else out_dir_option
    before = _result_stamp(folder)
    inputs = {"state": None}  # None: nothing written yet; "partial" while the phantom study is written; "complete"

    def interrupted() -> str:
        # the phantom study is written straight into demo_input/ (not staged): say what state it was left in
        text = _unwritten(folder, before, "no analysis result written")
        if folder is None or inputs["state"] is None:
            return text
        inp = Path(folder) / "demo_input"
        if inputs["state"] == "partial":
            return f"{text}; the phantom study in {inp} is incomplete (delete it)"
        return f"{text}; the phantom study is in {inp}"

    with _on_interrupt(interrupted):
        try:
            from ctperf.apps.terminal import MODE_A_STAGES, PHANTOM_STAGES
            from ctperf.config import Config
            from ctperf.pipeline import run_dicom_folder
            from ctperf.synthetic import PhantomSpec, make_phantom, write_truth
            from ctperf.synthetic.dicom_writer import DicomLayout, write_ctp_dicom

            out_dir = _output_folder(out_dir, out_dir_option)
            _check_choice("--lesion", lesion, ("left", "right", "none"))
            _check_choice("--vendor", vendor, VENDORS)
            spec = PhantomSpec(noise_hu=noise_hu, lesion=None if lesion == "none" else lesion, seed=seed)
            with _stages(quiet, PHANTOM_STAGES + MODE_A_STAGES) as (stage, files):
                stage("generating phantom")
                ph = make_phantom(spec)
                inp = Path(out_dir) / "demo_input"
                stage("writing DICOM")
                inputs["state"] = "partial"
                write_ctp_dicom(ph.hu, ph.times_s, ph.affine_ras, inp / "dicom",
                                layout=DicomLayout(vendor=vendor), seed=seed)
                stage("writing truth")
                write_truth(ph, inp / "truth")
                inputs["state"] = "complete"
                result = run_dicom_folder(inp / "dicom", out_dir, Config(), progress=stage, load_progress=files)
        except (Exception, MemoryError) as exc:  # noqa: BLE001
            _fail(exc)
            return
    _finish(result.metrics, f"ctperf demo -> {out_dir}", truth=ph.truth_metrics, note=DEMO_MAPS_NOTE)
    out.print(f"Maps, masks, metrics.json and qa/ figures are in {out_dir}; phantom DICOM and truth in "
              f"{Path(out_dir) / 'demo_input'}.")


# ---------------------------------------------------------------------------------------------- inspect
@app.command("inspect", epilog=epilog("inspect"))
def inspect_cmd(
    dicom_dir: Path = typer.Argument(..., help="Folder to scan recursively."),
    as_json: bool = typer.Option(False, "--json", help="Print strict JSON instead of a table."),
    series: Optional[str] = typer.Option(None, "--series", help="Force a SeriesNumber, SeriesInstanceUID or unique "
                                         "UID prefix."),
    frame_interval: Optional[float] = typer.Option(None, "--frame-interval", metavar="SECONDS",
                                                   help="Sampling interval for studies whose time tags were removed."),
):
    """List every DICOM series in a folder and show which one is the CT perfusion acquisition."""
    try:
        from ctperf.dicom_io import inspect_folder

        info = inspect_folder(dicom_dir, series=series, frame_interval_s=frame_interval)
    except (Exception, MemoryError) as exc:  # noqa: BLE001
        if not as_json:  # no usable CTP: still show what the folder holds, and why each series was left out
            rows = _found_series(dicom_dir)
            if rows:
                out.print(_series_table({"series": rows}, dicom_dir))
        _fail(exc)
        return
    if as_json:
        typer.echo(json.dumps(info, indent=2, allow_nan=False))
        return
    out.print(_series_table(info, dicom_dir))
    out.print(f"CTP shape (x, y, z, t): {info.get('shape_xyzt')}; manufacturer: {info.get('manufacturer')}; "
              f"frame times (s): {[round(t, 2) for t in info.get('frame_times_s', [])]}")


def _found_series(dicom_dir) -> list[dict]:
    """The image groups a header scan of ``dicom_dir`` finds (rows of :func:`_series_table`), [] when it finds none
    or cannot scan the folder: the table :func:`inspect_cmd` still shows when there is no usable CT perfusion."""
    from ctperf.dicom_io import scan_folder

    try:
        return [g.row() for g in scan_folder(dicom_dir).groups]
    except (Exception, MemoryError):  # noqa: BLE001  (the error of the inspection itself is reported instead)
        return []


def _series_table(info: dict, dicom_dir) -> Table:
    """One row per series group: number, --series value, short UID, size, time span, first time, why excluded."""
    table = Table(title=f"DICOM series in {dicom_dir}")
    for col in ("CTP", "series", "--series", "short UID", "description", "files", "slices", "time points",
                "span s", "first time", "excluded because"):
        table.add_column(col)
    for row in info.get("series", []):
        nums = row.get("series_numbers") or []
        shown = (f"{nums[0]}-{nums[-1]}" if len(nums) > 2 and nums == list(range(nums[0], nums[-1] + 1))
                 else ",".join(map(str, nums)))
        span = row.get("span_s")
        table.add_row("[green]yes[/green]" if row.get("is_ctp") else "", shown, str(row.get("series_option", "")),
                      str(row.get("short_uid", "")), str(row.get("description", "")), str(row.get("n_files", "")),
                      str(row.get("n_slices", "")), str(row.get("n_timepoints", "")),
                      "" if span is None else f"{span:.1f}", str(row.get("first_acquisition_time") or ""),
                      str(row.get("excluded_reason") or ""))
    return table


# ----------------------------------------------------------------------------------------- maps (Mode B)
@app.command("maps", epilog=epilog("maps", EXIT_CODES))
def maps_cmd(
    mip: Path = typer.Option(..., "--mip", help="Tmax MIP screenshot (PNG/JPEG, grey or colour-coded) with a "
                                                "hand-drawn yellow ROI."),
    tmax: Path = typer.Option(..., "--tmax", help="Tmax map: NIfTI, scalar DICOM series, or colour-coded DICOM."),
    cbv: Path = typer.Option(..., "--cbv", help="CBV map (same forms)."),
    rcbf: Path = typer.Option(..., "--rcbf", help="rCBF map, as a fraction (1 = normal) or in percent (same forms)."),
    aif_csv: Path = typer.Option(..., "--aif_csv", "--aif-csv", help="AIF curve CSV (time_s, value)."),
    vof_csv: Path = typer.Option(..., "--vof_csv", "--vof-csv", help="VOF curve CSV (time_s, value)."),
    out_dir: Path = typer.Option(..., "--out_dir", "--out-dir", help="Output folder."),
    tmax_range: Optional[str] = typer.Option(None, "--tmax-range",
                                             help="LO,HI values of a colour-coded Tmax map's bar."),
    cbv_range: Optional[str] = typer.Option(None, "--cbv-range", help="LO,HI of a colour-coded CBV map's bar."),
    rcbf_range: Optional[str] = typer.Option(None, "--rcbf-range", help="LO,HI of a colour-coded rCBF map's bar."),
    tissue_mask: Optional[Path] = typer.Option(None, "--tissue_mask", "--tissue-mask",
                                               help="NIfTI brain-parenchyma mask (default: that of the ctperf Mode A "
                                                    "folder holding the maps, else derived from the maps)."),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML/JSON/YAML file overriding thresholds."),
    fail_on_qa: bool = _FAIL_ON_QA,
    overwrite: bool = _OVERWRITE,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress display (the result is still printed)."),
):
    """[bold]Mode B[/bold]: indices from existing vendor maps + a yellow ROI on a MIP screenshot + AIF/VOF CSV."""
    with _on_interrupt_writing(out_dir):
        try:
            from ctperf.config import Config
            from ctperf.io.outdir import check_output_dir
            from ctperf.modeb.pipeline_b import run_maps

            cfg = Config.load(config)
            check_output_dir(out_dir, mode="B", overwrite=overwrite)
            with _stages(quiet, ("Mode B analysis",)) as (stage, _):
                stage("Mode B analysis")
                metrics = run_maps(mip=mip, tmax=tmax, cbv=cbv, rcbf=rcbf, aif_csv=aif_csv, vof_csv=vof_csv,
                                   out_dir=out_dir, cfg=cfg,
                                   ranges={"tmax": _parse_range(tmax_range), "cbv": _parse_range(cbv_range),
                                           "rcbf": _parse_range(rcbf_range)}, tissue_mask=tissue_mask,
                                   config_file=config)
        except (Exception, MemoryError) as exc:  # noqa: BLE001
            _fail(exc)
            return
    _finish(metrics, f"ctperf maps -> {out_dir}", fail_on_qa,
            note=(metrics.get("provenance", {}).get("tissue_mask") or {}).get("note", ""))


def _parse_range(text: str | None):
    if text is None:
        return None
    try:
        lo, hi = (float(v) for v in text.replace(";", ",").split(","))
    except ValueError:
        raise CTPerfError(f"range '{text}' must be two numbers LO,HI") from None
    return (lo, hi)


# -------------------------------------------------------------------------------------------- recompute
@app.command("recompute", epilog=epilog("recompute", EXIT_CODES))
def recompute_cmd(
    out_dir: Path = typer.Argument(..., help="A Mode A output folder (from `ctperf run`)."),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML/JSON/YAML with the new \\[thresholds] "
                                          "(other sections must match the original run)."),
    new_out_dir: Optional[Path] = typer.Option(None, "--out_dir", "--out-dir", help="Write the new result here "
                                               "and leave OUT_DIR untouched (default: replace OUT_DIR's result)."),
    fail_on_qa: bool = _FAIL_ON_QA,
    overwrite: bool = _OVERWRITE,
    dicom_out: Optional[bool] = typer.Option(None, "--dicom-out/--no-dicom-out", help="Rebuild the DICOM objects "
                                             "(default: when an earlier run wrote them)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress display (the result is still printed)."),
):
    """Re-derive masks and indices from saved maps with new thresholds (no second deconvolution)."""
    with _on_interrupt_writing(new_out_dir if new_out_dir is not None else out_dir):
        try:
            from ctperf.config import Config, read_config_file
            from ctperf.pipeline import recompute_outputs

            _require_mode_a_result(out_dir)
            data = None if config is None else read_config_file(config)
            # one stage (masks, indices, figures and files from the saved maps): the bar pulses, as for Mode B
            with _stages(quiet, ("recompute",)) as (stage, _):
                stage("recompute")
                metrics = recompute_outputs(out_dir, Config.from_dict(data), new_out_dir=new_out_dir,
                                            config_data=data, config_file=config, overwrite=overwrite,
                                            dicom_out=dicom_out)
        except (Exception, MemoryError) as exc:  # noqa: BLE001
            _fail(exc)
            return
    _finish(metrics, f"ctperf recompute -> {new_out_dir or out_dir}", fail_on_qa)


def _require_mode_a_result(folder: Path) -> None:
    """Refuse, in one line, a folder holding a Mode B result (from ``ctperf maps``): recompute re-thresholds the
    maps a Mode A run saved with its masks and curves, which a Mode B folder does not have (otherwise the refusal
    would list the eleven files it misses)."""
    from ctperf.io.outdir import previous_result

    mode, _ = previous_result(folder)
    if mode == "B":
        raise CTPerfError(f"{folder} holds a Mode B result (from `ctperf maps`); recompute needs a Mode A result "
                          "folder (from `ctperf run`). For new thresholds on Mode B maps, run `ctperf maps` again "
                          "with --config")


# -------------------------------------------------------------------------------------------- aggregate
@app.command("aggregate", epilog=epilog("aggregate"))
def aggregate_cmd(
    input_dir: Path = typer.Option(..., "--input_dir", "--input-dir", help="Folder searched for metrics.json."),
    output: Path = typer.Option(Path("summary.csv"), "--output", help="CSV with one row per study."),
    fmt: Optional[str] = typer.Option(None, "--format", help="csv or xlsx (default: from --output's name)."),
):
    """Collect every study's metrics.json below a folder into one CSV (one row per study)."""
    try:
        from ctperf.utils.aggregate_metrics import aggregate

        n = aggregate(input_dir, output, fmt, warn=lambda m: err.print(f"ctperf: warning: {m}", highlight=False,
                                                                        soft_wrap=True))
    except (Exception, MemoryError) as exc:  # noqa: BLE001
        _fail(exc)
        return
    out.print(f"{n} studies -> {output}")


# -------------------------------------------------------------------------------------------------- prr
@app.command("prr", epilog=epilog("prr"))
def prr_cmd(
    baseline: Path = typer.Argument(..., help="Baseline study: its output folder or metrics.json."),
    followup: Path = typer.Argument(..., help="Follow-up study: its output folder or metrics.json."),
    output: Optional[Path] = typer.Option(None, "--output", help="Also write the result as strict JSON here."),
    force: bool = typer.Option(False, "--force", help="Compute even if the thresholds or definition versions "
                                                      "differ (recorded in the result)."),
):
    """Follow-up comparison: PRR % = 100 x (baseline - follow-up) / baseline hypoperfusion volume.

    Studies made with different thresholds or definition versions are refused unless --force (as `compare`).
    """
    try:
        from ctperf.apps.cohort_cli import warn_if_forced
        from ctperf.workflows.compare import prr_document

        docs = [_read_metrics(p) for p in (baseline, followup)]
        result = prr_document(*docs, force=force)
        result["units"] = {"PRR_percent": "%", "baseline_hypoperfusion_ml": "mL", "followup_hypoperfusion_ml": "mL"}
        result["software_version"] = __version__
        text = json.dumps(result, indent=2, allow_nan=False)
        if output is not None:
            Path(output).write_text(text + "\n", encoding="utf-8")
    except (Exception, MemoryError) as exc:  # noqa: BLE001
        _fail(exc)
        return
    warn_if_forced(result)
    typer.echo(text)


def _read_metrics(path: Path) -> dict:
    from ctperf.workflows.compare import read_metrics

    return read_metrics(path)


# ---------------------------------------------------------------------------------------------- phantom
@app.command("phantom", cls=_OutDirCommand, epilog=epilog("phantom"))
def phantom_cmd(
    out_dir: Optional[Path] = _out_dir_argument("Folder for the phantom's DICOM (dicom/) and truth (truth/)."),
    out_dir_option: Optional[Path] = _OUT_DIR_ALIAS,
    vendor: str = typer.Option("siemens", help="DICOM layout: siemens, ge, toshiba or philips."),
    noise_hu: float = typer.Option(8.0, help="Noise (HU per voxel per frame)."),
    lesion: str = typer.Option("left", help="left, right or none."),
    matrix: int = typer.Option(160, help="In-plane matrix."),
    n_slices: int = typer.Option(8, help="Number of slices."),
    seed: int = typer.Option(0, help="Random seed (noise and the phantom's variation)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress display."),
):
    """Write a digital phantom CTP study with known truth (for validation and training)."""
    folder = out_dir if out_dir is not None else out_dir_option
    writing = [False]  # the study is written straight into the folder (not staged)

    def interrupted() -> str:
        return (f"the phantom study in {folder} is incomplete (delete it)" if writing[0]
                else "no output written")

    with _on_interrupt(interrupted):
        try:
            from ctperf.apps.terminal import PHANTOM_STAGES
            from ctperf.synthetic import PhantomSpec, make_phantom, write_truth
            from ctperf.synthetic.dicom_writer import DicomLayout, write_ctp_dicom

            out_dir = _output_folder(out_dir, out_dir_option)
            _check_choice("--lesion", lesion, ("left", "right", "none"))
            _check_choice("--vendor", vendor, VENDORS)
            with _stages(quiet, PHANTOM_STAGES) as (stage, _):
                stage("generating phantom")
                ph = make_phantom(PhantomSpec(matrix=matrix, n_slices=n_slices, noise_hu=noise_hu,
                                              lesion=None if lesion == "none" else lesion, seed=seed))
                stage("writing DICOM")
                writing[0] = True
                write_ctp_dicom(ph.hu, ph.times_s, ph.affine_ras, Path(out_dir) / "dicom",
                                layout=DicomLayout(vendor=vendor), seed=seed)
                stage("writing truth")
                write_truth(ph, Path(out_dir) / "truth")
        except (Exception, MemoryError) as exc:  # noqa: BLE001
            _fail(exc)
            return
    out.print(f"phantom study written to {out_dir}")


# ---------------------------------------------------------------------------------------------- gui (web)
@app.command("gui", epilog=EXIT_CODES_SERVER)
def gui_cmd(
    host: str = typer.Option("127.0.0.1", help="Address to listen on (other than loopback: a token is required)."),
    port: int = typer.Option(8765, help="Port."),
    results: Path = typer.Option(Path("ctperf-results"), "--results", help="Folder for run outputs and uploads."),
    allow: list[Path] = typer.Option([], "--allow", help="Extra folder studies may be opened from (repeatable; "
                                     "default: your home folder)."),
    token: Optional[str] = typer.Option(None, "--token", envvar="CTPERF_TOKEN", help="Access token (generated "
                                        "when listening beyond loopback)."),
    no_browser: bool = typer.Option(False, "--no-browser", help="Do not open a browser window."),
    max_upload_mb: float = typer.Option(2048.0, "--max-upload-mb", help="Largest accepted upload (MB)."),
    show_identifiers: bool = typer.Option(False, "--show-identifiers", help="Show input folder paths/names."),
):
    """Local web app: run studies, view the maps (NiiVue), tune thresholds, download results (extra: web)."""
    try:
        from ctperf.apps.web.launch import serve

        serve(host, port, results, list(allow) or [Path.home()], token, not no_browser, max_upload_mb,
              show_identifiers, echo=out.print)
    except (Exception, MemoryError) as exc:  # noqa: BLE001
        _fail(exc)


# ------------------------------------------------------------------ cohort research: batch, compare, stats
from ctperf.apps.cohort_cli import register as _register_cohort  # noqa: E402

_register_cohort(app, _fail)

# ------------------------------------------------------------------------------------------------- node
from ctperf.apps.node.command import node_cmd  # noqa: E402  (imports typer only; pynetdicom when run)

app.command("node", epilog=EXIT_CODES_SERVER)(node_cmd)


def run_command(args: list[str] | None = None, prog_name: str | None = None, command: str | None = None) -> int:
    """Run the command line (or only its subcommand ``command``, e.g. "run", under ``prog_name``) and return the
    exit code.  A usage error (unknown option, missing or bad value) is one ``ctperf: error:`` line on stderr with
    exit code 2, as every other refusal; ``--help`` is unchanged."""
    try:  # typer >= 0.2x carries its own copy of click
        from typer._click import exceptions as cx
    except ImportError:  # pragma: no cover
        from click import exceptions as cx

    cmd = typer.main.get_command(app)
    if command is not None:
        cmd = cmd.get_command(None, command)  # a group's lookup by name needs no context
        if prog_name and cmd.epilog:  # --help's example names this entry point, as its usage line does
            cmd.epilog = cmd.epilog.replace(f"Example: ctperf {command} ", f"Example: {prog_name} ")
    try:
        rv = cmd.main(args=args, prog_name=prog_name, standalone_mode=False)
    except cx.NoArgsIsHelpError as exc:  # a bare command: its help, as before
        exc.show()
        return 2
    except cx.UsageError as exc:
        where = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        err.print(f"ctperf: error: {exc.format_message()}{where}", style="bold red", markup=False,
                  highlight=False, soft_wrap=True)
        return 2
    except cx.ClickException as exc:
        err.print(f"ctperf: error: {exc.format_message()}", style="bold red", markup=False, highlight=False,
                  soft_wrap=True)
        return exc.exit_code
    except typer.Abort:
        err.print("ctperf: aborted", markup=False, highlight=False)
        return 130
    return rv if isinstance(rv, int) else 0


def main() -> int:
    from ctperf.apps.runtime import configure_process

    configure_process()
    return run_command()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
