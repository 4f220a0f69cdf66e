"""One module per export format; importing this package registers them all in :mod:`graft.export.registry`.

Only :mod:`graft.export.catalogue` imports it (the registry does not: imports point one way).
"""

from __future__ import annotations

from graft.export.formats import coreml, executorch, litert, onnx_format, openvino, web

__all__ = ["coreml", "executorch", "litert", "onnx_format", "openvino", "web"]
