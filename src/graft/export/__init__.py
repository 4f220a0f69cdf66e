"""Export a trained model for deployment: ONNX with embedded preprocessing and classes.

``export_onnx(model_dir, out)`` writes one self-contained ``.onnx`` file and checks it
against PyTorch on real images; :class:`graft.onnx_predictor.OnnxClassifier` runs it
without torch.
"""

from __future__ import annotations

from .onnx import DEFAULT_OPSET, DEFAULT_TOLERANCE, ExportReport, export_onnx, onnx_metadata
from .quantize import QUANTIZE_MODES

__all__ = ["DEFAULT_OPSET", "DEFAULT_TOLERANCE", "QUANTIZE_MODES", "ExportReport", "export_onnx", "onnx_metadata"]
