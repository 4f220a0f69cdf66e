"""The linear probe's choice of C: stratified k-fold cross-validation along the regularisation path.

Folds are drawn over source images (augmented views of one image share a fold),
each fold's fit warm-starts from the previous C's, and the weakest regularisation
within one standard error of the best CV log-loss is chosen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch.nn import functional as F

from graft.training.head.logreg import Problem, _lbfgs_logreg

__all__ = ["DEFAULT_C_GRID", "CVOptions", "label_strata"]

#: Inverse L2 strengths tried by cross-validation (scikit-learn's C, for features
#: centred and scaled to unit RMS).
DEFAULT_C_GRID: tuple[float, ...] = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0)


def _stratified_folds(y: np.ndarray, k: int, seed: int) -> list[np.ndarray]:
    """``k`` sorted index sets, each class dealt round-robin after a seeded shuffle (balanced folds)."""
    rng = np.random.default_rng(seed)
    folds: list[list[int]] = [[] for _ in range(k)]
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        for j, i in enumerate(idx):
            folds[j % k].append(int(i))
    return [np.array(sorted(f), dtype=np.int64) for f in folds]


@dataclass(frozen=True)
class CVOptions:
    """How the linear head's C is chosen.

    Attributes:
        C_grid: the values tried (the one-standard-error rule picks among them).
        folds: folds (fewer when a class has fewer samples; 3 on large sets, where each
            fold is already a good estimate).
        max_samples: cross-validation runs on a stratified subsample this large (big datasets).
    """

    C_grid: tuple[float, ...] = DEFAULT_C_GRID
    folds: int = 5
    max_samples: int = 5000


def _choose_C(
    problem: Problem, strata: np.ndarray, cv: CVOptions, seed: int, groups: np.ndarray | None
) -> tuple[float, dict[float, float], dict[float, float], tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(chosen C, C -> mean CV score, C -> mean CV log-loss, (held-out logits, labels, rows) at that C).

    ``strata``: one integer per row the folds are stratified by (the labels; multi-label: each
    row's rarest label, :func:`label_strata`). The score is accuracy (multi-label: mean AP).
    """
    folds = _cv_folds(strata, int(strata.max()) + 1, cv.folds, cv.max_samples, seed, groups)
    scores, losses, per_sample, oof = _score_path(problem, cv.C_grid, folds)
    chosen = _one_standard_error(scores, losses, per_sample)
    rows = np.concatenate([te for _, te in folds])
    return chosen, scores, losses, (oof[chosen], problem.y.numpy()[rows], rows)


def label_strata(Y: np.ndarray) -> np.ndarray:
    """One stratum per row of a 0/1 label matrix: its rarest label (rows without a label: one more stratum).

    Dealing rows out by their rarest label spreads every rare label over the folds, the
    point of iterative stratification, at the cost of a sort.
    """
    Y = np.asarray(Y) > 0.5
    counts = Y.sum(0)
    rarity = np.where(Y, counts[None, :], np.iinfo(np.int64).max)
    return np.where(Y.any(1), rarity.argmin(1), Y.shape[1]).astype(np.int64)


def _held_out(logits: torch.Tensor, y: torch.Tensor) -> tuple[float, torch.Tensor]:
    """(score, every row's log-loss) of held-out logits: accuracy and cross-entropy, or, for a
    0/1 matrix ``y``, mean AP over the labels with a positive and the mean BCE over labels."""
    if y.dim() == 2:
        from graft.metrics_multilabel import average_precision

        Yn, Pn = y.numpy(), torch.sigmoid(logits).numpy()
        ap = [average_precision(Yn[:, j], Pn[:, j]) for j in range(Yn.shape[1]) if Yn[:, j].any()]
        per = F.binary_cross_entropy_with_logits(logits, y, reduction="none").mean(1)
        return float(np.mean(ap)) if ap else 0.0, per
    return float((logits.argmax(1) == y).float().mean()), F.cross_entropy(logits, y, reduction="none")


