"""Model surgery for fast, fixed-size inference: static "same" padding and feature extraction heads.

Kept apart from the engines: both the embedding runtime and any later exporter use it,
and it only rewrites modules, never runs them for real work.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Sequence

import torch
from torch import nn

from graft.backbones.taps import tapped_features

__all__ = ["FeatureExtractor", "static_same_padding"]


def static_same_padding(model: nn.Module, input_size: tuple[int, int]) -> nn.Module:
    """A copy of ``model`` whose dynamic "same" convolutions pad statically.

    timm's ``Conv2dSame`` (tf_* ports) computes its padding from the input shape on
    every call. At a fixed input size the padding is a constant, so each one becomes
    ``ZeroPad2d + Conv2d``. Parameters are shared with ``model`` (no copy), so the
    result stays in sync with it; ``model`` itself is untouched.
    """
    try:
        from timm.layers import Conv2dSame
    except Exception:  # noqa: BLE001
        return model
    names = [n for n, m in model.named_modules() if isinstance(m, Conv2dSame)]
    if not names:
        return model
    sizes = _input_sizes(model, names, input_size)
    memo = {id(t): t for t in list(model.parameters()) + list(model.buffers())}
    new = copy.deepcopy(model, memo)
    for n in names:
        parent, _, leaf = n.rpartition(".")
        setattr(new.get_submodule(parent) if parent else new, leaf, _static_conv(new.get_submodule(n), sizes[n]))
    return new


def _input_sizes(model: nn.Module, names: list[str], input_size: tuple[int, int]) -> dict[str, tuple[int, int]]:
    """The (H, W) of the input each named module sees in one eval forward pass at ``input_size``."""
    sizes: dict[str, tuple[int, int]] = {}
    hooks = [
        model.get_submodule(n).register_forward_pre_hook(
            lambda mod, inp, n=n: sizes.__setitem__(n, tuple(inp[0].shape[-2:]))
        )
        for n in names
    ]
    was_training = model.training
    try:
        model.eval()
        dev = next(model.parameters()).device
        with torch.no_grad():
            m: Any = model
            _ = (m.forward_features if hasattr(model, "forward_features") else model)(
                torch.zeros(1, 3, *input_size, device=dev)
            )
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return sizes


def _static_conv(old: Any, size: tuple[int, int]) -> nn.Module:
    """``old`` (a ``Conv2dSame``) at a fixed input ``size``: ``ZeroPad2d + Conv2d`` sharing its parameters."""
    ih, iw = size
    kh, kw = old.kernel_size
    sh, sw = old.stride
    dh, dw = old.dilation
    ph = max((math.ceil(ih / sh) - 1) * sh + (kh - 1) * dh + 1 - ih, 0)
    pw = max((math.ceil(iw / sw) - 1) * sw + (kw - 1) * dw + 1 - iw, 0)
    conv = nn.Conv2d(
        old.in_channels,
        old.out_channels,
        old.kernel_size,
        old.stride,
        0,
        old.dilation,
        old.groups,
        old.bias is not None,
        device="meta",
    )
    conv.weight = old.weight
    conv.bias = old.bias
    return nn.Sequential(nn.ZeroPad2d((pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)), conv) if ph or pw else conv


class FeatureExtractor(nn.Module):
    """Module -> pooled features (with ``taps``: multi-depth, see :mod:`.taps`), or the flattened feature map."""

    def __init__(self, model: nn.Module, spatial: bool, taps: Sequence[int] = ()) -> None:
        super().__init__()
        self.model: Any = model
        self.spatial = spatial
        self.taps = tuple(int(t) for t in taps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.spatial:
            return self.model.forward_features(x).flatten(1)
        return tapped_features(self.model, x, self.taps)
