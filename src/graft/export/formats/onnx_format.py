"""``--format onnx``: graft's ``.onnx`` (normalised float input, metadata_props), run with ONNX Runtime."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from graft.export.job import Built, ExportJob
from graft.export.registry import register_format

__all__ = ["write_onnx_format", "read_onnx_format"]


def read_onnx_format(path: Path) -> dict[str, Any]:
    from graft.predict.onnx import read_onnx_metadata

    return read_onnx_metadata(path)


@register_format(
    "onnx",
    suffix=".onnx",
    extra="",
    requires=("onnx", "onnxruntime"),
    verified_by="running",
    int8="static QDQ, per-channel int8 weights (ONNX Runtime's quantiser, calibrated on training images)",
    reader=read_onnx_format,
)
def write_onnx_format(job: ExportJob, dst: Path, int8: bool) -> Built:
    from graft.predict.onnx import OnnxPredictor

    shutil.copyfile(job.onnx_file(pixels=False, int8=int8), dst)
    meta = read_onnx_format(dst)
    pred = OnnxPredictor(dst, threads=None)
    return Built(dst, meta, pred.predict_arrays, quantization=meta.get("quantization"))
