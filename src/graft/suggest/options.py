"""Options of ``graft suggest`` (each default stated once)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import ClassVar, Sequence

from graft.backbones.options import BackboneOptions
from graft.features.options import EmbedOptions
from graft.features.unlabeled import NEAR_COPY_COS
from graft.suggest.rank import STRATEGIES
from graft.validation import Constraint, Interval, Options, validate_params

__all__ = ["SuggestOptions"]


@dataclass(frozen=True)
class SuggestOptions:
    """What to suggest and how.

    Attributes:
        n: how many images to suggest.
        strategy: with a model, one of :data:`~graft.suggest.rank.STRATEGIES` (``diverse``: coverage
            of uncovered clusters blended with uncertainty balanced with diversity, by the head's
            cross-validated skill; the others are the baselines the bench compares it with).
        seed: k-means and random draws (the same seed gives the same suggestions).
        labeled: folders or manifests of images already labelled: they and their copies are left out,
            and their clusters count as covered.
        near_copy_cos: centred feature cosine at or above which an image counts as a copy.
        backbone: the backbone of a cold start (no model); with a model, None or the model's own.
        embed: how images are embedded (device, precision, the feature cache).
    """

    n: int = 50
    strategy: str = "diverse"
    seed: int = 0
    labeled: Sequence[str | os.PathLike] = ()
    near_copy_cos: float = NEAR_COPY_COS
    backbone: BackboneOptions | None = None
    embed: EmbedOptions = field(default_factory=EmbedOptions)

    CONSTRAINTS: ClassVar[dict[str, list[Constraint]]] = {
        "n": [Interval(1, integer=True)],
        "strategy": [Options(STRATEGIES)],
        "seed": [Interval(0, integer=True)],
        "near_copy_cos": [Interval(0, 1, closed="right")],
    }

    def validate(self, owner: str = "suggest") -> SuggestOptions:
        validate_params({k: v for k, v in asdict(self).items() if k in self.CONSTRAINTS}, self.CONSTRAINTS, owner)
        return self
