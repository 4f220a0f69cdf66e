"""Classification heads grafted onto a headless backbone, and the full network."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from graft.backbones.taps import tapped_features
from graft.validation import check_choice, check_number

__all__ = ["HEAD_TYPES", "HeadSpec", "build_head", "GraftNet"]

#: linear: dropout + linear on pooled features (the default).
#: mlp: dropout + linear + ReLU + dropout + linear on pooled features.
#: flatten: dropout + linear on the flattened (un-pooled) feature map, as the classic
#: Keras "Flatten + Dense" recipe does; many more inputs, so it needs more data.
HEAD_TYPES = ("linear", "mlp", "flatten")


@dataclass(frozen=True)
class HeadSpec:
    """Everything needed to rebuild a head (stored in the model's config.json)."""

    type: str
    in_features: int
    num_classes: int
    dropout: float = 0.2
    hidden: int = 512

    def __post_init__(self) -> None:
        check_choice("type", self.type, HEAD_TYPES, "HeadSpec")
        check_number("dropout", self.dropout, "HeadSpec", low=0, high=1, high_inclusive=False)

    @property
    def spatial(self) -> bool:
        """True if the head reads the un-pooled feature map."""
        return self.type == "flatten"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> HeadSpec:
        return cls(**{k: d[k] for k in ("type", "in_features", "num_classes", "dropout", "hidden") if k in d})


def build_head(spec: HeadSpec) -> nn.Sequential:
    """A freshly initialised head for ``spec``."""
    if spec.type == "mlp":
        return nn.Sequential(
            nn.Dropout(spec.dropout),
            nn.Linear(spec.in_features, spec.hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(spec.dropout),
            nn.Linear(spec.hidden, spec.num_classes),
        )
    return nn.Sequential(nn.Dropout(spec.dropout), nn.Linear(spec.in_features, spec.num_classes))


class GraftNet(nn.Module):
    """Backbone + head: images in, logits out (and, with an ``ood`` scorer, how unfamiliar they look).

    Args:
        backbone: headless timm model (``num_classes=0``).
        head: module mapping features to logits.
        spatial: feed the flattened feature map instead of pooled features.
        ood: module mapping the same features to out-of-distribution scores
            (:class:`~graft.training.ood.OODScorer`), saved with the weights.
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
