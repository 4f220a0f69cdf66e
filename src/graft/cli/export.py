"""``graft export MODEL --format F|all [--int8] [--out PATH]``: each format verified against PyTorch."""

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
    out: Path | None = typer.Option(
        None, "--out", "-o", help="File to write (one format) or folder (default: export/ beside the model)."
    ),
    fmt: str = typer.Option(
        "onnx", "--format", "-f", help="onnx, litert, coreml, executorch, openvino, web, or all (each it can write)."
    ),
    int8: bool = typer.Option(
        False, "--int8", help="Quantise (calibrated on training images); report the accuracy change."
    ),
    quantize: str | None = typer.Option(None, "--quantize", help="int8: the same as --int8 (kept for older scripts)."),
    check: List[Path] | None = typer.Option(
        None,
        "--check",
        "--check-images",
        help="Image file/folder to verify on (repeatable; default: validation images).",
    ),
    opset: int = typer.Option(17, help="ONNX opset (--format onnx)."),
    tolerance: float | None = typer.Option(
        None, help="Largest accepted difference from PyTorch (onnx: |logit|, 1e-3; others: |probability|, 1e-3)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the export report as JSON."),
    quiet: Quiet = False,
) -> None:
    """Export the classifier (preprocessing and class names inside) and verify it against PyTorch."""
    from graft.export import ExportOptions, export_formats, export_onnx
    from graft.export.job import DEFAULT_PROB_TOLERANCE
    from graft.export.run import onnx_destination
    from graft.validation import check_choice

    if quantize is not None:
        check_choice("--quantize", quantize, ("int8",), "graft export")
    int8 = int8 or quantize == "int8"
    say = None if (quiet or as_json) else (lambda m: err_console.print(Text(f"{m}…", style="dim")))
    checks = [str(p) for p in check] if check else None
    if fmt.lower() == "onnx":  # today's path: logit parity on 8 images, int8 with its val report
        report = export_onnx(
            model,
            onnx_destination(model, out, int8),
            quantize="int8" if int8 else None,
            check_images=checks,
            opset=opset,
            tolerance=1e-3 if tolerance is None else tolerance,
            progress=say,
        )
        lines, doc = report.lines(), report.to_dict()
    else:
        tol = DEFAULT_PROB_TOLERANCE if tolerance is None else tolerance
        opts = ExportOptions(int8=int8, check_dirs=checks, tolerance=tol, progress=say)
        result = export_formats(model, [fmt.lower()], out, opts)
        lines = result.lines()
        doc = {"reports": [r.to_dict() for r in result.reports], "not_written": result.skipped}
    if as_json:
        print(json.dumps(doc))
    else:
        for line in lines:
            console.print(line, highlight=False, markup=False, soft_wrap=True)
