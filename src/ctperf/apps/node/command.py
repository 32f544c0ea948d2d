"""`ctperf node`: the command-line entry of the DICOM node (registered in :mod:`ctperf.cli`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer


def node_cmd(
    out: Path = typer.Option(..., "--out", help="Node folder: spool/, results/, node.sqlite, node.log."),
    ae_title: str = typer.Option("CTPERF", "--ae-title", help="This node's AE title."),
    port: int = typer.Option(11112, "--port", help="TCP port to listen on."),
    host: str = typer.Option("0.0.0.0", "--host", help="Address to listen on (127.0.0.1: this machine only)."),
    forward: str | None = typer.Option(None, "--forward", help="Send results to AET@HOST:PORT (C-STORE)."),
    allow: str | None = typer.Option(None, "--allow", help="Comma-separated calling AE titles allowed "
                                        "(default: any)."),
    quiet_seconds: float = typer.Option(30.0, "--quiet-seconds", help="A study is complete after this many "
                                        "seconds without a new instance."),
    retries: int = typer.Option(3, "--retries", help="Send attempts before the results are parked."),
    retry_delay: float = typer.Option(5.0, "--retry-delay", help="Seconds before the first retry (doubles)."),
    config: Path | None = typer.Option(None, "--config", help="TOML/JSON/YAML analysis settings."),
    status: bool = typer.Option(False, "--status", help="Print the queue of the node in --out and exit."),
    as_json: bool = typer.Option(False, "--json", help="With --status: strict JSON."),
):
    """DICOM node: receive studies (C-STORE), analyse each on arrival (Mode A + DICOM outputs), forward results."""
    from ctperf.cli import _fail
    from ctperf.cli import out as console

    try:
        from ctperf.apps.node.server import node_status, run_node
        from ctperf.apps.node.settings import NodeSettings, parse_forward

        if status:
            info = node_status(out)
        else:
            from ctperf.config import Config

            settings = NodeSettings(
                out=Path(out), ae_title=ae_title, port=port, host=host,
                forward=parse_forward(forward) if forward else None,
                allow=tuple(a.strip() for a in allow.split(",") if a.strip()) if allow else (),
                quiet_s=quiet_seconds, retries=retries, retry_delay_s=retry_delay)
            run_node(settings, Config.load(config))
            return
    except (Exception, MemoryError) as exc:  # noqa: BLE001
        _fail(exc)
        return
    if as_json:
        typer.echo(json.dumps(info, indent=2, allow_nan=False))
        return
    from rich.table import Table

    table = Table(title=f"ctperf node {out}: {info['instances']} instances, {info['studies']} studies "
                        f"{info['by_state']}")
    for col in ("study", "state", "instances", "analyses", "send attempts", "reason"):
        table.add_column(col)
    for s in info["study_list"]:
        table.add_row(s["key"], s["state"], str(s["instances"]), f"{s['analyses_completed']}/{s['analyses_started']}",
                      str(s["send_attempts"]), s["reason"] or "")
    console.print(table)
