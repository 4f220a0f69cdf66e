"""One module per export format; importing this package registers them all (see :mod:`graft.export.registry`)."""

from __future__ import annotations

from graft.export.formats import coreml, executorch, litert, onnx_format, openvino, web

__all__ = ["coreml", "executorch", "litert", "onnx_format", "openvino", "web"]
