"""``graft embed DATA_DIR --out features.npz``: fill the feature cache and write every image's features."""

from __future__ import annotations

from pathlib import Path

import typer

from graft.cli._common import console, launch_if_asked, make_progress
from graft.cli.train import Precision


def embed(
    data_dir: Path = typer.Argument(
        ..., help="Dataset folder: train/ val/ [test/] of class folders, or class folders."
    ),
    out: Path = typer.Option(Path("features.npz"), "--out", "-o", help="Output file: .npz, or .parquet (pyarrow)."),
    backbone: str = typer.Option("efficientnet_lite0", help="Any timm model name."),
    weights: Path | None = typer.Option(None, help="Local weights file for the backbone (.safetensors, .pth)."),
    input_size: str = typer.Option("auto", help="Embedding resolution: auto, native, or pixels (as graft train)."),
    val_fraction: float = typer.Option(0.2, help="Validation share when the folder has no val split."),
    seed: int = typer.Option(0, help="Seed of the split (as graft train)."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    precision: Precision = typer.Option(Precision.auto, help="Backbone precision."),
    batch_size: int | None = typer.Option(None, help="Embedding batch size (default: auto)."),
    workers: int | None = typer.Option(None, help="Decoder processes per process (default: auto)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not read or write the feature cache."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or summary."),
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
            backbone=backbone,
            weights=weights,
            input_size=input_size,
            val_fraction=val_fraction,
            seed=seed,
            device=device,
            precision=precision.value,
            batch_size=batch_size,
            num_workers=workers,
            use_cache=not no_cache,
            progress=prog,
        )
    if quiet or not distributed.is_main():
        return
    per = ", ".join(f"{k} {v}" for k, v in summary["splits"].items())
    console.print(f"features: {summary['out']} ({summary['n']} images x {summary['dim']}; {per})")
    if summary["skipped"]:
        console.print(f"  {len(summary['skipped'])} unreadable file(s) left out, e.g. {summary['skipped'][0]}")
