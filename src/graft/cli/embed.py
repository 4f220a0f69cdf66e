"""``graft embed DATA_DIR --out features.npz``: fill the feature cache and write every image's features."""

from __future__ import annotations

from pathlib import Path

import typer

from graft.backbones.options import BackboneOptions
from graft.cli import options as opt
from graft.cli._common import console, launch_if_asked, make_progress
from graft.data.options import ManifestOptions, SplitOptions
from graft.features.options import EmbedOptions


@opt.with_options(*opt.DATA_OPTIONS)
def embed(
    data_dir: Path = typer.Argument(
        ..., help="Dataset folder: train/ val/ [test/] of class folders, or class folders."
    ),
    out: Path = typer.Option(Path("features.npz"), "--out", "-o", help="Output file: .npz, or .parquet (pyarrow)."),
    quiet: opt.Quiet = False,
    backbone_options: BackboneOptions = opt.BACKBONE,
    split_options: SplitOptions = opt.SPLIT,
    embed_options: EmbedOptions = opt.EMBED,
    manifest_options: ManifestOptions = opt.MANIFEST,
    devices: int = typer.Option(1, help="Processes on this machine, each embedding its share (torchrun)."),
    nnodes: int = typer.Option(1, help="Machines in a multi-machine job (each runs the same command)."),
    node_rank: int = typer.Option(0, help="This machine's number, 0 to --nnodes - 1."),
    rdzv_endpoint: str | None = typer.Option(None, help="HOST:PORT of machine 0 (torchrun rendezvous)."),
) -> None:
    """Embed DATA_DIR with the frozen backbone into the feature cache and write the features to --out."""
    from graft import distributed
    from graft.embed import embed_folder

    if launch_if_asked(devices, nnodes, node_rank, rdzv_endpoint, device=embed_options.device):
        return
    with make_progress(quiet) as prog:
        summary = embed_folder(
            data_dir,
            out,
            backbone=backbone_options,
            split=split_options,
            embed=embed_options,
            manifest=manifest_options,
            progress=prog,
        )
    if quiet or not distributed.is_main():
        return
    per = ", ".join(f"{k} {v}" for k, v in summary["splits"].items())
    console.print(f"features: {summary['out']} ({summary['n']} images x {summary['dim']}; {per})")
    if summary["skipped"]:
        console.print(f"  {len(summary['skipped'])} unreadable file(s) left out, e.g. {summary['skipped'][0]}")
