"""``graft curve DATA_DIR``: validation accuracy against training images per class."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.table import Table
from rich.text import Text

from graft.backbones.options import BackboneOptions
from graft.cli import options as opt
from graft.cli._common import console, make_progress
from graft.data.options import ManifestOptions, SplitOptions
from graft.features.options import EmbedOptions

__all__ = ["curve", "parse_sizes"]


def parse_sizes(text: str | None) -> list[int] | None:
    """``"1,5,25"`` -> [1, 5, 25]; None stays None (the default sizes)."""
    from graft.validation import invalid_parameter

    if text is None:
        return None
    try:
        sizes = [int(s) for s in text.replace(" ", "").split(",") if s]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise invalid_parameter("sizes", "graft curve", "comma-separated ints >= 1, such as 1,5,25", text)
    return sizes


@opt.with_options(*opt.DATA_OPTIONS)
def curve(
    data_dir: Path = typer.Argument(..., help="Dataset folder, as for graft train."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (for machines)."),
    png: Path | None = typer.Option(None, "--png", help="Also save the figure to this PNG file."),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Run directory: write curve.json and report/curve.png there for graft report."
    ),
    seeds: int = typer.Option(5, help="Random subsets per size (one at the full size)."),
    sizes: str | None = typer.Option(None, help="Images per class, e.g. 1,5,25 (default 1,2,5,10,20,50,... all)."),
    jobs: int | None = typer.Option(None, help="Head fits run at once (default: the CPU count)."),
    quiet: opt.Quiet = False,
    backbone_options: BackboneOptions = opt.BACKBONE,
    split_options: SplitOptions = opt.SPLIT,
    embed_options: EmbedOptions = opt.EMBED,
    manifest_options: ManifestOptions = opt.MANIFEST,
) -> None:
    """Would more labels help? Accuracy against training images per class, from cached features."""
    from graft.curve import CurveOptions, check_outputs, learning_curve, save_curve, write_curve_png

    check_outputs(data_dir, out=out, png=png)
    with make_progress(quiet or as_json) as prog:
        result = learning_curve(
            data_dir,
            backbone=backbone_options,
            split=split_options,
            embed=embed_options,
            manifest=manifest_options,
            curve=CurveOptions(seeds=seeds, sizes=parse_sizes(sizes), jobs=jobs),
            progress=prog,
        )
    written = [write_curve_png(result, png)] if png else []
    if out:
        written += list(save_curve(result, out))
    if as_json:
        print(json.dumps(result.to_dict()))
        return
    render(result, written, out)


def render(result: Any, written: list[Path], out: Path | None) -> None:
    """The table of points, the verdict, and where the files went."""
    multi = getattr(result, "metric", "accuracy") == "map"
    kind, score = ("labels", "val mAP") if multi else ("classes", "val accuracy")
    t = Table(title=f"learning curve: {len(result.classes)} {kind}, {result.n_val} validation images")
    for name in (f"images per {kind[:-1]}", "training images", "seeds", score, "sd"):
        t.add_column(name, justify="right")
    last = len(result.sizes) - 1
    for i, (k, n, accs, m, s) in enumerate(
        zip(result.sizes, result.n_images, result.per_seed, result.mean, result.std)
    ):
        t.add_row(f"all ({k} max)" if i == last else str(k), str(n), str(len(accs)), f"{m:.4f}", f"{s:.4f}")
    console.print(t)
    console.print(Text(result.verdict, style="bold"))
    secs = result.seconds
    console.print(f"scan and embed {secs.get('scan_and_embed', 0):.1f} s, head fits {secs.get('fits', 0):.1f} s")
    for path in written:
        console.print(Text(f"wrote {path}"))
    if out:
        console.print(Text(f"run `graft report {out}` to add the curve to the report"))
