"""``graft demo``: train on the bundled sign-digits sample, then predict one image."""

from __future__ import annotations

from pathlib import Path

import typer

from graft.cli._common import console, make_progress
from graft.cli.options import Quiet


def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="Run directory."), quiet: Quiet = False
) -> None:
    """Train on 100 bundled hand-sign images (10 classes), then predict one of them."""
    from graft.cli.train import render_summary
    from graft.demo import demo_dataset_path
    from graft.report import write_report
    from graft.run import run_demo

    console.print(f"demo dataset: {demo_dataset_path()} (10 classes x 10 images, Apache-2.0)", highlight=False)
    with make_progress(quiet) as prog:
        metrics, result = run_demo(out, progress=prog)
    report = write_report(out)
    if not quiet:
        console.print(f"report: {report}", highlight=False)
        render_summary(out, metrics)
    console.print(
        f"predict {Path(result['path']).name} (a hand showing 7): {result['label']} ({result['probability']:.2f}); "
        f"next: graft predict {out / 'model'} YOUR_IMAGE.jpg",
        highlight=False,
    )
