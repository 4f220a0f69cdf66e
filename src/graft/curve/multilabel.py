"""The learning curve of a multi-label dataset: validation mAP against training images per label.

The single-label curve's rule, as far as it applies: seed ``s`` shuffles the training rows
once, and a size ``k`` takes, for every label, the first ``k`` rows carrying it in that order
(their union: an image with several labels counts for each). The same shuffle at every size
makes the subsets nested, and at the full size every seed takes every row. Each subset is
fitted with graft's multi-label head (``fit_multilabel_head(X, Y, C=C, seed=seed)``: per-label
logistic regression, C by cross-validation on the first seed of each size, reused by the
others) and scored by the macro mean average precision of its validation probabilities,
threshold-free like the single-label curve's accuracy is free of calibration.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from graft.curve.points import FEW_SHOT_C, LearningCurve, default_sizes, slope_per_doubling, verdict
from graft.exceptions import DataError
from graft.metrics_multilabel import average_precision
from graft.progress import NullProgress, Progress

__all__ = ["multilabel_curve", "multilabel_map", "subsample_per_label"]


def subsample_per_label(Y: np.ndarray, per_label: int, rng_seed: int) -> np.ndarray:
    """Sorted rows: for each label, the first ``per_label`` rows carrying it in one seeded shuffle (nested)."""
    order = np.random.default_rng(rng_seed).permutation(len(Y))
    keep = np.zeros(len(Y), bool)
    positive = np.asarray(Y, bool)[order]
    for j in range(positive.shape[1]):
        keep[order[np.flatnonzero(positive[:, j])[:per_label]]] = True
    return np.flatnonzero(keep)


def multilabel_map(Y: np.ndarray, P: np.ndarray) -> float:
    """Macro mean average precision over the labels with a positive (as ``compute_multilabel_metrics``)."""
    aps = [average_precision(Y[:, j], P[:, j]) for j in range(Y.shape[1]) if np.asarray(Y[:, j]).any()]
    return float(np.mean(aps)) if aps else float("nan")


def _fit_map(
    train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray], seed: int, C: float | None
) -> tuple[float, float | None]:
    """(validation mAP, C used) of the multi-label head fitted on ``train``."""
    from graft.training.head.multilabel import fit_multilabel_head

    X, Y = train
    positives = np.asarray(Y, bool).sum(0)
    if C is None and positives[positives > 0].min() < 2:  # CV needs two images of each label
        C = FEW_SHOT_C
    fit = fit_multilabel_head(X, Y, C=C, seed=seed)
    W = np.asarray(_numpy(fit.weight), np.float64)
    b = np.asarray(_numpy(fit.bias), np.float64)
    z = np.asarray(val[0], np.float64) @ W.T + b
    chosen = getattr(fit, "C", C)
    return multilabel_map(val[1], 1.0 / (1.0 + np.exp(-z))), None if chosen is None else float(chosen)


def _numpy(value: Any) -> Any:
    """A tensor (the head's weights) or an array, as an array."""
    return value.detach().cpu().numpy() if hasattr(value, "detach") else value


def multilabel_curve(
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    *,
    sizes: Sequence[int] | None = None,
    seeds: int = 5,
    seed: int = 0,
    progress: Progress | None = None,
) -> Any:
    """A :class:`~graft.curve.compute.LearningCurve` of validation mAP (``metric="map"``) on (X, Y) features."""

    X, Y = train[0], np.asarray(train[1], np.float32)
    Y_val = np.asarray(val[1], np.float32)
    largest = int(Y.sum(0).max()) if len(Y) else 0
    if largest == 0 or len(Y_val) == 0:
        raise DataError("a learning curve needs training and validation images; found none in one of them")
    asked = default_sizes(largest) if sizes is None else [*sizes, largest]
    ks = sorted({min(int(k), largest) for k in asked})
    task = (progress or NullProgress()).task("fitting heads", total=sum(1 if k >= largest else seeds for k in ks))
    per_seed: list[list[float]] = []
    n_images: list[int] = []
    for k in ks:
        scores: list[float] = []
        C: float | None = None
        for i in range(1 if k >= largest else seeds):
            rows = np.arange(len(Y)) if k >= largest else subsample_per_label(Y, k, seed + i)
            score, c = _fit_map((X[rows], Y[rows]), (val[0], Y_val), seed + i, C)
            C = C if C is not None else c  # CV once per size, on its first subsample
            scores.append(score)
            if i == 0:  # the union's size varies a little between seeds; the first seed's is shown
                n_images.append(len(rows))
            task.advance()
        per_seed.append(scores)
    task.close()
    mean = [float(np.mean(a)) for a in per_seed]
    std = [float(np.std(a, ddof=1)) if len(a) > 1 else 0.0 for a in per_seed]
    slope, span = slope_per_doubling(n_images, mean)
    n_labels = Y.shape[1]
    return LearningCurve(
        ks, n_images, mean, std, per_seed, n_labels, len(Y_val), slope, span, verdict(slope, span), metric="map"
    )
