"""graft's metadata document for an exported file, apart from the export job.

Both the job (which builds the files) and the wrappers (which restamp them) write this
document; it sits below both so that they import it, and not each other.
"""

from __future__ import annotations

from typing import Any

from graft.artifact.onnx_meta import onnx_metadata

__all__ = ["metadata_document"]


def metadata_document(spec: Any, fmt: str, *, quantization: str | None = None, pixels: bool = True) -> dict[str, Any]:
    """graft's document for an exported file: classes, preprocessing, graft's version, the input it takes."""
    doc = onnx_metadata(spec, opset=0, quantization=quantization)
    doc.pop("opset")
    h, w = spec.preprocessing.input_size
    doc["export_format"] = fmt
    if fmt != "onnx":
        doc["format"] = f"graft-{fmt}"  # graft's ONNX predictor must not mistake a pixel-input file for its own
    if pixels:
        doc["input"] = {
            "shape": ["batch", 3, int(h), int(w)],
            "dtype": "float32",
            "layout": "NCHW",
            "range": "RGB pixels 0..255, resized and centre-cropped as 'preprocessing' says; mean/std are in the graph",
        }
    return doc
