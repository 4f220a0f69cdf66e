"""``graft evaluate MODEL DATA_DIR``: metrics on a labelled folder."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from graft.cli._common import console, make_progress
from graft.cli.options import EMBED, Device, Quiet


def evaluate(
    model: Path = typer.Argument(..., help="Model directory (RUN_DIR/model), run directory or exported .onnx file."),
    data_dir: Path = typer.Argument(..., help="Labelled dataset folder."),
    split: str | None = typer.Option(
        None,
        help="Split folder to evaluate (default: test/ if present, else val/; a folder without them: the part "
        "held out when the model was trained on it, else every image).",
    ),
    top_k: int = typer.Option(5, help="k of the top-k accuracy."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (for machines)."),
    device: Device = EMBED.device,
    quiet: Quiet = False,
) -> None:
    """Accuracy, top-k, per-class precision/recall/F1 and the confusion matrix."""
    from graft.metrics import format_metrics_table
    from graft.predict import open_predictor
    from graft.predict.evaluate import evaluate_predictor

    predictor = open_predictor(model, device=device)
    with make_progress(quiet or as_json) as prog:
        m = evaluate_predictor(predictor, data_dir, split=split, top_k=top_k, warn=prog.warn)
    m.pop("probs", None)
    m.pop("labels", None)
    m.pop("paths", None)
    if as_json:
        print(json.dumps(m, default=float, allow_nan=False))  # never invalid JSON: predictors refuse NaN
        return
    console.print(f"scored: {m['scored']['images']} images, {m['scored']['description']}", highlight=False)
    console.print(format_metrics_table(m), highlight=False)
    for s in m["skipped"]:
        console.print(f"skipped {s['path']}: {s['reason']}", highlight=False)
