"""The doctor's label checks on a multi-label dataset: rare or near-universal labels, missing and wrong labels.

Missing and wrong labels are confident learning per label (the binary case of
:mod:`graft.doctor.labels`): for each label ``j``, graft's linear head is cross-validated on
"has ``j``" against "has not", giving every image a held-out probability ``p_j``. With
``t+_j`` the mean ``p_j`` of the images labelled ``j`` and ``t-_j`` that of the others, an
image without ``j`` whose ``p_j >= t+_j`` is as sure a ``j`` as a typical one (a likely
*missing label*), and an image with ``j`` whose ``p_j <= t-_j`` looks as little like a ``j``
as a typical image without it (a likely *wrong label*). Per-label thresholds keep rare or
hard labels from flooding the list. One issue per image, ranked by its strongest doubt.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from graft.doctor.checks import Corpus
from graft.doctor.issues import Issue

__all__ = ["LABEL_SHARE_MIN", "label_share_issues", "missing_wrong_label_issues", "out_of_fold_label_probs"]

LABEL_SHARE_MIN = 0.02
"""A label on fewer than 2% of the training images (or on more than 98%) is an ``imbalance`` issue:
too few positives to learn it (too few negatives, for a near-universal one)."""


def label_share_issues(root: str, counts: dict[str, int], n_train: int) -> list[Issue]:
    """One ``imbalance`` issue per label carried by under 2% or over 98% of the ``n_train`` training images."""
    if n_train <= 0:
        return []
    out = []
    for name, n in counts.items():
        share = n / n_train
        if share < LABEL_SHARE_MIN:
            detail = (
                f"label {name!r} is on {n} of {n_train} training images ({100 * share:.1f}%, under "
                f"{100 * LABEL_SHARE_MIN:g}%): too few to learn it reliably; label more images that show it, "
                "or train with --class-weight balanced"
            )
            out.append(Issue("imbalance", (root,), 1.0 / max(share, 1e-6), detail, ("review",)))
        elif share > 1 - LABEL_SHARE_MIN:
            detail = (
                f"label {name!r} is on {n} of {n_train} training images ({100 * share:.1f}%): almost every image "
                "has it, so there is little to learn; drop it, or add images without it"
            )
            out.append(Issue("imbalance", (root,), 1.0 / max(1 - share, 1e-6), detail, ("review",)))
    return out


def out_of_fold_label_probs(X: np.ndarray, Y: np.ndarray, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(rows, probabilities (rows, labels)): each label's held-out probability from a one-vs-rest linear head.

    graft's linear probe on two classes per label (its C search, every row held out once, as
    :func:`graft.doctor.labels.out_of_fold_probs`); a label with fewer than 2 positives or negatives
    has no cross-validation and is left at NaN.
    """
    from graft.doctor.labels import MAX_LABEL_ROWS
    from graft.training.head.linear_probe import CVOptions, fit_linear_head

    Y = np.asarray(Y, np.int64)
    n, k = Y.shape
    P = np.full((n, k), np.nan)
    cv = CVOptions(max_samples=max(n, MAX_LABEL_ROWS))
    for j in range(k):
        pos = int(Y[:, j].sum())
        if min(pos, n - pos) < 2:
            continue
        fit = fit_linear_head(X, Y[:, j], 2, cv=cv, seed=seed)
        if fit.oof_logits is None or fit.oof_rows is None:
            continue
        z = np.asarray(fit.oof_logits, np.float64)
        P[np.asarray(fit.oof_rows, np.int64), j] = 1.0 / (1.0 + np.exp(z[:, 0] - z[:, 1]))
    rows = np.flatnonzero(~np.isnan(P).all(1))
    return rows, P[rows]


def missing_wrong_label_issues(corpus: Corpus, probs: np.ndarray, rows: Sequence[int]) -> list[Issue]:
    """``label`` issues for the records ``rows`` with held-out per-label ``probs``: missing and wrong labels."""
    idx = np.asarray(rows, np.int64)
    Y = np.zeros(probs.shape, bool)
    for r, rec in enumerate(idx):
        Y[r, list(corpus.records[int(rec)].label_set)] = True
    P = np.asarray(probs, np.float64)
    known = ~np.isnan(P)
    t_pos = np.array(
        [P[Y[:, j] & known[:, j], j].mean() if (Y[:, j] & known[:, j]).any() else 2.0 for j in range(P.shape[1])]
    )
    t_neg = np.array(
        [P[~Y[:, j] & known[:, j], j].mean() if (~Y[:, j] & known[:, j]).any() else -1.0 for j in range(P.shape[1])]
    )
    Pz = np.where(known, P, 0.5)
    missing = ~Y & known & (Pz >= t_pos[None, :])
    wrong = Y & known & (Pz <= t_neg[None, :])
    out = []
    for r in map(int, np.flatnonzero(missing.any(1) | wrong.any(1))):
        notes, score = [], 0.0
        for j in np.flatnonzero(missing[r]):
            notes.append(
                f"missing label {corpus.classes[j]!r}? held-out p={P[r, j]:.2f} (typical with it: {t_pos[j]:.2f})"
            )
            score = max(score, float(P[r, j]))
        for j in np.flatnonzero(wrong[r]):
            notes.append(
                f"wrong label {corpus.classes[j]!r}? held-out p={P[r, j]:.2f} (typical without it: {t_neg[j]:.2f})"
            )
            score = max(score, 1.0 - float(P[r, j]))
        i = int(idx[r])
        detail = f"labelled {corpus.label_name(i)!r}: " + "; ".join(notes) + "; check the image and fix its labels"
        out.append(Issue("label", (corpus.path(i),), score, detail, ("review",)))
    return out
