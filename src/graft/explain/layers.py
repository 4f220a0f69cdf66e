"""Finding layers by name and capturing their outputs with forward hooks."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn

from graft.exceptions import InvalidParameterError

__all__ = ["LayerInfo", "list_layers", "default_feature_layer", "get_layer", "capture", "frozen_parameters"]


@dataclass(frozen=True)
class LayerInfo:
    """One module seen during a forward pass."""

    name: str
    type: str
    shape: tuple[int, ...]  # output shape for one image, batch dimension dropped


def _dummy(net: nn.Module, input_size: tuple[int, int]) -> torch.Tensor:
    p = next(net.parameters())
    return torch.zeros(1, 3, *input_size, device=p.device, dtype=p.dtype)


@torch.no_grad()
def list_layers(net: nn.Module, input_size: tuple[int, int]) -> list[LayerInfo]:
    """Every named module whose output is a tensor, in the order their forward pass finished.

    One forward pass of a blank image with a hook on every module; containers appear
    after their children (they finish later).
    """
    seen: list[LayerInfo] = []
    handles = []
    for name, mod in net.named_modules():
        if not name:
            continue

        def hook(m: nn.Module, _in: object, out: object, name: str = name) -> None:
            if isinstance(out, torch.Tensor):
                seen.append(LayerInfo(name, type(m).__name__, tuple(out.shape[1:])))

        handles.append(mod.register_forward_hook(hook))
    try:
        net(_dummy(net, input_size))
    finally:
        for h in handles:
            h.remove()
    return seen


def default_feature_layer(net: nn.Module, input_size: tuple[int, int]) -> str:
    """The last module producing a spatial map (N, C, H, W with H*W > 1): the usual Grad-CAM layer.

    For EfficientNet that is ``bn2`` (after ``conv_head``), for ResNet ``layer4``, for VGG
    the last conv stage; works for any CNN, timm or not, without per-family tables.

    Raises:
        InvalidParameterError: the network has no 4-D output anywhere (a ViT, say); pass a layer name.
    """
    maps = [li for li in list_layers(net, input_size) if len(li.shape) == 3 and li.shape[1] * li.shape[2] > 1]
    if not maps:
        raise InvalidParameterError(
            "this network has no layer producing a spatial (C, H, W) feature map; "
            "pass --layer NAME (see graft features MODEL --list-layers)"
        )
    return maps[-1].name


def get_layer(net: nn.Module, name: str) -> nn.Module:
    """The module called ``name`` (as in ``named_modules()``), with a helpful error."""
    mods = dict(net.named_modules())
    if name in mods and name:
        return mods[name]
    close = [n for n in mods if n and (name in n or n.endswith(name))][:8]
    hint = f"; did you mean {', '.join(close)}?" if close else "; list them with graft features MODEL --list-layers"
    raise InvalidParameterError(f"no layer named {name!r} in the network{hint}")


@contextmanager
def capture(module: nn.Module, leaf: bool = False) -> Iterator[dict[str, torch.Tensor]]:
    """Record the output of ``module`` (key ``"out"``) during forward passes inside the block.

    Args:
        module: the layer to watch.
        leaf: replace the output by a detached copy that requires grad, so gradients
            with respect to it can be taken without backpropagating into earlier layers.
    """
    store: dict[str, torch.Tensor] = {}

    def hook(_m: nn.Module, _in: object, out: object) -> torch.Tensor | None:
        if not isinstance(out, torch.Tensor):
            raise InvalidParameterError(
                f"layer {type(_m).__name__} does not output a single tensor; choose another layer "
                "(see graft features MODEL --list-layers)"
            )
        if leaf:
            store["out"] = out.detach().requires_grad_(True)
            return store["out"].clone()  # later in-place ops (ReLU(inplace)) must not touch the leaf
        store["out"] = out
        return None

    h = module.register_forward_hook(hook)
    try:
        yield store
    finally:
        h.remove()


@contextmanager
def frozen_parameters(net: nn.Module) -> Iterator[None]:
    """Parameters stop requiring grad inside the block (restored after).

    A gradient taken only with respect to an activation (Grad-CAM's captured leaf) then
    records no graph for the layers before it: on EfficientNet-Lite0 at 288 px, 8 images,
    the report's Grad-CAM pass peaked 640 MB above the process without this.
    """
    trainable = [p for p in net.parameters() if p.requires_grad]
    for p in trainable:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in trainable:
            p.requires_grad_(True)
