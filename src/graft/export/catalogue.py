"""The export formats by name: loads every format module, then looks them up in the registry.

Apart from :mod:`graft.export.registry` so that imports point one way: the format modules
import the registry to register themselves, and only this module imports the formats.
"""

from __future__ import annotations

from graft.exceptions import InvalidParameterError
from graft.export.registry import FORMATS, ExportFormat

__all__ = ["format_names", "get_format"]

_ORDER = ("onnx", "litert", "coreml", "executorch", "openvino", "web")


def _load_all() -> None:
    import graft.export.formats  # noqa: F401 - each module registers its format on import


def format_names() -> list[str]:
    """Every registered format: the issue's order, then any other in registration order."""
    _load_all()
    return [n for n in _ORDER if n in FORMATS] + [n for n in FORMATS if n not in _ORDER]


def get_format(name: str) -> ExportFormat:
    """The format called ``name``; an :class:`InvalidParameterError` listing the known ones otherwise."""
    _load_all()
    fmt = FORMATS.get(name.lower())
    if fmt is None:
        raise InvalidParameterError(f"--format {name!r} is not one of {', '.join([*FORMATS, 'all'])}")
    return fmt
