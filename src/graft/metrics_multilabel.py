"""Multi-label metrics from per-label probabilities and decision thresholds.

Written in NumPy for the same reason as :mod:`graft.metrics` (no scikit-learn import on a cold
run); ``tests/test_metrics_multilabel.py`` checks each against scikit-learn's function.
``accuracy`` is the subset (exact-match) accuracy, so every place that compares or prints a
model's accuracy reads an honest figure for multi-label models too; mean average precision
(``map_macro``) is the threshold-free headline.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

__all__ = ["average_precision", "binary_log_loss", "compute_multilabel_metrics", "f1_thresholds"]


def average_precision(y: np.ndarray, scores: np.ndarray) -> float:
    """Area under the precision-recall curve as a step sum (scikit-learn's ``average_precision_score``).

    Tied scores form one step. NaN when ``y`` has no positive (the label has no AP to average).
    """
    y = np.asarray(y, dtype=bool)
    if not y.any():
        return float("nan")
    order = np.argsort(-np.asarray(scores, np.float64), kind="mergesort")
    s, t = np.asarray(scores, np.float64)[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # the end of each run of equal scores
    tp = np.cumsum(t)[last]
    precision = tp / (last + 1)
    recall = tp / t.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def binary_log_loss(Y: np.ndarray, P: np.ndarray) -> float:
    """Mean binary cross-entropy over every (image, label) pair, probabilities clipped to [1e-12, 1 - 1e-12]."""
    p = np.clip(np.asarray(P, np.float64), 1e-12, 1 - 1e-12)
    y = np.asarray(Y, np.float64)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())


def f1_thresholds(Y: np.ndarray, P: np.ndarray, default: float = 0.5) -> np.ndarray:
    """Per label, the probability threshold with the highest F1 on (``Y``, ``P``) (``default`` without positives).

    Candidates are the midpoints between consecutive distinct probabilities, so a threshold
    never sits exactly on a training image's score; ties go to the threshold nearest 0.5.
    """
    Y = np.asarray(Y, dtype=bool)
    P = np.asarray(P, np.float64)
    out = np.full(Y.shape[1], default, np.float64)
    for j in range(Y.shape[1]):
        y, p = Y[:, j], P[:, j]
        if not y.any():
            continue
        u = np.unique(p)
        cand = np.r_[(u[:-1] + u[1:]) / 2, u[0] / 2] if len(u) > 1 else np.array([default])
        pred = p[None, :] >= cand[:, None]
        tp = (pred & y).sum(1)
        f1 = 2 * tp / (pred.sum(1) + y.sum())
        best = np.flatnonzero(f1 == f1.max())
        out[j] = cand[best[np.argmin(np.abs(cand[best] - 0.5))]]
    return out


def compute_multilabel_metrics(
    Y: np.ndarray, P: np.ndarray, classes: Sequence[str], thresholds: Sequence[float]
) -> dict[str, Any]:
    """Metrics of per-label probabilities ``P`` (n, labels) against the 0/1 truth ``Y`` at ``thresholds``.

    Keys: ``accuracy`` and ``subset_accuracy`` (every label right), ``hamming_loss``,
    ``map_macro`` (mean of the labels' AP, labels without a positive left out), ``map_micro``
    (AP of all pairs pooled), ``f1_micro``, ``f1_macro``, ``log_loss`` (mean binary
    cross-entropy), ``per_class`` ({label: precision, recall, f1, ap, support}), ``n``,
    ``multi_label`` (True) and ``thresholds``.
    """
    Y = np.asarray(Y, dtype=bool)
    P = np.asarray(P, np.float64)
    t = np.asarray(thresholds, np.float64)
    pred = P >= t[None, :]
    tp = (pred & Y).sum(0).astype(np.float64)
    fp = (pred & ~Y).sum(0).astype(np.float64)
    fn = (~pred & Y).sum(0).astype(np.float64)

    def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
        return np.divide(num, den, out=np.zeros_like(num), where=den > 0)

    precision, recall, f1 = ratio(tp, tp + fp), ratio(tp, tp + fn), ratio(2 * tp, 2 * tp + fp + fn)
    ap = np.array([average_precision(Y[:, j], P[:, j]) for j in range(Y.shape[1])])
    micro_den = 2 * tp.sum() + fp.sum() + fn.sum()
    subset = float((pred == Y).all(1).mean()) if len(Y) else 0.0
    return {
        "accuracy": subset,
        "subset_accuracy": subset,
        "hamming_loss": float((pred != Y).mean()) if Y.size else 0.0,
        "map_macro": float(np.nanmean(ap)) if np.isfinite(ap).any() else 0.0,
        "map_micro": average_precision(Y.ravel(), P.ravel()) if Y.any() else 0.0,
        "f1_micro": float(2 * tp.sum() / micro_den) if micro_den else 0.0,
        "f1_macro": float(f1.mean()) if len(f1) else 0.0,
        "log_loss": binary_log_loss(Y, P) if Y.size else 0.0,
        "per_class": {
            name: {
                "precision": float(precision[j]),
                "recall": float(recall[j]),
                "f1": float(f1[j]),
                "ap": None if np.isnan(ap[j]) else float(ap[j]),
                "support": int(Y[:, j].sum()),
            }
            for j, name in enumerate(classes)
        },
        "n": int(len(Y)),
        "multi_label": True,
        "thresholds": [float(x) for x in t],
    }