def _cv_folds(
    y: np.ndarray, n_classes: int, cv_folds: int, max_cv_samples: int, seed: int, groups: np.ndarray | None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train rows, held-out rows) per fold, drawn over source images stratified by label.

    Rows sharing a group id (views of one image) share a fold, so CV never scores a
    view of a training image. Large sets are subsampled to ``max_cv_samples`` images
    and use at most 3 folds; the rarest class caps the number of folds (2 at least).
    """
    counts = np.bincount(y, minlength=n_classes)
    min_count = int(counts[counts > 0].min())
    gid = np.arange(len(y)) if groups is None else np.asarray(groups)
    uniq, first, inv = np.unique(gid, return_index=True, return_inverse=True)
    sel = np.arange(len(uniq))
    if len(uniq) > max_cv_samples:
        sel = np.sort(np.random.default_rng(seed).choice(len(uniq), max_cv_samples, replace=False))
    k = max(2, min(cv_folds if len(sel) < 4000 else min(cv_folds, 3), min_count))
    fold_u = np.full(len(uniq), -1)
    for f, members in enumerate(_stratified_folds(y[first[sel]], k, seed)):
        fold_u[sel[members]] = f
    fold_of = fold_u[inv]
    folds = []
    for f in range(k):
        te = np.flatnonzero(fold_of == f)
        tr = np.flatnonzero((fold_of != f) & (fold_of >= 0))
        if len(te) and len(tr):
            folds.append((tr, te))
    return folds


def _score_path(
    problem: Problem, C_grid: Sequence[float], folds: list[tuple[np.ndarray, np.ndarray]]
) -> tuple[dict[float, float], dict[float, float], dict[float, torch.Tensor], dict[float, np.ndarray]]:
    """CV score (:func:`_held_out`), log-loss, every held-out row's log-loss and held-out logits along the C path.

    Warm-starts along the path from strong to weak regularisation and stops once the
    held-out loss has risen twice in a row (weak regularisation is the slow end).
    """
    scores: dict[float, float] = {}
    losses: dict[float, float] = {}
    inits: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(folds)
    per_sample: dict[float, torch.Tensor] = {}  # C -> held-out log-loss of every CV row
    oof: dict[float, np.ndarray] = {}  # C -> held-out logits of every CV row (folds in order)
    worse = 0
    for c in sorted(float(c) for c in C_grid):
        held = []
        for j, (tr, te) in enumerate(folds):
            inits[j] = _lbfgs_logreg(problem.rows(tr), c, init=inits[j], max_iter=100, gtol=1e-4)
            W, b = inits[j]  # type: ignore[misc]
            held.append(torch.addmm(b, problem.R[te], W.T))
        rows = np.concatenate([te for _, te in folds])
        scores[c], per_row = _held_out(torch.cat(held), problem.y[rows])
        per_sample[c] = per_row.double()
        oof[c] = torch.cat(held).numpy()
        losses[c] = float(per_sample[c].sum()) / max(len(rows), 1)
        worse = worse + 1 if losses[c] > min(losses.values()) else 0
        if worse >= 2:
            break
    return scores, losses, per_sample, oof


def _one_standard_error(
    scores: dict[float, float], losses: dict[float, float], per_sample: dict[float, torch.Tensor]
) -> float:
    """The weakest regularisation whose CV log-loss is within one standard error of the best.

    Held-out log-loss picks C: unlike accuracy it has no ties, and it rewards
    calibrated probabilities (what reports and thresholds rely on). Near its minimum
    the CV loss curve is flat and the minimum's position is noise; among the Cs
    within one standard error of the best (the error of the paired per-row
    differences, as in ESL 7.10's one-standard-error rule) take the weakest
    regularisation: each fold model saw only (k-1)/k of the rows the final head
    trains on, so CV errs towards too strong a penalty.
    """
    best = min(scores, key=lambda c: (losses[c], -scores[c]))
    chosen = best
    for c in sorted(losses):
        if c <= best:
            continue
        diff = per_sample[c] - per_sample[best]
        se = float(diff.std()) / math.sqrt(max(len(diff), 1))
        if float(diff.mean()) > se:
            break
        chosen = c
    return chosen
