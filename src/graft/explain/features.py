"""Feature maps of a layer: what the filters respond to (the classic VGG-16 demo)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from graft.exceptions import InvalidParameterError
from graft.explain.layers import capture, get_layer
from graft.explain.target import ExplainTarget, to_input

__all__ = ["FeatureMaps", "feature_maps"]


@dataclass
class FeatureMaps:
    """The strongest channels of one layer for one image.

    Attributes:
        image: the network's view of the image (uint8 H x W x 3).
        maps: (k, h, w) float32 activations of the strongest channels, strongest first.
        channels: their channel indices.
        means: their mean activations.
        layer: the layer name.
        shape: the layer's full output shape (C, h, w).
    """

    image: np.ndarray
    maps: np.ndarray
    channels: list[int]
    means: list[float]
    layer: str
    shape: tuple[int, ...]


@torch.no_grad()
def feature_maps(target: ExplainTarget, rgb: np.ndarray, layer: str, *, top: int = 16) -> FeatureMaps:
    """The ``top`` channels of ``layer`` with the highest mean activation for image ``rgb``.

    Raises:
        InvalidParameterError: unknown layer, or its output is not a (C, H, W) map.
    """
    mod = get_layer(target.net, layer)
    with capture(mod) as store:
        target.net(to_input(rgb, target.preprocessing, target.device))
    act = store.get("out")
    if act is None or act.dim() != 4:
        shape = None if act is None else tuple(act.shape[1:])
        raise InvalidParameterError(
            f"layer {layer!r} outputs shape {shape}, not a (C, H, W) feature map; "
            "pick a conv layer from graft features MODEL --list-layers"
        )
    a = act[0].float().cpu().numpy()
    means = a.mean(axis=(1, 2))
    order = np.argsort(-means, kind="stable")[: max(1, min(top, a.shape[0]))]
    return FeatureMaps(
        image=rgb,
        maps=a[order].astype(np.float32),
        channels=[int(i) for i in order],
        means=[float(means[i]) for i in order],
        layer=layer,
        shape=tuple(a.shape),
    )
