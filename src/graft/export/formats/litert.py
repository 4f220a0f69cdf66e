"""``--format litert``: a LiteRT (TensorFlow Lite) flatbuffer, ``.tflite``.

Placeholder until a converter route is chosen (see the README's export section).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from graft.exceptions import ExportError
from graft.export.job import Built, ExportJob
from graft.export.registry import register_format

__all__ = ["write_litert", "read_litert"]


def read_litert(path: Path) -> dict[str, Any]:
    raise ExportError(f"{path}: reading LiteRT metadata is not implemented")


@register_format(
    "litert",
    suffix=".tflite",
    extra="litert",
    requires=("litert_torch", "ai_edge_litert"),
    verified_by="running",
    int8="",
    reader=read_litert,
)
def write_litert(job: ExportJob, dst: Path, int8: bool) -> Built:
    raise ExportError("LiteRT export is not implemented yet")
