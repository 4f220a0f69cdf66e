"""Look inside a classifier: Grad-CAM, feature maps, class visualisation, adversarial examples.

Pure functions on an :class:`ExplainTarget` (network, preprocessing, classes) and
images as uint8 arrays; they return arrays and probabilities. Pictures of the
results are in :mod:`graft.explain.figures` (matplotlib, Agg backend).

Example:
    >>> from graft.explain import load_target, prepare_image, gradcam
    >>> t = load_target("runs/hym/model")
    >>> r = gradcam(t, prepare_image("bee.jpg", t.preprocessing))
    >>> r.label, r.probability, r.cam.shape
"""

from __future__ import annotations

from graft.explain.attack import AttackResult, attack
from graft.explain.dream import DreamOptions, DreamResult, dream
from graft.explain.features import FeatureMaps, feature_maps
from graft.explain.gradcam import CamResult, explain_image, gradcam, gradcam_batch, overlay_heatmap
from graft.explain.layers import LayerInfo, default_feature_layer, get_layer, list_layers
from graft.explain.target import (
    ExplainTarget,
    load_target,
    predict_top_k,
    prepare_image,
    probabilities,
    resolve_class,
    to_input,
)

__all__ = [
    "ExplainTarget",
    "load_target",
    "resolve_class",
    "prepare_image",
    "to_input",
    "probabilities",
    "predict_top_k",
    "LayerInfo",
    "list_layers",
    "default_feature_layer",
    "get_layer",
    "CamResult",
    "gradcam",
    "gradcam_batch",
    "explain_image",
    "overlay_heatmap",
    "FeatureMaps",
    "feature_maps",
    "DreamOptions",
    "DreamResult",
    "dream",
    "AttackResult",
    "attack",
]
