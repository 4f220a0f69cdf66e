"""``graft doctor DATA_DIR``: what is wrong with a dataset, before training on it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table
from rich.text import Text

from graft.backbones.options import BackboneOptions
from graft.cli import options as opt
from graft.cli._common import console, make_progress, printable
from graft.data.options import ManifestOptions, SplitOptions
from graft.features.options import EmbedOptions

if TYPE_CHECKING:
    from graft.doctor import DoctorReport

__all__ = ["doctor"]

_STYLE = {"corrupt": "red", "leak": "red", "duplicate": "yellow", "label": "yellow", "near_duplicate": "yellow"}


@opt.with_options(*opt.DATA_OPTIONS)
def doctor(
    data_dir: Path = typer.Argument(..., help="Dataset folder, as for graft train."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (for machines)."),
    html: Path | None = typer.Option(None, "--html", help="Also write a self-contained HTML page with thumbnails."),
    fix_plan: Path | None = typer.Option(None, "--fix-plan", help="Also write a CSV of suggested actions."),
    limit: int = typer.Option(40, help="Issues listed in the table (all are in --json, --html, --fix-plan)."),
    checks: str | None = typer.Option(
        None, help="Comma-separated kinds to look for, e.g. leak,duplicate,near_duplicate (default: all)."
    ),
    backbone_options: BackboneOptions = opt.BACKBONE,
    split_options: SplitOptions = opt.SPLIT,
    embed_options: EmbedOptions = opt.EMBED,
    manifest_options: ManifestOptions = opt.MANIFEST,
    quiet: opt.Quiet = False,
) -> None:
    """Corrupt files, duplicates, train/val leaks, likely label errors, outliers, imbalance, small images."""
    from graft.doctor import check_output, doctor, write_fix_plan, write_html

    html = check_output(data_dir, html, "--html") if html else None
    fix_plan = check_output(data_dir, fix_plan, "--fix-plan") if fix_plan else None
    with make_progress(quiet or as_json) as prog:
        report = doctor(
            data_dir,
            backbone=backbone_options,
            split=split_options,
            embed=embed_options,
            manifest=manifest_options,
            progress=prog,
            checks=[c.strip() for c in checks.split(",") if c.strip()] if checks is not None else None,
        )
    if html:
        write_html(report, html)
    if fix_plan:
        write_fix_plan(report, fix_plan)
    if as_json:
        print(json.dumps(report.to_dict()))
        return
    render(report, limit)
    for label, path in (("html", html), ("fix plan", fix_plan)):
        if path:
            console.print(Text(f"{label}: ") + Text(str(path)))


def _shown(path: str, root: str) -> str:
    rel = os.path.relpath(path, root) if os.path.isabs(path) == os.path.isabs(root) else path
    return path if rel.startswith("..") else rel


def render(report: DoctorReport, limit: int) -> None:
    """The issues as a table, most severe first, and the count per kind."""
    counts = {k: n for k, n in report.counts().items() if n}
    if not report.issues:
        console.print(Text(f"{report.root}: no issues in {report.n_images} images", style="green"))
        return
    t = Table(title=Text(f"graft doctor {report.root}: {len(report.issues)} issues in {report.n_images} images"))
    for name, justify in (
        ("#", "right"),
        ("kind", "left"),
        ("score", "right"),
        ("file(s)", "left"),
        ("detail", "left"),
    ):
        t.add_column(name, justify=justify)  # type: ignore[arg-type]
    for n, issue in enumerate(report.issues[: max(limit, 0)], 1):
        files = [_shown(p, report.root) for p in issue.paths[:3]]
        more = f"\n(+{len(issue.paths) - 3} more)" if len(issue.paths) > 3 else ""
        t.add_row(
            str(n),
            Text(issue.kind, style=_STYLE.get(issue.kind, "")),
            f"{issue.score:.3f}",
            Text(printable("\n".join(files) + more)),
            Text(printable(issue.detail)),
        )
    console.print(t)
    if len(report.issues) > limit:
        console.print(Text(f"... and {len(report.issues) - limit} more (see --json, --html or --fix-plan)"))
    console.print(Text("issues: " + ", ".join(f"{k} {n}" for k, n in counts.items())))
