"""How images become features: where they run, how fast, and how strictly (each default stated once)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import ClassVar

from graft.validation import Constraint, Interval, Options, validate_params

__all__ = ["PRECISIONS", "EmbedOptions"]

#: Backbone precisions; ``auto`` measures the fastest accurate one on this machine.
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class EmbedOptions:
    """Options of every embedding pass (``graft train``, ``embed``, ``doctor``, ``curve``, prediction).

    Attributes:
        device: ``auto``, ``cpu`` or ``cuda`` (``auto``: a GPU where there is one).
        precision: one of :data:`PRECISIONS`.
        batch_size / num_workers: None picks them for this machine.
        cache_dir / use_cache: the feature cache (default ``$GRAFT_HOME/features``).
        max_pixels: decompression-bomb guard (None: the decoder's default).
        strict: raise on any unreadable image instead of skipping it.
    """

    device: str = "auto"
    precision: str = "auto"
    batch_size: int | None = None
    num_workers: int | None = None
    cache_dir: str | os.PathLike | None = None
    use_cache: bool = True
    max_pixels: int | None = None
    strict: bool = False

    CONSTRAINTS: ClassVar[dict[str, list[Constraint]]] = {
        "device": [str],
        "precision": [Options(PRECISIONS)],
        "batch_size": [Interval(1, integer=True), None],
        "num_workers": [Interval(0, integer=True), None],
        "max_pixels": [Interval(1, integer=True), None],
    }

    def validate(self, owner: str = "EmbedOptions") -> EmbedOptions:
        validate_params(asdict(self), self.CONSTRAINTS, owner)
        return self
