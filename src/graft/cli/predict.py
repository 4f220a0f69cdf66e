"""``graft predict MODEL PATH...``: top-k labels for files, folders and globs.

MODEL is a model directory, or an exported ``.onnx`` file (then torch is never imported).
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any, List

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
        _write_csv(results)
    else:
        console.print(_table(results))
    if failed and len(failed) == len(results):
        raise typer.Exit(1)


def _write_csv(results: list[dict[str, Any]]) -> None:
    """CSV with a header row; a multi-label model's rows add ``labels`` (its label set, joined with "|")."""
    multi = any("labels" in r for r in results)
    w = csv.writer(sys.stdout)
    w.writerow(["path", "label", "probability", *(["labels"] if multi else []), "top_k", "known", "ood_score", "error"])
    for r in results:  # names printable, as in the table (--json keeps them exact, escaped by JSON)
        tk = ";".join(f"{t['label']}:{t['probability']:.4f}" for t in r.get("top_k", []))
        w.writerow(
            [
                printable(r["path"]),
                printable(r.get("label", "")),
                f"{r['probability']:.6f}" if "probability" in r else "",
                *([printable("|".join(t["label"] for t in r.get("labels", [])))] if multi else []),
                printable(tk),
                r.get("known", ""),
                f"{r['ood_score']:.4f}" if "ood_score" in r else "",
                printable(r.get("error", "")),
            ]
        )


def _table(results: list[dict[str, Any]]) -> Any:
    """The rich table for people: the label (a multi-label model: the label set), then the other top-k labels."""
    from rich.table import Table
    from rich.text import Text

    t = Table(show_header=True)
    t.add_column("image")
    t.add_column("prediction")
    t.add_column("probability", justify="right")
    for r in results:  # names printable before the table is laid out (the console would do it after)
        if "error" in r:
            t.add_row(Text(printable(r["path"])), Text(printable(f"error: {r['error']}"), style="red"), "")
            continue
        if not r.get("known", True):
            label = Text("unknown", style="bold magenta") + Text(
                printable(f" (unlike the training images; best guess {r['best_label']})")
            )
            t.add_row(Text(printable(r["path"])), label, f"{r['probability']:.3f}")
        elif "labels" in r:  # multi-label: every label over its threshold, each with its probability
            labels = r["labels"] or [{"label": "(no label over its threshold)", "probability": None}]
            for i, lab in enumerate(labels):
                p = "" if lab["probability"] is None else f"{lab['probability']:.3f}"
                t.add_row(Text(printable(r["path"])) if i == 0 else "", Text(printable(lab["label"]), style="bold"), p)
        else:
            t.add_row(Text(printable(r["path"])), Text(printable(r["label"])), f"{r['probability']:.3f}")
        shown = {lab["label"] for lab in r["labels"]} if "labels" in r and r.get("known", True) else None
        extras = r["top_k"][1:] if shown is None else [x for x in r["top_k"] if x["label"] not in shown]
        for extra in extras:
            t.add_row("", Text(printable(f"  {extra['label']}")), f"{extra['probability']:.3f}")
    return t
