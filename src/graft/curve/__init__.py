"""Learning curve: validation accuracy against training images per class, from cached features.

Answers "will labelling more images help?" before anyone labels them. The dataset is
embedded once (graft's stage-1 embedding, through the on-disk feature cache, no
augmented views); then graft's default linear head is refitted on nested per-class
subsamples for several seeds. Each fit is a logistic regression on cached features,
so no image is decoded twice and a warm curve costs only the head fits.
"""

from graft.curve.compute import (
    CURVE_JSON,
    CURVE_PNG,
    FEW_SHOT_C,
    HELPS_POINTS_PER_DOUBLING,
    CurveOptions,
    LearningCurve,
    curve_from_features,
    default_sizes,
    learning_curve,
    slope_per_doubling,
    verdict,
)
from graft.curve.output import check_outputs, curve_figure, save_curve, scratch_accuracy, write_curve_png

__all__ = [
    "CURVE_JSON",
    "CURVE_PNG",
    "CurveOptions",
    "FEW_SHOT_C",
    "HELPS_POINTS_PER_DOUBLING",
    "LearningCurve",
    "check_outputs",
    "curve_figure",
    "curve_from_features",
    "default_sizes",
    "learning_curve",
    "save_curve",
    "scratch_accuracy",
    "slope_per_doubling",
    "verdict",
    "write_curve_png",
]
