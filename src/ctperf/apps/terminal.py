"""What a command prints on the terminal besides its result table: one progress bar over the whole run, the
reasons of missing values written once under the table, and the warnings (raised QA flags with the study's
values, ingest warnings, notes about the inputs) listed in colour under it."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from rich.console import Console
from rich.markup import escape

from ctperf.core.qa_text import QA_FLAG_TEXT, flag_text, reason_notes  # noqa: F401  (QA_FLAG_TEXT: re-exported)

#: Rough share of the run time of each stage (Mode A on a 320-file study), so one bar advances evenly.
#: Stages not listed count as 1.
STAGE_WEIGHTS: dict[str, float] = {
    "load": 1.5, "preprocess": 2.0, "denoise": 2.5, "hemispheres": 0.7, "aif": 0.4, "deconvolution": 2.0,
    "maps": 0.2, "regularise": 0.5, "rcbf": 0.2, "masks": 0.2, "indices": 0.1, "write": 4.0,
    "generating phantom": 3.0, "writing DICOM": 4.0, "writing truth": 0.5,
}
#: The stages of each command, in the order they are announced (the bar's length, fixed for the run): the
#: pipeline's (load, masks, indices, write) around the engine's (``ctperf.engine.compute_perfusion``).
MODE_A_STAGES = ("load", "preprocess", "denoise", "hemispheres", "aif", "deconvolution", "maps", "regularise",
                 "rcbf", "masks", "indices", "write")
PHANTOM_STAGES = ("generating phantom", "writing DICOM", "writing truth")


class RunProgress:
    """One rich progress bar over a whole run: "[i/n] stage" and a percentage, advanced by stage name and, within a
    stage, by a fraction (e.g. DICOM files read).

    The stages and so the total are fixed when the bar is made, and neither the counter nor the percentage ever
    goes back, whatever order the stages are announced in: the engine announces some stages late (the midline and
    the AIF run in a side thread beside the denoising and are announced when it ends), a stage may be skipped, and
    a name the list does not know may come from a newer engine.  So:

    - ``stage(name)`` of a listed stage after the current one moves the counter to it; the stages before it count
      as done (a skipped stage simply is done);
    - a listed stage announced after a later one, and a name not in the list, are shown under the current counter
      and move nothing (the bar never lengthens mid-run);
    - ``part(done, total)`` moves within the current stage, never back.

    Calls may come from any thread (a lock keeps each update whole).
    """

    def __init__(self, progress, task, stages: tuple[str, ...]):
        self._prog, self._task = progress, task
        self._stages = tuple(stages)
        weights = [STAGE_WEIGHTS.get(s, 1.0) for s in self._stages]
        self._starts = [sum(weights[:i]) for i in range(len(weights))]  # bar position where each stage begins
        self._weights = weights
        self._total = float(sum(weights))
        self._index = -1  # the furthest listed stage announced so far
        self._completed = 0.0  # never decreases
        self._lock = threading.Lock()
        # a single-stage command (Mode B, recompute) has nothing to count: the bar pulses instead of sitting at 0 %
        self._prog.update(task, total=self._total if len(self._stages) > 1 else None, completed=0)

    def _counter(self) -> str:
        return f"[{max(self._index, 0) + 1}/{len(self._stages)}]"

    def _advance(self, completed: float, description: str) -> None:
        self._completed = min(max(self._completed, completed), self._total)
        self._prog.update(self._task, completed=self._completed, description=description)

    def stage(self, name: str) -> None:
        """Announce that stage ``name`` starts (see the class docstring for names out of order or not listed)."""
        with self._lock:
            i = self._stages.index(name) if name in self._stages else -1
            if i > self._index:
                self._index = i
            self._advance(self._starts[i] if i >= 0 else self._completed, f"{self._counter()} {name}")

    def part(self, done: int, total: int) -> None:
        """``done`` of ``total`` items of the current stage are finished (the bar moves within the stage)."""
        if total <= 0:
            return
        with self._lock:
            if self._index < 0:
                return
            i = self._index
            self._advance(self._starts[i] + self._weights[i] * min(done, total) / total,
                          f"{self._counter()} {self._stages[i]} {done}/{total}")

    def finish(self) -> None:
        """The run ended: a full bar."""
        with self._lock:
            self._completed = self._total
            self._prog.update(self._task, total=self._total, completed=self._total, description="done")


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
    (yellow), from a metrics document of either mode.  A flag's meaning shows the study's value beside each QA
    value it names ("Tmax uncertain by 0.72 s (qa_values.tmax_dispersion_sd_s)"; :func:`ctperf.core.qa_text.
    with_values`): the reader of the terminal has no metrics.json open."""
    values = metrics.get("qa_values") if isinstance(metrics.get("qa_values"), dict) else None
    lines = [("red", f"QA flag {k}: {flag_text(k, values)}") for k in raised_flags(metrics)]
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


def missing_value_cells(metrics: dict[str, Any], keys) -> tuple[dict[str, str], list[str]]:
    """The result table's cell of each null metric among ``keys`` (those present in ``metrics``), and the notes to
    print under the table.

    A reason shared by several metrics is written once, as a note: a study without a usable bolus withholds every
    lesion index for one long reason, which would otherwise fill the table 14 times.  The shared reasons are marked
    and noted as in the figures' legends (:func:`ctperf.core.qa_text.reason_notes`); a reason of a single metric
    stays in its cell, "n/a (<reason>)".
    """
    reasons = {k: str(metrics.get(f"{k}_reason") or "undefined") for k in keys
               if k in metrics and metrics[k] is None}
    counts: dict[str, int] = {}
    for why in reasons.values():
        counts[why] = counts.get(why, 0) + 1
    shared = [why for why in dict.fromkeys(reasons.values()) if counts[why] > 1]
    marks, notes = reason_notes(shared)
    cells = {key: "n/a" + marks[shared.index(why)] if why in shared else f"n/a ({why})"
             for key, why in reasons.items()}
    return cells, notes
