"""Export a trained model for deployment: ONNX with embedded preprocessing and classes.

``export_onnx(model_dir, out)`` writes one self-contained ``.onnx`` file and checks it
against PyTorch on real images; :class:`graft.predict.onnx.OnnxPredictor` runs it
without torch.
"""

from __future__ import annotations

from graft.export.onnx import DEFAULT_OPSET, DEFAULT_TOLERANCE, ExportReport, export_onnx
from graft.export.quantize import QUANTIZE_MODES

__all__ = ["DEFAULT_OPSET", "DEFAULT_TOLERANCE", "QUANTIZE_MODES", "ExportReport", "export_onnx"]
