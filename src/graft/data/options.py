"""How a folder without split folders is split (each default stated once)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from graft.validation import Constraint, Interval, validate_params

__all__ = ["SplitOptions"]


@dataclass(frozen=True)
class SplitOptions:
    """The seeded, stratified split made where the folder has no ``val/`` (or ``test/``) folder.

    ``seed`` also seeds the feature views and training, so one number reproduces a run.
    """

    val_fraction: float = 0.2
    test_fraction: float = 0.0
    seed: int = 0

    CONSTRAINTS: ClassVar[dict[str, list[Constraint]]] = {
        "val_fraction": [Interval(0, 1, closed="neither")],
        "test_fraction": [Interval(0, 1, closed="left")],
        "seed": [Interval(integer=True)],
    }

    def validate(self, owner: str = "SplitOptions") -> SplitOptions:
        validate_params(vars(self), self.CONSTRAINTS, owner)
        return self
