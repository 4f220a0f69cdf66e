"""Export a trained model for deployment: ONNX with embedded preprocessing and classes.

``export_formats(model_dir, ["openvino", "web"], out)`` writes other formats (registry in
:mod:`graft.export.registry`, one module per format in :mod:`graft.export.formats`, looked up
by name in :mod:`graft.export.catalogue`), each verified in its own runtime.
``export_onnx(model_dir, out)`` writes one self-contained ``.onnx`` file and checks it
against PyTorch on real images; :class:`graft.predict.onnx.OnnxPredictor` runs it
without torch.
"""

from __future__ import annotations

from graft.export.catalogue import format_names, get_format
from graft.export.onnx import DEFAULT_OPSET, DEFAULT_TOLERANCE, ExportReport, export_onnx
from graft.export.quantize import QUANTIZE_MODES
from graft.export.registry import FORMATS, MissingExtraError, register_format
from graft.export.run import ExportOptions, ExportResult, export_formats

__all__ = [
    "DEFAULT_OPSET",
    "DEFAULT_TOLERANCE",
    "FORMATS",
    "QUANTIZE_MODES",
    "ExportOptions",
    "ExportReport",
    "ExportResult",
    "MissingExtraError",
    "export_formats",
    "export_onnx",
    "format_names",
    "get_format",
    "register_format",
]
