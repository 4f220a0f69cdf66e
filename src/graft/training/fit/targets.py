"""Single- and multi-label alike for the fine-tuning stages: the targets, loss weights, metrics and recalibration.

The stages after the head (stage two, the ladder's rungs) handle both kinds of model through
these few functions, decided by the labels' shape: class indices (softmax, one temperature)
or a 0/1 matrix (per-label sigmoids, one temperature and one F1 threshold per label).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from graft.metrics import compute_metrics, log_loss
from graft.metrics_multilabel import binary_log_loss, compute_multilabel_metrics, f1_thresholds
from graft.training.head.calibration import fit_label_temperatures, fit_temperature
from graft.training.head.fit import class_weights_balanced
from graft.training.head.multilabel import pos_weights_balanced

__all__ = ["fit_calibration", "loss_weights", "mean_log_loss", "rescale_sigmoid", "score", "targets_of"]


def targets_of(records: Sequence[Any], n_classes: int, multi_label: bool) -> np.ndarray:
    """Class indices (int64), or for multi-label records their (n, labels) 0/1 float32 matrix."""
    if multi_label:
        from graft.features.dataset import multi_hot

        return multi_hot(list(records), n_classes)
    return np.array([r.label for r in records], dtype=np.int64)


def loss_weights(y: np.ndarray, n_classes: int) -> np.ndarray:
    """``balanced`` loss weights: per class (inverse frequency), or per label's positives (negatives / positives)."""
    return pos_weights_balanced(y) if np.ndim(y) == 2 else class_weights_balanced(y, n_classes)


def score(y: np.ndarray, probs: np.ndarray, classes: Sequence[str], thresholds: Sequence[float] = ()) -> dict[str, Any]:
    """Validation metrics: :func:`compute_metrics`, or :func:`compute_multilabel_metrics` for a 0/1 ``y``."""
    if np.ndim(y) == 2:
        t = list(thresholds) or [0.5] * len(classes)
        return compute_multilabel_metrics(y, probs, list(classes), t)
    return compute_metrics(y, probs, list(classes))


def mean_log_loss(y: np.ndarray, probs: np.ndarray) -> float:
    """Cross-entropy of the probabilities: softmax log-loss, or mean binary cross-entropy for a 0/1 ``y``."""
    return binary_log_loss(y, probs) if np.ndim(y) == 2 else log_loss(y, probs)


def fit_calibration(logits: np.ndarray, y: np.ndarray) -> tuple[Any, tuple[float, ...]]:
    """(temperature, thresholds) on held-out logits: one T (no thresholds), or per label T and F1 thresholds."""
    if np.ndim(y) != 2:
        return fit_temperature(logits, y), ()
    t = fit_label_temperatures(logits, y)
    probs = 1.0 / (1.0 + np.exp(-np.asarray(logits, np.float64) / t[None, :]))
    return t, tuple(float(x) for x in f1_thresholds(y, probs))


def rescale_sigmoid(probs: np.ndarray, t: np.ndarray) -> np.ndarray:
    """``sigmoid(logits / t)`` per label from ``sigmoid(logits)``."""
    p = np.clip(np.asarray(probs, np.float64), 1e-12, 1 - 1e-12)
    z = np.log(p) - np.log1p(-p)
    return (1.0 / (1.0 + np.exp(-z / np.asarray(t, np.float64)[None, :]))).astype(np.float32)
