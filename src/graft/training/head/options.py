"""The head grafted onto the frozen backbone, and the features it reads (each default stated once)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from graft.network.heads import HEAD_TYPES
from graft.validation import Constraint, Interval, Options, validate_params

__all__ = ["CLASS_WEIGHTS", "FEATURE_MODES", "HeadOptions"]

#: Which features the head reads: ``auto`` (multi-depth where cross-validation prefers it), ``final``, ``multi``,
#: ``wide`` (``auto`` for the backbone, then the other offline backbones' features beside it: graft.features.wide).
FEATURE_MODES = ("auto", "final", "multi", "wide")

#: ``balanced`` weights the loss by inverse class frequency; None weighs every image alike.
CLASS_WEIGHTS = (None, "balanced")


@dataclass(frozen=True)
class HeadOptions:
    """Which head, how regularised, on which features.

    Attributes:
        head / C / dropout / hidden: a head type of :data:`~graft.network.HEAD_TYPES` (``linear``: C by
            cross-validation when None).
        features: ``"auto"`` adds the pooled outputs of the last three block stages to the final features
            where cross-validation on the training features finds it better (never validation); ``"final"``;
            ``"multi"`` (:mod:`graft.training.head.feature_choice`); ``"wide"``: ``"auto"``, then the features of
            the other offline backbones beside them (:mod:`graft.features.wide`).
        augment_views: ``"auto"`` adds the mirror image below 2,000 training images (+1.7 points on
            sign_digits); K adds the mirror then K-1 random resized crops.
        class_weight: one of :data:`CLASS_WEIGHTS`.
    """

    head: str = HEAD_TYPES[0]
    C: float | None = None
    dropout: float = 0.2
    hidden: int = 512
    features: str = "auto"
    augment_views: int | str = "auto"
    class_weight: str | None = None

    CONSTRAINTS: ClassVar[dict[str, list[Constraint]]] = {
        "head": [Options(HEAD_TYPES)],
        "C": [Interval(0, None, closed="right"), None],
        "dropout": [Interval(0, 1, closed="left")],
        "hidden": [Interval(1, integer=True)],
        "features": [Options(FEATURE_MODES)],
        "augment_views": [Options(("auto",)), Interval(0, integer=True)],
        "class_weight": [Options(CLASS_WEIGHTS)],
    }

    def validate(self, owner: str = "HeadOptions") -> HeadOptions:
        validate_params(vars(self), self.CONSTRAINTS, owner)
        return self
