"""``graft report RUN_DIR``: the self-contained HTML report of a training run."""

from __future__ import annotations

from pathlib import Path

import typer

from graft.cli._common import console


def report(run_dir: Path = typer.Argument(..., help="Run directory written by graft train.")) -> None:
    """Write RUN_DIR/report.html (one offline file, images embedded) and the PNGs in RUN_DIR/report/."""
    from graft.report import write_report

    path = write_report(run_dir)
    console.print(f"report: {path}", highlight=False)
