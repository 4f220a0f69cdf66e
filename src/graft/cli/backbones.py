"""``graft backbones``: what is usable offline right now."""

from __future__ import annotations

import json

import typer

from graft.cli._common import console


def backbones(as_json: bool = typer.Option(False, "--json", help="JSON list.")) -> None:
    """List backbones whose weights are available offline (packages, $GRAFT_HOME/weights)."""
    from graft.backbones import list_offline_backbones, weights_dir

    items = list_offline_backbones()
    if as_json:
        print(json.dumps(items, default=str))
        return
    from rich.table import Table

    t = Table(title="backbones usable offline")
    for col in ("name", "architecture", "input_size", "source", "size_mb"):
        t.add_column(col)
    for it in items:
        t.add_row(*(str(it.get(k, "")) for k in ("name", "architecture", "input_size", "source", "size_mb")))
    console.print(t)
    console.print(
        f"Any other timm model works online by name, or offline from --weights FILE or {weights_dir()}/<name>.safetensors",
        highlight=False,
    )
