"""``graft predict MODEL PATH...``: top-k labels for files, folders and globs.

MODEL is a model directory, or an exported ``.onnx`` file (then torch is never imported).
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import List

import typer

from graft.cli._common import console, printable
from graft.cli.options import EMBED, Device


def predict(
    model: Path = typer.Argument(..., help="Model directory (RUN_DIR/model) or an exported .onnx file."),
    paths: List[str] = typer.Argument(..., help="Image files, folders or glob patterns."),
    top_k: int = typer.Option(1, "--top-k", "-k", help="How many labels per image."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line."),
    as_csv: bool = typer.Option(False, "--csv", help="CSV with a header row."),
    device: Device = EMBED.device,
    no_reject: bool = typer.Option(
        False, "--no-reject", help="Give every image a class, even those unlike the training data."
    ),
) -> None:
    """Predict labels; unreadable files are reported and the others still predicted."""
    from graft.predict import open_predictor

    results = open_predictor(model, device=device).predict(paths, top_k=top_k, reject=not no_reject)
    failed = [r for r in results if "error" in r]
    if as_json:
        for r in results:
            print(json.dumps(r, allow_nan=False))  # never invalid JSON: the predictor refuses NaN outputs
    elif as_csv:
        w = csv.writer(sys.stdout)
        w.writerow(["path", "label", "probability", "top_k", "known", "ood_score", "error"])
        for r in results:  # names printable, as in the table (--json keeps them exact, escaped by JSON)
            tk = ";".join(f"{t['label']}:{t['probability']:.4f}" for t in r.get("top_k", []))
            w.writerow(
                [
                    printable(r["path"]),
                    printable(r.get("label", "")),
                    f"{r['probability']:.6f}" if "probability" in r else "",
                    printable(tk),
                    r.get("known", ""),
                    f"{r['ood_score']:.4f}" if "ood_score" in r else "",
                    printable(r.get("error", "")),
                ]
            )
    else:
        from rich.table import Table
        from rich.text import Text

        t = Table(show_header=True)
        t.add_column("image")
        t.add_column("prediction")
        t.add_column("probability", justify="right")
        for r in results:  # names printable before the table is laid out (the console would do it after)
            path = Text(printable(r["path"]))
            if "error" in r:
                t.add_row(path, Text(printable(f"error: {r['error']}"), style="red"), "")
                continue
            if r.get("known", True):
                t.add_row(path, Text(printable(r["label"])), f"{r['probability']:.3f}")
            else:
                label = Text("unknown", style="bold magenta") + Text(
                    printable(f" (unlike the training images; best guess {r['best_label']})")
                )
                t.add_row(path, label, f"{r['probability']:.3f}")
            for extra in r["top_k"][1:]:
                t.add_row("", Text(printable(f"  {extra['label']}")), f"{extra['probability']:.3f}")
        console.print(t)
    if failed and len(failed) == len(results):
        raise typer.Exit(1)
