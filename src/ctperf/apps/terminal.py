"""What a command prints on the terminal besides its result table: one progress bar over the whole run, and
the warnings (raised QA flags, ingest warnings, notes about the inputs) listed in colour under the table."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator

from rich.console import Console
from rich.markup import escape

from ctperf.core.qa_text import QA_FLAG_TEXT

#: Rough share of the run time of each stage (Mode A on a 320-file study), so one bar advances evenly.
#: Stages not listed count as 1.
STAGE_WEIGHTS: dict[str, float] = {
    "load": 1.5, "preprocess": 2.0, "denoise": 2.5, "hemispheres": 0.7, "aif": 0.4, "deconvolution": 2.0,
    "maps": 0.2, "rcbf": 0.2, "masks": 0.2, "indices": 0.1, "write": 4.0,
    "generating phantom": 3.0, "writing DICOM": 4.0, "writing truth": 0.5,
}
#: The stages of each command, in order (the bar's length).
MODE_A_STAGES = ("load", "preprocess", "denoise", "hemispheres", "aif", "deconvolution", "maps", "rcbf", "masks",
                 "indices", "write")
PHANTOM_STAGES = ("generating phantom", "writing DICOM", "writing truth")


class RunProgress:
    """One rich progress bar over a whole run, advanced by stage name and, within a stage, by a fraction.

    ``stage(name)`` starts a stage (earlier stages count as done); ``part(done, total)`` moves within the
    current stage (e.g. DICOM files read).  Unknown stage names lengthen the bar by their weight.
    """

    def __init__(self, progress, task, stages: tuple[str, ...]):
        self._prog, self._task = progress, task
        self._stages = list(stages)
        self._done = 0.0
        self._current: str | None = None
        self._prog.update(task, total=self._total(), completed=0)

    def _total(self) -> float:
        return sum(STAGE_WEIGHTS.get(s, 1.0) for s in self._stages)

    def stage(self, name: str) -> None:
        if self._current is not None:
            self._done += STAGE_WEIGHTS.get(self._current, 1.0)
        if name not in self._stages:
            self._stages.append(name)
        self._current = name
        i = self._stages.index(name) + 1
        # a single-stage command (Mode B) has nothing to count: the bar pulses instead of sitting at 0 %
        self._prog.update(self._task, description=f"[{i}/{len(self._stages)}] {name}",
                          total=self._total() if len(self._stages) > 1 else None, completed=self._done)

    def part(self, done: int, total: int) -> None:
        if self._current is None or total <= 0:
            return
        w = STAGE_WEIGHTS.get(self._current, 1.0)
        self._prog.update(self._task, completed=self._done + w * min(done, total) / total,
                          description=f"[{self._stages.index(self._current) + 1}/{len(self._stages)}] "
                                      f"{self._current} {done}/{total}")

    def finish(self) -> None:
        self._prog.update(self._task, completed=self._total(), description="done")


def _noop(*_args) -> None:
    return None


@contextmanager
def run_progress(console: Console, stages: tuple[str, ...], quiet: bool
                 ) -> Iterator[tuple[Callable[[str], None], Callable[[int, int], None]]]:
    """Yield ``(stage, part)`` callbacks driving one bar on ``console``; no-ops when ``quiet`` or when the
    console is not a terminal (pipes and CI keep errors on one line)."""
    if quiet or not console.is_terminal:
        yield _noop, _noop
        return
    from rich.progress import BarColumn, Progress, SpinnerColumn, TaskProgressColumn, TextColumn, TimeElapsedColumn

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                  TimeElapsedColumn(), console=console, transient=False) as prog:
        bar = RunProgress(prog, prog.add_task("starting", total=None), stages)
        yield bar.stage, bar.part
        bar.finish()


def raised_flags(metrics: dict[str, Any]) -> list[str]:
    """Names of the QA flags that are set."""
    return [k for k, v in (metrics.get("qa_flags") or {}).items() if v]


def warning_lines(metrics: dict[str, Any]) -> list[tuple[str, str]]:
    """(style, text) lines for the terminal: raised QA flags (red), then ingest warnings and input notes
    (yellow), from a metrics document of either mode."""
    lines = [("red", f"QA flag {k}: {QA_FLAG_TEXT.get(k, 'raised')}") for k in raised_flags(metrics)]
    prov = metrics.get("provenance") or {}
    lines += [("yellow", f"ingest: {w}") for w in prov.get("warnings") or [] if isinstance(w, str)]
    for name, info in (prov.get("inputs") or {}).items():  # Mode B: per input map
        if isinstance(info, dict):
            lines += [("yellow", f"{name} map: {w}") for w in info.get("warnings") or [] if isinstance(w, str)]
    for rec in (prov.get("input_files") or {}).values():
        if isinstance(rec, dict) and rec.get("note"):
            lines.append(("yellow", rec["note"]))
    for cand in (prov.get("series") or {}).get("excluded_candidates") or []:
        lines.append(("yellow", f"another candidate series was not analysed: {cand}"))
    for key in ("DEFUSE3_eligible", "EXTEND_eligible"):
        if metrics.get(key, False) is None and metrics.get(f"{key}_reason", "").startswith("trial"):
            lines.append(("yellow", f"DEFUSE 3 / EXTEND labels not computed: {metrics[f'{key}_reason']}"))
            break
    return lines


def print_warnings(console: Console, metrics: dict[str, Any]) -> int:
    """Print :func:`warning_lines` under the result table; returns the number of raised QA flags."""
    lines = warning_lines(metrics)
    if lines:
        console.print("[bold]Warnings[/bold]")
    for style, text in lines:
        console.print(f"[{style}]! {escape(text)}[/{style}]", highlight=False, soft_wrap=True)
    return len(raised_flags(metrics))
