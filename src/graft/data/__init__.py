"""Dataset discovery and safe image decoding: torch-free, the bottom of the data flow.

Transforms live one layer up, in :mod:`graft.transforms`.
"""

from __future__ import annotations

from graft.data.decode import (
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    has_image_extension,
    load_image,
    load_image_bytes,
    probe_image,
    sniff_is_image,
)
from graft.data.scan import (
    SPLIT_ALIASES,
    DatasetSplits,
    ImageRecord,
    SkippedFile,
    collect_image_paths,
    scan_dataset,
    scan_split,
)

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "has_image_extension",
    "load_image",
    "load_image_bytes",
    "probe_image",
    "sniff_is_image",
    "SPLIT_ALIASES",
    "DatasetSplits",
    "ImageRecord",
    "SkippedFile",
    "collect_image_paths",
    "scan_dataset",
    "scan_split",
]
