"""The `ctperf` command line (placeholder; subcommands are added as capabilities land)."""

from __future__ import annotations

import typer

from ctperf import DISCLAIMER, __version__

app = typer.Typer(add_completion=False, help=f"ctperf: CT perfusion analysis. {DISCLAIMER}")


def _version(value: bool):
    if value:
        typer.echo(f"ctperf {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show version.")):
    pass


def main() -> None:
    app()
