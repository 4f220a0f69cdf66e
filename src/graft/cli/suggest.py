"""``graft suggest [MODEL] UNLABELED_DIR``: which images to label next."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, List

import typer
from rich.table import Table
from rich.text import Text

from graft.cli import options as opt
from graft.cli._common import console
from graft.features.options import EmbedOptions

__all__ = ["suggest"]


@opt.with_options(opt.EMBED_OPTIONS)
def suggest(
    paths: List[Path] = typer.Argument(
        ..., help="[MODEL] UNLABELED_DIR: a model folder (RUN_DIR/model) and the unlabelled images, or only the images."
    ),
    n: int = typer.Option(50, "--n", "-n", help="How many images to suggest."),
    strategy: str = typer.Option("diverse", help="With a model: diverse (default), margin or random."),
    labeled: List[Path] = typer.Option([], "--labeled", help="Labelled folder or manifest to leave out (repeatable)."),
    near_copy_cos: float = typer.Option(0.95, help="Centred feature cosine from which an image counts as a copy."),
    seed: int = typer.Option(0, help="Seed of the clustering (same seed, same suggestions)."),
    backbone: str | None = typer.Option(None, help="Cold start backbone (default efficientnet_lite0)."),
    weights: Path | None = typer.Option(None, help="Local weights file of --backbone."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (for machines)."),
    csv: Path | None = typer.Option(None, "--csv", help="Write a manifest (path, empty label, reason...) here."),
    html: Path | None = typer.Option(None, "--html", help="Write a self-contained HTML page with thumbnails here."),
    embed_options: EmbedOptions = opt.EMBED,
) -> None:
    """Rank unlabelled images by how much labelling them would help (no MODEL: a diverse, typical first batch)."""
    from graft.backbones.options import BackboneOptions
    from graft.suggest import SuggestOptions, write_csv, write_html
    from graft.suggest import suggest as run
    from graft.validation import invalid_parameter

    if len(paths) not in (1, 2):
        raise invalid_parameter("paths", "graft suggest", "[MODEL] UNLABELED_DIR (one or two paths)", len(paths))
    model, folder = (paths[0], paths[1]) if len(paths) == 2 else (None, paths[0])
    bb = BackboneOptions(backbone, str(weights) if weights else None) if backbone else None
    options = SuggestOptions(n, strategy, seed, tuple(labeled), near_copy_cos, bb, embed_options)
    result = run(model, folder, options)
    written = [w(result, p) for w, p in ((write_csv, csv), (write_html, html)) if p is not None]
    if as_json:
        print(json.dumps(result.to_dict()))
        return
    # the model's training images are left out from the model alone (where it keeps their features)
    seen = "validated on" if "model_training_images" in result.counts else "trained or validated on"
    note = f"no --labeled: images the model was {seen} may be among these; pass its labels (folder or manifest)"
    render(result, written, note if model is not None and not labeled and result.rows else None)


def render(result: Any, written: list[Path], note: str | None = None) -> None:
    """The ranked table, what was left out, a note, and the files written."""
    if result.rows:
        t = Table(title=f"label these next ({result.method})")
        for name in ("#", "image", "reason") + (("guess",) if result.classes else ()):
            t.add_column(name, overflow="fold")
        for r in result.rows:
            t.add_row(str(r["rank"]), r["relpath"], r["reason"], *([str(r.get("guess", ""))] if result.classes else []))
        console.print(t)
    else:
        console.print(Text("nothing to suggest: no image is left to label"))
    c = result.counts
    left = result.left_out()
    console.print(
        Text(
            f"{c.get('images', 0)} images, {c.get('candidates', 0)} candidates"
            + (f"; left out: {left}" if left else "")
        )
    )
    u = result.unknown
    if u is not None and c.get("candidates"):
        usual = (
            "" if u["expected_share"] is None else f"; about {u['expected_share']:.0%} of images like its training set"
        )
        console.print(Text(f"unknown to the model: {u['images']} ({u['share']:.0%}{usual})"))
    if note:
        console.print(Text(note))
    for p in written:
        console.print(Text(f"wrote {p}"))
