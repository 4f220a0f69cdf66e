"""How a folder without split folders is split (each default stated once)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from graft.validation import Constraint, Interval, validate_params

__all__ = ["ManifestOptions", "SplitOptions"]


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


@dataclass(frozen=True)
class ManifestOptions:
    """How a manifest (CSV, TSV, JSON Lines, Parquet) is read; None: detected (:mod:`graft.data.manifest`).

    Attributes:
        images: the folder the manifest's image paths are relative to (default: the manifest's folder).
        path_col / label_col / split_col: column names, where the common spellings are not used.
        label_sep: the separator of several labels in one cell (multi-label), e.g. ``"|"``.
    """

    images: str | None = None
    path_col: str | None = None
    label_col: str | None = None
    split_col: str | None = None
    label_sep: str | None = None
