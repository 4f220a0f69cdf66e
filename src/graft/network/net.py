"""The full network: a headless backbone, the grafted head and (optionally) the "unknown" scorer."""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from graft.backbones.taps import tapped_features

__all__ = ["GraftNet"]


class GraftNet(nn.Module):
    """Backbone + head: images in, logits out (and, with an ``ood`` scorer, how unfamiliar they look).

    Args:
        backbone: headless timm model (``num_classes=0``).
        head: module mapping features to logits.
        spatial: feed the flattened feature map instead of pooled features.
        ood: module mapping the same features to out-of-distribution scores
            (:class:`~graft.network.ood.OODScorer`), saved with the weights.
        taps: block stages whose pooled outputs precede the final pooled features
            (multi-depth features, :mod:`graft.backbones.taps`); empty: final features only.
    """

    def __init__(
        self,
        backbone: nn.Module,
        head: nn.Module,
        spatial: bool = False,
        ood: nn.Module | None = None,
        taps: Sequence[int] = (),
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.spatial = spatial
        self.ood = ood
        self.taps = tuple(int(t) for t in taps)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The head's input for images ``x``."""
        backbone: Any = self.backbone  # a timm model
        if self.spatial:
            return backbone.forward_features(x).flatten(1)
        return tapped_features(backbone, x, self.taps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def forward_all(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(logits, OOD scores or None), computing the features once."""
        f = self.features(x)
        return self.head(f), (self.ood(f) if self.ood is not None else None)
