"""The epilogs of the command line's ``--help``: what each exit code means and one example per main command.

Kept apart from :mod:`ctperf.cli` so the commands registered from other modules (:mod:`ctperf.apps.cohort_cli`,
the node) show the same text without importing the CLI module that imports them.  Plain text: typer renders the
epilog as rich markup, so no square brackets here; paragraphs are separated by a blank line.
"""

from __future__ import annotations

#: Commands with ``--fail-on-qa`` (run, maps, recompute) and the top level.
EXIT_CODES = ("Exit codes: 0 success; 2 bad input or usage (one-line error); 3 a QA flag was raised and "
              "--fail-on-qa was given; 4 internal error or out of memory; 130 interrupted (Ctrl-C).")
#: Commands without ``--fail-on-qa``.
EXIT_CODES_NO_QA = ("Exit codes: 0 success; 2 bad input or usage (one-line error); 4 internal error or out of "
                    "memory; 130 interrupted (Ctrl-C).")
#: ``ctperf batch``: a failing study does not stop the others, and is reported by exit code 1.
EXIT_CODES_BATCH = ("Exit codes: 0 every study succeeded or was already done; 1 a study failed (the others ran); "
                    "2 bad input or usage (one-line error); 4 internal error; 130 interrupted (Ctrl-C).")
#: The servers (``gui``, ``node``) run until stopped.
EXIT_CODES_SERVER = "Runs until Ctrl-C. Exit codes: 2 bad input or usage (one-line error); 4 internal error."

#: One example command line per main command.
EXAMPLES: dict[str, str] = {
    "run": "ctperf run --dicom_dir STUDY/ --out_dir results/",
    "demo": "ctperf demo out/",
    "maps": "ctperf maps --mip mip.png --tmax tmax.nii.gz --cbv cbv.nii.gz --rcbf rcbf.nii.gz "
            "--aif_csv aif.csv --vof_csv vof.csv --out_dir out/",
    "recompute": "ctperf recompute results/ --config new_thresholds.toml --out_dir results_t8/",
    "batch": "ctperf batch --input_root cohort/ --out_root results/",
    "aggregate": "ctperf aggregate --input_dir results/ --output summary.csv",
}


def epilog(command: str, exit_codes: str = EXIT_CODES_NO_QA) -> str:
    """The ``--help`` epilog of ``command``: its example (when it has one), then ``exit_codes``."""
    example = EXAMPLES.get(command)
    return f"Example: {example}\n\n{exit_codes}" if example else exit_codes
