"""Dataset discovery, safe image decoding and transforms.

Decoding and scanning are torch-free. The transform builders need torch/torchvision and
are imported lazily on first access, so ``from graft.data import load_image_bytes``
stays light for the ONNX runtime and the HTTP server.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from graft.data.transforms import (
        AUGMENT_STRENGTHS,
        build_eval_transform,
        build_feature_view_transform,
        build_train_transform,
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
    "AUGMENT_STRENGTHS",
    "build_train_transform",
    "build_eval_transform",
    "build_feature_view_transform",
]

_LAZY = {"AUGMENT_STRENGTHS", "build_train_transform", "build_eval_transform", "build_feature_view_transform"}


def __getattr__(name: str) -> Any:
    # PEP 562: defer the torch import until a transform is actually requested.
    if name in _LAZY:
        from graft.data import transforms

        return getattr(transforms, name)
    raise AttributeError(f"module 'graft.data' has no attribute {name!r}")
