"""The seeded, per-class split of a class's images: the one rule for folders and manifests alike."""

from __future__ import annotations

import random
from pathlib import Path

from graft.data.records import ImageRecord
from graft.exceptions import DataError

__all__ = ["split_class"]


def _n_take(n: int, fraction: float) -> int:
    """Round-half-up share of ``n``; at least one when the fraction is positive."""
    return max(1, int(n * fraction + 0.5)) if fraction > 0 else 0


def split_class(
    records: list[ImageRecord], name: str, fractions: dict[str, float], seed: int, where: Path
) -> dict[str, list[ImageRecord]]:
    """Seeded per-class split; the RNG depends on seed and class name only.

    Keying the RNG by class name keeps a class's split unchanged when other classes
    are added or removed, and ``random.Random`` with a str seed is platform-stable.
    """
    n = len(records)
    takes = {split: _n_take(n, frac) for split, frac in fractions.items()}
    if n - sum(takes.values()) < 1:
        need = 1 + sum(1 for t in takes.values() if t)
        raise DataError(
            f"class {name!r} in {where} has only {n} usable image(s); splitting it into train and "
            f"{'/'.join(s for s, t in takes.items() if t)} needs at least {need}. "
            "Add images to that class, or lower --val-fraction/--test-fraction"
        )
    order = list(records)
    random.Random(f"graft-split:{seed}:{name}").shuffle(order)
    out: dict[str, list[ImageRecord]] = {}
    start = 0
    for split, take in takes.items():
        out[split] = sorted(order[start : start + take], key=lambda r: r.path.as_posix())
        start += take
    out["train"] = sorted(order[start:], key=lambda r: r.path.as_posix())
    return out
