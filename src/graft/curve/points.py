"""A learning curve's result and how it is read: the points, the sizes tried, the slope and the verdict.

Shared by the single-label curve (:mod:`.compute`) and the multi-label one (:mod:`.multilabel`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = [
    "CURVE_JSON",
    "CURVE_PNG",
    "FEW_SHOT_C",
    "HELPS_POINTS_PER_DOUBLING",
    "LearningCurve",
    "default_sizes",
    "slope_per_doubling",
    "verdict",
]

CURVE_JSON = "curve.json"  # in the run folder, beside metrics.json: what the report's section reads
CURVE_PNG = Path("report") / "curve.png"  # the figure the report embeds

#: C of the linear head where cross-validation is impossible (a class with one image).
#: With one image per class the small-C limit of logistic regression is the nearest-class-mean
#: classifier on centred features, the standard few-shot baseline. Measured over 10 seeds at
#: one image per class, accuracy hardly moves with C (hymenoptera 0.624 at every C of the grid;
#: sign_digits 0.474 at C=0.001, 0.464-0.466 from 0.03 to 10): the grid's smallest C is best.
FEW_SHOT_C = 0.001

#: Verdict threshold, in accuracy points per doubling of the training images. Doubling the
#: labels doubles the labelling bill spent so far, so a gain under one point for it means the
#: curve has flattened. It is also well above the noise of the slope itself: a difference of
#: 5-seed means two doublings apart, whose seeds spread by 0.4-1.4 points (standard deviation)
#: at the top subsampled sizes of hymenoptera and sign_digits, i.e. a few tenths of a point per
#: doubling. Measured: sign_digits +2.4 (0.93 at 100 per class, 0.94 at all 166), hymenoptera +0.3.
HELPS_POINTS_PER_DOUBLING = 1.0
LAST_DOUBLINGS = 2.0  # the slope is measured over this many doublings, ending at the full size


@dataclass
class LearningCurve:
    """Validation accuracy of the default linear head at each training size.

    Attributes:
        sizes: training images per class asked for at each point; the last is "all"
            (the largest class's count), where every class contributes all its images.
        n_images: training images actually used at each point (small classes cap it).
        mean, std: accuracy over seeds (sample standard deviation; 0 with one seed).
        per_seed: the accuracy of every seed; one value at the full size, where every
            seed draws the same images.
        slope: accuracy points gained per doubling of the training images over the last
            doublings (None with fewer than two sizes); ``span`` is how many doublings.
        verdict: one sentence: is labelling more likely to help?
    """

    sizes: list[int]
    n_images: list[int]
    mean: list[float]
    std: list[float]
    per_seed: list[list[float]]
    n_classes: int
    n_val: int
    slope: float | None
    span: float
    verdict: str
    classes: list[str] = field(default_factory=list)
    backbone: str = ""
    data_dir: str = ""
    split: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    metric: str = "accuracy"  # "map": a multi-label dataset's validation mean average precision

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (what ``curve.json`` and ``graft curve --json`` hold)."""
        return dataclasses.asdict(self)


def default_sizes(largest_class: int) -> list[int]:
    """1, 2, 5, 10, 20, 50, 100, ... below ``largest_class``, then ``largest_class`` (all images)."""
    out: list[int] = []
    decade = 1
    while decade < largest_class:
        out += [m * decade for m in (1, 2, 5) if m * decade < largest_class]
        decade *= 10
    return out + [largest_class]


def slope_per_doubling(n_images: Sequence[int], mean: Sequence[float]) -> tuple[float | None, float]:
    """(accuracy points per doubling over the last LAST_DOUBLINGS doublings, doublings measured).

    Linear in log2(images), interpolated: the gain from the point two doublings below the
    full size (or the first point, when the curve is shorter) to the full size, per doubling.
    """
    if len(n_images) < 2:
        return None, 0.0
    x = np.log2(np.asarray(n_images, dtype=float))
    acc = 100.0 * np.asarray(mean, dtype=float)
    start = max(float(x[0]), float(x[-1]) - LAST_DOUBLINGS)
    span = float(x[-1]) - start
    return float(acc[-1] - np.interp(start, x, acc)) / span, span


def verdict(slope: float | None, span: float) -> str:
    """One sentence: whether more labels are likely to help, from the recent slope."""
    if slope is None:
        return "Only one training size could be measured, so there is no slope to judge more labels by."
    where = "the last two doublings" if math.isclose(span, LAST_DOUBLINGS) else f"the last {span:.1f} doublings"
    head = f"{slope:+.1f} points per doubling of the training images over {where}"
    if slope >= HELPS_POINTS_PER_DOUBLING:
        return f"{head}: labelling more is likely to help."
    return f"{head}: the curve has flattened, so more labels alone are unlikely to help much."
