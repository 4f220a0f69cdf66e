"""Classification metrics from probabilities: the numbers every report and command shows."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

__all__ = ["compute_metrics", "confusion_matrix", "expected_calibration_error", "format_metrics_table", "log_loss"]

# A few lines of NumPy each, instead of scikit-learn's: importing ``sklearn.metrics`` took about
# 1 s of a 20 s cold ``graft train`` on 2 cores, the one place stage 1 needed scikit-learn.
# tests/test_metrics.py checks them against scikit-learn's on random inputs.


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """(n_classes, n_classes) counts; rows: true label, columns: predicted."""
    flat = np.asarray(y_true, np.int64) * n_classes + np.asarray(y_pred, np.int64)
    return np.bincount(flat, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def log_loss(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Mean ``-log p(true class)``, each probability clipped to at least 1e-12."""
    p = np.asarray(probs, np.float64)[np.arange(len(y_true)), np.asarray(y_true, np.int64)]
    return float(-np.log(np.clip(p, 1e-12, 1.0)).mean())


def _per_class(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall, F1 and support per class; 0 where undefined (scikit-learn's ``zero_division=0``)."""
    tp = np.diag(cm).astype(np.float64)
    support, predicted = cm.sum(1), cm.sum(0)

    def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
        return np.divide(num, den, out=np.zeros_like(num), where=den > 0)

    f1 = ratio(2 * tp, (support + predicted).astype(np.float64))  # 2tp / (2tp + fp + fn)
    return ratio(tp, predicted.astype(np.float64)), ratio(tp, support.astype(np.float64)), f1, support


def _top_k_accuracy(y_true: np.ndarray, probs: np.ndarray, k: int) -> float:
    """Share of rows whose label is among the k highest scores (ties broken as scikit-learn does)."""
    top = np.argsort(probs, axis=1, kind="mergesort")[:, ::-1][:, :k]
    return float((top == y_true[:, None]).any(1).mean())


def expected_calibration_error(
    probs: np.ndarray, y: np.ndarray, n_bins: int = 15
) -> tuple[float, list[dict[str, float]]]:
    """ECE of the top-1 confidence, and the reliability-diagram bins."""
    conf = probs.max(1)
    correct = (probs.argmax(1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    ece, bins = 0.0, []
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (conf > lo) & (conf <= hi) if lo > 0 else (conf >= lo) & (conf <= hi)
        if m.any():
            acc, c = float(correct[m].mean()), float(conf[m].mean())
            ece += m.mean() * abs(acc - c)
            bins.append({"lo": float(lo), "hi": float(hi), "count": int(m.sum()), "accuracy": acc, "confidence": c})
    return float(ece), bins


def compute_metrics(y_true: np.ndarray, probs: np.ndarray, classes: Sequence[str], top_k: int = 5) -> dict[str, Any]:
    """Accuracy, top-k accuracy, per-class precision/recall/F1/support, confusion matrix, ECE.

    Args:
        y_true: (n,) integer labels.
        probs: (n, n_classes) probabilities.
        classes: class names (label order).
        top_k: k of the top-k accuracy (capped at the number of classes).
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    if len(probs):
        probs = probs / probs.sum(1, keepdims=True)  # float32 softmax sums to 1 +- 1e-7
    n_classes = len(classes)
    y_pred = probs.argmax(1) if len(probs) else np.zeros(0, np.int64)
    cm = confusion_matrix(y_true, y_pred, n_classes)
    p, r, f, s = _per_class(cm)
    k = min(top_k, n_classes)
    out: dict[str, Any] = {
        "n": int(len(y_true)),
        "accuracy": float((y_pred == y_true).mean()) if len(y_true) else float("nan"),
        f"top{k}_accuracy": (
            1.0 if k >= n_classes else _top_k_accuracy(y_true, probs, k) if len(y_true) else float("nan")
        ),
        "top_k": k,
        "macro_f1": float(np.mean(f)),
        "balanced_accuracy": float(r[s > 0].mean()) if len(y_true) else float("nan"),
        "per_class": {
            c: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
            for i, c in enumerate(classes)
        },
        "confusion_matrix": cm.tolist(),
        "classes": list(classes),
    }
    if len(y_true):
        out["log_loss"] = log_loss(y_true, probs)
        out["ece"], out["reliability"] = expected_calibration_error(probs, y_true)
    return out


def format_metrics_table(m: dict[str, Any]) -> str:
    """Plain-text per-class table and confusion matrix for people."""
    classes = m["classes"]
    w = max(9, max(len(c) for c in classes))
    k = m["top_k"]
    topk = m.get(f"top{k}_accuracy", float("nan"))
    lines = [
        f"accuracy {m['accuracy']:.4f}   top-{k} {topk:.4f}   macro F1 {m['macro_f1']:.4f}   n={m['n']}",
        "",
        f"{'class':<{w}}  precision  recall     f1  support",
    ]
    for c in classes:
        pc = m["per_class"][c]
        lines.append(f"{c:<{w}}  {pc['precision']:9.3f}  {pc['recall']:6.3f}  {pc['f1']:5.3f}  {pc['support']:7d}")
    return "\n".join(lines + [""] + _confusion_lines(classes, m["confusion_matrix"], w))


MATRIX_MAX_CLASSES = 30
"""Above this many classes the confusion matrix is summarised (300 classes made a 928 kB table)."""


def _confusion_lines(classes: list[str], cm: Any, w: int, top: int = 15) -> list[str]:
    """The confusion matrix, or above :data:`MATRIX_MAX_CLASSES` classes its largest off-diagonal cells."""
    cm = np.asarray(cm, dtype=np.int64)
    if len(classes) <= MATRIX_MAX_CLASSES:
        cw = max(5, max(len(c) for c in classes))
        head = " " * (w + 2) + " ".join(f"{c[:cw]:>{cw}}" for c in classes)
        rows = [f"{c:<{w}}  " + " ".join(f"{v:>{cw}d}" for v in row) for c, row in zip(classes, cm)]
        return ["confusion matrix (rows: true, columns: predicted)", head, *rows]
    off = cm.copy()
    np.fill_diagonal(off, 0)
    cells = [(int(off[i, j]), i, j) for i, j in zip(*np.nonzero(off))]
    cells.sort(key=lambda t: (-t[0], t[1], t[2]))
    lines = [
        f"confusion matrix: {len(classes)} classes, too many to print (the whole matrix is in --json); "
        f"{int(off.sum())} errors, the most frequent confusions (true -> predicted):"
    ]
    lines += [f"  {classes[i]} -> {classes[j]}: {n}" for n, i, j in cells[:top]]
    if len(cells) > top:
        lines.append(f"  ... and {len(cells) - top} more pairs")
    return lines
