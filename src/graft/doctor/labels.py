"""Likely label errors by confident learning (Northcutt, Jiang & Chuang, JAIR 2021), on out-of-fold probabilities.

Each class ``j`` gets a threshold ``t_j``: the mean out-of-fold probability of class ``j``
over the images labelled ``j`` (its average self-confidence). An image labelled ``y`` is a
candidate when, for some other class ``j``, ``p_j >= t_j`` and ``p_j > p_y``: the model,
never trained on that image, is at least as sure it is a ``j`` as it is about typical ``j``
images, and surer than about its given label. Per-class thresholds (not one global
cut-off) are what make the method robust to classes the model is less confident on.
Candidates are ranked by the margin ``p_j - p_y``. The method is a dozen lines of numpy;
cleanlab would add a dependency for no gain here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["LabelCandidate", "class_thresholds", "confident_learning", "out_of_fold_probs"]

MAX_LABEL_ROWS = 20_000
"""Images the cross-validation covers at most (above that a seeded subsample: cost grows with rows x C grid)."""


@dataclass(frozen=True)
class LabelCandidate:
    """One image whose given label the out-of-fold model doubts."""

    row: int
    given: int
    suggested: int
    p_given: float
    p_suggested: float

    @property
    def margin(self) -> float:
        return self.p_suggested - self.p_given


def out_of_fold_probs(
    X: np.ndarray, y: np.ndarray, n_classes: int, *, seed: int = 0, folds: int = 5
) -> tuple[np.ndarray, np.ndarray]:
    """(rows, probabilities) of the linear head's cross-validation at its chosen C, softmaxed.

    The same head graft trains (default C search); the cross-validation subsample is raised so that
    every row up to :data:`MAX_LABEL_ROWS` gets a held-out probability.
    """
    from graft.training.head.linear_probe import CVOptions, fit_linear_head

    cv = CVOptions(folds=folds, max_samples=max(len(y), MAX_LABEL_ROWS))
    fit = fit_linear_head(X, y, n_classes, cv=cv, seed=seed)
    if fit.oof_logits is None or fit.oof_rows is None:  # only when C is fixed, which it is not here
        return np.zeros(0, np.int64), np.zeros((0, n_classes))
    z = fit.oof_logits - fit.oof_logits.max(1, keepdims=True)
    p = np.exp(z)
    return np.asarray(fit.oof_rows, np.int64), p / p.sum(1, keepdims=True)


def class_thresholds(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-class mean self-confidence ``t_j``; a class without images gets 1 (never a target)."""
    k = probs.shape[1]
    t = np.ones(k)
    for j in range(k):
        mine = labels == j
        if mine.any():
            t[j] = float(probs[mine, j].mean())
    return t


def confident_learning(probs: np.ndarray, labels: np.ndarray) -> list[LabelCandidate]:
    """Label-error candidates of (out-of-fold) ``probs`` (n, k) and given ``labels`` (n,), largest margin first."""
    labels = np.asarray(labels, np.int64)
    n = len(labels)
    if n == 0:
        return []
    t = class_thresholds(probs, labels)
    rows = np.arange(n)
    other = np.where(probs >= t[None, :], probs, -1.0)
    other[rows, labels] = -1.0  # another class than the given one
    best = other.argmax(1)
    p_best = other[rows, best]
    p_given = probs[rows, labels]
    hit = np.flatnonzero((p_best >= 0) & (p_best > p_given))
    found = [LabelCandidate(int(i), int(labels[i]), int(best[i]), float(p_given[i]), float(p_best[i])) for i in hit]
    return sorted(found, key=lambda c: (-c.margin, c.row))
