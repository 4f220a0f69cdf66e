"""``graft export MODEL --format onnx --out FILE``: a self-contained ONNX file, parity-checked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List

import typer
from rich.text import Text

from graft.cli._common import console, err_console
from graft.cli.options import Quiet


def export(
    model: Path = typer.Argument(..., help="Model directory (RUN_DIR/model) or run directory."),
    out: Path = typer.Option(..., "--out", "-o", help="The .onnx file to write."),
    fmt: str = typer.Option("onnx", "--format", "-f", help="Export format (onnx)."),
    quantize: str | None = typer.Option(
        None, "--quantize", help="int8: quantise (calibrated on training images) and report the accuracy drop."
    ),
    check_images: List[Path] | None = typer.Option(
        None, "--check-images", help="Image file/folder for the parity check (repeatable; default: training data)."
    ),
    opset: int = typer.Option(17, help="ONNX opset."),
    tolerance: float = typer.Option(1e-3, help="Largest accepted |logit difference| between ONNX Runtime and PyTorch."),
    as_json: bool = typer.Option(False, "--json", help="Print the export report as JSON."),
    quiet: Quiet = False,
) -> None:
    """Export the full classifier (preprocessing and class names inside) and verify it against PyTorch."""
    from graft.export import export_onnx
    from graft.validation import check_choice

    check_choice("--format", fmt.lower(), ("onnx",), "graft export")
    say = None if (quiet or as_json) else (lambda m: err_console.print(Text(f"{m}…", style="dim")))
    report = export_onnx(
        model,
        out,
        quantize=quantize,
        check_images=[str(p) for p in check_images] if check_images else None,
        opset=opset,
        tolerance=tolerance,
        progress=say,
    )
    if as_json:
        print(json.dumps(report.to_dict()))
    else:
        for line in report.lines():
            console.print(line, highlight=False)
