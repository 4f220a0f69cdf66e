"""``graft evaluate MODEL DATA``: metrics on a labelled folder or manifest."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from graft.cli import options as opt
from graft.cli._common import console, make_progress
from graft.cli.options import EMBED, Device, Quiet
from graft.data.options import ManifestOptions


@opt.with_options(opt.MANIFEST_OPTIONS)
def evaluate(
    model: Path = typer.Argument(..., help="Model directory (RUN_DIR/model), run directory or exported .onnx file."),
    data_dir: Path = typer.Argument(..., help="Labelled dataset folder, or a manifest (CSV, TSV, JSONL, Parquet)."),
    split: str | None = typer.Option(
        None,
        help="Split folder to evaluate (default: test/ if present, else val/; a folder without them: the part "
        "held out when the model was trained on it, else every image; a manifest: its test rows, else val rows).",
    ),
    top_k: int = typer.Option(5, help="k of the top-k accuracy."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (for machines)."),
    device: Device = EMBED.device,
    quiet: Quiet = False,
    manifest_options: ManifestOptions = opt.MANIFEST,
) -> None:
    """Accuracy, top-k, per-class precision/recall/F1 and the confusion matrix (multi-label: mAP, F1, subset
    accuracy, Hamming loss and per-label figures at the model's thresholds)."""
    from graft.metrics import format_metrics_table
    from graft.predict import open_predictor
    from graft.predict.evaluate import evaluate_predictor

    predictor = open_predictor(model, device=device)
    with make_progress(quiet or as_json) as prog:
        m = evaluate_predictor(predictor, data_dir, split=split, top_k=top_k, warn=prog.warn, manifest=manifest_options)
    m.pop("probs", None)
    m.pop("labels", None)
    m.pop("paths", None)
    if as_json:
        print(json.dumps(m, default=float, allow_nan=False))  # never invalid JSON: predictors refuse NaN
        return
    console.print(f"scored: {m['scored']['images']} images, {m['scored']['description']}", highlight=False)
    table = _multilabel_table(m) if m.get("multi_label") else format_metrics_table(m)
    console.print(table, highlight=False)
    for s in m["skipped"]:
        console.print(f"skipped {s['path']}: {s['reason']}", highlight=False)


def _multilabel_table(m: dict[str, Any]) -> str:
    """Plain-text multi-label summary and per-label table (precision, recall, F1 at the threshold, AP)."""
    per = m["per_class"]
    w = max(9, *(len(c) for c in per))
    lines = [
        f"mAP {m['map_macro']:.4f} (micro {m['map_micro']:.4f})   F1 micro {m['f1_micro']:.4f}   "
        f"F1 macro {m['f1_macro']:.4f}   n={m['n']}",
        f"subset accuracy {m['subset_accuracy']:.4f}   Hamming loss {m['hamming_loss']:.4f}   "
        f"log loss {m['log_loss']:.4f}",
        "",
        f"{'label':<{w}}  threshold  precision  recall     f1      AP  support",
    ]
    for c, t in zip(per, m["thresholds"]):
        pc = per[c]
        ap = "    -" if pc["ap"] is None else f"{pc['ap']:.3f}"
        lines.append(
            f"{c:<{w}}  {t:9.3f}  {pc['precision']:9.3f}  {pc['recall']:6.3f}  {pc['f1']:5.3f}  {ap:>6}  "
            f"{pc['support']:7d}"
        )
    return "\n".join(lines)
