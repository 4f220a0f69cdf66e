"""``graft embed DATA_DIR --out features.npz``: fill the feature cache and write every image's features."""

from __future__ import annotations

from pathlib import Path

import typer

from graft.cli._common import console, launch_if_asked, make_progress
from graft.cli.options import (
    BACKBONE,
    EMBED,
    SPLIT,
    Backbone,
    BatchSize,
    Device,
    InputSize,
    NoCache,
    Precision,
    Quiet,
    Seed,
    ValFraction,
    Weights,
    Workers,
    backbone_options,
    embed_options,
    split_options,
)


def embed(
    data_dir: Path = typer.Argument(
        ..., help="Dataset folder: train/ val/ [test/] of class folders, or class folders."
    ),
    out: Path = typer.Option(Path("features.npz"), "--out", "-o", help="Output file: .npz, or .parquet (pyarrow)."),
    backbone: Backbone = BACKBONE.backbone,
    weights: Weights = None,
    input_size: InputSize = str(BACKBONE.input_size),
    val_fraction: ValFraction = SPLIT.val_fraction,
    seed: Seed = SPLIT.seed,
    device: Device = EMBED.device,
    precision: Precision = EMBED.precision,
    batch_size: BatchSize = EMBED.batch_size,
    workers: Workers = EMBED.num_workers,
    no_cache: NoCache = not EMBED.use_cache,
    quiet: Quiet = False,
    devices: int = typer.Option(1, help="Processes on this machine, each embedding its share (torchrun)."),
    nnodes: int = typer.Option(1, help="Machines in a multi-machine job (each runs the same command)."),
    node_rank: int = typer.Option(0, help="This machine's number, 0 to --nnodes - 1."),
    rdzv_endpoint: str | None = typer.Option(None, help="HOST:PORT of machine 0 (torchrun rendezvous)."),
) -> None:
    """Embed DATA_DIR with the frozen backbone into the feature cache and write the features to --out."""
    from graft import distributed
    from graft.embed import embed_folder

    if launch_if_asked(devices, nnodes, node_rank, rdzv_endpoint, device=device):
        return
    with make_progress(quiet) as prog:
        summary = embed_folder(
            data_dir,
            out,
            backbone=backbone_options(backbone, weights, input_size),
            split=split_options(val_fraction, SPLIT.test_fraction, seed),
            embed=embed_options(device, precision, batch_size, workers, no_cache, strict=False),
            progress=prog,
        )
    if quiet or not distributed.is_main():
        return
    per = ", ".join(f"{k} {v}" for k, v in summary["splits"].items())
    console.print(f"features: {summary['out']} ({summary['n']} images x {summary['dim']}; {per})")
    if summary["skipped"]:
        console.print(f"  {len(summary['skipped'])} unreadable file(s) left out, e.g. {summary['skipped'][0]}")
